//! Bad input never panics and never vanishes: every case is named, quarantined byte for byte or
//! counted, and the accounting identity holds.

mod common;

use std::io::Write;
use std::path::Path;

use common::*;
use keytrail::convert::{ConvertError, ConvertOptions, NoProgress, convert};
use keytrail::dataset::quarantine::read_quarantine;

const GOOD: &str = r#"{"eventVersion":"1.08","eventTime":"2023-07-10T11:42:13Z","eventSource":"kms.amazonaws.com","eventName":"Decrypt","awsRegion":"us-east-1","eventID":"good-1","recipientAccountId":"111122223333"}"#;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

#[test]
fn every_bad_input_is_named_quarantined_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir_all(&inputs).unwrap();

    // Two good records around a malformed one in a delivery file.
    let malformed = br#"{"eventTime":"2023-07-10T11:42:13Z","eventName": oops}"#;
    let mut delivery = b"{\"Records\":[".to_vec();
    delivery.extend_from_slice(GOOD.as_bytes());
    delivery.push(b',');
    delivery.extend_from_slice(malformed);
    delivery.push(b',');
    delivery.extend_from_slice(GOOD.replace("good-1", "good-2").as_bytes());
    delivery.extend_from_slice(b"]}");
    write(&inputs, "malformed.json", &delivery);

    // A gzip NDJSON file cut short: the records before the cut survive, the cut one is quarantined.
    let lines: String = (0..200)
        .map(|i| GOOD.replace("good-1", &format!("gz-{i}")) + "\n")
        .collect();
    let compressed = gzip(lines.as_bytes());
    write(
        &inputs,
        "truncated.json.gz",
        &compressed[..compressed.len() - 200],
    );

    // Plain JSON named .gz.
    write(
        &inputs,
        "plain.json.gz",
        GOOD.replace("good-1", "plain-gz").as_bytes(),
    );
    // Wrong types: strings for booleans and numbers, an object for a string: converted, kept.
    let wrong_types = GOOD.replace("good-1", "types").replace(
        r#""awsRegion":"us-east-1""#,
        r#""awsRegion":"us-east-1","readOnly":"maybe","managementEvent":"true","userAgent":["a","b"]"#,
    );
    write(&inputs, "types.json", wrong_types.as_bytes());
    // Missing eventTime.
    let no_time = GOOD.replace(r#""eventTime":"2023-07-10T11:42:13Z","#, "");
    write(&inputs, "notime.json", no_time.as_bytes());
    // 150 KB responseElements.
    let big = GOOD.replace("good-1", "big").replace(
        "}",
        &format!(r#","responseElements":{{"blob":"{}"}}}}"#, "x".repeat(150_000)),
    );
    write(&inputs, "big.json", big.as_bytes());
    // Non-UTF-8 bytes inside a string.
    let mut non_utf8 = GOOD.replace("Decrypt", "DECRYPT_MARK").into_bytes();
    let at = non_utf8.windows(12).position(|w| w == b"DECRYPT_MARK").unwrap();
    non_utf8[at] = 0xff;
    write(&inputs, "nonutf8.json", &non_utf8);
    // 100 levels of nesting inside requestParameters.
    let deep = GOOD.replace("good-1", "deep").replace(
        "}",
        &format!(
            r#","requestParameters":{}1{}}}"#,
            r#"{"a":"#.repeat(100),
            "}".repeat(100)
        ),
    );
    write(&inputs, "deep.json", deep.as_bytes());
    // Empty file, whitespace-only file, a README.
    write(&inputs, "empty.json", b"");
    write(&inputs, "blank.json", b"  \n ");
    write(&inputs, "README.txt", b"not a log");

    let out = dir.path().join("out");
    let mut options = ConvertOptions::new(vec![inputs.to_string_lossy().into_owned()], &out);
    options.threads = 2;
    let summary = convert(&options, &NoProgress).unwrap();

    // Accounting: events read = rows written + quarantined + duplicates.
    assert_eq!(
        summary.events_read,
        summary.rows_written + summary.quarantined_records + summary.duplicates_dropped
    );
    let written: Vec<String> = strings(&read_all(&out), "event_id")
        .into_iter()
        .flatten()
        .collect();
    for id in [
        "good-1", "good-2", "gz-0", "gz-100", "plain-gz", "types", "big", "deep",
    ] {
        assert!(written.contains(&id.to_string()), "{id} was written: {written:?}");
    }
    let from_gzip = written.iter().filter(|id| id.starts_with("gz-")).count() as u64;
    assert!(
        from_gzip > 100 && from_gzip < 200,
        "{from_gzip} records before the cut"
    );
    assert_eq!(summary.rows_written, 6 + from_gzip, "{:#?}", summary.problems);
    assert_eq!(summary.quarantined_records, 4, "{:#?}", summary.problems);
    assert_eq!(summary.failed_files, 1, "the truncated gzip");
    assert!(!summary.is_clean());

    // The quarantine keeps the original bytes exactly, with input, position and reason.
    let quarantine = read_quarantine(summary.quarantine.as_ref().unwrap()).unwrap();
    assert_eq!(quarantine.len(), 4);
    let find = |name: &str| {
        quarantine
            .iter()
            .find(|(e, _)| e.input.ends_with(name))
            .unwrap_or_else(|| panic!("{name}"))
    };
    let (entry, bytes) = find("malformed.json");
    assert_eq!(bytes.as_slice(), malformed.as_slice());
    assert_eq!(
        (entry.record, entry.offset),
        (Some(1), Some(12 + GOOD.len() as u64 + 1))
    );
    assert!(entry.reason.starts_with("invalid JSON"), "{}", entry.reason);
    assert_eq!(find("notime.json").1, no_time.as_bytes());
    assert_eq!(find("notime.json").0.reason, "eventTime is missing");
    assert_eq!(find("nonutf8.json").1, non_utf8);
    let (entry, bytes) = find("truncated.json.gz");
    assert!(entry.reason.contains("gzip"), "{}", entry.reason);
    let next = GOOD.replace("good-1", &format!("gz-{from_gzip}"));
    assert!(
        !bytes.is_empty() && next.as_bytes().starts_with(bytes),
        "the unfinished record, as far as it was read"
    );

    // The wrong-typed values are kept in unmapped.
    let batch = read_all(&out);
    let row = rows_where(&batch, "event_id", "types")[0];
    let unmapped: serde_json::Value =
        serde_json::from_str(&string_at(&batch, "unmapped", row).unwrap()).unwrap();
    assert_eq!(unmapped["readOnly"], "maybe");
    assert_eq!(
        string_at(&batch, "user_agent", row).as_deref(),
        Some(r#"["a","b"]"#)
    );
    let big_row = rows_where(&batch, "event_id", "big")[0];
    assert!(string_at(&batch, "response_elements", big_row).unwrap().len() > 150_000);

    // Every problem names its input.
    for problem in &summary.problems {
        assert!(problem.input.starts_with(&*inputs.to_string_lossy()), "{problem}");
    }
}

#[test]
fn strict_stops_at_the_first_problem_and_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir_all(&inputs).unwrap();
    write(&inputs, "a.json", GOOD.as_bytes());
    write(&inputs, "b.json", b"{\"eventName\":\"NoTime\"}");
    let out = dir.path().join("out");
    let mut options = ConvertOptions::new(vec![inputs.to_string_lossy().into_owned()], &out);
    options.strict = true;
    match convert(&options, &NoProgress) {
        Err(ConvertError::Strict(problem)) => {
            assert!(problem.input.ends_with("b.json"));
            assert_eq!(problem.message, "eventTime is missing");
        }
        other => panic!("{other:?}"),
    }
    assert!(parquet_files(&out).is_empty());
    assert!(!out.join("_keytrail/runs").exists());
}

#[test]
fn no_logs_and_unwritable_output_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let options = ConvertOptions::new(vec![empty.to_string_lossy().into_owned()], dir.path().join("out"));
    let error = convert(&options, &NoProgress).unwrap_err().to_string();
    assert!(error.contains("no input files found"), "{error}");

    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let options = ConvertOptions::new(vec![data("cloudgrep")], file.join("out"));
    let error = convert(&options, &NoProgress).unwrap_err().to_string();
    assert!(
        error.contains(&*file.join("out").to_string_lossy()),
        "the error names the path: {error}"
    );
}
