//! The real `keytrail` binary: output, exit codes and error messages.

use std::process::Command;

use insta_cmd::{assert_cmd_snapshot, get_cargo_bin};

fn keytrail() -> Command {
    let mut command = Command::new(get_cargo_bin("keytrail"));
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG");
    command
}

/// Run ids, timings and temporary paths change from run to run.
fn settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"\d{8}T\d{6}Z-[0-9a-f]{8}", "[RUN]");
    settings.add_filter(r"elapsed +[0-9.]+ s \([0-9,]+ events/s\)", "elapsed [TIME]");
    settings.add_filter(r"/tmp/\.tmp[A-Za-z0-9]+", "[TMP]");
    settings.add_filter(r"\([0-9.]+ (KiB|MiB|B)\)", "([SIZE])");
    settings
}

#[test]
fn convert_prints_a_summary() {
    let out = tempfile::tempdir().unwrap();
    let _guard = settings().bind_to_scope();
    assert_cmd_snapshot!(
        keytrail()
            .args(["convert", "tests/data/invictus", "-o"])
            .arg(out.path().join("ds"))
    );
}

#[test]
fn convert_json_summary_and_partial_exit_code() {
    let out = tempfile::tempdir().unwrap();
    let output = keytrail()
        .args([
            "convert",
            "tests/data/aws-kms-developer-guide/events",
            "--json",
            "-o",
        ])
        .arg(out.path().join("ds"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "some records are rejected: exit 3");
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["quarantined_records"], 4);
    assert_eq!(summary["repaired_records"], 3);
    assert_eq!(
        summary["duplicates_dropped"], 1,
        "of three examples that reuse an event id, time and name, one differs only in additionalEventData"
    );
    assert_eq!(
        summary["rows_written"],
        summary["events_read"].as_u64().unwrap() - 4 - 1
    );
    assert_eq!(summary["problems"][0]["record"], 0);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(
            "ct-decrypt.1.json: record 0 (byte 0): invalid JSON: expected `,` or `}` at line 18 column 5"
        ),
        "{stderr}"
    );
}

#[test]
fn stdin_gzip_is_read() {
    let out = tempfile::tempdir().unwrap();
    let gz = std::fs::File::open(
        "tests/data/trailscraper/tests/cloudtrail/data/111111111111_CloudTrail_eu-central-1_20171211T1505Z_A6kvhMoVeCsc7v8U.json.gz",
    )
    .unwrap();
    let output = keytrail()
        .args(["convert", "-", "--json", "-p", "account,year,month,day", "-o"])
        .arg(out.path().join("ds"))
        .stdin(gz)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["input_files"], 1);
    assert!(summary["rows_written"].as_u64().unwrap() > 0);
    assert!(
        out.path()
            .join("ds/account=111111111111/year=2017/month=12/day=11")
            .is_dir()
    );
}

#[test]
fn errors_are_one_line_with_exit_codes() {
    let _guard = settings().bind_to_scope();
    assert_cmd_snapshot!(
        "missing_input",
        keytrail().args([
            "convert",
            "no/such/file.json",
            "-o",
            "/tmp/keytrail-never-created"
        ])
    );
    assert_cmd_snapshot!(
        "bad_partition_key",
        keytrail().args(["convert", "x", "-o", "y", "--partition-by", "region,galaxy"])
    );

    let foreign = tempfile::tempdir().unwrap();
    std::fs::write(foreign.path().join("notes.txt"), "mine").unwrap();
    let output = keytrail()
        .args(["convert", "tests/data/invictus", "-o"])
        .arg(foreign.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.starts_with("keytrail: converting into "), "{stderr}");
    assert!(stderr.contains("not empty and holds no Delta table"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn refuses_to_mix_runs_unless_overwrite() {
    let out = tempfile::tempdir().unwrap();
    let ds = out.path().join("ds");
    let run = |extra: &[&str]| {
        keytrail()
            .args(["convert", "tests/data/stratus-red-team", "-o"])
            .arg(&ds)
            .args(extra)
            .output()
            .unwrap()
    };
    assert!(run(&[]).status.success());
    let second = run(&[]);
    assert_eq!(second.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&second.stderr).contains("--overwrite to replace it"));
    assert!(run(&["--overwrite", "--progress", "off"]).status.success());
}

/// A dataset converted from the KMS developer guide examples.
fn kms_dataset() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = keytrail()
        .args(["convert", "tests/data/aws-kms-developer-guide/events", "-q", "-o"])
        .arg(dir.path().join("ds"))
        .output()
        .unwrap()
        .status;
    assert_eq!(status.code(), Some(3), "4 documentation blocks are rejected");
    dir
}

#[test]
fn sql_one_shot_formats_and_files() {
    let dir = kms_dataset();
    let ds = dir.path().join("ds");
    let _guard = settings().bind_to_scope();
    assert_cmd_snapshot!(
        "sql_one_shot_table",
        keytrail().arg("sql").arg(&ds).args([
            "SELECT event_name, kms_key_id, kms_destination_key_id FROM kms_events WHERE event_name LIKE 'Re%' ORDER BY event_name",
            "--format",
            "table"
        ])
    );
    // Not a terminal: CSV by default.
    let csv = keytrail()
        .arg("sql")
        .arg(&ds)
        .arg("SELECT count(*) AS n FROM kms_events")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(csv.stdout).unwrap(), "n\n69\n");

    let ndjson = keytrail()
        .arg("sql")
        .arg(&ds)
        .args([
            "SELECT event_name, encryption_context FROM kms_events WHERE event_name = 'ReEncrypt'",
            "--format",
            "ndjson",
        ])
        .output()
        .unwrap();
    let row: serde_json::Value = serde_json::from_slice(&ndjson.stdout).unwrap();
    assert_eq!(row["encryption_context"]["Project"], "Alpha");

    // A file of statements; results in order.
    let script = dir.path().join("q.sql");
    std::fs::write(&script, "-- two statements\nSELECT 1 AS a;\nSELECT count(*) AS b FROM events WHERE event_source = 'ec2.amazonaws.com';\n").unwrap();
    let from_file = keytrail()
        .arg("sql")
        .arg(&ds)
        .arg("-f")
        .arg(&script)
        .output()
        .unwrap();
    assert!(from_file.status.success());
    assert_eq!(String::from_utf8(from_file.stdout).unwrap(), "a\n1\nb\n2\n");

    // --output writes Parquet that reads back.
    let parquet = dir.path().join("kms.parquet");
    let written = keytrail()
        .arg("sql")
        .arg(&ds)
        .args(["SELECT * FROM kms_events", "--output"])
        .arg(&parquet)
        .output()
        .unwrap();
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
    let file = std::fs::File::open(&parquet).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    // The engine reads text as views; the file has the plain string type, nested ones too.
    let schema = reader.schema().clone();
    assert_eq!(
        schema.field_with_name("event_name").unwrap().data_type(),
        &arrow::datatypes::DataType::Utf8
    );
    let resources = format!("{}", schema.field_with_name("resources").unwrap().data_type());
    assert!(
        resources.contains("Utf8") && !resources.contains("View"),
        "{resources}"
    );
    let rows: usize = reader.build().unwrap().map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 69);
}

#[test]
fn sql_named_queries() {
    let dir = kms_dataset();
    let ds = dir.path().join("ds");
    let listed = keytrail().args(["sql", "--list-queries"]).output().unwrap();
    let listed = String::from_utf8(listed.stdout).unwrap();
    for name in [
        "key-usage",
        "failed-calls",
        "key-changes",
        "cross-account",
        "keys-by-context",
        "principal-activity",
    ] {
        assert!(listed.contains(name), "{listed}");
    }
    let usage = keytrail()
        .arg("sql")
        .arg(&ds)
        .args([
            "--query",
            "key-usage",
            "-P",
            "key=alias/ExampleAlias",
            "--format",
            "csv",
        ])
        .output()
        .unwrap();
    assert!(
        usage.status.success(),
        "{}",
        String::from_utf8_lossy(&usage.stderr)
    );
    let text = String::from_utf8(usage.stdout).unwrap();
    assert!(
        text.starts_with("principal,source_ip_address,event_name,calls,failed,first_seen,last_seen\n"),
        "{text}"
    );
    assert!(text.lines().count() > 1, "the alias examples are found: {text}");

    let missing = keytrail()
        .arg("sql")
        .arg(&ds)
        .args(["--query", "key-usage"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("needs --param key=VALUE"));
}

#[test]
fn sql_errors_are_one_line() {
    let dir = kms_dataset();
    let ds = dir.path().join("ds");
    let empty = tempfile::tempdir().unwrap();
    for (args, expected) in [
        (vec!["SELECT nope FROM events"], "No field named nope"),
        (vec!["SELEC 1"], "SQL error"),
        (vec!["DROP VIEW kms_events"], "read-only"),
    ] {
        let output = keytrail().arg("sql").arg(&ds).args(&args).output().unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(
            stderr.contains(expected) && stderr.lines().count() == 1,
            "{args:?}: {stderr}"
        );
    }
    let no_parquet = keytrail()
        .arg("sql")
        .arg(empty.path())
        .arg("SELECT 1")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&no_parquet.stderr).contains("no Parquet files found"));
    let missing = keytrail()
        .args(["sql", "/no/such/dir", "SELECT 1"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no such directory"));
}

#[test]
fn sql_shell_reads_statements_from_stdin() {
    use std::io::Write;
    let dir = kms_dataset();
    let mut child = keytrail()
        .arg("sql")
        .arg(dir.path().join("ds"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"SELECT count(*) AS n\nFROM kms_events\nWHERE error_code IS NOT NULL;\nSELECT bad;\n\\d\n",
        )
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.starts_with("n\n2\n"), "{stdout}");
    assert!(
        stdout.contains("kms_events,VIEW"),
        "the session survives the error: {stdout}"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("error: "));
    assert_eq!(
        output.status.code(),
        Some(1),
        "a failed statement makes the exit code non-zero"
    );
}

#[test]
fn schema_prints_ddl_from_the_schema_file() {
    let athena = keytrail()
        .args([
            "schema",
            "--location",
            "s3://b/p",
            "--table",
            "ct",
            "-p",
            "account,region,date",
        ])
        .output()
        .unwrap();
    let athena = String::from_utf8(athena.stdout).unwrap();
    assert!(
        athena.contains("CREATE EXTERNAL TABLE IF NOT EXISTS `ct`\nLOCATION 's3://b/p/'\nTBLPROPERTIES ('table_type'='DELTA');"),
        "{athena}"
    );
    let spark = keytrail()
        .args([
            "schema",
            "--format",
            "spark",
            "--location",
            "/data/lake/ct",
            "--table",
            "ct",
        ])
        .output()
        .unwrap();
    let spark = String::from_utf8(spark.stdout).unwrap();
    assert!(
        spark.contains("CREATE TABLE IF NOT EXISTS `ct`\nUSING delta\nLOCATION '/data/lake/ct';"),
        "{spark}"
    );
    let columns = keytrail::schema::Schema::builtin().columns().len();

    let markdown = keytrail()
        .args(["schema", "--format", "markdown"])
        .output()
        .unwrap();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(
        readme.contains(&String::from_utf8(markdown.stdout).unwrap()),
        "the README table is the generated one"
    );

    let arrow = keytrail().args(["schema", "--format", "arrow"]).output().unwrap();
    let arrow: serde_json::Value = serde_json::from_slice(&arrow.stdout).unwrap();
    assert_eq!(arrow["fields"].as_array().unwrap().len(), columns);
}

#[test]
fn a_json_file_without_events_exits_3_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("describe-trails.json");
    std::fs::write(
        &input,
        r#"{"trailList": [{"Name": "management-events", "S3BucketName": "amzn-s3-demo-bucket"}]}"#,
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_keytrail"))
        .args(["convert", "--progress", "off", "-o"])
        .arg(dir.path().join("out"))
        .arg(&input)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("describe-trails.json: holds JSON but no CloudTrail event (1 value: 1 not an event)"),
        "{stderr}"
    );
}
