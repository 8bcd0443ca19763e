//! Linking token sets (SPEC.md §5.1, §5.5, §7.1): the steps `renketsu link` and the
//! linkage-unit service share once holders' records are tokens — headers checked against each
//! other, tokens into the [`TokenJoin`] by their recipe's link mode, CLK Dice matching within
//! block-recipe and Hamming-LSH candidates, then clustering.
//!
//! One code path for both, so that a job run by the linkage unit gives exactly the clusters of
//! `renketsu link` on the same token files.

use std::io::BufRead;

use rayon::prelude::*;

use crate::Token;
use crate::cluster::TokenJoin;
use crate::dice::{Candidate, Filters, greedy_one_to_one, pairs_above, score_candidates};
use crate::lsh::{LshBands, LshChoice, choose_params};
use crate::schema::{ClkSolver, ClkSpec, LinkMode, Schema};
use crate::token_file::{Counts, Header, Reader, RecordBatch, TokenFileError};

/// Errors linking token sets. Messages name inputs (files, uploads) and recipes, never tokens.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenLinkError {
    /// A token file could not be read or breaks the format.
    #[error(transparent)]
    File(#[from] TokenFileError),
    /// Two inputs cannot be linked together (different schema, project, mode, epoch…).
    #[error("{0}")]
    Incompatible(String),
    /// An input is valid alone but not for this job (duplicate id, CLK length…).
    #[error("{input}: {message}")]
    Input {
        /// The input.
        input: String,
        /// What is wrong.
        message: String,
    },
}

/// Checks that token files can be linked together under a schema whose file has SHA-256
/// `schema_digest` (SPEC.md §5.5): same schema digest, project (and `project` if given), token
/// mode, and per recipe the same epoch and public key. `files` are `(input name, header)`.
///
/// # Errors
/// [`TokenLinkError::Incompatible`] naming both inputs.
pub fn check_headers(
    schema_digest: &str,
    files: &[(&str, &Header)],
    project: Option<&str>,
) -> Result<(), TokenLinkError> {
    let Some((first_name, first)) = files.first() else {
        return Err(TokenLinkError::Incompatible("no token files".to_owned()));
    };
    let bad = |m: String| Err(TokenLinkError::Incompatible(m));
    if let Some(p) = project
        && p != first.project
    {
        return bad(format!(
            "{first_name} holds tokens of project {:?}, not --project {p:?}",
            first.project
        ));
    }
    for (name, h) in files {
        if h.schema.digest != schema_digest {
            return bad(format!(
                "{name} was made with another schema (SHA-256 {}; the linkage schema has {schema_digest}): every holder and the linkage unit must use the same schema file",
                h.schema.digest
            ));
        }
        if h.project != first.project {
            return bad(format!(
                "token files of different projects cannot be linked: {name} is {:?}, {first_name} is {:?}",
                h.project, first.project
            ));
        }
        if h.mode_name() != first.mode_name() {
            return bad(format!(
                "token files of different modes cannot be linked (their tokens never match): {name} is {}, {first_name} is {}",
                h.mode_name(),
                first.mode_name()
            ));
        }
        if h.recipes.len() != first.recipes.len() {
            return bad(format!(
                "{name} lists {} recipes, {first_name} lists {}",
                h.recipes.len(),
                first.recipes.len()
            ));
        }
        for (a, b) in h.recipes.iter().zip(&first.recipes) {
            if (a.epoch, &a.public_key) != (b.epoch, &b.public_key) {
                // Epochs as numbers ("1"), not Rust's `Some(1)`.
                let epoch = |e: Option<u64>| e.map_or_else(|| "none".to_owned(), |e| e.to_string());
                return bad(format!(
                    "recipe {}/v{}: {name} has epoch {}, {first_name} has epoch {} (or another public key): re-key one of them to the other's epoch first",
                    a.name,
                    a.version,
                    epoch(a.epoch),
                    epoch(b.epoch)
                ));
            }
        }
    }
    Ok(())
}

/// Adds one token of record `g` to the join according to its recipe's link mode (SPEC.md
/// §5.1): direct and guarded tokens link, guard tokens veto, block tokens only make CLK
/// candidates (pushed to `blocks`). With `scoring` (SPEC.md §9.2) every linking or block token
/// is a blocking key instead.
pub fn add_token(
    join: &mut TokenJoin,
    blocks: &mut Vec<(Token, u32)>,
    link: LinkMode,
    scoring: bool,
    recipe: usize,
    g: u32,
    t: &Token,
) {
    match link {
        LinkMode::Direct | LinkMode::Guarded | LinkMode::Block if scoring => {
            blocks.push((block_key(t, recipe), g));
        }
        LinkMode::Compare => {}
        LinkMode::Direct => join.add(g, t),
        LinkMode::Guarded => join.add_guarded(g, t),
        LinkMode::Guard => join.add_guard(g, recipe as u16, t),
        LinkMode::Block => blocks.push((*t, g)),
    }
}

/// A scored run's blocking key of token `t` of recipe `recipe`: the token with its last byte
/// replaced by the recipe's index (mod 256), so that candidate generation can say which
/// recipe a capped block came from ([`block_key_recipe`]). Tokens of different recipes never
/// agree anyway (each recipe has its own key, SPEC.md §4), and 31 bytes of a keyed hash
/// leave collisions at 2^-248.
pub fn block_key(t: &Token, recipe: usize) -> Token {
    let mut k = *t;
    k[k.len() - 1] = recipe as u8;
    k
}

/// The recipe index (mod 256) of a key made by [`block_key`].
pub fn block_key_recipe(k: &Token) -> u8 {
    k[k.len() - 1]
}

/// Record ids of one token set, in record order, stored in one buffer (no allocation per
/// id).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordIds {
    bytes: String,
    ends: Vec<usize>,
}

impl RecordIds {
    /// Number of ids.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Appends an id.
    pub fn push(&mut self, id: &str) {
        self.bytes.push_str(id);
        self.ends.push(self.bytes.len());
    }

    /// Id `i`.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    /// The ids in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// The first id (in record order) that appears again later, if any: ids are sorted by
    /// a 64-bit hash (in parallel) and equal hashes compared.
    pub fn first_repeat(&self) -> Option<&str> {
        use std::hash::{BuildHasher as _, BuildHasherDefault};
        let hasher = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
        let mut keyed: Vec<(u64, u32)> = (0..self.len())
            .into_par_iter()
            .map(|i| (hasher.hash_one(self.get(i)), i as u32))
            .collect();
        keyed.par_sort_unstable();
        let mut first: Option<u32> = None;
        for run in keyed.chunk_by(|x, y| x.0 == y.0) {
            if run.len() < 2 {
                continue;
            }
            // Equal hashes: sort by the ids themselves; in each group of equal ids the
            // earliest record is the repeated one.
            let mut by_id: Vec<(&str, u32)> = run
                .iter()
                .map(|&(_, i)| (self.get(i as usize), i))
                .collect();
            by_id.sort_unstable();
            for group in by_id.chunk_by(|x, y| x.0 == y.0) {
                if group.len() > 1 {
                    first = Some(first.map_or(group[0].1, |f| f.min(group[0].1)));
                }
            }
        }
        first.map(|i| self.get(i as usize))
    }
}

/// One holder's token set, read into a join.
pub struct TokenParty {
    /// The file's header.
    pub header: Header,
    /// Record ids in record order (record `i` is global record `offset + i` of the join).
    pub ids: RecordIds,
    /// The records' CLKs when the schema has `[clk]`.
    pub filters: Option<Filters>,
    /// The trailer's counts.
    pub counts: Counts,
}

/// Reads one holder's token file into `join` (records numbered after those already in it) and
/// `blocks`, keeping only recipes of `schema` (matched by name and version: a schema narrowed
/// with `--recipes` drops the others). `name` names the input in errors. Lines are parsed in
/// parallel batches ([`Reader::next_batches`]).
///
/// # Errors
/// [`TokenLinkError::File`] for a malformed or truncated file, [`TokenLinkError::Input`] for
/// an id that appears twice, CLKs whose length is not the schema's, or more than 2^32 − 1
/// records in one join.
pub fn read_token_party<R: BufRead + Send>(
    schema: &Schema,
    reader: &mut Reader<R>,
    name: &str,
    join: &mut TokenJoin,
    blocks: &mut Vec<(Token, u32)>,
) -> Result<TokenParty, TokenLinkError> {
    let header = reader.header().clone();
    let input_err = |message: String| TokenLinkError::Input {
        input: name.to_owned(),
        message,
    };
    // Header recipe index -> schema recipe index (None: not in this schema).
    let map: Vec<Option<usize>> = header
        .recipes
        .iter()
        .map(|r| {
            schema
                .recipes
                .iter()
                .position(|s| s.name == r.name && s.version == r.version)
        })
        .collect();
    let mut filters = match (&schema.clk, header.clk_bits) {
        (Some(c), Some(bits)) if bits == c.filter_bits() => Some(Filters::new(bits as usize / 64)),
        (Some(c), bits) => {
            return Err(input_err(format!(
                "the schema compares {}-bit CLKs but the token file has {}",
                c.filter_bits(),
                bits.map_or("none".to_owned(), |b| format!("{b}-bit CLKs"))
            )));
        }
        (None, _) => None,
    };
    let mut ids = RecordIds::default();
    // Batches are added to the join while the next ones are read and parsed (rayon::join).
    let mut apply = |batches: &[RecordBatch]| -> Result<(), TokenLinkError> {
        for batch in batches {
            if join.records() + batch.len() > u32::MAX as usize {
                return Err(input_err(
                    "more than 2^32 - 1 records in one job".to_owned(),
                ));
            }
            for i in 0..batch.len() {
                let g = join.push_record();
                for &(r, ref t) in batch.tokens(i) {
                    if let Some(s) = map[r as usize] {
                        add_token(join, blocks, schema.recipes[s].link, false, s, g, t);
                    }
                }
                if let (Some(f), Some(clk)) = (filters.as_mut(), batch.clk(i)) {
                    f.push(clk);
                }
                ids.push(batch.id(i));
            }
        }
        Ok(())
    };
    let (mut current, mut next) = (Vec::new(), Vec::new());
    let mut more = reader.next_batches(&mut current)?;
    while more {
        let (read, applied) = rayon::join(|| reader.next_batches(&mut next), || apply(&current));
        applied?;
        more = read?;
        std::mem::swap(&mut current, &mut next);
    }
    if let Some(id) = ids.first_repeat() {
        return Err(input_err(format!(
            "record id {id:?} appears twice; a token file has one record per id"
        )));
    }
    let counts = reader.counts().expect("trailer read").clone();
    Ok(TokenParty {
        header,
        ids,
        filters,
        counts,
    })
}

/// Global index of each party's first record, for parties of `sizes` records numbered party
/// after party.
pub fn party_offsets(sizes: &[usize]) -> Vec<u32> {
    sizes
        .iter()
        .scan(0u32, |acc, &n| {
            let start = *acc;
            *acc += n as u32;
            Some(start)
        })
        .collect()
}

/// The party of global record `g`, given [`party_offsets`].
pub fn party_of(offsets: &[u32], g: u32) -> usize {
    offsets.partition_point(|&o| o <= g) - 1
}

/// Counts of the CLK stage.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClkStats {
    /// Pairs whose Dice coefficient was considered.
    pub compared: u64,
    /// Cross-holder pairs in all (the reduction ratio's denominator).
    pub possible: u64,
    /// Pairs at or above the threshold.
    pub above_threshold: u64,
    /// Pairs the solver accepted (linked).
    pub links: u64,
    /// Largest group of records sharing a block token.
    pub largest_block: usize,
    /// Cross-holder true pairs given to [`clk_links`] (0: none given).
    pub true_pairs: u64,
    /// Those of them that were candidates (compared, or pruned by the popcount bound when no
    /// blocking restricts the pairs): pairs completeness = `true_candidates / true_pairs`.
    pub true_candidates: u64,
    /// Hamming-LSH parameters per pair of holders `(i, j)`, `i < j` (with `[clk.lsh]`).
    pub lsh: Vec<(usize, usize, LshChoice)>,
}

/// Candidate pairs per pair of holders from block tokens: records of holders `i < j` that
/// share a token, as `(local in i, local in j)`, sorted and deduplicated.
pub fn block_candidates(
    blocks: &mut [(Token, u32)],
    offsets: &[u32],
    parties: usize,
    largest: &mut usize,
) -> Vec<Vec<Vec<(u32, u32)>>> {
    let party_of = |g: u32| party_of(offsets, g);
    let mut out = vec![vec![Vec::new(); parties]; parties];
    blocks.sort_unstable();
    for group in blocks.chunk_by(|x, y| x.0 == y.0) {
        *largest = (*largest).max(group.len());
        for (k, &(_, x)) in group.iter().enumerate() {
            for &(_, y) in &group[k + 1..] {
                let (px, py) = (party_of(x), party_of(y));
                if px == py {
                    continue;
                }
                let ((pa, a), (pb, b)) = if px < py {
                    ((px, x), (py, y))
                } else {
                    ((py, y), (px, x))
                };
                out[pa][pb].push((a - offsets[pa], b - offsets[pb]));
            }
        }
    }
    for row in &mut out {
        for c in row {
            c.sort_unstable();
            c.dedup();
        }
    }
    out
}

/// The scored CLK pairs of one pair of holders ([`score_holder_pair`]).
#[derive(Debug, Default)]
pub struct HolderPairScores {
    /// Pairs with Dice ≥ the threshold, sorted by `(a, b)`.
    pub pairs: Vec<Candidate>,
    /// Distinct candidate pairs compared (all pairs: those the popcount bound let through).
    pub compared: u64,
    /// How many of the `probes` given were candidates.
    pub probes_found: u64,
    /// The Hamming-LSH parameters used and the figures behind them (with `spec.lsh`).
    pub lsh: Option<LshChoice>,
}

/// Dice scores of one pair of holders' filters `fa` × `fb` (SPEC.md §7.1, §7.4): the
/// candidates are the block-recipe pairs `block` (sorted, distinct; `None`: no block recipes)
/// together with the Hamming-LSH candidates of `spec.lsh`; with neither, every pair (pruned
/// by popcount). LSH bands and bits per band the schema leaves out are chosen from the two
/// holders' sizes and filters ([`choose_params`], SPEC.md §7.4). LSH candidates are streamed into scoring band by band ([`LshBands::score`]),
/// so memory is `O(records + block candidates + pairs ≥ threshold)`; a pair that is both a
/// block and an LSH candidate is counted and kept once. `probes` are `(a, b)` pairs (e.g. the
/// true matches, for pairs completeness) checked for being candidates.
pub fn score_holder_pair(
    spec: &ClkSpec,
    fa: &Filters,
    fb: &Filters,
    block: Option<Vec<(u32, u32)>>,
    probes: &[(u32, u32)],
) -> HolderPairScores {
    let choice = spec
        .lsh
        .map(|l| choose_params(fa, fb, spec.threshold, l.bands, l.bits_per_band));
    let lsh = choice.as_ref().map(|c| {
        let mut bands = LshBands::new(&c.params, fa.words() * 64);
        let scored = bands.score(fa, fb, spec.threshold);
        (bands, scored)
    });
    let in_block = |p: &(u32, u32)| block.as_ref().is_some_and(|c| c.binary_search(p).is_ok());
    let in_lsh = |&(i, j): &(u32, u32)| {
        lsh.as_ref()
            .is_some_and(|(bands, _)| bands.is_candidate(fa.get(i as usize), fb.get(j as usize)))
    };
    let probes_found = if block.is_none() && lsh.is_none() {
        probes.len() as u64
    } else {
        probes
            .par_iter()
            .filter(|p| in_block(p) || in_lsh(p))
            .count() as u64
    };
    // Block candidates that LSH also produced are scored there too: count them once.
    let overlap = match &block {
        Some(c) if lsh.is_some() => c.par_iter().filter(|p| in_lsh(p)).count() as u64,
        _ => 0,
    };
    match (block, lsh.map(|(_, l)| l)) {
        (None, None) => {
            let scores = pairs_above(fa, fb, spec.threshold);
            HolderPairScores {
                pairs: scores.pairs,
                compared: scores.compared,
                probes_found,
                lsh: choice,
            }
        }
        (Some(c), None) => HolderPairScores {
            pairs: score_candidates(fa, fb, &c, spec.threshold),
            compared: c.len() as u64,
            probes_found,
            lsh: choice,
        },
        (None, Some(l)) => HolderPairScores {
            pairs: l.pairs,
            compared: l.candidates,
            probes_found,
            lsh: choice,
        },
        (Some(c), Some(mut l)) => {
            let mut pairs = score_candidates(fa, fb, &c, spec.threshold);
            pairs.append(&mut l.pairs);
            // Both halves are sorted; a pair in both has the same score in both.
            pairs.par_sort_unstable_by_key(|x| (x.a, x.b));
            pairs.dedup_by_key(|x| (x.a, x.b));
            HolderPairScores {
                pairs,
                compared: c.len() as u64 + l.candidates - overlap,
                probes_found,
                lsh: choice,
            }
        }
    }
}

/// Dice matching of every pair of holders (SPEC.md §7.1): all pairs pruned by popcount, or
/// only block-recipe candidates (`blocks`) and Hamming-LSH candidates (`[clk.lsh]`, §7.4);
/// then the solver. Accepted pairs are linked directly in `join`. `filters[i]` are holder
/// `i`'s CLKs (`None`: the holder has none) and `offsets` its first global record. `truth`
/// (global record pairs; may be empty) are known matches: the stats then count how many were
/// candidates (pairs completeness); pairs within one holder are ignored.
pub fn clk_links(
    spec: &ClkSpec,
    filters: &[Option<&Filters>],
    offsets: &[u32],
    blocks: Option<&mut [(Token, u32)]>,
    truth: &[(u32, u32)],
    join: &mut TokenJoin,
) -> ClkStats {
    let mut stats = ClkStats::default();
    let n = filters.len();
    let mut candidates = blocks.map(|b| block_candidates(b, offsets, n, &mut stats.largest_block));
    let mut probes = vec![vec![Vec::new(); n]; n];
    for &(x, y) in truth {
        let (px, py) = (party_of(offsets, x), party_of(offsets, y));
        if px == py {
            continue;
        }
        let ((pa, a), (pb, b)) = if px < py {
            ((px, x), (py, y))
        } else {
            ((py, y), (px, x))
        };
        probes[pa][pb].push((a - offsets[pa], b - offsets[pb]));
    }
    for i in 0..n {
        for j in i + 1..n {
            let (Some(fa), Some(fb)) = (filters[i], filters[j]) else {
                continue;
            };
            stats.possible += (fa.len() * fb.len()) as u64;
            stats.true_pairs += probes[i][j].len() as u64;
            let block = candidates.as_mut().map(|c| std::mem::take(&mut c[i][j]));
            let scored = score_holder_pair(spec, fa, fb, block, &probes[i][j]);
            stats.compared += scored.compared;
            stats.true_candidates += scored.probes_found;
            if let Some(c) = scored.lsh {
                stats.lsh.push((i, j, c));
            }
            let pairs = scored.pairs;
            stats.above_threshold += pairs.len() as u64;
            let accepted = match spec.solver {
                ClkSolver::Greedy => greedy_one_to_one(pairs),
                ClkSolver::Threshold => pairs,
            };
            for c in accepted {
                join.link(offsets[i] + c.a, offsets[j] + c.b);
                stats.links += 1;
            }
        }
    }
    stats
}

/// The clusters of a token-set job.
pub struct TokenClusters {
    /// Cluster label of each global record (parties' records in input order).
    pub labels: Vec<u32>,
    /// Number of clusters (labels are `0..clusters`).
    pub clusters: usize,
    /// Counts of the join (merges, vetoes).
    pub join: crate::cluster::JoinStats,
    /// Counts of the CLK stage, when the schema has `[clk]`.
    pub clk: Option<ClkStats>,
}

/// Links token sets already read into `join` (with [`read_token_party`]): CLK matching when
/// the schema has `[clk]` (block recipes, if any, restricting candidates), then clustering.
pub fn cluster_token_parties(
    schema: &Schema,
    parties: &[TokenParty],
    mut blocks: Vec<(Token, u32)>,
    mut join: TokenJoin,
) -> TokenClusters {
    let offsets = party_offsets(&parties.iter().map(|p| p.ids.len()).collect::<Vec<_>>());
    let clk = schema.clk.as_ref().map(|spec| {
        let blocked = schema.recipes.iter().any(|r| r.link == LinkMode::Block);
        let filters: Vec<Option<&Filters>> = parties.iter().map(|p| p.filters.as_ref()).collect();
        clk_links(
            spec,
            &filters,
            &offsets,
            blocked.then_some(blocks.as_mut_slice()),
            &[],
            &mut join,
        )
    });
    let (labels, clusters, join) = join.into_clusters();
    TokenClusters {
        labels,
        clusters,
        join,
        clk,
    }
}

#[cfg(test)]
mod epoch_message_tests {
    use super::*;
    use crate::token_file::{FORMAT, MODE_OPRF, RecipeRef, SchemaRef, VERSION};

    fn header(party: &str, epoch: u64) -> Header {
        Header {
            format: FORMAT.to_owned(),
            version: VERSION,
            project: "p".to_owned(),
            party: party.to_owned(),
            schema: SchemaRef {
                name: "s".to_owned(),
                version: 1,
                digest: "d".to_owned(),
            },
            mode: MODE_OPRF.to_owned(),
            oprf_mode: Some("voprf".to_owned()),
            recipes: vec![RecipeRef {
                name: "r".to_owned(),
                version: 1,
                epoch: Some(epoch),
                public_key: Some(format!("{epoch:064}")),
            }],
            clk_bits: None,
            today: "2026-11-22".to_owned(),
            created_by: "test".to_owned(),
        }
    }

    #[test]
    fn an_epoch_mismatch_names_both_inputs_and_plain_epochs() {
        let (a, b) = (header("ehr", 1), header("ndb", 2));
        let msg = check_headers("d", &[("ehr's upload", &a), ("ndb's upload", &b)], None)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("ndb's upload has epoch 2") && msg.contains("ehr's upload has epoch 1"),
            "{msg}"
        );
        assert!(!msg.contains("Some("), "{msg}");
    }
}
