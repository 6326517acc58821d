//! `keytrail info`: a user's first look at a table — version, files, rows, bytes, partitions,
//! small files, and the last commits (when, which keytrail run, how many inputs and events).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::OperationError;
use crate::dataset::table::{COMMIT_INFO_KEY, REWRITE_INFO_KEY};
use crate::dataset::{Table, manifest::CommitRecord};
use crate::store::Stores;

/// A file below this size counts as small: `compact` (by default) merges a partition's files
/// below it once it holds two or more.
pub const SMALL_FILE_BYTES: u64 = crate::write::options::DEFAULT_TARGET_FILE_BYTES;

/// One commit of the table's history.
#[derive(Debug, Clone, Serialize)]
pub struct CommitSummary {
    pub version: u64,
    /// RFC 3339, UTC.
    pub time: Option<String>,
    /// Delta's operation name: WRITE, OPTIMIZE, VACUUM START, ...
    pub operation: Option<String>,
    /// The keytrail run that made it, if one did.
    pub run_id: Option<String>,
    pub inputs: Option<usize>,
    pub rows: Option<u64>,
}

/// One partition's files.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionSummary {
    pub partition: String,
    pub files: usize,
    pub small_files: usize,
    pub rows: u64,
    pub bytes: u64,
}

/// What a table holds.
#[derive(Debug, Clone, Serialize)]
pub struct TableInfo {
    pub table: String,
    pub version: Option<u64>,
    pub schema: Option<String>,
    pub schema_version: Option<u32>,
    pub partition_by: Vec<String>,
    pub files: usize,
    pub rows: u64,
    pub bytes: u64,
    pub small_files: usize,
    /// Partitions with two or more small files (what `compact` would rewrite).
    pub compactable_partitions: usize,
    pub partitions: Vec<PartitionSummary>,
    /// The newest commits, newest first.
    pub last_commits: Vec<CommitSummary>,
}

/// Describes the table at `target`, with its `last` newest commits.
pub fn info(target: &Path, last: usize) -> Result<TableInfo, OperationError> {
    let stores = Stores::new()?;
    let target = stores.table_target(target)?;
    let table = Table::open(target.location.clone(), stores.handle().clone())?;
    if !table.exists() {
        return Err(OperationError::NoTable(target.location.to_string()));
    }
    let description = table.description()?;
    let files = table.files()?;
    let mut partitions: BTreeMap<String, PartitionSummary> = BTreeMap::new();
    for file in &files {
        let partition = file.path.rsplit_once('/').map_or("", |(dir, _)| dir).to_string();
        let entry = partitions.entry(partition.clone()).or_insert(PartitionSummary {
            partition,
            files: 0,
            small_files: 0,
            rows: 0,
            bytes: 0,
        });
        entry.files += 1;
        entry.small_files += usize::from(file.size < SMALL_FILE_BYTES);
        entry.rows += file.rows.unwrap_or(0);
        entry.bytes += file.size;
    }
    let version = table.version();
    let first = version.map_or(0, |v| v.saturating_sub(last.saturating_sub(1) as u64));
    let mut last_commits: Vec<CommitSummary> = match version {
        Some(version) if last > 0 => table
            .commit_infos_in(first..=version)?
            .into_iter()
            .map(|(version, info)| {
                let record = info
                    .info
                    .get(COMMIT_INFO_KEY)
                    .and_then(|v| serde_json::from_value::<CommitRecord>(v.clone()).ok());
                let rewrite_run = info
                    .info
                    .get(REWRITE_INFO_KEY)
                    .and_then(|v| v.get("run_id")?.as_str().map(str::to_string));
                CommitSummary {
                    version,
                    time: info
                        .timestamp
                        .and_then(chrono::DateTime::from_timestamp_millis)
                        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                    operation: info.operation.clone(),
                    run_id: record.as_ref().map(|r| r.run_id.clone()).or(rewrite_run),
                    inputs: record.as_ref().map(|r| r.inputs.len()),
                    rows: record.as_ref().map(|r| r.rows),
                }
            })
            .collect(),
        _ => Vec::new(),
    };
    last_commits.reverse();
    Ok(TableInfo {
        table: target.location.to_string(),
        version,
        schema: description.schema,
        schema_version: description.schema_version,
        partition_by: description.partition_by,
        files: files.len(),
        rows: files.iter().filter_map(|f| f.rows).sum(),
        bytes: files.iter().map(|f| f.size).sum(),
        small_files: partitions.values().map(|p| p.small_files).sum(),
        compactable_partitions: partitions.values().filter(|p| p.small_files >= 2).count(),
        partitions: partitions.into_values().collect(),
        last_commits,
    })
}
