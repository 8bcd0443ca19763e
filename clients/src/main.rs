//! `renketsu`: the command line of renketsu, privacy-preserving record linkage for Japanese
//! medical data. See `renketsu --help` and README.md.

mod attack_cmd;
mod audit_cmd;
mod clk_cmd;
mod custodian_cmd;
mod custodian_conn;
mod eval;
mod input;
mod link;
mod lu_cmd;
mod normalize_cmd;
mod output;
#[cfg(feature = "parquet")]
mod parquet_input;
mod pki_cmd;
mod progress;
mod release_open;
#[cfg(feature = "parquet")]
mod release_parquet;
mod synth;
mod tokenize_cmd;
mod tokens_file;
mod upload_check;

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use renketsu_keys::LocalKeyStore;
use renketsu_keys::local::KEK_ENV;
use renketsu_linkage::{NormalizeContext, Schema};

use crate::input::EncodingArg;
use crate::link::{InputSpec, LinkJob};

const LONG_ABOUT: &str = "\
renketsu (連結) links records about the same people across data holders without exchanging \
identifiers. Each holder's identifiers (names, birth dates, sex, insurance numbers) are \
normalized and turned into keyed-hash tokens; records that share a token are linked and \
clustered, and every cluster gets a random per-project pseudonym. The researcher's view \
(joined.csv) carries only pseudonyms and content columns.

Typical first run (embedded mode, one machine):
  renketsu keys init --project demo
  renketsu link --project demo --schema schemas/jp-person.toml \\
      --input a=samples/jp_a.csv --input b=samples/jp_b.csv --out out/
  renketsu eval --pairs out/pairs.csv --truth samples/jp_truth.csv";

#[derive(Parser)]
#[command(name = "renketsu", version, about = "Privacy-preserving record linkage for Japanese medical data", long_about = LONG_ABOUT)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage project master secrets in the local key store (embedded mode).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Tokenize each holder's CSV, join exact tokens, cluster, and write pairs, clusters, the
    /// researcher's joined view, rejects and a summary.
    #[command(long_about = "\
Tokenize each holder's CSV, join exact tokens across holders, cluster with union-find, and \
write to --out:
  pairs.csv           linked record pairs (id_a,id_b; or party_a,id_a,party_b,id_b for 3+ inputs)
  clusters.csv        party,id,pid for every tokenized record
  joined.csv          the researcher's view: pid and content columns only
  rejects-<party>.csv rows that could not be tokenized: row (1-based data record), id, reason, detail
  summary.json        counts per party (read = tokenized + rejected), links, clusters, timings
With a [scoring] section in the schema (Fellegi-Sunter, SPEC.md §9), also:
  pair_scores.csv     every output pair with its match weight, probability and levels
  report.html         standalone quality report (estimated precision/recall, m/u, histograms)
Files appear atomically; summary.json is written last.")]
    Link(LinkArgs),
    /// One data holder: turn a CSV into a token file for the linkage unit, with HMAC keys of
    /// the local key store or with the key custodian's OPRF.
    #[command(long_about = "\
One data holder: turn a CSV into a token file (SPEC.md §5.5) for the linkage unit. Rows are \
checked and rejected exactly as by `renketsu link`; rejected rows go to <out>.rejects.csv.
Embedded (HMAC) mode, with the project master secret of the local key store:
  renketsu tokenize --project demo --schema schemas/jp-person-exact.toml \\
      --input a.csv --party a --out a.tokens
Custodian (OPRF) mode: the key custodian evaluates RFC 9497 VOPRF on blinded preimages; the \
holder never holds the key and checks every batch's proof against the published key:
  renketsu tokenize --custodian https://127.0.0.1:7443 --ca pki/ca.pem \\
      --cert pki/holder-a.pem --key pki/holder-a.key --project demo \\
      --schema schemas/jp-person-exact.toml --input a.csv --party holder-a --out a.tokens
Then: renketsu link --schema schemas/jp-person-exact.toml --input a.tokens --input b.tokens --out out/")]
    Tokenize(tokenize_cmd::TokenizeArgs),
    /// Precision, recall and F1 of a pairs file against ground truth (and, for scored runs,
    /// the model's estimates next to them).
    Eval {
        /// Predicted pairs (pairs.csv from `renketsu link`).
        #[arg(long)]
        pairs: PathBuf,
        /// True pairs, same layout (id_a,id_b or party_a,id_a,party_b,id_b).
        #[arg(long)]
        truth: PathBuf,
        /// summary.json of a scored run, whose estimated precision and recall (from the
        /// model, no truth) are shown next to the true ones (default: summary.json beside
        /// --pairs, if there is one).
        #[arg(long)]
        summary: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the canonical form of identifier values, or why they are rejected: the tool to
    /// reach for when two records did not link.
    #[command(long_about = "\
Print the canonical form of identifier values, or why they are rejected, one per line:
  input<TAB>canonical     or     input<TAB>!reason_code
Values come from the command line, or from one column of a CSV file (--input, --column).
Examples:
  renketsu normalize --kind birth_date 'S45.03.15' '昭和45年3月15日' 3450315
  renketsu normalize --kind kana_name_fuzzy 'きょうへい' 'キヨウヘイ'
  renketsu normalize --kind insurer_number 33120015 33120016
  renketsu normalize --kind postal_code --input holder.csv --column postcode")]
    Normalize(normalize_cmd::NormalizeArgs),
    /// Generate synthetic Japanese person records for N data holders, with overlap, ground
    /// truth and an optional NDB-style hash-only view.
    #[command(long_about = "\
Generate synthetic Japanese person records for N data holders, with overlap and ground truth:
kanji and kana names from name-frequency lists, birth dates, sex, insurance identifiers with
valid check digits (families share a card), insurer changes between holders, and realistic
corruptions (width, hiragana, small kana, voiced marks, long vowels, variant kanji, era dates,
name swaps, typos, missing values). Streaming: memory does not grow with --records.
Example:
  renketsu synth --out data/ --holders 3 --records 100000 --ndb-view b")]
    Synth(synth::SynthArgs),
    /// Bloom-filter (CLK) encodings: `renketsu clk encode` is compatible with clkhash.
    Clk {
        #[command(subcommand)]
        command: clk_cmd::ClkCommand,
    },
    /// The attack self-test: what a curious linkage unit learns from the token files (or
    /// CLKs) it receives, given a reference plaintext, scored with --truth (SPEC.md §7.5).
    #[command(long_about = "\
The attack self-test (SPEC.md §7.5): from the linkage unit's view (token files + schema, or \
`renketsu clk encode` output + clkhash schema) and an attacker's reference plaintext CSV: \
frequency alignment per recipe, undoing balance, pattern mining of CLK columns, and \
re-identification by set consistency. With --truth (the holders' CSVs) it scores itself.
  renketsu attack --schema schemas/jp-person-clk.toml --tokens a.tokens --tokens b.tokens \\
      --reference ref.csv --truth a.csv --truth b.csv --json")]
    Attack(attack_cmd::AttackArgs),
    /// Check a linkage schema and print its fields and recipes.
    Schema {
        /// The schema TOML file.
        path: PathBuf,
    },
    /// Run the key custodian (RFC 9497 OPRF over gRPC with mutual TLS).
    Custodian {
        #[command(subcommand)]
        command: custodian_cmd::CustodianCommand,
    },
    /// Development certificates: a CA and one certificate per role.
    Pki {
        #[command(subcommand)]
        command: pki_cmd::PkiCommand,
    },
    /// The custodian's audit log.
    Audit {
        #[command(subcommand)]
        command: audit_cmd::AuditCommand,
    },
    /// The linkage-unit service and its clients: serve, projects and jobs (admin), uploads,
    /// mappings, opt-outs and traceback (holders), keys (researcher), audit.
    #[command(long_about = "\
The linkage unit (SPEC.md §10) matches holders' token files without any key, and hands each \
holder its own record -> pseudonym mapping and the researcher the content joined by pseudonym \
(sealed by the holders to the researcher's key; the linkage unit cannot read it).
  renketsu lu serve ...                        run it
  renketsu lu keygen --out researcher          researcher: key pair for sealed content
  renketsu lu create-project ... --holder a --holder b --researcher researcher \\
      --researcher-key researcher.pub --schema S                  admin
  renketsu lu upload ... --tokens a.tokens --content-from a.csv --schema S   holder
  renketsu lu start-job ... --wait                                admin
  renketsu lu mapping ... --out a-mapping.csv                     holder
  renketsu fetch ... --researcher-key researcher.key --out release/   researcher
Every command takes --lu URL --ca --cert --key --project (or RENKETSU_LU, RENKETSU_CA, \
RENKETSU_CERT, RENKETSU_CERT_KEY, RENKETSU_PROJECT).")]
    Lu {
        #[command(subcommand)]
        command: lu_cmd::LuCommand,
    },
    /// Researcher: fetch the release from the linkage unit, open the sealed content and write
    /// the joined dataset (pid and content columns; no token, no record id).
    Fetch(lu_cmd::FetchArgs),
}

#[derive(clap::Args)]
struct KeyStoreArgs {
    /// Directory of the local key store. The key-encryption key is read from RENKETSU_KEK if
    /// set, else from <DIR>/kek.
    #[arg(long, env = "RENKETSU_KEY_STORE", default_value_os_t = default_key_store())]
    key_store: PathBuf,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a project master secret (and the store and its KEK if they do not exist yet).
    /// Never overwrites an existing project.
    Init {
        /// Project name: 1-64 characters of A-Z a-z 0-9 . _ -
        #[arg(long)]
        project: String,
        #[command(flatten)]
        store: KeyStoreArgs,
        /// Succeed without change if the project already exists.
        #[arg(long)]
        if_missing: bool,
    },
    /// List the projects that have a master secret in the store, or, with --custodian, the
    /// projects on a key custodian (admin certificate).
    List {
        #[command(flatten)]
        store: KeyStoreArgs,
        #[command(flatten)]
        remote: custodian_conn::CustodianArgs,
    },
    /// Key custodian administration (admin certificate): create-project, enrol, rotate, revoke.
    #[command(flatten)]
    Admin(custodian_cmd::AdminCommand),
}

#[derive(clap::Args)]
struct LinkArgs {
    /// Linkage schema (TOML), e.g. schemas/jp-person.toml.
    #[arg(long)]
    schema: PathBuf,
    /// One holder's CSV or token file (from `renketsu tokenize`, recognised by its header), as
    /// NAME=PATH or PATH (a CSV's party is named after the file stem, a token file's after its
    /// header). Give two or more, all CSVs or all token files. A `.parquet` file is read as the
    /// same table in CSV would be (builds with the cargo feature `parquet`).
    #[arg(long = "input", required = true, value_name = "[NAME=]PATH")]
    inputs: Vec<String>,
    /// Output directory (created if missing; existing output files are replaced).
    #[arg(long)]
    out: PathBuf,
    /// Project whose master secret keys the tokens (see `renketsu keys init`). Token files
    /// name their project; if given, it must match.
    #[arg(long, env = "RENKETSU_PROJECT")]
    project: Option<String>,
    #[command(flatten)]
    store: KeyStoreArgs,
    /// Column holding each record's id (default: the schema's [input] id_column, else "id").
    #[arg(long)]
    id_column: Option<String>,
    /// Input text encoding.
    #[arg(long, value_enum, default_value_t = EncodingArg::Auto)]
    encoding: EncodingArg,
    /// "Today" as YYYY-MM-DD for refusing future birth dates (default: the current UTC date).
    /// Set it to make a run reproducible.
    #[arg(long)]
    today: Option<String>,
    /// Make only these recipes (comma-separated names; guard recipes are always kept), e.g.
    /// to measure each recipe's precision and recall alone.
    #[arg(long, value_delimiter = ',')]
    recipes: Vec<String>,
    /// No progress bars or per-input log lines.
    #[arg(long, short)]
    quiet: bool,
    /// Scored schemas ([scoring]): link pairs whose match probability is at least this (0-1),
    /// instead of the schema's threshold or the automatic one (maximum estimated F1).
    #[arg(long, value_parser = parse_probability)]
    threshold: Option<f64>,
    /// Scored schemas: a party whose data may hold several records of one person (repeat
    /// for several); its records may share a cluster.
    #[arg(long = "duplicates", value_name = "PARTY")]
    duplicates: Vec<String>,
    /// Known true pairs (the `renketsu eval --truth` format: id_a,id_b for the first two
    /// inputs, or party_a,id_a,party_b,id_b) to report the CLK candidates' pairs completeness
    /// in summary.json (`clk.pairs_completeness`); for evaluation runs, never needed to link.
    #[arg(long, value_name = "FILE")]
    truth: Option<PathBuf>,
    /// Print the linkage plan (ingest, encode, block, compare, score and cluster stages: the
    /// recipes and their link modes, blocking keys, comparisons, the CLK threshold and LSH
    /// parameters, what each stage's cost grows with) and exit without reading any record or
    /// writing any file.
    #[arg(long)]
    explain: bool,
    /// Also write pairs.parquet, clusters.parquet and joined.parquet (the same tables, string
    /// columns, Snappy) next to the CSVs; needs a renketsu built with the cargo feature
    /// `parquet`.
    #[arg(long)]
    parquet_out: bool,
}

fn parse_probability(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if p > 0.0 && p < 1.0 => Ok(p),
        _ => Err(format!("{s:?} is not a match probability in (0, 1)")),
    }
}

fn default_key_store() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/renketsu/keys"),
        None => PathBuf::from(".renketsu/keys"),
    }
}

fn kek_env() -> Option<String> {
    std::env::var(KEK_ENV).ok().filter(|v| !v.trim().is_empty())
}

fn load_schema(path: &PathBuf) -> Result<Schema> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read schema {}", path.display()))?;
    Schema::from_toml(&text).with_context(|| format!("invalid schema {}", path.display()))
}

pub(crate) fn today_or_now(today: Option<&str>) -> Result<NormalizeContext> {
    match today {
        Some(s) => parse_today(s),
        None => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .context("system clock before 1970")?;
            Ok(NormalizeContext::from_unix_seconds(
                i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
            ))
        }
    }
}

fn parse_today(s: &str) -> Result<NormalizeContext> {
    let mut out = String::new();
    let far_future = NormalizeContext::with_today(9999, 12, 31);
    renketsu_linkage::Normalizer::Date
        .apply(s, &far_future, &mut out)
        .map_err(|e| anyhow::anyhow!("--today {s:?}: {e}"))?;
    let d: u32 = out.replace('-', "").parse().expect("canonical date");
    Ok(NormalizeContext { today: d })
}

/// `renketsu … | head`: once the reader has closed the pipe, the next print to stdout fails
/// and `println!` panics. Exit quietly instead, as shell tools do (status 141 = 128 +
/// SIGPIPE); every other panic goes to the default hook.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() -> Result<()> {
    quiet_on_closed_stdout();
    let result = run();
    if let Err(e) = &result {
        let closed = e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        });
        if closed {
            std::process::exit(141);
        }
    }
    result
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Keys { command } => keys(command),
        Command::Link(args) => link_cmd(args),
        Command::Tokenize(args) => tokenize_cmd::run(&args),
        Command::Eval {
            pairs,
            truth,
            summary,
            json,
        } => eval::run(&pairs, &truth, summary.as_deref(), json),
        Command::Schema { path } => print_schema(&load_schema(&path)?),
        Command::Normalize(args) => normalize_cmd::run(&args),
        Command::Clk { command } => clk_cmd::run(&command),
        Command::Attack(args) => attack_cmd::run(&args),
        Command::Custodian { command } => custodian_cmd::run(command),
        Command::Pki { command } => pki_cmd::run(command),
        Command::Lu { command } => lu_cmd::run(command),
        Command::Fetch(args) => lu_cmd::fetch(args),
        Command::Audit { command } => audit_cmd::run(command),
        Command::Synth(args) => {
            println!("{}", synth::run(&args)?);
            Ok(())
        }
    }
}

fn print_schema(s: &Schema) -> Result<()> {
    use renketsu_linkage::schema::LinkMode;
    println!(
        "schema {} version {} (id column {:?})",
        s.name, s.version, s.id_column
    );
    println!("identifier fields:");
    for f in &s.fields {
        let full = match (&f.full_column, f.part) {
            (Some(c), Some(p)) => {
                let p = if p == renketsu_linkage::schema::NamePart::Family {
                    "family"
                } else {
                    "given"
                };
                format!(" (or the {p} name part of {c})")
            }
            (Some(c), None) => format!(" (or the whole name in {c})"),
            _ => String::new(),
        };
        println!(
            "  {:<24} {:<36} normalizer {}{}{full}",
            f.name,
            f.columns.join(" + "),
            f.normalizer.name(),
            if f.any_order { " (any order)" } else { "" }
        );
    }
    println!("content columns: {}", s.content.join(", "));
    println!("recipes:");
    for r in &s.recipes {
        let names: Vec<&str> = r
            .fields
            .iter()
            .map(|&i| s.fields[i].name.as_str())
            .collect();
        let mode = match r.link {
            LinkMode::Direct => "",
            LinkMode::Guarded => " [guarded]",
            LinkMode::Guard => " [guard]",
            LinkMode::Block => " [block]",
            LinkMode::Compare => " [compare]",
        };
        let pre = match &r.prehash {
            Some(p) => format!(
                " (prehash ndb-legacy-v1{}{})",
                if p.date_neighbours {
                    ", birth-date neighbours only"
                } else {
                    ""
                },
                p.digest_column
                    .as_deref()
                    .map(|c| format!(", or digest column {c}"))
                    .unwrap_or_default()
            ),
            None => String::new(),
        };
        println!(
            "  {} v{}: {}{mode}{pre}",
            r.name,
            r.version,
            names.join(" + ")
        );
    }
    Ok(())
}

/// Keeps only the named recipes (and every guard recipe, which guarded links need).
fn filter_recipes(schema: &mut Schema, names: &[String]) -> Result<()> {
    use renketsu_linkage::schema::LinkMode;
    for n in names {
        if !schema.recipes.iter().any(|r| &r.name == n) {
            let all: Vec<&str> = schema.recipes.iter().map(|r| r.name.as_str()).collect();
            bail!(
                "--recipes: the schema has no recipe {n:?}; it has: {}",
                all.join(", ")
            );
        }
    }
    // One recipe's own precision and recall is an exact-token question: scoring (whose
    // comparisons refer to recipes by position) is switched off.
    schema.scoring = None;
    schema
        .recipes
        .retain(|r| r.link == LinkMode::Guard || names.contains(&r.name));
    Ok(())
}

fn keys(command: KeysCommand) -> Result<()> {
    match command {
        KeysCommand::Init {
            project,
            store,
            if_missing,
        } => {
            let env = kek_env();
            let (ks, created_kek) =
                LocalKeyStore::open_or_init(&store.key_store, env.as_deref(), &mut rand::rng())?;
            if created_kek {
                eprintln!(
                    "created key-encryption key {} (mode 0600); keep it apart from backups of the store, or supply {KEK_ENV} instead",
                    ks.dir().join("kek").display()
                );
            }
            match ks.create_project(&project, &mut rand::rng()) {
                Ok(()) => eprintln!(
                    "created master secret for project {project:?} in {}",
                    ks.dir().display()
                ),
                Err(renketsu_keys::KeyStoreError::ProjectExists(_)) if if_missing => {
                    eprintln!("project {project:?} already has a master secret; left unchanged");
                }
                Err(e) => return Err(e.into()),
            }
            Ok(())
        }
        KeysCommand::List { remote, .. } if remote.is_remote() => {
            custodian_cmd::list_remote(&remote)
        }
        KeysCommand::Admin(command) => custodian_cmd::admin(command),
        KeysCommand::List { store, .. } => {
            let env = kek_env();
            let ks = LocalKeyStore::open(&store.key_store, env.as_deref())?;
            for p in ks.projects()? {
                println!("{p}");
            }
            Ok(())
        }
    }
}

fn link_cmd(args: LinkArgs) -> Result<()> {
    let t0 = Instant::now();
    let mut schema = load_schema(&args.schema)?;
    if !args.recipes.is_empty() {
        filter_recipes(&mut schema, &args.recipes)?;
    }
    let mut inputs = args
        .inputs
        .iter()
        .map(|s| InputSpec::parse(s))
        .collect::<Result<Vec<_>>>()?;
    let ctx = today_or_now(args.today.as_deref())?;
    let is_tokens = inputs
        .iter()
        .map(|i| tokens_file::is_token_file(&i.path))
        .collect::<Result<Vec<bool>>>()?;
    let secret;
    let (project, token_mode) = if is_tokens.iter().all(|t| *t) {
        // Token files: no key store; the project and parties come from the headers.
        let mut files = Vec::with_capacity(inputs.len());
        for (spec, raw) in inputs.iter_mut().zip(&args.inputs) {
            let header = tokens_file::open(&spec.path)?.header().clone();
            let named = raw
                .split_once('=')
                .is_some_and(|(n, _)| !n.contains(['/', '\\']));
            if !named {
                spec.party = header.party.clone();
            } else if spec.party != header.party {
                bail!(
                    "{} is the token file of party {:?}, not {:?}",
                    spec.path.display(),
                    header.party,
                    spec.party
                );
            }
            files.push((spec.clone(), header));
        }
        secret = None;
        link::check_token_headers(&args.schema, &files, args.project.as_deref())?
    } else if is_tokens.iter().any(|t| *t) {
        bail!(
            "give either CSV inputs or token files, not both: {} are token files",
            inputs
                .iter()
                .zip(&is_tokens)
                .filter(|(_, t)| **t)
                .map(|(i, _)| i.path.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    } else {
        let project = args
            .project
            .clone()
            .context("--project (or RENKETSU_PROJECT) is required to link CSV inputs")?;
        let env = kek_env();
        let ks = LocalKeyStore::open(&args.store.key_store, env.as_deref())?;
        secret = Some(renketsu_linkage::ProjectSecret::from_bytes(
            *ks.project_secret(&project)?,
        ));
        (project, "hmac".to_owned())
    };
    if args.out.is_file() {
        bail!("--out {} is a file; give a directory", args.out.display());
    }
    let job = LinkJob {
        schema: &schema,
        schema_path: &args.schema,
        inputs,
        out: &args.out,
        project: &project,
        secret: secret.as_ref(),
        id_column: args.id_column.as_deref(),
        encoding: args.encoding,
        ctx,
        quiet: args.quiet,
        token_mode,
        threshold: args.threshold,
        duplicates: args.duplicates.clone(),
        truth: args.truth.as_deref(),
        explain: args.explain,
        parquet_out: args.parquet_out,
    };
    let Some(outcome) = link::run(&job)? else {
        return Ok(());
    };
    if !args.quiet {
        eprintln!(
            "renketsu link: {} links, {} clusters; wrote {} in {:.2} s",
            outcome.links,
            outcome.clusters,
            args.out.display(),
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
