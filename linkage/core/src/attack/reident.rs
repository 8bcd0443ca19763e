//! Stage D: re-identification by set consistency, and the self-scoring.

use std::collections::{BTreeMap, HashMap};

use super::mining::{Mined, tokens};
use super::{AttackReport, AttributeScore, ClkModel, ClkScore, Model, Plain};

fn has(bits: &[u64], r: usize) -> bool {
    bits[r / 64] >> (r % 64) & 1 == 1
}

/// Decodes every record's aligned tokens and guesses each CLK feature's value where exactly
/// one distinct reference value has the same pattern of present and absent aligned tokens.
pub(super) fn decode(
    model: &ClkModel,
    mined: &Mined,
    reference: &[Plain],
    truth: Option<&[Plain]>,
    guesses: &mut [Vec<Option<u32>>],
) -> ClkScore {
    let n = guesses.first().map_or(0, Vec::len);
    let mut buf = Vec::new();
    let mut score = ClkScore {
        columns: mined.columns,
        complementary_pairs: mined.complementary_pairs,
        mined_columns: mined.mined_columns,
        cliques: mined.cliques.len(),
        families: mined.families,
        aligned: mined.aligned.len(),
        ..ClkScore::default()
    };
    for (fi, f) in model.features.iter().enumerate() {
        // The aligned tokens of this feature: text → (bit in the signature, clique).
        let ident: HashMap<&str, (usize, usize)> = mined
            .aligned
            .iter()
            .filter(|(_, t)| mined.tokens[*t].key.0 == fi)
            .enumerate()
            .map(|(bit, &(j, t))| (mined.tokens[t].key.1.as_str(), (bit, j)))
            .collect();
        let sw = ident.len().div_ceil(64).max(1);
        // Signature → (reference record of the value, several distinct values).
        let mut by_sig: HashMap<Vec<u64>, (u32, bool)> = HashMap::new();
        for (i, p) in reference.iter().enumerate() {
            tokens(f, p, &mut buf);
            if buf.is_empty() {
                continue;
            }
            let mut sig = vec![0u64; sw];
            for t in &buf {
                if let Some(&(bit, _)) = ident.get(t.as_str()) {
                    sig[bit / 64] |= 1 << (bit % 64);
                }
            }
            let e = by_sig.entry(sig).or_insert((i as u32, false));
            if reference[e.0 as usize].values[f.slot] != p.values[f.slot] {
                e.1 = true;
            }
        }
        let cliques: Vec<(usize, usize)> = ident.values().copied().collect();
        for (r, g) in guesses[f.slot].iter_mut().enumerate().take(n) {
            let mut sig = vec![0u64; sw];
            for &(bit, j) in &cliques {
                if has(&mined.cliques[j].records, r) {
                    sig[bit / 64] |= 1 << (bit % 64);
                }
            }
            if let Some(&(i, false)) = by_sig.get(&sig) {
                g.get_or_insert(i);
            }
        }
        if let Some(truth) = truth {
            let mut total = 0usize;
            let mut found = 0usize;
            // Per position (positional features) or the feature (one token per value):
            // (records with a token there, recovered).
            let mut per_pos: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
            for (r, p) in truth.iter().enumerate() {
                tokens(f, p, &mut buf);
                total += buf.len();
                let one = buf.len() == 1 && !f.positional && f.q <= 1;
                for t in &buf {
                    let ok = ident
                        .get(t.as_str())
                        .is_some_and(|&(_, j)| has(&mined.cliques[j].records, r));
                    found += usize::from(ok);
                    let pos = if f.positional && f.salt.is_none() {
                        t.split_once(':').and_then(|(i, _)| i.parse::<usize>().ok())
                    } else if one {
                        Some(0)
                    } else {
                        None
                    };
                    if let Some(i) = pos {
                        let e = per_pos.entry(i).or_default();
                        e.0 += 1;
                        e.1 += usize::from(ok);
                    }
                }
            }
            for (i, (all, ok)) in per_pos {
                let key = if i == 0 {
                    f.name.clone()
                } else {
                    format!("{}[{i}]", f.name)
                };
                score
                    .position_recovery
                    .insert(key, ok as f64 / all.max(1) as f64);
            }
            if total > 0 {
                score
                    .token_recovery
                    .insert(f.name.clone(), found as f64 / total as f64);
            }
        }
    }
    if let Some(truth) = truth {
        let mut correct = 0;
        for &(j, t) in &mined.aligned {
            let (fi, text) = &mined.tokens[t].key;
            let cl = &mined.cliques[j];
            let with = (0..n)
                .filter(|&r| has(&cl.records, r))
                .filter(|&r| {
                    tokens(&model.features[*fi], &truth[r], &mut buf);
                    buf.iter().any(|x| x == text)
                })
                .count();
            if with * 10 >= cl.support as usize * 9 {
                correct += 1;
            }
        }
        score.aligned_correct = Some(correct);
        // Cliques whose records mostly (≥ 90 %) share one true token of a feature.
        let mut pure = 0;
        let mut counts: HashMap<(usize, &str), usize> = HashMap::new();
        let mut per_record: Vec<Vec<Vec<String>>> = Vec::with_capacity(n);
        for p in truth {
            per_record.push(
                model
                    .features
                    .iter()
                    .map(|f| {
                        let mut b = Vec::new();
                        tokens(f, p, &mut b);
                        b
                    })
                    .collect(),
            );
        }
        // Tokens of (nearly) every record (the date separators) say nothing of a clique.
        let mut overall: HashMap<(usize, &str), usize> = HashMap::new();
        for rec in &per_record {
            for (fi, ts) in rec.iter().enumerate() {
                for t in ts {
                    *overall.entry((fi, t.as_str())).or_default() += 1;
                }
            }
        }
        for cl in &mined.cliques {
            counts.clear();
            for r in (0..n).filter(|&r| has(&cl.records, r)) {
                for (fi, ts) in per_record[r].iter().enumerate() {
                    for t in ts {
                        if overall[&(fi, t.as_str())] * 10 < n * 9 {
                            *counts.entry((fi, t.as_str())).or_default() += 1;
                        }
                    }
                }
            }
            if counts.values().any(|&c| c * 10 >= cl.support as usize * 9) {
                pure += 1;
            }
        }
        score.pure_cliques = Some(pure);
    }
    score
}

/// Fills the report's per-attribute scores and re-identification count from the guesses.
pub(super) fn score(
    model: &Model,
    reference: &[Plain],
    truth: Option<&[Plain]>,
    guesses: &[Vec<Option<u32>>],
    report: &mut AttackReport,
) {
    let n = report.records;
    let mut ok = vec![vec![false; n]; model.attributes.len()];
    for (ai, a) in model.attributes.iter().enumerate() {
        let mut s = AttributeScore::default();
        let mut correct = 0;
        for (r, okr) in ok[ai].iter_mut().enumerate() {
            let Some(idx) = a.sources.iter().find_map(|&src| guesses[src][r]) else {
                continue;
            };
            s.guessed += 1;
            let guess = &reference[idx as usize].values[a.slot];
            if let Some(t) = truth
                && guess.is_some()
                && *guess == t[r].values[a.slot]
            {
                correct += 1;
                *okr = true;
            }
        }
        if truth.is_some() {
            s.correct = Some(correct);
            s.correct_share = Some(if n == 0 {
                0.0
            } else {
                correct as f64 / n as f64
            });
        }
        report.per_attribute.insert(a.name.clone(), s);
    }
    if truth.is_some() {
        let re = (0..n)
            .filter(|&r| !model.identity.is_empty() && model.identity.iter().all(|&i| ok[i][r]))
            .count();
        report.reidentified = Some(re);
        report.reidentified_share = Some(if n == 0 { 0.0 } else { re as f64 / n as f64 });
    }
}
