//! Native reader of JSON log records: Zeek JSON, Suricata EVE and Windows event JSON lines -> canonical events.
//!
//! A fast path beside the Python parsers (sensors/logs/parsers/zeek.py, eve.py, windows.py), not a second definition
//! of them: the schema's field kinds and every mapping table come from Python at construction, and for
//! each line it returns exactly the event the Python parser returns, or `None`, and the Python parser
//! reads that line. It answers `None` wherever it is not certain to agree: invalid JSON (the Python
//! parser writes the error), duplicate keys, timestamps outside the ISO forms below, floats Python would
//! print in exponent notation, non-ASCII text that would need lower-casing, IPv6 text with dots or zone
//! ids. tests/unit/test_native_json.py compares both on real logs and on generated and mutated records.

mod event;
mod eve;
mod json;
mod literals;
mod schema;
mod windows;
mod wire;
mod zeek;

pub(crate) use std::borrow::Cow;
pub(crate) use std::collections::HashMap;

pub(crate) use pyo3::prelude::*;
pub(crate) use pyo3::types::{PyDict, PyString};

pub(crate) use event::*;
pub(crate) use json::*;
pub(crate) use schema::*;

/// Not certain to agree with the Python parser: let it read the line.
pub(crate) struct Unsure;
pub(crate) type Sure<T> = Result<T, Unsure>;

#[pymodule]
fn ganzhi_jsonlogs(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<zeek::ZeekJson>()?;
    m.add_class::<eve::EveJson>()?;
    m.add_class::<windows::WindowsJson>()?;
    m.add_function(wrap_pyfunction!(wire::encode_event, m)?)?;
    m.add_class::<wire::WireDecoder>()?;
    m.add_class::<literals::LiteralScanner>()?;
    Ok(())
}
