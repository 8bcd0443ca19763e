//! Integration tests of `renketsu link` (and `eval`, `schema`) on malformed and unusual inputs:
//! ragged rows, bad bytes, empty files, missing columns, duplicate and empty ids, CP932 input.
//!
//! Acceptance: a malformed CSV gives a clear error or rejects rows; no row is silently dropped.
//! Every run that produces output is checked by [`check_accounting`]: per party,
//! `read == tokenized + rejected`, `rejected` equals the rows of `rejects-<party>.csv`,
//! `tokenized` equals the party's rows in `clusters.csv`, and `read` equals the number of
//! data records the test wrote.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const TODAY: &str = "2026-11-22";
const PROJECT: &str = "t";

/// Fields are kept by the schema in name order: dob, name, sex (see `no_token` details).
const SCHEMA: &str = r#"schema_format = 1
name = "cli-inputs"
version = 1

[input]
id_column = "id"

[fields.name]
column = "name"
normalizer = "text"

[fields.dob]
column = "dob"
normalizer = "date"

[fields.sex]
column = "sex"
normalizer = "sex"

[content]
columns = ["dx"]

[[recipes]]
name = "name_dob_sex"
version = 1
fields = ["name", "dob", "sex"]

[[recipes]]
name = "name_dob"
version = 1
fields = ["name", "dob"]
"#;

const HEADER: &str = "id,name,dob,sex,dx";

/// The usual second holder: three people, all well formed.
const B_ROWS: &[&str] = &[
    "b1,Taro Yamada,1970-01-01,M,I10",
    "b2,Hanako Sato,1980-02-02,F,E11",
    "b3,Jiro Suzuki,1990-03-03,M,J45",
];

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A temporary directory with the schema and an initialized key store.
struct Sandbox {
    dir: tempfile::TempDir,
}

/// Outcome of one run of the binary.
struct Run {
    success: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn ok(self) -> Self {
        assert!(
            self.success,
            "renketsu failed (exit {:?}):\n{}",
            self.code, self.stderr
        );
        self
    }

    #[track_caller]
    fn failed(self) -> Self {
        assert!(
            !self.success,
            "renketsu should have failed but succeeded; stderr:\n{}",
            self.stderr
        );
        self
    }

    /// Asserts that stderr contains every one of `needles`.
    #[track_caller]
    fn stderr_has(&self, needles: &[&str]) {
        for n in needles {
            assert!(
                self.stderr.contains(n),
                "stderr lacks {n:?}; stderr:\n{}",
                self.stderr
            );
        }
    }
}

impl Sandbox {
    fn new() -> Self {
        let sb = Self {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        sb.write("schema.toml", SCHEMA);
        sb.run(["keys", "init", "--project", PROJECT]).ok();
        sb
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The default output directory of [`Sandbox::link`].
    fn out(&self) -> PathBuf {
        self.path("out")
    }

    fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(rel);
        std::fs::write(&p, bytes).expect("write input");
        p
    }

    /// Writes a CSV file from a header line and data lines (joined with `\n`, each line
    /// terminated). Lines are written verbatim, so they may be ragged or contain quotes.
    fn write_lines(&self, rel: &str, header: &str, rows: &[&str]) -> PathBuf {
        let mut text = String::new();
        for line in std::iter::once(header).chain(rows.iter().copied()) {
            text.push_str(line);
            text.push('\n');
        }
        self.write(rel, text)
    }

    /// Runs the binary with a clean environment for the key store and project.
    fn run<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = Command::new(env!("CARGO_BIN_EXE_renketsu"))
            .args(args)
            .current_dir(self.dir.path())
            .env("RENKETSU_KEY_STORE", self.path("keys"))
            .env_remove("RENKETSU_KEK")
            .env_remove("RENKETSU_PROJECT")
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .output()
            .expect("run renketsu");
        Run {
            success: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `renketsu link` with the sandbox schema into `out/`.
    fn link<P: AsRef<Path>>(&self, inputs: &[(&str, P)], extra: &[&str]) -> Run {
        self.link_with(&self.path("schema.toml"), &self.out(), inputs, extra)
    }

    fn link_with<P: AsRef<Path>>(
        &self,
        schema: &Path,
        out: &Path,
        inputs: &[(&str, P)],
        extra: &[&str],
    ) -> Run {
        let mut args: Vec<String> = vec![
            "link".into(),
            "--schema".into(),
            schema.display().to_string(),
            "--project".into(),
            PROJECT.into(),
            "--out".into(),
            out.display().to_string(),
            "--today".into(),
            TODAY.into(),
            "--quiet".into(),
        ];
        for (party, path) in inputs {
            args.push("--input".into());
            args.push(format!("{party}={}", path.as_ref().display()));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        self.run(args)
    }

    /// The standard second holder `b` (three well-formed rows).
    fn b(&self) -> PathBuf {
        self.write_lines("b.csv", HEADER, B_ROWS)
    }
}

/// Header and rows of a CSV output file.
fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(false)
        .from_path(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let header = rdr
        .headers()
        .expect("header")
        .iter()
        .map(str::to_owned)
        .collect();
    let rows = rdr
        .records()
        .map(|r| r.expect("record").iter().map(str::to_owned).collect())
        .collect();
    (header, rows)
}

/// One row of `rejects-<party>.csv`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reject {
    row: u64,
    id: String,
    reason: String,
    detail: String,
}

fn reject(row: u64, id: &str, reason: &str, detail: &str) -> Reject {
    Reject {
        row,
        id: id.into(),
        reason: reason.into(),
        detail: detail.into(),
    }
}

fn rejects(out: &Path, party: &str) -> Vec<Reject> {
    let (header, rows) = read_csv(&out.join(format!("rejects-{party}.csv")));
    assert_eq!(header, ["row", "id", "reason", "detail"]);
    rows.into_iter()
        .map(|r| Reject {
            row: r[0].parse().expect("row number"),
            id: r[1].clone(),
            reason: r[2].clone(),
            detail: r[3].clone(),
        })
        .collect()
}

/// `(party, id) -> pid` from `clusters.csv`.
fn clusters(out: &Path) -> BTreeMap<(String, String), String> {
    let (header, rows) = read_csv(&out.join("clusters.csv"));
    assert_eq!(header, ["party", "id", "pid"]);
    let mut map = BTreeMap::new();
    for r in rows {
        let key = (r[0].clone(), r[1].clone());
        assert!(
            map.insert(key.clone(), r[2].clone()).is_none(),
            "{key:?} twice in clusters.csv"
        );
    }
    map
}

/// Ids of `party` in `clusters.csv`, sorted.
fn cluster_ids(out: &Path, party: &str) -> Vec<String> {
    clusters(out)
        .into_keys()
        .filter(|(p, _)| p == party)
        .map(|(_, id)| id)
        .collect()
}

/// Two-party `pairs.csv` as a set of `(id_a, id_b)`.
fn pairs(out: &Path) -> BTreeSet<(String, String)> {
    let (header, rows) = read_csv(&out.join("pairs.csv"));
    assert_eq!(header, ["id_a", "id_b"]);
    rows.into_iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect()
}

fn pair_set(pairs: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn summary(out: &Path) -> Value {
    let text = std::fs::read_to_string(out.join("summary.json")).expect("summary.json");
    serde_json::from_str(&text).expect("summary.json is JSON")
}

/// The summary entry of `party`.
fn party<'a>(summary: &'a Value, name: &str) -> &'a Value {
    summary["parties"]
        .as_array()
        .expect("parties")
        .iter()
        .find(|p| p["party"] == name)
        .unwrap_or_else(|| panic!("no party {name} in summary"))
}

/// The accounting invariant. `written` lists, in input order, each party and the number of
/// data records the test wrote to its file. Returns the summary for further checks.
#[track_caller]
fn check_accounting(out: &Path, written: &[(&str, u64)]) -> Value {
    let summary = summary(out);
    let parties = summary["parties"].as_array().expect("parties");
    let names: Vec<&str> = parties
        .iter()
        .map(|p| p["party"].as_str().expect("party name"))
        .collect();
    let want: Vec<&str> = written.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, want, "parties in summary.json");
    let clusters = clusters(out);
    for (p, &(name, n_written)) in parties.iter().zip(written) {
        let num = |k: &str| {
            p[k].as_u64()
                .unwrap_or_else(|| panic!("{name}: {k} missing"))
        };
        let (read, tokenized, rejected) = (num("read"), num("tokenized"), num("rejected"));
        assert_eq!(
            read, n_written,
            "{name}: summary read vs data records written"
        );
        assert_eq!(
            read,
            tokenized + rejected,
            "{name}: read = tokenized + rejected"
        );

        let rej = rejects(out, name);
        assert_eq!(
            rej.len() as u64,
            rejected,
            "{name}: rows of rejects-{name}.csv"
        );
        // Row numbers are distinct 1-based data record numbers.
        let rows: BTreeSet<u64> = rej.iter().map(|r| r.row).collect();
        assert_eq!(rows.len(), rej.len(), "{name}: reject row numbers repeat");
        assert!(
            rows.iter().all(|&r| (1..=read).contains(&r)),
            "{name}: reject row numbers out of 1..={read}: {rows:?}"
        );
        // rejects_by_reason agrees with the file, reason by reason.
        let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
        for r in &rej {
            *by_reason.entry(r.reason.clone()).or_default() += 1;
        }
        let from_summary: BTreeMap<String, u64> = p["rejects_by_reason"]
            .as_object()
            .expect("rejects_by_reason")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().expect("count")))
            .collect();
        assert_eq!(from_summary, by_reason, "{name}: rejects_by_reason");

        let in_clusters = clusters.keys().filter(|(party, _)| party == name).count() as u64;
        assert_eq!(in_clusters, tokenized, "{name}: rows in clusters.csv");
        // A rejected id (when known) never also appears as tokenized.
        for r in &rej {
            if r.reason != "duplicate_id" && !r.id.is_empty() {
                assert!(
                    !clusters.contains_key(&(name.to_owned(), r.id.clone())),
                    "{name}: rejected id {} is also in clusters.csv",
                    r.id
                );
            }
        }
    }
    assert_eq!(
        clusters.len() as u64,
        parties
            .iter()
            .map(|p| p["tokenized"].as_u64().unwrap())
            .sum::<u64>(),
        "clusters.csv has rows of unknown parties"
    );
    summary
}

fn no_summary(out: &Path) {
    assert!(
        !out.join("summary.json").exists(),
        "a failed run must not leave summary.json"
    );
}

fn is_pid(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

// ---------------------------------------------------------------------------------------------
// 1. Ragged rows
// ---------------------------------------------------------------------------------------------

#[test]
fn ragged_rows_are_rejected_and_the_rest_tokenized() {
    let sb = Sandbox::new();
    let a = sb.write_lines(
        "a.csv",
        HEADER,
        &[
            "a1,Taro Yamada,1970-01-01,M,I10",
            "a2,Hanako Sato,1980-02-02",             // too few
            "a3,Jiro Suzuki,1990-03-03,M,J45,extra", // too many
            "a4,Ichiro Tanaka,1960-04-04,M,C50",
            "a5",                           // a single field
            "a6,Saburo Ito,1950-05-05,M,,", // one trailing comma too many
        ],
    );
    let b = sb.b();
    sb.link(&[("a", &a), ("b", &b)], &[]).ok();
    let out = sb.out();
    check_accounting(&out, &[("a", 6), ("b", 3)]);
    assert_eq!(
        rejects(&out, "a"),
        [
            reject(2, "a2", "ragged_row", "expected 5 fields, found 3"),
            reject(3, "a3", "ragged_row", "expected 5 fields, found 6"),
            reject(5, "a5", "ragged_row", "expected 5 fields, found 1"),
            reject(6, "a6", "ragged_row", "expected 5 fields, found 6"),
        ]
    );
    assert_eq!(cluster_ids(&out, "a"), ["a1", "a4"]);
    assert_eq!(cluster_ids(&out, "b"), ["b1", "b2", "b3"]);
    assert_eq!(pairs(&out), pair_set(&[("a1", "b1")]));
}

#[test]
fn row_numbers_count_data_records_not_lines() {
    // A quoted content value spanning two lines is one record; rows in rejects are records.
    let sb = Sandbox::new();
    let a = sb.write_lines(
        "a.csv",
        HEADER,
        &[
            "a1,Taro Yamada,1970-01-01,M,\"I10\nfollow-up\"",
            "a2,\"Sato, Hanako\",1980-02-02,F,E11",
            "a3,Jiro Suzuki,1990-03-03",
        ],
    );
    let b = sb.b();
    sb.link(&[("a", &a), ("b", &b)], &[]).ok();
    let out = sb.out();
    check_accounting(&out, &[("a", 3), ("b", 3)]);
    assert_eq!(
        rejects(&out, "a"),
        [reject(3, "a3", "ragged_row", "expected 5 fields, found 3")]
    );
    let (_, joined) = read_csv(&out.join("joined.csv"));
    assert!(
        joined.iter().any(|r| r[1] == "I10\nfollow-up"),
        "multi-line content survives: {joined:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Invalid UTF-8
// ---------------------------------------------------------------------------------------------

#[test]
fn invalid_utf8_bytes_are_rejected_with_explicit_encoding() {
    let sb = Sandbox::new();
    let mut a = Vec::new();
    a.extend_from_slice(b"id,name,dob,sex,dx,note\n");
    a.extend_from_slice(b"a1,Taro Yamada,1970-01-01,M,I10,ok\n");
    a.extend_from_slice(b"a2,Hanako S\xFFato,1980-02-02,F,E11,bad name\n");
    a.extend_from_slice(b"a\xC33,Jiro Suzuki,1990-03-03,M,J45,bad id\n");
    a.extend_from_slice(b"a4,Ichiro Tanaka,1960-04-04,M,C5\x800,bad content\n");
    a.extend_from_slice(b"a5,Saburo Ito,1950-05-05,\xE7\x94,K20,bad sex (truncated char)\n");
    // A bad byte in a column the schema does not use does not matter.
    a.extend_from_slice(b"a6,Goro Kato,1945-06-06,M,K30,unused \xFF column\n");
    let a = sb.write("a.csv", a);
    let b = sb.b();
    sb.link(&[("a", &a), ("b", &b)], &["--encoding", "utf-8"])
        .ok();
    let out = sb.out();
    let s = check_accounting(&out, &[("a", 6), ("b", 3)]);
    assert_eq!(party(&s, "a")["encoding"], "utf-8");
    assert_eq!(
        rejects(&out, "a"),
        [
            reject(2, "a2", "invalid_encoding", "column name"),
            reject(3, "", "invalid_encoding", "column id"),
            reject(4, "a4", "invalid_encoding", "column dx"),
            reject(5, "a5", "invalid_encoding", "column sex"),
        ]
    );
    assert_eq!(cluster_ids(&out, "a"), ["a1", "a6"]);
    assert_eq!(pairs(&out), pair_set(&[("a1", "b1")]));
}

#[test]
fn auto_encoding_rejects_bad_bytes_after_the_first_mib() {
    // The first MiB is valid UTF-8, so `auto` picks UTF-8; a later bad byte rejects its row.
    let sb = Sandbox::new();
    let mut a = Vec::with_capacity((1 << 20) + 4096);
    a.extend_from_slice(HEADER.as_bytes());
    a.push(b'\n');
    let mut n = 0u64;
    while a.len() <= 1 << 20 {
        n += 1;
        a.extend_from_slice(format!("f{n},Person Number {n},1970-01-01,M,Z99\n").as_bytes());
    }
    a.extend_from_slice(b"bad,Na\xFFme Person,1970-01-01,M,Z99\n");
    a.extend_from_slice(b"last,Last Person,1970-01-01,F,Z98\n");
    let bad_row = n + 1;
    let a = sb.write("a.csv", a);
    let b = sb.write_lines(
        "b.csv",
        HEADER,
        &[
            "b1,person number 7,1970-01-01,male,X1",
            "b2,LAST PERSON,1970/1/1,F,X2",
        ],
    );
    sb.link(&[("a", &a), ("b", &b)], &[]).ok();
    let out = sb.out();
    let s = check_accounting(&out, &[("a", n + 2), ("b", 2)]);
    assert_eq!(party(&s, "a")["encoding"], "utf-8");
    assert_eq!(
        rejects(&out, "a"),
        [reject(bad_row, "bad", "invalid_encoding", "column name")]
    );
    assert_eq!(pairs(&out), pair_set(&[("f7", "b1"), ("last", "b2")]));
}

// ---------------------------------------------------------------------------------------------
// 3, 4. Empty and header-only files
// ---------------------------------------------------------------------------------------------

#[test]
fn empty_file_is_a_clear_error() {
    let sb = Sandbox::new();
    let b = sb.b();
    for (i, (bytes, encoding)) in [
        (&b""[..], "auto"),
        (&b""[..], "utf8"),
        (&b""[..], "cp932"),
        (&b"\n\n"[..], "auto"), // blank lines only: no header either
    ]
    .into_iter()
    .enumerate()
    {
        let e = sb.write(&format!("empty{i}.csv"), bytes);
        let out = sb.path(&format!("out{i}"));
        // Empty file first and second: the error must name it either way.
        for inputs in [[("e", &e), ("b", &b)], [("b", &b), ("e", &e)]] {
            let run = sb
                .link_with(
                    &sb.path("schema.toml"),
                    &out,
                    &inputs,
                    &["--encoding", encoding],
                )
                .failed();
            run.stderr_has(&["empty", &e.display().to_string()]);
            no_summary(&out);
        }
    }
}

#[test]
fn header_only_file_reads_zero_rows() {
    let sb = Sandbox::new();
    let a = sb.write_lines("a.csv", HEADER, &[]);
    let b = sb.b();
    sb.link(&[("a", &a), ("b", &b)], &[]).ok();
    let out = sb.out();
    let s = check_accounting(&out, &[("a", 0), ("b", 3)]);
    assert_eq!(party(&s, "a")["read"], 0);
    assert_eq!(s["links"], 0);
    assert!(pairs(&out).is_empty());
    assert!(rejects(&out, "a").is_empty());

    // Without a trailing newline too.
    let a = sb.write("a2.csv", HEADER);
    let out2 = sb.path("out2");
    sb.link_with(&sb.path("schema.toml"), &out2, &[("a", &a), ("b", &b)], &[])
        .ok();
    check_accounting(&out2, &[("a", 0), ("b", 3)]);
}

// ---------------------------------------------------------------------------------------------
// 5, 6. Missing columns
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_id_column_is_a_clear_error() {
    let sb = Sandbox::new();
    let a = sb.write_lines(
        "a.csv",
        "patient_no,name,dob,sex,dx",
        &["p1,Taro Yamada,1970-01-01,M,I10"],
    );
    let b = sb.b();
    for inputs in [[("a", &a), ("b", &b)], [("b", &b), ("a", &a)]] {
        let run = sb.link(&inputs, &[]).failed();
        run.stderr_has(&[
            &a.display().to_string(),
            "no column \"id\"",
            "--id-column",
            "the header has: patient_no, name, dob, sex, dx",
        ]);
        no_summary(&sb.out());
    }
}

#[test]
fn id_column_option_selects_another_column() {
    let sb = Sandbox::new();
    let header = "id,patient_no,name,dob,sex,dx";
    let a = sb.write_lines(
        "a.csv",
        header,
        &[
            "x,P-001,Taro Yamada,1970-01-01,M,I10",
            "x,P-002,Hanako Sato,1980-02-02,F,E11",
        ],
    );
    let b = sb.write_lines(
        "b.csv",
        header,
        &[
            ",Q-001,Hanako Sato,1980-02-02,F,E11",
            ",Q-002,Jiro Suzuki,1990-03-03,M,J45",
        ],
    );
    // With the default id column the `id` values are duplicate (a) or empty (b).
    sb.link(&[("a", &a), ("b", &b)], &[]).ok();
    check_accounting(&sb.out(), &[("a", 2), ("b", 2)]);
    assert_eq!(rejects(&sb.out(), "a")[0].reason, "duplicate_id");
    assert_eq!(rejects(&sb.out(), "b").len(), 2);

    let out = sb.path("out-patient-no");
    sb.link_with(
        &sb.path("schema.toml"),
        &out,
        &[("a", &a), ("b", &b)],
        &["--id-column", "patient_no"],
    )
    .ok();
    check_accounting(&out, &[("a", 2), ("b", 2)]);
    assert_eq!(cluster_ids(&out, "a"), ["P-001", "P-002"]);
    assert_eq!(cluster_ids(&out, "b"), ["Q-001", "Q-002"]);
    assert_eq!(pairs(&out), pair_set(&[("P-002", "Q-001")]));

    // An --id-column that does not exist is named in the error.
    let run = sb
        .link(&[("a", &a), ("b", &b)], &["--id-column", "mrn"])
        .failed();
    run.stderr_has(&["no column \"mrn\"", "id, patient_no, name, dob, sex, dx"]);
}

#[test]
fn missing_identifier_column_names_the_schema_field() {
    let sb = Sandbox::new();
    let a = sb.write_lines(
        "a.csv",
        "id,name,birth_date,sex,dx",
        &["a1,Taro Yamada,1970-01-01,M,I10"],
    );
    let b = sb.b();
    let run = sb.link(&[("a", &a), ("b", &b)], &[]).failed();
    run.stderr_has(&[
        &a.display().to_string(),
        "no recipe",
        "no column \"dob\"",
        "identifier field `dob`",
        "id, name, birth_date, sex, dx",
    ]);
    no_summary(&sb.out());
}

#[test]
fn missing_identifier_column_leaves_other_recipes() {
    // Without `sex`, name_dob_sex cannot be made but name_dob can: the input is used, and
    // the summary says what was missing and which recipes were made.
    let sb = Sandbox::new();
    let a = sb.write_lines(
        "a.csv",
        "id,name,dob,dx",
        &["a1,Taro Yamada,1970-01-01,I10"],
    );
    let b = sb.b();
    sb.link(&[("a", &a), ("b", &b)], &[]).ok();
    let s = check_accounting(&sb.out(), &[("a", 1), ("b", 3)]);
    assert_eq!(
        party(&s, "a")["missing_identifier_columns"],
        serde_json::json!(["sex"])
    );
    assert_eq!(
        party(&s, "a")["recipes_available"],
        serde_json::json!(["name_dob"])
    );
    assert!(pairs(&sb.out()).contains(&("a1".to_owned(), "b1".to_owned())));
}

#[test]
fn missing_content_column_is_reported_not_fatal() {
    let sb = Sandbox::new();
    let a = sb.write_lines("a.csv", "id,name,dob,sex", &["a1,Taro Yamada,1970-01-01,M"]);
    let b = sb.b();
    sb.link(&[("a", &a), ("b", &b)], &[]).ok();
    let out = sb.out();
    let s = check_accounting(&out, &[("a", 1), ("b", 3)]);
    assert_eq!(
        party(&s, "a")["missing_content_columns"],
        serde_json::json!(["dx"])
    );
    let (header, _) = read_csv(&out.join("joined.csv"));
    assert_eq!(header, ["pid", "b.dx"]);
}

// ---------------------------------------------------------------------------------------------
// 7, 8. Duplicate and empty ids
// ---------------------------------------------------------------------------------------------

#[test]
fn duplicate_ids_keep_the_first_and_reject_the_rest() {
    let sb = Sandbox::new();
    let a = sb.write_lines(
        "a.csv",
        HEADER,
        &[
            "a1,Taro Yamada,1970-01-01,M,I10",
            "a2,Hanako Sato,1980-02-02,F,E11",
            "a1,Jiro Suzuki,1990-03-03,M,J45", // same id, other person
            " a2 ,Hanako Sato,1980-02-02,F,E11", // same id after trimming
            "a1,Taro Yamada,1970-01-01,M,I10", // exact duplicate row
        ],
    );
    let b = sb.b();
    sb.link(&[("a", &a), ("b", &b)], &[]).ok();
    let out = sb.out();
    check_accounting(&out, &[("a", 5), ("b", 3)]);
    assert_eq!(
        rejects(&out, "a"),
        [
            reject(3, "a1", "duplicate_id", ""),
            reject(4, "a2", "duplicate_id", ""),
            reject(5, "a1", "duplicate_id", ""),
        ]
    );
    assert_eq!(cluster_ids(&out, "a"), ["a1", "a2"]);
    // The first a1 (Taro) is the one kept: it links to b1, and Jiro (b3) stays unlinked.
    assert_eq!(pairs(&out), pair_set(&[("a1", "b1"), ("a2", "b2")]));
}

#[test]
fn empty_id_is_rejected_as_missing_id() {
    let sb = Sandbox::new();
    let a = sb.write_lines(
        "a.csv",
        HEADER,
        &[
            ",Taro Yamada,1970-01-01,M,I10",
            "   ,Hanako Sato,1980-02-02,F,E11",
            "\"\",Jiro Suzuki,1990-03-03,M,J45",
            "a4,Ichiro Tanaka,1960-04-04,M,C50",
        ],
    );
    let b = sb.b();
    sb.link(&[("a", &a), ("b", &b)], &[]).ok();
    let out = sb.out();
    check_accounting(&out, &[("a", 4), ("b", 3)]);
    assert_eq!(
        rejects(&out, "a"),
        [
            reject(1, "", "missing_id", ""),
            reject(2, "", "missing_id", ""),
            reject(3, "", "missing_id", ""),
        ]
    );
    assert_eq!(cluster_ids(&out, "a"), ["a4"]);
    assert!(pairs(&out).is_empty());
}

// ---------------------------------------------------------------------------------------------
// 9, 10. No token, and every reason in one file
// ---------------------------------------------------------------------------------------------

#[test]
fn rows_without_any_token_are_rejected_with_field_codes() {
    let sb = Sandbox::new();
    let a = sb.write_lines(
        "a.csv",
        HEADER,
        &[
            "a1,Taro Yamada,1970-13-45,M,I10",
            "a2,,19800202x,F,E11",
            "a3,Jiro Suzuki,2027-01-01,M,J45",
            "a4,Ichiro Tanaka,1700-04-04,M,C50",
            "a5,Saburo Ito,,,K20",
            // Sex is unusable but name_dob still yields a token: not rejected.
            "a6,Hanako Sato,1980-02-02,X,E11",
        ],
    );
    let b = sb.b();
    sb.link(&[("a", &a), ("b", &b)], &[]).ok();
    let out = sb.out();
    let s = check_accounting(&out, &[("a", 6), ("b", 3)]);
    assert_eq!(
        rejects(&out, "a"),
        [
            reject(1, "a1", "no_token", "dob=invalid_date"),
            reject(2, "a2", "no_token", "dob=invalid_date;name=missing"),
            reject(3, "a3", "no_token", "dob=future_date"),
            reject(4, "a4", "no_token", "dob=implausible_date"),
            reject(5, "a5", "no_token", "dob=missing;sex=missing"),
        ]
    );
    assert_eq!(cluster_ids(&out, "a"), ["a6"]);
    assert_eq!(pairs(&out), pair_set(&[("a6", "b2")]));
    let a = party(&s, "a");
    assert_eq!(a["field_rejects"]["sex"]["invalid_sex"], 1);
    assert_eq!(a["field_rejects"]["dob"]["invalid_date"], 2);
    assert_eq!(a["tokens_by_recipe"]["name_dob"], 1);
    assert_eq!(a["tokens_by_recipe"]["name_dob_sex"], 0);
}

#[test]
fn every_reject_reason_in_one_file_is_accounted_for() {
    let sb = Sandbox::new();
    let mut a = Vec::new();
    a.extend_from_slice(b"\xEF\xBB\xBFid,name,dob,sex,dx\r\n"); // BOM and CRLF
    a.extend_from_slice(b"a1,Taro Yamada,1970-01-01,M,I10\r\n");
    a.extend_from_slice(b"a2,Hanako Sato\r\n");
    a.extend_from_slice(b"a3,Jiro \xFESuzuki,1990-03-03,M,J45\r\n");
    a.extend_from_slice(b",Ichiro Tanaka,1960-04-04,M,C50\r\n");
    a.extend_from_slice(b"a1,Saburo Ito,1950-05-05,M,K20\r\n");
    a.extend_from_slice(b"a6,Goro Kato,not a date,M,K30\r\n");
    a.extend_from_slice(b"a7,Hanako Sato,1980-02-02,F,E11"); // no final newline
    let a = sb.write("a.csv", a);
    let b = sb.b();
    sb.link(&[("a", &a), ("b", &b)], &["--encoding", "utf-8"])
        .ok();
    let out = sb.out();
    let s = check_accounting(&out, &[("a", 7), ("b", 3)]);
    let reasons: Vec<String> = rejects(&out, "a").into_iter().map(|r| r.reason).collect();
    assert_eq!(
        reasons,
        [
            "ragged_row",
            "invalid_encoding",
            "missing_id",
            "duplicate_id",
            "no_token"
        ]
    );
    for code in [
        "ragged_row",
        "invalid_encoding",
        "missing_id",
        "duplicate_id",
        "no_token",
    ] {
        assert_eq!(party(&s, "a")["rejects_by_reason"][code], 1, "{code}");
    }
    assert_eq!(cluster_ids(&out, "a"), ["a1", "a7"]);
    assert_eq!(pairs(&out), pair_set(&[("a1", "b1"), ("a7", "b2")]));
}

// ---------------------------------------------------------------------------------------------
// 11. CP932
// ---------------------------------------------------------------------------------------------

fn cp932(text: &str) -> Vec<u8> {
    let (bytes, _, unmappable) = encoding_rs::SHIFT_JIS.encode(text);
    assert!(!unmappable, "not encodable in CP932: {text}");
    bytes.into_owned()
}

/// The same four people (plus one unmatched each) as a UTF-8 holder and a CP932 holder, with
/// spelling variants that normalize alike: half-width katakana, `男`/`女` for sex, slashed
/// dates. The CP932 names include trail bytes 0x5C (`ソ`, `表`) and an IBM extension (`髙`).
const UTF8_PEOPLE: &[&str] = &[
    "u1,山田 太郎,1970-01-01,M,I10",
    "u2,髙橋 ソウタ,1985-06-15,M,E11",
    "u3,表 花子,1990-12-31,F,J45",
    "u4,サトウ ジロウ,1962-02-28,M,C50",
    "u5,鈴木 一郎,1955-05-05,M,K20",
];
const CP932_PEOPLE: &[&str] = &[
    "s1,山田　太郎,1970/1/1,男,高血圧",
    "s2,髙橋 ソウタ,19850615,男性,糖尿病",
    "s3,表 花子,1990-12-31,女,喘息",
    "s4,ｻﾄｳ ｼﾞﾛｳ,1962-02-28,M,胃癌",
    "s5,田中 ソノ,1940-10-10,F,骨折",
];

#[test]
fn cp932_input_is_detected_and_gives_the_same_tokens_as_utf8() {
    let sb = Sandbox::new();
    let u = sb.write_lines("u.csv", HEADER, UTF8_PEOPLE);
    let mut text = String::from(HEADER);
    for row in CP932_PEOPLE {
        text.push_str("\r\n");
        text.push_str(row);
    }
    text.push_str("\r\n");
    let sjis = cp932(&text);
    assert!(std::str::from_utf8(&sjis).is_err(), "must not be UTF-8");
    let s = sb.write("s.csv", sjis);

    sb.link(&[("u", &u), ("s", &s)], &[]).ok();
    let out = sb.out();
    let summary = check_accounting(&out, &[("u", 5), ("s", 5)]);
    assert_eq!(party(&summary, "u")["encoding"], "utf-8");
    assert_eq!(party(&summary, "s")["encoding"], "cp932");
    assert_eq!(
        pairs(&out),
        pair_set(&[("u1", "s1"), ("u2", "s2"), ("u3", "s3"), ("u4", "s4")])
    );
    // Content is decoded and written as UTF-8.
    let joined = std::fs::read_to_string(out.join("joined.csv")).expect("joined.csv is UTF-8");
    for dx in ["高血圧", "糖尿病", "喘息", "胃癌", "骨折"] {
        assert!(joined.contains(dx), "{dx} missing from joined.csv");
    }

    // `--encoding` applies to every input: with `cp932`, a CP932 copy of the UTF-8 holder
    // gives the same links.
    let u_sjis = sb.write(
        "u-sjis.csv",
        cp932(&(HEADER.to_owned() + "\n" + &UTF8_PEOPLE.join("\n"))),
    );
    let out2 = sb.path("out-cp932");
    sb.link_with(
        &sb.path("schema.toml"),
        &out2,
        &[("s", &s), ("u", &u_sjis)],
        &["--encoding", "cp932"],
    )
    .ok();
    let summary2 = check_accounting(&out2, &[("s", 5), ("u", 5)]);
    assert_eq!(party(&summary2, "u")["encoding"], "cp932");
    let swapped: BTreeSet<(String, String)> =
        pairs(&out2).into_iter().map(|(s, u)| (u, s)).collect();
    assert_eq!(swapped, pairs(&out));

    // Read as UTF-8, the CP932 rows are rejected, not dropped and not mis-tokenized.
    let out3 = sb.path("out-utf8");
    sb.link_with(
        &sb.path("schema.toml"),
        &out3,
        &[("u", &u), ("s", &s)],
        &["--encoding", "utf-8"],
    )
    .ok();
    check_accounting(&out3, &[("u", 5), ("s", 5)]);
    let r = rejects(&out3, "s");
    assert!(r.iter().all(|r| r.reason == "invalid_encoding"), "{r:?}");
    assert_eq!(r.len(), 5);
    assert!(pairs(&out3).is_empty());
}

#[test]
fn bytes_invalid_in_utf8_and_cp932_need_an_explicit_encoding() {
    let sb = Sandbox::new();
    // 0xFF and 0xA0 are invalid in both UTF-8 and CP932.
    let mut bad = Vec::new();
    bad.extend_from_slice(b"id,name,dob,sex,dx\n");
    bad.extend_from_slice(b"x1,Taro Yamada,1970-01-01,M,I10\n");
    bad.extend_from_slice(b"x2,Hanako \xFF\xA0Sato,1980-02-02,F,E11\n");
    let bad = sb.write("bad.csv", bad);
    let b = sb.b();
    let run = sb.link(&[("x", &bad), ("b", &b)], &[]).failed();
    run.stderr_has(&[
        &bad.display().to_string(),
        "neither valid UTF-8 nor CP932",
        "--encoding",
    ]);
    no_summary(&sb.out());

    // As the message says: with an explicit encoding the row is rejected instead.
    for encoding in ["utf8", "cp932"] {
        let out = sb.path(&format!("out-{encoding}"));
        sb.link_with(
            &sb.path("schema.toml"),
            &out,
            &[("x", &bad), ("b", &b)],
            &["--encoding", encoding],
        )
        .ok();
        check_accounting(&out, &[("x", 2), ("b", 3)]);
        assert_eq!(
            rejects(&out, "x"),
            [reject(2, "x2", "invalid_encoding", "column name")],
            "{encoding}"
        );
        assert_eq!(pairs(&out), pair_set(&[("x1", "b1")]));
    }
}

// ---------------------------------------------------------------------------------------------
// 12. joined.csv carries only pseudonyms and content
// ---------------------------------------------------------------------------------------------

#[test]
fn joined_csv_has_only_pids_and_content() {
    let sb = Sandbox::new();
    let a_rows = [
        "a1,Taro Yamada,1970-01-01,M,I10",
        "a2,Hanako Sato,1980-02-02,F,E11",
        "a3,Ichiro Tanaka,1960-04-04,M,C50",
    ];
    let b_rows = [
        "b1,TARO  YAMADA,19700101,male,I11",
        "b2,Hanako Sato,1980/2/2,F,E12",
        "b3,Jiro Suzuki,1990-03-03,M,J45",
    ];
    let a = sb.write_lines("a.csv", HEADER, &a_rows);
    let b = sb.write_lines("b.csv", HEADER, &b_rows);
    sb.link(&[("a", &a), ("b", &b)], &[]).ok();
    let out = sb.out();
    check_accounting(&out, &[("a", 3), ("b", 3)]);

    let (header, rows) = read_csv(&out.join("joined.csv"));
    assert_eq!(header, ["pid", "a.dx", "b.dx"]);

    // Every identifier value of the inputs, raw and as the normalizers would write it.
    let mut identifiers: BTreeSet<String> = BTreeSet::new();
    for line in a_rows.iter().chain(&b_rows) {
        let cells: Vec<&str> = line.split(',').collect();
        identifiers.extend(cells[..4].iter().map(|c| c.to_string()));
    }
    identifiers.extend(strings(&[
        "taro yamada",
        "hanako sato",
        "ichiro tanaka",
        "jiro suzuki",
        "1970-01-01",
        "1980-02-02",
        "1960-04-04",
        "1990-03-03",
        "1",
        "2",
    ]));
    let content: BTreeSet<&str> = ["I10", "E11", "C50", "I11", "E12", "J45", ""].into();
    let text = std::fs::read_to_string(out.join("joined.csv")).unwrap();
    for id in &identifiers {
        if id.len() > 2 {
            assert!(!text.contains(id.as_str()), "joined.csv contains {id:?}");
        }
    }
    for row in &rows {
        assert!(is_pid(&row[0]), "pid {:?}", row[0]);
        for cell in row {
            assert!(
                !identifiers.contains(cell),
                "identifier {cell:?} in joined.csv"
            );
        }
        for cell in &row[1..] {
            assert!(content.contains(cell.as_str()), "unexpected cell {cell:?}");
        }
    }

    // One pid per person: linked records share a pid; joined.csv has one row per cluster.
    assert_eq!(pairs(&out), pair_set(&[("a1", "b1"), ("a2", "b2")]));
    let c = clusters(&out);
    let pid = |p: &str, id: &str| c[&(p.to_owned(), id.to_owned())].clone();
    assert_eq!(pid("a", "a1"), pid("b", "b1"));
    assert_eq!(pid("a", "a2"), pid("b", "b2"));
    let distinct: BTreeSet<&String> = c.values().collect();
    assert_eq!(distinct.len(), 4, "a1=b1, a2=b2, a3, b3");
    assert!(distinct.iter().all(|p| is_pid(p)));
    let joined_pids: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    let mut sorted = joined_pids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        joined_pids, sorted,
        "joined.csv is sorted by pid, one row each"
    );
    assert_eq!(
        joined_pids.iter().copied().collect::<BTreeSet<_>>(),
        distinct.iter().map(|s| s.as_str()).collect()
    );
    let row_of = |p: &str| rows.iter().find(|r| r[0] == p).unwrap().clone();
    assert_eq!(row_of(&pid("a", "a1"))[1..], strings(&["I10", "I11"]));
    assert_eq!(row_of(&pid("a", "a2"))[1..], strings(&["E11", "E12"]));
    assert_eq!(row_of(&pid("a", "a3"))[1..], strings(&["C50", ""]));
    assert_eq!(row_of(&pid("b", "b3"))[1..], strings(&["", "J45"]));

    // No output file carries anything token-sized (tokens are 32 bytes; pids 16).
    for f in [
        "clusters.csv",
        "pairs.csv",
        "joined.csv",
        "rejects-a.csv",
        "rejects-b.csv",
    ] {
        let (_, rows) = read_csv(&out.join(f));
        for cell in rows.iter().flatten() {
            assert!(cell.len() <= 32, "{f}: suspicious long cell {cell:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 13. eval
// ---------------------------------------------------------------------------------------------

#[test]
fn eval_scores_pairs_against_truth() {
    let sb = Sandbox::new();
    // Predicted: 3 distinct pairs (one listed twice), 2 of them true.
    let pairs = sb.write_lines(
        "pairs.csv",
        "id_a,id_b",
        &["a1,b1", "a2,b2", "a3,b9", "a3,b9"],
    );
    // Truth: 4 pairs; BOM and spaces are tolerated.
    let truth = sb.write(
        "truth.csv",
        "\u{feff}id_a,id_b\na1,b1\n a2 , b2 \na3,b3\na4,b4\n",
    );
    let run = sb
        .run([
            OsStr::new("eval"),
            "--pairs".as_ref(),
            pairs.as_os_str(),
            "--truth".as_ref(),
            truth.as_os_str(),
            "--json".as_ref(),
        ])
        .ok();
    let v: Value = serde_json::from_str(run.stdout.trim()).expect("JSON on stdout");
    // TP = {a1-b1, a2-b2} = 2, FP = {a3-b9} = 1, FN = {a3-b3, a4-b4} = 2.
    assert_eq!(v["true_positives"], 2);
    assert_eq!(v["false_positives"], 1);
    assert_eq!(v["false_negatives"], 2);
    let close = |k: &str, want: f64| {
        let got = v[k].as_f64().unwrap();
        assert!((got - want).abs() < 1e-12, "{k}: {got} vs {want}");
    };
    let (p, r) = (2.0 / 3.0, 2.0 / 4.0);
    close("precision", p);
    close("recall", r);
    close("f1", 2.0 * p * r / (p + r)); // = 4/7
    close("f1", 4.0 / 7.0);

    // The text form carries the same numbers.
    let text = sb
        .run([
            OsStr::new("eval"),
            "--pairs".as_ref(),
            pairs.as_os_str(),
            "--truth".as_ref(),
            truth.as_os_str(),
        ])
        .ok();
    assert!(
        text.stdout
            .contains("precision 0.6667  recall 0.5000  F1 0.5714"),
        "{}",
        text.stdout
    );
}

#[test]
fn eval_refuses_a_truth_file_with_the_wrong_header() {
    let sb = Sandbox::new();
    let pairs = sb.write_lines("pairs.csv", "id_a,id_b", &["a1,b1"]);
    let truth = sb.write_lines("truth.csv", "left,right", &["a1,b1"]);
    let run = sb
        .run([
            OsStr::new("eval"),
            "--pairs".as_ref(),
            pairs.as_os_str(),
            "--truth".as_ref(),
            truth.as_os_str(),
            "--json".as_ref(),
        ])
        .failed();
    run.stderr_has(&[
        &truth.display().to_string(),
        "expected header id_a,id_b or party_a,id_a,party_b,id_b",
        "found left,right",
    ]);
    assert!(
        run.stdout.is_empty(),
        "no scores on failure: {}",
        run.stdout
    );

    // Two-party pairs against a multi-party truth: refused, not scored as all-wrong.
    let multi = sb.write_lines("multi.csv", "party_a,id_a,party_b,id_b", &["a,a1,b,b1"]);
    let run = sb
        .run([
            OsStr::new("eval"),
            "--pairs".as_ref(),
            pairs.as_os_str(),
            "--truth".as_ref(),
            multi.as_os_str(),
        ])
        .failed();
    run.stderr_has(&["different layouts"]);
}

// ---------------------------------------------------------------------------------------------
// 14. Bad schema
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_schema_names_the_key_path_and_line() {
    let sb = Sandbox::new();
    let bad = SCHEMA.replace(
        r#"fields = ["name", "dob", "sex"]"#,
        r#"fields = ["name", "dob", "gender"]"#,
    );
    assert_ne!(bad, SCHEMA);
    let line = bad.lines().position(|l| l.contains("\"gender\"")).unwrap() + 1;
    let schema = sb.write("bad.toml", &bad);
    let a = sb.write_lines("a.csv", HEADER, &["a1,Taro Yamada,1970-01-01,M,I10"]);
    let b = sb.b();
    let run = sb
        .link_with(&schema, &sb.out(), &[("a", &a), ("b", &b)], &[])
        .failed();
    let want_line = format!("line {line}");
    run.stderr_has(&[
        &schema.display().to_string(),
        "recipes[0].fields[2]",
        &want_line,
        "gender",
    ]);
    no_summary(&sb.out());
    assert!(
        !sb.out().exists(),
        "nothing is written before the schema is valid"
    );

    // `renketsu schema` says the same.
    let run = sb.run([OsStr::new("schema"), schema.as_os_str()]).failed();
    run.stderr_has(&["recipes[0].fields[2]", &want_line]);

    // The good schema passes `renketsu schema`.
    let run = sb
        .run([OsStr::new("schema"), sb.path("schema.toml").as_os_str()])
        .ok();
    assert!(
        run.stdout.contains("name_dob_sex v1: name + dob + sex"),
        "{}",
        run.stdout
    );
}

// ---------------------------------------------------------------------------------------------
// Regressions: bugs found while writing these tests, now fixed
// ---------------------------------------------------------------------------------------------

#[test]
fn unterminated_quote_does_not_swallow_following_rows() {
    let sb = Sandbox::new();
    let a = sb.write_lines(
        "a.csv",
        HEADER,
        &[
            "a1,Taro Yamada,1970-01-01,M,I10",
            "a2,\"Hanako Sato,1980-02-02,F,E11", // quote never closed
            "a3,Jiro Suzuki,1990-03-03,M,J45",
            "a4,Ichiro Tanaka,1960-04-04,M,C50",
        ],
    );
    let b = sb.b();
    // The swallowed rows cannot be counted, so the run must stop with a clear error and
    // publish nothing (rather than succeed with a3 and a4 missing).
    let run = sb.link(&[("a", &a), ("b", &b)], &[]).failed();
    run.stderr_has(&[&a.display().to_string(), "quote", "data row 2"]);
    assert!(!sb.out().join("summary.json").exists());
}

#[test]
fn failed_run_leaves_no_partial_files() {
    let sb = Sandbox::new();
    let a = sb.b();
    let e = sb.write("empty.csv", "");
    sb.link(&[("a", &a), ("e", &e)], &[]).failed();
    let left: Vec<String> = std::fs::read_dir(sb.out())
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "left in --out after a failed run: {left:?}"
    );
}

#[test]
fn utf8_file_with_one_stray_byte_is_not_read_as_cp932() {
    let sb = Sandbox::new();
    let u = sb.write_lines(
        "u.csv",
        HEADER,
        &[
            "u1,ヤマダ タロウ,1970-01-01,M,I10",
            "u2,サトウ ハナコ,1980-02-02,F,E11",
        ],
    );
    let mut v = Vec::new();
    v.extend_from_slice(HEADER.as_bytes());
    v.extend_from_slice("\nv1,ヤマダ タロウ,1970-01-01,M,I10\n".as_bytes());
    // One Latin-1 byte (é) in a content column.
    v.extend_from_slice("v2,サトウ ハナコ,1980-02-02,F,Ren".as_bytes());
    v.extend_from_slice(b"\xE9e\n");
    let v = sb.write("v.csv", v);
    sb.link(&[("u", &u), ("v", &v)], &[]).ok();
    let s = check_accounting(&sb.out(), &[("u", 2), ("v", 2)]);
    assert_eq!(party(&s, "v")["encoding"], "utf-8");
    // The row with the stray byte is rejected; the other links.
    assert_eq!(rejects(&sb.out(), "v").len(), 1);
    assert_eq!(rejects(&sb.out(), "v")[0].reason, "invalid_encoding");
    assert!(pairs(&sb.out()).contains(&("u1".to_owned(), "v1".to_owned())));
}

#[test]
fn encoding_error_advice_is_accepted_by_the_cli() {
    let sb = Sandbox::new();
    let bad = sb.write(
        "bad.csv",
        b"id,name,dob,sex,dx\nx1,Bad \xFF Name,1970-01-01,M,I10\n",
    );
    let b = sb.b();
    let run = sb.link(&[("x", &bad), ("b", &b)], &[]).failed();
    run.stderr_has(&["--encoding utf-8"]);
    // Do what the message says.
    sb.link(&[("x", &bad), ("b", &b)], &["--encoding", "utf-8"])
        .ok();
    check_accounting(&sb.out(), &[("x", 1), ("b", 3)]);
}

#[test]
fn explain_prints_the_plan_and_reads_nothing() {
    let sb = Sandbox::new();
    let a = sb.write_lines("a.csv", HEADER, &["a1,Taro Yamada,1970-01-01,M,I10"]);
    let b = sb.b();
    let run = sb.link(&[("a", &a), ("b", &b)], &["--explain"]).ok();
    let plan = run.stdout;
    assert!(plan.contains("exact-token matching"), "{plan}");
    assert!(plan.contains("name_dob_sex (direct)"), "{plan}");
    assert!(plan.contains("holders: a, b"), "{plan}");
    // Nothing was written: no output directory.
    assert!(!sb.out().exists());
}
