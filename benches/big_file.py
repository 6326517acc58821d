#!/usr/bin/env python3
"""One big `{"Records":[...]}` file (as CloudTrail Lake exports and concatenated archives are),
converted on 1 thread and on T threads by the same build, same run.

usage: big_file.py --keytrail BIN [--baseline OLD_BIN] [--tree DIR] [--threads T] [--repeat R] [--plain]

The file is made once from the generated tree (`keytrail gen`, seed 1): every record of every
delivery file, in delivery order, in one gzip file (or plain JSON with --plain), kept under
~/.cache/keytrail/bench. Contenders, each its own process (wall time, CPU time and peak RSS from
wait4), alternating:
  -j 1            keytrail convert FILE -o OUT -j 1 (one thread reads, splits and flattens)
  -j T            keytrail convert FILE -o OUT -j T (helper threads flatten the records)
  baseline -j T   the --baseline build, -j T (before helpers: one worker flattens a file)
The rows written are compared.
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from e2e import add_run_arguments, measure, print_medians


def build_file(tree: Path, target: Path, plain: bool):
    files = sorted((p for p in tree.rglob("*.json.gz")), key=lambda p: (p.name.split("_")[3], p.name))
    part = target.with_suffix(".part")
    opener = open if plain else (lambda path, mode: gzip.open(path, mode, compresslevel=6))
    with opener(part, "wb") as out:
        out.write(b'{"Records":[')
        first = True
        for path in files:
            text = gzip.decompress(path.read_bytes())
            body = text[text.index(b"[") + 1 : text.rindex(b"]")].strip()
            if not body:
                continue
            if not first:
                out.write(b",")
            out.write(body)
            first = False
        out.write(b"]}")
    part.rename(target)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    parser.add_argument("--baseline")
    parser.add_argument("--plain", action="store_true", help="plain JSON instead of gzip")
    args = parser.parse_args()

    tree = Path(args.tree)
    if not tree.is_dir():
        sys.exit(f"{tree}: no generated tree (keytrail gen {tree} -n 1000000)")
    name = "one-records-file.json" if args.plain else "one-records-file.json.gz"
    big = Path(os.path.expanduser("~/.cache/keytrail/bench")) / name
    if not big.exists():
        print(f"making {big} from {tree} ...", file=sys.stderr)
        build_file(tree, big, args.plain)
    work = Path(tempfile.mkdtemp(prefix="keytrail-big-file-"))

    def convert(binary, threads):
        return [binary, "-q", "convert", str(big), "-o", str(work / "out"), "-j", str(threads),
                "--overwrite", "--progress", "off", "--json"]

    contenders = {"-j 1": convert(args.keytrail, 1), f"-j {args.threads}": convert(args.keytrail, args.threads)}
    if args.baseline:
        contenders[f"baseline -j {args.threads}"] = convert(args.baseline, args.threads)
    results = {name: [] for name in contenders}
    rows = {}
    for _ in range(args.repeat):
        for name, command in contenders.items():
            seconds, rss, stdout, cpu = measure(command)
            results[name].append((seconds, rss, cpu))
            rows[name] = json.loads(stdout)["rows_written"]
    events = rows["-j 1"]
    print(f"rows: {rows} ({'agree' if len(set(rows.values())) == 1 else 'DIFFER'})")
    print(f"file: {big} ({big.stat().st_size / 2**20:,.0f} MiB, {events:,} events), median of {args.repeat}")
    medians = print_medians(results, events, width=16)
    many = f"-j {args.threads}"
    print(f"  -j {args.threads} is {medians['-j 1'] / medians[many]:.2f}x faster than -j 1")
    if args.baseline:
        base = f"baseline -j {args.threads}"
        print(f"  -j {args.threads} is {medians[base] / medians[many]:.2f}x faster than the baseline's -j {args.threads}")


if __name__ == "__main__":
    main()
