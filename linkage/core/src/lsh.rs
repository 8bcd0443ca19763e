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

use rayon::prelude::*;

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
        Self {
            skipped: vec![Vec::new(); rows.len()],
            rows,
            masks,
            starts,
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
        self.agree(k, fa, fb)
            && (self.skipped[k].is_empty()
                || self.skipped[k]
                    .binary_search(&band_key(fa, &self.rows[k]))
                    .is_err())
    }

    /// Whether two filters (of the sets given to [`LshBands::score`]) are a candidate pair:
    /// they collide in a band whose bucket was not skipped.
    ///
    /// # Panics
    /// Before [`LshBands::score`] has run (the skipped buckets are not known yet).
    pub fn is_candidate(&self, fa: &[u64], fb: &[u64]) -> bool {
        assert!(self.scored, "LshBands::score first");
        (0..self.rows.len()).any(|k| self.collide(k, fa, fb))
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
        if std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: the CPU supports POPCNT (checked just above), the only requirement of
            // a `#[target_feature(enable = "popcnt")]` function; the function is safe code.
            #[allow(
                unsafe_code,
                reason = "calling a target_feature function after detection"
            )]
            return unsafe { self.score_bucket_popcnt(k, a, b, ra, rb, threshold, out) };
        }
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
                if (0..k).any(|e| self.collide(e, fa, fb)) {
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
}
