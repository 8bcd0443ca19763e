//! Dice comparison throughput on 1024-bit filters, in comparisons per second on one core.
//!
//! Acceptance point (issue "CLK"): Dice comparisons/s/core ≥ 3× anonlink's kernel and
//! ≥ 1.2×10^8/s/core on 1024-bit filters. Setup (untimed): two sets of 2,000 filters of 16
//! words with about 300 bits set each (the density of a CLK of a FEBRL record), from a fixed
//! seed. On one thread: `dice/all_pairs_no_pruning` compares all 4,000,000 pairs (kernel
//! speed: the `thrpt:` line is comparisons per second); `dice/threshold_0.8_pruned` is the
//! same search with the popcount bound (its `thrpt:` counts all 4,000,000 pairs as searched).
//!
//! ```text
//! cargo bench -p renketsu-linkage --bench dice
//! ```

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use renketsu_linkage::dice::{Filters, Pruning, pairs_above_with};

const N: usize = 2_000;
const WORDS: usize = 16;

fn make(seed: u64) -> Filters {
    let mut s = seed;
    let mut next = || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut f = Filters::new(WORDS);
    for _ in 0..N {
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
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
