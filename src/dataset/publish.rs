//! Uploading an `s3://` run's data files while the run goes on: each file goes to its final key
//! as soon as the writer closes it and its local copy is deleted, so a run needs local disk for
//! the files being written (and spilled runs), not for its whole output.
//!
//! Before the first upload the run's pending record (`_keytrail/pending/<run>.json`) lists what
//! it has uploaded, and a heartbeat keeps it fresh while the run lives: a run killed at any
//! moment leaves nothing a later run cannot find and delete (see [`super::commit`]). Data files
//! stream up while they are written ([`super::upload_stream`]); parts in flight, across all
//! files, are bounded by the run's [`UploadBudget`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info_span};

use super::layout::{META_DIR, PENDING_DIR};
use super::table::{TableError, TableLocation};
use super::upload_stream::{UploadBudget, UploadStream, UploadTask};
use crate::sync::lock;

/// How often a live run refreshes its pending record.
pub const HEARTBEAT: Duration = Duration::from_secs(60);

/// `_keytrail/pending/<run>.json`: what a run has published (or is publishing) but not committed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PendingRecord {
    pub(crate) run_id: String,
    /// The table version the run read; its commit, if it landed, is after it.
    pub(crate) snapshot_version: Option<u64>,
    /// Data files and quarantine files, relative to the table root.
    pub(crate) files: Vec<String>,
    /// Last sign of life, milliseconds since the epoch.
    pub(crate) heartbeat: i64,
}

/// The pending record's path for `run_id`.
pub(crate) fn pending_path(run_id: &str) -> String {
    format!("{META_DIR}/{PENDING_DIR}/{run_id}.json")
}

enum Upload {
    Running(UploadTask),
    Done,
}

/// The uploads of one `s3://` run.
pub(crate) struct Publisher {
    location: TableLocation,
    runtime: Handle,
    /// Shared with the heartbeat task, which writes it again with a new time.
    record: Arc<Mutex<PendingRecord>>,
    /// Held while the pending record is written, so a heartbeat never puts back an older list.
    writes: Arc<tokio::sync::Mutex<()>>,
    uploads: Mutex<BTreeMap<String, Upload>>,
    /// One permit per part in flight.
    slots: Arc<Semaphore>,
    budget: UploadBudget,
    heartbeat: Mutex<Option<JoinHandle<()>>>,
}

impl Publisher {
    pub(crate) fn new(
        location: TableLocation,
        runtime: Handle,
        run_id: &str,
        snapshot_version: Option<u64>,
        budget: UploadBudget,
    ) -> Publisher {
        Publisher {
            location,
            runtime,
            record: Arc::new(Mutex::new(PendingRecord {
                run_id: run_id.to_string(),
                snapshot_version,
                files: Vec::new(),
                heartbeat: 0,
            })),
            writes: Arc::new(tokio::sync::Mutex::new(())),
            uploads: Mutex::new(BTreeMap::new()),
            slots: Arc::new(Semaphore::new(budget.parts_in_flight)),
            budget,
            heartbeat: Mutex::new(None),
        }
    }

    /// Adds `file` to the pending record and writes it (starting the heartbeat the first time).
    fn announce(&self, file: &str) -> Result<(), TableError> {
        lock(&self.record).files.push(file.to_string());
        self.runtime
            .block_on(write_current(&self.location, &self.record, &self.writes))?;
        let mut heartbeat = lock(&self.heartbeat);
        if heartbeat.is_none() {
            let location = self.location.clone();
            let record = self.record.clone();
            let writes = self.writes.clone();
            *heartbeat = Some(self.runtime.spawn(async move {
                let mut ticks = tokio::time::interval(HEARTBEAT);
                ticks.tick().await;
                loop {
                    ticks.tick().await;
                    let _ = write_current(&location, &record, &writes).await;
                }
            }));
        }
        Ok(())
    }

    /// The URL of the object at `relative` (for messages).
    pub(crate) fn object_url(&self, relative: &str) -> String {
        format!("{}/{relative}", self.location)
    }

    /// What the uploads may hold in memory.
    pub(crate) fn budget(&self) -> UploadBudget {
        self.budget
    }

    /// A stream to `relative` for a data file being written, spooling at `spool` (listed in the
    /// pending record before any byte goes up); hand its [`UploadStream::finish`] to
    /// [`Publisher::track`].
    pub(crate) fn stream(&self, relative: &str, spool: &Path) -> Result<UploadStream, TableError> {
        self.announce(relative)?;
        UploadStream::new(
            self.location.store(),
            relative,
            spool,
            self.runtime.clone(),
            self.slots.clone(),
            self.budget,
        )
        .map_err(|e| self.local_error(spool, e))
    }

    /// Follows the completion of the upload of `relative`.
    pub(crate) fn track(&self, relative: &str, task: UploadTask) {
        let span = info_span!("upload", key = %relative);
        let key = relative.to_string();
        let task = self.runtime.spawn(
            async move {
                let outcome = task.await.map_err(|e| e.to_string()).and_then(|r| r);
                if outcome.is_ok() {
                    debug!(key, "uploaded");
                    super::commit::crash_point("after-first-upload");
                }
                outcome
            }
            .instrument(span),
        );
        lock(&self.uploads).insert(relative.to_string(), Upload::Running(task));
    }

    /// Starts uploading the closed local file `local` (a quarantine file) to `relative`; its
    /// local copy is deleted once uploaded.
    pub(crate) fn upload(&self, local: &Path, relative: &str) -> Result<(), TableError> {
        let mut stream = self.stream(relative, &local.with_extension("upload"))?;
        let copied = std::fs::File::open(local).and_then(|mut file| std::io::copy(&mut file, &mut stream));
        let task = copied
            .and_then(|_| stream.finish())
            .map_err(|e| self.local_error(local, e))?;
        self.track(relative, task);
        let _ = std::fs::remove_file(local);
        Ok(())
    }

    /// Waits for the upload of `relative`, if one was started.
    fn wait(&self, relative: &str) -> Result<bool, TableError> {
        let running = match lock(&self.uploads).get_mut(relative) {
            None => return Ok(false),
            Some(upload) => std::mem::replace(upload, Upload::Done),
        };
        if let Upload::Running(task) = running {
            let outcome = self
                .runtime
                .block_on(task)
                .map_err(|e| e.to_string())
                .and_then(|r| r);
            outcome.map_err(|problem| TableError::Invalid {
                table: self.location.to_string(),
                problem,
            })?;
        }
        Ok(true)
    }

    /// Waits for every upload; the first failure fails the run.
    pub(crate) fn finish_uploads(&self) -> Result<(), TableError> {
        let keys: Vec<String> = lock(&self.uploads).keys().cloned().collect();
        for key in keys {
            self.wait(&key)?;
        }
        Ok(())
    }

    /// A local copy of the uploaded file `relative` at `local` (downloaded again if its copy was
    /// deleted), for a partition whose files are merged again at the end.
    pub(crate) fn local_copy(&self, relative: &str, local: &Path) -> Result<PathBuf, TableError> {
        if self.wait(relative)? && !local.exists() {
            let bytes = self.runtime.block_on(self.location.get(relative))?;
            if let Some(parent) = local.parent() {
                std::fs::create_dir_all(parent).map_err(|e| self.local_error(parent, e))?;
            }
            std::fs::write(local, &bytes).map_err(|e| self.local_error(local, e))?;
        }
        Ok(local.to_path_buf())
    }

    /// Deletes the uploaded file `relative`, which a merge replaced.
    pub(crate) fn discard(&self, relative: &str) -> Result<(), TableError> {
        if self.wait(relative)? {
            self.runtime.block_on(self.location.delete(relative))?;
            lock(&self.uploads).remove(relative);
        }
        Ok(())
    }

    fn local_error(&self, path: &Path, error: std::io::Error) -> TableError {
        TableError::Invalid {
            table: self.location.to_string(),
            problem: format!("{}: {error}", path.display()),
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if let Some(heartbeat) = lock(&self.heartbeat).take() {
            heartbeat.abort();
        }
    }
}

/// Writes the pending record as it is now, with the time as its heartbeat.
async fn write_current(
    location: &TableLocation,
    record: &Mutex<PendingRecord>,
    writes: &tokio::sync::Mutex<()>,
) -> Result<(), TableError> {
    let _writing = writes.lock().await;
    let current = {
        let mut record = lock(record);
        record.heartbeat = chrono::Utc::now().timestamp_millis();
        record.clone()
    };
    write_pending(location, &current).await
}

/// Writes a run's pending record.
pub(crate) async fn write_pending(
    location: &TableLocation,
    record: &PendingRecord,
) -> Result<(), TableError> {
    let path = pending_path(&record.run_id);
    let json = serde_json::to_vec_pretty(record).map_err(|e| TableError::Invalid {
        table: location.to_string(),
        problem: format!("{path}: {e}"),
    })?;
    location.put(&path, json).await
}
