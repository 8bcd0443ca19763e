//! Stage C2: position families. A positional feature (`"i:c"` tokens, SPEC.md §7.1) or a
//! one-character feature (sex) gives every record exactly one token per position, so the
//! cliques of one position are mutually exclusive (no record has two of them) and together
//! cover every record with a value: a partition of the records. Tokens of one position often
//! share a frequency (day digits, the two sexes, `1:1` and `2:9` both mark 19xx), so a
//! clique-by-clique alignment by frequency cannot label them; a family can:
//!
//! 1. **Reference families**: the reference tokens of one (feature, position), with counts.
//! 2. **View families**: for each reference family, sets of pairwise exclusive cliques grown
//!    greedily from every seed clique, adding the exclusive clique whose support best fits an
//!    unmatched member's count; the set whose best labelling fits the reference best is kept.
//! 3. **Labelling**: an exact minimum-cost assignment (dynamic programming over subsets, at
//!    most [`MAX_MEMBERS`] symbols) of a chi-square cost: the member's support against the
//!    token's scaled count, plus its joint counts with every clique labelled before against
//!    the reference's joint counts of the tokens. Cross-position constraints (valid dates,
//!    day ≤ 31, month ≤ 12, the century with the decade) are in those joint counts; families
//!    are labelled in order of increasing entropy, so the coarse positions anchor the finer.
//! 4. **Decision**: a member is labelled only when swapping its token with any other member's
//!    (or an unmatched token) costs more than a margin above noise; symmetric tokens (equal
//!    counts and equal joints, e.g. uniformly drawn day digits) stay unlabelled. A
//!    two-member family left undecided (sex) is decided by which of its two labellings lets the
//!    other cliques (name q-grams) fit the reference's co-occurrence with the two tokens best.
//!
//! Source: the partition recursion and conditional frequencies of Christen, Vidanage,
//! Ranbaduge and Schnell (PAKDD 2018; ICDE 2019; IEEE TKDE 31(11) 2019), specialised to the
//! exclusivity that positional encodings impose. Shapes: `n` view records, `nref` reference
//! records; counts are records; costs are sums of squared z-scores.

use std::collections::BTreeMap;

use rayon::prelude::*;

use super::ClkModel;
use super::mining::{Clique, RefToken};

/// Most symbols of a family (the assignment is exponential in it).
pub(super) const MAX_MEMBERS: usize = 12;

/// Labelling passes over all families (the later ones see every other family's labels).
const PASSES: usize = 4;

/// A member's support may be this many squared standard deviations from its token's count.
const ACCEPT: f64 = 25.0;

fn pop_and(a: &[u64], b: &[u64]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x & y).count_ones()).sum()
}

/// A labelled view family: total cost, its candidate cliques, their cost per member, and
/// each clique's member.
type Labelled = (f64, Vec<usize>, Vec<Vec<f64>>, Vec<usize>);

/// One reference family: the frequent tokens of one (feature, position).
struct RefFamily {
    /// Feature index.
    feature: usize,
    /// Token indices (into the reference tokens), by decreasing count.
    members: Vec<usize>,
    /// Reference records with a token of the family (rare tokens included).
    total: u32,
    /// Entropy of the members' distribution (bits): the order of labelling.
    entropy: f64,
}

/// What stage C2 found.
pub(super) struct Families {
    /// `(clique, token)` labels.
    pub aligned: Vec<(usize, usize)>,
    /// Reference families for which a view family was found.
    pub found: usize,
}

/// Groups the reference tokens into families: one per (feature, position) of a positional
/// unsalted feature, one per unsalted non-positional feature with `q = 1` whose every
/// reference value is one token (`one_token[f]`). Families with more than [`MAX_MEMBERS`]
/// frequent tokens or none are skipped.
fn reference_families(model: &ClkModel, tokens: &[RefToken], one_token: &[bool]) -> Vec<RefFamily> {
    let mut groups: BTreeMap<(usize, String), (Vec<usize>, u32)> = BTreeMap::new();
    for (i, t) in tokens.iter().enumerate() {
        let (fi, text) = &t.key;
        let f = &model.features[*fi];
        if f.salt.is_some() {
            continue;
        }
        let pos = if f.positional {
            match text.split_once(':') {
                Some((p, _)) => p.to_owned(),
                None => continue,
            }
        } else if f.q <= 1 && one_token[*fi] {
            String::new()
        } else {
            continue;
        };
        let g = groups.entry((*fi, pos)).or_default();
        g.1 += t.count;
        if t.records.is_some() {
            g.0.push(i);
        }
    }
    let mut out: Vec<RefFamily> = groups
        .into_iter()
        .filter(|(_, (m, _))| !m.is_empty() && m.len() <= MAX_MEMBERS)
        .map(|((feature, _), (mut members, total))| {
            members.sort_by(|&a, &b| tokens[b].count.cmp(&tokens[a].count).then(a.cmp(&b)));
            let entropy = members
                .iter()
                .map(|&t| f64::from(tokens[t].count) / f64::from(total.max(1)))
                .filter(|&p| p > 0.0)
                .map(|p| -p * p.log2())
                .sum();
            RefFamily {
                feature,
                members,
                total,
                entropy,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        a.entropy
            .total_cmp(&b.entropy)
            .then(a.feature.cmp(&b.feature))
    });
    out
}

/// Minimum-cost assignment of every row to a distinct column (`rows ≤ cols ≤ MAX_MEMBERS`),
/// exact, by dynamic programming over column subsets; returns the cost and each row's column.
fn assign(cost: &[Vec<f64>], cols: usize) -> Option<(f64, Vec<usize>)> {
    let rows = cost.len();
    if rows > cols || cols > MAX_MEMBERS {
        return None;
    }
    let size = 1usize << cols;
    let mut dp = vec![f64::INFINITY; size];
    let mut from = vec![(0usize, 0usize); size];
    dp[0] = 0.0;
    for mask in 0..size {
        let r = mask.count_ones() as usize;
        if r >= rows || !dp[mask].is_finite() {
            continue;
        }
        for (c, &x) in cost[r].iter().enumerate().take(cols) {
            if mask >> c & 1 == 1 {
                continue;
            }
            let nm = mask | 1 << c;
            let v = dp[mask] + x;
            if v < dp[nm] {
                dp[nm] = v;
                from[nm] = (mask, c);
            }
        }
    }
    let best = (0..size)
        .filter(|m| m.count_ones() as usize == rows)
        .min_by(|&a, &b| dp[a].total_cmp(&dp[b]).then(a.cmp(&b)))?;
    if !dp[best].is_finite() {
        return None;
    }
    let mut out = vec![0; rows];
    let mut m = best;
    for r in (0..rows).rev() {
        let (pm, c) = from[m];
        out[r] = c;
        m = pm;
    }
    Some((dp[best], out))
}

/// Squared z-score of a view count `o` against a reference count `c` scaled by `scale`
/// (both Poisson), plus a relative slack `rel` of the expectation.
fn chi(o: f64, c: f64, scale: f64, rel: f64) -> f64 {
    let e = c * scale;
    (o - e) * (o - e) / (o + c * scale * scale + 1.0 + (rel * e) * (rel * e))
}

/// Stage C2 (module doc). `one_token[f]`: feature `f` gives every reference value exactly one
/// token.
pub(super) fn label(
    model: &ClkModel,
    cliques: &[Clique],
    tokens: &[RefToken],
    one_token: &[bool],
    n: usize,
    nref: usize,
) -> Families {
    let mut out = Families {
        aligned: Vec::new(),
        found: 0,
    };
    if n == 0 || nref == 0 {
        return out;
    }
    let families = reference_families(model, tokens, one_token);
    if families.is_empty() {
        return out;
    }
    let scale = n as f64 / nref as f64;
    let noisy = model.xor_fold || model.blip_epsilon.is_some();
    let rel = if noisy { 0.05 } else { 0.01 };
    // Family tokens and their reference joint counts.
    let ftok: Vec<usize> = {
        let mut v: Vec<usize> = families.iter().flat_map(|f| f.members.clone()).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let fidx = |t: usize| ftok.binary_search(&t).expect("a family token");
    let tj: Vec<Vec<u32>> = ftok
        .par_iter()
        .map(|&a| {
            let ra = tokens[a].records.as_ref().expect("members have records");
            ftok.iter()
                .map(|&b| {
                    pop_and(
                        ra,
                        tokens[b].records.as_ref().expect("members have records"),
                    )
                })
                .collect()
        })
        .collect();
    // Candidate cliques: big enough for the smallest member, and of a plausible size.
    let least = families
        .iter()
        .flat_map(|f| {
            f.members
                .iter()
                .map(|&t| f64::from(tokens[t].count) * scale)
        })
        .fold(f64::INFINITY, f64::min);
    let kmin = model
        .features
        .iter()
        .map(|f| f.k as usize)
        .min()
        .unwrap_or(1);
    let cand: Vec<usize> = (0..cliques.len())
        .filter(|&j| {
            f64::from(cliques[j].support) >= least / 2.0 && cliques[j].cols.len() * 2 >= kmin
        })
        .collect();
    if cand.is_empty() {
        return out;
    }
    let ov: Vec<Vec<u32>> = cand
        .par_iter()
        .map(|&a| {
            cand.iter()
                .map(|&b| pop_and(&cliques[a].records, &cliques[b].records))
                .collect()
        })
        .collect();
    let sup: Vec<f64> = cand
        .iter()
        .map(|&j| f64::from(cliques[j].support))
        .collect();
    let nf = n as f64;
    let excl_tol = if noisy { 0.05 } else { 0.02 };
    let exclusive = |a: usize, b: usize| {
        let e = sup[a] * sup[b] / nf;
        f64::from(ov[a][b]) <= 2.0 + excl_tol * e
    };
    // Per family, its current labelling: (candidate clique, family-token index, decided).
    let mut state: Vec<Vec<(usize, usize, bool)>> = vec![Vec::new(); families.len()];
    // Passes: the first labels each family against the families before it; the later ones
    // relabel every family against all the others' labels, decided or provisional (so that
    // day tens and day units, each ambiguous alone, settle together).
    for pass in 0..PASSES {
        let mut changed = false;
        for (fi, fam) in families.iter().enumerate() {
            if pass > 0 && state[fi].iter().all(|x| x.2) && !state[fi].is_empty() {
                continue;
            }
            let anchors: Vec<(usize, usize)> = state
                .iter()
                .enumerate()
                .filter(|&(g, _)| g != fi)
                .flat_map(|(_, v)| v.iter().map(|&(c, t, _)| (c, t)))
                .collect();
            let k = model.features[fam.feature].k as usize;
            let m = fam.members.len();
            let counts: Vec<f64> = fam
                .members
                .iter()
                .map(|&t| f64::from(tokens[t].count))
                .collect();
            let marg = |c: usize, i: usize| chi(sup[c], counts[i], scale, rel);
            let joint = |c: usize, i: usize| -> f64 {
                let ti = fidx(fam.members[i]);
                anchors
                    .iter()
                    .map(|&(ca, ta)| chi(f64::from(ov[c][ca]), f64::from(tj[ti][ta]), scale, rel))
                    .sum()
            };
            // A token's own columns are all in its clique (all but some with BLIP or XOR
            // folding); implied tokens' columns (the date separators with any digit) may
            // add more. A clique held by another family is shared only where the reference
            // says its token and one of this family's are the same records (`1:1` and `2:9`).
            let min_cols = if noisy {
                k.div_ceil(2)
            } else {
                k.saturating_sub(1)
            };
            let taken: Vec<Option<usize>> = {
                let mut v = vec![None; cand.len()];
                for (g, st) in state.iter().enumerate() {
                    if g != fi {
                        for &(c, t, _) in st {
                            v[c] = Some(t);
                        }
                    }
                }
                v
            };
            let member_f: Vec<usize> = fam.members.iter().map(|&t| fidx(t)).collect();
            let size_ok = |c: usize| {
                cliques[cand[c]].cols.len() >= min_cols
                    && taken[c].is_none_or(|tg| {
                        member_f.iter().any(|&tf| {
                            let both = f64::from(tj[tf][tg]);
                            both >= 0.95 * f64::from(tj[tf][tf].max(tj[tg][tg]))
                        })
                    })
            };
            // Greedy view families from every seed.
            let mut seen: Vec<Vec<usize>> = Vec::new();
            for c0 in 0..cand.len() {
                if !size_ok(c0) {
                    continue;
                }
                let Some(i0) = (0..m).min_by(|&a, &b| marg(c0, a).total_cmp(&marg(c0, b))) else {
                    continue;
                };
                if marg(c0, i0) > ACCEPT {
                    continue;
                }
                let mut set = vec![c0];
                let mut used = vec![false; m];
                used[i0] = true;
                while set.len() < m {
                    let mut best: Option<(f64, usize, usize)> = None;
                    for c in 0..cand.len() {
                        if set.contains(&c) || !size_ok(c) || !set.iter().all(|&s| exclusive(c, s))
                        {
                            continue;
                        }
                        for i in (0..m).filter(|&i| !used[i]) {
                            let x = marg(c, i);
                            if x <= ACCEPT && best.is_none_or(|b| (x, c, i) < b) {
                                best = Some((x, c, i));
                            }
                        }
                    }
                    let Some((_, c, i)) = best else { break };
                    set.push(c);
                    used[i] = true;
                }
                set.sort_unstable();
                if !seen.contains(&set) {
                    seen.push(set);
                }
            }
            // The best labelled view family.
            let mut best: Option<Labelled> = None;
            for set in seen {
                let covered: f64 = set.iter().map(|&c| sup[c]).sum();
                if covered < 0.8 * f64::from(fam.total) * scale {
                    continue;
                }
                let cost: Vec<Vec<f64>> = set
                    .iter()
                    .map(|&c| (0..m).map(|i| marg(c, i) + joint(c, i)).collect())
                    .collect();
                let Some((total, lab)) = assign(&cost, m) else {
                    continue;
                };
                // Unmatched members: observed 0 records against their count.
                let missing: f64 = (0..m)
                    .filter(|i| !lab.contains(i))
                    .map(|i| chi(0.0, counts[i], scale, rel))
                    .sum();
                let total = total + missing;
                if best.as_ref().is_none_or(|b| total < b.0) {
                    best = Some((total, set, cost, lab));
                }
            }
            let Some((_, set, cost, mut lab)) = best else {
                continue;
            };
            // Decision by swaps: under symmetric tokens the swap's cost difference is a
            // difference of sums of about 4·terms chi-square variables (sd ≈ √(8·terms)).
            let terms = 1 + anchors.len();
            let margin = 9.0 + 3.0 * (8.0 * terms as f64).sqrt();
            let mut decided = vec![true; set.len()];
            for (a, &ia) in lab.iter().enumerate() {
                for i in (0..m).filter(|&i| i != ia) {
                    let other = lab.iter().position(|&x| x == i);
                    let delta = match other {
                        Some(b) => cost[a][i] + cost[b][ia] - cost[a][ia] - cost[b][i],
                        None => cost[a][i] - cost[a][ia],
                    };
                    if delta < margin {
                        decided[a] = false;
                        if let Some(b) = other {
                            decided[b] = false;
                        }
                    }
                }
            }
            // A two-member family left undecided: the labelling under which the other
            // cliques fit the reference's co-occurrences best.
            if set.len() == 2 && m == 2 && decided.iter().all(|d| !d) {
                let flip = free_fit(
                    model,
                    cliques,
                    tokens,
                    fam,
                    cand[set[0]],
                    fam.members[lab[0]],
                    fam.members[lab[1]],
                    scale,
                );
                match flip {
                    Some(false) => decided = vec![true; 2],
                    Some(true) => {
                        decided = vec![true; 2];
                        lab = vec![lab[1], lab[0]];
                    }
                    None => {}
                }
            }
            let next: Vec<(usize, usize, bool)> = set
                .iter()
                .zip(&lab)
                .zip(&decided)
                .map(|((&c, &i), &d)| (c, fidx(fam.members[i]), d))
                .collect();
            if next != state[fi] {
                changed = true;
                state[fi] = next;
            }
        }
        if !changed {
            break;
        }
    }
    for v in &state {
        if !v.is_empty() {
            out.found += 1;
        }
        for &(c, t, d) in v {
            if d {
                out.aligned.push((cand[c], ftok[t]));
            }
        }
    }
    out
}

/// Decides a two-member family `{x, y}` whose clique `a` is labelled `x` (and the other `y`)
/// or the reverse: for every clique outside the family's feature, the distance (chi-square,
/// frequency plus the share of its records in clique `a`) to its best-fitting reference token
/// of a matching size, summed over cliques under each labelling. Returns `Some(false)` when
/// the given labelling fits better by a margin, `Some(true)` when the reverse does, `None`
/// when neither does.
#[allow(clippy::too_many_arguments)]
fn free_fit(
    model: &ClkModel,
    cliques: &[Clique],
    tokens: &[RefToken],
    fam: &RefFamily,
    a: usize,
    x: usize,
    y: usize,
    scale: f64,
) -> Option<bool> {
    let (Some(rx), Some(ry)) = (&tokens[x].records, &tokens[y].records) else {
        return None;
    };
    let ra = &cliques[a].records;
    // Reference: per token, the share of its records with x and with y.
    let refs: Vec<(usize, f64, f64, f64)> = tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| t.key.0 != fam.feature)
        .filter_map(|(i, t)| {
            let r = t.records.as_ref()?;
            let c = f64::from(t.count.max(1));
            Some((
                i,
                c,
                f64::from(pop_and(r, rx)) / c,
                f64::from(pop_and(r, ry)) / c,
            ))
        })
        .collect();
    let per: Vec<(f64, f64)> = cliques
        .par_iter()
        .filter(|cl| !std::ptr::eq(*cl, &cliques[a]))
        .filter_map(|cl| {
            let s = f64::from(cl.support.max(1));
            let p = f64::from(pop_and(&cl.records, ra)) / s;
            let size = cl.cols.len();
            let mut best = (f64::INFINITY, f64::INFINITY);
            for &(i, c, qx, qy) in &refs {
                let k = model.features[tokens[i].key.0].k as usize;
                if size > k + 2 || size * 2 < k {
                    continue;
                }
                let f = chi(s, c, scale, 0.0);
                if f > ACCEPT {
                    continue;
                }
                let d = |q: f64| {
                    let mid = ((p + q) / 2.0).clamp(0.5 / (s + c), 1.0 - 0.5 / (s + c));
                    (p - q) * (p - q) / (mid * (1.0 - mid) * (1.0 / s + 1.0 / c) + 1e-4)
                };
                best.0 = best.0.min(f + d(qx));
                best.1 = best.1.min(f + d(qy));
            }
            (best.0.is_finite() && best.1.is_finite()).then_some(best)
        })
        .collect();
    if per.is_empty() {
        return None;
    }
    let (dx, dy) = per.iter().fold((0.0, 0.0), |(a, b), &(x, y)| {
        (a + x.min(ACCEPT * 4.0), b + y.min(ACCEPT * 4.0))
    });
    let margin = 9.0 + 3.0 * (8.0 * per.len() as f64).sqrt();
    if dy - dx > margin {
        Some(false)
    } else if dx - dy > margin {
        Some(true)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignment_is_the_exact_minimum_not_the_greedy_one() {
        // Row by row, row 0 would take column 0 (1.0) and leave row 1 only 9.0 (total 12.5);
        // the minimum gives row 0 column 1 and row 1 column 0 (2.0 + 1.5 + 2.5).
        let cost = vec![
            vec![1.0, 2.0, 9.0, 9.0],
            vec![1.5, 9.0, 9.0, 9.0],
            vec![9.0, 9.0, 3.0, 2.5],
        ];
        let (total, lab) = assign(&cost, 4).unwrap();
        assert_eq!(lab, vec![1, 0, 3]);
        assert!((total - 6.0).abs() < 1e-12);
        // More rows than columns, or more columns than the limit: no assignment.
        assert!(assign(&cost, 2).is_none());
        assert!(assign(&[vec![0.0; 13]], 13).is_none());
    }

    #[test]
    fn chi_is_zero_at_the_scaled_count_and_grows_with_the_gap() {
        assert!(chi(200.0, 100.0, 2.0, 0.0).abs() < 1e-12);
        assert!(chi(260.0, 100.0, 2.0, 0.0) > chi(230.0, 100.0, 2.0, 0.0));
    }
}
