//! Command-line tests of `renketsu synth`: its flags, the files it writes, and that its output
//! is usable by `renketsu eval` and `renketsu link` (ground truth layout, jp columns).
//!
//! The generator's own properties (check digits, determinism, truth = same hidden person, shared
//! family cards, NDB digests) are unit tests of the `renketsu-synth` crate (`synth/src/lib.rs`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn renketsu(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_renketsu"))
        .args(args)
        .current_dir(dir)
        .env("RENKETSU_KEY_STORE", dir.join("keys"))
        .env_remove("RENKETSU_KEK")
        .env_remove("RENKETSU_PROJECT")
        .output()
        .expect("run renketsu")
}

#[track_caller]
fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "renketsu failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::to_owned)
        .collect()
}

const HEADER: &str = "id,last_name,first_name,last_name_kana,first_name_kana,sex,birth_date,\
    postcode,prefecture,city,insurer_number,insured_symbol,insured_number,branch,\
    care_insured_number,service_ym,claim_count,main_diagnosis,total_points";

#[test]
fn help_documents_every_flag() {
    let dir = tempfile::tempdir().unwrap();
    let help = ok(renketsu(dir.path(), &["synth", "--help"]));
    for flag in [
        "--out",
        "--prefix",
        "--holders",
        "--records",
        "--overlap",
        "--seed",
        "--insurer-change-rate",
        "--corruption",
        "--ndb-view",
        "--today",
        "--quiet",
    ] {
        assert!(help.contains(flag), "help lacks {flag}:\n{help}");
    }
}

#[test]
fn writes_holders_truth_and_ndb_view_and_the_truth_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    let o = out.to_str().unwrap();
    let args = [
        "synth",
        "--out",
        o,
        "--records",
        "600,400,300",
        "--holders",
        "3",
        "--overlap",
        "0.5",
        "--ndb-view",
        "b",
        "--prefix",
        "s",
        "--quiet",
    ];
    ok(renketsu(dir.path(), &args));
    for (party, n) in [("a", 600), ("b", 400), ("c", 300)] {
        let rows = lines(&out.join(format!("s_{party}.csv")));
        assert_eq!(rows[0], HEADER);
        assert_eq!(rows.len(), n + 1, "holder {party}");
    }
    let ndb = lines(&out.join("s_b_ndb.csv"));
    assert_eq!(
        ndb[0],
        "id,id1,id1_branch,id4,service_ym,claim_count,main_diagnosis,total_points"
    );
    assert_eq!(ndb.len(), 401);
    let truth = lines(&out.join("s_truth.csv"));
    assert_eq!(truth[0], "party_a,id_a,party_b,id_b");
    // b and c each share 200 and 150 persons with a, and about 50 with each other.
    assert!((400..520).contains(&(truth.len() - 1)), "{}", truth.len());
    let t = out.join("s_truth.csv");
    let t = t.to_str().unwrap();
    let eval = ok(renketsu(
        dir.path(),
        &["eval", "--pairs", t, "--truth", t, "--json"],
    ));
    assert!(eval.contains("\"f1\":1.0"), "{eval}");
    // Same flags, same bytes.
    let again = dir.path().join("p");
    let mut args2 = args;
    args2[2] = again.to_str().unwrap();
    ok(renketsu(dir.path(), &args2));
    for f in [
        "s_a.csv",
        "s_b.csv",
        "s_c.csv",
        "s_truth.csv",
        "s_b_ndb.csv",
    ] {
        assert!(
            std::fs::read(out.join(f)).unwrap() == std::fs::read(again.join(f)).unwrap(),
            "{f} differs"
        );
    }
}

#[test]
fn output_links_with_the_jp_person_schema() {
    let dir = tempfile::tempdir().unwrap();
    let schema = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas/jp-person.toml");
    assert!(
        schema.exists(),
        "{} is shipped with the repository",
        schema.display()
    );
    let d = dir.path();
    ok(renketsu(
        d,
        &["synth", "--out", "s", "--records", "2000", "--quiet"],
    ));
    ok(renketsu(d, &["keys", "init", "--project", "t"]));
    let link = [
        "link",
        "--project",
        "t",
        "--schema",
        schema.to_str().unwrap(),
        "--input",
        "a=s/synth_a.csv",
        "--input",
        "b=s/synth_b.csv",
        "--out",
        "l",
        "--today",
        "2026-11-22",
        "--quiet",
    ];
    ok(renketsu(d, &link));
    let eval = ok(renketsu(
        d,
        &[
            "eval",
            "--pairs",
            "l/pairs.csv",
            "--truth",
            "s/synth_truth.csv",
            "--json",
        ],
    ));
    let v: serde_json::Value = serde_json::from_str(&eval).unwrap();
    let (p, r) = (
        v["precision"].as_f64().unwrap(),
        v["recall"].as_f64().unwrap(),
    );
    assert!(p >= 0.99 && r >= 0.9, "precision {p} recall {r}");
}
