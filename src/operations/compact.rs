//! `keytrail compact`: rewrites the partitions that hold several small files into large files in
//! the table's sort order, committed as one Delta transaction that changes no data.
//!
//! Each selected partition's small files (each sorted) are merged row by row into new files
//! rolled at the target size, written the way `convert` writes (staged locally, or streamed to
//! S3) and listed in a pending record first, so a killed compaction leaves nothing behind. The
//! commit removes exactly the files that were read: a convert that appends meanwhile commits
//! beside it; a partition another writer changed (an overwrite, another compaction) is skipped.

use std::collections::BTreeMap;
use std::path::Path;

use arrow::error::ArrowError;
use serde::Serialize;
use tracing::{info, info_span};

use super::OperationError;
use crate::dataset::table::TableFile;
use crate::dataset::{OutputMode, Partitioning, Rewrite, Table, UploadBudget, prepare_output};
use crate::schema::Schema;
use crate::store::Stores;
use crate::write::{RunReader, WriteOptions, rewrite_partition};

/// What to compact.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// Files at least this large are left alone; new files roll at this size.
    pub target_file_bytes: u64,
    /// A partition is rewritten when it holds at least this many small files.
    pub min_files: usize,
    /// Only partitions whose path holds every one of these `key=value` segments (all if empty).
    pub partitions: Vec<String>,
    /// Memory, threads and compression of the new files.
    pub write: WriteOptions,
}

impl Default for CompactOptions {
    fn default() -> Self {
        let write = WriteOptions::default();
        CompactOptions {
            target_file_bytes: write.target_file_bytes,
            min_files: 2,
            partitions: Vec::new(),
            write,
        }
    }
}

/// One partition compacted (or skipped).
#[derive(Debug, Clone, Serialize)]
pub struct PartitionCompaction {
    pub partition: String,
    pub files_before: usize,
    pub files_after: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub rows: u64,
}

/// What a compaction did.
#[derive(Debug, Clone, Serialize)]
pub struct CompactSummary {
    pub table: String,
    /// The version that holds the compaction; none when nothing needed it.
    pub version: Option<u64>,
    pub compacted: Vec<PartitionCompaction>,
    /// Partitions another writer changed while they were rewritten.
    pub skipped: Vec<String>,
    /// Bytes read from the replaced files.
    pub bytes_read: u64,
    pub seconds: f64,
}

/// Compacts the table at `target` (a directory or an `s3://` URL).
pub fn compact(target: &Path, options: &CompactOptions) -> Result<CompactSummary, OperationError> {
    let started = std::time::Instant::now();
    let stores = Stores::new()?;
    let target = stores.table_target(target)?;
    let _span = info_span!("compact", table = %target.location).entered();
    let table = Table::open(target.location.clone(), stores.handle().clone())?;
    if !table.exists() {
        return Err(OperationError::NoTable(target.location.to_string()));
    }
    let description = table.description()?;
    let partitioning: Partitioning = description
        .partition_by
        .join(",")
        .parse()
        .map_err(|e| OperationError::Invalid(format!("{}: {e}", target.location)))?;
    let file_schema = Schema::builtin().table_arrow_schema(description.keeps_raw);
    let output = prepare_output(
        target.location.clone(),
        target.local_root.as_deref(),
        OutputMode::Incremental,
        &partitioning,
        &file_schema,
        stores.handle().clone(),
        UploadBudget::within(options.write.memory_limit_bytes),
    )?;
    let mut write = options.write.clone();
    write.target_file_bytes = options.target_file_bytes;
    write.partitioning = partitioning;

    let candidates = small_files_by_partition(output.table_files(), options);
    // Each chosen partition's files, bytes and rows (when the log counts them) before.
    let before: BTreeMap<&str, (usize, u64, Option<u64>)> = candidates
        .iter()
        .map(|(partition, files)| {
            let bytes = files.iter().map(|f| f.size).sum();
            (
                partition.as_str(),
                (files.len(), bytes, files.iter().map(|f| f.rows).sum()),
            )
        })
        .collect();
    let mut rewrites = Vec::new();
    for (partition, files) in &candidates {
        let _span = info_span!("compact_partition", partition = %partition, files = files.len()).entered();
        let runs: Vec<RunReader> = files
            .iter()
            .map(|file| -> Result<RunReader, OperationError> {
                let reader = output.file_reader(file);
                let batches = reader
                    .batches(None)
                    .map_err(|e| OperationError::Invalid(format!("{}: {e}", reader.name())))?;
                Ok(Box::new(
                    batches.map(|b| b.map_err(|e| ArrowError::ExternalError(Box::new(e)))),
                ))
            })
            .collect::<Result<_, _>>()?;
        let written = rewrite_partition(&output, &file_schema, &write, partition, runs)?;
        rewrites.push(Rewrite {
            partition: partition.clone(),
            files: written,
            replaced: files.iter().map(|f| f.path.clone()).collect(),
        });
    }
    let rewritten = output.commit_rewrite(rewrites, options.target_file_bytes)?;
    let compacted: Vec<PartitionCompaction> = rewritten
        .committed
        .iter()
        .map(|rewrite| {
            let (files_before, bytes_before, _) = before[rewrite.partition.as_str()];
            PartitionCompaction {
                partition: rewrite.partition.clone(),
                files_before,
                files_after: rewrite.files.len(),
                bytes_before,
                bytes_after: rewrite.files.iter().map(|f| f.bytes).sum(),
                rows: rewrite.files.iter().map(|f| f.rows).sum(),
            }
        })
        .collect();
    for partition in &compacted {
        let (_, _, rows_before) = before[partition.partition.as_str()];
        if let Some(rows_before) = rows_before
            && rows_before != partition.rows
        {
            // The log's counts and the rewrite disagree: say so loudly (the rows were merged, not
            // filtered, so this means the log's statistics were wrong).
            tracing::warn!(partition = %partition.partition, rows_before, rows_after = partition.rows, "row counts differ");
        }
    }
    info!(version = ?rewritten.version, partitions = compacted.len(), "compacted");
    Ok(CompactSummary {
        table: target.location.to_string(),
        version: rewritten.version,
        compacted,
        skipped: rewritten.skipped.into_iter().map(|r| r.partition).collect(),
        bytes_read: before.values().map(|(_, bytes, _)| bytes).sum(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The small files of each partition that holds at least `min_files` of them (and matches the
/// partition filter), oldest first.
fn small_files_by_partition(
    files: &[TableFile],
    options: &CompactOptions,
) -> BTreeMap<String, Vec<TableFile>> {
    let mut by_partition: BTreeMap<String, Vec<TableFile>> = BTreeMap::new();
    for file in files {
        if file.size >= options.target_file_bytes {
            continue;
        }
        let partition = match file.path.rsplit_once('/') {
            Some((dir, _)) => dir.to_string(),
            None => String::new(),
        };
        let segments: Vec<&str> = partition.split('/').collect();
        if options
            .partitions
            .iter()
            .all(|wanted| segments.contains(&wanted.as_str()))
        {
            by_partition.entry(partition).or_default().push(file.clone());
        }
    }
    by_partition.retain(|_, files| files.len() >= options.min_files.max(2));
    for files in by_partition.values_mut() {
        files.sort_by(|a, b| a.path.cmp(&b.path));
    }
    by_partition
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64) -> TableFile {
        TableFile {
            path: path.to_string(),
            size,
            rows: Some(1),
            partition_values: Default::default(),
        }
    }

    #[test]
    fn only_partitions_with_several_small_files_are_chosen() {
        let files = [
            file("region=a/event_date=1/p1.parquet", 10),
            file("region=a/event_date=1/p2.parquet", 10),
            file("region=a/event_date=1/big.parquet", 1000),
            file("region=a/event_date=2/p1.parquet", 10),
            file("region=b/event_date=1/p1.parquet", 10),
            file("region=b/event_date=1/p2.parquet", 10),
        ];
        let options = CompactOptions {
            target_file_bytes: 100,
            ..CompactOptions::default()
        };
        let chosen = small_files_by_partition(&files, &options);
        assert_eq!(
            chosen.keys().collect::<Vec<_>>(),
            ["region=a/event_date=1", "region=b/event_date=1"]
        );
        assert_eq!(chosen["region=a/event_date=1"].len(), 2, "the big file stays");
        let only_b = CompactOptions {
            partitions: vec!["region=b".into()],
            ..options
        };
        assert_eq!(
            small_files_by_partition(&files, &only_b)
                .keys()
                .collect::<Vec<_>>(),
            ["region=b/event_date=1"]
        );
    }
}
