//! Spilling sorted runs to disk as Arrow IPC, and reading a partition's staged Parquet files
//! back, for the merge at the end.

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::ipc::writer::{FileWriter, IpcWriteOptions};
use tracing::debug;

use super::options::SpillCompression;
use super::sort::{MERGE_BATCH_ROWS, SortedRows};
use super::{WriteError, io_error};
use crate::dataset::OutputDir;

/// Rows per batch of a spilled run. The merge holds one decoded batch of every run at a time (up
/// to two while a chunk is gathered), so this, not the memory limit, bounds the merge's memory:
/// at ~1.7 KB per row, 8192-row batches of 6 runs held 160 MB per partition being written.
pub(super) const SPILL_BATCH_ROWS: usize = 1024;

/// Writes sorted runs to the staging area's spill directory.
pub(super) struct Spiller<'a> {
    pub(super) output: &'a OutputDir,
    pub(super) schema: &'a SchemaRef,
    pub(super) compression: SpillCompression,
    /// Runs spilled so far in the whole write (they are numbered by it).
    pub(super) runs: &'a mut usize,
}

impl Spiller<'_> {
    /// Writes the rows as a run, in `SPILL_BATCH_ROWS` batches.
    pub(super) fn spill(&mut self, mut sorted: SortedRows) -> Result<PathBuf, WriteError> {
        sorted.chunk_rows = SPILL_BATCH_ROWS;
        let run_path = self
            .output
            .spill_dir()
            .join(format!("run-{:06}.arrow", *self.runs));
        *self.runs += 1;
        let file = File::create(&run_path).map_err(io_error(&run_path))?;
        let spill_error = |source| WriteError::Spill {
            path: run_path.clone(),
            source,
        };
        let ipc_options = IpcWriteOptions::default()
            .try_with_compression(self.compression.ipc())
            .map_err(spill_error)?;
        let mut writer = FileWriter::try_new_with_options(BufWriter::new(file), self.schema, ipc_options)
            .map_err(spill_error)?;
        let mut rows = 0;
        for chunk in sorted {
            let chunk = chunk.map_err(spill_error)?;
            rows += chunk.num_rows();
            writer.write(&chunk).map_err(spill_error)?;
        }
        writer.finish().map_err(spill_error)?;
        debug!(run = %run_path.display(), rows, "spilled run");
        Ok(run_path)
    }
}

/// The rows of a partition's staged Parquet files, in file order, decoded as `schema`.
pub(super) fn staged_files_reader(
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
