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
