#!/usr/bin/env python3
"""Checks a local Delta table's log against the files on disk, independently of keytrail and of
any Delta library: replays the add and remove actions of _delta_log/ (a checkpoint, if any,
then the JSON commits after it) and fails loudly on any disagreement.

usage: check_delta_log.py TABLE [--rows N] [--list FILE]

Checks that every file the log says is live exists with the size the log gives and as many rows
(read from its Parquet footer) as its statistics say; that its partition values are the ones in
its Hive-style directories; that every data file on disk is either live or removed by a commit
(none is left over by a killed run); and, with --rows, the table's total rows. With --list, writes
the live files' paths (one per line) for other readers.
"""
import argparse
import json
import os
import sys
import urllib.parse

failures = []


def check(condition, message, quiet=False):
    """Prints the check (a passing per-file check only when not quiet) and records a failure."""
    if not condition or not quiet:
        print(f"{'ok  ' if condition else 'FAIL'} delta-log: {message}")
    if not condition:
        failures.append(message)


def replay(table):
    log = os.path.join(table, "_delta_log")
    live, removed = {}, set()
    start = -1
    last_checkpoint = os.path.join(log, "_last_checkpoint")
    if os.path.exists(last_checkpoint):
        import pyarrow.parquet as pq

        with open(last_checkpoint) as f:
            start = json.load(f)["version"]
        checkpoint = pq.read_table(os.path.join(log, f"{start:020d}.checkpoint.parquet")).to_pylist()
        for row in checkpoint:
            if row.get("add"):
                live[row["add"]["path"]] = row["add"]
            if row.get("remove"):
                removed.add(row["remove"]["path"])
    versions = sorted(
        int(name[:20]) for name in os.listdir(log) if name.endswith(".json") and name[:20].isdigit()
    )
    check(versions == list(range(versions[0], versions[-1] + 1)) if versions else False,
          f"commits {versions[:1]}..{versions[-1:]} have no gaps")
    for version in versions:
        if version <= start:
            continue
        with open(os.path.join(log, f"{version:020d}.json")) as f:
            for line in f:
                if not line.strip():
                    continue
                action = json.loads(line)
                if "add" in action:
                    live[action["add"]["path"]] = action["add"]
                    removed.discard(action["add"]["path"])
                elif "remove" in action:
                    live.pop(action["remove"]["path"], None)
                    removed.add(action["remove"]["path"])
    return live, removed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("table")
    parser.add_argument("--rows", type=int)
    parser.add_argument("--list")
    args = parser.parse_args()
    import pyarrow.parquet as pq

    live, removed = replay(args.table)
    total = 0
    for encoded, add in sorted(live.items()):
        path = urllib.parse.unquote(encoded)
        full = os.path.join(args.table, path)
        if not os.path.exists(full):
            check(False, f"{path}: live in the log but missing on disk")
            continue
        size = os.path.getsize(full)
        check(size == add["size"], f"{path}: {size} bytes on disk, {add['size']} in the log", quiet=True)
        rows = pq.ParquetFile(full).metadata.num_rows
        stats = json.loads(add.get("stats") or "{}")
        check(stats.get("numRecords") == rows, f"{path}: {rows} rows, numRecords {stats.get('numRecords')}", quiet=True)
        total += rows
        directories = dict(
            part.split("=", 1) for part in path.split("/")[:-1] if "=" in part
        )
        expected = {
            k: (None if v == "__HIVE_DEFAULT_PARTITION__" else urllib.parse.unquote(v))
            for k, v in directories.items()
        }
        check(add["partitionValues"] == expected,
              f"{path}: partition values {add['partitionValues']} match its directories", quiet=True)
    on_disk = set()
    for root, dirs, files in os.walk(args.table):
        dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
        for name in files:
            if name.endswith(".parquet"):
                on_disk.add(os.path.relpath(os.path.join(root, name), args.table).replace(os.sep, "/"))
    known = {urllib.parse.unquote(p) for p in live} | {urllib.parse.unquote(p) for p in removed}
    leftovers = sorted(on_disk - known)
    check(not leftovers, f"no data file outside the log ({len(leftovers)} found: {leftovers[:3]})")
    print(f"delta-log: {len(live)} live files, {len(removed)} removed, {total} rows")
    if args.rows is not None:
        check(total == args.rows, f"{total} rows live (expected {args.rows})")
    if args.list:
        with open(args.list, "w") as f:
            for encoded in sorted(live):
                f.write(os.path.join(args.table, urllib.parse.unquote(encoded)) + "\n")
    print(f"delta-log: {len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
