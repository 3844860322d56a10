//! The event being built (a parser's `record`) and what every reader shares: provenance, the id, the
//! canonical dict handed back to Python.

use std::sync::Mutex;

use pyo3::types::PyList;

use crate::*;

// -- the event being built ------------------------------------------------------------------------------

/// The parser's `record` dict: columns in insertion order, each already validated as normalize will hold
/// it, and `extra`. `raw_zero` remembers a numeric 0 the record held (Python tests `not record.get(..)`).
pub(crate) struct Record<'a> {
    pub(crate) columns: Vec<(Col, Out<'a>, bool)>,
    pub(crate) present: u128,
    pub(crate) extra: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> Record<'a> {
    pub(crate) fn new() -> Self {
        Record { columns: Vec::with_capacity(24), present: 0, extra: Vec::with_capacity(24) }
    }

    pub(crate) fn has(&self, column: Col) -> bool {
        self.present & (1 << column) != 0
    }

    /// record[column] = value (a dict keeps the first position of a key)
    pub(crate) fn set(&mut self, column: Col, value: Out<'a>) {
        self.set_raw(column, value, false);
    }

    pub(crate) fn set_raw(&mut self, column: Col, value: Out<'a>, raw_zero: bool) {
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
    pub(crate) fn add_extra(&mut self, name: Cow<'a, str>, value: Cow<'a, str>) {
        self.extra.push((name, value));
    }

    /// base.put: into the column when the value fits it and the column is still free, else into `extra`.
    #[allow(clippy::ptr_arg)] // the Cow itself: a borrowed name goes into `extra` without a copy
    pub(crate) fn put(&mut self, schema: &Schema, column: Col, v: &J<'a>, name: &Cow<'a, str>) -> Sure<()> {
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
    pub(crate) fn set_checked(&mut self, schema: &Schema, column: Col, v: &J<'a>) -> Sure<()> {
        let out = schema.check(column, v)?.ok_or(Unsure)?; // normalize would raise: Python says why
        self.set(column, out);
        Ok(())
    }
}

/// The columns the readers set themselves.
pub(crate) struct Cols {
    pub(crate) ts: Col,
    pub(crate) event_id: Col,
    pub(crate) sensor: Col,
    pub(crate) source_type: Col,
    pub(crate) event_category: Col,
    pub(crate) action: Col,
    pub(crate) severity: Col,
    pub(crate) protocol: Col,
    pub(crate) duration: Col,
    pub(crate) dns_answers: Col,
    pub(crate) host_name: Col,
    pub(crate) raw: Col,
}

pub(crate) const HEX: &[u8; 16] = b"0123456789abcdef";

// -- what every reader shares -------------------------------------------------------------------------------

pub(crate) struct Common {
    pub(crate) schema: Schema,
    pub(crate) cols: Cols,
    pub(crate) sensor: String,
    pub(crate) host: String,
    pub(crate) names: Vec<Py<PyString>>,                  // each column's name as a Python str
    pub(crate) extra_key: Py<PyString>,                   // "extra"
    // Python str objects reused across events: source field names, and short values (true, udp, NOERROR, ...)
    pub(crate) keys: Mutex<FxMap<String, Py<PyString>>>,
    pub(crate) values: Mutex<FxMap<String, Py<PyString>>>,
}

pub(crate) const SHORT_VALUE: usize = 12;
pub(crate) const CACHE_LIMIT: usize = 8192;

/// The one Python str kept for `text`, made and kept on first use while the cache has room.
pub(crate) fn cached<'py>(py: Python<'py>, cache: &mut FxMap<String, Py<PyString>>, text: &str) -> Bound<'py, PyString> {
    if let Some(s) = cache.get(text) {
        return s.bind(py).clone();
    }
    let s = PyString::new(py, text);
    if cache.len() < CACHE_LIMIT {
        cache.insert(text.to_owned(), s.clone().unbind());
    }
    s
}

pub(crate) type SchemaArgs = (Vec<(String, String)>, Vec<String>, Vec<String>);

impl Common {
    pub(crate) fn new(py: Python<'_>, (fields, lowercase, required): SchemaArgs, sensor: String, host: String)
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

    pub(crate) fn columns(&self, table: HashMap<String, String>) -> PyResult<FxMap<String, Col>> {
        table.into_iter().map(|(k, c)| Ok((k, self.schema.id(&c)?))).collect()
    }

    pub(crate) fn ts<'a>(&self, record: &mut Record<'a>, v: &J<'a>) -> Sure<()> {
        if matches!(v, J::Null) || matches!(v, J::S(s) if s.is_empty()) {
            return Err(Unsure); // normalize's required-field error: Python's message
        }
        record.set_checked(&self.schema, self.cols.ts, v)
    }

    /// Parser.event + normalize: provenance, the id, then the canonical dict.
    pub(crate) fn finish<'py, 'a>(&'a self, py: Python<'py>, mut record: Record<'a>, source_type: &'a str,
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
        // the id pipeline.schema.event_id gives: BLAKE2b-128 of source, raw record and position
        let mut hasher = blake2b_simd::Params::new().hash_length(16).to_state();
        hasher.update(self.sensor.as_bytes());
        hasher.update(b"/");
        hasher.update(source_type.as_bytes());
        hasher.update(b"\x1f");
        hasher.update(raw.as_bytes());
        hasher.update(b"\x1f");
        hasher.update(origin.as_bytes());
        let digest = hasher.finalize();
        let mut id = String::with_capacity(32);
        for &byte in digest.as_bytes() {
            id.push(HEX[(byte >> 4) as usize] as char);
            id.push(HEX[(byte & 15) as usize] as char);
        }
        record.set(c.event_id, Out::Str(Cow::Owned(id)));
        self.to_py(py, record, Some(line)).map_err(|_| Unsure)
    }

    /// The canonical dict; `line` is the str a reader's `raw` (Out::Line) refers to.
    pub(crate) fn to_py<'py>(&self, py: Python<'py>, record: Record<'_>, line: Option<&Bound<'py, PyString>>)
                             -> PyResult<Bound<'py, PyDict>> {
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
                Out::Line => out.set_item(key, line.ok_or_else(|| pyo3::exceptions::PyValueError::new_err("no line"))?)?,
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

/// A reader's answer; a panic (a bug here) becomes None, so the Python parser reads the line instead of the
/// panic escaping into the sensor as a BaseException.
pub(crate) fn settle<T>(read: impl FnOnce() -> Option<T>) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).unwrap_or(None)
}

/// A dict with room for `n` items: built without the resizes of growing one item at a time.
pub(crate) fn presized(py: Python<'_>, n: usize) -> PyResult<Bound<'_, PyDict>> {
    // SAFETY: _PyDict_NewPresized returns a new reference to a dict, or NULL with an exception set
    unsafe {
        let ptr = pyo3::ffi::_PyDict_NewPresized(n as pyo3::ffi::Py_ssize_t);
        Ok(Bound::from_owned_ptr_or_err(py, ptr)?.cast_into_unchecked())
    }
}

/// `value in (True, "T")`
pub(crate) fn is_true(v: &J) -> bool {
    match v {
        J::Bool(b) => *b,
        J::S(s) => s == "T",
        _ => v.as_f64() == Some(1.0),
    }
}

pub(crate) fn lower_ascii<'a>(v: &J<'a>) -> Sure<J<'a>> {
    match v {
        J::S(s) if s.is_ascii() => Ok(J::S(Cow::Owned(s.to_ascii_lowercase()))),
        _ => Err(Unsure),
    }
}
