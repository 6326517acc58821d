#!/usr/bin/env python3
"""Compaction speed: `keytrail compact` of a table of small files, beside DuckDB rewriting the
same files (each partition's files read, sorted the same way, written as one zstd Parquet file)
and beside converting the tree again, same run.

usage: compact.py --keytrail BIN [--tree DIR] [--small-file-size SIZE] [--repeat R]
                  [--duckdb-python PYTHON] [--threads T]

The table is made once from the tree (`keytrail convert --target-file-size SIZE`, default 2MiB:
the shape hourly incremental runs leave) and copied afresh for every compaction. Contenders run
R times, alternating, each its own process (wall time, CPU time and peak RSS from wait4);
medians are reported, with MB/s of Parquet read and events/s.
"""
import argparse
import collections
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from e2e import add_run_arguments, measure  # noqa: E402

DUCKDB_REWRITE = r"""
import sys, duckdb
from pathlib import Path
table, out = Path(sys.argv[1]), Path(sys.argv[2])
con = duckdb.connect()
con.execute(f"SET threads = {int(sys.argv[3])}")
for partition in sorted({p.parent for p in table.rglob('*.parquet') if not any(part.startswith(('_', '.')) for part in p.relative_to(table).parts)}):
    target = out / partition.relative_to(table)
    target.mkdir(parents=True, exist_ok=True)
    con.execute(f"COPY (SELECT * FROM read_parquet('{partition}/*.parquet') ORDER BY event_time, event_id) "
                f"TO '{target}/part-0.parquet' (FORMAT parquet, COMPRESSION zstd)")
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    parser.add_argument("--small-file-size", default="2MiB")
    parser.add_argument("--duckdb-python", help="python with duckdb (the bench virtualenv); without it, no DuckDB contender")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="keytrail-compact-"))
    source = work / "small"
    measure([args.keytrail, "convert", args.tree, "-o", str(source), "--target-file-size", args.small_file_size,
             "--progress", "off", "-q", "--json", "-j", str(args.threads)])
    info = json.loads(measure([args.keytrail, "info", str(source), "--json"])[2])
    print(f"table of {info['rows']:,} rows in {info['files']:,} files ({info['bytes'] / 2**20:.1f} MiB), "
          f"{len(info['partitions'])} partitions; {args.threads} threads, median of {args.repeat}")

    def compact(i):
        table = work / f"table-{i}"
        shutil.copytree(source, table)
        return [args.keytrail, "compact", str(table), "--json"]

    contenders = [("keytrail compact", compact)]
    if args.duckdb_python:
        contenders.append(("duckdb rewrite", lambda i: [args.duckdb_python, "-c", DUCKDB_REWRITE, str(source),
                                                        str(work / f"duck-{i}"), str(args.threads)]))
    contenders.append(("keytrail convert", lambda i: [args.keytrail, "convert", args.tree, "-o", str(work / f"convert-{i}"),
                                                      "--progress", "off", "-q", "--json", "-j", str(args.threads)]))
    results = collections.defaultdict(list)
    for i in range(args.repeat):
        for name, command in contenders:
            seconds, rss, stdout, cpu = measure(command(i))
            results[name].append((seconds, rss, cpu))
            if name == "keytrail compact":
                summary = json.loads(stdout)
                rows = sum(p["rows"] for p in summary["compacted"])
                if rows != info["rows"] and len(summary["compacted"]) == len(info["partitions"]):
                    sys.exit(f"compaction wrote {rows} rows of {info['rows']}")
                files_after = sum(p["files_after"] for p in summary["compacted"])
            for out in work.glob(f"*-{i}"):
                shutil.rmtree(out, ignore_errors=True)
    megabytes = info["bytes"] / 1e6
    reference = statistics.median(s for s, _, _ in results["keytrail compact"])
    print(f"compaction: {info['files']:,} files into {files_after:,}")
    for name, runs in results.items():
        seconds = statistics.median(s for s, _, _ in runs)
        rss = max(r for _, r, _ in runs)
        cpu = statistics.median(c for _, _, c in runs)
        rate = f"{megabytes / seconds:6.1f} MB/s of Parquet" if name != "keytrail convert" else " " * 20
        print(f"{name:17} {seconds:6.2f} s  {rate}  {info['rows'] / seconds:9,.0f} events/s  "
              f"{cpu / info['rows'] * 1e6:5.2f} CPU µs/event  peak RSS {rss:5.0f} MiB  ({seconds / reference:.2f}x compact)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
