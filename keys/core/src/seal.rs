//! Sealing secrets at rest: a ring of key-encryption keys (KEKs) and XChaCha20-Poly1305 with
//! associated data that says *where* a sealed value belongs (SPEC.md, store section).
//!
//! **KEK lines.** A KEK is written as one line `renketsu-kek-v1:<16 hex id>:<base64 32-byte key>`.
//! A [`KekRing`] holds one or more of them, from a file (one per line) or from the
//! `RENKETSU_KEK` environment variable (lines separated by commas or newlines). The **first**
//! KEK seals; **any** KEK whose id a sealed value names opens it. Rotation: prepend a new KEK
//! line, restart, optionally re-seal every stored value under the new KEK, then drop the old
//! line.
//!
//! **Associated data.** Every sealed value is bound to a domain tag and a list of context parts
//! (for the custodian store: table, column and row key parts; for the local store: kind and
//! project), and to the id of the KEK that sealed it:
//! ```text
//! AAD = domain || LP(part_1) || … || LP(part_n) || LP(kek_id)      LP(x) = u32be(len(x)) || x
//! ```
//! A sealed value copied to another row, column, table or store therefore fails to open, and
//! so does a value whose KEK id was edited.
//!
//! **What sealing does not protect against**: anyone holding a KEK and the sealed values holds
//! the secrets; deleting a sealed value, or putting back an *older* sealed value of the same
//! row and column (rollback), is not detected by the AEAD.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

/// Environment variable that supplies KEK line(s).
pub const KEK_ENV: &str = "RENKETSU_KEK";
/// Prefix of a KEK line.
pub const KEK_PREFIX: &str = "renketsu-kek-v1";
/// Name of the AEAD, as recorded next to sealed values where a format names it.
pub const AEAD_NAME: &str = "XChaCha20-Poly1305";
/// Length of a KEK id in bytes (written as 16 lower-case hex digits).
pub const KEK_ID_LEN: usize = 8;
/// Length of an XChaCha20-Poly1305 nonce in bytes.
pub const NONCE_LEN: usize = 24;
/// Length of the Poly1305 tag in bytes.
pub const TAG_LEN: usize = 16;
/// Version byte of the compact binary encoding ([`Sealed::to_bytes`]).
const SEALED_BLOB_V1: u8 = 1;

/// Errors of KEK parsing and of sealing. Messages name KEK ids (public), never key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// A KEK line is not `renketsu-kek-v1:<16 hex id>:<base64 32-byte key>`; the string says
    /// which part is wrong (`prefix`, `id`, `base64`, `length`, `empty`, `duplicate id`).
    #[error(
        "malformed key-encryption key ({0}): expected renketsu-kek-v1:<16 hex id>:<base64 32-byte key>"
    )]
    MalformedKek(&'static str),
    /// The sealed value names a KEK id that the ring does not hold.
    #[error("sealed with KEK {0}, which is not configured")]
    MissingKek(String),
    /// Authentication failed: wrong KEK, altered bytes, or the value was moved to another
    /// place (table, row, column, project…).
    #[error("sealed value failed authentication (altered, moved, or wrong KEK)")]
    Open,
    /// The compact encoding of a sealed value is malformed (length or version).
    #[error("sealed value is malformed")]
    Malformed,
}

/// One key-encryption key: 8-byte public id and 32 secret bytes (zeroized on drop; `Debug`
/// prints the id only).
pub struct Kek {
    id: [u8; KEK_ID_LEN],
    key: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kek {{ id: {}, key: <redacted> }}", self.id_hex())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Kek {
    /// A fresh KEK with a random id, from a cryptographically secure RNG.
    pub fn generate<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut id = [0u8; KEK_ID_LEN];
        rng.fill_bytes(&mut id);
        let mut key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(key.as_mut());
        Self { id, key }
    }

    /// Parses one KEK line (surrounding whitespace ignored).
    ///
    /// # Errors
    /// [`SealError::MalformedKek`] naming the bad part.
    pub fn parse(line: &str) -> Result<Self, SealError> {
        let mut parts = line.trim().splitn(3, ':');
        let (Some(KEK_PREFIX), Some(id_hex), Some(b64)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(SealError::MalformedKek("prefix"));
        };
        if id_hex.len() != 2 * KEK_ID_LEN || !id_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SealError::MalformedKek("id"));
        }
        let mut id = [0u8; KEK_ID_LEN];
        for (i, out) in id.iter_mut().enumerate() {
            *out = u8::from_str_radix(&id_hex[2 * i..2 * i + 2], 16)
                .map_err(|_| SealError::MalformedKek("id"))?;
        }
        let bytes = Zeroizing::new(
            B64.decode(b64)
                .map_err(|_| SealError::MalformedKek("base64"))?,
        );
        if bytes.len() != 32 {
            return Err(SealError::MalformedKek("length"));
        }
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&bytes);
        Ok(Self { id, key })
    }

    /// The KEK's public id as 16 lower-case hex digits (this string is what the AAD binds).
    pub fn id_hex(&self) -> String {
        hex(&self.id)
    }

    /// The KEK line `renketsu-kek-v1:<id>:<base64 key>`. Secret: write it only to a private
    /// file or a secret manager.
    pub fn line(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{KEK_PREFIX}:{}:{}",
            self.id_hex(),
            B64.encode(self.key.as_ref())
        ))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&Key::from(*self.key))
    }
}

/// Where a sealed value belongs: a domain tag plus context parts, all bound into the AAD.
#[derive(Debug, Clone, Copy)]
pub struct SealContext<'a> {
    /// Domain separation tag, e.g. `b"renketsu/custodian-store/v1"`.
    pub domain: &'a [u8],
    /// Context parts in order (e.g. table, column, row-key parts), each length-prefixed.
    pub parts: &'a [&'a [u8]],
}

impl SealContext<'_> {
    /// `domain || LP(part_1) || … || LP(part_n) || LP(kek_id_hex)`, `LP(x) = u32be(len x) || x`.
    pub fn aad(&self, kek_id_hex: &str) -> Vec<u8> {
        let mut out = self.domain.to_vec();
        for part in self.parts.iter().copied().chain([kek_id_hex.as_bytes()]) {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }
}

/// A sealed value: KEK id, nonce and ciphertext (with its 16-byte tag). Public data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Id of the KEK that sealed it.
    pub kek_id: [u8; KEK_ID_LEN],
    /// Random 24-byte XChaCha20 nonce.
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext followed by the Poly1305 tag.
    pub ciphertext: Vec<u8>,
}

impl Sealed {
    /// The KEK id as 16 lower-case hex digits.
    pub fn kek_id_hex(&self) -> String {
        hex(&self.kek_id)
    }

    /// Compact encoding for a database column:
    /// `0x01 || kek_id (8) || nonce (24) || ciphertext || tag (16)`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + KEK_ID_LEN + NONCE_LEN + self.ciphertext.len());
        out.push(SEALED_BLOB_V1);
        out.extend_from_slice(&self.kek_id);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Decodes [`Sealed::to_bytes`].
    ///
    /// # Errors
    /// [`SealError::Malformed`] on a wrong version byte or a value too short to hold a tag.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let head = 1 + KEK_ID_LEN + NONCE_LEN;
        if bytes.len() < head + TAG_LEN || bytes[0] != SEALED_BLOB_V1 {
            return Err(SealError::Malformed);
        }
        Ok(Self {
            kek_id: bytes[1..1 + KEK_ID_LEN].try_into().expect("length checked"),
            nonce: bytes[1 + KEK_ID_LEN..head]
                .try_into()
                .expect("length checked"),
            ciphertext: bytes[head..].to_vec(),
        })
    }
}

/// One or more KEKs: the first seals, any opens (by the id recorded in the sealed value).
pub struct KekRing {
    keks: Vec<Kek>,
}

impl fmt::Debug for KekRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.keks).finish()
    }
}

impl KekRing {
    /// A ring of the given KEKs, first = sealing KEK.
    ///
    /// # Errors
    /// [`SealError::MalformedKek`] (`empty`, `duplicate id`).
    pub fn new(keks: Vec<Kek>) -> Result<Self, SealError> {
        if keks.is_empty() {
            return Err(SealError::MalformedKek("empty"));
        }
        for (i, k) in keks.iter().enumerate() {
            if keks[..i].iter().any(|o| o.id == k.id) {
                return Err(SealError::MalformedKek("duplicate id"));
            }
        }
        Ok(Self { keks })
    }

    /// Parses KEK lines separated by newlines or commas; blank lines are ignored. This is the
    /// format of a KEK file and of `RENKETSU_KEK`.
    ///
    /// # Errors
    /// [`SealError::MalformedKek`].
    pub fn parse(text: &str) -> Result<Self, SealError> {
        let keks = text
            .split([',', '\n'])
            .filter(|l| !l.trim().is_empty())
            .map(Kek::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(keks)
    }

    /// Reads the ring from `RENKETSU_KEK`; `None` if the variable is unset.
    ///
    /// # Errors
    /// [`SealError::MalformedKek`].
    pub fn from_env() -> Option<Result<Self, SealError>> {
        let v = Zeroizing::new(std::env::var(KEK_ENV).ok()?);
        Some(Self::parse(&v))
    }

    /// A ring of one fresh KEK.
    pub fn generate<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self {
            keks: vec![Kek::generate(rng)],
        }
    }

    /// Adds `kek` in front: it seals from now on; the others still open.
    ///
    /// # Errors
    /// [`SealError::MalformedKek`] (`duplicate id`).
    pub fn prepend(&mut self, kek: Kek) -> Result<(), SealError> {
        if self.keks.iter().any(|k| k.id == kek.id) {
            return Err(SealError::MalformedKek("duplicate id"));
        }
        self.keks.insert(0, kek);
        Ok(())
    }

    /// The KEKs, sealing KEK first.
    pub fn keks(&self) -> &[Kek] {
        &self.keks
    }

    /// The sealing KEK's id as hex.
    pub fn primary_id_hex(&self) -> String {
        self.keks[0].id_hex()
    }

    /// All KEK lines joined with newlines (secret; for writing a KEK file).
    pub fn lines(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::new());
        for k in &self.keks {
            out.push_str(&k.line());
            out.push('\n');
        }
        out
    }

    /// Seals `plaintext` with the first KEK and a random nonce, binding `ctx` and the KEK id.
    pub fn seal<R: rand::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        ctx: &SealContext<'_>,
        plaintext: &[u8],
    ) -> Sealed {
        let kek = &self.keks[0];
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let aad = ctx.aad(&kek.id_hex());
        let ciphertext = kek
            .cipher()
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 encryption of a short message cannot fail");
        Sealed {
            kek_id: kek.id,
            nonce,
            ciphertext,
        }
    }

    /// Opens `sealed` with the KEK it names, checking that it belongs to `ctx`.
    ///
    /// # Errors
    /// [`SealError::MissingKek`] if the ring lacks that KEK; [`SealError::Open`] if
    /// authentication fails.
    pub fn open(
        &self,
        ctx: &SealContext<'_>,
        sealed: &Sealed,
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let kek = self
            .keks
            .iter()
            .find(|k| k.id == sealed.kek_id)
            .ok_or_else(|| SealError::MissingKek(sealed.kek_id_hex()))?;
        let aad = ctx.aad(&kek.id_hex());
        kek.cipher()
            .decrypt(
                &XNonce::from(sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::Open)
    }

    /// Opens a value that must be exactly `N` bytes (keys and seeds).
    ///
    /// # Errors
    /// As [`KekRing::open`]; [`SealError::Malformed`] on a wrong plaintext length.
    pub fn open_array<const N: usize>(
        &self,
        ctx: &SealContext<'_>,
        sealed: &Sealed,
    ) -> Result<Zeroizing<[u8; N]>, SealError> {
        let plain = self.open(ctx, sealed)?;
        if plain.len() != N {
            return Err(SealError::Malformed);
        }
        let mut out = Zeroizing::new([0u8; N]);
        out.copy_from_slice(&plain);
        Ok(out)
    }

    /// Whether `sealed` was sealed by the current sealing KEK (else re-sealing would move it).
    pub fn is_primary(&self, sealed: &Sealed) -> bool {
        sealed.kek_id == self.keks[0].id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: u64) -> rand::rngs::StdRng {
        rand::SeedableRng::seed_from_u64(seed)
    }

    const CTX: SealContext<'static> = SealContext {
        domain: b"test/v1",
        parts: &[b"table", b"column", b"row-1"],
    };

    #[test]
    fn seal_open_round_trip_and_blob_encoding() {
        let ring = KekRing::generate(&mut rng(1));
        let sealed = ring.seal(&mut rng(2), &CTX, b"secret seed");
        assert_ne!(&sealed.ciphertext[..11], b"secret seed");
        let blob = sealed.to_bytes();
        let back = Sealed::from_bytes(&blob).unwrap();
        assert_eq!(back, sealed);
        assert_eq!(ring.open(&CTX, &back).unwrap().as_slice(), b"secret seed");
        assert!(Sealed::from_bytes(&blob[..blob.len() - 20]).is_err());
        let mut v2 = blob.clone();
        v2[0] = 2;
        assert_eq!(Sealed::from_bytes(&v2), Err(SealError::Malformed));
    }

    #[test]
    fn aad_binds_every_context_part_and_kek_id() {
        let ring = KekRing::generate(&mut rng(1));
        let sealed = ring.seal(&mut rng(2), &CTX, b"x");
        let others: [SealContext<'_>; 4] = [
            SealContext {
                domain: b"test/v2",
                ..CTX
            },
            SealContext {
                parts: &[b"table", b"column", b"row-2"],
                ..CTX
            },
            SealContext {
                parts: &[b"table", b"other", b"row-1"],
                ..CTX
            },
            // Same concatenation, different split: length prefixes keep them apart.
            SealContext {
                parts: &[b"tablecolumn", b"", b"row-1"],
                ..CTX
            },
        ];
        for other in &others {
            assert_eq!(ring.open(other, &sealed), Err(SealError::Open));
        }
        let mut flipped = sealed.clone();
        flipped.ciphertext[0] ^= 1;
        assert_eq!(ring.open(&CTX, &flipped), Err(SealError::Open));
        let mut nonce = sealed.clone();
        nonce.nonce[3] ^= 1;
        assert_eq!(ring.open(&CTX, &nonce), Err(SealError::Open));
    }

    #[test]
    fn rotation_first_seals_any_opens() {
        let old = KekRing::generate(&mut rng(1));
        let sealed_old = old.seal(&mut rng(3), &CTX, b"old");
        let mut ring = KekRing::parse(&old.lines()).unwrap();
        ring.prepend(Kek::generate(&mut rng(2))).unwrap();
        assert_eq!(ring.keks().len(), 2);
        assert_eq!(ring.open(&CTX, &sealed_old).unwrap().as_slice(), b"old");
        assert!(!ring.is_primary(&sealed_old));
        let sealed_new = ring.seal(&mut rng(4), &CTX, b"new");
        assert!(ring.is_primary(&sealed_new));
        assert_eq!(sealed_new.kek_id_hex(), ring.primary_id_hex());
        // Only the old KEK: cannot open the new value, and says which KEK is missing.
        assert_eq!(
            old.open(&CTX, &sealed_new),
            Err(SealError::MissingKek(ring.primary_id_hex()))
        );
        // Comma-separated (RENKETSU_KEK) equals newline-separated.
        let comma = ring.lines().trim_end().replace('\n', ",");
        let again = KekRing::parse(&comma).unwrap();
        assert_eq!(again.open(&CTX, &sealed_new).unwrap().as_slice(), b"new");
        // Same id, other key bytes: authentication fails rather than garbage.
        let forged = format!(
            "{KEK_PREFIX}:{}:{}",
            ring.primary_id_hex(),
            B64.encode([7u8; 32])
        );
        let wrong = KekRing::parse(&forged).unwrap();
        assert_eq!(wrong.open(&CTX, &sealed_new), Err(SealError::Open));
    }

    #[test]
    fn malformed_kek_lines_say_what_is_wrong() {
        let good = Kek::generate(&mut rng(1));
        let line = good.line();
        let id = good.id_hex();
        assert_eq!(Kek::parse(&line).unwrap().id_hex(), id);
        let cases = [
            ("garbage".to_string(), "prefix"),
            (format!("renketsu-kek-v2:{id}:AAAA"), "prefix"),
            (
                format!("{KEK_PREFIX}:zz{}:{}", &id[2..], B64.encode([0u8; 32])),
                "id",
            ),
            (format!("{KEK_PREFIX}:{id}:***"), "base64"),
            (
                format!("{KEK_PREFIX}:{id}:{}", B64.encode([0u8; 31])),
                "length",
            ),
        ];
        for (text, part) in cases {
            assert_eq!(
                Kek::parse(&text).unwrap_err(),
                SealError::MalformedKek(part),
                "{text}"
            );
        }
        assert_eq!(
            KekRing::parse(" , \n").unwrap_err(),
            SealError::MalformedKek("empty")
        );
        let dup = format!("{},{}", line.as_str(), line.as_str());
        assert_eq!(
            KekRing::parse(&dup).unwrap_err(),
            SealError::MalformedKek("duplicate id")
        );
    }

    #[test]
    fn open_array_checks_length_and_debug_is_redacted() {
        let ring = KekRing::generate(&mut rng(1));
        let sealed = ring.seal(&mut rng(2), &CTX, &[5u8; 32]);
        assert_eq!(*ring.open_array::<32>(&CTX, &sealed).unwrap(), [5u8; 32]);
        assert_eq!(
            ring.open_array::<16>(&CTX, &sealed),
            Err(SealError::Malformed)
        );
        let shown = format!("{ring:?}");
        let key_b64 = B64.encode(ring.keks()[0].key.as_ref());
        assert!(
            shown.contains("redacted") && !shown.contains(&key_b64),
            "{shown}"
        );
    }
}
