#!/usr/bin/env bash
# The main job on the shipped sample data, in embedded mode (no servers):
# make a project key, link two holders' Japanese person records, score against the truth.
# Outputs go to ./quickstart-out/ (the key store too; delete it to start over).
set -euo pipefail
cd "$(dirname "$0")/.."
renketsu() { cargo run --release --quiet -p renketsu-cli --bin renketsu -- "$@"; }
OUT=quickstart-out
export RENKETSU_KEY_STORE="$OUT/keys"
unset RENKETSU_KEK

renketsu keys init --project quickstart --if-missing
renketsu link --project quickstart --schema schemas/jp-person.toml \
  --input a=samples/jp_a.csv --input b=samples/jp_b.csv --out "$OUT/link"
echo "== linkage quality against samples/jp_truth.csv"
renketsu eval --pairs "$OUT/link/pairs.csv" --truth samples/jp_truth.csv
echo "== outputs in $OUT/link: pairs.csv clusters.csv joined.csv pair_scores.csv report.html rejects-*.csv summary.json"
