//! The incremental job (SPEC.md §10.3.3, issue 16 item 2): the clusters of the holders' state
//! after the batches applied since the previous DONE job, made from that job's clusters and
//! the changed records only, equal to a full re-link of the state.
//!
//! Exact for schemas whose every recipe is `direct` (no guard, guarded, block or compare
//! recipe, no `[clk]`, no `[scoring]`): there, clusters are the connected components of
//! "shares a token" (SPEC.md §5.1), which do not depend on the order records are joined in.
//! The previous job's clusters are components of the previous state, so:
//!
//! - a cluster none of whose records a new batch replaces or deletes (**stable**) stays
//!   connected, and no token links it to another stable cluster; it is one node;
//! - a cluster with a replaced or deleted record (**affected**) may split: its remaining
//!   records are re-linked on their tokens (one node each);
//! - the batches' new and corrected records and every opt-out record are nodes too (opt-out
//!   records take part in the clusters as in a full job, which they exclude);
//! - a stable cluster is joined to the nodes it shares a token with: only the tokens of the
//!   batches' records and of opt-out records are looked for (a set the size of the batch).
//!
//! The state is read once (parsed, its direct tokens looked up in that set, not joined), so
//! the join, the clustering and the memory of the join grow with the batch and the affected
//! clusters, not with the state; reading the state and writing the results still grow with
//! it (a persisted token index would remove the reading; not built). Pure: readers in,
//! [`JobOutput`] out.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rayon::prelude::*;
use renketsu_linkage::Schema;
use renketsu_linkage::persist::{self, Assignment, Previous, Pseudonym};
use renketsu_linkage::schema::LinkMode;
use renketsu_linkage::token_file::{Header, Reader, Record, RecordBatch};
use renketsu_linkage::tokenlink::{TokenLinkError, check_headers};

use crate::batches::{Batch, BatchKind};
use crate::job::{
    JobError, JobOutput, RecordKey, TokenUpload, random_pseudonym, record_key, results,
};

/// Why a schema cannot be linked incrementally (exactly), or `None` when it can: every
/// recipe `direct`, no `[clk]`, no `[scoring]`.
pub fn schema_obstacle(schema: &Schema) -> Option<String> {
    if schema.scoring.is_some() {
        return Some(
            "a scored schema: its model is fitted on every record pair of the state".to_owned(),
        );
    }
    if schema.clk.is_some() {
        return Some("a schema with [clk]: CLK matching is not incremental yet".to_owned());
    }
    schema
        .recipes
        .iter()
        .find(|r| r.link != LinkMode::Direct)
        .map(|r| {
            format!(
                "recipe {} is not direct: guarded merges depend on the order of every token of the state",
                r.name
            )
        })
}

/// Everything an incremental job reads.
pub struct IncrementalInput<'a> {
    /// Project.
    pub project: &'a str,
    /// The project's schema ([`schema_obstacle`] must be `None`).
    pub schema: &'a Schema,
    /// Hex SHA-256 of the schema file.
    pub schema_digest: &'a str,
    /// The previous DONE job's records (as [`RecordKey`]s) with their pseudonyms, and every
    /// pseudonym issued in the project. That job must have linked this state without the
    /// batches of `new_batches` and with a subset of the opt-outs of `opt_outs`.
    pub previous: &'a Previous<RecordKey>,
    /// One merged state per holder (its token upload with every batch applied), in project
    /// order.
    pub holders: Vec<TokenUpload>,
    /// Per holder (project order), the batches applied since the previous job, in order.
    pub new_batches: Vec<Vec<Batch>>,
    /// Every opt-out upload.
    pub opt_outs: Vec<TokenUpload>,
}

/// Union-find over `u32` nodes (path halving, union by size).
struct Dsu {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl Dsu {
    fn new() -> Self {
        Self {
            parent: Vec::new(),
            size: Vec::new(),
        }
    }

    fn push(&mut self) -> u32 {
        let n = self.parent.len() as u32;
        self.parent.push(n);
        self.size.push(1);
        n
    }

    fn root(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let p = self.parent[x as usize];
            self.parent[x as usize] = self.parent[p as usize];
            x = self.parent[x as usize];
        }
        x
    }

    fn union(&mut self, a: u32, b: u32) {
        let (mut a, mut b) = (self.root(a), self.root(b));
        if a == b {
            return;
        }
        if self.size[a as usize] < self.size[b as usize] {
            std::mem::swap(&mut a, &mut b);
        }
        self.parent[b as usize] = a;
        self.size[a as usize] += self.size[b as usize];
    }
}

/// Which of a header's recipes are direct in `schema` (by name).
fn direct_recipes(schema: &Schema, h: &Header) -> Vec<bool> {
    h.recipes
        .iter()
        .map(|r| {
            schema
                .recipes
                .iter()
                .any(|s| s.name == r.name && s.link == LinkMode::Direct)
        })
        .collect()
}

/// The region's nodes and the token join among them.
#[derive(Default)]
struct Region {
    /// Direct token → the first region node that has it.
    tokens: HashMap<[u8; 32], u32>,
}

impl Region {
    fn add<'t>(
        &mut self,
        dsu: &mut Dsu,
        node: u32,
        direct: &[bool],
        tokens: impl IntoIterator<Item = (usize, &'t [u8; 32])>,
    ) {
        for (r, t) in tokens {
            if !direct.get(r).copied().unwrap_or(false) {
                continue;
            }
            match self.tokens.entry(*t) {
                std::collections::hash_map::Entry::Occupied(e) => dsu.union(node, *e.get()),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(node);
                }
            }
        }
    }
}

fn reader(u: &mut TokenUpload, name: &str) -> Result<Reader<Box<dyn BufRead + Send>>, JobError> {
    let file: Box<dyn BufRead + Send> = std::mem::replace(&mut u.input, Box::new(&[][..]));
    Ok(Reader::new(file, name).map_err(TokenLinkError::from)?)
}

/// Runs an incremental job. `progress(stage, fraction)` is called between stages; `cancel`
/// is checked between stages and between batches of records.
///
/// # Errors
/// [`JobError`] as for [`crate::job::run`]: a malformed upload or batch, uploads that do not
/// link together, cancellation.
pub fn run(
    mut input: IncrementalInput<'_>,
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
    let mut stage_seconds = Vec::new();
    let mut lap = |name: &str, t: &mut Instant| {
        stage_seconds.push((name.to_owned(), t.elapsed().as_secs_f64()));
        *t = Instant::now();
    };
    let mut clock = started;
    let n_holders = input.holders.len();
    let previous = input.previous;
    let mut dsu = Dsu::new();
    let mut region = Region::default();
    // Tokens to look for in the stable clusters: the batches' records' and the opt-outs'.
    let mut seeds: HashSet<[u8; 32]> = HashSet::new();
    // 1. Opt-out records: nodes of the region (read first: where they join does not depend
    //    on the order).
    progress("reading opt-outs", 0.05);
    let mut headers: Vec<(String, Header)> = Vec::new();
    let mut rec = Record::default();
    let mut opt_out_nodes = Vec::new();
    for u in &mut input.opt_outs {
        let name = format!("upload {} of {} (opt-out)", short(&u.upload_id), u.party);
        let mut r = reader(u, &name)?;
        let h = r.header().clone();
        check_party(&h, input.project, &u.party, &name)?;
        let direct = direct_recipes(input.schema, &h);
        headers.push((name, h));
        while r.next(&mut rec).map_err(TokenLinkError::from)? {
            let node = dsu.push();
            opt_out_nodes.push(node);
            region.add(
                &mut dsu,
                node,
                &direct,
                rec.tokens.iter().map(|(k, t)| (*k, t)),
            );
            seeds.extend(
                rec.tokens
                    .iter()
                    .filter(|(k, _)| direct.get(*k).copied().unwrap_or(false))
                    .map(|(_, t)| *t),
            );
        }
    }
    check()?;
    // 2. The new batches: every id they name, and the tokens of their records.
    progress("reading the batches", 0.1);
    let mut named: HashSet<RecordKey> = HashSet::new();
    let mut batch_records = 0u64;
    for (h, batches) in std::mem::take(&mut input.new_batches)
        .into_iter()
        .enumerate()
    {
        for b in batches {
            let mut r = Reader::new(b.input, &b.name).map_err(TokenLinkError::from)?;
            let direct = direct_recipes(input.schema, r.header());
            while r.next(&mut rec).map_err(TokenLinkError::from)? {
                named.insert(record_key(h as u32, &rec.id));
                batch_records += 1;
                if b.kind == BatchKind::Records {
                    seeds.extend(
                        rec.tokens
                            .iter()
                            .filter(|(k, _)| direct.get(*k).copied().unwrap_or(false))
                            .map(|(_, t)| *t),
                    );
                }
            }
        }
    }
    // Clusters with a replaced or deleted record: re-linked from their records.
    let affected: HashSet<Pseudonym> = named
        .iter()
        .filter_map(|k| previous.members.get(k).copied())
        .collect();
    lap("batches", &mut clock);
    check()?;
    // 3. The state, once: every record's node; region records join on their tokens, stable
    //    records only note the seeds they hold.
    let mut party_names = Vec::with_capacity(n_holders);
    let mut ids: Vec<Vec<String>> = Vec::with_capacity(n_holders);
    let mut nodes: Vec<u32> = Vec::new();
    let mut all_keys: Vec<RecordKey> = Vec::new();
    let mut stable: HashMap<Pseudonym, u32> = HashMap::new();
    let mut hits: Vec<([u8; 32], u32)> = Vec::new();
    let mut relinked = 0u64;
    let mut parsed: Vec<RecordBatch> = Vec::new();
    let total_records: u64 = input.holders.iter().map(|u| u.records).sum::<u64>().max(1);
    let mut seen = 0u64;
    for (h, u) in input.holders.iter_mut().enumerate() {
        let name = format!("upload {} of {}", short(&u.upload_id), u.party);
        progress(
            &format!("reading {}", u.party),
            0.1 + 0.7 * seen as f64 / total_records as f64,
        );
        let mut r = reader(u, &name)?;
        let head = r.header().clone();
        check_party(&head, input.project, &u.party, &name)?;
        let direct = direct_recipes(input.schema, &head);
        headers.push((name, head));
        party_names.push(u.party.clone());
        let mut holder_ids = Vec::with_capacity(usize::try_from(u.records).unwrap_or(0));
        while r.next_batches(&mut parsed).map_err(TokenLinkError::from)? {
            check()?;
            for b in &parsed {
                // Read-only lookups on every core: each record's key, its stable cluster (if
                // it is in one) and whether it holds a token of the batch or the opt-outs.
                let is_seed = |t: &(u32, [u8; 32])| {
                    direct.get(t.0 as usize).copied().unwrap_or(false) && seeds.contains(&t.1)
                };
                let classified: Vec<(RecordKey, Option<Pseudonym>, bool)> = (0..b.len())
                    .into_par_iter()
                    .map(|i| {
                        let key = record_key(h as u32, b.id(i));
                        let stable = previous
                            .members
                            .get(&key)
                            .filter(|p| !named.contains(&key) && !affected.contains(*p))
                            .copied();
                        let seeded = stable.is_some() && b.tokens(i).iter().any(is_seed);
                        (key, stable, seeded)
                    })
                    .collect();
                for (i, (key, stable_pid, seeded)) in classified.iter().enumerate() {
                    let tokens = b.tokens(i);
                    let node = match stable_pid {
                        Some(p) => {
                            let node = *stable.entry(*p).or_insert_with(|| dsu.push());
                            if *seeded {
                                for t in tokens.iter().filter(|t| is_seed(t)) {
                                    hits.push((t.1, node));
                                }
                            }
                            node
                        }
                        None => {
                            // New, corrected, or of an affected cluster.
                            let node = dsu.push();
                            region.add(
                                &mut dsu,
                                node,
                                &direct,
                                tokens.iter().map(|(k, t)| (*k as usize, t)),
                            );
                            relinked += 1;
                            node
                        }
                    };
                    nodes.push(node);
                    all_keys.push(*key);
                    holder_ids.push(b.id(i).to_owned());
                }
                seen += b.len() as u64;
            }
        }
        ids.push(holder_ids);
    }
    {
        let named_headers: Vec<(&str, &Header)> =
            headers.iter().map(|(n, h)| (n.as_str(), h)).collect();
        check_headers(input.schema_digest, &named_headers, Some(input.project))?;
    }
    lap("reading the state", &mut clock);
    check()?;
    // 4. Stable clusters join the region nodes they share a token with.
    progress("clustering", 0.85);
    let stable_joined = hits.len();
    for (t, node) in hits {
        if let Some(&n) = region.tokens.get(&t) {
            dsu.union(node, n);
        }
    }
    // Labels in order of first holder record, as a full job numbers them.
    let mut label_of_root: HashMap<u32, u32> = HashMap::new();
    let mut labels = Vec::with_capacity(nodes.len());
    for &n in &nodes {
        let r = dsu.root(n);
        let next = label_of_root.len() as u32;
        labels.push(*label_of_root.entry(r).or_insert(next));
    }
    drop(nodes);
    let mut excluded = vec![false; label_of_root.len()];
    for n in opt_out_nodes {
        let r = dsu.root(n);
        if let Some(&l) = label_of_root.get(&r) {
            excluded[l as usize] = true;
        }
    }
    // A stable cluster joined to nothing keeps its pseudonym as it is (a full job's
    // assignment gives it the same: it is the heir of its pseudonym alone, and not excluded:
    // an opt-out token would have joined it). The other clusters (the region's) are
    // assigned from the previous members of their pseudonyms only.
    let mut kept: Vec<Option<Pseudonym>> = vec![None; label_of_root.len()];
    let mut region_pids: HashSet<Pseudonym> = affected.clone();
    for (&p, &node) in &stable {
        let r = dsu.root(node);
        if r == node && dsu.size[node as usize] == 1 {
            if let Some(&l) = label_of_root.get(&r) {
                kept[l as usize] = Some(p);
            }
        } else {
            region_pids.insert(p);
        }
    }
    drop(label_of_root);
    lap("clustering", &mut clock);
    check()?;
    progress("assigning pseudonyms", 0.9);
    let mut region_of_label: Vec<u32> = vec![u32::MAX; kept.len()];
    let mut region_excluded = Vec::new();
    for (l, k) in kept.iter().enumerate() {
        if k.is_none() {
            region_of_label[l] = region_excluded.len() as u32;
            region_excluded.push(excluded[l]);
        }
    }
    let (region_keys, region_labels): (Vec<RecordKey>, Vec<u32>) = all_keys
        .iter()
        .zip(&labels)
        .filter(|(_, l)| kept[**l as usize].is_none())
        .map(|(k, l)| (*k, region_of_label[*l as usize]))
        .unzip();
    drop(all_keys);
    let region_previous = Previous {
        members: previous
            .members
            .iter()
            .filter(|(_, p)| region_pids.contains(*p))
            .map(|(k, p)| (*k, *p))
            .collect(),
        issued: previous.issued.clone(),
    };
    let region = persist::assign(
        &region_previous,
        &region_keys,
        &region_labels,
        &region_excluded,
        &mut random_pseudonym,
    );
    drop(region_previous);
    let assignment = Assignment {
        pseudonyms: kept
            .iter()
            .zip(&region_of_label)
            .map(|(k, &j)| k.unwrap_or_else(|| region.pseudonyms[j as usize]))
            .collect(),
        born: region.born,
        events: region.events,
    };
    let id_refs: Vec<Vec<&str>> = ids
        .iter()
        .map(|v| v.iter().map(String::as_str).collect())
        .collect();
    let mut out = results(&party_names, &id_refs, &labels, &excluded, assignment);
    lap("pseudonyms and results", &mut clock);
    out.stage_seconds = stage_seconds;
    out.mode = format!(
        "incremental ({batch_records} batch records, {} affected clusters, {relinked} records re-linked, {stable_joined} tokens of stable clusters joined)",
        affected.len()
    );
    Ok(out)
}

fn check_party(h: &Header, project: &str, party: &str, name: &str) -> Result<(), JobError> {
    if h.project != project || h.party != party {
        return Err(JobError::WrongUpload(format!(
            "{name} holds tokens of project {:?} made by {:?}: a holder uploads its own tokens of this project",
            h.project, h.party
        )));
    }
    Ok(())
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet, HashMap};
    use std::sync::atomic::AtomicBool;

    use rand::rngs::StdRng;
    use rand::{Rng as _, SeedableRng as _};
    use renketsu_linkage::Schema;
    use renketsu_linkage::persist::{Issued, Previous};
    use renketsu_linkage::token_file::{
        Counts, FORMAT, Header, MODE_HMAC, RecipeRef, SchemaRef, VERSION, encode_deletions,
        encode_header, encode_record, encode_trailer,
    };
    use sha2::{Digest as _, Sha256};

    use super::{IncrementalInput, run, schema_obstacle};
    use crate::batches::{Batch, BatchKind, MergedState};
    use crate::job::{self, JobInput, JobOutput, RecordKey, TokenUpload, record_key};

    const SCHEMA: &str = include_str!("../../../schemas/jp-person-exact.toml");
    const RECIPES: [(&str, u32); 4] = [
        ("kana_name_dob_sex", 2),
        ("kana_fuzzy_dob_sex", 1),
        ("kanji_name_dob_sex", 2),
        ("kana_fuzzy_postal", 1),
    ];
    const PARTIES: [&str; 3] = ["a", "b", "c"];

    fn digest() -> String {
        hex::encode(Sha256::digest(SCHEMA.as_bytes()))
    }

    fn header(party: &str) -> Header {
        Header {
            format: FORMAT.to_owned(),
            version: VERSION,
            project: "p".to_owned(),
            party: party.to_owned(),
            schema: SchemaRef {
                name: "jp-person-exact".to_owned(),
                version: 2,
                digest: digest(),
            },
            mode: MODE_HMAC.to_owned(),
            oprf_mode: None,
            recipes: RECIPES
                .iter()
                .map(|(n, v)| RecipeRef {
                    name: (*n).to_owned(),
                    version: *v,
                    epoch: None,
                    public_key: None,
                })
                .collect(),
            clk_bits: None,
            today: "2026-12-08".to_owned(),
            created_by: "test".to_owned(),
            dice: Vec::new(),
        }
    }

    /// A record: `(recipe, seed)` pairs; the same seed and recipe make the same token.
    type Rec = Vec<(usize, u32)>;

    fn file(party: &str, recs: &[(String, Rec)]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_header(&mut out, &header(party));
        for (id, r) in recs {
            let mut toks: Vec<(usize, [u8; 32])> = r
                .iter()
                .map(|(k, s)| (*k, Sha256::digest(format!("{s}/{k}")).into()))
                .collect();
            toks.sort();
            toks.dedup();
            encode_record(&mut out, id, toks.iter().map(|(k, t)| (*k, t)), None);
        }
        let n = recs.len() as u64;
        encode_trailer(
            &mut out,
            &Counts {
                records: n,
                read: n,
                tokenized: n,
                encoding: "utf-8".to_owned(),
                ..Counts::default()
            },
        );
        out
    }

    /// A random record of a person among `persons`: one or two recipes of the person's
    /// seed, sometimes a token of another person (a bridge) or a typo (a seed of nobody).
    fn rec(rng: &mut StdRng, persons: u32) -> Rec {
        let p = rng.random_range(0..persons);
        let mut r = vec![(rng.random_range(0..4), p)];
        if rng.random_bool(0.5) {
            r.push((rng.random_range(0..4), p));
        }
        if rng.random_bool(0.05) {
            r.push((rng.random_range(0..4), rng.random_range(0..persons)));
        }
        if rng.random_bool(0.1) {
            r = vec![(0, 1_000_000 + rng.random_range(0..1_000_000))];
        }
        r
    }

    struct Holder {
        base: Vec<u8>,
        /// Every batch so far: (kind, bytes).
        batches: Vec<(BatchKind, Vec<u8>)>,
        state: BTreeMap<String, Rec>,
    }

    fn uploads(hs: &[Holder]) -> Vec<TokenUpload> {
        hs.iter()
            .zip(PARTIES)
            .map(|(h, party)| {
                let batches = h
                    .batches
                    .iter()
                    .enumerate()
                    .map(|(i, (kind, b))| Batch {
                        kind: *kind,
                        name: format!("batch {i}"),
                        input: Box::new(std::io::Cursor::new(b.clone())),
                    })
                    .collect();
                TokenUpload {
                    party: party.to_owned(),
                    upload_id: format!("base-{party}"),
                    records: h.state.len() as u64,
                    input: Box::new(MergedState::new(
                        Box::new(std::io::Cursor::new(h.base.clone())),
                        "base",
                        batches,
                    )),
                }
            })
            .collect()
    }

    fn opt_outs(files: &[Vec<u8>]) -> Vec<TokenUpload> {
        files
            .iter()
            .enumerate()
            .map(|(i, f)| TokenUpload {
                party: "a".to_owned(),
                upload_id: format!("oo-{i}"),
                records: 0,
                input: Box::new(std::io::Cursor::new(f.clone())),
            })
            .collect()
    }

    /// A record: (holder, record id).
    type Key = (String, String);

    /// Each record's cluster (as the set of its members) and exclusion.
    fn partition(out: &JobOutput) -> BTreeMap<Key, (BTreeSet<Key>, bool)> {
        let mut by_pid: HashMap<[u8; 16], BTreeSet<(String, String)>> = HashMap::new();
        let mut rows = Vec::new();
        for c in &out.chunks {
            for m in c.members().unwrap() {
                let k = (c.party.clone(), m.record_id.to_owned());
                by_pid.entry(m.pseudonym).or_default().insert(k.clone());
                rows.push((k, m.pseudonym, m.excluded));
            }
        }
        rows.into_iter()
            .map(|(k, p, e)| (k, (by_pid[&p].clone(), e)))
            .collect()
    }

    fn previous_of(out: &JobOutput, job_id: u64) -> Previous<RecordKey> {
        let mut prev = Previous::default();
        for c in &out.chunks {
            let h = PARTIES.iter().position(|p| *p == c.party).unwrap() as u32;
            for m in c.members().unwrap() {
                prev.members.insert(record_key(h, m.record_id), m.pseudonym);
                prev.issued.entry(m.pseudonym).or_insert(Issued {
                    born_job: job_id,
                    withdrawn: false,
                });
            }
        }
        prev
    }

    #[test]
    fn the_schema_decides_whether_a_job_can_be_incremental() {
        let exact = Schema::from_toml(SCHEMA).unwrap();
        assert_eq!(schema_obstacle(&exact), None);
        let guarded = Schema::from_toml(include_str!("../../../schemas/ndb-exact.toml")).unwrap();
        assert!(schema_obstacle(&guarded).unwrap().contains("not direct"));
        let scored = Schema::from_toml(include_str!("../../../schemas/jp-person.toml")).unwrap();
        assert!(schema_obstacle(&scored).unwrap().contains("scored"));
    }

    /// Random months of corrections, deletions, new records and opt-outs: every month's
    /// incremental job (starting from the previous month's incremental result) gives the
    /// clusters and exclusions of a full job on the same state, and the same pseudonyms for
    /// every cluster that a full job would let keep one.
    #[test]
    fn incremental_jobs_equal_full_jobs_month_after_month() {
        let schema = Schema::from_toml(SCHEMA).unwrap();
        let digest = digest();
        let cancel = AtomicBool::new(false);
        let quiet = |_: &str, _: f64| {};
        for seed in 0..12u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let persons = 40 + rng.random_range(0..40);
            let mut next_id = 0u32;
            let mut hs: Vec<Holder> = PARTIES
                .iter()
                .map(|party| {
                    let state: BTreeMap<String, Rec> = (0..rng.random_range(20..60))
                        .map(|_| {
                            next_id += 1;
                            (format!("r{next_id}"), rec(&mut rng, persons))
                        })
                        .collect();
                    let recs: Vec<(String, Rec)> = state.clone().into_iter().collect();
                    Holder {
                        base: file(party, &recs),
                        batches: Vec::new(),
                        state,
                    }
                })
                .collect();
            let mut oo: Vec<Vec<u8>> = Vec::new();
            let first = job::run(
                JobInput {
                    project: "p",
                    schema: &schema,
                    schema_digest: &digest,
                    previous: &Previous::default(),
                    holders: uploads(&hs),
                    opt_outs: opt_outs(&oo),
                },
                &quiet,
                &cancel,
            )
            .unwrap();
            let mut previous = previous_of(&first, 1);
            let mut incremental_months = 0;
            for month in 2..=6u64 {
                let mut new_batches: Vec<Vec<Batch>> = Vec::new();
                for (h, party) in PARTIES.iter().enumerate() {
                    let holder = &mut hs[h];
                    let mut mine = Vec::new();
                    // Deletions.
                    let ids: Vec<String> = holder.state.keys().cloned().collect();
                    let dels: Vec<String> = ids
                        .iter()
                        .filter(|_| rng.random_bool(0.05))
                        .cloned()
                        .collect();
                    if !dels.is_empty() || rng.random_bool(0.2) {
                        let mut named: Vec<&str> = dels.iter().map(String::as_str).collect();
                        named.push("never-sent");
                        let d = encode_deletions(&header(party), named);
                        for id in &dels {
                            holder.state.remove(id);
                        }
                        mine.push((BatchKind::Deletions, d));
                    }
                    // Corrections and new records.
                    let mut ups: BTreeMap<String, Rec> = BTreeMap::new();
                    for id in holder.state.keys() {
                        if rng.random_bool(0.05) {
                            ups.insert(id.clone(), rec(&mut rng, persons));
                        }
                    }
                    for _ in 0..rng.random_range(0..8) {
                        next_id += 1;
                        ups.insert(format!("r{next_id}"), rec(&mut rng, persons));
                    }
                    let list: Vec<(String, Rec)> = ups.clone().into_iter().collect();
                    holder.state.extend(ups);
                    mine.push((BatchKind::Records, file(party, &list)));
                    new_batches.push(
                        mine.iter()
                            .enumerate()
                            .map(|(i, (k, b))| Batch {
                                kind: *k,
                                name: format!("new batch {i}"),
                                input: Box::new(std::io::Cursor::new(b.clone())),
                            })
                            .collect(),
                    );
                    holder.batches.extend(mine);
                }
                if rng.random_bool(0.3) {
                    oo.push(file("a", &[(format!("oo{month}"), rec(&mut rng, persons))]));
                }
                let full = job::run(
                    JobInput {
                        project: "p",
                        schema: &schema,
                        schema_digest: &digest,
                        previous: &previous,
                        holders: uploads(&hs),
                        opt_outs: opt_outs(&oo),
                    },
                    &quiet,
                    &cancel,
                )
                .unwrap();
                let inc = run(
                    IncrementalInput {
                        project: "p",
                        schema: &schema,
                        schema_digest: &digest,
                        previous: &previous,
                        holders: uploads(&hs),
                        new_batches,
                        opt_outs: opt_outs(&oo),
                    },
                    &quiet,
                    &cancel,
                )
                .unwrap();
                assert!(inc.mode.starts_with("incremental ("), "{}", inc.mode);
                let (pf, pi) = (partition(&full), partition(&inc));
                assert_eq!(pf.len(), hs.iter().map(|h| h.state.len()).sum::<usize>());
                assert_eq!(pi, pf, "seed {seed} month {month}");
                assert_eq!(
                    (inc.records, inc.clusters, inc.excluded, inc.links),
                    (full.records, full.clusters, full.excluded, full.links)
                );
                // The same survivors: pseudonyms that are not fresh agree record for record.
                let fresh_f: BTreeSet<[u8; 16]> = full.assignment.born.iter().copied().collect();
                let fresh_i: BTreeSet<[u8; 16]> = inc.assignment.born.iter().copied().collect();
                let pids = |o: &JobOutput| -> BTreeMap<(String, String), [u8; 16]> {
                    o.chunks
                        .iter()
                        .flat_map(|c| {
                            c.members()
                                .unwrap()
                                .into_iter()
                                .map(|m| ((c.party.clone(), m.record_id.to_owned()), m.pseudonym))
                                .collect::<Vec<_>>()
                        })
                        .collect()
                };
                let (qf, qi) = (pids(&full), pids(&inc));
                let mut fresh_to_full: HashMap<[u8; 16], [u8; 16]> = HashMap::new();
                for (k, p) in &qf {
                    assert_eq!(fresh_f.contains(p), fresh_i.contains(&qi[k]));
                    if fresh_f.contains(p) {
                        fresh_to_full.insert(qi[k], *p);
                    } else {
                        assert_eq!(p, &qi[k], "seed {seed} month {month}: {k:?}");
                    }
                }
                // The same crosswalk events (fresh pseudonyms matched through their records).
                let rename =
                    |p: Option<[u8; 16]>| p.map(|p| fresh_to_full.get(&p).copied().unwrap_or(p));
                let mut ev_i: Vec<_> = inc
                    .assignment
                    .events
                    .iter()
                    .map(|e| (e.kind, rename(e.old), rename(e.new)))
                    .collect();
                let mut ev_f: Vec<_> = full
                    .assignment
                    .events
                    .iter()
                    .map(|e| (e.kind, e.old, e.new))
                    .collect();
                ev_i.sort();
                ev_f.sort();
                assert_eq!(ev_i, ev_f, "seed {seed} month {month}: crosswalk");
                incremental_months += 1;
                previous = previous_of(&inc, month);
            }
            assert_eq!(incremental_months, 5);
        }
    }
}
