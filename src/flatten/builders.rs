//! Arrow builders for each schema column type, and the lenient JSON-to-Arrow coercions.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, ListBuilder,
    MapBuilder, MapFieldNames, StringBuilder, StructBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field};

use super::time::{epoch_number_to_micros, parse_timestamp_micros};
use crate::read::json::Json;
use crate::schema::{ColumnType, StructField, arrow_type, struct_fields};

/// A value did not have a JSON type the column can hold; the caller keeps it in `unmapped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WrongType;

/// One column's Arrow builder. Nulls are counted and appended in runs, when the next value or the
/// end of the batch comes: most columns of most events are absent (KMS columns of other
/// services' events, optional fields), and one call per run is cheaper than one per row.
pub(crate) struct ColumnBuilder {
    builder: Builder,
    pending_nulls: usize,
}

enum Builder {
    Utf8(StringBuilder),
    Bool(BooleanBuilder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Map(MapBuilder<StringBuilder, StringBuilder>),
    ListUtf8(ListBuilder<StringBuilder>),
    ListStruct(ListBuilder<StructBuilder>),
}

impl ColumnBuilder {
    pub(crate) fn new(ty: ColumnType, fields: &[StructField], capacity: usize) -> ColumnBuilder {
        let builder = match ty {
            ColumnType::Utf8 | ColumnType::Json => {
                Builder::Utf8(StringBuilder::with_capacity(capacity, capacity * 16))
            }
            ColumnType::Bool => Builder::Bool(BooleanBuilder::with_capacity(capacity)),
            ColumnType::Int32 => Builder::Int32(Int32Builder::with_capacity(capacity)),
            ColumnType::Int64 => Builder::Int64(Int64Builder::with_capacity(capacity)),
            ColumnType::Float64 => Builder::Float64(Float64Builder::with_capacity(capacity)),
            ColumnType::Timestamp => {
                Builder::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"))
            }
            ColumnType::Map => {
                let names = MapFieldNames {
                    entry: "key_value".into(),
                    key: "key".into(),
                    value: "value".into(),
                };
                Builder::Map(MapBuilder::new(
                    Some(names),
                    StringBuilder::new(),
                    StringBuilder::new(),
                ))
            }
            ColumnType::ListUtf8 => Builder::ListUtf8(
                ListBuilder::new(StringBuilder::new()).with_field(element_field(ty, fields)),
            ),
            ColumnType::ListStruct => {
                let builders: Vec<Box<dyn ArrayBuilder>> = fields
                    .iter()
                    .map(|_| Box::new(StringBuilder::new()) as Box<dyn ArrayBuilder>)
                    .collect();
                let values = StructBuilder::new(struct_fields(fields), builders);
                Builder::ListStruct(ListBuilder::new(values).with_field(element_field(ty, fields)))
            }
        };
        ColumnBuilder {
            builder,
            pending_nulls: 0,
        }
    }

    pub(crate) fn append_null(&mut self) {
        self.pending_nulls += 1;
    }

    /// Appends the nulls counted since the last value; every other append calls this first.
    fn builder(&mut self) -> &mut Builder {
        let n = std::mem::take(&mut self.pending_nulls);
        if n > 0 {
            match &mut self.builder {
                Builder::Utf8(b) => b.append_nulls(n),
                Builder::Bool(b) => b.append_nulls(n),
                Builder::Int32(b) => b.append_nulls(n),
                Builder::Int64(b) => b.append_nulls(n),
                Builder::Float64(b) => b.append_nulls(n),
                Builder::Timestamp(b) => b.append_nulls(n),
                Builder::Map(b) => b.append_nulls(n).expect("map keys and values stay aligned"),
                Builder::ListUtf8(b) => b.append_nulls(n),
                Builder::ListStruct(b) => b.append_nulls(n),
            }
        }
        &mut self.builder
    }

    pub(crate) fn append_str(&mut self, value: Option<&str>) {
        let Some(value) = value else {
            self.append_null();
            return;
        };
        match self.builder() {
            Builder::Utf8(b) => b.append_value(value),
            _ => unreachable!("append_str is only used on utf8 columns"),
        }
    }

    pub(crate) fn append_timestamp(&mut self, micros: i64) {
        match self.builder() {
            Builder::Timestamp(b) => b.append_value(micros),
            _ => unreachable!("append_timestamp is only used on timestamp columns"),
        }
    }

    /// Appends a JSON value, coercing the spellings real logs use (`"true"`, numbers as strings,
    /// numbers where text is expected). `None` and JSON null append null. On [`WrongType`] a null
    /// has been appended.
    pub(crate) fn append_json(&mut self, value: Option<&Json<'_>>) -> Result<(), WrongType> {
        let Some(value) = value.filter(|v| !v.is_null()) else {
            self.append_null();
            return Ok(());
        };
        let ok = match self.builder() {
            Builder::Utf8(b) => {
                b.append_option(value.as_text());
                true
            }
            Builder::Bool(b) => match as_bool(value) {
                Some(v) => {
                    b.append_value(v);
                    true
                }
                None => false,
            },
            Builder::Int32(b) => match as_i64(value).and_then(|v| i32::try_from(v).ok()) {
                Some(v) => {
                    b.append_value(v);
                    true
                }
                None => false,
            },
            Builder::Int64(b) => match as_i64(value) {
                Some(v) => {
                    b.append_value(v);
                    true
                }
                None => false,
            },
            Builder::Float64(b) => match as_f64(value) {
                Some(v) => {
                    b.append_value(v);
                    true
                }
                None => false,
            },
            Builder::Timestamp(b) => {
                let micros = match value {
                    Json::String(s) => parse_timestamp_micros(s),
                    Json::Number(n) => n.as_f64().and_then(epoch_number_to_micros),
                    Json::Decimal(text) => text.parse().ok().and_then(epoch_number_to_micros),
                    _ => None,
                };
                match micros {
                    Some(v) => {
                        b.append_value(v);
                        true
                    }
                    None => false,
                }
            }
            Builder::Map(b) => match value {
                Json::Object(map) => {
                    for (k, v) in map {
                        b.keys().append_value(k);
                        b.values().append_option(v.as_text());
                    }
                    b.append(true).expect("map keys and values stay aligned");
                    true
                }
                _ => false,
            },
            Builder::ListUtf8(b) => match value {
                Json::Array(items) => {
                    for item in items {
                        b.values().append_option(item.as_text());
                    }
                    b.append(true);
                    true
                }
                Json::String(s) => {
                    b.values().append_value(s);
                    b.append(true);
                    true
                }
                _ => false,
            },
            Builder::ListStruct(_) => {
                unreachable!("list<struct> columns are appended with append_struct_list")
            }
        };
        if ok {
            Ok(())
        } else {
            self.append_null();
            Err(WrongType)
        }
    }

    /// Appends one list of structs. `elements` yields, per element, one value per struct field.
    pub(crate) fn append_struct_list<'v>(
        &mut self,
        elements: impl Iterator<Item = Vec<Option<&'v Json<'v>>>>,
    ) {
        let Builder::ListStruct(list) = self.builder() else {
            unreachable!("append_struct_list is only used on list<struct> columns")
        };
        let values = list.values();
        for element in elements {
            for (i, field) in element.into_iter().enumerate() {
                let builder = values
                    .field_builder::<StringBuilder>(i)
                    .expect("struct fields are utf8 (checked by the schema)");
                builder.append_option(field.and_then(Json::as_text));
            }
            values.append(true);
        }
        list.append(true);
    }

    /// Takes the rows appended so far as an array. A text column's next buffers are sized from
    /// this batch (batches are alike), so they are neither regrown by doubling, copying as they
    /// go, nor left up to half empty: the writer's memory limit then counts bytes that hold data.
    pub(crate) fn finish(&mut self) -> ArrayRef {
        match self.builder() {
            Builder::Utf8(b) => {
                let array = b.finish();
                let bytes = array.value_data().len();
                *b = StringBuilder::with_capacity(array.len(), bytes + bytes / 8);
                Arc::new(array)
            }
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Int32(b) => Arc::new(b.finish()),
            Builder::Int64(b) => Arc::new(b.finish()),
            Builder::Float64(b) => Arc::new(b.finish()),
            Builder::Timestamp(b) => Arc::new(b.finish()),
            Builder::Map(b) => Arc::new(b.finish()),
            Builder::ListUtf8(b) => Arc::new(b.finish()),
            Builder::ListStruct(b) => Arc::new(b.finish()),
        }
    }
}

fn element_field(ty: ColumnType, fields: &[StructField]) -> Arc<Field> {
    match arrow_type(ty, fields) {
        DataType::List(field) => field,
        other => unreachable!("{other} is not a list type"),
    }
}

fn as_bool(value: &Json<'_>) -> Option<bool> {
    match value {
        Json::Bool(b) => Some(*b),
        Json::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Json::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

fn as_i64(value: &Json<'_>) -> Option<i64> {
    match value {
        Json::Number(n) => n.as_i64().or_else(|| n.as_f64().and_then(whole)),
        Json::Decimal(text) => text.parse().ok().and_then(whole),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A float that is a whole number an `i64` holds.
fn whole(f: f64) -> Option<i64> {
    (f.fract() == 0.0 && f.abs() < 9.0e18).then_some(f as i64)
}

fn as_f64(value: &Json<'_>) -> Option<f64> {
    match value {
        Json::Number(n) => n.as_f64(),
        Json::Decimal(text) => text.parse().ok(),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}
