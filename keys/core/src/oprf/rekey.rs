//! Re-keying stored unblinded elements from one key to another, and the RFC output of a stored
//! element.
//!
//! A stored token is the element `k1·H(x)`. With `Δ = k2·k1⁻¹`, `Δ·(k1·H(x)) = k2·H(x)`: the
//! party holding the tokens moves them to the new key without seeing `x`, and `Δ` alone reveals
//! neither key. `Δ` is still secret: with it, tokens under `k1` and `k2` can be joined.

use core::fmt;

use curve25519_dalek::scalar::Scalar;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::OprfError;
use super::client::finalize_hash;
use super::group::{
    ELEMENT_LEN, Output, SCALAR_LEN, deserialize_element, deserialize_nonzero_scalar,
    serialize_element,
};
use super::key::SecretKey;

/// The re-keying factor `Δ = k_new·k_old⁻¹` (non-zero). Zeroized on drop; `Debug` is redacted.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct RekeyDelta(Scalar);

impl RekeyDelta {
    /// `Δ = new·old⁻¹`, which maps elements under `old` to elements under `new`.
    pub fn between(old: &SecretKey, new: &SecretKey) -> Self {
        let old_inv = Zeroizing::new(old.0.invert());
        Self(new.0 * *old_inv)
    }

    /// Decodes `Δ`: 32 little-endian bytes of a non-zero integer below ℓ.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, OprfError> {
        deserialize_nonzero_scalar(bytes).map(Self)
    }

    /// The 32-byte encoding of `Δ` (secret).
    pub fn to_bytes(&self) -> Zeroizing<[u8; SCALAR_LEN]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The factor that undoes this one (`Δ⁻¹`, from `new` back to `old`).
    pub fn inverse(&self) -> Self {
        Self(self.0.invert())
    }
}

impl fmt::Debug for RekeyDelta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RekeyDelta(<redacted>)")
    }
}

/// Re-keys a stored unblinded element: `Δ·element`, so `rekey(k1·H(x), Δ(k1 → k2)) = k2·H(x)`.
/// Fails if `element` is not a valid non-identity ristretto255 encoding.
pub fn rekey(
    element: &[u8; ELEMENT_LEN],
    delta: &RekeyDelta,
) -> Result<[u8; ELEMENT_LEN], OprfError> {
    let p = deserialize_element(element)?;
    Ok(serialize_element(&(p * delta.0)))
}

/// The RFC 9497 OPRF/VOPRF output of a stored unblinded element `k·H(input)`:
/// `SHA-512(I2OSP(len(input), 2) || input || I2OSP(32, 2) || element || "Finalize")`. Equals
/// what `Finalize` returns for that input and key (not for POPRF, whose hash also covers info).
pub fn finalize_from_element(
    input: &[u8],
    element: &[u8; ELEMENT_LEN],
) -> Result<Output, OprfError> {
    finalize_hash(input, None, element)
}
