//! The matching job (SPEC.md §10.3): holders' token files and opt-out token files in, one
//! pseudonym per record out. Pure computation over readers (no database, no async): the
//! service streams the uploads' chunks from the store into [`run`] on a blocking thread and
//! stores the result ([`crate::members`] chunks) in one transaction. Memory is about 36 bytes
//! per direct token (the join) plus a few dozen bytes per record; the token files are never
//! held whole.
//!
//! Linking is the core engine's ([`renketsu_linkage::engine::LinkPlan::run`]), the entry
//! point of `renketsu link`, with token-file inputs and no key, so a job gives the clusters of
//! `renketsu link` on the same files. Opt-out records are read
//! into the same join after the holders' records: every cluster that contains one is
//! **excluded** (never mapped, never released).
//!
//! Pseudonyms persist (SPEC.md §10.5.1): the clusters are matched to the previous DONE job's
//! by the records they share ([`renketsu_linkage::persist::assign`]); a cluster keeps, inherits
//! or gets a fresh random pseudonym, and every change is a crosswalk event. The assignment is
//! part of the job's output and is stored in the transaction that marks the job DONE, so a
//! job that crashes changes no pseudonym.

use std::io::BufRead;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rayon::prelude::*;
use renketsu_linkage::Schema;
use renketsu_linkage::engine::{EngineError, HolderInput, Keys, LinkOptions, LinkPlan, Observer};
use renketsu_linkage::persist::{self, Assignment, Previous};
use renketsu_linkage::token_file::{Header, Reader};
use renketsu_linkage::tokenlink::{TokenLinkError, check_headers, party_of, party_offsets};
use sha2::{Digest as _, Sha256};

use crate::members::{MemberChunk, MemberChunker, PSEUDONYM_BYTES};

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
    /// The engine refused the run (e.g. the schema cannot link token files).
    #[error(transparent)]
    Engine(EngineError),
    /// Cancelled by an administrator.
    #[error("cancelled")]
    Cancelled,
}

impl From<EngineError> for JobError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Tokens(e) => Self::Link(e),
            EngineError::Cancelled => Self::Cancelled,
            e => Self::Engine(e),
        }
    }
}

/// The engine's observer for a job: stages to the job's progress, the wall time of each
/// stage, and the cancel flag.
struct JobObserver<'a> {
    progress: &'a dyn Fn(&str, f64),
    cancel: &'a AtomicBool,
    stage: Option<(String, Instant)>,
    stage_seconds: Vec<(String, f64)>,
}

impl JobObserver<'_> {
    fn lap(&mut self, next: Option<&str>) {
        if let Some((name, t)) = self.stage.take() {
            self.stage_seconds.push((name, t.elapsed().as_secs_f64()));
        }
        self.stage = next.map(|n| (n.to_owned(), Instant::now()));
    }
}

impl Observer for JobObserver<'_> {
    fn log(&mut self, line: &str) {
        tracing::debug!("job: {line}");
    }

    fn stage(&mut self, stage: &str, fraction: f64) {
        (self.progress)(stage, fraction);
        self.lap(Some(stage));
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// One token upload: the holder (from its certificate) and the file, streamed.
pub struct TokenUpload {
    /// The holder that uploaded it.
    pub party: String,
    /// The upload id (for messages).
    pub upload_id: String,
    /// Records in the file as counted when the upload completed (sizes the join; 0: unknown).
    pub records: u64,
    /// The token file (SPEC.md §5.5), e.g. the stored chunks in order.
    pub input: Box<dyn BufRead + Send>,
}

/// Everything a job reads.
pub struct JobInput<'a> {
    /// Project.
    pub project: &'a str,
    /// The project's schema.
    pub schema: &'a Schema,
    /// Hex SHA-256 of the schema file.
    pub schema_digest: &'a str,
    /// The previous DONE job's records (as [`record_key`]s) with their pseudonyms, and every
    /// pseudonym issued in the project.
    pub previous: &'a Previous<RecordKey>,
    /// One token upload per holder, in project order.
    pub holders: Vec<TokenUpload>,
    /// Opt-out uploads, any number.
    pub opt_outs: Vec<TokenUpload>,
}

/// What a job found.
#[derive(Debug, Default)]
pub struct JobOutput {
    /// Every holder record's pseudonym and exclusion, per holder in project order.
    pub chunks: Vec<MemberChunk>,
    /// Holder records.
    pub records: u64,
    /// Clusters of holder records.
    pub clusters: u64,
    /// Clusters excluded by opt-outs.
    pub excluded: u64,
    /// Cross-holder record pairs within non-excluded clusters.
    pub links: u64,
    /// Wall time of each stage, in seconds, in order (for the log).
    pub stage_seconds: Vec<(String, f64)>,
    /// Scored schemas (SPEC.md §9): the quality report, for the admin.
    pub quality: Option<QualityReport>,
    /// Each cluster's pseudonym, the fresh ones and the crosswalk events.
    pub assignment: Assignment,
    /// How the clusters were made, for the job's record: `full`, `incremental (…)`, or
    /// `full (incremental not possible: reason)` (SPEC.md §10.3.3).
    pub mode: String,
}

/// A scored job's quality report (SPEC.md §9.6, §9.7): `summary.json` and `report.html` as
/// `renketsu link` writes them. Neither holds an identifier, a token or a record id: per-holder
/// counts, m/u per comparison level, the weight histogram, the estimated precision and recall
/// (overall and per pair of holders), cluster sizes.
#[derive(Clone, Debug, PartialEq)]
pub struct QualityReport {
    /// `summary.json` (UTF-8 JSON).
    pub summary_json: String,
    /// `report.html` (standalone HTML).
    pub report_html: String,
    /// Estimated precision of the output.
    pub precision: f64,
    /// Estimated recall; `None` when not identifiable (a hash-only holder).
    pub recall: Option<f64>,
    /// Per cluster of records of two or more holders (opt-outs not counted): its pseudonym
    /// and the smallest match probability of its cross-holder record pairs, as rows of 16
    /// bytes and an `f32` little-endian (SPEC.md §10.5).
    pub weakest_links: Vec<u8>,
}

/// An output sink that keeps nothing: the job's pairs and clusters (with record ids) are not
/// written anywhere; only the summary the engine returns is kept.
struct Discard;

struct DiscardFile;

impl std::io::Write for DiscardFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl renketsu_linkage::engine::OutputFile for DiscardFile {
    fn commit(self: Box<Self>) -> std::io::Result<()> {
        Ok(())
    }
}

impl renketsu_linkage::engine::OutputSink for Discard {
    fn create(
        &mut self,
        _name: &str,
    ) -> std::io::Result<Box<dyn renketsu_linkage::engine::OutputFile>> {
        Ok(Box::new(DiscardFile))
    }

    fn remove(&mut self, _name: &str) -> std::io::Result<()> {
        Ok(())
    }
}

/// A record as persistent pseudonyms know it (SPEC.md §10.5.1): the first 16 bytes of
/// `SHA-256("renketsu/record-key/v1" || holder index (4 bytes, big-endian) || record id)`,
/// holders in project order. 16 bytes per record whatever the id's length; two records
/// share a key with probability about n²/2^129.
pub type RecordKey = [u8; 16];

/// The [`RecordKey`] of record `record_id` of holder `holder` (index in project order).
pub fn record_key(holder: u32, record_id: &str) -> RecordKey {
    let mut h = Sha256::new();
    h.update(b"renketsu/record-key/v1");
    h.update(holder.to_be_bytes());
    h.update(record_id.as_bytes());
    h.finalize()[..16].try_into().expect("16 bytes")
}

/// A fresh random pseudonym.
pub fn random_pseudonym() -> [u8; PSEUDONYM_BYTES] {
    rand::random()
}

/// Runs a job. `progress(stage, fraction)` is called between stages; `cancel` is checked
/// between stages and uploads.
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
    let started = Instant::now();
    let n_holders = input.holders.len();
    let mut all: Vec<TokenUpload> = std::mem::take(&mut input.holders);
    all.append(&mut input.opt_outs);
    // Every upload's header first (each reader holds one buffered chunk meanwhile).
    let mut readers = Vec::with_capacity(all.len());
    let mut names = Vec::with_capacity(all.len());
    let mut headers: Vec<Header> = Vec::with_capacity(all.len());
    for u in &mut all {
        let name = format!("upload {} of {}", short(&u.upload_id), u.party);
        let file: Box<dyn BufRead + Send> = std::mem::replace(&mut u.input, Box::new(&[][..]));
        let r = Reader::new(file, &name).map_err(TokenLinkError::from)?;
        let h = r.header();
        if h.project != input.project || h.party != u.party {
            return Err(JobError::WrongUpload(format!(
                "{name} holds tokens of project {:?} made by {:?}: a holder uploads its own tokens of this project",
                h.project, h.party
            )));
        }
        headers.push(h.clone());
        names.push(name);
        readers.push(r);
    }
    {
        let named: Vec<(&str, &Header)> = names.iter().map(String::as_str).zip(&headers).collect();
        check_headers(input.schema_digest, &named, Some(input.project))?;
    }
    let total = all.len() as f64 + 2.0;
    let mut stage_seconds = vec![("headers".to_owned(), started.elapsed().as_secs_f64())];
    // Opt-out uploads are holders of the run too (their records join the clusters they
    // match); named apart from the holders' own uploads.
    let inputs: Vec<HolderInput<'_>> = readers
        .into_iter()
        .enumerate()
        .map(|(i, reader)| {
            let name = if i < n_holders {
                all[i].party.clone()
            } else {
                format!("{}#opt-out-{}", all[i].party, i - n_holders)
            };
            let mut h = HolderInput::tokens(&name, reader, &names[i]);
            h.expected_records = all[i].records;
            h
        })
        .collect();
    // The run's "today" (summary.json): the latest date at which a holder checked its
    // records (token-file headers, SPEC.md §5.5); the linkage unit checks no date itself.
    let today = headers
        .iter()
        .filter_map(|h| {
            let d: String = h.today.chars().filter(char::is_ascii_digit).collect();
            d.parse::<u32>().ok().filter(|_| d.len() == 8)
        })
        .max()
        .unwrap_or(0);
    let mut options = LinkOptions::new(input.project, today);
    options.schema_path = input.schema_digest.to_owned();
    let plan = LinkPlan::new(input.schema, Keys::TokenFiles, options)?;
    let mut observer = JobObserver {
        progress,
        cancel,
        stage: None,
        stage_seconds: Vec::new(),
    };
    let mut linked = plan.run(inputs, &mut observer)?;
    observer.lap(None);
    // A scored run's estimates come from the output pairs (SPEC.md §9.4): the engine's writer
    // counts them; its files are discarded.
    let mut quality = if linked.scoring().is_some() {
        let blank = vec![String::new(); linked.clusters()];
        let summary = linked.write(&blank, &mut Discard)?;
        let scoring = summary.scoring.as_ref().expect("a scored run");
        Some(QualityReport {
            summary_json: format!(
                "{}\n",
                serde_json::to_string_pretty(&summary.to_json()).expect("JSON serializes")
            ),
            report_html: renketsu_linkage::report::render(&summary),
            precision: scoring.estimated.precision,
            recall: scoring.estimated.recall,
            weakest_links: Vec::new(),
        })
    } else {
        None
    };
    stage_seconds.append(&mut observer.stage_seconds);
    check()?;
    progress("assigning pseudonyms", (total - 1.0) / total);
    let clock = Instant::now();
    let parties = linked.holders();
    let sizes: Vec<usize> = parties.iter().map(|p| p.ids.len()).collect();
    let offsets = party_offsets(&sizes);
    let holder_records: usize = sizes[..n_holders].iter().sum();
    let labels = linked.labels();
    // Labels number clusters in order of first record, and holder records come first: the
    // clusters with a holder record are 0..k.
    let k = labels[..holder_records]
        .iter()
        .max()
        .map_or(0, |&m| m as usize + 1);
    let mut excluded = vec![false; k];
    for &l in &labels[holder_records..] {
        if let Some(e) = excluded.get_mut(l as usize) {
            *e = true;
        }
    }
    let party_names: Vec<String> = all.iter().map(|u| u.party.clone()).collect();
    drop(all);
    let ids: Vec<Vec<&str>> = (0..n_holders)
        .map(|h| parties[h].ids.iter().collect())
        .collect();
    let mut out = finish(
        input.previous,
        &party_names[..n_holders],
        &ids,
        &labels[..holder_records],
        &excluded,
    );
    if let (Some(q), Some(run)) = (quality.as_mut(), linked.scoring()) {
        q.weakest_links = weakest_links(
            run,
            labels,
            &offsets,
            holder_records,
            &out.assignment.pseudonyms,
        );
    }
    out.quality = quality;
    stage_seconds.push((
        "pseudonyms and results".to_owned(),
        clock.elapsed().as_secs_f64(),
    ));
    out.stage_seconds = stage_seconds;
    out.mode = "full".to_owned();
    Ok(out)
}

/// The part of a job after clustering, shared by the full and the incremental job
/// ([`crate::incremental`]): persistent pseudonyms (SPEC.md §10.5.1), the counts and the
/// result chunks.
///
/// `ids[h]` are holder `h`'s record ids in state order (holders in project order, named
/// `parties`); `labels` one cluster label per holder record, holder-major in the same order,
/// numbering clusters `0..excluded.len()`; `excluded[l]`: cluster `l` holds an opt-out record.
///
/// # Panics
/// If `labels` does not have one label `< excluded.len()` per record of `ids`.
pub fn finish(
    previous: &Previous<RecordKey>,
    parties: &[String],
    ids: &[Vec<&str>],
    labels: &[u32],
    excluded: &[bool],
) -> JobOutput {
    // Persistent pseudonyms: the holder records' keys, in label order.
    let keys: Vec<RecordKey> = ids
        .iter()
        .enumerate()
        .flat_map(|(h, ids)| {
            ids.par_iter()
                .map(|id| record_key(h as u32, id))
                .collect::<Vec<_>>()
        })
        .collect();
    let assignment = persist::assign(previous, &keys, labels, excluded, &mut random_pseudonym);
    drop(keys);
    results(parties, ids, labels, excluded, assignment)
}

/// [`finish`] with the pseudonyms already assigned (`assignment.pseudonyms[l]`: cluster
/// `l`'s): the counts and the result chunks.
///
/// # Panics
/// As [`finish`], or if `assignment` has fewer pseudonyms than clusters.
pub fn results(
    parties: &[String],
    ids: &[Vec<&str>],
    labels: &[u32],
    excluded: &[bool],
    assignment: Assignment,
) -> JobOutput {
    let n_holders = parties.len();
    let k = excluded.len();
    assert!(assignment.pseudonyms.len() >= k, "a pseudonym per cluster");
    let sizes: Vec<usize> = ids.iter().map(Vec::len).collect();
    let offsets = party_offsets(&sizes);
    let holder_records: usize = sizes.iter().sum();
    assert_eq!(labels.len(), holder_records, "one label per holder record");
    // Members per holder per cluster.
    let mut per_holder = vec![0u32; k * n_holders];
    for h in 0..n_holders {
        for g in offsets[h]..offsets[h] + sizes[h] as u32 {
            per_holder[labels[g as usize] as usize * n_holders + h] += 1;
        }
    }
    let mut out = JobOutput {
        records: holder_records as u64,
        clusters: k as u64,
        ..JobOutput::default()
    };
    out.assignment = assignment;
    for (l, counts) in per_holder.chunks_exact(n_holders.max(1)).enumerate() {
        if excluded[l] {
            out.excluded += 1;
            continue;
        }
        for a in 0..n_holders {
            for b in a + 1..n_holders {
                out.links += u64::from(counts[a]) * u64::from(counts[b]);
            }
        }
    }
    drop(per_holder);
    let chunks: Vec<Vec<MemberChunk>> = (0..n_holders)
        .into_par_iter()
        .map(|h| {
            let mut c = MemberChunker::new(&parties[h]);
            for (i, id) in ids[h].iter().enumerate() {
                let l = labels[offsets[h] as usize + i] as usize;
                c.push(id, &out.assignment.pseudonyms[l], excluded[l]);
            }
            c.finish()
        })
        .collect();
    out.chunks = chunks.into_iter().flatten().collect();
    out
}

/// The largest `p` such that the cross-holder pairs of probability ≥ `p` still connect all
/// `n` records (the weakest edge of a maximum spanning tree, Kruskal); `None` when the
/// edges do not connect them (a cluster of one holder's records).
fn bottleneck(n: usize, edges: &mut [(f64, usize, usize)]) -> Option<f64> {
    edges.sort_by(|x, y| y.0.total_cmp(&x.0));
    let mut parent: Vec<usize> = (0..n).collect();
    fn root(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    let mut components = n;
    for &(p, i, j) in edges.iter() {
        let (ri, rj) = (root(&mut parent, i), root(&mut parent, j));
        if ri != rj {
            parent[ri] = rj;
            components -= 1;
            if components == 1 {
                return Some(p);
            }
        }
    }
    None
}

/// The weakest link of every cluster with records of two or more holders, as rows of the
/// cluster's pseudonym (16 bytes) and a probability (`f32` little-endian), in label order:
/// the largest match probability `P(M | γ)` at which the cluster's cross-holder record pairs
/// (holder records only) still connect all its records ([`bottleneck`]), so that a cluster
/// chained through a third holder is as sure as its surest chain, not as its direct pair.
fn weakest_links(
    run: &renketsu_linkage::score::ScoringRun,
    labels: &[u32],
    offsets: &[u32],
    holder_records: usize,
    pids: &[[u8; PSEUDONYM_BYTES]],
) -> Vec<u8> {
    let mut members: Vec<(u32, u32)> = (0..holder_records as u32)
        .map(|g| (labels[g as usize], g))
        .collect();
    members.par_sort_unstable();
    let groups: Vec<&[(u32, u32)]> = members.chunk_by(|x, y| x.0 == y.0).collect();
    let rows: Vec<Option<(u32, f32)>> = groups
        .par_iter()
        .map(|g| {
            let mut edges: Vec<(f64, usize, usize)> = Vec::new();
            for (i, &(_, a)) in g.iter().enumerate() {
                for (j, &(_, b)) in g.iter().enumerate().skip(i + 1) {
                    if party_of(offsets, a) != party_of(offsets, b) {
                        edges.push((run.pair_probability(a, b), i, j));
                    }
                }
            }
            bottleneck(g.len(), &mut edges).map(|w| (g[0].0, w as f32))
        })
        .collect();
    let mut out = Vec::new();
    for (l, p) in rows.into_iter().flatten() {
        out.extend_from_slice(&pids[l as usize]);
        out.extend_from_slice(&p.to_le_bytes());
    }
    out
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::bottleneck;

    #[test]
    fn the_weakest_link_is_that_of_the_surest_chain() {
        // a-b 0.99, b-c 0.9, a-c 0.01 (a and c compared directly look unlike): the chain
        // a-b-c holds at 0.9.
        let mut e = vec![(0.01, 0, 2), (0.99, 0, 1), (0.9, 1, 2)];
        assert_eq!(bottleneck(3, &mut e), Some(0.9));
        // Two records: their one pair.
        assert_eq!(bottleneck(2, &mut [(0.42, 0, 1)]), Some(0.42));
        // Not connected (no cross-holder pair to c).
        assert_eq!(bottleneck(3, &mut [(0.8, 0, 1)]), None);
        // A star through one record: the weaker spoke.
        let mut e = vec![(0.97, 0, 1), (0.6, 0, 2), (0.3, 1, 2)];
        assert_eq!(bottleneck(3, &mut e), Some(0.6));
    }
}
