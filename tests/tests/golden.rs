//! Golden outputs: `renketsu link` on the shipped samples and the shared data sets, with a
//! fixed test key, gives the same files as when the goldens were made (issue 13: moving the
//! pipeline into the core engine must not change one byte of what users get).
//!
//! Each case's outputs are canonicalized, then hashed (SHA-256); `tests/golden/outputs.json`
//! holds the digests. Canonical forms:
//! - `pairs.csv`, `pair_scores.csv`, `rejects-*.csv`: the bytes as written.
//! - `clusters.csv`, `joined.csv`: pseudonyms are 128 random bits per run (SPEC.md §5.4), so
//!   each is replaced by `c<N>`, N numbering pseudonyms by first appearance in `clusters.csv`
//!   (record order, deterministic); `joined.csv`'s data rows, ordered by pseudonym, are then
//!   sorted.
//! - `summary.json`: `timings_ms` objects removed everywhere, file paths cut to their last
//!   component (the checkout's location differs between machines), written back pretty.
//!
//! To make new goldens after an intended change of output: `RENKETSU_BLESS_GOLDEN=1 cargo test
//! -p renketsu-e2e --test golden`, and say in the commit why the outputs changed.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use renketsu_e2e::{ok, repo, shared_data};
use sha2::{Digest as _, Sha256};

/// Project of the fixed test key in `tests/golden/keys`.
const PROJECT: &str = "golden";

struct Case {
    name: &'static str,
    schema: &'static str,
    /// `(party, path)`; a relative path is under the repository, `shared:` under ../shared/data.
    inputs: &'static [(&'static str, &'static str)],
    /// Tokenize each input with the fixed key first (`renketsu tokenize`, HMAC mode) and link
    /// the token files, as the linkage unit does.
    via_tokens: bool,
}

const CASES: &[Case] = &[
    Case {
        name: "samples-jp-person",
        schema: "schemas/jp-person.toml",
        inputs: &[("a", "samples/jp_a.csv"), ("b", "samples/jp_b.csv")],
        via_tokens: false,
    },
    Case {
        name: "samples-jp-person-exact",
        schema: "schemas/jp-person-exact.toml",
        inputs: &[("a", "samples/jp_a.csv"), ("b", "samples/jp_b.csv")],
        via_tokens: false,
    },
    Case {
        name: "samples-jp-person-clk",
        schema: "schemas/jp-person-clk.toml",
        inputs: &[("a", "samples/jp_a.csv"), ("b", "samples/jp_b.csv")],
        via_tokens: false,
    },
    Case {
        name: "samples-multi-ndb",
        schema: "schemas/ndb.toml",
        inputs: &[
            ("ehr", "samples/multi/ehr.csv"),
            ("ndb", "samples/multi/ndb.csv"),
            ("kaigo", "samples/multi/kaigo.csv"),
        ],
        via_tokens: false,
    },
    Case {
        name: "samples-multi-ndb-exact",
        schema: "schemas/ndb-exact.toml",
        inputs: &[
            ("ehr", "samples/multi/ehr.csv"),
            ("ndb", "samples/multi/ndb.csv"),
            ("kaigo", "samples/multi/kaigo.csv"),
        ],
        via_tokens: false,
    },
    Case {
        // The quickstart's multi-party flow links these token files (there made with the
        // custodian's VOPRF; the linkage unit's links equal `renketsu link` on the same
        // files, checked by the linkage-unit end-to-end test).
        name: "samples-multi-ndb-exact-tokens",
        schema: "schemas/ndb-exact.toml",
        inputs: &[
            ("ehr", "samples/multi/ehr.csv"),
            ("ndb", "samples/multi/ndb.csv"),
            ("kaigo", "samples/multi/kaigo.csv"),
        ],
        via_tokens: true,
    },
    Case {
        name: "samples-jp-person-clk-tokens",
        schema: "schemas/jp-person-clk.toml",
        inputs: &[("a", "samples/jp_a.csv"), ("b", "samples/jp_b.csv")],
        via_tokens: true,
    },
    Case {
        name: "jp-person",
        schema: "schemas/jp-person.toml",
        inputs: &[("a", "shared:jp/jp_a.csv"), ("b", "shared:jp/jp_b.csv")],
        via_tokens: false,
    },
    Case {
        name: "jp-person-generic",
        schema: "schemas/jp-person-generic.toml",
        inputs: &[("a", "shared:jp/jp_a.csv"), ("b", "shared:jp/jp_b.csv")],
        via_tokens: false,
    },
    Case {
        name: "jp-ins-raw-ndb",
        schema: "schemas/ndb.toml",
        inputs: &[
            ("a", "shared:jp_ins/jp_ins_a.csv"),
            ("b", "shared:jp_ins/jp_ins_b.csv"),
        ],
        via_tokens: false,
    },
    Case {
        name: "jp-ins-hash-only-ndb",
        schema: "schemas/ndb.toml",
        inputs: &[
            ("a", "shared:jp_ins/jp_ins_a.csv"),
            ("b", "shared:jp_ins/jp_ins_b_ndb.csv"),
        ],
        via_tokens: false,
    },
    Case {
        name: "jp-ins-hash-only-ndb-exact",
        schema: "schemas/ndb-exact.toml",
        inputs: &[
            ("a", "shared:jp_ins/jp_ins_a.csv"),
            ("b", "shared:jp_ins/jp_ins_b_ndb.csv"),
        ],
        via_tokens: false,
    },
    Case {
        name: "febrl4",
        schema: "schemas/febrl.toml",
        inputs: &[
            ("a", "shared:febrl/febrl4a.csv"),
            ("b", "shared:febrl/febrl4b.csv"),
        ],
        via_tokens: false,
    },
    Case {
        name: "febrl4-clk",
        schema: "schemas/febrl-clk.toml",
        inputs: &[
            ("a", "shared:febrl/febrl4a.csv"),
            ("b", "shared:febrl/febrl4b.csv"),
        ],
        via_tokens: false,
    },
    Case {
        name: "febrl4-scored",
        schema: "schemas/febrl-scored.toml",
        inputs: &[
            ("a", "shared:febrl/febrl4a.csv"),
            ("b", "shared:febrl/febrl4b.csv"),
        ],
        via_tokens: false,
    },
];

fn input_path(p: &str) -> PathBuf {
    match p.strip_prefix("shared:") {
        Some(rest) => shared_data().join(rest),
        None => repo().join(p),
    }
}

/// A temporary directory holding a copy of the fixed test key store.
fn key_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = repo().join("tests/golden/keys");
    let dst = dir.path().join("keys");
    copy_dir(&src, &dst);
    dir
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
        }
    }
}

/// Runs one case in `dir` and returns its output directory.
fn run_case(dir: &Path, case: &Case) -> PathBuf {
    let schema = repo().join(case.schema);
    let schema = schema.to_str().unwrap();
    let out = dir.join(format!("out-{}", case.name));
    let mut args: Vec<String> = [
        "link",
        "--quiet",
        "--today",
        "2026-11-22",
        "--project",
        PROJECT,
        "--schema",
        schema,
        "--out",
        out.to_str().unwrap(),
    ]
    .map(str::to_owned)
    .to_vec();
    for (party, path) in case.inputs {
        let path = input_path(path);
        let input = if case.via_tokens {
            let tokens = dir.join(format!("{}-{party}.tokens", case.name));
            ok(
                dir,
                &[
                    "tokenize",
                    "--quiet",
                    "--today",
                    "2026-11-22",
                    "--project",
                    PROJECT,
                    "--schema",
                    schema,
                    "--party",
                    party,
                    "--input",
                    path.to_str().unwrap(),
                    "--out",
                    tokens.to_str().unwrap(),
                ],
            );
            tokens.to_str().unwrap().to_owned()
        } else {
            format!("{party}={}", path.display())
        };
        args.push("--input".into());
        args.push(input);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(dir, &args);
    out
}

/// Pseudonym → `c<N>` by first appearance in clusters.csv.
fn pid_names(clusters: &str) -> HashMap<String, String> {
    let mut names = HashMap::new();
    for line in clusters.lines().skip(1) {
        let pid = line.rsplit(',').next().unwrap();
        let n = names.len();
        names
            .entry(pid.to_owned())
            .or_insert_with(|| format!("c{n}"));
    }
    names
}

fn canonical_clusters(text: &str, names: &HashMap<String, String>) -> String {
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        if i == 0 {
            out.push_str(line);
        } else {
            let (head, pid) = line.rsplit_once(',').unwrap();
            out.push_str(head);
            out.push(',');
            out.push_str(&names[pid]);
        }
        out.push('\n');
    }
    out
}

fn canonical_joined(text: &str, names: &HashMap<String, String>) -> String {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let mut rows: Vec<String> = lines
        .map(|l| {
            let (pid, rest) = l.split_once(',').unwrap_or((l, ""));
            let name = names
                .get(pid)
                .unwrap_or_else(|| panic!("joined.csv names a pseudonym not in clusters.csv"));
            format!("{name},{rest}")
        })
        .collect();
    rows.sort();
    let mut out = format!("{header}\n");
    for r in rows {
        out.push_str(&r);
        out.push('\n');
    }
    out
}

fn canonical_summary(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.remove("timings_ms");
            for (_, x) in m.iter_mut() {
                canonical_summary(x);
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(canonical_summary),
        serde_json::Value::String(s) if s.contains('/') => {
            *s = s.rsplit('/').next().unwrap().to_owned();
        }
        _ => {}
    }
}

/// File name → SHA-256 of its canonical form, for every output of one run.
fn digests(out: &Path) -> BTreeMap<String, String> {
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap();
    let clusters = read("clusters.csv");
    let names = pid_names(&clusters);
    let mut files = BTreeMap::new();
    for e in std::fs::read_dir(out).unwrap() {
        let name = e.unwrap().file_name().to_str().unwrap().to_owned();
        let canonical = match name.as_str() {
            "clusters.csv" => canonical_clusters(&clusters, &names),
            "joined.csv" => canonical_joined(&read(&name), &names),
            "summary.json" => {
                let mut v: serde_json::Value = serde_json::from_str(&read(&name)).unwrap();
                canonical_summary(&mut v);
                serde_json::to_string_pretty(&v).unwrap()
            }
            "pairs.csv" | "pair_scores.csv" => read(&name),
            n if n.starts_with("rejects-") => read(n),
            _ => continue,
        };
        files.insert(name, hex(&Sha256::digest(canonical.as_bytes())));
    }
    files
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn link_outputs_match_the_goldens() {
    let manifest = repo().join("tests/golden/outputs.json");
    let bless = std::env::var_os("RENKETSU_BLESS_GOLDEN").is_some();
    let dir = key_dir();
    let mut got: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for case in CASES {
        let out = run_case(dir.path(), case);
        got.insert(case.name.to_owned(), digests(&out));
    }
    if bless {
        let text = serde_json::to_string_pretty(&got).unwrap() + "\n";
        std::fs::write(&manifest, text).unwrap();
        return;
    }
    let want: BTreeMap<String, BTreeMap<String, String>> =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    let mut differ = Vec::new();
    for (case, files) in &want {
        let Some(g) = got.get(case) else {
            differ.push(format!("{case}: not run"));
            continue;
        };
        for (file, digest) in files {
            match g.get(file) {
                Some(d) if d == digest => {}
                Some(_) => differ.push(format!("{case}/{file}: differs")),
                None => differ.push(format!("{case}/{file}: not written")),
            }
        }
        for file in g.keys().filter(|f| !files.contains_key(*f)) {
            differ.push(format!("{case}/{file}: written, not in the goldens"));
        }
    }
    assert!(
        differ.is_empty(),
        "outputs differ from tests/golden/outputs.json:\n  {}",
        differ.join("\n  ")
    );
}
