//! Incremental uploads (issue 16 item 1, SPEC.md §10.3.2) over loopback with real mutual TLS,
//! on SQLite and (with `RENKETSU_TEST_PG_URL`) PostgreSQL.
//!
//! A reduced monthly scenario: three holders, month 1 a token upload each, months 2–12 a
//! token batch (new persons, repeat records of known persons, corrections that change
//! nothing of the linkage — an insurer change —, typo fixes that join a record to its person,
//! a wrong record that bridges two persons and its later fix) and a deletion batch, opt-outs
//! in months 6 and 10; a job and a release every month. The same months are sent to a second
//! project as whole token files of the state. Checked every month: the clusters of the
//! batched project equal those of the whole-file project record for record; pseudonyms of
//! clusters whose members did not change persist; every pseudonym that stops is the old of a
//! merge, retire or withdraw event and every new one the new of a new or split event, and the
//! pseudonyms merged into a cluster are merge events into its survivor; release 1 joins
//! release 12 through the researcher's crosswalk. Also: a batch sent again (whole, or
//! resumed chunk by chunk) is applied once; a token upload drops the batches. The batched
//! project's jobs after month 1 are incremental (SPEC.md §10.3.3), so the monthly comparison
//! is of an incremental job with a full re-link of the same state; after month 12 a forced
//! full re-link of the batched project changes no pseudonym.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use renketsu_keys::content::ResearcherKeyPair;
use renketsu_keys::lifecycle::SystemClock;
use renketsu_linkage::token_file::{
    Counts, encode_deletions, encode_header, encode_record, encode_trailer,
};
use renketsu_linkage_unit::service::{LinkageUnitService, LuSettings};
use renketsu_protocol::v1;
use renketsu_protocol::v1::linkage_unit_client::LinkageUnitClient;
use renketsu_rpc::pki::Role;
use tonic::transport::Channel;

mod support;
use support::*;

const HOLDERS: [&str; 3] = ["ehr", "claims", "kaigo"];
const MONTHS: usize = 12;

/// One holder record as the holder tokenized it: token seeds per recipe (the same seed makes
/// the same token at every holder), and the person it truly is (ground truth).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rec {
    person: u32,
    seeds: Vec<(String, usize)>,
}

impl Rec {
    fn of(person: u32) -> Self {
        Self {
            person,
            seeds: vec![(format!("p{person}"), 0), (format!("p{person}"), 2)],
        }
    }
}

fn token_file(project: &str, party: &str, recs: &[(&String, &Rec)]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_header(&mut out, &header(project, party, "2026-12-07"));
    for (id, r) in recs {
        let mut toks: Vec<(usize, [u8; 32])> =
            r.seeds.iter().map(|(s, k)| (*k, token(s, *k))).collect();
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

/// One month of one holder: records upserted (new or corrected) and ids deleted.
#[derive(Default)]
struct Change {
    upserts: BTreeMap<String, Rec>,
    deletes: Vec<String>,
}

/// The scenario's state and its generator (seeded: the same months every run).
struct World {
    rng: StdRng,
    state: [BTreeMap<String, Rec>; 3],
    persons: u32,
    next_id: u64,
    /// Persons ever part of a wrong (bridging) record, or opted out: their clusters merge
    /// and split on purpose.
    disturbed: HashSet<u32>,
    /// A bridging record waiting for its fix: (holder, id, month to fix).
    bridge: Option<(usize, String, usize)>,
}

impl World {
    fn new() -> Self {
        Self {
            rng: StdRng::seed_from_u64(16),
            state: Default::default(),
            persons: 0,
            next_id: 0,
            disturbed: HashSet::new(),
            bridge: None,
        }
    }

    fn id(&mut self, h: usize) -> String {
        self.next_id += 1;
        format!("{}-{}", &HOLDERS[h][..1], self.next_id)
    }

    fn new_person(&mut self) -> u32 {
        self.persons += 1;
        self.persons - 1
    }

    /// Month 1: 40 persons, each at one to three holders.
    fn first_month(&mut self) -> [Change; 3] {
        let mut ch: [Change; 3] = Default::default();
        for _ in 0..40 {
            let p = self.new_person();
            for (h, c) in ch.iter_mut().enumerate() {
                if h == 0 || self.rng.random_bool(0.5) {
                    let id = self.id(h);
                    c.upserts.insert(id, Rec::of(p));
                }
            }
        }
        for (h, c) in ch.iter().enumerate() {
            for (id, r) in &c.upserts {
                self.state[h].insert(id.clone(), r.clone());
            }
        }
        ch
    }

    fn known_person(&mut self, h: usize) -> Option<(String, Rec)> {
        let n = self.state[h].len();
        if n == 0 {
            return None;
        }
        let k = self.rng.random_range(0..n);
        self.state[h]
            .iter()
            .nth(k)
            .map(|(i, r)| (i.clone(), r.clone()))
    }

    /// Months 2–12.
    fn month(&mut self, m: usize) -> [Change; 3] {
        let mut ch: [Change; 3] = Default::default();
        for (h, c) in ch.iter_mut().enumerate() {
            // New persons and repeat records of known persons (a claim a month).
            for _ in 0..2 {
                let p = self.new_person();
                let id = self.id(h);
                c.upserts.insert(id, Rec::of(p));
            }
            for _ in 0..2 {
                if let Some((_, r)) = self.known_person(h) {
                    let id = self.id(h);
                    c.upserts.insert(id, Rec::of(r.person));
                }
            }
            // An insurer change: the record is corrected, its name tokens stay.
            if let Some((id, mut r)) = self.known_person(h)
                && !c.upserts.contains_key(&id)
            {
                r.seeds.push((format!("insurer-{id}-{m}"), 3));
                c.upserts.insert(id, r);
            }
            // A typo: a record of a known person whose tokens do not match (a singleton),
            // fixed two months later (see below).
            if m % 3 == 2
                && let Some((_, r)) = self.known_person(h)
            {
                let id = self.id(h);
                c.upserts.insert(
                    id,
                    Rec {
                        person: r.person,
                        seeds: vec![(format!("typo-{m}-{h}"), 0)],
                    },
                );
            }
            // A deletion (not of a record changed this month).
            if let Some((id, _)) = self.known_person(h)
                && !c.upserts.contains_key(&id)
                && self.rng.random_bool(0.7)
            {
                c.deletes.push(id);
            }
        }
        // Typo fixes: every typo record older than a month gets its person's tokens.
        for (h, c) in ch.iter_mut().enumerate() {
            let fixes: Vec<(String, Rec)> = self.state[h]
                .iter()
                .filter(|(_, r)| {
                    r.seeds.len() == 1
                        && r.seeds[0].0.starts_with("typo-")
                        && r.seeds[0]
                            .0
                            .split('-')
                            .nth(1)
                            .and_then(|x| x.parse::<usize>().ok())
                            < Some(m - 1)
                })
                .map(|(i, r)| (i.clone(), Rec::of(r.person)))
                .collect();
            for (i, r) in fixes {
                if !c.deletes.contains(&i) {
                    c.upserts.insert(i, r);
                }
            }
        }
        // Month 3: a wrong record at the claims holder carries two persons' tokens (their
        // clusters merge); month 7 fixes it (they split).
        if m == 3 {
            let (p, q) = (3u32, 4u32);
            let id = self.id(1);
            ch[1].upserts.insert(
                id.clone(),
                Rec {
                    person: p,
                    seeds: vec![(format!("p{p}"), 0), (format!("p{q}"), 2)],
                },
            );
            self.disturbed.extend([p, q]);
            self.bridge = Some((1, id, 7));
        }
        if let Some((h, id, at)) = self.bridge.clone()
            && at == m
        {
            let p = self.state[h][&id].person;
            ch[h].deletes.retain(|d| d != &id);
            ch[h].upserts.insert(id, Rec::of(p));
            self.bridge = None;
        }
        // The wrong record stays until its fix.
        if let Some((h, id, _)) = &self.bridge {
            ch[*h].deletes.retain(|d| d != id);
        }
        for (h, c) in ch.iter().enumerate() {
            for d in &c.deletes {
                self.state[h].remove(d);
            }
            for (id, r) in &c.upserts {
                self.state[h].insert(id.clone(), r.clone());
            }
        }
        ch
    }
}

async fn start_job(admin: &mut LinkageUnitClient<Channel>, project: &str) -> v1::Job {
    admin
        .start_job(v1::StartJobRequest {
            project: project.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap();
    wait_done(admin, project).await
}

/// Every holder's mapping: (holder index, record id) → pseudonym.
type Mapping = BTreeMap<(usize, String), String>;

/// Every holder's mapping.
async fn mappings(holders: &mut [LinkageUnitClient<Channel>], project: &str) -> Mapping {
    let mut out = BTreeMap::new();
    for (h, c) in holders.iter_mut().enumerate() {
        for (id, pid) in mapping(c, project).await.unwrap() {
            out.insert((h, id), pid);
        }
    }
    out
}

/// The partition of a mapping: each record's cluster as the set of its members.
fn partition(
    m: &BTreeMap<(usize, String), String>,
) -> BTreeMap<(usize, String), Vec<(usize, String)>> {
    let mut by_pid: HashMap<&str, Vec<(usize, String)>> = HashMap::new();
    for (k, p) in m {
        by_pid.entry(p).or_default().push(k.clone());
    }
    m.iter()
        .map(|(k, p)| (k.clone(), by_pid[p.as_str()].clone()))
        .collect()
}

/// The released pseudonyms of a whole release.
async fn release_pids(
    r: &mut LinkageUnitClient<Channel>,
    project: &str,
) -> (u64, BTreeSet<String>) {
    let mut s = r
        .fetch_release(v1::FetchReleaseRequest {
            project: project.to_owned(),
            since_release: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = BTreeSet::new();
    let mut id = 0;
    while let Some(c) = s.message().await.unwrap() {
        if c.release_id != 0 {
            id = c.release_id;
        }
        for cl in c.clusters {
            out.insert(cl.pseudonym);
        }
    }
    (id, out)
}

async fn upload_kind(
    c: &mut LinkageUnitClient<Channel>,
    project: &str,
    kind: v1::UploadKind,
    bytes: &[u8],
) -> v1::UploadStatus {
    let s = upload(c, project, kind, bytes).await;
    assert!(s.complete, "{s:?}");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monthly_batches_link_like_whole_files_and_keep_pseudonyms() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()).await {
        let pki = Pki::new();
        let lu = TestLu::start(&pki, &url).await;
        let researcher = ResearcherKeyPair::derive(&[5u8; 32]);
        let pk = researcher.public_key();
        let mut admin = lu.client(&pki, Some(("admin", Role::Admin)));
        let mut hs: Vec<LinkageUnitClient<Channel>> = HOLDERS
            .iter()
            .map(|h| lu.client(&pki, Some((h, Role::DataHolder))))
            .collect();
        let mut r = lu.client(&pki, Some(("researcher", Role::Researcher)));
        let (inc, full) = ("monthly", "monthly-full");
        create(&mut admin, inc, &HOLDERS, &pk).await;
        create(&mut admin, full, &HOLDERS, &pk).await;
        let mut world = World::new();
        let mut previous: Option<Mapping> = None;
        let mut first: Option<(Mapping, BTreeSet<String>)> = None;
        let mut issued: HashSet<String> = HashSet::new();
        let (mut kept, mut merged_events, mut split_events) = (0usize, 0usize, 0usize);
        let mut batch_seq = [0u64; 3];
        for m in 1..=MONTHS {
            let changes = if m == 1 {
                world.first_month()
            } else {
                world.month(m)
            };
            for (h, c) in changes.iter().enumerate() {
                let whole: Vec<(&String, &Rec)> = world.state[h].iter().collect();
                // The whole-file project: the state, every month.
                upload_kind(
                    &mut hs[h],
                    full,
                    v1::UploadKind::Tokens,
                    &token_file(full, HOLDERS[h], &whole),
                )
                .await;
                if m == 1 {
                    upload_kind(
                        &mut hs[h],
                        inc,
                        v1::UploadKind::Tokens,
                        &token_file(inc, HOLDERS[h], &whole),
                    )
                    .await;
                    continue;
                }
                if !c.deletes.is_empty() {
                    let d = encode_deletions(
                        &header(inc, HOLDERS[h], "2026-12-07"),
                        c.deletes.iter().map(String::as_str),
                    );
                    let s = upload_kind(&mut hs[h], inc, v1::UploadKind::Deletions, &d).await;
                    batch_seq[h] += 1;
                    assert_eq!(s.batch_seq, batch_seq[h]);
                }
                let ups: Vec<(&String, &Rec)> = c.upserts.iter().collect();
                let b = token_file(inc, HOLDERS[h], &ups);
                let s = upload_kind(&mut hs[h], inc, v1::UploadKind::TokenBatch, &b).await;
                batch_seq[h] += 1;
                assert_eq!(s.batch_seq, batch_seq[h]);
                // Sent again (a holder unsure whether it arrived): applied once.
                let again = upload_kind(&mut hs[h], inc, v1::UploadKind::TokenBatch, &b).await;
                assert_eq!(
                    (again.batch_seq, again.chunks_stored_now),
                    (batch_seq[h], 0)
                );
            }
            // Opt-outs (months 6 and 10): a person of the ehr holder; the upload starts the
            // job itself.
            let opt_out = [6, 10].contains(&m).then(|| {
                let (_, r) = world.state[0].iter().nth(m).unwrap();
                world.disturbed.insert(r.person);
                r.clone()
            });
            let mut job = 0;
            for project in [inc, full] {
                let j = if let Some(r) = &opt_out {
                    let oo_id = format!("oo-{m}");
                    let f = token_file(project, HOLDERS[0], &[(&oo_id, r)]);
                    upload_kind(&mut hs[0], project, v1::UploadKind::OptOut, &f).await;
                    wait_done(&mut admin, project).await
                } else {
                    start_job(&mut admin, project).await
                };
                // The batched project's jobs after month 1 are incremental (SPEC.md §10.3.3);
                // the whole-file project's re-link everything (a new token upload).
                if project == inc {
                    job = j.job_id;
                    if m == 1 {
                        assert_eq!(j.mode, "full (incremental not possible: no previous job)");
                    } else {
                        assert!(j.mode.starts_with("incremental ("), "month {m}: {}", j.mode);
                    }
                } else if m > 1 {
                    assert!(
                        j.mode.starts_with(
                            "full (incremental not possible: holder ehr sent a new token upload"
                        ),
                        "month {m}: {}",
                        j.mode
                    );
                }
            }
            let now = mappings(&mut hs, inc).await;
            let whole = mappings(&mut hs, full).await;
            // The batched state links exactly like the whole files.
            let (pi, pf) = (partition(&now), partition(&whole));
            let same = pi
                .iter()
                .filter(|(k, members)| pf.get(*k) == Some(*members))
                .count();
            assert_eq!(pi.len(), pf.len(), "month {m}: records mapped");
            assert_eq!(same, pi.len(), "month {m}: cluster membership differs");
            // Only records of the state are mapped (deleted ones are gone).
            for (h, id) in now.keys() {
                assert!(
                    world.state[*h].contains_key(id),
                    "month {m}: {id} is mapped"
                );
            }
            let (release_id, released) = release_pids(&mut r, inc).await;
            assert_eq!(release_id, m as u64);
            let events = lu.store.crosswalk(inc, job - 1, job).await.unwrap();
            if let Some(prev) = &previous {
                let now_pids: HashSet<&String> = now.values().collect();
                let prev_pids: HashSet<&String> = prev.values().collect();
                // Members that were in both jobs, by previous and by current pseudonym.
                let mut by_prev: HashMap<&String, BTreeSet<&(usize, String)>> = HashMap::new();
                let mut by_now: HashMap<&String, BTreeSet<&(usize, String)>> = HashMap::new();
                for (k, p) in prev {
                    if let Some(q) = now.get(k) {
                        by_prev.entry(p).or_default().insert(k);
                        by_now.entry(q).or_default().insert(k);
                    }
                }
                // Clusters whose surviving members are unchanged keep their pseudonym.
                for (p, members) in &by_prev {
                    let q = &now[*members.iter().next().unwrap()];
                    if members.iter().all(|k| &now[*k] == q) && by_now[q] == *members {
                        assert_eq!(
                            q, *p,
                            "month {m}: an unchanged cluster got another pseudonym"
                        );
                        kept += 1;
                    }
                }
                let ev = |kinds: &[&str], old: &str, new: &str| {
                    events.iter().any(|e| {
                        kinds.contains(&e.kind.as_str())
                            && (old.is_empty() || e.old == old)
                            && (new.is_empty() || e.new == new)
                    })
                };
                for p in prev_pids.difference(&now_pids) {
                    assert!(
                        ev(&["merge", "retire", "withdraw"], p, ""),
                        "month {m}: {p} stopped without a merge, retire or withdraw event"
                    );
                }
                for q in now_pids.difference(&prev_pids) {
                    if !issued.contains(*q) {
                        assert!(
                            ev(&["new", "split"], "", q),
                            "month {m}: {q} appeared without a new or split event"
                        );
                    }
                }
                // Merges: a cluster holding members of several previous pseudonyms keeps one;
                // each other one that no longer names a cluster is merged into it.
                for (q, members) in &by_now {
                    let olds: BTreeSet<&String> = members.iter().map(|k| &prev[*k]).collect();
                    for p in olds {
                        if p != *q && !now_pids.contains(&p) {
                            assert!(ev(&["merge"], p, q), "month {m}: merge {p} -> {q} missing");
                        }
                    }
                }
                merged_events += events.iter().filter(|e| e.kind == "merge").count();
                split_events += events.iter().filter(|e| e.kind == "split").count();
            }
            issued.extend(now.values().cloned());
            if m == 1 {
                first = Some((now.clone(), released.clone()));
            }
            if m == MONTHS {
                // Release 1 joins release 12 through the researcher's crosswalk.
                let (map1, rel1) = first.clone().unwrap();
                let cw = r
                    .get_crosswalk(v1::GetCrosswalkRequest {
                        project: inc.to_owned(),
                        since_release: 1,
                        until_release: MONTHS as u64,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let mut heir: HashMap<&str, &str> = HashMap::new();
                let mut gone: HashSet<&str> = HashSet::new();
                for e in &cw.events {
                    match e.kind.as_str() {
                        "merge" => {
                            heir.insert(&e.old_pseudonym, &e.new_pseudonym);
                        }
                        "retire" | "withdraw" => {
                            gone.insert(&e.old_pseudonym);
                        }
                        _ => {}
                    }
                }
                let follow = |p: &str| -> String {
                    let mut cur = p.to_owned();
                    while let Some(n) = heir.get(cur.as_str()) {
                        cur = (*n).to_owned();
                    }
                    cur
                };
                let mut joined = 0;
                for p in &rel1 {
                    let to = follow(p);
                    if !gone.contains(to.as_str()) {
                        assert!(
                            released.contains(&to),
                            "release 1's {p} leads nowhere in release 12"
                        );
                        joined += 1;
                    }
                }
                // Records in both releases of persons never disturbed: the crosswalk gives
                // their release-12 pseudonym.
                let mut checked = 0;
                for (k, p1) in &map1 {
                    let (h, id) = k;
                    let Some(rec) = world.state[*h].get(id) else {
                        continue;
                    };
                    let Some(p12) = now.get(k) else { continue };
                    if world.disturbed.contains(&rec.person) {
                        continue;
                    }
                    assert_eq!(&follow(p1), p12, "record {k:?} of person {}", rec.person);
                    checked += 1;
                }
                assert!(checked >= 30, "only {checked} records checked");
                eprintln!(
                    "monthly scenario on {}: {} records in month 12, membership equal to the whole-file project for 100%; {kept} unchanged clusters kept their pseudonym; {merged_events} merge and {split_events} split events; release 1 -> 12: {joined} of {} pseudonyms joined, {checked} records followed",
                    url.split(':').next().unwrap(),
                    now.len(),
                    rel1.len()
                );
            }
            previous = Some(now);
        }
        assert!(
            merged_events > 0 && split_events > 0,
            "the scenario merges and splits"
        );
        // A full re-link of the batched project's month-12 state, forced: the same clusters
        // as month 12's incremental job, so every record keeps its pseudonym and the job
        // has no crosswalk event.
        let last = previous.unwrap();
        admin
            .start_job(v1::StartJobRequest {
                project: inc.to_owned(),
                full: true,
            })
            .await
            .unwrap();
        let j = wait_done(&mut admin, inc).await;
        assert_eq!(j.mode, "full");
        assert_eq!(
            mappings(&mut hs, inc).await,
            last,
            "full re-link of month 12"
        );
        let events = lu
            .store
            .crosswalk(inc, j.job_id - 1, j.job_id)
            .await
            .unwrap();
        assert!(events.is_empty(), "{} events", events.len());
        lu.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_resume_apply_once_and_a_token_upload_drops_them() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()).await {
        let pki = Pki::new();
        let lu = TestLu::start(&pki, &url).await;
        let pk = ResearcherKeyPair::derive(&[6u8; 32]).public_key();
        let mut admin = lu.client(&pki, Some(("admin", Role::Admin)));
        let mut a = lu.client(&pki, Some(("ehr", Role::DataHolder)));
        let mut b = lu.client(&pki, Some(("claims", Role::DataHolder)));
        let project = "resume";
        create(&mut admin, project, &["ehr", "claims"], &pk).await;
        let recs = |ids: std::ops::Range<u32>| -> Vec<(String, Rec)> {
            ids.map(|i| (format!("r{i}"), Rec::of(i))).collect()
        };
        let file = |v: &[(String, Rec)], party: &str| {
            let refs: Vec<(&String, &Rec)> = v.iter().map(|(i, r)| (i, r)).collect();
            token_file(project, party, &refs)
        };
        let base_a = recs(0..20);
        upload_kind(
            &mut a,
            project,
            v1::UploadKind::Tokens,
            &file(&base_a, "ehr"),
        )
        .await;
        upload_kind(
            &mut b,
            project,
            v1::UploadKind::Tokens,
            &file(&recs(0..20), "claims"),
        )
        .await;
        start_job(&mut admin, project).await;
        // A batch of 10 new records, sent in two streams (a connection cut after chunk 3).
        let batch = recs(20..30);
        let bytes = file(&batch, "ehr");
        let chunks = chunks_of(project, v1::UploadKind::TokenBatch, &bytes, 200);
        assert!(chunks.len() > 4);
        let s = a
            .upload(tokio_stream::iter(chunks[..3].to_vec()))
            .await
            .unwrap()
            .into_inner();
        assert!(!s.complete && s.batch_seq == 0, "{s:?}");
        let status = a
            .get_upload_status(v1::GetUploadStatusRequest {
                project: project.to_owned(),
                upload_id: s.upload_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status.stored_chunks, vec![0, 1, 2]);
        // Resumed with everything (the stored chunks are not stored again).
        let s = a
            .upload(tokio_stream::iter(chunks.clone()))
            .await
            .unwrap()
            .into_inner();
        assert!(s.complete, "{s:?}");
        assert_eq!(
            (s.batch_seq, s.records, s.chunks_stored_now),
            (1, 10, chunks.len() as u32 - 3)
        );
        // Sent again whole: nothing new, the same place.
        let again = a
            .upload(tokio_stream::iter(chunks.clone()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((again.batch_seq, again.chunks_stored_now), (1, 0));
        let j = start_job(&mut admin, project).await;
        assert_eq!(j.records, 20 + 20 + 10, "the batch counted once");
        let m = mapping(&mut a, project).await.unwrap();
        assert_eq!(m.len(), 30);
        // Deleting 5 records and an unknown id: 25 left.
        let del = encode_deletions(
            &header(project, "ehr", "2026-12-07"),
            ["r0", "r1", "r2", "r3", "r4", "nope"],
        );
        let s = upload_kind(&mut a, project, v1::UploadKind::Deletions, &del).await;
        assert_eq!((s.batch_seq, s.records), (2, 6));
        let j = start_job(&mut admin, project).await;
        assert_eq!(j.records, 25 + 20);
        let m2 = mapping(&mut a, project).await.unwrap();
        let ids: BTreeSet<&String> = m2.keys().collect();
        assert!(!ids.contains(&"r0".to_owned()) && ids.contains(&"r29".to_owned()));
        // Pseudonyms of the records that stayed are those of the previous job.
        for (id, p) in &m2 {
            assert_eq!(Some(p), m.get(id), "{id}");
        }
        // A batch made for another project is refused (and not kept).
        let other = token_file("elsewhere", "ehr", &[(&"x".to_owned(), &Rec::of(99))]);
        let e = a
            .upload(tokio_stream::iter(chunks_of(
                project,
                v1::UploadKind::TokenBatch,
                &other,
                700,
            )))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        // A token upload starts ehr's state afresh: the batches go.
        upload_kind(
            &mut a,
            project,
            v1::UploadKind::Tokens,
            &file(&recs(0..5), "ehr"),
        )
        .await;
        let j = start_job(&mut admin, project).await;
        assert_eq!(j.records, 5 + 20);
        let info = a
            .get_linkage_project(v1::GetLinkageProjectRequest {
                project: project.to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            info.uploads
                .iter()
                .all(|u| u.kind != v1::UploadKind::TokenBatch as i32
                    && u.kind != v1::UploadKind::Deletions as i32),
            "{:?}",
            info.uploads
        );
        lu.stop().await;
    }
}

/// A crash during an incremental job (SPEC.md §10.3.3 failure semantics): the job is left
/// RUNNING with nothing written — no result, no pseudonym, no crosswalk row, the previous job's
/// basis unchanged — and the restarted linkage unit runs it again from the store,
/// incrementally, with the clusters and pseudonyms a full re-link gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_incremental_job_runs_again_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()).await {
        let pki = Pki::new();
        let lu = TestLu::start(&pki, &url).await;
        let pk = ResearcherKeyPair::derive(&[7u8; 32]).public_key();
        let mut admin = lu.client(&pki, Some(("admin", Role::Admin)));
        let mut hs = [
            lu.client(&pki, Some(("ehr", Role::DataHolder))),
            lu.client(&pki, Some(("claims", Role::DataHolder))),
        ];
        let project = "crash";
        create(&mut admin, project, &["ehr", "claims"], &pk).await;
        let file = |v: &[(String, Rec)], party: &str| {
            let refs: Vec<(&String, &Rec)> = v.iter().map(|(i, r)| (i, r)).collect();
            token_file(project, party, &refs)
        };
        let recs = |prefix: &str, ids: std::ops::Range<u32>| -> Vec<(String, Rec)> {
            ids.map(|i| (format!("{prefix}{i}"), Rec::of(i))).collect()
        };
        for (h, party) in ["ehr", "claims"].iter().enumerate() {
            let base = file(&recs(party, 0..30), party);
            upload_kind(&mut hs[h], project, v1::UploadKind::Tokens, &base).await;
        }
        let first = start_job(&mut admin, project).await;
        let before = mappings(&mut hs, project).await;
        // ehr: a record of person 3 corrected into person 4's (a merge), two records deleted
        // (person 5 and 6 become one-holder clusters), a new record of a new person.
        let del = encode_deletions(&header(project, "ehr", "2026-12-07"), ["ehr5", "ehr6"]);
        upload_kind(&mut hs[0], project, v1::UploadKind::Deletions, &del).await;
        let batch = file(
            &[
                ("ehr3".to_owned(), Rec::of(4)),
                ("ehr99".to_owned(), Rec::of(99)),
            ],
            "ehr",
        );
        upload_kind(&mut hs[0], project, v1::UploadKind::TokenBatch, &batch).await;
        // The crash: the job is registered RUNNING and the process dies before its
        // transaction; that is all a crash mid-job leaves.
        let crashed = lu.store.start_job(project, 1).await.unwrap();
        assert_eq!(crashed.job_id, first.job_id + 1);
        assert_eq!(
            lu.store
                .latest_done_job(project)
                .await
                .unwrap()
                .unwrap()
                .job_id,
            first.job_id
        );
        assert!(
            lu.store
                .crosswalk(project, first.job_id, crashed.job_id)
                .await
                .unwrap()
                .is_empty()
        );
        // The restart: a new service on the same store resumes the job.
        let restarted = LinkageUnitService::new(
            lu.store.clone(),
            Arc::new(SystemClock),
            LuSettings {
                min_release_clusters: 0,
                ..LuSettings::default()
            },
        );
        assert_eq!(restarted.resume_jobs().await.unwrap(), 1);
        let j = wait_done(&mut admin, project).await;
        assert_eq!(j.job_id, crashed.job_id);
        assert!(j.mode.starts_with("incremental ("), "{}", j.mode);
        let after = mappings(&mut hs, project).await;
        assert_eq!(after.len(), before.len() - 2 + 1);
        let pid = |h: usize, id: &str| after[&(h, id.to_owned())].clone();
        assert_eq!(
            pid(0, "ehr3"),
            pid(1, "claims4"),
            "the correction joins person 4"
        );
        assert_ne!(pid(0, "ehr3"), pid(1, "claims3"), "and leaves person 3");
        // Clusters that lost a deleted record keep their pseudonym.
        for id in ["claims5", "claims6"] {
            assert_eq!(pid(1, id), before[&(1, id.to_owned())]);
        }
        // Untouched persons keep their pseudonyms.
        for i in 7..30 {
            assert_eq!(pid(0, &format!("ehr{i}")), before[&(0, format!("ehr{i}"))]);
        }
        // A full re-link of the same state: the same pseudonyms, no crosswalk event.
        admin
            .start_job(v1::StartJobRequest {
                project: project.to_owned(),
                full: true,
            })
            .await
            .unwrap();
        let f = wait_done(&mut admin, project).await;
        assert_eq!(f.mode, "full");
        assert_eq!(mappings(&mut hs, project).await, after);
        assert!(
            lu.store
                .crosswalk(project, f.job_id - 1, f.job_id)
                .await
                .unwrap()
                .is_empty()
        );
        lu.stop().await;
    }
}
