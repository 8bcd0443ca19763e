//! The gRPC service `renketsu.v1.KeyCustodian` over any [`CustodianStore`]
//! (SPEC.md §8).
//!
//! Every handler is a closure run by `renketsu_rpc::handle`, which reads the caller's
//! identity from its client certificate, checks its role, makes the project-scoped handlers
//! pass the membership check ([`Call::member`], this service's rule in
//! [`RpcService::check_member`]) and writes one audit entry with the status the call ends
//! with — refused calls included. A call whose audit entry cannot be written fails with
//! INTERNAL: nothing leaves the custodian unaudited. The handlers here do request
//! validation and the work only.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use renketsu_keys::audit::AuditEvent;
use renketsu_keys::lifecycle::KeyState;
use renketsu_keys::names;
use renketsu_keys::oprf::{BlindedElement, Mode, OprfServer, RekeyDelta, VoprfServer};
use renketsu_keys::wrap::{self, WrapError};
use renketsu_protocol::v1;
use renketsu_protocol::v1::key_custodian_server::KeyCustodian;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use renketsu_rpc::call::AuditNote;
use renketsu_rpc::{Call, Clock, PeerIdentity, Role, RpcService, ServiceError, pki};

use crate::auth::{self, Membership, Rpc};
use crate::policy::{PolicyStore, ProjectPolicy};
use crate::quota;
use crate::store::{
    CustodianStore, EpochRecord, HolderRecord, NewProject, ProjectRecord, Rotation, StoreError,
};

/// Service settings (from the configuration file).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSettings {
    /// Most blinded elements per EvaluateBatch.
    pub max_batch: usize,
    /// Quota slack ([`quota::evaluation_quota`]).
    pub quota_slack: f64,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Self {
            max_batch: crate::config::DEFAULT_MAX_BATCH,
            quota_slack: crate::config::DEFAULT_QUOTA_SLACK,
        }
    }
}

/// An epoch's key, unsealed and derived once, kept in memory. The secret scalar inside each
/// server is zeroized when the last reference is dropped.
struct CachedKey {
    oprf: OprfServer,
    voprf: VoprfServer,
}

type KeyId = (String, String, u64);

struct Inner<S> {
    store: S,
    clock: Arc<dyn Clock>,
    settings: ServiceSettings,
    keys: Mutex<HashMap<KeyId, Arc<CachedKey>>>,
}

/// The key custodian service. Cheap to clone (shared state behind an `Arc`).
pub struct CustodianService<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for CustodianService<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

fn proto_mode(mode: Mode) -> v1::EvaluationMode {
    match mode {
        Mode::Oprf => v1::EvaluationMode::Oprf,
        _ => v1::EvaluationMode::Voprf,
    }
}

fn proto_state(state: KeyState) -> v1::KeyState {
    match state {
        KeyState::Active => v1::KeyState::Active,
        KeyState::Retired => v1::KeyState::Retired,
        KeyState::Revoked => v1::KeyState::Revoked,
        KeyState::Pending => v1::KeyState::Pending,
    }
}

fn nonempty(what: &str, value: &str) -> Result<(), ServiceError> {
    if value.is_empty() {
        Err(ServiceError::InvalidArgument(format!("{what} is empty")))
    } else {
        Ok(())
    }
}

/// The one project-name rule ([`renketsu_keys::names`]): checked before any lookup, so a
/// malformed name never reaches the store or a log whole.
fn project_name(project: &str) -> Result<(), ServiceError> {
    names::check_project_name(project).map_err(|e| ServiceError::InvalidArgument(e.to_string()))
}

fn nonzero_epoch(what: &str, epoch: u64) -> Result<(), ServiceError> {
    if epoch == 0 {
        Err(ServiceError::InvalidArgument(format!(
            "{what} is 0; epochs start at 1"
        )))
    } else {
        Ok(())
    }
}

fn project_view(record: &ProjectRecord, policy: &ProjectPolicy) -> v1::Project {
    v1::Project {
        name: record.name.clone(),
        recipes: record
            .recipes
            .iter()
            .map(|r| v1::RecipeKey {
                recipe: r.recipe.clone(),
                epoch: r.active.map_or(0, |(e, _)| e),
                public_key: r.active.map_or_else(Vec::new, |(_, pk)| pk.to_vec()),
            })
            .collect(),
        clk_fields: record.clk_fields.clone(),
        holders: record.holders.iter().map(holder_view).collect(),
        created_unix_ms: record.created_at.as_unix_ms(),
        mode: proto_mode(policy.mode) as i32,
        linkage_unit: policy.linkage_unit.clone(),
    }
}

fn holder_view(h: &HolderRecord) -> v1::Holder {
    v1::Holder {
        party: h.party.clone(),
        declared_records: h.declared_records,
        evaluation_quota: h.evaluation_quota,
    }
}

/// The entries of ReadAuditLog, one page at a time.
pub type AuditStream = Pin<Box<dyn Stream<Item = Result<v1::AuditEntry, Status>> + Send>>;

/// Entries read from the store per page while streaming the audit log.
const AUDIT_PAGE: u64 = 1000;

impl<S: CustodianStore + PolicyStore + 'static> CustodianService<S> {
    /// A service over `store`, with time from `clock`.
    pub fn new(store: S, clock: Arc<dyn Clock>, settings: ServiceSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                clock,
                settings,
                keys: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The store (for tests and maintenance).
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// The project's policy, or a membership refusal if the project does not exist.
    async fn member_policy(
        &self,
        rpc: Rpc,
        who: &PeerIdentity,
        project: &str,
    ) -> Result<ProjectPolicy, ServiceError> {
        project_name(project)?;
        match self.inner.store.get_project(project).await {
            Ok(_) => {}
            Err(StoreError::ProjectNotFound(_)) => return Err(auth::not_member(rpc, who, project)),
            Err(e) => return Err(e.into()),
        }
        let policy = self.inner.store.policy(project).await?;
        let holder_enrolled = if who.role == Role::DataHolder {
            match self.inner.store.get_holder(project, &who.party).await {
                Ok(_) => true,
                Err(StoreError::HolderNotFound { .. }) => false,
                Err(e) => return Err(e.into()),
            }
        } else {
            false
        };
        auth::check_project(
            rpc,
            who,
            project,
            Some(&Membership {
                holder_enrolled,
                linkage_unit: &policy.linkage_unit,
            }),
        )?;
        Ok(policy)
    }

    /// The key of (project, recipe, epoch), from the cache or unsealed from the store.
    async fn key(&self, record: &EpochRecord) -> Result<Arc<CachedKey>, ServiceError> {
        let id = (record.project.clone(), record.recipe.clone(), record.epoch);
        if let Some(k) = self.inner.keys.lock().expect("key cache").get(&id) {
            return Ok(Arc::clone(k));
        }
        let sealed = self
            .inner
            .store
            .epoch_key(&record.project, &record.recipe, record.epoch)
            .await?;
        let sk = sealed.secret_key()?;
        if sk.public_key().to_bytes() != record.public_key {
            return Err(ServiceError::Internal(format!(
                "epoch key of {:?}/{:?}/{} does not match its stored public key",
                record.project, record.recipe, record.epoch
            )));
        }
        let key = Arc::new(CachedKey {
            oprf: OprfServer::new(sk.clone()),
            voprf: VoprfServer::new(sk),
        });
        self.inner
            .keys
            .lock()
            .expect("key cache")
            .insert(id, Arc::clone(&key));
        Ok(key)
    }

    /// Drops cached keys of one recipe (after a rotation or revocation).
    fn forget_keys(&self, project: &str, recipe: &str) {
        self.inner
            .keys
            .lock()
            .expect("key cache")
            .retain(|(p, r, _), _| !(p == project && r == recipe));
    }

    /// An epoch record for a member call; not-found errors become NOT_FOUND with the store's
    /// message.
    async fn epoch(
        &self,
        project: &str,
        recipe: &str,
        epoch: Option<u64>,
    ) -> Result<EpochRecord, ServiceError> {
        Ok(self.inner.store.get_epoch(project, recipe, epoch).await?)
    }

    // ---------------------------------------------------------------- admin

    async fn create_project_inner(
        &self,
        req: &v1::CreateProjectRequest,
        call: &Call<'_, Self>,
    ) -> Result<v1::CreateProjectResponse, ServiceError> {
        project_name(&req.project)?;
        if req.recipes.is_empty() {
            return Err(ServiceError::InvalidArgument(
                "a project needs at least one recipe".to_owned(),
            ));
        }
        if !pki::is_valid_party(&req.linkage_unit) {
            return Err(ServiceError::InvalidArgument(format!(
                "linkage_unit {:?} is not a valid party name (1-64 characters of A-Z a-z 0-9 . _ -)",
                req.linkage_unit
            )));
        }
        let mode = match v1::EvaluationMode::try_from(req.mode) {
            Ok(v1::EvaluationMode::Unspecified | v1::EvaluationMode::Voprf) => Mode::Voprf,
            Ok(v1::EvaluationMode::Oprf) => Mode::Oprf,
            Err(_) => {
                return Err(ServiceError::InvalidArgument(format!(
                    "unknown evaluation mode {}",
                    req.mode
                )));
            }
        };
        call.note(|n| n.items = req.recipes.len() as u64);
        let recipes: Vec<&str> = req.recipes.iter().map(String::as_str).collect();
        let fields: Vec<&str> = req.clk_fields.iter().map(String::as_str).collect();
        let new = NewProject::generate(
            &req.project,
            &recipes,
            &fields,
            self.inner.clock.now(),
            &mut rand::rng(),
        );
        let record = self.inner.store.create_project(new).await?;
        let policy = ProjectPolicy {
            mode,
            linkage_unit: req.linkage_unit.clone(),
        };
        self.inner.store.set_policy(&req.project, &policy).await?;
        call.note(|n| n.epoch = 1);
        Ok(v1::CreateProjectResponse {
            project: Some(project_view(&record, &policy)),
        })
    }

    async fn enrol_holder_inner(
        &self,
        req: &v1::EnrolHolderRequest,
        call: &Call<'_, Self>,
    ) -> Result<v1::EnrolHolderResponse, ServiceError> {
        project_name(&req.project)?;
        if !pki::is_valid_party(&req.party) {
            return Err(ServiceError::InvalidArgument(format!(
                "party {:?} is not a valid party name (1-64 characters of A-Z a-z 0-9 . _ -)",
                req.party
            )));
        }
        let quota = quota::evaluation_quota(req.declared_records, self.inner.settings.quota_slack)
            .map_err(|e| ServiceError::InvalidArgument(e.to_string()))?;
        call.note(|n| n.items = req.declared_records);
        let holder = self
            .inner
            .store
            .enrol_holder(HolderRecord {
                project: req.project.clone(),
                party: req.party.clone(),
                declared_records: req.declared_records,
                evaluation_quota: quota,
                enrolled_at: self.inner.clock.now(),
            })
            .await?;
        Ok(v1::EnrolHolderResponse {
            holder: Some(holder_view(&holder)),
        })
    }

    async fn rotate_inner(
        &self,
        req: &v1::RotateEpochRequest,
        call: &Call<'_, Self>,
    ) -> Result<v1::RotateEpochResponse, ServiceError> {
        project_name(&req.project)?;
        nonempty("recipe", &req.recipe)?;
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        rand::Rng::fill(&mut rand::rng(), &mut seed[..]);
        let outcome = self
            .inner
            .store
            .rotate_epoch(Rotation {
                project: req.project.clone(),
                recipe: req.recipe.clone(),
                seed,
                now: self.inner.clock.now(),
                activate_at: None,
            })
            .await?;
        self.forget_keys(&req.project, &req.recipe);
        call.note(|n| n.epoch = outcome.new.epoch);
        Ok(v1::RotateEpochResponse {
            previous_epoch: outcome.previous_epoch.unwrap_or(0),
            epoch: outcome.new.epoch,
            public_key: outcome.new.public_key.to_vec(),
        })
    }

    async fn revoke_inner(
        &self,
        req: &v1::RevokeEpochRequest,
    ) -> Result<v1::RevokeEpochResponse, ServiceError> {
        project_name(&req.project)?;
        nonempty("recipe", &req.recipe)?;
        nonzero_epoch("epoch", req.epoch)?;
        let record = self
            .inner
            .store
            .revoke_epoch(&req.project, &req.recipe, req.epoch, self.inner.clock.now())
            .await?;
        self.forget_keys(&req.project, &req.recipe);
        Ok(v1::RevokeEpochResponse {
            epoch: record.epoch,
            state: proto_state(record.state) as i32,
        })
    }

    async fn list_inner(
        &self,
        call: &Call<'_, Self>,
    ) -> Result<v1::ListProjectsResponse, ServiceError> {
        let records = self.inner.store.list_projects().await?;
        let mut projects = Vec::with_capacity(records.len());
        for r in &records {
            let policy = self.inner.store.policy(&r.name).await?;
            projects.push(project_view(r, &policy));
        }
        call.note(|n| n.items = projects.len() as u64);
        Ok(v1::ListProjectsResponse { projects })
    }

    // ---------------------------------------------------------------- holders

    async fn public_key_inner(
        &self,
        req: &v1::GetPublicKeyRequest,
        call: &Call<'_, Self>,
    ) -> Result<v1::GetPublicKeyResponse, ServiceError> {
        call.member(&req.project).await?;
        if let Some(e) = req.epoch {
            nonzero_epoch("epoch", e)?;
        }
        let record = self.epoch(&req.project, &req.recipe, req.epoch).await?;
        call.note(|n| n.epoch = record.epoch);
        Ok(v1::GetPublicKeyResponse {
            public_key: record.public_key.to_vec(),
            epoch: record.epoch,
            state: proto_state(record.state) as i32,
        })
    }

    async fn evaluate_inner(
        &self,
        req: v1::EvaluateBatchRequest,
        call: &Call<'_, Self>,
    ) -> Result<v1::EvaluateBatchResponse, ServiceError> {
        let n = req.blinded_elements.len();
        let who = call.who();
        let policy = call.member(&req.project).await?;
        let (mode, blinded) = evaluate_request(&req, self.inner.settings.max_batch)?;
        if mode != policy.mode {
            return Err(ServiceError::FailedPrecondition(format!(
                "project {:?} evaluates in {} mode; this batch asked for {}",
                req.project,
                proto_mode(policy.mode).as_str_name(),
                proto_mode(mode).as_str_name()
            )));
        }
        let record = self
            .epoch(&req.project, &req.recipe, Some(req.epoch))
            .await?;
        if !record.state.can_evaluate() {
            let active = match self
                .inner
                .store
                .get_epoch(&req.project, &req.recipe, None)
                .await
            {
                Ok(a) => format!("the active epoch is {}", a.epoch),
                Err(_) => "the recipe has no active epoch".to_owned(),
            };
            return Err(ServiceError::FailedPrecondition(format!(
                "epoch {} of project {:?} recipe {:?} is {}, so it cannot evaluate; {active}",
                record.epoch, req.project, req.recipe, record.state
            )));
        }
        match self
            .inner
            .store
            .reserve_evaluations(&req.project, &who.party, &req.recipe, req.epoch, n as u64)
            .await
        {
            Ok(_) => {}
            Err(StoreError::QuotaExceeded {
                used,
                requested,
                quota,
                ..
            }) => {
                return Err(ServiceError::QuotaExhausted {
                    party: who.party.clone(),
                    project: req.project.clone(),
                    recipe: req.recipe.clone(),
                    epoch: req.epoch,
                    used,
                    quota,
                    requested,
                });
            }
            Err(e) => return Err(e.into()),
        }
        let key = self.key(&record).await?;
        let epoch = req.epoch;
        let response = tokio::task::spawn_blocking(move || evaluate(&key, mode, &blinded))
            .await
            .map_err(|e| ServiceError::Internal(format!("evaluation task failed: {e}")))??;
        Ok(v1::EvaluateBatchResponse { epoch, ..response })
    }

    async fn wrapped_clk_inner(
        &self,
        req: &v1::GetWrappedClkKeyRequest,
        call: &Call<'_, Self>,
    ) -> Result<v1::GetWrappedClkKeyResponse, ServiceError> {
        call.member(&req.project).await?;
        nonempty("field", &req.field)?;
        let key = self.inner.store.clk_key(&req.project, &req.field).await?;
        let wrapped = wrap::wrap(&req.holder_public_key, &req.project, &req.field, &key).map_err(
            |e| match e {
                WrapError::PublicKey(_) | WrapError::Encap => {
                    ServiceError::InvalidArgument(format!("holder_public_key: {e}"))
                }
                other => ServiceError::Internal(other.to_string()),
            },
        )?;
        Ok(v1::GetWrappedClkKeyResponse {
            algorithm: v1::WrapAlgorithm::HpkeX25519Sha256Chacha20poly1305 as i32,
            encapsulated_key: wrapped.encapsulated_key.to_vec(),
            ciphertext: wrapped.ciphertext,
        })
    }

    // ---------------------------------------------------------------- linkage unit

    async fn rekey_inner(
        &self,
        req: &v1::GetRekeyDeltaRequest,
        call: &Call<'_, Self>,
    ) -> Result<v1::GetRekeyDeltaResponse, ServiceError> {
        call.member(&req.project).await?;
        nonzero_epoch("from_epoch", req.from_epoch)?;
        nonzero_epoch("to_epoch", req.to_epoch)?;
        if req.from_epoch == req.to_epoch {
            return Err(ServiceError::InvalidArgument(
                "from_epoch and to_epoch are equal".to_owned(),
            ));
        }
        let mut keys = Vec::with_capacity(2);
        for epoch in [req.from_epoch, req.to_epoch] {
            let record = self.epoch(&req.project, &req.recipe, Some(epoch)).await?;
            if !record.state.can_rekey() {
                return Err(ServiceError::FailedPrecondition(format!(
                    "epoch {epoch} of project {:?} recipe {:?} is {}; deltas need active or retired epochs",
                    req.project, req.recipe, record.state
                )));
            }
            let sealed = self
                .inner
                .store
                .epoch_key(&req.project, &req.recipe, epoch)
                .await?;
            keys.push(sealed.secret_key()?);
        }
        let delta = RekeyDelta::between(&keys[0], &keys[1]);
        Ok(v1::GetRekeyDeltaResponse {
            delta: delta.to_bytes().to_vec(),
            from_epoch: req.from_epoch,
            to_epoch: req.to_epoch,
        })
    }

    // ---------------------------------------------------------------- auditors

    async fn head_inner(&self) -> Result<v1::AuditHead, ServiceError> {
        let head = self.inner.store.audit_head().await?;
        Ok(head.map_or(
            v1::AuditHead {
                sequence: 0,
                entry_hash: vec![0; 32],
            },
            |h| v1::AuditHead {
                sequence: h.sequence,
                entry_hash: h.entry_hash.to_vec(),
            },
        ))
    }

    /// Plans a ReadAuditLog: the sequence range `from..=last` it will stream.
    async fn read_audit_plan(
        &self,
        req: &v1::ReadAuditLogRequest,
        call: &Call<'_, Self>,
    ) -> Result<(u64, u64), ServiceError> {
        let from = req.from_sequence.max(1);
        let end = self
            .inner
            .store
            .audit_head()
            .await?
            .map_or(0, |h| h.sequence);
        let mut last = end;
        if req.limit > 0 {
            last = last.min(from.saturating_add(u64::from(req.limit)) - 1);
        }
        call.note(|n| n.items = (last + 1).saturating_sub(from));
        Ok((from, last))
    }
}

/// Checks an `EvaluateBatch` request on its own, before any store look-up beyond membership
/// (SPEC.md §8): a non-zero epoch, mode OPRF or VOPRF, 1 to `max` blinded elements, each a
/// valid non-identity ristretto255 encoding (32 bytes, RFC 9496). Returns the mode and the
/// decoded elements.
///
/// # Errors
/// [`ServiceError::InvalidArgument`] naming the first problem.
pub fn evaluate_request(
    req: &v1::EvaluateBatchRequest,
    max: usize,
) -> Result<(Mode, Vec<BlindedElement>), ServiceError> {
    nonzero_epoch("epoch", req.epoch)?;
    let mode = match v1::EvaluationMode::try_from(req.mode) {
        Ok(v1::EvaluationMode::Oprf) => Mode::Oprf,
        Ok(v1::EvaluationMode::Voprf) => Mode::Voprf,
        _ => {
            return Err(ServiceError::InvalidArgument(
                "mode must be EVALUATION_MODE_OPRF or EVALUATION_MODE_VOPRF".to_owned(),
            ));
        }
    };
    let n = req.blinded_elements.len();
    if n == 0 || n > max {
        return Err(ServiceError::InvalidArgument(format!(
            "batch has {n} blinded elements; send between 1 and {max}"
        )));
    }
    let mut blinded = Vec::with_capacity(n);
    for (i, b) in req.blinded_elements.iter().enumerate() {
        blinded.push(BlindedElement::from_bytes(b).map_err(|_| {
            ServiceError::InvalidArgument(format!(
                "blinded element {i} is not a valid non-identity ristretto255 element (32 bytes, RFC 9496 encoding)"
            ))
        })?);
    }
    Ok((mode, blinded))
}

/// The CPU part of EvaluateBatch.
fn evaluate(
    key: &CachedKey,
    mode: Mode,
    blinded: &[BlindedElement],
) -> Result<v1::EvaluateBatchResponse, ServiceError> {
    let (evaluated, proof) = if mode == Mode::Voprf {
        let batch = key
            .voprf
            .blind_evaluate_batch(blinded, &mut rand::rng())
            .map_err(|e| ServiceError::InvalidArgument(e.to_string()))?;
        (batch.evaluated, Some(batch.proof.to_bytes().to_vec()))
    } else {
        (key.oprf.blind_evaluate_batch(blinded), None)
    };
    Ok(v1::EvaluateBatchResponse {
        evaluated_elements: evaluated.iter().map(|e| e.to_bytes().to_vec()).collect(),
        proof,
        epoch: 0,
    })
}

impl<S: CustodianStore + PolicyStore + 'static> RpcService for CustodianService<S> {
    type Method = Rpc;
    type Member = ProjectPolicy;

    fn clock(&self) -> &dyn Clock {
        &*self.inner.clock
    }

    async fn append_audit(&self, event: AuditEvent) -> Result<(), String> {
        self.inner
            .store
            .append_audit(event)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Check 2 (SPEC.md §8.3): an enrolled holder, or the project's named linkage unit;
    /// yields the project's policy.
    async fn check_member(
        &self,
        rpc: Rpc,
        who: &PeerIdentity,
        project: &str,
    ) -> Result<ProjectPolicy, ServiceError> {
        self.member_policy(rpc, who, project).await
    }
}

#[tonic::async_trait]
impl<S: CustodianStore + PolicyStore + 'static> KeyCustodian for CustodianService<S> {
    async fn create_project(
        &self,
        request: Request<v1::CreateProjectRequest>,
    ) -> Result<Response<v1::CreateProjectResponse>, Status> {
        let note = AuditNote::project(&request.get_ref().project);
        renketsu_rpc::handle(
            self,
            Rpc::CreateProject,
            request,
            note,
            |call, req| async move { self.create_project_inner(&req, &call).await },
        )
        .await
        .map(Response::new)
    }

    async fn enrol_holder(
        &self,
        request: Request<v1::EnrolHolderRequest>,
    ) -> Result<Response<v1::EnrolHolderResponse>, Status> {
        let note = AuditNote::project(&request.get_ref().project);
        renketsu_rpc::handle(
            self,
            Rpc::EnrolHolder,
            request,
            note,
            |call, req| async move { self.enrol_holder_inner(&req, &call).await },
        )
        .await
        .map(Response::new)
    }

    async fn rotate_epoch(
        &self,
        request: Request<v1::RotateEpochRequest>,
    ) -> Result<Response<v1::RotateEpochResponse>, Status> {
        let r = request.get_ref();
        let note = AuditNote::project(&r.project).with_detail(&r.recipe);
        renketsu_rpc::handle(
            self,
            Rpc::RotateEpoch,
            request,
            note,
            |call, req| async move { self.rotate_inner(&req, &call).await },
        )
        .await
        .map(Response::new)
    }

    async fn revoke_epoch(
        &self,
        request: Request<v1::RevokeEpochRequest>,
    ) -> Result<Response<v1::RevokeEpochResponse>, Status> {
        let r = request.get_ref();
        let note = AuditNote::project(&r.project)
            .with_detail(&r.recipe)
            .with_epoch(r.epoch);
        renketsu_rpc::handle(self, Rpc::RevokeEpoch, request, note, |_, req| async move {
            self.revoke_inner(&req).await
        })
        .await
        .map(Response::new)
    }

    async fn list_projects(
        &self,
        request: Request<v1::ListProjectsRequest>,
    ) -> Result<Response<v1::ListProjectsResponse>, Status> {
        let note = AuditNote::default();
        renketsu_rpc::handle(
            self,
            Rpc::ListProjects,
            request,
            note,
            |call, _| async move { self.list_inner(&call).await },
        )
        .await
        .map(Response::new)
    }

    async fn get_public_key(
        &self,
        request: Request<v1::GetPublicKeyRequest>,
    ) -> Result<Response<v1::GetPublicKeyResponse>, Status> {
        let r = request.get_ref();
        let note = AuditNote::project(&r.project)
            .with_detail(&r.recipe)
            .with_epoch(r.epoch.unwrap_or(0));
        renketsu_rpc::handle(
            self,
            Rpc::GetPublicKey,
            request,
            note,
            |call, req| async move { self.public_key_inner(&req, &call).await },
        )
        .await
        .map(Response::new)
    }

    async fn evaluate_batch(
        &self,
        request: Request<v1::EvaluateBatchRequest>,
    ) -> Result<Response<v1::EvaluateBatchResponse>, Status> {
        let r = request.get_ref();
        let note = AuditNote::project(&r.project)
            .with_detail(&r.recipe)
            .with_epoch(r.epoch)
            .with_items(r.blinded_elements.len() as u64);
        renketsu_rpc::handle(
            self,
            Rpc::EvaluateBatch,
            request,
            note,
            |call, req| async move { self.evaluate_inner(req, &call).await },
        )
        .await
        .map(Response::new)
    }

    async fn get_wrapped_clk_key(
        &self,
        request: Request<v1::GetWrappedClkKeyRequest>,
    ) -> Result<Response<v1::GetWrappedClkKeyResponse>, Status> {
        let r = request.get_ref();
        // The field name goes where a recipe would: it says which key left the custodian.
        let note = AuditNote::project(&r.project).with_detail(&r.field);
        renketsu_rpc::handle(
            self,
            Rpc::GetWrappedClkKey,
            request,
            note,
            |call, req| async move {
                let wrapped = self.wrapped_clk_inner(&req, &call).await?;
                call.note(|n| n.items = 1);
                Ok(wrapped)
            },
        )
        .await
        .map(Response::new)
    }

    async fn get_rekey_delta(
        &self,
        request: Request<v1::GetRekeyDeltaRequest>,
    ) -> Result<Response<v1::GetRekeyDeltaResponse>, Status> {
        let r = request.get_ref();
        // The epoch recorded is the target; the source is in the response only.
        let note = AuditNote::project(&r.project)
            .with_detail(&r.recipe)
            .with_epoch(r.to_epoch);
        renketsu_rpc::handle(
            self,
            Rpc::GetRekeyDelta,
            request,
            note,
            |call, req| async move { self.rekey_inner(&req, &call).await },
        )
        .await
        .map(Response::new)
    }

    type ReadAuditLogStream = AuditStream;

    async fn read_audit_log(
        &self,
        request: Request<v1::ReadAuditLogRequest>,
    ) -> Result<Response<Self::ReadAuditLogStream>, Status> {
        let note = AuditNote::default();
        // The entry of this call is written before the range is streamed.
        let (from, last) = renketsu_rpc::handle(
            self,
            Rpc::ReadAuditLog,
            request,
            note,
            |call, req| async move { self.read_audit_plan(&req, &call).await },
        )
        .await?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let this = self.clone();
        tokio::spawn(async move {
            let mut next = from;
            while next <= last {
                let want = (last - next + 1).min(AUDIT_PAGE);
                match this.inner.store.read_audit(next, want).await {
                    Ok(page) if page.is_empty() => break,
                    Ok(page) => {
                        for e in &page {
                            if e.sequence > last {
                                return;
                            }
                            if tx
                                .send(Ok(renketsu_rpc::call::audit_entry_to_wire(e)))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        next = page.last().map_or(last + 1, |e| e.sequence + 1);
                    }
                    Err(e) => {
                        let status: Status =
                            ServiceError::Internal(format!("reading the audit log: {e}")).into();
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn get_audit_head(
        &self,
        request: Request<v1::GetAuditHeadRequest>,
    ) -> Result<Response<v1::AuditHead>, Status> {
        renketsu_rpc::handle(
            self,
            Rpc::GetAuditHead,
            request,
            AuditNote::default(),
            |_, _| async move { self.head_inner().await },
        )
        .await
        .map(Response::new)
    }
}
