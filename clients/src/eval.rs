//! `renketsu eval`: precision, recall and F1 of a pairs file against ground truth.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, Result, bail};
use renketsu_linkage::eval::Evaluation;

/// A record pair, normalized so that two-party and multi-party files compare alike:
/// `(party_a, id_a, party_b, id_b)` with empty party names for two-party files.
type Pair = (String, String, String, String);

/// Reads a pairs file: header `id_a,id_b` or `party_a,id_a,party_b,id_b`.
/// Returns the pairs and whether the file is multi-party.
pub fn read_pairs(path: &Path) -> Result<(HashSet<Pair>, bool)> {
    let mut rdr = csv::ReaderBuilder::new()
        .from_path(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let header: Vec<String> = rdr
        .headers()
        .with_context(|| format!("{}: cannot read the header", path.display()))?
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_owned())
        .collect();
    let multi = match header
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["id_a", "id_b"] => false,
        ["party_a", "id_a", "party_b", "id_b"] => true,
        _ => bail!(
            "{}: expected header id_a,id_b or party_a,id_a,party_b,id_b, found {}",
            path.display(),
            header.join(",")
        ),
    };
    let mut out = HashSet::new();
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.with_context(|| format!("{}: row {}", path.display(), i + 1))?;
        let f = |k: usize| rec.get(k).unwrap_or("").trim().to_owned();
        let pair = if multi {
            let (a, b) = ((f(0), f(1)), (f(2), f(3)));
            let (a, b) = if a <= b { (a, b) } else { (b, a) };
            (a.0, a.1, b.0, b.1)
        } else {
            (String::new(), f(0), String::new(), f(1))
        };
        out.insert(pair);
    }
    Ok((out, multi))
}

/// Compares `pairs` with `truth`.
pub fn evaluate(pairs: &Path, truth: &Path) -> Result<Evaluation> {
    let (predicted, m1) = read_pairs(pairs)?;
    let (truth_set, m2) = read_pairs(truth)?;
    if m1 != m2 {
        bail!(
            "{} and {} have different layouts (two-party id_a,id_b vs multi-party party_a,id_a,party_b,id_b)",
            pairs.display(),
            truth.display()
        );
    }
    Ok(Evaluation::compare(&predicted, &truth_set))
}
