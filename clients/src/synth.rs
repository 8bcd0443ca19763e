//! `renketsu synth`: the command line of the `renketsu-synth` generator (`synth/`): its flags,
//! a progress bar and the one-line summary. The generator, its model and its files are
//! documented in that crate.

use std::path::PathBuf;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use renketsu_synth::{SynthOptions, SynthReport};

/// Options of `renketsu synth` (defaults: `renketsu_synth::SynthOptions::new`).
#[derive(clap::Args, Debug, Clone)]
pub struct SynthArgs {
    /// Output directory (created if missing). Writes <PREFIX>_a.csv, <PREFIX>_b.csv, …,
    /// <PREFIX>_truth.csv and, with --ndb-view, <PREFIX>_<LETTER>_ndb.csv; same-named files are
    /// replaced.
    #[arg(long)]
    pub out: PathBuf,
    /// File name prefix.
    #[arg(long, default_value = "synth")]
    pub prefix: String,
    /// Number of data holders, named a, b, c, … (1-26).
    #[arg(long, default_value_t = 2)]
    pub holders: usize,
    /// Records per holder: one number for every holder, or one per holder separated by commas
    /// (e.g. 100000,20000).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10000",
        value_name = "N[,N…]"
    )]
    pub records: Vec<u64>,
    /// Fraction (0-1) of each later holder's records whose person also appears in the first
    /// holder (a); capped by a's size. Later holders share persons with each other only through
    /// a, each choosing independently. With 2 holders the true pairs are round(F × N_b).
    #[arg(long, default_value_t = 0.5)]
    pub overlap: f64,
    /// Seed. The same seed and flags give byte-identical files.
    #[arg(long, default_value_t = 20261122)]
    pub seed: u64,
    /// Probability (0-1) that a person's insurance card (a family's shared card moves as one) is
    /// replaced between one holder and the next: new insurer number, 記号 and 番号.
    #[arg(long, default_value_t = 0.11)]
    pub insurer_change_rate: f64,
    /// Multiplier of every corruption and format-variation rate (0 = clean canonical values,
    /// 1 = the defaults, close to ../shared/data/jp_ins; each rate is capped at 1). Holders b, d, …
    /// are receipt-style: twice the error rates of a, c, … and mostly full-width numbers.
    #[arg(long, default_value_t = 1.0)]
    pub corruption: f64,
    /// Also write <PREFIX>_<LETTER>_ndb.csv: holder LETTER as a hash-only public database sees it
    /// (id, id1, id1_branch, id4 as SHA-256 hex of the legacy preimages, then content columns).
    #[arg(long, value_name = "LETTER")]
    pub ndb_view: Option<String>,
    /// Holder LETTER writes names in one field, as claims data carry 氏名: columns full_name and
    /// full_name_kana (family and given name joined by a full-width space, an ASCII space or
    /// nothing) instead of last_name, first_name, last_name_kana, first_name_kana
    #[arg(long, value_name = "LETTER")]
    pub one_name_field: Option<String>,
    /// "Today" (YYYY-MM-DD): ages (0-100) and service months are relative to it.
    #[arg(long, default_value = "2026-11-22")]
    pub today: String,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

impl SynthArgs {
    /// The generator's options.
    fn options(&self) -> SynthOptions {
        let mut o = SynthOptions::new(&self.out);
        o.prefix.clone_from(&self.prefix);
        o.holders = self.holders;
        o.records.clone_from(&self.records);
        o.overlap = self.overlap;
        o.seed = self.seed;
        o.insurer_change_rate = self.insurer_change_rate;
        o.corruption = self.corruption;
        o.ndb_view.clone_from(&self.ndb_view);
        o.one_name_field.clone_from(&self.one_name_field);
        o.today.clone_from(&self.today);
        o
    }
}

/// Generates the files (with a progress bar on stderr unless `--quiet`) and returns the
/// one-line summary.
pub fn run(args: &SynthArgs) -> Result<String> {
    let pb = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
    };
    pb.set_style(
        ProgressStyle::with_template(
            "synth {prefix} [{bar:40}] {pos}/{len} rows {per_sec} eta {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    let report = renketsu_synth::run_with_progress(&args.options(), &mut |party, done, total| {
        pb.set_length(total);
        pb.set_prefix(party.to_string());
        pb.set_position(done);
    })?;
    pb.finish_and_clear();
    Ok(summary(&report))
}

/// `renketsu synth: a 100 rows, b 100 rows (50 also in a, 6 with a new card); … wrote …`.
fn summary(report: &SynthReport) -> String {
    let mut s = String::from("renketsu synth:");
    for (i, h) in report.holders.iter().enumerate() {
        s += &format!(
            "{}{} {} rows",
            [" ", ", "][usize::from(i > 0)],
            h.party,
            h.records
        );
        if i > 0 {
            s += &format!(
                " ({} also in a, {} with a new card)",
                h.shared_with_first, h.insurer_changed
            );
        }
    }
    s += &format!(
        "; {} persons, {} true pairs; wrote ",
        report.persons, report.true_pairs
    );
    let files = report
        .holders
        .iter()
        .map(|h| &h.path)
        .chain([&report.truth])
        .chain(&report.ndb);
    let names: Vec<String> = files.map(|p| p.display().to_string()).collect();
    s += &names.join(" ");
    s
}
