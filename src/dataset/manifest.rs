//! The manifest of converted inputs: what a run records of each input it read to the end, the
//! record of the run that goes into its Delta commit, and the copies of those records kept under
//! `_keytrail/commits/` so a later `--incremental` run finds every converted input without
//! reading the whole Delta log.
//!
//! The commit's `commitInfo` is the truth (it lands atomically with the data); a copy is written
//! right after the commit, and one missing (a run killed in between) is made again from the
//! log by the next run that looks.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use super::layout::{COMMITS_DIR, META_DIR};
use super::table::{Table, TableError};

/// An input a run converted, as recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRecord {
    /// A file's absolute path, or an object's URL.
    pub path: String,
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub modified: Option<i128>,
    /// An object's ETag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// xxh3-128 of the input's bytes as stored (compressed or not), hex.
    pub hash: String,
}

impl InputRecord {
    /// Whether `current` (an entry made before reading, without a hash) has this record's size,
    /// modification time and ETag: an input that kept them is taken as unchanged without
    /// reading it.
    pub fn same_metadata(&self, current: &InputRecord) -> bool {
        self.size == current.size
            && self.modified == current.modified
            && (self.etag.is_none() || current.etag.is_none() || self.etag == current.etag)
    }

    /// Whether both records are of the same input in the same state.
    pub fn same_input(&self, other: &InputRecord) -> bool {
        self.path == other.path && self.same_metadata(other)
    }
}

/// keytrail's record of one run, in its Delta commit (`commitInfo.keytrail`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRecord {
    pub run_id: String,
    /// The how-manieth keytrail commit of the table this is (the `txn` version it carries).
    #[serde(default)]
    pub sequence: u64,
    /// Whether the commit replaced the table's data (`--overwrite`).
    #[serde(default)]
    pub replaces: bool,
    pub rows: u64,
    pub writer: String,
    #[serde(default)]
    pub inputs: Vec<InputRecord>,
}

/// The path of the copy of the record of the commit at `version`.
fn copy_path(version: u64) -> String {
    format!("{META_DIR}/{COMMITS_DIR}/{version:020}.json")
}

/// Writes the copy of a commit's record (after the commit landed).
pub fn keep_copy(table: &Table, version: u64, record: &CommitRecord) -> Result<(), TableError> {
    let json = serde_json::to_vec(record).map_err(|e| TableError::Invalid {
        table: table.location().to_string(),
        problem: format!("recording the run: {e}"),
    })?;
    table.put_object(&copy_path(version), json)
}

/// Inputs whose events the table's current data holds (converted since its last overwrite), by
/// path. Copies missing from `_keytrail/commits/` are made again from the log.
pub fn converted_inputs(table: &Table) -> Result<BTreeMap<String, InputRecord>, TableError> {
    let mut converted = BTreeMap::new();
    for (_, record) in commit_records(table)? {
        if record.replaces {
            converted.clear();
        }
        converted.extend(record.inputs.into_iter().map(|i| (i.path.clone(), i)));
    }
    Ok(converted)
}

/// Every keytrail commit's record, by version.
pub fn commit_records(table: &Table) -> Result<Vec<(u64, CommitRecord)>, TableError> {
    let Some(latest) = table.version() else {
        return Ok(Vec::new());
    };
    let expected = table.keytrail_commits()?;
    let mut records: BTreeMap<u64, CommitRecord> = BTreeMap::new();
    let prefix = format!("{META_DIR}/{COMMITS_DIR}/");
    for path in table.list_objects(&prefix)? {
        let Some(version) = path
            .strip_prefix(&prefix)
            .and_then(|name| name.strip_suffix(".json"))
            .and_then(|v| v.parse::<u64>().ok())
        else {
            continue;
        };
        if version > latest {
            continue; // committed after the snapshot this run reads
        }
        let bytes = table.get_object(&path)?;
        let record: CommitRecord = serde_json::from_slice(&bytes).map_err(|e| TableError::Invalid {
            table: table.location().to_string(),
            problem: format!("{path}: unreadable commit record: {e}"),
        })?;
        records.insert(version, record);
    }
    if (records.len() as u64) < expected {
        debug!(
            found = records.len(),
            expected, "some commit records are not copied yet"
        );
        let known: BTreeSet<u64> = records.keys().copied().collect();
        for (version, record) in table.commit_records_in((0..=latest).filter(|v| !known.contains(v)))? {
            info!(version, run = %record.run_id, "copying the record of a commit");
            keep_copy(table, version, &record)?;
            records.insert(version, record);
        }
        if (records.len() as u64) < expected {
            return Err(TableError::Invalid {
                table: table.location().to_string(),
                problem: format!(
                    "the table has {expected} keytrail commits but the records of only {} are in {META_DIR}/{COMMITS_DIR}/ or the Delta log; the inputs converted by the others are unknown",
                    records.len()
                ),
            });
        }
    }
    Ok(records.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str, size: u64, modified: Option<i128>, etag: Option<&str>) -> InputRecord {
        InputRecord {
            path: path.into(),
            size,
            modified,
            etag: etag.map(String::from),
            hash: String::new(),
        }
    }

    #[test]
    fn an_input_is_the_same_while_its_size_time_and_etag_are() {
        let before = record("s3://b/k", 10, Some(1), Some("\"e1\""));
        assert!(before.same_input(&record("s3://b/k", 10, Some(1), Some("\"e1\""))));
        assert!(before.same_input(&record("s3://b/k", 10, Some(1), None)));
        assert!(!before.same_input(&record("s3://b/k", 10, Some(1), Some("\"e2\""))));
        assert!(!before.same_input(&record("s3://b/k", 11, Some(1), Some("\"e1\""))));
        assert!(!before.same_input(&record("s3://b/k", 10, Some(2), Some("\"e1\""))));
        assert!(!before.same_input(&record("s3://b/other", 10, Some(1), Some("\"e1\""))));
    }
}
