//! Reading one holder's CSV: encoding detection, header binding, per-row decoding.
//!
//! Fatal (the whole input is refused with a clear error): no header row, a header that is
//! not decodable, a missing id or identifier column, duplicate header names.
//! Per row (the row goes to `rejects-<party>.csv` with a reason code, SPEC.md §3.3): ragged
//! rows, undecodable bytes, empty or duplicate ids, rows that yield no token.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use encoding_rs::SHIFT_JIS;

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

/// The encoding actually used for a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// UTF-8.
    Utf8,
    /// CP932 (WHATWG "Shift_JIS", which is Windows-31J).
    Cp932,
}

impl Encoding {
    /// Name used in summaries.
    pub fn name(self) -> &'static str {
        match self {
            Self::Utf8 => "utf-8",
            Self::Cp932 => "cp932",
        }
    }

    /// Decodes one field; `None` if the bytes are malformed in this encoding.
    pub fn decode(self, bytes: &[u8]) -> Option<Cow<'_, str>> {
        match self {
            Self::Utf8 => std::str::from_utf8(bytes).ok().map(Cow::Borrowed),
            Self::Cp932 => SHIFT_JIS.decode_without_bom_handling_and_without_replacement(bytes),
        }
    }
}

const SNIFF_BYTES: usize = 1 << 20;

/// Counts valid multi-byte UTF-8 characters and invalid sequences in `bytes`; an incomplete
/// character at the very end of a truncated sample is not counted as invalid.
fn utf8_profile(mut bytes: &[u8], truncated: bool) -> (usize, usize) {
    let (mut multibyte, mut invalid) = (0, 0);
    loop {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                multibyte += s.chars().filter(|c| !c.is_ascii()).count();
                return (multibyte, invalid);
            }
            Err(e) => {
                let good = std::str::from_utf8(&bytes[..e.valid_up_to()]).expect("valid prefix");
                multibyte += good.chars().filter(|c| !c.is_ascii()).count();
                match e.error_len() {
                    Some(n) => {
                        invalid += 1;
                        bytes = &bytes[e.valid_up_to() + n..];
                    }
                    None => {
                        if !truncated {
                            invalid += 1;
                        }
                        return (multibyte, invalid);
                    }
                }
            }
        }
    }
}

/// Picks the encoding of `path` as `arg` says (see [`EncodingArg::Auto`]).
pub fn resolve_encoding(path: &Path, arg: EncodingArg) -> Result<Encoding> {
    match arg {
        EncodingArg::Utf8 => return Ok(Encoding::Utf8),
        EncodingArg::Cp932 => return Ok(Encoding::Cp932),
        EncodingArg::Auto => {}
    }
    let mut sample = Vec::with_capacity(SNIFF_BYTES);
    File::open(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .take(SNIFF_BYTES as u64)
        .read_to_end(&mut sample)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if sample.starts_with(b"\xEF\xBB\xBF") {
        return Ok(Encoding::Utf8);
    }
    let (multibyte, invalid) = utf8_profile(&sample, sample.len() == SNIFF_BYTES);
    // Text in CP932 fails UTF-8 decoding at almost every non-ASCII character; a UTF-8 export
    // with a few stray bytes has many valid multi-byte characters and few errors. Choosing
    // UTF-8 there rejects the few bad rows instead of turning every name into mojibake.
    if invalid == 0 || (multibyte > 0 && invalid * 4 <= multibyte) {
        return Ok(Encoding::Utf8);
    }
    let cut = if sample.len() == SNIFF_BYTES {
        // Avoid judging a double-byte character split at the sample's end.
        sample.len() - 1
    } else {
        sample.len()
    };
    if SHIFT_JIS
        .decode_without_bom_handling_and_without_replacement(&sample[..cut])
        .is_some()
    {
        return Ok(Encoding::Cp932);
    }
    bail!(
        "{}: neither valid UTF-8 nor CP932 in its first MiB; pass --encoding utf-8 or --encoding cp932 \
         (rows that do not decode are then rejected with reason invalid_encoding)",
        path.display()
    )
}

/// An input file opened for reading, with its header decoded.
pub struct CsvInput {
    /// Path of the file.
    pub path: PathBuf,
    /// Encoding in use.
    pub encoding: Encoding,
    /// Decoded header names.
    pub header: Vec<String>,
    reader: csv::Reader<BufReader<File>>,
    /// Byte length of the file, for progress.
    pub len: u64,
}

impl CsvInput {
    /// Opens `path` and reads its header row.
    pub fn open(path: &Path, arg: EncodingArg) -> Result<Self> {
        let encoding = resolve_encoding(path, arg)?;
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(BufReader::with_capacity(1 << 16, file));
        let mut first = csv::ByteRecord::new();
        let got = reader
            .read_byte_record(&mut first)
            .with_context(|| format!("{}: cannot read the header row", path.display()))?;
        if !got {
            bail!(
                "{}: the file is empty (a header row is required)",
                path.display()
            );
        }
        let mut header = Vec::with_capacity(first.len());
        for (i, field) in first.iter().enumerate() {
            let field = if i == 0 {
                field.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(field)
            } else {
                field
            };
            let name = encoding.decode(field).with_context(|| {
                format!(
                    "{}: header column {} is not valid {}",
                    path.display(),
                    i + 1,
                    encoding.name()
                )
            })?;
            let name = name.trim().to_owned();
            if header.contains(&name) {
                bail!("{}: header names column {name:?} twice", path.display());
            }
            header.push(name);
        }
        Ok(Self {
            path: path.to_owned(),
            encoding,
            header,
            reader,
            len,
        })
    }

    /// Index of header column `name`, or an error listing the header.
    pub fn column(&self, name: &str, role: &str) -> Result<usize> {
        self.header.iter().position(|h| h == name).with_context(|| {
            format!(
                "{}: no column {name:?} ({role}); the header has: {}",
                self.path.display(),
                self.header.join(", ")
            )
        })
    }

    /// Reads the next data row into `rec`; `false` at end of file.
    pub fn next_row(&mut self, rec: &mut csv::ByteRecord) -> Result<bool> {
        self.reader
            .read_byte_record(rec)
            .with_context(|| format!("{}: read error", self.path.display()))
    }

    /// Bytes consumed so far (for progress bars).
    pub fn position(&self) -> u64 {
        self.reader.position().byte()
    }
}
