//! A run's output directory: refusing to mix runs, staging, and the crash-safe commit.
//!
//! A run writes everything under a hidden staging directory. To commit, it first records its
//! intent (`_keytrail/runs/<run>.json`, state `committing`: the files it will move in and the
//! runs it replaces), then renames the files into place, then marks the record `committed`.
//! A run killed at any point is finished by the next one: a `committing` record is rolled
//! forward (its staged files are still there); a staging area without one is discarded. Every
//! directory a commit changed is synced before the record says `committed`, so a commit
//! survives a power loss, not just a killed process.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use super::layout::{
    MARKER_FILE, META_DIR, QUARANTINE_DIR, RUNS_DIR, SPILL_DIR, STAGED_QUARANTINE_DIR, STAGING_PREFIX,
};
use super::{DataFile, DatasetError, DatasetMarker, InputRecord, Partitioning, io_error};

/// How a run treats a directory that already holds a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// Only an empty (or new) directory is accepted.
    Fresh,
    /// The existing dataset is replaced when this run commits.
    Overwrite,
    /// This run adds to the existing dataset, skipping inputs already converted.
    Incremental,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RunState {
    Committing,
    Committed,
}

fn committed() -> RunState {
    RunState::Committed
}

/// `_keytrail/runs/<run>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunRecord {
    run_id: String,
    /// Records from before the two-step commit have no state: they were written only once their
    /// files were in place, so they are committed.
    #[serde(default = "committed")]
    state: RunState,
    /// Parquet files, relative to the dataset root.
    files: Vec<String>,
    rows: u64,
    /// Runs whose files this run replaces (`--overwrite`).
    #[serde(default)]
    replaces_runs: Vec<String>,
    #[serde(default)]
    inputs: Vec<InputRecord>,
}

/// An output directory prepared for one run.
#[derive(Debug)]
pub struct OutputDir {
    root: PathBuf,
    run_id: String,
    staging: PathBuf,
    mode: OutputMode,
    marker: DatasetMarker,
    /// Committed runs found at start.
    previous: Vec<RunRecord>,
}

/// Checks and prepares `root` for a new run (finishing or discarding what a killed run left).
///
/// A directory holding a keytrail dataset is refused in [`OutputMode::Fresh`]; any other
/// non-empty directory is always refused, so a run never mixes with, or deletes, foreign files.
pub fn prepare_output(
    root: &Path,
    mode: OutputMode,
    partitioning: &Partitioning,
) -> Result<OutputDir, DatasetError> {
    fs::create_dir_all(root).map_err(io_error(root))?;
    recover(root)?;
    let meta = root.join(META_DIR);
    let previous = committed_runs(root)?;
    let foreign: Vec<_> = fs::read_dir(root)
        .map_err(io_error(root))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != META_DIR)
        .collect();
    let has_marker = meta.join(MARKER_FILE).is_file();
    if !has_marker && !foreign.is_empty() {
        return Err(DatasetError::NotADataset {
            root: root.to_path_buf(),
        });
    }
    let marker = DatasetMarker::current(partitioning);
    if !previous.is_empty() {
        let files: usize = previous.iter().map(|r| r.files.len()).sum();
        match mode {
            OutputMode::Fresh => {
                return Err(DatasetError::AlreadyADataset {
                    root: root.to_path_buf(),
                    files,
                });
            }
            OutputMode::Incremental => {
                let existing = DatasetMarker::read(root)?;
                if existing.partition_by != marker.partition_by
                    || existing.schema_version != marker.schema_version
                {
                    return Err(DatasetError::Mismatch {
                        root: root.to_path_buf(),
                        existing: Box::new(existing),
                        wanted: Box::new(marker),
                    });
                }
            }
            OutputMode::Overwrite => {}
        }
    }
    let run_id = new_run_id();
    let staging = root.join(format!("{STAGING_PREFIX}{run_id}"));
    let spill = staging.join(SPILL_DIR);
    fs::create_dir_all(&spill).map_err(io_error(&spill))?;
    if previous.is_empty() || mode == OutputMode::Overwrite {
        // The directory is a keytrail dataset from the start, so an interrupted first run is
        // recognised (and cleaned up) by the next one.
        fs::create_dir_all(root.join(META_DIR)).map_err(io_error(&meta))?;
        if previous.is_empty() {
            write_json_atomically(&meta.join(MARKER_FILE), &marker)?;
        }
    }
    Ok(OutputDir {
        root: root.to_path_buf(),
        run_id,
        staging,
        mode,
        marker,
        previous,
    })
}

fn run_records(root: &Path) -> Result<Vec<RunRecord>, DatasetError> {
    let runs = root.join(META_DIR).join(RUNS_DIR);
    let mut records = Vec::new();
    if !runs.is_dir() {
        return Ok(records);
    }
    for entry in fs::read_dir(&runs)
        .map_err(io_error(&runs))?
        .filter_map(Result::ok)
    {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = fs::read_to_string(&path).map_err(io_error(&path))?;
        let record: RunRecord = serde_json::from_str(&text).map_err(|source| DatasetError::Json {
            path: path.clone(),
            what: "run record",
            source,
        })?;
        records.push(record);
    }
    records.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    Ok(records)
}

fn committed_runs(root: &Path) -> Result<Vec<RunRecord>, DatasetError> {
    Ok(run_records(root)?
        .into_iter()
        .filter(|r| r.state == RunState::Committed)
        .collect())
}

/// Rolls forward commits that were interrupted, then removes staging areas nothing refers to.
fn recover(root: &Path) -> Result<(), DatasetError> {
    for record in run_records(root)? {
        if record.state == RunState::Committing {
            info!(run = %record.run_id, "finishing the commit of an interrupted run");
            apply_commit(root, &record)?;
        }
    }
    for entry in fs::read_dir(root).map_err(io_error(root))?.filter_map(Result::ok) {
        if entry.file_name().to_string_lossy().starts_with(STAGING_PREFIX) {
            let path = entry.path();
            info!(path = %path.display(), "removing the staging area of an interrupted run");
            fs::remove_dir_all(&path).map_err(io_error(&path))?;
        }
    }
    Ok(())
}

/// Makes a `committing` record true: idempotent, so it can be repeated after a crash.
fn apply_commit(root: &Path, record: &RunRecord) -> Result<(), DatasetError> {
    let meta = root.join(META_DIR);
    let staging = root.join(format!("{STAGING_PREFIX}{}", record.run_id));
    for old_run in &record.replaces_runs {
        let old_path = meta.join(RUNS_DIR).join(format!("{old_run}.json"));
        if let Ok(text) = fs::read_to_string(&old_path)
            && let Ok(old) = serde_json::from_str::<RunRecord>(&text)
        {
            for file in &old.files {
                let path = root.join(file);
                match fs::remove_file(&path) {
                    Ok(()) => remove_empty_parents(&path, root),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_error(&path)(e)),
                }
            }
        }
        let old_quarantine = meta.join(QUARANTINE_DIR).join(old_run);
        if old_quarantine.is_dir() {
            fs::remove_dir_all(&old_quarantine).map_err(io_error(&old_quarantine))?;
        }
        match fs::remove_file(&old_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&old_path)(e)),
        }
    }
    // Directories whose entries this commit changes: synced before the record says committed.
    let mut changed: BTreeSet<PathBuf> = BTreeSet::new();
    for file in &record.files {
        let from = staging.join(file);
        let to = root.join(file);
        changed.extend(directories_between(root, &to));
        if !from.exists() && to.exists() {
            continue; // moved before the interruption
        }
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        fs::rename(&from, &to).map_err(io_error(&to))?;
        debug!(file = %to.display(), "committed");
        crash_point("after-first-rename");
    }
    let staged_quarantine = staging.join(STAGED_QUARANTINE_DIR);
    if staged_quarantine.is_dir() {
        let quarantines = meta.join(QUARANTINE_DIR);
        fs::create_dir_all(&quarantines).map_err(io_error(&quarantines))?;
        let to = quarantines.join(&record.run_id);
        fs::rename(&staged_quarantine, &to).map_err(io_error(&to))?;
        changed.extend(directories_between(root, &to));
    }
    for dir in changed.iter().rev() {
        sync_dir(dir)?;
    }
    let mut done = record.clone();
    done.state = RunState::Committed;
    write_json_atomically(
        &meta.join(RUNS_DIR).join(format!("{}.json", record.run_id)),
        &done,
    )?;
    if staging.is_dir() {
        fs::remove_dir_all(&staging).map_err(io_error(&staging))?;
    }
    Ok(())
}

/// Testing aid, compiled only with the `test-hooks` feature (which the test suite turns on,
/// never a release build): `KEYTRAIL_CRASH_POINT=<name>` aborts the process at that point of a
/// commit, so tests can check that the next run finishes the interrupted one.
#[cfg(feature = "test-hooks")]
fn crash_point(name: &str) {
    if std::env::var_os("KEYTRAIL_CRASH_POINT").is_some_and(|v| v == name) {
        std::process::abort();
    }
}

#[cfg(not(feature = "test-hooks"))]
fn crash_point(_name: &str) {}

/// `path`'s parent and every directory above it, up to and including `root`.
fn directories_between(root: &Path, path: &Path) -> Vec<PathBuf> {
    path.ancestors()
        .skip(1)
        .take_while(|dir| dir.starts_with(root))
        .map(Path::to_path_buf)
        .collect()
}

/// Makes the directory's entries (files renamed into it, directories made in it) durable.
fn sync_dir(dir: &Path) -> Result<(), DatasetError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
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

    pub fn mode(&self) -> OutputMode {
        self.mode
    }

    pub(crate) fn staging_dir(&self) -> &Path {
        &self.staging
    }

    pub(crate) fn spill_dir(&self) -> PathBuf {
        self.staging.join(SPILL_DIR)
    }

    /// Where this run's quarantine is written before it is committed.
    pub fn quarantine_staging_dir(&self) -> PathBuf {
        self.staging.join(STAGED_QUARANTINE_DIR)
    }

    /// Where this run's quarantine is once committed.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.root.join(META_DIR).join(QUARANTINE_DIR).join(&self.run_id)
    }

    /// Inputs converted by earlier runs, by path (for `--incremental`).
    pub fn converted_inputs(&self) -> BTreeMap<String, InputRecord> {
        self.previous
            .iter()
            .flat_map(|r| r.inputs.iter().map(|i| (i.path.clone(), i.clone())))
            .collect()
    }

    /// Committed files of a partition that this run adds to (none unless incremental).
    pub fn existing_files(&self, partition: &str) -> Vec<PathBuf> {
        if self.mode != OutputMode::Incremental {
            return Vec::new();
        }
        self.previous
            .iter()
            .flat_map(|r| r.files.iter())
            .filter(|f| Path::new(f).parent().map(|p| p.to_string_lossy()) == Some(partition.into()))
            .map(|f| self.root.join(f))
            .collect()
    }

    /// Moves the staged files (and quarantine) into place and records the run and its inputs.
    pub fn commit(&self, files: &[DataFile], inputs: Vec<InputRecord>) -> Result<(), DatasetError> {
        let meta = self.root.join(META_DIR);
        let runs = meta.join(RUNS_DIR);
        fs::create_dir_all(&runs).map_err(io_error(&runs))?;
        if self.mode == OutputMode::Overwrite {
            write_json_atomically(&meta.join(MARKER_FILE), &self.marker)?;
        }
        let record = RunRecord {
            run_id: self.run_id.clone(),
            state: RunState::Committing,
            files: files.iter().map(|f| f.path.clone()).collect(),
            rows: files.iter().map(|f| f.rows).sum(),
            replaces_runs: if self.mode == OutputMode::Overwrite {
                self.previous.iter().map(|r| r.run_id.clone()).collect()
            } else {
                Vec::new()
            },
            inputs,
        };
        write_json_atomically(&runs.join(format!("{}.json", self.run_id)), &record)?;
        crash_point("after-commit-record");
        apply_commit(&self.root, &record)
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

/// Writes `value` as JSON to `path` so that it is either the old file or the whole new one,
/// after a crash or a power loss alike.
fn write_json_atomically<T: Serialize>(path: &Path, value: &T) -> Result<(), DatasetError> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(value).map_err(|source| DatasetError::Json {
        path: path.to_path_buf(),
        what: "record",
        source,
    })?;
    {
        use std::io::Write;
        let mut file = fs::File::create(&tmp).map_err(io_error(&tmp))?;
        file.write_all(text.as_bytes()).map_err(io_error(&tmp))?;
        file.sync_all().map_err(io_error(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_error(path))?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}
