//! The `convert` job: inputs → records → Arrow batches → partitioned Parquet.
//!
//! Worker threads each take whole input files (gunzip, split, flatten) and send record batches
//! over a bounded channel to one writer thread, so memory stays bounded whatever the input size.
//! Per-record and per-file problems are reported and counted; they never stop the run.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use arrow::array::{AsArray, RecordBatch};
use crossbeam_channel::{Receiver, Sender, bounded};
use serde::Serialize;
use tracing::{debug, info_span, warn};

use crate::flatten::Flattener;
use crate::read::classify::{Kind, SkipReason, TopFields, classify, remove_trailing_commas};
use crate::read::split::{RawItem, Splitter};
use crate::read::{Input, ReadError, discover, open};
use crate::schema::Schema;
use crate::store::{S3Url, StoreError, Stores};
use crate::write::quarantine::Quarantine;
use crate::write::{
    DatasetWriter, InputRecord, OutputDir, OutputMode, WriteError, WriteOptions, WriteSummary, prepare_output,
};

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

impl ConvertOptions {
    pub fn new(inputs: Vec<String>, output: impl Into<PathBuf>) -> ConvertOptions {
        let write = WriteOptions::default();
        ConvertOptions {
            inputs,
            output: output.into(),
            mode: OutputMode::Fresh,
            threads: write.threads,
            write,
            batch_rows: 8192,
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
    #[error("stopped at the first problem (--strict); nothing was written: {0}")]
    Strict(Problem),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{output}: {message}")]
    Output { output: String, message: String },
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

/// Something wrong with one input or one record: reported and counted, never fatal.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub input: String,
    /// 0-based index of the record within the input, when the problem is one record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<u64>,
    /// Byte offset in the (decompressed) input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.input)?;
        match (self.record, self.offset) {
            (Some(r), Some(o)) => write!(f, ": record {r} (byte {o})")?,
            (None, Some(o)) => write!(f, ": byte {o}")?,
            (Some(r), None) => write!(f, ": record {r}")?,
            (None, None) => {}
        }
        write!(f, ": {}", self.message)
    }
}

/// Why a whole input file produced no events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkippedFile {
    Empty,
    NotJson,
    Digest,
    NoEvents,
}

impl SkippedFile {
    pub fn label(self) -> &'static str {
        match self {
            SkippedFile::Empty => "empty",
            SkippedFile::NotJson => "not JSON",
            SkippedFile::Digest => "CloudTrail digest",
            SkippedFile::NoEvents => "no events",
        }
    }
}

/// The outcome of a conversion.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConvertSummary {
    pub output: PathBuf,
    pub run_id: String,
    pub schema_version: u32,
    pub input_files: usize,
    pub input_bytes: u64,
    /// `--incremental`: inputs skipped because an earlier run converted them unchanged.
    pub unchanged_inputs: u64,
    /// `--incremental`: inputs converted before whose content has changed since.
    pub changed_inputs: Vec<String>,
    /// Records that looked like CloudTrail events (converted or rejected).
    pub events_read: u64,
    pub rows_written: u64,
    /// Records kept in the quarantine (`_keytrail/quarantine/<run>/`) instead of converted.
    pub quarantined_records: u64,
    /// Events dropped because the same (event_id, recipient_account_id) was already written.
    pub duplicates_dropped: u64,
    /// Records accepted after removing trailing commas.
    pub repaired_records: u64,
    /// JSON values inside the inputs that are not events (digests, other objects).
    pub skipped_records: BTreeMap<SkipReason, u64>,
    pub skipped_files: BTreeMap<SkippedFile, u64>,
    /// Inputs that could not be read to the end (their earlier records are kept).
    pub failed_files: u64,
    pub partitions: usize,
    pub files_written: usize,
    pub bytes_written: u64,
    pub spilled_runs: usize,
    /// Rows that arrived after later rows of their partition were written: the partition's files
    /// were merged with them again at the end (costly when common; inputs read out of order).
    pub late_rows: u64,
    pub elapsed_seconds: f64,
    pub events_per_second: f64,
    /// Where this run's quarantine was committed, when it holds records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<PathBuf>,
    /// The first problems found (all are logged as they happen).
    pub problems: Vec<Problem>,
    pub problem_count: u64,
}

impl ConvertSummary {
    /// Whether everything read was converted.
    pub fn is_clean(&self) -> bool {
        self.problem_count == 0
    }
}

const MAX_PROBLEMS_KEPT: usize = 100;

#[derive(Default)]
struct FileReport {
    events: u64,
    quarantined: u64,
    repaired: u64,
    skipped_records: BTreeMap<SkipReason, u64>,
    skipped_file: Option<SkippedFile>,
    failed: bool,
    problems: Vec<Problem>,
    bytes: u64,
    /// The manifest entry of a file read to the end.
    manifest: Option<InputRecord>,
}

/// Runs a conversion. Problems with single inputs or records are in the summary; an error means
/// nothing was committed.
pub fn convert(
    options: &ConvertOptions,
    progress: &dyn ProgressSink,
) -> Result<ConvertSummary, ConvertError> {
    match options.output.to_str().and_then(S3Url::parse).transpose()? {
        Some(url) => convert_to_s3(options, &url, &Stores::new()?, progress),
        None => {
            let stores = options
                .inputs
                .iter()
                .any(|i| S3Url::is_s3(i))
                .then(Stores::new)
                .transpose()?;
            convert_local(options, stores.as_ref(), progress)
        }
    }
}

/// Writes the dataset into a local staging directory (the same crash-safe commit as a local
/// run), then uploads it: data files first, keytrail's run record last, so a dataset whose run
/// record is present is complete.
fn convert_to_s3(
    options: &ConvertOptions,
    url: &S3Url,
    stores: &Stores,
    progress: &dyn ProgressSink,
) -> Result<ConvertSummary, ConvertError> {
    let unsupported = |message: &str| ConvertError::Output {
        output: url.to_string(),
        message: message.to_string(),
    };
    match options.mode {
        OutputMode::Fresh => {}
        OutputMode::Overwrite => {
            return Err(unsupported(
                "--overwrite works on local outputs only; remove the objects under the prefix first, or write to a new prefix",
            ));
        }
        OutputMode::Incremental => {
            return Err(unsupported(
                "--incremental works on local outputs only; convert into a local directory, or write each run to its own prefix",
            ));
        }
    }
    if let Some(key) = stores.first_key(url)? {
        return Err(unsupported(&format!(
            "not empty (it holds s3://{}/{key}); a dataset is only written under an empty prefix",
            url.bucket
        )));
    }
    let staging = tempfile::Builder::new()
        .prefix("keytrail-upload-")
        .tempdir()
        .map_err(|error| StoreError::Local {
            path: std::env::temp_dir().display().to_string(),
            error,
        })?;
    let local_root = staging.path().join("dataset");
    let local_options = ConvertOptions {
        output: local_root.clone(),
        ..options.clone()
    };
    let mut summary = convert_local(&local_options, Some(stores), progress)?;
    let files = upload_order(&local_root)?;
    let sizes: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(local_root.join(f)).ok())
        .map(|m| m.len())
        .sum();
    progress.uploading(files.len(), sizes);
    stores.upload(&local_root, url, &files, &|bytes| progress.uploaded(bytes))?;
    summary.output = PathBuf::from(url.to_string());
    if let Some(quarantine) = &summary.quarantine
        && let Ok(relative) = quarantine.strip_prefix(&local_root)
    {
        summary.quarantine = Some(PathBuf::from(url.join(&relative.to_string_lossy()).to_string()));
    }
    Ok(summary)
}

/// The committed dataset's files, relative, in upload order: data, then keytrail's records, then
/// the run records that say the dataset is complete.
fn upload_order(root: &std::path::Path) -> Result<Vec<String>, ConvertError> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(root).sort_by_file_name() {
        let entry = entry.map_err(|e| StoreError::Local {
            path: e.path().unwrap_or(root).display().to_string(),
            error: e
                .into_io_error()
                .unwrap_or_else(|| std::io::Error::other("directory loop")),
        })?;
        if entry.file_type().is_file()
            && let Ok(relative) = entry.path().strip_prefix(root)
        {
            let relative: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            files.push(relative.join("/"));
        }
    }
    let meta = format!("{}/", crate::write::output::META_DIR);
    let runs = format!("{meta}{}/", crate::write::output::RUNS_DIR);
    files.sort_by_key(|f| (f.starts_with(&meta), f.starts_with(&runs), f.clone()));
    Ok(files)
}

/// Rows after which a batch is sent at the end of an input file (see `convert_local`).
const FILE_BATCH_ROWS: usize = 256;

fn convert_local(
    options: &ConvertOptions,
    stores: Option<&Stores>,
    progress: &dyn ProgressSink,
) -> Result<ConvertSummary, ConvertError> {
    let started = Instant::now();
    let discovery = discover(&options.inputs, stores);
    if discovery.inputs.is_empty() {
        let why = if discovery.problems.is_empty() {
            "the inputs contain no files".to_string()
        } else {
            discovery
                .problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        };
        return Err(ConvertError::NoInputs(why));
    }
    let mut problems: Vec<Problem> = discovery
        .problems
        .iter()
        .map(|p| {
            warn!("{p}");
            Problem {
                input: p.input.clone(),
                record: None,
                offset: None,
                message: p.message.clone(),
            }
        })
        .collect();
    let output = prepare_output(&options.output, options.mode, &options.write.partitioning)?;
    let selection = select_inputs(discovery.inputs, &output);
    for changed in &selection.changed {
        warn!("{changed}: changed since it was converted; converting it again (duplicates are dropped)");
    }
    let mut inputs = selection.inputs;
    crate::read::sort_by_delivery_time(&mut inputs);
    let total_bytes = inputs.iter().map(Input::size).sum::<Option<u64>>();
    progress.start(inputs.len(), total_bytes);

    let run_id = output.run_id().to_string();
    let quarantine_dir = output.quarantine_staging_dir();
    let schema = Schema::builtin();
    let writer = DatasetWriter::new(output, schema.arrow_schema(), options.write.clone());

    let threads = options.threads.max(1).min(inputs.len());
    // Slack for the writer's bursts (sorting and encoding a partition's rows while the workers go
    // on): 16 messages (of 2,048+ rows each, see `BatchSender`) instead of 4 cut the wall time
    // on 2 cores by ~5% for ~30 MB of peak RSS.
    let (sender, receiver) = bounded::<ToWriter>((threads * 2).max(16));
    let next = AtomicUsize::new(0);
    let reports: Mutex<Vec<FileReport>> = Mutex::new(Vec::with_capacity(inputs.len()));
    let shared = Shared {
        quarantine: Mutex::new(Quarantine::new(&quarantine_dir)),
        strict: options.strict,
        stop: AtomicBool::new(false),
        first_problem: Mutex::new(None),
        fatal: Mutex::new(None),
    };

    let write_result = std::thread::scope(|scope| {
        // Named threads show up as such in `perf`, `top -H` and panic messages.
        let writer_thread = std::thread::Builder::new()
            .name("keytrail-writer".into())
            .spawn_scoped(scope, move || write_all(writer, receiver, threads))
            .expect("the OS starts a thread");
        for worker in 0..threads {
            let mut sender = BatchSender {
                worker,
                sender: sender.clone(),
                send_rows: options.batch_rows.div_ceil(4),
                held: Vec::new(),
                held_rows: 0,
            };
            let (inputs, next, reports, shared) = (&inputs, &next, &reports, &shared);
            let reader = std::thread::Builder::new().name(format!("keytrail-read-{worker}"));
            let spawned = reader.spawn_scoped(scope, move || {
                let mut flattener = Flattener::new();
                let mut last_input = None;
                while let Some(input) = inputs.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if shared.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let report =
                        convert_input(input, &mut flattener, &mut sender, options.batch_rows, shared);
                    progress.file_done(report.events, report.bytes);
                    // A batch ends with a file (once it holds a few hundred rows), so that a
                    // delivery file of that size is a batch of one partition, which the writer
                    // keeps whole instead of copying its rows apart.
                    if flattener.rows() >= FILE_BATCH_ROWS.min(options.batch_rows) {
                        sender.end_batch(&mut flattener, shared, input);
                    }
                    reports
                        .lock()
                        .expect("no thread panics while holding it")
                        .push(report);
                    last_input = Some(input);
                }
                // Rows are only ever left over from an input read.
                if let Some(last) = last_input
                    && flattener.rows() > 0
                {
                    sender.end_batch(&mut flattener, shared, last);
                }
                sender.done();
            });
            spawned.expect("the OS starts a thread");
        }
        drop(sender);
        writer_thread.join().expect("the writer thread does not panic")
    });
    progress.finishing();
    let (output, written) = write_result?;
    let quarantined = shared.quarantine.into_inner().expect("threads joined").finish();
    let strict_problem = shared.first_problem.into_inner().expect("threads joined");
    let fatal = shared.fatal.into_inner().expect("threads joined");
    if strict_problem.is_some() || fatal.is_some() || quarantined.is_err() {
        output.abandon();
        return Err(match (strict_problem, fatal) {
            (Some(problem), _) => ConvertError::Strict(problem),
            (None, Some(fatal)) => fatal.into(),
            (None, None) => quarantined.expect_err("checked above").into(),
        });
    }
    let mut reports = reports.into_inner().expect("threads joined");
    let manifest: Vec<InputRecord> = reports.iter_mut().filter_map(|r| r.manifest.take()).collect();
    output.commit(&written.files, manifest)?;

    let mut summary = ConvertSummary {
        output: options.output.clone(),
        run_id,
        schema_version: schema.version(),
        input_files: inputs.len(),
        unchanged_inputs: selection.unchanged,
        changed_inputs: selection.changed,
        ..ConvertSummary::default()
    };
    summary.problem_count = problems.len() as u64;
    for report in reports {
        summary.input_bytes += report.bytes;
        summary.events_read += report.events + report.quarantined;
        summary.quarantined_records += report.quarantined;
        summary.repaired_records += report.repaired;
        for (reason, n) in report.skipped_records {
            *summary.skipped_records.entry(reason).or_default() += n;
        }
        if let Some(skip) = report.skipped_file {
            *summary.skipped_files.entry(skip).or_default() += 1;
        }
        summary.failed_files += u64::from(report.failed);
        summary.problem_count += report.problems.len() as u64;
        problems.extend(report.problems);
    }
    problems.sort_by(|a, b| (&a.input, a.record, a.offset).cmp(&(&b.input, b.record, b.offset)));
    problems.truncate(MAX_PROBLEMS_KEPT);
    summary.problems = problems;
    apply_write_summary(&mut summary, written);
    if summary.quarantined_records > 0 {
        summary.quarantine = Some(
            options
                .output
                .join(crate::write::output::META_DIR)
                .join(crate::write::output::QUARANTINE_DIR)
                .join(&summary.run_id),
        );
    }
    summary.elapsed_seconds = started.elapsed().as_secs_f64();
    summary.events_per_second = summary.events_read as f64 / summary.elapsed_seconds.max(1e-9);
    Ok(summary)
}

fn apply_write_summary(summary: &mut ConvertSummary, written: WriteSummary) {
    summary.rows_written = written.files.iter().map(|f| f.rows).sum();
    summary.duplicates_dropped = written.duplicates;
    summary.partitions = written.partitions;
    summary.files_written = written.files.len();
    summary.bytes_written = written.files.iter().map(|f| f.bytes).sum();
    summary.spilled_runs = written.spilled_runs;
    summary.late_rows = written.late_rows;
}

/// What the workers send the writer thread.
enum ToWriter {
    /// Batches in the order the worker read their rows.
    Batches(usize, Vec<RecordBatch>),
    /// The worker has read its last input.
    Done(usize),
}

/// A worker's end of the channel to the writer. Batches are sent in groups of at least
/// `send_rows` rows: the channel holds a fixed number of messages, and with one small batch per
/// delivery file in each it buffered too few rows to keep the workers busy while the writer
/// encodes (a tenth more wall time on 2 cores).
struct BatchSender {
    worker: usize,
    sender: Sender<ToWriter>,
    send_rows: usize,
    held: Vec<RecordBatch>,
    held_rows: usize,
}

impl BatchSender {
    /// Ends the flattener's batch, and sends the batches held once they reach `send_rows`.
    /// False when the run must stop: the writer has stopped, or the rows could not be made into
    /// a batch (a fatal error, kept in `shared` with `last_input`, the input whose rows end the
    /// batch: never a silent loss of rows).
    fn end_batch(
        &mut self,
        flattener: &mut Flattener,
        shared: &Shared,
        last_input: &dyn std::fmt::Display,
    ) -> bool {
        let rows = flattener.rows();
        match flattener.finish_batch() {
            Ok(batch) => {
                self.held.push(batch);
                self.held_rows += rows;
                self.held_rows < self.send_rows || self.send_held()
            }
            Err(source) => {
                shared.fail(WriteError::Arrow {
                    context: format!("building a batch of {rows} rows read up to {last_input}"),
                    source,
                });
                false
            }
        }
    }

    fn send_held(&mut self) -> bool {
        self.held_rows = 0;
        let batches = std::mem::take(&mut self.held);
        batches.is_empty() || self.sender.send(ToWriter::Batches(self.worker, batches)).is_ok()
    }

    /// Sends what is held and tells the writer this worker has read its last input.
    fn done(mut self) {
        if self.send_held() {
            let _ = self.sender.send(ToWriter::Done(self.worker));
        }
    }
}

fn write_all(
    mut writer: DatasetWriter,
    messages: Receiver<ToWriter>,
    workers: usize,
) -> Result<(crate::write::OutputDir, WriteSummary), WriteError> {
    // Each worker reads its inputs in delivery order, so its future rows are not much older than
    // the newest it has sent: the writer may write rows older than the laggard's newest.
    let mut newest: Vec<Option<i64>> = vec![None; workers];
    let mut done = vec![false; workers];
    for message in messages {
        let (worker, batches) = match message {
            ToWriter::Batches(worker, batches) => (worker, batches),
            ToWriter::Done(worker) => {
                done[worker] = true;
                continue;
            }
        };
        for batch in batches {
            let times = batch
                .column(0)
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
            if let Some(max) = arrow::compute::max(times) {
                newest[worker] = Some(newest[worker].map_or(max, |n| n.max(max)));
            }
            let watermark = newest
                .iter()
                .zip(&done)
                .filter(|(_, done)| !**done)
                .map(|(newest, _)| newest.unwrap_or(i64::MIN))
                .min();
            writer.set_watermark(watermark);
            if let Err(e) = writer.write(&batch) {
                // Returning drops the receiver: the workers stop at their next send.
                writer.abandon();
                return Err(e);
            }
        }
    }
    writer.finish()
}

/// State the workers share.
struct Shared {
    quarantine: Mutex<Quarantine>,
    strict: bool,
    /// Set when the run must end early (strict problem or fatal error).
    stop: AtomicBool,
    first_problem: Mutex<Option<Problem>>,
    fatal: Mutex<Option<WriteError>>,
}

impl Shared {
    /// Ends the run with `error` (the first one wins).
    fn fail(&self, error: WriteError) {
        self.fatal
            .lock()
            .expect("no thread panics while holding it")
            .get_or_insert(error);
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One input being read.
struct Reading<'a> {
    name: String,
    flattener: &'a mut Flattener,
    sender: &'a mut BatchSender,
    shared: &'a Shared,
    batch_rows: usize,
    items: u64,
    receiver_gone: bool,
    report: FileReport,
}

impl Reading<'_> {
    /// Reports a problem; with `bytes`, the record is quarantined (and counted as such).
    fn problem(&mut self, record: Option<u64>, offset: Option<u64>, message: String, bytes: Option<&[u8]>) {
        let problem = Problem {
            input: self.name.clone(),
            record,
            offset,
            message,
        };
        warn!("{problem}");
        if let Some(bytes) = bytes {
            self.report.quarantined += 1;
            let added = self
                .shared
                .quarantine
                .lock()
                .expect("no thread panics while holding it")
                .add(&self.name, record, offset, &problem.message, bytes);
            if let Err(e) = added {
                self.shared.fail(e);
            }
        }
        if self.shared.strict {
            self.shared
                .first_problem
                .lock()
                .expect("no thread panics while holding it")
                .get_or_insert_with(|| problem.clone());
            self.shared.stop.store(true, Ordering::Relaxed);
        }
        self.report.problems.push(problem);
    }

    fn item(&mut self, item: RawItem<'_>) {
        let index = self.items;
        self.items += 1;
        self.value(item.bytes, index, item.offset);
        if self.flattener.rows() >= self.batch_rows {
            self.receiver_gone |= !self.sender.end_batch(self.flattener, self.shared, &self.name);
        }
    }

    /// Classifies and converts one JSON value (a record, or text embedded in one).
    fn value(&mut self, bytes: &[u8], index: u64, offset: u64) {
        match classify(bytes) {
            Ok(kind) => self.kind(kind, bytes, index, offset),
            Err(error) => {
                if let Some(fixed) = remove_trailing_commas(bytes)
                    && let Ok(kind) = classify(&fixed)
                {
                    self.report.repaired += 1;
                    debug!(record = index, "accepted after removing trailing commas");
                    self.kind(kind, bytes, index, offset);
                } else {
                    self.problem(
                        Some(index),
                        Some(offset),
                        format!("invalid JSON: {error}"),
                        Some(bytes),
                    );
                }
            }
        }
    }

    fn kind(&mut self, kind: Kind<'_>, bytes: &[u8], index: u64, offset: u64) {
        match kind {
            Kind::Event(top) => self.event(&top, bytes, index, offset),
            Kind::Embedded(texts) => {
                for text in texts {
                    self.value(text.as_bytes(), index, offset);
                }
            }
            Kind::Nested(inner) => self.value(inner.get().as_bytes(), index, offset),
            Kind::Records(records) => {
                for record in records {
                    self.value(record.get().as_bytes(), index, offset);
                }
            }
            Kind::Skip(reason) => *self.report.skipped_records.entry(reason).or_default() += 1,
        }
    }

    fn event(&mut self, top: &TopFields<'_>, bytes: &[u8], index: u64, offset: u64) {
        match self.flattener.append(top) {
            Ok(()) => self.report.events += 1,
            Err(e) => self.problem(Some(index), Some(offset), e.to_string(), Some(bytes)),
        }
    }

    fn stopped(&self) -> bool {
        self.receiver_gone || self.shared.stop.load(Ordering::Relaxed)
    }
}

/// Reads one input to the end (or to its first structural error) and flattens its events.
fn convert_input(
    input: &Input,
    flattener: &mut Flattener,
    sender: &mut BatchSender,
    batch_rows: usize,
    shared: &Shared,
) -> FileReport {
    let _span = info_span!("input", %input).entered();
    let mut reading = Reading {
        name: input.to_string(),
        flattener,
        sender,
        shared,
        batch_rows,
        items: 0,
        receiver_gone: false,
        report: FileReport::default(),
    };
    let mut opened = match open(input) {
        Ok(opened) => opened,
        Err(ReadError::Open { source, .. } | ReadError::Read { source, .. }) => {
            reading.report.failed = true;
            reading.problem(None, None, source.to_string(), None);
            return reading.report;
        }
    };
    reading.report.bytes = input.size().unwrap_or(0);
    let mut splitter = Splitter::new();
    let mut chunk = vec![0u8; 256 * 1024];
    let mut first_byte: Option<u8> = None;
    let mut failure: Option<(u64, String)> = None;
    loop {
        let n = match opened.reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let what = if opened.gzip { "gzip stream" } else { "file" };
                let at = splitter.position();
                failure = Some((at, format!("reading the {what} failed after {at} bytes: {e}")));
                break;
            }
        };
        if first_byte.is_none() {
            first_byte = chunk[..n]
                .strip_prefix(b"\xEF\xBB\xBF")
                .unwrap_or(&chunk[..n])
                .iter()
                .copied()
                .find(|b| !b.is_ascii_whitespace());
            if first_byte.is_some_and(|b| b != b'{' && b != b'[') {
                reading.report.skipped_file = Some(SkippedFile::NotJson);
                debug!("skipped: not JSON");
                return reading.report;
            }
        }
        if let Err(e) = splitter.push(&chunk[..n], &mut |item| reading.item(item)) {
            failure = Some((
                e.offset,
                format!("malformed JSON: {}; the rest of the input is not read", e.message),
            ));
            break;
        }
        if reading.stopped() {
            return reading.report;
        }
    }
    if failure.is_none()
        && let Err(e) = splitter.finish()
    {
        failure = Some((e.offset, e.message));
    }
    if let Some((offset, message)) = failure {
        // The records before the failure are kept; the unfinished one goes to the quarantine.
        reading.report.failed = true;
        let record = reading.items;
        let pending = splitter.pending().map(|(start, bytes)| (start, bytes.to_vec()));
        match pending {
            Some((start, bytes)) if !bytes.is_empty() => {
                let message = format!("{message} (the unfinished record starts at byte {start})");
                reading.problem(Some(record), Some(offset), message, Some(&bytes))
            }
            _ => reading.problem(Some(record), Some(offset), message, None),
        }
        return finish_report(reading.report, record);
    }
    if first_byte.is_none() {
        reading.report.skipped_file = Some(SkippedFile::Empty);
        return reading.report;
    }
    let items = reading.items;
    let digest = || {
        opened
            .digest
            .lock()
            .map(|d| format!("{:032x}", d.digest128()))
            .unwrap_or_default()
    };
    reading.report.manifest = manifest_entry(input).map(|entry| InputRecord {
        hash: digest(),
        ..entry
    });
    finish_report(reading.report, items)
}

/// The inputs a run converts, after `--incremental` has set aside those already converted.
struct Selection {
    inputs: Vec<Input>,
    unchanged: u64,
    changed: Vec<String>,
}

fn select_inputs(inputs: Vec<Input>, output: &OutputDir) -> Selection {
    let converted = if output.mode() == OutputMode::Incremental {
        output.converted_inputs()
    } else {
        Default::default()
    };
    let mut selection = Selection {
        inputs: Vec::with_capacity(inputs.len()),
        unchanged: 0,
        changed: Vec::new(),
    };
    for input in inputs {
        let Some(current) = manifest_entry(&input) else {
            selection.inputs.push(input);
            continue;
        };
        let Some(before) = converted.get(&current.path) else {
            selection.inputs.push(input);
            continue;
        };
        let unchanged = (before.size == current.size && before.modified == current.modified)
            || match &input {
                // Touched but not changed. Objects are not compared by content: that would mean
                // downloading them twice.
                Input::File(path) => crate::read::file_digest(path).is_ok_and(|hash| hash == before.hash),
                Input::Object(_) | Input::Stdin => false,
            };
        if unchanged {
            selection.unchanged += 1;
        } else {
            selection.changed.push(input.to_string());
            selection.inputs.push(input);
        }
    }
    selection
}

/// The manifest entry of an input before it is read (the hash is filled in once it has been):
/// a file's absolute path, size and modification time, or an object's URL, size and
/// modification time; none for stdin.
fn manifest_entry(input: &Input) -> Option<InputRecord> {
    match input {
        Input::File(path) => file_manifest_entry(path),
        Input::Object(object) => Some(InputRecord {
            path: object.url.to_string(),
            size: object.size,
            modified: object.modified,
            hash: String::new(),
        }),
        Input::Stdin => None,
    }
}

fn file_manifest_entry(path: &std::path::Path) -> Option<InputRecord> {
    let absolute = std::fs::canonicalize(path).ok()?;
    let metadata = std::fs::metadata(&absolute).ok()?;
    let modified = metadata
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i128);
    Some(InputRecord {
        path: absolute.to_string_lossy().into_owned(),
        size: metadata.len(),
        modified,
        hash: String::new(),
    })
}

fn finish_report(mut report: FileReport, items: u64) -> FileReport {
    if items > 0 && report.events == 0 && report.quarantined == 0 && !report.failed {
        report.skipped_file = Some(if report.skipped_records.contains_key(&SkipReason::Digest) {
            SkippedFile::Digest
        } else {
            SkippedFile::NoEvents
        });
    }
    report
}
