#!/usr/bin/env bash
# Builds the renketsu Python package (python/, PyO3 + maturin) into a wheel, installs it into a
# project venv and runs its pytest suite: the API on samples/, equality with `renketsu link`
# on ../shared/data, renketsu.spark in local[2]. The venv lives under the cargo target
# directory and is rebuilt only when python/requirements-test.txt changes (pip from PyPI; no
# manual set-up). Extra arguments go to pytest. Called by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
venv="$target/py-venv"
req=python/requirements-test.txt
stamp="$(sha256sum "$req" | cut -d' ' -f1)"
if [[ "$(cat "$venv/.requirements" 2>/dev/null)" != "$stamp" ]]; then
    rm -rf "$venv"
    "${PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
    echo "$stamp" >"$venv/.requirements"
fi
# Spark (python/tests/test_spark.py) needs Java 17+: the Debian package if `java` is missing
# (needs root or sudo only then).
if ! command -v java >/dev/null 2>&1; then
    echo "scripts/python.sh: installing the Debian package openjdk-17-jre-headless" >&2
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq >&2
    $SUDO apt-get install -y -qq openjdk-17-jre-headless >&2
fi
# The CLI the tests compare with, with the feature set of scripts/test.sh's `cargo test` (a
# no-op after it).
cargo build --locked --quiet --workspace --exclude renketsu-python --features renketsu-cli/parquet
rm -rf "$target/wheels"
"$venv/bin/maturin" build --quiet --locked -m python/Cargo.toml -i "$venv/bin/python" \
    -o "$target/wheels"
"$venv/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps \
    "$target"/wheels/renketsu-*.whl
# The release the Rust end-to-end test fetched with --format parquet (cargo test's
# CARGO_TARGET_TMPDIR), for test_release_parquet.py.
RENKETSU_RELEASE_PARQUET="$target/tmp/release-parquet" \
RENKETSU_BIN="$target/debug/renketsu" "$venv/bin/python" -m pytest -q python/tests "$@"
