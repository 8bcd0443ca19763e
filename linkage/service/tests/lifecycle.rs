//! The linkage unit never keeps what it refuses (issue 19): upload lifecycle, job isolation,
//! bounded audit. Over loopback with mutual TLS, on SQLite and (when `RENKETSU_TEST_PG_URL`
//! is set) on PostgreSQL:
//!
//! - a raw identifier CSV uploaded by mistake is refused and no byte of it is in the store
//!   (every table; on SQLite the database, -wal and -shm files read raw, free pages included);
//! - refused uploads are deleted; incomplete ones expire and are capped per holder; an
//!   impossible `total_chunks` is refused;
//! - a superseded file sent again becomes current again;
//! - a job's uploads are pinned while it runs; starting a job never meets "database is
//!   locked";
//! - duplicate record ids and non-canonical OPRF tokens are refused with their line;
//! - a huge project name is refused and never audited whole.

use std::collections::HashSet;
use std::time::Duration;

use curve25519_dalek::Scalar;
use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
use renketsu_keys::content::ResearcherKeyPair;
use renketsu_linkage::token_file::{
    Counts, FORMAT, Header, MODE_HMAC, MODE_OPRF, RecipeRef, SchemaRef, VERSION, encode_header,
    encode_record, encode_trailer,
};
use renketsu_linkage_unit::service::LuSettings;
use renketsu_linkage_unit::store::{LuStore, ProjectRow, UploadRow, job_state};
use renketsu_protocol::v1;
use renketsu_protocol::v1::linkage_unit_client::LinkageUnitClient;
use renketsu_rpc::pki::Role;
use sha2::{Digest as _, Sha256};
use sqlx::Connection as _;
use tonic::Code;
use tonic::transport::Channel;

const RAW_CSV: &str = include_str!("../../../samples/multi/ehr.csv");

mod support;
use support::*;

fn header(project: &str, party: &str, oprf: bool) -> Header {
    Header {
        format: FORMAT.to_owned(),
        version: VERSION,
        project: project.to_owned(),
        party: party.to_owned(),
        schema: SchemaRef {
            name: "jp-person-exact".to_owned(),
            version: 2,
            digest: schema_digest(),
        },
        mode: if oprf { MODE_OPRF } else { MODE_HMAC }.to_owned(),
        oprf_mode: oprf.then(|| "voprf".to_owned()),
        recipes: RECIPES
            .iter()
            .map(|(n, v)| RecipeRef {
                name: (*n).to_owned(),
                version: *v,
                epoch: oprf.then_some(1),
                public_key: oprf.then(|| hex::encode(token("pk", 0))),
            })
            .collect(),
        clk_bits: None,
        today: "2026-11-22".to_owned(),
        created_by: "test".to_owned(),
        dice: Vec::new(),
    }
}

/// A valid ristretto255 token of `person` for recipe `r` (also a valid HMAC token).
fn token(person: &str, r: usize) -> [u8; 32] {
    let s: [u8; 32] = Sha256::digest(format!("{person}/{r}").as_bytes()).into();
    (RISTRETTO_BASEPOINT_POINT * Scalar::from_bytes_mod_order(s))
        .compress()
        .to_bytes()
}

/// A record's `(recipe index, token)` pairs.
type Tokens = Vec<(usize, [u8; 32])>;

/// A token file: `(record id, tokens)` with the tokens given.
fn token_file_with(h: &Header, records: &[(&str, Tokens)]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_header(&mut out, h);
    for (id, toks) in records {
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

/// A token file of `n` records `prefix0…` for `party`.
fn token_file(project: &str, party: &str, prefix: &str, n: usize) -> Vec<u8> {
    let recs: Vec<(String, Tokens)> = (0..n)
        .map(|i| (format!("{i}"), vec![(0, token(&format!("{prefix}{i}"), 0))]))
        .collect();
    let recs: Vec<(&str, Tokens)> = recs.iter().map(|(i, t)| (i.as_str(), t.clone())).collect();
    token_file_with(&header(project, party, false), &recs)
}

fn chunks_of(
    project: &str,
    kind: v1::UploadKind,
    bytes: &[u8],
    size: usize,
) -> Vec<v1::UploadChunk> {
    let id = hex::encode(Sha256::digest(bytes));
    let parts: Vec<&[u8]> = if bytes.is_empty() {
        vec![bytes]
    } else {
        bytes.chunks(size).collect()
    };
    parts
        .iter()
        .enumerate()
        .map(|(i, d)| v1::UploadChunk {
            project: project.to_owned(),
            kind: kind as i32,
            upload_id: id.clone(),
            total_chunks: parts.len() as u32,
            total_bytes: bytes.len() as u64,
            index: i as u32,
            data: d.to_vec(),
            sha256: Sha256::digest(d).to_vec(),
        })
        .collect()
}

/// Uploads like `renketsu lu upload` does: asks the status first and sends only what the
/// linkage unit says it lacks (nothing if it says complete).
async fn client_upload(
    c: &mut LinkageUnitClient<Channel>,
    project: &str,
    bytes: &[u8],
) -> Result<v1::UploadStatus, tonic::Status> {
    let chunks = chunks_of(project, v1::UploadKind::Tokens, bytes, 1 << 20);
    let id = chunks[0].upload_id.clone();
    let stored: HashSet<u32> = match c
        .get_upload_status(v1::GetUploadStatusRequest {
            project: project.to_owned(),
            upload_id: id,
        })
        .await
    {
        Ok(s) if s.get_ref().complete => return Ok(s.into_inner()),
        Ok(s) => s.into_inner().stored_chunks.into_iter().collect(),
        Err(s) if s.code() == Code::NotFound => HashSet::new(),
        Err(s) => return Err(s),
    };
    let mut send: Vec<_> = chunks
        .iter()
        .filter(|c| !stored.contains(&c.index))
        .cloned()
        .collect();
    if send.is_empty() {
        send.push(chunks[0].clone());
    }
    Ok(c.upload(tokio_stream::iter(send)).await?.into_inner())
}

async fn create(lu: &TestLu, pki: &Pki, project: &str) {
    let pk = ResearcherKeyPair::derive(&[3u8; 32]).public_key();
    lu.client(pki, Some(("admin", Role::Admin)))
        .create_linkage_project(v1::CreateLinkageProjectRequest {
            project: project.to_owned(),
            holders: vec!["ehr".into(), "ndb".into()],
            researcher: "researcher".into(),
            researcher_public_key: pk.to_vec(),
            schema_toml: SCHEMA.as_bytes().to_vec(),
            duplicates: vec![],
        })
        .await
        .unwrap();
}

/// `(upload id, complete, superseded)` of every upload row of `party`, by id.
async fn upload_rows(store: &LuStore, project: &str, party: &str) -> Vec<(String, bool, bool)> {
    let mut out = Vec::new();
    for u in store.all_uploads(project).await.unwrap() {
        if u.party == party {
            out.push((u.upload_id, u.complete, u.superseded));
        }
    }
    out.sort();
    out
}

/// Values of the raw CSV that identify people (names, kana, birth dates, postcodes,
/// insurance numbers) of its first 300 rows: 6 bytes or longer, 8 digits or longer.
fn identifying_values() -> Vec<String> {
    let mut lines = RAW_CSV.lines();
    let head: Vec<&str> = lines.next().unwrap().split(',').collect();
    let want = [
        "last_name",
        "first_name",
        "last_name_kana",
        "first_name_kana",
        "birth_date",
        "postcode",
        "insurer_number",
        "insured_number",
    ];
    let cols: Vec<usize> = want
        .iter()
        .map(|w| head.iter().position(|h| h == w).unwrap())
        .collect();
    let mut out = HashSet::new();
    for line in lines.take(300) {
        let f: Vec<&str> = line.split(',').collect();
        for &c in &cols {
            // Short digit strings turn up by chance in hex renderings of hashes (PostgreSQL
            // shows bytea as hex): numbers need 8 digits, anything else 6 bytes.
            let digits = f[c].bytes().all(|b| b.is_ascii_digit());
            if f[c].len() >= if digits { 8 } else { 6 } {
                out.insert(f[c].to_owned());
            }
        }
    }
    let mut v: Vec<String> = out.into_iter().collect();
    v.sort();
    assert!(v.len() > 500, "{} values", v.len());
    v
}

/// The values of `values` found in `hay` (each window of each length looked up in a set).
fn found_in(hay: &[u8], values: &[String]) -> Vec<String> {
    let mut by_len: std::collections::BTreeMap<usize, HashSet<&[u8]>> = Default::default();
    for v in values {
        by_len.entry(v.len()).or_default().insert(v.as_bytes());
    }
    let mut found = HashSet::new();
    for (len, set) in &by_len {
        for w in hay.windows(*len) {
            if set.contains(w) {
                found.insert(String::from_utf8_lossy(w).into_owned());
            }
        }
    }
    let mut f: Vec<String> = found.into_iter().collect();
    f.sort();
    f
}

/// Every identifying value of the raw CSV found anywhere in the store: on SQLite the raw
/// bytes of the database, -wal and -shm files; on PostgreSQL the text of every row of every
/// table (bytea as hex, so the values are looked for in hex too).
async fn leaked(url: &str, values: &[String]) -> Vec<String> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let mut found = Vec::new();
        for suffix in ["", "-wal", "-shm"] {
            let p = format!("{path}{suffix}");
            if let Ok(bytes) = std::fs::read(&p) {
                found.extend(
                    found_in(&bytes, values)
                        .into_iter()
                        .map(|v| format!("{p}: {v}")),
                );
            }
        }
        return found;
    }
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(tables.iter().any(|t| t == "lu_chunks"), "{tables:?}");
    let hexed: Vec<String> = values.iter().map(hex::encode).collect();
    let mut found = Vec::new();
    for t in tables {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT CAST(t AS TEXT) FROM \"{t}\" t"
        )))
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let text = rows.join("\n");
        found.extend(
            found_in(text.as_bytes(), values)
                .into_iter()
                .chain(found_in(text.as_bytes(), &hexed))
                .map(|v| format!("{t}: {v}")),
        );
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_csv_uploaded_by_mistake_leaves_no_trace_in_the_store() {
    let values = identifying_values();
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()).await {
        let pki = Pki::new();
        let lu = TestLu::start_with(&pki, &url, LuSettings::default()).await;
        create(&lu, &pki, "p").await;
        let mut ehr = lu.client(&pki, Some(("ehr", Role::DataHolder)));
        // 1. The CSV itself (`renketsu lu upload --tokens ehr.csv`), in 64 KiB chunks.
        let e = ehr
            .upload(tokio_stream::iter(chunks_of(
                "p",
                v1::UploadKind::Tokens,
                RAW_CSV.as_bytes(),
                64 << 10,
            )))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(!e.message().contains("石川"), "{e:?}");
        // 2. A file that starts like a token file but is the CSV after its first line: it is
        //    stored chunk by chunk, refused when complete, and deleted.
        let mut disguised = Vec::new();
        encode_header(&mut disguised, &header("p", "ehr", false));
        disguised.extend_from_slice(RAW_CSV.as_bytes());
        let e = ehr
            .upload(tokio_stream::iter(chunks_of(
                "p",
                v1::UploadKind::Tokens,
                &disguised,
                64 << 10,
            )))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(upload_rows(&lu.store, "p", "ehr").await.is_empty());
        // A good upload afterwards works (and rewrites pages of the store).
        let good = token_file("p", "ehr", "x", 50);
        assert!(client_upload(&mut ehr, "p", &good).await.unwrap().complete);
        lu.stop().await;
        let found = leaked(&url, &values).await;
        assert!(
            found.is_empty(),
            "{} identifying values in the store, e.g. {:?}",
            found.len(),
            &found[..found.len().min(5)]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_uploads_are_deleted_incomplete_ones_expire_and_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()).await {
        let pki = Pki::new();
        let settings = LuSettings {
            upload_expiry: Duration::from_millis(300),
            upload_cap_bytes: 30_000,
            ..LuSettings::default()
        };
        let lu = TestLu::start_with(&pki, &url, settings).await;
        create(&lu, &pki, "p").await;
        let mut ehr = lu.client(&pki, Some(("ehr", Role::DataHolder)));
        // A file refused when complete (truncated: no trailer line): deleted, not kept.
        let mut bad = token_file("p", "ehr", "x", 20);
        let last_line = bad[..bad.len() - 1]
            .iter()
            .rposition(|&b| b == b'\n')
            .unwrap();
        bad.truncate(last_line + 1);
        let e = ehr
            .upload(tokio_stream::iter(chunks_of(
                "p",
                v1::UploadKind::Tokens,
                &bad,
                500,
            )))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert_eq!(upload_rows(&lu.store, "p", "ehr").await, vec![]);
        // 4,294,967,295 chunks announced for 1,000 bytes: refused, nothing registered.
        let mut huge = chunks_of(
            "p",
            v1::UploadKind::Tokens,
            &token_file("p", "ehr", "y", 5),
            1 << 20,
        );
        huge[0].total_chunks = u32::MAX;
        let e = ehr.upload(tokio_stream::iter(huge)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert_eq!(upload_rows(&lu.store, "p", "ehr").await, vec![]);
        // An incomplete upload (2 of its chunks) counts against the cap...
        let big = token_file("p", "ehr", "z", 350);
        assert!(big.len() > 20_000 && big.len() < 30_000, "{}", big.len());
        let bc = chunks_of("p", v1::UploadKind::Tokens, &big, 4096);
        ehr.upload(tokio_stream::iter(bc[..2].to_vec()))
            .await
            .unwrap();
        let other = token_file("p", "ehr", "w", 100);
        let e = client_upload(&mut ehr, "p", &other).await.unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert_eq!(upload_rows(&lu.store, "p", "ehr").await.len(), 1);
        // ...until it expires: the next upload deletes it (and its chunks) and goes through.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let s = client_upload(&mut ehr, "p", &other).await.unwrap();
        assert!(s.complete, "{s:?}");
        assert_eq!(
            upload_rows(&lu.store, "p", "ehr").await,
            vec![(s.upload_id.clone(), true, false)]
        );
        assert!(
            lu.store
                .stored_chunks("p", "ehr", &bc[0].upload_id)
                .await
                .unwrap()
                .is_empty()
        );
        lu.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseded_file_sent_again_becomes_current_again() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()).await {
        let pki = Pki::new();
        let lu = TestLu::start_with(&pki, &url, LuSettings::default()).await;
        create(&lu, &pki, "p").await;
        let mut ehr = lu.client(&pki, Some(("ehr", Role::DataHolder)));
        let a = token_file("p", "ehr", "a", 30);
        let b = token_file("p", "ehr", "b", 40);
        let sa = client_upload(&mut ehr, "p", &a).await.unwrap();
        client_upload(&mut ehr, "p", &b).await.unwrap();
        let again = client_upload(&mut ehr, "p", &a).await.unwrap();
        assert!(again.complete && again.records == 30, "{again:?}");
        let current: Vec<String> = lu
            .store
            .current_uploads("p")
            .await
            .unwrap()
            .into_iter()
            .filter(|u| u.party == "ehr")
            .map(|u| u.upload_id)
            .collect();
        assert_eq!(current, vec![sa.upload_id.clone()]);
        // Its bytes are whole again (the job reads them).
        assert_eq!(
            lu.store
                .upload_bytes("p", "ehr", &sa.upload_id)
                .await
                .unwrap(),
            a
        );
        lu.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_ids_and_non_canonical_tokens_are_refused_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()).await {
        let pki = Pki::new();
        let lu = TestLu::start_with(&pki, &url, LuSettings::default()).await;
        create(&lu, &pki, "p").await;
        let mut ehr = lu.client(&pki, Some(("ehr", Role::DataHolder)));
        let good = token_file("p", "ehr", "g", 10);
        let sg = client_upload(&mut ehr, "p", &good).await.unwrap();
        // Record id "2" twice (lines 4 and 5): refused, the good upload stays current.
        let h = header("p", "ehr", false);
        let dup = token_file_with(
            &h,
            &[
                ("0", vec![(0, token("a", 0))]),
                ("1", vec![(0, token("b", 0))]),
                ("2", vec![(0, token("c", 0))]),
                ("2", vec![(0, token("d", 0))]),
            ],
        );
        let e = client_upload(&mut ehr, "p", &dup).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("line 5"), "{e:?}");
        // An OPRF token that is not a ristretto255 element (32 bytes of 0xff), line 3.
        let o = header("p", "ehr", true);
        let bad = token_file_with(
            &o,
            &[
                ("0", vec![(0, token("a", 0))]),
                ("1", vec![(0, token("b", 0)), (1, [0xff; 32])]),
            ],
        );
        let e = client_upload(&mut ehr, "p", &bad).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(
            e.message().contains("line 3") && e.message().contains("ristretto255"),
            "{e:?}"
        );
        // The same file with valid tokens is accepted.
        let ok = token_file_with(
            &o,
            &[
                ("0", vec![(0, token("a", 0))]),
                ("1", vec![(1, token("b", 1))]),
            ],
        );
        let s = client_upload(&mut ehr, "p", &ok).await.unwrap();
        assert!(s.complete);
        let rows = upload_rows(&lu.store, "p", "ehr").await;
        assert_eq!(rows.len(), 2, "refused uploads are not kept: {rows:?}");
        assert!(rows.contains(&(sg.upload_id.clone(), true, true)));
        lu.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_project_name_is_refused_and_never_audited_whole() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()).await {
        let pki = Pki::new();
        let lu = TestLu::start_with(&pki, &url, LuSettings::default()).await;
        let huge = "x".repeat(4 << 20);
        let mut ehr = lu.client(&pki, Some(("ehr", Role::DataHolder)));
        let e = ehr
            .get_linkage_project(v1::GetLinkageProjectRequest {
                project: huge.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().len() < 1000, "{} bytes", e.message().len());
        // Wrong role too: refused, and the audit entry keeps a bounded name.
        let mut admin = lu.client(&pki, Some(("admin", Role::Admin)));
        for name in [huge.as_str(), "../x", "a b", "プロジェクト"] {
            let e = admin
                .create_linkage_project(v1::CreateLinkageProjectRequest {
                    project: name.to_owned(),
                    holders: vec!["ehr".into(), "ndb".into()],
                    researcher: "researcher".into(),
                    researcher_public_key: vec![1; 32],
                    schema_toml: SCHEMA.as_bytes().to_vec(),
                    duplicates: vec![],
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{name:.20}: {e:?}");
        }
        let entries = lu.store.audit_read(1, u32::MAX).await.unwrap();
        assert_eq!(entries.len(), 5);
        for e in &entries {
            assert!(
                e.event.project.len() <= 300,
                "{} bytes audited",
                e.event.project.len()
            );
        }
        lu.stop().await;
    }
}

fn project_row(name: &str) -> ProjectRow {
    ProjectRow {
        name: name.to_owned(),
        holders: vec!["ehr".into(), "ndb".into()],
        researcher: "researcher".into(),
        researcher_public_key: vec![1; 32],
        schema_toml: SCHEMA.as_bytes().to_vec(),
        schema_digest: schema_digest(),
        duplicates: vec![],
        pid_salt: vec![0; 32],
        stale: false,
        created_unix_ms: 0,
    }
}

/// Stores `bytes` as a complete tokens upload of `party` (one chunk).
async fn store_upload(store: &LuStore, project: &str, party: &str, bytes: &[u8]) -> UploadRow {
    let u = UploadRow {
        project: project.to_owned(),
        party: party.to_owned(),
        upload_id: hex::encode(Sha256::digest(bytes)),
        kind: v1::UploadKind::Tokens as i32,
        total_chunks: 1,
        total_bytes: bytes.len() as u64,
        complete: false,
        superseded: false,
        records: 0,
        batch_seq: 0,
    };
    let u = store.begin_upload(&u, 1).await.unwrap();
    store
        .put_chunk(
            project,
            party,
            &u.upload_id,
            0,
            &Sha256::digest(bytes),
            bytes,
        )
        .await
        .unwrap();
    store.complete_upload(&u, 1, false).await.unwrap();
    u
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_pins_the_uploads_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()).await {
        let store = LuStore::connect(&url).await.unwrap();
        store.create_project(&project_row("p")).await.unwrap();
        let a = token_file("p", "ehr", "a", 30);
        let ua = store_upload(&store, "p", "ehr", &a).await;
        let job = store.start_job("p", 2).await.unwrap();
        // B completes while the job reads A: A is superseded but its bytes stay.
        let b = token_file("p", "ehr", "b", 30);
        store_upload(&store, "p", "ehr", &b).await;
        assert_eq!(
            store.upload_bytes("p", "ehr", &ua.upload_id).await.unwrap(),
            a
        );
        assert_eq!(store.purge_superseded("p").await.unwrap(), 0);
        // Once the job has ended, A's chunks go.
        store
            .end_job("p", job.job_id, job_state::FAILED, "test", 3)
            .await
            .unwrap();
        assert_eq!(store.purge_superseded("p").await.unwrap(), 1);
        assert!(
            store
                .upload_bytes("p", "ehr", &ua.upload_id)
                .await
                .unwrap()
                .is_empty()
        );
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_jobs_while_uploads_complete_never_meets_a_locked_database() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("lu.db").display());
    let store = LuStore::connect(&url).await.unwrap();
    store.create_project(&project_row("p")).await.unwrap();
    let jobs = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..150 {
                let j = store.start_job("p", i).await?;
                store
                    .end_job("p", j.job_id, job_state::FAILED, "t", i)
                    .await?;
            }
            Ok::<_, renketsu_linkage_unit::store::StoreError>(())
        })
    };
    let uploads = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..150 {
                let bytes = token_file("p", "ehr", &format!("u{i}-"), 2);
                let u = UploadRow {
                    project: "p".into(),
                    party: "ehr".into(),
                    upload_id: hex::encode(Sha256::digest(&bytes)),
                    kind: v1::UploadKind::Tokens as i32,
                    total_chunks: 1,
                    total_bytes: bytes.len() as u64,
                    complete: false,
                    superseded: false,
                    records: 0,
                    batch_seq: 0,
                };
                let u = store.begin_upload(&u, 1).await?;
                store.complete_upload(&u, 2, false).await?;
                store
                    .record_release("p", 1, "researcher", &["00".repeat(16)], i)
                    .await?;
            }
            Ok::<_, renketsu_linkage_unit::store::StoreError>(())
        })
    };
    jobs.await.unwrap().unwrap();
    uploads.await.unwrap().unwrap();
    store.close().await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_store_is_created_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lu.db");
    let store = LuStore::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    store.create_project(&project_row("p")).await.unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let p = format!("{}{suffix}", path.display());
        if let Ok(m) = std::fs::metadata(&p) {
            assert_eq!(m.permissions().mode() & 0o777, 0o600, "{p}");
        }
    }
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_audit_appends_make_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()).await {
        let store = LuStore::connect(&url).await.unwrap();
        let mut tasks = Vec::new();
        for t in 0..4 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..25 {
                    store
                        .audit_append(renketsu_keys::audit::AuditEvent {
                            unix_time_ms: i,
                            actor_party: format!("t{t}"),
                            role: 0,
                            rpc: "/test".into(),
                            project: String::new(),
                            recipe: String::new(),
                            epoch: 0,
                            item_count: 0,
                            status_code: 0,
                        })
                        .await?;
                }
                Ok::<_, renketsu_linkage_unit::store::StoreError>(())
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let entries = store.audit_read(1, u32::MAX).await.unwrap();
        assert_eq!(entries.len(), 100);
        renketsu_keys::audit::verify(&entries, Some(&entries.last().unwrap().head())).unwrap();
        store.close().await;
    }
}
