#!/usr/bin/env python3
"""The Python package against the CLI on the same generated tree, same run: `keytrail.read`
streaming every batch, Spark local[T] flatten + Parquet write (`keytrail.spark.convert`), and
`keytrail convert`.

usage: python.py --keytrail BIN --python PY [--tree DIR] [--threads T] [--repeat R]

PY is a virtualenv's python with a release build of the package and PySpark:
    scripts/python-venv.sh tests/interop/requirements.txt bench-python-venv
    PATH=~/.cache/keytrail/bench-python-venv/bin:$PATH ~/.cache/keytrail/bench-python-venv/bin/python \
        -m pip install --no-build-isolation --no-deps --force-reinstall ./python

Contenders, each its own process tree (wall time; CPU time and peak RSS summed over the process and
its descendants, sampled from /proc every 0.1 s: Spark's JVM and Python workers count), alternating:
  keytrail convert   keytrail convert TREE -o OUT -j T
  keytrail.read      keytrail.read(TREE, threads=T), every batch pulled, rows counted
  spark, copies kept the same with drop_copies=False (copies dropped only within a task: no shuffle)
  spark flatten      SparkSession local[T] (JVM start included): binaryFile, keytrail.spark.flatten
                     (copies dropped across tasks: a shuffle), Parquet partitioned by region and
                     event_date with Spark's writer (keytrail.spark.convert adds a second pass
                     over the files for the quarantine)
The rows each gives are compared.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from e2e import add_run_arguments, print_medians

READ_SCRIPT = r"""
import sys, keytrail
reader = keytrail.read(sys.argv[1], threads=int(sys.argv[2]))
rows = sum(batch.num_rows for batch in reader)
print(rows)
"""

SPARK_SCRIPT = r"""
import os, sys
os.environ["PYSPARK_PYTHON"] = sys.executable
from pyspark.sql import SparkSession
import pyarrow.dataset as ds
import keytrail.spark
tree, out, threads, drop_copies = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "drop"

spark = (SparkSession.builder.master(f"local[{threads}]").config("spark.ui.enabled", "false")
         .config("spark.driver.memory", "2g").config("spark.sql.shuffle.partitions", str(threads * 4))
         .getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
files = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(tree)
keytrail.spark.flatten(files, drop_copies=drop_copies).write.mode("overwrite").partitionBy("region", "event_date").parquet(out)
spark.stop()
print(ds.dataset(out, format="parquet", partitioning="hive").count_rows())
"""


def descendants(root):
    """The pids of `root` and all its descendants now."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def measure_tree(command):
    """Runs a command; returns (seconds, peak RSS of its process tree in MiB, stdout, CPU seconds
    of the tree)."""
    page = os.sysconf("SC_PAGE_SIZE")
    ticks = os.sysconf("SC_CLK_TCK")
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    cpu_seen = {}
    peak = 0
    out = []
    reader = __import__("threading").Thread(target=lambda: out.append(process.stdout.read()))
    reader.start()
    errors = []
    error_reader = __import__("threading").Thread(target=lambda: errors.append(process.stderr.read()))
    error_reader.start()
    while process.poll() is None:
        rss = 0
        for pid in descendants(process.pid):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                rss += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
            except (OSError, IndexError):
                continue
            cpu_seen[pid] = (int(stat[11]) + int(stat[12])) / ticks
        peak = max(peak, rss)
        time.sleep(0.1)
    reader.join()
    error_reader.join()
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        sys.exit(f"{' '.join(map(str, command))} failed:\n{errors[0].decode(errors='replace')}")
    return seconds, peak / 2**20, out[0].decode(), sum(cpu_seen.values())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    parser.add_argument("--python", default=os.path.expanduser("~/.cache/keytrail/bench-python-venv/bin/python"))
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()

    tree = Path(args.tree)
    if not tree.is_dir():
        print(f"generating {args.events:,} events into {tree} ...", file=sys.stderr)
        subprocess.run([args.keytrail, "gen", str(tree), "-n", str(args.events)], check=True)
    work = Path(tempfile.mkdtemp(prefix="keytrail-python-bench-"))
    (work / "read.py").write_text(READ_SCRIPT)
    (work / "spark.py").write_text(SPARK_SCRIPT)
    threads = str(args.threads)
    contenders = {
        "keytrail convert": [args.keytrail, "-q", "convert", str(tree), "-o", str(work / "cli"),
                             "-j", threads, "--overwrite", "--progress", "off", "--json"],
        "keytrail.read": [args.python, str(work / "read.py"), str(tree), threads],
        "spark flatten": [args.python, str(work / "spark.py"), str(tree), str(work / "spark"), threads, "drop"],
        "spark, copies kept": [args.python, str(work / "spark.py"), str(tree), str(work / "spark"), threads, "keep"],
    }
    results = {name: [] for name in contenders}
    rows = {}
    for _ in range(args.repeat):
        for name, command in contenders.items():
            seconds, rss, stdout, cpu = measure_tree(command)
            results[name].append((seconds, rss, cpu))
            text = stdout.strip().splitlines()[-1]
            rows[name] = json.loads(text)["rows_written"] if name == "keytrail convert" else int(text)
    shutil.rmtree(work, ignore_errors=True)

    events = rows["keytrail convert"]
    agree = len(set(rows.values())) == 1
    print(f"rows: {rows} ({'agree' if agree else 'DIFFER'})")
    print(f"tree: {tree} ({events:,} events), threads {args.threads}, median of {args.repeat}")
    medians = print_medians(results, events, width=17)
    cli = medians["keytrail convert"]
    for name in ["keytrail.read", "spark flatten", "spark, copies kept"]:
        print(f"  {name} takes {medians[name] / cli:.2f}x the time of keytrail convert")


if __name__ == "__main__":
    main()
