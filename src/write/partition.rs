//! Hive-style partitioning of the flattened rows.

use std::fmt;
use std::str::FromStr;

use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::datatypes::TimestampMicrosecondType;
use chrono::{DateTime, Datelike};

/// Hive's name for a partition whose value is null or empty.
pub const DEFAULT_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// A partition key a user can choose with `--partition-by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionKey {
    /// `account=<recipientAccountId>`
    Account,
    /// `region=<awsRegion>`
    Region,
    /// `event_date=YYYY-MM-DD` (UTC, from eventTime)
    Date,
    /// `year=YYYY`
    Year,
    /// `month=MM`
    Month,
    /// `day=DD`
    Day,
    /// `service=<eventSource>`
    Service,
}

impl PartitionKey {
    pub const ALL: &'static [PartitionKey] = &[
        PartitionKey::Account,
        PartitionKey::Region,
        PartitionKey::Date,
        PartitionKey::Year,
        PartitionKey::Month,
        PartitionKey::Day,
        PartitionKey::Service,
    ];

    /// The directory (and table) column name: never equal to a data column's name.
    pub fn column_name(self) -> &'static str {
        match self {
            PartitionKey::Account => "account",
            PartitionKey::Region => "region",
            PartitionKey::Date => "event_date",
            PartitionKey::Year => "year",
            PartitionKey::Month => "month",
            PartitionKey::Day => "day",
            PartitionKey::Service => "service",
        }
    }

    /// The data column the value comes from.
    pub fn source_column(self) -> &'static str {
        match self {
            PartitionKey::Account => "recipient_account_id",
            PartitionKey::Region => "aws_region",
            PartitionKey::Service => "event_source",
            PartitionKey::Date | PartitionKey::Year | PartitionKey::Month | PartitionKey::Day => "event_time",
        }
    }
}

impl fmt::Display for PartitionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PartitionKey::Account => "account",
            PartitionKey::Region => "region",
            PartitionKey::Date => "date",
            PartitionKey::Year => "year",
            PartitionKey::Month => "month",
            PartitionKey::Day => "day",
            PartitionKey::Service => "service",
        })
    }
}

impl FromStr for PartitionKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "account" | "account_id" => PartitionKey::Account,
            "region" => PartitionKey::Region,
            "date" | "event_date" | "dt" => PartitionKey::Date,
            "year" => PartitionKey::Year,
            "month" => PartitionKey::Month,
            "day" => PartitionKey::Day,
            "service" | "source" | "event_source" => PartitionKey::Service,
            other => {
                return Err(format!(
                    "unknown partition key `{other}` (choose from account, region, date, year, month, day, service)"
                ));
            }
        })
    }
}

/// An ordered list of partition keys. The default, `region,date`, suits Athena partition
/// projection and Spark's partition discovery, and keeps one day of one Region per directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Partitioning {
    keys: Vec<PartitionKey>,
}

impl Default for Partitioning {
    fn default() -> Self {
        Partitioning {
            keys: vec![PartitionKey::Region, PartitionKey::Date],
        }
    }
}

impl Partitioning {
    /// Builds a partitioning; rejects duplicates. An empty list writes an unpartitioned dataset.
    pub fn new(keys: Vec<PartitionKey>) -> Result<Partitioning, String> {
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].contains(key) {
                return Err(format!("partition key `{key}` is given twice"));
            }
        }
        Ok(Partitioning { keys })
    }

    pub fn keys(&self) -> &[PartitionKey] {
        &self.keys
    }

    /// The partition of each row: the distinct relative directories (such as
    /// `region=us-east-1/event_date=2023-07-10`) in order of first appearance, and each row's
    /// index into them.
    ///
    /// A directory is built only where a row's partition values differ from the row before's:
    /// rows of one delivery file share them, so most batches build one or a few.
    pub fn row_partitions(&self, batch: &RecordBatch) -> RowPartitions {
        let rows = batch.num_rows();
        if self.keys.is_empty() || rows == 0 {
            return RowPartitions {
                paths: vec![String::new()],
                ids: vec![0; rows],
            };
        }
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .expect("partition source columns exist in the schema")
        };
        let times = column("event_time").as_primitive::<TimestampMicrosecondType>();
        let strings: Vec<Option<&StringArray>> = self
            .keys
            .iter()
            .map(|key| match key {
                PartitionKey::Account | PartitionKey::Region | PartitionKey::Service => {
                    Some(column(key.source_column()).as_string::<i32>())
                }
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
            for (k, key) in self.keys.iter().enumerate() {
                if k > 0 {
                    path.push('/');
                }
                path.push_str(key.column_name());
                path.push('=');
                match strings[k] {
                    Some(values) => match value(values, row) {
                        Some(v) => escape_into(v, &mut path),
                        None => path.push_str(DEFAULT_PARTITION),
                    },
                    None => {
                        let date = DateTime::from_timestamp_micros(times.value(row))
                            .expect("event_time values come from valid timestamps")
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
}

const MICROS_PER_DAY: i64 = 86_400 * 1_000_000;

/// Which partition each row of a batch belongs to (see [`Partitioning::row_partitions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowPartitions {
    /// The distinct partition directories, in order of first appearance.
    pub paths: Vec<String>,
    /// For each row, its directory's index in `paths`.
    pub ids: Vec<u32>,
}

/// Escapes a partition value the way Hive does, so that `/`, `=` and friends stay inside one
/// directory name and every reader decodes the same value.
fn escape_into(value: &str, out: &mut String) {
    for c in value.chars() {
        let needs_escape = c.is_control()
            || matches!(
                c,
                '"' | '#' | '%' | '\'' | '*' | '/' | ':' | '=' | '?' | '\\' | '\x7f' | '{' | '[' | ']' | '^'
            );
        if needs_escape {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    if value == "." || value == ".." {
        out.truncate(out.len() - value.len());
        out.push_str(&value.replace('.', "%2E"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_hive() {
        let mut out = String::new();
        escape_into("us-east-1", &mut out);
        assert_eq!(out, "us-east-1");
        let mut out = String::new();
        escape_into("a/b=c:d", &mut out);
        assert_eq!(out, "a%2Fb%3Dc%3Ad");
        let mut out = String::new();
        escape_into("..", &mut out);
        assert_eq!(out, "%2E%2E");
    }

    #[test]
    fn parses_keys_and_rejects_duplicates() {
        let keys: Vec<PartitionKey> = "account,region,date"
            .split(',')
            .map(|k| k.parse().unwrap())
            .collect();
        assert_eq!(Partitioning::new(keys).unwrap().keys().len(), 3);
        assert!("nope".parse::<PartitionKey>().is_err());
        assert!(Partitioning::new(vec![PartitionKey::Day, PartitionKey::Day]).is_err());
        for key in PartitionKey::ALL {
            assert!(
                crate::schema::Schema::builtin()
                    .index_of(key.column_name())
                    .is_none()
            );
            assert!(!crate::schema::is_reserved_word(key.column_name()), "{key}");
        }
    }

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
        let found = partitioning.row_partitions(&batch);
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
        let unpartitioned = Partitioning::new(Vec::new()).unwrap().row_partitions(&batch);
        assert_eq!(
            (unpartitioned.paths, unpartitioned.ids),
            (vec![String::new()], vec![0; 6])
        );
    }
}
