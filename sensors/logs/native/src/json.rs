//! JSON values that borrow from the line, and their text as Python and orjson write it.

use std::fmt::{self, Write};
use std::hash::{BuildHasherDefault, Hasher};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::*;

// -- a fast hash for short keys (rustc's FxHash) ---------------------------------------------------------

#[derive(Default)]
pub(crate) struct Fx(u64);

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
    pub(crate) fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

pub(crate) type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<Fx>>;

pub(crate) fn fx(text: &str) -> u64 {
    let mut h = Fx::default();
    h.write(text.as_bytes());
    h.finish()
}

// -- JSON values borrowing from the line -------------------------------------------------------------------

/// A JSON value whose strings borrow from the line where they hold no escapes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum J<'a> {
    Null,
    Bool(bool),
    U(u64),
    I(i64), // negative integers only
    F(f64),
    S(Cow<'a, str>),
    A(Vec<J<'a>>),
    O(Obj<'a>),
}

pub(crate) type Obj<'a> = Vec<(Cow<'a, str>, J<'a>)>;

pub(crate) struct JVisitor;

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

pub(crate) struct Key<'a>(Cow<'a, str>);

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
    pub(crate) fn truthy(&self) -> bool {
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

    pub(crate) fn as_f64(&self) -> Option<f64> {
        match self {
            J::U(n) => Some(*n as f64),
            J::I(n) => Some(*n as f64),
            J::F(f) => Some(*f),
            _ => None,
        }
    }

    pub(crate) fn is_number(&self) -> bool {
        matches!(self, J::U(_) | J::I(_) | J::F(_))
    }

    pub(crate) fn str(&self) -> Option<&str> {
        match self {
            J::S(s) => Some(s),
            _ => None,
        }
    }
}

pub(crate) fn get<'o, 'a>(obj: &'o Obj<'a>, key: &str) -> Option<&'o J<'a>> {
    obj.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

pub(crate) fn take<'a>(obj: &mut Obj<'a>, key: &str) -> Option<J<'a>> {
    let i = obj.iter().position(|(k, _)| k == key)?;
    Some(obj.remove(i).1)
}

pub(crate) fn load(line: &str) -> Sure<Obj<'_>> {
    match serde_json::from_str::<J>(line) {
        Ok(J::O(map)) => Ok(map),
        _ => Err(Unsure), // Python writes the error
    }
}

// -- text of values, as Python writes it --------------------------------------------------------------

/// Python's `str()` of a JSON number: ints in decimal, floats as `repr` (fixed notation only).
pub(crate) fn py_str_number(v: &J) -> Sure<String> {
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
/// the rest is Unsure). In that range ryu writes exactly this form.
pub(crate) fn fixed_float(f: f64, out: &mut String) -> Sure<()> {
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
    if shortest.contains('e') {
        return Err(Unsure); // not seen in this range; should a ryu version do it, Python writes the number
    }
    if f < 0.0 {
        out.push('-');
    }
    out.push_str(shortest);
    Ok(())
}

/// orjson.dumps(value).decode()
pub(crate) fn dumps(v: &J, out: &mut String) -> Sure<()> {
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

pub(crate) fn dump_str(s: &str, out: &mut String) {
    // SAFETY: escape_into copies `s` in runs split only at ASCII bytes and adds ASCII escapes: UTF-8 stays valid
    escape_into(s, unsafe { out.as_mut_vec() });
}

/// Per byte: 0 when it stands as it is in a JSON string, else the letter of its escape (`u`: \u00xx).
const ESCAPES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x0c] = b'f';
    table[b'\n' as usize] = b'n';
    table[b'\r' as usize] = b'r';
    table[b'\t' as usize] = b't';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// A JSON string as orjson writes it: `"`, `\\` and control characters escaped (the short forms where JSON
/// has them, else \u00xx), everything else, non-ASCII included, as it is.
pub(crate) fn escape_into(s: &str, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    while let Some(offset) = bytes[start..].iter().position(|&b| ESCAPES[b as usize] != 0) {
        let at = start + offset;
        out.extend_from_slice(&bytes[start..at]);
        match ESCAPES[bytes[at] as usize] {
            b'u' => out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(bytes[at] >> 4) as usize],
                                            HEX[(bytes[at] & 15) as usize]]),
            letter => out.extend_from_slice(&[b'\\', letter]),
        }
        start = at + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// A JSON value as `extra` holds it: strings as they are, anything else as compact JSON.
pub(crate) fn text<'a>(v: &J<'a>) -> Sure<Cow<'a, str>> {
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
pub(crate) fn py_str<'a>(v: &J<'a>) -> Sure<Cow<'a, str>> {
    match v {
        J::S(s) => Ok(s.clone()),
        J::U(_) | J::I(_) | J::F(_) => Ok(Cow::Owned(py_str_number(v)?)),
        J::Null => Ok(Cow::Borrowed("None")),
        J::Bool(b) => Ok(Cow::Borrowed(if *b { "True" } else { "False" })),
        _ => Err(Unsure), // Python's repr of a list or dict
    }
}
