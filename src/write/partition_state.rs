//! One partition's rows on their way to its Parquet files: waiting, written in order, set aside
//! as late, spilled, and merged at the end.

use std::fs::{self, File};
use std::path::PathBuf;

use arrow::array::{AsArray, BooleanArray, DynComparator, RecordBatch};
use arrow::datatypes::{SchemaRef, TimestampMicrosecondType};
use arrow::ipc::reader::FileReader;
use tracing::{info, info_span};

use super::dedup::Dedup;
use super::merge::{RunReader, merge_runs};
use super::options::WriteOptions;
use super::parquet_file::RollingWriter;
use super::sort::{
    KeyColumns, MERGE_BATCH_ROWS, SortedRows, cmp_keys, first_difference, key_columns, row_key,
    whole_row_comparators,
};
use super::spill::{SPILL_BATCH_ROWS, Spiller, staged_files_reader};
use super::{WriteError, io_error};
use crate::dataset::{DataFile, OutputDir};

/// How far back in event time a partition's newest rows are held unwritten: rows may arrive this
/// much out of order and still be written in order. CloudTrail writes one file per account and
/// Region about every 5 minutes, with its events unsorted, and delivers within about 5 minutes.
const REORDER_WINDOW_MICROS: i64 = 15 * 60 * 1_000_000;

/// One partition's rows on their way to its Parquet files.
///
/// Rows wait in `pending` until memory runs short; then the rows more than
/// [`REORDER_WINDOW_MICROS`] older than the partition's newest row (and than the watermark, see
/// [`DatasetWriter::set_watermark`]) are sorted and appended to the partition's open Parquet
/// file. Inputs read in delivery order thus stream to Parquet without being spilled. Rows that
/// sort before a row already written (`late`), and runs spilled when the window holds most of the
/// buffer, make the partition *unordered*: at the end its files are merged with them and
/// rewritten, so every file is still sorted.
pub(super) struct PartitionState {
    pub(super) path: String,
    pending: Vec<RecordBatch>,
    pub(super) pending_bytes: usize,
    late: Vec<RecordBatch>,
    pub(super) late_bytes: usize,
    pub(super) late_rows: u64,
    /// Sorted runs spilled to disk, merged in at the end.
    runs: Vec<PathBuf>,
    /// A one-row copy of the last row written: rows that sort before it are late.
    last_written: Option<RecordBatch>,
    dedup: Dedup,
    pub(super) sink: RollingWriter,
    pub(super) sink_bytes: usize,
    pub(super) last_touched: u64,
}

impl PartitionState {
    pub(super) fn new(
        output: &OutputDir,
        schema: &SchemaRef,
        options: &WriteOptions,
        path: &str,
    ) -> PartitionState {
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

    pub(super) fn held_bytes(&self) -> usize {
        self.pending_bytes + self.late_bytes + self.sink_bytes
    }

    /// Whether the files written so far must be merged with other rows at the end.
    pub(super) fn unordered(&self) -> bool {
        !self.late.is_empty() || !self.runs.is_empty()
    }

    /// Takes rows in; those that sort before the last row written are set aside as late.
    pub(super) fn accept(&mut self, batch: RecordBatch) -> Result<(), WriteError> {
        let late = match &self.last_written {
            Some(last) => late_rows(&batch, last),
            None => None,
        };
        let Some(late) = late else {
            self.pending_bytes += batch.get_array_memory_size();
            self.pending.push(batch);
            return Ok(());
        };
        let arrow_error = |source| WriteError::arrow(&self.path, "setting late rows aside", source);
        let on_time = arrow::compute::not(&late).map_err(arrow_error)?;
        let late = arrow::compute::filter_record_batch(&batch, &late).map_err(arrow_error)?;
        let on_time = arrow::compute::filter_record_batch(&batch, &on_time).map_err(arrow_error)?;
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
    pub(super) fn relieve_pending(
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
        let path = self.path.as_str();
        let arrow_error = |source| WriteError::arrow(path, "writing sorted rows", source);
        self.dedup.load_committed(&output.existing_files(path)?)?;
        while let Some(chunk) = sorted.next_until(cut) {
            let chunk = chunk.map_err(arrow_error)?;
            self.sink.write(&self.dedup.filter(&chunk, path)?)?;
        }
        if let Some(last) = cut.checked_sub(1) {
            self.last_written = Some(sorted.row(last).map_err(arrow_error)?);
        }
        self.sink_bytes = self.sink.memory_size();
        let total = sorted.len();
        while let Some(chunk) = sorted.next_until(total) {
            let chunk = chunk.map_err(arrow_error)?;
            self.pending_bytes += chunk.get_array_memory_size();
            self.pending.push(chunk);
        }
        Ok(())
    }

    /// Spills the pending rows, or the late ones, as a sorted run.
    pub(super) fn spill(&mut self, spiller: &mut Spiller<'_>, late: bool) -> Result<(), WriteError> {
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
    pub(super) fn retire(&mut self, output: &OutputDir, spiller: &mut Spiller<'_>) -> Result<(), WriteError> {
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
    pub(super) fn finish(
        mut self,
        output: &OutputDir,
        schema: &SchemaRef,
        options: &WriteOptions,
    ) -> Result<(Vec<DataFile>, u64), WriteError> {
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
        let written = self.sink.finish()?;
        let staged: Vec<PathBuf> = written
            .iter()
            .map(|f| output.staged_copy(&f.path))
            .collect::<Result<_, _>>()?;
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
            let reader = FileReader::try_new(file, None).map_err(|source| WriteError::Spill {
                path: run.clone(),
                source,
            })?;
            sources.push(Box::new(reader));
        }
        let mut sink = RollingWriter::new(output, schema, options, &self.path, next_index);
        let mut dedup = Dedup::default();
        dedup.load_committed(&output.existing_files(&self.path)?)?;
        let path = self.path.as_str();
        merge_runs(sources, path, &mut |batch| {
            sink.write(&dedup.filter(batch, path)?)
        })?;
        let files = sink.finish()?;
        for file in &written {
            output.discard_staged(&file.path)?;
        }
        for path in &self.runs {
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
    let columns: KeyColumns = key_columns(&batch.schema());
    let last_key = row_key(last, &columns, 0);
    // Built at the first row that ties with the last one on every sort column, then reused.
    let mut comparators: Option<Vec<DynComparator>> = None;
    let mask: BooleanArray = (0..batch.num_rows())
        .map(|row| {
            Some(match times.value(row).cmp(&last_time) {
                std::cmp::Ordering::Less => true,
                std::cmp::Ordering::Greater => false,
                std::cmp::Ordering::Equal => cmp_keys(&row_key(batch, &columns, row), &last_key)
                    .then_with(|| {
                        let comparators =
                            comparators.get_or_insert_with(|| whole_row_comparators(batch, last));
                        first_difference(comparators, row, 0)
                    })
                    .is_lt(),
            })
        })
        .collect();
    (mask.true_count() > 0).then_some(mask)
}
