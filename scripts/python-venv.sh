#!/usr/bin/env bash
# Creates (or reuses) a virtualenv with the pinned packages of a requirements file and prints its
# python. The environment lives outside the repository, under ~/.cache/keytrail/<name>
# (KEYTRAIL_VENV_ROOT overrides ~/.cache/keytrail), and is rebuilt when the requirements change.
#
# usage: scripts/python-venv.sh REQUIREMENTS_FILE NAME
set -euo pipefail
requirements="$1"
venv="${KEYTRAIL_VENV_ROOT:-$HOME/.cache/keytrail}/$2"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"
# Tests run in parallel and may ask for the same environment at once: one creates it, the others
# wait for it (a second `python3 -m venv` on the same folder fails with "File exists").
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
    echo "$want" > "$stamp"
fi
echo "$venv/bin/python"
