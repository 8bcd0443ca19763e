//! What the SQLite and PostgreSQL stores share: sealing contexts, row types, validation, and
//! the one implementation of [`CustodianStore`](super::CustodianStore), written once as a macro
//! over the backend (both speak the same SQL apart from row locks).

use renketsu_keys::audit::{AuditEntry, AuditEvent, HASH_LEN};
use renketsu_keys::lifecycle::{KeyState, Timestamp};
use renketsu_keys::seal::{KekRing, SealContext, Sealed};

use super::{EpochRecord, HolderRecord, StoreError};

/// Domain tag of every value sealed by the custodian store.
pub(crate) const SEAL_DOMAIN: &[u8] = b"renketsu/custodian-store/v1";
/// Longest accepted name (project, recipe, field, party), in bytes.
pub(crate) const MAX_NAME_LEN: usize = 255;

/// A sealed column's place: table, column, and row-key parts, in that order.
pub(crate) struct Place {
    pub table: &'static str,
    pub column: &'static str,
    pub row: Vec<Vec<u8>>,
}

impl Place {
    pub fn epoch_seed(project: &str, recipe: &str, epoch: u64) -> Self {
        Self {
            table: "epoch_keys",
            column: "seed_sealed",
            row: vec![
                project.as_bytes().to_vec(),
                recipe.as_bytes().to_vec(),
                epoch.to_be_bytes().to_vec(),
            ],
        }
    }

    pub fn clk_key(project: &str, field: &str) -> Self {
        Self {
            table: "clk_keys",
            column: "key_sealed",
            row: vec![project.as_bytes().to_vec(), field.as_bytes().to_vec()],
        }
    }

    pub fn audit_head() -> Self {
        Self {
            table: "audit_head",
            column: "head_sealed",
            row: vec![1u64.to_be_bytes().to_vec()],
        }
    }

    fn describe(&self) -> String {
        self.row
            .iter()
            .map(|p| match std::str::from_utf8(p) {
                Ok(s) if p.len() != 8 || s.chars().all(|c| !c.is_control()) => s.to_owned(),
                _ => u64::from_be_bytes(p.as_slice().try_into().unwrap_or([0; 8])).to_string(),
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    fn with_ctx<T>(&self, f: impl FnOnce(&SealContext<'_>) -> T) -> T {
        let mut parts: Vec<&[u8]> = vec![self.table.as_bytes(), self.column.as_bytes()];
        parts.extend(self.row.iter().map(Vec::as_slice));
        f(&SealContext {
            domain: SEAL_DOMAIN,
            parts: &parts,
        })
    }

    /// Seals `plain` for this place with the ring's first KEK.
    pub fn seal(&self, keks: &KekRing, plain: &[u8]) -> Vec<u8> {
        self.with_ctx(|ctx| keks.seal(&mut rand::rng(), ctx, plain))
            .to_bytes()
    }

    /// Opens a stored blob that must be `N` bytes of plaintext.
    pub fn open<const N: usize>(
        &self,
        keks: &KekRing,
        blob: &[u8],
    ) -> Result<zeroize::Zeroizing<[u8; N]>, StoreError> {
        let err = |source| StoreError::Unseal {
            table: self.table,
            column: self.column,
            row: self.describe(),
            source,
        };
        let sealed = Sealed::from_bytes(blob).map_err(err)?;
        self.with_ctx(|ctx| keks.open_array::<N>(ctx, &sealed))
            .map_err(err)
    }

    /// `Some(new blob)` if `blob` is not sealed by the first KEK (re-sealing it), else `None`.
    pub fn reseal<const N: usize>(
        &self,
        keks: &KekRing,
        blob: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let sealed = Sealed::from_bytes(blob).map_err(|source| StoreError::Unseal {
            table: self.table,
            column: self.column,
            row: self.describe(),
            source,
        })?;
        if keks.is_primary(&sealed) {
            return Ok(None);
        }
        let plain = self.open::<N>(keks, blob)?;
        Ok(Some(self.seal(keks, plain.as_slice())))
    }
}

pub(crate) fn to_i64(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::InvalidArgument(format!("{what} {v} is too large")))
}

pub(crate) fn to_u64(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative {what} {v}")))
}

pub(crate) fn check_name(kind: &str, name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(StoreError::InvalidArgument(format!(
            "{kind} name {name:?} must be 1-{MAX_NAME_LEN} bytes without control characters"
        )));
    }
    Ok(())
}

pub(crate) fn check_distinct<'a>(
    kind: &str,
    names: impl Iterator<Item = &'a str>,
) -> Result<(), StoreError> {
    let mut seen = std::collections::HashSet::new();
    for n in names {
        check_name(kind, n)?;
        if !seen.insert(n) {
            return Err(StoreError::InvalidArgument(format!(
                "{kind} name {n:?} appears twice"
            )));
        }
    }
    Ok(())
}

/// A write transaction, plus (SQLite) the in-process writer lock held until it ends. SQLite has
/// one writer at a time; queueing writers on a fair async mutex keeps tail latency low, where
/// SQLite's own busy handler would make them sleep and retry. Derefs to the connection.
pub(crate) struct WriteTx<DB: sqlx::Database> {
    tx: sqlx::Transaction<'static, DB>,
    _guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl<DB: sqlx::Database> WriteTx<DB> {
    pub fn new(
        tx: sqlx::Transaction<'static, DB>,
        guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    ) -> Self {
        Self { tx, _guard: guard }
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl<DB: sqlx::Database> std::ops::Deref for WriteTx<DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        &self.tx
    }
}

impl<DB: sqlx::Database> std::ops::DerefMut for WriteTx<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.tx
    }
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

#[derive(sqlx::FromRow)]
pub(crate) struct ProjectRow {
    pub name: String,
    pub created_unix_ms: i64,
}

#[derive(sqlx::FromRow)]
pub(crate) struct RecipeRow {
    pub recipe: String,
    pub active_epoch: Option<i64>,
    pub active_public_key: Option<Vec<u8>>,
    pub latest_epoch: Option<i64>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct HolderRow {
    pub project: String,
    pub party: String,
    pub declared_records: i64,
    pub evaluation_quota: i64,
    pub enrolled_unix_ms: i64,
}

impl HolderRow {
    pub fn into_record(self) -> Result<HolderRecord, StoreError> {
        Ok(HolderRecord {
            project: self.project,
            party: self.party,
            declared_records: to_u64(self.declared_records, "declared_records")?,
            evaluation_quota: to_u64(self.evaluation_quota, "evaluation_quota")?,
            enrolled_at: Timestamp::from_unix_ms(self.enrolled_unix_ms),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct EpochRow {
    pub project: String,
    pub recipe: String,
    pub epoch: i64,
    pub state: String,
    pub public_key: Vec<u8>,
    pub created_unix_ms: i64,
    pub activates_unix_ms: Option<i64>,
    pub retired_unix_ms: Option<i64>,
    pub revoked_unix_ms: Option<i64>,
}

impl EpochRow {
    pub fn into_record(self) -> Result<EpochRecord, StoreError> {
        let state = KeyState::parse(&self.state).ok_or_else(|| {
            StoreError::Corrupt(format!("epoch key state {:?} is unknown", self.state))
        })?;
        let public_key: [u8; 32] = self
            .public_key
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::Corrupt("epoch public key is not 32 bytes".into()))?;
        Ok(EpochRecord {
            epoch: to_u64(self.epoch, "epoch")?,
            project: self.project,
            recipe: self.recipe,
            state,
            public_key,
            created_at: Timestamp::from_unix_ms(self.created_unix_ms),
            activates_at: self.activates_unix_ms.map(Timestamp::from_unix_ms),
            retired_at: self.retired_unix_ms.map(Timestamp::from_unix_ms),
            revoked_at: self.revoked_unix_ms.map(Timestamp::from_unix_ms),
        })
    }
}

/// Columns of [`EpochRow`], for `SELECT`.
macro_rules! epoch_cols {
    () => {
        "project, recipe, epoch, state, public_key, created_unix_ms, activates_unix_ms, retired_unix_ms, revoked_unix_ms"
    };
}
pub(crate) use epoch_cols;

#[derive(sqlx::FromRow)]
pub(crate) struct AuditRow {
    pub sequence: i64,
    pub unix_time_ms: i64,
    pub actor_party: String,
    pub role: i64,
    pub rpc: String,
    pub project: String,
    pub recipe: String,
    pub epoch: i64,
    pub item_count: i64,
    pub status_code: i64,
    pub prev_hash: Vec<u8>,
    pub entry_hash: Vec<u8>,
}

impl AuditRow {
    /// Converts a row; hashes of the wrong length become all-zero so that verification reports
    /// the entry as changed rather than the read failing.
    pub fn into_entry(self) -> Result<AuditEntry, StoreError> {
        let hash = |v: &[u8]| -> [u8; HASH_LEN] { v.try_into().unwrap_or([0xFF; HASH_LEN]) };
        Ok(AuditEntry {
            sequence: to_u64(self.sequence, "audit sequence")?,
            event: AuditEvent {
                unix_time_ms: self.unix_time_ms,
                actor_party: self.actor_party,
                role: i32::try_from(self.role)
                    .map_err(|_| StoreError::Corrupt(format!("audit role {}", self.role)))?,
                rpc: self.rpc,
                project: self.project,
                recipe: self.recipe,
                epoch: to_u64(self.epoch, "audit epoch")?,
                item_count: to_u64(self.item_count, "audit item_count")?,
                status_code: u32::try_from(self.status_code).map_err(|_| {
                    StoreError::Corrupt(format!("audit status code {}", self.status_code))
                })?,
            },
            prev_hash: hash(&self.prev_hash),
            entry_hash: hash(&self.entry_hash),
        })
    }
}

/// Implements [`CustodianStore`](super::CustodianStore) for `$store` (fields `pool:
/// Pool<$db>` and `keks: Arc<KekRing>`, inherent `async fn begin_write(&self)` returning a
/// transaction that serialises writers) with `$lock` appended to row-locking `SELECT`s
/// (`" FOR UPDATE"` on PostgreSQL, `""` on SQLite, whose `BEGIN IMMEDIATE` already locks).
macro_rules! impl_custodian_store {
    ($store:ty, $db:ty, $lock:literal) => {
        use renketsu_keys::audit::{AuditEntry, AuditEvent, AuditHead};
        use renketsu_keys::lifecycle::{KeyEvent, KeyState, Timestamp, derive_epoch_key};
        use super::common::{
            AuditRow, EpochRow, HolderRow, Place, ProjectRow, RecipeRow, check_distinct,
            check_name, epoch_cols, is_unique_violation, to_i64, to_u64,
        };
        use super::{
            CustodianStore, EpochKey, EpochRecord, HolderRecord, NewProject, ProjectRecord,
            RecipeRecord, Reservation, ResealReport, Rotation, RotationOutcome, Secret32,
            StoreError,
        };

        type Conn = <$db as sqlx::Database>::Connection;

        impl $store {
            async fn project_exists(conn: &mut Conn, project: &str) -> Result<bool, StoreError> {
                Ok(
                    sqlx::query_scalar::<_, String>("SELECT name FROM projects WHERE name = $1")
                        .bind(project)
                        .fetch_optional(&mut *conn)
                        .await?
                        .is_some(),
                )
            }

            /// The error for a missing (project, recipe[, epoch]): which part is missing.
            async fn missing(
                conn: &mut Conn,
                project: &str,
                recipe: &str,
                epoch: Option<u64>,
            ) -> StoreError {
                match Self::recipe_exists(conn, project, recipe).await {
                    Err(e) => e,
                    Ok(true) => match epoch {
                        Some(epoch) => StoreError::EpochNotFound {
                            project: project.to_owned(),
                            recipe: recipe.to_owned(),
                            epoch,
                        },
                        None => StoreError::NoActiveEpoch {
                            project: project.to_owned(),
                            recipe: recipe.to_owned(),
                        },
                    },
                    Ok(false) => match Self::project_exists(conn, project).await {
                        Err(e) => e,
                        Ok(true) => StoreError::RecipeNotFound {
                            project: project.to_owned(),
                            recipe: recipe.to_owned(),
                        },
                        Ok(false) => StoreError::ProjectNotFound(project.to_owned()),
                    },
                }
            }

            async fn recipe_exists(
                conn: &mut Conn,
                project: &str,
                recipe: &str,
            ) -> Result<bool, StoreError> {
                Ok(sqlx::query_scalar::<_, String>(concat!(
                    "SELECT recipe FROM recipes WHERE project = $1 AND recipe = $2",
                    $lock
                ))
                .bind(project)
                .bind(recipe)
                .fetch_optional(&mut *conn)
                .await?
                .is_some())
            }

            async fn load_project(
                conn: &mut Conn,
                row: ProjectRow,
            ) -> Result<ProjectRecord, StoreError> {
                let recipes = sqlx::query_as::<_, RecipeRow>(
                    "SELECT r.recipe,
                        (SELECT e.epoch FROM epoch_keys e WHERE e.project = r.project
                            AND e.recipe = r.recipe AND e.state = 'active') AS active_epoch,
                        (SELECT e.public_key FROM epoch_keys e WHERE e.project = r.project
                            AND e.recipe = r.recipe AND e.state = 'active') AS active_public_key,
                        (SELECT MAX(e.epoch) FROM epoch_keys e WHERE e.project = r.project
                            AND e.recipe = r.recipe) AS latest_epoch
                     FROM recipes r WHERE r.project = $1 ORDER BY r.position",
                )
                .bind(&row.name)
                .fetch_all(&mut *conn)
                .await?
                .into_iter()
                .map(|r| {
                    let active = match (r.active_epoch, r.active_public_key) {
                        (Some(e), Some(pk)) => Some((
                            to_u64(e, "epoch")?,
                            pk.as_slice().try_into().map_err(|_| {
                                StoreError::Corrupt("epoch public key is not 32 bytes".into())
                            })?,
                        )),
                        _ => None,
                    };
                    Ok(RecipeRecord {
                        recipe: r.recipe,
                        active,
                        latest_epoch: to_u64(r.latest_epoch.unwrap_or(0), "epoch")?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
                let clk_fields = sqlx::query_scalar::<_, String>(
                    "SELECT field FROM clk_keys WHERE project = $1 ORDER BY position",
                )
                .bind(&row.name)
                .fetch_all(&mut *conn)
                .await?;
                let holders = sqlx::query_as::<_, HolderRow>(
                    "SELECT project, party, declared_records, evaluation_quota, enrolled_unix_ms
                     FROM holders WHERE project = $1 ORDER BY position, party",
                )
                .bind(&row.name)
                .fetch_all(&mut *conn)
                .await?
                .into_iter()
                .map(HolderRow::into_record)
                .collect::<Result<Vec<_>, _>>()?;
                Ok(ProjectRecord {
                    name: row.name,
                    recipes,
                    clk_fields,
                    holders,
                    created_at: Timestamp::from_unix_ms(row.created_unix_ms),
                })
            }

            async fn epoch_row(
                conn: &mut Conn,
                project: &str,
                recipe: &str,
                epoch: u64,
            ) -> Result<EpochRow, StoreError> {
                let row = sqlx::query_as::<_, EpochRow>(concat!(
                    "SELECT ",
                    epoch_cols!(),
                    " FROM epoch_keys WHERE project = $1 AND recipe = $2 AND epoch = $3"
                ))
                .bind(project)
                .bind(recipe)
                .bind(to_i64(epoch, "epoch")?)
                .fetch_optional(&mut *conn)
                .await?;
                match row {
                    Some(r) => Ok(r),
                    None => Err(Self::missing(conn, project, recipe, Some(epoch)).await),
                }
            }

            async fn active_epoch_no(
                conn: &mut Conn,
                project: &str,
                recipe: &str,
            ) -> Result<Option<i64>, StoreError> {
                Ok(sqlx::query_scalar::<_, i64>(
                    "SELECT epoch FROM epoch_keys WHERE project = $1 AND recipe = $2 AND state = 'active'",
                )
                .bind(project)
                .bind(recipe)
                .fetch_optional(&mut *conn)
                .await?)
            }

            /// Moves one epoch through `event`, checking the lifecycle rules.
            async fn transition(
                conn: &mut Conn,
                project: &str,
                recipe: &str,
                epoch: u64,
                event: KeyEvent,
                now: Timestamp,
            ) -> Result<(), StoreError> {
                let row = Self::epoch_row(conn, project, recipe, epoch).await?;
                let rec = row.into_record()?;
                let next = rec.state.apply(event).map_err(|source| StoreError::Transition {
                    project: project.to_owned(),
                    recipe: recipe.to_owned(),
                    epoch,
                    source,
                })?;
                let sql = match event {
                    KeyEvent::Activate => "UPDATE epoch_keys SET state = $4, activates_unix_ms = $5
                        WHERE project = $1 AND recipe = $2 AND epoch = $3",
                    KeyEvent::Retire => "UPDATE epoch_keys SET state = $4, retired_unix_ms = $5
                        WHERE project = $1 AND recipe = $2 AND epoch = $3",
                    KeyEvent::Revoke => "UPDATE epoch_keys SET state = $4, revoked_unix_ms = $5
                        WHERE project = $1 AND recipe = $2 AND epoch = $3",
                };
                sqlx::query(sql)
                    .bind(project)
                    .bind(recipe)
                    .bind(to_i64(epoch, "epoch")?)
                    .bind(next.as_str())
                    .bind(now.as_unix_ms())
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            }

            #[allow(
                clippy::too_many_arguments,
                reason = "one row's columns; a struct would only rename them"
            )]
            async fn insert_epoch(
                &self,
                conn: &mut Conn,
                project: &str,
                recipe: &str,
                epoch: u64,
                seed: &Secret32,
                state: KeyState,
                created: Timestamp,
                activates: Option<Timestamp>,
            ) -> Result<EpochRecord, StoreError> {
                let public_key = derive_epoch_key(seed, project, recipe, epoch)
                    .map_err(|e| StoreError::InvalidArgument(format!("epoch key: {e}")))?
                    .public_key()
                    .to_bytes();
                let sealed = Place::epoch_seed(project, recipe, epoch).seal(&self.keks, seed.as_slice());
                sqlx::query(
                    "INSERT INTO epoch_keys (project, recipe, epoch, state, public_key, seed_sealed,
                        created_unix_ms, activates_unix_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(project)
                .bind(recipe)
                .bind(to_i64(epoch, "epoch")?)
                .bind(state.as_str())
                .bind(public_key.as_slice())
                .bind(sealed)
                .bind(created.as_unix_ms())
                .bind(activates.map(Timestamp::as_unix_ms))
                .execute(&mut *conn)
                .await?;
                Ok(EpochRecord {
                    project: project.to_owned(),
                    recipe: recipe.to_owned(),
                    epoch,
                    state,
                    public_key,
                    created_at: created,
                    activates_at: activates,
                    retired_at: None,
                    revoked_at: None,
                })
            }
        }

        impl CustodianStore for $store {
            async fn create_project(&self, p: NewProject) -> Result<ProjectRecord, StoreError> {
                check_name("project", &p.name)?;
                if p.recipes.is_empty() {
                    return Err(StoreError::InvalidArgument(
                        "a project needs at least one recipe".into(),
                    ));
                }
                check_distinct("recipe", p.recipes.iter().map(|r| r.0.as_str()))?;
                check_distinct("CLK field", p.clk_fields.iter().map(|r| r.0.as_str()))?;
                let mut tx = self.begin_write().await?;
                let inserted = sqlx::query(
                    "INSERT INTO projects (name, created_unix_ms) VALUES ($1, $2)",
                )
                .bind(&p.name)
                .bind(p.created_at.as_unix_ms())
                .execute(&mut *tx)
                .await;
                match inserted {
                    Err(e) if is_unique_violation(&e) => {
                        return Err(StoreError::ProjectExists(p.name.clone()));
                    }
                    other => {
                        other?;
                    }
                }
                for (i, (recipe, seed)) in p.recipes.iter().enumerate() {
                    sqlx::query(
                        "INSERT INTO recipes (project, recipe, position) VALUES ($1, $2, $3)",
                    )
                    .bind(&p.name)
                    .bind(recipe)
                    .bind(i as i64)
                    .execute(&mut *tx)
                    .await?;
                    self.insert_epoch(
                        &mut tx,
                        &p.name,
                        recipe,
                        1,
                        seed,
                        KeyState::Active,
                        p.created_at,
                        Some(p.created_at),
                    )
                    .await?;
                }
                for (i, (field, key)) in p.clk_fields.iter().enumerate() {
                    let sealed = Place::clk_key(&p.name, field).seal(&self.keks, key.as_slice());
                    sqlx::query(
                        "INSERT INTO clk_keys (project, field, position, key_sealed)
                         VALUES ($1, $2, $3, $4)",
                    )
                    .bind(&p.name)
                    .bind(field)
                    .bind(i as i64)
                    .bind(sealed)
                    .execute(&mut *tx)
                    .await?;
                }
                let record = Self::load_project(
                    &mut tx,
                    ProjectRow {
                        name: p.name.clone(),
                        created_unix_ms: p.created_at.as_unix_ms(),
                    },
                )
                .await?;
                tx.commit().await?;
                Ok(record)
            }

            async fn get_project(&self, project: &str) -> Result<ProjectRecord, StoreError> {
                let mut conn = self.pool.acquire().await?;
                let row = sqlx::query_as::<_, ProjectRow>(
                    "SELECT name, created_unix_ms FROM projects WHERE name = $1",
                )
                .bind(project)
                .fetch_optional(&mut *conn)
                .await?
                .ok_or_else(|| StoreError::ProjectNotFound(project.to_owned()))?;
                Self::load_project(&mut conn, row).await
            }

            async fn list_projects(&self) -> Result<Vec<ProjectRecord>, StoreError> {
                let mut conn = self.pool.acquire().await?;
                let rows = sqlx::query_as::<_, ProjectRow>(
                    "SELECT name, created_unix_ms FROM projects ORDER BY id",
                )
                .fetch_all(&mut *conn)
                .await?;
                let mut out = Vec::with_capacity(rows.len());
                for row in rows {
                    out.push(Self::load_project(&mut conn, row).await?);
                }
                Ok(out)
            }

            async fn enrol_holder(&self, h: HolderRecord) -> Result<HolderRecord, StoreError> {
                check_name("party", &h.party)?;
                if h.declared_records == 0 || h.evaluation_quota == 0 {
                    return Err(StoreError::InvalidArgument(
                        "declared records and evaluation quota must be > 0".into(),
                    ));
                }
                let mut tx = self.begin_write().await?;
                if !Self::project_exists(&mut tx, &h.project).await? {
                    return Err(StoreError::ProjectNotFound(h.project.clone()));
                }
                let inserted = sqlx::query(
                    "INSERT INTO holders (project, party, declared_records, evaluation_quota,
                        enrolled_unix_ms, position)
                     VALUES ($1, $2, $3, $4, $5,
                        (SELECT COALESCE(MAX(position), 0) + 1 FROM holders WHERE project = $1))",
                )
                .bind(&h.project)
                .bind(&h.party)
                .bind(to_i64(h.declared_records, "declared records")?)
                .bind(to_i64(h.evaluation_quota, "evaluation quota")?)
                .bind(h.enrolled_at.as_unix_ms())
                .execute(&mut *tx)
                .await;
                match inserted {
                    Err(e) if is_unique_violation(&e) => {
                        return Err(StoreError::HolderExists {
                            project: h.project.clone(),
                            party: h.party.clone(),
                        });
                    }
                    other => {
                        other?;
                    }
                }
                tx.commit().await?;
                Ok(h)
            }

            async fn get_holder(
                &self,
                project: &str,
                party: &str,
            ) -> Result<HolderRecord, StoreError> {
                sqlx::query_as::<_, HolderRow>(
                    "SELECT project, party, declared_records, evaluation_quota, enrolled_unix_ms
                     FROM holders WHERE project = $1 AND party = $2",
                )
                .bind(project)
                .bind(party)
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(|| StoreError::HolderNotFound {
                    project: project.to_owned(),
                    party: party.to_owned(),
                })?
                .into_record()
            }

            async fn get_epoch(
                &self,
                project: &str,
                recipe: &str,
                epoch: Option<u64>,
            ) -> Result<EpochRecord, StoreError> {
                let mut conn = self.pool.acquire().await?;
                let epoch = match epoch {
                    Some(e) => e,
                    None => match Self::active_epoch_no(&mut conn, project, recipe).await? {
                        Some(e) => to_u64(e, "epoch")?,
                        None => return Err(Self::missing(&mut conn, project, recipe, None).await),
                    },
                };
                Self::epoch_row(&mut conn, project, recipe, epoch)
                    .await?
                    .into_record()
            }

            async fn list_epochs(
                &self,
                project: &str,
                recipe: &str,
            ) -> Result<Vec<EpochRecord>, StoreError> {
                let mut conn = self.pool.acquire().await?;
                let rows = sqlx::query_as::<_, EpochRow>(concat!(
                    "SELECT ",
                    epoch_cols!(),
                    " FROM epoch_keys WHERE project = $1 AND recipe = $2 ORDER BY epoch"
                ))
                .bind(project)
                .bind(recipe)
                .fetch_all(&mut *conn)
                .await?;
                if rows.is_empty() {
                    return Err(Self::missing(&mut conn, project, recipe, Some(1)).await);
                }
                rows.into_iter().map(EpochRow::into_record).collect()
            }

            async fn epoch_key(
                &self,
                project: &str,
                recipe: &str,
                epoch: u64,
            ) -> Result<EpochKey, StoreError> {
                let mut conn = self.pool.acquire().await?;
                let record = Self::epoch_row(&mut conn, project, recipe, epoch)
                    .await?
                    .into_record()?;
                let blob = sqlx::query_scalar::<_, Vec<u8>>(
                    "SELECT seed_sealed FROM epoch_keys
                     WHERE project = $1 AND recipe = $2 AND epoch = $3",
                )
                .bind(project)
                .bind(recipe)
                .bind(to_i64(epoch, "epoch")?)
                .fetch_one(&mut *conn)
                .await?;
                let seed = Place::epoch_seed(project, recipe, epoch).open::<32>(&self.keks, &blob)?;
                // The public key is stored in clear: check it still matches the sealed seed.
                let derived = derive_epoch_key(&seed, project, recipe, epoch)
                    .map_err(|e| StoreError::Corrupt(format!("epoch key derivation: {e}")))?
                    .public_key()
                    .to_bytes();
                if derived != record.public_key {
                    return Err(StoreError::Corrupt(format!(
                        "public key of {project}/{recipe}/{epoch} does not match its sealed seed"
                    )));
                }
                Ok(EpochKey { record, seed })
            }

            async fn rotate_epoch(&self, r: Rotation) -> Result<RotationOutcome, StoreError> {
                if let Some(t) = r.activate_at
                    && t <= r.now
                {
                    return Err(StoreError::InvalidArgument(
                        "a pending epoch's activation time must be in the future".into(),
                    ));
                }
                let mut tx = self.begin_write().await?;
                if !Self::recipe_exists(&mut tx, &r.project, &r.recipe).await? {
                    return Err(Self::missing(&mut tx, &r.project, &r.recipe, None).await);
                }
                let pending = sqlx::query_scalar::<_, i64>(
                    "SELECT epoch FROM epoch_keys WHERE project = $1 AND recipe = $2 AND state = 'pending'",
                )
                .bind(&r.project)
                .bind(&r.recipe)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(p) = pending {
                    return Err(StoreError::InvalidArgument(format!(
                        "epoch {p} of {}/{} is already pending; revoke it or let it activate first",
                        r.project, r.recipe
                    )));
                }
                let latest = sqlx::query_scalar::<_, Option<i64>>(
                    "SELECT MAX(epoch) FROM epoch_keys WHERE project = $1 AND recipe = $2",
                )
                .bind(&r.project)
                .bind(&r.recipe)
                .fetch_one(&mut *tx)
                .await?
                .unwrap_or(0);
                let epoch = to_u64(latest, "epoch")? + 1;
                let previous = Self::active_epoch_no(&mut tx, &r.project, &r.recipe)
                    .await?
                    .map(|e| to_u64(e, "epoch"))
                    .transpose()?;
                let new = match r.activate_at {
                    Some(t) => {
                        self.insert_epoch(
                            &mut tx,
                            &r.project,
                            &r.recipe,
                            epoch,
                            &r.seed,
                            KeyState::Pending,
                            r.now,
                            Some(t),
                        )
                        .await?
                    }
                    None => {
                        if let Some(prev) = previous {
                            Self::transition(
                                &mut tx,
                                &r.project,
                                &r.recipe,
                                prev,
                                KeyEvent::Retire,
                                r.now,
                            )
                            .await?;
                        }
                        self.insert_epoch(
                            &mut tx,
                            &r.project,
                            &r.recipe,
                            epoch,
                            &r.seed,
                            KeyState::Active,
                            r.now,
                            Some(r.now),
                        )
                        .await?
                    }
                };
                tx.commit().await?;
                Ok(RotationOutcome {
                    previous_epoch: previous,
                    new,
                })
            }

            async fn activate_due(&self, now: Timestamp) -> Result<Vec<EpochRecord>, StoreError> {
                let due = sqlx::query_as::<_, (String, String, i64)>(
                    "SELECT project, recipe, epoch FROM epoch_keys
                     WHERE state = 'pending' AND activates_unix_ms <= $1
                     ORDER BY activates_unix_ms, project, recipe",
                )
                .bind(now.as_unix_ms())
                .fetch_all(&self.pool)
                .await?;
                let mut out = Vec::new();
                for (project, recipe, epoch) in due {
                    let epoch = to_u64(epoch, "epoch")?;
                    let mut tx = self.begin_write().await?;
                    Self::recipe_exists(&mut tx, &project, &recipe).await?;
                    // Another caller may have activated or revoked it meanwhile.
                    let row = Self::epoch_row(&mut tx, &project, &recipe, epoch).await?;
                    if row.state != KeyState::Pending.as_str() {
                        continue;
                    }
                    if let Some(prev) = Self::active_epoch_no(&mut tx, &project, &recipe).await? {
                        let prev = to_u64(prev, "epoch")?;
                        Self::transition(&mut tx, &project, &recipe, prev, KeyEvent::Retire, now)
                            .await?;
                    }
                    Self::transition(&mut tx, &project, &recipe, epoch, KeyEvent::Activate, now)
                        .await?;
                    let rec = Self::epoch_row(&mut tx, &project, &recipe, epoch)
                        .await?
                        .into_record()?;
                    tx.commit().await?;
                    out.push(rec);
                }
                Ok(out)
            }

            async fn revoke_epoch(
                &self,
                project: &str,
                recipe: &str,
                epoch: u64,
                now: Timestamp,
            ) -> Result<EpochRecord, StoreError> {
                let mut tx = self.begin_write().await?;
                Self::recipe_exists(&mut tx, project, recipe).await?;
                Self::transition(&mut tx, project, recipe, epoch, KeyEvent::Revoke, now).await?;
                let rec = Self::epoch_row(&mut tx, project, recipe, epoch)
                    .await?
                    .into_record()?;
                tx.commit().await?;
                Ok(rec)
            }

            async fn clk_key(&self, project: &str, field: &str) -> Result<Secret32, StoreError> {
                let mut conn = self.pool.acquire().await?;
                let blob = sqlx::query_scalar::<_, Vec<u8>>(
                    "SELECT key_sealed FROM clk_keys WHERE project = $1 AND field = $2",
                )
                .bind(project)
                .bind(field)
                .fetch_optional(&mut *conn)
                .await?;
                match blob {
                    Some(b) => Place::clk_key(project, field).open::<32>(&self.keks, &b),
                    None if Self::project_exists(&mut conn, project).await? => {
                        Err(StoreError::ClkFieldNotFound {
                            project: project.to_owned(),
                            field: field.to_owned(),
                        })
                    }
                    None => Err(StoreError::ProjectNotFound(project.to_owned())),
                }
            }

            async fn reserve_evaluations(
                &self,
                project: &str,
                party: &str,
                recipe: &str,
                epoch: u64,
                count: u64,
            ) -> Result<Reservation, StoreError> {
                if count == 0 {
                    return Err(StoreError::InvalidArgument(
                        "an evaluation reservation must be for at least one element".into(),
                    ));
                }
                let quota = self.get_holder(project, party).await?.evaluation_quota;
                let exceeded = |used: u64| StoreError::QuotaExceeded {
                    project: project.to_owned(),
                    party: party.to_owned(),
                    recipe: recipe.to_owned(),
                    epoch,
                    used,
                    requested: count,
                    quota,
                };
                if count > quota {
                    let used = self.evaluations_used(project, party, recipe, epoch).await?;
                    return Err(exceeded(used));
                }
                // One statement: insert, or add if the sum stays within the quota. Concurrent
                // callers serialise on the row, so the quota can never be over-spent.
                let mut tx = self.begin_write().await?;
                let used = sqlx::query_scalar::<_, i64>(
                    "INSERT INTO evaluation_usage (project, party, recipe, epoch, used)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (project, party, recipe, epoch) DO UPDATE
                        SET used = evaluation_usage.used + excluded.used
                        WHERE evaluation_usage.used + excluded.used <= $6
                     RETURNING used",
                )
                .bind(project)
                .bind(party)
                .bind(recipe)
                .bind(to_i64(epoch, "epoch")?)
                .bind(to_i64(count, "count")?)
                .bind(to_i64(quota, "quota")?)
                .fetch_optional(&mut *tx)
                .await?;
                tx.commit().await?;
                match used {
                    Some(u) => Ok(Reservation {
                        used: to_u64(u, "used")?,
                        quota,
                    }),
                    None => {
                        let used = self.evaluations_used(project, party, recipe, epoch).await?;
                        Err(exceeded(used))
                    }
                }
            }

            async fn evaluations_used(
                &self,
                project: &str,
                party: &str,
                recipe: &str,
                epoch: u64,
            ) -> Result<u64, StoreError> {
                let used = sqlx::query_scalar::<_, i64>(
                    "SELECT used FROM evaluation_usage
                     WHERE project = $1 AND party = $2 AND recipe = $3 AND epoch = $4",
                )
                .bind(project)
                .bind(party)
                .bind(recipe)
                .bind(to_i64(epoch, "epoch")?)
                .fetch_optional(&self.pool)
                .await?;
                to_u64(used.unwrap_or(0), "used")
            }

            async fn append_audit(&self, event: AuditEvent) -> Result<AuditEntry, StoreError> {
                let mut tx = self.begin_write().await?;
                let head_row = sqlx::query_scalar::<_, Option<Vec<u8>>>(concat!(
                    "SELECT head_sealed FROM audit_head WHERE id = 1",
                    $lock
                ))
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| StoreError::Corrupt("the audit head row is missing".into()))?;
                let place = Place::audit_head();
                let head = match head_row {
                    Some(blob) => {
                        let bytes = place.open::<{ AuditHead::LEN }>(&self.keks, &blob)?;
                        Some(AuditHead::from_bytes(bytes.as_slice()).ok_or_else(|| {
                            StoreError::Corrupt("the audit head is malformed".into())
                        })?)
                    }
                    None => None,
                };
                let entry = AuditEntry::next(head.as_ref(), event);
                let e = &entry.event;
                sqlx::query(
                    "INSERT INTO audit_log (sequence, unix_time_ms, actor_party, role, rpc, project,
                        recipe, epoch, item_count, status_code, prev_hash, entry_hash)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                )
                .bind(to_i64(entry.sequence, "sequence")?)
                .bind(e.unix_time_ms)
                .bind(&e.actor_party)
                .bind(i64::from(e.role))
                .bind(&e.rpc)
                .bind(&e.project)
                .bind(&e.recipe)
                .bind(to_i64(e.epoch, "epoch")?)
                .bind(to_i64(e.item_count, "item count")?)
                .bind(i64::from(e.status_code))
                .bind(entry.prev_hash.as_slice())
                .bind(entry.entry_hash.as_slice())
                .execute(&mut *tx)
                .await
                .map_err(|err| {
                    if is_unique_violation(&err) {
                        StoreError::Corrupt(format!(
                            "audit entry {} already exists beyond the sealed head",
                            entry.sequence
                        ))
                    } else {
                        err.into()
                    }
                })?;
                let sealed = place.seal(&self.keks, &entry.head().to_bytes());
                sqlx::query("UPDATE audit_head SET head_sealed = $1 WHERE id = 1")
                    .bind(sealed)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(entry)
            }

            async fn read_audit(&self, from: u64, limit: u64) -> Result<Vec<AuditEntry>, StoreError> {
                let limit = if limit == 0 { i64::MAX } else { to_i64(limit, "limit")? };
                sqlx::query_as::<_, AuditRow>(
                    "SELECT sequence, unix_time_ms, actor_party, role, rpc, project, recipe, epoch,
                        item_count, status_code, prev_hash, entry_hash
                     FROM audit_log WHERE sequence >= $1 ORDER BY sequence LIMIT $2",
                )
                .bind(to_i64(from.max(1), "sequence")?)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(AuditRow::into_entry)
                .collect()
            }

            async fn audit_head(&self) -> Result<Option<AuditHead>, StoreError> {
                let row = sqlx::query_scalar::<_, Option<Vec<u8>>>(
                    "SELECT head_sealed FROM audit_head WHERE id = 1",
                )
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(|| StoreError::Corrupt("the audit head row is missing".into()))?;
                match row {
                    None => Ok(None),
                    Some(blob) => {
                        let bytes =
                            Place::audit_head().open::<{ AuditHead::LEN }>(&self.keks, &blob)?;
                        Ok(Some(AuditHead::from_bytes(bytes.as_slice()).ok_or_else(|| {
                            StoreError::Corrupt("the audit head is malformed".into())
                        })?))
                    }
                }
            }

            async fn reseal_all(&self) -> Result<ResealReport, StoreError> {
                let mut report = ResealReport::default();
                let seeds = sqlx::query_as::<_, (String, String, i64, Vec<u8>)>(
                    "SELECT project, recipe, epoch, seed_sealed FROM epoch_keys",
                )
                .fetch_all(&self.pool)
                .await?;
                for (project, recipe, epoch, blob) in seeds {
                    report.examined += 1;
                    let place = Place::epoch_seed(&project, &recipe, to_u64(epoch, "epoch")?);
                    if let Some(new) = place.reseal::<32>(&self.keks, &blob)? {
                        // Compare-and-swap: a concurrent change wins, nothing is lost.
                        let done = sqlx::query(
                            "UPDATE epoch_keys SET seed_sealed = $1 WHERE project = $2
                                AND recipe = $3 AND epoch = $4 AND seed_sealed = $5",
                        )
                        .bind(new)
                        .bind(&project)
                        .bind(&recipe)
                        .bind(epoch)
                        .bind(blob)
                        .execute(&self.pool)
                        .await?;
                        report.resealed += done.rows_affected();
                    }
                }
                let clks = sqlx::query_as::<_, (String, String, Vec<u8>)>(
                    "SELECT project, field, key_sealed FROM clk_keys",
                )
                .fetch_all(&self.pool)
                .await?;
                for (project, field, blob) in clks {
                    report.examined += 1;
                    if let Some(new) = Place::clk_key(&project, &field).reseal::<32>(&self.keks, &blob)? {
                        let done = sqlx::query(
                            "UPDATE clk_keys SET key_sealed = $1
                             WHERE project = $2 AND field = $3 AND key_sealed = $4",
                        )
                        .bind(new)
                        .bind(&project)
                        .bind(&field)
                        .bind(blob)
                        .execute(&self.pool)
                        .await?;
                        report.resealed += done.rows_affected();
                    }
                }
                let head = sqlx::query_scalar::<_, Option<Vec<u8>>>(
                    "SELECT head_sealed FROM audit_head WHERE id = 1",
                )
                .fetch_optional(&self.pool)
                .await?
                .flatten();
                if let Some(blob) = head {
                    report.examined += 1;
                    if let Some(new) =
                        Place::audit_head().reseal::<{ AuditHead::LEN }>(&self.keks, &blob)?
                    {
                        let done = sqlx::query(
                            "UPDATE audit_head SET head_sealed = $1 WHERE id = 1 AND head_sealed = $2",
                        )
                        .bind(new)
                        .bind(blob)
                        .execute(&self.pool)
                        .await?;
                        report.resealed += done.rows_affected();
                    }
                }
                Ok(report)
            }
        }
    };
}
pub(crate) use impl_custodian_store;
