//! `renketsu clk encode` against the clkhash 0.18.3 fixtures in `../shared/vectors/clkhash`:
//! the output file must be byte-identical to clkhash's `clks.txt`; a row that cannot be
//! encoded leaves an empty line and a reject.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors/clkhash");
    assert!(p.is_dir(), "clkhash fixtures expected at {}", p.display());
    p
}

fn encode(case: &Path, input: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_renketsu"))
        .args(["clk", "encode", "--clkhash-schema"])
        .arg(case.join("schema.json"))
        .arg("--input")
        .arg(input)
        .arg("--out")
        .arg(out)
        .args(extra)
        .env("RENKETSU_CLK_SECRET", "renketsu interop secret")
        .output()
        .unwrap()
}

#[test]
fn byte_identical_to_clkhash_on_every_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let mut cases = 0;
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let case = entry.unwrap().path();
        if !case.join("schema.json").exists() {
            continue;
        }
        let out = dir.path().join("clks.txt");
        let o = encode(&case, &case.join("input.csv"), &out, &[]);
        assert!(
            o.status.success(),
            "{}: {}",
            case.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        let want = std::fs::read(case.join("clks.txt")).unwrap();
        assert!(!want.is_empty());
        assert_eq!(std::fs::read(&out).unwrap(), want, "{}", case.display());
        cases += 1;
    }
    assert_eq!(cases, 4);
}

#[test]
fn a_bad_row_leaves_an_empty_line_and_a_reject() {
    let dir = tempfile::tempdir().unwrap();
    let case = fixtures().join("febrl_doublehash_bitsperfeature");
    let text = std::fs::read_to_string(case.join("input.csv")).unwrap();
    let mut lines: Vec<&str> = text.lines().take(4).collect();
    lines.insert(2, "999,too,few");
    let input = dir.path().join("in.csv");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = dir.path().join("clks.txt");
    let o = encode(&case, &input, &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = std::fs::read_to_string(&out).unwrap();
    let got: Vec<&str> = got.lines().collect();
    let want = std::fs::read_to_string(case.join("clks.txt")).unwrap();
    let want: Vec<&str> = want.lines().collect();
    assert_eq!(got, [want[0], "", want[1], want[2]]);
    let rejects = std::fs::read_to_string(dir.path().join("clks.txt.rejects.csv")).unwrap();
    assert!(rejects.starts_with("row,reason\n2,"), "{rejects}");
}

#[test]
fn header_must_name_the_features() {
    let dir = tempfile::tempdir().unwrap();
    let case = fixtures().join("febrl_doublehash_bitsperfeature");
    let text = std::fs::read_to_string(case.join("input.csv")).unwrap();
    let input = dir.path().join("in.csv");
    std::fs::write(&input, text.replacen("given_name", "first", 1)).unwrap();
    let o = encode(&case, &input, &dir.path().join("c.txt"), &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--no-header-check"));
    let o = encode(
        &case,
        &input,
        &dir.path().join("c.txt"),
        &["--no-header-check"],
    );
    assert!(o.status.success());
}
