#!/usr/bin/env bash
# Scale run: 1,000,000 x 1,000,000 synthetic Japanese records (`renketsu synth`, 500,000 true
# pairs) linked with schemas/jp-person-clk.toml plus Hamming-LSH candidates ([clk.lsh], SPEC.md
# §7.4) on top of its block recipes; prints wall time and peak RSS (/usr/bin/time -v), the load
# average, the CLK comparison counts of summary.json with the pairs completeness of the
# candidates (`link --truth`) and linkage quality (`renketsu eval`).
#
#   scripts/scale-1m.sh [RECORDS]      # default 1000000; data and outputs under $SCALE_DIR
#   LSH_BANDS=24 LSH_BITS=32 scripts/scale-1m.sh   # fixed LSH parameters instead of the
#                                                   # size-aware defaults
#
# SCALE_DIR defaults to /var/tmp/renketsu-scale (never the repository). BIN defaults to the
# release binary of CARGO_TARGET_DIR (or target/).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
DIR=${SCALE_DIR:-/var/tmp/renketsu-scale}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/renketsu}
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release -p renketsu-cli" >&2; exit 1; }
mkdir -p "$DIR"
if [ ! -s "$DIR/synth_truth.csv" ] || [ "$(($(wc -l < "$DIR/synth_a.csv") - 1))" != "$N" ]; then
  "$BIN" synth --out "$DIR" --records "$N"
fi
# A throwaway key store for the run (the project's CLK and token keys).
export RENKETSU_KEY_STORE=$DIR/keys
unset RENKETSU_KEK
"$BIN" keys init --project scale --if-missing
SCHEMA=$DIR/jp-person-clk-lsh.toml
# [clk.lsh] without bands / bits_per_band: chosen from the data (SPEC.md §7.4), unless
# LSH_BANDS / LSH_BITS set them.
{ cat schemas/jp-person-clk.toml; printf '\n[clk.lsh]\n'
  [ -n "${LSH_BANDS:-}" ] && printf 'bands = %s\n' "$LSH_BANDS"
  [ -n "${LSH_BITS:-}" ] && printf 'bits_per_band = %s\n' "$LSH_BITS"
  true; } > "$SCHEMA"
OUT=$DIR/out
rm -rf "$OUT"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
# The 1-minute load average every 15 s during the run (the machine is shared).
( while sleep 15; do cut -d' ' -f1 /proc/loadavg; done ) > "$DIR/load.log" &
SAMPLER=$!
trap 'kill "$SAMPLER" 2>/dev/null || true' EXIT
/usr/bin/time -v "$BIN" link -q --project scale --schema "$SCHEMA" --today 2026-11-22 \
  --input a="$DIR/synth_a.csv" --input b="$DIR/synth_b.csv" --out "$OUT" \
  --truth "$DIR/synth_truth.csv" 2> "$DIR/time.log"
grep -E "Elapsed|Maximum resident|User time|System time|Percent of CPU" "$DIR/time.log"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
sort -n "$DIR/load.log" | awk '{v[NR]=$1} END {if (NR) printf "load during (1-min, every 15 s): min %s, median %s, max %s\n", v[1], v[int((NR+1)/2)], v[NR]}'
python3 - "$OUT/summary.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
c = s.get("clk") or {}
print("clk:", json.dumps(c, sort_keys=True))
pc = c.get("pairs_completeness") or {}
print(f"pairs compared {c.get('pairs_compared')}, reduction ratio {c.get('reduction_ratio')}, "
      f"pairs completeness {pc.get('ratio')} ({pc.get('candidates')} of {pc.get('true_pairs')} true pairs)")
print("timings_ms:", json.dumps(s.get("timings_ms"), sort_keys=True))
EOF
"$BIN" eval --pairs "$OUT/pairs.csv" --truth "$DIR/synth_truth.csv"
