//! Zeek JSON records (sensors/logs/parsers/zeek.py).

use crate::*;

// -- Zeek JSON ----------------------------------------------------------------------------------------------

/// Zeek JSON records, with the tables of sensors/logs/parsers/zeek.py and rules/mapping.py.
#[pyclass(frozen)]
pub(crate) struct ZeekJson {
    pub(crate) common: Common,
    pub(crate) base: FxMap<String, Col>,
    pub(crate) per_log: FxMap<String, FxMap<String, Col>>,
    pub(crate) categories: FxMap<String, String>,
}

#[pymethods]
impl ZeekJson {
    #[new]
    pub(crate) fn new(py: Python<'_>, schema: SchemaArgs, sensor: String, host: String, fields: HashMap<String, String>,
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
    pub(crate) fn parse<'py>(&self, py: Python<'py>, line: &Bound<'py, PyString>, origin: &Bound<'py, PyString>, log: &str)
                  -> Option<Bound<'py, PyDict>> {
        // text with lone surrogates is not UTF-8: the Python parser explains
        settle(|| self.read(py, line, line.to_str().ok()?, origin.to_str().ok()?, log).ok())
    }
}

impl ZeekJson {
    pub(crate) fn read<'py>(&self, py: Python<'py>, pyline: &Bound<'py, PyString>, line: &str, origin: &str,
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
        let said = match log.as_ref() {
            "ssh" => get(&doc, "auth_success"),
            "kerberos" | "ntlm" => get(&doc, "success"),
            _ => None,
        };
        if let Some(v) = said {
            record.set(c.action, outcome(v));
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
