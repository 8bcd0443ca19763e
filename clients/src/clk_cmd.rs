//! `renketsu clk encode`: CLK Bloom-filter encodings compatible with clkhash 0.18.3.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use renketsu_linkage::clk::{ClkEncoder, ClkhashSchema};
use zeroize::Zeroizing;

use crate::input::{EncodingArg, open_csv};
use crate::output::PendingFile;

/// `renketsu clk …` subcommands.
#[derive(clap::Subcommand)]
pub enum ClkCommand {
    /// Encode each CSV row as a CLK with a clkhash v3 linkage schema: one base64 line per row,
    /// bit-identical to clkhash 0.18.3 for the features it shares (SPEC.md §7).
    #[command(long_about = "\
Encode each row of a CSV file as a CLK (cryptographic long-term key: a Bloom filter of the
row's q-grams, Schnell et al. 2009) with a clkhash v3 linkage schema, and write one base64 line
per input row, in clkhash's format (bitarray.tobytes(), big-endian bit order), so that anonlink
and clkhash users can compare renketsu with what they have.
Columns are matched to the schema's features by position, as clkhash does; the header must
name the features in order (--no-header-check to skip that check).
A row that cannot be encoded (wrong number of fields, a value the schema refuses) leaves an
empty line, so that line N is always row N, and is listed in OUT.rejects.csv with a reason.
Example:
  renketsu clk encode --clkhash-schema schema.json --secret-file secret.txt \\
      --input people.csv --out clks.txt")]
    Encode(EncodeArgs),
}

/// Arguments of `renketsu clk encode`.
#[derive(clap::Args)]
pub struct EncodeArgs {
    /// The clkhash v3 linkage schema (JSON).
    #[arg(long)]
    clkhash_schema: PathBuf,
    /// The shared secret, as text (clkhash passes it as UTF-8). Prefer --secret-file or the
    /// environment variable: command lines are visible to other users.
    #[arg(
        long,
        env = "RENKETSU_CLK_SECRET",
        hide_env_values = true,
        conflicts_with = "secret_file"
    )]
    secret: Option<String>,
    /// A file holding the shared secret (its content, without a trailing newline, is the secret).
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// Input CSV with a header row.
    #[arg(long)]
    input: PathBuf,
    /// Output file: one base64 CLK per input row.
    #[arg(long)]
    out: PathBuf,
    /// Input text encoding.
    #[arg(long, value_enum, default_value_t = EncodingArg::Auto)]
    encoding: EncodingArg,
    /// Do not require the header to name the schema's features in order.
    #[arg(long)]
    no_header_check: bool,
}

/// Runs `renketsu clk …`.
pub fn run(cmd: &ClkCommand) -> Result<()> {
    match cmd {
        ClkCommand::Encode(args) => encode(args),
    }
}

fn encode(args: &EncodeArgs) -> Result<()> {
    let secret: Zeroizing<Vec<u8>> = match (&args.secret, &args.secret_file) {
        (Some(s), None) => Zeroizing::new(s.as_bytes().to_vec()),
        (None, Some(p)) => {
            let mut bytes = Zeroizing::new(
                std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
            );
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            bytes
        }
        _ => bail!("give the shared secret with --secret-file, RENKETSU_CLK_SECRET or --secret"),
    };
    let text = std::fs::read_to_string(&args.clkhash_schema)
        .with_context(|| format!("cannot read {}", args.clkhash_schema.display()))?;
    let schema = ClkhashSchema::from_json(&text)
        .with_context(|| format!("invalid clkhash schema {}", args.clkhash_schema.display()))?;
    let encoder = ClkEncoder::new(&schema, &secret).context("cannot derive the CLK keys")?;
    let mut input = open_csv(&args.input, args.encoding)?;
    let features: Vec<&str> = encoder.feature_identifiers().collect();
    if !args.no_header_check && input.header != features {
        bail!(
            "{}: the header ({}) does not name the schema's features in order ({}); pass --no-header-check to match by position anyway",
            args.input.display(),
            input.header.join(", "),
            features.join(", ")
        );
    }
    let mut out = BufWriter::new(
        File::create(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?,
    );
    let rejects_name = format!(
        "{}.rejects.csv",
        args.out
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("clks")
    );
    let dir = args
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut rejects = PendingFile::create(dir, &rejects_name)?.csv();
    rejects.row(["row", "reason"])?;
    let mut rec = csv::ByteRecord::new();
    let (mut row, mut bad) = (0u64, 0u64);
    while input.next_row(&mut rec)? {
        row += 1;
        let fields: Option<Vec<std::borrow::Cow<'_, str>>> =
            rec.iter().map(|f| input.encoding.decode(f)).collect();
        let result = match &fields {
            None => Err("invalid_encoding".to_owned()),
            Some(f) => {
                let refs: Vec<&str> = f.iter().map(|c| c.as_ref()).collect();
                encoder.encode(&refs).map_err(|e| e.to_string())
            }
        };
        match result {
            Ok(bloom) => writeln!(out, "{}", B64.encode(bloom.to_clkhash_bytes()))?,
            Err(reason) => {
                writeln!(out)?;
                rejects.row([row.to_string(), reason])?;
                bad += 1;
            }
        }
    }
    out.flush()?;
    rejects.commit()?;
    eprintln!(
        "renketsu clk encode: {row} rows, {} encoded, {bad} rejected ({} bits each); wrote {}",
        row - bad,
        encoder.len_bits(),
        args.out.display()
    );
    Ok(())
}
