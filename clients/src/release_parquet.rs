//! `renketsu fetch --format parquet` (cargo feature `parquet`): a release's CSV tables
//! (`joined.csv`, `long.csv`, `link_probability.csv`) written again as Parquet with Arrow
//! types, so that PyArrow, pandas and Spark read dates as dates and numbers as numbers.
//!
//! A column's type is decided from all its cells (a first pass over the CSV; the second
//! writes): empty cells are nulls; a column whose other cells are all
//!
//! * canonical integers (`0`, `-12`, `2024`: no sign `+`, no leading zero, fits `i64`) is
//!   `int64`;
//! * `true`/`false` is `bool`;
//! * ISO dates `YYYY-MM-DD` (a real calendar day) is `date32`;
//! * decimal numbers (digits, an optional `-`, one `.` with digits on both sides, no leading
//!   zero before other digits) is `float64`;
//!
//! and every other column (codes with leading zeros such as postcodes and ids, text) is
//! `string`. `pid` and `holder` are always strings, never null. A column with no values at
//! all is a string column of nulls. Values are written exactly: an integer or decimal
//! prints back as the CSV's text (decimals up to float64's 15 significant digits).
//! Memory does not grow with the release: rows are written in row groups of 65,536.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow_array::builder::{
    BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, StringBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

/// The Arrow type of a release column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `int64`.
    Int,
    /// `float64`.
    Float,
    /// `bool`.
    Bool,
    /// `date32` (days since 1970-01-01).
    Date,
    /// `string`.
    Text,
}

impl Kind {
    /// The Arrow type's name (`release.json` lists each column's).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Int => "int64",
            Kind::Float => "float64",
            Kind::Bool => "bool",
            Kind::Date => "date32",
            Kind::Text => "string",
        }
    }

    fn data_type(self) -> DataType {
        match self {
            Kind::Int => DataType::Int64,
            Kind::Float => DataType::Float64,
            Kind::Bool => DataType::Boolean,
            Kind::Date => DataType::Date32,
            Kind::Text => DataType::Utf8,
        }
    }
}

/// Canonical decimal integer text that fits `i64`.
fn int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
        || s == "-0"
    {
        return None;
    }
    s.parse().ok()
}

/// Plain decimal text (`-?D+.D+`, no leading zero before another digit) of at most 15
/// significant digits, so that the float64 prints back as the same number.
fn float(s: &str) -> Option<f64> {
    let body = s.strip_prefix('-').unwrap_or(s);
    let (i, f) = body.split_once('.')?;
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    if !digits(i) || !digits(f) || (i.len() > 1 && i.starts_with('0')) {
        return None;
    }
    let significant = format!("{i}{f}").trim_start_matches('0').len();
    if significant > 15 {
        return None;
    }
    s.parse().ok()
}

/// Days since 1970-01-01 of an ISO date `YYYY-MM-DD` that exists (proleptic Gregorian;
/// H. Hinnant's `days_from_civil`).
fn date(s: &str) -> Option<i32> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = &s[r];
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())
            .flatten()
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let last = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if d < 1 || d > last {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    i32::try_from(era * 146_097 + doe - 719_468).ok()
}

/// The narrowest kind that takes every non-empty cell of a column, given the kinds still
/// possible (`Int`, `Float`, `Bool`, `Date` as flags) after the cells seen so far.
#[derive(Clone, Copy, Debug)]
struct Possible {
    int: bool,
    float: bool,
    bool: bool,
    date: bool,
    any: bool,
}

impl Possible {
    const ALL: Self = Self {
        int: true,
        float: true,
        bool: true,
        date: true,
        any: false,
    };

    fn see(&mut self, v: &str) {
        if v.is_empty() {
            return;
        }
        self.any = true;
        let is_int = int(v).is_some();
        self.int &= is_int;
        // A float column may hold integers too (`3` and `2.5`).
        self.float &= is_int || float(v).is_some();
        self.bool &= v == "true" || v == "false";
        self.date &= date(v).is_some();
    }

    fn kind(self) -> Kind {
        if !self.any {
            Kind::Text
        } else if self.int {
            Kind::Int
        } else if self.float {
            Kind::Float
        } else if self.bool {
            Kind::Bool
        } else if self.date {
            Kind::Date
        } else {
            Kind::Text
        }
    }
}

/// Column kinds of the CSV `src`: `pid` and `holder` are text; others as the module says.
///
/// # Errors
/// The CSV cannot be read.
pub(crate) fn infer(src: &Path) -> Result<Vec<(String, Kind)>> {
    let mut rdr =
        csv::Reader::from_path(src).with_context(|| format!("cannot open {}", src.display()))?;
    let names: Vec<String> = rdr.headers()?.iter().map(str::to_owned).collect();
    let mut possible = vec![Possible::ALL; names.len()];
    let mut rec = csv::StringRecord::new();
    while rdr.read_record(&mut rec)? {
        for (p, v) in possible.iter_mut().zip(rec.iter()) {
            p.see(v);
        }
    }
    Ok(names
        .into_iter()
        .zip(possible)
        .map(|(n, p)| {
            let k = if n == "pid" || n == "holder" {
                Kind::Text
            } else {
                p.kind()
            };
            (n, k)
        })
        .collect())
}

enum Builder {
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Date(Date32Builder),
    Text(StringBuilder, bool),
}

impl Builder {
    fn new(kind: Kind, nullable: bool) -> Self {
        match kind {
            Kind::Int => Self::Int(Int64Builder::new()),
            Kind::Float => Self::Float(Float64Builder::new()),
            Kind::Bool => Self::Bool(BooleanBuilder::new()),
            Kind::Date => Self::Date(Date32Builder::new()),
            Kind::Text => Self::Text(StringBuilder::new(), nullable),
        }
    }

    /// Appends `v` (checked by [`infer`], so the parses succeed).
    fn push(&mut self, v: &str) -> Result<()> {
        let bad = || anyhow::anyhow!("a value changed its type between the two passes");
        match self {
            Self::Text(b, nullable) => {
                if v.is_empty() && *nullable {
                    b.append_null();
                } else {
                    b.append_value(v);
                }
            }
            _ if v.is_empty() => match self {
                Self::Int(b) => b.append_null(),
                Self::Float(b) => b.append_null(),
                Self::Bool(b) => b.append_null(),
                Self::Date(b) => b.append_null(),
                Self::Text(..) => unreachable!("handled above"),
            },
            Self::Int(b) => b.append_value(int(v).ok_or_else(bad)?),
            Self::Float(b) => {
                b.append_value(float(v).or(int(v).map(|i| i as f64)).ok_or_else(bad)?)
            }
            Self::Bool(b) => b.append_value(v == "true"),
            Self::Date(b) => b.append_value(date(v).ok_or_else(bad)?),
        }
        Ok(())
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Int(b) => Arc::new(b.finish()),
            Self::Float(b) => Arc::new(b.finish()),
            Self::Bool(b) => Arc::new(b.finish()),
            Self::Date(b) => Arc::new(b.finish()),
            Self::Text(b, _) => Arc::new(b.finish()),
        }
    }
}

/// Writes the release table `src` (CSV, header row) as the Parquet file `dst` with the
/// column kinds of [`infer`], Snappy, row groups of at most 65,536 rows; under a temporary
/// name renamed into place. Returns the kinds.
///
/// # Errors
/// The CSV cannot be read (or has a short row), or the Parquet file cannot be written.
pub(crate) fn write(src: &Path, dst: &Path) -> Result<Vec<(String, Kind)>> {
    const BATCH: usize = 65_536;
    let kinds = infer(src)?;
    let schema = Arc::new(Schema::new(
        kinds
            .iter()
            .map(|(n, k)| {
                let required = n == "pid" || n == "holder";
                Field::new(n, k.data_type(), !required)
            })
            .collect::<Vec<_>>(),
    ));
    let new_builders = || -> Vec<Builder> {
        kinds
            .iter()
            .map(|(n, k)| Builder::new(*k, n != "pid" && n != "holder"))
            .collect()
    };
    let mut builders = new_builders();
    let mut rdr =
        csv::Reader::from_path(src).with_context(|| format!("cannot open {}", src.display()))?;
    let tmp = dst.with_extension("parquet.partial");
    let file = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut w = ArrowWriter::try_new(file, schema.clone(), Some(props))?;
    let flush = |builders: &mut [Builder], w: &mut ArrowWriter<File>| -> Result<()> {
        let cols: Vec<ArrayRef> = builders.iter_mut().map(Builder::finish).collect();
        w.write(&RecordBatch::try_new(schema.clone(), cols)?)?;
        Ok(())
    };
    let mut rows = 0;
    let mut rec = csv::StringRecord::new();
    while rdr.read_record(&mut rec)? {
        if rec.len() != builders.len() {
            bail!(
                "{}: a row has {} cells, the header {}",
                src.display(),
                rec.len(),
                builders.len()
            );
        }
        for (b, v) in builders.iter_mut().zip(rec.iter()) {
            b.push(v)?;
        }
        rows += 1;
        if rows == BATCH {
            flush(&mut builders, &mut w)?;
            rows = 0;
        }
    }
    if rows > 0 || w.flushed_row_groups().is_empty() {
        flush(&mut builders, &mut w)?;
    }
    w.close()?;
    std::fs::rename(&tmp, dst)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), dst.display()))?;
    Ok(kinds)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use arrow_array::cast::AsArray;
    use arrow_array::types::{Date32Type, Float64Type, Int64Type};
    use arrow_array::{Array, BooleanArray};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;

    #[test]
    fn cells_parse_only_in_their_canonical_form() {
        assert_eq!(int("2024"), Some(2024));
        assert_eq!(int("-7"), Some(-7));
        assert_eq!(int("0"), Some(0));
        for s in [
            "0601234",
            "+5",
            "-0",
            "1e3",
            "",
            "-",
            "99999999999999999999",
        ] {
            assert_eq!(int(s), None, "{s}");
        }
        assert_eq!(float("2.5"), Some(2.5));
        assert_eq!(float("-0.125"), Some(-0.125));
        for s in ["1.", ".5", "01.5", "1e3", "1.2.3", "1.0000000000000001"] {
            assert_eq!(float(s), None, "{s}");
        }
        assert_eq!(date("1970-01-01"), Some(0));
        assert_eq!(date("2000-02-29"), Some(11_016));
        assert_eq!(date("1900-01-01"), Some(-25_567));
        assert_eq!(date("2025-11-22"), Some(20_414));
        for s in [
            "1900-02-29",
            "2023-13-01",
            "2023-04-31",
            "2023-4-01",
            "20230401",
        ] {
            assert_eq!(date(s), None, "{s}");
        }
    }

    /// A release table with every kind of column, nulls among them, goes to Parquet with
    /// the types of its values, and every value reads back as the CSV's text.
    #[test]
    fn a_release_table_gets_arrow_types_and_keeps_every_value() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("long.csv");
        let mut f = File::create(&src).unwrap();
        writeln!(
            f,
            "pid,holder,ehr.birth_date,ehr.postcode,ehr.visits,ehr.weight,ehr.alive,ehr.note,kaigo.level"
        )
        .unwrap();
        writeln!(f, "p1,ehr,1950-03-04,0600001,3,61.5,true,a,").unwrap();
        writeln!(f, "p1,kaigo,,,,,,,").unwrap();
        writeln!(f, "p2,ehr,2001-12-31,1000005,12,70,false,\"b, c\",").unwrap();
        drop(f);
        let dst = dir.path().join("long.parquet");
        let kinds = write(&src, &dst).unwrap();
        let k: Vec<Kind> = kinds.iter().map(|(_, k)| *k).collect();
        assert_eq!(
            k,
            [
                Kind::Text,
                Kind::Text,
                Kind::Date,
                Kind::Text,
                Kind::Int,
                Kind::Float,
                Kind::Bool,
                Kind::Text,
                Kind::Text
            ]
        );
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&dst).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
        assert_eq!(batches.len(), 1);
        let b = &batches[0];
        assert_eq!(b.num_rows(), 3);
        assert!(!b.schema().field(0).is_nullable());
        assert_eq!(b.column(0).as_string::<i32>().value(2), "p2");
        let dates = b.column(2).as_primitive::<Date32Type>();
        assert_eq!(
            (dates.value(0), dates.is_null(1), dates.value(2)),
            (
                date("1950-03-04").unwrap(),
                true,
                date("2001-12-31").unwrap()
            )
        );
        assert_eq!(b.column(3).as_string::<i32>().value(0), "0600001");
        assert!(b.column(3).is_null(1));
        let visits = b.column(4).as_primitive::<Int64Type>();
        assert_eq!((visits.value(0), visits.value(2)), (3, 12));
        let weight = b.column(5).as_primitive::<Float64Type>();
        assert_eq!((weight.value(0), weight.value(2)), (61.5, 70.0));
        let alive: &BooleanArray = b.column(6).as_boolean();
        assert!(alive.value(0) && !alive.value(2) && alive.is_null(1));
        assert_eq!(b.column(7).as_string::<i32>().value(2), "b, c");
        assert_eq!(b.column(8).null_count(), 3);
    }
}
