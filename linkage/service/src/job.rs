//! The matching job (SPEC.md §10.3): holders' token files and opt-out token files in, one
//! pseudonym per record out. Pure computation over bytes (no database, no async): the service
//! loads the uploads, calls [`run`] on a blocking thread and stores the result in one
//! transaction.
//!
//! Linking is `renketsu_linkage::tokenlink`, the code path of `renketsu link` on token files,
//! so a job gives the clusters of `renketsu link` on the same files. Opt-out records are read
//! into the same join after the holders' records: every cluster that contains one is
//! **excluded** (never mapped, never released).
//!
//! Pseudonyms: a cluster's pseudonym is the first 16 bytes (32 hex digits) of
//! `SHA-256("renketsu/pseudonym/v1" || salt || LP(party) || LP(record id))` of its first
//! holder record (holders in project order, records in upload order), with the project's
//! random 32-byte salt. So pseudonyms are stable across jobs while that record stays first in
//! its cluster, and unlinkable across projects (different salts).

use std::io::Cursor;
use std::sync::atomic::{AtomicBool, Ordering};

use renketsu_linkage::Schema;
use renketsu_linkage::cluster::TokenJoin;
use renketsu_linkage::token_file::Reader;
use renketsu_linkage::tokenlink::{
    TokenLinkError, TokenParty, check_headers, cluster_token_parties, read_token_party,
};
use sha2::{Digest as _, Sha256};

use crate::store::MemberRow;

/// Domain of pseudonym derivation.
pub const PSEUDONYM_DOMAIN: &[u8] = b"renketsu/pseudonym/v1";

/// Why a job failed. Messages name uploads and rules, never tokens or identifiers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// An upload is malformed, or uploads cannot be linked together.
    #[error(transparent)]
    Link(#[from] TokenLinkError),
    /// An upload's header names another project or holder than the one that uploaded it.
    #[error("{0}")]
    WrongUpload(String),
    /// Cancelled by an administrator.
    #[error("cancelled")]
    Cancelled,
}

/// One token upload: the holder (from its certificate) and the file's bytes.
pub struct TokenUpload {
    /// The holder that uploaded it.
    pub party: String,
    /// The upload id (for messages).
    pub upload_id: String,
    /// The token file (SPEC.md §5.5).
    pub bytes: Vec<u8>,
}

/// Everything a job reads.
pub struct JobInput<'a> {
    /// Project.
    pub project: &'a str,
    /// The project's schema.
    pub schema: &'a Schema,
    /// Hex SHA-256 of the schema file.
    pub schema_digest: &'a str,
    /// The project's pseudonym salt.
    pub pid_salt: &'a [u8],
    /// One token upload per holder, in project order.
    pub holders: Vec<TokenUpload>,
    /// Opt-out uploads, any number.
    pub opt_outs: Vec<TokenUpload>,
}

/// What a job found.
#[derive(Debug, Default)]
pub struct JobOutput {
    /// One row per holder record.
    pub members: Vec<MemberRow>,
    /// Holder records.
    pub records: u64,
    /// Clusters of holder records.
    pub clusters: u64,
    /// Clusters excluded by opt-outs.
    pub excluded: u64,
    /// Cross-holder record pairs within non-excluded clusters.
    pub links: u64,
}

/// The pseudonym of a cluster whose first holder record is `(party, record_id)`.
pub fn pseudonym(salt: &[u8], party: &str, record_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(PSEUDONYM_DOMAIN);
    h.update(salt);
    for part in [party, record_id] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

/// Runs a job. `progress(stage, fraction)` is called between stages; `cancel` is checked
/// between stages and holders.
///
/// # Errors
/// [`JobError`] as documented on each variant.
pub fn run(
    mut input: JobInput<'_>,
    progress: &dyn Fn(&str, f64),
    cancel: &AtomicBool,
) -> Result<JobOutput, JobError> {
    let check = || {
        if cancel.load(Ordering::Relaxed) {
            Err(JobError::Cancelled)
        } else {
            Ok(())
        }
    };
    let n_holders = input.holders.len();
    let mut all: Vec<TokenUpload> = std::mem::take(&mut input.holders);
    all.append(&mut input.opt_outs);
    let mut names = Vec::with_capacity(all.len());
    let mut headers = Vec::with_capacity(all.len());
    for u in &all {
        let name = format!("upload {} of {}", short(&u.upload_id), u.party);
        let r =
            Reader::new(Cursor::new(u.bytes.as_slice()), &name).map_err(TokenLinkError::from)?;
        let h = r.header();
        if h.project != input.project || h.party != u.party {
            return Err(JobError::WrongUpload(format!(
                "{name} holds tokens of project {:?} made by {:?}: a holder uploads its own tokens of this project",
                h.project, h.party
            )));
        }
        headers.push(h.clone());
        names.push(name);
    }
    {
        let named: Vec<(&str, &renketsu_linkage::token_file::Header)> =
            names.iter().map(String::as_str).zip(&headers).collect();
        check_headers(input.schema_digest, &named, Some(input.project))?;
    }
    let total = all.len() as f64 + 2.0;
    let mut join = TokenJoin::new(0);
    let mut blocks = Vec::new();
    let mut parties: Vec<TokenParty> = Vec::with_capacity(all.len());
    for (i, u) in all.iter_mut().enumerate() {
        check()?;
        progress(&format!("reading {}", u.party), i as f64 / total);
        // Each upload's bytes are freed as soon as it is read into the join.
        let bytes = std::mem::take(&mut u.bytes);
        let mut reader =
            Reader::new(Cursor::new(bytes.as_slice()), &names[i]).map_err(TokenLinkError::from)?;
        parties.push(read_token_party(
            input.schema,
            &mut reader,
            &names[i],
            &mut join,
            &mut blocks,
        )?);
    }
    check()?;
    progress("clustering", (total - 2.0) / total);
    let clusters = cluster_token_parties(input.schema, &parties, blocks, join);
    check()?;
    progress("assigning pseudonyms", (total - 1.0) / total);

    let holder_records: usize = parties[..n_holders].iter().map(|p| p.ids.len()).sum();
    let k = clusters.clusters;
    let mut excluded = vec![false; k];
    for &l in &clusters.labels[holder_records..] {
        excluded[l as usize] = true;
    }
    // First holder record of each cluster, and members per holder per cluster.
    let mut first: Vec<Option<(usize, usize)>> = vec![None; k];
    let mut per_holder = vec![vec![0u64; n_holders]; k];
    let mut g = 0usize;
    for (h, p) in parties[..n_holders].iter().enumerate() {
        for i in 0..p.ids.len() {
            let l = clusters.labels[g] as usize;
            first[l].get_or_insert((h, i));
            per_holder[l][h] += 1;
            g += 1;
        }
    }
    let pids: Vec<Option<String>> = first
        .iter()
        .map(|f| f.map(|(h, i)| pseudonym(input.pid_salt, &all[h].party, &parties[h].ids[i])))
        .collect();
    let mut out = JobOutput {
        records: holder_records as u64,
        ..JobOutput::default()
    };
    for (l, counts) in per_holder.iter().enumerate() {
        if first[l].is_none() {
            continue;
        }
        out.clusters += 1;
        if excluded[l] {
            out.excluded += 1;
            continue;
        }
        for a in 0..n_holders {
            for b in a + 1..n_holders {
                out.links += counts[a] * counts[b];
            }
        }
    }
    out.members.reserve(holder_records);
    let mut g = 0usize;
    for (h, p) in parties[..n_holders].iter_mut().enumerate() {
        for (position, id) in p.ids.drain(..).enumerate() {
            let l = clusters.labels[g] as usize;
            out.members.push(MemberRow {
                party: all[h].party.clone(),
                position: position as u64,
                record_id: id,
                pseudonym: pids[l]
                    .clone()
                    .expect("a holder record's cluster has a pseudonym"),
                excluded: excluded[l],
            });
            g += 1;
        }
    }
    Ok(out)
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}
