//! How a dataset is partitioned: the keys a user chooses, their column names, and how a value
//! becomes a Hive-style directory name.

use std::fmt;
use std::str::FromStr;

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

/// A partition key list that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartitionError {
    #[error("unknown partition key `{0}` (choose from account, region, date, year, month, day, service)")]
    UnknownKey(String),
    #[error("partition key `{0}` is given twice")]
    Repeated(PartitionKey),
}

impl FromStr for PartitionKey {
    type Err = PartitionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "account" | "account_id" => PartitionKey::Account,
            "region" => PartitionKey::Region,
            "date" | "event_date" | "dt" => PartitionKey::Date,
            "year" => PartitionKey::Year,
            "month" => PartitionKey::Month,
            "day" => PartitionKey::Day,
            "service" | "source" | "event_source" => PartitionKey::Service,
            other => return Err(PartitionError::UnknownKey(other.to_string())),
        })
    }
}

/// An ordered list of partition keys. The default, `region,date`, suits Athena partition
/// projection and Spark's partition discovery, and keeps one day of one Region per directory.
///
/// ```
/// use keytrail::dataset::Partitioning;
///
/// let partitioning: Partitioning = "account, region,date".parse().unwrap();
/// assert_eq!(partitioning.to_string(), "account,region,date");
/// assert_eq!("none".parse::<Partitioning>().unwrap().keys(), &[]);
/// assert_eq!(Partitioning::default().to_string(), "region,date");
/// assert!("region,region".parse::<Partitioning>().is_err());
/// ```
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
    pub fn new(keys: Vec<PartitionKey>) -> Result<Partitioning, PartitionError> {
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].contains(key) {
                return Err(PartitionError::Repeated(*key));
            }
        }
        Ok(Partitioning { keys })
    }

    pub fn keys(&self) -> &[PartitionKey] {
        &self.keys
    }

    /// The partition column names, in directory order.
    pub fn column_names(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.column_name().to_string()).collect()
    }
}

/// Comma-separated keys in directory order, or `none` (an empty list) for no partitions.
impl FromStr for Partitioning {
    type Err = PartitionError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim().eq_ignore_ascii_case("none") || text.trim().is_empty() {
            return Partitioning::new(Vec::new());
        }
        let keys = text
            .split(',')
            .map(str::parse::<PartitionKey>)
            .collect::<Result<Vec<_>, _>>()?;
        Partitioning::new(keys)
    }
}

impl fmt::Display for Partitioning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.keys.is_empty() {
            return f.write_str("none");
        }
        let names: Vec<String> = self.keys.iter().map(ToString::to_string).collect();
        f.write_str(&names.join(","))
    }
}

/// Appends a partition value to a directory name, escaped the way Hive does, so that `/`, `=`
/// and friends stay inside one directory name and every reader decodes the same value. A missing
/// or empty value is Hive's [`DEFAULT_PARTITION`].
/// The partition values of a data file at `path` (relative to the table root, in Hive-style
/// directories written by [`push_partition_value`]), in `partitioning`'s order; null for Hive's
/// default partition.
///
/// ```
/// use keytrail::dataset::{Partitioning, partitioning::partition_values};
///
/// let values = partition_values("region=us-east-1/event_date=2024-05-01/part-1.parquet", &Partitioning::default());
/// assert_eq!(values, [("region".into(), Some("us-east-1".into())), ("event_date".into(), Some("2024-05-01".into()))]);
/// let odd = partition_values("region=a%2Fb/event_date=__HIVE_DEFAULT_PARTITION__/p.parquet", &Partitioning::default());
/// assert_eq!(odd[0].1.as_deref(), Some("a/b"));
/// assert_eq!(odd[1].1, None);
/// ```
pub fn partition_values(path: &str, partitioning: &Partitioning) -> Vec<(String, Option<String>)> {
    let directories: Vec<&str> = path.split('/').collect();
    partitioning
        .column_names()
        .into_iter()
        .map(|column| {
            let prefix = format!("{column}=");
            let value = directories
                .iter()
                .find_map(|d| d.strip_prefix(prefix.as_str()))
                .filter(|v| *v != DEFAULT_PARTITION)
                .map(unescape);
            (column, value)
        })
        .collect()
}

/// Undoes [`escape_into`]'s `%XX` escapes.
fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn push_partition_value(value: Option<&str>, out: &mut String) {
    match value.filter(|v| !v.is_empty()) {
        Some(value) => escape_into(value, out),
        None => out.push_str(DEFAULT_PARTITION),
    }
}

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
        let escaped = |value| {
            let mut out = String::new();
            push_partition_value(value, &mut out);
            out
        };
        assert_eq!(escaped(Some("us-east-1")), "us-east-1");
        assert_eq!(escaped(Some("a/b=c:d")), "a%2Fb%3Dc%3Ad");
        assert_eq!(escaped(Some("..")), "%2E%2E");
        assert_eq!(escaped(Some("")), DEFAULT_PARTITION);
        assert_eq!(escaped(None), DEFAULT_PARTITION);
    }

    #[test]
    fn parses_keys_and_rejects_duplicates() {
        let keys: Vec<PartitionKey> = "account,region,date"
            .split(',')
            .map(|k| k.parse().unwrap())
            .collect();
        assert_eq!(Partitioning::new(keys).unwrap().keys().len(), 3);
        assert!("nope".parse::<PartitionKey>().is_err());
        assert_eq!(
            Partitioning::new(vec![PartitionKey::Day, PartitionKey::Day]),
            Err(PartitionError::Repeated(PartitionKey::Day))
        );
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
