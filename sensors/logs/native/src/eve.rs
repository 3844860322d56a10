//! Suricata EVE records (sensors/logs/parsers/eve.py).

use crate::*;

// -- Suricata EVE ------------------------------------------------------------------------------------------

/// Suricata EVE records, with the tables of sensors/logs/parsers/eve.py.
#[pyclass(frozen)]
pub(crate) struct EveJson {
    pub(crate) common: Common,
    pub(crate) columns: FxMap<String, Col>,
    pub(crate) categories: FxMap<String, String>,
    pub(crate) severities: HashMap<i64, String>,
    pub(crate) source_type: String,
}

/// eve._flatten: the leaves under dotted paths; a repeated path keeps its first place, like a dict.
pub(crate) fn flatten<'o, 'a>(prefix: &str, node: &'o J<'a>, out: &mut Vec<(String, &'o J<'a>)>) {
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
pub(crate) fn rdata<'a>(v: &J<'a>) -> Sure<Cow<'a, str>> {
    match v {
        J::O(_) => text(v),
        other => py_str(other),
    }
}

/// eve._answers
pub(crate) fn answers<'a>(dns: &Obj<'a>) -> Sure<Vec<Cow<'a, str>>> {
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
pub(crate) fn section<'o, 'a>(doc: &'o Obj<'a>, key: &str, empty: &'o Obj<'a>) -> &'o Obj<'a> {
    match get(doc, key) {
        Some(J::O(m)) => m,
        _ => empty,
    }
}

/// `mapping.get(key, "")`
pub(crate) fn get_or_empty<'a>(m: &Obj<'a>, key: &str) -> J<'a> {
    get(m, key).cloned().unwrap_or(J::S(Cow::Borrowed("")))
}

#[pymethods]
impl EveJson {
    #[new]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(py: Python<'_>, schema: SchemaArgs, sensor: String, host: String, columns: HashMap<String, String>,
           categories: HashMap<String, String>, severities: HashMap<i64, String>, source_type: String)
           -> PyResult<Self> {
        let common = Common::new(py, schema, sensor, host)?;
        let columns = common.columns(columns)?;
        Ok(EveJson { common, columns, categories: categories.into_iter().collect(), severities, source_type })
    }

    /// The canonical event of one EVE line, or None: let the Python parser read it.
    pub(crate) fn parse<'py>(&self, py: Python<'py>, line: &Bound<'py, PyString>, origin: &Bound<'py, PyString>)
                  -> Option<Bound<'py, PyDict>> {
        settle(|| self.read(py, line, line.to_str().ok()?, origin.to_str().ok()?).ok())
    }
}

impl EveJson {
    pub(crate) fn read<'py>(&self, py: Python<'py>, pyline: &Bound<'py, PyString>, line: &str, origin: &str)
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
        for (path, value) in flat {
            match self.columns.get(path.as_str()) {
                Some(&col) if !matches!(value, J::A(_) | J::Bool(_)) => record.put(schema, col, value, &Cow::Owned(path))?,
                _ => {
                    let empty = match value {
                        J::Null => true,
                        J::A(a) => a.is_empty(),
                        J::S(s) => s.is_empty(),
                        _ => false,
                    };
                    if !empty {
                        record.add_extra(Cow::Owned(path), text(value)?);
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
