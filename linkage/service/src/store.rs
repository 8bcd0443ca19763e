//! The linkage unit's storage (SPEC.md §10.6): SQLite (embedded default) or PostgreSQL
//! (production), one SQL text for both — every method's body is expanded once per backend by
//! the `on_db!` macro, so the two cannot drift apart.
//!
//! What is stored: projects (holders, researcher public key, schema), uploads as chunks (the
//! holder's file bytes: token files, sealed content), jobs, a completed job's results as
//! chunks of packed rows (record id → pseudonym, [`crate::members`]), releases and a
//! hash-chained audit log. Nothing here is a key,
//! an identifier or plaintext content.
//!
//! Idempotence: a chunk is keyed by (project, party, upload, index) and inserted with
//! `ON CONFLICT DO NOTHING`; a job's results are written in one transaction that first
//! deletes any rows of the same job (a job rerun after a crash writes each row once).

use std::str::FromStr as _;
use std::time::Duration;

use renketsu_keys::audit::{AuditEntry, AuditEvent, AuditHead, HASH_LEN};
use sqlx::AssertSqlSafe;

use crate::members::{Member, MemberChunk, PSEUDONYM_BYTES, pseudonym_hex};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// Errors of the store. Messages name projects, parties, uploads and jobs — never content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// `create_project` with a name already taken.
    #[error("linkage project {0:?} already exists")]
    ProjectExists(String),
    /// No such project.
    #[error("no linkage project {0:?}")]
    ProjectNotFound(String),
    /// A chunk or upload that contradicts what is stored (other bytes for a stored index,
    /// another kind or size for the same upload id).
    #[error("upload conflict: {0}")]
    Conflict(String),
    /// A job is running already.
    #[error("project {project:?} has job {job_id} running")]
    JobRunning {
        /// Project.
        project: String,
        /// The running job.
        job_id: u64,
    },
    /// A stored row breaks an invariant (edited outside the linkage unit).
    #[error("store is corrupt: {0}")]
    Corrupt(String),
    /// The database reported an error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The URL names no supported backend.
    #[error("unsupported database URL {0:?}: use sqlite:PATH, sqlite::memory: or postgres://…")]
    UnsupportedUrl(String),
}

#[derive(Clone, Debug)]
enum Db {
    Sqlite(SqlitePool),
    Pg(PgPool),
}

/// Runs `$body` with `$pool` bound to the backend's pool (the same SQL for both).
macro_rules! on_db {
    ($self:expr, $pool:ident => $body:expr) => {
        match &$self.db {
            Db::Sqlite($pool) => $body,
            Db::Pg($pool) => $body,
        }
    };
}

/// The linkage unit's store. Cheap to clone (a connection pool).
#[derive(Clone, Debug)]
pub struct LuStore {
    db: Db,
}

/// A linkage project as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectRow {
    /// Name.
    pub name: String,
    /// Holders in order.
    pub holders: Vec<String>,
    /// Researcher party.
    pub researcher: String,
    /// Researcher X25519 public key.
    pub researcher_public_key: Vec<u8>,
    /// Schema file bytes.
    pub schema_toml: Vec<u8>,
    /// Hex SHA-256 of the schema.
    pub schema_digest: String,
    /// Holders declared to hold duplicates.
    pub duplicates: Vec<String>,
    /// Pseudonym salt (32 bytes).
    pub pid_salt: Vec<u8>,
    /// Opt-outs arrived after the latest job.
    pub stale: bool,
    /// Creation time (ms).
    pub created_unix_ms: i64,
}

/// One upload as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadRow {
    /// Project.
    pub project: String,
    /// Holder.
    pub party: String,
    /// Hex SHA-256 of the file.
    pub upload_id: String,
    /// `UploadKind` value.
    pub kind: i32,
    /// Chunks of the file.
    pub total_chunks: u32,
    /// Bytes of the file.
    pub total_bytes: u64,
    /// All chunks stored and the file checked.
    pub complete: bool,
    /// Replaced by a later complete upload of the same kind.
    pub superseded: bool,
    /// Records in the file (once complete).
    pub records: u64,
    /// Token and deletion batches (SPEC.md §10.3.2), once complete: their place `1, 2, …` in
    /// the holder's sequence of batches; 0 otherwise.
    pub batch_seq: u64,
}

/// One job as stored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobRow {
    /// Project.
    pub project: String,
    /// Job id.
    pub job_id: u64,
    /// `JobState` value.
    pub state: i32,
    /// Stage text.
    pub stage: String,
    /// Progress 0–1.
    pub progress: f64,
    /// Failure reason.
    pub error: String,
    /// Start (ms).
    pub started_unix_ms: i64,
    /// End (ms), 0 while running.
    pub finished_unix_ms: i64,
    /// Records linked.
    pub records: u64,
    /// Clusters.
    pub clusters: u64,
    /// Clusters excluded by opt-outs.
    pub excluded: u64,
    /// Cross-holder pairs.
    pub links: u64,
    /// While running, what was asked (`auto`: incremental where exact, `full`); once DONE,
    /// what ran (`full`, `incremental (…)`, `full (incremental not possible: …)`; SPEC.md
    /// §10.3.3). Empty for jobs made before incremental jobs.
    pub mode: String,
    /// What a DONE job linked (JSON, [`crate::service`]'s job basis); empty otherwise.
    pub basis: String,
}

/// `UploadKind` values as stored (the wire enum values).
pub mod upload_kind {
    /// A token file: the holder's base state.
    pub const TOKENS: i32 = 1;
    /// Sealed content.
    pub const CONTENT: i32 = 2;
    /// Opt-out tokens.
    pub const OPT_OUT: i32 = 3;
    /// A token batch: new and corrected records on top of the holder's state.
    pub const TOKEN_BATCH: i32 = 4;
    /// A deletion batch: record ids deleted from the holder's state.
    pub const DELETIONS: i32 = 5;

    /// Whether `kind` is one of the batch kinds (applied in `batch_seq` order).
    pub fn is_batch(kind: i32) -> bool {
        kind == TOKEN_BATCH || kind == DELETIONS
    }
}

/// `JobState::Running` etc. as stored (the wire enum values).
pub mod job_state {
    /// Running.
    pub const RUNNING: i32 = 1;
    /// Done.
    pub const DONE: i32 = 2;
    /// Failed.
    pub const FAILED: i32 = 3;
    /// Cancelled.
    pub const CANCELLED: i32 = 4;
}

type ProjectTuple = (
    String,
    String,
    String,
    Vec<u8>,
    Vec<u8>,
    String,
    String,
    Vec<u8>,
    i64,
    i64,
);

fn project_row(t: ProjectTuple) -> Result<ProjectRow, StoreError> {
    let list = |s: &str| {
        serde_json::from_str::<Vec<String>>(s).map_err(|_| {
            StoreError::Corrupt(format!("project {:?}: a party list is not JSON", t.0))
        })
    };
    Ok(ProjectRow {
        holders: list(&t.1)?,
        duplicates: list(&t.6)?,
        name: t.0,
        researcher: t.2,
        researcher_public_key: t.3,
        schema_toml: t.4,
        schema_digest: t.5,
        pid_salt: t.7,
        stale: t.8 != 0,
        created_unix_ms: t.9,
    })
}

const PROJECT_COLS: &str = "name, holders, researcher, researcher_public_key, schema_toml, \
     schema_digest, duplicates, pid_salt, stale, created_unix_ms";

type UploadTuple = (String, String, String, i64, i64, i64, i64, i64, i64, i64);
const UPLOAD_COLS: &str = "project, party, upload_id, kind, total_chunks, total_bytes, complete, \
     superseded, records, batch_seq";

fn upload_row(t: UploadTuple) -> UploadRow {
    UploadRow {
        project: t.0,
        party: t.1,
        upload_id: t.2,
        kind: t.3 as i32,
        total_chunks: t.4 as u32,
        total_bytes: t.5 as u64,
        complete: t.6 != 0,
        superseded: t.7 != 0,
        records: t.8 as u64,
        batch_seq: t.9 as u64,
    }
}

type JobTuple = (
    String,
    i64,
    i64,
    String,
    f64,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    String,
    String,
);
const JOB_COLS: &str = "project, job_id, state, stage, progress, error, started_unix_ms, \
     finished_unix_ms, records, clusters, excluded, links, mode, basis";

fn job_row(t: JobTuple) -> JobRow {
    JobRow {
        project: t.0,
        job_id: t.1 as u64,
        state: t.2 as i32,
        stage: t.3,
        progress: t.4,
        error: t.5,
        started_unix_ms: t.6,
        finished_unix_ms: t.7,
        records: t.8 as u64,
        clusters: t.9 as u64,
        excluded: t.10 as u64,
        links: t.11 as u64,
        mode: t.12,
        basis: t.13,
    }
}

type AuditTuple = (
    i64,
    i64,
    String,
    i64,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    Vec<u8>,
    Vec<u8>,
);

fn audit_row(t: AuditTuple) -> Result<AuditEntry, StoreError> {
    let hash = |v: Vec<u8>| -> Result<[u8; HASH_LEN], StoreError> {
        v.try_into()
            .map_err(|_| StoreError::Corrupt(format!("audit entry {}: hash length", t.0)))
    };
    Ok(AuditEntry {
        sequence: t.0 as u64,
        event: AuditEvent {
            unix_time_ms: t.1,
            actor_party: t.2,
            role: t.3 as i32,
            rpc: t.4,
            project: t.5,
            recipe: t.6,
            epoch: t.7 as u64,
            item_count: t.8 as u64,
            status_code: t.9 as u32,
        },
        prev_hash: hash(t.10)?,
        entry_hash: hash(t.11)?,
    })
}

/// The first statement of a transaction that reads and then writes a project's rows: a
/// no-op write of the project row. On SQLite it takes the write lock up front (a deferred
/// transaction that reads first can fail with "database is locked" when it tries to write);
/// on PostgreSQL it locks the row, so that starting a job and completing an upload of the
/// same project are serialized.
const LOCK_PROJECT: &str = "UPDATE lu_projects SET stale = stale WHERE name = $1";

/// Pseudonyms per multi-row INSERT into `lu_release_pseudonyms`.
const MEMBER_BATCH: usize = 2_000;

/// One issued pseudonym (`lu_pseudonyms`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PseudonymRow {
    /// The pseudonym.
    pub pseudonym: [u8; PSEUDONYM_BYTES],
    /// The job that issued it.
    pub born_job: u64,
    /// The job that retired it (0: it names a cluster).
    pub retired_job: u64,
    /// The job that withdrew it (0: not withdrawn).
    pub withdrawn_job: u64,
}

impl std::fmt::Debug for PseudonymRow {
    /// The pseudonym is left out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PseudonymRow")
            .field("born_job", &self.born_job)
            .field("retired_job", &self.retired_job)
            .field("withdrawn_job", &self.withdrawn_job)
            .finish_non_exhaustive()
    }
}

/// One crosswalk event (`lu_crosswalk`); pseudonyms as 32 hex digits, `""` for none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrosswalkRow {
    /// The job.
    pub job_id: u64,
    /// `new`, `merge`, `split`, `retire` or `withdraw`.
    pub kind: String,
    /// The pseudonym before.
    pub old: String,
    /// The pseudonym after.
    pub new: String,
}

/// What a job changes in the pseudonym registry and the crosswalk (pseudonyms as hex).
#[derive(Clone, Debug, Default)]
pub struct PseudonymChanges {
    /// Pseudonyms to register, with the job that issued them.
    pub registered: Vec<(String, u64)>,
    /// Pseudonyms retired by the job.
    pub retired: Vec<String>,
    /// Pseudonyms withdrawn by the job.
    pub withdrawn: Vec<String>,
    /// The job's events, in order (`job_id` unused).
    pub events: Vec<CrosswalkRow>,
}

/// Upload chunks a job's reader fetches ahead of the parser.
const READ_AHEAD: usize = 4;

/// An upload's bytes for a blocking reader (a job's thread): a task fetches the chunks in
/// order, one query each, at most [`READ_AHEAD`] ahead of the reader, so the file is never
/// held whole. A store error ends the stream with an I/O error.
pub struct UploadReader {
    rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, StoreError>>,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
    digest: Option<(sha2::Sha256, u64)>,
    waited: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl UploadReader {
    /// Nanoseconds the reader has spent waiting for the store (shared: readable while the
    /// reader is in use elsewhere).
    pub fn waited_nanos(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        std::sync::Arc::clone(&self.waited)
    }

    /// Also computes the SHA-256 and size of the bytes read (each chunk hashed as it
    /// arrives); see [`Self::finish`].
    pub fn hashing(mut self) -> Self {
        self.digest = Some((sha2::Sha256::default(), 0));
        self
    }

    /// Reads what is left and returns the size in bytes and SHA-256 of the whole upload
    /// (with [`Self::hashing`]; otherwise zeros).
    ///
    /// # Errors
    /// A store error while reading the rest.
    pub fn finish(mut self) -> std::io::Result<(u64, [u8; 32])> {
        use std::io::BufRead as _;
        loop {
            let n = self.fill_buf()?.len();
            if n == 0 {
                break;
            }
            self.consume(n);
        }
        Ok(self.digest.take().map_or((0, [0; 32]), |(h, n)| {
            use sha2::Digest as _;
            (n, h.finalize().into())
        }))
    }
}

impl std::io::Read for UploadReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        use std::io::BufRead as _;
        let b = self.fill_buf()?;
        let n = b.len().min(out.len());
        out[..n].copy_from_slice(&b[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl std::io::BufRead for UploadReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.pos == self.buf.len() && !self.done {
            let t = std::time::Instant::now();
            let received = self.rx.blocking_recv();
            self.waited.fetch_add(
                u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX),
                std::sync::atomic::Ordering::Relaxed,
            );
            match received {
                Some(Ok(chunk)) => {
                    if let Some((h, n)) = self.digest.as_mut() {
                        sha2::Digest::update(h, &chunk);
                        *n += chunk.len() as u64;
                    }
                    self.buf = chunk;
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => self.done = true,
            }
        }
        Ok(&self.buf[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
    }
}

impl LuStore {
    /// Opens the store at `url` — `sqlite:PATH` (created if missing), `sqlite::memory:` or
    /// `postgres://…` — and applies the migrations of `linkage/service/migrations/<backend>`.
    ///
    /// # Errors
    /// [`StoreError::UnsupportedUrl`], [`StoreError::Database`], [`StoreError::Migrate`].
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            let memory = url.contains(":memory:") || url.contains("mode=memory");
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(60))
                .journal_mode(if memory {
                    SqliteJournalMode::Memory
                } else {
                    SqliteJournalMode::Wal
                })
                .synchronous(SqliteSynchronous::Full)
                // Deleted rows (a refused upload) are overwritten with zeros, not left in
                // free pages.
                .pragma("secure_delete", "ON");
            if !memory {
                // Created 0600 before SQLite opens it (its -wal and -shm files take this
                // mode); a failure here (no such directory) is reported by the connect below.
                let _ = renketsu_keys::private_file::create_private(opts.get_filename());
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(if memory { 1 } else { 4 })
                .min_connections(if memory { 1 } else { 0 })
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(opts)
                .await?;
            sqlx::migrate!("migrations/sqlite").run(&pool).await?;
            Ok(Self {
                db: Db::Sqlite(pool),
            })
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(30))
                .connect(url)
                .await?;
            sqlx::migrate!("migrations/postgres").run(&pool).await?;
            Ok(Self { db: Db::Pg(pool) })
        } else {
            Err(StoreError::UnsupportedUrl(url.to_owned()))
        }
    }

    /// Closes every connection.
    pub async fn close(&self) {
        on_db!(self, p => p.close().await)
    }

    /// Creates a project.
    ///
    /// # Errors
    /// [`StoreError::ProjectExists`].
    pub async fn create_project(&self, p: &ProjectRow) -> Result<(), StoreError> {
        let holders = serde_json::to_string(&p.holders).expect("strings");
        let duplicates = serde_json::to_string(&p.duplicates).expect("strings");
        let sql = format!(
            "INSERT INTO lu_projects ({PROJECT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (name) DO NOTHING"
        );
        let n = on_db!(self, pool => sqlx::query(AssertSqlSafe(sql.as_str()))
            .bind(&p.name)
            .bind(&holders)
            .bind(&p.researcher)
            .bind(&p.researcher_public_key)
            .bind(&p.schema_toml)
            .bind(&p.schema_digest)
            .bind(&duplicates)
            .bind(&p.pid_salt)
            .bind(i64::from(p.stale))
            .bind(p.created_unix_ms)
            .execute(pool)
            .await?
            .rows_affected());
        if n == 0 {
            return Err(StoreError::ProjectExists(p.name.clone()));
        }
        Ok(())
    }

    /// One project, if it exists.
    pub async fn project(&self, name: &str) -> Result<Option<ProjectRow>, StoreError> {
        let sql = format!("SELECT {PROJECT_COLS} FROM lu_projects WHERE name = $1");
        let row: Option<ProjectTuple> = on_db!(self, pool => sqlx::query_as(AssertSqlSafe(sql.as_str()))
            .bind(name)
            .fetch_optional(pool)
            .await?);
        row.map(project_row).transpose()
    }

    /// Every project, by name.
    pub async fn projects(&self) -> Result<Vec<ProjectRow>, StoreError> {
        let sql = format!("SELECT {PROJECT_COLS} FROM lu_projects ORDER BY name");
        let rows: Vec<ProjectTuple> = on_db!(self, pool => sqlx::query_as(AssertSqlSafe(sql.as_str()))
            .fetch_all(pool)
            .await?);
        rows.into_iter().map(project_row).collect()
    }

    /// Deletes a project and everything stored for it (not its audit entries).
    ///
    /// # Errors
    /// [`StoreError::ProjectNotFound`].
    pub async fn delete_project(&self, name: &str) -> Result<(), StoreError> {
        // Children first: SQLite applies ON DELETE CASCADE only with foreign keys on, and
        // lu_members / lu_chunks reference composite keys.
        let n = on_db!(self, pool => {
            let mut tx = pool.begin().await?;
            for table in [
                "lu_crosswalk",
                "lu_pseudonyms",
                "lu_release_pseudonyms",
                "lu_releases",
                "lu_job_reports",
                "lu_member_chunks",
                "lu_jobs",
                "lu_chunks",
                "lu_uploads",
            ] {
                sqlx::query(AssertSqlSafe(format!("DELETE FROM {table} WHERE project = $1")))
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
            }
            let n = sqlx::query("DELETE FROM lu_projects WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            n
        });
        if n == 0 {
            return Err(StoreError::ProjectNotFound(name.to_owned()));
        }
        Ok(())
    }

    /// Marks the project stale (opt-outs after its latest job) or fresh.
    pub async fn set_stale(&self, project: &str, stale: bool) -> Result<(), StoreError> {
        on_db!(self, pool => sqlx::query("UPDATE lu_projects SET stale = $1 WHERE name = $2")
            .bind(i64::from(stale))
            .bind(project)
            .execute(pool)
        .await?
        .rows_affected());
        Ok(())
    }

    /// Registers an upload (or finds it): the same id with another kind or size is a
    /// [`StoreError::Conflict`]. A superseded upload sent again is reset to incomplete (its
    /// chunks are received again and it becomes current when complete).
    pub async fn begin_upload(&self, u: &UploadRow, now_ms: i64) -> Result<UploadRow, StoreError> {
        on_db!(self, pool => sqlx::query(
            "INSERT INTO lu_uploads (project, party, upload_id, kind, total_chunks, total_bytes,
                 complete, superseded, records, created_unix_ms)
             VALUES ($1, $2, $3, $4, $5, $6, 0, 0, 0, $7)
             ON CONFLICT (project, party, upload_id) DO NOTHING",
        )
        .bind(&u.project)
        .bind(&u.party)
        .bind(&u.upload_id)
        .bind(i64::from(u.kind))
        .bind(i64::from(u.total_chunks))
        .bind(u.total_bytes as i64)
        .bind(now_ms)
        .execute(pool)
        .await?
        .rows_affected());
        let mut stored = self
            .upload(&u.project, &u.party, &u.upload_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("an upload row vanished".to_owned()))?;
        if stored.superseded && (stored.kind, stored.total_bytes) == (u.kind, u.total_bytes) {
            // The holder sends a file it had replaced: it is received (and checked) again
            // and becomes current when complete. Its chunks were dropped when superseded
            // (or are still pinned by a job: kept, they count as stored).
            on_db!(self, pool => sqlx::query(
                "UPDATE lu_uploads SET complete = 0, superseded = 0, records = 0, batch_seq = 0, created_unix_ms = $1
                 WHERE project = $2 AND party = $3 AND upload_id = $4 AND superseded = 1",
            )
            .bind(now_ms)
            .bind(&u.project)
            .bind(&u.party)
            .bind(&u.upload_id)
            .execute(pool)
            .await?
            .rows_affected());
            stored.complete = false;
            stored.superseded = false;
            stored.records = 0;
            stored.batch_seq = 0;
        }
        if (stored.kind, stored.total_chunks, stored.total_bytes)
            != (u.kind, u.total_chunks, u.total_bytes)
        {
            return Err(StoreError::Conflict(format!(
                "upload {} is stored with kind {}, {} chunks, {} bytes; this request says kind {}, {} chunks, {} bytes",
                u.upload_id,
                stored.kind,
                stored.total_chunks,
                stored.total_bytes,
                u.kind,
                u.total_chunks,
                u.total_bytes
            )));
        }
        Ok(stored)
    }

    /// One upload.
    pub async fn upload(
        &self,
        project: &str,
        party: &str,
        upload_id: &str,
    ) -> Result<Option<UploadRow>, StoreError> {
        let sql = format!(
            "SELECT {UPLOAD_COLS} FROM lu_uploads WHERE project = $1 AND party = $2 AND upload_id = $3"
        );
        let row: Option<UploadTuple> = on_db!(self, pool => sqlx::query_as(AssertSqlSafe(sql.as_str()))
            .bind(project)
            .bind(party)
            .bind(upload_id)
            .fetch_optional(pool)
            .await?);
        Ok(row.map(upload_row))
    }

    /// Stores one chunk unless it is stored already: `true` if this call stored it.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the index is stored with other bytes.
    pub async fn put_chunk(
        &self,
        project: &str,
        party: &str,
        upload_id: &str,
        index: u32,
        sha256: &[u8],
        data: &[u8],
    ) -> Result<bool, StoreError> {
        let n = on_db!(self, pool => sqlx::query(
            "INSERT INTO lu_chunks (project, party, upload_id, idx, sha256, data)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (project, party, upload_id, idx) DO NOTHING",
        )
        .bind(project)
        .bind(party)
        .bind(upload_id)
        .bind(i64::from(index))
        .bind(sha256)
        .bind(data)
        .execute(pool)
        .await?
        .rows_affected());
        if n == 1 {
            return Ok(true);
        }
        let stored: Option<Vec<u8>> = on_db!(self, pool => sqlx::query_scalar(
            "SELECT sha256 FROM lu_chunks WHERE project = $1 AND party = $2 AND upload_id = $3 AND idx = $4",
        )
        .bind(project)
        .bind(party)
        .bind(upload_id)
        .bind(i64::from(index))
        .fetch_optional(pool)
        .await?);
        match stored {
            Some(s) if s == sha256 => Ok(false),
            _ => Err(StoreError::Conflict(format!(
                "chunk {index} of upload {upload_id} is stored with other bytes"
            ))),
        }
    }

    /// Indices of the stored chunks of an upload, ascending.
    pub async fn stored_chunks(
        &self,
        project: &str,
        party: &str,
        upload_id: &str,
    ) -> Result<Vec<u32>, StoreError> {
        let rows: Vec<i64> = on_db!(self, pool => sqlx::query_scalar(
            "SELECT idx FROM lu_chunks WHERE project = $1 AND party = $2 AND upload_id = $3 ORDER BY idx",
        )
        .bind(project)
        .bind(party)
        .bind(upload_id)
        .fetch_all(pool)
        .await?);
        Ok(rows.into_iter().map(|i| i as u32).collect())
    }

    /// The whole file of an upload: its chunks concatenated in order. The chunks are streamed
    /// from the database into one buffer sized from the upload's `total_bytes` (one copy of
    /// the file in memory, not two).
    pub async fn upload_bytes(
        &self,
        project: &str,
        party: &str,
        upload_id: &str,
    ) -> Result<Vec<u8>, StoreError> {
        use tokio_stream::StreamExt as _;
        let total: Option<i64> = on_db!(self, pool => sqlx::query_scalar(
            "SELECT total_bytes FROM lu_uploads WHERE project = $1 AND party = $2 AND upload_id = $3",
        )
        .bind(project)
        .bind(party)
        .bind(upload_id)
        .fetch_optional(pool)
        .await?);
        let mut out = Vec::with_capacity(usize::try_from(total.unwrap_or(0)).unwrap_or(0));
        on_db!(self, pool => {
            let mut chunks = sqlx::query_scalar::<_, Vec<u8>>(
                "SELECT data FROM lu_chunks WHERE project = $1 AND party = $2 AND upload_id = $3 ORDER BY idx",
            )
            .bind(project)
            .bind(party)
            .bind(upload_id)
            .fetch(pool);
            while let Some(chunk) = chunks.next().await {
                out.extend_from_slice(&chunk?);
            }
        });
        Ok(out)
    }

    /// An upload's bytes as a blocking reader ([`UploadReader`]): its chunks in order,
    /// fetched by a task on the current runtime. Call from within the runtime; read from a
    /// blocking thread.
    pub fn upload_reader(&self, project: &str, party: &str, upload_id: &str) -> UploadReader {
        let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD);
        let (store, project, party, upload_id) = (
            self.clone(),
            project.to_owned(),
            party.to_owned(),
            upload_id.to_owned(),
        );
        tokio::spawn(async move {
            for idx in 0i64.. {
                let chunk: Result<Option<Vec<u8>>, StoreError> = async {
                    Ok(on_db!(store, pool => sqlx::query_scalar(
                        "SELECT data FROM lu_chunks WHERE project = $1 AND party = $2 AND upload_id = $3 AND idx = $4",
                    )
                    .bind(&project)
                    .bind(&party)
                    .bind(&upload_id)
                    .bind(idx)
                    .fetch_optional(pool)
                    .await?))
                }
                .await;
                let item = match chunk {
                    Ok(Some(c)) => Ok(c),
                    Ok(None) => return,
                    Err(e) => Err(e),
                };
                let stop = item.is_err();
                if tx.send(item).await.is_err() || stop {
                    return;
                }
            }
        });
        UploadReader {
            rx,
            buf: Vec::new(),
            pos: 0,
            done: false,
            digest: None,
            waited: std::sync::Arc::default(),
        }
    }

    /// Marks an upload complete with its record count; for tokens and content, the holder's
    /// earlier complete uploads of the same kind are superseded and their chunks dropped —
    /// unless a job of the project is running: it may be reading them, so they are pinned
    /// until [`Self::purge_superseded`] after the job. Opt-out uploads accumulate. A token
    /// upload also supersedes the holder's token and deletion batches; a batch
    /// ([`upload_kind::is_batch`]) accumulates and takes the next `batch_seq` of the holder
    /// (a batch completed again after being superseded takes a new one).
    pub async fn complete_upload(
        &self,
        u: &UploadRow,
        records: u64,
        accumulate: bool,
    ) -> Result<(), StoreError> {
        on_db!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(LOCK_PROJECT).bind(&u.project).execute(&mut *tx).await?;
            // A running job may be reading the uploads this one supersedes: their chunks stay
            // until the job ends ([`Self::purge_superseded`]).
            let running: Option<i64> = sqlx::query_scalar(
                "SELECT job_id FROM lu_jobs WHERE project = $1 AND state = $2 LIMIT 1",
            )
            .bind(&u.project)
            .bind(i64::from(job_state::RUNNING))
            .fetch_optional(&mut *tx)
            .await?;
            if !accumulate && !upload_kind::is_batch(u.kind) {
                // A token upload starts the holder's state afresh: its batches go with the
                // token upload they were on top of.
                let (k1, k2, k3) = if u.kind == upload_kind::TOKENS {
                    (upload_kind::TOKENS, upload_kind::TOKEN_BATCH, upload_kind::DELETIONS)
                } else {
                    (u.kind, u.kind, u.kind)
                };
                let old: Vec<String> = sqlx::query_scalar(
                    "SELECT upload_id FROM lu_uploads WHERE project = $1 AND party = $2
                         AND kind IN ($3, $5, $6)
                         AND complete = 1 AND superseded = 0 AND upload_id <> $4",
                )
                .bind(&u.project)
                .bind(&u.party)
                .bind(i64::from(k1))
                .bind(&u.upload_id)
                .bind(i64::from(k2))
                .bind(i64::from(k3))
                .fetch_all(&mut *tx)
                .await?;
                for id in old {
                    sqlx::query("UPDATE lu_uploads SET superseded = 1 WHERE project = $1 AND party = $2 AND upload_id = $3")
                        .bind(&u.project)
                        .bind(&u.party)
                        .bind(&id)
                        .execute(&mut *tx)
                        .await?;
                    if running.is_none() {
                        sqlx::query("DELETE FROM lu_chunks WHERE project = $1 AND party = $2 AND upload_id = $3")
                            .bind(&u.project)
                            .bind(&u.party)
                            .bind(&id)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
            // A batch takes the next place in the holder's sequence (under the project lock,
            // so two batches completing at once get two places).
            let seq: i64 = if upload_kind::is_batch(u.kind) {
                let last: Option<i64> = sqlx::query_scalar(
                    "SELECT CAST(MAX(batch_seq) AS BIGINT) FROM lu_uploads WHERE project = $1 AND party = $2",
                )
                .bind(&u.project)
                .bind(&u.party)
                .fetch_one(&mut *tx)
                .await?;
                last.unwrap_or(0) + 1
            } else {
                0
            };
            sqlx::query(
                "UPDATE lu_uploads SET complete = 1, superseded = 0, records = $1, batch_seq = $5
                 WHERE project = $2 AND party = $3 AND upload_id = $4",
            )
            .bind(records as i64)
            .bind(&u.project)
            .bind(&u.party)
            .bind(&u.upload_id)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Deletes an upload and its chunks in one transaction (a refused or expired upload);
    /// `true` if it existed. On SQLite the deleted bytes are zeroed (`secure_delete`) and the
    /// WAL is checkpointed and truncated afterwards, so they are in no file of the store.
    pub async fn delete_upload(
        &self,
        project: &str,
        party: &str,
        upload_id: &str,
    ) -> Result<bool, StoreError> {
        let n = on_db!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM lu_chunks WHERE project = $1 AND party = $2 AND upload_id = $3")
                .bind(project)
                .bind(party)
                .bind(upload_id)
                .execute(&mut *tx)
                .await?;
            let n = sqlx::query("DELETE FROM lu_uploads WHERE project = $1 AND party = $2 AND upload_id = $3")
                .bind(project)
                .bind(party)
                .bind(upload_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            n
        });
        self.checkpoint().await;
        Ok(n > 0)
    }

    /// SQLite: copies the WAL into the database file and truncates it (best effort: a
    /// reader in progress can keep frames until the next checkpoint). PostgreSQL: nothing.
    pub async fn checkpoint(&self) {
        if let Db::Sqlite(pool) = &self.db
            && let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(pool)
                .await
        {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
    }

    /// Deletes every incomplete upload (of any project and holder) registered before
    /// `before_ms`, with its chunks; returns how many.
    pub async fn expire_uploads(&self, before_ms: i64) -> Result<u64, StoreError> {
        let old: Vec<(String, String, String)> = on_db!(self, pool => sqlx::query_as(
            "SELECT project, party, upload_id FROM lu_uploads WHERE complete = 0 AND created_unix_ms < $1",
        )
        .bind(before_ms)
        .fetch_all(pool)
        .await?);
        let mut n = 0;
        for (project, party, id) in old {
            if self.delete_upload(&project, &party, &id).await? {
                tracing::info!(project = %project, party = %party, upload = %&id[..id.len().min(12)], "incomplete upload expired");
                n += 1;
            }
        }
        Ok(n)
    }

    /// Bytes announced by `party`'s incomplete uploads in every project, except `upload_id`
    /// (for the per-holder cap).
    pub async fn incomplete_bytes(&self, party: &str, upload_id: &str) -> Result<u64, StoreError> {
        let n: Option<i64> = on_db!(self, pool => sqlx::query_scalar(
            "SELECT CAST(SUM(total_bytes) AS BIGINT) FROM lu_uploads WHERE party = $1 AND complete = 0 AND upload_id <> $2",
        )
        .bind(party)
        .bind(upload_id)
        .fetch_one(pool)
        .await?);
        Ok(n.unwrap_or(0).max(0) as u64)
    }

    /// Drops the chunks of `project`'s superseded uploads once no job of the project runs
    /// (they were pinned for the job that read them); returns how many chunks were dropped.
    pub async fn purge_superseded(&self, project: &str) -> Result<u64, StoreError> {
        let n = on_db!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(LOCK_PROJECT).bind(project).execute(&mut *tx).await?;
            let running: Option<i64> = sqlx::query_scalar(
                "SELECT job_id FROM lu_jobs WHERE project = $1 AND state = $2 LIMIT 1",
            )
            .bind(project)
            .bind(i64::from(job_state::RUNNING))
            .fetch_optional(&mut *tx)
            .await?;
            let n = if running.is_none() {
                sqlx::query(
                    "DELETE FROM lu_chunks WHERE project = $1 AND (party, upload_id) IN
                         (SELECT party, upload_id FROM lu_uploads WHERE project = $1 AND superseded = 1)",
                )
                .bind(project)
                .execute(&mut *tx)
                .await?
                .rows_affected()
            } else {
                0
            };
            tx.commit().await?;
            n
        });
        Ok(n)
    }

    /// Marks one upload superseded and drops its chunks.
    pub async fn supersede_upload(
        &self,
        project: &str,
        party: &str,
        upload_id: &str,
    ) -> Result<(), StoreError> {
        on_db!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE lu_uploads SET superseded = 1 WHERE project = $1 AND party = $2 AND upload_id = $3")
                .bind(project)
                .bind(party)
                .bind(upload_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM lu_chunks WHERE project = $1 AND party = $2 AND upload_id = $3")
                .bind(project)
                .bind(party)
                .bind(upload_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// The complete, current uploads of a project (all holders, all kinds), by party, kind,
    /// batch sequence, upload time.
    pub async fn current_uploads(&self, project: &str) -> Result<Vec<UploadRow>, StoreError> {
        let sql = format!(
            "SELECT {UPLOAD_COLS} FROM lu_uploads WHERE project = $1 AND complete = 1 AND superseded = 0
             ORDER BY party, kind, batch_seq, created_unix_ms, upload_id"
        );
        let rows: Vec<UploadTuple> = on_db!(self, pool => sqlx::query_as(AssertSqlSafe(sql.as_str()))
            .bind(project)
            .fetch_all(pool)
            .await?);
        Ok(rows.into_iter().map(upload_row).collect())
    }

    /// Every upload of a project (complete or not, superseded or not), by party, kind,
    /// registration time.
    pub async fn all_uploads(&self, project: &str) -> Result<Vec<UploadRow>, StoreError> {
        let sql = format!(
            "SELECT {UPLOAD_COLS} FROM lu_uploads WHERE project = $1
             ORDER BY party, kind, created_unix_ms, upload_id"
        );
        let rows: Vec<UploadTuple> = on_db!(self, pool => sqlx::query_as(AssertSqlSafe(sql.as_str()))
            .bind(project)
            .fetch_all(pool)
            .await?);
        Ok(rows.into_iter().map(upload_row).collect())
    }

    /// Starts a new job (id = last + 1) unless one is running.
    ///
    /// # Errors
    /// [`StoreError::JobRunning`].
    pub async fn start_job(&self, project: &str, now_ms: i64) -> Result<JobRow, StoreError> {
        self.start_job_mode(project, false, now_ms).await
    }

    /// [`Self::start_job`]; `full`: a full re-link even where an incremental job would be
    /// exact (recorded as the job's `mode`, `full` or `auto`, so a job resumed after a
    /// restart runs as asked).
    ///
    /// # Errors
    /// [`StoreError::JobRunning`].
    pub async fn start_job_mode(
        &self,
        project: &str,
        full: bool,
        now_ms: i64,
    ) -> Result<JobRow, StoreError> {
        let mode = if full { "full" } else { "auto" };
        let (running, last): (Option<i64>, Option<i64>) = on_db!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(LOCK_PROJECT).bind(project).execute(&mut *tx).await?;
            let running: Option<i64> = sqlx::query_scalar(
                "SELECT job_id FROM lu_jobs WHERE project = $1 AND state = $2",
            )
            .bind(project)
            .bind(i64::from(job_state::RUNNING))
            .fetch_optional(&mut *tx)
            .await?;
            let last: Option<i64> =
                sqlx::query_scalar("SELECT MAX(job_id) FROM lu_jobs WHERE project = $1")
                    .bind(project)
                    .fetch_one(&mut *tx)
                    .await?;
            if running.is_none() {
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO lu_jobs ({JOB_COLS}) VALUES ($1, $2, $3, 'queued', 0, '', $4, 0, 0, 0, 0, 0, $5, '')"
                )))
                .bind(project)
                .bind(last.unwrap_or(0) + 1)
                .bind(i64::from(job_state::RUNNING))
                .bind(now_ms)
                .bind(mode)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            (running, last)
        });
        if let Some(job_id) = running {
            return Err(StoreError::JobRunning {
                project: project.to_owned(),
                job_id: job_id as u64,
            });
        }
        self.job(project, last.unwrap_or(0) as u64 + 1)
            .await?
            .ok_or_else(|| StoreError::Corrupt("a new job vanished".to_owned()))
    }

    /// One job (`job_id` 0: the latest).
    pub async fn job(&self, project: &str, job_id: u64) -> Result<Option<JobRow>, StoreError> {
        let sql = if job_id == 0 {
            format!(
                "SELECT {JOB_COLS} FROM lu_jobs WHERE project = $1 AND job_id >= $2 ORDER BY job_id DESC LIMIT 1"
            )
        } else {
            format!("SELECT {JOB_COLS} FROM lu_jobs WHERE project = $1 AND job_id = $2")
        };
        let row: Option<JobTuple> = on_db!(self, pool => sqlx::query_as(AssertSqlSafe(sql.as_str()))
            .bind(project)
            .bind(job_id as i64)
            .fetch_optional(pool)
            .await?);
        Ok(row.map(job_row))
    }

    /// The latest job in state DONE.
    pub async fn latest_done_job(&self, project: &str) -> Result<Option<JobRow>, StoreError> {
        let sql = format!(
            "SELECT {JOB_COLS} FROM lu_jobs WHERE project = $1 AND state = $2 ORDER BY job_id DESC LIMIT 1"
        );
        let row: Option<JobTuple> = on_db!(self, pool => sqlx::query_as(AssertSqlSafe(sql.as_str()))
            .bind(project)
            .bind(i64::from(job_state::DONE))
            .fetch_optional(pool)
            .await?);
        Ok(row.map(job_row))
    }

    /// Every job in state RUNNING (to resume after a restart).
    pub async fn running_jobs(&self) -> Result<Vec<JobRow>, StoreError> {
        let sql =
            format!("SELECT {JOB_COLS} FROM lu_jobs WHERE state = $1 ORDER BY project, job_id");
        let rows: Vec<JobTuple> = on_db!(self, pool => sqlx::query_as(AssertSqlSafe(sql.as_str()))
            .bind(i64::from(job_state::RUNNING))
            .fetch_all(pool)
            .await?);
        Ok(rows.into_iter().map(job_row).collect())
    }

    /// Records a running job's stage and progress.
    pub async fn job_progress(
        &self,
        project: &str,
        job_id: u64,
        stage: &str,
        progress: f64,
    ) -> Result<(), StoreError> {
        on_db!(self, pool => sqlx::query(
            "UPDATE lu_jobs SET stage = $1, progress = $2 WHERE project = $3 AND job_id = $4 AND state = $5",
        )
        .bind(stage)
        .bind(progress)
        .bind(project)
        .bind(job_id as i64)
        .bind(i64::from(job_state::RUNNING))
        .execute(pool)
        .await?
        .rows_affected());
        Ok(())
    }

    /// Ends a running job as FAILED or CANCELLED; `false` if it was not running.
    pub async fn end_job(
        &self,
        project: &str,
        job_id: u64,
        state: i32,
        error: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let n = on_db!(self, pool => sqlx::query(
            "UPDATE lu_jobs SET state = $1, error = $2, finished_unix_ms = $3
             WHERE project = $4 AND job_id = $5 AND state = $6",
        )
        .bind(i64::from(state))
        .bind(error)
        .bind(now_ms)
        .bind(project)
        .bind(job_id as i64)
        .bind(i64::from(job_state::RUNNING))
        .execute(pool)
        .await?
        .rows_affected());
        Ok(n == 1)
    }

    /// Writes a job's results and marks it DONE, in one transaction (chunks of an earlier
    /// attempt of the same job are replaced). `report`: a scored job's `(summary.json,
    /// report.html, weakest links)` (the links: rows of a 16-byte pseudonym and an `f32`
    /// little-endian probability). `false` if the job was no longer running (cancelled):
    /// nothing is written.
    pub async fn finish_job(
        &self,
        job: &JobRow,
        chunks: &[MemberChunk],
        report: Option<(&str, &str, &[u8])>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.finish_job_with(job, chunks, report, &PseudonymChanges::default(), now_ms)
            .await
    }

    /// [`Self::finish_job`] with the job's pseudonym changes (SPEC.md §10.5.1): fresh
    /// pseudonyms registered, retired and withdrawn ones marked, the crosswalk events of the
    /// job written, all in the transaction that marks the job DONE.
    pub async fn finish_job_with(
        &self,
        job: &JobRow,
        chunks: &[MemberChunk],
        report: Option<(&str, &str, &[u8])>,
        changes: &PseudonymChanges,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let project = job.project.as_str();
        let job_id = job.job_id as i64;
        let done = on_db!(self, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query(
                "UPDATE lu_jobs SET state = $1, stage = 'done', progress = 1, finished_unix_ms = $2,
                     records = $3, clusters = $4, excluded = $5, links = $6, mode = $10, basis = $11
                 WHERE project = $7 AND job_id = $8 AND state = $9",
            )
            .bind(i64::from(job_state::DONE))
            .bind(now_ms)
            .bind(job.records as i64)
            .bind(job.clusters as i64)
            .bind(job.excluded as i64)
            .bind(job.links as i64)
            .bind(project)
            .bind(job_id)
            .bind(i64::from(job_state::RUNNING))
            .bind(&job.mode)
            .bind(&job.basis)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 1 {
                sqlx::query("DELETE FROM lu_member_chunks WHERE project = $1 AND job_id = $2")
                    .bind(project)
                    .bind(job_id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM lu_job_reports WHERE project = $1 AND job_id = $2")
                    .bind(project)
                    .bind(job_id)
                    .execute(&mut *tx)
                    .await?;
                if let Some((summary, html, links)) = report {
                    sqlx::query(
                        "INSERT INTO lu_job_reports (project, job_id, summary_json, report_html, weakest_links)
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(project)
                    .bind(job_id)
                    .bind(summary)
                    .bind(html)
                    .bind(links)
                    .execute(&mut *tx)
                    .await?;
                }
                sqlx::query("DELETE FROM lu_crosswalk WHERE project = $1 AND job_id = $2")
                    .bind(project)
                    .bind(job_id)
                    .execute(&mut *tx)
                    .await?;
                for batch in changes.registered.chunks(MEMBER_BATCH) {
                    let mut sql = String::from(
                        "INSERT INTO lu_pseudonyms (project, pseudonym, born_job) VALUES ",
                    );
                    for i in 0..batch.len() {
                        if i > 0 {
                            sql.push(',');
                        }
                        sql.push_str(&format!("($1, ${}, ${})", 2 * i + 2, 2 * i + 3));
                    }
                    sql.push_str(" ON CONFLICT (project, pseudonym) DO NOTHING");
                    let mut q = sqlx::query(AssertSqlSafe(sql.as_str())).bind(project);
                    for (p, born) in batch {
                        q = q.bind(p).bind(*born as i64);
                    }
                    q.execute(&mut *tx).await?;
                }
                for (column, list) in [
                    ("retired_job", &changes.retired),
                    ("withdrawn_job", &changes.withdrawn),
                ] {
                    for p in list {
                        sqlx::query(AssertSqlSafe(format!(
                            "UPDATE lu_pseudonyms SET {column} = $1 WHERE project = $2 AND pseudonym = $3"
                        )))
                        .bind(job_id)
                        .bind(project)
                        .bind(p)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                for (seq0, batch) in changes.events.chunks(MEMBER_BATCH / 2).enumerate() {
                    let mut sql = String::from(
                        "INSERT INTO lu_crosswalk (project, job_id, seq, kind, old_pseudonym, new_pseudonym) VALUES ",
                    );
                    for i in 0..batch.len() {
                        if i > 0 {
                            sql.push(',');
                        }
                        let b = 4 * i + 3;
                        sql.push_str(&format!("($1, $2, ${}, ${}, ${}, ${})", b, b + 1, b + 2, b + 3));
                    }
                    let mut q = sqlx::query(AssertSqlSafe(sql.as_str())).bind(project).bind(job_id);
                    for (i, e) in batch.iter().enumerate() {
                        q = q
                            .bind((seq0 * (MEMBER_BATCH / 2) + i) as i64)
                            .bind(&e.kind)
                            .bind(&e.old)
                            .bind(&e.new);
                    }
                    q.execute(&mut *tx).await?;
                }
                for c in chunks {
                    sqlx::query(
                        "INSERT INTO lu_member_chunks (project, job_id, party, first_position, records, data)
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(project)
                    .bind(job_id)
                    .bind(&c.party)
                    .bind(c.first_position as i64)
                    .bind(c.records as i64)
                    .bind(c.data.as_slice())
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
            } else {
                tx.rollback().await?;
            }
            n == 1
        });
        Ok(done)
    }

    /// A scored job's quality report `(summary.json, report.html)`; `None` for a job without
    /// one (unscored schema, not DONE).
    pub async fn job_report(
        &self,
        project: &str,
        job_id: u64,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row: Option<(String, String)> = on_db!(self, pool => sqlx::query_as(
            "SELECT summary_json, report_html FROM lu_job_reports WHERE project = $1 AND job_id = $2",
        )
        .bind(project)
        .bind(job_id as i64)
        .fetch_optional(pool)
        .await?);
        Ok(row)
    }

    /// A scored job's weakest links (rows of a 16-byte pseudonym and an `f32` little-endian
    /// probability); `None` for a job without a report.
    pub async fn job_weakest_links(
        &self,
        project: &str,
        job_id: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let row: Option<(Vec<u8>,)> = on_db!(self, pool => sqlx::query_as(
            "SELECT weakest_links FROM lu_job_reports WHERE project = $1 AND job_id = $2",
        )
        .bind(project)
        .bind(job_id as i64)
        .fetch_optional(pool)
        .await?);
        Ok(row.map(|r| r.0))
    }

    /// The chunk of a holder's results of a job that holds position `after + 1` onwards
    /// (`after = None`: the first chunk); `None` past the last.
    pub async fn member_chunk(
        &self,
        project: &str,
        job_id: u64,
        party: &str,
        after: Option<u64>,
    ) -> Result<Option<MemberChunk>, StoreError> {
        let from = after.map_or(0, |a| a as i64 + 1);
        let row: Option<(i64, i64, Vec<u8>)> = on_db!(self, pool => sqlx::query_as(
            "SELECT first_position, records, data FROM lu_member_chunks
             WHERE project = $1 AND job_id = $2 AND party = $3 AND first_position + records > $4
             ORDER BY first_position LIMIT 1",
        )
        .bind(project)
        .bind(job_id as i64)
        .bind(party)
        .bind(from)
        .fetch_optional(pool)
        .await?);
        Ok(row.map(|(first, records, data)| MemberChunk {
            party: party.to_owned(),
            first_position: first as u64,
            records: records as u64,
            data,
        }))
    }

    /// Calls `f` with every row of a holder's results of a job, in position order, chunk by
    /// chunk (one chunk in memory at a time).
    async fn for_each_member(
        &self,
        project: &str,
        job_id: u64,
        party: &str,
        mut f: impl FnMut(&Member<'_>),
    ) -> Result<(), StoreError> {
        let mut after = None;
        while let Some(c) = self.member_chunk(project, job_id, party, after).await? {
            if c.records == 0 {
                break;
            }
            for m in c
                .members()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?
            {
                f(&m);
            }
            after = Some(c.first_position + c.records - 1);
        }
        Ok(())
    }

    /// The holders with results in a job.
    async fn member_parties(&self, project: &str, job_id: u64) -> Result<Vec<String>, StoreError> {
        Ok(on_db!(self, pool => sqlx::query_scalar(
            "SELECT DISTINCT party FROM lu_member_chunks WHERE project = $1 AND job_id = $2 ORDER BY party",
        )
        .bind(project)
        .bind(job_id as i64)
        .fetch_all(pool)
        .await?))
    }

    /// A holder's record ids in one pseudonym's cluster (`pseudonym`: 32 hex digits), in
    /// position order: a scan of the holder's results.
    pub async fn traceback(
        &self,
        project: &str,
        job_id: u64,
        party: &str,
        pseudonym: &str,
    ) -> Result<Vec<String>, StoreError> {
        let mut want = [0u8; PSEUDONYM_BYTES];
        if hex::decode_to_slice(pseudonym, &mut want).is_err() {
            return Ok(Vec::new());
        }
        let mut ids = Vec::new();
        self.for_each_member(project, job_id, party, |m| {
            if m.pseudonym == want {
                ids.push(m.record_id.to_owned());
            }
        })
        .await?;
        Ok(ids)
    }

    /// Every member of a job's non-excluded clusters: `(pseudonym, party, record id)` sorted
    /// by pseudonym, party, position.
    pub async fn release_members(
        &self,
        project: &str,
        job_id: u64,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let mut rows: Vec<([u8; PSEUDONYM_BYTES], usize, u64, String)> = Vec::new();
        let parties = self.member_parties(project, job_id).await?;
        for (k, party) in parties.iter().enumerate() {
            self.for_each_member(project, job_id, party, |m| {
                if !m.excluded {
                    rows.push((m.pseudonym, k, m.position, m.record_id.to_owned()));
                }
            })
            .await?;
        }
        rows.sort_unstable();
        Ok(rows
            .into_iter()
            .map(|(p, k, _, id)| (pseudonym_hex(&p), parties[k].clone(), id))
            .collect())
    }

    /// The pseudonyms of a job's excluded clusters, sorted.
    pub async fn excluded_pseudonyms(
        &self,
        project: &str,
        job_id: u64,
    ) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for party in self.member_parties(project, job_id).await? {
            self.for_each_member(project, job_id, &party, |m| {
                if m.excluded {
                    out.push(m.pseudonym);
                }
            })
            .await?;
        }
        out.sort_unstable();
        out.dedup();
        Ok(out.iter().map(pseudonym_hex).collect())
    }

    /// Records a release of `pseudonyms` from `job_id` to `researcher`; returns its id.
    pub async fn record_release(
        &self,
        project: &str,
        job_id: u64,
        researcher: &str,
        pseudonyms: &[String],
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let rows: Vec<(String, String)> = pseudonyms
            .iter()
            .map(|p| (p.clone(), String::new()))
            .collect();
        self.record_release_digests(project, job_id, researcher, &rows, now_ms)
            .await
    }

    /// Records a release of `(pseudonym, digest of what was sent for it)` rows from `job_id`
    /// to `researcher` (SPEC.md §10.5.2); returns its id.
    pub async fn record_release_digests(
        &self,
        project: &str,
        job_id: u64,
        researcher: &str,
        pseudonyms: &[(String, String)],
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let id = on_db!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(LOCK_PROJECT).bind(project).execute(&mut *tx).await?;
            let last: Option<i64> =
                sqlx::query_scalar("SELECT MAX(release_id) FROM lu_releases WHERE project = $1")
                    .bind(project)
                    .fetch_one(&mut *tx)
                    .await?;
            let id = last.unwrap_or(0) + 1;
            sqlx::query(
                "INSERT INTO lu_releases (project, release_id, job_id, researcher, clusters, unix_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(project)
            .bind(id)
            .bind(job_id as i64)
            .bind(researcher)
            .bind(pseudonyms.len() as i64)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            for batch in pseudonyms.chunks(MEMBER_BATCH / 2) {
                let mut sql = String::from(
                    "INSERT INTO lu_release_pseudonyms (project, release_id, pseudonym, digest) VALUES ",
                );
                for i in 0..batch.len() {
                    if i > 0 {
                        sql.push(',');
                    }
                    sql.push_str(&format!("($1, $2, ${}, ${})", 2 * i + 3, 2 * i + 4));
                }
                let mut q = sqlx::query(AssertSqlSafe(sql.as_str())).bind(project).bind(id);
                for (p, d) in batch {
                    q = q.bind(p).bind(d);
                }
                q.execute(&mut *tx).await?;
            }
            tx.commit().await?;
            id
        });
        Ok(id as u64)
    }

    /// Which of `pseudonyms` were in any release `1..=up_to_release` of the project.
    pub async fn released_among(
        &self,
        project: &str,
        up_to_release: u64,
        pseudonyms: &[&str],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let mut out = std::collections::HashSet::new();
        for batch in pseudonyms.chunks(MEMBER_BATCH) {
            let mut sql = String::from(
                "SELECT DISTINCT pseudonym FROM lu_release_pseudonyms
                 WHERE project = $1 AND release_id <= $2 AND pseudonym IN (",
            );
            for i in 0..batch.len() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!("${}", i + 3));
            }
            sql.push(')');
            let found: Vec<String> = on_db!(self, pool => {
                let mut q = sqlx::query_scalar(AssertSqlSafe(sql.as_str()))
                    .bind(project)
                    .bind(up_to_release as i64);
                for p in batch {
                    q = q.bind(*p);
                }
                q.fetch_all(pool).await?
            });
            out.extend(found);
        }
        Ok(out)
    }

    /// Earlier releases that contained any of `pseudonyms`: `(release id, how many)`.
    pub async fn releases_containing(
        &self,
        project: &str,
        pseudonyms: &[String],
    ) -> Result<Vec<(u64, u64)>, StoreError> {
        let mut counts = std::collections::BTreeMap::<u64, u64>::new();
        for batch in pseudonyms.chunks(MEMBER_BATCH) {
            let mut sql = String::from(
                "SELECT release_id FROM lu_release_pseudonyms WHERE project = $1 AND pseudonym IN (",
            );
            for i in 0..batch.len() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!("${}", i + 2));
            }
            sql.push(')');
            let ids: Vec<i64> = on_db!(self, pool => {
                let mut q = sqlx::query_scalar(AssertSqlSafe(sql.as_str())).bind(project);
                for p in batch {
                    q = q.bind(p);
                }
                q.fetch_all(pool).await?
            });
            for id in ids {
                *counts.entry(id as u64).or_default() += 1;
            }
        }
        Ok(counts.into_iter().collect())
    }

    /// A release: its job and its `(pseudonym, digest)` rows sorted by pseudonym; `None` if
    /// there is no such release.
    pub async fn release(
        &self,
        project: &str,
        release_id: u64,
    ) -> Result<Option<(u64, Vec<(String, String)>)>, StoreError> {
        let job: Option<i64> = on_db!(self, pool => sqlx::query_scalar(
            "SELECT job_id FROM lu_releases WHERE project = $1 AND release_id = $2",
        )
        .bind(project)
        .bind(release_id as i64)
        .fetch_optional(pool)
        .await?);
        let Some(job) = job else { return Ok(None) };
        let rows: Vec<(String, String)> = on_db!(self, pool => sqlx::query_as(
            "SELECT pseudonym, digest FROM lu_release_pseudonyms WHERE project = $1 AND release_id = $2
             ORDER BY pseudonym",
        )
        .bind(project)
        .bind(release_id as i64)
        .fetch_all(pool)
        .await?);
        Ok(Some((job as u64, rows)))
    }

    /// The latest release of a project, if any.
    pub async fn latest_release(&self, project: &str) -> Result<Option<u64>, StoreError> {
        let id: Option<i64> = on_db!(self, pool => sqlx::query_scalar(
            "SELECT MAX(release_id) FROM lu_releases WHERE project = $1",
        )
        .bind(project)
        .fetch_one(pool)
        .await?);
        Ok(id.map(|i| i as u64))
    }

    /// Every pseudonym issued in a project.
    pub async fn pseudonyms(&self, project: &str) -> Result<Vec<PseudonymRow>, StoreError> {
        let rows: Vec<(String, i64, i64, i64)> = on_db!(self, pool => sqlx::query_as(
            "SELECT pseudonym, born_job, retired_job, withdrawn_job FROM lu_pseudonyms
             WHERE project = $1 ORDER BY pseudonym",
        )
        .bind(project)
        .fetch_all(pool)
        .await?);
        rows.into_iter()
            .map(|(p, born, retired, withdrawn)| {
                let mut pseudonym = [0u8; PSEUDONYM_BYTES];
                hex::decode_to_slice(&p, &mut pseudonym)
                    .map_err(|_| StoreError::Corrupt("a stored pseudonym is not hex".to_owned()))?;
                Ok(PseudonymRow {
                    pseudonym,
                    born_job: born as u64,
                    retired_job: retired as u64,
                    withdrawn_job: withdrawn as u64,
                })
            })
            .collect()
    }

    /// The crosswalk events of jobs `after_job + 1 ..= up_to_job`, in job and event order.
    pub async fn crosswalk(
        &self,
        project: &str,
        after_job: u64,
        up_to_job: u64,
    ) -> Result<Vec<CrosswalkRow>, StoreError> {
        let rows: Vec<(i64, String, String, String)> = on_db!(self, pool => sqlx::query_as(
            "SELECT job_id, kind, old_pseudonym, new_pseudonym FROM lu_crosswalk
             WHERE project = $1 AND job_id > $2 AND job_id <= $3 ORDER BY job_id, seq",
        )
        .bind(project)
        .bind(after_job as i64)
        .bind(up_to_job as i64)
        .fetch_all(pool)
        .await?);
        Ok(rows
            .into_iter()
            .map(|(job, kind, old, new)| CrosswalkRow {
                job_id: job as u64,
                kind,
                old,
                new,
            })
            .collect())
    }

    /// Calls `f(holder index in `holders`, record id, pseudonym)` for every record of a job's
    /// results (excluded clusters included), holder by holder, one chunk in memory at a time;
    /// holders not in `holders` are left out.
    pub async fn for_each_job_member(
        &self,
        project: &str,
        job_id: u64,
        holders: &[String],
        mut f: impl FnMut(u32, &str, &[u8; PSEUDONYM_BYTES]),
    ) -> Result<(), StoreError> {
        for (h, party) in holders.iter().enumerate() {
            self.for_each_member(project, job_id, party, |m| {
                f(h as u32, m.record_id, &m.pseudonym);
            })
            .await?;
        }
        Ok(())
    }

    /// Appends one audit entry (chained to the last) and returns it.
    pub async fn audit_append(&self, event: AuditEvent) -> Result<AuditEntry, StoreError> {
        // Two appends must never read the same head. SQLite: the write lock is taken by the
        // first write of the transaction, so take it up front with a no-op write. PostgreSQL:
        // a no-op UPDATE locks nothing, so lock the table against other appenders (SHARE ROW
        // EXCLUSIVE conflicts with itself and with inserts, not with readers); the head is
        // read after the lock is granted, with a snapshot that sees the previous append.
        let serialize = match &self.db {
            Db::Sqlite(_) => "UPDATE lu_audit SET sequence = sequence WHERE sequence = -1",
            Db::Pg(_) => "LOCK TABLE lu_audit IN SHARE ROW EXCLUSIVE MODE",
        };
        let entry = on_db!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(serialize).execute(&mut *tx).await?;
            let last: Option<(i64, Vec<u8>)> = sqlx::query_as(
                "SELECT sequence, entry_hash FROM lu_audit ORDER BY sequence DESC LIMIT 1",
            )
            .fetch_optional(&mut *tx)
            .await?;
            let head = match last {
                Some((seq, hash)) => Some(AuditHead {
                    sequence: seq as u64,
                    entry_hash: hash
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("audit hash length".to_owned()))?,
                }),
                None => None,
            };
            let entry = AuditEntry::next(head.as_ref(), event);
            let e = &entry.event;
            sqlx::query(
                "INSERT INTO lu_audit (sequence, unix_time_ms, actor_party, role, rpc, project, recipe,
                     epoch, item_count, status_code, prev_hash, entry_hash)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(entry.sequence as i64)
            .bind(e.unix_time_ms)
            .bind(&e.actor_party)
            .bind(i64::from(e.role))
            .bind(&e.rpc)
            .bind(&e.project)
            .bind(&e.recipe)
            .bind(e.epoch as i64)
            .bind(e.item_count as i64)
            .bind(i64::from(e.status_code))
            .bind(entry.prev_hash.to_vec())
            .bind(entry.entry_hash.to_vec())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            entry
        });
        Ok(entry)
    }

    /// Audit entries from `from_sequence` on, at most `limit`.
    pub async fn audit_read(
        &self,
        from_sequence: u64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let rows: Vec<AuditTuple> = on_db!(self, pool => sqlx::query_as(
            "SELECT sequence, unix_time_ms, actor_party, role, rpc, project, recipe, epoch,
                 item_count, status_code, prev_hash, entry_hash
             FROM lu_audit WHERE sequence >= $1 ORDER BY sequence LIMIT $2",
        )
        .bind(from_sequence as i64)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?);
        rows.into_iter().map(audit_row).collect()
    }
}
