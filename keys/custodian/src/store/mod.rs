//! The custodian's storage (SPEC.md, store section): one [`CustodianStore`] trait with a
//! SQLite implementation ([`SqliteStore`], the embedded default) and a PostgreSQL one
//! ([`PgStore`]), plus [`Store`], which picks one from a URL.
//!
//! Secret columns (epoch seeds, CLK keys, the audit head) are sealed **inside** the store with
//! the [`KekRing`] it was opened with (XChaCha20-Poly1305, AAD = domain, table, column, row key,
//! KEK id); callers only ever see [`Zeroizing`] plaintext. Multi-row updates (project creation,
//! rotation, audit append) run in one transaction; quota reservation is a single atomic
//! statement, so concurrent callers can never over-spend a quota.

use std::fmt;
use std::future::Future;

use renketsu_keys::audit::{AuditEntry, AuditEvent, AuditHead};
use renketsu_keys::lifecycle::{EPOCH_SEED_LEN, KeyState, Timestamp, TransitionError};
use renketsu_keys::oprf::SecretKey;
use renketsu_keys::seal::{KekRing, SealError};
use zeroize::Zeroizing;

mod common;
pub mod postgres;
pub mod sqlite;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Length of a CLK HMAC key in bytes.
pub const CLK_KEY_LEN: usize = 32;

/// Errors of the store. Messages name projects, recipes, parties and epochs — never secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A name or number is not acceptable (empty name, duplicate recipe, zero records…).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// `create_project` with a name already taken.
    #[error("project {0:?} already exists")]
    ProjectExists(String),
    /// No such project.
    #[error("no project {0:?}")]
    ProjectNotFound(String),
    /// The project has no such recipe.
    #[error("project {project:?} has no recipe {recipe:?}")]
    RecipeNotFound {
        /// Project.
        project: String,
        /// Recipe asked for.
        recipe: String,
    },
    /// The recipe has no such epoch.
    #[error("project {project:?} recipe {recipe:?} has no epoch {epoch}")]
    EpochNotFound {
        /// Project.
        project: String,
        /// Recipe.
        recipe: String,
        /// Epoch asked for.
        epoch: u64,
    },
    /// The recipe has no active epoch (its active key was revoked, or only a pending one exists).
    #[error("project {project:?} recipe {recipe:?} has no active epoch")]
    NoActiveEpoch {
        /// Project.
        project: String,
        /// Recipe.
        recipe: String,
    },
    /// The project has no CLK key for that field.
    #[error("project {project:?} has no CLK field {field:?}")]
    ClkFieldNotFound {
        /// Project.
        project: String,
        /// Field asked for.
        field: String,
    },
    /// The party is already enrolled in the project.
    #[error("holder {party:?} is already enrolled in project {project:?}")]
    HolderExists {
        /// Project.
        project: String,
        /// Party.
        party: String,
    },
    /// The party is not enrolled in the project.
    #[error("holder {party:?} is not enrolled in project {project:?}")]
    HolderNotFound {
        /// Project.
        project: String,
        /// Party.
        party: String,
    },
    /// A lifecycle transition is not allowed (e.g. revoking a revoked key).
    #[error("project {project:?} recipe {recipe:?} epoch {epoch}: {source}")]
    Transition {
        /// Project.
        project: String,
        /// Recipe.
        recipe: String,
        /// Epoch.
        epoch: u64,
        /// The refused transition.
        source: TransitionError,
    },
    /// Reserving `requested` more evaluations would exceed the quota; nothing was reserved.
    #[error(
        "evaluation quota exceeded for holder {party:?} in project {project:?} recipe {recipe:?} epoch {epoch}: {used} of {quota} used, {requested} more requested"
    )]
    QuotaExceeded {
        /// Project.
        project: String,
        /// Holder.
        party: String,
        /// Recipe.
        recipe: String,
        /// Epoch.
        epoch: u64,
        /// Evaluations already reserved.
        used: u64,
        /// Evaluations asked for by this call.
        requested: u64,
        /// The holder's quota per (recipe, epoch).
        quota: u64,
    },
    /// A sealed column could not be opened (wrong or missing KEK, altered or moved value).
    #[error("sealed {table}.{column} of {row} cannot be opened: {source}")]
    Unseal {
        /// Table.
        table: &'static str,
        /// Column.
        column: &'static str,
        /// Row key, readable (no secrets).
        row: String,
        /// Why.
        source: SealError,
    },
    /// A stored row violates an invariant the store maintains (bad state name, key length,
    /// missing audit head…): the database was edited outside the custodian.
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

/// A secret recipe seed or CLK key handed to the store to seal (never logged).
pub type Secret32 = Zeroizing<[u8; 32]>;

/// Input of [`CustodianStore::create_project`]: names plus fresh secrets (drawn by the caller's
/// injected RNG, e.g. with [`NewProject::generate`]).
pub struct NewProject {
    /// Project name: 1–128 bytes of printable ASCII without spaces (SPEC).
    pub name: String,
    /// Recipes with their epoch-1 seeds, in order; names distinct and non-empty.
    pub recipes: Vec<(String, Secret32)>,
    /// CLK fields with their 32-byte HMAC keys, in order; names distinct and non-empty.
    pub clk_fields: Vec<(String, Secret32)>,
    /// Creation time; epoch 1 of every recipe is active from then.
    pub created_at: Timestamp,
}

impl fmt::Debug for NewProject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewProject")
            .field("name", &self.name)
            .field(
                "recipes",
                &self.recipes.iter().map(|r| &r.0).collect::<Vec<_>>(),
            )
            .field(
                "clk_fields",
                &self.clk_fields.iter().map(|r| &r.0).collect::<Vec<_>>(),
            )
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

impl NewProject {
    /// A project with fresh random seeds and CLK keys from `rng`.
    pub fn generate<R: rand::CryptoRng + ?Sized>(
        name: &str,
        recipes: &[&str],
        clk_fields: &[&str],
        created_at: Timestamp,
        rng: &mut R,
    ) -> Self {
        let mut secret = || {
            let mut s = Zeroizing::new([0u8; 32]);
            rng.fill_bytes(s.as_mut());
            s
        };
        Self {
            name: name.to_owned(),
            recipes: recipes
                .iter()
                .map(|r| ((*r).to_owned(), secret()))
                .collect(),
            clk_fields: clk_fields
                .iter()
                .map(|f| ((*f).to_owned(), secret()))
                .collect(),
            created_at,
        }
    }
}

/// A project as stored (no secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectRecord {
    /// Project name.
    pub name: String,
    /// Recipes in creation order, each with its current (active) key if any.
    pub recipes: Vec<RecipeRecord>,
    /// CLK field names in creation order.
    pub clk_fields: Vec<String>,
    /// Enrolled holders in enrolment order.
    pub holders: Vec<HolderRecord>,
    /// Creation time.
    pub created_at: Timestamp,
}

/// A recipe and its active key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipeRecord {
    /// Recipe name.
    pub recipe: String,
    /// Active epoch and its public key; `None` when no epoch is active.
    pub active: Option<(u64, [u8; 32])>,
    /// Highest epoch created so far (any state).
    pub latest_epoch: u64,
}

/// One enrolled data holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderRecord {
    /// Project.
    pub project: String,
    /// Party name (certificate subject).
    pub party: String,
    /// Records the holder declared it will tokenise.
    pub declared_records: u64,
    /// Evaluations allowed per (recipe, epoch).
    pub evaluation_quota: u64,
    /// Enrolment time.
    pub enrolled_at: Timestamp,
}

/// Public facts about one epoch key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochRecord {
    /// Project.
    pub project: String,
    /// Recipe.
    pub recipe: String,
    /// Epoch (≥ 1).
    pub epoch: u64,
    /// Lifecycle state.
    pub state: KeyState,
    /// `pkS = skS·G`, 32-byte compressed ristretto255 element (RFC 9497 §4.1).
    pub public_key: [u8; 32],
    /// When the epoch was created.
    pub created_at: Timestamp,
    /// When it becomes (pending) or became active; `None` if it never was.
    pub activates_at: Option<Timestamp>,
    /// When it was retired.
    pub retired_at: Option<Timestamp>,
    /// When it was revoked.
    pub revoked_at: Option<Timestamp>,
}

/// An epoch key with its secret: the seed, from which [`EpochKey::secret_key`] derives `skS`.
pub struct EpochKey {
    /// Public facts.
    pub record: EpochRecord,
    /// The 32-byte seed (zeroized on drop).
    pub seed: Zeroizing<[u8; EPOCH_SEED_LEN]>,
}

impl fmt::Debug for EpochKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EpochKey")
            .field("record", &self.record)
            .field("seed", &"<redacted>")
            .finish()
    }
}

impl EpochKey {
    /// `skS = DeriveKeyPair(seed, info(project, recipe, epoch))` (RFC 9497 §3.2.1; see
    /// `renketsu_keys::lifecycle::derive_epoch_key`).
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if derivation fails (cannot happen for names the store accepted).
    pub fn secret_key(&self) -> Result<SecretKey, StoreError> {
        renketsu_keys::lifecycle::derive_epoch_key(
            &self.seed,
            &self.record.project,
            &self.record.recipe,
            self.record.epoch,
        )
        .map_err(|e| StoreError::Corrupt(format!("epoch key derivation: {e}")))
    }
}

/// Input of [`CustodianStore::rotate_epoch`].
pub struct Rotation {
    /// Project.
    pub project: String,
    /// Recipe.
    pub recipe: String,
    /// Seed of the new epoch (fresh from the caller's RNG).
    pub seed: Secret32,
    /// Current time.
    pub now: Timestamp,
    /// `None`: the new epoch is active at once and the previous active epoch is retired, in one
    /// transaction. `Some(t)` with `t > now`: the new epoch is pending until
    /// [`CustodianStore::activate_due`] runs at or after `t`.
    pub activate_at: Option<Timestamp>,
}

impl fmt::Debug for Rotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rotation")
            .field("project", &self.project)
            .field("recipe", &self.recipe)
            .field("seed", &"<redacted>")
            .field("now", &self.now)
            .field("activate_at", &self.activate_at)
            .finish()
    }
}

/// Result of a rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationOutcome {
    /// The epoch active before the call (retired now if the new epoch is active), if any.
    pub previous_epoch: Option<u64>,
    /// The new epoch as stored (state active or pending).
    pub new: EpochRecord,
}

/// Result of a successful quota reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// Evaluations reserved so far for this (holder, recipe, epoch), including this call.
    pub used: u64,
    /// The holder's quota.
    pub quota: u64,
}

/// Result of [`CustodianStore::reseal_all`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResealReport {
    /// Sealed values examined.
    pub examined: u64,
    /// Values re-sealed under the first KEK (the others already were).
    pub resealed: u64,
}

/// The custodian's repository. Every method is one atomic unit: it either happens completely
/// or not at all. Implementations: [`SqliteStore`], [`PgStore`], and the dispatcher [`Store`].
pub trait CustodianStore: Send + Sync {
    /// Creates a project, its recipes with an active epoch-1 key each, and its CLK keys.
    ///
    /// # Errors
    /// [`StoreError::ProjectExists`]; [`StoreError::InvalidArgument`] for empty, duplicate or
    /// over-long names.
    fn create_project(
        &self,
        project: NewProject,
    ) -> impl Future<Output = Result<ProjectRecord, StoreError>> + Send;

    /// One project with recipes, fields and holders.
    ///
    /// # Errors
    /// [`StoreError::ProjectNotFound`].
    fn get_project(
        &self,
        project: &str,
    ) -> impl Future<Output = Result<ProjectRecord, StoreError>> + Send;

    /// Every project, in creation order.
    fn list_projects(&self) -> impl Future<Output = Result<Vec<ProjectRecord>, StoreError>> + Send;

    /// Enrols a holder with its declared record count and quota (per recipe and epoch).
    ///
    /// # Errors
    /// [`StoreError::ProjectNotFound`], [`StoreError::HolderExists`],
    /// [`StoreError::InvalidArgument`] (empty party, zero records or quota).
    fn enrol_holder(
        &self,
        holder: HolderRecord,
    ) -> impl Future<Output = Result<HolderRecord, StoreError>> + Send;

    /// One holder's enrolment.
    ///
    /// # Errors
    /// [`StoreError::HolderNotFound`] (also when the project does not exist).
    fn get_holder(
        &self,
        project: &str,
        party: &str,
    ) -> impl Future<Output = Result<HolderRecord, StoreError>> + Send;

    /// Public facts of one epoch; `epoch = None` means the active epoch.
    ///
    /// # Errors
    /// [`StoreError::ProjectNotFound`], [`StoreError::RecipeNotFound`],
    /// [`StoreError::EpochNotFound`], [`StoreError::NoActiveEpoch`].
    fn get_epoch(
        &self,
        project: &str,
        recipe: &str,
        epoch: Option<u64>,
    ) -> impl Future<Output = Result<EpochRecord, StoreError>> + Send;

    /// Every epoch of a recipe, ascending.
    ///
    /// # Errors
    /// [`StoreError::ProjectNotFound`], [`StoreError::RecipeNotFound`].
    fn list_epochs(
        &self,
        project: &str,
        recipe: &str,
    ) -> impl Future<Output = Result<Vec<EpochRecord>, StoreError>> + Send;

    /// One epoch with its unsealed seed (the caller checks the state before using it).
    ///
    /// # Errors
    /// As [`CustodianStore::get_epoch`]; [`StoreError::Unseal`].
    fn epoch_key(
        &self,
        project: &str,
        recipe: &str,
        epoch: u64,
    ) -> impl Future<Output = Result<EpochKey, StoreError>> + Send;

    /// Creates the next epoch (highest + 1), atomically (see [`Rotation::activate_at`]).
    ///
    /// # Errors
    /// [`StoreError::ProjectNotFound`], [`StoreError::RecipeNotFound`],
    /// [`StoreError::InvalidArgument`] (activation time not after `now`, or a pending epoch
    /// already waiting).
    fn rotate_epoch(
        &self,
        rotation: Rotation,
    ) -> impl Future<Output = Result<RotationOutcome, StoreError>> + Send;

    /// Activates every pending epoch whose activation time is ≤ `now`, retiring the epoch it
    /// replaces; returns the epochs activated.
    fn activate_due(
        &self,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<EpochRecord>, StoreError>> + Send;

    /// Revokes one epoch (from any state but revoked).
    ///
    /// # Errors
    /// As [`CustodianStore::get_epoch`]; [`StoreError::Transition`] if already revoked.
    fn revoke_epoch(
        &self,
        project: &str,
        recipe: &str,
        epoch: u64,
        now: Timestamp,
    ) -> impl Future<Output = Result<EpochRecord, StoreError>> + Send;

    /// The unsealed CLK HMAC key of (project, field).
    ///
    /// # Errors
    /// [`StoreError::ProjectNotFound`], [`StoreError::ClkFieldNotFound`],
    /// [`StoreError::Unseal`].
    fn clk_key(
        &self,
        project: &str,
        field: &str,
    ) -> impl Future<Output = Result<Secret32, StoreError>> + Send;

    /// Atomically reserves `count` evaluations of (project, recipe, epoch) for `party` against
    /// its quota; refuses (reserving nothing) if the total would exceed the quota.
    ///
    /// # Errors
    /// [`StoreError::HolderNotFound`]; [`StoreError::QuotaExceeded`] with used/requested/quota.
    fn reserve_evaluations(
        &self,
        project: &str,
        party: &str,
        recipe: &str,
        epoch: u64,
        count: u64,
    ) -> impl Future<Output = Result<Reservation, StoreError>> + Send;

    /// Evaluations reserved so far by `party` for (project, recipe, epoch) (0 if none).
    fn evaluations_used(
        &self,
        project: &str,
        party: &str,
        recipe: &str,
        epoch: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Appends an audit entry: sequence, `prev_hash` and `entry_hash` are computed from the
    /// sealed head and written with the new head in one transaction.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if the head is missing or unreadable; [`StoreError::Unseal`].
    fn append_audit(
        &self,
        event: AuditEvent,
    ) -> impl Future<Output = Result<AuditEntry, StoreError>> + Send;

    /// Audit entries with `sequence ≥ from` (from 1 if `from` is 0), ascending, at most
    /// `limit` (0 = no limit).
    fn read_audit(
        &self,
        from: u64,
        limit: u64,
    ) -> impl Future<Output = Result<Vec<AuditEntry>, StoreError>> + Send;

    /// The unsealed audit head; `None` while the log is empty.
    ///
    /// # Errors
    /// [`StoreError::Unseal`] if the head was altered; [`StoreError::Corrupt`] if missing.
    fn audit_head(&self) -> impl Future<Output = Result<Option<AuditHead>, StoreError>> + Send;

    /// Re-seals every sealed value whose KEK is not the first KEK of the ring (after a KEK
    /// rotation), each in its own short transaction.
    fn reseal_all(&self) -> impl Future<Output = Result<ResealReport, StoreError>> + Send;
}

/// Reads the whole audit log and its head and verifies the chain
/// (`renketsu_keys::audit::verify`).
///
/// # Errors
/// The store's errors, or `Ok(Err(_))` with the precise chain error.
pub async fn verify_audit<S: CustodianStore + ?Sized>(
    store: &S,
) -> Result<Result<u64, renketsu_keys::audit::AuditError>, StoreError> {
    let head = store.audit_head().await?;
    let entries = store.read_audit(1, 0).await?;
    Ok(renketsu_keys::audit::verify(&entries, head.as_ref())
        .map(|()| entries.last().map_or(0, |e| e.sequence)))
}

/// Either backend, chosen by URL at run time.
#[derive(Debug, Clone)]
pub enum Store {
    /// SQLite (embedded).
    Sqlite(SqliteStore),
    /// PostgreSQL.
    Postgres(PgStore),
}

impl Store {
    /// Opens `url` (`sqlite:PATH`, `sqlite://PATH`, `sqlite::memory:`, `postgres://…` or
    /// `postgresql://…`), runs migrations, and seals with `keks`.
    ///
    /// # Errors
    /// [`StoreError::UnsupportedUrl`], database and migration errors.
    pub async fn connect(url: &str, keks: KekRing) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite(SqliteStore::connect(url, keks).await?))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(PgStore::connect(url, keks).await?))
        } else {
            Err(StoreError::UnsupportedUrl(url.to_owned()))
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Sqlite($s) => $e.await,
            Store::Postgres($s) => $e.await,
        }
    };
}

impl CustodianStore for Store {
    async fn create_project(&self, project: NewProject) -> Result<ProjectRecord, StoreError> {
        dispatch!(self, s => s.create_project(project))
    }
    async fn get_project(&self, project: &str) -> Result<ProjectRecord, StoreError> {
        dispatch!(self, s => s.get_project(project))
    }
    async fn list_projects(&self) -> Result<Vec<ProjectRecord>, StoreError> {
        dispatch!(self, s => s.list_projects())
    }
    async fn enrol_holder(&self, holder: HolderRecord) -> Result<HolderRecord, StoreError> {
        dispatch!(self, s => s.enrol_holder(holder))
    }
    async fn get_holder(&self, project: &str, party: &str) -> Result<HolderRecord, StoreError> {
        dispatch!(self, s => s.get_holder(project, party))
    }
    async fn get_epoch(
        &self,
        project: &str,
        recipe: &str,
        epoch: Option<u64>,
    ) -> Result<EpochRecord, StoreError> {
        dispatch!(self, s => s.get_epoch(project, recipe, epoch))
    }
    async fn list_epochs(
        &self,
        project: &str,
        recipe: &str,
    ) -> Result<Vec<EpochRecord>, StoreError> {
        dispatch!(self, s => s.list_epochs(project, recipe))
    }
    async fn epoch_key(
        &self,
        project: &str,
        recipe: &str,
        epoch: u64,
    ) -> Result<EpochKey, StoreError> {
        dispatch!(self, s => s.epoch_key(project, recipe, epoch))
    }
    async fn rotate_epoch(&self, rotation: Rotation) -> Result<RotationOutcome, StoreError> {
        dispatch!(self, s => s.rotate_epoch(rotation))
    }
    async fn activate_due(&self, now: Timestamp) -> Result<Vec<EpochRecord>, StoreError> {
        dispatch!(self, s => s.activate_due(now))
    }
    async fn revoke_epoch(
        &self,
        project: &str,
        recipe: &str,
        epoch: u64,
        now: Timestamp,
    ) -> Result<EpochRecord, StoreError> {
        dispatch!(self, s => s.revoke_epoch(project, recipe, epoch, now))
    }
    async fn clk_key(&self, project: &str, field: &str) -> Result<Secret32, StoreError> {
        dispatch!(self, s => s.clk_key(project, field))
    }
    async fn reserve_evaluations(
        &self,
        project: &str,
        party: &str,
        recipe: &str,
        epoch: u64,
        count: u64,
    ) -> Result<Reservation, StoreError> {
        dispatch!(self, s => s.reserve_evaluations(project, party, recipe, epoch, count))
    }
    async fn evaluations_used(
        &self,
        project: &str,
        party: &str,
        recipe: &str,
        epoch: u64,
    ) -> Result<u64, StoreError> {
        dispatch!(self, s => s.evaluations_used(project, party, recipe, epoch))
    }
    async fn append_audit(&self, event: AuditEvent) -> Result<AuditEntry, StoreError> {
        dispatch!(self, s => s.append_audit(event))
    }
    async fn read_audit(&self, from: u64, limit: u64) -> Result<Vec<AuditEntry>, StoreError> {
        dispatch!(self, s => s.read_audit(from, limit))
    }
    async fn audit_head(&self) -> Result<Option<AuditHead>, StoreError> {
        dispatch!(self, s => s.audit_head())
    }
    async fn reseal_all(&self) -> Result<ResealReport, StoreError> {
        dispatch!(self, s => s.reseal_all())
    }
}
