//! The linkage unit over loopback with real mutual TLS, on SQLite and (when
//! `RENKETSU_TEST_PG_URL` is set, as `scripts/test.sh` does) on PostgreSQL:
//!
//! - the authorization matrix: every RPC × every kind of caller;
//! - uploads: resumable, idempotent (a retried chunk is stored once), conflicting bytes refused;
//! - the whole flow: job, mappings, release of content sealed to the researcher, traceback,
//!   opt-out (excluded from later mappings and releases; earlier releases named in the audit
//!   log), pseudonyms unlinkable across projects;
//! - separation: the database holds no plaintext content.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use renketsu_keys::content::{ContentOpener, ResearcherKeyPair};
use renketsu_linkage::token_file::{Counts, encode_header, encode_record, encode_trailer};
use renketsu_linkage_unit::auth::Rpc;
use renketsu_linkage_unit::service::LuSettings;
use renketsu_protocol::v1;
use renketsu_protocol::v1::linkage_unit_client::LinkageUnitClient;
use renketsu_rpc::pki::Role;
use sha2::{Digest as _, Sha256};
use tonic::Code;
use tonic::transport::Channel;

mod support;
use support::*;

/// A token file for `party` of `project`: `(record id, person, recipes present)`.
fn token_file(project: &str, party: &str, records: &[(&str, &str, &[usize])]) -> Vec<u8> {
    let header = header(project, party, "2026-11-22");
    let mut out = Vec::new();
    encode_header(&mut out, &header);
    for (id, person, recipes) in records {
        let toks: Vec<(usize, [u8; 32])> = recipes.iter().map(|&r| (r, token(person, r))).collect();
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

/// The researcher's view: pseudonym → sorted opened values of every member.
async fn release(
    c: &mut LinkageUnitClient<Channel>,
    project: &str,
    researcher: &ResearcherKeyPair,
) -> Result<(u64, BTreeMap<String, Vec<String>>), tonic::Status> {
    let mut s = c
        .fetch_release(v1::FetchReleaseRequest {
            project: project.to_owned(),
            since_release: 0,
        })
        .await?
        .into_inner();
    let mut openers = HashMap::new();
    let mut holders = Vec::new();
    let mut out = BTreeMap::new();
    let mut release_id = 0;
    while let Some(chunk) = s.message().await? {
        if !chunk.holders.is_empty() {
            holders = chunk.holders.clone();
            release_id = chunk.release_id;
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
            out.insert(cl.pseudonym, values);
        }
    }
    Ok((release_id, out))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Admin,
    Auditor,
    LinkageUnit,
    Holder,
    OtherHolder,
    Researcher,
    OtherResearcher,
    NoCertificate,
}

const CALLERS: [Caller; 8] = [
    Caller::Admin,
    Caller::Auditor,
    Caller::LinkageUnit,
    Caller::Holder,
    Caller::OtherHolder,
    Caller::Researcher,
    Caller::OtherResearcher,
    Caller::NoCertificate,
];

impl Caller {
    fn identity(self) -> Option<(&'static str, Role)> {
        match self {
            Caller::Admin => Some(("admin", Role::Admin)),
            Caller::Auditor => Some(("auditor", Role::Auditor)),
            Caller::LinkageUnit => Some(("linkage-unit", Role::LinkageUnit)),
            Caller::Holder => Some(("holder-a", Role::DataHolder)),
            Caller::OtherHolder => Some(("holder-z", Role::DataHolder)),
            Caller::Researcher => Some(("researcher", Role::Researcher)),
            Caller::OtherResearcher => Some(("researcher-2", Role::Researcher)),
            Caller::NoCertificate => None,
        }
    }

    /// The policy, written out independently of the implementation.
    fn allowed(self, rpc: Rpc) -> bool {
        match rpc {
            Rpc::CreateLinkageProject
            | Rpc::ListLinkageProjects
            | Rpc::DeleteLinkageProject
            | Rpc::StartJob
            | Rpc::GetJob
            | Rpc::CancelJob
            | Rpc::GetQualityReport
            | Rpc::RekeyTokens => self == Caller::Admin,
            Rpc::GetLinkageProject => matches!(self, Caller::Holder | Caller::Researcher),
            Rpc::Upload | Rpc::GetUploadStatus | Rpc::FetchMapping | Rpc::Traceback => {
                self == Caller::Holder
            }
            Rpc::FetchRelease | Rpc::GetCrosswalk => self == Caller::Researcher,
            Rpc::ReadLinkageAuditLog => self == Caller::Auditor,
        }
    }
}

/// One call of `rpc` on project "m" (or a fresh name for create/delete); its status.
async fn call(
    c: &mut LinkageUnitClient<Channel>,
    rpc: Rpc,
    cell: usize,
    pk: &[u8; 32],
) -> Result<(), tonic::Status> {
    let p = "m".to_owned();
    match rpc {
        Rpc::CreateLinkageProject => c
            .create_linkage_project(v1::CreateLinkageProjectRequest {
                project: format!("new-{cell}"),
                holders: vec!["holder-a".into(), "holder-b".into()],
                researcher: "researcher".into(),
                researcher_public_key: pk.to_vec(),
                schema_toml: SCHEMA.as_bytes().to_vec(),
                duplicates: vec![],
            })
            .await
            .map(|_| ()),
        Rpc::ListLinkageProjects => c
            .list_linkage_projects(v1::ListLinkageProjectsRequest {})
            .await
            .map(|_| ()),
        Rpc::DeleteLinkageProject => c
            .delete_linkage_project(v1::DeleteLinkageProjectRequest {
                project: format!("del-{cell}"),
            })
            .await
            .map(|_| ()),
        Rpc::StartJob => c
            .start_job(v1::StartJobRequest {
                project: p,
                ..Default::default()
            })
            .await
            .map(|_| ()),
        Rpc::GetJob => c
            .get_job(v1::GetJobRequest {
                project: p,
                job_id: 0,
            })
            .await
            .map(|_| ()),
        Rpc::CancelJob => c
            .cancel_job(v1::CancelJobRequest {
                project: p,
                job_id: 0,
            })
            .await
            .map(|_| ()),
        Rpc::GetQualityReport => c
            .get_quality_report(v1::GetQualityReportRequest {
                project: p,
                job_id: 0,
            })
            .await
            .map(|_| ()),
        Rpc::RekeyTokens => c
            .rekey_tokens(v1::RekeyTokensRequest {
                project: p,
                recipe: "kana_name_dob_sex/v2".into(),
                to_epoch: 2,
            })
            .await
            .map(|_| ()),
        Rpc::GetLinkageProject => c
            .get_linkage_project(v1::GetLinkageProjectRequest { project: p })
            .await
            .map(|_| ()),
        Rpc::Upload => {
            let bytes = token_file("m", "holder-a", &[("1", "p1", &[0])]);
            c.upload(tokio_stream::iter(chunks_of(
                "m",
                v1::UploadKind::Tokens,
                &bytes,
                1 << 20,
            )))
            .await
            .map(|_| ())
        }
        Rpc::GetUploadStatus => c
            .get_upload_status(v1::GetUploadStatusRequest {
                project: p,
                upload_id: "0".repeat(64),
            })
            .await
            .map(|_| ()),
        Rpc::FetchMapping => c
            .fetch_mapping(v1::FetchMappingRequest { project: p })
            .await
            .map(|_| ()),
        Rpc::Traceback => c
            .traceback(v1::TracebackRequest {
                project: p,
                pseudonym: "0".repeat(32),
            })
            .await
            .map(|_| ()),
        Rpc::FetchRelease => c
            .fetch_release(v1::FetchReleaseRequest {
                project: p,
                since_release: 0,
            })
            .await
            .map(|_| ()),
        Rpc::GetCrosswalk => c
            .get_crosswalk(v1::GetCrosswalkRequest {
                project: p,
                since_release: 0,
                until_release: 0,
            })
            .await
            .map(|_| ()),
        Rpc::ReadLinkageAuditLog => c
            .read_linkage_audit_log(v1::ReadAuditLogRequest {
                from_sequence: 0,
                limit: 0,
            })
            .await
            .map(|_| ()),
    }
}

/// The matrix on every backend ([`backends`]: SQLite, and PostgreSQL when configured).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_matrix_every_rpc_and_caller() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()).await {
        authorization_matrix_on(&url).await;
    }
}

async fn authorization_matrix_on(url: &str) {
    let pki = Pki::new();
    let lu = TestLu::start(&pki, url).await;
    let pk = ResearcherKeyPair::derive(&[3u8; 32]).public_key();
    let mut admin = lu.client(&pki, Some(("admin", Role::Admin)));
    create(&mut admin, "m", &["holder-a", "holder-b"], &pk).await;
    for i in 0..(Rpc::ALL.len() * CALLERS.len()) {
        create(
            &mut admin,
            &format!("del-{i}"),
            &["holder-a", "holder-b"],
            &pk,
        )
        .await;
    }
    let before = lu.store.audit_read(1, u32::MAX).await.unwrap().len();
    let mut reached = 0;
    let mut cell = 0;
    for rpc in Rpc::ALL {
        for caller in CALLERS {
            cell += 1;
            let mut c = lu.client(&pki, caller.identity());
            let r = call(&mut c, rpc, cell, &pk).await;
            match (caller.allowed(rpc), &r) {
                (true, Ok(())) => reached += 1,
                (true, Err(s)) => {
                    assert!(
                        !matches!(
                            s.code(),
                            Code::PermissionDenied
                                | Code::Unauthenticated
                                | Code::Unavailable
                                | Code::Unknown
                        ),
                        "{rpc} as {caller:?} must be allowed, got {s:?}"
                    );
                    reached += 1;
                }
                (false, Ok(())) => panic!("{rpc} as {caller:?} must be refused"),
                (false, Err(s)) if caller == Caller::NoCertificate => {
                    assert!(
                        matches!(
                            s.code(),
                            Code::Unavailable | Code::Unknown | Code::Cancelled
                        ),
                        "no certificate: refused by TLS, got {s:?}"
                    );
                }
                (false, Err(s)) => {
                    assert_eq!(
                        s.code(),
                        Code::PermissionDenied,
                        "{rpc} as {caller:?}: {s:?}"
                    );
                    reached += 1;
                }
            }
        }
    }
    // Every call that reached the service is audited once, with its status.
    let entries = lu.store.audit_read(1, u32::MAX).await.unwrap();
    assert_eq!(entries.len() - before, reached);
    let head = entries.last().unwrap().head();
    renketsu_keys::audit::verify(&entries, Some(&head)).unwrap();
    assert!(
        entries[before..]
            .iter()
            .any(|e| e.event.status_code == Code::PermissionDenied as u32)
    );
    lu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_resume_and_store_each_chunk_once() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()).await {
        let pki = Pki::new();
        let lu = TestLu::start(&pki, &url).await;
        let pk = ResearcherKeyPair::derive(&[3u8; 32]).public_key();
        let mut admin = lu.client(&pki, Some(("admin", Role::Admin)));
        create(&mut admin, "u", &["holder-a", "holder-b"], &pk).await;
        let mut a = lu.client(&pki, Some(("holder-a", Role::DataHolder)));
        let records: Vec<(String, String)> = (0..300)
            .map(|i| (i.to_string(), format!("person-{i}")))
            .collect();
        let recs: Vec<(&str, &str, &[usize])> = records
            .iter()
            .map(|(i, p)| (i.as_str(), p.as_str(), &[0usize, 2][..]))
            .collect();
        let bytes = token_file("u", "holder-a", &recs);
        let chunks = chunks_of("u", v1::UploadKind::Tokens, &bytes, 4096);
        let n = chunks.len();
        assert!(n >= 5, "{n} chunks");
        // A first attempt that stops early (a crash): chunks 0, 2, 3.
        let partial = vec![chunks[0].clone(), chunks[2].clone(), chunks[3].clone()];
        let s = a
            .upload(tokio_stream::iter(partial))
            .await
            .unwrap()
            .into_inner();
        assert!(!s.complete);
        assert_eq!(s.stored_chunks, vec![0, 2, 3]);
        let st = a
            .get_upload_status(v1::GetUploadStatusRequest {
                project: "u".into(),
                upload_id: s.upload_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(st.stored_chunks, vec![0, 2, 3]);
        // Retry sends everything, some chunks twice: each is stored once.
        let mut again = chunks.clone();
        again.push(chunks[2].clone());
        let s = a
            .upload(tokio_stream::iter(again))
            .await
            .unwrap()
            .into_inner();
        assert!(s.complete, "{s:?}");
        assert_eq!(s.chunks_stored_now as usize, n - 3);
        assert_eq!(s.records, 300);
        assert_eq!(s.stored_chunks.len(), n);
        // Same index, other bytes: refused, nothing replaced. (A completed upload ignores
        // further chunks, so this uses a fresh, incomplete one.)
        let fresh = token_file("u", "holder-a", &recs[..200]);
        let fc = chunks_of("u", v1::UploadKind::Tokens, &fresh, 4096);
        a.upload(tokio_stream::iter(vec![fc[0].clone()]))
            .await
            .unwrap();
        let mut conflict = fc[0].clone();
        conflict.data[10] ^= 1;
        conflict.sha256 = Sha256::digest(&conflict.data).to_vec();
        let e = a
            .upload(tokio_stream::iter(vec![conflict]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Aborted, "{e:?}");
        // A chunk whose digest does not match its data.
        let mut wrong = fc[1].clone();
        wrong.sha256 = vec![0; 32];
        assert_eq!(
            a.upload(tokio_stream::iter(vec![wrong]))
                .await
                .unwrap_err()
                .code(),
            Code::InvalidArgument
        );
        // Another holder's file uploaded by holder-a is refused when complete.
        let b_file = token_file("u", "holder-b", &recs[..10]);
        let e = a
            .upload(tokio_stream::iter(chunks_of(
                "u",
                v1::UploadKind::Tokens,
                &b_file,
                1 << 20,
            )))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("holder-b"), "{e:?}");
        lu.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_mapping_release_traceback_and_opt_out() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()).await {
        let pki = Pki::new();
        let lu = TestLu::start(&pki, &url).await;
        let researcher = ResearcherKeyPair::derive(&[7u8; 32]);
        let pk = researcher.public_key();
        let mut admin = lu.client(&pki, Some(("admin", Role::Admin)));
        let mut a = lu.client(&pki, Some(("holder-a", Role::DataHolder)));
        let mut b = lu.client(&pki, Some(("holder-b", Role::DataHolder)));
        let mut c = lu.client(&pki, Some(("holder-c", Role::DataHolder)));
        let mut r = lu.client(&pki, Some(("researcher", Role::Researcher)));
        for project in ["p", "q"] {
            create(
                &mut admin,
                project,
                &["holder-a", "holder-b", "holder-c"],
                &pk,
            )
            .await;
            // Persons: alice in a, b, c; bob in a and b (b holds him twice: a duplicate);
            // carol in a only; dave in b and c, linked only through recipe 3.
            let fa = token_file(
                project,
                "holder-a",
                &[
                    ("a1", "alice", &[0, 1]),
                    ("a2", "bob", &[0]),
                    ("a3", "carol", &[0, 1, 2]),
                ],
            );
            let fb = token_file(
                project,
                "holder-b",
                &[
                    ("b1", "bob", &[0, 1]),
                    ("b2", "alice", &[1, 2]),
                    ("b3", "bob", &[0]),
                    ("b4", "dave", &[3]),
                ],
            );
            let fc = token_file(
                project,
                "holder-c",
                &[("c1", "dave", &[3]), ("c2", "alice", &[1])],
            );
            for (cl, f, party, rows) in [
                (
                    &mut a,
                    fa,
                    "holder-a",
                    vec![("a1", "東京都"), ("a2", "大阪府"), ("a3", "京都府")],
                ),
                (
                    &mut b,
                    fb,
                    "holder-b",
                    vec![
                        ("b1", "大阪府"),
                        ("b2", "東京都"),
                        ("b3", "兵庫県"),
                        ("b4", "沖縄県"),
                    ],
                ),
                (
                    &mut c,
                    fc,
                    "holder-c",
                    vec![("c1", "沖縄県"), ("c2", "神奈川県")],
                ),
            ] {
                assert!(
                    upload(cl, project, v1::UploadKind::Tokens, &f)
                        .await
                        .complete
                );
                let cf = content_file(project, party, &pk, &rows);
                assert!(
                    upload(cl, project, v1::UploadKind::Content, &cf)
                        .await
                        .complete
                );
            }
        }
        // Not before a job.
        assert_eq!(
            mapping(&mut a, "p").await.unwrap_err().code(),
            Code::FailedPrecondition
        );
        admin
            .start_job(v1::StartJobRequest {
                project: "p".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let job = wait_done(&mut admin, "p").await;
        assert_eq!(
            (job.records, job.clusters, job.excluded_clusters),
            (9, 4, 0)
        );
        // alice: a1,b2,c2 (3 pairs); bob: a2,b1,b3 (2 cross pairs a-b); dave: b4,c1 (1).
        assert_eq!(job.links, 3 + 2 + 1);
        let (ma, mb, mc) = (
            mapping(&mut a, "p").await.unwrap(),
            mapping(&mut b, "p").await.unwrap(),
            mapping(&mut c, "p").await.unwrap(),
        );
        assert_eq!(ma.keys().collect::<Vec<_>>(), ["a1", "a2", "a3"]);
        assert_eq!(ma["a1"], mb["b2"]);
        assert_eq!(ma["a1"], mc["c2"]);
        assert_eq!(ma["a2"], mb["b1"]);
        assert_eq!(mb["b1"], mb["b3"]);
        assert_eq!(mb["b4"], mc["c1"]);
        assert_ne!(ma["a3"], ma["a1"]);
        // A holder gets only its own mapping; an outsider and the researcher none.
        let mut z = lu.client(&pki, Some(("holder-z", Role::DataHolder)));
        assert_eq!(
            mapping(&mut z, "p").await.unwrap_err().code(),
            Code::PermissionDenied
        );
        assert_eq!(
            mapping(&mut r, "p").await.unwrap_err().code(),
            Code::PermissionDenied
        );
        // Pseudonyms are unlinkable across projects: same data in q, no pseudonym in common.
        admin
            .start_job(v1::StartJobRequest {
                project: "q".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        wait_done(&mut admin, "q").await;
        let qa = mapping(&mut a, "q").await.unwrap();
        let pset: BTreeSet<_> = ma.values().collect();
        assert!(qa.values().all(|pid| !pset.contains(pid)));

        // The release: content opened by the researcher, joined by pseudonym.
        let (rel1, view) = release(&mut r, "p", &researcher).await.unwrap();
        assert_eq!(rel1, 1);
        assert_eq!(view.len(), 4);
        assert_eq!(
            view[&ma["a1"]],
            ["holder-a:東京都", "holder-b:東京都", "holder-c:神奈川県"]
        );
        assert_eq!(
            view[&ma["a2"]],
            ["holder-a:大阪府", "holder-b:兵庫県", "holder-b:大阪府"]
        );
        // Another researcher certificate gets nothing.
        let mut r2 = lu.client(&pki, Some(("researcher-2", Role::Researcher)));
        assert_eq!(
            release(&mut r2, "p", &researcher).await.unwrap_err().code(),
            Code::PermissionDenied
        );

        // Traceback: each holder sees only its own records behind a pseudonym.
        let tb = |cl: &mut LinkageUnitClient<Channel>, pid: &str| {
            let pid = pid.to_owned();
            let mut cl = cl.clone();
            async move {
                cl.traceback(v1::TracebackRequest {
                    project: "p".into(),
                    pseudonym: pid,
                })
                .await
                .map(|r| r.into_inner().record_ids)
            }
        };
        assert_eq!(tb(&mut b, &ma["a2"]).await.unwrap(), ["b1", "b3"]);
        assert_eq!(tb(&mut a, &ma["a2"]).await.unwrap(), ["a2"]);
        assert_eq!(tb(&mut c, &ma["a2"]).await.unwrap(), Vec::<String>::new());
        assert_eq!(
            tb(&mut z, &ma["a2"]).await.unwrap_err().code(),
            Code::PermissionDenied
        );

        // Opt-out: bob (known to holder-a) opts out after release 1.
        let oo = token_file("p", "holder-a", &[("optout-1", "bob", &[0])]);
        assert!(
            upload(&mut a, "p", v1::UploadKind::OptOut, &oo)
                .await
                .complete
        );
        // Until the re-run is done, nothing is handed out from the stale job.
        let j2 = wait_done(&mut admin, "p").await;
        assert!(j2.job_id >= 2, "{j2:?}");
        assert_eq!(j2.excluded_clusters, 1);
        assert_eq!(j2.links, 3 + 1);
        let ma2 = mapping(&mut a, "p").await.unwrap();
        let mb2 = mapping(&mut b, "p").await.unwrap();
        assert!(!ma2.contains_key("a2"));
        assert!(!mb2.contains_key("b1") && !mb2.contains_key("b3"));
        assert_eq!(
            ma2["a1"], ma["a1"],
            "other pseudonyms are stable across jobs"
        );
        let (rel2, view2) = release(&mut r, "p", &researcher).await.unwrap();
        assert_eq!(rel2, 2);
        assert_eq!(view2.len(), 3);
        assert!(!view2.contains_key(&ma["a2"]));
        // The audit log names release 1 as containing the excluded cluster.
        let entries = lu.store.audit_read(1, u32::MAX).await.unwrap();
        let optout: Vec<_> = entries
            .iter()
            .filter(|e| e.event.rpc.ends_with("OptOutExclusion"))
            .collect();
        assert_eq!(optout.len(), 1, "{optout:?}");
        assert!(
            optout[0].event.recipe.contains("release 1"),
            "{:?}",
            optout[0].event
        );
        assert!(
            entries
                .iter()
                .any(|e| e.event.rpc.ends_with("Traceback") && e.event.actor_party == "holder-b")
        );
        lu.stop().await;

        // Separation: the SQLite files hold no plaintext content and no record of the
        // researcher's private key.
        if url.starts_with("sqlite") {
            let mut bytes = Vec::new();
            for f in std::fs::read_dir(dir.path()).unwrap() {
                let f = f.unwrap().path();
                if f.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with("lu.db")
                {
                    bytes.extend(std::fs::read(&f).unwrap());
                }
            }
            assert!(bytes.len() > 10_000);
            for needle in ["東京都", "大阪府", "沖縄県", "神奈川県"] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "{needle} in the database"
                );
            }
            let sk = researcher.secret_bytes();
            assert!(!bytes.windows(32).any(|w| w == sk.as_slice()));
        }
    }
}

/// Minimum release size (issue 17 item 6): with the default settings, a job of fewer than 10
/// clusters gets no mapping and no release; one of 10 gets both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_projects_get_no_mapping_or_release() {
    let dir = tempfile::tempdir().unwrap();
    let url = backends(dir.path()).await.remove(0);
    let pki = Pki::new();
    let lu = TestLu::start_with(&pki, &url, LuSettings::default()).await;
    let researcher = ResearcherKeyPair::derive(&[7u8; 32]);
    let pk = researcher.public_key();
    let mut admin = lu.client(&pki, Some(("admin", Role::Admin)));
    let mut a = lu.client(&pki, Some(("holder-a", Role::DataHolder)));
    let mut b = lu.client(&pki, Some(("holder-b", Role::DataHolder)));
    let mut r = lu.client(&pki, Some(("researcher", Role::Researcher)));
    let persons: Vec<String> = (0..10).map(|i| format!("person{i}")).collect();
    // "small": 9 persons (9 clusters); "enough": 10.
    for (project, n) in [("small", 9usize), ("enough", 10)] {
        create(&mut admin, project, &["holder-a", "holder-b"], &pk).await;
        for (cl, party) in [(&mut a, "holder-a"), (&mut b, "holder-b")] {
            let ids: Vec<String> = (0..n).map(|i| format!("{party}-{i}")).collect();
            let recs: Vec<(&str, &str, &[usize])> = (0..n)
                .map(|i| (ids[i].as_str(), persons[i].as_str(), &[0usize][..]))
                .collect();
            let f = token_file(project, party, &recs);
            assert!(
                upload(cl, project, v1::UploadKind::Tokens, &f)
                    .await
                    .complete
            );
            let rows: Vec<(&str, &str)> = ids.iter().map(|i| (i.as_str(), "東京都")).collect();
            let cf = content_file(project, party, &pk, &rows);
            assert!(
                upload(cl, project, v1::UploadKind::Content, &cf)
                    .await
                    .complete
            );
        }
        admin
            .start_job(v1::StartJobRequest {
                project: project.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let job = wait_done(&mut admin, project).await;
        assert_eq!(job.clusters, n as u64);
    }
    let refused = mapping(&mut a, "small").await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("9 clusters"), "{refused:?}");
    let refused = release(&mut r, "small", &researcher).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(mapping(&mut a, "enough").await.unwrap().len(), 10);
    assert_eq!(mapping(&mut b, "enough").await.unwrap().len(), 10);
    let (_, clusters) = release(&mut r, "enough", &researcher).await.unwrap();
    assert_eq!(clusters.len(), 10);
    lu.stop().await;
}
