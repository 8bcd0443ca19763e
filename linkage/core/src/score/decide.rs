//! The decision stage of a scored run (SPEC.md §9): candidate pairs from blocking keys,
//! Fellegi–Sunter scoring with EM ([`super::score`]), the threshold (a flag, the schema, or the
//! maximum estimated F1), the given-name veto, guarded clustering with conflict closure
//! ([`crate::cluster::cluster_scored`]), and the estimated quality of the output
//! ([`ScoringRun::summary`]; SPEC.md §9.4, §9.6).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::aggregate::{self, CandidateTotals, PairSet, TotalsContext, disagrees};
use super::{
    CandidateStats, Clustering, EmOptions, Features, PairStage, Scores, ScoringSpec, WeightTerms,
    probability, vetoed_matches,
};
use crate::cluster::{ScoredClusterStats, ScoredLink, cluster_scored};
use crate::schema::Schema;
use crate::tokenlink::{party_of, party_offsets};

/// Why a scored run could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScoreError {
    /// Fewer than two holders have records: there is no pair to score.
    #[error("scoring needs records from at least two holders")]
    NoPairs,
    /// A [`super::PairStage`] other than the in-process one failed (e.g. a Spark job).
    #[error("pair stage: {0}")]
    Stage(String),
}

/// When two records must not end in one cluster (SPEC.md §9.5): a `veto` comparison
/// disagrees, or a `conflict` comparison disagrees and the pair's match weight is below the
/// threshold.
#[derive(Clone, Debug, PartialEq)]
pub struct ConflictRule {
    /// Comparisons with `veto`.
    pub veto: Vec<usize>,
    /// Comparisons with `conflict`.
    pub conflict: Vec<usize>,
    /// The run's threshold (match weight, bits).
    pub threshold: f64,
}

impl ConflictRule {
    /// Whether records `x` and `y` conflict under the model's `table`.
    pub fn conflicts(&self, features: &Features, table: &WeightTerms, x: u32, y: u32) -> bool {
        let c = features.compare(x, y);
        let dims = features.dims();
        if disagrees(dims, &self.veto, c.code) {
            return true;
        }
        disagrees(dims, &self.conflict, c.code)
            && f64::from(table.weight(c.code) + c.tf_bits) < self.threshold
    }
}

/// The clustering of a scored run's links (SPEC.md §9.5), for [`PairStage::cluster`].
pub struct ClusterJob<'a> {
    /// Links above the threshold and not vetoed, in any order.
    pub links: &'a mut [ScoredLink],
    /// Holder offsets ([`party_offsets`]).
    pub offsets: &'a [u32],
    /// Per holder: several records of one person allowed.
    pub duplicates: &'a [bool],
    /// Guarded clustering (else connected components).
    pub guarded: bool,
    /// Every record's comparison features.
    pub features: &'a Features,
    /// The model's weights.
    pub table: &'a WeightTerms,
    /// The conflict rule.
    pub rule: &'a ConflictRule,
}

impl ClusterJob<'_> {
    /// [`cluster_scored`] of every record (`features.len()`) in this process: dense labels,
    /// the number of clusters, the counts.
    pub fn run_in_process(self) -> (Vec<u32>, usize, ScoredClusterStats) {
        let offsets = self.offsets;
        let holder = |g: u32| party_of(offsets, g) as u16;
        let (features, table, rule) = (self.features, self.table, self.rule);
        cluster_scored(
            features.len(),
            self.links,
            &holder,
            self.duplicates,
            self.guarded,
            &|x, y| rule.conflicts(features, table, x, y),
        )
    }

    /// The same clusters as [`Self::run_in_process`], made as a distributed stage makes
    /// them: connected components of the links, then [`cluster_component`] on each, then
    /// [`labels_from_roots`] (the reference the Spark stage is tested against).
    pub fn run_by_component(self) -> (Vec<u32>, usize, ScoredClusterStats) {
        let n = self.features.len();
        let mut uf = crate::cluster::UnionFind::new(n);
        for l in self.links.iter() {
            uf.union(l.a, l.b);
        }
        let mut by_component: BTreeMap<u32, Vec<ScoredLink>> = BTreeMap::new();
        for l in self.links.iter() {
            by_component.entry(uf.find(l.a)).or_default().push(*l);
        }
        let (mut records, mut roots) = (Vec::new(), Vec::new());
        let mut stats = ScoredClusterStats::default();
        for links in by_component.values() {
            let (r, c, s) = cluster_component(
                links,
                self.offsets,
                self.duplicates,
                self.guarded,
                self.features,
                self.table,
                self.rule,
            );
            records.extend(r);
            roots.extend(c);
            stats.links += s.links;
            stats.merges += s.merges;
            stats.redundant += s.redundant;
            stats.vetoed_same_holder += s.vetoed_same_holder;
            stats.vetoed_conflict += s.vetoed_conflict;
        }
        let (labels, k) =
            labels_from_roots(n, &records, &roots).expect("roots are the components' records");
        (labels, k, stats)
    }
}

/// Guarded clustering of one connected component of a run's links (SPEC.md §9.5), on its
/// own: what a distributed stage runs per component (`links` hold global record indices).
/// The guard only compares records of the two clusters a link would merge, so clustering
/// each component alone gives the clusters of [`ClusterJob::run_in_process`]. Returns the
/// component's records (ascending), the smallest record of each one's cluster, and the
/// counts.
pub fn cluster_component(
    links: &[ScoredLink],
    offsets: &[u32],
    duplicates: &[bool],
    guarded: bool,
    features: &Features,
    table: &WeightTerms,
    rule: &ConflictRule,
) -> (Vec<u32>, Vec<u32>, ScoredClusterStats) {
    let mut records: Vec<u32> = links.iter().flat_map(|l| [l.a, l.b]).collect();
    records.sort_unstable();
    records.dedup();
    let local = |g: u32| records.binary_search(&g).unwrap_or(0) as u32;
    // Local numbering keeps the records' order, so the tie-break by (a, b) is unchanged.
    let mut local_links: Vec<ScoredLink> = links
        .iter()
        .map(|l| ScoredLink {
            a: local(l.a),
            b: local(l.b),
            weight: l.weight,
        })
        .collect();
    let holder = |l: u32| party_of(offsets, records[l as usize]) as u16;
    let (labels, _, stats) = cluster_scored(
        records.len(),
        &mut local_links,
        &holder,
        duplicates,
        guarded,
        &|x, y| rule.conflicts(features, table, records[x as usize], records[y as usize]),
    );
    // Labels are numbered by first record: a label's first record is its smallest.
    let mut first: Vec<u32> = Vec::new();
    let roots = labels
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            if l as usize == first.len() {
                first.push(records[i]);
            }
            first[l as usize]
        })
        .collect();
    (records, roots, stats)
}

/// Dense cluster labels of `n` records, numbered by first record as the engine numbers them,
/// from the linked records and the smallest record of each one's cluster (records not
/// listed are alone). `None` if a record or root is out of range or above its record.
pub fn labels_from_roots(n: usize, records: &[u32], roots: &[u32]) -> Option<(Vec<u32>, usize)> {
    if records.len() != roots.len() {
        return None;
    }
    let mut root: Vec<u32> = (0..n as u32).collect();
    for (&r, &c) in records.iter().zip(roots) {
        if r as usize >= n || c > r {
            return None;
        }
        root[r as usize] = c;
    }
    let mut label_of = vec![u32::MAX; n];
    let mut labels = Vec::with_capacity(n);
    let mut next = 0u32;
    for &c in &root {
        let c = c as usize;
        if label_of[c] == u32::MAX {
            label_of[c] = next;
            next += 1;
        }
        labels.push(label_of[c]);
    }
    Some((labels, next as usize))
}

/// Where the threshold came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ThresholdSource {
    Flag,
    Schema,
    Auto,
}

/// State of a scored run, kept until the summary is written.
#[derive(Debug)]
pub struct ScoringRun {
    features: Arc<Features>,
    scores: Scores,
    candidates: CandidateStats,
    threshold: f64,
    source: ThresholdSource,
    clustering: Clustering,
    links_above: u64,
    vetoed_links: u64,
    cluster_stats: ScoredClusterStats,
    offsets: Vec<u32>,
    /// The candidates' totals given the clusters (SPEC.md §9.4).
    totals: CandidateTotals,
    /// [`TotalsContext::both_free`] of the clusters, holders × holders.
    both_free: Vec<f64>,
    /// Holders whose records may share a cluster.
    duplicates: Vec<bool>,
    /// Output pairs and Σ P(M) per holder pair.
    output_by_pair: BTreeMap<(usize, usize), (u64, f64)>,
    /// Matches the model expects outside the candidate set.
    unseen_matches: f64,
    /// The record sample the model was trained on, if any.
    training: Option<TrainingSummary>,
    timings_ms: [f64; 3],
}

/// What a scored run needs besides the schema's `[scoring]` section.
#[derive(Clone, Copy, Debug)]
pub struct DecideOptions<'a> {
    /// Match-probability threshold overriding the schema's and the automatic one.
    pub threshold: Option<f64>,
    /// Per holder: may its data hold several records of one person (no one-to-one guard)?
    pub duplicates: &'a [bool],
}

/// The candidate pairs of a scored run and the record sample the model is trained on
/// ([`find_candidates`]; SPEC.md §9.2, §9.3).
#[derive(Clone, Debug)]
pub struct CandidateSet {
    /// Candidate pairs `(a, b)` of global record indices, `a < b`, sorted and distinct.
    pub pairs: Vec<(u32, u32)>,
    /// Counts of their generation (blocking keys, skipped blocks).
    pub stats: CandidateStats,
    /// Holder offsets ([`party_offsets`]).
    offsets: Vec<u32>,
    /// Records per holder.
    sizes: Vec<usize>,
    /// Cross-holder pairs `Σ_{i<j} n_i·n_j`.
    total_pairs: f64,
    /// The training sample, if the run samples.
    train: Option<TrainSample>,
    /// Time taken (ms).
    ms: f64,
}

impl CandidateSet {
    /// Holder offsets: holder `h`'s records are `offsets[h]..offsets[h] + sizes[h]`.
    pub fn offsets(&self) -> &[u32] {
        &self.offsets
    }
}

/// The record sample a model is trained on: per holder its sampled records (global
/// indices, ascending), their candidate pairs (empty when the stage keeps them), their
/// count, and their cross-holder pairs.
type TrainSample = (Vec<Vec<u32>>, Vec<(u32, u32)>, u64, f64);

/// A model fitted on a run's candidates ([`fit`]): the scores of every candidate pair, in
/// the order of [`CandidateSet::pairs`].
#[derive(Clone, Debug)]
pub struct FittedModel {
    /// The model, its pattern counts, and every candidate's pattern code and match weight.
    pub scores: Scores,
    training: Option<TrainingSummary>,
    ms: f64,
}

impl FittedModel {
    /// The record sample the model was trained on, if the run sampled.
    pub fn training(&self) -> Option<&TrainingSummary> {
        self.training.as_ref()
    }
}

fn elapsed_ms(t0: Instant) -> f64 {
    (t0.elapsed().as_secs_f64() * 1e4).round() / 10.0
}

/// Candidate pairs of a scored run (SPEC.md §9.2): `keys` are the blocking keys `(token,
/// record)` (reordered in place), `sizes` the records per holder; the pairs are made by
/// `stage`. Above `train_records` records in a holder, the training sample's candidates are
/// made too (SPEC.md §9.3: each holder's records kept with probability `train_records / n_h`,
/// seeded with [`TRAIN_SEED`]). `log` receives one-line accounts.
///
/// # Errors
/// [`ScoreError::NoPairs`] when fewer than two holders have records; [`ScoreError::Stage`]
/// when `stage` fails.
pub fn find_candidates(
    spec: &ScoringSpec,
    keys: &mut [(crate::Token, u32)],
    sizes: &[usize],
    stage: &mut dyn PairStage,
    log: &mut dyn FnMut(String),
) -> Result<CandidateSet, ScoreError> {
    let t0 = Instant::now();
    let offsets = party_offsets(sizes);
    let (candidates, cstats) = stage.candidates(
        PairSet::All,
        keys,
        &offsets,
        spec.max_block,
        spec.max_block_pairs,
    )?;
    log(format!(
        "{} candidate pairs from {} blocking keys ({} groups over {} records or {} pairs skipped)",
        cstats.pairs, cstats.keys, cstats.skipped_groups, spec.max_block, spec.max_block_pairs
    ));
    let mut total_pairs = 0.0;
    for i in 0..sizes.len() {
        for j in i + 1..sizes.len() {
            total_pairs += sizes[i] as f64 * sizes[j] as f64;
        }
    }
    if total_pairs == 0.0 {
        return Err(ScoreError::NoPairs);
    }
    // The training sample (SPEC.md §9.3): above `train_records` records in a holder, each
    // holder's records are kept with probability `train_records / n_h` (seeded), and the
    // model is fitted on the candidates and random pairs among the kept records.
    let sample = training_sample(sizes, &offsets, spec.train_records, TRAIN_SEED);
    let train = match sample {
        None => None,
        Some(members) => {
            let mut kept = vec![false; sizes.iter().sum::<usize>()];
            for m in &members {
                for &g in m {
                    kept[g as usize] = true;
                }
            }
            let mut tkeys: Vec<(crate::Token, u32)> = keys
                .iter()
                .filter(|k| kept[k.1 as usize])
                .copied()
                .collect();
            let (tc, tstats) = stage.candidates(
                PairSet::Training,
                &mut tkeys,
                &offsets,
                spec.max_block,
                spec.max_block_pairs,
            )?;
            let mut pairs = 0.0;
            for i in 0..members.len() {
                for j in i + 1..members.len() {
                    pairs += members[i].len() as f64 * members[j].len() as f64;
                }
            }
            Some((members, tc, tstats.pairs, pairs))
        }
    };
    if let Some((m, _, tc, _)) = &train {
        log(format!(
            "training on a sample of {} records per holder ({} candidate pairs among them, seed {TRAIN_SEED:#x})",
            m.iter()
                .map(|v| v.len().to_string())
                .collect::<Vec<_>>()
                .join("/"),
            tc
        ));
    }
    Ok(CandidateSet {
        pairs: candidates,
        stats: cstats,
        offsets,
        sizes: sizes.to_vec(),
        total_pairs,
        train,
        ms: elapsed_ms(t0),
    })
}

/// Compares every candidate (through `stage`), fits the Fellegi–Sunter model (u from random
/// pairs, λ from the schema's prior rules, m by EM per training session; SPEC.md §9.3) on the
/// training sample if there is one, and scores every candidate. `duplicates`: per holder,
/// may its data hold several records of one person (the within-holder agreement of
/// `rare_agreement` comparisons is then not evidence of chance).
///
/// # Errors
/// [`ScoreError::Stage`] when `stage` fails.
pub fn fit(
    spec: &ScoringSpec,
    duplicates: &[bool],
    features: &Features,
    candidates: &CandidateSet,
    stage: &mut dyn PairStage,
) -> Result<FittedModel, ScoreError> {
    let t0 = Instant::now();
    let scores = super::score_with(
        stage,
        features,
        &candidates.pairs,
        spec.random_pairs,
        candidates.total_pairs,
        EmOptions {
            rare_agreement: spec.comparisons.iter().map(|c| c.rare_agreement).collect(),
            rare_u: spec
                .comparisons
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    c.rare_agreement
                        .then(|| features.within_holder_agreement(i, duplicates))
                        .flatten()
                })
                .collect(),
            neighbour_u: spec
                .comparisons
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    c.neighbour_of
                        .iter()
                        .enumerate()
                        .filter_map(|(l, of)| {
                            let of = (*of)?;
                            // At least the mean number of neighbour dates (the
                            // counterpart may have more spelling variants per date).
                            let ratio = features.token_ratio(i, l, of)?;
                            Some((
                                l,
                                of,
                                ratio.max(crate::normalize::MEAN_BIRTH_DATE_NEIGHBOURS),
                            ))
                        })
                        .collect()
                })
                .collect(),
            u_from: spec.comparisons.iter().map(|c| c.u_from.clone()).collect(),
            exact_levels: spec.comparisons.iter().map(|c| c.exact.len()).collect(),
            checked: spec.comparisons.iter().map(|c| c.when.is_none()).collect(),
            sessions: spec.sessions.clone(),
            ..EmOptions::default()
        },
        candidates
            .train
            .as_ref()
            .map(|(members, tc, _, pairs)| super::Training {
                candidates: tc,
                members,
                total_pairs: *pairs,
            }),
    )?;
    let training = candidates
        .train
        .as_ref()
        .map(|(members, _, tc, pairs)| TrainingSummary {
            records: members.iter().map(|m| m.len() as u64).collect(),
            population: candidates.sizes.iter().map(|&n| n as u64).collect(),
            records_per_holder: spec.train_records,
            seed: TRAIN_SEED,
            candidates: *tc,
            pairs: *pairs,
        });
    Ok(FittedModel {
        scores,
        training,
        ms: elapsed_ms(t0),
    })
}

/// Candidates, scores, threshold and clusters: `features` of every record (global indices,
/// holders in order), `keys` the blocking keys `(token, record)`, `sizes` the records per
/// holder. `log` receives one-line accounts (candidate pairs; EM and threshold). Returns dense
/// cluster labels per record, the number of clusters and the run's state. Candidate pairs
/// and their comparison vectors are made by `stage` ([`super::InProcess`] in `renketsu
/// link`; a distributed stage must give the same). The same as [`find_candidates`], then
/// [`fit`], then [`decide`].
///
/// # Errors
/// [`ScoreError::NoPairs`] when fewer than two holders have records; [`ScoreError::Stage`]
/// when `stage` fails.
pub fn score_and_cluster(
    spec: &ScoringSpec,
    options: DecideOptions<'_>,
    features: Features,
    keys: &mut [(crate::Token, u32)],
    sizes: &[usize],
    stage: &mut dyn PairStage,
    log: &mut dyn FnMut(String),
) -> Result<(Vec<u32>, usize, ScoringRun), ScoreError> {
    let candidates = find_candidates(spec, keys, sizes, stage, log)?;
    let fitted = fit(spec, options.duplicates, &features, &candidates, stage)?;
    decide(
        spec,
        options,
        Arc::new(features),
        candidates,
        fitted,
        stage,
        log,
    )
}

/// The threshold, the given-name veto and guarded clustering of a fitted run (SPEC.md
/// §9.4, §9.5): pairs at or above the threshold (`options.threshold` as a match probability,
/// else the schema's, else the maximum estimated F1) that no veto comparison disagrees on
/// are links; `stage` clusters them. Returns dense cluster labels per record, the number of
/// clusters and the run's state (for the outputs and `summary.json`).
///
/// # Errors
/// [`ScoreError::Stage`] when `stage` fails or returns labels that do not fit the records.
pub fn decide(
    spec: &ScoringSpec,
    options: DecideOptions<'_>,
    features: Arc<Features>,
    candidates: CandidateSet,
    fitted: FittedModel,
    stage: &mut dyn PairStage,
    log: &mut dyn FnMut(String),
) -> Result<(Vec<u32>, usize, ScoringRun), ScoreError> {
    let t0 = Instant::now();
    let CandidateSet {
        pairs: candidates,
        stats: cstats,
        offsets,
        ms: t_cand,
        ..
    } = candidates;
    let FittedModel {
        scores,
        training,
        ms: t_score,
    } = fitted;
    for d in &scores.model.diagnostics {
        log(format!("warning: {d}"));
    }
    let (threshold, source) = match (options.threshold, spec.threshold) {
        (Some(p), _) => (scores.threshold(Some(p)), ThresholdSource::Flag),
        (None, Some(p)) => (scores.threshold(Some(p)), ThresholdSource::Schema),
        (None, None) => (scores.threshold(None), ThresholdSource::Auto),
    };
    let veto: Vec<usize> = spec
        .comparisons
        .iter()
        .enumerate()
        .filter(|(_, c)| c.veto)
        .map(|(i, _)| i)
        .collect();
    let dims = features.dims().clone();
    let (mut links, vetoed_links) = if stage.keeps_pairs() {
        let (links, vetoed) = stage.select_links(&scores.table, threshold, &veto)?;
        if links
            .windows(2)
            .any(|w| (w[0].a, w[0].b) >= (w[1].a, w[1].b))
        {
            return Err(ScoreError::Stage(
                "links are not sorted by (a, b) and distinct".to_owned(),
            ));
        }
        (links, vetoed)
    } else {
        aggregate::select_links(
            &dims,
            &candidates,
            &scores.codes,
            &scores.weights,
            threshold,
            &veto,
        )
    };
    let unseen_matches = (scores.model.matches - scores.model.matches_in_candidates).max(0.0);
    let links_above = links.len() as u64 + vetoed_links;
    let duplicates: Vec<bool> = options.duplicates.to_vec();
    let conflict_comparisons: Vec<usize> = spec
        .comparisons
        .iter()
        .enumerate()
        .filter(|(_, c)| c.conflict)
        .map(|(i, _)| i)
        .collect();
    let rule = ConflictRule {
        veto: veto.clone(),
        conflict: conflict_comparisons,
        threshold,
    };
    let (labels, k, cluster_stats) = stage.cluster(ClusterJob {
        links: &mut links,
        offsets: &offsets,
        duplicates: &duplicates,
        guarded: spec.clustering == Clustering::Guarded,
        features: &features,
        table: &scores.table,
        rule: &rule,
    })?;
    if labels.len() != features.len() || labels.iter().any(|&l| l as usize >= k) {
        return Err(ScoreError::Stage(format!(
            "{} cluster labels ({k} clusters) for {} records",
            labels.len(),
            features.len()
        )));
    }
    // What the estimates need of the candidates, given the clusters (SPEC.md §9.4).
    let ctx = TotalsContext::new(&offsets, labels.clone(), k, &duplicates, &veto);
    let totals = if stage.keeps_pairs() {
        stage.totals(&scores.table, &ctx)?
    } else {
        aggregate::candidate_totals(&ctx, &dims, &candidates, &scores.codes, &scores.weights)
    };
    let both_free = ctx.both_free;
    let t_cluster = elapsed_ms(t0);
    let run = ScoringRun {
        scores,
        candidates: cstats,
        threshold,
        source,
        clustering: spec.clustering,
        links_above,
        vetoed_links,
        cluster_stats,
        offsets: offsets.clone(),
        totals,
        both_free,
        duplicates: duplicates.clone(),
        output_by_pair: BTreeMap::new(),
        unseen_matches,
        training,
        timings_ms: [t_cand, t_score, t_cluster],
        features,
    };
    log(format!(
        "EM over {} patterns ({} iterations{}); threshold {:.2} bits (match probability {:.4}, {}); {} links above it",
        run.scores.patterns.len(),
        run.scores.model.iterations,
        if run.scores.model.converged {
            ""
        } else {
            ", not converged"
        },
        threshold,
        probability(threshold),
        match source {
            ThresholdSource::Flag => "--threshold",
            ThresholdSource::Schema => "schema",
            ThresholdSource::Auto => "maximum estimated F1",
        },
        links_above
    ));
    Ok((labels, k, run))
}

/// Clusters larger than this are not searched for chains (O(n³)); their pairs keep their
/// own probability.
pub const MAX_CHAIN_CLUSTER: usize = 64;

/// The probability of the surest chain between every two records of one cluster (SPEC.md
/// §9.4): `p` is the `n × n` matrix (row-major) of the direct match probabilities of its
/// cross-holder record pairs (0 where there is none: same holder); on return `p[i·n + j]` is
/// the largest product of direct probabilities along a path from `i` to `j` (the path of one
/// edge included). A pair linked only through a third holder's record (two digests that
/// disagree, both agreeing with a third record) is as sure as the two links that carry it
/// are together, not as its own comparison, which looks like a non-match. Clusters of more
/// than [`MAX_CHAIN_CLUSTER`] records are left as they are.
pub fn chain_probabilities(n: usize, p: &mut [f64]) {
    assert_eq!(p.len(), n * n, "an n × n matrix");
    if n > MAX_CHAIN_CLUSTER {
        return;
    }
    for k in 0..n {
        for i in 0..n {
            let pik = p[i * n + k];
            if i == k || pik == 0.0 {
                continue;
            }
            for j in 0..n {
                if j == i || j == k {
                    continue;
                }
                let v = pik * p[k * n + j];
                if v > p[i * n + j] {
                    p[i * n + j] = v;
                }
            }
        }
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

impl ScoringRun {
    /// The model's match probability `P(M | γ)` (term-frequency terms included) of records
    /// `a` and `b` (global indices, any holders; no side effect, unlike
    /// [`Self::observe_output_pair`]).
    pub fn pair_probability(&self, a: u32, b: u32) -> f64 {
        let c = self.features.compare(a, b);
        probability(f64::from(self.scores.table.weight(c.code) + c.tf_bits))
    }

    /// Scores one output pair (global indices `x`, `y`): its match weight (bits), match
    /// probability `P(M | γ)` and comparison levels (`l1-l2-…`, level indices in comparison
    /// order). No side effect; [`Self::observe_output_pair`] counts the pair.
    pub fn score_output_pair(&self, x: u32, y: u32) -> (f64, f64, String) {
        let c = self.features.compare(x, y);
        let w = f64::from(self.scores.table.weight(c.code) + c.tf_bits);
        let dims = self.features.dims();
        let levels: Vec<String> = (0..dims.levels.len())
            .map(|k| dims.level(c.code, k).to_string())
            .collect();
        (w, probability(w), levels.join("-"))
    }

    /// Counts one output pair of parties `px`, `py` with match probability `p` for the
    /// estimated quality of `pairs.csv` (SPEC.md §9.4: the larger of the pair's own
    /// probability and that of its surest chain in the cluster, [`chain_probabilities`]).
    pub fn observe_output_pair(&mut self, px: usize, py: usize, p: f64) {
        let key = if px < py { (px, py) } else { (py, px) };
        let e = self.output_by_pair.entry(key).or_default();
        e.0 += 1;
        e.1 += p;
    }

    /// The `scoring` object of `summary.json` (SPEC.md §9.6).
    pub fn summary(
        &self,
        schema: &Schema,
        parties: &[&str],
        labels: &[u32],
        clusters: usize,
    ) -> ScoringSummary {
        let spec = schema.scoring.as_ref().expect("scoring");
        let dims = self.features.dims();
        let model = &self.scores.model;
        // Level counts among candidates and in the random sample.
        let mut cand_levels: Vec<Vec<u64>> =
            dims.levels.iter().map(|&l| vec![0; l as usize]).collect();
        for &(code, n) in &self.scores.patterns {
            for (c, v) in cand_levels.iter_mut().enumerate() {
                v[dims.level(code, c) as usize] += n;
            }
        }
        let mut sample_levels: Vec<Vec<u64>> =
            dims.levels.iter().map(|&l| vec![0; l as usize]).collect();
        for p in &self.scores.sample {
            for (c, v) in sample_levels.iter_mut().enumerate() {
                v[dims.level(p.code, c) as usize] += p.count;
            }
        }
        let comparisons: Vec<ComparisonSummary> = spec
            .comparisons
            .iter()
            .enumerate()
            .map(|(c, cs)| {
                let levels: Vec<LevelSummary> = (0..cs.levels())
                    .map(|l| {
                        let missing = l + 1 == cs.levels();
                        LevelSummary {
                            label: cs.level_label(l, &schema.recipes),
                            m: (!missing).then(|| model.m[c][l]),
                            u: (!missing).then(|| model.u[c][l]),
                            weight: round(model.level_weight(c, l), 4),
                            candidates: cand_levels[c][l],
                            random_pairs: sample_levels[c][l],
                        }
                    })
                    .collect();
                ComparisonSummary {
                    name: cs.name.clone(),
                    tf: self.features.has_tf(c),
                    conflict: cs.conflict,
                    levels,
                }
            })
            .collect();
        // Matches the output misses among the candidates (SPEC.md §9.4), by holder pair.
        // Under one-to-one linkage (no holder of the pair declared with duplicates), a pair
        // with a record already linked to the other's holder is a non-match ("taken"); a
        // pair whose records are both "free" gains the odds 1/q, q = f_A·f_B the share of
        // pairs with both records free; vetoed pairs are estimated by the method of moments
        // from the free/taken split. With duplicates, free pairs count P(M) and vetoed 0.
        // The sums over the candidates were made with the clusters, in `decide`.
        let both_free = |i: usize, j: usize| self.both_free[i * self.duplicates.len() + j];
        let mut missed: BTreeMap<(usize, usize), f64> = self.totals.missed.clone();
        let mut missed_vetoed: BTreeMap<(usize, usize), f64> = BTreeMap::new();
        for (&(i, j), &(free, taken)) in &self.totals.vetoed {
            let e = vetoed_matches(free, taken, both_free(i, j));
            missed_vetoed.insert((i, j), e);
            *missed.entry((i, j)).or_default() += e;
        }
        let vetoed_total: f64 = missed_vetoed.values().sum();
        let missed_total: f64 = missed.values().sum();
        let in_output: f64 = self.output_by_pair.values().map(|v| v.1).sum();
        let expected_total = in_output + missed_total + self.unseen_matches;
        let (out_pairs, out_true) = self
            .output_by_pair
            .values()
            .fold((0u64, 0.0f64), |(a, b), (n, e)| (a + n, b + e));
        let f1 = |p: f64, r: f64| {
            if p + r == 0.0 {
                0.0
            } else {
                2.0 * p * r / (p + r)
            }
        };
        let precision = if out_pairs == 0 {
            1.0
        } else {
            out_true / out_pairs as f64
        };
        let recall = if expected_total > 0.0 {
            out_true / expected_total
        } else {
            1.0
        };
        let seen_total = (in_output + missed_total).max(1e-12);
        let mut keys: Vec<(usize, usize)> = missed.keys().copied().collect();
        keys.extend(self.output_by_pair.keys().copied());
        keys.sort_unstable();
        keys.dedup();
        // Holder pairs compared only through `rare_agreement` digests (a hash-only holder):
        // the matches that share no digest leave no trace the model can count, so their
        // recall is not identifiable (SPEC.md §9.4); the estimate is an upper bound.
        let informative: Vec<usize> = spec
            .comparisons
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.rare_agreement)
            .map(|(i, _)| i)
            .collect();
        let mut identifiable: BTreeMap<(usize, usize), bool> = BTreeMap::new();
        for g in &self.scores.groups {
            let key = (usize::from(g.holders.0), usize::from(g.holders.1));
            let any = informative.iter().any(|&c| !dims.is_missing(g.code, c));
            *identifiable.entry(key).or_insert(false) |= any;
        }
        let hidden = |i: usize, j: usize| identifiable.get(&(i, j)) == Some(&false);
        let any_hidden = identifiable.values().any(|&x| !x);
        // The matches outside the candidates, split between the holder pairs that meet only
        // through `rare_agreement` digests and the others by the sampled patterns they lie
        // at (SPEC.md §9.4); spread within each class in proportion to its expected matches.
        let seen_of = |i: usize, j: usize| {
            self.output_by_pair.get(&(i, j)).map_or(0.0, |v| v.1)
                + missed.get(&(i, j)).copied().unwrap_or(0.0)
        };
        let (mut seen_hidden, mut seen_known) = (0.0, 0.0);
        for &(i, j) in &keys {
            if hidden(i, j) {
                seen_hidden += seen_of(i, j);
            } else {
                seen_known += seen_of(i, j);
            }
        }
        let unseen_hidden = if any_hidden && seen_hidden > 0.0 && seen_known > 0.0 {
            let all =
                crate::score::em::outside_share_where(dims, &model.m, &self.scores.sample, |_| {
                    true
                });
            let part = crate::score::em::outside_share_where(
                dims,
                &model.m,
                &self.scores.sample,
                |code| informative.iter().all(|&c| dims.is_missing(code, c)),
            );
            (all > 0.0).then(|| self.unseen_matches * (part / all).clamp(0.0, 1.0))
        } else {
            None
        };
        let unseen_of = |i: usize, j: usize, e: f64| match unseen_hidden {
            Some(h) if hidden(i, j) => h * e / seen_hidden,
            Some(h) => (self.unseen_matches - h) * e / seen_known,
            None => self.unseen_matches * e / seen_total,
        };
        let by_pair: Vec<HolderPairEstimate> = keys
            .iter()
            .map(|&(i, j)| {
                let (n, t) = self
                    .output_by_pair
                    .get(&(i, j))
                    .copied()
                    .unwrap_or((0, 0.0));
                let e = t + missed.get(&(i, j)).copied().unwrap_or(0.0);
                let total = e + unseen_of(i, j, e);
                let p = if n == 0 { 1.0 } else { t / n as f64 };
                let r = if total > 0.0 { t / total } else { 1.0 };
                let known = !hidden(i, j);
                HolderPairEstimate {
                    party_a: parties[i].to_owned(),
                    party_b: parties[j].to_owned(),
                    output_pairs: n,
                    expected_true_pairs: round(t, 2),
                    expected_matches: known.then(|| round(total, 2)),
                    precision: round(p, 5),
                    recall: known.then(|| round(r, 5)),
                    f1: known.then(|| round(f1(p, r), 5)),
                    recall_identifiable: known,
                    recall_upper_bound: (!known).then(|| round(r, 5)),
                    recall_note: (!known).then_some(NOT_IDENTIFIABLE),
                }
            })
            .collect();
        // Histogram of candidate match weights, 1-bit bins.
        let mut hist: BTreeMap<i64, u64> = BTreeMap::new();
        for g in &self.scores.groups {
            let w = self.scores.table.weight(g.code) + g.tf_bits;
            *hist
                .entry(f64::from(w).floor().clamp(-60.0, 80.0) as i64)
                .or_default() += g.count;
        }
        // Curve, thinned to about 200 points spread over the links.
        let curve = self.scores.curve();
        let step = (curve.len() / 200).max(1);
        let curve: Vec<CurveSummary> = curve
            .iter()
            .enumerate()
            .filter(|(i, _)| i % step == 0 || *i + 1 == curve.len())
            .map(|(_, p)| CurveSummary {
                weight: round(p.weight, 3),
                probability: p.probability,
                links: p.links,
                precision: round(p.precision, 6),
                recall: round(p.recall, 6),
            })
            .collect();
        let mut sizes = vec![0u32; clusters];
        for &l in labels {
            sizes[l as usize] += 1;
        }
        let mut size_hist: BTreeMap<u32, u64> = BTreeMap::new();
        for s in sizes {
            *size_hist.entry(s).or_default() += 1;
        }
        let _ = &self.offsets;
        ScoringSummary {
            comparisons,
            prior: model.prior,
            prior_bits: round(model.prior_bits(), 4),
            em: EmSummary {
                iterations: model.iterations,
                converged: model.converged,
                patterns: self.scores.patterns.len(),
                prior_rule: model.prior_rule.clone(),
                sessions: model.sessions.clone(),
                diagnostics: model.diagnostics.clone(),
            },
            random_pairs: self.scores.random_pairs,
            candidates: CandidatesSummary {
                pairs: self.candidates.pairs,
                blocking_keys: self.candidates.keys,
                largest_group: self.candidates.largest_group,
                skipped_groups: self.candidates.skipped_groups,
                max_block_pairs: spec.max_block_pairs,
                dropped: self
                    .candidates
                    .dropped
                    .iter()
                    .map(|&(r, groups, pairs)| DroppedBlocks {
                        recipe: schema
                            .recipes
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| *i as u8 == r)
                            .map(|(_, x)| x.name.clone())
                            .collect::<Vec<_>>()
                            .join("|"),
                        groups,
                        pairs,
                    })
                    .collect(),
            },
            training: self.training.clone(),
            threshold: ThresholdSummary {
                weight: round(self.threshold, 4),
                probability: probability(self.threshold),
                source: match self.source {
                    ThresholdSource::Flag => "flag",
                    ThresholdSource::Schema => "schema",
                    ThresholdSource::Auto => "max_estimated_f1",
                },
            },
            links_above_threshold: self.links_above,
            clustering: ClusteringSummary {
                mode: match self.clustering {
                    Clustering::Guarded => "guarded",
                    Clustering::Threshold => "threshold",
                },
                merges: self.cluster_stats.merges,
                redundant: self.cluster_stats.redundant,
                vetoed_same_holder: self.cluster_stats.vetoed_same_holder,
                vetoed_conflict: self.cluster_stats.vetoed_conflict,
                vetoed_by_rule: self.vetoed_links,
            },
            estimated: EstimatedQuality {
                matches: round(expected_total, 2),
                matches_outside_candidates: round(self.unseen_matches, 2),
                matches_missed_among_candidates: round(missed_total, 2),
                matches_missed_vetoed: round(vetoed_total, 2),
                output_pairs: out_pairs,
                expected_true_pairs: round(out_true, 2),
                precision: round(precision, 5),
                recall: (!any_hidden).then(|| round(recall, 5)),
                f1: (!any_hidden).then(|| round(f1(precision, recall), 5)),
                recall_identifiable: !any_hidden,
                recall_upper_bound: any_hidden.then(|| round(recall, 5)),
                recall_note: any_hidden.then_some(NOT_IDENTIFIABLE),
                by_holder_pair: by_pair,
            },
            weight_histogram: hist.into_iter().collect(),
            curve,
            cluster_sizes: size_hist.into_iter().collect(),
            timings_ms: ScoringTimings {
                candidates: self.timings_ms[0],
                compare_em_score: self.timings_ms[1],
                cluster: self.timings_ms[2],
            },
        }
    }
}

/// The `scoring` object of `summary.json` (SPEC.md §9.6).
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct ScoringSummary {
    /// Per comparison: levels with m, u, weight and counts.
    pub comparisons: Vec<ComparisonSummary>,
    /// λ: the share of all cross-holder pairs that are matches.
    pub prior: f64,
    /// log2(λ / (1 − λ)).
    pub prior_bits: f64,
    /// EM's run.
    pub em: EmSummary,
    /// Random pairs sampled for u.
    pub random_pairs: u64,
    /// Candidate generation.
    pub candidates: CandidatesSummary,
    /// The record sample the model was trained on (absent: every record).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingSummary>,
    /// The threshold used.
    pub threshold: ThresholdSummary,
    /// Candidate pairs at or above the threshold (including vetoed ones).
    pub links_above_threshold: u64,
    /// Clustering.
    pub clustering: ClusteringSummary,
    /// The model's estimate of the output's quality (SPEC.md §9.4).
    pub estimated: EstimatedQuality,
    /// Candidate match weights in 1-bit bins: `(floor(weight), count)`, clamped to [−60, 80].
    pub weight_histogram: Vec<(i64, u64)>,
    /// Estimated precision/recall by threshold, thinned to about 200 points.
    pub curve: Vec<CurveSummary>,
    /// `(cluster size, clusters)`.
    pub cluster_sizes: Vec<(u32, u64)>,
    /// Stage wall times in milliseconds.
    pub timings_ms: ScoringTimings,
}

/// One comparison of [`ScoringSummary`].
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct ComparisonSummary {
    /// The comparison's name in the schema.
    pub name: String,
    /// Term-frequency adjustment on its exact level.
    pub tf: bool,
    /// Its disagreement stops a guarded merge below the threshold.
    pub conflict: bool,
    /// Levels, strongest agreement first; the last is "missing".
    pub levels: Vec<LevelSummary>,
}

/// One level of a comparison.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct LevelSummary {
    /// Human label, e.g. `exact kana_name`.
    pub label: String,
    /// P(level | match); `None` for "missing".
    pub m: Option<f64>,
    /// P(level | non-match); `None` for "missing".
    pub u: Option<f64>,
    /// Match weight in bits (log2 m/u), 0 for "missing".
    pub weight: f64,
    /// Candidate pairs at this level.
    pub candidates: u64,
    /// Random pairs at this level.
    pub random_pairs: u64,
}

/// EM's run.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct EmSummary {
    /// Iterations made.
    pub iterations: u32,
    /// Converged before the iteration limit.
    pub converged: bool,
    /// Distinct comparison patterns among the candidates.
    pub patterns: usize,
    /// The deterministic rule behind the prior's centre (SPEC.md §9.3).
    pub prior_rule: super::PriorRule,
    /// The training sessions (SPEC.md §9.3).
    pub sessions: Vec<super::SessionFit>,
    /// Problems of the fit (rejected sessions, an implausible prior), also logged.
    pub diagnostics: Vec<String>,
}

/// Why a recall estimate is withheld (SPEC.md §9.4).
pub const NOT_IDENTIFIABLE: &str = "recall not identifiable: these holders meet only through digests of rare identifiers, and matches that share no digest leave no evidence; the figure is an upper bound";

/// Candidate generation.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct CandidatesSummary {
    /// Candidate pairs.
    pub pairs: u64,
    /// Distinct blocking keys.
    pub blocking_keys: usize,
    /// Records in the largest block kept.
    pub largest_group: usize,
    /// Blocks skipped for exceeding `max_block` records or `max_block_pairs` pairs.
    pub skipped_groups: usize,
    /// Most cross-holder pairs of a block that is expanded.
    pub max_block_pairs: u64,
    /// Skipped blocks by recipe.
    pub dropped: Vec<DroppedBlocks>,
}

/// The blocks of one recipe that were too large to expand (SPEC.md §9.2).
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct DroppedBlocks {
    /// Recipe name (names joined by `|` if the schema has more than 256 recipes).
    pub recipe: String,
    /// Key groups skipped.
    pub groups: u64,
    /// Cross-holder pairs those groups hold (not made from this key; a pair may still be
    /// a candidate through another key).
    pub pairs: u64,
}

/// The record sample a scored run trained its model on (SPEC.md §9.3).
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct TrainingSummary {
    /// Sampled records per holder.
    pub records: Vec<u64>,
    /// Records per holder in the run.
    pub population: Vec<u64>,
    /// The schema's `train_records` (expected sampled records per holder).
    pub records_per_holder: usize,
    /// Seed of the record sample.
    pub seed: u64,
    /// Candidate pairs among the sampled records (EM ran on these).
    pub candidates: u64,
    /// Cross-holder pairs among the sampled records.
    pub pairs: f64,
}

/// Seed of the training record sample: fixed, so that runs are reproducible.
pub const TRAIN_SEED: u64 = 0x7472_6169_6e69_6e67; // "training"

/// The training sample: `None` if no holder has more than `per_holder` records; else per
/// holder the global indices of the records kept, each with probability
/// `min(1, per_holder / n_h)` by a hash of `(seed, index)` (independent of the order of
/// other records), ascending. Sampling records of every holder independently keeps the
/// share of matches among cross-holder pairs (λ) unchanged: a match survives with
/// probability `f_i·f_j`, as any pair does.
pub fn training_sample(
    sizes: &[usize],
    offsets: &[u32],
    per_holder: usize,
    seed: u64,
) -> Option<Vec<Vec<u32>>> {
    if sizes.iter().all(|&n| n <= per_holder) {
        return None;
    }
    Some(
        sizes
            .iter()
            .enumerate()
            .map(|(h, &n)| {
                let start = offsets[h];
                if n <= per_holder {
                    return (start..start + n as u32).collect();
                }
                let cut = (per_holder as f64 / n as f64 * 2f64.powi(64)) as u64;
                (start..start + n as u32)
                    .filter(|&g| mix(seed ^ u64::from(g)) < cut)
                    .collect()
            })
            .collect(),
    )
}

/// A 64-bit finalizer (SplitMix64's, Steele, Lea and Flood 2014).
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The threshold used.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct ThresholdSummary {
    /// Match weight in bits.
    pub weight: f64,
    /// Match probability.
    pub probability: f64,
    /// `flag`, `schema` or `max_estimated_f1`.
    pub source: &'static str,
}

/// Clustering of a scored run.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct ClusteringSummary {
    /// `guarded` or `threshold`.
    pub mode: &'static str,
    /// Links that merged two clusters.
    pub merges: u64,
    /// Links within one cluster already.
    pub redundant: u64,
    /// Merges refused: two records of one one-to-one holder.
    pub vetoed_same_holder: u64,
    /// Merges refused: a conflicting pair across the two clusters.
    pub vetoed_conflict: u64,
    /// Links refused by a veto rule (e.g. given names disagree).
    pub vetoed_by_rule: u64,
}

/// The model's estimate of the output's quality (SPEC.md §9.4).
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct EstimatedQuality {
    /// Expected matches in all.
    pub matches: f64,
    /// Expected matches that are not candidates.
    pub matches_outside_candidates: f64,
    /// Expected matches among candidates not in the output.
    pub matches_missed_among_candidates: f64,
    /// Of those, vetoed ones.
    pub matches_missed_vetoed: f64,
    /// Output pairs.
    pub output_pairs: u64,
    /// Σ P(match) over output pairs.
    pub expected_true_pairs: f64,
    /// Estimated precision.
    pub precision: f64,
    /// Estimated recall; `None` when not identifiable (a hash-only holder pair).
    pub recall: Option<f64>,
    /// Estimated F1; `None` with the recall.
    pub f1: Option<f64>,
    /// Whether the recall is identifiable for every holder pair.
    pub recall_identifiable: bool,
    /// Without an identifiable recall: the model's figure, an upper bound.
    pub recall_upper_bound: Option<f64>,
    /// Without an identifiable recall: why.
    pub recall_note: Option<&'static str>,
    /// The same per pair of holders.
    pub by_holder_pair: Vec<HolderPairEstimate>,
}

/// Estimated quality for one pair of holders.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct HolderPairEstimate {
    /// First holder.
    pub party_a: String,
    /// Second holder.
    pub party_b: String,
    /// Output pairs.
    pub output_pairs: u64,
    /// Σ P(match) over them.
    pub expected_true_pairs: f64,
    /// Expected matches between the two holders; `None` when not identifiable.
    pub expected_matches: Option<f64>,
    /// Estimated precision.
    pub precision: f64,
    /// Estimated recall; `None` when not identifiable (the holders meet only through
    /// `rare_agreement` digests).
    pub recall: Option<f64>,
    /// Estimated F1; `None` with the recall.
    pub f1: Option<f64>,
    /// Whether the recall is identifiable.
    pub recall_identifiable: bool,
    /// Without an identifiable recall: the model's figure, an upper bound.
    pub recall_upper_bound: Option<f64>,
    /// Without an identifiable recall: why.
    pub recall_note: Option<&'static str>,
}

/// One point of the precision/recall curve.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct CurveSummary {
    /// Threshold (bits).
    pub weight: f64,
    /// Its match probability.
    pub probability: f64,
    /// Links at or above it.
    pub links: u64,
    /// Estimated precision there.
    pub precision: f64,
    /// Estimated recall there.
    pub recall: f64,
}

/// Scoring stage wall times, milliseconds.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct ScoringTimings {
    /// Candidate generation.
    pub candidates: f64,
    /// Comparison vectors, EM and scores.
    pub compare_em_score: f64,
    /// Threshold and clustering.
    pub cluster: f64,
}
