//! The service's errors and THE one place they become `tonic::Status` (SPEC.md §8.5).
//!
//! Every handler returns `Result<_, ServiceError>`; [`ServiceError::code`] decides the gRPC
//! status code (also recorded in the audit entry) and `From<ServiceError> for Status` builds
//! the status. Messages name parties, projects, recipes, epochs and counts, never secret
//! bytes or identifiers. Internal failures (database, sealing) are logged with detail on the
//! server and reported to the client as INTERNAL without it.

use tonic::{Code, Status};

use crate::store::StoreError;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// No usable client certificate. UNAUTHENTICATED.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// Wrong role, or not a member of the project. PERMISSION_DENIED.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A malformed request (empty names, bad element encodings, batch too large, …).
    /// INVALID_ARGUMENT.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The named project, recipe, epoch or field does not exist (admin and member calls
    /// only). NOT_FOUND.
    #[error("not found: {0}")]
    NotFound(String),
    /// The project (or enrolment) exists already. ALREADY_EXISTS.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The key is in the wrong state: retired, revoked, pending, or the mode differs from the
    /// project's. FAILED_PRECONDITION.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// The holder's evaluation quota would be exceeded. RESOURCE_EXHAUSTED.
    #[error(
        "evaluation quota exhausted: {party} has used {used} of {quota} evaluations for project {project:?}, recipe {recipe:?}, epoch {epoch}; this batch of {requested} is refused"
    )]
    QuotaExhausted {
        /// The holder.
        party: String,
        /// Project.
        project: String,
        /// Recipe.
        recipe: String,
        /// Epoch.
        epoch: u64,
        /// Elements already reserved.
        used: u64,
        /// The quota.
        quota: u64,
        /// Elements in the refused batch.
        requested: u64,
    },
    /// A storage or sealing failure; details are logged, not sent. INTERNAL.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    /// The gRPC status code of this error (the code recorded in the audit log).
    pub fn code(&self) -> Code {
        match self {
            ServiceError::Unauthenticated(_) => Code::Unauthenticated,
            ServiceError::PermissionDenied(_) => Code::PermissionDenied,
            ServiceError::InvalidArgument(_) => Code::InvalidArgument,
            ServiceError::NotFound(_) => Code::NotFound,
            ServiceError::AlreadyExists(_) => Code::AlreadyExists,
            ServiceError::FailedPrecondition(_) => Code::FailedPrecondition,
            ServiceError::QuotaExhausted { .. } => Code::ResourceExhausted,
            ServiceError::Internal(_) => Code::Internal,
        }
    }
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Self {
        let message = match &e {
            ServiceError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                "internal error in the key custodian; see its log".to_owned()
            }
            other => other.to_string(),
        };
        Status::new(e.code(), message)
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        store_error(e)
    }
}

/// Store errors as service errors: not-found and already-exists keep their meaning (callers
/// reach them only after the membership check), lifecycle refusals are FAILED_PRECONDITION,
/// everything about the database or sealing is INTERNAL.
fn store_error(e: StoreError) -> ServiceError {
    match e {
        StoreError::InvalidArgument(m) => ServiceError::InvalidArgument(m),
        e @ (StoreError::ProjectExists(_) | StoreError::HolderExists { .. }) => {
            ServiceError::AlreadyExists(e.to_string())
        }
        e @ (StoreError::ProjectNotFound(_)
        | StoreError::RecipeNotFound { .. }
        | StoreError::EpochNotFound { .. }
        | StoreError::ClkFieldNotFound { .. }
        | StoreError::HolderNotFound { .. }) => ServiceError::NotFound(e.to_string()),
        e @ (StoreError::NoActiveEpoch { .. } | StoreError::Transition { .. }) => {
            ServiceError::FailedPrecondition(e.to_string())
        }
        StoreError::QuotaExceeded {
            project,
            party,
            recipe,
            epoch,
            used,
            requested,
            quota,
        } => ServiceError::QuotaExhausted {
            party,
            project,
            recipe,
            epoch,
            used,
            quota,
            requested,
        },
        other => ServiceError::Internal(other.to_string()),
    }
}
