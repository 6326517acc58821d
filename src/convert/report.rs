//! What a conversion reports: the problems found (each naming its input and record), the
//! per-input reports of the workers, and the summary they add up to.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::dataset::InputRecord;
use crate::read::classify::SkipReason;
use crate::write::WriteSummary;

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
    /// The Delta table version this run's commit made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_version: Option<u64>,
    /// How many times the run started (more than once when other runs committed some of its
    /// inputs first).
    pub attempts: usize,
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

pub(super) const MAX_PROBLEMS_KEPT: usize = 100;

/// What a worker found reading one input.
#[derive(Default)]
pub(super) struct FileReport {
    pub(super) events: u64,
    pub(super) quarantined: u64,
    pub(super) repaired: u64,
    pub(super) skipped_records: BTreeMap<SkipReason, u64>,
    pub(super) skipped_file: Option<SkippedFile>,
    pub(super) failed: bool,
    pub(super) problems: Vec<Problem>,
    pub(super) bytes: u64,
    /// The manifest entry of a file read to the end.
    pub(super) manifest: Option<InputRecord>,
}

impl ConvertSummary {
    /// Adds up the inputs' reports (and the problems found before reading) and what was written.
    pub(super) fn add(
        &mut self,
        mut problems: Vec<Problem>,
        reports: Vec<FileReport>,
        written: WriteSummary,
    ) {
        self.problem_count = problems.len() as u64;
        for report in reports {
            self.input_bytes += report.bytes;
            self.events_read += report.events + report.quarantined;
            self.quarantined_records += report.quarantined;
            self.repaired_records += report.repaired;
            for (reason, n) in report.skipped_records {
                *self.skipped_records.entry(reason).or_default() += n;
            }
            if let Some(skip) = report.skipped_file {
                *self.skipped_files.entry(skip).or_default() += 1;
            }
            self.failed_files += u64::from(report.failed);
            self.problem_count += report.problems.len() as u64;
            problems.extend(report.problems);
        }
        problems.sort_by(|a, b| (&a.input, a.record, a.offset).cmp(&(&b.input, b.record, b.offset)));
        problems.truncate(MAX_PROBLEMS_KEPT);
        self.problems = problems;
        self.rows_written = written.files.iter().map(|f| f.rows).sum();
        self.duplicates_dropped = written.duplicates;
        self.partitions = written.partitions;
        self.files_written = written.files.len();
        self.bytes_written = written.files.iter().map(|f| f.bytes).sum();
        self.spilled_runs = written.spilled_runs;
        self.late_rows = written.late_rows;
    }
}

/// Ends an input's report: an input whose `items` held no event and no problem is a skipped
/// file (a digest, or JSON without events).
pub(super) fn finish_report(mut report: FileReport, items: u64) -> FileReport {
    if items > 0 && report.events == 0 && report.quarantined == 0 && !report.failed {
        report.skipped_file = Some(if report.skipped_records.contains_key(&SkipReason::Digest) {
            SkippedFile::Digest
        } else {
            SkippedFile::NoEvents
        });
    }
    report
}
