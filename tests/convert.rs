//! `convert` over the real fixtures in tests/data: counts, types and KMS facts.

mod common;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, TimeUnit};
use common::*;
use keytrail::convert::{ConvertOptions, NoProgress, SkippedFile, convert};
use keytrail::dataset::OutputMode;
use keytrail::dataset::{PartitionKey, Partitioning};
use keytrail::read::classify::SkipReason;

#[test]
fn invictus_all_2900_records_typed_and_partitioned() {
    let (dir, summary) = convert_into(&[data("invictus")], |_| {});
    assert_eq!(summary.input_files, 57, "55 logs + LICENSE + SOURCE.md");
    assert_eq!(summary.skipped_files.get(&SkippedFile::NotJson), Some(&2));
    assert_eq!(summary.events_read, 2900);
    assert_eq!(summary.rows_written, 2900);
    assert_eq!(summary.quarantined_records, 0);
    assert!(summary.is_clean(), "{:?}", summary.problems);

    let out = dir.path().join("out");
    let files = parquet_files(&out);
    assert_eq!(files.len(), 1, "one hour of one Region fits one file");
    let relative = files[0]
        .strip_prefix(&out)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        relative.starts_with("region=us-east-1/event_date=2023-07-10/part-"),
        "{relative}"
    );

    let batch = read_file(&files[0]);
    assert_eq!(batch.num_rows(), 2900);
    assert_eq!(
        batch.schema().field_with_name("event_time").unwrap().data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    // Sorted by event time inside the file, within the hour of the detonation.
    let times: Vec<i64> = (0..batch.num_rows())
        .map(|r| micros_at(&batch, "event_time", r).unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    assert!(times[0] >= micros("2023-07-10T11:00:00Z") && times[2899] < micros("2023-07-10T13:00:00Z"));

    // Booleans are never lost, account ids stay strings, KMS rows are resolved.
    let read_only = batch.column_by_name("read_only").unwrap().as_boolean();
    assert_eq!(read_only.null_count(), 0);
    assert!(
        strings(&batch, "recipient_account_id")
            .iter()
            .all(|a| a.as_deref() == Some("123837392027"))
    );
    let kms = rows_where(&batch, "event_source", "kms.amazonaws.com");
    assert_eq!(kms.len(), 240);
    let kms_key = strings(&batch, "kms_key_arn");
    assert!(kms.iter().all(|&r| {
        kms_key[r]
            .as_deref()
            .is_some_and(|k| k.starts_with("arn:aws:kms:us-east-1:123837392027:key/"))
    }));

    // A Decrypt on behalf of SSM Parameter Store carries its encryption context as a map.
    let decrypts = rows_where(&batch, "event_name", "Decrypt");
    assert_eq!(decrypts.len(), 178);
    let with_parameter = decrypts
        .iter()
        .filter_map(|&r| map_at(&batch, "encryption_context", r))
        .find(|m| m.iter().any(|(k, _)| k == "PARAMETER_ARN"))
        .expect("an SSM Decrypt with PARAMETER_ARN");
    assert!(
        with_parameter[0]
            .1
            .starts_with("arn:aws:ssm:us-east-1:123837392027:parameter/"),
        "{with_parameter:?}"
    );

    // Metadata: schema version, zstd, statistics, page index, declared sort order.
    use parquet::file::reader::FileReader;
    let file = std::fs::File::open(&files[0]).unwrap();
    let options = parquet::file::serialized_reader::ReadOptionsBuilder::new()
        .with_page_index()
        .build();
    let reader =
        parquet::file::serialized_reader::SerializedFileReader::new_with_options(file, options).unwrap();
    let metadata = reader.metadata();
    let key_values = metadata.file_metadata().key_value_metadata().cloned().unwrap();
    assert!(
        key_values
            .iter()
            .any(|kv| kv.key == "keytrail.schema_version" && kv.value.as_deref() == Some("1"))
    );
    assert!(
        metadata.column_index().is_some() && metadata.offset_index().is_some(),
        "page index written"
    );
    let row_group = metadata.row_group(0);
    assert!(matches!(
        row_group.column(0).compression(),
        parquet::basic::Compression::ZSTD(_)
    ));
    assert!(
        row_group
            .column(0)
            .statistics()
            .is_some_and(|s| s.min_bytes_opt().is_some())
    );
    assert_eq!(row_group.sorting_columns().map(|c| c[0].column_idx), Some(0));
    // Event ids are unique: written plain, never through a dictionary; names are few: dictionary.
    let encodings = |name: &str| {
        let column = (0..row_group.num_columns())
            .map(|i| row_group.column(i))
            .find(|c| c.column_path().string() == name)
            .unwrap();
        column.encodings().collect::<Vec<_>>()
    };
    assert!(
        !encodings("event_id").contains(&parquet::basic::Encoding::RLE_DICTIONARY),
        "{:?}",
        encodings("event_id")
    );
    assert!(encodings("event_name").contains(&parquet::basic::Encoding::RLE_DICTIONARY));
    // JSON documents carry no min/max (they prune nothing); text columns do.
    let has_min_max = |name: &str| {
        (0..row_group.num_columns())
            .map(|i| row_group.column(i))
            .find(|c| c.column_path().string() == name)
            .unwrap()
            .statistics()
            .is_some_and(|s| s.min_bytes_opt().is_some())
    };
    assert!(has_min_max("event_name"));
    assert!(!has_min_max("request_parameters"));
}

#[test]
fn parquet_compression_is_chosen() {
    let (dir, summary) = convert_into(&[data("aws-kms-developer-guide/events")], |o| {
        o.write.compression = "snappy".parse().unwrap();
    });
    assert!(summary.rows_written > 0);
    use parquet::file::reader::FileReader;
    for path in parquet_files(&dir.path().join("out")) {
        let reader =
            parquet::file::serialized_reader::SerializedFileReader::new(std::fs::File::open(&path).unwrap())
                .unwrap();
        let row_group = reader.metadata().row_group(0);
        assert!(
            (0..row_group.num_columns())
                .all(|i| row_group.column(i).compression() == parquet::basic::Compression::SNAPPY),
            "{}",
            path.display()
        );
    }
}

#[test]
fn type_drift_and_case_variants_are_kept() {
    let (dir, _) = convert_into(&[data("invictus")], |_| {});
    let batch = read_all(&dir.path().join("out"));
    // S3 PutBucketTagging has `tagging` and `Tagging` side by side: both stay in the JSON text.
    let tagging = rows_where(&batch, "event_name", "PutBucketTagging");
    assert!(!tagging.is_empty());
    let params = string_at(&batch, "request_parameters", tagging[0]).unwrap();
    let value: serde_json::Value = serde_json::from_str(&params).unwrap();
    assert!(
        value.get("Tagging").is_some() && value.get("tagging").is_some(),
        "{params}"
    );
    // maxResults arrives as int and as string: every such event converts.
    let max_results = strings(&batch, "request_parameters")
        .iter()
        .flatten()
        .filter(|p| p.contains("\"maxResults\""))
        .count();
    assert!(max_results >= 60, "{max_results}");
}

#[test]
fn kms_developer_guide_examples_resolve_keys() {
    let (dir, summary) = convert_into(&[data("aws-kms-developer-guide/events")], |_| {});
    // 4 blocks are not JSON at all (elided `...`, placeholders); 3 only have trailing commas.
    assert_eq!(summary.quarantined_records, 4, "{:#?}", summary.problems);
    assert_eq!(summary.repaired_records, 3);
    assert_eq!(
        summary.duplicates_dropped, 1,
        "of three examples that reuse an event id, time and name, one differs only in additionalEventData"
    );
    assert_eq!(summary.rows_written, summary.events_read - 4 - 1);
    let batch = read_all(&dir.path().join("out"));
    let row = |name: &str| {
        let rows = rows_where(&batch, "event_name", name);
        assert!(!rows.is_empty(), "no {name}");
        rows[0]
    };
    let key = "arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    let re_encrypt = row("ReEncrypt");
    assert_eq!(string_at(&batch, "kms_key_arn", re_encrypt).as_deref(), Some(key));
    assert_eq!(
        string_at(&batch, "kms_key_id", re_encrypt).as_deref(),
        Some("1234abcd-12ab-34cd-56ef-1234567890ab")
    );
    assert_eq!(
        string_at(&batch, "kms_destination_key_arn", re_encrypt).as_deref(),
        Some("arn:aws:kms:us-west-2:111122223333:key/0987dcba-09fe-87dc-65ba-ab0987654321")
    );
    assert_eq!(
        map_at(&batch, "encryption_context", re_encrypt),
        Some(vec![
            ("Project".into(), "Alpha".into()),
            ("Department".into(), "Engineering".into())
        ])
    );
    assert_eq!(
        map_at(&batch, "kms_destination_encryption_context", re_encrypt),
        Some(vec![("Level".into(), "3A".into())])
    );
    assert_eq!(
        string_at(&batch, "kms_destination_encryption_algorithm", re_encrypt).as_deref(),
        Some("SYMMETRIC_DEFAULT")
    );

    // ReplicateKey is the trailing-comma example: repaired, then resolved.
    let replicate = row("ReplicateKey");
    assert_eq!(
        string_at(&batch, "kms_key_arn", replicate).as_deref(),
        Some("arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab")
    );
    assert_eq!(
        string_at(&batch, "kms_replica_region", replicate).as_deref(),
        Some("us-west-2")
    );
    assert_eq!(
        string_at(&batch, "kms_primary_region", replicate).as_deref(),
        Some("us-east-1")
    );
    assert_eq!(
        string_at(&batch, "kms_replica_key_arn", replicate).as_deref(),
        Some(key)
    );
    assert_eq!(
        string_at(&batch, "kms_key_state", replicate).as_deref(),
        Some("Creating")
    );
    // `aWSAccountId` differs from the model's `AWSAccountId` only by case: used, and kept in unmapped.
    assert_eq!(
        string_at(&batch, "kms_key_account_id", replicate).as_deref(),
        Some("111122223333")
    );
    let unmapped: serde_json::Value =
        serde_json::from_str(&string_at(&batch, "unmapped", replicate).unwrap()).unwrap();
    assert_eq!(
        unmapped["responseElements.replicaKeyMetadata.aWSAccountId"],
        "111122223333"
    );

    // CreateKey: EXTERNAL origin, and a CloudHSM key store with its cluster.
    let create_keys = rows_where(&batch, "event_name", "CreateKey");
    let origins: Vec<_> = create_keys
        .iter()
        .map(|&r| string_at(&batch, "kms_key_origin", r))
        .collect();
    assert!(
        origins.contains(&Some("EXTERNAL".into())) && origins.contains(&Some("AWS_CLOUDHSM".into())),
        "{origins:?}"
    );
    let hsm = create_keys
        .iter()
        .copied()
        .find(|&r| string_at(&batch, "kms_key_origin", r).as_deref() == Some("AWS_CLOUDHSM"))
        .unwrap();
    for (column, expected) in [
        ("kms_custom_key_store_id", "cks-1234567890abcdef0"),
        ("kms_cloudhsm_cluster_id", "cluster-1a23b4cdefg"),
        ("kms_key_spec", "SYMMETRIC_DEFAULT"),
        ("kms_key_usage", "ENCRYPT_DECRYPT"),
        ("kms_key_manager", "CUSTOMER"),
    ] {
        assert_eq!(
            string_at(&batch, column, hsm).as_deref(),
            Some(expected),
            "{column}"
        );
    }
    let multi_region = batch.column_by_name("kms_multi_region").unwrap().as_boolean();
    assert!(!multi_region.is_null(hsm) && !multi_region.value(hsm));

    // ImportKeyMaterial: expiration model and the Java-style validTo as a timestamp.
    let import = row("ImportKeyMaterial");
    assert_eq!(
        string_at(&batch, "kms_expiration_model", import).as_deref(),
        Some("KEY_MATERIAL_EXPIRES")
    );
    assert_eq!(
        micros_at(&batch, "kms_valid_to", import),
        Some(micros("2021-01-01T20:00:00Z"))
    );
    assert_eq!(string_at(&batch, "kms_key_arn", import).as_deref(), Some(key));

    // ScheduleKeyDeletion: pending window and deletion date.
    let schedule = rows_where(&batch, "event_name", "ScheduleKeyDeletion");
    let windows = batch
        .column_by_name("kms_pending_window_days")
        .unwrap()
        .as_primitive::<arrow::datatypes::Int32Type>();
    assert!(schedule.iter().any(|&r| windows.value(r) == 20));
    assert!(
        schedule
            .iter()
            .any(|&r| micros_at(&batch, "kms_deletion_date", r) == Some(micros("2021-04-12T18:58:30Z")))
    );

    // CreateGrant: grantee, operations, grant id.
    let grant = row("CreateGrant");
    assert_eq!(
        string_at(&batch, "kms_grantee_principal", grant).as_deref(),
        Some("EX_PRINCIPAL_ID")
    );
    let operations = batch
        .column_by_name("kms_grant_operations")
        .unwrap()
        .as_list::<i32>()
        .value(grant);
    let operations: Vec<&str> = operations.as_string::<i32>().iter().flatten().collect();
    assert_eq!(operations, vec!["Encrypt", "RetireGrant"]);
    assert!(string_at(&batch, "kms_grant_id", grant).is_some());

    // Non-KMS rows (the EC2 examples) leave every KMS column empty.
    for r in rows_where(&batch, "event_source", "ec2.amazonaws.com") {
        assert_eq!(string_at(&batch, "kms_key_arn", r), None);
    }
}

#[test]
fn every_container_form_is_read() {
    // Bare arrays (Stratus), NDJSON EventBridge envelopes, gzip, SIEM `_raw` wrappers.
    let (_, stratus) = convert_into(&[data("stratus-red-team")], |_| {});
    assert_eq!((stratus.rows_written, stratus.quarantined_records), (310, 0));

    let (dir, eventbridge) = convert_into(&[data("streamalert/eventbridge.ndjson")], |_| {});
    assert_eq!(eventbridge.events_read, 15);
    let batch = read_all(&dir.path().join("out"));
    assert!(rows_where(&batch, "event_name", "CreateImage").len() == 1);

    let (_, trailscraper) = convert_into(&[data("trailscraper/tests/cloudtrail")], |_| {});
    assert_eq!(trailscraper.input_files, 2);
    assert_eq!(trailscraper.rows_written, 2 * (trailscraper.rows_written / 2));
    assert!(trailscraper.rows_written > 0);

    let (dir, cribl) = convert_into(&[data("cribl/data/samples")], |_| {});
    assert_eq!(cribl.events_read, 249, "{:#?}", cribl.problems);
    assert_eq!(cribl.skipped_records.get(&SkipReason::NotAnEvent), Some(&50));
    let batch = read_all(&dir.path().join("out"));
    // 205 of these records spell readOnly as the string "true"/"false": all become booleans
    // (one ConsoleLogin has no readOnly at all).
    let read_only = batch.column_by_name("read_only").unwrap().as_boolean();
    assert_eq!(read_only.null_count(), 1);
    assert_eq!(read_only.true_count() + read_only.false_count(), 248);
    let unmapped = strings(&batch, "unmapped");
    assert!(unmapped.iter().flatten().all(|u| !u.contains("\"readOnly\"")));
}

#[test]
fn edge_case_fixtures_are_reported_not_fatal() {
    let (_, summary) = convert_into(
        &[data("aws-cloudtrail-processing-library"), data("cloudgrep")],
        |_| {},
    );
    // The deliberately broken and truncated files, the wrong eventTime and the all-null record
    // are each named; everything else converts.
    assert!(summary.quarantined_records >= 2, "{:#?}", summary.problems);
    assert!(summary.failed_files >= 2, "{:#?}", summary.problems);
    let messages: Vec<String> = summary.problems.iter().map(|p| p.to_string()).collect();
    assert!(
        messages.iter().any(|m| m.contains("ThisIsAWrongEventTime")),
        "{messages:#?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("bad_cloudtrail.json")),
        "{messages:#?}"
    );
    assert!(summary.rows_written > 30);
    assert_eq!(
        summary.events_read,
        summary.rows_written + summary.quarantined_records
    );
}

#[test]
fn partition_keys_are_chosen_and_refusal_is_safe() {
    let (dir, summary) = convert_into(&[data("aws-kms-developer-guide/events")], |o| {
        o.write.partitioning = Partitioning::new(vec![
            PartitionKey::Account,
            PartitionKey::Year,
            PartitionKey::Month,
            PartitionKey::Service,
        ])
        .unwrap();
    });
    let out = dir.path().join("out");
    let files = parquet_files(&out);
    assert_eq!(files.len(), summary.files_written);
    assert!(files.iter().any(|f| {
        f.to_string_lossy()
            .contains("account=111122223333/year=2020/month=07/service=kms.amazonaws.com/")
    }));

    // Converting again into the same directory is refused, unless --overwrite.
    let mut options =
        keytrail::convert::ConvertOptions::new(vec![data("aws-kms-developer-guide/events")], &out);
    let refused = keytrail::convert::convert(&options, &keytrail::convert::NoProgress)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("--overwrite"), "{refused}");
    options.mode = keytrail::dataset::OutputMode::Overwrite;
    let again = keytrail::convert::convert(&options, &keytrail::convert::NoProgress).unwrap();
    assert_eq!(again.rows_written, summary.rows_written);
    assert_eq!(
        parquet_files(&out).len(),
        again.files_written,
        "old files replaced, not mixed"
    );

    // A non-empty directory that is not a dataset is never written into.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    let mut options =
        keytrail::convert::ConvertOptions::new(vec![data("aws-kms-developer-guide/events")], &foreign);
    options.mode = keytrail::dataset::OutputMode::Overwrite;
    let refused = keytrail::convert::convert(&options, &keytrail::convert::NoProgress)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("not empty"), "{refused}");
    assert_eq!(
        std::fs::read_to_string(foreign.join("notes.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn spilled_runs_merge_into_sorted_rolled_files() {
    use keytrail::write::SpillCompression;
    let mut first_ids: Option<Vec<String>> = None;
    for codec in [
        SpillCompression::Lz4,
        SpillCompression::None,
        SpillCompression::Zstd,
    ] {
        // A tiny memory limit forces spills; a tiny target size forces several files per partition.
        let (dir, summary) = convert_into(&[data("invictus")], |o| {
            o.batch_rows = 256;
            o.write.memory_limit_bytes = 512 * 1024;
            o.write.target_file_bytes = 64 * 1024;
            o.write.row_group_rows = 500;
            o.write.spill_compression = codec;
        });
        assert!(summary.spilled_runs > 1, "{codec:?}: {}", summary.spilled_runs);
        assert!(summary.files_written > 1);
        assert_eq!(summary.rows_written, 2900);
        let out = dir.path().join("out");
        let mut previous_last = i64::MIN;
        let mut ids = Vec::new();
        for file in parquet_files(&out) {
            let batch = read_file(&file);
            let times: Vec<i64> = (0..batch.num_rows())
                .map(|r| micros_at(&batch, "event_time", r).unwrap())
                .collect();
            assert!(
                times.windows(2).all(|w| w[0] <= w[1]),
                "{codec:?}: {} is not sorted",
                file.display()
            );
            assert!(
                times[0] >= previous_last,
                "files of a partition follow each other in time"
            );
            previous_last = *times.last().unwrap();
            ids.extend(strings(&batch, "event_id").into_iter().flatten());
        }
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(
            distinct.len(),
            2900,
            "{codec:?}: no row lost or doubled by the merge"
        );
        match &first_ids {
            None => first_ids = Some(ids),
            Some(first) => assert_eq!(first, &ids, "{codec:?}: same rows in the same order"),
        }
    }
}

#[test]
fn a_dataset_of_keytrail_0_1_is_refused_then_upgraded_in_place() {
    let (dir, first) = convert_into(&[data("aws-kms-developer-guide/events")], |_| {});
    let out = dir.path().join("out");
    // Make it what keytrail 0.1 wrote: the same files, with run records instead of a Delta log.
    let files: Vec<String> = parquet_files(&out)
        .iter()
        .map(|f| f.strip_prefix(&out).unwrap().to_string_lossy().into_owned())
        .collect();
    let commits = out.join("_keytrail/commits");
    let record = std::fs::read_dir(&commits)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(record).unwrap()).unwrap();
    std::fs::remove_dir_all(out.join("_delta_log")).unwrap();
    std::fs::remove_dir_all(&commits).unwrap();
    std::fs::create_dir_all(out.join("_keytrail/runs")).unwrap();
    std::fs::write(
        out.join("_keytrail/dataset.json"),
        r#"{"schema":"cloudtrail","schema_version":1,"partition_by":["region","event_date"],"writer":"keytrail 0.1.0"}"#,
    )
    .unwrap();
    let run = serde_json::json!({
        "run_id": first.run_id, "state": "committed", "files": files, "rows": first.rows_written,
        "replaces_runs": [], "inputs": record["inputs"],
    });
    std::fs::write(
        out.join(format!("_keytrail/runs/{}.json", first.run_id)),
        run.to_string(),
    )
    .unwrap();

    let mut options =
        keytrail::convert::ConvertOptions::new(vec![data("aws-kms-developer-guide/events")], &out);
    options.mode = keytrail::dataset::OutputMode::Incremental;
    let refused = keytrail::convert::convert(&options, &keytrail::convert::NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains(&format!("keytrail upgrade {}", out.display())),
        "{refused}"
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let upgraded = keytrail::dataset::upgrade::upgrade(&out, runtime.handle().clone()).unwrap();
    assert_eq!((upgraded.files, upgraded.rows), (files.len(), first.rows_written));
    assert!(!out.join("_keytrail/runs").exists(), "the old records are gone");
    assert_eq!(
        read_all(&out).num_rows() as u64,
        first.rows_written,
        "the same rows, now from the log"
    );
    // The inputs the old runs converted are known: an incremental run adds nothing.
    let again = keytrail::convert::convert(&options, &keytrail::convert::NoProgress).unwrap();
    assert_eq!((again.input_files, again.rows_written), (0, 0));
    assert!(again.unchanged_inputs > 0);
}

#[test]
fn a_delivery_file_cut_between_records_is_reported() {
    // Cut right after a complete record: nothing is pending, but the events after the cut are
    // lost, so the file must count as failed with a problem, and the complete record is kept.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("cut.json");
    std::fs::write(
        &input,
        r#"{"Records":[{"eventVersion":"1.08","eventTime":"2023-01-01T00:00:00Z","eventSource":"kms.amazonaws.com","eventName":"Decrypt","eventID":"e1"},"#,
    )
    .unwrap();
    let (_out, summary) = convert_into(&[input.to_string_lossy().into_owned()], |_| {});
    assert_eq!(summary.rows_written, 1);
    assert_eq!(summary.failed_files, 1, "{:#?}", summary.problems);
    assert_eq!(summary.problems.len(), 1);
    let problem = &summary.problems[0];
    assert!(
        problem.message.contains("the Records array is not closed"),
        "{}",
        problem.message
    );
    // Reported at the end of the input, where the cut is.
    assert_eq!(problem.offset, Some(std::fs::metadata(&input).unwrap().len()));
}

/// Every file's `(event_time, event_id)` rows, partition by partition, files in name order.
fn rows_by_partition(out: &std::path::Path) -> std::collections::BTreeMap<String, Vec<(i64, String)>> {
    let mut partitions = std::collections::BTreeMap::new();
    for file in parquet_files(out) {
        let partition = file
            .parent()
            .unwrap()
            .strip_prefix(out)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let batch = read_file(&file);
        let ids = strings(&batch, "event_id");
        let rows: &mut Vec<(i64, String)> = partitions.entry(partition).or_default();
        rows.extend((0..batch.num_rows()).map(|r| {
            (
                micros_at(&batch, "event_time", r).unwrap(),
                ids[r].clone().unwrap(),
            )
        }));
    }
    partitions
}

#[test]
fn delivery_order_streams_and_any_order_gives_the_same_sorted_files() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    assert_eq!(generate_tree(&tree, 3600, 3, 10), 360);
    // The same files under names without a delivery time, newest first: read in that order.
    let mut delivered: Vec<std::path::PathBuf> = walkdir::WalkDir::new(&tree)
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .filter(|p| p.is_file())
        .collect();
    delivered.sort_by_key(|p| {
        p.file_name()
            .unwrap()
            .to_string_lossy()
            .split('_')
            .nth(3)
            .unwrap()
            .to_string()
    });
    let scrambled = dir.path().join("scrambled");
    std::fs::create_dir_all(&scrambled).unwrap();
    for (i, path) in delivered.iter().rev().enumerate() {
        std::fs::copy(path, scrambled.join(format!("f{i:04}.json.gz"))).unwrap();
    }
    let small = |o: &mut keytrail::convert::ConvertOptions| {
        o.batch_rows = 256;
        // Less than the 4.8 MB of rows, more than the 15 minutes each partition holds back.
        o.write.memory_limit_bytes = 2 << 20;
    };
    // One worker: with two, a worker the machine's load holds back more than the 15 minutes
    // holds every partition's rows back with it (the watermark is the laggard's), and the run
    // spills: right, but not what this test is about (a fresh-clone CI run hit it).
    let one_worker = |o: &mut keytrail::convert::ConvertOptions| {
        small(o);
        o.threads = 1;
        o.write.threads = 1;
    };
    let (in_order, streamed) = convert_into(&[tree.to_string_lossy().into_owned()], one_worker);
    assert_eq!(streamed.rows_written, 3600);
    assert_eq!(
        (streamed.spilled_runs, streamed.late_rows),
        (0, 0),
        "delivery order writes as it goes"
    );
    let (out_of_order, merged) = convert_into(&[scrambled.to_string_lossy().into_owned()], small);
    assert_eq!(merged.rows_written, 3600);
    assert!(
        merged.spilled_runs + merged.late_rows as usize > 0,
        "newest first cannot stream"
    );

    let expected = rows_by_partition(&in_order.path().join("out"));
    assert_eq!(expected.len(), 3);
    for rows in expected.values() {
        assert!(rows.windows(2).all(|w| w[0] <= w[1]), "files sorted and in order");
    }
    assert_eq!(rows_by_partition(&out_of_order.path().join("out")), expected);
}

#[test]
fn event_history_and_lake_query_results_are_read() {
    let (dir, summary) = convert_into(&[data("handmade/investigator-forms")], |_| {});
    // 2 + 2 looked-up events, 2 + 1 Lake rows; the Lake files repeat three of them.
    assert_eq!(
        (
            summary.events_read,
            summary.rows_written,
            summary.duplicates_dropped
        ),
        (7, 4, 3),
        "{:#?}",
        summary.problems
    );
    assert!(summary.is_clean(), "{:#?}", summary.problems);
    let batch = read_all(&dir.path().join("out"));
    let decrypt = rows_where(&batch, "event_name", "Decrypt");
    assert_eq!(decrypt.len(), 1);
    assert_eq!(
        string_at(&batch, "kms_key_arn", decrypt[0]).as_deref(),
        Some("arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"),
        "the record inside CloudTrailEvent is flattened like any other"
    );
    let names = strings(&batch, "event_name");
    for name in ["ListBuckets", "GetCallerIdentity", "DescribeKey"] {
        assert!(names.iter().flatten().any(|n| n == name), "{name}: {names:?}");
    }
}

#[test]
fn event_history_downloads_json_is_read_and_csv_is_a_named_problem() {
    let (_dir, json) = convert_into(&[data("handmade/event-history/event_history.json")], |_| {});
    assert!(json.is_clean(), "{:#?}", json.problems);
    assert_eq!((json.events_read, json.rows_written), (2, 2));
    let (_dir, csv) = convert_into(&[data("handmade/event-history/event_history.csv")], |_| {});
    assert_eq!((csv.events_read, csv.problem_count), (0, 1));
    let problem = csv.problems[0].to_string();
    assert!(
        problem.contains("event_history.csv: a CloudTrail Event history download in CSV")
            && problem.contains("lookup-events"),
        "{problem}"
    );
    // Other CSV (and text) is not JSON, skipped and counted without a problem.
    let scratch = tempfile::tempdir().unwrap();
    std::fs::write(scratch.path().join("notes.csv"), "case,owner\n42,alice\n").unwrap();
    let (_dir, other) = convert_into(&[scratch.path().to_string_lossy().into_owned()], |_| {});
    assert_eq!(
        (
            other.problem_count,
            other.skipped_files.get(&SkippedFile::NotJson)
        ),
        (0, Some(&1))
    );
}

#[test]
fn zip_archives_are_read_member_by_member() {
    // A real archive: one NDJSON member whose 103 records lost their eventTime to Logstash.
    let (_dir, real) = convert_into(&[data("otrf/ec2_proxy_s3_exfiltration.zip")], |_| {});
    assert_eq!(
        (real.events_read, real.quarantined_records),
        (103, 103),
        "{:#?}",
        real.problems
    );
    assert!(
        real.problems[0].to_string().contains(
            "ec2_proxy_s3_exfiltration.zip!/ec2_proxy_s3_exfiltration_2020-09-14011940.json: record 0"
        ),
        "{}",
        real.problems[0]
    );

    // An investigator's archive: delivery files stored and gzip'd, a README and macOS metadata.
    let scratch = tempfile::tempdir().unwrap();
    let archive = scratch.path().join("incident.zip");
    let mut expected = 0;
    {
        use std::io::Write;
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&archive).unwrap());
        let stored =
            zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        let deflated = zip::write::SimpleFileOptions::default();
        let mut files: Vec<_> = std::fs::read_dir(data("invictus/CloudTrail"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for (i, file) in files.iter().take(4).enumerate() {
            let bytes = std::fs::read(file).unwrap();
            expected += serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()["Records"]
                .as_array()
                .unwrap()
                .len() as u64;
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            if i % 2 == 0 {
                zip.start_file(format!("logs/{name}"), stored).unwrap();
                zip.write_all(&bytes).unwrap();
            } else {
                zip.start_file(format!("logs/{name}.gz"), deflated).unwrap();
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                gz.write_all(&bytes).unwrap();
                zip.write_all(&gz.finish().unwrap()).unwrap();
            }
        }
        zip.start_file("README.txt", deflated).unwrap();
        zip.write_all(b"Exported for case 42.\n").unwrap();
        zip.start_file("__MACOSX/logs/._x.json", deflated).unwrap();
        zip.write_all(b"\x00\x05\x16\x07").unwrap();
        zip.finish().unwrap();
    }
    let input = archive.to_string_lossy().into_owned();
    let out = scratch.path().join("table");
    let mut options = ConvertOptions::new(vec![input.clone()], &out);
    options.threads = 2;
    let summary = convert(&options, &NoProgress).unwrap();
    assert!(summary.is_clean(), "{:#?}", summary.problems);
    assert_eq!(
        (summary.input_files, summary.events_read, summary.rows_written),
        (1, expected, expected)
    );
    // The archive is one input of the manifest: an incremental run finds it unchanged.
    options.mode = OutputMode::Incremental;
    let again = convert(&options, &NoProgress).unwrap();
    assert_eq!((again.unchanged_inputs, again.rows_written), (1, 0));
}

#[test]
fn keep_raw_keeps_each_events_original_text_byte_for_byte() {
    let scratch = tempfile::tempdir().unwrap();
    let out = scratch.path().join("table");
    // Two runs into one partition, then a compaction of its two files: the text survives all.
    let mut options = ConvertOptions::new(vec![format!("{}/CloudTrail/*T120*", data("invictus"))], &out);
    options.threads = 2;
    options.keep_raw = true;
    let first = convert(&options, &NoProgress).unwrap();
    options.inputs = vec![data("invictus")];
    options.mode = OutputMode::Incremental;
    let second = convert(&options, &NoProgress).unwrap();
    assert_eq!(first.rows_written + second.rows_written, 2900);
    let compact = keytrail::operations::compact::CompactOptions {
        min_files: 2,
        ..Default::default()
    };
    let compacted = keytrail::operations::compact::compact(&out, &compact).unwrap();
    assert_eq!(compacted.compacted.len(), 1, "{compacted:?}");
    let batch = read_all(&out);
    let originals: String = std::fs::read_dir(data("invictus/CloudTrail"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    let raw = strings(&batch, "raw_event");
    let ids = strings(&batch, "event_id");
    assert_eq!(raw.len(), 2900);
    for (raw, id) in raw.iter().zip(&ids) {
        let raw = raw.as_deref().expect("every row keeps its text");
        assert!(originals.contains(raw), "not the bytes as read: {raw}");
        let parsed: serde_json::Value = serde_json::from_str(raw).unwrap();
        assert_eq!(
            parsed["eventID"].as_str(),
            id.as_deref(),
            "each row keeps its own event"
        );
    }

    // A table keeps the text or not, for all its runs.
    options.keep_raw = false;
    let refused = convert(&options, &NoProgress).unwrap_err().to_string();
    assert!(
        refused.contains("the table was converted with --keep-raw"),
        "{refused}"
    );
    let plain = scratch.path().join("plain");
    let mut without = ConvertOptions::new(vec![data("invictus")], &plain);
    convert(&without, &NoProgress).unwrap();
    without.mode = OutputMode::Incremental;
    without.keep_raw = true;
    let refused = convert(&without, &NoProgress).unwrap_err().to_string();
    assert!(
        refused.contains("the table was converted without --keep-raw"),
        "{refused}"
    );
    assert!(
        read_all(&plain).column_by_name("raw_event").is_none(),
        "only tables converted with --keep-raw have the column"
    );
}

/// One large `Records` file: its records flattened by helper threads give what one thread gives
/// (rows, counts, problems with their record indexes, the quarantine in order), including a
/// structural error that ends the file.
#[test]
fn a_large_records_file_flattened_by_helper_threads_gives_what_one_thread_gives() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from(r#"{"Records":["#);
    for i in 0..30_000u32 {
        if i > 0 {
            text.push(',');
        }
        let record = match i % 7919 {
            13 => r#"{"eventTime":"never","eventID":"bad","eventName":"Decrypt"}"#.to_string(),
            29 => r#"{"eventTime":"2024-05-01T10:00:00Z","eventID":"x",,"eventName":"Broken"}"#.to_string(),
            _ => format!(
                r#"{{"eventTime":"2024-05-0{}T{:02}:{:02}:{:02}Z","eventID":"e{i}","eventName":"Decrypt","eventSource":"kms.amazonaws.com","awsRegion":"eu-west-{}","recipientAccountId":"111122223333","requestParameters":{{"keyId":"alias/k{}"}}}}"#,
                1 + i % 3,
                (i / 3600) % 24,
                (i / 60) % 60,
                i % 60,
                1 + i % 2,
                i % 5
            ),
        };
        text.push_str(&record);
    }
    // A copy of an earlier event, then a record cut short: the file ends in a structural error.
    text.push_str(r#",{"eventTime":"2024-05-01T00:00:00Z","eventID":"e0","eventName":"Decrypt","eventSource":"kms.amazonaws.com","awsRegion":"eu-west-1","recipientAccountId":"111122223333","requestParameters":{"keyId":"alias/k0"}}"#);
    text.push_str(r#",{"eventTime":"2024-05-01T"#);
    let input = dir.path().join("export.json");
    std::fs::write(&input, &text).unwrap();
    let inputs = [input.to_string_lossy().into_owned()];

    let (one, alone) = convert_into(&inputs, |o| {
        o.threads = 1;
        o.batch_rows = 1000;
    });
    let (shared, helped) = convert_into(&inputs, |o| {
        o.threads = 2;
        o.batch_rows = 1000;
        o.shared_input_bytes = 1024;
    });
    assert!(text.len() > 1024);
    let counts = |s: &keytrail::convert::ConvertSummary| {
        (
            s.events_read,
            s.rows_written,
            s.quarantined_records,
            s.duplicates_dropped,
            s.failed_files,
            s.repaired_records,
        )
    };
    assert_eq!(counts(&helped), counts(&alone));
    // Records 13, 29, 7932, 7948, ... (every 7,919th): 8 invalid; the copy of e0 is dropped.
    assert_eq!(alone.rows_written, 30_000 - 8, "{alone:?}");
    assert_eq!(alone.duplicates_dropped, 1);
    let problems = |s: &keytrail::convert::ConvertSummary| {
        s.problems.iter().map(ToString::to_string).collect::<Vec<_>>()
    };
    assert_eq!(problems(&helped), problems(&alone));
    assert!(
        problems(&alone).iter().any(|p| p.contains("record 13 ")),
        "{:?}",
        problems(&alone)
    );
    assert_eq!(
        rows_by_partition(&shared.path().join("out")),
        rows_by_partition(&one.path().join("out"))
    );
    let quarantine = |dir: &std::path::Path| {
        let runs = dir.join("out/_keytrail/quarantine");
        let run = std::fs::read_dir(runs).unwrap().next().unwrap().unwrap().path();
        keytrail::dataset::quarantine::read_quarantine(&run).unwrap()
    };
    let (a, b) = (quarantine(one.path()), quarantine(shared.path()));
    assert_eq!(a.len(), 9, "8 invalid records and the unfinished one");
    assert_eq!(a, b, "the same records, reasons and bytes, in the same order");
}
