//! Ingest: one holder's CSV in, checked and tokenized records out (SPEC.md §3.3).
//!
//! Shared by `renketsu link`, `renketsu tokenize` (both modes) and every other caller of the
//! engine, so that all accept and reject exactly the same rows with the same reason codes.
//!
//! Fatal (the whole input is refused with an [`IngestError`]): no header row, a header that is
//! not decodable, a missing id column, duplicate header names, no recipe the columns allow, a
//! quoted field running over several lines in a ragged row (an unterminated quote).
//! Per row (the row goes to the [`RejectSink`] with a [`RowReject`] reason code): ragged rows,
//! undecodable bytes, empty or duplicate ids, rows that yield nothing to link by.

mod csv_input;

use std::collections::{BTreeMap, HashSet};

pub use csv_input::{CsvSource, Encoding, EncodingChoice, SNIFF_BYTES, detect_encoding};

use crate::schema::{LinkMode, Schema};
use crate::tokenizer::{RecipeSource, RecordTokens, Tokenizer};

/// Why an input could not be read at all. Messages name the input (its label, e.g. a path),
/// columns and row numbers, never a value of a record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// Reading the input failed.
    #[error("cannot read {input}: {source}")]
    Io {
        /// The input.
        input: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The CSV reader failed.
    #[error("{input}: {what}: {source}")]
    Csv {
        /// The input.
        input: String,
        /// What was being read.
        what: &'static str,
        /// The cause.
        source: csv::Error,
    },
    /// Neither UTF-8 nor CP932 in the first MiB.
    #[error(
        "{input}: neither valid UTF-8 nor CP932 in its first MiB; pass --encoding utf-8 or --encoding cp932 \
         (rows that do not decode are then rejected with reason invalid_encoding)"
    )]
    Undecodable {
        /// The input.
        input: String,
    },
    /// No header row.
    #[error("{input}: the file is empty (a header row is required)")]
    Empty {
        /// The input.
        input: String,
    },
    /// A header name is not valid in the input's encoding.
    #[error("{input}: header column {column} is not valid {encoding}")]
    HeaderEncoding {
        /// The input.
        input: String,
        /// 1-based column.
        column: usize,
        /// Encoding name.
        encoding: &'static str,
    },
    /// The header names a column twice.
    #[error("{input}: header names column {name:?} twice")]
    DuplicateHeader {
        /// The input.
        input: String,
        /// The column name.
        name: String,
    },
    /// A needed column is absent.
    #[error("{input}: no column {name:?} ({role}); the header has: {header}")]
    MissingColumn {
        /// The input.
        input: String,
        /// The column.
        name: String,
        /// What the column is for.
        role: String,
        /// The header, comma-separated.
        header: String,
    },
    /// The id column is also a content column.
    #[error(
        "the id column {0:?} is also a content column of the schema; record ids never go to the researcher's view"
    )]
    IdIsContent(String),
    /// No recipe of the schema can be made from the input's columns.
    #[error(
        "{input}: no recipe of the schema can be made from this input: no column {missing}{digests}; the header has: {header}"
    )]
    NoRecipe {
        /// The input.
        input: String,
        /// The missing identifier columns, described.
        missing: String,
        /// The digest columns that would also do, described (may be empty).
        digests: String,
        /// The header, comma-separated.
        header: String,
    },
    /// A ragged row whose quoted field runs over line breaks: almost surely an unterminated
    /// quote, after which rows cannot be counted reliably.
    #[error(
        "{input}: data row {row} has {fields} fields (expected {width}) and a quoted field running over \
         several lines: probably an unterminated quote; the rows after it cannot be read \
         reliably, so nothing was written. Fix the quoting and run again"
    )]
    UnterminatedQuote {
        /// The input.
        input: String,
        /// 1-based data row.
        row: u64,
        /// Fields found.
        fields: usize,
        /// Fields expected.
        width: usize,
    },
    /// Writing to the reject sink failed.
    #[error("cannot write the rejects of {input}: {source}")]
    Rejects {
        /// The input.
        input: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Row-level reject reasons (SPEC.md §3.3). The codes are stable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RowReject {
    /// The row has a different number of fields than the header.
    RaggedRow,
    /// A needed field is not valid in the file's encoding.
    InvalidEncoding,
    /// The id column is empty.
    MissingId,
    /// The id was already used by an earlier row of the same input.
    DuplicateId,
    /// No recipe could be computed: every recipe lacks a usable field.
    NoToken,
}

impl RowReject {
    /// Every reason, in check order.
    pub const ALL: [Self; 5] = [
        Self::RaggedRow,
        Self::InvalidEncoding,
        Self::MissingId,
        Self::DuplicateId,
        Self::NoToken,
    ];

    /// The reason of a [`Self::code`].
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }

    /// Stable reason code.
    pub fn code(self) -> &'static str {
        match self {
            Self::RaggedRow => "ragged_row",
            Self::InvalidEncoding => "invalid_encoding",
            Self::MissingId => "missing_id",
            Self::DuplicateId => "duplicate_id",
            Self::NoToken => "no_token",
        }
    }
}

/// Where rejected rows go (e.g. `rejects-<holder>.csv`: `row,id,reason,detail`).
pub trait RejectSink {
    /// One rejected row: 1-based data row, its id (may be empty), reason, detail (field
    /// reject codes as `field=code;…`, or what was wrong).
    ///
    /// # Errors
    /// The sink's own write error.
    fn reject(
        &mut self,
        row: u64,
        id: &str,
        reason: RowReject,
        detail: &str,
    ) -> std::io::Result<()>;
}

/// Rejected rows kept in memory, in row order (tests, bindings).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RejectList(pub Vec<(u64, String, RowReject, String)>);

impl RejectSink for RejectList {
    fn reject(
        &mut self,
        row: u64,
        id: &str,
        reason: RowReject,
        detail: &str,
    ) -> std::io::Result<()> {
        self.0.push((row, id.to_owned(), reason, detail.to_owned()));
        Ok(())
    }
}

/// Row counts of one holder's input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HolderStats {
    /// Data rows read.
    pub read: u64,
    /// Rows tokenized (at least one linking token, or CLK bits, or scoring values).
    pub tokenized: u64,
    /// Rejected rows per reason.
    pub rejects: BTreeMap<RowReject, u64>,
    /// Field rejects per field and code.
    pub field_rejects: BTreeMap<String, BTreeMap<&'static str, u64>>,
    /// Records with at least one token of each recipe, in schema order.
    pub tokens_by_recipe: Vec<u64>,
}

impl HolderStats {
    /// Rejected rows, all reasons.
    pub fn rejected(&self) -> u64 {
        self.rejects.values().sum()
    }
}

/// One accepted (tokenized) record, handed to the caller of [`read_holder`].
#[derive(Debug)]
pub struct Accepted<'r> {
    /// The record id (trimmed, unique within the input).
    pub id: String,
    /// Normalized fields and the tokens (or preimages) of the record.
    pub tokens: &'r RecordTokens,
    /// Content column values, in [`HolderRead::content_columns`] order.
    pub content: Vec<String>,
}

/// What reading one holder's CSV found, besides the accepted records.
#[derive(Debug)]
pub struct HolderRead {
    /// Name of the encoding the input was read in.
    pub encoding: &'static str,
    /// Content columns present in the input.
    pub content_columns: Vec<String>,
    /// Content columns of the schema the input lacks.
    pub missing_content: Vec<String>,
    /// Recipes the input can make.
    pub recipes_available: Vec<String>,
    /// Identifier columns of the schema the input lacks.
    pub missing_identifier_columns: Vec<String>,
    /// Counts (read = tokenized + rejected).
    pub stats: HolderStats,
}

impl HolderRead {
    /// The one-line account of the read, e.g. `a: 100 rows read, 98 tokenized, 2 rejected
    /// (utf-8)`.
    pub fn account(&self, holder: &str) -> String {
        format!(
            "{holder}: {} rows read, {} tokenized, {} rejected ({})",
            self.stats.read,
            self.stats.tokenized,
            self.stats.rejected(),
            self.encoding
        )
    }
}

/// How to read holders' CSVs.
#[derive(Clone, Copy)]
pub struct ReadOptions<'a> {
    /// The schema.
    pub schema: &'a Schema,
    /// HMAC or preimage mode.
    pub tokenizer: &'a Tokenizer,
    /// The id column.
    pub id_column: &'a str,
}

impl std::fmt::Debug for ReadOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadOptions")
            .field("schema", &self.schema.name)
            .field("id_column", &self.id_column)
            .finish_non_exhaustive()
    }
}

/// Rows read and checked before their records are tokenized in parallel ([`read_holder`]).
const BATCH: usize = 1024;

/// A row of the current batch: rejected by the checks before tokenization, or waiting for
/// its tokens.
enum Pending {
    Reject {
        row: u64,
        id: String,
        why: RowReject,
        detail: String,
    },
    Row {
        row: u64,
        id: String,
        /// Decoded values of the bound columns, in `Binding::columns` order.
        raw: Vec<String>,
        content: Vec<String>,
    },
}

/// Reads one holder's CSV: checks every row (SPEC.md §3.3, in order), tokenizes it and hands
/// each accepted record to `accept`; rejected rows go to `rejects` with their reason.
/// `progress(bytes)` is called every 4,096 rows with the bytes consumed so far.
///
/// # Errors
/// The [`IngestError`]s above (converted into `E`), and whatever `accept` returns.
pub fn read_holder<E: From<IngestError>>(
    opts: &ReadOptions<'_>,
    mut input: CsvSource<'_>,
    rejects: &mut dyn RejectSink,
    progress: &mut dyn FnMut(u64),
    accept: &mut dyn FnMut(Accepted<'_>) -> Result<(), E>,
) -> Result<HolderRead, E> {
    let schema = opts.schema;
    let tokenizer = opts.tokenizer;
    let id_column = opts.id_column;
    let label = input.label.clone();
    let id_col = input.column(id_column, "the id column; set it with --id-column")?;
    let binding = tokenizer.bind(&input.header);
    let missing_columns: Vec<&str> = schema
        .identifier_columns()
        .into_iter()
        .filter(|c| !input.header.iter().any(|h| h == c))
        .collect();
    if !binding.any_recipe() {
        let digests: Vec<&str> = schema
            .recipes
            .iter()
            .filter_map(|r| r.prehash.as_ref()?.digest_column.as_deref())
            .collect();
        let described: Vec<String> = missing_columns
            .iter()
            .map(|c| {
                let fields: Vec<String> = schema
                    .fields
                    .iter()
                    .filter(|f| f.columns.iter().any(|x| x == c))
                    .map(|f| format!("`{}`", f.name))
                    .collect();
                format!("{c:?} (identifier field {})", fields.join(", "))
            })
            .collect();
        return Err(IngestError::NoRecipe {
            input: label,
            missing: described.join(", no column "),
            digests: if digests.is_empty() {
                String::new()
            } else {
                format!(" (or digest columns {})", digests.join(", "))
            },
            header: input.header.join(", "),
        }
        .into());
    }
    let recipes_available: Vec<String> = schema
        .recipes
        .iter()
        .zip(&binding.recipes)
        .filter(|(_, src)| **src != RecipeSource::Unavailable)
        .map(|(r, _)| r.name.clone())
        .collect();
    let mut content_columns = Vec::new();
    let mut content_cols = Vec::new();
    let mut missing_content = Vec::new();
    for c in &schema.content {
        match input.header.iter().position(|h| h == c) {
            Some(i) => {
                content_columns.push(c.clone());
                content_cols.push(i);
            }
            None => missing_content.push(c.clone()),
        }
    }
    let width = input.header.len();
    let mut stats = HolderStats {
        tokens_by_recipe: vec![0; schema.recipes.len()],
        ..HolderStats::default()
    };
    let mut seen_ids: HashSet<String> = HashSet::new();
    let clk_fields: Vec<usize> = schema
        .clk
        .as_ref()
        .map(|c| c.features.iter().map(|f| f.field).collect())
        .unwrap_or_default();
    let mut rec = csv::ByteRecord::new();
    let mut row: u64 = 0;
    let sink_error = |e| IngestError::Rejects {
        input: label.clone(),
        source: e,
    };
    // Rows are read and checked in order, `BATCH` at a time; the batch's records are then
    // tokenized in parallel (normalization and keyed hashing are most of the work), and
    // every row is settled in row order: rejects and accepted records come out exactly as
    // from a row-by-row loop.
    let mut batch: Vec<Pending> = Vec::with_capacity(BATCH);
    let mut rts: Vec<RecordTokens> = Vec::new();
    let mut fatal: Option<IngestError> = None;
    loop {
        batch.clear();
        let mut eof = false;
        while batch.len() < BATCH {
            if !input.next_row(&mut rec)? {
                eof = true;
                break;
            }
            row += 1;
            stats.read += 1;
            if row.is_multiple_of(4096) {
                progress(input.position());
            }
            let reject = |id: String, why: RowReject, detail: String| Pending::Reject {
                row,
                id,
                why,
                detail,
            };
            if rec.len() != width {
                if rec.iter().any(|f| f.contains(&b'\n')) {
                    fatal = Some(IngestError::UnterminatedQuote {
                        input: label.clone(),
                        row,
                        fields: rec.len(),
                        width,
                    });
                    eof = true;
                    break;
                }
                let detail = format!("expected {width} fields, found {}", rec.len());
                let id = rec
                    .get(id_col)
                    .and_then(|b| input.encoding.decode(b))
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_default();
                batch.push(reject(id, RowReject::RaggedRow, detail));
                continue;
            }
            let Some(id) = input.encoding.decode(&rec[id_col]) else {
                batch.push(reject(
                    String::new(),
                    RowReject::InvalidEncoding,
                    format!("column {id_column}"),
                ));
                continue;
            };
            let id = id.trim().to_owned();
            if id.is_empty() {
                batch.push(reject(String::new(), RowReject::MissingId, String::new()));
                continue;
            }
            if !seen_ids.insert(id.clone()) {
                batch.push(reject(id, RowReject::DuplicateId, String::new()));
                continue;
            }
            let mut raw = Vec::with_capacity(binding.columns.len());
            let mut bad_column = None;
            for &c in &binding.columns {
                match input.encoding.decode(&rec[c]) {
                    Some(v) => raw.push(v.into_owned()),
                    None => {
                        bad_column = Some(input.header[c].as_str());
                        break;
                    }
                }
            }
            let mut content = Vec::with_capacity(content_cols.len());
            if bad_column.is_none() {
                for (name, &c) in content_columns.iter().zip(&content_cols) {
                    match input.encoding.decode(&rec[c]) {
                        Some(v) => content.push(v.into_owned()),
                        None => {
                            bad_column = Some(name.as_str());
                            break;
                        }
                    }
                }
            }
            if let Some(col) = bad_column {
                batch.push(reject(
                    id,
                    RowReject::InvalidEncoding,
                    format!("column {col}"),
                ));
                continue;
            }
            batch.push(Pending::Row {
                row,
                id,
                raw,
                content,
            });
        }
        if rts.len() < batch.len() {
            rts.resize_with(batch.len(), RecordTokens::default);
        }
        {
            use rayon::prelude::*;
            batch
                .par_iter()
                .zip(rts.par_iter_mut())
                .with_min_len(64)
                .for_each(|(p, rt)| {
                    if let Pending::Row { raw, .. } = p {
                        let refs: Vec<&str> = raw.iter().map(String::as_str).collect();
                        tokenizer.tokenize(&binding, &refs, rt);
                    }
                });
        }
        for (p, rt) in batch.drain(..).zip(&rts) {
            let (row, id, content) = match p {
                Pending::Reject {
                    row,
                    id,
                    why,
                    detail,
                } => {
                    *stats.rejects.entry(why).or_default() += 1;
                    rejects.reject(row, &id, why, &detail).map_err(sink_error)?;
                    continue;
                }
                Pending::Row {
                    row, id, content, ..
                } => (row, id, content),
            };
            let mut detail = String::new();
            for (f, st) in schema.fields.iter().zip(&rt.status) {
                if let Some(Err(e)) = st {
                    *stats
                        .field_rejects
                        .entry(f.name.clone())
                        .or_default()
                        .entry(e.code())
                        .or_default() += 1;
                    if !detail.is_empty() {
                        detail.push(';');
                    }
                    detail.push_str(&f.name);
                    detail.push('=');
                    detail.push_str(e.code());
                }
            }
            // Tokenized: some linking token, or (with CLK) something to compare by similarity.
            let links_by_token = rt
                .recipes_made()
                .any(|r| matches!(schema.recipes[r].link, LinkMode::Direct | LinkMode::Guarded));
            let has_clk_bits = clk_fields
                .iter()
                .any(|&i| matches!(rt.status[i], Some(Ok(()))));
            // Scored (SPEC.md §9): any token that blocks or is compared, or bits in a
            // comparison's filter.
            let scored = schema.scoring.as_ref().is_some_and(|s| {
                rt.recipes_made()
                    .any(|r| schema.recipes[r].link != LinkMode::Guard)
                    || s.comparisons
                        .iter()
                        .filter_map(|c| c.dice.as_ref())
                        .any(|d| {
                            d.features
                                .iter()
                                .any(|f| matches!(rt.status[f.field], Some(Ok(()))))
                        })
            });
            if !links_by_token && !has_clk_bits && !scored {
                *stats.rejects.entry(RowReject::NoToken).or_default() += 1;
                rejects
                    .reject(row, &id, RowReject::NoToken, &detail)
                    .map_err(sink_error)?;
                continue;
            }
            let mut last_recipe = usize::MAX;
            for r in rt.recipes_made() {
                if r != last_recipe {
                    stats.tokens_by_recipe[r] += 1;
                    last_recipe = r;
                }
            }
            stats.tokenized += 1;
            accept(Accepted {
                id,
                tokens: rt,
                content,
            })?;
        }
        if let Some(e) = fatal {
            return Err(e.into());
        }
        if eof {
            break;
        }
    }
    debug_assert_eq!(stats.read, stats.tokenized + stats.rejected());
    Ok(HolderRead {
        encoding: input.encoding.name(),
        content_columns,
        missing_content,
        recipes_available,
        missing_identifier_columns: missing_columns.into_iter().map(str::to_owned).collect(),
        stats,
    })
}
