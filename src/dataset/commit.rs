//! A run's output table: preparing it (refusing what is not a keytrail Delta table of this
//! schema and partitioning), the run's staging area, publishing its files to their final paths
//! and committing them in one Delta transaction, and cleaning up after runs that were killed.
//!
//! A run writes its files into a staging directory (inside a local table, hidden from readers;
//! in `$TMPDIR` for an `s3://` table). To commit, it records what it is about to publish
//! (`_keytrail/pending/<run>.json`), moves or uploads the files to their final paths, and
//! commits them with delta-rs: readers see them only once the commit is in `_delta_log/`. A run
//! killed before its commit leaves a pending record; the next run that finds its owner gone
//! (the staging directory's lock free, or on S3 no heartbeat for [`PENDING_LEASE`]) deletes the
//! files it published, unless its commit landed after all.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::runtime::Handle;
use tracing::{debug, info, warn};

use super::layout::{
    MARKER_FILE, META_DIR, PENDING_DIR, QUARANTINE_DIR, RUNS_DIR, SPILL_DIR, STAGED_QUARANTINE_DIR,
    STAGING_PREFIX,
};
use super::manifest::{self, CommitRecord};
use super::publish::{PendingRecord, Publisher, pending_path, write_pending};
use super::table::{
    CommitOutcome, DELTA_LOG_DIR, PublishedFile, RewriteOutcome, Table, TableFile, TableLocation,
};
use super::{
    DataFile, DatasetError, InputRecord, Partitioning, TableFileReader, UploadBudget, io_error, partitioning,
};

/// How long an `s3://` run's pending record may go without a heartbeat before another run takes
/// its owner for dead and deletes what it published.
pub const PENDING_LEASE: Duration = Duration::from_secs(15 * 60);
/// The lock file in a local run's staging directory, held while the run lives.
const LOCK_FILE: &str = ".lock";
/// A staging directory is made under its name with this after it, and renamed once its lock is
/// held.
const STARTING_SUFFIX: &str = ".starting";
/// How long a staging directory may stay unrenamed before another run takes its owner for dead.
const STARTING_LEASE: Duration = Duration::from_secs(10 * 60);

/// How a run treats a table that already holds data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// Only a new or empty table is accepted.
    Fresh,
    /// The table's data is replaced when this run commits (readers of older versions are not
    /// disturbed: the files stay until vacuumed).
    Overwrite,
    /// This run adds to the table, skipping inputs already converted.
    Incremental,
}

/// What [`OutputDir::commit`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// The run's files are in the table at this version.
    Version(u64),
    /// Another run committed some of these inputs first; nothing of this run was committed.
    InputsTaken(Vec<String>),
}

/// One partition's rewrite: new files holding exactly the rows of the files they replace.
#[derive(Debug, Clone)]
pub struct Rewrite {
    pub partition: String,
    pub files: Vec<DataFile>,
    /// Paths in the table of the files replaced.
    pub replaced: Vec<String>,
}

/// What [`OutputDir::commit_rewrite`] did.
#[derive(Debug)]
pub struct Rewritten {
    /// The version that holds the rewrites committed (none when all were skipped).
    pub version: Option<u64>,
    pub committed: Vec<Rewrite>,
    /// Rewrites of partitions another writer changed meanwhile (their new files deleted).
    pub skipped: Vec<Rewrite>,
}

/// The output table prepared for one run.
pub struct OutputDir {
    table: Table,
    /// The table's directory, for a local table.
    local_root: Option<PathBuf>,
    run_id: String,
    staging: PathBuf,
    /// For an `s3://` table, the temporary directory holding `staging`.
    _temp: Option<tempfile::TempDir>,
    /// Held while the run lives (local tables): other runs take a free lock for a dead run.
    _lock: Option<fs::File>,
    mode: OutputMode,
    partitioning: Partitioning,
    /// The table's files when the run started.
    files_at_start: Vec<TableFile>,
    /// An overwrite that gives the table a new schema or partitioning: the schema.
    new_description: Option<arrow::datatypes::Schema>,
    /// For an `s3://` table: the uploads of the data files, made while the run goes on.
    publisher: Option<std::sync::Arc<Publisher>>,
}

impl std::fmt::Debug for OutputDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputDir")
            .field("table", &self.table.location().to_string())
            .field("run_id", &self.run_id)
            .field("mode", &self.mode)
            .finish()
    }
}

/// Checks and prepares the table at `location` for a new run (`local_root` is its directory
/// when it is local), cleaning up after runs that were killed.
///
/// A new or empty location becomes a keytrail Delta table. A table holding data is refused in
/// [`OutputMode::Fresh`]; one of another schema or partitioning is refused unless overwritten;
/// anything else there (files that are no Delta table, a Delta table keytrail did not write, a
/// dataset of keytrail before Delta tables) is always refused, so a run never mixes with, or
/// deletes, foreign files.
pub fn prepare_output(
    location: TableLocation,
    local_root: Option<&Path>,
    mode: OutputMode,
    partitioning: &Partitioning,
    arrow_schema: &arrow::datatypes::Schema,
    runtime: Handle,
    upload_budget: UploadBudget,
) -> Result<OutputDir, DatasetError> {
    if let Some(root) = local_root {
        fs::create_dir_all(root).map_err(io_error(root))?;
    }
    let mut table = Table::open(location, runtime)?;
    if !table.exists() {
        refuse_foreign_content(&table, local_root)?;
    }
    recover(&table, local_root)?;
    if !table.exists() {
        table.create(arrow_schema, partitioning)?;
    }
    let files_at_start = table.files()?;
    if mode == OutputMode::Fresh && !files_at_start.is_empty() {
        return Err(DatasetError::AlreadyADataset {
            root: table.location().to_string(),
            files: files_at_start.len(),
        });
    }
    let new_description = !same_description(&table, mode, partitioning, arrow_schema)?;
    let run_id = new_run_id();
    let (staging, temp, lock) = match local_root {
        Some(root) => {
            // Another run starting beside this one removes staging directories whose lock nobody
            // holds: the directory gets its staging name only once its lock is held (a lock
            // follows its file through the rename).
            let staging = staging_dir(root, &run_id);
            let starting = root.join(format!("{STAGING_PREFIX}{run_id}{STARTING_SUFFIX}"));
            fs::create_dir_all(&starting).map_err(io_error(&starting))?;
            let lock_path = starting.join(LOCK_FILE);
            let lock = fs::File::create(&lock_path).map_err(io_error(&lock_path))?;
            lock.lock().map_err(io_error(&lock_path))?;
            fs::rename(&starting, &staging).map_err(io_error(&staging))?;
            (staging, None, Some(lock))
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("keytrail-staging-")
                .tempdir()
                .map_err(io_error(&std::env::temp_dir()))?;
            (temp.path().join(&run_id), Some(temp), None)
        }
    };
    let spill = staging.join(SPILL_DIR);
    fs::create_dir_all(&spill).map_err(io_error(&spill))?;
    let publisher = local_root.is_none().then(|| {
        std::sync::Arc::new(Publisher::new(
            table.location().clone(),
            table.runtime().clone(),
            &run_id,
            table.version(),
            upload_budget,
        ))
    });
    Ok(OutputDir {
        table,
        local_root: local_root.map(Path::to_path_buf),
        run_id,
        staging,
        _temp: temp,
        _lock: lock,
        mode,
        partitioning: partitioning.clone(),
        files_at_start,
        new_description: new_description.then(|| arrow_schema.clone()),
        publisher,
    })
}

/// Refuses a location without a Delta log that holds anything but keytrail's leftovers.
fn refuse_foreign_content(table: &Table, local_root: Option<&Path>) -> Result<(), DatasetError> {
    let location = table.location().to_string();
    let names: Vec<String> = match local_root {
        Some(root) => fs::read_dir(root)
            .map_err(io_error(root))?
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        None => table.list_objects("")?,
    };
    let legacy = format!("{META_DIR}/{RUNS_DIR}");
    let marker = format!("{META_DIR}/{MARKER_FILE}");
    let is_legacy = match local_root {
        Some(root) => root.join(&legacy).is_dir() || root.join(&marker).is_file(),
        None => names
            .iter()
            .any(|n| n.starts_with(&format!("{legacy}/")) || *n == marker),
    };
    if is_legacy {
        return Err(DatasetError::Legacy { root: location });
    }
    // A Delta log that appeared since the table was looked for is another run creating the
    // table at this moment: not foreign (creating it then finds theirs).
    let foreign = names.iter().any(|name| {
        let first = name.split('/').next().unwrap_or_default();
        first != META_DIR && first != DELTA_LOG_DIR && !first.starts_with(STAGING_PREFIX)
    });
    if foreign {
        return Err(DatasetError::NotADataset { root: location });
    }
    Ok(())
}

/// Whether the table holds keytrail's schema, this version, with `partitioning`. A table of
/// another keytrail version or partitioning is refused unless overwritten (the overwrite then
/// gives the table the new description, [`OutputDir::commit`]); one keytrail did not write,
/// always.
fn same_description(
    table: &Table,
    mode: OutputMode,
    partitioning: &Partitioning,
    arrow_schema: &arrow::datatypes::Schema,
) -> Result<bool, DatasetError> {
    let description = table.description()?;
    let root = table.location().to_string();
    let Some(schema) = &description.schema else {
        return Err(DatasetError::NotKeytrail { root });
    };
    let current = crate::schema::Schema::builtin();
    let keep_raw = arrow_schema
        .field_with_name(crate::schema::RAW_EVENT_COLUMN)
        .is_ok();
    let same_kind = schema == current.name()
        && description.schema_version == Some(current.version())
        && description.partition_by == partitioning.column_names();
    if same_kind && description.keeps_raw != keep_raw && mode != OutputMode::Overwrite {
        return Err(DatasetError::RawColumn {
            root,
            table_keeps_raw: description.keeps_raw,
        });
    }
    let same = same_kind && description.keeps_raw == keep_raw;
    if !same && mode != OutputMode::Overwrite {
        return Err(DatasetError::Mismatch {
            root,
            existing_partition_by: description.partition_by,
            existing_version: description.schema_version.unwrap_or(0),
            wanted_partition_by: partitioning.column_names(),
            wanted_version: current.version(),
        });
    }
    Ok(same)
}

/// Deals with what killed runs left: pending publications whose owner is gone (their files
/// deleted unless their commit landed) and local staging directories nobody holds.
fn recover(table: &Table, local_root: Option<&Path>) -> Result<(), DatasetError> {
    let prefix = format!("{META_DIR}/{PENDING_DIR}/");
    for path in table.list_objects(&prefix)? {
        let bytes = table.get_object(&path)?;
        let Ok(pending) = serde_json::from_slice::<PendingRecord>(&bytes) else {
            warn!(%path, "ignoring an unreadable pending record");
            continue;
        };
        if owner_alive(&pending, local_root) {
            continue;
        }
        let committed = match pending.snapshot_version {
            _ if !table.exists() => false,
            after => {
                let newer = after.map_or(0, |v| v + 1)..=table.version().unwrap_or(0);
                table.runs_in(newer)?.contains(&pending.run_id)
            }
        };
        if committed {
            info!(run = %pending.run_id, "a killed run had committed; keeping its files");
        } else {
            info!(run = %pending.run_id, files = pending.files.len(), "removing the files of a killed run");
            for file in &pending.files {
                table.delete_object(file)?;
                if let Some(root) = local_root {
                    remove_empty_parents(&root.join(file), root);
                }
            }
        }
        table.delete_object(&path)?;
    }
    if let Some(root) = local_root {
        for entry in fs::read_dir(root).map_err(io_error(root))?.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(run_id) = name.strip_prefix(STAGING_PREFIX) else {
                continue;
            };
            let dead = if run_id.ends_with(STARTING_SUFFIX) {
                // A run between making its staging directory and locking it; one still starting
                // after minutes was killed there.
                let age = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok());
                age.is_some_and(|age| age > STARTING_LEASE)
            } else {
                !staging_locked(&entry.path())
            };
            if dead {
                let path = entry.path();
                info!(run = run_id, path = %path.display(), "removing the staging area of a killed run");
                match fs::remove_dir_all(&path) {
                    // Another run sweeping, or its owner finishing, removed it first.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    other => other.map_err(io_error(&path))?,
                }
            }
        }
    }
    Ok(())
}

fn owner_alive(pending: &PendingRecord, local_root: Option<&Path>) -> bool {
    match local_root {
        Some(root) => staging_locked(&staging_dir(root, &pending.run_id)),
        None => {
            let age = chrono::Utc::now().timestamp_millis() - pending.heartbeat;
            age < pending_lease().as_millis() as i64
        }
    }
}

/// Where a local run keeps its files until they are committed.
fn staging_dir(root: &Path, run_id: &str) -> PathBuf {
    root.join(format!("{STAGING_PREFIX}{run_id}"))
}

/// Whether a live run holds the staging directory's lock.
fn staging_locked(staging: &Path) -> bool {
    let Ok(file) = fs::File::open(staging.join(LOCK_FILE)) else {
        return false;
    };
    match file.try_lock() {
        Ok(()) => false,
        Err(fs::TryLockError::WouldBlock) => true,
        Err(fs::TryLockError::Error(_)) => false,
    }
}

impl OutputDir {
    pub fn location(&self) -> &TableLocation {
        self.table.location()
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

    /// For an `s3://` table, the uploads the writer hands each closed data file to.
    pub(crate) fn publisher(&self) -> Option<std::sync::Arc<Publisher>> {
        self.publisher.clone()
    }

    /// A local copy of the staged data file `relative` (downloaded again if it was uploaded and
    /// its copy deleted), for a partition whose files are merged again.
    pub(crate) fn staged_copy(&self, relative: &str) -> Result<PathBuf, DatasetError> {
        let local = self.staging.join(relative);
        match &self.publisher {
            Some(publisher) => Ok(publisher.local_copy(relative, &local)?),
            None => Ok(local),
        }
    }

    /// Forgets the staged data file `relative`, which a merge replaced (deleting its upload).
    pub(crate) fn discard_staged(&self, relative: &str) -> Result<(), DatasetError> {
        let local = self.staging.join(relative);
        match fs::remove_file(&local) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&local)(e)),
        }
        if let Some(publisher) = &self.publisher {
            publisher.discard(relative)?;
        }
        Ok(())
    }

    /// Where this run's quarantine is written before it is committed.
    pub fn quarantine_staging_dir(&self) -> PathBuf {
        self.staging.join(STAGED_QUARANTINE_DIR)
    }

    /// Where this run's quarantine is once committed, relative to the table root.
    pub fn quarantine_path(&self) -> String {
        format!("{META_DIR}/{QUARANTINE_DIR}/{}", self.run_id)
    }

    /// Inputs whose events the table holds, by path (for `--incremental`).
    pub fn converted_inputs(&self) -> Result<std::collections::BTreeMap<String, InputRecord>, DatasetError> {
        if self.mode != OutputMode::Incremental {
            return Ok(Default::default());
        }
        Ok(manifest::converted_inputs(&self.table)?)
    }

    /// The table's files in a partition this run adds to (none unless incremental), opened for
    /// ranged reads (an `s3://` table's are read in place, column chunk by column chunk).
    pub fn existing_files(&self, partition: &str) -> Result<Vec<TableFileReader>, DatasetError> {
        if self.mode != OutputMode::Incremental {
            return Ok(Vec::new());
        }
        Ok(self
            .files_at_start
            .iter()
            .filter(|file| {
                Path::new(&file.path).parent().map(|p| p.to_string_lossy()) == Some(partition.into())
            })
            .map(|file| self.file_reader(file))
            .collect())
    }

    /// The table's files when the run started.
    pub fn table_files(&self) -> &[TableFile] {
        &self.files_at_start
    }

    /// `file` of the table, opened for reading (in place, also on S3).
    pub fn file_reader(&self, file: &TableFile) -> TableFileReader {
        match &self.local_root {
            Some(root) => TableFileReader::local(&root.join(&file.path)),
            None => TableFileReader::remote(
                self.table.location(),
                &file.path,
                file.size,
                self.table.runtime().clone(),
            ),
        }
    }

    /// Publishes the staged files (and quarantine) and commits them with the run's inputs. When
    /// another run committed some of the same inputs first, everything published is deleted
    /// again and [`Committed::InputsTaken`] says which.
    pub fn commit(mut self, files: &[DataFile], inputs: Vec<InputRecord>) -> Result<Committed, DatasetError> {
        let staged_quarantine = self.quarantine_staging_dir();
        let quarantine_root = self.quarantine_path();
        // What this run publishes: each staged file and its path in the table.
        let mut moves = self.staged_moves(files);
        moves.extend(
            self.staged_quarantine_files()?
                .iter()
                .map(|f| (staged_quarantine.join(f), format!("{quarantine_root}/{f}"))),
        );
        self.publish(&moves, files.len())?;
        crash_point("before-delta-commit");
        pause_before_commit();
        let record = CommitRecord {
            run_id: self.run_id.clone(),
            sequence: 0,
            replaces: self.mode == OutputMode::Overwrite,
            rows: files.iter().map(|f| f.rows).sum(),
            writer: format!("keytrail {}", env!("CARGO_PKG_VERSION")),
            inputs,
        };
        let published_files = self.published(files);
        let new_description = self
            .new_description
            .as_ref()
            .map(|schema| (schema, &self.partitioning));
        let outcome = self.table.commit(
            &published_files,
            record,
            self.mode == OutputMode::Overwrite,
            new_description,
        )?;
        let result = match outcome {
            CommitOutcome::Committed { version, record } => {
                crash_point("after-delta-commit");
                // The run's data is in the table now: what fails after this does not fail the
                // run. A missing copy is made again from the log by the next run, and a pending
                // record whose commit landed is removed by the next run without its files.
                if let Err(error) = manifest::keep_copy(&self.table, version, &record) {
                    warn!(
                        "committed as version {version}, but {error:#}; the next run copies the record from the log"
                    );
                }
                self.remove_pending_record(Some(version))?;
                Committed::Version(version)
            }
            CommitOutcome::InputsTaken(taken) => {
                for (_, path) in &moves {
                    self.table.delete_object(path)?;
                }
                self.remove_pending_record(None)?;
                Committed::InputsTaken(taken)
            }
        };
        self.abandon();
        Ok(result)
    }

    /// Publishes the rewrites' files and commits them in place of the files they replace, in
    /// one transaction. A rewrite whose replaced files another writer removed meanwhile (an
    /// overwrite, another compaction) is skipped and its files deleted; the others are
    /// committed.
    pub fn commit_rewrite(
        mut self,
        rewrites: Vec<Rewrite>,
        target_size: u64,
    ) -> Result<Rewritten, DatasetError> {
        let new_files: Vec<DataFile> = rewrites.iter().flat_map(|r| r.files.iter().cloned()).collect();
        let moves = self.staged_moves(&new_files);
        self.publish(&moves, moves.len())?;
        crash_point("before-delta-commit");
        pause_before_commit();
        let mut pending = rewrites;
        let mut skipped = Vec::new();
        let version = loop {
            if pending.is_empty() {
                break None;
            }
            let new_files: Vec<DataFile> = pending.iter().flat_map(|r| r.files.iter().cloned()).collect();
            let files = self.published(&new_files);
            let replaced: Vec<String> = pending.iter().flat_map(|r| r.replaced.iter().cloned()).collect();
            match self
                .table
                .commit_rewrite(&files, &replaced, &self.run_id, target_size)?
            {
                RewriteOutcome::Committed(version) => break Some(version),
                RewriteOutcome::Gone(gone) => {
                    let (lost, kept): (Vec<Rewrite>, Vec<Rewrite>) = pending
                        .into_iter()
                        .partition(|r| r.replaced.iter().any(|p| gone.contains(p)));
                    for rewrite in &lost {
                        warn!(partition = %rewrite.partition, "another writer changed the partition meanwhile; skipping it");
                        for file in &rewrite.files {
                            self.table.delete_object(&file.path)?;
                        }
                    }
                    skipped.extend(lost);
                    pending = kept;
                }
            }
        };
        crash_point("after-delta-commit");
        self.remove_pending_record(version)?;
        self.abandon();
        Ok(Rewritten {
            version,
            committed: pending,
            skipped,
        })
    }

    /// Each staged data file and its path in the table.
    fn staged_moves(&self, files: &[DataFile]) -> Vec<(PathBuf, String)> {
        files
            .iter()
            .map(|f| (self.staging.join(&f.path), f.path.clone()))
            .collect()
    }

    /// `files` with the partition values their paths give.
    fn published(&self, files: &[DataFile]) -> Vec<PublishedFile> {
        files
            .iter()
            .map(|file| PublishedFile {
                partition_values: partitioning::partition_values(&file.path, &self.partitioning),
                file: file.clone(),
            })
            .collect()
    }

    /// Deletes the run's pending record. After a commit landed (`committed`), a failure only
    /// warns: the next run finds the commit and removes the record without its files.
    fn remove_pending_record(&self, committed: Option<u64>) -> Result<(), DatasetError> {
        match (self.table.delete_object(&pending_path(&self.run_id)), committed) {
            (Ok(()), _) => Ok(()),
            (Err(error), Some(version)) => {
                warn!("committed as version {version}, but {error:#}; the next run removes it");
                Ok(())
            }
            (Err(error), None) => Err(error.into()),
        }
    }

    /// Puts `moves` (staged file, path in the table) at their final paths, the pending record
    /// listing them first: a local table's are moved (and the directories synced); an `s3://`
    /// table's data files (the first `data_files`) went up while they were written, the rest
    /// (the quarantine) go up now.
    fn publish(&self, moves: &[(PathBuf, String)], data_files: usize) -> Result<(), DatasetError> {
        match (&self.publisher, &self.local_root) {
            // The writer uploaded the data files while the run went on (each listed in the
            // pending record first); the quarantine goes up now, the same way.
            (Some(publisher), _) => {
                for (from, to) in moves.iter().skip(data_files) {
                    publisher.upload(from, to)?;
                }
                publisher.finish_uploads()?;
                crash_point("after-pending-record");
            }
            (None, Some(root)) => {
                let pending = PendingRecord {
                    run_id: self.run_id.clone(),
                    snapshot_version: self.table.version(),
                    files: moves.iter().map(|(_, to)| to.clone()).collect(),
                    heartbeat: chrono::Utc::now().timestamp_millis(),
                };
                self.table
                    .runtime()
                    .block_on(write_pending(self.table.location(), &pending))?;
                crash_point("after-pending-record");
                for (index, (from, to)) in moves.iter().enumerate() {
                    move_into_place(root, from, to)?;
                    if index == 0 {
                        crash_point("after-first-publish");
                    }
                }
                sync_directories(root, moves.iter().map(|(_, to)| to.as_str()))?;
            }
            (None, None) => unreachable!("an s3:// table always has a publisher"),
        }
        Ok(())
    }

    /// The quarantine's files, relative to its staging directory.
    fn staged_quarantine_files(&self) -> Result<Vec<String>, DatasetError> {
        let dir = self.quarantine_staging_dir();
        if !dir.is_dir() {
            return Ok(Vec::new());
        }
        let mut names: Vec<String> = fs::read_dir(&dir)
            .map_err(io_error(&dir))?
            .filter_map(Result::ok)
            .filter(|e| e.path().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Removes the staging area of a run that failed (or is done).
    pub fn abandon(&mut self) {
        let _ = fs::remove_dir_all(&self.staging);
    }
}

/// Moves the staged file `from` to `to` (relative to the local table `root`).
fn move_into_place(root: &Path, from: &Path, to: &str) -> Result<(), DatasetError> {
    let target = root.join(to);
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(io_error(parent))?;
    }
    fs::rename(from, &target).map_err(io_error(&target))?;
    debug!(file = to, "published");
    Ok(())
}

/// Makes the renames into every directory on the way to `files` durable, so a commit survives a
/// power loss, not just a killed process.
fn sync_directories<'a>(root: &Path, files: impl Iterator<Item = &'a str>) -> Result<(), DatasetError> {
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for file in files {
        dirs.extend(
            root.join(file)
                .ancestors()
                .skip(1)
                .take_while(|dir| dir.starts_with(root))
                .map(Path::to_path_buf),
        );
    }
    for dir in dirs.iter().rev() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error(dir))?;
    }
    Ok(())
}

/// Testing aid, compiled only with the `test-hooks` feature (which the test suite turns on,
/// never a release build): `KEYTRAIL_CRASH_POINT=<name>` aborts the process at that point of a
/// commit, so tests can check that the next run cleans up after the killed one.
#[cfg(feature = "test-hooks")]
pub(super) fn crash_point(name: &str) {
    if std::env::var_os("KEYTRAIL_CRASH_POINT").is_some_and(|v| v == name) {
        std::process::abort();
    }
}

#[cfg(not(feature = "test-hooks"))]
pub(super) fn crash_point(_name: &str) {}

/// Testing aid (`test-hooks` only): `KEYTRAIL_PAUSE_BEFORE_COMMIT_MS=<ms>` waits that long
/// before the Delta commit, so tests can make runs that started together commit at once.
#[cfg(feature = "test-hooks")]
fn pause_before_commit() {
    if let Some(ms) = std::env::var("KEYTRAIL_PAUSE_BEFORE_COMMIT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

#[cfg(not(feature = "test-hooks"))]
fn pause_before_commit() {}

/// [`PENDING_LEASE`], which tests (`test-hooks` only) shorten with `KEYTRAIL_PENDING_LEASE_MS`.
#[cfg(feature = "test-hooks")]
fn pending_lease() -> Duration {
    std::env::var("KEYTRAIL_PENDING_LEASE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(PENDING_LEASE, Duration::from_millis)
}

#[cfg(not(feature = "test-hooks"))]
fn pending_lease() -> Duration {
    PENDING_LEASE
}

fn new_run_id() -> String {
    let now = chrono::Utc::now();
    let nanos = now.timestamp_subsec_nanos() ^ std::process::id().rotate_left(16);
    format!("{}-{:08x}", now.format("%Y%m%dT%H%M%SZ"), nanos)
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
