//! What the linkage unit checks before it keeps anything (SPEC.md §10.3, §5.5): names, an
//! upload's announced shape, the first bytes of its chunk 0, and the whole file once all
//! chunks are in. Each check is a function of its own so that the gRPC handlers only call it.
//!
//! Messages name the project, holder, upload and line; never a token, an identifier or
//! content (a refused file's bytes are not echoed).

use std::collections::HashSet;

use curve25519_dalek::ristretto::CompressedRistretto;
use renketsu_keys::names;
use renketsu_linkage::token_file::{self, MODE_OPRF, Reader};
use renketsu_protocol::v1;
use renketsu_rpc::PeerIdentity;
use sha2::{Digest as _, Sha256};

use crate::error::ServiceError;
use crate::store::{JobRow, ProjectRow};
use renketsu_keys::content_file;

fn bad(m: impl Into<String>) -> ServiceError {
    ServiceError::InvalidArgument(m.into())
}

/// A project name in a request: the one rule of [`renketsu_keys::names`], checked before the
/// store is asked (and before the name reaches a log).
///
/// # Errors
/// [`ServiceError::InvalidArgument`] (the message shows at most the name's first characters).
pub fn project_name(project: &str) -> Result<(), ServiceError> {
    names::check_project_name(project).map_err(|e| bad(e.to_string()))
}

/// The announced shape of an upload (its first chunk message): a known kind, `upload_id` 64
/// lower-case hex digits, and `total_chunks` possible for `total_bytes` with chunks of at most
/// `max_chunk_bytes`: at least `ceil(total_bytes / max_chunk_bytes)` (1 for an empty file) and
/// at most one chunk per byte; `total_bytes` at most `max_upload_bytes`.
///
/// # Errors
/// [`ServiceError::InvalidArgument`].
pub fn upload_shape(
    kind: i32,
    upload_id: &str,
    total_chunks: u32,
    total_bytes: u64,
    max_chunk_bytes: usize,
    max_upload_bytes: u64,
) -> Result<(), ServiceError> {
    match v1::UploadKind::try_from(kind) {
        Ok(
            v1::UploadKind::Tokens
            | v1::UploadKind::Content
            | v1::UploadKind::OptOut
            | v1::UploadKind::TokenBatch
            | v1::UploadKind::Deletions,
        ) => {}
        _ => return Err(bad("upload kind is not set")),
    }
    if upload_id.len() != 64
        || !upload_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(bad(
            "upload_id must be 64 lower-case hex digits (SHA-256 of the file)",
        ));
    }
    if total_bytes > max_upload_bytes {
        return Err(bad(format!(
            "an upload of {total_bytes} bytes; this linkage unit takes at most {max_upload_bytes}"
        )));
    }
    let fewest = total_bytes.div_ceil(max_chunk_bytes as u64).max(1);
    let most = total_bytes.max(1);
    if u64::from(total_chunks) < fewest || u64::from(total_chunks) > most {
        return Err(bad(format!(
            "total_chunks {total_chunks} is impossible for {total_bytes} bytes (between {fewest} and {most} chunks of at most {max_chunk_bytes} bytes)"
        )));
    }
    Ok(())
}

/// Chunk 0 of an upload must start like a file of its kind (a token file's or a content
/// file's header) before anything of it is stored: a raw CSV sent by mistake is refused
/// without being kept.
///
/// # Errors
/// [`ServiceError::InvalidArgument`] naming the expected format.
pub fn first_chunk(kind: i32, data: &[u8]) -> Result<(), ServiceError> {
    let (magic, what) = match v1::UploadKind::try_from(kind) {
        Ok(v1::UploadKind::Content) => (content_file::MAGIC, "a renketsu sealed content file"),
        _ => (token_file::MAGIC, "a renketsu token file"),
    };
    if data.starts_with(magic) {
        Ok(())
    } else {
        Err(bad(format!(
            "chunk 0 does not start like {what}; nothing of this upload was stored (was a raw CSV sent by mistake?)"
        )))
    }
}

/// Checks a complete token (or opt-out) file of `who` for project `p` and returns its record
/// count: header of this project, holder and schema; every line per SPEC.md §5.5; no record
/// id twice; in OPRF mode every token a canonical ristretto255 element.
///
/// # Errors
/// [`ServiceError::InvalidArgument`] with the line number.
pub fn token_file(
    p: &ProjectRow,
    who: &PeerIdentity,
    bytes: impl std::io::BufRead,
) -> Result<u64, ServiceError> {
    let mut r = Reader::new(bytes, "the uploaded token file").map_err(|e| bad(e.to_string()))?;
    let h = r.header();
    if h.project != p.name || h.party != who.party {
        return Err(bad(format!(
            "the token file is of project {} by {}; upload your own tokens of {:?}",
            names::audit_field(&format!("{:?}", h.project)),
            names::audit_field(&format!("{:?}", h.party)),
            p.name
        )));
    }
    if h.schema.digest != p.schema_digest {
        return Err(bad(format!(
            "the token file was made with schema SHA-256 {}; the project's schema is {}",
            names::audit_field(&h.schema.digest),
            p.schema_digest
        )));
    }
    let oprf = h.mode == MODE_OPRF;
    // Ids are remembered as 128-bit digests (a collision is out of reach), not as text.
    let mut seen: HashSet<[u8; 16]> = HashSet::new();
    // The header is line 1; record k (0-based) is on line k + 2.
    let mut record = 0u64;
    let mut batches = Vec::new();
    while r
        .next_batches(&mut batches)
        .map_err(|e| bad(e.to_string()))?
    {
        for b in &batches {
            for i in 0..b.len() {
                let line = record + 2;
                let digest: [u8; 32] = Sha256::digest(b.id(i).as_bytes()).into();
                let mut key = [0u8; 16];
                key.copy_from_slice(&digest[..16]);
                if !seen.insert(key) {
                    return Err(bad(format!(
                        "the uploaded token file line {line}: record id {} appears earlier in the file; a token file has one record per id",
                        names::audit_field(&format!("{:?}", b.id(i)))
                    )));
                }
                if oprf
                    && let Some((r, _)) = b
                        .tokens(i)
                        .iter()
                        .find(|(_, t)| CompressedRistretto(*t).decompress().is_none())
                {
                    return Err(bad(format!(
                        "the uploaded token file line {line}: the token of recipe {r} is not a canonical ristretto255 element"
                    )));
                }
                record += 1;
            }
        }
    }
    Ok(r.counts().map_or(0, |c| c.records))
}

/// Checks a complete sealed content file of `who` for project `p` and returns its record
/// count (header of this project and holder, sealed to the project's researcher key).
///
/// # Errors
/// [`ServiceError::InvalidArgument`] with the line number.
pub fn content_file(
    p: &ProjectRow,
    who: &PeerIdentity,
    bytes: impl std::io::BufRead,
) -> Result<u64, ServiceError> {
    let (h, records) = content_file::parse(bytes).map_err(|e| bad(e.to_string()))?;
    if h.project != p.name || h.party != who.party {
        return Err(bad(format!(
            "the content file is of project {} by {}",
            names::audit_field(&format!("{:?}", h.project)),
            names::audit_field(&format!("{:?}", h.party)),
        )));
    }
    if h.researcher_public_key != hex::encode(&p.researcher_public_key) {
        return Err(bad(
            "the content is sealed to another researcher key than the project's",
        ));
    }
    Ok(records.len() as u64)
}

/// Checks a complete upload of `kind` (see [`token_file`], [`content_file`]).
///
/// # Errors
/// [`ServiceError::InvalidArgument`].
pub fn upload_file(
    p: &ProjectRow,
    who: &PeerIdentity,
    kind: i32,
    bytes: impl std::io::BufRead,
) -> Result<u64, ServiceError> {
    match v1::UploadKind::try_from(kind) {
        Ok(
            v1::UploadKind::Tokens
            | v1::UploadKind::OptOut
            | v1::UploadKind::TokenBatch
            | v1::UploadKind::Deletions,
        ) => token_file(p, who, bytes),
        Ok(v1::UploadKind::Content) => content_file(p, who, bytes),
        _ => Err(bad("upload kind is not set")),
    }
}

/// Checks a `CreateLinkageProject` request (SPEC.md §10.1): a valid project name, at least two
/// holders, distinct valid party names, duplicates among the holders, a 32-byte X25519
/// researcher key, and a UTF-8 schema that parses. Returns the schema.
///
/// # Errors
/// [`ServiceError::InvalidArgument`] naming the first problem.
pub fn create_request(
    req: &v1::CreateLinkageProjectRequest,
) -> Result<renketsu_linkage::Schema, ServiceError> {
    project_name(&req.project)?;
    if req.holders.len() < 2 {
        return Err(bad("a linkage project needs at least two holders"));
    }
    let mut seen = HashSet::new();
    for h in req.holders.iter().chain(std::iter::once(&req.researcher)) {
        names::check_name("party", h).map_err(|e| bad(e.to_string()))?;
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
        return Err(bad("researcher_public_key must be 32 bytes (X25519)"));
    }
    let text =
        std::str::from_utf8(&req.schema_toml).map_err(|_| bad("schema_toml is not UTF-8"))?;
    let schema =
        renketsu_linkage::Schema::from_toml(text).map_err(|e| bad(format!("schema: {e}")))?;
    Ok(schema)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_chunks_must_fit_total_bytes() {
        let id = "a".repeat(64);
        let k = v1::UploadKind::Tokens as i32;
        let mb = 4 << 20;
        assert!(upload_shape(k, &id, 1, 1000, mb, u64::MAX).is_ok());
        assert!(upload_shape(k, &id, 1000, 1000, mb, u64::MAX).is_ok());
        assert!(upload_shape(k, &id, u32::MAX, 1000, mb, u64::MAX).is_err());
        assert!(upload_shape(k, &id, 1, (mb as u64) * 3, mb, u64::MAX).is_err());
        assert!(upload_shape(k, &id, 3, (mb as u64) * 3, mb, u64::MAX).is_ok());
        assert!(upload_shape(k, &id, 0, 0, mb, u64::MAX).is_err());
        assert!(upload_shape(k, &id, 1, 0, mb, u64::MAX).is_ok());
        assert!(upload_shape(k, &id, 1, 2000, mb, 1999).is_err());
        assert!(upload_shape(k, "A".repeat(64).as_str(), 1, 1, mb, u64::MAX).is_err());
        assert!(upload_shape(0, &id, 1, 1, mb, u64::MAX).is_err());
        // Token and deletion batches are uploads like the others; unknown kinds are not.
        let batch = v1::UploadKind::TokenBatch as i32;
        let deletions = v1::UploadKind::Deletions as i32;
        assert!(upload_shape(batch, &id, 1, 10, mb, u64::MAX).is_ok());
        assert!(upload_shape(deletions, &id, 1, 10, mb, u64::MAX).is_ok());
        assert!(upload_shape(deletions + 1, &id, 1, 10, mb, u64::MAX).is_err());
        assert!(first_chunk(batch, b"id,name\n").is_err());
        assert!(first_chunk(deletions, token_file::MAGIC).is_ok());
    }

    #[test]
    fn chunk_zero_must_start_like_its_kind() {
        let csv = b"id,kanji_name,dob\n1,\xe5\xb1\xb1\xe7\x94\xb0,1980-01-01\n";
        let tokens = v1::UploadKind::Tokens as i32;
        let content = v1::UploadKind::Content as i32;
        let err = first_chunk(tokens, csv).unwrap_err().to_string();
        assert!(!err.contains("1980"), "{err}");
        assert!(first_chunk(tokens, br#"{"format":"renketsu-tokens","version":1}"#).is_ok());
        assert!(first_chunk(content, br#"{"format":"renketsu-tokens"}"#).is_err());
        assert!(first_chunk(content, br#"{"format":"renketsu-content","version":1}"#).is_ok());
    }
}
