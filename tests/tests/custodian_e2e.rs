//! End-to-end: the key custodian and two data holders as separate processes over loopback
//! mutual TLS, on `../shared/data/jp`.
//!
//! 1. `renketsu pki dev-init`, `custodian init-config` (SQLite, port 0), `custodian serve`;
//! 2. the admin creates the project (one recipe per schema recipe, `name/vN`) and enrols
//!    holder-a and holder-b;
//! 3. both holders run `renketsu tokenize --custodian` at the same time (VOPRF: every batch's
//!    proof is checked against the published key);
//! 4. `renketsu link` on the two token files gives exactly the pairs of the embedded HMAC mode
//!    (`renketsu link` on the CSVs with the same schema): same pair set, same P/R/F1.
//!
//! Also: a holder that verifies against a wrong public key (`--pin-key`) refuses to write
//! anything, and HMAC-mode token files link to a byte-identical `pairs.csv`.

use renketsu_e2e::{cmd, ok, repo};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

const SCHEMA: &str = "schemas/jp-person-exact.toml";
const TODAY: &str = "2026-11-22";

fn jp() -> PathBuf {
    let p = repo().join("../shared/data/jp");
    assert!(
        p.is_dir(),
        "the shared data set is expected at {}",
        p.display()
    );
    p
}

/// The custodian child process; killed (by its own pid) when dropped.
struct Custodian {
    child: Child,
    url: String,
}

impl Drop for Custodian {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_custodian(dir: &Path) -> Custodian {
    ok(dir, &["pki", "dev-init", "--out", "pki"]);
    ok(
        dir,
        &[
            "custodian",
            "init-config",
            "--pki",
            "pki",
            "--out",
            "custodian.toml",
            "--listen",
            "127.0.0.1:0",
        ],
    );
    // The server's log goes to a file, shown when a holder fails (see `custodian_log`).
    let log = std::fs::File::create(dir.join("custodian.stderr")).unwrap();
    let mut child = cmd(dir, &["custodian", "serve", "--config", "custodian.toml"])
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    // The server prints "listening on 127.0.0.1:PORT" once bound.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("custodian exited before listening")
            .unwrap();
        if let Some(addr) = line.split("listening on ").nth(1) {
            break format!("https://{}", addr.trim());
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Custodian { child, url }
}

/// Schema recipes as the custodian names them: `name/vN`, from `renketsu schema`.
fn recipe_names(dir: &Path) -> Vec<String> {
    let schema = repo().join(SCHEMA);
    let out = ok(dir, &["schema", schema.to_str().unwrap()]);
    let text = String::from_utf8(out.stdout).unwrap();
    let names: Vec<String> = text
        .lines()
        .skip_while(|l| !l.starts_with("recipes:"))
        .skip(1)
        .filter_map(|l| {
            let (head, _) = l.trim().split_once(':')?;
            let (name, version) = head.split_once(" v")?;
            Some(format!("{name}/v{version}"))
        })
        .collect();
    assert_eq!(names.len(), 7, "{text}");
    names
}

fn pair_set(path: &Path) -> BTreeSet<(String, String)> {
    let mut r = csv::Reader::from_path(path).unwrap();
    assert_eq!(r.headers().unwrap(), vec!["id_a", "id_b"]);
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            (rec[0].to_owned(), rec[1].to_owned())
        })
        .collect()
}

fn eval_json(dir: &Path, pairs: &Path) -> serde_json::Value {
    let truth = jp().join("jp_truth.csv");
    let out = ok(
        dir,
        &[
            "eval",
            "--json",
            "--pairs",
            pairs.to_str().unwrap(),
            "--truth",
            truth.to_str().unwrap(),
        ],
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The embedded (HMAC) baseline: `renketsu link` on the CSVs.
fn hmac_link(dir: &Path) -> PathBuf {
    ok(dir, &["keys", "init", "--project", "hmac-baseline"]);
    let (a, b) = (jp().join("jp_a.csv"), jp().join("jp_b.csv"));
    let schema = repo().join(SCHEMA);
    ok(
        dir,
        &[
            "link",
            "--project",
            "hmac-baseline",
            "--schema",
            schema.to_str().unwrap(),
            "--input",
            &format!("a={}", a.display()),
            "--input",
            &format!("b={}", b.display()),
            "--out",
            "hmac-out",
            "--today",
            TODAY,
            "--quiet",
        ],
    );
    dir.join("hmac-out")
}

#[test]
fn custodian_tokens_link_like_hmac_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let custodian = start_custodian(dir);
    let url = custodian.url.as_str();
    let admin = [
        "--custodian",
        url,
        "--ca",
        "pki/ca.pem",
        "--cert",
        "pki/admin.pem",
        "--key",
        "pki/admin.key",
    ];
    let recipes = recipe_names(dir);
    let mut create = vec![
        "keys",
        "create-project",
        "--project",
        "e2e",
        "--linkage-unit",
        "linkage-unit",
    ];
    for r in &recipes {
        create.extend(["--recipe", r.as_str()]);
    }
    create.extend(admin);
    ok(dir, &create);
    for party in ["holder-a", "holder-b"] {
        let mut enrol = vec![
            "keys",
            "enrol",
            "--project",
            "e2e",
            "--party",
            party,
            "--declared-records",
            "10000",
        ];
        enrol.extend(admin);
        ok(dir, &enrol);
    }

    // Two holder processes at once.
    let schema = repo().join(SCHEMA);
    let holder = |party: &str, csv: &str, out: &str, extra: &[&str]| {
        let input = jp().join(csv);
        let mut args = vec![
            "tokenize".to_owned(),
            "--custodian".to_owned(),
            url.to_owned(),
            "--ca".to_owned(),
            "pki/ca.pem".to_owned(),
            "--cert".to_owned(),
            format!("pki/{party}.pem"),
            "--key".to_owned(),
            format!("pki/{party}.key"),
            "--project".to_owned(),
            "e2e".to_owned(),
            "--schema".to_owned(),
            schema.display().to_string(),
            "--input".to_owned(),
            input.display().to_string(),
            "--party".to_owned(),
            party.to_owned(),
            "--out".to_owned(),
            out.to_owned(),
            "--today".to_owned(),
            TODAY.to_owned(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        cmd(dir, &refs)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = holder("holder-a", "jp_a.csv", "a.tokens", &[]);
    let b = holder("holder-b", "jp_b.csv", "b.tokens", &[]);
    for (name, child) in [("holder-a", a), ("holder-b", b)] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{name} failed:\n{}\n--- custodian log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(dir.join("custodian.stderr")).unwrap_or_default()
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("VOPRF"), "summary line: {err}");
    }
    // Each token file names the project, the VOPRF mode and epoch 1 with the published key.
    let header: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(dir.join("a.tokens"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["mode"], "oprf-ristretto255");
    assert_eq!(header["oprf_mode"], "voprf");
    assert_eq!(header["project"], "e2e");
    assert_eq!(header["party"], "holder-a");
    let recipes_h = header["recipes"].as_array().unwrap();
    assert_eq!(recipes_h.len(), 7);
    assert!(recipes_h.iter().all(|r| r["epoch"] == 1));

    // The linkage unit: no key store, no custodian.
    ok(
        dir,
        &[
            "link",
            "--schema",
            schema.to_str().unwrap(),
            "--input",
            "a.tokens",
            "--input",
            "b.tokens",
            "--out",
            "oprf-out",
            "--quiet",
        ],
    );
    assert!(
        !dir.join("oprf-out/joined.csv").exists(),
        "token files carry no content"
    );
    let oprf = pair_set(&dir.join("oprf-out/pairs.csv"));
    let hmac_dir = hmac_link(dir);
    let hmac = pair_set(&hmac_dir.join("pairs.csv"));
    assert!(hmac.len() > 4000, "{} HMAC pairs", hmac.len());
    assert_eq!(oprf, hmac, "OPRF and HMAC modes must give the same links");
    let (e_oprf, e_hmac) = (
        eval_json(dir, &dir.join("oprf-out/pairs.csv")),
        eval_json(dir, &hmac_dir.join("pairs.csv")),
    );
    assert_eq!(e_oprf, e_hmac);
    // Same accounting: read = tokenized + rejected per party, as in HMAC mode.
    let summary = |p: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p.join("summary.json")).unwrap()).unwrap()
    };
    let (so, sh) = (summary(&dir.join("oprf-out")), summary(&hmac_dir));
    assert_eq!(so["inputs"], "tokens");
    assert_eq!(so["token_mode"], "oprf-ristretto255/voprf");
    for i in 0..2 {
        for k in ["read", "tokenized", "rejected", "rejects_by_reason"] {
            assert_eq!(so["parties"][i][k], sh["parties"][i][k], "party {i} {k}");
        }
    }

    // A holder that checks proofs against a wrong key (here: another recipe's published key)
    // refuses to write anything.
    let other_key = recipes_h[1]["public_key"].as_str().unwrap();
    let pin = format!("{}=1:{other_key}", recipes[0]);
    let bad = holder("holder-b", "jp_b.csv", "bad.tokens", &["--pin-key", &pin])
        .wait_with_output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("proof") && err.contains("does not verify"),
        "{err}"
    );
    assert!(!dir.join("bad.tokens").exists());
    assert!(!dir.join("bad.tokens.rejects.csv").exists());
    let partial = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|n| n.ends_with(".partial"));
    assert_eq!(partial, None);

    // A certificate of another role (the linkage unit) is refused at once, without retries.
    let input = jp().join("jp_a.csv");
    let lu = cmd(
        dir,
        &[
            "tokenize",
            "--custodian",
            url,
            "--ca",
            "pki/ca.pem",
            "--cert",
            "pki/linkage-unit.pem",
            "--key",
            "pki/linkage-unit.key",
            "--project",
            "e2e",
            "--schema",
            schema.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--party",
            "linkage-unit",
            "--out",
            "lu.tokens",
        ],
    )
    .output()
    .unwrap();
    assert!(!lu.status.success());
    let err = String::from_utf8_lossy(&lu.stderr);
    assert!(
        err.contains("PermissionDenied") && err.contains("after 1 attempt"),
        "{err}"
    );
    assert!(!dir.join("lu.tokens").exists());

    // Mixing token modes is refused with a clear error.
    ok(
        dir,
        &[
            "tokenize",
            "--project",
            "hmac-baseline",
            "--schema",
            schema.to_str().unwrap(),
            "--input",
            jp().join("jp_b.csv").to_str().unwrap(),
            "--party",
            "b",
            "--out",
            "b-hmac.tokens",
            "--today",
            TODAY,
            "--quiet",
        ],
    );
    let mixed = cmd(
        dir,
        &[
            "link",
            "--schema",
            schema.to_str().unwrap(),
            "--input",
            "a.tokens",
            "--input",
            "b-hmac.tokens",
            "--out",
            "mixed-out",
        ],
    )
    .output()
    .unwrap();
    assert!(!mixed.status.success());
    let err = String::from_utf8_lossy(&mixed.stderr);
    assert!(
        err.contains("different projects") || err.contains("different modes"),
        "{err}"
    );
    drop(custodian);
}

#[test]
fn hmac_token_files_link_to_the_same_pairs_as_the_csvs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let hmac_dir = hmac_link(dir);
    let schema = repo().join(SCHEMA);
    for (party, csv) in [("a", "jp_a.csv"), ("b", "jp_b.csv")] {
        let input = jp().join(csv);
        ok(
            dir,
            &[
                "tokenize",
                "--project",
                "hmac-baseline",
                "--schema",
                schema.to_str().unwrap(),
                "--input",
                input.to_str().unwrap(),
                "--party",
                party,
                "--out",
                &format!("{party}.tokens"),
                "--today",
                TODAY,
                "--quiet",
            ],
        );
        // The holder's rejects are exactly those `renketsu link` writes.
        assert_eq!(
            std::fs::read(dir.join(format!("{party}.tokens.rejects.csv"))).unwrap(),
            std::fs::read(hmac_dir.join(format!("rejects-{party}.csv"))).unwrap()
        );
    }
    ok(
        dir,
        &[
            "link",
            "--schema",
            schema.to_str().unwrap(),
            "--input",
            "a.tokens",
            "--input",
            "b.tokens",
            "--out",
            "tok-out",
            "--quiet",
        ],
    );
    assert_eq!(
        std::fs::read(dir.join("tok-out/pairs.csv")).unwrap(),
        std::fs::read(hmac_dir.join("pairs.csv")).unwrap(),
        "pairs.csv from HMAC token files must equal the CSV run's byte for byte"
    );
    // A token file made with another schema file is refused.
    let other = dir.join("other.toml");
    std::fs::write(
        &other,
        std::fs::read_to_string(&schema).unwrap() + "\n# edited\n",
    )
    .unwrap();
    let out = cmd(
        dir,
        &[
            "link",
            "--schema",
            other.to_str().unwrap(),
            "--input",
            "a.tokens",
            "--input",
            "b.tokens",
            "--out",
            "x",
        ],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another schema"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
