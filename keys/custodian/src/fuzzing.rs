//! Fuzzing harnesses for what the key custodian parses from data holders (the `fuzz/` targets
//! are one line each). Errors are expected; a panic is the finding.

use prost::Message as _;
use renketsu_protocol::v1;

use crate::config::DEFAULT_MAX_BATCH;

/// Decodes `data` as an `EvaluateBatchRequest` and runs the custodian's checks on it (epoch,
/// mode, batch size, every blinded element).
pub fn evaluate_batch(data: &[u8]) {
    if let Ok(req) = v1::EvaluateBatchRequest::decode(data)
        && let Ok((_, blinded)) = crate::service::evaluate_request(&req, DEFAULT_MAX_BATCH)
    {
        assert_eq!(blinded.len(), req.blinded_elements.len());
    }
}

/// Decodes `data` as a `GetWrappedClkKeyRequest` and wraps a fixed CLK key to its
/// `holder_public_key` (HPKE), as the custodian does after its store look-up.
pub fn wrapped_clk_key(data: &[u8]) {
    if let Ok(req) = v1::GetWrappedClkKeyRequest::decode(data)
        && !req.field.is_empty()
    {
        let _ =
            renketsu_keys::wrap::wrap(&req.holder_public_key, &req.project, &req.field, &[9; 32]);
    }
}
