//! `renketsu link`: tokenize every holder's input, join exact tokens, cluster, and write the
//! outputs (SPEC.md §5).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::RngCore as _;
use renketsu_linkage::clk::native::{NativeEncoder, PositionCache};
use renketsu_linkage::cluster::{JoinStats, TokenJoin};
use renketsu_linkage::dice::Filters;
use renketsu_linkage::fs::FeaturesBuilder;
use renketsu_linkage::lsh::{self, LshChoice};
use renketsu_linkage::schema::LinkMode;
use renketsu_linkage::tokenizer::RecipeSource;
use renketsu_linkage::tokenlink::{ClkStats, TokenParty, add_token, clk_links};
use renketsu_linkage::{NormalizeContext, ProjectSecret, RecordTokens, Schema, Tokenizer};
use serde_json::json;

use crate::input::{CsvInput, EncodingArg};
use crate::output::{CsvFile, PendingFile};
use crate::tokens_file;

/// Row-level reject reasons (SPEC.md §3.3). The codes are stable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
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

/// One holder's input, as given on the command line.
#[derive(Clone, Debug)]
pub struct InputSpec {
    /// Party name: used in output columns and file names.
    pub party: String,
    /// CSV path.
    pub path: PathBuf,
}

impl InputSpec {
    /// Parses `NAME=PATH` or `PATH` (party = file stem).
    pub fn parse(s: &str) -> Result<Self> {
        let (party, path) = match s.split_once('=') {
            Some((name, path)) if !name.contains(['/', '\\']) => {
                (name.to_owned(), PathBuf::from(path))
            }
            _ => {
                let path = PathBuf::from(s);
                let stem = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .with_context(|| format!("cannot name a party after {s:?}; use NAME=PATH"))?
                    .to_owned();
                (stem, path)
            }
        };
        if party.is_empty()
            || party.len() > 64
            || !party
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            bail!(
                "party name {party:?} must be 1-64 characters of A-Z a-z 0-9 _ - . (use NAME=PATH)"
            );
        }
        Ok(Self { party, path })
    }
}

/// Everything `link` needs, resolved from the command line.
pub struct LinkJob<'a> {
    /// The parsed schema.
    pub schema: &'a Schema,
    /// Path of the schema file (for the summary).
    pub schema_path: &'a Path,
    /// Holders' inputs, in order; at least two.
    pub inputs: Vec<InputSpec>,
    /// Output directory.
    pub out: &'a Path,
    /// Project name (binds the recipe keys).
    pub project: &'a str,
    /// The project master secret: CSV inputs. `None` when every input is a token file
    /// (SPEC.md §5.5): the linkage unit then needs no key at all.
    pub secret: Option<&'a ProjectSecret>,
    /// Id column override (else the schema's).
    pub id_column: Option<&'a str>,
    /// Input encoding.
    pub encoding: EncodingArg,
    /// "Today" for date checks.
    pub ctx: NormalizeContext,
    /// No progress bars or log lines.
    pub quiet: bool,
    /// Token mode of the inputs for the summary: `hmac` (CSV inputs or HMAC token files), or
    /// e.g. `oprf-ristretto255/voprf`.
    pub token_mode: String,
    /// Scoring: match-probability threshold overriding the schema's and the automatic one.
    pub threshold: Option<f64>,
    /// Scoring: parties whose data may hold several records of one person.
    pub duplicates: Vec<String>,
    /// Known true pairs (`renketsu eval` format) for the CLK pairs completeness.
    pub truth: Option<&'a Path>,
}

/// Row counts of one holder's input.
#[derive(Default)]
pub(crate) struct PartyStats {
    /// Data rows read.
    pub read: u64,
    /// Rows tokenized (at least one linking token, or CLK bits).
    pub tokenized: u64,
    /// Rejected rows per reason.
    pub rejects: BTreeMap<RowReject, u64>,
    /// Field rejects per field and code.
    pub field_rejects: BTreeMap<String, BTreeMap<&'static str, u64>>,
    /// Records with at least one token of each recipe.
    pub tokens_by_recipe: Vec<u64>,
}

struct Party {
    spec: InputSpec,
    encoding: String,
    ids: Vec<String>,
    content_columns: Vec<String>,
    missing_content: Vec<String>,
    recipes_available: Vec<String>,
    missing_identifier_columns: Vec<String>,
    /// CLKs of the tokenized records, in record order (when the schema has `[clk]`).
    filters: Option<Filters>,
    /// Content values, `content_columns.len()` per accepted record.
    content: Vec<String>,
    stats: PartyStats,
}

/// Result of a link run, for the caller's message.
pub struct LinkOutcome {
    /// Cross-party record pairs written.
    pub links: u64,
    /// Clusters (including singletons).
    pub clusters: usize,
}

fn progress(quiet: bool, len: u64, party: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template(
            "{prefix:>12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    pb.set_prefix(party.to_owned());
    pb
}

/// Runs the whole link job.
pub fn run(job: &LinkJob<'_>) -> Result<LinkOutcome> {
    let t0 = Instant::now();
    if job.inputs.len() < 2 {
        bail!("link needs at least two --input files, one per data holder");
    }
    let mut seen = HashSet::new();
    for i in &job.inputs {
        if !seen.insert(i.party.as_str()) {
            bail!(
                "two inputs are both named party {:?}; name them with NAME=PATH",
                i.party
            );
        }
    }
    std::fs::create_dir_all(job.out)
        .with_context(|| format!("cannot create output directory {}", job.out.display()))?;
    // A summary.json marks a complete run: remove an old one first, so that outputs of a run
    // that fails are never taken for complete.
    match std::fs::remove_file(job.out.join("summary.json")) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context("cannot remove the previous summary.json"),
    }
    let tokenizer = job
        .secret
        .map(|secret| Tokenizer::new(job.schema, secret, job.project, job.ctx));
    let id_column = job.id_column.unwrap_or(&job.schema.id_column);
    if job.schema.content.iter().any(|c| c == id_column) {
        bail!(
            "the id column {id_column:?} is also a content column of the schema; record ids never go to the researcher's view"
        );
    }

    // Pass 1: read and tokenize each holder, streaming tokens into the join.
    let mut join = TokenJoin::new(0);
    let mut blocks: Vec<(renketsu_linkage::Token, u32)> = Vec::new();
    for d in &job.duplicates {
        if !job.inputs.iter().any(|i| &i.party == d) {
            bail!("--duplicates {d:?}: no input is named {d:?}");
        }
    }
    if job.truth.is_some() && (job.schema.clk.is_none() || job.schema.scoring.is_some()) {
        bail!(
            "--truth reports the pairs completeness of CLK candidates: the schema needs [clk] and no [scoring] (use renketsu eval for the output's quality)"
        );
    }
    if job.schema.scoring.is_some() && job.secret.is_none() {
        bail!(
            "a schema with [scoring] needs the holders' CSVs: token files carry no comparison values yet (link them with a schema without [scoring])"
        );
    }
    let mut features = job
        .schema
        .scoring
        .as_ref()
        .zip(job.secret)
        .map(|(_, secret)| FeaturesBuilder::new(job.schema, secret, job.project));
    let mut parties = Vec::with_capacity(job.inputs.len());
    let mut rejects_files = Vec::new();
    for (holder, spec) in job.inputs.iter().enumerate() {
        match &tokenizer {
            Some(tokenizer) => {
                let clk = job
                    .secret
                    .and_then(|secret| ClkEncoding::from_schema(job.schema, secret, job.project));
                let (party, rejects) = read_party(
                    job,
                    tokenizer,
                    clk,
                    id_column,
                    spec,
                    &mut join,
                    &mut blocks,
                    features.as_mut().map(|f| (holder as u16, f)),
                )?;
                parties.push(party);
                rejects_files.push(rejects);
            }
            None => parties.push(read_token_party(job, spec, &mut join, &mut blocks)?),
        }
    }
    let t_tokenize = t0.elapsed();
    let mut scoring_run = None;
    let clk_stats = match &job.schema.clk {
        _ if features.is_some() => None,
        Some(spec) => {
            let blocked = job.schema.recipes.iter().any(|r| r.link == LinkMode::Block);
            let filters: Vec<_> = parties.iter().map(|p| p.filters.as_ref()).collect();
            let truth = match job.truth {
                Some(path) => truth_pairs(path, &parties)?,
                None => Vec::new(),
            };
            let stats = clk_links(
                spec,
                &filters,
                &party_offsets(&parties),
                blocked.then_some(blocks.as_mut_slice()),
                &truth,
                &mut join,
            );
            log_lsh("renketsu link", &stats.lsh, &parties, job.quiet);
            Some(stats)
        }
        None => None,
    };
    let (labels, n_clusters, join_stats) = match features.take() {
        Some(f) => {
            let (labels, k, run) = crate::scoring::score_and_cluster(
                job,
                job.schema.scoring.as_ref().expect("scoring"),
                f.finish(),
                &mut blocks,
                &parties.iter().map(|p| p.ids.len()).collect::<Vec<_>>(),
            )?;
            scoring_run = Some(run);
            (labels, k, JoinStats::default())
        }
        None => join.into_clusters(),
    };
    let t_cluster = t0.elapsed();

    // Pseudonyms: 128 random bits per cluster from the OS-seeded CSPRNG, unique.
    let mut rng = rand::rng();
    let mut pids = Vec::with_capacity(n_clusters);
    let mut used = HashSet::with_capacity(n_clusters);
    while pids.len() < n_clusters {
        let mut b = [0u8; 16];
        rng.fill_bytes(&mut b);
        let pid = hex::encode(b);
        if used.insert(pid.clone()) {
            pids.push(pid);
        }
    }
    drop(used);

    // Members of each cluster, in global order (counting sort by label).
    let mut starts = vec![0u32; n_clusters + 1];
    for &l in &labels {
        starts[l as usize + 1] += 1;
    }
    for i in 0..n_clusters {
        starts[i + 1] += starts[i];
    }
    let mut fill = starts.clone();
    let mut members = vec![0u32; labels.len()];
    for (g, &l) in labels.iter().enumerate() {
        members[fill[l as usize] as usize] = g as u32;
        fill[l as usize] += 1;
    }
    let offsets = party_offsets(&parties);
    let party_of = |g: u32| party_of(&offsets, g);
    let local = |g: u32| (g - offsets[party_of(g)]) as usize;

    // clusters.csv
    let mut clusters_csv = PendingFile::create(job.out, "clusters.csv")?.csv();
    clusters_csv.row(["party", "id", "pid"])?;
    for (g, &l) in labels.iter().enumerate() {
        let p = party_of(g as u32);
        let party = &parties[p];
        clusters_csv.row([
            party.spec.party.as_str(),
            party.ids[local(g as u32)].as_str(),
            pids[l as usize].as_str(),
        ])?;
    }

    // pairs.csv
    let two = parties.len() == 2;
    let mut pairs_csv = PendingFile::create(job.out, "pairs.csv")?.csv();
    if two {
        pairs_csv.row(["id_a", "id_b"])?;
    } else {
        pairs_csv.row(["party_a", "id_a", "party_b", "id_b"])?;
    }
    let mut scores_csv = match &scoring_run {
        Some(_) => {
            let mut f = PendingFile::create(job.out, "pair_scores.csv")?.csv();
            f.row([
                "party_a",
                "id_a",
                "party_b",
                "id_b",
                "weight",
                "probability",
                "levels",
            ])?;
            Some(f)
        }
        None => None,
    };
    let mut links = 0u64;
    let mut multi_party = 0u64;
    let mut largest = 0usize;
    for c in 0..n_clusters {
        let m = &members[starts[c] as usize..starts[c + 1] as usize];
        largest = largest.max(m.len());
        if m.len() < 2 || party_of(m[0]) == party_of(m[m.len() - 1]) {
            continue;
        }
        multi_party += 1;
        for (i, &x) in m.iter().enumerate() {
            for &y in &m[i + 1..] {
                let (px, py) = (party_of(x), party_of(y));
                if px == py {
                    continue;
                }
                let (ix, iy) = (&parties[px].ids[local(x)], &parties[py].ids[local(y)]);
                if let (Some(run), Some(sc)) = (scoring_run.as_mut(), scores_csv.as_mut()) {
                    let (w, p, levels) = run.observe_output_pair(x, y, px, py);
                    sc.row([
                        parties[px].spec.party.as_str(),
                        ix,
                        parties[py].spec.party.as_str(),
                        iy,
                        &format!("{w:.3}"),
                        &format!("{p:.6}"),
                        &levels,
                    ])?;
                }
                if two {
                    pairs_csv.row([ix, iy])?;
                } else {
                    pairs_csv.row([&parties[px].spec.party, ix, &parties[py].spec.party, iy])?;
                }
                links += 1;
            }
        }
    }

    // joined.csv: the researcher's view; only pid and content columns. Token files carry no
    // content, so from token inputs there is none (and an old one is removed).
    let joined = if job.secret.is_some() {
        let mut joined = PendingFile::create(job.out, "joined.csv")?.csv();
        write_joined(
            &mut joined,
            &parties,
            &pids,
            &starts,
            &members,
            &party_of,
            &local,
        )?;
        Some(joined)
    } else {
        match std::fs::remove_file(job.out.join("joined.csv")) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context("cannot remove the previous joined.csv"),
        }
        None
    };
    let t_write = t0.elapsed();

    let mut written = vec![clusters_csv.commit()?, pairs_csv.commit()?];
    if let Some(joined) = joined {
        written.push(joined.commit()?);
    }
    if let Some(f) = scores_csv {
        written.push(f.commit()?);
    }
    for r in rejects_files {
        written.push(r.commit()?);
    }
    let mut summary = summary_json(
        job,
        &parties,
        links,
        n_clusters,
        multi_party,
        largest,
        join_stats,
        clk_stats.as_ref(),
        [
            t_tokenize,
            t_cluster - t_tokenize,
            t_write - t_cluster,
            t0.elapsed(),
        ],
    );
    if let Some(run) = &scoring_run {
        let names: Vec<&str> = parties.iter().map(|p| p.spec.party.as_str()).collect();
        summary["scoring"] = run.summary(job.schema, &names, &labels, n_clusters);
        let mut r = PendingFile::create(job.out, "report.html")?;
        r.writer
            .write_all(crate::report::render(&summary).as_bytes())?;
        r.commit()?;
    }
    let mut f = PendingFile::create(job.out, "summary.json")?;
    serde_json::to_writer_pretty(&mut f.writer, &summary)?;
    f.writer.write_all(b"\n")?;
    f.commit()?;
    Ok(LinkOutcome {
        links,
        clusters: n_clusters,
    })
}

pub(crate) use renketsu_linkage::tokenlink::{party_of, party_offsets as party_offsets_of};

/// The pairs of a truth file (`renketsu eval` format) as global record indices; pairs naming
/// a record that was not tokenized (rejected, or absent) are left out.
fn truth_pairs(path: &Path, parties: &[Party]) -> Result<Vec<(u32, u32)>> {
    let (pairs, multi) = crate::eval::read_pairs(path)?;
    let offsets = party_offsets(parties);
    let index: Vec<HashMap<&str, u32>> = parties
        .iter()
        .zip(&offsets)
        .map(|(p, &o)| {
            p.ids
                .iter()
                .enumerate()
                .map(|(i, id)| (id.as_str(), o + i as u32))
                .collect()
        })
        .collect();
    let party = |name: &str, k: usize| -> Result<usize> {
        if multi {
            parties
                .iter()
                .position(|p| p.spec.party == name)
                .with_context(|| format!("--truth {}: no input is named {name:?}", path.display()))
        } else if parties.len() < 2 {
            bail!("--truth: a two-party truth file needs two inputs")
        } else {
            Ok(k)
        }
    };
    let mut out = Vec::with_capacity(pairs.len());
    for (pa, ia, pb, ib) in &pairs {
        let (x, y) = (party(pa, 0)?, party(pb, 1)?);
        if let (Some(&a), Some(&b)) = (index[x].get(ia.as_str()), index[y].get(ib.as_str())) {
            out.push((a, b));
        }
    }
    Ok(out)
}

fn party_offsets(parties: &[Party]) -> Vec<u32> {
    party_offsets_of(&parties.iter().map(|p| p.ids.len()).collect::<Vec<_>>())
}

/// One accepted (tokenized) record of a holder's CSV, handed to the caller of
/// [`read_holder`].
pub(crate) struct Accepted<'r> {
    /// The record id (trimmed, unique within the input).
    pub id: String,
    /// Normalized fields and the tokens (or preimages) of the record.
    pub tokens: &'r RecordTokens,
    /// Content column values, in `HolderRead::content_columns` order.
    pub content: Vec<String>,
}

/// What reading one holder's CSV found, besides the accepted records.
pub(crate) struct HolderRead {
    /// Name of the encoding the file was read in.
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
    pub stats: PartyStats,
    /// The rejects file, still to be committed.
    pub rejects: CsvFile,
}

/// How to read holders' CSVs: shared by `renketsu link` and `renketsu tokenize`, so that
/// both accept and reject exactly the same rows with the same reason codes (SPEC.md §3.3).
pub(crate) struct ReadOptions<'a> {
    /// The schema.
    pub schema: &'a Schema,
    /// HMAC or preimage mode.
    pub tokenizer: &'a Tokenizer,
    /// The id column.
    pub id_column: &'a str,
    /// Input encoding.
    pub encoding: EncodingArg,
    /// No progress bar or log line.
    pub quiet: bool,
    /// Directory of the rejects file.
    pub rejects_dir: &'a Path,
    /// File name of the rejects file.
    pub rejects_name: String,
    /// Prefix of the log line, e.g. `renketsu link`.
    pub log_prefix: &'static str,
}

/// Reads one holder's CSV: checks every row (SPEC.md §3.3, in order), tokenizes it and hands
/// each accepted record to `accept`; rejected rows go to the rejects file with their reason.
pub(crate) fn read_holder(
    opts: &ReadOptions<'_>,
    spec: &InputSpec,
    accept: &mut dyn FnMut(Accepted<'_>) -> Result<()>,
) -> Result<HolderRead> {
    let schema = opts.schema;
    let tokenizer = opts.tokenizer;
    let id_column = opts.id_column;
    let mut input = CsvInput::open(&spec.path, opts.encoding)?;
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
        bail!(
            "{}: no recipe of the schema can be made from this input: no column {}{}; the header has: {}",
            spec.path.display(),
            described.join(", no column "),
            if digests.is_empty() {
                String::new()
            } else {
                format!(" (or digest columns {})", digests.join(", "))
            },
            input.header.join(", ")
        );
    }
    let recipes_available: Vec<&str> = schema
        .recipes
        .iter()
        .zip(&binding.recipes)
        .filter(|(_, src)| **src != RecipeSource::Unavailable)
        .map(|(r, _)| r.name.as_str())
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
    let mut rejects = PendingFile::create(opts.rejects_dir, &opts.rejects_name)?.csv();
    rejects.row(["row", "id", "reason", "detail"])?;
    let mut stats = PartyStats {
        tokens_by_recipe: vec![0; schema.recipes.len()],
        ..PartyStats::default()
    };
    let mut seen_ids: HashSet<String> = HashSet::new();
    let clk_fields: Vec<usize> = schema
        .clk
        .as_ref()
        .map(|c| c.features.iter().map(|f| f.field).collect())
        .unwrap_or_default();
    let mut rec = csv::ByteRecord::new();
    let mut rt = RecordTokens::default();
    let pb = progress(opts.quiet, input.len, &spec.party);
    let mut row: u64 = 0;
    while input.next_row(&mut rec)? {
        row += 1;
        stats.read += 1;
        if row.is_multiple_of(4096) {
            pb.set_position(input.position());
        }
        let reject = |rejects: &mut CsvFile,
                      stats: &mut PartyStats,
                      id: &str,
                      why: RowReject,
                      detail: &str| {
            *stats.rejects.entry(why).or_default() += 1;
            rejects.row([row.to_string().as_str(), id, why.code(), detail])
        };
        if rec.len() != width {
            if rec.iter().any(|f| f.contains(&b'\n')) {
                // A quoted field that runs over line breaks in a ragged row is almost surely an
                // unterminated quote: the rows it swallowed cannot be recovered or counted.
                bail!(
                    "{}: data row {row} has {} fields (expected {width}) and a quoted field running over \
                     several lines: probably an unterminated quote; the rows after it cannot be read \
                     reliably, so nothing was written. Fix the quoting and run again",
                    spec.path.display(),
                    rec.len()
                );
            }
            let detail = format!("expected {width} fields, found {}", rec.len());
            let id = rec
                .get(id_col)
                .and_then(|b| input.encoding.decode(b))
                .map(|s| s.trim().to_owned())
                .unwrap_or_default();
            reject(&mut rejects, &mut stats, &id, RowReject::RaggedRow, &detail)?;
            continue;
        }
        let Some(id) = input.encoding.decode(&rec[id_col]) else {
            reject(
                &mut rejects,
                &mut stats,
                "",
                RowReject::InvalidEncoding,
                &format!("column {id_column}"),
            )?;
            continue;
        };
        let id = id.trim().to_owned();
        if id.is_empty() {
            reject(&mut rejects, &mut stats, "", RowReject::MissingId, "")?;
            continue;
        }
        if !seen_ids.insert(id.clone()) {
            reject(&mut rejects, &mut stats, &id, RowReject::DuplicateId, "")?;
            continue;
        }
        let mut raw = Vec::with_capacity(binding.columns.len());
        let mut bad_column = None;
        for &c in &binding.columns {
            match input.encoding.decode(&rec[c]) {
                Some(v) => raw.push(v),
                None => {
                    bad_column = Some(input.header[c].as_str());
                    break;
                }
            }
        }
        let mut row_content = Vec::with_capacity(content_cols.len());
        if bad_column.is_none() {
            for (name, &c) in content_columns.iter().zip(&content_cols) {
                match input.encoding.decode(&rec[c]) {
                    Some(v) => row_content.push(v.into_owned()),
                    None => {
                        bad_column = Some(name.as_str());
                        break;
                    }
                }
            }
        }
        if let Some(col) = bad_column {
            reject(
                &mut rejects,
                &mut stats,
                &id,
                RowReject::InvalidEncoding,
                &format!("column {col}"),
            )?;
            continue;
        }
        let refs: Vec<&str> = raw.iter().map(|c| c.as_ref()).collect();
        tokenizer.tokenize(&binding, &refs, &mut rt);
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
            reject(&mut rejects, &mut stats, &id, RowReject::NoToken, &detail)?;
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
            tokens: &rt,
            content: row_content,
        })?;
    }
    pb.finish_and_clear();
    let rejected: u64 = stats.rejects.values().sum();
    debug_assert_eq!(stats.read, stats.tokenized + rejected);
    if !opts.quiet {
        eprintln!(
            "{}: {}: {} rows read, {} tokenized, {} rejected ({})",
            opts.log_prefix,
            spec.party,
            stats.read,
            stats.tokenized,
            rejected,
            input.encoding.name()
        );
    }
    Ok(HolderRead {
        encoding: input.encoding.name(),
        content_columns,
        missing_content,
        recipes_available: recipes_available.into_iter().map(str::to_owned).collect(),
        missing_identifier_columns: missing_columns.into_iter().map(str::to_owned).collect(),
        stats,
        rejects,
    })
}

/// A holder's CLK encoding (SPEC.md §7): the schema's encoder with its salts and hardening,
/// the schema field behind each encoder input, BLIP if configured, and a position cache.
/// One per holder input (the cache is per thread).
pub(crate) struct ClkEncoding {
    encoder: NativeEncoder,
    /// Schema field of each encoder input: one per feature, then the salt fields.
    inputs: Vec<usize>,
    features: usize,
    blip: Option<f64>,
    cache: PositionCache,
    rng: rand::rngs::ThreadRng,
}

impl ClkEncoding {
    /// `None` when the schema has no `[clk]`.
    pub(crate) fn from_schema(
        schema: &Schema,
        secret: &ProjectSecret,
        project: &str,
    ) -> Option<Self> {
        let (encoder, inputs) = NativeEncoder::from_schema(schema, secret, project)?;
        Some(Self::new(schema, encoder, inputs))
    }

    /// The encoding of a holder in custodian mode: `keys` are the field keys the custodian
    /// issued, one per `[clk]` feature in order. `Ok(None)` without `[clk]`.
    pub(crate) fn from_field_keys(
        schema: &Schema,
        keys: Vec<zeroize::Zeroizing<[u8; 32]>>,
    ) -> Result<Option<Self>> {
        let made = NativeEncoder::from_schema_with_field_keys(schema, keys)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(made.map(|(encoder, inputs)| Self::new(schema, encoder, inputs)))
    }

    fn new(schema: &Schema, encoder: NativeEncoder, inputs: Vec<usize>) -> Self {
        let c = schema.clk.as_ref().expect("an encoder comes from [clk]");
        Self {
            cache: encoder.position_cache(),
            encoder,
            inputs,
            features: c.features.len(),
            blip: c.hardening.blip_epsilon,
            rng: rand::rng(),
        }
    }

    /// Filter length in 64-bit words, after hardening.
    pub(crate) fn words(&self) -> usize {
        self.encoder.words()
    }

    /// The CLK of an accepted record (canonical values of the `[clk]` fields), into `buf`.
    pub(crate) fn encode(&mut self, rt: &RecordTokens, buf: &mut Vec<u64>) {
        let values: Vec<Option<&str>> = self
            .inputs
            .iter()
            .map(|&i| matches!(rt.status[i], Some(Ok(()))).then_some(rt.values[i].as_str()))
            .collect();
        debug_assert!(self.features <= values.len());
        self.encoder.encode_cached(&mut self.cache, &values, buf);
        if let Some(epsilon) = self.blip {
            renketsu_linkage::clk::harden::blip(buf, epsilon, &mut self.rng);
        }
    }
}

#[allow(clippy::too_many_arguments, reason = "one internal call site")]
fn read_party(
    job: &LinkJob<'_>,
    tokenizer: &Tokenizer,
    mut clk: Option<ClkEncoding>,
    id_column: &str,
    spec: &InputSpec,
    join: &mut TokenJoin,
    blocks: &mut Vec<(renketsu_linkage::Token, u32)>,
    mut features: Option<(u16, &mut FeaturesBuilder)>,
) -> Result<(Party, CsvFile)> {
    let schema = job.schema;
    let opts = ReadOptions {
        schema,
        tokenizer,
        id_column,
        encoding: job.encoding,
        quiet: job.quiet,
        rejects_dir: job.out,
        rejects_name: format!("rejects-{}.csv", spec.party),
        log_prefix: "renketsu link",
    };
    let mut ids: Vec<String> = Vec::new();
    let mut content = Vec::new();
    let mut filters = clk.as_ref().map(|e| Filters::new(e.words()));
    let mut clk_buf: Vec<u64> = Vec::new();
    let read = read_holder(&opts, spec, &mut |acc: Accepted<'_>| {
        if join.records() >= u32::MAX as usize {
            bail!("more than 2^32 - 1 records in one job");
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
        ids.push(acc.id);
        content.extend(acc.content);
        Ok(())
    })?;
    Ok((
        Party {
            spec: spec.clone(),
            encoding: read.encoding.to_owned(),
            ids,
            content_columns: read.content_columns,
            missing_content: read.missing_content,
            recipes_available: read.recipes_available,
            filters,
            missing_identifier_columns: read.missing_identifier_columns,
            content,
            stats: read.stats,
        },
        read.rejects,
    ))
}

#[allow(clippy::too_many_arguments, reason = "one internal call site")]
fn write_joined(
    out: &mut CsvFile,
    parties: &[Party],
    pids: &[String],
    starts: &[u32],
    members: &[u32],
    party_of: &dyn Fn(u32) -> usize,
    local: &dyn Fn(u32) -> usize,
) -> Result<()> {
    let mut header = vec!["pid".to_owned()];
    for p in parties {
        for c in &p.content_columns {
            header.push(format!("{}.{c}", p.spec.party));
        }
    }
    out.row(&header)?;
    // Rows ordered by pseudonym, so that row order reveals nothing about input order.
    let mut order: Vec<usize> = (0..pids.len()).collect();
    order.sort_unstable_by(|&a, &b| pids[a].cmp(&pids[b]));
    let mut per_party: Vec<Vec<Option<usize>>> = vec![Vec::new(); parties.len()];
    let mut choice = vec![0usize; parties.len()];
    let mut line: Vec<&str> = Vec::with_capacity(header.len());
    for c in order {
        for v in per_party.iter_mut() {
            v.clear();
        }
        for &g in &members[starts[c] as usize..starts[c + 1] as usize] {
            per_party[party_of(g)].push(Some(local(g)));
        }
        for v in per_party.iter_mut() {
            if v.is_empty() {
                v.push(None);
            }
        }
        // Full outer join within the cluster: every combination of one record per party.
        choice.iter_mut().for_each(|x| *x = 0);
        loop {
            line.clear();
            line.push(&pids[c]);
            for (p, party) in parties.iter().enumerate() {
                let w = party.content_columns.len();
                match per_party[p][choice[p]] {
                    Some(i) => {
                        line.extend(party.content[i * w..(i + 1) * w].iter().map(String::as_str))
                    }
                    None => line.extend(std::iter::repeat_n("", w)),
                }
            }
            out.row(&line)?;
            let mut k = 0;
            loop {
                if k == parties.len() {
                    break;
                }
                choice[k] += 1;
                if choice[k] < per_party[k].len() {
                    break;
                }
                choice[k] = 0;
                k += 1;
            }
            if k == parties.len() {
                break;
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments, reason = "one internal call site")]
fn summary_json(
    job: &LinkJob<'_>,
    parties: &[Party],
    links: u64,
    clusters: usize,
    multi_party: u64,
    largest: usize,
    join: JoinStats,
    clk: Option<&ClkStats>,
    t: [std::time::Duration; 4],
) -> serde_json::Value {
    let ms = |d: std::time::Duration| (d.as_secs_f64() * 1e3 * 10.0).round() / 10.0;
    let (uy, um, uu) = renketsu_linkage::normalize::unicode_version();
    let today = job.ctx.today;
    json!({
        "renketsu_version": env!("CARGO_PKG_VERSION"),
        "project": job.project,
        "schema": { "name": job.schema.name, "version": job.schema.version, "path": job.schema_path },
        "inputs": if job.secret.is_some() { "csv" } else { "tokens" },
        "token_mode": job.token_mode,
        "joined_csv": job.secret.is_some(),
        "today": format!("{:04}-{:02}-{:02}", today / 10_000, today / 100 % 100, today % 100),
        "normalization": { "unicode_version": format!("{uy}.{um}.{uu}") },
        "parties": parties.iter().map(|p| {
            let rejected: u64 = p.stats.rejects.values().sum();
            json!({
                "party": p.spec.party,
                "input": p.spec.path,
                "encoding": p.encoding,
                "read": p.stats.read,
                "tokenized": p.stats.tokenized,
                "rejected": rejected,
                "rejects_by_reason": p.stats.rejects.iter().map(|(k, v)| (k.code().to_owned(), json!(v))).collect::<serde_json::Map<_, _>>(),
                "field_rejects": p.stats.field_rejects,
                "tokens_by_recipe": job.schema.recipes.iter().zip(&p.stats.tokens_by_recipe).map(|(r, n)| (r.name.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
                "recipes_available": p.recipes_available,
                "missing_identifier_columns": p.missing_identifier_columns,
                "content_columns": p.content_columns,
                "missing_content_columns": p.missing_content,
            })
        }).collect::<Vec<_>>(),
        "links": links,
        "clusters": { "total": clusters, "multi_party": multi_party, "largest": largest },
        "distinct_tokens": join.distinct_tokens,
        "merges": { "direct": join.direct_merges, "guarded": join.guarded_merges, "vetoed_by_guards": join.vetoed_merges },
        "clk": clk.map(|c| json!({
            "bits": job.schema.clk.as_ref().map(|s| s.filter_bits()),
            "threshold": job.schema.clk.as_ref().map(|s| s.threshold),
            "blocking": job.schema.recipes.iter().any(|r| r.link == LinkMode::Block),
            "lsh": job.schema.clk.as_ref().and_then(|s| s.lsh).map(|l| lsh_json(l, &c.lsh, parties)),
            "pairs_compared": c.compared,
            "reduction_ratio": if c.possible == 0 { 0.0 } else { 1.0 - c.compared as f64 / c.possible as f64 },
            "largest_block": c.largest_block,
            "pairs_completeness": (job.truth.is_some()).then(|| json!({
                "true_pairs": c.true_pairs,
                "candidates": c.true_candidates,
                "ratio": if c.true_pairs == 0 { 0.0 } else { c.true_candidates as f64 / c.true_pairs as f64 },
            })),
            "pairs_above_threshold": c.above_threshold,
            "links": c.links,
        })),
        "timings_ms": { "read_tokenize": ms(t[0]), "join_cluster": ms(t[1]), "write": ms(t[2]), "total": ms(t[3]) },
    })
}

/// `clk.lsh` of summary.json (SPEC.md §7.4): the parameters used — `bands` and
/// `bits_per_band` at the top when every pair of holders used the same — what the schema set
/// (`configured`, `null` = chosen from the data), and per pair of holders the figures they
/// were chosen by.
fn lsh_json(
    configured: renketsu_linkage::schema::ClkLsh,
    used: &[(usize, usize, LshChoice)],
    parties: &[Party],
) -> serde_json::Value {
    let same = |f: fn(&LshChoice) -> u32| match used.first() {
        Some((_, _, c)) if used.iter().all(|(_, _, d)| f(d) == f(c)) => Some(f(c)),
        Some(_) => None,
        None => None,
    };
    json!({
        "bands": same(|c| c.params.bands).or(configured.bands),
        "bits_per_band": same(|c| c.params.bits_per_band).or(configured.bits_per_band),
        "configured": { "bands": configured.bands, "bits_per_band": configured.bits_per_band },
        "targets": {
            "candidate_probability_at_threshold": lsh::TARGET_AT_THRESHOLD,
            "random_collisions_per_record_per_band": lsh::RANDOM_COLLISIONS_PER_RECORD,
        },
        "holder_pairs": used.iter().map(|(i, j, c)| json!({
            "holders": [parties[*i].spec.party, parties[*j].spec.party],
            "bands": c.params.bands,
            "bits_per_band": c.params.bits_per_band,
            "chosen": { "bands": c.bands_chosen, "bits_per_band": c.bits_chosen },
            "records": c.records,
            "mean_popcount": c.mean_popcount,
            "sampled_pairs": c.sampled_pairs,
            "random_band_probability": c.random_band_probability,
            "random_collisions_per_band": c.random_collisions_per_band,
            "distance_at_threshold": c.distance_at_threshold,
            "band_probability_at_threshold": c.band_probability_at_threshold,
            "candidate_probability_at_threshold": c.candidate_probability_at_threshold,
        })).collect::<Vec<_>>(),
    })
}

/// One line per pair of holders: the Hamming-LSH parameters used and why (not with `quiet`),
/// and a warning (always) when pairs at the threshold are below the target probability.
fn log_lsh(log_prefix: &str, used: &[(usize, usize, LshChoice)], parties: &[Party], quiet: bool) {
    let how = |chosen| if chosen { "chosen" } else { "schema" };
    for (i, j, c) in used {
        if c.candidate_probability_at_threshold < lsh::TARGET_AT_THRESHOLD {
            eprintln!(
                "{log_prefix}: warning: Hamming-LSH {} × {}: a pair at the Dice threshold becomes a candidate with probability {:.4} only (target {}): {}",
                parties[*i].spec.party,
                parties[*j].spec.party,
                c.candidate_probability_at_threshold,
                lsh::TARGET_AT_THRESHOLD,
                if c.bands_chosen {
                    "the threshold is low for Hamming-LSH on these filters even with the most bands; raise it or block with recipes (SPEC.md §7.4)"
                } else {
                    "more [clk.lsh] bands (or leaving them out) would find more (SPEC.md §7.4)"
                },
            );
        }
        if quiet {
            continue;
        }
        eprintln!(
            "{log_prefix}: Hamming-LSH {} × {}: {} bands ({}) × {} bits per band ({}); mean popcount {:.1} / {:.1}, \
             expected random collisions per band {:.3e} ({} sampled pairs), P(candidate | Dice at threshold) {:.6}",
            parties[*i].spec.party,
            parties[*j].spec.party,
            c.params.bands,
            how(c.bands_chosen),
            c.params.bits_per_band,
            how(c.bits_chosen),
            c.mean_popcount[0],
            c.mean_popcount[1],
            c.random_collisions_per_band,
            c.sampled_pairs,
            c.candidate_probability_at_threshold,
        );
    }
}

/// Token inputs (SPEC.md §5.5): checks that the files can be linked together under
/// `schema_path` and returns their common project and token mode (`hmac` or
/// `oprf-ristretto255/<oprf_mode>`). Refuses mixed projects, schema digests, token modes,
/// recipe epochs or keys.
pub fn check_token_headers(
    schema_path: &Path,
    files: &[(InputSpec, tokens_file::Header)],
    project: Option<&str>,
) -> Result<(String, String)> {
    let digest = tokens_file::schema_digest(schema_path)?;
    let names: Vec<String> = files
        .iter()
        .map(|(spec, _)| spec.path.display().to_string())
        .collect();
    let headers: Vec<(&str, &tokens_file::Header)> = names
        .iter()
        .zip(files)
        .map(|(n, (_, h))| (n.as_str(), h))
        .collect();
    renketsu_linkage::tokenlink::check_headers(&digest, &headers, project)
        .with_context(|| format!("schema {}", schema_path.display()))?;
    let (_, first) = files.first().context("no token files")?;
    Ok((first.project.clone(), first.mode_name()))
}

/// Reads one holder's token file into the join (SPEC.md §5.5).
fn read_token_party(
    job: &LinkJob<'_>,
    spec: &InputSpec,
    join: &mut TokenJoin,
    blocks: &mut Vec<(renketsu_linkage::Token, u32)>,
) -> Result<Party> {
    let schema = job.schema;
    let mut reader = tokens_file::open(&spec.path)?;
    let TokenParty {
        header,
        ids,
        filters,
        counts,
    } = renketsu_linkage::tokenlink::read_token_party(
        schema,
        &mut reader,
        &spec.path.display().to_string(),
        join,
        blocks,
    )?;
    let mut stats = PartyStats {
        read: counts.read,
        tokenized: counts.tokenized,
        tokens_by_recipe: schema
            .recipes
            .iter()
            .map(|r| counts.tokens_by_recipe.get(&r.name).copied().unwrap_or(0))
            .collect(),
        ..PartyStats::default()
    };
    for (code, n) in &counts.rejects_by_reason {
        let why = RowReject::from_code(code)
            .with_context(|| format!("{}: unknown reject reason {code:?}", spec.path.display()))?;
        stats.rejects.insert(why, *n);
    }
    for (field, m) in &counts.field_rejects {
        let m = m
            .iter()
            .filter_map(|(c, n)| {
                let code = renketsu_linkage::FieldReject::ALL
                    .into_iter()
                    .find(|f| f.code() == c)?;
                Some((code.code(), *n))
            })
            .collect();
        stats.field_rejects.insert(field.clone(), m);
    }
    if !job.quiet {
        eprintln!(
            "renketsu link: {}: token file of {} records ({} read, {} rejected by the holder; {})",
            spec.party,
            ids.len(),
            counts.read,
            counts.rejected,
            header.mode
        );
    }
    Ok(Party {
        spec: spec.clone(),
        encoding: counts.encoding.clone(),
        ids: ids.iter().map(str::to_owned).collect(),
        content_columns: Vec::new(),
        missing_content: Vec::new(),
        recipes_available: counts
            .tokens_by_recipe
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(r, _)| r.clone())
            .collect(),
        missing_identifier_columns: Vec::new(),
        filters,
        content: Vec::new(),
        stats,
    })
}
