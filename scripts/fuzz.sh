#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ (libFuzzer through cargo-fuzz) for a set time each.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60 s, every target)
#   FUZZ_RUNS=1000000 scripts/fuzz.sh 300 token_file     (stop after that many inputs)
#
# Works on a fresh machine with only the stable Rust toolchain: installs cargo-fuzz from
# crates.io when it is missing (into ~/.cargo/bin), builds without a sanitizer
# (`--sanitizer none`: AddressSanitizer needs a nightly toolchain, which a fresh machine does
# not have) and sets RUSTC_BOOTSTRAP=1 so that cargo-fuzz's nightly-only flags are accepted
# by the stable compiler. Coverage instrumentation (SanitizerCoverage) and libFuzzer's own
# checks stay on: a panic, a time-out (-timeout) or memory above -rss_limit_mb is a finding.
# Seeds come from the repository (schemas, samples); the corpus and findings go under
# fuzz/corpus/ and fuzz/artifacts/ (not committed). Exits non-zero on the first finding.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
shift || true
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-fuzz/target}/fuzz}"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz (crates.io)"
    cargo install cargo-fuzz --locked
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi

seed() { # seed TARGET FILE...: copy files into the target's corpus, once
    local dir="fuzz/corpus/$1"
    shift
    mkdir -p "$dir"
    for f in "$@"; do
        [ -f "$f" ] && cp -n "$f" "$dir/seed-$(basename "$f")"
    done
    return 0
}
seed schema_toml schemas/*.toml
seed lu_create_project /dev/null
for f in samples/jp_a.csv samples/multi/ehr.csv; do
    # csv_rows: first byte picks the encoding (2 = auto) and whether a header is put first.
    mkdir -p fuzz/corpus/csv_rows
    { printf '\002'; head -c 2000 "$f"; } >"fuzz/corpus/csv_rows/seed-$(basename "$f")"
done
seed token_file fuzz/seeds/token_file/*
seed content_file fuzz/seeds/content_file/*
seed clkhash_schema ../shared/vectors/clkhash/*/schema.json

echo "== building fuzz targets (stable toolchain, --sanitizer none)"
cargo fuzz build --fuzz-dir fuzz --sanitizer none
for t in "${targets[@]}"; do
    echo "== fuzz $t for ${secs}s"
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    log="fuzz/artifacts/$t/last-run.log"
    if ! cargo fuzz run --fuzz-dir fuzz --sanitizer none "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        ${FUZZ_RUNS:+-runs="$FUZZ_RUNS"} -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz $t: FINDING (inputs in fuzz/artifacts/$t/)"
        exit 1
    fi
    # The final stats: inputs executed, speed, coverage.
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -n 1 || echo '')
    took=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | tail -n 1 || true)
    echo "fuzz $t: ok, $runs inputs (${took:-time limit ${secs}s}), $cov"
done
