//! `keytrail sql` as a library: pruning, shell behaviour, output formats.

mod common;

use arrow::array::{AsArray, RecordBatch};
use common::*;
use futures::TryStreamExt;
use keytrail::sql::SqlSession;
use keytrail::sql::output::{Format, write_results};
use keytrail::sql::shell::{Piped, ShellOptions, run_shell};

/// The text of an EXPLAIN ANALYZE plan.
async fn explain_analyze(session: &SqlSession, sql: &str) -> String {
    let batches = collect(session, &format!("EXPLAIN ANALYZE {sql}")).await;
    batches
        .iter()
        .flat_map(|b| {
            b.column(1)
                .as_string::<i32>()
                .iter()
                .flatten()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `metric=A total → B matched` → (A, B), summed over the plan.
fn pruning_metric(plan: &str, metric: &str) -> (u64, u64) {
    let mut total = (0, 0);
    for part in plan.split(&format!("{metric}=")).skip(1) {
        let mut numbers = part
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty());
        total.0 += numbers.next().unwrap().parse::<u64>().unwrap();
        total.1 += numbers.next().unwrap().parse::<u64>().unwrap();
    }
    total
}

#[test]
fn partition_filters_prune_directories() {
    let (dir, summary) = convert_into(
        &[data("invictus"), data("aws-kms-developer-guide/events")],
        |_| {},
    );
    let out = dir.path().join("out");
    let us_west_2_files = parquet_files(&out)
        .iter()
        .filter(|f| f.to_string_lossy().contains("/region=us-west-2/"))
        .count();
    assert!(us_west_2_files > 1 && us_west_2_files < summary.files_written);
    runtime().block_on(async {
        let session = SqlSession::open(&out, false).await.unwrap();
        let plan = explain_analyze(
            &session,
            "SELECT count(event_name) FROM events WHERE region = 'us-west-2' AND event_name <> ''",
        )
        .await;
        // Only that Region's directories are listed and opened.
        assert!(
            plan.contains(&format!("files_opened={us_west_2_files}")),
            "{plan}"
        );
        assert!(!plan.contains("region=us-east-1/"), "{plan}");
        let count = collect(&session, "SELECT count(*) FROM events WHERE region = 'us-west-2'").await;
        assert_eq!(
            count[0]
                .column(0)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0),
            35
        );
    });
}

#[test]
fn statistics_in_the_delta_log_skip_files() {
    // 38 files: one per Region and day. A filter on event_time says nothing about the partition
    // columns, so only the time ranges in the log can skip files.
    let (dir, summary) = convert_into(
        &[data("invictus"), data("aws-kms-developer-guide/events")],
        |_| {},
    );
    let out = dir.path().join("out");
    runtime().block_on(async {
        let session = SqlSession::open(&out, false).await.unwrap();
        let plan = explain_analyze(
            &session,
            "SELECT count(event_name) FROM events WHERE event_time >= TIMESTAMP '2023-07-01T00:00:00Z'",
        )
        .await;
        let opened: u64 = plan
            .split("files_opened=")
            .skip(1)
            .map(|p| {
                p.split(|c: char| !c.is_ascii_digit())
                    .next()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            })
            .sum();
        assert_eq!(
            opened, 1,
            "only the July 2023 file of {} is opened:\n{plan}",
            summary.files_written
        );
        let count = collect(
            &session,
            "SELECT count(*) FROM events WHERE event_time >= TIMESTAMP '2023-07-01T00:00:00Z'",
        )
        .await;
        assert_eq!(
            count[0]
                .column(0)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0),
            2900
        );
    });
}

#[test]
fn event_time_filters_prune_row_groups() {
    // One file of 2,900 time-sorted rows in row groups of 200.
    let (dir, _) = convert_into(&[data("invictus")], |o| o.write.row_group_rows = 200);
    let out = dir.path().join("out");
    runtime().block_on(async {
        let session = SqlSession::open(&out, false).await.unwrap();
        let plan = explain_analyze(
            &session,
            "SELECT count(*) FROM events WHERE event_time < TIMESTAMP '2023-07-10T11:45:00Z'",
        )
        .await;
        let (total, matched) = pruning_metric(&plan, "row_groups_pruned_statistics");
        assert_eq!(total, 15, "{plan}");
        assert!(
            matched <= 3,
            "statistics should leave only the first row groups: {plan}"
        );
        let unfiltered = explain_analyze(
            &session,
            "SELECT count(*) FROM events WHERE event_name = 'Decrypt'",
        )
        .await;
        let (_, matched_all) = pruning_metric(&unfiltered, "row_groups_pruned_statistics");
        assert!(matched_all > matched, "{unfiltered}");
    });
}

#[test]
fn shell_runs_multiline_statements_commands_and_survives_errors() {
    let (dir, _) = convert_into(&[data("aws-kms-developer-guide/events")], |_| {});
    let out_dir = dir.path().join("out");
    let script = "\
\\d
SELECT count(*) AS n
  FROM kms_events;
SELECT nope FROM events;
\\d kms_events
\\bogus
CREATE TABLE t AS SELECT 1;
SELECT event_name FROM kms_events WHERE event_name = 'ReEncrypt';
\\q
SELECT 'never run';
";
    runtime().block_on(async {
        let session = SqlSession::open(&out_dir, false).await.unwrap();
        let mut out = Vec::new();
        let mut err = Vec::new();
        let options = ShellOptions {
            format: Format::Csv,
            max_rows: 100,
            timing: true,
            scan_summaries: true,
        };
        let failures = run_shell(
            &session,
            &mut Piped(script.as_bytes()),
            &mut out,
            &mut err,
            &options,
        )
        .await
        .unwrap();
        let out = String::from_utf8(out).unwrap();
        let err = String::from_utf8(err).unwrap();
        assert_eq!(failures, 3, "unknown column, unknown command, read-only: {err}");
        assert!(
            out.contains("events,BASE TABLE") && out.contains("kms_events,VIEW"),
            "{out}"
        );
        assert!(out.contains("n\n69\n"), "{out}");
        assert!(
            out.contains("kms_key_arn,Utf8View,YES,\"ARN of the KMS key the call used"),
            "{out}"
        );
        assert!(out.contains("event_name\nReEncrypt\n"), "{out}");
        assert!(!out.contains("never run"), "\\q stops the shell: {out}");
        assert!(err.contains("error: Schema error: No field named nope"), "{err}");
        assert!(err.contains("error: unknown command \\bogus"), "{err}");
        assert!(err.contains("read-only"), "{err}");
        assert!(err.contains("1 row in "), "timing is printed: {err}");
    });
}

#[test]
fn formats_stream_every_row() {
    let (dir, _) = convert_into(&[data("invictus")], |_| {});
    let out_dir = dir.path().join("out");
    runtime().block_on(async {
        let session = SqlSession::open(&out_dir, false).await.unwrap();
        let query =
            "SELECT event_id, event_time, encryption_context, resources FROM events ORDER BY event_id";
        let mut sizes = Vec::new();
        for format in [Format::Csv, Format::Json, Format::Ndjson, Format::Table] {
            let statement = session.split(query).unwrap().remove(0);
            let stream = session.execute(statement).await.unwrap();
            let mut out = Vec::new();
            let rows = write_results(stream, format, &mut out, 10).await.unwrap();
            assert_eq!(rows, 2900, "{format:?}");
            let text = String::from_utf8(out).unwrap();
            sizes.push(text.len());
            match format {
                Format::Csv => {
                    assert_eq!(text.lines().count(), 2901);
                    assert!(text.starts_with("event_id,event_time,encryption_context,resources\n"));
                }
                Format::Json => {
                    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(value.as_array().unwrap().len(), 2900);
                }
                Format::Ndjson => {
                    assert_eq!(text.lines().count(), 2900);
                    let first: serde_json::Value =
                        serde_json::from_str(text.lines().next().unwrap()).unwrap();
                    assert!(first["event_time"].as_str().unwrap().starts_with("2023-07-10T"));
                }
                Format::Table => {
                    assert!(text.contains("2900 rows (10 shown"), "{text}");
                }
                Format::Parquet => unreachable!(),
            }
        }
        assert!(sizes[3] < sizes[0] / 10, "the table holds only the rows it shows");
    });
}

#[test]
fn every_named_query_runs_on_real_data() {
    use keytrail::sql::queries;
    let (dir, _) = convert_into(
        &[data("invictus"), data("aws-kms-developer-guide/events")],
        |_| {},
    );
    let out = dir.path().join("out");
    runtime().block_on(async {
        let session = SqlSession::open(&out, false).await.unwrap();
        for query in queries::all() {
            let values = query
                .params
                .iter()
                .filter(|p| p.default.is_none())
                .map(|p| {
                    let value = match p.name.as_str() {
                        "key" => "0e5d0ab6-097e-49d8-99ef-747ce3e5f8f4",
                        "principal" => "user/bert-jan",
                        other => panic!("no test value for parameter {other}"),
                    };
                    (p.name.clone(), value.to_string())
                })
                .collect();
            let sql = query.render(&values).unwrap();
            let statement = session.split(&sql).unwrap().remove(0);
            let stream = session
                .execute(statement)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", query.name));
            let batches: Vec<RecordBatch> = stream
                .try_collect()
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", query.name));
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            // The fixtures hold no cross-account key use (the generated-data test covers it).
            if query.name != "cross-account" {
                assert!(rows > 0, "{} finds something in the fixtures", query.name);
            }
        }
    });
}

#[test]
fn generated_logs_convert_and_answer_cross_account_questions() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    assert_eq!(generate_tree(&logs, 6000, 42, 500), 12);
    let (out_dir, summary) = convert_into(&[logs.to_string_lossy().into_owned()], |_| {});
    assert_eq!((summary.events_read, summary.rows_written), (6000, 6000));
    assert!(summary.is_clean(), "{:?}", summary.problems);
    let out = out_dir.path().join("out");
    runtime().block_on(async {
        let session = SqlSession::open(&out, false).await.unwrap();
        let sql = keytrail::sql::queries::find("cross-account").unwrap().render(&Default::default()).unwrap();
        let batches = collect(&session, &sql).await;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert!(rows > 0, "about 3% of generated calls are cross-account");
        // Every KMS event names its key, resolved to an ARN whatever the request used.
        let unresolved = collect(
            &session,
            "SELECT count(*) FROM kms_events WHERE kms_key_arn IS NULL AND event_name NOT IN ('ListAliases', 'CreateKey')",
        )
        .await;
        assert_eq!(unresolved[0].column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0), 0);
    });
}
