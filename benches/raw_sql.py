#!/usr/bin/env python3
"""SQL straight over raw logs: a full-scan aggregate over the generated tree, against
`keytrail convert` of the same tree and DuckDB `read_json` over the same files, same run.

usage: raw_sql.py --keytrail BIN [--duckdb-python PY] [--tree DIR] [--threads T] [--repeat R]

Contenders, each its own process (wall time, CPU time and peak RSS from wait4), alternating:
  keytrail sql      keytrail sql TREE "<aggregate>" (every file read, flattened, deduplicated)
  keytrail convert  keytrail convert TREE -o OUT -j T (the peer the issue names)
  duckdb            the same aggregate over read_json + unnest(Records), SET threads = T

The aggregate counts events by service and name and their distinct ids (it touches every row).
Answers of keytrail sql and DuckDB are compared. The tree is generated (`keytrail gen`) when
missing.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from e2e import add_run_arguments, measure, print_medians

QUERY = (
    "SELECT event_source, event_name, count(*) AS n, count(DISTINCT event_id) AS ids "
    "FROM events GROUP BY 1, 2 ORDER BY 1, 2"
)

DUCKDB_SCRIPT = r"""
import sys, duckdb
tree, threads = sys.argv[1], int(sys.argv[2])
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
con.execute("SET enable_progress_bar = false")
rows = con.execute(f'''
  WITH events AS (
    SELECT unnest(Records) AS e
    FROM read_json('{tree}/**/*.json.gz', maximum_object_size = 134217728)
  )
  SELECT e.eventSource, e.eventName, count(*) AS n, count(DISTINCT e.eventID) AS ids
  FROM events GROUP BY 1, 2 ORDER BY 1, 2
''').fetchall()
print("event_source,event_name,n,ids")
for row in rows:
    print(",".join(str(v) for v in row))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    parser.add_argument("--duckdb-python", default=os.path.expanduser("~/.cache/keytrail/bench-venv/bin/python"))
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()

    tree = Path(args.tree)
    if not tree.is_dir():
        print(f"generating {args.events:,} events into {tree} ...", file=sys.stderr)
        subprocess.run([args.keytrail, "gen", str(tree), "-n", str(args.events)], check=True)
    work = Path(tempfile.mkdtemp(prefix="keytrail-raw-sql-"))
    script = work / "duckdb_query.py"
    script.write_text(DUCKDB_SCRIPT)
    contenders = {
        "keytrail sql": lambda: [args.keytrail, "-q", "sql", str(tree), QUERY, "--format", "csv"],
        "keytrail convert": lambda: [args.keytrail, "-q", "convert", str(tree), "-o", str(work / "out"),
                                     "-j", str(args.threads), "--overwrite", "--progress", "off"],
        "duckdb": lambda: [args.duckdb_python, str(script), str(tree), str(args.threads)],
    }
    if not Path(args.duckdb_python).exists():
        del contenders["duckdb"]
        print(f"(no {args.duckdb_python}: DuckDB skipped)", file=sys.stderr)
    results = {name: [] for name in contenders}
    answers = {}
    for _ in range(args.repeat):
        for name, command in contenders.items():
            seconds, rss, stdout, cpu = measure(command())
            results[name].append((seconds, rss, cpu))
            answers[name] = stdout
    shutil.rmtree(work, ignore_errors=True)

    if "duckdb" in answers:
        ours = answers["keytrail sql"].strip().splitlines()[1:]
        theirs = answers["duckdb"].strip().splitlines()[1:]
        same = sorted(ours) == sorted(theirs)
        print(f"answers: keytrail sql and DuckDB {'agree' if same else 'DIFFER'} ({len(ours)} groups)")
    events = sum(int(line.split(",")[2]) for line in answers["keytrail sql"].strip().splitlines()[1:])
    print(f"tree: {tree} ({events:,} events), threads {args.threads}, median of {args.repeat}")
    medians = print_medians(results, events, width=17)
    sql = medians["keytrail sql"]
    print(f"  keytrail sql takes {sql / medians['keytrail convert']:.2f}x the time of keytrail convert")
    if "duckdb" in medians:
        print(f"  keytrail sql is {medians['duckdb'] / sql:.2f}x faster than DuckDB read_json")


if __name__ == "__main__":
    main()
