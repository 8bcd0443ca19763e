//! The server (key custodian) side: `BlindEvaluate` and `Evaluate` (RFC 9497 §3.3), per mode.

use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use zeroize::Zeroizing;

use super::OprfError;
use super::client::{finalize_hash, info_scalar};
use super::dleq::{Proof, check_batch, generate_proof};
use super::group::{
    BlindedElement, ELEMENT_LEN, EvaluatedElement, Mode, Output, deserialize_nonzero_scalar,
    hash_to_group, len_prefix, random_scalar, serialize_element,
};
use super::key::{PublicKey, SecretKey};

/// The evaluations of one batch and the single proof covering all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchEvaluation {
    /// One evaluated element per blinded element, in the same order.
    pub evaluated: Vec<EvaluatedElement>,
    /// The DLEQ proof for the whole batch.
    pub proof: Proof,
}

/// `k·H(input)` evaluated directly by the key holder (no blinding), serialized.
fn evaluate_element(mode: Mode, sk: &SecretKey, input: &[u8]) -> Result<[u8; 32], OprfError> {
    len_prefix("input", input)?;
    let input_element = hash_to_group(mode, &[input]);
    if input_element.is_identity() {
        return Err(OprfError::InvalidInput);
    }
    Ok(serialize_element(&(input_element * sk.0)))
}

/// A proof nonce from its encoding (test vectors): canonical and non-zero.
fn proof_nonce(bytes: &[u8]) -> Result<Scalar, OprfError> {
    deserialize_nonzero_scalar(bytes)
}

/// Server of the base mode (0x00).
#[derive(Debug, Clone)]
pub struct OprfServer {
    sk: SecretKey,
}

impl OprfServer {
    /// A server evaluating with `sk`.
    pub fn new(sk: SecretKey) -> Self {
        Self { sk }
    }

    /// `BlindEvaluate(skS, blindedElement) = skS·blindedElement`.
    pub fn blind_evaluate(&self, blinded: &BlindedElement) -> EvaluatedElement {
        EvaluatedElement(blinded.0 * self.sk.0)
    }

    /// `BlindEvaluate` of each element of a batch.
    pub fn blind_evaluate_batch(&self, blinded: &[BlindedElement]) -> Vec<EvaluatedElement> {
        blinded.iter().map(|b| self.blind_evaluate(b)).collect()
    }

    /// `Evaluate(skS, input)`: the output a client gets from the blinded protocol, computed
    /// directly by the key holder.
    pub fn evaluate(&self, input: &[u8]) -> Result<Output, OprfError> {
        finalize_hash(input, None, &self.evaluate_element(input)?)
    }

    /// `skS·H(input)` computed directly: the element [`super::OprfClient::finalize_element`]
    /// yields.
    pub fn evaluate_element(&self, input: &[u8]) -> Result<[u8; ELEMENT_LEN], OprfError> {
        evaluate_element(Mode::Oprf, &self.sk, input)
    }
}

/// Server of the verifiable mode (0x01): one DLEQ proof per batch.
#[derive(Debug, Clone)]
pub struct VoprfServer {
    sk: SecretKey,
    pk: PublicKey,
}

impl VoprfServer {
    /// A server evaluating with `sk`; its public key is `sk·G`.
    pub fn new(sk: SecretKey) -> Self {
        let pk = sk.public_key();
        Self { sk, pk }
    }

    /// The public key clients verify against.
    pub fn public_key(&self) -> &PublicKey {
        &self.pk
    }

    fn evaluate_batch_with_nonce(
        &self,
        blinded: &[BlindedElement],
        r: Scalar,
    ) -> Result<BatchEvaluation, OprfError> {
        check_batch(blinded.len(), blinded.len())?;
        let c: Vec<RistrettoPoint> = blinded.iter().map(|b| b.0).collect();
        let d: Vec<RistrettoPoint> = c.iter().map(|p| p * self.sk.0).collect();
        let proof = generate_proof(Mode::Voprf, &self.sk.0, &self.pk.0, &c, &d, r);
        Ok(BatchEvaluation {
            evaluated: d.into_iter().map(EvaluatedElement).collect(),
            proof,
        })
    }

    /// `BlindEvaluate` of a batch: `skS·blinded[i]` for each element, and one proof for all
    /// (RFC 9497 §3.3.2 with the batched `GenerateProof`). Fails on an empty batch or one of
    /// more than 65536 elements.
    pub fn blind_evaluate_batch<R: rand::CryptoRng + ?Sized>(
        &self,
        blinded: &[BlindedElement],
        rng: &mut R,
    ) -> Result<BatchEvaluation, OprfError> {
        self.evaluate_batch_with_nonce(blinded, random_scalar(rng))
    }

    /// [`Self::blind_evaluate_batch`] with a given proof nonce (32-byte canonical non-zero
    /// scalar), for test vectors. A nonce MUST NOT be reused: two proofs with one nonce reveal
    /// the key.
    pub fn blind_evaluate_batch_with(
        &self,
        blinded: &[BlindedElement],
        proof_nonce_bytes: &[u8],
    ) -> Result<BatchEvaluation, OprfError> {
        self.evaluate_batch_with_nonce(blinded, proof_nonce(proof_nonce_bytes)?)
    }

    /// `Evaluate(skS, input)` computed directly by the key holder.
    pub fn evaluate(&self, input: &[u8]) -> Result<Output, OprfError> {
        finalize_hash(input, None, &self.evaluate_element(input)?)
    }

    /// `skS·H(input)` computed directly: the element [`super::VoprfClient::finalize_element_batch`]
    /// yields.
    pub fn evaluate_element(&self, input: &[u8]) -> Result<[u8; ELEMENT_LEN], OprfError> {
        evaluate_element(Mode::Voprf, &self.sk, input)
    }
}

/// Server of the partially oblivious mode (0x02): evaluates with the key tweaked by public
/// `info`, `t = skS + HashToScalar("Info" || I2OSP(len(info), 2) || info)`.
#[derive(Debug, Clone)]
pub struct PoprfServer {
    sk: SecretKey,
    pk: PublicKey,
}

impl PoprfServer {
    /// A server evaluating with `sk`; its public key is `sk·G`.
    pub fn new(sk: SecretKey) -> Self {
        let pk = sk.public_key();
        Self { sk, pk }
    }

    /// The public key clients verify against.
    pub fn public_key(&self) -> &PublicKey {
        &self.pk
    }

    /// The tweaked key `t = skS + m`; zero is `InverseError`.
    fn tweaked_key(&self, info: &[u8]) -> Result<Zeroizing<Scalar>, OprfError> {
        let t = Zeroizing::new(self.sk.0 + info_scalar(info)?);
        if *t == Scalar::ZERO {
            return Err(OprfError::Inverse);
        }
        Ok(t)
    }

    fn evaluate_batch_with_nonce(
        &self,
        blinded: &[BlindedElement],
        info: &[u8],
        r: Scalar,
    ) -> Result<BatchEvaluation, OprfError> {
        check_batch(blinded.len(), blinded.len())?;
        let t = self.tweaked_key(info)?;
        let t_inv = Zeroizing::new(t.invert());
        let blinded: Vec<RistrettoPoint> = blinded.iter().map(|b| b.0).collect();
        let evaluated: Vec<RistrettoPoint> = blinded.iter().map(|p| p * *t_inv).collect();
        let tweaked_public = RistrettoPoint::mul_base(&t);
        // Proves log_G(T) = log_{evaluated}(blinded), since blinded = t·evaluated.
        let proof = generate_proof(Mode::Poprf, &t, &tweaked_public, &evaluated, &blinded, r);
        Ok(BatchEvaluation {
            evaluated: evaluated.into_iter().map(EvaluatedElement).collect(),
            proof,
        })
    }

    /// `BlindEvaluate(skS, blinded, info)` of a batch with one proof.
    pub fn blind_evaluate_batch<R: rand::CryptoRng + ?Sized>(
        &self,
        blinded: &[BlindedElement],
        info: &[u8],
        rng: &mut R,
    ) -> Result<BatchEvaluation, OprfError> {
        self.evaluate_batch_with_nonce(blinded, info, random_scalar(rng))
    }

    /// [`Self::blind_evaluate_batch`] with a given proof nonce, for test vectors. A nonce MUST
    /// NOT be reused.
    pub fn blind_evaluate_batch_with(
        &self,
        blinded: &[BlindedElement],
        info: &[u8],
        proof_nonce_bytes: &[u8],
    ) -> Result<BatchEvaluation, OprfError> {
        self.evaluate_batch_with_nonce(blinded, info, proof_nonce(proof_nonce_bytes)?)
    }

    /// `Evaluate(skS, input, info)` computed directly by the key holder.
    pub fn evaluate(&self, input: &[u8], info: &[u8]) -> Result<Output, OprfError> {
        len_prefix("input", input)?;
        let t = self.tweaked_key(info)?;
        let input_element = hash_to_group(Mode::Poprf, &[input]);
        if input_element.is_identity() {
            return Err(OprfError::InvalidInput);
        }
        let element = serialize_element(&(input_element * t.invert()));
        finalize_hash(input, Some(info), &element)
    }
}
