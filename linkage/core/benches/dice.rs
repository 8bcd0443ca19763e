//! Dice comparison throughput on 1024-bit filters, in comparisons per second on one core.
//!
//! Acceptance point (issue "CLK"): Dice comparisons/s/core ≥ 3× anonlink's kernel and
//! ≥ 1.2×10^8/s/core on 1024-bit filters. Setup (untimed): two sets of 2,000 filters of 16
//! words with about 300 bits set each (the density of a CLK of a FEBRL record), from a fixed
//! seed. On one thread: `dice/all_pairs_no_pruning` compares all 4,000,000 pairs (kernel
//! speed: the `thrpt:` line is comparisons per second); `dice/threshold_0.8_pruned` is the
//! same search with the popcount bound (its `thrpt:` counts all 4,000,000 pairs as searched).
//!
//! Pair-by-pair scoring (blocking and Hamming-LSH candidates, compiled for AVX-512 where the CPU
//! has VPOPCNTDQ, else for POPCNT): `dice/score_candidates` scores 4,000,000 candidate pairs
//! drawn at random from the two sets (`thrpt:` pairs per second); `dice/lsh_score` streams the
//! Hamming-LSH candidates of 5,000 × 5,000 such filters, 48 bands of 12 bits, into scoring
//! (`LshBands::score`; `thrpt:` counts the candidate pairs scored, printed before timing).
//! `RENKETSU_DICE_KERNEL=avx2` (or `portable`) runs the same without AVX-512.
//!
//! ```text
//! cargo bench -p renketsu-linkage --bench dice
//! ```

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use renketsu_linkage::dice::{Filters, Kernel, Pruning, pairs_above_with, score_candidates};
use renketsu_linkage::lsh::{LshBands, LshParams};

const N: usize = 2_000;
const WORDS: usize = 16;

/// A SplitMix64 stream.
fn splitmix(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn make(seed: u64) -> Filters {
    make_n(seed, N)
}

fn make_n(seed: u64, n: usize) -> Filters {
    let mut s = seed;
    let mut next = || splitmix(&mut s);
    let mut f = Filters::new(WORDS);
    for _ in 0..n {
        let mut v = [0u64; WORDS];
        for _ in 0..300 {
            let bit = (next() % 1024) as usize;
            v[bit / 64] |= 1 << (bit % 64);
        }
        f.push(&v);
    }
    f
}

fn bench(c: &mut Criterion) {
    let (a, b) = (make(1), make(2));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let mut g = c.benchmark_group("dice");
    g.throughput(Throughput::Elements((N * N) as u64));
    g.sample_size(10);
    g.bench_function("all_pairs_no_pruning", |bch| {
        bch.iter(|| {
            pool.install(|| {
                black_box(pairs_above_with(
                    black_box(&a),
                    black_box(&b),
                    0.8,
                    Pruning::None,
                ))
                .compared
            })
        })
    });
    g.bench_function("threshold_0.8_pruned", |bch| {
        bch.iter(|| {
            pool.install(|| {
                black_box(pairs_above_with(
                    black_box(&a),
                    black_box(&b),
                    0.8,
                    Pruning::PopcountBound,
                ))
                .compared
            })
        })
    });

    let mut s = 3;
    let candidates: Vec<(u32, u32)> = (0..N * N)
        .map(|_| {
            let i = splitmix(&mut s) % N as u64;
            let j = splitmix(&mut s) % N as u64;
            (i as u32, j as u32)
        })
        .collect();
    g.bench_function("score_candidates", |bch| {
        bch.iter(|| {
            pool.install(|| score_candidates(black_box(&a), black_box(&b), &candidates, 0.8).len())
        })
    });

    const LSH_N: usize = 5_000;
    let (la, lb) = (make_n(4, LSH_N), make_n(5, LSH_N));
    let params = LshParams {
        bands: 48,
        bits_per_band: 12,
        ..LshParams::default()
    };
    let scored = pool.install(|| {
        LshBands::new(&params, WORDS * 64)
            .score(&la, &lb, 0.8)
            .candidates
    });
    println!(
        "dice/lsh_score: {scored} candidate pairs scored; pair scoring kernel: {}",
        if Kernel::Avx512.is_available(WORDS) && Kernel::auto_name(WORDS) == "avx512" {
            "avx512"
        } else {
            "popcnt"
        }
    );
    g.throughput(Throughput::Elements(scored));
    g.bench_function("lsh_score", |bch| {
        bch.iter(|| {
            pool.install(|| {
                LshBands::new(&params, WORDS * 64)
                    .score(black_box(&la), black_box(&lb), 0.8)
                    .pairs
                    .len()
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
