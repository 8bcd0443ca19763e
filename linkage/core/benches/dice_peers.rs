//! Dice throughput on the peers' 20,000 × 20,000 FEBRL-derived CLKs, on one core, to compare
//! with anonlink's kernel in the same run (acceptance point of issue "CLK": Dice
//! comparisons/s/core ≥ 3× anonlink's and ≥ 1.2×10^8/s/core on 1024-bit filters).
//!
//! A manual benchmark: it needs filters made by the peers harness (`../shared/peers`), given as
//! two files of base64 lines, one CLK per line (clkhash's serialization: the base64 of
//! `bitarray.tobytes()`), in the environment variables `RENKETSU_DICE_A` and `RENKETSU_DICE_B`.
//! Without them it prints how to make them and registers no benchmark, so `cargo bench` and
//! CI are unaffected.
//!
//! **Inputs.** The filters of the peers' scale all-pairs run (`bench_anonlink.py`,
//! `scale_all_pairs`): FEBRL4 A and B (`data/febrl4{a,b}.csv`) replicated 4 times, replica `k`
//! encoded by clkhash 0.18.3 with the script's linkage schema (1024 bits) and the secret
//! `peers-bench-secret-k`. After `./setup.sh` in `../shared/peers`, this writes them by calling
//! the script's own `replicate`:
//!
//! ```text
//! cd ../shared/peers && .venv/bin/python - <<'EOF'
//! import argparse, bench_anonlink as b
//! from clkhash.schema import from_json_dict
//! from clkhash.serialization import serialize_bitarray as ser
//! ca, cb, _, _ = b.replicate(argparse.Namespace(secret="peers-bench-secret"),
//!                            from_json_dict(b.SCHEMA), 4, "allpairs")
//! for path, clks in (("/tmp/clks_a.txt", ca), ("/tmp/clks_b.txt", cb)):
//!     open(path, "w").write("".join(ser(c) + "\n" for c in clks))
//! EOF
//! ```
//!
//! anonlink's figure on the same filters is the `[allpairs] kernel … cmp/s` line of
//! `.venv/bin/python bench_anonlink.py --blocked-n 0 --out anonlink_test.json` (one thread:
//! `anonlink.similarities.dice_coefficient_accelerated((a, b), 0.75)`, all 4×10^8 pairs,
//! candidates sorted, pruned by anonlink's popcount-difference bound).
//!
//! **Run.** `scripts/bench-dice-peers.sh` makes the files and alternates this benchmark with
//! anonlink's kernel; by hand:
//!
//! ```text
//! RENKETSU_DICE_A=/tmp/clks_a.txt RENKETSU_DICE_B=/tmp/clks_b.txt \
//!     cargo bench -p renketsu-linkage --bench dice_peers
//! ```
//!
//! First, `RENKETSU_DICE_RUNS` (default 3) single runs of each of `auto/no_pruning` (the
//! kernel [`Kernel::Auto`] picks: AVX-512 where the CPU has VPOPCNTDQ, else AVX2),
//! `auto/pruned`, `avx2/no_pruning` and `avx2/pruned` (the AVX2 kernel forced, when it is not
//! the one `auto` picks) and `portable/no_pruning` print wall and CPU seconds and comparisons
//! per second of each (CPU seconds are robust to other processes on a shared machine); then
//! criterion, unless `RENKETSU_DICE_SKIP_CRITERION` is set.
//!
//! `RENKETSU_DICE_THRESHOLD` overrides the threshold (default 0.75: the peers' FEBRL4
//! best-greedy threshold, which their scale run uses). Before timing, the bench prints the
//! number of pairs with Dice ≥ the threshold (anonlink reports 1,736,674 on these filters:
//! the same Dice values give the same count). Timed on one rayon thread, each benchmark's
//! `thrpt:` is comparisons per second, counting all `n_a · n_b` pairs:
//! `dice_peers/all_pairs_no_pruning` is the raw kernel (`Pruning::None`, every pair AND +
//! POPCNT); `dice_peers/pairs_above_pruned` is [`pairs_above`] (the popcount bound skips
//! pairs that cannot reach the threshold).

use std::hint::black_box;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use criterion::{Criterion, SamplingMode, Throughput};
use renketsu_linkage::clk::Bloom;
use renketsu_linkage::dice::{
    Filters, Kernel, Pruning, pairs_above, pairs_above_kernel, pairs_above_with,
};

/// Reads a file of base64 clkhash CLKs (one per line, blank lines skipped) into [`Filters`].
fn read_filters(path: &str) -> Filters {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let mut filters: Option<Filters> = None;
    let mut bits = 0;
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let bytes = STANDARD
            .decode(line.trim())
            .unwrap_or_else(|e| panic!("{path}:{}: not base64: {e}", n + 1));
        if filters.is_none() {
            bits = bytes.len() * 8;
            filters = Some(Filters::new(bits.div_ceil(64)));
        }
        let bloom = Bloom::from_clkhash_bytes(&bytes, bits)
            .unwrap_or_else(|e| panic!("{path}:{}: {e}", n + 1));
        filters.as_mut().unwrap().push(bloom.words());
    }
    filters.unwrap_or_else(|| panic!("{path}: no filters"))
}

/// User + system CPU seconds of this process (`/proc/self/stat`, clock ticks of 10 ms).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends at the last ')'): utime is the 12th, stime the
    // 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}

/// The 1-minute load average, as text.
fn load1() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// Mean popcount of a set of filters.
fn mean_popcount(f: &Filters) -> f64 {
    (0..f.len()).map(|i| f64::from(f.count(i))).sum::<f64>() / f.len() as f64
}

fn main() {
    let (Ok(path_a), Ok(path_b)) = (
        std::env::var("RENKETSU_DICE_A"),
        std::env::var("RENKETSU_DICE_B"),
    ) else {
        println!(
            "dice_peers: skipped (manual benchmark). Set RENKETSU_DICE_A and RENKETSU_DICE_B to \
             two files of base64 clkhash CLKs, one per line, e.g. the peers' 20k x 20k FEBRL \
             filters; the commands that make them are in the doc comment of \
             linkage/core/benches/dice_peers.rs."
        );
        return;
    };
    let threshold: f64 = std::env::var("RENKETSU_DICE_THRESHOLD")
        .map(|t| t.parse().expect("RENKETSU_DICE_THRESHOLD is a number"))
        .unwrap_or(0.75);

    let a = read_filters(&path_a);
    let b = read_filters(&path_b);
    assert_eq!(
        a.words(),
        b.words(),
        "both files hold filters of one length"
    );
    let pairs = (a.len() * b.len()) as u64;
    println!(
        "dice_peers: {} x {} filters of {} bits (mean popcount {:.1} / {:.1}), threshold {threshold}",
        a.len(),
        b.len(),
        a.words() * 64,
        mean_popcount(&a),
        mean_popcount(&b),
    );

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();

    // Cross-check (untimed): both variants find the same pairs.
    let raw = pool.install(|| pairs_above_with(&a, &b, threshold, Pruning::None));
    let pruned = pool.install(|| pairs_above(&a, &b, threshold));
    assert_eq!(raw.compared, pairs);
    assert_eq!(raw.pairs, pruned.pairs, "pruning changed the pairs found");
    println!(
        "dice_peers: {} pairs with Dice >= {threshold}; pruned search compares {} of {pairs} \
         pairs ({:.1} %)",
        raw.pairs.len(),
        pruned.compared,
        100.0 * pruned.compared as f64 / pairs as f64,
    );
    drop((raw, pruned));

    // Wall and CPU time of single runs (CPU seconds are robust to other processes taking the
    // core away; anonlink's script reports both as well).
    let runs: usize = std::env::var("RENKETSU_DICE_RUNS")
        .map(|n| n.parse().expect("RENKETSU_DICE_RUNS is a number"))
        .unwrap_or(3);
    for (name, kernel, pruning) in [
        ("auto/no_pruning", Kernel::Auto, Pruning::None),
        ("auto/pruned", Kernel::Auto, Pruning::PopcountBound),
        ("avx2/no_pruning", Kernel::Avx2, Pruning::None),
        ("avx2/pruned", Kernel::Avx2, Pruning::PopcountBound),
        ("portable/no_pruning", Kernel::Portable, Pruning::None),
    ] {
        if !kernel.is_available(a.words())
            || (kernel != Kernel::Auto && Kernel::auto_name(a.words()) == kernel.name())
        {
            // Not on this CPU, or the same kernel as `auto` (timed above).
            continue;
        }
        for _ in 0..runs {
            let (w0, c0) = (std::time::Instant::now(), cpu_seconds());
            let n = pool.install(|| {
                pairs_above_kernel(black_box(&a), black_box(&b), threshold, pruning, kernel)
                    .pairs
                    .len()
            });
            let (wall, cpu) = (w0.elapsed().as_secs_f64(), cpu_seconds() - c0);
            println!(
                "dice_peers: {name:<20} ({}) {wall:.3} s wall, {cpu:.2} s cpu: {:.4e} cmp/s, \
                 {:.4e} cmp/cpu-s, {n} pairs, load1 {}",
                if kernel == Kernel::Auto {
                    Kernel::auto_name(a.words())
                } else {
                    kernel.name()
                },
                pairs as f64 / wall,
                pairs as f64 / cpu,
                load1(),
            );
        }
    }
    if std::env::var("RENKETSU_DICE_SKIP_CRITERION").is_ok() {
        return;
    }

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(3))
        .measurement_time(Duration::from_secs(40))
        .configure_from_args();
    let mut g = c.benchmark_group("dice_peers");
    g.throughput(Throughput::Elements(pairs));
    // Iterations take seconds: equal-sized samples, not criterion's linear ramp.
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.bench_function("all_pairs_no_pruning", |bch| {
        bch.iter(|| {
            pool.install(|| {
                black_box(pairs_above_with(
                    black_box(&a),
                    black_box(&b),
                    threshold,
                    Pruning::None,
                ))
                .compared
            })
        })
    });
    g.bench_function("pairs_above_pruned", |bch| {
        bch.iter(|| {
            pool.install(|| {
                black_box(pairs_above(black_box(&a), black_box(&b), threshold)).compared
            })
        })
    });
    g.finish();
    c.final_summary();
}
