//! Token files into the exact-token join: the linkage unit's job and `renketsu link` on token
//! files spend their time here (issue "Linkage unit": 10^7 + 10^6 records × 7 tokens ≤ 60 s).
//!
//! Setup (untimed): one token file in memory, `TOKEN_JOIN_RECORDS` records (default 500,000)
//! × 7 tokens of 32 pseudorandom bytes, the canonical lines `renketsu tokenize` writes. Timed:
//! - `token_file/next`: [`Reader::next`], one record at a time (one thread);
//! - `token_file/next_batches`: [`Reader::next_batches`], lines parsed on every rayon thread;
//! - `token_join/read_token_party`: the file into a [`TokenJoin`] (parsing overlapped with
//!   adding);
//! - `token_join/into_clusters`: the sort join and clustering of those tokens.
//!
//! ```text
//! cargo bench -p renketsu-linkage --bench token_join
//! TOKEN_JOIN_RECORDS=2000000 cargo bench -p renketsu-linkage --bench token_join
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use renketsu_linkage::Schema;
use renketsu_linkage::cluster::TokenJoin;
use renketsu_linkage::token_file::{
    Counts, FORMAT, Header, MODE_HMAC, Reader, RecipeRef, Record, SchemaRef, VERSION,
    encode_header, encode_record, encode_trailer,
};
use renketsu_linkage::tokenlink::read_token_party;

const SCHEMA: &str = include_str!("../../../schemas/ndb-exact.toml");

fn records() -> usize {
    std::env::var("TOKEN_JOIN_RECORDS")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(500_000)
}

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A token file of `n` records whose 7 tokens are those of the schema's first 7 direct
/// recipes; one record in 20 shares its tokens with the record before it.
fn token_file(schema: &Schema, n: usize) -> Vec<u8> {
    let direct: Vec<usize> = schema
        .recipes
        .iter()
        .enumerate()
        .filter(|(_, r)| r.link == renketsu_linkage::schema::LinkMode::Direct)
        .map(|(i, _)| i)
        .take(7)
        .collect();
    let header = Header {
        format: FORMAT.to_owned(),
        version: VERSION,
        project: "bench".to_owned(),
        party: "ndb".to_owned(),
        schema: SchemaRef {
            name: schema.name.clone(),
            version: schema.version,
            digest: "00".repeat(32),
        },
        mode: MODE_HMAC.to_owned(),
        oprf_mode: None,
        recipes: RecipeRef::hmac_refs(schema),
        clk_bits: None,
        today: "2026-11-22".to_owned(),
        created_by: "bench".to_owned(),
        dice: Vec::new(),
    };
    let mut out = Vec::with_capacity(n * 400);
    encode_header(&mut out, &header);
    let mut seed = 7u64;
    let mut tokens = vec![[0u8; 32]; direct.len()];
    for i in 0..n {
        if i % 20 != 1 {
            for t in &mut tokens {
                for w in t.chunks_exact_mut(8) {
                    w.copy_from_slice(&splitmix(&mut seed).to_le_bytes());
                }
            }
        }
        let id = format!("R{i:09}");
        encode_record(
            &mut out,
            &id,
            direct.iter().copied().zip(tokens.iter()),
            None,
        );
    }
    let counts = Counts {
        records: n as u64,
        read: n as u64,
        tokenized: n as u64,
        ..Counts::default()
    };
    encode_trailer(&mut out, &counts);
    out
}

fn bench(c: &mut Criterion) {
    let schema = Schema::from_toml(SCHEMA).expect("ndb-exact.toml parses");
    let n = records();
    let file = token_file(&schema, n);
    println!(
        "token_join: {n} records × 7 tokens, {:.1} MB, {} rayon threads",
        file.len() as f64 / 1e6,
        rayon::current_num_threads()
    );
    let mut g = c.benchmark_group("token_file");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .throughput(Throughput::Bytes(file.len() as u64));
    g.bench_function("next", |b| {
        b.iter(|| {
            let mut r = Reader::new(file.as_slice(), "bench").expect("header");
            let mut rec = Record::default();
            let mut k = 0usize;
            while r.next(&mut rec).expect("record") {
                k += rec.tokens.len();
            }
            black_box(k)
        });
    });
    g.bench_function("next_batches", |b| {
        b.iter(|| {
            let mut r = Reader::new(file.as_slice(), "bench").expect("header");
            let mut batches = Vec::new();
            let mut k = 0usize;
            while r.next_batches(&mut batches).expect("batch") {
                k += batches.iter().map(|b| b.len()).sum::<usize>();
            }
            black_box(k)
        });
    });
    g.finish();
    let mut g = c.benchmark_group("token_join");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .throughput(Throughput::Elements(n as u64));
    g.bench_function("read_token_party", |b| {
        b.iter(|| {
            let mut r = Reader::new(file.as_slice(), "bench").expect("header");
            let mut join = TokenJoin::new(0);
            join.reserve_direct(n * 7);
            let mut blocks = Vec::new();
            let p =
                read_token_party(&schema, &mut r, "bench", &mut join, &mut blocks).expect("read");
            black_box((p.ids.len(), join.records()))
        });
    });
    g.bench_function("into_clusters", |b| {
        b.iter_batched(
            || {
                let mut r = Reader::new(file.as_slice(), "bench").expect("header");
                let mut join = TokenJoin::new(0);
                join.reserve_direct(n * 7);
                let mut blocks = Vec::new();
                read_token_party(&schema, &mut r, "bench", &mut join, &mut blocks).expect("read");
                join
            },
            |join| {
                let (_, k, stats) = join.into_clusters();
                black_box((k, stats.distinct_tokens))
            },
            BatchSize::PerIteration,
        );
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
