#!/usr/bin/env bash
# Runs every test of the workspace (unit, property, test-vector, CLI and end-to-end tests).
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
cargo test --workspace --locked "$@"
