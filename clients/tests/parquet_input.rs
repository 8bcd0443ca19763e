//! `renketsu link --input a=x.parquet` (cargo feature `parquet`): the same holders' data as
//! Parquet (all-string columns, and typed columns: integer ids, `date32` birth dates, nulls
//! for empty values) links exactly as the CSVs do: byte-identical `pairs.csv`, the same
//! clusters (pseudonyms are random per run, so compared as partitions), the same counts.
#![cfg(feature = "parquet")]

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use arrow_array::{ArrayRef, Date32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn renketsu(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_renketsu"))
        .args(args)
        .env_remove("RENKETSU_KEK")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "renketsu {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header = r.headers().unwrap().iter().map(str::to_owned).collect();
    let rows = r
        .records()
        .map(|rec| rec.unwrap().iter().map(str::to_owned).collect())
        .collect();
    (header, rows)
}

fn days(date: &str) -> i32 {
    // YYYY-MM-DD → days since 1970-01-01 (the inverse the reader applies).
    let p: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (y, m, d) = (p[0] - i64::from(p[1] <= 2), p[1], p[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    i32::try_from(era * 146_097 + doe - 719_468).unwrap()
}

fn iso_date(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

fn plain_int(v: &str) -> bool {
    v.parse::<i64>().is_ok_and(|n| n.to_string() == v)
}

/// Writes the CSV at `src` as Parquet; `typed`: an `id` column of plain integers as int64, a
/// `birth_date` column of `YYYY-MM-DD` dates (or empty) as date32 and empty strings as
/// nulls, else every column a string. Returns how many columns were written typed.
fn to_parquet(src: &Path, dst: &Path, typed: bool) -> usize {
    let (header, rows) = read_csv(src);
    let mut fields = Vec::new();
    let mut cols: Vec<ArrayRef> = Vec::new();
    let mut n_typed = 0;
    for (c, name) in header.iter().enumerate() {
        let vals = || rows.iter().map(|r| r[c].as_str());
        let kind = match name.as_str() {
            "id" if typed && vals().all(plain_int) => DataType::Int64,
            "birth_date" if typed && vals().all(|v| v.is_empty() || iso_date(v)) => {
                DataType::Date32
            }
            _ => DataType::Utf8,
        };
        let a: ArrayRef = match kind {
            DataType::Int64 => {
                Arc::new(Int64Array::from_iter(vals().map(|v| v.parse::<i64>().ok())))
            }
            DataType::Date32 => Arc::new(Date32Array::from_iter(
                vals().map(|v| (!v.is_empty()).then(|| days(v))),
            )),
            _ if typed => Arc::new(StringArray::from_iter(
                vals().map(|v| (!v.is_empty()).then_some(v)),
            )),
            _ => Arc::new(StringArray::from_iter_values(vals())),
        };
        n_typed += usize::from(kind != DataType::Utf8);
        fields.push(Field::new(name, kind, true));
        cols.push(a);
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(1000))
        .build();
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(dst).unwrap(), schema, Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    n_typed
}

fn partition(clusters: &Path) -> BTreeSet<BTreeSet<(String, String)>> {
    let (_, rows) = read_csv(clusters);
    let mut by: HashMap<String, BTreeSet<(String, String)>> = HashMap::new();
    for r in rows {
        by.entry(r[2].clone())
            .or_default()
            .insert((r[0].clone(), r[1].clone()));
    }
    by.into_values().collect()
}

fn link(dir: &Path, schema: &str, a: &Path, b: &Path, out: &str) -> PathBuf {
    let out = dir.join(out);
    let keys = dir.join("keys");
    renketsu(&[
        "link",
        "-q",
        "--project",
        "p",
        "--key-store",
        keys.to_str().unwrap(),
        "--today",
        "2026-11-22",
        "--schema",
        repo().join(schema).to_str().unwrap(),
        "--input",
        &format!("a={}", a.display()),
        "--input",
        &format!("b={}", b.display()),
        "--out",
        out.to_str().unwrap(),
    ]);
    out
}

fn same_as_csv(schema: &str, a: &Path, b: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    renketsu(&[
        "keys",
        "init",
        "--project",
        "p",
        "--key-store",
        d.join("keys").to_str().unwrap(),
    ]);
    let csv = link(d, schema, a, b, "csv");
    let want_pairs = std::fs::read(csv.join("pairs.csv")).unwrap();
    assert!(want_pairs.iter().filter(|b| **b == b'\n').count() > 100);
    for typed in [false, true] {
        let (pa, pb) = (
            d.join(format!("a{typed}.parquet")),
            d.join(format!("b{typed}.parquet")),
        );
        let n = to_parquet(a, &pa, typed) + to_parquet(b, &pb, typed);
        assert_eq!(n > 0, typed, "typed columns written");
        let pq = link(d, schema, &pa, &pb, &format!("parquet-{typed}"));
        assert_eq!(
            std::fs::read(pq.join("pairs.csv")).unwrap(),
            want_pairs,
            "{schema} typed={typed}"
        );
        assert_eq!(
            partition(&pq.join("clusters.csv")),
            partition(&csv.join("clusters.csv")),
            "{schema} typed={typed}"
        );
        for f in ["rejects-a.csv", "rejects-b.csv"] {
            assert_eq!(
                std::fs::read(pq.join(f)).unwrap(),
                std::fs::read(csv.join(f)).unwrap(),
                "{f} typed={typed}"
            );
        }
    }
}

#[test]
fn parquet_links_as_the_csv_samples() {
    let s = repo().join("samples");
    same_as_csv(
        "schemas/jp-person.toml",
        &s.join("jp_a.csv"),
        &s.join("jp_b.csv"),
    );
}

#[test]
fn parquet_links_as_the_csv_jp() {
    let d = repo().join("../shared/data/jp");
    assert!(d.is_dir(), "{} expected", d.display());
    same_as_csv(
        "schemas/jp-person-exact.toml",
        &d.join("jp_a.csv"),
        &d.join("jp_b.csv"),
    );
}

/// The rows of a Parquet file of string columns (nulls as empty), header first.
fn parquet_rows(path: &Path) -> Vec<Vec<String>> {
    use arrow_array::Array as _;
    use arrow_array::cast::AsArray;
    let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(path).unwrap(),
    )
    .unwrap();
    let mut out = vec![
        b.schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect::<Vec<_>>(),
    ];
    for batch in b.build().unwrap() {
        let batch = batch.unwrap();
        for r in 0..batch.num_rows() {
            out.push(
                batch
                    .columns()
                    .iter()
                    .map(|c| {
                        let s = c.as_string::<i32>();
                        if s.is_null(r) {
                            String::new()
                        } else {
                            s.value(r).to_owned()
                        }
                    })
                    .collect(),
            );
        }
    }
    out
}

#[test]
fn parquet_out_holds_the_csv_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let keys = d.join("keys");
    renketsu(&[
        "keys",
        "init",
        "--project",
        "p",
        "--key-store",
        keys.to_str().unwrap(),
    ]);
    let s = repo().join("samples");
    let out = d.join("o");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "link",
            "-q",
            "--project",
            "p",
            "--key-store",
            keys.to_str().unwrap(),
            "--today",
            "2026-11-22",
            "--out",
            out.to_str().unwrap(),
        ];
        let schema = repo().join("schemas/jp-person.toml");
        let (a, b) = (
            format!("a={}", s.join("jp_a.csv").display()),
            format!("b={}", s.join("jp_b.csv").display()),
        );
        args.extend([
            "--schema",
            schema.to_str().unwrap(),
            "--input",
            &a,
            "--input",
            &b,
        ]);
        args.extend(extra);
        renketsu(&args);
    };
    run(&["--parquet-out"]);
    for name in ["pairs", "clusters", "joined"] {
        let (header, rows) = read_csv(&out.join(format!("{name}.csv")));
        let mut want = vec![header];
        want.extend(rows);
        assert!(want.len() > 100, "{name}");
        assert_eq!(
            parquet_rows(&out.join(format!("{name}.parquet"))),
            want,
            "{name}"
        );
    }
    // A run without the flag leaves no Parquet copy of an earlier run behind.
    run(&[]);
    assert!(!out.join("pairs.parquet").exists());
}

#[test]
fn unsupported_column_types_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.parquet");
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("blob", DataType::Binary, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["1"])) as ArrayRef,
            Arc::new(arrow_array::BinaryArray::from(vec![&b"x"[..]])),
        ],
    )
    .unwrap();
    let mut w = ArrowWriter::try_new(std::fs::File::create(&p).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let keys = dir.path().join("keys");
    renketsu(&[
        "keys",
        "init",
        "--project",
        "p",
        "--key-store",
        keys.to_str().unwrap(),
    ]);
    let out = Command::new(env!("CARGO_BIN_EXE_renketsu"))
        .args(["link", "--project", "p", "--key-store"])
        .arg(dir.path().join("keys"))
        .args(["--schema"])
        .arg(repo().join("schemas/jp-person.toml"))
        .arg("--input")
        .arg(format!("a={}", p.display()))
        .arg("--input")
        .arg(format!("b={}", p.display()))
        .arg("--out")
        .arg(dir.path().join("o"))
        .env_remove("RENKETSU_KEK")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"blob\"") && err.contains("Binary"), "{err}");
}
