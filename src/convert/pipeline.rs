//! The pipeline of a local conversion: discovery, input selection, worker threads that read
//! and flatten whole inputs, the channel to the one writer thread and its watermark, and the
//! commit.
//!
//! Worker threads each take whole input files (gunzip, split, flatten) and send record batches
//! over a bounded channel to the writer thread, so memory stays bounded whatever the input size.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use arrow::array::{AsArray, RecordBatch};
use crossbeam_channel::{Receiver, Sender, bounded};
use tracing::{info, warn};

use super::incremental::select_inputs;
use super::input::{Rows, Sharing, convert_input};
use super::report::{FileReport, Problem};
use super::run_state::RunState;
use super::{ConvertError, ConvertOptions, ConvertSummary, ProgressSink};
use crate::dataset::quarantine::Quarantine;
use crate::dataset::{Committed, InputRecord, OutputDir, OutputMode, UploadBudget, prepare_output};
use crate::flatten::Flattener;
use crate::read::{Input, discover};
use crate::schema::Schema;
use crate::store::{Stores, TableTarget};
use crate::sync::lock;
use crate::write::{DatasetWriter, WriteError, WriteSummary};

/// Rows after which a batch is sent at the end of an input file (see `convert_local`).
const FILE_BATCH_ROWS: usize = 256;

/// How many times a run starts over after other runs committed some of its inputs first.
const MAX_ATTEMPTS: usize = 20;

/// Converts the inputs into the table at `target`. When another run commits some of the same
/// inputs first, nothing of this attempt is committed and the inputs left are converted again.
pub(super) fn convert_into(
    options: &ConvertOptions,
    target: &TableTarget,
    stores: &Stores,
    progress: &dyn ProgressSink,
) -> Result<ConvertSummary, ConvertError> {
    let started = Instant::now();
    let mut discovery = discover(&options.inputs, Some(stores));
    let discovered = discovery.inputs.len();
    if let Some(shard) = options.shard {
        discovery.inputs.retain(|input| shard.holds(&input.to_string()));
        info!(%shard, inputs = discovery.inputs.len(), of = discovered, "converting one slice of the inputs");
    }
    if discovered == 0 {
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
    let problems: Vec<Problem> = discovery
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
    let schema = Schema::builtin();
    let table_schema = schema.table_arrow_schema(options.keep_raw);
    for attempt in 1..=MAX_ATTEMPTS {
        let output = prepare_output(
            target.location.clone(),
            target.local_root.as_deref(),
            options.mode,
            &options.write.partitioning,
            &table_schema,
            stores.handle().clone(),
            UploadBudget::within(options.write.memory_limit_bytes),
        )?;
        let selection = select_inputs(discovery.inputs.clone(), &output)?;
        for changed in &selection.changed {
            warn!("{changed}: changed since it was converted; converting it again (duplicates are dropped)");
        }
        let mut inputs = selection.inputs;
        crate::read::sort_by_delivery_time(&mut inputs);
        let total_bytes = inputs.iter().map(Input::size).sum::<Option<u64>>();
        progress.start(inputs.len(), total_bytes);

        let run_id = output.run_id().to_string();
        let quarantine_path = output.quarantine_path();
        let run = RunState::new(Quarantine::new(&output.quarantine_staging_dir()), options.strict);
        let writer = DatasetWriter::new(output, table_schema.clone(), options.write.clone())?;
        let reports: Mutex<Vec<FileReport>> = Mutex::new(Vec::with_capacity(inputs.len()));
        let written = run_workers(options, &inputs, writer, &run, &reports, progress);
        progress.finishing();
        let (mut output, written) = written?;
        let (stopped_by, quarantine) = run.into_outcome();
        let quarantined = quarantine.finish();
        if let Some(error) = stopped_by {
            output.abandon();
            return Err(error);
        }
        if let Err(error) = quarantined {
            output.abandon();
            return Err(error.into());
        }
        let mut reports = crate::sync::into_inner(reports);
        let manifest: Vec<InputRecord> = reports.iter_mut().filter_map(|r| r.manifest.take()).collect();
        let nothing_new = written.files.is_empty()
            && manifest.is_empty()
            && reports.iter().all(|r| r.quarantined == 0)
            && options.mode != OutputMode::Overwrite;
        let committed = if nothing_new {
            // Nothing to add: no empty commit in the table's log every hour.
            output.abandon();
            None
        } else {
            Some(output.commit(&written.files, manifest)?)
        };
        let table_version = match committed {
            None => None,
            Some(Committed::Version(version)) => Some(version),
            Some(Committed::InputsTaken(taken)) => {
                if options.mode != OutputMode::Incremental {
                    return Err(ConvertError::Output {
                        output: target.location.to_string(),
                        message: format!(
                            "another run committed to the table while this one ran ({} of the same inputs); nothing was committed: run again",
                            taken.len()
                        ),
                    });
                }
                info!(
                    taken = taken.len(),
                    attempt, "another run committed some of these inputs first; converting the rest again"
                );
                continue;
            }
        };
        let mut summary = ConvertSummary {
            output: options.output.clone(),
            run_id,
            table_version,
            schema_version: schema.version(),
            input_files: inputs.len(),
            unchanged_inputs: selection.unchanged,
            changed_inputs: selection.changed,
            attempts: attempt,
            ..ConvertSummary::default()
        };
        summary.add(problems, reports, written);
        if summary.quarantined_records > 0 {
            summary.quarantine = Some(match &target.local_root {
                Some(root) => root.join(&quarantine_path),
                None => PathBuf::from(format!("{}/{quarantine_path}", target.location)),
            });
        }
        summary.elapsed_seconds = started.elapsed().as_secs_f64();
        summary.events_per_second = summary.events_read as f64 / summary.elapsed_seconds.max(1e-9);
        return Ok(summary);
    }
    Err(ConvertError::Output {
        output: target.location.to_string(),
        message: format!(
            "other runs kept committing the same inputs first ({MAX_ATTEMPTS} attempts); nothing was committed"
        ),
    })
}

/// Reads every input on `options.threads` workers into `writer`, on a thread of its own; returns
/// what the writer wrote (not yet committed). Each input's report is pushed to `reports`.
fn run_workers(
    options: &ConvertOptions,
    inputs: &[Input],
    writer: DatasetWriter,
    run: &RunState,
    reports: &Mutex<Vec<FileReport>>,
    progress: &dyn ProgressSink,
) -> Result<(OutputDir, WriteSummary), ConvertError> {
    let threads = options.threads.max(1).min(inputs.len());
    // Slack for the writer's bursts (sorting and encoding a partition's rows while the workers go
    // on): 16 messages (of 2,048+ rows each, see `BatchSender`) instead of 4 cut the wall time
    // on 2 cores by ~5% for ~30 MB of peak RSS.
    let (sender, receiver) = bounded::<ToWriter>((threads * 2).max(16));
    let next = AtomicUsize::new(0);
    let sharing = Sharing {
        helpers: if options.threads > 1 { options.threads } else { 0 },
        min_input_bytes: options.shared_input_bytes,
    };
    std::thread::scope(|scope| {
        // Named threads show up as such in `perf`, `top -H` and panic messages.
        let writer_thread = std::thread::Builder::new()
            .name("keytrail-writer".into())
            .spawn_scoped(scope, move || write_all(writer, receiver, threads))
            .map_err(ConvertError::Thread)?;
        for worker in 0..threads {
            let mut sender = BatchSender {
                worker,
                sender: sender.clone(),
                send_rows: options.batch_rows.div_ceil(4),
                held: Vec::new(),
                held_rows: 0,
            };
            let next = &next;
            let reader = std::thread::Builder::new().name(format!("keytrail-read-{worker}"));
            let spawned = reader.spawn_scoped(scope, move || {
                let mut flattener = if options.keep_raw {
                    Flattener::new().keeping_raw()
                } else {
                    Flattener::new()
                };
                let mut last_input = None;
                while let Some(input) = inputs.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if run.stopped() {
                        break;
                    }
                    let mut end_batch = |rows: Rows<'_>, name: &str| sender.end_rows(rows, run, &name);
                    let report = convert_input(
                        input,
                        &mut flattener,
                        &mut end_batch,
                        options.batch_rows,
                        run,
                        sharing,
                    );
                    progress.file_done(report.events, report.bytes);
                    // A batch ends with a file (once it holds a few hundred rows), so that a
                    // delivery file of that size is a batch of one partition, which the writer
                    // keeps whole instead of copying its rows apart.
                    if flattener.rows() >= FILE_BATCH_ROWS.min(options.batch_rows) {
                        sender.end_batch(&mut flattener, run, input);
                    }
                    lock(reports).push(report);
                    last_input = Some(input);
                }
                // Rows are only ever left over from an input read.
                if let Some(last) = last_input
                    && flattener.rows() > 0
                {
                    sender.end_batch(&mut flattener, run, last);
                }
                sender.done();
            });
            if let Err(error) = spawned {
                // The run fails; the workers already started see it and stop.
                run.fail(ConvertError::Thread(error));
                break;
            }
        }
        drop(sender);
        match writer_thread.join() {
            Ok(written) => Ok(written?),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
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
    /// a batch (a fatal error, kept in `run` with `last_input`, the input whose rows end the
    /// batch: never a silent loss of rows).
    fn end_batch(
        &mut self,
        flattener: &mut Flattener,
        run: &RunState,
        last_input: &dyn std::fmt::Display,
    ) -> bool {
        let rows = flattener.rows();
        match flattener.finish_batch() {
            Ok(batch) => self.hold(batch),
            Err(source) => {
                run.fail(ConvertError::Batch {
                    rows,
                    input: last_input.to_string(),
                    source,
                });
                false
            }
        }
    }

    /// [`BatchSender::end_batch`] for either kind of rows.
    fn end_rows(&mut self, rows: Rows<'_>, run: &RunState, last_input: &dyn std::fmt::Display) -> bool {
        match rows {
            Rows::Flattener(flattener) => self.end_batch(flattener, run, last_input),
            Rows::Batch(batch) => self.hold(batch),
        }
    }

    /// Holds a batch, and sends the batches held once they reach `send_rows`; false when the
    /// writer has stopped.
    fn hold(&mut self, batch: RecordBatch) -> bool {
        self.held_rows += batch.num_rows();
        self.held.push(batch);
        self.held_rows < self.send_rows || self.send_held()
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

/// The writer thread: writes the workers' batches in the order they come, with the watermark of
/// the workers' newest event times.
fn write_all(
    mut writer: DatasetWriter,
    messages: Receiver<ToWriter>,
    workers: usize,
) -> Result<(OutputDir, WriteSummary), WriteError> {
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
