//! Flattening CloudTrail events into Arrow record batches, driven by the schema file.
//!
//! A [`Flattener`] is push-based: hand it one event at a time ([`Flattener::append`]) and take a
//! [`RecordBatch`] when you like ([`Flattener::finish_batch`]). It knows nothing about files.
//!
//! Nothing is dropped: every field the schema does not map, every case-variant key and every value
//! of a type the column cannot hold is kept in the `unmapped` JSON column under its path.
//!
//! ```
//! use keytrail::flatten::Flattener;
//! use keytrail::read::classify::TopFields;
//!
//! let mut flattener = Flattener::new();
//! let event = br#"{"eventTime":"2023-07-10T11:42:13Z","eventSource":"kms.amazonaws.com",
//!   "eventName":"Decrypt","readOnly":"true","requestParameters":{"encryptionContext":{"app":"x"}}}"#;
//! flattener.append(&TopFields::parse(event).unwrap()).unwrap();
//! let batch = flattener.finish_batch().unwrap();
//! assert_eq!(batch.num_rows(), 1);
//! ```

mod builders;
mod derive;
mod paths;
mod plan;
pub mod time;
mod unmapped;

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{ArrayRef, FixedSizeBinaryBuilder, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema as ArrowSchema, SchemaRef};
use arrow::error::ArrowError;
use serde_json::value::RawValue;

use crate::read::classify::TopFields;
use crate::read::json::Json;
use crate::schema::{ColumnType, Schema};
use builders::ColumnBuilder;
pub use derive::Rule;
use paths::Resolved;
pub use plan::PlanError;
use plan::{Parse, Plan, Source};
use unmapped::Unmapped;

/// The column of [`Flattener::hashing_originals`]; never written to a table.
pub const ORIGINAL_DIGEST_COLUMN: &str = "_original_xxh3";

/// Why one event could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlattenError {
    #[error("eventTime is missing")]
    MissingEventTime,
    #[error("eventTime {0} is not a timestamp")]
    InvalidEventTime(String),
}

/// Builds record batches from CloudTrail events. See the [module documentation](self).
pub struct Flattener {
    plan: Arc<Plan>,
    builders: Vec<ColumnBuilder>,
    rows: usize,
    /// The events' original texts, when kept (`--keep-raw`).
    raw: Option<StringBuilder>,
    /// xxh3-128 digests of the events' original texts ([`Flattener::hashing_originals`]).
    digests: Option<FixedSizeBinaryBuilder>,
    /// The batches' schema: the plan's, with the columns above after it.
    schema: SchemaRef,
    /// The columns a reader needs, when not all ([`Flattener::only_columns`]).
    needed: Option<Needed>,
}

/// What a flattener of some columns only must read of each event.
#[derive(Clone)]
struct Needed {
    columns: Vec<bool>,
    /// Top-level members to parse (the others are not looked at, or only kept as raw text).
    /// The `unmapped` column is never among the columns: it needs them all (no `Needed`).
    slots: Vec<bool>,
    /// Whether a KMS-derived column is needed.
    kms: bool,
}

impl Default for Flattener {
    fn default() -> Self {
        Flattener::new()
    }
}

impl Flattener {
    /// A flattener for the built-in schema.
    pub fn new() -> Flattener {
        Flattener::for_schema(Schema::builtin())
    }

    /// A flattener for `schema`.
    ///
    /// # Panics
    /// If the schema names a derive rule this build does not implement (a test guards this for
    /// the built-in schema); [`Flattener::try_for_schema`] returns the error instead.
    pub fn for_schema(schema: &Schema) -> Flattener {
        Flattener::try_for_schema(schema).unwrap_or_else(|e| panic!("schema and flattener disagree: {e}"))
    }

    /// A flattener for `schema`, or why the flattener cannot follow it.
    pub fn try_for_schema(schema: &Schema) -> Result<Flattener, PlanError> {
        let plan = Arc::new(Plan::compile(schema)?);
        let builders = plan.new_builders();
        let plan_schema = plan.arrow.clone();
        Ok(Flattener {
            plan,
            builders,
            rows: 0,
            raw: None,
            digests: None,
            schema: plan_schema,
            needed: None,
        })
    }

    /// A flattener like this one (the same schema, columns built and extra columns), without
    /// its rows: for other threads that flatten parts of the same input.
    pub fn like(&self) -> Flattener {
        Flattener {
            plan: self.plan.clone(),
            builders: self.plan.new_builders(),
            rows: 0,
            raw: self.raw.as_ref().map(|_| StringBuilder::new()),
            digests: self.digests.as_ref().map(|_| FixedSizeBinaryBuilder::new(16)),
            schema: self.schema.clone(),
            needed: self.needed.clone(),
        }
    }

    /// This flattener, building only the columns at `columns` (positions in the schema): the
    /// others are all null, and the members only they read are not parsed. Every event is still
    /// checked as [`Flattener::append`] checks it (its time), so the same events are rejected.
    pub fn only_columns(mut self, columns: &[usize]) -> Flattener {
        let plan = &*self.plan;
        let mut needed = Needed {
            columns: vec![false; plan.columns.len()],
            slots: vec![false; plan.slots.len()],
            kms: false,
        };
        needed.slots[plan.event_time.slot] = true;
        needed.slots[plan.event_source.slot] = true;
        // The event time is never null: always built.
        let event_time = plan
            .columns
            .iter()
            .position(|c| matches!(c.source, Source::EventTime));
        for &column in columns.iter().chain(event_time.as_ref()) {
            let Some(plan_column) = plan.columns.get(column) else {
                continue;
            };
            needed.columns[column] = true;
            match &plan_column.source {
                Source::Paths(paths) => paths.iter().for_each(|p| needed.slots[p.slot] = true),
                // The catch-all is what every other column's lookups leave over (values of the
                // wrong type, case variants): it needs them all.
                Source::Derive(Rule::Unmapped) => {
                    self.needed = None;
                    return self;
                }
                Source::Derive(_) => needed.kms = true,
                Source::EventTime | Source::RawJson(_) => {}
            }
        }
        if needed.kms {
            // The KMS rules read members of their own.
            needed.slots.iter_mut().for_each(|s| *s = true);
        }
        self.needed = Some(needed);
        self
    }

    /// This flattener, also keeping each event's original text in a last column,
    /// [`crate::schema::RAW_EVENT_COLUMN`] (given to [`Flattener::append_event`]).
    ///
    /// ```
    /// use keytrail::flatten::Flattener;
    /// use keytrail::read::classify::TopFields;
    ///
    /// let text = br#"{"eventTime": "2024-01-01T00:00:00Z", "eventName": "Decrypt"}"#;
    /// let mut flattener = Flattener::new().keeping_raw();
    /// flattener.append_event(&TopFields::parse(text).unwrap(), text).unwrap();
    /// let batch = flattener.finish_batch().unwrap();
    /// let raw = batch.column_by_name("raw_event").unwrap();
    /// let raw = raw.as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
    /// assert_eq!(raw.value(0).as_bytes(), text);
    /// ```
    pub fn keeping_raw(mut self) -> Flattener {
        self.raw = Some(StringBuilder::new());
        self.with_extra_columns()
    }

    /// This flattener, also giving each event the xxh3-128 digest of its original text in a
    /// last column, [`ORIGINAL_DIGEST_COLUMN`] (16 bytes, little-endian): what tells two copies
    /// apart when the columns that would are not built ([`Flattener::only_columns`]).
    pub fn hashing_originals(mut self) -> Flattener {
        self.digests = Some(FixedSizeBinaryBuilder::new(16));
        self.with_extra_columns()
    }

    fn with_extra_columns(mut self) -> Flattener {
        let mut fields: Vec<Field> = self
            .plan
            .arrow
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        if self.raw.is_some() {
            fields.push(Field::new(crate::schema::RAW_EVENT_COLUMN, DataType::Utf8, true));
        }
        if self.digests.is_some() {
            fields.push(Field::new(
                ORIGINAL_DIGEST_COLUMN,
                DataType::FixedSizeBinary(16),
                true,
            ));
        }
        self.schema = Arc::new(ArrowSchema::new_with_metadata(
            fields,
            self.plan.arrow.metadata().clone(),
        ));
        self
    }

    /// Appends one event, with its original text when the flattener keeps it. On error nothing
    /// is appended.
    pub fn append_event(&mut self, event: &TopFields<'_>, original: &[u8]) -> Result<(), FlattenError> {
        self.append_row(event)?;
        if let Some(raw) = &mut self.raw {
            // Records were read as UTF-8 text (TopFields checked it); lossless for every event.
            raw.append_value(String::from_utf8_lossy(original));
        }
        if let Some(digests) = &mut self.digests {
            let digest = xxhash_rust::xxh3::xxh3_128(original).to_le_bytes();
            digests.append_value(digest).expect("16 bytes");
        }
        Ok(())
    }

    /// Rows appended since the last [`Flattener::finish_batch`].
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Appends one event (without its original text: null in a flattener that keeps it). On
    /// error nothing is appended.
    pub fn append(&mut self, event: &TopFields<'_>) -> Result<(), FlattenError> {
        self.append_row(event)?;
        if let Some(raw) = &mut self.raw {
            raw.append_null();
        }
        if let Some(digests) = &mut self.digests {
            digests.append_null();
        }
        Ok(())
    }

    fn append_row(&mut self, event: &TopFields<'_>) -> Result<(), FlattenError> {
        let plan = &*self.plan;
        let needed = self.needed.as_ref();
        let mut unmapped = Unmapped::default();
        let doc = Doc::load(plan, event, &mut unmapped, needed);

        let event_time = match doc.lookup(&plan.event_time, &mut unmapped) {
            None => return Err(FlattenError::MissingEventTime),
            Some(Json::String(s)) => {
                let micros = time::parse_timestamp_micros(s)
                    .ok_or_else(|| FlattenError::InvalidEventTime(format!("{s:?}")))?;
                if time::finer_than_micros(s) {
                    unmapped.insert_text(plan.event_time.text.clone(), s);
                }
                micros
            }
            Some(other) => return Err(FlattenError::InvalidEventTime(other.to_json_string())),
        };
        let is_kms = matches!(
            doc.lookup(&plan.event_source, &mut unmapped),
            Some(Json::String(s)) if s == "kms.amazonaws.com"
        );
        let doc = if is_kms {
            doc.with_payloads(plan, needed)
        } else {
            doc
        };
        let kms = (is_kms && needed.is_none_or(|n| n.kms))
            .then(|| derive::KmsFacts::resolve(plan, &doc, &mut unmapped));

        for (index, (column, builder)) in plan.columns.iter().zip(self.builders.iter_mut()).enumerate() {
            let unwanted = needed.is_some_and(|n| !n.columns[index]);
            if unwanted || (column.kms_only && !is_kms) {
                builder.append_null();
                continue;
            }
            match &column.source {
                Source::EventTime => builder.append_timestamp(event_time),
                Source::RawJson(slot) => {
                    let text = doc.raw[*slot].map(RawValue::get).filter(|t| *t != "null");
                    match text {
                        Some(t) if needs_minify(t) => builder.append_str(Some(&minify(t))),
                        other => builder.append_str(other),
                    }
                }
                Source::Paths(paths) => {
                    let found = paths.iter().find_map(|p| {
                        doc.lookup(p, &mut unmapped)
                            .filter(|v| !v.is_null())
                            .map(|v| (p, v))
                    });
                    if let Some(fields) = &column.struct_fields {
                        append_struct_list(builder, fields, found, &mut unmapped);
                    } else if let Err(builders::WrongType) = builder.append_json(found.map(|f| f.1))
                        && let Some((path, value)) = found
                    {
                        unmapped.insert(path.text.clone(), value);
                    } else if column.ty == ColumnType::Timestamp
                        && let Some((path, Json::String(text))) = found
                        && time::finer_than_micros(text)
                    {
                        // The column holds the instant to the microsecond; the text keeps the rest.
                        unmapped.insert_text(path.text.clone(), text);
                    }
                }
                Source::Derive(Rule::Unmapped) => {
                    let text = (!unmapped.is_empty()).then(|| unmapped.to_json());
                    builder.append_str(text.as_deref());
                }
                Source::Derive(rule) => {
                    let facts = kms.as_ref().expect("derived KMS columns are kms-scoped");
                    builder.append_str(facts.get(*rule));
                }
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// Takes the rows appended so far as a batch (possibly empty).
    pub fn finish_batch(&mut self) -> Result<RecordBatch, ArrowError> {
        let mut columns: Vec<ArrayRef> = self.builders.iter_mut().map(ColumnBuilder::finish).collect();
        self.rows = 0;
        if let Some(raw) = &mut self.raw {
            columns.push(Arc::new(raw.finish()));
        }
        if let Some(digests) = &mut self.digests {
            columns.push(Arc::new(digests.finish()));
        }
        RecordBatch::try_new(self.schema.clone(), columns)
    }
}

fn append_struct_list(
    builder: &mut ColumnBuilder,
    fields: &[plan::StructFieldPlan],
    found: Option<(&plan::PathSpec, &Json<'_>)>,
    unmapped: &mut Unmapped,
) {
    let Some((path, value)) = found else {
        builder.append_null();
        return;
    };
    let Json::Array(elements) = value else {
        unmapped.insert(path.text.clone(), value);
        builder.append_null();
        return;
    };
    let mut rows = Vec::with_capacity(elements.len());
    for (i, element) in elements.iter().enumerate() {
        let Json::Object(object) = element else {
            unmapped.insert(format!("{}[{i}]", path.text), element);
            continue;
        };
        let mut row = Vec::with_capacity(fields.len());
        for field in fields {
            let hit = field
                .keys
                .iter()
                .find_map(|k| object.iter().find(|(name, v)| name == k && !v.is_null()))
                .or_else(|| {
                    field.keys.iter().find_map(|k| {
                        object
                            .iter()
                            .find(|(name, v)| name.eq_ignore_ascii_case(k) && !v.is_null())
                    })
                });
            row.push(hit.map(|(_, v)| v));
        }
        for (key, v) in object {
            let exact = fields.iter().any(|f| f.keys.iter().any(|k| k == key));
            if !exact {
                unmapped.insert(format!("{}[{i}].{key}", path.text), v);
            }
        }
        rows.push(row);
    }
    builder.append_struct_list(rows.into_iter());
}

/// One event's top-level members, matched to the plan's slots, with every path below them
/// resolved.
pub(crate) struct Doc<'a> {
    raw: Vec<Option<&'a RawValue>>,
    values: Vec<Option<Json<'a>>>,
    resolved: Resolved,
}

impl<'a> Doc<'a> {
    fn load(plan: &Plan, event: &TopFields<'a>, unmapped: &mut Unmapped, needed: Option<&Needed>) -> Doc<'a> {
        let mut raw: Vec<Option<&'a RawValue>> = vec![None; plan.slots.len()];
        let mut leftovers = Vec::new();
        for (key, value) in &event.fields {
            match plan.slot_by_key.get(key.as_ref()) {
                Some(&slot) if raw[slot].is_none() => raw[slot] = Some(*value),
                _ => leftovers.push((key, *value)),
            }
        }
        let walk_unknown = needed.is_none();
        for (key, value) in leftovers {
            if let Some(&slot) = plan.slot_by_lower.get(&key.to_ascii_lowercase())
                && raw[slot].is_none()
            {
                raw[slot] = Some(value);
            }
            if walk_unknown {
                unmapped.insert(key.to_string(), &parse_raw(value));
            }
        }
        let values = (raw.iter().zip(&plan.slots).enumerate())
            .map(|(index, (r, slot))| match (r, slot.parse) {
                (Some(r), Parse::Always) if needed.is_none_or(|n| n.slots[index]) => Some(parse_raw(r)),
                _ => None,
            })
            .collect();
        let mut doc = Doc {
            raw,
            values,
            resolved: Resolved::new(plan.hops),
        };
        let mut path = String::new();
        for (slot, info) in plan.slots.iter().enumerate() {
            if let Some(value) = &doc.values[slot] {
                path.clear();
                path.push_str(&info.key);
                (info.node).walk(value, walk_unknown, &mut path, &mut doc.resolved, unmapped);
            }
        }
        doc
    }

    /// Parses the payload members that only KMS columns read, and resolves the paths below them.
    fn with_payloads(mut self, plan: &Plan, needed: Option<&Needed>) -> Doc<'a> {
        let mut path = String::new();
        for (slot, info) in plan.slots.iter().enumerate() {
            if info.parse == Parse::Kms
                && needed.is_none_or(|n| n.slots[slot])
                && self.values[slot].is_none()
                && let Some(raw) = self.raw[slot]
            {
                let value = parse_raw(raw);
                // Nothing under a KMS-only member is reported unknown: it is kept whole.
                let mut unmapped = Unmapped::default();
                (info.node).walk(&value, false, &mut path, &mut self.resolved, &mut unmapped);
                self.values[slot] = Some(value);
            }
        }
        self
    }

    /// Follows a path; keys that match only ignoring case are used and noted in `unmapped`.
    pub(crate) fn lookup<'s>(
        &'s self,
        path: &plan::PathSpec,
        unmapped: &mut Unmapped,
    ) -> Option<&'s Json<'a>> {
        let value = self.values[path.slot].as_ref()?;
        if path.hops.is_empty() {
            // Most paths are top-level members: nothing to follow.
            return Some(value);
        }
        self.resolved.follow(
            value,
            &path.hops,
            |depth, actual| path.variant_text(depth, actual),
            unmapped,
        )
    }
}

fn parse_raw(raw: &RawValue) -> Json<'_> {
    let text = raw.get();
    // Most members are strings without escapes or literals: they need no parser (a parser set
    // up for each of an event's ~20 scalar members cost more than reading them). The text is
    // valid JSON already, so a string without a backslash is its own value.
    if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"'))
        && memchr::memchr(b'\\', inner.as_bytes()).is_none()
    {
        return Json::String(Cow::Borrowed(inner));
    }
    match text {
        "true" => Json::Bool(true),
        "false" => Json::Bool(false),
        "null" => Json::Null,
        // The splitter and TopFields validated this text, so parsing cannot fail; keep the raw
        // text as a string rather than panic if that ever stops being true.
        _ => Json::parse_exact(text).unwrap_or_else(|_| Json::String(text.into())),
    }
}

fn needs_minify(text: &str) -> bool {
    memchr::memchr3(b'\n', b'\r', b'\t', text.as_bytes()).is_some()
        || text.contains(": ")
        || text.contains(", ")
}

/// Removes insignificant whitespace from JSON text without re-encoding any value.
fn minify(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !c.is_ascii_whitespace() {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn members_read_without_a_parser_are_what_the_parser_reads() {
        for text in [
            r#""plain""#,
            r#""""#,
            r#""with \"quote\"""#,
            r#""\u00e9t\u00e9""#,
            r#""ends with backslash \\""#,
            "true",
            "false",
            "null",
            "12.50",
            r#"{"a":"b"}"#,
            r#"["x"]"#,
        ] {
            let raw: &RawValue = serde_json::from_str(text).unwrap();
            assert_eq!(parse_raw(raw), Json::parse_exact(text).unwrap(), "{text}");
        }
    }

    /// The `unmapped` JSON of one event, and its typed `session_creation_date`.
    fn flattened(event: &str) -> (Option<Value>, Option<i64>) {
        use arrow::array::{Array, AsArray};
        use arrow::datatypes::TimestampMicrosecondType;

        let mut flattener = Flattener::new();
        flattener
            .append(&TopFields::parse(event.as_bytes()).unwrap())
            .unwrap();
        let batch = flattener.finish_batch().unwrap();
        let unmapped = batch.column_by_name("unmapped").unwrap().as_string::<i32>();
        let created = batch
            .column_by_name("session_creation_date")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        (
            (!unmapped.is_null(0)).then(|| serde_json::from_str(unmapped.value(0)).unwrap()),
            (!created.is_null(0)).then(|| created.value(0)),
        )
    }

    #[test]
    fn a_flattener_of_some_columns_builds_them_as_the_full_one_does() {
        let events = [
            r#"{"eventTime":"2024-03-01T10:00:00Z","eventSource":"kms.amazonaws.com","eventName":"Decrypt","awsRegion":"eu-west-1",
                "userIdentity":{"type":"AssumedRole","accountId":"111122223333","arn":"arn:aws:sts::111122223333:assumed-role/r/s"},
                "requestParameters":{"keyId":"alias/app","encryptionContext":{"k":"v"}},"resources":[{"ARN":"arn:aws:kms:eu-west-1:111122223333:key/k1","type":"AWS::KMS::Key"}]}"#,
            r#"{"eventTime":"2024-03-01T10:00:01Z","eventSource":"iam.amazonaws.com","eventName":"ListUsers","readOnly":true}"#,
        ];
        let schema = Schema::builtin();
        let wanted: Vec<usize> = ["event_name", "kms_key_arn", "user_identity_arn", "read_only"]
            .iter()
            .map(|c| schema.index_of(c).unwrap())
            .collect();
        let mut full = Flattener::new();
        let mut some = Flattener::new().only_columns(&wanted).hashing_originals();
        for event in events {
            let top = TopFields::parse(event.as_bytes()).unwrap();
            full.append(&top).unwrap();
            some.append_event(&top, event.as_bytes()).unwrap();
        }
        let bad = TopFields::parse(br#"{"eventTime":"soon","eventName":"X"}"#).unwrap();
        assert!(
            some.append(&bad).is_err(),
            "events are checked as the full flattener checks them"
        );
        let (full, some) = (full.finish_batch().unwrap(), some.finish_batch().unwrap());
        for (index, field) in schema.arrow_schema().fields().iter().enumerate() {
            if wanted.contains(&index) || index == 0 {
                assert_eq!(some.column(index), full.column(index), "{}", field.name());
            } else {
                assert_eq!(
                    some.column(index).null_count(),
                    2,
                    "{} is not built",
                    field.name()
                );
            }
        }
        let digests = some.column_by_name(ORIGINAL_DIGEST_COLUMN).unwrap();
        assert_eq!(digests.null_count(), 0);
    }

    #[test]
    fn a_batch_holds_the_rows_each_event_makes_alone() {
        use arrow::array::Array;

        // Each event holds other members; the rows of one batch must be the rows each event
        // makes alone, whatever the events before and after it held.
        let events = [
            r#"{"eventTime":"2024-03-01T10:00:00Z","eventSource":"kms.amazonaws.com","eventName":"Decrypt",
                "requestParameters":{"keyId":"alias/a","encryptionContext":{"k":"v"}},"resources":[{"ARN":"arn:aws:kms:eu-west-1:1:key/k","type":"AWS::KMS::Key"}]}"#,
            r#"{"eventTime":"2024-03-01T10:00:01Z","eventSource":"s3.amazonaws.com","eventName":"GetObject","readOnly":true,
                "userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::1:user/u"},"requestParameters":{"bucketName":"b"}}"#,
            r#"{"eventTime":"2024-03-01T10:00:02Z","eventName":"X","ErrorCode":"Denied","tlsDetails":{"tlsVersion":"TLSv1.3"}}"#,
            r#"{"eventTime":"2024-03-01T10:00:03Z","eventSource":"kms.amazonaws.com","eventName":"GenerateDataKey",
                "requestParameters":{"keyId":"arn:aws:kms:eu-west-1:1:key/k","numberOfBytes":32}}"#,
            r#"{"eventTime":"2024-03-01T10:00:04Z"}"#,
        ];
        let mut together = Flattener::new().keeping_raw();
        let mut alone = Vec::new();
        for event in events {
            let top = TopFields::parse(event.as_bytes()).unwrap();
            together.append_event(&top, event.as_bytes()).unwrap();
            let mut single = Flattener::new().keeping_raw();
            single.append_event(&top, event.as_bytes()).unwrap();
            alone.push(single.finish_batch().unwrap());
        }
        let together = together.finish_batch().unwrap();
        let alone = arrow::compute::concat_batches(&together.schema(), &alone).unwrap();
        assert_eq!(together.num_rows(), events.len());
        for (index, field) in together.schema().fields().iter().enumerate() {
            assert_eq!(together.column(index), alone.column(index), "{}", field.name());
        }
        let filled_by_some = (0..together.num_columns())
            .filter(|&c| {
                together.column(c).null_count() > 0 && together.column(c).null_count() < events.len()
            })
            .count();
        assert!(
            filled_by_some > 10,
            "the events fill different columns ({filled_by_some})"
        );
    }

    #[test]
    fn numbers_in_unmapped_keep_every_digit() {
        use arrow::array::AsArray;

        // Top-level, nested under a walked member, and of the wrong type for a typed column.
        let event = r#"{"eventTime":"2024-03-01T10:00:00Z","eventName":"X","weirdCount":12345678901234567890123,
            "userIdentity":{"type":"IAMUser","extraNum":-99999999999999999999999,"ratio":1.50},"readOnly":2.50}"#;
        let mut flattener = Flattener::new();
        flattener
            .append(&TopFields::parse(event.as_bytes()).unwrap())
            .unwrap();
        let batch = flattener.finish_batch().unwrap();
        let unmapped = batch
            .column_by_name("unmapped")
            .unwrap()
            .as_string::<i32>()
            .value(0)
            .to_string();
        for exact in [
            r#""weirdCount":12345678901234567890123"#,
            r#""userIdentity.extraNum":-99999999999999999999999"#,
            r#""userIdentity.ratio":1.50"#,
            r#""readOnly":2.50"#,
        ] {
            assert!(unmapped.contains(exact), "{exact} in {unmapped}");
        }
    }

    #[test]
    fn empty_objects_at_walked_paths_are_kept() {
        let event = r#"{"eventTime":"2024-03-01T10:00:00Z","eventName":"AssumeRole","userIdentity":{"type":"AssumedRole",
            "sessionContext":{"sessionIssuer":{},"webIdFederationData":{},"attributes":{"mfaAuthenticated":"false"}}}}"#;
        let (unmapped, _) = flattened(event);
        assert_eq!(
            unmapped,
            Some(serde_json::json!({
                "userIdentity.sessionContext.sessionIssuer": {},
                "userIdentity.sessionContext.webIdFederationData": {}
            }))
        );
        let (unmapped, _) = flattened(r#"{"eventTime":"2024-03-01T10:00:00Z","userIdentity":{}}"#);
        assert_eq!(unmapped, Some(serde_json::json!({"userIdentity": {}})));
        let (unmapped, _) =
            flattened(r#"{"eventTime":"2024-03-01T10:00:00Z","userIdentity":{"type":"Root"}}"#);
        assert_eq!(unmapped, None, "absent is not empty");
    }

    #[test]
    fn times_finer_than_microseconds_keep_their_text() {
        let event = |created: &str, time: &str| {
            format!(
                r#"{{"eventTime":"{time}","userIdentity":{{"sessionContext":{{"attributes":{{"creationDate":"{created}"}}}}}}}}"#
            )
        };
        let (unmapped, created) = flattened(&event(
            "2024-03-01T09:59:58.123456789Z",
            "2024-03-01T10:00:00.000000001Z",
        ));
        assert_eq!(created, Some(1_709_287_198_123_456));
        assert_eq!(
            unmapped,
            Some(serde_json::json!({
                "eventTime": "2024-03-01T10:00:00.000000001Z",
                "userIdentity.sessionContext.attributes.creationDate": "2024-03-01T09:59:58.123456789Z"
            }))
        );
        let (unmapped, created) = flattened(&event("2024-03-01T09:59:58.123456Z", "2024-03-01T10:00:00Z"));
        assert_eq!((unmapped, created), (None, Some(1_709_287_198_123_456)));
    }

    #[test]
    fn minify_keeps_strings_and_numbers_exactly() {
        assert_eq!(
            minify("{\n  \"a b\": [1.50, 2e3],\n  \"c\": \"x \\\" y\"\n}"),
            r#"{"a b":[1.50,2e3],"c":"x \" y"}"#
        );
    }
}
