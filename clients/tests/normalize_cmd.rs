//! `renketsu normalize`: the tab-separated `input<TAB>canonical` / `input<TAB>!reason` output,
//! from arguments and from a CSV column.

use std::process::Command;

fn renketsu(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_renketsu"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8(o.stdout).unwrap(),
        String::from_utf8(o.stderr).unwrap(),
    )
}

#[test]
fn values_from_arguments() {
    let (ok, out, _) = renketsu(&[
        "normalize",
        "--today",
        "2026-11-22",
        "--kind",
        "birth_date",
        "S45.03.15",
        "昭和45年3月15日",
        "3450315",
        "平成32年1月1日",
        "",
    ]);
    assert!(ok);
    assert_eq!(
        out,
        "S45.03.15\t1970-03-15\n昭和45年3月15日\t1970-03-15\n3450315\t1970-03-15\n平成32年1月1日\t!era_out_of_range\n\t!missing\n"
    );
    let (ok, out, _) = renketsu(&[
        "normalize",
        "--kind",
        "insurer_number",
        "33120015",
        "33120016",
        "１３１０１１",
    ]);
    assert!(ok);
    assert_eq!(
        out,
        "33120015\t33120015\n33120016\t!insurer_check_digit\n１３１０１１\t131011\n"
    );
}

#[test]
fn values_from_a_csv_column() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("h.csv");
    std::fs::write(&p, "id,kana\n1,キョウヘイ\n2,きよおへい\n3,山田\n").unwrap();
    let (ok, out, _) = renketsu(&[
        "normalize",
        "--kind",
        "kana_name_fuzzy",
        "--input",
        p.to_str().unwrap(),
        "--column",
        "kana",
    ]);
    assert!(ok);
    assert_eq!(
        out,
        "キョウヘイ\tキヨヘイ\nきよおへい\tキヨヘイ\n山田\t!invalid_kana\n"
    );
}

#[test]
fn unknown_kind_lists_the_kinds() {
    let (ok, _, err) = renketsu(&["normalize", "--kind", "kana", "x"]);
    assert!(!ok);
    assert!(
        err.contains("kana_name_fuzzy") && err.contains("insurer_number"),
        "{err}"
    );
}

/// `renketsu … | head`: a reader that closed the pipe ends the run quietly with status 141
/// (128 + SIGPIPE), not with a panic and a backtrace on stderr.
#[test]
fn a_closed_stdout_ends_the_run_quietly() {
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas/ndb.toml");
    // A command that writes through a buffered writer (an error) and one that prints.
    for args in [
        &["normalize", "--kind", "sex", "男", "女"][..],
        &["schema", schema][..],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = Command::new(env!("CARGO_BIN_EXE_renketsu"))
            .args(args)
            .stdout(writer)
            .output()
            .unwrap();
        let stderr = String::from_utf8(o.stderr).unwrap();
        assert_eq!(o.status.code(), Some(141), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}
