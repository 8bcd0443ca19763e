//! Wrapping CLK keys to a data holder (SPEC.md §8.6): HPKE base mode (RFC 9180 §5.1.1)
//! with DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and ChaCha20Poly1305 (suite ids 0x0020,
//! 0x0001, 0x0003), via the `hpke` crate (whose own tests run the RFC 9180 test vectors).
//!
//! The custodian calls [`wrap`] with the holder's X25519 public key (sent in
//! `GetWrappedClkKeyRequest.holder_public_key`); the holder calls [`unwrap`] with its
//! [`HolderKeyPair`]. One message per key (single-shot), with
//!
//! ```text
//! info = "renketsu/clk-key-wrap/v1"
//! aad  = "renketsu/clk-key-wrap/v1" || I2OSP(len(project), 2) || project
//!                                   || I2OSP(len(field), 2)   || field
//! ```
//!
//! so a wrapped key moved to another project or field fails to open. The ciphertext is the
//! 32-byte key followed by the 16-byte Poly1305 tag (48 bytes); `enc` is 32 bytes.
//!
//! Randomness: the ephemeral key and holder keys come from the operating system
//! (`getrandom`), as the `hpke` crate draws them.

use core::fmt;

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable as _, Kem as _, OpModeR, OpModeS, Serializable as _};
use zeroize::Zeroizing;

type KemT = X25519HkdfSha256;
type PrivateKey = <KemT as hpke::Kem>::PrivateKey;
type PublicKey = <KemT as hpke::Kem>::PublicKey;
type EncappedKey = <KemT as hpke::Kem>::EncappedKey;

/// HPKE `info` and the domain prefix of the AAD.
pub const WRAP_DOMAIN: &[u8] = b"renketsu/clk-key-wrap/v1";
/// Length of a CLK key (bytes).
pub const CLK_KEY_LEN: usize = 32;
/// Length of an X25519 public key and of `enc` (bytes).
pub const X25519_LEN: usize = 32;
/// Length of a wrapped CLK key: the key plus the 16-byte tag.
pub const WRAPPED_LEN: usize = CLK_KEY_LEN + 16;

/// Errors of wrapping and unwrapping. Messages never contain key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WrapError {
    /// The recipient public key is not 32 bytes or is a low-order point.
    #[error("holder public key must be a 32-byte X25519 public key (got {0} bytes)")]
    PublicKey(usize),
    /// A project or field name longer than 65535 bytes.
    #[error("{0} name is longer than 65535 bytes")]
    NameTooLong(&'static str),
    /// Encapsulation failed (e.g. a low-order recipient key).
    #[error("HPKE encapsulation to the holder key failed")]
    Encap,
    /// `enc` is not 32 bytes or the ciphertext not 48 bytes.
    #[error("wrapped key is malformed: {0}")]
    Malformed(&'static str),
    /// Decryption failed: wrong holder key, wrong project or field, or a changed ciphertext.
    #[error("wrapped key does not open with this holder key for this project and field")]
    Open,
}

/// A CLK key wrapped to one holder (what `GetWrappedClkKeyResponse` carries).
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// HPKE `enc`: the sender's ephemeral X25519 public key (32 bytes).
    pub encapsulated_key: [u8; X25519_LEN],
    /// AEAD ciphertext and tag (48 bytes).
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WrappedKey({} bytes)", self.ciphertext.len())
    }
}

/// A holder's X25519 key pair for receiving CLK keys. The private half is zeroized on drop
/// (by `x25519-dalek`) and never shown by `Debug`.
#[derive(Clone)]
pub struct HolderKeyPair {
    sk: PrivateKey,
    pk: PublicKey,
}

impl fmt::Debug for HolderKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HolderKeyPair(<redacted>)")
    }
}

impl HolderKeyPair {
    /// A fresh random key pair (operating-system randomness).
    pub fn generate() -> Self {
        let (sk, pk) = KemT::gen_keypair();
        Self { sk, pk }
    }

    /// The key pair `DeriveKeyPair(ikm)` (RFC 9180 §7.1.3); `ikm` should hold 32 bytes of
    /// entropy. Deterministic: for tests and for holders that derive it from a stored secret.
    pub fn derive(ikm: &[u8]) -> Self {
        let (sk, pk) = KemT::derive_keypair(ikm);
        Self { sk, pk }
    }

    /// The 32-byte X25519 public key to send to the custodian.
    pub fn public_key(&self) -> [u8; X25519_LEN] {
        let mut out = [0u8; X25519_LEN];
        out.copy_from_slice(&self.pk.to_bytes());
        out
    }
}

fn lp(what: &'static str, s: &str) -> Result<[u8; 2], WrapError> {
    u16::try_from(s.len())
        .map(u16::to_be_bytes)
        .map_err(|_| WrapError::NameTooLong(what))
}

/// The AAD binding a wrapped key to (project, field).
fn aad(project: &str, field: &str) -> Result<Vec<u8>, WrapError> {
    let mut out = Vec::with_capacity(WRAP_DOMAIN.len() + 4 + project.len() + field.len());
    out.extend_from_slice(WRAP_DOMAIN);
    out.extend_from_slice(&lp("project", project)?);
    out.extend_from_slice(project.as_bytes());
    out.extend_from_slice(&lp("field", field)?);
    out.extend_from_slice(field.as_bytes());
    Ok(out)
}

/// Wraps `key` (one field's CLK key) to the holder whose X25519 public key is
/// `holder_public_key` (32 bytes), bound to `project` and `field`.
pub fn wrap(
    holder_public_key: &[u8],
    project: &str,
    field: &str,
    key: &[u8; CLK_KEY_LEN],
) -> Result<WrappedKey, WrapError> {
    if holder_public_key.len() != X25519_LEN {
        return Err(WrapError::PublicKey(holder_public_key.len()));
    }
    let pk = PublicKey::from_bytes(holder_public_key)
        .map_err(|_| WrapError::PublicKey(holder_public_key.len()))?;
    let aad = aad(project, field)?;
    let (enc, ciphertext) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, KemT>(
        &OpModeS::Base,
        &pk,
        WRAP_DOMAIN,
        key,
        &aad,
    )
    .map_err(|_| WrapError::Encap)?;
    let mut encapsulated_key = [0u8; X25519_LEN];
    encapsulated_key.copy_from_slice(&enc.to_bytes());
    Ok(WrappedKey {
        encapsulated_key,
        ciphertext,
    })
}

/// Opens a key wrapped by [`wrap`] for `project` and `field`. Errors: [`WrapError::Malformed`]
/// for wrong lengths, [`WrapError::Open`] for any authentication failure.
pub fn unwrap(
    holder: &HolderKeyPair,
    project: &str,
    field: &str,
    encapsulated_key: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<[u8; CLK_KEY_LEN]>, WrapError> {
    if ciphertext.len() != WRAPPED_LEN {
        return Err(WrapError::Malformed("ciphertext must be 48 bytes"));
    }
    let enc = EncappedKey::from_bytes(encapsulated_key)
        .map_err(|_| WrapError::Malformed("encapsulated key must be 32 bytes"))?;
    let aad = aad(project, field)?;
    let plain = Zeroizing::new(
        hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, KemT>(
            &OpModeR::Base,
            &holder.sk,
            &enc,
            WRAP_DOMAIN,
            ciphertext,
            &aad,
        )
        .map_err(|_| WrapError::Open)?,
    );
    let mut key = Zeroizing::new([0u8; CLK_KEY_LEN]);
    key.copy_from_slice(&plain);
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7u8; 32];

    #[test]
    fn wrap_then_unwrap_returns_the_key() {
        let holder = HolderKeyPair::generate();
        let w = wrap(&holder.public_key(), "p1", "kana_name", &KEY).unwrap();
        assert_eq!(w.ciphertext.len(), WRAPPED_LEN);
        assert_ne!(
            &w.ciphertext[..32],
            &KEY[..],
            "key must not travel in clear"
        );
        let k = unwrap(
            &holder,
            "p1",
            "kana_name",
            &w.encapsulated_key,
            &w.ciphertext,
        )
        .unwrap();
        assert_eq!(*k, KEY);
    }

    #[test]
    fn wrapping_is_randomized() {
        let holder = HolderKeyPair::derive(&[1u8; 32]);
        let a = wrap(&holder.public_key(), "p1", "f", &KEY).unwrap();
        let b = wrap(&holder.public_key(), "p1", "f", &KEY).unwrap();
        assert_ne!(a.encapsulated_key, b.encapsulated_key);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn other_holder_project_field_or_tampering_fail() {
        let holder = HolderKeyPair::derive(&[1u8; 32]);
        let other = HolderKeyPair::derive(&[2u8; 32]);
        let w = wrap(&holder.public_key(), "p1", "f", &KEY).unwrap();
        let open = |h: &HolderKeyPair, p: &str, f: &str, enc: &[u8], ct: &[u8]| {
            unwrap(h, p, f, enc, ct).map(|k| *k)
        };
        assert_eq!(
            open(&other, "p1", "f", &w.encapsulated_key, &w.ciphertext),
            Err(WrapError::Open)
        );
        assert_eq!(
            open(&holder, "p2", "f", &w.encapsulated_key, &w.ciphertext),
            Err(WrapError::Open)
        );
        assert_eq!(
            open(&holder, "p1", "g", &w.encapsulated_key, &w.ciphertext),
            Err(WrapError::Open)
        );
        // The length prefixes keep ("p1","f") and ("p1f","") apart.
        assert_eq!(
            open(&holder, "p1f", "", &w.encapsulated_key, &w.ciphertext),
            Err(WrapError::Open)
        );
        let mut ct = w.ciphertext.clone();
        ct[0] ^= 1;
        assert_eq!(
            open(&holder, "p1", "f", &w.encapsulated_key, &ct),
            Err(WrapError::Open)
        );
        assert_eq!(
            open(&holder, "p1", "f", &w.encapsulated_key, &ct[..47]),
            Err(WrapError::Malformed("ciphertext must be 48 bytes"))
        );
    }

    #[test]
    fn bad_public_keys_are_refused() {
        assert_eq!(
            wrap(&[9u8; 31], "p", "f", &KEY),
            Err(WrapError::PublicKey(31))
        );
        // The all-zero point has small order: the shared secret would be zero.
        assert!(wrap(&[0u8; 32], "p", "f", &KEY).is_err());
    }
}
