//! Shared test support: an in-memory development PKI, a custodian served over real mutual TLS
//! on a loopback port, and clients for any (party, role) or none.

#![allow(
    dead_code,
    reason = "each test file uses a different part of the support module"
)]

use std::net::SocketAddr;
use std::sync::Arc;

use renketsu_custodian::pki::{DevCa, IssuedCert, Role};
use renketsu_custodian::server::{self, TlsMaterial};
use renketsu_custodian::service::{CustodianService, ServiceSettings};
use renketsu_custodian::store::{CustodianStore, Store};
use renketsu_keys::audit::AuditEntry;
use renketsu_keys::lifecycle::MockClock;
use renketsu_keys::seal::KekRing;
use renketsu_protocol::v1::key_custodian_client::KeyCustodianClient;
use sqlx::{AssertSqlSafe, Connection as _};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A CA and the custodian's server certificate.
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

    pub fn tls(&self) -> TlsMaterial {
        TlsMaterial {
            cert_pem: self.server.cert_pem.clone().into_bytes(),
            key_pem: zeroize::Zeroizing::new(self.server.key_pem.as_bytes().to_vec()),
            client_ca_pem: self.ca.cert_pem().into_bytes(),
        }
    }
}

/// A running custodian on 127.0.0.1:<random port>.
pub struct TestServer {
    pub addr: SocketAddr,
    pub service: CustodianService<Store>,
    pub clock: MockClock,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts a custodian over a fresh SQLite file with the given settings.
    pub async fn start(pki: &Pki, settings: ServiceSettings) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("custodian.db").display());
        Self::start_on(pki, settings, &url, dir).await
    }

    /// Starts a custodian over the store at `url` (SQLite or PostgreSQL, see [`TestDb`]).
    pub async fn start_on(
        pki: &Pki,
        settings: ServiceSettings,
        url: &str,
        dir: tempfile::TempDir,
    ) -> Self {
        let store = Store::connect(url, KekRing::generate(&mut rand::rng()))
            .await
            .unwrap();
        let clock = MockClock::default();
        let service = CustodianService::new(store, Arc::new(clock.clone()), settings);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let tls = pki.tls();
        let svc = service.clone();
        let handle = tokio::spawn(async move {
            server::serve(listener, &tls, svc, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Self {
            addr,
            service,
            clock,
            shutdown: Some(tx),
            handle: Some(handle),
            _dir: dir,
        }
    }

    pub fn store(&self) -> &Store {
        self.service.store()
    }

    /// A client presenting a certificate for (party, role).
    pub fn client(&self, pki: &Pki, party: &str, role: Role) -> KeyCustodianClient<Channel> {
        let cert = pki.ca.issue_client(party, role).unwrap();
        self.client_with(pki, Some(&cert))
    }

    /// A client presenting `cert`, or no certificate at all.
    pub fn client_with(&self, pki: &Pki, cert: Option<&IssuedCert>) -> KeyCustodianClient<Channel> {
        let mut tls =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pki.ca.cert_pem()));
        if let Some(c) = cert {
            tls = tls.identity(Identity::from_pem(&c.cert_pem, c.key_pem.as_bytes()));
        }
        let endpoint = Endpoint::from_shared(format!("https://127.0.0.1:{}", self.addr.port()))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .timeout(std::time::Duration::from_secs(30));
        KeyCustodianClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024)
    }

    /// Every audit entry so far.
    pub async fn audit(&self) -> Vec<AuditEntry> {
        self.store().read_audit(1, 0).await.unwrap()
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.unwrap();
        }
    }
}

/// Blinded elements (VOPRF mode) for `inputs`, with the client state to finalize them.
pub fn blind_voprf(
    pk: renketsu_keys::oprf::PublicKey,
    inputs: &[&[u8]],
) -> (
    renketsu_keys::oprf::VoprfClient,
    Vec<renketsu_keys::oprf::BlindResult>,
) {
    let client = renketsu_keys::oprf::VoprfClient::new(pk);
    let blinds = inputs
        .iter()
        .map(|i| client.blind(i, &mut rand::rng()).unwrap())
        .collect();
    (client, blinds)
}

/// The wire form of blinded elements.
pub fn wire(blinds: &[renketsu_keys::oprf::BlindResult]) -> Vec<Vec<u8>> {
    blinds
        .iter()
        .map(|b| b.blinded_element.to_bytes().to_vec())
        .collect()
}

/// A database backend of the store tests.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    /// SQLite (a temporary file).
    Sqlite,
    /// PostgreSQL (a fresh database on `RENKETSU_TEST_PG_URL`).
    Postgres,
}

/// One test's private database.
pub struct TestDb {
    /// The database URL.
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    /// PostgreSQL: the admin URL and the database to drop afterwards.
    pg: Option<(String, String)>,
}

/// `url` (a PostgreSQL server URL, maybe with a database and a query) naming database `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let root = match base.find("://").map(|i| i + 3) {
        Some(start) => match base[start..].find('/') {
            Some(slash) => &base[..start + slash],
            None => base,
        },
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{db}?{q}"),
        None => format!("{root}/{db}"),
    }
}

impl TestDb {
    pub async fn new(backend: Backend, test: &str) -> Option<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("custodian.db").display());
                Some(Self {
                    url,
                    _dir: Some(dir),
                    pg: None,
                })
            }
            Backend::Postgres => {
                let Some(admin) = std::env::var("RENKETSU_TEST_PG_URL")
                    .ok()
                    .filter(|u| !u.is_empty())
                else {
                    assert!(
                        std::env::var_os("CI").is_none(),
                        "RENKETSU_TEST_PG_URL is not set: under CI the PostgreSQL store tests \
                         must run (scripts/test.sh starts a server with scripts/postgres.sh)"
                    );
                    // Straight to the stderr stream, past the test harness's capture, so the
                    // skip is visible in a normal `cargo test` run.
                    let _ = std::io::Write::write_all(
                        &mut std::io::stderr(),
                        format!(
                            "notice: skipping PostgreSQL store test {test}: RENKETSU_TEST_PG_URL is \
                             not set (run scripts/test.sh, or export \
                             RENKETSU_TEST_PG_URL=$(scripts/postgres.sh))\n"
                        )
                        .as_bytes(),
                    );
                    return None;
                };
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .subsec_nanos();
                let name = format!("rk_{test}_{}_{nanos}", std::process::id());
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .expect("connect to RENKETSU_TEST_PG_URL");
                sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.unwrap();
                Some(Self {
                    url: with_database(&admin, &name),
                    _dir: None,
                    pg: Some((admin, name)),
                })
            }
        }
    }

    pub async fn open(&self, keks: KekRing) -> Store {
        Store::connect(&self.url, keks).await.unwrap()
    }

    /// Drops the PostgreSQL database (only reached when the test passed).
    pub async fn cleanup(self) {
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
