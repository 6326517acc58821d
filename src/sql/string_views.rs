//! The text types of the SQL engine: Utf8View inside `keytrail sql`, plain Utf8 in what it
//! writes for others.
//!
//! A view points into the Parquet page its string was decoded from instead of copying the
//! string into a new buffer, so a scan that keeps a few rows of many no longer copies them all
//! (a key's usage over 1M events copied 77 MB of strings before; benches/README.md). delta-rs
//! reads a Delta table's text columns as views when the session asks for it; the other kinds of
//! `events` (a directory of Parquet files, raw logs) are given the same types here, so the
//! columns are the same whatever holds the events.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};

/// `schema` with text as views where delta-rs puts them: top-level columns, struct fields and
/// list items, at any depth (map entries keep Utf8, as in delta-rs).
pub(crate) fn with_views(schema: &Schema) -> SchemaRef {
    map_schema(schema, &|data_type| match data_type {
        DataType::Utf8 | DataType::LargeUtf8 => Some(DataType::Utf8View),
        DataType::Map(..) => Some(data_type.clone()),
        _ => None,
    })
}

/// `schema` with Utf8 wherever it has Utf8View, at any depth: for files written from query
/// results, which every Arrow reader should read as plain strings.
pub(crate) fn without_views(schema: &Schema) -> SchemaRef {
    map_schema(schema, &|data_type| match data_type {
        DataType::Utf8View => Some(DataType::Utf8),
        DataType::BinaryView => Some(DataType::Binary),
        _ => None,
    })
}

/// Rewrites every type `leaf` answers for, descending into the nested types it does not.
fn map_schema(schema: &Schema, leaf: &dyn Fn(&DataType) -> Option<DataType>) -> SchemaRef {
    let fields: Vec<FieldRef> = schema.fields().iter().map(|f| map_field(f, leaf)).collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

fn map_field(field: &FieldRef, leaf: &dyn Fn(&DataType) -> Option<DataType>) -> FieldRef {
    let data_type = map_type(field.data_type(), leaf);
    if &data_type == field.data_type() {
        return field.clone();
    }
    Arc::new(Field::clone(field).with_data_type(data_type))
}

fn map_type(data_type: &DataType, leaf: &dyn Fn(&DataType) -> Option<DataType>) -> DataType {
    if let Some(mapped) = leaf(data_type) {
        return mapped;
    }
    match data_type {
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(|f| map_field(f, leaf)).collect()),
        DataType::List(item) => DataType::List(map_field(item, leaf)),
        DataType::LargeList(item) => DataType::LargeList(map_field(item, leaf)),
        DataType::Map(entries, sorted) => DataType::Map(map_field(entries, leaf), *sorted),
        DataType::Dictionary(key, value) => {
            DataType::Dictionary(key.clone(), Box::new(map_type(value, leaf)))
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin() -> SchemaRef {
        crate::schema::Schema::builtin().arrow_schema()
    }

    #[test]
    fn text_columns_become_views_and_back() {
        let plain = builtin();
        let views = with_views(&plain);
        for (before, after) in plain.fields().iter().zip(views.fields()) {
            let expected = match before.data_type() {
                DataType::Utf8 => DataType::Utf8View,
                other if format!("{other}").contains("Utf8") => {
                    // Nested text changes inside lists and structs, never inside maps.
                    let text = format!("{}", after.data_type());
                    assert_eq!(
                        text.contains("Utf8View"),
                        !matches!(other, DataType::Map(..)),
                        "{}: {text}",
                        before.name()
                    );
                    after.data_type().clone()
                }
                other => other.clone(),
            };
            assert_eq!(after.data_type(), &expected, "{}", before.name());
            assert_eq!(after.metadata(), before.metadata(), "descriptions kept");
        }
        assert!(
            views
                .fields()
                .iter()
                .any(|f| f.data_type() == &DataType::Utf8View)
        );
        assert_eq!(without_views(&views), plain, "back to the schema file's types");
    }
}
