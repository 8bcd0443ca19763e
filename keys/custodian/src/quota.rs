//! Evaluation quotas (SPEC.md §8.4).
//!
//! Each enrolled holder may have at most `quota = ceil(declared_records × slack)` blinded
//! elements evaluated per (project, recipe, epoch). The budget is per recipe because every
//! recipe tokenizes each record once, and per epoch because a rotation re-tokenizes
//! everything. The slack (configuration `quota_slack`, default 1.5) leaves room for retries
//! after a crash: a batch counts against the quota when it is *reserved*, before it is
//! evaluated, so a batch lost in flight is still counted. The reservation is atomic in the
//! store, so concurrent batches cannot overspend.
//!
//! The quota caps how many identifiers a holder (or a thief of its certificate) can probe
//! against the key: without it, a holder could run a dictionary of every plausible
//! identifier through the custodian.

/// Errors computing a quota.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum QuotaError {
    /// `declared_records` is zero.
    #[error("declared_records must be at least 1")]
    NoRecords,
    /// The quota does not fit in 63 bits (the stores keep it as a signed 64-bit integer).
    #[error("declared_records × quota_slack = {0} is too large")]
    TooLarge(f64),
}

/// Largest quota (the stores keep counts as signed 64-bit integers).
pub const MAX_QUOTA: u64 = i64::MAX as u64;

/// `ceil(declared_records × slack)`: the number of blinded elements a holder that declared
/// `declared_records` records may have evaluated per (project, recipe, epoch).
pub fn evaluation_quota(declared_records: u64, slack: f64) -> Result<u64, QuotaError> {
    if declared_records == 0 {
        return Err(QuotaError::NoRecords);
    }
    #[allow(
        clippy::cast_precision_loss,
        reason = "record counts far below 2^53 are exact; above, a quota a few units off is harmless"
    )]
    let q = (declared_records as f64 * slack).ceil();
    #[allow(
        clippy::cast_precision_loss,
        reason = "comparison bound only; MAX_QUOTA as f64 rounds up to 2^63"
    )]
    if !(q.is_finite() && q < MAX_QUOTA as f64) {
        return Err(QuotaError::TooLarge(q));
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "q is finite, positive and below 2^63, checked above"
    )]
    let q = q as u64;
    // Never below the declared count, whatever rounding did.
    Ok(q.max(declared_records))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_is_declared_times_slack_rounded_up() {
        assert_eq!(evaluation_quota(1000, 1.5), Ok(1500));
        assert_eq!(evaluation_quota(3, 1.5), Ok(5));
        assert_eq!(evaluation_quota(7, 1.0), Ok(7));
        assert_eq!(evaluation_quota(0, 1.5), Err(QuotaError::NoRecords));
        assert!(matches!(
            evaluation_quota(u64::MAX / 2, 4.0),
            Err(QuotaError::TooLarge(_))
        ));
    }
}
