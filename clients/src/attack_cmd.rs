//! `renketsu attack`: the attack self-test of a curious linkage unit (SPEC.md §7.5). Argument
//! parsing, file reading and printing only; the attack is `renketsu_linkage::attack`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use renketsu_linkage::attack::{self, AttackReport, Model, Plain, PlainMaker, View};
use renketsu_linkage::clk::{Bloom, ClkhashSchema};
use renketsu_linkage::token_file::{Reader, Record};
use renketsu_linkage::{NormalizeContext, Schema};

use crate::input::{EncodingArg, open_csv};

/// Arguments of `renketsu attack`.
#[derive(clap::Args)]
pub struct AttackArgs {
    /// The linkage schema of the token files (what the LU holds).
    #[arg(
        long,
        required_unless_present = "clkhash_schema",
        conflicts_with = "clkhash_schema"
    )]
    schema: Option<PathBuf>,
    /// Instead of --schema: the clkhash v3 schema of --clks files (`renketsu clk encode`).
    #[arg(long)]
    clkhash_schema: Option<PathBuf>,
    /// A token file the LU received (repeat for every holder).
    #[arg(long, requires = "schema")]
    tokens: Vec<PathBuf>,
    /// A `renketsu clk encode` output (one base64 CLK per line; repeat for every holder).
    #[arg(long, requires = "clkhash_schema")]
    clks: Vec<PathBuf>,
    /// The attacker's reference plaintext (CSV with the holders' columns).
    #[arg(long)]
    reference: PathBuf,
    /// The holders' plaintext, one CSV per --tokens / --clks in the same order, to score the
    /// attack (never used by it). Token-file records are matched by id, clks by row.
    #[arg(long)]
    truth: Vec<PathBuf>,
    /// "Today" for normalizing the reference (default: the first token file's, else today).
    #[arg(long)]
    today: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn read_csv(path: &Path, mut row: impl FnMut(&[String], &[&str]) -> Result<()>) -> Result<()> {
    let mut input = open_csv(path, EncodingArg::Auto)?;
    let header = input.header.clone();
    let mut rec = csv::ByteRecord::new();
    while input.next_row(&mut rec)? {
        let fields: Option<Vec<std::borrow::Cow<'_, str>>> =
            rec.iter().map(|f| input.encoding.decode(f)).collect();
        let Some(fields) = fields else {
            bail!("{}: a row is not valid text", path.display());
        };
        let refs: Vec<&str> = fields.iter().map(|c| c.as_ref()).collect();
        row(&header, &refs)?;
    }
    Ok(())
}

fn plains(schema: &Schema, ctx: NormalizeContext, path: &Path) -> Result<Vec<(String, Plain)>> {
    let mut maker: Option<(PlainMaker, usize)> = None;
    let mut out = Vec::new();
    read_csv(path, |header, row| {
        if maker.is_none() {
            let id = header
                .iter()
                .position(|h| *h == schema.id_column)
                .with_context(|| format!("{} has no id column", path.display()))?;
            maker = Some((PlainMaker::new(schema, ctx, header), id));
        }
        let (m, id) = maker.as_mut().expect("set above");
        out.push((row.get(*id).unwrap_or(&"").to_string(), m.make(row)));
        Ok(())
    })?;
    Ok(out)
}

fn clkhash_plains(model: &Model, path: &Path) -> Result<Vec<Plain>> {
    let mut out = Vec::new();
    let mut cols: Option<Vec<Option<usize>>> = None;
    read_csv(path, |header, row| {
        let cols = cols.get_or_insert_with(|| {
            model
                .slots
                .iter()
                .map(|s| header.iter().position(|h| h == s))
                .collect()
        });
        out.push(Plain {
            values: cols
                .iter()
                .map(|c| c.and_then(|c| row.get(c)).map(|v| (*v).to_owned()))
                .collect(),
            preimages: Vec::new(),
        });
        Ok(())
    })?;
    Ok(out)
}

/// Runs `renketsu attack`.
pub fn run(args: &AttackArgs) -> Result<()> {
    if !args.truth.is_empty() && args.truth.len() != args.tokens.len() + args.clks.len() {
        bail!("give one --truth per --tokens / --clks file, in the same order");
    }
    let (model, view, reference, truth) = if let Some(path) = &args.schema {
        if args.tokens.is_empty() {
            bail!("give at least one --tokens file");
        }
        let schema = crate::load_schema(path)?;
        let model = Model::from_schema(&schema);
        let mut view = View::default();
        let mut clks: Vec<Vec<u64>> = Vec::new();
        let mut ids: Vec<(usize, String)> = Vec::new();
        let mut today = args.today.clone();
        for (fi, p) in args.tokens.iter().enumerate() {
            let file = File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
            let mut reader = Reader::new(BufReader::new(file), &p.display().to_string())?;
            let h = reader.header();
            if h.schema.name != schema.name || h.recipes.len() != schema.recipes.len() {
                bail!(
                    "{}: made with schema {:?}, not {:?}",
                    p.display(),
                    h.schema.name,
                    schema.name
                );
            }
            today.get_or_insert_with(|| h.today.clone());
            let mut rec = Record::default();
            while reader.next(&mut rec)? {
                view.tokens
                    .push(rec.tokens.iter().map(|(r, t)| (*r as u32, *t)).collect());
                if let Some(c) = rec.clk.take() {
                    clks.push(c);
                }
                ids.push((fi, rec.id.clone()));
            }
        }
        if !clks.is_empty() {
            if clks.len() != view.tokens.len() {
                bail!("some token files carry CLKs and some do not");
            }
            view.clks = Some(clks);
        }
        let ctx = crate::today_or_now(today.as_deref())?;
        let reference: Vec<Plain> = plains(&schema, ctx, &args.reference)?
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        let truth = if args.truth.is_empty() {
            None
        } else {
            let mut by_id: Vec<HashMap<String, Plain>> = Vec::new();
            for t in &args.truth {
                by_id.push(plains(&schema, ctx, t)?.into_iter().collect());
            }
            let mut out = Vec::with_capacity(ids.len());
            for (fi, id) in &ids {
                let Some(p) = by_id[*fi].remove(id) else {
                    bail!(
                        "{}: a token-file record id has no row",
                        args.truth[*fi].display()
                    );
                };
                out.push(p);
            }
            Some(out)
        };
        (model, view, reference, truth)
    } else {
        let path = args
            .clkhash_schema
            .as_ref()
            .expect("clap requires one schema");
        if args.clks.is_empty() {
            bail!("give at least one --clks file");
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let cs = ClkhashSchema::from_json(&text)
            .with_context(|| format!("invalid clkhash schema {}", path.display()))?;
        let model = Model::from_clkhash(&cs)?;
        let bits = model.clk.as_ref().map_or(0, |c| c.bits);
        let mut clks = Vec::new();
        let mut truth_rows: Vec<Plain> = Vec::new();
        for (fi, p) in args.clks.iter().enumerate() {
            let file = File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
            let rows = args
                .truth
                .get(fi)
                .map(|t| clkhash_plains(&model, t))
                .transpose()?;
            for (line_no, line) in BufReader::new(file).lines().enumerate() {
                let line = line?;
                if line.is_empty() {
                    continue; // a row clk encode rejected
                }
                let bytes = B64
                    .decode(line.trim())
                    .with_context(|| format!("{} line {}: not base64", p.display(), line_no + 1))?;
                if bytes.len() * 8 != bits {
                    bail!(
                        "{} line {}: {} bits, the schema {bits}",
                        p.display(),
                        line_no + 1,
                        bytes.len() * 8
                    );
                }
                // clkhash's byte layout (most significant bit first) back to bit positions, so
                // that a token's bits are where the hashing put them.
                let filter = Bloom::from_clkhash_bytes(&bytes, bits).with_context(|| {
                    format!(
                        "{} line {}: not a {bits}-bit filter",
                        p.display(),
                        line_no + 1
                    )
                })?;
                clks.push(filter.words().to_vec());
                if let Some(rows) = &rows {
                    let Some(r) = rows.get(line_no) else {
                        bail!(
                            "{} has fewer rows than {}",
                            args.truth[fi].display(),
                            p.display()
                        );
                    };
                    truth_rows.push(r.clone());
                }
            }
        }
        let view = View {
            tokens: Vec::new(),
            clks: Some(clks),
        };
        let reference = clkhash_plains(&model, &args.reference)?;
        let truth = (!args.truth.is_empty()).then_some(truth_rows);
        (model, view, reference, truth)
    };
    let report = attack::run(&model, &view, &reference, truth.as_deref())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(())
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".to_owned(), |v| format!("{:.2} %", 100.0 * v))
}

fn print_text(r: &AttackReport) {
    println!(
        "records {} (reference {}); re-identified ({}): {} = {}",
        r.records,
        r.reference_records,
        r.identity.join(" + "),
        r.reidentified.map_or("-".to_owned(), |v| v.to_string()),
        pct(r.reidentified_share)
    );
    for (name, a) in &r.per_attribute {
        println!(
            "  attribute {name}: guessed {}, correct {}",
            a.guessed,
            pct(a.correct_share)
        );
    }
    for (name, s) in &r.per_recipe {
        println!(
            "  recipe {name}{}: {} distinct tokens, {} labelled, records labelled {}, correct {}",
            if s.block { " (block)" } else { "" },
            s.distinct_tokens,
            s.labelled_tokens,
            pct(Some(s.labelled_share)),
            pct(s.correct_share)
        );
    }
    if let Some(c) = &r.clk {
        println!(
            "  clk: {} columns, {} complementary pairs, {} mined, {} cliques, {} aligned ({} correct)",
            c.columns,
            c.complementary_pairs,
            c.mined_columns,
            c.cliques,
            c.aligned,
            c.aligned_correct.map_or("-".to_owned(), |v| v.to_string())
        );
        for (f, v) in &c.token_recovery {
            println!("    token recovery {f}: {}", pct(Some(*v)));
        }
    }
}
