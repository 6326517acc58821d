//! `keytrail sql` straight over raw CloudTrail logs: the same answers as over their conversion,
//! the same accounting, files skipped by the delivery layout (shown by EXPLAIN ANALYZE metrics).

mod common;

use std::path::Path;
use std::process::Command;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use common::{collect, convert_into, data, files_under, run, runtime};
use keytrail::sql::raw::RawOptions;
use keytrail::sql::{SessionOptions, SqlSession};
use keytrail::synth::{GenOptions, generate};

fn keytrail() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keytrail"));
    command.env("NO_COLOR", "1").env_remove("RUST_LOG");
    command
}

/// The rows of a result as CSV-like lines (to compare two results).
fn lines(batches: &[RecordBatch]) -> Vec<String> {
    let options = arrow::util::display::FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for row in 0..batch.num_rows() {
            out.push(
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
    }
    out
}

/// The value of one EXPLAIN ANALYZE metric (or plan field) of the raw scan.
fn metric(plan: &[RecordBatch], name: &str) -> u64 {
    let text = lines(plan).join("\n");
    let line = text
        .lines()
        .find(|l| l.contains("RawEventsExec"))
        .unwrap_or_else(|| panic!("no raw scan in the plan:\n{text}"));
    let start = line
        .find(&format!("{name}="))
        .unwrap_or_else(|| panic!("no {name}: {line}"))
        + name.len()
        + 1;
    line[start..]
        .split([',', ']'])
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{name} in {line}: {e}"))
}

#[test]
fn raw_logs_answer_like_their_conversion_and_say_what_they_read() {
    let invictus = data("invictus");
    let query = "SELECT event_name, count(*) AS n, count(DISTINCT event_id) AS ids FROM events \
        GROUP BY event_name ORDER BY n DESC, event_name LIMIT 8";
    let raw = run(keytrail().args(["sql", &invictus, query, "--format", "csv"]));
    let stderr = String::from_utf8_lossy(&raw.stderr);
    assert_eq!(raw.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("-- read 57 files (")
            && stderr.contains("2900 events: 2900 rows, 0 copies dropped, 0 invalid"),
        "{stderr}"
    );
    let (dir, _) = convert_into(std::slice::from_ref(&invictus), |_| {});
    let converted = run(keytrail()
        .arg("sql")
        .arg(dir.path().join("out"))
        .args([query, "--format", "csv"]));
    assert_eq!(converted.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&raw.stdout),
        String::from_utf8_lossy(&converted.stdout)
    );
    assert!(
        converted.stderr.is_empty(),
        "a converted table reads no raw input"
    );

    // --keep-raw: each row's original text, as in a table converted with it.
    let kept = run(keytrail().args([
        "-q",
        "sql",
        &invictus,
        "--keep-raw",
        "SELECT count(raw_event) AS n, sum(CASE WHEN raw_event LIKE concat('%', event_id, '%') THEN 1 ELSE 0 END) AS own FROM events",
    ]));
    assert_eq!(String::from_utf8_lossy(&kept.stdout), "n,own\n2900,2900\n");

    // A glob of raw files, and -q.
    let glob = format!("{invictus}/CloudTrail/*1230Z*");
    let quiet = run(keytrail().args(["-q", "sql", &glob, "SELECT count(*) AS n FROM events"]));
    assert_eq!(String::from_utf8_lossy(&quiet.stdout), "n\n407\n");
    assert!(
        quiet.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
}

#[test]
fn problems_with_raw_inputs_are_listed_after_the_query_and_strict_fails_it() {
    let bad = data("aws-cloudtrail-processing-library");
    let query = "SELECT count(*) AS n FROM events";
    let lenient = keytrail().args(["sql", &bad, query]).output().unwrap();
    let stderr = String::from_utf8_lossy(&lenient.stderr);
    assert_eq!(lenient.status.code(), Some(3), "problems: exit 3\n{stderr}");
    assert!(
        stderr
            .contains("SerializerAllFieldsNull.json: record 0 (byte 27): eventTime null is not a timestamp"),
        "{stderr}"
    );
    assert!(
        stderr.contains("SerializerTestFileMissField.json: record 3"),
        "each problem names its file and record: {stderr}"
    );
    assert!(!stderr.contains("WARN"), "listed once, after the query: {stderr}");
    // Every event is accounted for: rows + copies + invalid = events read.
    let counts = stderr.lines().next().unwrap();
    let events: u64 = counts
        .split(" events:")
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let rows: u64 = String::from_utf8_lossy(&lenient.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let invalid: u64 = counts
        .split(" invalid")
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let copies: u64 = counts
        .split(" cop")
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(invalid > 0);
    assert_eq!(rows + invalid + copies, events, "{counts}");

    let strict = keytrail()
        .args(["sql", &bad, query, "--strict"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&strict.stderr);
    assert_eq!(strict.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("stopped at the first problem (--strict): "),
        "{stderr}"
    );
    assert!(strict.stdout.is_empty(), "no result");

    let empty = tempfile::tempdir().unwrap();
    let nothing = keytrail()
        .arg("sql")
        .arg(empty.path())
        .arg(query)
        .output()
        .unwrap();
    assert_eq!(nothing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&nothing.stderr).contains("no Parquet files found and no CloudTrail logs")
    );
}

/// A 30-day tree: 3 accounts x 3 Regions, a file every 2 hours each, 2 events per file.
fn thirty_days(dir: &Path) -> u64 {
    let options = GenOptions {
        events: 9 * 12 * 30 * 2,
        seed: 5,
        records_per_file: 2,
        file_interval_minutes: 120,
    };
    generate(dir, &options).unwrap().files
}

/// The delivery minute of a generated file, from its name.
fn delivered(path: &Path) -> chrono::DateTime<chrono::Utc> {
    let name = path.file_name().unwrap().to_string_lossy();
    let field = name.split('_').nth(3).unwrap();
    chrono::NaiveDateTime::parse_from_str(field, "%Y%m%dT%H%MZ")
        .unwrap()
        .and_utc()
}

#[test]
fn a_one_day_one_region_query_opens_only_that_days_files() {
    let scratch = tempfile::tempdir().unwrap();
    let logs = scratch.path().join("logs");
    let files = thirty_days(&logs);
    let tree = logs.to_string_lossy().into_owned();
    let day = "event_time >= '2025-01-10T00:00:00Z' AND event_time < '2025-01-11T00:00:00Z'";
    let query = format!(
        "SELECT recipient_account_id, count(*) AS n, min(event_time) AS first, max(event_time) AS last \
         FROM events WHERE aws_region = 'eu-west-1' AND {day} GROUP BY 1 ORDER BY 1"
    );
    let (converted_dir, _) = convert_into(std::slice::from_ref(&tree), |_| {});
    runtime().block_on(async {
        let session = SqlSession::open_with(&tree, &SessionOptions::default()).await.unwrap();
        let plan = collect(&session, &format!("EXPLAIN ANALYZE {query}")).await;
        // Files delivered from 5 minutes before the day to an hour (the default margin) after it.
        let (from, to) = (
            chrono::DateTime::parse_from_rfc3339("2025-01-09T23:55:00Z").unwrap(),
            chrono::DateTime::parse_from_rfc3339("2025-01-11T01:00:00Z").unwrap(),
        );
        let expected = files_under(&logs)
            .iter()
            .filter(|f| f.to_string_lossy().contains("/eu-west-1/"))
            .filter(|f| delivered(f) >= from && delivered(f) <= to)
            .count() as u64;
        assert_eq!(expected, 3 * 13, "12 files a day per account, and the first of the next day");
        assert_eq!(metric(&plan, "files_opened"), expected, "{:#?}", lines(&plan));
        assert!(metric(&plan, "dirs_pruned") > 0, "other Regions' and days' directories are not walked");
        assert!(metric(&plan, "files_opened") + metric(&plan, "files_pruned") <= files);

        let answer = lines(&collect(&session, &query).await);
        let table = SqlSession::open(&converted_dir.path().join("out"), false).await.unwrap();
        assert_eq!(answer, lines(&collect(&table, &query).await), "pruning lost no row");
        assert_eq!(answer.len(), 3, "{answer:?}");

        // One account: its directory only.
        let account = collect(
            &session,
            &format!("EXPLAIN ANALYZE SELECT count(*) FROM events WHERE recipient_account_id = '444455556666' AND {day}"),
        )
        .await;
        assert_eq!(metric(&account, "files_opened"), 3 * 13);

        // Without a margin, time filters skip nothing: every file of the Region is read.
        let options = SessionOptions {
            raw: RawOptions {
                delivery_margin: None,
                ..RawOptions::default()
            },
            ..SessionOptions::default()
        };
        let unpruned = SqlSession::open_with(&tree, &options).await.unwrap();
        let plan = collect(&unpruned, &format!("EXPLAIN ANALYZE {query}")).await;
        // (Metrics of 1,000 and more print rounded, as "1.08 K": the plan's own count is exact.)
        assert_eq!(metric(&plan, "inputs"), files / 3);
        assert_eq!(lines(&collect(&unpruned, &query).await), answer);
        let totals = collect(&unpruned, "SELECT count(*) FROM events").await;
        assert_eq!(
            totals[0].column(0).as_primitive::<Int64Type>().value(0),
            9 * 12 * 30 * 2
        );
    });
}
