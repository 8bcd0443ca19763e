//! Running a plan: every holder read into one join (CSV: checked, normalized, tokenized,
//! CLK-encoded, comparison values; token files: read as made by the holder), then the
//! matcher (exact, CLK, or scored), then clusters.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    EngineError, HolderInput, HolderSource, Keys, LinkPlan, Matcher, Observer, TruthPairs,
};
use crate::clk::holder::HolderEncoding;
use crate::cluster::{JoinStats, TokenJoin};
use crate::dice::Filters;
use crate::ingest::{self, Accepted, HolderRead, HolderStats, ReadOptions, RowReject};
use crate::lsh::{self, LshChoice};
use crate::schema::LinkMode;
use crate::score::{
    DecideOptions, Features, FeaturesBuilder, InProcess, PairStage, ScoringRun, decide,
    find_candidates, fit,
};
use crate::token::Token;
use crate::tokenizer::Tokenizer;
use crate::tokenlink::{
    ClkStats, RecordIds, TokenParty, add_token, clk_links, party_offsets, read_token_party,
    read_token_party_with,
};

/// One holder's records after a run.
#[derive(Clone, Debug)]
pub struct LinkedHolder {
    /// The holder's name.
    pub name: String,
    /// Its input's name (e.g. a path).
    pub label: String,
    /// Encoding of its input (`utf-8`, `cp932`; token files: as the holder read its CSV).
    pub encoding: String,
    /// Record ids, in record order (record `i` is global record `offset + i`).
    pub ids: RecordIds,
    /// Content columns present (CSV inputs).
    pub content_columns: Vec<String>,
    /// Content columns of the schema the input lacks.
    pub missing_content: Vec<String>,
    /// Content values, `content_columns.len()` per record.
    pub content: Vec<String>,
    /// Recipes the input can make.
    pub recipes_available: Vec<String>,
    /// Identifier columns of the schema the input lacks.
    pub missing_identifier_columns: Vec<String>,
    /// Row counts.
    pub stats: HolderStats,
    /// CLKs of the records, when the schema has `[clk]`.
    pub(super) filters: Option<Filters>,
}

/// The result of a run: clusters of every record, and what the writer and the summary need.
#[derive(Debug)]
pub struct Linked<'s> {
    pub(super) schema: &'s crate::schema::Schema,
    pub(super) holders: Vec<LinkedHolder>,
    pub(super) labels: Vec<u32>,
    pub(super) clusters: usize,
    pub(super) join: JoinStats,
    pub(super) clk: Option<ClkStats>,
    pub(super) scoring: Option<ScoringRun>,
    pub(super) csv_inputs: bool,
    pub(super) summary_base: SummaryBase,
    pub(super) started: Instant,
    pub(super) t_read: Duration,
    pub(super) t_cluster: Duration,
}

/// What the summary needs of the plan.
#[derive(Debug)]
pub(super) struct SummaryBase {
    pub(super) project: String,
    pub(super) schema_name: String,
    pub(super) schema_version: u32,
    pub(super) schema_path: String,
    pub(super) token_mode: String,
    pub(super) today: u32,
    pub(super) recipes: Vec<String>,
    pub(super) clk_bits: Option<u32>,
    pub(super) clk_threshold: Option<f64>,
    pub(super) clk_lsh: Option<crate::schema::ClkLsh>,
    pub(super) blocking: bool,
    pub(super) truth: bool,
}

impl Linked<'_> {
    /// Cluster label of every record, holders in input order (labels are `0..clusters()`,
    /// numbered by first record).
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// Number of clusters (singletons included).
    pub fn clusters(&self) -> usize {
        self.clusters
    }

    /// The holders, in input order.
    pub fn holders(&self) -> &[LinkedHolder] {
        &self.holders
    }

    /// Record offsets of the holders in the global numbering.
    pub fn offsets(&self) -> Vec<u32> {
        party_offsets(&self.holders.iter().map(|h| h.ids.len()).collect::<Vec<_>>())
    }

    /// The scored run, if the plan was scored.
    pub fn scoring(&self) -> Option<&ScoringRun> {
        self.scoring.as_ref()
    }
}

impl<'a> LinkPlan<'a> {
    /// Reads every holder and links: the whole run but writing.
    ///
    /// # Errors
    /// [`EngineError`]: too few or duplicate holders, a CSV input without the key, an input
    /// that cannot be read, token files that cannot be linked together, cancellation.
    pub fn run(
        &self,
        inputs: Vec<HolderInput<'_>>,
        observer: &mut dyn Observer,
    ) -> Result<Linked<'a>, EngineError> {
        self.run_with(inputs, observer, &mut InProcess)
    }

    /// [`Self::run`] with a scored plan's candidate pairs and comparison vectors made by
    /// `stage` (a distributed engine; [`InProcess`] is `run`). Plans that are not scored
    /// ignore it.
    ///
    /// # Errors
    /// As [`Self::run`], and [`crate::score::ScoreError::Stage`] when `stage` fails.
    pub fn run_with(
        &self,
        inputs: Vec<HolderInput<'_>>,
        observer: &mut dyn Observer,
        stage: &mut dyn PairStage,
    ) -> Result<Linked<'a>, EngineError> {
        let prepared = self.read(inputs, observer)?;
        self.link_prepared(prepared, observer, stage)
    }

    /// The read stage of [`Self::run`] alone: every holder read (CSV: checked, normalized,
    /// tokenized, CLK-encoded, comparison values; token files: read as the holder made them)
    /// into one join, its blocking keys and, for a scored schema, its comparison features.
    /// [`Self::link_prepared`] finishes the run; the Python package steps through a scored
    /// run's stages on it ([`crate::score::find_candidates`], [`crate::score::fit`],
    /// [`crate::score::decide`], then [`Self::finish_scored`]).
    ///
    /// # Errors
    /// As [`Self::run`], but for the matcher's.
    pub fn read(
        &self,
        inputs: Vec<HolderInput<'_>>,
        observer: &mut dyn Observer,
    ) -> Result<Prepared, EngineError> {
        let started = Instant::now();
        let schema = self.schema;
        let opts = &self.options;
        if inputs.len() < 2 {
            return Err(EngineError::TooFewHolders);
        }
        let mut seen = HashSet::new();
        for i in &inputs {
            if !seen.insert(i.name.as_str()) {
                return Err(EngineError::DuplicateHolder(i.name.clone()));
            }
        }
        for d in &opts.duplicates {
            if !inputs.iter().any(|i| &i.name == d) {
                return Err(EngineError::UnknownDuplicates(d.clone()));
            }
        }
        let csv_inputs = inputs
            .iter()
            .any(|i| matches!(i.source, HolderSource::Csv { .. }));
        let secret = match self.keys {
            Keys::Hmac { secret } => Some(secret),
            Keys::TokenFiles if csv_inputs => return Err(EngineError::CsvWithoutKey),
            Keys::TokenFiles => None,
        };
        let check = |o: &dyn Observer| {
            if o.cancelled() {
                Err(EngineError::Cancelled)
            } else {
                Ok(())
            }
        };
        let tokenizer = secret.map(|s| Tokenizer::new(schema, s, &opts.project, opts.today));
        // Comparison features: encoded here from the CSVs with the project secret, or read
        // as the holders encoded them (token files, version 2).
        let mut features = schema.scoring.as_ref().map(|_| match secret {
            Some(s) => FeaturesBuilder::new(schema, s, &opts.project),
            None => FeaturesBuilder::encoded(schema),
        });
        let mut join = TokenJoin::new(0);
        let direct = schema
            .recipes
            .iter()
            .filter(|r| r.link == LinkMode::Direct)
            .count();
        let expected: u64 = inputs.iter().map(|i| i.expected_records).sum();
        join.reserve_direct(
            usize::try_from(expected)
                .unwrap_or(0)
                .saturating_mul(direct),
        );
        let mut blocks: Vec<(Token, u32)> = Vec::new();
        let mut holders: Vec<LinkedHolder> = Vec::with_capacity(inputs.len());
        let total = inputs.len() as f64 + 1.0;
        for (holder, input) in inputs.into_iter().enumerate() {
            check(observer)?;
            observer.stage(&format!("reading {}", input.name), holder as f64 / total);
            let linked = match input.source {
                HolderSource::Csv { csv, rejects } => {
                    let tokenizer = tokenizer.as_ref().ok_or(EngineError::CsvWithoutKey)?;
                    let secret = secret.ok_or(EngineError::CsvWithoutKey)?;
                    let clk = HolderEncoding::from_schema(
                        schema,
                        secret,
                        &opts.project,
                        Box::new(rand::rng()),
                    );
                    read_csv_holder(
                        &input.name,
                        &ReadOptions {
                            schema,
                            tokenizer,
                            id_column: self.id_column(),
                        },
                        *csv,
                        rejects,
                        clk,
                        &mut join,
                        &mut blocks,
                        features.as_mut().map(|f| (holder as u16, f)),
                        observer,
                    )?
                }
                HolderSource::Tokens { mut reader, label } => {
                    let party = match features.as_mut() {
                        None => {
                            read_token_party(schema, &mut reader, &label, &mut join, &mut blocks)?
                        }
                        Some(f) => read_scored_tokens(
                            schema,
                            &mut reader,
                            &label,
                            holder as u16,
                            f,
                            &mut join,
                            &mut blocks,
                        )?,
                    };
                    token_holder(&input.name, label, party, schema, observer)?
                }
            };
            holders.push(linked);
        }
        let t_read = started.elapsed();
        check(observer)?;
        Ok(Prepared {
            holders,
            join,
            blocks,
            features: features.map(|f| Arc::new(f.finish())),
            csv_inputs,
            started,
            t_read,
        })
    }

    /// Per holder, whether it is declared to hold several records of one person
    /// ([`LinkOptions::duplicates`]), in input order.
    pub fn duplicates(&self, prepared: &Prepared) -> Vec<bool> {
        self.duplicate_flags(&prepared.holders)
    }

    fn duplicate_flags(&self, holders: &[LinkedHolder]) -> Vec<bool> {
        holders
            .iter()
            .map(|h| self.options.duplicates.contains(&h.name))
            .collect()
    }

    /// The rest of [`Self::run_with`] after [`Self::read`]: the matcher (exact, CLK, or
    /// scored with `stage`), then clusters.
    ///
    /// # Errors
    /// As [`Self::run_with`].
    pub fn link_prepared(
        &self,
        prepared: Prepared,
        observer: &mut dyn Observer,
        stage: &mut dyn PairStage,
    ) -> Result<Linked<'a>, EngineError> {
        let schema = self.schema;
        let opts = &self.options;
        let Prepared {
            holders,
            mut join,
            mut blocks,
            features,
            csv_inputs,
            started,
            t_read,
        } = prepared;
        observer.stage("linking", 1.0 - 1.0 / (holders.len() as f64 + 1.0));
        let sizes: Vec<usize> = holders.iter().map(|h| h.ids.len()).collect();
        let offsets = party_offsets(&sizes);
        let mut scoring = None;
        let mut clk = None;
        let (labels, clusters, join_stats) = match (self.matcher, features) {
            (Matcher::Scored, Some(f)) => {
                let spec = schema.scoring.as_ref().expect("scored plan");
                let duplicates = self.duplicate_flags(&holders);
                let log = &mut |line: String| observer.log(&line);
                let candidates = find_candidates(spec, &mut blocks, &sizes, stage, log)?;
                let fitted = fit(spec, &duplicates, &f, &candidates, stage)?;
                let (labels, k, run) = decide(
                    spec,
                    DecideOptions {
                        threshold: opts.threshold,
                        duplicates: &duplicates,
                    },
                    f,
                    candidates,
                    fitted,
                    stage,
                    log,
                )?;
                scoring = Some(run);
                (labels, k, JoinStats::default())
            }
            (Matcher::Clk, _) => {
                let spec = schema.clk.as_ref().expect("CLK plan");
                let blocked = schema.recipes.iter().any(|r| r.link == LinkMode::Block);
                let filters: Vec<Option<&Filters>> =
                    holders.iter().map(|h| h.filters.as_ref()).collect();
                let truth = match &opts.truth {
                    Some(t) => truth_indices(t, &holders, &offsets)?,
                    None => Vec::new(),
                };
                let stats = clk_links(
                    spec,
                    &filters,
                    &offsets,
                    blocked.then_some(blocks.as_mut_slice()),
                    &truth,
                    &mut join,
                );
                log_lsh(&stats.lsh, &holders, observer);
                clk = Some(stats);
                join.into_clusters()
            }
            _ => join.into_clusters(),
        };
        Ok(self.assemble(
            holders, labels, clusters, join_stats, clk, scoring, csv_inputs, started, t_read,
        ))
    }

    /// The [`Linked`] of a scored run stepped through outside [`Self::link_prepared`]:
    /// `labels`, `clusters` and `run` as [`crate::score::decide`] returns them. `prepared`
    /// is kept (its holders are copied), so a run can be clustered again at another
    /// threshold.
    ///
    /// # Errors
    /// [`EngineError::Score`] when the labels do not cover `prepared`'s records.
    pub fn finish_scored(
        &self,
        prepared: &Prepared,
        labels: Vec<u32>,
        clusters: usize,
        run: ScoringRun,
    ) -> Result<Linked<'a>, EngineError> {
        let records: usize = prepared.holders.iter().map(|h| h.ids.len()).sum();
        if labels.len() != records {
            return Err(EngineError::Score(crate::score::ScoreError::Stage(
                format!("{} cluster labels for {records} records", labels.len()),
            )));
        }
        Ok(self.assemble(
            prepared.holders.clone(),
            labels,
            clusters,
            JoinStats::default(),
            None,
            Some(run),
            prepared.csv_inputs,
            prepared.started,
            prepared.t_read,
        ))
    }

    #[allow(clippy::too_many_arguments, reason = "the run's state, two call sites")]
    fn assemble(
        &self,
        mut holders: Vec<LinkedHolder>,
        labels: Vec<u32>,
        clusters: usize,
        join_stats: JoinStats,
        clk: Option<ClkStats>,
        scoring: Option<ScoringRun>,
        csv_inputs: bool,
        started: Instant,
        t_read: Duration,
    ) -> Linked<'a> {
        let schema = self.schema;
        let opts = &self.options;
        let t_cluster = started.elapsed();
        for h in &mut holders {
            h.filters = None;
        }
        let summary_base = SummaryBase {
            project: opts.project.clone(),
            schema_name: schema.name.clone(),
            schema_version: schema.version,
            schema_path: opts.schema_path.clone(),
            token_mode: opts.token_mode.clone(),
            today: opts.today.today,
            recipes: schema.recipes.iter().map(|r| r.name.clone()).collect(),
            clk_bits: schema.clk.as_ref().map(|c| c.filter_bits()),
            clk_threshold: schema.clk.as_ref().map(|c| c.threshold),
            clk_lsh: schema.clk.as_ref().and_then(|c| c.lsh),
            blocking: schema.recipes.iter().any(|r| r.link == LinkMode::Block),
            truth: opts.truth.is_some(),
        };
        Linked {
            schema,
            holders,
            labels,
            clusters,
            join: join_stats,
            clk,
            scoring,
            csv_inputs,
            summary_base,
            started,
            t_read,
            t_cluster,
        }
    }
}

/// Every holder of a run read ([`LinkPlan::read`]), before the matcher.
#[derive(Debug)]
pub struct Prepared {
    holders: Vec<LinkedHolder>,
    join: TokenJoin,
    blocks: Vec<(Token, u32)>,
    features: Option<Arc<Features>>,
    csv_inputs: bool,
    started: Instant,
    t_read: Duration,
}

impl Prepared {
    /// The holders, in input order (record ids, row counts).
    pub fn holders(&self) -> &[LinkedHolder] {
        &self.holders
    }

    /// Records per holder, in input order.
    pub fn sizes(&self) -> Vec<usize> {
        self.holders.iter().map(|h| h.ids.len()).collect()
    }

    /// A scored schema's comparison features of every record (global indices, holders in
    /// input order); `None` for other schemas.
    pub fn features(&self) -> Option<Arc<Features>> {
        self.features.clone()
    }

    /// The blocking keys `(token, global record)` (reordered by candidate generation).
    pub fn blocking_keys(&mut self) -> &mut [(Token, u32)] {
        &mut self.blocks
    }
}

#[allow(clippy::too_many_arguments, reason = "the run's state, one call site")]
fn read_csv_holder(
    name: &str,
    opts: &ReadOptions<'_>,
    csv: ingest::CsvSource<'_>,
    rejects: &mut dyn ingest::RejectSink,
    mut clk: Option<HolderEncoding>,
    join: &mut TokenJoin,
    blocks: &mut Vec<(Token, u32)>,
    mut features: Option<(u16, &mut FeaturesBuilder)>,
    observer: &mut dyn Observer,
) -> Result<LinkedHolder, EngineError> {
    let schema = opts.schema;
    let label = csv.label.clone();
    let mut ids = RecordIds::default();
    let mut content = Vec::new();
    let mut filters = clk.as_ref().map(|e| Filters::new(e.words()));
    let mut clk_buf: Vec<u64> = Vec::new();
    observer.holder_started(name, csv.len);
    let read: HolderRead = {
        // The observer is borrowed for progress only while reading.
        let mut progress = |bytes: u64| observer.holder_progress(bytes);
        ingest::read_holder(opts, csv, rejects, &mut progress, &mut |acc: Accepted<
            '_,
        >|
         -> Result<
            (),
            EngineError,
        > {
            if join.records() >= u32::MAX as usize {
                return Err(EngineError::TooManyRecords);
            }
            let g = join.push_record();
            let scoring = features.is_some();
            if let Some((holder, f)) = features.as_mut() {
                let h = f.push(*holder, acc.tokens);
                debug_assert_eq!(h, g);
            }
            for (r, t) in &acc.tokens.tokens {
                add_token(join, blocks, schema.recipes[*r].link, scoring, *r, g, t);
            }
            if let (Some(enc), Some(f)) = (clk.as_mut(), filters.as_mut()) {
                enc.encode(acc.tokens, &mut clk_buf);
                f.push(&clk_buf);
            }
            ids.push(&acc.id);
            content.extend(acc.content);
            Ok(())
        })?
    };
    observer.holder_finished();
    observer.log(&read.account(name));
    Ok(LinkedHolder {
        name: name.to_owned(),
        label,
        encoding: read.encoding.to_owned(),
        ids,
        content_columns: read.content_columns,
        missing_content: read.missing_content,
        content,
        recipes_available: read.recipes_available,
        missing_identifier_columns: read.missing_identifier_columns,
        stats: read.stats,
        filters,
    })
}

/// Reads a token file for a scored schema: its blocking keys into `blocks`, its tokens and
/// per-comparison filters into `features`. The header must list exactly the schema's Dice
/// comparisons (SPEC.md §5.5, version 2).
fn read_scored_tokens<R: std::io::BufRead + Send>(
    schema: &crate::schema::Schema,
    reader: &mut crate::token_file::Reader<R>,
    label: &str,
    holder: u16,
    features: &mut FeaturesBuilder,
    join: &mut TokenJoin,
    blocks: &mut Vec<(Token, u32)>,
) -> Result<TokenParty, EngineError> {
    let want = crate::token_file::DiceRef::of_schema(schema);
    let have = &reader.header().dice;
    if *have != want {
        let list = |d: &[crate::token_file::DiceRef]| {
            if d.is_empty() {
                "none".to_owned()
            } else {
                d.iter()
                    .map(|d| format!("{} {} bits", d.comparison, d.bits))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        return Err(EngineError::ScoringNeedsFeatures(
            label.to_owned(),
            list(&want),
            list(have),
        ));
    }
    let mut tokens: Vec<(usize, Token)> = Vec::new();
    let mut hook = |batch: &crate::token_file::RecordBatch,
                    i: usize,
                    map: &[Option<usize>]|
     -> Result<(), String> {
        tokens.clear();
        tokens.extend(
            batch
                .tokens(i)
                .iter()
                .filter_map(|(r, t)| map[*r as usize].map(|s| (s, *t))),
        );
        features
            .push_encoded(holder, tokens.iter().map(|(r, t)| (*r, t)), batch.dice(i))
            .map(|_| ())
    };
    Ok(read_token_party_with(
        schema,
        reader,
        label,
        join,
        blocks,
        Some(&mut hook),
    )?)
}

/// The comparison features of a scored schema's token files (version 2, holders in input
/// order, records numbered as [`LinkPlan::run`] numbers them): what a distributed pair stage
/// loads on each worker to compare candidate pairs as the engine does.
///
/// # Errors
/// A file is not a token file of `schema` with its comparison features.
pub fn token_features<R: std::io::BufRead + Send>(
    schema: &crate::schema::Schema,
    readers: Vec<(crate::token_file::Reader<R>, String)>,
) -> Result<Features, EngineError> {
    let mut features = FeaturesBuilder::encoded(schema);
    for (holder, (mut reader, label)) in readers.into_iter().enumerate() {
        // Blocking keys and exact joins are the driver's; only the features are kept.
        let mut join = TokenJoin::new(0);
        let mut blocks = Vec::new();
        read_scored_tokens(
            schema,
            &mut reader,
            &label,
            holder as u16,
            &mut features,
            &mut join,
            &mut blocks,
        )?;
    }
    Ok(features.finish())
}

fn token_holder(
    name: &str,
    label: String,
    party: TokenParty,
    schema: &crate::schema::Schema,
    observer: &mut dyn Observer,
) -> Result<LinkedHolder, EngineError> {
    let TokenParty {
        header,
        ids,
        filters,
        counts,
    } = party;
    let mut stats = HolderStats {
        read: counts.read,
        tokenized: counts.tokenized,
        tokens_by_recipe: schema
            .recipes
            .iter()
            .map(|r| counts.tokens_by_recipe.get(&r.name).copied().unwrap_or(0))
            .collect(),
        ..HolderStats::default()
    };
    for (code, n) in &counts.rejects_by_reason {
        let why = RowReject::from_code(code).ok_or_else(|| {
            EngineError::Tokens(crate::tokenlink::TokenLinkError::Incompatible(format!(
                "{label}: unknown reject reason {code:?}"
            )))
        })?;
        stats.rejects.insert(why, *n);
    }
    for (field, m) in &counts.field_rejects {
        let m = m
            .iter()
            .filter_map(|(c, n)| {
                let code = crate::FieldReject::ALL
                    .into_iter()
                    .find(|f| f.code() == c)?;
                Some((code.code(), *n))
            })
            .collect();
        stats.field_rejects.insert(field.clone(), m);
    }
    observer.log(&format!(
        "{name}: token file of {} records ({} read, {} rejected by the holder; {})",
        ids.len(),
        counts.read,
        counts.rejected,
        header.mode
    ));
    Ok(LinkedHolder {
        name: name.to_owned(),
        label,
        encoding: counts.encoding.clone(),
        ids,
        content_columns: Vec::new(),
        missing_content: Vec::new(),
        content: Vec::new(),
        recipes_available: counts
            .tokens_by_recipe
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(r, _)| r.clone())
            .collect(),
        missing_identifier_columns: Vec::new(),
        stats,
        filters,
    })
}

/// The pairs of `truth` as global record indices; pairs naming a record that was not
/// tokenized (rejected, or absent) are left out.
fn truth_indices(
    truth: &TruthPairs,
    holders: &[LinkedHolder],
    offsets: &[u32],
) -> Result<Vec<(u32, u32)>, EngineError> {
    let index: Vec<HashMap<&str, u32>> = holders
        .iter()
        .zip(offsets)
        .map(|(h, &o)| {
            h.ids
                .iter()
                .enumerate()
                .map(|(i, id)| (id, o + i as u32))
                .collect()
        })
        .collect();
    let holder = |name: &str, k: usize| -> Result<usize, EngineError> {
        if truth.multi {
            holders
                .iter()
                .position(|h| h.name == name)
                .ok_or_else(|| EngineError::TruthHolder(name.to_owned()))
        } else if holders.len() < 2 {
            Err(EngineError::TruthTwoHolders)
        } else {
            Ok(k)
        }
    };
    let mut out = Vec::with_capacity(truth.pairs.len());
    for (pa, ia, pb, ib) in &truth.pairs {
        let (x, y) = (holder(pa, 0)?, holder(pb, 1)?);
        if let (Some(&a), Some(&b)) = (index[x].get(ia.as_str()), index[y].get(ib.as_str())) {
            out.push((a, b));
        }
    }
    Ok(out)
}

/// One line per pair of holders: the Hamming-LSH parameters used and why, and a warning when
/// pairs at the threshold are below the target probability.
fn log_lsh(
    used: &[(usize, usize, LshChoice)],
    holders: &[LinkedHolder],
    observer: &mut dyn Observer,
) {
    let how = |chosen| if chosen { "chosen" } else { "schema" };
    for (i, j, c) in used {
        if c.candidate_probability_at_threshold < lsh::TARGET_AT_THRESHOLD {
            observer.warn(&format!(
                "warning: Hamming-LSH {} × {}: a pair at the Dice threshold becomes a candidate with probability {:.4} only (target {}): {}",
                holders[*i].name,
                holders[*j].name,
                c.candidate_probability_at_threshold,
                lsh::TARGET_AT_THRESHOLD,
                if c.bands_chosen {
                    "the threshold is low for Hamming-LSH on these filters even with the most bands; raise it or block with recipes (SPEC.md §7.4)"
                } else {
                    "more [clk.lsh] bands (or leaving them out) would find more (SPEC.md §7.4)"
                },
            ));
        }
        observer.log(&format!(
            "Hamming-LSH {} × {}: {} bands ({}) × {} bits per band ({}); mean popcount {:.1} / {:.1}, \
             expected random collisions per band {:.3e} ({} sampled pairs), P(candidate | Dice at threshold) {:.6}",
            holders[*i].name,
            holders[*j].name,
            c.params.bands,
            how(c.bands_chosen),
            c.params.bits_per_band,
            how(c.bits_chosen),
            c.mean_popcount[0],
            c.mean_popcount[1],
            c.random_collisions_per_band,
            c.sampled_pairs,
            c.candidate_probability_at_threshold,
        ));
    }
}
