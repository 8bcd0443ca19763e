//! Keys (RFC 9497 §3.2) and the client's blinding scalar.

use core::fmt;

use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::OprfError;
use super::group::{
    ELEMENT_LEN, Mode, SCALAR_LEN, deserialize_element, deserialize_nonzero_scalar, fmt_hex,
    hash_to_scalar_dst, len_prefix, random_scalar, serialize_element,
};

/// The server's private key `skS`: a non-zero scalar. Zeroized on drop; `Debug` is redacted.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey(pub(crate) Scalar);

impl SecretKey {
    /// `DeriveKeyPair(seed, info)` (RFC 9497 §3.2.1): the first non-zero
    /// `HashToScalar(seed || I2OSP(len(info), 2) || info || I2OSP(counter, 1))` with DST
    /// `"DeriveKeyPair" || contextString`, for counter = 0, 1, …, 255. The key depends on the
    /// mode. `seed` MUST be 32 bytes of high entropy; `info` (at most 65535 bytes) separates keys
    /// derived from one seed.
    pub fn derive(mode: Mode, seed: &[u8; SCALAR_LEN], info: &[u8]) -> Result<Self, OprfError> {
        let info_len = len_prefix("key info", info)?;
        let context = mode.context_string();
        for counter in 0..=u8::MAX {
            let sk = hash_to_scalar_dst(
                &[seed, &info_len, info, &[counter]],
                &[b"DeriveKeyPair", &context],
            );
            if sk != Scalar::ZERO {
                return Ok(Self(sk));
            }
        }
        Err(OprfError::DeriveKeyPair)
    }

    /// A uniformly random non-zero key (`GenerateKeyPair`, RFC 9497 §3.2).
    pub fn random<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self(random_scalar(rng))
    }

    /// Decodes a key: 32 little-endian bytes of a non-zero integer below ℓ.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, OprfError> {
        deserialize_nonzero_scalar(bytes).map(Self)
    }

    /// The key's 32-byte encoding. This is the secret itself: seal it, never log it.
    pub fn to_bytes(&self) -> Zeroizing<[u8; SCALAR_LEN]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// `pkS = skS·G`.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(RistrettoPoint::mul_base(&self.0))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// The server's public key `pkS = skS·G` (VOPRF and POPRF modes). Never the identity.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(pub(crate) RistrettoPoint);

impl PublicKey {
    /// Decodes 32 bytes (RFC 9496 encoding); refuses invalid encodings and the identity.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, OprfError> {
        deserialize_element(bytes).map(Self)
    }

    /// The 32-byte RFC 9496 encoding.
    pub fn to_bytes(&self) -> [u8; ELEMENT_LEN] {
        serialize_element(&self.0)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PublicKey(")?;
        fmt_hex(f, &self.to_bytes())?;
        f.write_str(")")
    }
}

/// The client's blinding scalar `r` for one input: a non-zero scalar, fresh for every
/// evaluation. Whoever holds it and the blinded element can recover `H(input)`, so it is secret.
/// Zeroized on drop; `Debug` is redacted.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Blind(pub(crate) Scalar);

impl Blind {
    /// A uniformly random non-zero blind (`RandomScalar`).
    pub fn random<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self(random_scalar(rng))
    }

    /// Decodes a blind: 32 little-endian bytes of a non-zero integer below ℓ. For test vectors
    /// and for clients that keep the blind across processes; a blind MUST NOT be reused.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, OprfError> {
        deserialize_nonzero_scalar(bytes).map(Self)
    }

    /// The blind's 32-byte encoding (secret).
    pub fn to_bytes(&self) -> Zeroizing<[u8; SCALAR_LEN]> {
        Zeroizing::new(self.0.to_bytes())
    }
}

impl fmt::Debug for Blind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Blind(<redacted>)")
    }
}
