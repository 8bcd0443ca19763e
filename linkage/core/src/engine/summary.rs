//! `summary.json` (SPEC.md §5.3, §7.4, §9.6) as types: what a run read, linked and measured.
//!
//! Written sorted by key (through [`serde_json::Value`], whose maps are ordered), so the file's
//! bytes depend only on the values.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::score::ScoringSummary;

/// The whole summary of a link run.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Summary {
    /// Version of the core that made the run.
    pub renketsu_version: &'static str,
    /// Project (binds the recipe keys).
    pub project: String,
    /// The schema.
    pub schema: SchemaSummary,
    /// `csv` or `tokens`.
    pub inputs: &'static str,
    /// `hmac`, or e.g. `oprf-ristretto255/voprf`.
    pub token_mode: String,
    /// Whether `joined.csv` was written (CSV inputs only: token files carry no content).
    pub joined_csv: bool,
    /// "Today" for date checks, `YYYY-MM-DD`.
    pub today: String,
    /// Normalization tables in use.
    pub normalization: NormalizationSummary,
    /// Per holder, in input order.
    pub parties: Vec<HolderSummary>,
    /// Cross-holder record pairs written.
    pub links: u64,
    /// Clusters.
    pub clusters: ClustersSummary,
    /// Distinct direct tokens in the join.
    pub distinct_tokens: usize,
    /// Merges of the exact-token join.
    pub merges: MergesSummary,
    /// The CLK stage (schemas with `[clk]` and no `[scoring]`).
    pub clk: Option<ClkSummary>,
    /// Stage wall times, milliseconds.
    pub timings_ms: Timings,
    /// The scored stage (schemas with `[scoring]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scoring: Option<ScoringSummary>,
}

impl Summary {
    /// The summary as JSON, keys sorted (the form `summary.json` is written in).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a summary serializes")
    }
}

/// The schema a run used.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct SchemaSummary {
    /// `name` of the schema.
    pub name: String,
    /// `version` of the schema.
    pub version: u32,
    /// Where it was read from.
    pub path: String,
}

/// Normalization tables.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct NormalizationSummary {
    /// Unicode version of the NFKC tables.
    pub unicode_version: String,
}

/// One holder's input.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct HolderSummary {
    /// The holder's name.
    pub party: String,
    /// Where its input was read from.
    pub input: String,
    /// Encoding the input was read in.
    pub encoding: String,
    /// Rows read.
    pub read: u64,
    /// Rows tokenized.
    pub tokenized: u64,
    /// Rows rejected (read = tokenized + rejected).
    pub rejected: u64,
    /// Rejected rows by reason code.
    pub rejects_by_reason: BTreeMap<String, u64>,
    /// Field rejects by field and code.
    pub field_rejects: BTreeMap<String, BTreeMap<String, u64>>,
    /// Records with at least one token, by recipe.
    pub tokens_by_recipe: BTreeMap<String, u64>,
    /// Recipes the input can make.
    pub recipes_available: Vec<String>,
    /// Identifier columns of the schema the input lacks.
    pub missing_identifier_columns: Vec<String>,
    /// Content columns present.
    pub content_columns: Vec<String>,
    /// Content columns of the schema the input lacks.
    pub missing_content_columns: Vec<String>,
}

/// Cluster counts.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct ClustersSummary {
    /// Clusters, singletons included.
    pub total: usize,
    /// Clusters with records of two or more holders.
    pub multi_party: u64,
    /// Records in the largest cluster.
    pub largest: usize,
}

/// Merges of the exact-token join (SPEC.md §5.1).
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct MergesSummary {
    /// By direct tokens.
    pub direct: u64,
    /// By guarded tokens.
    pub guarded: u64,
    /// Guarded merges refused by a guard token.
    pub vetoed_by_guards: u64,
}

/// The CLK stage (SPEC.md §7).
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct ClkSummary {
    /// Filter length (bits).
    pub bits: Option<u32>,
    /// Dice threshold.
    pub threshold: Option<f64>,
    /// Whether block recipes restrict candidates.
    pub blocking: bool,
    /// Hamming-LSH (SPEC.md §7.4), when configured.
    pub lsh: Option<LshSummary>,
    /// Pairs whose Dice coefficient was computed.
    pub pairs_compared: u64,
    /// 1 − compared / possible.
    pub reduction_ratio: f64,
    /// Records in the largest block.
    pub largest_block: usize,
    /// Pairs completeness against known true pairs (`--truth`).
    pub pairs_completeness: Option<PairsCompleteness>,
    /// Pairs at or above the threshold.
    pub pairs_above_threshold: u64,
    /// Links made.
    pub links: u64,
}

/// Pairs completeness of the CLK candidates.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct PairsCompleteness {
    /// Known true pairs among tokenized records.
    pub true_pairs: u64,
    /// Of those, candidates.
    pub candidates: u64,
    /// candidates / true_pairs.
    pub ratio: f64,
}

/// `clk.lsh`: the parameters used — `bands` and `bits_per_band` at the top when every pair of
/// holders used the same — what the schema set, and per pair of holders the figures they were
/// chosen by (SPEC.md §7.4).
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct LshSummary {
    /// Bands (all holder pairs alike), else as configured.
    pub bands: Option<u32>,
    /// Bits per band (all holder pairs alike), else as configured.
    pub bits_per_band: Option<u32>,
    /// What the schema set (`None`: chosen from the data).
    pub configured: LshConfigured,
    /// The targets the choice aims at.
    pub targets: LshTargets,
    /// Per pair of holders.
    pub holder_pairs: Vec<LshHolderPair>,
}

/// `[clk.lsh]` as configured.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct LshConfigured {
    /// Bands.
    pub bands: Option<u32>,
    /// Bits per band.
    pub bits_per_band: Option<u32>,
}

/// Targets of the size-aware LSH choice.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct LshTargets {
    /// P(candidate | Dice at threshold) aimed at.
    pub candidate_probability_at_threshold: f64,
    /// Random collisions per record per band allowed.
    pub random_collisions_per_record_per_band: f64,
}

/// The LSH parameters of one pair of holders and the figures behind them.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct LshHolderPair {
    /// The two holders.
    pub holders: [String; 2],
    /// Bands used.
    pub bands: u32,
    /// Bits per band used.
    pub bits_per_band: u32,
    /// Which were chosen from the data.
    pub chosen: LshChosen,
    /// Records of the two holders.
    pub records: [u64; 2],
    /// Mean popcount of each holder's filters.
    pub mean_popcount: [f64; 2],
    /// Sampled non-matching pairs.
    pub sampled_pairs: u64,
    /// q(r).
    pub random_band_probability: f64,
    /// q(r)·n_a·n_b.
    pub random_collisions_per_band: f64,
    /// Hamming distance at the threshold (bits).
    pub distance_at_threshold: f64,
    /// p(r).
    pub band_probability_at_threshold: f64,
    /// P_t(r, b).
    pub candidate_probability_at_threshold: f64,
}

/// Which LSH parameters were chosen from the data.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct LshChosen {
    /// Bands.
    pub bands: bool,
    /// Bits per band.
    pub bits_per_band: bool,
}

/// Stage wall times of a run, milliseconds (0.1 ms resolution).
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct Timings {
    /// Reading and tokenizing every holder.
    pub read_tokenize: f64,
    /// Joining, CLK or scoring, and clustering.
    pub join_cluster: f64,
    /// Writing the outputs.
    pub write: f64,
    /// The whole run.
    pub total: f64,
}
