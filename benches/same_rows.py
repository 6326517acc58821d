#!/usr/bin/env python3
"""Checks that two keytrail datasets hold the same rows, column for column.

usage: same_rows.py DATASET_A DATASET_B

Each dataset's Parquet files are read with pyarrow (partition columns from the directory names),
every row is turned into a canonical JSON text, and the two multisets are compared; the files'
own order is compared too (the rows of each file, file by file, sorted by path). Exits 1 on a
difference, naming the first rows that differ.
"""
import collections
import json
import os
import sys

import pyarrow.parquet as pq


def files(root):
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
        for name in sorted(filenames):
            if name.endswith(".parquet") and not name.startswith((".", "_")):
                found.append(os.path.join(dirpath, name))
    return sorted(found)


def rows(root):
    """(partition directory, canonical row text) for every row, in file order."""
    out = []
    for path in files(root):
        partition = os.path.relpath(os.path.dirname(path), root)
        for row in pq.read_table(path).to_pylist():
            out.append((partition, json.dumps(row, sort_keys=True, default=str)))
    return out


def main():
    a, b = sys.argv[1], sys.argv[2]
    rows_a, rows_b = rows(a), rows(b)
    counts_a, counts_b = collections.Counter(rows_a), collections.Counter(rows_b)
    if counts_a != counts_b:
        only_a = list((counts_a - counts_b).elements())[:3]
        only_b = list((counts_b - counts_a).elements())[:3]
        print(f"DIFFERENT: {len(rows_a)} rows in {a}, {len(rows_b)} in {b}")
        for partition, row in only_a:
            print(f"  only in A ({partition}): {row[:300]}")
        for partition, row in only_b:
            print(f"  only in B ({partition}): {row[:300]}")
        return 1
    order = "same order" if rows_a == rows_b else "same rows, in another order"
    partitions = len({p for p, _ in rows_a})
    print(f"SAME: {len(rows_a)} rows in {partitions} partitions, every column equal ({order})")
    return 0 if rows_a == rows_b else 1


if __name__ == "__main__":
    sys.exit(main())
