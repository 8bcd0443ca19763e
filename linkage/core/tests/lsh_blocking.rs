//! Hamming-LSH blocking (SPEC.md §7.4) on real encodings: FEBRL4 and the jp dev set from
//! `../shared/data`, encoded with the shipped CLK schemas, must keep (almost) every true
//! pair as a candidate while comparing a tiny share of all pairs. Prints pairs completeness
//! (PC = true pairs among candidates / true pairs) and reduction ratio
//! (RR = 1 − candidates / (n_a · n_b)).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use renketsu_linkage::clk::native::NativeEncoder;
use renketsu_linkage::dice::Filters;
use renketsu_linkage::lsh::{LshParams, candidates};
use renketsu_linkage::{NormalizeContext, ProjectSecret, RecordTokens, Schema, Tokenizer};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn shared() -> PathBuf {
    repo().join("../shared/data")
}

/// Filters of one CSV and the row index of every id.
fn encode(schema: &Schema, path: &Path) -> (Filters, HashMap<String, u32>) {
    let secret = ProjectSecret::from_bytes([5; 32]);
    let tokenizer = Tokenizer::new(
        schema,
        &secret,
        "lsh-test",
        NormalizeContext::with_today(2026, 11, 22),
    );
    let (enc, inputs) = NativeEncoder::from_schema(schema, &secret, "lsh-test").unwrap();
    let mut cache = enc.position_cache();
    let mut reader = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    let binding = tokenizer.bind(&header);
    let id_col = header.iter().position(|h| h == "id").unwrap();
    let mut filters = Filters::new(enc.words());
    let mut ids = HashMap::new();
    let mut rt = RecordTokens::default();
    let mut buf = Vec::new();
    for rec in reader.records() {
        let rec = rec.unwrap();
        let raw: Vec<&str> = binding.columns.iter().map(|&c| &rec[c]).collect();
        tokenizer.tokenize(&binding, &raw, &mut rt);
        let values: Vec<Option<&str>> = inputs
            .iter()
            .map(|&i| matches!(rt.status[i], Some(Ok(()))).then_some(rt.values[i].as_str()))
            .collect();
        enc.encode_cached(&mut cache, &values, &mut buf);
        let row = filters.push(&buf);
        ids.insert(rec[id_col].to_owned(), row);
    }
    (filters, ids)
}

fn pc_rr(schema: &str, dir: &str, a: &str, b: &str, truth: &str, params: &LshParams) -> (f64, f64) {
    let schema = Schema::from_toml(&std::fs::read_to_string(repo().join(schema)).unwrap()).unwrap();
    let d = shared().join(dir);
    let (fa, ia) = encode(&schema, &d.join(a));
    let (fb, ib) = encode(&schema, &d.join(b));
    let c = candidates(&fa, &fb, params);
    let mut t = csv::Reader::from_path(d.join(truth)).unwrap();
    let (mut found, mut total) = (0usize, 0usize);
    for rec in t.records() {
        let rec = rec.unwrap();
        let pair = (ia[&rec[0]], ib[&rec[1]]);
        total += 1;
        found += usize::from(c.pairs.binary_search(&pair).is_ok());
    }
    let pc = found as f64 / total as f64;
    let rr = 1.0 - c.pairs.len() as f64 / (fa.len() as f64 * fb.len() as f64);
    eprintln!(
        "{dir}: {} × {} records, {} candidates ({} skipped buckets), PC {pc:.4}, RR {rr:.6}",
        fa.len(),
        fb.len(),
        c.pairs.len(),
        c.skipped_buckets
    );
    (pc, rr)
}

#[test]
fn febrl4_lsh_keeps_true_pairs_and_prunes_the_rest() {
    let (pc, rr) = pc_rr(
        "schemas/febrl-clk.toml",
        "febrl",
        "febrl4a.csv",
        "febrl4b.csv",
        "febrl4_truth.csv",
        &LshParams::default(),
    );
    // Measured with the defaults (48 bands of 16 bits): PC 0.9554, RR 0.9928.
    assert!(pc >= 0.95, "pairs completeness {pc}");
    assert!(rr >= 0.99, "reduction ratio {rr}");
}

#[test]
fn jp_lsh_keeps_true_pairs_and_prunes_the_rest() {
    let (pc, rr) = pc_rr(
        "schemas/jp-person-clk.toml",
        "jp",
        "jp_a.csv",
        "jp_b.csv",
        "jp_truth.csv",
        &LshParams::default(),
    );
    // Measured with the defaults: PC 0.9880, RR 0.9732 (sparse filters agree on many
    // clear bits, so more pairs collide than on FEBRL4).
    assert!(pc >= 0.98, "pairs completeness {pc}");
    assert!(rr >= 0.97, "reduction ratio {rr}");
}
