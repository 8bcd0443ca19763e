//! Token files (`renketsu-tokens` versions 1 and 2, SPEC.md §5.5): what a holder hands to the
//! linkage unit instead of identifiers. JSON Lines, UTF-8, one object per line:
//!
//! ```text
//! {"format":"renketsu-tokens","version":1,"project":…,"party":…,"schema":{…},"mode":…,…}   header
//! {"id":"17","t":[[0,"<base64 32 bytes>"],[3,"…"]],"clk":"<base64>"}                   one per record
//! {"end":{"records":9990,"read":10000,"tokenized":9990,"rejected":10,…}}                trailer
//! ```
//!
//! Version 2 adds the **comparison filters** of a scored schema (SPEC.md §9.1): the header
//! lists the schema's Dice comparisons (`"dice":[{"comparison":"name","bits":512,…}]`) and a
//! record carries `"d":[[i,mask,"<base64>"],…]`, the filter of the header's `i`-th Dice
//! comparison with the bit set of its fields present.
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
/// The version of files without comparison filters (written whenever a schema has no Dice
/// comparison, so that such files stay readable by older readers).
pub const VERSION: u32 = 1;
/// The version of files with comparison filters (`dice` in the header, `d` in records).
pub const VERSION_FEATURES: u32 = 2;
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
    /// [`VERSION`], or [`VERSION_FEATURES`] when `dice` is not empty.
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
    /// Version 2: the schema's Dice comparisons, in comparison order; records refer to them
    /// by index (`d`). Empty in version 1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dice: Vec<DiceRef>,
}

/// One per-comparison CLK of a version-2 token file (SPEC.md §5.5, §9.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiceRef {
    /// The `[[scoring.comparisons]]` name.
    pub comparison: String,
    /// Filter length in bits (a power of two, 64 to 4,096).
    pub bits: u32,
    /// The schema fields encoded, in order: bit `i` of a record's mask says field `i` had a
    /// value.
    pub fields: Vec<String>,
    /// The fields whose CLK keys encode them, in order, when one differs from the encoded
    /// field (`key` of a Dice feature, for `reversed_of`); empty otherwise, and then not
    /// written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
}

impl DiceRef {
    /// The Dice comparisons of `schema`'s `[scoring]` section, in comparison order (empty
    /// without scoring).
    pub fn of_schema(schema: &crate::Schema) -> Vec<Self> {
        schema
            .scoring
            .iter()
            .flat_map(|s| &s.comparisons)
            .filter_map(|c| {
                c.dice.as_ref().map(|d| Self {
                    comparison: c.name.clone(),
                    bits: d.bits,
                    fields: d
                        .features
                        .iter()
                        .map(|f| schema.fields[f.field].name.clone())
                        .collect(),
                    keys: if d.features.iter().zip(&d.keys).all(|(f, &k)| f.field == k) {
                        Vec::new()
                    } else {
                        d.keys
                            .iter()
                            .map(|&k| schema.fields[k].name.clone())
                            .collect()
                    },
                })
            })
            .collect()
    }
}

/// The version a file with these Dice comparisons is written in.
pub fn version_for(dice: &[DiceRef]) -> u32 {
    if dice.is_empty() {
        VERSION
    } else {
        VERSION_FEATURES
    }
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

impl RecipeRef {
    /// Every recipe of `schema`, in schema order, as an HMAC-mode token file's header lists
    /// them (no epoch, no public key).
    pub fn hmac_refs(schema: &crate::Schema) -> Vec<Self> {
        schema
            .recipes
            .iter()
            .map(|r| Self {
                name: r.name.clone(),
                version: r.version,
                epoch: None,
                public_key: None,
            })
            .collect()
    }
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
    #[serde(skip_serializing_if = "Vec::is_empty")]
    d: Vec<(u32, u32, String)>,
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
    d: Option<Vec<(u32, u32, String)>>,
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
    encode_record_features(out, id, tokens, clk, &[]);
}

/// [`encode_record`] with the record's comparison filters (version 2): `(index into the
/// header's dice, field mask, filter words)`, indices ascending, masks not zero (a comparison
/// none of whose fields has a value is left out).
pub fn encode_record_features<'t>(
    out: &mut Vec<u8>,
    id: &str,
    tokens: impl Iterator<Item = (usize, &'t [u8; 32])>,
    clk: Option<&[u64]>,
    dice: &[(usize, u32, &[u64])],
) {
    let rec = RecordOut {
        id,
        t: tokens.map(|(r, t)| (r as u32, B64.encode(t))).collect(),
        clk: clk.map(|w| B64.encode(clk_bytes(w))),
        d: dice
            .iter()
            .map(|(i, m, w)| (*i as u32, *m, B64.encode(clk_bytes(w))))
            .collect(),
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

/// A deletion batch of the linkage unit (SPEC.md §10.3.2): a token file with `header` (that
/// of one of the holder's token files of the project, so that it names the same project,
/// holder and schema) and one record per id of `ids`, in order, with no token (and an
/// all-zero CLK when the header has `clk_bits`): only the ids are read.
pub fn encode_deletions<'i>(header: &Header, ids: impl IntoIterator<Item = &'i str>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_header(&mut out, header);
    let zeros = vec![0u64; header.clk_bits.map_or(0, |b| b as usize / 64)];
    let clk = header.clk_bits.map(|_| zeros.as_slice());
    let mut n = 0u64;
    for id in ids {
        encode_record(&mut out, id, std::iter::empty(), clk);
        n += 1;
    }
    encode_trailer(
        &mut out,
        &Counts {
            records: n,
            read: n,
            tokenized: n,
            encoding: "utf-8".to_owned(),
            ..Counts::default()
        },
    );
    out
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
    /// Version 2: `(index into the header's dice, field mask, filter words)`.
    pub dice: Vec<(usize, u32, Vec<u64>)>,
}

/// Records of consecutive lines of a token file, stored flat (no allocation per record):
/// what [`Reader::next_batches`] parses on several threads.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecordBatch {
    ids: String,
    id_ends: Vec<usize>,
    tokens: Vec<(u32, [u8; 32])>,
    token_ends: Vec<usize>,
    clks: Vec<u64>,
    clk_words: usize,
    /// `(dice index, mask, start in dice_words)` of every record's comparison filters.
    dice: Vec<(u32, u32, usize)>,
    dice_ends: Vec<usize>,
    dice_words: Vec<u64>,
    /// Words of each of the header's dice filters.
    dice_len: Vec<usize>,
}

impl RecordBatch {
    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.id_ends.len()
    }

    /// Whether the batch has no record.
    pub fn is_empty(&self) -> bool {
        self.id_ends.is_empty()
    }

    fn start(ends: &[usize], i: usize) -> usize {
        if i == 0 { 0 } else { ends[i - 1] }
    }

    /// Record `i`'s id.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn id(&self, i: usize) -> &str {
        &self.ids[Self::start(&self.id_ends, i)..self.id_ends[i]]
    }

    /// Record `i`'s `(recipe index into the header's recipes, token)` pairs.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn tokens(&self, i: usize) -> &[(u32, [u8; 32])] {
        &self.tokens[Self::start(&self.token_ends, i)..self.token_ends[i]]
    }

    /// Record `i`'s CLK words (when the header has `clk_bits`).
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn clk(&self, i: usize) -> Option<&[u64]> {
        (self.clk_words > 0).then(|| &self.clks[i * self.clk_words..(i + 1) * self.clk_words])
    }

    /// Record `i`'s comparison filters: `(index into the header's dice, field mask, words)`.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn dice(&self, i: usize) -> impl Iterator<Item = (usize, u32, &[u64])> + '_ {
        self.dice[Self::start(&self.dice_ends, i)..self.dice_ends[i]]
            .iter()
            .map(|&(d, m, at)| {
                (
                    d as usize,
                    m,
                    &self.dice_words[at..at + self.dice_len[d as usize]],
                )
            })
    }

    /// Every token of the batch with its record's index in the batch: `(record, recipe,
    /// token)`, records in order.
    pub fn all_tokens(&self) -> impl Iterator<Item = (usize, u32, &[u8; 32])> + '_ {
        (0..self.len()).flat_map(move |i| self.tokens(i).iter().map(move |(r, t)| (i, *r, t)))
    }

    fn clear(&mut self) {
        self.ids.clear();
        self.id_ends.clear();
        self.tokens.clear();
        self.token_ends.clear();
        self.clks.clear();
        self.dice.clear();
        self.dice_ends.clear();
        self.dice_words.clear();
    }

    /// Copies one record's fields in (the slow path's [`Record`]).
    fn push_record(&mut self, rec: &Record) {
        self.ids.push_str(&rec.id);
        self.id_ends.push(self.ids.len());
        self.tokens
            .extend(rec.tokens.iter().map(|(r, t)| (*r as u32, *t)));
        self.token_ends.push(self.tokens.len());
        if let Some(c) = &rec.clk {
            self.clks.extend_from_slice(c);
        }
        for (d, m, w) in &rec.dice {
            self.dice.push((*d as u32, *m, self.dice_words.len()));
            self.dice_words.extend_from_slice(w);
        }
        self.dice_ends.push(self.dice.len());
    }
}

/// Errors reading a token file's record lines, before the name and line number are added.
enum LineError {
    Message(String),
}

/// What a line holds.
enum Line {
    Record,
    Trailer(Counts),
}

/// A parsed batch: the trailer's line index in it and counts, if it holds the trailer; or the
/// first bad line's number and what is wrong.
type BatchOutcome = Result<Option<(usize, Counts)>, (u64, String)>;

/// Bytes of record lines parsed by one thread at a time in [`Reader::next_batches`].
const BATCH_BYTES: usize = 1 << 20;

/// The checked per-line part of the format, shared by [`Reader::next`] and
/// [`Reader::next_batches`]: recipe index range, 32-byte base64 tokens, CLK length.
struct LineRules {
    recipes: usize,
    clk_bits: Option<u32>,
    /// Version 2: bits of each Dice filter, and the mask of its fields.
    dice: Vec<(u32, u32)>,
}

impl LineRules {
    /// Parses one line (with or without its `\n`) and appends a record to `out`, or returns
    /// the trailer. The canonical form [`encode_record`] writes is parsed directly; any other
    /// valid JSON (spaces, another key order, escapes) goes through `serde_json` with the same
    /// result, and invalid lines get `serde_json`'s message.
    fn parse(&self, line: &[u8], out: &mut RecordBatch) -> Result<Line, LineError> {
        // `line` is one line: its only `\n`, if any, is its last byte.
        self.parse_at(line, out).1
    }

    /// Parses the line at the start of `buf` (which may hold more lines after it) like
    /// [`Self::parse`]; also returns the line's length with its `\n` (or to the end of
    /// `buf`). A canonical line is parsed in one pass without looking for its end first.
    fn parse_at(&self, buf: &[u8], out: &mut RecordBatch) -> (usize, Result<Line, LineError>) {
        if let Some((n, r)) = self.parse_canonical_at(buf, out) {
            return (n, r.map(|()| Line::Record));
        }
        let n = memchr::memchr(b'\n', buf).map_or(buf.len(), |i| i + 1);
        (n, self.parse_json(&buf[..n], out))
    }

    /// Any JSON line, through `serde_json`.
    fn parse_json(&self, line: &[u8], out: &mut RecordBatch) -> Result<Line, LineError> {
        let parsed: LineIn =
            serde_json::from_slice(line).map_err(|e| LineError::Message(e.to_string()))?;
        if let Some(end) = parsed.end {
            if parsed.id.is_some()
                || parsed.t.is_some()
                || parsed.clk.is_some()
                || parsed.d.is_some()
            {
                return Err(LineError::Message(
                    "a trailer with record fields".to_owned(),
                ));
            }
            return Ok(Line::Trailer(end));
        }
        let (Some(id), Some(t)) = (parsed.id, parsed.t) else {
            return Err(LineError::Message(
                "a record needs \"id\" and \"t\"".to_owned(),
            ));
        };
        let mut rec = Record {
            id,
            tokens: Vec::with_capacity(t.len()),
            clk: None,
            dice: Vec::new(),
        };
        for (r, b64) in t {
            rec.tokens
                .push((r as usize, self.token(r, b64.as_bytes())?));
        }
        rec.clk = self.clk(parsed.clk.as_deref().map(str::as_bytes))?;
        if let Some(d) = parsed.d {
            rec.dice = self.dice(d)?;
        }
        out.push_record(&rec);
        Ok(Line::Record)
    }

    fn token(&self, recipe: u32, b64: &[u8]) -> Result<[u8; 32], LineError> {
        if recipe as usize >= self.recipes {
            return Err(LineError::Message(format!(
                "recipe index {recipe} out of range"
            )));
        }
        // 32 bytes are 44 base64 characters with one `=`; anything else is refused.
        if b64.len() != 44 {
            return Err(LineError::Message(
                if B64.decode(b64).is_ok() {
                    "a token is 32 bytes"
                } else {
                    "token is not base64"
                }
                .to_owned(),
            ));
        }
        if let Some(t) = decode_token_base64(b64) {
            return Ok(t);
        }
        let mut buf = [0u8; 33];
        match B64.decode_slice(b64, &mut buf) {
            Ok(32) => Ok(buf[..32].try_into().expect("32 bytes")),
            Ok(_) => Err(LineError::Message("a token is 32 bytes".to_owned())),
            Err(_) => Err(LineError::Message("token is not base64".to_owned())),
        }
    }

    /// A record's `d`: indices ascending and in range, masks not zero and within the
    /// comparison's fields, filters of the header's length.
    #[allow(clippy::type_complexity, reason = "the record's own field type")]
    fn dice(&self, d: Vec<(u32, u32, String)>) -> Result<Vec<(usize, u32, Vec<u64>)>, LineError> {
        if self.dice.is_empty() {
            return Err(LineError::Message(
                "comparison filters (\"d\") but the header lists no dice comparison".to_owned(),
            ));
        }
        let mut out = Vec::with_capacity(d.len());
        let mut last: Option<u32> = None;
        for (i, mask, b64) in d {
            let Some(&(bits, fields)) = self.dice.get(i as usize) else {
                return Err(LineError::Message(format!("dice index {i} out of range")));
            };
            if last.is_some_and(|l| l >= i) {
                return Err(LineError::Message(
                    "dice indices must be ascending and distinct".to_owned(),
                ));
            }
            last = Some(i);
            if mask == 0 || mask & !fields != 0 {
                return Err(LineError::Message(format!(
                    "dice {i}: field mask {mask} outside 1..={fields}"
                )));
            }
            let bytes = B64
                .decode(b64.as_bytes())
                .map_err(|_| LineError::Message("a dice filter is not base64".to_owned()))?;
            if bytes.len() * 8 != bits as usize {
                return Err(LineError::Message(format!(
                    "dice {i}: a filter of {} bits, the header says {bits}",
                    bytes.len() * 8
                )));
            }
            let words = bytes
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect();
            out.push((i as usize, mask, words));
        }
        Ok(out)
    }

    fn clk(&self, b64: Option<&[u8]>) -> Result<Option<Vec<u64>>, LineError> {
        match (b64, self.clk_bits) {
            (Some(b64), Some(bits)) => {
                let bytes = B64
                    .decode(b64)
                    .map_err(|_| LineError::Message("clk is not base64".to_owned()))?;
                if bytes.len() * 8 != bits as usize {
                    return Err(LineError::Message(format!(
                        "a CLK of {} bits, the header says {bits}",
                        bytes.len() * 8
                    )));
                }
                Ok(Some(
                    bytes
                        .chunks_exact(8)
                        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                        .collect(),
                ))
            }
            (None, None) => Ok(None),
            (None, Some(_)) => Err(LineError::Message(
                "the header has clk_bits but the record no clk".to_owned(),
            )),
            (Some(_), None) => Err(LineError::Message(
                "a clk but the header has no clk_bits".to_owned(),
            )),
        }
    }

    /// The direct parse of `{"id":"…","t":[[r,"…"],…],"clk":"…"}` (no spaces, no escapes,
    /// recipe indices without leading zeros). `None` when the line is not in that form (the
    /// caller then parses it as JSON); on `Some`, the line's length and either the record
    /// (added to `out`) or an error.
    /// The direct parse of the line at the start of `buf`, with its length: see
    /// [`Self::parse_canonical_inner`]. Nothing of the line stays in `out` unless it is a
    /// record.
    fn parse_canonical_at(
        &self,
        buf: &[u8],
        out: &mut RecordBatch,
    ) -> Option<(usize, Result<(), LineError>)> {
        let (tokens, ids, clks) = (out.tokens.len(), out.ids.len(), out.clks.len());
        let r = self.parse_canonical_inner(buf, out);
        if !matches!(r, Some((_, Ok(())))) {
            // Not canonical, or refused: nothing of the line stays in the batch.
            out.tokens.truncate(tokens);
            out.ids.truncate(ids);
            out.clks.truncate(clks);
        }
        r
    }

    fn parse_canonical_inner(
        &self,
        line: &[u8],
        out: &mut RecordBatch,
    ) -> Option<(usize, Result<(), LineError>)> {
        let mut c = Cursor2 { b: line, i: 0 };
        c.lit(br#"{"id":""#)?;
        let id = c.plain_string()?;
        let id = std::str::from_utf8(id).ok()?;
        c.lit(br#","t":["#)?;
        // A refused token is reported only once the whole line is known to be canonical.
        let mut result = Ok(());
        if c.peek()? == b']' {
            c.i += 1;
        } else {
            loop {
                c.lit(b"[")?;
                let r = c.index()?;
                c.lit(b",\"")?;
                // The usual token: 44 base64 characters and `"`, decoded in one pass.
                let fast = c.token_fast();
                let decoded = match fast {
                    Some(t) if (r as usize) < self.recipes => Ok(t),
                    Some(_) => self.token(r, b""),
                    None => self.token(r, c.plain_string()?),
                };
                c.lit(b"]")?;
                if result.is_ok() {
                    match decoded {
                        Ok(t) => out.tokens.push((r, t)),
                        Err(e) => result = Err(e),
                    }
                }
                match c.next()? {
                    b',' => {}
                    b']' => break,
                    _ => return None,
                }
            }
        }
        let clk = match c.next()? {
            b'}' => None,
            b',' => {
                c.lit(br#""clk":""#)?;
                let b64 = c.plain_string()?;
                c.lit(b"}")?;
                Some(b64)
            }
            _ => return None,
        };
        // Only JSON whitespace may follow, up to the end of the line.
        let mut end = c.i;
        loop {
            match line.get(end) {
                None => break,
                Some(b'\n') => {
                    end += 1;
                    break;
                }
                Some(b' ' | b'\r' | b'\t') => end += 1,
                Some(_) => return None,
            }
        }
        if let Err(e) = result {
            return Some((end, Err(e)));
        }
        let clk = match self.clk(clk) {
            Ok(c) => c,
            Err(e) => return Some((end, Err(e))),
        };
        out.ids.push_str(id);
        out.id_ends.push(out.ids.len());
        out.token_ends.push(out.tokens.len());
        out.dice_ends.push(out.dice.len());
        if let Some(c) = clk {
            out.clks.extend_from_slice(&c);
        }
        Some((end, Ok(())))
    }
}

const INVALID: u8 = 0xff;

/// Value of each byte in the standard base64 alphabet (RFC 4648 §4), [`INVALID`] otherwise.
const B64_VALUE: [u8; 256] = {
    let mut t = [INVALID; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut i = 0;
    while i < 64 {
        t[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// Decodes the 44-character padded standard base64 of a 32-byte token (RFC 4648 §4: ten
/// 4-character groups, then 3 characters and `=`, the last character's 2 unused bits zero —
/// exactly what the `base64` crate's standard engine accepts). `None` for anything else (the
/// caller then asks the `base64` crate, for its verdict and message).
fn decode_token_base64(s: &[u8]) -> Option<[u8; 32]> {
    let s: &[u8; 44] = s.try_into().ok()?;
    if s[43] != b'=' {
        return None;
    }
    let mut out = [0u8; 32];
    let mut bad = 0u8;
    let v = |i: usize, bad: &mut u8| {
        let x = B64_VALUE[usize::from(s[i])];
        *bad |= x & 0x80;
        u32::from(x & 0x3f)
    };
    for g in 0..10 {
        let n = v(4 * g, &mut bad) << 18
            | v(4 * g + 1, &mut bad) << 12
            | v(4 * g + 2, &mut bad) << 6
            | v(4 * g + 3, &mut bad);
        out[3 * g] = (n >> 16) as u8;
        out[3 * g + 1] = (n >> 8) as u8;
        out[3 * g + 2] = n as u8;
    }
    let n = v(40, &mut bad) << 18 | v(41, &mut bad) << 12 | v(42, &mut bad) << 6;
    if bad != 0 || n & 0xff != 0 {
        return None;
    }
    out[30] = (n >> 16) as u8;
    out[31] = (n >> 8) as u8;
    Some(out)
}

/// A byte cursor for [`LineRules::parse_canonical_inner`]: every method returns `None` when the
/// input is not in the canonical form.
struct Cursor2<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor2<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let x = self.peek()?;
        self.i += 1;
        Some(x)
    }

    fn lit(&mut self, s: &[u8]) -> Option<()> {
        if self.b[self.i..].starts_with(s) {
            self.i += s.len();
            Some(())
        } else {
            None
        }
    }

    /// The bytes up to the next `"` (consumed), if none of them needs JSON unescaping or is
    /// a control character.
    fn plain_string(&mut self) -> Option<&'a [u8]> {
        let rest = &self.b[self.i..];
        let n = rest
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if rest[n] != b'"' {
            return None;
        }
        self.i += n + 1;
        Some(&rest[..n])
    }

    /// A token's 44 base64 characters and the closing `"` (consumed), decoded; `None` (and
    /// nothing consumed) for any other string.
    fn token_fast(&mut self) -> Option<[u8; 32]> {
        let rest = &self.b[self.i..];
        if rest.len() > 44 && rest[44] == b'"' {
            let t = decode_token_base64(&rest[..44])?;
            self.i += 45;
            return Some(t);
        }
        None
    }

    /// A JSON non-negative integer without leading zeros that fits `u32`.
    fn index(&mut self) -> Option<u32> {
        let rest = &self.b[self.i..];
        let n = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 || n > 10 || (n > 1 && rest[0] == b'0') {
            return None;
        }
        let v = std::str::from_utf8(&rest[..n]).ok()?.parse().ok()?;
        self.i += n;
        Some(v)
    }
}

/// Reads a token file record by record (or batch by batch, parsed on several threads),
/// checking it as it goes.
pub struct Reader<R> {
    name: String,
    input: R,
    header: Header,
    rules: LineRules,
    line: Vec<u8>,
    line_no: u64,
    records: u64,
    end: Option<Counts>,
    one: RecordBatch,
}

impl<R: BufRead> Reader<R> {
    /// Reads and checks the header of `input`; `name` (a path, an upload) names it in errors.
    ///
    /// # Errors
    /// [`TokenFileError::Format`] for a first line that is not a version-1 or -2 header with a known
    /// token mode; [`TokenFileError::Io`] if reading fails.
    pub fn new(mut input: R, name: &str) -> Result<Self, TokenFileError> {
        let mut line = Vec::new();
        input
            .read_until(b'\n', &mut line)
            .map_err(|source| TokenFileError::Io {
                at: name.to_owned(),
                source,
            })?;
        let bad = |message: String| TokenFileError::Format {
            at: name.to_owned(),
            message,
        };
        let header: Header = serde_json::from_slice(&line)
            .map_err(|e| bad(format!("line 1 is not a renketsu-tokens header: {e}")))?;
        if header.format != FORMAT {
            return Err(bad(format!("format {:?}, not {FORMAT:?}", header.format)));
        }
        match header.version {
            VERSION if !header.dice.is_empty() => {
                return Err(bad(
                    "a version-1 token file has no dice comparisons (version 2 has)".to_owned(),
                ));
            }
            VERSION | VERSION_FEATURES => {}
            v => {
                return Err(bad(format!(
                    "token file version {v}; this renketsu reads versions {VERSION} and {VERSION_FEATURES}"
                )));
            }
        }
        for d in &header.dice {
            if !(d.bits.is_power_of_two() && (64..=65_536).contains(&d.bits))
                || d.fields.is_empty()
                || d.fields.len() > 8
                || !(d.keys.is_empty() || d.keys.len() == d.fields.len())
            {
                return Err(bad(format!(
                    "dice comparison {:?}: {} bits over {} fields (a power of two from 64, 1 to 8 fields)",
                    d.comparison,
                    d.bits,
                    d.fields.len()
                )));
            }
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
        let rules = LineRules {
            recipes: header.recipes.len(),
            clk_bits: header.clk_bits,
            dice: header
                .dice
                .iter()
                .map(|d| (d.bits, (1u32 << d.fields.len()) - 1))
                .collect(),
        };
        let one = RecordBatch {
            clk_words: header.clk_bits.map_or(0, |b| b as usize / 64),
            dice_len: header.dice.iter().map(|d| d.bits as usize / 64).collect(),
            ..RecordBatch::default()
        };
        Ok(Self {
            name: name.to_owned(),
            input,
            header,
            rules,
            line,
            line_no: 1,
            records: 0,
            end: None,
            one,
        })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    fn err_at(&self, line_no: u64, message: impl Into<String>) -> TokenFileError {
        TokenFileError::Format {
            at: format!("{} line {line_no}", self.name),
            message: message.into(),
        }
    }

    fn read_line(&mut self) -> Result<usize, TokenFileError> {
        self.line.clear();
        self.input
            .read_until(b'\n', &mut self.line)
            .map_err(|source| TokenFileError::Io {
                at: self.name.clone(),
                source,
            })
    }

    /// Checks the trailer found at `line_no` after `self.records` records.
    fn trailer(&mut self, end: Counts, line_no: u64) -> Result<(), TokenFileError> {
        if end.records != self.records || end.tokenized != self.records {
            return Err(self.err_at(
                line_no,
                format!(
                    "the trailer counts {} records but the file has {}",
                    end.records, self.records
                ),
            ));
        }
        if end.read != end.tokenized + end.rejected {
            return Err(self.err_at(
                line_no,
                format!(
                    "read {} != tokenized {} + rejected {}",
                    end.read, end.tokenized, end.rejected
                ),
            ));
        }
        self.end = Some(end);
        Ok(())
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
            return Err(self.err_at(self.line_no, "the file ends without its trailer: truncated"));
        }
        self.one.clear();
        match self.rules.parse(&self.line, &mut self.one) {
            Err(LineError::Message(m)) => Err(self.err_at(self.line_no, m)),
            Ok(Line::Trailer(end)) => {
                self.trailer(end, self.line_no)?;
                if self.read_line()? != 0 {
                    return Err(self.err_at(self.line_no + 1, "data after the trailer"));
                }
                Ok(false)
            }
            Ok(Line::Record) => {
                let b = &self.one;
                rec.id.clear();
                rec.id.push_str(b.id(0));
                rec.tokens.clear();
                rec.tokens
                    .extend(b.tokens(0).iter().map(|(r, t)| (*r as usize, *t)));
                rec.clk = b.clk(0).map(<[u64]>::to_vec);
                rec.dice.clear();
                rec.dice
                    .extend(b.dice(0).map(|(d, m, w)| (d, m, w.to_vec())));
                self.records += 1;
                Ok(true)
            }
        }
    }

    /// Reads the next records in batches into `out` (cleared first; its allocations are
    /// reused), about 1 MiB of lines per batch and two batches per thread of the current
    /// rayon pool, parsed in parallel; `false` (and `out` empty) after the trailer. The
    /// records and checks are those of [`Self::next`], in file order.
    ///
    /// # Errors
    /// As [`Self::next`]; the first error in file order.
    pub fn next_batches(&mut self, out: &mut Vec<RecordBatch>) -> Result<bool, TokenFileError> {
        use rayon::prelude::*;
        let want = rayon::current_num_threads() * 2;
        let mut raw: Vec<(u64, Vec<u8>)> = Vec::with_capacity(want);
        let mut eof = false;
        if self.end.is_none() {
            while raw.len() < want && !eof {
                let mut buf = Vec::with_capacity(BATCH_BYTES + 4096);
                let first = self.line_no + 1;
                while buf.len() < BATCH_BYTES {
                    let n = self.input.read_until(b'\n', &mut buf).map_err(|source| {
                        TokenFileError::Io {
                            at: self.name.clone(),
                            source,
                        }
                    })?;
                    if n == 0 {
                        eof = true;
                        break;
                    }
                    self.line_no += 1;
                }
                if !buf.is_empty() {
                    raw.push((first, buf));
                }
            }
        } else if self.read_line()? != 0 {
            return Err(self.err_at(self.line_no + 1, "data after the trailer"));
        }
        out.resize_with(raw.len(), RecordBatch::default);
        let words = self.one.clk_words;
        let dice_len = &self.one.dice_len;
        let rules = &self.rules;
        // Per batch: Ok(trailer found at line index) or Err(line number, message).
        let parsed: Vec<BatchOutcome> = raw
            .par_iter()
            .zip(out.par_iter_mut())
            .map(|((first, buf), batch)| {
                batch.clear();
                batch.clk_words = words;
                batch.dice_len.clone_from(dice_len);
                let mut trailer = None;
                let (mut pos, mut k) = (0usize, 0usize);
                while pos < buf.len() {
                    let line_no = first + k as u64;
                    if trailer.is_some() {
                        return Err((line_no, "data after the trailer".to_owned()));
                    }
                    let (n, r) = rules.parse_at(&buf[pos..], batch);
                    match r {
                        Ok(Line::Record) => {}
                        Ok(Line::Trailer(end)) => trailer = Some((k, end)),
                        Err(LineError::Message(m)) => return Err((line_no, m)),
                    }
                    pos += n;
                    k += 1;
                }
                Ok(trailer)
            })
            .collect();
        for (i, p) in parsed.into_iter().enumerate() {
            let line_no = raw[i].0;
            match p {
                Err((at, m)) => return Err(self.err_at(at, m)),
                Ok(_) if self.end.is_some() => {
                    return Err(self.err_at(line_no, "data after the trailer"));
                }
                Ok(trailer) => {
                    self.records += out[i].len() as u64;
                    if let Some((k, end)) = trailer {
                        self.trailer(end, line_no + k as u64)?;
                    }
                }
            }
        }
        if self.end.is_none() && eof {
            return Err(self.err_at(
                self.line_no + 1,
                "the file ends without its trailer: truncated",
            ));
        }
        out.retain(|b| !b.is_empty());
        Ok(!out.is_empty())
    }

    /// The trailer's counts, once [`Self::next`] has returned `false`.
    pub fn counts(&self) -> Option<&Counts> {
        self.end.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rules() -> LineRules {
        LineRules {
            recipes: 6,
            clk_bits: Some(128),
            dice: Vec::new(),
        }
    }

    /// A version-2 file: two Dice comparisons (128 bits over 2 fields, 64 bits over 1).
    fn v2_file(lines: &[Vec<u8>]) -> Vec<u8> {
        let header = Header {
            format: FORMAT.to_owned(),
            version: VERSION_FEATURES,
            project: "p".to_owned(),
            party: "a".to_owned(),
            schema: SchemaRef {
                name: "s".to_owned(),
                version: 1,
                digest: "00".repeat(32),
            },
            mode: MODE_HMAC.to_owned(),
            oprf_mode: None,
            recipes: vec![RecipeRef {
                name: "r".to_owned(),
                version: 1,
                epoch: None,
                public_key: None,
            }],
            clk_bits: None,
            today: "2026-11-22".to_owned(),
            created_by: "test".to_owned(),
            dice: vec![
                DiceRef {
                    comparison: "name".to_owned(),
                    bits: 128,
                    fields: vec!["kana".to_owned(), "kanji".to_owned()],
                    keys: Vec::new(),
                },
                DiceRef {
                    comparison: "dob".to_owned(),
                    bits: 64,
                    fields: vec!["birth_date".to_owned()],
                    keys: Vec::new(),
                },
            ],
        };
        let mut out = Vec::new();
        encode_header(&mut out, &header);
        for l in lines {
            out.extend_from_slice(l);
        }
        encode_trailer(
            &mut out,
            &Counts {
                records: lines.len() as u64,
                read: lines.len() as u64,
                tokenized: lines.len() as u64,
                ..Counts::default()
            },
        );
        out
    }

    /// Version 2 records round-trip their comparison filters through both readers, records
    /// without filters included; a version-1 header with dice is refused.
    #[test]
    fn version_2_filters_round_trip() {
        let t = [3u8; 32];
        let mut a = Vec::new();
        encode_record_features(
            &mut a,
            "a",
            [(0usize, &t)].into_iter(),
            None,
            &[(0, 0b10, &[7, 8]), (1, 1, &[u64::MAX])],
        );
        let mut b = Vec::new();
        encode_record_features(&mut b, "b", [(0usize, &t)].into_iter(), None, &[]);
        let mut c = Vec::new();
        encode_record_features(&mut c, "c", std::iter::empty(), None, &[(1, 1, &[42])]);
        let bytes = v2_file(&[a, b, c]);
        let mut r = Reader::new(&bytes[..], "f").unwrap();
        assert_eq!(r.header().version, VERSION_FEATURES);
        let mut rec = Record::default();
        let mut got = Vec::new();
        while r.next(&mut rec).unwrap() {
            got.push((rec.id.clone(), rec.dice.clone()));
        }
        let want = vec![
            (
                "a".to_owned(),
                vec![(0, 0b10, vec![7, 8]), (1, 1, vec![u64::MAX])],
            ),
            ("b".to_owned(), vec![]),
            ("c".to_owned(), vec![(1, 1, vec![42])]),
        ];
        assert_eq!(got, want);
        let mut r = Reader::new(&bytes[..], "f").unwrap();
        let mut batches = Vec::new();
        let mut got = Vec::new();
        while r.next_batches(&mut batches).unwrap() {
            for bt in &batches {
                for i in 0..bt.len() {
                    let d: Vec<(usize, u32, Vec<u64>)> =
                        bt.dice(i).map(|(k, m, w)| (k, m, w.to_vec())).collect();
                    got.push((bt.id(i).to_owned(), d));
                }
            }
        }
        assert_eq!(got, want);
        // The same header claiming version 1 is refused.
        let text = String::from_utf8(bytes).unwrap();
        let v1 = text.replacen("\"version\":2", "\"version\":1", 1);
        let err = Reader::new(v1.as_bytes(), "f").err().unwrap().to_string();
        assert!(err.contains("version-1 token file has no dice"), "{err}");
    }

    #[test]
    fn version_2_refuses_bad_filters() {
        let t = B64.encode([1u8; 32]);
        let f128 = B64.encode([0u8; 16]);
        let f64b = B64.encode([0u8; 8]);
        let cases = [
            (
                format!(r#"{{"id":"a","t":[[0,"{t}"]],"d":[[2,1,"{f64b}"]]}}"#),
                "dice index 2 out of range",
            ),
            (
                format!(r#"{{"id":"a","t":[[0,"{t}"]],"d":[[0,4,"{f128}"]]}}"#),
                "dice 0: field mask 4 outside 1..=3",
            ),
            (
                format!(r#"{{"id":"a","t":[[0,"{t}"]],"d":[[0,0,"{f128}"]]}}"#),
                "dice 0: field mask 0 outside 1..=3",
            ),
            (
                format!(r#"{{"id":"a","t":[[0,"{t}"]],"d":[[1,1,"{f128}"]]}}"#),
                "dice 1: a filter of 128 bits, the header says 64",
            ),
            (
                format!(r#"{{"id":"a","t":[[0,"{t}"]],"d":[[1,1,"{f64b}"],[0,1,"{f128}"]]}}"#),
                "dice indices must be ascending and distinct",
            ),
            (
                format!(r#"{{"id":"a","t":[[0,"{t}"]],"d":[[0,1,"!!"]]}}"#),
                "a dice filter is not base64",
            ),
        ];
        for (line, want) in cases {
            let bytes = v2_file(&[format!("{line}\n").into_bytes()]);
            let mut r = Reader::new(&bytes[..], "f").unwrap();
            let err = r.next(&mut Record::default()).err().unwrap().to_string();
            assert!(err.ends_with(want), "{line}: {err}");
            let mut r = Reader::new(&bytes[..], "f").unwrap();
            let err = r.next_batches(&mut Vec::new()).err().unwrap().to_string();
            assert!(err.ends_with(want), "{line}: {err}");
        }
        // Filters in a file whose header lists no dice comparison.
        let bytes = file(0, 0);
        let mut text = String::from_utf8(bytes).unwrap();
        let at = text.find('\n').unwrap() + 1;
        text.insert_str(
            at,
            &format!("{{\"id\":\"a\",\"t\":[],\"d\":[[0,1,\"{f64b}\"]]}}\n"),
        );
        let text = text.replace(
            "\"records\":0,\"read\":0,\"tokenized\":0",
            "\"records\":1,\"read\":1,\"tokenized\":1",
        );
        let mut r = Reader::new(text.as_bytes(), "f").unwrap();
        let err = r.next(&mut Record::default()).err().unwrap().to_string();
        assert!(err.contains("header lists no dice"), "{err}");
    }

    fn batch() -> RecordBatch {
        RecordBatch {
            clk_words: 2,
            ..RecordBatch::default()
        }
    }

    fn message(r: Result<Line, LineError>) -> String {
        match r {
            Err(LineError::Message(m)) => m,
            Ok(_) => "ok".to_owned(),
        }
    }

    proptest! {
        /// The direct parse of canonical lines, the JSON parse, and the JSON parse of the same
        /// record re-serialized with spaces and keys in another order give the same record.
        #[test]
        fn canonical_and_json_parses_agree(
            id in "\\PC{0,12}|[\"\\\\\u{1}a-z]{0,6}",
            tokens in proptest::collection::vec((0usize..6, any::<[u8; 32]>()), 0..5),
            clk in any::<[u64; 2]>(),
        ) {
            let mut line = Vec::new();
            encode_record(&mut line, &id, tokens.iter().map(|(r, t)| (*r, t)), Some(&clk));
            let (mut a, mut b, mut c) = (batch(), batch(), batch());
            prop_assert!(matches!(rules().parse(&line, &mut a), Ok(Line::Record)));
            prop_assert!(matches!(rules().parse_json(&line, &mut b), Ok(Line::Record)));
            let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
            let spaced = format!(
                "{{ \"clk\" : {}, \"t\" : {}, \"id\" : {} }}\n",
                v["clk"], v["t"], v["id"]
            );
            prop_assert!(matches!(rules().parse(spaced.as_bytes(), &mut c), Ok(Line::Record)));
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(&a, &c);
            // Ids that JSON writes without escapes take the direct parse.
            if !id.chars().any(|ch| ch == '"' || ch == '\\' || ch < ' ' || ch == '\u{7f}') {
                prop_assert!(matches!(rules().parse_canonical_at(&line, &mut batch()), Some((_, Ok(())))));
            }
            prop_assert_eq!(a.id(0), id.as_str());
            let got: Vec<(usize, [u8; 32])> =
                a.tokens(0).iter().map(|(r, t)| (*r as usize, *t)).collect();
            prop_assert_eq!(got, tokens);
            prop_assert_eq!(a.clk(0), Some(&clk[..]));
        }

        /// Any change of a canonical line is refused by both parses or accepted by both with
        /// the same record.
        #[test]
        fn mutated_lines_parse_alike(pos in 0usize..200, byte in any::<u8>()) {
            let mut line = Vec::new();
            encode_record(&mut line, "r-17", [(1usize, &[9u8; 32]), (3, &[200; 32])].into_iter(), Some(&[5, 6]));
            let pos = pos % line.len();
            line[pos] = byte;
            let (mut a, mut b) = (batch(), batch());
            let ra = rules().parse(&line, &mut a);
            let rb = rules().parse_json(&line, &mut b);
            prop_assert_eq!(ra.is_ok(), rb.is_ok(), "{:?}", String::from_utf8_lossy(&line));
            prop_assert_eq!(&a, &b);
        }
    }

    proptest! {
        /// The token decoder accepts exactly what the `base64` crate accepts (for 44
        /// characters) and gives the same bytes.
        #[test]
        fn token_base64_agrees_with_the_base64_crate(
            token in any::<[u8; 32]>(),
            flips in proptest::collection::vec((0usize..44, "[A-Za-z0-9+/=\"\\!]"), 0..3),
        ) {
            let mut s = B64.encode(token).into_bytes();
            prop_assert_eq!(decode_token_base64(&s), Some(token));
            for (i, ch) in flips {
                s[i] = ch.as_bytes()[0];
            }
            let want = B64.decode(&s).ok().filter(|v| v.len() == 32);
            prop_assert_eq!(decode_token_base64(&s).map(|t| t.to_vec()), want);
        }
    }

    #[test]
    fn line_rules_refuse_bad_tokens_and_clks_on_both_paths() {
        let good = B64.encode([1u8; 32]);
        let cases = [
            (format!(r#"{{"id":"a","t":[[6,"{good}"]],"clk":"AAAAAAAAAAAAAAAAAAAAAA=="}}"#), "recipe index 6 out of range"),
            (format!(r#"{{"id":"a","t":[[0,"{}"]],"clk":"AAAAAAAAAAAAAAAAAAAAAA=="}}"#, B64.encode([1u8; 31])), "a token is 32 bytes"),
            (r#"{"id":"a","t":[[0,"!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!="]],"clk":"AAAAAAAAAAAAAAAAAAAAAA=="}"#.to_owned(), "token is not base64"),
            (format!(r#"{{"id":"a","t":[[0,"{good}"]],"clk":"AAAA"}}"#), "a CLK of 24 bits, the header says 128"),
            (format!(r#"{{"id":"a","t":[[0,"{good}"]]}}"#), "the header has clk_bits but the record no clk"),
        ];
        for (line, want) in cases {
            assert_eq!(
                message(rules().parse(line.as_bytes(), &mut batch())),
                want,
                "{line}"
            );
            assert_eq!(
                message(rules().parse_json(line.as_bytes(), &mut batch())),
                want,
                "{line}"
            );
        }
    }

    fn file(records: usize, trailer_records: u64) -> Vec<u8> {
        let header = Header {
            format: FORMAT.to_owned(),
            version: VERSION,
            project: "p".to_owned(),
            party: "a".to_owned(),
            schema: SchemaRef {
                name: "s".to_owned(),
                version: 1,
                digest: "00".repeat(32),
            },
            mode: MODE_HMAC.to_owned(),
            oprf_mode: None,
            recipes: (0..3)
                .map(|i| RecipeRef {
                    name: format!("r{i}"),
                    version: 1,
                    epoch: None,
                    public_key: None,
                })
                .collect(),
            clk_bits: None,
            today: "2026-11-22".to_owned(),
            created_by: "test".to_owned(),
            dice: Vec::new(),
        };
        let mut out = Vec::new();
        encode_header(&mut out, &header);
        for i in 0..records {
            let t = [(i % 3, [i as u8; 32]), ((i + 1) % 3, [(i / 256) as u8; 32])];
            encode_record(
                &mut out,
                &format!("id{i}"),
                t.iter().map(|(r, t)| (*r, t)),
                None,
            );
        }
        let counts = Counts {
            records: trailer_records,
            read: trailer_records,
            tokenized: trailer_records,
            ..Counts::default()
        };
        encode_trailer(&mut out, &counts);
        out
    }

    fn by_records(bytes: &[u8]) -> Result<Vec<Record>, TokenFileError> {
        let mut r = Reader::new(bytes, "f")?;
        let mut out = Vec::new();
        let mut rec = Record::default();
        while r.next(&mut rec)? {
            out.push(rec.clone());
        }
        Ok(out)
    }

    fn by_batches(bytes: &[u8]) -> Result<Vec<Record>, TokenFileError> {
        let mut r = Reader::new(bytes, "f")?;
        let mut out = Vec::new();
        let mut batches = Vec::new();
        while r.next_batches(&mut batches)? {
            for b in &batches {
                for i in 0..b.len() {
                    out.push(Record {
                        id: b.id(i).to_owned(),
                        tokens: b.tokens(i).iter().map(|(r, t)| (*r as usize, *t)).collect(),
                        clk: b.clk(i).map(<[u64]>::to_vec),
                        dice: b.dice(i).map(|(d, m, w)| (d, m, w.to_vec())).collect(),
                    });
                }
            }
        }
        assert!(r.counts().is_some());
        Ok(out)
    }

    #[test]
    fn batches_give_the_records_of_next() {
        // ~30,000 lines: several 1 MiB batches, the trailer in the last.
        let bytes = file(30_000, 30_000);
        assert!(bytes.len() > 3 * BATCH_BYTES);
        let a = by_records(&bytes).unwrap();
        assert_eq!(a.len(), 30_000);
        assert_eq!(by_batches(&bytes).unwrap(), a);
    }

    #[test]
    fn batches_refuse_what_next_refuses() {
        let err = |r: Result<Vec<Record>, TokenFileError>| match r {
            Ok(v) => panic!(
                "accepted ({} records, last {:?})",
                v.len(),
                v.last().map(|r| &r.id)
            ),
            Err(e) => e.to_string(),
        };
        // Trailer counts off.
        let bytes = file(5_000, 4_999);
        assert!(err(by_records(&bytes)).contains("trailer counts 4999 records"));
        assert!(err(by_batches(&bytes)).contains("trailer counts 4999 records"));
        // Truncated: the trailer cut off.
        let whole = file(5_000, 5_000);
        let cut = &whole[..whole.len() - 20];
        let cut = &cut[..=cut.iter().rposition(|&b| b == b'\n').unwrap()];
        assert!(err(by_records(cut)).contains("truncated"));
        assert!(err(by_batches(cut)).contains("truncated"));
        // Data after the trailer.
        let mut extra = whole.clone();
        extra.extend_from_slice(b"{}\n");
        assert!(err(by_records(&extra)).contains("data after the trailer"));
        assert!(err(by_batches(&extra)).contains("data after the trailer"));
        // A bad token deep in the file: the same line named by both.
        let text = String::from_utf8(whole).unwrap();
        let bad = text.replacen("\"id4320\",\"t\":[[0,\"", "\"id4320\",\"t\":[[0,\"*", 1);
        assert_ne!(bad, text);
        let (a, b) = (
            err(by_records(bad.as_bytes())),
            err(by_batches(bad.as_bytes())),
        );
        assert!(a.contains("f line 4322: token is not base64"), "{a}");
        assert_eq!(a, b);
    }
}
