#!/usr/bin/env bash
# Fault test of the linkage unit, 20 repetitions (issues 7, 15): SIGKILL during an upload, during
# a job and during a scored job, restart, and check that everything completes without lost or
# duplicated rows and with the links of `renketsu link`
# (tests/tests/linkage_unit_e2e.rs, linkage_unit_killed_during_upload_and_job_recovers).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p renketsu-cli --bin renketsu
RENKETSU_FAULT_REPS="${1:-20}" cargo test -q -p renketsu-e2e --test linkage_unit_e2e \
    linkage_unit_killed_during_upload_and_job_recovers -- --nocapture
