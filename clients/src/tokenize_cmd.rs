//! `renketsu tokenize`: one data holder turns its CSV into a token file (SPEC.md §5.5) for
//! the linkage unit, in one of two modes:
//!
//! - **HMAC (embedded)**: `--project P [--key-store DIR]`: HMAC-SHA256 tokens under the
//!   project master secret of the local key store (SPEC.md §4.2, §6), the same tokens
//!   `renketsu link` makes.
//! - **Custodian (OPRF)**: `--custodian https://HOST:PORT --ca --cert --key --project P`: each
//!   recipe's canonical preimage (SPEC.md §4.1) is blinded, evaluated by the key custodian
//!   with the active epoch's key (RFC 9497 ristretto255-SHA512, VOPRF by default, the batch
//!   proof verified against the published key before any output is used) and unblinded to
//!   the 32-byte element `k·H(preimage)`. The holder never holds the key.
//!
//! Rows are checked and rejected exactly as by `renketsu link` (shared code): every input
//! row is either a record of the token file or a row of the rejects file with its reason.
//! Both files appear atomically and only if the whole run succeeds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use renketsu_client::custodian::{
    BatchEvaluator, ConnectConfig, CustodianClient, DEFAULT_BATCH_SIZE, EpochKey, EvalJob,
    EvalMode, RetryPolicy, custodian_recipe_name, evaluate_jobs,
};
use renketsu_keys::LocalKeyStore;
use renketsu_keys::oprf::PublicKey;
use renketsu_keys::wrap::HolderKeyPair;
use renketsu_linkage::{NormalizeContext, Schema, Tokenizer};

use crate::input::EncodingArg;
use renketsu_linkage::clk::holder::HolderEncoding;
use renketsu_linkage::engine::Observer as _;
use renketsu_linkage::ingest::{self, Accepted, HolderRead, ReadOptions};
use renketsu_linkage::score::{ComparisonEncoder, EncodedFilters};
use renketsu_linkage::token_file::DiceRef;

use crate::input::open_csv;
use crate::link::{InputSpec, RejectsFile};
use crate::progress::CliObserver;
use crate::tokens_file::{self, Counts, Header, RecipeRef, SchemaRef};

/// Arguments of `renketsu tokenize`.
#[derive(clap::Args)]
pub struct TokenizeArgs {
    /// Linkage schema (TOML); every holder and the linkage unit use the same file (its SHA-256
    /// is in the token file's header).
    #[arg(long)]
    schema: PathBuf,
    /// The holder's CSV.
    #[arg(long)]
    input: PathBuf,
    /// This holder's party name (1-64 of A-Z a-z 0-9 _ - .; in custodian mode the name in its
    /// certificate).
    #[arg(long)]
    party: String,
    /// The token file to write (replaced atomically when the run succeeds).
    #[arg(long)]
    out: PathBuf,
    /// Rejected rows (row,id,reason,detail). Default: <out>.rejects.csv.
    #[arg(long)]
    rejects: Option<PathBuf>,
    /// Project the tokens are made for.
    #[arg(long, env = "RENKETSU_PROJECT")]
    project: String,
    /// HMAC mode: directory of the local key store (default as for `renketsu keys`; not used
    /// with --custodian).
    #[arg(long, env = "RENKETSU_KEY_STORE")]
    key_store: Option<PathBuf>,
    /// Custodian mode: the key custodian's URL, https://HOST:PORT.
    #[arg(long, requires_all = ["ca", "cert", "key"])]
    custodian: Option<String>,
    /// Custodian mode: CA certificate (PEM) of the custodian's PKI.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Custodian mode: this holder's client certificate (PEM).
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Custodian mode: this holder's private key (PEM).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Custodian mode: name to verify in the custodian's certificate (default: the URL's host).
    #[arg(long)]
    tls_domain: Option<String>,
    /// Custodian mode: RFC 9497 variant, fixed per project. voprf checks one proof per batch
    /// against the published key; oprf trusts the custodian.
    #[arg(long, value_enum, default_value_t = OprfModeArg::Voprf)]
    oprf_mode: OprfModeArg,
    /// Custodian mode: verify against this key instead of asking the custodian, as
    /// RECIPE=EPOCH:HEX (recipe as `name/vN`, 64 hex digits), e.g. from a key list the project
    /// published out of band. Repeat per recipe.
    #[arg(long = "pin-key", value_name = "RECIPE=EPOCH:HEX")]
    pin_keys: Vec<String>,
    /// Custodian mode: blinded elements per EvaluateBatch call.
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE)]
    batch_size: usize,
    /// Custodian mode: attempts per call when the custodian is unavailable or slow.
    #[arg(long, default_value_t = RetryPolicy::default().max_attempts)]
    max_attempts: u32,
    /// Custodian mode: deadline per call, in seconds.
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
    /// Column holding each record's id (default: the schema's [input] id_column, else "id").
    #[arg(long)]
    id_column: Option<String>,
    /// Input text encoding.
    #[arg(long, value_enum, default_value_t = EncodingArg::Auto)]
    encoding: EncodingArg,
    /// "Today" as YYYY-MM-DD for refusing future birth dates (default: the current UTC date).
    #[arg(long)]
    today: Option<String>,
    /// No progress bar or summary line.
    #[arg(long, short)]
    quiet: bool,
}

/// `--oprf-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum OprfModeArg {
    Oprf,
    Voprf,
}

impl From<OprfModeArg> for EvalMode {
    fn from(m: OprfModeArg) -> Self {
        match m {
            OprfModeArg::Oprf => EvalMode::Oprf,
            OprfModeArg::Voprf => EvalMode::Voprf,
        }
    }
}

/// Everything the tokenize run needs, resolved.
struct Job<'a> {
    schema: &'a Schema,
    spec: InputSpec,
    out: &'a Path,
    rejects: PathBuf,
    id_column: String,
    encoding: EncodingArg,
    quiet: bool,
    header: Header,
}

fn today_string(ctx: NormalizeContext) -> String {
    let t = ctx.today;
    format!("{:04}-{:02}-{:02}", t / 10_000, t / 100 % 100, t % 100)
}

/// Custodian mode: the header's party is the certificate's name (SPEC.md §5.5), so `--party`
/// must be the Common Name of `cert` (the custodian counts evaluations against that name).
///
/// # Errors
/// The certificate cannot be read or parsed, or names another party.
fn check_party_is_certificate(party: &str, cert: &Path) -> Result<()> {
    let pem = std::fs::read(cert).with_context(|| format!("cannot read {}", cert.display()))?;
    let id = renketsu_custodian::pki::identity_from_pem(&pem)
        .with_context(|| format!("{} is not a renketsu client certificate", cert.display()))?;
    if id.party != party {
        bail!(
            "--party {party} but the certificate {} is {}'s: in custodian mode the token file's party is the certificate's name",
            cert.display(),
            id.party
        );
    }
    Ok(())
}

/// Runs `renketsu tokenize`.
pub fn run(args: &TokenizeArgs) -> Result<()> {
    let t0 = Instant::now();
    let schema = crate::load_schema(&args.schema)?;
    let spec = InputSpec::parse(&format!("{}={}", args.party, args.input.display()))?;
    let ctx = crate::today_or_now(args.today.as_deref())?;
    if args.out.is_dir() {
        bail!(
            "--out {} is a directory; give a file name",
            args.out.display()
        );
    }
    let rejects = args.rejects.clone().unwrap_or_else(|| {
        let mut s = args.out.clone().into_os_string();
        s.push(".rejects.csv");
        PathBuf::from(s)
    });
    let dice = DiceRef::of_schema(&schema);
    let header = Header {
        format: tokens_file::FORMAT.to_owned(),
        version: renketsu_linkage::token_file::version_for(&dice),
        project: args.project.clone(),
        party: spec.party.clone(),
        schema: SchemaRef {
            name: schema.name.clone(),
            version: schema.version,
            digest: tokens_file::schema_digest(&args.schema)?,
        },
        mode: tokens_file::MODE_HMAC.to_owned(),
        oprf_mode: None,
        recipes: RecipeRef::hmac_refs(&schema),
        clk_bits: schema.clk.as_ref().map(|c| c.filter_bits()),
        today: today_string(ctx),
        created_by: format!("renketsu {}", env!("CARGO_PKG_VERSION")),
        dice,
    };
    let job = Job {
        schema: &schema,
        spec,
        out: &args.out,
        rejects,
        id_column: args
            .id_column
            .clone()
            .unwrap_or_else(|| schema.id_column.clone()),
        encoding: args.encoding,
        quiet: args.quiet,
        header,
    };
    let summary = match &args.custodian {
        None => hmac_mode(args, &job, ctx)?,
        Some(url) => {
            check_party_is_certificate(
                &job.spec.party,
                args.cert
                    .as_deref()
                    .context("--cert is required with --custodian")?,
            )?;
            let mut cfg = ConnectConfig::new(
                url.clone(),
                args.ca
                    .as_deref()
                    .context("--ca is required with --custodian")?,
                args.cert
                    .as_deref()
                    .context("--cert is required with --custodian")?,
                args.key
                    .as_deref()
                    .context("--key is required with --custodian")?,
            );
            cfg.tls_domain = args.tls_domain.clone();
            cfg.timeout = Duration::from_secs(args.timeout_secs.max(1));
            cfg.retry.max_attempts = args.max_attempts.max(1);
            // Worker threads carry the gRPC transfers while this thread blinds and verifies.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let client = {
                let _in_runtime = rt.enter();
                CustodianClient::connect(&cfg)?
            };
            let pins = parse_pins(&args.pin_keys)?;
            let mut s = custodian_mode(
                &job,
                ctx,
                &client,
                &rt,
                args.oprf_mode.into(),
                &pins,
                args.batch_size,
            )?;
            s.retries = client.retries();
            s
        }
    };
    if !args.quiet {
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "renketsu tokenize: {}: {} read, {} tokenized, {} rejected; {} tokens ({}){}; wrote {} and {} in {secs:.2} s ({:.0} records/s)",
            job.spec.party,
            summary.counts.read,
            summary.counts.tokenized,
            summary.counts.rejected,
            summary.tokens,
            summary.mode,
            if summary.batches > 0 {
                format!(", {} batches, {} retries", summary.batches, summary.retries)
            } else {
                String::new()
            },
            job.out.display(),
            job.rejects.display(),
            summary.counts.read as f64 / secs.max(1e-9),
        );
    }
    Ok(())
}

/// What a run did, for the final line.
struct RunSummary {
    counts: Counts,
    tokens: u64,
    mode: String,
    batches: u64,
    retries: u64,
}

/// Reads the holder's CSV with the core's ingest stage (the same row checks and reject
/// codes as `renketsu link`), handing each accepted record to `accept`; returns what was read
/// and the rejects file, still to be committed.
fn read_input(
    job: &Job<'_>,
    tokenizer: &Tokenizer,
    accept: &mut dyn FnMut(Accepted<'_>) -> Result<()>,
) -> Result<(HolderRead, RejectsFile)> {
    let rejects_dir = match job.rejects.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let rejects_name = job
        .rejects
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("--rejects {}: not a file name", job.rejects.display()))?
        .to_owned();
    if job.schema.content.contains(&job.id_column) {
        bail!(
            "the id column {:?} is also a content column of the schema",
            job.id_column
        );
    }
    let csv = open_csv(&job.spec.path, job.encoding)?;
    let mut rejects = RejectsFile::create(rejects_dir, &rejects_name)?;
    let mut observer = CliObserver::new("renketsu tokenize", job.quiet);
    observer.holder_started(&job.spec.party, csv.len);
    let read = ingest::read_holder(
        &ReadOptions {
            schema: job.schema,
            tokenizer,
            id_column: &job.id_column,
        },
        csv,
        &mut rejects,
        &mut |bytes| observer.holder_progress(bytes),
        accept,
    )?;
    observer.holder_finished();
    observer.log(&read.account(&job.spec.party));
    Ok((read, rejects))
}

fn counts(schema: &Schema, read: &HolderRead, records: u64) -> Counts {
    let rejected: u64 = read.stats.rejects.values().sum();
    Counts {
        records,
        read: read.stats.read,
        tokenized: read.stats.tokenized,
        rejected,
        rejects_by_reason: read
            .stats
            .rejects
            .iter()
            .map(|(k, v)| (k.code().to_owned(), *v))
            .collect(),
        field_rejects: read
            .stats
            .field_rejects
            .iter()
            .map(|(f, m)| {
                let m = m.iter().map(|(c, n)| ((*c).to_owned(), *n)).collect();
                (f.clone(), m)
            })
            .collect(),
        tokens_by_recipe: schema
            .recipes
            .iter()
            .zip(&read.stats.tokens_by_recipe)
            .map(|(r, n)| (r.name.clone(), *n))
            .collect(),
        encoding: read.encoding.to_owned(),
    }
}

fn hmac_mode(args: &TokenizeArgs, job: &Job<'_>, ctx: NormalizeContext) -> Result<RunSummary> {
    let store = args
        .key_store
        .clone()
        .unwrap_or_else(crate::default_key_store);
    let env = crate::kek_env();
    let ks = LocalKeyStore::open(&store, env.as_deref())?;
    let secret = renketsu_linkage::ProjectSecret::from_bytes(*ks.project_secret(&args.project)?);
    let tokenizer = Tokenizer::new(job.schema, &secret, &args.project, ctx);
    let mut clk =
        HolderEncoding::from_schema(job.schema, &secret, &args.project, Box::new(rand::rng()));
    let mut compare = ComparisonEncoder::new(job.schema, &secret, &args.project);
    let mut writer = tokens_file::Writer::create(job.out, job.header.clone())?;
    let mut clk_buf = Vec::new();
    let mut tokens = 0u64;
    let (read, rejects) = read_input(job, &tokenizer, &mut |acc: Accepted<'_>| {
        let filter = match clk.as_mut() {
            Some(enc) => {
                enc.encode(acc.tokens, &mut clk_buf);
                Some(clk_buf.as_slice())
            }
            None => None,
        };
        tokens += acc.tokens.tokens.len() as u64;
        let dice = compare.encode(acc.tokens);
        writer.record(
            &acc.id,
            acc.tokens.tokens.iter().map(|(r, t)| (*r, t)),
            filter,
            &dice,
        )
    })?;
    let c = counts(job.schema, &read, read.stats.tokenized);
    rejects.commit()?;
    writer.finish(c.clone())?;
    Ok(RunSummary {
        counts: c,
        tokens,
        mode: "HMAC-SHA256".to_owned(),
        batches: 0,
        retries: 0,
    })
}

/// `RECIPE=EPOCH:HEX` → pinned keys.
fn parse_pins(pins: &[String]) -> Result<BTreeMap<String, EpochKey>> {
    let mut out = BTreeMap::new();
    for p in pins {
        let parse = || -> Option<(String, EpochKey)> {
            let (recipe, rest) = p.split_once('=')?;
            let (epoch, hex_key) = rest.split_once(':')?;
            let epoch: u64 = epoch.parse().ok().filter(|e| *e >= 1)?;
            let bytes = hex::decode(hex_key).ok()?;
            let public_key = PublicKey::from_bytes(&bytes).ok()?;
            Some((recipe.to_owned(), EpochKey { epoch, public_key }))
        };
        let (recipe, key) = parse().with_context(|| {
            format!(
                "--pin-key {p:?}: expected RECIPE=EPOCH:HEX, e.g. kana_name_dob_sex/v2=1:<64 hex digits of a ristretto255 element>"
            )
        })?;
        out.insert(recipe, key);
    }
    Ok(out)
}

/// A record waiting for its OPRF tokens.
struct PendingRecord {
    id: String,
    /// `(recipe, index into the chunk's per-recipe preimage list)`.
    slots: Vec<(usize, usize)>,
    clk: Option<Vec<u64>>,
    /// Per-comparison filters (version 2).
    dice: EncodedFilters,
}

/// Records accumulated until one batch's worth, then evaluated recipe by recipe.
struct Chunk {
    records: Vec<PendingRecord>,
    /// Per recipe: the preimages of the chunk, in record order.
    preimages: Vec<Vec<Vec<u8>>>,
}

/// Custodian (OPRF) mode over any [`BatchEvaluator`]: the gRPC client in production, an
/// in-process evaluator in tests.
fn custodian_mode<E: BatchEvaluator>(
    job: &Job<'_>,
    ctx: NormalizeContext,
    evaluator: &E,
    rt: &tokio::runtime::Runtime,
    mode: EvalMode,
    pins: &BTreeMap<String, EpochKey>,
    batch_size: usize,
) -> Result<RunSummary> {
    let schema = job.schema;
    let project = &job.header.project;
    // CLK keys: issued by the custodian per (project, field), wrapped to a fresh X25519 key
    // of this run (HPKE), unwrapped here and kept in memory only.
    let mut clk = match &schema.clk {
        None => None,
        Some(c) => {
            let holder = HolderKeyPair::generate();
            let mut keys = Vec::with_capacity(c.features.len());
            for f in &c.features {
                let field = &schema.fields[f.field].name;
                let key = rt
                    .block_on(evaluator.clk_key(project, field, &holder))
                    .with_context(|| format!("cannot get the CLK key of field {field}"))?;
                keys.push(key);
            }
            HolderEncoding::from_field_keys(schema, keys, Box::new(rand::rng()))
                .map_err(|e| anyhow::anyhow!("{e}"))?
        }
    };
    // Per-comparison CLKs of a scored schema: the same custodian field keys (SPEC.md §5.5,
    // version 2), fetched once per distinct field.
    let compare_fields = ComparisonEncoder::key_fields(schema);
    let mut compare_keys = BTreeMap::new();
    if !compare_fields.is_empty() {
        let holder = HolderKeyPair::generate();
        for field in &compare_fields {
            let key = rt
                .block_on(evaluator.clk_key(project, field, &holder))
                .with_context(|| {
                    format!(
                        "cannot get the CLK key of field {field} (a Dice comparison encodes it)"
                    )
                })?;
            compare_keys.insert(field.clone(), key);
        }
    }
    let mut compare = ComparisonEncoder::with_field_keys(schema, &|f| compare_keys.get(f).cloned())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    drop(compare_keys);
    let mut clk_buf = Vec::new();
    let batch_size = batch_size.clamp(1, 65_536);
    // The key of each recipe's active epoch, fetched (or pinned) before anything is sent.
    let names: Vec<String> = schema
        .recipes
        .iter()
        .map(|r| custodian_recipe_name(&r.name, r.version))
        .collect();
    let mut keys = Vec::with_capacity(names.len());
    for name in &names {
        let key = match pins.get(name) {
            Some(k) => *k,
            None => rt
                .block_on(evaluator.active_key(project, name))
                .with_context(|| format!("cannot get the public key of recipe {name}"))?,
        };
        keys.push(key);
    }
    if let Some(unknown) = pins.keys().find(|p| !names.contains(p)) {
        bail!(
            "--pin-key names recipe {unknown:?}, which the schema does not have; its recipes: {}",
            names.join(", ")
        );
    }
    let mut header = job.header.clone();
    header.mode = tokens_file::MODE_OPRF.to_owned();
    header.oprf_mode = Some(mode.name().to_owned());
    for (r, k) in header.recipes.iter_mut().zip(&keys) {
        r.epoch = Some(k.epoch);
        r.public_key = Some(hex::encode(k.public_key.to_bytes()));
    }
    let tokenizer = Tokenizer::preimage_mode(schema, ctx);
    let mut writer = tokens_file::Writer::create(job.out, header)?;
    let n_recipes = schema.recipes.len();
    let mut chunk = Chunk {
        records: Vec::with_capacity(batch_size),
        preimages: vec![Vec::new(); n_recipes],
    };
    let mut tokens = 0u64;
    let mut batches = 0u64;
    let mut flush = |chunk: &mut Chunk, writer: &mut tokens_file::Writer| -> Result<()> {
        // Every recipe's batches of this chunk, pipelined (see `evaluate_jobs`).
        let jobs: Vec<EvalJob<'_, Vec<u8>>> = chunk
            .preimages
            .iter()
            .enumerate()
            .filter(|(_, pre)| !pre.is_empty())
            .map(|(r, pre)| EvalJob {
                recipe: &names[r],
                key: keys[r],
                inputs: pre,
            })
            .collect();
        batches += jobs
            .iter()
            .map(|j| j.inputs.len().div_ceil(batch_size) as u64)
            .sum::<u64>();
        let evaluated = rt
            .block_on(evaluate_jobs(evaluator, project, mode, &jobs, batch_size))
            .context("evaluation failed; nothing was written")?;
        let mut evaluated = evaluated.into_iter();
        let mut out: Vec<Vec<[u8; 32]>> = Vec::with_capacity(n_recipes);
        for pre in &mut chunk.preimages {
            if pre.is_empty() {
                out.push(Vec::new());
            } else {
                let elements = evaluated.next().expect("one result per job");
                tokens += elements.len() as u64;
                out.push(elements);
                pre.clear();
            }
        }
        for rec in chunk.records.drain(..) {
            writer.record(
                &rec.id,
                rec.slots.iter().map(|&(r, i)| (r, &out[r][i])),
                rec.clk.as_deref(),
                &rec.dice,
            )?;
        }
        Ok(())
    };
    let (read, rejects) = read_input(job, &tokenizer, &mut |acc: Accepted<'_>| {
        let slots = acc
            .tokens
            .preimages()
            .map(|(r, p)| {
                chunk.preimages[r].push(p.to_vec());
                (r, chunk.preimages[r].len() - 1)
            })
            .collect();
        let filter = clk.as_mut().map(|enc| {
            enc.encode(acc.tokens, &mut clk_buf);
            clk_buf.clone()
        });
        chunk.records.push(PendingRecord {
            id: acc.id,
            slots,
            clk: filter,
            dice: compare.encode(acc.tokens),
        });
        if chunk.preimages.iter().any(|p| p.len() >= batch_size) {
            flush(&mut chunk, &mut writer)?;
        }
        Ok(())
    })?;
    flush(&mut chunk, &mut writer)?;
    let c = counts(schema, &read, read.stats.tokenized);
    rejects.commit()?;
    writer.finish(c.clone())?;
    Ok(RunSummary {
        counts: c,
        tokens,
        mode: format!("{} ristretto255-SHA512", mode.name().to_uppercase()),
        batches,
        retries: 0,
    })
}

#[cfg(test)]
mod tests {
    use renketsu_client::custodian::InProcessEvaluator;
    use renketsu_keys::oprf::{Mode, OprfServer, SecretKey, VoprfServer};
    use renketsu_linkage::clk::native::{NativeEncoder, NativeFeature};

    use super::*;

    const SCHEMA: &str = r#"
schema_format = 1
name = "t"
version = 1
[fields.name]
column = "name"
normalizer = "text"
[fields.dob]
column = "dob"
normalizer = "date"
[[recipes]]
name = "name_dob"
version = 1
fields = ["name", "dob"]
[[recipes]]
name = "name_only"
version = 3
fields = ["name"]
"#;

    fn key(recipe: usize) -> SecretKey {
        SecretKey::derive(Mode::Voprf, &[recipe as u8 + 1; 32], b"tokenize test").unwrap()
    }

    fn setup(dir: &Path, rows: usize) -> (PathBuf, PathBuf) {
        let schema = dir.join("s.toml");
        std::fs::write(&schema, SCHEMA).unwrap();
        let input = dir.join("in.csv");
        let mut csv = String::from("id,name,dob\n");
        for i in 0..rows {
            csv.push_str(&format!("{i},Name {i},1970-01-{:02}\n", i % 28 + 1));
        }
        csv.push_str(",no id,1970-01-01\n");
        csv.push_str("dup,x,1970-01-01\ndup,x,1970-01-01\n");
        csv.push_str("bad,,not a date\n");
        std::fs::write(&input, csv).unwrap();
        (schema, input)
    }

    fn job<'a>(schema: &'a Schema, dir: &Path, input: &Path, out: &'a Path) -> Job<'a> {
        Job {
            schema,
            spec: InputSpec::parse(&format!("a={}", input.display())).unwrap(),
            out,
            rejects: dir.join("rejects.csv"),
            id_column: "id".to_owned(),
            encoding: EncodingArg::Auto,
            quiet: true,
            header: Header {
                format: tokens_file::FORMAT.to_owned(),
                version: renketsu_linkage::token_file::VERSION,
                project: "p".to_owned(),
                party: "a".to_owned(),
                schema: SchemaRef {
                    name: "t".to_owned(),
                    version: 1,
                    digest: "00".repeat(32),
                },
                mode: tokens_file::MODE_HMAC.to_owned(),
                oprf_mode: None,
                recipes: RecipeRef::hmac_refs(schema),
                clk_bits: None,
                today: "2026-11-22".to_owned(),
                created_by: "test".to_owned(),
                dice: Vec::new(),
            },
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn oprf_tokens_equal_direct_evaluation_of_the_preimages() {
        let dir = tempfile::tempdir().unwrap();
        let (schema_path, input) = setup(dir.path(), 300);
        let schema = crate::load_schema(&schema_path).unwrap();
        let out = dir.path().join("a.tokens");
        let j = job(&schema, dir.path(), &input, &out);
        let mut ev = InProcessEvaluator::new();
        ev.insert("p", "name_dob/v1", 1, key(0));
        ev.insert("p", "name_only/v3", 4, key(1));
        let ctx = NormalizeContext { today: 20_261_122 };
        for mode in [EvalMode::Voprf, EvalMode::Oprf] {
            // Batches of 64: several per recipe, the last one partial.
            let s = custodian_mode(&j, ctx, &ev, &runtime(), mode, &BTreeMap::new(), 64).unwrap();
            assert_eq!(
                (s.counts.read, s.counts.tokenized, s.counts.rejected),
                (304, 301, 3)
            );
            let mut r = tokens_file::open(&out).unwrap();
            let h = r.header().clone();
            assert_eq!(h.mode, tokens_file::MODE_OPRF);
            assert_eq!(h.oprf_mode.as_deref(), Some(mode.name()));
            assert_eq!(h.recipes[1].epoch, Some(4));
            assert_eq!(
                h.recipes[0].public_key,
                Some(hex::encode(key(0).public_key().to_bytes()))
            );
            // Every token is k·H(preimage) of that record's preimage, in the record's order.
            let pre = Tokenizer::preimage_mode(&schema, ctx);
            let mut rec = renketsu_linkage::token_file::Record::default();
            let mut n = 0;
            while r.next(&mut rec).unwrap() {
                let csv_row: Vec<String> = if rec.id == "dup" {
                    vec!["dup".into(), "x".into(), "1970-01-01".into()]
                } else {
                    let i: usize = rec.id.parse().unwrap();
                    vec![
                        i.to_string(),
                        format!("Name {i}"),
                        format!("1970-01-{:02}", i % 28 + 1),
                    ]
                };
                let b = pre.bind(&["id", "name", "dob"]);
                let raw: Vec<&str> = b.columns.iter().map(|&c| csv_row[c].as_str()).collect();
                let mut rt = renketsu_linkage::RecordTokens::default();
                pre.tokenize(&b, &raw, &mut rt);
                let want: Vec<(usize, [u8; 32])> = rt
                    .preimages()
                    .map(|(r, p)| {
                        let t = match mode {
                            EvalMode::Oprf => OprfServer::new(key(r)).evaluate_element(p),
                            EvalMode::Voprf => VoprfServer::new(key(r)).evaluate_element(p),
                        };
                        (r, t.unwrap())
                    })
                    .collect();
                assert_eq!(rec.tokens, want, "record {}", rec.id);
                n += 1;
            }
            assert_eq!(n, 301);
            let rejects = std::fs::read_to_string(dir.path().join("rejects.csv")).unwrap();
            assert!(rejects.contains(",missing_id,"), "{rejects}");
            assert!(rejects.contains(",dup,duplicate_id,"), "{rejects}");
            assert!(rejects.contains(",bad,no_token,"), "{rejects}");
        }
    }

    #[test]
    fn a_proof_against_another_key_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (schema_path, input) = setup(dir.path(), 50);
        let schema = crate::load_schema(&schema_path).unwrap();
        let out = dir.path().join("a.tokens");
        let j = job(&schema, dir.path(), &input, &out);
        let mut ev = InProcessEvaluator::new();
        ev.insert("p", "name_dob/v1", 1, key(0));
        // The custodian publishes key(2) for this recipe but evaluates with key(1).
        ev.insert_with_published("p", "name_only/v3", 1, key(1), key(2).public_key());
        let ctx = NormalizeContext { today: 20_261_122 };
        let err = custodian_mode(
            &j,
            ctx,
            &ev,
            &runtime(),
            EvalMode::Voprf,
            &BTreeMap::new(),
            16,
        )
        .err()
        .unwrap();
        assert!(format!("{err:#}").contains("does not verify"), "{err:#}");
        assert!(!out.exists());
        assert!(!dir.path().join("rejects.csv").exists());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".partial"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        // A pinned key that differs from the evaluating key fails the same way.
        let mut honest = InProcessEvaluator::new();
        honest.insert("p", "name_dob/v1", 1, key(0));
        honest.insert("p", "name_only/v3", 1, key(1));
        let pins = BTreeMap::from([(
            "name_dob/v1".to_owned(),
            EpochKey {
                epoch: 1,
                public_key: key(5).public_key(),
            },
        )]);
        let err = custodian_mode(&j, ctx, &honest, &runtime(), EvalMode::Voprf, &pins, 16)
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("does not verify"), "{err:#}");
        assert!(!out.exists());
    }

    #[test]
    fn clks_use_the_custodians_field_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (_, input) = setup(dir.path(), 40);
        let schema_path = dir.path().join("clk.toml");
        std::fs::write(
            &schema_path,
            format!(
                "{SCHEMA}\n[clk]\nbits = 256\nthreshold = 0.8\n[[clk.features]]\nfield = \"name\"\nk = 10\n[[clk.features]]\nfield = \"dob\"\npositional = true\nq = 1\nk = 10\n"
            ),
        )
        .unwrap();
        let schema = crate::load_schema(&schema_path).unwrap();
        let out = dir.path().join("a.tokens");
        let mut j = job(&schema, dir.path(), &input, &out);
        j.header.clk_bits = Some(256);
        let mut ev = InProcessEvaluator::new();
        ev.insert("p", "name_dob/v1", 1, key(0));
        ev.insert("p", "name_only/v3", 1, key(1));
        let ctx = NormalizeContext { today: 20_261_122 };
        // Without the field keys at the custodian: a clear error, nothing written.
        let err = custodian_mode(
            &j,
            ctx,
            &ev,
            &runtime(),
            EvalMode::Voprf,
            &BTreeMap::new(),
            16,
        )
        .err()
        .unwrap();
        assert!(
            format!("{err:#}").contains("CLK key of field name"),
            "{err:#}"
        );
        assert!(!out.exists());
        ev.insert_clk_key("p", "name", [1; 32]);
        ev.insert_clk_key("p", "dob", [2; 32]);
        custodian_mode(
            &j,
            ctx,
            &ev,
            &runtime(),
            EvalMode::Voprf,
            &BTreeMap::new(),
            16,
        )
        .unwrap();
        let c = schema.clk.as_ref().unwrap();
        let enc = NativeEncoder::with_field_keys(
            256,
            c.features
                .iter()
                .zip([[1u8; 32], [2u8; 32]])
                .map(|(f, k)| {
                    let feature = NativeFeature {
                        field: schema.fields[f.field].name.clone(),
                        q: f.q,
                        positional: f.positional,
                        k: f.k,
                    };
                    (feature, zeroize::Zeroizing::new(k))
                })
                .collect(),
        );
        let mut r = tokens_file::open(&out).unwrap();
        let mut rec = renketsu_linkage::token_file::Record::default();
        assert!(r.next(&mut rec).unwrap());
        assert_eq!(rec.id, "0");
        let mut want = Vec::new();
        enc.encode(&[Some("name 0"), Some("1970-01-01")], &mut want);
        assert_eq!(rec.clk, Some(want));
    }

    #[test]
    fn pins_are_parsed_strictly() {
        let pk = hex::encode(key(0).public_key().to_bytes());
        let p = parse_pins(&[format!("r/v1=2:{pk}")]).unwrap();
        assert_eq!(p["r/v1"].epoch, 2);
        for bad in [
            format!("r/v1={pk}"),
            format!("r/v1=0:{pk}"),
            "r/v1=1:00".to_owned(),
            format!("r/v1=1:{}", "00".repeat(32)),
        ] {
            assert!(parse_pins(std::slice::from_ref(&bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn custodian_mode_refuses_a_party_other_than_the_certificates() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: TokenizeArgs,
        }
        let dir = tempfile::tempdir().unwrap();
        let ca = renketsu_custodian::pki::DevCa::generate().unwrap();
        let ehr = ca
            .issue_client("ehr", renketsu_custodian::pki::Role::DataHolder)
            .unwrap();
        let path = |n: &str| dir.path().join(n).display().to_string();
        std::fs::write(path("ehr.pem"), &ehr.cert_pem).unwrap();
        std::fs::write(path("ehr.key"), ehr.key_pem.as_bytes()).unwrap();
        std::fs::write(path("ca.pem"), ca.cert_pem()).unwrap();
        std::fs::write(path("schema.toml"), SCHEMA).unwrap();
        std::fs::write(path("in.csv"), "id,name,dob\n1,a,2000-01-01\n").unwrap();
        let run_as = |party: &str| {
            let cli = <Cli as clap::Parser>::try_parse_from([
                "tokenize".to_owned(),
                "--schema".into(),
                path("schema.toml"),
                "--input".into(),
                path("in.csv"),
                "--party".into(),
                party.into(),
                "--out".into(),
                path("out.tokens"),
                "--project".into(),
                "p".into(),
                // Nothing listens there: the party check comes before any call.
                "--custodian".into(),
                "https://127.0.0.1:9".into(),
                "--ca".into(),
                path("ca.pem"),
                "--cert".into(),
                path("ehr.pem"),
                "--key".into(),
                path("ehr.key"),
                "--max-attempts".into(),
                "1".into(),
                "--timeout-secs".into(),
                "1".into(),
                "--quiet".into(),
            ])
            .unwrap();
            run(&cli.args).unwrap_err()
        };
        let err = format!("{:#}", run_as("ndb"));
        assert!(err.contains("--party ndb") && err.contains("ehr"), "{err}");
        assert!(!Path::new(&path("out.tokens")).exists());
        // With its own name the run goes on to the custodian (which is not there).
        let err = format!("{:#}", run_as("ehr"));
        assert!(!err.contains("--party"), "{err}");
    }
}
