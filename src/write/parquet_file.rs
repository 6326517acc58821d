//! Parquet files of one partition, rolled at a size threshold.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use tracing::debug;

use super::{WriteError, WriteOptions, io_error};
use crate::dataset::publish::Publisher;
use crate::dataset::upload_stream::UploadStream;
use crate::dataset::{DataFile, OutputDir};
use crate::schema::{ColumnType, SCHEMA_NAME_KEY, SCHEMA_VERSION_KEY, Schema};

/// Columns whose values are (nearly) unique per event. A dictionary of them is abandoned once its
/// first page fills, after every value was hashed into it; they are written plain from the start.
const UNIQUE_COLUMNS: [&str; 7] = [
    "event_time",
    "event_id",
    "request_id",
    "shared_event_id",
    "request_parameters",
    "response_elements",
    crate::schema::RAW_EVENT_COLUMN,
];

/// Writer settings shared by every file: the chosen compression, page-level statistics and page
/// index, the nested type names Spark and Athena expect, the sort order, and the schema version.
pub fn writer_properties(options: &WriteOptions) -> WriterProperties {
    let schema = Schema::builtin();
    let mut builder = WriterProperties::builder();
    for column in UNIQUE_COLUMNS {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(column), false);
    }
    // Min/max of JSON documents prune nothing (no query compares them by order) and cost a
    // comparison of every document, up to kilobytes each, with the page's running min and max.
    let json_columns = (schema.columns().iter())
        .filter(|c| c.ty == ColumnType::Json)
        .map(|c| c.name.as_str())
        .chain([crate::schema::RAW_EVENT_COLUMN]);
    for column in json_columns {
        builder = builder.set_column_statistics_enabled(ColumnPath::from(column), EnabledStatistics::None);
    }
    builder
        .set_compression(options.compression.parquet())
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_coerce_types(true)
        .set_max_row_group_row_count(Some(options.row_group_rows))
        .set_sorting_columns(Some(vec![SortingColumn {
            column_idx: 0,
            descending: false,
            nulls_first: false,
        }]))
        .set_created_by(format!("keytrail version {}", env!("CARGO_PKG_VERSION")))
        .set_key_value_metadata(Some(vec![
            KeyValue::new(SCHEMA_NAME_KEY.to_string(), schema.name().to_string()),
            KeyValue::new(SCHEMA_VERSION_KEY.to_string(), schema.version().to_string()),
        ]))
        .build()
}

/// Where a file's bytes go: a staged local file, or straight up to its S3 key.
enum FileSink {
    Local(BufWriter<File>),
    Upload(UploadStream, std::sync::Arc<Publisher>),
}

impl Write for FileSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            FileSink::Local(file) => file.write(buf),
            FileSink::Upload(stream, _) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            FileSink::Local(file) => file.flush(),
            FileSink::Upload(stream, _) => stream.flush(),
        }
    }
}

struct OpenFile {
    writer: ArrowWriter<FileSink>,
    /// The staged file, or the object's URL for an upload (named in errors).
    staging: PathBuf,
    relative: String,
    rows: u64,
    /// Most memory the writer's buffered row group held (logged: it is part of peak RSS).
    peak_buffer_bytes: usize,
}

/// The Parquet files of one partition: appends sorted rows and starts a new file at the target
/// size. Files are numbered from `first_index` so a rewrite never reuses a staged file's name.
pub(crate) struct RollingWriter {
    staging_dir: PathBuf,
    run_id: String,
    schema: SchemaRef,
    properties: WriterProperties,
    target_bytes: u64,
    row_group_rows: usize,
    partition: String,
    current: Option<OpenFile>,
    files: Vec<DataFile>,
    next_index: usize,
    /// For an `s3://` table: files stream to their keys while they are written.
    publisher: Option<std::sync::Arc<Publisher>>,
}

impl RollingWriter {
    pub(crate) fn new(
        output: &OutputDir,
        schema: &SchemaRef,
        options: &WriteOptions,
        partition: &str,
        first_index: usize,
    ) -> RollingWriter {
        RollingWriter {
            staging_dir: output.staging_dir().to_path_buf(),
            run_id: output.run_id().to_string(),
            publisher: output.publisher(),
            schema: schema.clone(),
            properties: writer_properties(options),
            target_bytes: options.target_file_bytes,
            row_group_rows: options.row_group_rows,
            partition: partition.to_string(),
            current: None,
            files: Vec::new(),
            next_index: first_index,
        }
    }

    /// The next file's number: files of this writer are numbered below it.
    pub(crate) fn next_index(&self) -> usize {
        self.next_index
    }

    /// Memory held by the open file's buffered row group.
    pub(crate) fn memory_size(&self) -> usize {
        self.current.as_ref().map_or(0, |f| f.writer.memory_size())
    }

    pub(crate) fn is_open(&self) -> bool {
        self.current.is_some()
    }

    /// Writes the buffered rows out as a row group, freeing their memory; the file stays open.
    pub(crate) fn flush_row_group(&mut self) -> Result<(), WriteError> {
        if let Some(file) = &mut self.current {
            file.writer.flush().map_err(|source| WriteError::Parquet {
                path: file.staging.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Closes the open file, if any; the next write starts a new one.
    pub(crate) fn close_file(&mut self) -> Result<(), WriteError> {
        match self.current.take() {
            Some(file) => self.close(file),
            None => Ok(()),
        }
    }

    fn open(&mut self) -> Result<OpenFile, WriteError> {
        let name = format!("part-{}-{:05}.parquet", self.run_id, self.next_index);
        self.next_index += 1;
        let relative = if self.partition.is_empty() {
            name
        } else {
            format!("{}/{name}", self.partition)
        };
        let staging = self.staging_dir.join(&relative);
        if let Some(parent) = staging.parent() {
            fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        let (sink, staging) = match &self.publisher {
            Some(publisher) => {
                let stream = publisher
                    .stream(&relative, &staging)
                    .map_err(crate::dataset::DatasetError::from)?;
                let url = PathBuf::from(publisher.object_url(&relative));
                (FileSink::Upload(stream, publisher.clone()), url)
            }
            None => {
                let file = File::create(&staging).map_err(io_error(&staging))?;
                (FileSink::Local(BufWriter::with_capacity(1 << 20, file)), staging)
            }
        };
        let writer = ArrowWriter::try_new(sink, self.schema.clone(), Some(self.properties.clone())).map_err(
            |source| WriteError::Parquet {
                path: staging.clone(),
                source,
            },
        )?;
        Ok(OpenFile {
            writer,
            staging,
            relative,
            rows: 0,
            peak_buffer_bytes: 0,
        })
    }

    /// Appends sorted rows, closing the file when it reaches the target size (checked at least
    /// once per row group).
    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<(), WriteError> {
        let step = self.row_group_rows.clamp(1, 8192);
        for offset in (0..batch.num_rows()).step_by(step) {
            self.write_slice(&batch.slice(offset, step.min(batch.num_rows() - offset)))?;
        }
        Ok(())
    }

    fn write_slice(&mut self, batch: &RecordBatch) -> Result<(), WriteError> {
        let mut file = match self.current.take() {
            Some(file) => file,
            None => self.open()?,
        };
        file.writer.write(batch).map_err(|source| WriteError::Parquet {
            path: file.staging.clone(),
            source,
        })?;
        file.rows += batch.num_rows() as u64;
        file.peak_buffer_bytes = file.peak_buffer_bytes.max(file.writer.memory_size());
        let size = (file.writer.bytes_written() + file.writer.in_progress_size()) as u64;
        if size >= self.target_bytes {
            self.close(file)?;
        } else {
            self.current = Some(file);
        }
        Ok(())
    }

    fn close(&mut self, file: OpenFile) -> Result<(), WriteError> {
        let OpenFile {
            writer,
            staging,
            relative,
            rows,
            peak_buffer_bytes,
        } = file;
        let mut writer = writer;
        let metadata = writer.finish().map_err(|source| WriteError::Parquet {
            path: staging.clone(),
            source,
        })?;
        let stats = crate::dataset::stats::delta_stats(&metadata, &self.schema);
        // `finish` wrote the footer and flushed the buffer into the sink (`into_inner` would
        // write the footer a second time).
        let bytes = match writer.inner_mut() {
            FileSink::Upload(stream, publisher) => {
                publisher.track(&relative, stream.finish().map_err(io_error(&staging))?);
                stream.written()
            }
            FileSink::Local(buffered) => {
                let file = buffered.get_ref();
                // Durable before it is renamed into place.
                file.sync_all().map_err(io_error(&staging))?;
                file.metadata().map_err(io_error(&staging))?.len()
            }
        };
        debug!(file = %relative, rows, bytes, peak_buffer_bytes, "parquet file written");
        self.files.push(DataFile {
            path: relative,
            rows,
            bytes,
            stats: Some(stats),
        });
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Result<Vec<DataFile>, WriteError> {
        self.close_file()?;
        Ok(self.files)
    }
}
