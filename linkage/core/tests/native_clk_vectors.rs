//! renketsu's own CLK encoding against `test-vectors/native-clk.json`, made by the independent
//! Python implementation `scripts/gen-clk-vectors.py` (SPEC.md §7.1). Every record is encoded
//! twice: plainly and through the position cache, which must give the same bits.

use renketsu_linkage::ProjectSecret;
use renketsu_linkage::clk::native::{NativeEncoder, NativeFeature, Salt};
use serde::Deserialize;

#[derive(Deserialize)]
struct Doc {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    secret_hex: String,
    project: String,
    bits: u32,
    features: Vec<Feature>,
    #[serde(default)]
    hardening: Hardening,
    records: Vec<Record>,
}

#[derive(Deserialize, Default)]
struct Hardening {
    #[serde(default)]
    xor_fold: bool,
    #[serde(default)]
    balance: bool,
}

#[derive(Deserialize)]
struct SaltSpec {
    input: usize,
    chars: usize,
}

#[derive(Deserialize)]
struct Feature {
    field: String,
    q: usize,
    positional: bool,
    k: u32,
    #[serde(default)]
    salt: Option<SaltSpec>,
}

#[derive(Deserialize)]
struct Record {
    values: Vec<Option<String>>,
    filter_hex: String,
}

fn to_hex(words: &[u64]) -> String {
    words
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn native_clk_matches_the_python_reference() {
    let text = include_str!("../test-vectors/native-clk.json");
    let doc: Doc = serde_json::from_str(text).expect("vector file parses");
    assert!(doc.cases.len() >= 4);
    let mut checked = 0;
    for case in &doc.cases {
        let secret: [u8; 32] = hex::decode(&case.secret_hex).unwrap().try_into().unwrap();
        let secret = ProjectSecret::from_bytes(secret);
        let mut encoder = NativeEncoder::new(
            &secret,
            &case.project,
            case.bits,
            case.features
                .iter()
                .map(|f| NativeFeature {
                    field: f.field.clone(),
                    q: f.q,
                    positional: f.positional,
                    k: f.k,
                })
                .collect(),
        );
        for (i, f) in case.features.iter().enumerate() {
            if let Some(s) = &f.salt {
                encoder = encoder.with_salt(
                    i,
                    Salt {
                        input: s.input,
                        chars: s.chars,
                    },
                );
            }
        }
        if case.hardening.xor_fold || case.hardening.balance {
            encoder = encoder.with_hardening(
                &secret,
                &case.project,
                case.hardening.xor_fold,
                case.hardening.balance,
            );
        }
        let mut cache = encoder.position_cache();
        for (i, r) in case.records.iter().enumerate() {
            let values: Vec<Option<&str>> = r.values.iter().map(|v| v.as_deref()).collect();
            let (mut plain, mut cached) = (Vec::new(), Vec::new());
            encoder.encode(&values, &mut plain);
            assert_eq!(to_hex(&plain), r.filter_hex, "{} record {i}", case.name);
            assert_eq!(plain.len(), encoder.words(), "{}: words()", case.name);
            // Twice through the cache: the first pass fills it, the second reads it.
            for pass in 0..2 {
                encoder.encode_cached(&mut cache, &values, &mut cached);
                assert_eq!(
                    to_hex(&cached),
                    r.filter_hex,
                    "{} record {i} cached pass {pass}",
                    case.name
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 22);
}
