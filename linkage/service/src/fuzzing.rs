//! Fuzzing harnesses for what the linkage unit parses from other parties (the `fuzz/` targets
//! are one line each). Errors are expected; a panic is the finding.

use prost::Message as _;
use renketsu_protocol::v1;
use renketsu_rpc::{PeerIdentity, Role};

use crate::store::ProjectRow;
use crate::validate;

/// Parses `data` as a content file (`renketsu-content`) and checks that a parse reports one
/// sealed record per distinct id.
pub fn content_file(data: &[u8]) {
    if let Ok((_, records)) = renketsu_keys::content_file::parse(data) {
        let ids: std::collections::HashSet<&str> =
            records.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids.len(), records.len(), "content ids must be distinct");
    }
}

/// Decodes `data` as a `CreateLinkageProjectRequest` and runs the linkage unit's checks.
pub fn create_project(data: &[u8]) {
    if let Ok(req) = v1::CreateLinkageProjectRequest::decode(data) {
        let _ = validate::create_request(&req);
    }
}

/// A project that [`upload_chunk`] checks uploads against (the schema is not parsed there).
fn project() -> ProjectRow {
    ProjectRow {
        name: "p".to_owned(),
        holders: vec!["holder-a".to_owned(), "holder-b".to_owned()],
        researcher: "researcher".to_owned(),
        researcher_public_key: vec![7; 32],
        schema_toml: Vec::new(),
        schema_digest: "0".repeat(64),
        duplicates: Vec::new(),
        pid_salt: vec![0; 32],
        stale: false,
        created_unix_ms: 0,
    }
}

/// Decodes `data` as an `UploadChunk`, runs the linkage unit's checks of the announced shape
/// and of chunk 0's first bytes, and checks the chunk's data as a whole upload of its kind
/// (token file, opt-out token file or content file), as when the last chunk arrives.
pub fn upload_chunk(data: &[u8]) {
    let Ok(chunk) = v1::UploadChunk::decode(data) else {
        return;
    };
    let _ = validate::upload_shape(
        chunk.kind,
        &chunk.upload_id,
        chunk.total_chunks,
        chunk.total_bytes,
        crate::service::MAX_CHUNK_BYTES,
        crate::service::DEFAULT_UPLOAD_CAP_BYTES,
    );
    let _ = validate::first_chunk(chunk.kind, &chunk.data);
    let who = PeerIdentity {
        party: "holder-a".to_owned(),
        role: Role::DataHolder,
    };
    let _ = validate::upload_file(&project(), &who, chunk.kind, chunk.data.as_slice());
}
