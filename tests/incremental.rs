//! Incremental runs, duplicates across runs, changed inputs, and runs killed at any moment.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use keytrail::convert::{ConvertOptions, ConvertSummary, NoProgress, convert};
use keytrail::dataset::OutputMode;
use keytrail::synth::{GenOptions, generate};

fn generate_logs(dir: &Path, events: u64, seed: u64) {
    let options = GenOptions {
        events,
        seed,
        records_per_file: 500,
        ..GenOptions::default()
    };
    generate(dir, &options).unwrap();
}

fn run(logs: &Path, out: &Path, mode: OutputMode) -> ConvertSummary {
    let mut options = ConvertOptions::new(vec![logs.to_string_lossy().into_owned()], out);
    options.mode = mode;
    options.threads = 2;
    convert(&options, &NoProgress).unwrap()
}

/// Every event id in the dataset with how often it appears.
fn event_ids(out: &Path) -> BTreeMap<String, usize> {
    let mut ids = BTreeMap::new();
    if parquet_files(out).is_empty() {
        return ids;
    }
    for id in strings(&read_all(out), "event_id").into_iter().flatten() {
        *ids.entry(id).or_default() += 1;
    }
    ids
}

#[test]
fn incremental_runs_convert_only_new_inputs_and_drop_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let out = dir.path().join("out");
    generate_logs(&logs, 3000, 1);

    let first = run(&logs, &out, OutputMode::Incremental);
    assert_eq!((first.input_files, first.rows_written), (6, 3000));

    // Nothing new: every input is skipped, nothing is written.
    let second = run(&logs, &out, OutputMode::Incremental);
    assert_eq!(
        (second.unchanged_inputs, second.input_files, second.rows_written),
        (6, 0, 0)
    );

    // New deliveries arrive: only they are converted.
    generate_logs(&logs.join("more"), 1000, 2);
    let third = run(&logs, &out, OutputMode::Incremental);
    assert_eq!(
        (third.unchanged_inputs, third.input_files, third.rows_written),
        (6, 2, 1000)
    );

    // CloudTrail delivers a file twice under another name: every event is a duplicate.
    let original = parquet_files(&logs).is_empty(); // (no parquet among the logs)
    assert!(original);
    let first_log = walkdir::WalkDir::new(&logs)
        .sort_by_file_name()
        .into_iter()
        .filter_map(Result::ok)
        .find(|e| e.path().extension().is_some_and(|x| x == "gz"))
        .unwrap()
        .into_path();
    std::fs::copy(&first_log, logs.join("redelivered.json.gz")).unwrap();
    let fourth = run(&logs, &out, OutputMode::Incremental);
    assert_eq!(
        (fourth.input_files, fourth.rows_written, fourth.duplicates_dropped),
        (1, 0, 500)
    );

    // A converted file changes: it is reported and converted again; only its new event is added.
    let bytes = std::fs::read(&first_log).unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(bytes.as_slice()), &mut text).unwrap();
    let extra = r#"{"eventVersion":"1.10","eventTime":"2025-01-01T00:01:00Z","eventSource":"kms.amazonaws.com","eventName":"Decrypt","awsRegion":"us-east-1","eventID":"late-arrival","recipientAccountId":"111122223333"},"#;
    let changed = text.replacen("{\"Records\":[", &format!("{{\"Records\":[{extra}"), 1);
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut encoder, changed.as_bytes()).unwrap();
    std::fs::write(&first_log, encoder.finish().unwrap()).unwrap();
    let fifth = run(&logs, &out, OutputMode::Incremental);
    assert_eq!(fifth.changed_inputs.len(), 1);
    assert_eq!((fifth.rows_written, fifth.duplicates_dropped), (1, 500));

    let ids = event_ids(&out);
    assert_eq!(ids.len(), 4001);
    assert!(ids.values().all(|n| *n == 1), "no event is doubled");
    // Accounting over all runs.
    for s in [&first, &second, &third, &fourth, &fifth] {
        assert_eq!(
            s.events_read,
            s.rows_written + s.quarantined_records + s.duplicates_dropped
        );
    }
}

#[test]
fn incremental_refuses_a_different_partitioning() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    run(Path::new(&data("invictus")), &out, OutputMode::Incremental);
    let mut options = ConvertOptions::new(vec![data("invictus")], &out);
    options.mode = OutputMode::Incremental;
    options.write.partitioning =
        keytrail::dataset::Partitioning::new(vec![keytrail::dataset::PartitionKey::Account]).unwrap();
    let error = convert(&options, &NoProgress).unwrap_err().to_string();
    assert!(error.contains("partitioned by [region,event_date]"), "{error}");
}

fn keytrail(logs: &Path, out: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keytrail"));
    command
        .args(["convert", "--incremental", "--progress", "off", "-q", "-o"])
        .arg(out)
        .arg(logs)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

#[test]
fn a_run_killed_at_any_moment_then_rerun_ends_with_exactly_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    generate_logs(&logs, 20_000, 7);
    let reference = dir.path().join("reference");
    run(&logs, &reference, OutputMode::Fresh);
    let expected = event_ids(&reference);
    assert_eq!(expected.len(), 20_000);

    // Crashes at each step of a commit: before anything is published, with files published but
    // not committed, and committed but not yet recorded under _keytrail/commits.
    for point in [
        "after-pending-record",
        "after-first-publish",
        "before-delta-commit",
        "after-delta-commit",
    ] {
        let out = dir.path().join(format!("crash-{point}"));
        let status = keytrail(&logs, &out)
            .env("KEYTRAIL_CRASH_POINT", point)
            .status()
            .unwrap();
        assert!(!status.success(), "{point}: the run aborted");
        assert!(keytrail(&logs, &out).status().unwrap().success());
        assert_eq!(event_ids(&out), expected, "{point}");
        assert_eq!(
            files_on_disk(&out),
            parquet_files(&out),
            "{point}: the killed run's files are removed"
        );
        assert_eq!(pending_records(&out), 0, "{point}");
    }

    // SIGKILL at many moments of a run, each followed by a rerun that is killed again, until one
    // finishes: the result is always the same rows, none missing, none doubled.
    let out = dir.path().join("killed");
    let mut kills_in_flight = 0;
    for delay_ms in [5u64, 40, 90, 160, 250, 400, 650] {
        let mut child = keytrail(&logs, &out).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        // A kill that landed mid-run leaves its staging area, or a pending record.
        kills_in_flight += usize::from(staging_areas(&out) > 0 || pending_records(&out) > 0);
        // Whatever was committed so far is complete and readable, never doubled.
        let partial = event_ids(&out);
        assert!(partial.values().all(|n| *n == 1), "after a kill at {delay_ms} ms");
        assert!(partial.keys().all(|id| expected.contains_key(id)));
    }
    assert!(
        kills_in_flight > 0,
        "no kill landed while a run was in flight: the loop tested nothing"
    );
    assert!(keytrail(&logs, &out).status().unwrap().success());
    assert_eq!(event_ids(&out), expected);
    assert_eq!(staging_areas(&out), 0, "staging areas are cleaned up");
    assert_eq!(pending_records(&out), 0);
    assert_eq!(
        files_on_disk(&out),
        parquet_files(&out),
        "no file of a killed run is left"
    );
}

/// The staging directories of runs in `out` (left by a run still going or killed).
fn staging_areas(out: &Path) -> usize {
    std::fs::read_dir(out).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(".keytrail-staging-"))
            .count()
    })
}

/// Records of runs that were publishing files when they stopped.
fn pending_records(out: &Path) -> usize {
    std::fs::read_dir(out.join("_keytrail/pending"))
        .map_or(0, |entries| entries.filter_map(Result::ok).count())
}

/// One console sign-in: the same id, time and name every time, no `recipientAccountId` (as in
/// exports that strip it), told apart by the caller's account or, without one, by its ARN.
fn sign_in(account: Option<&str>, arn: &str) -> String {
    let mut identity = serde_json::json!({"type": "IAMUser", "arn": arn});
    if let Some(account) = account {
        identity["accountId"] = account.into();
    }
    serde_json::json!({
        "eventVersion": "1.08",
        "eventTime": "2024-03-01T10:00:00Z",
        "eventSource": "signin.amazonaws.com",
        "eventName": "ConsoleLogin",
        "awsRegion": "us-east-1",
        "eventID": "0b5e8c1a-shared-id",
        "userIdentity": identity,
    })
    .to_string()
}

#[test]
fn only_copies_of_the_same_event_are_dropped_when_the_recipient_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let alice = sign_in(Some("111111111111"), "arn:aws:iam::111111111111:user/alice");
    let bob = sign_in(Some("222222222222"), "arn:aws:iam::222222222222:user/bob");
    let bob_redelivered = sign_in(Some("222222222222"), "arn:aws:iam::222222222222:user/bob-renamed");
    let carol = sign_in(None, "arn:aws:iam::333333333333:user/carol");
    let dave = sign_in(None, "arn:aws:iam::444444444444:user/dave");
    let write = |name: &str, records: &[&String]| {
        let dir = dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let lines: Vec<&str> = records.iter().map(|r| r.as_str()).collect();
        std::fs::write(dir.join("events.ndjson"), lines.join("\n")).unwrap();
        dir
    };
    // Alice and Bob differ by the caller's account standing in for the recipient; a copy of Bob
    // with the same account is the same event even where its content differs. Carol and Dave
    // have no account at all: only Carol's identical copy is dropped.
    let first = write("first", &[&alice, &bob, &bob_redelivered, &carol, &carol, &dave]);
    let summary = run(&first, &out, OutputMode::Incremental);
    assert_eq!(
        (summary.rows_written, summary.duplicates_dropped),
        (4, 2),
        "alice, bob, carol and dave are four events"
    );
    // A later run with copies of all four and one new account-less event: the copies are found
    // in the committed files (Carol's and Dave's by their content), the new event is kept.
    let erin = sign_in(None, "arn:aws:iam::555555555555:user/erin");
    let second = write("second", &[&alice, &bob, &carol, &dave, &erin]);
    let summary = run(&second, &out, OutputMode::Incremental);
    assert_eq!((summary.rows_written, summary.duplicates_dropped), (1, 4));
    let arns: Vec<String> = strings(&read_all(&out), "user_identity_arn")
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(arns.len(), 5, "{arns:?}");
    for user in ["alice", "bob", "carol", "dave", "erin"] {
        assert_eq!(
            arns.iter()
                .filter(|a| a.contains(&format!("user/{user}")))
                .count(),
            1,
            "{user}: {arns:?}"
        );
    }
}

/// A `keytrail convert --incremental --json` process into `out`, started now; with
/// `pause_ms`, it waits that long before its commit (a test hook), so processes started together
/// commit at the same moment.
fn spawn_convert(inputs: &[&Path], out: &Path, extra: &[&str], pause_ms: u64) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_keytrail"))
        .args([
            "convert",
            "--incremental",
            "--json",
            "--progress",
            "off",
            "-q",
            "-j",
            "1",
            "-o",
        ])
        .arg(out)
        .args(inputs)
        .args(extra)
        .env("KEYTRAIL_PAUSE_BEFORE_COMMIT_MS", pause_ms.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn summary_of(child: std::process::Child) -> serde_json::Value {
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "a run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn runs_at_once_on_one_table_convert_every_event_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let [a, b, c] = ["a", "b", "c"].map(|name| logs.join(name));
    for (seed, logs) in [&a, &b, &c].into_iter().enumerate() {
        generate_logs(logs, 1500, 21 + seed as u64);
    }
    let all = event_ids(&{
        let reference = dir.path().join("reference");
        run(&logs, &reference, OutputMode::Fresh);
        reference
    });
    assert_eq!(all.len(), 4500);

    // Two hourly runs that overlap: a+b and b+c, both committing at the same moment. One wins;
    // the other finds b committed, discards what it wrote and converts only c again.
    let out = dir.path().join("overlapping");
    let first = spawn_convert(&[&a, &b], &out, &[], 1500);
    let second = spawn_convert(&[&b, &c], &out, &[], 1500);
    let summaries = [summary_of(first), summary_of(second)];
    assert_eq!(event_ids(&out), all, "every event exactly once");
    let attempts: Vec<u64> = summaries
        .iter()
        .map(|s| s["attempts"].as_u64().unwrap())
        .collect();
    assert_eq!(
        attempts.iter().sum::<u64>(),
        3,
        "one run started over: {attempts:?}"
    );
    let written: u64 = summaries
        .iter()
        .map(|s| s["rows_written"].as_u64().unwrap())
        .sum();
    assert_eq!(
        written, 4500,
        "the run that started over wrote only c: {summaries:?}"
    );
    assert_eq!(
        files_on_disk(&out),
        parquet_files(&out),
        "the discarded files are gone"
    );

    // Three machines, each converting its slice of the whole tree into one table at once.
    let sharded = dir.path().join("sharded");
    let shards: Vec<_> = (1..=3)
        .map(|i| spawn_convert(&[&logs], &sharded, &["--shard", &format!("{i}/3")], 800))
        .collect();
    let summaries: Vec<serde_json::Value> = shards.into_iter().map(summary_of).collect();
    assert_eq!(event_ids(&sharded), all, "every event exactly once");
    let inputs: u64 = summaries.iter().map(|s| s["input_files"].as_u64().unwrap()).sum();
    assert_eq!(inputs, 9, "the slices cover every input once: {summaries:?}");
    assert!(
        summaries.iter().any(|s| s["attempts"].as_u64().unwrap() == 1),
        "{summaries:?}"
    );
}

#[test]
fn many_incremental_runs_are_read_back_from_snapshots_of_the_converted_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let all = dir.path().join("all");
    generate_logs(&all, 3_500, 31);
    let files = files_under(&all);
    assert_eq!(files.len(), 7);
    let (inputs, out) = (dir.path().join("in"), dir.path().join("out"));
    let converted = |hook: &str| -> serde_json::Value {
        let output = Command::new(env!("CARGO_BIN_EXE_keytrail"))
            .args([
                "convert",
                "--incremental",
                "--json",
                "--progress",
                "off",
                "-q",
                "-o",
            ])
            .arg(&out)
            .arg(&inputs)
            .env("KEYTRAIL_SNAPSHOT_EVERY", hook)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    };
    // One new delivery file per run; every third run rolls the copies up.
    for file in &files {
        let to = inputs.join(file.strip_prefix(&all).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(file, &to).unwrap();
        assert_eq!(converted("3")["rows_written"], 500);
    }
    let listed = |folder: &str| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(out.join("_keytrail").join(folder))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let version = |n: u64| format!("{n:020}.json");
    assert_eq!(
        listed("inputs"),
        [version(3), version(6)],
        "snapshots after runs 1-3 and 4-6"
    );
    assert_eq!(
        listed("commits"),
        [version(7)],
        "the copies they cover are deleted"
    );

    // A rerun (with the default rollup) finds every input converted: snapshot plus one copy.
    let rerun = converted("100");
    assert_eq!(rerun["unchanged_inputs"], 7, "{rerun}");
    assert_eq!(rerun["rows_written"], 0, "{rerun}");
    let ids = event_ids(&out);
    assert_eq!(ids.len(), 3_500);
    assert!(ids.values().all(|n| *n == 1));

    // An overwrite starts the record again: its snapshot lists only what it converted.
    std::fs::remove_file(inputs.join(files[0].strip_prefix(&all).unwrap())).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_keytrail"))
        .args([
            "convert",
            "--overwrite",
            "--json",
            "--progress",
            "off",
            "-q",
            "-o",
        ])
        .arg(&out)
        .arg(&inputs)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::copy(&files[0], inputs.join(files[0].strip_prefix(&all).unwrap())).unwrap();
    let after = converted("1");
    assert_eq!(after["unchanged_inputs"], 6, "{after}");
    assert_eq!(after["rows_written"], 500, "{after}");
    assert_eq!(event_ids(&out).len(), 3_500);
}
