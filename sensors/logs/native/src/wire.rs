//! The wire form of a canonical event (pipeline.schema.dumps): its JSON line, written without the Python
//! dict the schema builds first. Any value this writer is not sure to write as orjson does gives None, and
//! the caller uses pipeline.schema.dumps.

use std::io::Write;

use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt, PyList, PyTuple};

use crate::*;

/// civil date of a day count since 1970-01-01 (Howard Hinnant's algorithm)
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// pipeline.schema.format_ts: 2024-05-01T08:00:00.123Z
fn format_ts(ms: i64, out: &mut Vec<u8>) -> Sure<()> {
    let (seconds, millis) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, rest) = (seconds.div_euclid(86400), seconds.rem_euclid(86400));
    let (y, m, d) = civil_from_days(days);
    if !(1000..=9999).contains(&y) {
        return Err(Unsure); // strftime's %Y does not pad years below 1000
    }
    let (h, mi, s) = (rest / 3600, rest % 3600 / 60, rest % 60);
    write!(out, "\"{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{millis:03}Z\"").map_err(|_| Unsure)
}

fn write_str(s: &Bound<'_, PyString>, out: &mut Vec<u8>) -> Sure<()> {
    escape_into(s.to_str().map_err(|_| Unsure)?, out); // lone surrogates: orjson raises, and so will dumps
    Ok(())
}

fn write_value(v: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> Sure<()> {
    if let Ok(s) = v.cast::<PyString>() {
        write_str(s, out)
    } else if let Ok(b) = v.cast::<PyBool>() {
        out.extend_from_slice(if b.is_true() { b"true" } else { b"false" });
        Ok(())
    } else if let Ok(i) = v.cast::<PyInt>() {
        match (i.extract::<i64>(), i.extract::<u64>()) {
            (Ok(n), _) => write!(out, "{n}").map_err(|_| Unsure),
            (_, Ok(n)) => write!(out, "{n}").map_err(|_| Unsure),
            _ => Err(Unsure), // beyond 64 bits: orjson raises
        }
    } else if let Ok(f) = v.cast::<PyFloat>() {
        let mut text = String::new();
        fixed_float(f.value(), &mut text)?;
        out.extend_from_slice(text.as_bytes());
        Ok(())
    } else if let Ok(list) = v.cast::<PyList>() {
        write_items(list.iter(), out)
    } else if let Ok(tuple) = v.cast::<PyTuple>() {
        write_items(tuple.iter(), out)
    } else if let Ok(map) = v.cast::<PyDict>() {
        out.push(b'{');
        for (i, (k, item)) in map.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(k.cast::<PyString>().map_err(|_| Unsure)?, out)?;
            out.push(b':');
            write_value(&item, out)?;
        }
        out.push(b'}');
        Ok(())
    } else if v.is_none() {
        out.extend_from_slice(b"null");
        Ok(())
    } else {
        Err(Unsure)
    }
}

fn write_items<'py>(items: impl Iterator<Item = Bound<'py, PyAny>>, out: &mut Vec<u8>) -> Sure<()> {
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_value(&item, out)?;
    }
    out.push(b']');
    Ok(())
}

/// to_json_dict + orjson.dumps: the fields with a value in the event's order, `ts` as ISO text (a zero
/// `ts` is left out by the comprehension and written last, as to_json_dict does).
fn encode(event: &Bound<'_, PyDict>) -> Sure<Vec<u8>> {
    let mut out = Vec::with_capacity(1024);
    out.push(b'{');
    let mut first = true;
    let mut ts: Option<i64> = None;
    let mut zero_ts = false;
    let mut key = |name: &Bound<'_, PyString>, out: &mut Vec<u8>| -> Sure<()> {
        if !first {
            out.push(b',');
        }
        first = false;
        write_str(name, out)?;
        out.push(b':');
        Ok(())
    };
    for (k, v) in event.iter() {
        let name = k.cast::<PyString>().map_err(|_| Unsure)?;
        if name.to_str().map_err(|_| Unsure)? == "ts" {
            let ms = v.cast::<PyInt>().map_err(|_| Unsure)?.extract::<i64>().map_err(|_| Unsure)?;
            ts = Some(ms);
            if ms == 0 {
                zero_ts = true;
                continue;
            }
            key(name, &mut out)?;
            format_ts(ms, &mut out)?;
            continue;
        }
        if !v.is_truthy().map_err(|_| Unsure)? {
            continue;
        }
        key(name, &mut out)?;
        write_value(&v, &mut out)?;
    }
    if ts.is_none() {
        return Err(Unsure); // dumps raises KeyError
    }
    if zero_ts {
        let name = PyString::new(event.py(), "ts");
        key(&name, &mut out)?;
        format_ts(0, &mut out)?;
    }
    out.push(b'}');
    Ok(out)
}

/// pipeline.schema.dumps(event), or None where this writer is not sure to write the same bytes.
#[pyfunction]
pub(crate) fn encode_event<'py>(py: Python<'py>, event: &Bound<'py, PyDict>) -> Option<Bound<'py, PyBytes>> {
    settle(|| encode(event).ok().map(|line| PyBytes::new(py, &line)))
}

/// pipeline.schema._text: strings as they are, None as "", anything else as compact JSON
fn schema_text<'a>(v: &J<'a>) -> Sure<Cow<'a, str>> {
    match v {
        J::Null => Ok(Cow::Borrowed("")),
        other => text(other),
    }
}

/// pipeline.codec's reader of event lines: loads + normalize, natively.
#[pyclass(frozen)]
pub(crate) struct WireDecoder {
    common: Common,
}

#[pymethods]
impl WireDecoder {
    #[new]
    fn new(py: Python<'_>, schema: SchemaArgs) -> PyResult<Self> {
        // the decoder names no sensor of its own: the events carry theirs
        Ok(WireDecoder { common: Common::new(py, schema, "wire".to_owned(), String::new())? })
    }

    /// The canonical event of one line of an events message, or None: pipeline.schema.loads reads it (and
    /// says what is wrong with it).
    fn decode<'py>(&self, py: Python<'py>, line: &[u8]) -> Option<Bound<'py, PyDict>> {
        settle(|| self.read(py, line).ok())
    }
}

impl WireDecoder {
    fn read<'py>(&self, py: Python<'py>, line: &[u8]) -> Sure<Bound<'py, PyDict>> {
        let doc = load(std::str::from_utf8(line).map_err(|_| Unsure)?)?;
        let schema = &self.common.schema;
        for (id, name) in schema.names.iter().enumerate() {
            if schema.required & (1 << id) != 0 && get(&doc, name).is_none_or(|v| matches!(v, J::Null) || matches!(v, J::S(s) if s.is_empty())) {
                return Err(Unsure); // a required field missing: Python's message
            }
        }
        let mut record = Record::new();
        match get(&doc, "extra") {
            None | Some(J::Null) => {}
            Some(J::O(given)) => {
                for (k, v) in given {
                    record.add_extra(k.clone(), schema_text(v)?);
                }
            }
            Some(_) => return Err(Unsure),
        }
        for (key, given) in &doc {
            match schema.ids.get(key.as_ref()) {
                Some(_) if key == "extra" => {}
                Some(&column) => {
                    let out = schema.check(column, given)?.ok_or(Unsure)?; // normalize raises: Python says why
                    record.set(column, out);
                }
                None if key == "schema_version" || key == "ingested_at" => {}
                None => record.add_extra(key.clone(), schema_text(given)?),
            }
        }
        let id_col = self.common.cols.event_id;
        if record.columns.iter().any(|(c, v, _)| *c == id_col && matches!(v, Out::Str(s) if s.len() > 128)) {
            return Err(Unsure);
        }
        self.common.to_py(py, record, None).map_err(|_| Unsure)
    }
}
