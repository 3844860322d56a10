//! pipeline.schema's validators: what a column holds for a JSON value, or that it does not fit.

use std::net::Ipv6Addr;

use crate::*;

// -- the schema ------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    Ts,
    Str,
    Lower, // text the schema lower-cases (source_type, event_category)
    Ip,
    UInt(u64), // unsigned integer up to this limit
    F64,
    Strs,
    Map,
}

pub(crate) type Col = u8;

/// pipeline.schema.FIELDS: names, kinds and the required ones, each column known by its position.
pub(crate) struct Schema {
    pub(crate) names: Vec<String>,
    pub(crate) kinds: Vec<Kind>,
    pub(crate) required: u128,
    pub(crate) ids: FxMap<String, Col>,
}

impl Schema {
    pub(crate) fn new(fields: Vec<(String, String)>, lowercase: Vec<String>, required: Vec<String>) -> PyResult<Self> {
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

    pub(crate) fn id(&self, name: &str) -> PyResult<Col> {
        match self.ids.get(name) {
            Some(&id) if self.kinds[id as usize] != Kind::Map => Ok(id),
            _ => Err(pyo3::exceptions::PyValueError::new_err(format!("{name:?} is not a schema column"))),
        }
    }

    /// The validator of one column (`fits`): Ok(Some) the value it holds, Ok(None) it does not fit.
    pub(crate) fn check<'a>(&self, column: Col, v: &J<'a>) -> Sure<Option<Out<'a>>> {
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
pub(crate) enum Out<'a> {
    Ts(i64),
    UInt(u64),
    Float(f64),
    Str(Cow<'a, str>),
    Strs(Vec<Cow<'a, str>>),
    Line, // the record's own text (raw): handed back as the very str object Python passed in
}

impl Out<'_> {
    pub(crate) fn truthy(&self) -> bool {
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

pub(crate) fn text_out(s: &str) -> Out<'static> {
    Out::Str(Cow::Owned(s.to_owned()))
}

pub(crate) fn is_blank(v: &J) -> bool {
    match v {
        J::Null => true,
        J::S(s) => s.is_empty() || s == "-",
        _ => false,
    }
}

pub(crate) fn is_dotted_quad(s: &str) -> bool {
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

pub(crate) fn check_ip<'a>(v: &J<'a>) -> Sure<Option<Out<'a>>> {
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

pub(crate) fn check_uint<'a>(v: &J<'a>, limit: u64) -> Sure<Option<Out<'a>>> {
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

pub(crate) fn check_f64<'a>(v: &J<'a>) -> Sure<Option<Out<'a>>> {
    match v {
        J::Null => Ok(Some(Out::Float(0.0))),
        J::Bool(_) | J::A(_) | J::O(_) => Ok(None),
        J::U(_) | J::I(_) | J::F(_) => Ok(Some(Out::Float(v.as_f64().ok_or(Unsure)?))),
        J::S(s) if s.is_empty() || s == "-" => Ok(Some(Out::Float(0.0))),
        J::S(_) => Err(Unsure),
    }
}

pub(crate) fn check_str<'a>(v: &J<'a>) -> Sure<Option<Out<'a>>> {
    match v {
        J::Null => Ok(Some(Out::Str(Cow::Borrowed("")))),
        J::S(s) => Ok(Some(Out::Str(s.clone()))),
        J::U(_) | J::I(_) | J::F(_) => Ok(Some(Out::Str(Cow::Owned(py_str_number(v)?)))),
        J::Bool(_) | J::A(_) | J::O(_) => Ok(None),
    }
}

pub(crate) fn check_strs<'a>(v: &J<'a>) -> Sure<Option<Out<'a>>> {
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

// -- time -----------------------------------------------------------------------------------------------

pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

pub(crate) fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

pub(crate) fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0i64, |n, d| n * 10 + (d - b'0') as i64))
}

/// Epoch microseconds of `YYYY-MM-DD[T ]HH:MM:SS[.fff|.ffffff][Z|z|±HH:MM|±HHMM]` (naive = UTC).
pub(crate) fn iso_micros(s: &str) -> Option<i64> {
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
pub(crate) fn round_scaled(value: f64, factor: f64) -> Sure<Option<i64>> {
    let ms = (value * factor).round_ties_even();
    if ms.abs() < 9.0e15 { Ok(Some(ms as i64)) } else { Err(Unsure) }
}

/// parse_ts's scale by magnitude, epoch seconds, ms, µs, ns: (values below this, factor to ms). The limits
/// are exact both as integers and as floats.
const SCALES: [(u128, f64); 4] =
    [(100_000_000_000, 1000.0), (100_000_000_000_000, 1.0), (100_000_000_000_000_000, 1e-3),
     (100_000_000_000_000_000_000, 1e-6)];

/// pipeline.schema.parse_ts: Ok(Some(ms)), Ok(None) where it raises SchemaError, Unsure for text it
/// might read in a form this reader does not.
pub(crate) fn parse_ts(v: &J) -> Sure<Option<i64>> {
    match v {
        // an int is compared as an int (like Python's int < float), then scaled as a float
        J::U(u) => match SCALES.iter().find(|(limit, _)| (*u as u128) < *limit) {
            Some((_, factor)) => round_scaled(*u as f64, *factor),
            None => Ok(None),
        },
        J::I(_) => Ok(None), // negative
        J::F(f) if *f < 0.0 => Ok(None),
        J::F(f) => match SCALES.iter().find(|(limit, _)| *f < *limit as f64) {
            Some((_, factor)) => round_scaled(*f, *factor),
            None => Ok(None),
        },
        J::S(s) if s.is_empty() => Ok(None),
        J::S(s) => match iso_micros(s) {
            // Python: (microseconds / 10**6) * 1000, each step a correctly rounded float
            Some(us) if us.abs() < 9_000_000_000_000_000 => round_scaled(us as f64 / 1e6, 1000.0),
            _ => Err(Unsure),
        },
        _ => Ok(None), // booleans, null, lists, objects are not timestamps
    }
}
