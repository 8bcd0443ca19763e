//! RFC 9497 oblivious pseudorandom functions for the suite **ristretto255-SHA512**.
//!
//! The key custodian holds a [`SecretKey`] `k`; a data holder turns an identifier `x` into
//! `k·H(x)` without learning `k`, and the custodian never sees `x`:
//!
//! 1. the holder blinds: `B = r·H(x)` with a fresh random [`Blind`] `r`
//!    ([`OprfClient::blind`]) and sends the [`BlindedElement`] `B`;
//! 2. the custodian evaluates: `Z = k·B` ([`OprfServer::blind_evaluate`]) and returns the
//!    [`EvaluatedElement`] `Z`;
//! 3. the holder unblinds: `r⁻¹·Z = k·H(x)`, and either hashes it into the RFC's 64-byte
//!    [`Output`] ([`OprfClient::finalize`]) or keeps the 32-byte group element
//!    ([`OprfClient::finalize_element`]).
//!
//! Modes (RFC 9497 §3): [`Mode::Oprf`] (0x00) as above; [`Mode::Voprf`] (0x01), where the
//! custodian publishes a [`PublicKey`] `k·G` and proves with one DLEQ [`Proof`] per batch that it
//! used that key ([`VoprfServer::blind_evaluate_batch`], checked by
//! [`VoprfClient::finalize_batch`]); [`Mode::Poprf`] (0x02), the partially oblivious variant
//! with public `info` bound into the evaluation. The mode is part of every domain separation
//! tag: the same key and input give unrelated results in different modes.
//!
//! **Raw elements and re-keying.** renketsu stores `k·H(x)` (the unblinded element, before the
//! RFC's final hash) so that tokens can be moved from key `k1` to `k2` without seeing `x`:
//! [`RekeyDelta::between`]`(k1, k2)` is `Δ = k2·k1⁻¹` and [`rekey`]`(k1·H(x), Δ) = k2·H(x)`.
//! [`finalize_from_element`] turns a stored element into the RFC output when needed.
//!
//! Everything is written against RFC 9497 (protocol), RFC 9380 §5.3.1 (`expand_message_xmd`)
//! and RFC 9496 (ristretto255 encoding, element derivation), on `curve25519-dalek` 5 and
//! `sha2` 0.11, and checked against the RFC's Appendix A.1 vectors
//! (`keys/core/tests/rfc9497_vectors.rs`).
//!
//! Secret scalars ([`SecretKey`], [`Blind`], [`RekeyDelta`], proof nonces) are zeroized on drop
//! and their `Debug` prints `<redacted>`.

mod client;
mod dleq;
mod group;
mod key;
mod rekey;
mod server;
#[cfg(test)]
mod tests;

pub use client::{BlindResult, OprfClient, PoprfClient, VoprfClient};
pub use dleq::Proof;
pub use group::{
    BlindedElement, ELEMENT_LEN, EvaluatedElement, MAX_INPUT_LEN, Mode, OUTPUT_LEN, Output,
    PROOF_LEN, SCALAR_LEN, SUITE_ID,
};
pub use key::{Blind, PublicKey, SecretKey};
pub use rekey::{RekeyDelta, finalize_from_element, rekey};
pub use server::{BatchEvaluation, OprfServer, PoprfServer, VoprfServer};

/// Errors of the OPRF protocol. The first four are the errors RFC 9497 names
/// (`InvalidInputError`, `DeriveKeyPairError`, `VerifyError`, `InverseError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OprfError {
    /// The input hashes to the identity element, or (POPRF) the tweaked public key is the
    /// identity. RFC 9497 `InvalidInputError`.
    #[error("invalid OPRF input: it maps to the identity element")]
    InvalidInput,
    /// `DeriveKeyPair` found no non-zero scalar in 256 attempts. RFC 9497 `DeriveKeyPairError`.
    #[error("DeriveKeyPair found no valid key for this seed and info")]
    DeriveKeyPair,
    /// The DLEQ proof does not verify: the evaluation was not made with the expected key.
    /// RFC 9497 `VerifyError`.
    #[error("OPRF proof verification failed")]
    Verify,
    /// A scalar that must be inverted is zero (POPRF: `skS + H(info) = 0`). RFC 9497
    /// `InverseError`.
    #[error("scalar is not invertible")]
    Inverse,
    /// An input, key info or POPRF info longer than 65535 bytes (its length is encoded in two
    /// bytes).
    #[error("{what} is {len} bytes; at most 65535 are allowed")]
    TooLong {
        /// Which argument.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// Not a valid ristretto255 element encoding: wrong length, not canonical, not a group
    /// element, or the identity.
    #[error("invalid ristretto255 element encoding")]
    InvalidElement,
    /// Not a valid scalar encoding: wrong length, not reduced mod ℓ, or zero where a non-zero
    /// scalar is required.
    #[error("invalid scalar encoding")]
    InvalidScalar,
    /// Not a valid proof encoding (64 bytes: two canonical scalars).
    #[error("invalid proof encoding")]
    InvalidProof,
    /// A batch is empty, or its parts (inputs, blinds, elements) have different lengths.
    #[error("invalid batch: {0}")]
    Batch(&'static str),
}
