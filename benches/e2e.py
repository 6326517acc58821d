#!/usr/bin/env python3
"""End-to-end conversion benchmark: keytrail against DuckDB and against the parse floor, same
generated tree, same thread count, same run.

usage: e2e.py --keytrail BIN --floor BIN [--tree DIR] [--events N] [--seed S] [--threads T]
              [--repeat R] [--skip-duckdb] [--work DIR]

Contenders, each run as its own process (wall time and peak RSS from wait4):
  floor gunzip   keytrail-floor --mode gunzip: read and decompress every file
  floor split    keytrail-floor --mode split: decompress + serde_json Vec<&RawValue> of Records
  keytrail       keytrail convert TREE -o OUT -j T (partitioned zstd Parquet, as users run it)
  keytrail baseline   (with --baseline BIN) an earlier build, for before/after in one run
  duckdb         read_json + unnest(Records) + COPY ... (FORMAT parquet, PARTITION_BY ...), the
                 way a user would write it, SET threads = T

The tree is generated with `keytrail gen` when missing. Each contender runs R times, alternating;
the median wall time is reported with events/s, MB/s (gzip input and JSON), peak RSS, and the
ratios keytrail/floor and keytrail/DuckDB.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DUCKDB_SCRIPT = r"""
import sys, duckdb
tree, out, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
con.execute("SET enable_progress_bar = false")
rows = con.execute(f'''
COPY (
  WITH events AS (
    SELECT unnest(Records) AS e
    FROM read_json('{tree}/**/*.json.gz', maximum_object_size = 134217728)
  )
  SELECT e.*, e.awsRegion AS region, CAST(CAST(e.eventTime AS TIMESTAMP) AS DATE) AS event_date
  FROM events
) TO '{out}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (region, event_date))
''').fetchone()[0]
print(rows)
"""


def measure(command, capture=True):
    """Runs a command; returns (seconds, peak RSS in MiB, stdout, CPU seconds: user + system)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE)
    stdout = process.stdout.read() if capture else b""
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(map(str, command))} failed:\n{stderr.decode(errors='replace')}")
    return seconds, usage.ru_maxrss / 1024, stdout.decode(), usage.ru_utime + usage.ru_stime


def add_run_arguments(parser):
    """The options every conversion benchmark takes: the keytrail binary, the generated tree, the
    thread count and the rounds."""
    parser.add_argument("--keytrail", required=True)
    parser.add_argument("--tree", default=os.path.expanduser("~/.cache/keytrail/bench/gen-1m-seed1"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--repeat", type=int, default=3)


def print_medians(results, events, width=17):
    """Prints each contender's median wall time, events/s, median CPU µs/event and highest peak
    RSS over its runs ((seconds, MiB, CPU seconds) each); returns the median wall times."""
    medians = {}
    for name, runs in results.items():
        seconds = statistics.median(r[0] for r in runs)
        medians[name] = seconds
        rss = max(r[1] for r in runs)
        cpu = statistics.median(r[2] for r in runs)
        print(f"  {name:{width}} {seconds:7.2f} s  {events / seconds:10,.0f} events/s  "
              f"{cpu / events * 1e6:6.2f} CPU µs/event  peak {rss:6.0f} MiB")
    return medians


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    parser.add_argument("--floor", required=True)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-duckdb", action="store_true")
    parser.add_argument("--baseline", help="another keytrail binary (an earlier build) to time in the same run")
    parser.add_argument("--work", default=None, help="scratch directory for outputs (default: beside the tree)")
    args = parser.parse_args()

    tree = Path(args.tree)
    if not tree.is_dir():
        print(f"generating {args.events:,} events into {tree} ...", file=sys.stderr)
        subprocess.run([args.keytrail, "gen", str(tree), "--events", str(args.events), "--seed", str(args.seed)], check=True)
    work = Path(tempfile.mkdtemp(prefix="keytrail-e2e-", dir=args.work or tree.parent))

    threads = str(args.threads)
    contenders = {
        "floor gunzip": lambda out: [args.floor, str(tree), "--mode", "gunzip", "--threads", threads],
        "floor split": lambda out: [args.floor, str(tree), "--mode", "split", "--threads", threads],
        "keytrail": lambda out: [args.keytrail, "convert", str(tree), "-o", str(out), "-j", threads,
                                 "--json", "--progress", "off"],
    }
    if args.baseline:
        contenders["keytrail baseline"] = lambda out: [args.baseline, "convert", str(tree), "-o", str(out), "-j", threads,
                                                       "--json", "--progress", "off"]
    if not args.skip_duckdb:
        contenders["duckdb"] = lambda out: [sys.executable, "-c", DUCKDB_SCRIPT, str(tree), str(out), threads]

    runs = {name: [] for name in contenders}
    facts = {}
    try:
        for round_ in range(args.repeat):
            for name, command in contenders.items():
                out = work / name.replace(" ", "-")
                shutil.rmtree(out, ignore_errors=True)
                seconds, rss, stdout, cpu = measure(command(out))
                runs[name].append((seconds, rss, cpu))
                if name.startswith("floor"):
                    report = json.loads(stdout)
                    facts["files"] = report["files"]
                    facts["gzip_bytes"] = report["compressed_bytes"]
                    facts["json_bytes"] = report["decompressed_bytes"]
                    if name == "floor split":
                        facts["events"] = report["records"]
                elif name.startswith("keytrail"):
                    summary = json.loads(stdout)
                    facts[f"{name}_rows"] = summary["rows_written"]
                else:
                    facts["duckdb_rows"] = int(stdout.split()[-1])
                shutil.rmtree(out, ignore_errors=True)
                print(f"round {round_ + 1} {name}: {seconds:.2f} s, {cpu:.2f} s CPU, {rss:.0f} MiB", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    events = facts["events"]
    counts = [facts[f"{name}_rows"] for name in runs if not name.startswith("floor")]
    if any(count != events for count in counts):
        sys.exit(f"row counts disagree: {facts}")
    median = {name: statistics.median(s for s, _, _ in r) for name, r in runs.items()}
    peak = {name: max(m for _, m, _ in r) for name, r in runs.items()}
    # CPU time is steadier than wall time on a shared machine: it is the work done, not the wait.
    cpu = {name: statistics.median(c for _, _, c in r) for name, r in runs.items()}
    eps = {name: events / median[name] for name in runs}

    print(f"tree: {tree} ({facts['files']:,} files, {events:,} events, "
          f"{facts['gzip_bytes'] / 2**20:.1f} MiB gzip, {facts['json_bytes'] / 2**20:.1f} MiB JSON); "
          f"threads {args.threads}; median of {args.repeat}")
    print()
    print("| contender | wall s | events/s | gzip MB/s | JSON MB/s | peak RSS MiB | keytrail / this "
          "| CPU s | CPU µs/event |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in runs:
        ratio = eps["keytrail"] / eps[name]
        print(f"| {name} | {median[name]:.2f} | {eps[name]:,.0f} | {facts['gzip_bytes'] / 1e6 / median[name]:.1f} "
              f"| {facts['json_bytes'] / 1e6 / median[name]:.1f} | {peak[name]:.0f} | {ratio:.2f} "
              f"| {cpu[name]:.2f} | {cpu[name] / events * 1e6:.2f} |")
    print()
    print(f"keytrail / floor split = {eps['keytrail'] / eps['floor split']:.2f} (target >= 0.40)")
    if "duckdb" in eps:
        print(f"keytrail / DuckDB      = {eps['keytrail'] / eps['duckdb']:.1f}x (target >= 10)")


if __name__ == "__main__":
    main()
