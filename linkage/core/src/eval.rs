//! Linkage quality against ground truth: precision, recall and F1 over record pairs.

use std::collections::HashSet;
use std::hash::Hash;

/// Pairwise confusion counts and the derived measures (Christen 2012, *Data Matching*, §7).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Predicted pairs that are true matches.
    pub true_positives: u64,
    /// Predicted pairs that are not true matches.
    pub false_positives: u64,
    /// True matches that were not predicted.
    pub false_negatives: u64,
    /// TP / (TP + FP); 1.0 when nothing was predicted.
    pub precision: f64,
    /// TP / (TP + FN); 1.0 when there is no true match.
    pub recall: f64,
    /// Harmonic mean of precision and recall; 0.0 when both are 0.
    pub f1: f64,
}

impl Evaluation {
    /// Compares predicted pairs with true pairs. Pairs must be given in one orientation
    /// (e.g. `(id in A, id in B)`); duplicates are counted once.
    pub fn compare<P: Eq + Hash>(predicted: &HashSet<P>, truth: &HashSet<P>) -> Self {
        let tp = predicted.intersection(truth).count() as u64;
        let fp = predicted.len() as u64 - tp;
        let fn_ = truth.len() as u64 - tp;
        let ratio = |num: u64, den: u64| {
            if den == 0 {
                1.0
            } else {
                num as f64 / den as f64
            }
        };
        let precision = ratio(tp, tp + fp);
        let recall = ratio(tp, tp + fn_);
        let f1 = if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        };
        Self {
            true_positives: tp,
            false_positives: fp,
            false_negatives: fn_,
            precision,
            recall,
            f1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_ratios() {
        let pred: HashSet<(u32, u32)> = [(1, 1), (2, 2), (3, 9)].into();
        let truth: HashSet<(u32, u32)> = [(1, 1), (2, 2), (3, 3), (4, 4)].into();
        let e = Evaluation::compare(&pred, &truth);
        assert_eq!(
            (e.true_positives, e.false_positives, e.false_negatives),
            (2, 1, 2)
        );
        assert!((e.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((e.recall - 0.5).abs() < 1e-12);
        assert!((e.f1 - 4.0 / 7.0).abs() < 1e-12);
    }

    #[test]
    fn empty_prediction() {
        let e = Evaluation::compare(&HashSet::<u8>::new(), &[1u8].into());
        assert_eq!((e.precision, e.recall, e.f1), (1.0, 0.0, 0.0));
    }
}

/// A record pair as pairs files name it: `(holder_a, id_a, holder_b, id_b)`, ordered so that
/// `(holder_a, id_a) <= (holder_b, id_b)`, with empty holder names in two-holder files.
pub type PairKey = (String, String, String, String);

/// Why a pairs file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PairsError {
    /// The CSV reader failed.
    #[error("{input}: {what}: {source}")]
    Csv {
        /// The file.
        input: String,
        /// Where.
        what: String,
        /// The cause.
        source: csv::Error,
    },
    /// The header is neither layout.
    #[error("{input}: expected header id_a,id_b or party_a,id_a,party_b,id_b, found {found}")]
    Header {
        /// The file.
        input: String,
        /// The header found.
        found: String,
    },
}

/// Reads a pairs file (`pairs.csv`, a truth file): header `id_a,id_b` (two holders) or
/// `party_a,id_a,party_b,id_b`. Returns the pairs and whether the file names holders.
///
/// # Errors
/// [`PairsError`].
pub fn read_pairs(
    input: impl std::io::Read,
    label: &str,
) -> Result<(HashSet<PairKey>, bool), PairsError> {
    let csv_err = |what: String| {
        let label = label.to_owned();
        move |source| PairsError::Csv {
            input: label,
            what,
            source,
        }
    };
    let mut rdr = csv::ReaderBuilder::new().from_reader(input);
    let header: Vec<String> = rdr
        .headers()
        .map_err(csv_err("cannot read the header".to_owned()))?
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
        _ => {
            return Err(PairsError::Header {
                input: label.to_owned(),
                found: header.join(","),
            });
        }
    };
    let mut out = HashSet::new();
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(csv_err(format!("row {}", i + 1)))?;
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

/// True precision/recall per pair of holders (multi-holder files), keyed
/// `(holder_a, holder_b)` with `holder_a < holder_b`.
pub fn by_holder_pair(
    predicted: &HashSet<PairKey>,
    truth: &HashSet<PairKey>,
) -> std::collections::BTreeMap<(String, String), Evaluation> {
    let mut keys: Vec<(String, String)> = predicted
        .iter()
        .chain(truth)
        .map(|p| (p.0.clone(), p.2.clone()))
        .collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|k| {
            let sel = |s: &HashSet<PairKey>| -> HashSet<PairKey> {
                s.iter()
                    .filter(|p| p.0 == k.0 && p.2 == k.1)
                    .cloned()
                    .collect()
            };
            let e = Evaluation::compare(&sel(predicted), &sel(truth));
            (k, e)
        })
        .collect()
}
