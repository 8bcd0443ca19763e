//! The prime-order group ristretto255 with SHA-512 (RFC 9497 §4.1): modes and context strings,
//! `expand_message_xmd` (RFC 9380 §5.3.1), `HashToGroup`, `HashToScalar`, element and scalar
//! (de)serialization (RFC 9496 §4.3), and the element types exchanged on the wire.

use core::fmt;

use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use sha2::{Digest, Sha512};
use zeroize::Zeroizing;

use super::OprfError;

/// The suite identifier of RFC 9497 §4.1.
pub const SUITE_ID: &str = "ristretto255-SHA512";
/// Length of a serialized group element (`Ne`).
pub const ELEMENT_LEN: usize = 32;
/// Length of a serialized scalar (`Ns`).
pub const SCALAR_LEN: usize = 32;
/// Length of the protocol output, a SHA-512 digest (`Nh`).
pub const OUTPUT_LEN: usize = 64;
/// Length of a serialized DLEQ proof (two scalars).
pub const PROOF_LEN: usize = 2 * SCALAR_LEN;
/// The longest input, key info or POPRF info: lengths are encoded in two bytes.
pub const MAX_INPUT_LEN: usize = u16::MAX as usize;

/// The protocol output: SHA-512 over the input and the unblinded element (RFC 9497 `Finalize`).
pub type Output = [u8; OUTPUT_LEN];

/// Length of the context string `"OPRFV1-" || I2OSP(mode, 1) || "-" || SUITE_ID`.
const CONTEXT_LEN: usize = 7 + 1 + 1 + SUITE_ID.len();

/// The protocol variant (RFC 9497 §3.1). It is part of every domain separation tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Base mode, 0x00: no proof.
    Oprf,
    /// Verifiable mode, 0x01: the server proves it used the key behind its public key.
    Voprf,
    /// Partially oblivious mode, 0x02: verifiable, with public info bound into the evaluation.
    Poprf,
}

impl Mode {
    /// The mode's identifier byte.
    pub const fn id(self) -> u8 {
        match self {
            Mode::Oprf => 0x00,
            Mode::Voprf => 0x01,
            Mode::Poprf => 0x02,
        }
    }

    /// `contextString = "OPRFV1-" || I2OSP(mode, 1) || "-" || "ristretto255-SHA512"`. The mode is
    /// one raw byte, not an ASCII digit.
    pub fn context_string(self) -> [u8; CONTEXT_LEN] {
        let mut out = [0u8; CONTEXT_LEN];
        out[..7].copy_from_slice(b"OPRFV1-");
        out[7] = self.id();
        out[8] = b'-';
        out[9..].copy_from_slice(SUITE_ID.as_bytes());
        out
    }
}

/// `expand_message_xmd` with SHA-512 (RFC 9380 §5.3.1) producing `N` bytes. The message and the
/// DST are given in parts, which are concatenated. `N` is checked at compile time; the DSTs are
/// this module's constants, at most 255 bytes.
pub(crate) fn expand_message_xmd<const N: usize>(msg: &[&[u8]], dst: &[&[u8]]) -> [u8; N] {
    const B_IN_BYTES: usize = 64; // SHA-512 output
    const S_IN_BYTES: usize = 128; // SHA-512 block
    const {
        assert!(N > 0 && N <= 65535 && N.div_ceil(B_IN_BYTES) <= 255);
    }
    let ell = N.div_ceil(B_IN_BYTES);
    let dst_len: usize = dst.iter().map(|p| p.len()).sum();
    let dst_len = u8::try_from(dst_len).expect("the OPRF DSTs are shorter than 256 bytes");
    let len_in_bytes = u16::try_from(N).expect("checked at compile time");

    // b_0 = H(Z_pad || msg || I2OSP(len_in_bytes, 2) || I2OSP(0, 1) || DST_prime)
    let mut h = Sha512::new();
    h.update([0u8; S_IN_BYTES]);
    for part in msg {
        h.update(part);
    }
    h.update(len_in_bytes.to_be_bytes());
    h.update([0u8]);
    for part in dst {
        h.update(part);
    }
    h.update([dst_len]);
    let b_0 = Zeroizing::new(<[u8; B_IN_BYTES]>::from(h.finalize()));

    // b_1 = H(b_0 || I2OSP(1, 1) || DST_prime); b_i = H(strxor(b_0, b_(i-1)) || I2OSP(i, 1) || DST_prime)
    let mut out = [0u8; N];
    let mut b_prev = Zeroizing::new([0u8; B_IN_BYTES]);
    for i in 1..=ell {
        let mut h = Sha512::new();
        let mut chained = Zeroizing::new(*b_0);
        if i > 1 {
            for (c, p) in chained.iter_mut().zip(b_prev.iter()) {
                *c ^= p;
            }
        }
        h.update(*chained);
        h.update([u8::try_from(i).expect("ell <= 255, checked at compile time")]);
        for part in dst {
            h.update(part);
        }
        h.update([dst_len]);
        *b_prev = h.finalize().into();
        let start = (i - 1) * B_IN_BYTES;
        let end = N.min(start + B_IN_BYTES);
        out[start..end].copy_from_slice(&b_prev[..end - start]);
    }
    out
}

/// `HashToGroup` (RFC 9497 §4.1): `hash_to_ristretto255` of RFC 9380 Appendix B, that is
/// `expand_message_xmd` to 64 bytes with DST `"HashToGroup-" || contextString`, then the
/// RFC 9496 §4.3.4 element derivation (dalek's `from_uniform_bytes`).
pub(crate) fn hash_to_group(mode: Mode, msg: &[&[u8]]) -> RistrettoPoint {
    let uniform = Zeroizing::new(expand_message_xmd::<64>(
        msg,
        &[b"HashToGroup-", &mode.context_string()],
    ));
    RistrettoPoint::from_uniform_bytes(&uniform)
}

/// `HashToScalar` (RFC 9497 §4.1) with the default DST `"HashToScalar-" || contextString`.
pub(crate) fn hash_to_scalar(mode: Mode, msg: &[&[u8]]) -> Scalar {
    hash_to_scalar_dst(msg, &[b"HashToScalar-", &mode.context_string()])
}

/// `HashToScalar` with an explicit DST: `expand_message_xmd` to 64 bytes, read as a
/// little-endian integer and reduced mod ℓ.
pub(crate) fn hash_to_scalar_dst(msg: &[&[u8]], dst: &[&[u8]]) -> Scalar {
    let uniform = Zeroizing::new(expand_message_xmd::<64>(msg, dst));
    Scalar::from_bytes_mod_order_wide(&uniform)
}

/// `RandomScalar`: a uniformly random non-zero scalar (64 random bytes reduced mod ℓ, so the
/// bias is about 2⁻²⁵⁹).
pub(crate) fn random_scalar<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> Scalar {
    loop {
        let mut wide = Zeroizing::new([0u8; 64]);
        rng.fill_bytes(wide.as_mut());
        let s = Scalar::from_bytes_mod_order_wide(&wide);
        if s != Scalar::ZERO {
            return s;
        }
    }
}

/// `I2OSP(len, 2)`, refusing lengths above 65535.
pub(crate) fn len_prefix(what: &'static str, bytes: &[u8]) -> Result<[u8; 2], OprfError> {
    u16::try_from(bytes.len())
        .map(u16::to_be_bytes)
        .map_err(|_| OprfError::TooLong {
            what,
            len: bytes.len(),
        })
}

/// `SerializeElement` (RFC 9496 §4.3.2).
pub(crate) fn serialize_element(p: &RistrettoPoint) -> [u8; ELEMENT_LEN] {
    p.compress().to_bytes()
}

/// `DeserializeElement`: RFC 9496 §4.3.1 decoding (canonical encodings only), and the identity
/// is refused (RFC 9497 §2.1).
pub(crate) fn deserialize_element(bytes: &[u8]) -> Result<RistrettoPoint, OprfError> {
    let arr: [u8; ELEMENT_LEN] = bytes.try_into().map_err(|_| OprfError::InvalidElement)?;
    let p = CompressedRistretto(arr)
        .decompress()
        .ok_or(OprfError::InvalidElement)?;
    if p.is_identity() {
        return Err(OprfError::InvalidElement);
    }
    Ok(p)
}

/// `DeserializeScalar`: 32 little-endian bytes of an integer below ℓ (no reduction).
pub(crate) fn deserialize_scalar(bytes: &[u8]) -> Result<Scalar, OprfError> {
    let arr: [u8; SCALAR_LEN] = bytes.try_into().map_err(|_| OprfError::InvalidScalar)?;
    Option::<Scalar>::from(Scalar::from_canonical_bytes(arr)).ok_or(OprfError::InvalidScalar)
}

/// A non-zero scalar from its encoding (secret keys, blinds, deltas).
pub(crate) fn deserialize_nonzero_scalar(bytes: &[u8]) -> Result<Scalar, OprfError> {
    let s = deserialize_scalar(bytes)?;
    if s == Scalar::ZERO {
        return Err(OprfError::InvalidScalar);
    }
    Ok(s)
}

/// Writes bytes as lower-case hexadecimal (for `Debug` of public values).
pub(crate) fn fmt_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

macro_rules! element_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Never the identity element: decoding refuses it and the protocol cannot produce it.
        #[derive(Clone, Copy, PartialEq, Eq)]
        pub struct $name(pub(crate) RistrettoPoint);

        impl $name {
            /// Decodes 32 bytes (RFC 9496 encoding). Refuses non-canonical encodings, bytes that
            /// are not a group element, and the identity.
            pub fn from_bytes(bytes: &[u8]) -> Result<Self, OprfError> {
                deserialize_element(bytes).map(Self)
            }

            /// The 32-byte RFC 9496 encoding.
            pub fn to_bytes(&self) -> [u8; ELEMENT_LEN] {
                serialize_element(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "("))?;
                fmt_hex(f, &self.to_bytes())?;
                write!(f, ")")
            }
        }
    };
}

element_type!(
    /// `blindedElement = r·H(input)`, sent by the client to the server.
    BlindedElement
);
element_type!(
    /// `evaluatedElement = k·blindedElement` (POPRF: `(k + H(info))⁻¹·blindedElement`), returned
    /// by the server.
    EvaluatedElement
);
