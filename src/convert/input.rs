//! Reading one input: opening it (gzip sniffed), the byte loop that feeds the splitter, and
//! what becomes of each record — dispatched, flattened, quarantined or counted.

use std::io::Read;

use arrow::array::RecordBatch;

use tracing::{debug, info_span, warn};

use super::dispatch::{RecordSink, dispatch};
use super::incremental::manifest_entry;
use super::parallel::{ChunkPipeline, ChunkResult};
use super::report::{FileReport, Problem, SkippedFile, finish_report};
use super::run_state::RunState;
use crate::dataset::InputRecord;
use crate::flatten::Flattener;
use crate::read::classify::{SkipReason, TopFields};
use crate::read::split::{RawItem, Splitter};
use crate::read::{Input, ReadError, open};
use crate::sync::lock;

/// Bytes read from an input at a time.
const READ_CHUNK_BYTES: usize = 256 * 1024;

/// Rows ready to go on: the flattener's (to take with [`Flattener::finish_batch`]), or a batch
/// flattened by a helper thread ([`super::parallel`]).
pub(super) enum Rows<'a> {
    Flattener(&'a mut Flattener),
    Batch(RecordBatch),
}

/// How the thread reading one input may share its flattening.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Sharing {
    /// Helper threads a large input's records are flattened on (0: never).
    pub(super) helpers: usize,
    /// Inputs of at least this many bytes (as stored) are flattened by helpers.
    pub(super) min_input_bytes: u64,
}

/// One input being read.
struct Reading<'a> {
    name: String,
    flattener: &'a mut Flattener,
    end_batch: &'a mut dyn FnMut(Rows<'_>, &str) -> bool,
    /// Records go to helper threads instead of the flattener (a large input).
    chunks: Option<ChunkPipeline>,
    run: &'a RunState,
    batch_rows: usize,
    items: u64,
    /// The record being dispatched: its index in the input and its byte offset.
    record: (u64, u64),
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
            let added = lock(&self.run.quarantine).add(&self.name, record, offset, &problem.message, bytes);
            if let Err(e) = added {
                self.run.fail(e.into());
            }
        }
        self.run.problem(&problem);
        self.report.problems.push(problem);
    }

    /// A problem with the record being dispatched, which goes to the quarantine.
    fn record_problem(&mut self, message: String, bytes: &[u8]) {
        let (index, offset) = self.record;
        self.problem(Some(index), Some(offset), message, Some(bytes));
    }

    fn item(&mut self, item: RawItem<'_>) {
        self.record = (self.items, item.offset);
        self.items += 1;
        if let Some(chunks) = &mut self.chunks {
            let mut done = Vec::new();
            chunks.push(item.bytes, self.record.0, item.offset, &mut done);
            self.take_chunks(done);
            return;
        }
        dispatch(item.bytes, self);
        if self.flattener.rows() >= self.batch_rows {
            self.receiver_gone |= !(self.end_batch)(Rows::Flattener(self.flattener), &self.name);
        }
    }

    /// Takes what helper threads flattened, in input order: counts, problems (and quarantine),
    /// and the batch.
    fn take_chunks(&mut self, done: Vec<ChunkResult>) {
        for result in done {
            self.report.events += result.events;
            self.report.repaired += result.repaired;
            for (reason, count) in result.skipped {
                *self.report.skipped_records.entry(reason).or_default() += count;
            }
            for (index, offset, message, bytes) in result.problems {
                self.problem(Some(index), Some(offset), message, Some(&bytes));
            }
            match result.batch {
                Ok(batch) if batch.num_rows() == 0 => {}
                Ok(batch) if !self.receiver_gone => {
                    self.receiver_gone |= !(self.end_batch)(Rows::Batch(batch), &self.name);
                }
                Ok(_) => {}
                Err(source) => {
                    self.run.fail(super::ConvertError::Batch {
                        rows: 0,
                        input: self.name.clone(),
                        source,
                    });
                    self.receiver_gone = true;
                }
            }
        }
    }

    /// Waits for the helpers' last chunks (when the input is shared) and takes them.
    fn finish_chunks(&mut self) {
        if let Some(chunks) = &mut self.chunks {
            let mut done = Vec::new();
            chunks.finish(&mut done);
            self.take_chunks(done);
        }
    }

    fn stopped(&self) -> bool {
        self.receiver_gone || self.run.stopped()
    }
}

impl RecordSink for Reading<'_> {
    fn event(&mut self, event: &TopFields<'_>, original: &[u8]) {
        match self.flattener.append_event(event, original) {
            Ok(()) => self.report.events += 1,
            Err(e) => self.record_problem(e.to_string(), original),
        }
    }

    fn skipped(&mut self, reason: SkipReason) {
        *self.report.skipped_records.entry(reason).or_default() += 1;
    }

    fn repaired(&mut self) {
        self.report.repaired += 1;
        debug!(record = self.record.0, "accepted after removing trailing commas");
    }

    fn invalid(&mut self, message: String, original: &[u8]) {
        self.record_problem(message, original);
    }
}

/// Reads one input to the end (or to its first structural error) and flattens its events.
///
/// `end_batch` is called whenever the flattener holds `batch_rows` rows, with the input's name;
/// false means the run must stop (the writer is gone, or the batch could not be built).
pub(super) fn convert_input(
    input: &Input,
    flattener: &mut Flattener,
    end_batch: &mut dyn FnMut(Rows<'_>, &str) -> bool,
    batch_rows: usize,
    run: &RunState,
    sharing: Sharing,
) -> FileReport {
    let _span = info_span!("input", %input).entered();
    let mut reading = Reading {
        name: input.to_string(),
        flattener,
        end_batch,
        chunks: None,
        run,
        batch_rows,
        items: 0,
        record: (0, 0),
        receiver_gone: false,
        report: FileReport::default(),
    };
    let opened = match open(input) {
        Ok(opened) => opened,
        Err(ReadError::Open { source, .. }) => {
            reading.report.failed = true;
            reading.problem(None, None, source.to_string(), None);
            return reading.report;
        }
    };
    reading.report.bytes = input.size().unwrap_or(0);
    let digest = opened.digest.clone();
    let items = if opened.zip {
        match read_archive(&mut reading, opened.reader) {
            Some(items) => items,
            None => return reading.report,
        }
    } else {
        let shared = sharing.helpers > 0 && reading.report.bytes >= sharing.min_input_bytes;
        let stream = if shared {
            read_shared(&mut reading, opened.reader, opened.gzip, sharing.helpers)
        } else {
            read_stream(&mut reading, opened.reader, opened.gzip)
        };
        match stream {
            Stream::Read => reading.items,
            Stream::Stopped => return reading.report,
            Stream::Failed => return finish_report(reading.report, reading.items),
            Stream::EventHistoryCsv => {
                reading.report.skipped_file = Some(SkippedFile::NotJson);
                reading.problem(None, None, EVENT_HISTORY_CSV.to_string(), None);
                return reading.report;
            }
            Stream::NotJson => {
                reading.report.skipped_file = Some(SkippedFile::NotJson);
                debug!("skipped: not JSON");
                return reading.report;
            }
            Stream::Empty => {
                reading.report.skipped_file = Some(SkippedFile::Empty);
                return reading.report;
            }
        }
    };
    if reading.report.failed {
        return finish_report(reading.report, items);
    }
    reading.report.manifest = manifest_entry(input).map(|entry| InputRecord {
        hash: format!("{:032x}", lock(&digest).digest128()),
        ..entry
    });
    reading.report = finish_report(std::mem::take(&mut reading.report), items);
    if let Some(message) = no_events_problem(&reading.report) {
        reading.problem(None, None, message, None);
    }
    reading.report
}

/// How reading one stream of JSON ended.
enum Stream {
    /// To the end.
    Read,
    /// The run stopped (the writer is gone, or `--strict`).
    Stopped,
    /// A read or structural error; the records before it are kept, the problem reported.
    Failed,
    NotJson,
    /// The console's Event history downloaded as CSV: summary columns, not the events.
    EventHistoryCsv,
    Empty,
}

/// Whether `head` (an input's first bytes) is the header of the CloudTrail console's Event
/// history CSV download (`Event ID,Event time,User name,Event name,...`).
fn is_event_history_csv(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head));
    let header = text.lines().next().unwrap_or_default().to_ascii_lowercase();
    ["event id", "event time", "event name"]
        .iter()
        .all(|column| header.split(',').any(|c| c.trim().trim_matches('"') == *column))
}

/// Why an Event history CSV download converts to nothing, and what to do instead.
const EVENT_HISTORY_CSV: &str = "a CloudTrail Event history download in CSV: its rows are summaries     (name, time, user, resources), not the events; download the events as JSON in the console, or     save `aws cloudtrail lookup-events` output, and read that";

/// [`read_stream`] with the records flattened by `helpers` threads (see [`super::parallel`]).
fn read_shared(
    reading: &mut Reading<'_>,
    reader: Box<dyn Read + Send + '_>,
    gzip: bool,
    helpers: usize,
) -> Stream {
    // Rows of earlier inputs go first: the helpers' batches follow them.
    if reading.flattener.rows() > 0 {
        reading.receiver_gone |= !(reading.end_batch)(Rows::Flattener(reading.flattener), &reading.name);
    }
    std::thread::scope(|scope| {
        reading.chunks = ChunkPipeline::start(scope, helpers, reading.flattener);
        debug!(helpers, "records flattened by helper threads");
        let stream = read_stream(reading, reader, gzip);
        // Dropping the pipeline ends the helpers (a stopped run leaves its chunks unread).
        reading.chunks = None;
        stream
    })
}

/// The byte loop: reads `reader` to its end (or first structural error) through the splitter.
fn read_stream(reading: &mut Reading<'_>, mut reader: Box<dyn Read + Send + '_>, gzip: bool) -> Stream {
    let mut splitter = Splitter::new();
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    let mut first_byte: Option<u8> = None;
    let mut failure: Option<(u64, String)> = None;
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let what = if gzip { "gzip stream" } else { "file" };
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
                return if is_event_history_csv(&chunk[..n]) {
                    Stream::EventHistoryCsv
                } else {
                    Stream::NotJson
                };
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
            return Stream::Stopped;
        }
    }
    if failure.is_none()
        && let Err(e) = splitter.finish()
    {
        failure = Some((e.offset, e.message));
    }
    reading.finish_chunks();
    if reading.stopped() {
        return Stream::Stopped;
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
        return Stream::Failed;
    }
    if first_byte.is_none() {
        return Stream::Empty;
    }
    Stream::Read
}

/// Reads every member of a `.zip` archive as an input of its own (named `archive.zip!/member`
/// in problems; members may be gzip), into one report for the archive. Members that are not
/// JSON (a README, `__MACOSX/` metadata) are skipped. `None` when the run stopped.
fn read_archive(reading: &mut Reading<'_>, mut raw: Box<dyn Read + Send>) -> Option<u64> {
    let archive_name = reading.name.clone();
    // The central directory is at the end: the archive is spooled to a temporary file (which
    // also hashes every byte of it for the manifest) and read from there.
    let spooled = tempfile::tempfile().and_then(|mut file| {
        std::io::copy(&mut raw, &mut file)?;
        Ok(file)
    });
    let mut archive = match spooled
        .map_err(|e| e.to_string())
        .and_then(|file| zip::ZipArchive::new(file).map_err(|e| format!("not a readable zip archive: {e}")))
    {
        Ok(archive) => archive,
        Err(message) => {
            reading.report.failed = true;
            reading.problem(None, None, message, None);
            return Some(0);
        }
    };
    let mut items = 0;
    for index in 0..archive.len() {
        let mut member = match archive.by_index(index) {
            Ok(member) => member,
            Err(e) => {
                reading.report.failed = true;
                reading.problem(None, None, format!("member {index}: {e}"), None);
                continue;
            }
        };
        let member_name = member.name().to_string();
        let skipped = member.is_dir()
            || member_name
                .split('/')
                .any(|part| part.starts_with('.') || part == "__MACOSX");
        if skipped {
            continue;
        }
        reading.name = format!("{archive_name}!/{member_name}");
        reading.items = 0;
        let opened = match crate::read::sniff(Box::new(&mut member)) {
            Ok(opened) => opened,
            Err(e) => {
                reading.report.failed = true;
                reading.problem(None, None, e.to_string(), None);
                continue;
            }
        };
        match read_stream(reading, opened.reader, opened.gzip) {
            Stream::Stopped => return None,
            Stream::NotJson | Stream::Empty => debug!(member = %member_name, "skipped: not JSON"),
            Stream::EventHistoryCsv => reading.problem(None, None, EVENT_HISTORY_CSV.to_string(), None),
            Stream::Read | Stream::Failed => {}
        }
        items += reading.items;
    }
    reading.name = archive_name;
    Some(items)
}

/// Why an input [`finish_report`] found without events is a problem: it held JSON values that
/// are not events (not a digest, nor a delivery file whose `Records` are empty), so the run says
/// so and exits 3 instead of converting nothing silently.
fn no_events_problem(report: &FileReport) -> Option<String> {
    let skipped = &report.skipped_records;
    if report.skipped_file != Some(SkippedFile::NoEvents) || skipped.is_empty() {
        return None;
    }
    let values: u64 = skipped.values().sum();
    let breakdown: Vec<String> = skipped
        .iter()
        .map(|(reason, n)| format!("{n} {}", reason.label()))
        .collect();
    Some(format!(
        "holds JSON but no CloudTrail event ({values} {}: {}); keytrail reads CloudTrail delivery \
         files, events (one, an array, or one per line), EventBridge and CloudWatch Logs envelopes, \
         SIEM `_raw` exports, `aws cloudtrail lookup-events` output and CloudTrail Lake query results",
        if values == 1 { "value" } else { "values" },
        breakdown.join(", ")
    ))
}
