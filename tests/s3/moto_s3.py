"""An S3-compatible server (moto's server mode) on 127.0.0.1 for tests/s3.rs.

Creates the buckets named by --bucket, uploads each CloudTrail delivery file given by --trail into
the first bucket under the key CloudTrail itself would use
(AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/<account>_CloudTrail_<region>_<stamp>_<id>.json.gz,
gzip-compressed), adds one digest file under CloudTrail-Digest/, prints one line

    ready endpoint=http://127.0.0.1:PORT objects=N records=M

and serves until its standard input is closed.

--faults FILE injects S3 errors: while FILE holds a JSON object such as
{"bucket": "lake", "after": 3, "status": 400, "code": "ExpiredToken"}, the first `after` write
requests (PUT, POST, DELETE) to the bucket since the file last changed succeed and every later
one is answered with that error, as S3 answers a request signed with expired credentials. The
number of write requests counted so far is kept in FILE.writes.
--record FILE appends one line per request to FILE: method, path and Range header.
--min-part-size lowers the smallest multipart part the server accepts (S3's is 5 MiB).
"""

import argparse
import datetime
import gzip
import hashlib
import json
import os
import sys
import threading
from pathlib import Path


class Recorder:
    """WSGI middleware writing each request's method, path and Range header to a file."""

    def __init__(self, app, path: Path):
        self.app = app
        self.file = path.open("a", buffering=1)
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        line = f"{environ['REQUEST_METHOD']} {environ.get('PATH_INFO', '')} {environ.get('HTTP_RANGE', '-')}\n"
        with self.lock:
            self.file.write(line)
        return self.app(environ, start_response)


class Faults:
    """WSGI middleware answering write requests with the error the faults file names."""

    def __init__(self, app, path: Path):
        self.app = app
        self.path = path
        self.lock = threading.Lock()
        self.armed = None
        self.writes = 0

    def spec(self):
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        if not text.strip():
            return None
        with self.lock:
            if text != self.armed:
                self.armed, self.writes = text, 0
        return json.loads(text)

    def __call__(self, environ, start_response):
        spec = self.spec()
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "")
        if spec and method in ("PUT", "POST", "DELETE") and path.startswith(f"/{spec['bucket']}/"):
            with self.lock:
                self.writes += 1
                failing = self.writes > spec.get("after", 0)
                self.path.with_suffix(".writes").write_text(str(self.writes))
            if failing:
                length = int(environ.get("CONTENT_LENGTH") or 0)
                if length:
                    environ["wsgi.input"].read(length)
                code = spec.get("code", "ExpiredToken")
                message = spec.get("message", {
                    "ExpiredToken": "The provided token has expired.",
                    "AccessDenied": "Access Denied",
                }.get(code, "We encountered an internal error. Please try again."))
                body = (
                    '<?xml version="1.0" encoding="UTF-8"?>'
                    f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
                ).encode()
                status = int(spec.get("status", 400))
                reason = {400: "Bad Request", 403: "Forbidden", 500: "Internal Server Error"}.get(status, "Error")
                start_response(
                    f"{status} {reason}",
                    [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))],
                )
                return [body]
        return self.app(environ, start_response)


def delivery_key(path: Path, records: list) -> str:
    # As CloudTrail names a file: by when it was delivered, after its newest event (the minute
    # after it, as names have no seconds).
    first = records[0]
    account = first["recipientAccountId"]
    region = first["awsRegion"]
    newest = max(r["eventTime"] for r in records)
    delivered = datetime.datetime.strptime(newest, "%Y-%m-%dT%H:%M:%SZ") + datetime.timedelta(minutes=1)
    year, month, day = delivered.strftime("%Y"), delivered.strftime("%m"), delivered.strftime("%d")
    stamp = delivered.strftime("%Y%m%dT%H%MZ")
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
    parser.add_argument("--faults", type=Path, help="a file that arms injected S3 errors")
    parser.add_argument("--record", type=Path, help="a file to list every request in")
    parser.add_argument("--min-part-size", type=int, help="smallest multipart part accepted")
    args = parser.parse_args()
    if args.min_part_size:
        # Read by moto when it is imported.
        os.environ["S3_UPLOAD_PART_MIN_SIZE"] = str(args.min_part_size)

    import boto3
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    class Server(ThreadedMotoServer):
        def _server_entry(self) -> None:
            app = DomainDispatcherApplication(create_backend_app)
            if args.faults:
                app = Faults(app, args.faults)
            if args.record:
                app = Recorder(app, args.record)
            self._server = make_server(
                self._ip_address, self._port, app, True, request_handler=MotoRequestHandler
            )
            self._server_ready_event.set()
            self._server.serve_forever()

    if not args.log_requests:
        import logging

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
    # Not verbose: that prints on stdout, where the test reads the `ready` line.
    server = Server(ip_address="127.0.0.1", port=0, verbose=False)
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
