//! CLKs: cryptographic long-term keys (Schnell, Bachteler & Reiher 2009), bit-identical to
//! clkhash 0.18.3.
//!
//! A CLK is one Bloom filter per record into which every identifier feature hashes its
//! tokens (character n-grams) with a secret key; records of the same person share most bits,
//! and the Dice coefficient of two CLKs ([`dice`]) approximates the n-gram similarity of the
//! identifiers. Unlike exact tokens ([`crate::token`]), CLKs tolerate typing errors — and leak
//! more (frequency attacks on n-grams: Kroll & Steinmetzer 2015; Christen et al. 2018), so they
//! are an interoperability format for partners who already use clkhash / anonlink, not a
//! replacement for exact tokens.
//!
//! Usage: parse the partner's clkhash v3 linkage schema ([`ClkhashSchema::from_json`]), derive
//! the keys from the shared secret ([`ClkEncoder::new`]), and encode each CSV row in column
//! order ([`ClkEncoder::encode`]); [`Bloom::to_clkhash_bytes`] gives the bytes that clkhash
//! base64-encodes. The algorithm, with its clkhash source references, is described in
//! [`encode`]; the schema and its quirks (notably `xor_folds` versus `xorFolds`) in
//! [`clkhash_schema`].
//!
//! Shapes and units: a CLK has the schema's `l` bits (after XOR folding); hashing happens in
//! `l · 2^xor_folds` bits; per-feature keys are `keySize` bytes (64 by default), two per
//! feature, from HKDF (RFC 5869). Everything is deterministic and allocation-light; keys are
//! zeroized on drop and never printed.
//!
//! Supported: string and enum features; `ngram` (plain or positional) and `exact`
//! comparisons; `bitsPerToken` and `bitsPerFeature` strategies; `doubleHash` (with or without
//! `prevent_singularity`) and `blakeHash`; `missingValue`; HKDF-SHA256/-SHA512; XOR folding;
//! the encodings ascii, utf-8, utf-16, utf-32. Refused with an error: schema versions 1 and 2,
//! `integer` and `date` formats, `numeric` comparisons. Not checked: a string format's
//! `pattern` (values clkhash's validation would reject are encoded instead).
//!
//! References: R. Schnell, T. Bachteler, J. Reiher, "Privacy-preserving record linkage using
//! Bloom filters", BMC Med. Inform. Decis. Mak. 9:41 (2009); A. Kirsch, M. Mitzenmacher,
//! "Less hashing, same performance: building a better Bloom filter", ESA 2006 (double
//! hashing); R. Schnell, A. Borgs, J. Encarnação, "XOR-folding for Bloom filter-based
//! encryptions for privacy-preserving record linkage" (2016); clkhash 0.18.3
//! (`clkhash/bloomfilter.py`, `comparators.py`, `field_formats.py`, `key_derivation.py`,
//! `schema.py`).

use std::fmt;

mod bloom;
pub mod clkhash_schema;
pub mod encode;

pub mod harden;
pub mod holder;
pub mod native;

pub use bloom::{Bloom, dice};
pub use clkhash_schema::ClkhashSchema;
pub use encode::ClkEncoder;

/// Everything that can go wrong reading a clkhash schema or encoding a record. Messages name
/// schema keys and features, never identifier values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClkError {
    /// The schema text is not JSON of the v3 linkage schema's shape (unknown key where the
    /// master schema forbids one, wrong type, unknown `type` tag, …).
    #[error("clkhash schema: {0}")]
    Json(#[from] serde_json::Error),
    /// `version` is not 3.
    #[error("clkhash schema version {0} is not supported (only version 3)")]
    UnsupportedVersion(u32),
    /// `clkConfig.l` is 0.
    #[error("clkConfig.l must be at least 1")]
    ZeroLength,
    /// `l · 2^xor_folds` exceeds [`clkhash_schema::MAX_HASH_BITS`].
    #[error(
        "clkConfig.l = {l} with xor_folds = {xor_folds} needs more than the {max} bits \
         allowed before folding"
    )]
    FilterTooLarge {
        /// `clkConfig.l`.
        l: u64,
        /// `clkConfig.xor_folds`.
        xor_folds: u32,
        /// The limit in bits.
        max: usize,
    },
    /// `clkConfig.xorFolds` (the published key, which clkhash 0.18.3 ignores) differs from
    /// `clkConfig.xor_folds` (the key it reads).
    #[error(
        "clkConfig.xorFolds = {xor_folds_v3_schema}, but clkhash 0.18.3 reads only \
         clkConfig.xor_folds (= {xor_folds}) and would ignore it; set \"xor_folds\" to the \
         fold count wanted (and drop \"xorFolds\" or make it equal)"
    )]
    XorFoldsConflict {
        /// The effective fold count, from `xor_folds` (0 if absent).
        xor_folds: u32,
        /// The value of `xorFolds`.
        xor_folds_v3_schema: u32,
    },
    /// `clkConfig.kdf.salt` or `.info` is not standard padded base64.
    #[error("clkConfig.kdf.{field} is not valid base64")]
    KdfBase64 {
        /// `"salt"` or `"info"`.
        field: &'static str,
    },
    /// `clkConfig.kdf.keySize` is 0.
    #[error("clkConfig.kdf.keySize must be at least 1")]
    ZeroKeySize,
    /// HKDF cannot expand to `2 · features · keySize` bytes (at most 255 hash outputs).
    #[error(
        "{features} features × 2 keys × {key_size} bytes = {requested} bytes, more than HKDF \
         can derive ({max} bytes)"
    )]
    KeyMaterialTooLong {
        /// Bytes needed.
        requested: usize,
        /// Bytes HKDF can produce with the schema's hash.
        max: usize,
        /// Number of features (ignored ones included).
        features: usize,
        /// `clkConfig.kdf.keySize`.
        key_size: usize,
    },
    /// A feature that is not ignored lacks `format` or `hashing`.
    #[error("feature {index} ({identifier:?}) is not ignored but has no `{key}`")]
    MissingFeatureKey {
        /// Position in `features`.
        index: usize,
        /// Its identifier.
        identifier: String,
        /// The missing key.
        key: &'static str,
    },
    /// A feature's settings are out of range or contradictory.
    #[error("feature {index} ({identifier:?}): {reason}")]
    InvalidFeature {
        /// Position in `features`.
        index: usize,
        /// Its identifier.
        identifier: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A feature uses a clkhash option this encoder does not implement.
    #[error("feature {index} ({identifier:?}): {what} is not supported")]
    Unsupported {
        /// Position in `features`.
        index: usize,
        /// Its identifier.
        identifier: String,
        /// The option.
        what: &'static str,
    },
    /// `blakeHash` needs a power-of-two length before folding (`clkhash/bloomfilter.py:232`).
    #[error("blakeHash needs a power-of-two filter length before folding, not {bits} bits")]
    BlakeLengthNotPowerOfTwo {
        /// `l · 2^xor_folds`.
        bits: usize,
    },
    /// `blakeHash` keys are at most 64 bytes (BLAKE2b).
    #[error("blakeHash keys are at most 64 bytes, but clkConfig.kdf.keySize is {key_size}")]
    BlakeKeyTooLong {
        /// `clkConfig.kdf.keySize`.
        key_size: usize,
    },
    /// A record does not have one value per feature.
    #[error("record has {got} values, but the schema has {expected} features")]
    WrongArity {
        /// Number of features.
        expected: usize,
        /// Number of values given.
        got: usize,
    },
    /// A value has a character the feature's encoding cannot represent.
    #[error("feature {identifier:?}: value cannot be encoded as {encoding}")]
    Unencodable {
        /// The feature.
        identifier: String,
        /// The encoding's schema name.
        encoding: &'static str,
    },
    /// A value fails the feature's format (clkhash's validation).
    #[error("feature {identifier:?}: value refused: {reason}")]
    InvalidValue {
        /// The feature.
        identifier: String,
        /// Which check failed.
        reason: ValueRejection,
    },
    /// A filter cannot be folded that many times.
    #[error("a {bits}-bit filter cannot be XOR-folded {folds} times")]
    NotFoldable {
        /// Filter length.
        bits: usize,
        /// Folds asked for.
        folds: u32,
    },
    /// clkhash bytes of the wrong length for the filter.
    #[error("a {bits}-bit filter takes {expected} bytes, got {got}")]
    ClkBytesLength {
        /// Filter length in bits.
        bits: usize,
        /// `ceil(bits / 8)`.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// clkhash bytes with a padding bit (past the filter length) set.
    #[error("padding bits past bit {bits} are set")]
    ClkBytesPadding {
        /// Filter length in bits.
        bits: usize,
    },
}

/// Why a value was refused by its feature's format. Carries limits, never the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValueRejection {
    /// Fewer code points than `minLength`.
    TooShort {
        /// `minLength`.
        min: u64,
    },
    /// More code points than `maxLength`.
    TooLong {
        /// `maxLength`.
        max: u64,
    },
    /// Not upper case though `case` is `upper`.
    NotUpperCase,
    /// Not lower case though `case` is `lower`.
    NotLowerCase,
    /// Not one of an `enum` format's values.
    NotInEnum,
}

impl fmt::Display for ValueRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort { min } => write!(f, "shorter than minLength {min}"),
            Self::TooLong { max } => write!(f, "longer than maxLength {max}"),
            Self::NotUpperCase => f.write_str("not upper case"),
            Self::NotLowerCase => f.write_str("not lower case"),
            Self::NotInEnum => f.write_str("not one of the enum values"),
        }
    }
}
