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
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok(CsvSource::new(
        Box::new(file),
        &path.display().to_string(),
        len,
        encoding.into(),
    )?)
}
