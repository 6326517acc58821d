//! The statistics a data file's entry in the Delta log carries (`numRecords`, `minValues`,
//! `maxValues`, `nullCount`), taken from the Parquet footer the writer just wrote, so readers
//! (DataFusion through delta-rs, Spark, Athena, DuckDB) skip files by them without opening them.
//!
//! Only top-level primitive columns get bounds; nested columns get none (readers then keep the
//! file). Bounds are loosened where Delta's formats are coarser than the data: timestamps to
//! whole milliseconds (the minimum down, the maximum up), and long strings are not bounded above
//! (Delta readers compare truncated prefixes).

use arrow::datatypes::{DataType, Schema as ArrowSchema, TimeUnit};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;
use serde_json::{Map, Value};

/// Longest string kept as an upper bound; longer maxima are left out.
const MAX_STRING_BOUND_CHARS: usize = 32;

/// The Delta `stats` JSON of a file written with `schema`, from its footer.
pub fn delta_stats(metadata: &ParquetMetaData, schema: &ArrowSchema) -> String {
    let mut min_values = Map::new();
    let mut max_values = Map::new();
    let mut null_count = Map::new();
    let descriptor = metadata.file_metadata().schema_descr();
    for (leaf, column) in descriptor.columns().iter().enumerate() {
        let path = column.path().parts();
        if path.len() != 1 {
            continue;
        }
        let name = &path[0];
        let Ok(field) = schema.field_with_name(name) else {
            continue;
        };
        let mut bounds = Bounds::default();
        let mut nulls: Option<u64> = Some(0);
        for row_group in metadata.row_groups() {
            let statistics = row_group.column(leaf).statistics();
            nulls = match (nulls, statistics.and_then(Statistics::null_count_opt)) {
                (Some(total), Some(n)) => Some(total + n),
                _ => None,
            };
            match statistics {
                Some(statistics) => bounds.add(field.data_type(), statistics),
                None => bounds.unknown = true,
            }
        }
        if let Some(nulls) = nulls {
            null_count.insert(name.clone(), Value::from(nulls));
        }
        if !bounds.unknown {
            if let Some(min) = bounds.min.and_then(|v| v.min_json(field.data_type())) {
                min_values.insert(name.clone(), min);
            }
            if let Some(max) = bounds.max.and_then(|v| v.max_json(field.data_type())) {
                max_values.insert(name.clone(), max);
            }
        }
    }
    serde_json::json!({
        "numRecords": metadata.file_metadata().num_rows(),
        "minValues": min_values,
        "maxValues": max_values,
        "nullCount": null_count,
    })
    .to_string()
}

/// A column value as Parquet's statistics hold it.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Bound {
    Bool(bool),
    Int(i64),
    Text(String),
}

impl Bound {
    fn min_json(self, data_type: &DataType) -> Option<Value> {
        match (self, data_type) {
            (Bound::Int(micros), DataType::Timestamp(TimeUnit::Microsecond, _)) => {
                timestamp_json(micros.div_euclid(1000))
            }
            (Bound::Text(text), _) => Some(Value::from(
                text.chars().take(MAX_STRING_BOUND_CHARS).collect::<String>(),
            )),
            (bound, _) => Some(bound.into_json()),
        }
    }

    fn max_json(self, data_type: &DataType) -> Option<Value> {
        match (self, data_type) {
            (Bound::Int(micros), DataType::Timestamp(TimeUnit::Microsecond, _)) => {
                timestamp_json(micros.div_euclid(1000) + i64::from(micros.rem_euclid(1000) != 0))
            }
            (Bound::Text(text), _) if text.chars().count() > MAX_STRING_BOUND_CHARS => None,
            (bound, _) => Some(bound.into_json()),
        }
    }

    fn into_json(self) -> Value {
        match self {
            Bound::Bool(b) => Value::from(b),
            Bound::Int(i) => Value::from(i),
            Bound::Text(t) => Value::from(t),
        }
    }
}

fn timestamp_json(millis: i64) -> Option<Value> {
    let time = chrono::DateTime::from_timestamp_millis(millis)?;
    Some(Value::from(time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()))
}

#[derive(Default)]
struct Bounds {
    min: Option<Bound>,
    max: Option<Bound>,
    /// A row group without usable statistics: the file gets no bounds for the column.
    unknown: bool,
}

impl Bounds {
    fn add(&mut self, data_type: &DataType, statistics: &Statistics) {
        let (min, max) = match (data_type, statistics) {
            (DataType::Boolean, Statistics::Boolean(s)) => (
                s.min_opt().map(|v| Bound::Bool(*v)),
                s.max_opt().map(|v| Bound::Bool(*v)),
            ),
            (DataType::Int32 | DataType::Int16 | DataType::Int8, Statistics::Int32(s)) => (
                s.min_opt().map(|v| Bound::Int(i64::from(*v))),
                s.max_opt().map(|v| Bound::Int(i64::from(*v))),
            ),
            (DataType::Int64 | DataType::Timestamp(TimeUnit::Microsecond, _), Statistics::Int64(s)) => (
                s.min_opt().map(|v| Bound::Int(*v)),
                s.max_opt().map(|v| Bound::Int(*v)),
            ),
            (DataType::Utf8, Statistics::ByteArray(s)) => {
                let text =
                    |v: &parquet::data_type::ByteArray| v.as_utf8().ok().map(|t| Bound::Text(t.to_string()));
                (s.min_opt().and_then(text), s.max_opt().and_then(text))
            }
            _ => {
                self.unknown = true;
                return;
            }
        };
        match (min, max) {
            (Some(min), Some(max)) => {
                if self.min.as_ref().is_none_or(|m| min < *m) {
                    self.min = Some(min);
                }
                if self.max.as_ref().is_none_or(|m| max > *m) {
                    self.max = Some(max);
                }
            }
            // A row group of nulls only has no bounds, and narrows nothing.
            (None, None) if statistics.null_count_opt().is_some() => {}
            _ => self.unknown = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, BooleanArray, RecordBatch, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::Field;
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;

    use super::*;

    fn stats_of(batches: &[RecordBatch], row_group_rows: usize) -> Value {
        let schema = batches[0].schema();
        let properties = WriterProperties::builder()
            .set_max_row_group_row_count(Some(row_group_rows))
            .build();
        let mut writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(properties)).expect("writer");
        for batch in batches {
            writer.write(batch).expect("write");
        }
        let metadata = writer.finish().expect("finish");
        serde_json::from_str(&delta_stats(&metadata, &schema)).expect("json")
    }

    #[test]
    fn bounds_cover_every_row_group_and_times_are_widened_to_milliseconds() {
        let schema = Arc::new(ArrowSchema::new(vec![
            Field::new(
                "event_time",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("event_name", DataType::Utf8, true),
            Field::new("read_only", DataType::Boolean, true),
            Field::new("user_agent", DataType::Utf8, true),
        ]));
        let long = "zsh-aws-cli/2.15.0 Python/3.11.6 Linux/6.1 exe/x86_64.amzn.2023";
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(
                    TimestampMicrosecondArray::from(vec![
                        1_700_000_000_123_456,
                        1_699_999_999_000_001,
                        1_700_000_500_000_000,
                    ])
                    .with_timezone("UTC"),
                ) as ArrayRef,
                Arc::new(StringArray::from(vec![Some("Decrypt"), None, Some("CreateKey")])),
                Arc::new(BooleanArray::from(vec![None, None, None])),
                Arc::new(StringArray::from(vec![Some("a"), Some(long), Some("b")])),
            ],
        )
        .expect("batch");
        let stats = stats_of(&[batch], 2);
        assert_eq!(stats["numRecords"], 3);
        assert_eq!(stats["minValues"]["event_time"], "2023-11-14T22:13:19.000Z");
        assert_eq!(stats["maxValues"]["event_time"], "2023-11-14T22:21:40.000Z");
        assert_eq!(stats["minValues"]["event_name"], "CreateKey");
        assert_eq!(stats["maxValues"]["event_name"], "Decrypt");
        assert_eq!(stats["nullCount"]["event_name"], 1);
        assert_eq!(stats["nullCount"]["read_only"], 3);
        assert!(
            stats["minValues"].get("read_only").is_none(),
            "all nulls: no bounds"
        );
        assert_eq!(stats["minValues"]["user_agent"], "a");
        assert!(
            stats["maxValues"].get("user_agent").is_none(),
            "the longest value is too long to bound"
        );
    }

    #[test]
    fn a_maximum_time_within_a_millisecond_is_rounded_up() {
        let schema = Arc::new(ArrowSchema::new(vec![Field::new(
            "event_time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        )]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(TimestampMicrosecondArray::from(vec![1_000_500]).with_timezone("UTC")) as ArrayRef],
        )
        .expect("batch");
        let stats = stats_of(&[batch], 10);
        assert_eq!(stats["minValues"]["event_time"], "1970-01-01T00:00:01.000Z");
        assert_eq!(stats["maxValues"]["event_time"], "1970-01-01T00:00:01.001Z");
    }
}
