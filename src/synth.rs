//! Synthetic CloudTrail delivery trees for benchmarks and volume tests.
//!
//! `keytrail gen OUT --events N --seed S` writes
//! `AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/<account>_CloudTrail_<region>_<time>_<id>.json.gz`
//! files of about 500 records, the way CloudTrail delivers them: mostly KMS data-plane calls
//! (Decrypt, GenerateDataKey, Encrypt, ...) with assumed-role, IAM user and AWS service
//! identities, encryption contexts, some errors, key lifecycle events and other services' calls.
//! The same seed always produces the same bytes (for a given keytrail version).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use flate2::Compression;
use flate2::write::GzEncoder;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// Settings of a generated tree.
#[derive(Debug, Clone)]
pub struct GenOptions {
    pub events: u64,
    /// The same seed writes the same files.
    pub seed: u64,
    pub records_per_file: usize,
    /// Minutes between two deliveries of one (account, Region) stream; a file holds the events
    /// of the interval before its delivery time.
    pub file_interval_minutes: u32,
}

impl Default for GenOptions {
    /// 100,000 events, seed 1, 500 records per delivery file, a file every 5 minutes per
    /// stream (what `keytrail gen` writes).
    fn default() -> Self {
        GenOptions {
            events: 100_000,
            seed: 1,
            records_per_file: 500,
            file_interval_minutes: 5,
        }
    }
}

/// What was generated.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GenSummary {
    pub files: u64,
    pub events: u64,
    pub bytes: u64,
}

const ACCOUNTS: [&str; 3] = ["111122223333", "444455556666", "777788889999"];
const REGIONS: [&str; 3] = ["us-east-1", "us-west-2", "eu-west-1"];
const ROLES: [&str; 4] = ["app-backend", "data-pipeline", "ci-deployer", "admin"];
const USERS: [&str; 3] = ["alice", "bob", "carol"];
const SERVICES: [&str; 5] = [
    "s3.amazonaws.com",
    "secretsmanager.amazonaws.com",
    "ssm.amazonaws.com",
    "ebs.amazonaws.com",
    "dynamodb.amazonaws.com",
];
const KEYS_PER_REGION: usize = 40;

struct Generator {
    rng: StdRng,
    /// Key ids per (account, region).
    keys: Vec<Vec<String>>,
}

/// Writes a synthetic delivery tree under `out`.
pub fn generate(out: &Path, options: &GenOptions) -> std::io::Result<GenSummary> {
    let mut rng = StdRng::seed_from_u64(options.seed);
    let keys = (0..ACCOUNTS.len() * REGIONS.len())
        .map(|_| (0..KEYS_PER_REGION).map(|_| uuid(&mut rng)).collect())
        .collect();
    let mut generator = Generator { rng, keys };
    let start: DateTime<Utc> = DateTime::from_timestamp(1_735_689_600, 0).expect("valid start"); // 2025-01-01
    let per_file = options.records_per_file.max(1) as u64;
    let mut summary = GenSummary {
        files: 0,
        events: 0,
        bytes: 0,
    };
    let mut file_index = 0u64;
    while summary.events < options.events {
        let n = per_file.min(options.events - summary.events);
        // Nine (account, region) streams, each delivering one file every five minutes.
        let stream = (file_index % 9) as usize;
        let (account, region) = (ACCOUNTS[stream / 3], REGIONS[stream % 3]);
        let interval = Duration::minutes(i64::from(options.file_interval_minutes.max(1)));
        let window = start + interval * i32::try_from(file_index / 9).unwrap_or(i32::MAX);
        let path = generator.write_file(out, account, region, stream, (window, interval), n)?;
        summary.bytes += fs::metadata(&path)?.len();
        summary.events += n;
        summary.files += 1;
        file_index += 1;
    }
    Ok(summary)
}

impl Generator {
    fn write_file(
        &mut self,
        out: &Path,
        account: &str,
        region: &str,
        stream: usize,
        (window, interval): (DateTime<Utc>, Duration),
        records: u64,
    ) -> std::io::Result<PathBuf> {
        // As CloudTrail does, a file is named and filed by when it was delivered: the end of the
        // interval its events are from.
        let delivered = window + interval;
        let dir = out.join(format!(
            "AWSLogs/{account}/CloudTrail/{region}/{}",
            delivered.format("%Y/%m/%d")
        ));
        fs::create_dir_all(&dir)?;
        let unique: String = (0..16)
            .map(|_| {
                char::from(
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                        [self.rng.random_range(0..62)],
                )
            })
            .collect();
        let path = dir.join(format!(
            "{account}_CloudTrail_{region}_{}_{unique}.json.gz",
            delivered.format("%Y%m%dT%H%MZ")
        ));
        let mut gz = GzEncoder::new(BufWriter::new(File::create(&path)?), Compression::default());
        gz.write_all(b"{\"Records\":[")?;
        for i in 0..records {
            if i > 0 {
                gz.write_all(b",")?;
            }
            // CloudTrail files are roughly, not strictly, in time order.
            let offset = self.rng.random_range(0..interval.num_milliseconds().max(1));
            let time = window + Duration::milliseconds(offset);
            let record = self.record(account, region, stream, time);
            serde_json::to_writer(&mut gz, &record)?;
        }
        gz.write_all(b"]}")?;
        gz.finish()?.flush()?;
        Ok(path)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.rng.random_range(0..items.len())]
    }

    fn identity(&mut self, account: &str) -> (Value, String) {
        let roll = self.rng.random_range(0..100);
        if roll < 55 {
            let role = self.pick(&ROLES);
            let session = format!("session-{}", self.rng.random_range(1000..9999));
            let identity = json!({
                "type": "AssumedRole",
                "principalId": format!("AROA{}:{session}", upper_id(&mut self.rng, 16)),
                "arn": format!("arn:aws:sts::{account}:assumed-role/{role}/{session}"),
                "accountId": account,
                "accessKeyId": format!("ASIA{}", upper_id(&mut self.rng, 16)),
                "sessionContext": {
                    "sessionIssuer": {
                        "type": "Role",
                        "principalId": format!("AROA{}", upper_id(&mut self.rng, 16)),
                        "arn": format!("arn:aws:iam::{account}:role/{role}"),
                        "accountId": account,
                        "userName": role
                    },
                    "attributes": {"creationDate": "2025-01-01T00:00:00Z", "mfaAuthenticated": "false"}
                }
            });
            (identity, "AWS Internal".to_string())
        } else if roll < 75 {
            let user = self.pick(&USERS);
            let identity = json!({
                "type": "IAMUser",
                "principalId": format!("AIDA{}", upper_id(&mut self.rng, 16)),
                "arn": format!("arn:aws:iam::{account}:user/{user}"),
                "accountId": account,
                "accessKeyId": format!("AKIA{}", upper_id(&mut self.rng, 16)),
                "userName": user
            });
            (
                identity,
                "aws-cli/2.15.0 Python/3.11.6 Linux/6.1 exe/x86_64".to_string(),
            )
        } else {
            let service = self.pick(&SERVICES);
            (
                json!({"type": "AWSService", "invokedBy": service}),
                service.to_string(),
            )
        }
    }

    fn record(&mut self, account: &str, region: &str, stream: usize, time: DateTime<Utc>) -> Value {
        // About 3% of calls come from a role in a sibling account, which must name the key by ARN.
        let cross_account = self.rng.random_range(0..100) < 3;
        let caller_account = if cross_account {
            ACCOUNTS[(ACCOUNTS.iter().position(|a| *a == account).unwrap_or(0) + 1) % ACCOUNTS.len()]
        } else {
            account
        };
        let (identity, agent) = self.identity(caller_account);
        let key_index = self.rng.random_range(0..KEYS_PER_REGION);
        let key_id = self.keys[stream][key_index].clone();
        let key_arn = format!("arn:aws:kms:{region}:{account}:key/{key_id}");
        let roll = self.rng.random_range(0..1000);
        let context = self.encryption_context(account, region);
        let (source, name, request, response, read_only): (&str, &str, Value, Value, bool) = match roll {
            0..=399 => (
                "kms.amazonaws.com",
                "Decrypt",
                json!({"encryptionContext": context, "encryptionAlgorithm": "SYMMETRIC_DEFAULT"}),
                Value::Null,
                true,
            ),
            400..=599 => (
                "kms.amazonaws.com",
                "GenerateDataKey",
                json!({"keyId": self.key_reference(&key_id, &key_arn, cross_account), "encryptionContext": context, "keySpec": "AES_256"}),
                Value::Null,
                true,
            ),
            600..=699 => (
                "kms.amazonaws.com",
                "Encrypt",
                json!({"keyId": self.key_reference(&key_id, &key_arn, cross_account), "encryptionContext": context, "encryptionAlgorithm": "SYMMETRIC_DEFAULT"}),
                Value::Null,
                true,
            ),
            700..=749 => (
                "kms.amazonaws.com",
                "DescribeKey",
                json!({"keyId": self.key_reference(&key_id, &key_arn, cross_account)}),
                Value::Null,
                true,
            ),
            750..=769 => (
                "kms.amazonaws.com",
                "GenerateDataKeyWithoutPlaintext",
                json!({"keyId": key_arn, "numberOfBytes": 32}),
                Value::Null,
                true,
            ),
            770..=784 => {
                let destination = self.keys[stream][(key_index + 1) % KEYS_PER_REGION].clone();
                (
                    "kms.amazonaws.com",
                    "ReEncrypt",
                    json!({"sourceEncryptionAlgorithm": "SYMMETRIC_DEFAULT", "destinationKeyId": destination, "destinationEncryptionAlgorithm": "SYMMETRIC_DEFAULT", "sourceEncryptionContext": context, "destinationEncryptionContext": {"rotation": "2025"}}),
                    Value::Null,
                    true,
                )
            }
            785..=799 => (
                "kms.amazonaws.com",
                "CreateGrant",
                json!({"keyId": key_arn, "granteePrincipal": format!("arn:aws:iam::{account}:role/app-backend"), "operations": ["Decrypt", "GenerateDataKey"]}),
                json!({"grantId": hex_id(&mut self.rng, 64)}),
                false,
            ),
            800..=809 => (
                "kms.amazonaws.com",
                "ListAliases",
                json!({"limit": 100}),
                Value::Null,
                true,
            ),
            810..=814 => (
                "kms.amazonaws.com",
                "Sign",
                json!({"keyId": key_arn, "messageType": "DIGEST", "signingAlgorithm": "ECDSA_SHA_256"}),
                Value::Null,
                true,
            ),
            815..=816 => (
                "kms.amazonaws.com",
                "CreateKey",
                json!({"keySpec": "SYMMETRIC_DEFAULT", "keyUsage": "ENCRYPT_DECRYPT", "origin": "AWS_KMS", "multiRegion": false, "description": "generated"}),
                json!({"keyMetadata": {"AWSAccountId": account, "keyId": key_id, "arn": key_arn, "creationDate": time.format("%b %-d, %Y, %-I:%M:%S %p").to_string(), "enabled": true, "keyUsage": "ENCRYPT_DECRYPT", "keyState": "Enabled", "origin": "AWS_KMS", "keyManager": "CUSTOMER", "keySpec": "SYMMETRIC_DEFAULT", "encryptionAlgorithms": ["SYMMETRIC_DEFAULT"], "multiRegion": false}}),
                false,
            ),
            817 => (
                "kms.amazonaws.com",
                "ScheduleKeyDeletion",
                json!({"keyId": key_id, "pendingWindowInDays": 30}),
                json!({"keyId": key_arn, "keyState": "PendingDeletion", "pendingWindowInDays": 30}),
                false,
            ),
            818 => (
                "kms.amazonaws.com",
                "DisableKey",
                json!({"keyId": key_id}),
                Value::Null,
                false,
            ),
            819 => (
                "kms.amazonaws.com",
                "PutKeyPolicy",
                json!({"keyId": key_id, "policyName": "default", "policy": "{\"Version\":\"2012-10-17\",\"Statement\":[]}"}),
                Value::Null,
                false,
            ),
            820..=879 => (
                "sts.amazonaws.com",
                "AssumeRole",
                json!({"roleArn": format!("arn:aws:iam::{account}:role/app-backend"), "roleSessionName": "generated", "durationSeconds": 3600}),
                json!({"credentials": {"accessKeyId": format!("ASIA{}", upper_id(&mut self.rng, 16)), "expiration": "Jan 1, 2025, 1:00:00 AM"}}),
                true,
            ),
            880..=939 => (
                "s3.amazonaws.com",
                "GetObject",
                json!({"bucketName": "data-lake", "key": format!("raw/{}.parquet", self.rng.random_range(0..100000)), "Host": "data-lake.s3.amazonaws.com"}),
                Value::Null,
                true,
            ),
            940..=979 => (
                "ec2.amazonaws.com",
                "DescribeInstances",
                json!({"maxResults": 1000, "instancesSet": {}, "filterSet": {}}),
                Value::Null,
                true,
            ),
            _ => (
                "iam.amazonaws.com",
                "ListRoles",
                json!({"maxItems": 100}),
                Value::Null,
                true,
            ),
        };
        let error = self.rng.random_range(0..100) < 3;
        let mut record = json!({
            "eventVersion": "1.10",
            "userIdentity": identity,
            "eventTime": time.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "eventSource": source,
            "eventName": name,
            "awsRegion": region,
            "sourceIPAddress": if agent.ends_with(".amazonaws.com") { agent.clone() } else { format!("203.0.113.{}", self.rng.random_range(1..255)) },
            "userAgent": agent,
            "requestParameters": request,
            "responseElements": if error { Value::Null } else { response },
            "requestID": uuid(&mut self.rng),
            "eventID": uuid(&mut self.rng),
            "readOnly": read_only,
            "eventType": "AwsApiCall",
            "managementEvent": true,
            "recipientAccountId": account,
            "eventCategory": "Management",
            "tlsDetails": {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256", "clientProvidedHostHeader": format!("{}.{region}.amazonaws.com", source.trim_end_matches(".amazonaws.com"))}
        });
        if source == "kms.amazonaws.com" && name != "ListAliases" && name != "CreateKey" {
            record["resources"] = json!([{"accountId": account, "type": "AWS::KMS::Key", "ARN": key_arn}]);
        }
        if error {
            record["errorCode"] = json!("AccessDenied");
            record["errorMessage"] = json!(format!(
                "User is not authorized to perform: kms:{name} on resource: {key_arn}"
            ));
        }
        record
    }

    fn key_reference(&mut self, key_id: &str, key_arn: &str, cross_account: bool) -> String {
        if cross_account {
            return key_arn.to_string();
        }
        match self.rng.random_range(0..10) {
            0..=4 => key_arn.to_string(),
            5..=7 => key_id.to_string(),
            _ => "alias/app-data".to_string(),
        }
    }

    fn encryption_context(&mut self, account: &str, region: &str) -> Value {
        match self.rng.random_range(0..5) {
            0 => {
                json!({"aws:s3:arn": format!("arn:aws:s3:::data-lake/raw/{}.parquet", self.rng.random_range(0..100000))})
            }
            1 => json!({"aws:ebs:id": format!("vol-{}", hex_id(&mut self.rng, 17))}),
            2 => {
                json!({"SecretARN": format!("arn:aws:secretsmanager:{region}:{account}:secret:db-password-AbCdEf"), "SecretVersionId": uuid(&mut self.rng)})
            }
            3 => {
                json!({"PARAMETER_ARN": format!("arn:aws:ssm:{region}:{account}:parameter/app/config/{}", self.rng.random_range(0..50))})
            }
            _ => json!({"aws:dynamodb:tableName": "orders", "aws:dynamodb:subscriberId": account}),
        }
    }
}

fn uuid(rng: &mut StdRng) -> String {
    let h = hex_id(rng, 32);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn hex_id(rng: &mut StdRng, len: usize) -> String {
    (0..len)
        .map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)]))
        .collect()
}

fn upper_id(rng: &mut StdRng, len: usize) -> String {
    (0..len)
        .map(|_| char::from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[rng.random_range(0..32)]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes_and_requested_count() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let options = GenOptions {
            events: 1234,
            seed: 7,
            records_per_file: 500,
            ..GenOptions::default()
        };
        let sa = generate(a.path(), &options).unwrap();
        generate(b.path(), &options).unwrap();
        assert_eq!((sa.files, sa.events), (3, 1234));
        let files = |root: &Path| -> Vec<(PathBuf, Vec<u8>)> {
            let mut files: Vec<_> = walkdir::WalkDir::new(root)
                .into_iter()
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_file())
                .map(|e| {
                    (
                        e.path().strip_prefix(root).unwrap().to_path_buf(),
                        fs::read(e.path()).unwrap(),
                    )
                })
                .collect();
            files.sort();
            files
        };
        assert_eq!(files(a.path()), files(b.path()));
    }
}
