//! Content sealed to the researcher (SPEC.md §10.4): holders encrypt their content columns so
//! that the linkage unit stores and joins ciphertext it cannot read, and only the project's
//! researcher opens them.
//!
//! Per holder upload, one HPKE base-mode context (RFC 9180 §5.1.1; DHKEM(X25519,
//! HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305, via the `hpke` crate) to the researcher's
//! X25519 public key gives the encapsulated key `enc` (sent once, in the upload's header) and,
//! by the HPKE exporter (RFC 9180 §5.3), a 32-byte content key. Each record is then sealed
//! alone with XChaCha20-Poly1305 under that key:
//!
//! ```text
//! info    = "renketsu/content/v1" || LP(project) || LP(party)     (HPKE info)
//! key     = Export("renketsu/content/v1 key", 32)
//! sealed  = nonce (24 random bytes) || XChaCha20-Poly1305(key, nonce, plaintext, aad = info)
//! plaintext = JSON array of the record's content values, in column order
//! ```
//!
//! `LP(x)` is the 2-byte big-endian length of `x` then `x`. Binding project and party in both
//! `info` and the AAD means content moved to another project or holder does not open. The
//! record id is not bound: the researcher never learns record ids, and which cluster a record
//! belongs to is the linkage unit's statement anyway.

use core::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable as _, Kem as _, OpModeR, OpModeS, Serializable as _};
use zeroize::Zeroizing;

type KemT = X25519HkdfSha256;
type PrivateKey = <KemT as hpke::Kem>::PrivateKey;
type PublicKey = <KemT as hpke::Kem>::PublicKey;
type EncappedKey = <KemT as hpke::Kem>::EncappedKey;

/// Domain of `info` and the AAD.
pub const CONTENT_DOMAIN: &[u8] = b"renketsu/content/v1";
/// Exporter context of the content key.
const EXPORT_CONTEXT: &[u8] = b"renketsu/content/v1 key";
/// Length of an X25519 key and of `enc` (bytes).
pub const X25519_LEN: usize = 32;
/// Length of the per-record nonce (bytes).
pub const NONCE_LEN: usize = 24;
/// Bytes a sealed record adds to its plaintext: nonce and Poly1305 tag.
pub const OVERHEAD: usize = NONCE_LEN + 16;

/// Errors of sealing and opening content. Messages never contain key bytes or content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContentError {
    /// The researcher public key is not a 32-byte X25519 key.
    #[error("researcher public key must be a 32-byte X25519 public key (got {0} bytes)")]
    PublicKey(usize),
    /// A secret key of the wrong length.
    #[error("researcher secret key must be 32 bytes")]
    SecretKey,
    /// A project or party name longer than 65535 bytes.
    #[error("{0} name is longer than 65535 bytes")]
    NameTooLong(&'static str),
    /// HPKE set-up failed (e.g. a low-order public key, a malformed `enc`).
    #[error("HPKE set-up with the researcher key failed")]
    Hpke,
    /// A sealed record shorter than nonce and tag.
    #[error("sealed record is malformed: {0}")]
    Malformed(&'static str),
    /// Authentication failed: another researcher key, project or holder, or changed bytes.
    #[error("sealed content does not open with this researcher key for this project and holder")]
    Open,
}

/// The researcher's X25519 key pair for content. The private half is zeroized on drop and
/// never shown by `Debug`.
#[derive(Clone)]
pub struct ResearcherKeyPair {
    sk: PrivateKey,
    pk: PublicKey,
}

impl fmt::Debug for ResearcherKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ResearcherKeyPair(public {}, <redacted>)",
            hex_of(&self.public_key())
        )
    }
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl ResearcherKeyPair {
    /// A fresh key pair from operating-system randomness.
    pub fn generate() -> Self {
        let (sk, pk) = KemT::gen_keypair();
        Self { sk, pk }
    }

    /// `DeriveKeyPair(ikm)` (RFC 9180 §7.1.3): deterministic, for tests.
    pub fn derive(ikm: &[u8]) -> Self {
        let (sk, pk) = KemT::derive_keypair(ikm);
        Self { sk, pk }
    }

    /// The 32-byte public key holders seal to.
    pub fn public_key(&self) -> [u8; X25519_LEN] {
        let mut out = [0u8; X25519_LEN];
        out.copy_from_slice(&self.pk.to_bytes());
        out
    }

    /// The 32 secret bytes, to be sealed at rest by the caller.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; X25519_LEN]> {
        let mut out = Zeroizing::new([0u8; X25519_LEN]);
        out.copy_from_slice(&self.sk.to_bytes());
        out
    }

    /// The key pair of 32 secret bytes from [`Self::secret_bytes`].
    ///
    /// # Errors
    /// [`ContentError::SecretKey`] for a wrong length.
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, ContentError> {
        let sk = PrivateKey::from_bytes(bytes).map_err(|_| ContentError::SecretKey)?;
        let pk = KemT::sk_to_pk(&sk);
        Ok(Self { sk, pk })
    }
}

fn info(project: &str, party: &str) -> Result<Vec<u8>, ContentError> {
    let lp = |what: &'static str, s: &str| {
        u16::try_from(s.len())
            .map(u16::to_be_bytes)
            .map_err(|_| ContentError::NameTooLong(what))
    };
    let mut out = Vec::with_capacity(CONTENT_DOMAIN.len() + 4 + project.len() + party.len());
    out.extend_from_slice(CONTENT_DOMAIN);
    out.extend_from_slice(&lp("project", project)?);
    out.extend_from_slice(project.as_bytes());
    out.extend_from_slice(&lp("party", party)?);
    out.extend_from_slice(party.as_bytes());
    Ok(out)
}

/// A holder's sealing context for one upload.
pub struct ContentSealer {
    cipher: XChaCha20Poly1305,
    aad: Vec<u8>,
    enc: [u8; X25519_LEN],
}

impl fmt::Debug for ContentSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ContentSealer(<redacted>)")
    }
}

fn content_cipher(
    export: impl FnOnce(&mut [u8]) -> bool,
) -> Result<XChaCha20Poly1305, ContentError> {
    let mut key = Zeroizing::new([0u8; 32]);
    if !export(key.as_mut()) {
        return Err(ContentError::Hpke);
    }
    Ok(XChaCha20Poly1305::new(&Key::from(*key)))
}

impl ContentSealer {
    /// Sets up HPKE to `researcher_public_key` (32 bytes) for `party`'s content in `project`.
    ///
    /// # Errors
    /// [`ContentError::PublicKey`] for a key that is not 32 bytes, [`ContentError::Hpke`] if
    /// encapsulation fails.
    pub fn new(
        researcher_public_key: &[u8],
        project: &str,
        party: &str,
    ) -> Result<Self, ContentError> {
        if researcher_public_key.len() != X25519_LEN {
            return Err(ContentError::PublicKey(researcher_public_key.len()));
        }
        let pk = PublicKey::from_bytes(researcher_public_key)
            .map_err(|_| ContentError::PublicKey(researcher_public_key.len()))?;
        let info = info(project, party)?;
        let (enc, ctx) =
            hpke::setup_sender::<ChaCha20Poly1305, HkdfSha256, KemT>(&OpModeS::Base, &pk, &info)
                .map_err(|_| ContentError::Hpke)?;
        let cipher = content_cipher(|k| ctx.export(EXPORT_CONTEXT, k).is_ok())?;
        let mut e = [0u8; X25519_LEN];
        e.copy_from_slice(&enc.to_bytes());
        Ok(Self {
            cipher,
            aad: info,
            enc: e,
        })
    }

    /// HPKE `enc` (32 bytes), for the upload's header.
    pub fn encapsulated_key(&self) -> [u8; X25519_LEN] {
        self.enc
    }

    /// Seals one record's content values: `nonce || ciphertext` ([`OVERHEAD`] bytes more than
    /// the JSON array of `values`).
    pub fn seal(&self, values: &[String]) -> Vec<u8> {
        let plain = Zeroizing::new(serde_json::to_vec(values).expect("strings serialize"));
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce);
        let ct = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &plain,
                    aad: &self.aad,
                },
            )
            .expect("XChaCha20-Poly1305 encryption cannot fail below 256 GiB");
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }
}

/// The researcher's opening context for one holder's upload.
pub struct ContentOpener {
    cipher: XChaCha20Poly1305,
    aad: Vec<u8>,
}

impl fmt::Debug for ContentOpener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ContentOpener(<redacted>)")
    }
}

impl ContentOpener {
    /// Opens the HPKE context of an upload whose header carries `encapsulated_key`.
    ///
    /// # Errors
    /// [`ContentError::Hpke`] for a malformed `enc`.
    pub fn new(
        researcher: &ResearcherKeyPair,
        encapsulated_key: &[u8],
        project: &str,
        party: &str,
    ) -> Result<Self, ContentError> {
        let enc = EncappedKey::from_bytes(encapsulated_key).map_err(|_| ContentError::Hpke)?;
        let info = info(project, party)?;
        let ctx = hpke::setup_receiver::<ChaCha20Poly1305, HkdfSha256, KemT>(
            &OpModeR::Base,
            &researcher.sk,
            &enc,
            &info,
        )
        .map_err(|_| ContentError::Hpke)?;
        let cipher = content_cipher(|k| ctx.export(EXPORT_CONTEXT, k).is_ok())?;
        Ok(Self { cipher, aad: info })
    }

    /// Opens one sealed record into its content values.
    ///
    /// # Errors
    /// [`ContentError::Malformed`] for a record too short or not a JSON array of strings after
    /// opening; [`ContentError::Open`] when authentication fails.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<String>, ContentError> {
        if sealed.len() < OVERHEAD {
            return Err(ContentError::Malformed("shorter than nonce and tag"));
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at NONCE_LEN");
        let plain = Zeroizing::new(
            self.cipher
                .decrypt(
                    &XNonce::from(nonce),
                    Payload {
                        msg: ct,
                        aad: &self.aad,
                    },
                )
                .map_err(|_| ContentError::Open)?,
        );
        serde_json::from_slice(&plain).map_err(|_| ContentError::Malformed("not a JSON array"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Vec<String> {
        vec!["東京都".to_owned(), String::new(), "a,\"b\"".to_owned()]
    }

    #[test]
    fn sealed_content_opens_only_for_its_researcher_project_and_party() {
        let r = ResearcherKeyPair::derive(&[1u8; 32]);
        let s = ContentSealer::new(&r.public_key(), "p", "holder-a").unwrap();
        let sealed = s.seal(&values());
        assert_eq!(
            sealed.len(),
            serde_json::to_vec(&values()).unwrap().len() + OVERHEAD
        );
        // The plaintext does not appear in the sealed bytes.
        assert!(!sealed.windows(9).any(|w| w == "東京都".as_bytes()));
        let o = ContentOpener::new(&r, &s.encapsulated_key(), "p", "holder-a").unwrap();
        assert_eq!(o.open(&sealed).unwrap(), values());
        // Fresh nonces: sealing twice gives different bytes.
        assert_ne!(s.seal(&values()), sealed);

        let other = ResearcherKeyPair::derive(&[2u8; 32]);
        let wrong_key = ContentOpener::new(&other, &s.encapsulated_key(), "p", "holder-a").unwrap();
        assert_eq!(wrong_key.open(&sealed), Err(ContentError::Open));
        for (project, party) in [("q", "holder-a"), ("p", "holder-b")] {
            let o = ContentOpener::new(&r, &s.encapsulated_key(), project, party).unwrap();
            assert_eq!(
                o.open(&sealed),
                Err(ContentError::Open),
                "{project} {party}"
            );
        }
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(o.open(&flipped), Err(ContentError::Open));
        assert!(matches!(
            o.open(&sealed[..10]),
            Err(ContentError::Malformed(_))
        ));
    }

    #[test]
    fn secret_bytes_round_trip_and_debug_redacts() {
        let r = ResearcherKeyPair::generate();
        let back = ResearcherKeyPair::from_secret_bytes(r.secret_bytes().as_ref()).unwrap();
        assert_eq!(back.public_key(), r.public_key());
        let shown = format!("{r:?}");
        assert!(shown.contains("redacted"));
        assert!(!shown.contains(&hex_of(r.secret_bytes().as_ref())));
        assert!(ContentSealer::new(&[0u8; 31], "p", "a").is_err());
    }
}
