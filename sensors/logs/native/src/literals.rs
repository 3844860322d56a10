//! The detection prefilter's literal search (pipeline/detect/prefilter.py) over a live batch still in memory:
//! which of the rules' necessary literals occur in the batch's events, without asking ClickHouse.
//!
//! ClickHouse finds them in lowerUTF8 of a row's text fields; this searches every text value of an event
//! (strings, their lists, the `extra` map's values), lower-cased: a superset of those fields, so it finds
//! at least what ClickHouse finds. Each distinct text is searched once per batch. Lower-casing is certain only
//! for ASCII and for characters without case forms; an event holding any other character is reported back, for
//! ClickHouse to search.

use std::collections::HashSet;
use std::hash::BuildHasherDefault;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use pyo3::exceptions::PyValueError;
use pyo3::types::{PyList, PyTuple};

use crate::*;

#[pyclass(frozen)]
pub struct LiteralScanner {
    automaton: AhoCorasick,
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

/// One search over a batch: the literals seen so far, and the texts already searched (values repeat a lot:
/// source types, images, channels).
struct Search<'a> {
    automaton: &'a AhoCorasick,
    seen: Vec<bool>,
    searched: HashSet<Vec<u8>, BuildHasherDefault<Fx>>,
    text: Vec<u8>,
}

impl Search<'_> {
    /// Searches the text values of `value` (strings, lists and maps of them); false when one is not certain.
    fn value(&mut self, value: &Bound<'_, PyAny>) -> bool {
        if let Ok(s) = value.cast::<PyString>() {
            let Ok(text) = s.to_str() else { return false };
            self.text.clear();
            if !lower_into(text, &mut self.text) {
                return false;
            }
            if !self.searched.contains(&self.text) {
                for found in self.automaton.find_overlapping_iter(&self.text) {
                    self.seen[found.pattern().as_usize()] = true;
                }
                self.searched.insert(self.text.clone());
            }
            true
        } else if let Ok(map) = value.cast::<PyDict>() {
            map.values().iter().fold(true, |sure, v| self.value(&v) && sure)
        } else if let Ok(list) = value.cast::<PyList>() {
            list.iter().fold(true, |sure, v| self.value(&v) && sure)
        } else if let Ok(tuple) = value.cast::<PyTuple>() {
            tuple.iter().fold(true, |sure, v| self.value(&v) && sure)
        } else {
            true // numbers, booleans, None: not text ClickHouse searches
        }
    }
}

#[pymethods]
impl LiteralScanner {
    /// `literals`: lower-case, as the prefilter's LiteralIndex holds them (numbered from 1 in that order).
    #[new]
    fn new(literals: Vec<String>) -> PyResult<Self> {
        let automaton = AhoCorasickBuilder::new()
            .match_kind(MatchKind::Standard)
            .build(&literals)
            .map_err(|e| PyValueError::new_err(format!("literal automaton: {e}")))?;
        Ok(Self { automaton })
    }

    /// (the 1-based numbers of the literals some event holds, the positions of the events not searched).
    fn scan(&self, events: &Bound<'_, PyList>) -> PyResult<(Vec<u32>, Vec<usize>)> {
        let mut search = Search {
            automaton: &self.automaton,
            seen: vec![false; self.automaton.patterns_len()],
            searched: HashSet::default(),
            text: Vec::with_capacity(4096),
        };
        let mut unsure = Vec::new();
        for (position, event) in events.iter().enumerate() {
            if !search.value(event.cast::<PyDict>()?.as_any()) {
                unsure.push(position);
            }
        }
        let found = search.seen.iter().enumerate().filter(|(_, s)| **s).map(|(i, _)| i as u32 + 1).collect();
        Ok((found, unsure))
    }
}
