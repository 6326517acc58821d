#!/usr/bin/env bash
# Creates (or reuses) the virtualenv with the interop readers and prints its python.
# KEYTRAIL_INTEROP_VENV overrides the location (default: a cache folder outside the repository).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${KEYTRAIL_INTEROP_VENV:-$HOME/.cache/keytrail/interop-venv}"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
    echo "$want" > "$stamp"
fi
echo "$venv/bin/python"
