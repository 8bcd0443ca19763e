//! `renketsu eval`: precision, recall and F1 of a pairs file against ground truth.

use std::collections::HashSet;
use std::path::Path;

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use renketsu_linkage::eval::{Evaluation, PairKey, by_holder_pair};
use serde_json::{Value, json};

/// Reads a pairs file ([`renketsu_linkage::eval::read_pairs`]).
fn read_pairs(path: &Path) -> Result<(HashSet<PairKey>, bool)> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(renketsu_linkage::eval::read_pairs(
        std::io::BufReader::new(file),
        &path.display().to_string(),
    )?)
}

fn eval_json(e: &Evaluation) -> Value {
    json!({
        "true_positives": e.true_positives,
        "false_positives": e.false_positives,
        "false_negatives": e.false_negatives,
        "precision": e.precision,
        "recall": e.recall,
        "f1": e.f1,
    })
}

/// `renketsu eval`: compares `pairs` with `truth` and, when the run was scored, shows the
/// model's estimates (the `scoring.estimated` object of `summary.json`, beside `pairs` unless
/// `summary` is given) next to the true figures; multi-party runs also per pair of parties.
pub fn run(pairs: &Path, truth: &Path, summary: Option<&Path>, as_json: bool) -> Result<()> {
    let (predicted, m1) = read_pairs(pairs)?;
    let (truth_set, m2) = read_pairs(truth)?;
    if m1 != m2 {
        bail!(
            "{} and {} have different layouts (two-party id_a,id_b vs multi-party party_a,id_a,party_b,id_b)",
            pairs.display(),
            truth.display()
        );
    }
    let e = Evaluation::compare(&predicted, &truth_set);
    let summary_path = match summary {
        Some(p) => Some(p.to_owned()),
        None => pairs
            .parent()
            .map(|d| d.join("summary.json"))
            .filter(|p| p.is_file()),
    };
    let estimated: Option<Value> = match &summary_path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            let v: Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: not JSON", p.display()))?;
            v.get("scoring").and_then(|s| s.get("estimated")).cloned()
        }
        None => None,
    };
    let per_pair = if m1 {
        by_holder_pair(&predicted, &truth_set)
    } else {
        BTreeMap::new()
    };
    let est_pair = |a: &str, b: &str| -> Option<&Value> {
        estimated
            .as_ref()?
            .get("by_holder_pair")?
            .as_array()?
            .iter()
            .find(|p| {
                let (x, y) = (p["party_a"].as_str(), p["party_b"].as_str());
                (x == Some(a) && y == Some(b)) || (x == Some(b) && y == Some(a))
            })
    };
    if as_json {
        let mut out = eval_json(&e);
        if let Some(est) = &estimated {
            out["estimated"] = json!({
                "precision": est["precision"], "recall": est["recall"], "f1": est["f1"],
                "output_pairs": est["output_pairs"], "expected_true_pairs": est["expected_true_pairs"],
                "matches": est["matches"],
                "matches_missed_among_candidates": est["matches_missed_among_candidates"],
                "matches_missed_vetoed": est["matches_missed_vetoed"],
                "matches_outside_candidates": est["matches_outside_candidates"],
                "recall_identifiable": est["recall_identifiable"],
                "recall_upper_bound": est["recall_upper_bound"],
                "recall_note": est["recall_note"],
            });
        }
        if m1 {
            out["by_party_pair"] = per_pair
                .iter()
                .map(|((a, b), pe)| {
                    let mut v = eval_json(pe);
                    v["party_a"] = json!(a);
                    v["party_b"] = json!(b);
                    if let Some(ep) = est_pair(a, b) {
                        v["estimated"] = json!({"precision": ep["precision"], "recall": ep["recall"], "f1": ep["f1"],
                            "recall_identifiable": ep["recall_identifiable"], "recall_upper_bound": ep["recall_upper_bound"]});
                    }
                    v
                })
                .collect();
        }
        println!("{out}");
        return Ok(());
    }
    println!(
        "predicted pairs {}  true pairs {}",
        e.true_positives + e.false_positives,
        e.true_positives + e.false_negatives
    );
    println!(
        "true positives {}  false positives {}  false negatives {}",
        e.true_positives, e.false_positives, e.false_negatives
    );
    println!(
        "precision {:.4}  recall {:.4}  F1 {:.4}",
        e.precision, e.recall, e.f1
    );
    let f = |v: &Value| v.as_f64().map_or("–".to_owned(), |x| format!("{x:.4}"));
    if let Some(est) = &estimated {
        println!();
        println!(
            "{:<24} {:>10} {:>10} {:>10}",
            "", "precision", "recall", "F1"
        );
        println!(
            "{:<24} {:>10} {:>10} {:>10}",
            "estimated (model)",
            f(&est["precision"]),
            f(&est["recall"]),
            f(&est["f1"])
        );
        println!(
            "{:<24} {:>10.4} {:>10.4} {:>10.4}",
            "true (against --truth)", e.precision, e.recall, e.f1
        );
        if let Some(note) = est["recall_note"].as_str() {
            println!(
                "estimated recall ≤ {}: {note}",
                f(&est["recall_upper_bound"])
            );
        }
    }
    if m1 {
        println!();
        println!(
            "{:<24} {:>8} {:>10} {:>10} {:>10} {:>10}",
            "parties", "pairs", "precision", "recall", "est. P", "est. R"
        );
        for ((a, b), pe) in &per_pair {
            let ep = est_pair(a, b);
            println!(
                "{:<24} {:>8} {:>10.4} {:>10.4} {:>10} {:>10}",
                format!("{a} – {b}"),
                pe.true_positives + pe.false_positives,
                pe.precision,
                pe.recall,
                ep.map_or("–".to_owned(), |v| f(&v["precision"])),
                ep.map_or("–".to_owned(), |v| f(&v["recall"]))
            );
        }
    }
    Ok(())
}
