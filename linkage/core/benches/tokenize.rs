//! Tokenization throughput of the exact-token pipeline, in records per second on one core.
//!
//! Acceptance point: "A `cargo bench` target measures tokenization throughput on ≥ 1,000,000
//! generated records (records/s per core, 3 recipes). Target: ≥ 1,000,000 records/s/core
//! excluding CSV parsing."
//!
//! Setup (outside every timed loop):
//! - 1,000,000 synthetic records are generated deterministically (splitmix64, fixed seed),
//!   already split into fields (so no CSV parsing is measured), with raw values shaped like
//!   FEBRL / Japanese registry data:
//!   - `given_name`, `surname`: 80 % ASCII lower case (4–10 letters), 10 % upper case or
//!     capitalized ASCII, 5 % full-width Latin (`ＳＡＲＡＨ`), 5 % katakana (half of it
//!     half-width, `ﾔﾏﾀﾞ`) — the last two take the NFKC slow path;
//!   - `birth_date`: a valid day in 1920–2019, half `YYYYMMDD`, half `YYYY-MM-DD`;
//!   - `sex`: `1`, `2`, `F` or `M`;
//!   - `postcode`: 7 digits, 30 % written `NNN-NNNN`.
//! - Schema: those five fields (normalizers `text`, `text`, `date`, `sex`, `digits`) and three
//!   recipes, `name_dob_sex`, `surname_dob_postcode`, `given_dob_postcode`. Every generated
//!   record is valid, so every record yields exactly three tokens (checked before timing).
//!
//! Benchmarks (group `tokenize`, one thread, `Throughput::Elements(1_000_000)`, so the
//! `thrpt:` line criterion prints is records/s per core; each iteration processes all
//! records, 10 samples in flat sampling mode):
//! - `tokenize/normalize+3_recipes`: [`Tokenizer::tokenize`] of the raw values, reusing one
//!   [`RecordTokens`]: normalization of 5 fields + 3 HMAC-SHA256 tokens per record.
//! - `tokenize/hmac_only_3_recipes`: the same records pre-normalized once (outside the loop)
//!   and tokenized with a copy of the schema whose fields all use normalizer `raw` (trim and
//!   copy only), isolating the preimage + HMAC cost. The field and recipe names are the same,
//!   so its tokens equal those of the first benchmark (checked before timing).
//!
//! The difference between the two is the cost of the `text`/`date`/`sex`/`digits`
//! normalizers.
//!
//! Run (release profile `bench`; a few minutes on a 2-core machine):
//!
//! ```text
//! cargo bench -p renketsu-linkage --bench tokenize
//! cargo bench -p renketsu-linkage --bench tokenize -- hmac_only   # one benchmark only
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use renketsu_linkage::normalize::days_in_month;
use renketsu_linkage::tokenizer::Binding;
use renketsu_linkage::{NormalizeContext, ProjectSecret, RecordTokens, Schema, Tokenizer};

/// Number of generated records processed by every benchmark iteration.
const N_RECORDS: usize = 1_000_000;

/// Number of recipes in the schema (tokens per valid record).
const N_RECIPES: usize = 3;

/// Logical field order of the generator; the schema orders its fields by name, so values are
/// stored in schema order via [`field_slots`].
const FIELDS: [&str; 5] = ["given_name", "surname", "birth_date", "sex", "postcode"];

/// Fixed seed: the generated data set is the same on every run.
const SEED: u64 = 0x7265_6e6b_6574_7375; // "renketsu"

/// The benchmark schema; `{text}`, `{date}`, … are replaced by normalizer names.
const SCHEMA_TEMPLATE: &str = r#"
schema_format = 1
name = "bench"
version = 1

[fields.given_name]
column = "given_name"
normalizer = "{text}"

[fields.surname]
column = "surname"
normalizer = "{text}"

[fields.birth_date]
column = "birth_date"
normalizer = "{date}"

[fields.sex]
column = "sex"
normalizer = "{sex}"

[fields.postcode]
column = "postcode"
normalizer = "{digits}"

[[recipes]]
name = "name_dob_sex"
version = 1
fields = ["given_name", "surname", "birth_date", "sex"]

[[recipes]]
name = "surname_dob_postcode"
version = 1
fields = ["surname", "birth_date", "postcode"]

[[recipes]]
name = "given_dob_postcode"
version = 1
fields = ["given_name", "birth_date", "postcode"]
"#;

/// The benchmark schema with its real normalizers, or with every field `raw`.
fn schema(all_raw: bool) -> Schema {
    let mut src = SCHEMA_TEMPLATE.to_owned();
    for kind in ["text", "date", "sex", "digits"] {
        let name = if all_raw { "raw" } else { kind };
        src = src.replace(&format!("{{{kind}}}"), name);
    }
    Schema::from_toml(&src).expect("the benchmark schema is valid")
}

/// `slots[i]` is the schema field index of `FIELDS[i]`.
fn field_slots(schema: &Schema) -> [usize; FIELDS.len()] {
    assert_eq!(schema.fields.len(), FIELDS.len());
    FIELDS.map(|name| {
        schema
            .fields
            .iter()
            .position(|f| f.name == name)
            .expect("every generated field is in the schema")
    })
}

/// splitmix64: a tiny, fast, deterministic PRNG (not for anything secret).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (the modulo bias is irrelevant here).
    fn below(&mut self, n: u32) -> u32 {
        (self.next_u64() % u64::from(n)) as u32
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u32, hi: u32) -> u32 {
        lo + self.below(hi - lo + 1)
    }
}

/// Full-width katakana morae and their half-width spellings (NFKC maps the latter back).
const KATAKANA: [(&str, &str); 24] = [
    ("ア", "ｱ"),
    ("イ", "ｲ"),
    ("ウ", "ｳ"),
    ("カ", "ｶ"),
    ("キ", "ｷ"),
    ("サ", "ｻ"),
    ("シ", "ｼ"),
    ("タ", "ﾀ"),
    ("ト", "ﾄ"),
    ("ナ", "ﾅ"),
    ("ノ", "ﾉ"),
    ("ハ", "ﾊ"),
    ("ヒ", "ﾋ"),
    ("マ", "ﾏ"),
    ("ミ", "ﾐ"),
    ("ヤ", "ﾔ"),
    ("ユ", "ﾕ"),
    ("ラ", "ﾗ"),
    ("リ", "ﾘ"),
    ("ロ", "ﾛ"),
    ("ン", "ﾝ"),
    ("ダ", "ﾀﾞ"),
    ("ガ", "ｶﾞ"),
    ("ブ", "ﾌﾞ"),
];

/// Appends a raw name: mostly ASCII lower case, some upper case, full-width or katakana.
fn push_name(rng: &mut SplitMix64, out: &mut String) {
    let style = rng.below(100);
    if style >= 95 {
        let half_width = rng.below(2) == 1;
        for _ in 0..rng.range(2, 5) {
            let (full, half) = KATAKANA[rng.below(KATAKANA.len() as u32) as usize];
            out.push_str(if half_width { half } else { full });
        }
        return;
    }
    let len = rng.range(4, 10);
    for i in 0..len {
        let c = char::from(b'a' + rng.below(26) as u8);
        match style {
            // ASCII lower case.
            0..80 => out.push(c),
            // All upper case, or capitalized.
            80..85 => out.push(c.to_ascii_uppercase()),
            85..90 => out.push(if i == 0 { c.to_ascii_uppercase() } else { c }),
            // Full-width Latin capitals, U+FF21…
            _ => out.push(
                char::from_u32(0xFF21 + u32::from(c) - u32::from('a'))
                    .expect("full-width Latin letters are chars"),
            ),
        }
    }
}

/// Appends a valid birth date, `YYYYMMDD` or `YYYY-MM-DD`.
fn push_date(rng: &mut SplitMix64, out: &mut String) {
    use std::fmt::Write as _;
    let y = rng.range(1920, 2019);
    let m = rng.range(1, 12);
    let d = rng.range(1, days_in_month(y, m));
    if rng.below(2) == 0 {
        write!(out, "{y:04}{m:02}{d:02}")
    } else {
        write!(out, "{y:04}-{m:02}-{d:02}")
    }
    .expect("writing to a String cannot fail");
}

/// Appends a 7-digit postcode, sometimes written with the hyphen (`123-4567`).
fn push_postcode(rng: &mut SplitMix64, out: &mut String) {
    use std::fmt::Write as _;
    let n = rng.below(10_000_000);
    if rng.below(10) < 3 {
        write!(out, "{:03}-{:04}", n / 10_000, n % 10_000)
    } else {
        write!(out, "{n:07}")
    }
    .expect("writing to a String cannot fail");
}

/// Records already split into fields (the output of a CSV reader), stored in one arena:
/// field `j` of record `i` is `text[ends[k - 1]..ends[k]]` with `k = i * width + j`.
struct Records {
    width: usize,
    text: String,
    ends: Vec<usize>,
}

impl Records {
    fn with_capacity(width: usize, records: usize, bytes: usize) -> Self {
        Self {
            width,
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(records * width),
        }
    }

    fn len(&self) -> usize {
        self.ends.len() / self.width
    }

    fn push_field(&mut self, value: &str) {
        self.text.push_str(value);
        self.ends.push(self.text.len());
    }

    /// The fields of record `i`, in schema order.
    #[inline]
    fn get<const W: usize>(&self, i: usize) -> [&str; W] {
        debug_assert_eq!(W, self.width);
        let base = i * W;
        std::array::from_fn(|j| {
            let k = base + j;
            let start = if k == 0 { 0 } else { self.ends[k - 1] };
            &self.text[start..self.ends[k]]
        })
    }
}

/// Generates `n` raw records, fields in schema order (`slots` from [`field_slots`]).
fn generate(n: usize, slots: [usize; FIELDS.len()]) -> Records {
    let mut rng = SplitMix64(SEED);
    let mut records = Records::with_capacity(FIELDS.len(), n, n * 48);
    let mut values: [String; FIELDS.len()] = Default::default();
    for _ in 0..n {
        for v in &mut values {
            v.clear();
        }
        // Fixed generation order, independent of the schema order.
        push_name(&mut rng, &mut values[0]);
        push_name(&mut rng, &mut values[1]);
        push_date(&mut rng, &mut values[2]);
        values[3].push_str(["1", "2", "F", "M"][rng.below(4) as usize]);
        push_postcode(&mut rng, &mut values[4]);
        let mut ordered: [&str; FIELDS.len()] = [""; FIELDS.len()];
        for (logical, &slot) in slots.iter().enumerate() {
            ordered[slot] = &values[logical];
        }
        for v in ordered {
            records.push_field(v);
        }
    }
    records
}

/// Tokenizes every record; returns a checksum (sum of the first byte of each token) and the
/// number of tokens. This is the timed body of both benchmarks.
#[inline]
fn tokenize_all(
    tokenizer: &Tokenizer,
    binding: &Binding,
    records: &Records,
    out: &mut RecordTokens,
) -> (u64, usize) {
    let mut acc = 0u64;
    let mut count = 0usize;
    for i in 0..records.len() {
        tokenizer.tokenize(binding, &records.get::<{ FIELDS.len() }>(i), out);
        count += out.tokens.len();
        for (_, token) in &out.tokens {
            acc = acc.wrapping_add(u64::from(token[0]));
        }
    }
    (acc, count)
}

fn bench_tokenize(c: &mut Criterion) {
    let secret = ProjectSecret::from_bytes([0x5A; 32]);
    let ctx = NormalizeContext::with_today(2026, 1, 1);
    let normalizing_schema = schema(false);
    let raw_schema = schema(true);
    let slots = field_slots(&normalizing_schema);
    assert_eq!(slots, field_slots(&raw_schema));
    assert_eq!(normalizing_schema.recipes.len(), N_RECIPES);

    let normalizing = Tokenizer::new(&normalizing_schema, &secret, "bench", ctx);
    let hmac_only = Tokenizer::new(&raw_schema, &secret, "bench", ctx);
    // Records hold values in schema field order; a header of the fields' columns in that
    // order binds column i to field i (both schemas use the same columns).
    let header: Vec<&str> = normalizing_schema
        .fields
        .iter()
        .map(|f| f.columns[0].as_str())
        .collect();
    let binding = normalizing.bind(&header);
    assert_eq!(binding.columns, (0..FIELDS.len()).collect::<Vec<_>>());

    // Untimed setup: generate, then normalize once for the HMAC-only benchmark.
    let raw = generate(N_RECORDS, slots);
    let mut normalized = Records::with_capacity(FIELDS.len(), N_RECORDS, raw.text.len());
    let mut out = RecordTokens::default();
    for i in 0..raw.len() {
        normalizing.tokenize(&binding, &raw.get::<{ FIELDS.len() }>(i), &mut out);
        assert!(
            out.status.iter().all(|s| matches!(s, Some(Ok(())))),
            "generated record {i} has a rejected field: {:?} {:?}",
            raw.get::<{ FIELDS.len() }>(i),
            out.status
        );
        for v in &out.values {
            normalized.push_field(v);
        }
    }
    // Both paths must give the same tokens, three per record.
    let want = tokenize_all(&normalizing, &binding, &raw, &mut out);
    assert_eq!(want.1, N_RECORDS * N_RECIPES);
    assert_eq!(
        tokenize_all(&hmac_only, &binding, &normalized, &mut out),
        want
    );

    let mut group = c.benchmark_group("tokenize");
    group
        .throughput(Throughput::Elements(N_RECORDS as u64))
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(3))
        .measurement_time(Duration::from_secs(15));
    group.bench_function("normalize+3_recipes", |b| {
        let mut out = RecordTokens::default();
        b.iter(|| {
            black_box(tokenize_all(
                &normalizing,
                &binding,
                black_box(&raw),
                &mut out,
            ))
        });
    });
    group.bench_function("hmac_only_3_recipes", |b| {
        let mut out = RecordTokens::default();
        b.iter(|| {
            black_box(tokenize_all(
                &hmac_only,
                &binding,
                black_box(&normalized),
                &mut out,
            ))
        });
    });
    group.finish();
}

criterion_group!(benches, bench_tokenize);
criterion_main!(benches);
