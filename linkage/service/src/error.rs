//! The linkage unit's errors and THE one place they become `tonic::Status` (SPEC.md §10.5).
//!
//! Messages name parties, projects, uploads and jobs; never tokens, identifiers or content.
//! Internal failures (database) are logged on the server and reported as INTERNAL without
//! detail.

use tonic::{Code, Status};

use crate::store::StoreError;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// No usable client certificate. UNAUTHENTICATED.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// Wrong role, or not part of the project. PERMISSION_DENIED.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A malformed request. INVALID_ARGUMENT.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// No such project, upload or job (admin calls, or after the membership check).
    /// NOT_FOUND.
    #[error("not found: {0}")]
    NotFound(String),
    /// The project exists already. ALREADY_EXISTS.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// Not now: uploads missing, a job running, no completed job, opt-outs pending.
    /// FAILED_PRECONDITION.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// Stored bytes contradict the request (a chunk index with other bytes). ABORTED.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A per-holder limit would be exceeded (bytes of incomplete uploads). RESOURCE_EXHAUSTED.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// The custodian could not be reached for a re-keying delta. UNAVAILABLE.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A storage failure; details are logged, not sent. INTERNAL.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    /// The gRPC status code (also recorded in the audit log).
    pub fn code(&self) -> Code {
        match self {
            ServiceError::Unauthenticated(_) => Code::Unauthenticated,
            ServiceError::PermissionDenied(_) => Code::PermissionDenied,
            ServiceError::InvalidArgument(_) => Code::InvalidArgument,
            ServiceError::NotFound(_) => Code::NotFound,
            ServiceError::AlreadyExists(_) => Code::AlreadyExists,
            ServiceError::FailedPrecondition(_) => Code::FailedPrecondition,
            ServiceError::Conflict(_) => Code::Aborted,
            ServiceError::ResourceExhausted(_) => Code::ResourceExhausted,
            ServiceError::Unavailable(_) => Code::Unavailable,
            ServiceError::Internal(_) => Code::Internal,
        }
    }
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Self {
        let message = match &e {
            ServiceError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                "internal error in the linkage unit; see its log".to_owned()
            }
            other => other.to_string(),
        };
        Status::new(e.code(), message)
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            e @ StoreError::ProjectExists(_) => ServiceError::AlreadyExists(e.to_string()),
            e @ StoreError::ProjectNotFound(_) => ServiceError::NotFound(e.to_string()),
            StoreError::Conflict(m) => ServiceError::Conflict(m),
            e @ StoreError::JobRunning { .. } => ServiceError::FailedPrecondition(e.to_string()),
            other => ServiceError::Internal(other.to_string()),
        }
    }
}
