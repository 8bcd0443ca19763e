//! clkhash's linkage schema, version 3 (`clkhash/schemas/v3.json`), as serde structs, and
//! its compilation into the checked, key-free plan the encoder runs.
//!
//! The structs follow the JSON key for key (camelCase as in the master schema). Where
//! clkhash 0.18.3's code and its published master schema disagree, the code wins — it is
//! what produces the CLKs — and the disagreement is either reproduced or refused, never
//! silently resolved the other way:
//!
//! * **Fold count.** The master schema documents `clkConfig.xorFolds`, but `from_json_dict`
//!   (`clkhash/schema.py:210`) reads `clk_config.get('xor_folds', 0)`: a schema with only
//!   `xorFolds: 1` validates and is hashed *without* folding. Here the fold count is read from
//!   [`ClkConfig::xor_folds`] (`xor_folds`) as clkhash does, and a schema whose `xorFolds`
//!   differs from it is refused with [`ClkError::XorFoldsConflict`] instead of being hashed
//!   in a way its author evidently did not intend.
//! * **`l` is the length after folding**; hashing uses `l · 2^xor_folds` bits
//!   (`clkhash/bloomfilter.py:330`).
//! * **Keys for every feature.** Two keys are derived per feature *including ignored ones*
//!   (`clkhash/clk.py:233-241` passes `len(schema.fields)`), so the key of a hashed feature
//!   depends on its index in the feature list.

use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use super::ClkError;

/// The linkage schema version this module reads. Versions 1 and 2, which clkhash converts on
/// load, are refused.
pub const CLKHASH_SCHEMA_VERSION: u32 = 3;

/// clkhash's default HKDF output key size in bytes (`clkhash/key_derivation.py:10`).
pub const DEFAULT_KEY_SIZE: u32 = 64;

/// Upper bound on the filter length before folding, `l · 2^xor_folds`, in bits (2 MiB of
/// filter). clkhash has none; real schemas use 512 to 4096 bits.
pub const MAX_HASH_BITS: usize = 1 << 24;

/// A clkhash v3 linkage schema (the JSON `clkhash` reads with `schema.from_json_file`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClkhashSchema {
    /// Master schema version; must be [`CLKHASH_SCHEMA_VERSION`].
    pub version: u32,
    /// Filter length, folding and key derivation.
    pub clk_config: ClkConfig,
    /// One entry per input column, in column order.
    pub features: Vec<Feature>,
}

/// `clkConfig`: global settings of the encoding.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ClkConfig {
    /// Length of a CLK in bits **after** XOR folding.
    pub l: u64,
    /// Key derivation.
    pub kdf: KdfConfig,
    /// Number of XOR folds, under the key clkhash's code reads (`xor_folds`); 0 if absent.
    #[serde(default)]
    pub xor_folds: u32,
    /// `xorFolds`, the key the published v3 master schema documents and clkhash 0.18.3
    /// ignores. Accepted only when it equals [`ClkConfig::xor_folds`] (module docs).
    #[serde(default, rename = "xorFolds")]
    pub xor_folds_v3_schema: Option<u32>,
}

/// `clkConfig.kdf`: HKDF (RFC 5869) parameters of the per-feature keys.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KdfConfig {
    /// Always `"HKDF"` in v3.
    #[serde(rename = "type")]
    pub kdf_type: KdfType,
    /// HKDF's hash function; SHA-256 if absent.
    #[serde(default)]
    pub hash: KdfHash,
    /// Base64 of the HKDF salt; absent means no salt (`HashLen` zero bytes, RFC 5869 §2.2).
    #[serde(default)]
    pub salt: Option<String>,
    /// Base64 of the HKDF info; absent means empty.
    #[serde(default)]
    pub info: Option<String>,
    /// Bytes per derived key; [`DEFAULT_KEY_SIZE`] if absent.
    #[serde(default)]
    pub key_size: Option<u32>,
}

/// Key derivation function (`clkConfig.kdf.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum KdfType {
    /// HKDF, RFC 5869.
    #[serde(rename = "HKDF")]
    Hkdf,
}

/// Hash function of HKDF (`clkConfig.kdf.hash`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum KdfHash {
    /// HKDF-SHA256 (the default).
    #[default]
    #[serde(rename = "SHA256")]
    Sha256,
    /// HKDF-SHA512.
    #[serde(rename = "SHA512")]
    Sha512,
}

impl KdfHash {
    /// Output length of the hash in bytes (HKDF can expand to 255 times this).
    pub fn output_len(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha512 => 64,
        }
    }
}

/// One feature (input column). Ignored if `ignored` is true; otherwise `format` and
/// `hashing` are required.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Feature {
    /// Column name; clkhash checks it against the CSV header.
    pub identifier: String,
    /// An ignored feature contributes nothing to the CLK (but still consumes two keys).
    #[serde(default)]
    pub ignored: bool,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Value format and validation.
    #[serde(default)]
    pub format: Option<FeatureFormat>,
    /// Tokenization, insertion strategy and hash function.
    #[serde(default)]
    pub hashing: Option<HashingConfig>,
}

/// `format` of a feature, tagged by `type`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum FeatureFormat {
    /// Text, hashed as given (after the missing-value substitution).
    String(StringFormat),
    /// Integers, which clkhash re-renders with Python `str(int(value))` (not supported).
    Integer(IntegerFormat),
    /// Dates, which clkhash re-renders with `strptime`/`strftime('%Y%m%d')` (not supported).
    Date(DateFormat),
    /// One of a fixed set of strings, hashed as given.
    Enum(EnumFormat),
}

/// `format` of `type` `string` (`textFormat` or `textPatternFormat`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StringFormat {
    /// Character encoding of the hashed n-grams; UTF-8 if absent.
    #[serde(default)]
    pub encoding: TextEncoding,
    /// Required letter case of values.
    #[serde(default)]
    pub case: Option<LetterCase>,
    /// Minimum length in Unicode code points.
    #[serde(default)]
    pub min_length: Option<u64>,
    /// Maximum length in Unicode code points.
    #[serde(default)]
    pub max_length: Option<u64>,
    /// Python regular expression values must match in full. **Not checked** here (no regex
    /// engine in the core): values clkhash would refuse are encoded.
    #[serde(default)]
    pub pattern: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
}

/// `format` of `type` `integer`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegerFormat {
    /// Smallest permitted value.
    #[serde(default)]
    pub minimum: Option<i64>,
    /// Largest permitted value.
    #[serde(default)]
    pub maximum: Option<i64>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
}

/// `format` of `type` `date`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DateFormat {
    /// `strptime` format of the input.
    pub format: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
}

/// `format` of `type` `enum`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnumFormat {
    /// The permitted values.
    pub values: Vec<String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
}

/// Character encoding of a string feature: how clkhash turns each n-gram into bytes
/// (`m.encode(encoding)`, `clkhash/bloomfilter.py:115` and `:242`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum TextEncoding {
    /// ASCII; a value with other characters is refused.
    #[serde(rename = "ascii")]
    Ascii,
    /// UTF-8 (the default).
    #[default]
    #[serde(rename = "utf-8")]
    Utf8,
    /// Python's `utf-16` codec: a byte-order mark, then native-order code units. Encoded here
    /// as `FF FE` + UTF-16LE, what clkhash produces on little-endian machines.
    #[serde(rename = "utf-16")]
    Utf16,
    /// Python's `utf-32` codec: `FF FE 00 00` + UTF-32LE on little-endian machines.
    #[serde(rename = "utf-32")]
    Utf32,
}

impl TextEncoding {
    /// The schema name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ascii => "ascii",
            Self::Utf8 => "utf-8",
            Self::Utf16 => "utf-16",
            Self::Utf32 => "utf-32",
        }
    }
}

/// Required letter case of a string feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LetterCase {
    /// `value.to_uppercase() == value`.
    Upper,
    /// `value.to_lowercase() == value`.
    Lower,
    /// Anything.
    Mixed,
}

/// `hashing` of a feature (`hashingConfig`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HashingConfig {
    /// How a value is split into tokens.
    pub comparison: Comparison,
    /// How many filter bits each token sets.
    pub strategy: Strategy,
    /// Hash function; `blakeHash` if absent (`clkhash/field_formats.py:214`).
    #[serde(default)]
    pub hash: HashFunction,
    /// Sentinel for a missing value and its replacement.
    #[serde(default)]
    pub missing_value: Option<MissingValue>,
}

/// `comparison`: the tokenizer (`clkhash/comparators.py`), tagged by `type`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Comparison {
    /// Character n-grams.
    Ngram(NgramComparison),
    /// The whole value as one token.
    Exact,
    /// Neighbourhood tokens of a number (Vatsalan & Christen 2015); not supported.
    Numeric(NumericComparison),
}

/// `comparison` of `type` `ngram`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct NgramComparison {
    /// The n of n-gram, at least 1.
    pub n: u32,
    /// Prefix each n-gram with its 1-based position.
    #[serde(default)]
    pub positional: bool,
}

/// `comparison` of `type` `numeric`.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NumericComparison {
    /// Largest distance at which two numbers still share tokens.
    pub threshold_distance: f64,
    /// Tokens on either side of the value.
    pub resolution: u32,
    /// Decimal digits kept (snake case in the master schema too).
    #[serde(default, rename = "fractional_precision")]
    pub fractional_precision: Option<u32>,
}

/// `strategy`: how often each token is inserted (`clkhash/field_formats.py:62-130`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Strategy {
    /// Every token sets `k` bits (the `k` of Schnell et al. 2009).
    BitsPerToken(u32),
    /// The feature's tokens set this many bits in total, spread as evenly as possible.
    BitsPerFeature(u32),
}

/// `hash`: the hash function of a feature, tagged by `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "type")]
pub enum HashFunction {
    /// HMAC-SHA1 / HMAC-MD5 double hashing.
    #[serde(rename = "doubleHash")]
    DoubleHash {
        /// Re-hash when the HMAC-MD5 step is 0 mod the filter length (clkhash issue #33).
        #[serde(default)]
        prevent_singularity: Option<bool>,
    },
    /// Keyed BLAKE2b-512 (the default).
    #[serde(rename = "blakeHash")]
    BlakeHash {
        /// Must be absent: clkhash refuses it with `blakeHash`.
        #[serde(default)]
        prevent_singularity: Option<bool>,
    },
}

impl Default for HashFunction {
    fn default() -> Self {
        Self::BlakeHash {
            prevent_singularity: None,
        }
    }
}

/// `missingValue`: a value equal to `sentinel` is replaced by `replace_with` (the sentinel
/// itself if absent), is not validated against the format, and is then tokenized like any
/// value.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MissingValue {
    /// The input string that marks a missing value (often `""`).
    pub sentinel: String,
    /// What is hashed instead.
    #[serde(default)]
    pub replace_with: Option<String>,
}

impl ClkhashSchema {
    /// Parses a clkhash v3 linkage schema and checks it (everything [`ClkEncoder::new`]
    /// checks except the secret).
    ///
    /// # Errors
    /// [`ClkError::Json`] if the text is not JSON of this shape, otherwise the first problem
    /// found by the checks.
    ///
    /// [`ClkEncoder::new`]: super::ClkEncoder::new
    pub fn from_json(json: &str) -> Result<Self, ClkError> {
        let schema: Self = serde_json::from_str(json)?;
        schema.compile()?;
        Ok(schema)
    }

    /// The feature identifiers in order: the expected CSV header.
    pub fn identifiers(&self) -> impl ExactSizeIterator<Item = &str> {
        self.features.iter().map(|f| f.identifier.as_str())
    }

    /// Length of the CLKs in bits (after folding).
    pub fn len_bits(&self) -> u64 {
        self.clk_config.l
    }

    /// Checks the schema and resolves defaults into a [`Plan`].
    pub(crate) fn compile(&self) -> Result<Plan, ClkError> {
        if self.version != CLKHASH_SCHEMA_VERSION {
            return Err(ClkError::UnsupportedVersion(self.version));
        }
        let config = &self.clk_config;
        if let Some(camel) = config.xor_folds_v3_schema
            && camel != config.xor_folds
        {
            return Err(ClkError::XorFoldsConflict {
                xor_folds: config.xor_folds,
                xor_folds_v3_schema: camel,
            });
        }
        if config.l == 0 {
            return Err(ClkError::ZeroLength);
        }
        let too_large = || ClkError::FilterTooLarge {
            l: config.l,
            xor_folds: config.xor_folds,
            max: MAX_HASH_BITS,
        };
        let l = usize::try_from(config.l).map_err(|_| too_large())?;
        let hash_bits = 1usize
            .checked_shl(config.xor_folds)
            .and_then(|f| l.checked_mul(f))
            .filter(|&b| b <= MAX_HASH_BITS)
            .ok_or_else(too_large)?;

        let kdf = &config.kdf;
        let decode = |field: &'static str, text: &Option<String>| {
            text.as_deref()
                .map(|t| STANDARD.decode(t))
                .transpose()
                .map_err(|_| ClkError::KdfBase64 { field })
        };
        let key_size = kdf.key_size.unwrap_or(DEFAULT_KEY_SIZE) as usize;
        if key_size == 0 {
            return Err(ClkError::ZeroKeySize);
        }
        let kdf = KdfParams {
            hash: kdf.hash,
            salt: decode("salt", &kdf.salt)?,
            info: decode("info", &kdf.info)?,
            key_size,
        };
        let requested = self
            .features
            .len()
            .saturating_mul(2)
            .saturating_mul(key_size);
        let max = 255 * kdf.hash.output_len();
        if requested > max {
            return Err(ClkError::KeyMaterialTooLong {
                requested,
                max,
                features: self.features.len(),
                key_size,
            });
        }

        let features = self
            .features
            .iter()
            .enumerate()
            .map(|(index, f)| f.compile(index, hash_bits, key_size))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Plan {
            l,
            xor_folds: config.xor_folds,
            hash_bits,
            kdf,
            features,
        })
    }
}

impl Feature {
    fn compile(
        &self,
        index: usize,
        hash_bits: usize,
        key_size: usize,
    ) -> Result<PlannedFeature, ClkError> {
        let identifier = self.identifier.clone();
        // `spec_from_json_dict` (clkhash/field_formats.py:865): `ignored` wins over anything.
        if self.ignored {
            return Ok(PlannedFeature {
                identifier,
                hashing: None,
            });
        }
        let missing = |key| ClkError::MissingFeatureKey {
            index,
            identifier: self.identifier.clone(),
            key,
        };
        let invalid = |reason| ClkError::InvalidFeature {
            index,
            identifier: self.identifier.clone(),
            reason,
        };
        let unsupported = |what| ClkError::Unsupported {
            index,
            identifier: self.identifier.clone(),
            what,
        };
        let format = self.format.as_ref().ok_or_else(|| missing("format"))?;
        let hashing = self.hashing.as_ref().ok_or_else(|| missing("hashing"))?;

        let (encoding, checks) = match format {
            FeatureFormat::String(s) => {
                if s.max_length == Some(0) {
                    return Err(invalid("format.maxLength must be at least 1"));
                }
                (
                    s.encoding,
                    ValueChecks::String {
                        case: s.case,
                        min_length: s.min_length,
                        max_length: s.max_length,
                    },
                )
            }
            // EnumSpec keeps FieldHashingProperties' default encoding, UTF-8.
            FeatureFormat::Enum(e) => (
                TextEncoding::Utf8,
                ValueChecks::Enum(e.values.iter().cloned().collect()),
            ),
            FeatureFormat::Integer(_) => return Err(unsupported("format type \"integer\"")),
            FeatureFormat::Date(_) => return Err(unsupported("format type \"date\"")),
        };
        let tokenizer = match hashing.comparison {
            Comparison::Ngram(NgramComparison { n: 0, .. }) => {
                return Err(invalid("comparison.n must be at least 1"));
            }
            Comparison::Ngram(NgramComparison { n, positional }) => Tokenizer::Ngram {
                n: n as usize,
                positional,
            },
            Comparison::Exact => Tokenizer::Exact,
            Comparison::Numeric(_) => return Err(unsupported("comparison type \"numeric\"")),
        };
        let strategy = match hashing.strategy {
            Strategy::BitsPerToken(0) | Strategy::BitsPerFeature(0) => {
                return Err(invalid("strategy value must be at least 1"));
            }
            s => s,
        };
        let hash = match hashing.hash {
            HashFunction::DoubleHash {
                prevent_singularity,
            } => {
                let prevent_singularity = prevent_singularity.unwrap_or(false);
                if prevent_singularity && hash_bits < 2 {
                    // Every value is 0 mod 1: clkhash would loop forever.
                    return Err(invalid(
                        "prevent_singularity needs a filter of at least 2 bits",
                    ));
                }
                HashKind::DoubleHash {
                    prevent_singularity,
                }
            }
            HashFunction::BlakeHash {
                prevent_singularity: Some(_),
            } => {
                // clkhash/field_formats.py:173.
                return Err(invalid(
                    "prevent_singularity may only be given with doubleHash",
                ));
            }
            HashFunction::BlakeHash {
                prevent_singularity: None,
            } => {
                // clkhash/bloomfilter.py:232-237 (raised there only once a token is hashed).
                if !hash_bits.is_power_of_two() {
                    return Err(ClkError::BlakeLengthNotPowerOfTwo { bits: hash_bits });
                }
                // hashlib.blake2b refuses longer keys.
                if key_size > BLAKE2B_MAX_KEY {
                    return Err(ClkError::BlakeKeyTooLong { key_size });
                }
                HashKind::Blake
            }
        };
        let missing_value = hashing.missing_value.as_ref().map(|m| MissingPlan {
            sentinel: m.sentinel.clone(),
            replace_with: m.replace_with.clone().unwrap_or_else(|| m.sentinel.clone()),
        });
        Ok(PlannedFeature {
            identifier,
            hashing: Some(FeatureHashing {
                tokenizer,
                strategy,
                hash,
                encoding,
                missing_value,
                checks,
            }),
        })
    }
}

/// Longest BLAKE2b key in bytes (RFC 7693 §2.1).
pub(crate) const BLAKE2B_MAX_KEY: usize = 64;

/// A checked schema with defaults resolved. Holds no key material.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    /// CLK length after folding, bits.
    pub(crate) l: usize,
    pub(crate) xor_folds: u32,
    /// `l · 2^xor_folds`: the length hashed into, bits.
    pub(crate) hash_bits: usize,
    pub(crate) kdf: KdfParams,
    pub(crate) features: Vec<PlannedFeature>,
}

/// Decoded HKDF parameters.
#[derive(Clone, Debug)]
pub(crate) struct KdfParams {
    pub(crate) hash: KdfHash,
    pub(crate) salt: Option<Vec<u8>>,
    pub(crate) info: Option<Vec<u8>>,
    pub(crate) key_size: usize,
}

/// One feature of a [`Plan`]; `hashing` is `None` for an ignored feature.
#[derive(Clone, Debug)]
pub(crate) struct PlannedFeature {
    pub(crate) identifier: String,
    pub(crate) hashing: Option<FeatureHashing>,
}

/// How a hashed feature turns a value into filter bits.
#[derive(Clone, Debug)]
pub(crate) struct FeatureHashing {
    pub(crate) tokenizer: Tokenizer,
    pub(crate) strategy: Strategy,
    pub(crate) hash: HashKind,
    pub(crate) encoding: TextEncoding,
    pub(crate) missing_value: Option<MissingPlan>,
    pub(crate) checks: ValueChecks,
}

/// Tokenizer of a feature.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Tokenizer {
    Ngram { n: usize, positional: bool },
    Exact,
}

/// Hash function of a feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HashKind {
    DoubleHash { prevent_singularity: bool },
    Blake,
}

impl HashKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::DoubleHash {
                prevent_singularity: false,
            } => "doubleHash",
            Self::DoubleHash {
                prevent_singularity: true,
            } => "doubleHash(prevent_singularity)",
            Self::Blake => "blakeHash",
        }
    }
}

/// Resolved `missingValue`.
#[derive(Clone, Debug)]
pub(crate) struct MissingPlan {
    pub(crate) sentinel: String,
    pub(crate) replace_with: String,
}

/// The format checks clkhash's `validate_entries` applies before hashing.
#[derive(Clone, Debug)]
pub(crate) enum ValueChecks {
    String {
        case: Option<LetterCase>,
        min_length: Option<u64>,
        max_length: Option<u64>,
    },
    Enum(BTreeSet<String>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(clk_config: &str, features: &str) -> String {
        format!(r#"{{"version": 3, "clkConfig": {clk_config}, "features": [{features}]}}"#)
    }

    const KDF: &str = r#""kdf": {"type": "HKDF", "salt": "c2FsdA==", "info": "aW5mbw=="}"#;
    const NAME: &str = r#"{"identifier": "name", "format": {"type": "string"},
        "hashing": {"comparison": {"type": "ngram", "n": 2},
                    "strategy": {"bitsPerToken": 20}, "hash": {"type": "doubleHash"}}}"#;

    #[test]
    fn parses_defaults() {
        let s = ClkhashSchema::from_json(&schema(
            &format!(r#"{{"l": 1024, {KDF}}}"#),
            &format!(r#"{{"identifier": "id", "ignored": true}}, {NAME}"#),
        ))
        .unwrap();
        assert_eq!(s.identifiers().collect::<Vec<_>>(), ["id", "name"]);
        let plan = s.compile().unwrap();
        assert_eq!((plan.l, plan.xor_folds, plan.hash_bits), (1024, 0, 1024));
        assert_eq!(plan.kdf.key_size, 64);
        assert_eq!(plan.kdf.salt.as_deref(), Some(&b"salt"[..]));
        assert_eq!(plan.kdf.info.as_deref(), Some(&b"info"[..]));
        assert!(plan.features[0].hashing.is_none());
        let h = plan.features[1].hashing.as_ref().unwrap();
        assert!(matches!(
            h.tokenizer,
            Tokenizer::Ngram {
                n: 2,
                positional: false
            }
        ));
        assert_eq!(h.encoding, TextEncoding::Utf8);
        assert_eq!(
            h.hash,
            HashKind::DoubleHash {
                prevent_singularity: false
            }
        );
    }

    #[test]
    fn hash_defaults_to_blake() {
        let feature = r#"{"identifier": "name", "format": {"type": "string"},
            "hashing": {"comparison": {"type": "exact"}, "strategy": {"bitsPerFeature": 9}}}"#;
        let s =
            ClkhashSchema::from_json(&schema(&format!(r#"{{"l": 64, {KDF}}}"#), feature)).unwrap();
        let plan = s.compile().unwrap();
        assert_eq!(
            plan.features[0].hashing.as_ref().unwrap().hash,
            HashKind::Blake
        );
    }

    #[test]
    fn xor_folds_is_read_from_the_snake_case_key() {
        let s = ClkhashSchema::from_json(&schema(
            &format!(r#"{{"l": 512, "xor_folds": 1, {KDF}}}"#),
            NAME,
        ))
        .unwrap();
        let plan = s.compile().unwrap();
        assert_eq!((plan.l, plan.xor_folds, plan.hash_bits), (512, 1, 1024));
        // Both keys, agreeing: fine.
        ClkhashSchema::from_json(&schema(
            &format!(r#"{{"l": 512, "xor_folds": 2, "xorFolds": 2, {KDF}}}"#),
            NAME,
        ))
        .unwrap();
        // Only the documented key: clkhash would silently not fold, so it is refused.
        let err = ClkhashSchema::from_json(&schema(
            &format!(r#"{{"l": 512, "xorFolds": 1, {KDF}}}"#),
            NAME,
        ))
        .unwrap_err();
        assert!(matches!(
            err,
            ClkError::XorFoldsConflict {
                xor_folds: 0,
                xor_folds_v3_schema: 1
            }
        ));
        // `xorFolds: 0` alone changes nothing and is accepted.
        ClkhashSchema::from_json(&schema(
            &format!(r#"{{"l": 512, "xorFolds": 0, {KDF}}}"#),
            NAME,
        ))
        .unwrap();
    }

    #[test]
    fn refusals() {
        let cfg = format!(r#"{{"l": 1000, {KDF}}}"#);
        let blake = r#"{"identifier": "a", "format": {"type": "string"},
            "hashing": {"comparison": {"type": "ngram", "n": 2},
                        "strategy": {"bitsPerToken": 20}, "hash": {"type": "blakeHash"}}}"#;
        assert!(matches!(
            ClkhashSchema::from_json(&schema(&cfg, blake)),
            Err(ClkError::BlakeLengthNotPowerOfTwo { bits: 1000 })
        ));
        let ok = format!(r#"{{"l": 1024, {KDF}}}"#);
        let zero_n = NAME.replace(r#""n": 2"#, r#""n": 0"#);
        assert!(matches!(
            ClkhashSchema::from_json(&schema(&ok, &zero_n)),
            Err(ClkError::InvalidFeature { index: 0, .. })
        ));
        let no_hashing = r#"{"identifier": "a", "format": {"type": "string"}}"#;
        assert!(matches!(
            ClkhashSchema::from_json(&schema(&ok, no_hashing)),
            Err(ClkError::MissingFeatureKey { key: "hashing", .. })
        ));
        let numeric = NAME.replace(
            r#"{"type": "ngram", "n": 2}"#,
            r#"{"type": "numeric", "thresholdDistance": 2.0, "resolution": 2}"#,
        );
        assert!(matches!(
            ClkhashSchema::from_json(&schema(&ok, &numeric)),
            Err(ClkError::Unsupported { .. })
        ));
        let blake_ps = blake.replace(
            r#"{"type": "blakeHash"}"#,
            r#"{"type": "blakeHash", "prevent_singularity": false}"#,
        );
        assert!(matches!(
            ClkhashSchema::from_json(&schema(&ok, &blake_ps)),
            Err(ClkError::InvalidFeature { .. })
        ));
        let v2 = schema(&ok, NAME).replace(r#""version": 3"#, r#""version": 2"#);
        assert!(matches!(
            ClkhashSchema::from_json(&v2),
            Err(ClkError::UnsupportedVersion(2))
        ));
        let bad_salt = ok.replace("c2FsdA==", "not base64!");
        assert!(matches!(
            ClkhashSchema::from_json(&schema(&bad_salt, NAME)),
            Err(ClkError::KdfBase64 { field: "salt" })
        ));
        let typo = NAME.replace("bitsPerToken", "bitsPerTokens");
        assert!(matches!(
            ClkhashSchema::from_json(&schema(&ok, &typo)),
            Err(ClkError::Json(_))
        ));
        assert!(matches!(
            ClkhashSchema::from_json(&schema(r#"{"l": 0, "kdf": {"type": "HKDF"}}"#, NAME)),
            Err(ClkError::ZeroLength)
        ));
        assert!(matches!(
            ClkhashSchema::from_json(&schema(
                r#"{"l": 1024, "xor_folds": 20, "kdf": {"type": "HKDF"}}"#,
                NAME
            )),
            Err(ClkError::FilterTooLarge { .. })
        ));
        // 64 features × 2 keys × 64 bytes > 255 × 32 bytes of HKDF-SHA256 output.
        let many = vec![r#"{"identifier": "x", "ignored": true}"#; 64].join(",");
        assert!(matches!(
            ClkhashSchema::from_json(&schema(&ok, &many)),
            Err(ClkError::KeyMaterialTooLong {
                requested: 8192,
                max: 8160,
                ..
            })
        ));
    }
}
