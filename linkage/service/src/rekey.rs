//! Re-keying stored tokens to a new epoch (SPEC.md §10.7, custodian §4.5): for OPRF tokens
//! `k_from·H(x)`, the custodian's delta `Δ = k_to·k_from⁻¹` (GetRekeyDelta, linkage-unit role
//! only) gives `Δ·k_from·H(x) = k_to·H(x)`, the token a holder makes under the new epoch. The
//! linkage unit multiplies every stored token of the recipe by Δ — it learns nothing about
//! `x` and never holds `k_from` or `k_to` — and rewrites each upload (header epoch and public
//! key `Δ·pk_from = pk_to` updated) as a new upload that supersedes the old one.

use std::collections::HashMap;
use std::io::Cursor;

use curve25519_dalek::Scalar;
use curve25519_dalek::ristretto::CompressedRistretto;
use renketsu_client::custodian::{ClientError, CustodianClient};
use renketsu_linkage::token_file::{Reader, Record, encode_header, encode_record, encode_trailer};
use renketsu_protocol::v1;
use renketsu_rpc::ServiceError;
use sha2::{Digest as _, Sha256};

use crate::store::{LuStore, ProjectRow, UploadRow};

/// What re-keying needs of the service: its store, its custodian connection (if configured),
/// the time (milliseconds since the epoch) and the largest chunk it stores.
pub(crate) struct RekeyContext<'a> {
    /// The linkage unit's store.
    pub(crate) store: &'a LuStore,
    /// The custodian connection (`serve --custodian`).
    pub(crate) custodian: Option<&'a renketsu_rpc::tls::ConnectConfig>,
    /// Now, in milliseconds since the Unix epoch.
    pub(crate) now_ms: i64,
    /// Largest chunk stored, bytes.
    pub(crate) max_chunk: usize,
}

fn point(bytes: &[u8; 32], what: &str) -> Result<curve25519_dalek::RistrettoPoint, ServiceError> {
    CompressedRistretto(*bytes).decompress().ok_or_else(|| {
        ServiceError::FailedPrecondition(format!(
            "{what} is not a ristretto255 element (not an OPRF token file?)"
        ))
    })
}

/// Re-keys every current token and opt-out upload of `p` for custodian recipe `recipe`
/// (`<name>/v<version>`) to `to_epoch`.
pub(crate) async fn rekey_project(
    cx: &RekeyContext<'_>,
    p: &ProjectRow,
    recipe: &str,
    to_epoch: u64,
) -> Result<v1::RekeyTokensResponse, ServiceError> {
    if to_epoch == 0 {
        return Err(ServiceError::InvalidArgument(
            "to_epoch is 0; epochs start at 1".to_owned(),
        ));
    }
    let config = cx.custodian.cloned().ok_or_else(|| {
        ServiceError::FailedPrecondition(
            "this linkage unit has no custodian connection configured (serve --custodian)"
                .to_owned(),
        )
    })?;
    let client = CustodianClient::connect(&config)
        .map_err(|e| ServiceError::FailedPrecondition(format!("custodian: {e}")))?;
    let store = cx.store;
    let mut deltas: HashMap<u64, Scalar> = HashMap::new();
    let mut response = v1::RekeyTokensResponse {
        uploads: 0,
        tokens: 0,
    };
    let current = store.current_uploads(&p.name).await?;
    // Batches are applied to the token upload they were made on top of; re-keying the one and
    // not the others would unlink them.
    if let Some(b) = current
        .iter()
        .find(|u| crate::store::upload_kind::is_batch(u.kind))
    {
        return Err(ServiceError::FailedPrecondition(format!(
            "{} has token or deletion batches on top of its token upload; re-keying them is not built: the holders upload full token files first (SPEC.md §10.3.2)",
            b.party
        )));
    }
    for u in current {
        if u.kind != v1::UploadKind::Tokens as i32 && u.kind != v1::UploadKind::OptOut as i32 {
            continue;
        }
        let bytes = store.upload_bytes(&p.name, &u.party, &u.upload_id).await?;
        // Errors name the holder, the upload and the line.
        let name = format!(
            "{}'s {} upload {}",
            u.party,
            if u.kind == v1::UploadKind::OptOut as i32 {
                "opt-out"
            } else {
                "token"
            },
            &u.upload_id[..12]
        );
        let mut reader = Reader::new(Cursor::new(bytes.as_slice()), &name)
            .map_err(|e| ServiceError::FailedPrecondition(e.to_string()))?;
        let mut header = reader.header().clone();
        let Some(index) = header
            .recipes
            .iter()
            .position(|r| format!("{}/v{}", r.name, r.version) == recipe)
        else {
            return Err(ServiceError::InvalidArgument(format!(
                "the project's token files have no recipe {recipe:?}"
            )));
        };
        let from = header.recipes[index].epoch.ok_or_else(|| {
            ServiceError::FailedPrecondition(
                "HMAC token files cannot be re-keyed (embedded mode)".to_owned(),
            )
        })?;
        if from == to_epoch {
            continue;
        }
        let delta = match deltas.get(&from) {
            Some(d) => *d,
            None => {
                let bytes = client
                    .rekey_delta(&p.name, recipe, from, to_epoch)
                    .await
                    .map_err(|e| match e {
                        ClientError::Status {
                            code: tonic::Code::Unavailable | tonic::Code::DeadlineExceeded,
                            message,
                            ..
                        } => ServiceError::Unavailable(format!("custodian: {message}")),
                        ClientError::Status { message, .. } => ServiceError::FailedPrecondition(
                            format!("custodian refused the delta: {message}"),
                        ),
                        other => ServiceError::FailedPrecondition(format!("custodian: {other}")),
                    })?;
                let d = Option::<Scalar>::from(Scalar::from_canonical_bytes(*bytes)).ok_or_else(
                    || {
                        ServiceError::FailedPrecondition(
                            "the custodian's delta is not a canonical scalar".to_owned(),
                        )
                    },
                )?;
                deltas.insert(from, d);
                d
            }
        };
        let old_pk = header.recipes[index].public_key.clone().unwrap_or_default();
        let pk: [u8; 32] = hex::decode(&old_pk)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                ServiceError::FailedPrecondition(
                    "a token file without its recipe's public key".to_owned(),
                )
            })?;
        header.recipes[index].epoch = Some(to_epoch);
        header.recipes[index].public_key = Some(hex::encode(
            (delta * point(&pk, &format!("{name}: the public key"))?)
                .compress()
                .as_bytes(),
        ));
        let mut out = Vec::with_capacity(bytes.len());
        encode_header(&mut out, &header);
        let mut rec = Record::default();
        // The header is line 1; record k (0-based) is on line k + 2.
        let mut line = 1u64;
        while reader
            .next(&mut rec)
            .map_err(|e| ServiceError::FailedPrecondition(e.to_string()))?
        {
            line += 1;
            for (r, t) in &mut rec.tokens {
                if *r == index {
                    *t = *(delta * point(t, &format!("{name} line {line}: the token"))?)
                        .compress()
                        .as_bytes();
                    response.tokens += 1;
                }
            }
            encode_record(
                &mut out,
                &rec.id,
                rec.tokens.iter().map(|(r, t)| (*r, t)),
                rec.clk.as_deref(),
            );
        }
        let counts = reader.counts().cloned().unwrap_or_default();
        encode_trailer(&mut out, &counts);
        store_rewritten(cx, &u, out, counts.records).await?;
        response.uploads += 1;
    }
    Ok(response)
}

async fn store_rewritten(
    cx: &RekeyContext<'_>,
    old: &UploadRow,
    bytes: Vec<u8>,
    records: u64,
) -> Result<(), ServiceError> {
    let store = cx.store;
    let chunks: Vec<&[u8]> = bytes.chunks(cx.max_chunk).collect();
    let new = UploadRow {
        upload_id: hex::encode(Sha256::digest(&bytes)),
        total_chunks: chunks.len() as u32,
        total_bytes: bytes.len() as u64,
        complete: false,
        superseded: false,
        records: 0,
        batch_seq: 0,
        ..old.clone()
    };
    store.begin_upload(&new, cx.now_ms).await?;
    for (i, c) in chunks.iter().enumerate() {
        store
            .put_chunk(
                &new.project,
                &new.party,
                &new.upload_id,
                i as u32,
                &Sha256::digest(c),
                c,
            )
            .await?;
    }
    let opt_out = old.kind == v1::UploadKind::OptOut as i32;
    store.complete_upload(&new, records, opt_out).await?;
    if opt_out {
        store
            .supersede_upload(&old.project, &old.party, &old.upload_id)
            .await?;
    }
    Ok(())
}
