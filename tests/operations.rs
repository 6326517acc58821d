//! `keytrail compact`, `vacuum` and `info` on local tables, with the real binary: compaction
//! keeps every row as it was (checked column by column against the table before), sorts, and
//! is safe beside converts, other compactions and kills; vacuum deletes only what no version
//! needs and is old enough.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
use common::*;

fn keytrail() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keytrail"));
    command.env("NO_COLOR", "1");
    command
}

fn convert_incremental(inputs: &Path, table: &Path) -> Command {
    let mut command = keytrail();
    command
        .args(["convert", "--incremental", "--json", "--progress", "off", "-o"])
        .arg(table)
        .arg(inputs);
    command
}

/// A table made by `runs` incremental runs, each adding two more delivery files of a generated
/// tree (so each touched partition gets one small file per run); returns (inputs, table).
fn table_of_small_runs(dir: &Path, runs: usize) -> (PathBuf, PathBuf) {
    let all = dir.join("all");
    generate_tree(&all, (runs * 500) as u64, 7, 250);
    let files = files_under(&all);
    let inputs = dir.join("in");
    let table = dir.join("table");
    for pair in files.chunks(2).take(runs) {
        for file in pair {
            let to = inputs.join(file.strip_prefix(&all).unwrap());
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(file, &to).unwrap();
        }
        run(&mut convert_incremental(&inputs, &table));
    }
    (inputs, table)
}

/// Every row of the table, ordered by event id (unique here), every column.
fn rows_by_id(table: &Path) -> RecordBatch {
    let batch = read_all(table);
    let ids = batch.column_by_name("event_id").unwrap().clone();
    let order = lexsort_to_indices(
        &[SortColumn {
            values: ids,
            options: None,
        }],
        None,
    )
    .unwrap();
    take_record_batch(&batch, &order).unwrap()
}

fn assert_same_rows(before: &RecordBatch, after: &RecordBatch) {
    assert_eq!(before.num_rows(), after.num_rows());
    for (field, column) in before.schema().fields().iter().zip(before.columns()) {
        let other = after
            .column_by_name(field.name())
            .unwrap_or_else(|| panic!("{} is gone", field.name()));
        assert_eq!(column.as_ref(), other.as_ref(), "column {} changed", field.name());
    }
}

/// The partition directory of each live file.
fn partitions_of(table: &Path) -> Vec<String> {
    parquet_files(table)
        .iter()
        .map(|f| {
            f.parent()
                .unwrap()
                .strip_prefix(table)
                .unwrap()
                .display()
                .to_string()
        })
        .collect()
}

fn assert_sorted_by_time(file: &Path) {
    let batch = read_file(file);
    let times = batch.column_by_name("event_time").unwrap();
    let times = times.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
    let ids = strings(&batch, "event_id");
    for row in 1..batch.num_rows() {
        let previous = (times.value(row - 1), &ids[row - 1]);
        let current = (times.value(row), &ids[row]);
        assert!(
            previous <= current,
            "{}: row {row} is out of order",
            file.display()
        );
    }
    assert!(times.null_count() == 0);
}

#[test]
fn twelve_incremental_runs_then_compact_leave_one_sorted_file_per_partition_with_identical_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (_, table) = table_of_small_runs(dir.path(), 12);
    let before = rows_by_id(&table);
    let partitions = partitions_of(&table);
    let mut distinct = partitions.clone();
    distinct.sort();
    distinct.dedup();
    assert!(
        partitions.len() >= 2 * distinct.len(),
        "the runs made small files: {partitions:?}"
    );

    let summary = summary_of(&run(keytrail().arg("compact").arg(&table).arg("--json")));
    assert_eq!(
        summary["compacted"].as_array().unwrap().len(),
        distinct.len(),
        "{summary}"
    );
    assert_eq!(summary["skipped"].as_array().unwrap().len(), 0);
    let mut after_partitions = partitions_of(&table);
    after_partitions.sort();
    assert_eq!(after_partitions, distinct, "one file per partition");
    for file in parquet_files(&table) {
        assert_sorted_by_time(&file);
    }
    assert_same_rows(&before, &rows_by_id(&table));

    // The old files stay for readers of older versions (until vacuumed); info sees the new state.
    assert!(files_on_disk(&table).len() > after_partitions.len());
    let info = summary_of(&run(keytrail().arg("info").arg(&table).arg("--json")));
    assert_eq!(info["files"], after_partitions.len(), "{info}");
    assert_eq!(info["rows"], before.num_rows(), "{info}");
    assert_eq!(info["compactable_partitions"], 0, "{info}");
    assert_eq!(info["last_commits"][0]["operation"], "OPTIMIZE", "{info}");
    assert_eq!(info["last_commits"][1]["operation"], "WRITE", "{info}");
    assert_eq!(info["last_commits"][1]["inputs"], 2, "{info}");

    // Nothing left to do: a second compaction commits nothing.
    let again = summary_of(&run(keytrail().arg("compact").arg(&table).arg("--json")));
    assert!(again["version"].is_null(), "{again}");
    // And incremental runs go on from the compacted table: nothing new, nothing doubled.
    let rerun = summary_of(&run(&mut convert_incremental(&dir.path().join("in"), &table)));
    assert_eq!(rerun["rows_written"], 0, "{rerun}");
    assert_eq!(read_all(&table).num_rows(), before.num_rows());
}

#[test]
fn compact_beside_converts_and_other_compactions_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (inputs, table) = table_of_small_runs(dir.path(), 6);
    // More inputs for the converts that run during the compaction.
    let more = dir.path().join("more");
    generate_tree(&more, 3_000, 8, 250);
    for file in files_under(&more) {
        let to = inputs.join("more").join(file.strip_prefix(&more).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&file, &to).unwrap();
    }
    let compaction = || {
        let mut command = keytrail();
        command
            .arg("compact")
            .arg(&table)
            .arg("--json")
            // Commit after the convert started, so the two overlap.
            .env("KEYTRAIL_PAUSE_BEFORE_COMMIT_MS", "700")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command.spawn().unwrap()
    };
    let files_before = files_on_disk(&table);
    let first = compaction();
    let second = compaction();
    let converted = run(convert_incremental(&inputs, &table).env("KEYTRAIL_PAUSE_BEFORE_COMMIT_MS", "300"));
    let first = first.wait_with_output().unwrap();
    let second = second.wait_with_output().unwrap();
    for output in [&first, &second] {
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let (first, second) = (summary_of(&first), summary_of(&second));
    // Two compactions of the same files: one commits them, the other finds them gone and skips
    // every partition (deleting what it wrote).
    let count = |summary: &serde_json::Value, key: &str| summary[key].as_array().unwrap().len();
    let (winner, loser) = if count(&first, "compacted") > 0 {
        (&first, &second)
    } else {
        (&second, &first)
    };
    assert!(count(winner, "compacted") > 0, "{first}\n{second}");
    assert_eq!(count(loser, "compacted"), 0, "{first}\n{second}");
    assert_eq!(
        count(loser, "skipped"),
        count(winner, "compacted"),
        "{first}\n{second}"
    );
    assert_eq!(summary_of(&converted)["rows_written"], 3_000);

    let rows = read_all(&table);
    let mut ids = strings(&rows, "event_id");
    assert_eq!(ids.len(), 6 * 500 + 3_000, "every event once");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6 * 500 + 3_000, "no event twice");
    // Nothing of a compaction that lost is left: every file on disk is live, or one of the
    // small files the winner replaced.
    let live = parquet_files(&table);
    for file in files_on_disk(&table) {
        assert!(
            live.contains(&file) || files_before.contains(&file),
            "{} is left over",
            file.display()
        );
    }
}

#[test]
fn a_compaction_killed_before_or_after_its_commit_leaves_the_rows_as_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let (inputs, table) = table_of_small_runs(dir.path(), 4);
    let before = rows_by_id(&table);
    for point in [
        "after-pending-record",
        "after-first-publish",
        "before-delta-commit",
        "after-delta-commit",
    ] {
        let killed = keytrail()
            .arg("compact")
            .arg(&table)
            .env("KEYTRAIL_CRASH_POINT", point)
            .output()
            .unwrap();
        assert!(
            !killed.status.success(),
            "{point}: the crash point was not reached"
        );
        // The next writer (a convert here) cleans up after the killed one.
        run(&mut convert_incremental(&inputs, &table));
        assert_same_rows(&before, &rows_by_id(&table));
        let live: Vec<PathBuf> = parquet_files(&table);
        let on_disk = files_on_disk(&table);
        if point == "after-delta-commit" {
            // Its commit landed: the new files are the table, the old ones wait for vacuum.
            assert!(on_disk.len() > live.len(), "{point}");
        } else {
            assert_eq!(on_disk, live, "{point}: files of the killed compaction are left");
        }
    }
}

#[test]
fn vacuum_deletes_only_unreferenced_files_older_than_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let (_, table) = table_of_small_runs(dir.path(), 3);
    run(keytrail().arg("compact").arg(&table));
    let live = parquet_files(&table);
    let replaced: Vec<PathBuf> = files_on_disk(&table)
        .into_iter()
        .filter(|f| !live.contains(f))
        .collect();
    assert!(!replaced.is_empty());
    // Files no commit names: one written ten days ago (a run killed long ago), one just now
    // (a run still uploading).
    let partition = live[0].parent().unwrap();
    let old = partition.join("part-killed-long-ago-00000.parquet");
    let new = partition.join("part-still-running-00000.parquet");
    for stray in [&old, &new] {
        std::fs::copy(&live[0], stray).unwrap();
    }
    let ten_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(10 * 24 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(ten_days_ago)
        .unwrap();

    let dry = summary_of(&run(keytrail()
        .arg("vacuum")
        .arg(&table)
        .args(["--dry-run", "--json"])));
    assert_eq!(
        dry["files"],
        serde_json::json!([old.strip_prefix(&table).unwrap().to_str().unwrap()]),
        "{dry}"
    );
    assert!(old.exists(), "a dry run deletes nothing");

    let done = summary_of(&run(keytrail().arg("vacuum").arg(&table).arg("--json")));
    assert_eq!(done["files"], dry["files"]);
    assert!(!old.exists());
    assert!(new.exists(), "a file younger than the retention is kept");
    for file in live.iter().chain(&replaced) {
        assert!(
            file.exists(),
            "{}: live, or replaced less than 7 days ago",
            file.display()
        );
    }

    // A retention shorter than the table's is refused.
    let short = keytrail()
        .arg("vacuum")
        .arg(&table)
        .args(["--retain", "1h"])
        .output()
        .unwrap();
    assert_eq!(short.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&short.stderr);
    assert!(
        stderr.contains("retention") && stderr.contains("168 hours"),
        "{stderr}"
    );
}

#[test]
fn operations_on_a_directory_without_a_table_say_so() {
    let dir = tempfile::tempdir().unwrap();
    for command in ["compact", "vacuum", "info"] {
        let output = keytrail().arg(command).arg(dir.path()).output().unwrap();
        assert_eq!(output.status.code(), Some(1), "{command}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("no Delta table there"), "{command}: {stderr}");
    }
}

#[test]
fn an_overwrite_and_a_compaction_at_once_leave_exactly_the_overwritten_rows() {
    for (compact_pause, overwrite_pause) in [("1500", "0"), ("0", "1500")] {
        let dir = tempfile::tempdir().unwrap();
        let (_, table) = table_of_small_runs(dir.path(), 4);
        let replacement = dir.path().join("replacement");
        generate_tree(&replacement, 1_200, 9, 300);
        let compaction = keytrail()
            .arg("compact")
            .arg(&table)
            .arg("--json")
            .env("KEYTRAIL_PAUSE_BEFORE_COMMIT_MS", compact_pause)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let overwrite = run(keytrail()
            .args(["convert", "--overwrite", "--json", "--progress", "off", "-o"])
            .arg(&table)
            .arg(&replacement)
            .env("KEYTRAIL_PAUSE_BEFORE_COMMIT_MS", overwrite_pause));
        let compaction = compaction.wait_with_output().unwrap();
        assert!(
            compaction.status.success(),
            "{}",
            String::from_utf8_lossy(&compaction.stderr)
        );
        assert_eq!(summary_of(&overwrite)["rows_written"], 1_200);
        let rows = read_all(&table);
        assert_eq!(
            rows.num_rows(),
            1_200,
            "compaction paused {compact_pause} ms, overwrite {overwrite_pause} ms: {}",
            String::from_utf8_lossy(&compaction.stdout)
        );
    }
}
