#!/usr/bin/env bash
# Runs every test of the workspace (unit, property, test-vector, CLI and end-to-end tests).
# End-to-end tests read the shared data sets in ../shared (beside the repository).
set -euo pipefail
cd "$(dirname "$0")/.."
# The report test looks at report.html in headless Chromium (installed if missing).
./scripts/chromium.sh >/dev/null
cargo test --workspace --locked "$@"
