#!/usr/bin/env python3
"""Runs a command and reports its wall time and peak RSS (of the process and its children).

usage: peak.py COMMAND [ARGS...]
"""
import os
import subprocess
import sys
import time

started = time.perf_counter()
process = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(process.pid, 0)
elapsed = time.perf_counter() - started
code = os.waitstatus_to_exitcode(status)
print(f"wall {elapsed:.2f} s, peak RSS {usage.ru_maxrss / 1024:.0f} MiB, exit {code}", file=sys.stderr)
sys.exit(code)
