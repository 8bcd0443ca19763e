//! Fellegi–Sunter model fitting (SPEC.md §9.3): u from a random-pair sample, m and the match
//! prior by EM over the **distinct comparison patterns with their counts** (Winkler 1988;
//! Enamorado, Fifield and Imai 2019, *fastLink*, §2–3: the likelihood depends on a pair only
//! through its pattern, so 10^7 pairs collapse to a few thousand patterns).
//!
//! Model. Over all `N` cross-holder record pairs, a pair is a match with prior `π`; given its
//! class the comparisons are independent, with level probabilities `m_c(l)` (matches) and
//! `u_c(l)` (non-matches); `missing` levels carry no evidence (factor 1 in both classes).
//! Candidate pairs are the pairs that share a blocking key; blocking keys are agreement
//! events of the comparisons, so the posterior of a candidate is the population posterior
//! `P(M | γ) = π·m(γ) / (π·m(γ) + (1 − π)·u(γ))`, and every match is assumed to be a
//! candidate (`π = Σ_candidates P(M | γ) / N`).

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

/// Fitting options.
#[derive(Clone, Debug, PartialEq)]
pub struct EmOptions {
    /// Most EM iterations.
    pub max_iterations: u32,
    /// Stop when no parameter moves by more than this.
    pub tolerance: f64,
    /// Comparisons whose u stays at its start value (from non-candidate random pairs).
    pub fixed_u: Vec<bool>,
}

impl Default for EmOptions {
    fn default() -> Self {
        Self {
            max_iterations: 20_000,
            tolerance: 1e-7,
            fixed_u: Vec::new(),
        }
    }
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
    /// Estimated matches among the candidate pairs, `Σ P(M | γ)` (pattern level, without
    /// term-frequency terms).
    pub matches_in_candidates: f64,
    /// All cross-holder pairs `N`.
    pub total_pairs: f64,
    /// EM iterations run.
    pub iterations: u32,
    /// Whether EM met the tolerance.
    pub converged: bool,
}

/// Distinct patterns with their counts, sorted by code.
pub fn count_patterns(codes: impl Iterator<Item = u32>) -> Vec<(u32, u64)> {
    let mut v: Vec<u32> = codes.collect();
    v.par_sort_unstable();
    v.chunk_by(|a, b| a == b)
        .map(|run| (run[0], run.len() as u64))
        .collect()
}

/// `u` by the M-step over the random-pair sample: each sampled pair counts as a non-match
/// with weight `w = 1 − P(M | γ)`, half an observation added per level. `weights: None`
/// starts EM: then the sampled pairs that are candidates count 0 and the others 1 (agreement
/// on a blocking key starts as evidence of a match). The sample holds matches at the rate
/// `π`, which for unique identifiers exceeds the chance agreement of non-matches: left in,
/// they would cap every exact agreement at `log2(m/π)` bits.
fn u_step(dims: &Dims, sample: &[SamplePattern], weights: Option<&[f64]>) -> Vec<Vec<f64>> {
    let mut u: Vec<Vec<f64>> = dims.levels.iter().map(|&l| vec![0.5; l as usize]).collect();
    for (k, p) in sample.iter().enumerate() {
        let w = match weights {
            Some(g) => p.count as f64 * (1.0 - g[k]),
            None => (p.count - p.candidates) as f64,
        };
        for (c, uc) in u.iter_mut().enumerate() {
            uc[dims.level(p.code, c) as usize] += w;
        }
    }
    for uc in &mut u {
        let k = uc.len();
        let s: f64 = uc[..k - 1].iter().sum();
        uc[..k - 1].iter_mut().for_each(|x| *x /= s);
        uc[k - 1] = 1.0;
    }
    u
}

/// Posterior `P(M | γ)` of each pattern.
fn e_step(
    dims: &Dims,
    codes: impl Iterator<Item = u32>,
    m: &[Vec<f64>],
    u: &[Vec<f64>],
    prior: f64,
    g: &mut Vec<f64>,
) {
    let logit_prior = (prior / (1.0 - prior)).ln();
    g.clear();
    g.extend(codes.map(|code| {
        let mut w = logit_prior;
        for c in 0..dims.levels.len() {
            let l = dims.level(code, c) as usize;
            if l + 1 < dims.levels[c] as usize {
                w += (m[c][l] / u[c][l]).ln();
            }
        }
        1.0 / (1.0 + (-w).exp())
    }));
}

/// Fits m, u and the prior.
///
/// * `patterns`: distinct pattern codes of the candidate pairs with their counts;
/// * `sample`: distinct patterns of random cross-holder pairs with counts
///   ([`crate::score::Features::random_pairs`]);
/// * `total_pairs`: number of cross-holder pairs `N = Σ_{i<j} n_i·n_j`.
///
pub fn fit(
    dims: &Dims,
    patterns: &[(u32, u64)],
    sample: &[SamplePattern],
    total_pairs: f64,
    opts: EmOptions,
) -> Model {
    // Patterns outside the candidate set: those of sampled pairs that are not candidates,
    // with the share `1 − r(γ)` of such pairs. Matches there are never seen; their expected
    // number is added back in the M-step (EM for truncated data).
    let outside: Vec<(u32, f64)> = sample
        .iter()
        .filter(|p| p.candidates < p.count)
        .map(|p| (p.code, 1.0 - p.candidates as f64 / p.count as f64))
        .collect();
    // Share of pairs with each comparison missing (same for both classes: missing at random).
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
    let candidates: f64 = patterns.iter().map(|&(_, n)| n as f64).sum();
    // Start: matches agree at the strongest level, geometric below it; the sample all
    // non-matches.
    let mut m: Vec<Vec<f64>> = dims
        .levels
        .iter()
        .map(|&l| {
            let k = (l - 1) as usize;
            let mut v: Vec<f64> = (0..k).map(|i| 0.5f64.powi(i as i32 + 1)).collect();
            let s: f64 = v.iter().sum();
            v.iter_mut().for_each(|x| *x /= s);
            v.push(1.0);
            v
        })
        .collect();
    let mut matches = (candidates * 0.1).max(1.0);
    let mut prior = (matches / total_pairs).min(0.5);
    let mut u = u_step(dims, sample, None);
    let mut sample_g = Vec::with_capacity(sample.len());
    let mut iterations = 0;
    let mut converged = false;
    let mut in_candidates = 0.0;
    let mut g = Vec::with_capacity(patterns.len());
    while iterations < opts.max_iterations {
        iterations += 1;
        e_step(dims, patterns.iter().map(|p| p.0), &m, &u, prior, &mut g);
        e_step(
            dims,
            sample.iter().map(|p| p.code),
            &m,
            &u,
            prior,
            &mut sample_g,
        );
        let seen: f64 = patterns
            .iter()
            .zip(&g)
            .map(|(&(_, n), gk)| n as f64 * gk)
            .sum();
        // m(γ) of the outside patterns, with missingness.
        let m_out: Vec<f64> = outside
            .iter()
            .map(|&(code, share)| {
                let mut p = share;
                for (c, mc) in m.iter().enumerate() {
                    let l = dims.level(code, c) as usize;
                    p *= if l + 1 == mc.len() {
                        miss[c]
                    } else {
                        (1.0 - miss[c]) * mc[l]
                    };
                }
                p
            })
            .collect();
        // Blocking is assumed to keep at least 95 % of the matches: without this bound the
        // outside mass, which no observation constrains, can feed on itself.
        let unseen_share: f64 = m_out.iter().sum::<f64>().min(MAX_UNSEEN_SHARE);
        let out_scale = if unseen_share > 0.0 {
            unseen_share / m_out.iter().sum::<f64>()
        } else {
            0.0
        };
        let new_matches = seen / (1.0 - unseen_share);
        let mut new_m: Vec<Vec<f64>> = dims.levels.iter().map(|&l| vec![0.0; l as usize]).collect();
        for (&(code, n), gk) in patterns.iter().zip(&g) {
            let w = n as f64 * gk;
            for (c, mc) in new_m.iter_mut().enumerate() {
                mc[dims.level(code, c) as usize] += w;
            }
        }
        for (&(code, _), p) in outside.iter().zip(&m_out) {
            let w = new_matches * p * out_scale;
            for (c, mc) in new_m.iter_mut().enumerate() {
                mc[dims.level(code, c) as usize] += w;
            }
        }
        let mut delta: f64 = 0.0;
        for (c, mc) in new_m.iter_mut().enumerate() {
            let k = mc.len();
            let s: f64 = mc[..k - 1].iter().sum();
            for l in 0..k - 1 {
                // A small pseudo-count keeps every level possible for matches.
                mc[l] = (mc[l] + 1e-3) / (s + 1e-3 * (k - 1) as f64);
                delta = delta.max((mc[l] - m[c][l]).abs());
            }
            mc[k - 1] = 1.0;
        }
        delta = delta.max(((new_matches - matches) / matches.max(1.0)).abs());
        let mut new_u = u_step(dims, sample, Some(&sample_g));
        for (c, fixed) in opts.fixed_u.iter().enumerate() {
            if *fixed {
                new_u[c].clone_from(&u[c]);
            }
        }
        for (a, b) in new_u.iter().zip(&u) {
            for (x, y) in a.iter().zip(b) {
                delta = delta.max((x - y).abs() / y.max(1e-12) * 1e-3);
            }
        }
        m = new_m;
        u = new_u;
        matches = new_matches;
        prior = (new_matches / total_pairs).clamp(1e-15, 0.5);
        in_candidates = seen;
        if delta < opts.tolerance {
            converged = true;
            break;
        }
    }
    Model {
        m,
        u,
        prior,
        matches,
        matches_in_candidates: in_candidates,
        total_pairs,
        iterations,
        converged,
    }
}

impl Model {
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
        let patterns = count_patterns(codes.into_iter());
        let model = fit(&dims, &patterns, &sample, total, EmOptions::default());
        assert!(model.converged, "{model:?}");
        assert!(
            (model.matches - n_match).abs() / n_match < 0.03,
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
        };
        let t = model.weight_terms(&dims, &[0, 0]);
        // code 2 + 3*2 = both missing: prior only.
        assert!((f64::from(t.weight(8)) - model.prior_bits()).abs() < 1e-5);
        let both_agree = model.prior_bits() + (0.9f64 / 0.01).log2() + (0.8f64 / 0.1).log2();
        assert!((f64::from(t.weight(0)) - both_agree).abs() < 1e-4);
        assert!(probability(0.0) == 0.5);
    }
}
