//! Reading inputs into one stream of record batches on several threads, without writing them:
//! what the Python package hands to pyarrow (`keytrail.read`).
//!
//! Worker threads take inputs from a shared queue, flatten them, drop copies of events already
//! read by any worker, and send batches through a bounded channel: memory stays bounded by the
//! channel and the workers' builders however many inputs there are. Batches come in no
//! particular order. Every record is accounted for in the stream's [`StreamReport`]: a row, a
//! copy dropped, or a problem (its original bytes kept in memory for the caller).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use arrow::array::{ArrayRef, BinaryArray, RecordBatch, RecordBatchReader};
use arrow::datatypes::{DataType, Field, Schema as ArrowSchema, SchemaRef};
use arrow::error::ArrowError;
use crossbeam_channel::{Receiver, Sender};

use super::ConvertError;
use super::scan::{ScanLedger, ScanSummary, ScanTarget};
use crate::dataset::Partitioning;
use crate::dataset::quarantine::QuarantineEntry;
use crate::flatten::Flattener;
use crate::read::Input;
use crate::sync::lock;
use crate::write::dedup::{SeenEvents, identity_digests};
use crate::write::route::partition_columns;

/// How an [`EventStream`] reads.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Worker threads (at least one; never more than there are inputs).
    pub threads: usize,
    /// Stop at the first problem: the stream ends with an error naming it.
    pub strict: bool,
    /// Rows per batch (a batch also ends with a worker's last input).
    pub batch_rows: usize,
    /// Add [`crate::schema::RAW_EVENT_COLUMN`], each event's original text.
    pub keep_raw: bool,
    /// Drop copies of an event read before (as a conversion does); off, every event is a row.
    pub drop_copies: bool,
    /// Add the partition columns a conversion with this partitioning derives (such as `region`
    /// and `event_date`), as text columns (null for Hive's default partition).
    pub partition_columns: Option<Partitioning>,
    /// Add [`IDENTITY_COLUMN`]: what makes two rows the same event, for dropping copies that
    /// several streams read (Spark tasks, each a stream of its own).
    pub identity_column: bool,
}

/// Each row's identity as 16 bytes (an xxh3-128 digest of what [`crate::write::dedup`] compares);
/// null for an event without an id, which is never a copy.
pub const IDENTITY_COLUMN: &str = "_keytrail_identity";

impl Default for StreamOptions {
    fn default() -> StreamOptions {
        StreamOptions {
            threads: std::thread::available_parallelism().map_or(1, usize::from),
            strict: false,
            batch_rows: 8192,
            keep_raw: false,
            drop_copies: true,
            partition_columns: None,
            identity_column: false,
        }
    }
}

/// Batches waiting in the channel per worker.
const BATCHES_PER_WORKER: usize = 2;

/// What a stream has read so far, shared with whoever holds the stream (which may be consumed
/// elsewhere, as pyarrow consumes the reader it is given).
pub struct StreamReport {
    ledger: ScanLedger,
    finished: AtomicBool,
}

impl StreamReport {
    /// Whether the stream was read to its end (or to the error that ended it).
    pub fn finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// What was read: files, events, rows, copies, problems.
    pub fn summary(&self) -> ScanSummary {
        self.ledger.summary()
    }

    /// The records that could not be made into rows, each with its input, record index, byte
    /// offset, reason and original bytes; taken (a second call gives only newer ones).
    pub fn take_quarantined(&self) -> Vec<(QuarantineEntry, Vec<u8>)> {
        self.ledger.take_quarantined()
    }
}

/// Reads inputs on worker threads as a stream of batches (see the module docs).
///
/// ```
/// use keytrail::convert::stream::{EventStream, StreamOptions};
/// use keytrail::read::{Input, MemoryInput};
///
/// let text = br#"{"Records": [{"eventTime": "2024-05-01T10:00:00Z", "eventID": "a",
///     "eventName": "Decrypt", "eventSource": "kms.amazonaws.com"}, {"eventTime": "soon"}]}"#;
/// let input = Input::Memory(MemoryInput { name: "mem.json".into(), bytes: text.to_vec().into() });
/// let stream = EventStream::start(vec![input], &StreamOptions::default());
/// let report = stream.report();
/// let rows: usize = stream.map(|batch| batch.unwrap().num_rows()).sum();
/// assert_eq!(rows, 1);
/// assert!(report.finished());
/// assert_eq!(report.summary().invalid_records, 1);
/// assert_eq!(report.take_quarantined()[0].0.record, Some(1));
/// ```
pub struct EventStream {
    schema: SchemaRef,
    receiver: Option<Receiver<Result<RecordBatch, ConvertError>>>,
    report: Arc<StreamReport>,
    workers: Vec<JoinHandle<()>>,
    error_given: bool,
}

/// What the workers share.
struct Shared {
    inputs: Mutex<VecDeque<Input>>,
    report: Arc<StreamReport>,
    seen: Option<SeenEvents>,
    options: StreamOptions,
    schema: SchemaRef,
}

impl EventStream {
    /// Starts reading `inputs` (read in the order given, as workers become free).
    pub fn start(inputs: Vec<Input>, options: &StreamOptions) -> EventStream {
        let schema = stream_schema(options);
        let report = Arc::new(StreamReport {
            ledger: ScanLedger::keeping_records(options.strict),
            finished: AtomicBool::new(false),
        });
        let threads = options.threads.clamp(1, inputs.len().max(1));
        let shared = Arc::new(Shared {
            inputs: Mutex::new(inputs.into()),
            report: report.clone(),
            seen: options.drop_copies.then(SeenEvents::default),
            options: StreamOptions {
                batch_rows: options.batch_rows.max(1),
                ..options.clone()
            },
            schema: schema.clone(),
        });
        let (sender, receiver) = crossbeam_channel::bounded(threads * BATCHES_PER_WORKER);
        let mut workers = Vec::with_capacity(threads);
        for index in 0..threads {
            let shared = shared.clone();
            let worker = Worker {
                shared,
                sender: sender.clone(),
            };
            let spawned = std::thread::Builder::new()
                .name(format!("keytrail-read-{index}"))
                .spawn(move || worker.run());
            match spawned {
                Ok(handle) => workers.push(handle),
                // Fewer workers read the same inputs; with none, the stream says why.
                Err(e) if workers.is_empty() => {
                    let _ = sender.send(Err(ConvertError::Thread(e)));
                }
                Err(_) => {}
            }
        }
        // The channel ends when the last worker's sender is gone.
        drop(sender);
        EventStream {
            schema,
            receiver: Some(receiver),
            report,
            workers,
            error_given: false,
        }
    }

    /// The stream's accounting, to read while or after the stream is consumed.
    pub fn report(&self) -> Arc<StreamReport> {
        self.report.clone()
    }
}

/// The schema of a stream's batches: the table's (each column's description in its field
/// metadata, `description`), with the partition and identity columns when asked for.
pub fn stream_schema(options: &StreamOptions) -> SchemaRef {
    let schema = crate::schema::Schema::builtin();
    let table = schema.table_arrow_schema(options.keep_raw);
    let described = |field: &Field| match schema.column_description(field.name()) {
        Some(text) => field
            .clone()
            .with_metadata([("description".to_string(), text.to_string())].into()),
        None => field.clone(),
    };
    let mut fields: Vec<Field> = table.fields().iter().map(|f| described(f)).collect();
    for key in options.partition_columns.iter().flat_map(Partitioning::keys) {
        let description = format!(
            "Partition column `{}`, derived from `{}` as a converted table's directories name it",
            key.column_name(),
            key.source_column()
        );
        fields.push(
            Field::new(key.column_name(), DataType::Utf8, true)
                .with_metadata([("description".to_string(), description)].into()),
        );
    }
    if options.identity_column {
        let description =
            "What makes two rows the same event (16 bytes), for dropping copies read by several streams";
        fields.push(
            Field::new(IDENTITY_COLUMN, DataType::Binary, true)
                .with_metadata([("description".to_string(), description.to_string())].into()),
        );
    }
    Arc::new(ArrowSchema::new_with_metadata(fields, table.metadata().clone()))
}

impl Iterator for EventStream {
    type Item = Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        let received = self.receiver.as_ref()?.recv();
        match received {
            Ok(Ok(batch)) => Some(Ok(batch)),
            Ok(Err(error)) => {
                self.finish();
                Some(Err(arrow_error(error)))
            }
            Err(_) => {
                // Every worker is done: a strict stop or fatal error ends the stream once.
                let stopped_by = self.report.ledger.stop_error();
                self.finish();
                match stopped_by {
                    Some(error) if !self.error_given => {
                        self.error_given = true;
                        Some(Err(arrow_error(error)))
                    }
                    _ => None,
                }
            }
        }
    }
}

impl RecordBatchReader for EventStream {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

impl EventStream {
    /// Ends the stream: the workers stop at their next batch and are waited for.
    fn finish(&mut self) {
        self.report.ledger.stop();
        // Dropping the receiver fails the workers' pending sends.
        self.receiver = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        self.report.finished.store(true, Ordering::Release);
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        if !self.workers.is_empty() {
            self.finish();
        }
    }
}

fn arrow_error(error: ConvertError) -> ArrowError {
    match error {
        ConvertError::Strict(problem) => {
            ArrowError::ExternalError(format!("stopped at the first problem (strict): {problem}").into())
        }
        other => ArrowError::ExternalError(Box::new(other)),
    }
}

/// One worker thread.
struct Worker {
    shared: Arc<Shared>,
    sender: Sender<Result<RecordBatch, ConvertError>>,
}

impl ScanTarget for Worker {
    /// The next input of the shared queue.
    fn next_input(&mut self) -> Option<Input> {
        lock(&self.shared.inputs).pop_front()
    }

    /// Sends a batch of flattened rows; false when the stream must stop.
    fn send(&mut self, batch: Result<RecordBatch, ConvertError>, input: &Input) -> bool {
        let batch = batch.and_then(|batch| {
            self.output(batch).map_err(|source| ConvertError::Batch {
                rows: 0,
                input: input.to_string(),
                source,
            })
        });
        match batch {
            Ok(batch) if batch.num_rows() == 0 => true,
            Ok(batch) => self.sender.send(Ok(batch)).is_ok(),
            Err(error) => {
                let _ = self.sender.send(Err(error));
                false
            }
        }
    }
}

impl Worker {
    fn run(mut self) {
        let mut flattener = Flattener::new();
        if self.shared.options.keep_raw {
            flattener = flattener.keeping_raw();
        }
        let shared = self.shared.clone();
        let ledger = &shared.report.ledger;
        ledger.scan_all(&mut self, &mut flattener, shared.options.batch_rows);
    }

    /// A flattened batch as the stream gives it: without copies, with partition columns.
    fn output(&self, batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
        let batch = match &self.shared.seen {
            Some(seen) => {
                let (batch, dropped) = seen.drop_copies(batch)?;
                self.shared.report.ledger.add_duplicates(dropped as u64);
                batch
            }
            None => batch,
        };
        let options = &self.shared.options;
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        if let Some(partitioning) = &options.partition_columns {
            for column in partition_columns(&batch, partitioning)? {
                columns.push(arrow::compute::cast(&column, &DataType::Utf8)?);
            }
        }
        if options.identity_column {
            let digests: BinaryArray = identity_digests(&batch)
                .into_iter()
                .map(|digest| digest.map(u128::to_le_bytes))
                .collect::<Vec<_>>()
                .iter()
                .map(|digest| digest.as_ref().map(|d| d.as_slice()))
                .collect();
            columns.push(Arc::new(digests));
        }
        RecordBatch::try_new(self.shared.schema.clone(), columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::MemoryInput;

    fn memory(name: &str, text: &str) -> Input {
        Input::Memory(MemoryInput {
            name: name.into(),
            bytes: text.as_bytes().to_vec().into(),
        })
    }

    fn event(id: &str, minute: u32) -> String {
        format!(
            r#"{{"eventTime":"2024-05-01T10:{minute:02}:00Z","eventID":"{id}","eventName":"Decrypt","eventSource":"kms.amazonaws.com","awsRegion":"eu-west-1","recipientAccountId":"111122223333"}}"#
        )
    }

    #[test]
    fn every_record_is_a_row_a_copy_or_a_kept_problem() {
        let a = memory(
            "a.json",
            &format!(r#"{{"Records":[{},{}]}}"#, event("1", 1), event("2", 2)),
        );
        let b = memory(
            "b.json",
            &format!(
                r#"{{"Records":[{},{{"eventTime":"nope","eventID":"9"}}]}}"#,
                event("2", 2)
            ),
        );
        let c = memory("c.json", &event("3", 3));
        let options = StreamOptions {
            threads: 2,
            batch_rows: 1,
            partition_columns: Some(Partitioning::default()),
            identity_column: true,
            ..StreamOptions::default()
        };
        let stream = EventStream::start(vec![a, b, c], &options);
        let report = stream.report();
        let schema = stream.schema();
        let batches: Vec<RecordBatch> = stream.map(Result::unwrap).collect();
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 3);
        let summary = report.summary();
        assert_eq!(
            (
                summary.events_read,
                summary.duplicates_dropped,
                summary.invalid_records
            ),
            (5, 1, 1)
        );
        let kept = report.take_quarantined();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].0.input, "b.json");
        assert_eq!(kept[0].1, br#"{"eventTime":"nope","eventID":"9"}"#);
        assert_eq!(schema.field(schema.fields().len() - 3).name(), "region");
        let all = arrow::compute::concat_batches(&schema, &batches).unwrap();
        let region = all.column_by_name("region").unwrap();
        let region = region
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        assert!(region.iter().all(|r| r == Some("eu-west-1")));
        let identity = all.column_by_name(IDENTITY_COLUMN).unwrap();
        let identity = identity.as_any().downcast_ref::<BinaryArray>().unwrap();
        let distinct: std::collections::HashSet<&[u8]> = identity.iter().map(Option::unwrap).collect();
        assert_eq!(distinct.len(), 3);
        assert!(distinct.iter().all(|d| d.len() == 16));
    }

    #[test]
    fn strict_ends_the_stream_with_the_problem() {
        let bad = memory("bad.json", r#"[{"eventTime":"x","eventName":"X"}]"#);
        let stream = EventStream::start(
            vec![bad],
            &StreamOptions {
                strict: true,
                ..StreamOptions::default()
            },
        );
        let items: Vec<_> = stream.collect();
        assert_eq!(items.len(), 1);
        let error = items[0].as_ref().unwrap_err().to_string();
        assert!(error.contains("bad.json: record 0"), "{error}");
    }

    #[test]
    fn a_stream_dropped_early_stops_its_workers() {
        let inputs: Vec<Input> = (0..50)
            .map(|i| memory(&format!("{i}.json"), &event(&i.to_string(), (i % 60) as u32)))
            .collect();
        let mut stream = EventStream::start(
            inputs,
            &StreamOptions {
                threads: 2,
                batch_rows: 1,
                ..StreamOptions::default()
            },
        );
        let report = stream.report();
        assert!(stream.next().is_some());
        drop(stream);
        assert!(report.finished());
        assert!(report.summary().files_read < 50);
    }
}
