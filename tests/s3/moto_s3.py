"""An S3-compatible server (moto's server mode) on 127.0.0.1 for tests/s3.rs.

Creates the buckets named by --bucket, uploads each CloudTrail delivery file given by --trail into
the first bucket under the key CloudTrail itself would use
(AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/<account>_CloudTrail_<region>_<stamp>_<id>.json.gz,
gzip-compressed), adds one digest file under CloudTrail-Digest/, prints one line

    ready endpoint=http://127.0.0.1:PORT objects=N records=M

and serves until its standard input is closed.
"""

import argparse
import gzip
import hashlib
import json
import sys
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer


def delivery_key(path: Path, records: list) -> str:
    first = records[0]
    account = first["recipientAccountId"]
    region = first["awsRegion"]
    date, time = first["eventTime"].split("T")
    year, month, day = date.split("-")
    stamp = f"{year}{month}{day}T{time[:2]}{time[3:5]}Z"
    unique = hashlib.sha256(path.name.encode()).hexdigest()[:16]
    return (
        f"AWSLogs/{account}/CloudTrail/{region}/{year}/{month}/{day}/"
        f"{account}_CloudTrail_{region}_{stamp}_{unique}.json.gz"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bucket", action="append", required=True)
    parser.add_argument("--trail", action="append", default=[], type=Path)
    parser.add_argument("--log-requests", action="store_true",
                        help="log every request on stderr (to count a run's S3 requests)")
    args = parser.parse_args()

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=args.log_requests)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    for bucket in args.bucket:
        s3.create_bucket(Bucket=bucket)

    objects = records = 0
    account = region = None
    for path in sorted(args.trail):
        raw = path.read_bytes()
        delivery = json.loads(raw)
        key = delivery_key(path, delivery["Records"])
        account = delivery["Records"][0]["recipientAccountId"]
        region = delivery["Records"][0]["awsRegion"]
        s3.put_object(Bucket=args.bucket[0], Key=key, Body=gzip.compress(raw))
        objects += 1
        records += len(delivery["Records"])
    if account:
        digest = {"awsAccountId": account, "digestStartTime": "2023-07-10T11:00:00Z", "logFiles": []}
        s3.put_object(
            Bucket=args.bucket[0],
            Key=f"AWSLogs/{account}/CloudTrail-Digest/{region}/2023/07/10/{account}_CloudTrail-Digest_{region}_x.json.gz",
            Body=gzip.compress(json.dumps(digest).encode()),
        )
        objects += 1

    print(f"ready endpoint={endpoint} objects={objects} records={records}", flush=True)
    sys.stdin.read()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
