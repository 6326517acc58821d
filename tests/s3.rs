//! S3 end to end against a real S3-compatible server: moto's server mode on 127.0.0.1, installed
//! from PyPI into a local virtualenv by scripts/python-venv.sh and started by this test. The
//! fixtures are uploaded in CloudTrail's own key layout, converted from the bucket to another
//! bucket with the real binary, and queried there with `keytrail sql`; every figure is compared
//! with a local conversion of the same files.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use common::*;

fn keytrail(server: &S3Server) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keytrail"));
    for (name, _) in std::env::vars() {
        if name.starts_with("AWS_") {
            command.env_remove(name);
        }
    }
    command
        .env("AWS_ENDPOINT_URL", &server.endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("NO_COLOR", "1");
    command
}

const BY_REGION: &str = "SELECT region, event_date, count(*) AS events, count(DISTINCT event_id) AS ids, \
    min(event_time) AS first, max(event_time) AS last FROM events GROUP BY region, event_date ORDER BY region, event_date";
const KMS: &str = "SELECT event_name, count(*) AS calls FROM events \
    WHERE event_source = 'kms.amazonaws.com' GROUP BY event_name ORDER BY event_name";

#[test]
fn convert_from_bucket_to_bucket_and_query_there() {
    let scratch = tempfile::tempdir().unwrap();
    let server = start_server(&scratch.path().join("moto.log"));
    let (local, local_summary) = convert_into(&[data("invictus/CloudTrail")], |_| {});
    let local_out = local.path().join("out");
    assert_eq!(server.records, 2_900);

    // Bucket to bucket.
    let converted = run(keytrail(&server).args([
        "convert",
        "s3://trail-logs/AWSLogs/",
        "-o",
        "s3://lake/cloudtrail",
        "--json",
        "--progress",
        "off",
    ]));
    let summary = summary_of(&converted);
    assert_eq!(summary["output"], "s3://lake/cloudtrail");
    assert_eq!(summary["input_files"], server.objects);
    assert_eq!(summary["events_read"], server.records);
    assert_eq!(summary["rows_written"], local_summary.rows_written);
    assert_eq!(summary["skipped_files"]["digest"], 1);
    assert_eq!(summary["problem_count"], 0);
    assert_eq!(summary["files_written"], local_summary.files_written);

    // The same answers from the bucket as from the local conversion.
    for query in [BY_REGION, KMS] {
        let remote = run(keytrail(&server).args(["sql", "s3://lake/cloudtrail", query, "--format", "csv"]));
        let local = run(keytrail(&server)
            .args(["sql"])
            .arg(&local_out)
            .args([query, "--format", "csv"]));
        let remote = String::from_utf8(remote.stdout).unwrap();
        assert!(remote.lines().count() > 1, "{remote}");
        assert_eq!(remote, String::from_utf8(local.stdout).unwrap(), "{query}");
    }
    let counted = run(keytrail(&server).args([
        "sql",
        "s3://lake/cloudtrail/",
        "SELECT count(*) FROM kms_events WHERE region = 'us-east-1'",
        "--format",
        "csv",
    ]));
    let kms_rows: u64 = String::from_utf8(counted.stdout)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let batch = read_all(&local_out);
    let expected_kms = strings(&batch, "event_source")
        .iter()
        .filter(|s| s.as_deref() == Some("kms.amazonaws.com"))
        .count() as u64;
    assert_eq!(kms_rows, expected_kms);

    // A table that holds data is not converted into again unless incremental or overwritten.
    let again = keytrail(&server)
        .args([
            "convert",
            "s3://trail-logs/AWSLogs/",
            "-o",
            "s3://lake/cloudtrail",
            "--progress",
            "off",
        ])
        .output()
        .unwrap();
    fails_with(
        &again,
        &format!(
            "s3://lake/cloudtrail: the table already holds {} files; pass --incremental",
            local_summary.files_written
        ),
    );
    let incremental = summary_of(&run(keytrail(&server).args([
        "convert",
        "s3://trail-logs/AWSLogs/",
        "-o",
        "s3://lake/cloudtrail",
        "--incremental",
        "--json",
        "--progress",
        "off",
    ])));
    assert_eq!(
        incremental["unchanged_inputs"], server.objects,
        "every object's ETag is recorded"
    );
    assert_eq!(incremental["rows_written"], 0);

    // Globs in the key select objects; a local output can be kept up to date incrementally.
    let mirror = scratch.path().join("mirror");
    let pattern = "s3://trail-logs/AWSLogs/*/CloudTrail/us-east-1/2023/**";
    let incremental = || {
        summary_of(&run(keytrail(&server)
            .args([
                "convert",
                pattern,
                "--incremental",
                "--json",
                "--progress",
                "off",
                "-o",
            ])
            .arg(&mirror)))
    };
    let first = incremental();
    assert_eq!(
        first["input_files"],
        server.objects - 1,
        "the digest is not matched"
    );
    assert_eq!(first["rows_written"], local_summary.rows_written);
    let second = incremental();
    assert_eq!(second["unchanged_inputs"], server.objects - 1);
    assert_eq!(second["rows_written"], 0);
}

#[test]
fn unreachable_buckets_and_missing_prefixes_are_clear_errors() {
    let scratch = tempfile::tempdir().unwrap();
    let server = start_server(&scratch.path().join("moto.log"));

    let out = scratch.path().join("out");
    let missing = keytrail(&server)
        .args(["convert", "s3://no-such-bucket/AWSLogs/", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    fails_with(
        &missing,
        "s3://no-such-bucket/AWSLogs/: NoSuchBucket: The specified bucket does not exist",
    );

    let empty = keytrail(&server)
        .args(["convert", "s3://trail-logs/nothing-here", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    fails_with(&empty, "s3://trail-logs/nothing-here: no objects found");

    // An output in a bucket that is not there: the table, the key and the operation are named,
    // and nothing is written.
    let no_lake = keytrail(&server)
        .args([
            "convert",
            "s3://trail-logs/AWSLogs/",
            "-o",
            "s3://no-such-lake/ct",
            "--progress",
            "off",
        ])
        .output()
        .unwrap();
    fails_with(
        &no_lake,
        "s3://no-such-lake/ct: listing _delta_log/: NoSuchBucket: The specified bucket does not exist",
    );

    let sql = keytrail(&server)
        .args(["sql", "s3://lake/nothing", "SELECT 1"])
        .output()
        .unwrap();
    fails_with(&sql, "s3://lake/nothing: no Parquet files found");
}

/// The command exited 1 and said `message` on stderr.
fn fails_with(output: &Output, message: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(message), "expected {message:?} in:\n{stderr}");
}

/// The lake bucket through object_store (not keytrail), for listing and reading keys.
fn lake(
    server: &S3Server,
) -> (
    tokio::runtime::Runtime,
    std::sync::Arc<dyn object_store::ObjectStore>,
) {
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&server.endpoint)
        .with_allow_http(true)
        .with_bucket_name("lake")
        .with_region("us-east-1")
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .build()
        .unwrap();
    (
        tokio::runtime::Runtime::new().unwrap(),
        std::sync::Arc::new(store),
    )
}

/// The Parquet keys under `prefix` in the lake bucket, and those its Delta log says are live
/// (replaying the JSON commits here, not with keytrail or delta-rs).
fn parquet_keys(server: &S3Server, prefix: &str) -> (Vec<String>, Vec<String>) {
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    let (runtime, store) = lake(server);
    let listed: Vec<object_store::ObjectMeta> = runtime
        .block_on(
            store
                .list(Some(&object_store::path::Path::from(prefix)))
                .try_collect(),
        )
        .unwrap();
    let mut on_store: Vec<String> = listed
        .iter()
        .map(|m| m.location.to_string())
        .filter(|k| k.ends_with(".parquet") && !k.contains("/_delta_log/"))
        .collect();
    on_store.sort();
    let mut commits: Vec<&object_store::ObjectMeta> = listed
        .iter()
        .filter(|m| m.location.as_ref().contains("/_delta_log/") && m.location.as_ref().ends_with(".json"))
        .collect();
    commits.sort_by_key(|m| m.location.to_string());
    let mut live = std::collections::BTreeSet::new();
    for commit in commits {
        let bytes = runtime
            .block_on(async { store.get(&commit.location).await.unwrap().bytes().await })
            .unwrap();
        for line in String::from_utf8(bytes.to_vec()).unwrap().lines() {
            let action: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(path) = action["add"]["path"].as_str() {
                live.insert(format!("{prefix}/{path}"));
            } else if let Some(path) = action["remove"]["path"].as_str() {
                live.remove(&format!("{prefix}/{path}"));
            }
        }
    }
    (on_store, live.into_iter().collect())
}

/// `(rows, distinct event ids)` of the table at `url`, by `keytrail sql`.
fn rows_and_ids(server: &S3Server, url: &str) -> (u64, u64) {
    let output = run(keytrail(server).args([
        "sql",
        url,
        "SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM events",
        "--format",
        "csv",
    ]));
    let text = String::from_utf8(output.stdout).unwrap();
    let values: Vec<u64> = text
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect();
    (values[0], values[1])
}

#[test]
fn runs_at_once_and_killed_runs_on_an_s3_table_convert_every_event_exactly_once() {
    let scratch = tempfile::tempdir().unwrap();
    let server = start_server(&scratch.path().join("moto.log"));
    let convert = |output: &str, extra: &[&str], env: &[(&str, &str)]| {
        let mut command = keytrail(&server);
        command
            .args([
                "convert",
                "s3://trail-logs/AWSLogs/",
                "-o",
                output,
                "--incremental",
                "--json",
                "--progress",
                "off",
                "-q",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        command.spawn().unwrap()
    };
    let summary = |child: Child| {
        summary_of(&{
            let output = child.wait_with_output().unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            output
        })
    };

    // Two runs over the same inputs, committing at the same moment: one wins, the other finds
    // every input converted and adds nothing.
    let pause = [("KEYTRAIL_PAUSE_BEFORE_COMMIT_MS", "1500")];
    let both = [
        convert("s3://lake/twice", &[], &pause),
        convert("s3://lake/twice", &[], &pause),
    ]
    .map(summary);
    assert_eq!(rows_and_ids(&server, "s3://lake/twice"), (2900, 2900));
    let attempts: u64 = both.iter().map(|s| s["attempts"].as_u64().unwrap()).sum();
    assert_eq!(attempts, 3, "one run started over: {both:?}");
    let (on_store, live) = parquet_keys(&server, "twice");
    assert_eq!(on_store, live, "the loser's uploads are deleted");

    // Three shards at once into one table.
    let shards: Vec<serde_json::Value> = (1..=3)
        .map(|i| {
            convert(
                "s3://lake/sharded",
                &["--shard", &format!("{i}/3")],
                &[("KEYTRAIL_PAUSE_BEFORE_COMMIT_MS", "800")],
            )
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(summary)
        .collect();
    assert_eq!(rows_and_ids(&server, "s3://lake/sharded"), (2900, 2900));
    let inputs: u64 = shards.iter().map(|s| s["input_files"].as_u64().unwrap()).sum();
    assert_eq!(inputs, server.objects, "{shards:?}");

    // A run killed while it uploads (data files go up as they are closed, before the commit),
    // then a rerun: the table has every event once, and the killed run's uploads are deleted
    // once its heartbeat is stale.
    let killed = convert(
        "s3://lake/killed",
        &[],
        &[("KEYTRAIL_CRASH_POINT", "after-first-upload")],
    )
    .wait_with_output()
    .unwrap();
    assert!(
        !killed.status.success(),
        "the run aborted mid-upload: {}\n{}",
        String::from_utf8_lossy(&killed.stdout),
        String::from_utf8_lossy(&killed.stderr)
    );
    let (on_store, live) = parquet_keys(&server, "killed");
    assert!(
        live.is_empty() && !on_store.is_empty(),
        "uploaded but not committed: {on_store:?}"
    );
    let rerun = summary(convert(
        "s3://lake/killed",
        &[],
        &[("KEYTRAIL_PENDING_LEASE_MS", "0")],
    ));
    assert_eq!(rerun["rows_written"], 2900);
    assert_eq!(rows_and_ids(&server, "s3://lake/killed"), (2900, 2900));
    let (on_store, live) = parquet_keys(&server, "killed");
    assert_eq!(on_store, live, "the killed run's uploads are deleted");
}

#[test]
fn late_rows_into_an_s3_table_are_merged_with_the_files_already_uploaded() {
    let scratch = tempfile::tempdir().unwrap();
    let server = start_server(&scratch.path().join("moto.log"));
    // 20,000 generated events in one file, with little memory: files are written (and uploaded)
    // while the run reads.
    let logs = scratch.path().join("logs");
    let generated: u64 = 20_000;
    generate_tree(&logs, generated, 5, 500);
    let mut events: Vec<serde_json::Value> = Vec::new();
    for file in walkdir::WalkDir::new(&logs)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
    {
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(std::fs::File::open(file.path()).unwrap()),
            &mut text,
        )
        .unwrap();
        let delivery: serde_json::Value = serde_json::from_str(&text).unwrap();
        events.extend(delivery["Records"].as_array().unwrap().iter().cloned());
    }
    assert_eq!(events.len() as u64, generated);
    // In time order, then 200 more events as old as the oldest: they arrive after the files
    // holding later rows were closed and uploaded.
    events.sort_by(|a, b| a["eventTime"].as_str().cmp(&b["eventTime"].as_str()));
    // One event a minute over two weeks, so days (partitions) end and their files close.
    let start = chrono::DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z").unwrap();
    for (i, event) in events.iter_mut().enumerate() {
        let time = start + chrono::Duration::minutes(i as i64);
        event["eventTime"] = time.format("%Y-%m-%dT%H:%M:%SZ").to_string().into();
    }
    let late: Vec<serde_json::Value> = events[..200]
        .iter()
        .enumerate()
        .map(|(i, event)| {
            let mut event = event.clone();
            event["eventID"] = format!("late-arrival-{i}").into();
            event
        })
        .collect();
    let generated = generated + 200;
    // One delivery file per 500 events, read in name order, then the late arrivals.
    let input = scratch.path().join("deliveries");
    std::fs::create_dir_all(&input).unwrap();
    for (i, chunk) in events.chunks(500).enumerate() {
        let body = serde_json::json!({ "Records": chunk }).to_string();
        std::fs::write(input.join(format!("d{i:03}.json")), body).unwrap();
    }
    std::fs::write(
        input.join("z-late.json"),
        serde_json::json!({ "Records": late }).to_string(),
    )
    .unwrap();
    let converted = run(keytrail(&server)
        .args([
            "convert",
            "-o",
            "s3://lake/late",
            "--json",
            "--progress",
            "off",
            "-j",
            "1",
        ])
        .args(["--memory-limit", "2MiB", "--target-file-size", "256KiB"])
        .arg(&input));
    let summary = summary_of(&converted);
    assert!(summary["late_rows"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(rows_and_ids(&server, "s3://lake/late"), (generated, generated));
    let (on_store, live) = parquet_keys(&server, "late");
    assert_eq!(on_store, live, "the files the merge replaced are deleted");
    assert_eq!(live.len() as u64, summary["files_written"].as_u64().unwrap());
}

#[test]
fn an_s3_run_killed_at_any_moment_then_rerun_has_every_event_once() {
    let scratch = tempfile::tempdir().unwrap();
    let moto_log = scratch.path().join("moto.log");
    // Parts of 16 KiB (the server accepts them), so the 64 KiB files go up in several parts
    // while they are written, and kills land in the middle of multipart uploads.
    let server = start_server_with(&moto_log, &["--log-requests", "--min-part-size", "16384"]);
    let logs = scratch.path().join("logs");
    generate_tree(&logs, 20_000, 9, 500);
    let convert = |prefix: &str| {
        let mut command = keytrail(&server);
        command
            .args([
                "convert",
                "--incremental",
                "--progress",
                "off",
                "-q",
                "--target-file-size",
                "64KiB",
                "-o",
            ])
            .arg(format!("s3://lake/{prefix}"))
            .arg(&logs)
            // Runs here never overlap: a dead run's uploads may be deleted at once.
            .env("KEYTRAIL_PENDING_LEASE_MS", "0")
            // A second between the last upload and the commit, so some kills land there.
            .env("KEYTRAIL_PAUSE_BEFORE_COMMIT_MS", "1000")
            .env("KEYTRAIL_UPLOAD_PART_BYTES", "16384")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    };
    // SIGKILL at many moments of a run into a new table, then a rerun: always every event once,
    // and nothing the killed run uploaded is left.
    // The kills land at fractions of how long a whole run takes on this machine now (a loaded
    // machine runs slower: fixed delays all landed before the first upload once).
    let timed = std::time::Instant::now();
    assert!(convert("timing").status().unwrap().success());
    let run_ms = timed.elapsed().as_millis() as u64;
    let mut kills_in_flight = 0;
    for percent in [10u64, 25, 40, 55, 70, 85] {
        let delay_ms = run_ms * percent / 100;
        let prefix = format!("sigkill-{percent}");
        let mut child = convert(&prefix).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let (on_store, live) = parquet_keys(&server, &prefix);
        // A kill that landed mid-run leaves uploads no commit names.
        kills_in_flight += usize::from(on_store != live);
        assert!(convert(&prefix).status().unwrap().success(), "{prefix}");
        assert_eq!(
            rows_and_ids(&server, &format!("s3://lake/{prefix}")),
            (20_000, 20_000),
            "{prefix}"
        );
        let (on_store, live) = parquet_keys(&server, &prefix);
        assert_eq!(on_store, live, "{prefix}: no upload of the killed run is left");
    }
    assert!(
        kills_in_flight > 0,
        "no kill landed while files were uploaded: the loop tested nothing"
    );
    let requests = std::fs::read_to_string(&moto_log).unwrap();
    assert!(
        requests.contains(".parquet?uploads") && requests.contains("partNumber=2"),
        "the data files did not go up as multipart uploads"
    );

    // Another incremental run adds a second file to the last table's partitions; compacted in
    // the bucket: one file per partition, the same rows; the replaced files stay for readers of
    // older versions.
    generate_tree(&logs.join("more"), 2_000, 10, 500);
    assert!(convert("sigkill-85").status().unwrap().success());
    let (before, _) = parquet_keys(&server, "sigkill-85");
    let compacted = summary_of(&run(keytrail(&server)
        .args(["compact", "s3://lake/sigkill-85", "--json"])
        .env("KEYTRAIL_UPLOAD_PART_BYTES", "16384")));
    let partitions = compacted["compacted"].as_array().unwrap().len();
    assert!(partitions > 0, "{compacted}");
    let (on_store, live) = parquet_keys(&server, "sigkill-85");
    let mut dirs: Vec<&str> = live.iter().map(|k| k.rsplit_once('/').unwrap().0).collect();
    dirs.dedup();
    assert_eq!(dirs.len(), live.len(), "one file per partition: {live:?}");
    assert_eq!(on_store.len(), before.len() + partitions);
    assert_eq!(rows_and_ids(&server, "s3://lake/sigkill-85"), (22_000, 22_000));
}

/// Convert `logs` into `s3://lake/<prefix>` incrementally (`KEYTRAIL_*` hooks as given).
fn convert_into_lake(server: &S3Server, logs: &Path, prefix: &str, hooks: &[(&str, &str)]) -> Output {
    let mut command = keytrail(server);
    command
        .args([
            "convert",
            "--incremental",
            "--progress",
            "off",
            "--json",
            "--target-file-size",
            "64KiB",
            "-o",
        ])
        .arg(format!("s3://lake/{prefix}"))
        .arg(logs)
        .env("KEYTRAIL_UPLOAD_PART_BYTES", "16384");
    for (name, value) in hooks {
        command.env(name, value);
    }
    command.output().unwrap()
}

#[test]
fn s3_errors_and_expired_credentials_mid_run_fail_it_with_nothing_committed() {
    let scratch = tempfile::tempdir().unwrap();
    let faults = scratch.path().join("faults.json");
    let server = start_server_with(
        &scratch.path().join("moto.log"),
        &["--faults", faults.to_str().unwrap(), "--min-part-size", "16384"],
    );
    let logs = scratch.path().join("logs");
    generate_tree(&logs, 6_000, 5, 500);
    // How many writes an undisturbed run makes (counted by the server), so the faults below
    // land all through a run, the commit and what follows it included.
    std::fs::write(&faults, r#"{"bucket":"lake","after":1000000}"#).unwrap();
    let clean = convert_into_lake(&server, &logs, "clean", &[]);
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );
    assert_eq!(rows_and_ids(&server, "s3://lake/clean"), (6_000, 6_000));
    let writes: u64 = std::fs::read_to_string(faults.with_extension("writes"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(writes > 10, "a run wrote only {writes} times");
    let mut failed_before_commit = 0;
    let mut afters: Vec<u64> = (0..6).map(|k| k * writes / 6).collect();
    afters.extend([writes - 3, writes - 2, writes - 1]);
    for (index, after) in afters.into_iter().enumerate() {
        let (code, status) = if index % 2 == 0 {
            ("ExpiredToken", 400)
        } else {
            ("AccessDenied", 403)
        };
        let prefix = format!("fault-{after}");
        // Armed anew (the count starts again) for each run.
        std::fs::write(&faults, "").unwrap();
        std::fs::write(
            &faults,
            format!(r#"{{"bucket":"lake","after":{after},"status":{status},"code":"{code}"}}"#),
        )
        .unwrap();
        let failed = convert_into_lake(&server, &logs, &prefix, &[]);
        std::fs::write(&faults, "").unwrap();
        let stderr = String::from_utf8_lossy(&failed.stderr);
        let (_, live) = parquet_keys(&server, &prefix);
        if failed.status.success() {
            // The faults came after the commit (the record's copy, the pending record's
            // removal): the run's data is in, and the warning says what the next run tidies.
            assert!(
                after >= writes - 2,
                "{prefix}: succeeded although a write failed before the commit"
            );
            assert!(
                stderr.contains(code) && stderr.contains("committed as version"),
                "{prefix}: {stderr}"
            );
            assert_eq!(
                rows_and_ids(&server, &format!("s3://lake/{prefix}")),
                (6_000, 6_000)
            );
            let again = convert_into_lake(&server, &logs, &prefix, &[("KEYTRAIL_PENDING_LEASE_MS", "0")]);
            assert!(
                again.status.success(),
                "{prefix}: {}",
                String::from_utf8_lossy(&again.stderr)
            );
            assert_eq!(summary_of(&again)["rows_written"], 0, "{prefix}: nothing new");
            assert_eq!(
                rows_and_ids(&server, &format!("s3://lake/{prefix}")),
                (6_000, 6_000)
            );
            let (on_store, live) = parquet_keys(&server, &prefix);
            assert_eq!(on_store, live, "{prefix}");
            continue;
        }
        assert_eq!(failed.status.code(), Some(1), "{prefix}: {stderr}");
        assert!(
            stderr.contains(code) && stderr.contains("s3://lake/") && !stderr.contains("panicked"),
            "{prefix}: the error names the S3 failure and the table:\n{stderr}"
        );
        assert!(live.is_empty(), "{prefix}: a failed run committed {live:?}");
        failed_before_commit += 1;
        // The rerun (the failed run is dead: its leftovers may go at once) converts everything
        // once and removes what the failed run uploaded.
        let rerun = convert_into_lake(&server, &logs, &prefix, &[("KEYTRAIL_PENDING_LEASE_MS", "0")]);
        assert!(
            rerun.status.success(),
            "{prefix}: {}",
            String::from_utf8_lossy(&rerun.stderr)
        );
        assert_eq!(
            rows_and_ids(&server, &format!("s3://lake/{prefix}")),
            (6_000, 6_000),
            "{prefix}"
        );
        let (on_store, live) = parquet_keys(&server, &prefix);
        assert_eq!(on_store, live, "{prefix}: no file of the failed run is left");
    }
    assert!(
        failed_before_commit >= 3,
        "too few faults landed before the commit: {failed_before_commit}"
    );
}

#[test]
fn the_quarantine_of_an_s3_table_keeps_the_original_bytes() {
    let scratch = tempfile::tempdir().unwrap();
    let server = start_server(&scratch.path().join("moto.log"));
    let logs = scratch.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let malformed = br#"{"eventTime":"2023-07-10T11:42:13Z","eventName": oops}"#;
    let good = r#"{"eventVersion":"1.08","eventTime":"2023-07-10T11:42:12Z","eventSource":"kms.amazonaws.com","eventName":"Decrypt","awsRegion":"eu-west-1","eventID":"5f1a9c64-0000-4000-8000-000000000001","recipientAccountId":"111122223333"}"#;
    let mut delivery = format!(r#"{{"Records":[{good},"#).into_bytes();
    delivery.extend_from_slice(malformed);
    delivery.extend_from_slice(b"]}");
    std::fs::write(logs.join("delivery.json"), &delivery).unwrap();
    let output = keytrail(&server)
        .args([
            "convert",
            "--progress",
            "off",
            "-q",
            "--json",
            "-o",
            "s3://lake/q",
        ])
        .arg(&logs)
        .output()
        .unwrap();
    // A quarantined record makes the run partial (exit code 3), not failed.
    assert_eq!(
        output.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = summary_of(&output);
    assert_eq!(summary["rows_written"], 1, "{summary}");
    assert_eq!(summary["quarantined_records"], 1, "{summary}");
    let place = summary["quarantine"].as_str().unwrap().to_string();
    assert!(place.starts_with("s3://lake/q/_keytrail/quarantine/"), "{place}");

    // Read it back from the bucket (not through keytrail's store) and check the bytes.
    use object_store::ObjectStoreExt;
    let (runtime, store) = lake(&server);
    let copy = scratch.path().join("quarantine");
    std::fs::create_dir_all(&copy).unwrap();
    for name in ["reasons.jsonl", "records.bin"] {
        let key = format!("{}/{name}", place.trim_start_matches("s3://lake/"));
        let bytes = runtime
            .block_on(async {
                store
                    .get(&object_store::path::Path::from(key.as_str()))
                    .await?
                    .bytes()
                    .await
            })
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        std::fs::write(copy.join(name), &bytes).unwrap();
    }
    let entries = keytrail::dataset::quarantine::read_quarantine(&copy).unwrap();
    assert_eq!(entries.len(), 1);
    let (entry, bytes) = &entries[0];
    assert_eq!(bytes.as_slice(), malformed.as_slice());
    assert!(entry.input.ends_with("delivery.json"), "{entry:?}");
}

#[test]
fn incremental_runs_into_s3_drop_copies_reading_only_the_identity_columns() {
    let scratch = tempfile::tempdir().unwrap();
    let requests = scratch.path().join("requests.log");
    let server = start_server_with(
        &scratch.path().join("moto.log"),
        &["--record", requests.to_str().unwrap(), "--min-part-size", "16384"],
    );
    let logs = scratch.path().join("logs");
    generate_tree(&logs, 4_000, 21, 400);
    let first = convert_into_lake(&server, &logs, "dedup", &[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // A second delivery of some files under new names (as a re-driven export writes them):
    // every event in them is already in the table.
    let mut copied = 0;
    for (index, file) in files_under(&logs).iter().take(3).enumerate() {
        let copy = file.with_file_name(format!("redelivered-{index}.json.gz"));
        std::fs::copy(file, &copy).unwrap();
        copied += count_records(&copy);
    }
    std::fs::write(&requests, "").unwrap();
    let second = convert_into_lake(&server, &logs, "dedup", &[]);
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let summary = summary_of(&second);
    assert_eq!(summary["duplicates_dropped"].as_u64(), Some(copied), "{summary}");
    assert_eq!(summary["rows_written"], 0, "{summary}");
    assert_eq!(rows_and_ids(&server, "s3://lake/dedup"), (4_000, 4_000));

    // The committed files were read in ranges (footer, then the identity columns' chunks; the
    // whole row only for files with events of no account, whose content is compared), never
    // downloaded with one plain GET.
    let (live, sizes) = live_sizes(&server, "dedup");
    let log = std::fs::read_to_string(&requests).unwrap();
    let mut fetched: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for line in log
        .lines()
        .filter(|l| l.starts_with("GET ") && l.contains(".parquet"))
    {
        let mut fields = line.split(' ');
        let (_, path, range) = (fields.next(), fields.next().unwrap(), fields.next().unwrap());
        let key = path.trim_start_matches("/lake/").to_string();
        let (start, end) = range
            .trim_start_matches("bytes=")
            .split_once('-')
            .unwrap_or_else(|| panic!("{key} was read without a Range: {line}"));
        let bytes = end.parse::<u64>().unwrap() + 1 - start.parse::<u64>().unwrap();
        *fetched.entry(key).or_default() += bytes;
    }
    assert!(!fetched.is_empty(), "no committed file was read:\n{log}");
    for (key, bytes) in &fetched {
        let size = sizes[live.iter().position(|k| k == key).unwrap()];
        assert!(
            *bytes <= size + size / 4,
            "{key}: {bytes} of {size} bytes fetched"
        );
    }
}

/// The records of a gzip delivery file.
fn count_records(path: &Path) -> u64 {
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()),
        &mut text,
    )
    .unwrap();
    let delivery: serde_json::Value = serde_json::from_str(&text).unwrap();
    delivery["Records"].as_array().unwrap().len() as u64
}

/// The live data files of the table at `prefix` of the lake bucket and their sizes.
fn live_sizes(server: &S3Server, prefix: &str) -> (Vec<String>, Vec<u64>) {
    use futures::TryStreamExt;
    let (_, live) = parquet_keys(server, prefix);
    let (runtime, store) = lake(server);
    let listed: Vec<object_store::ObjectMeta> = runtime
        .block_on(
            store
                .list(Some(&object_store::path::Path::from(prefix)))
                .try_collect(),
        )
        .unwrap();
    let sizes = live
        .iter()
        .map(|key| listed.iter().find(|m| m.location.as_ref() == key).unwrap().size)
        .collect();
    (live, sizes)
}

/// `keytrail` with no `AWS_*` variable at all and `home` as HOME: only the profile files count.
fn keytrail_with_profile(home: &Path, profile: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keytrail"));
    for (name, _) in std::env::vars() {
        if name.starts_with("AWS_") {
            command.env_remove(name);
        }
    }
    command
        .env("HOME", home)
        .env("AWS_PROFILE", profile)
        // No instance metadata service here: do not wait for one.
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("NO_COLOR", "1");
    command
}

#[test]
fn a_profile_alone_is_enough_for_convert_sql_and_info() {
    let scratch = tempfile::tempdir().unwrap();
    let server = start_server(&scratch.path().join("moto.log"));
    let home = scratch.path().join("home");
    std::fs::create_dir_all(home.join(".aws")).unwrap();
    let endpoint = &server.endpoint;
    let process = r#"sh -c 'printf "%s" "{\"Version\":1,\"AccessKeyId\":\"testing\",\"SecretAccessKey\":\"testing\"}"'"#;
    std::fs::write(
        home.join(".aws/config"),
        format!(
            "[default]\nregion = us-east-1\n\n\
             [profile lake]\nregion = us-east-1\nendpoint_url = {endpoint}\n\n\
             [profile process]\nregion = us-east-1\nendpoint_url = {endpoint}\ncredential_process = {process}\n\n\
             [profile role]\nregion = us-east-1\nendpoint_url = {endpoint}\nrole_arn = arn:aws:iam::123456789012:role/lake-writer\nsource_profile = lake\n\n\
             [profile nothing]\nregion = us-east-1\nendpoint_url = {endpoint}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        home.join(".aws/credentials"),
        "[lake]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    )
    .unwrap();

    // Keys in ~/.aws/credentials, Region and endpoint in ~/.aws/config.
    let converted = summary_of(&run(keytrail_with_profile(&home, "lake").args([
        "convert",
        "s3://trail-logs/AWSLogs/",
        "-o",
        "s3://lake/profile",
        "--json",
        "--progress",
        "off",
    ])));
    assert_eq!(converted["events_read"], server.records);
    // credential_process, and role_arn + source_profile (STS AssumeRole at the profile's
    // endpoint), for sql and info.
    for profile in ["process", "role", "lake"] {
        let counted = run(keytrail_with_profile(&home, profile).args([
            "sql",
            "s3://lake/profile",
            "SELECT count(*) AS n FROM events",
            "--format",
            "csv",
        ]));
        assert_eq!(
            String::from_utf8_lossy(&counted.stdout).lines().nth(1),
            Some(converted["rows_written"].to_string().as_str()),
            "{profile}"
        );
        let info: serde_json::Value = serde_json::from_slice(
            &run(keytrail_with_profile(&home, profile).args(["info", "s3://lake/profile", "--json"])).stdout,
        )
        .unwrap();
        assert_eq!(info["rows"], converted["rows_written"], "{profile}");
    }
    // A profile without credentials: a clear error, not a hang or an anonymous request.
    let refused = keytrail_with_profile(&home, "nothing")
        .args(["info", "s3://lake/profile"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("no usable AWS credentials"), "{stderr}");
}

#[test]
fn sql_over_raw_logs_in_a_bucket_lists_only_the_prefixes_a_query_needs() {
    let scratch = tempfile::tempdir().unwrap();
    let moto_log = scratch.path().join("moto.log");
    let server = start_server_with(&moto_log, &["--log-requests"]);
    let all = run(keytrail(&server).args([
        "sql",
        "s3://trail-logs",
        "SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM events",
    ]));
    let stderr = String::from_utf8_lossy(&all.stderr);
    assert_eq!(all.status.code(), Some(0), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&all.stdout),
        format!("n,ids\n{0},{0}\n", server.records)
    );
    assert!(
        stderr.contains(&format!("-- read {} files", server.objects - 1)),
        "the digest directory is not read: {stderr}"
    );

    // Another Region: its prefix is not there, so no object is listed or read.
    std::fs::write(&moto_log, "").unwrap();
    let other = run(keytrail(&server).args([
        "sql",
        "s3://trail-logs",
        "SELECT count(*) AS n FROM events WHERE aws_region = 'eu-west-1'",
    ]));
    assert_eq!(String::from_utf8_lossy(&other.stdout), "n\n0\n");
    let requests = std::fs::read_to_string(&moto_log).unwrap();
    let lists: Vec<&str> = requests.lines().filter(|l| l.contains("list-type=2")).collect();
    assert!(!lists.is_empty(), "{requests}");
    assert!(
        lists.iter().all(|l| !l.contains("us-east-1")),
        "the us-east-1 prefix was listed:\n{}",
        lists.join("\n")
    );
    assert!(
        !requests.lines().any(|l| l.contains("GET /trail-logs/AWSLogs")),
        "no object is read:\n{requests}"
    );

    // A time window within the hour of the logs, against the same query over every file.
    let window = "SELECT count(*) AS n FROM events WHERE event_time >= '2023-07-10T12:20:00Z' AND event_time < '2023-07-10T12:25:00Z'";
    let pruned = run(keytrail(&server).args(["sql", "s3://trail-logs", window]));
    let unpruned =
        run(keytrail(&server).args(["sql", "s3://trail-logs", window, "--delivery-margin", "off"]));
    assert_eq!(pruned.stdout, unpruned.stdout, "pruning lost no row");
    let files_read = |output: &Output| -> u64 {
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        stderr
            .split("-- read ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{stderr}"))
    };
    assert!(
        files_read(&pruned) < files_read(&unpruned),
        "{} of {} files",
        files_read(&pruned),
        files_read(&unpruned)
    );
}
