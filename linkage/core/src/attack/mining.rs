//! Stages B and C: undo `balance`, grow column cliques, align them with reference tokens.
//!
//! Shapes: `n` view records, `m` columns; a column is a bitset of `⌈n/64⌉` words (bit `r` =
//! record `r` has the column set). Co-occurrence of two columns `a`, `b` is scored by the phi
//! coefficient `φ = (n·|a∧b| − |a|·|b|) / √(|a|(n−|a|)|b|(n−|b|))`; `φ·√n` is approximately
//! standard normal for independent columns.

use std::collections::HashMap;

use rayon::prelude::*;

use super::{ClkModel, FeatureModel, Plain};

/// Least difference of chi-square distance between the best and the second-best partner for an
/// alignment (a likelihood ratio of about e^3).
const MARGIN: f64 = 6.0;

/// A token of the reference: `(feature index, token text)`.
pub(super) type TokenKey = (usize, String);

/// The tokens (deduplicated, sorted) that feature `f` makes of plaintext `p`; none when the
/// value (or its salt) is missing. Token text: the salt (if any) and `\u{1}`, then
/// `"{i}:{gram}"` for positional features, else the q-gram of the value padded with `q − 1`
/// spaces each side (SPEC.md §7.1; clkhash pads the same way).
pub(super) fn tokens(f: &FeatureModel, p: &Plain, out: &mut Vec<String>) {
    out.clear();
    let Some(Some(v)) = p.values.get(f.slot) else {
        return;
    };
    let prefix = match f.salt {
        None => String::new(),
        Some((s, chars)) => {
            let Some(Some(sv)) = p.values.get(s) else {
                return;
            };
            let salt: String = if chars == 0 {
                sv.clone()
            } else {
                sv.chars().take(chars).collect()
            };
            format!("{salt}\u{1}")
        }
    };
    let chars: Vec<char> = if f.q <= 1 {
        v.chars().collect()
    } else {
        let pad = std::iter::repeat_n(' ', f.q - 1);
        pad.clone().chain(v.chars()).chain(pad).collect()
    };
    for (i, w) in chars.windows(f.q.max(1)).enumerate() {
        let gram: String = w.iter().collect();
        out.push(if f.positional {
            format!("{prefix}{}:{gram}", i + 1)
        } else {
            format!("{prefix}{gram}")
        });
    }
    out.sort_unstable();
    out.dedup();
}

fn words(n: usize) -> usize {
    n.div_ceil(64)
}

fn pop(a: &[u64]) -> u32 {
    a.iter().map(|w| w.count_ones()).sum()
}

fn pop_and(a: &[u64], b: &[u64]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x & y).count_ones()).sum()
}

/// A grown set of columns and the records that have all of them (or all but one, with BLIP).
#[derive(Clone, Debug)]
pub(super) struct Clique {
    /// Columns (indices into the received filter).
    pub cols: Vec<u32>,
    /// Records having the clique, as a bitset over the view's records.
    pub records: Vec<u64>,
    /// Its count.
    pub support: u32,
}

/// A reference token with its records.
pub(super) struct RefToken {
    /// `(feature, text)`.
    pub key: TokenKey,
    /// Reference records with it.
    pub count: u32,
    /// Bitset over reference records (only for tokens frequent enough to be mined).
    pub records: Option<Vec<u64>>,
}

/// The result of mining.
pub(super) struct Mined {
    /// Columns received.
    pub columns: usize,
    /// Complementary pairs found (stage B).
    pub complementary_pairs: usize,
    /// Columns kept for mining.
    pub mined_columns: usize,
    /// Cliques grown.
    pub cliques: Vec<Clique>,
    /// Reference tokens.
    pub tokens: Vec<RefToken>,
    /// `(clique, token)` alignments (a clique may carry tokens of several families, e.g.
    /// `1:1` and `2:9` of a birth date, which mark the same records).
    pub aligned: Vec<(usize, usize)>,
    /// Reference position families matched by a family of exclusive cliques (stage C2).
    pub families: usize,
}

/// Per feature: whether every reference value with a token gives exactly one (a one-character
/// value of a `q = 1` feature, such as sex).
fn one_token(model: &ClkModel, reference: &[Plain]) -> Vec<bool> {
    let mut buf = Vec::new();
    model
        .features
        .iter()
        .map(|f| {
            let mut any = false;
            for p in reference {
                tokens(f, p, &mut buf);
                if buf.len() > 1 {
                    return false;
                }
                any |= !buf.is_empty();
            }
            any
        })
        .collect()
}

/// Stage B: pairs of columns complementary in at least `1 − tol` of the records; returns
/// the columns to mine (the sparser of each pair, and every unpaired column) and the number
/// of pairs.
fn undo_balance(cols: &[Vec<u64>], n: usize, tol: f64) -> (Vec<usize>, usize) {
    let m = cols.len();
    let need = ((1.0 - tol) * n as f64).ceil() as u32;
    let partner: Vec<Option<usize>> = (0..m)
        .into_par_iter()
        .map(|a| {
            (0..m).filter(|&b| b != a).find(|&b| {
                let x: u32 = cols[a]
                    .iter()
                    .zip(&cols[b])
                    .map(|(p, q)| (p ^ q).count_ones())
                    .sum();
                x >= need
            })
        })
        .collect();
    let mut keep = Vec::new();
    let mut pairs = 0;
    for a in 0..m {
        match partner[a] {
            Some(b) if partner[b] == Some(a) => {
                if a < b {
                    pairs += 1;
                }
                let (pa, pb) = (pop(&cols[a]), pop(&cols[b]));
                if pa < pb || (pa == pb && a < b) {
                    keep.push(a);
                }
            }
            _ => keep.push(a),
        }
    }
    (keep, pairs)
}

/// Records having all of `cols`, or all but one when `one_missing` (bit-sliced).
fn clique_records(cols: &[u32], columns: &[Vec<u64>], nw: usize, one_missing: bool) -> Vec<u64> {
    let mut all = vec![u64::MAX; nw];
    let mut miss1 = vec![0u64; nw];
    for &c in cols {
        let x = &columns[c as usize];
        for w in 0..nw {
            if one_missing {
                miss1[w] = (miss1[w] & x[w]) | (all[w] & !x[w]);
            }
            all[w] &= x[w];
        }
    }
    if one_missing {
        for w in 0..nw {
            all[w] |= miss1[w];
        }
    }
    all
}

/// Stage C for clkhash's double hashing: a token sets bits `a + i·b mod l`, `i = 0 … k−1`,
/// an arithmetic progression; the attacker enumerates, in every received filter, each
/// progression of length `k` whose bits are all set (Kroll and Steinmetzer, "Automated
/// cryptanalysis of Bloom filter encryptions of databases with several personal identifiers",
/// BIOSTEC 2015). With `s` of `l` bits set, a progression of unrelated bits is all set with
/// probability `(s/l)^k` (about 10⁻¹⁰ for `s/l = 0.1`, `k = 10`), so the progressions found
/// are the record's tokens, exactly; the same token gives the same progression in every
/// record. Returns them as cliques (columns = the progression, records = where it is found)
/// with at least `min_support` records. Progressions with a repeated bit (`i·b ≡ 0 mod l`
/// for some `0 < i < k`) are not searched.
fn progression_atoms(
    clks: &[Vec<u64>],
    bits: usize,
    ks: &[usize],
    min_support: u32,
) -> Vec<Clique> {
    let n = clks.len();
    let nw = words(n);
    let set = |clk: &[u64], p: usize| clk[p / 64] >> (p % 64) & 1 == 1;
    let gcd = |mut a: usize, mut b: usize| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    let kmax = ks.iter().copied().max().unwrap_or(0);
    // Steps whose first k multiples are distinct mod l; each progression is found once, from
    // its orientation with step < l/2.
    let steps: Vec<usize> = (1..bits.div_ceil(2))
        .filter(|&d| bits / gcd(d, bits) >= kmax)
        .collect();
    let per_record: Vec<Vec<Vec<u32>>> = clks
        .par_iter()
        .map(|clk| {
            let ones: Vec<usize> = (0..bits).filter(|&p| set(clk, p)).collect();
            let mut found: Vec<Vec<u32>> = Vec::new();
            for &k in ks {
                for &p0 in &ones {
                    for &d in &steps {
                        if (1..k).all(|i| set(clk, (p0 + i * d) % bits)) {
                            let mut cols: Vec<u32> =
                                (0..k).map(|i| ((p0 + i * d) % bits) as u32).collect();
                            cols.sort_unstable();
                            found.push(cols);
                        }
                    }
                }
            }
            found.sort_unstable();
            found.dedup();
            found
        })
        .collect();
    let mut index: HashMap<Vec<u32>, Vec<u32>> = HashMap::new();
    for (r, atoms) in per_record.into_iter().enumerate() {
        for a in atoms {
            index.entry(a).or_default().push(r as u32);
        }
    }
    let mut out: Vec<Clique> = index
        .into_iter()
        .filter(|(_, recs)| recs.len() as u32 >= min_support)
        .map(|(cols, recs)| {
            let mut records = vec![0u64; nw];
            for r in &recs {
                records[*r as usize / 64] |= 1 << (r % 64);
            }
            Clique {
                cols,
                records,
                support: recs.len() as u32,
            }
        })
        .collect();
    out.sort_by(|a, b| b.support.cmp(&a.support).then(a.cols.cmp(&b.cols)));
    out
}

/// Stage C: grows cliques of co-occurring columns and aligns them with reference tokens.
pub(super) fn mine(model: &ClkModel, clks: &[Vec<u64>], reference: &[Plain]) -> Mined {
    let n = clks.len();
    let nw = words(n);
    let m = model.bits;
    if model.double_hash && !model.xor_fold && !model.balance && model.blip_epsilon.is_none() {
        let mut ks: Vec<usize> = model.features.iter().map(|f| f.k as usize).collect();
        ks.sort_unstable();
        ks.dedup();
        let min_support = ((n as f64 * 0.0005) as u32).max(3);
        let cliques = progression_atoms(clks, m, &ks, min_support);
        let tokens = reference_tokens(
            model,
            reference,
            2.0 * f64::from(min_support) * reference.len() as f64 / n.max(1) as f64,
        );
        return label_and_align(model, reference, n, cliques, tokens, m, 0, m);
    }
    let mut last_mask = u64::MAX;
    if !n.is_multiple_of(64) {
        last_mask = (1u64 << (n % 64)) - 1;
    }
    // Transpose into columns.
    let mut cols = vec![vec![0u64; nw]; m];
    for (r, clk) in clks.iter().enumerate() {
        for (w, &word) in clk.iter().enumerate() {
            let mut x = word;
            while x != 0 {
                let b = x.trailing_zeros() as usize;
                cols[w * 64 + b][r / 64] |= 1 << (r % 64);
                x &= x - 1;
            }
        }
    }
    let blip_p = model.blip_epsilon.map_or(0.0, |e| 1.0 / (1.0 + e.exp()));
    let (keep, complementary_pairs) = if model.balance {
        undo_balance(&cols, n, (4.0 * blip_p + 0.002).min(0.2))
    } else {
        ((0..m).collect(), 0)
    };
    let min_support = (n as f64 * 0.002).max(8.0);
    let kept: Vec<usize> = keep
        .into_iter()
        .filter(|&c| {
            let s = f64::from(pop(&cols[c]));
            s >= min_support && s <= n as f64 - min_support
        })
        .collect();
    let sup: Vec<f64> = (0..m).map(|c| f64::from(pop(&cols[c]))).collect();
    let nf = n as f64;
    // Pairwise co-occurrence of kept columns: z = φ·√n.
    let km = kept.len();
    let zmat: Vec<Vec<f32>> = (0..km)
        .into_par_iter()
        .map(|i| {
            let a = kept[i];
            (0..km)
                .map(|j| {
                    if j <= i {
                        return 0.0;
                    }
                    let b = kept[j];
                    let ab = f64::from(pop_and(&cols[a], &cols[b]));
                    let (sa, sb) = (sup[a], sup[b]);
                    let den = (sa * (nf - sa) * sb * (nf - sb)).sqrt();
                    ((nf * ab - sa * sb) / den * nf.sqrt()) as f32
                })
                .collect()
        })
        .collect();
    let mut seeds: Vec<(f32, u32, u32)> = Vec::new();
    for (i, row) in zmat.iter().enumerate() {
        for (j, &z) in row.iter().enumerate().skip(i + 1) {
            if z > 8.0 {
                seeds.push((z, kept[i] as u32, kept[j] as u32));
            }
        }
    }
    drop(zmat);
    seeds.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    let kmax = model
        .features
        .iter()
        .map(|f| f.k as usize)
        .max()
        .unwrap_or(0);
    let kmin = model
        .features
        .iter()
        .map(|f| f.k as usize)
        .min()
        .unwrap_or(0);
    let min_size = (kmin / 2).clamp(2, 4);
    let one_missing = model.blip_epsilon.is_some();
    // Per column: the cliques containing it.
    let mut of_col: Vec<Vec<u32>> = vec![Vec::new(); m];
    // Per grown group: the count of the records having all its columns.
    let mut group_support: Vec<f64> = Vec::new();
    let mut cliques: Vec<Clique> = Vec::new();
    for &(_, a, b) in seeds.iter().take(400_000) {
        if cliques.len() >= 4000 {
            break;
        }
        let mut rec: Vec<u64> = cols[a as usize]
            .iter()
            .zip(&cols[b as usize])
            .map(|(x, y)| x & y)
            .collect();
        let mut rs = f64::from(pop(&rec));
        // A pair inside a grown group with (nearly) the pair's records is that group's
        // token: skip it. A pair whose columns a larger token merely absorbed (the sex
        // columns inside a clique of a female given name) is grown on its own.
        if of_col[a as usize]
            .iter()
            .filter(|q| of_col[b as usize].contains(q))
            .any(|&q| group_support[q as usize] >= 0.9 * rs)
        {
            continue;
        }
        let mut set = vec![a, b];
        while set.len() < kmax && rs > 0.0 {
            let best = kept
                .par_iter()
                .filter(|&&c| !set.contains(&(c as u32)))
                .map(|&c| {
                    let hit = f64::from(pop_and(&rec, &cols[c]));
                    let p = sup[c] / nf;
                    let z = (hit - rs * p) / (rs * p * (1.0 - p)).sqrt().max(1e-9);
                    (z, hit / rs, c)
                })
                .filter(|&(z, ratio, _)| z > 5.0 && ratio >= 0.5)
                .max_by(|x, y| x.0.total_cmp(&y.0).then(y.2.cmp(&x.2)));
            let Some((_, _, c)) = best else { break };
            set.push(c as u32);
            for (r, x) in rec.iter_mut().zip(&cols[c]) {
                *r &= x;
            }
            rs = f64::from(pop(&rec));
        }
        if set.len() < min_size {
            continue;
        }
        set.sort_unstable();
        // Every grown set covers its pairs with its records' count, so that no seed of the
        // same token is grown again (cliques of one token grown twice are merged below by
        // their records).
        let gid = group_support.len() as u32;
        group_support.push(rs);
        for &c in &set {
            of_col[c as usize].push(gid);
        }
        let mut records = clique_records(&set, &cols, nw, one_missing);
        if let Some(l) = records.last_mut() {
            *l &= last_mask;
        }
        let support = pop(&records);
        if f64::from(support) < min_support / 2.0 {
            continue;
        }
        // Leave-one-out: a token's columns pin its records however one of them is left out
        // (the others are all set in the same records); a set grown from a pair that spans
        // two tokens (a sex column and a column that some other token also sets) holds the
        // intersection of a token with one column's mixture of records, and loses far more
        // than that without that column.
        let stable = (0..set.len()).all(|skip| {
            let rest: Vec<u32> = set
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != skip)
                .map(|(_, &c)| c)
                .collect();
            let mut r = clique_records(&rest, &cols, nw, one_missing);
            if let Some(l) = r.last_mut() {
                *l &= last_mask;
            }
            f64::from(pop(&r)) <= 1.2 * f64::from(support) + 2.0
        });
        if !stable {
            continue;
        }
        cliques.push(Clique {
            cols: set,
            records,
            support,
        });
    }
    // Two cliques with (almost) the same records are one token grown from two seeds: keep
    // the larger.
    cliques.sort_by(|a, b| b.cols.len().cmp(&a.cols.len()).then(a.cols.cmp(&b.cols)));
    let mut kept_cliques: Vec<Clique> = Vec::with_capacity(cliques.len());
    for c in cliques {
        let same = kept_cliques.iter().any(|k| {
            let both = pop_and(&k.records, &c.records);
            both * 10 >= 9 * k.support.max(c.support)
        });
        if !same {
            kept_cliques.push(c);
        }
    }
    let cliques = kept_cliques;
    let tokens = reference_tokens(model, reference, min_support * reference.len() as f64 / nf);
    label_and_align(
        model,
        reference,
        n,
        cliques,
        tokens,
        m,
        complementary_pairs,
        km,
    )
}

/// The last steps of both mining paths: position families (stage C2), then the alignment of
/// the remaining cliques with reference tokens; the counts of the earlier stages are passed
/// through into the [`Mined`] result.
#[allow(
    clippy::too_many_arguments,
    reason = "the two call sites hand over their state once"
)]
fn label_and_align(
    model: &ClkModel,
    reference: &[Plain],
    n: usize,
    cliques: Vec<Clique>,
    tokens: Vec<RefToken>,
    columns: usize,
    complementary_pairs: usize,
    mined_columns: usize,
) -> Mined {
    let families = super::families::label(
        model,
        &cliques,
        &tokens,
        &one_token(model, reference),
        n,
        reference.len(),
    );
    let aligned = align(
        model,
        &cliques,
        &tokens,
        n,
        reference.len(),
        families.aligned,
    );
    Mined {
        families: families.found,
        columns,
        complementary_pairs,
        mined_columns,
        cliques,
        tokens,
        aligned,
    }
}

/// Interns every reference token; bitsets for those with at least `min_count / 2`
/// reference records.
fn reference_tokens(model: &ClkModel, reference: &[Plain], min_count: f64) -> Vec<RefToken> {
    let mut index: HashMap<TokenKey, usize> = HashMap::new();
    let mut list: Vec<(TokenKey, Vec<u32>)> = Vec::new();
    let mut buf = Vec::new();
    for (i, p) in reference.iter().enumerate() {
        for (fi, f) in model.features.iter().enumerate() {
            tokens(f, p, &mut buf);
            for t in buf.drain(..) {
                let key = (fi, t);
                let id = match index.get(&key) {
                    Some(&id) => id,
                    None => {
                        index.insert(key.clone(), list.len());
                        list.push((key, Vec::new()));
                        list.len() - 1
                    }
                };
                list[id].1.push(i as u32);
            }
        }
    }
    let rw = words(reference.len());
    let mut out: Vec<RefToken> = list
        .into_iter()
        .map(|(key, recs)| {
            let count = recs.len() as u32;
            let records = (f64::from(count) >= min_count / 2.0).then(|| {
                let mut b = vec![0u64; rw];
                for r in recs {
                    b[r as usize / 64] |= 1 << (r % 64);
                }
                b
            });
            RefToken {
                key,
                count,
                records,
            }
        })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then(a.key.cmp(&b.key)));
    out
}

/// Aligns cliques with tokens: first where frequency alone is unambiguous, then by
/// co-occurrence profiles with the aligned pairs (a chi-square distance over the anchors; a
/// pair is accepted when each is the other's best by a margin of 9, i.e. a likelihood ratio
/// of about e^4.5).
fn align(
    model: &ClkModel,
    cliques: &[Clique],
    tokens: &[RefToken],
    n: usize,
    nref: usize,
    preset: Vec<(usize, usize)>,
) -> Vec<(usize, usize)> {
    if nref == 0 || n == 0 {
        return preset;
    }
    let scale = n as f64 / nref as f64;
    let fold_or_blip = model.xor_fold || model.blip_epsilon.is_some();
    let size_ok = |cl: &Clique, t: &RefToken| {
        let k = model.features[t.key.0].k as usize;
        let s = cl.cols.len();
        s <= k + 2 && s * 2 >= k.min(s.max(k))
    };
    let freq_ok = |cl: &Clique, t: &RefToken| {
        let s = f64::from(cl.support);
        let e = f64::from(t.count) * scale;
        let slack = if fold_or_blip { 0.15 } else { 0.03 } * s;
        (s - e).abs() <= 4.0 * (s + f64::from(t.count) * scale * scale).sqrt() + slack
    };
    let cand: Vec<Vec<usize>> = cliques
        .par_iter()
        .map(|cl| {
            tokens
                .iter()
                .enumerate()
                .filter(|(_, t)| t.records.is_some() && size_ok(cl, t) && freq_ok(cl, t))
                .map(|(i, _)| i)
                .collect()
        })
        .collect();
    let mut clique_done = vec![false; cliques.len()];
    let mut token_done = vec![false; tokens.len()];
    // Labels of stage C2 are anchors from the start.
    for &(j, t) in &preset {
        clique_done[j] = true;
        token_done[t] = true;
    }
    let mut aligned: Vec<(usize, usize)> = preset;
    // Round 0: unique by frequency, both ways.
    let mut token_cands: Vec<Vec<usize>> = vec![Vec::new(); tokens.len()];
    for (j, c) in cand.iter().enumerate() {
        if clique_done[j] {
            continue;
        }
        for &t in c.iter().filter(|&&t| !token_done[t]) {
            token_cands[t].push(j);
        }
    }
    for (j, c) in cand.iter().enumerate() {
        if clique_done[j] {
            continue;
        }
        let c: Vec<usize> = c.iter().copied().filter(|&t| !token_done[t]).collect();
        if let [t] = c[..]
            && token_cands[t] == [j]
        {
            aligned.push((j, t));
            clique_done[j] = true;
            token_done[t] = true;
        }
    }
    // Profiles: p[j][a] = share of clique j's records that have anchor a's clique;
    // q[t][a] = share of token t's reference records that have anchor a's token.
    let mut p: Vec<Vec<f64>> = vec![Vec::new(); cliques.len()];
    let mut q: Vec<Vec<f64>> = vec![Vec::new(); tokens.len()];
    let mut anchors_done = 0;
    for round in 0..60 {
        let new = &aligned[anchors_done..];
        if new.is_empty() && round > 0 {
            break;
        }
        let new: Vec<(usize, usize)> = new.to_vec();
        anchors_done = aligned.len();
        p.par_iter_mut().enumerate().for_each(|(j, row)| {
            if cand[j].is_empty() {
                return;
            }
            for &(aj, _) in &new {
                let both = pop_and(&cliques[j].records, &cliques[aj].records);
                row.push(f64::from(both) / f64::from(cliques[j].support.max(1)));
            }
        });
        q.par_iter_mut().enumerate().for_each(|(t, row)| {
            let Some(bt) = &tokens[t].records else { return };
            for &(_, at) in &new {
                let ba = tokens[at]
                    .records
                    .as_ref()
                    .expect("aligned tokens have records");
                row.push(f64::from(pop_and(bt, ba)) / f64::from(tokens[t].count.max(1)));
            }
        });
        // Distances of every open candidate pair.
        let dist = |j: usize, t: usize| -> f64 {
            let sj = f64::from(cliques[j].support.max(1));
            let ct = f64::from(tokens[t].count.max(1));
            let e = ct * scale;
            let fd = (sj - e) * (sj - e) / (sj + ct * scale * scale);
            fd + p[j]
                .iter()
                .zip(&q[t])
                .map(|(a, b)| {
                    let m = ((a + b) / 2.0).clamp(1.0 / (sj + ct), 1.0 - 1.0 / (sj + ct));
                    let v = m * (1.0 - m) * (1.0 / sj + 1.0 / ct)
                        + if fold_or_blip { 4e-4 } else { 1e-5 };
                    (a - b) * (a - b) / v
                })
                .sum::<f64>()
        };
        let anchors = p.iter().map(Vec::len).max().unwrap_or(0) as f64;
        let thr = anchors + 1.0 + 4.0 * (2.0 * (anchors + 1.0)).sqrt() + 4.0;
        let best_of_clique: Vec<Option<(usize, f64, f64)>> = (0..cliques.len())
            .into_par_iter()
            .map(|j| {
                if clique_done[j] {
                    return None;
                }
                let mut best: Option<(usize, f64)> = None;
                let mut second = f64::INFINITY;
                for &t in &cand[j] {
                    if token_done[t] {
                        continue;
                    }
                    let d = dist(j, t);
                    match best {
                        Some((_, bd)) if d >= bd => second = second.min(d),
                        _ => {
                            if let Some((_, bd)) = best {
                                second = second.min(bd);
                            }
                            best = Some((t, d));
                        }
                    }
                }
                best.map(|(t, d)| (t, d, second))
            })
            .collect();
        // Token side: best clique and margin.
        let mut best_of_token: HashMap<usize, (usize, f64, f64)> = HashMap::new();
        for (j, c) in cand.iter().enumerate() {
            if clique_done[j] {
                continue;
            }
            for &t in c {
                if token_done[t] {
                    continue;
                }
                let d = dist(j, t);
                let e = best_of_token.entry(t).or_insert((j, d, f64::INFINITY));
                if (d, j) < (e.1, e.0) {
                    *e = (j, d, e.1.min(e.2));
                } else if j != e.0 {
                    e.2 = e.2.min(d);
                }
            }
        }
        for (j, b) in best_of_clique.iter().enumerate() {
            let Some((t, d, second)) = *b else { continue };
            if d > thr || second < d + MARGIN || token_done[t] || clique_done[j] {
                continue;
            }
            let Some(&(bj, _, tsecond)) = best_of_token.get(&t) else {
                continue;
            };
            if bj != j || tsecond < d + MARGIN {
                continue;
            }
            aligned.push((j, t));
            clique_done[j] = true;
            token_done[t] = true;
        }
    }
    aligned
}
