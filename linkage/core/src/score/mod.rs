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

pub mod aggregate;
pub mod compare;
mod decide;
pub mod em;

use rayon::prelude::*;

pub use crate::schema::scoring::{Clustering, ComparisonSpec, DiceSpec, ScoringSpec};
pub use aggregate::{CandidateTotals, PairGroup, PairSet, TotalsContext};
pub use compare::{
    Compared, ComparisonEncoder, ComparisonKeyError, Dims, EncodedFilters, Features,
    FeaturesBuilder,
};
pub use decide::{
    CandidateSet, CandidatesSummary, ClusterJob, ClusteringSummary, ComparisonSummary,
    ConflictRule, CurveSummary, DecideOptions, DroppedBlocks, EmSummary, EstimatedQuality,
    FittedModel, HolderPairEstimate, LevelSummary, MAX_CHAIN_CLUSTER, ScoreError, ScoringRun,
    ScoringSummary, ScoringTimings, ThresholdSummary, TrainingSummary, chain_probabilities,
    cluster_component, decide, find_candidates, fit, labels_from_roots, score_and_cluster,
};
pub use em::{
    EmOptions, Model, PriorRule, SamplePattern, Session, SessionFit, WeightTerms, probability,
};

use crate::token::Token;

/// Counts of candidate-pair generation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CandidateStats {
    /// Distinct blocking keys.
    pub keys: usize,
    /// Largest key group (records sharing one key).
    pub largest_group: usize,
    /// Key groups larger than `max_block` records or `max_block_pairs` pairs, not expanded.
    pub skipped_groups: usize,
    /// Distinct candidate pairs.
    pub pairs: u64,
    /// Per recipe (index mod 256, from [`crate::tokenlink::block_key_recipe`]) whose groups
    /// were capped: `(recipe, groups skipped, cross-holder pairs not made)`, by recipe. The
    /// pairs are counted per group (a pair dropped from one key may still come from another).
    pub dropped: Vec<(u8, u64, u64)>,
}

/// Candidate pairs: records of different holders sharing a blocking key (any token of a
/// direct, guarded or block recipe, as [`crate::tokenlink::block_key`] makes them), as
/// `(a, b)` global indices with `a < b`, sorted and deduplicated. Groups of more than
/// `max_block` records, or whose cross-holder pairs `Σ_{i<j} n_i·n_j` exceed
/// `max_block_pairs`, are skipped and accounted per recipe ([`CandidateStats::dropped`]):
/// the pairs made are then at most `max_block_pairs` per key group, so they grow at most
/// linearly with the records (SPEC.md §9.2).
pub fn candidates(
    keys: &mut [(Token, u32)],
    holder: impl Fn(u32) -> u16 + Sync,
    max_block: usize,
    max_block_pairs: u64,
) -> (Vec<(u32, u32)>, CandidateStats) {
    let mut stats = CandidateStats::default();
    keys.par_sort_unstable();
    let groups: Vec<&[(Token, u32)]> = keys.chunk_by(|x, y| x.0 == y.0).collect();
    stats.keys = groups.len();
    // Cross-holder pairs of a group: ((Σ n_i)² − Σ n_i²) / 2 over its holders.
    let cross = |g: &[(Token, u32)]| -> u64 {
        if g.len() < 2 {
            return 0;
        }
        let mut per: Vec<(u16, u64)> = Vec::new();
        for &(_, x) in g {
            let h = holder(x);
            match per.iter_mut().find(|p| p.0 == h) {
                Some(p) => p.1 += 1,
                None => per.push((h, 1)),
            }
        }
        let n: u64 = per.iter().map(|p| p.1).sum();
        let sq: u64 = per.iter().map(|p| p.1 * p.1).sum();
        (n * n - sq) / 2
    };
    let keep: Vec<bool> = groups
        .par_iter()
        .map(|g| g.len() >= 2 && (g.len() > max_block || cross(g) > max_block_pairs))
        .map(|skip| !skip)
        .collect();
    let mut dropped: std::collections::BTreeMap<u8, (u64, u64)> = Default::default();
    for (g, &k) in groups.iter().zip(&keep) {
        stats.largest_group = stats.largest_group.max(g.len());
        if !k {
            stats.skipped_groups += 1;
            let e = dropped
                .entry(crate::tokenlink::block_key_recipe(&g[0].0))
                .or_default();
            e.0 += 1;
            e.1 += cross(g);
        }
    }
    stats.dropped = dropped.into_iter().map(|(r, (g, p))| (r, g, p)).collect();
    let mut pairs: Vec<u64> = groups
        .par_iter()
        .zip(keep.par_iter())
        .filter(|(g, k)| **k && g.len() >= 2)
        .flat_map_iter(|(g, _)| {
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

/// Where a scored run's candidate pairs and comparison vectors are made (SPEC.md §9.2,
/// §9.3, §9.6.1): [`InProcess`] (`renketsu link`), or a distributed engine (the Python
/// package's `renketsu.spark`: a self-join in Spark SQL, comparisons on the executors),
/// which must give exactly what [`InProcess`] would: the rest of the run (EM, threshold,
/// clusters) is the engine's own.
///
/// A stage either returns the pairs and their comparison vectors ([`Self::candidates`],
/// [`Self::compare`]), or **keeps them** where it made them ([`Self::keeps_pairs`]): then
/// the engine asks it only for aggregates ([`aggregate`]): the pattern groups
/// ([`Self::groups`]), which sampled pairs are candidates ([`Self::contains`]), the links
/// above the threshold ([`Self::select_links`]) and the totals the estimates need
/// ([`Self::totals`]), so that the engine's memory grows with the patterns and the links,
/// not with the candidates.
pub trait PairStage {
    /// [`candidates`] of `keys` (`(key, global record)`, in any order), records numbered
    /// by holder from `offsets` ([`crate::tokenlink::party_offsets`]), for the pair `set`
    /// (all records, or the training sample's). A stage that [keeps pairs](Self::keeps_pairs)
    /// returns no pairs, only the counts, and keeps the set for the calls below (a later
    /// call for the same set replaces it).
    ///
    /// # Errors
    /// The stage failed (a distributed job); the message names the cause.
    fn candidates(
        &mut self,
        set: PairSet,
        keys: &mut [(Token, u32)],
        offsets: &[u32],
        max_block: usize,
        max_block_pairs: u64,
    ) -> Result<(Vec<(u32, u32)>, CandidateStats), ScoreError>;

    /// [`Features::compare_all`] of `pairs` (sorted, distinct), in their order. Not called
    /// on a stage that keeps its pairs.
    ///
    /// # Errors
    /// The stage failed.
    fn compare(
        &mut self,
        features: &Features,
        pairs: &[(u32, u32)],
    ) -> Result<Vec<Compared>, ScoreError>;

    /// Whether the stage keeps the candidate pairs it makes (default `false`).
    fn keeps_pairs(&self) -> bool {
        false
    }

    /// A stage that keeps pairs: the [`PairGroup`]s of `set`'s candidates
    /// ([`aggregate::group_compared`] of their comparison vectors), in any order.
    ///
    /// # Errors
    /// The stage failed, or does not keep pairs.
    fn groups(&mut self, set: PairSet, features: &Features) -> Result<Vec<PairGroup>, ScoreError> {
        let _ = (set, features);
        Err(ScoreError::Stage(
            "this stage does not keep its pairs".to_owned(),
        ))
    }

    /// A stage that keeps pairs: for each of `pairs` (`a < b`, any order, repeats allowed),
    /// whether it is one of `set`'s candidates, in order.
    ///
    /// # Errors
    /// The stage failed, or does not keep pairs.
    fn contains(&mut self, set: PairSet, pairs: &[(u32, u32)]) -> Result<Vec<bool>, ScoreError> {
        let _ = (set, pairs);
        Err(ScoreError::Stage(
            "this stage does not keep its pairs".to_owned(),
        ))
    }

    /// A stage that keeps pairs: [`aggregate::select_links`] of every candidate (weights
    /// by [`aggregate::weights_of`] under `table`), links sorted by `(a, b)`, and the
    /// number of vetoed pairs.
    ///
    /// # Errors
    /// The stage failed, or does not keep pairs.
    fn select_links(
        &mut self,
        table: &WeightTerms,
        threshold: f64,
        veto: &[usize],
    ) -> Result<(Vec<crate::cluster::ScoredLink>, u64), ScoreError> {
        let _ = (table, threshold, veto);
        Err(ScoreError::Stage(
            "this stage does not keep its pairs".to_owned(),
        ))
    }

    /// A stage that keeps pairs: [`aggregate::candidate_totals`] of every candidate (weights
    /// under `table`) given the clusters in `ctx`.
    ///
    /// # Errors
    /// The stage failed, or does not keep pairs.
    fn totals(
        &mut self,
        table: &WeightTerms,
        ctx: &TotalsContext,
    ) -> Result<CandidateTotals, ScoreError> {
        let _ = (table, ctx);
        Err(ScoreError::Stage(
            "this stage does not keep its pairs".to_owned(),
        ))
    }

    /// Clusters the links ([`crate::cluster::cluster_scored`] over every record): dense
    /// labels numbered by first record, the number of clusters and the counts. The default
    /// runs in this process; a distributed stage splits the links into connected components
    /// and clusters each on its own (the guard never looks outside a component).
    ///
    /// # Errors
    /// The stage failed.
    fn cluster(
        &mut self,
        job: ClusterJob<'_>,
    ) -> Result<(Vec<u32>, usize, crate::cluster::ScoredClusterStats), ScoreError> {
        Ok(job.run_in_process())
    }
}

/// The pair stage of `renketsu link`: this process, on all its cores.
#[derive(Clone, Copy, Debug, Default)]
pub struct InProcess;

impl PairStage for InProcess {
    fn candidates(
        &mut self,
        _set: PairSet,
        keys: &mut [(Token, u32)],
        offsets: &[u32],
        max_block: usize,
        max_block_pairs: u64,
    ) -> Result<(Vec<(u32, u32)>, CandidateStats), ScoreError> {
        let holder = |g: u32| crate::tokenlink::party_of(offsets, g) as u16;
        Ok(candidates(keys, holder, max_block, max_block_pairs))
    }

    fn compare(
        &mut self,
        features: &Features,
        pairs: &[(u32, u32)],
    ) -> Result<Vec<Compared>, ScoreError> {
        Ok(features.compare_all(pairs))
    }
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
    /// The candidates' groups (holder pair, pattern, term-frequency bits) with counts,
    /// sorted ([`aggregate`]): the curve, the threshold and the estimates are made from them.
    pub groups: Vec<PairGroup>,
    /// Match weight terms (bits) of the pattern codes, before term-frequency terms.
    pub table: WeightTerms,
    /// Pattern code per candidate, in candidate order; empty when the stage keeps the pairs
    /// ([`PairStage::keeps_pairs`]).
    pub codes: Vec<u32>,
    /// Match weight (bits) per candidate, in candidate order; empty when the stage keeps
    /// the pairs.
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

/// The record sample a model is trained on (SPEC.md §9.3), for [`score`].
#[derive(Clone, Copy, Debug)]
pub struct Training<'a> {
    /// Candidate pairs among the sampled records (as [`candidates`] returns them; empty
    /// when the stage keeps the pairs).
    pub candidates: &'a [(u32, u32)],
    /// Per holder, the global indices of its sampled records, ascending.
    pub members: &'a [Vec<u32>],
    /// Cross-holder pairs among the sampled records, `Σ_{i<j} m_i·m_j`.
    pub total_pairs: f64,
}

/// Compares every candidate, fits the model and scores the candidates (SPEC.md §9.3).
/// `candidates` are `(a, b)` with `a < b`, sorted ascending and distinct (as [`candidates`]
/// returns them); `total_pairs` is the number of cross-holder pairs `Σ_{i<j} n_i·n_j`.
/// With `train`, the model (u, m, λ) is fitted on the record sample's candidates and random
/// pairs and then scores every candidate; the matches outside the candidate set are
/// re-estimated from random pairs of all records ([`em::Model::rebase`]).
pub fn score(
    features: &Features,
    candidates: &[(u32, u32)],
    random_pairs: u64,
    total_pairs: f64,
    opts: EmOptions,
    train: Option<Training<'_>>,
) -> Scores {
    match score_with(
        &mut InProcess,
        features,
        candidates,
        random_pairs,
        total_pairs,
        opts,
        train,
    ) {
        Ok(s) => s,
        Err(e) => unreachable!("the in-process stage does not fail: {e}"),
    }
}

/// What the fit and the scores need of one pair set: its groups, the comparison vectors
/// (empty when the stage keeps the pairs) and the random sample's patterns.
type Observed = (Vec<PairGroup>, Vec<Compared>, Vec<SamplePattern>);

/// The groups and sampled patterns of `set` (`pairs` when the stage returned them), by
/// `stage`; `members` as [`Features::random_pairs_among`].
fn observe(
    stage: &mut dyn PairStage,
    features: &Features,
    set: PairSet,
    pairs: &[(u32, u32)],
    random_pairs: u64,
    members: Option<&[Vec<u32>]>,
) -> Result<Observed, ScoreError> {
    if stage.keeps_pairs() {
        let groups = aggregate::merge_groups(stage.groups(set, features)?);
        let sampled = features.sample_pairs(random_pairs, SAMPLE_SEED, members);
        let asked: Vec<(u32, u32)> = sampled.iter().map(|s| s.pair()).collect();
        let flags = stage.contains(set, &asked)?;
        if flags.len() != asked.len() {
            return Err(ScoreError::Stage(format!(
                "{} answers for {} sampled pairs",
                flags.len(),
                asked.len()
            )));
        }
        let sample = compare::sample_patterns(&sampled, &flags);
        return Ok((groups, Vec::new(), sample));
    }
    let compared = stage.compare(features, pairs)?;
    if compared.len() != pairs.len() {
        return Err(ScoreError::Stage(format!(
            "{} comparison vectors for {} candidate pairs",
            compared.len(),
            pairs.len()
        )));
    }
    let groups = aggregate::group_compared(|g| features.holder(g), pairs, &compared);
    let sample = features.random_pairs_among(random_pairs, SAMPLE_SEED, pairs, members);
    Ok((groups, compared, sample))
}

/// [`score`] with the comparison vectors made by `stage` (or, for a stage that keeps its
/// pairs, only their aggregates: SPEC.md §9.6.1).
///
/// # Errors
/// [`ScoreError::Stage`]: `stage` failed.
pub fn score_with(
    stage: &mut dyn PairStage,
    features: &Features,
    candidates: &[(u32, u32)],
    random_pairs: u64,
    total_pairs: f64,
    opts: EmOptions,
    train: Option<Training<'_>>,
) -> Result<Scores, ScoreError> {
    let tf = tf_mask(features);
    let dims = features.dims();
    let trained = match train {
        None => None,
        Some(t) => {
            let (groups, _, sample) = observe(
                stage,
                features,
                PairSet::Training,
                t.candidates,
                random_pairs,
                Some(t.members),
            )?;
            Some(em::fit(
                dims,
                &aggregate::patterns_of(&groups),
                &aggregate::em_groups_of(&groups),
                &tf,
                &sample,
                t.total_pairs,
                opts.clone(),
            ))
        }
    };
    let (groups, compared, sample) = observe(
        stage,
        features,
        PairSet::All,
        candidates,
        random_pairs,
        None,
    )?;
    let patterns = aggregate::patterns_of(&groups);
    Ok(finish(
        dims,
        &tf,
        patterns,
        groups,
        &compared,
        sample,
        random_pairs,
        total_pairs,
        trained.ok_or(opts),
    ))
}

/// The scores of compared pairs: the model (fitted here from the groups, or fitted elsewhere
/// on a record sample and then re-based on these candidates and `total_pairs`), its weight
/// table, the weight of every pair of `compared` and the expected matches (from the groups).
#[allow(
    clippy::too_many_arguments,
    reason = "the parts of a scoring, named where they are made"
)]
fn finish(
    dims: &Dims,
    tf: &[usize],
    patterns: Vec<(u32, u64)>,
    groups: Vec<PairGroup>,
    compared: &[Compared],
    sample: Vec<SamplePattern>,
    random_pairs: u64,
    total_pairs: f64,
    model: Result<Model, EmOptions>,
) -> Scores {
    let (mut model, rebase) = match model {
        Ok(m) => (m, true),
        Err(opts) => (
            em::fit(
                dims,
                &patterns,
                &aggregate::em_groups_of(&groups),
                tf,
                &sample,
                total_pairs,
                opts,
            ),
            false,
        ),
    };
    let table = model.weight_terms(dims, tf);
    let weights: Vec<f32> = compared
        .par_iter()
        .with_min_len(8192)
        .map(|c| table.weight(c.code) + c.tf_bits)
        .collect();
    let expected_matches = groups
        .iter()
        .map(|g| g.count as f64 * probability(f64::from(table.weight(g.code) + g.tf_bits)))
        .sum();
    if rebase {
        model.rebase(dims, &sample, expected_matches, total_pairs);
    }
    Scores {
        model,
        patterns,
        groups,
        table,
        codes: compared.iter().map(|c| c.code).collect(),
        weights,
        expected_matches,
        random_pairs,
        sample,
    }
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

/// [`score`] from comparison vectors already made, all of one holder pair (used by the
/// benchmark).
pub fn score_compared(
    dims: &Dims,
    compared: &[Compared],
    tf: &[usize],
    sample: Vec<SamplePattern>,
    random_pairs: u64,
    total_pairs: f64,
    opts: EmOptions,
) -> Scores {
    let groups = aggregate::group_compared(|_| 0, &vec![(0, 1); compared.len()], compared);
    let patterns = aggregate::patterns_of(&groups);
    finish(
        dims,
        tf,
        patterns,
        groups,
        compared,
        sample,
        random_pairs,
        total_pairs,
        Err(opts),
    )
}

impl Scores {
    /// The estimated precision/recall curve at every distinct weight, strongest first
    /// (SPEC.md §9.4).
    pub fn curve(&self) -> Vec<CurvePoint> {
        // Every pair's weight follows from its group: (weight, pairs), strongest first.
        let mut w: Vec<(f32, u64)> = self
            .groups
            .iter()
            .map(|g| (self.table.weight(g.code) + g.tf_bits, g.count))
            .collect();
        w.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut out: Vec<CurvePoint> = Vec::new();
        let (mut tp, mut links) = (0.0, 0u64);
        for (i, &(x, n)) in w.iter().enumerate() {
            tp += n as f64 * probability(f64::from(x));
            links += n;
            let last = i + 1 == w.len() || w[i + 1].0 != x;
            if last {
                out.push(CurvePoint {
                    weight: f64::from(x),
                    probability: probability(f64::from(x)),
                    links,
                    expected_true: tp,
                    precision: tp / links as f64,
                    // At most 1: the sums run in another order than expected_matches'.
                    recall: if self.expected_matches > 0.0 {
                        (tp / self.expected_matches).min(1.0)
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

/// Posterior match probability of an unlinked candidate pair whose two records are both
/// **free** (neither is linked to a record of the other's holder), under one-to-one linkage
/// (SPEC.md §9.4): `p` is the model's `P(M | γ)`, `both_free` the share `q = f_A·f_B` of pairs
/// of the two holders whose records are both free (`f_H`: share of holder `H`'s records not
/// linked to the other holder).
///
/// A non-match pair is free with probability `q` (records are included and linked
/// independently); an unlinked match is free almost surely (its records can only be linked
/// to each other). Bayes' rule multiplies the odds by `1/q`. `q` outside `(0, 1)` leaves `p`
/// unchanged.
pub fn free_pair_probability(p: f64, both_free: f64) -> f64 {
    if !(both_free > 0.0 && both_free < 1.0) || p <= 0.0 {
        return p;
    }
    if p >= 1.0 {
        return 1.0;
    }
    let odds = p / (1.0 - p) / both_free;
    odds / (1.0 + odds)
}

/// Expected matches among the candidates a `veto` comparison refuses (SPEC.md §9.4), by the
/// method of moments: the model's `P(M | γ)` of such pairs is not trusted (the veto exists
/// because independent comparisons take household members for one person), so it is used
/// as a weight only. `free` is `Σ P(M | γ)` over vetoed pairs whose records are both free,
/// `taken` over those with a record linked to the other holder (non-matches under one-to-one
/// linkage). Non-matches fall into the two groups in the ratio `q : 1 − q` (`both_free = q`,
/// as in [`free_pair_probability`]) and vetoed matches are free, so the matches' share is
/// `free − taken·q/(1 − q)`, at least 0. Returns 0 unless `0 < q < 1`.
pub fn vetoed_matches(free: f64, taken: f64, both_free: f64) -> f64 {
    if !(both_free > 0.0 && both_free < 1.0) {
        return 0.0;
    }
    (free - taken * both_free / (1.0 - both_free)).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenlink::block_key;

    /// A pair linked through a third holder's record is as sure as its surest chain (the
    /// product along it), never less than its own probability; same-holder pairs (0) stay
    /// unconnected unless a chain joins them; big clusters are left alone.
    #[test]
    fn chain_probabilities_take_the_surest_chain() {
        // a–c compared directly look unlike (0.01); a–b 0.99, b–c 0.9: chain 0.891.
        let mut p = vec![0.0, 0.99, 0.01, 0.99, 0.0, 0.9, 0.01, 0.9, 0.0];
        chain_probabilities(3, &mut p);
        assert!(
            (p[2] - 0.891).abs() < 1e-12 && (p[6] - 0.891).abs() < 1e-12,
            "{p:?}"
        );
        assert_eq!((p[1], p[5]), (0.99, 0.9), "direct links unchanged");
        // A direct pair surer than the chain keeps its own probability.
        let mut p = vec![0.0, 0.5, 0.95, 0.5, 0.0, 0.5, 0.95, 0.5, 0.0];
        chain_probabilities(3, &mut p);
        assert_eq!(p[2], 0.95);
        assert_eq!(p[1], 0.5, "0.95 × 0.5 < 0.5 is no better");
        // Two chains: the surer one wins (a–b–d 0.9·0.9 vs a–c–d 0.6·0.99).
        let mut p = vec![0.0; 16];
        for (i, j, v) in [(0, 1, 0.9), (1, 3, 0.9), (0, 2, 0.6), (2, 3, 0.99)] {
            p[i * 4 + j] = v;
            p[j * 4 + i] = v;
        }
        chain_probabilities(4, &mut p);
        assert!((p[3] - 0.81).abs() < 1e-12, "{}", p[3]);
        // Over the size limit: unchanged.
        let n = MAX_CHAIN_CLUSTER + 1;
        let mut p = vec![0.0; n * n];
        p[1] = 0.9;
        p[n] = 0.9;
        p[n + 2] = 0.9;
        p[2 * n + 1] = 0.9;
        let before = p.clone();
        chain_probabilities(n, &mut p);
        assert_eq!(p, before);
    }

    /// Blocks over the pair cap are skipped and accounted to their recipe; the others are
    /// expanded, and the pairs made stay below the cap per key (linear in the records).
    #[test]
    fn capped_blocks_are_skipped_and_accounted_by_recipe() {
        let holder = |g: u32| u16::from(g >= 1_000);
        let common = block_key(&[7u8; crate::token::TOKEN_LEN], 3);
        let rare = block_key(&[9u8; crate::token::TOKEN_LEN], 5);
        let mut keys: Vec<(Token, u32)> = Vec::new();
        // 30 × 30 records share the common key: 900 cross-holder pairs.
        for i in 0..30 {
            keys.push((common, i));
            keys.push((common, 1_000 + i));
        }
        // 2 × 3 share the rare one: 6 pairs.
        for g in [100, 101, 1_100, 1_101, 1_102] {
            keys.push((rare, g));
        }
        let (pairs, stats) = candidates(&mut keys.clone(), holder, 2_000, 400);
        assert_eq!(pairs.len(), 6);
        assert_eq!(stats.skipped_groups, 1);
        assert_eq!(stats.dropped, vec![(3, 1, 900)]);
        // Under a cap of 900 pairs both blocks are expanded.
        let (pairs, stats) = candidates(&mut keys, holder, 2_000, 900);
        assert_eq!(pairs.len(), 906);
        assert!(stats.dropped.is_empty());
    }

    /// The training sample keeps about `per_holder` records of each larger holder, the same
    /// ones on every run, inside the holder's index range; small holders are kept whole.
    #[test]
    fn training_sample_is_seeded_and_sized() {
        let sizes = [50_000usize, 4_000];
        let offsets = crate::tokenlink::party_offsets(&sizes);
        assert!(decide::training_sample(&sizes, &offsets, 50_000, 1).is_none());
        let s = decide::training_sample(&sizes, &offsets, 10_000, 1).expect("sampled");
        assert_eq!(
            s,
            decide::training_sample(&sizes, &offsets, 10_000, 1).expect("again")
        );
        // Binomial(50,000, 0.2): sd ≈ 89.
        assert!((s[0].len() as i64 - 10_000).abs() < 500, "{}", s[0].len());
        assert!(s[0].windows(2).all(|w| w[0] < w[1]) && s[0].iter().all(|&g| g < 50_000));
        assert_eq!(s[1], (50_000..54_000).collect::<Vec<u32>>());
        assert_ne!(
            s,
            decide::training_sample(&sizes, &offsets, 10_000, 2).expect("seed 2")
        );
    }

    /// Sampling every holder's records independently keeps λ, the share of matches among
    /// the cross-holder pairs: 20,000 matches among 50,000 × 40,000 records (λ = 10^-5),
    /// samples of 10,000 records per holder keep about 1,000 of them among 10^8 pairs.
    #[test]
    fn training_sample_keeps_the_prior() {
        let sizes = [50_000usize, 40_000];
        let offsets = crate::tokenlink::party_offsets(&sizes);
        let lambda = 20_000.0 / (50_000.0 * 40_000.0);
        for seed in 1..4 {
            let s = decide::training_sample(&sizes, &offsets, 10_000, seed).expect("sampled");
            let b: std::collections::HashSet<u32> = s[1].iter().copied().collect();
            // Record g of a matches record 50,000 + g of b for g < 20,000.
            let matches = s[0]
                .iter()
                .filter(|&&g| g < 20_000 && b.contains(&(50_000 + g)))
                .count() as f64;
            let pairs = s[0].len() as f64 * s[1].len() as f64;
            // Binomial(20,000, 0.05): relative sd ≈ 3 %.
            assert!(
                (matches / pairs / lambda - 1.0).abs() < 0.12,
                "{matches} {pairs}"
            );
        }
    }

    #[test]
    fn free_pairs_gain_the_odds_of_one_to_one_linkage() {
        // Odds 1/9 and q = 1/4: odds 4/9, probability 4/13.
        assert!((free_pair_probability(0.1, 0.25) - 4.0 / 13.0).abs() < 1e-12);
        // Certain or impossible pairs stay so; no usable q leaves p alone.
        assert_eq!(free_pair_probability(1.0, 0.25), 1.0);
        assert_eq!(free_pair_probability(0.0, 0.25), 0.0);
        assert_eq!(free_pair_probability(0.3, 1.0), 0.3);
        assert_eq!(free_pair_probability(0.3, 0.0), 0.3);
        // Monotone in p, and never below p.
        let mut last = 0.0;
        for i in 1..100 {
            let p = f64::from(i) / 100.0;
            let x = free_pair_probability(p, 0.3);
            assert!(x > last && x >= p);
            last = x;
        }
    }

    /// Households split into free and taken pairs at random with the share q, matches are all
    /// free: the method of moments recovers the matches' weight.
    #[test]
    fn vetoed_matches_recovers_the_matches_of_a_simulated_split() {
        let q = 0.27;
        let mut state = 11u64;
        let mut rnd = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let (mut free, mut taken) = (0.0, 0.0);
        // 2,000 household pairs the model scores near 1 (0.9-1), and 60 true matches.
        for _ in 0..2_000 {
            let p = 0.9 + 0.1 * rnd();
            if rnd() < q {
                free += p;
            } else {
                taken += p;
            }
        }
        let matches = 60.0;
        free += matches;
        let est = vetoed_matches(free, taken, q);
        // Binomial noise of the split: sd ≈ sqrt(2,000·q(1−q))/(1 − q) ≈ 27 pairs.
        assert!((est - matches).abs() < 80.0, "{est}");
        // Without a split to learn from, nothing is claimed.
        assert_eq!(vetoed_matches(free, taken, 1.0), 0.0);
        assert_eq!(vetoed_matches(5.0, 100.0, 0.5), 0.0);
        // Exact in expectation.
        assert!((vetoed_matches(0.25 * 400.0 + 7.0, 0.75 * 400.0, 0.25) - 7.0).abs() < 1e-9);
    }
}
