//! Checks of the linkage unit's requests that need no database: the handlers in
//! [`crate::service`] call them, and the fuzz targets (`fuzz/`) run them on arbitrary bytes.

use renketsu_linkage::Schema;
use renketsu_protocol::v1;
use renketsu_rpc::pki;
use sha2::{Digest as _, Sha256};

use crate::error::ServiceError;
use crate::service::MAX_CHUNK_BYTES;
use crate::store::JobRow;

fn bad(message: String) -> ServiceError {
    ServiceError::InvalidArgument(message)
}

/// Checks a `CreateLinkageProject` request (SPEC.md §10.1): a valid project name, at least two
/// holders, distinct valid party names, duplicates among the holders, a 32-byte X25519
/// researcher key, and a UTF-8 schema that parses and has no `[scoring]`. Returns the schema.
///
/// # Errors
/// [`ServiceError::InvalidArgument`] naming the first problem.
pub fn create_request(req: &v1::CreateLinkageProjectRequest) -> Result<Schema, ServiceError> {
    if req.project.is_empty() {
        return Err(bad("project is empty".to_owned()));
    }
    if !pki::is_valid_party(&req.project) {
        return Err(bad(format!(
            "project name {:?}: 1-64 characters of A-Z a-z 0-9 _ - .",
            req.project
        )));
    }
    if req.holders.len() < 2 {
        return Err(bad(
            "a linkage project needs at least two holders".to_owned()
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for h in req.holders.iter().chain(std::iter::once(&req.researcher)) {
        if !pki::is_valid_party(h) {
            return Err(bad(format!("party name {h:?} is not valid")));
        }
        if !seen.insert(h) {
            return Err(bad(format!("party {h:?} is named twice")));
        }
    }
    for d in &req.duplicates {
        if !req.holders.contains(d) {
            return Err(bad(format!("duplicates: {d:?} is not a holder")));
        }
    }
    if req.researcher_public_key.len() != 32 {
        return Err(bad(
            "researcher_public_key must be 32 bytes (X25519)".to_owned()
        ));
    }
    let text = std::str::from_utf8(&req.schema_toml)
        .map_err(|_| bad("schema_toml is not UTF-8".to_owned()))?;
    let schema = Schema::from_toml(text).map_err(|e| bad(format!("schema: {e}")))?;
    if schema.scoring.is_some() {
        return Err(bad(
            "a schema with [scoring] needs comparison values that token files do not carry; use one without [scoring]".to_owned(),
        ));
    }
    Ok(schema)
}

/// Checks the first chunk of an `Upload` stream on its own (SPEC.md §10.2): the kind is set,
/// `upload_id` is 64 lower-case hex digits (the file's SHA-256), `total_chunks` > 0.
///
/// # Errors
/// [`ServiceError::InvalidArgument`] naming the problem.
pub fn first_chunk(chunk: &v1::UploadChunk) -> Result<v1::UploadKind, ServiceError> {
    let kind = v1::UploadKind::try_from(chunk.kind).unwrap_or(v1::UploadKind::Unspecified);
    if kind == v1::UploadKind::Unspecified {
        return Err(bad("upload kind is not set".to_owned()));
    }
    if chunk.upload_id.len() != 64
        || !chunk
            .upload_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(bad(
            "upload_id must be 64 lower-case hex digits (SHA-256 of the file)".to_owned(),
        ));
    }
    if chunk.total_chunks == 0 {
        return Err(bad("total_chunks is 0".to_owned()));
    }
    Ok(kind)
}

/// Checks one chunk of an upload of `total_chunks` chunks: its index is in range, it holds at
/// most [`MAX_CHUNK_BYTES`] bytes, and its `sha256` (32 bytes) is the SHA-256 of its data.
///
/// # Errors
/// [`ServiceError::InvalidArgument`] naming the problem.
pub fn chunk_data(chunk: &v1::UploadChunk, total_chunks: u32) -> Result<(), ServiceError> {
    if chunk.index >= total_chunks {
        return Err(bad(format!(
            "chunk index {} of {total_chunks} chunks",
            chunk.index
        )));
    }
    if chunk.data.len() > MAX_CHUNK_BYTES {
        return Err(bad(format!(
            "a chunk holds at most {MAX_CHUNK_BYTES} bytes"
        )));
    }
    if Sha256::digest(&chunk.data).as_slice() != chunk.sha256.as_slice() {
        return Err(bad(format!(
            "chunk {}: SHA-256 does not match its data",
            chunk.index
        )));
    }
    Ok(())
}

/// Default fewest clusters in a mapping or release (DAP's minimum batch size is 10).
pub const DEFAULT_MIN_RELEASE_CLUSTERS: u64 = 10;

/// Refuses a job's output (a holder's mapping, the researcher's release) when it has fewer
/// than `min` clusters that no opt-out excluded, so that a tiny project cannot single out
/// people (SPEC.md §10.5). Clusters count every pseudonym, single records included.
///
/// # Errors
/// [`ServiceError::FailedPrecondition`] naming both counts.
pub fn release_size(job: &JobRow, min: u64) -> Result<(), ServiceError> {
    let kept = job.clusters.saturating_sub(job.excluded);
    if kept < min {
        return Err(ServiceError::FailedPrecondition(format!(
            "job {} has {kept} clusters; the linkage unit releases no mapping or release below {min} (min_release_clusters)",
            job.job_id
        )));
    }
    Ok(())
}
