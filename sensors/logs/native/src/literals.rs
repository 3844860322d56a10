//! The detection prefilter's literal search (pipeline/detect/prefilter.py) over a live batch still in memory:
//! which of the rules' necessary literals occur in the batch's events, without asking ClickHouse.
//!
//! The exact conditions need a literal inside its own field, so this searches the text of those fields only
//! (the keys it is given; `extra`: all the map's values, as `mapValues` does), each value on its own and
//! lower-cased: it finds every literal some field holds (ClickHouse, matching the fields joined into one
//! text, may also find one across two fields, which no condition matches). Each distinct text is searched
//! once per batch. Lower-casing is certain only for ASCII and for characters without case forms; an event
//! holding any other character is reported back, for ClickHouse to search.

use std::collections::HashSet;
use std::hash::BuildHasherDefault;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use pyo3::exceptions::PyValueError;
use pyo3::types::{PyList, PyTuple};

use crate::*;

#[pyclass(frozen)]
pub struct LiteralScanner {
    automaton: AhoCorasick,
    keys: Vec<Py<PyString>>,
}

/// Appends `text` lower-cased as lowerUTF8 would; false when a character might fold otherwise.
fn lower_into(text: &str, out: &mut Vec<u8>) -> bool {
    if text.is_ascii() {
        out.extend(text.bytes().map(|b| b.to_ascii_lowercase()));
        return true;
    }
    let mut utf8 = [0u8; 4];
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase() as u8);
        } else if !c.is_lowercase() && !c.is_uppercase() && c.to_lowercase().eq([c]) && c.to_uppercase().eq([c]) {
            out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
        } else {
            return false;
        }
    }
    true
}

/// The distinct lower-cased texts of a batch (values repeat a lot: source types, images, channels), gathered
/// while holding the GIL; searched after releasing it, so the caller's other threads (sending the batch's first
/// queries) are not held up.
#[derive(Default)]
struct Texts {
    distinct: HashSet<Vec<u8>, BuildHasherDefault<Fx>>,
    text: Vec<u8>,
}

impl Texts {
    /// Gathers the text values of `value` (strings, lists and maps of them); false when one is not certain.
    fn gather(&mut self, value: &Bound<'_, PyAny>) -> bool {
        if let Ok(s) = value.cast::<PyString>() {
            let Ok(text) = s.to_str() else { return false };
            self.text.clear();
            if !lower_into(text, &mut self.text) {
                return false;
            }
            if !self.distinct.contains(&self.text) {
                self.distinct.insert(self.text.clone());
            }
            true
        } else if let Ok(map) = value.cast::<PyDict>() {
            map.values().iter().fold(true, |sure, v| self.gather(&v) && sure)
        } else if let Ok(list) = value.cast::<PyList>() {
            list.iter().fold(true, |sure, v| self.gather(&v) && sure)
        } else if let Ok(tuple) = value.cast::<PyTuple>() {
            tuple.iter().fold(true, |sure, v| self.gather(&v) && sure)
        } else {
            true // numbers, booleans, None: not text ClickHouse searches
        }
    }
}

#[pymethods]
impl LiteralScanner {
    /// `literals`: lower-case, as the prefilter's LiteralIndex holds them (numbered from 1 in that order);
    /// `keys`: the event fields they belong to.
    #[new]
    fn new(py: Python<'_>, literals: Vec<String>, keys: Vec<String>) -> PyResult<Self> {
        let automaton = AhoCorasickBuilder::new()
            .match_kind(MatchKind::Standard)
            .build(&literals)
            .map_err(|e| PyValueError::new_err(format!("literal automaton: {e}")))?;
        let keys = keys.iter().map(|k| PyString::intern(py, k).unbind()).collect();
        Ok(Self { automaton, keys })
    }

    /// (the 1-based numbers of the literals some event holds, the positions of the events not searched).
    fn scan(&self, py: Python<'_>, events: &Bound<'_, PyList>) -> PyResult<(Vec<u32>, Vec<usize>)> {
        let mut texts = Texts { text: Vec::with_capacity(4096), ..Texts::default() };
        let mut unsure = Vec::new();
        let keys: Vec<&Bound<'_, PyString>> = self.keys.iter().map(|k| k.bind(py)).collect();
        for (position, event) in events.iter().enumerate() {
            let event = event.cast::<PyDict>()?;
            let mut sure = true;
            for key in &keys {
                if let Some(value) = event.get_item(key)? {
                    sure &= texts.gather(&value);
                }
            }
            if !sure {
                unsure.push(position);
            }
        }
        let automaton = &self.automaton;
        let seen = py.detach(|| {
            let mut seen = vec![false; automaton.patterns_len()];
            for text in &texts.distinct {
                for found in automaton.find_overlapping_iter(text) {
                    seen[found.pattern().as_usize()] = true;
                }
            }
            seen
        });
        let found = seen.iter().enumerate().filter(|(_, s)| **s).map(|(i, _)| i as u32 + 1).collect();
        Ok((found, unsure))
    }
}
