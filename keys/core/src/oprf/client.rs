//! The client (data holder) side: `Blind` and `Finalize` (RFC 9497 §3.3), per mode.

use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::traits::IsIdentity;
use sha2::{Digest, Sha512};

use super::OprfError;
use super::dleq::{Proof, check_batch, verify_proof};
use super::group::{
    BlindedElement, ELEMENT_LEN, EvaluatedElement, Mode, Output, hash_to_group, hash_to_scalar,
    len_prefix, serialize_element,
};
use super::key::{Blind, PublicKey};

/// What the client keeps for one input between blinding and finalizing: the secret [`Blind`]
/// and the [`BlindedElement`] it sends to the server.
#[derive(Debug, Clone)]
pub struct BlindResult {
    /// The blinding scalar `r` (secret, zeroized on drop).
    pub blind: Blind,
    /// `r·H(input)`, to send to the server.
    pub blinded_element: BlindedElement,
}

/// `Blind` with a given blinding scalar: `H(input)` must not be the identity.
fn blind_input(mode: Mode, input: &[u8], blind: Blind) -> Result<BlindResult, OprfError> {
    len_prefix("input", input)?;
    let input_element = hash_to_group(mode, &[input]);
    if input_element.is_identity() {
        return Err(OprfError::InvalidInput);
    }
    let blinded_element = BlindedElement(input_element * blind.0);
    Ok(BlindResult {
        blind,
        blinded_element,
    })
}

/// The unblinded element `r⁻¹·evaluatedElement`, serialized.
fn unblind(blind: &Blind, evaluated: &EvaluatedElement) -> [u8; ELEMENT_LEN] {
    serialize_element(&(evaluated.0 * blind.0.invert()))
}

/// The final hash of `Finalize` / `Evaluate`: `SHA-512(I2OSP(len(input), 2) || input ||
/// [I2OSP(len(info), 2) || info ||] I2OSP(32, 2) || element || "Finalize")`; `info` only in
/// POPRF mode.
pub(crate) fn finalize_hash(
    input: &[u8],
    info: Option<&[u8]>,
    element: &[u8; ELEMENT_LEN],
) -> Result<Output, OprfError> {
    let mut h = Sha512::new();
    h.update(len_prefix("input", input)?);
    h.update(input);
    if let Some(info) = info {
        h.update(len_prefix("info", info)?);
        h.update(info);
    }
    h.update((ELEMENT_LEN as u16).to_be_bytes());
    h.update(element);
    h.update(b"Finalize");
    Ok(h.finalize().into())
}

/// Checks that the three parts of a client batch have the same, non-zero length.
fn check_client_batch(inputs: usize, blinds: usize, evaluated: usize) -> Result<(), OprfError> {
    if inputs != blinds {
        return Err(OprfError::Batch("inputs and blinds differ in length"));
    }
    check_batch(blinds, evaluated)
}

/// Client of the base mode (0x00, no proof): the server is trusted to use the right key.
#[derive(Debug, Clone, Copy, Default)]
pub struct OprfClient;

impl OprfClient {
    /// `Blind(input)` with a fresh random blind. Fails if `input` is longer than 65535 bytes or
    /// hashes to the identity.
    pub fn blind<R: rand::CryptoRng + ?Sized>(
        &self,
        input: &[u8],
        rng: &mut R,
    ) -> Result<BlindResult, OprfError> {
        blind_input(Mode::Oprf, input, Blind::random(rng))
    }

    /// `Blind(input)` with a given blind (test vectors). A blind MUST NOT be reused.
    pub fn blind_with(&self, input: &[u8], blind: Blind) -> Result<BlindResult, OprfError> {
        blind_input(Mode::Oprf, input, blind)
    }

    /// `Finalize(input, blind, evaluatedElement)`: the 64-byte output.
    pub fn finalize(
        &self,
        input: &[u8],
        blinded: &BlindResult,
        evaluated: &EvaluatedElement,
    ) -> Result<Output, OprfError> {
        finalize_hash(input, None, &unblind(&blinded.blind, evaluated))
    }

    /// The unblinded element `k·H(input)` (32 bytes), `Finalize` without the final hash: what
    /// renketsu stores, so that it can be re-keyed ([`super::rekey`]).
    pub fn finalize_element(
        &self,
        blinded: &BlindResult,
        evaluated: &EvaluatedElement,
    ) -> [u8; ELEMENT_LEN] {
        unblind(&blinded.blind, evaluated)
    }
}

/// Client of the verifiable mode (0x01): every batch of evaluations comes with one proof that
/// the server used the key behind `public_key`.
#[derive(Debug, Clone, Copy)]
pub struct VoprfClient {
    public_key: PublicKey,
}

impl VoprfClient {
    /// A client that accepts evaluations under `public_key` only.
    pub fn new(public_key: PublicKey) -> Self {
        Self { public_key }
    }

    /// The server key this client verifies against.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// `Blind(input)` with a fresh random blind.
    pub fn blind<R: rand::CryptoRng + ?Sized>(
        &self,
        input: &[u8],
        rng: &mut R,
    ) -> Result<BlindResult, OprfError> {
        blind_input(Mode::Voprf, input, Blind::random(rng))
    }

    /// `Blind(input)` with a given blind (test vectors). A blind MUST NOT be reused.
    pub fn blind_with(&self, input: &[u8], blind: Blind) -> Result<BlindResult, OprfError> {
        blind_input(Mode::Voprf, input, blind)
    }

    /// Verifies the batch proof over `(blinded[i].blinded_element, evaluated[i])`.
    fn verify(
        &self,
        blinded: &[BlindResult],
        evaluated: &[EvaluatedElement],
        proof: &Proof,
    ) -> Result<(), OprfError> {
        check_batch(blinded.len(), evaluated.len())?;
        let c: Vec<RistrettoPoint> = blinded.iter().map(|b| b.blinded_element.0).collect();
        let d: Vec<RistrettoPoint> = evaluated.iter().map(|e| e.0).collect();
        verify_proof(Mode::Voprf, &self.public_key.0, &c, &d, proof)
    }

    /// `Finalize` of a whole batch: verifies the one proof, then unblinds and hashes each
    /// element. `inputs`, `blinded` and `evaluated` are in the same order as sent.
    pub fn finalize_batch<I: AsRef<[u8]>>(
        &self,
        inputs: &[I],
        blinded: &[BlindResult],
        evaluated: &[EvaluatedElement],
        proof: &Proof,
    ) -> Result<Vec<Output>, OprfError> {
        check_client_batch(inputs.len(), blinded.len(), evaluated.len())?;
        for input in inputs {
            len_prefix("input", input.as_ref())?;
        }
        self.verify(blinded, evaluated, proof)?;
        inputs
            .iter()
            .zip(blinded.iter().zip(evaluated))
            .map(|(input, (b, e))| finalize_hash(input.as_ref(), None, &unblind(&b.blind, e)))
            .collect()
    }

    /// `Finalize` of a batch of one.
    pub fn finalize(
        &self,
        input: &[u8],
        blinded: &BlindResult,
        evaluated: &EvaluatedElement,
        proof: &Proof,
    ) -> Result<Output, OprfError> {
        let mut out = self.finalize_batch(
            &[input],
            core::slice::from_ref(blinded),
            core::slice::from_ref(evaluated),
            proof,
        )?;
        Ok(out.remove(0))
    }

    /// Verifies the batch proof and returns the unblinded elements `k·H(input_i)` (32 bytes
    /// each), `Finalize` without the final hash.
    pub fn finalize_element_batch(
        &self,
        blinded: &[BlindResult],
        evaluated: &[EvaluatedElement],
        proof: &Proof,
    ) -> Result<Vec<[u8; ELEMENT_LEN]>, OprfError> {
        self.verify(blinded, evaluated, proof)?;
        Ok(blinded
            .iter()
            .zip(evaluated)
            .map(|(b, e)| unblind(&b.blind, e))
            .collect())
    }
}

/// Client of the partially oblivious mode (0x02): public `info` (e.g. a project or epoch
/// label) is bound into the evaluation and the proof.
#[derive(Debug, Clone, Copy)]
pub struct PoprfClient {
    public_key: PublicKey,
}

impl PoprfClient {
    /// A client that accepts evaluations under `public_key` only.
    pub fn new(public_key: PublicKey) -> Self {
        Self { public_key }
    }

    /// `Blind(input)` with a fresh random blind. (The tweaked key that RFC 9497 computes in
    /// `Blind` is computed, and checked, in [`Self::finalize_batch`].)
    pub fn blind<R: rand::CryptoRng + ?Sized>(
        &self,
        input: &[u8],
        rng: &mut R,
    ) -> Result<BlindResult, OprfError> {
        blind_input(Mode::Poprf, input, Blind::random(rng))
    }

    /// `Blind(input)` with a given blind (test vectors). A blind MUST NOT be reused.
    pub fn blind_with(&self, input: &[u8], blind: Blind) -> Result<BlindResult, OprfError> {
        blind_input(Mode::Poprf, input, blind)
    }

    /// `Finalize` of a whole batch evaluated under `info`: verifies the one proof against the
    /// tweaked key `H(info)·G + pkS`, then unblinds and hashes each element.
    pub fn finalize_batch<I: AsRef<[u8]>>(
        &self,
        inputs: &[I],
        blinded: &[BlindResult],
        evaluated: &[EvaluatedElement],
        proof: &Proof,
        info: &[u8],
    ) -> Result<Vec<Output>, OprfError> {
        check_client_batch(inputs.len(), blinded.len(), evaluated.len())?;
        for input in inputs {
            len_prefix("input", input.as_ref())?;
        }
        let tweaked_key = tweaked_public_key(&self.public_key, info)?;
        // The server proves log_G(T) = log_{evaluated}(blinded): C and D are swapped.
        let c: Vec<RistrettoPoint> = evaluated.iter().map(|e| e.0).collect();
        let d: Vec<RistrettoPoint> = blinded.iter().map(|b| b.blinded_element.0).collect();
        verify_proof(Mode::Poprf, &tweaked_key, &c, &d, proof)?;
        inputs
            .iter()
            .zip(blinded.iter().zip(evaluated))
            .map(|(input, (b, e))| finalize_hash(input.as_ref(), Some(info), &unblind(&b.blind, e)))
            .collect()
    }

    /// `Finalize` of a batch of one.
    pub fn finalize(
        &self,
        input: &[u8],
        blinded: &BlindResult,
        evaluated: &EvaluatedElement,
        proof: &Proof,
        info: &[u8],
    ) -> Result<Output, OprfError> {
        let mut out = self.finalize_batch(
            &[input],
            core::slice::from_ref(blinded),
            core::slice::from_ref(evaluated),
            proof,
            info,
        )?;
        Ok(out.remove(0))
    }
}

/// `m = HashToScalar("Info" || I2OSP(len(info), 2) || info)` in POPRF mode.
pub(crate) fn info_scalar(info: &[u8]) -> Result<curve25519_dalek::scalar::Scalar, OprfError> {
    let info_len = len_prefix("info", info)?;
    Ok(hash_to_scalar(Mode::Poprf, &[b"Info", &info_len, info]))
}

/// The POPRF tweaked key `T = m·G + pkS`; the identity is `InvalidInputError`.
fn tweaked_public_key(public_key: &PublicKey, info: &[u8]) -> Result<RistrettoPoint, OprfError> {
    let t = RistrettoPoint::mul_base(&info_scalar(info)?) + public_key.0;
    if t.is_identity() {
        return Err(OprfError::InvalidInput);
    }
    Ok(t)
}
