//! `renketsu normalize`: canonical forms or reject reasons of identifier values.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use renketsu_linkage::Normalizer;

use crate::input::{EncodingArg, open_csv};

/// Arguments of `renketsu normalize`.
#[derive(clap::Args)]
pub struct NormalizeArgs {
    /// Which normalizer: kana_name, kana_name_fuzzy, kanji_name, birth_date, sex,
    /// insurer_number, insured_symbol, insured_number, branch_number, care_insured_number,
    /// postal_code (also: text, digits, date, raw, legacy, digest).
    #[arg(long, value_parser = parse_kind)]
    kind: Normalizer,
    /// Values to normalize (or use --input and --column).
    #[arg(conflicts_with = "input")]
    values: Vec<String>,
    /// A CSV file whose --column values are normalized, one output line per data row.
    #[arg(long, requires = "column")]
    input: Option<PathBuf>,
    /// The column of --input.
    #[arg(long)]
    column: Option<String>,
    /// Encoding of --input.
    #[arg(long, value_enum, default_value_t = EncodingArg::Auto)]
    encoding: EncodingArg,
    /// "Today" as YYYY-MM-DD for refusing future dates (default: the current UTC date).
    #[arg(long)]
    today: Option<String>,
}

fn parse_kind(s: &str) -> Result<Normalizer, String> {
    Normalizer::from_name(s).ok_or_else(|| {
        let all: Vec<&str> = Normalizer::ALL.iter().map(|n| n.name()).collect();
        format!("unknown kind {s:?}; one of: {}", all.join(", "))
    })
}

fn line(
    out: &mut impl Write,
    kind: Normalizer,
    ctx: &renketsu_linkage::NormalizeContext,
    v: &str,
    buf: &mut String,
) -> Result<()> {
    // Tabs and line breaks inside a value would break the two-column output.
    let shown: String = v
        .chars()
        .map(|c| {
            if c == '\t' || c == '\n' || c == '\r' {
                ' '
            } else {
                c
            }
        })
        .collect();
    match kind.apply(v, ctx, buf) {
        Ok(()) => writeln!(out, "{shown}\t{buf}")?,
        Err(e) => writeln!(out, "{shown}\t!{}", e.code())?,
    }
    Ok(())
}

/// Runs the command.
pub fn run(args: &NormalizeArgs) -> Result<()> {
    let ctx = crate::today_or_now(args.today.as_deref())?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut buf = String::new();
    match (&args.input, &args.column) {
        (Some(path), Some(column)) => {
            let mut input = open_csv(path, args.encoding)?;
            let col = input.column(column, "--column")?;
            let mut rec = csv::ByteRecord::new();
            let mut row = 0u64;
            while input.next_row(&mut rec)? {
                row += 1;
                let value = rec
                    .get(col)
                    .and_then(|b| input.encoding.decode(b))
                    .with_context(|| {
                        format!(
                            "{}: data row {row} has no readable column {column:?}",
                            path.display()
                        )
                    })?;
                line(&mut out, args.kind, &ctx, &value, &mut buf)?;
            }
        }
        _ => {
            if args.values.is_empty() {
                bail!("give values to normalize, or --input FILE.csv --column NAME");
            }
            for v in &args.values {
                line(&mut out, args.kind, &ctx, v, &mut buf)?;
            }
        }
    }
    out.flush()?;
    Ok(())
}
