//! Deciding what a JSON value found in the input is: a CloudTrail event, an envelope around one,
//! a CloudTrail digest, or something else.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::json::BorrowedStr;

/// The top-level members of a JSON object, values left unparsed.
#[derive(Debug, Default)]
pub struct TopFields<'a> {
    pub fields: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> TopFields<'a> {
    /// Parses the top level of a JSON object.
    pub fn parse(bytes: &'a [u8]) -> Result<TopFields<'a>, serde_json::Error> {
        // One check of the whole record: from a byte slice, serde_json validates every string
        // and every raw member on its own (3% of a conversion's instructions). Invalid UTF-8 is
        // parsed from the bytes after all, for serde_json's error and its position.
        match std::str::from_utf8(bytes) {
            Ok(text) => serde_json::from_str(text),
            Err(_) => serde_json::from_slice(bytes),
        }
    }

    /// The first member with exactly this key.
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    fn has(&self, key: &str) -> bool {
        self.fields.iter().any(|(k, _)| k == key)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for TopFields<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = TopFields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut fields = Vec::with_capacity(32);
                while let Some(BorrowedStr(key)) = map.next_key()? {
                    let value: &'de RawValue = map.next_value()?;
                    fields.push((key, value));
                }
                Ok(TopFields { fields })
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

/// What a JSON value is.
#[derive(Debug)]
pub enum Kind<'a> {
    /// A CloudTrail event (possibly unwrapped from an EventBridge envelope).
    Event(TopFields<'a>),
    /// An object holding a `Records` array (a delivery file nested in an array or NDJSON line).
    Records(Vec<&'a RawValue>),
    /// Records carried as JSON text inside strings (SIEM `_raw` strings, CloudWatch Logs
    /// `logEvents[].message`): each string is classified again.
    Embedded(Vec<String>),
    /// A wrapper object (a SIEM export's `_raw` object) whose inner value is classified again.
    Nested(&'a RawValue),
    /// The rows of a saved query result, each classified again: `aws cloudtrail lookup-events`
    /// output (Event history; the record is JSON text under `CloudTrailEvent`) and CloudTrail
    /// Lake query results (`QueryResultRows`: the `eventJson` column, or the row's columns).
    Values(Vec<Cow<'a, str>>),
    /// Something to skip and count, with the reason.
    Skip(SkipReason),
}

/// Why a JSON value is not converted (these are counted, not errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// A CloudTrail digest file (integrity hashes, not events).
    Digest,
    /// A JSON object that is not a CloudTrail event.
    NotAnEvent,
    /// A JSON string, number, boolean, null or array where an event was expected.
    NotAnObject,
}

impl SkipReason {
    pub fn label(self) -> &'static str {
        match self {
            SkipReason::Digest => "CloudTrail digest",
            SkipReason::NotAnEvent => "not an event",
            SkipReason::NotAnObject => "not an object",
        }
    }
}

const EVENT_KEYS: &[&str] = &["eventVersion", "eventTime", "eventSource", "eventName", "eventID"];
const DIGEST_KEYS: &[&str] = &["digestStartTime", "digestEndTime", "digestS3Bucket"];

/// Classifies one complete JSON value.
pub fn classify(bytes: &[u8]) -> Result<Kind<'_>, serde_json::Error> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        // Still make sure it is valid JSON, so that garbage is an error rather than a skip.
        serde_json::from_slice::<&RawValue>(bytes)?;
        return Ok(Kind::Skip(SkipReason::NotAnObject));
    }
    let top = TopFields::parse(bytes)?;
    classify_object(top)
}

fn classify_object(top: TopFields<'_>) -> Result<Kind<'_>, serde_json::Error> {
    if EVENT_KEYS.iter().any(|k| top.has(k)) {
        return Ok(Kind::Event(top));
    }
    if let (Some(_), Some(detail)) = (top.get("detail-type"), top.get("detail")) {
        // EventBridge: `"detail-type": "AWS API Call via CloudTrail"` and friends.
        let detail_bytes = detail.get().as_bytes();
        if detail_bytes.first() == Some(&b'{') {
            let inner = TopFields::parse(detail_bytes)?;
            if EVENT_KEYS.iter().any(|k| inner.has(k)) {
                return Ok(Kind::Event(inner));
            }
        }
        return Ok(Kind::Skip(SkipReason::NotAnEvent));
    }
    if let Some(records) = top.get("Records") {
        return Ok(Kind::Records(serde_json::from_str(records.get())?));
    }
    if let Some(raw) = top.get("_raw") {
        // Cribl and Splunk exports: the original record (or whole delivery file) under `_raw`,
        // as an object or as JSON text.
        return Ok(match raw.get().as_bytes().first() {
            Some(b'{') => Kind::Nested(raw),
            Some(b'"') => Kind::Embedded(vec![serde_json::from_str(raw.get())?]),
            _ => Kind::Skip(SkipReason::NotAnEvent),
        });
    }
    if let (Some(events), Some(_)) = (top.get("logEvents"), top.get("logGroup")) {
        // A CloudWatch Logs subscription payload: each message is one CloudTrail event.
        #[derive(serde::Deserialize)]
        struct LogEvent {
            message: String,
        }
        let events: Vec<LogEvent> = serde_json::from_str(events.get())?;
        return Ok(Kind::Embedded(events.into_iter().map(|e| e.message).collect()));
    }
    if let Some(events) = top.get("Events")
        && let Some(values) = looked_up_events(events)
    {
        return Ok(Kind::Values(values));
    }
    if let Some(rows) = top.get("QueryResultRows")
        && let Some(values) = lake_rows(rows)
    {
        return Ok(Kind::Values(values));
    }
    if DIGEST_KEYS.iter().any(|k| top.has(k)) {
        return Ok(Kind::Skip(SkipReason::Digest));
    }
    Ok(Kind::Skip(SkipReason::NotAnEvent))
}

/// The events of `aws cloudtrail lookup-events` output (`{"Events": [...], "NextToken": ...}`):
/// each one's `CloudTrailEvent` text, or the item itself where it has none (classified again,
/// so it is counted). `None` when no item has a `CloudTrailEvent`: then this is not such output.
fn looked_up_events(events: &RawValue) -> Option<Vec<Cow<'_, str>>> {
    #[derive(serde::Deserialize)]
    struct LookedUp {
        #[serde(rename = "CloudTrailEvent")]
        event: Option<String>,
    }
    let items: Vec<&RawValue> = serde_json::from_str(events.get()).ok()?;
    let mut found = false;
    let values = items
        .into_iter()
        .map(|item| match serde_json::from_str::<LookedUp>(item.get()) {
            Ok(LookedUp { event: Some(text) }) => {
                found = true;
                Cow::Owned(text)
            }
            _ => Cow::Borrowed(item.get()),
        })
        .collect();
    found.then_some(values)
}

/// The rows of CloudTrail Lake query results (`aws cloudtrail get-query-results`): each row is a
/// list of one-member objects, column name to value. A row with the `eventJson` column (the
/// original record as text) is that record; any other row is the object of its columns.
fn lake_rows(rows: &RawValue) -> Option<Vec<Cow<'_, str>>> {
    use serde_json::{Map, Value};
    let rows: Vec<Vec<Map<String, Value>>> = serde_json::from_str(rows.get()).ok()?;
    let values = rows
        .into_iter()
        .map(|row| {
            let mut columns: Map<String, Value> = row.into_iter().flatten().collect();
            let event_json = columns
                .keys()
                .find(|k| k.eq_ignore_ascii_case("eventjson"))
                .cloned();
            match event_json.and_then(|key| columns.remove(&key)) {
                Some(Value::String(text)) => Cow::Owned(text),
                _ => Cow::Owned(Value::Object(columns).to_string()),
            }
        })
        .collect();
    Some(values)
}

/// Removes commas that directly precede `}` or `]` (outside strings), the most common defect in
/// hand-edited CloudTrail examples. Returns `None` when there is nothing to remove.
pub fn remove_trailing_commas(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut pending_comma: Option<usize> = None;
    let mut changed = false;
    for &b in bytes {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'}' | b']' => {
                if let Some(at) = pending_comma.take() {
                    out.remove(at);
                    changed = true;
                }
            }
            b' ' | b'\n' | b'\r' | b'\t' => {}
            b',' => pending_comma = Some(out.len()),
            _ => {
                pending_comma = None;
                in_string = b == b'"';
            }
        }
        out.push(b);
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_each_kind() {
        assert!(matches!(
            classify(br#"{"eventName":"Decrypt"}"#).unwrap(),
            Kind::Event(_)
        ));
        let envelope = br#"{"version":"0","detail-type":"AWS API Call via CloudTrail","source":"aws.kms","detail":{"eventVersion":"1.08","eventName":"Decrypt"}}"#;
        match classify(envelope).unwrap() {
            Kind::Event(top) => assert_eq!(top.get("eventName").unwrap().get(), "\"Decrypt\""),
            other => panic!("{other:?}"),
        }
        match classify(br#"{"Records":[{"eventName":"A"},{"eventName":"B"}]}"#).unwrap() {
            Kind::Records(records) => assert_eq!(records.len(), 2),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(br#"{"awsAccountId":"1","digestStartTime":"2023"}"#).unwrap(),
            Kind::Skip(SkipReason::Digest)
        ));
        assert!(matches!(
            classify(br#"{"hello":1}"#).unwrap(),
            Kind::Skip(SkipReason::NotAnEvent)
        ));
        match classify(br#"{"_time":1,"_raw":"{\"eventName\":\"X\"}"}"#).unwrap() {
            Kind::Embedded(texts) => assert_eq!(texts, vec![r#"{"eventName":"X"}"#.to_string()]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(br#"{"_raw":{"Records":[]}}"#).unwrap(),
            Kind::Nested(_)
        ));
        match classify(
            br#"{"logGroup":"g","logEvents":[{"id":"1","message":"{}"},{"id":"2","message":"{}"}]}"#,
        )
        .unwrap()
        {
            Kind::Embedded(texts) => assert_eq!(texts.len(), 2),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(b"\"text\"").unwrap(),
            Kind::Skip(SkipReason::NotAnObject)
        ));
        let looked_up = br#"{"Events":[{"EventId":"1","CloudTrailEvent":"{\"eventName\":\"A\"}"},{"EventId":"2"}],"NextToken":"t"}"#;
        match classify(looked_up).unwrap() {
            Kind::Values(values) => assert_eq!(values, [r#"{"eventName":"A"}"#, r#"{"EventId":"2"}"#]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(br#"{"Events":[{"name":"not lookup-events"}]}"#).unwrap(),
            Kind::Skip(SkipReason::NotAnEvent)
        ));
        let lake = br#"{"QueryStatus":"FINISHED","QueryResultRows":[[{"eventJson":"{\"eventName\":\"A\"}"}],[{"eventID":"e"},{"eventName":"B"}]]}"#;
        match classify(lake).unwrap() {
            Kind::Values(values) => assert_eq!(
                values,
                [r#"{"eventName":"A"}"#, r#"{"eventID":"e","eventName":"B"}"#]
            ),
            other => panic!("{other:?}"),
        }
        assert!(classify(br#"{"eventName":}"#).is_err());
    }

    #[test]
    fn trailing_commas_are_removed_outside_strings_only() {
        let fixed = remove_trailing_commas(b"{\"a\": [1, 2, ],\n \"b\": \"x,]\",\n}").unwrap();
        assert_eq!(
            String::from_utf8(fixed).unwrap(),
            "{\"a\": [1, 2 ],\n \"b\": \"x,]\"\n}"
        );
        assert!(remove_trailing_commas(br#"{"a":[1,2],"b":"],"}"#).is_none());
    }
}
