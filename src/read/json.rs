//! A JSON value that borrows its strings from the event text.
//!
//! `serde_json::Value` (with `preserve_order`) allocates an `IndexMap` with SipHash tables and an
//! owned `String` for every key and string of every event; the hashing alone was 9% of a
//! conversion profile, the allocations more. Events are small objects read a few times each, so
//! members kept in order in a `Vec` and found by a linear scan are faster than any hash, and
//! strings without escapes are slices of the input.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Number;
use serde_json::value::RawValue;

/// One JSON value of an event. Object members keep their input order; a key repeated in one
/// object keeps its first position and its last value, as `serde_json::Map` does.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json<'a> {
    Null,
    Bool(bool),
    Number(Number),
    /// A number an `f64` would change (`1.50`, `12345678901234567890123`), as its text: made by
    /// [`Json::parse_exact`] only.
    Decimal(Cow<'a, str>),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl<'a> Json<'a> {
    /// Parses JSON text, borrowing strings without escapes from it. Numbers that are not
    /// integers of 64 bits become `f64`s (see [`Json::parse_exact`]).
    pub(crate) fn parse(text: &'a str) -> serde_json::Result<Json<'a>> {
        serde_json::from_str(text)
    }

    /// [`Json::parse`], keeping every number exactly: one that is not an integer of 64 bits is
    /// kept as its text ([`Json::Decimal`]). The rare text with such numbers is read a second
    /// time for them; the common one costs a flag. So `{"n":12345678901234567890123,"f":1.50}`
    /// is written back as it came (tested below), where serde_json would write
    /// `1.2345678901234568e22` and `1.5`.
    pub(crate) fn parse_exact(text: &'a str) -> serde_json::Result<Json<'a>> {
        ROUNDED.with(|rounded| rounded.set(false));
        let value = Json::parse(text)?;
        if !ROUNDED.with(Cell::get) {
            return Ok(value);
        }
        Ok(ExactReader { text, at: 0 }.value())
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
}

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => serializer.serialize_unit(),
            Json::Bool(b) => serializer.serialize_bool(*b),
            Json::Number(n) => n.serialize(serializer),
            // serde_json writes a raw value as its text.
            Json::Decimal(text) => RawValue::from_string(text.to_string())
                .map_err(serde::ser::Error::custom)?
                .serialize(serializer),
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
        ROUNDED.with(|rounded| rounded.set(true));
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
        let mut members = Members::new();
        while let Some(BorrowedStr(key)) = map.next_key()? {
            let value: Json<'de> = map.next_value()?;
            members.push(key, value);
        }
        Ok(Json::Object(members.members))
    }
}

/// An object's members as they are read: a key repeated keeps its first position and its last
/// value. Repeated keys are found by a scan while the object is small (every real event) and by
/// a hash index beyond that, so a hostile object with 100,000 keys stays linear.
struct Members<'a> {
    members: Vec<(Cow<'a, str>, Json<'a>)>,
    index: Option<HashMap<Cow<'a, str>, usize>>,
}

impl<'a> Members<'a> {
    /// Room for the members of most of an event's objects (identity, session, request): a vector
    /// grown from empty was reallocated and copied twice for them (1.4 % of a conversion's
    /// instructions).
    fn new() -> Members<'a> {
        Members {
            members: Vec::with_capacity(8),
            index: None,
        }
    }

    fn push(&mut self, key: Cow<'a, str>, value: Json<'a>) {
        let existing = match &self.index {
            Some(index) => index.get(&key).copied(),
            None => self.members.iter().position(|(k, _)| *k == key),
        };
        match existing {
            Some(at) => self.members[at].1 = value,
            None => {
                if let Some(index) = &mut self.index {
                    index.insert(key.clone(), self.members.len());
                }
                self.members.push((key, value));
                if self.index.is_none() && self.members.len() == SCANNED_MEMBERS {
                    self.index = Some(
                        (self.members.iter().enumerate())
                            .map(|(i, (k, _))| (k.clone(), i))
                            .collect(),
                    );
                }
            }
        }
    }
}

thread_local! {
    /// Set when the visitor made a number an `f64` (see [`Json::parse_exact`]).
    static ROUNDED: Cell<bool> = const { Cell::new(false) };
}

/// Reads JSON text that serde_json has already validated, keeping numbers as their text where
/// an `f64` would change them. Never panics: text it does not expect ends the value.
struct ExactReader<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> ExactReader<'a> {
    fn peek(&self) -> u8 {
        self.text.as_bytes().get(self.at).copied().unwrap_or(0)
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), b' ' | b'\t' | b'\n' | b'\r') {
            self.at += 1;
        }
    }

    fn value(&mut self) -> Json<'a> {
        self.skip_space();
        match self.peek() {
            b'{' => {
                self.at += 1;
                let mut members = Members::new();
                loop {
                    self.skip_space();
                    match self.peek() {
                        b'}' => {
                            self.at += 1;
                            break;
                        }
                        b',' => self.at += 1,
                        b'"' => {
                            let key = self.string();
                            self.skip_space();
                            if self.peek() == b':' {
                                self.at += 1;
                            }
                            let value = self.value();
                            members.push(key, value);
                        }
                        _ => break,
                    }
                }
                Json::Object(members.members)
            }
            b'[' => {
                self.at += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_space();
                    match self.peek() {
                        b']' => {
                            self.at += 1;
                            break;
                        }
                        b',' => self.at += 1,
                        0 => break,
                        _ => items.push(self.value()),
                    }
                }
                Json::Array(items)
            }
            b'"' => Json::String(self.string()),
            b't' => self.literal(4, Json::Bool(true)),
            b'f' => self.literal(5, Json::Bool(false)),
            b'n' => self.literal(4, Json::Null),
            _ => self.number(),
        }
    }

    fn literal(&mut self, length: usize, value: Json<'a>) -> Json<'a> {
        self.at += length;
        value
    }

    fn string(&mut self) -> Cow<'a, str> {
        let start = self.at;
        self.at += 1;
        let mut escaped = false;
        loop {
            match self.peek() {
                b'\\' => {
                    escaped = true;
                    self.at += 2;
                }
                b'"' => {
                    self.at += 1;
                    break;
                }
                0 => break,
                _ => self.at += 1,
            }
        }
        let quoted = self.text.get(start..self.at).unwrap_or_default();
        if escaped {
            Cow::Owned(serde_json::from_str::<String>(quoted).unwrap_or_default())
        } else {
            Cow::Borrowed(quoted.get(1..quoted.len().saturating_sub(1)).unwrap_or_default())
        }
    }

    fn number(&mut self) -> Json<'a> {
        let start = self.at;
        while matches!(self.peek(), b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
            self.at += 1;
        }
        let text = self.text.get(start..self.at).unwrap_or_default();
        if let Ok(integer) = text.parse::<i64>() {
            return Json::Number(integer.into());
        }
        if let Ok(integer) = text.parse::<u64>() {
            return Json::Number(integer.into());
        }
        if text.is_empty() {
            // Not JSON the validator let through: skip a byte so every loop moves on.
            self.at += 1;
            return Json::Null;
        }
        Json::Decimal(Cow::Borrowed(text))
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
    use serde_json::Value;

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
        }
    }

    fn member<'j>(json: &'j Json<'_>, key: &str) -> Option<&'j Json<'j>> {
        json.as_object()?.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    #[test]
    fn exact_parsing_keeps_the_digits_an_f64_would_change() {
        for text in [
            r#"{"n":12345678901234567890123,"f":1.50,"e":2E-3,"i":-7,"u":18446744073709551615}"#,
            r#"[0.1,{"a":[2.50,"s\"q"],"b":{}},true,null,-0.0]"#,
            r#"{"k":1.5,"k":2.25}"#,
        ] {
            let exact = Json::parse_exact(text).unwrap();
            let expected: String = text.replace(r#""k":1.5,"#, "");
            assert_eq!(exact.to_json_string(), expected, "{text}");
        }
        // Without such numbers, the first parse is the answer (no second reading).
        let plain = Json::parse_exact(r#"{"a":[1,2,"x"]}"#).unwrap();
        assert_eq!(plain, Json::parse(r#"{"a":[1,2,"x"]}"#).unwrap());
        // Text the validator would refuse ends values without a panic.
        let mut reader = ExactReader {
            text: "{\"a\":[1.5,",
            at: 0,
        };
        assert!(matches!(reader.value(), Json::Object(_)));
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
