//! CLK encoding throughput, in records per second on one core.
//!
//! Acceptance point (issue "CLK"): CLK encoding ≥ 250,000 records/s/core (clkhash: about 4,200
//! records/s). Setup (untimed): 100,000 FEBRL-like records generated from a fixed seed (given
//! name, surname, street number, address, suburb, postcode, state, date of birth: the fields
//! the peers' clkhash schema hashes). Benchmarks (one thread, `Throughput::Elements(100_000)`):
//! - `clk_encode/native_1024`: renketsu's own CLK (SPEC.md §7.1): bigrams of 6 text fields,
//!   positional digits of date of birth and postcode, independent HMAC-SHA256 positions;
//! - `clk_encode/native_cached_1024`: the same bits through `NativeEncoder::encode_cached`
//!   (each distinct short token hashed once per pass; the cache starts empty every pass);
//! - `clk_encode/febrl4_native_1024`, `febrl4_native_cached_1024`: the same two on the 10,000
//!   real records of `../shared/data/febrl/febrl4{a,b}.csv` (when present), whose names repeat
//!   q-grams as real data does (the generated names draw on 16 syllables);
//! - `clk_encode/clkhash_doublehash_1024`: the clkhash-compatible encoder with the shared
//!   fixture schema `febrl_doublehash_bitsperfeature` (HMAC-SHA1 + HMAC-MD5 double hashing),
//!   when `../shared/vectors/clkhash` exists (skipped otherwise).
//!
//! ```text
//! cargo bench -p renketsu-linkage --bench clk_encode
//! ```

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use renketsu_linkage::ProjectSecret;
use renketsu_linkage::clk::native::{NativeEncoder, NativeFeature};
use renketsu_linkage::clk::{ClkEncoder, ClkhashSchema};

const N: usize = 100_000;

fn words(rng: &mut u64, n: usize) -> String {
    const SYL: [&str; 16] = [
        "ka", "ri", "to", "ne", "sa", "mu", "lo", "be", "an", "el", "or", "is", "us", "ta", "mi",
        "do",
    ];
    (0..n)
        .map(|_| {
            *rng = rng
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            SYL[(*rng >> 60) as usize]
        })
        .collect()
}

/// `[id, given, surname, street_number, address_1, address_2, suburb, postcode, state, dob, ssid]`
fn records() -> Vec<[String; 11]> {
    let mut rng = 7u64;
    (0..N)
        .map(|i| {
            let g = words(&mut rng, 3);
            let s = words(&mut rng, 4);
            let a1 = format!("{} street", words(&mut rng, 3));
            let a2 = words(&mut rng, 4);
            let sub = words(&mut rng, 3);
            [
                i.to_string(),
                g,
                s,
                (i % 300).to_string(),
                a1,
                a2,
                sub,
                format!("{}", 2000 + i % 7000),
                "nsw".into(),
                format!("19{:02}{:02}{:02}", i % 90 + 10, i % 12 + 1, i % 28 + 1),
                format!("{}", 1_000_000 + i),
            ]
        })
        .collect()
}

/// `native_1024` (one HMAC per 16 positions of every token) and `native_cached_1024` (each
/// distinct short token hashed once per thread: `NativeEncoder::encode_cached`, same bits).
fn native_benches(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    native: &NativeEncoder,
    prefix: &str,
    recs: &[[Option<String>; 8]],
) {
    let mut buf = Vec::new();
    g.bench_function(format!("{prefix}native_1024"), |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for r in recs {
                let v = r.each_ref().map(|x| x.as_deref());
                native.encode(&v, &mut buf);
                acc = acc.wrapping_add(buf[0]);
            }
            black_box(acc)
        })
    });
    g.bench_function(format!("{prefix}native_cached_1024"), |b| {
        b.iter(|| {
            // A fresh cache per pass: its misses are part of the measured time.
            let mut cache = native.position_cache();
            let mut acc = 0u64;
            for r in recs {
                let v = r.each_ref().map(|x| x.as_deref());
                native.encode_cached(&mut cache, &v, &mut buf);
                acc = acc.wrapping_add(buf[0]);
            }
            black_box(acc)
        })
    });
}

fn bench(c: &mut Criterion) {
    let recs = records();
    let native = NativeEncoder::new(
        &ProjectSecret::from_bytes([3; 32]),
        "bench",
        1024,
        [
            ("given_name", 2, false, 15),
            ("surname", 2, false, 15),
            ("address_1", 2, false, 6),
            ("address_2", 2, false, 4),
            ("suburb", 2, false, 6),
            ("street_number", 1, true, 4),
            ("postcode", 1, true, 6),
            ("date_of_birth", 1, true, 10),
        ]
        .into_iter()
        .map(|(f, q, positional, k)| NativeFeature {
            field: f.into(),
            q,
            positional,
            k,
        })
        .collect(),
    );
    let mut g = c.benchmark_group("clk_encode");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10);
    let fields = |r: &[String; 11]| -> [Option<String>; 8] {
        [1, 2, 4, 5, 6, 3, 7, 9].map(|i| Some(r[i].clone()))
    };
    let synthetic: Vec<[Option<String>; 8]> = recs.iter().map(fields).collect();
    native_benches(&mut g, &native, "", &synthetic);
    // The real FEBRL4 files (10,000 records, both halves) when ../shared is beside the
    // repository: real names repeat q-grams as real data does.
    let febrl = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/febrl");
    let mut real: Vec<[Option<String>; 8]> = Vec::new();
    for f in ["febrl4a.csv", "febrl4b.csv"] {
        let Ok(text) = std::fs::read_to_string(febrl.join(f)) else {
            break;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<String> = line.split(',').map(str::to_owned).collect();
            if let Ok(r) = <[String; 11]>::try_from(cols) {
                real.push(fields(&r));
            }
        }
    }
    if real.is_empty() {
        eprintln!(
            "clk_encode: {} not found; skipping the FEBRL4 benchmarks",
            febrl.display()
        );
    } else {
        g.throughput(Throughput::Elements(real.len() as u64));
        native_benches(&mut g, &native, "febrl4_", &real);
        g.throughput(Throughput::Elements(N as u64));
    }
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/vectors/clkhash/febrl_doublehash_bitsperfeature/schema.json");
    if let Ok(json) = std::fs::read_to_string(&fixture) {
        let schema = ClkhashSchema::from_json(&json).expect("fixture schema");
        let enc = ClkEncoder::new(&schema, b"renketsu interop secret").expect("keys");
        g.bench_function("clkhash_doublehash_1024", |b| {
            b.iter(|| {
                let mut acc = 0usize;
                for r in &recs {
                    let refs: Vec<&str> = r.iter().map(String::as_str).collect();
                    acc += enc.encode(&refs).map(|f| f.popcount()).unwrap_or(0);
                }
                black_box(acc)
            })
        });
    } else {
        eprintln!(
            "clk_encode: {} not found; skipping the clkhash-compatible benchmark",
            fixture.display()
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
