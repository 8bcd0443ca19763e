//! The guarded-link rules of `schemas/ndb.toml` (SPEC.md §5.1) on hand-made records: same-sex
//! twins who are dependants share insurer card, birth date and sex, and must not be merged
//! through that card; a person whose insurer changed between holders still links by name.

use renketsu_e2e::{bin, repo};
use std::path::{Path, PathBuf};
use std::process::Command;

const HEADER: &str = "id,last_name,first_name,last_name_kana,first_name_kana,sex,birth_date,postcode,prefecture,city,insurer_number,insured_symbol,insured_number,branch,care_insured_number";

fn run(
    dir: &Path,
    schema: &Path,
    a: &[&str],
    b: &[&str],
) -> (
    std::collections::BTreeSet<(String, String)>,
    serde_json::Value,
) {
    let write = |name: &str, rows: &[&str]| {
        let p = dir.join(name);
        std::fs::write(&p, format!("{HEADER}\n{}\n", rows.join("\n"))).unwrap();
        p
    };
    let (pa, pb) = (write("a.csv", a), write("b.csv", b));
    let out = dir.join("out");
    let keys = dir.join("keys");
    let call = |args: &[&str]| {
        let o = Command::new(bin())
            .args(args)
            .env("RENKETSU_KEY_STORE", &keys)
            .env_remove("RENKETSU_KEK")
            .current_dir(repo())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    call(&["keys", "init", "--project", "g", "--if-missing"]);
    call(&[
        "link",
        "-q",
        "--today",
        "2026-11-22",
        "--project",
        "g",
        "--schema",
        schema.to_str().unwrap(),
        "--input",
        &format!("a={}", pa.display()),
        "--input",
        &format!("b={}", pb.display()),
        "--out",
        out.to_str().unwrap(),
    ]);
    let pairs = csv::Reader::from_path(out.join("pairs.csv"))
        .unwrap()
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[0].to_owned(), r[1].to_owned())
        })
        .collect();
    let summary =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    (pairs, summary)
}

// Twins 太郎 and 次郎 share card 33120015 / 12 / 345 without 枝番, birth date and sex.
const A: &[&str] = &[
    "a1,山田,太郎,ヤマダ,タロウ,M,2000-01-01,1000001,東京都,千代田区,33120015,12,345,,",
    "a2,山田,次郎,ヤマダ,ジロウ,M,2000-01-01,1000001,東京都,千代田区,33120015,12,345,,",
    "a3,佐藤,花子,サトウ,ハナコ,F,1980-05-05,5300001,大阪府,北区,01130012,88,777,00,",
];
// b1 is 太郎 (spelled in hiragana, era date); b2 is 花子 after an insurer change.
const B: &[&str] = &[
    "b1,山田,太郎,やまだ,たろう,1,H12.01.01,1000001,東京都,千代田区,33120015,12,345,,",
    "b2,佐藤,花子,サトウ,ハナコ,2,19800505,5300001,大阪府,北区,131011,5,1,00,",
];

/// `schemas/ndb.toml` without its `[scoring]` section: the exact-token rules of SPEC.md §5.1
/// (the scored rules, on data large enough for EM, are in tests/tests/scoring.rs).
fn exact_token_schema(dir: &Path) -> PathBuf {
    let schema = std::fs::read_to_string(repo().join("schemas/ndb.toml")).unwrap();
    let cut = schema
        .find("# --- Fellegi–Sunter scoring")
        .expect("the scoring section");
    let p = dir.join("ndb-exact.toml");
    std::fs::write(&p, &schema[..cut]).unwrap();
    p
}

#[test]
fn twins_sharing_a_card_stay_apart_and_insurer_changes_link() {
    let dir = tempfile::tempdir().unwrap();
    let schema = exact_token_schema(dir.path());
    let (pairs, summary) = run(dir.path(), &schema, A, B);
    let want: std::collections::BTreeSet<(String, String)> = [("a1", "b1"), ("a3", "b2")]
        .iter()
        .map(|(x, y)| (x.to_string(), y.to_string()))
        .collect();
    assert_eq!(pairs, want);
    assert!(
        summary["merges"]["vetoed_by_guards"].as_u64().unwrap() >= 1,
        "{}",
        summary["merges"]
    );
}

#[test]
fn without_the_guard_the_card_merges_the_twins() {
    // The same data with the guard recipe removed: the shared card wrongly links 次郎 too.
    // This shows the guard is what keeps the twins apart.
    let dir = tempfile::tempdir().unwrap();
    let schema = std::fs::read_to_string(repo().join("schemas/ndb.toml")).unwrap();
    let cut = schema.find("# --- guard").expect("the guard section");
    let unguarded = dir.path().join("unguarded.toml");
    std::fs::write(&unguarded, &schema[..cut]).unwrap();
    let (pairs, _) = run(dir.path(), &unguarded, A, B);
    assert!(
        pairs.contains(&("a2".to_owned(), "b1".to_owned())),
        "{pairs:?}"
    );
}
