//! One data file streamed to its S3 key while the writer encodes it: the bytes collect in a local
//! spool of at most one part, and each full part goes up at once as a part of a multipart upload,
//! so neither memory nor local disk ever holds more than a few parts of a run's output.
//!
//! The object appears only when the upload completes, after the writer closed the file; a file
//! smaller than one part is a single `PUT`. Parts in flight are bounded across all files of a run
//! by an [`UploadBudget`], whose bytes count against `--memory-limit`.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload};
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

/// S3's smallest part (all but the last part of a multipart upload).
const MIN_PART_BYTES: usize = 5 * 1024 * 1024;
const PART_BYTES: usize = 8 * 1024 * 1024;
const MAX_PARTS_IN_FLIGHT: usize = 4;

/// How much memory a run's uploads may hold: parts in flight times the part size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadBudget {
    pub part_bytes: usize,
    pub parts_in_flight: usize,
}

impl UploadBudget {
    /// The budget for a run of `memory_limit` bytes: about a sixth of it, at least one part.
    ///
    /// ```
    /// use keytrail::dataset::UploadBudget;
    /// let budget = UploadBudget::within(96 << 20);
    /// assert_eq!((budget.part_bytes, budget.parts_in_flight), (8 << 20, 2));
    /// assert!(UploadBudget::within(16 << 20).reserved_bytes() <= 5 << 20);
    /// ```
    pub fn within(memory_limit: usize) -> UploadBudget {
        let part_bytes = part_bytes_for_tests().unwrap_or(if memory_limit >= 6 * PART_BYTES {
            PART_BYTES
        } else {
            MIN_PART_BYTES
        });
        UploadBudget {
            part_bytes,
            parts_in_flight: (memory_limit / 6 / part_bytes).clamp(1, MAX_PARTS_IN_FLIGHT),
        }
    }

    /// The memory the uploads may hold at once.
    pub fn reserved_bytes(&self) -> usize {
        self.part_bytes * self.parts_in_flight
    }
}

/// Testing aid (`test-hooks` only): `KEYTRAIL_UPLOAD_PART_BYTES=<n>` makes parts of `n` bytes, so
/// small test files go up in many parts (against a server that allows parts that small).
#[cfg(feature = "test-hooks")]
fn part_bytes_for_tests() -> Option<usize> {
    std::env::var("KEYTRAIL_UPLOAD_PART_BYTES").ok()?.parse().ok()
}

#[cfg(not(feature = "test-hooks"))]
fn part_bytes_for_tests() -> Option<usize> {
    None
}

/// The completion of an upload: resolves when the object exists (or names what failed).
pub(crate) type UploadTask = JoinHandle<Result<(), String>>;

/// A file being written to `key`: a [`Write`] sink for the Parquet writer.
pub(crate) struct UploadStream {
    store: Arc<dyn ObjectStore>,
    key: String,
    runtime: Handle,
    slots: Arc<Semaphore>,
    part_bytes: usize,
    spool_path: PathBuf,
    spool: Option<BufWriter<File>>,
    spooled: usize,
    written: u64,
    upload: Option<Box<dyn MultipartUpload>>,
    parts: Vec<JoinHandle<object_store::Result<()>>>,
}

impl UploadStream {
    /// A stream to `key` of `store`, spooling at `spool_path` (a local file it owns).
    pub(crate) fn new(
        store: Arc<dyn ObjectStore>,
        key: &str,
        spool_path: &Path,
        runtime: Handle,
        slots: Arc<Semaphore>,
        budget: UploadBudget,
    ) -> std::io::Result<UploadStream> {
        if let Some(parent) = spool_path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let spool = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(spool_path)?;
        Ok(UploadStream {
            store,
            key: key.to_string(),
            runtime,
            slots,
            part_bytes: budget.part_bytes,
            spool_path: spool_path.to_path_buf(),
            spool: Some(BufWriter::with_capacity(1 << 20, spool)),
            spooled: 0,
            written: 0,
            upload: None,
            parts: Vec::new(),
        })
    }

    /// Bytes written so far (the file's size once finished).
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Sends the rest and completes the upload in the background; the task resolves when the
    /// object exists. The spool is deleted.
    pub(crate) fn finish(&mut self) -> std::io::Result<UploadTask> {
        let (permit, rest) = self.take_spooled()?;
        if let Some(spool) = self.spool.take() {
            drop(spool);
            let _ = std::fs::remove_file(&self.spool_path);
        }
        let store = self.store.clone();
        let key = self.key.clone();
        let upload = self.upload.take();
        let parts = std::mem::take(&mut self.parts);
        Ok(self.runtime.spawn(async move {
            let _permit = permit;
            let path = ObjectPath::from(key.as_str());
            let result = match upload {
                None => store.put(&path, PutPayload::from(rest)).await.map(|_| ()),
                Some(mut upload) => {
                    let result = complete(upload.as_mut(), parts, rest).await;
                    if result.is_err() {
                        let _ = upload.abort().await;
                    }
                    result
                }
            };
            result.map_err(|e| format!("uploading {key}: {}", super::object_errors::one_line(&e)))
        }))
    }

    /// Waits for a slot, then takes the spooled bytes out of the spool (which starts again empty).
    fn take_spooled(&mut self) -> std::io::Result<(OwnedSemaphorePermit, Vec<u8>)> {
        let permit = self
            .runtime
            .block_on(self.slots.clone().acquire_owned())
            .map_err(std::io::Error::other)?;
        let Some(spool) = self.spool.as_mut() else {
            return Err(std::io::Error::other(format!(
                "{}: upload already finished",
                self.key
            )));
        };
        spool.flush()?;
        let file = spool.get_mut();
        file.seek(SeekFrom::Start(0))?;
        let mut bytes = Vec::with_capacity(self.spooled);
        file.read_to_end(&mut bytes)?;
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        self.spooled = 0;
        Ok((permit, bytes))
    }

    /// Sends the spooled bytes as the next part, after failing if an earlier part failed.
    fn send_part(&mut self) -> std::io::Result<()> {
        self.check_sent_parts()?;
        let (permit, bytes) = self.take_spooled()?;
        let path = ObjectPath::from(self.key.as_str());
        let upload = match &mut self.upload {
            Some(upload) => upload,
            slot @ None => slot.insert(
                self.runtime
                    .block_on(self.store.put_multipart(&path))
                    .map_err(upload_error)?,
            ),
        };
        let part = upload.put_part(PutPayload::from(bytes));
        self.parts.push(self.runtime.spawn(async move {
            let _permit = permit;
            part.await
        }));
        Ok(())
    }

    fn check_sent_parts(&mut self) -> std::io::Result<()> {
        let (finished, running) = std::mem::take(&mut self.parts)
            .into_iter()
            .partition::<Vec<_>, _>(|p| p.is_finished());
        self.parts = running;
        for part in finished {
            match self.runtime.block_on(part) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(upload_error(e)),
                Err(e) => return Err(std::io::Error::other(e)),
            }
        }
        Ok(())
    }
}

async fn complete(
    upload: &mut dyn MultipartUpload,
    parts: Vec<JoinHandle<object_store::Result<()>>>,
    rest: Vec<u8>,
) -> object_store::Result<()> {
    let last = (!rest.is_empty()).then(|| upload.put_part(PutPayload::from(rest)));
    for part in parts {
        part.await.map_err(|e| object_store::Error::Generic {
            store: "upload",
            source: Box::new(e),
        })??;
    }
    if let Some(last) = last {
        last.await?;
    }
    upload.complete().await.map(|_| ())
}

/// An upload's failure, as the writer reports it for the object's URL.
fn upload_error(error: object_store::Error) -> std::io::Error {
    std::io::Error::other(format!(
        "upload failed: {}",
        super::object_errors::one_line(&error)
    ))
}

impl Write for UploadStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let Some(spool) = self.spool.as_mut() else {
            return Err(std::io::Error::other(format!(
                "{}: upload already finished",
                self.key
            )));
        };
        spool.write_all(buf)?;
        self.spooled += buf.len();
        self.written += buf.len() as u64;
        if self.spooled >= self.part_bytes {
            self.send_part()?;
        }
        Ok(buf.len())
    }

    /// Flushes the spool; parts go up only when full.
    fn flush(&mut self) -> std::io::Result<()> {
        match self.spool.as_mut() {
            Some(spool) => spool.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for UploadStream {
    /// A stream dropped unfinished (the run failed) aborts its upload and removes its spool.
    fn drop(&mut self) {
        for part in &self.parts {
            part.abort();
        }
        if let Some(mut upload) = self.upload.take() {
            self.runtime.spawn(async move {
                let _ = upload.abort().await;
            });
        }
        if self.spool.take().is_some() {
            let _ = std::fs::remove_file(&self.spool_path);
        }
    }
}
