//! Probabilistic record linkage on encoded data: Fellegi–Sunter scoring with EM-estimated
//! parameters (SPEC.md §9).
//!
//! * [`compare`]: comparison vectors of tokens and per-comparison CLKs, as pattern codes;
//! * [`em`]: u from random pairs, m and the prior by EM over distinct patterns;
//! * this module: candidate pairs from blocking keys, match weights with term-frequency
//!   terms, the estimated precision/recall curve and the threshold.
//!
//! Sources: Fellegi and Sunter (1969), *A theory for record linkage*, JASA 64:1183–1210
//! (the decision rule and match weights); Winkler (1988), *Using the EM algorithm for weight
//! computation in the Fellegi–Sunter model of record linkage*, and Winkler (2000), *Using
//! the EM algorithm … with frequency-based weights* (EM without labels, term frequencies);
//! Enamorado, Fifield and Imai (2019), *Using a probabilistic model to assist merging of
//! large-scale administrative records*, APSR 113:353–371 (fastLink: EM over patterns with
//! counts, missing values, term-frequency adjustment, estimated FDR/FNR); Belin and Rubin
//! (1995) for error-rate estimation from the mixture.

pub mod compare;
pub mod em;
pub mod spec;

use rayon::prelude::*;

pub use compare::{Compared, Dims, Features, FeaturesBuilder};
pub use em::{EmOptions, Model, SamplePattern, WeightTerms, probability};
pub use spec::{Clustering, ComparisonSpec, DiceSpec, ScoringSpec};

use crate::token::Token;

/// Counts of candidate-pair generation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CandidateStats {
    /// Distinct blocking keys.
    pub keys: usize,
    /// Largest key group (records sharing one key).
    pub largest_group: usize,
    /// Key groups larger than `max_block`, not expanded.
    pub skipped_groups: usize,
    /// Distinct candidate pairs.
    pub pairs: u64,
}

/// Candidate pairs: records of different holders sharing a blocking key (any token of a
/// direct, guarded or block recipe), as `(a, b)` global indices with `a < b`, sorted and
/// deduplicated. Groups of more than `max_block` records are skipped.
pub fn candidates(
    keys: &mut [(Token, u32)],
    holder: impl Fn(u32) -> u16 + Sync,
    max_block: usize,
) -> (Vec<(u32, u32)>, CandidateStats) {
    let mut stats = CandidateStats::default();
    keys.par_sort_unstable();
    let groups: Vec<&[(Token, u32)]> = keys.chunk_by(|x, y| x.0 == y.0).collect();
    stats.keys = groups.len();
    for g in &groups {
        stats.largest_group = stats.largest_group.max(g.len());
        if g.len() > max_block {
            stats.skipped_groups += 1;
        }
    }
    let mut pairs: Vec<u64> = groups
        .par_iter()
        .filter(|g| g.len() >= 2 && g.len() <= max_block)
        .flat_map_iter(|g| {
            let mut out = Vec::new();
            for (i, &(_, x)) in g.iter().enumerate() {
                for &(_, y) in &g[i + 1..] {
                    if x != y && holder(x) != holder(y) {
                        let (a, b) = if x < y { (x, y) } else { (y, x) };
                        out.push(u64::from(a) << 32 | u64::from(b));
                    }
                }
            }
            out
        })
        .collect();
    pairs.par_sort_unstable();
    pairs.dedup();
    stats.pairs = pairs.len() as u64;
    let pairs = pairs
        .into_iter()
        .map(|p| ((p >> 32) as u32, p as u32))
        .collect();
    (pairs, stats)
}

/// One point of the estimated precision/recall curve.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CurvePoint {
    /// Match weight threshold (bits): pairs with weight ≥ this are links.
    pub weight: f64,
    /// Match probability at that weight.
    pub probability: f64,
    /// Links at this threshold.
    pub links: u64,
    /// Estimated true links, `Σ P(M)` over the links.
    pub expected_true: f64,
    /// Estimated precision `expected_true / links` (1 with no links).
    pub precision: f64,
    /// Estimated recall `expected_true / Σ_all candidates P(M)`.
    pub recall: f64,
}

impl CurvePoint {
    /// Estimated F1.
    pub fn f1(&self) -> f64 {
        if self.precision + self.recall == 0.0 {
            0.0
        } else {
            2.0 * self.precision * self.recall / (self.precision + self.recall)
        }
    }
}

/// The model's scores of the candidate pairs.
#[derive(Clone, Debug)]
pub struct Scores {
    /// The fitted model.
    pub model: Model,
    /// Distinct patterns of the candidates with counts.
    pub patterns: Vec<(u32, u64)>,
    /// Match weight terms (bits) of the pattern codes, before term-frequency terms.
    pub table: WeightTerms,
    /// Match weight (bits) per candidate, in candidate order.
    pub weights: Vec<f32>,
    /// Estimated matches among the candidates: `Σ P(M)` with term-frequency terms.
    pub expected_matches: f64,
    /// Random pairs drawn for u.
    pub random_pairs: u64,
    /// Distinct patterns of the random pairs with counts.
    pub sample: Vec<SamplePattern>,
}

/// Seed of the u sample: fixed, so that runs are reproducible.
pub const SAMPLE_SEED: u64 = 0x7265_6e6b_6574_7375; // "renketsu"

/// Compares every candidate, fits the model and scores the candidates (SPEC.md §9.3).
/// `total_pairs` is the number of cross-holder pairs `Σ_{i<j} n_i·n_j`.
pub fn score(
    features: &Features,
    candidates: &[(u32, u32)],
    random_pairs: u64,
    total_pairs: f64,
    opts: EmOptions,
) -> Scores {
    let compared = features.compare_all(candidates);
    let is_candidate = |a: u32, b: u32| candidates.binary_search(&(a, b)).is_ok();
    let sample = features.random_pairs(random_pairs, SAMPLE_SEED, &is_candidate);
    score_compared(
        features.dims(),
        &compared,
        &tf_mask(features),
        sample,
        random_pairs,
        total_pairs,
        opts,
    )
}

/// Number of term-frequency adjusted levels per comparison (its exact levels, or 0).
pub fn tf_mask(features: &Features) -> Vec<usize> {
    (0..features.dims().levels.len())
        .map(|c| {
            if features.has_tf(c) {
                features.exact_levels(c)
            } else {
                0
            }
        })
        .collect()
}

/// [`score`] from comparison vectors already made (also used by the benchmark).
pub fn score_compared(
    dims: &Dims,
    compared: &[Compared],
    tf: &[usize],
    sample: Vec<SamplePattern>,
    random_pairs: u64,
    total_pairs: f64,
    opts: EmOptions,
) -> Scores {
    let patterns = em::count_patterns(compared.iter().map(|c| c.code));
    let model = em::fit(dims, &patterns, &sample, total_pairs, opts);
    let table = model.weight_terms(dims, tf);
    let weights: Vec<f32> = compared
        .par_iter()
        .with_min_len(8192)
        .map(|c| table.weight(c.code) + c.tf_bits)
        .collect();
    let expected_matches = weights
        .par_iter()
        .with_min_len(8192)
        .map(|&w| probability(f64::from(w)))
        .sum();
    Scores {
        model,
        patterns,
        table,
        weights,
        expected_matches,
        random_pairs,
        sample,
    }
}

impl Scores {
    /// The estimated precision/recall curve at every distinct weight, strongest first
    /// (SPEC.md §9.4).
    pub fn curve(&self) -> Vec<CurvePoint> {
        let mut w: Vec<f32> = self.weights.clone();
        w.par_sort_unstable_by(|a, b| b.total_cmp(a));
        let mut out: Vec<CurvePoint> = Vec::new();
        let mut tp = 0.0;
        for (i, &x) in w.iter().enumerate() {
            tp += probability(f64::from(x));
            let last = i + 1 == w.len() || w[i + 1] != x;
            if last {
                let links = (i + 1) as u64;
                out.push(CurvePoint {
                    weight: f64::from(x),
                    probability: probability(f64::from(x)),
                    links,
                    expected_true: tp,
                    precision: tp / links as f64,
                    recall: if self.expected_matches > 0.0 {
                        tp / self.expected_matches
                    } else {
                        1.0
                    },
                });
            }
        }
        out
    }

    /// The threshold (match weight, bits) maximizing the estimated F1, or the weight of the
    /// given match probability.
    pub fn threshold(&self, probability_threshold: Option<f64>) -> f64 {
        if let Some(p) = probability_threshold {
            return (p / (1.0 - p)).log2();
        }
        let curve = self.curve();
        curve
            .iter()
            .max_by(|a, b| {
                a.f1()
                    .total_cmp(&b.f1())
                    .then(b.weight.total_cmp(&a.weight))
            })
            .map_or(0.0, |p| p.weight)
    }
}

/// Match weight of any pair of records (candidates or not) under a fitted table.
pub fn pair_weight(features: &Features, table: &WeightTerms, a: u32, b: u32) -> f32 {
    let c = features.compare(a, b);
    table.weight(c.code) + c.tf_bits
}
