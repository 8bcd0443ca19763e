//! Hamming-LSH blocking on CLKs: candidate pairs from the filters themselves (SPEC.md §7.4).
//!
//! Bit-sampling LSH for the Hamming distance (Indyk & Motwani 1998; for Bloom-filter PPRL:
//! Durham 2012, Karapiperis & Verykios 2015): each of `bands` bands samples `bits_per_band`
//! bit positions; two filters collide in a band when they agree on all its sampled bits, and
//! a pair of records from two holders is a **candidate** when its filters collide in at least
//! one band. For filters of `m` bits at Hamming distance `h`, one band collides with
//! probability `(1 − h/m)^r` and the pair becomes a candidate with probability
//! `1 − (1 − (1 − h/m)^r)^b`: close filters (the same person, typed differently) almost
//! always, distant ones almost never.
//!
//! The sampled positions come from a public seed (they need no secret: the linkage unit,
//! which never holds keys, computes them). Work: `O(b·r·(n_a + n_b))` to make band keys,
//! a sort per band, and the candidate pairs; buckets larger than `max_bucket` on either side
//! are skipped (they are filters that say little, e.g. near-empty ones) and counted.
//!
//! **Streaming** ([`LshBands::score`], what `renketsu link` runs): the bands are taken one
//! after the other and each band's collisions are scored at once, so memory holds one band's
//! keys plus the pairs at or above the Dice threshold, never the candidate set (10^9 pairs and
//! more on 10^6 × 10^6 sparse filters). A pair is scored only in the **first** band where it
//! is a candidate: on a collision in band `k` the pair's filters are checked against the
//! sampled bits of bands `0..k` (a masked XOR per band; a bucket skipped in an earlier band does
//! not count there). Every candidate is thus scored exactly once and counted once, and the
//! result equals scoring the materialized, deduplicated [`candidates`] (tested).
//!
//! **Size-aware parameters** ([`choose_params`], what `[clk.lsh]` without `bands` or
//! `bits_per_band` runs): bits per band `r` so that the expected random (non-matching)
//! collisions per band, `q(r)·n_a·n_b` with `q` measured on a sample of the pairs' Hamming
//! distances, stay within `c·(n_a + n_b)`; bands `b` so that a pair at the Dice threshold
//! becomes a candidate with probability [`TARGET_AT_THRESHOLD`]. Work stays linear in the
//! records where fixed bands grow with `n_a · n_b`.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use crate::dice::PairIsa;
use crate::dice::{Candidate, Filters, score_pair};

/// Parameters of Hamming-LSH blocking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LshParams {
    /// Number of bands `b` (each an independent chance to collide).
    pub bands: u32,
    /// Sampled bits per band `r` (1..=64): more bits, fewer and closer candidates.
    pub bits_per_band: u32,
    /// Seed of the sampled positions (public).
    pub seed: u64,
    /// Buckets holding more records than this on either side are skipped.
    pub max_bucket: u32,
}

impl Default for LshParams {
    /// Fixed parameters, the reference of the tests (a schema that leaves `bands` or
    /// `bits_per_band` out gets [`choose_params`] instead; seed and `max_bucket` are these).
    /// 48 bands of 16 bits: a pair at relative Hamming distance 0.05 becomes a candidate with
    /// probability 1 − 10^-12, at 0.15 with probability 0.975, at 0.35 with probability 0.048.
    /// Measured (`linkage/core/tests/lsh_blocking.rs`): FEBRL4 PC 0.955 at RR 0.993; jp dev
    /// set PC 0.988 at RR 0.973.
    fn default() -> Self {
        Self {
            bands: 48,
            bits_per_band: 16,
            seed: 0x5eed_1a5e_d0c5_b10c,
            max_bucket: 1000,
        }
    }
}

/// Targets of the size-aware parameters ([`choose_params`], SPEC.md §7.4): the probability
/// that a pair at the Dice threshold collides in at least one band, averaged over the
/// popcounts of the holders' filters ([`DistanceSample::candidate_probability_at_threshold`]).
pub const TARGET_AT_THRESHOLD: f64 = 0.999;

/// Targets of the size-aware parameters: the expected number of random (non-matching) band
/// collisions per band, per record of the two holders (`c` in `q(r)·n_a·n_b ≤ c·(n_a + n_b)`).
pub const RANDOM_COLLISIONS_PER_RECORD: f64 = 1.0;

/// At most this many bands are chosen ([`choose_params`]): each candidate is checked
/// against the bands before it, so work grows with the square of the bands. A threshold too
/// low for Hamming-LSH (say Dice 0.5 on dense filters) gets these bands and a probability
/// at the threshold below [`TARGET_AT_THRESHOLD`], which is reported.
pub const MAX_CHOSEN_BANDS: u32 = 256;

/// Random pairs whose Hamming distances estimate `q(r)` (all pairs when there are fewer).
pub const DISTANCE_SAMPLE: u64 = 1 << 20;

/// Seed of the sampled pairs (public, like the band positions).
pub const DISTANCE_SAMPLE_SEED: u64 = 0x5a3d_1e5a_3b1e_d157;

/// The probability that `r` distinct positions drawn uniformly from `bits` all fall outside
/// the `h` positions where two filters differ: `∏_{s<r} (bits − h − s)/(bits − s)` (sampling
/// without replacement; `(1 − h/bits)^r` with replacement). `h` may be fractional (an
/// expected distance); 0 when `h + r > bits`.
pub fn band_probability(bits: usize, h: f64, r: u32) -> f64 {
    let m = bits as f64;
    (0..r)
        .map(|s| ((m - h - f64::from(s)) / (m - f64::from(s))).max(0.0))
        .product()
}

/// Hamming distances of sampled non-matching pairs of two holders' filters, and their mean
/// popcounts: what [`choose_params`] needs from the data.
#[derive(Clone, Debug, PartialEq)]
pub struct DistanceSample {
    /// Filter length in bits.
    pub bits: usize,
    /// `histogram[h]`: sampled pairs at Hamming distance `h` (`bits + 1` entries).
    pub histogram: Vec<u64>,
    /// Pairs drawn (including those left out, see [`DistanceSample::measure`]).
    pub drawn: u64,
    /// Mean popcount of the non-empty filters of each holder (0 when there are none).
    pub mean_popcount: [f64; 2],
    /// `popcounts[k][x]`: non-empty filters of holder `k` with `x` bits set.
    pub popcounts: [Vec<u64>; 2],
}

impl DistanceSample {
    /// Draws [`DISTANCE_SAMPLE`] pairs `(i, j)` of `a` × `b` (every pair, in order, when
    /// `n_a · n_b` is not larger): `i = next() mod n_a`, then `j = next() mod n_b`, with
    /// SplitMix64 from [`DISTANCE_SAMPLE_SEED`]. Pairs with Dice ≥ `threshold` (matches, the
    /// pairs LSH is for) and pairs of two empty filters are left out of the histogram.
    ///
    /// # Panics
    /// If the two sets have different filter lengths.
    pub fn measure(a: &Filters, b: &Filters, threshold: f64) -> Self {
        assert_eq!(a.words(), b.words(), "filters of equal length");
        let bits = a.words() * 64;
        let counts = |f: &Filters| {
            let mut hist = vec![0u64; bits + 1];
            (0..f.len()).for_each(|i| hist[f.count(i) as usize] += 1);
            hist[0] = 0;
            hist
        };
        let mean = |hist: &[u64]| {
            let n: u64 = hist.iter().sum();
            let sum: f64 = hist
                .iter()
                .enumerate()
                .map(|(x, &c)| x as f64 * c as f64)
                .sum();
            if n == 0 { 0.0 } else { sum / n as f64 }
        };
        let popcounts = [counts(a), counts(b)];
        let mean_popcount = [mean(&popcounts[0]), mean(&popcounts[1])];
        let (na, nb) = (a.len() as u64, b.len() as u64);
        let total = na * nb;
        let pairs: Vec<(u32, u32)> = if total <= DISTANCE_SAMPLE {
            (0..na as u32)
                .flat_map(|i| (0..nb as u32).map(move |j| (i, j)))
                .collect()
        } else {
            let mut state = DISTANCE_SAMPLE_SEED;
            (0..DISTANCE_SAMPLE)
                .map(|_| {
                    let i = splitmix(&mut state) % na;
                    let j = splitmix(&mut state) % nb;
                    (i as u32, j as u32)
                })
                .collect()
        };
        let histogram = pairs
            .par_chunks(4096)
            .fold(
                || vec![0u64; bits + 1],
                |mut hist, chunk| {
                    for &(i, j) in chunk {
                        let (ca, cb) = (a.count(i as usize), b.count(j as usize));
                        if ca + cb == 0 {
                            continue;
                        }
                        let (fa, fb) = (a.get(i as usize), b.get(j as usize));
                        let common: u32 =
                            fa.iter().zip(fb).map(|(x, y)| (x & y).count_ones()).sum();
                        // The Dice rule of score_pair: a match when 2·common ≥ t·(ca + cb).
                        if 2.0 * f64::from(common) >= threshold * f64::from(ca + cb) {
                            continue;
                        }
                        hist[(ca + cb - 2 * common) as usize] += 1;
                    }
                    hist
                },
            )
            .reduce(
                || vec![0u64; bits + 1],
                |mut x, y| {
                    x.iter_mut().zip(&y).for_each(|(p, q)| *p += q);
                    x
                },
            );
        Self {
            bits,
            histogram,
            drawn: pairs.len() as u64,
            mean_popcount,
            popcounts,
        }
    }

    /// Pairs in the histogram (drawn pairs minus matches and pairs of empty filters).
    pub fn pairs(&self) -> u64 {
        self.histogram.iter().sum()
    }

    /// `q(r)`: the probability that a random non-matching pair collides in one band of `r`
    /// bits, the mean of [`band_probability`] over the sampled distances (0 without pairs).
    pub fn random_band_probability(&self, r: u32) -> f64 {
        let n = self.pairs();
        if n == 0 {
            return 0.0;
        }
        self.histogram
            .iter()
            .enumerate()
            .filter(|&(_, &c)| c > 0)
            .map(|(h, &c)| c as f64 * band_probability(self.bits, h as f64, r))
            .sum::<f64>()
            / n as f64
    }

    /// The Hamming distance of a pair at Dice `threshold` whose popcounts are the holders'
    /// means: `(1 − t)·(x̄_a + x̄_b)` (Dice = 1 − h/(x + y)).
    pub fn distance_at_threshold(&self, threshold: f64) -> f64 {
        (1.0 - threshold).max(0.0) * (self.mean_popcount[0] + self.mean_popcount[1])
    }

    /// `P_t(r, b)`: the probability that a pair at Dice `threshold` becomes a candidate with
    /// `b` bands of `r` bits, for two filters of popcount `x` (Hamming distance
    /// `h = 2·(1 − t)·x`), averaged over the popcounts `x` of each holder's non-empty filters
    /// and then over the two holders: `½ Σ_k Σ_x w_k(x)·(1 − (1 − p(h, r))^b)`, `p` the
    /// [`band_probability`]. 0 without filters.
    pub fn candidate_probability_at_threshold(&self, threshold: f64, r: u32, b: u32) -> f64 {
        let per_holder = |hist: &[u64]| {
            let n: u64 = hist.iter().sum();
            if n == 0 {
                return None;
            }
            let sum: f64 = hist
                .iter()
                .enumerate()
                .filter(|&(_, &c)| c > 0)
                .map(|(x, &c)| {
                    let h = 2.0 * (1.0 - threshold).max(0.0) * x as f64;
                    let p = band_probability(self.bits, h, r);
                    c as f64 * (1.0 - (1.0 - p).powi(b as i32))
                })
                .sum();
            Some(sum / n as f64)
        };
        let got: Vec<f64> = self
            .popcounts
            .iter()
            .filter_map(|h| per_holder(h))
            .collect();
        if got.is_empty() {
            0.0
        } else {
            got.iter().sum::<f64>() / got.len() as f64
        }
    }
}

/// Hamming-LSH parameters for one pair of holders, with the figures they were chosen by.
#[derive(Clone, Debug, PartialEq)]
pub struct LshChoice {
    /// The parameters used (seed and `max_bucket` from [`LshParams::default`]).
    pub params: LshParams,
    /// Whether `bands` was chosen from the data (false: taken from the schema).
    pub bands_chosen: bool,
    /// Whether `bits_per_band` was chosen from the data (false: taken from the schema).
    pub bits_chosen: bool,
    /// Records of the two holders.
    pub records: [u64; 2],
    /// Mean popcount of each holder's non-empty filters (bits).
    pub mean_popcount: [f64; 2],
    /// Sampled non-matching pairs behind `random_band_probability`.
    pub sampled_pairs: u64,
    /// `q(r)`: probability that a random non-matching pair collides in one band.
    pub random_band_probability: f64,
    /// `q(r)·n_a·n_b`: expected random collisions per band.
    pub random_collisions_per_band: f64,
    /// Hamming distance (bits) of a pair at the Dice threshold with the mean popcounts.
    pub distance_at_threshold: f64,
    /// `p(r)`: probability that such a pair collides in one band.
    pub band_probability_at_threshold: f64,
    /// `P_t(r, b)`: probability that a pair at the threshold becomes a candidate, averaged
    /// over the holders' popcounts ([`DistanceSample::candidate_probability_at_threshold`]).
    pub candidate_probability_at_threshold: f64,
}

/// Bits per band and bands for two holders' filters `a` × `b` at Dice `threshold`
/// (SPEC.md §7.4); `bands` / `bits_per_band` given (from the schema) are used as they are.
///
/// * `r` (bits per band): the smallest in `1..=min(64, bits)` with
///   `q(r)·n_a·n_b ≤ c·(n_a + n_b)`, `c =` [`RANDOM_COLLISIONS_PER_RECORD`], `q` from a
///   [`DistanceSample`]; `min(64, bits)` when none is.
/// * `b` (bands): the smallest in `1..=`[`MAX_CHOSEN_BANDS`] with
///   `P_t(r, b) ≥` [`TARGET_AT_THRESHOLD`]
///   ([`DistanceSample::candidate_probability_at_threshold`]); [`MAX_CHOSEN_BANDS`] when
///   none is.
///
/// # Panics
/// If the two sets have different filter lengths.
pub fn choose_params(
    a: &Filters,
    b: &Filters,
    threshold: f64,
    bands: Option<u32>,
    bits_per_band: Option<u32>,
) -> LshChoice {
    let sample = DistanceSample::measure(a, b, threshold);
    choose_from_sample(
        &sample,
        [a.len() as u64, b.len() as u64],
        threshold,
        bands,
        bits_per_band,
    )
}

/// [`choose_params`] from a sample already measured.
pub fn choose_from_sample(
    sample: &DistanceSample,
    records: [u64; 2],
    threshold: f64,
    bands: Option<u32>,
    bits_per_band: Option<u32>,
) -> LshChoice {
    let (na, nb) = (records[0] as f64, records[1] as f64);
    let budget = RANDOM_COLLISIONS_PER_RECORD * (na + nb);
    let max_r = 64.min(sample.bits) as u32;
    let r = bits_per_band.unwrap_or_else(|| {
        (1..=max_r)
            .find(|&r| sample.random_band_probability(r) * na * nb <= budget)
            .unwrap_or(max_r)
    });
    let h = sample.distance_at_threshold(threshold);
    let p = band_probability(sample.bits, h, r);
    let reach = |b: u32| sample.candidate_probability_at_threshold(threshold, r, b);
    // reach grows with b: bisect for the least b that reaches the target.
    let b = bands.unwrap_or_else(|| {
        if reach(MAX_CHOSEN_BANDS) < TARGET_AT_THRESHOLD {
            return MAX_CHOSEN_BANDS;
        }
        let (mut lo, mut hi) = (0u32, MAX_CHOSEN_BANDS);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if reach(mid) >= TARGET_AT_THRESHOLD {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi
    });
    let q = sample.random_band_probability(r);
    LshChoice {
        params: LshParams {
            bands: b,
            bits_per_band: r,
            ..LshParams::default()
        },
        bands_chosen: bands.is_none(),
        bits_chosen: bits_per_band.is_none(),
        records,
        mean_popcount: sample.mean_popcount,
        sampled_pairs: sample.pairs(),
        random_band_probability: q,
        random_collisions_per_band: q * na * nb,
        distance_at_threshold: h,
        band_probability_at_threshold: p,
        candidate_probability_at_threshold: reach(b),
    }
}

/// Candidate pairs and the counts that describe them.
#[derive(Debug, Default)]
pub struct LshCandidates {
    /// `(index in a, index in b)`, sorted and distinct.
    pub pairs: Vec<(u32, u32)>,
    /// Band collisions before removing duplicates.
    pub collisions: u64,
    /// Buckets skipped for exceeding `max_bucket`.
    pub skipped_buckets: u64,
}

/// The probability that a pair at relative Hamming distance `d = h/m` becomes a candidate:
/// `1 − (1 − (1 − d)^r)^b`.
pub fn candidate_probability(params: &LshParams, d: f64) -> f64 {
    let band = (1.0 - d).powi(params.bits_per_band as i32);
    1.0 - (1.0 - band).powi(params.bands as i32)
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The sampled positions: `bands` rows of `bits_per_band` distinct positions below `bits`.
///
/// # Panics
/// If `bits_per_band` is not in `1..=64` or exceeds `bits`.
pub fn band_positions(params: &LshParams, bits: usize) -> Vec<Vec<u32>> {
    let r = params.bits_per_band as usize;
    assert!(
        (1..=64).contains(&r) && r <= bits,
        "bits_per_band must be 1..=64 and at most the filter length"
    );
    let mut state = params.seed;
    (0..params.bands)
        .map(|_| {
            let mut row: Vec<u32> = Vec::with_capacity(r);
            while row.len() < r {
                let p = (splitmix(&mut state) % bits as u64) as u32;
                if !row.contains(&p) {
                    row.push(p);
                }
            }
            row
        })
        .collect()
}

fn band_key(filter: &[u64], positions: &[u32]) -> u64 {
    let mut key = 0u64;
    for (i, &p) in positions.iter().enumerate() {
        key |= (filter[(p / 64) as usize] >> (p % 64) & 1) << i;
    }
    key
}

/// Candidate pairs between the filters of two holders (see the module docs), materialized:
/// memory `O(candidates)`. The reference for [`LshBands::score`], which streams the same
/// pairs into Dice scoring instead; bands run in parallel on rayon's threads.
///
/// # Panics
/// If the two sets have different filter lengths, or on invalid `params` (see
/// [`band_positions`]).
pub fn candidates(a: &Filters, b: &Filters, params: &LshParams) -> LshCandidates {
    assert_eq!(a.words(), b.words(), "filters of equal length");
    let rows = band_positions(params, a.words() * 64);
    let max = params.max_bucket as usize;
    let per_band: Vec<(Vec<u64>, u64, u64)> = rows
        .par_iter()
        .map(|pos| {
            let keyed = |f: &Filters| -> Vec<(u64, u32)> {
                let mut v: Vec<(u64, u32)> = (0..f.len())
                    .map(|i| (band_key(f.get(i), pos), i as u32))
                    .collect();
                v.sort_unstable();
                v
            };
            let (ka, kb) = (keyed(a), keyed(b));
            let mut out = Vec::new();
            let (mut collisions, mut skipped) = (0u64, 0u64);
            let (mut i, mut j) = (0, 0);
            while i < ka.len() && j < kb.len() {
                let (x, y) = (ka[i].0, kb[j].0);
                if x < y {
                    i += 1;
                } else if y < x {
                    j += 1;
                } else {
                    let ie = i + ka[i..].partition_point(|e| e.0 == x);
                    let je = j + kb[j..].partition_point(|e| e.0 == x);
                    if ie - i > max || je - j > max {
                        skipped += 1;
                    } else {
                        for &(_, ra) in &ka[i..ie] {
                            for &(_, rb) in &kb[j..je] {
                                out.push(u64::from(ra) << 32 | u64::from(rb));
                            }
                        }
                        collisions += ((ie - i) * (je - j)) as u64;
                    }
                    i = ie;
                    j = je;
                }
            }
            (out, collisions, skipped)
        })
        .collect();
    let collisions = per_band.iter().map(|x| x.1).sum();
    let skipped_buckets = per_band.iter().map(|x| x.2).sum();
    let mut all: Vec<u64> = per_band.into_iter().flat_map(|x| x.0).collect();
    all.par_sort_unstable();
    all.dedup();
    LshCandidates {
        pairs: all
            .into_iter()
            .map(|p| ((p >> 32) as u32, p as u32))
            .collect(),
        collisions,
        skipped_buckets,
    }
}

/// Hamming-LSH candidates scored as they are found ([`LshBands::score`]).
#[derive(Debug, Default)]
pub struct LshScored {
    /// Candidate pairs with Dice ≥ the threshold, sorted by `(a, b)`, each once.
    pub pairs: Vec<Candidate>,
    /// Distinct candidate pairs (each scored once): the length of [`candidates`]' pairs.
    pub candidates: u64,
    /// Band collisions before removing duplicates (as [`LshCandidates::collisions`]).
    pub collisions: u64,
    /// Buckets skipped for exceeding `max_bucket` (as [`LshCandidates::skipped_buckets`]).
    pub skipped_buckets: u64,
}

/// The bands of one Hamming-LSH run between two holders' filters: sampled positions (also as
/// per-word masks) and, once [`LshBands::score`] has run, the keys of the buckets it skipped.
/// Decides whether a pair is a candidate without the candidate set ([`LshBands::is_candidate`]).
#[derive(Clone, Debug)]
pub struct LshBands {
    rows: Vec<Vec<u32>>,
    /// Sampled bits of band `k` as `(word, mask)`: `masks[starts[k]..starts[k + 1]]`.
    masks: Vec<(u32, u64)>,
    starts: Vec<usize>,
    /// Sampled bits of band `k` as a whole-filter mask: `dense[k·words..(k + 1)·words]`
    /// (for 16-word filters, where checking earlier bands is the hot loop).
    dense: Vec<u64>,
    /// Sorted keys of the buckets skipped in each band.
    skipped: Vec<Vec<u64>>,
    max_bucket: usize,
    scored: bool,
}

impl LshBands {
    /// The bands of `params` for filters of `bits` bits.
    ///
    /// # Panics
    /// On invalid `params` (see [`band_positions`]).
    pub fn new(params: &LshParams, bits: usize) -> Self {
        let rows = band_positions(params, bits);
        let mut masks = Vec::new();
        let mut starts = vec![0];
        for row in &rows {
            let mut m: Vec<(u32, u64)> = Vec::new();
            for &p in row {
                let (w, bit) = (p / 64, 1u64 << (p % 64));
                match m.iter_mut().find(|e| e.0 == w) {
                    Some(e) => e.1 |= bit,
                    None => m.push((w, bit)),
                }
            }
            m.sort_unstable();
            masks.extend(m);
            starts.push(masks.len());
        }
        let words = bits.div_ceil(64);
        let mut dense = Vec::new();
        if words == 16 {
            dense = vec![0u64; rows.len() * words];
            for (k, row) in rows.iter().enumerate() {
                for &p in row {
                    dense[k * words + (p / 64) as usize] |= 1 << (p % 64);
                }
            }
        }
        Self {
            skipped: vec![Vec::new(); rows.len()],
            rows,
            masks,
            starts,
            dense,
            max_bucket: params.max_bucket as usize,
            scored: false,
        }
    }

    /// Whether two filters agree on every sampled bit of band `k`.
    #[inline(always)]
    fn agree(&self, k: usize, fa: &[u64], fb: &[u64]) -> bool {
        self.masks[self.starts[k]..self.starts[k + 1]]
            .iter()
            .all(|&(w, m)| (fa[w as usize] ^ fb[w as usize]) & m == 0)
    }

    /// Whether two filters make a candidate in band `k`: same key, bucket not skipped.
    #[inline(always)]
    fn collide(&self, k: usize, fa: &[u64], fb: &[u64]) -> bool {
        self.agree(k, fa, fb) && !self.skipped_bucket(k, fa)
    }

    /// Whether the bucket of `f` in band `k` was skipped.
    #[inline(always)]
    fn skipped_bucket(&self, k: usize, f: &[u64]) -> bool {
        !self.skipped[k].is_empty()
            && self.skipped[k]
                .binary_search(&band_key(f, &self.rows[k]))
                .is_ok()
    }

    /// Whether two filters make a candidate in one of the bands `0..k`: for 16-word filters
    /// their XOR is taken once and tested against each band's whole-filter mask (branch-free
    /// over the words; the masks of all bands fit in L1), otherwise band by band.
    #[inline(always)]
    fn collide_before(&self, k: usize, fa: &[u64], fb: &[u64]) -> bool {
        if let (Ok(a), Ok(b)) = (<&[u64; 16]>::try_from(fa), <&[u64; 16]>::try_from(fb))
            && !self.dense.is_empty()
        {
            let mut x = [0u64; 16];
            for w in 0..16 {
                x[w] = a[w] ^ b[w];
            }
            let (masks, _) = self.dense.as_chunks::<16>();
            return masks[..k].iter().enumerate().any(|(e, m)| {
                let mut acc = 0;
                for w in 0..16 {
                    acc |= x[w] & m[w];
                }
                acc == 0 && !self.skipped_bucket(e, fa)
            });
        }
        (0..k).any(|e| self.collide(e, fa, fb))
    }

    /// Whether two filters (of the sets given to [`LshBands::score`]) are a candidate pair:
    /// they collide in a band whose bucket was not skipped.
    ///
    /// # Panics
    /// Before [`LshBands::score`] has run (the skipped buckets are not known yet).
    pub fn is_candidate(&self, fa: &[u64], fb: &[u64]) -> bool {
        assert!(self.scored, "LshBands::score first");
        self.collide_before(self.rows.len(), fa, fb)
    }

    /// Streams the candidate pairs of `a` × `b` into Dice scoring, band after band, keeping
    /// those with Dice ≥ `threshold` (module docs). Peak memory: one band's sorted keys
    /// (`16·(n_a + n_b)` bytes) plus the pairs kept. Key making, sorting and the buckets of a
    /// band run in parallel on rayon's threads.
    ///
    /// # Panics
    /// If the two sets have different filter lengths or not this band set's length.
    pub fn score(&mut self, a: &Filters, b: &Filters, threshold: f64) -> LshScored {
        assert_eq!(a.words(), b.words(), "filters of equal length");
        assert!(
            self.rows
                .iter()
                .flatten()
                .all(|&p| (p as usize) < a.words() * 64),
            "bands drawn for longer filters"
        );
        let mut out = LshScored::default();
        for k in 0..self.rows.len() {
            let pos = &self.rows[k];
            let keyed = |f: &Filters| -> Vec<(u64, u32)> {
                let mut v: Vec<(u64, u32)> = (0..f.len())
                    .into_par_iter()
                    .map(|i| (band_key(f.get(i), pos), i as u32))
                    .collect();
                v.par_sort_unstable();
                v
            };
            let (ka, kb) = rayon::join(|| keyed(a), || keyed(b));
            // Buckets present on both sides: `(a start, a end, b start, b end)` in ka / kb.
            let mut buckets: Vec<[u32; 4]> = Vec::new();
            let mut skipped = Vec::new();
            let (mut i, mut j) = (0, 0);
            while i < ka.len() && j < kb.len() {
                let (x, y) = (ka[i].0, kb[j].0);
                if x < y {
                    i += 1;
                } else if y < x {
                    j += 1;
                } else {
                    let ie = i + ka[i..].partition_point(|e| e.0 == x);
                    let je = j + kb[j..].partition_point(|e| e.0 == x);
                    if ie - i > self.max_bucket || je - j > self.max_bucket {
                        skipped.push(x);
                    } else {
                        buckets.push([i as u32, ie as u32, j as u32, je as u32]);
                    }
                    i = ie;
                    j = je;
                }
            }
            out.skipped_buckets += skipped.len() as u64;
            self.skipped[k] = skipped;
            let this = &*self;
            let (pairs, candidates, collisions) = buckets
                .par_iter()
                .fold(
                    || (Vec::new(), 0u64, 0u64),
                    |(mut pairs, mut cand, mut coll), &[i0, i1, j0, j1]| {
                        let (ra, rb) =
                            (&ka[i0 as usize..i1 as usize], &kb[j0 as usize..j1 as usize]);
                        coll += (ra.len() * rb.len()) as u64;
                        cand += this.score_bucket(k, a, b, ra, rb, threshold, &mut pairs);
                        (pairs, cand, coll)
                    },
                )
                .reduce(
                    || (Vec::new(), 0, 0),
                    |(mut p, c, n), (q, d, m)| {
                        p.extend(q);
                        (p, c + d, n + m)
                    },
                );
            out.pairs.extend(pairs);
            out.candidates += candidates;
            out.collisions += collisions;
        }
        self.scored = true;
        out.pairs.par_sort_unstable_by_key(|c| (c.a, c.b));
        out
    }

    /// Scores the pairs of one bucket of band `k` that are not candidates of an earlier band;
    /// returns how many it scored.
    #[allow(clippy::too_many_arguments, reason = "internal hot loop")]
    fn score_bucket(
        &self,
        k: usize,
        a: &Filters,
        b: &Filters,
        ra: &[(u64, u32)],
        rb: &[(u64, u32)],
        threshold: f64,
        out: &mut Vec<Candidate>,
    ) -> u64 {
        #[cfg(target_arch = "x86_64")]
        match PairIsa::detect() {
            // SAFETY: the CPU supports the features of the `#[target_feature]` function called
            // (`PairIsa::detect` checked them); the function is safe code.
            #[allow(
                unsafe_code,
                reason = "calling a target_feature function after detection"
            )]
            PairIsa::Avx512 => {
                return unsafe { self.score_bucket_avx512(k, a, b, ra, rb, threshold, out) };
            }
            // SAFETY: as above, for POPCNT.
            #[allow(
                unsafe_code,
                reason = "calling a target_feature function after detection"
            )]
            PairIsa::Popcnt => {
                return unsafe { self.score_bucket_popcnt(k, a, b, ra, rb, threshold, out) };
            }
            PairIsa::Plain => {}
        }
        self.score_bucket_impl(k, a, b, ra, rb, threshold, out)
    }

    /// The same, compiled for AVX-512 (the band-mask test and the AND + popcount of a
    /// 1024-bit pair each become a few 512-bit instructions).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "popcnt,avx512f,avx512vpopcntdq")]
    #[allow(clippy::too_many_arguments, reason = "internal hot loop")]
    fn score_bucket_avx512(
        &self,
        k: usize,
        a: &Filters,
        b: &Filters,
        ra: &[(u64, u32)],
        rb: &[(u64, u32)],
        threshold: f64,
        out: &mut Vec<Candidate>,
    ) -> u64 {
        self.score_bucket_impl(k, a, b, ra, rb, threshold, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "popcnt")]
    #[allow(clippy::too_many_arguments, reason = "internal hot loop")]
    fn score_bucket_popcnt(
        &self,
        k: usize,
        a: &Filters,
        b: &Filters,
        ra: &[(u64, u32)],
        rb: &[(u64, u32)],
        threshold: f64,
        out: &mut Vec<Candidate>,
    ) -> u64 {
        self.score_bucket_impl(k, a, b, ra, rb, threshold, out)
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments, reason = "internal hot loop")]
    fn score_bucket_impl(
        &self,
        k: usize,
        a: &Filters,
        b: &Filters,
        ra: &[(u64, u32)],
        rb: &[(u64, u32)],
        threshold: f64,
        out: &mut Vec<Candidate>,
    ) -> u64 {
        let mut scored = 0;
        for &(_, i) in ra {
            let fa = a.get(i as usize);
            for &(_, j) in rb {
                let fb = b.get(j as usize);
                if self.collide_before(k, fa, fb) {
                    continue;
                }
                scored += 1;
                if let Some(c) = score_pair(a, b, i, j, threshold) {
                    out.push(c);
                }
            }
        }
        scored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(rows: &[Vec<u64>]) -> Filters {
        let mut f = Filters::new(rows[0].len());
        for r in rows {
            f.push(r);
        }
        f
    }

    fn lcg(s: &mut u64) -> u64 {
        *s = s
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        *s >> 11
    }

    #[test]
    fn positions_are_distinct_in_range_and_seeded() {
        let p = LshParams::default();
        let rows = band_positions(&p, 1024);
        assert_eq!(rows.len(), 48);
        for r in &rows {
            assert_eq!(r.len(), 16);
            assert!(r.iter().all(|&x| x < 1024));
            let mut s = r.clone();
            s.sort_unstable();
            s.dedup();
            assert_eq!(s.len(), 16);
        }
        assert_eq!(rows, band_positions(&p, 1024));
        let other = LshParams { seed: 1, ..p };
        assert_ne!(rows, band_positions(&other, 1024));
    }

    #[test]
    fn near_duplicates_collide_and_random_filters_rarely_do() {
        // 500 random 1024-bit filters at density 0.3; b holds copies with 2 % of bits
        // flipped (a match) in reverse order, plus 500 fresh random filters.
        let mut s = 42u64;
        let a_rows: Vec<Vec<u64>> = (0..500)
            .map(|_| {
                (0..16)
                    .map(|_| (0..64).fold(0u64, |w, b| w | u64::from(lcg(&mut s) % 10 < 3) << b))
                    .collect()
            })
            .collect();
        let mut b_rows: Vec<Vec<u64>> = a_rows
            .iter()
            .rev()
            .map(|r| {
                let mut r = r.clone();
                for _ in 0..20 {
                    let p = (lcg(&mut s) % 1024) as usize;
                    r[p / 64] ^= 1 << (p % 64);
                }
                r
            })
            .collect();
        for _ in 0..500 {
            b_rows.push(
                (0..16)
                    .map(|_| (0..64).fold(0u64, |w, b| w | u64::from(lcg(&mut s) % 10 < 3) << b))
                    .collect(),
            );
        }
        let (a, b) = (filters(&a_rows), filters(&b_rows));
        let c = candidates(&a, &b, &LshParams::default());
        let found = (0..500u32)
            .filter(|&i| c.pairs.binary_search(&(i, 499 - i)).is_ok())
            .count();
        // Expected completeness at d ≈ 0.02: candidate_probability ≈ 1 − 1e-9.
        assert!(candidate_probability(&LshParams::default(), 0.02) > 0.999_999);
        assert_eq!(found, 500, "every near-duplicate is a candidate");
        let total = 500 * 1000;
        assert!(
            c.pairs.len() < 500 + total / 100,
            "{} candidates of {total} pairs",
            c.pairs.len()
        );
        assert!(c.pairs.windows(2).all(|w| w[0] < w[1]), "sorted, distinct");
    }

    #[test]
    fn oversized_buckets_are_skipped_and_counted() {
        let zero = vec![0u64; 16];
        let a = filters(&vec![zero.clone(); 10]);
        let b = filters(&vec![zero; 10]);
        let p = LshParams {
            max_bucket: 5,
            ..LshParams::default()
        };
        let c = candidates(&a, &b, &p);
        assert!(c.pairs.is_empty());
        assert_eq!(c.skipped_buckets, 48);
        let all = candidates(&a, &b, &LshParams::default());
        assert_eq!(all.pairs.len(), 100);
        assert_eq!(all.collisions, 48 * 100);
    }

    /// Filters of `words` words in families: each family a random base (density 1/8 to 1/2,
    /// so sparse filters collide in many bands) and members with a few bits flipped; plus
    /// copies of one filter to fill an oversized bucket.
    fn families(seed: u64, words: usize, n: usize) -> Vec<Vec<u64>> {
        let mut s = seed;
        let mut rows = Vec::new();
        while rows.len() < n {
            let density = 1 + lcg(&mut s) % 4;
            let base: Vec<u64> = (0..words)
                .map(|_| (0..64).fold(0u64, |w, b| w | u64::from(lcg(&mut s) % 8 < density) << b))
                .collect();
            for _ in 0..1 + lcg(&mut s) % 4 {
                let mut r = base.clone();
                for _ in 0..lcg(&mut s) % (words as u64 * 4) {
                    let p = (lcg(&mut s) % (words as u64 * 64)) as usize;
                    r[p / 64] ^= 1 << (p % 64);
                }
                rows.push(r);
            }
        }
        rows.extend(std::iter::repeat_n(rows[0].clone(), 12));
        rows
    }

    #[test]
    fn streamed_scoring_equals_scoring_the_materialized_candidates() {
        for (words, seed) in [(16, 1u64), (16, 2), (5, 3)] {
            let rows = families(seed, words, 300);
            let (a, b) = (
                filters(&rows[..rows.len() / 2 + 20]),
                filters(&rows[rows.len() / 2 - 20..]),
            );
            for (bands, bits_per_band, max_bucket) in [(48, 16, 1000), (24, 8, 10), (8, 4, 6)] {
                let params = LshParams {
                    bands,
                    bits_per_band,
                    max_bucket,
                    ..LshParams::default()
                };
                let reference = candidates(&a, &b, &params);
                for t in [0.0, 0.5, 0.8] {
                    let mut lsh = LshBands::new(&params, words * 64);
                    let got = lsh.score(&a, &b, t);
                    let want = crate::dice::score_candidates(&a, &b, &reference.pairs, t);
                    assert_eq!(got.candidates, reference.pairs.len() as u64);
                    assert_eq!(got.collisions, reference.collisions);
                    assert_eq!(got.skipped_buckets, reference.skipped_buckets);
                    assert_eq!(
                        got.pairs.len(),
                        want.len(),
                        "{words} words, t {t}, {params:?}"
                    );
                    for (x, y) in got.pairs.iter().zip(&want) {
                        assert_eq!((x.a, x.b, x.score.to_bits()), (y.a, y.b, y.score.to_bits()));
                    }
                    // The membership test agrees with the candidate set on every pair.
                    for i in 0..a.len() as u32 {
                        for j in 0..b.len() as u32 {
                            assert_eq!(
                                lsh.is_candidate(a.get(i as usize), b.get(j as usize)),
                                reference.pairs.binary_search(&(i, j)).is_ok(),
                                "({i}, {j})"
                            );
                        }
                    }
                }
                // The test data exercise what the streaming has to get right.
                assert!(
                    reference.collisions > reference.pairs.len() as u64,
                    "repeat collisions"
                );
                if max_bucket < 1000 {
                    assert!(reference.skipped_buckets > 0, "skipped buckets");
                }
            }
        }
    }

    /// `n_a` random filters of varied density (1/8 to 3/8) and `n_b` = the first `matches`
    /// of them moved to Dice ≈ `t` (the same popcount, `h` bits moved) plus random ones.
    fn population(seed: u64, na: usize, nb: usize, matches: usize, t: f64) -> (Filters, Filters) {
        let mut s = seed;
        let random = |s: &mut u64| -> Vec<u64> {
            let density = 1 + lcg(s) % 3;
            (0..16)
                .map(|_| (0..64).fold(0u64, |w, b| w | u64::from(lcg(s) % 8 < density) << b))
                .collect()
        };
        let a_rows: Vec<Vec<u64>> = (0..na).map(|_| random(&mut s)).collect();
        let mut b_rows = Vec::new();
        for r in &a_rows[..matches] {
            // Dice = 1 − h/(2x) for h/2 set bits cleared and h/2 clear bits set.
            let x: u32 = r.iter().map(|w| w.count_ones()).sum();
            let half = ((1.0 - t) * f64::from(x)).floor() as usize;
            let mut r = r.clone();
            let (mut off, mut on) = (0, 0);
            while off < half || on < half {
                let p = (lcg(&mut s) % 1024) as usize;
                let set = r[p / 64] >> (p % 64) & 1 == 1;
                if set && off < half {
                    r[p / 64] &= !(1 << (p % 64));
                    off += 1;
                } else if !set && on < half && off > on {
                    r[p / 64] |= 1 << (p % 64);
                    on += 1;
                }
            }
            b_rows.push(r);
        }
        while b_rows.len() < nb {
            b_rows.push(random(&mut s));
        }
        (filters(&a_rows), filters(&b_rows))
    }

    #[test]
    fn band_probability_counts_position_sets() {
        // Against counting: r-subsets of the bits − h agreeing positions over all r-subsets.
        let choose = |n: u64, k: u64| -> f64 {
            (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
        };
        for (bits, h, r) in [
            (8usize, 3u64, 2u32),
            (64, 10, 5),
            (1024, 100, 16),
            (16, 10, 7),
        ] {
            let want = if h + u64::from(r) > bits as u64 {
                0.0
            } else {
                choose(bits as u64 - h, r.into()) / choose(bits as u64, r.into())
            };
            let got = band_probability(bits, h as f64, r);
            assert!(
                (got - want).abs() <= 1e-12 * want.max(1e-300),
                "{bits} {h} {r}: {got} {want}"
            );
            // Without replacement collides less often than (1 − h/bits)^r.
            assert!(got <= (1.0 - h as f64 / bits as f64).powi(r as i32) + 1e-15);
        }
    }

    #[test]
    fn the_distance_sample_is_the_histogram_of_all_non_matching_pairs_when_small() {
        let (a, b) = population(7, 300, 200, 50, 0.8);
        let sample = DistanceSample::measure(&a, &b, 0.8);
        assert_eq!(sample.drawn, 300 * 200);
        let mut want = vec![0u64; 1025];
        let mut matches = 0;
        for i in 0..a.len() {
            for j in 0..b.len() {
                let (fa, fb) = (a.get(i), b.get(j));
                if crate::dice::dice(fa, fb) >= 0.8 {
                    matches += 1;
                    continue;
                }
                let h: u32 = fa.iter().zip(fb).map(|(x, y)| (x ^ y).count_ones()).sum();
                want[h as usize] += 1;
            }
        }
        assert!(matches >= 50, "the moved copies are matches");
        assert_eq!(sample.histogram, want);
        assert_eq!(sample.pairs() + matches, 300 * 200);
        let mean =
            |f: &Filters| (0..f.len()).map(|i| f64::from(f.count(i))).sum::<f64>() / f.len() as f64;
        assert!((sample.mean_popcount[0] - mean(&a)).abs() < 1e-9);
        assert!((sample.mean_popcount[1] - mean(&b)).abs() < 1e-9);
    }

    #[test]
    fn a_sampled_estimate_is_close_to_the_exact_one() {
        // 1600 × 1000 pairs: more than DISTANCE_SAMPLE, so pairs are drawn.
        let (a, b) = population(8, 1600, 1000, 0, 0.8);
        let sample = DistanceSample::measure(&a, &b, 0.8);
        assert_eq!(sample.drawn, DISTANCE_SAMPLE);
        assert_eq!(sample, DistanceSample::measure(&a, &b, 0.8), "seeded");
        let exact = |r: u32| {
            let mut sum = 0.0;
            for i in 0..a.len() {
                for j in 0..b.len() {
                    let h: u32 = a
                        .get(i)
                        .iter()
                        .zip(b.get(j))
                        .map(|(x, y)| (x ^ y).count_ones())
                        .sum();
                    sum += band_probability(1024, f64::from(h), r);
                }
            }
            sum / (a.len() * b.len()) as f64
        };
        for r in [4, 12, 24] {
            let (got, want) = (sample.random_band_probability(r), exact(r));
            assert!(
                (got / want - 1.0).abs() < 0.05,
                "r {r}: sampled {got}, exact {want}"
            );
        }
    }

    /// The bounds a chosen value promises ([`choose_params`]): each chosen value the least
    /// that meets its bound.
    fn assert_bounds(
        choice: &LshChoice,
        records: [u64; 2],
        threshold: f64,
        sample: &DistanceSample,
    ) {
        let (na, nb) = (records[0] as f64, records[1] as f64);
        let budget = RANDOM_COLLISIONS_PER_RECORD * (na + nb);
        let r = choice.params.bits_per_band;
        let q = |r: u32| sample.random_band_probability(r);
        if choice.bits_chosen {
            assert!(q(r) * na * nb <= budget || r == 64, "{choice:?}");
            assert!(r == 1 || q(r - 1) * na * nb > budget, "least r: {choice:?}");
        }
        let p = band_probability(1024, sample.distance_at_threshold(threshold), r);
        assert_eq!(choice.band_probability_at_threshold, p);
        // P_t recomputed from the filters' popcounts, filter by filter.
        let reach = |b: u32| {
            let per = |hist: &[u64]| {
                let xs: Vec<usize> = hist
                    .iter()
                    .enumerate()
                    .flat_map(|(x, &c)| std::iter::repeat_n(x, c as usize))
                    .collect();
                xs.iter()
                    .map(|&x| {
                        let p = band_probability(1024, 2.0 * (1.0 - threshold) * x as f64, r);
                        1.0 - (1.0 - p).powi(b as i32)
                    })
                    .sum::<f64>()
                    / xs.len() as f64
            };
            (per(&sample.popcounts[0]) + per(&sample.popcounts[1])) / 2.0
        };
        let b = choice.params.bands;
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-12;
        assert!(close(choice.candidate_probability_at_threshold, reach(b)));
        if choice.bands_chosen {
            assert!(
                reach(b) >= TARGET_AT_THRESHOLD - 1e-12 || b == MAX_CHOSEN_BANDS,
                "{choice:?}"
            );
            assert!(b <= MAX_CHOSEN_BANDS);
            assert!(
                b == 1 || reach(b - 1) < TARGET_AT_THRESHOLD + 1e-12,
                "least b: {choice:?}"
            );
        }
        assert!((choice.random_collisions_per_band - q(r) * na * nb).abs() <= 1e-9 * budget);
    }

    #[test]
    fn chosen_parameters_meet_their_bounds_and_hold_in_a_run() {
        let t = 0.8;
        let (a, b) = population(9, 3000, 3000, 1000, t);
        let sample = DistanceSample::measure(&a, &b, t);
        let choice = choose_params(&a, &b, t, None, None);
        assert!(choice.bands_chosen && choice.bits_chosen);
        assert_bounds(&choice, [3000, 3000], t, &sample);
        assert!(choice.candidate_probability_at_threshold >= TARGET_AT_THRESHOLD);
        // Larger populations need longer bands.
        let big = choose_from_sample(&sample, [1_000_000, 1_000_000], t, None, None);
        assert_bounds(&big, [1_000_000, 1_000_000], t, &sample);
        assert!(
            big.params.bits_per_band > choice.params.bits_per_band,
            "{big:?} {choice:?}"
        );
        // A run: random collisions per band near the expectation; the pairs moved to the
        // threshold are candidates at the promised rate (expected misses ≤ 1 of 1000).
        let mut bands = LshBands::new(&choice.params, 1024);
        let scored = bands.score(&a, &b, t);
        let found = (0..1000)
            .filter(|&i| bands.is_candidate(a.get(i), b.get(i)))
            .count();
        assert!(
            found >= 995,
            "{found} of 1000 pairs at the threshold are candidates"
        );
        let per_band = (scored.collisions - found as u64) as f64 / f64::from(choice.params.bands);
        let expected = choice.random_collisions_per_band;
        eprintln!(
            "{} bands × {} bits: {found} of 1000 at the threshold, {per_band:.1} random collisions per band (expected {expected:.1}); 10^6 × 10^6: {} × {}",
            choice.params.bands,
            choice.params.bits_per_band,
            big.params.bands,
            big.params.bits_per_band
        );
        assert!(
            per_band < 3.0 * expected + 10.0 && per_band > expected / 3.0 - 10.0,
            "random collisions per band {per_band}, expected {expected}"
        );
    }

    #[test]
    fn a_threshold_too_low_for_lsh_gets_the_most_bands_and_says_so() {
        let t = 0.3;
        let (a, b) = population(11, 400, 400, 100, t);
        let c = choose_params(&a, &b, t, None, None);
        assert_eq!(c.params.bands, MAX_CHOSEN_BANDS);
        assert!(
            c.candidate_probability_at_threshold < TARGET_AT_THRESHOLD,
            "{c:?}"
        );
        assert_bounds(&c, [400, 400], t, &DistanceSample::measure(&a, &b, t));
    }

    #[test]
    fn explicit_values_are_used_as_they_are() {
        let t = 0.8;
        let (a, b) = population(10, 500, 500, 100, t);
        let sample = DistanceSample::measure(&a, &b, t);
        for (bands, bits) in [
            (Some(7), Some(13)),
            (Some(1), Some(64)),
            (Some(1024), Some(1)),
        ] {
            let c = choose_params(&a, &b, t, bands, bits);
            assert_eq!(
                (Some(c.params.bands), Some(c.params.bits_per_band)),
                (bands, bits)
            );
            assert!(!c.bands_chosen && !c.bits_chosen);
            assert_eq!(c.params.seed, LshParams::default().seed);
            assert_eq!(c.params.max_bucket, LshParams::default().max_bucket);
            assert_bounds(&c, [500, 500], t, &sample);
        }
        // One given, the other chosen for it.
        for r in [8, 20, 40] {
            let c = choose_params(&a, &b, t, None, Some(r));
            assert_eq!(c.params.bits_per_band, r);
            assert!(c.bands_chosen && !c.bits_chosen);
            assert_bounds(&c, [500, 500], t, &sample);
        }
        let c = choose_params(&a, &b, t, Some(3), None);
        assert_eq!(c.params.bands, 3);
        assert_bounds(&c, [500, 500], t, &sample);
    }
}
