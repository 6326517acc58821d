#!/usr/bin/env python3
"""Rebuilds the derived fixtures in tests/data from ../shared/data/real (run from the repo root).

Two sources are not log files themselves, so their records are extracted, byte for byte:
  * aws-kms-developer-guide: each fenced ``` block of the Markdown pages becomes one file,
    exactly as written (broken JSON stays broken: those are bad-input cases).
  * streamalert: the EventBridge envelopes under `data` in the rule test cases become one NDJSON
    file (re-serialised compactly, one envelope per line).
Everything else is copied unmodified by `cp`, as SOURCE.md in each folder records.
"""
import json
import pathlib
import re
import sys

SHARED = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/real")
OUT = pathlib.Path("tests/data")

def kms_blocks():
    out = OUT / "aws-kms-developer-guide" / "events"
    out.mkdir(parents=True, exist_ok=True)
    for md in sorted((SHARED / "aws-kms-developer-guide" / "doc_source").glob("*.md")):
        text = md.read_text(encoding="utf-8")
        blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
        for i, block in enumerate(b for b in blocks if '"eventName"' in b or '"Records"' in b):
            (out / f"{md.stem}.{i}.json").write_text(block, encoding="utf-8")

def eventbridge():
    lines = []
    for f in sorted((SHARED / "streamalert" / "rules").rglob("*.json")):
        for case in json.loads(f.read_text(encoding="utf-8")):
            data = case.get("data")
            if isinstance(data, dict) and "detail-type" in data:
                lines.append(json.dumps(data, separators=(",", ":")))
    (OUT / "streamalert" / "eventbridge.ndjson").write_text("\n".join(lines) + "\n", encoding="utf-8")

if __name__ == "__main__":
    kms_blocks()
    eventbridge()
