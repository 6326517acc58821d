//! The manifest of converted inputs: what a run records of each input it read to the end, the
//! record of the run that goes into its Delta commit, and the copies of those records kept under
//! `_keytrail/commits/` so a later `--incremental` run finds every converted input without
//! reading the whole Delta log.
//!
//! The commit's `commitInfo` is the truth (it lands atomically with the data); a copy is written
//! right after the commit, and one missing (a run killed in between) is made again from the
//! log by the next run that looks. Every [`SNAPSHOT_EVERY`] commits the reader rolls the copies
//! up into one snapshot of the converted inputs (`_keytrail/inputs/<version>.json`) and deletes
//! the copies it covers, so a table with years of hourly commits is read in a few requests.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use super::layout::{COMMITS_DIR, INPUTS_DIR, META_DIR};
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

/// Copies read after the newest snapshot that make the reader write a new one.
pub const SNAPSHOT_EVERY: usize = 100;

/// [`SNAPSHOT_EVERY`]; tests (`test-hooks` only) set another with `KEYTRAIL_SNAPSHOT_EVERY`.
#[cfg(feature = "test-hooks")]
fn snapshot_every() -> usize {
    std::env::var("KEYTRAIL_SNAPSHOT_EVERY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SNAPSHOT_EVERY)
}

#[cfg(not(feature = "test-hooks"))]
fn snapshot_every() -> usize {
    SNAPSHOT_EVERY
}

/// Every input converted as of a version (since the last overwrite), by path.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct InputsSnapshot {
    version: u64,
    /// The keytrail commits up to `version` (the `txn` version of the last one).
    keytrail_commits: u64,
    inputs: Vec<InputRecord>,
}

fn snapshot_path(version: u64) -> String {
    format!("{META_DIR}/{INPUTS_DIR}/{version:020}.json")
}

/// The versions of the objects `<prefix><version:020>.json` under `prefix`, ascending.
fn versions_under(table: &Table, prefix: &str) -> Result<Vec<(u64, String)>, TableError> {
    let mut versions: Vec<(u64, String)> = table
        .list_objects(prefix)?
        .into_iter()
        .filter_map(|path| {
            let version = path
                .strip_prefix(prefix)?
                .strip_suffix(".json")?
                .parse::<u64>()
                .ok()?;
            Some((version, path))
        })
        .collect();
    versions.sort();
    Ok(versions)
}

fn read_json<T: serde::de::DeserializeOwned>(table: &Table, path: &str, what: &str) -> Result<T, TableError> {
    let bytes = table.get_object(path)?;
    serde_json::from_slice(&bytes).map_err(|e| TableError::Invalid {
        table: table.location().to_string(),
        problem: format!("{path}: unreadable {what}: {e}"),
    })
}

/// The newest snapshot of the converted inputs at or before the loaded version.
fn newest_snapshot(table: &Table, latest: u64) -> Result<Option<InputsSnapshot>, TableError> {
    let prefix = format!("{META_DIR}/{INPUTS_DIR}/");
    match versions_under(table, &prefix)?
        .into_iter()
        .rfind(|(v, _)| *v <= latest)
    {
        Some((_, path)) => read_json(table, &path, "snapshot of converted inputs").map(Some),
        None => Ok(None),
    }
}

/// Inputs whose events the table's current data holds (converted since its last overwrite), by
/// path. Copies missing from `_keytrail/commits/` are made again from the log; many copies
/// since the last snapshot are rolled up into a new one.
pub fn converted_inputs(table: &Table) -> Result<BTreeMap<String, InputRecord>, TableError> {
    let Some(latest) = table.version() else {
        return Ok(BTreeMap::new());
    };
    // A reader that rolls copies up deletes them after writing its snapshot: one that listed
    // the older snapshot may then miss copies; it looks again.
    let mut attempts = 0;
    let (snapshot, records) = loop {
        attempts += 1;
        let snapshot = newest_snapshot(table, latest)?;
        match commit_records_after(table, snapshot.as_ref(), latest) {
            Ok(records) => break (snapshot, records),
            Err(_) if attempts < 3 => continue,
            Err(error) => return Err(error),
        }
    };
    let mut converted: BTreeMap<String, InputRecord> = snapshot
        .as_ref()
        .map(|s| s.inputs.iter().map(|i| (i.path.clone(), i.clone())).collect())
        .unwrap_or_default();
    for (_, record) in &records {
        if record.replaces {
            converted.clear();
        }
        converted.extend(record.inputs.iter().map(|i| (i.path.clone(), i.clone())));
    }
    if records.len() >= snapshot_every()
        && let Some((version, last)) = records.last()
    {
        roll_up(table, *version, last.sequence, &converted, &records);
    }
    Ok(converted)
}

/// Writes the snapshot of `converted` at `version`, then deletes the copies it covers. Failures
/// are only logged: the copies stay the truth until both steps are done.
fn roll_up(
    table: &Table,
    version: u64,
    keytrail_commits: u64,
    converted: &BTreeMap<String, InputRecord>,
    covered: &[(u64, CommitRecord)],
) {
    let snapshot = InputsSnapshot {
        version,
        keytrail_commits,
        inputs: converted.values().cloned().collect(),
    };
    let written = serde_json::to_vec(&snapshot)
        .map_err(|e| e.to_string())
        .and_then(|json| {
            table
                .put_object(&snapshot_path(version), json)
                .map_err(|e| e.to_string())
        });
    if let Err(error) = written {
        tracing::warn!("could not roll the commit records up: {error}");
        return;
    }
    info!(
        version,
        inputs = snapshot.inputs.len(),
        copies = covered.len(),
        "rolled the commit records up"
    );
    for (covered_version, _) in covered {
        if let Err(error) = table.delete_object(&copy_path(*covered_version)) {
            tracing::warn!("{error}");
            return;
        }
    }
}

/// Every keytrail commit's record after `snapshot` up to `latest`, by version.
fn commit_records_after(
    table: &Table,
    snapshot: Option<&InputsSnapshot>,
    latest: u64,
) -> Result<Vec<(u64, CommitRecord)>, TableError> {
    let after = snapshot.map(|s| s.version);
    let expected = table.keytrail_commits()? - snapshot.map_or(0, |s| s.keytrail_commits);
    let mut records: BTreeMap<u64, CommitRecord> = BTreeMap::new();
    let prefix = format!("{META_DIR}/{COMMITS_DIR}/");
    for (version, path) in versions_under(table, &prefix)? {
        // Covered by the snapshot, or committed after the version this run reads.
        if after.is_some_and(|after| version <= after) || version > latest {
            continue;
        }
        records.insert(version, read_json(table, &path, "commit record")?);
    }
    if (records.len() as u64) < expected {
        debug!(
            found = records.len(),
            expected, "some commit records are not copied yet"
        );
        let first = after.map_or(0, |v| v + 1);
        let known: BTreeSet<u64> = records.keys().copied().collect();
        for (version, record) in table.commit_records_in((first..=latest).filter(|v| !known.contains(v)))? {
            info!(version, run = %record.run_id, "copying the record of a commit");
            keep_copy(table, version, &record)?;
            records.insert(version, record);
        }
        if (records.len() as u64) < expected {
            return Err(TableError::Invalid {
                table: table.location().to_string(),
                problem: format!(
                    "the table has {expected} keytrail commits after the last snapshot of converted inputs but the records of only {} are in {META_DIR}/{COMMITS_DIR}/ or the Delta log; the inputs converted by the others are unknown",
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
