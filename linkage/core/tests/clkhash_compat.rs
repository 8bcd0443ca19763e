//! Bit-identity with clkhash 0.18.3 (`renketsu_linkage::clk`).
//!
//! The fixtures in `../shared/vectors/clkhash/` (beside the repository) were made by clkhash
//! 0.18.3 itself: for each case, `schema.json` is a clkhash v3 linkage schema, `input.csv` the
//! records (with header, in order) and `clks.txt` one base64 CLK per record, the bytes of
//! clkhash's `bitarray.tobytes()`. `README.json` names the secret and the cases. Every record
//! of every case must encode to exactly those bytes.
//!
//! `EXTRA_CASES` below covers options the fixtures do not use (`prevent_singularity` with
//! singular tokens, two folds, HKDF-SHA512, `keySize` 32, no salt or info, utf-16/utf-32/ascii
//! encodings, positional 3- and 4-grams, `exact` comparisons, enum formats, `missingValue`,
//! BLAKE2 with more than 32 bits per token, a length that is not a multiple of 8, and
//! `bitsPerToken` larger than the filter). It was generated with clkhash 0.18.3 by
//! `clkhash.clk.generate_clks(rows, schema.from_json_dict(schema), "renketsu interop secret")`
//! and `base64.b64encode(clk.tobytes())`.

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use renketsu_linkage::clk::{Bloom, ClkEncoder, ClkhashSchema, dice};
use serde::Deserialize;

/// The fixture cases; each must have this many records.
const CASES: [&str; 4] = [
    "febrl_doublehash_bitsperfeature",
    "febrl_blake_bitsperfeature",
    "febrl_doublehash_xorfold1",
    "jp_kana_doublehash",
];
const RECORDS_PER_CASE: usize = 200;

fn vectors() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors/clkhash");
    assert!(
        p.is_dir(),
        "the clkhash vectors are expected at {}",
        p.display()
    );
    p
}

/// A fixture file's text; an empty file fails (so an emptied fixture cannot pass).
fn read_nonempty(path: &Path) -> String {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert!(!text.trim().is_empty(), "{} is empty", path.display());
    text
}

#[derive(Deserialize)]
struct Readme {
    clkhash_version: String,
    secret_utf8: String,
    cases: std::collections::BTreeMap<String, ReadmeCase>,
}

#[derive(Deserialize)]
struct ReadmeCase {
    records: usize,
    bits: usize,
    output_bytes: usize,
}

fn readme() -> Readme {
    serde_json::from_str(&read_nonempty(&vectors().join("README.json"))).unwrap()
}

/// Encodes `rows` and compares each CLK with `expected` (base64), byte for byte. Returns the
/// number of records checked.
fn check_rows(case: &str, encoder: &ClkEncoder, rows: &[Vec<String>], expected: &[&str]) -> usize {
    assert_eq!(
        rows.len(),
        expected.len(),
        "{case}: {} input rows but {} CLKs",
        rows.len(),
        expected.len()
    );
    let mut mismatches = Vec::new();
    for (i, (row, want)) in rows.iter().zip(expected).enumerate() {
        let values: Vec<&str> = row.iter().map(String::as_str).collect();
        let clk = encoder
            .encode(&values)
            .unwrap_or_else(|e| panic!("{case} record {i}: {e}"));
        let got = clk.to_clkhash_bytes();
        let want = STANDARD
            .decode(want.trim())
            .unwrap_or_else(|e| panic!("{case} CLK {i} is not base64: {e}"));
        assert_eq!(got.len(), want.len(), "{case} record {i}: CLK length");
        if got != want {
            let theirs = Bloom::from_clkhash_bytes(&want, clk.len()).unwrap();
            mismatches.push(format!(
                "record {i}: {} vs {} bits set, Dice {:.3}",
                clk.popcount(),
                theirs.popcount(),
                dice(&clk, &theirs)
            ));
        } else {
            // The byte form round-trips.
            assert_eq!(Bloom::from_clkhash_bytes(&want, clk.len()).unwrap(), clk);
        }
    }
    assert!(
        mismatches.is_empty(),
        "{case}: {} of {} CLKs differ from clkhash: {}",
        mismatches.len(),
        rows.len(),
        mismatches.join("; ")
    );
    rows.len()
}

/// Checks one fixture case; returns the number of records checked.
fn check_case(case: &str) -> usize {
    let readme = readme();
    assert_eq!(readme.clkhash_version, "0.18.3");
    let meta = &readme.cases[case];
    let dir = vectors().join(case);

    let schema = ClkhashSchema::from_json(&read_nonempty(&dir.join("schema.json")))
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    let encoder = ClkEncoder::new(&schema, readme.secret_utf8.as_bytes()).unwrap();
    assert_eq!(encoder.len_bits(), meta.bits, "{case}: l");
    assert_eq!(meta.bits.div_ceil(8), meta.output_bytes);

    let csv_text = read_nonempty(&dir.join("input.csv"));
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        header,
        schema.identifiers().collect::<Vec<_>>(),
        "{case}: the CSV header must name the schema's features in order"
    );
    let rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();

    let clks_text = read_nonempty(&dir.join("clks.txt"));
    let expected: Vec<&str> = clks_text.lines().filter(|l| !l.trim().is_empty()).collect();
    for line in &expected {
        assert_eq!(
            STANDARD.decode(line.trim()).unwrap().len(),
            meta.output_bytes,
            "{case}: CLK byte length"
        );
    }

    let checked = check_rows(case, &encoder, &rows, &expected);
    assert_eq!(checked, meta.records, "{case}: records per README.json");
    assert_eq!(checked, RECORDS_PER_CASE, "{case}: records");
    println!("{case}: {checked} records bit-identical to clkhash 0.18.3");
    checked
}

#[test]
fn readme_lists_exactly_the_cases() {
    let readme = readme();
    assert_eq!(readme.secret_utf8, "renketsu interop secret");
    let mut names: Vec<&str> = readme.cases.keys().map(String::as_str).collect();
    names.sort_unstable();
    let mut expected = CASES.to_vec();
    expected.sort_unstable();
    assert_eq!(names, expected);
}

#[test]
fn febrl_doublehash_bitsperfeature() {
    assert_eq!(
        check_case("febrl_doublehash_bitsperfeature"),
        RECORDS_PER_CASE
    );
}

#[test]
fn febrl_blake_bitsperfeature() {
    assert_eq!(check_case("febrl_blake_bitsperfeature"), RECORDS_PER_CASE);
}

#[test]
fn febrl_doublehash_xorfold1() {
    assert_eq!(check_case("febrl_doublehash_xorfold1"), RECORDS_PER_CASE);
}

#[test]
fn jp_kana_doublehash() {
    assert_eq!(check_case("jp_kana_doublehash"), RECORDS_PER_CASE);
}

/// Same records, same secret, different schema: folding changes the CLK, and the folded
/// case is not the unfolded one cut in half.
#[test]
fn xor_fold_case_differs_from_its_unfolded_encoding() {
    let dir = vectors().join("febrl_doublehash_xorfold1");
    let text = read_nonempty(&dir.join("schema.json"));
    let folded = ClkhashSchema::from_json(&text).unwrap();
    assert_eq!(folded.clk_config.xor_folds, 1);
    let mut unfolded = folded.clone();
    unfolded.clk_config.xor_folds = 0;
    unfolded.clk_config.l *= 2;
    let secret = readme().secret_utf8;
    let f = ClkEncoder::new(&folded, secret.as_bytes()).unwrap();
    let u = ClkEncoder::new(&unfolded, secret.as_bytes()).unwrap();
    let row = [
        "0",
        "sarah",
        "bradshaw",
        "6",
        "hallen close",
        "red tank",
        "mullaloo",
        "2161",
        "vic",
        "19340509",
        "9150146",
    ];
    let wide = u.encode(&row).unwrap();
    assert_eq!(wide.len(), 2048);
    // Folding the 2048-bit filter by hand gives the folded CLK: l is the length after folding.
    assert_eq!(wide.fold_xor(1).unwrap(), f.encode(&row).unwrap());
}

#[derive(Deserialize)]
struct ExtraCase {
    name: String,
    schema: serde_json::Value,
    rows: Vec<Vec<String>>,
    clks: Vec<String>,
}

#[test]
fn extra_cases_generated_by_clkhash() {
    let cases: Vec<ExtraCase> = serde_json::from_str(EXTRA_CASES).unwrap();
    assert_eq!(cases.len(), 5);
    let mut total = 0;
    for case in &cases {
        assert!(!case.rows.is_empty(), "{}: no rows", case.name);
        let schema = ClkhashSchema::from_json(&case.schema.to_string())
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let encoder = ClkEncoder::new(&schema, b"renketsu interop secret").unwrap();
        let expected: Vec<&str> = case.clks.iter().map(String::as_str).collect();
        let n = check_rows(&case.name, &encoder, &case.rows, &expected);
        println!("{}: {n} records bit-identical to clkhash 0.18.3", case.name);
        total += n;
    }
    assert_eq!(total, 5 + 28 + 5 + 5 + 12);
}

const EXTRA_CASES: &str = r##"
[
  {"name": "sha512_fold2_utf16_prevent_singularity",
   "schema": {"version": 3, "clkConfig": {"l": 256, "xor_folds": 2, "kdf": {"type": "HKDF", "hash": "SHA512", "keySize": 32}}, "features": [
     {"identifier": "id", "ignored": true},
     {"identifier": "name", "format": {"type": "string", "encoding": "utf-16"}, "hashing": {"comparison": {"type": "ngram", "n": 3}, "strategy": {"bitsPerToken": 7}, "hash": {"type": "doubleHash", "prevent_singularity": true}}},
     {"identifier": "kana", "format": {"type": "string", "encoding": "utf-32", "maxLength": 20}, "hashing": {"comparison": {"type": "ngram", "n": 2, "positional": true}, "strategy": {"bitsPerFeature": 77}, "hash": {"type": "doubleHash", "prevent_singularity": false}}}
   ]},
   "rows": [["1", "anna", ""], ["2", "José", "カタカナ"], ["3", "", "ミユ"], ["4", "x", "ア"], ["5", "aaaa", "アアアア"]],
   "clks": [
     "BAAAQgAAQEAEiBClAMEAgAAABAAAQBAAqqzABIAAyEA=",
     "AHAGJgSEDwAQs6Q8SgFWhIHQgXAxG1kEKxNAYdlUCCQ=",
     "IgDAAiEoIIYiQCABoCIECICwAwAoBCCCsAoAYAqAihA=",
     "AIgzKIqoiXZIgBKAMBiC2AgoTgMmoGEZBgjIoMxmCqQ=",
     "wIlJCCjEXGskGpgpUAkACR2EAoChGxmRoqmJCMQiKWA="
   ]},
  {"name": "tiny_filter_prevent_singularity",
   "schema": {"version": 3, "clkConfig": {"l": 8, "kdf": {"type": "HKDF", "salt": "c2FsdA==", "info": "aW5mbw=="}}, "features": [
     {"identifier": "ps", "format": {"type": "string"}, "hashing": {"comparison": {"type": "exact"}, "strategy": {"bitsPerToken": 2}, "hash": {"type": "doubleHash", "prevent_singularity": true}}}
   ]},
   "rows": [["a"], ["b"], ["c"], ["d"], ["e"], ["f"], ["g"], ["h"], ["i"], ["j"], ["k"], ["l"], ["m"], ["n"], ["o"], ["p"], ["q"], ["r"], ["s"], ["t"], ["u"], ["v"], ["w"], ["x"], ["y"], ["z"], ["グエン"], ["Ölç"]],
   "clks": [
     "oA==",
     "FA==",
     "Ig==",
     "JA==",
     "RA==",
     "Eg==",
     "EQ==",
     "kA==",
     "MA==",
     "SA==",
     "oA==",
     "iA==",
     "hA==",
     "Qg==",
     "SA==",
     "KA==",
     "MA==",
     "Eg==",
     "GA==",
     "YA==",
     "Aw==",
     "MA==",
     "wA==",
     "QQ==",
     "Cg==",
     "IQ==",
     "CQ==",
     "Qg=="
   ]},
  {"name": "blake_multi_mac_enum_missing_ascii",
   "schema": {"version": 3, "clkConfig": {"l": 128, "xor_folds": 1, "kdf": {"type": "HKDF", "salt": "cw==", "info": "aQ==", "keySize": 64}}, "features": [
     {"identifier": "name", "format": {"type": "string", "encoding": "utf-32", "case": "lower"}, "hashing": {"comparison": {"type": "ngram", "n": 2, "positional": true}, "strategy": {"bitsPerToken": 40}, "hash": {"type": "blakeHash"}}},
     {"identifier": "sex", "format": {"type": "enum", "values": ["M", "F"]}, "hashing": {"comparison": {"type": "exact"}, "strategy": {"bitsPerToken": 10}}},
     {"identifier": "code", "format": {"type": "string", "encoding": "ascii", "minLength": 2}, "hashing": {"comparison": {"type": "exact"}, "strategy": {"bitsPerFeature": 50}, "hash": {"type": "doubleHash"}, "missingValue": {"sentinel": "", "replaceWith": "unknown"}}},
     {"identifier": "note", "ignored": true}
   ]},
   "rows": [["anna", "F", "AB12", ""], ["bob", "M", "", "x"], ["", "F", "zz", "y"], ["josé", "M", "Q-9", "z"], ["ミユ", "F", "42", "w"]],
   "clks": [
     "lHH/kVKGsCztqaJhAShrbQ==",
     "Vri0og/cDnRDCCRdhIxB5g==",
     "IiBABAoyIoAAACIi9AQAAg==",
     "TJ02GUWzdpBbLdwSk0Wt8A==",
     "GEntKeHJv4599ikgvZKC5Q=="
   ]},
  {"name": "odd_length_1001",
   "schema": {"version": 3, "clkConfig": {"l": 1001, "kdf": {"type": "HKDF"}}, "features": [
     {"identifier": "a", "format": {"type": "string"}, "hashing": {"comparison": {"type": "ngram", "n": 1}, "strategy": {"bitsPerFeature": 333}, "hash": {"type": "doubleHash"}}},
     {"identifier": "b", "format": {"type": "string"}, "hashing": {"comparison": {"type": "ngram", "n": 4, "positional": true}, "strategy": {"bitsPerToken": 5}, "hash": {"type": "doubleHash"}}}
   ]},
   "rows": [["x", "y"], ["hello", "world"], ["", ""], ["東京都", "千代田区"], ["a b", "c,d"]],
   "clks": [
     "AgQIECBAgQIECBAgQIECBAkQIECBAgQIEHBAgQIECBAgwIECBAhQIECBAgQIECBAgQIEGBAgQIECBAgQIECBAgQIECBAgQIECJAgQIECRAgQIECBAgUIEyBAgQIECBAgQIECBAgQIECBAgQIECBAgQIECBAgQMECBAgQIECA",
     "oEQoIGHBKgUIQDhRAOgESfAhjAqAQKQQsVGBBIEwAwhJk0IWQAICgkUKJEkUCAVAJggJGKBMACghDBygUacSkBAAFKCxIwRoQmIKQFoESFRoIUGADItUokCRQaEEISBBhQuCUAJAkhGCBAo0A0RIBEYeUDxIgEwICREoSIkA",
     "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
     "QAYEkACJhACyAQAsgEJLIjKSgAUkYANICATSEhkwAIJEACSBAAkAQBIAECSQBEkgAZIIAWQCAngAhJQAoaEACkBIBoAQCYAEMiABJMgAW0smkknl90km20kskkknslkm0k0kskktmkl2kkk1ksltkmm3kkmk0ktuEASQBAEA",
     "CADQAgKQAJSEAKAFBWgAagIAUKCCrAA0AQCoBEcCCToAhVQAIpEAHAhAogAVAqAugCFRAAqAQBYAEKCCBQgwKQANUEAKkBAUgASgKAcACKhAA0AQCoQEVCQFoAgFQAIoEAHgJAqgCVQIAuADBRIAqAQBYAELGABUAgKwAJUA"
   ]},
  {"name": "large_k_periodic_1000",
   "schema": {"version": 3, "clkConfig": {"l": 1000, "kdf": {"type": "HKDF", "info": "aW5mbw=="}}, "features": [
     {"identifier": "c", "format": {"type": "string"}, "hashing": {"comparison": {"type": "exact"}, "strategy": {"bitsPerToken": 3000}, "hash": {"type": "doubleHash"}}}
   ]},
   "rows": [["alpha"], ["beta"], ["gamma"], ["delta"], ["epsilon"], ["zeta"], ["eta"], ["theta"], ["iota"], ["kappa"], ["lambda"], ["mu"]],
   "clks": [
     "VVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVU=",
     "//////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////8=",
     "VVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVU=",
     "//////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////8=",
     "qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqo=",
     "//////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////8=",
     "//////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////8=",
     "//////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////8=",
     "QhCEIQhCEIQhCEIQhCEIQhCEIQhCEIQhCEIQhCEIQhCEIQhCEIQhCEIQhCEIQhCEIQhCEIQhCEIQhCEIQhCEIQhCEIQhCEIQhCEIQhCEIQhCEIQhCEIQhCEIQhCEIQhCEIQhCEIQhCEIQhCEIQhCEIQhCEIQhCEIQhCEIQg=",
     "qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqo=",
     "VVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVU=",
     "AQAAEAABAAAQAAEAABAAAQAAEAABAAAQAAEAABAAAQAAEAABAAAQAAEAABAAAQAAEAABAAAQAAEAABAAAQAAEAABAAAQAAEAABAAAQAAEAABAAAQAAEAABAAAQAAEAABAAAQAAEAABAAAQAAEAABAAAQAAEAABAAAQAAEAA="
   ]}
]
"##;
