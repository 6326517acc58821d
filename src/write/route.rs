//! Routing rows to their partitions: each row's partition directory, built from its values.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, DictionaryArray, RecordBatch, StringArray, UInt16Array};
use arrow::datatypes::{TimestampMicrosecondType, UInt16Type};
use arrow::error::ArrowError;
use chrono::{DateTime, Datelike};

use crate::dataset::partitioning::{partition_values, push_partition_value};
use crate::dataset::{PartitionKey, Partitioning};

const MICROS_PER_DAY: i64 = 86_400 * 1_000_000;

/// Which partition each row of a batch belongs to (see [`row_partitions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowPartitions {
    /// The distinct partition directories, in order of first appearance.
    pub paths: Vec<String>,
    /// For each row, its directory's index in `paths`.
    pub ids: Vec<u32>,
}

/// The partition of each row: the distinct relative directories (such as
/// `region=us-east-1/event_date=2023-07-10`) in order of first appearance, and each row's index
/// into them. The batch has the writer's schema (checked by `DatasetWriter::new`), so the source
/// columns exist.
///
/// A directory is built only where a row's partition values differ from the row before's: rows
/// of one delivery file share them, so most batches build one or a few.
pub fn row_partitions(partitioning: &Partitioning, batch: &RecordBatch) -> RowPartitions {
    let keys = partitioning.keys();
    let rows = batch.num_rows();
    let times = batch
        .column_by_name("event_time")
        .map(|c| c.as_primitive::<TimestampMicrosecondType>());
    let (Some(times), false) = (times, keys.is_empty() || rows == 0) else {
        return RowPartitions {
            paths: vec![String::new()],
            ids: vec![0; rows],
        };
    };
    let strings: Vec<Option<&StringArray>> = keys
        .iter()
        .map(|key| match key {
            PartitionKey::Account | PartitionKey::Region | PartitionKey::Service => batch
                .column_by_name(key.source_column())
                .and_then(|c| c.as_string_opt::<i32>()),
            _ => None,
        })
        .collect();
    fn value(values: &StringArray, row: usize) -> Option<&str> {
        (!values.is_null(row))
            .then(|| values.value(row))
            .filter(|v| !v.is_empty())
    }
    let day = |row: usize| times.value(row).div_euclid(MICROS_PER_DAY);
    let same_as_previous = |row: usize| {
        day(row) == day(row - 1)
            && strings
                .iter()
                .flatten()
                .all(|values| value(values, row) == value(values, row - 1))
    };
    let mut paths: Vec<String> = Vec::new();
    let mut known: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    let mut ids: Vec<u32> = Vec::with_capacity(rows);
    for row in 0..rows {
        if row > 0 && same_as_previous(row) {
            ids.push(ids[row - 1]);
            continue;
        }
        let mut path = String::with_capacity(48);
        for (k, key) in keys.iter().enumerate() {
            if k > 0 {
                path.push('/');
            }
            path.push_str(key.column_name());
            path.push('=');
            match key {
                PartitionKey::Account | PartitionKey::Region | PartitionKey::Service => {
                    push_partition_value(strings[k].and_then(|values| value(values, row)), &mut path)
                }
                PartitionKey::Date | PartitionKey::Year | PartitionKey::Month | PartitionKey::Day => {
                    // Every i64 of microseconds is a valid chrono time (±292,000 years).
                    let date = DateTime::from_timestamp_micros(times.value(row))
                        .unwrap_or_default()
                        .date_naive();
                    let part = match key {
                        PartitionKey::Date => {
                            format!("{:04}-{:02}-{:02}", date.year(), date.month(), date.day())
                        }
                        PartitionKey::Year => format!("{:04}", date.year()),
                        PartitionKey::Month => format!("{:02}", date.month()),
                        _ => format!("{:02}", date.day()),
                    };
                    path.push_str(&part);
                }
            }
        }
        let next = paths.len() as u32;
        let id = *known.entry(path).or_insert_with_key(|path| {
            paths.push(path.clone());
            next
        });
        ids.push(id);
    }
    RowPartitions { paths, ids }
}

/// The partition columns of `partitioning` for each row, dictionary-encoded as the Delta table
/// provider gives them (null for Hive's default partition).
pub fn partition_columns(
    batch: &RecordBatch,
    partitioning: &Partitioning,
) -> Result<Vec<ArrayRef>, ArrowError> {
    let rows = row_partitions(partitioning, batch);
    let values: Vec<Vec<(String, Option<String>)>> = rows
        .paths
        .iter()
        .map(|path| partition_values(&format!("{path}/f"), partitioning))
        .collect();
    let keys = UInt16Array::from(
        rows.ids
            .iter()
            .map(|&id| u16::try_from(id).ok())
            .collect::<Vec<_>>(),
    );
    if keys.null_count() > 0 {
        return Err(ArrowError::InvalidArgumentError(format!(
            "a batch of {} rows spans more than {} partitions",
            batch.num_rows(),
            u16::MAX
        )));
    }
    (0..partitioning.keys().len())
        .map(|column| {
            let dictionary = StringArray::from(
                values
                    .iter()
                    .map(|v| v[column].1.clone())
                    .collect::<Vec<Option<String>>>(),
            );
            // Rows of the default partition are null rows, not rows holding a null entry.
            let keys = UInt16Array::from(
                keys.iter()
                    .map(|k| k.filter(|&k| dictionary.is_valid(usize::from(k))))
                    .collect::<Vec<_>>(),
            );
            let array = DictionaryArray::<UInt16Type>::try_new(keys, Arc::new(dictionary))?;
            Ok(Arc::new(array) as ArrayRef)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_assigned_their_partition_directories() {
        use std::sync::Arc;

        use arrow::array::TimestampMicrosecondArray;
        use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

        let day = 86_400 * 1_000_000i64;
        let times = [0, 10, day + 5, 20, day + 7, -1];
        let regions = [
            Some("us-east-1"),
            Some("us-east-1"),
            Some("us-east-1"),
            Some("eu/1"),
            Some(""),
            None,
        ];
        let schema = Schema::new(vec![
            Field::new(
                "event_time",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                false,
            ),
            Field::new("aws_region", DataType::Utf8, true),
        ]);
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(TimestampMicrosecondArray::from(times.to_vec())),
                Arc::new(StringArray::from(regions.to_vec())),
            ],
        )
        .unwrap();
        let partitioning = Partitioning::new(vec![PartitionKey::Region, PartitionKey::Date]).unwrap();
        let found = row_partitions(&partitioning, &batch);
        assert_eq!(
            found.paths,
            [
                "region=us-east-1/event_date=1970-01-01",
                "region=us-east-1/event_date=1970-01-02",
                "region=eu%2F1/event_date=1970-01-01",
                "region=__HIVE_DEFAULT_PARTITION__/event_date=1970-01-02",
                "region=__HIVE_DEFAULT_PARTITION__/event_date=1969-12-31",
            ]
        );
        assert_eq!(found.ids, [0, 0, 1, 2, 3, 4]);
        let unpartitioned = row_partitions(&Partitioning::new(Vec::new()).unwrap(), &batch);
        assert_eq!(
            (unpartitioned.paths, unpartitioned.ids),
            (vec![String::new()], vec![0; 6])
        );
    }
}
