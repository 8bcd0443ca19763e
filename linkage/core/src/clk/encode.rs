//! The CLK encoder: per-feature keys, tokenization, insertion budgets, double hashing,
//! BLAKE2 hashing and XOR folding, as clkhash 0.18.3 does them.
//!
//! One record becomes one filter of `h = l · 2^xor_folds` bits (all features share it:
//! the *cryptographic long-term key* of Schnell, Bachteler & Reiher 2009), which is then
//! XOR-folded to `l` bits. For each feature that is not ignored, in schema order:
//!
//! 1. the value is replaced if it equals the `missingValue` sentinel, else checked against
//!    the format (`clkhash/field_formats.py`);
//! 2. it is split into tokens (`clkhash/comparators.py`, `NgramComparison.tokenize`): for
//!    n-grams with `n > 1` the value is padded with `n - 1` spaces on both sides, and the
//!    tokens are the `len + n - 1` windows of `n` *Unicode code points* (duplicates kept);
//!    a positional n-gram is `"{i} {gram}"` with `i` counted from 1; `exact` makes the whole
//!    value one token; an empty value makes no token and leaves the filter untouched;
//! 3. each token `t_j` gets a bit budget `k_j`: `bitsPerToken` gives every token `k`;
//!    `bitsPerFeature` `B` over `m` tokens gives the first `B mod m` tokens
//!    `⌊B / m⌋ + 1` and the rest `⌊B / m⌋` (`BitsPerFeatureStrategy.bits_per_token`,
//!    where `⌊B / m⌋` is Python `int(B / m)`: a float division, reproduced as such);
//! 4. the token's bytes in the feature's encoding are hashed into `k_j` positions of the
//!    filter (below);
//!
//! and finally the filter is folded `xor_folds` times ([`Bloom::fold_xor`]).
//!
//! **Keys** (`clkhash/key_derivation.py`): HKDF (RFC 5869) with the schema's hash, salt and
//! info expands the secret to `2 · F · keySize` bytes for the `F` features *including ignored
//! ones*; feature `f` gets bytes `[2f · keySize, (2f+1) · keySize)` as its first key and the
//! next `keySize` bytes as its second.
//!
//! **doubleHash** (`_double_hash_token`, `_double_hash_encode_ngrams`; Schnell et al. 2009 with
//! the double hashing of Kirsch & Mitzenmacher 2006): with the big-endian integers
//! `a = HMAC-SHA1(key₁, t) mod h` and `b = HMAC-MD5(key₂, t) mod h`, set bits
//! `(a + i·b) mod h` for `i = 0 … k-1`. With `prevent_singularity`, while `b = 0` it is
//! recomputed as `HMAC-MD5(key₂, t ‖ utf8(chr(i))) mod h` for `i = 0, 1, …`.
//!
//! **blakeHash** (`blake_hash_token`): the `j`-th index is the `j`-th little-endian `u16` of
//! the concatenated BLAKE2b-512 digests (RFC 7693) of `t`, keyed with `key₁`, with salt the
//! ASCII decimal `"0"`, `"1"`, … (zero-padded to 16 bytes), 32 indices per digest, reduced
//! mod `h` (a power of two). clkhash unpacks with `struct.unpack('32H')`, native byte order,
//! so its output is that of a little-endian machine; and because indices are 16-bit, a filter
//! longer than 65,536 bits only ever gets its first 65,536 bits set.

use std::fmt;

use blake2::Blake2bMac512;
use blake2::digest::{FixedOutput, Update};
use hkdf::Hkdf;
use sha2::{Sha256, Sha512};
use zeroize::Zeroizing;

use super::bloom::Bloom;
use super::clkhash_schema::{
    ClkhashSchema, FeatureHashing, HashKind, KdfHash, LetterCase, Plan, Strategy, TextEncoding,
    Tokenizer, ValueChecks,
};
use super::{ClkError, ValueRejection};
use hmac::Hmac;
use md5::Md5;
use sha1::Sha1;

/// Encodes records into CLKs under one schema and secret. Holds the derived per-feature keys,
/// zeroized on drop; `Debug` shows the schema shape and never a key.
pub struct ClkEncoder {
    l: usize,
    xor_folds: u32,
    hash_bits: usize,
    features: Vec<FeatureEncoder>,
}

struct FeatureEncoder {
    identifier: String,
    hashed: Option<(FeatureHashing, FeatureKeys)>,
}

/// Key material of one hashed feature.
enum FeatureKeys {
    /// HMAC-SHA1 under the first key, HMAC-MD5 under the second.
    Double {
        sha1: Box<Hmac<Sha1>>,
        md5: Box<Hmac<Md5>>,
    },
    /// The first key (at most 64 bytes).
    Blake { key: Zeroizing<Vec<u8>> },
}

impl ClkEncoder {
    /// Checks `schema` and derives its per-feature keys from `secret` (clkhash passes a text
    /// secret as its UTF-8 bytes).
    ///
    /// # Errors
    /// Any schema problem of [`ClkhashSchema::from_json`].
    pub fn new(schema: &ClkhashSchema, secret: &[u8]) -> Result<Self, ClkError> {
        let Plan {
            l,
            xor_folds,
            hash_bits,
            kdf,
            features,
        } = schema.compile()?;
        let key_size = kdf.key_size;
        let mut okm = Zeroizing::new(vec![0u8; features.len() * 2 * key_size]);
        let info = kdf.info.as_deref().unwrap_or_default();
        // The lengths were bounded by `compile`, so `expand` cannot fail.
        match kdf.hash {
            KdfHash::Sha256 => Hkdf::<Sha256>::new(kdf.salt.as_deref(), secret)
                .expand(info, &mut okm)
                .map_err(|_| ClkError::KeyMaterialTooLong {
                    requested: okm.len(),
                    max: 255 * 32,
                    features: features.len(),
                    key_size,
                })?,
            KdfHash::Sha512 => Hkdf::<Sha512>::new(kdf.salt.as_deref(), secret)
                .expand(info, &mut okm)
                .map_err(|_| ClkError::KeyMaterialTooLong {
                    requested: okm.len(),
                    max: 255 * 64,
                    features: features.len(),
                    key_size,
                })?,
        }
        let features = features
            .into_iter()
            .zip(okm.chunks_exact(2 * key_size.max(1)))
            .map(|(f, keys)| {
                let (first, second) = keys.split_at(key_size);
                let hashed = f.hashing.map(|h| {
                    let keys = match h.hash {
                        HashKind::DoubleHash { .. } => FeatureKeys::Double {
                            sha1: Box::new(
                                <Hmac<Sha1> as hmac::KeyInit>::new_from_slice(first)
                                    .expect("HMAC takes any key length"),
                            ),
                            md5: Box::new(
                                <Hmac<Md5> as hmac::KeyInit>::new_from_slice(second)
                                    .expect("HMAC takes any key length"),
                            ),
                        },
                        HashKind::Blake => FeatureKeys::Blake {
                            key: Zeroizing::new(first.to_vec()),
                        },
                    };
                    (h, keys)
                });
                FeatureEncoder {
                    identifier: f.identifier,
                    hashed,
                }
            })
            .collect();
        Ok(Self {
            l,
            xor_folds,
            hash_bits,
            features,
        })
    }

    /// Length of the CLKs in bits (the schema's `l`, after folding).
    pub fn len_bits(&self) -> usize {
        self.l
    }

    /// Length of the filter before folding, `l · 2^xor_folds` bits.
    pub fn hash_bits(&self) -> usize {
        self.hash_bits
    }

    /// The schema's feature identifiers, in order (the expected CSV header).
    pub fn feature_identifiers(&self) -> impl Iterator<Item = &str> {
        self.features.iter().map(|f| f.identifier.as_str())
    }

    /// Number of features, hence of values per record.
    pub fn feature_count(&self) -> usize {
        self.features.len()
    }

    /// Encodes one record: `record[f]` is the raw value of feature `f`, one per schema feature
    /// in schema order (the CSV row), ignored features included and skipped. Values are
    /// hashed as given: clkhash does not trim or normalize text.
    ///
    /// # Errors
    /// [`ClkError::WrongArity`] for a record of the wrong length; [`ClkError::InvalidValue`]
    /// for a value the schema's format refuses (enum membership, length, case);
    /// [`ClkError::Unencodable`] for a character the feature's encoding cannot represent.
    /// Errors name the feature, never the value.
    pub fn encode(&self, record: &[&str]) -> Result<Bloom, ClkError> {
        if record.len() != self.features.len() {
            return Err(ClkError::WrongArity {
                expected: self.features.len(),
                got: record.len(),
            });
        }
        let mut filter = Bloom::new(self.hash_bits);
        let mut tokens = Vec::new();
        let mut bytes = Vec::new();
        for (feature, raw) in self.features.iter().zip(record) {
            let Some((spec, keys)) = &feature.hashed else {
                continue;
            };
            let value = match &spec.missing_value {
                Some(m) if m.sentinel == *raw => m.replace_with.as_str(),
                _ => {
                    check_value(spec, &feature.identifier, raw)?;
                    raw
                }
            };
            tokenize(spec.tokenizer, value, &mut tokens);
            if tokens.is_empty() {
                continue;
            }
            let count = tokens.len();
            for (j, token) in tokens.iter().enumerate() {
                let k = bits_for_token(spec.strategy, count, j);
                if !encode_text(token, spec.encoding, &mut bytes) {
                    return Err(ClkError::Unencodable {
                        identifier: feature.identifier.clone(),
                        encoding: spec.encoding.name(),
                    });
                }
                match keys {
                    FeatureKeys::Double { sha1, md5 } => {
                        let prevent = matches!(
                            spec.hash,
                            HashKind::DoubleHash {
                                prevent_singularity: true
                            }
                        );
                        double_hash(&mut filter, sha1, md5, &bytes, k, prevent);
                    }
                    FeatureKeys::Blake { key } => blake_hash(&mut filter, key, &bytes, k),
                }
            }
        }
        filter.fold_xor(self.xor_folds)
    }
}

impl fmt::Debug for ClkEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let features: Vec<(&str, &str)> = self
            .features
            .iter()
            .map(|fe| {
                let kind = fe.hashed.as_ref().map_or("ignored", |(h, _)| h.hash.name());
                (fe.identifier.as_str(), kind)
            })
            .collect();
        f.debug_struct("ClkEncoder")
            .field("l", &self.l)
            .field("xor_folds", &self.xor_folds)
            .field("features", &features)
            .field("keys", &format_args!("<redacted>"))
            .finish()
    }
}

/// clkhash's `validate_entries` for one value (the pattern of a string format excepted).
fn check_value(spec: &FeatureHashing, identifier: &str, value: &str) -> Result<(), ClkError> {
    let reject = |reason| ClkError::InvalidValue {
        identifier: identifier.to_owned(),
        reason,
    };
    if spec.encoding == TextEncoding::Ascii && !value.is_ascii() {
        return Err(ClkError::Unencodable {
            identifier: identifier.to_owned(),
            encoding: spec.encoding.name(),
        });
    }
    match &spec.checks {
        ValueChecks::Enum(values) => {
            if !values.contains(value) {
                return Err(reject(ValueRejection::NotInEnum));
            }
        }
        ValueChecks::String {
            case,
            min_length,
            max_length,
        } => {
            let len = value.chars().count() as u64;
            if let Some(min) = *min_length
                && len < min
            {
                return Err(reject(ValueRejection::TooShort { min }));
            }
            if let Some(max) = *max_length
                && len > max
            {
                return Err(reject(ValueRejection::TooLong { max }));
            }
            match case {
                Some(LetterCase::Upper) if value.to_uppercase() != value => {
                    return Err(reject(ValueRejection::NotUpperCase));
                }
                Some(LetterCase::Lower) if value.to_lowercase() != value => {
                    return Err(reject(ValueRejection::NotLowerCase));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// The tokens of `value` into `out` (cleared first), as `NgramComparison.tokenize` /
/// `ExactComparison.tokenize` make them (`clkhash/comparators.py:48-85`).
pub(crate) fn tokenize(tokenizer: Tokenizer, value: &str, out: &mut Vec<String>) {
    out.clear();
    if value.is_empty() {
        return;
    }
    match tokenizer {
        Tokenizer::Exact => out.push(value.to_owned()),
        Tokenizer::Ngram { n, positional } => {
            let pad = n - 1;
            let mut chars = Vec::with_capacity(value.len() + 2 * pad);
            chars.extend(std::iter::repeat_n(' ', pad));
            chars.extend(value.chars());
            chars.extend(std::iter::repeat_n(' ', pad));
            if chars.len() < n {
                return;
            }
            for (i, window) in chars.windows(n).enumerate() {
                let gram: String = window.iter().collect();
                out.push(if positional {
                    format!("{} {gram}", i + 1)
                } else {
                    gram
                });
            }
        }
    }
}

/// The bit budget of token `j` of `count` (`count ≥ 1`).
pub(crate) fn bits_for_token(strategy: Strategy, count: usize, j: usize) -> u64 {
    match strategy {
        Strategy::BitsPerToken(k) => u64::from(k),
        Strategy::BitsPerFeature(total) => {
            // Python `int(total / count)`: an IEEE division truncated, not integer division.
            let k = (f64::from(total) / count as f64) as u64;
            let residue = u64::from(total) % count as u64;
            if (j as u64) < residue { k + 1 } else { k }
        }
    }
}

/// Python `token.encode(encoding)` into `out` (cleared first); `false` if a character cannot
/// be encoded.
pub(crate) fn encode_text(token: &str, encoding: TextEncoding, out: &mut Vec<u8>) -> bool {
    out.clear();
    match encoding {
        TextEncoding::Utf8 => out.extend_from_slice(token.as_bytes()),
        TextEncoding::Ascii => {
            if !token.is_ascii() {
                return false;
            }
            out.extend_from_slice(token.as_bytes());
        }
        TextEncoding::Utf16 => {
            out.extend_from_slice(&[0xFF, 0xFE]);
            for unit in token.encode_utf16() {
                out.extend_from_slice(&unit.to_le_bytes());
            }
        }
        TextEncoding::Utf32 => {
            out.extend_from_slice(&[0xFF, 0xFE, 0, 0]);
            for c in token.chars() {
                out.extend_from_slice(&u32::from(c).to_le_bytes());
            }
        }
    }
    true
}

/// `digest` read as a big-endian integer, mod `m` (`int(hexdigest, 16) % l`).
fn mod_big_endian(digest: &[u8], m: u64) -> u64 {
    let m = u128::from(m);
    let mut r = 0u128;
    for &b in digest {
        r = ((r << 8) | u128::from(b)) % m;
    }
    r as u64
}

/// `HMAC-SHA1(key, parts…)` (RFC 2104 over FIPS 180-4 SHA-1), as clkhash's doubleHash.
fn mac_sha1(m: &Hmac<Sha1>, parts: &[&[u8]]) -> [u8; 20] {
    let mut m = m.clone();
    for p in parts {
        hmac::Mac::update(&mut m, p);
    }
    hmac::Mac::finalize(m).into_bytes().into()
}

/// `HMAC-MD5(key, parts…)` (RFC 2104 over RFC 1321 MD5), as clkhash's doubleHash.
fn mac_md5(m: &Hmac<Md5>, parts: &[&[u8]]) -> [u8; 16] {
    let mut m = m.clone();
    for p in parts {
        hmac::Mac::update(&mut m, p);
    }
    hmac::Mac::finalize(m).into_bytes().into()
}

/// Sets the `k` double-hashing positions of one token.
fn double_hash(
    filter: &mut Bloom,
    sha1: &Hmac<Sha1>,
    md5: &Hmac<Md5>,
    token: &[u8],
    k: u64,
    prevent_singularity: bool,
) {
    let h = filter.len() as u64;
    let a = mod_big_endian(&mac_sha1(sha1, &[token]), h);
    let mut b = mod_big_endian(&mac_md5(md5, &[token]), h);
    if prevent_singularity {
        // `m_bytes + chr(i).encode()` (UTF-8) for i = 0, 1, …; `compile` refused h < 2, so
        // this ends with probability 1 (each step succeeds with probability ≈ 1 - 1/h).
        let mut i = 0u32;
        let mut suffix = [0u8; 4];
        while b == 0 {
            // Python's chr(i) for a surrogate cannot be UTF-8 encoded (clkhash raises);
            // reaching i = 0xD800 needs 55,296 consecutive zero residues.
            let c = char::from_u32(i).unwrap_or(char::REPLACEMENT_CHARACTER);
            b = mod_big_endian(
                &mac_md5(md5, &[token, c.encode_utf8(&mut suffix).as_bytes()]),
                h,
            );
            i += 1;
        }
    }
    // (a + i·b) mod h is periodic in i with a period dividing h: h steps cover every position.
    for i in 0..k.min(h) {
        let g = (u128::from(a) + u128::from(i) * u128::from(b)) % u128::from(h);
        filter.set(g as usize);
    }
}

/// Sets the `k` BLAKE2b positions of one token.
fn blake_hash(filter: &mut Bloom, key: &[u8], token: &[u8], k: u64) {
    let h = filter.len() as u64;
    let mut remaining = k;
    let mut mac_index = 0u64;
    while remaining > 0 {
        let salt = mac_index.to_string();
        let mut mac = Blake2bMac512::new_with_salt_and_personal(Some(key), salt.as_bytes(), &[])
            .expect("key length checked by compile, salt of at most 16 digits");
        mac.update(token);
        let digest = mac.finalize_fixed();
        for pair in digest
            .as_chunks::<2>()
            .0
            .iter()
            .take(remaining.min(32) as usize)
        {
            let index = u64::from(u16::from_le_bytes(*pair)) % h;
            filter.set(index as usize);
        }
        remaining = remaining.saturating_sub(32);
        mac_index += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(t: Tokenizer, v: &str) -> Vec<String> {
        let mut out = Vec::new();
        tokenize(t, v, &mut out);
        out
    }

    #[test]
    fn ngram_tokens_match_the_clkhash_docstring() {
        // clkhash/comparators.py:26 and :35.
        let bigrams = Tokenizer::Ngram {
            n: 2,
            positional: false,
        };
        assert_eq!(
            tokens(bigrams, "clkhash"),
            [" c", "cl", "lk", "kh", "ha", "as", "sh", "h "]
        );
        let positional = Tokenizer::Ngram {
            n: 2,
            positional: true,
        };
        assert_eq!(
            tokens(positional, "clkhash"),
            [
                "1  c", "2 cl", "3 lk", "4 kh", "5 ha", "6 as", "7 sh", "8 h "
            ]
        );
        let unigrams = Tokenizer::Ngram {
            n: 1,
            positional: true,
        };
        assert_eq!(tokens(unigrams, "2161"), ["1 2", "2 1", "3 6", "4 1"]);
        // Code points, not bytes; duplicates kept.
        assert_eq!(tokens(bigrams, "ミユ"), [" ミ", "ミユ", "ユ "]);
        assert_eq!(tokens(bigrams, "aa"), [" a", "aa", "a "]);
        assert_eq!(
            tokens(
                Tokenizer::Ngram {
                    n: 3,
                    positional: false
                },
                "a"
            ),
            ["  a", " a ", "a  "]
        );
        assert!(tokens(bigrams, "").is_empty());
        assert_eq!(tokens(Tokenizer::Exact, "x y"), ["x y"]);
        assert!(tokens(Tokenizer::Exact, "").is_empty());
    }

    #[test]
    fn bits_per_feature_spreads_the_residue_first() {
        let s = Strategy::BitsPerFeature(200);
        let ks: Vec<u64> = (0..7).map(|j| bits_for_token(s, 7, j)).collect();
        // 200 = 7 · 28 + 4.
        assert_eq!(ks, [29, 29, 29, 29, 28, 28, 28]);
        assert_eq!(ks.iter().sum::<u64>(), 200);
        assert_eq!(bits_for_token(Strategy::BitsPerFeature(3), 5, 4), 0);
        assert_eq!(bits_for_token(Strategy::BitsPerToken(20), 5, 4), 20);
    }

    #[test]
    fn python_codecs() {
        let mut out = Vec::new();
        assert!(encode_text("aé", TextEncoding::Utf16, &mut out));
        assert_eq!(out, [0xFF, 0xFE, b'a', 0, 0xE9, 0]);
        assert!(encode_text("a", TextEncoding::Utf32, &mut out));
        assert_eq!(out, [0xFF, 0xFE, 0, 0, b'a', 0, 0, 0]);
        assert!(!encode_text("é", TextEncoding::Ascii, &mut out));
        assert!(encode_text("ミ", TextEncoding::Utf8, &mut out));
        assert_eq!(out, "ミ".as_bytes());
    }

    #[test]
    fn big_endian_reduction() {
        assert_eq!(mod_big_endian(&[0x01, 0x00], 1000), 256);
        assert_eq!(mod_big_endian(&[0xFF; 20], 1024), 1023);
        let d = [0x12, 0x34, 0x56, 0x78, 0x9A];
        assert_eq!(mod_big_endian(&d, 997), 0x12_3456_789A % 997);
    }

    fn schema_json(hash: &str, strategy: &str, folds: u32) -> String {
        format!(
            r#"{{"version": 3,
                "clkConfig": {{"l": 256, "xor_folds": {folds},
                              "kdf": {{"type": "HKDF", "salt": "c2FsdA==", "info": "aW5mbw=="}}}},
                "features": [
                  {{"identifier": "id", "ignored": true}},
                  {{"identifier": "name", "format": {{"type": "string", "encoding": "utf-8"}},
                    "hashing": {{"comparison": {{"type": "ngram", "n": 2}},
                                "strategy": {strategy}, "hash": {hash},
                                "missingValue": {{"sentinel": "N/A", "replaceWith": ""}}}}}},
                  {{"identifier": "sex", "format": {{"type": "enum", "values": ["M", "F"]}},
                    "hashing": {{"comparison": {{"type": "exact"}},
                                "strategy": {{"bitsPerToken": 5}}, "hash": {hash},
                                "missingValue": {{"sentinel": ""}}}}}}
                ]}}"#
        )
    }

    fn encoder(hash: &str, strategy: &str, folds: u32) -> ClkEncoder {
        let schema = ClkhashSchema::from_json(&schema_json(hash, strategy, folds)).unwrap();
        ClkEncoder::new(&schema, b"a secret").unwrap()
    }

    #[test]
    fn debug_redacts_keys() {
        let e = encoder(r#"{"type": "doubleHash"}"#, r#"{"bitsPerToken": 10}"#, 0);
        let shown = format!("{e:?}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(shown.contains("doubleHash"), "{shown}");
        assert!(
            !shown.contains("inner") && !shown.contains("outer"),
            "{shown}"
        );
        // No run of digits long enough to be key material.
        assert!(
            !shown
                .split(|c: char| !c.is_ascii_digit())
                .any(|run| run.len() > 4),
            "{shown}"
        );
    }

    #[test]
    fn encode_shapes_and_budgets() {
        for hash in [r#"{"type": "doubleHash"}"#, r#"{"type": "blakeHash"}"#] {
            let e = encoder(hash, r#"{"bitsPerToken": 10}"#, 0);
            // "" is the sex sentinel, replaced by itself (no replaceWith): no tokens, and the
            // enum check is skipped.
            let empty = e.encode(&["1", "", ""]).unwrap();
            assert_eq!((empty.len(), empty.popcount()), (256, 0));
            // The missing sentinel becomes "", which adds nothing (and skips the checks).
            assert_eq!(e.encode(&["1", "N/A", ""]).unwrap(), empty);
            // The ignored column does not matter.
            let a = e.encode(&["1", "anna", "F"]).unwrap();
            assert_eq!(e.encode(&["2", "anna", "F"]).unwrap(), a);
            assert!(a.popcount() > 0 && a.popcount() <= 5 * 10 + 5);
            assert!(matches!(
                e.encode(&["1", "anna"]),
                Err(ClkError::WrongArity {
                    expected: 3,
                    got: 2
                })
            ));
            let err = e.encode(&["1", "anna", "female"]).unwrap_err();
            assert!(matches!(
                err,
                ClkError::InvalidValue {
                    reason: ValueRejection::NotInEnum,
                    ..
                }
            ));
            assert!(!err.to_string().contains("female"), "{err}");
        }
    }

    #[test]
    fn folding_halves_and_matches_manual_fold() {
        let unfolded = encoder(r#"{"type": "doubleHash"}"#, r#"{"bitsPerFeature": 60}"#, 0);
        assert_eq!(unfolded.len_bits(), 256);
        // l is the length after folding: the folded schema hashes into 512 bits.
        let folded = encoder(r#"{"type": "doubleHash"}"#, r#"{"bitsPerFeature": 60}"#, 1);
        assert_eq!((folded.len_bits(), folded.hash_bits()), (256, 512));
        let clk = folded.encode(&["1", "tanaka", "M"]).unwrap();
        assert_eq!(clk.len(), 256);
        assert_eq!(clk.to_clkhash_bytes().len(), 32);
    }
}
