//! Per-project service policy (SPEC.md §8.3): the RFC 9497 mode of the project and the
//! party name of its linkage unit, kept in the `project_policy` table next to the store's
//! tables (migration `20261122090000_project_policy.sql`).
//!
//! The policy row is written right after `create_project`. A project without one (created
//! by an older custodian, or a crash between the two writes) is treated as mode VOPRF with no
//! linkage unit: nobody gets its re-keying deltas until an admin recreates it.

use std::future::Future;

use renketsu_keys::oprf::Mode;

use crate::store::{PgStore, SqliteStore, Store, StoreError};

/// The policy of one project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectPolicy {
    /// RFC 9497 mode every holder blinds in: [`Mode::Oprf`] or [`Mode::Voprf`].
    pub mode: Mode,
    /// Party name of the project's linkage unit (empty: none).
    pub linkage_unit: String,
}

impl Default for ProjectPolicy {
    fn default() -> Self {
        Self {
            mode: Mode::Voprf,
            linkage_unit: String::new(),
        }
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Oprf => "oprf",
        _ => "voprf",
    }
}

fn parse_mode(s: &str) -> Result<Mode, StoreError> {
    match s {
        "oprf" => Ok(Mode::Oprf),
        "voprf" => Ok(Mode::Voprf),
        other => Err(StoreError::Corrupt(format!(
            "project_policy.mode {other:?} is not oprf or voprf"
        ))),
    }
}

/// Storage of [`ProjectPolicy`].
pub trait PolicyStore: Send + Sync {
    /// Records the policy of `project` (which must exist); never overwrites.
    fn set_policy(
        &self,
        project: &str,
        policy: &ProjectPolicy,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The policy of `project`; the default (VOPRF, no linkage unit) if none was recorded.
    fn policy(
        &self,
        project: &str,
    ) -> impl Future<Output = Result<ProjectPolicy, StoreError>> + Send;
}

impl PolicyStore for SqliteStore {
    async fn set_policy(&self, project: &str, policy: &ProjectPolicy) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO project_policy (project, mode, linkage_unit) VALUES (?, ?, ?)")
            .bind(project)
            .bind(mode_name(policy.mode))
            .bind(&policy.linkage_unit)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn policy(&self, project: &str) -> Result<ProjectPolicy, StoreError> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT mode, linkage_unit FROM project_policy WHERE project = ?")
                .bind(project)
                .fetch_optional(self.pool())
                .await?;
        row.map_or(Ok(ProjectPolicy::default()), |(mode, linkage_unit)| {
            Ok(ProjectPolicy {
                mode: parse_mode(&mode)?,
                linkage_unit,
            })
        })
    }
}

impl PolicyStore for PgStore {
    async fn set_policy(&self, project: &str, policy: &ProjectPolicy) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO project_policy (project, mode, linkage_unit) VALUES ($1, $2, $3)")
            .bind(project)
            .bind(mode_name(policy.mode))
            .bind(&policy.linkage_unit)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn policy(&self, project: &str) -> Result<ProjectPolicy, StoreError> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT mode, linkage_unit FROM project_policy WHERE project = $1")
                .bind(project)
                .fetch_optional(self.pool())
                .await?;
        row.map_or(Ok(ProjectPolicy::default()), |(mode, linkage_unit)| {
            Ok(ProjectPolicy {
                mode: parse_mode(&mode)?,
                linkage_unit,
            })
        })
    }
}

impl PolicyStore for Store {
    async fn set_policy(&self, project: &str, policy: &ProjectPolicy) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.set_policy(project, policy).await,
            Store::Postgres(s) => s.set_policy(project, policy).await,
        }
    }

    async fn policy(&self, project: &str) -> Result<ProjectPolicy, StoreError> {
        match self {
            Store::Sqlite(s) => s.policy(project).await,
            Store::Postgres(s) => s.policy(project).await,
        }
    }
}
