//! renketsu-synth: a seeded generator of synthetic Japanese person records for N data holders,
//! with overlap, insurance identifiers, realistic corruptions and ground truth; the library
//! behind `renketsu synth` (the command line only parses its flags into [`SynthOptions`] and
//! prints the [`SynthReport`] of [`run`]).
//!
//! **An independent oracle.** This crate deliberately depends on no other renketsu crate: it
//! re-implements the insurer-number check digit ([`insurer_check_digit`]), the Japanese era
//! (和暦) calendar and date formats, kana variants (half-width, hiragana, small and voiced kana,
//! long vowels) and the NDB digest preimages itself instead of calling the core's normalizers
//! (`renketsu-linkage`). Its files are the ground truth the core's normalization, tokens and
//! linkage are tested against; a generator that shared the core's code would agree with the
//! core's bugs (a wrong era boundary would be written and read back the same wrong way, and
//! the tests would pass), so the two are written separately from the published rules and each
//! checks the other.
//!
//! Model. A population of persons is addressed by index `p`; persons come in blocks of four
//! (`p / 4`), whose first 1-4 members form a household (single, couple, parents and children,
//! single parent; some twins) sharing surname, address and one insurance card (same insurer,
//! 記号 and 番号, 枝番 `00`, `01`, …); the rest of a block are unrelated people. People aged 75+
//! hold their own 後期高齢者 card. Everything about person `p` is derived from `(seed, p)`, and
//! everything about holder `i`'s record of `p` from `(seed, i, p)`, with a counter-based RNG, so
//! nothing is collected: holders are written row by row and memory does not grow with N.
//!
//! Holders. Holder `a` holds persons `0..N_a`. A later holder `i` holds `round(overlap × N_i)`
//! (at most `N_a`) persons of `a`, chosen as whole households in a pseudo-random order, and
//! `N_i − that` persons of its own that no other holder has. Later holders therefore share
//! persons with each other only through `a`, independently. Row order and ids (`0..N_i`) are a
//! keyed permutation of each holder's records, so neither reveals matches.
//!
//! Insurer changes. Going from holder `i − 1` to `i`, each card (a family's shared card moves as
//! one) is replaced with probability `--insurer-change-rate` by a card with a different insurer
//! number, so about 11 % of `a`'s persons have a new card in `b`, about 21 % in `c`.
//!
//! ```no_run
//! // renketsu synth --out data --holders 3 --records 100000 --ndb-view b
//! let mut options = renketsu_synth::SynthOptions::new("data");
//! options.holders = 3;
//! options.records = vec![100_000];
//! options.ndb_view = Some("b".into());
//! let report = renketsu_synth::run(&options)?;
//! assert_eq!(report.holders.len(), 3);
//! # Ok::<(), renketsu_synth::SynthError>(())
//! ```

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;

/// Header of every holder file: the `jp_ins` identifier columns, then content columns.
pub const HEADER: &str = "id,last_name,first_name,last_name_kana,first_name_kana,sex,birth_date,postcode,\
    prefecture,city,insurer_number,insured_symbol,insured_number,branch,care_insured_number,\
    service_ym,claim_count,main_diagnosis,total_points";
/// Header of a holder that writes names in one field (`one_name_field`): 氏名 and 氏名カナ
/// as `full_name` and `full_name_kana` in place of the four split name columns.
pub const HEADER_ONE_NAME_FIELD: &str = "id,full_name,full_name_kana,sex,birth_date,postcode,\
    prefecture,city,insurer_number,insured_symbol,insured_number,branch,care_insured_number,\
    service_ym,claim_count,main_diagnosis,total_points";
/// Header of the NDB-style hash-only view.
pub const NDB_HEADER: &str =
    "id,id1,id1_branch,id4,service_ym,claim_count,main_diagnosis,total_points";

/// Options of a run; [`SynthOptions::new`] gives the defaults of `renketsu synth`. Each field
/// is the command-line flag of the same name (`insurer_change_rate` is
/// `--insurer-change-rate`), and error messages name the flag.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SynthOptions {
    /// Output directory (created if missing). Writes `<prefix>_a.csv`, `<prefix>_b.csv`, …,
    /// `<prefix>_truth.csv` and, with `ndb_view`, `<prefix>_<letter>_ndb.csv`; same-named files
    /// are replaced (each is written as `<name>.part` and renamed when all are complete).
    pub out: PathBuf,
    /// File name prefix (default `synth`).
    pub prefix: String,
    /// Number of data holders, named a, b, c, … (1-26; default 2).
    pub holders: usize,
    /// Records per holder: one number for every holder, or one per holder (default 10,000).
    pub records: Vec<u64>,
    /// Fraction (0-1) of each later holder's records whose person also appears in the first
    /// holder (a); capped by a's size. Later holders share persons with each other only through
    /// a, each choosing independently. With 2 holders the true pairs are round(F × N_b).
    /// Default 0.5.
    pub overlap: f64,
    /// Seed. The same seed and options give byte-identical files. Default 20261122.
    pub seed: u64,
    /// Probability (0-1) that a person's insurance card (a family's shared card moves as one)
    /// is replaced between one holder and the next: new insurer number, 記号 and 番号.
    /// Default 0.11.
    pub insurer_change_rate: f64,
    /// Multiplier of every corruption and format-variation rate (0 = clean canonical values,
    /// 1 = the defaults, close to ../shared/data/jp_ins; each rate is capped at 1). Holders b,
    /// d, … are receipt-style: twice the error rates of a, c, … and mostly full-width numbers.
    pub corruption: f64,
    /// Also write `<prefix>_<letter>_ndb.csv`: holder `letter` as a hash-only public database
    /// sees it (id, id1, id1_branch, id4 as SHA-256 hex of the legacy preimages, then content
    /// columns).
    pub ndb_view: Option<String>,
    /// Holder `letter` writes each name in one field, as claims data (レセプト) carry 氏名:
    /// `full_name` = family and given name joined by a full-width space (U+3000; 70 %), an
    /// ASCII space (15 %) or nothing (15 %), `full_name_kana` likewise (header
    /// [`HEADER_ONE_NAME_FIELD`]). The values are the split columns' (with their
    /// corruptions), so the two forms of one record always agree.
    pub one_name_field: Option<String>,
    /// "Today" (YYYY-MM-DD, years 1990-2200): ages (0-100) and service months are relative to
    /// it. Default 2026-11-22.
    pub today: String,
}

impl SynthOptions {
    /// The defaults of `renketsu synth`, writing into `out`.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        Self {
            out: out.into(),
            prefix: "synth".into(),
            holders: 2,
            records: vec![10_000],
            overlap: 0.5,
            seed: 20261122,
            insurer_change_rate: 0.11,
            corruption: 1.0,
            ndb_view: None,
            one_name_field: None,
            today: "2026-11-22".into(),
        }
    }
}

/// Why a run was refused or failed. Option errors name the command-line flag.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SynthError {
    /// `holders` outside 1-26.
    #[error("--holders must be 1-26")]
    Holders,
    /// `records` has neither one number nor one per holder.
    #[error("--records: give one number or one per holder ({holders})")]
    Records {
        /// The number of holders asked for.
        holders: usize,
    },
    /// `overlap` or `insurer_change_rate` outside 0-1.
    #[error("--overlap and --insurer-change-rate must be 0-1")]
    Rate,
    /// `corruption` negative or not finite.
    #[error("--corruption must be >= 0")]
    Corruption,
    /// `prefix` empty or with a path separator.
    #[error("--prefix must be a plain file name part")]
    Prefix,
    /// `today` is not a date YYYY-MM-DD of the years 1990-2200.
    #[error("--today {0:?}: expected YYYY-MM-DD")]
    Today(String),
    /// `one_name_field` is not the letter of one of the holders.
    #[error("--one-name-field {view:?}: expected a holder letter a-{last}")]
    OneNameField {
        /// The value given.
        view: String,
        /// The last holder's letter.
        last: char,
    },
    /// `ndb_view` is not the letter of one of the holders.
    #[error("--ndb-view {view:?}: expected a holder letter a-{last}")]
    NdbView {
        /// The value given.
        view: String,
        /// The last holder's letter.
        last: char,
    },
    /// `out` is an existing file.
    #[error("--out {} is a file; give a directory", .0.display())]
    OutIsFile(PathBuf),
    /// A directory or file could not be created.
    #[error("cannot create {}", path.display())]
    Create {
        /// The directory or file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing a file failed.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file (its `.part` name while it is being written).
        path: PathBuf,
        /// The cause.
        #[source]
        source: csv::Error,
    },
    /// A complete file could not be renamed to its final name.
    #[error("cannot rename {} to {}", from.display(), to.display())]
    Rename {
        /// The `.part` file.
        from: PathBuf,
        /// Its final name.
        to: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// What one holder's file holds.
#[derive(Debug, Clone)]
pub struct HolderReport {
    /// Party name: a, b, c, …
    pub party: String,
    /// The CSV written.
    pub path: PathBuf,
    /// Data rows.
    pub records: u64,
    /// Rows whose person is also in holder a (for a itself: all of them).
    pub shared_with_first: u64,
    /// Of those, rows whose card differs from the person's card in a (insurer change).
    pub insurer_changed: u64,
}

/// Counts of a run of [`run`] and the files written.
#[derive(Debug, Clone)]
pub struct SynthReport {
    /// One entry per holder, in order a, b, c, …
    pub holders: Vec<HolderReport>,
    /// Distinct persons over all holders.
    pub persons: u64,
    /// Rows of the truth file: cross-holder record pairs of the same person.
    pub true_pairs: u64,
    /// The truth file.
    pub truth: PathBuf,
    /// The NDB-style view, if requested.
    pub ndb: Option<PathBuf>,
}

// ---------------------------------------------------------------------------------------------
// Counter-based randomness (own SplitMix64, so output does not depend on rand's algorithms)
// ---------------------------------------------------------------------------------------------

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A well-mixed 64-bit key of (seed, purpose tag, a, b).
fn key(seed: u64, tag: u64, a: u64, b: u64) -> u64 {
    let k = mix(seed ^ mix(tag.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    mix(mix(k ^ a).wrapping_add(0x632B_E59B_D9B4_E019) ^ b.rotate_left(29))
}

const T_HOUSE: u64 = 1;
const T_SINGLE: u64 = 2;
const T_CARD: u64 = 3;
const T_CHANGE: u64 = 4;
const T_CARE: u64 = 5;
const T_RECORD: u64 = 6;
const T_IDS: u64 = 7;
const T_OVERLAP: u64 = 8;
const T_ONE_FIELD: u64 = 9;

/// The split name columns of a row (`fields[1..5]`: family, given, family kana, given kana)
/// as two whole-name fields, joined by a separator drawn from `k` (SPEC.md §2.2 reads them
/// back). Empty parts leave no separator.
fn one_name_field(fields: &[String], k: u64) -> [String; 2] {
    let sep = match k % 20 {
        0..14 => "\u{3000}",
        14..17 => " ",
        _ => "",
    };
    let join = |a: &str, b: &str| match (a.is_empty(), b.is_empty()) {
        (false, false) => format!("{a}{sep}{b}"),
        _ => format!("{a}{b}"),
    };
    [join(&fields[1], &fields[2]), join(&fields[3], &fields[4])]
}

struct Rng(u64);

impl Rng {
    fn new(k: u64) -> Self {
        Self(k)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }
    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    /// Index drawn from cumulative weights.
    fn weighted(&mut self, cum: &[f64]) -> usize {
        let x = self.unit() * cum[cum.len() - 1];
        cum.partition_point(|&c| c <= x).min(cum.len() - 1)
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
    /// A string of `lo..=hi` random digits; the first is non-zero unless `zero_ok`.
    fn digits(&mut self, lo: u64, hi: u64, zero_ok: bool) -> String {
        let len = self.range(lo, hi);
        let first = if zero_ok {
            self.below(10)
        } else {
            self.range(1, 9)
        };
        let rest = (1..len).map(|_| self.below(10));
        [first]
            .into_iter()
            .chain(rest)
            .map(|d| char::from(b'0' + d as u8))
            .collect()
    }
    fn pick_char(&mut self, s: &str) -> char {
        let n = s.chars().count() as u64;
        s.chars().nth(self.below(n) as usize).unwrap_or('ア')
    }
}

fn cumulative(ws: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let mut t = 0.0;
    ws.into_iter()
        .map(|w| {
            t += w;
            t
        })
        .collect()
}

/// A keyed pseudo-random permutation of `0..n` (4-round Feistel network on the smallest even
/// bit width covering n, with cycle walking); `apply` and `invert` are O(1) on average.
struct Perm {
    n: u64,
    half: u32,
    mask: u64,
    key: u64,
}

impl Perm {
    fn new(n: u64, key: u64) -> Self {
        let bits = (64 - n.max(2).saturating_sub(1).leading_zeros()).max(2);
        let half = bits.div_ceil(2);
        Self {
            n,
            half,
            mask: (1u64 << half) - 1,
            key,
        }
    }
    fn f(&self, x: u64, round: u64) -> u64 {
        mix(self.key ^ (round << 58) ^ x) & self.mask
    }
    fn enc(&self, x: u64) -> u64 {
        let (mut l, mut r) = (x >> self.half, x & self.mask);
        for round in 0..4 {
            (l, r) = (r, l ^ self.f(r, round));
        }
        (l << self.half) | r
    }
    fn dec(&self, y: u64) -> u64 {
        let (mut l, mut r) = (y >> self.half, y & self.mask);
        for round in (0..4).rev() {
            (l, r) = (r ^ self.f(l, round), l);
        }
        (l << self.half) | r
    }
    fn apply(&self, x: u64) -> u64 {
        let mut y = self.enc(x);
        while y >= self.n {
            y = self.enc(y);
        }
        y
    }
    fn invert(&self, y: u64) -> u64 {
        let mut x = self.dec(y);
        while x >= self.n {
            x = self.dec(x);
        }
        x
    }
}

// ---------------------------------------------------------------------------------------------
// Name and place tables (data/*.tsv)
// ---------------------------------------------------------------------------------------------

const SURNAMES_TSV: &str = include_str!("../data/jp-surnames.tsv");
const GIVEN_TSV: &str = include_str!("../data/jp-given-names.tsv");
const PLACES_TSV: &str = include_str!("../data/jp-places.tsv");
const DIAGNOSES_TSV: &str = include_str!("../data/icd10-diagnoses.tsv");

/// Birth-year buckets for given-name popularity: 5 years each from 1910.
const BUCKETS: usize = 25;

struct Place {
    code: u32,
    name: &'static str,
    lo: u32,
    hi: u32,
    cities: Vec<&'static str>,
}

/// ICD-10 code, min and max age, sex (0 any), weight, severe.
type Diagnosis = (&'static str, u32, u32, u8, f64, bool);

struct Tables {
    surnames: Vec<(&'static str, &'static str)>,
    surname_cum: Vec<f64>,
    given: [Vec<(&'static str, &'static str)>; 2],
    given_cum: [Vec<Vec<f64>>; 2],
    places: Vec<Place>,
    place_cum: Vec<f64>,
    kanji: Vec<char>,
    diagnoses: Vec<Diagnosis>,
    child_ages: Vec<f64>,
    adult_ages: Vec<f64>,
    typo_kana: Vec<char>,
}

fn rows(tsv: &'static str) -> impl Iterator<Item = Vec<&'static str>> {
    tsv.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split('\t').collect())
}

fn num(s: &str) -> f64 {
    s.trim().parse().expect("number in embedded table")
}

fn tables() -> &'static Tables {
    static T: OnceLock<Tables> = OnceLock::new();
    T.get_or_init(|| {
        let sur: Vec<_> = rows(SURNAMES_TSV).collect();
        let mut given: [Vec<(&str, &str)>; 2] = [vec![], vec![]];
        let mut meta: [Vec<(f64, f64)>; 2] = [vec![], vec![]];
        for r in rows(GIVEN_TSV) {
            let s = usize::from(r[2] == "2");
            given[s].push((r[0], r[1]));
            meta[s].push((num(r[3]), num(r[4])));
        }
        let given_cum = meta.map(|m| {
            (0..BUCKETS)
                .map(|b| {
                    let year = 1912.0 + 5.0 * b as f64;
                    cumulative(m.iter().map(|&(w, peak)| {
                        let d = (year - peak) / 12.0;
                        w / ((1.0 + d * d) * (1.0 + d * d)) + 0.01 * w
                    }))
                })
                .collect()
        });
        let places: Vec<Place> = rows(PLACES_TSV)
            .map(|r| Place {
                code: num(r[0]) as u32,
                name: r[1],
                lo: num(r[3]) as u32,
                hi: num(r[4]) as u32,
                cities: r[5].split('|').collect(),
            })
            .collect();
        let place_cum = cumulative(rows(PLACES_TSV).map(|r| num(r[2])));
        let mut kanji: Vec<char> = sur
            .iter()
            .map(|r| r[0])
            .chain(given.iter().flatten().map(|g| g.0))
            .flat_map(str::chars)
            .filter(|c| !is_kana(*c))
            .collect();
        kanji.sort_unstable();
        kanji.dedup();
        Tables {
            surname_cum: cumulative(sur.iter().map(|r| num(r[2]))),
            surnames: sur.iter().map(|r| (r[0], r[1])).collect(),
            given,
            given_cum,
            places,
            place_cum,
            kanji,
            child_ages: cumulative(AGE_BANDS[..5].iter().copied()),
            adult_ages: cumulative((4..21).map(|b| AGE_BANDS[b] * if b >= 12 { OLD } else { 1.0 })),
            typo_kana: TYPO_KANA.chars().collect(),
            diagnoses: rows(DIAGNOSES_TSV)
                .map(|r| {
                    (
                        r[0],
                        num(r[1]) as u32,
                        num(r[2]) as u32,
                        num(r[3]) as u8,
                        num(r[4]),
                        r[5] == "1",
                    )
                })
                .collect(),
        }
    })
}

fn is_kana(c: char) -> bool {
    ('\u{3041}'..='\u{30FF}').contains(&c)
}

// ---------------------------------------------------------------------------------------------
// Dates, eras, check digits
// ---------------------------------------------------------------------------------------------

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
}

fn civil_from_days(z: i64) -> Ymd {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    (days_from_civil(ny, nm, 1) - days_from_civil(y, m, 1)) as u32
}

/// Days since 1970-01-01 of an ISO date `YYYY-MM-DD` of the years 1990-2200.
fn parse_iso(s: &str) -> Result<i64, SynthError> {
    let p: Vec<&str> = s.split('-').collect();
    let bad = || SynthError::Today(s.to_owned());
    if p.len() != 3 || p[0].len() != 4 {
        return Err(bad());
    }
    let (y, m, d): (i64, u32, u32) = (
        p[0].parse().map_err(|_| bad())?,
        p[1].parse().map_err(|_| bad())?,
        p[2].parse().map_err(|_| bad())?,
    );
    if !((1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m) && (1990..=2200).contains(&y))
    {
        return Err(bad());
    }
    Ok(days_from_civil(y, m, d))
}

/// (kanji name, letter, receipt code, first day) of the eras 明治 … 令和.
/// A calendar date: (year, month, day).
type Ymd = (i64, u32, u32);

const ERAS: [(&str, &str, u32, Ymd); 5] = [
    ("明治", "M", 1, (1868, 1, 25)),
    ("大正", "T", 2, (1912, 7, 30)),
    ("昭和", "S", 3, (1926, 12, 25)),
    ("平成", "H", 4, (1989, 1, 8)),
    ("令和", "R", 5, (2019, 5, 1)),
];

/// Era index and era year (1 = 元年) of a date.
fn era_of(y: i64, m: u32, d: u32) -> (usize, i64) {
    let e = ERAS
        .iter()
        .rposition(|&(_, _, _, s)| (y, m, d) >= s)
        .unwrap_or(0);
    (e, y - ERAS[e].3.0 + 1)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum DateFmt {
    Iso,
    Compact,
    Slash,
    Kanji,
    EraDot,
    EraKanji,
    Receipt,
}

fn format_date((y, m, d): Ymd, f: DateFmt) -> String {
    let (e, ey) = era_of(y, m, d);
    let (name, letter, code, _) = ERAS[e];
    match f {
        DateFmt::Iso => format!("{y:04}-{m:02}-{d:02}"),
        DateFmt::Compact => format!("{y:04}{m:02}{d:02}"),
        DateFmt::Slash => format!("{y}/{m}/{d}"),
        DateFmt::Kanji => format!("{y}年{m}月{d}日"),
        DateFmt::EraDot => format!("{letter}{ey:02}.{m:02}.{d:02}"),
        DateFmt::EraKanji if ey == 1 => format!("{name}元年{m}月{d}日"),
        DateFmt::EraKanji => format!("{name}{ey}年{m}月{d}日"),
        DateFmt::Receipt => format!("{code}{ey:02}{m:02}{d:02}"),
    }
}

/// 検証番号 of a 保険者番号 body (ASCII digits): from the rightmost digit multiply by 2, 1, 2, …,
/// add the digits of the products; check = (10 − sum mod 10) mod 10.
pub fn insurer_check_digit(body: &str) -> u32 {
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let p = u32::from(b - b'0') * if i % 2 == 0 { 2 } else { 1 };
            p / 10 + p % 10
        })
        .sum();
    (10 - sum % 10) % 10
}

/// True for a 6- or 8-digit 保険者番号 (ASCII digits) whose last digit is its check digit.
pub fn insurer_number_is_valid(s: &str) -> bool {
    (s.len() == 6 || s.len() == 8)
        && s.bytes().all(|b| b.is_ascii_digit())
        && insurer_check_digit(&s[..s.len() - 1]) == u32::from(s.as_bytes()[s.len() - 1] - b'0')
}

// ---------------------------------------------------------------------------------------------
// The population
// ---------------------------------------------------------------------------------------------

/// Japanese population (thousands, 2020) by age band 0-4, 5-9, …, 95-99, 100.
const AGE_BANDS: [f64; 21] = [
    4541.0, 5114.0, 5376.0, 5706.0, 6320.0, 6384.0, 6714.0, 7498.0, 8476.0, 9868.0, 8777.0, 7940.0,
    7442.0, 8236.0, 9189.0, 7065.0, 5404.0, 3792.0, 1912.0, 565.0, 80.0,
];

/// Extra weight of ages 60+ among adults without children, so that the population as a whole
/// (with the parents of children mostly 25-60) has about Japan's age profile.
const OLD: f64 = 1.8;

#[derive(Clone, Copy, Default)]
struct Addr {
    place: usize,
    city: usize,
    postcode: u32,
}

#[derive(Clone, Copy, Default)]
struct Member {
    sex: u8,
    age: u32,
    birth: i64,
    given: usize,
}

/// One person's true values.
#[derive(Clone, Copy)]
struct Person {
    m: Member,
    surname: usize,
    addr: Addr,
    /// Key of the insurance card: block × 8 + slot for own cards, + 7 for a family's card.
    card_key: u64,
    /// Age of the card's insured person (decides the kind of insurance).
    insured_age: u32,
    branch: u32,
    care: Option<u64>,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Kyokai,
    Kumiai,
    Kyosai,
    Kokuho,
    Kouki,
}

/// A card's true identifiers: 保険者番号, 記号 (may be empty), 番号.
#[derive(Clone, Debug, PartialEq)]
struct Card {
    insurer: String,
    symbol: String,
    number: String,
}

const SYMBOL_KANA: &str =
    "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワ";

/// The validated configuration and everything derived from it.
struct Gen {
    seed: u64,
    today: i64,
    change_rate: f64,
    corruption: f64,
    t: &'static Tables,
    n: Vec<u64>,
    m: Vec<u64>,
    base: Vec<u64>,
    ids: Vec<Perm>,
    ovl: Vec<Perm>,
    /// Position of a's last (possibly partial) block in each holder's overlap order.
    q: Vec<u64>,
    last_block: u64,
}

impl Gen {
    fn new(a: &SynthOptions) -> Result<Self, SynthError> {
        if !(1..=26).contains(&a.holders) {
            return Err(SynthError::Holders);
        }
        let (records_ok, rates) = (
            a.records.len() == 1 || a.records.len() == a.holders,
            [a.overlap, a.insurer_change_rate],
        );
        if !records_ok {
            return Err(SynthError::Records { holders: a.holders });
        }
        if !rates.iter().all(|v| (0.0..=1.0).contains(v)) {
            return Err(SynthError::Rate);
        }
        if !(a.corruption.is_finite() && a.corruption >= 0.0) {
            return Err(SynthError::Corruption);
        }
        if a.prefix.is_empty() || a.prefix.contains(['/', '\\']) {
            return Err(SynthError::Prefix);
        }
        let n: Vec<u64> = (0..a.holders)
            .map(|i| a.records[i.min(a.records.len() - 1)])
            .collect();
        let seed = a.seed;
        let mut m = vec![n[0]];
        let mut base = vec![0];
        let mut next = n[0].next_multiple_of(4);
        for &ni in &n[1..] {
            let mi = ((a.overlap * ni as f64).round() as u64).min(n[0]).min(ni);
            m.push(mi);
            base.push(next);
            next = (next + ni - mi).next_multiple_of(4);
        }
        let blocks = n[0].div_ceil(4);
        let ids = (0..a.holders)
            .map(|i| Perm::new(n[i], key(seed, T_IDS, i as u64, 0)))
            .collect();
        let ovl: Vec<Perm> = (0..a.holders)
            .map(|i| Perm::new(blocks, key(seed, T_OVERLAP, i as u64, 0)))
            .collect();
        let q = ovl
            .iter()
            .map(|p| if blocks > 0 { p.invert(blocks - 1) } else { 0 })
            .collect();
        let last_block = n[0] - 4 * blocks.saturating_sub(1);
        let today = parse_iso(&a.today)?;
        Ok(Self {
            seed,
            today,
            change_rate: a.insurer_change_rate,
            corruption: a.corruption,
            t: tables(),
            n,
            m,
            base,
            ids,
            ovl,
            q,
            last_block,
        })
    }

    /// Person of holder `i`'s `k`-th record (stream order, before the id permutation).
    fn person_at(&self, i: usize, k: u64) -> u64 {
        if i == 0 {
            return k;
        }
        if k >= self.m[i] {
            return self.base[i] + (k - self.m[i]);
        }
        let (q, r) = (self.q[i], self.last_block);
        let (t, j) = if k < 4 * q {
            (k / 4, k % 4)
        } else if k < 4 * q + r {
            (q, k - 4 * q)
        } else {
            let k2 = k - 4 * q - r;
            (q + 1 + k2 / 4, k2 % 4)
        };
        4 * self.ovl[i].apply(t) + j
    }

    /// Inverse of [`Gen::person_at`]: holder `i`'s stream index of person `p`, if it holds `p`.
    fn rank(&self, i: usize, p: u64) -> Option<u64> {
        if p < self.n[0] {
            if i == 0 {
                return Some(p);
            }
            let t = self.ovl[i].invert(p / 4);
            let before = if t <= self.q[i] {
                4 * t
            } else {
                4 * t - (4 - self.last_block)
            };
            let k = before + p % 4;
            (k < self.m[i]).then_some(k)
        } else if i > 0 && p >= self.base[i] && p - self.base[i] < self.n[i] - self.m[i] {
            Some(self.m[i] + p - self.base[i])
        } else {
            None
        }
    }

    /// Age drawn from population bands: children (0-24) or adults (20+, more weight on 60+).
    fn age_in(&self, rng: &mut Rng, adult: bool) -> u32 {
        let (lo, cum) = if adult {
            (4, &self.t.adult_ages)
        } else {
            (0, &self.t.child_ages)
        };
        let b = lo + rng.weighted(cum);
        if b == 20 {
            100
        } else {
            5 * b as u32 + rng.below(5) as u32
        }
    }

    fn member(&self, rng: &mut Rng, sex: u8, age: u32) -> Member {
        let age = age.min(100);
        let birth = self.today - i64::from(age) * 365 - i64::from(age / 4) - rng.below(365) as i64;
        let year = civil_from_days(birth).0;
        let b = ((year - 1910).max(0) / 5).min(BUCKETS as i64 - 1) as usize;
        let given = rng.weighted(&self.t.given_cum[usize::from(sex - 1)][b]);
        Member {
            sex,
            age,
            birth,
            given,
        }
    }

    fn addr(&self, rng: &mut Rng) -> Addr {
        let place = rng.weighted(&self.t.place_cum);
        let p = &self.t.places[place];
        let city = rng.below(p.cities.len() as u64) as usize;
        let postcode =
            rng.range(u64::from(p.lo), u64::from(p.hi)) as u32 * 10_000 + rng.below(10_000) as u32;
        Addr {
            place,
            city,
            postcode,
        }
    }

    /// All true values of person `p`.
    fn person(&self, p: u64) -> Person {
        let (h, j) = (p / 4, (p % 4) as usize);
        let mut rng = Rng::new(key(self.seed, T_HOUSE, h, 0));
        let addr = self.addr(&mut rng);
        let surname = rng.weighted(&self.t.surname_cum);
        // (parents, children): single, couple, single parent + 1 or 2, parents + 1 or 2.
        let kinds = [(1, 0), (2, 0), (1, 1), (1, 2), (2, 1), (2, 2)];
        let (parents, children) = kinds[rng.weighted(&[0.30, 0.52, 0.58, 0.63, 0.76, 1.0])];
        let size = parents + children;
        let mut mem = [Member::default(); 4];
        // Children follow the population's ages; parents are 22-37 years older than the eldest.
        let eldest = self.age_in(&mut rng, false);
        let head_age = if children > 0 {
            eldest + 22 + rng.below(16) as u32
        } else {
            self.age_in(&mut rng, true)
        };
        let head_sex = if parents == 1 && children > 0 {
            if rng.chance(0.8) { 2 } else { 1 }
        } else {
            1 + rng.below(2) as u8
        };
        mem[0] = self.member(&mut rng, head_sex, head_age);
        if parents == 2 {
            let age = (i64::from(head_age) + rng.range(0, 8) as i64 - 4).clamp(20, 100) as u32;
            mem[1] = self.member(&mut rng, 3 - head_sex, age);
        }
        let twins = children == 2 && rng.chance(0.03);
        for c in 0..children {
            let slot = parents + c;
            let sex = 1 + rng.below(2) as u8;
            if twins && c == 1 {
                let first = mem[slot - 1];
                let sex = if rng.chance(0.67) {
                    first.sex
                } else {
                    3 - first.sex
                };
                mem[slot] = self.member(&mut rng, sex, first.age);
                mem[slot].birth = first.birth;
            } else {
                let age = if c == 0 {
                    eldest
                } else {
                    eldest.saturating_sub(1 + rng.below(6) as u32)
                };
                mem[slot] = self.member(&mut rng, sex, age);
            }
        }
        // No two members of a household share a given-name reading (parent and child, siblings).
        for s in 1..size {
            let reading = |m: &Member| self.t.given[usize::from(m.sex - 1)][m.given].1;
            for _ in 0..16 {
                if mem[..s].iter().all(|o| reading(o) != reading(&mem[s])) {
                    break;
                }
                let m = mem[s];
                mem[s].given = self.member(&mut rng, m.sex, m.age).given;
            }
        }
        let care = |m: &Member| {
            let mut r = Rng::new(key(self.seed, T_CARE, p, 0));
            let has = if m.age >= 65 {
                r.chance(0.95)
            } else {
                m.age >= 40 && r.chance(0.02)
            };
            has.then(|| {
                if r.chance(0.6) {
                    r.below(100_000_000)
                } else {
                    r.below(10_000_000_000)
                }
            })
        };
        if j < size && mem[j].age < 75 {
            let on_card: Vec<usize> = (0..size).filter(|&s| mem[s].age < 75).collect();
            let insured_age = mem[on_card[0]].age;
            let branch = on_card.iter().position(|&s| s == j).unwrap_or(0) as u32;
            let m = mem[j];
            return Person {
                m,
                surname,
                addr,
                card_key: h * 8 + 7,
                insured_age,
                branch,
                care: care(&m),
            };
        }
        let (m, surname, addr) = if j < size {
            (mem[j], surname, addr)
        } else {
            let mut r = Rng::new(key(self.seed, T_SINGLE, h, j as u64));
            let (sex, age) = (1 + r.below(2) as u8, self.age_in(&mut r, true));
            (
                self.member(&mut r, sex, age),
                r.weighted(&self.t.surname_cum),
                self.addr(&mut r),
            )
        };
        Person {
            m,
            surname,
            addr,
            card_key: h * 8 + j as u64,
            insured_age: m.age,
            branch: 0,
            care: care(&m),
        }
    }

    /// Number of card replacements of `card_key` up to holder `i` (0 for holder a).
    fn card_version(&self, card_key: u64, i: usize) -> u32 {
        (1..=i as u64)
            .filter(|&t| Rng::new(key(self.seed, T_CHANGE, card_key, t)).chance(self.change_rate))
            .count() as u32
    }

    fn card(&self, person: &Person, version: u32) -> Card {
        let mut prev: Option<Card> = None;
        for v in 0..=version {
            let mut rng = Rng::new(key(self.seed, T_CARD, person.card_key, u64::from(v)));
            let mut attempt = 0;
            let c = loop {
                let c = self.draw_card(&mut rng, person, v > 0);
                attempt += 1;
                if prev.as_ref().is_none_or(|p| p.insurer != c.insurer) || attempt > 32 {
                    break c;
                }
            };
            prev = Some(c);
        }
        prev.expect("version 0 drawn")
    }

    fn draw_card(&self, rng: &mut Rng, person: &Person, moved: bool) -> Card {
        let t = self.t;
        let place = if rng.chance(if moved { 0.6 } else { 0.85 }) {
            person.addr.place
        } else {
            rng.weighted(&t.place_cum)
        };
        let pp = t.places[place].code;
        let kind = if person.insured_age >= 75 {
            Kind::Kouki
        } else {
            let w: [f64; 4] = if person.insured_age >= 65 {
                [0.08, 0.05, 0.02, 0.85]
            } else {
                [0.38, 0.27, 0.10, 0.25]
            };
            [Kind::Kyokai, Kind::Kumiai, Kind::Kyosai, Kind::Kokuho][rng.weighted(&cumulative(w))]
        };
        let digits = |rng: &mut Rng, lo, hi, zero_ok| rng.digits(lo, hi, zero_ok);
        let kana_sym = |rng: &mut Rng| {
            let sep = if rng.chance(0.15) { "-" } else { "" };
            format!("{}{sep}{:02}", rng.pick_char(SYMBOL_KANA), rng.below(100))
        };
        let (body, symbol, number) = match kind {
            Kind::Kyokai => (
                format!("01{pp:02}001"),
                digits(rng, 8, 8, false),
                digits(rng, 1, 4, false),
            ),
            Kind::Kumiai => {
                let body = format!("06{pp:02}{:03}", rng.range(1, 999));
                let s = match rng.below(10) {
                    0..=4 => digits(rng, 1, 4, false),
                    5..=7 => kana_sym(rng),
                    _ => String::new(),
                };
                (body, s, digits(rng, 1, 7, false))
            }
            Kind::Kyosai => {
                let body = format!(
                    "{}{pp:02}{:03}",
                    rng.pick(&["31", "32", "33", "34"]),
                    rng.range(1, 999)
                );
                let pref = t.places[place].name.chars().next().unwrap_or('国');
                let s = format!(
                    "{pref}{}{:02}",
                    rng.pick_char("教職警公市県"),
                    rng.range(1, 99)
                );
                (body, s, digits(rng, 3, 7, true))
            }
            Kind::Kokuho => {
                let body = format!("{pp:02}{:03}", rng.range(1, 999));
                let s = match rng.below(10) {
                    0..=3 => {
                        let city = *rng.pick(&t.places[place].cities);
                        city.split(['市', '区', '町', '村', '郡'])
                            .next()
                            .unwrap_or(city)
                            .to_owned()
                    }
                    4..=6 => kana_sym(rng),
                    _ => String::new(),
                };
                (body, s, digits(rng, 5, 8, true))
            }
            Kind::Kouki => (
                format!("39{pp:02}1{:02}", rng.range(1, 99)),
                String::new(),
                digits(rng, 8, 8, true),
            ),
        };
        let insurer = format!("{body}{}", insurer_check_digit(&body));
        debug_assert!(insurer_number_is_valid(&insurer));
        Card {
            insurer,
            symbol,
            number,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Corruptions
// ---------------------------------------------------------------------------------------------

const SMALL: &str = "ァィゥェォッャュョヮヵヶ";
const LARGE: &str = "アイウエオツヤユヨワカケ";
const VOICED: &str = "ガギグゲゴザジズゼゾダヂヅデドバビブベボパピプペポヴ";
const UNVOICED: &str = "カキクケコサシスセソタチツテトハヒフヘホハヒフヘホウ";
const FW_KANA: &str = "ァアィイゥウェエォオカキクケコサシスセソタチッツテトナニヌネノハヒフヘホマミムメモャヤュユョヨラリルレロヮワヲンー";
const HW_KANA: &str = "ｧｱｨｲｩｳｪｴｫｵｶｷｸｹｺｻｼｽｾｿﾀﾁｯﾂﾃﾄﾅﾆﾇﾈﾉﾊﾋﾌﾍﾎﾏﾐﾑﾒﾓｬﾔｭﾕｮﾖﾗﾘﾙﾚﾛﾜﾜｦﾝｰ";
const O_ROW: &str = "オコソトノホモヨロヲゴゾドボポォョ";
const U_ROW: &str = "ウクスツヌフムユルグズヅブプゥュヴ";
const E_ROW: &str = "エケセテネヘメレゲゼデベペェ";
const VARIANTS: [(char, char); 7] = [
    ('高', '髙'),
    ('崎', '﨑'),
    ('辺', '邊'),
    ('斎', '齋'),
    ('吉', '𠮷'),
    ('沢', '澤'),
    ('浜', '濱'),
];
const TYPO_KANA: &str =
    "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワン";

fn map_char(c: char, from: &str, to: &str) -> Option<char> {
    from.chars()
        .position(|x| x == c)
        .and_then(|i| to.chars().nth(i))
}

fn to_hiragana(s: &str) -> String {
    s.chars()
        .map(|c| {
            if ('ァ'..='ヶ').contains(&c) {
                char::from_u32(c as u32 - 0x60).unwrap_or(c)
            } else {
                c
            }
        })
        .collect()
}

fn to_halfwidth(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        if let Some(base) = map_char(c, VOICED, UNVOICED) {
            out.push(map_char(base, FW_KANA, HW_KANA).unwrap_or(base));
            out.push(if "パピプペポ".contains(c) {
                'ﾟ'
            } else {
                'ﾞ'
            });
        } else {
            out.push(map_char(c, FW_KANA, HW_KANA).unwrap_or(c));
        }
    }
    out
}

/// Long-vowel spelling: the first ウ after an o/u sound, オ after o, or イ after e becomes ー.
fn long_vowel(s: &str) -> String {
    let cs: Vec<char> = s.chars().collect();
    let pos = (1..cs.len()).find(|&i| {
        let p = cs[i - 1];
        (cs[i] == 'ウ' && (O_ROW.contains(p) || U_ROW.contains(p)))
            || (cs[i] == 'オ' && O_ROW.contains(p))
            || (cs[i] == 'イ' && E_ROW.contains(p))
    });
    cs.iter()
        .enumerate()
        .map(|(i, &c)| if Some(i) == pos { 'ー' } else { c })
        .collect()
}

fn drop_one_voiced(rng: &mut Rng, s: &str) -> String {
    let cs: Vec<char> = s.chars().collect();
    let idx: Vec<usize> = (0..cs.len()).filter(|&i| VOICED.contains(cs[i])).collect();
    if idx.is_empty() {
        return s.to_owned();
    }
    let at = *rng.pick(&idx);
    cs.iter()
        .enumerate()
        .map(|(i, &c)| {
            if i == at {
                map_char(c, VOICED, UNVOICED).unwrap_or(c)
            } else {
                c
            }
        })
        .collect()
}

/// One character substituted (from `pool`), deleted, or (kana only) a stray ッ inserted.
fn typo(rng: &mut Rng, s: &str, pool: &[char]) -> String {
    let mut cs: Vec<char> = s.chars().collect();
    if cs.is_empty() {
        return String::new();
    }
    let at = rng.below(cs.len() as u64) as usize;
    match rng.below(3) {
        0 if cs.len() >= 2 => {
            cs.remove(at);
        }
        1 if is_kana(cs[0]) => cs.insert(at.max(1), 'ッ'),
        _ => cs[at] = *rng.pick(pool),
    }
    cs.into_iter().collect()
}

fn fullwidth(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '0'..='9' => char::from_u32(c as u32 - '0' as u32 + 0xFF10).unwrap_or(c),
            '-' => '－',
            '/' => '／',
            _ => c,
        })
        .collect()
}

/// NFKC, then every whitespace character removed: the NDB canonicalisation of one field.
fn ndb_canon(s: &str) -> String {
    s.nfkc().filter(|c| !c.is_whitespace()).collect()
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Holder `i`'s rendering of one person.
struct Row {
    /// The CSV fields, in [`HEADER`] order.
    fields: [String; 19],
    /// The recorded birth date (with any typo) and sex; `None` where the field is empty.
    dob: Option<Ymd>,
    sex: Option<u8>,
    /// Card replacements since holder a.
    version: u32,
}

/// The legacy digests `[id1, id1_branch, id4]` of a row, as ../shared/data/jp_ins/README.md
/// specifies: lowercase hex SHA-256 of `insurer|symbol|number|YYYYMMDD|sex`,
/// `insurer|symbol|number|branch|YYYYMMDD|sex` and `kana_family+kana_given|YYYYMMDD|sex`, each
/// field as recorded (typos included) after NFKC and removing whitespace; the birth date is the
/// recorded one as 8 digits, sex 1 or 2. A digest is empty when a field it needs is empty (the
/// symbol may be empty).
fn ndb_digests(row: &Row) -> [String; 3] {
    let (Some((y, m, d)), Some(sx)) = (row.dob, row.sex) else {
        return Default::default();
    };
    let [ins, sym, num, br, fam, giv] = [10, 11, 12, 13, 3, 4].map(|i| ndb_canon(&row.fields[i]));
    let (card, kana) = (!ins.is_empty() && !num.is_empty(), fam + &giv);
    let digest = |ok: bool, pre: String| if ok { sha256_hex(&pre) } else { String::new() };
    [
        digest(card, format!("{ins}|{sym}|{num}|{y:04}{m:02}{d:02}|{sx}")),
        digest(
            card && !br.is_empty(),
            format!("{ins}|{sym}|{num}|{br}|{y:04}{m:02}{d:02}|{sx}"),
        ),
        digest(!kana.is_empty(), format!("{kana}|{y:04}{m:02}{d:02}|{sx}")),
    ]
}

impl Gen {
    fn record(&self, i: usize, p: u64, person: &Person, id: u64) -> Row {
        let t = self.t;
        let mut r = Rng::new(key(self.seed, T_RECORD, i as u64, p));
        let receipt = i % 2 == 1;
        let noise = if receipt { 2.0 } else { 1.0 };
        let c = self.corruption;
        let err = |base: f64| (base * noise * c).min(1.0);
        let fmt = |clinic: f64, receipt_rate: f64| {
            ((if receipt { receipt_rate } else { clinic }) * c).min(1.0)
        };
        let (fam, fam_k) = t.surnames[person.surname];
        let (giv, giv_k) = t.given[usize::from(person.m.sex - 1)][person.m.given];
        let (mut fam, mut giv, mut fam_k, mut giv_k) = (
            fam.to_owned(),
            giv.to_owned(),
            fam_k.to_owned(),
            giv_k.to_owned(),
        );
        // Kanji: variant glyphs (a property of how this holder registered the name), typos.
        if r.chance(err(0.08)) {
            for (a, b) in VARIANTS {
                fam = fam.replace(a, &b.to_string());
                giv = giv.replace(a, &b.to_string());
            }
        }
        for s in [&mut fam, &mut giv] {
            if r.chance(err(0.012)) {
                *s = typo(&mut r, s, &t.kanji);
            }
        }
        // Kana folds and typos.
        let small_to_large = r.chance(err(0.03));
        let which = r.below(2);
        let (drop_voiced, long, swap) = (
            r.chance(err(0.015)),
            r.chance(err(0.04)),
            r.chance(err(0.015)),
        );
        for (n, s) in [&mut fam_k, &mut giv_k].into_iter().enumerate() {
            if small_to_large {
                *s = s
                    .chars()
                    .map(|ch| map_char(ch, SMALL, LARGE).unwrap_or(ch))
                    .collect();
            }
            if drop_voiced && n as u64 == which {
                *s = drop_one_voiced(&mut r, s);
            }
            if r.chance(err(0.012)) {
                *s = typo(&mut r, s, &t.typo_kana);
            }
        }
        if long {
            let f = long_vowel(&fam_k);
            if f != fam_k {
                fam_k = f
            } else {
                giv_k = long_vowel(&giv_k)
            }
        }
        if swap {
            std::mem::swap(&mut fam, &mut giv);
            std::mem::swap(&mut fam_k, &mut giv_k);
        }
        if r.chance(err(0.03)) {
            match r.below(3) {
                0 if fam.chars().count() >= 2 => {
                    fam.insert(fam.char_indices().nth(1).map_or(0, |x| x.0), '\u{3000}')
                }
                1 => {
                    fam_k = format!(
                        "{fam_k}{}{giv_k}",
                        if r.chance(0.5) { " " } else { "\u{3000}" }
                    );
                    giv_k.clear();
                }
                _ => {
                    fam = format!("{fam}\u{3000}{giv}");
                    giv.clear();
                }
            }
        }
        if r.chance(err(0.06)) {
            (fam_k, giv_k) = (to_hiragana(&fam_k), to_hiragana(&giv_k));
        } else if r.chance(err(0.06)) {
            (fam_k, giv_k) = (to_halfwidth(&fam_k), to_halfwidth(&giv_k));
        }
        for (s, rate) in [
            (&mut fam, 0.008),
            (&mut giv, 0.03),
            (&mut fam_k, 0.004),
            (&mut giv_k, 0.03),
        ] {
            if r.chance(err(rate)) {
                s.clear();
            }
        }
        // Sex.
        let sex_missing = r.chance(err(0.009));
        let sex = if sex_missing {
            String::new()
        } else if r.chance(fmt(0.4, 0.4)) {
            let forms = [("M", "F"), ("男", "女"), ("male", "female")][r.below(3) as usize];
            (if person.m.sex == 1 { forms.0 } else { forms.1 }).to_owned()
        } else {
            person.m.sex.to_string()
        };
        // Birth date: value typos (still a valid date), then a format.
        let (y, mo, d) = civil_from_days(person.m.birth);
        let mut date = (y, mo, d);
        if r.chance(err(0.04)) {
            // A wrong day, month, year or decade (still a real date), or day and month swapped.
            let off = [1, -1, 2, -2, 10, -9, 30, -31, 365, -365, 3652, -3653][r.below(12) as usize];
            date = match r.below(4) {
                0 if d <= 12 && d != mo => (y, d, mo),
                _ => civil_from_days((person.m.birth + off).min(self.today)),
            };
        }
        let date_missing = r.chance(err(0.008));
        let house = if receipt {
            DateFmt::Compact
        } else {
            DateFmt::Iso
        };
        let f = if r.chance(fmt(0.3, 0.35)) {
            let others = [
                DateFmt::Iso,
                DateFmt::Compact,
                DateFmt::Slash,
                DateFmt::Kanji,
                DateFmt::EraDot,
                DateFmt::EraKanji,
                DateFmt::Receipt,
            ];
            let pick = others[r.weighted(&cumulative([25.0, 25.0, 15.0, 15.0, 15.0, 20.0, 10.0]))];
            if pick == house { DateFmt::Slash } else { pick }
        } else {
            house
        };
        let mut birth = if date_missing {
            String::new()
        } else {
            format_date(date, f)
        };
        if r.chance(fmt(0.01, 0.05)) {
            birth = fullwidth(&birth);
        }
        // Address.
        let place = &t.places[person.addr.place];
        let pc = person.addr.postcode;
        let mut postcode = if r.chance(fmt(0.95, 0.35)) {
            format!("{:03}-{:04}", pc / 10_000, pc % 10_000)
        } else {
            format!("{pc:07}")
        };
        if r.chance(fmt(0.03, 0.12)) {
            postcode = fullwidth(&postcode);
        }
        if r.chance(fmt(0.03, 0.11)) {
            postcode.insert(0, '〒');
        }
        if r.chance(err(0.012)) {
            postcode.clear();
        }
        let city = if r.chance(err(0.009)) {
            ""
        } else {
            place.cities[person.addr.city]
        };
        // Insurance card.
        let version = self.card_version(person.card_key, i);
        let card = self.card(person, version);
        let (mut ins, mut sym, mut number) = (card.insurer, card.symbol, card.number);
        if r.chance(err(0.005)) {
            let at = r.below(ins.len() as u64) as usize;
            let old = ins.as_bytes()[at] - b'0';
            ins.replace_range(at..=at, &((old + 1 + r.below(9) as u8) % 10).to_string());
        }
        if number.len() >= 4 && r.chance(err(0.012)) {
            number.insert(number.len() / 2, '-');
        }
        let fw = |r: &mut Rng, s: String, clinic: f64, rec: f64| {
            if r.chance(fmt(clinic, rec)) {
                fullwidth(&s)
            } else {
                s
            }
        };
        ins = fw(&mut r, ins, 0.08, 0.30);
        sym = fw(&mut r, sym, 0.03, 0.50);
        number = fw(&mut r, number, 0.03, 0.85);
        if r.chance(err(0.01)) {
            (ins, sym, number) = (String::new(), String::new(), String::new());
        }
        let mut branch = format!("{:02}", person.branch);
        if r.chance(err(0.03)) {
            branch = person.branch.to_string();
        }
        branch = fw(&mut r, branch, 0.03, 0.12);
        if r.chance(fmt(0.35, 0.35)) {
            branch.clear();
        }
        let care = match person.care {
            Some(n) if !r.chance(err(0.02)) => fw(&mut r, format!("{n:010}"), 0.04, 0.13),
            _ => String::new(),
        };
        // Content.
        let (ty, tm, _) = civil_from_days(self.today);
        let months = ty * 12 + i64::from(tm) - 1 - r.below(12) as i64;
        let service_ym = format!("{:04}{:02}", months / 12, months % 12 + 1);
        let claims = 1 + (r.unit() * r.unit() * 12.0) as u32;
        let (age, sx) = (person.m.age, person.m.sex);
        let dx: Vec<_> = t
            .diagnoses
            .iter()
            .filter(|d| (d.1..=d.2).contains(&age) && (d.3 == 0 || d.3 == sx))
            .collect();
        let &(code, _, _, _, _, severe) = dx[r.weighted(&cumulative(dx.iter().map(|d| d.4)))];
        let per_claim = 150.0 + r.unit().powi(3) * 6000.0;
        let points =
            (per_claim * f64::from(claims) * if severe { 5.0 } else { 1.0 }).round() as u64;
        let fields = [
            id.to_string(),
            fam,
            giv,
            fam_k,
            giv_k,
            sex,
            birth,
            postcode,
            place.name.to_owned(),
            city.to_owned(),
            ins,
            sym,
            number,
            branch,
            care,
            service_ym,
            claims.to_string(),
            code.to_owned(),
            points.to_string(),
        ];
        let dob = (!date_missing).then_some(date);
        let sex = (!sex_missing).then_some(person.m.sex);
        Row {
            fields,
            dob,
            sex,
            version,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/// A CSV file being written, as `<name>.part`.
struct Out {
    part: PathBuf,
    w: csv::Writer<BufWriter<File>>,
}

impl Out {
    /// Creates `<path>.part` and writes the header.
    fn create(path: &Path, header: &str) -> Result<Self, SynthError> {
        let part = part(path);
        let f = File::create(&part).map_err(|source| SynthError::Create {
            path: part.clone(),
            source,
        })?;
        let w = csv::WriterBuilder::new()
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(BufWriter::with_capacity(1 << 20, f));
        let mut out = Self { part, w };
        out.write(header.split(','))?;
        Ok(out)
    }

    fn write<I, T>(&mut self, record: I) -> Result<(), SynthError>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        self.w.write_record(record).map_err(|e| self.error(e))
    }

    fn flush(mut self) -> Result<(), SynthError> {
        self.w.flush().map_err(|e| self.error(csv::Error::from(e)))
    }

    fn error(&self, source: csv::Error) -> SynthError {
        SynthError::Write {
            path: self.part.clone(),
            source,
        }
    }
}

fn part(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

/// Generates every holder's file, the truth file and the optional NDB view (layout in the
/// crate docs; columns [`HEADER`], [`NDB_HEADER`]). Memory does not grow with the number of
/// records.
///
/// # Errors
/// An option out of range (the [`SynthError`] variants named after options, before anything
/// is written), or a file that cannot be created, written or renamed.
pub fn run(options: &SynthOptions) -> Result<SynthReport, SynthError> {
    run_with_progress(options, &mut |_, _, _| {})
}

/// [`run`], calling `progress(holder letter, rows written, rows in all)` when a holder's file
/// is started and every 4096 rows (for a progress bar).
///
/// # Errors
/// As [`run`].
pub fn run_with_progress(
    options: &SynthOptions,
    progress: &mut dyn FnMut(char, u64, u64),
) -> Result<SynthReport, SynthError> {
    run_observed(options, &mut |_, _, _| {}, progress)
}

/// [`run_with_progress`], calling `observe(holder, id, person index)` for every row written
/// (for tests).
fn run_observed(
    args: &SynthOptions,
    observe: &mut dyn FnMut(usize, u64, u64),
    progress: &mut dyn FnMut(char, u64, u64),
) -> Result<SynthReport, SynthError> {
    let g = Gen::new(args)?;
    let holders = args.holders;
    let letter = |i: usize| char::from(b'a' + i as u8).to_string();
    let ndb_holder = match &args.ndb_view {
        Some(l) => match (0..holders).find(|&i| letter(i) == l.to_ascii_lowercase()) {
            Some(i) => Some(i),
            None => {
                return Err(SynthError::NdbView {
                    view: l.clone(),
                    last: char::from(b'a' + (holders - 1) as u8),
                });
            }
        },
        None => None,
    };
    let one_field_holder = match &args.one_name_field {
        Some(l) => match (0..holders).find(|&i| letter(i) == l.to_ascii_lowercase()) {
            Some(i) => Some(i),
            None => {
                return Err(SynthError::OneNameField {
                    view: l.clone(),
                    last: char::from(b'a' + (holders - 1) as u8),
                });
            }
        },
        None => None,
    };
    if args.out.is_file() {
        return Err(SynthError::OutIsFile(args.out.clone()));
    }
    std::fs::create_dir_all(&args.out).map_err(|source| SynthError::Create {
        path: args.out.clone(),
        source,
    })?;
    let file = |name: String| args.out.join(format!("{}_{name}.csv", args.prefix));
    let truth_path = file("truth".into());
    let mut truth = Out::create(
        &truth_path,
        if holders <= 2 {
            "id_a,id_b"
        } else {
            "party_a,id_a,party_b,id_b"
        },
    )?;
    let total: u64 = g.n.iter().sum();
    let (mut done, mut pairs) = (0u64, 0u64);
    let mut reports = Vec::new();
    let mut finals = vec![(part(&truth_path), truth_path.clone())];
    let mut ndb_path = None;
    for i in 0..holders {
        progress(char::from(b'a' + i as u8), done, total);
        let path = file(letter(i));
        let one_field = one_field_holder == Some(i);
        let mut w = Out::create(
            &path,
            if one_field {
                HEADER_ONE_NAME_FIELD
            } else {
                HEADER
            },
        )?;
        finals.push((part(&path), path.clone()));
        let mut ndb = match ndb_holder {
            Some(h) if h == i => {
                let p = file(format!("{}_ndb", letter(i)));
                let nw = Out::create(&p, NDB_HEADER)?;
                finals.push((part(&p), p.clone()));
                ndb_path = Some(p);
                Some(nw)
            }
            _ => None,
        };
        let (mut shared, mut changed) = (0u64, 0u64);
        for id in 0..g.n[i] {
            let p = g.person_at(i, g.ids[i].apply(id));
            observe(i, id, p);
            let person = g.person(p);
            let row = g.record(i, p, &person, id);
            if p < g.n[0] {
                shared += 1;
                changed += u64::from(row.version > 0);
            }
            if one_field {
                let f = &row.fields;
                let [name, kana] = one_name_field(f, key(args.seed, T_ONE_FIELD, i as u64, id));
                w.write(std::iter::once(&f[0]).chain([&name, &kana]).chain(&f[5..]))?;
            } else {
                w.write(&row.fields)?;
            }
            if let Some(nw) = ndb.as_mut() {
                let [id1, id1_branch, id4] = ndb_digests(&row);
                let f = &row.fields;
                nw.write([
                    &f[0],
                    &id1,
                    &id1_branch,
                    &id4,
                    &f[15],
                    &f[16],
                    &f[17],
                    &f[18],
                ])?;
            }
            for e in 0..i {
                if let Some(k) = g.rank(e, p) {
                    let other = g.ids[e].invert(k).to_string();
                    if holders <= 2 {
                        truth.write([other.as_str(), &row.fields[0]])?;
                    } else {
                        truth.write([letter(e).as_str(), &other, &letter(i), &row.fields[0]])?;
                    }
                    pairs += 1;
                }
            }
            done += 1;
            if done % 4096 == 0 {
                progress(char::from(b'a' + i as u8), done, total);
            }
        }
        w.flush()?;
        if let Some(nw) = ndb {
            nw.flush()?;
        }
        reports.push(HolderReport {
            party: letter(i),
            path,
            records: g.n[i],
            shared_with_first: shared,
            insurer_changed: changed,
        });
    }
    truth.flush()?;
    for (from, to) in finals {
        std::fs::rename(&from, &to).map_err(|source| SynthError::Rename { from, to, source })?;
    }
    let persons = g.n[0] + (1..holders).map(|i| g.n[i] - g.m[i]).sum::<u64>();
    Ok(SynthReport {
        holders: reports,
        persons,
        true_pairs: pairs,
        truth: truth_path,
        ndb: ndb_path,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use super::*;

    fn args(dir: &Path, holders: usize, records: &[u64], corruption: f64) -> SynthOptions {
        SynthOptions {
            out: dir.to_path_buf(),
            prefix: "t".into(),
            holders,
            records: records.to_vec(),
            overlap: 0.5,
            seed: 7,
            insurer_change_rate: 0.11,
            corruption,
            ndb_view: None,
            one_name_field: None,
            today: "2026-11-22".into(),
        }
    }

    /// Runs the generator and returns its report and (holder, id) → hidden person index.
    fn observed(a: &SynthOptions) -> (SynthReport, HashMap<(usize, u64), u64>) {
        let mut seen = HashMap::new();
        let rep = run_observed(
            a,
            &mut |h, id, p| {
                seen.insert((h, id), p);
            },
            &mut |_, _, _| {},
        )
        .unwrap();
        (rep, seen)
    }

    fn read(path: &Path) -> Vec<Vec<String>> {
        let mut r = csv::Reader::from_path(path).unwrap();
        r.records()
            .map(|x| x.unwrap().iter().map(str::to_owned).collect())
            .collect()
    }

    fn col(name: &str) -> usize {
        HEADER.split(',').position(|c| c == name).unwrap()
    }

    #[test]
    fn check_digits_of_the_documented_examples() {
        assert_eq!(insurer_check_digit("3312001"), 5);
        for ok in ["33120015", "01130012", "131011"] {
            assert!(insurer_number_is_valid(ok), "{ok}");
        }
        for bad in ["33120016", "01130013", "131012", "3312001", "", "3312001５"] {
            assert!(!insurer_number_is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn permutation_is_a_bijection_with_an_inverse() {
        for n in [1u64, 2, 3, 5, 17, 100, 1000, 4097] {
            let p = Perm::new(n, 99);
            let image: BTreeSet<u64> = (0..n).map(|x| p.apply(x)).collect();
            assert_eq!(image, (0..n).collect(), "n = {n}");
            assert!((0..n).all(|x| p.invert(p.apply(x)) == x));
        }
        assert_ne!(
            (0..10)
                .map(|x| Perm::new(1000, 1).apply(x))
                .collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>()
        );
    }

    #[test]
    fn name_tables_are_large_enough_and_readings_are_katakana() {
        let t = tables();
        assert!(t.surnames.len() >= 150);
        assert!(t.given[0].len() >= 120 && t.given[1].len() >= 120);
        assert_eq!(t.places.len(), 47);
        let katakana =
            |s: &str| !s.is_empty() && s.chars().all(|c| ('ァ'..='ヶ').contains(&c) || c == 'ー');
        for (k, r) in t.surnames.iter().chain(t.given.iter().flatten()) {
            assert!(katakana(r), "{k} {r}");
        }
        assert_eq!(t.surnames[0], ("佐藤", "サトウ"));
        assert!(t.surname_cum.windows(2).all(|w| w[1] > w[0]));
        assert_eq!(FW_KANA.chars().count(), HW_KANA.chars().count());
        assert_eq!(VOICED.chars().count(), UNVOICED.chars().count());
    }

    #[test]
    fn kana_corruptions() {
        let t = tables();
        for (_, r) in t.surnames.iter().chain(t.given.iter().flatten()) {
            assert_eq!(
                to_halfwidth(r).nfkc().collect::<String>(),
                *r,
                "half-width {r} must fold back under NFKC"
            );
            let back: String = to_hiragana(r)
                .chars()
                .map(|c| {
                    if ('ぁ'..='ゖ').contains(&c) {
                        char::from_u32(c as u32 + 0x60).unwrap()
                    } else {
                        c
                    }
                })
                .collect();
            assert_eq!(back, *r);
        }
        assert_eq!(to_halfwidth("ササキ"), "ｻｻｷ");
        assert_eq!(to_halfwidth("シズカ"), "ｼｽﾞｶ");
        assert_eq!(to_hiragana("サイトウ"), "さいとう");
        assert_eq!(long_vowel("サトウ"), "サトー");
        assert_eq!(long_vowel("オオタ"), "オータ");
        assert_eq!(long_vowel("キョウコ"), "キョーコ");
        assert_eq!(long_vowel("ケイコ"), "ケーコ");
        assert_eq!(long_vowel("ハナコ"), "ハナコ");
        assert_eq!(drop_one_voiced(&mut Rng::new(1), "シズカ"), "シスカ");
        let large: String = "キョウ"
            .chars()
            .map(|c| map_char(c, SMALL, LARGE).unwrap_or(c))
            .collect();
        assert_eq!(large, "キヨウ");
        assert_eq!(fullwidth("0715-3/"), "０７１５－３／");
    }

    #[test]
    fn era_and_other_date_formats() {
        let d = (1970, 3, 15);
        let want = [
            (DateFmt::Iso, "1970-03-15"),
            (DateFmt::Compact, "19700315"),
            (DateFmt::Slash, "1970/3/15"),
            (DateFmt::Kanji, "1970年3月15日"),
            (DateFmt::EraDot, "S45.03.15"),
            (DateFmt::EraKanji, "昭和45年3月15日"),
            (DateFmt::Receipt, "3450315"),
        ];
        for (f, s) in want {
            assert_eq!(format_date(d, f), s);
        }
        assert_eq!(
            format_date((1989, 1, 8), DateFmt::EraKanji),
            "平成元年1月8日"
        );
        assert_eq!(format_date((1989, 1, 7), DateFmt::EraDot), "S64.01.07");
        assert_eq!(format_date((2019, 5, 1), DateFmt::Receipt), "5010501");
        assert_eq!(format_date((1926, 12, 24), DateFmt::EraDot), "T15.12.24");
        for z in [-1000, 0, 59, 60, 10_000, 20_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn every_generated_insurer_number_has_a_valid_check_digit() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(dir.path(), 3, &[4000], 0.0);
        a.insurer_change_rate = 0.5;
        run(&a).unwrap();
        let mut lens = BTreeSet::new();
        for h in ["a", "b", "c"] {
            for row in read(&dir.path().join(format!("t_{h}.csv"))) {
                let ins = &row[col("insurer_number")];
                assert!(insurer_number_is_valid(ins), "holder {h}: {ins}");
                lens.insert(ins.len());
            }
        }
        assert_eq!(lens, BTreeSet::from([6, 8]));
        // And straight from the card generator, over many persons and card versions.
        let g = Gen::new(&a).unwrap();
        for p in 0..20_000 {
            let person = g.person(p);
            for v in 0..3 {
                let c = g.card(&person, v);
                assert!(insurer_number_is_valid(&c.insurer), "{c:?}");
                assert!(!c.number.is_empty() && c.number.bytes().all(|b| b.is_ascii_digit()));
            }
            assert_ne!(g.card(&person, 0).insurer, g.card(&person, 1).insurer);
        }
    }

    #[test]
    fn same_seed_and_flags_give_byte_identical_files() {
        let (d1, d2, d3) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let mut a = args(d1.path(), 3, &[3000, 2000, 1000], 1.0);
        a.ndb_view = Some("b".into());
        run(&a).unwrap();
        a.out = d2.path().to_path_buf();
        run(&a).unwrap();
        a.out = d3.path().to_path_buf();
        a.seed += 1;
        run(&a).unwrap();
        for f in [
            "t_a.csv",
            "t_b.csv",
            "t_c.csv",
            "t_truth.csv",
            "t_b_ndb.csv",
        ] {
            let (x, y, z) = (
                std::fs::read(d1.path().join(f)).unwrap(),
                std::fs::read(d2.path().join(f)).unwrap(),
                std::fs::read(d3.path().join(f)).unwrap(),
            );
            assert!(x == y, "{f} differs between two runs");
            assert!(x != z, "{f} does not depend on the seed");
        }
        let names: BTreeSet<_> = std::fs::read_dir(d1.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 5, "no .part files left: {names:?}");
    }

    /// Truth = exactly the cross-holder pairs of rows with the same hidden person.
    fn check_truth(a: &SynthOptions) {
        let (rep, seen) = observed(a);
        let letters = "abcdefghijklmnopqrstuvwxyz";
        let mut by_person: HashMap<u64, Vec<(usize, u64)>> = HashMap::new();
        for (&(h, id), &p) in &seen {
            by_person.entry(p).or_default().push((h, id));
        }
        let mut want = BTreeSet::new();
        for rows in by_person.values() {
            assert!(
                rows.iter().map(|r| r.0).collect::<BTreeSet<_>>().len() == rows.len(),
                "a person twice in one holder"
            );
            for x in rows {
                for y in rows {
                    if x.0 < y.0 {
                        want.insert((x.0, x.1, y.0, y.1));
                    }
                }
            }
        }
        let rows = read(&rep.truth);
        let got: BTreeSet<_> = rows
            .iter()
            .map(|r| match r.len() {
                2 => (0, r[0].parse().unwrap(), 1, r[1].parse().unwrap()),
                _ => (
                    letters.find(&r[0]).unwrap(),
                    r[1].parse().unwrap(),
                    letters.find(&r[2]).unwrap(),
                    r[3].parse().unwrap(),
                ),
            })
            .collect();
        assert_eq!(got.len(), rows.len(), "duplicate truth rows");
        assert_eq!(got, want);
        assert_eq!(rep.true_pairs, want.len() as u64);
        assert_eq!(rep.persons, by_person.len() as u64);
        for (i, h) in rep.holders.iter().enumerate() {
            assert_eq!(h.records, a.records[i.min(a.records.len() - 1)]);
            assert_eq!(read(&h.path).len() as u64, h.records);
            let ids: BTreeSet<u64> = read(&h.path)
                .iter()
                .map(|r| r[0].parse().unwrap())
                .collect();
            assert_eq!(ids, (0..h.records).collect(), "ids are 0..N");
        }
    }

    #[test]
    fn truth_pairs_are_exactly_the_same_person_pairs() {
        let dir = tempfile::tempdir().unwrap();
        check_truth(&args(dir.path(), 2, &[2001], 1.0));
        check_truth(&args(dir.path(), 3, &[1500, 1203, 700], 1.0));
        let mut a = args(dir.path(), 4, &[999, 2000, 500, 1001], 1.0);
        a.overlap = 0.9; // more than a's size for b: capped
        check_truth(&a);
        let (rep, _) = observed(&a);
        assert_eq!(rep.holders[1].shared_with_first, 999);
        assert_eq!(rep.holders[2].shared_with_first, 450);
        let (rep, _) = observed(&args(dir.path(), 2, &[3000], 1.0));
        assert_eq!((rep.true_pairs, rep.persons), (1500, 4500));
    }

    #[test]
    fn family_members_share_a_card_with_distinct_branches_and_twins_exist() {
        let dir = tempfile::tempdir().unwrap();
        let (rep, seen) = observed(&args(dir.path(), 2, &[20_000], 0.0));
        for (h, holder) in rep.holders.iter().enumerate() {
            type Members = Vec<(u64, String, String)>;
            let mut cards: HashMap<[String; 3], Members> = HashMap::new();
            for r in read(&holder.path) {
                let p = seen[&(h, r[0].parse().unwrap())];
                let card = ["insurer_number", "insured_symbol", "insured_number"]
                    .map(|c| r[col(c)].clone());
                cards.entry(card).or_default().push((
                    p,
                    r[col("branch")].clone(),
                    r[col("birth_date")].clone(),
                ));
            }
            let (mut shared, mut twins) = (0, 0);
            for (card, members) in &cards {
                let branches: BTreeSet<_> = members.iter().map(|m| &m.1).collect();
                assert_eq!(branches.len(), members.len(), "branches repeat on {card:?}");
                if members.len() > 1 {
                    shared += 1;
                    assert!(
                        members.iter().all(|m| m.0 / 4 == members[0].0 / 4),
                        "card {card:?} shared outside a household"
                    );
                    assert!(branches.contains(&"00".to_owned()) || h > 0);
                    let dobs: BTreeSet<_> = members.iter().map(|m| &m.2).collect();
                    twins += members.len() - dobs.len();
                }
            }
            assert!(shared > 1000, "holder {h}: only {shared} shared cards");
            assert!(twins >= 5, "holder {h}: only {twins} twins");
        }
    }

    #[test]
    fn about_the_configured_share_of_people_change_insurer() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(dir.path(), 2, &[20_000], 0.0);
        a.overlap = 1.0;
        let (rep, seen) = observed(&a);
        let ins = |h: usize| -> HashMap<u64, String> {
            read(&rep.holders[h].path)
                .into_iter()
                .map(|r| {
                    (
                        seen[&(h, r[0].parse().unwrap())],
                        r[col("insurer_number")].clone(),
                    )
                })
                .collect()
        };
        let (x, y) = (ins(0), ins(1));
        let changed = x.iter().filter(|(p, i)| y[*p] != **i).count();
        let share = changed as f64 / x.len() as f64;
        assert!((0.09..0.13).contains(&share), "{share}");
        assert_eq!(rep.holders[1].insurer_changed, changed as u64);
    }

    #[test]
    fn ages_sexes_and_care_numbers_are_plausible() {
        let dir = tempfile::tempdir().unwrap();
        let rep = run(&args(dir.path(), 1, &[20_000], 0.0)).unwrap();
        let rows = read(&rep.holders[0].path);
        let (mut old, mut care_old, mut care_young) = (0, 0, 0);
        for r in &rows {
            let y: i64 = r[col("birth_date")][..4].parse().unwrap();
            assert!((1925..=2026).contains(&y));
            assert!(["1", "2"].contains(&r[col("sex")].as_str()));
            assert_eq!(r[col("postcode")].len(), 7);
            let care = &r[col("care_insured_number")];
            assert!(care.is_empty() || care.len() == 10);
            if 2026 - y >= 66 {
                old += 1;
                care_old += usize::from(!care.is_empty());
            } else if 2026 - y < 64 {
                care_young += usize::from(!care.is_empty());
            }
            assert_eq!(r[col("main_diagnosis")].len(), 3);
        }
        let share = old as f64 / rows.len() as f64;
        assert!((0.2..0.4).contains(&share), "65+ share {share}");
        assert!(
            care_old as f64 > 0.9 * old as f64 && (care_young as f64) < 0.03 * rows.len() as f64
        );
    }

    /// Reads any of the generator's date formats, independently of `format_date`.
    fn parse_date(s: &str) -> Option<String> {
        let s: String = s.nfkc().collect();
        if s.is_empty() {
            return None;
        }
        let eras = [
            ("明治", 1867),
            ("大正", 1911),
            ("昭和", 1925),
            ("平成", 1988),
            ("令和", 2018),
        ];
        let nums = |t: &str| -> Vec<i64> {
            t.replace('元', "1")
                .split(|c: char| !c.is_ascii_digit())
                .filter(|x| !x.is_empty())
                .map(|x| x.parse().unwrap())
                .collect()
        };
        let (y, m, d) = if let Some(&(e, base)) = eras.iter().find(|(e, _)| s.starts_with(e)) {
            let n = nums(&s[e.len()..]);
            (base + n[0], n[1], n[2])
        } else if let Some(i) = "MTSHR".find(&s[..1]) {
            let n = nums(&s[1..]);
            (eras[i].1 + n[0], n[1], n[2])
        } else if s.len() == 7 && s.bytes().all(|b| b.is_ascii_digit()) {
            let era = eras[s[..1].parse::<usize>().unwrap() - 1].1;
            (
                era + s[1..3].parse::<i64>().unwrap(),
                s[3..5].parse().unwrap(),
                s[5..].parse().unwrap(),
            )
        } else if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()) {
            (
                s[..4].parse().unwrap(),
                s[4..6].parse().unwrap(),
                s[6..].parse().unwrap(),
            )
        } else {
            let n = nums(&s);
            (n[0], n[1], n[2])
        };
        Some(format!("{y:04}{m:02}{d:02}"))
    }

    #[test]
    fn ndb_view_digests_are_sha256_of_the_documented_preimages() {
        // Known answer from ../shared/data/jp_ins/jp_ins_b_ndb.csv (row 0 of jp_ins_b.csv).
        let (ins, sym, num) = (
            ndb_canon("06479570"),
            ndb_canon("４１９１"),
            ndb_canon("８９５９２"),
        );
        assert_eq!(
            sha256_hex(&format!("{ins}|{sym}|{num}|19510813|2")),
            "e12d6ffb53d95bd5839b1c3f5eca6f3f918140af8d561ec831498242fa00eb57"
        );
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(dir.path(), 2, &[5000], 2.0);
        a.ndb_view = Some("B".into());
        let rep = run(&a).unwrap();
        let (b, n) = (read(&rep.holders[1].path), read(rep.ndb.as_ref().unwrap()));
        assert_eq!(b.len(), n.len());
        let canon = |s: &str| -> String {
            s.nfkc()
                .collect::<String>()
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect()
        };
        let sha = |s: String| -> String {
            Sha256::digest(s.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        };
        let mut counts = [0usize; 3];
        for (r, x) in b.iter().zip(&n) {
            assert_eq!(r[0], x[0]);
            assert_eq!(&r[15..], &x[4..], "content columns");
            let sex = match r[col("sex")].as_str() {
                "1" | "M" | "男" | "male" => Some("1"),
                "2" | "F" | "女" | "female" => Some("2"),
                _ => None,
            };
            let dob = parse_date(&r[col("birth_date")]);
            let [ins, sym, num, br] = [
                "insurer_number",
                "insured_symbol",
                "insured_number",
                "branch",
            ]
            .map(|c| canon(&r[col(c)]));
            let kana = canon(&r[col("last_name_kana")]) + &canon(&r[col("first_name_kana")]);
            let want = match (dob, sex) {
                (Some(d), Some(s)) => [
                    (!ins.is_empty() && !num.is_empty())
                        .then(|| sha(format!("{ins}|{sym}|{num}|{d}|{s}"))),
                    (!ins.is_empty() && !num.is_empty() && !br.is_empty())
                        .then(|| sha(format!("{ins}|{sym}|{num}|{br}|{d}|{s}"))),
                    (!kana.is_empty()).then(|| sha(format!("{kana}|{d}|{s}"))),
                ],
                _ => [None, None, None],
            };
            for k in 0..3 {
                assert_eq!(
                    want[k].clone().unwrap_or_default(),
                    x[1 + k],
                    "row {} digest {k}",
                    r[0]
                );
                counts[k] += usize::from(want[k].is_some());
            }
        }
        assert!(counts.iter().all(|&c| c > 1000 && c < 5000), "{counts:?}");
    }

    #[test]
    fn bad_options_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ok = args(dir.path(), 2, &[10], 1.0);
        type Change = fn(&mut SynthOptions);
        let bad: [(Change, &str); 9] = [
            (|a| a.holders = 0, "--holders must be 1-26"),
            (|a| a.holders = 27, "--holders must be 1-26"),
            (
                |a| a.records = vec![1, 2, 3],
                "--records: give one number or one per holder (2)",
            ),
            (
                |a| a.overlap = 1.5,
                "--overlap and --insurer-change-rate must be 0-1",
            ),
            (|a| a.corruption = f64::NAN, "--corruption must be >= 0"),
            (
                |a| a.today = "2026-02-30".into(),
                "--today \"2026-02-30\": expected YYYY-MM-DD",
            ),
            (
                |a| a.ndb_view = Some("c".into()),
                "--ndb-view \"c\": expected a holder letter a-b",
            ),
            (
                |a| a.prefix = "x/y".into(),
                "--prefix must be a plain file name part",
            ),
            (
                |a| a.out = a.out.join("t_truth.csv"),
                "is a file; give a directory",
            ),
        ];
        run(&ok).unwrap();
        for (f, message) in bad {
            let mut a = ok.clone();
            f(&mut a);
            let e = run(&a).expect_err(message);
            assert!(e.to_string().ends_with(message), "{e} for {a:?}");
        }
    }

    #[test]
    fn one_name_field_joins_the_split_names_with_each_separator() {
        let f: Vec<String> = ["0", "山田", "太郎", "ヤマダ", "タロウ"]
            .iter()
            .map(|x| (*x).to_owned())
            .collect();
        let seen: BTreeSet<String> = (0..200u64)
            .map(|k| one_name_field(&f, key(1, T_ONE_FIELD, 0, k))[0].clone())
            .collect();
        let want: BTreeSet<String> = ["山田\u{3000}太郎", "山田 太郎", "山田太郎"]
            .iter()
            .map(|x| (*x).to_owned())
            .collect();
        assert_eq!(seen, want);
        // An empty part leaves no separator: a family name alone stays as it is.
        let mut g = f.clone();
        g[2].clear();
        g[4].clear();
        assert_eq!(
            one_name_field(&g, 0),
            ["山田".to_owned(), "ヤマダ".to_owned()]
        );
    }
}
