#!/usr/bin/env python3
"""Conversion into a Delta table on local disk and on S3 (a local moto server), beside an
earlier build's local conversion, same generated tree, same run.

usage: lake.py --keytrail BIN [--baseline BIN] [--tree DIR] [--threads T] [--repeat R]
               [--s3-python PYTHON]

Contenders, each its own process (wall time, CPU time and peak RSS from wait4), run R times,
alternating; medians are reported:
  baseline local   (with --baseline) the earlier build into a local directory
  keytrail local   this build into a new local Delta table
  keytrail s3      this build into a new table under s3://lake/ on moto (tests/s3/moto_s3.py,
                   run with --s3-python, the s3 test virtualenv's python), and the S3 requests the
                   run made, counted from moto's request log (by method)

The tree is ~/.cache/keytrail/bench/gen-1m-seed1 by default (`keytrail gen TREE -n 1000000
--seed 1` makes it). moto keeps objects in memory, so its figures say what keytrail does (bytes
and requests), not how fast a real bucket is.
"""
import argparse
import collections
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from e2e import add_run_arguments, measure  # noqa: E402

REQUEST = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) ')


def start_moto(python, log):
    root = Path(__file__).resolve().parent.parent
    server = subprocess.Popen(
        [python, str(root / "tests/s3/moto_s3.py"), "--bucket", "lake", "--log-requests"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(log, "w"),
    )
    line = ""
    while not line.startswith("ready "):  # moto says more on stdout when verbose
        line = server.stdout.readline().decode()
        if not line:
            break
    fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
    if not line.startswith("ready "):
        sys.exit(f"moto did not start: {line!r}\n{Path(log).read_text()}")
    return server, fields["endpoint"]


def requests_since(log, offset):
    text = Path(log).read_text()[offset:]
    return collections.Counter(m.group(1) for m in REQUEST.finditer(text)), len(Path(log).read_text())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    parser.add_argument("--baseline")
    parser.add_argument("--s3-python", help="python with moto (the s3 test virtualenv); without it, no S3 contender")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="keytrail-lake-"))
    log = work / "moto.log"
    server = endpoint = None
    if args.s3_python:
        server, endpoint = start_moto(args.s3_python, log)
    env = dict(os.environ)
    env.update({
        "AWS_ENDPOINT_URL": endpoint or "", "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
    })
    common = ["--progress", "off", "-q", "--json", "-j", str(args.threads)]
    contenders = []
    if args.baseline:
        contenders.append(("baseline local", lambda i: [args.baseline, "convert", args.tree, "-o", str(work / f"base-{i}")] + common))
    contenders.append(("keytrail local", lambda i: [args.keytrail, "convert", args.tree, "-o", str(work / f"local-{i}")] + common))
    if server:
        contenders.append(("keytrail s3", lambda i: [args.keytrail, "convert", args.tree, "-o", f"s3://lake/run-{i}"] + common))

    results = collections.defaultdict(list)
    requests = []
    rows = {}
    offset = 0
    try:
        for i in range(args.repeat):
            for name, command in contenders:
                os.environ.update(env)
                seconds, rss, stdout, cpu = measure(command(i))
                summary = json.loads(stdout)
                results[name].append((seconds, rss, cpu))
                rows.setdefault(name, set()).add((summary["events_read"], summary["rows_written"]))
                if name == "keytrail s3":
                    counted, offset = requests_since(log, offset)
                    requests.append(counted)
                for out in work.glob(f"*-{i}"):
                    shutil.rmtree(out, ignore_errors=True)
    finally:
        if server:
            server.stdin.close()
            server.wait(timeout=30)

    events = next(iter(rows["keytrail local"]))[0]
    if len({r for runs in rows.values() for r in runs}) != 1:
        sys.exit(f"the contenders disagree on (events read, rows written): {rows}")
    print(f"tree {args.tree} ({events:,} events), {args.threads} threads, median of {args.repeat}; "
          f"every run read and wrote the same (events, rows): {next(iter(rows['keytrail local']))}")
    reference = statistics.median(s for s, _, _ in results["keytrail local"])
    for name, runs in results.items():
        seconds = statistics.median(s for s, _, _ in runs)
        rss = max(r for _, r, _ in runs)
        cpu = statistics.median(c for _, _, c in runs)
        print(f"{name:16} {seconds:6.2f} s  {events / seconds:9,.0f} events/s  {cpu / events * 1e6:5.2f} CPU µs/event"
              f"  peak RSS {rss:5.0f} MiB  ({seconds / reference:.2f}x keytrail local)")
    if requests:
        print("S3 requests per run: " + "; ".join(
            ", ".join(f"{k} {v}" for k, v in sorted(r.items())) + f" (total {sum(r.values())})" for r in requests))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
