//! Fellegi–Sunter scoring end to end (SPEC.md §9): the benchmark data sets with the shipped
//! scored schemas, the model's estimated precision and recall against the truth, three
//! holders with an NDB-style hash-only holder, determinism, and hand-made twins and an
//! insurer change.
//!
//! The floors are the figures measured when this was written (README "Linkage quality with
//! Fellegi–Sunter scoring") minus a small margin.

use renketsu_e2e::{bin, repo};
use std::path::{Path, PathBuf};
use std::process::Command;

fn shared() -> PathBuf {
    repo().join("../shared/data")
}

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let e = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        e.ok(&["keys", "init", "--project", "p"]);
        e
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = Command::new(bin())
            .args(args)
            .env("RENKETSU_KEY_STORE", self.dir.path().join("keys"))
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

    /// Links the inputs (`name=path`) with `schema` into `dir` (project `p`, a fixed today).
    fn link(&self, schema: &str, inputs: &[String], dir: &Path) {
        let mut args: Vec<String> = [
            "link",
            "-q",
            "--project",
            "p",
            "--today",
            "2026-11-22",
            "--schema",
            schema,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        for i in inputs {
            args.push("--input".into());
            args.push(i.clone());
        }
        args.push("--out".into());
        args.push(dir.to_str().unwrap().into());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ok(&refs);
    }

    /// Links the inputs (`name=path`) into `out` and evaluates against `truth`: returns the
    /// `eval --json` object (true figures, `estimated`, `by_party_pair`).
    fn link_eval(
        &self,
        schema: &str,
        inputs: &[String],
        truth: &Path,
        out: &str,
    ) -> serde_json::Value {
        let dir = self.dir.path().join(out);
        self.link(schema, inputs, &dir);
        let e = self.ok(&[
            "eval",
            "--json",
            "--pairs",
            dir.join("pairs.csv").to_str().unwrap(),
            "--truth",
            truth.to_str().unwrap(),
        ]);
        serde_json::from_str(&e).unwrap()
    }
}

fn f(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"))
}

fn two(d: &Path, a: &str, b: &str) -> Vec<String> {
    vec![
        format!("a={}", d.join(a).display()),
        format!("b={}", d.join(b).display()),
    ]
}

#[test]
fn jp_scored_beats_the_peers_and_estimates_recall() {
    let env = Env::new();
    let d = shared().join("jp");
    let e = env.link_eval(
        "schemas/jp-person.toml",
        &two(&d, "jp_a.csv", "jp_b.csv"),
        &d.join("jp_truth.csv"),
        "jp",
    );
    eprintln!("jp scored: {e}");
    // Splink on hand-normalized plaintext: 0.9637; exact tokens alone: 0.9493. Measured
    // 0.9803-0.9830 over six project keys (CLK bits depend on the key).
    assert!(f(&e, "f1") >= 0.978 && f(&e, "precision") >= 0.99, "{e}");
    let est = &e["estimated"];
    // Measured |estimated - true| precision 0.0023-0.0030 over six keys.
    assert!(
        (f(est, "precision") - f(&e, "precision")).abs() <= 0.01,
        "{e}"
    );
    // Issue 6: within 0.01 of the truth. The recall estimate counts the vetoed true pairs
    // and the unlinked pairs of unlinked records under one-to-one linkage (SPEC.md §9.4):
    // measured +0.0037..+0.0052 over six keys (before that: +0.018..+0.022).
    assert!((f(est, "recall") - f(&e, "recall")).abs() <= 0.01, "{e}");
    // The vetoed true pairs are reported (since the veto needs two written forms, SPEC.md
    // §9.5, their expected number is 0 under some keys: it is not asserted positive).
    assert!(f(est, "matches_missed_vetoed") >= 0.0, "{e}");
}

#[test]
fn jp_ins_scored_raw_and_hash_only() {
    let env = Env::new();
    let d = shared().join("jp_ins");
    let raw = env.link_eval(
        "schemas/ndb.toml",
        &two(&d, "jp_ins_a.csv", "jp_ins_b.csv"),
        &d.join("jp_ins_truth.csv"),
        "raw",
    );
    eprintln!("jp_ins raw vs raw, scored: {raw}");
    // Splink 0.9809, anonlink 0.9774; measured F1 0.9898-0.9904 over six keys.
    assert!(
        f(&raw, "f1") >= 0.985 && f(&raw, "precision") >= 0.99,
        "{raw}"
    );
    let est = &raw["estimated"];
    assert!(
        (f(est, "precision") - f(&raw, "precision")).abs() <= 0.01,
        "{raw}"
    );
    // Issue 6: within 0.01 of the truth; measured -0.0005..+0.0004 over six keys (before
    // the one-to-one and veto terms of SPEC.md §9.4: +0.014..+0.015).
    assert!(
        (f(est, "recall") - f(&raw, "recall")).abs() <= 0.01,
        "{raw}"
    );
    let ndb = env.link_eval(
        "schemas/ndb.toml",
        &two(&d, "jp_ins_a.csv", "jp_ins_b_ndb.csv"),
        &d.join("jp_ins_truth.csv"),
        "ndb",
    );
    eprintln!("jp_ins raw vs hash-only, scored: {ndb}");
    // The peers' exact-key join: recall 0.663 at precision 0.998.
    assert!(
        f(&ndb, "recall") > 0.663 && f(&ndb, "precision") >= 0.995,
        "{ndb}"
    );
    // Issue 14: matches that share no digest are invisible, so the recall estimate is not a
    // number but an upper bound with its reason (it used to claim 0.95 for a true 0.68).
    let est = &ndb["estimated"];
    assert!(est["recall"].is_null(), "{ndb}");
    assert_eq!(
        est["recall_identifiable"],
        serde_json::json!(false),
        "{ndb}"
    );
    assert!(f(est, "recall_upper_bound") >= f(&ndb, "recall"), "{ndb}");
    assert!(est["recall_note"].is_string(), "{ndb}");
    // The raw pair's recall stays identifiable.
    assert_eq!(
        raw["estimated"]["recall_identifiable"],
        serde_json::json!(true),
        "{raw}"
    );
}

#[test]
fn febrl4_scored_threshold_only() {
    let env = Env::new();
    let d = shared().join("febrl");
    let e = env.link_eval(
        "schemas/febrl-scored.toml",
        &two(&d, "febrl4a.csv", "febrl4b.csv"),
        &d.join("febrl4_truth.csv"),
        "febrl",
    );
    eprintln!("FEBRL4 scored: {e}");
    // Splink on plaintext: 0.9987.
    assert!(f(&e, "f1") >= 0.998, "{e}");
    for k in ["precision", "recall"] {
        assert!((f(&e["estimated"], k) - f(&e, k)).abs() <= 0.01, "{k}: {e}");
    }
}

#[test]
fn three_holders_with_a_hash_only_holder_per_holder_pair() {
    let env = Env::new();
    let data = env.dir.path().join("synth");
    env.ok(&[
        "synth",
        "--out",
        data.to_str().unwrap(),
        "--holders",
        "3",
        "--records",
        "3000",
        "--ndb-view",
        "b",
        "--seed",
        "7",
    ]);
    let inputs = vec![
        format!("a={}", data.join("synth_a.csv").display()),
        format!("b={}", data.join("synth_b_ndb.csv").display()),
        format!("c={}", data.join("synth_c.csv").display()),
    ];
    let e = env.link_eval(
        "schemas/ndb.toml",
        &inputs,
        &data.join("synth_truth.csv"),
        "o1",
    );
    eprintln!("3 holders: {e}");
    let pairs = e["by_party_pair"].as_array().unwrap();
    assert_eq!(pairs.len(), 3, "{e}");
    for p in pairs {
        let (a, b) = (
            p["party_a"].as_str().unwrap(),
            p["party_b"].as_str().unwrap(),
        );
        assert!(f(p, "precision") >= 0.995, "{a}-{b}: {p}");
        // Raw holders meet on every identifier; the hash-only holder only through its
        // legacy digests.
        let floor = if a == "b" || b == "b" { 0.8 } else { 0.99 };
        assert!(f(p, "recall") >= floor, "{a}-{b}: {p}");
        assert!(p["estimated"]["precision"].is_number(), "{p}");
    }
    // Deterministic: a second run gives the same pairs and scores.
    env.link_eval(
        "schemas/ndb.toml",
        &inputs,
        &data.join("synth_truth.csv"),
        "o2",
    );
    for file in ["pairs.csv", "pair_scores.csv"] {
        let read = |o: &str| {
            let mut lines: Vec<String> = std::fs::read_to_string(env.dir.path().join(o).join(file))
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect();
            lines.sort();
            lines
        };
        assert_eq!(read("o1"), read("o2"), "{file}");
    }
    // No cluster holds two records of one holder.
    let clusters = std::fs::read_to_string(env.dir.path().join("o1/clusters.csv")).unwrap();
    let mut seen = std::collections::HashSet::new();
    for line in clusters.lines().skip(1) {
        let v: Vec<&str> = line.split(',').collect();
        assert!(
            seen.insert((v[2].to_owned(), v[0].to_owned())),
            "two records of {} in {}",
            v[0],
            v[2]
        );
    }
}

const HEADER: &str = "id,last_name,first_name,last_name_kana,first_name_kana,sex,birth_date,postcode,prefecture,city,insurer_number,insured_symbol,insured_number,branch,care_insured_number";

/// Hand-made records: same-sex twins sharing card, birth date and postal code (different
/// given names) must stay apart; a person who changed insurer (new card) links by name,
/// birth date and address; plus unrelated people so that EM has non-matches to learn from.
#[test]
fn twins_stay_apart_and_an_insurer_change_links() {
    let env = Env::new();
    let dir = env.dir.path();
    let families = [
        "佐藤", "鈴木", "高橋", "田中", "伊藤", "渡辺", "山本", "中村", "小林", "加藤",
    ];
    let kana = [
        "サトウ",
        "スズキ",
        "タカハシ",
        "タナカ",
        "イトウ",
        "ワタナベ",
        "ヤマモト",
        "ナカムラ",
        "コバヤシ",
        "カトウ",
    ];
    let given = [
        ("大輔", "ダイスケ"),
        ("健太", "ケンタ"),
        ("翔太", "ショウタ"),
        ("拓也", "タクヤ"),
        ("直樹", "ナオキ"),
    ];
    let (mut a, mut b) = (vec![HEADER.to_owned()], vec![HEADER.to_owned()]);
    let mut id = 0;
    // 50 ordinary people in both files (the same person: a true pair each).
    for (i, (f, k)) in families.iter().zip(kana).enumerate() {
        for (j, (g, gk)) in given.iter().enumerate() {
            let dob = format!("19{}-0{}-1{}", 50 + i, 1 + j, i % 10);
            let pc = format!("{:03}-{:04}", 100 + i * 7 + j, 1000 + i * 13 + j);
            let row = format!(
                "{id},{f},{g},{k},{gk},M,{dob},{pc},東京都,新宿区,06139996,,{},00,",
                1000 + id
            );
            a.push(row.clone());
            b.push(row);
            id += 1;
        }
    }
    // Twins: same card, birth date, sex, postal code; different given names. Only twin 1
    // is in file a; only twin 2 in file b.
    a.push(format!(
        "{id},森,一郎,モリ,イチロウ,M,1990-05-05,150-0001,東京都,渋谷区,06139996,,777,,"
    ));
    b.push(format!(
        "{},森,次郎,モリ,ジロウ,M,1990-05-05,150-0001,東京都,渋谷区,06139996,,777,,",
        id + 1
    ));
    id += 2;
    // Insurer change: new insurer and card in b, same person.
    a.push(format!(
        "{id},清水,美香,シミズ,ミカ,F,1985-11-30,460-0008,愛知県,名古屋市,06139996,,888,00,"
    ));
    b.push(format!(
        "{},清水,美香,シミズ,ミカ,F,1985-11-30,460-0008,愛知県,名古屋市,01130012,,99123,00,",
        id + 1
    ));
    std::fs::write(dir.join("a.csv"), a.join("\n") + "\n").unwrap();
    std::fs::write(dir.join("b.csv"), b.join("\n") + "\n").unwrap();
    env.link(
        "schemas/ndb.toml",
        &[
            format!("a={}", dir.join("a.csv").display()),
            format!("b={}", dir.join("b.csv").display()),
        ],
        &dir.join("o"),
    );
    let pairs = std::fs::read_to_string(dir.join("o/pairs.csv")).unwrap();
    let pairs: std::collections::HashSet<&str> = pairs.lines().skip(1).collect();
    for i in 0..50 {
        assert!(
            pairs.contains(format!("{i},{i}").as_str()),
            "person {i} must link"
        );
    }
    assert!(!pairs.contains("50,51"), "twins must stay apart: {pairs:?}");
    assert!(
        pairs.contains("52,53"),
        "the insurer change must link: {pairs:?}"
    );
    assert_eq!(pairs.len(), 51, "{pairs:?}");
}

/// Issue 14: twins written with family and given name swapped on one side (a household
/// member so written shares only the family name, in the other column, and meets the other
/// twin at the full-name Dice levels, where `given_name` is not compared) link without
/// `given_name_reversed` and stay apart with it (SPEC.md §9.1, §9.5); their parents, written
/// in the usual order, link either way.
#[test]
fn swapped_twins_link_only_without_the_reversed_given_name() {
    let env = Env::new();
    let dir = env.dir.path();
    let header = "id,last_name,first_name,last_name_kana,first_name_kana,sex,birth_date,postcode,prefecture,city";
    let families = [
        ("佐藤", "サトウ"),
        ("鈴木", "スズキ"),
        ("高橋", "タカハシ"),
        ("田中", "タナカ"),
        ("伊藤", "イトウ"),
        ("渡辺", "ワタナベ"),
        ("山本", "ヤマモト"),
        ("中村", "ナカムラ"),
        ("小林", "コバヤシ"),
        ("加藤", "カトウ"),
    ];
    let given = [
        ("大輔", "ダイスケ"),
        ("健太", "ケンタ"),
        ("翔太", "ショウタ"),
        ("拓也", "タクヤ"),
        ("直樹", "ナオキ"),
    ];
    let (mut a, mut b) = (vec![header.to_owned()], vec![header.to_owned()]);
    // 50 ordinary people in both files, and the twins' parents: true pairs `i,i`.
    let mut people: Vec<String> = Vec::new();
    for (i, (f, k)) in families.iter().enumerate() {
        for (j, (g, gk)) in given.iter().enumerate() {
            let dob = format!("19{}-0{}-1{}", 50 + i, 1 + j, i % 10);
            let pc = format!("{:03}-{:04}", 100 + i * 7 + j, 1000 + i * 13 + j);
            people.push(format!("{f},{g},{k},{gk},M,{dob},{pc},東京都,新宿区"));
        }
    }
    people.push("勅使河原,正,テシガワラ,タダシ,M,1960-02-03,150-0001,東京都,渋谷区".to_owned());
    people.push("勅使河原,京子,テシガワラ,キョウコ,F,1962-08-09,150-0001,東京都,渋谷区".to_owned());
    for (id, p) in people.iter().enumerate() {
        a.push(format!("{id},{p}"));
        b.push(format!("{id},{p}"));
    }
    // Same-sex twins, same birth date and postal code: 仁 in file a, 忍 in file b with
    // family and given name swapped.
    let id = people.len();
    a.push(format!(
        "{id},勅使河原,仁,テシガワラ,ジン,M,1990-05-05,150-0001,東京都,渋谷区"
    ));
    b.push(format!(
        "{},忍,勅使河原,シノブ,テシガワラ,M,1990-05-05,150-0001,東京都,渋谷区",
        id + 1
    ));
    std::fs::write(dir.join("a.csv"), a.join("\n") + "\n").unwrap();
    std::fs::write(dir.join("b.csv"), b.join("\n") + "\n").unwrap();
    // The schema without the reversed comparison: jp-person.toml before it.
    let schema = std::fs::read_to_string(repo().join("schemas/jp-person.toml")).unwrap();
    let start = schema
        .find("# Family and given name swapped on one side")
        .expect("the reversed comparison's comment");
    let end = start
        + schema[start..]
            .find("[[scoring.comparisons]]\nname = \"birth_date\"")
            .expect("the comparison after it");
    let mut without = schema.clone();
    without.replace_range(start..end, "");
    assert!(!without.contains("reversed_of"));
    std::fs::write(dir.join("without.toml"), without).unwrap();
    let inputs = [
        format!("a={}", dir.join("a.csv").display()),
        format!("b={}", dir.join("b.csv").display()),
    ];
    let pairs = |schema: &str, out: &str| {
        env.link(schema, &inputs, &dir.join(out));
        let text = std::fs::read_to_string(dir.join(out).join("pairs.csv")).unwrap();
        text.lines()
            .skip(1)
            .map(str::to_owned)
            .collect::<std::collections::HashSet<String>>()
    };
    let twins = format!("{id},{}", id + 1);
    let before = pairs(dir.join("without.toml").to_str().unwrap(), "before");
    let after = pairs("schemas/jp-person.toml", "after");
    for i in 0..people.len() {
        let p = format!("{i},{i}");
        assert!(
            before.contains(&p) && after.contains(&p),
            "person {i} must link"
        );
    }
    assert!(
        before.contains(&twins),
        "without the reversed comparison the swapped twins link: {before:?}"
    );
    assert!(
        !after.contains(&twins),
        "the swapped twins stay apart: {after:?}"
    );
    assert_eq!(after.len(), people.len(), "{after:?}");
}

/// Issue 14 item 7: against a hash-only holder, the scored schema links at least the true
/// pairs its own exact tokens link, at no worse precision; the precision estimate is within
/// 0.01 (the digests' chance agreement comes from pairs within each holder, SPEC.md §9.3)
/// and the recall is reported as not identifiable, with its bound.
#[test]
fn hash_only_holder_scored_dominates_its_exact_tokens() {
    let env = Env::new();
    let data = env.dir.path().join("synth");
    env.ok(&[
        "synth",
        "-q",
        "--out",
        data.to_str().unwrap(),
        "--records",
        "20000",
        "--ndb-view",
        "b",
        "--seed",
        "11",
    ]);
    let inputs = two(&data, "synth_a.csv", "synth_b_ndb.csv");
    let truth = data.join("synth_truth.csv");
    let scored = env.link_eval("schemas/ndb.toml", &inputs, &truth, "scored");
    let exact = env.link_eval("schemas/ndb-exact.toml", &inputs, &truth, "exact");
    eprintln!("hash-only: scored {scored}\nexact {exact}");
    let tp = |e: &serde_json::Value| e["true_positives"].as_u64().unwrap();
    assert!(tp(&scored) >= tp(&exact), "scored {scored}\nexact {exact}");
    assert!(
        f(&scored, "precision") >= f(&exact, "precision"),
        "scored {scored}\nexact {exact}"
    );
    let est = &scored["estimated"];
    assert!(
        (f(est, "precision") - f(&scored, "precision")).abs() <= 0.01,
        "{scored}"
    );
    assert!(est["recall"].is_null(), "{scored}");
    assert!(
        f(est, "recall_upper_bound") >= f(&scored, "recall"),
        "{scored}"
    );
}

/// Issue 15: a birth date mistyped on the hash-only side is met through the raw holder's
/// birth-date neighbours (SPEC.md §4.4) and links; a namesake of the same kana name and sex
/// born one digit apart with another card (only the neighbour level of the name digest
/// agrees) does not, nor does one born on a clearly different day.
#[test]
fn a_mistyped_birth_date_links_through_its_neighbours_and_a_namesake_does_not() {
    use sha2::{Digest as _, Sha256};
    let env = Env::new();
    let dir = env.dir.path().join("nbr");
    std::fs::create_dir_all(&dir).unwrap();
    let hex = |s: &str| -> String {
        Sha256::digest(s.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let mut raw = std::fs::read_to_string(repo().join("samples/multi/ehr.csv")).unwrap();
    // Two namesakes in the raw holder: 横溝誠一郎, male, with cards of their own.
    raw.push_str("90001,横溝,誠一郎,ヨコミゾ,セイイチロウ,1,1961-04-18,150-0001,東京都,渋谷区,06409502,,5551234,00,,202610,1,I10,300\n");
    raw.push_str("90002,横溝,誠一郎,ヨコミゾ,セイイチロウ,1,1975-09-30,460-0008,愛知県,名古屋市,06409502,,5559876,00,,202610,1,I10,300\n");
    let mut ndb = std::fs::read_to_string(repo().join("samples/multi/ndb.csv")).unwrap();
    let row = |id: &str, card: &str, branch: &str, kana: &str, date: &str| {
        format!(
            "{id},{},{},{},202610,1,I10,300\n",
            hex(&format!("{card}|{date}|1")),
            hex(&format!("{card}|{branch}|{date}|1")),
            hex(&format!("{kana}|{date}|1")),
        )
    };
    // 90001 as the hash-only holder recorded him: 19 for 18 (one digit).
    ndb.push_str(&row(
        "91001",
        "06409502||5551234",
        "00",
        "ヨコミゾセイイチロウ",
        "19610419",
    ));
    // A namesake born 1961-04-28 (one digit from 90001's date), another card.
    ndb.push_str(&row(
        "91002",
        "01130012||99123",
        "00",
        "ヨコミゾセイイチロウ",
        "19610428",
    ));
    // A namesake born 1977-02-15 (no neighbour of either raw date), another card.
    ndb.push_str(&row(
        "91003",
        "01130012||77777",
        "01",
        "ヨコミゾセイイチロウ",
        "19770215",
    ));
    std::fs::write(dir.join("ehr.csv"), raw).unwrap();
    std::fs::write(dir.join("ndb.csv"), ndb).unwrap();
    env.link(
        "schemas/ndb-neighbours.toml",
        &[
            format!("ehr={}", dir.join("ehr.csv").display()),
            format!("ndb={}", dir.join("ndb.csv").display()),
        ],
        &dir.join("o"),
    );
    let scores = std::fs::read_to_string(dir.join("o/pair_scores.csv")).unwrap();
    let pairs: Vec<&str> = scores.lines().skip(1).collect();
    let linked = |a: &str, b: &str| {
        pairs
            .iter()
            .find(|l| l.starts_with(&format!("ehr,{a},ndb,{b},")))
            .copied()
    };
    // Levels end with ndb_id1 (0 branch, 1 card, 2 neighbour, …) and ndb_id4 (0 exact,
    // 1 neighbour, …): the typo pair agrees at both neighbour levels.
    let typo = linked("90001", "91001").expect("the mistyped birth date must link");
    assert!(typo.ends_with("-2-1"), "{typo}");
    for (a, b) in [
        ("90001", "91002"),
        ("90002", "91002"),
        ("90001", "91003"),
        ("90002", "91003"),
    ] {
        assert!(
            linked(a, b).is_none(),
            "namesake {a} - {b} linked: {:?}",
            linked(a, b)
        );
    }
    // The namesakes' digests meet no other raw record either.
    assert!(
        !pairs
            .iter()
            .any(|l| l.contains(",ndb,91002,") || l.contains(",ndb,91003,")),
        "a namesake linked"
    );
}

/// `schemas/ndb-neighbours.toml` is `schemas/ndb.toml` plus the birth-date neighbour recipes
/// and their levels, and nothing else: the two files cannot drift apart.
#[test]
fn ndb_neighbours_is_ndb_plus_its_neighbour_recipes() {
    let ndb = std::fs::read_to_string(repo().join("schemas/ndb.toml")).unwrap();
    let nb = std::fs::read_to_string(repo().join("schemas/ndb-neighbours.toml")).unwrap();
    let head = nb
        .find("# NDB-family linkage schema")
        .expect("ndb.toml's header");
    let mut rest = nb[head..].to_owned();
    let start = rest
        .find("# Birth-date neighbours of the legacy digests")
        .expect("the neighbour block");
    let end = start
        + rest[start..]
            .find("[[recipes]]\nname = \"block_birth_date\"")
            .expect("the recipe after the neighbour block");
    rest.replace_range(start..end, "");
    let back = rest
        .replacen("name = \"ndb-neighbours\"", "name = \"ndb\"", 1)
        .replacen(
            "legacy digests and their birth-date neighbours\"",
            "legacy digests\"",
            1,
        )
        .replacen(
            "exact = [\"ndb_id1_branch\", \"ndb_id1\", \"ndb_id1_dob\"]",
            "exact = [\"ndb_id1_branch\", \"ndb_id1\"]",
            1,
        )
        .replacen(
            "exact = [\"ndb_id4\", \"ndb_id4_dob\"]",
            "exact = [\"ndb_id4\"]",
            1,
        );
    assert!(
        back == ndb,
        "schemas/ndb-neighbours.toml differs from schemas/ndb.toml beyond the neighbour recipes"
    );
}
