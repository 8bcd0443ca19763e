//! Linkage-unit benchmarks (prints figures):
//! `cargo bench -p renketsu-linkage-unit --bench linkage_unit`.
//!
//! 1. **Upload** (issue 7 target ≥ 500,000 tokens/s): a holder uploads one token file to a real
//!    linkage unit (`server::run`, mutual TLS, 127.0.0.1 port 0) the way `renketsu lu upload`
//!    does — SHA-256 of the file as upload id, `GetUploadStatus`, then one client-streaming
//!    `Upload` of 1 MiB chunks each with its SHA-256; the server stores the chunks, re-reads
//!    the file, checks its digest and parses every record before answering "complete". Timed
//!    from the client's first hash to that answer. SQLite (embedded default) and PostgreSQL.
//! 2. **Job** (target ≤ 60 s, ≤ 8 GiB): a large holder against a small one, exact tokens
//!    (schema `schemas/ndb-exact.toml`, direct recipes), `LU_BENCH_OVERLAP` of the small holder's
//!    records sharing tokens with distinct large-holder records. The token files are streamed
//!    into the store as complete uploads (generated twice from a seed: once for the upload id,
//!    once for the chunks, so the bench never holds a file), then an admin calls `StartJob`
//!    over gRPC and polls `GetJob` every 100 ms until the job is done: the service reads the
//!    uploads from the store (streamed chunk by chunk), runs `job::run`, writes the results
//!    (`lu_member_chunks`: one packed row per record) and marks the job done. Wall time is from `StartJob` to the poll that sees DONE; the job's own
//!    start/finish stamps are printed too. Peak memory is this process's `VmHWM` (peak
//!    resident set, /proc/self/status) after resetting it (`/proc/self/clear_refs` ← 5) just
//!    before `StartJob`, so it is the job's peak (the PostgreSQL server is a separate process,
//!    not included). Cluster and link counts are checked against the generated overlap.
//!
//! 3. **Scored job** (issue 15: within 2× the time of `renketsu link` on the same data), only
//!    when `LU_BENCH_SCORED_SCHEMA` and `LU_BENCH_SCORED_INPUTS` are set: the holders' real
//!    token files (e.g. `renketsu tokenize --schema schemas/jp-person.toml` of `renketsu synth`
//!    data, one project) are streamed into the store as complete uploads and the linkage unit
//!    runs its full Fellegi–Sunter job on them, timed and measured as the job above.
//!
//! 4. **Job with a token batch** (issue 16), only when `LU_BENCH_BATCH_PERCENT` > 0: the job
//!    above (its schema's guarded and guard recipes made direct, so that it can be
//!    incremental), then a token batch of that percentage of the large holder's records (new
//!    records of new persons) stored on top of its upload, the incremental job that applies
//!    it (SPEC.md §10.3.3) and a forced full re-link of the same state (`full = true`), all
//!    timed: what a monthly batch costs incrementally and as a full re-link.
//!
//! Sizes default to small (CI-friendly); set them for the issue's figures:
//!
//! ```text
//! RENKETSU_TEST_PG_URL=$(scripts/postgres.sh) LU_BENCH_UPLOAD_RECORDS=1000000 \
//!   LU_BENCH_LARGE=10000000 LU_BENCH_SMALL=1000000 \
//!   cargo bench -p renketsu-linkage-unit --bench linkage_unit
//! ```
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `LU_BENCH_UPLOAD_RECORDS` | 20000 | records in the uploaded file |
//! | `LU_BENCH_TOKENS` | 7 | tokens per record (direct recipes of ndb-exact, 1–12) |
//! | `LU_BENCH_LARGE` / `LU_BENCH_SMALL` | 100000 / 10000 | records of the job's holders |
//! | `LU_BENCH_OVERLAP` | 0.5 | share of the small holder's records linked to the large |
//! | `LU_BENCH_JOB_SQLITE` | 1 | also run the jobs on SQLite (0: PostgreSQL only) |
//! | `LU_BENCH_BATCH_PERCENT` | 0 | job with a token batch of this % of the large holder (0: skipped) |
//! | `LU_BENCH_SCORED_SCHEMA` | unset | scored job: the schema (TOML) the token files follow |
//! | `LU_BENCH_SCORED_INPUTS` | unset | scored job: token files, comma separated (≥ 2) |
//! | `RENKETSU_TEST_PG_URL` | unset | PostgreSQL server; unset: PostgreSQL parts skipped |

use std::sync::Arc;
use std::time::{Duration, Instant};

use renketsu_keys::lifecycle::SystemClock;
use renketsu_linkage::Schema;
use renketsu_linkage::schema::LinkMode;
use renketsu_linkage::token_file::{
    self, Counts, FORMAT, Header, MODE_HMAC, RecipeRef, SchemaRef, VERSION,
};
use renketsu_linkage_unit::server;
use renketsu_linkage_unit::service::{LinkageUnitService, LuSettings};
use renketsu_linkage_unit::store::{LuStore, ProjectRow, UploadRow};
use renketsu_protocol::v1;
use renketsu_protocol::v1::linkage_unit_client::LinkageUnitClient;
use renketsu_rpc::pki::{DevCa, Role};
use renketsu_rpc::tls::TlsMaterial;
use sha2::{Digest as _, Sha256};
use sqlx::AssertSqlSafe;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const SCHEMA: &str = include_str!("../../../schemas/ndb-exact.toml");
const CHUNK: usize = 1024 * 1024;
const PROJECT: &str = "bench";
const LARGE: &str = "ndb";
const SMALL: &str = "operator";

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A pseudorandom 32-byte token of (seed, record, recipe): holders' tokens are keyed hashes,
/// uniformly random to the linkage unit.
fn token(seed: u64, record: u64, recipe: usize) -> [u8; 32] {
    let mut s = seed ^ record.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ ((recipe as u64) << 56);
    let mut t = [0u8; 32];
    for w in t.chunks_exact_mut(8) {
        w.copy_from_slice(&splitmix(&mut s).to_le_bytes());
    }
    t
}

const SEED_LARGE: u64 = 0x6e64_6200;
const SEED_SMALL: u64 = 0x6f70_6500;

/// One holder's token file, produced in 1 MiB chunks.
struct TokenFile {
    party: &'static str,
    records: u64,
    /// Header recipe indices the records carry.
    recipes: Vec<usize>,
    /// Small holder: records `0..shared` share tokens with large record `i * stride`.
    shared: u64,
    stride: u64,
    /// Record `i` of the file is record `first + i` of the holder (a batch of new records).
    first: u64,
    next: u64,
    buf: Vec<u8>,
    done: bool,
}

impl TokenFile {
    fn new(party: &'static str, records: u64, recipes: &[usize], shared: u64, stride: u64) -> Self {
        let mut buf = Vec::with_capacity(2 * CHUNK);
        token_file::encode_header(&mut buf, &Self::header(party, SCHEMA));
        Self {
            party,
            records,
            recipes: recipes.to_vec(),
            shared,
            stride,
            first: 0,
            next: 0,
            buf,
            done: false,
        }
    }

    /// The same file made for the schema `toml` (same recipes as ndb-exact).
    fn for_schema(mut self, toml: &str) -> Self {
        self.buf.clear();
        token_file::encode_header(&mut self.buf, &Self::header(self.party, toml));
        self
    }

    fn header(party: &str, toml: &str) -> Header {
        let schema = Schema::from_toml(toml).expect("the schema parses");
        Header {
            format: FORMAT.to_owned(),
            version: VERSION,
            project: PROJECT.to_owned(),
            party: party.to_owned(),
            schema: SchemaRef {
                name: schema.name.clone(),
                version: schema.version,
                digest: hex::encode(Sha256::digest(toml.as_bytes())),
            },
            mode: MODE_HMAC.to_owned(),
            oprf_mode: None,
            recipes: RecipeRef::hmac_refs(&schema),
            clk_bits: None,
            today: "2026-11-22".to_owned(),
            created_by: "renketsu linkage_unit bench".to_owned(),
            dice: Vec::new(),
        }
    }

    /// The holder's records `first..first + records` (a batch of new records).
    fn starting_at(mut self, first: u64) -> Self {
        self.first = first;
        self
    }

    fn record(&self, i: u64, out: &mut Vec<u8>) {
        let n = self.recipes.len();
        let tokens: Vec<(usize, [u8; 32])> = self
            .recipes
            .iter()
            .enumerate()
            .map(|(k, &r)| {
                let t = if self.party == LARGE {
                    token(SEED_LARGE, i, r)
                } else if i < self.shared && (k + 2 < n || n <= 2) {
                    // A linked record agrees on all but its last two recipes (name variants).
                    token(SEED_LARGE, i * self.stride, r)
                } else {
                    token(SEED_SMALL, i, r)
                };
                (r, t)
            })
            .collect();
        let id = if self.party == LARGE {
            format!("N{i:010}")
        } else {
            format!("op-{i:08}")
        };
        token_file::encode_record(out, &id, tokens.iter().map(|(r, t)| (*r, t)), None);
    }

    /// The next chunk of the file (every chunk but the last is exactly 1 MiB).
    fn next_chunk(&mut self) -> Option<Vec<u8>> {
        while self.buf.len() < CHUNK && !self.done {
            if self.next < self.records {
                let mut line = std::mem::take(&mut self.buf);
                self.record(self.first + self.next, &mut line);
                self.buf = line;
                self.next += 1;
            } else {
                let counts = Counts {
                    records: self.records,
                    read: self.records,
                    tokenized: self.records,
                    encoding: "UTF-8".to_owned(),
                    ..Counts::default()
                };
                token_file::encode_trailer(&mut self.buf, &counts);
                self.done = true;
            }
        }
        if self.buf.is_empty() {
            return None;
        }
        let n = self.buf.len().min(CHUNK);
        let rest = self.buf.split_off(n);
        Some(std::mem::replace(&mut self.buf, rest))
    }
}

/// The direct recipes of ndb-exact (header indices), the first `n`.
fn direct_recipes(n: usize) -> Vec<usize> {
    let schema = Schema::from_toml(SCHEMA).expect("ndb-exact.toml parses");
    let direct: Vec<usize> = schema
        .recipes
        .iter()
        .enumerate()
        .filter(|(_, r)| r.link == LinkMode::Direct)
        .map(|(i, _)| i)
        .collect();
    assert!(
        (1..=direct.len()).contains(&n),
        "LU_BENCH_TOKENS must be 1..={}",
        direct.len()
    );
    direct[..n].to_vec()
}

fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn gib(b: u64) -> f64 {
    b as f64 / f64::from(1u32 << 30)
}

/// A backend for one run: the store URL and what to drop afterwards.
struct Backend {
    name: &'static str,
    url: String,
    pg_admin: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite:{}", dir.path().join("lu.db").display());
        Self {
            name: "SQLite",
            url,
            pg_admin: None,
            _dir: Some(dir),
        }
    }

    async fn postgres(tag: &str) -> Option<Self> {
        let Ok(admin) = std::env::var("RENKETSU_TEST_PG_URL") else {
            println!(
                "  PostgreSQL {tag}: skipped (RENKETSU_TEST_PG_URL is unset; set it with RENKETSU_TEST_PG_URL=$(scripts/postgres.sh))"
            );
            return None;
        };
        let db = format!("lu_bench_{}_{tag}", std::process::id());
        let pool = sqlx::PgPool::connect(&admin)
            .await
            .expect("connect to RENKETSU_TEST_PG_URL");
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{db}\"")))
            .execute(&pool)
            .await
            .expect("create the bench database");
        pool.close().await;
        let (base, _) = admin
            .rsplit_once('/')
            .expect("a postgres:// URL names a database");
        Some(Self {
            name: "PostgreSQL",
            url: format!("{base}/{db}"),
            pg_admin: Some((admin, db)),
            _dir: None,
        })
    }

    async fn drop_db(&self) {
        if let Some((admin, db)) = &self.pg_admin {
            let pool = sqlx::PgPool::connect(admin).await.expect("connect");
            sqlx::query(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"
            )))
            .execute(&pool)
            .await
            .expect("drop the bench database");
            pool.close().await;
        }
    }
}

fn project_row(holders: &[&str]) -> ProjectRow {
    project_row_with(PROJECT, holders, SCHEMA)
}

/// A project `name` of `holders` linked with the schema `schema_toml`.
fn project_row_with(name: &str, holders: &[&str], schema_toml: &str) -> ProjectRow {
    ProjectRow {
        name: name.to_owned(),
        holders: holders.iter().map(|h| (*h).to_owned()).collect(),
        researcher: "researcher".to_owned(),
        researcher_public_key: vec![9u8; 32],
        schema_toml: schema_toml.as_bytes().to_vec(),
        schema_digest: hex::encode(Sha256::digest(schema_toml.as_bytes())),
        duplicates: Vec::new(),
        pid_salt: vec![7u8; 32],
        stale: false,
        created_unix_ms: 0,
    }
}

/// A running linkage unit and a way to make clients of it.
struct Lu {
    ca: DevCa,
    port: u16,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    store: LuStore,
}

impl Lu {
    async fn start(store: LuStore) -> Self {
        let ca = DevCa::generate().expect("dev CA");
        let cert = ca
            .issue_server(&["localhost"], &["127.0.0.1".parse().expect("ip")])
            .expect("server certificate");
        let tls = TlsMaterial {
            cert_pem: cert.cert_pem.into_bytes(),
            key_pem: zeroize::Zeroizing::new(cert.key_pem.as_bytes().to_vec()),
            client_ca_pem: ca.cert_pem().into_bytes(),
        };
        let service =
            LinkageUnitService::new(store.clone(), Arc::new(SystemClock), LuSettings::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server::run(listener, &tls, service, async {
                let _ = stop_rx.await;
            })
            .await
            .expect("linkage unit serves");
        });
        Self {
            ca,
            port,
            stop,
            task,
            store,
        }
    }

    async fn client(&self, party: &str, role: Role) -> LinkageUnitClient<Channel> {
        let cert = self
            .ca
            .issue_client(party, role)
            .expect("client certificate");
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.ca.cert_pem()))
            .identity(Identity::from_pem(&cert.cert_pem, &*cert.key_pem))
            .domain_name("localhost");
        let channel = Endpoint::from_shared(format!("https://127.0.0.1:{}", self.port))
            .expect("endpoint")
            .tls_config(tls)
            .expect("tls")
            .connect()
            .await
            .expect("connect");
        LinkageUnitClient::new(channel)
            .max_decoding_message_size(server::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(server::MAX_MESSAGE_BYTES)
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
        self.store.close().await;
    }
}

/// The upload of `renketsu lu upload`: upload id, status, one stream of the missing chunks.
async fn upload(client: &mut LinkageUnitClient<Channel>, bytes: &[u8]) -> v1::UploadStatus {
    let upload_id = hex::encode(Sha256::digest(bytes));
    let stored = match client
        .get_upload_status(v1::GetUploadStatusRequest {
            project: PROJECT.to_owned(),
            upload_id: upload_id.clone(),
        })
        .await
    {
        Ok(s) => s.into_inner().stored_chunks,
        Err(s) if s.code() == tonic::Code::NotFound => Vec::new(),
        Err(s) => panic!("GetUploadStatus: {s}"),
    };
    let chunks: Vec<&[u8]> = bytes.chunks(CHUNK).collect();
    let total = chunks.len() as u32;
    let messages: Vec<v1::UploadChunk> = (0..total)
        .filter(|i| !stored.contains(i))
        .map(|i| {
            let data = chunks[i as usize];
            v1::UploadChunk {
                project: PROJECT.to_owned(),
                kind: v1::UploadKind::Tokens as i32,
                upload_id: upload_id.clone(),
                total_chunks: total,
                total_bytes: bytes.len() as u64,
                index: i,
                data: data.to_vec(),
                sha256: Sha256::digest(data).to_vec(),
            }
        })
        .collect();
    client
        .upload(tokio_stream::iter(messages))
        .await
        .expect("Upload")
        .into_inner()
}

async fn bench_upload(backend: Backend, records: u64, recipes: &[usize]) {
    let store = LuStore::connect(&backend.url).await.expect("store");
    store
        .create_project(&project_row(&[LARGE]))
        .await
        .expect("project");
    let mut file = TokenFile::new(LARGE, records, recipes, 0, 1);
    let mut bytes = Vec::new();
    while let Some(c) = file.next_chunk() {
        bytes.extend_from_slice(&c);
    }
    let lu = Lu::start(store).await;
    let mut client = lu.client(LARGE, Role::DataHolder).await;
    let start = Instant::now();
    let status = upload(&mut client, &bytes).await;
    let secs = start.elapsed().as_secs_f64();
    assert!(status.complete, "the upload completes");
    assert_eq!(status.records, records, "every record stored");
    let tokens = records * recipes.len() as u64;
    println!(
        "  upload, {:<10} {records} records × {} tokens ({:.1} MB): {secs:.2} s = {:.0} tokens/s, {:.1} MB/s (target >= 500000 tokens/s)",
        backend.name,
        recipes.len(),
        bytes.len() as f64 / 1e6,
        tokens as f64 / secs,
        bytes.len() as f64 / 1e6 / secs,
    );
    drop(client);
    lu.stop().await;
    backend.drop_db().await;
}

/// Streams one generated token file into the store as a complete upload; its size in bytes.
async fn store_tokens(store: &LuStore, make: impl Fn() -> TokenFile) -> u64 {
    store_upload(store, v1::UploadKind::Tokens, make).await
}

/// [`store_tokens`] as an upload of `kind` (a token batch accumulates).
async fn store_upload(store: &LuStore, kind: v1::UploadKind, make: impl Fn() -> TokenFile) -> u64 {
    let (party, records) = {
        let f = make();
        (f.party, f.records)
    };
    store_chunks(store, PROJECT, party, kind, records, || {
        let mut f = make();
        std::iter::from_fn(move || f.next_chunk())
    })
    .await
}

/// Streams one file into the store as a complete upload of `kind` for `party` of `project`,
/// the way the service stores a finished upload: its chunks (`chunks()` yields them, called
/// twice: once for the SHA-256 upload id, once to store them, so the bench never holds the
/// file), then the upload marked complete with `records`. Returns the file's size in bytes.
async fn store_chunks<I: Iterator<Item = Vec<u8>>>(
    store: &LuStore,
    project: &str,
    party: &str,
    kind: v1::UploadKind,
    records: u64,
    chunks: impl Fn() -> I,
) -> u64 {
    let mut hasher = Sha256::new();
    let (mut bytes, mut total) = (0u64, 0u32);
    for c in chunks() {
        hasher.update(&c);
        bytes += c.len() as u64;
        total += 1;
    }
    let u = UploadRow {
        project: project.to_owned(),
        party: party.to_owned(),
        upload_id: hex::encode(hasher.finalize()),
        kind: kind as i32,
        total_chunks: total,
        total_bytes: bytes,
        complete: false,
        superseded: false,
        records: 0,
        batch_seq: 0,
    };
    let u = store.begin_upload(&u, 0).await.expect("begin upload");
    for (i, c) in chunks().enumerate() {
        let digest = Sha256::digest(&c);
        store
            .put_chunk(project, party, &u.upload_id, i as u32, &digest, &c)
            .await
            .expect("put chunk");
    }
    store
        .complete_upload(&u, records, kind == v1::UploadKind::TokenBatch)
        .await
        .expect("complete upload");
    bytes
}

async fn bench_job(backend: Backend, large: u64, small: u64, overlap: f64, recipes: &[usize]) {
    let store = LuStore::connect(&backend.url).await.expect("store");
    store
        .create_project(&project_row(&[LARGE, SMALL]))
        .await
        .expect("project");
    let shared = ((small as f64 * overlap) as u64).min(large);
    let stride = (large / shared.max(1)).max(1);
    let t = Instant::now();
    let mut bytes = store_tokens(&store, || TokenFile::new(LARGE, large, recipes, 0, 1)).await;
    bytes += store_tokens(&store, || {
        TokenFile::new(SMALL, small, recipes, shared, stride)
    })
    .await;
    println!(
        "  job, {:<10} {large} + {small} records × {} tokens, {shared} linked ({:.2} GB of token files stored in {:.0} s)",
        backend.name,
        recipes.len(),
        bytes as f64 / 1e9,
        t.elapsed().as_secs_f64()
    );
    let timed = time_job(&backend, store, PROJECT, false).await;
    let records = large + small;
    assert_eq!(timed.job.records, records);
    assert_eq!(timed.job.clusters, records - shared, "clusters");
    assert_eq!(timed.job.links, shared, "cross-holder links");
    assert_eq!(timed.rows, records, "one stored result row per record");
    println!(
        "{} (target <= 60 s, <= 8 GiB)",
        timed.line("job", backend.name)
    );
    backend.drop_db().await;
}

/// The job with a token batch (issue 16): a first job, then a token batch of `batch` new
/// records of new persons on top of the large holder's upload, the incremental job that
/// applies it (SPEC.md §10.3.3) and a forced full re-link of the same state, each timed. The
/// project's schema is ndb-exact with its guarded and guard recipes made direct (the bench's
/// tokens are of direct recipes only; a guarded schema always re-links everything).
async fn bench_batch_job(
    backend: Backend,
    large: u64,
    small: u64,
    batch: u64,
    overlap: f64,
    recipes: &[usize],
) {
    let direct = direct_schema();
    let store = LuStore::connect(&backend.url).await.expect("store");
    store
        .create_project(&project_row_with(PROJECT, &[LARGE, SMALL], &direct))
        .await
        .expect("project");
    let shared = ((small as f64 * overlap) as u64).min(large);
    let stride = (large / shared.max(1)).max(1);
    store_tokens(&store, || {
        TokenFile::new(LARGE, large, recipes, 0, 1).for_schema(&direct)
    })
    .await;
    store_tokens(&store, || {
        TokenFile::new(SMALL, small, recipes, shared, stride).for_schema(&direct)
    })
    .await;
    let first = time_job(&backend, store.clone(), PROJECT, false).await;
    assert_eq!(first.job.records, large + small);
    // The timed linkage unit closed its pool.
    let store = LuStore::connect(&backend.url).await.expect("store");
    let t = Instant::now();
    store_upload(&store, v1::UploadKind::TokenBatch, || {
        TokenFile::new(LARGE, batch, recipes, 0, 1)
            .starting_at(large)
            .for_schema(&direct)
    })
    .await;
    let stored = t.elapsed().as_secs_f64();
    let inc = time_job(&backend, store, PROJECT, false).await;
    assert!(
        inc.job.mode.starts_with("incremental ("),
        "{}",
        inc.job.mode
    );
    assert_eq!(inc.job.records, large + small + batch);
    assert_eq!(
        inc.job.clusters,
        first.job.clusters + batch,
        "new records of new persons"
    );
    let store = LuStore::connect(&backend.url).await.expect("store");
    let full = time_job(&backend, store, PROJECT, true).await;
    assert_eq!(full.job.mode, "full");
    assert_eq!(
        (full.job.records, full.job.clusters, full.job.links),
        (inc.job.records, inc.job.clusters, inc.job.links)
    );
    println!(
        "  batch, {:<9} {large} + {small} records: first job wall {:.1} s (stamps {:.1} s); a batch of {batch} new records (stored in {stored:.1} s); the incremental job applying it wall {:.1} s (stamps {:.1} s, {}; {}); a full re-link of the same state wall {:.1} s (stamps {:.1} s, {}): incremental/full {:.2} (stamps)",
        backend.name,
        first.wall,
        first.stamps,
        inc.wall,
        inc.stamps,
        inc.peak,
        inc.job.mode,
        full.wall,
        full.stamps,
        full.peak,
        inc.stamps / full.stamps,
    );
    backend.drop_db().await;
}

/// ndb-exact with its guarded and guard recipes made direct: the same recipes (so the same
/// token-file headers), linkable incrementally (SPEC.md §10.3.3).
fn direct_schema() -> String {
    let s = SCHEMA
        .replace("link = \"guarded\"", "link = \"direct\"")
        .replace("link = \"guard\"", "link = \"direct\"");
    assert!(!s.contains("link = \"guard"), "every recipe direct");
    s
}

/// One job's figures: the final `GetJob`, wall seconds from `StartJob` to the poll that saw it
/// end, the job's own start–finish stamps (s), the peak RSS line and the stored result rows.
struct TimedJob {
    job: v1::Job,
    wall: f64,
    stamps: f64,
    peak: String,
    rows: u64,
}

impl TimedJob {
    /// The figures as one line of the bench's output, e.g. `  job, PostgreSQL wall 29.3 s …`.
    fn line(&self, what: &str, backend: &str) -> String {
        format!(
            "  {what}, {backend:<10} wall {:.1} s (job stamps {:.1} s), {}; {} clusters, {} links, {} rows",
            self.wall, self.stamps, self.peak, self.job.clusters, self.job.links, self.rows,
        )
    }
}

/// Starts a linkage unit on `store`, has an admin start a job of `project` and polls it every
/// 100 ms until it ends; panics unless it ends DONE.
async fn time_job(backend: &Backend, store: LuStore, project: &str, full: bool) -> TimedJob {
    let lu = Lu::start(store.clone()).await;
    let mut admin = lu.client("admin", Role::Admin).await;
    let before = peak_rss_bytes();
    let reset = reset_peak_rss();
    let start = Instant::now();
    let job = admin
        .start_job(v1::StartJobRequest {
            project: project.to_owned(),
            full,
        })
        .await
        .expect("StartJob")
        .into_inner();
    let job = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let j = admin
            .get_job(v1::GetJobRequest {
                project: project.to_owned(),
                job_id: job.job_id,
            })
            .await
            .expect("GetJob")
            .into_inner();
        if j.state != v1::JobState::Running as i32 {
            break j;
        }
    };
    let wall = start.elapsed().as_secs_f64();
    let peak = peak_rss_bytes();
    assert_eq!(
        job.state,
        v1::JobState::Done as i32,
        "job failed: {}",
        job.error
    );
    let rows = on_rows(&backend.url, project).await;
    let peak = match (peak, reset) {
        (Some(p), true) => format!("peak RSS {:.2} GiB", gib(p)),
        (Some(p), false) => format!(
            "peak RSS {:.2} GiB (process lifetime; clear_refs unavailable; before the job {:.2} GiB)",
            gib(p),
            gib(before.unwrap_or(0))
        ),
        (None, _) => "peak RSS unavailable (no /proc)".to_owned(),
    };
    drop(admin);
    lu.stop().await;
    TimedJob {
        stamps: (job.finished_unix_ms - job.started_unix_ms) as f64 / 1000.0,
        job,
        wall,
        peak,
        rows,
    }
}

/// Streams one holder's token file (a real one, e.g. from `renketsu tokenize`) into the store
/// as a complete upload of 1 MiB chunks, read twice from disk (digest, then chunks) so the
/// bench never holds the file; returns (party, records, bytes).
async fn store_token_file(store: &LuStore, project: &str, path: &str) -> (String, u64, u64) {
    use std::io::Read as _;
    let open = || std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let reader = token_file::Reader::new(std::io::BufReader::new(open()), path)
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let party = reader.header().party.clone();
    assert_eq!(
        reader.header().project,
        project,
        "{path}: every token file of the scored bench must be made for one project"
    );
    drop(reader);
    let records = {
        let mut r = token_file::Reader::new(std::io::BufReader::new(open()), path)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut batches = Vec::new();
        while r
            .next_batches(&mut batches)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
        {}
        r.counts().expect("trailer").records
    };
    let chunks = || {
        let mut f = open();
        std::iter::from_fn(move || {
            let mut buf = Vec::with_capacity(CHUNK);
            let n = f
                .by_ref()
                .take(CHUNK as u64)
                .read_to_end(&mut buf)
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            (n > 0).then_some(buf)
        })
    };
    let bytes = store_chunks(
        store,
        project,
        &party,
        v1::UploadKind::Tokens,
        records,
        chunks,
    )
    .await;
    (party, records, bytes)
}

/// The scored job (issue 15): the holders' real token files (`LU_BENCH_SCORED_INPUTS`, comma
/// separated paths) linked with their schema (`LU_BENCH_SCORED_SCHEMA`) by the linkage unit's
/// full Fellegi–Sunter job: candidates, comparison vectors, training, thresholds, guarded
/// clustering. Compare the wall time with `renketsu link` on the same token files.
async fn bench_scored_job(backend: Backend, schema_path: &str, inputs: &[String]) {
    let schema_toml =
        std::fs::read_to_string(schema_path).unwrap_or_else(|e| panic!("{schema_path}: {e}"));
    let project = {
        let r = token_file::Reader::new(
            std::io::BufReader::new(std::fs::File::open(&inputs[0]).expect("token file")),
            &inputs[0],
        )
        .expect("token file header");
        r.header().project.clone()
    };
    let store = LuStore::connect(&backend.url).await.expect("store");
    let t = Instant::now();
    let mut parties = Vec::new();
    let (mut records, mut bytes) = (0u64, 0u64);
    // The project row first (uploads refer to it), with the parties read from the headers.
    let headers: Vec<String> = inputs
        .iter()
        .map(|p| {
            token_file::Reader::new(
                std::io::BufReader::new(std::fs::File::open(p).expect("token file")),
                p,
            )
            .expect("token file header")
            .header()
            .party
            .clone()
        })
        .collect();
    let holders: Vec<&str> = headers.iter().map(String::as_str).collect();
    store
        .create_project(&project_row_with(&project, &holders, &schema_toml))
        .await
        .expect("project");
    for p in inputs {
        let (party, n, b) = store_token_file(&store, &project, p).await;
        parties.push(format!("{party} {n}"));
        records += n;
        bytes += b;
    }
    println!(
        "  scored job, {:<10} {} records ({}), {:.2} GB of token files stored in {:.0} s",
        backend.name,
        records,
        parties.join(" + "),
        bytes as f64 / 1e9,
        t.elapsed().as_secs_f64()
    );
    let timed = time_job(&backend, store, &project, false).await;
    assert_eq!(timed.job.records, records, "every stored record in the job");
    assert_eq!(timed.rows, records, "one stored result row per record");
    println!("{}", timed.line("scored job", backend.name));
    backend.drop_db().await;
}

async fn on_rows(url: &str, project: &str) -> u64 {
    let sql = "SELECT CAST(SUM(records) AS BIGINT) FROM lu_member_chunks WHERE project = $1";
    let n: i64 = if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.expect("connect");
        let n = sqlx::query_scalar(sql)
            .bind(project)
            .fetch_one(&pool)
            .await
            .expect("count");
        pool.close().await;
        n
    } else {
        let pool = sqlx::PgPool::connect(url).await.expect("connect");
        let n = sqlx::query_scalar(sql)
            .bind(project)
            .fetch_one(&pool)
            .await
            .expect("count");
        pool.close().await;
        n
    };
    n as u64
}

fn main() {
    // The service's own log (e.g. the job's stage times) with RUST_LOG=info.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let upload_records: u64 = env_num("LU_BENCH_UPLOAD_RECORDS", 20_000);
    let tokens: usize = env_num("LU_BENCH_TOKENS", 7);
    let large: u64 = env_num("LU_BENCH_LARGE", 100_000);
    let small: u64 = env_num("LU_BENCH_SMALL", 10_000);
    let overlap: f64 = env_num("LU_BENCH_OVERLAP", 0.5);
    let job_sqlite: u8 = env_num("LU_BENCH_JOB_SQLITE", 1);
    let batch_percent: f64 = env_num("LU_BENCH_BATCH_PERCENT", 0.0);
    let recipes = direct_recipes(tokens);
    let scored_schema = std::env::var("LU_BENCH_SCORED_SCHEMA").ok();
    let scored_inputs: Vec<String> = std::env::var("LU_BENCH_SCORED_INPUTS")
        .map(|v| v.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        println!(
            "linkage unit benchmarks (load average at start: {})",
            load()
        );
        bench_upload(Backend::sqlite(), upload_records, &recipes).await;
        if let Some(pg) = Backend::postgres("upload").await {
            bench_upload(pg, upload_records, &recipes).await;
        }
        if job_sqlite != 0 {
            bench_job(Backend::sqlite(), large, small, overlap, &recipes).await;
        }
        if let Some(pg) = Backend::postgres("job").await {
            bench_job(pg, large, small, overlap, &recipes).await;
        }
        if batch_percent > 0.0 {
            let batch = ((large as f64) * batch_percent / 100.0).round().max(1.0) as u64;
            if job_sqlite != 0 {
                bench_batch_job(Backend::sqlite(), large, small, batch, overlap, &recipes).await;
            }
            if let Some(pg) = Backend::postgres("batch").await {
                bench_batch_job(pg, large, small, batch, overlap, &recipes).await;
            }
        }
        if let Some(schema) = &scored_schema {
            assert!(
                scored_inputs.len() >= 2,
                "LU_BENCH_SCORED_INPUTS: at least two token files, comma separated"
            );
            if job_sqlite != 0 {
                bench_scored_job(Backend::sqlite(), schema, &scored_inputs).await;
            }
            if let Some(pg) = Backend::postgres("scored").await {
                bench_scored_job(pg, schema, &scored_inputs).await;
            }
        }
        println!("load average at end: {}", load());
    });
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}
