//! The project master secret (embedded HMAC mode).

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of a project master secret in bytes (256 bits).
pub const PROJECT_SECRET_LEN: usize = 32;

/// The 32-byte master secret of one linkage project, from which every recipe key is derived
/// (SPEC.md §4.2, HKDF-SHA256 per RFC 5869).
///
/// The bytes are zeroized on drop and never appear in `Debug` output. Only the key store
/// (`renketsu-keys`) creates one from storage; the core only reads it to derive recipe keys.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ProjectSecret([u8; PROJECT_SECRET_LEN]);

impl ProjectSecret {
    /// Wraps 32 secret bytes. The caller should zeroize its own copy.
    pub fn from_bytes(bytes: [u8; PROJECT_SECRET_LEN]) -> Self {
        Self(bytes)
    }

    /// Draws a fresh secret from a cryptographically secure RNG (injected for testability).
    pub fn generate<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; PROJECT_SECRET_LEN];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// The secret bytes. Call sites are few and audited: key derivation and sealing.
    pub fn expose(&self) -> &[u8; PROJECT_SECRET_LEN] {
        &self.0
    }
}

impl fmt::Debug for ProjectSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProjectSecret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = ProjectSecret::from_bytes([0xAB; 32]);
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("171") && !shown.to_lowercase().contains("ab"),
            "{shown}"
        );
        assert!(shown.contains("redacted"));
    }
}
