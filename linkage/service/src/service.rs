//! The gRPC service `renketsu.v1.LinkageUnit` (SPEC.md §10).
//!
//! Every handler is a closure run by `renketsu_rpc::handle`: identity from the client
//! certificate, role check, the project check for project-scoped RPCs ([`Call::member`], this
//! service's rule in [`RpcService::check_member`]), then one audit entry with the status the
//! call ends with (refused calls included). The handlers here do validation and the work. The linkage unit holds no key: it never calls the custodian for anything
//! but re-keying deltas (`RekeyTokens`), which the custodian gives to the linkage-unit role
//! only, and it only ever sees tokens and content sealed to the researcher.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use renketsu_keys::audit::AuditEvent;
use renketsu_linkage::Schema;
use renketsu_protocol::v1;
use renketsu_protocol::v1::linkage_unit_server::LinkageUnit;
use renketsu_rpc::call::AuditNote;
use renketsu_rpc::{Call, Clock, PeerIdentity, Role, RpcService, ServiceError};
use sha2::{Digest as _, Sha256};
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{self, Rpc};
use crate::batches::{Batch, BatchKind, MergedState};
use crate::job::{self, JobInput, TokenUpload};
use crate::members::{PSEUDONYM_BYTES, pseudonym_hex};
use crate::store::{
    CrosswalkRow, JobRow, LuStore, ProjectRow, PseudonymChanges, StoreError, UploadRow, job_state,
    upload_kind,
};
use crate::validate;
use renketsu_keys::content_file;
use renketsu_linkage::persist::{Assignment, EventKind, Issued, Previous};

/// Largest chunk accepted (bytes).
pub const MAX_CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// Mapping rows per streamed message.
const MAPPING_PAGE: u32 = 10_000;
/// Clusters per release message.
const RELEASE_PAGE: usize = 1_000;
/// Audit entries per page read.
const AUDIT_PAGE: u32 = 1_000;
/// The party name the linkage unit records its own actions under (opt-out exclusions).
pub const SELF_PARTY: &str = "linkage-unit";

/// How long an incomplete upload is kept (from its first chunk) before it is deleted.
pub const DEFAULT_UPLOAD_EXPIRY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// Bytes of incomplete uploads one holder may have at a time (all projects), and the largest
/// single upload.
pub const DEFAULT_UPLOAD_CAP_BYTES: u64 = 16 << 30;

/// Settings of the service.
#[derive(Clone, Debug)]
pub struct LuSettings {
    /// How to reach the custodian for re-keying deltas (with the linkage unit's own client
    /// certificate); `None`: `RekeyTokens` is refused with FAILED_PRECONDITION.
    pub custodian: Option<renketsu_rpc::tls::ConnectConfig>,
    /// Fault-injection pause after each stored chunk and at each job stage, so that tests can
    /// kill the process mid-upload and mid-job (`renketsu lu serve` reads it from
    /// `RENKETSU_LU_TEST_PAUSE_MS`). `None` in production.
    pub test_pause: Option<std::time::Duration>,
    /// Incomplete uploads older than this (from registration) are deleted, with their chunks.
    pub upload_expiry: std::time::Duration,
    /// Most bytes of incomplete uploads per holder (all projects together); also the largest
    /// single upload.
    pub upload_cap_bytes: u64,
    /// Fewest clusters (not excluded by opt-outs) a job must have before any holder gets its
    /// mapping or the researcher the release (SPEC.md §10.5); default
    /// [`validate::DEFAULT_MIN_RELEASE_CLUSTERS`] (10).
    pub min_release_clusters: u64,
}

impl Default for LuSettings {
    fn default() -> Self {
        Self {
            custodian: None,
            test_pause: None,
            upload_expiry: DEFAULT_UPLOAD_EXPIRY,
            upload_cap_bytes: DEFAULT_UPLOAD_CAP_BYTES,
            min_release_clusters: validate::DEFAULT_MIN_RELEASE_CLUSTERS,
        }
    }
}

struct Inner {
    store: LuStore,
    clock: Arc<dyn Clock>,
    settings: LuSettings,
    cancels: Mutex<HashMap<(String, u64), Arc<AtomicBool>>>,
}

/// The linkage-unit service. Cheap to clone.
#[derive(Clone)]
pub struct LinkageUnitService {
    inner: Arc<Inner>,
}

fn kind_name(kind: i32) -> &'static str {
    match v1::UploadKind::try_from(kind) {
        Ok(v1::UploadKind::Tokens) => "tokens",
        Ok(v1::UploadKind::Content) => "content",
        Ok(v1::UploadKind::OptOut) => "opt-out",
        Ok(v1::UploadKind::TokenBatch) => "token batch",
        Ok(v1::UploadKind::Deletions) => "deletion batch",
        _ => "unknown",
    }
}

fn upload_view(u: &UploadRow, stored: Vec<u32>, now: u32) -> v1::UploadStatus {
    v1::UploadStatus {
        project: u.project.clone(),
        party: u.party.clone(),
        kind: u.kind,
        upload_id: u.upload_id.clone(),
        total_chunks: u.total_chunks,
        stored_chunks: stored,
        // A superseded upload is not complete as far as the holder is concerned: sending it
        // again makes it current again (its chunks were dropped, so they are sent again).
        complete: u.complete && !u.superseded,
        records: u.records,
        chunks_stored_now: now,
        batch_seq: u.batch_seq,
    }
}

fn job_view(j: &JobRow) -> v1::Job {
    v1::Job {
        project: j.project.clone(),
        job_id: j.job_id,
        state: j.state,
        stage: j.stage.clone(),
        progress: j.progress,
        error: j.error.clone(),
        started_unix_ms: j.started_unix_ms,
        finished_unix_ms: j.finished_unix_ms,
        records: j.records,
        clusters: j.clusters,
        excluded_clusters: j.excluded,
        links: j.links,
        mode: j.mode.clone(),
    }
}

/// What a job linked (stored with it when DONE, `lu_jobs.basis`): the next job compares it
/// with the current uploads to tell whether it can run incrementally and which batches are
/// new (SPEC.md §10.3.3).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct JobBasis {
    /// Hex SHA-256 of the schema.
    schema: String,
    /// Per holder, in project order.
    holders: Vec<HolderBasis>,
    /// The opt-out uploads, sorted.
    opt_outs: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct HolderBasis {
    party: String,
    /// The token upload (base).
    tokens: String,
    /// The last batch applied (`batch_seq`; 0: none).
    batch_seq: u64,
}

impl JobBasis {
    /// Why a job on `self` cannot start from the clusters of a job on `previous` (stored
    /// text), or `None` if it can.
    fn obstacle(&self, previous: &str) -> Option<String> {
        let Ok(prev) = serde_json::from_str::<JobBasis>(previous) else {
            return Some("the previous job was made before incremental jobs".to_owned());
        };
        if prev.schema != self.schema || prev.holders.len() != self.holders.len() {
            return Some("the schema or the holders changed".to_owned());
        }
        for (a, b) in prev.holders.iter().zip(&self.holders) {
            if a.party != b.party || a.tokens != b.tokens {
                return Some(format!("holder {} sent a new token upload", b.party));
            }
            if a.batch_seq > b.batch_seq {
                return Some(format!("holder {}'s batches changed", b.party));
            }
        }
        if let Some(gone) = prev.opt_outs.iter().find(|o| !self.opt_outs.contains(o)) {
            return Some(format!("opt-out upload {} is gone", short_id(gone)));
        }
        None
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl LinkageUnitService {
    /// A service over `store`.
    pub fn new(store: LuStore, clock: Arc<dyn Clock>, settings: LuSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                clock,
                settings,
                cancels: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The store (tests, maintenance).
    pub fn store(&self) -> &LuStore {
        &self.inner.store
    }

    /// Deletes expired incomplete uploads, then restarts every job left RUNNING by a previous
    /// process (after a crash): each is run again from its uploads and writes its results
    /// once. Returns how many jobs.
    ///
    /// # Errors
    /// [`StoreError`] reading the jobs.
    pub async fn resume_jobs(&self) -> Result<usize, StoreError> {
        let expiry =
            i64::try_from(self.inner.settings.upload_expiry.as_millis()).unwrap_or(i64::MAX);
        self.inner
            .store
            .expire_uploads(self.now_ms().saturating_sub(expiry))
            .await?;
        let jobs = self.inner.store.running_jobs().await?;
        let n = jobs.len();
        for j in jobs {
            tracing::info!(project = %j.project, job = j.job_id, "resuming a job interrupted by a restart");
            self.spawn_job(j);
        }
        Ok(n)
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.inner.clock.now().as_unix_ms()
    }

    pub(crate) fn settings(&self) -> &LuSettings {
        &self.inner.settings
    }

    async fn member(
        &self,
        rpc: Rpc,
        who: &PeerIdentity,
        project: &str,
    ) -> Result<ProjectRow, ServiceError> {
        validate::project_name(project)?;
        let row = self.inner.store.project(project).await?;
        if who.role == Role::Admin {
            return row
                .ok_or_else(|| ServiceError::NotFound(format!("no linkage project {project:?}")));
        }
        auth::check_project(rpc, who, project, row.as_ref())?;
        Ok(row.expect("checked"))
    }

    fn spawn_job(&self, job: JobRow) {
        let cancel = Arc::new(AtomicBool::new(false));
        self.inner
            .cancels
            .lock()
            .expect("cancels lock")
            .insert((job.project.clone(), job.job_id), Arc::clone(&cancel));
        let this = self.clone();
        tokio::spawn(async move {
            let key = (job.project.clone(), job.job_id);
            let outcome = this.run_job(&job, &cancel).await;
            this.inner
                .cancels
                .lock()
                .expect("cancels lock")
                .remove(&key);
            let store = &this.inner.store;
            match outcome {
                Ok(()) => {}
                Err(ServiceError::FailedPrecondition(m)) if m == "cancelled" => {}
                Err(e) => {
                    tracing::warn!(project = %job.project, job = job.job_id, error = %e, "job failed");
                    let msg = match &e {
                        ServiceError::Internal(_) => {
                            "internal error; see the linkage unit's log".to_owned()
                        }
                        other => other.to_string(),
                    };
                    let _ = store
                        .end_job(
                            &job.project,
                            job.job_id,
                            job_state::FAILED,
                            &msg,
                            this.now_ms(),
                        )
                        .await;
                }
            }
            // Uploads superseded while the job read them were pinned until now.
            if let Err(e) = store.purge_superseded(&job.project).await {
                tracing::warn!(project = %job.project, error = %e, "cannot drop superseded uploads");
            }
            // Opt-outs that arrived while the job ran: run again.
            if let Ok(Some(p)) = store.project(&job.project).await
                && p.stale
                && let Ok(next) = store.start_job(&job.project, this.now_ms()).await
            {
                this.spawn_job(next);
            }
        });
    }

    async fn run_job(&self, job: &JobRow, cancel: &Arc<AtomicBool>) -> Result<(), ServiceError> {
        let store = &self.inner.store;
        let project = store.project(&job.project).await?.ok_or_else(|| {
            ServiceError::NotFound(format!("linkage project {:?} was deleted", job.project))
        })?;
        // Opt-outs arriving from now on make the project stale again (and re-run the job).
        store.set_stale(&project.name, false).await?;
        let schema = parse_schema(&project)?;
        let uploads = store.current_uploads(&project.name).await?;
        let mut holders = Vec::with_capacity(project.holders.len());
        // Time each holder's reader waited for the store (for the log).
        let mut waits = Vec::new();
        for h in &project.holders {
            let u = uploads
                .iter()
                .find(|u| &u.party == h && u.kind == v1::UploadKind::Tokens as i32)
                .ok_or_else(|| {
                    ServiceError::FailedPrecondition(format!(
                        "holder {h} has no complete token upload"
                    ))
                })?;
            let reader = store.upload_reader(&project.name, h, &u.upload_id);
            waits.push((h.clone(), reader.waited_nanos()));
            // Incremental uploads (SPEC.md §10.3.2): the token upload with the holder's
            // batches applied in order, read as one token file.
            let mut batches = Vec::new();
            let mut records = u.records;
            for b in uploads
                .iter()
                .filter(|b| &b.party == h && upload_kind::is_batch(b.kind))
            {
                let kind = if b.kind == upload_kind::TOKEN_BATCH {
                    records += b.records;
                    BatchKind::Records
                } else {
                    BatchKind::Deletions
                };
                batches.push((b.batch_seq, b.upload_id.clone(), kind));
            }
            batches.sort_by_key(|b| b.0);
            let input: Box<dyn std::io::BufRead + Send> = if batches.is_empty() {
                Box::new(reader)
            } else {
                let base_name = format!("upload {} of {h}", short_id(&u.upload_id));
                let batches = batches
                    .into_iter()
                    .map(|(seq, id, kind)| Batch {
                        kind,
                        name: format!("upload {} of {h} (batch {seq})", short_id(&id)),
                        input: Box::new(store.upload_reader(&project.name, h, &id)),
                    })
                    .collect();
                Box::new(MergedState::new(Box::new(reader), &base_name, batches))
            };
            holders.push(TokenUpload {
                party: h.clone(),
                upload_id: u.upload_id.clone(),
                records,
                input,
            });
        }
        // What this job links, and whether it can start from the previous job's clusters.
        let basis = JobBasis {
            schema: project.schema_digest.clone(),
            holders: holders
                .iter()
                .map(|t| HolderBasis {
                    party: t.party.clone(),
                    tokens: t.upload_id.clone(),
                    batch_seq: uploads
                        .iter()
                        .filter(|b| b.party == t.party && upload_kind::is_batch(b.kind))
                        .map(|b| b.batch_seq)
                        .max()
                        .unwrap_or(0),
                })
                .collect(),
            opt_outs: {
                let mut o: Vec<String> = uploads
                    .iter()
                    .filter(|u| u.kind == v1::UploadKind::OptOut as i32)
                    .map(|u| u.upload_id.clone())
                    .collect();
                o.sort();
                o
            },
        };
        let previous_job = store.latest_done_job(&project.name).await?;
        let obstacle = if job.mode == "full" {
            None
        } else if let Some(why) = crate::incremental::schema_obstacle(&schema) {
            Some(why)
        } else {
            match &previous_job {
                None => Some("no previous job".to_owned()),
                Some(prev) => basis.obstacle(&prev.basis),
            }
        };
        let incremental = job.mode != "full" && obstacle.is_none();
        // The batches applied since the previous job, per holder (incremental jobs only).
        let mut new_batches: Vec<Vec<Batch>> = Vec::new();
        if incremental {
            let prev: JobBasis = previous_job
                .as_ref()
                .and_then(|p| serde_json::from_str(&p.basis).ok())
                .unwrap_or_default();
            for (h, hb) in project.holders.iter().zip(&prev.holders) {
                let mut list: Vec<&UploadRow> = uploads
                    .iter()
                    .filter(|b| {
                        &b.party == h && upload_kind::is_batch(b.kind) && b.batch_seq > hb.batch_seq
                    })
                    .collect();
                list.sort_by_key(|b| b.batch_seq);
                new_batches.push(
                    list.into_iter()
                        .map(|b| Batch {
                            kind: if b.kind == upload_kind::TOKEN_BATCH {
                                BatchKind::Records
                            } else {
                                BatchKind::Deletions
                            },
                            name: format!(
                                "upload {} of {h} (batch {})",
                                short_id(&b.upload_id),
                                b.batch_seq
                            ),
                            input: Box::new(store.upload_reader(&project.name, h, &b.upload_id)),
                        })
                        .collect(),
                );
            }
        }
        let mut opt_outs = Vec::new();
        for u in uploads
            .iter()
            .filter(|u| u.kind == v1::UploadKind::OptOut as i32)
        {
            opt_outs.push(TokenUpload {
                party: u.party.clone(),
                upload_id: u.upload_id.clone(),
                records: u.records,
                input: Box::new(store.upload_reader(&project.name, &u.party, &u.upload_id)),
            });
        }
        let (ptx, mut prx) = tokio::sync::mpsc::unbounded_channel::<(String, f64)>();
        let progress_store = store.clone();
        let (pname, pjob) = (project.name.clone(), job.job_id);
        let progress_task = tokio::spawn(async move {
            while let Some((stage, f)) = prx.recv().await {
                let _ = progress_store.job_progress(&pname, pjob, &stage, f).await;
            }
        });
        // Persistent pseudonyms (SPEC.md §10.5.1): the previous DONE job's members and every
        // pseudonym issued so far.
        let t_previous = std::time::Instant::now();
        let mut previous = Previous::default();
        let mut legacy = Vec::new();
        for row in store.pseudonyms(&project.name).await? {
            previous.issued.insert(
                row.pseudonym,
                Issued {
                    born_job: row.born_job,
                    withdrawn: row.withdrawn_job != 0,
                },
            );
        }
        if let Some(prev) = previous_job {
            store
                .for_each_job_member(&project.name, prev.job_id, &project.holders, |h, id, p| {
                    // Pseudonyms of jobs made before the registry: born with that job.
                    if let std::collections::hash_map::Entry::Vacant(e) = previous.issued.entry(*p)
                    {
                        e.insert(Issued {
                            born_job: prev.job_id,
                            withdrawn: false,
                        });
                        legacy.push((pseudonym_hex(p), prev.job_id));
                    }
                    previous.members.insert(job::record_key(h, id), *p);
                })
                .await?;
        }
        let previous_s = t_previous.elapsed().as_secs_f64();
        let cancel2 = Arc::clone(cancel);
        let digest = project.schema_digest.clone();
        let name = project.name.clone();
        let pause = self.inner.settings.test_pause;
        let t_link = std::time::Instant::now();
        let requested_full = job.mode == "full";
        let out = tokio::task::spawn_blocking(move || {
            let progress = |s: &str, f: f64| {
                let _ = ptx.send((s.to_owned(), f));
                if let Some(p) = pause {
                    std::thread::sleep(p);
                }
            };
            if incremental {
                let input = crate::incremental::IncrementalInput {
                    project: &name,
                    schema: &schema,
                    schema_digest: &digest,
                    previous: &previous,
                    holders,
                    new_batches,
                    opt_outs,
                };
                return crate::incremental::run(input, &progress, &cancel2);
            }
            let input = JobInput {
                project: &name,
                schema: &schema,
                schema_digest: &digest,
                previous: &previous,
                holders,
                opt_outs,
            };
            let mut out = job::run(input, &progress, &cancel2)?;
            if !requested_full && let Some(why) = obstacle {
                out.mode = format!("full (incremental not possible: {why})");
            }
            Ok(out)
        })
        .await
        .map_err(|e| ServiceError::Internal(format!("job thread: {e}")))?;
        let _ = progress_task.await;
        let out = match out {
            Ok(o) => o,
            Err(job::JobError::Cancelled) => {
                return Err(ServiceError::FailedPrecondition("cancelled".to_owned()));
            }
            Err(e) => return Err(ServiceError::FailedPrecondition(e.to_string())),
        };
        let done = JobRow {
            records: out.records,
            clusters: out.clusters,
            excluded: out.excluded,
            links: out.links,
            mode: out.mode.clone(),
            basis: serde_json::to_string(&basis).expect("JSON serializes"),
            ..job.clone()
        };
        let link_s = t_link.elapsed().as_secs_f64();
        let t_store = std::time::Instant::now();
        let report = out.quality.as_ref().map(|q| {
            (
                q.summary_json.as_str(),
                q.report_html.as_str(),
                q.weakest_links.as_slice(),
            )
        });
        let changes = pseudonym_changes(&out.assignment, legacy, job.job_id);
        if !store
            .finish_job_with(&done, &out.chunks, report, &changes, self.now_ms())
            .await?
        {
            return Ok(()); // cancelled meanwhile
        }
        let store_s = t_store.elapsed().as_secs_f64();
        let mut stages: Vec<String> = out
            .stage_seconds
            .iter()
            .map(|(s, t)| format!("{s} {t:.2} s"))
            .collect();
        for (h, w) in &waits {
            let w = w.load(Ordering::Relaxed) as f64 / 1e9;
            stages.push(format!("waiting for {h}'s upload {w:.2} s"));
        }
        tracing::info!(project = %job.project, job = job.job_id, mode = %out.mode, previous_s, records = out.records, clusters = out.clusters, excluded = out.excluded, link_s, store_s, stages = %stages.join(", "), "job done");
        // Releases made before an opt-out that contained a now-excluded cluster (SPEC §10.5).
        if out.excluded > 0 {
            let excluded = store.excluded_pseudonyms(&job.project, job.job_id).await?;
            for (release, n) in store.releases_containing(&job.project, &excluded).await? {
                // The linkage unit's own action, not an RPC: audited directly.
                let event = AuditEvent {
                    unix_time_ms: self.now_ms(),
                    actor_party: SELF_PARTY.to_owned(),
                    role: v1::Role::LinkageUnit as i32,
                    rpc: format!("{}OptOutExclusion", auth::SERVICE_PATH),
                    project: job.project.clone(),
                    recipe: format!(
                        "opt-out: release {release} contained excluded clusters (job {})",
                        job.job_id
                    ),
                    epoch: 0,
                    item_count: n,
                    status_code: tonic::Code::Ok as u32,
                };
                store.audit_append(event).await.map_err(|e| {
                    ServiceError::Internal(format!("cannot append to the audit log: {e}"))
                })?;
            }
        }
        Ok(())
    }

    /// The crosswalk events a researcher is shown: those naming a pseudonym that was in one
    /// of the project's releases up to `up_to_release` or is in `releasing` (the release being
    /// made). Events only about pseudonyms never released (a person who opted out before any
    /// release) are left out (SPEC.md §10.5.1).
    async fn researcher_events(
        &self,
        project: &str,
        events: Vec<CrosswalkRow>,
        up_to_release: u64,
        releasing: &HashSet<&str>,
    ) -> Result<Vec<v1::CrosswalkEvent>, ServiceError> {
        let mut named: Vec<&str> = events
            .iter()
            .flat_map(|e| [e.old.as_str(), e.new.as_str()])
            .filter(|p| !p.is_empty() && !releasing.contains(p))
            .collect();
        named.sort_unstable();
        named.dedup();
        let released = self
            .inner
            .store
            .released_among(project, up_to_release, &named)
            .await?;
        let shown = |p: &str| releasing.contains(p) || released.contains(p);
        Ok(events
            .iter()
            .filter(|e| shown(&e.old) || shown(&e.new))
            .map(|e| v1::CrosswalkEvent {
                job_id: e.job_id,
                kind: e.kind.clone(),
                old_pseudonym: e.old.clone(),
                new_pseudonym: e.new.clone(),
            })
            .collect())
    }

    async fn project_view(
        &self,
        p: &ProjectRow,
        who: &PeerIdentity,
    ) -> Result<v1::LinkageProject, ServiceError> {
        let uploads = match who.role {
            Role::Admin => self.inner.store.current_uploads(&p.name).await?,
            Role::DataHolder => self
                .inner
                .store
                .current_uploads(&p.name)
                .await?
                .into_iter()
                .filter(|u| u.party == who.party)
                .collect(),
            _ => Vec::new(),
        };
        let latest_job = if who.role == Role::Admin {
            self.inner
                .store
                .job(&p.name, 0)
                .await?
                .as_ref()
                .map(job_view)
        } else {
            None
        };
        Ok(v1::LinkageProject {
            project: p.name.clone(),
            holders: p.holders.clone(),
            researcher: p.researcher.clone(),
            researcher_public_key: p.researcher_public_key.clone(),
            schema_toml: p.schema_toml.clone(),
            schema_digest: p.schema_digest.clone(),
            created_unix_ms: p.created_unix_ms,
            uploads: uploads
                .iter()
                .map(|u| upload_view(u, Vec::new(), 0))
                .collect(),
            latest_job,
            duplicates: p.duplicates.clone(),
        })
    }

    async fn create_inner(
        &self,
        req: v1::CreateLinkageProjectRequest,
    ) -> Result<v1::LinkageProject, ServiceError> {
        validate::create_request(&req)?;
        let mut salt = vec![0u8; 32];
        rand::fill(salt.as_mut_slice());
        let row = ProjectRow {
            name: req.project.clone(),
            holders: req.holders,
            researcher: req.researcher,
            researcher_public_key: req.researcher_public_key,
            schema_digest: hex::encode(Sha256::digest(&req.schema_toml)),
            schema_toml: req.schema_toml,
            duplicates: req.duplicates,
            pid_salt: salt,
            stale: false,
            created_unix_ms: self.now_ms(),
        };
        self.inner.store.create_project(&row).await?;
        Ok(v1::LinkageProject {
            project: row.name.clone(),
            holders: row.holders.clone(),
            researcher: row.researcher.clone(),
            researcher_public_key: row.researcher_public_key.clone(),
            schema_digest: row.schema_digest.clone(),
            schema_toml: row.schema_toml.clone(),
            created_unix_ms: row.created_unix_ms,
            uploads: Vec::new(),
            latest_job: None,
            duplicates: row.duplicates.clone(),
        })
    }

    async fn upload_inner(
        &self,
        call: &Call<'_, Self>,
        mut stream: Streaming<v1::UploadChunk>,
    ) -> Result<v1::UploadStatus, ServiceError> {
        let who = call.who();
        let mut current: Option<(ProjectRow, UploadRow)> = None;
        // Chunk 0 is stored (before this stream, or checked and stored in it).
        let mut has_first = false;
        let mut stored_now = 0u32;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|s| {
                ServiceError::InvalidArgument(format!("upload stream: {}", s.message()))
            })?;
            if current.is_none() {
                let (p, u, first) = self.begin_upload(call, &chunk).await?;
                has_first = first;
                current = Some((p, u));
            }
            let (p, u) = current.as_ref().expect("set above");
            if (
                chunk.project.as_str(),
                chunk.upload_id.as_str(),
                chunk.kind,
                chunk.total_chunks,
                chunk.total_bytes,
            ) != (
                p.name.as_str(),
                u.upload_id.as_str(),
                u.kind,
                u.total_chunks,
                u.total_bytes,
            ) {
                return Err(ServiceError::InvalidArgument(
                    "every chunk of one stream names the same upload".to_owned(),
                ));
            }
            if chunk.index >= u.total_chunks {
                return Err(ServiceError::InvalidArgument(format!(
                    "chunk index {} of {} chunks",
                    chunk.index, u.total_chunks
                )));
            }
            if chunk.data.len() > MAX_CHUNK_BYTES {
                return Err(ServiceError::InvalidArgument(format!(
                    "a chunk holds at most {MAX_CHUNK_BYTES} bytes"
                )));
            }
            if Sha256::digest(&chunk.data).as_slice() != chunk.sha256.as_slice() {
                return Err(ServiceError::InvalidArgument(format!(
                    "chunk {}: SHA-256 does not match its data",
                    chunk.index
                )));
            }
            if u.complete {
                continue; // the whole upload is stored already
            }
            if chunk.index == 0 && !has_first {
                validate::first_chunk(u.kind, &chunk.data)?;
            } else if !has_first {
                return Err(ServiceError::InvalidArgument(
                    "chunk 0 first: the linkage unit checks how a file starts before it stores any of it".to_owned(),
                ));
            }
            if self
                .inner
                .store
                .put_chunk(
                    &p.name,
                    &who.party,
                    &u.upload_id,
                    chunk.index,
                    &chunk.sha256,
                    &chunk.data,
                )
                .await?
            {
                stored_now += 1;
                if let Some(p) = self.inner.settings.test_pause {
                    tokio::time::sleep(p).await;
                }
            }
            has_first |= chunk.index == 0;
        }
        let (p, u) = current.ok_or_else(|| {
            ServiceError::InvalidArgument("an upload stream without chunks".to_owned())
        })?;
        call.note(|n| n.items = u64::from(stored_now));
        let store = &self.inner.store;
        let stored = store
            .stored_chunks(&p.name, &who.party, &u.upload_id)
            .await?;
        let mut u = store
            .upload(&p.name, &who.party, &u.upload_id)
            .await?
            .unwrap_or(u);
        if !u.complete && stored.len() as u32 == u.total_chunks {
            let records = match self.check_stored_upload(&p, who, &u).await {
                Ok(records) => records,
                Err(e) => {
                    // What is refused is not kept: the upload and its chunks go now.
                    store
                        .delete_upload(&p.name, &who.party, &u.upload_id)
                        .await?;
                    call.note(|n| n.detail.push_str(": refused and deleted"));
                    return Err(e);
                }
            };
            let opt_out = u.kind == v1::UploadKind::OptOut as i32;
            store
                .complete_upload(&u, records, opt_out || upload_kind::is_batch(u.kind))
                .await?;
            u = store
                .upload(&p.name, &who.party, &u.upload_id)
                .await?
                .ok_or_else(|| ServiceError::Internal("a completed upload vanished".to_owned()))?;
            if opt_out {
                // Exclude the opted-out clusters from every later mapping and release: re-run.
                store.set_stale(&p.name, true).await?;
                if store.latest_done_job(&p.name).await?.is_some() {
                    match store.start_job(&p.name, self.now_ms()).await {
                        Ok(j) => self.spawn_job(j),
                        Err(StoreError::JobRunning { .. }) => {} // re-runs when it ends
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok(upload_view(&u, stored, stored_now))
    }

    /// The first chunk message of an upload stream: project membership, the upload's shape,
    /// expiry of old incomplete uploads, the holder's cap, then the upload registered (or
    /// found). Returns the project, the upload and whether its chunk 0 is stored already.
    /// Nothing is stored for a refused request.
    async fn begin_upload(
        &self,
        call: &Call<'_, Self>,
        chunk: &v1::UploadChunk,
    ) -> Result<(ProjectRow, UploadRow, bool), ServiceError> {
        let who = call.who();
        let p = call.member(&chunk.project).await?;
        let settings = &self.inner.settings;
        validate::upload_shape(
            chunk.kind,
            &chunk.upload_id,
            chunk.total_chunks,
            chunk.total_bytes,
            MAX_CHUNK_BYTES,
            settings.upload_cap_bytes,
        )?;
        call.note(|n| {
            n.detail = format!(
                "{} upload {}",
                kind_name(chunk.kind),
                &chunk.upload_id[..12]
            );
        });
        let store = &self.inner.store;
        let expiry = i64::try_from(settings.upload_expiry.as_millis()).unwrap_or(i64::MAX);
        store
            .expire_uploads(self.now_ms().saturating_sub(expiry))
            .await?;
        let known = store.upload(&p.name, &who.party, &chunk.upload_id).await?;
        if known.is_none() {
            let pending = store.incomplete_bytes(&who.party, &chunk.upload_id).await?;
            if pending.saturating_add(chunk.total_bytes) > settings.upload_cap_bytes {
                return Err(ServiceError::ResourceExhausted(format!(
                    "{} has {pending} bytes of incomplete uploads; with this one ({} bytes) that is over the cap of {} bytes: finish or wait for them to expire",
                    who.party, chunk.total_bytes, settings.upload_cap_bytes
                )));
            }
            if chunk.index != 0 {
                return Err(ServiceError::InvalidArgument(
                    "a new upload starts with chunk 0".to_owned(),
                ));
            }
            // A raw file sent by mistake is refused before it is registered.
            validate::first_chunk(chunk.kind, &chunk.data)?;
        }
        let u = UploadRow {
            project: p.name.clone(),
            party: who.party.clone(),
            upload_id: chunk.upload_id.clone(),
            kind: chunk.kind,
            total_chunks: chunk.total_chunks,
            total_bytes: chunk.total_bytes,
            complete: false,
            superseded: false,
            records: 0,
            batch_seq: 0,
        };
        let u = store.begin_upload(&u, self.now_ms()).await?;
        let first = store
            .stored_chunks(&p.name, &who.party, &u.upload_id)
            .await?
            .first()
            == Some(&0);
        Ok((p, u, first))
    }

    /// Reads a stored upload whose chunks are all in, once, on a blocking thread (never held
    /// whole): it must make the file named by its id, and pass [`validate::upload_file`].
    /// Returns its record count.
    async fn check_stored_upload(
        &self,
        p: &ProjectRow,
        who: &PeerIdentity,
        u: &UploadRow,
    ) -> Result<u64, ServiceError> {
        let mut reader = self
            .inner
            .store
            .upload_reader(&p.name, &who.party, &u.upload_id)
            .hashing();
        let (pc, whoc, kind) = (p.clone(), who.clone(), u.kind);
        let (checked, size, digest) = tokio::task::spawn_blocking(move || {
            let checked = validate::upload_file(&pc, &whoc, kind, &mut reader);
            let (size, digest) = reader.finish()?;
            Ok::<_, std::io::Error>((checked, size, digest))
        })
        .await
        .map_err(|e| ServiceError::Internal(format!("upload check thread: {e}")))?
        .map_err(|e| ServiceError::Internal(format!("reading the stored upload: {e}")))?;
        if size != u.total_bytes || hex::encode(digest) != u.upload_id {
            return Err(ServiceError::InvalidArgument(
                "the stored chunks do not make the file named by upload_id (size or SHA-256 differ)".to_owned(),
            ));
        }
        checked
    }

    async fn latest_job_for_output(&self, p: &ProjectRow) -> Result<JobRow, ServiceError> {
        if p.stale {
            return Err(ServiceError::FailedPrecondition(format!(
                "opt-outs arrived after the latest job of {:?}; a new job is running — retry when it is done",
                p.name
            )));
        }
        self.inner
            .store
            .latest_done_job(&p.name)
            .await?
            .ok_or_else(|| {
                ServiceError::FailedPrecondition(format!(
                    "project {:?} has no completed job yet",
                    p.name
                ))
            })
    }
}

/// The first 12 hex digits of an upload id (for messages).
fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// What a delta release is against (SPEC.md §10.5.2).
struct Delta {
    since_release: u64,
    /// The earlier release's pseudonyms and digests.
    before: HashMap<String, String>,
    withdrawn: Vec<String>,
    removed: Vec<String>,
    crosswalk: Vec<v1::CrosswalkEvent>,
}

/// The digest recorded per released pseudonym: SHA-256 of its sealed records (holder index
/// and bytes, sorted) and its weakest link, so that a later release sends it again only if
/// any of these changed.
fn cluster_digest(c: &v1::ReleasedCluster) -> String {
    let mut records: Vec<(u32, &[u8])> = c
        .records
        .iter()
        .map(|r| (r.holder, r.sealed.as_slice()))
        .collect();
    records.sort_unstable();
    let mut h = Sha256::new();
    h.update(b"renketsu/release-cluster/v1");
    for (holder, sealed) in records {
        h.update(holder.to_be_bytes());
        h.update((sealed.len() as u64).to_be_bytes());
        h.update(sealed);
    }
    if let Some(p) = c.weakest_link_probability {
        h.update(p.to_bits().to_be_bytes());
    }
    hex::encode(h.finalize())
}

/// What a job's assignment changes in the store: fresh (and legacy) pseudonyms registered,
/// retired and withdrawn ones marked, the events in order.
fn pseudonym_changes(
    a: &Assignment,
    mut registered: Vec<(String, u64)>,
    job_id: u64,
) -> PseudonymChanges {
    registered.extend(a.born.iter().map(|p| (pseudonym_hex(p), job_id)));
    let hex_of =
        |p: &Option<[u8; PSEUDONYM_BYTES]>| p.as_ref().map(pseudonym_hex).unwrap_or_default();
    let mut changes = PseudonymChanges {
        registered,
        ..PseudonymChanges::default()
    };
    for e in &a.events {
        match e.kind {
            EventKind::Merge | EventKind::Retire => changes.retired.push(hex_of(&e.old)),
            EventKind::Withdraw => changes.withdrawn.push(hex_of(&e.old)),
            EventKind::New | EventKind::Split => {}
        }
        changes.events.push(CrosswalkRow {
            job_id,
            kind: e.kind.as_str().to_owned(),
            old: hex_of(&e.old),
            new: hex_of(&e.new),
        });
    }
    changes
}

fn parse_schema(p: &ProjectRow) -> Result<Schema, ServiceError> {
    let text = std::str::from_utf8(&p.schema_toml)
        .map_err(|_| ServiceError::Internal("stored schema is not UTF-8".to_owned()))?;
    Schema::from_toml(text).map_err(|e| ServiceError::Internal(format!("stored schema: {e}")))
}

impl RpcService for LinkageUnitService {
    type Method = Rpc;
    type Member = ProjectRow;

    fn clock(&self) -> &dyn Clock {
        &*self.inner.clock
    }

    async fn append_audit(&self, event: AuditEvent) -> Result<(), String> {
        self.inner
            .store
            .audit_append(event)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Check 2 (SPEC.md §10.2): a holder of the project, or its researcher; an admin may act
    /// on every project but gets NOT_FOUND for one that does not exist.
    async fn check_member(
        &self,
        rpc: Rpc,
        who: &PeerIdentity,
        project: &str,
    ) -> Result<ProjectRow, ServiceError> {
        self.member(rpc, who, project).await
    }
}

#[tonic::async_trait]
impl LinkageUnit for LinkageUnitService {
    async fn create_linkage_project(
        &self,
        request: Request<v1::CreateLinkageProjectRequest>,
    ) -> Result<Response<v1::LinkageProject>, Status> {
        let note = AuditNote::project(&request.get_ref().project);
        renketsu_rpc::handle(
            self,
            Rpc::CreateLinkageProject,
            request,
            note,
            |_, req| async move { self.create_inner(req).await },
        )
        .await
        .map(Response::new)
    }

    async fn list_linkage_projects(
        &self,
        request: Request<v1::ListLinkageProjectsRequest>,
    ) -> Result<Response<v1::ListLinkageProjectsResponse>, Status> {
        let note = AuditNote::default();
        renketsu_rpc::handle(
            self,
            Rpc::ListLinkageProjects,
            request,
            note,
            |call, _| async move {
                let mut projects = Vec::new();
                for p in self.inner.store.projects().await? {
                    projects.push(self.project_view(&p, call.who()).await?);
                }
                call.note(|n| n.items = projects.len() as u64);
                Ok(v1::ListLinkageProjectsResponse { projects })
            },
        )
        .await
        .map(Response::new)
    }

    async fn delete_linkage_project(
        &self,
        request: Request<v1::DeleteLinkageProjectRequest>,
    ) -> Result<Response<v1::DeleteLinkageProjectResponse>, Status> {
        let note = AuditNote::project(&request.get_ref().project);
        renketsu_rpc::handle(
            self,
            Rpc::DeleteLinkageProject,
            request,
            note,
            |_, req| async move {
                validate::project_name(&req.project)?;
                for (k, c) in self.inner.cancels.lock().expect("cancels lock").iter() {
                    if k.0 == req.project {
                        c.store(true, Ordering::Relaxed);
                    }
                }
                self.inner.store.delete_project(&req.project).await?;
                Ok(v1::DeleteLinkageProjectResponse {})
            },
        )
        .await
        .map(Response::new)
    }

    async fn start_job(
        &self,
        request: Request<v1::StartJobRequest>,
    ) -> Result<Response<v1::Job>, Status> {
        let note = AuditNote::project(&request.get_ref().project);
        renketsu_rpc::handle(self, Rpc::StartJob, request, note, |call, req| async move {
            let p = call.member(&req.project).await?;
            let uploads = self.inner.store.current_uploads(&p.name).await?;
            let missing: Vec<&str> = p
                .holders
                .iter()
                .filter(|h| {
                    !uploads
                        .iter()
                        .any(|u| &&u.party == h && u.kind == v1::UploadKind::Tokens as i32)
                })
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                return Err(ServiceError::FailedPrecondition(format!(
                    "no complete token upload yet from: {}",
                    missing.join(", ")
                )));
            }
            let job = self
                .inner
                .store
                .start_job_mode(&p.name, req.full, self.now_ms())
                .await?;
            call.note(|n| {
                n.detail = format!(
                    "job {}{}",
                    job.job_id,
                    if req.full { " (full)" } else { "" }
                )
            });
            self.spawn_job(job.clone());
            Ok(job_view(&job))
        })
        .await
        .map(Response::new)
    }

    async fn get_job(
        &self,
        request: Request<v1::GetJobRequest>,
    ) -> Result<Response<v1::Job>, Status> {
        let note = AuditNote::project(&request.get_ref().project);
        renketsu_rpc::handle(self, Rpc::GetJob, request, note, |call, req| async move {
            let p = call.member(&req.project).await?;
            let j = self
                .inner
                .store
                .job(&p.name, req.job_id)
                .await?
                .ok_or_else(|| {
                    ServiceError::NotFound(format!(
                        "project {:?} has no job {}",
                        p.name, req.job_id
                    ))
                })?;
            Ok(job_view(&j))
        })
        .await
        .map(Response::new)
    }

    async fn get_quality_report(
        &self,
        request: Request<v1::GetQualityReportRequest>,
    ) -> Result<Response<v1::QualityReport>, Status> {
        let note = AuditNote::project(&request.get_ref().project);
        renketsu_rpc::handle(
            self,
            Rpc::GetQualityReport,
            request,
            note,
            |call, req| async move {
                let p = call.member(&req.project).await?;
                let store = &self.inner.store;
                let job = if req.job_id == 0 {
                    store.latest_done_job(&p.name).await?
                } else {
                    store.job(&p.name, req.job_id).await?
                }
                .ok_or_else(|| {
                    ServiceError::NotFound(format!(
                        "project {:?} has no {}",
                        p.name,
                        if req.job_id == 0 {
                            "DONE job".to_owned()
                        } else {
                            format!("job {}", req.job_id)
                        }
                    ))
                })?;
                let (summary_json, report_html) = store
                    .job_report(&p.name, job.job_id)
                    .await?
                    .ok_or_else(|| {
                        ServiceError::NotFound(format!(
                            "job {} of {:?} has no quality report (not DONE, or its schema has no [scoring])",
                            job.job_id, p.name
                        ))
                    })?;
                call.note(|n| n.detail = format!("job {}", job.job_id));
                Ok(v1::QualityReport {
                    project: p.name.clone(),
                    job_id: job.job_id,
                    summary_json,
                    report_html,
                })
            },
        )
        .await
        .map(Response::new)
    }

    async fn cancel_job(
        &self,
        request: Request<v1::CancelJobRequest>,
    ) -> Result<Response<v1::Job>, Status> {
        let note = AuditNote::project(&request.get_ref().project);
        renketsu_rpc::handle(
            self,
            Rpc::CancelJob,
            request,
            note,
            |call, req| async move {
                let p = call.member(&req.project).await?;
                let store = &self.inner.store;
                let j = store.job(&p.name, req.job_id).await?.ok_or_else(|| {
                    ServiceError::NotFound(format!(
                        "project {:?} has no job {}",
                        p.name, req.job_id
                    ))
                })?;
                if let Some(c) = self
                    .inner
                    .cancels
                    .lock()
                    .expect("cancels lock")
                    .get(&(p.name.clone(), j.job_id))
                {
                    c.store(true, Ordering::Relaxed);
                }
                if !store
                    .end_job(
                        &p.name,
                        j.job_id,
                        job_state::CANCELLED,
                        "cancelled by an administrator",
                        self.now_ms(),
                    )
                    .await?
                {
                    return Err(ServiceError::FailedPrecondition(format!(
                        "job {} is not running",
                        j.job_id
                    )));
                }
                let j = store.job(&p.name, j.job_id).await?.unwrap_or(j);
                Ok(job_view(&j))
            },
        )
        .await
        .map(Response::new)
    }

    async fn rekey_tokens(
        &self,
        request: Request<v1::RekeyTokensRequest>,
    ) -> Result<Response<v1::RekeyTokensResponse>, Status> {
        let r = request.get_ref();
        let note = AuditNote::project(&r.project)
            .with_detail(format!("{} to epoch {}", r.recipe, r.to_epoch));
        renketsu_rpc::handle(
            self,
            Rpc::RekeyTokens,
            request,
            note,
            |call, req| async move {
                let p = call.member(&req.project).await?;
                let r = crate::rekey::rekey_project(
                    &crate::rekey::RekeyContext {
                        store: self.store(),
                        custodian: self.settings().custodian.as_ref(),
                        now_ms: self.now_ms(),
                        max_chunk: MAX_CHUNK_BYTES,
                    },
                    &p,
                    &req.recipe,
                    req.to_epoch,
                )
                .await?;
                call.note(|n| n.items = r.tokens);
                Ok(r)
            },
        )
        .await
        .map(Response::new)
    }

    async fn get_linkage_project(
        &self,
        request: Request<v1::GetLinkageProjectRequest>,
    ) -> Result<Response<v1::LinkageProject>, Status> {
        let note = AuditNote::project(&request.get_ref().project);
        renketsu_rpc::handle(
            self,
            Rpc::GetLinkageProject,
            request,
            note,
            |call, req| async move {
                let p = call.member(&req.project).await?;
                self.project_view(&p, call.who()).await
            },
        )
        .await
        .map(Response::new)
    }

    async fn upload(
        &self,
        request: Request<Streaming<v1::UploadChunk>>,
    ) -> Result<Response<v1::UploadStatus>, Status> {
        // The project comes with the first chunk: upload_inner passes the membership check
        // before it stores anything.
        renketsu_rpc::handle(
            self,
            Rpc::Upload,
            request,
            AuditNote::default(),
            |call, stream| async move { self.upload_inner(&call, stream).await },
        )
        .await
        .map(Response::new)
    }

    async fn get_upload_status(
        &self,
        request: Request<v1::GetUploadStatusRequest>,
    ) -> Result<Response<v1::UploadStatus>, Status> {
        let note = AuditNote::project(&request.get_ref().project);
        renketsu_rpc::handle(
            self,
            Rpc::GetUploadStatus,
            request,
            note,
            |call, req| async move {
                let p = call.member(&req.project).await?;
                let who = call.who();
                let store = &self.inner.store;
                let u = store
                    .upload(&p.name, &who.party, &req.upload_id)
                    .await?
                    .ok_or_else(|| {
                        ServiceError::NotFound(format!(
                            "no upload {} by {}",
                            req.upload_id, who.party
                        ))
                    })?;
                let stored = store
                    .stored_chunks(&p.name, &who.party, &u.upload_id)
                    .await?;
                Ok(upload_view(&u, stored, 0))
            },
        )
        .await
        .map(Response::new)
    }

    type FetchMappingStream = BoxStream<v1::MappingChunk>;

    async fn fetch_mapping(
        &self,
        request: Request<v1::FetchMappingRequest>,
    ) -> Result<Response<Self::FetchMappingStream>, Status> {
        let note = AuditNote::project(&request.get_ref().project);
        let (project, party, job_id) = renketsu_rpc::handle(
            self,
            Rpc::FetchMapping,
            request,
            note,
            |call, req| async move {
                let p = call.member(&req.project).await?;
                let who = call.who();
                let job = self.latest_job_for_output(&p).await?;
                validate::release_size(&job, self.inner.settings.min_release_clusters)?;
                call.note(|n| n.detail = format!("job {}", job.job_id));
                Ok((p.name, who.party.clone(), job.job_id))
            },
        )
        .await?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let store = self.inner.store.clone();
        tokio::spawn(async move {
            let mut after = None;
            loop {
                let chunk = match store.member_chunk(&project, job_id, &party, after).await {
                    Ok(Some(c)) if c.records > 0 => c,
                    Ok(_) => return,
                    Err(e) => {
                        let _ = tx
                            .send(Err(ServiceError::Internal(format!(
                                "reading the mapping: {e}"
                            ))
                            .into()))
                            .await;
                        return;
                    }
                };
                after = Some(chunk.first_position + chunk.records - 1);
                let rows = match chunk.members() {
                    Ok(rows) => rows,
                    Err(e) => {
                        let _ = tx
                            .send(Err(ServiceError::Internal(e.to_string()).into()))
                            .await;
                        return;
                    }
                };
                // Excluded clusters are left out (SPEC.md §10.5).
                let kept: Vec<_> = rows.into_iter().filter(|m| !m.excluded).collect();
                for page in kept.chunks(MAPPING_PAGE as usize) {
                    let m = v1::MappingChunk {
                        job_id,
                        record_ids: page.iter().map(|m| m.record_id.to_owned()).collect(),
                        pseudonyms: page.iter().map(|m| pseudonym_hex(&m.pseudonym)).collect(),
                    };
                    if tx.send(Ok(m)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn traceback(
        &self,
        request: Request<v1::TracebackRequest>,
    ) -> Result<Response<v1::TracebackResponse>, Status> {
        let r = request.get_ref();
        let note = AuditNote::project(&r.project).with_detail(format!("pseudonym {}", r.pseudonym));
        renketsu_rpc::handle(
            self,
            Rpc::Traceback,
            request,
            note,
            |call, req| async move {
                let p = call.member(&req.project).await?;
                let who = call.who();
                if req.pseudonym.len() != 32
                    || !req.pseudonym.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return Err(ServiceError::InvalidArgument(
                        "a pseudonym is 32 hex digits".to_owned(),
                    ));
                }
                let job = self
                    .inner
                    .store
                    .latest_done_job(&p.name)
                    .await?
                    .ok_or_else(|| {
                        ServiceError::FailedPrecondition(format!(
                            "project {:?} has no completed job",
                            p.name
                        ))
                    })?;
                let ids = self
                    .inner
                    .store
                    .traceback(
                        &p.name,
                        job.job_id,
                        &who.party,
                        &req.pseudonym.to_ascii_lowercase(),
                    )
                    .await?;
                call.note(|n| n.items = ids.len() as u64);
                Ok(v1::TracebackResponse {
                    job_id: job.job_id,
                    record_ids: ids,
                })
            },
        )
        .await
        .map(Response::new)
    }

    type FetchReleaseStream = BoxStream<v1::ReleaseChunk>;

    async fn fetch_release(
        &self,
        request: Request<v1::FetchReleaseRequest>,
    ) -> Result<Response<Self::FetchReleaseStream>, Status> {
        let note = AuditNote::project(&request.get_ref().project);
        let (release_id, job_id, holders, headers, clusters, estimated, delta) =
            renketsu_rpc::handle(
                self,
                Rpc::FetchRelease,
                request,
                note,
                |call, req| async move {
                    let p = call.member(&req.project).await?;
                    let who = call.who();
                    let job = self.latest_job_for_output(&p).await?;
                    validate::release_size(&job, self.inner.settings.min_release_clusters)?;
                    let store = &self.inner.store;
                    let members = store.release_members(&p.name, job.job_id).await?;
                    // Sealed content of each holder's current content upload.
                    let mut headers = Vec::new();
                    let mut sealed: HashMap<(usize, String), Vec<u8>> = HashMap::new();
                    for u in store.current_uploads(&p.name).await? {
                        if u.kind != v1::UploadKind::Content as i32 {
                            continue;
                        }
                        let Some(h) = p.holders.iter().position(|x| x == &u.party) else {
                            continue;
                        };
                        let bytes = store.upload_bytes(&p.name, &u.party, &u.upload_id).await?;
                        let (header, records) =
                            content_file::parse(bytes.as_slice()).map_err(|e| {
                                ServiceError::Internal(format!("stored content upload: {e}"))
                            })?;
                        headers.push(v1::SealedContentHeader {
                            party: u.party.clone(),
                            columns: header.columns,
                            encapsulated_key: B64
                                .decode(header.encapsulated_key.as_bytes())
                                .map_err(|_| {
                                    ServiceError::Internal("stored content header".to_owned())
                                })?,
                        });
                        for (id, s) in records {
                            sealed.insert((h, id), s);
                        }
                    }
                    let holder_index: BTreeMap<&str, usize> = p
                        .holders
                        .iter()
                        .enumerate()
                        .map(|(i, h)| (h.as_str(), i))
                        .collect();
                    // Scored jobs: each cluster's weakest link and the model's estimates.
                    let weakest: HashMap<String, f64> = store
                        .job_weakest_links(&p.name, job.job_id)
                        .await?
                        .unwrap_or_default()
                        .chunks_exact(PSEUDONYM_BYTES + 4)
                        .map(|r| {
                            let p = f32::from_le_bytes(
                                r[PSEUDONYM_BYTES..].try_into().expect("4 bytes"),
                            );
                            (hex::encode(&r[..PSEUDONYM_BYTES]), f64::from(p))
                        })
                        .collect();
                    let estimated = match store.job_report(&p.name, job.job_id).await? {
                        Some((summary, _)) => {
                            let v: serde_json::Value =
                                serde_json::from_str(&summary).map_err(|e| {
                                    ServiceError::Internal(format!("stored report: {e}"))
                                })?;
                            let e = &v["scoring"]["estimated"];
                            (e["precision"].as_f64(), e["recall"].as_f64())
                        }
                        None => (None, None),
                    };
                    let mut clusters: Vec<v1::ReleasedCluster> = Vec::new();
                    // Sealed records sent per holder (recorded with the release).
                    let mut delivered = vec![0u64; p.holders.len()];
                    for (pid, party, id) in members {
                        if clusters.last().is_none_or(|c| c.pseudonym != pid) {
                            clusters.push(v1::ReleasedCluster {
                                weakest_link_probability: weakest.get(&pid).copied(),
                                pseudonym: pid.clone(),
                                records: Vec::new(),
                                changed: false,
                            });
                        }
                        let h = holder_index
                            .get(party.as_str())
                            .copied()
                            .unwrap_or(usize::MAX);
                        if let Some(s) = sealed.remove(&(h, id)) {
                            if let Some(n) = delivered.get_mut(h) {
                                *n += 1;
                            }
                            clusters
                                .last_mut()
                                .expect("pushed")
                                .records
                                .push(v1::SealedRecord {
                                    holder: h as u32,
                                    sealed: s,
                                });
                        }
                    }
                    let rows: Vec<(String, String)> = clusters
                        .iter()
                        .map(|c| (c.pseudonym.clone(), cluster_digest(c)))
                        .collect();
                    // A delta against the caller's earlier release (SPEC.md §10.5.2).
                    let delta = if req.since_release == 0 {
                        None
                    } else {
                        let (since_job, before) = store
                            .release(&p.name, req.since_release)
                            .await?
                            .ok_or_else(|| {
                                ServiceError::NotFound(format!(
                                    "project {:?} has no release {}",
                                    p.name, req.since_release
                                ))
                            })?;
                        if before.iter().any(|(_, d)| d.is_empty()) {
                            return Err(ServiceError::FailedPrecondition(format!(
                                "release {} was made before deltas: fetch the whole release",
                                req.since_release
                            )));
                        }
                        let before: HashMap<String, String> = before.into_iter().collect();
                        let now: HashSet<&str> = rows.iter().map(|(p, _)| p.as_str()).collect();
                        let withdrawn: HashSet<String> = store
                            .pseudonyms(&p.name)
                            .await?
                            .iter()
                            .filter(|r| r.withdrawn_job != 0)
                            .map(|r| pseudonym_hex(&r.pseudonym))
                            .collect();
                        let mut gone: Vec<String> = before
                            .keys()
                            .filter(|k| !now.contains(k.as_str()))
                            .cloned()
                            .collect();
                        gone.sort();
                        let (w, r): (Vec<String>, Vec<String>) =
                            gone.into_iter().partition(|k| withdrawn.contains(k));
                        let events = store.crosswalk(&p.name, since_job, job.job_id).await?;
                        let last = store.latest_release(&p.name).await?.unwrap_or(0);
                        let crosswalk = self.researcher_events(&p.name, events, last, &now).await?;
                        Some(Delta {
                            since_release: req.since_release,
                            before,
                            withdrawn: w,
                            removed: r,
                            crosswalk,
                        })
                    };
                    let pids: Vec<String> = rows.iter().map(|(p, _)| p.clone()).collect();
                    let release_id = store
                        .record_release_digests(
                            &p.name,
                            job.job_id,
                            &who.party,
                            &rows,
                            self.now_ms(),
                        )
                        .await?;
                    // The delta: only new and changed clusters are sent.
                    let mut unchanged = 0u64;
                    if let Some(d) = &delta {
                        let mut kept = Vec::with_capacity(clusters.len());
                        for (mut c, (_, digest)) in clusters.into_iter().zip(&rows) {
                            match d.before.get(&c.pseudonym) {
                                Some(b) if b == digest => unchanged += 1,
                                Some(_) => {
                                    c.changed = true;
                                    kept.push(c);
                                }
                                None => kept.push(c),
                            }
                        }
                        clusters = kept;
                        // Sealed records counted below are those sent.
                        delivered.iter_mut().for_each(|n| *n = 0);
                        for c in &clusters {
                            for r in &c.records {
                                if let Some(n) = delivered.get_mut(r.holder as usize) {
                                    *n += 1;
                                }
                            }
                        }
                    }
                    let per_holder: Vec<String> = p
                        .holders
                        .iter()
                        .zip(&delivered)
                        .map(|(h, n)| format!("{h} {n}"))
                        .collect();
                    let since = delta
                        .as_ref()
                        .map(|d| format!(" (delta against release {})", d.since_release))
                        .unwrap_or_default();
                    call.note(|n| {
                        n.detail = format!(
                            "release {release_id} of job {}{since}: sealed records {}",
                            job.job_id,
                            per_holder.join(", ")
                        );
                    });
                    call.note(|n| n.items = pids.len() as u64);
                    Ok((
                        release_id,
                        job.job_id,
                        p.holders.clone(),
                        headers,
                        clusters,
                        estimated,
                        delta.map(|d| (d, unchanged)),
                    ))
                },
            )
            .await?;
        let mut chunks = Vec::new();
        let mut first = Some((holders, headers, delta));
        let mut it = clusters.into_iter().peekable();
        loop {
            let page: Vec<_> = it.by_ref().take(RELEASE_PAGE).collect();
            let head = first.is_some();
            let (holders, headers, delta) = first.take().unwrap_or_default();
            if page.is_empty() && !chunks.is_empty() {
                break;
            }
            let since_release = delta.as_ref().map_or(0, |(d, _)| d.since_release);
            let (withdrawn, removed, unchanged_clusters, crosswalk) = match delta {
                Some((d, unchanged)) => (d.withdrawn, d.removed, unchanged, d.crosswalk),
                None => Default::default(),
            };
            chunks.push(Ok(v1::ReleaseChunk {
                release_id,
                job_id,
                holders,
                headers,
                clusters: page,
                estimated_precision: if head { estimated.0 } else { None },
                estimated_recall: if head { estimated.1 } else { None },
                since_release,
                withdrawn,
                removed,
                unchanged_clusters,
                crosswalk,
            }));
            if it.peek().is_none() {
                break;
            }
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn get_crosswalk(
        &self,
        request: Request<v1::GetCrosswalkRequest>,
    ) -> Result<Response<v1::GetCrosswalkResponse>, Status> {
        let note = AuditNote::project(&request.get_ref().project);
        renketsu_rpc::handle(
            self,
            Rpc::GetCrosswalk,
            request,
            note,
            |call, req| async move {
                let p = call.member(&req.project).await?;
                let store = &self.inner.store;
                let name = p.name.as_str();
                let job_of = |release: u64| async move {
                    store
                        .release(name, release)
                        .await?
                        .map(|(job, _)| job)
                        .ok_or_else(|| {
                            ServiceError::NotFound(format!(
                                "project {name:?} has no release {release}"
                            ))
                        })
                };
                let until = match req.until_release {
                    0 => store.latest_release(&p.name).await?.ok_or_else(|| {
                        ServiceError::NotFound(format!("project {:?} has no release", p.name))
                    })?,
                    n => n,
                };
                if req.since_release > until {
                    return Err(ServiceError::InvalidArgument(format!(
                        "release {} is after release {until}",
                        req.since_release
                    )));
                }
                let until_job = job_of(until).await?;
                let since_job = match req.since_release {
                    0 => 0,
                    m => job_of(m).await?,
                };
                let all = store.crosswalk(&p.name, since_job, until_job).await?;
                let events = self
                    .researcher_events(&p.name, all, until, &HashSet::new())
                    .await?;
                call.note(|n| {
                    n.detail = format!("releases {} to {until}", req.since_release);
                    n.items = events.len() as u64;
                });
                Ok(v1::GetCrosswalkResponse {
                    since_job,
                    until_job,
                    events,
                })
            },
        )
        .await
        .map(Response::new)
    }

    type ReadLinkageAuditLogStream = BoxStream<v1::AuditEntry>;

    async fn read_linkage_audit_log(
        &self,
        request: Request<v1::ReadAuditLogRequest>,
    ) -> Result<Response<Self::ReadLinkageAuditLogStream>, Status> {
        let req = renketsu_rpc::handle(
            self,
            Rpc::ReadLinkageAuditLog,
            request,
            AuditNote::default(),
            |_, req| async move { Ok(req) },
        )
        .await?;
        // Read up to the entry just written (this call's own).
        let store = self.inner.store.clone();
        let mut entries = Vec::new();
        let mut next = req.from_sequence.max(1);
        let limit = if req.limit == 0 {
            u64::MAX
        } else {
            u64::from(req.limit)
        };
        loop {
            let page = store.audit_read(next, AUDIT_PAGE).await.map_err(|e| {
                Status::from(ServiceError::Internal(format!(
                    "reading the audit log: {e}"
                )))
            })?;
            let Some(last) = page.last() else { break };
            next = last.sequence + 1;
            for e in &page {
                if entries.len() as u64 >= limit {
                    break;
                }
                entries.push(Ok(renketsu_rpc::call::audit_entry_to_wire(e)));
            }
            if entries.len() as u64 >= limit || (page.len() as u32) < AUDIT_PAGE {
                break;
            }
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(entries))))
    }
}
