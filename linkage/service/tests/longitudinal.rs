//! Longitudinal linkage (issue 16, SPEC.md §10.5.1–§10.5.2) over loopback with real mutual
//! TLS, on SQLite and (with `RENKETSU_TEST_PG_URL`) PostgreSQL: three jobs over changed
//! uploads — records reordered and a new record; a record corrected so that two clusters
//! merge, a bridging record removed so that a cluster splits, an opt-out — with pseudonym
//! continuity, the crosswalk events, and a delta release applied to release 1 equal to the
//! whole release of the same job.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use renketsu_keys::content::{ContentOpener, ResearcherKeyPair};
use renketsu_linkage::token_file::{Counts, encode_header, encode_record, encode_trailer};
use renketsu_protocol::v1;
use renketsu_protocol::v1::linkage_unit_client::LinkageUnitClient;
use renketsu_rpc::pki::Role;
use tonic::transport::Channel;

mod support;
use support::*;

/// A token file for `party` of `project`: `(record id, person, recipes present)`.
fn token_file(project: &str, party: &str, records: &[(&str, &[(&str, usize)])]) -> Vec<u8> {
    let header = header(project, party, "2026-11-22");
    let mut out = Vec::new();
    encode_header(&mut out, &header);
    for (id, tokens) in records {
        let mut toks: Vec<(usize, [u8; 32])> =
            tokens.iter().map(|&(p, r)| (r, token(p, r))).collect();
        toks.sort();
        encode_record(&mut out, id, toks.iter().map(|(r, t)| (*r, t)), None);
    }
    encode_trailer(
        &mut out,
        &Counts {
            records: records.len() as u64,
            read: records.len() as u64,
            tokenized: records.len() as u64,
            encoding: "utf-8".to_owned(),
            ..Counts::default()
        },
    );
    out
}

/// What the researcher got: pseudonym → sorted opened values (`holder:value`) of every
/// member sent, and the delta's lists.
#[derive(Debug, Default)]
struct Fetched {
    release_id: u64,
    since_release: u64,
    clusters: BTreeMap<String, Vec<String>>,
    changed: BTreeSet<String>,
    withdrawn: Vec<String>,
    removed: Vec<String>,
    unchanged: u64,
    crosswalk: Vec<(u64, String, String, String)>,
}

async fn release(
    c: &mut LinkageUnitClient<Channel>,
    project: &str,
    researcher: &ResearcherKeyPair,
    since_release: u64,
) -> Result<Fetched, tonic::Status> {
    let mut s = c
        .fetch_release(v1::FetchReleaseRequest {
            project: project.to_owned(),
            since_release,
        })
        .await?
        .into_inner();
    let mut openers = HashMap::new();
    let mut holders = Vec::new();
    let mut out = Fetched::default();
    while let Some(chunk) = s.message().await? {
        if !chunk.holders.is_empty() {
            holders = chunk.holders.clone();
            out.release_id = chunk.release_id;
            out.since_release = chunk.since_release;
            out.withdrawn = chunk.withdrawn.clone();
            out.removed = chunk.removed.clone();
            out.unchanged = chunk.unchanged_clusters;
            out.crosswalk = chunk
                .crosswalk
                .iter()
                .map(|e| {
                    (
                        e.job_id,
                        e.kind.clone(),
                        e.old_pseudonym.clone(),
                        e.new_pseudonym.clone(),
                    )
                })
                .collect();
            for h in &chunk.headers {
                let idx = holders.iter().position(|x| x == &h.party).unwrap() as u32;
                openers.insert(
                    idx,
                    ContentOpener::new(researcher, &h.encapsulated_key, project, &h.party).unwrap(),
                );
            }
        }
        for cl in chunk.clusters {
            let mut values: Vec<String> = cl
                .records
                .iter()
                .map(|r| {
                    format!(
                        "{}:{}",
                        holders[r.holder as usize],
                        openers[&r.holder].open(&r.sealed).unwrap()[0]
                    )
                })
                .collect();
            values.sort();
            if cl.changed {
                out.changed.insert(cl.pseudonym.clone());
            }
            assert!(out.clusters.insert(cl.pseudonym, values).is_none());
        }
    }
    Ok(out)
}

/// The researcher's update: drop what the delta withdraws, removes or replaces, add what
/// it sends.
fn apply(
    earlier: &BTreeMap<String, Vec<String>>,
    delta: &Fetched,
) -> BTreeMap<String, Vec<String>> {
    let mut out = earlier.clone();
    for p in delta.withdrawn.iter().chain(&delta.removed) {
        assert!(out.remove(p).is_some(), "a dropped pseudonym was released");
    }
    for (p, v) in &delta.clusters {
        let was = out.insert(p.clone(), v.clone());
        assert_eq!(
            was.is_some(),
            delta.changed.contains(p),
            "changed iff known"
        );
    }
    out
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pseudonyms_persist_across_jobs_and_deltas_update_releases() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()).await {
        let pki = Pki::new();
        let lu = TestLu::start(&pki, &url).await;
        let researcher = ResearcherKeyPair::derive(&[9u8; 32]);
        let pk = researcher.public_key();
        let mut admin = lu.client(&pki, Some(("admin", Role::Admin)));
        let mut a = lu.client(&pki, Some(("holder-a", Role::DataHolder)));
        let mut b = lu.client(&pki, Some(("holder-b", Role::DataHolder)));
        let mut r = lu.client(&pki, Some(("researcher", Role::Researcher)));
        let project = "long";
        create(&mut admin, project, &["holder-a", "holder-b"], &pk).await;
        // Content: uploaded once, every record of every version (the same bytes throughout,
        // so a cluster whose members stay is sent unchanged).
        let ca = content_file(
            project,
            "holder-a",
            &pk,
            &[
                ("a1", "東京都"),
                ("a2", "大阪府"),
                ("a3", "京都府"),
                ("a4", "沖縄県"),
                ("a6", "北海道"),
                ("a7", "青森県"),
                ("a8", "岩手県"),
            ],
        );
        let cb = content_file(
            project,
            "holder-b",
            &pk,
            &[
                ("b1", "東京都"),
                ("b2", "兵庫県"),
                ("b3", "京都府"),
                ("b4", "沖縄県"),
                ("b5", "福岡県"),
                ("b6", "宮城県"),
            ],
        );
        assert!(
            upload(&mut a, project, v1::UploadKind::Content, &ca)
                .await
                .complete
        );
        assert!(
            upload(&mut b, project, v1::UploadKind::Content, &cb)
                .await
                .complete
        );

        // Job 1. alice {a1, b1}, bob {a2, b2}, carol {a3}, dave {a4, b4}, ivy {b5}, and
        // gina+hank {a6, b6, a7, a8}: b6 carries gina's and hank's tokens (a wrong record).
        let a_recs: Vec<(&str, &[(&str, usize)])> = vec![
            ("a1", &[("alice", 0), ("alice", 1)]),
            ("a2", &[("bob", 0)]),
            ("a3", &[("carol", 0)]),
            ("a4", &[("dave", 0)]),
            ("a6", &[("gina", 0)]),
            ("a7", &[("hank", 1)]),
            ("a8", &[("hank", 1)]),
        ];
        let b1: Vec<(&str, &[(&str, usize)])> = vec![
            ("b1", &[("alice", 0)]),
            ("b2", &[("bob", 0)]),
            ("b4", &[("dave", 0)]),
            ("b5", &[("ivy", 0)]),
            ("b6", &[("gina", 0), ("hank", 1)]),
        ];
        upload(
            &mut a,
            project,
            v1::UploadKind::Tokens,
            &token_file(project, "holder-a", &a_recs),
        )
        .await;
        upload(
            &mut b,
            project,
            v1::UploadKind::Tokens,
            &token_file(project, "holder-b", &b1),
        )
        .await;
        let j1 = start_job(&mut admin, project).await;
        assert_eq!((j1.job_id, j1.clusters), (1, 6));
        let (ma1, mb1) = (
            mapping(&mut a, project).await.unwrap(),
            mapping(&mut b, project).await.unwrap(),
        );
        let alice = ma1["a1"].clone();
        let bob = ma1["a2"].clone();
        let carol = ma1["a3"].clone();
        let dave = ma1["a4"].clone();
        let ivy = mb1["b5"].clone();
        let gh = ma1["a6"].clone();
        assert_eq!(
            [
                &mb1["b1"], &mb1["b2"], &mb1["b4"], &mb1["b6"], &ma1["a7"], &ma1["a8"]
            ],
            [&alice, &bob, &dave, &gh, &gh, &gh]
        );
        let cw1 = lu.store.crosswalk(project, 0, 1).await.unwrap();
        assert_eq!(cw1.len(), 6);
        assert!(cw1.iter().all(|e| e.kind == "new" && e.old.is_empty()));
        let rel1 = release(&mut r, project, &researcher, 0).await.unwrap();
        assert_eq!((rel1.release_id, rel1.clusters.len()), (1, 6));

        // Job 2: both holders upload again, records in another order; holder-b adds b3, a
        // typo of carol's record (another token): a new person.
        let mut a2 = a_recs.clone();
        a2.reverse();
        let b2: Vec<(&str, &[(&str, usize)])> = vec![
            ("b6", &[("gina", 0), ("hank", 1)]),
            ("b5", &[("ivy", 0)]),
            ("b4", &[("dave", 0)]),
            ("b3", &[("karol", 0)]),
            ("b2", &[("bob", 0)]),
            ("b1", &[("alice", 0)]),
        ];
        upload(
            &mut a,
            project,
            v1::UploadKind::Tokens,
            &token_file(project, "holder-a", &a2),
        )
        .await;
        upload(
            &mut b,
            project,
            v1::UploadKind::Tokens,
            &token_file(project, "holder-b", &b2),
        )
        .await;
        let j2 = start_job(&mut admin, project).await;
        assert_eq!((j2.job_id, j2.clusters), (2, 7));
        let (ma2, mb2) = (
            mapping(&mut a, project).await.unwrap(),
            mapping(&mut b, project).await.unwrap(),
        );
        for (id, pid) in ma1.iter().chain(&mb1) {
            let now = ma2.get(id).or_else(|| mb2.get(id)).unwrap();
            assert_eq!(now, pid, "reordering changes no pseudonym ({id})");
        }
        let karol = mb2["b3"].clone();
        let cw2 = lu.store.crosswalk(project, 1, 2).await.unwrap();
        assert_eq!(
            cw2.iter()
                .map(|e| (e.kind.as_str(), e.old.as_str(), e.new.as_str()))
                .collect::<Vec<_>>(),
            [("new", "", karol.as_str())]
        );

        // Job 3: b3 corrected (carol's token: carol's and karol's clusters merge, the older
        // pseudonym survives); b6 deleted (gina+hank splits: hank's two records keep the
        // pseudonym, gina gets a new one); dave opts out at holder-a (the opt-out starts
        // the job); zoe, new at holder-b, opts out before any release.
        let b3: Vec<(&str, &[(&str, usize)])> = vec![
            ("b1", &[("alice", 0)]),
            ("b2", &[("bob", 0)]),
            ("b3", &[("carol", 0)]),
            ("b4", &[("dave", 0)]),
            ("b5", &[("ivy", 0)]),
            ("b7", &[("zoe", 0)]),
        ];
        upload(
            &mut b,
            project,
            v1::UploadKind::Tokens,
            &token_file(project, "holder-b", &b3),
        )
        .await;
        let oo = token_file(
            project,
            "holder-a",
            &[("oo-1", &[("dave", 0)]), ("oo-2", &[("zoe", 0)])],
        );
        assert!(
            upload(&mut a, project, v1::UploadKind::OptOut, &oo)
                .await
                .complete
        );
        let j3 = wait_done(&mut admin, project).await;
        assert_eq!((j3.job_id, j3.clusters, j3.excluded_clusters), (3, 8, 2));
        let (ma3, mb3) = (
            mapping(&mut a, project).await.unwrap(),
            mapping(&mut b, project).await.unwrap(),
        );
        assert_eq!([&ma3["a1"], &mb3["b1"]], [&alice, &alice]);
        assert_eq!([&ma3["a2"], &mb3["b2"]], [&bob, &bob]);
        assert_eq!(
            [&ma3["a3"], &mb3["b3"]],
            [&carol, &carol],
            "the older survives"
        );
        assert_eq!(
            [&ma3["a7"], &ma3["a8"]],
            [&gh, &gh],
            "the majority keeps it"
        );
        assert_eq!(mb3["b5"], ivy);
        let gina = ma3["a6"].clone();
        assert!(![&alice, &bob, &carol, &dave, &ivy, &gh, &karol].contains(&&gina));
        assert!(
            !ma3.contains_key("a4") && !mb3.contains_key("b4"),
            "withdrawn"
        );
        assert!(!mb3.contains_key("b7"), "withdrawn");
        let cw3 = lu.store.crosswalk(project, 2, 3).await.unwrap();
        let events: BTreeSet<(&str, &str, &str)> = cw3
            .iter()
            .map(|e| (e.kind.as_str(), e.old.as_str(), e.new.as_str()))
            .collect();
        // zoe's cluster: born and withdrawn in job 3, its pseudonym in no mapping.
        let zoe = cw3
            .iter()
            .find(|e| e.kind == "new")
            .map(|e| e.new.clone())
            .unwrap();
        assert_eq!(cw3.len(), 5);
        assert_eq!(
            events,
            [
                ("new", "", zoe.as_str()),
                ("merge", karol.as_str(), carol.as_str()),
                ("split", gh.as_str(), gina.as_str()),
                ("withdraw", dave.as_str(), ""),
                ("withdraw", zoe.as_str(), ""),
            ]
            .into_iter()
            .collect()
        );

        // Release 2, a delta against release 1; applied to release 1 it is release 3 (the
        // same job, whole).
        let delta = release(&mut r, project, &researcher, 1).await.unwrap();
        assert_eq!((delta.release_id, delta.since_release), (2, 1));
        assert_eq!(delta.withdrawn, std::slice::from_ref(&dave));
        assert!(delta.removed.is_empty(), "{:?}", delta.removed);
        assert_eq!(delta.unchanged, 3, "alice, bob and ivy are not sent again");
        assert_eq!(
            delta.changed,
            [carol.clone(), gh.clone()]
                .into_iter()
                .collect::<BTreeSet<_>>()
        );
        assert_eq!(delta.clusters.keys().collect::<Vec<_>>(), {
            let mut v = vec![&carol, &gh, &gina];
            v.sort();
            v
        });
        assert_eq!(
            delta
                .crosswalk
                .iter()
                .map(|e| (e.0, e.1.as_str()))
                .collect::<Vec<_>>(),
            [(3, "merge"), (3, "split"), (3, "withdraw")],
            "karol's birth and zoe's birth and withdrawal name no released pseudonym: not shown"
        );
        assert_eq!(delta.crosswalk[2].2, dave);
        // The same events from GetCrosswalk, between releases 1 and 2.
        let cw = r
            .get_crosswalk(v1::GetCrosswalkRequest {
                project: project.to_owned(),
                since_release: 1,
                until_release: 2,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((cw.since_job, cw.until_job), (1, 3));
        assert_eq!(
            cw.events
                .iter()
                .map(|e| (
                    e.job_id,
                    e.kind.clone(),
                    e.old_pseudonym.clone(),
                    e.new_pseudonym.clone()
                ))
                .collect::<Vec<_>>(),
            delta.crosswalk
        );
        let whole = release(&mut r, project, &researcher, 0).await.unwrap();
        assert_eq!(whole.release_id, 3);
        assert_eq!(apply(&rel1.clusters, &delta), whole.clusters);
        assert_eq!(
            whole.clusters[&carol],
            ["holder-a:京都府", "holder-b:京都府"]
        );
        assert_eq!(whole.clusters[&gh], ["holder-a:岩手県", "holder-a:青森県"]);
        assert_eq!(whole.clusters[&gina], ["holder-a:北海道"]);
        // Against release 2 (same job): nothing new, nothing gone.
        let none = release(&mut r, project, &researcher, 2).await.unwrap();
        assert!(none.clusters.is_empty() && none.withdrawn.is_empty() && none.crosswalk.is_empty());
        assert_eq!(none.unchanged, 6);
        // No such release.
        assert_eq!(
            release(&mut r, project, &researcher, 99)
                .await
                .unwrap_err()
                .code(),
            tonic::Code::NotFound
        );
        lu.stop().await;
    }
}
