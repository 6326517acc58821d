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
    assert_eq!(summary["rejected_records"], 4);
    assert_eq!(summary["repaired_records"], 3);
    assert_eq!(
        summary["rows_written"],
        summary["events_read"].as_u64().unwrap() - 4
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
    assert!(
        stderr.contains("not empty and holds no keytrail dataset"),
        "{stderr}"
    );
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
    assert!(String::from_utf8_lossy(&second.stderr).contains("pass --overwrite"));
    assert!(run(&["--overwrite", "--progress", "off"]).status.success());
}
