//! Reading inputs into record batches without writing them: the flattening half of a conversion,
//! for queries straight over raw logs (`keytrail sql` on a directory of CloudTrail files), where
//! each part of a query plan scans its own group of inputs.
//!
//! A [`ScanLedger`] is what the scans of one query share: `--strict`, the signal to stop, and the
//! accounting of every input read, so that a query can say afterwards what it read and what it
//! could not — the same accounting a conversion gives, with the records that a conversion would
//! quarantine named and counted instead of kept.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::RecordBatch;
use serde::Serialize;

use super::ConvertError;
use super::input::{Rows, Sharing, convert_input};
use super::report::{FileReport, MAX_PROBLEMS_KEPT, Problem, SkippedFile};
use super::run_state::RunState;
use crate::dataset::quarantine::{Quarantine, QuarantineEntry};
use crate::flatten::Flattener;
use crate::read::Input;
use crate::read::classify::SkipReason;
use crate::sync::lock;

/// What the scans of one query share (see the module docs).
pub struct ScanLedger {
    run: RunState,
    /// Each input's report by name: an input read twice by one query (a self-join) counts once.
    reports: Mutex<BTreeMap<String, FileReport>>,
    duplicates: AtomicU64,
}

impl ScanLedger {
    /// A ledger for one query; with `strict`, the first problem stops every scan.
    pub fn new(strict: bool) -> ScanLedger {
        ScanLedger {
            run: RunState::new(Quarantine::counting(), strict),
            reports: Mutex::new(BTreeMap::new()),
            duplicates: AtomicU64::new(0),
        }
    }

    /// A ledger that also keeps each record that could not be made into a row, with its bytes
    /// ([`ScanLedger::take_quarantined`]).
    pub fn keeping_records(strict: bool) -> ScanLedger {
        ScanLedger {
            run: RunState::new(Quarantine::in_memory(), strict),
            ..ScanLedger::new(strict)
        }
    }

    /// The records kept so far by a [`ScanLedger::keeping_records`] ledger, taken.
    pub fn take_quarantined(&self) -> Vec<(QuarantineEntry, Vec<u8>)> {
        lock(&self.run.quarantine).take_kept()
    }

    /// Tells the scans to stop (their reader is gone).
    pub fn stop(&self) {
        self.run.stop();
    }

    /// Whether the scans must stop (a problem under `--strict`, or a fatal error).
    pub fn stopped(&self) -> bool {
        self.run.stopped()
    }

    /// Why the scans stopped, as the error the query fails with.
    pub fn stop_error(&self) -> Option<ConvertError> {
        match self.run.strict_problem() {
            Some(problem) => Some(ConvertError::Strict(problem)),
            None => self.run.take_fatal(),
        }
    }

    /// Counts events dropped as copies of events already read.
    pub fn add_duplicates(&self, count: u64) {
        self.duplicates.fetch_add(count, Ordering::Relaxed);
    }

    /// Reads one input into `flattener`. `emit` is given a batch whenever the flattener holds
    /// `batch_rows` rows (or the error that ends the scan); false from it means stop reading.
    /// Rows left at the end of the input stay in the flattener.
    pub fn scan_input(
        &self,
        input: &Input,
        flattener: &mut Flattener,
        batch_rows: usize,
        emit: &mut dyn FnMut(Result<RecordBatch, ConvertError>) -> bool,
    ) {
        let mut end_batch = |rows: Rows<'_>, _name: &str| match rows {
            Rows::Flattener(flattener) => emit(take_batch(flattener, input)),
            Rows::Batch(batch) => emit(Ok(batch)),
        };
        let report = convert_input(
            input,
            flattener,
            &mut end_batch,
            batch_rows,
            &self.run,
            Sharing::default(),
        );
        lock(&self.reports).insert(input.to_string(), report);
    }

    /// Reads the inputs `target` gives, one after the other, into `flattener`, and gives
    /// `target` the batches: one whenever `batch_rows` rows are read, and at the end of an input
    /// once a quarter of that is (small delivery files share a batch, since a batch per file of
    /// 50 events costs a query more per row; and the first rows of a slow listing come early);
    /// the rows left go last. Stops when `target` has no more inputs or refuses a batch, or
    /// when the scans must stop.
    pub fn scan_all(&self, target: &mut dyn ScanTarget, flattener: &mut Flattener, batch_rows: usize) {
        let mut last = None;
        while !self.stopped() {
            let Some(input) = target.next_input() else {
                break;
            };
            let mut go_on = true;
            self.scan_input(&input, flattener, batch_rows, &mut |batch| {
                go_on = target.send(batch, &input);
                go_on
            });
            if go_on && flattener.rows() >= batch_rows / 4 {
                go_on = target.send(take_batch(flattener, &input), &input);
            }
            if !go_on {
                return;
            }
            last = Some(input);
        }
        if let Some(input) = last
            && flattener.rows() > 0
            && !self.stopped()
        {
            target.send(take_batch(flattener, &input), &input);
        }
    }

    /// Adds up what the scans read.
    pub fn summary(&self) -> ScanSummary {
        let reports = lock(&self.reports);
        let mut summary = ScanSummary {
            duplicates_dropped: self.duplicates.load(Ordering::Relaxed),
            ..ScanSummary::default()
        };
        let mut problems = Vec::new();
        for report in reports.values() {
            summary.files_read += 1;
            summary.bytes_read += report.bytes;
            summary.events_read += report.events + report.quarantined;
            summary.invalid_records += report.quarantined;
            summary.repaired_records += report.repaired;
            for (reason, n) in &report.skipped_records {
                *summary.skipped_records.entry(*reason).or_default() += n;
            }
            if let Some(skip) = report.skipped_file {
                *summary.skipped_files.entry(skip).or_default() += 1;
            }
            summary.failed_files += u64::from(report.failed);
            summary.problem_count += report.problems.len() as u64;
            problems.extend(report.problems.iter().cloned());
        }
        problems.truncate(MAX_PROBLEMS_KEPT);
        summary.problems = problems;
        summary
    }
}

/// Where [`ScanLedger::scan_all`] takes its inputs from and sends its batches.
pub trait ScanTarget {
    /// The next input to read; `None` ends the scan.
    fn next_input(&mut self) -> Option<Input>;
    /// Takes a batch read up to `input` (or the error that ends the scan); false ends the scan.
    fn send(&mut self, batch: Result<RecordBatch, ConvertError>, input: &Input) -> bool;
}

/// What a query over raw logs read: every event is a row of the table, a copy dropped, or an
/// invalid record named in `problems`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScanSummary {
    pub files_read: u64,
    pub bytes_read: u64,
    /// Records that looked like CloudTrail events (rows, copies and invalid ones).
    pub events_read: u64,
    /// Events dropped because the same event was read before (see `write::dedup`).
    pub duplicates_dropped: u64,
    /// Records that could not be made into rows (a conversion would quarantine them).
    pub invalid_records: u64,
    pub repaired_records: u64,
    pub skipped_records: BTreeMap<SkipReason, u64>,
    pub skipped_files: BTreeMap<SkippedFile, u64>,
    /// Inputs that could not be read to the end (their earlier records are kept).
    pub failed_files: u64,
    /// The first problems found, in input order.
    pub problems: Vec<Problem>,
    pub problem_count: u64,
}

impl ScanSummary {
    /// Rows the scans gave the query (before its own filters).
    pub fn rows(&self) -> u64 {
        self.events_read - self.invalid_records - self.duplicates_dropped
    }

    /// Adds another query's summary (the shell reports a statement of several scans as one).
    pub fn merge(&mut self, other: ScanSummary) {
        self.files_read += other.files_read;
        self.bytes_read += other.bytes_read;
        self.events_read += other.events_read;
        self.duplicates_dropped += other.duplicates_dropped;
        self.invalid_records += other.invalid_records;
        self.repaired_records += other.repaired_records;
        for (reason, n) in other.skipped_records {
            *self.skipped_records.entry(reason).or_default() += n;
        }
        for (skip, n) in other.skipped_files {
            *self.skipped_files.entry(skip).or_default() += n;
        }
        self.failed_files += other.failed_files;
        self.problem_count += other.problem_count;
        self.problems.extend(other.problems);
        self.problems.truncate(MAX_PROBLEMS_KEPT);
    }
}

impl std::fmt::Display for ScanSummary {
    /// One line: what was read and what became of it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "read {} {} ({}), {} {}: {} {}, {} {} dropped, {} invalid",
            self.files_read,
            plural(self.files_read, "file", "files"),
            human_bytes(self.bytes_read),
            self.events_read,
            plural(self.events_read, "event", "events"),
            self.rows(),
            plural(self.rows(), "row", "rows"),
            self.duplicates_dropped,
            plural(self.duplicates_dropped, "copy", "copies"),
            self.invalid_records,
        )?;
        if self.failed_files > 0 {
            write!(f, ", {} not read to the end", self.failed_files)?;
        }
        let skipped: u64 = self.skipped_files.values().sum();
        if skipped > 0 {
            let kinds: Vec<String> = self
                .skipped_files
                .iter()
                .map(|(kind, n)| format!("{n} {}", kind.label()))
                .collect();
            write!(f, ", {skipped} skipped ({})", kinds.join(", "))?;
        }
        Ok(())
    }
}

fn plural(n: u64, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 { one } else { many }
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Takes the flattener's rows as a batch, or the error that ends the scan.
pub fn take_batch(flattener: &mut Flattener, input: &Input) -> Result<RecordBatch, ConvertError> {
    let rows = flattener.rows();
    flattener.finish_batch().map_err(|source| ConvertError::Batch {
        rows,
        input: input.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &std::path::Path, name: &str, text: &str) -> Input {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        Input::File(path)
    }

    #[test]
    fn the_ledger_accounts_for_every_record_and_input() {
        let dir = tempfile::tempdir().unwrap();
        let good = write(
            dir.path(),
            "a.json",
            r#"{"Records":[{"eventTime":"2024-01-01T00:00:00Z","eventID":"1","eventName":"X"},{"eventTime":"nope","eventID":"2","eventName":"Y"}]}"#,
        );
        let digest = write(
            dir.path(),
            "d.json",
            r#"{"digestStartTime":"2024-01-01T00:00:00Z","logFiles":[]}"#,
        );
        let ledger = ScanLedger::new(false);
        let mut flattener = Flattener::new();
        let mut batches = Vec::new();
        for input in [&good, &digest, &good] {
            ledger.scan_input(input, &mut flattener, 1, &mut |batch| {
                batches.push(batch.unwrap());
                true
            });
        }
        ledger.add_duplicates(1);
        let summary = ledger.summary();
        assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 2);
        assert_eq!(
            (summary.files_read, summary.events_read, summary.invalid_records),
            (2, 2, 1)
        );
        assert_eq!(summary.rows(), 0, "one valid event, dropped as a copy");
        assert_eq!(summary.problem_count, 1);
        assert!(
            summary.problems[0].to_string().contains("a.json: record 1"),
            "{}",
            summary.problems[0]
        );
        assert_eq!(summary.skipped_files.get(&SkippedFile::Digest), Some(&1));
        let line = summary.to_string();
        assert!(line.starts_with("read 2 files ("), "{line}");
        assert!(
            line.contains("2 events: 0 rows, 1 copy dropped, 1 invalid"),
            "{line}"
        );
        assert!(!ledger.stopped());
    }

    #[test]
    fn strict_stops_at_the_first_problem() {
        let dir = tempfile::tempdir().unwrap();
        let bad = write(dir.path(), "bad.json", r#"[{"eventTime":"x","eventName":"X"}]"#);
        let ledger = ScanLedger::new(true);
        let mut flattener = Flattener::new();
        ledger.scan_input(&bad, &mut flattener, 10, &mut |_| true);
        assert!(ledger.stopped());
        let error = ledger.stop_error().unwrap().to_string();
        assert!(error.contains("bad.json: record 0"), "{error}");
    }
}
