//! Writing flattened batches as a Hive-partitioned Parquet dataset.
//!
//! Rows are buffered per partition under a memory limit. When the limit is reached the largest
//! partition buffer is sorted by `(event_time, event_id)` and spilled to a hidden staging area as
//! an Arrow IPC run. At the end each partition's runs are merged, so every Parquet file is sorted
//! by event time and files roll at a size threshold instead of one small file per input. Files
//! are written under a hidden staging directory and renamed into place only when complete, so no
//! reader ever sees a partial file.

pub mod output;
mod parquet_file;

pub use parquet_file::writer_properties as parquet_properties;
pub mod partition;
pub mod quarantine;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use arrow::compute::interleave_record_batch;
use arrow::compute::take_record_batch;
use arrow::datatypes::{SchemaRef, TimestampMicrosecondType};
use arrow::error::ArrowError;
use arrow::ipc::CompressionType;
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::{FileWriter, IpcWriteOptions};
use tracing::{debug, info_span};

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
            // Peak RSS is about this plus 300 MB (batches in flight, the spill being written,
            // the merge and Parquet writers at the end); 96 MiB keeps a conversion under 512 MB
            // and was no slower than 256 MiB on 1M and 5M generated events.
            memory_limit_bytes: 96 * 1024 * 1024,
            row_group_rows: 128 * 1024,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            spill_compression: SpillCompression::default(),
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
}

#[derive(Default)]
struct PartitionBuffer {
    batches: Vec<RecordBatch>,
    bytes: usize,
    runs: Vec<PathBuf>,
}

/// Writes batches into a staging area and commits them to the output directory on finish.
pub struct DatasetWriter {
    output: OutputDir,
    schema: SchemaRef,
    options: WriteOptions,
    partitions: BTreeMap<String, PartitionBuffer>,
    buffered_bytes: usize,
    spills: usize,
    rows: u64,
}

impl DatasetWriter {
    pub fn new(output: OutputDir, schema: SchemaRef, options: WriteOptions) -> DatasetWriter {
        DatasetWriter {
            output,
            schema,
            options,
            partitions: BTreeMap::new(),
            buffered_bytes: 0,
            spills: 0,
            rows: 0,
        }
    }

    /// Gives up: removes the staging area, commits nothing.
    pub fn abandon(self) {
        self.output.abandon();
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
        let paths = self.options.partitioning.row_paths(batch);
        // Group row indices by partition (sorted by partition path, stable within one).
        let mut order: Vec<u32> = (0..batch.num_rows() as u32).collect();
        order.sort_by(|a, b| paths[*a as usize].cmp(&paths[*b as usize]));
        let mut start = 0;
        while start < order.len() {
            let path = &paths[order[start] as usize];
            let end = start
                + order[start..]
                    .iter()
                    .take_while(|i| &paths[**i as usize] == path)
                    .count();
            let part = if start == 0 && end == order.len() {
                batch.clone()
            } else {
                let indices = UInt32Array::from(order[start..end].to_vec());
                take_record_batch(batch, &indices).map_err(arrow_error("partitioning rows"))?
            };
            let size = part.get_array_memory_size();
            let buffer = self.partitions.entry(path.clone()).or_default();
            buffer.batches.push(part);
            buffer.bytes += size;
            self.buffered_bytes += size;
            start = end;
        }
        while self.buffered_bytes > self.options.memory_limit_bytes {
            self.spill_largest()?;
        }
        Ok(())
    }

    fn spill_largest(&mut self) -> Result<(), WriteError> {
        let Some((path, buffer)) = self
            .partitions
            .iter_mut()
            .filter(|(_, b)| !b.batches.is_empty())
            .max_by_key(|(_, b)| b.bytes)
        else {
            return Ok(());
        };
        let _span = info_span!("spill", partition = %path, bytes = buffer.bytes).entered();
        let sorted = SortedRows::new(std::mem::take(&mut buffer.batches), SPILL_BATCH_ROWS)?;
        self.buffered_bytes -= buffer.bytes;
        buffer.bytes = 0;
        let run_path = self
            .output
            .spill_dir()
            .join(format!("run-{:06}.arrow", self.spills));
        self.spills += 1;
        let file = File::create(&run_path).map_err(io_error(&run_path))?;
        let ipc_options = IpcWriteOptions::default()
            .try_with_compression(self.options.spill_compression.ipc())
            .map_err(arrow_error("spilling a sorted run"))?;
        let mut writer = FileWriter::try_new_with_options(BufWriter::new(file), &self.schema, ipc_options)
            .map_err(arrow_error("spilling a sorted run"))?;
        let mut rows = 0;
        for chunk in sorted {
            let chunk = chunk.map_err(arrow_error("spilling a sorted run"))?;
            rows += chunk.num_rows();
            writer
                .write(&chunk)
                .map_err(arrow_error("spilling a sorted run"))?;
        }
        writer.finish().map_err(arrow_error("spilling a sorted run"))?;
        debug!(run = %run_path.display(), rows, "spilled run");
        buffer.runs.push(run_path);
        Ok(())
    }

    /// Sorts, merges and encodes every partition into the staging area. Nothing is visible to
    /// readers until [`OutputDir::commit`].
    pub fn finish(self) -> Result<(OutputDir, WriteSummary), WriteError> {
        let DatasetWriter {
            output,
            schema,
            options,
            partitions,
            spills,
            rows,
            ..
        } = self;
        let partitions: Vec<(String, PartitionBuffer)> = partitions.into_iter().collect();
        let next = AtomicUsize::new(0);
        let duplicates = std::sync::atomic::AtomicU64::new(0);
        let written = Mutex::new(Vec::new());
        let first_error = Mutex::new(None);
        let work = Mutex::new(partitions.into_iter().map(Some).collect::<Vec<_>>());
        let count = work.lock().map(|w| w.len()).unwrap_or(0);
        std::thread::scope(|scope| {
            for _ in 0..options.threads.max(1).min(count.max(1)) {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count || first_error.lock().map(|e| e.is_some()).unwrap_or(true) {
                            break;
                        }
                        let Some((path, buffer)) = work.lock().ok().and_then(|mut w| w[i].take()) else {
                            break;
                        };
                        match write_partition(&output, &schema, &options, &path, buffer) {
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
    order: Vec<(usize, usize)>,
    next: usize,
    chunk_rows: usize,
}

impl SortedRows {
    fn new(batches: Vec<RecordBatch>, chunk_rows: usize) -> Result<SortedRows, WriteError> {
        // Keys borrow from the batches: concatenating the sort columns for a lexsort copied the
        // large request/response JSON columns (only tie-breakers) on every spill.
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let mut keyed: Vec<(SortKey<'_>, (usize, usize))> = Vec::with_capacity(rows);
        for (b, batch) in batches.iter().enumerate() {
            let columns = key_columns(&batch.schema());
            keyed.extend((0..batch.num_rows()).map(|row| (row_key(batch, &columns, row), (b, row))));
        }
        // Stable, so rows equal in every sort column keep their input order.
        keyed.sort_by(|x, y| cmp_keys(&x.0, &y.0));
        let order = keyed.into_iter().map(|(_, at)| at).collect();
        Ok(SortedRows {
            batches,
            order,
            next: 0,
            chunk_rows,
        })
    }
}

impl Iterator for SortedRows {
    type Item = Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.order.len() {
            return None;
        }
        let end = (self.next + self.chunk_rows).min(self.order.len());
        let refs: Vec<&RecordBatch> = self.batches.iter().collect();
        let chunk = interleave_record_batch(&refs, &self.order[self.next..end]);
        self.next = end;
        Some(chunk)
    }
}

/// A sorted run being merged: its current batch and position.
struct Cursor {
    batches: Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>> + Send>,
    batch: RecordBatch,
    row: usize,
}

impl Cursor {
    fn key(&self, columns: &KeyColumns) -> SortKey<'_> {
        row_key(&self.batch, columns, self.row)
    }
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
struct Dedup {
    previous: Option<Identity>,
    committed: std::collections::HashSet<Identity>,
    dropped: u64,
}

impl Dedup {
    fn new(existing_files: &[PathBuf]) -> Result<Dedup, WriteError> {
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
        Ok(Dedup {
            previous: None,
            committed,
            dropped: 0,
        })
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
            let duplicate =
                repeated || (!self.committed.is_empty() && self.committed.contains(&owned(current)));
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

fn write_partition(
    output: &OutputDir,
    schema: &SchemaRef,
    options: &WriteOptions,
    partition: &str,
    buffer: PartitionBuffer,
) -> Result<(Vec<WrittenFile>, u64), WriteError> {
    let _span = info_span!("write_partition", partition).entered();
    let mut runs: Vec<Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>> + Send>> = Vec::new();
    if !buffer.batches.is_empty() {
        runs.push(Box::new(SortedRows::new(buffer.batches, MERGE_BATCH_ROWS)?));
    }
    for run in &buffer.runs {
        let file = File::open(run).map_err(io_error(run))?;
        let reader = FileReader::try_new(file, None).map_err(arrow_error("reading a spilled run"))?;
        runs.push(Box::new(reader));
    }
    let mut sink = parquet_file::RollingWriter::new(output, schema, options, partition);
    let mut dedup = Dedup::new(&output.existing_files(partition))?;
    let mut write = |batch: &RecordBatch| sink.write(&dedup.filter(batch)?);
    if runs.len() == 1 {
        for batch in runs.pop().into_iter().flatten() {
            write(&batch.map_err(arrow_error("reading a sorted run"))?)?;
        }
    } else {
        merge_runs(runs, &mut write)?;
    }
    for run in &buffer.runs {
        fs::remove_file(run).map_err(io_error(run))?;
    }
    Ok((sink.finish()?, dedup.dropped))
}

/// k-way merge of sorted runs into the sink, in `MERGE_BATCH_ROWS` chunks.
fn merge_runs(
    runs: Vec<Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>> + Send>>,
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
                && best.is_none_or(|b| cmp_keys(&cursor.key(&columns), &cursors[b].key(&columns)).is_lt())
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
            sink(&interleave_record_batch(&refs, &indices).map_err(arrow_error(context))?)?;
            indices.clear();
            chunk_batches = cursors.iter().map(|c| c.batch.clone()).collect();
            slot = (0..cursors.len()).collect();
        }
    }
    if !indices.is_empty() {
        let refs: Vec<&RecordBatch> = chunk_batches.iter().collect();
        sink(&interleave_record_batch(&refs, &indices).map_err(arrow_error(context))?)?;
    }
    Ok(())
}
