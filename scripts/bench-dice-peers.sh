#!/usr/bin/env bash
# Dice comparisons per second: renketsu's kernels and anonlink's C++ kernel
# (anonlink.similarities.dice_coefficient_accelerated) on the same 20,000 x 20,000 FEBRL-derived
# 1024-bit CLKs, one thread each, alternating in one session so both see the same machine load.
#
#   PEERS=../shared/peers scripts/bench-dice-peers.sh [ROUNDS]
#
# PEERS is a copy of the peers harness on which ./setup.sh has run (it needs its .venv; the
# shared copy may be read-only: copy it to /tmp first). The CLK files are made once, by the
# harness's own bench_anonlink.replicate (FEBRL4 A and B replicated 4 times, clkhash 0.18.3,
# secret "peers-bench-secret-k" for replica k), under DICE_DIR (default /tmp/renketsu-dice-peers).
#
# Comparisons per second = n_a * n_b / time for both tools: every pair of the all-pairs search
# counts, whether its popcounts let the kernel skip it or not (anonlink's own definition in
# bench_anonlink.py). Both wall and CPU seconds are printed; on a shared machine compare the
# CPU figures and ratios taken in the same round.
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS=$(cd "${PEERS:-../shared/peers}" && pwd)
DIR=${DICE_DIR:-/tmp/renketsu-dice-peers}
ROUNDS=${1:-2}
PY=$PEERS/.venv/bin/python
[ -x "$PY" ] || { echo "no $PY: run $PEERS/setup.sh first (on a writable copy)" >&2; exit 1; }
mkdir -p "$DIR"

if [ ! -s "$DIR/clks_b.txt" ]; then
  echo "making the CLK files in $DIR (clkhash, about a minute)"
  (cd "$PEERS" && DIR="$DIR" "$PY" - <<'EOF'
import argparse, os, bench_anonlink as b
from clkhash.schema import from_json_dict
from clkhash.serialization import serialize_bitarray as ser
ca, cb, _, _ = b.replicate(argparse.Namespace(secret="peers-bench-secret"),
                           from_json_dict(b.SCHEMA), 4, "allpairs")
for name, clks in (("clks_a.txt", ca), ("clks_b.txt", cb)):
    with open(os.path.join(os.environ["DIR"], name), "w") as f:
        f.write("".join(ser(c) + "\n" for c in clks))
EOF
  )
fi

CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target} \
  cargo bench -p renketsu-linkage --bench dice_peers --no-run 2>&1 | tail -1

for round in $(seq 1 "$ROUNDS"); do
  echo "=== round $round: anonlink ($(cut -d' ' -f1-3 /proc/loadavg))"
  DIR="$DIR" "$PY" - <<'EOF'
import os, time, warnings
warnings.filterwarnings("ignore")
from clkhash.serialization import deserialize_bitarray
from anonlink.similarities import dice_coefficient_accelerated
load = lambda p: [deserialize_bitarray(l.strip()) for l in open(p) if l.strip()]
ca = load(os.path.join(os.environ["DIR"], "clks_a.txt"))
cb = load(os.path.join(os.environ["DIR"], "clks_b.txt"))
n = len(ca) * len(cb)
for _ in range(3):
    c0, w0 = time.process_time(), time.perf_counter()
    sims, _ = dice_coefficient_accelerated((ca, cb), 0.75)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    print(f"anonlink: {wall:.3f} s wall, {cpu:.2f} s cpu: {n / wall:.4e} cmp/s, "
          f"{n / cpu:.4e} cmp/cpu-s, {len(sims)} pairs, load1 {os.getloadavg()[0]:.2f}",
          flush=True)
EOF
  echo "=== round $round: renketsu ($(cut -d' ' -f1-3 /proc/loadavg))"
  RENKETSU_DICE_A=$DIR/clks_a.txt RENKETSU_DICE_B=$DIR/clks_b.txt RENKETSU_DICE_SKIP_CRITERION=1 \
    CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target} \
    cargo bench -p renketsu-linkage --bench dice_peers 2>/dev/null | grep '^dice_peers'
done
