//! Parquet inputs (cargo feature `parquet`): a holder's `.parquet` file read as the CSV text
//! the engine's ingest stage reads, so that a Parquet input links exactly as the same data in
//! a CSV does (same column checks, reject codes and tokens).
//!
//! Each value becomes its text: strings as they are, integers and floats in decimal, booleans
//! `true`/`false`, dates (`date32`) `YYYY-MM-DD`, nulls empty. Other column types (binary,
//! timestamps, nested, dictionaries) are refused with the column's name and type. Row groups
//! are read one record batch at a time: memory does not grow with the file. Compression:
//! uncompressed or Snappy (pyarrow's and pandas' default); zstd, gzip, brotli and lz4 are
//! left out of the build to keep it slim.
//!
//! Outputs: [`csv_to_parquet`] copies an output CSV (`pairs.csv`, `clusters.csv`,
//! `joined.csv`) into a Parquet file of string columns (Snappy), for `renketsu link
//! --parquet-out`.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use anyhow::{Context, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

/// A Parquet file as a stream of UTF-8 CSV bytes (header row first).
pub struct ParquetCsv {
    batches: ParquetRecordBatchReader,
    label: String,
    names: Vec<String>,
    buf: Vec<u8>,
    pos: usize,
}

impl ParquetCsv {
    /// Opens `path` and checks that every column has a type it can write as text.
    ///
    /// # Errors
    /// The file cannot be opened, is not Parquet, or has a column of an unsupported type.
    pub fn open(path: &Path) -> Result<Self> {
        let label = path.display().to_string();
        let file = File::open(path).with_context(|| format!("cannot open {label}"))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .with_context(|| format!("{label}: not a readable Parquet file"))?;
        let schema = builder.schema().clone();
        for f in schema.fields() {
            if !supported(f.data_type()) {
                anyhow::bail!(
                    "{label}: column {:?} has type {}; Parquet inputs take strings, integers, floats, booleans and dates",
                    f.name(),
                    f.data_type()
                );
            }
        }
        let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let batches = builder
            .with_batch_size(8192)
            .build()
            .with_context(|| format!("{label}: cannot read"))?;
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(&names)?;
        let buf = w.into_inner().context("CSV header")?;
        Ok(Self {
            batches,
            label,
            names,
            buf,
            pos: 0,
        })
    }

    fn fill(&mut self) -> io::Result<bool> {
        let Some(batch) = self.batches.next() else {
            return Ok(false);
        };
        let batch = batch.map_err(|e| io::Error::other(format!("{}: {e}", self.label)))?;
        self.buf.clear();
        self.pos = 0;
        write_batch(&batch, &self.names, &mut self.buf)?;
        Ok(true)
    }
}

impl Read for ParquetCsv {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            if !self.fill()? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn supported(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Float32
            | DataType::Float64
            | DataType::Boolean
            | DataType::Date32
            | DataType::Null
    )
}

fn write_batch(batch: &RecordBatch, names: &[String], out: &mut Vec<u8>) -> io::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    let mut row = vec![String::new(); batch.num_columns()];
    for r in 0..batch.num_rows() {
        for (c, cell) in row.iter_mut().enumerate() {
            cell.clear();
            text(batch.column(c).as_ref(), r, cell).map_err(|t| {
                io::Error::other(format!("column {:?}: unsupported type {t}", names[c]))
            })?;
        }
        w.write_record(&row)?;
    }
    w.flush()
}

/// Appends the text of `a[row]` to `out` (nothing for a null); `Err` with the type if
/// unsupported.
fn text(a: &dyn Array, row: usize, out: &mut String) -> Result<(), DataType> {
    use std::fmt::Write as _;
    if a.is_null(row) {
        return Ok(());
    }
    macro_rules! num {
        ($t:ty) => {{
            let _ = write!(out, "{}", a.as_primitive::<$t>().value(row));
        }};
    }
    match a.data_type() {
        DataType::Utf8 => out.push_str(a.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => out.push_str(a.as_string::<i64>().value(row)),
        DataType::Utf8View => out.push_str(a.as_string_view().value(row)),
        DataType::Int8 => num!(Int8Type),
        DataType::Int16 => num!(Int16Type),
        DataType::Int32 => num!(Int32Type),
        DataType::Int64 => num!(Int64Type),
        DataType::UInt8 => num!(UInt8Type),
        DataType::UInt16 => num!(UInt16Type),
        DataType::UInt32 => num!(UInt32Type),
        DataType::UInt64 => num!(UInt64Type),
        DataType::Float32 => num!(Float32Type),
        DataType::Float64 => num!(Float64Type),
        DataType::Boolean => out.push_str(if a.as_boolean().value(row) {
            "true"
        } else {
            "false"
        }),
        DataType::Date32 => {
            let days = a
                .as_primitive::<arrow_array::types::Date32Type>()
                .value(row);
            let (y, m, d) = civil_from_days(i64::from(days));
            let _ = write!(out, "{y:04}-{m:02}-{d:02}");
        }
        DataType::Null => {}
        t => return Err(t.clone()),
    }
    Ok(())
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Writes the CSV `src` (UTF-8, header row) as the Parquet file `dst`: one nullable string
/// column per CSV column, every value as its text (empty stays empty), Snappy, row groups of
/// at most 65,536 rows. Written under a temporary name and renamed into place.
///
/// # Errors
/// The CSV cannot be read or the Parquet file cannot be written.
pub fn csv_to_parquet(src: &Path, dst: &Path) -> Result<()> {
    use std::sync::Arc;

    use arrow_array::ArrayRef;
    use arrow_array::builder::StringBuilder;
    use arrow_schema::{Field, Schema};
    use parquet::arrow::ArrowWriter;
    use parquet::basic::Compression;
    use parquet::file::properties::WriterProperties;

    const BATCH: usize = 65_536;
    let mut rdr =
        csv::Reader::from_path(src).with_context(|| format!("cannot open {}", src.display()))?;
    let names: Vec<String> = rdr.headers()?.iter().map(str::to_owned).collect();
    let schema = Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(n, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let tmp = dst.with_extension("parquet.tmp");
    let file = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut w = ArrowWriter::try_new(file, schema.clone(), Some(props))?;
    let mut builders: Vec<StringBuilder> = names.iter().map(|_| StringBuilder::new()).collect();
    let mut rows = 0;
    let flush = |builders: &mut [StringBuilder], w: &mut ArrowWriter<File>| -> Result<()> {
        let cols: Vec<ArrayRef> = builders
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        w.write(&RecordBatch::try_new(schema.clone(), cols)?)?;
        Ok(())
    };
    let mut rec = csv::StringRecord::new();
    while rdr.read_record(&mut rec)? {
        for (b, v) in builders.iter_mut().zip(rec.iter()) {
            b.append_value(v);
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::civil_from_days;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-25_567), (1900, 1, 1));
        assert_eq!(civil_from_days(20_414), (2025, 11, 22));
    }
}
