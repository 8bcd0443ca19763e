//! Token files (`renketsu-tokens` version 1, SPEC.md §5.5): what a holder hands to the
//! linkage unit instead of identifiers. JSON Lines, UTF-8, one object per line:
//!
//! ```text
//! {"format":"renketsu-tokens","version":1,"project":…,"party":…,"schema":{…},"mode":…,…}   header
//! {"id":"17","t":[[0,"<base64 32 bytes>"],[3,"…"]],"clk":"<base64>"}                   one per record
//! {"end":{"records":9990,"read":10000,"tokenized":9990,"rejected":10,…}}                trailer
//! ```
//!
//! This module is the format only, over any [`BufRead`] (a file for `renketsu link`, stored
//! upload chunks in the linkage unit): [`Reader`] checks a file as it streams it (one record in
//! memory at a time; the trailer makes truncation detectable), and [`encode_record`] /
//! [`encode_trailer`] make the lines a writer appends.

use std::collections::BTreeMap;
use std::io::BufRead;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

/// The `format` value of every token file.
pub const FORMAT: &str = "renketsu-tokens";
/// The version this code writes and reads.
pub const VERSION: u32 = 1;
/// `mode` of HMAC-SHA256 tokens (SPEC.md §4.2, embedded mode).
pub const MODE_HMAC: &str = "hmac";
/// `mode` of RFC 9497 ristretto255-SHA512 elements `k·H(preimage)` (custodian mode).
pub const MODE_OPRF: &str = "oprf-ristretto255";
/// The first bytes of every token file.
pub const MAGIC: &[u8] = br#"{"format":"renketsu-tokens""#;

/// The first line of a token file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`].
    pub version: u32,
    /// Project the tokens are keyed for.
    pub project: String,
    /// The holder that made the file.
    pub party: String,
    /// The linkage schema the tokens follow.
    pub schema: SchemaRef,
    /// [`MODE_HMAC`] or [`MODE_OPRF`].
    pub mode: String,
    /// OPRF mode only: the RFC 9497 protocol variant, `oprf` or `voprf`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oprf_mode: Option<String>,
    /// Every recipe of the schema, in schema order; records refer to them by index.
    pub recipes: Vec<RecipeRef>,
    /// Present when records carry CLKs: their length in bits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clk_bits: Option<u32>,
    /// "Today" of the run (future birth dates are refused against it), `YYYY-MM-DD`.
    pub today: String,
    /// The writing program, e.g. `renketsu 0.1.0`.
    pub created_by: String,
}

impl Header {
    /// The token mode as reported in summaries: `hmac`, or `oprf-ristretto255/<oprf_mode>`.
    pub fn mode_name(&self) -> String {
        match &self.oprf_mode {
            Some(m) => format!("{}/{m}", self.mode),
            None => self.mode.clone(),
        }
    }
}

/// The schema of a token file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRef {
    /// `name` of the schema.
    pub name: String,
    /// `version` of the schema.
    pub version: u32,
    /// Lower-case hex SHA-256 of the schema file's bytes.
    pub digest: String,
}

/// One recipe of a token file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeRef {
    /// Recipe name.
    pub name: String,
    /// Recipe version.
    pub version: u32,
    /// OPRF mode: the custodian's epoch whose key made the tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// OPRF mode: lower-case hex of that epoch's public key (32 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

/// Row counts of the holder's input, in the trailer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    /// Record lines in the file (= `tokenized`).
    pub records: u64,
    /// Data rows read from the input.
    pub read: u64,
    /// Rows tokenized.
    pub tokenized: u64,
    /// Rows rejected (in the holder's rejects file).
    pub rejected: u64,
    /// Rejected rows per reason code (SPEC.md §3.3).
    pub rejects_by_reason: BTreeMap<String, u64>,
    /// Field rejects per field and code (SPEC.md §3.2).
    pub field_rejects: BTreeMap<String, BTreeMap<String, u64>>,
    /// Records with at least one token of each recipe, by recipe name.
    pub tokens_by_recipe: BTreeMap<String, u64>,
    /// Encoding the input was read in.
    pub encoding: String,
}

#[derive(Serialize)]
struct RecordOut<'a> {
    id: &'a str,
    t: Vec<(u32, String)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    clk: Option<String>,
}

#[derive(Serialize)]
struct TrailerOut<'a> {
    end: &'a Counts,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineIn {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    t: Option<Vec<(u32, String)>>,
    #[serde(default)]
    clk: Option<String>,
    #[serde(default)]
    end: Option<Counts>,
}

/// Errors reading a token file: where (`at`, e.g. `a.tokens line 7`) and what.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenFileError {
    /// The bytes could not be read.
    #[error("cannot read {at}: {source}")]
    Io {
        /// Input name.
        at: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The content breaks the format (a message that names the rule).
    #[error("{at}: {message}")]
    Format {
        /// Input name and line.
        at: String,
        /// What is wrong.
        message: String,
    },
}

/// CLK words to bytes: word `i` little-endian at bytes `8i..8i+8`, so bit `j` of the filter is
/// bit `j mod 8` of byte `j / 8`.
pub fn clk_bytes(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Appends the JSON line (with its `\n`) of one record to `out`: its id, `(recipe index,
/// 32-byte token)` pairs, and its CLK when the header has `clk_bits`.
pub fn encode_record<'t>(
    out: &mut Vec<u8>,
    id: &str,
    tokens: impl Iterator<Item = (usize, &'t [u8; 32])>,
    clk: Option<&[u64]>,
) {
    let rec = RecordOut {
        id,
        t: tokens.map(|(r, t)| (r as u32, B64.encode(t))).collect(),
        clk: clk.map(|w| B64.encode(clk_bytes(w))),
    };
    serde_json::to_writer(&mut *out, &rec).expect("serializing to a Vec cannot fail");
    out.push(b'\n');
}

/// Appends the header line to `out`.
pub fn encode_header(out: &mut Vec<u8>, header: &Header) {
    serde_json::to_writer(&mut *out, header).expect("serializing to a Vec cannot fail");
    out.push(b'\n');
}

/// Appends the trailer line to `out` (`counts.records` as given).
pub fn encode_trailer(out: &mut Vec<u8>, counts: &Counts) {
    serde_json::to_writer(&mut *out, &TrailerOut { end: counts })
        .expect("serializing to a Vec cannot fail");
    out.push(b'\n');
}

/// One record read back.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record id.
    pub id: String,
    /// `(recipe index into the header's recipes, token)`.
    pub tokens: Vec<(usize, [u8; 32])>,
    /// The CLK as 64-bit words (when the header has `clk_bits`).
    pub clk: Option<Vec<u64>>,
}

/// Reads a token file record by record, checking it as it goes.
pub struct Reader<R> {
    name: String,
    input: R,
    header: Header,
    line: String,
    line_no: u64,
    records: u64,
    end: Option<Counts>,
}

impl<R: BufRead> Reader<R> {
    /// Reads and checks the header of `input`; `name` (a path, an upload) names it in errors.
    ///
    /// # Errors
    /// [`TokenFileError::Format`] for a first line that is not a version-1 header with a known
    /// token mode; [`TokenFileError::Io`] if reading fails.
    pub fn new(mut input: R, name: &str) -> Result<Self, TokenFileError> {
        let mut line = String::new();
        input
            .read_line(&mut line)
            .map_err(|source| TokenFileError::Io {
                at: name.to_owned(),
                source,
            })?;
        let bad = |message: String| TokenFileError::Format {
            at: name.to_owned(),
            message,
        };
        let header: Header = serde_json::from_str(&line)
            .map_err(|e| bad(format!("line 1 is not a renketsu-tokens header: {e}")))?;
        if header.format != FORMAT {
            return Err(bad(format!("format {:?}, not {FORMAT:?}", header.format)));
        }
        if header.version != VERSION {
            return Err(bad(format!(
                "token file version {}; this renketsu reads version {VERSION}",
                header.version
            )));
        }
        match header.mode.as_str() {
            MODE_HMAC if header.oprf_mode.is_none() => {}
            MODE_OPRF if matches!(header.oprf_mode.as_deref(), Some("oprf" | "voprf")) => {
                if header.recipes.iter().any(|r| r.epoch.is_none()) {
                    return Err(bad(
                        "an OPRF token file names every recipe's epoch".to_owned()
                    ));
                }
            }
            m => {
                return Err(bad(format!(
                    "unknown token mode {m:?} (oprf_mode {:?})",
                    header.oprf_mode
                )));
            }
        }
        Ok(Self {
            name: name.to_owned(),
            input,
            header,
            line,
            line_no: 1,
            records: 0,
            end: None,
        })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    fn err(&self, message: impl Into<String>) -> TokenFileError {
        TokenFileError::Format {
            at: format!("{} line {}", self.name, self.line_no),
            message: message.into(),
        }
    }

    fn read_line(&mut self) -> Result<usize, TokenFileError> {
        self.line.clear();
        self.input
            .read_line(&mut self.line)
            .map_err(|source| TokenFileError::Io {
                at: self.name.clone(),
                source,
            })
    }

    /// Reads the next record into `rec`; `false` after the trailer, whose counts are then in
    /// [`Self::counts`].
    ///
    /// # Errors
    /// [`TokenFileError::Format`] for a file that ends without its trailer (truncated), a
    /// trailer whose counts disagree, data after the trailer, a token that is not 32 bytes of
    /// base64, a recipe index out of range, or a CLK of the wrong length.
    pub fn next(&mut self, rec: &mut Record) -> Result<bool, TokenFileError> {
        if self.end.is_some() {
            return Ok(false);
        }
        let n = self.read_line()?;
        self.line_no += 1;
        if n == 0 {
            return Err(self.err("the file ends without its trailer: truncated"));
        }
        let parsed: LineIn =
            serde_json::from_str(&self.line).map_err(|e| self.err(e.to_string()))?;
        if let Some(end) = parsed.end {
            if parsed.id.is_some() || parsed.t.is_some() {
                return Err(self.err("a trailer with record fields"));
            }
            if end.records != self.records || end.tokenized != self.records {
                return Err(self.err(format!(
                    "the trailer counts {} records but the file has {}",
                    end.records, self.records
                )));
            }
            if end.read != end.tokenized + end.rejected {
                return Err(self.err(format!(
                    "read {} != tokenized {} + rejected {}",
                    end.read, end.tokenized, end.rejected
                )));
            }
            if self.read_line()? != 0 {
                return Err(self.err("data after the trailer"));
            }
            self.end = Some(end);
            return Ok(false);
        }
        let (Some(id), Some(t)) = (parsed.id, parsed.t) else {
            return Err(self.err("a record needs \"id\" and \"t\""));
        };
        rec.id = id;
        rec.tokens.clear();
        for (r, b64) in t {
            let r = r as usize;
            if r >= self.header.recipes.len() {
                return Err(self.err(format!("recipe index {r} out of range")));
            }
            let bytes = B64
                .decode(b64.as_bytes())
                .map_err(|_| self.err("token is not base64"))?;
            let token: [u8; 32] = bytes
                .try_into()
                .map_err(|_| self.err("a token is 32 bytes"))?;
            rec.tokens.push((r, token));
        }
        rec.clk = match (parsed.clk, self.header.clk_bits) {
            (Some(b64), Some(bits)) => {
                let bytes = B64
                    .decode(b64.as_bytes())
                    .map_err(|_| self.err("clk is not base64"))?;
                if bytes.len() * 8 != bits as usize {
                    return Err(self.err(format!(
                        "a CLK of {} bits, the header says {bits}",
                        bytes.len() * 8
                    )));
                }
                Some(
                    bytes
                        .chunks_exact(8)
                        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                        .collect(),
                )
            }
            (None, None) => None,
            (None, Some(_)) => {
                return Err(self.err("the header has clk_bits but the record no clk"));
            }
            (Some(_), None) => return Err(self.err("a clk but the header has no clk_bits")),
        };
        self.records += 1;
        Ok(true)
    }

    /// The trailer's counts, once [`Self::next`] has returned `false`.
    pub fn counts(&self) -> Option<&Counts> {
        self.end.as_ref()
    }
}
