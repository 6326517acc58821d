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

    /// The relative directory of each row, such as `region=us-east-1/event_date=2023-07-10`.
    pub fn row_paths(&self, batch: &RecordBatch) -> Vec<String> {
        let rows = batch.num_rows();
        if self.keys.is_empty() {
            return vec![String::new(); rows];
        }
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .expect("partition source columns exist in the schema")
        };
        let times = column("event_time").as_primitive::<TimestampMicrosecondType>();
        let mut paths: Vec<String> = vec![String::with_capacity(48); rows];
        for (k, key) in self.keys.iter().enumerate() {
            let strings: Option<&StringArray> = match key {
                PartitionKey::Account | PartitionKey::Region | PartitionKey::Service => {
                    Some(column(key.source_column()).as_string::<i32>())
                }
                _ => None,
            };
            for (row, path) in paths.iter_mut().enumerate() {
                if k > 0 {
                    path.push('/');
                }
                path.push_str(key.column_name());
                path.push('=');
                match strings {
                    Some(values) => {
                        let value = (!values.is_null(row))
                            .then(|| values.value(row))
                            .filter(|v| !v.is_empty());
                        match value {
                            Some(v) => escape_into(v, path),
                            None => path.push_str(DEFAULT_PARTITION),
                        }
                    }
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
        }
        paths
    }
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
}
