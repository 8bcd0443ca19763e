//! `renketsu link`: the command line's side of a link run: input files opened, rejects files
//! and outputs written atomically in the output directory, progress bars and log lines. The
//! linking itself is the core engine's ([`renketsu_linkage::engine`], SPEC.md §5).

use std::fs::File;
use std::io::{BufReader, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use renketsu_linkage::engine::{
    HolderInput, Keys, LinkOptions, LinkPlan, OutputFile, OutputSink, TruthPairs, random_pseudonyms,
};
use renketsu_linkage::ingest::{RejectSink, RowReject};
use renketsu_linkage::{NormalizeContext, ProjectSecret, Schema};

use crate::input::EncodingArg;
use crate::output::{CsvFile, PendingFile};
use crate::progress::CliObserver;
use crate::tokens_file;

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
    /// Print the plan and stop.
    pub explain: bool,
    /// Also write the Parquet copies of pairs, clusters and joined.
    pub parquet_out: bool,
}

/// Result of a link run, for the caller's message.
pub struct LinkOutcome {
    /// Cross-party record pairs written.
    pub links: u64,
    /// Clusters (including singletons).
    pub clusters: usize,
}

/// A rejects file (`row,id,reason,detail`, SPEC.md §3.3) written atomically.
pub(crate) struct RejectsFile(pub(crate) CsvFile);

impl RejectsFile {
    /// Creates `dir/name` (under a temporary name until committed) with its header row.
    pub(crate) fn create(dir: &Path, name: &str) -> Result<Self> {
        let mut f = PendingFile::create(dir, name)?.csv();
        f.row(["row", "id", "reason", "detail"])?;
        Ok(Self(f))
    }

    /// Renames the file into place.
    pub(crate) fn commit(self) -> Result<PathBuf> {
        self.0.commit()
    }
}

impl RejectSink for RejectsFile {
    fn reject(
        &mut self,
        row: u64,
        id: &str,
        reason: RowReject,
        detail: &str,
    ) -> std::io::Result<()> {
        self.0
            .row([row.to_string().as_str(), id, reason.code(), detail])
            .map_err(std::io::Error::other)
    }
}

/// The output directory as the engine's sink: files written under a temporary name and
/// renamed into place when complete.
struct OutputDir<'a>(&'a Path);

impl OutputFile for PendingFile {
    fn commit(self: Box<Self>) -> std::io::Result<()> {
        PendingFile::commit(*self)
            .map(|_| ())
            .map_err(std::io::Error::other)
    }
}

impl OutputSink for OutputDir<'_> {
    fn create(&mut self, name: &str) -> std::io::Result<Box<dyn OutputFile>> {
        Ok(Box::new(
            PendingFile::create(self.0, name).map_err(std::io::Error::other)?,
        ))
    }

    fn remove(&mut self, name: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.0.join(name)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }
}

/// Runs the whole link job (`None`: `explain` printed the plan and nothing ran).
pub fn run(job: &LinkJob<'_>) -> Result<Option<LinkOutcome>> {
    if job.inputs.len() < 2 {
        bail!("link needs at least two --input files, one per data holder");
    }
    let keys = match job.secret {
        Some(secret) => Keys::Hmac { secret },
        None => Keys::TokenFiles,
    };
    let mut options = LinkOptions::new(job.project, job.ctx.today);
    options.id_column = job.id_column.map(str::to_owned);
    options.threshold = job.threshold;
    options.duplicates = job.duplicates.clone();
    options.token_mode = job.token_mode.clone();
    options.schema_path = job.schema_path.display().to_string();
    if let Some(path) = job.truth {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let (pairs, multi) =
            renketsu_linkage::eval::read_pairs(BufReader::new(file), &path.display().to_string())?;
        options.truth = Some(TruthPairs {
            pairs: pairs.into_iter().collect(),
            multi,
        });
    }
    if job.explain {
        let plan = LinkPlan::new(job.schema, keys, options)?;
        let names: Vec<&str> = job.inputs.iter().map(|i| i.party.as_str()).collect();
        print!("{plan}");
        println!("  holders: {}", names.join(", "));
        return Ok(None);
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
    // Parquet copies of an earlier run would not match this run's CSVs.
    for name in ["pairs.parquet", "clusters.parquet", "joined.parquet"] {
        match std::fs::remove_file(job.out.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove the previous {name}")),
        }
    }
    #[cfg(not(feature = "parquet"))]
    if job.parquet_out {
        bail!(
            "--parquet-out: this renketsu was built without Parquet support (cargo feature `parquet`)"
        );
    }
    let plan = LinkPlan::new(job.schema, keys, options)?;

    let mut rejects: Vec<RejectsFile> = Vec::new();
    if job.secret.is_some() {
        for spec in &job.inputs {
            rejects.push(RejectsFile::create(
                job.out,
                &format!("rejects-{}.csv", spec.party),
            )?);
        }
    }
    let mut inputs = Vec::with_capacity(job.inputs.len());
    let mut sinks = rejects.iter_mut();
    for spec in &job.inputs {
        let input = match job.secret {
            Some(_) => HolderInput::csv(
                &spec.party,
                crate::input::open_csv(&spec.path, job.encoding)?,
                sinks.next().expect("one rejects file per input"),
            ),
            None => HolderInput::tokens(
                &spec.party,
                tokens_file::open_boxed(&spec.path)?,
                &spec.path.display().to_string(),
            ),
        };
        inputs.push(input);
    }
    let mut observer = CliObserver::new("renketsu link", job.quiet);
    let mut linked = plan.run(inputs, &mut observer)?;
    // Pseudonyms: 128 random bits per cluster from the OS-seeded CSPRNG, unique.
    let pids = random_pseudonyms(linked.clusters(), &mut rand::rng());
    let summary = linked.write(&pids, &mut OutputDir(job.out))?;
    for r in rejects {
        r.commit()?;
    }
    #[cfg(feature = "parquet")]
    if job.parquet_out {
        for name in ["pairs", "clusters", "joined"] {
            crate::parquet_input::csv_to_parquet(
                &job.out.join(format!("{name}.csv")),
                &job.out.join(format!("{name}.parquet")),
            )?;
        }
    }
    let summary_json = summary.to_json();
    if summary.scoring.is_some() {
        let mut r = PendingFile::create(job.out, "report.html")?;
        r.writer
            .write_all(renketsu_linkage::report::render(&summary).as_bytes())?;
        r.commit()?;
    }
    let mut f = PendingFile::create(job.out, "summary.json")?;
    serde_json::to_writer_pretty(&mut f.writer, &summary_json)?;
    f.writer.write_all(b"\n")?;
    f.commit()?;
    Ok(Some(LinkOutcome {
        links: summary.links,
        clusters: summary.clusters.total,
    }))
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
