//! Stage A: frequency alignment of one recipe's tokens with the reference preimages (the
//! match-key frequency attack, Vidanage, Ranbaduge, Christen and Randall, IJPDS 5(1) 2020).
//! The LU knows each recipe's fields from the schema, so the attack's first step there
//! (finding which attributes a match-key encodes) is free.

use std::collections::HashMap;

use super::{Plain, RecipeModel, RecipeScore, View};

/// How many standard deviations separate a labelled count from its rank neighbours.
pub(super) const Z: f64 = 3.0;

/// Whether `c` is separated from its neighbours `prev` (larger or equal) and `next` (smaller
/// or equal) beyond noise; `var(x)` is the variance of a count `x`.
fn separated(prev: Option<f64>, c: f64, next: Option<f64>, var: impl Fn(f64) -> f64) -> bool {
    let apart = |a: f64, b: f64| a - b > Z * (var(a) + var(b)).sqrt();
    prev.is_none_or(|p| apart(p, c)) && next.is_none_or(|x| apart(c, x))
}

/// Aligns recipe `r`: labels tokens, records the labels as guesses of the recipe's slots
/// (`guesses[slot][record]` = a reference record with that value, where not yet guessed) and
/// scores against `truth`.
pub(super) fn align_recipe(
    r: usize,
    recipe: &RecipeModel,
    view: &View,
    reference: &[Plain],
    truth: Option<&[Plain]>,
    guesses: &mut [Vec<Option<u32>>],
) -> RecipeScore {
    let n = view.tokens.len();
    let mut lu: HashMap<&[u8; 32], u32> = HashMap::new();
    for rec in &view.tokens {
        for (ri, t) in rec {
            if *ri as usize == r {
                *lu.entry(t).or_default() += 1;
            }
        }
    }
    let mut refc: HashMap<&[u8], (u32, u32)> = HashMap::new();
    for (i, p) in reference.iter().enumerate() {
        if let Some(Some(pre)) = p.preimages.get(r) {
            refc.entry(pre.as_slice()).or_insert((0, i as u32)).0 += 1;
        }
    }
    let mut lu_sorted: Vec<(&[u8; 32], u32)> = lu.iter().map(|(t, c)| (*t, *c)).collect();
    lu_sorted.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut ref_sorted: Vec<(&[u8], u32, u32)> =
        refc.iter().map(|(p, (c, i))| (*p, *c, *i)).collect();
    ref_sorted.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let scale = if reference.is_empty() {
        0.0
    } else {
        n as f64 / reference.len() as f64
    };
    let mut labels: HashMap<&[u8; 32], u32> = HashMap::new();
    for i in 0..lu_sorted.len().min(ref_sorted.len()) {
        let c = f64::from(lu_sorted[i].1);
        let cr = f64::from(ref_sorted[i].1);
        if c < 2.0 || cr < 2.0 {
            break;
        }
        let at = |v: &dyn Fn(usize) -> f64, len: usize| {
            ((i > 0).then(|| v(i - 1)), (i + 1 < len).then(|| v(i + 1)))
        };
        let (lp, ln) = at(&|j| f64::from(lu_sorted[j].1), lu_sorted.len());
        let (rp, rn) = at(&|j| f64::from(ref_sorted[j].1), ref_sorted.len());
        let agree = (c - cr * scale).abs() <= Z * (c + cr * scale * scale).sqrt();
        if agree && separated(lp, c, ln, |x| x) && separated(rp, cr, rn, |x| x) {
            labels.insert(lu_sorted[i].0, ref_sorted[i].2);
        }
    }
    let mut score = RecipeScore {
        block: recipe.block,
        distinct_tokens: lu.len(),
        labelled_tokens: labels.len(),
        ..RecipeScore::default()
    };
    let mut correct = 0;
    for (rec, toks) in view.tokens.iter().enumerate() {
        let Some(&ref_idx) = toks
            .iter()
            .filter(|(ri, _)| *ri as usize == r)
            .find_map(|(_, t)| labels.get(t))
        else {
            continue;
        };
        score.labelled_records += 1;
        for &s in &recipe.slots {
            guesses[s][rec].get_or_insert(ref_idx);
        }
        if let Some(t) = truth
            && t[rec].preimages.get(r).and_then(Option::as_ref)
                == reference[ref_idx as usize].preimages[r].as_ref()
        {
            correct += 1;
        }
    }
    let share = |x: usize| if n == 0 { 0.0 } else { x as f64 / n as f64 };
    score.labelled_share = share(score.labelled_records);
    if truth.is_some() {
        score.correct_records = Some(correct);
        score.correct_share = Some(share(correct));
    }
    score
}
