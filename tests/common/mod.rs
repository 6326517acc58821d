//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};

use arrow::array::{Array, AsArray, MapArray, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::TimestampMicrosecondType;
use futures::TryStreamExt;
use keytrail::convert::{ConvertOptions, ConvertSummary, NoProgress, convert};
use keytrail::sql::SqlSession;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub fn data(relative: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(relative)
        .to_string_lossy()
        .into_owned()
}

/// The python of a virtualenv with the packages of `requirements` (relative to the repository),
/// created or reused by scripts/python-venv.sh under ~/.cache/keytrail/`name`.
pub fn python_venv(requirements: &str, name: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let setup = std::process::Command::new("bash")
        .arg(root.join("scripts/python-venv.sh"))
        .arg(root.join(requirements))
        .arg(name)
        .output()
        .expect("bash runs");
    assert!(
        setup.status.success(),
        "installing {requirements} failed:\n{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    String::from_utf8(setup.stdout)
        .expect("a path")
        .trim()
        .to_string()
}

/// Writes a generated delivery tree (`keytrail gen`) of `events` events into `dir`; returns how
/// many files it holds.
pub fn generate_tree(dir: &Path, events: u64, seed: u64, records_per_file: usize) -> u64 {
    let options = keytrail::synth::GenOptions {
        events,
        seed,
        records_per_file,
        ..keytrail::synth::GenOptions::default()
    };
    keytrail::synth::generate(dir, &options)
        .expect("generated tree")
        .files
}

/// Converts `inputs` into a fresh temporary directory.
pub fn convert_into(
    inputs: &[String],
    configure: impl FnOnce(&mut ConvertOptions),
) -> (tempfile::TempDir, ConvertSummary) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut options = ConvertOptions::new(inputs.to_vec(), dir.path().join("out"));
    options.threads = 2;
    configure(&mut options);
    let summary = convert(&options, &NoProgress).expect("conversion runs");
    (dir, summary)
}

/// Every Parquet file under `dir` that readers see, sorted: like Spark, Athena and DataFusion, it
/// skips `.`- and `_`-prefixed names (staging areas of unfinished runs, keytrail's records).
/// The data files of the table in `dir`: for a Delta table the live files, found by replaying
/// the add and remove actions of its JSON commits here (not by keytrail); else every Parquet
/// file outside hidden directories.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let log = dir.join("_delta_log");
    if !log.is_dir() {
        return files_on_disk(dir);
    }
    assert!(
        !log.join("_last_checkpoint").exists(),
        "the test helper replays JSON commits only"
    );
    let mut commits: Vec<PathBuf> = std::fs::read_dir(&log)
        .expect("read _delta_log")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    commits.sort();
    let mut live = std::collections::BTreeSet::new();
    for commit in commits {
        for line in std::fs::read_to_string(&commit).expect("read commit").lines() {
            let action: serde_json::Value = serde_json::from_str(line).expect("a JSON action");
            let path = |kind: &str| action[kind]["path"].as_str().map(percent_decode);
            if let Some(path) = path("add") {
                live.insert(path);
            } else if let Some(path) = path("remove") {
                live.remove(&path);
            }
        }
    }
    live.into_iter().map(|p| dir.join(p)).collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("utf-8 path")
}

/// Every Parquet file under `dir` outside hidden (`.`/`_`) directories, live or not.
pub fn files_on_disk(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with(['.', '_']))
        .filter_map(Result::ok)
        .map(|e| e.into_path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    files
}

pub fn read_file(path: &Path) -> RecordBatch {
    let file = std::fs::File::open(path).expect("open parquet");
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet metadata")
        .build()
        .expect("reader");
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().expect("read batches");
    let schema = batches.first().map(|b| b.schema()).expect("at least one batch");
    concat_batches(&schema, &batches).expect("concat")
}

/// All rows of a converted dataset in one batch.
pub fn read_all(dir: &Path) -> RecordBatch {
    let batches: Vec<RecordBatch> = parquet_files(dir).iter().map(|p| read_file(p)).collect();
    let schema = batches.first().map(|b| b.schema()).expect("at least one file");
    concat_batches(&schema, &batches).expect("concat")
}

pub fn strings(batch: &RecordBatch, column: &str) -> Vec<Option<String>> {
    let array = batch
        .column_by_name(column)
        .unwrap_or_else(|| panic!("column {column}"));
    let array = array.as_string::<i32>();
    (0..array.len())
        .map(|i| (!array.is_null(i)).then(|| array.value(i).to_string()))
        .collect()
}

pub fn string_at(batch: &RecordBatch, column: &str, row: usize) -> Option<String> {
    strings(batch, column)[row].clone()
}

/// Rows whose column equals `value`.
pub fn rows_where(batch: &RecordBatch, column: &str, value: &str) -> Vec<usize> {
    strings(batch, column)
        .iter()
        .enumerate()
        .filter(|(_, v)| v.as_deref() == Some(value))
        .map(|(i, _)| i)
        .collect()
}

pub fn map_at(batch: &RecordBatch, column: &str, row: usize) -> Option<Vec<(String, String)>> {
    let array: &MapArray = batch.column_by_name(column).expect("map column").as_map();
    if array.is_null(row) {
        return None;
    }
    let entries = array.value(row);
    let keys = entries.column(0).as_string::<i32>();
    let values = entries.column(1).as_string::<i32>();
    Some(
        (0..entries.len())
            .map(|i| (keys.value(i).to_string(), values.value(i).to_string()))
            .collect(),
    )
}

pub fn micros_at(batch: &RecordBatch, column: &str, row: usize) -> Option<i64> {
    let array = batch
        .column_by_name(column)
        .expect("timestamp column")
        .as_primitive::<TimestampMicrosecondType>();
    (!array.is_null(row)).then(|| array.value(row))
}

pub fn micros(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .expect("valid time")
        .timestamp_micros()
}

/// Runs `command` and returns its output; fails the test (with its stderr) unless it succeeded.
pub fn run(command: &mut Command) -> Output {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The JSON object a command printed (a `--json` summary).
pub fn summary_of(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not a JSON summary ({e}):\n{}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Every file under `dir`, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    files.sort();
    files
}

/// A multi-threaded runtime for the SQL tests.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The batches of the last statement of `sql`.
pub async fn collect(session: &SqlSession, sql: &str) -> Vec<RecordBatch> {
    let mut batches = Vec::new();
    for statement in session.split(sql).unwrap() {
        batches = session
            .execute(statement)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
    }
    batches
}

/// The S3 server of the tests (moto's server mode on 127.0.0.1, tests/s3/moto_s3.py) with the
/// buckets `trail-logs` (the Invictus delivery files in CloudTrail's key layout) and `lake`;
/// stopped when dropped, also when an assertion fails.
pub struct S3Server {
    child: Child,
    stdin: Option<ChildStdin>,
    pub endpoint: String,
    /// The delivery files uploaded into `trail-logs`, and the records they hold.
    pub objects: u64,
    pub records: u64,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_server(log: &Path) -> S3Server {
    start_server_with(log, &[])
}

/// The server with more options of tests/s3/moto_s3.py (`--faults`, `--min-part-size`, ...).
pub fn start_server_with(log: &Path, options: &[&str]) -> S3Server {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = python_venv("tests/s3/requirements.txt", "s3-venv");
    let mut command = Command::new(python);
    command
        .arg(root.join("tests/s3/moto_s3.py"))
        .args(["--bucket", "trail-logs", "--bucket", "lake"])
        .args(options);
    for file in std::fs::read_dir(data("invictus/CloudTrail")).unwrap() {
        command.arg("--trail").arg(file.unwrap().path());
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let fields: std::collections::HashMap<&str, &str> = line
        .split_whitespace()
        .filter_map(|f| f.split_once('='))
        .collect();
    let server = S3Server {
        child,
        stdin,
        endpoint: fields.get("endpoint").map(|s| s.to_string()).unwrap_or_default(),
        objects: fields.get("objects").and_then(|n| n.parse().ok()).unwrap_or(0),
        records: fields.get("records").and_then(|n| n.parse().ok()).unwrap_or(0),
    };
    assert!(
        line.starts_with("ready ") && server.endpoint.starts_with("http://127.0.0.1:"),
        "the S3 server did not start: {line:?}\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    server
}
