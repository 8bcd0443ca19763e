//! Fellegi–Sunter EM and scoring of 10^7 candidate pairs (issue "Probabilistic scoring":
//! ≤ 30 s on this machine).
//!
//! Setup (untimed): 10,000,000 comparison vectors of a jp-person-like shape (six comparisons
//! with 10, 6, 5, 3, 4 and 4 levels, 14,400 possible patterns) drawn from a two-class model
//! (5 % matches), each with a term-frequency term, and a random-pair sample of 2,000,000
//! pairs, from a fixed seed. Timed (`fs/em_and_score_1e7`): counting the distinct patterns,
//! EM (m, u, prior) over them, the match weight of every pair, and the threshold of maximum
//! estimated F1 (a sort of the 10^7 weights). The comparison vectors themselves are measured
//! by `renketsu link` (`scoring.timings_ms.compare_em_score` in summary.json).
//!
//! ```text
//! cargo bench -p renketsu-linkage --bench fs_score
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use renketsu_linkage::score::{Compared, Dims, EmOptions, SamplePattern, score_compared};

const PAIRS: usize = 10_000_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// A level: geometric from level 0 (matches) or from the disagree level (non-matches).
    fn level(&mut self, levels: u32, matched: bool) -> u32 {
        if self.unit() < 0.05 {
            return levels - 1; // missing
        }
        let mut l = 0;
        while l + 2 < levels && self.unit() < 0.35 {
            l += 1;
        }
        if matched { l } else { levels - 2 - l }
    }
}

fn data() -> (Dims, Vec<Compared>, Vec<SamplePattern>) {
    let dims = Dims::from_levels(vec![10, 6, 5, 3, 4, 4]);
    let mut rng = Rng(20_261_122);
    let draw = |rng: &mut Rng, matched: bool| -> u32 {
        dims.levels
            .iter()
            .zip(&dims.strides)
            .map(|(&l, &s)| rng.level(l, matched) * s)
            .sum()
    };
    let compared: Vec<Compared> = (0..PAIRS)
        .map(|_| {
            let matched = rng.unit() < 0.05;
            Compared {
                code: draw(&mut rng, matched),
                tf_bits: (rng.unit() * 2.0) as f32,
            }
        })
        .collect();
    let mut codes: Vec<u32> = (0..2_000_000)
        .map(|_| {
            let matched = rng.unit() < 1e-4;
            draw(&mut rng, matched)
        })
        .collect();
    codes.sort_unstable();
    let sample = codes
        .chunk_by(|a, b| a == b)
        .map(|run| SamplePattern {
            code: run[0],
            count: run.len() as u64,
            candidates: run.len() as u64 / 100,
        })
        .collect();
    (dims, compared, sample)
}

fn bench(c: &mut Criterion) {
    let (dims, compared, sample) = data();
    let tf = vec![9, 0, 1, 0, 1, 0];
    let mut g = c.benchmark_group("fs");
    g.throughput(Throughput::Elements(PAIRS as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(30));
    g.bench_function("em_and_score_1e7", |b| {
        b.iter(|| {
            let s = score_compared(
                &dims,
                black_box(&compared),
                &tf,
                sample.clone(),
                2_000_000,
                1e11,
                EmOptions::default(),
            );
            black_box(s.threshold(None))
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
