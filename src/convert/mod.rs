//! The `convert` job: inputs → records → Arrow batches → a partitioned Parquet dataset.
//!
//! [`pipeline`] runs it on all cores (workers, channel, writer thread, commit); [`input`] reads
//! one input (the byte loop; [`parallel`] shares a large one's flattening) and [`dispatch`]
//! tells what each record is; [`stream`] reads inputs into batches without writing them;
//! [`incremental`] sets aside inputs converted before; [`report`] adds up what happened. The output is a Delta Lake
//! table on local disk or S3 ([`crate::dataset::table`]). Per-record and per-file problems are
//! reported and counted; they never stop the run.

pub mod dispatch;
mod incremental;
mod input;
mod parallel;
mod pipeline;
pub mod report;
mod run_state;
pub mod scan;
pub mod stream;

use std::path::PathBuf;

use arrow::error::ArrowError;

pub use report::{ConvertSummary, Problem, SkippedFile};

use crate::dataset::{DatasetError, OutputMode};
use crate::store::{StoreError, Stores};
use crate::write::{WriteError, WriteOptions};

/// Settings of a conversion.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// Files, directories, glob patterns, `s3://bucket/prefix` URLs, or `-` for stdin.
    pub inputs: Vec<String>,
    /// The table: a directory, or an `s3://bucket/prefix` URL.
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
    /// Convert only this slice of the inputs (several processes, one slice each, convert one
    /// archive into one table at once).
    pub shard: Option<Shard>,
    /// Keep each event's original JSON text in the column
    /// [`crate::schema::RAW_EVENT_COLUMN`] (a table keeps it or not, for all its runs).
    pub keep_raw: bool,
    /// An input of at least this many bytes (as stored) has its records flattened by `threads`
    /// helper threads instead of by the one worker that reads it (a large `Records` file: a Lake
    /// export, concatenated archives). CloudTrail's own delivery files are far smaller.
    pub shared_input_bytes: u64,
}

/// The default [`ConvertOptions::shared_input_bytes`].
pub const DEFAULT_SHARED_INPUT_BYTES: u64 = 16 << 20;

/// One of `count` slices of the inputs (`--shard INDEX/COUNT`, `INDEX` from 1): an input belongs
/// to the slice its path hashes to, so every process given the same inputs agrees on the slices
/// without talking to the others.
///
/// ```
/// use keytrail::convert::Shard;
///
/// let shard: Shard = "2/3".parse().unwrap();
/// assert_eq!((shard.index, shard.count), (2, 3));
/// assert!("0/3".parse::<Shard>().is_err());
/// assert!("4/3".parse::<Shard>().is_err());
/// let slices: Vec<usize> = (1..=3).map(|i| ["a", "b", "c", "d", "e", "f"].iter().filter(|p| Shard { index: i, count: 3 }.holds(p)).count()).collect();
/// assert_eq!(slices.iter().sum::<usize>(), 6, "every input is in exactly one slice");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// From 1 to `count`.
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Whether the input at `path` (as discovery names it) is in this slice.
    pub fn holds(&self, path: &str) -> bool {
        xxhash_rust::xxh3::xxh3_64(path.as_bytes()) % u64::from(self.count) == u64::from(self.index - 1)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{text}`: a shard is INDEX/COUNT with 1 <= INDEX <= COUNT, such as 2/3");
        let (index, count) = text.split_once('/').ok_or_else(bad)?;
        let index: u32 = index.trim().parse().map_err(|_| bad())?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        if index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
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
            shard: None,
            keep_raw: false,
            shared_input_bytes: DEFAULT_SHARED_INPUT_BYTES,
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
    let stores = Stores::new()?;
    let target = stores.table_target(&options.output)?;
    pipeline::convert_into(options, &target, &stores, progress)
}
