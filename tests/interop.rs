//! The converted table read by readers that are not keytrail: an independent replay of its
//! `_delta_log` against the files on disk, the `deltalake` Python package, and pyarrow, DuckDB
//! and PySpark (local mode, Java 17) over the live files the log lists; all installed from PyPI
//! into a local virtualenv by scripts/python-venv.sh. Any disagreement fails this test loudly.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

#[test]
fn deltalake_pyarrow_duckdb_and_spark_read_the_table() {
    let (dir, summary) = convert_into(
        &[data("invictus"), data("aws-kms-developer-guide/events")],
        |_| {},
    );
    let out = dir.path().join("out");
    // Then a Delta overwrite with one of the two sources: readers of the first version must
    // still see all of it (its files stay until vacuumed), readers of the table only the second,
    // with the rows the overwrite wrote once a compaction rewrote its files.
    let first_rows = summary.rows_written;
    // The overwrite writes small files (as hourly runs do), which a compaction then merges: the
    // readers below read the compacted version.
    let mut options = keytrail::convert::ConvertOptions::new(vec![data("invictus")], &out);
    options.mode = keytrail::dataset::OutputMode::Overwrite;
    options.write.target_file_bytes = 64 * 1024;
    options.write.row_group_rows = 256;
    let summary = keytrail::convert::convert(&options, &keytrail::convert::NoProgress).unwrap();
    let first_version = summary.table_version.unwrap() - 1;
    let compacted = keytrail::operations::compact::compact(&out, &Default::default()).unwrap();
    assert!(!compacted.compacted.is_empty(), "{compacted:?}");
    assert!(
        compacted.compacted.iter().all(|p| p.files_after < p.files_before),
        "{compacted:?}"
    );

    // One known event, its instant computed from the raw JSON (not by keytrail).
    let first_file = std::fs::read_dir(data("invictus/CloudTrail"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .min()
        .unwrap();
    let delivery: serde_json::Value = serde_json::from_slice(&std::fs::read(first_file).unwrap()).unwrap();
    let record = &delivery["Records"][0];
    let event_id = record["eventID"].as_str().unwrap();
    let expected_micros = micros(record["eventTime"].as_str().unwrap());

    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    let python = python_venv("tests/interop/requirements.txt", "interop-venv");
    let files = dir.path().join("live-files.txt");
    let log_check = Command::new(&python)
        .arg(here.join("check_delta_log.py"))
        .arg(&out)
        .args(["--rows", &summary.rows_written.to_string()])
        .arg("--list")
        .arg(&files)
        .output()
        .unwrap();
    let log_report = String::from_utf8_lossy(&log_check.stdout);
    println!("{log_report}");
    assert!(
        log_check.status.success() && log_report.contains("delta-log: 0 failed"),
        "the Delta log disagrees with the files:\n{log_report}\n{}",
        String::from_utf8_lossy(&log_check.stderr)
    );
    let check = Command::new(python)
        .arg(here.join("check_readers.py"))
        .arg(&out)
        .arg("--files")
        .arg(&files)
        .args(["--rows", &summary.rows_written.to_string()])
        .args(["--event", event_id])
        .args(["--micros", &expected_micros.to_string()])
        .args(["--old-version", &first_version.to_string()])
        .args(["--old-rows", &first_rows.to_string()])
        .arg("--warehouse")
        .arg(dir.path().join("spark-warehouse"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    println!("{report}");
    assert!(
        check.status.success() && report.contains("interop: 0 failed"),
        "a reader disagrees with keytrail:\n{report}\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
}
