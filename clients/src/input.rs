//! Opening a holder's CSV for the core's ingest stage ([`renketsu_linkage::ingest`]): the
//! command line's encoding choice and the file.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};
use renketsu_linkage::ingest::{CsvSource, EncodingChoice};

/// Text encoding of an input file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EncodingArg {
    /// Per file, from its first MiB: UTF-8 if it starts with a BOM or is (almost all) valid
    /// UTF-8, else CP932 if it decodes cleanly as CP932, else an error asking for `--encoding`.
    Auto,
    /// UTF-8 (a leading BOM is skipped).
    #[value(name = "utf-8", alias = "utf8")]
    Utf8,
    /// CP932 / Windows-31J, Microsoft's Shift_JIS, as Japanese hospital systems export.
    #[value(name = "cp932", aliases = ["shift_jis", "sjis", "windows-31j"])]
    Cp932,
}

impl From<EncodingArg> for EncodingChoice {
    fn from(a: EncodingArg) -> Self {
        match a {
            EncodingArg::Auto => Self::Auto,
            EncodingArg::Utf8 => Self::Utf8,
            EncodingArg::Cp932 => Self::Cp932,
        }
    }
}

/// Opens a holder's CSV: the encoding chosen as `encoding` says, the header read.
///
/// # Errors
/// The file cannot be opened or read, or its header is not usable
/// ([`renketsu_linkage::ingest::IngestError`]).
pub fn open_csv(path: &Path, encoding: EncodingArg) -> Result<CsvSource<'static>> {
    if is_parquet(path) {
        return open_parquet(path);
    }
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok(CsvSource::new(
        Box::new(file),
        &path.display().to_string(),
        len,
        encoding.into(),
    )?)
}

/// Whether `path` names a Parquet file (by its extension, case-insensitive).
pub fn is_parquet(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
}

/// A `.parquet` input as the CSV the engine reads (UTF-8).
#[cfg(feature = "parquet")]
fn open_parquet(path: &Path) -> Result<CsvSource<'static>> {
    let reader = crate::parquet_input::ParquetCsv::open(path)?;
    Ok(CsvSource::new(
        Box::new(reader),
        &path.display().to_string(),
        0,
        EncodingChoice::Utf8,
    )?)
}

#[cfg(not(feature = "parquet"))]
fn open_parquet(path: &Path) -> Result<CsvSource<'static>> {
    anyhow::bail!(
        "{}: this renketsu was built without Parquet support (cargo feature `parquet`)",
        path.display()
    )
}
