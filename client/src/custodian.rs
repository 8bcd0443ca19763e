//! The data holder's client of the key custodian (SPEC.md §8): a tonic channel with mutual
//! TLS from PEM files (`renketsu_rpc::tls`), retries with exponential backoff and full jitter, and the holder's half
//! of RFC 9497 (blind → `EvaluateBatch` → verify → unblind).
//!
//! ```text
//! holder                                   custodian
//! x_i → B_i = r_i·HashToGroup(x_i)   ──►   Z_i = k·B_i  (+ one DLEQ proof per batch, VOPRF)
//! verify proof against pkS          ◄──
//! token_i = r_i⁻¹·Z_i = k·HashToGroup(x_i)          (32 bytes, RFC 9497 Finalize without the hash)
//! ```
//!
//! The network is behind the [`BatchEvaluator`] trait: [`CustodianClient`] is the gRPC
//! implementation, [`InProcessEvaluator`] evaluates with keys held in memory (tests,
//! benchmarks). [`BlindedBatch`] is the pure, synchronous part: it blinds a batch, and
//! [`BlindedBatch::finalize`] refuses every output of a batch whose VOPRF proof does not verify
//! against the public key the holder fetched **before** the batch was sent.
//!
//! Retries: `UNAVAILABLE` and `DEADLINE_EXCEEDED` (which include refused or dropped
//! connections) are retried up to [`RetryPolicy::max_attempts`] times with a delay drawn
//! uniformly from `[0, min(max_backoff, initial_backoff·2^(attempt−1))]` ("full jitter");
//! every other status (`PERMISSION_DENIED`, `RESOURCE_EXHAUSTED`, `INVALID_ARGUMENT`,
//! `FAILED_PRECONDITION`, …) is returned at once, since repeating the call cannot change it.
//! A retried `EvaluateBatch` re-sends the same blinded elements, which reveals nothing new;
//! the custodian may count it twice against the quota.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use renketsu_keys::oprf::{
    BlindResult, BlindedElement, ELEMENT_LEN, EvaluatedElement, OprfClient, OprfError, OprfServer,
    Proof, PublicKey, SecretKey, VoprfClient, VoprfServer,
};
use renketsu_keys::wrap::{
    HolderKeyPair, WrapError, unwrap as unwrap_clk_key, wrap as wrap_clk_key,
};
use renketsu_protocol::v1::key_custodian_client::KeyCustodianClient;
use renketsu_protocol::v1::{
    self, EvaluateBatchRequest, EvaluationMode, GetPublicKeyRequest, GetRekeyDeltaRequest,
    GetWrappedClkKeyRequest, GetWrappedClkKeyResponse, KeyState, WrapAlgorithm,
};
pub use renketsu_rpc::tls::{ChannelError, ConnectConfig, RetryPolicy, tls_channel};
use tonic::Code;
use tonic::transport::Channel;
use zeroize::Zeroizing;

/// Default number of blinded elements per `EvaluateBatch` call.
pub const DEFAULT_BATCH_SIZE: usize = 1024;

/// The custodian's name of a schema recipe: `<recipe>/v<version>`, e.g.
/// `kana_name_dob_sex/v2`. Holders, the admin's `CreateProject` and token files use it.
pub fn custodian_recipe_name(recipe: &str, version: u32) -> String {
    format!("{recipe}/v{version}")
}

/// RFC 9497 protocol variant of a project (§3.1). Fixed per project: the mode is part of
/// `HashToGroup`'s domain separation, so tokens of different modes never match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EvalMode {
    /// modeOPRF (0x00): no proof; the custodian is trusted to use the right key.
    Oprf,
    /// modeVOPRF (0x01): one DLEQ proof per batch, checked against the published key.
    Voprf,
}

impl EvalMode {
    /// Stable lower-case name (`oprf`, `voprf`), as in token files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Oprf => "oprf",
            Self::Voprf => "voprf",
        }
    }

    /// Parses [`Self::name`].
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "oprf" => Some(Self::Oprf),
            "voprf" => Some(Self::Voprf),
            _ => None,
        }
    }

    fn to_proto(self) -> EvaluationMode {
        match self {
            Self::Oprf => EvaluationMode::Oprf,
            Self::Voprf => EvaluationMode::Voprf,
        }
    }
}

/// Errors of the holder's client. `Display` never contains key material or identifiers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The channel could not be prepared: an unreadable PEM file, or a URL that is not
    /// `https://HOST:PORT`.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The custodian answered with a status that is not retried, or the retries ran out.
    #[error("custodian {rpc} failed after {attempts} attempt(s): {code:?}: {message}")]
    Status {
        /// The RPC, e.g. `EvaluateBatch`.
        rpc: &'static str,
        /// gRPC status code.
        code: Code,
        /// The custodian's message.
        message: String,
        /// Attempts made (1 when the status is not retried).
        attempts: u32,
    },
    /// The custodian's answer is malformed (wrong element count, bad encoding, missing proof).
    #[error("custodian {rpc} returned an invalid response: {what}")]
    InvalidResponse {
        /// The RPC.
        rpc: &'static str,
        /// What is wrong.
        what: String,
    },
    /// The VOPRF batch proof does not verify against the public key fetched before the
    /// batch: the custodian did not evaluate with the published key. No output of the batch
    /// is used.
    #[error(
        "the custodian's VOPRF proof for recipe {recipe} epoch {epoch} does not verify against its published public key; no token of this batch was used"
    )]
    ProofRejected {
        /// Custodian recipe name.
        recipe: String,
        /// Epoch of the key.
        epoch: u64,
    },
    /// An OPRF computation failed (e.g. an input hashes to the identity, RFC 9497
    /// `InvalidInputError`).
    #[error("OPRF: {0}")]
    Oprf(#[from] OprfError),
    /// A wrapped CLK key did not open with this holder's key for this project and field.
    #[error("CLK key of field {field}: {source}")]
    Unwrap {
        /// The CLK field.
        field: String,
        /// Why it failed.
        source: WrapError,
    },
}

impl ClientError {
    /// The gRPC status code, when the custodian answered with one.
    pub fn code(&self) -> Option<Code> {
        match self {
            Self::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// The public key of one epoch of one recipe, as published by the custodian.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochKey {
    /// The epoch (≥ 1).
    pub epoch: u64,
    /// `pkS = skS·G`.
    pub public_key: PublicKey,
}

/// One evaluated batch as the custodian returned it.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// `k·B_i`, in request order.
    pub elements: Vec<EvaluatedElement>,
    /// The batch's DLEQ proof (VOPRF mode only).
    pub proof: Option<Proof>,
}

/// Something that evaluates blinded elements with the key of a (project, recipe, epoch): the
/// gRPC [`CustodianClient`], or an [`InProcessEvaluator`].
pub trait BatchEvaluator: Send + Sync {
    /// The active epoch's public key of `recipe` (custodian recipe name).
    fn active_key(
        &self,
        project: &str,
        recipe: &str,
    ) -> impl Future<Output = Result<EpochKey, ClientError>> + Send;

    /// `BlindEvaluate` of every element with the key of `epoch` (RFC 9497 §3.3.1, §3.3.2).
    fn evaluate(
        &self,
        project: &str,
        recipe: &str,
        epoch: u64,
        mode: EvalMode,
        blinded: &[BlindedElement],
    ) -> impl Future<Output = Result<Evaluation, ClientError>> + Send;

    /// One field's CLK key, wrapped to `holder` by the custodian (HPKE, RFC 9180) and
    /// unwrapped here.
    fn clk_key(
        &self,
        project: &str,
        field: &str,
        holder: &HolderKeyPair,
    ) -> impl Future<Output = Result<Zeroizing<[u8; 32]>, ClientError>> + Send;
}

/// A blinded batch waiting for its evaluation: the secret blinds stay here (zeroized on drop).
#[derive(Debug)]
pub struct BlindedBatch {
    mode: EvalMode,
    key: EpochKey,
    blinds: Vec<BlindResult>,
}

impl BlindedBatch {
    /// Blinds `inputs` (RFC 9497 §3.3.1 `Blind`) for evaluation under `key` in `mode`.
    ///
    /// # Errors
    /// [`OprfError::InvalidInput`] if an input hashes to the identity, `TooLong` above 65,535
    /// bytes.
    pub fn blind<I: AsRef<[u8]>, R: rand::CryptoRng + ?Sized>(
        mode: EvalMode,
        key: EpochKey,
        inputs: &[I],
        rng: &mut R,
    ) -> Result<Self, ClientError> {
        let blinds = inputs
            .iter()
            .map(|x| match mode {
                EvalMode::Oprf => OprfClient.blind(x.as_ref(), rng),
                EvalMode::Voprf => VoprfClient::new(key.public_key).blind(x.as_ref(), rng),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { mode, key, blinds })
    }

    /// The blinded elements to send, in input order.
    pub fn blinded_elements(&self) -> Vec<BlindedElement> {
        self.blinds.iter().map(|b| b.blinded_element).collect()
    }

    /// Number of inputs.
    pub fn len(&self) -> usize {
        self.blinds.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.blinds.is_empty()
    }

    /// Checks the evaluation (count; in VOPRF mode the batch proof against the key given to
    /// [`Self::blind`]) and unblinds: `k·HashToGroup(input_i)`, 32 bytes each, in input order.
    ///
    /// # Errors
    /// [`ClientError::ProofRejected`] if the proof does not verify (no output is returned),
    /// [`ClientError::InvalidResponse`] on a wrong count or a missing proof.
    pub fn finalize(
        self,
        recipe: &str,
        evaluation: &Evaluation,
    ) -> Result<Vec<[u8; ELEMENT_LEN]>, ClientError> {
        let bad = |what: String| ClientError::InvalidResponse {
            rpc: "EvaluateBatch",
            what,
        };
        if evaluation.elements.len() != self.blinds.len() {
            return Err(bad(format!(
                "{} evaluated elements for {} blinded elements",
                evaluation.elements.len(),
                self.blinds.len()
            )));
        }
        match self.mode {
            EvalMode::Oprf => Ok(self
                .blinds
                .iter()
                .zip(&evaluation.elements)
                .map(|(b, e)| OprfClient.finalize_element(b, e))
                .collect()),
            EvalMode::Voprf => {
                let proof = evaluation
                    .proof
                    .as_ref()
                    .ok_or_else(|| bad("no proof in VOPRF mode".to_owned()))?;
                VoprfClient::new(self.key.public_key)
                    .finalize_element_batch(&self.blinds, &evaluation.elements, proof)
                    .map_err(|e| match e {
                        OprfError::Verify => ClientError::ProofRejected {
                            recipe: recipe.to_owned(),
                            epoch: self.key.epoch,
                        },
                        other => other.into(),
                    })
            }
        }
    }
}

/// Blinds `inputs`, has them evaluated in batches of at most `batch_size` and returns the
/// verified, unblinded elements in input order ([`evaluate_jobs`] with one job).
///
/// # Errors
/// The first failing batch's error; no partial result is returned.
pub async fn evaluate_all<E: BatchEvaluator, I: AsRef<[u8]>>(
    evaluator: &E,
    project: &str,
    recipe: &str,
    key: EpochKey,
    mode: EvalMode,
    inputs: &[I],
    batch_size: usize,
) -> Result<Vec<[u8; ELEMENT_LEN]>, ClientError> {
    let job = EvalJob {
        recipe,
        key,
        inputs,
    };
    let mut out = evaluate_jobs(evaluator, project, mode, &[job], batch_size).await?;
    Ok(out.pop().unwrap_or_default())
}

/// The inputs of one recipe for [`evaluate_jobs`].
#[derive(Debug)]
pub struct EvalJob<'a, I> {
    /// Custodian recipe name.
    pub recipe: &'a str,
    /// The epoch key to evaluate with and verify against.
    pub key: EpochKey,
    /// The inputs (preimages).
    pub inputs: &'a [I],
}

/// Evaluates the inputs of several recipes in batches of at most `batch_size`, pipelined:
/// while batch `k` is with the custodian, the holder verifies and unblinds batch `k − 1` and
/// blinds batch `k + 1` (with a multi-threaded Tokio runtime the transfer runs beside this
/// work). Every batch's proof is verified before its outputs are kept. Returns, per job, the
/// unblinded elements `k·HashToGroup(input)` in input order.
///
/// # Errors
/// The first failing batch's error ([`ClientError::ProofRejected`] for a proof that does not
/// verify); no partial result is returned.
pub async fn evaluate_jobs<E: BatchEvaluator, I: AsRef<[u8]>>(
    evaluator: &E,
    project: &str,
    mode: EvalMode,
    jobs: &[EvalJob<'_, I>],
    batch_size: usize,
) -> Result<Vec<Vec<[u8; ELEMENT_LEN]>>, ClientError> {
    let batch_size = batch_size.max(1);
    let batches: Vec<(usize, &[I])> = jobs
        .iter()
        .enumerate()
        .flat_map(|(j, job)| job.inputs.chunks(batch_size).map(move |c| (j, c)))
        .collect();
    let mut out: Vec<Vec<[u8; ELEMENT_LEN]>> = jobs
        .iter()
        .map(|j| Vec::with_capacity(j.inputs.len()))
        .collect();
    // Blinding is synchronous: the thread-local RNG is never held across an await.
    let blind = |k: usize| -> Result<BlindedBatch, ClientError> {
        let (j, chunk) = batches[k];
        BlindedBatch::blind(mode, jobs[j].key, chunk, &mut rand::rng())
    };
    let finalize = |done: Option<(usize, BlindedBatch, Evaluation)>,
                    out: &mut Vec<Vec<[u8; ELEMENT_LEN]>>|
     -> Result<(), ClientError> {
        if let Some((j, batch, evaluation)) = done {
            out[j].extend(batch.finalize(jobs[j].recipe, &evaluation)?);
        }
        Ok(())
    };
    if batches.is_empty() {
        return Ok(out);
    }
    let mut current = blind(0)?;
    let mut done: Option<(usize, BlindedBatch, Evaluation)> = None;
    for k in 0..batches.len() {
        let j = batches[k].0;
        let elements = current.blinded_elements();
        let request =
            evaluator.evaluate(project, jobs[j].recipe, jobs[j].key.epoch, mode, &elements);
        let side = async {
            finalize(done.take(), &mut out)?;
            if k + 1 < batches.len() {
                blind(k + 1).map(Some)
            } else {
                Ok(None)
            }
        };
        let (evaluation, next) = tokio::join!(request, side);
        let (evaluation, next) = (evaluation?, next?);
        done = Some((j, current, evaluation));
        match next {
            Some(n) => current = n,
            None => break,
        }
    }
    finalize(done, &mut out)?;
    Ok(out)
}

/// gRPC client of the key custodian over mutual TLS. Cheap to clone (one shared channel).
#[derive(Clone)]
pub struct CustodianClient {
    inner: KeyCustodianClient<Channel>,
    retry: RetryPolicy,
    retries: Arc<AtomicU64>,
}

impl fmt::Debug for CustodianClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustodianClient")
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl CustodianClient {
    /// Reads the PEM files and prepares a channel. The connection is made lazily on the first
    /// call, so an unreachable custodian shows up as a (retried) `UNAVAILABLE`. Must be called
    /// within a Tokio runtime (`Runtime::enter` or an async context).
    ///
    /// # Errors
    /// [`ClientError::Channel`] for an unreadable PEM file, a URL that is not
    /// `https://HOST:PORT` or TLS settings tonic refuses.
    pub fn connect(config: &ConnectConfig) -> Result<Self, ClientError> {
        Ok(Self::from_channel(tls_channel(config)?, config.retry))
    }

    /// A client over an existing channel (e.g. an in-memory transport in tests).
    pub fn from_channel(channel: Channel, retry: RetryPolicy) -> Self {
        Self {
            // Listings and audit pages can be large; evaluation batches stay far below.
            inner: KeyCustodianClient::new(channel).max_decoding_message_size(64 * 1024 * 1024),
            retry,
            retries: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The generated client, for calls this type does not wrap.
    pub fn raw(&self) -> KeyCustodianClient<Channel> {
        self.inner.clone()
    }

    /// Retries made so far by this client and its clones.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Runs `call` with retries of transient statuses (module docs).
    pub async fn with_retries<T, F, Fut>(
        &self,
        rpc: &'static str,
        mut call: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(KeyCustodianClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match call(self.inner.clone()).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) if RetryPolicy::retryable(s.code()) && attempt < self.retry.max_attempts => {
                    let delay = self.retry.backoff(attempt, rand::random::<f64>());
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        rpc,
                        attempt,
                        code = ?s.code(),
                        delay_ms = delay.as_millis() as u64,
                        "custodian call failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
                Err(s) => {
                    return Err(ClientError::Status {
                        rpc,
                        code: s.code(),
                        message: s.message().to_owned(),
                        attempts: attempt,
                    });
                }
            }
        }
    }

    /// `GetPublicKey`: the key of `epoch`, or of the active epoch when `None`, with its state.
    pub async fn public_key(
        &self,
        project: &str,
        recipe: &str,
        epoch: Option<u64>,
    ) -> Result<(EpochKey, KeyState), ClientError> {
        let req = GetPublicKeyRequest {
            project: project.to_owned(),
            recipe: recipe.to_owned(),
            epoch,
        };
        let resp = self
            .with_retries("GetPublicKey", |mut c| {
                let req = req.clone();
                async move { c.get_public_key(req).await }
            })
            .await?;
        let public_key =
            PublicKey::from_bytes(&resp.public_key).map_err(|e| ClientError::InvalidResponse {
                rpc: "GetPublicKey",
                what: format!("public key: {e}"),
            })?;
        if resp.epoch == 0 || epoch.is_some_and(|e| e != resp.epoch) {
            return Err(ClientError::InvalidResponse {
                rpc: "GetPublicKey",
                what: format!("epoch {} for a request of {epoch:?}", resp.epoch),
            });
        }
        Ok((
            EpochKey {
                epoch: resp.epoch,
                public_key,
            },
            resp.state(),
        ))
    }

    /// `GetWrappedClkKey`: one field's CLK key wrapped to `holder_public_key` (X25519).
    pub async fn wrapped_clk_key(
        &self,
        project: &str,
        field: &str,
        holder_public_key: [u8; 32],
    ) -> Result<GetWrappedClkKeyResponse, ClientError> {
        let req = GetWrappedClkKeyRequest {
            project: project.to_owned(),
            field: field.to_owned(),
            holder_public_key: holder_public_key.to_vec(),
        };
        self.with_retries("GetWrappedClkKey", |mut c| {
            let req = req.clone();
            async move { c.get_wrapped_clk_key(req).await }
        })
        .await
    }
}

impl CustodianClient {
    /// `GetRekeyDelta` (linkage-unit role only): the 32-byte scalar `Δ = k_to·k_from⁻¹` that
    /// moves OPRF tokens of `recipe` from `from_epoch` to `to_epoch` (SPEC.md §10.7).
    ///
    /// # Errors
    /// [`ClientError::Status`] for a refusal (or transient failures past the retries),
    /// [`ClientError::InvalidResponse`] for a delta that is not 32 bytes.
    pub async fn rekey_delta(
        &self,
        project: &str,
        recipe: &str,
        from_epoch: u64,
        to_epoch: u64,
    ) -> Result<Zeroizing<[u8; 32]>, ClientError> {
        let req = GetRekeyDeltaRequest {
            project: project.to_owned(),
            recipe: recipe.to_owned(),
            from_epoch,
            to_epoch,
        };
        let resp = self
            .with_retries("GetRekeyDelta", |mut c| {
                let req = req.clone();
                async move { c.get_rekey_delta(req).await }
            })
            .await?;
        let delta = Zeroizing::new(resp.delta);
        let bytes: [u8; 32] =
            delta
                .as_slice()
                .try_into()
                .map_err(|_| ClientError::InvalidResponse {
                    rpc: "GetRekeyDelta",
                    what: format!("a delta of {} bytes instead of 32", delta.len()),
                })?;
        Ok(Zeroizing::new(bytes))
    }
}

/// What the admin's `CreateProject` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProject {
    /// Project name.
    pub project: String,
    /// Custodian recipe names ([`custodian_recipe_name`]); each gets an active epoch 1.
    pub recipes: Vec<String>,
    /// CLK field names; each gets a CLK key.
    pub clk_fields: Vec<String>,
    /// The RFC 9497 mode every holder must blind in.
    pub mode: EvalMode,
    /// Party name of the project's linkage unit (the only one given re-keying deltas).
    pub linkage_unit: String,
}

/// The admin's and the auditor's calls. They are made once, not retried: a create or
/// rotation whose answer was lost must not be repeated blindly.
impl CustodianClient {
    async fn once<T, F, Fut>(&self, rpc: &'static str, call: F) -> Result<T, ClientError>
    where
        F: FnOnce(KeyCustodianClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        call(self.inner.clone())
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| ClientError::Status {
                rpc,
                code: s.code(),
                message: s.message().to_owned(),
                attempts: 1,
            })
    }

    /// Admin: `CreateProject`.
    ///
    /// # Errors
    /// [`ClientError::Status`] (ALREADY_EXISTS, INVALID_ARGUMENT, PERMISSION_DENIED, …);
    /// [`ClientError::InvalidResponse`] without a project in the answer.
    pub async fn create_project(&self, new: NewProject) -> Result<v1::Project, ClientError> {
        let req = v1::CreateProjectRequest {
            project: new.project,
            recipes: new.recipes,
            clk_fields: new.clk_fields,
            mode: new.mode.to_proto() as i32,
            linkage_unit: new.linkage_unit,
        };
        let r = self
            .once("CreateProject", |mut c| async move {
                c.create_project(req).await
            })
            .await?;
        r.project.ok_or_else(|| ClientError::InvalidResponse {
            rpc: "CreateProject",
            what: "no project".to_owned(),
        })
    }

    /// Admin: `EnrolHolder` with its declared record count (which sets its quota).
    ///
    /// # Errors
    /// [`ClientError::Status`]; [`ClientError::InvalidResponse`] without a holder.
    pub async fn enrol_holder(
        &self,
        project: &str,
        party: &str,
        declared_records: u64,
    ) -> Result<v1::Holder, ClientError> {
        let req = v1::EnrolHolderRequest {
            project: project.to_owned(),
            party: party.to_owned(),
            declared_records,
        };
        let r = self
            .once(
                "EnrolHolder",
                |mut c| async move { c.enrol_holder(req).await },
            )
            .await?;
        r.holder.ok_or_else(|| ClientError::InvalidResponse {
            rpc: "EnrolHolder",
            what: "no holder".to_owned(),
        })
    }

    /// Admin: `RotateEpoch`: a new active epoch of `recipe`, the previous one retired.
    ///
    /// # Errors
    /// [`ClientError::Status`].
    pub async fn rotate_epoch(
        &self,
        project: &str,
        recipe: &str,
    ) -> Result<v1::RotateEpochResponse, ClientError> {
        let req = v1::RotateEpochRequest {
            project: project.to_owned(),
            recipe: recipe.to_owned(),
        };
        self.once(
            "RotateEpoch",
            |mut c| async move { c.rotate_epoch(req).await },
        )
        .await
    }

    /// Admin: `RevokeEpoch`.
    ///
    /// # Errors
    /// [`ClientError::Status`].
    pub async fn revoke_epoch(
        &self,
        project: &str,
        recipe: &str,
        epoch: u64,
    ) -> Result<v1::RevokeEpochResponse, ClientError> {
        let req = v1::RevokeEpochRequest {
            project: project.to_owned(),
            recipe: recipe.to_owned(),
            epoch,
        };
        self.once(
            "RevokeEpoch",
            |mut c| async move { c.revoke_epoch(req).await },
        )
        .await
    }

    /// Admin: every project with its recipes, CLK fields and holders.
    ///
    /// # Errors
    /// [`ClientError::Status`].
    pub async fn list_projects(&self) -> Result<Vec<v1::Project>, ClientError> {
        let r = self
            .once("ListProjects", |mut c| async move {
                c.list_projects(v1::ListProjectsRequest {}).await
            })
            .await?;
        Ok(r.projects)
    }

    /// Auditor: the sealed audit head (sequence 0: an empty log).
    ///
    /// # Errors
    /// [`ClientError::Status`].
    pub async fn audit_head(&self) -> Result<v1::AuditHead, ClientError> {
        self.once("GetAuditHead", |mut c| async move {
            c.get_audit_head(v1::GetAuditHeadRequest {}).await
        })
        .await
    }

    /// Auditor: entries `from_sequence..` (at most `limit`, 0: all), streamed, each passed to
    /// `sink` in order; stops early when `sink` returns `false`.
    ///
    /// # Errors
    /// [`ClientError::Status`].
    pub async fn read_audit_log(
        &self,
        from_sequence: u64,
        limit: u32,
        mut sink: impl FnMut(v1::AuditEntry) -> bool,
    ) -> Result<(), ClientError> {
        let status = |s: tonic::Status| ClientError::Status {
            rpc: "ReadAuditLog",
            code: s.code(),
            message: s.message().to_owned(),
            attempts: 1,
        };
        let mut stream = self
            .inner
            .clone()
            .read_audit_log(v1::ReadAuditLogRequest {
                from_sequence,
                limit,
            })
            .await
            .map_err(status)?
            .into_inner();
        while let Some(e) = stream.message().await.map_err(status)? {
            if !sink(e) {
                break;
            }
        }
        Ok(())
    }
}

impl BatchEvaluator for CustodianClient {
    async fn active_key(&self, project: &str, recipe: &str) -> Result<EpochKey, ClientError> {
        let (key, state) = self.public_key(project, recipe, None).await?;
        if state != KeyState::Active {
            return Err(ClientError::InvalidResponse {
                rpc: "GetPublicKey",
                what: format!(
                    "the key of the current epoch {} of {recipe} is {}, not active",
                    key.epoch,
                    state.as_str_name()
                ),
            });
        }
        Ok(key)
    }

    async fn evaluate(
        &self,
        project: &str,
        recipe: &str,
        epoch: u64,
        mode: EvalMode,
        blinded: &[BlindedElement],
    ) -> Result<Evaluation, ClientError> {
        let req = EvaluateBatchRequest {
            project: project.to_owned(),
            recipe: recipe.to_owned(),
            epoch,
            blinded_elements: blinded.iter().map(|b| b.to_bytes().to_vec()).collect(),
            mode: mode.to_proto() as i32,
        };
        let resp = self
            .with_retries("EvaluateBatch", |mut c| {
                let req = req.clone();
                async move { c.evaluate_batch(req).await }
            })
            .await?;
        let bad = |what: String| ClientError::InvalidResponse {
            rpc: "EvaluateBatch",
            what,
        };
        if resp.epoch != epoch {
            return Err(bad(format!("epoch {} instead of {epoch}", resp.epoch)));
        }
        let elements = resp
            .evaluated_elements
            .iter()
            .map(|e| EvaluatedElement::from_bytes(e))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("evaluated element: {e}")))?;
        let proof = match (mode, &resp.proof) {
            (EvalMode::Voprf, Some(p)) => {
                Some(Proof::from_bytes(p).map_err(|e| bad(format!("proof: {e}")))?)
            }
            (EvalMode::Voprf, None) => return Err(bad("no proof in VOPRF mode".to_owned())),
            (EvalMode::Oprf, _) => None,
        };
        Ok(Evaluation { elements, proof })
    }

    async fn clk_key(
        &self,
        project: &str,
        field: &str,
        holder: &HolderKeyPair,
    ) -> Result<Zeroizing<[u8; 32]>, ClientError> {
        let resp = self
            .wrapped_clk_key(project, field, holder.public_key())
            .await?;
        if resp.algorithm() != WrapAlgorithm::HpkeX25519Sha256Chacha20poly1305 {
            return Err(ClientError::InvalidResponse {
                rpc: "GetWrappedClkKey",
                what: format!("unknown wrap algorithm {}", resp.algorithm),
            });
        }
        unwrap_clk_key(
            holder,
            project,
            field,
            &resp.encapsulated_key,
            &resp.ciphertext,
        )
        .map_err(|source| ClientError::Unwrap {
            field: field.to_owned(),
            source,
        })
    }
}

/// Evaluates with keys held in memory (RFC 9497 `OprfServer` / `VoprfServer`): for tests and
/// benchmarks of the holder's pipeline without a network. A key can be registered with a
/// *published* public key that differs from the evaluating key, to test that proofs are
/// checked.
#[derive(Default)]
pub struct InProcessEvaluator {
    keys: HashMap<(String, String), (u64, SecretKey, PublicKey)>,
    clk_keys: HashMap<(String, String), Zeroizing<[u8; 32]>>,
    evaluated: AtomicU64,
}

impl fmt::Debug for InProcessEvaluator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InProcessEvaluator")
            .field("recipes", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl InProcessEvaluator {
    /// An evaluator with no keys.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the active key of (project, recipe) at `epoch`.
    pub fn insert(&mut self, project: &str, recipe: &str, epoch: u64, key: SecretKey) {
        let pk = key.public_key();
        self.keys
            .insert((project.to_owned(), recipe.to_owned()), (epoch, key, pk));
    }

    /// Registers a key whose *published* public key is `published` (a lying custodian).
    pub fn insert_with_published(
        &mut self,
        project: &str,
        recipe: &str,
        epoch: u64,
        key: SecretKey,
        published: PublicKey,
    ) {
        self.keys.insert(
            (project.to_owned(), recipe.to_owned()),
            (epoch, key, published),
        );
    }

    /// Registers the CLK key of (project, field).
    pub fn insert_clk_key(&mut self, project: &str, field: &str, key: [u8; 32]) {
        self.clk_keys
            .insert((project.to_owned(), field.to_owned()), Zeroizing::new(key));
    }

    /// Elements evaluated so far.
    pub fn evaluated(&self) -> u64 {
        self.evaluated.load(Ordering::Relaxed)
    }

    fn lookup(
        &self,
        project: &str,
        recipe: &str,
    ) -> Result<&(u64, SecretKey, PublicKey), ClientError> {
        self.keys
            .get(&(project.to_owned(), recipe.to_owned()))
            .ok_or_else(|| ClientError::Status {
                rpc: "EvaluateBatch",
                code: Code::NotFound,
                message: format!("no recipe {recipe} in project {project}"),
                attempts: 1,
            })
    }
}

impl BatchEvaluator for InProcessEvaluator {
    fn active_key(
        &self,
        project: &str,
        recipe: &str,
    ) -> impl Future<Output = Result<EpochKey, ClientError>> + Send {
        let r = self.lookup(project, recipe).map(|(epoch, _, pk)| EpochKey {
            epoch: *epoch,
            public_key: *pk,
        });
        std::future::ready(r)
    }

    fn evaluate(
        &self,
        project: &str,
        recipe: &str,
        epoch: u64,
        mode: EvalMode,
        blinded: &[BlindedElement],
    ) -> impl Future<Output = Result<Evaluation, ClientError>> + Send {
        let r = self.lookup(project, recipe).and_then(|(e, sk, _)| {
            if *e != epoch {
                return Err(ClientError::Status {
                    rpc: "EvaluateBatch",
                    code: Code::FailedPrecondition,
                    message: format!("epoch {epoch} is not active"),
                    attempts: 1,
                });
            }
            self.evaluated
                .fetch_add(blinded.len() as u64, Ordering::Relaxed);
            let sk = SecretKey::from_bytes(sk.to_bytes().as_ref())?;
            Ok(match mode {
                EvalMode::Oprf => Evaluation {
                    elements: OprfServer::new(sk).blind_evaluate_batch(blinded),
                    proof: None,
                },
                EvalMode::Voprf => {
                    let b = VoprfServer::new(sk).blind_evaluate_batch(blinded, &mut rand::rng())?;
                    Evaluation {
                        elements: b.evaluated,
                        proof: Some(b.proof),
                    }
                }
            })
        });
        std::future::ready(r)
    }

    fn clk_key(
        &self,
        project: &str,
        field: &str,
        holder: &HolderKeyPair,
    ) -> impl Future<Output = Result<Zeroizing<[u8; 32]>, ClientError>> + Send {
        let unwrap_err = |source| ClientError::Unwrap {
            field: field.to_owned(),
            source,
        };
        let r = match self.clk_keys.get(&(project.to_owned(), field.to_owned())) {
            None => Err(ClientError::Status {
                rpc: "GetWrappedClkKey",
                code: Code::NotFound,
                message: format!("no CLK field {field} in project {project}"),
                attempts: 1,
            }),
            // The real wrapping and unwrapping, as over the network.
            Some(key) => wrap_clk_key(&holder.public_key(), project, field, key)
                .map_err(unwrap_err)
                .and_then(|w| {
                    unwrap_clk_key(holder, project, field, &w.encapsulated_key, &w.ciphertext)
                        .map_err(unwrap_err)
                }),
        };
        std::future::ready(r)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn key(byte: u8) -> SecretKey {
        SecretKey::derive(
            renketsu_keys::oprf::Mode::Voprf,
            &[byte; 32],
            b"renketsu test",
        )
        .unwrap()
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn blind_evaluate_finalize_equals_direct_evaluation_in_both_modes() {
        let mut ev = InProcessEvaluator::new();
        ev.insert("p", "r/v1", 3, key(1));
        let inputs: Vec<Vec<u8>> = (0..300u32).map(|i| i.to_be_bytes().to_vec()).collect();
        for (mode, direct) in [
            (
                EvalMode::Oprf,
                Box::new(|x: &[u8]| OprfServer::new(key(1)).evaluate_element(x).unwrap())
                    as Box<dyn Fn(&[u8]) -> [u8; 32]>,
            ),
            (
                EvalMode::Voprf,
                Box::new(|x: &[u8]| VoprfServer::new(key(1)).evaluate_element(x).unwrap()),
            ),
        ] {
            let k = block_on(ev.active_key("p", "r/v1")).unwrap();
            assert_eq!(k.epoch, 3);
            // Batches of 128: two full ones and a partial one.
            let out = block_on(evaluate_all(&ev, "p", "r/v1", k, mode, &inputs, 128)).unwrap();
            assert_eq!(out.len(), inputs.len());
            for (x, t) in inputs.iter().zip(&out).step_by(7) {
                assert_eq!(*t, direct(x), "{mode:?}");
            }
        }
        assert_eq!(ev.evaluated(), 2 * 300);
    }

    #[test]
    fn modes_give_unrelated_tokens() {
        let mut ev = InProcessEvaluator::new();
        ev.insert("p", "r/v1", 1, key(1));
        let k = block_on(ev.active_key("p", "r/v1")).unwrap();
        let a = block_on(evaluate_all(
            &ev,
            "p",
            "r/v1",
            k,
            EvalMode::Oprf,
            &[b"x"],
            8,
        ))
        .unwrap();
        let b = block_on(evaluate_all(
            &ev,
            "p",
            "r/v1",
            k,
            EvalMode::Voprf,
            &[b"x"],
            8,
        ))
        .unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn a_proof_for_another_key_is_rejected() {
        let mut ev = InProcessEvaluator::new();
        ev.insert_with_published("p", "r/v1", 1, key(1), key(2).public_key());
        let k = block_on(ev.active_key("p", "r/v1")).unwrap();
        let err = block_on(evaluate_all(
            &ev,
            "p",
            "r/v1",
            k,
            EvalMode::Voprf,
            &[b"x", b"y"],
            8,
        ))
        .unwrap_err();
        assert!(
            matches!(err, ClientError::ProofRejected { epoch: 1, .. }),
            "{err}"
        );
        // In OPRF mode there is nothing to check: the lie goes unnoticed (why VOPRF is the
        // default).
        assert!(
            block_on(evaluate_all(
                &ev,
                "p",
                "r/v1",
                k,
                EvalMode::Oprf,
                &[b"x"],
                8
            ))
            .is_ok()
        );
    }

    #[test]
    fn tampered_elements_or_counts_are_refused() {
        let k = EpochKey {
            epoch: 1,
            public_key: key(1).public_key(),
        };
        let inputs = [b"a".as_slice(), b"b", b"c"];
        let batch = BlindedBatch::blind(EvalMode::Voprf, k, &inputs, &mut rand::rng()).unwrap();
        let b = VoprfServer::new(key(1))
            .blind_evaluate_batch(&batch.blinded_elements(), &mut rand::rng())
            .unwrap();
        // Swap two evaluated elements: the proof no longer matches.
        let mut swapped = b.evaluated.clone();
        swapped.swap(0, 1);
        let ev = Evaluation {
            elements: swapped,
            proof: Some(b.proof),
        };
        assert!(matches!(
            batch.finalize("r", &ev),
            Err(ClientError::ProofRejected { .. })
        ));
        let batch = BlindedBatch::blind(EvalMode::Voprf, k, &inputs, &mut rand::rng()).unwrap();
        let short = Evaluation {
            elements: b.evaluated[..2].to_vec(),
            proof: Some(b.proof),
        };
        assert!(matches!(
            batch.finalize("r", &short),
            Err(ClientError::InvalidResponse { .. })
        ));
        let batch = BlindedBatch::blind(EvalMode::Voprf, k, &inputs, &mut rand::rng()).unwrap();
        let no_proof = Evaluation {
            elements: b.evaluated.clone(),
            proof: None,
        };
        assert!(matches!(
            batch.finalize("r", &no_proof),
            Err(ClientError::InvalidResponse { .. })
        ));
    }

    #[test]
    fn backoff_grows_exponentially_under_the_cap_with_jitter() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        assert_eq!(p.backoff(1, 1.0), Duration::from_millis(100));
        assert_eq!(p.backoff(2, 1.0), Duration::from_millis(200));
        assert_eq!(p.backoff(4, 1.0), Duration::from_millis(800));
        assert_eq!(p.backoff(5, 1.0), Duration::from_secs(1));
        assert_eq!(p.backoff(60, 1.0), Duration::from_secs(1));
        assert_eq!(p.backoff(3, 0.5), Duration::from_millis(200));
        assert_eq!(p.backoff(3, 0.0), Duration::ZERO);
        assert!(RetryPolicy::retryable(Code::Unavailable));
        assert!(RetryPolicy::retryable(Code::DeadlineExceeded));
        for c in [
            Code::PermissionDenied,
            Code::ResourceExhausted,
            Code::InvalidArgument,
            Code::FailedPrecondition,
            Code::Unauthenticated,
        ] {
            assert!(!RetryPolicy::retryable(c), "{c:?}");
        }
    }

    #[test]
    fn an_unreachable_custodian_is_retried_then_reported() {
        // A port nobody listens on (bound, then closed): connection refused → UNAVAILABLE.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let retry = RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
        };
        let err = block_on(async {
            let channel =
                tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
                    .unwrap()
                    .connect_lazy();
            let c = CustodianClient::from_channel(channel, retry);
            let r = c.active_key("p", "r/v1").await;
            assert_eq!(c.retries(), 2);
            r
        })
        .unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::Status {
                    code: Code::Unavailable,
                    attempts: 3,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn plain_http_is_refused() {
        let p = std::path::Path::new("/nonexistent");
        let err = CustodianClient::connect(&ConnectConfig::new("http://127.0.0.1:1", p, p, p))
            .unwrap_err();
        assert!(
            matches!(err, ClientError::Channel(ChannelError::Endpoint { .. })),
            "{err}"
        );
    }
}
