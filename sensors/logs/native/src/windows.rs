//! Windows events as JSON lines (sensors/logs/parsers/windows.py).

use crate::*;

// -- Windows event JSON -------------------------------------------------------------------------------------

/// Windows events as JSON lines (evtx_dump, Winlogbeat, NXLog), with the tables of
/// sensors/logs/parsers/windows.py and rules/mapping.py.
#[pyclass(frozen)]
pub(crate) struct WindowsJson {
    pub(crate) common: Common,
    pub(crate) fields: FxMap<String, Col>,
    pub(crate) sysmon: HashMap<i64, String>,
    pub(crate) channels: HashMap<(String, i64), String>,
    pub(crate) auth_events: Vec<i64>,
    pub(crate) success_events: Vec<i64>,
    pub(crate) failure_events: Vec<i64>,
    pub(crate) nxlog_head: FxMap<String, String>,
    pub(crate) source_type: String,
}

/// A dict being filled: keys in first-insertion order, a repeated key keeping its place and taking the new
/// value. One bit per key hash finds most keys new without comparing strings.
#[derive(Default)]
pub(crate) struct Dict<'a> {
    pub(crate) items: Obj<'a>,
    pub(crate) seen: u64,
}

impl<'a> Dict<'a> {
    pub(crate) fn bit(key: &str) -> u64 {
        1 << (fx(key) & 63)
    }

    /// dict[key] = value
    pub(crate) fn assign(&mut self, key: Cow<'a, str>, value: J<'a>) {
        let bit = Self::bit(&key);
        if self.seen & bit != 0 {
            if let Some(slot) = self.items.iter_mut().find(|(k, _)| *k == key) {
                slot.1 = value;
                return;
            }
        }
        self.seen |= bit;
        self.items.push((key, value));
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        self.seen & Self::bit(key) != 0 && has(&self.items, key)
    }

    pub(crate) fn get(&self, key: &str) -> Option<&J<'a>> {
        if self.seen & Self::bit(key) == 0 {
            return None;
        }
        get(&self.items, key)
    }
}

pub(crate) fn has(obj: &Obj, key: &str) -> bool {
    obj.iter().any(|(k, _)| k == key)
}

/// windows._text: the value of an XML-derived node, `{"#text": v, ...}` -> v
pub(crate) fn xml_text<'a>(node: &J<'a>) -> J<'a> {
    match node {
        J::O(m) => get(m, "#text").or_else(|| get(m, "Value")).cloned().unwrap_or(J::S(Cow::Borrowed(""))),
        other => other.clone(),
    }
}

/// windows._attributes(node).get(key, ""): Unsure where Python would fail on a non-object
pub(crate) fn attribute<'a>(node: Option<&J<'a>>, key: &str) -> Sure<J<'a>> {
    let empty = J::S(Cow::Borrowed(""));
    let Some(J::O(m)) = node else { return Ok(empty) };
    match get(m, "#attributes") {
        Some(J::O(attrs)) => Ok(get(attrs, key).cloned().unwrap_or(empty)),
        Some(v) if v.truthy() => Err(Unsure),
        _ => Ok(empty),
    }
}

/// `mapping.get(key, "")` where the value may be anything
pub(crate) fn get_any<'a>(m: &Obj<'a>, key: &str) -> J<'a> {
    get(m, key).cloned().unwrap_or(J::S(Cow::Borrowed("")))
}

/// windows._flatten_data: EventData / UserData in their JSON renderings -> name: value
pub(crate) fn flatten_data<'a>(node: Option<&J<'a>>, out: &mut Dict<'a>) -> Sure<()> {
    let node = match node {
        None | Some(J::Null) => return Ok(()),
        Some(n) => n,
    };
    let map = match node {
        J::A(items) => {
            for item in items {
                flatten_data(Some(item), out)?;
            }
            return Ok(());
        }
        J::O(map) => map,
        other => {
            if !out.contains("Data") {
                out.assign(Cow::Borrowed("Data"), other.clone()); // setdefault
            }
            return Ok(());
        }
    };
    if has(map, "Data") && map.len() <= 2 {
        let data = get(map, "Data").ok_or(Unsure)?;
        let items: Vec<&J<'a>> = match data {
            J::A(list) => list.iter().collect(),
            single => vec![single],
        };
        let count = items.len();
        for (i, item) in items.into_iter().enumerate() {
            if let J::O(fields) = item {
                match get(fields, "#attributes") {
                    Some(J::O(attrs)) if has(attrs, "Name") => {
                        let Some(J::S(name)) = get(attrs, "Name") else { return Err(Unsure) };
                        out.assign(name.clone(), get_any(fields, "#text"));
                        continue;
                    }
                    Some(J::O(_)) | None => {}
                    Some(_) => return Err(Unsure), // `"Name" in` a string or list: Python's own way
                }
                if has(fields, "Name") {
                    let Some(J::S(name)) = get(fields, "Name") else { return Err(Unsure) };
                    let value = get(fields, "#text").or_else(|| get(fields, "Value")).cloned()
                        .unwrap_or(J::S(Cow::Borrowed("")));
                    out.assign(name.clone(), value);
                    continue;
                }
            }
            let key = if count == 1 { Cow::Borrowed("Data") } else { Cow::Owned(format!("Data{i}")) };
            out.assign(key, xml_text(item));
        }
        return Ok(());
    }
    for (key, value) in map {
        if key == "#attributes" {
            continue;
        }
        match value {
            J::O(inner) if !(has(inner, "#text") || inner.len() == 1 && has(inner, "#attributes")) => {
                flatten_data(Some(value), out)? // UserData wraps fields in one named element
            }
            _ => out.assign(key.clone(), xml_text(value)),
        }
    }
    Ok(())
}

/// `doc.get(key) or {}` feeding a `dict(...)` / `.update(...)` / `.get(...)`: an object, else empty for a
/// falsy value; a truthy non-object is Python's to judge.
pub(crate) fn object_or_empty<'o, 'a>(v: Option<&'o J<'a>>) -> Sure<Option<&'o Obj<'a>>> {
    match v {
        Some(J::O(m)) => Ok(Some(m)),
        Some(v) if v.truthy() => Err(Unsure),
        _ => Ok(None),
    }
}

#[pymethods]
impl WindowsJson {
    #[new]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(py: Python<'_>, schema: SchemaArgs, sensor: String, fields: HashMap<String, String>,
           sysmon: HashMap<i64, String>, channels: Vec<(String, i64, String)>, auth_events: Vec<i64>,
           success_events: Vec<i64>, failure_events: Vec<i64>, nxlog_head: HashMap<String, String>,
           source_type: String) -> PyResult<Self> {
        let common = Common::new(py, schema, sensor, String::new())?;
        let fields = common.columns(fields)?;
        let channels = channels.into_iter().map(|(c, id, cat)| ((c, id), cat)).collect();
        Ok(WindowsJson { common, fields, sysmon, channels, auth_events, success_events, failure_events,
                         nxlog_head: nxlog_head.into_iter().collect(), source_type })
    }

    /// The canonical event of one Windows event JSON line, or None: let the Python parser read it.
    pub(crate) fn parse<'py>(&self, py: Python<'py>, line: &Bound<'py, PyString>, origin: &Bound<'py, PyString>)
                  -> Option<Bound<'py, PyDict>> {
        settle(|| self.read(py, line, line.to_str().ok()?, origin.to_str().ok()?).ok())
    }
}

impl WindowsJson {
    /// windows.split: (header fields, event data)
    pub(crate) fn split<'a>(&self, doc: &Obj<'a>) -> Sure<(Dict<'a>, Dict<'a>)> {
        let s = |v: &'static str| Cow::Borrowed(v);
        let mut head = Dict::default();
        let mut data = Dict::default();
        if let Some(J::O(event)) = get(doc, "Event") {
            let empty = Obj::new();
            let system = object_or_empty(get(event, "System"))?.unwrap_or(&empty);
            head.assign(s("EventID"), get(system, "EventID").map_or(J::Null, xml_text));
            head.assign(s("Channel"), get_any(system, "Channel"));
            head.assign(s("Computer"), get_any(system, "Computer"));
            head.assign(s("Provider_Name"), attribute(get(system, "Provider"), "Name")?);
            head.assign(s("EventRecordID"), get_any(system, "EventRecordID"));
            head.assign(s("Level"), get_any(system, "Level"));
            head.assign(s("Task"), get_any(system, "Task"));
            head.assign(s("TimeCreated"), attribute(get(system, "TimeCreated"), "SystemTime")?);
            head.assign(s("UserID"), attribute(get(system, "Security"), "UserID")?);
            flatten_data(get(event, "EventData"), &mut data)?;
            flatten_data(get(event, "UserData"), &mut data)?;
        } else if let Some(J::O(winlog)) = get(doc, "winlog") {
            let computer = match get(winlog, "computer_name") {
                Some(v) if v.truthy() => v.clone(),
                _ => match object_or_empty(get(doc, "host"))? {
                    Some(host) => get_any(host, "name"),
                    None => J::S(s("")),
                },
            };
            head.assign(s("EventID"), get_any(winlog, "event_id"));
            head.assign(s("Channel"), get_any(winlog, "channel"));
            head.assign(s("Computer"), computer);
            head.assign(s("Provider_Name"), get_any(winlog, "provider_name"));
            head.assign(s("EventRecordID"), get_any(winlog, "record_id"));
            head.assign(s("TimeCreated"), get_any(doc, "@timestamp"));
            for part in ["event_data", "user_data"] {
                if let Some(fields) = object_or_empty(get(winlog, part))? {
                    for (k, v) in fields {
                        data.assign(k.clone(), v.clone());
                    }
                }
            }
        } else if has(doc, "EventID") && (has(doc, "Channel") || has(doc, "SourceName")) {
            for (k, v) in doc {
                match self.nxlog_head.get(k.as_ref()) {
                    Some(name) => head.assign(Cow::Owned(name.clone()), v.clone()),
                    None => data.assign(k.clone(), v.clone()),
                }
            }
        } else {
            return Err(Unsure); // not a Windows event: Python says so
        }
        Ok((head, data))
    }

    /// rules.mapping.windows_category
    pub(crate) fn category(&self, channel: &str, eid: i64, event_type: &J) -> Sure<String> {
        if !channel.is_ascii() {
            return Err(Unsure);
        }
        let channel = channel.to_ascii_lowercase();
        if channel == "microsoft-windows-sysmon/operational" {
            if eid == 12 {
                let kind = match event_type {
                    J::S(t) if t.is_ascii() => t.to_ascii_lowercase(),
                    _ => return Err(Unsure),
                };
                return Ok(if kind.contains("delete") { "registry_delete" } else { "registry_add" }.to_owned());
            }
            return Ok(self.sysmon.get(&eid).cloned().unwrap_or_default());
        }
        if let Some(category) = self.channels.get(&(channel.clone(), eid)) {
            if !category.is_empty() {
                return Ok(category.clone());
            }
        }
        if channel == "security" && self.auth_events.contains(&eid) {
            return Ok("auth".to_owned());
        }
        Ok(String::new())
    }

    pub(crate) fn read<'py>(&self, py: Python<'py>, pyline: &Bound<'py, PyString>, line: &str, origin: &str)
                 -> Sure<Bound<'py, PyDict>> {
        let doc = load(line)?;
        let (head, data) = self.split(&doc)?;
        let eid: i64 = match head.get("EventID") {
            None => 0,
            Some(J::U(n)) => i64::try_from(*n).map_err(|_| Unsure)?,
            Some(J::S(t)) if t.is_empty() => 0,
            Some(J::S(t)) if t.len() <= 18 && t.bytes().all(|b| b.is_ascii_digit()) => t.parse().map_err(|_| Unsure)?,
            _ => return Err(Unsure), // int(str(...)) of other values: Python decides (or explains)
        };
        let created = match head.get("TimeCreated") {
            Some(J::S(t)) if !t.is_empty() => t.replace(' ', "T"),
            _ => return Err(Unsure), // no event time, or one Python turns into text first
        };
        let channel = match head.get("Channel") {
            None => "",
            Some(J::S(c)) => c.as_ref(),
            Some(_) => return Err(Unsure),
        };
        let event_type = match data.get("EventType") {
            None => J::S(Cow::Borrowed("")),
            Some(v @ J::S(_)) => v.clone(),
            Some(_) => return Err(Unsure),
        };
        let (schema, c) = (&self.common.schema, &self.common.cols);
        let mut record = Record::new();
        self.common.ts(&mut record, &J::S(Cow::Owned(created)))?;
        let category = self.category(channel, eid, &event_type)?;
        let category = if category.is_empty() { "windows_event".to_owned() } else { category };
        record.set_checked(schema, c.event_category, &J::S(Cow::Owned(category)))?;
        // {**head, **data}: head's keys first, a data key of the same name replacing its value
        let merged = head.items.iter().map(|(k, v)| (k, data.get(k).unwrap_or(v)))
            .chain(data.items.iter().filter(|(k, _)| !head.contains(k)).map(|(k, v)| (k, v)));
        for (key, value) in merged {
            if key == "TimeCreated" || matches!(value, J::Null) {
                continue;
            }
            let as_column = match value {
                J::S(_) | J::U(_) | J::I(_) | J::Bool(_) => value.clone(),
                other => J::S(text(other)?),
            };
            if let Some(&column) = self.fields.get(key.as_ref()) {
                if !record.has(column) {
                    if let Some(out) = schema.check(column, &as_column)? {
                        record.set(column, out);
                        continue;
                    }
                }
            }
            record.add_extra(key.clone(), text(value)?);
        }
        let eid_text = Cow::Owned(eid.to_string());
        match record.extra.iter_mut().find(|(k, _)| k == "EventID") {
            Some(slot) => slot.1 = eid_text,
            None => record.extra.push((Cow::Borrowed("EventID"), eid_text)),
        }
        let security = channel.is_ascii() && channel.eq_ignore_ascii_case("security");
        if security && self.success_events.contains(&eid) {
            record.set(c.action, Out::Str(Cow::Borrowed("success")));
        } else if security && self.failure_events.contains(&eid) {
            record.set(c.action, Out::Str(Cow::Borrowed("failure")));
        }
        self.common.finish(py, record, &self.source_type, pyline, line, origin)
    }
}
