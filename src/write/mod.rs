//! Writing flattened batches as a Hive-partitioned Parquet dataset.
//!
//! Every Parquet file is sorted by event time (then event id and the other identity columns) and
//! files roll at a size threshold instead of one small file per input. Inputs arrive in delivery
//! order, so a partition's rows are nearly sorted: they wait in memory, and when memory runs short
//! the rows older than the partition's 15-minute reorder window are sorted and appended to its open
//! file (see [`DatasetWriter::set_watermark`]). Only rows that arrive after later ones were
//! written, or partitions whose window does not fit in memory, are spilled as sorted Arrow IPC
//! runs and merged with the partition's files at the end. Files are written under a hidden
//! staging directory and renamed into place only when complete, so no reader ever sees a partial
//! file.

mod gather;
pub mod output;
mod parquet_file;

pub use parquet_file::writer_properties as parquet_properties;
pub mod partition;
pub mod quarantine;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch, UInt32Array};
use arrow::array::{DynComparator, make_comparator};
use arrow::datatypes::{SchemaRef, TimestampMicrosecondType};
use arrow::error::ArrowError;
use arrow::ipc::CompressionType;
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::{FileWriter, IpcWriteOptions};
use tracing::{debug, info, info_span};

use parquet_file::RollingWriter;

pub use output::{DatasetMarker, InputRecord, OutputDir, OutputMode, prepare_output};
pub use partition::{PartitionKey, Partitioning};

/// Errors writing the dataset. Each names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Parquet {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    #[error("{context}: {source}")]
    Arrow { context: String, source: ArrowError },
    #[error("{0}")]
    Refused(String),
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> WriteError + '_ {
    move |source| WriteError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn arrow_error(context: &str) -> impl FnOnce(ArrowError) -> WriteError + '_ {
    move |source| WriteError::Arrow {
        context: context.to_string(),
        source,
    }
}

/// Settings of a dataset write.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub partitioning: Partitioning,
    /// A file is closed once its encoded size reaches this many bytes.
    pub target_file_bytes: u64,
    /// Buffered Arrow data above this many bytes is sorted and spilled to disk.
    pub memory_limit_bytes: usize,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// Threads that encode Parquet at the end.
    pub threads: usize,
    /// How spilled runs are compressed.
    pub spill_compression: SpillCompression,
    /// How the Parquet files are compressed.
    pub compression: ParquetCompression,
}

/// Compression of the Parquet files' pages: `zstd` (level 1), `zstd(LEVEL)` (1–22), `snappy` or
/// `none`.
///
/// Level 1 is the default: on generated CloudTrail it wrote 2% smaller files than level 3 with 7%
/// less CPU for the whole conversion (benches/README.md).
///
/// ```
/// use keytrail::write::ParquetCompression;
///
/// assert_eq!("zstd".parse(), Ok(ParquetCompression::Zstd(1)));
/// assert_eq!("ZSTD(9)".parse(), Ok(ParquetCompression::Zstd(9)));
/// assert_eq!("snappy".parse::<ParquetCompression>().map(|c| c.to_string()), Ok("snappy".into()));
/// assert!("zstd(23)".parse::<ParquetCompression>().is_err());
/// assert!("gzip".parse::<ParquetCompression>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParquetCompression {
    Zstd(i32),
    Snappy,
    None,
}

impl Default for ParquetCompression {
    fn default() -> Self {
        ParquetCompression::Zstd(1)
    }
}

impl ParquetCompression {
    pub(crate) fn parquet(self) -> parquet::basic::Compression {
        use parquet::basic::{Compression, ZstdLevel};
        match self {
            // The level was checked when parsed; an unchecked one falls back to the default.
            ParquetCompression::Zstd(level) => {
                Compression::ZSTD(ZstdLevel::try_new(level).unwrap_or_default())
            }
            ParquetCompression::Snappy => Compression::SNAPPY,
            ParquetCompression::None => Compression::UNCOMPRESSED,
        }
    }
}

impl std::str::FromStr for ParquetCompression {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let lower = text.trim().to_ascii_lowercase();
        let level = |digits: &str| match digits.parse::<i32>() {
            Ok(level) if (1..=22).contains(&level) => Ok(ParquetCompression::Zstd(level)),
            _ => Err(format!("`{text}`: the zstd level must be a number from 1 to 22")),
        };
        match lower.as_str() {
            "zstd" => Ok(ParquetCompression::default()),
            "snappy" => Ok(ParquetCompression::Snappy),
            "none" | "uncompressed" => Ok(ParquetCompression::None),
            _ => match lower
                .strip_prefix("zstd(")
                .and_then(|rest| rest.strip_suffix(')'))
            {
                Some(digits) => level(digits),
                None => Err(format!(
                    "`{text}` is not a Parquet compression keytrail writes: use zstd, zstd(LEVEL), snappy or none"
                )),
            },
        }
    }
}

impl std::fmt::Display for ParquetCompression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParquetCompression::Zstd(level) => write!(f, "zstd({level})"),
            ParquetCompression::Snappy => f.write_str("snappy"),
            ParquetCompression::None => f.write_str("none"),
        }
    }
}

/// Compression of the sorted runs spilled to disk (each Arrow buffer compressed on its own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SpillCompression {
    /// Uncompressed Arrow IPC
    None,
    /// LZ4 frames: cheap to write and read, several times smaller
    #[default]
    Lz4,
    /// Zstandard: smaller still, more CPU
    Zstd,
}

impl SpillCompression {
    fn ipc(self) -> Option<CompressionType> {
        match self {
            SpillCompression::None => None,
            SpillCompression::Lz4 => Some(CompressionType::LZ4_FRAME),
            SpillCompression::Zstd => Some(CompressionType::ZSTD),
        }
    }
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            partitioning: Partitioning::default(),
            target_file_bytes: 256 * 1024 * 1024,
            // Rows waiting and Parquet row groups being built count against it. Peak RSS was
            // 408-435 MB with 96 MiB on 1M and 5M generated events (batches in flight between
            // workers and writer, the workers' builders); 256 MiB took ~5% less CPU at 674 MB.
            memory_limit_bytes: 96 * 1024 * 1024,
            row_group_rows: 128 * 1024,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            spill_compression: SpillCompression::default(),
            compression: ParquetCompression::default(),
        }
    }
}

/// One Parquet file written (path relative to the output directory).
#[derive(Debug, Clone, serde::Serialize)]
pub struct WrittenFile {
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
}

/// What a finished write produced.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WriteSummary {
    pub rows: u64,
    pub partitions: usize,
    pub files: Vec<WrittenFile>,
    pub spilled_runs: usize,
    /// Rows dropped as copies of an event already written.
    pub duplicates: u64,
    /// Rows that arrived after later rows of their partition were written (merged in at the end).
    pub late_rows: u64,
}

/// How far back in event time a partition's newest rows are held unwritten: rows may arrive this
/// much out of order and still be written in order. CloudTrail writes one file per account and
/// Region about every 5 minutes, with its events unsorted, and delivers within about 5 minutes.
const REORDER_WINDOW_MICROS: i64 = 15 * 60 * 1_000_000;

/// A partition that received no rows in this many batches is idle: under memory pressure it is
/// written out completely, and its file closed, before active partitions give up their window.
const IDLE_AFTER_BATCHES: u64 = 64;

/// Parquet files open at once at most. A partition that finds no free slot spills sorted runs,
/// which are merged at the end, instead of writing as it goes.
const MAX_OPEN_FILES: usize = 64;

/// One partition's rows on their way to its Parquet files.
///
/// Rows wait in `pending` until memory runs short; then the rows more than
/// [`REORDER_WINDOW_MICROS`] older than the partition's newest row (and than the watermark, see
/// [`DatasetWriter::set_watermark`]) are sorted and appended to the partition's open Parquet
/// file. Inputs read in delivery order thus stream to Parquet without being spilled. Rows that
/// sort before a row already written (`late`), and runs spilled when the window holds most of the
/// buffer, make the partition *unordered*: at the end its files are merged with them and
/// rewritten, so every file is still sorted.
struct PartitionState {
    path: String,
    pending: Vec<RecordBatch>,
    pending_bytes: usize,
    late: Vec<RecordBatch>,
    late_bytes: usize,
    late_rows: u64,
    /// Sorted runs spilled to disk, merged in at the end.
    runs: Vec<PathBuf>,
    /// A one-row copy of the last row written: rows that sort before it are late.
    last_written: Option<RecordBatch>,
    dedup: Dedup,
    sink: RollingWriter,
    sink_bytes: usize,
    last_touched: u64,
}

impl PartitionState {
    fn new(output: &OutputDir, schema: &SchemaRef, options: &WriteOptions, path: &str) -> PartitionState {
        PartitionState {
            path: path.to_string(),
            pending: Vec::new(),
            pending_bytes: 0,
            late: Vec::new(),
            late_bytes: 0,
            late_rows: 0,
            runs: Vec::new(),
            last_written: None,
            dedup: Dedup::default(),
            sink: RollingWriter::new(output, schema, options, path, 0),
            sink_bytes: 0,
            last_touched: 0,
        }
    }

    fn held_bytes(&self) -> usize {
        self.pending_bytes + self.late_bytes + self.sink_bytes
    }

    /// Whether the files written so far must be merged with other rows at the end.
    fn unordered(&self) -> bool {
        !self.late.is_empty() || !self.runs.is_empty()
    }

    /// Takes rows in; those that sort before the last row written are set aside as late.
    fn accept(&mut self, batch: RecordBatch) -> Result<(), WriteError> {
        let late = match &self.last_written {
            Some(last) => late_rows(&batch, last),
            None => None,
        };
        let Some(late) = late else {
            self.pending_bytes += batch.get_array_memory_size();
            self.pending.push(batch);
            return Ok(());
        };
        let context = "setting late rows aside";
        let on_time = arrow::compute::not(&late).map_err(arrow_error(context))?;
        let late = arrow::compute::filter_record_batch(&batch, &late).map_err(arrow_error(context))?;
        let on_time = arrow::compute::filter_record_batch(&batch, &on_time).map_err(arrow_error(context))?;
        self.late_rows += late.num_rows() as u64;
        self.late_bytes += late.get_array_memory_size();
        self.late.push(late);
        if on_time.num_rows() > 0 {
            self.pending_bytes += on_time.get_array_memory_size();
            self.pending.push(on_time);
        }
        Ok(())
    }

    /// Writes every pending row, in order.
    fn write_all_pending(&mut self, output: &OutputDir) -> Result<(), WriteError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let sorted = SortedRows::new(std::mem::take(&mut self.pending), MERGE_BATCH_ROWS);
        let total = sorted.len();
        self.write_sorted(output, sorted, total)
    }

    /// Frees the pending rows: writes those older than the reorder window before the
    /// partition's newest row or `watermark` (whichever is older), keeping the rest. When the
    /// window holds more than three quarters of them, or `may_write` is false, they are spilled
    /// as one sorted run instead (sorted once either way).
    fn relieve_pending(
        &mut self,
        output: &OutputDir,
        spiller: &mut Spiller<'_>,
        watermark: Option<i64>,
        may_write: bool,
    ) -> Result<(), WriteError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let sorted = SortedRows::new(std::mem::take(&mut self.pending), MERGE_BATCH_ROWS);
        let total = sorted.len();
        let cut = sorted.rows_before_window(REORDER_WINDOW_MICROS, watermark);
        if may_write && cut >= total.div_ceil(4) {
            return self.write_sorted(output, sorted, cut);
        }
        self.pending_bytes = 0;
        let _span = info_span!("spill", partition = %self.path, late = false).entered();
        self.runs.push(spiller.spill(sorted)?);
        Ok(())
    }

    /// Writes the first `cut` of the sorted rows to the partition's file; the rest stay pending.
    fn write_sorted(
        &mut self,
        output: &OutputDir,
        mut sorted: SortedRows,
        cut: usize,
    ) -> Result<(), WriteError> {
        self.pending_bytes = 0;
        let context = "writing sorted rows";
        self.dedup.load_committed(&output.existing_files(&self.path))?;
        while let Some(chunk) = sorted.next_until(cut) {
            let chunk = chunk.map_err(arrow_error(context))?;
            self.sink.write(&self.dedup.filter(&chunk)?)?;
        }
        if let Some(last) = cut.checked_sub(1) {
            self.last_written = Some(sorted.row(last).map_err(arrow_error(context))?);
        }
        self.sink_bytes = self.sink.memory_size();
        let total = sorted.len();
        while let Some(chunk) = sorted.next_until(total) {
            let chunk = chunk.map_err(arrow_error(context))?;
            self.pending_bytes += chunk.get_array_memory_size();
            self.pending.push(chunk);
        }
        Ok(())
    }

    /// Spills the pending rows, or the late ones, as a sorted run.
    fn spill(&mut self, spiller: &mut Spiller<'_>, late: bool) -> Result<(), WriteError> {
        let batches = if late {
            self.late_bytes = 0;
            std::mem::take(&mut self.late)
        } else {
            self.pending_bytes = 0;
            std::mem::take(&mut self.pending)
        };
        if !batches.is_empty() {
            let _span = info_span!("spill", partition = %self.path, late).entered();
            self.runs
                .push(spiller.spill(SortedRows::new(batches, SPILL_BATCH_ROWS))?);
        }
        Ok(())
    }

    /// Frees what an idle partition holds: its rows are written (or spilled when they must be
    /// merged anyway), its file closed and the committed ids it loaded dropped.
    fn retire(&mut self, output: &OutputDir, spiller: &mut Spiller<'_>) -> Result<(), WriteError> {
        if self.unordered() {
            self.spill(spiller, false)?;
            self.spill(spiller, true)?;
        } else {
            self.write_all_pending(output)?;
        }
        self.sink.close_file()?;
        self.sink_bytes = 0;
        self.dedup.unload_committed();
        Ok(())
    }

    /// Writes everything left. An unordered partition's files are read back and merged with its
    /// late rows and spilled runs into new files, which replace them.
    fn finish(
        mut self,
        output: &OutputDir,
        schema: &SchemaRef,
        options: &WriteOptions,
    ) -> Result<(Vec<WrittenFile>, u64), WriteError> {
        let _span = info_span!("finish_partition", partition = %self.path).entered();
        if !self.unordered() {
            self.write_all_pending(output)?;
            return Ok((self.sink.finish()?, self.dedup.dropped));
        }
        if self.late_rows > 0 {
            info!(
                partition = %self.path,
                late_rows = self.late_rows,
                "rows arrived after later rows of their partition were written; merging its files again"
            );
        }
        let next_index = self.sink.next_index();
        let staged: Vec<PathBuf> = (self.sink.finish()?.iter())
            .map(|f| output.staging_dir().join(&f.path))
            .collect();
        let mut sources: Vec<RunReader> = Vec::new();
        if !staged.is_empty() {
            sources.push(Box::new(staged_files_reader(staged.clone(), schema.clone())));
        }
        let mut in_memory = std::mem::take(&mut self.pending);
        in_memory.append(&mut self.late);
        if !in_memory.is_empty() {
            sources.push(Box::new(SortedRows::new(in_memory, MERGE_BATCH_ROWS)));
        }
        for run in &self.runs {
            let file = File::open(run).map_err(io_error(run))?;
            let reader = FileReader::try_new(file, None).map_err(arrow_error("reading a spilled run"))?;
            sources.push(Box::new(reader));
        }
        let mut sink = RollingWriter::new(output, schema, options, &self.path, next_index);
        let mut dedup = Dedup::default();
        dedup.load_committed(&output.existing_files(&self.path))?;
        merge_runs(sources, &mut |batch| sink.write(&dedup.filter(batch)?))?;
        let files = sink.finish()?;
        for path in staged.iter().chain(&self.runs) {
            fs::remove_file(path).map_err(io_error(path))?;
        }
        Ok((files, self.dedup.dropped + dedup.dropped))
    }
}

/// Which rows of `batch` sort before `last`; `None` when none do.
fn late_rows(batch: &RecordBatch, last: &RecordBatch) -> Option<BooleanArray> {
    let times = batch.column(0).as_primitive::<TimestampMicrosecondType>();
    let last_time = last.column(0).as_primitive::<TimestampMicrosecondType>().value(0);
    // Most batches arrive after the last row written: one comparison of the oldest time says so.
    if arrow::compute::min(times).is_none_or(|oldest| oldest > last_time) {
        return None;
    }
    // Both batches have the writer's schema, so the key columns are at the same places.
    let columns = key_columns(&batch.schema());
    let mask: BooleanArray = (0..batch.num_rows())
        .map(|row| {
            Some(match times.value(row).cmp(&last_time) {
                std::cmp::Ordering::Less => true,
                std::cmp::Ordering::Greater => false,
                std::cmp::Ordering::Equal => cmp_rows(batch, row, last, 0, &columns).is_lt(),
            })
        })
        .collect();
    (mask.true_count() > 0).then_some(mask)
}

/// Writes sorted runs to the staging area's spill directory.
struct Spiller<'a> {
    output: &'a OutputDir,
    schema: &'a SchemaRef,
    compression: SpillCompression,
    runs: &'a mut usize,
}

impl Spiller<'_> {
    /// Writes the rows as a run, in `SPILL_BATCH_ROWS` batches.
    fn spill(&mut self, mut sorted: SortedRows) -> Result<PathBuf, WriteError> {
        let context = "spilling a sorted run";
        sorted.chunk_rows = SPILL_BATCH_ROWS;
        let run_path = self
            .output
            .spill_dir()
            .join(format!("run-{:06}.arrow", *self.runs));
        *self.runs += 1;
        let file = File::create(&run_path).map_err(io_error(&run_path))?;
        let ipc_options = IpcWriteOptions::default()
            .try_with_compression(self.compression.ipc())
            .map_err(arrow_error(context))?;
        let mut writer = FileWriter::try_new_with_options(BufWriter::new(file), self.schema, ipc_options)
            .map_err(arrow_error(context))?;
        let mut rows = 0;
        for chunk in sorted {
            let chunk = chunk.map_err(arrow_error(context))?;
            rows += chunk.num_rows();
            writer.write(&chunk).map_err(arrow_error(context))?;
        }
        writer.finish().map_err(arrow_error(context))?;
        debug!(run = %run_path.display(), rows, "spilled run");
        Ok(run_path)
    }
}

/// The rows of a partition's staged Parquet files, in file order, decoded as `schema`.
fn staged_files_reader(
    files: Vec<PathBuf>,
    schema: SchemaRef,
) -> impl Iterator<Item = Result<RecordBatch, ArrowError>> + Send {
    files.into_iter().flat_map(move |path| {
        let opened = File::open(&path)
            .map_err(|e| {
                ArrowError::ExternalError(Box::new(WriteError::Io {
                    path: path.clone(),
                    source: e,
                }))
            })
            .and_then(|file| {
                let options =
                    parquet::arrow::arrow_reader::ArrowReaderOptions::new().with_schema(schema.clone());
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new_with_options(
                    file, options,
                )
                .and_then(|builder| builder.with_batch_size(MERGE_BATCH_ROWS).build())
                .map_err(|source| {
                    ArrowError::ExternalError(Box::new(WriteError::Parquet {
                        path: path.clone(),
                        source,
                    }))
                })
            });
        let batches: Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>> + Send> = match opened {
            Ok(reader) => Box::new(reader),
            Err(e) => Box::new(std::iter::once(Err(e))),
        };
        batches
    })
}

/// Writes batches into a staging area and commits them to the output directory on finish.
pub struct DatasetWriter {
    output: OutputDir,
    schema: SchemaRef,
    options: WriteOptions,
    /// Partitions that received rows recently or still hold some.
    active: HashMap<String, PartitionState>,
    /// Partitions written out for now, their files closed; taken back if more rows arrive.
    retired: HashMap<String, PartitionState>,
    held_bytes: usize,
    spills: usize,
    rows: u64,
    batches: u64,
    watermark: Option<i64>,
}

impl DatasetWriter {
    pub fn new(output: OutputDir, schema: SchemaRef, options: WriteOptions) -> DatasetWriter {
        DatasetWriter {
            output,
            schema,
            options,
            active: HashMap::new(),
            retired: HashMap::new(),
            held_bytes: 0,
            spills: 0,
            rows: 0,
            batches: 0,
            watermark: None,
        }
    }

    /// Gives up: removes the staging area, commits nothing.
    pub fn abandon(self) {
        // Open Parquet writers hold files in the staging area: close them before removing it.
        drop(self.active);
        drop(self.retired);
        self.output.abandon();
    }

    /// Tells the writer that, as far as the readers know, no row older than `time` minus the
    /// reorder window will come any more (the oldest of the readers' newest event times). Rows
    /// are written only up to there, so readers that run ahead of each other do not make the
    /// laggard's rows late. `None` (the default): no such limit.
    pub fn set_watermark(&mut self, time: Option<i64>) {
        self.watermark = time;
    }

    /// Rows accepted so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Adds a batch of flattened rows.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), WriteError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.rows += batch.num_rows() as u64;
        self.batches += 1;
        let partitions = self.options.partitioning.row_partitions(batch);
        // Rows grouped by partition, each group in input order (a counting sort on the ids).
        let mut starts = vec![0u32; partitions.paths.len() + 1];
        for id in &partitions.ids {
            starts[*id as usize + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut order = vec![0u32; batch.num_rows()];
        let mut next = starts.clone();
        for (row, id) in partitions.ids.iter().enumerate() {
            order[next[*id as usize] as usize] = row as u32;
            next[*id as usize] += 1;
        }
        for (id, path) in partitions.paths.iter().enumerate() {
            let (start, end) = (starts[id] as usize, starts[id + 1] as usize);
            let part = if partitions.paths.len() == 1 {
                batch.clone()
            } else {
                let indices = UInt32Array::from(order[start..end].to_vec());
                gather::take_rows(batch, &indices).map_err(arrow_error("partitioning rows"))?
            };
            let state = match self.active.get_mut(path.as_str()) {
                Some(state) => state,
                None => {
                    let state = self.retired.remove(path.as_str()).unwrap_or_else(|| {
                        PartitionState::new(&self.output, &self.schema, &self.options, path)
                    });
                    self.active.entry(path.clone()).or_insert(state)
                }
            };
            let before = state.held_bytes();
            state.last_touched = self.batches;
            state.accept(part)?;
            self.held_bytes = self.held_bytes + state.held_bytes() - before;
        }
        while self.held_bytes > self.options.memory_limit_bytes && self.relieve()? {}
        Ok(())
    }

    /// Frees memory: retires the longest-idle partition, else lets the partition holding the
    /// most write or spill it. False when nothing could be freed.
    fn relieve(&mut self) -> Result<bool, WriteError> {
        let mut spiller = Spiller {
            output: &self.output,
            schema: &self.schema,
            compression: self.options.spill_compression,
            runs: &mut self.spills,
        };
        let idle_before = self.batches.saturating_sub(IDLE_AFTER_BATCHES);
        let idle = self
            .active
            .iter()
            .filter(|(_, s)| s.last_touched < idle_before)
            .min_by_key(|(_, s)| s.last_touched)
            .map(|(path, _)| path.clone());
        if let Some(path) = idle
            && let Some(mut state) = self.active.remove(&path)
        {
            let before = state.held_bytes();
            state.retire(&self.output, &mut spiller)?;
            self.held_bytes = self.held_bytes + state.held_bytes() - before;
            self.retired.insert(path, state);
            return Ok(true);
        }
        let open_files = self.active.values().filter(|s| s.sink.is_open()).count();
        let Some(state) = self
            .active
            .values_mut()
            .max_by_key(|s| s.pending_bytes.max(s.late_bytes).max(s.sink_bytes))
        else {
            return Ok(false);
        };
        let before = state.held_bytes();
        if state.pending_bytes >= state.late_bytes.max(state.sink_bytes) {
            let may_write = !state.unordered() && (state.sink.is_open() || open_files < MAX_OPEN_FILES);
            state.relieve_pending(&self.output, &mut spiller, self.watermark, may_write)?;
        } else if state.late_bytes >= state.sink_bytes {
            state.spill(&mut spiller, true)?;
        } else {
            state.sink.flush_row_group()?;
            state.sink_bytes = state.sink.memory_size();
        }
        let after = state.held_bytes();
        self.held_bytes = self.held_bytes + after - before;
        Ok(after < before)
    }

    /// Writes what is left of every partition into the staging area. Nothing is visible to
    /// readers until [`OutputDir::commit`].
    pub fn finish(self) -> Result<(OutputDir, WriteSummary), WriteError> {
        let DatasetWriter {
            output,
            schema,
            options,
            active,
            retired,
            spills,
            rows,
            ..
        } = self;
        let mut partitions: Vec<PartitionState> = active.into_values().chain(retired.into_values()).collect();
        let late_rows = partitions.iter().map(|p| p.late_rows).sum();
        partitions.sort_by(|a, b| a.path.cmp(&b.path));
        let count = partitions.len();
        let next = AtomicUsize::new(0);
        let duplicates = std::sync::atomic::AtomicU64::new(0);
        let written = Mutex::new(Vec::new());
        let first_error = Mutex::new(None);
        let work = Mutex::new(partitions.into_iter().map(Some).collect::<Vec<_>>());
        std::thread::scope(|scope| {
            for _ in 0..options.threads.max(1).min(count.max(1)) {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count || first_error.lock().map(|e| e.is_some()).unwrap_or(true) {
                            break;
                        }
                        let Some(state) = work.lock().ok().and_then(|mut w| w[i].take()) else {
                            break;
                        };
                        match state.finish(&output, &schema, &options) {
                            Ok((files, dropped)) => {
                                duplicates.fetch_add(dropped, Ordering::Relaxed);
                                written
                                    .lock()
                                    .expect("no thread panics while holding it")
                                    .extend(files)
                            }
                            Err(e) => {
                                first_error
                                    .lock()
                                    .expect("no thread panics while holding it")
                                    .get_or_insert(e);
                            }
                        }
                    }
                });
            }
        });
        if let Some(error) = first_error.into_inner().expect("threads joined") {
            return Err(error);
        }
        let mut files = written.into_inner().expect("threads joined");
        files.sort_by(|a: &WrittenFile, b| a.path.cmp(&b.path));
        let partition_count = files
            .iter()
            .map(|f| f.path.rsplit_once('/').map_or("", |(dir, _)| dir))
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        Ok((
            output,
            WriteSummary {
                rows,
                partitions: partition_count,
                files,
                spilled_runs: spills,
                duplicates: duplicates.into_inner(),
                late_rows,
            },
        ))
    }
}

const MERGE_BATCH_ROWS: usize = 8192;

/// Rows per batch of a spilled run. The merge holds one decoded batch of every run at a time (up
/// to two while a chunk is gathered), so this, not the memory limit, bounds the merge's memory:
/// at ~1.7 KB per row, 8192-row batches of 6 runs held 160 MB per partition being written.
const SPILL_BATCH_ROWS: usize = 1024;

/// Rows of several batches in `(event_time, event_id)` order, the order of every output file.
///
/// Only row positions are sorted (by keys borrowed from the batches); rows are then gathered from
/// the original batches in chunks of `chunk_rows`, so sorting never holds a second copy of the
/// partition.
struct SortedRows {
    batches: Vec<RecordBatch>,
    columns: KeyColumns,
    order: Vec<(usize, usize)>,
    next: usize,
    chunk_rows: usize,
}

impl SortedRows {
    fn new(batches: Vec<RecordBatch>, chunk_rows: usize) -> SortedRows {
        // Keys borrow from the batches: concatenating the sort columns for a lexsort copied the
        // large request/response JSON columns (only tie-breakers) on every spill.
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let columns = batches.first().map_or([0; 6], |b| key_columns(&b.schema()));
        let mut keyed: Vec<(KeyPrefix, (usize, usize))> = Vec::with_capacity(rows);
        for (b, batch) in batches.iter().enumerate() {
            let key = |row| key_prefix(&row_key(batch, &columns, row));
            keyed.extend((0..batch.num_rows()).map(|row| (key(row), (b, row))));
        }
        let full_key = |(b, row): (usize, usize)| row_key(&batches[b], &columns, row);
        let mut ties = TieBreaker::default();
        keyed.sort_by(|x, y| {
            x.0.cmp(&y.0)
                .then_with(|| cmp_keys(&full_key(x.1), &full_key(y.1)))
                .then_with(|| ties.cmp(&batches, x.1, y.1))
        });
        let order = keyed.into_iter().map(|(_, at)| at).collect();
        SortedRows {
            batches,
            columns,
            order,
            next: 0,
            chunk_rows,
        }
    }

    fn len(&self) -> usize {
        self.order.len()
    }

    /// The key of the `i`-th row in sorted order.
    fn key(&self, i: usize) -> SortKey<'_> {
        let (b, row) = self.order[i];
        row_key(&self.batches[b], &self.columns, row)
    }

    /// A copy of the `i`-th row in sorted order.
    fn row(&self, i: usize) -> Result<RecordBatch, ArrowError> {
        gather::interleave_rows(&self.batches.iter().collect::<Vec<_>>(), &self.order[i..=i])
    }

    /// How many rows are older than `window` before the newest row's time or the watermark,
    /// whichever is older.
    fn rows_before_window(&self, window: i64, watermark: Option<i64>) -> usize {
        let Some(last) = self.order.len().checked_sub(1) else {
            return 0;
        };
        let newest = self.key(last).time.min(watermark.unwrap_or(i64::MAX));
        let start = newest.saturating_sub(window);
        self.order.partition_point(|&(b, row)| {
            self.batches[b]
                .column(0)
                .as_primitive::<TimestampMicrosecondType>()
                .value(row)
                < start
        })
    }

    /// The next chunk of sorted rows, stopping at the `end`-th row.
    fn next_until(&mut self, end: usize) -> Option<Result<RecordBatch, ArrowError>> {
        let end = end.min(self.order.len()).min(self.next + self.chunk_rows);
        if self.next >= end {
            return None;
        }
        let refs: Vec<&RecordBatch> = self.batches.iter().collect();
        let chunk = gather::interleave_rows(&refs, &self.order[self.next..end]);
        self.next = end;
        Some(chunk)
    }
}

impl Iterator for SortedRows {
    type Item = Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_until(self.order.len())
    }
}

/// A sorted stream of batches: a spilled run, a partition's staged files, or rows sorted in memory.
type RunReader = Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>> + Send>;

/// A sorted run being merged: its current batch and position.
struct Cursor {
    batches: RunReader,
    batch: RecordBatch,
    row: usize,
}

/// The order of every output file, nulls last. The first four columns identify an event, so
/// copies of one event sort next to each other (that is how duplicates are found); the rest only
/// break ties, so that which copy is kept never depends on the order inputs were read in.
const SORT_COLUMNS: [&str; 7] = [
    "event_time",
    "event_id",
    "recipient_account_id",
    "event_name",
    "error_code",
    "request_parameters",
    "response_elements",
];

/// A row's values of [`SORT_COLUMNS`]: the time, then the text columns.
struct SortKey<'a> {
    time: i64,
    text: [Option<&'a str>; 6],
}

/// Where the text columns of [`SORT_COLUMNS`] are in a batch's schema; looked up once per batch
/// (or per merge), not per row.
type KeyColumns = [usize; 6];

fn key_columns(schema: &arrow::datatypes::Schema) -> KeyColumns {
    std::array::from_fn(|i| schema.index_of(SORT_COLUMNS[i + 1]).expect("sort columns exist"))
}

fn row_key<'b>(batch: &'b RecordBatch, columns: &KeyColumns, row: usize) -> SortKey<'b> {
    let text = |index: usize| {
        let values = batch.column(index).as_string::<i32>();
        (!values.is_null(row)).then(|| values.value(row))
    };
    let times = batch.column(0).as_primitive::<TimestampMicrosecondType>();
    SortKey {
        time: times.value(row),
        text: std::array::from_fn(|i| text(columns[i])),
    }
}

/// The start of a [`SortKey`] that orders like it wherever the two differ: the time, then the
/// event id's first 8 bytes (a missing id last). Sorting these (24 bytes) with the rows, rather
/// than the whole keys (104 bytes with six borrowed strings), moves a third of the memory, and
/// the whole keys are read only for the rare rows that tie on both.
type KeyPrefix = (i64, bool, u64);

fn key_prefix(key: &SortKey<'_>) -> KeyPrefix {
    let id = key.text[0].unwrap_or_default().as_bytes();
    let mut first = [0u8; 8];
    let n = id.len().min(8);
    first[..n].copy_from_slice(&id[..n]);
    (key.time, key.text[0].is_none(), u64::from_be_bytes(first))
}

fn cmp_keys(a: &SortKey<'_>, b: &SortKey<'_>) -> std::cmp::Ordering {
    fn nulls_last(x: Option<&str>, y: Option<&str>) -> std::cmp::Ordering {
        match (x, y) {
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
    }
    a.time.cmp(&b.time).then_with(|| {
        a.text
            .iter()
            .zip(&b.text)
            .map(|(x, y)| nulls_last(*x, *y))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    })
}

/// The order of every output file: by [`SORT_COLUMNS`], then rows equal in all of them by all
/// their columns, in schema order, so that the order of such rows (and which copy of a
/// duplicated event is kept) follows from the rows alone, never from which worker read them
/// first. [`SortedRows::new`] sorts in this order with a key prefix and cached tie-breakers.
fn cmp_rows(
    a: &RecordBatch,
    a_row: usize,
    b: &RecordBatch,
    b_row: usize,
    columns: &KeyColumns,
) -> std::cmp::Ordering {
    cmp_keys(&row_key(a, columns, a_row), &row_key(b, columns, b_row))
        .then_with(|| first_difference(&whole_row_comparators(a, b), a_row, b_row))
}

fn first_difference(comparators: &[DynComparator], a_row: usize, b_row: usize) -> std::cmp::Ordering {
    comparators
        .iter()
        .map(|compare| compare(a_row, b_row))
        .find(|o| o.is_ne())
        .unwrap_or(std::cmp::Ordering::Equal)
}

fn whole_row_comparators(a: &RecordBatch, b: &RecordBatch) -> Vec<DynComparator> {
    let options = arrow::compute::SortOptions {
        descending: false,
        nulls_first: false,
    };
    a.columns()
        .iter()
        .zip(b.columns())
        // Every type of the schema has an order; a column without one only breaks no ties.
        .filter_map(|(left, right)| make_comparator(left.as_ref(), right.as_ref(), options).ok())
        .collect()
}

/// The whole-row tie-break of [`cmp_rows`] for the rows of one sort, building each pair of
/// batches' comparators once: many rows may tie (a source without event ids), while real events
/// never do.
#[derive(Default)]
struct TieBreaker {
    comparators: HashMap<(usize, usize), Vec<DynComparator>>,
}

impl TieBreaker {
    fn cmp(&mut self, batches: &[RecordBatch], a: (usize, usize), b: (usize, usize)) -> std::cmp::Ordering {
        let comparators = self
            .comparators
            .entry((a.0, b.0))
            .or_insert_with(|| whole_row_comparators(&batches[a.0], &batches[b.0]));
        first_difference(comparators, a.1, b.1)
    }
}

/// An event's identity: `(event_time, event_id, recipient_account_id, event_name)`. CloudTrail's
/// duplicates are re-deliveries of one event, so they agree on all four; requiring time and name
/// as well as the id keeps hand-written examples that reuse an id apart.
type Identity = (i64, String, Option<String>, Option<String>);

/// The identity of a row, borrowed from its batch.
type IdentityRef<'a> = (i64, &'a str, Option<&'a str>, Option<&'a str>);

fn identity_ref(key: SortKey<'_>) -> Option<IdentityRef<'_>> {
    let [id, account, name, ..] = key.text;
    Some((key.time, id?, account, name))
}

fn owned(identity: IdentityRef<'_>) -> Identity {
    let (time, id, account, name) = identity;
    (
        time,
        id.to_string(),
        account.map(str::to_string),
        name.map(str::to_string),
    )
}

fn same(owned: &Identity, borrowed: &IdentityRef<'_>) -> bool {
    owned.0 == borrowed.0
        && owned.1 == borrowed.1
        && owned.2.as_deref() == borrowed.2
        && owned.3.as_deref() == borrowed.3
}

/// Drops rows whose identity was already written: earlier in this partition (adjacent, thanks to
/// the sort order) or, incrementally, by an earlier run.
#[derive(Default)]
struct Dedup {
    previous: Option<Identity>,
    /// Identities in the partition's committed files, loaded when first needed.
    committed: Option<std::collections::HashSet<Identity>>,
    dropped: u64,
}

impl Dedup {
    /// Reads the identities of a partition's committed files (incremental runs), once.
    fn load_committed(&mut self, existing_files: &[PathBuf]) -> Result<(), WriteError> {
        if self.committed.is_some() {
            return Ok(());
        }
        let mut committed = std::collections::HashSet::new();
        for path in existing_files {
            let file = File::open(path).map_err(io_error(path))?;
            let parquet_error = |source| WriteError::Parquet {
                path: path.clone(),
                source,
            };
            let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(parquet_error)?;
            let wanted: Vec<usize> = SORT_COLUMNS
                .iter()
                .filter_map(|name| builder.schema().index_of(name).ok())
                .collect();
            let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), wanted);
            for batch in builder.with_projection(mask).build().map_err(parquet_error)? {
                let batch = batch.map_err(arrow_error("reading committed event ids"))?;
                let columns = key_columns(&batch.schema());
                committed.extend(
                    (0..batch.num_rows())
                        .filter_map(|row| identity_ref(row_key(&batch, &columns, row)).map(owned)),
                );
            }
        }
        self.committed = Some(committed);
        Ok(())
    }

    /// Frees the committed identities (reloaded if the partition gets rows again).
    fn unload_committed(&mut self) {
        self.committed = None;
    }

    fn filter(&mut self, batch: &RecordBatch) -> Result<RecordBatch, WriteError> {
        let columns = key_columns(&batch.schema());
        let mut keep = Vec::with_capacity(batch.num_rows());
        // Identities are compared where they lie in the batch; only the last one is copied, to
        // compare the next batch's first row with.
        let mut previous: Option<IdentityRef<'_>> = None;
        for row in 0..batch.num_rows() {
            let Some(current) = identity_ref(row_key(batch, &columns, row)) else {
                keep.push(true);
                continue;
            };
            let repeated = match &previous {
                Some(previous) => *previous == current,
                None => self.previous.as_ref().is_some_and(|p| same(p, &current)),
            };
            let duplicate = repeated
                || self
                    .committed
                    .as_ref()
                    .is_some_and(|c| !c.is_empty() && c.contains(&owned(current)));
            previous = Some(current);
            keep.push(!duplicate);
            self.dropped += u64::from(duplicate);
        }
        if let Some(last) = previous {
            self.previous = Some(owned(last));
        }
        if keep.iter().all(|k| *k) {
            return Ok(batch.clone());
        }
        arrow::compute::filter_record_batch(batch, &arrow::array::BooleanArray::from(keep))
            .map_err(arrow_error("dropping duplicates"))
    }
}

/// k-way merge of sorted runs into the sink, in `MERGE_BATCH_ROWS` chunks.
fn merge_runs(
    runs: Vec<RunReader>,
    sink: &mut dyn FnMut(&RecordBatch) -> Result<(), WriteError>,
) -> Result<(), WriteError> {
    let context = "merging sorted runs";
    let mut cursors = Vec::new();
    for mut batches in runs {
        if let Some(first) = batches.next() {
            cursors.push(Cursor {
                batch: first.map_err(arrow_error(context))?,
                batches,
                row: 0,
            });
        }
    }
    cursors.retain(|c| c.batch.num_rows() > 0);
    let Some(first) = cursors.first() else {
        return Ok(());
    };
    let columns = key_columns(&first.batch.schema());
    let mut chunk_batches: Vec<RecordBatch> = cursors.iter().map(|c| c.batch.clone()).collect();
    let mut slot: Vec<usize> = (0..cursors.len()).collect();
    let mut indices: Vec<(usize, usize)> = Vec::with_capacity(MERGE_BATCH_ROWS);
    let mut live: Vec<bool> = vec![true; cursors.len()];
    loop {
        let mut best: Option<usize> = None;
        for (i, cursor) in cursors.iter().enumerate() {
            if live[i]
                && best.is_none_or(|b| {
                    let other = &cursors[b];
                    cmp_rows(&cursor.batch, cursor.row, &other.batch, other.row, &columns).is_lt()
                })
            {
                best = Some(i);
            }
        }
        let Some(b) = best else { break };
        indices.push((slot[b], cursors[b].row));
        cursors[b].row += 1;
        if cursors[b].row == cursors[b].batch.num_rows() {
            match cursors[b].batches.next() {
                Some(next) => {
                    cursors[b].batch = next.map_err(arrow_error(context))?;
                    cursors[b].row = 0;
                    chunk_batches.push(cursors[b].batch.clone());
                    slot[b] = chunk_batches.len() - 1;
                    live[b] = cursors[b].batch.num_rows() > 0;
                }
                None => live[b] = false,
            }
        }
        if indices.len() == MERGE_BATCH_ROWS {
            let refs: Vec<&RecordBatch> = chunk_batches.iter().collect();
            sink(&gather::interleave_rows(&refs, &indices).map_err(arrow_error(context))?)?;
            indices.clear();
            chunk_batches = cursors.iter().map(|c| c.batch.clone()).collect();
            slot = (0..cursors.len()).collect();
        }
    }
    if !indices.is_empty() {
        let refs: Vec<&RecordBatch> = chunk_batches.iter().collect();
        sink(&gather::interleave_rows(&refs, &indices).map_err(arrow_error(context))?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, StringArray, TimestampMicrosecondArray, new_null_array};
    use arrow::datatypes::DataType;

    use super::*;
    use crate::schema::Schema;

    const MINUTE: i64 = 60 * 1_000_000;

    /// Rows of the built-in schema with only the sort and partition columns set.
    fn rows(schema: &SchemaRef, rows: &[(i64, &str, &str)]) -> RecordBatch {
        let columns: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|field| -> ArrayRef {
                match field.name().as_str() {
                    "event_time" => {
                        let DataType::Timestamp(_, zone) = field.data_type() else {
                            panic!("event_time is a timestamp")
                        };
                        Arc::new(
                            TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.0))
                                .with_timezone_opt(zone.clone()),
                        )
                    }
                    "event_id" => Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
                    "aws_region" => Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
                    _ => new_null_array(field.data_type(), rows.len()),
                }
            })
            .collect();
        RecordBatch::try_new(schema.clone(), columns).expect("valid rows")
    }

    fn writer(dir: &Path, memory_limit_bytes: usize) -> DatasetWriter {
        let partitioning = Partitioning::new(vec![PartitionKey::Region]).expect("valid");
        let options = WriteOptions {
            partitioning: partitioning.clone(),
            memory_limit_bytes,
            threads: 2,
            ..WriteOptions::default()
        };
        let output = prepare_output(dir, OutputMode::Overwrite, &partitioning).expect("output");
        DatasetWriter::new(output, Schema::builtin().arrow_schema(), options)
    }

    /// Each staged file's `(event_time, event_id)` rows, by path.
    fn staged(output: &OutputDir, summary: &WriteSummary) -> Vec<(String, Vec<(i64, String)>)> {
        summary
            .files
            .iter()
            .map(|file| {
                let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                    File::open(output.staging_dir().join(&file.path)).expect("staged file"),
                )
                .expect("parquet")
                .build()
                .expect("reader");
                let mut rows = Vec::new();
                for batch in reader {
                    let batch = batch.expect("batch");
                    let times = batch.column(0).as_primitive::<TimestampMicrosecondType>();
                    let ids = batch
                        .column_by_name("event_id")
                        .expect("event_id")
                        .as_string::<i32>();
                    rows.extend((0..batch.num_rows()).map(|r| (times.value(r), ids.value(r).to_string())));
                }
                (file.path.clone(), rows)
            })
            .collect()
    }

    /// Asserts every file is sorted and each partition's files follow each other in time.
    fn assert_sorted(files: &[(String, Vec<(i64, String)>)]) {
        let mut last: HashMap<&str, (i64, String)> = HashMap::new();
        for (path, rows) in files {
            let partition = path.rsplit_once('/').map_or("", |(dir, _)| dir);
            let mut previous = last.get(partition).cloned();
            for row in rows {
                if let Some(previous) = &previous {
                    assert!(previous <= row, "{path}: {previous:?} before {row:?}");
                }
                previous = Some(row.clone());
            }
            if let Some(previous) = previous {
                last.insert(partition, previous);
            }
        }
    }

    /// Ten-minute blocks of rows for three Regions, each block's rows in reverse order.
    fn blocks(schema: &SchemaRef, count: i64) -> Vec<RecordBatch> {
        (0..count)
            .map(|block| {
                let owned: Vec<(i64, String, &str)> = (0..60i64)
                    .rev()
                    .map(|i| {
                        let region = ["us-east-1", "eu-west-1", "us-west-2"][(i % 3) as usize];
                        (
                            block * 10 * MINUTE + i * 10 * 1_000_000,
                            format!("id-{block:04}-{i:02}"),
                            region,
                        )
                    })
                    .collect();
                let borrowed: Vec<(i64, &str, &str)> =
                    owned.iter().map(|(t, id, r)| (*t, id.as_str(), *r)).collect();
                rows(schema, &borrowed)
            })
            .collect()
    }

    #[test]
    fn rows_in_delivery_order_stream_to_parquet_without_spilling() {
        let dir = tempfile::tempdir().expect("temp dir");
        let schema = Schema::builtin().arrow_schema();
        let batches = blocks(&schema, 40);
        // Room for about six ten-minute blocks: more than the reorder window, far from all.
        let limit = 6 * batches[0].get_array_memory_size();
        let mut writer = writer(dir.path(), limit);
        let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
        for batch in &batches {
            writer.write(batch).expect("write");
        }
        let (output, summary) = writer.finish().expect("finish");
        assert_eq!(
            (summary.spilled_runs, summary.late_rows),
            (0, 0),
            "in-order rows are never spilled"
        );
        assert_eq!(
            (summary.rows, summary.partitions, summary.duplicates),
            (total as u64, 3, 0)
        );
        let files = staged(&output, &summary);
        assert_eq!(files.len(), 3, "one file per partition");
        assert_sorted(&files);
        assert_eq!(files.iter().map(|(_, rows)| rows.len()).sum::<usize>(), total);
    }

    #[test]
    fn rows_older_than_written_ones_are_merged_into_sorted_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let schema = Schema::builtin().arrow_schema();
        let mut batches = blocks(&schema, 40);
        let mut writer = writer(dir.path(), 6 * batches[0].get_array_memory_size());
        // The first block again at the end: 60 late rows, every one a copy of a written row.
        batches.push(batches[0].clone());
        // And a block from the middle delivered last, moved out of its place.
        let moved = batches.remove(20);
        batches.push(moved);
        for batch in &batches {
            writer.write(batch).expect("write");
        }
        let (output, summary) = writer.finish().expect("finish");
        assert_eq!(
            summary.late_rows, 120,
            "the repeated and the moved block arrive late"
        );
        assert_eq!(summary.duplicates, 60);
        let files = staged(&output, &summary);
        assert_sorted(&files);
        let ids: Vec<&String> = files
            .iter()
            .flat_map(|(_, rows)| rows.iter().map(|r| &r.1))
            .collect();
        let distinct: std::collections::HashSet<&&String> = ids.iter().collect();
        assert_eq!(
            (ids.len(), distinct.len()),
            (2400, 2400),
            "no row lost or doubled"
        );
        let leftovers = fs::read_dir(output.staging_dir().join("region=us-east-1"))
            .expect("partition dir")
            .count();
        assert_eq!(
            leftovers,
            files
                .iter()
                .filter(|(p, _)| p.starts_with("region=us-east-1/"))
                .count()
        );
    }

    #[test]
    fn idle_partitions_are_written_out_and_taken_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let schema = Schema::builtin().arrow_schema();
        let mut writer = writer(dir.path(), 6 * blocks(&schema, 1)[0].get_array_memory_size());
        writer
            .write(&rows(
                &schema,
                &[(0, "quiet-1", "ap-south-1"), (MINUTE, "quiet-2", "ap-south-1")],
            ))
            .expect("write");
        for batch in blocks(&schema, 80) {
            writer.write(&batch).expect("write");
        }
        assert!(
            writer.retired.contains_key("region=ap-south-1"),
            "the quiet Region was retired"
        );
        // Later rows open a second file; an earlier one is late.
        let late = (30 * 1_000_000, "quiet-3", "ap-south-1");
        writer
            .write(&rows(&schema, &[(900 * MINUTE, "quiet-4", "ap-south-1"), late]))
            .expect("write");
        assert!(writer.active.contains_key("region=ap-south-1"));
        let (output, summary) = writer.finish().expect("finish");
        assert_eq!(summary.late_rows, 1);
        let files = staged(&output, &summary);
        assert_sorted(&files);
        let quiet: Vec<&String> = files
            .iter()
            .filter(|(path, _)| path.starts_with("region=ap-south-1/"))
            .flat_map(|(_, rows)| rows.iter().map(|r| &r.1))
            .collect();
        assert_eq!(quiet, ["quiet-1", "quiet-3", "quiet-2", "quiet-4"]);
    }

    /// Rows in one Region that differ only in `source_ip_address` (and, when given, event id).
    fn tied_rows(schema: &SchemaRef, rows: &[(i64, Option<&str>, &str)]) -> RecordBatch {
        let base = self::rows(
            schema,
            &rows.iter().map(|r| (r.0, "", "us-east-1")).collect::<Vec<_>>(),
        );
        let mut columns = base.columns().to_vec();
        let id = schema.index_of("event_id").expect("event_id");
        let ip = schema.index_of("source_ip_address").expect("source_ip_address");
        columns[id] = Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1)));
        columns[ip] = Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2)));
        RecordBatch::try_new(schema.clone(), columns).expect("valid rows")
    }

    /// Every written row's `(event_time, event_id, source_ip_address)`, in file order.
    fn written_ips(output: &OutputDir, summary: &WriteSummary) -> Vec<(i64, Option<String>, String)> {
        let mut rows = Vec::new();
        for file in &summary.files {
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                File::open(output.staging_dir().join(&file.path)).expect("staged file"),
            )
            .expect("parquet")
            .build()
            .expect("reader");
            for batch in reader {
                let batch = batch.expect("batch");
                let times = batch.column(0).as_primitive::<TimestampMicrosecondType>();
                let ids = batch.column_by_name("event_id").expect("id").as_string::<i32>();
                let ips = batch
                    .column_by_name("source_ip_address")
                    .expect("ip")
                    .as_string::<i32>();
                rows.extend((0..batch.num_rows()).map(|r| {
                    let id = (!ids.is_null(r)).then(|| ids.value(r).to_string());
                    (times.value(r), id, ips.value(r).to_string())
                }));
            }
        }
        rows
    }

    #[test]
    fn key_prefixes_order_like_whole_keys_where_they_differ() {
        let ids = [
            None,
            Some(""),
            Some("\0"),
            Some("a"),
            Some("a\0"),
            Some("a\0b"),
            Some("abcdefgh"),
            Some("abcdefgh-1"),
            Some("abcdefgi"),
            Some("é"),
        ];
        let key = |time: i64, id: Option<&'static str>| SortKey {
            time,
            text: [id, None, None, None, None, None],
        };
        let keys: Vec<SortKey<'_>> = [1, 2]
            .into_iter()
            .flat_map(|time| ids.map(|id| key(time, id)))
            .collect();
        for a in &keys {
            for b in &keys {
                let prefix = key_prefix(a).cmp(&key_prefix(b));
                if prefix.is_ne() {
                    assert_eq!(prefix, cmp_keys(a, b), "{:?} {:?}", a.text[0], b.text[0]);
                }
            }
        }
        assert!(
            key_prefix(&key(1, Some("a"))) < key_prefix(&key(1, None)),
            "missing ids last"
        );
    }

    #[test]
    fn rows_tied_in_every_sort_column_are_ordered_by_the_whole_row() {
        let schema = Schema::builtin().arrow_schema();
        // Two copies of event "dup" and two events without an id, all at one time, in two
        // batches: whichever arrives first, the files hold the same rows in the same order, and
        // the copy kept is the one first in that order.
        let first = tied_rows(
            &schema,
            &[(MINUTE, Some("dup"), "10.0.0.9"), (MINUTE, None, "10.0.0.8")],
        );
        let second = tied_rows(
            &schema,
            &[(MINUTE, None, "10.0.0.7"), (MINUTE, Some("dup"), "10.0.0.1")],
        );
        let mut outputs = Vec::new();
        for batches in [[&first, &second], [&second, &first]] {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut writer = writer(dir.path(), 64 << 20);
            for batch in batches {
                writer.write(batch).expect("write");
            }
            let (output, summary) = writer.finish().expect("finish");
            assert_eq!(summary.duplicates, 1);
            outputs.push(written_ips(&output, &summary));
        }
        let expected = vec![
            (MINUTE, Some("dup".to_string()), "10.0.0.1".to_string()),
            (MINUTE, None, "10.0.0.7".to_string()),
            (MINUTE, None, "10.0.0.8".to_string()),
        ];
        assert_eq!(outputs, [expected.clone(), expected]);
    }

    #[test]
    fn a_tied_row_arriving_after_its_twin_was_written_is_merged_into_place() {
        let schema = Schema::builtin().arrow_schema();
        let rows_at = |from: i64, prefix: &str| -> Vec<(i64, String)> {
            (0..40)
                .map(|i| (from + i * 1_000_000, format!("{prefix}-{i:02}")))
                .collect()
        };
        let mut outputs = Vec::new();
        let mut late = Vec::new();
        for order in [["10.0.0.9", "10.0.0.1"], ["10.0.0.1", "10.0.0.9"]] {
            // Early rows ending with one copy of "dup", then rows 20 minutes later: the early
            // rows leave the reorder window and are written, the copy last. Then the other copy.
            let mut early: Vec<(i64, Option<&str>, &str)> = Vec::new();
            let early_ids = rows_at(0, "early");
            early.extend(early_ids.iter().map(|(t, id)| (*t, Some(id.as_str()), "")));
            early.push((2 * MINUTE, Some("dup"), order[0]));
            let early = tied_rows(&schema, &early);
            let later_ids = rows_at(20 * MINUTE, "later");
            let later: Vec<(i64, Option<&str>, &str)> = later_ids
                .iter()
                .map(|(t, id)| (*t, Some(id.as_str()), ""))
                .collect();
            let later = tied_rows(&schema, &later);
            let dir = tempfile::tempdir().expect("temp dir");
            let limit = early.get_array_memory_size() * 3 / 2;
            let mut writer = writer(dir.path(), limit);
            writer.write(&early).expect("write");
            writer.write(&later).expect("write");
            writer
                .write(&tied_rows(&schema, &[(2 * MINUTE, Some("dup"), order[1])]))
                .expect("write");
            let (output, summary) = writer.finish().expect("finish");
            assert_eq!((summary.duplicates, summary.spilled_runs), (1, 0));
            late.push(summary.late_rows);
            let rows = written_ips(&output, &summary);
            assert_eq!(rows.len(), 81);
            outputs.push(
                rows.into_iter()
                    .filter(|r| r.1.as_deref() == Some("dup"))
                    .collect::<Vec<_>>(),
            );
        }
        let kept = vec![(2 * MINUTE, Some("dup".to_string()), "10.0.0.1".to_string())];
        assert_eq!(outputs, [kept.clone(), kept]);
        // The first order sends the second copy through the late path: it sorts before its twin.
        assert_eq!(late, [1, 0]);
    }
}
