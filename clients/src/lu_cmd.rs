//! `renketsu lu …` and `renketsu fetch`: the linkage-unit service (SPEC.md §10) and its
//! clients — admin (projects, jobs, re-keying), holders (uploads, mappings, opt-outs,
//! traceback), the researcher (keys, releases) and auditors (the linkage unit's audit log).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use renketsu_client::linkage_unit::{
    LinkageUnitConn, LuClientError, NewLinkageProject, SealedContentWriter,
};
use renketsu_keys::content::ResearcherKeyPair;
use renketsu_keys::local::LocalKeyStore;
use renketsu_keys::seal::{SealContext, Sealed};
use renketsu_linkage::Schema;
use renketsu_linkage_unit::service::{LinkageUnitService, LuSettings};
use renketsu_linkage_unit::store::LuStore;
use renketsu_protocol::v1;
use renketsu_rpc::SystemClock;
use renketsu_rpc::tls::{ConnectConfig, TlsMaterial};
use serde::{Deserialize, Serialize};

use crate::input::{EncodingArg, open_csv};
use crate::output::PendingFile;
use crate::tokens_file;

/// `--lu URL --ca FILE --cert FILE --key FILE`.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct LuArgs {
    /// The linkage unit, e.g. https://localhost:7444.
    #[arg(long, env = "RENKETSU_LU", value_name = "URL")]
    pub lu: String,
    /// CA certificate (PEM) that issued the linkage unit's certificate.
    #[arg(long, env = "RENKETSU_CA", value_name = "FILE")]
    pub ca: PathBuf,
    /// Your client certificate (PEM); its role must allow the command.
    #[arg(long, env = "RENKETSU_CERT", value_name = "FILE")]
    pub cert: PathBuf,
    /// Your client private key (PEM).
    #[arg(long, env = "RENKETSU_CERT_KEY", value_name = "FILE")]
    pub key: PathBuf,
    /// The linkage project.
    #[arg(long, env = "RENKETSU_PROJECT")]
    pub project: String,
}

impl LuArgs {
    fn connect(&self) -> Result<LinkageUnitConn> {
        let mut config = ConnectConfig::new(self.lu.clone(), &self.ca, &self.cert, &self.key);
        config.timeout = Duration::from_secs(600);
        Ok(LinkageUnitConn::connect(&config, &self.project)?)
    }
}

/// A client error as a one-line error, with a hint for the statuses a user can fix.
fn lu_error(e: LuClientError) -> anyhow::Error {
    let hint = match e.code() {
        Some(tonic::Code::Unavailable) => {
            " (is the linkage unit running, and do --ca, --cert and --key belong to its PKI?)"
        }
        Some(tonic::Code::PermissionDenied) => " (check the role and party of --cert)",
        _ => "",
    };
    anyhow::anyhow!("{e}{hint}")
}

/// `renketsu lu …`.
#[derive(clap::Subcommand)]
pub(crate) enum LuCommand {
    /// Run the linkage unit (gRPC with mutual TLS; SQLite or PostgreSQL store).
    #[command(long_about = "\
Run the linkage unit: holders upload token files and sealed content, the admin starts the \
matching job, holders fetch their mappings, the researcher fetches the release. It holds no \
key. Prints `renketsu lu: listening on ADDR` when ready; stops on Ctrl-C or SIGTERM. Jobs \
interrupted by a crash are run again at start.
Example (development PKI from `renketsu pki dev-init --out pki`):
  renketsu lu serve --db sqlite:lu.db --listen 127.0.0.1:7444 \\
      --tls-cert pki/linkage-unit-server.pem --tls-key pki/linkage-unit-server.key \\
      --client-ca pki/ca.pem")]
    Serve(ServeArgs),
    /// Admin: create a linkage project (holders, schema, researcher and its public key).
    CreateProject {
        #[command(flatten)]
        conn: LuArgs,
        /// The linkage schema every holder tokenizes with (a [scoring] schema needs token
        /// files of version 2, SPEC.md §5.5).
        #[arg(long)]
        schema: PathBuf,
        /// A holder's party name (its certificate's CN); two or more, in order.
        #[arg(long = "holder", required = true)]
        holders: Vec<String>,
        /// The researcher's party name.
        #[arg(long)]
        researcher: String,
        /// The researcher's public key file (`renketsu lu keygen`).
        #[arg(long)]
        researcher_key: PathBuf,
        /// Holders whose data may hold several records of one person.
        #[arg(long = "duplicates")]
        duplicates: Vec<String>,
    },
    /// Admin: list projects with uploads and the latest job.
    List {
        #[command(flatten)]
        conn: LuArgs,
    },
    /// Admin: delete a project and everything stored for it.
    Delete {
        #[command(flatten)]
        conn: LuArgs,
    },
    /// Admin: start the matching job (and with --wait, follow it to the end).
    ///
    /// By default the job is incremental where that gives exactly the clusters of a full
    /// re-link (every recipe `direct`, no [clk] or [scoring]; the holders' token uploads
    /// unchanged since the previous job, only batches and opt-outs added): it re-links only
    /// the batches' records, the clusters they touch and those a correction or deletion may
    /// split. Otherwise it re-links everything, and the job's mode says why
    /// (`renketsu lu job`: "full (incremental not possible: …)"). SPEC.md §10.3.3.
    StartJob {
        #[command(flatten)]
        conn: LuArgs,
        /// Wait for the job and show its progress.
        #[arg(long)]
        wait: bool,
        /// Re-link the whole state even where an incremental job would be exact (e.g. to
        /// check an incremental result).
        #[arg(long)]
        full: bool,
    },
    /// Admin: a job's state and progress (default the latest); --wait follows it.
    Job {
        #[command(flatten)]
        conn: LuArgs,
        /// Job id (0: the latest).
        #[arg(long, default_value_t = 0)]
        job: u64,
        /// Wait until it is no longer running.
        #[arg(long)]
        wait: bool,
    },
    /// Admin: fetch the quality report of a scored job (summary.json, report.html).
    Report {
        #[command(flatten)]
        conn: LuArgs,
        /// Job id (0: the latest DONE job).
        #[arg(long, default_value_t = 0)]
        job: u64,
        /// Directory to write summary.json and report.html to.
        #[arg(long)]
        out: PathBuf,
    },
    /// Admin: cancel a running job.
    Cancel {
        #[command(flatten)]
        conn: LuArgs,
        /// Job id (0: the latest).
        #[arg(long, default_value_t = 0)]
        job: u64,
    },
    /// Admin: re-key every stored token of one recipe to a new epoch (the linkage unit asks
    /// the custodian for the delta with its own certificate).
    Rekey {
        #[command(flatten)]
        conn: LuArgs,
        /// Custodian recipe name, `<recipe>/v<version>`.
        #[arg(long)]
        recipe: String,
        /// Target epoch.
        #[arg(long)]
        to_epoch: u64,
    },
    /// Holder: upload a token file, sealed content and/or opt-out tokens (resumable).
    #[command(long_about = "\
Holder: upload to the linkage unit. Uploads are chunked, idempotent and resumable: rerun the \
same command after a crash and only missing chunks are sent.
  --tokens FILE         the token file from `renketsu tokenize`
  --content-from CSV    seal the content columns of CSV (the schema's [content]) to the \
project's researcher and upload them; only records of --tokens are sealed
  --opt-out FILE        a token file of persons who opted out (提供停止): their clusters are \
excluded from every later mapping and release

Incremental uploads (SPEC.md §10.3.2): after one --tokens upload, send each month's change \
instead of the whole file again:
  --batch FILE          a token file of this month's new records and corrected records (an id \
you uploaded before: its record is replaced), tokenized like the --tokens file
  --delete IDS          a text file of record ids to delete, one per line (sent before --batch, \
so an id in both is replaced); its header is copied from --batch, or from --like FILE
A batch is applied once: sending the same file again (e.g. after a crash) changes nothing. \
Batches apply in the order they complete, on top of your latest --tokens upload; a new --tokens \
upload starts your state afresh and drops them. The next job (`renketsu lu start-job`) links \
the state with the batches applied; persons keep their pseudonyms (SPEC.md §10.5.1). Content \
is not batched: send the whole content file again with --tokens FILE --content-from CSV of \
the whole state when it changes.

Examples:
  renketsu lu upload ... --tokens ehr-2026-01.tokens.jsonl --content-from ehr-2026-01.csv --schema s.toml
  renketsu lu upload ... --batch ehr-2026-02.batch.tokens.jsonl --delete ehr-2026-02.deleted.txt")]
    Upload(UploadArgs),
    /// Holder: fetch your record id -> pseudonym mapping of the latest job.
    Mapping {
        #[command(flatten)]
        conn: LuArgs,
        /// Output CSV (`id,pid`).
        #[arg(long)]
        out: PathBuf,
    },
    /// Holder: your own record ids behind a pseudonym (audited).
    Traceback {
        #[command(flatten)]
        conn: LuArgs,
        /// The pseudonym (32 hex digits).
        #[arg(long)]
        pseudonym: String,
    },
    /// Researcher: the crosswalk between two of your releases (how the pseudonyms of one
    /// map to the other's: merges, splits, retirements, withdrawals), as CSV
    /// `job,kind,old_pid,new_pid`.
    Crosswalk {
        #[command(flatten)]
        conn: LuArgs,
        /// The earlier release (0: from the first job).
        #[arg(long, default_value_t = 0)]
        since_release: u64,
        /// The later release (0: the latest).
        #[arg(long, default_value_t = 0)]
        until_release: u64,
        /// Output CSV file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Researcher: make the key pair content is sealed to (`PREFIX.pub`, `PREFIX.key`).
    Keygen {
        /// Output prefix.
        #[arg(long)]
        out: PathBuf,
        /// Local key store whose KEK seals the private key (RENKETSU_KEK overrides).
        #[arg(long, env = "RENKETSU_KEY_STORE")]
        key_store: Option<PathBuf>,
    },
    /// Evaluation only: combine holders' mappings (`renketsu lu mapping`) into a pairs file
    /// for `renketsu eval` (on synthetic data with ground truth).
    #[command(long_about = "\
Evaluation only (synthetic data with ground truth): combine holders' mapping files into the \
record pairs they imply, in the layout of `renketsu link`'s pairs.csv (id_a,id_b for two \
holders, party_a,id_a,party_b,id_b for more), for `renketsu eval`:
  renketsu lu pairs --mapping ehr=ehr-map.csv --mapping ndb=ndb-map.csv --out pairs.csv
In production no one holds every holder's mapping.")]
    Pairs {
        /// `PARTY=FILE`, one per holder, in project order.
        #[arg(long = "mapping", required = true)]
        mappings: Vec<String>,
        /// Output pairs CSV.
        #[arg(long)]
        out: PathBuf,
    },
    /// Auditor: print the linkage unit's audit log and verify its hash chain.
    Audit {
        #[command(flatten)]
        conn: LuArgs,
        /// Also print every entry as JSON lines.
        #[arg(long)]
        print: bool,
    },
}

/// `renketsu lu serve`.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct ServeArgs {
    /// Store URL: sqlite:PATH (embedded default) or postgres://USER@HOST:PORT/DB.
    #[arg(long, default_value = "sqlite:linkage-unit.db")]
    pub db: String,
    /// Address to listen on (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:7444")]
    pub listen: SocketAddr,
    /// Server certificate (PEM).
    #[arg(long)]
    pub tls_cert: PathBuf,
    /// Server private key (PEM).
    #[arg(long)]
    pub tls_key: PathBuf,
    /// CA that client certificates must chain to (PEM).
    #[arg(long)]
    pub client_ca: PathBuf,
    /// The key custodian, for re-keying deltas only.
    #[arg(long)]
    pub custodian: Option<String>,
    /// The linkage unit's client certificate for the custodian (role linkage-unit).
    #[arg(long, requires = "custodian")]
    pub custodian_cert: Option<PathBuf>,
    /// Its private key.
    #[arg(long, requires = "custodian")]
    pub custodian_key: Option<PathBuf>,
    /// Hours an incomplete upload is kept before it is deleted with its chunks.
    #[arg(long, default_value_t = 24)]
    pub upload_expiry_hours: u64,
    /// Most bytes of incomplete uploads per holder (all projects), and the largest upload.
    #[arg(long, default_value_t = renketsu_linkage_unit::service::DEFAULT_UPLOAD_CAP_BYTES)]
    pub upload_cap_bytes: u64,
    /// Fewest clusters (after opt-outs) a job needs before any mapping or release is served,
    /// so that a tiny project cannot single out people.
    #[arg(long, default_value_t = renketsu_linkage_unit::validate::DEFAULT_MIN_RELEASE_CLUSTERS)]
    pub min_release_clusters: u64,
}

/// `renketsu lu upload`.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct UploadArgs {
    #[command(flatten)]
    pub conn: LuArgs,
    /// Token file to upload.
    #[arg(long)]
    pub tokens: Option<PathBuf>,
    /// Holder CSV whose content columns are sealed to the researcher and uploaded (needs
    /// --tokens, whose record ids select the rows, and --schema).
    #[arg(long, requires_all = ["tokens", "schema"])]
    pub content_from: Option<PathBuf>,
    /// The project's schema (for --content-from: id and content columns).
    #[arg(long)]
    pub schema: Option<PathBuf>,
    /// Encoding of --content-from.
    #[arg(long, value_enum, default_value = "auto")]
    pub encoding: EncodingArg,
    /// The researcher public key you were given out of band: refuse to seal to another one.
    #[arg(long)]
    pub researcher_key: Option<PathBuf>,
    /// Token file of opted-out persons to upload.
    #[arg(long)]
    pub opt_out: Option<PathBuf>,
    /// Token batch to apply on top of your token upload: new records and corrected records
    /// (an id uploaded before is replaced), tokenized like it.
    #[arg(long, conflicts_with = "tokens")]
    pub batch: Option<PathBuf>,
    /// Record ids to delete from your state at the linkage unit: a text file, one id per
    /// line (blank lines skipped); sent as a deletion batch before --batch.
    #[arg(long, conflicts_with = "tokens")]
    pub delete: Option<PathBuf>,
    /// For --delete without --batch: one of your token files of this project, whose header
    /// the deletion batch copies (project, holder, schema).
    #[arg(long, requires = "delete")]
    pub like: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// `renketsu fetch`.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct FetchArgs {
    #[command(flatten)]
    pub conn: LuArgs,
    /// The researcher key file (`renketsu lu keygen`: PREFIX.key).
    #[arg(long)]
    pub researcher_key: PathBuf,
    /// Local key store whose KEK sealed it (RENKETSU_KEK overrides).
    #[arg(long, env = "RENKETSU_KEY_STORE")]
    pub key_store: Option<PathBuf>,
    /// Output directory: joined.csv and release.json (and, from a scored job,
    /// link_probability.csv: per pseudonym the weakest link probability of its cluster).
    #[arg(long)]
    pub out: PathBuf,
    /// Exit non-zero if any record could not be opened (the files are written either way;
    /// records that do not open leave empty cells and are reported per holder).
    #[arg(long)]
    pub strict: bool,
    /// Fetch only what changed since your release M (SPEC.md §10.5.2): new and changed
    /// clusters, withdrawn and removed pseudonyms, the crosswalk. Needs --previous.
    #[arg(long, value_name = "M", default_value_t = 0, requires = "previous")]
    pub since_release: u64,
    /// The output directory of release M (its joined.csv and release.json): the delta is
    /// applied to it and the updated files written to --out (crosswalk.csv too).
    #[arg(long, value_name = "DIR")]
    pub previous: Option<PathBuf>,
    /// Also write long.csv: one row per released holder record (pid, holder, that holder's
    /// content columns), for holders with many records per person.
    #[arg(long)]
    pub long: bool,
    /// `parquet`: also write joined.parquet (long.parquet, link_probability.parquet) with
    /// Arrow types (dates, integers, decimals, booleans; empty cells null; codes with
    /// leading zeros stay strings). The CSVs are written either way (a later
    /// --since-release reads them). Needs the cargo feature `parquet`.
    #[arg(long, value_enum, default_value = "csv")]
    pub format: FetchFormat,
}

/// The table format of `renketsu fetch`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FetchFormat {
    /// CSV only.
    Csv,
    /// CSV and Parquet.
    Parquet,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Runs a `renketsu lu` subcommand.
pub(crate) fn run(command: LuCommand) -> Result<()> {
    if let LuCommand::Serve(args) = &command {
        return serve(args);
    }
    if let LuCommand::Keygen { out, key_store } = &command {
        return keygen(out, key_store.as_deref());
    }
    if let LuCommand::Pairs { mappings, out } = &command {
        return pairs_from_mappings(mappings, out);
    }
    runtime()?.block_on(async move {
        match command {
            LuCommand::Serve(_) | LuCommand::Keygen { .. } | LuCommand::Pairs { .. } => {
                unreachable!("handled above")
            }
            LuCommand::CreateProject {
                conn,
                schema,
                holders,
                researcher,
                researcher_key,
                duplicates,
            } => {
                let schema_toml = std::fs::read(&schema)
                    .with_context(|| format!("cannot read schema {}", schema.display()))?;
                let pk = read_public_key(&researcher_key)?;
                let p = conn
                    .connect()?
                    .create_project(NewLinkageProject {
                        holders,
                        researcher,
                        researcher_public_key: pk,
                        schema_toml,
                        duplicates,
                    })
                    .await
                    .map_err(lu_error)?;
                println!(
                    "created linkage project {}: holders {}, researcher {}, schema SHA-256 {}",
                    p.project,
                    p.holders.join(", "),
                    p.researcher,
                    p.schema_digest
                );
                Ok(())
            }
            LuCommand::List { conn } => {
                let projects = conn.connect()?.list_projects().await.map_err(lu_error)?;
                for p in projects {
                    println!(
                        "{}  holders {}  researcher {}",
                        p.project,
                        p.holders.join(","),
                        p.researcher
                    );
                    for u in &p.uploads {
                        println!(
                            "  upload {} {} {}…  {} records",
                            u.party,
                            kind_label(u.kind),
                            &u.upload_id[..12.min(u.upload_id.len())],
                            u.records
                        );
                    }
                    if let Some(j) = &p.latest_job {
                        println!("  {}", job_line(j));
                    }
                }
                Ok(())
            }
            LuCommand::Delete { conn } => {
                conn.connect()?.delete_project().await.map_err(lu_error)?;
                println!("deleted linkage project {}", conn.project);
                Ok(())
            }
            LuCommand::StartJob { conn, wait, full } => {
                let mut client = conn.connect()?;
                let j = client.start_job_full(full).await.map_err(lu_error)?;
                eprintln!("renketsu lu: started job {} of {}", j.job_id, j.project);
                if wait {
                    wait_job(&mut client, j.job_id).await
                } else {
                    Ok(())
                }
            }
            LuCommand::Job { conn, job, wait } => {
                let mut client = conn.connect()?;
                if wait {
                    return wait_job(&mut client, job).await;
                }
                let j = client.job(job).await.map_err(lu_error)?;
                println!("{}", job_line(&j));
                print_estimates(&mut client, &j).await
            }
            LuCommand::Report { conn, job, out } => {
                let r = conn
                    .connect()?
                    .quality_report(job)
                    .await
                    .map_err(lu_error)?;
                std::fs::create_dir_all(&out)
                    .with_context(|| format!("cannot create {}", out.display()))?;
                for (name, text) in [
                    ("summary.json", &r.summary_json),
                    ("report.html", &r.report_html),
                ] {
                    let path = out.join(name);
                    std::fs::write(&path, text)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                }
                println!(
                    "job {} of {}: wrote {}/summary.json and report.html",
                    r.job_id,
                    r.project,
                    out.display()
                );
                Ok(())
            }
            LuCommand::Cancel { conn, job } => {
                let j = conn.connect()?.cancel_job(job).await.map_err(lu_error)?;
                println!("{}", job_line(&j));
                Ok(())
            }
            LuCommand::Rekey {
                conn,
                recipe,
                to_epoch,
            } => {
                let r = conn
                    .connect()?
                    .rekey(&recipe, to_epoch)
                    .await
                    .map_err(lu_error)?;
                println!(
                    "re-keyed {} tokens of {recipe} in {} uploads to epoch {to_epoch}",
                    r.tokens, r.uploads
                );
                Ok(())
            }
            LuCommand::Upload(args) => upload(args).await,
            LuCommand::Mapping { conn, out } => mapping(&conn, &out).await,
            LuCommand::Traceback { conn, pseudonym } => {
                let r = conn
                    .connect()?
                    .traceback(&pseudonym)
                    .await
                    .map_err(lu_error)?;
                for id in &r.record_ids {
                    println!("{id}");
                }
                eprintln!(
                    "renketsu lu: {} of your records (job {}); this traceback is in the audit log",
                    r.record_ids.len(),
                    r.job_id
                );
                Ok(())
            }
            LuCommand::Crosswalk {
                conn,
                since_release,
                until_release,
                out,
            } => {
                let r = conn
                    .connect()?
                    .crosswalk(since_release, until_release)
                    .await
                    .map_err(lu_error)?;
                let dir = out.parent().filter(|d| !d.as_os_str().is_empty());
                let name = out
                    .file_name()
                    .and_then(|n| n.to_str())
                    .context("--out names a file")?;
                let mut f = PendingFile::create(dir.unwrap_or(Path::new(".")), name)?.csv();
                f.row(["job", "kind", "old_pid", "new_pid"])?;
                for e in &r.events {
                    f.row([
                        e.job_id.to_string().as_str(),
                        &e.kind,
                        &e.old_pseudonym,
                        &e.new_pseudonym,
                    ])?;
                }
                f.commit()?;
                println!(
                    "wrote {} ({} events, jobs {} to {})",
                    out.display(),
                    r.events.len(),
                    r.since_job + 1,
                    r.until_job
                );
                Ok(())
            }
            LuCommand::Audit { conn, print } => audit(&conn, print).await,
        }
    })
}

fn kind_label(kind: i32) -> &'static str {
    match v1::UploadKind::try_from(kind) {
        Ok(v1::UploadKind::Tokens) => "tokens",
        Ok(v1::UploadKind::Content) => "content",
        Ok(v1::UploadKind::OptOut) => "opt-out",
        Ok(v1::UploadKind::TokenBatch) => "token batch",
        Ok(v1::UploadKind::Deletions) => "deletions",
        _ => "?",
    }
}

fn job_line(j: &v1::Job) -> String {
    let state = v1::JobState::try_from(j.state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("JOB_STATE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| "?".to_owned());
    let mut s = format!(
        "job {} {state}: {} ({:.0}%)",
        j.job_id,
        j.stage,
        j.progress * 100.0
    );
    if j.state == v1::JobState::Done as i32 {
        s.push_str(&format!(
            "; {} records, {} clusters ({} excluded by opt-outs), {} links",
            j.records, j.clusters, j.excluded_clusters, j.links
        ));
        if !j.mode.is_empty() {
            s.push_str(&format!("; {}", j.mode));
        }
    }
    if !j.error.is_empty() {
        s.push_str(&format!("; error: {}", j.error));
    }
    s
}

async fn wait_job(client: &mut LinkageUnitConn, job_id: u64) -> Result<()> {
    let pb = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:40}] {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    pb.set_prefix(format!("job {job_id}"));
    let outcome = client
        .wait_job(job_id, |j| {
            pb.set_position((j.progress * 1000.0) as u64);
            pb.set_message(j.stage.clone());
        })
        .await;
    pb.finish_and_clear();
    match outcome {
        Ok(j) => {
            println!("{}", job_line(&j));
            print_estimates(client, &j).await
        }
        Err(LuClientError::JobNotDone { job, .. }) => {
            println!("{}", job_line(&job));
            bail!("job {} did not complete", job.job_id)
        }
        Err(e) => Err(lu_error(e)),
    }
}

/// After a DONE job of a scored schema: the model's estimated precision and recall, overall
/// and per pair of holders (from the quality report; nothing for unscored schemas).
async fn print_estimates(client: &mut LinkageUnitConn, j: &v1::Job) -> Result<()> {
    if j.state != v1::JobState::Done as i32 {
        return Ok(());
    }
    let r = match client.quality_report(j.job_id).await {
        Ok(r) => r,
        Err(LuClientError::Status {
            code: tonic::Code::NotFound,
            ..
        }) => return Ok(()),
        Err(e) => return Err(lu_error(e)),
    };
    let v: serde_json::Value =
        serde_json::from_str(&r.summary_json).context("the quality report is not JSON")?;
    for line in estimate_lines(&v) {
        println!("{line}");
    }
    Ok(())
}

/// The estimate lines of a scored `summary.json`: overall, then one per pair of holders
/// (`–` where the recall is not identifiable).
fn estimate_lines(summary: &serde_json::Value) -> Vec<String> {
    let e = &summary["scoring"]["estimated"];
    if e.is_null() {
        return Vec::new();
    }
    let f = |x: &serde_json::Value| x.as_f64().map_or("–".to_owned(), |v| format!("{v:.4}"));
    let mut out = vec![format!(
        "estimated (Fellegi–Sunter model): precision {} recall {} F1 {}; {} output pairs",
        f(&e["precision"]),
        f(&e["recall"]),
        f(&e["f1"]),
        e["output_pairs"]
    )];
    for p in e["by_holder_pair"].as_array().into_iter().flatten() {
        out.push(format!(
            "  {} × {}: precision {} recall {} F1 {}; {} pairs",
            p["party_a"].as_str().unwrap_or("?"),
            p["party_b"].as_str().unwrap_or("?"),
            f(&p["precision"]),
            f(&p["recall"]),
            f(&p["f1"]),
            p["output_pairs"]
        ));
    }
    out
}

/// Uploads `bytes` as one upload of `kind` (resuming, retrying: the client library's
/// `LinkageUnitConn::upload`), with a progress bar unless `quiet`.
async fn upload_bytes(
    client: &mut LinkageUnitConn,
    kind: v1::UploadKind,
    bytes: Arc<Vec<u8>>,
    label: &str,
    quiet: bool,
) -> Result<v1::UploadStatus> {
    let pb = if quiet {
        ProgressBar::hidden()
    } else {
        let pb =
            ProgressBar::with_draw_target(Some(bytes.len() as u64), ProgressDrawTarget::stderr());
        pb.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        pb.set_prefix(label.to_owned());
        pb
    };
    let bar = pb.clone();
    let status = client
        .upload(kind, bytes, label, move |done| bar.set_position(done))
        .await
        .map_err(lu_error);
    pb.finish_and_clear();
    status
}

/// Reads the file at `path` and uploads it with [`upload_bytes`].
async fn upload_file(
    client: &mut LinkageUnitConn,
    kind: v1::UploadKind,
    path: &Path,
    label: &str,
    quiet: bool,
) -> Result<v1::UploadStatus> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    // Tokens and opt-outs are token files: checked here before anything is sent.
    crate::upload_check::token_file(&bytes, &path.display().to_string())?;
    upload_bytes(client, kind, Arc::new(bytes), label, quiet).await
}

async fn upload(args: UploadArgs) -> Result<()> {
    if args.tokens.is_none()
        && args.opt_out.is_none()
        && args.batch.is_none()
        && args.delete.is_none()
    {
        bail!(
            "nothing to upload: give --tokens (and --content-from), --batch and/or --delete, or --opt-out"
        );
    }
    let mut client = args.conn.connect()?;
    let project = args.conn.project.clone();
    if let Some(path) = &args.tokens {
        let s = upload_file(
            &mut client,
            v1::UploadKind::Tokens,
            path,
            "tokens",
            args.quiet,
        )
        .await?;
        println!(
            "uploaded {} ({} records, upload {}…)",
            path.display(),
            s.records,
            &s.upload_id[..12]
        );
    }
    if let Some(csv) = &args.content_from {
        let p = client.project_info().await.map_err(lu_error)?;
        if let Some(pin) = &args.researcher_key {
            let pinned = read_public_key(pin)?;
            if p.researcher_public_key != pinned {
                bail!(
                    "the linkage unit shows another researcher key for {project} than {}: refusing to seal content to it",
                    pin.display()
                );
            }
        }
        let schema_path = args.schema.as_ref().expect("clap requires --schema");
        let tokens = args.tokens.as_ref().expect("clap requires --tokens");
        let bytes = seal_content(
            csv,
            schema_path,
            tokens,
            args.encoding,
            &project,
            &p.researcher_public_key,
        )?;
        let s = upload_bytes(
            &mut client,
            v1::UploadKind::Content,
            Arc::new(bytes),
            "content",
            args.quiet,
        )
        .await?;
        println!(
            "uploaded the content of {} sealed to {} ({} records)",
            csv.display(),
            p.researcher,
            s.records
        );
    }
    if let Some(ids) = &args.delete {
        let like = args.like.as_ref().or(args.batch.as_ref()).ok_or_else(|| {
            anyhow::anyhow!(
                "--delete needs a token file to copy its header from: --batch FILE or --like FILE"
            )
        })?;
        let bytes = deletion_batch(ids, like)?;
        let s = upload_bytes(
            &mut client,
            v1::UploadKind::Deletions,
            Arc::new(bytes),
            "deletions",
            args.quiet,
        )
        .await?;
        println!(
            "uploaded deletions {} ({} ids, batch {}, upload {}…)",
            ids.display(),
            s.records,
            s.batch_seq,
            &s.upload_id[..12]
        );
    }
    if let Some(path) = &args.batch {
        let s = upload_file(
            &mut client,
            v1::UploadKind::TokenBatch,
            path,
            "batch",
            args.quiet,
        )
        .await?;
        println!(
            "uploaded batch {} ({} records, batch {}, upload {}…): the next job links it",
            path.display(),
            s.records,
            s.batch_seq,
            &s.upload_id[..12]
        );
    }
    if let Some(path) = &args.opt_out {
        let s = upload_file(
            &mut client,
            v1::UploadKind::OptOut,
            path,
            "opt-out",
            args.quiet,
        )
        .await?;
        println!(
            "uploaded opt-outs {} ({} records): their clusters are excluded from later mappings and releases",
            path.display(),
            s.records
        );
    }
    Ok(())
}

/// The deletion batch of the ids in `ids` (one per line, blank lines skipped; an id twice
/// is refused), with the header of the token file `like`.
fn deletion_batch(ids: &Path, like: &Path) -> Result<Vec<u8>> {
    let text =
        std::fs::read_to_string(ids).with_context(|| format!("cannot read {}", ids.display()))?;
    let list: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
        .collect();
    let mut seen = HashSet::new();
    if let Some(dup) = list.iter().find(|id| !seen.insert(**id)) {
        bail!("{}: record id {dup:?} is listed twice", ids.display());
    }
    let file =
        std::fs::File::open(like).with_context(|| format!("cannot read {}", like.display()))?;
    let reader = renketsu_linkage::token_file::Reader::new(
        std::io::BufReader::new(file),
        &like.display().to_string(),
    )?;
    Ok(renketsu_linkage::token_file::encode_deletions(
        reader.header(),
        list,
    ))
}

/// The sealed content file of `csv`'s content columns for the records of `tokens`.
fn seal_content(
    csv: &Path,
    schema_path: &Path,
    tokens: &Path,
    encoding: EncodingArg,
    project: &str,
    researcher_public_key: &[u8],
) -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(schema_path)
        .with_context(|| format!("cannot read schema {}", schema_path.display()))?;
    let schema = Schema::from_toml(&text)
        .with_context(|| format!("invalid schema {}", schema_path.display()))?;
    let mut reader = tokens_file::open(tokens)?;
    let party = reader.header().party.clone();
    let mut ids = HashSet::new();
    let mut rec = renketsu_linkage::token_file::Record::default();
    while reader.next(&mut rec)? {
        ids.insert(std::mem::take(&mut rec.id));
    }
    let mut input = open_csv(csv, encoding)?;
    let id_col = input.column(&schema.id_column, "record id")?;
    let mut columns = Vec::new();
    let mut cols = Vec::new();
    for c in &schema.content {
        if let Some(i) = input.header.iter().position(|h| h == c) {
            columns.push(c.clone());
            cols.push(i);
        }
    }
    let mut sealed = SealedContentWriter::new(project, &party, columns, researcher_public_key)?;
    let mut row = csv::ByteRecord::new();
    let mut done = HashSet::new();
    while input.next_row(&mut row)? {
        let Some(id) = row.get(id_col).and_then(|b| input.encoding.decode(b)) else {
            continue;
        };
        let id = id.trim().to_owned();
        if !ids.contains(&id) || !done.insert(id.clone()) {
            continue;
        }
        let values: Vec<String> = cols
            .iter()
            .map(|&c| {
                row.get(c)
                    .and_then(|b| input.encoding.decode(b))
                    .map(|v| v.into_owned())
                    .unwrap_or_default()
            })
            .collect();
        sealed.push(&id, &values);
    }
    Ok(sealed.finish())
}

async fn mapping(conn: &LuArgs, out: &Path) -> Result<()> {
    let mut client = conn.connect()?;
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = out
        .file_name()
        .and_then(|n| n.to_str())
        .context("--out: not a file name")?;
    let mut f = PendingFile::create(dir, name)?.csv();
    f.row(["id", "pid"])?;
    let mut n = 0u64;
    let job = client
        .mapping(|id, pid| -> Result<()> {
            f.row([id, pid])?;
            n += 1;
            Ok(())
        })
        .await
        .map_err(|e| e.downcast::<LuClientError>().map_or_else(|e| e, lu_error))?;
    f.commit()?;
    println!("wrote {} ({n} records, job {job})", out.display());
    Ok(())
}

async fn audit(conn: &LuArgs, print: bool) -> Result<()> {
    let wire = conn.connect()?.audit_log().await.map_err(lu_error)?;
    let mut entries = Vec::with_capacity(wire.len());
    for e in &wire {
        if print {
            println!(
                "{}",
                serde_json::json!({"sequence": e.sequence, "unix_time_ms": e.unix_time_ms, "actor": e.actor_party,
                    "role": e.role, "rpc": e.rpc, "project": e.project, "detail": e.recipe,
                    "items": e.item_count, "status": e.status_code})
            );
        }
        entries.push(renketsu_client::audit::entry_from_wire(e)?);
    }
    // The linkage unit holds no key, so there is no sealed head (unlike the custodian's log):
    // the chain is checked up to the last entry streamed.
    let head = entries.last().map(renketsu_keys::audit::AuditEntry::head);
    renketsu_keys::audit::verify(&entries, head.as_ref())
        .context("the linkage unit's audit log does not verify")?;
    eprintln!("renketsu lu: audit log verified: {} entries", entries.len());
    Ok(())
}

fn pairs_from_mappings(mappings: &[String], out: &Path) -> Result<()> {
    let mut by_pid: BTreeMap<String, Vec<(usize, String)>> = BTreeMap::new();
    let mut parties = Vec::new();
    for (k, m) in mappings.iter().enumerate() {
        let (party, file) = m
            .split_once('=')
            .with_context(|| format!("--mapping {m:?}: expected PARTY=FILE"))?;
        parties.push(party.to_owned());
        let mut r = csv::Reader::from_path(file).with_context(|| format!("cannot read {file}"))?;
        for rec in r.records() {
            let rec = rec.with_context(|| format!("{file}: bad CSV"))?;
            let (Some(id), Some(pid)) = (rec.get(0), rec.get(1)) else {
                bail!("{file}: expected id,pid rows");
            };
            by_pid
                .entry(pid.to_owned())
                .or_default()
                .push((k, id.to_owned()));
        }
    }
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = out
        .file_name()
        .and_then(|n| n.to_str())
        .context("--out: not a file name")?;
    let mut f = PendingFile::create(dir, name)?.csv();
    let two = parties.len() == 2;
    if two {
        f.row(["id_a", "id_b"])?;
    } else {
        f.row(["party_a", "id_a", "party_b", "id_b"])?;
    }
    let mut n = 0u64;
    for members in by_pid.values() {
        for (i, (pa, a)) in members.iter().enumerate() {
            for (pb, b) in &members[i + 1..] {
                if pa == pb {
                    continue;
                }
                let ((pa, a), (pb, b)) = if pa < pb {
                    ((pa, a), (pb, b))
                } else {
                    ((pb, b), (pa, a))
                };
                if two {
                    f.row([a.as_str(), b.as_str()])?;
                } else {
                    f.row([parties[*pa].as_str(), a, parties[*pb].as_str(), b])?;
                }
                n += 1;
            }
        }
    }
    f.commit()?;
    println!("wrote {} ({n} pairs)", out.display());
    Ok(())
}

fn read_public_key(path: &Path) -> Result<[u8; 32]> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .with_context(|| {
            format!(
                "{}: not a researcher public key (64 hex digits)",
                path.display()
            )
        })
}

const RESEARCHER_KEY_DOMAIN: &[u8] = b"renketsu/researcher-key/v1";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResearcherKeyFile {
    format: String,
    version: u32,
    public_key: String,
    sealed: String,
}

fn key_store(dir: Option<&Path>) -> Result<LocalKeyStore> {
    let dir = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(crate::default_key_store);
    let env = crate::kek_env();
    Ok(
        LocalKeyStore::open_or_init(&dir, env.as_deref(), &mut rand::rng())
            .with_context(|| format!("key store {}", dir.display()))?
            .0,
    )
}

fn keygen(out: &Path, store: Option<&Path>) -> Result<()> {
    let store = key_store(store)?;
    let pair = ResearcherKeyPair::generate();
    let pk = hex::encode(pair.public_key());
    let ctx = SealContext {
        domain: RESEARCHER_KEY_DOMAIN,
        parts: &[pk.as_bytes()],
    };
    let sealed = store
        .keks()
        .seal(&mut rand::rng(), &ctx, pair.secret_bytes().as_ref());
    let file = ResearcherKeyFile {
        format: "renketsu-researcher-key".to_owned(),
        version: 1,
        public_key: pk.clone(),
        sealed: B64.encode(sealed.to_bytes()),
    };
    let key_path = out.with_extension("key");
    let pub_path = out.with_extension("pub");
    let dir = key_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(&key_path)
        .with_context(|| format!("cannot create {} (it must not exist)", key_path.display()))?;
    serde_json::to_writer_pretty(&mut f, &file)?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::write(&pub_path, format!("{pk}\n"))?;
    println!(
        "wrote {} (public: give it to the linkage-unit admin and the holders) and {} (private, sealed with the key store's KEK)",
        pub_path.display(),
        key_path.display()
    );
    Ok(())
}

fn load_researcher_key(path: &Path, store: Option<&Path>) -> Result<ResearcherKeyPair> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file: ResearcherKeyFile = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a researcher key file", path.display()))?;
    let store = key_store(store)?;
    let sealed = Sealed::from_bytes(
        &B64.decode(file.sealed.as_bytes())
            .context("sealed key is not base64")?,
    )?;
    let ctx = SealContext {
        domain: RESEARCHER_KEY_DOMAIN,
        parts: &[file.public_key.as_bytes()],
    };
    let secret = store.keks().open(&ctx, &sealed).with_context(|| {
        format!(
            "{}: cannot unseal (another key store's KEK?)",
            path.display()
        )
    })?;
    let pair = ResearcherKeyPair::from_secret_bytes(&secret)?;
    if hex::encode(pair.public_key()) != file.public_key {
        bail!(
            "{}: the private key does not match its public key",
            path.display()
        );
    }
    Ok(pair)
}

/// `renketsu fetch`: the researcher's release, fetched and opened by the client library,
/// then joined here (the full outer join per cluster moves into the core engine).
pub(crate) fn fetch(args: FetchArgs) -> Result<()> {
    #[cfg(not(feature = "parquet"))]
    if args.format == FetchFormat::Parquet {
        bail!(
            "--format parquet: this renketsu was built without Parquet support (cargo feature `parquet`)"
        );
    }
    let pair = load_researcher_key(&args.researcher_key, args.key_store.as_deref())?;
    runtime()?.block_on(async move {
        let previous = match &args.previous {
            Some(dir) if args.since_release > 0 => Some(read_previous(dir, &args.conn.project, args.since_release)?),
            _ => None,
        };
        let sealed = args
            .conn
            .connect()?
            .fetch_release_since(args.since_release)
            .await
            .map_err(lu_error)?;
        let (holders, clusters) = (&sealed.holders, &sealed.clusters);
        let (release_id, job_id) = (sealed.release_id, sealed.job_id);
        std::fs::create_dir_all(&args.out)?;
        // What opens is written; what does not leaves empty cells, reported per holder.
        // A whole release is written as it is opened; a delta's rows are kept to be merged.
        let mut joined = PendingFile::create(&args.out, "joined.csv")?.csv();
        let mut fresh: Vec<Vec<String>> = Vec::new();
        let j = crate::release_open::join(
            &pair,
            &args.conn.project,
            holders,
            &sealed.headers,
            clusters,
            |row| {
                if previous.is_none() {
                    joined.row(row)
                } else {
                    fresh.push(row.iter().map(|c| (*c).to_owned()).collect());
                    Ok(())
                }
            },
        )?;
        // A delta: the earlier release's rows of pseudonyms neither dropped nor sent again,
        // and the rows sent, in pseudonym order (as the whole release would be).
        let dropped: BTreeSet<&str> = sealed
            .withdrawn
            .iter()
            .chain(&sealed.removed)
            .map(String::as_str)
            .chain(clusters.iter().map(|c| c.pseudonym.as_str()))
            .collect();
        let rows = match &previous {
            None => j.rows,
            Some(prev) => {
                let (header, sent) = fresh
                    .split_first()
                    .map_or((Vec::new(), &[][..]), |(h, r)| (h.clone(), r));
                if prev.joined.first() != Some(&header) {
                    bail!(
                        "release {release_id} has other columns than release {}: fetch it whole",
                        args.since_release
                    );
                }
                let merged = merge_rows(&prev.joined, sent, &dropped);
                for row in &merged {
                    joined.row(row)?;
                }
                merged.len().saturating_sub(1) as u64
            }
        };
        joined.commit()?;
        let n_clusters = clusters.len() as u64 + sealed.unchanged_clusters;
        // The long form (one row per record), updated like joined.csv for a delta.
        let long_written = if args.long {
            let mut fresh: Vec<Vec<String>> = Vec::new();
            crate::release_open::long_rows(
                &pair,
                &args.conn.project,
                holders,
                &sealed.headers,
                clusters,
                |row| {
                    fresh.push(row.iter().map(|c| (*c).to_owned()).collect());
                    Ok(())
                },
            )?;
            let all = match &previous {
                None => fresh,
                Some(prev) => {
                    let old = prev
                        .long
                        .as_ref()
                        .ok_or_else(|| anyhow!("--long: the earlier release has no long.csv"))?;
                    if old.first() != fresh.first() {
                        bail!("release {release_id} has other columns than release {}: fetch it whole", args.since_release);
                    }
                    merge_rows(old, fresh.get(1..).unwrap_or_default(), &dropped)
                }
            };
            let mut f = PendingFile::create(&args.out, "long.csv")?.csv();
            for row in &all {
                f.row(row)?;
            }
            f.commit()?;
            Some(all.len().saturating_sub(1))
        } else {
            None
        };
        let unopened: BTreeMap<&str, u64> =
            j.unopened.iter().map(|(h, (n, _))| (h.as_str(), *n)).collect();
        // Scored jobs: how sure each link is (per pseudonym, the weakest link of its
        // cluster), for sensitivity analyses on the surest links only.
        let scored = clusters
            .iter()
            .any(|c| c.weakest_link_probability.is_some());
        let scored = scored || previous.as_ref().is_some_and(|p| p.links.is_some());
        if scored {
            let header = vec!["pid".to_owned(), "weakest_link_probability".to_owned()];
            let sent: Vec<Vec<String>> = clusters
                .iter()
                .filter_map(|c| {
                    c.weakest_link_probability
                        .map(|p| vec![c.pseudonym.clone(), format!("{p:.6}")])
                })
                .collect();
            let all = match previous.as_ref().and_then(|p| p.links.as_ref()) {
                Some(prev) => merge_rows(prev, &sent, &dropped),
                None => std::iter::once(header).chain(sent).collect(),
            };
            let mut links = PendingFile::create(&args.out, "link_probability.csv")?.csv();
            for row in &all {
                links.row(row)?;
            }
            links.commit()?;
        }
        if previous.is_some() {
            let mut cw = PendingFile::create(&args.out, "crosswalk.csv")?.csv();
            cw.row(["job", "kind", "old_pid", "new_pid"])?;
            for e in &sealed.crosswalk {
                cw.row([
                    e.job_id.to_string().as_str(),
                    &e.kind,
                    &e.old_pseudonym,
                    &e.new_pseudonym,
                ])?;
            }
            cw.commit()?;
        }
        let mut meta = serde_json::json!({"project": args.conn.project, "release_id": release_id, "job_id": job_id,
                "holders": holders, "clusters": n_clusters, "rows": rows,
                "unopened_records": unopened,
                "estimated_precision": sealed.estimated_precision,
                "estimated_recall": sealed.estimated_recall,
                "link_probability_csv": scored});
        if let Some(n) = long_written {
            meta["long_csv_rows"] = serde_json::json!(n);
        }
        #[cfg(feature = "parquet")]
        if args.format == FetchFormat::Parquet {
            let mut written = serde_json::Map::new();
            let tables = [
                ("joined", true),
                ("long", long_written.is_some()),
                ("link_probability", scored),
            ];
            for (name, present) in tables {
                if !present {
                    continue;
                }
                let kinds = crate::release_parquet::write(
                    &args.out.join(format!("{name}.csv")),
                    &args.out.join(format!("{name}.parquet")),
                )?;
                let types: serde_json::Map<String, serde_json::Value> = kinds
                    .into_iter()
                    .map(|(c, k)| (c, serde_json::json!(k.name())))
                    .collect();
                written.insert(format!("{name}.parquet"), types.into());
            }
            meta["parquet"] = written.into();
        }
        if previous.is_some() {
            meta["delta"] = serde_json::json!({"since_release": args.since_release,
                "new_clusters": clusters.iter().filter(|c| !c.changed).count(),
                "changed_clusters": clusters.iter().filter(|c| c.changed).count(),
                "unchanged_clusters": sealed.unchanged_clusters,
                "withdrawn": sealed.withdrawn, "removed": sealed.removed,
                "crosswalk_csv": true});
        }
        let mut f = PendingFile::create(&args.out, "release.json")?;
        serde_json::to_writer_pretty(&mut f.writer, &meta)?;
        f.writer.write_all(b"\n")?;
        f.commit()?;
        println!(
            "wrote {} ({n_clusters} clusters, {rows} rows; release {release_id} of job {job_id})",
            args.out.join("joined.csv").display(),
        );
        for (holder, (n, why)) in &j.unopened {
            eprintln!("renketsu fetch: {holder}: {n} records could not be opened (empty cells): {why}");
        }
        if args.strict && !j.unopened.is_empty() {
            bail!(
                "--strict: records of {} could not be opened",
                j.unopened.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        Ok(())
    })
}

/// The output of an earlier release that a delta is applied to.
struct PreviousRelease {
    /// joined.csv, header row first.
    joined: Vec<Vec<String>>,
    /// link_probability.csv, header row first, if it was written.
    links: Option<Vec<Vec<String>>>,
    /// long.csv, header row first, if it was written.
    long: Option<Vec<Vec<String>>>,
}

fn read_csv(path: &Path) -> Result<Vec<Vec<String>>> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut rows = Vec::new();
    for rec in r.records() {
        let rec = rec.with_context(|| format!("{}: not CSV", path.display()))?;
        rows.push(rec.iter().map(str::to_owned).collect());
    }
    Ok(rows)
}

fn read_previous(dir: &Path, project: &str, release: u64) -> Result<PreviousRelease> {
    let path = dir.join("release.json");
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?,
    )
    .with_context(|| format!("{}: not JSON", path.display()))?;
    if meta["project"].as_str() != Some(project) || meta["release_id"].as_u64() != Some(release) {
        bail!(
            "{} is not release {release} of project {project}",
            dir.display()
        );
    }
    let links = dir.join("link_probability.csv");
    let long = dir.join("long.csv");
    Ok(PreviousRelease {
        long: if long.exists() {
            Some(read_csv(&long)?)
        } else {
            None
        },
        joined: read_csv(&dir.join("joined.csv"))?,
        links: if links.exists() {
            Some(read_csv(&links)?)
        } else {
            None
        },
    })
}

/// `previous` (header row first) without the rows of `dropped` pseudonyms, plus `sent`, in
/// pseudonym order (a stable sort: a pseudonym's rows keep their order).
fn merge_rows(
    previous: &[Vec<String>],
    sent: &[Vec<String>],
    dropped: &BTreeSet<&str>,
) -> Vec<Vec<String>> {
    let Some((header, rows)) = previous.split_first() else {
        return sent.to_vec();
    };
    let mut body: Vec<Vec<String>> = rows
        .iter()
        .filter(|r| r.first().is_none_or(|p| !dropped.contains(p.as_str())))
        .chain(sent)
        .cloned()
        .collect();
    body.sort_by(|a, b| a.first().cmp(&b.first()));
    std::iter::once(header.clone()).chain(body).collect()
}

fn serve(args: &ServeArgs) -> Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let tls = TlsMaterial::load(&args.tls_cert, &args.tls_key, &args.client_ca)?;
    let custodian = match (&args.custodian, &args.custodian_cert, &args.custodian_key) {
        (Some(url), Some(cert), Some(key)) => {
            Some(ConnectConfig::new(url.clone(), &args.client_ca, cert, key))
        }
        (Some(_), _, _) => bail!(
            "--custodian needs --custodian-cert and --custodian-key (the linkage unit's client certificate)"
        ),
        _ => None,
    };
    runtime()?.block_on(async move {
        let store = LuStore::connect(&args.db).await.with_context(|| {
            format!(
                "cannot open the store {}",
                renketsu_custodian::config::redact_url(&args.db)
            )
        })?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        println!("renketsu lu: listening on {addr}");
        std::io::stdout().flush()?;
        let service = LinkageUnitService::new(
            store.clone(),
            Arc::new(SystemClock),
            LuSettings {
                custodian,
                test_pause: std::env::var("RENKETSU_LU_TEST_PAUSE_MS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .map(Duration::from_millis),
                upload_expiry: Duration::from_secs(args.upload_expiry_hours.saturating_mul(3600)),
                upload_cap_bytes: args.upload_cap_bytes,
                min_release_clusters: args.min_release_clusters,
            },
        );
        renketsu_linkage_unit::server::run(
            listener,
            &tls,
            service,
            crate::custodian_cmd::shutdown_signal(),
        )
        .await?;
        store.close().await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use renketsu_linkage::token_file::{
        Counts, FORMAT, Header, MODE_HMAC, Reader, Record, SchemaRef, VERSION, encode_header,
        encode_trailer,
    };

    /// A token file of no record with a header of project `p`, holder `ehr`, 128-bit CLKs.
    fn like() -> Vec<u8> {
        let mut out = Vec::new();
        encode_header(
            &mut out,
            &Header {
                format: FORMAT.to_owned(),
                version: VERSION,
                project: "p".to_owned(),
                party: "ehr".to_owned(),
                schema: SchemaRef {
                    name: "s".to_owned(),
                    version: 1,
                    digest: "d".repeat(64),
                },
                mode: MODE_HMAC.to_owned(),
                oprf_mode: None,
                recipes: Vec::new(),
                clk_bits: Some(128),
                today: "2026-12-07".to_owned(),
                created_by: "test".to_owned(),
                dice: Vec::new(),
            },
        );
        encode_trailer(&mut out, &Counts::default());
        out
    }

    #[test]
    fn a_deletion_batch_names_the_ids_under_the_header_of_a_token_file() {
        let dir = tempfile::tempdir().unwrap();
        let (ids, tokens) = (dir.path().join("ids.txt"), dir.path().join("t.jsonl"));
        std::fs::write(&tokens, like()).unwrap();
        std::fs::write(&ids, "a1\r\n\nb 2\n").unwrap();
        let bytes = super::deletion_batch(&ids, &tokens).unwrap();
        let mut r = Reader::new(bytes.as_slice(), "deletions").unwrap();
        assert_eq!(
            (r.header().party.as_str(), r.header().clk_bits),
            ("ehr", Some(128))
        );
        let mut rec = Record::default();
        let mut got = Vec::new();
        while r.next(&mut rec).unwrap() {
            assert!(rec.tokens.is_empty());
            got.push(rec.id.clone());
        }
        assert_eq!(got, ["a1", "b 2"]);
        // An id twice is refused before anything is sent.
        std::fs::write(&ids, "a1\na1\n").unwrap();
        let e = format!("{:#}", super::deletion_batch(&ids, &tokens).unwrap_err());
        assert!(e.contains("listed twice"), "{e}");
    }
}
