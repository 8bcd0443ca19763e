//! The linkage unit's client (SPEC.md §10): every role's calls as one connection type,
//! [`LinkageUnitConn`], plus the two pieces of cryptography that happen on the callers' side:
//! [`SealedContentWriter`] (a holder seals content columns to the researcher) and
//! [`open_release`] (the researcher opens a release).
//!
//! ```text
//! holder      upload(kind, bytes) ── chunks of 1 MiB, resumable ──► linkage unit
//!             mapping(sink)       ◄── own record id → pseudonym
//! admin       create_project, list_projects, delete_project, start_job, job, wait_job,
//!             cancel_job, rekey
//! researcher  fetch_release       ◄── clusters of sealed records ── open_release(key)
//! auditor     audit_log           ◄── the hash chain, verified by the caller
//! ```
//!
//! Uploads are named by the SHA-256 of the whole file, so an interrupted upload resumes
//! where it stopped: [`LinkageUnitConn::upload`] asks which chunks the linkage unit has and
//! sends only the others, retrying transient failures (a restarting linkage unit) up to
//! [`UPLOAD_ATTEMPTS`] times.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use renketsu_keys::content::{ContentError, ContentOpener, ContentSealer, ResearcherKeyPair};
use renketsu_keys::content_file::{self, ContentHeader};
use renketsu_protocol::v1;
use renketsu_protocol::v1::linkage_unit_client::LinkageUnitClient;
use renketsu_rpc::tls::{ChannelError, ConnectConfig, tls_channel};
use sha2::{Digest as _, Sha256};
use tonic::Code;
use tonic::transport::Channel;

/// Chunk size of uploads (bytes).
pub const CHUNK_BYTES: usize = 1024 * 1024;
/// Attempts of an upload when the linkage unit is unreachable or restarts.
pub const UPLOAD_ATTEMPTS: u32 = 30;
/// Largest gRPC message accepted or sent (a 4 MiB chunk plus framing, release pages); the
/// linkage unit's own limit.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Errors of the linkage unit's client. `Display` never contains tokens, identifiers or
/// content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LuClientError {
    /// The channel could not be prepared (an unreadable PEM file, a URL that is not
    /// `https://HOST:PORT`).
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The linkage unit answered with a status that is not retried, or retries ran out.
    #[error("{rpc}: {code:?}: {message}")]
    Status {
        /// The RPC, e.g. `FetchMapping`.
        rpc: &'static str,
        /// gRPC status code.
        code: Code,
        /// The linkage unit's message.
        message: String,
    },
    /// An upload did not complete within [`UPLOAD_ATTEMPTS`].
    #[error("upload of {label} did not complete after {attempts} attempts")]
    UploadIncomplete {
        /// What was uploaded (`tokens`, `content`, `opt-out`).
        label: String,
        /// Attempts made.
        attempts: u32,
    },
    /// A job ended in another state than DONE.
    #[error("job {job_id} did not complete")]
    JobNotDone {
        /// The job.
        job_id: u64,
        /// The job as last seen (state, stage, error).
        job: Box<v1::Job>,
    },
    /// The linkage unit's answer is malformed (a content header of an unknown holder, a
    /// record without a header, a width that differs from its header).
    #[error("{rpc} returned an invalid response: {what}")]
    InvalidResponse {
        /// The RPC.
        rpc: &'static str,
        /// What is wrong.
        what: String,
    },
    /// Sealing or opening content failed (a bad researcher key, a record that does not open
    /// with this researcher's key for this project and holder).
    #[error("{context}: {source}")]
    Content {
        /// Which content: `content of holder-a`, `a record of holder-a in <pseudonym>`.
        context: String,
        /// Why.
        source: ContentError,
    },
}

impl LuClientError {
    /// The gRPC status code, when the linkage unit answered with one.
    pub fn code(&self) -> Option<Code> {
        match self {
            Self::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

fn status(rpc: &'static str) -> impl Fn(tonic::Status) -> LuClientError {
    move |s| LuClientError::Status {
        rpc,
        code: s.code(),
        message: s.message().to_owned(),
    }
}

/// Whether an upload attempt that failed with `code` is worth repeating: transient
/// failures, and a connection cut mid-stream (the linkage unit killed), which can surface as
/// UNKNOWN, CANCELLED or INTERNAL ("h2 protocol error"). Uploads are idempotent, so
/// retrying is safe.
pub fn upload_retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Cancelled
            | Code::Internal
    )
}

/// What the admin's `CreateLinkageProject` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLinkageProject {
    /// Holder party names (at least two).
    pub holders: Vec<String>,
    /// The researcher's party name.
    pub researcher: String,
    /// The researcher's X25519 public key (32 bytes) content is sealed to.
    pub researcher_public_key: [u8; 32],
    /// The schema (TOML bytes) every token file must be made with.
    pub schema_toml: Vec<u8>,
    /// Holders whose files may hold several records of one person.
    pub duplicates: Vec<String>,
}

/// A connection to the linkage unit for one project, with the caller's certificate. Cheap to
/// clone (one shared channel).
#[derive(Debug, Clone)]
pub struct LinkageUnitConn {
    inner: LinkageUnitClient<Channel>,
    project: String,
}

impl LinkageUnitConn {
    /// Prepares a mutual-TLS channel (connected on first use) for calls about `project`.
    /// Must be called within a Tokio runtime.
    ///
    /// # Errors
    /// [`LuClientError::Channel`] for unreadable PEM files or a URL that is not
    /// `https://HOST:PORT`.
    pub fn connect(config: &ConnectConfig, project: &str) -> Result<Self, LuClientError> {
        Ok(Self::from_channel(tls_channel(config)?, project))
    }

    /// A connection over an existing channel.
    pub fn from_channel(channel: Channel, project: &str) -> Self {
        Self {
            inner: LinkageUnitClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            project: project.to_owned(),
        }
    }

    /// The project this connection's calls are about.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// The generated client, for calls this type does not wrap.
    pub fn raw(&self) -> LinkageUnitClient<Channel> {
        self.inner.clone()
    }

    // ------------------------------------------------------------------ admin

    /// Admin: `CreateLinkageProject` of this connection's project.
    ///
    /// # Errors
    /// [`LuClientError::Status`] (ALREADY_EXISTS, INVALID_ARGUMENT for a bad schema, …).
    pub async fn create_project(
        &mut self,
        new: NewLinkageProject,
    ) -> Result<v1::LinkageProject, LuClientError> {
        let r = self
            .inner
            .create_linkage_project(v1::CreateLinkageProjectRequest {
                project: self.project.clone(),
                holders: new.holders,
                researcher: new.researcher,
                researcher_public_key: new.researcher_public_key.to_vec(),
                schema_toml: new.schema_toml,
                duplicates: new.duplicates,
            })
            .await
            .map_err(status("CreateLinkageProject"))?;
        Ok(r.into_inner())
    }

    /// Admin: every linkage project, with uploads and the latest job.
    ///
    /// # Errors
    /// [`LuClientError::Status`].
    pub async fn list_projects(&mut self) -> Result<Vec<v1::LinkageProject>, LuClientError> {
        let r = self
            .inner
            .list_linkage_projects(v1::ListLinkageProjectsRequest {})
            .await
            .map_err(status("ListLinkageProjects"))?;
        Ok(r.into_inner().projects)
    }

    /// Admin: deletes this connection's project and everything stored for it.
    ///
    /// # Errors
    /// [`LuClientError::Status`].
    pub async fn delete_project(&mut self) -> Result<(), LuClientError> {
        self.inner
            .delete_linkage_project(v1::DeleteLinkageProjectRequest {
                project: self.project.clone(),
            })
            .await
            .map_err(status("DeleteLinkageProject"))?;
        Ok(())
    }

    /// Admin: starts a matching job: incremental where it is exact (SPEC.md §10.3.3), else a
    /// full re-link.
    ///
    /// # Errors
    /// [`LuClientError::Status`] (FAILED_PRECONDITION while uploads are missing or a job
    /// runs).
    pub async fn start_job(&mut self) -> Result<v1::Job, LuClientError> {
        self.start_job_full(false).await
    }

    /// Admin: starts a matching job; `full`: a full re-link of the whole state even where an
    /// incremental job would be exact.
    ///
    /// # Errors
    /// As [`Self::start_job`].
    pub async fn start_job_full(&mut self, full: bool) -> Result<v1::Job, LuClientError> {
        let r = self
            .inner
            .start_job(v1::StartJobRequest {
                project: self.project.clone(),
                full,
            })
            .await
            .map_err(status("StartJob"))?;
        Ok(r.into_inner())
    }

    /// Admin: job `job_id` (0: the latest).
    ///
    /// # Errors
    /// [`LuClientError::Status`].
    pub async fn job(&mut self, job_id: u64) -> Result<v1::Job, LuClientError> {
        let r = self
            .inner
            .get_job(v1::GetJobRequest {
                project: self.project.clone(),
                job_id,
            })
            .await
            .map_err(status("GetJob"))?;
        Ok(r.into_inner())
    }

    /// Admin: polls job `job_id` every 200 ms until it is no longer running, calling
    /// `progress` with each state seen. A restarting linkage unit (UNAVAILABLE) resumes its
    /// jobs, so up to 120 failures in a row (half a second apart) are waited out.
    ///
    /// # Errors
    /// [`LuClientError::JobNotDone`] if the job ends failed or cancelled;
    /// [`LuClientError::Status`].
    pub async fn wait_job(
        &mut self,
        job_id: u64,
        mut progress: impl FnMut(&v1::Job),
    ) -> Result<v1::Job, LuClientError> {
        let mut failures = 0;
        loop {
            let j = match self.job(job_id).await {
                Ok(j) => j,
                Err(LuClientError::Status {
                    code: Code::Unavailable,
                    ..
                }) if failures < 120 => {
                    failures += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            failures = 0;
            progress(&j);
            if j.state != v1::JobState::Running as i32 {
                if j.state != v1::JobState::Done as i32 {
                    return Err(LuClientError::JobNotDone {
                        job_id: j.job_id,
                        job: Box::new(j),
                    });
                }
                return Ok(j);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Admin: the quality report of a scored job (`job_id` 0: the latest DONE job):
    /// `summary.json` and `report.html` (SPEC.md §9.6, §9.7).
    ///
    /// # Errors
    /// [`LuClientError::Status`] (NOT_FOUND for a job without a report).
    pub async fn quality_report(
        &mut self,
        job_id: u64,
    ) -> Result<v1::QualityReport, LuClientError> {
        let r = self
            .inner
            .get_quality_report(v1::GetQualityReportRequest {
                project: self.project.clone(),
                job_id,
            })
            .await
            .map_err(status("GetQualityReport"))?;
        Ok(r.into_inner())
    }

    /// Admin: cancels a running job.
    ///
    /// # Errors
    /// [`LuClientError::Status`] (FAILED_PRECONDITION if it is not running).
    pub async fn cancel_job(&mut self, job_id: u64) -> Result<v1::Job, LuClientError> {
        let r = self
            .inner
            .cancel_job(v1::CancelJobRequest {
                project: self.project.clone(),
                job_id,
            })
            .await
            .map_err(status("CancelJob"))?;
        Ok(r.into_inner())
    }

    /// Admin: re-keys the stored tokens of custodian recipe `recipe` (`<name>/v<version>`)
    /// to `to_epoch` (the linkage unit asks the custodian for the delta).
    ///
    /// # Errors
    /// [`LuClientError::Status`].
    pub async fn rekey(
        &mut self,
        recipe: &str,
        to_epoch: u64,
    ) -> Result<v1::RekeyTokensResponse, LuClientError> {
        let r = self
            .inner
            .rekey_tokens(v1::RekeyTokensRequest {
                project: self.project.clone(),
                recipe: recipe.to_owned(),
                to_epoch,
            })
            .await
            .map_err(status("RekeyTokens"))?;
        Ok(r.into_inner())
    }

    // ------------------------------------------------------------------ holders

    /// Holder or researcher: the project as the caller may see it (a holder sees its own
    /// uploads; everyone sees the researcher's public key).
    ///
    /// # Errors
    /// [`LuClientError::Status`].
    pub async fn project_info(&mut self) -> Result<v1::LinkageProject, LuClientError> {
        let r = self
            .inner
            .get_linkage_project(v1::GetLinkageProjectRequest {
                project: self.project.clone(),
            })
            .await
            .map_err(status("GetLinkageProject"))?;
        Ok(r.into_inner())
    }

    /// Holder: uploads `bytes` as one upload of `kind`, resuming: only chunks the linkage
    /// unit does not have are sent; transient failures (restart, network) are retried.
    /// Chunk messages are made one at a time as the stream sends them (the file is not
    /// copied whole again). `progress(bytes_done)` is called with the bytes the linkage unit
    /// has, then after each chunk sent. Returns the completed upload's status.
    ///
    /// # Errors
    /// [`LuClientError::Status`] for a refusal (wrong project, schema, party);
    /// [`LuClientError::UploadIncomplete`] after [`UPLOAD_ATTEMPTS`].
    pub async fn upload(
        &mut self,
        kind: v1::UploadKind,
        bytes: Arc<Vec<u8>>,
        label: &str,
        progress: impl Fn(u64) + Clone + Send + Sync + 'static,
    ) -> Result<v1::UploadStatus, LuClientError> {
        let upload_id = hex::encode(Sha256::digest(bytes.as_slice()));
        // An empty file is one empty chunk.
        let total = bytes.len().div_ceil(CHUNK_BYTES).max(1) as u32;
        let len = bytes.len();
        let range = move |i: u32| {
            let start = i as usize * CHUNK_BYTES;
            start..(start + CHUNK_BYTES).min(len)
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let stored: HashSet<u32> = match self
                .inner
                .get_upload_status(v1::GetUploadStatusRequest {
                    project: self.project.clone(),
                    upload_id: upload_id.clone(),
                })
                .await
            {
                Ok(s) => {
                    let s = s.into_inner();
                    if s.complete {
                        return Ok(s);
                    }
                    s.stored_chunks.into_iter().collect()
                }
                Err(s) if s.code() == Code::NotFound => HashSet::new(),
                Err(s) if upload_retryable(s.code()) && attempt < UPLOAD_ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    continue;
                }
                Err(s) => return Err(status("GetUploadStatus")(s)),
            };
            let mut done: u64 = stored.iter().map(|&i| range(i).len() as u64).sum();
            progress(done);
            // Missing chunks; if all are stored (an earlier completion was interrupted),
            // resend the first so that the linkage unit completes the upload.
            let mut send: Vec<u32> = (0..total).filter(|i| !stored.contains(i)).collect();
            if send.is_empty() {
                send.push(0);
            }
            let (file, project, id, report) = (
                Arc::clone(&bytes),
                self.project.clone(),
                upload_id.clone(),
                progress.clone(),
            );
            let stream = tokio_stream::iter(send.into_iter().map(move |i| {
                let data = &file[range(i)];
                done += data.len() as u64;
                report(done);
                v1::UploadChunk {
                    project: project.clone(),
                    kind: kind as i32,
                    upload_id: id.clone(),
                    total_chunks: total,
                    total_bytes: len as u64,
                    index: i,
                    data: data.to_vec(),
                    sha256: Sha256::digest(data).to_vec(),
                }
            }));
            match self.inner.upload(stream).await {
                Ok(r) => {
                    let s = r.into_inner();
                    if s.complete {
                        return Ok(s);
                    }
                    if attempt >= UPLOAD_ATTEMPTS {
                        return Err(LuClientError::UploadIncomplete {
                            label: label.to_owned(),
                            attempts: attempt,
                        });
                    }
                }
                Err(s) if upload_retryable(s.code()) && attempt < UPLOAD_ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(s) => return Err(status("Upload")(s)),
            }
        }
    }

    /// Holder: the caller's own record id → pseudonym mapping of the latest job (excluded
    /// clusters left out), one `sink(record_id, pseudonym)` call per record. Returns the job
    /// it came from.
    ///
    /// # Errors
    /// [`LuClientError::Status`] (FAILED_PRECONDITION before the first job is done), or
    /// `sink`'s error.
    pub async fn mapping<E: From<LuClientError>>(
        &mut self,
        mut sink: impl FnMut(&str, &str) -> Result<(), E>,
    ) -> Result<u64, E> {
        let mut stream = self
            .inner
            .fetch_mapping(v1::FetchMappingRequest {
                project: self.project.clone(),
            })
            .await
            .map_err(status("FetchMapping"))?
            .into_inner();
        let mut job = 0;
        while let Some(m) = stream.message().await.map_err(status("FetchMapping"))? {
            job = m.job_id;
            for (id, pid) in m.record_ids.iter().zip(&m.pseudonyms) {
                sink(id, pid)?;
            }
        }
        Ok(job)
    }

    /// Holder: the caller's own records in the cluster of `pseudonym` (32 hex digits); the
    /// traceback is audited.
    ///
    /// # Errors
    /// [`LuClientError::Status`].
    pub async fn traceback(
        &mut self,
        pseudonym: &str,
    ) -> Result<v1::TracebackResponse, LuClientError> {
        let r = self
            .inner
            .traceback(v1::TracebackRequest {
                project: self.project.clone(),
                pseudonym: pseudonym.to_owned(),
            })
            .await
            .map_err(status("Traceback"))?;
        Ok(r.into_inner())
    }

    // ------------------------------------------------------------------ researcher

    /// Researcher: the release of the latest job, all pages, still sealed.
    ///
    /// # Errors
    /// [`LuClientError::Status`].
    pub async fn fetch_release(&mut self) -> Result<SealedRelease, LuClientError> {
        self.fetch_release_since(0).await
    }

    /// Researcher: the release of the latest job, whole (`since_release` 0) or as a delta
    /// against the caller's earlier release `since_release` (SPEC.md §10.5.2), still sealed.
    ///
    /// # Errors
    /// [`LuClientError::Status`].
    pub async fn fetch_release_since(
        &mut self,
        since_release: u64,
    ) -> Result<SealedRelease, LuClientError> {
        let mut stream = self
            .inner
            .fetch_release(v1::FetchReleaseRequest {
                project: self.project.clone(),
                since_release,
            })
            .await
            .map_err(status("FetchRelease"))?
            .into_inner();
        let mut release = SealedRelease::default();
        while let Some(chunk) = stream.message().await.map_err(status("FetchRelease"))? {
            if !chunk.holders.is_empty() {
                release.holders = chunk.holders;
                release.headers = chunk.headers;
                release.release_id = chunk.release_id;
                release.job_id = chunk.job_id;
                release.estimated_precision = chunk.estimated_precision;
                release.estimated_recall = chunk.estimated_recall;
                release.since_release = chunk.since_release;
                release.withdrawn = chunk.withdrawn;
                release.removed = chunk.removed;
                release.unchanged_clusters = chunk.unchanged_clusters;
                release.crosswalk = chunk.crosswalk;
            }
            release.clusters.extend(chunk.clusters);
        }
        Ok(release)
    }

    /// Researcher: the crosswalk events between two of its releases (`since_release` 0:
    /// from the first job; `until_release` 0: the latest release), SPEC.md §10.5.1.
    ///
    /// # Errors
    /// [`LuClientError::Status`].
    pub async fn crosswalk(
        &mut self,
        since_release: u64,
        until_release: u64,
    ) -> Result<v1::GetCrosswalkResponse, LuClientError> {
        Ok(self
            .inner
            .get_crosswalk(v1::GetCrosswalkRequest {
                project: self.project.clone(),
                since_release,
                until_release,
            })
            .await
            .map_err(status("GetCrosswalk"))?
            .into_inner())
    }

    // ------------------------------------------------------------------ auditor

    /// Auditor: the whole audit log, in order (verify it with [`crate::audit`]).
    ///
    /// # Errors
    /// [`LuClientError::Status`].
    pub async fn audit_log(&mut self) -> Result<Vec<v1::AuditEntry>, LuClientError> {
        let mut stream = self
            .inner
            .read_linkage_audit_log(v1::ReadAuditLogRequest {
                from_sequence: 0,
                limit: 0,
            })
            .await
            .map_err(status("ReadLinkageAuditLog"))?
            .into_inner();
        let mut entries = Vec::new();
        while let Some(e) = stream
            .message()
            .await
            .map_err(status("ReadLinkageAuditLog"))?
        {
            entries.push(e);
        }
        Ok(entries)
    }
}

/// A release as fetched: the researcher's clusters of records still sealed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SealedRelease {
    /// The release's number (audited at the linkage unit).
    pub release_id: u64,
    /// The job it comes from.
    pub job_id: u64,
    /// Holder party names; records name holders by index into this list.
    pub holders: Vec<String>,
    /// One header per holder that uploaded content: its columns and HPKE encapsulated key.
    pub headers: Vec<v1::SealedContentHeader>,
    /// Clusters, each a pseudonym with its sealed records (and, from a scored job, its
    /// weakest link probability).
    pub clusters: Vec<v1::ReleasedCluster>,
    /// Scored jobs: the model's estimated precision of the job's links.
    pub estimated_precision: Option<f64>,
    /// Scored jobs: the estimated recall, when identifiable.
    pub estimated_recall: Option<f64>,
    /// A delta: the earlier release it is against (0: a whole release). `clusters` then
    /// holds only new and changed clusters (`changed` set on the latter).
    pub since_release: u64,
    /// A delta: pseudonyms of the earlier release withdrawn since (opt-outs).
    pub withdrawn: Vec<String>,
    /// A delta: other pseudonyms of the earlier release no longer released.
    pub removed: Vec<String>,
    /// A delta: clusters of the earlier release released again unchanged.
    pub unchanged_clusters: u64,
    /// A delta: the crosswalk events between the two releases' jobs.
    pub crosswalk: Vec<v1::CrosswalkEvent>,
}

/// A release opened with the researcher's key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenedRelease {
    /// The release's number.
    pub release_id: u64,
    /// The job it comes from.
    pub job_id: u64,
    /// Holder party names.
    pub holders: Vec<String>,
    /// Content columns per holder index (holders that uploaded content only), in holder
    /// order.
    pub columns: BTreeMap<u32, Vec<String>>,
    /// Clusters in release order.
    pub clusters: Vec<OpenedCluster>,
}

/// One released cluster, opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenedCluster {
    /// The cluster's pseudonym (32 hex digits).
    pub pseudonym: String,
    /// `(holder index, content values in that holder's column order)` per record.
    pub records: Vec<(u32, Vec<String>)>,
}

/// Opens every record of `release` with the researcher's key pair. Each holder's content is
/// bound to (`project`, holder): a record moved to another holder or project does not open.
///
/// # Errors
/// [`LuClientError::InvalidResponse`] for a header of an unknown holder, a record of a
/// holder without a header or with another number of values than its header's columns;
/// [`LuClientError::Content`] for content that does not open with this key.
pub fn open_release(
    release: &SealedRelease,
    key: &ResearcherKeyPair,
    project: &str,
) -> Result<OpenedRelease, LuClientError> {
    let bad = |what: String| LuClientError::InvalidResponse {
        rpc: "FetchRelease",
        what,
    };
    let holder_name = |h: u32| {
        release
            .holders
            .get(h as usize)
            .map_or("an unknown holder", String::as_str)
    };
    let mut openers = BTreeMap::new();
    let mut columns = BTreeMap::new();
    for h in &release.headers {
        let idx = release
            .holders
            .iter()
            .position(|x| x == &h.party)
            .ok_or_else(|| bad("a content header of an unknown holder".to_owned()))?
            as u32;
        let opener =
            ContentOpener::new(key, &h.encapsulated_key, project, &h.party).map_err(|source| {
                LuClientError::Content {
                    context: format!("content of {}", h.party),
                    source,
                }
            })?;
        openers.insert(idx, (opener, h.columns.len()));
        columns.insert(idx, h.columns.clone());
    }
    let mut clusters = Vec::with_capacity(release.clusters.len());
    for c in &release.clusters {
        let mut records = Vec::with_capacity(c.records.len());
        for r in &c.records {
            let (opener, width) = openers
                .get(&r.holder)
                .ok_or_else(|| bad("a record of a holder without a content header".to_owned()))?;
            let values = opener
                .open(&r.sealed)
                .map_err(|source| LuClientError::Content {
                    context: format!("a record of {} in {}", holder_name(r.holder), c.pseudonym),
                    source,
                })?;
            if values.len() != *width {
                return Err(bad(format!(
                    "a record of {} has {} values, its header {width} columns",
                    holder_name(r.holder),
                    values.len()
                )));
            }
            records.push((r.holder, values));
        }
        clusters.push(OpenedCluster {
            pseudonym: c.pseudonym.clone(),
            records,
        });
    }
    Ok(OpenedRelease {
        release_id: release.release_id,
        job_id: release.job_id,
        holders: release.holders.clone(),
        columns,
        clusters,
    })
}

/// Writes a sealed-content file (`renketsu-content`, SPEC.md §10.4): each record's content
/// values sealed to the researcher's public key, bound to (project, holder). The caller
/// reads its records (CSV, a database, …) and pushes them; the ids should be those of its
/// token upload, each once.
pub struct SealedContentWriter {
    sealer: ContentSealer,
    out: Vec<u8>,
    records: u64,
}

impl std::fmt::Debug for SealedContentWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedContentWriter")
            .field("records", &self.records)
            .finish_non_exhaustive()
    }
}

impl SealedContentWriter {
    /// A file of `party`'s `columns` in `project`, sealed to `researcher_public_key`
    /// (X25519, 32 bytes).
    ///
    /// # Errors
    /// [`LuClientError::Content`] for a public key that is not a valid X25519 key.
    pub fn new(
        project: &str,
        party: &str,
        columns: Vec<String>,
        researcher_public_key: &[u8],
    ) -> Result<Self, LuClientError> {
        let sealer =
            ContentSealer::new(researcher_public_key, project, party).map_err(|source| {
                LuClientError::Content {
                    context: "the researcher's public key".to_owned(),
                    source,
                }
            })?;
        let mut out = Vec::new();
        content_file::encode_header(
            &mut out,
            &ContentHeader {
                format: content_file::FORMAT.to_owned(),
                version: content_file::VERSION,
                project: project.to_owned(),
                party: party.to_owned(),
                columns,
                researcher_public_key: hex::encode(researcher_public_key),
                encapsulated_key: B64.encode(sealer.encapsulated_key()),
            },
        );
        Ok(Self {
            sealer,
            out,
            records: 0,
        })
    }

    /// Seals one record's values (in the header's column order).
    pub fn push(&mut self, id: &str, values: &[String]) {
        content_file::encode_record(&mut self.out, id, &self.sealer.seal(values));
        self.records += 1;
    }

    /// Records pushed so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The finished file (with its trailer).
    pub fn finish(mut self) -> Vec<u8> {
        content_file::encode_trailer(&mut self.out, self.records);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(project: &str, key: &ResearcherKeyPair) -> SealedRelease {
        let mut w = SealedContentWriter::new(
            project,
            "holder-b",
            vec!["pref".into(), "dx".into()],
            &key.public_key(),
        )
        .unwrap();
        w.push("7", &["東京都".into(), "E11".into()]);
        w.push("9", &["大阪府".into(), String::new()]);
        assert_eq!(w.records(), 2);
        let file = w.finish();
        let (header, records) = content_file::parse(file.as_slice()).unwrap();
        assert_eq!(header.columns, ["pref", "dx"]);
        let enc = B64.decode(header.encapsulated_key.as_bytes()).unwrap();
        SealedRelease {
            release_id: 1,
            job_id: 4,
            holders: vec!["holder-a".into(), "holder-b".into()],
            headers: vec![v1::SealedContentHeader {
                party: "holder-b".into(),
                columns: header.columns,
                encapsulated_key: enc,
            }],
            clusters: records
                .into_iter()
                .enumerate()
                .map(|(i, (_, sealed))| v1::ReleasedCluster {
                    pseudonym: format!("{i:032x}"),
                    records: vec![v1::SealedRecord { holder: 1, sealed }],
                    weakest_link_probability: None,
                    changed: false,
                })
                .collect(),
            estimated_precision: None,
            estimated_recall: None,
            ..SealedRelease::default()
        }
    }

    #[test]
    fn sealed_content_opens_only_for_its_researcher_and_project() {
        let key = ResearcherKeyPair::derive(b"researcher");
        let r = release("p", &key);
        let opened = open_release(&r, &key, "p").unwrap();
        assert_eq!(opened.columns[&1], ["pref", "dx"]);
        assert_eq!(
            opened.clusters[0].records,
            [(1, vec!["東京都".to_owned(), "E11".to_owned()])]
        );
        assert_eq!(opened.clusters[1].records[0].1[1], "");
        // Another researcher's key, or the same content claimed for another project, fails.
        let other = ResearcherKeyPair::derive(b"someone else");
        assert!(matches!(
            open_release(&r, &other, "p"),
            Err(LuClientError::Content { .. })
        ));
        assert!(matches!(
            open_release(&r, &key, "q"),
            Err(LuClientError::Content { .. })
        ));
        // A record of a holder that sent no header is refused.
        let mut stray = r.clone();
        stray.clusters[0].records[0].holder = 0;
        assert!(matches!(
            open_release(&stray, &key, "p"),
            Err(LuClientError::InvalidResponse { .. })
        ));
    }

    #[test]
    fn only_transient_statuses_are_retried() {
        assert!(upload_retryable(Code::Unavailable));
        assert!(upload_retryable(Code::Internal));
        assert!(!upload_retryable(Code::PermissionDenied));
        assert!(!upload_retryable(Code::InvalidArgument));
    }
}
