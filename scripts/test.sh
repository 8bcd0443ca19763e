#!/usr/bin/env bash
# Runs every test of the workspace (unit, property, test-vector, CLI and end-to-end tests),
# then the Python package's pytest suite (scripts/python.sh: wheel, venv, pytest).
# End-to-end tests read the shared data sets in ../shared (beside the repository).
# The custodian store suite also runs on PostgreSQL: scripts/postgres.sh starts (or reuses) a
# local server and we export its URL as RENKETSU_TEST_PG_URL (set it yourself to use another
# server). Under CI (CI set) a missing PostgreSQL is an error, not a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${RENKETSU_TEST_PG_URL:-}" ]]; then
    if url="$(./scripts/postgres.sh)"; then
        export RENKETSU_TEST_PG_URL="$url"
    elif [[ -n "${CI:-}" ]]; then
        echo "test.sh: PostgreSQL could not be started (required under CI)" >&2
        exit 1
    else
        echo "test.sh: warning: no PostgreSQL; the PostgreSQL store tests will be skipped" >&2
    fi
fi
# The report test looks at report.html in headless Chromium (installed if missing).
./scripts/chromium.sh >/dev/null
# The Python package is built by maturin (scripts/python.sh), not as a cargo test target.
# The CLI's off-by-default `parquet` feature is on, so that clients/tests/parquet_input.rs
# (link on Parquet equals link on the same CSVs) runs in the same build: one feature set,
# shared dependencies built once.
cargo test --workspace --exclude renketsu-python --features renketsu-cli/parquet --locked "$@"
./scripts/python.sh
