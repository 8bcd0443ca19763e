//! End-to-end: the whole multi-party flow as separate processes over loopback mutual TLS
//! (SPEC.md §10): key custodian, linkage unit, three holders (operator EHR, an NDB-style
//! hash-only holder, a 介護DB-style holder) and a researcher.
//!
//! 1. `renketsu synth` makes three holders' records (holder b also as the hash-only NDB view);
//! 2. each holder tokenizes with the custodian's VOPRF (`schemas/ndb-exact.toml`), uploads its
//!    token file and its content sealed to the researcher;
//! 3. the admin runs the job; each holder fetches its mapping; the researcher fetches and opens
//!    the release;
//! 4. the pairs implied by the mappings equal those of `renketsu link` on the same token files,
//!    and the separation holds: the linkage unit's database and log hold no identifier, no key
//!    and no plaintext content; the researcher's output holds no token and no record id; a
//!    holder outside the project gets no mapping.
//!
//! Scored jobs (Fellegi–Sunter, issue 15) on synthetic holders and on subsamples of the
//! shared data sets (jp, jp_ins raw and against its hash-only view): the linkage unit links
//! exactly the pairs of `renketsu link` on the same token files, within 0.002 F1 of embedded
//! `renketsu link` on the CSVs.
//!
//! Also a fault test: the linkage unit is killed (SIGKILL) during an upload, during a job,
//! during a token/deletion batch upload and the job that applies it (issue 16), and during a
//! scored job (Fellegi–Sunter), restarted, and everything completes without lost or
//! duplicated rows and with the links of `renketsu link`
//! (`RENKETSU_FAULT_REPS` repetitions, default 2; `scripts/lu-fault.sh` runs 20).

use renketsu_e2e::{cmd, ok, repo, shared_data};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

const TODAY: &str = "2026-11-22";

/// A server child process (custodian or linkage unit); killed when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
    fn kill9(&mut self) {
        // Child::kill sends SIGKILL on Unix: no shutdown, no flush.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn start(dir: &Path, args: &[&str], log: &str, env: &[(&str, &str)]) -> Server {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(log))
        .unwrap();
    let mut c = cmd(dir, args);
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.stdout(Stdio::piped()).stderr(log).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("{args:?} exited before listening"))
            .unwrap();
        if let Some(a) = line.split("listening on ").nth(1) {
            break a.trim().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Server { child, addr }
}

fn start_lu(dir: &Path, listen: &str, env: &[(&str, &str)]) -> Server {
    start(
        dir,
        &[
            "lu",
            "serve",
            "--db",
            "sqlite:lu.db",
            "--listen",
            listen,
            "--tls-cert",
            "pki/linkage-unit-server.pem",
            "--tls-key",
            "pki/linkage-unit-server.key",
            "--client-ca",
            "pki/ca.pem",
        ],
        "lu.stderr",
        env,
    )
}

/// The key custodian on a port chosen by the OS (SQLite store), from `dir/pki`.
fn start_custodian(dir: &Path) -> Server {
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
    start(
        dir,
        &["custodian", "serve", "--config", "custodian.toml"],
        "custodian.stderr",
        &[],
    )
}

fn lu_args(url: &str, party: &str, project: &str) -> Vec<String> {
    [
        "--lu",
        url,
        "--ca",
        "pki/ca.pem",
        "--cert",
        &format!("pki/{party}.pem"),
        "--key",
        &format!("pki/{party}.key"),
        "--project",
        project,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn run(dir: &Path, head: &[&str], conn: &[String], tail: &[&str]) -> Output {
    let mut args: Vec<&str> = head.to_vec();
    args.extend(conn.iter().map(String::as_str));
    args.extend(tail);
    ok(dir, &args)
}

/// `(party, id) -> pid` from each holder's mapping file.
fn mapping_pairs(files: &[(&str, PathBuf)]) -> BTreeSet<(String, String, String, String)> {
    let mut by_pid: BTreeMap<String, Vec<(usize, String)>> = BTreeMap::new();
    for (k, (_, path)) in files.iter().enumerate() {
        let mut r = csv::Reader::from_path(path).unwrap();
        assert_eq!(r.headers().unwrap(), vec!["id", "pid"]);
        let mut seen = HashSet::new();
        for rec in r.records() {
            let rec = rec.unwrap();
            assert!(seen.insert(rec[0].to_owned()), "record {} twice", &rec[0]);
            by_pid
                .entry(rec[1].to_owned())
                .or_default()
                .push((k, rec[0].to_owned()));
        }
    }
    let mut out = BTreeSet::new();
    for members in by_pid.values() {
        for (i, (pa, a)) in members.iter().enumerate() {
            for (pb, b) in &members[i + 1..] {
                if pa == pb {
                    continue;
                }
                let ((pa, a), (pb, b)) = if pa < pb {
                    ((pa, a), (pb, b))
                } else {
                    ((pb, b), (pa, a))
                };
                out.insert((
                    files[*pa].0.to_owned(),
                    a.clone(),
                    files[*pb].0.to_owned(),
                    b.clone(),
                ));
            }
        }
    }
    out
}

/// Pairs of `renketsu link` (party_a,id_a,party_b,id_b or id_a,id_b for `names`).
fn link_pairs(path: &Path, names: &[&str]) -> BTreeSet<(String, String, String, String)> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let two = r.headers().unwrap().len() == 2;
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            if two {
                (
                    names[0].to_owned(),
                    rec[0].to_owned(),
                    names[1].to_owned(),
                    rec[1].to_owned(),
                )
            } else {
                (
                    rec[0].to_owned(),
                    rec[1].to_owned(),
                    rec[2].to_owned(),
                    rec[3].to_owned(),
                )
            }
        })
        .collect()
}

/// Every non-ASCII value and every date-like value (`-` never occurs in base64 or hex) of the
/// given columns of a CSV.
fn telltale_values(path: &Path, columns: &[&str]) -> BTreeSet<String> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header = r.headers().unwrap().clone();
    let idx: Vec<usize> = columns
        .iter()
        .filter_map(|c| header.iter().position(|h| h == *c))
        .collect();
    let mut out = BTreeSet::new();
    for rec in r.records() {
        let rec = rec.unwrap();
        for &i in &idx {
            let v = rec[i].trim();
            // (A birth date of "today" equals the token header's `today`, which is no leak.)
            if v.chars().count() >= 2
                && (!v.is_ascii() || (v.contains('-') && v.len() >= 8))
                && v != TODAY
            {
                out.insert(v.to_owned());
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The places in `hay` where a telltale value could hide: maximal runs of non-ASCII bytes,
/// ASCII letters, digits and `-` that are valid UTF-8 and hold a Japanese character (U+3000
/// and up) or a `-` (which base64 and hex never contain). Searching these few runs instead of
/// all bytes keeps the check linear; database pages full of binary hashes give many short
/// non-ASCII runs, but almost none that decode as Japanese text.
fn suspicious_runs(hay: &[u8]) -> Vec<String> {
    hay.split(|&b| !(b >= 0x80 || b.is_ascii_alphanumeric() || b == b'-'))
        .filter_map(|run| std::str::from_utf8(run).ok())
        .filter(|run| run.chars().any(|c| c == '-' || c >= '\u{3000}'))
        .map(str::to_owned)
        .collect()
}

fn lu_files(dir: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("lu.db") || name == "lu.stderr" {
            bytes.extend(std::fs::read(&p).unwrap());
        }
    }
    bytes
}

#[test]
fn three_holders_and_a_researcher_over_mutual_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let schema = repo().join("schemas/ndb-exact.toml");
    let schema_s = schema.to_str().unwrap();
    ok(
        dir,
        &[
            "synth",
            "--out",
            "data",
            "--holders",
            "3",
            "--records",
            "1200",
            "--ndb-view",
            "b",
            "--seed",
            "7",
            "--quiet",
        ],
    );
    ok(
        dir,
        &[
            "pki", "dev-init", "--out", "pki", "--holder", "ehr", "--holder", "ndb", "--holder",
            "kaigo", "--holder", "outsider",
        ],
    );
    let custodian = start_custodian(dir);
    let lu = start_lu(dir, "127.0.0.1:0", &[]);
    let (cu, lu_url) = (custodian.url(), lu.url());
    let admin_c = [
        "--custodian",
        &cu,
        "--ca",
        "pki/ca.pem",
        "--cert",
        "pki/admin.pem",
        "--key",
        "pki/admin.key",
    ];
    let mut create = vec![
        "keys",
        "create-project",
        "--project",
        "e2e",
        "--linkage-unit",
        "linkage-unit",
        "--schema",
        schema_s,
    ];
    create.extend(admin_c);
    ok(dir, &create);
    let holders = [
        ("ehr", "data/synth_a.csv"),
        ("ndb", "data/synth_b_ndb.csv"),
        ("kaigo", "data/synth_c.csv"),
    ];
    for (party, _) in holders {
        let mut enrol = vec![
            "keys",
            "enrol",
            "--project",
            "e2e",
            "--party",
            party,
            // ndb-exact.toml's prehash recipes make several spelling variants per record.
            "--declared-records",
            "20000",
        ];
        enrol.extend(admin_c);
        ok(dir, &enrol);
    }
    // The three holders tokenize at the same time (custodian VOPRF).
    let children: Vec<(&str, Child)> = holders
        .iter()
        .map(|(party, csv)| {
            let c = cmd(
                dir,
                &[
                    "tokenize",
                    "--custodian",
                    &cu,
                    "--ca",
                    "pki/ca.pem",
                    "--cert",
                    &format!("pki/{party}.pem"),
                    "--key",
                    &format!("pki/{party}.key"),
                    "--project",
                    "e2e",
                    "--schema",
                    schema_s,
                    "--input",
                    csv,
                    "--party",
                    party,
                    "--out",
                    &format!("{party}.tokens"),
                    "--today",
                    TODAY,
                ],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
            (*party, c)
        })
        .collect();
    for (party, c) in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{party}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Researcher key pair; the admin creates the linkage project with its public key.
    ok(
        dir,
        &[
            "lu",
            "keygen",
            "--out",
            "researcher",
            "--key-store",
            "researcher-keys",
        ],
    );
    run(
        dir,
        &["lu", "create-project"],
        &lu_args(&lu_url, "admin", "e2e"),
        &[
            "--schema",
            schema_s,
            "--holder",
            "ehr",
            "--holder",
            "ndb",
            "--holder",
            "kaigo",
            "--researcher",
            "researcher",
            "--researcher-key",
            "researcher.pub",
        ],
    );
    for (party, csv) in holders {
        run(
            dir,
            &["lu", "upload"],
            &lu_args(&lu_url, party, "e2e"),
            &[
                "--tokens",
                &format!("{party}.tokens"),
                "--content-from",
                csv,
                "--schema",
                schema_s,
                "--researcher-key",
                "researcher.pub",
                "--quiet",
            ],
        );
    }
    let out = run(
        dir,
        &["lu", "start-job"],
        &lu_args(&lu_url, "admin", "e2e"),
        &["--wait"],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("done"));
    let mut maps = Vec::new();
    for (party, _) in holders {
        let f = dir.join(format!("{party}-map.csv"));
        run(
            dir,
            &["lu", "mapping"],
            &lu_args(&lu_url, party, "e2e"),
            &["--out", f.to_str().unwrap()],
        );
        maps.push((party, f));
    }
    run(
        dir,
        &["fetch"],
        &lu_args(&lu_url, "researcher", "e2e"),
        &[
            "--researcher-key",
            "researcher.key",
            "--key-store",
            "researcher-keys",
            "--out",
            "release",
        ],
    );

    // Linkage quality equals `renketsu link` on the same token files.
    ok(
        dir,
        &[
            "link",
            "--schema",
            schema_s,
            "--input",
            "ehr.tokens",
            "--input",
            "ndb.tokens",
            "--input",
            "kaigo.tokens",
            "--out",
            "local",
            "--quiet",
        ],
    );
    let local = link_pairs(&dir.join("local/pairs.csv"), &["ehr", "ndb", "kaigo"]);
    let lu_pairs = mapping_pairs(&maps);
    assert!(local.len() > 500, "{} local pairs", local.len());
    assert_eq!(
        lu_pairs, local,
        "the linkage unit's job must link exactly like renketsu link"
    );
    // Every holder pair is linked (operator-NDB through the hash-only recipes).
    for (a, b) in [("ehr", "ndb"), ("ehr", "kaigo"), ("ndb", "kaigo")] {
        assert!(
            lu_pairs
                .iter()
                .any(|p| (p.0.as_str(), p.2.as_str()) == (a, b)),
            "no {a}-{b} pair"
        );
    }

    // The researcher's joined dataset: pseudonym and content columns of the three holders.
    let joined = std::fs::read_to_string(dir.join("release/joined.csv")).unwrap();
    let header = joined.lines().next().unwrap();
    assert!(header.starts_with("pid,ehr."), "{header}");
    assert!(
        header.contains("ehr.prefecture")
            && header.contains("ndb.main_diagnosis")
            && header.contains("kaigo.prefecture"),
        "{header}"
    );
    assert!(
        !header.split(',').any(|c| c.ends_with(".id") || c == "id"),
        "{header}"
    );
    let mut pids: BTreeSet<String> = BTreeSet::new();
    for (_, f) in &maps {
        let mut r = csv::Reader::from_path(f).unwrap();
        pids.extend(r.records().map(|x| x.unwrap()[1].to_owned()));
    }
    let released: BTreeSet<String> = joined
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_owned())
        .collect();
    assert_eq!(
        released, pids,
        "every cluster is released once under its pseudonym"
    );
    // No token in the researcher's output.
    for (party, _) in holders {
        let text = std::fs::read_to_string(dir.join(format!("{party}.tokens"))).unwrap();
        for line in text.lines().skip(1).take(200) {
            for tok in line
                .split('"')
                .filter(|s| s.len() == 44 && s.ends_with('='))
            {
                assert!(!joined.contains(tok), "a token of {party} in joined.csv");
            }
        }
    }
    // Content was opened: prefectures from the holders' CSVs appear.
    assert!(joined.contains("都") || joined.contains("県") || joined.contains("府"));

    // A second job over the same uploads (issue 16): every pseudonym persists, and release 2
    // fetched as a delta against release 1 and applied by `renketsu fetch` is the whole
    // release 3 of the same job, byte for byte.
    let out = run(
        dir,
        &["lu", "start-job"],
        &lu_args(&lu_url, "admin", "e2e"),
        &["--wait"],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("done"));
    for (party, f) in &maps {
        let again = dir.join(format!("{party}-map-2.csv"));
        run(
            dir,
            &["lu", "mapping"],
            &lu_args(&lu_url, party, "e2e"),
            &["--out", again.to_str().unwrap()],
        );
        assert_eq!(
            std::fs::read(f).unwrap(),
            std::fs::read(&again).unwrap(),
            "{party}: pseudonyms persist across jobs"
        );
    }
    let researcher_args = [
        "--researcher-key",
        "researcher.key",
        "--key-store",
        "researcher-keys",
    ];
    run(
        dir,
        &["fetch"],
        &lu_args(&lu_url, "researcher", "e2e"),
        &[
            &researcher_args[..],
            &[
                "--since-release",
                "1",
                "--previous",
                "release",
                "--out",
                "release-2",
            ],
        ]
        .concat(),
    );
    run(
        dir,
        &["fetch"],
        &lu_args(&lu_url, "researcher", "e2e"),
        &[&researcher_args[..], &["--long", "--out", "release-3"]].concat(),
    );
    // The long form: one row per released record (every record here has content).
    let mut records = 0;
    for (_, f) in &maps {
        records += csv::Reader::from_path(f).unwrap().records().count();
    }
    let mut long = csv::Reader::from_path(dir.join("release-3/long.csv")).unwrap();
    let long_header = long.headers().unwrap().clone();
    assert_eq!(&long_header[0], "pid");
    assert_eq!(&long_header[1], "holder");
    let long_rows: Vec<csv::StringRecord> = long.records().map(|r| r.unwrap()).collect();
    assert_eq!(long_rows.len(), records);
    assert!(long_rows.iter().all(|r| pids.contains(&r[0])));
    // A delta applied to the long form too.
    run(
        dir,
        &["fetch"],
        &lu_args(&lu_url, "researcher", "e2e"),
        &[
            &researcher_args[..],
            &[
                "--long",
                "--since-release",
                "3",
                "--previous",
                "release-3",
                "--out",
                "release-4",
            ],
        ]
        .concat(),
    );
    assert_eq!(
        std::fs::read(dir.join("release-4/long.csv")).unwrap(),
        std::fs::read(dir.join("release-3/long.csv")).unwrap()
    );
    let delta_joined = std::fs::read_to_string(dir.join("release-2/joined.csv")).unwrap();
    assert_eq!(delta_joined, joined);
    assert_eq!(
        delta_joined,
        std::fs::read_to_string(dir.join("release-3/joined.csv")).unwrap()
    );
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("release-2/release.json")).unwrap())
            .unwrap();
    assert_eq!(meta["release_id"], 2);
    assert_eq!(meta["delta"]["since_release"], 1);
    assert_eq!(meta["delta"]["new_clusters"], 0);
    assert_eq!(meta["delta"]["changed_clusters"], 0);
    assert_eq!(meta["delta"]["unchanged_clusters"], meta["clusters"]);
    let crosswalk = std::fs::read_to_string(dir.join("release-2/crosswalk.csv")).unwrap();
    assert_eq!(crosswalk.trim_end(), "job,kind,old_pid,new_pid");
    // Job 1 issued every pseudonym (one `new` each); job 2 changed none.
    run(
        dir,
        &["lu", "crosswalk"],
        &lu_args(&lu_url, "researcher", "e2e"),
        &["--until-release", "2", "--out", "crosswalk-all.csv"],
    );
    let mut events = csv::Reader::from_path(dir.join("crosswalk-all.csv")).unwrap();
    let born: BTreeSet<String> = events
        .records()
        .map(|r| {
            let r = r.unwrap();
            assert_eq!((&r[0], &r[1], &r[2]), ("1", "new", ""));
            r[3].to_owned()
        })
        .collect();
    assert_eq!(born, pids);

    // A holder outside the project gets no mapping; the researcher none either.
    for who in ["outsider", "researcher"] {
        let mut args = vec!["lu".to_owned(), "mapping".to_owned()];
        args.extend(lu_args(&lu_url, who, "e2e"));
        args.extend(["--out".to_owned(), "stolen.csv".to_owned()]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = cmd(dir, &refs).output().unwrap();
        assert!(!out.status.success(), "{who} fetched a mapping");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("PermissionDenied"),
            "{who}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!dir.join("stolen.csv").exists());
    }
    // The auditor verifies the linkage unit's audit chain.
    run(
        dir,
        &["lu", "audit"],
        &lu_args(&lu_url, "auditor", "e2e"),
        &[],
    );
    drop(lu);
    drop(custodian);

    // Separation: the linkage unit's database and log hold no identifier, no key and no
    // plaintext content.
    let stored = lu_files(dir);
    assert!(stored.len() > 100_000, "{} bytes", stored.len());
    let runs = suspicious_runs(&stored);
    let mut checked = 0;
    for (_, csv) in holders {
        let values = telltale_values(
            &dir.join(csv),
            &[
                "last_name",
                "first_name",
                "last_name_kana",
                "first_name_kana",
                "birth_date",
                "prefecture",
                "city",
                "insured_symbol",
            ],
        );
        for v in &values {
            assert!(
                !runs.iter().any(|r| r.contains(v.as_str())),
                "{v:?} from {csv} is in the linkage unit's database or log"
            );
            checked += 1;
        }
    }
    assert!(checked > 1000, "{checked} values checked");
    for secret in ["renketsu-kek-v1", "PRIVATE KEY"] {
        assert!(!contains(&stored, secret));
    }
    let key_file = std::fs::read_to_string(dir.join("researcher.key")).unwrap();
    let sealed: serde_json::Value = serde_json::from_str(&key_file).unwrap();
    assert!(!contains(&stored, sealed["sealed"].as_str().unwrap()));
}

#[test]
fn linkage_unit_killed_during_upload_and_job_recovers() {
    let reps: usize = std::env::var("RENKETSU_FAULT_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let schema = repo().join("schemas/jp-person-exact.toml");
    let schema_s = schema.to_str().unwrap();
    ok(
        base,
        &[
            "synth",
            "--out",
            "data",
            "--holders",
            "2",
            "--records",
            "12000",
            "--seed",
            "11",
            "--quiet",
        ],
    );
    ok(
        base,
        &[
            "pki", "dev-init", "--out", "pki", "--holder", "holder-a", "--holder", "holder-b",
        ],
    );
    ok(base, &["keys", "init", "--project", "fault"]);
    for (p, csv) in [
        ("holder-a", "data/synth_a.csv"),
        ("holder-b", "data/synth_b.csv"),
    ] {
        ok(
            base,
            &[
                "tokenize",
                "--project",
                "fault",
                "--schema",
                schema_s,
                "--input",
                csv,
                "--party",
                p,
                "--out",
                &format!("{p}.tokens"),
                "--today",
                TODAY,
                "--quiet",
            ],
        );
    }
    ok(base, &["lu", "keygen", "--out", "researcher"]);
    ok(
        base,
        &[
            "link",
            "--schema",
            schema_s,
            "--input",
            "holder-a.tokens",
            "--input",
            "holder-b.tokens",
            "--out",
            "local",
            "--quiet",
        ],
    );
    let local = link_pairs(&base.join("local/pairs.csv"), &["holder-a", "holder-b"]);
    // A scored project too (issue 15): Fellegi–Sunter on version-2 token files, whose job the
    // linkage unit is killed during as well. Its own smaller data, so that a rep stays short.
    let scored = repo().join("schemas/jp-person.toml");
    let scored_s = scored.to_str().unwrap();
    ok(
        base,
        &[
            "synth",
            "--out",
            "sdata",
            "--holders",
            "2",
            "--records",
            "3000",
            "--seed",
            "12",
            "--quiet",
        ],
    );
    ok(base, &["keys", "init", "--project", "fault-scored"]);
    for (p, csv) in [
        ("holder-a", "sdata/synth_a.csv"),
        ("holder-b", "sdata/synth_b.csv"),
    ] {
        ok(
            base,
            &[
                "tokenize",
                "--project",
                "fault-scored",
                "--schema",
                scored_s,
                "--input",
                csv,
                "--party",
                p,
                "--out",
                &format!("{p}.scored-tokens"),
                "--today",
                TODAY,
                "--quiet",
            ],
        );
    }
    ok(
        base,
        &[
            "link",
            "--schema",
            scored_s,
            "--input",
            "holder-a.scored-tokens",
            "--input",
            "holder-b.scored-tokens",
            "--out",
            "local-scored",
            "--quiet",
        ],
    );
    let local_scored = link_pairs(
        &base.join("local-scored/pairs.csv"),
        &["holder-a", "holder-b"],
    );
    assert!(
        local_scored.len() > 1000,
        "{} scored pairs",
        local_scored.len()
    );
    let a_scored_records = std::fs::read_to_string(base.join("holder-a.scored-tokens"))
        .unwrap()
        .lines()
        .count()
        - 2;
    let a_records = std::fs::read_to_string(base.join("holder-a.tokens"))
        .unwrap()
        .lines()
        .count()
        - 2;
    assert!(
        std::fs::metadata(base.join("holder-a.tokens"))
            .unwrap()
            .len()
            > 3 << 20,
        "several 1 MiB chunks"
    );
    let pause = [("RENKETSU_LU_TEST_PAUSE_MS", "150")];
    let mut rng_state = 0x9e37_79b9_u64;
    let mut next = |lo: u64, hi: u64| {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        lo + rng_state % (hi - lo)
    };
    for rep in 0..reps {
        let dir = base.join(format!("rep{rep}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in [
            "pki",
            "keys",
            "holder-a.tokens",
            "holder-b.tokens",
            "holder-a.scored-tokens",
            "holder-b.scored-tokens",
            "researcher.pub",
        ] {
            std::os::unix::fs::symlink(base.join(f), dir.join(f)).unwrap();
        }
        let mut lu = start_lu(&dir, "127.0.0.1:0", &pause);
        let addr = lu.addr.clone();
        let url = lu.url();
        run(
            &dir,
            &["lu", "create-project"],
            &lu_args(&url, "admin", "fault"),
            &[
                "--schema",
                schema_s,
                "--holder",
                "holder-a",
                "--holder",
                "holder-b",
                "--researcher",
                "researcher",
                "--researcher-key",
                "researcher.pub",
            ],
        );
        // Kill during holder-a's upload; the same upload process resumes after the restart.
        let mut args = vec!["lu".to_owned(), "upload".to_owned()];
        args.extend(lu_args(&url, "holder-a", "fault"));
        args.extend([
            "--tokens".to_owned(),
            "holder-a.tokens".to_owned(),
            "--quiet".to_owned(),
        ]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let uploader = cmd(&dir, &refs)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(next(200, 700)));
        lu.kill9();
        std::thread::sleep(Duration::from_millis(next(0, 500)));
        let lu2 = start_lu(&dir, &addr, &pause);
        let out = uploader.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "rep {rep}: upload after restart: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&format!("{a_records} records")),
            "rep {rep}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        run(
            &dir,
            &["lu", "upload"],
            &lu_args(&url, "holder-b", "fault"),
            &["--tokens", "holder-b.tokens", "--quiet"],
        );
        // Kill during the job; the restarted linkage unit runs it again.
        run(
            &dir,
            &["lu", "start-job"],
            &lu_args(&url, "admin", "fault"),
            &[],
        );
        std::thread::sleep(Duration::from_millis(next(100, 600)));
        let mut lu2 = lu2;
        lu2.kill9();
        let lu3 = start_lu(&dir, &addr, &[]);
        let t = Instant::now();
        let out = run(
            &dir,
            &["lu", "job"],
            &lu_args(&url, "admin", "fault"),
            &["--wait"],
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("done"),
            "rep {rep}"
        );
        assert!(t.elapsed() < Duration::from_secs(120));
        let (fa, fb) = (dir.join("a-map.csv"), dir.join("b-map.csv"));
        run(
            &dir,
            &["lu", "mapping"],
            &lu_args(&url, "holder-a", "fault"),
            &["--out", fa.to_str().unwrap()],
        );
        run(
            &dir,
            &["lu", "mapping"],
            &lu_args(&url, "holder-b", "fault"),
            &["--out", fb.to_str().unwrap()],
        );
        let a_rows = std::fs::read_to_string(&fa).unwrap().lines().count() - 1;
        assert_eq!(a_rows, a_records, "rep {rep}: every record mapped once");
        let before = (std::fs::read(&fa).unwrap(), std::fs::read(&fb).unwrap());
        let pairs = mapping_pairs(&[("holder-a", fa), ("holder-b", fb)]);
        assert_eq!(pairs, local, "rep {rep}: same links as renketsu link");
        // A second job, killed too: the restarted job changes no pseudonym (the assignment
        // is committed with the job's results, SPEC.md §10.5.1).
        let mut lu3 = lu3;
        lu3.kill9();
        let mut lu4 = start_lu(&dir, &addr, &pause);
        run(
            &dir,
            &["lu", "start-job"],
            &lu_args(&url, "admin", "fault"),
            &[],
        );
        std::thread::sleep(Duration::from_millis(next(100, 600)));
        lu4.kill9();
        let lu5 = start_lu(&dir, &addr, &[]);
        let out = run(
            &dir,
            &["lu", "job"],
            &lu_args(&url, "admin", "fault"),
            &["--wait"],
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("done"),
            "rep {rep}"
        );
        let (fa2, fb2) = (dir.join("a-map-2.csv"), dir.join("b-map-2.csv"));
        for (party, f) in [("holder-a", &fa2), ("holder-b", &fb2)] {
            run(
                &dir,
                &["lu", "mapping"],
                &lu_args(&url, party, "fault"),
                &["--out", f.to_str().unwrap()],
            );
        }
        assert_eq!(
            (std::fs::read(&fa2).unwrap(), std::fs::read(&fb2).unwrap()),
            before,
            "rep {rep}: pseudonyms persist through a killed job"
        );
        let mut lu5 = lu5;
        lu5.kill9();

        // Incremental uploads (issue 16 item 1, SPEC.md §10.3.2): holder-a sends a deletion
        // batch (500 ids) and a token batch (8,000 repeat records of known persons, new ids);
        // the linkage unit is killed during the upload and during the job that applies them.
        let mut lu_b = start_lu(&dir, &addr, &pause);
        let (copied, deleted) = write_batch(
            &base.join("holder-a.tokens"),
            &dir.join("a-batch.tokens"),
            &dir.join("a-deleted.txt"),
            8000,
            500,
        );
        let mut args = vec!["lu".to_owned(), "upload".to_owned()];
        args.extend(lu_args(&url, "holder-a", "fault"));
        args.extend(
            [
                "--batch",
                "a-batch.tokens",
                "--delete",
                "a-deleted.txt",
                "--quiet",
            ]
            .map(str::to_owned),
        );
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let uploader = cmd(&dir, &refs)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(next(100, 700)));
        lu_b.kill9();
        std::thread::sleep(Duration::from_millis(next(0, 500)));
        let mut lu_c = start_lu(&dir, &addr, &pause);
        let out = uploader.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "rep {rep}: batch upload after restart: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("(500 ids, batch 1,") && stdout.contains("(8000 records, batch 2,"),
            "rep {rep}: {stdout}"
        );
        // Sent again by a holder unsure it arrived: the same places, applied once.
        let again = run(
            &dir,
            &["lu", "upload"],
            &lu_args(&url, "holder-a", "fault"),
            &[
                "--batch",
                "a-batch.tokens",
                "--delete",
                "a-deleted.txt",
                "--quiet",
            ],
        );
        let again = String::from_utf8_lossy(&again.stdout);
        assert!(
            again.contains("batch 1,") && again.contains("batch 2,"),
            "rep {rep}: {again}"
        );
        run(
            &dir,
            &["lu", "start-job"],
            &lu_args(&url, "admin", "fault"),
            &[],
        );
        // Kill while the job runs (it reads the merged state, then links).
        let t = Instant::now();
        loop {
            let out = run(&dir, &["lu", "job"], &lu_args(&url, "admin", "fault"), &[]);
            let line = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                !line.contains("done"),
                "rep {rep}: batch job done before the kill"
            );
            if line.contains("job 3 running: reading") {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(60), "rep {rep}: {line}");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(next(0, 300)));
        lu_c.kill9();
        let lu_d = start_lu(&dir, &addr, &[]);
        let out = run(
            &dir,
            &["lu", "job"],
            &lu_args(&url, "admin", "fault"),
            &["--wait"],
        );
        let line = String::from_utf8_lossy(&out.stdout);
        assert!(line.contains("done"), "rep {rep}");
        // Issue 16 item 2: the job applying the batches is incremental (SPEC.md §10.3.3),
        // killed and resumed as such.
        assert!(line.contains("; incremental ("), "rep {rep}: {line}");
        let fa3 = dir.join("a-map-3.csv");
        run(
            &dir,
            &["lu", "mapping"],
            &lu_args(&url, "holder-a", "fault"),
            &["--out", fa3.to_str().unwrap()],
        );
        let now = read_mapping(&fa3);
        assert_eq!(
            std::fs::read_to_string(&fa3).unwrap().lines().count() - 1,
            a_records - 500 + 8000,
            "rep {rep}: every record of the state mapped once"
        );
        let was = read_mapping(&fa2);
        let was_b = read_mapping(&fb2);
        // Clusters that lost a deleted record may change; every other record keeps its
        // pseudonym, and each repeat record is in its original's cluster.
        let touched: HashSet<&String> = deleted.iter().map(|id| &was[id]).collect();
        let mut kept = 0;
        for (id, p) in &was {
            if deleted.contains(id) {
                assert!(!now.contains_key(id), "rep {rep}: deleted {id} mapped");
            } else if !touched.contains(p) {
                assert_eq!(&now[id], p, "rep {rep}: record {id}");
                kept += 1;
            }
        }
        assert!(kept > a_records / 2, "rep {rep}: {kept}");
        for (new, orig) in &copied {
            assert_eq!(
                now[new], now[orig],
                "rep {rep}: {new} is a repeat of {orig}"
            );
        }
        assert!(!was_b.is_empty());
        let log = std::fs::read_to_string(dir.join("lu.stderr")).unwrap();
        assert!(
            log.lines()
                .map(plain)
                .any(|l| l.contains("resuming a job interrupted")
                    && l.contains("project=fault job=3")),
            "rep {rep}: the batch job was not interrupted"
        );
        drop(lu_d);

        // The scored project: kill while the job links (scores), restart, same links.
        let mut lu6 = start_lu(&dir, &addr, &pause);
        run(
            &dir,
            &["lu", "create-project"],
            &lu_args(&url, "admin", "fault-scored"),
            &[
                "--schema",
                scored_s,
                "--holder",
                "holder-a",
                "--holder",
                "holder-b",
                "--researcher",
                "researcher",
                "--researcher-key",
                "researcher.pub",
            ],
        );
        for p in ["holder-a", "holder-b"] {
            run(
                &dir,
                &["lu", "upload"],
                &lu_args(&url, p, "fault-scored"),
                &["--tokens", &format!("{p}.scored-tokens"), "--quiet"],
            );
        }
        run(
            &dir,
            &["lu", "start-job"],
            &lu_args(&url, "admin", "fault-scored"),
            &[],
        );
        // Wait until the job is in its linking stage (candidates, EM, clustering), then kill
        // at a random moment of it.
        let t = Instant::now();
        loop {
            let out = run(
                &dir,
                &["lu", "job"],
                &lu_args(&url, "admin", "fault-scored"),
                &[],
            );
            let line = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                !line.contains("done"),
                "rep {rep}: job done before the kill"
            );
            if line.contains("running: linking") {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(60), "rep {rep}: {line}");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(next(0, 300)));
        lu6.kill9();
        let lu7 = start_lu(&dir, &addr, &[]);
        let out = run(
            &dir,
            &["lu", "job"],
            &lu_args(&url, "admin", "fault-scored"),
            &["--wait"],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("done"), "rep {rep}: {stdout}");
        assert!(
            stdout.contains("estimated (Fellegi–Sunter model): precision 0."),
            "rep {rep}: {stdout}"
        );
        // The restarted linkage unit ran the interrupted job again (it was not done when
        // killed).
        let log = std::fs::read_to_string(dir.join("lu.stderr")).unwrap();
        assert!(
            log.lines()
                .any(|l| l.contains("resuming a job interrupted") && l.contains("fault-scored")),
            "rep {rep}: the scored job was not interrupted"
        );
        let (fa, fb) = (dir.join("a-scored.csv"), dir.join("b-scored.csv"));
        for (p, f) in [("holder-a", &fa), ("holder-b", &fb)] {
            run(
                &dir,
                &["lu", "mapping"],
                &lu_args(&url, p, "fault-scored"),
                &["--out", f.to_str().unwrap()],
            );
        }
        let a_rows = std::fs::read_to_string(&fa).unwrap().lines().count() - 1;
        assert_eq!(
            a_rows, a_scored_records,
            "rep {rep}: every record mapped once"
        );
        let pairs = mapping_pairs(&[("holder-a", fa), ("holder-b", fb)]);
        assert_eq!(
            pairs, local_scored,
            "rep {rep}: same scored links as renketsu link"
        );
        drop(lu7);
    }
}

/// A log line without its ANSI colour codes.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut escape = false;
    for c in line.chars() {
        match (escape, c) {
            (_, '\x1b') => escape = true,
            (true, 'm') => escape = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}

/// A holder's `id,pid` mapping file as a map.
fn read_mapping(path: &Path) -> BTreeMap<String, String> {
    let mut r = csv::Reader::from_path(path).unwrap();
    r.records()
        .map(|row| {
            let row = row.unwrap();
            (row[0].to_owned(), row[1].to_owned())
        })
        .collect()
}

/// From the token file `tokens`: a token batch `batch` of its first `copies` records under
/// new ids (`new-<id>`: repeat records of the same persons) and a deletion list `deleted` of
/// the next `deletes` ids. Returns `(new id, original id)` pairs and the deleted ids.
fn write_batch(
    tokens: &Path,
    batch: &Path,
    deleted: &Path,
    copies: usize,
    deletes: usize,
) -> (Vec<(String, String)>, HashSet<String>) {
    let text = std::fs::read_to_string(tokens).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let records = &lines[1..lines.len() - 1];
    let mut out = format!("{}\n", lines[0]);
    let mut copied = Vec::new();
    for line in &records[..copies] {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = v["id"].as_str().unwrap().to_owned();
        let new = format!("new-{id}");
        v["id"] = serde_json::Value::String(new.clone());
        out.push_str(&serde_json::to_string(&v).unwrap());
        out.push('\n');
        copied.push((new, id));
    }
    let end = serde_json::json!({"end": {
        "records": copies, "read": copies, "tokenized": copies, "rejected": 0,
        "rejects_by_reason": {}, "field_rejects": {}, "tokens_by_recipe": {},
        "encoding": "utf-8"
    }});
    out.push_str(&format!("{end}\n"));
    std::fs::write(batch, out).unwrap();
    let gone: Vec<String> = records[copies..copies + deletes]
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    std::fs::write(deleted, gone.join("\n") + "\n").unwrap();
    (copied, gone.into_iter().collect())
}

#[test]
fn rekeyed_tokens_match_uploads_of_the_new_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let schema = repo().join("schemas/jp-person-exact.toml");
    let schema_s = schema.to_str().unwrap();
    ok(
        dir,
        &[
            "synth",
            "--out",
            "data",
            "--holders",
            "2",
            "--records",
            "800",
            "--seed",
            "5",
            "--quiet",
        ],
    );
    ok(
        dir,
        &[
            "pki", "dev-init", "--out", "pki", "--holder", "holder-a", "--holder", "holder-b",
        ],
    );
    let custodian = start_custodian(dir);
    let cu = custodian.url();
    // The linkage unit may ask the custodian for re-keying deltas, with its own certificate.
    let lu = start(
        dir,
        &[
            "lu",
            "serve",
            "--db",
            "sqlite:lu.db",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            "pki/linkage-unit-server.pem",
            "--tls-key",
            "pki/linkage-unit-server.key",
            "--client-ca",
            "pki/ca.pem",
            "--custodian",
            &cu,
            "--custodian-cert",
            "pki/linkage-unit.pem",
            "--custodian-key",
            "pki/linkage-unit.key",
        ],
        "lu.stderr",
        &[],
    );
    let lu_url = lu.url();
    let admin_c = [
        "--custodian",
        &cu,
        "--ca",
        "pki/ca.pem",
        "--cert",
        "pki/admin.pem",
        "--key",
        "pki/admin.key",
    ];
    let mut create = vec![
        "keys",
        "create-project",
        "--project",
        "rk",
        "--linkage-unit",
        "linkage-unit",
        "--schema",
        schema_s,
    ];
    create.extend(admin_c);
    ok(dir, &create);
    for party in ["holder-a", "holder-b"] {
        let mut enrol = vec![
            "keys",
            "enrol",
            "--project",
            "rk",
            "--party",
            party,
            "--declared-records",
            "3000",
        ];
        enrol.extend(admin_c);
        ok(dir, &enrol);
    }
    let tokenize = |party: &str, csv: &str, out: &str| {
        ok(
            dir,
            &[
                "tokenize",
                "--custodian",
                &cu,
                "--ca",
                "pki/ca.pem",
                "--cert",
                &format!("pki/{party}.pem"),
                "--key",
                &format!("pki/{party}.key"),
                "--project",
                "rk",
                "--schema",
                schema_s,
                "--input",
                csv,
                "--party",
                party,
                "--out",
                out,
                "--today",
                TODAY,
                "--quiet",
            ],
        );
    };
    tokenize("holder-a", "data/synth_a.csv", "a1.tokens");
    tokenize("holder-b", "data/synth_b.csv", "b1.tokens");
    ok(dir, &["lu", "keygen", "--out", "researcher"]);
    run(
        dir,
        &["lu", "create-project"],
        &lu_args(&lu_url, "admin", "rk"),
        &[
            "--schema",
            schema_s,
            "--holder",
            "holder-a",
            "--holder",
            "holder-b",
            "--researcher",
            "researcher",
            "--researcher-key",
            "researcher.pub",
        ],
    );
    run(
        dir,
        &["lu", "upload"],
        &lu_args(&lu_url, "holder-a", "rk"),
        &["--tokens", "a1.tokens", "--quiet"],
    );
    run(
        dir,
        &["lu", "upload"],
        &lu_args(&lu_url, "holder-b", "rk"),
        &["--tokens", "b1.tokens", "--quiet"],
    );
    run(
        dir,
        &["lu", "start-job"],
        &lu_args(&lu_url, "admin", "rk"),
        &["--wait"],
    );
    let map = |tag: &str| {
        let (fa, fb) = (
            dir.join(format!("a-{tag}.csv")),
            dir.join(format!("b-{tag}.csv")),
        );
        run(
            dir,
            &["lu", "mapping"],
            &lu_args(&lu_url, "holder-a", "rk"),
            &["--out", fa.to_str().unwrap()],
        );
        run(
            dir,
            &["lu", "mapping"],
            &lu_args(&lu_url, "holder-b", "rk"),
            &["--out", fb.to_str().unwrap()],
        );
        mapping_pairs(&[("holder-a", fa), ("holder-b", fb)])
    };
    let before = map("epoch1");
    assert!(before.len() > 200, "{} pairs", before.len());

    // Rotate every recipe; holder-b tokenizes again under epoch 2, holder-a's stored tokens
    // are re-keyed by the linkage unit with the custodian's deltas.
    let names: Vec<String> = String::from_utf8(ok(dir, &["schema", schema_s]).stdout)
        .unwrap()
        .lines()
        .skip_while(|l| !l.starts_with("recipes:"))
        .skip(1)
        .filter_map(|l| {
            let (head, _) = l.trim().split_once(':')?;
            let (name, version) = head.split_once(" v")?;
            Some(format!("{name}/v{version}"))
        })
        .collect();
    assert!(names.len() >= 4, "{names:?}");
    for r in &names {
        let mut rotate = vec!["keys", "rotate", "--project", "rk", "--recipe", r.as_str()];
        rotate.extend(admin_c);
        ok(dir, &rotate);
    }
    tokenize("holder-b", "data/synth_b.csv", "b2.tokens");
    let b2 = std::fs::read_to_string(dir.join("b2.tokens")).unwrap();
    assert!(b2.lines().next().unwrap().contains("\"epoch\":2"));
    assert_ne!(b2, std::fs::read_to_string(dir.join("b1.tokens")).unwrap());
    run(
        dir,
        &["lu", "upload"],
        &lu_args(&lu_url, "holder-b", "rk"),
        &["--tokens", "b2.tokens", "--quiet"],
    );
    // Without re-keying, the job refuses to mix epochs.
    let mut args = vec!["lu".to_owned(), "start-job".to_owned()];
    args.extend(lu_args(&lu_url, "admin", "rk"));
    args.push("--wait".to_owned());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = cmd(dir, &refs).output().unwrap();
    assert!(!out.status.success(), "a job over mixed epochs must fail");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("epoch"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for r in &names {
        let out = run(
            dir,
            &["lu", "rekey"],
            &lu_args(&lu_url, "admin", "rk"),
            &["--recipe", r, "--to-epoch", "2"],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("in 1 uploads"),
            "only holder-a's upload is still at epoch 1: {text}"
        );
    }
    run(
        dir,
        &["lu", "start-job"],
        &lu_args(&lu_url, "admin", "rk"),
        &["--wait"],
    );
    assert_eq!(
        map("epoch2"),
        before,
        "re-keyed epoch-1 tokens match fresh epoch-2 tokens"
    );
    drop(lu);
    drop(custodian);
}

/// F1 of `pairs` against the synthetic truth (pairs of named parties, unordered).
fn f1(
    pairs: &BTreeSet<(String, String, String, String)>,
    truth: &BTreeSet<(String, String, String, String)>,
) -> f64 {
    let norm = |p: &(String, String, String, String)| {
        if (p.0.as_str(), p.1.as_str()) <= (p.2.as_str(), p.3.as_str()) {
            p.clone()
        } else {
            (p.2.clone(), p.3.clone(), p.0.clone(), p.1.clone())
        }
    };
    let pairs: BTreeSet<_> = pairs.iter().map(norm).collect();
    let truth: BTreeSet<_> = truth.iter().map(norm).collect();
    let tp = pairs.intersection(&truth).count() as f64;
    let (p, r) = (tp / pairs.len() as f64, tp / truth.len() as f64);
    2.0 * p * r / (p + r)
}

/// Every `[i, mask, filter]` of a token file's records (version 2), by record id.
fn comparison_filters(path: &Path) -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines().skip(1) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(id) = v["id"].as_str() {
            let d = v["d"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|e| e[2].as_str().unwrap().to_owned())
                        .collect()
                })
                .unwrap_or_default();
            out.insert(id.to_owned(), d);
        }
    }
    out
}

/// Scored linkage in the multi-party flow (issue 15): three holders (one hash-only) tokenize
/// `schemas/ndb.toml` through the custodian (tokens of every recipe and per-comparison CLKs,
/// token files version 2); the linkage unit's scored job links exactly like `renketsu link` on
/// the same token files and within 0.002 F1 of embedded `renketsu link` on the CSVs; the admin
/// fetches the quality report, nobody else can; the separation holds for the new features.
#[test]
fn scored_job_through_the_custodian_and_the_linkage_unit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let schema = repo().join("schemas/ndb.toml");
    let schema_s = schema.to_str().unwrap();
    ok(
        dir,
        &[
            "synth",
            "--out",
            "data",
            "--holders",
            "3",
            "--records",
            "800",
            "--ndb-view",
            "b",
            "--seed",
            "11",
            "--quiet",
        ],
    );
    ok(
        dir,
        &[
            "pki", "dev-init", "--out", "pki", "--holder", "a", "--holder", "b", "--holder", "c",
            "--holder", "outsider",
        ],
    );
    let custodian = start_custodian(dir);
    let lu = start_lu(dir, "127.0.0.1:0", &[]);
    let (cu, lu_url) = (custodian.url(), lu.url());
    let admin_c = [
        "--custodian",
        cu.as_str(),
        "--ca",
        "pki/ca.pem",
        "--cert",
        "pki/admin.pem",
        "--key",
        "pki/admin.key",
    ];
    // Two custodian projects: the same person's comparison features must differ between them.
    for project in ["sc", "sc2"] {
        let mut create = vec![
            "keys",
            "create-project",
            "--project",
            project,
            "--linkage-unit",
            "linkage-unit",
            "--schema",
            schema_s,
        ];
        create.extend(admin_c);
        ok(dir, &create);
        for party in ["a", "b", "c"] {
            let mut enrol = vec![
                "keys",
                "enrol",
                "--project",
                project,
                "--party",
                party,
                "--declared-records",
                "20000",
            ];
            enrol.extend(admin_c);
            ok(dir, &enrol);
        }
    }
    let holders = [
        ("a", "data/synth_a.csv"),
        ("b", "data/synth_b_ndb.csv"),
        ("c", "data/synth_c.csv"),
    ];
    let tokenize = |project: &str, party: &str, csv: &str, out: &str| {
        ok(
            dir,
            &[
                "tokenize",
                "--custodian",
                &cu,
                "--ca",
                "pki/ca.pem",
                "--cert",
                &format!("pki/{party}.pem"),
                "--key",
                &format!("pki/{party}.key"),
                "--project",
                project,
                "--schema",
                schema_s,
                "--input",
                csv,
                "--party",
                party,
                "--out",
                out,
                "--today",
                TODAY,
                "--quiet",
            ],
        );
    };
    for (party, csv) in holders {
        tokenize("sc", party, csv, &format!("{party}.tokens"));
    }
    tokenize("sc2", "a", "data/synth_a.csv", "a-other-project.tokens");
    // Version 2: per-comparison CLKs from the raw holders, none from the hash-only one.
    let a_filters = comparison_filters(&dir.join("a.tokens"));
    assert!(a_filters.values().filter(|d| !d.is_empty()).count() > 700);
    assert!(
        comparison_filters(&dir.join("b.tokens"))
            .values()
            .all(Vec::is_empty)
    );
    // Comparison features of one person differ across projects.
    let other = comparison_filters(&dir.join("a-other-project.tokens"));
    let mut compared = 0;
    for (id, d) in &a_filters {
        for f in d {
            assert!(
                !other[id].contains(f),
                "record {id}: a filter equal in two projects"
            );
            compared += 1;
        }
    }
    assert!(compared > 1000, "{compared}");
    let tokens_of = |path: &str| -> HashSet<String> {
        std::fs::read_to_string(dir.join(path))
            .unwrap()
            .split('"')
            .filter(|s| s.len() == 44 && s.ends_with('='))
            .map(str::to_owned)
            .collect()
    };
    assert!(
        tokens_of("a.tokens").is_disjoint(&tokens_of("a-other-project.tokens")),
        "a token equal in two projects"
    );

    ok(
        dir,
        &[
            "lu",
            "keygen",
            "--out",
            "researcher",
            "--key-store",
            "researcher-keys",
        ],
    );
    run(
        dir,
        &["lu", "create-project"],
        &lu_args(&lu_url, "admin", "sc"),
        &[
            "--schema",
            schema_s,
            "--holder",
            "a",
            "--holder",
            "b",
            "--holder",
            "c",
            "--researcher",
            "researcher",
            "--researcher-key",
            "researcher.pub",
        ],
    );
    for (party, csv) in holders {
        run(
            dir,
            &["lu", "upload"],
            &lu_args(&lu_url, party, "sc"),
            &[
                "--tokens",
                &format!("{party}.tokens"),
                "--content-from",
                csv,
                "--schema",
                schema_s,
                "--researcher-key",
                "researcher.pub",
                "--quiet",
            ],
        );
    }
    let out = run(
        dir,
        &["lu", "start-job"],
        &lu_args(&lu_url, "admin", "sc"),
        &["--wait"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.contains("done"), "{stdout}");
    // The estimates, overall and per pair of holders.
    assert!(
        stdout.contains("estimated (Fellegi–Sunter model): precision 0."),
        "{stdout}"
    );
    assert!(stdout.contains("  a × c: precision 0."), "{stdout}");
    let mut maps = Vec::new();
    for (party, _) in holders {
        let f = dir.join(format!("{party}-map.csv"));
        run(
            dir,
            &["lu", "mapping"],
            &lu_args(&lu_url, party, "sc"),
            &["--out", f.to_str().unwrap()],
        );
        maps.push((party, f));
    }
    let lu_pairs = mapping_pairs(&maps);

    // The release says how sure each link is: per pseudonym of a multi-holder cluster its
    // weakest link probability, and the model's estimates in release.json.
    run(
        dir,
        &["fetch"],
        &lu_args(&lu_url, "researcher", "sc"),
        &[
            "--researcher-key",
            "researcher.key",
            "--key-store",
            "researcher-keys",
            "--out",
            "release",
        ],
    );
    let release: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("release/release.json")).unwrap())
            .unwrap();
    let est = release["estimated_precision"].as_f64().unwrap();
    assert!(est > 0.5 && est <= 1.0, "{release}");
    let mut r = csv::Reader::from_path(dir.join("release/link_probability.csv")).unwrap();
    assert_eq!(
        r.headers().unwrap(),
        vec!["pid", "weakest_link_probability"]
    );
    let probs: BTreeMap<String, f64> = r
        .records()
        .map(|x| {
            let x = x.unwrap();
            (x[0].to_owned(), x[1].parse().unwrap())
        })
        .collect();
    // Exactly the pseudonyms of clusters with records of two or more holders.
    let mut holders_of: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for (party, f) in &maps {
        let mut r = csv::Reader::from_path(f).unwrap();
        for x in r.records() {
            holders_of
                .entry(x.unwrap()[1].to_owned())
                .or_default()
                .insert(party);
        }
    }
    let multi: BTreeSet<&String> = holders_of
        .iter()
        .filter(|(_, h)| h.len() > 1)
        .map(|(p, _)| p)
        .collect();
    assert_eq!(probs.keys().collect::<BTreeSet<_>>(), multi);
    assert!(probs.values().all(|p| (0.0..=1.0).contains(p)));
    let sure = probs.values().filter(|&&p| p >= 0.9).count();
    assert!(
        sure * 10 >= probs.len() * 8,
        "{sure} of {} sure",
        probs.len()
    );

    // The release as Parquet (`--format parquet`, issue 18): Arrow types, the CSV's rows.
    let pq = cmd(dir, &["fetch"])
        .args(lu_args(&lu_url, "researcher", "sc"))
        .args([
            "--researcher-key",
            "researcher.key",
            "--key-store",
            "researcher-keys",
            "--long",
            "--format",
            "parquet",
            "--out",
            "release-parquet",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&pq.stderr);
    if stderr.contains("built without Parquet support") {
        eprintln!("renketsu built without the parquet feature: fetch --format parquet not tested");
    } else {
        assert!(pq.status.success(), "{stderr}");
        release_parquet_equals_csv(&dir.join("release-parquet"));
    }

    // The same pairs as `renketsu link` on the same token files.
    ok(
        dir,
        &[
            "link", "--schema", schema_s, "--input", "a.tokens", "--input", "b.tokens", "--input",
            "c.tokens", "--out", "local", "--quiet",
        ],
    );
    let local = link_pairs(&dir.join("local/pairs.csv"), &["a", "b", "c"]);
    assert!(local.len() > 300, "{} local pairs", local.len());
    assert_eq!(
        lu_pairs, local,
        "the scored job must link like renketsu link"
    );
    // Within 0.002 F1 of embedded `renketsu link` on the CSVs (one operator with every key).
    ok(dir, &["keys", "init", "--project", "sc"]);
    ok(
        dir,
        &[
            "link",
            "--project",
            "sc",
            "--schema",
            schema_s,
            "--today",
            TODAY,
            "--input",
            "a=data/synth_a.csv",
            "--input",
            "b=data/synth_b_ndb.csv",
            "--input",
            "c=data/synth_c.csv",
            "--out",
            "embedded",
            "--quiet",
        ],
    );
    let embedded = link_pairs(&dir.join("embedded/pairs.csv"), &["a", "b", "c"]);
    let truth = link_pairs(&dir.join("data/synth_truth.csv"), &["a", "b", "c"]);
    let (f_lu, f_emb) = (f1(&lu_pairs, &truth), f1(&embedded, &truth));
    eprintln!("scored synth: linkage unit F1 {f_lu:.4}, embedded F1 {f_emb:.4}");
    assert!(f_lu > 0.9, "{f_lu}");
    assert!(
        (f_lu - f_emb).abs() <= 0.002,
        "LU {f_lu} vs embedded {f_emb}"
    );

    // The admin fetches the quality report; it holds no token and no record id.
    run(
        dir,
        &["lu", "report"],
        &lu_args(&lu_url, "admin", "sc"),
        &["--out", "report"],
    );
    let summary = std::fs::read_to_string(dir.join("report/summary.json")).unwrap();
    let html = std::fs::read_to_string(dir.join("report/report.html")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(v["inputs"], "tokens");
    // The run's "today" is the holders' (their token files' headers), not a blank date.
    assert_eq!(v["today"], TODAY);
    assert_eq!(
        v["scoring"]["estimated"]["by_holder_pair"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert!(html.contains("<svg"));
    let all_tokens: HashSet<String> = ["a.tokens", "b.tokens", "c.tokens"]
        .iter()
        .flat_map(|f| tokens_of(f))
        .collect();
    for text in [&summary, &html] {
        for s in text.split('"') {
            assert!(!all_tokens.contains(s), "a token in the quality report");
        }
    }
    assert!(!summary.contains("pair_scores") && !summary.contains("\"id\""));
    // Nobody but the admin gets it: holders of the project, a holder of no project, the
    // researcher.
    for who in ["a", "outsider", "researcher"] {
        let mut args = vec!["lu".to_owned(), "report".to_owned()];
        args.extend(lu_args(&lu_url, who, "sc"));
        args.extend(["--out".to_owned(), format!("stolen-{who}")]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = cmd(dir, &refs).output().unwrap();
        assert!(!out.status.success(), "{who} fetched the report");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("PermissionDenied"),
            "{who}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!dir.join(format!("stolen-{who}")).exists());
    }
    drop(lu);
    drop(custodian);

    // Separation: the linkage unit's database and log hold no identifier, key or plaintext
    // content, the quality report included.
    let stored = lu_files(dir);
    let runs = suspicious_runs(&stored);
    let mut checked = 0;
    for csv in ["data/synth_a.csv", "data/synth_c.csv"] {
        let values = telltale_values(
            &dir.join(csv),
            &[
                "last_name",
                "first_name",
                "last_name_kana",
                "first_name_kana",
                "birth_date",
                "prefecture",
                "city",
            ],
        );
        for v in &values {
            assert!(
                !runs.iter().any(|r| r.contains(v.as_str())),
                "{v:?} from {csv} is in the linkage unit's database or log"
            );
            checked += 1;
        }
    }
    assert!(checked > 1000, "{checked} values checked");
    for secret in ["renketsu-kek-v1", "PRIVATE KEY"] {
        assert!(!contains(&stored, secret));
    }
}

/// `dir` holds a release fetched with `--format parquet --long`: each of joined, long and
/// link_probability as Parquet has the Arrow types release.json lists (dates as date32, the
/// probability as float64, `pid` and `holder` non-null strings) and the CSV's rows, an empty
/// cell being a null. The directory is copied to `$CARGO_TARGET_TMPDIR/release-parquet` for
/// the Python suite (python/tests/test_release_parquet.py reads it in PyArrow and pandas).
fn release_parquet_equals_csv(dir: &Path) {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Date32Type, Float64Type, Int64Type};
    use arrow_array::{Array, RecordBatch};
    use arrow_schema::DataType;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("release.json")).unwrap()).unwrap();
    let mut kinds_seen = BTreeSet::new();
    for name in ["joined", "long", "link_probability"] {
        let types = &meta["parquet"][format!("{name}.parquet")];
        let file = std::fs::File::open(dir.join(format!("{name}.parquet"))).unwrap();
        let batches: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let mut csv = csv::Reader::from_path(dir.join(format!("{name}.csv"))).unwrap();
        let header: Vec<String> = csv.headers().unwrap().iter().map(str::to_owned).collect();
        let rows: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
        assert!(!rows.is_empty(), "{name}: no rows");
        let schema = batches[0].schema();
        let names: Vec<&String> = schema.fields().iter().map(|f| f.name()).collect();
        assert_eq!(names, header.iter().collect::<Vec<_>>(), "{name}");
        for f in schema.fields() {
            let listed = types[f.name()].as_str().unwrap();
            let want = match listed {
                "int64" => DataType::Int64,
                "float64" => DataType::Float64,
                "bool" => DataType::Boolean,
                "date32" => DataType::Date32,
                "string" => DataType::Utf8,
                t => panic!("{name}.{}: type {t}", f.name()),
            };
            assert_eq!(f.data_type(), &want, "{name}.{}", f.name());
            kinds_seen.insert(listed.to_owned());
            if f.name() == "pid" || f.name() == "holder" {
                assert!(!f.is_nullable());
            }
        }
        if name == "link_probability" {
            assert_eq!(types["weakest_link_probability"], "float64");
        }
        let mut r = 0;
        for b in &batches {
            for i in 0..b.num_rows() {
                for (c, want) in rows[r].iter().enumerate() {
                    let a = b.column(c);
                    let got = if a.is_null(i) {
                        String::new()
                    } else {
                        match a.data_type() {
                            DataType::Utf8 => a.as_string::<i32>().value(i).to_owned(),
                            DataType::Int64 => a.as_primitive::<Int64Type>().value(i).to_string(),
                            DataType::Boolean => a.as_boolean().value(i).to_string(),
                            DataType::Float64 => {
                                let v = a.as_primitive::<Float64Type>().value(i);
                                assert_eq!(Some(v), want.parse().ok(), "{name} row {r}");
                                want.to_owned()
                            }
                            DataType::Date32 => {
                                let d = a.as_primitive::<Date32Type>().value(i);
                                civil(i64::from(d))
                            }
                            t => panic!("{t}"),
                        }
                    };
                    assert_eq!(got, want, "{name} row {r} column {}", header[c]);
                }
                r += 1;
            }
        }
        assert_eq!(r, rows.len(), "{name}: rows");
    }
    // The content (schemas/ndb.toml) has counts and points: not everything is a string.
    assert!(kinds_seen.contains("int64"), "{kinds_seen:?}");
    let keep = Path::new(env!("CARGO_TARGET_TMPDIR")).join("release-parquet");
    let _ = std::fs::remove_dir_all(&keep);
    std::fs::create_dir_all(&keep).unwrap();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), keep.join(e.file_name())).unwrap();
    }
}

/// `YYYY-MM-DD` of a day count since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil(z: i64) -> String {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Rows of a shared data set for the scored flow below: the first `n` records of A, their
/// true partners in B and the first `n / 2` other records of B (distractors), with the truth
/// among them. Writes `<name>_a.csv`, each `<name>_<b>.csv` of `bs` (the same B records in
/// each B file: the raw and the hash-only view) and `<name>_truth.csv` under `dir`.
fn subsample(dir: &Path, name: &str, a: &Path, bs: &[(&str, &Path)], truth: &Path, n: usize) {
    let mut partner: BTreeMap<String, String> = BTreeMap::new();
    let mut r = csv::Reader::from_path(truth).unwrap();
    for rec in r.records() {
        let rec = rec.unwrap();
        partner.insert(rec[0].to_owned(), rec[1].to_owned());
    }
    let copy = |src: &Path, dst: &Path, keep: &mut dyn FnMut(&str) -> bool| {
        let mut r = csv::Reader::from_path(src).unwrap();
        let mut w = csv::Writer::from_path(dst).unwrap();
        w.write_record(r.headers().unwrap()).unwrap();
        for rec in r.records() {
            let rec = rec.unwrap();
            if keep(&rec[0]) {
                w.write_record(&rec).unwrap();
            }
        }
        w.flush().unwrap();
    };
    let mut a_ids = BTreeSet::new();
    copy(a, &dir.join(format!("{name}_a.csv")), &mut |id| {
        a_ids.len() < n && a_ids.insert(id.to_owned())
    });
    let wanted: BTreeSet<String> = a_ids
        .iter()
        .filter_map(|i| partner.get(i))
        .cloned()
        .collect();
    let mut others = 0;
    let mut b_ids = BTreeSet::new();
    for (k, (b, path)) in bs.iter().enumerate() {
        copy(path, &dir.join(format!("{name}_{b}.csv")), &mut |id| {
            if k > 0 {
                return b_ids.contains(id);
            }
            let distractor = !wanted.contains(id) && others < n / 2;
            others += usize::from(distractor);
            let keep = wanted.contains(id) || distractor;
            if keep {
                b_ids.insert(id.to_owned());
            }
            keep
        });
    }
    let mut w = csv::Writer::from_path(dir.join(format!("{name}_truth.csv"))).unwrap();
    w.write_record(["id_a", "id_b"]).unwrap();
    for a in &a_ids {
        if let Some(b) = partner.get(a).filter(|b| b_ids.contains(*b)) {
            w.write_record([a, b]).unwrap();
        }
    }
    w.flush().unwrap();
}

/// Issue 15: on the shared data sets (jp with `jp-person.toml`; jp_ins raw and against the
/// hash-only holder with `ndb.toml`; subsamples of 800 records of A, their partners and 400
/// other records of B, to keep the test's VOPRF work small), holders tokenize through the
/// custodian and the linkage unit's scored job links exactly the pairs of `renketsu link` on
/// the same token files, within 0.002 F1 of embedded `renketsu link` on the CSVs.
#[test]
fn scored_jobs_on_the_shared_data_sets_equal_link() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = shared_data();
    subsample(
        dir,
        "jp",
        &data.join("jp/jp_a.csv"),
        &[("b", &data.join("jp/jp_b.csv"))],
        &data.join("jp/jp_truth.csv"),
        800,
    );
    subsample(
        dir,
        "ins",
        &data.join("jp_ins/jp_ins_a.csv"),
        &[
            ("b", &data.join("jp_ins/jp_ins_b.csv")),
            ("bndb", &data.join("jp_ins/jp_ins_b_ndb.csv")),
        ],
        &data.join("jp_ins/jp_ins_truth.csv"),
        800,
    );
    ok(
        dir,
        &[
            "pki", "dev-init", "--out", "pki", "--holder", "a", "--holder", "b",
        ],
    );
    ok(
        dir,
        &[
            "lu",
            "keygen",
            "--out",
            "researcher",
            "--key-store",
            "researcher-keys",
        ],
    );
    let custodian = start_custodian(dir);
    let lu = start_lu(dir, "127.0.0.1:0", &[]);
    let (cu, lu_url) = (custodian.url(), lu.url());
    let as_custodian = |party: &str| -> Vec<String> {
        ["--custodian", &cu, "--ca", "pki/ca.pem"]
            .iter()
            .map(|s| (*s).to_owned())
            .chain([
                "--cert".to_owned(),
                format!("pki/{party}.pem"),
                "--key".to_owned(),
                format!("pki/{party}.key"),
            ])
            .collect()
    };
    for (project, schema, a, b, min_f1) in [
        ("sjp", "jp-person.toml", "jp_a.csv", "jp_b.csv", 0.95),
        ("sins", "ndb.toml", "ins_a.csv", "ins_b.csv", 0.95),
        ("sndb", "ndb.toml", "ins_a.csv", "ins_bndb.csv", 0.6),
    ] {
        let schema = repo().join("schemas").join(schema);
        let schema = schema.to_str().unwrap();
        run(
            dir,
            &["keys", "create-project"],
            &as_custodian("admin"),
            &[
                "--project",
                project,
                "--linkage-unit",
                "linkage-unit",
                "--schema",
                schema,
            ],
        );
        for party in ["a", "b"] {
            run(
                dir,
                &["keys", "enrol"],
                &as_custodian("admin"),
                &[
                    "--project",
                    project,
                    "--party",
                    party,
                    "--declared-records",
                    "20000",
                ],
            );
        }
        run(
            dir,
            &["lu", "create-project"],
            &lu_args(&lu_url, "admin", project),
            &[
                "--schema",
                schema,
                "--holder",
                "a",
                "--holder",
                "b",
                "--researcher",
                "researcher",
                "--researcher-key",
                "researcher.pub",
            ],
        );
        let mut maps = Vec::new();
        for (party, csv) in [("a", a), ("b", b)] {
            let tokens = format!("{project}-{party}.tokens");
            run(
                dir,
                &["tokenize"],
                &as_custodian(party),
                &[
                    "--project",
                    project,
                    "--schema",
                    schema,
                    "--input",
                    csv,
                    "--party",
                    party,
                    "--out",
                    &tokens,
                    "--today",
                    TODAY,
                    "--quiet",
                ],
            );
            run(
                dir,
                &["lu", "upload"],
                &lu_args(&lu_url, party, project),
                &["--tokens", &tokens, "--quiet"],
            );
            maps.push((party, dir.join(format!("{project}-{party}-map.csv"))));
        }
        run(
            dir,
            &["lu", "start-job"],
            &lu_args(&lu_url, "admin", project),
            &["--wait"],
        );
        for (party, f) in &maps {
            run(
                dir,
                &["lu", "mapping"],
                &lu_args(&lu_url, party, project),
                &["--out", f.to_str().unwrap()],
            );
        }
        let lu_pairs = mapping_pairs(&maps);
        let local = format!("{project}-local");
        ok(
            dir,
            &[
                "link",
                "--schema",
                schema,
                "--input",
                &format!("{project}-a.tokens"),
                "--input",
                &format!("{project}-b.tokens"),
                "--out",
                &local,
                "--quiet",
            ],
        );
        let local = link_pairs(&dir.join(local).join("pairs.csv"), &["a", "b"]);
        assert_eq!(
            lu_pairs, local,
            "{project}: the job must link like renketsu link"
        );
        ok(dir, &["keys", "init", "--project", project]);
        let embedded = format!("{project}-embedded");
        ok(
            dir,
            &[
                "link",
                "--project",
                project,
                "--schema",
                schema,
                "--today",
                TODAY,
                "--input",
                &format!("a={a}"),
                "--input",
                &format!("b={b}"),
                "--out",
                &embedded,
                "--quiet",
            ],
        );
        let embedded = link_pairs(&dir.join(embedded).join("pairs.csv"), &["a", "b"]);
        let truth_file = if a.starts_with("jp") {
            "jp_truth.csv"
        } else {
            "ins_truth.csv"
        };
        let truth = link_pairs(&dir.join(truth_file), &["a", "b"]);
        assert!(truth.len() > 250, "{project}: {} true pairs", truth.len());
        let (f_lu, f_emb) = (f1(&lu_pairs, &truth), f1(&embedded, &truth));
        eprintln!("{project}: linkage unit F1 {f_lu:.4}, embedded F1 {f_emb:.4}");
        assert!(f_lu > min_f1, "{project}: F1 {f_lu}");
        assert!(
            (f_lu - f_emb).abs() <= 0.002,
            "{project}: linkage unit F1 {f_lu} against embedded {f_emb}"
        );
    }
    drop(lu);
    drop(custodian);
}
