//! Fellegi–Sunter model fitting (SPEC.md §9.3), in the order of Splink's training: u from a
//! random-pair sample, held fixed in EM; the prior's centre from a deterministic rule; m by
//! EM per training session (a blocking region with its comparisons switched off), over the
//! **distinct comparison patterns with their counts** (Winkler 1988; Enamorado, Fifield and
//! Imai 2019, *fastLink*, §2–3: the likelihood depends on a pair only through its pattern, so
//! 10^7 pairs collapse to a few thousand patterns), each session checked against the
//! constrained-m rule; then the prior alone, with term frequencies, under a Beta prior.
//!
//! Model. Over all `N` cross-holder record pairs, a pair is a match with prior `π`; given its
//! class the comparisons are independent, with level probabilities `m_c(l)` (matches) and
//! `u_c(l)` (non-matches); `missing` levels carry no evidence (factor 1 in both classes).
//! Candidate pairs are the pairs that share a blocking key; blocking keys are agreement
//! events of the comparisons, so the posterior of a candidate is the population posterior
//! `P(M | γ) = π·m(γ) / (π·m(γ) + (1 − π)·u(γ))`, and the matches outside the candidate set
//! are estimated from the sampled non-candidate patterns.

use rayon::prelude::*;

use crate::score::compare::Dims;

/// Largest share of the matches assumed to lie outside the candidate set (blocking keeps at
/// least 95 % of the matches).
pub const MAX_UNSEEN_SHARE: f64 = 0.05;

/// One distinct pattern of the random-pair sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SamplePattern {
    /// Pattern code.
    pub code: u32,
    /// Sampled pairs with this pattern.
    pub count: u64,
    /// Of these, pairs that are also candidate pairs.
    pub candidates: u64,
}

pub use crate::schema::scoring::Session;

impl Session {
    /// Whether pattern `code` lies in the session's region.
    pub fn contains(&self, dims: &Dims, code: u32) -> bool {
        self.region
            .iter()
            .any(|&(c, set)| set & (1 << dims.level(code, c)) != 0)
    }
}

/// Fitting options.
#[derive(Clone, Debug, PartialEq)]
pub struct EmOptions {
    /// Most EM iterations per session and for the prior.
    pub max_iterations: u32,
    /// Stop when no parameter moves by more than this.
    pub tolerance: f64,
    /// `rare_agreement` comparisons: u from the sampled pairs that are **not** candidates
    /// (for the others, from every sampled pair outside the deterministic rule).
    pub rare_agreement: Vec<bool>,
    /// Per `rare_agreement` comparison, its chance agreement per exact level from pairs within
    /// each holder ([`crate::score::Features::within_holder_agreement`]); where given, it
    /// replaces the sampled u of those levels. Empty or `None`: the sample alone.
    pub rare_u: Vec<Option<Vec<f64>>>,
    /// Per comparison, its birth-date neighbour levels as `(level, counterpart level,
    /// factor)`: the level's u is raised to at least `factor` × the counterpart's u (SPEC.md
    /// §9.3; factor from [`crate::score::Features::token_ratio`]), the increase taken from
    /// the comparison's other non-exact levels. Empty: none.
    pub neighbour_u: Vec<Vec<(usize, usize, f64)>>,
    /// Per comparison, its `u_from` levels (SPEC.md §9.3, `ComparisonSpec::u_from`): `(level,
    /// [(comparison, level bit set)])`. Where `rare_u` gives the comparison no within-holder
    /// rates, the level's u is at most the product over the listed comparisons of their u
    /// summed over the listed levels, the decrease given to the comparison's non-exact levels.
    /// Empty: none.
    pub u_from: Vec<Vec<crate::schema::scoring::UFrom>>,
    /// Exact levels per comparison (levels `0..exact_levels[c]`); empty: level 0 only.
    pub exact_levels: Vec<usize>,
    /// Comparisons under the constrained-m check: those evaluated on every pair. A `when`
    /// comparison's levels are conditional and may rightly count against a match (a family's
    /// shared card with another 枝番; the given name where only the family name agrees).
    /// Empty: all.
    pub checked: Vec<bool>,
    /// Training sessions; empty: one session over all candidates with every comparison on.
    pub sessions: Vec<Session>,
    /// Assumed recall of the deterministic rule that gives the prior's centre (Splink
    /// `estimate_probability_two_random_records_match(..., recall)`).
    pub rule_recall: f64,
    /// Weight `w` of the Beta prior on `π` (fastLink `w.lambda`, in `[0, 1)`; 0: none).
    pub prior_weight: f64,
}

impl Default for EmOptions {
    fn default() -> Self {
        Self {
            max_iterations: 5_000,
            tolerance: 1e-7,
            rare_agreement: Vec::new(),
            rare_u: Vec::new(),
            neighbour_u: Vec::new(),
            u_from: Vec::new(),
            exact_levels: Vec::new(),
            checked: Vec::new(),
            sessions: Vec::new(),
            rule_recall: 0.8,
            prior_weight: 0.01,
        }
    }
}

/// The deterministic rule behind the prior's centre (SPEC.md §9.3).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PriorRule {
    /// Candidate pairs the rule accepts.
    pub pairs: u64,
    /// Assumed recall of the rule.
    #[serde(rename = "assumed_recall")]
    pub recall: f64,
    /// `pairs / recall / N`.
    pub prior: f64,
}

/// The outcome of one training session.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SessionFit {
    /// Session name.
    pub name: String,
    /// Candidate pairs in the session's region.
    pub pairs: u64,
    /// Estimated matches among them, `Σ P(M | γ)`.
    pub matches: f64,
    /// The session's own match share (not kept: the model's prior comes from §9.3).
    pub prior: f64,
    /// EM iterations run.
    pub iterations: u32,
    /// Whether EM met the tolerance.
    pub converged: bool,
    /// Whether the fit passed the constrained-m check (else its m is not used).
    pub accepted: bool,
}

/// A fitted Fellegi–Sunter model.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// `m[c][l]`: P(level l of comparison c | match), over non-missing levels (the `missing`
    /// entry is 1).
    pub m: Vec<Vec<f64>>,
    /// `u[c][l]`: P(level l of comparison c | non-match), likewise.
    pub u: Vec<Vec<f64>>,
    /// Prior match probability of a random cross-holder pair.
    pub prior: f64,
    /// Estimated matches among all pairs: `Σ P(M | γ)` over the candidates, plus the matches
    /// expected outside the candidate set.
    pub matches: f64,
    /// Estimated matches among the candidate pairs, `Σ P(M | γ)` (with term-frequency
    /// terms).
    pub matches_in_candidates: f64,
    /// All cross-holder pairs `N`.
    pub total_pairs: f64,
    /// EM iterations run (all sessions and the prior).
    pub iterations: u32,
    /// Whether every EM run met the tolerance.
    pub converged: bool,
    /// The deterministic rule and the prior's centre.
    pub prior_rule: PriorRule,
    /// Training sessions, in order.
    pub sessions: Vec<SessionFit>,
    /// Problems of the fit, for the operator (never silent: also in `summary.json`).
    pub diagnostics: Vec<String>,
}

/// Distinct patterns with their counts, sorted by code.
pub fn count_patterns(codes: impl Iterator<Item = u32>) -> Vec<(u32, u64)> {
    let mut v: Vec<u32> = codes.collect();
    v.par_sort_unstable();
    v.chunk_by(|a, b| a == b)
        .map(|run| (run[0], run.len() as u64))
        .collect()
}

/// Distinct `(pattern, term-frequency bits)` of the candidates with counts, the bits
/// rounded to 1/16: the prior's E-step runs on these groups, term frequencies included
/// (as Splink's E-step scores pairs with their TF adjustment).
pub fn count_groups(items: impl Iterator<Item = (u32, f32)>) -> Vec<(u32, f32, u64)> {
    let mut v: Vec<u64> = items.map(|(code, tf)| group_key(code, tf)).collect();
    v.par_sort_unstable();
    v.chunk_by(|a, b| a == b)
        .map(|run| group_of(run[0], run.len() as u64))
        .collect()
}

/// [`count_groups`] of items given with counts `(pattern, bits, count)` (pairs already
/// grouped, [`super::aggregate::PairGroup`]); the same groups as the items one by one.
pub fn count_groups_weighted(items: impl Iterator<Item = (u32, f32, u64)>) -> Vec<(u32, f32, u64)> {
    let mut m: std::collections::BTreeMap<u64, u64> = Default::default();
    for (code, tf, n) in items {
        *m.entry(group_key(code, tf)).or_default() += n;
    }
    m.into_iter().map(|(k, n)| group_of(k, n)).collect()
}

/// The sort key of a group: the code above the bits rounded to 1/16 (at least 0).
fn group_key(code: u32, tf: f32) -> u64 {
    let q = (f64::from(tf) * 16.0)
        .round()
        .clamp(0.0, f64::from(u32::MAX)) as u64;
    u64::from(code) << 32 | q
}

fn group_of(k: u64, n: u64) -> (u32, f32, u64) {
    ((k >> 32) as u32, (k & 0xffff_ffff) as f32 / 16.0, n)
}

/// Whether pattern `code` passes the deterministic rule: every comparison it evaluates is
/// at an exact level, and at least one is evaluated.
fn strict(dims: &Dims, exact: &[usize], code: u32) -> bool {
    let mut any = false;
    for c in 0..dims.levels.len() {
        if dims.is_missing(code, c) {
            continue;
        }
        let e = exact.get(c).copied().unwrap_or(1);
        if dims.level(code, c) as usize >= e {
            return false;
        }
        any = true;
    }
    any
}

/// `u` from the random-pair sample, fixed before EM (Splink
/// `estimate_u_using_random_sampling`): every sampled pair outside the deterministic rule is
/// a non-match (true matches in the sample, rate `π`, are removed by the rule rather than by
/// EM feedback); for `rare_agreement` comparisons, only sampled pairs that are not
/// candidates. Half an observation is added per level.
/// Turns comparison `c`'s sampled non-match counts `uc` (levels, the last = missing) into u:
/// the non-missing levels sum to 1, the missing level is 1. Within-holder agreement
/// (`opts.rare_u`, SPEC.md §9.3) resolves rates the sample cannot: its exact levels take
/// those rates (a level no within pair reached keeps half a pair of the count), and the other
/// non-missing levels share the rest in their sampled proportions.
#[cfg(test)]
fn normalize_u(uc: &mut [f64], c: usize, opts: &EmOptions) {
    normalize_u_sampled(uc, c, opts);
    raise_neighbours(uc, c, opts);
}

/// Turns the sampled non-match counts of every comparison into u ([`normalize_u_sampled`]),
/// then bounds the `u_from` levels (`opts.u_from`, SPEC.md §9.3) by the product of their
/// fields' chance agreement, then raises the neighbour levels ([`raise_neighbours`]): the
/// bound needs every comparison's sampled u, and a neighbour level follows its counterpart's
/// bounded u.
fn normalize_all(u: &mut [Vec<f64>], opts: &EmOptions) {
    for (c, uc) in u.iter_mut().enumerate() {
        normalize_u_sampled(uc, c, opts);
    }
    for (c, levels) in opts.u_from.iter().enumerate() {
        let resolved = matches!(opts.rare_u.get(c), Some(Some(_)));
        if resolved || levels.is_empty() || c >= u.len() {
            continue;
        }
        let k = u[c].len();
        let e = opts.exact_levels.get(c).copied().unwrap_or(1).min(k - 1);
        for (l, of) in levels {
            let product: f64 = of
                .iter()
                .map(|&(j, bits)| {
                    u[j][..u[j].len() - 1]
                        .iter()
                        .enumerate()
                        .filter(|(x, _)| bits >> x & 1 == 1)
                        .map(|(_, v)| v)
                        .sum::<f64>()
                })
                .product();
            let uc = &mut u[c];
            if *l >= e || product >= uc[*l] {
                continue;
            }
            let freed = uc[*l] - product;
            uc[*l] = product;
            let rest: f64 = uc[e..k - 1].iter().sum();
            if rest > 0.0 {
                uc[e..k - 1]
                    .iter_mut()
                    .for_each(|x| *x += *x / rest * freed);
            } else if e < k - 1 {
                uc[e..k - 1]
                    .iter_mut()
                    .for_each(|x| *x += freed / (k - 1 - e) as f64);
            }
        }
    }
    for (c, uc) in u.iter_mut().enumerate() {
        raise_neighbours(uc, c, opts);
    }
}

/// The neighbour levels of comparison `c` raised to their share of the counterpart's u
/// (`opts.neighbour_u`), the increase taken from the non-exact levels.
fn raise_neighbours(uc: &mut [f64], c: usize, opts: &EmOptions) {
    let Some(raise) = opts.neighbour_u.get(c) else {
        return;
    };
    let k = uc.len();
    let e = opts.exact_levels.get(c).copied().unwrap_or(1).min(k - 1);
    for &(l, of, factor) in raise {
        let want = uc[of] * factor;
        if l >= e || want <= uc[l] {
            continue;
        }
        let rest: f64 = uc[e..k - 1].iter().sum();
        let add = (want - uc[l]).min(rest);
        if rest > 0.0 {
            uc[e..k - 1].iter_mut().for_each(|x| *x -= *x / rest * add);
        }
        uc[l] += add;
    }
}

/// [`normalize_u`] before the neighbour levels are raised.
fn normalize_u_sampled(uc: &mut [f64], c: usize, opts: &EmOptions) {
    let k = uc.len();
    let s: f64 = uc[..k - 1].iter().sum();
    uc[..k - 1].iter_mut().for_each(|x| *x /= s);
    uc[k - 1] = 1.0;
    let Some(Some(r)) = opts.rare_u.get(c) else {
        return;
    };
    if !opts.rare_agreement.get(c).copied().unwrap_or(false) {
        return;
    }
    let e = r.len().min(k - 1);
    let rest: f64 = uc[e..k - 1].iter().sum();
    // The floor of unobserved levels comes from the observed rates of levels other than
    // birth-date neighbour levels: raw records whose neighbour sets intersect agree there
    // far more often than any digest does, and would lift an unobserved exact level to half
    // of that.
    let neighbour = |l: usize| {
        opts.neighbour_u
            .get(c)
            .is_some_and(|v| v.iter().any(|&(x, _, _)| x == l))
    };
    let floor = r
        .iter()
        .copied()
        .enumerate()
        .filter(|&(l, x)| x > 0.0 && !neighbour(l))
        .fold(f64::INFINITY, |m, (_, x)| m.min(x));
    let floor = if floor.is_finite() {
        floor / 2.0
    } else {
        1e-12
    };
    let agree: Vec<f64> = r[..e].iter().map(|&x| x.max(floor)).collect();
    let left = (1.0 - agree.iter().sum::<f64>()).max(0.0);
    for (l, x) in uc[..k - 1].iter_mut().enumerate() {
        *x = if l < e {
            agree[l]
        } else if rest > 0.0 {
            *x / rest * left
        } else {
            left / (k - 1 - e) as f64
        };
    }
}

fn u_fixed(dims: &Dims, sample: &[SamplePattern], opts: &EmOptions) -> Vec<Vec<f64>> {
    let mut u: Vec<Vec<f64>> = dims.levels.iter().map(|&l| vec![0.5; l as usize]).collect();
    for p in sample {
        let rule = strict(dims, &opts.exact_levels, p.code);
        for (c, uc) in u.iter_mut().enumerate() {
            let rare = opts.rare_agreement.get(c).copied().unwrap_or(false);
            let w = if rare {
                (p.count - p.candidates) as f64
            } else if rule {
                0.0
            } else {
                p.count as f64
            };
            uc[dims.level(p.code, c) as usize] += w;
        }
    }
    normalize_all(&mut u, opts);
    u
}

/// The start of m: matches at the strongest level, geometric below it.
fn m_start(dims: &Dims) -> Vec<Vec<f64>> {
    dims.levels
        .iter()
        .map(|&l| {
            let k = (l - 1) as usize;
            let mut v: Vec<f64> = (0..k).map(|i| 0.5f64.powi(i as i32 + 1)).collect();
            let s: f64 = v.iter().sum();
            v.iter_mut().for_each(|x| *x /= s);
            v.push(1.0);
            v
        })
        .collect()
}

/// One session's EM: u fixed, m of the active comparisons and the session's match share
/// free. Returns m, the share, iterations, convergence and, per comparison, the posterior
/// match mass at its non-missing levels.
struct SessionResult {
    m: Vec<Vec<f64>>,
    prior: f64,
    iterations: u32,
    converged: bool,
    mass: Vec<f64>,
}

fn session_em(
    dims: &Dims,
    pats: &[(u32, u64)],
    active: &[bool],
    u: &[Vec<f64>],
    prior0: f64,
    population: Option<f64>,
    opts: &EmOptions,
) -> SessionResult {
    // A session's region is fixed by comparisons switched off in it, so its non-matches
    // follow u and its own match share is Σ P(M)/pairs. Over all candidates the region is
    // fixed by active comparisons: the share is then the population prior Σ P(M)/N.
    let n: f64 = population
        .unwrap_or_else(|| pats.iter().map(|p| p.1 as f64).sum::<f64>())
        .max(1.0);
    let mut m = m_start(dims);
    let mut prior = prior0.clamp(1e-9, 0.999);
    let mut iterations = 0;
    let mut converged = false;
    let mut mass = vec![0.0; dims.levels.len()];
    let lr: Vec<Vec<f64>> = u
        .iter()
        .map(|uc| uc.iter().map(|x| x.ln()).collect())
        .collect();
    while iterations < opts.max_iterations {
        iterations += 1;
        let lm: Vec<Vec<f64>> = m
            .iter()
            .map(|mc| mc.iter().map(|x| x.ln()).collect())
            .collect();
        let logit = (prior / (1.0 - prior)).ln();
        let mut new_m: Vec<Vec<f64>> = dims.levels.iter().map(|&l| vec![0.0; l as usize]).collect();
        let mut total = 0.0;
        for &(code, cnt) in pats {
            let mut w = logit;
            for c in 0..dims.levels.len() {
                let l = dims.level(code, c) as usize;
                if active[c] && l + 1 < dims.levels[c] as usize {
                    w += lm[c][l] - lr[c][l];
                }
            }
            let g = cnt as f64 / (1.0 + (-w).exp());
            total += g;
            for (c, mc) in new_m.iter_mut().enumerate() {
                if active[c] {
                    mc[dims.level(code, c) as usize] += g;
                }
            }
        }
        let mut delta: f64 = 0.0;
        for (c, mc) in new_m.iter_mut().enumerate() {
            let k = mc.len();
            let s: f64 = mc[..k - 1].iter().sum();
            mass[c] = s;
            if !active[c] {
                mc.clone_from(&m[c]);
                continue;
            }
            for l in 0..k - 1 {
                mc[l] = (mc[l] + 1e-3) / (s + 1e-3 * (k - 1) as f64);
                delta = delta.max((mc[l] - m[c][l]).abs());
            }
            mc[k - 1] = 1.0;
        }
        let new_prior = (total / n).clamp(1e-15, if population.is_some() { 0.5 } else { 0.999 });
        delta = delta.max(((new_prior - prior) / prior).abs());
        m = new_m;
        prior = new_prior;
        if delta < opts.tolerance {
            converged = true;
            break;
        }
    }
    SessionResult {
        m,
        prior,
        iterations,
        converged,
        mass,
    }
}

/// The constrained-m check (fastLink orders m and u over the levels after each M-step;
/// Winkler 1993, constrained EM): for a `checked` comparison with at least one expected
/// match at its non-missing levels, the strongest level must carry at least the m and the
/// Bayes factor `m/u` of `disagree`. Returns the violations.
fn m_violations(
    dims: &Dims,
    m: &[Vec<f64>],
    u: &[Vec<f64>],
    cs: &[usize],
    checked: &[bool],
) -> Vec<usize> {
    cs.iter()
        .copied()
        .filter(|&c| {
            let d = dims.levels[c] as usize - 2;
            checked.get(c).copied().unwrap_or(true)
                && d > 0
                && (m[c][0] < m[c][d] || m[c][0] / u[c][0] < m[c][d] / u[c][d])
        })
        .collect()
}

/// Fits the model (SPEC.md §9.3): u from the random pairs (fixed within EM, re-weighted by
/// `1 − P(M | γ)` between three rounds); the prior's centre from the deterministic rule; m by EM per training session with the session's comparisons
/// switched off, averaged over the accepted sessions weighted by their match mass; then
/// `π` alone by EM over the candidates with term-frequency terms, under a Beta prior
/// centred on the rule's estimate (fastLink `prior.lambda`, `w.lambda`).
///
/// * `patterns`: distinct pattern codes of the candidate pairs with counts;
/// * `groups`: distinct `(pattern, term-frequency bits)` of the candidates with counts
///   ([`count_groups`]);
/// * `tf`: term-frequency adjusted levels per comparison (as in [`Model::weight_terms`]);
/// * `sample`: distinct patterns of random cross-holder pairs with counts
///   ([`crate::score::Features::random_pairs`]);
/// * `total_pairs`: number of cross-holder pairs `N = Σ_{i<j} n_i·n_j`.
#[allow(
    clippy::too_many_arguments,
    reason = "the inputs of the estimation, each used once"
)]
pub fn fit(
    dims: &Dims,
    patterns: &[(u32, u64)],
    groups: &[(u32, f32, u64)],
    tf: &[usize],
    sample: &[SamplePattern],
    total_pairs: f64,
    opts: EmOptions,
) -> Model {
    let mut diagnostics = Vec::new();
    let u = u_fixed(dims, sample, &opts);
    // The prior's centre: candidates the deterministic rule accepts ÷ assumed recall ÷ N
    // (Splink `estimate_probability_two_random_records_match`).
    let rule_pairs: u64 = patterns
        .iter()
        .filter(|p| strict(dims, &opts.exact_levels, p.0))
        .map(|p| p.1)
        .sum();
    let recall = opts.rule_recall.clamp(1e-3, 1.0);
    let candidates: f64 = patterns.iter().map(|&(_, n)| n as f64).sum();
    let rule_prior = if rule_pairs > 0 {
        (rule_pairs as f64 / recall / total_pairs).clamp(1e-15, 0.5)
    } else {
        diagnostics.push(
            "no candidate pair passes the deterministic rule (every compared field exact): the prior starts at 10 % of the candidates".into(),
        );
        (candidates * 0.1 / total_pairs).clamp(1e-15, 0.5)
    };
    let prior_rule = PriorRule {
        pairs: rule_pairs,
        recall,
        prior: rule_prior,
    };
    // u is re-weighted by `1 − P(M | γ)` of the fitted model between rounds (matches the
    // deterministic rule misses leave the sample), never inside an EM loop.
    let mut u = u;
    let mut round = 0;
    loop {
        round += 1;
        let r = train_round(
            dims,
            patterns,
            groups,
            tf,
            sample,
            total_pairs,
            &opts,
            &u,
            &prior_rule,
        );
        if round == ROUNDS {
            let mut diagnostics = diagnostics;
            diagnostics.extend(r.diagnostics);
            return Model {
                m: r.m,
                u,
                prior: r.prior,
                matches: r.matches,
                matches_in_candidates: r.seen,
                total_pairs,
                iterations: r.iterations,
                converged: r.converged,
                prior_rule,
                sessions: r.fits,
                diagnostics,
            };
        }
        u = u_weighted(dims, sample, &opts, &r.m, &u, r.prior);
    }
}

/// Rounds of training (u re-weighted between them).
const ROUNDS: u32 = 3;

/// The outcome of one round of training.
struct Round {
    m: Vec<Vec<f64>>,
    prior: f64,
    matches: f64,
    seen: f64,
    iterations: u32,
    converged: bool,
    fits: Vec<SessionFit>,
    diagnostics: Vec<String>,
}

/// `u` from the sample with each sampled pair weighted by `1 − P(M | γ)` under `m`, `u` and
/// `prior` (without term frequencies); `rare_agreement` comparisons as in [`u_fixed`].
fn u_weighted(
    dims: &Dims,
    sample: &[SamplePattern],
    opts: &EmOptions,
    m: &[Vec<f64>],
    u0: &[Vec<f64>],
    prior: f64,
) -> Vec<Vec<f64>> {
    let logit = (prior / (1.0 - prior)).ln();
    let mut u: Vec<Vec<f64>> = dims.levels.iter().map(|&l| vec![0.5; l as usize]).collect();
    for p in sample {
        let mut w = logit;
        for c in 0..dims.levels.len() {
            let l = dims.level(p.code, c) as usize;
            if l + 1 < dims.levels[c] as usize {
                w += (m[c][l] / u0[c][l]).ln();
            }
        }
        let non_match = 1.0 - 1.0 / (1.0 + (-w).exp());
        for (c, uc) in u.iter_mut().enumerate() {
            let rare = opts.rare_agreement.get(c).copied().unwrap_or(false);
            let x = if rare {
                (p.count - p.candidates) as f64
            } else {
                p.count as f64 * non_match
            };
            uc[dims.level(p.code, c) as usize] += x;
        }
    }
    normalize_all(&mut u, opts);
    u
}

#[allow(clippy::too_many_arguments, reason = "the inputs of the estimation")]
fn train_round(
    dims: &Dims,
    patterns: &[(u32, u64)],
    groups: &[(u32, f32, u64)],
    tf: &[usize],
    sample: &[SamplePattern],
    total_pairs: f64,
    opts: &EmOptions,
    u: &[Vec<f64>],
    prior_rule: &PriorRule,
) -> Round {
    let nc = dims.levels.len();
    let mut diagnostics = Vec::new();
    let rule_prior = prior_rule.prior;
    let rule_pairs = prior_rule.pairs;
    let recall = prior_rule.recall;
    let expected = rule_prior * total_pairs;
    // Sessions, then one over all candidates for comparisons no session estimated.
    let mut sum_m: Vec<Vec<f64>> = dims.levels.iter().map(|&l| vec![0.0; l as usize]).collect();
    let mut sum_w = vec![0.0; nc];
    let mut fits = Vec::new();
    let mut iterations = 0;
    let mut converged = true;
    let all = Session {
        name: "all candidates".into(),
        region: Vec::new(),
        off: Vec::new(),
    };
    let mut sessions = opts.sessions.clone();
    sessions.push(all);
    for (k, s) in sessions.iter().enumerate() {
        let fallback = k + 1 == sessions.len();
        let need: Vec<usize> = (0..nc).filter(|&c| sum_w[c] < 1.0).collect();
        if fallback
            && (need.is_empty() || !fits.is_empty() && need.iter().all(|&c| s.off.contains(&c)))
        {
            break;
        }
        let pats: Vec<(u32, u64)> = patterns
            .iter()
            .copied()
            .filter(|p| fallback || s.contains(dims, p.0))
            .collect();
        let n: u64 = pats.iter().map(|p| p.1).sum();
        if n == 0 {
            continue;
        }
        let active: Vec<bool> = (0..nc).map(|c| !s.off.contains(&c)).collect();
        let r = if fallback {
            let start = expected / total_pairs;
            session_em(dims, &pats, &active, u, start, Some(total_pairs), opts)
        } else {
            session_em(dims, &pats, &active, u, expected / n as f64, None, opts)
        };
        iterations += r.iterations;
        converged &= r.converged;
        let judged: Vec<usize> = (0..nc).filter(|&c| active[c] && r.mass[c] >= 1.0).collect();
        let bad = m_violations(dims, &r.m, u, &judged, &opts.checked);
        let accepted = bad.is_empty();
        if !accepted {
            diagnostics.push(format!(
                "training session `{}` rejected: comparison(s) {bad:?} have a strongest level weaker than `disagree` (constrained m)",
                s.name
            ));
        }
        if accepted || fallback {
            let use_c: Vec<usize> = if fallback {
                need.clone()
            } else {
                judged.clone()
            };
            for c in use_c {
                let w = r.mass[c].max(1e-9);
                for (acc, x) in sum_m[c].iter_mut().zip(&r.m[c]) {
                    *acc += w * x;
                }
                sum_w[c] += w;
            }
        }
        fits.push(SessionFit {
            name: s.name.clone(),
            pairs: n,
            matches: if fallback {
                r.prior * total_pairs
            } else {
                r.prior * n as f64
            },
            prior: r.prior,
            iterations: r.iterations,
            converged: r.converged,
            accepted,
        });
    }
    let start = m_start(dims);
    let m: Vec<Vec<f64>> = (0..nc)
        .map(|c| {
            if sum_w[c] > 0.0 {
                let k = sum_m[c].len();
                let mut v: Vec<f64> = sum_m[c].iter().map(|x| x / sum_w[c]).collect();
                v[k - 1] = 1.0;
                v
            } else {
                start[c].clone()
            }
        })
        .collect();
    if sessions.len() > 1 {
        let bad = m_violations(
            dims,
            &m,
            u,
            &(0..nc).filter(|&c| sum_w[c] >= 1.0).collect::<Vec<_>>(),
            &opts.checked,
        );
        if !bad.is_empty() {
            diagnostics.push(format!(
                "the fitted m of comparison(s) {bad:?} favour disagreement over agreement: the model is not trustworthy"
            ));
        }
    }
    // π by EM with m and u fixed, term frequencies in the E-step, matches outside the
    // candidate set added back (their share capped at 5 %).
    let terms = weight_terms_of(dims, &m, u, tf);
    let outside: f64 = outside_share(dims, &m, sample);
    let unseen_share = outside.min(MAX_UNSEEN_SHARE);
    let c = opts.prior_weight.clamp(0.0, 0.99);
    let c = c / (1.0 - c);
    let mu = rule_prior * c * total_pairs + 1.0;
    let psi = (1.0 - rule_prior) * (mu - 1.0) / rule_prior + 1.0;
    let bits: Vec<f64> = groups
        .iter()
        .map(|&(code, t, _)| {
            let mut w = f64::from(t);
            for (cc, tc) in terms.iter().enumerate() {
                w += tc[dims.level(code, cc) as usize];
            }
            w * std::f64::consts::LN_2
        })
        .collect();
    let mut prior = rule_prior;
    let mut seen = 0.0;
    let mut it = 0;
    let mut ok = false;
    while it < opts.max_iterations {
        it += 1;
        let logit = (prior / (1.0 - prior)).ln();
        seen = groups
            .iter()
            .zip(&bits)
            .map(|(g, w)| g.2 as f64 / (1.0 + (-(logit + w)).exp()))
            .sum();
        let matches = seen / (1.0 - unseen_share);
        let new_prior = ((matches + mu - 1.0) / (total_pairs + mu + psi - 2.0)).clamp(1e-15, 0.5);
        let delta = ((new_prior - prior) / prior).abs();
        prior = new_prior;
        if delta < opts.tolerance {
            ok = true;
            break;
        }
    }
    iterations += it;
    converged &= ok;
    let matches = seen / (1.0 - unseen_share);
    if rule_pairs > 0 && (matches > 3.0 * expected || matches < expected / 3.0) {
        diagnostics.push(format!(
            "the estimated matches ({matches:.0}) are more than 3× away from the deterministic rule's {expected:.0} (recall {recall} assumed)"
        ));
    }
    Round {
        m,
        prior,
        matches,
        seen,
        iterations,
        converged,
        fits,
        diagnostics,
    }
}

/// Weight terms in bits without the prior: `log2 m` at term-frequency levels, else
/// `log2(m/u)`, 0 at `missing`.
fn weight_terms_of(dims: &Dims, m: &[Vec<f64>], u: &[Vec<f64>], tf: &[usize]) -> Vec<Vec<f64>> {
    (0..dims.levels.len())
        .map(|c| {
            (0..dims.levels[c] as usize)
                .map(|l| {
                    if l + 1 == dims.levels[c] as usize {
                        0.0
                    } else if l < tf.get(c).copied().unwrap_or(0) {
                        m[c][l].log2()
                    } else {
                        (m[c][l] / u[c][l]).log2()
                    }
                })
                .collect()
        })
        .collect()
}

/// Share of the matches outside the candidate set: `Σ m(γ)·(1 − r(γ))` over the patterns of
/// sampled pairs, `r(γ)` the share of such pairs that are candidates (EM for truncated data;
/// Murray 2016), with the missing levels at their sampled rate.
fn outside_share(dims: &Dims, m: &[Vec<f64>], sample: &[SamplePattern]) -> f64 {
    outside_share_where(dims, m, sample, |_| true)
}

/// The part of [`Model::matches`]' share outside the candidate set (SPEC.md §9.3) that lies at
/// the sampled patterns `keep` accepts (e.g. the patterns of pairs that meet only through
/// `rare_agreement` digests, SPEC.md §9.4).
pub fn outside_share_where(
    dims: &Dims,
    m: &[Vec<f64>],
    sample: &[SamplePattern],
    keep: impl Fn(u32) -> bool,
) -> f64 {
    let sampled: f64 = sample.iter().map(|p| p.count as f64).sum::<f64>().max(1.0);
    let miss: Vec<f64> = (0..dims.levels.len())
        .map(|c| {
            sample
                .iter()
                .filter(|p| dims.is_missing(p.code, c))
                .map(|p| p.count as f64)
                .sum::<f64>()
                / sampled
        })
        .collect();
    sample
        .iter()
        .filter(|p| p.candidates < p.count && keep(p.code))
        .map(|p| {
            let mut x = 1.0 - p.candidates as f64 / p.count as f64;
            for (c, mc) in m.iter().enumerate() {
                let l = dims.level(p.code, c) as usize;
                x *= if l + 1 == mc.len() {
                    miss[c]
                } else {
                    (1.0 - miss[c]) * mc[l]
                };
            }
            x
        })
        .sum()
}

impl Model {
    /// Re-bases a model fitted on a record sample on the candidates it scores (SPEC.md §9.3):
    /// `seen` is `Σ P(M | γ)` over those candidates, `total_pairs` their population's
    /// cross-holder pairs, `sample` random pairs of that population (with their candidate
    /// flags); the matches outside the candidates are re-estimated from it (capped at
    /// [`MAX_UNSEEN_SHARE`]). m, u and λ are kept.
    pub fn rebase(&mut self, dims: &Dims, sample: &[SamplePattern], seen: f64, total_pairs: f64) {
        let unseen = outside_share(dims, &self.m, sample).min(MAX_UNSEEN_SHARE);
        self.matches_in_candidates = seen;
        self.matches = seen / (1.0 - unseen);
        self.total_pairs = total_pairs;
    }

    /// Match weight in bits of each level: `log2(m/u)` (0 for `missing`).
    pub fn level_weight(&self, c: usize, l: usize) -> f64 {
        if l + 1 == self.m[c].len() {
            0.0
        } else {
            (self.m[c][l] / self.u[c][l]).log2()
        }
    }

    /// Prior log-odds in bits, `log2(π/(1 − π))`.
    pub fn prior_bits(&self) -> f64 {
        (self.prior / (1.0 - self.prior)).log2()
    }

    /// The additive terms of match weights (SPEC.md §9.3); `tf[c]` is the number of
    /// term-frequency adjusted (exact) levels of comparison `c`: at those levels the term is
    /// `log2(m_c(l))`, the pair's own `−log2` frequency replacing `log2 u_c(l)` (a pair's
    /// weight is `terms.weight(code) + tf_bits`).
    pub fn weight_terms(&self, dims: &Dims, tf: &[usize]) -> WeightTerms {
        let terms = (0..dims.levels.len())
            .map(|c| {
                (0..dims.levels[c] as usize)
                    .map(|l| {
                        if l < tf[c] {
                            self.m[c][l].log2() as f32
                        } else {
                            self.level_weight(c, l) as f32
                        }
                    })
                    .collect()
            })
            .collect();
        WeightTerms {
            dims: dims.clone(),
            prior: self.prior_bits() as f32,
            terms,
        }
    }
}

/// Per-level weight terms of a fitted model: the match weight of any pattern code.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightTerms {
    dims: Dims,
    /// Prior log-odds (bits).
    pub prior: f32,
    /// `terms[c][l]`: bits added by level `l` of comparison `c`.
    pub terms: Vec<Vec<f32>>,
}

impl WeightTerms {
    /// The terms of a model fitted elsewhere (e.g. sent to a worker): `terms[c]` has
    /// `dims.levels[c]` entries.
    ///
    /// # Errors
    /// The shapes of `terms` and `dims` differ.
    pub fn new(dims: Dims, prior: f32, terms: Vec<Vec<f32>>) -> Result<Self, String> {
        if terms.len() != dims.levels.len()
            || terms
                .iter()
                .zip(&dims.levels)
                .any(|(t, &l)| t.len() != l as usize)
        {
            return Err("weight terms do not fit the comparisons' levels".to_owned());
        }
        Ok(Self { dims, prior, terms })
    }

    /// Match weight (bits, prior included) of pattern `code`, before term-frequency terms.
    #[inline]
    pub fn weight(&self, code: u32) -> f32 {
        let mut w = self.prior;
        for (c, t) in self.terms.iter().enumerate() {
            w += t[self.dims.level(code, c) as usize];
        }
        w
    }
}

/// Match probability of a match weight in bits (prior included).
#[inline]
pub fn probability(weight: f64) -> f64 {
    1.0 / (1.0 + (-weight).exp2())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_neighbour_level_takes_its_counterparts_u_times_the_factor() {
        // Levels: exact digest, neighbour digest, disagree, missing; counts as sampled.
        let opts = EmOptions {
            exact_levels: vec![2],
            neighbour_u: vec![vec![(1, 0, 30.0)]],
            ..EmOptions::default()
        };
        let mut uc = vec![0.5, 0.5, 999_999.0, 10.0];
        normalize_u(&mut uc, 0, &opts);
        // The sample alone bounds both digest levels alike (half an observation each); the
        // neighbour level is raised to 30 times the exact level's, the disagree level lowered.
        let n = 1_000_000.0;
        assert!((uc[0] - 0.5 / n).abs() < 1e-15, "{uc:?}");
        assert!((uc[1] - 15.0 / n).abs() < 1e-12, "{uc:?}");
        assert!((uc[0] + uc[1] + uc[2] - 1.0).abs() < 1e-12, "{uc:?}");
        assert_eq!(uc[3], 1.0);
        // A neighbour level already above the derived bound keeps its own estimate.
        let mut uc = vec![0.5, 100.5, 999_899.0, 10.0];
        normalize_u(&mut uc, 0, &opts);
        assert!((uc[1] - 100.5 / n).abs() < 1e-12, "{uc:?}");
        // Within-holder rates (rare_agreement): an exact level no pair reached is not lifted
        // to half the neighbour level's rate; the neighbour level keeps its own.
        let opts = EmOptions {
            rare_agreement: vec![true],
            rare_u: vec![Some(vec![0.0, 8e-7])],
            ..opts
        };
        let mut uc = vec![0.5, 0.5, 999_999.0, 10.0];
        normalize_u(&mut uc, 0, &opts);
        assert_eq!(uc[0], 1e-12, "{uc:?}");
        assert!((uc[1] - 8e-7).abs() < 1e-18, "{uc:?}");
    }

    /// `u_from`: a digest level that the sample only bounds by its half observation takes
    /// the product of its fields' chance agreement (name 10⁻³, birth date 3·10⁻⁵, sex ½), and
    /// its neighbour level follows from that; with within-holder rates, or where the product
    /// is larger, the level keeps its estimate.
    #[test]
    fn a_digest_level_takes_the_product_of_its_fields_u() {
        // Comparisons: name (exact, disagree, missing), birth date (the same), sex (the
        // same), digest (exact, neighbour, disagree, missing).
        let opts = EmOptions {
            rare_agreement: vec![false, false, false, true],
            exact_levels: vec![1, 1, 1, 2],
            neighbour_u: vec![vec![], vec![], vec![], vec![(1, 0, 35.0)]],
            u_from: vec![
                vec![],
                vec![],
                vec![],
                vec![(0, vec![(0, 1), (1, 1), (2, 1)])],
            ],
            ..EmOptions::default()
        };
        let sampled = || {
            vec![
                vec![1_000.0, 999_000.0, 5.0],
                vec![30.0, 999_970.0, 5.0],
                vec![500_000.0, 500_000.0, 5.0],
                vec![0.5, 0.5, 999_999.0, 5.0],
            ]
        };
        let mut u = sampled();
        normalize_all(&mut u, &opts);
        let product = 1e-3 * 3e-5 * 0.5;
        assert!((u[3][0] / product - 1.0).abs() < 1e-9, "{:?}", u[3]);
        assert!(
            (u[3][1] / (35.0 * product) - 1.0).abs() < 1e-9,
            "{:?}",
            u[3]
        );
        assert!(
            (u[3][..3].iter().sum::<f64>() - 1.0).abs() < 1e-12,
            "{:?}",
            u[3]
        );
        // The fields' own u are untouched.
        assert!((u[0][0] - 1e-3).abs() < 1e-12 && (u[2][0] - 0.5).abs() < 1e-12);
        // Without `u_from`: the half observation, and the neighbour level 35 times that.
        let mut plain = sampled();
        normalize_all(
            &mut plain,
            &EmOptions {
                u_from: Vec::new(),
                ..opts.clone()
            },
        );
        assert!((plain[3][0] - 0.5e-6).abs() < 1e-15, "{:?}", plain[3]);
        assert!(plain[3][1] > 30.0 * u[3][1], "{:?} {:?}", plain[3], u[3]);
        // Within-holder rates resolve the level: they stand.
        let mut within = sampled();
        normalize_all(
            &mut within,
            &EmOptions {
                rare_u: vec![None, None, None, Some(vec![4e-9, 1e-7])],
                ..opts.clone()
            },
        );
        assert!((within[3][0] - 4e-9).abs() < 1e-20, "{:?}", within[3]);
        // A product above the sampled bound does not raise it.
        let mut common = sampled();
        common[1] = vec![999_000.0, 1_000.0, 5.0];
        common[0] = vec![999_000.0, 1_000.0, 5.0];
        normalize_all(&mut common, &opts);
        assert!((common[3][0] - 0.5e-6).abs() < 1e-15, "{:?}", common[3]);
    }

    /// Draws pairs from a known two-class model and checks that EM recovers m and the prior.
    #[test]
    fn recovers_a_known_model() {
        let dims = Dims::from_levels(vec![3, 4, 3]); // levels incl. disagree + missing
        let m_true = [vec![0.9, 0.1], vec![0.6, 0.2, 0.2], vec![0.95, 0.05]];
        let u_true = [vec![0.002, 0.998], vec![0.001, 0.05, 0.949], vec![0.5, 0.5]];
        let n_total = 1.0e8f64;
        let n_match = 5_000.0f64;
        let mut state = 7u64;
        let mut rnd = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        };
        let draw = |p: &[f64], x: f64| {
            let mut acc = 0.0;
            for (i, q) in p.iter().enumerate() {
                acc += q;
                if x < acc {
                    return i as u32;
                }
            }
            p.len() as u32 - 1
        };
        let mut codes = Vec::new();
        // Matches, and non-matches that agree on comparison 0 or level 0/1 of comparison 1
        // (the "blocking" region), as a blocked candidate set would hold them.
        for _ in 0..n_match as usize {
            let l: Vec<u32> = (0..3).map(|c| draw(&m_true[c], rnd())).collect();
            if l[0] == 0 || l[1] <= 1 {
                codes.push(l[0] + 3 * l[1] + 12 * l[2]);
            }
        }
        let mut kept = 0u64;
        for _ in 0..2_000_000 {
            let l: Vec<u32> = (0..3).map(|c| draw(&u_true[c], rnd())).collect();
            if l[0] == 0 || l[1] <= 1 {
                kept += 1;
            }
        }
        // Candidate non-matches: the blocked share of all non-match pairs, drawn again.
        let blocked_share = kept as f64 / 2.0e6;
        let n_cand_nonmatch = (blocked_share * n_total) as usize;
        let mut added = 0;
        while added < n_cand_nonmatch.min(400_000) {
            let l: Vec<u32> = (0..3).map(|c| draw(&u_true[c], rnd())).collect();
            if l[0] == 0 || l[1] <= 1 {
                codes.push(l[0] + 3 * l[1] + 12 * l[2]);
                added += 1;
            }
        }
        // Scale: treat the population as total = n_cand_nonmatch / blocked_share.
        let total = added as f64 / blocked_share + n_match;
        // The u sample: random pairs of the population, matches included at their rate.
        let mut sample_codes = Vec::new();
        for _ in 0..2_000_000 {
            let class = if rnd() < n_match / total {
                &m_true
            } else {
                &u_true
            };
            let l: Vec<u32> = (0..3).map(|c| draw(&class[c], rnd())).collect();
            sample_codes.push(l[0] + 3 * l[1] + 12 * l[2]);
        }
        let blocked = |code: u32| code.is_multiple_of(3) || code / 3 % 4 <= 1;
        let sample: Vec<SamplePattern> = count_patterns(sample_codes.into_iter())
            .into_iter()
            .map(|(code, count)| SamplePattern {
                code,
                count,
                candidates: if blocked(code) { count } else { 0 },
            })
            .collect();
        let patterns = count_patterns(codes.iter().copied());
        let groups = count_groups(codes.iter().map(|&c| (c, 0.0)));
        // The blocking region: comparison 0 agrees, or comparison 1 at level 0 or 1; one
        // training session per blocking comparison, with it switched off.
        let sessions = vec![
            Session {
                name: "c0".into(),
                region: vec![(0, 0b1)],
                off: vec![0],
            },
            Session {
                name: "c1".into(),
                region: vec![(1, 0b11)],
                off: vec![1],
            },
        ];
        let model = fit(
            &dims,
            &patterns,
            &groups,
            &[0, 0, 0],
            &sample,
            total,
            EmOptions {
                exact_levels: vec![1, 2, 1],
                sessions,
                ..EmOptions::default()
            },
        );
        // The session on comparison 1 (390,000 pairs, 1 % matches) converges slowly and
        // stops at the iteration limit; its m is still within 0.05 of the truth.
        assert!(model.sessions.iter().all(|s| s.accepted), "{model:?}");
        // Measured 4,624 of 5,000: the sessions' m are fitted within the blocks, and the
        // prior alone is then fitted with m and u fixed.
        assert!(
            (model.matches - n_match).abs() / n_match < 0.1,
            "matches {} {model:?}",
            model.matches
        );
        for (c, mc) in m_true.iter().enumerate() {
            for (l, want) in mc.iter().enumerate() {
                assert!(
                    (model.m[c][l] - want).abs() < 0.05,
                    "m[{c}][{l}] = {} want {want}",
                    model.m[c][l]
                );
            }
        }
    }

    /// The share of matches outside the candidates splits over the sampled patterns: the part
    /// at patterns with comparison 0 missing plus the rest is the whole, and each part is
    /// `Σ m(γ)·(1 − r(γ))` over its own patterns.
    #[test]
    fn outside_share_splits_by_pattern() {
        let dims = Dims::from_levels(vec![3, 3]); // agree, disagree, missing
        let m = vec![vec![0.9, 0.1, 1.0], vec![0.8, 0.2, 1.0]];
        let sample = vec![
            // comparison 0 missing, 1 agrees; never a candidate
            SamplePattern {
                code: 2,
                count: 10,
                candidates: 0,
            },
            // both disagree; never a candidate
            SamplePattern {
                code: 1 + 3,
                count: 80,
                candidates: 0,
            },
            // both agree; always a candidate (not outside)
            SamplePattern {
                code: 0,
                count: 10,
                candidates: 10,
            },
        ];
        let all = outside_share(&dims, &m, &sample);
        let missing0 = outside_share_where(&dims, &m, &sample, |c| dims.is_missing(c, 0));
        let rest = outside_share_where(&dims, &m, &sample, |c| !dims.is_missing(c, 0));
        // miss rate of comparison 0: 10 %; 0.1 · 0.8 and 0.9 · 0.1 · 0.2.
        assert!((missing0 - 0.08).abs() < 1e-12, "{missing0}");
        assert!((rest - 0.018).abs() < 1e-12, "{rest}");
        assert!((all - missing0 - rest).abs() < 1e-12, "{all}");
    }

    #[test]
    fn missing_levels_carry_no_weight() {
        let dims = Dims::from_levels(vec![3, 3]);
        let model = Model {
            m: vec![vec![0.9, 0.1, 1.0], vec![0.8, 0.2, 1.0]],
            u: vec![vec![0.01, 0.99, 1.0], vec![0.1, 0.9, 1.0]],
            prior: 1e-4,
            matches: 1.0,
            matches_in_candidates: 1.0,
            total_pairs: 1e4,
            iterations: 1,
            converged: true,
            prior_rule: PriorRule {
                pairs: 1,
                recall: 1.0,
                prior: 1e-4,
            },
            sessions: Vec::new(),
            diagnostics: Vec::new(),
        };
        let t = model.weight_terms(&dims, &[0, 0]);
        // code 2 + 3*2 = both missing: prior only.
        assert!((f64::from(t.weight(8)) - model.prior_bits()).abs() < 1e-5);
        let both_agree = model.prior_bits() + (0.9f64 / 0.01).log2() + (0.8f64 / 0.1).log2();
        assert!((f64::from(t.weight(0)) - both_agree).abs() < 1e-4);
        assert!(probability(0.0) == 0.5);
    }

    /// A population of `n` records per holder, `n/2` of them one person on both sides:
    /// comparisons name, birth date, postal code and sex (exact, disagree, missing), with
    /// expected pattern counts written out exactly (no sampling noise). Candidates are the
    /// pairs that agree on name, birth date or postal code, so namesakes (same name, other
    /// birth date and address) grow with `n²` and matches with `n`.
    struct Population {
        dims: Dims,
        patterns: Vec<(u32, u64)>,
        sample: Vec<SamplePattern>,
        total: f64,
        matches: f64,
        m: [[f64; 2]; 4],
    }

    fn population(n: f64) -> Population {
        let dims = Dims::from_levels(vec![3, 3, 3, 3]);
        // m and u of the agree level; name u: 1 in 10,000 pairs are namesakes.
        let m = [[0.95, 0.05], [0.96, 0.04], [0.85, 0.15], [0.99, 0.01]];
        let u = [
            [1e-4, 1.0 - 1e-4],
            [3e-5, 1.0 - 3e-5],
            [1e-4, 1.0 - 1e-4],
            [0.5, 0.5],
        ];
        let total = n * n;
        let matches = n / 2.0;
        let blocked = |l: &[usize]| l[0] == 0 || l[1] == 0 || l[2] == 0;
        let mut patterns = Vec::new();
        let mut sample = Vec::new();
        for code in 0..81u32 {
            let l: Vec<usize> = (0..4).map(|c| dims.level(code, c) as usize).collect();
            if l.contains(&2) {
                continue;
            }
            let pm: f64 = (0..4).map(|c| m[c][l[c]]).product();
            let pu: f64 = (0..4).map(|c| u[c][l[c]]).product();
            let cand = blocked(&l);
            let expect = matches * pm + (total - matches) * pu;
            if cand && expect >= 0.5 {
                patterns.push((code, expect.round() as u64));
            }
            let s = (2.0e6 * expect / total).round() as u64;
            if s > 0 {
                sample.push(SamplePattern {
                    code,
                    count: s,
                    candidates: if cand { s } else { 0 },
                });
            }
        }
        Population {
            dims,
            patterns,
            sample,
            total,
            matches,
            m,
        }
    }

    fn sessions() -> Vec<Session> {
        ["name", "birth_date", "postal_code"]
            .iter()
            .enumerate()
            .map(|(c, name)| Session {
                name: (*name).into(),
                region: vec![(c, 1)],
                off: vec![c],
            })
            .collect()
    }

    fn fit_population(p: &Population, sessions: Vec<Session>) -> Model {
        let groups: Vec<(u32, f32, u64)> = p.patterns.iter().map(|&(c, n)| (c, 0.0, n)).collect();
        fit(
            &p.dims,
            &p.patterns,
            &groups,
            &[0, 0, 0, 0],
            &p.sample,
            p.total,
            EmOptions {
                exact_levels: vec![1, 1, 1, 1],
                sessions,
                ..EmOptions::default()
            },
        )
    }

    /// At 3×10^5 records per holder the namesakes outnumber the matches 60 to 1: EM over the
    /// name block with the name comparison left on (its non-matches all agree on the name,
    /// far from u) takes the namesakes for the matches (agreement on birth date weaker than
    /// disagreement); the constrained-m check rejects that session with a diagnostic. The
    /// sessions with their blocked comparison switched off recover m and the matches.
    #[test]
    fn sessions_hold_where_em_on_the_name_block_settles_on_namesakes() {
        let p = population(3.0e5);
        let left_on = Session {
            name: "name block, name left on".into(),
            region: vec![(0, 1)],
            off: Vec::new(),
        };
        let bad = fit_population(&p, vec![left_on]);
        assert!(!bad.sessions[0].accepted, "{bad:?}");
        assert!(
            bad.sessions[0].matches > 10.0 * p.matches,
            "namesakes taken for matches: {bad:?}"
        );
        assert!(
            bad.diagnostics
                .iter()
                .any(|d| d.contains("name left on") && d.contains("constrained m")),
            "{:?}",
            bad.diagnostics
        );
        let model = fit_population(&p, sessions());
        assert!(model.diagnostics.is_empty(), "{:?}", model.diagnostics);
        assert!(model.sessions.iter().all(|s| s.accepted), "{model:?}");
        for c in 0..4 {
            assert!(
                (model.m[c][0] - p.m[c][0]).abs() < 0.02,
                "m[{c}][0] = {} want {}",
                model.m[c][0],
                p.m[c][0]
            );
        }
        assert!(
            (model.matches - p.matches).abs() / p.matches < 0.03,
            "{} vs {}",
            model.matches,
            p.matches
        );
    }

    /// Scale invariance: fitted on populations of 10^4 to 3×10^5 records per holder, the
    /// prior (as matches per record) and the m of name and birth date agree within 5 %.
    #[test]
    fn sessions_are_scale_invariant() {
        let fits: Vec<(f64, Model)> = [1.0e4, 3.0e4, 1.0e5, 3.0e5]
            .iter()
            .map(|&n| (n, fit_population(&population(n), sessions())))
            .collect();
        let (n0, m0) = &fits[0];
        for (n, m) in &fits[1..] {
            let r = (m.matches / n) / (m0.matches / n0);
            assert!(
                (r - 1.0).abs() < 0.05,
                "matches per record at {n}: ratio {r}"
            );
            for c in 0..2 {
                let r = m.m[c][0] / m0.m[c][0];
                assert!((r - 1.0).abs() < 0.05, "m[{c}][0] at {n}: ratio {r}");
            }
        }
    }
}
