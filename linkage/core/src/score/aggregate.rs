//! The candidate pairs of a scored run reduced to what the engine needs of them (SPEC.md
//! §9.6.1): a distributed [`super::PairStage`] keeps the pairs and their comparison vectors
//! where they were made and returns only these aggregates, so the driver's memory grows with
//! the patterns and the links, not with the candidates.
//!
//! * [`PairGroup`]s: distinct `(holder pair, pattern code, term-frequency bits)` with counts.
//!   The fit (pattern counts, EM's term-frequency groups), the expected matches, the
//!   estimated precision/recall curve, the threshold, the weight histogram and the
//!   identifiability of recall per holder pair all follow from them: a pair's match weight is
//!   a function of its code and term-frequency bits ([`WeightTerms::weight`] + bits).
//! * [`select_links`]: the pairs at or above the threshold, and how many a veto refused.
//! * [`candidate_totals`]: per holder pair, the model's matches the clusters miss, given
//!   the clusters (SPEC.md §9.4).
//!
//! Each function works on any slice of the candidates; partial results add up
//! ([`merge_groups`], [`CandidateTotals::merge`]). `renketsu link` runs them on all of its
//! candidates at once, a Spark job on each partition.

use std::collections::BTreeMap;

use rayon::prelude::*;

use super::compare::{Compared, Dims};
use super::em::WeightTerms;
use super::{free_pair_probability, probability};
use crate::cluster::ScoredLink;
use crate::tokenlink::party_of;

/// Which candidate pairs a [`super::PairStage`] that keeps them is asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PairSet {
    /// The candidates among the training sample's records (SPEC.md §9.3).
    Training,
    /// Every candidate of the run.
    All,
}

impl PairSet {
    /// The set's name as a distributed stage keys it (`"training"`, `"all"`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Training => "training",
            Self::All => "all",
        }
    }
}

/// Candidate pairs of holders `holders` (`(i, j)`, `i < j`) with pattern `code` and
/// term-frequency bits `tf_bits` (bits, as [`Compared::tf_bits`]), `count` of them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PairGroup {
    /// The two holders, in input order.
    pub holders: (u16, u16),
    /// Pattern code.
    pub code: u32,
    /// Term-frequency bits (exact; groups differ by their bit pattern).
    pub tf_bits: f32,
    /// Pairs in the group.
    pub count: u64,
}

impl PairGroup {
    fn key(&self) -> (u16, u16, u32, u32) {
        (
            self.holders.0,
            self.holders.1,
            self.code,
            self.tf_bits.to_bits(),
        )
    }
}

/// The groups of compared pairs (`pairs[i]` compared as `compared[i]`; global record indices,
/// `holder` of each), sorted by holder pair, code and bits.
///
/// # Panics
/// If `pairs` and `compared` differ in length.
pub fn group_compared(
    holder: impl Fn(u32) -> u16 + Sync,
    pairs: &[(u32, u32)],
    compared: &[Compared],
) -> Vec<PairGroup> {
    assert_eq!(pairs.len(), compared.len(), "one comparison per pair");
    // One 128-bit key per pair (holders, code, bits), sorted and counted.
    let mut keys: Vec<u128> = pairs
        .par_iter()
        .zip(compared)
        .with_min_len(8192)
        .map(|(&(a, b), c)| {
            let (ha, hb) = (holder(a), holder(b));
            let (i, j) = (ha.min(hb), ha.max(hb));
            u128::from(i) << 80
                | u128::from(j) << 64
                | u128::from(c.code) << 32
                | u128::from(c.tf_bits.to_bits())
        })
        .collect();
    keys.par_sort_unstable();
    keys.chunk_by(|x, y| x == y)
        .map(|run| {
            let k = run[0];
            PairGroup {
                holders: ((k >> 80) as u16, (k >> 64) as u16),
                code: (k >> 32) as u32,
                tf_bits: f32::from_bits(k as u32),
                count: run.len() as u64,
            }
        })
        .collect()
}

/// Groups with equal holders, code and bits added up, sorted (partial results of several
/// partitions in any order give the same groups).
pub fn merge_groups(groups: impl IntoIterator<Item = PairGroup>) -> Vec<PairGroup> {
    let mut m: BTreeMap<(u16, u16, u32, u32), u64> = BTreeMap::new();
    for g in groups {
        *m.entry(g.key()).or_default() += g.count;
    }
    m.into_iter()
        .map(|((i, j, code, bits), count)| PairGroup {
            holders: (i, j),
            code,
            tf_bits: f32::from_bits(bits),
            count,
        })
        .collect()
}

/// Distinct pattern codes of the groups with counts, ascending ([`super::em::count_patterns`]
/// of the same pairs).
pub fn patterns_of(groups: &[PairGroup]) -> Vec<(u32, u64)> {
    let mut m: BTreeMap<u32, u64> = BTreeMap::new();
    for g in groups {
        *m.entry(g.code).or_default() += g.count;
    }
    m.into_iter().collect()
}

/// EM's `(pattern, term-frequency bits rounded to 1/16, count)` groups
/// ([`super::em::count_groups`] of the same pairs).
pub fn em_groups_of(groups: &[PairGroup]) -> Vec<(u32, f32, u64)> {
    super::em::count_groups_weighted(groups.iter().map(|g| (g.code, g.tf_bits, g.count)))
}

/// Whether comparison `k` of pattern `code` is at its `disagree` level for some `k` of
/// `comparisons` (a veto comparison refuses the pair).
pub fn disagrees(dims: &Dims, comparisons: &[usize], code: u32) -> bool {
    comparisons
        .iter()
        .any(|&k| dims.level(code, k) == dims.levels[k] - 2)
}

/// The pairs at or above `threshold` (match weight, bits) that no `veto` comparison
/// disagrees on, as links in the order of `pairs`, and the number of pairs above the
/// threshold a veto refused (SPEC.md §9.4, §9.5). `codes[i]` and `weights[i]` (bits) belong
/// to `pairs[i]`.
pub fn select_links(
    dims: &Dims,
    pairs: &[(u32, u32)],
    codes: &[u32],
    weights: &[f32],
    threshold: f64,
    veto: &[usize],
) -> (Vec<ScoredLink>, u64) {
    let mut links = Vec::new();
    let mut vetoed = 0u64;
    for ((&(a, b), &w), &code) in pairs.iter().zip(weights).zip(codes) {
        if f64::from(w) >= threshold {
            if !veto.is_empty() && disagrees(dims, veto, code) {
                vetoed += 1;
                continue;
            }
            links.push(ScoredLink { a, b, weight: w });
        }
    }
    (links, vetoed)
}

/// Match weights (bits) of compared pairs under a model's `table`: `table.weight(code) +
/// tf_bits`, as every stage computes them.
pub fn weights_of(table: &WeightTerms, codes: &[u32], tf_bits: &[f32]) -> Vec<f32> {
    codes
        .iter()
        .zip(tf_bits)
        .map(|(&c, &t)| table.weight(c) + t)
        .collect()
}

/// What [`candidate_totals`] needs of the clusters (SPEC.md §9.4). Every field is as large
/// as the records (`labels`), the clusters (`cluster_holders`) or the holders.
#[derive(Clone, Debug, PartialEq)]
pub struct TotalsContext {
    /// Holder offsets ([`crate::tokenlink::party_offsets`]).
    pub offsets: Vec<u32>,
    /// Cluster label of every record.
    pub labels: Vec<u32>,
    /// Per cluster, the holders among its records (bit `h` for holder `h < 64`).
    pub cluster_holders: Vec<u64>,
    /// Per holder: several records of one person allowed.
    pub duplicates: Vec<bool>,
    /// `both_free[i·holders + j]`: the share of holder pair `(i, j)`'s pairs whose records
    /// are both free (1 where one-to-one linkage does not hold; [`free_pair_probability`]).
    pub both_free: Vec<f64>,
    /// Comparisons whose `disagree` level vetoes a link.
    pub veto: Vec<usize>,
}

impl TotalsContext {
    /// The context of `labels` (dense, `clusters` of them).
    pub fn new(
        offsets: &[u32],
        labels: Vec<u32>,
        clusters: usize,
        duplicates: &[bool],
        veto: &[usize],
    ) -> Self {
        let holders = duplicates.len();
        let mut cluster_holders = vec![0u64; clusters];
        for (g, &l) in labels.iter().enumerate() {
            let h = party_of(offsets, g as u32);
            if h < 64 {
                cluster_holders[l as usize] |= 1 << h;
            }
        }
        // free_count[h][j]: records of holder h whose cluster holds no record of holder j.
        let mut free_count = vec![vec![0u64; holders]; holders];
        let mut holder_size = vec![0u64; holders];
        for (g, &l) in labels.iter().enumerate() {
            let h = party_of(offsets, g as u32);
            holder_size[h] += 1;
            for (j, f) in free_count[h].iter_mut().enumerate() {
                if j >= 64 || cluster_holders[l as usize] & (1 << j) == 0 {
                    *f += 1;
                }
            }
        }
        let mut both_free = vec![1.0; holders * holders];
        for i in 0..holders {
            for j in 0..holders {
                if duplicates[i] || duplicates[j] || holder_size[i] == 0 || holder_size[j] == 0 {
                    continue;
                }
                both_free[i * holders + j] = free_count[i][j] as f64 / holder_size[i] as f64
                    * free_count[j][i] as f64
                    / holder_size[j] as f64;
            }
        }
        Self {
            offsets: offsets.to_vec(),
            labels,
            cluster_holders,
            duplicates: duplicates.to_vec(),
            both_free,
            veto: veto.to_vec(),
        }
    }

    /// Holders.
    pub fn holders(&self) -> usize {
        self.duplicates.len()
    }

    /// [`free_pair_probability`]'s `q` of holder pair `(i, j)`.
    pub fn both_free(&self, i: usize, j: usize) -> f64 {
        self.both_free[i * self.holders() + j]
    }

    fn taken(&self, l: usize, h: usize) -> bool {
        h < 64 && !self.duplicates[h] && self.cluster_holders[l] & (1 << h) != 0
    }
}

/// Per holder pair `(i, j)`, `i < j`: Σ over unlinked, unvetoed candidates whose records are
/// both free of [`free_pair_probability`] (`missed`), and the Σ P(M) of vetoed candidates
/// whose records are both free and of those with a record taken (`vetoed`: `(free, taken)`),
/// for [`super::vetoed_matches`] (SPEC.md §9.4).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CandidateTotals {
    /// Σ of free pairs' probabilities, by holder pair.
    pub missed: BTreeMap<(usize, usize), f64>,
    /// (Σ P over vetoed free pairs, Σ P over vetoed taken pairs), by holder pair.
    pub vetoed: BTreeMap<(usize, usize), (f64, f64)>,
}

impl CandidateTotals {
    /// Adds another part's totals.
    pub fn merge(&mut self, other: &Self) {
        for (&k, &v) in &other.missed {
            *self.missed.entry(k).or_default() += v;
        }
        for (&k, &(f, t)) in &other.vetoed {
            let e = self.vetoed.entry(k).or_default();
            e.0 += f;
            e.1 += t;
        }
    }
}

/// [`CandidateTotals`] of the candidates `pairs` (with their `codes` and match `weights`)
/// given the clusters in `ctx`. Pairs of one cluster count nowhere; under one-to-one
/// linkage a pair with a record linked to the other's holder is a non-match ("taken").
pub fn candidate_totals(
    ctx: &TotalsContext,
    dims: &Dims,
    pairs: &[(u32, u32)],
    codes: &[u32],
    weights: &[f32],
) -> CandidateTotals {
    let mut out = CandidateTotals::default();
    for ((&(a, b), &w), &code) in pairs.iter().zip(weights).zip(codes) {
        let (la, lb) = (
            ctx.labels[a as usize] as usize,
            ctx.labels[b as usize] as usize,
        );
        if la == lb {
            continue;
        }
        let (ha, hb) = (party_of(&ctx.offsets, a), party_of(&ctx.offsets, b));
        let key = (ha.min(hb), ha.max(hb));
        let is_taken = ctx.taken(la, hb) || ctx.taken(lb, ha);
        let p = probability(f64::from(w));
        if !ctx.veto.is_empty() && disagrees(dims, &ctx.veto, code) {
            let v = out.vetoed.entry(key).or_default();
            if is_taken {
                v.1 += p;
            } else {
                v.0 += p;
            }
            continue;
        }
        if is_taken {
            continue;
        }
        *out.missed.entry(key).or_default() +=
            free_pair_probability(p, ctx.both_free(key.0, key.1));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compared(code: u32, tf_bits: f32) -> Compared {
        Compared { code, tf_bits }
    }

    /// Groups of parts in any order equal the groups of the whole; patterns and EM groups
    /// follow from them as from the pairs.
    #[test]
    fn groups_of_parts_add_up_to_the_whole() {
        let holder = |g: u32| (g / 3) as u16;
        let pairs = [(0, 3), (0, 4), (1, 3), (2, 6), (4, 7), (5, 6)];
        let comp = [
            compared(5, 0.0),
            compared(5, 0.0),
            compared(5, 1.25),
            compared(9, 0.0),
            compared(5, 0.0),
            compared(9, 1.26),
        ];
        let whole = group_compared(holder, &pairs, &comp);
        let a = group_compared(holder, &pairs[..2], &comp[..2]);
        let b = group_compared(holder, &pairs[2..], &comp[2..]);
        assert_eq!(merge_groups(b.into_iter().chain(a)), whole);
        // Holder pairs (0,1): codes 5 (twice at 0, once at 1.25); (0,2): 9; (1,2): 5, 9.
        assert_eq!(whole.len(), 5);
        assert_eq!(whole.iter().map(|g| g.count).sum::<u64>(), 6);
        assert_eq!(
            whole[0],
            PairGroup {
                holders: (0, 1),
                code: 5,
                tf_bits: 0.0,
                count: 2
            }
        );
        let codes: Vec<u32> = comp.iter().map(|c| c.code).collect();
        assert_eq!(
            patterns_of(&whole),
            super::super::em::count_patterns(codes.into_iter())
        );
        assert_eq!(
            em_groups_of(&whole),
            super::super::em::count_groups(comp.iter().map(|c| (c.code, c.tf_bits)))
        );
    }

    /// Totals of parts add up to the totals of the whole.
    #[test]
    fn totals_of_parts_add_up() {
        // Two holders of 3 records; records 0 and 3 are one cluster.
        let offsets = [0u32, 3];
        let labels = vec![0, 1, 2, 0, 3, 4];
        let ctx = TotalsContext::new(&offsets, labels, 5, &[false, false], &[]);
        // q = (2/3)·(2/3).
        assert!((ctx.both_free(0, 1) - 4.0 / 9.0).abs() < 1e-12);
        let dims = Dims::from_levels(vec![3]);
        let pairs = [(0, 3), (0, 4), (1, 4), (2, 5)];
        let codes = [0, 1, 1, 1];
        let weights = [10.0, 1.0, 2.0, -3.0];
        let whole = candidate_totals(&ctx, &dims, &pairs, &codes, &weights);
        let mut parts = candidate_totals(&ctx, &dims, &pairs[2..], &codes[2..], &weights[2..]);
        parts.merge(&candidate_totals(
            &ctx,
            &dims,
            &pairs[..2],
            &codes[..2],
            &weights[..2],
        ));
        // (0, 3) is one cluster, (0, 4) has record 0 taken: only (1, 4) and (2, 5) count.
        let want = free_pair_probability(probability(2.0), 4.0 / 9.0)
            + free_pair_probability(probability(-3.0), 4.0 / 9.0);
        assert!((whole.missed[&(0, 1)] - want).abs() < 1e-12);
        assert!((parts.missed[&(0, 1)] - want).abs() < 1e-12);
        assert!(whole.vetoed.is_empty());
    }

    /// Links are the pairs at or above the threshold; a veto comparison's `disagree` level
    /// refuses a pair and is counted.
    #[test]
    fn links_above_the_threshold_without_vetoed() {
        // One comparison of 4 levels: agree, partial, disagree (2), missing (3).
        let dims = Dims::from_levels(vec![4]);
        let pairs = [(0, 5), (1, 6), (2, 7), (3, 8)];
        let codes = [0, 2, 1, 2];
        let weights = [9.0, 9.0, 0.5, -1.0];
        let (links, vetoed) = select_links(&dims, &pairs, &codes, &weights, 0.5, &[0]);
        assert_eq!(
            links.iter().map(|l| (l.a, l.b)).collect::<Vec<_>>(),
            [(0, 5), (2, 7)]
        );
        assert_eq!(vetoed, 1);
        let (links, vetoed) = select_links(&dims, &pairs, &codes, &weights, 0.5, &[]);
        assert_eq!((links.len(), vetoed), (3, 0));
    }
}
