//! Token files (`renketsu-tokens` version 1, SPEC.md §5.5): what a holder hands to the
//! linkage unit instead of identifiers. JSON Lines, UTF-8, one object per line:
//!
//! ```text
//! {"format":"renketsu-tokens","version":1,"project":…,"party":…,"schema":{…},"mode":…,…}   header
//! {"id":"17","t":[[0,"<base64 32 bytes>"],[3,"…"]],"clk":"<base64>"}                   one per record
//! {"end":{"records":9990,"read":10000,"tokenized":9990,"rejected":10,…}}                trailer
//! ```
//!
//! Streaming on both sides (one record in memory at a time); the trailer makes truncation
//! detectable, and the writer publishes the file atomically (temporary name, then rename).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::output::PendingFile;

/// The `format` value of every token file.
pub const FORMAT: &str = "renketsu-tokens";
/// The version this code writes and reads.
pub const VERSION: u32 = 1;
/// `mode` of HMAC-SHA256 tokens (SPEC.md §4.2, embedded mode).
pub const MODE_HMAC: &str = "hmac";
/// `mode` of RFC 9497 ristretto255-SHA512 elements `k·H(preimage)` (custodian mode).
pub const MODE_OPRF: &str = "oprf-ristretto255";

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

/// SHA-256 (lower-case hex) of a schema file's bytes: equal digests mean the same schema.
pub fn schema_digest(path: &Path) -> Result<String> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read schema {}", path.display()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// CLK words to bytes: word `i` little-endian at bytes `8i..8i+8`, so bit `j` of the filter is
/// bit `j mod 8` of byte `j / 8`.
fn clk_bytes(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Writes a token file atomically.
pub struct Writer {
    file: PendingFile,
    records: u64,
    line: Vec<u8>,
}

impl Writer {
    /// Starts `path` (written as `.<name>.partial` beside it until [`Self::finish`]).
    pub fn create(path: &Path, header: Header) -> Result<Self> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("--out {}: not a file name", path.display()))?;
        let mut file = PendingFile::create(dir, name)?;
        serde_json::to_writer(&mut file.writer, &header)?;
        file.writer.write_all(b"\n")?;
        Ok(Self {
            file,
            records: 0,
            line: Vec::with_capacity(1024),
        })
    }

    /// Appends one record: its id, `(recipe index, 32-byte token)` pairs, and its CLK when the
    /// header has `clk_bits`.
    pub fn record<'t>(
        &mut self,
        id: &str,
        tokens: impl Iterator<Item = (usize, &'t [u8; 32])>,
        clk: Option<&[u64]>,
    ) -> Result<()> {
        let rec = RecordOut {
            id,
            t: tokens.map(|(r, t)| (r as u32, B64.encode(t))).collect(),
            clk: clk.map(|w| B64.encode(clk_bytes(w))),
        };
        self.line.clear();
        serde_json::to_writer(&mut self.line, &rec)?;
        self.line.push(b'\n');
        self.file.writer.write_all(&self.line)?;
        self.records += 1;
        Ok(())
    }

    /// Writes the trailer and publishes the file.
    pub fn finish(mut self, mut counts: Counts) -> Result<PathBuf> {
        counts.records = self.records;
        serde_json::to_writer(&mut self.file.writer, &TrailerOut { end: &counts })?;
        self.file.writer.write_all(b"\n")?;
        self.file.commit()
    }
}

/// Whether `path` starts like a token file (its first line is a `renketsu-tokens` header).
pub fn is_token_file(path: &Path) -> Result<bool> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut buf = [0u8; 32];
    let mut n = 0;
    while n < buf.len() {
        let k = f.read(&mut buf[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    let start = br#"{"format":"renketsu-tokens""#;
    Ok(buf[..n].starts_with(&start[..n.min(start.len())]) && n >= start.len())
}

/// One record read back.
#[derive(Debug, Default)]
pub struct Record {
    /// The record id.
    pub id: String,
    /// `(recipe index into the header's recipes, token)`.
    pub tokens: Vec<(usize, [u8; 32])>,
    /// The CLK as 64-bit words (when the header has `clk_bits`).
    pub clk: Option<Vec<u64>>,
}

/// Reads a token file record by record, checking it as it goes.
pub struct Reader {
    path: PathBuf,
    input: BufReader<File>,
    header: Header,
    line: String,
    line_no: u64,
    records: u64,
    end: Option<Counts>,
}

impl Reader {
    /// Opens `path` and reads and checks its header.
    pub fn open(path: &Path) -> Result<Self> {
        let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut input = BufReader::with_capacity(1 << 16, f);
        let mut line = String::new();
        input
            .read_line(&mut line)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let header: Header = serde_json::from_str(&line).with_context(|| {
            format!("{}: line 1 is not a renketsu-tokens header", path.display())
        })?;
        if header.format != FORMAT {
            bail!(
                "{}: format {:?}, not {FORMAT:?}",
                path.display(),
                header.format
            );
        }
        if header.version != VERSION {
            bail!(
                "{}: token file version {}; this renketsu reads version {VERSION}",
                path.display(),
                header.version
            );
        }
        match header.mode.as_str() {
            MODE_HMAC if header.oprf_mode.is_none() => {}
            MODE_OPRF if matches!(header.oprf_mode.as_deref(), Some("oprf" | "voprf")) => {
                if header.recipes.iter().any(|r| r.epoch.is_none()) {
                    bail!(
                        "{}: an OPRF token file names every recipe's epoch",
                        path.display()
                    );
                }
            }
            m => bail!(
                "{}: unknown token mode {m:?} (oprf_mode {:?})",
                path.display(),
                header.oprf_mode
            ),
        }
        Ok(Self {
            path: path.to_owned(),
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

    /// Reads the next record into `rec`; `false` after the trailer, whose counts are then
    /// in [`Self::counts`]. A file that ends without its trailer is an error (truncated).
    pub fn next(&mut self, rec: &mut Record) -> Result<bool> {
        if self.end.is_some() {
            return Ok(false);
        }
        self.line.clear();
        let n = self
            .input
            .read_line(&mut self.line)
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        self.line_no += 1;
        let at = || format!("{} line {}", self.path.display(), self.line_no);
        if n == 0 {
            bail!("{}: the file ends without its trailer: truncated", at());
        }
        let parsed: LineIn = serde_json::from_str(&self.line).with_context(at)?;
        if let Some(end) = parsed.end {
            if parsed.id.is_some() || parsed.t.is_some() {
                bail!("{}: a trailer with record fields", at());
            }
            if end.records != self.records || end.tokenized != self.records {
                bail!(
                    "{}: the trailer counts {} records but the file has {}",
                    at(),
                    end.records,
                    self.records
                );
            }
            if end.read != end.tokenized + end.rejected {
                bail!(
                    "{}: read {} != tokenized {} + rejected {}",
                    at(),
                    end.read,
                    end.tokenized,
                    end.rejected
                );
            }
            self.line.clear();
            if self.input.read_line(&mut self.line)? != 0 {
                bail!("{}: data after the trailer", self.path.display());
            }
            self.end = Some(end);
            return Ok(false);
        }
        let (Some(id), Some(t)) = (parsed.id, parsed.t) else {
            bail!("{}: a record needs \"id\" and \"t\"", at());
        };
        rec.id = id;
        rec.tokens.clear();
        for (r, b64) in t {
            let r = r as usize;
            if r >= self.header.recipes.len() {
                bail!("{}: recipe index {r} out of range", at());
            }
            let bytes = B64
                .decode(b64.as_bytes())
                .with_context(|| format!("{}: token is not base64", at()))?;
            let token: [u8; 32] = bytes
                .try_into()
                .map_err(|_| anyhow::anyhow!("{}: a token is 32 bytes", at()))?;
            rec.tokens.push((r, token));
        }
        rec.clk = match (parsed.clk, self.header.clk_bits) {
            (Some(b64), Some(bits)) => {
                let bytes = B64
                    .decode(b64.as_bytes())
                    .with_context(|| format!("{}: clk is not base64", at()))?;
                if bytes.len() * 8 != bits as usize {
                    bail!(
                        "{}: a CLK of {} bits, the header says {bits}",
                        at(),
                        bytes.len() * 8
                    );
                }
                Some(
                    bytes
                        .chunks_exact(8)
                        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                        .collect(),
                )
            }
            (None, None) => None,
            (None, Some(_)) => bail!("{}: the header has clk_bits but the record no clk", at()),
            (Some(_), None) => bail!("{}: a clk but the header has no clk_bits", at()),
        };
        self.records += 1;
        Ok(true)
    }

    /// The trailer's counts, once [`Self::next`] has returned `false`.
    pub fn counts(&self) -> Option<&Counts> {
        self.end.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(mode: &str, clk: Option<u32>) -> Header {
        Header {
            format: FORMAT.to_owned(),
            version: VERSION,
            project: "p".to_owned(),
            party: "a".to_owned(),
            schema: SchemaRef {
                name: "s".to_owned(),
                version: 1,
                digest: "00".repeat(32),
            },
            mode: mode.to_owned(),
            oprf_mode: (mode == MODE_OPRF).then(|| "voprf".to_owned()),
            recipes: vec![RecipeRef {
                name: "r".to_owned(),
                version: 1,
                epoch: (mode == MODE_OPRF).then_some(3),
                public_key: None,
            }],
            clk_bits: clk,
            today: "2026-11-22".to_owned(),
            created_by: "test".to_owned(),
        }
    }

    #[test]
    fn round_trip_with_clk_and_trailer_checks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tokens");
        let mut w = Writer::create(&path, header(MODE_OPRF, Some(128))).unwrap();
        assert!(!path.exists(), "published only on finish");
        w.record(
            "x,\"1\"",
            [(0usize, &[7u8; 32])].into_iter(),
            Some(&[1, 1 << 63]),
        )
        .unwrap();
        w.record("日本", std::iter::empty(), Some(&[0, 0])).unwrap();
        let counts = Counts {
            read: 3,
            tokenized: 2,
            rejected: 1,
            ..Counts::default()
        };
        w.finish(counts).unwrap();
        assert!(is_token_file(&path).unwrap());
        let mut r = Reader::open(&path).unwrap();
        assert_eq!(r.header(), &header(MODE_OPRF, Some(128)));
        let mut rec = Record::default();
        assert!(r.next(&mut rec).unwrap());
        assert_eq!(rec.id, "x,\"1\"");
        assert_eq!(rec.tokens, vec![(0, [7u8; 32])]);
        assert_eq!(rec.clk, Some(vec![1, 1 << 63]));
        assert!(r.next(&mut rec).unwrap());
        assert_eq!(rec.id, "日本");
        assert!(rec.tokens.is_empty());
        assert!(!r.next(&mut rec).unwrap());
        assert_eq!(r.counts().unwrap().records, 2);
        assert_eq!(r.counts().unwrap().rejected, 1);
    }

    #[test]
    fn truncated_or_inconsistent_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tokens");
        let mut w = Writer::create(&path, header(MODE_HMAC, None)).unwrap();
        w.record("1", [(0usize, &[1u8; 32])].into_iter(), None)
            .unwrap();
        w.finish(Counts {
            read: 1,
            tokenized: 1,
            ..Counts::default()
        })
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let read_all = |content: String| -> Result<()> {
            std::fs::write(&path, content).unwrap();
            let mut r = Reader::open(&path)?;
            let mut rec = Record::default();
            while r.next(&mut rec)? {}
            Ok(())
        };
        read_all(text.clone()).unwrap();
        // No trailer.
        let err = read_all(format!("{}\n{}\n", lines[0], lines[1])).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err:#}");
        // A record missing: the trailer's count disagrees.
        let err = read_all(format!("{}\n{}\n", lines[0], lines[2])).unwrap_err();
        assert!(err.to_string().contains("trailer counts"), "{err:#}");
        // A token of the wrong length, a recipe out of range.
        for bad in [
            r#"{"id":"1","t":[[0,"AAAA"]]}"#,
            r#"{"id":"1","t":[[5,"AAAA"]]}"#,
        ] {
            assert!(read_all(format!("{}\n{bad}\n{}\n", lines[0], lines[2])).is_err());
        }
        // Not a token file.
        std::fs::write(&path, "id,name\n1,x\n").unwrap();
        assert!(!is_token_file(&path).unwrap());
        assert!(Reader::open(&path).is_err());
        // Another version.
        let v2 = lines[0].replace("\"version\":1", "\"version\":2");
        let err = read_all(format!("{v2}\n{}\n{}\n", lines[1], lines[2])).unwrap_err();
        assert!(err.to_string().contains("version 2"), "{err:#}");
    }
}
