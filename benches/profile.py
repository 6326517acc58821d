#!/usr/bin/env python3
"""Where a conversion's CPU time goes, by pipeline stage: a sampled profile of one keytrail
convert run, each sample charged to the innermost stage on its call stack.

usage: profile.py --keytrail BIN [--baseline BIN] [--tree DIR] [--threads N] [--frequency HZ]

Runs `perf record --call-graph dwarf` on `keytrail convert TREE -o OUT -j N` (one worker by
default: stages of one thread, no waiting), then reads the stacks with `perf script`. A sample
belongs to the first stage whose pattern matches a frame, leaf first; kernel time spent for a
stage (page faults in its buffers) is charged to it too. Inlined frames are not resolved (perf's
addr2line pass over a 100 MB text takes many minutes): a function inlined into another is charged
to the stage of the one it is inlined into. With --baseline, both builds are
profiled on the same tree, one after the other, and printed side by side.

Needs `perf` (linux-perf) and a build with line tables (the release profile keeps them).
"""
import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile

# Leaf first: the first frame that matches one of these names the stage. Order matters where a
# frame could match two (zstd is called from parquet's writer).
STAGES = [
    ("write: zstd", r"ZSTD_|zstd_codec|HUF_|HIST_|FSE_"),
    ("write: parquet encoding", r"^<?parquet::"),
    ("write: sort", r"keytrail::write::sort|arrow_row|keytrail::write::merge"),
    ("write: gather (sorted copy)", r"interleave|keytrail::write::gather|arrow_select::take"),
    ("write: dedup", r"keytrail::write::dedup"),
    ("write: routing", r"keytrail::write::route"),
    ("flatten: unmapped", r"keytrail::flatten::unmapped"),
    # Finding each column's value and the unknown keys: per-column scans and a second walk before
    # the one walk of flatten/paths.rs.
    ("flatten: path lookups, unknown keys", r"Doc::lookup|keytrail::flatten::paths|collect_unknown"),
    ("flatten: KMS rules", r"keytrail::flatten::derive"),
    ("flatten: member parse", r"keytrail::flatten::parse_raw|keytrail::read::json"),
    ("flatten: columns", r"keytrail::flatten::"),
    ("read: top-level parse", r"TopFields|keytrail::read::classify"),
    ("read: split", r"keytrail::read::split"),
    ("read: gunzip", r"zlib_rs|flate2|inflate"),
    ("read: other", r"keytrail::read|keytrail::convert::input"),
    ("write: other", r"keytrail::write|keytrail::dataset"),
]
COMPILED = [(name, re.compile(pattern)) for name, pattern in STAGES]
FRAME = re.compile(r"\s*[0-9a-f]+\s+(.*?)(\+0x[0-9a-f]+)?\s+\(")


def stage_of(frames):
    for frame in frames:
        for name, pattern in COMPILED:
            if pattern.search(frame):
                return name
    return "other (start-up, threads, allocator)"


def profile(binary, tree, threads, frequency, work):
    out = os.path.join(work, "out")
    data = os.path.join(work, "perf.data")
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run(
        ["perf", "record", "-q", "-F", str(frequency), "--call-graph", "dwarf,32768", "-o", data, "--",
         binary, "convert", tree, "-o", out, "-j", str(threads), "--progress", "off", "-q"],
        check=True, stdout=subprocess.DEVNULL)
    script = subprocess.Popen(["perf", "script", "--no-inline", "-i", data], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, errors="replace")
    counts = collections.Counter()
    frames = []
    for line in script.stdout:
        if line.startswith(("\t", " ")) and line.strip():
            match = FRAME.match(line)
            if match:
                frames.append(match.group(1))
            continue
        if frames:
            counts[stage_of(frames)] += 1
            frames = []
    if frames:
        counts[stage_of(frames)] += 1
    script.wait()
    os.remove(data)
    shutil.rmtree(out, ignore_errors=True)
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keytrail", required=True)
    parser.add_argument("--baseline", help="an earlier build, profiled on the same tree")
    parser.add_argument("--tree", default=os.path.expanduser("~/.cache/keytrail/bench/gen-100k-seed1"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--frequency", type=int, default=1999)
    args = parser.parse_args()
    if shutil.which("perf") is None:
        sys.exit("perf is not installed (apt-get install linux-perf)")
    if not os.path.isdir(args.tree):
        subprocess.run([args.keytrail, "gen", args.tree, "-n", "100000", "--seed", "1", "-q"], check=True)
    builds = {"this build": args.keytrail}
    if args.baseline:
        builds = {"baseline": args.baseline, **builds}
    with tempfile.TemporaryDirectory(prefix="keytrail-profile-") as work:
        profiles = {name: profile(binary, args.tree, args.threads, args.frequency, work)
                    for name, binary in builds.items()}
    names = [name for name, _ in STAGES] + ["other (start-up, threads, allocator)"]
    # A sample stands for 1/frequency s of CPU: CPU ms per stage compare builds, shares compare
    # stages.
    header = "".join(f"{name + ' ms':>16}{'share':>8}" for name in profiles)
    print(f"{'stage':38}{header}")

    def row(label, counts):
        cells = "".join(f"{n * 1000 / args.frequency:16.0f}{n / max(1, sum(p.values())):8.1%}"
                        for n, p in zip(counts, profiles.values()))
        print(f"{label:38}{cells}")

    for stage in names:
        counts = [p[stage] for p in profiles.values()]
        if any(counts):
            row(stage, counts)
    for group in ("read", "flatten", "write"):
        row("= " + group, [sum(v for k, v in p.items() if k.startswith(group + ":")) for p in profiles.values()])
    row("= all", [sum(p.values()) for p in profiles.values()])


if __name__ == "__main__":
    main()
