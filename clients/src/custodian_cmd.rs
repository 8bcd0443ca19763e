//! `renketsu custodian …` (run the key custodian) and the admin commands of `renketsu keys …`
//! that talk to it (SPEC.md §8).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Subcommand, ValueEnum};
use renketsu_custodian::config::CustodianConfig;
use renketsu_custodian::server::{self, TlsMaterial};
use renketsu_custodian::service::ServiceSettings;
use renketsu_custodian::store::Store;
use renketsu_keys::lifecycle::SystemClock;
use renketsu_keys::seal::KekRing;
use renketsu_protocol::v1;

use renketsu_client::custodian::{EvalMode, NewProject, custodian_recipe_name};

use crate::custodian_conn::{CustodianArgs, client_error};

#[derive(Subcommand)]
pub(crate) enum CustodianCommand {
    /// Run the key custodian (gRPC over mutual TLS) until SIGINT or SIGTERM.
    #[command(long_about = "\
Run the key custodian: gRPC over mutual TLS, keys sealed in SQLite or PostgreSQL, every call \
audited. Stops gracefully on SIGINT (Ctrl-C) or SIGTERM: no new connections, in-flight calls \
finish. The key-encryption key comes from RENKETSU_KEK if set, else from the config's kek_file.
Example:
  renketsu custodian init-config --pki pki --out custodian.toml
  renketsu custodian serve --config custodian.toml")]
    Serve {
        /// Configuration file (TOML; see `renketsu custodian init-config`).
        #[arg(long, env = "RENKETSU_CUSTODIAN_CONFIG")]
        config: PathBuf,
    },
    /// Write a configuration file and a new key-encryption key for a development custodian.
    #[command(long_about = "\
Write --out (TOML) for a custodian that uses the certificates of `renketsu pki dev-init` and \
a SQLite database next to the config, and a new key-encryption key file `kek` (mode 0600) \
beside it unless one exists. Never overwrites the config.")]
    InitConfig {
        /// Directory made by `renketsu pki dev-init`.
        #[arg(long)]
        pki: PathBuf,
        /// Configuration file to write.
        #[arg(long)]
        out: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7443")]
        listen: String,
        /// Database URL (default: sqlite://custodian.db beside the config).
        #[arg(long)]
        database: Option<String>,
    },
}

pub(crate) fn run(command: CustodianCommand) -> Result<()> {
    match command {
        CustodianCommand::Serve { config } => serve(&config),
        CustodianCommand::InitConfig {
            pki,
            out,
            listen,
            database,
        } => init_config(&pki, &out, &listen, database),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The KEK ring: RENKETSU_KEK if set, else the config's kek_file.
fn load_keks(config: &CustodianConfig) -> Result<KekRing> {
    if let Some(ring) = KekRing::from_env() {
        return ring.context("RENKETSU_KEK");
    }
    let Some(path) = &config.kek_file else {
        bail!("no key-encryption key: set RENKETSU_KEK or kek_file in the config");
    };
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read kek_file {}", path.display()))?,
    );
    KekRing::parse(&text).with_context(|| format!("kek_file {}", path.display()))
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    eprintln!("renketsu: shutting down (in-flight calls finish first)");
}

fn serve(path: &Path) -> Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let config = CustodianConfig::load(path)?;
    let keks = load_keks(&config)?;
    let tls = TlsMaterial::load(&config.tls.cert, &config.tls.key, &config.tls.client_ca)?;
    let settings = ServiceSettings {
        max_batch: config.max_batch,
        quota_slack: config.quota_slack,
    };
    runtime()?.block_on(async move {
        let store = Store::connect(&config.database, keks)
            .await
            .with_context(|| {
                format!(
                    "cannot open the store {}",
                    renketsu_custodian::config::redact_url(&config.database)
                )
            })?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        // One line on stdout, flushed, so that scripts and tests can wait for it and read the
        // port when listen uses port 0.
        println!("renketsu custodian: listening on {addr}");
        std::io::stdout().flush()?;
        let closer = store.clone();
        server::run(
            listener,
            &tls,
            store,
            Arc::new(SystemClock),
            settings,
            shutdown_signal(),
        )
        .await?;
        // Return every connection (SQLite checkpoints its WAL when the last one closes).
        match &closer {
            Store::Sqlite(s) => s.close().await,
            Store::Postgres(s) => s.close().await,
        }
        Ok(())
    })
}

fn write_new(path: &Path, contents: &[u8], secret: bool) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(contents)?;
    f.sync_all()?;
    Ok(())
}

fn init_config(pki: &Path, out: &Path, listen: &str, database: Option<String>) -> Result<()> {
    let pki = pki
        .canonicalize()
        .with_context(|| format!("--pki {}", pki.display()))?;
    for f in ["custodian.pem", "custodian.key", "ca.pem"] {
        if !pki.join(f).is_file() {
            bail!(
                "--pki {}: {f} is missing (run `renketsu pki dev-init --out {}` first)",
                pki.display(),
                pki.display()
            );
        }
    }
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let kek_path = dir.join("kek");
    if kek_path.exists() {
        eprintln!(
            "keeping the existing key-encryption key {}",
            kek_path.display()
        );
    } else {
        let ring = KekRing::generate(&mut rand::rng());
        let mut text = zeroize::Zeroizing::new(String::new());
        for k in ring.keks() {
            text.push_str(&k.line());
            text.push('\n');
        }
        write_new(&kek_path, text.as_bytes(), true)?;
        eprintln!(
            "wrote key-encryption key {} (mode 0600): back it up apart from the database",
            kek_path.display()
        );
    }
    let database = database.unwrap_or_else(|| "sqlite://custodian.db".to_owned());
    let q = |p: &Path| toml_string(&p.display().to_string());
    let text = format!(
        "# renketsu key custodian (see `renketsu custodian serve --help`)\n\
         listen = {listen}\n\
         database = {database}\n\
         kek_file = \"kek\"\n\
         max_batch = {max_batch}\n\
         quota_slack = {slack}\n\
         \n\
         [tls]\n\
         cert = {cert}\n\
         key = {key}\n\
         client_ca = {ca}\n",
        listen = toml_string(listen),
        database = toml_string(&database),
        max_batch = renketsu_custodian::config::DEFAULT_MAX_BATCH,
        slack = renketsu_custodian::config::DEFAULT_QUOTA_SLACK,
        cert = q(&pki.join("custodian.pem")),
        key = q(&pki.join("custodian.key")),
        ca = q(&pki.join("ca.pem")),
    );
    CustodianConfig::parse(&text, out).context("generated config does not parse")?;
    write_new(out, text.as_bytes(), false)?;
    println!("wrote {}; start it with:", out.display());
    println!("  renketsu custodian serve --config {}", out.display());
    Ok(())
}

fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ------------------------------------------------------------------ admin commands

/// RFC 9497 mode of a project.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum ModeArg {
    /// Base OPRF: no proofs.
    Oprf,
    /// Verifiable OPRF: one DLEQ proof per batch, checked by the holder.
    Voprf,
}

#[derive(Subcommand)]
pub(crate) enum AdminCommand {
    /// Create a project on the custodian: one OPRF key (epoch 1) per recipe, one CLK key per
    /// field.
    CreateProject {
        /// Project name.
        #[arg(long)]
        project: String,
        /// Take every recipe (`name/vN`), every `[clk]` field and every field a `[scoring]` Dice
        /// comparison encodes from this linkage schema, the one the holders will tokenize with
        /// (in addition to any --recipe / --clk-field).
        #[arg(long, required_unless_present = "recipes")]
        schema: Option<PathBuf>,
        /// A recipe name, e.g. id4-kana-dob-sex/v1 (repeat for several).
        #[arg(long = "recipe")]
        recipes: Vec<String>,
        /// A CLK field name (repeat for several).
        #[arg(long = "clk-field")]
        clk_fields: Vec<String>,
        /// Party name of the project's linkage unit (its certificate's Common Name).
        #[arg(long)]
        linkage_unit: String,
        /// RFC 9497 mode every holder of the project uses.
        #[arg(long, value_enum, default_value_t = ModeArg::Voprf)]
        mode: ModeArg,
        #[command(flatten)]
        conn: CustodianArgs,
    },
    /// Enrol a data holder in a project; its quota is declared records × the custodian's slack
    /// per recipe and epoch.
    Enrol {
        /// Project.
        #[arg(long)]
        project: String,
        /// The holder's party name (its certificate's Common Name).
        #[arg(long)]
        party: String,
        /// Records the holder will tokenize.
        #[arg(long)]
        declared_records: u64,
        #[command(flatten)]
        conn: CustodianArgs,
    },
    /// Rotate a recipe's key: a new epoch becomes active, the previous one is retired.
    Rotate {
        /// Project.
        #[arg(long)]
        project: String,
        /// Recipe.
        #[arg(long)]
        recipe: String,
        #[command(flatten)]
        conn: CustodianArgs,
    },
    /// Revoke one epoch's key for good: no evaluations, no re-keying deltas.
    Revoke {
        /// Project.
        #[arg(long)]
        project: String,
        /// Recipe.
        #[arg(long)]
        recipe: String,
        /// Epoch to revoke.
        #[arg(long)]
        epoch: u64,
        #[command(flatten)]
        conn: CustodianArgs,
    },
}

fn hex32(b: &[u8]) -> String {
    hex::encode(b)
}

fn print_project(p: &v1::Project) {
    let mode = v1::EvaluationMode::try_from(p.mode)
        .map_or("?", |m| m.as_str_name())
        .trim_start_matches("EVALUATION_MODE_");
    println!(
        "project {}  mode {}  linkage unit {}",
        p.name,
        mode,
        if p.linkage_unit.is_empty() {
            "(none)"
        } else {
            &p.linkage_unit
        }
    );
    for r in &p.recipes {
        if r.epoch == 0 {
            println!("  recipe {}  no active epoch", r.recipe);
        } else {
            println!(
                "  recipe {}  epoch {}  public key {}",
                r.recipe,
                r.epoch,
                hex32(&r.public_key)
            );
        }
    }
    if !p.clk_fields.is_empty() {
        println!("  clk fields {}", p.clk_fields.join(", "));
    }
    for h in &p.holders {
        println!(
            "  holder {}  declared {}  quota {} per recipe and epoch",
            h.party, h.declared_records, h.evaluation_quota
        );
    }
}

pub(crate) fn admin(command: AdminCommand) -> Result<()> {
    runtime()?.block_on(async move {
        match command {
            AdminCommand::CreateProject {
                project,
                schema,
                mut recipes,
                mut clk_fields,
                linkage_unit,
                mode,
                conn,
            } => {
                if let Some(path) = schema {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    let schema = renketsu_linkage::Schema::from_toml(&text)
                        .with_context(|| format!("{}", path.display()))?;
                    for r in &schema.recipes {
                        let name = custodian_recipe_name(&r.name, r.version);
                        if !recipes.contains(&name) {
                            recipes.push(name);
                        }
                    }
                    for f in schema.clk.iter().flat_map(|c| &c.features) {
                        let name = &schema.fields[f.field].name;
                        if !clk_fields.contains(name) {
                            clk_fields.push(name.clone());
                        }
                    }
                    // The per-comparison CLKs of [scoring] use the same field keys
                    // (SPEC.md §5.5, version 2).
                    for name in renketsu_linkage::score::ComparisonEncoder::key_fields(&schema) {
                        if !clk_fields.contains(&name) {
                            clk_fields.push(name);
                        }
                    }
                }
                let mode = match mode {
                    ModeArg::Oprf => EvalMode::Oprf,
                    ModeArg::Voprf => EvalMode::Voprf,
                };
                let p = conn
                    .connect()?
                    .create_project(NewProject {
                        project,
                        recipes,
                        clk_fields,
                        mode,
                        linkage_unit,
                    })
                    .await
                    .map_err(client_error)?;
                print_project(&p);
            }
            AdminCommand::Enrol {
                project,
                party,
                declared_records,
                conn,
            } => {
                let h = conn
                    .connect()?
                    .enrol_holder(&project, &party, declared_records)
                    .await
                    .map_err(client_error)?;
                println!(
                    "enrolled {} in {project}: {} records declared, quota {} evaluations per recipe and epoch",
                    h.party, h.declared_records, h.evaluation_quota
                );
            }
            AdminCommand::Rotate {
                project,
                recipe,
                conn,
            } => {
                let r = conn
                    .connect()?
                    .rotate_epoch(&project, &recipe)
                    .await
                    .map_err(client_error)?;
                println!(
                    "{project} {recipe}: epoch {} active (public key {}); epoch {} retired",
                    r.epoch,
                    hex32(&r.public_key),
                    r.previous_epoch
                );
            }
            AdminCommand::Revoke {
                project,
                recipe,
                epoch,
                conn,
            } => {
                let r = conn
                    .connect()?
                    .revoke_epoch(&project, &recipe, epoch)
                    .await
                    .map_err(client_error)?;
                println!("{project} {recipe}: epoch {} revoked", r.epoch);
            }
        }
        Ok(())
    })
}

/// `renketsu keys list --custodian …`: every project on the custodian.
pub(crate) fn list_remote(conn: &CustodianArgs) -> Result<()> {
    runtime()?.block_on(async move {
        let projects = conn
            .connect()?
            .list_projects()
            .await
            .map_err(client_error)?;
        if projects.is_empty() {
            println!("no projects");
        }
        for p in &projects {
            print_project(p);
        }
        Ok(())
    })
}
