//! The `unmapped` column of one event: everything the typed columns do not say, each value kept
//! as the JSON text of what was read (numbers an `f64` would change keep their digits).

use crate::read::json::Json;

/// The members of one event's `unmapped` object, in the order they were found; a path found
/// twice keeps its first position and its last value.
#[derive(Debug, Default)]
pub(crate) struct Unmapped {
    members: Vec<(String, String)>,
}

impl Unmapped {
    /// Keeps `value` under `path`.
    pub(crate) fn insert(&mut self, path: String, value: &Json<'_>) {
        self.put(path, value.to_json_string());
    }

    /// Keeps a string (the text of a time finer than the column holds).
    pub(crate) fn insert_text(&mut self, path: String, text: &str) {
        self.put(path, serde_json::to_string(text).unwrap_or_default());
    }

    /// Keeps an empty object, present where absent would mean something else.
    pub(crate) fn insert_empty_object(&mut self, path: String) {
        self.put(path, "{}".to_string());
    }

    fn put(&mut self, path: String, json: String) {
        match self.members.iter_mut().find(|(p, _)| *p == path) {
            Some((_, existing)) => *existing = json,
            None => self.members.push((path, json)),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The object's compact JSON text.
    pub(crate) fn to_json(&self) -> String {
        let mut out = String::from("{");
        for (i, (path, json)) in self.members.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(path).unwrap_or_default());
            out.push(':');
            out.push_str(json);
        }
        out.push('}');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_keep_their_text_and_paths_their_first_place() {
        let mut unmapped = Unmapped::default();
        let big = Json::parse_exact(r#"{"n":12345678901234567890123,"f":1.50}"#).unwrap();
        unmapped.insert("a.b".into(), &big);
        unmapped.insert_text("t".into(), "2024-01-01T00:00:00.123456789Z");
        unmapped.insert_empty_object("s".into());
        unmapped.insert_text("a.b".into(), "again");
        assert_eq!(
            unmapped.to_json(),
            r#"{"a.b":"again","t":"2024-01-01T00:00:00.123456789Z","s":{}}"#
        );
        let mut numbers = Unmapped::default();
        numbers.insert("x".into(), &big);
        assert_eq!(
            numbers.to_json(),
            r#"{"x":{"n":12345678901234567890123,"f":1.50}}"#
        );
    }
}
