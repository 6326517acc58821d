//! `keytrail upgrade`: makes a local dataset of keytrail 0.1 (Parquet files with run records in
//! `_keytrail/runs/`) a Delta Lake table in place, without rewriting its data files.
//!
//! The files of every committed run are added to a new Delta table in one commit, whose keytrail
//! record lists every input the runs converted (so `--incremental` goes on where they stopped);
//! the old run records are removed only after that commit landed. Interrupted, it can be run
//! again: a table that exists but holds no keytrail commit yet is finished.

use std::fs;
use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use serde::Deserialize;
use tokio::runtime::Handle;
use tracing::info;

use super::layout::{MARKER_FILE, META_DIR, RUNS_DIR, STAGING_PREFIX};
use super::manifest::{self, CommitRecord};
use super::table::{CommitOutcome, PublishedFile, Table, TableLocation};
use super::{DataFile, DatasetError, DatasetMarker, InputRecord, Partitioning, io_error, partitioning};
use crate::schema::Schema;

/// What an upgrade did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgraded {
    pub runs: usize,
    pub files: usize,
    pub rows: u64,
    pub inputs: usize,
    pub version: u64,
}

/// A run record of keytrail 0.1 (`_keytrail/runs/<run>.json`).
#[derive(Debug, Deserialize)]
struct LegacyRun {
    run_id: String,
    /// Absent in records from before the two-step commit, which were all committed.
    #[serde(default)]
    state: Option<String>,
    files: Vec<String>,
    #[serde(default)]
    inputs: Vec<InputRecord>,
}

/// Upgrades the dataset in `root` (see the module docs).
pub fn upgrade(root: &Path, runtime: Handle) -> Result<Upgraded, DatasetError> {
    let marker = DatasetMarker::read(root)?;
    let schema = Schema::builtin();
    let corrupt = |problem| DatasetError::Corrupt {
        path: root.join(META_DIR),
        problem,
    };
    if marker.schema_version != schema.version() {
        return Err(corrupt(
            "written with another schema version: convert its inputs again instead of upgrading",
        ));
    }
    let partitioning: Partitioning = marker
        .partition_by
        .join(",")
        .parse()
        .map_err(|_| corrupt("its partition columns are not keytrail's"))?;
    let has_staging = fs::read_dir(root)
        .map_err(io_error(root))?
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().starts_with(STAGING_PREFIX));
    let runs = legacy_runs(root)?;
    if has_staging || runs.iter().any(|r| r.state.as_deref() == Some("committing")) {
        return Err(corrupt(
            "a run of keytrail 0.1 was interrupted here: finish it by running keytrail 0.1 once more, then upgrade",
        ));
    }
    let mut table = Table::open(TableLocation::local(root)?, runtime)?;
    if table.exists() && table.keytrail_commits()? > 0 {
        return Err(corrupt(
            "already upgraded: the Delta table holds keytrail commits",
        ));
    }
    if !table.exists() {
        table.create(&schema.arrow_schema(), &partitioning)?;
    }
    // Every run is committed: an interrupted one was refused above.
    let files = runs
        .iter()
        .flat_map(|r| &r.files)
        .map(|path| published_file(root, path, &partitioning))
        .collect::<Result<Vec<_>, _>>()?;
    let rows = files.iter().map(|f| f.file.rows).sum();
    let record = CommitRecord {
        run_id: format!("upgrade-{}", runs.last().map_or("empty", |r| r.run_id.as_str())),
        sequence: 0,
        replaces: false,
        rows,
        writer: format!("keytrail {} (upgrade)", env!("CARGO_PKG_VERSION")),
        inputs: runs.iter().flat_map(|r| r.inputs.iter().cloned()).collect(),
    };
    let (version, record) = match table.commit(&files, record, false, None)? {
        CommitOutcome::Committed { version, record } => (version, record),
        CommitOutcome::InputsTaken(_) => {
            return Err(corrupt(
                "another keytrail run committed to the table during the upgrade",
            ));
        }
    };
    manifest::keep_copy(&table, version, &record)?;
    let runs_dir = root.join(META_DIR).join(RUNS_DIR);
    fs::remove_dir_all(&runs_dir).map_err(io_error(&runs_dir))?;
    let marker_path = root.join(META_DIR).join(MARKER_FILE);
    fs::remove_file(&marker_path).map_err(io_error(&marker_path))?;
    info!(version, files = files.len(), "upgraded to a Delta table");
    Ok(Upgraded {
        runs: runs.len(),
        files: files.len(),
        rows,
        inputs: record.inputs.len(),
        version,
    })
}

fn legacy_runs(root: &Path) -> Result<Vec<LegacyRun>, DatasetError> {
    let dir = root.join(META_DIR).join(RUNS_DIR);
    let mut runs = Vec::new();
    if !dir.is_dir() {
        return Ok(runs);
    }
    for entry in fs::read_dir(&dir).map_err(io_error(&dir))?.filter_map(Result::ok) {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = fs::read(&path).map_err(io_error(&path))?;
        let run: LegacyRun = serde_json::from_slice(&text).map_err(|source| DatasetError::Json {
            path: path.clone(),
            what: "run record",
            source,
        })?;
        runs.push(run);
    }
    runs.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    Ok(runs)
}

/// A committed data file as the Delta log needs it: size, rows and statistics from its footer.
fn published_file(
    root: &Path,
    relative: &str,
    partitioning: &Partitioning,
) -> Result<PublishedFile, DatasetError> {
    let path = root.join(relative);
    let file = fs::File::open(&path).map_err(io_error(&path))?;
    let bytes = file.metadata().map_err(io_error(&path))?.len();
    let reader = SerializedFileReader::new(file).map_err(|_| DatasetError::Corrupt {
        path: path.clone(),
        problem: "not a readable Parquet file",
    })?;
    let metadata = reader.metadata();
    let arrow_schema = Schema::builtin().arrow_schema();
    Ok(PublishedFile {
        partition_values: partitioning::partition_values(relative, partitioning),
        file: DataFile {
            path: relative.to_string(),
            rows: metadata.file_metadata().num_rows().max(0) as u64,
            bytes,
            stats: Some(super::stats::delta_stats(metadata, &arrow_schema)),
        },
    })
}
