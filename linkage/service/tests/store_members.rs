//! The bulk paths of the linkage unit's store on SQLite and PostgreSQL (a fresh database per
//! test on the server named by `RENKETSU_TEST_PG_URL`; skipped with a notice when unset, an
//! error under CI): job results written by `finish_job` (multi-row INSERTs on SQLite, binary
//! COPY on PostgreSQL) read back byte for byte, written once, replacing leftovers; uploads
//! read back from their chunks in order.

use renketsu_linkage_unit::store::{LuStore, MemberRow, ProjectRow, UploadRow, job_state};
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

/// Rows with ids that COPY's text format would have to escape, non-ASCII, empty, long.
fn members(n: u64) -> Vec<MemberRow> {
    let odd = [
        "tab\there",
        "back\\slash",
        "new\nline",
        "受診者-001",
        "",
        "\\N",
        "cr\r",
    ];
    (0..n)
        .map(|i| {
            let party = if i % 3 == 0 { "b" } else { "a" };
            let record_id = match i as usize % 10 {
                k if k < odd.len() => format!("{}{i}", odd[k]),
                8 => "x".repeat(300),
                _ => format!("id-{i}"),
            };
            MemberRow {
                party: party.to_owned(),
                position: i,
                record_id,
                pseudonym: format!("{:032x}", i / 2),
                excluded: i % 7 == 0,
            }
        })
        .collect()
}

async fn check(db: &Db) {
    let store = LuStore::connect(&db.url).await.unwrap();
    store.create_project(&project()).await.unwrap();

    // An upload read back from its chunks, in index order whatever the arrival order.
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

    // Leftover rows of an interrupted attempt of the running job are replaced, not kept.
    let job = store.start_job("p", 10).await.unwrap();
    assert_eq!(job.state, job_state::RUNNING);
    let stale = members(5);
    let done = store.finish_job(&job, &stale, 11).await.unwrap();
    assert!(done);
    // (a committed result marks the job DONE: put it back to RUNNING with rows left behind,
    // as a crash between an earlier commit and a later restart of the same job would look)
    sqlx_set_running(&db.url, job.job_id).await;

    let rows = members(2_345);
    let mut j = job.clone();
    j.records = rows.len() as u64;
    assert!(store.finish_job(&j, &rows, 12).await.unwrap());
    let stored = store.job("p", job.job_id).await.unwrap().unwrap();
    assert_eq!(stored.state, job_state::DONE);
    assert_eq!(stored.records, 2_345);

    // Every row exactly once, byte for byte.
    for party in ["a", "b"] {
        let want: Vec<(i64, String, String)> = rows
            .iter()
            .filter(|m| m.party == party && !m.excluded)
            .map(|m| (m.position as i64, m.record_id.clone(), m.pseudonym.clone()))
            .collect();
        let got = store
            .mapping("p", job.job_id, party, 0, 100_000)
            .await
            .unwrap();
        assert_eq!(got, want, "mapping of {party}");
    }
    let excluded: std::collections::BTreeSet<String> = rows
        .iter()
        .filter(|m| m.excluded)
        .map(|m| m.pseudonym.clone())
        .collect();
    assert_eq!(
        store.excluded_pseudonyms("p", job.job_id).await.unwrap(),
        excluded.into_iter().collect::<Vec<_>>()
    );
    let m = &rows[4];
    assert_eq!(
        store
            .traceback("p", job.job_id, &m.party, &m.pseudonym)
            .await
            .unwrap(),
        rows.iter()
            .filter(|r| r.party == m.party && r.pseudonym == m.pseudonym)
            .map(|r| r.record_id.clone())
            .collect::<Vec<_>>()
    );

    // A finished job is not written again.
    assert!(!store.finish_job(&j, &members(3), 13).await.unwrap());
    assert_eq!(
        store
            .mapping("p", job.job_id, "a", 0, 100_000)
            .await
            .unwrap()
            .len(),
        rows.iter()
            .filter(|m| m.party == "a" && !m.excluded)
            .count()
    );
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
