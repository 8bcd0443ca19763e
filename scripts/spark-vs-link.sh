#!/usr/bin/env bash
# Times renketsu.spark (local[2]) against the single-process `renketsu link` on the same
# token files: the two jp holders (../shared/data/jp, schemas/jp-person.toml), tokenized with a
# fresh local key store. Needs the venv and wheel of scripts/python.sh and the dev build of
# the CLI (`cargo build -p renketsu-cli`). Prints both wall times and whether the pairs are
# equal. Work files go to a temporary directory, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
R="$PWD"
T="${CARGO_TARGET_DIR:-$PWD/target}"
BIN="$T/debug/renketsu"
PY="$T/py-venv/bin/python"
D="$(mktemp -d)"
trap 'rm -rf "$D"' EXIT
unset RENKETSU_KEK
"$BIN" keys init --project timing --key-store "$D/keys" >/dev/null
for p in a b; do
    "$BIN" tokenize --schema "$R/schemas/jp-person.toml" --input "$R/../shared/data/jp/jp_$p.csv" \
        --party "$p" --out "$D/$p.tokens" --project timing --key-store "$D/keys" \
        --today 2026-11-22 --quiet
done
/usr/bin/time -f "renketsu link: wall %e s, peak RSS %M KB" "$BIN" link -q \
    --schema "$R/schemas/jp-person.toml" --today 2026-11-22 \
    --input "a=$D/a.tokens" --input "b=$D/b.tokens" --out "$D/cli"
"$PY" - "$R" "$D" <<'PY' 2>&1 | grep -v -e WARN -e FutureWarning -e require_minimum -e setLogLevel
import sys, time
import renketsu, renketsu.spark as rks
R, D = sys.argv[1], sys.argv[2]
t0 = time.time()
spark = rks.session("local[2]")
t1 = time.time()
r = rks.link(spark, renketsu.Schema.from_toml(f"{R}/schemas/jp-person.toml"),
             {"a": f"{D}/a.tokens", "b": f"{D}/b.tokens"}, today="2026-11-22")
t2 = time.time()
print(f"renketsu.spark local[2]: session start {t1 - t0:.1f} s, link {t2 - t1:.1f} s")
print("same pairs.csv:", r.files["pairs.csv"] == open(f"{D}/cli/pairs.csv", "rb").read())
spark.stop()
PY
