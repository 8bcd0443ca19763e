//! Set-up shared by the linkage unit's service-level suites (service_suite.rs, lifecycle.rs,
//! longitudinal.rs, batches.rs): the store backends to run on, a development PKI, a linkage unit served
//! over loopback with mutual TLS, and the calls the suites make of it (upload, create, wait,
//! mapping), and the header of their embedded-mode token files.
#![allow(dead_code, reason = "each suite uses part of the set-up")]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use renketsu_keys::content::ContentSealer;
use renketsu_keys::lifecycle::SystemClock;
use renketsu_linkage::token_file::{FORMAT, Header, MODE_HMAC, RecipeRef, SchemaRef, VERSION};
use renketsu_linkage_unit::content_file::{self, ContentHeader};
use renketsu_linkage_unit::service::{LinkageUnitService, LuSettings};
use renketsu_linkage_unit::store::LuStore;
use renketsu_protocol::v1;
use renketsu_protocol::v1::linkage_unit_client::LinkageUnitClient;
use renketsu_rpc::pki::{DevCa, IssuedCert, Role};
use renketsu_rpc::tls::TlsMaterial;
use sha2::{Digest as _, Sha256};
use sqlx::Connection as _;
use tokio::sync::oneshot;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub const SCHEMA: &str = include_str!("../../../../schemas/jp-person-exact.toml");
pub const RECIPES: [(&str, u32); 4] = [
    ("kana_name_dob_sex", 2),
    ("kana_fuzzy_dob_sex", 1),
    ("kanji_name_dob_sex", 2),
    ("kana_fuzzy_postal", 1),
];

/// Store URLs to run on: a fresh SQLite file, and a fresh PostgreSQL database if configured.
pub async fn backends(dir: &std::path::Path) -> Vec<String> {
    let mut urls = vec![format!("sqlite://{}", dir.join("lu.db").display())];
    if let Ok(base) = std::env::var("RENKETSU_TEST_PG_URL") {
        let name = format!("lu_test_{}", hex::encode(rand::random::<[u8; 6]>()));
        let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .unwrap();
        let (head, _) = base.rsplit_once('/').unwrap();
        let tail = base.rsplit_once('/').unwrap().1;
        let query = tail
            .split_once('?')
            .map(|(_, q)| format!("?{q}"))
            .unwrap_or_default();
        urls.push(format!("{head}/{name}{query}"));
    } else if std::env::var_os("CI").is_some() {
        panic!(
            "CI runs the linkage-unit suite on PostgreSQL too: set RENKETSU_TEST_PG_URL (scripts/test.sh does)"
        );
    }
    urls
}

pub struct Pki {
    pub ca: DevCa,
    pub server: IssuedCert,
}

impl Pki {
    pub fn new() -> Self {
        let ca = DevCa::generate().unwrap();
        let server = ca
            .issue_server(&["localhost"], &["127.0.0.1".parse().unwrap()])
            .unwrap();
        Self { ca, server }
    }
}

pub struct TestLu {
    pub addr: SocketAddr,
    pub store: LuStore,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl TestLu {
    /// The suite's projects are a handful of records: no minimum release size.
    pub async fn start(pki: &Pki, url: &str) -> Self {
        let settings = LuSettings {
            min_release_clusters: 0,
            ..LuSettings::default()
        };
        Self::start_with(pki, url, settings).await
    }

    pub async fn start_with(pki: &Pki, url: &str, settings: LuSettings) -> Self {
        let store = LuStore::connect(url).await.unwrap();
        let service = LinkageUnitService::new(store.clone(), Arc::new(SystemClock), settings);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = TlsMaterial {
            cert_pem: pki.server.cert_pem.clone().into_bytes(),
            key_pem: zeroize::Zeroizing::new(pki.server.key_pem.as_bytes().to_vec()),
            client_ca_pem: pki.ca.cert_pem().into_bytes(),
        };
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            renketsu_linkage_unit::server::run(listener, &tls, service, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Self {
            addr,
            store,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn client(&self, pki: &Pki, who: Option<(&str, Role)>) -> LinkageUnitClient<Channel> {
        let mut tls =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pki.ca.cert_pem()));
        if let Some((party, role)) = who {
            let c = pki.ca.issue_client(party, role).unwrap();
            tls = tls.identity(Identity::from_pem(&c.cert_pem, c.key_pem.as_bytes()));
        }
        let endpoint = Endpoint::from_shared(format!("https://127.0.0.1:{}", self.addr.port()))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .timeout(Duration::from_secs(60));
        LinkageUnitClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.unwrap();
        }
        self.store.close().await;
    }
}

pub fn schema_digest() -> String {
    hex::encode(Sha256::digest(SCHEMA.as_bytes()))
}

/// The header of an embedded-mode (HMAC) token file of `party` for `project`, made on
/// `today` with the recipes of [`RECIPES`].
pub fn header(project: &str, party: &str, today: &str) -> Header {
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
        today: today.to_owned(),
        created_by: "test".to_owned(),
        dice: Vec::new(),
    }
}

/// The token of `person` for recipe `r`: what any holder of that person makes.
pub fn token(person: &str, r: usize) -> [u8; 32] {
    Sha256::digest(format!("{person}/{r}").as_bytes()).into()
}

pub fn content_file(project: &str, party: &str, pk: &[u8; 32], rows: &[(&str, &str)]) -> Vec<u8> {
    let sealer = ContentSealer::new(pk, project, party).unwrap();
    let mut out = Vec::new();
    content_file::encode_header(
        &mut out,
        &ContentHeader {
            format: content_file::FORMAT.to_owned(),
            version: content_file::VERSION,
            project: project.to_owned(),
            party: party.to_owned(),
            columns: vec!["prefecture".to_owned()],
            researcher_public_key: hex::encode(pk),
            encapsulated_key: B64.encode(sealer.encapsulated_key()),
        },
    );
    for (id, v) in rows {
        content_file::encode_record(&mut out, id, &sealer.seal(&[(*v).to_owned()]));
    }
    content_file::encode_trailer(&mut out, rows.len() as u64);
    out
}

pub fn chunks_of(
    project: &str,
    kind: v1::UploadKind,
    bytes: &[u8],
    size: usize,
) -> Vec<v1::UploadChunk> {
    let id = hex::encode(Sha256::digest(bytes));
    let parts: Vec<&[u8]> = bytes.chunks(size).collect();
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

pub async fn upload(
    c: &mut LinkageUnitClient<Channel>,
    project: &str,
    kind: v1::UploadKind,
    bytes: &[u8],
) -> v1::UploadStatus {
    c.upload(tokio_stream::iter(chunks_of(project, kind, bytes, 700)))
        .await
        .unwrap()
        .into_inner()
}

pub async fn create(
    admin: &mut LinkageUnitClient<Channel>,
    project: &str,
    holders: &[&str],
    pk: &[u8; 32],
) {
    admin
        .create_linkage_project(v1::CreateLinkageProjectRequest {
            project: project.to_owned(),
            holders: holders.iter().map(|h| (*h).to_owned()).collect(),
            researcher: "researcher".to_owned(),
            researcher_public_key: pk.to_vec(),
            schema_toml: SCHEMA.as_bytes().to_vec(),
            duplicates: vec![],
        })
        .await
        .unwrap();
}

pub async fn wait_done(admin: &mut LinkageUnitClient<Channel>, project: &str) -> v1::Job {
    for _ in 0..600 {
        let j = admin
            .get_job(v1::GetJobRequest {
                project: project.to_owned(),
                job_id: 0,
            })
            .await
            .unwrap()
            .into_inner();
        if j.state != v1::JobState::Running as i32 {
            assert_eq!(j.state, v1::JobState::Done as i32, "{j:?}");
            return j;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job of {project} did not finish");
}

pub async fn mapping(
    c: &mut LinkageUnitClient<Channel>,
    project: &str,
) -> Result<BTreeMap<String, String>, tonic::Status> {
    let mut s = c
        .fetch_mapping(v1::FetchMappingRequest {
            project: project.to_owned(),
        })
        .await?
        .into_inner();
    let mut out = BTreeMap::new();
    while let Some(m) = s.message().await? {
        for (id, pid) in m.record_ids.into_iter().zip(m.pseudonyms) {
            assert!(out.insert(id, pid).is_none(), "a record twice in a mapping");
        }
    }
    Ok(out)
}
