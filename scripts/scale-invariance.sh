#!/usr/bin/env bash
# Scale invariance of the scored model (issue 14; SPEC.md §9.3): one synthetic population of
# N records per holder, linked with the model trained on record samples of 10k, 30k, 100k and
# N records per holder (`[scoring] train_records`); prints λ, the m of the name and birth-date
# levels and the true precision/recall of each run, and the largest relative difference of λ
# and of each m against the full-population fit.
#
# Usage: scripts/scale-invariance.sh [N] [SEED] [SCHEMA]
#   N defaults to 300000, SEED to 11, SCHEMA to schemas/jp-person.toml.
# Environment: RENKETSU (binary; default target/release/renketsu, or $CARGO_TARGET_DIR's),
#   WORK (scratch directory, kept; default a temporary one, removed at the end; a WORK that
#   already holds pop/synth_*.csv reuses that population).
set -euo pipefail
N=${1:-300000}
SEED=${2:-11}
SCHEMA=${3:-schemas/jp-person.toml}
BIN=${RENKETSU:-${CARGO_TARGET_DIR:-target}/release/renketsu}
if [ -z "${WORK:-}" ]; then
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
fi
mkdir -p "$WORK"
export RENKETSU_KEY_STORE="$WORK/keys"
"$BIN" keys init --project scale --if-missing >/dev/null 2>&1
[ -f "$WORK/pop/synth_truth.csv" ] || "$BIN" synth --out "$WORK/pop" --records "$N" --seed "$SEED" >/dev/null
for T in 10000 30000 100000 "$N"; do
  S="$WORK/schema-$T.toml"
  # train_records goes right under the [scoring] header.
  awk -v t="$T" '{print} /^\[scoring\]$/ {print "train_records = " t}' "$SCHEMA" > "$S"
  O="$WORK/out-$T"
  "$BIN" link -q --project scale --today 2026-12-07 --schema "$S" \
    --input a="$WORK/pop/synth_a.csv" --input b="$WORK/pop/synth_b.csv" --out "$O" >/dev/null
  "$BIN" eval --json --pairs "$O/pairs.csv" --truth "$WORK/pop/synth_truth.csv" > "$O/eval.json"
done
python3 - "$WORK" "$N" <<'PY'
import json, sys
work, n = sys.argv[1], sys.argv[2]
runs = [10000, 30000, 100000, int(n)]
rows = {}
for t in runs:
    s = json.load(open(f"{work}/out-{t}/summary.json"))["scoring"]
    e = json.load(open(f"{work}/out-{t}/eval.json"))
    m = {}
    for c in s["comparisons"]:
        if c["name"] in ("name", "birth_date"):
            for i, l in enumerate(c["levels"]):
                if l["m"] is not None:
                    m[f'{c["name"]}[{i}]'] = l["m"]
    tr = s.get("training") or {}
    rows[t] = dict(prior=s["prior"], m=m, p=e["precision"], r=e["recall"], f1=e["f1"],
                   sample=tr.get("records"))
ref = rows[int(n)]
print(f"| train records per holder | sampled | λ | max rel. Δ of m (name, birth date levels with m ≥ 0.01) | precision | recall | F1 |")
print("|---|---|---|---|---|---|---|")
worst_l = worst_m = worst_p = 0.0
for t in runs:
    r = rows[t]
    dl = abs(r["prior"] / ref["prior"] - 1)
    dm = max(abs(r["m"][k] / ref["m"][k] - 1) for k in ref["m"] if ref["m"][k] >= 0.01)
    dp = abs(r["p"] - ref["p"])
    worst_l, worst_m, worst_p = max(worst_l, dl), max(worst_m, dm), max(worst_p, dp)
    print(f'| {t:,} | {r["sample"] or "all"} | {r["prior"]:.4e} ({dl:+.2%}) | {dm:.2%} | {r["p"]:.4f} | {r["r"]:.4f} | {r["f1"]:.4f} |')
print()
print("m by level:", " ".join(ref["m"].keys()))
for t in runs:
    print(f"{t:>8}", " ".join(f'{rows[t]["m"][k]:.4f}' for k in ref["m"]))
print()
ok = worst_l <= 0.05 and worst_m <= 0.05 and worst_p <= 0.005
print(f"largest relative Δλ {worst_l:.2%}, Δm {worst_m:.2%}, Δprecision {worst_p:.4f}:",
      "scale invariant (≤ 5 %, ≤ 0.005)" if ok else "NOT within 5 % / 0.005")
PY
