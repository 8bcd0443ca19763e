//! Discrete-log-equality proofs over a batch (RFC 9497 §2.2): `GenerateProof`,
//! `ComputeComposites`, `VerifyProof`. The base `A` is always the generator `G` in RFC 9497, so
//! it is not a parameter here: the proof shows `log_G(B) = log_C(D)` for the composites of the
//! batch `(C[i], D[i])`.

use core::fmt;

use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::VartimeMultiscalarMul;
use sha2::{Digest, Sha512};
use zeroize::Zeroize;

use super::OprfError;
use super::group::{
    ELEMENT_LEN, Mode, PROOF_LEN, SCALAR_LEN, deserialize_scalar, fmt_hex, hash_to_scalar,
    serialize_element,
};

/// The largest batch one proof can cover: the composite transcript encodes the index in two
/// bytes.
pub(crate) const MAX_BATCH: usize = 1 << 16;

/// A DLEQ proof `(c, s)` (RFC 9497 §2.2.1), 64 bytes on the wire: one per batch.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Proof {
    pub(crate) c: Scalar,
    pub(crate) s: Scalar,
}

impl Proof {
    /// Decodes `SerializeScalar(c) || SerializeScalar(s)`; both scalars must be canonical.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, OprfError> {
        if bytes.len() != PROOF_LEN {
            return Err(OprfError::InvalidProof);
        }
        let (c, s) = bytes.split_at(SCALAR_LEN);
        Ok(Self {
            c: deserialize_scalar(c).map_err(|_| OprfError::InvalidProof)?,
            s: deserialize_scalar(s).map_err(|_| OprfError::InvalidProof)?,
        })
    }

    /// The 64-byte encoding.
    pub fn to_bytes(&self) -> [u8; PROOF_LEN] {
        let mut out = [0u8; PROOF_LEN];
        out[..SCALAR_LEN].copy_from_slice(self.c.as_bytes());
        out[SCALAR_LEN..].copy_from_slice(self.s.as_bytes());
        out
    }
}

impl fmt::Debug for Proof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Proof(")?;
        fmt_hex(f, &self.to_bytes())?;
        f.write_str(")")
    }
}

/// Checks that a batch is non-empty, small enough for one proof, and that its two halves match.
pub(crate) fn check_batch(c_len: usize, d_len: usize) -> Result<(), OprfError> {
    if c_len == 0 {
        return Err(OprfError::Batch("empty batch"));
    }
    if c_len != d_len {
        return Err(OprfError::Batch("batch parts differ in length"));
    }
    if c_len > MAX_BATCH {
        return Err(OprfError::Batch("more than 65536 elements in one proof"));
    }
    Ok(())
}

/// The weights `d_i` of `ComputeComposites` (RFC 9497 §2.2.1).
fn composite_weights(
    mode: Mode,
    b: &[u8; ELEMENT_LEN],
    c: &[RistrettoPoint],
    d: &[RistrettoPoint],
) -> Vec<Scalar> {
    let context = mode.context_string();
    let elen = (ELEMENT_LEN as u16).to_be_bytes();
    // seedDST = "Seed-" || contextString
    let seed_dst_len = u16::try_from(5 + context.len())
        .expect("short DST")
        .to_be_bytes();
    let seed: [u8; 64] = Sha512::new()
        .chain_update(elen)
        .chain_update(b)
        .chain_update(seed_dst_len)
        .chain_update(b"Seed-")
        .chain_update(context)
        .finalize()
        .into();
    let seed_len = (seed.len() as u16).to_be_bytes();
    c.iter()
        .zip(d)
        .enumerate()
        .map(|(i, (ci, di))| {
            let index = u16::try_from(i).expect("batch size checked").to_be_bytes();
            hash_to_scalar(
                mode,
                &[
                    &seed_len,
                    &seed,
                    &index,
                    &elen,
                    &serialize_element(ci),
                    &elen,
                    &serialize_element(di),
                    b"Composite",
                ],
            )
        })
        .collect()
}

/// `M = Σ d_i·C[i]` (all public data, so variable time is fine).
fn composite(weights: &[Scalar], points: &[RistrettoPoint]) -> RistrettoPoint {
    RistrettoPoint::vartime_multiscalar_mul(weights, points)
}

/// The challenge `c = HashToScalar(len || Bm || len || M || len || Z || len || t2 || len || t3 ||
/// "Challenge")`.
fn challenge(
    mode: Mode,
    b: &[u8; ELEMENT_LEN],
    m: &RistrettoPoint,
    z: &RistrettoPoint,
    t2: &RistrettoPoint,
    t3: &RistrettoPoint,
) -> Scalar {
    let elen = (ELEMENT_LEN as u16).to_be_bytes();
    hash_to_scalar(
        mode,
        &[
            &elen,
            b,
            &elen,
            &serialize_element(m),
            &elen,
            &serialize_element(z),
            &elen,
            &serialize_element(t2),
            &elen,
            &serialize_element(t3),
            b"Challenge",
        ],
    )
}

/// `GenerateProof(k, G, B, C, D)` with `B = k·G`, `D[i] = k·C[i]`, using the proof nonce `r`
/// (non-zero, fresh, secret; zeroized here). The batch must have passed [`check_batch`].
pub(crate) fn generate_proof(
    mode: Mode,
    k: &Scalar,
    b: &RistrettoPoint,
    c: &[RistrettoPoint],
    d: &[RistrettoPoint],
    mut r: Scalar,
) -> Proof {
    let b_bytes = serialize_element(b);
    // ComputeCompositesFast: Z = k·M.
    let weights = composite_weights(mode, &b_bytes, c, d);
    let m = composite(&weights, c);
    let z = m * k;
    let t2 = RistrettoPoint::mul_base(&r);
    let t3 = m * r;
    let ch = challenge(mode, &b_bytes, &m, &z, &t2, &t3);
    let s = r - ch * k;
    r.zeroize();
    Proof { c: ch, s }
}

/// `VerifyProof(G, B, C, D, proof)`.
pub(crate) fn verify_proof(
    mode: Mode,
    b: &RistrettoPoint,
    c: &[RistrettoPoint],
    d: &[RistrettoPoint],
    proof: &Proof,
) -> Result<(), OprfError> {
    check_batch(c.len(), d.len())?;
    let b_bytes = serialize_element(b);
    let weights = composite_weights(mode, &b_bytes, c, d);
    let m = composite(&weights, c);
    let z = composite(&weights, d);
    // t2 = s·G + c·B, t3 = s·M + c·Z
    let t2 = RistrettoPoint::vartime_double_scalar_mul_basepoint(&proof.c, b, &proof.s);
    let t3 = RistrettoPoint::vartime_multiscalar_mul([proof.s, proof.c], [m, z]);
    if challenge(mode, &b_bytes, &m, &z, &t2, &t3) == proof.c {
        Ok(())
    } else {
        Err(OprfError::Verify)
    }
}
