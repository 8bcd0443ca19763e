//! The services' errors and THE one place they become `tonic::Status` (SPEC.md §8.5, §10.5).
//!
//! Every handler of both services returns `Result<_, ServiceError>`; [`ServiceError::code`]
//! decides the gRPC status code (also recorded in the audit entry) and
//! `From<ServiceError> for Status` builds the status. Messages name parties, projects,
//! recipes, epochs, uploads, jobs and counts, never secret bytes, tokens, identifiers or
//! content. Internal failures (database, sealing) are logged with detail on the server and
//! reported to the client as INTERNAL without it.

use tonic::{Code, Status};

/// Why a call failed. Each variant names its gRPC status code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// No usable client certificate. UNAUTHENTICATED.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// Wrong role, or not part of the project. PERMISSION_DENIED.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A malformed request (empty names, bad element encodings, batch too large, …).
    /// INVALID_ARGUMENT.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The named project, recipe, epoch, field, upload or job does not exist (admin calls, or
    /// after the membership check). NOT_FOUND.
    #[error("not found: {0}")]
    NotFound(String),
    /// The project (or enrolment) exists already. ALREADY_EXISTS.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// Not now, or not in this state: a retired, revoked or pending key, a mode that differs
    /// from the project's, uploads missing, a job running, no completed job.
    /// FAILED_PRECONDITION.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// A holder's evaluation quota would be exceeded (custodian). RESOURCE_EXHAUSTED.
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
    /// Stored bytes contradict the request (a chunk index with other bytes). ABORTED.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A per-holder limit would be exceeded (bytes of incomplete uploads). RESOURCE_EXHAUSTED.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// Another service could not be reached (the custodian, for a re-keying delta).
    /// UNAVAILABLE.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A storage, sealing or audit failure; details are logged, not sent. INTERNAL.
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
                "internal error; see the server's log".to_owned()
            }
            other => other.to_string(),
        };
        Status::new(e.code(), message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_detail_stays_on_the_server() {
        let s = Status::from(ServiceError::Internal(
            "db at /var/lib/x: disk full".to_owned(),
        ));
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("disk full"), "{}", s.message());
        let s = Status::from(ServiceError::Conflict("chunk 3 differs".to_owned()));
        assert_eq!(
            (s.code(), s.message()),
            (Code::Aborted, "conflict: chunk 3 differs")
        );
    }
}
