//! Writing flattened batches as a Hive-partitioned Parquet dataset.
//!
//! Every Parquet file is sorted by event time (then event id and the other identity columns) and
//! files roll at a size threshold instead of one small file per input. Inputs arrive in delivery
//! order, so a partition's rows are nearly sorted: they wait in memory, and when memory runs short
//! the rows older than the partition's 15-minute reorder window are sorted and appended to its open
//! file (see [`DatasetWriter::set_watermark`]). Only rows that arrive after later ones were
//! written, or partitions whose window does not fit in memory, are spilled as sorted Arrow IPC
//! runs and merged with the partition's files at the end. Files are written under the run's
//! staging directory ([`crate::dataset::OutputDir`]) and become visible only when it commits.
//!
//! The jobs, one file each: [`options`] (settings and defaults), [`route`] (rows to partitions),
//! `partition_state` (one partition's rows on their way), `sort`, `merge`, `dedup`, `spill`,
//! `gather` (building sorted batches) and `parquet_file` (rolling Parquet files).

pub(crate) mod dedup;
mod gather;
mod merge;
pub mod options;
mod parquet_file;
mod partition_state;
pub mod route;
mod sort;
mod spill;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use arrow::array::{RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use arrow::error::ArrowError;

pub use merge::RunReader;
pub use options::{ByteSize, ParquetCompression, SpillCompression, WriteOptions};
pub use parquet_file::writer_properties as parquet_properties;

use crate::dataset::{DataFile, DatasetError, OutputDir};
use crate::sync::lock;
use partition_state::PartitionState;
use spill::Spiller;

/// Errors writing the dataset. Each names the path or partition involved.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Parquet {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    /// A sorted run spilled to disk could not be written or read back.
    #[error("{path}: {source}")]
    Spill { path: PathBuf, source: ArrowError },
    #[error("partition `{}`: {context}: {source}", if .partition.is_empty() { "(unpartitioned)" } else { .partition.as_str() })]
    Arrow {
        partition: String,
        context: &'static str,
        source: ArrowError,
    },
    /// The writer was given batches of a schema other than keytrail's.
    #[error("not a keytrail schema: column `{column}` {problem}")]
    Schema { column: String, problem: &'static str },
    #[error("a batch's columns differ from the schema the writer was made with")]
    BatchSchema,
    #[error(transparent)]
    Dataset(#[from] DatasetError),
}

/// Names the path of a failed file operation.
pub(super) fn io_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> WriteError + '_ {
    move |source| WriteError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl WriteError {
    pub(crate) fn arrow(partition: &str, context: &'static str, source: ArrowError) -> WriteError {
        WriteError::Arrow {
            partition: partition.to_string(),
            context,
            source,
        }
    }
}

/// What a finished write produced.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WriteSummary {
    pub rows: u64,
    pub partitions: usize,
    pub files: Vec<DataFile>,
    pub spilled_runs: usize,
    /// Rows dropped as copies of an event already written.
    pub duplicates: u64,
    /// Rows that arrived after later rows of their partition were written (merged in at the end).
    pub late_rows: u64,
}

/// A partition that received no rows in this many batches is idle: under memory pressure it is
/// written out completely, and its file closed, before active partitions give up their window.
const IDLE_AFTER_BATCHES: u64 = 64;

/// Parquet files open at once at most. A partition that finds no free slot spills sorted runs,
/// which are merged at the end, instead of writing as it goes.
const MAX_OPEN_FILES: usize = 64;

/// Checks that `schema` has what the writer relies on: `event_time` first, as microseconds; the
/// sort columns and the partitioning's source columns as strings.
/// Merges `runs` (each sorted in the files' order, as a table's files are) into new files of
/// `partition` in `output`'s staging area, rolled at the target size; for compaction. Rows are
/// written as they are: none is dropped.
pub fn rewrite_partition(
    output: &OutputDir,
    schema: &SchemaRef,
    options: &WriteOptions,
    partition: &str,
    runs: Vec<RunReader>,
) -> Result<Vec<DataFile>, WriteError> {
    let mut sink = parquet_file::RollingWriter::new(output, schema, options, partition, 0);
    merge::merge_runs(runs, partition, &mut |batch| sink.write(batch))?;
    sink.finish()
}

fn check_schema(schema: &arrow::datatypes::Schema, options: &WriteOptions) -> Result<(), WriteError> {
    let problem = |column: &str, problem| WriteError::Schema {
        column: column.to_string(),
        problem,
    };
    match schema.fields().first() {
        Some(first)
            if first.name() == "event_time"
                && matches!(first.data_type(), DataType::Timestamp(TimeUnit::Microsecond, _)) => {}
        _ => {
            return Err(problem(
                "event_time",
                "must be the first column, a timestamp in microseconds",
            ));
        }
    }
    let strings = sort::SORT_COLUMNS[1..].iter().copied().chain(
        (options.partitioning.keys().iter())
            .map(|key| key.source_column())
            .filter(|column| *column != "event_time"),
    );
    for column in strings {
        match schema.field_with_name(column) {
            Ok(field) if field.data_type() == &DataType::Utf8 => {}
            Ok(_) => return Err(problem(column, "must be a string (Utf8) column")),
            Err(_) => return Err(problem(column, "is missing")),
        }
    }
    Ok(())
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
    /// A writer of batches of `schema` (keytrail's flattened schema) into `output`. A schema
    /// without the columns the writer sorts and partitions by is refused, and `output`'s staging
    /// area removed. An `s3://` output's upload buffers come out of the memory limit.
    pub fn new(
        mut output: OutputDir,
        schema: SchemaRef,
        mut options: WriteOptions,
    ) -> Result<DatasetWriter, WriteError> {
        if let Err(error) = check_schema(&schema, &options) {
            output.abandon();
            return Err(error);
        }
        if let Some(publisher) = output.publisher() {
            let limit = options.memory_limit_bytes;
            options.memory_limit_bytes = limit
                .saturating_sub(publisher.budget().reserved_bytes())
                .max(limit / 2);
        }
        Ok(DatasetWriter {
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
        })
    }

    /// Gives up: removes the staging area, commits nothing.
    pub fn abandon(self) {
        // Open Parquet writers hold files in the staging area: close them before removing it.
        drop(self.active);
        drop(self.retired);
        let mut output = self.output;
        output.abandon();
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

    /// Adds a batch of flattened rows (of the schema the writer was made with).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), WriteError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if batch.schema().fields() != self.schema.fields() {
            return Err(WriteError::BatchSchema);
        }
        self.rows += batch.num_rows() as u64;
        self.batches += 1;
        let partitions = route::row_partitions(&self.options.partitioning, batch);
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
                gather::take_rows(batch, &indices)
                    .map_err(|source| WriteError::arrow(path, "partitioning rows", source))?
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
        let duplicates = AtomicU64::new(0);
        let written = Mutex::new(Vec::new());
        let first_error = Mutex::new(None);
        let work = Mutex::new(partitions.into_iter().map(Some).collect::<Vec<_>>());
        std::thread::scope(|scope| {
            for _ in 0..options.threads.max(1).min(count.max(1)) {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count || lock(&first_error).is_some() {
                            break;
                        }
                        let Some(state) = lock(&work)[i].take() else {
                            break;
                        };
                        match state.finish(&output, &schema, &options) {
                            Ok((files, dropped)) => {
                                duplicates.fetch_add(dropped, Ordering::Relaxed);
                                lock(&written).extend(files)
                            }
                            Err(e) => {
                                lock(&first_error).get_or_insert(e);
                            }
                        }
                    }
                });
            }
        });
        if let Some(error) = crate::sync::into_inner(first_error) {
            return Err(error);
        }
        let mut files = crate::sync::into_inner(written);
        files.sort_by(|a: &DataFile, b| a.path.cmp(&b.path));
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, StringArray, TimestampMicrosecondArray, new_null_array};
    use arrow::datatypes::DataType;

    use std::fs::{self, File};
    use std::path::Path;

    use arrow::array::{Array, AsArray};
    use arrow::datatypes::TimestampMicrosecondType;

    use super::*;
    use crate::dataset::{OutputMode, PartitionKey, Partitioning, TableLocation, prepare_output};
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
        let output = local_output(dir, &partitioning);
        DatasetWriter::new(output, Schema::builtin().arrow_schema(), options).expect("keytrail's schema")
    }

    /// An output table in `dir`, on a runtime that lives as long as the tests.
    fn local_output(dir: &Path, partitioning: &Partitioning) -> OutputDir {
        static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
        let runtime = RUNTIME.get_or_init(|| tokio::runtime::Runtime::new().expect("runtime"));
        prepare_output(
            TableLocation::local(dir).expect("location"),
            Some(dir),
            OutputMode::Overwrite,
            partitioning,
            &Schema::builtin().arrow_schema(),
            runtime.handle().clone(),
            crate::dataset::UploadBudget::within(WriteOptions::default().memory_limit_bytes),
        )
        .expect("output")
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
    fn a_foreign_schema_is_refused_with_the_column_named() {
        use arrow::datatypes::{Field, Schema as ArrowSchema};

        let dir = tempfile::tempdir().expect("temp dir");
        let partitioning = Partitioning::new(vec![PartitionKey::Region]).expect("valid");
        let options = WriteOptions {
            partitioning: partitioning.clone(),
            ..WriteOptions::default()
        };
        let foreign = |fields: Vec<Field>| Arc::new(ArrowSchema::new(fields));
        let time = Field::new(
            "event_time",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        );
        for (schema, column) in [
            (foreign(vec![Field::new("x", DataType::Utf8, true)]), "event_time"),
            (foreign(vec![time.clone()]), "event_id"),
            (
                foreign(vec![time, Field::new("event_id", DataType::Int64, true)]),
                "event_id",
            ),
        ] {
            let output = local_output(dir.path(), &partitioning);
            let staging = output.staging_dir().to_path_buf();
            match DatasetWriter::new(output, schema, options.clone()) {
                Err(WriteError::Schema { column: named, .. }) => assert_eq!(named, column),
                other => panic!("expected a schema error naming {column}, got {:?}", other.err()),
            }
            assert!(!staging.exists(), "the staging area is removed");
        }
        let mut writer = writer(dir.path(), 1 << 20);
        let other = RecordBatch::try_new(
            Arc::new(arrow::datatypes::Schema::new(vec![Field::new(
                "event_time",
                DataType::Int64,
                false,
            )])),
            vec![Arc::new(arrow::array::Int64Array::from(vec![1]))],
        )
        .expect("batch");
        assert!(matches!(writer.write(&other), Err(WriteError::BatchSchema)));
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
    /// Rows of one account that differ only in their source IP: rows with the same id are
    /// copies of one event (re-deliveries that differ in a detail).
    fn tied_rows(schema: &SchemaRef, rows: &[(i64, Option<&str>, &str)]) -> RecordBatch {
        let base = self::rows(
            schema,
            &rows.iter().map(|r| (r.0, "", "us-east-1")).collect::<Vec<_>>(),
        );
        let mut columns = base.columns().to_vec();
        let id = schema.index_of("event_id").expect("event_id");
        let ip = schema.index_of("source_ip_address").expect("source_ip_address");
        let account = schema
            .index_of("recipient_account_id")
            .expect("recipient_account_id");
        columns[id] = Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1)));
        columns[ip] = Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2)));
        columns[account] = Arc::new(StringArray::from_iter_values(rows.iter().map(|_| "111122223333")));
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
