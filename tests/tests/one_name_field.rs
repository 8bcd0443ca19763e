//! Names in one field (SPEC.md §2.2, issue 14 item 6): holder b writes 氏名 and 氏名カナ as
//! whole names (full-width space, ASCII space or none), holder a splits family and given
//! names. The same persons and corruptions are written split in a second run of the
//! generator (`--one-name-field` changes only how names are written), so the one-field link
//! can be held to the split one. Households share family name, postal code and insurance
//! card (another given name, sex and birth date): none of them may be linked.

use renketsu_e2e::{bin, repo};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;

fn ok(keys: &Path, args: &[&str]) -> String {
    let out = Command::new(bin())
        .args(args)
        .env("RENKETSU_KEY_STORE", keys)
        .env_remove("RENKETSU_KEK")
        .env_remove("RENKETSU_PROJECT")
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "renketsu {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Rows of a CSV file as column name → value maps, keyed by id.
fn rows(path: &Path) -> HashMap<String, HashMap<String, String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            let m: HashMap<String, String> = header
                .iter()
                .cloned()
                .zip(rec.iter().map(str::to_owned))
                .collect();
            (m["id"].clone(), m)
        })
        .collect()
}

fn pairs(path: &Path) -> HashSet<(String, String)> {
    let mut r = csv::Reader::from_path(path).unwrap();
    r.records()
        .map(|x| {
            let x = x.unwrap();
            (x[0].to_owned(), x[1].to_owned())
        })
        .collect()
}

/// The digits of a value, full-width digits folded (enough to key a card in a test).
fn digits(s: &str) -> String {
    s.chars()
        .filter_map(|c| match c {
            '0'..='9' => Some(c),
            '０'..='９' => char::from_u32(c as u32 - '０' as u32 + '0' as u32),
            _ => None,
        })
        .collect()
}

/// Household card of a record: insurer number and insured number (a family's shared card).
fn card(r: &HashMap<String, String>) -> Option<String> {
    let (i, n) = (digits(&r["insurer_number"]), digits(&r["insured_number"]));
    (!i.is_empty() && !n.is_empty()).then(|| format!("{i}/{n}"))
}

struct Run {
    precision: f64,
    recall: f64,
    linked: HashSet<(String, String)>,
}

fn link(keys: &Path, schema: &str, a: &Path, b: &Path, truth: &Path, out: &Path) -> Run {
    ok(
        keys,
        &[
            "link",
            "-q",
            "--project",
            "p",
            "--today",
            "2026-11-22",
            "--schema",
            schema,
            "--input",
            &format!("a={}", a.display()),
            "--input",
            &format!("b={}", b.display()),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let e: serde_json::Value = serde_json::from_str(&ok(
        keys,
        &[
            "eval",
            "--json",
            "--pairs",
            out.join("pairs.csv").to_str().unwrap(),
            "--truth",
            truth.to_str().unwrap(),
        ],
    ))
    .unwrap();
    Run {
        precision: e["precision"].as_f64().unwrap(),
        recall: e["recall"].as_f64().unwrap(),
        linked: pairs(&out.join("pairs.csv")),
    }
}

#[test]
fn names_in_one_field_link_and_households_stay_apart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let keys = d.join("keys");
    ok(&keys, &["keys", "init", "--project", "p"]);
    let (one, split) = (d.join("one"), d.join("split"));
    for (out, extra) in [(&one, Some("b")), (&split, None)] {
        let mut args = vec![
            "synth",
            "-q",
            "--out",
            out.to_str().unwrap(),
            "--records",
            "6000",
            "--seed",
            "14",
        ];
        if let Some(l) = extra {
            args.extend(["--one-name-field", l]);
        }
        ok(&keys, &args);
    }
    let truth = one.join("synth_truth.csv");
    assert_eq!(
        std::fs::read(&truth).unwrap(),
        std::fs::read(split.join("synth_truth.csv")).unwrap(),
        "the option changes only how names are written"
    );
    let header = std::fs::read_to_string(one.join("synth_b.csv")).unwrap();
    let header = header.lines().next().unwrap();
    assert!(header.contains("full_name,full_name_kana") && !header.contains("first_name"));

    let a = rows(&one.join("synth_a.csv"));
    let b = rows(&one.join("synth_b.csv"));
    let true_pairs = pairs(&truth);
    // Households across the two holders: other persons with the same card.
    let mut by_card: HashMap<String, Vec<&str>> = HashMap::new();
    for (id, r) in &b {
        if let Some(c) = card(r) {
            by_card.entry(c).or_default().push(id);
        }
    }
    let mut households = HashSet::new();
    for (ia, r) in &a {
        let Some(c) = card(r) else { continue };
        for &ib in by_card.get(&c).into_iter().flatten() {
            let p = (ia.clone(), ib.to_owned());
            if !true_pairs.contains(&p) {
                households.insert(p);
            }
        }
    }
    assert!(
        households.len() >= 50,
        "too few households to test: {}",
        households.len()
    );

    for schema in ["schemas/ndb.toml", "schemas/jp-person.toml"] {
        let tag = schema
            .trim_start_matches("schemas/")
            .trim_end_matches(".toml");
        let w = link(
            &keys,
            schema,
            &one.join("synth_a.csv"),
            &one.join("synth_b.csv"),
            &truth,
            &d.join(format!("out-one-{tag}")),
        );
        let s = link(
            &keys,
            schema,
            &split.join("synth_a.csv"),
            &split.join("synth_b.csv"),
            &truth,
            &d.join(format!("out-split-{tag}")),
        );
        eprintln!(
            "{schema}: one field P {:.4} R {:.4}; split P {:.4} R {:.4}; {} households",
            w.precision,
            w.recall,
            s.precision,
            s.recall,
            households.len()
        );
        let linked_households: Vec<_> = w.linked.intersection(&households).collect();
        assert!(
            linked_households.is_empty(),
            "{schema}: household members linked: {linked_households:?}"
        );
        assert!(w.precision >= 0.99, "{schema}: precision {}", w.precision);
        // The true pairs are linked as well as from split names.
        assert!(
            w.recall >= s.recall - 0.01,
            "{schema}: recall {} one field, {} split",
            w.recall,
            s.recall
        );
    }
}
