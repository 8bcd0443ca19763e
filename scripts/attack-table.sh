#!/usr/bin/env bash
# The defence table of the attack self-test (issue 17 item 3; README "Attack self-test", SPEC.md
# §7.3 and §7.5): one row per hardening variant of schemas/jp-person-clk.toml. Per row:
#   - the attack (`renketsu attack --json`) on N synthetic records of one holder (`renketsu
#     synth --holders 1 --seed 1`) against a disjoint N-record reference (`--seed 2`), with the
#     holder's CSV as truth;
#   - the F1 of `renketsu link` + `renketsu eval` on ../shared/data/jp and ../shared/data/jp_ins
#     (if present) with the same schema and one project key (`--today 2026-11-22`).
#
#   scripts/attack-table.sh [N] [ROW ...]   # default N 10000, every row
#
# Rows: default xor_fold balance salt balance_salt blip5 blip4 lsh_only no_dob.
# Data, keys and outputs under $ATTACK_DIR (default /var/tmp/renketsu-attack, never the
# repository); BIN defaults to the release binary of CARGO_TARGET_DIR (or target/). Prints one
# TSV line per row and keeps every JSON report ($ATTACK_DIR/N/ROW.attack.json).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
shift || true
ROWS=("$@")
[ ${#ROWS[@]} -gt 0 ] || ROWS=(default xor_fold balance salt balance_salt blip5 blip4 lsh_only no_dob)
DIR=${ATTACK_DIR:-/var/tmp/renketsu-attack}/$N
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/renketsu}
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release -p renketsu-cli" >&2; exit 1; }
command -v jq >/dev/null || { echo "needs jq" >&2; exit 1; }
DATA=${DATA:-../shared/data}
mkdir -p "$DIR"
[ -s "$DIR/hold/synth_a.csv" ] || "$BIN" synth --out "$DIR/hold" --holders 1 --records "$N" --seed 1 >/dev/null
[ -s "$DIR/ref/synth_a.csv" ] || "$BIN" synth --out "$DIR/ref" --holders 1 --records "$N" --seed 2 >/dev/null
export RENKETSU_KEY_STORE=$DIR/keys
unset RENKETSU_KEK
"$BIN" keys init --project attack --if-missing >/dev/null

# The schema of a row: schemas/jp-person-clk.toml with one change.
schema() {
  local row=$1 out=$2 base=schemas/jp-person-clk.toml
  case $row in
    default) cp "$base" "$out" ;;
    xor_fold) { cat "$base"; printf '\n[clk.hardening]\nxor_fold = true\n'; } > "$out" ;;
    # balance: Dice becomes 1 - Hamming/bits, so the threshold moves up (SPEC.md §7.3).
    balance) { sed 's/^threshold = 0.9$/threshold = 0.95/' "$base"; printf '\n[clk.hardening]\nbalance = true\n'; } > "$out" ;;
    salt) salted "$base" > "$out" ;;
    balance_salt) { salted "$base" | sed 's/^threshold = 0.9$/threshold = 0.95/'; printf '\n[clk.hardening]\nbalance = true\n'; } > "$out" ;;
    blip5) { cat "$base"; printf '\n[clk.hardening]\nblip_epsilon = 5.0\n'; } > "$out" ;;
    blip4) { cat "$base"; printf '\n[clk.hardening]\nblip_epsilon = 4.0\n'; } > "$out" ;;
    # No block recipes: Hamming-LSH candidates only (sizes chosen from the data, §7.4).
    lsh_only) { drop_block "$base"; printf '\n[clk.lsh]\n'; } > "$out" ;;
    # No positional birth-date feature in the CLK.
    no_dob) drop_dob "$base" > "$out" ;;
    *) echo "unknown row $row" >&2; exit 1 ;;
  esac
}
# Salt both name features with the birth year.
salted() {
  awk '{ print }
       /^field = "kana_name_fuzzy"$/ || /^field = "kanji_full_name"$/ { salt = 1 }
       salt && /^k = / { print "salt = { field = \"birth_date\", chars = 4 }"; salt = 0 }' "$1"
}
# Drop every [[recipes]] table with link = "block" (tables, with the comments before them,
# end at a blank line).
drop_block() {
  awk 'BEGIN { RS = ""; ORS = "\n\n" } !(/\[\[recipes\]\]/ && /link = "block"/)' "$1"
}
# Drop the [[clk.features]] table of the birth date.
drop_dob() {
  awk 'BEGIN { RS = ""; ORS = "\n\n" } !(/^\[\[clk.features\]\]/ && /field = "birth_date"/)' "$1"
}

f1() {
  local s=$1 a=$2 b=$3 truth=$4 out=$5
  [ -s "$a" ] || { echo "-"; return; }
  rm -rf "$out"
  "$BIN" link --project attack --today 2026-11-22 --schema "$s" --input a="$a" --input b="$b" \
    --out "$out" >/dev/null 2>&1
  "$BIN" eval --json --pairs "$out/pairs.csv" --truth "$truth" | jq -r '.f1 | . * 10000 | round / 10000'
}

printf 'row\treidentified_share\tkana_name\tbirth_date\tsex\tpostal_code\tkanji_name\tmax_labelled_recipe\tlabelled_per_recipe\tdob_positions\tf1_jp\tf1_jp_ins\tattack_s\n'
for row in "${ROWS[@]}"; do
  S=$DIR/$row.toml
  schema "$row" "$S"
  "$BIN" tokenize --project attack --today 2026-11-22 --schema "$S" --input "$DIR/hold/synth_a.csv" \
    --party a --out "$DIR/$row.tokens" >/dev/null 2>&1
  t0=$(date +%s)
  "$BIN" attack --schema "$S" --tokens "$DIR/$row.tokens" --reference "$DIR/ref/synth_a.csv" \
    --truth "$DIR/hold/synth_a.csv" --json > "$DIR/$row.attack.json"
  t1=$(date +%s)
  J=$DIR/$row.attack.json
  pct() { jq -r "$1 // empty | . * 10000 | round / 100" "$J"; }
  rec=$(jq -r '[.per_recipe | to_entries[] | "\(.key)=\(.value.labelled_share * 10000 | round / 100)"] | join(" ")' "$J")
  maxrec=$(jq -r '[.per_recipe[].labelled_share] | max // 0 | . * 10000 | round / 100' "$J")
  dob=$(jq -r '[.clk.position_recovery // {} | to_entries[] | select(.key | startswith("birth_date")) | "\(.key | ltrimstr("birth_date"))=\(.value * 1000 | round / 10)"] | join(" ")' "$J")
  jp=$(f1 "$S" "$DATA/jp/jp_a.csv" "$DATA/jp/jp_b.csv" "$DATA/jp/jp_truth.csv" "$DIR/$row.jp")
  ins=$(f1 "$S" "$DATA/jp_ins/jp_ins_a.csv" "$DATA/jp_ins/jp_ins_b.csv" "$DATA/jp_ins/jp_ins_truth.csv" "$DIR/$row.jp_ins")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$row" "$(pct .reidentified_share)" \
    "$(pct .per_attribute.kana_name.correct_share)" "$(pct .per_attribute.birth_date.correct_share)" \
    "$(pct .per_attribute.sex.correct_share)" "$(pct .per_attribute.postal_code.correct_share)" \
    "$(pct .per_attribute.kanji_name.correct_share)" "$maxrec" "$rec" "$dob" "$jp" "$ins" "$((t1 - t0))"
done
