//! Throughput of the Japanese normalizers, in records per second on one core.
//!
//! Acceptance point (issue "Japanese identifiers"): normalization of kana name + kanji name +
//! date + sex + insurer fields ≥ 1,000,000 records/s/core.
//!
//! Setup (untimed): 1,000,000 records generated deterministically (splitmix64), each with a
//! kana full name (katakana, 20 % hiragana, 10 % half-width), a kanji full name (5 % variant
//! glyphs such as 髙/﨑/邊), a birth date (ISO, `YYYYMMDD`, `S45.03.15`, `昭和45年3月15日` or
//! receipt `GYYMMDD`, 20 % each), sex (`1`/`2`/`M`/`F`/`男`/`女`), insurer number (6 or 8 digits,
//! valid check digit, 20 % full-width), 記号, 番号 and 枝番. Every value is valid.
//!
//! Benchmarks (criterion, one thread, `Throughput::Elements(1_000_000)`: the `thrpt:` line is
//! records/s/core):
//! - `normalize/strict_8_fields`: kana_name, kanji_name, birth_date, sex, insurer_number,
//!   insured_symbol, insured_number, branch_number: eight normalizer calls per record;
//! - `normalize/with_fuzzy_9_fields`: the same plus kana_name_fuzzy.
//!
//! ```text
//! cargo bench -p renketsu-linkage --bench normalize
//! ```

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use renketsu_linkage::normalize::insurer_check_digit;
use renketsu_linkage::{NormalizeContext, Normalizer};

const N: usize = 1_000_000;

const KANA_FAMILY: [&str; 12] = [
    "サトウ",
    "スズキ",
    "タカハシ",
    "タナカ",
    "ワタナベ",
    "イトウ",
    "ヤマモト",
    "ナカムラ",
    "コバヤシ",
    "カトウ",
    "ヨシダ",
    "ヤマダ",
];
const KANJI_FAMILY: [&str; 12] = [
    "佐藤", "鈴木", "髙橋", "田中", "渡邊", "伊藤", "山本", "中村", "小林", "加藤", "𠮷田", "山﨑",
];
const KANA_GIVEN: [&str; 8] = [
    "タロウ",
    "ハナコ",
    "ショウタ",
    "ヒナ",
    "キョウヘイ",
    "ユウキ",
    "カズコ",
    "マサユキ",
];
const KANJI_GIVEN: [&str; 8] = [
    "太郎", "花子", "翔太", "陽菜", "恭平", "優希", "和子", "雅之",
];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn half_width(s: &str) -> String {
    // A few katakana in half-width form; NFKC must fold them back.
    s.chars()
        .map(|c| match c {
            'サ' => 'ｻ',
            'タ' => 'ﾀ',
            'ヤ' => 'ﾔ',
            'ナ' => 'ﾅ',
            'カ' => 'ｶ',
            'ロ' => 'ﾛ',
            'ウ' => 'ｳ',
            c => c,
        })
        .collect()
}

fn full_width(s: &str) -> String {
    s.chars()
        .map(|c| char::from_u32(c as u32 - 0x30 + 0xFF10).unwrap())
        .collect()
}

fn insurer(rng: &mut Rng) -> String {
    let body_len = if rng.below(4) == 0 { 5 } else { 7 };
    let body: Vec<u8> = (0..body_len)
        .map(|i| {
            if i == 0 && body_len == 7 {
                b'0' + 1 + rng.below(8) as u8
            } else {
                b'0' + rng.below(10) as u8
            }
        })
        .collect();
    let check = insurer_check_digit(&body);
    let mut s = String::from_utf8(body).unwrap();
    s.push(char::from(b'0' + check));
    if rng.below(5) == 0 { full_width(&s) } else { s }
}

fn generate() -> Vec<[String; 9]> {
    let mut rng = Rng(20_261_122);
    (0..N)
        .map(|_| {
            let (f, g) = (rng.below(KANA_FAMILY.len()), rng.below(KANA_GIVEN.len()));
            let kana = format!("{} {}", KANA_FAMILY[f], KANA_GIVEN[g]);
            let kana = match rng.below(10) {
                0 | 1 => kana
                    .chars()
                    .map(renketsu_linkage::normalize::kana::to_hiragana)
                    .collect(),
                2 => half_width(&kana),
                _ => kana,
            };
            let kanji = format!("{}\u{3000}{}", KANJI_FAMILY[f], KANJI_GIVEN[g]);
            let (y, m, d) = (
                1930 + rng.below(60) as u32,
                1 + rng.below(12) as u32,
                1 + rng.below(28) as u32,
            );
            let date = match rng.below(5) {
                0 => format!("{y:04}-{m:02}-{d:02}"),
                1 => format!("{y:04}{m:02}{d:02}"),
                2 if y < 1989 => format!("S{:02}.{m:02}.{d:02}", y - 1925),
                3 if y < 1989 => format!("昭和{}年{m}月{d}日", y - 1925),
                4 if y < 1989 => format!("3{:02}{m:02}{d:02}", y - 1925),
                _ => format!("{y}/{m}/{d}"),
            };
            let sex = ["1", "2", "M", "F", "男", "女"][rng.below(6)].to_owned();
            let symbol = format!("{}", 100 + rng.below(9000));
            let number = format!("{:07}", rng.below(10_000_000));
            let branch = format!("{:02}", rng.below(5));
            [
                kana.clone(),
                kanji,
                date,
                sex,
                insurer(&mut rng),
                symbol,
                number,
                branch,
                kana,
            ]
        })
        .collect()
}

const STRICT: [Normalizer; 8] = [
    Normalizer::KanaName,
    Normalizer::KanjiName,
    Normalizer::BirthDate,
    Normalizer::Sex,
    Normalizer::InsurerNumber,
    Normalizer::InsuredSymbol,
    Normalizer::InsuredNumber,
    Normalizer::BranchNumber,
];

fn run(
    records: &[[String; 9]],
    kinds: &[Normalizer],
    out: &mut [String; 9],
    ctx: &NormalizeContext,
) -> usize {
    let mut bytes = 0;
    for r in records {
        for (i, k) in kinds.iter().enumerate() {
            if k.apply(&r[i], ctx, &mut out[i]).is_ok() {
                bytes += out[i].len();
            }
        }
    }
    bytes
}

fn bench(c: &mut Criterion) {
    let ctx = NormalizeContext::with_today(2026, 11, 22);
    let records = generate();
    let mut out: [String; 9] = Default::default();
    // Every generated value is valid (checked once, untimed).
    for r in records.iter().take(100_000) {
        for (i, k) in STRICT.iter().enumerate() {
            assert!(
                k.apply(&r[i], &ctx, &mut out[i]).is_ok(),
                "{k:?} {:?}",
                r[i]
            );
        }
    }
    let mut fuzzy = STRICT.to_vec();
    fuzzy.push(Normalizer::KanaNameFuzzy);
    let mut g = c.benchmark_group("normalize");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10);
    g.sampling_mode(criterion::SamplingMode::Flat);
    g.bench_function("strict_8_fields", |b| {
        b.iter(|| black_box(run(black_box(&records), &STRICT, &mut out, &ctx)))
    });
    g.bench_function("with_fuzzy_9_fields", |b| {
        b.iter(|| black_box(run(black_box(&records), &fuzzy, &mut out, &ctx)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
