//! A holder's token state under incremental uploads (SPEC.md §10.3.2): its token upload (the
//! base) with its token batches (new records, and corrected records that replace the record
//! of the same id) and deletion batches (ids removed) applied in `batch_seq` order, read as
//! **one token file** ([`MergedState`]), so that a job links the state exactly as it would
//! link a full upload of the same records.
//!
//! Pure (no database, no async): the base is streamed (one line in memory at a time), the
//! batches are read whole (they are what changed, not the state). Memory: the batches'
//! bytes plus, per batch record id, the id and its last batch index.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, Read as _};

use renketsu_linkage::token_file::{Counts, Header, encode_trailer};
use renketsu_linkage::tokenlink::TokenLinkError;
use serde::Deserialize;
use serde::de::IgnoredAny;

/// What a batch does to the holder's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BatchKind {
    /// New records, and corrected records (an id held already: its record is replaced).
    Records,
    /// The record ids are deleted (tokens not read).
    Deletions,
}

/// One batch, in its place of the holder's sequence.
pub struct Batch {
    /// What it does.
    pub kind: BatchKind,
    /// Its name in messages (e.g. `upload 1a2b… of ehr, batch 3`).
    pub name: String,
    /// The token file (SPEC.md §5.5), e.g. the stored chunks in order.
    pub input: Box<dyn BufRead + Send>,
}

/// How the batches changed the state, counted when the merged file has been read to its end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeCounts {
    /// Records of the base upload.
    pub base_records: u64,
    /// Records in the merged file.
    pub records: u64,
    /// Batch records whose id the state held before (corrections).
    pub replaced: u64,
    /// Batch records whose id the state did not hold (new records).
    pub added: u64,
    /// Deleted ids the state held.
    pub deleted: u64,
    /// Deleted ids the state did not hold (nothing to delete; counted, not an error).
    pub deleted_unknown: u64,
}

/// A line of a token file as far as merging needs it: the record id and the recipes of its
/// tokens, or the trailer. Everything else (token bytes, CLKs, filters) is skipped.
#[derive(Deserialize)]
struct LineIds {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    t: Option<Vec<(u32, IgnoredAny)>>,
    #[serde(default)]
    end: Option<Counts>,
}

struct BatchFile {
    kind: BatchKind,
    /// `(id, record line with its newline)` in file order (empty lines list for deletions:
    /// only ids are kept).
    records: Vec<(String, Vec<u8>)>,
    counts: Counts,
}

enum Stage {
    Header,
    Base,
    Batches { batch: usize, record: usize },
    Done,
}

/// The merged token file of a holder's state, as a [`BufRead`]: the base's header, the
/// base's records not replaced or deleted by a batch (in base order), then each token
/// batch's records that no later batch replaces or deletes (batch order, then file order),
/// then a trailer counting them. A batch must be made like the base (same project, holder,
/// schema, mode, recipes and epochs, CLK length and comparison filters).
pub struct MergedState {
    base: Box<dyn BufRead + Send>,
    base_name: String,
    stage: Stage,
    /// The batches until the first read.
    pending: Option<Vec<Batch>>,
    batches: Vec<BatchFile>,
    /// Per id named by a batch: the index of the last batch naming it.
    last: HashMap<String, usize>,
    /// Batch ids the base holds.
    in_base: HashSet<String>,
    recipes: Vec<String>,
    tokens_by_recipe: BTreeMap<String, u64>,
    base_counts: Option<Counts>,
    emitted: u64,
    base_records: u64,
    line: Vec<u8>,
    out: Vec<u8>,
    pos: usize,
    counts: Option<MergeCounts>,
}

fn incompatible(m: String) -> TokenLinkError {
    TokenLinkError::Incompatible(m)
}

fn bad_line(name: &str, line: u64, e: &serde_json::Error) -> TokenLinkError {
    TokenLinkError::Input {
        input: name.to_owned(),
        message: format!("line {line}: {e}"),
    }
}

/// Reads one line (with its newline) into `buf`; `false` at the end of the input.
fn read_line(
    input: &mut dyn BufRead,
    buf: &mut Vec<u8>,
    name: &str,
) -> Result<bool, TokenLinkError> {
    buf.clear();
    let n = input
        .read_until(b'\n', buf)
        .map_err(|e| TokenLinkError::Input {
            input: name.to_owned(),
            message: format!("cannot read: {e}"),
        })?;
    Ok(n > 0)
}

fn header_of(line: &[u8], name: &str) -> Result<Header, TokenLinkError> {
    serde_json::from_slice(line).map_err(|e| bad_line(name, 1, &e))
}

/// Whether two headers make tokens that link and records that read alike.
fn same_making(a: &Header, b: &Header) -> bool {
    (
        &a.project,
        &a.party,
        &a.schema,
        &a.mode,
        &a.oprf_mode,
        &a.recipes,
        a.clk_bits,
        &a.dice,
    ) == (
        &b.project,
        &b.party,
        &b.schema,
        &b.mode,
        &b.oprf_mode,
        &b.recipes,
        b.clk_bits,
        &b.dice,
    )
}

fn add_counts(into: &mut Counts, c: &Counts) {
    into.rejected += c.rejected;
    for (k, n) in &c.rejects_by_reason {
        *into.rejects_by_reason.entry(k.clone()).or_default() += n;
    }
    for (f, m) in &c.field_rejects {
        let e = into.field_rejects.entry(f.clone()).or_default();
        for (k, n) in m {
            *e.entry(k.clone()).or_default() += n;
        }
    }
}

impl MergedState {
    /// The merged file of `base` (named `base_name` in messages) with `batches` applied in
    /// order. Nothing is read yet: the first read reads the base's header and every batch
    /// whole (so this can be made on an async task and read on a blocking thread).
    pub fn new(base: Box<dyn BufRead + Send>, base_name: &str, batches: Vec<Batch>) -> Self {
        Self {
            base,
            base_name: base_name.to_owned(),
            stage: Stage::Header,
            pending: Some(batches),
            batches: Vec::new(),
            last: HashMap::new(),
            in_base: HashSet::new(),
            recipes: Vec::new(),
            tokens_by_recipe: BTreeMap::new(),
            base_counts: None,
            emitted: 0,
            base_records: 0,
            line: Vec::new(),
            out: Vec::new(),
            pos: 0,
            counts: None,
        }
    }

    /// Reads the base's header (into `out`) and every batch whole.
    ///
    /// # Errors
    /// [`TokenLinkError::Input`] for a line that is not JSON or a file without header or
    /// trailer; [`TokenLinkError::Incompatible`] for a batch made unlike the base.
    fn start(&mut self, batches: Vec<Batch>) -> Result<(), TokenLinkError> {
        let base_name = self.base_name.clone();
        let mut line = Vec::new();
        if !read_line(&mut *self.base, &mut line, &base_name)? {
            return Err(TokenLinkError::Input {
                input: base_name,
                message: "empty token file".to_owned(),
            });
        }
        let header = header_of(&line, &base_name)?;
        self.recipes = header.recipes.iter().map(|r| r.name.clone()).collect();
        for (i, b) in batches.into_iter().enumerate() {
            let mut bytes = Vec::new();
            let mut input = b.input;
            input
                .read_to_end(&mut bytes)
                .map_err(|e| TokenLinkError::Input {
                    input: b.name.clone(),
                    message: format!("cannot read: {e}"),
                })?;
            let mut lines = bytes.split_inclusive(|&c| c == b'\n');
            let h = header_of(lines.next().unwrap_or_default(), &b.name)?;
            if !same_making(&h, &header) {
                return Err(incompatible(format!(
                    "{} was made with other settings than {base_name} (project, holder, schema, token mode, recipes and epochs, CLK length, comparison filters): tokenize the batch like the token upload, or upload a full token file",
                    b.name
                )));
            }
            let mut records = Vec::new();
            let mut counts = None;
            for (k, l) in lines.enumerate() {
                let parsed: LineIds =
                    serde_json::from_slice(l).map_err(|e| bad_line(&b.name, k as u64 + 2, &e))?;
                match (parsed.id, parsed.end) {
                    (_, Some(end)) => {
                        counts = Some(end);
                        break;
                    }
                    (Some(id), None) => {
                        self.last.insert(id.clone(), i);
                        let keep = if b.kind == BatchKind::Records {
                            l.to_vec()
                        } else {
                            Vec::new()
                        };
                        records.push((id, keep));
                    }
                    (None, None) => {
                        return Err(TokenLinkError::Input {
                            input: b.name.clone(),
                            message: format!("line {}: neither a record nor the trailer", k + 2),
                        });
                    }
                }
            }
            let counts = counts.ok_or_else(|| TokenLinkError::Input {
                input: b.name.clone(),
                message: "no trailer (truncated)".to_owned(),
            })?;
            self.batches.push(BatchFile {
                kind: b.kind,
                records,
                counts,
            });
        }
        self.out = line;
        self.pos = 0;
        Ok(())
    }

    /// How the batches changed the state; `None` until the merged file is read to its end.
    pub fn counts(&self) -> Option<MergeCounts> {
        self.counts
    }

    fn count_recipes(&mut self, t: Option<&[(u32, IgnoredAny)]>) {
        let mut seen: Vec<u32> = t.unwrap_or_default().iter().map(|(r, _)| *r).collect();
        seen.sort_unstable();
        seen.dedup();
        for r in seen {
            if let Some(name) = self.recipes.get(r as usize) {
                *self.tokens_by_recipe.entry(name.clone()).or_default() += 1;
            }
        }
    }

    /// Fills `out` with the next line(s); `Ok(false)` when everything is out.
    fn advance(&mut self) -> Result<bool, TokenLinkError> {
        self.out.clear();
        self.pos = 0;
        loop {
            match self.stage {
                Stage::Header => {
                    self.stage = Stage::Base;
                }
                Stage::Base => {
                    let name = self.base_name.clone();
                    if !read_line(&mut *self.base, &mut self.line, &name)? {
                        return Err(TokenLinkError::Input {
                            input: name,
                            message: "no trailer (truncated)".to_owned(),
                        });
                    }
                    let parsed: LineIds = serde_json::from_slice(&self.line)
                        .map_err(|e| bad_line(&name, self.base_records + 2, &e))?;
                    if let Some(end) = parsed.end {
                        self.base_counts = Some(end);
                        self.stage = Stage::Batches {
                            batch: 0,
                            record: 0,
                        };
                        continue;
                    }
                    let Some(id) = parsed.id else {
                        return Err(TokenLinkError::Input {
                            input: name,
                            message: format!(
                                "line {}: neither a record nor the trailer",
                                self.base_records + 2
                            ),
                        });
                    };
                    self.base_records += 1;
                    if self.last.contains_key(&id) {
                        self.in_base.insert(id);
                        continue;
                    }
                    self.count_recipes(parsed.t.as_deref());
                    self.emitted += 1;
                    std::mem::swap(&mut self.out, &mut self.line);
                    if self.out.last() != Some(&b'\n') {
                        self.out.push(b'\n');
                    }
                    return Ok(true);
                }
                Stage::Batches { batch, record } => {
                    let Some(file) = self.batches.get(batch) else {
                        self.trailer();
                        self.stage = Stage::Done;
                        return Ok(true);
                    };
                    let Some((id, line)) = file.records.get(record) else {
                        self.stage = Stage::Batches {
                            batch: batch + 1,
                            record: 0,
                        };
                        continue;
                    };
                    self.stage = Stage::Batches {
                        batch,
                        record: record + 1,
                    };
                    if file.kind == BatchKind::Deletions || self.last.get(id) != Some(&batch) {
                        continue;
                    }
                    let line = line.clone();
                    let parsed: LineIds = serde_json::from_slice(&line)
                        .map_err(|e| bad_line(&self.base_name, 0, &e))?;
                    self.count_recipes(parsed.t.as_deref());
                    self.emitted += 1;
                    self.out = line;
                    if self.out.last() != Some(&b'\n') {
                        self.out.push(b'\n');
                    }
                    return Ok(true);
                }
                Stage::Done => return Ok(false),
            }
        }
    }

    /// The trailer of the merged file, and the merge counts.
    fn trailer(&mut self) {
        let base = self.base_counts.take().unwrap_or_default();
        let mut c = Counts {
            encoding: base.encoding.clone(),
            ..Counts::default()
        };
        add_counts(&mut c, &base);
        for f in &self.batches {
            if f.kind == BatchKind::Records {
                add_counts(&mut c, &f.counts);
            }
        }
        c.records = self.emitted;
        c.tokenized = self.emitted;
        c.read = self.emitted + c.rejected;
        c.tokens_by_recipe = std::mem::take(&mut self.tokens_by_recipe);
        encode_trailer(&mut self.out, &c);
        // Replay the batches in order over "which ids does the state hold" to count them.
        let mut held: HashMap<&str, bool> = HashMap::new();
        let mut m = MergeCounts {
            base_records: self.base_records,
            records: self.emitted,
            ..MergeCounts::default()
        };
        for f in &self.batches {
            for (id, _) in &f.records {
                let was = *held.get(id.as_str()).unwrap_or(&self.in_base.contains(id));
                match (f.kind, was) {
                    (BatchKind::Records, true) => m.replaced += 1,
                    (BatchKind::Records, false) => m.added += 1,
                    (BatchKind::Deletions, true) => m.deleted += 1,
                    (BatchKind::Deletions, false) => m.deleted_unknown += 1,
                }
                held.insert(id, f.kind == BatchKind::Records);
            }
        }
        tracing::info!(
            state = %self.base_name,
            base_records = m.base_records,
            records = m.records,
            added = m.added,
            replaced = m.replaced,
            deleted = m.deleted,
            deleted_unknown = m.deleted_unknown,
            "batches applied"
        );
        self.counts = Some(m);
    }
}

impl std::io::Read for MergedState {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let b = self.fill_buf()?;
        let n = b.len().min(buf.len());
        buf[..n].copy_from_slice(&b[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for MergedState {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if let Some(batches) = self.pending.take() {
            self.start(batches).map_err(std::io::Error::other)?;
        }
        while self.pos == self.out.len() {
            if matches!(self.stage, Stage::Done) && self.counts.is_some() {
                return Ok(&[]);
            }
            if !self.advance().map_err(std::io::Error::other)? {
                return Ok(&[]);
            }
        }
        Ok(&self.out[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.out.len());
    }
}

#[cfg(test)]
mod tests {
    use renketsu_linkage::token_file::{
        FORMAT, MODE_HMAC, Reader, RecipeRef, Record, SchemaRef, VERSION, encode_deletions,
        encode_header, encode_record,
    };

    use super::*;

    fn header(party: &str) -> Header {
        Header {
            format: FORMAT.to_owned(),
            version: VERSION,
            project: "p".to_owned(),
            party: party.to_owned(),
            schema: SchemaRef {
                name: "s".to_owned(),
                version: 1,
                digest: "d".repeat(64),
            },
            mode: MODE_HMAC.to_owned(),
            oprf_mode: None,
            recipes: vec![RecipeRef {
                name: "r0".to_owned(),
                version: 1,
                epoch: None,
                public_key: None,
            }],
            clk_bits: None,
            today: "2026-12-07".to_owned(),
            created_by: "test".to_owned(),
            dice: Vec::new(),
        }
    }

    /// A token file of `(id, token byte)` records (one token of recipe 0 each).
    fn file(h: &Header, recs: &[(&str, u8)], rejected: u64) -> Vec<u8> {
        let mut out = Vec::new();
        encode_header(&mut out, h);
        for (id, t) in recs {
            encode_record(&mut out, id, std::iter::once((0, &[*t; 32])), None);
        }
        let n = recs.len() as u64;
        encode_trailer(
            &mut out,
            &Counts {
                records: n,
                read: n + rejected,
                tokenized: n,
                rejected,
                encoding: "utf-8".to_owned(),
                ..Counts::default()
            },
        );
        out
    }

    fn batch(kind: BatchKind, bytes: Vec<u8>) -> Batch {
        Batch {
            kind,
            name: "batch".to_owned(),
            input: Box::new(std::io::Cursor::new(bytes)),
        }
    }

    /// The merged file read back with the token-file reader: `(id, token byte)` in order.
    fn read(m: MergedState) -> Result<(Vec<(String, u8)>, Counts), String> {
        let mut r = Reader::new(m, "merged").map_err(|e| e.to_string())?;
        let mut rec = Record::default();
        let mut out = Vec::new();
        while r.next(&mut rec).map_err(|e| e.to_string())? {
            out.push((rec.id.clone(), rec.tokens[0].1[0]));
        }
        Ok((out, r.counts().unwrap().clone()))
    }

    #[test]
    fn batches_replace_add_and_delete_in_order() {
        let h = header("ehr");
        let base = file(&h, &[("a", 1), ("b", 2), ("c", 3), ("d", 4)], 2);
        let batches = vec![
            // b corrected, e new.
            batch(BatchKind::Records, file(&h, &[("b", 20), ("e", 5)], 1)),
            // c and e deleted, x unknown.
            batch(BatchKind::Deletions, encode_deletions(&h, ["c", "e", "x"])),
            // e comes back, b corrected again.
            batch(BatchKind::Records, file(&h, &[("e", 50), ("b", 21)], 0)),
        ];
        let m = MergedState::new(Box::new(std::io::Cursor::new(base)), "base", batches);
        let (recs, counts) = read(m).unwrap();
        let want: Vec<(String, u8)> = [("a", 1), ("d", 4), ("e", 50), ("b", 21)]
            .iter()
            .map(|(i, t)| ((*i).to_owned(), *t))
            .collect();
        assert_eq!(recs, want);
        assert_eq!((counts.records, counts.rejected, counts.read), (4, 3, 7));
        assert_eq!(counts.tokens_by_recipe.get("r0"), Some(&4));
    }

    #[test]
    fn merge_counts_say_what_changed() {
        let h = header("ehr");
        let base = file(&h, &[("a", 1), ("b", 2)], 0);
        let batches = vec![
            batch(BatchKind::Records, file(&h, &[("b", 20), ("e", 5)], 0)),
            batch(BatchKind::Deletions, encode_deletions(&h, ["a", "x"])),
        ];
        let mut m = MergedState::new(Box::new(std::io::Cursor::new(base)), "base", batches);
        assert_eq!(m.counts(), None);
        let mut all = Vec::new();
        m.read_to_end(&mut all).unwrap();
        assert_eq!(
            m.counts(),
            Some(MergeCounts {
                base_records: 2,
                records: 2,
                replaced: 1,
                added: 1,
                deleted: 1,
                deleted_unknown: 1,
            })
        );
    }

    #[test]
    fn a_batch_made_unlike_the_base_is_refused() {
        let h = header("ehr");
        let mut other = header("ehr");
        other.mode = "oprf-ristretto255".to_owned();
        let base = file(&h, &[("a", 1)], 0);
        let m = MergedState::new(
            Box::new(std::io::Cursor::new(base)),
            "base",
            vec![batch(BatchKind::Records, file(&other, &[("b", 2)], 0))],
        );
        let e = read(m).unwrap_err();
        assert!(e.contains("made with other settings than base"), "{e}");
    }

    #[test]
    fn a_truncated_base_is_an_error() {
        let h = header("ehr");
        let mut base = file(&h, &[("a", 1), ("b", 2)], 0);
        // Without its trailer line.
        base.pop();
        let cut = base.iter().rposition(|&c| c == b'\n').unwrap();
        base.truncate(cut + 1);
        let m = MergedState::new(
            Box::new(std::io::Cursor::new(base)),
            "base",
            vec![batch(BatchKind::Deletions, encode_deletions(&h, ["a"]))],
        );
        let e = read(m).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
    }
}
