//! Native reader of JSON log records: Zeek JSON and Suricata EVE lines -> canonical events.
//!
//! A fast path beside the Python parsers (sensors/logs/parsers/zeek.py, eve.py), not a second definition
//! of them: the schema's field kinds and every mapping table come from Python at construction, and for
//! each line it returns exactly the event the Python parser returns, or `None`, and the Python parser
//! reads that line. It answers `None` wherever it is not certain to agree: invalid JSON (the Python
//! parser writes the error), duplicate keys, timestamps outside the ISO forms below, floats Python would
//! print in exponent notation, non-ASCII text that would need lower-casing, IPv6 text with dots or zone
//! ids. tests/unit/test_native_json.py compares both on real logs and on generated and mutated records.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::{self, Write};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::Ipv6Addr;
use std::sync::Mutex;

use blake2::digest::{Update, VariableOutput};
use blake2::Blake2bVar;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Not certain to agree with the Python parser: let it read the line.
struct Unsure;
type Sure<T> = Result<T, Unsure>;

// -- a fast hash for short keys (rustc's FxHash) ---------------------------------------------------------

#[derive(Default)]
struct Fx(u64);

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap_or([0; 8])));
        }
        for &b in chunks.remainder() {
            self.add(b as u64);
        }
    }
    fn write_u8(&mut self, b: u8) {
        self.add(b as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl Fx {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<Fx>>;

fn fx(text: &str) -> u64 {
    let mut h = Fx::default();
    h.write(text.as_bytes());
    h.finish()
}

// -- JSON values borrowing from the line -------------------------------------------------------------------

/// A JSON value whose strings borrow from the line where they hold no escapes.
#[derive(Clone, Debug, PartialEq)]
enum J<'a> {
    Null,
    Bool(bool),
    U(u64),
    I(i64), // negative integers only
    F(f64),
    S(Cow<'a, str>),
    A(Vec<J<'a>>),
    O(Obj<'a>),
}

type Obj<'a> = Vec<(Cow<'a, str>, J<'a>)>;

struct JVisitor;

impl<'de> Visitor<'de> for JVisitor {
    type Value = J<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<J<'de>, E> {
        Ok(J::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<J<'de>, E> {
        Ok(if v >= 0 { J::U(v as u64) } else { J::I(v) })
    }
    fn visit_u64<E>(self, v: u64) -> Result<J<'de>, E> {
        Ok(J::U(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<J<'de>, E> {
        if v == 0.0 && v.is_sign_negative() {
            // serde reads "-0" as -0.0 where orjson reads the int 0: leave such lines to Python
            return Err(E::custom("negative zero"));
        }
        Ok(J::F(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<J<'de>, E> {
        Ok(J::S(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<J<'de>, E> {
        Ok(J::S(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<J<'de>, E> {
        Ok(J::S(Cow::Owned(v)))
    }
    fn visit_unit<E>(self) -> Result<J<'de>, E> {
        Ok(J::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<J<'de>, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element::<J<'de>>()? {
            out.push(v);
        }
        Ok(J::A(out))
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<J<'de>, M::Error> {
        let mut out: Obj<'de> = Vec::with_capacity(24);
        let mut seen = 0u64; // one bit per key hash: a repeated key is checked only on a collision
        while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
            let bit = 1u64 << (fx(&k) & 63);
            if seen & bit != 0 && out.iter().any(|(prev, _)| *prev == k) {
                // Python keeps the first position and the last value: leave it to Python
                return Err(de::Error::custom("duplicate key"));
            }
            seen |= bit;
            out.push((k, map.next_value::<J<'de>>()?));
        }
        Ok(J::O(out))
    }
}

impl<'de> Deserialize<'de> for J<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JVisitor)
    }
}

struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

impl<'a> J<'a> {
    fn truthy(&self) -> bool {
        match self {
            J::Null => false,
            J::Bool(b) => *b,
            J::U(n) => *n != 0,
            J::I(_) => true,
            J::F(f) => *f != 0.0,
            J::S(s) => !s.is_empty(),
            J::A(a) => !a.is_empty(),
            J::O(o) => !o.is_empty(),
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            J::U(n) => Some(*n as f64),
            J::I(n) => Some(*n as f64),
            J::F(f) => Some(*f),
            _ => None,
        }
    }

    fn is_number(&self) -> bool {
        matches!(self, J::U(_) | J::I(_) | J::F(_))
    }

    fn str(&self) -> Option<&str> {
        match self {
            J::S(s) => Some(s),
            _ => None,
        }
    }
}

fn get<'o, 'a>(obj: &'o Obj<'a>, key: &str) -> Option<&'o J<'a>> {
    obj.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn take<'a>(obj: &mut Obj<'a>, key: &str) -> Option<J<'a>> {
    let i = obj.iter().position(|(k, _)| k == key)?;
    Some(obj.remove(i).1)
}

fn load(line: &str) -> Sure<Obj<'_>> {
    match serde_json::from_str::<J>(line) {
        Ok(J::O(map)) => Ok(map),
        _ => Err(Unsure), // Python writes the error
    }
}

// -- the schema ------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Ts,
    Str,
    Lower, // text the schema lower-cases (source_type, event_category)
    Ip,
    UInt(u64), // unsigned integer up to this limit
    F64,
    Strs,
    Map,
}

type Col = u8;

/// pipeline.schema.FIELDS: names, kinds and the required ones, each column known by its position.
struct Schema {
    names: Vec<String>,
    kinds: Vec<Kind>,
    required: u128,
    ids: FxMap<String, Col>,
}

impl Schema {
    fn new(fields: Vec<(String, String)>, lowercase: Vec<String>, required: Vec<String>) -> PyResult<Self> {
        if fields.len() > 128 {
            return Err(pyo3::exceptions::PyValueError::new_err("more than 128 schema fields"));
        }
        let mut schema = Schema { names: Vec::new(), kinds: Vec::new(), required: 0, ids: FxMap::default() };
        for (name, kind) in fields {
            let k = match kind.as_str() {
                "ts" => Kind::Ts,
                "ip" => Kind::Ip,
                "u8" => Kind::UInt(u8::MAX as u64),
                "u16" => Kind::UInt(u16::MAX as u64),
                "u32" => Kind::UInt(u32::MAX as u64),
                "u64" => Kind::UInt(u64::MAX),
                "f64" => Kind::F64,
                "strs" => Kind::Strs,
                "map" => Kind::Map,
                "str" | "lcstr" if lowercase.contains(&name) => Kind::Lower,
                "str" | "lcstr" => Kind::Str,
                other => {
                    return Err(pyo3::exceptions::PyValueError::new_err(format!("unknown field kind {other:?}")))
                }
            };
            let id = schema.names.len() as Col;
            if required.contains(&name) {
                schema.required |= 1 << id;
            }
            schema.ids.insert(name.clone(), id);
            schema.names.push(name);
            schema.kinds.push(k);
        }
        Ok(schema)
    }

    fn id(&self, name: &str) -> PyResult<Col> {
        match self.ids.get(name) {
            Some(&id) if self.kinds[id as usize] != Kind::Map => Ok(id),
            _ => Err(pyo3::exceptions::PyValueError::new_err(format!("{name:?} is not a schema column"))),
        }
    }

    /// The validator of one column (`fits`): Ok(Some) the value it holds, Ok(None) it does not fit.
    fn check<'a>(&self, column: Col, v: &J<'a>) -> Sure<Option<Out<'a>>> {
        match self.kinds[column as usize] {
            Kind::Ts => parse_ts(v).map(|r| r.map(Out::Ts)),
            Kind::Ip => check_ip(v),
            Kind::UInt(limit) => check_uint(v, limit),
            Kind::F64 => check_f64(v),
            Kind::Str => check_str(v),
            Kind::Lower => match check_str(v)? {
                Some(Out::Str(s)) if s.is_ascii() && !s.bytes().any(|b| b.is_ascii_uppercase()) => Ok(Some(Out::Str(s))),
                Some(Out::Str(s)) if s.is_ascii() => Ok(Some(Out::Str(Cow::Owned(s.to_ascii_lowercase())))),
                Some(_) => Err(Unsure), // Unicode lower-casing: Python's
                None => Ok(None),
            },
            Kind::Strs => check_strs(v),
            Kind::Map => Err(Unsure),
        }
    }
}

/// A validated column value, as pipeline.schema.normalize holds it.
#[derive(Clone, PartialEq)]
enum Out<'a> {
    Ts(i64),
    UInt(u64),
    Float(f64),
    Str(Cow<'a, str>),
    Strs(Vec<Cow<'a, str>>),
    Line, // the record's own text (raw): handed back as the very str object Python passed in
}

impl Out<'_> {
    fn truthy(&self) -> bool {
        match self {
            Out::Ts(v) => *v != 0,
            Out::UInt(v) => *v != 0,
            Out::Float(v) => *v != 0.0,
            Out::Str(s) => !s.is_empty(),
            Out::Strs(v) => !v.is_empty(),
            Out::Line => true,
        }
    }
}

fn text_out(s: &str) -> Out<'static> {
    Out::Str(Cow::Owned(s.to_owned()))
}

fn is_blank(v: &J) -> bool {
    match v {
        J::Null => true,
        J::S(s) => s.is_empty() || s == "-",
        _ => false,
    }
}

fn is_dotted_quad(s: &str) -> bool {
    // pipeline.schema._IPV4_RE: four decimal octets 0-255 without leading zeros
    let mut parts = 0;
    for part in s.split('.') {
        parts += 1;
        let b = part.as_bytes();
        if b.is_empty() || b.len() > 3 || !b.iter().all(u8::is_ascii_digit) || (b.len() > 1 && b[0] == b'0') {
            return false;
        }
        if part.parse::<u16>().map_or(true, |n| n > 255) {
            return false;
        }
    }
    parts == 4
}

fn check_ip<'a>(v: &J<'a>) -> Sure<Option<Out<'a>>> {
    if is_blank(v) {
        return Ok(Some(Out::Str(Cow::Borrowed(""))));
    }
    let J::S(s) = v else { return Ok(None) };
    if is_dotted_quad(s) {
        return Ok(Some(Out::Str(s.clone())));
    }
    // plain IPv6 text only: forms with dots, zone ids, brackets or spaces go to Python's ipaddress
    if !s.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
        let maybe = !s.is_ascii() || s.bytes().any(|b| matches!(b, b'.' | b'%' | b'[' | b']') || b.is_ascii_whitespace());
        return if maybe { Err(Unsure) } else { Ok(None) };
    }
    match s.parse::<Ipv6Addr>() {
        Ok(addr) => Ok(Some(Out::Str(Cow::Owned(match addr.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => addr.to_string(),
        })))),
        Err(_) => Err(Unsure),
    }
}

fn check_uint<'a>(v: &J<'a>, limit: u64) -> Sure<Option<Out<'a>>> {
    let n: u64 = match v {
        J::Null => 0,
        J::Bool(_) | J::A(_) | J::O(_) | J::I(_) => return Ok(None),
        J::U(u) => *u,
        J::F(f) => {
            if f.fract() != 0.0 || !(*f >= 0.0 && *f < 18446744073709551616.0) {
                return Ok(None);
            }
            *f as u64
        }
        J::S(s) => {
            if s.is_empty() || s == "-" {
                0
            } else if s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) {
                match s.parse::<u128>() {
                    Ok(n) if n <= limit as u128 => n as u64,
                    _ => return Ok(None),
                }
            } else if s.is_ascii() && !s.bytes().any(|b| b.is_ascii_digit()) {
                return Ok(None); // int() of ASCII text without a digit always fails
            } else {
                return Err(Unsure); // " 5", "+5", "5_0", other scripts' digits: int() decides
            }
        }
    };
    Ok(if n <= limit { Some(Out::UInt(n)) } else { None })
}

fn check_f64<'a>(v: &J<'a>) -> Sure<Option<Out<'a>>> {
    match v {
        J::Null => Ok(Some(Out::Float(0.0))),
        J::Bool(_) | J::A(_) | J::O(_) => Ok(None),
        J::U(_) | J::I(_) | J::F(_) => Ok(Some(Out::Float(v.as_f64().ok_or(Unsure)?))),
        J::S(s) if s.is_empty() || s == "-" => Ok(Some(Out::Float(0.0))),
        J::S(_) => Err(Unsure),
    }
}

fn check_str<'a>(v: &J<'a>) -> Sure<Option<Out<'a>>> {
    match v {
        J::Null => Ok(Some(Out::Str(Cow::Borrowed("")))),
        J::S(s) => Ok(Some(Out::Str(s.clone()))),
        J::U(_) | J::I(_) | J::F(_) => Ok(Some(Out::Str(Cow::Owned(py_str_number(v)?)))),
        J::Bool(_) | J::A(_) | J::O(_) => Ok(None),
    }
}

fn check_strs<'a>(v: &J<'a>) -> Sure<Option<Out<'a>>> {
    match v {
        J::Null => Ok(Some(Out::Strs(Vec::new()))),
        J::S(s) if s.is_empty() => Ok(Some(Out::Strs(Vec::new()))),
        J::S(s) => Ok(Some(Out::Strs(vec![s.clone()]))),
        J::A(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.push(match item {
                    J::Null => Cow::Borrowed(""), // schema._text(None)
                    other => text(other)?,
                });
            }
            Ok(Some(Out::Strs(out)))
        }
        _ => Ok(None),
    }
}

// -- text of values, as Python writes it --------------------------------------------------------------

/// Python's `str()` of a JSON number: ints in decimal, floats as `repr` (fixed notation only).
fn py_str_number(v: &J) -> Sure<String> {
    let mut s = String::new();
    match v {
        J::U(n) => write!(s, "{n}").map_err(|_| Unsure)?,
        J::I(n) => write!(s, "{n}").map_err(|_| Unsure)?,
        J::F(f) => fixed_float(*f, &mut s)?,
        _ => return Err(Unsure),
    }
    Ok(s)
}

/// A float in fixed notation with at least one fractional digit and its shortest round-trip digits: what
/// both Python's `repr` and orjson print for 1e-4 <= |f| < 1e16 (they differ on exponent notation, so
/// the rest is Unsure).
fn fixed_float(f: f64, out: &mut String) -> Sure<()> {
    if f == 0.0 {
        out.push_str(if f.is_sign_negative() { "-0.0" } else { "0.0" });
        return Ok(());
    }
    let a = f.abs();
    if !(1e-4..1e16).contains(&a) {
        return Err(Unsure);
    }
    let mut buf = ryu::Buffer::new();
    let shortest = buf.format_finite(a);
    if !shortest.contains('e') {
        // in this range ryu already writes fixed notation with a fractional digit, as Python does
        if f < 0.0 {
            out.push('-');
        }
        out.push_str(shortest);
        return Ok(());
    }
    // ryu writes "123.45", "0.00012" or "1.2345e-5"/"1e16": split into digits and the decimal point position
    let (mantissa, exp) = match shortest.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().map_err(|_| Unsure)?),
        None => (shortest, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let joined = format!("{int_part}{frac_part}");
    let lead = joined.len() - joined.trim_start_matches('0').len();
    let digits = joined[lead..].trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    let point = int_part.len() as i32 + exp - lead as i32; // digits before the decimal point
    if f < 0.0 {
        out.push('-');
    }
    if point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat('0').take((-point) as usize));
        out.push_str(digits);
    } else if point as usize >= digits.len() {
        out.push_str(digits);
        out.extend(std::iter::repeat('0').take(point as usize - digits.len()));
        out.push_str(".0");
    } else {
        out.push_str(&digits[..point as usize]);
        out.push('.');
        out.push_str(&digits[point as usize..]);
    }
    Ok(())
}

/// orjson.dumps(value).decode()
fn dumps(v: &J, out: &mut String) -> Sure<()> {
    match v {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::U(n) => write!(out, "{n}").map_err(|_| Unsure)?,
        J::I(n) => write!(out, "{n}").map_err(|_| Unsure)?,
        J::F(f) => fixed_float(*f, out)?,
        J::S(s) => dump_str(s, out),
        J::A(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                dumps(item, out)?;
            }
            out.push(']');
        }
        J::O(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                dump_str(k, out);
                out.push(':');
                dumps(item, out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn dump_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A JSON value as `extra` holds it: strings as they are, anything else as compact JSON.
fn text<'a>(v: &J<'a>) -> Sure<Cow<'a, str>> {
    match v {
        J::S(s) => return Ok(s.clone()),
        J::Bool(b) => return Ok(Cow::Borrowed(if *b { "true" } else { "false" })),
        J::Null => return Ok(Cow::Borrowed("null")),
        _ => {}
    }
    let mut out = String::new();
    dumps(v, &mut out)?;
    Ok(Cow::Owned(out))
}

/// Python's `str()` of an EVE answer's rdata.
fn py_str<'a>(v: &J<'a>) -> Sure<Cow<'a, str>> {
    match v {
        J::S(s) => Ok(s.clone()),
        J::U(_) | J::I(_) | J::F(_) => Ok(Cow::Owned(py_str_number(v)?)),
        J::Null => Ok(Cow::Borrowed("None")),
        J::Bool(b) => Ok(Cow::Borrowed(if *b { "True" } else { "False" })),
        _ => Err(Unsure), // Python's repr of a list or dict
    }
}

// -- time -----------------------------------------------------------------------------------------------

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0i64, |n, d| n * 10 + (d - b'0') as i64))
}

/// Epoch microseconds of `YYYY-MM-DD[T ]HH:MM:SS[.fff|.ffffff][Z|z|±HH:MM|±HHMM]` (naive = UTC).
fn iso_micros(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b' ') || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (h, mi, sec) = (digits(&b[11..13])?, digits(&b[14..16])?, digits(&b[17..19])?);
    if y < 1 || !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let mut rest = &b[19..];
    let mut micros = 0;
    if rest.first() == Some(&b'.') {
        let n = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        micros = match n {
            3 => digits(&rest[1..4])? * 1000,
            6 => digits(&rest[1..7])?,
            _ => return None,
        };
        rest = &rest[1 + n..];
    }
    let offset = match rest {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), hhmm @ ..] if (hhmm.len() == 5 && hhmm[2] == b':') || hhmm.len() == 4 => {
            let (oh, om) = (digits(&hhmm[0..2])?, digits(&hhmm[hhmm.len() - 2..])?);
            if oh > 23 || om > 59 {
                return None;
            }
            let secs = oh * 3600 + om * 60;
            if *sign == b'-' { -secs } else { secs }
        }
        _ => return None,
    };
    let seconds = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset;
    Some(seconds * 1_000_000 + micros)
}

/// round(value * factor) as Python computes it (a float product, ties to even).
fn round_scaled(value: f64, factor: f64) -> Sure<Option<i64>> {
    let ms = (value * factor).round_ties_even();
    if ms.abs() < 9.0e15 { Ok(Some(ms as i64)) } else { Err(Unsure) }
}

/// pipeline.schema.parse_ts: Ok(Some(ms)), Ok(None) where it raises SchemaError, Unsure for text it
/// might read in a form this reader does not.
fn parse_ts(v: &J) -> Sure<Option<i64>> {
    match v {
        J::U(u) => {
            // compared as integers, like Python's int < float, then scaled as a float
            let u = *u;
            let factor = if u < 100_000_000_000 {
                1000.0
            } else if u < 100_000_000_000_000 {
                1.0
            } else if u < 100_000_000_000_000_000 {
                1e-3
            } else if (u as u128) < 100_000_000_000_000_000_000 {
                1e-6
            } else {
                return Ok(None);
            };
            round_scaled(u as f64, factor)
        }
        J::I(_) => Ok(None), // negative
        J::F(f) => {
            let f = *f;
            if f < 0.0 {
                return Ok(None);
            }
            let factor = if f < 1e11 {
                1000.0
            } else if f < 1e14 {
                1.0
            } else if f < 1e17 {
                1e-3
            } else if f < 1e20 {
                1e-6
            } else {
                return Ok(None);
            };
            round_scaled(f, factor)
        }
        J::S(s) if s.is_empty() => Ok(None),
        J::S(s) => match iso_micros(s) {
            // Python: (microseconds / 10**6) * 1000, each step a correctly rounded float
            Some(us) if us.abs() < 9_000_000_000_000_000 => round_scaled(us as f64 / 1e6, 1000.0),
            _ => Err(Unsure),
        },
        _ => Ok(None), // booleans, null, lists, objects are not timestamps
    }
}

// -- the event being built ------------------------------------------------------------------------------

/// The parser's `record` dict: columns in insertion order, each already validated as normalize will hold
/// it, and `extra`. `raw_zero` remembers a numeric 0 the record held (Python tests `not record.get(..)`).
struct Record<'a> {
    columns: Vec<(Col, Out<'a>, bool)>,
    present: u128,
    extra: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> Record<'a> {
    fn new() -> Self {
        Record { columns: Vec::with_capacity(24), present: 0, extra: Vec::with_capacity(24) }
    }

    fn has(&self, column: Col) -> bool {
        self.present & (1 << column) != 0
    }

    /// record[column] = value (a dict keeps the first position of a key)
    fn set(&mut self, column: Col, value: Out<'a>) {
        self.set_raw(column, value, false);
    }

    fn set_raw(&mut self, column: Col, value: Out<'a>, raw_zero: bool) {
        if self.has(column) {
            if let Some(slot) = self.columns.iter_mut().find(|(c, _, _)| *c == column) {
                slot.1 = value;
                slot.2 = raw_zero;
            }
        } else {
            self.present |= 1 << column;
            self.columns.push((column, value, raw_zero));
        }
    }

    /// extra[name] = value, for names that are unique already (a record's keys, flattened paths)
    fn add_extra(&mut self, name: Cow<'a, str>, value: Cow<'a, str>) {
        self.extra.push((name, value));
    }

    /// base.put: into the column when the value fits it and the column is still free, else into `extra`.
    fn put(&mut self, schema: &Schema, column: Col, v: &J<'a>, name: &Cow<'a, str>) -> Sure<()> {
        if is_blank(v) {
            return Ok(());
        }
        if !self.has(column) {
            if let Some(out) = schema.check(column, v)? {
                let zero = v.is_number() && v.as_f64() == Some(0.0);
                self.set_raw(column, out, zero);
                return Ok(());
            }
        }
        let text = match v {
            J::S(s) => s.clone(),
            J::U(_) | J::I(_) | J::F(_) => Cow::Owned(py_str_number(v)?),
            _ => return Err(Unsure), // str() of a list, dict or bool: Python's repr
        };
        self.add_extra(name.clone(), text);
        Ok(())
    }

    /// record[column] = a value the parser computed, validated as normalize will.
    fn set_checked(&mut self, schema: &Schema, column: Col, v: &J<'a>) -> Sure<()> {
        let out = schema.check(column, v)?.ok_or(Unsure)?; // normalize would raise: Python says why
        self.set(column, out);
        Ok(())
    }
}

/// The columns the readers set themselves.
struct Cols {
    ts: Col,
    event_id: Col,
    sensor: Col,
    source_type: Col,
    event_category: Col,
    action: Col,
    severity: Col,
    protocol: Col,
    duration: Col,
    dns_answers: Col,
    host_name: Col,
    raw: Col,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

// -- what both readers share -------------------------------------------------------------------------------

struct Common {
    schema: Schema,
    cols: Cols,
    sensor: String,
    host: String,
    names: Vec<Py<PyString>>,                  // each column's name as a Python str
    extra_key: Py<PyString>,                   // "extra"
    // Python str objects reused across events: source field names, and short values (true, udp, NOERROR, ...)
    keys: Mutex<FxMap<String, Py<PyString>>>,
    values: Mutex<FxMap<String, Py<PyString>>>,
}

const SHORT_VALUE: usize = 12;
const CACHE_LIMIT: usize = 8192;

/// The one Python str kept for `text`, made and kept on first use while the cache has room.
fn cached<'py>(py: Python<'py>, cache: &mut FxMap<String, Py<PyString>>, text: &str) -> Bound<'py, PyString> {
    if let Some(s) = cache.get(text) {
        return s.bind(py).clone();
    }
    let s = PyString::new(py, text);
    if cache.len() < CACHE_LIMIT {
        cache.insert(text.to_owned(), s.clone().unbind());
    }
    s
}

type SchemaArgs = (Vec<(String, String)>, Vec<String>, Vec<String>);

impl Common {
    fn new(py: Python<'_>, (fields, lowercase, required): SchemaArgs, sensor: String, host: String)
           -> PyResult<Self> {
        if sensor.is_empty() {
            return Err(pyo3::exceptions::PyValueError::new_err("the sensor name is empty"));
        }
        let schema = Schema::new(fields, lowercase, required)?;
        let c = |name: &str| schema.id(name);
        let cols = Cols {
            ts: c("ts")?, event_id: c("event_id")?, sensor: c("sensor")?, source_type: c("source_type")?,
            event_category: c("event_category")?, action: c("action")?, severity: c("severity")?,
            protocol: c("protocol")?, duration: c("duration")?, dns_answers: c("dns_answers")?,
            host_name: c("host_name")?, raw: c("raw")?,
        };
        let names = schema.names.iter().map(|n| PyString::intern(py, n).unbind()).collect();
        Ok(Common { schema, cols, sensor, host, names, extra_key: PyString::intern(py, "extra").unbind(),
                    keys: Mutex::new(FxMap::default()), values: Mutex::new(FxMap::default()) })
    }

    fn columns(&self, table: HashMap<String, String>) -> PyResult<FxMap<String, Col>> {
        table.into_iter().map(|(k, c)| Ok((k, self.schema.id(&c)?))).collect()
    }

    fn ts<'a>(&self, record: &mut Record<'a>, v: &J<'a>) -> Sure<()> {
        if matches!(v, J::Null) || matches!(v, J::S(s) if s.is_empty()) {
            return Err(Unsure); // normalize's required-field error: Python's message
        }
        record.set_checked(&self.schema, self.cols.ts, v)
    }

    /// Parser.event + normalize: provenance, the id, then the canonical dict.
    fn finish<'py, 'a>(&'a self, py: Python<'py>, mut record: Record<'a>, source_type: &'a str,
                       line: &Bound<'py, PyString>, raw: &str, origin: &str) -> Sure<Bound<'py, PyDict>> {
        let c = &self.cols;
        record.set_checked(&self.schema, c.source_type, &J::S(Cow::Borrowed(source_type)))?;
        record.set(c.sensor, Out::Str(Cow::Borrowed(self.sensor.as_str())));
        if !self.host.is_empty() {
            let empty = match record.columns.iter().find(|(col, _, _)| *col == c.host_name) {
                None => true,
                Some((_, out, raw_zero)) => !out.truthy() || *raw_zero,
            };
            if empty {
                record.set(c.host_name, Out::Str(Cow::Borrowed(self.host.as_str())));
            }
        }
        record.set(c.raw, Out::Line);
        let mut hasher = Blake2bVar::new(16).map_err(|_| Unsure)?;
        hasher.update(self.sensor.as_bytes());
        hasher.update(b"/");
        hasher.update(source_type.as_bytes());
        hasher.update(b"\x1f");
        hasher.update(raw.as_bytes());
        hasher.update(b"\x1f");
        hasher.update(origin.as_bytes());
        let mut digest = [0u8; 16];
        hasher.finalize_variable(&mut digest).map_err(|_| Unsure)?;
        let mut id = String::with_capacity(32);
        for byte in digest {
            id.push(HEX[(byte >> 4) as usize] as char);
            id.push(HEX[(byte & 15) as usize] as char);
        }
        record.set(c.event_id, Out::Str(Cow::Owned(id)));
        self.to_py(py, record, line).map_err(|_| Unsure)
    }

    fn to_py<'py>(&self, py: Python<'py>, record: Record<'_>, line: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyDict>> {
        let out = presized(py, record.columns.len() + 1)?;
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        for (column, value, _) in &record.columns {
            if !value.truthy() && self.schema.required & (1 << column) == 0 {
                continue; // every default is falsy: normalize leaves it out
            }
            let key = self.names[*column as usize].bind(py);
            match value {
                Out::Ts(v) => out.set_item(key, v)?,
                Out::UInt(v) => out.set_item(key, v)?,
                Out::Float(v) => out.set_item(key, v)?,
                Out::Str(s) if s.len() <= SHORT_VALUE => out.set_item(key, cached(py, &mut values, s))?,
                Out::Str(s) => out.set_item(key, PyString::new(py, s))?,
                Out::Strs(items) => out.set_item(key, PyList::new(py, items.iter().map(|s| PyString::new(py, s)))?)?,
                Out::Line => out.set_item(key, line)?,
            }
        }
        if !record.extra.is_empty() {
            let extra = presized(py, record.extra.len())?;
            let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            for (k, v) in &record.extra {
                let value = if v.len() <= SHORT_VALUE { cached(py, &mut values, v) } else { PyString::new(py, v) };
                extra.set_item(cached(py, &mut keys, k), value)?;
            }
            out.set_item(self.extra_key.bind(py), extra)?;
        }
        Ok(out)
    }
}

/// A dict with room for `n` items: built without the resizes of growing one item at a time.
fn presized(py: Python<'_>, n: usize) -> PyResult<Bound<'_, PyDict>> {
    // SAFETY: _PyDict_NewPresized returns a new reference to a dict, or NULL with an exception set
    unsafe {
        let ptr = pyo3::ffi::_PyDict_NewPresized(n as pyo3::ffi::Py_ssize_t);
        Ok(Bound::from_owned_ptr_or_err(py, ptr)?.cast_into_unchecked())
    }
}

/// `value in (True, "T")`
fn is_true(v: &J) -> bool {
    match v {
        J::Bool(b) => *b,
        J::S(s) => s == "T",
        _ => v.as_f64() == Some(1.0),
    }
}

fn lower_ascii<'a>(v: &J<'a>) -> Sure<J<'a>> {
    match v {
        J::S(s) if s.is_ascii() => Ok(J::S(Cow::Owned(s.to_ascii_lowercase()))),
        _ => Err(Unsure),
    }
}

// -- Zeek JSON ----------------------------------------------------------------------------------------------

/// Zeek JSON records, with the tables of sensors/logs/parsers/zeek.py and rules/mapping.py.
#[pyclass(frozen)]
struct ZeekJson {
    common: Common,
    base: FxMap<String, Col>,
    per_log: FxMap<String, FxMap<String, Col>>,
    categories: FxMap<String, String>,
}

#[pymethods]
impl ZeekJson {
    #[new]
    fn new(py: Python<'_>, schema: SchemaArgs, sensor: String, host: String, fields: HashMap<String, String>,
           log_fields: HashMap<String, HashMap<String, String>>, categories: HashMap<String, String>)
           -> PyResult<Self> {
        let common = Common::new(py, schema, sensor, host)?;
        let base = common.columns(fields)?;
        let mut per_log = FxMap::default();
        for (log, table) in log_fields {
            let mut merged = base.clone();
            merged.extend(common.columns(table)?);
            per_log.insert(log, merged);
        }
        Ok(ZeekJson { common, base, per_log, categories: categories.into_iter().collect() })
    }

    /// The canonical event of one Zeek JSON line, or None: let the Python parser read it.
    fn parse<'py>(&self, py: Python<'py>, line: &Bound<'py, PyString>, origin: &Bound<'py, PyString>, log: &str)
                  -> Option<Bound<'py, PyDict>> {
        // text with lone surrogates is not UTF-8: the Python parser explains
        self.read(py, line, line.to_str().ok()?, origin.to_str().ok()?, log).ok()
    }
}

impl ZeekJson {
    fn read<'py>(&self, py: Python<'py>, pyline: &Bound<'py, PyString>, line: &str, origin: &str,
                 default_log: &str) -> Sure<Bound<'py, PyDict>> {
        let mut doc = load(line)?;
        let log: Cow<str> = match take(&mut doc, "_path") {
            Some(J::S(s)) if !s.is_empty() => s,
            Some(v) if v.truthy() => return Err(Unsure),
            _ if !default_log.is_empty() => Cow::Borrowed(default_log),
            _ => return Err(Unsure),
        };
        let ts = match take(&mut doc, "ts") {
            Some(v) if v.truthy() => v,
            _ => return Err(Unsure), // _write_ts / #open: Python's path
        };
        let (schema, c) = (&self.common.schema, &self.common.cols);
        let columns = self.per_log.get(log.as_ref()).unwrap_or(&self.base);
        let mut record = Record::new();
        self.common.ts(&mut record, &ts)?;
        let category = self.categories.get(log.as_ref()).map_or(log.as_ref(), String::as_str);
        record.set_checked(schema, c.event_category, &J::S(Cow::Borrowed(category)))?;
        for (name, value) in &doc {
            match columns.get(name.as_ref()) {
                None => match value {
                    J::S(s) if s.is_empty() => {}
                    J::Null => {}
                    other => record.add_extra(name.clone(), text(other)?),
                },
                Some(&column) => {
                    let nested = matches!(value, J::A(_) | J::O(_) | J::Bool(_));
                    if column == c.dns_answers && matches!(value, J::A(_)) {
                        record.set_checked(schema, column, value)?;
                    } else if column == c.dns_answers || nested {
                        let zeek_text = match value {
                            J::Null => Cow::Borrowed("null"), // zeek._text dumps None
                            other => text(other)?,
                        };
                        record.add_extra(name.clone(), zeek_text);
                    } else {
                        record.put(schema, column, value, name)?;
                    }
                }
            }
        }
        let outcome = |v: &J| text_out(if is_true(v) { "success" } else { "failure" });
        if log == "ssh" && get(&doc, "auth_success").is_some() {
            record.set(c.action, outcome(get(&doc, "auth_success").ok_or(Unsure)?));
        } else if (log == "kerberos" || log == "ntlm") && get(&doc, "success").is_some() {
            record.set(c.action, outcome(get(&doc, "success").ok_or(Unsure)?));
        } else if log == "dns" {
            record.set(c.action, Out::Str(Cow::Borrowed("query")));
        }
        if log == "conn" {
            if let Some(proto @ J::S(_)) = get(&doc, "proto") {
                record.set_checked(schema, c.protocol, &lower_ascii(proto)?)?;
            }
        }
        let source_type = format!("zeek_{log}");
        self.common.finish(py, record, &source_type, pyline, line, origin)
    }
}

// -- Suricata EVE ------------------------------------------------------------------------------------------

/// Suricata EVE records, with the tables of sensors/logs/parsers/eve.py.
#[pyclass(frozen)]
struct EveJson {
    common: Common,
    columns: FxMap<String, Col>,
    categories: FxMap<String, String>,
    severities: HashMap<i64, String>,
    source_type: String,
}

/// eve._flatten: the leaves under dotted paths; a repeated path keeps its first place, like a dict.
fn flatten<'o, 'a>(prefix: &str, node: &'o J<'a>, out: &mut Vec<(String, &'o J<'a>)>) {
    match node {
        J::O(map) => {
            for (k, v) in map {
                let path = if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
                flatten(&path, v, out);
            }
        }
        J::A(items) if !items.is_empty() && items.iter().all(|v| matches!(v, J::O(_))) => {
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{prefix}.{i}"), v, out);
            }
        }
        _ => match out.iter_mut().find(|(p, _)| p == prefix) {
            Some(slot) => slot.1 = node,
            None => out.push((prefix.to_owned(), node)),
        },
    }
}

/// eve._rdata: an object as JSON, anything else as Python's `str()`
fn rdata<'a>(v: &J<'a>) -> Sure<Cow<'a, str>> {
    match v {
        J::O(_) => text(v),
        other => py_str(other),
    }
}

/// eve._answers
fn answers<'a>(dns: &Obj<'a>) -> Sure<Vec<Cow<'a, str>>> {
    let mut out = Vec::new();
    if let Some(J::A(items)) = get(dns, "answers") {
        for answer in items {
            if let Some(value) = match answer {
                J::O(a) => get(a, "rdata"),
                _ => None,
            } {
                out.push(rdata(value)?);
            }
        }
    }
    if let Some(J::O(groups)) = get(dns, "grouped") {
        for (_, values) in groups {
            match values {
                J::A(items) => {
                    for v in items {
                        out.push(rdata(v)?);
                    }
                }
                single => out.push(rdata(single)?),
            }
        }
    }
    if out.is_empty() && get(dns, "type").and_then(J::str) == Some("answer") {
        if let Some(value) = get(dns, "rdata") {
            out.push(rdata(value)?);
        }
    }
    Ok(out)
}

/// eve._section: an object of the record, empty when absent or not an object.
fn section<'o, 'a>(doc: &'o Obj<'a>, key: &str, empty: &'o Obj<'a>) -> &'o Obj<'a> {
    match get(doc, key) {
        Some(J::O(m)) => m,
        _ => empty,
    }
}

/// `mapping.get(key, "")`
fn get_or_empty<'a>(m: &Obj<'a>, key: &str) -> J<'a> {
    get(m, key).cloned().unwrap_or(J::S(Cow::Borrowed("")))
}

#[pymethods]
impl EveJson {
    #[new]
    fn new(py: Python<'_>, schema: SchemaArgs, sensor: String, host: String, columns: HashMap<String, String>,
           categories: HashMap<String, String>, severities: HashMap<i64, String>, source_type: String)
           -> PyResult<Self> {
        let common = Common::new(py, schema, sensor, host)?;
        let columns = common.columns(columns)?;
        Ok(EveJson { common, columns, categories: categories.into_iter().collect(), severities, source_type })
    }

    /// The canonical event of one EVE line, or None: let the Python parser read it.
    fn parse<'py>(&self, py: Python<'py>, line: &Bound<'py, PyString>, origin: &Bound<'py, PyString>)
                  -> Option<Bound<'py, PyDict>> {
        self.read(py, line, line.to_str().ok()?, origin.to_str().ok()?).ok()
    }
}

impl EveJson {
    fn read<'py>(&self, py: Python<'py>, pyline: &Bound<'py, PyString>, line: &str, origin: &str)
                 -> Sure<Bound<'py, PyDict>> {
        let mut doc = load(line)?;
        let event_type = match get(&doc, "event_type") {
            Some(J::S(s)) => s.clone(),
            _ => return Err(Unsure),
        };
        let ts = take(&mut doc, "timestamp").ok_or(Unsure)?;
        let (schema, c) = (&self.common.schema, &self.common.cols);
        let mut record = Record::new();
        self.common.ts(&mut record, &ts)?;
        let category = self.categories.get(event_type.as_ref()).map_or(event_type.as_ref(), String::as_str);
        record.set_checked(schema, c.event_category, &J::S(Cow::Borrowed(category)))?;
        if let Some(J::S(_)) = get(&doc, "proto") {
            let proto = lower_ascii(&take(&mut doc, "proto").ok_or(Unsure)?)?;
            let proto = proto.str().ok_or(Unsure)?.replace("ipv6-icmp", "icmp6");
            record.set_checked(schema, c.protocol, &J::S(Cow::Owned(proto)))?;
        }
        let root = J::O(doc);
        let mut flat = Vec::with_capacity(32);
        flatten("", &root, &mut flat);
        for (path, value) in &flat {
            match self.columns.get(path.as_str()) {
                Some(&col) if !matches!(value, J::A(_) | J::Bool(_)) => {
                    record.put(schema, col, value, &Cow::Owned(path.clone()))?
                }
                _ => {
                    let empty = match value {
                        J::Null => true,
                        J::A(a) => a.is_empty(),
                        J::S(s) => s.is_empty(),
                        _ => false,
                    };
                    if !empty {
                        record.add_extra(Cow::Owned(path.clone()), text(value)?);
                    }
                }
            }
        }
        let J::O(doc) = &root else { return Err(Unsure) };
        let empty = Obj::new();
        match event_type.as_ref() {
            "alert" => {
                let alert = section(doc, "alert", &empty);
                let level = match get(alert, "severity") {
                    Some(J::U(n)) => i64::try_from(*n).ok(),
                    Some(J::I(n)) => Some(*n),
                    _ => None, // only an int names a level
                };
                let severity = level.and_then(|i| self.severities.get(&i)).cloned().unwrap_or_default();
                record.set_checked(schema, c.severity, &J::S(Cow::Owned(severity)))?;
                record.set_checked(schema, c.action, &get_or_empty(alert, "action"))?;
            }
            "flow" | "netflow" => {
                let flow = section(doc, event_type.as_ref(), &empty);
                if let (Some(start), Some(end)) = (get(flow, "start"), get(flow, "end")) {
                    if let (Some(s), Some(e)) = (parse_ts(start)?, parse_ts(end)?) {
                        record.set(c.duration, Out::Float((e - s).max(0) as f64 / 1000.0));
                    }
                }
                record.set_checked(schema, c.action, &get_or_empty(flow, "state"))?;
            }
            "dns" => {
                let dns = section(doc, "dns", &empty);
                record.set(c.dns_answers, Out::Strs(answers(dns)?));
                let query = matches!(get(dns, "type").and_then(J::str), Some("query" | "request"));
                record.set(c.action, Out::Str(Cow::Borrowed(if query { "query" } else { "answer" })));
            }
            "http" => record.set(c.action, Out::Str(Cow::Borrowed("request"))),
            "drop" => record.set(c.action, Out::Str(Cow::Borrowed("denied"))),
            _ => {}
        }
        self.common.finish(py, record, &self.source_type, pyline, line, origin)
    }
}

#[pymodule]
fn ganzhi_jsonlogs(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ZeekJson>()?;
    m.add_class::<EveJson>()?;
    Ok(())
}
