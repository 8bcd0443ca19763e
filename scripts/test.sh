#!/usr/bin/env bash
# Runs every test of the workspace (unit, property, test-vector, CLI and end-to-end tests).
# End-to-end tests read the shared data sets in ../shared (beside the repository).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked "$@"
