//! The linkage engine: "link these holders' data with this schema", as one library call that
//! `renketsu link`, the linkage unit's job, `renketsu eval` tests and the bindings share.
//!
//! A run is a [`LinkPlan`] (made from a schema, keys and options; it can be explained before
//! anything is read: [`LinkPlan::explain`]) run over holder inputs ([`HolderInput`]: CSV
//! streams or token files) with an [`Observer`] for progress, log lines and cancellation. The
//! stages, each also callable on its own:
//!
//! | stage | records in → out | module |
//! |---|---|---|
//! | ingest | CSV rows → checked, normalized, tokenized records, rejects | [`crate::ingest`] |
//! | encode | records → exact tokens, CLKs, comparison values | [`crate::tokenizer`], [`crate::clk::holder`], [`crate::score::FeaturesBuilder`] |
//! | block | tokens → candidate pairs (block keys, Hamming-LSH) | [`crate::score::candidates`], [`crate::lsh`], [`crate::tokenlink::block_candidates`] |
//! | compare | pairs → Dice coefficients, comparison vectors | [`crate::dice`], [`crate::score::Features::compare`] |
//! | score | vectors → match weights (Fellegi–Sunter, EM), threshold, veto | [`crate::score`] |
//! | cluster | links → clusters (union-find; guarded) | [`crate::cluster`] |
//!
//! [`LinkPlan::run`] composes them and returns a [`Linked`]: labels, per-holder ids and
//! content, the scored run; [`Linked::write`] then writes `clusters.csv`, `pairs.csv`,
//! `pair_scores.csv` and `joined.csv` through an [`OutputSink`] and returns the typed
//! [`Summary`]. Pseudonyms are the caller's policy ([`random_pseudonyms`] for `renketsu link`;
//! the linkage unit derives salted ones).
//!
//! No I/O of its own: inputs are `Read` streams, outputs go through the sink.
//!
//! # Example: link two in-memory datasets
//!
//! ```
//! use renketsu_linkage::engine::{HolderInput, Keys, LinkOptions, LinkPlan, MemoryOutputs, NoObserver, random_pseudonyms};
//! use renketsu_linkage::ingest::{CsvSource, EncodingChoice, RejectList};
//! use renketsu_linkage::{ProjectSecret, Schema};
//!
//! let schema = Schema::from_toml(r#"
//! schema_format = 1
//! name = "example"
//! version = 1
//! [input]
//! id_column = "id"
//! [fields.kana]
//! columns = ["kana"]
//! normalizer = "kana_name"
//! [fields.birth_date]
//! column = "birth_date"
//! normalizer = "birth_date"
//! [content]
//! columns = ["visit"]
//! [[recipes]]
//! name = "kana_dob"
//! version = 1
//! fields = ["kana", "birth_date"]
//! "#).unwrap();
//! let secret = ProjectSecret::from_bytes([7; 32]);
//! let a = "id,kana,birth_date,visit\n1,ヤマダ タロウ,1970-01-02,x\n2,スズキ ハナコ,1980-03-04,y\n";
//! let b = "id,kana,birth_date,visit\n9,やまだ たろう,S45.01.02,z\n";
//! let (mut ra, mut rb) = (RejectList::default(), RejectList::default());
//! let plan = LinkPlan::new(&schema, Keys::Hmac { secret: &secret }, LinkOptions::new("demo", 20261122)).unwrap();
//! println!("{}", plan.explain());
//! let inputs = vec![
//!     HolderInput::csv("a", CsvSource::new(Box::new(a.as_bytes()), "a", 0, EncodingChoice::Auto).unwrap(), &mut ra),
//!     HolderInput::csv("b", CsvSource::new(Box::new(b.as_bytes()), "b", 0, EncodingChoice::Auto).unwrap(), &mut rb),
//! ];
//! let mut linked = plan.run(inputs, &mut NoObserver).unwrap();
//! let pids = random_pseudonyms(linked.clusters(), &mut rand::rng());
//! let mut out = MemoryOutputs::default();
//! let summary = linked.write(&pids, &mut out).unwrap();
//! assert_eq!(summary.links, 1);
//! assert_eq!(out.text("pairs.csv"), "id_a,id_b\n1,9\n");
//! ```

mod output;
mod run;
mod summary;

use std::io::BufRead;

pub use output::{
    HolderContent, MemoryOutputs, OutputFile, OutputSink, random_pseudonyms, write_joined_view,
};
pub use run::{Linked, LinkedHolder, Prepared, token_features};
pub use summary::{
    ClkSummary, ClustersSummary, HolderSummary, LshChosen, LshConfigured, LshHolderPair,
    LshSummary, LshTargets, MergesSummary, NormalizationSummary, PairsCompleteness, SchemaSummary,
    Summary, Timings,
};

use crate::eval::PairKey;
use crate::ingest::{CsvSource, IngestError, RejectSink};
use crate::normalize::NormalizeContext;
use crate::schema::{LinkMode, Schema};
use crate::score::ScoreError;
use crate::secret::ProjectSecret;
use crate::token_file;
use crate::tokenlink::TokenLinkError;

/// Why a run failed. Messages name inputs, columns, rows and rules, never a record's values,
/// a token or a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// Fewer than two holders.
    #[error("link needs at least two --input files, one per data holder")]
    TooFewHolders,
    /// Two holders have the same name.
    #[error("two inputs are both named party {0:?}; name them with NAME=PATH")]
    DuplicateHolder(String),
    /// A `duplicates` holder is not an input.
    #[error("--duplicates {0:?}: no input is named {0:?}")]
    UnknownDuplicates(String),
    /// CSV inputs need the project secret ([`Keys::Hmac`]).
    #[error("CSV inputs need the project key; only token files link without one")]
    CsvWithoutKey,
    /// A scored schema on token files that lack its comparison filters (version 1, or made
    /// for other Dice comparisons).
    #[error(
        "{0}: the schema's [scoring] compares per-comparison CLKs ({1}) but the token file carries {2}; tokenize again with this schema (token file version 2, SPEC.md §5.5)"
    )]
    ScoringNeedsFeatures(String, String, String),
    /// Pairs completeness (`truth`) needs a CLK schema without scoring.
    #[error(
        "--truth reports the pairs completeness of CLK candidates: the schema needs [clk] and no [scoring] (use renketsu eval for the output's quality)"
    )]
    TruthNeedsClk,
    /// A truth pair names a holder that is not an input.
    #[error("--truth: no input is named {0:?}")]
    TruthHolder(String),
    /// A two-holder truth file with fewer than two inputs.
    #[error("--truth: a two-party truth file needs two inputs")]
    TruthTwoHolders,
    /// More records than a run can index.
    #[error("more than 2^32 - 1 records in one job")]
    TooManyRecords,
    /// A CSV input could not be read.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// A token file is malformed, or token files cannot be linked together.
    #[error(transparent)]
    Tokens(#[from] TokenLinkError),
    /// The scored stage failed.
    #[error(transparent)]
    Score(#[from] ScoreError),
    /// Writing an output failed.
    #[error("cannot write {file}: {source}")]
    Output {
        /// The output file.
        file: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The observer asked to stop.
    #[error("cancelled")]
    Cancelled,
}

/// The keys a run has.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Keys<'a> {
    /// Embedded mode: the project secret (recipe keys by HKDF, CLK keys, SPEC.md §4).
    Hmac {
        /// The project master secret.
        secret: &'a ProjectSecret,
    },
    /// No key: every input is a token file made by its holder (SPEC.md §5.5). The linkage
    /// unit runs this way.
    TokenFiles,
}

/// Options of a run.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LinkOptions {
    /// Project name (binds the recipe keys; reported in the summary).
    pub project: String,
    /// "Today" for date checks.
    pub today: NormalizeContext,
    /// Id column override (else the schema's).
    pub id_column: Option<String>,
    /// Scoring: match-probability threshold overriding the schema's and the automatic one.
    pub threshold: Option<f64>,
    /// Scoring: holders whose data may hold several records of one person.
    pub duplicates: Vec<String>,
    /// Token mode for the summary: `hmac`, or e.g. `oprf-ristretto255/voprf`.
    pub token_mode: String,
    /// Where the schema came from (for the summary).
    pub schema_path: String,
    /// Known true pairs, for the pairs completeness of CLK candidates.
    pub truth: Option<TruthPairs>,
}

impl LinkOptions {
    /// Options with defaults: HMAC token mode, no overrides. `today` is `YYYYMMDD`.
    pub fn new(project: &str, today: u32) -> Self {
        Self {
            project: project.to_owned(),
            today: NormalizeContext { today },
            id_column: None,
            threshold: None,
            duplicates: Vec::new(),
            token_mode: "hmac".to_owned(),
            schema_path: String::new(),
            truth: None,
        }
    }
}

/// Known true pairs (`renketsu eval` format, [`crate::eval::read_pairs`]).
#[derive(Clone, Debug)]
pub struct TruthPairs {
    /// The pairs.
    pub pairs: Vec<PairKey>,
    /// Whether they name holders (`party_a,id_a,party_b,id_b`); else they are pairs of the
    /// first and second input.
    pub multi: bool,
}

/// One holder's input to a run.
pub struct HolderInput<'a> {
    /// The holder's name (output columns, file names).
    pub name: String,
    /// Its records.
    pub source: HolderSource<'a>,
    /// Records expected (sizes the join; 0: unknown).
    pub expected_records: u64,
}

impl std::fmt::Debug for HolderInput<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HolderInput")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Where a holder's records come from.
#[non_exhaustive]
pub enum HolderSource<'a> {
    /// A CSV with identifiers (embedded mode), and where its rejected rows go.
    Csv {
        /// The opened CSV.
        csv: Box<CsvSource<'a>>,
        /// Sink of rejected rows.
        rejects: &'a mut dyn RejectSink,
    },
    /// A token file made by the holder (SPEC.md §5.5); its header was checked with the
    /// others' ([`crate::tokenlink::check_headers`]).
    Tokens {
        /// The file, its header read.
        reader: Box<token_file::Reader<Box<dyn BufRead + Send + 'a>>>,
        /// Its name in messages and the summary (e.g. a path).
        label: String,
    },
}

impl<'a> HolderInput<'a> {
    /// A CSV input.
    pub fn csv(name: &str, csv: CsvSource<'a>, rejects: &'a mut dyn RejectSink) -> Self {
        Self {
            name: name.to_owned(),
            source: HolderSource::Csv {
                csv: Box::new(csv),
                rejects,
            },
            expected_records: 0,
        }
    }

    /// A token-file input.
    pub fn tokens(
        name: &str,
        reader: token_file::Reader<Box<dyn BufRead + Send + 'a>>,
        label: &str,
    ) -> Self {
        Self {
            name: name.to_owned(),
            source: HolderSource::Tokens {
                reader: Box::new(reader),
                label: label.to_owned(),
            },
            expected_records: 0,
        }
    }
}

/// What a caller hears of a run. Every method has a do-nothing default.
pub trait Observer {
    /// A one-line account (rows read per holder, candidate pairs, EM, LSH parameters).
    fn log(&mut self, _line: &str) {}
    /// A warning the user should see even when quiet.
    fn warn(&mut self, _line: &str) {}
    /// A stage starts; `fraction` of the run is done.
    fn stage(&mut self, _stage: &str, _fraction: f64) {}
    /// Reading holder `name` starts; `bytes` its length if known (0: unknown).
    fn holder_started(&mut self, _name: &str, _bytes: u64) {}
    /// Bytes of the current holder read so far.
    fn holder_progress(&mut self, _bytes: u64) {}
    /// Reading the current holder ended.
    fn holder_finished(&mut self) {}
    /// Checked between stages and holders: `true` stops the run with
    /// [`EngineError::Cancelled`].
    fn cancelled(&self) -> bool {
        false
    }
}

/// An observer that hears nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoObserver;

impl Observer for NoObserver {}

/// Which matcher a plan runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Matcher {
    /// Exact tokens joined (direct and guarded recipes, guard vetoes), union-find.
    Exact,
    /// Exact tokens plus CLK Dice matching (SPEC.md §7).
    Clk,
    /// Fellegi–Sunter scoring over blocked candidate pairs (SPEC.md §9).
    Scored,
}

/// A linkage plan: the schema's stages for these keys and options, checked, ready to run and
/// to explain.
#[derive(Debug)]
pub struct LinkPlan<'a> {
    schema: &'a Schema,
    keys: Keys<'a>,
    options: LinkOptions,
    matcher: Matcher,
}

impl<'a> LinkPlan<'a> {
    /// Checks the combination of schema, keys and options.
    ///
    /// # Errors
    /// [`EngineError::TruthNeedsClk`],
    /// [`EngineError::Ingest`] ([`IngestError::IdIsContent`]).
    pub fn new(
        schema: &'a Schema,
        keys: Keys<'a>,
        options: LinkOptions,
    ) -> Result<Self, EngineError> {
        let id_column = options.id_column.as_deref().unwrap_or(&schema.id_column);
        if schema.content.iter().any(|c| c == id_column) {
            return Err(IngestError::IdIsContent(id_column.to_owned()).into());
        }
        if options.truth.is_some() && (schema.clk.is_none() || schema.scoring.is_some()) {
            return Err(EngineError::TruthNeedsClk);
        }
        let matcher = match (&schema.scoring, &schema.clk) {
            (Some(_), _) => Matcher::Scored,
            (None, Some(_)) => Matcher::Clk,
            (None, None) => Matcher::Exact,
        };
        Ok(Self {
            schema,
            keys,
            options,
            matcher,
        })
    }

    /// The matcher the plan runs.
    pub fn matcher(&self) -> Matcher {
        self.matcher
    }

    /// The schema.
    pub fn schema(&self) -> &'a Schema {
        self.schema
    }

    /// The options.
    pub fn options(&self) -> &LinkOptions {
        &self.options
    }

    /// The id column in use.
    pub fn id_column(&self) -> &str {
        self.options
            .id_column
            .as_deref()
            .unwrap_or(&self.schema.id_column)
    }

    /// What the plan will do, stage by stage, in words: recipes and their link modes, block
    /// keys, comparisons, the CLK threshold and LSH parameters, and the cost each stage grows
    /// with. Nothing is read.
    pub fn explain(&self) -> String {
        use std::fmt::Write as _;
        let s = self.schema;
        let mut out = String::new();
        let mode = |m: LinkMode| match m {
            LinkMode::Direct => "direct",
            LinkMode::Guarded => "guarded",
            LinkMode::Guard => "guard",
            LinkMode::Block => "block",
            LinkMode::Compare => "compare",
        };
        let _ = writeln!(
            out,
            "plan: schema {} v{}, project {}, {} matching",
            s.name,
            s.version,
            self.options.project,
            match self.matcher {
                Matcher::Exact => "exact-token",
                Matcher::Clk => "exact-token + CLK",
                Matcher::Scored => "Fellegi-Sunter",
            }
        );
        let _ = writeln!(
            out,
            "  ingest: {} (id column {:?}; rejects with reason codes, SPEC.md §3.3); cost O(rows)",
            match self.keys {
                Keys::Hmac { .. } => "CSV rows, normalized and tokenized with the project key",
                Keys::TokenFiles => "token files made by the holders (no key)",
            },
            self.id_column()
        );
        let recipes: Vec<String> = s
            .recipes
            .iter()
            .map(|r| format!("{} ({})", r.name, mode(r.link)))
            .collect();
        let _ = writeln!(out, "  encode: recipes {}", recipes.join(", "));
        if let Some(c) = &s.clk {
            let _ = writeln!(
                out,
                "  encode: CLK of {} bits over {} features",
                c.filter_bits(),
                c.features.len()
            );
        }
        match self.matcher {
            Matcher::Exact => {
                let _ = writeln!(
                    out,
                    "  cluster: union-find over equal direct/guarded tokens, guard tokens veto; cost O(tokens)"
                );
            }
            Matcher::Clk => {
                let c = s.clk.as_ref().expect("CLK plan");
                let blocked = s.recipes.iter().any(|r| r.link == LinkMode::Block);
                let lsh = match c.lsh {
                    Some(l) => format!(
                        "Hamming-LSH {} bands x {} bits per band",
                        l.bands
                            .map_or("(chosen from the data)".to_owned(), |b| b.to_string()),
                        l.bits_per_band
                            .map_or("(chosen from the data)".to_owned(), |b| b.to_string())
                    ),
                    None => "no LSH".to_owned(),
                };
                let _ = writeln!(
                    out,
                    "  block: {}{}",
                    if blocked {
                        "block recipes"
                    } else {
                        "all pairs (no block recipe)"
                    },
                    format_args!(", {lsh}")
                );
                let _ = writeln!(
                    out,
                    "  compare: Dice coefficient >= {} (cost O(candidate pairs))",
                    c.threshold
                );
                let _ = writeln!(out, "  cluster: union-find over exact tokens and CLK links");
            }
            Matcher::Scored => {
                let sc = s.scoring.as_ref().expect("scored plan");
                let keys: Vec<&str> = s
                    .recipes
                    .iter()
                    .filter(|r| r.link != LinkMode::Compare && r.link != LinkMode::Guard)
                    .map(|r| r.name.as_str())
                    .collect();
                let _ = writeln!(
                    out,
                    "  block: candidate pairs sharing a key of {} (blocks over {} records skipped); cost O(sum of block sizes squared)",
                    keys.join(", "),
                    sc.max_block
                );
                let comps: Vec<String> = sc
                    .comparisons
                    .iter()
                    .map(|c| format!("{} ({} levels)", c.name, c.levels()))
                    .collect();
                let _ = writeln!(out, "  compare: {}", comps.join(", "));
                let _ = writeln!(
                    out,
                    "  score: Fellegi-Sunter, u from {} random pairs, EM on pattern counts; threshold {}",
                    sc.random_pairs,
                    match (self.options.threshold, sc.threshold) {
                        (Some(p), _) => format!("probability {p} (option)"),
                        (None, Some(p)) => format!("probability {p} (schema)"),
                        (None, None) => "at the maximum estimated F1".to_owned(),
                    }
                );
                let _ = writeln!(
                    out,
                    "  cluster: {} clustering of links above the threshold",
                    match sc.clustering {
                        crate::score::Clustering::Guarded =>
                            "guarded (one-to-one, conflict closure)",
                        crate::score::Clustering::Threshold => "threshold",
                    }
                );
            }
        }
        out
    }
}

impl std::fmt::Display for LinkPlan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.explain())
    }
}
