//! The output schema, loaded from `schemas/cloudtrail.v1.toml`.
//!
//! That file is the single source of truth: the flattener, the Arrow schema, the README column
//! table and the generated DDL are all derived from it. [`Schema::validate`] enforces the naming
//! rules (snake_case, no SQL reserved words, unique ignoring case) so a bad edit fails loudly.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, Fields, Schema as ArrowSchema, SchemaRef, TimeUnit};
use serde::Deserialize;

mod reserved;

pub use reserved::is_reserved as is_reserved_word;

/// The schema file compiled into the binary.
pub const SCHEMA_TOML: &str = include_str!("../../schemas/cloudtrail.v1.toml");

/// Parquet key-value metadata key carrying [`Schema::version`].
pub const SCHEMA_VERSION_KEY: &str = "keytrail.schema_version";
/// The column holding each event's original JSON text as read (`--keep-raw`), after the
/// schema's columns: what CloudTrail Lake's `eventJson` gives investigators who must show the
/// original record.
pub const RAW_EVENT_COLUMN: &str = "raw_event";
/// The column description of [`RAW_EVENT_COLUMN`].
pub const RAW_EVENT_DESCRIPTION: &str =
    "The event's original JSON text, byte for byte as read (only in tables converted with --keep-raw)";

/// Parquet key-value metadata key carrying [`Schema::name`].
pub const SCHEMA_NAME_KEY: &str = "keytrail.schema";

/// Errors in the schema file itself (a build-time mistake, surfaced by tests and at start-up).
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("schema file does not parse: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("column `{column}`: {problem}")]
    Column { column: String, problem: String },
}

/// Column types a schema file may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ColumnType {
    #[serde(rename = "utf8")]
    Utf8,
    #[serde(rename = "bool")]
    Bool,
    #[serde(rename = "int32")]
    Int32,
    #[serde(rename = "int64")]
    Int64,
    #[serde(rename = "float64")]
    Float64,
    /// Microseconds since the epoch, UTC.
    #[serde(rename = "timestamp")]
    Timestamp,
    /// A JSON value kept as compact UTF-8 JSON text.
    #[serde(rename = "json")]
    Json,
    /// `map<utf8, utf8>`; non-string values are kept as JSON text.
    #[serde(rename = "map")]
    Map,
    #[serde(rename = "list<utf8>")]
    ListUtf8,
    /// A list of structs whose fields are declared in `fields`.
    #[serde(rename = "list<struct>")]
    ListStruct,
}

impl ColumnType {
    /// The name used in the schema file and in documentation.
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Utf8 => "utf8",
            ColumnType::Bool => "bool",
            ColumnType::Int32 => "int32",
            ColumnType::Int64 => "int64",
            ColumnType::Float64 => "float64",
            ColumnType::Timestamp => "timestamp",
            ColumnType::Json => "json",
            ColumnType::Map => "map",
            ColumnType::ListUtf8 => "list<utf8>",
            ColumnType::ListStruct => "list<struct>",
        }
    }
}

/// Where a column is filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every event.
    #[default]
    All,
    /// Only events with `eventSource = kms.amazonaws.com`.
    Kms,
}

/// One field of a `list<struct>` column.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StructField {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// Keys inside each element, tried in order.
    pub from: Vec<String>,
    pub description: String,
}

/// One output column.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// JSON paths (dot-separated) tried in order; for derived columns, the inputs of the rule.
    #[serde(default)]
    pub from: Vec<String>,
    /// Name of the rule in `flatten::derive` that computes the column.
    #[serde(default)]
    pub derive: Option<String>,
    #[serde(default)]
    pub scope: Scope,
    pub description: String,
    #[serde(default)]
    pub fields: Vec<StructField>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SchemaFile {
    version: u32,
    name: String,
    column: Vec<Column>,
}

/// The parsed and validated output schema.
#[derive(Debug)]
pub struct Schema {
    version: u32,
    name: String,
    columns: Vec<Column>,
    arrow: SchemaRef,
}

impl Schema {
    /// Parses and validates a schema file.
    ///
    /// ```
    /// let schema = keytrail::schema::Schema::from_toml(keytrail::schema::SCHEMA_TOML).unwrap();
    /// assert_eq!(schema.columns()[0].name, "event_time");
    /// ```
    pub fn from_toml(text: &str) -> Result<Schema, SchemaError> {
        let file: SchemaFile = toml::from_str(text)?;
        let arrow = Arc::new(ArrowSchema::new(
            file.column.iter().map(arrow_field).collect::<Vec<_>>(),
        ));
        let schema = Schema {
            version: file.version,
            name: file.name,
            columns: file.column,
            arrow,
        };
        schema.validate()?;
        Ok(schema)
    }

    /// The schema compiled into this binary.
    pub fn builtin() -> &'static Schema {
        static BUILTIN: OnceLock<Schema> = OnceLock::new();
        BUILTIN.get_or_init(|| {
            Schema::from_toml(SCHEMA_TOML)
                .unwrap_or_else(|e| panic!("the built-in schemas/cloudtrail.v1.toml is invalid: {e}"))
        })
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Position of a column by name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The description of a column of a table's rows (the schema's columns and
    /// [`RAW_EVENT_COLUMN`]).
    pub fn column_description(&self, name: &str) -> Option<&str> {
        if name == RAW_EVENT_COLUMN {
            return Some(RAW_EVENT_DESCRIPTION);
        }
        self.columns
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.description.as_str())
    }

    /// The Arrow schema of the flattened table.
    pub fn arrow_schema(&self) -> SchemaRef {
        self.arrow.clone()
    }

    /// The Arrow schema of a table's rows: [`Schema::arrow_schema`], with the
    /// [`RAW_EVENT_COLUMN`] last when the table keeps each event's original text.
    ///
    /// ```
    /// let schema = keytrail::schema::Schema::builtin();
    /// let with_raw = schema.table_arrow_schema(true);
    /// assert_eq!(with_raw.fields().len(), schema.arrow_schema().fields().len() + 1);
    /// assert_eq!(with_raw.fields().last().unwrap().name(), keytrail::schema::RAW_EVENT_COLUMN);
    /// ```
    pub fn table_arrow_schema(&self, keep_raw: bool) -> SchemaRef {
        if !keep_raw {
            return self.arrow.clone();
        }
        let mut fields: Vec<Field> = self.arrow.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(RAW_EVENT_COLUMN, DataType::Utf8, true));
        Arc::new(ArrowSchema::new_with_metadata(
            fields,
            self.arrow.metadata().clone(),
        ))
    }

    fn validate(&self) -> Result<(), SchemaError> {
        let mut seen = HashSet::new();
        let names = self.columns.iter().map(|c| (&c.name, c)).chain(
            self.columns
                .iter()
                .flat_map(|c| c.fields.iter().map(move |f| (&f.name, c))),
        );
        for (name, column) in names {
            let fail = |problem: String| {
                Err(SchemaError::Column {
                    column: column.name.clone(),
                    problem,
                })
            };
            if !is_snake_case(name) {
                return fail(format!("`{name}` is not lowercase snake_case"));
            }
            if reserved::is_reserved(name) {
                return fail(format!(
                    "`{name}` is a reserved word in Athena, Spark or DataFusion SQL"
                ));
            }
            // Struct fields live in their own namespace; only top-level names must be unique.
            if std::ptr::eq(name, &column.name) && !seen.insert(name.to_ascii_lowercase()) {
                return fail(format!("`{name}` is declared twice (ignoring case)"));
            }
        }
        for column in &self.columns {
            let fail = |problem: &str| {
                Err(SchemaError::Column {
                    column: column.name.clone(),
                    problem: problem.to_string(),
                })
            };
            if column.derive.is_none() && column.from.is_empty() {
                return fail("has neither `from` nor `derive`");
            }
            if (column.ty == ColumnType::ListStruct) == column.fields.is_empty() {
                return fail("`fields` is required for list<struct> and only allowed there");
            }
            if column.fields.iter().any(|f| f.ty != ColumnType::Utf8) {
                return fail("struct fields must be utf8");
            }
            if column.description.trim().is_empty() || column.description.contains('\n') {
                return fail("needs a one-line description");
            }
        }
        match self.columns.first() {
            Some(c) if c.name == "event_time" && c.ty == ColumnType::Timestamp => Ok(()),
            _ => Err(SchemaError::Column {
                column: "event_time".into(),
                problem: "must be the first column, of type timestamp".into(),
            }),
        }
    }
}

fn is_snake_case(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
        && !name.ends_with('_')
        && !name.contains("__")
}

/// The Arrow type a column type maps to.
pub fn arrow_type(ty: ColumnType, fields: &[StructField]) -> DataType {
    match ty {
        ColumnType::Utf8 | ColumnType::Json => DataType::Utf8,
        ColumnType::Bool => DataType::Boolean,
        ColumnType::Int32 => DataType::Int32,
        ColumnType::Int64 => DataType::Int64,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        ColumnType::Map => DataType::Map(
            Arc::new(Field::new(
                "key_value",
                DataType::Struct(Fields::from(vec![
                    Field::new("key", DataType::Utf8, false),
                    Field::new("value", DataType::Utf8, true),
                ])),
                false,
            )),
            false,
        ),
        ColumnType::ListUtf8 => DataType::List(Arc::new(Field::new("element", DataType::Utf8, true))),
        ColumnType::ListStruct => DataType::List(Arc::new(Field::new(
            "element",
            DataType::Struct(struct_fields(fields)),
            true,
        ))),
    }
}

/// The Arrow fields of a `list<struct>` element.
pub fn struct_fields(fields: &[StructField]) -> Fields {
    fields
        .iter()
        .map(|f| Field::new(&f.name, arrow_type(f.ty, &[]), true))
        .collect()
}

fn arrow_field(column: &Column) -> Field {
    // Rows without a usable event_time are rejected before they reach a batch.
    let nullable = column.name != "event_time";
    Field::new(&column.name, arrow_type(column.ty, &column.fields), nullable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_schema_loads_and_starts_with_event_time() {
        let schema = Schema::builtin();
        assert_eq!(schema.version(), 1);
        assert_eq!(schema.columns()[0].name, "event_time");
        assert_eq!(schema.arrow_schema().fields().len(), schema.columns().len());
    }

    #[test]
    fn rejects_reserved_and_case_duplicate_names() {
        let bad = SCHEMA_TOML.replace("name = \"event_version\"", "name = \"date\"");
        let err = Schema::from_toml(&bad).unwrap_err().to_string();
        assert!(err.contains("reserved"), "{err}");

        let dup = SCHEMA_TOML.replace("name = \"event_version\"", "name = \"event_name\"");
        let err = Schema::from_toml(&dup).unwrap_err().to_string();
        assert!(err.contains("declared twice"), "{err}");

        let camel = SCHEMA_TOML.replace("name = \"event_version\"", "name = \"eventVersion\"");
        let err = Schema::from_toml(&camel).unwrap_err().to_string();
        assert!(err.contains("snake_case"), "{err}");
    }
}

/// Documentation generated from the schema file.
pub mod docs {
    use super::{Column, ColumnType, Schema, Scope};

    /// How a column type reads in the docs (close to the SQL types engines show).
    pub fn type_label(column: &Column) -> String {
        match column.ty {
            ColumnType::Utf8 => "string".into(),
            ColumnType::Json => "string (JSON)".into(),
            ColumnType::Bool => "boolean".into(),
            ColumnType::Int32 => "int".into(),
            ColumnType::Int64 => "bigint".into(),
            ColumnType::Float64 => "double".into(),
            ColumnType::Timestamp => "timestamp (µs, UTC)".into(),
            ColumnType::Map => "map<string, string>".into(),
            ColumnType::ListUtf8 => "array<string>".into(),
            ColumnType::ListStruct => format!(
                "array<struct<{}>>",
                column
                    .fields
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// The Markdown column table used in the README.
    pub fn markdown_table(schema: &Schema) -> String {
        let mut out = String::from("| column | type | from | description |\n|---|---|---|---|\n");
        for column in schema.columns() {
            let from = if let Some(rule) = &column.derive {
                if column.from.is_empty() {
                    format!("derived (`{rule}`)")
                } else {
                    format!("derived from {}", code_list(&column.from))
                }
            } else {
                code_list(&column.from)
            };
            let scope = if column.scope == Scope::Kms {
                " *(KMS events)*"
            } else {
                ""
            };
            out.push_str(&format!(
                "| `{}` | {} | {} | {}{} |\n",
                column.name,
                type_label(column),
                from,
                column.description.replace('|', "\\|"),
                scope
            ));
        }
        out
    }

    fn code_list(items: &[String]) -> String {
        items
            .iter()
            .map(|i| format!("`{i}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
