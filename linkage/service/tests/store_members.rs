//! The bulk paths of the linkage unit's store on SQLite and PostgreSQL (a fresh database per
//! test on the server named by `RENKETSU_TEST_PG_URL`; skipped with a notice when unset, an
//! error under CI): job results written by `finish_job` as chunks read back byte for byte,
//! written once, replacing leftovers; mapping, traceback, release and excluded pseudonyms
//! from them; uploads read back from their chunks in order, whole and streamed.

use renketsu_linkage_unit::members::{MemberChunk, MemberChunker};
use renketsu_linkage_unit::store::{
    CrosswalkRow, LuStore, ProjectRow, PseudonymChanges, UploadRow, job_state,
};
use sqlx::{AssertSqlSafe, Connection as _};

struct Db {
    url: String,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl Db {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            url: format!("sqlite:{}", dir.path().join("lu.db").display()),
            _dir: Some(dir),
            pg: None,
        }
    }

    async fn postgres(test: &str) -> Option<Self> {
        let Some(admin) = std::env::var("RENKETSU_TEST_PG_URL")
            .ok()
            .filter(|u| !u.is_empty())
        else {
            assert!(
                std::env::var_os("CI").is_none(),
                "RENKETSU_TEST_PG_URL is not set: under CI the PostgreSQL store tests must run"
            );
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!(
                    "notice: skipping PostgreSQL test {test}: RENKETSU_TEST_PG_URL is not set \
                     (export RENKETSU_TEST_PG_URL=$(scripts/postgres.sh))\n"
                )
                .as_bytes(),
            );
            return None;
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("lu_{test}_{}_{nanos}", std::process::id());
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let (base, _) = admin.rsplit_once('/').unwrap();
        Some(Self {
            url: format!("{base}/{name}"),
            _dir: None,
            pg: Some((admin, name)),
        })
    }

    async fn cleanup(self) {
        if let Some((admin, name)) = &self.pg {
            let mut conn = sqlx::PgConnection::connect(admin).await.unwrap();
            sqlx::query(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await
            .unwrap();
        }
    }
}

fn project() -> ProjectRow {
    ProjectRow {
        name: "p".to_owned(),
        holders: vec!["a".to_owned(), "b".to_owned()],
        researcher: "r".to_owned(),
        researcher_public_key: vec![1; 32],
        schema_toml: b"schema".to_vec(),
        schema_digest: "00".repeat(32),
        duplicates: Vec::new(),
        pid_salt: vec![2; 32],
        stale: false,
        created_unix_ms: 1,
    }
}

struct Row {
    party: &'static str,
    position: u64,
    record_id: String,
    pseudonym: [u8; 16],
    excluded: bool,
}

/// Rows with ids that a text format would have to escape, non-ASCII, empty, long; enough of
/// them (with the long ids) to fill several chunks per holder.
fn members(n: u64) -> Vec<Row> {
    let odd = [
        "tab\there",
        "back\\slash",
        "new\nline",
        "受診者-001",
        "",
        "\\N",
        "cr\r",
    ];
    let mut next = [0u64; 2];
    (0..n)
        .map(|i| {
            let h = usize::from(i % 3 == 0);
            let record_id = match i as usize % 10 {
                k if k < odd.len() => format!("{}{i}", odd[k]),
                8 => "x".repeat(300),
                _ => format!("id-{i}"),
            };
            let mut pseudonym = [0u8; 16];
            pseudonym[..8].copy_from_slice(&(i / 2).to_be_bytes());
            let position = next[h];
            next[h] += 1;
            Row {
                party: ["a", "b"][h],
                position,
                record_id,
                pseudonym,
                excluded: i % 7 == 0,
            }
        })
        .collect()
}

fn chunks(rows: &[Row]) -> Vec<MemberChunk> {
    let mut out = Vec::new();
    for party in ["a", "b"] {
        let mut c = MemberChunker::new(party);
        for r in rows.iter().filter(|r| r.party == party) {
            c.push(&r.record_id, &r.pseudonym, r.excluded);
        }
        out.extend(c.finish());
    }
    out
}

/// Every stored row of `party`, chunk by chunk: (position, id, pseudonym, excluded).
async fn stored(store: &LuStore, job_id: u64, party: &str) -> Vec<(u64, String, [u8; 16], bool)> {
    let mut out = Vec::new();
    let mut after = None;
    while let Some(c) = store.member_chunk("p", job_id, party, after).await.unwrap() {
        for m in c.members().unwrap() {
            out.push((m.position, m.record_id.to_owned(), m.pseudonym, m.excluded));
        }
        after = Some(c.first_position + c.records - 1);
    }
    out
}

async fn check(db: &Db) {
    let store = LuStore::connect(&db.url).await.unwrap();
    store.create_project(&project()).await.unwrap();

    // An upload read back from its chunks, in index order whatever the arrival order, whole
    // and through the streaming reader a job uses.
    let parts: [&[u8]; 3] = [b"first chunk|", b"second|", b"third"];
    let u = UploadRow {
        project: "p".to_owned(),
        party: "a".to_owned(),
        upload_id: "ab".repeat(32),
        kind: 1,
        total_chunks: 3,
        total_bytes: parts.iter().map(|p| p.len() as u64).sum(),
        complete: false,
        superseded: false,
        records: 0,
        batch_seq: 0,
    };
    store.begin_upload(&u, 5).await.unwrap();
    for i in [2u32, 0, 1] {
        let data = parts[i as usize];
        store
            .put_chunk("p", "a", &u.upload_id, i, &[i as u8; 32], data)
            .await
            .unwrap();
    }
    assert_eq!(
        store.upload_bytes("p", "a", &u.upload_id).await.unwrap(),
        parts.concat()
    );
    let mut reader = store.upload_reader("p", "a", &u.upload_id);
    let streamed = tokio::task::spawn_blocking(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut v).unwrap();
        v
    })
    .await
    .unwrap();
    assert_eq!(streamed, parts.concat());

    // Leftover rows of an interrupted attempt of the running job are replaced, not kept.
    let job = store.start_job("p", 10).await.unwrap();
    assert_eq!(job.state, job_state::RUNNING);
    let stale = members(5);
    let event = |kind: &str, old: &str, new: &str| CrosswalkRow {
        job_id: job.job_id,
        kind: kind.to_owned(),
        old: old.to_owned(),
        new: new.to_owned(),
    };
    let (aa, bb) = ("aa".repeat(16), "bb".repeat(16));
    let stale_changes = PseudonymChanges {
        registered: vec![(aa.clone(), job.job_id)],
        events: vec![event("new", "", &aa), event("merge", &aa, &bb)],
        ..PseudonymChanges::default()
    };
    let done = store
        .finish_job_with(
            &job,
            &chunks(&stale),
            Some(("{\"old\":1}", "<p>old</p>", &[1u8; 20][..])),
            &stale_changes,
            11,
        )
        .await
        .unwrap();
    assert!(done);
    // (a committed result marks the job DONE: put it back to RUNNING with rows left behind,
    // as a crash between an earlier commit and a later restart of the same job would look)
    sqlx_set_running(&db.url, job.job_id).await;

    let rows = members(60_000);
    let written = chunks(&rows);
    assert!(written.len() >= 4, "several chunks: {}", written.len());
    let mut j = job.clone();
    j.records = rows.len() as u64;
    let changes = PseudonymChanges {
        registered: vec![(aa.clone(), job.job_id), (bb.clone(), job.job_id)],
        withdrawn: vec![bb.clone()],
        events: vec![
            event("new", "", &aa),
            event("new", "", &bb),
            event("withdraw", &bb, ""),
        ],
        ..PseudonymChanges::default()
    };
    assert!(
        store
            .finish_job_with(
                &j,
                &written,
                Some(("{\"new\":2}", "<p>new</p>", &[2u8; 40][..])),
                &changes,
                12
            )
            .await
            .unwrap()
    );
    // The crosswalk of the attempt that finished replaces the earlier one's; the registry
    // holds each pseudonym once.
    assert_eq!(
        store.crosswalk("p", 0, job.job_id).await.unwrap(),
        changes.events
    );
    let issued = store.pseudonyms("p").await.unwrap();
    assert_eq!(issued.len(), 2);
    assert_eq!(
        issued
            .iter()
            .map(|r| (hex::encode(r.pseudonym), r.born_job, r.withdrawn_job))
            .collect::<Vec<_>>(),
        [
            (aa.clone(), job.job_id, 0),
            (bb.clone(), job.job_id, job.job_id)
        ]
    );
    let stored_job = store.job("p", job.job_id).await.unwrap().unwrap();
    assert_eq!(stored_job.state, job_state::DONE);
    assert_eq!(stored_job.records, 60_000);
    // The quality report of the attempt that finished replaces the earlier one.
    assert_eq!(
        store.job_report("p", job.job_id).await.unwrap(),
        Some(("{\"new\":2}".to_owned(), "<p>new</p>".to_owned()))
    );
    assert_eq!(store.job_report("p", job.job_id + 1).await.unwrap(), None);
    assert_eq!(
        store.job_weakest_links("p", job.job_id).await.unwrap(),
        Some(vec![2u8; 40])
    );

    // Every row exactly once, byte for byte.
    for party in ["a", "b"] {
        let want: Vec<(u64, String, [u8; 16], bool)> = rows
            .iter()
            .filter(|m| m.party == party)
            .map(|m| (m.position, m.record_id.clone(), m.pseudonym, m.excluded))
            .collect();
        assert_eq!(
            stored(&store, job.job_id, party).await,
            want,
            "rows of {party}"
        );
        // A chunk can be found from any position inside it.
        let mid = want.len() as u64 / 2;
        let c = store
            .member_chunk("p", job.job_id, party, Some(mid))
            .await
            .unwrap()
            .unwrap();
        assert!(c.first_position <= mid + 1 && mid + 1 < c.first_position + c.records);
    }
    let excluded: std::collections::BTreeSet<String> = rows
        .iter()
        .filter(|m| m.excluded)
        .map(|m| hex::encode(m.pseudonym))
        .collect();
    assert_eq!(
        store.excluded_pseudonyms("p", job.job_id).await.unwrap(),
        excluded.into_iter().collect::<Vec<_>>()
    );
    let m = &rows[4];
    assert_eq!(
        store
            .traceback("p", job.job_id, m.party, &hex::encode(m.pseudonym))
            .await
            .unwrap(),
        rows.iter()
            .filter(|r| r.party == m.party && r.pseudonym == m.pseudonym)
            .map(|r| r.record_id.clone())
            .collect::<Vec<_>>()
    );
    // The release: non-excluded rows sorted by pseudonym, party, position.
    let mut want: Vec<(String, String, String)> = rows
        .iter()
        .filter(|r| !r.excluded)
        .map(|r| (r.pseudonym, r.party, r.position, r.record_id.clone()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|(p, party, _, id)| (hex::encode(p), party.to_owned(), id))
        .collect();
    want.dedup();
    assert_eq!(store.release_members("p", job.job_id).await.unwrap(), want);

    // A finished job is not written again: neither results nor pseudonym changes.
    let late = PseudonymChanges {
        registered: vec![("cc".repeat(16), job.job_id)],
        retired: vec![aa.clone()],
        events: vec![event("retire", &aa, "")],
        ..PseudonymChanges::default()
    };
    assert!(
        !store
            .finish_job_with(&j, &chunks(&members(3)), None, &late, 13)
            .await
            .unwrap()
    );
    assert_eq!(
        store.crosswalk("p", 0, job.job_id).await.unwrap(),
        changes.events
    );
    assert_eq!(store.pseudonyms("p").await.unwrap(), issued);
    assert_eq!(
        stored(&store, job.job_id, "a").await.len(),
        rows.iter().filter(|m| m.party == "a").count()
    );
    // Deleting the project removes its quality reports.
    store.delete_project("p").await.unwrap();
    assert_eq!(store.job_report("p", job.job_id).await.unwrap(), None);
    assert!(
        store
            .crosswalk("p", 0, u64::MAX >> 1)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.pseudonyms("p").await.unwrap().is_empty());
    store.close().await;
}

async fn sqlx_set_running(url: &str, job_id: u64) {
    let sql = "UPDATE lu_jobs SET state = $1 WHERE project = 'p' AND job_id = $2";
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(sql)
            .bind(i64::from(job_state::RUNNING))
            .bind(job_id as i64)
            .execute(&mut c)
            .await
            .unwrap();
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(sql)
            .bind(i64::from(job_state::RUNNING))
            .bind(job_id as i64)
            .execute(&mut c)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn members_and_uploads_sqlite() {
    let db = Db::sqlite();
    check(&db).await;
    db.cleanup().await;
}

#[tokio::test]
async fn members_and_uploads_postgres() {
    let Some(db) = Db::postgres("members").await else {
        return;
    };
    check(&db).await;
    db.cleanup().await;
}
