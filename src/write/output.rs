//! The output directory: refusing to mix runs, staging, and committing files into place.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use super::{Partitioning, WriteError, WrittenFile, io_error};
use crate::schema::Schema;

/// Folder (ignored by Hive, Spark, Athena, DuckDB and DataFusion) holding keytrail's own records.
pub const META_DIR: &str = "_keytrail";
const MARKER_FILE: &str = "dataset.json";
const RUNS_DIR: &str = "runs";
/// Folder under [`META_DIR`] with one quarantine folder per run.
pub const QUARANTINE_DIR: &str = "quarantine";
const STAGING_PREFIX: &str = ".keytrail-staging-";

/// `_keytrail/dataset.json`: what kind of dataset this directory holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetMarker {
    pub schema: String,
    pub schema_version: u32,
    pub partition_by: Vec<String>,
    pub writer: String,
}

/// `_keytrail/runs/<run>.json`: the files one run committed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunRecord {
    run_id: String,
    files: Vec<String>,
    rows: u64,
}

/// An output directory prepared for one run.
#[derive(Debug)]
pub struct OutputDir {
    root: PathBuf,
    run_id: String,
    staging: PathBuf,
    replaces: Vec<PathBuf>,
    marker: DatasetMarker,
}

/// Checks and prepares `root` for a new run.
///
/// An empty or missing directory is used as is. A directory holding a keytrail dataset is only
/// replaced with `overwrite` (its files are deleted when the new ones are committed, not before).
/// Any other non-empty directory is refused, so a run never mixes with, or deletes, foreign files.
pub fn prepare_output(
    root: &Path,
    overwrite: bool,
    partitioning: &Partitioning,
) -> Result<OutputDir, WriteError> {
    fs::create_dir_all(root).map_err(io_error(root))?;
    let meta = root.join(META_DIR);
    let mut replaces = Vec::new();
    let entries: Vec<_> = fs::read_dir(root)
        .map_err(io_error(root))?
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with(STAGING_PREFIX))
        .collect();
    if !entries.is_empty() {
        if !meta.join(MARKER_FILE).is_file() {
            return Err(WriteError::Refused(format!(
                "{}: the output directory is not empty and holds no keytrail dataset; \
                 choose a new or empty directory",
                root.display()
            )));
        }
        let previous = previous_files(root)?;
        if !overwrite {
            return Err(WriteError::Refused(format!(
                "{}: the output directory already holds a keytrail dataset ({} files); \
                 pass --overwrite to replace it",
                root.display(),
                previous.len()
            )));
        }
        replaces = previous;
    }
    // Staging areas left by runs that were killed are never committed: remove them.
    for entry in fs::read_dir(root).map_err(io_error(root))?.filter_map(Result::ok) {
        if entry.file_name().to_string_lossy().starts_with(STAGING_PREFIX) {
            let path = entry.path();
            info!(path = %path.display(), "removing the staging area of an interrupted run");
            fs::remove_dir_all(&path).map_err(io_error(&path))?;
        }
    }
    let run_id = new_run_id();
    let staging = root.join(format!("{STAGING_PREFIX}{run_id}"));
    let spill = staging.join("_spill");
    fs::create_dir_all(&spill).map_err(io_error(&spill))?;
    let schema = Schema::builtin();
    Ok(OutputDir {
        root: root.to_path_buf(),
        run_id,
        staging,
        replaces,
        marker: DatasetMarker {
            schema: schema.name().to_string(),
            schema_version: schema.version(),
            partition_by: partitioning
                .keys()
                .iter()
                .map(|k| k.column_name().to_string())
                .collect(),
            writer: format!("keytrail {}", env!("CARGO_PKG_VERSION")),
        },
    })
}

fn previous_files(root: &Path) -> Result<Vec<PathBuf>, WriteError> {
    let runs = root.join(META_DIR).join(RUNS_DIR);
    let mut files = Vec::new();
    if !runs.is_dir() {
        return Ok(files);
    }
    for entry in fs::read_dir(&runs)
        .map_err(io_error(&runs))?
        .filter_map(Result::ok)
    {
        let path = entry.path();
        let text = fs::read_to_string(&path).map_err(io_error(&path))?;
        let record: RunRecord = serde_json::from_str(&text).map_err(|e| WriteError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        files.extend(record.files.iter().map(|f| root.join(f)));
    }
    Ok(files)
}

fn new_run_id() -> String {
    let now = chrono::Utc::now();
    let nanos = now.timestamp_subsec_nanos() ^ std::process::id().rotate_left(16);
    format!("{}-{:08x}", now.format("%Y%m%dT%H%M%SZ"), nanos)
}

impl OutputDir {
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    pub(crate) fn staging_dir(&self) -> &Path {
        &self.staging
    }

    pub(crate) fn spill_dir(&self) -> PathBuf {
        self.staging.join("_spill")
    }

    /// Where this run's quarantine is written before it is committed.
    pub fn quarantine_staging_dir(&self) -> PathBuf {
        self.staging.join("_quarantine")
    }

    /// Moves the staged files (and quarantine) into place and records the run.
    pub fn commit(&self, files: &[WrittenFile]) -> Result<(), WriteError> {
        for old in &self.replaces {
            match fs::remove_file(old) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(old)(e)),
            }
            remove_empty_parents(old, &self.root);
        }
        let runs = self.root.join(META_DIR).join(RUNS_DIR);
        let quarantines = self.root.join(META_DIR).join(QUARANTINE_DIR);
        if !self.replaces.is_empty() {
            for dir in [&runs, &quarantines] {
                if dir.is_dir() {
                    fs::remove_dir_all(dir).map_err(io_error(dir))?;
                }
            }
        }
        let staged_quarantine = self.quarantine_staging_dir();
        if staged_quarantine.is_dir() {
            fs::create_dir_all(&quarantines).map_err(io_error(&quarantines))?;
            let to = quarantines.join(&self.run_id);
            fs::rename(&staged_quarantine, &to).map_err(io_error(&to))?;
        }
        for file in files {
            let from = self.staging.join(&file.path);
            let to = self.root.join(&file.path);
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent).map_err(io_error(parent))?;
            }
            fs::rename(&from, &to).map_err(io_error(&to))?;
            debug!(file = %to.display(), "committed");
        }
        fs::create_dir_all(&runs).map_err(io_error(&runs))?;
        write_json_atomically(&self.root.join(META_DIR).join(MARKER_FILE), &self.marker)?;
        let record = RunRecord {
            run_id: self.run_id.clone(),
            files: files.iter().map(|f| f.path.clone()).collect(),
            rows: files.iter().map(|f| f.rows).sum(),
        };
        write_json_atomically(&runs.join(format!("{}.json", self.run_id)), &record)?;
        fs::remove_dir_all(&self.staging).map_err(io_error(&self.staging))?;
        Ok(())
    }

    /// Removes the staging area of a run that failed.
    pub fn abandon(&self) {
        let _ = fs::remove_dir_all(&self.staging);
    }
}

fn remove_empty_parents(file: &Path, root: &Path) {
    let mut dir = file.parent();
    while let Some(d) = dir {
        if d == root || fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

fn write_json_atomically<T: Serialize>(path: &Path, value: &T) -> Result<(), WriteError> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(value).map_err(|e| WriteError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    fs::write(&tmp, text).map_err(io_error(&tmp))?;
    fs::rename(&tmp, path).map_err(io_error(path))
}
