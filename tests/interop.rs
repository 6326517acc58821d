//! The converted output read by real engines: pyarrow, DuckDB and PySpark (local mode, Java 17),
//! installed from PyPI into a local virtualenv by scripts/python-venv.sh. Any disagreement
//! fails this test loudly.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

#[test]
fn pyarrow_duckdb_and_spark_read_the_output() {
    let (dir, summary) = convert_into(
        &[data("invictus"), data("aws-kms-developer-guide/events")],
        |_| {},
    );
    let out = dir.path().join("out");

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

    let ddl_path = dir.path().join("spark.sql");
    let ddl = keytrail::dataset::ddl::spark(
        keytrail::schema::Schema::builtin(),
        "keytrail_events",
        &out.to_string_lossy(),
        &keytrail::dataset::Partitioning::default(),
    );
    std::fs::write(&ddl_path, ddl).unwrap();

    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    let python = python_venv("tests/interop/requirements.txt", "interop-venv");
    let check = Command::new(python)
        .arg(here.join("check_readers.py"))
        .arg(&out)
        .args(["--rows", &summary.rows_written.to_string()])
        .args(["--event", event_id])
        .args(["--micros", &expected_micros.to_string()])
        .arg("--spark-ddl")
        .arg(&ddl_path)
        .args(["--table", "keytrail_events"])
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
