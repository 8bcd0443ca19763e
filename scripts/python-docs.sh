#!/usr/bin/env bash
# Builds the HTML API reference of the renketsu Python package from its docstrings with pdoc
# (PyPI), into $CARGO_TARGET_DIR/python-docs (default target/python-docs; not committed).
# Uses the venv and wheel of scripts/python.sh (run that first, or this script builds the
# wheel itself); pdoc goes into that venv.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
venv="$target/py-venv"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import renketsu' 2>/dev/null; then
    ./scripts/python.sh -k test_api -q >/dev/null
fi
if ! "$venv/bin/python" -c 'import pdoc' 2>/dev/null; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check pdoc==16.0.0
fi
out="$target/python-docs"
rm -rf "$out"
"$venv/bin/python" -m pdoc --docformat restructuredtext -o "$out" renketsu renketsu.spark
echo "$out/index.html"
