//! The `keytrail._keytrail` extension module: keytrail's reading and flattening core for Python
//! (`keytrail.read`) and Spark (`keytrail.spark`), handing batches to pyarrow through the Arrow
//! C stream interface. The Python API around it is in `keytrail/__init__.py`.

use std::sync::{Arc, Mutex, OnceLock};

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, Int64Array, RecordBatch, RecordBatchReader, StringArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::pyarrow::PyArrowType;
use keytrail::convert::scan::ScanSummary;
use keytrail::convert::stream::{EventStream, StreamOptions, StreamReport, stream_schema};
use keytrail::dataset::Partitioning;
use keytrail::dataset::quarantine::QuarantineEntry;
use keytrail::read::{Input, MemoryInput, discover};
use keytrail::store::Stores;
use pyo3::exceptions::{PyFileNotFoundError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The object stores of the process (their runtime serves every `s3://` input read).
fn stores() -> PyResult<&'static Stores> {
    static STORES: OnceLock<Stores> = OnceLock::new();
    if let Some(stores) = STORES.get() {
        return Ok(stores);
    }
    let made = Stores::new().map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    Ok(STORES.get_or_init(|| made))
}

fn partitioning(partition_by: Option<&str>) -> PyResult<Option<Partitioning>> {
    partition_by
        .map(|keys| keys.parse::<Partitioning>())
        .transpose()
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

/// The inputs of `paths` (files, directories, globs, `s3://` URLs) and `blobs` (name, bytes),
/// with the arguments that found nothing.
fn inputs(paths: &[String], blobs: Vec<(String, Vec<u8>)>) -> PyResult<(Vec<Input>, Vec<String>)> {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    if !paths.is_empty() {
        let needs_stores = paths.iter().any(|p| p.starts_with("s3://"));
        let stores = if needs_stores { Some(stores()?) } else { None };
        let discovery = discover(paths, stores);
        found.extend(discovery.inputs);
        problems.extend(discovery.problems.iter().map(ToString::to_string));
    }
    found.extend(blobs.into_iter().map(|(name, bytes)| {
        Input::Memory(MemoryInput {
            name,
            bytes: bytes.into(),
        })
    }));
    if found.is_empty() {
        let detail = if problems.is_empty() {
            "nothing to read".to_string()
        } else {
            problems.join("; ")
        };
        return Err(PyFileNotFoundError::new_err(format!(
            "no input files found ({detail})"
        )));
    }
    Ok((found, problems))
}

/// Starts reading: the pyarrow reader of the batches, and its report.
#[pyfunction]
#[pyo3(signature = (paths, blobs, *, threads=None, strict=false, batch_rows=8192, keep_raw=false, drop_copies=true, partition_by=None, identity=false))]
#[allow(clippy::too_many_arguments)]
fn start_read(
    py: Python<'_>,
    paths: Vec<String>,
    blobs: Vec<(String, Vec<u8>)>,
    threads: Option<usize>,
    strict: bool,
    batch_rows: usize,
    keep_raw: bool,
    drop_copies: bool,
    partition_by: Option<&str>,
    identity: bool,
) -> PyResult<(PyArrowType<Box<dyn RecordBatchReader + Send>>, Report)> {
    if threads == Some(0) || batch_rows == 0 {
        return Err(PyValueError::new_err("threads and batch_rows must be at least 1"));
    }
    let defaults = StreamOptions::default();
    let options = StreamOptions {
        threads: threads.unwrap_or(defaults.threads),
        strict,
        batch_rows,
        keep_raw,
        drop_copies,
        partition_columns: partitioning(partition_by)?,
        identity_column: identity,
    };
    // Listing directories or buckets can take a while: other Python threads run meanwhile.
    let (found, discovery_problems) = py.detach(|| inputs(&paths, blobs))?;
    let stream = EventStream::start(found, &options);
    let report = Report {
        stream: stream.report(),
        discovery_problems,
        quarantined: Arc::new(Mutex::new(Vec::new())),
    };
    let reader: Box<dyn RecordBatchReader + Send> = Box::new(stream);
    Ok((PyArrowType(reader), report))
}

/// The schema of what `read` gives.
#[pyfunction]
#[pyo3(signature = (*, keep_raw=false, partition_by=None, identity=false))]
fn schema(keep_raw: bool, partition_by: Option<&str>, identity: bool) -> PyResult<PyArrowType<Schema>> {
    let options = StreamOptions {
        keep_raw,
        partition_columns: partitioning(partition_by)?,
        identity_column: identity,
        ..StreamOptions::default()
    };
    Ok(PyArrowType(stream_schema(&options).as_ref().clone()))
}

/// A record that could not be made into a row: where and why, and its bytes as read.
type QuarantinedRecord = (QuarantineEntry, Vec<u8>);

/// The columns of a quarantine table.
fn quarantine_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("input", DataType::Utf8, false),
        Field::new("record", DataType::Int64, true),
        Field::new("offset", DataType::Int64, true),
        Field::new("reason", DataType::Utf8, false),
        Field::new("bytes", DataType::Binary, false),
    ]))
}

fn quarantine_batch(records: &[QuarantinedRecord]) -> PyResult<RecordBatch> {
    let signed = |value: Option<u64>| value.and_then(|v| i64::try_from(v).ok());
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            records.iter().map(|(e, _)| e.input.as_str()),
        )),
        Arc::new(Int64Array::from_iter(
            records.iter().map(|(e, _)| signed(e.record)),
        )),
        Arc::new(Int64Array::from_iter(
            records.iter().map(|(e, _)| signed(e.offset)),
        )),
        Arc::new(StringArray::from_iter_values(
            records.iter().map(|(e, _)| e.reason.as_str()),
        )),
        Arc::new(BinaryArray::from_iter_values(
            records.iter().map(|(_, b)| b.as_slice()),
        )),
    ];
    RecordBatch::try_new(quarantine_schema(), columns).map_err(|e| PyRuntimeError::new_err(e.to_string()))
}

/// What a read found: every event is a row, a copy dropped, or an invalid record kept in the
/// quarantine with its bytes.
#[pyclass(module = "keytrail", frozen)]
struct Report {
    stream: Arc<StreamReport>,
    discovery_problems: Vec<String>,
    quarantined: Arc<Mutex<Vec<QuarantinedRecord>>>,
}

impl Report {
    fn summary(&self) -> ScanSummary {
        self.stream.summary()
    }

    fn all_quarantined(&self) -> std::sync::MutexGuard<'_, Vec<QuarantinedRecord>> {
        let mut kept = self
            .quarantined
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        kept.extend(self.stream.take_quarantined());
        kept
    }
}

#[pymethods]
impl Report {
    /// Whether the reader was read to its end (the figures are final).
    #[getter]
    fn finished(&self) -> bool {
        self.stream.finished()
    }

    #[getter]
    fn files_read(&self) -> u64 {
        self.summary().files_read
    }

    #[getter]
    fn bytes_read(&self) -> u64 {
        self.summary().bytes_read
    }

    /// Records that looked like CloudTrail events: rows, copies and invalid ones.
    #[getter]
    fn events_read(&self) -> u64 {
        self.summary().events_read
    }

    #[getter]
    fn rows(&self) -> u64 {
        self.summary().rows()
    }

    #[getter]
    fn duplicates_dropped(&self) -> u64 {
        self.summary().duplicates_dropped
    }

    /// Records that could not be made into rows (see `quarantined()`).
    #[getter]
    fn invalid_records(&self) -> u64 {
        self.summary().invalid_records
    }

    /// Records accepted after removing trailing commas.
    #[getter]
    fn repaired_records(&self) -> u64 {
        self.summary().repaired_records
    }

    /// Inputs not read to the end (their earlier records are kept).
    #[getter]
    fn failed_files(&self) -> u64 {
        self.summary().failed_files
    }

    /// Whole inputs that held no events, by why (`not_json`, `digest`, ...).
    #[getter]
    fn skipped_files<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (kind, count) in self.summary().skipped_files {
            dict.set_item(kind.label(), count)?;
        }
        Ok(dict)
    }

    /// JSON values skipped as not events, by why.
    #[getter]
    fn skipped_records<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (reason, count) in self.summary().skipped_records {
            dict.set_item(reason.label(), count)?;
        }
        Ok(dict)
    }

    /// Every problem found, each naming its input (and record and byte, when it is one record):
    /// arguments that found nothing first, then the first problems of the inputs.
    #[getter]
    fn problems(&self) -> Vec<String> {
        let summary = self.summary();
        self.discovery_problems
            .iter()
            .cloned()
            .chain(summary.problems.iter().map(ToString::to_string))
            .collect()
    }

    /// How many problems there were (`problems` lists the first ones).
    #[getter]
    fn problem_count(&self) -> u64 {
        self.summary().problem_count + self.discovery_problems.len() as u64
    }

    /// The invalid records as a pyarrow RecordBatch: input, record (index in the input), offset
    /// (byte in the decompressed input), reason, bytes (the record exactly as read).
    fn quarantined(&self) -> PyResult<PyArrowType<RecordBatch>> {
        let kept = self.all_quarantined();
        Ok(PyArrowType(quarantine_batch(&kept)?))
    }

    fn __repr__(&self) -> String {
        let state = if self.finished() { "" } else { " (so far)" };
        format!("<keytrail.Report{state}: {}>", self.summary())
    }

    fn __str__(&self) -> String {
        self.summary().to_string()
    }
}

/// Starts flattening one batch of Spark `binaryFile` rows (`path`, `content`) on the calling
/// task's thread: a reader of the events of every file, with the partition and identity
/// columns, and its report (which holds the quarantine once the reader is exhausted). Copies
/// within the batch are dropped; across batches, the identity column tells them.
#[pyfunction]
#[pyo3(signature = (batch, *, partition_by=None, keep_raw=false, strict=false))]
fn start_flatten(
    batch: PyArrowType<RecordBatch>,
    partition_by: Option<&str>,
    keep_raw: bool,
    strict: bool,
) -> PyResult<(PyArrowType<Box<dyn RecordBatchReader + Send>>, Report)> {
    let batch = batch.0;
    let column = |name: &str| {
        batch.column_by_name(name).ok_or_else(|| {
            PyValueError::new_err(format!(
                "the batch has no `{name}` column (binaryFile rows have path and content)"
            ))
        })
    };
    let paths = column("path")?;
    let contents = column("content")?;
    let paths: &StringArray = paths
        .as_string_opt()
        .ok_or_else(|| PyValueError::new_err("`path` must be a string column"))?;
    let contents: &BinaryArray = contents
        .as_binary_opt()
        .ok_or_else(|| PyValueError::new_err("`content` must be a binary column"))?;
    let inputs: Vec<Input> = (0..batch.num_rows())
        .filter(|&row| paths.is_valid(row) && contents.is_valid(row))
        .map(|row| {
            Input::Memory(MemoryInput {
                name: paths.value(row).to_string(),
                bytes: bytes::Bytes::copy_from_slice(contents.value(row)),
            })
        })
        .collect();
    let options = StreamOptions {
        threads: 1,
        strict,
        keep_raw,
        partition_columns: partitioning(partition_by)?,
        identity_column: true,
        ..StreamOptions::default()
    };
    let stream = EventStream::start(inputs, &options);
    let report = Report {
        stream: stream.report(),
        discovery_problems: Vec::new(),
        quarantined: Arc::new(Mutex::new(Vec::new())),
    };
    let reader: Box<dyn RecordBatchReader + Send> = Box::new(stream);
    Ok((PyArrowType(reader), report))
}

/// The schema of `Report.quarantined()`.
#[pyfunction]
fn quarantine_arrow_schema() -> PyArrowType<Schema> {
    PyArrowType(quarantine_schema().as_ref().clone())
}

#[pymodule]
fn _keytrail(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(start_read, module)?)?;
    module.add_function(wrap_pyfunction!(schema, module)?)?;
    module.add_function(wrap_pyfunction!(start_flatten, module)?)?;
    module.add_function(wrap_pyfunction!(quarantine_arrow_schema, module)?)?;
    module.add_class::<Report>()?;
    module.add("IDENTITY_COLUMN", keytrail::convert::stream::IDENTITY_COLUMN)?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
