//! A JSON value that borrows its strings from the event text.
//!
//! `serde_json::Value` (with `preserve_order`) allocates an `IndexMap` with SipHash tables and an
//! owned `String` for every key and string of every event; the hashing alone was 9% of a
//! conversion profile, the allocations more. Events are small objects read a few times each, so
//! members kept in order in a `Vec` and found by a linear scan are faster than any hash, and
//! strings without escapes are slices of the input.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Number, Value};

/// One JSON value of an event. Object members keep their input order; a key repeated in one
/// object keeps its first position and its last value, as `serde_json::Map` does.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl<'a> Json<'a> {
    /// Parses JSON text, borrowing strings without escapes from it.
    pub(crate) fn parse(text: &'a str) -> serde_json::Result<Json<'a>> {
        serde_json::from_str(text)
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn as_object(&self) -> Option<&[(Cow<'a, str>, Json<'a>)]> {
        match self {
            Json::Object(members) => Some(members),
            _ => None,
        }
    }

    /// The value as a text column holds it: a string as itself, null as null, anything else as
    /// its compact JSON text.
    pub(crate) fn as_text(&self) -> Option<Cow<'_, str>> {
        match self {
            Json::String(s) => Some(Cow::Borrowed(s)),
            Json::Null => None,
            other => Some(Cow::Owned(other.to_json_string())),
        }
    }

    /// Compact JSON text, as `serde_json::Value`'s `Display` writes it.
    pub(crate) fn to_json_string(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// An owned `serde_json::Value` (for the `unmapped` column, which is rare).
    pub(crate) fn to_value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => Value::Number(n.clone()),
            Json::String(s) => Value::String(s.to_string()),
            Json::Array(items) => Value::Array(items.iter().map(Json::to_value).collect()),
            Json::Object(members) => Value::Object(
                members
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_value()))
                    .collect(),
            ),
        }
    }
}

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => serializer.serialize_unit(),
            Json::Bool(b) => serializer.serialize_bool(*b),
            Json::Number(n) => n.serialize(serializer),
            Json::String(s) => serializer.serialize_str(s),
            Json::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Json::Object(members) => {
                let mut map = serializer.serialize_map(Some(members.len()))?;
                for (k, v) in members {
                    map.serialize_entry(k.as_ref(), v)?;
                }
                map.end()
            }
        }
    }
}

/// A string borrowed from the input unless it holds escapes (serde's own `Cow` always allocates).
pub(crate) struct BorrowedStr<'de>(pub(crate) Cow<'de, str>);

impl<'de> Deserialize<'de> for BorrowedStr<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(JsonVisitor).and_then(|v| match v {
            Json::String(s) => Ok(BorrowedStr(s)),
            _ => Err(serde::de::Error::custom("expected a string")),
        })
    }
}

/// Members of one object checked for a repeated key by a linear scan.
const SCANNED_MEMBERS: usize = 32;

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json<'de>, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Json<'de>, E> {
        Ok(Number::from_f64(v).map_or(Json::Null, Json::Number))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(v.to_string())))
    }

    fn visit_string<E>(self, v: String) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(v)))
    }

    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json<'de>, D::Error> {
        Json::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut members: Vec<(Cow<'de, str>, Json<'de>)> = Vec::with_capacity(8);
        // Repeated keys are found by a scan while the object is small (every real event) and by
        // a hash index beyond that, so a hostile object with 100,000 keys stays linear.
        let mut index: Option<HashMap<Cow<'de, str>, usize>> = None;
        while let Some(BorrowedStr(key)) = map.next_key()? {
            let value: Json<'de> = map.next_value()?;
            let existing = match &index {
                Some(index) => index.get(&key).copied(),
                None => members.iter().position(|(k, _)| *k == key),
            };
            match existing {
                Some(at) => members[at].1 = value,
                None => {
                    if let Some(index) = &mut index {
                        index.insert(key.clone(), members.len());
                    }
                    members.push((key, value));
                    if index.is_none() && members.len() == SCANNED_MEMBERS {
                        index = Some(
                            members
                                .iter()
                                .enumerate()
                                .map(|(i, (k, _))| (k.clone(), i))
                                .collect(),
                        );
                    }
                }
            }
        }
        Ok(Json::Object(members))
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_without_escapes_are_borrowed() {
        let json = Json::parse(r#"{"a":"plain","b":"esc\"aped"}"#).unwrap();
        let members = json.as_object().unwrap();
        assert!(matches!(&members[0].1, Json::String(Cow::Borrowed("plain"))));
        assert!(matches!(&members[1].1, Json::String(Cow::Owned(s)) if s == "esc\"aped"));
    }

    #[test]
    fn writes_what_serde_json_value_writes() {
        for text in [
            r#"{"b":1,"a":[true,null,1.5,-3,"x\ny"],"c":{"d":{}},"e":18446744073709551615}"#,
            r#"[1e3, 2.50, "\u00e9"]"#,
            r#""just a string""#,
        ] {
            let ours = Json::parse(text).unwrap();
            let theirs: Value = serde_json::from_str(text).unwrap();
            assert_eq!(ours.to_json_string(), theirs.to_string(), "{text}");
            assert_eq!(ours.to_value(), theirs, "{text}");
        }
    }

    fn member<'j>(json: &'j Json<'_>, key: &str) -> Option<&'j Json<'j>> {
        json.as_object()?.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    #[test]
    fn large_objects_with_repeated_keys_match_serde_json() {
        let mut text = String::from("{");
        for i in 0..5000 {
            // Every key appears twice: once early with the index, once later with its double.
            text.push_str(&format!("\"k{}\":{},", i % 2500, i));
        }
        text.push_str("\"last\":null}");
        let ours = Json::parse(&text).unwrap();
        let theirs: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(ours.as_object().unwrap().len(), 2501);
        assert_eq!(ours.to_json_string(), theirs.to_string());
        assert_eq!(member(&ours, "k7"), Some(&Json::Number(2507.into())));
    }

    #[test]
    fn a_repeated_key_keeps_its_first_place_and_last_value() {
        let ours = Json::parse(r#"{"k":1,"x":2,"k":3}"#).unwrap();
        let theirs: Value = serde_json::from_str(r#"{"k":1,"x":2,"k":3}"#).unwrap();
        assert_eq!(ours.to_json_string(), theirs.to_string());
        assert_eq!(member(&ours, "k"), Some(&Json::Number(3.into())));
    }
}
