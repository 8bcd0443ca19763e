#!/usr/bin/env bash
# The main job on the shipped sample data, every party as its own process over real gRPC with
# mutual TLS on loopback (SPEC.md §8, §10): a key custodian, a linkage unit, three data
# holders (an operator's EHR extract, an NDB-style hash-only database, a 介護DB-style holder)
# and a researcher. No set-up by hand: a development PKI, the stores (SQLite) and the keys
# are made fresh in ./quickstart-out/ (removed and remade on every run).
#
#   1. custodian and linkage unit start (ports chosen by the OS);
#   2. the admin creates the custodian project (recipe keys, CLK keys) and enrols the holders;
#   3. the researcher makes the key pair content is sealed to;
#   4. the admin creates the linkage project (holders, schema, researcher's public key);
#   5. each holder tokenizes with the custodian's VOPRF (never holding a key) and uploads its
#      token file and its content columns sealed to the researcher;
#   6. the linkage unit runs the scored job (schemas/ndb-neighbours.toml: Fellegi-Sunter on the
#      holders' tokens and per-comparison CLKs, token files version 2, with the birth-date
#      neighbours of the NDB's legacy digests); the admin fetches the quality
#      report; each holder fetches its record -> pseudonym mapping;
#   7. the researcher fetches the release and opens it: joined.csv (pseudonym + content);
#   8. evaluation against the sample's ground truth (possible only because the data are
#      synthetic) and the audit logs of both servers verified.
#
# Samples: samples/multi/{ehr,ndb,kaigo}.csv and truth.csv, made with
#   renketsu synth --holders 3 --records 1500 --ndb-view b --seed 2026
# (holder b as the hash-only view; parties renamed ehr, ndb, kaigo).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p renketsu-cli --bin renketsu
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/renketsu"
OUT=quickstart-out
# ndb.toml plus the birth-date neighbours of the legacy digests (SPEC.md §4.4): the hash-only
# holder is met despite a birth date mistyped on either side. At national scale they cost
# about 10 KB of memory per raw record in the linkage run, hence not ndb.toml's default.
SCHEMA="${QUICKSTART_SCHEMA:-$PWD/schemas/ndb-neighbours.toml}"
SAMPLES="$PWD/samples/multi"
rm -rf "$OUT"
mkdir -p "$OUT"
cd "$OUT"
export RENKETSU_KEY_STORE="$PWD/keys"
unset RENKETSU_KEK RENKETSU_LU RENKETSU_CUSTODIAN RENKETSU_CA RENKETSU_CERT RENKETSU_CERT_KEY RENKETSU_PROJECT
r() { "$BIN" "$@"; }
step() { printf '\n== %s\n' "$*"; }

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# start VAR LOG ARGS...: starts a server in the background and sets VAR to its https URL
# once it listens.
start() {
    local var="$1" log="$2"
    shift 2
    "$BIN" "$@" >"$log.out" 2>"$log.log" &
    pids+=($!)
    for _ in $(seq 1 300); do
        if grep -q "listening on" "$log.out" 2>/dev/null; then
            printf -v "$var" 'https://%s' "$(sed -n 's/.*listening on //p' "$log.out")"
            return 0
        fi
        sleep 0.1
    done
    echo "$* did not start; its log:" >&2
    cat "$log.log" >&2
    return 1
}

step "development PKI, key custodian and linkage unit"
r pki dev-init --out pki --holder ehr --holder ndb --holder kaigo >/dev/null
r custodian init-config --pki pki --out custodian.toml --listen 127.0.0.1:0 >/dev/null
start CUSTODIAN custodian custodian serve --config custodian.toml
start LU linkage-unit lu serve --db sqlite:linkage-unit.db --listen 127.0.0.1:0 \
    --tls-cert pki/linkage-unit-server.pem --tls-key pki/linkage-unit-server.key --client-ca pki/ca.pem
echo "custodian $CUSTODIAN, linkage unit $LU"
as_custodian() { local who=$1; shift; r "$@" --custodian "$CUSTODIAN" --ca pki/ca.pem --cert "pki/$who.pem" --key "pki/$who.key"; }
as_lu() { local who=$1; shift; r "$@" --lu "$LU" --ca pki/ca.pem --cert "pki/$who.pem" --key "pki/$who.key" --project quickstart; }

step "admin: custodian project and holders"
as_custodian admin keys create-project --project quickstart --linkage-unit linkage-unit --schema "$SCHEMA"
for h in ehr ndb kaigo; do
    # The NDB-style recipes meet hash-only digests through several spelling variants per
    # record, and the birth-date neighbour recipes through ~35 dates x the kana scripts
    # (about 70 evaluations per record): declare room for them in the evaluation quota.
    as_custodian admin keys enrol --project quickstart --party "$h" --declared-records 100000
done

step "researcher: key pair for sealed content"
r lu keygen --out researcher --key-store researcher-keys

step "admin: linkage project"
as_lu admin lu create-project --schema "$SCHEMA" --holder ehr --holder ndb --holder kaigo \
    --researcher researcher --researcher-key researcher.pub

step "holders: tokenize with the custodian (VOPRF), upload tokens and sealed content"
holders=()
for h in ehr ndb kaigo; do
    as_custodian "$h" tokenize --project quickstart --schema "$SCHEMA" --input "$SAMPLES/$h.csv" \
        --party "$h" --out "$h.tokens" --today 2026-11-22 --quiet &
    holders+=($!)
done
for p in "${holders[@]}"; do wait "$p"; done
for h in ehr ndb kaigo; do
    as_lu "$h" lu upload --tokens "$h.tokens" --content-from "$SAMPLES/$h.csv" --schema "$SCHEMA" \
        --researcher-key researcher.pub --quiet
done

step "linkage unit: matching job (Fellegi-Sunter scoring on the holders' comparison features)"
as_lu admin lu start-job --wait
# The admin's quality report (no identifier, no token): summary.json and report.html.
as_lu admin lu report --out report

step "holders: their own record -> pseudonym mappings"
for h in ehr ndb kaigo; do
    as_lu "$h" lu mapping --out "$h-mapping.csv"
done

step "researcher: fetch and open the release"
as_lu researcher fetch --researcher-key researcher.key --key-store researcher-keys --out release
head -3 release/joined.csv

step "linkage quality against samples/multi/truth.csv (synthetic data only)"
r lu pairs --mapping ehr=ehr-mapping.csv --mapping ndb=ndb-mapping.csv \
    --mapping kaigo=kaigo-mapping.csv --out pairs.csv >/dev/null
# True quality beside the model's estimates (est. P / est. R), per pair of holders.
r eval --pairs pairs.csv --truth "$SAMPLES/truth.csv" --summary report/summary.json

step "auditors: both audit logs verify"
as_custodian auditor audit verify
as_lu auditor lu audit

echo
echo "outputs in $OUT/: release/joined.csv (researcher), *-mapping.csv (holders), *.tokens,"
echo "linkage-unit.db and custodian.db (SQLite), *.log (server logs), pairs.csv (evaluation),"
echo "report/report.html and report/summary.json (the admin's quality report)"
