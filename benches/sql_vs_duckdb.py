#!/usr/bin/env python3
"""Latency of typical KMS investigations: `keytrail sql` against DuckDB, same Parquet, same run.

usage: sql_vs_duckdb.py DATASET_DIR KEYTRAIL_BINARY [--repeat N]

keytrail is timed as a user runs it (the whole `keytrail sql DIR "..." --format csv` process:
open the dataset, plan, scan, print). DuckDB is timed in-process (connect, create the views over
read_parquet(..., hive_partitioning = true), run, fetch), so it is spared its own start-up.
Each query runs N times per engine, alternating; the median is reported.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

import duckdb

QUERIES = {
    "key-usage (one key, one day)": """
        SELECT coalesce(user_identity_arn, user_identity_invoked_by) AS principal, source_ip_address,
               event_name, count(*) AS calls, count(error_code) AS failed
        FROM kms_events
        WHERE kms_key_arn = '{key}'
          AND event_time >= TIMESTAMP '2025-01-01 00:00:00' AND event_time < TIMESTAMP '2025-01-02 00:00:00'
        GROUP BY 1, 2, 3 ORDER BY calls DESC, principal, source_ip_address, event_name""",
    "failed KMS calls by principal": """
        SELECT coalesce(user_identity_arn, user_identity_invoked_by) AS principal, error_code, event_name,
               count(*) AS failures
        FROM kms_events WHERE error_code IS NOT NULL
        GROUP BY 1, 2, 3 ORDER BY failures DESC, principal, error_code, event_name""",
    "KMS calls per day and operation": """
        SELECT CAST(event_time AS DATE) AS day, event_name, count(*) AS calls
        FROM kms_events GROUP BY 1, 2 ORDER BY 1, 3 DESC, 2""",
}


def duckdb_connection(dataset, threads):
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    con.execute(
        f"CREATE VIEW events AS SELECT * FROM read_parquet('{dataset}/**/*.parquet', hive_partitioning = true)"
    )
    con.execute("CREATE VIEW kms_events AS SELECT * FROM events WHERE event_source = 'kms.amazonaws.com'")
    return con


def time_keytrail(binary, dataset, sql):
    started = time.perf_counter()
    result = subprocess.run(
        [binary, "sql", dataset, sql, "--format", "csv"], capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"keytrail failed: {result.stderr}")
    return elapsed, result.stdout.count("\n") - 1


def time_duckdb(dataset, sql, threads):
    started = time.perf_counter()
    rows = duckdb_connection(dataset, threads).execute(sql).fetchall()
    return time.perf_counter() - started, len(rows)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dataset")
    parser.add_argument("keytrail")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    dataset = os.path.abspath(args.dataset)
    key = duckdb_connection(dataset, args.threads).execute(
        "SELECT kms_key_arn FROM kms_events WHERE kms_key_arn IS NOT NULL "
        "GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1"
    ).fetchone()[0]
    rows_total = duckdb_connection(dataset, args.threads).execute("SELECT count(*) FROM events").fetchone()[0]
    print(f"dataset {dataset}: {rows_total:,} events; duckdb {duckdb.__version__}; {args.threads} threads; "
          f"median of {args.repeat}")
    print(f"{'query':34} {'keytrail ms':>12} {'duckdb ms':>10} {'keytrail/duckdb':>16}  rows")
    for name, template in QUERIES.items():
        sql = " ".join(template.format(key=key).split())
        ours, theirs = [], []
        for _ in range(args.repeat):
            elapsed, rows_ours = time_keytrail(args.keytrail, dataset, sql)
            ours.append(elapsed)
            elapsed, rows_theirs = time_duckdb(dataset, sql, args.threads)
            theirs.append(elapsed)
        if rows_ours != rows_theirs:
            sys.exit(f"{name}: keytrail returned {rows_ours} rows, duckdb {rows_theirs}")
        a, b = statistics.median(ours) * 1000, statistics.median(theirs) * 1000
        print(f"{name:34} {a:12.1f} {b:10.1f} {a / b:16.2f}  {rows_ours}")


if __name__ == "__main__":
    main()
