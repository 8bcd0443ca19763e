#!/usr/bin/env bash
# Bounded load test on loopback (issue 17 item 5): HOLDERS data holders at once tokenize
# through the key custodian (VOPRF) and upload token files and sealed content to the linkage
# unit, ROUNDS times each (one custodian + linkage-unit project per round), while a
# linkage-unit job of another project runs. Prints throughput, p50/p99 latency of each holder
# command, errors, and checks that the custodian's quota counters equal the evaluations each
# holder made and that both audit chains verify.
#
#   scripts/load-test.sh [HOLDERS=16] [RECORDS_PER_HOLDER=2000] [ROUNDS=4] [JOB_RECORDS=50000]
#
# Everything listens on 127.0.0.1 (ports chosen by the OS); every loop is bounded; servers are
# stopped on exit. Exits non-zero on any error or mismatch.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
holders="${1:-16}"
records="${2:-2000}"
rounds="${3:-4}"
job_records="${4:-50000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
cargo build --release --quiet -p renketsu-cli
bin="$CARGO_TARGET_DIR/release/renketsu"
schema="$repo/schemas/jp-person-exact.toml"
today=2026-11-22
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
now_ms() { date +%s%3N; }
letters=(a b c d e f g h i j k l m n o p q r s t u v w x y z)
parties=("${letters[@]:0:holders}")

serve() { # serve LOG ARGS...: start a server, wait for "listening on ADDR", print ADDR
    local log=$1
    shift
    "$bin" "$@" >"$log.out" 2>"$log.err" &
    pids+=($!)
    for _ in $(seq 600); do
        if grep -q "listening on" "$log.out" 2>/dev/null; then
            sed -n 's/.*listening on //p' "$log.out" | head -n 1
            return 0
        fi
        sleep 0.1
    done
    echo "$* did not start" >&2
    cat "$log.err" >&2
    return 1
}

holder_flags=()
for p in "${parties[@]}"; do holder_flags+=(--holder "$p"); done
"$bin" pki dev-init --out pki "${holder_flags[@]}" >/dev/null
"$bin" custodian init-config --pki pki --out custodian.toml --listen 127.0.0.1:0 >/dev/null
cu="https://$(serve custodian custodian serve --config custodian.toml)"
lu="https://$(serve lu lu serve --db sqlite:lu.db --listen 127.0.0.1:0 \
    --tls-cert pki/linkage-unit-server.pem --tls-key pki/linkage-unit-server.key \
    --client-ca pki/ca.pem)"
admin_cu=(--custodian "$cu" --ca pki/ca.pem --cert pki/admin.pem --key pki/admin.key)
lu_conn() { echo --lu "$lu" --ca pki/ca.pem --cert "pki/$1.pem" --key "pki/$1.key" --project "$2"; }
"$bin" synth --out data --holders "$holders" --records "$records" --seed 17 >/dev/null
"$bin" synth --out bg --holders 2 --records "$job_records" --seed 18 >/dev/null
"$bin" lu keygen --out researcher --key-store researcher-keys >/dev/null

# Rounds' projects on both servers; each holder's quota covers its records once per recipe.
for r in $(seq "$rounds"); do
    "$bin" keys create-project --project "load-$r" --linkage-unit linkage-unit \
        --schema "$schema" "${admin_cu[@]}" >/dev/null
    for p in "${parties[@]}"; do
        "$bin" keys enrol --project "load-$r" --party "$p" --declared-records "$records" \
            "${admin_cu[@]}" >/dev/null
    done
    # shellcheck disable=SC2046
    "$bin" lu create-project $(lu_conn admin "load-$r") --schema "$schema" \
        "${holder_flags[@]}" --researcher researcher --researcher-key researcher.pub >/dev/null
done

# The background job: project "bg", two holders of JOB_RECORDS each (local HMAC tokens).
export RENKETSU_KEY_STORE="$work/keys"
"$bin" keys init --project bg >/dev/null
# shellcheck disable=SC2046
"$bin" lu create-project $(lu_conn admin bg) --schema "$schema" --holder a --holder b \
    --researcher researcher --researcher-key researcher.pub >/dev/null
for p in a b; do
    "$bin" tokenize --project bg --schema "$schema" --input "bg/synth_$p.csv" --party "$p" \
        --out "bg-$p.tokens" --today "$today" 2>/dev/null
    # shellcheck disable=SC2046
    "$bin" lu upload $(lu_conn "$p" bg) --tokens "bg-$p.tokens" --quiet >/dev/null
done
# shellcheck disable=SC2046
"$bin" lu start-job $(lu_conn admin bg) >/dev/null
job_start=$(now_ms)

# The load: every holder, every round: tokenize (custodian) then upload (linkage unit).
holder_run() {
    local p=$1 r t0 t1 t2 out
    for r in $(seq "$rounds"); do
        t0=$(now_ms)
        if ! out=$("$bin" tokenize --custodian "$cu" --ca pki/ca.pem --cert "pki/$p.pem" \
            --key "pki/$p.key" --project "load-$r" --schema "$schema" \
            --input "data/synth_$p.csv" --party "$p" --out "$p-$r.tokens" --today "$today" 2>&1); then
            echo "error tokenize $p $r: $out"
            continue
        fi
        t1=$(now_ms)
        echo "tokens $p $r $(echo "$out" | grep -o '[0-9]* tokens' | tail -n 1 | cut -d' ' -f1)"
        # shellcheck disable=SC2046
        if ! out=$("$bin" lu upload $(lu_conn "$p" "load-$r") --tokens "$p-$r.tokens" \
            --content-from "data/synth_$p.csv" --schema "$schema" \
            --researcher-key researcher.pub --quiet 2>&1); then
            echo "error upload $p $r: $out"
            continue
        fi
        t2=$(now_ms)
        echo "lat tokenize $((t1 - t0))"
        echo "lat upload $((t2 - t1))"
    done
}
load_start=$(now_ms)
for p in "${parties[@]}"; do holder_run "$p" >"run-$p.log" 2>&1 & done
wait_pids=$(jobs -p)
# shellcheck disable=SC2086
wait $wait_pids 2>/dev/null || true
load_ms=$(($(now_ms) - load_start))
cat run-*.log >all.log
# shellcheck disable=SC2046
job_state=$("$bin" lu job $(lu_conn admin bg) 2>/dev/null | tr "\n" " " || true)

errors=$(grep -c '^error' all.log || true)
pct() { # pct OP Q: nearest-rank percentile Q of OP's latencies (ms)
    grep "^lat $1 " all.log | cut -d' ' -f3 | sort -n | awk -v q="$2" \
        '{v[NR]=$1} END {if (NR == 0) {print "-"; exit} i = int((q * NR + 99) / 100); if (i < 1) i = 1; print v[i]}'
}
n_ops=$(grep -c '^lat tokenize' all.log || true)
total=$((n_ops * records))
echo "load: $holders holders x $rounds rounds x $records records, custodian VOPRF + linkage-unit upload, on loopback"
echo "wall time ${load_ms} ms; ${total} records tokenized and uploaded; $((total * 1000 / (load_ms > 0 ? load_ms : 1))) records/s"
for op in tokenize upload; do
    echo "$op per holder command (ms): n=$(grep -c "^lat $op " all.log || true) p50=$(pct "$op" 50) p99=$(pct "$op" 99) max=$(pct "$op" 100)"
done
echo "errors: $errors"
echo "background job (project bg, 2 x $job_records records) started $(( load_start - job_start )) ms before the load; state after the load: ${job_state:-?}"

# Quotas: the custodian's usage counters equal the evaluations each holder made.
python3 - "$work/custodian.db" all.log <<'EOF'
import sqlite3, sys, collections
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
used = collections.Counter()
for project, party, n in db.execute("SELECT project, party, SUM(used) FROM evaluation_usage GROUP BY project, party"):
    used[(project, party)] = n
audited = collections.Counter()
for project, party, n in db.execute(
    "SELECT project, actor_party, SUM(item_count) FROM audit_log WHERE rpc LIKE '%EvaluateBatch' AND status_code = 0 GROUP BY project, actor_party"):
    audited[(project, party)] = n
made = collections.Counter()
for line in open(sys.argv[2]):
    f = line.split()
    if f and f[0] == "tokens":
        made[(f"load-{f[2]}", f[1])] = int(f[3])
bad = [(k, made[k], used[k], audited[k]) for k in set(made) | set(used) if not (made[k] == used[k] == audited[k])]
print(f"quotas: {len(made)} (project, holder) counters; usage = tokens made = audited items: {'exact' if not bad else 'MISMATCH ' + str(bad[:5])}")
sys.exit(1 if bad else 0)
EOF
"$bin" audit verify --custodian "$cu" --ca pki/ca.pem --cert pki/auditor.pem --key pki/auditor.key >/dev/null
echo "custodian audit chain: verified"
for r in $(seq "$rounds"); do
    # shellcheck disable=SC2046
    "$bin" lu audit $(lu_conn auditor "load-$r") >/dev/null
done
echo "linkage-unit audit chains ($rounds projects): verified"
[ "$errors" -eq 0 ]
