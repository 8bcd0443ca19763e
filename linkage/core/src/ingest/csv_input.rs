//! One holder's CSV as a stream: encoding detection from the first MiB, the header row, and
//! data rows as raw bytes (decoded per field by the caller, so that one bad field rejects one
//! row, not the file).

use std::borrow::Cow;
use std::io::{BufReader, Cursor, Read};

use encoding_rs::SHIFT_JIS;

use super::IngestError;

/// Text encoding of an input, as asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodingChoice {
    /// Per input, from its first MiB: UTF-8 if it starts with a BOM or is (almost all) valid
    /// UTF-8, else CP932 if it decodes cleanly as CP932, else [`IngestError::Undecodable`].
    #[default]
    Auto,
    /// UTF-8 (a leading BOM is skipped).
    Utf8,
    /// CP932 / Windows-31J, Microsoft's Shift_JIS, as Japanese hospital systems export.
    Cp932,
}

/// The encoding actually used for an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Encoding {
    /// UTF-8.
    Utf8,
    /// CP932 (WHATWG "Shift_JIS", which is Windows-31J).
    Cp932,
}

impl Encoding {
    /// Name used in summaries (`utf-8`, `cp932`).
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

/// Bytes sampled to detect the encoding (1 MiB).
pub const SNIFF_BYTES: usize = 1 << 20;

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

/// The encoding of an input whose first bytes are `sample` (at most [`SNIFF_BYTES`];
/// `truncated` when the input is longer), as `choice` says.
///
/// # Errors
/// [`IngestError::Undecodable`] (`Auto` only) when the sample is neither UTF-8 nor CP932.
pub fn detect_encoding(
    sample: &[u8],
    truncated: bool,
    choice: EncodingChoice,
    input: &str,
) -> Result<Encoding, IngestError> {
    match choice {
        EncodingChoice::Utf8 => return Ok(Encoding::Utf8),
        EncodingChoice::Cp932 => return Ok(Encoding::Cp932),
        EncodingChoice::Auto => {}
    }
    if sample.starts_with(b"\xEF\xBB\xBF") {
        return Ok(Encoding::Utf8);
    }
    let (multibyte, invalid) = utf8_profile(sample, truncated);
    // Text in CP932 fails UTF-8 decoding at almost every non-ASCII character; a UTF-8 export
    // with a few stray bytes has many valid multi-byte characters and few errors. Choosing
    // UTF-8 there rejects the few bad rows instead of turning every name into mojibake.
    if invalid == 0 || (multibyte > 0 && invalid * 4 <= multibyte) {
        return Ok(Encoding::Utf8);
    }
    // Avoid judging a double-byte character split at the sample's end.
    let cut = if truncated {
        sample.len().saturating_sub(1)
    } else {
        sample.len()
    };
    if SHIFT_JIS
        .decode_without_bom_handling_and_without_replacement(&sample[..cut])
        .is_some()
    {
        return Ok(Encoding::Cp932);
    }
    Err(IngestError::Undecodable {
        input: input.to_owned(),
    })
}

type Source<'a> = csv::Reader<BufReader<std::io::Chain<Cursor<Vec<u8>>, Box<dyn Read + 'a>>>>;

/// A holder's CSV opened for reading, with its header decoded.
pub struct CsvSource<'a> {
    /// The input's name in messages (e.g. its path).
    pub label: String,
    /// Encoding in use.
    pub encoding: Encoding,
    /// Decoded header names (trimmed; a BOM on the first is skipped).
    pub header: Vec<String>,
    /// Byte length of the input if known, for progress (0: unknown).
    pub len: u64,
    reader: Source<'a>,
}

impl std::fmt::Debug for CsvSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvSource")
            .field("label", &self.label)
            .field("encoding", &self.encoding)
            .field("columns", &self.header.len())
            .finish_non_exhaustive()
    }
}

impl<'a> CsvSource<'a> {
    /// Opens a CSV stream: samples the first MiB to choose the encoding, then reads the
    /// header row. `len` is the stream's byte length if known (for progress; 0 if not).
    ///
    /// # Errors
    /// [`IngestError::Io`] on a read error, [`IngestError::Undecodable`],
    /// [`IngestError::Empty`] (no header row), [`IngestError::HeaderEncoding`],
    /// [`IngestError::DuplicateHeader`].
    pub fn new(
        mut input: Box<dyn Read + 'a>,
        label: &str,
        len: u64,
        choice: EncodingChoice,
    ) -> Result<Self, IngestError> {
        let io = |e| IngestError::Io {
            input: label.to_owned(),
            source: e,
        };
        let mut sample = Vec::with_capacity(SNIFF_BYTES.min(len as usize).max(4096));
        (&mut input)
            .take(SNIFF_BYTES as u64)
            .read_to_end(&mut sample)
            .map_err(io)?;
        let encoding = detect_encoding(&sample, sample.len() == SNIFF_BYTES, choice, label)?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(BufReader::with_capacity(
                1 << 16,
                Cursor::new(sample).chain(input),
            ));
        let mut first = csv::ByteRecord::new();
        let got = reader
            .read_byte_record(&mut first)
            .map_err(|e| IngestError::Csv {
                input: label.to_owned(),
                what: "cannot read the header row",
                source: e,
            })?;
        if !got {
            return Err(IngestError::Empty {
                input: label.to_owned(),
            });
        }
        let mut header: Vec<String> = Vec::with_capacity(first.len());
        for (i, field) in first.iter().enumerate() {
            let field = if i == 0 {
                field.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(field)
            } else {
                field
            };
            let name = encoding
                .decode(field)
                .ok_or_else(|| IngestError::HeaderEncoding {
                    input: label.to_owned(),
                    column: i + 1,
                    encoding: encoding.name(),
                })?;
            let name = name.trim().to_owned();
            if header.contains(&name) {
                return Err(IngestError::DuplicateHeader {
                    input: label.to_owned(),
                    name,
                });
            }
            header.push(name);
        }
        Ok(Self {
            label: label.to_owned(),
            encoding,
            header,
            len,
            reader,
        })
    }

    /// Index of header column `name`.
    ///
    /// # Errors
    /// [`IngestError::MissingColumn`], naming `role` and listing the header.
    pub fn column(&self, name: &str, role: &str) -> Result<usize, IngestError> {
        self.header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| IngestError::MissingColumn {
                input: self.label.clone(),
                name: name.to_owned(),
                role: role.to_owned(),
                header: self.header.join(", "),
            })
    }

    /// Reads the next data row into `rec`; `false` at the end.
    ///
    /// # Errors
    /// [`IngestError::Csv`] on a read error.
    pub fn next_row(&mut self, rec: &mut csv::ByteRecord) -> Result<bool, IngestError> {
        self.reader
            .read_byte_record(rec)
            .map_err(|e| IngestError::Csv {
                input: self.label.clone(),
                what: "read error",
                source: e,
            })
    }

    /// Bytes consumed so far (for progress bars).
    pub fn position(&self) -> u64 {
        self.reader.position().byte()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(
        bytes: &'static [u8],
        choice: EncodingChoice,
    ) -> Result<CsvSource<'static>, IngestError> {
        CsvSource::new(Box::new(bytes), "t.csv", bytes.len() as u64, choice)
    }

    #[test]
    fn detects_cp932_and_utf8() {
        let (cp932, _, _) = SHIFT_JIS.encode("id,氏名\n1,山田太郎\n");
        let cp932: &'static [u8] = Box::leak(cp932.into_owned().into_boxed_slice());
        assert_eq!(
            open(cp932, EncodingChoice::Auto).unwrap().encoding,
            Encoding::Cp932
        );
        let s = open("\u{feff}id,氏名\n1,山田\n".as_bytes(), EncodingChoice::Auto).unwrap();
        assert_eq!(s.encoding, Encoding::Utf8);
        assert_eq!(s.header, ["id", "氏名"]);
    }

    #[test]
    fn refuses_empty_and_duplicate_headers() {
        assert!(matches!(
            open(b"", EncodingChoice::Auto),
            Err(IngestError::Empty { .. })
        ));
        assert!(matches!(
            open(b"id,a,a\n", EncodingChoice::Auto),
            Err(IngestError::DuplicateHeader { .. })
        ));
    }

    #[test]
    fn rows_after_the_sample_are_read() {
        // More than the 1 MiB sample: the stream continues after the sniffed bytes.
        let mut text = String::from("id,x\n");
        let mut n = 0;
        while text.len() <= SNIFF_BYTES + 100 {
            text.push_str(&format!("{n},value-{n}\n"));
            n += 1;
        }
        let bytes: &'static [u8] = Box::leak(text.into_bytes().into_boxed_slice());
        let mut s = open(bytes, EncodingChoice::Auto).unwrap();
        let mut rec = csv::ByteRecord::new();
        let mut rows = 0;
        while s.next_row(&mut rec).unwrap() {
            assert_eq!(&rec[0], rows.to_string().as_bytes());
            rows += 1;
        }
        assert_eq!(rows, n);
        assert_eq!(s.position(), bytes.len() as u64);
    }
}
