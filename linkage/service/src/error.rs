//! The linkage unit's store errors as service errors (SPEC.md §10.5). The error type itself,
//! and THE one place it becomes a `tonic::Status`, is `renketsu_rpc::ServiceError`, shared
//! with the custodian. Messages name parties, projects, uploads and jobs; never tokens,
//! identifiers or content.

pub use renketsu_rpc::ServiceError;

use crate::store::StoreError;

impl From<StoreError> for ServiceError {
    /// An existing project is ALREADY_EXISTS, a missing one NOT_FOUND (reached only after
    /// the membership check), stored bytes that contradict a chunk ABORTED, a running job
    /// FAILED_PRECONDITION; everything about the database is INTERNAL.
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
