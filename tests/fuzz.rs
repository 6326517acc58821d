//! Property-based fuzzing of the reader (splitter, classifier, repair) and the flattener: no input
//! panics, splitting does not depend on how input is chunked, and valid records round-trip.
//! `PROPTEST_CASES=100000 cargo test --release --test fuzz` runs a long campaign.

use keytrail::convert::dispatch::{RecordSink, dispatch};
use keytrail::flatten::Flattener;
use keytrail::read::classify::{SkipReason, TopFields};
use keytrail::read::split::{SplitError, Splitter};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{Value, json};

const SEED_RECORD: &str = r#"{"eventVersion":"1.08","userIdentity":{"type":"AssumedRole","arn":"arn:aws:sts::111122223333:assumed-role/r/s","accountId":"111122223333","sessionContext":{"attributes":{"mfaAuthenticated":"false","creationDate":"2023-07-10T11:00:00Z"}}},"eventTime":"2023-07-10T11:42:13Z","eventSource":"kms.amazonaws.com","eventName":"Decrypt","awsRegion":"us-east-1","readOnly":true,"requestParameters":{"keyId":"alias/app","encryptionContext":{"aws:s3:arn":"arn:aws:s3:::b/k"}},"resources":[{"ARN":"arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab","accountId":"111122223333","type":"AWS::KMS::Key"}],"eventID":"e1","recipientAccountId":"111122223333"}"#;

fn split(input: &[u8], chunk: usize) -> Result<Vec<Vec<u8>>, SplitError> {
    let mut items = Vec::new();
    let mut splitter = Splitter::new();
    for piece in input.chunks(chunk.max(1)) {
        splitter.push(piece, &mut |item| items.push(item.bytes.to_vec()))?;
    }
    splitter.finish()?;
    Ok(items)
}

/// Flattens what the converter's own dispatch finds, checking that an event is appended whole
/// or not at all.
struct Flattening<'a>(&'a mut Flattener);

impl RecordSink for Flattening<'_> {
    fn event(&mut self, event: &TopFields<'_>, _original: &[u8]) {
        let before = self.0.rows();
        match self.0.append(event) {
            Ok(()) => assert_eq!(self.0.rows(), before + 1),
            Err(_) => assert_eq!(self.0.rows(), before),
        }
    }
    fn skipped(&mut self, _reason: SkipReason) {}
    fn repaired(&mut self) {}
    fn invalid(&mut self, message: String, _original: &[u8]) {
        assert!(message.starts_with("invalid JSON"), "{message}");
    }
}

/// Runs one value through everything the converter does with a record; must never panic.
fn convert_value(bytes: &[u8], flattener: &mut Flattener) {
    dispatch(bytes, &mut Flattening(flattener));
}

/// Arbitrary JSON, biased towards CloudTrail's shapes and keys.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("eventTime".to_string()),
        Just("eventName".to_string()),
        Just("eventSource".to_string()),
        Just("readOnly".to_string()),
        Just("userIdentity".to_string()),
        Just("requestParameters".to_string()),
        Just("resources".to_string()),
        Just("keyId".to_string()),
        Just("encryptionContext".to_string()),
        Just("Records".to_string()),
        Just("detail".to_string()),
        Just("_raw".to_string()),
        "[a-zA-Z:_-]{1,12}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        Just(json!("2023-07-10T11:42:13Z")),
        Just(json!("kms.amazonaws.com")),
        Just(json!("true")),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..8)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        // The regressions file beside this one is replayed before new cases.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fuzz.proptest-regressions"
        )))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn splitter_is_independent_of_chunking(input in prop::collection::vec(any::<u8>(), 0..400), chunk in 1usize..64) {
        let whole = split(&input, input.len().max(1));
        let chunked = split(&input, chunk);
        match (whole, chunked) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(a), Err(b)) => prop_assert_eq!(a.offset, b.offset),
            (a, b) => prop_assert!(false, "{:?} vs {:?}", a.map(|v| v.len()), b.map(|v| v.len())),
        }
    }

    #[test]
    fn valid_records_round_trip_through_every_container(values in prop::collection::vec(json_value(), 0..6), chunk in 1usize..200) {
        let objects: Vec<Value> = values.into_iter().map(|v| json!({"eventName": "X", "payload": v})).collect();
        let texts: Vec<String> = objects.iter().map(Value::to_string).collect();
        let wrapped = format!("{{\"Records\":[{}]}}", texts.join(","));
        let array = format!("[{}]", texts.join(" , "));
        let ndjson = texts.iter().map(|t| format!("{t}\n")).collect::<String>();
        for container in [wrapped, array, ndjson] {
            // Each record comes out byte for byte as it went in.
            let items: Vec<String> = split(container.as_bytes(), chunk)
                .unwrap()
                .into_iter()
                .map(|i| String::from_utf8(i).unwrap())
                .collect();
            prop_assert_eq!(&items, &texts);
        }
    }

    #[test]
    fn arbitrary_json_never_panics_the_flattener(value in json_value()) {
        let mut flattener = Flattener::new();
        convert_value(value.to_string().as_bytes(), &mut flattener);
        let as_event = json!({"eventTime": "2023-07-10T11:42:13Z", "eventSource": "kms.amazonaws.com", "eventName": "Decrypt",
            "requestParameters": value.clone(), "responseElements": value.clone(), "userIdentity": value.clone(), "resources": value});
        convert_value(as_event.to_string().as_bytes(), &mut flattener);
        prop_assert!(flattener.finish_batch().is_ok());
    }

    #[test]
    fn mutated_real_records_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = SEED_RECORD.as_bytes().to_vec();
        for (at, byte, op) in edits {
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => { bytes.remove(i); }
            }
        }
        let mut flattener = Flattener::new();
        convert_value(&bytes, &mut flattener);
        let truncated = &bytes[..cut.index(bytes.len() + 1)];
        let _ = split(truncated, 7);
        convert_value(truncated, &mut flattener);
        prop_assert!(flattener.finish_batch().is_ok());
    }
}

/// The case recorded in `fuzz.proptest-regressions` (a record holding a float with a negative
/// exponent, split one byte at a time), replayed by hand as well as by proptest's seed.
#[test]
fn the_recorded_regression_round_trips() {
    let record = json!({"eventName": "X", "payload": [[[-1.1308905318829763e-52]]]}).to_string();
    for container in [
        format!("{{\"Records\":[{record}]}}"),
        format!("[{record}]"),
        format!("{record}\n"),
    ] {
        let items = split(container.as_bytes(), 1).unwrap();
        assert_eq!(items, vec![record.as_bytes().to_vec()], "{container}");
    }
}
