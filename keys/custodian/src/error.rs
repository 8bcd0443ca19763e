//! The custodian's store errors as service errors (SPEC.md §8.5). The error type itself, and
//! THE one place it becomes a `tonic::Status`, is `renketsu_rpc::ServiceError`, shared with
//! the linkage unit.

pub use renketsu_rpc::ServiceError;

use crate::store::StoreError;

impl From<StoreError> for ServiceError {
    /// Store errors as service errors: not-found and already-exists keep their meaning
    /// (callers reach them only after the membership check), lifecycle refusals are
    /// FAILED_PRECONDITION, a quota refusal is RESOURCE_EXHAUSTED, everything about the
    /// database or sealing is INTERNAL.
    fn from(e: StoreError) -> Self {
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
}
