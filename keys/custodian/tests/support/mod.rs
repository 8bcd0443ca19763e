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
use renketsu_custodian::store::{CustodianStore, SqliteStore};
use renketsu_keys::audit::AuditEntry;
use renketsu_keys::lifecycle::MockClock;
use renketsu_keys::seal::KekRing;
use renketsu_protocol::v1::key_custodian_client::KeyCustodianClient;
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
    pub service: CustodianService<SqliteStore>,
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
        let store = SqliteStore::connect(&url, KekRing::generate(&mut rand::rng()))
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

    pub fn store(&self) -> &SqliteStore {
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
