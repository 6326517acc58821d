//! The `convert` job: inputs → records → Arrow batches → a partitioned Parquet dataset.
//!
//! [`pipeline`] runs it on all cores (workers, channel, writer thread, commit); [`input`] reads
//! one input (the byte loop) and [`dispatch`] tells what each record is; [`incremental`] sets
//! aside inputs converted before; [`report`] adds up what happened; [`upload`] handles `s3://`
//! outputs. Per-record and per-file problems are reported and counted; they never stop the run.

pub mod dispatch;
mod incremental;
mod input;
mod pipeline;
pub mod report;
mod run_state;
mod upload;

use std::path::PathBuf;

use arrow::error::ArrowError;

pub use report::{ConvertSummary, Problem, SkippedFile};

use crate::dataset::{DatasetError, OutputMode};
use crate::store::{S3Url, StoreError, Stores};
use crate::write::{WriteError, WriteOptions};

/// Settings of a conversion.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// Files, directories, glob patterns, `s3://bucket/prefix` URLs, or `-` for stdin.
    pub inputs: Vec<String>,
    /// A directory, or an `s3://bucket/prefix` URL (written through a local staging directory).
    pub output: PathBuf,
    /// What to do when the output already holds a dataset.
    pub mode: OutputMode,
    pub write: WriteOptions,
    /// Threads that read and flatten input files.
    pub threads: usize,
    /// Rows per record batch handed to the writer.
    pub batch_rows: usize,
    /// Stop at the first problem and commit nothing.
    pub strict: bool,
}

/// The default rows per record batch handed to the writer.
pub const DEFAULT_BATCH_ROWS: usize = 8192;

impl ConvertOptions {
    /// A conversion of `inputs` into a new dataset at `output`, with every other setting at its
    /// default (the same defaults the command line shows).
    pub fn new(inputs: Vec<String>, output: impl Into<PathBuf>) -> ConvertOptions {
        let write = WriteOptions::default();
        ConvertOptions {
            inputs,
            output: output.into(),
            mode: OutputMode::Fresh,
            threads: write.threads,
            write,
            batch_rows: DEFAULT_BATCH_ROWS,
            strict: false,
        }
    }
}

/// A conversion that could not run or could not commit its output.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("no input files found ({0})")]
    NoInputs(String),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error("stopped at the first problem (--strict); nothing was written: {0}")]
    Strict(Problem),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{output}: {message}")]
    Output { output: String, message: String },
    /// The flattener's rows could not be made into a batch: a fatal error, never a silent loss.
    #[error("building a batch of {rows} rows read up to {input}: {source}")]
    Batch {
        rows: usize,
        input: String,
        source: ArrowError,
    },
    #[error("starting a thread: {0}")]
    Thread(std::io::Error),
}

/// Progress callbacks (the CLI draws a bar; the library default does nothing).
pub trait ProgressSink: Sync {
    fn start(&self, _files: usize, _bytes: Option<u64>) {}
    fn file_done(&self, _events: u64, _bytes: u64) {}
    fn finishing(&self) {}
    /// The dataset is complete locally and is being uploaded to an object store.
    fn uploading(&self, _files: usize, _bytes: u64) {}
    fn uploaded(&self, _bytes: u64) {}
}

/// A [`ProgressSink`] that ignores everything.
pub struct NoProgress;
impl ProgressSink for NoProgress {}

/// Runs a conversion. Problems with single inputs or records are in the summary; an error means
/// nothing was committed.
pub fn convert(
    options: &ConvertOptions,
    progress: &dyn ProgressSink,
) -> Result<ConvertSummary, ConvertError> {
    match options.output.to_str().and_then(S3Url::parse).transpose()? {
        Some(url) => upload::convert_to_s3(options, &url, &Stores::new()?, progress),
        None => {
            let stores = options
                .inputs
                .iter()
                .any(|i| S3Url::is_s3(i))
                .then(Stores::new)
                .transpose()?;
            pipeline::convert_local(options, stores.as_ref(), progress)
        }
    }
}
