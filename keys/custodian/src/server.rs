//! Running the custodian: `run(listener, tls, store, clock, settings, shutdown)`, in the style
//! of tokio's mini-redis `server::run` (a bound listener and a shutdown future, so tests bind
//! port 0 on loopback and stop the server when they are done).
//!
//! TLS is mandatory and mutual: the server presents its certificate and requires a client
//! certificate chaining to `client_ca` (rustls via tonic's `tls-ring`). A client without a
//! certificate fails the handshake and never reaches a handler.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use renketsu_keys::lifecycle::Clock;
use renketsu_protocol::v1::key_custodian_server::KeyCustodianServer;
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::policy::PolicyStore;
use crate::service::{CustodianService, ServiceSettings};
use crate::store::CustodianStore;

/// Largest gRPC message accepted or sent: enough for a 65,536-element batch (32 bytes + 2
/// bytes framing each) with room to spare.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A TLS file could not be read.
    #[error("cannot read TLS file {path}: {source}")]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The TLS configuration or the transport failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The TLS material is not usable (PEM, key, client CA).
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// PEM material for mutual TLS.
#[derive(Clone)]
pub struct TlsMaterial {
    /// Server certificate chain (PEM).
    pub cert_pem: Vec<u8>,
    /// Server private key (PEM).
    pub key_pem: zeroize::Zeroizing<Vec<u8>>,
    /// CA certificate(s) client certificates must chain to (PEM).
    pub client_ca_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsMaterial(<key redacted>)")
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ServerError> {
    std::fs::read(path).map_err(|source| ServerError::TlsFile {
        path: path.to_owned(),
        source,
    })
}

impl TlsMaterial {
    /// Reads the three PEM files.
    pub fn load(cert: &Path, key: &Path, client_ca: &Path) -> Result<Self, ServerError> {
        Ok(Self {
            cert_pem: read(cert)?,
            key_pem: zeroize::Zeroizing::new(read(key)?),
            client_ca_pem: read(client_ca)?,
        })
    }

    /// The tonic server TLS configuration: this identity, client certificates required and
    /// verified against the client CA.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &*self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.client_ca_pem))
            .client_auth_optional(false)
            .timeout(Duration::from_secs(10))
    }
}

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection that completed the mutual-TLS handshake.
pub type TlsConn = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

impl TlsMaterial {
    /// The rustls server configuration: this identity, client certificates required and
    /// verified against the client CA, ALPN `h2`.
    ///
    /// # Errors
    /// [`ServerError::Tls`] for unreadable PEM, a key that does not fit, or no client CA.
    pub fn rustls_config(&self) -> Result<rustls::ServerConfig, ServerError> {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let tls = |what: &str, e: &dyn std::fmt::Display| ServerError::Tls(format!("{what}: {e}"));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = CertificateDer::pem_slice_iter(&self.cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls("server certificate", &e))?;
        let key =
            PrivateKeyDer::from_pem_slice(&self.key_pem).map_err(|e| tls("server key", &e))?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(&self.client_ca_pem) {
            roots
                .add(ca.map_err(|e| tls("client CA", &e))?)
                .map_err(|e| tls("client CA", &e))?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&provider),
        )
        .build()
        .map_err(|e| tls("client CA", &e))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls("protocol versions", &e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .map_err(|e| tls("server certificate and key", &e))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

/// Accepts connections on `listener` and completes each mutual-TLS handshake (at most 10 s):
/// the connections that pass come out of the stream; every refused handshake (no client
/// certificate, one from another CA, an expired one, plain TCP) is logged with the peer
/// address and rustls' reason (SPEC.md §8.2), as `server` ("key custodian", "linkage unit").
/// The accept loop ends when the stream is dropped.
///
/// # Errors
/// [`ServerError::Tls`] for unusable TLS material.
pub fn tls_incoming(
    listener: TcpListener,
    tls: &TlsMaterial,
    server: &'static str,
) -> Result<tokio_stream::wrappers::ReceiverStream<Result<TlsConn, std::io::Error>>, ServerError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls.rustls_config()?));
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = tx.closed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(server, error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Small request/response messages: do not let Nagle's algorithm delay them.
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(conn)) => {
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(server, %peer, error = %e, "TLS handshake refused");
                    }
                    Err(_) => {
                        tracing::warn!(server, %peer, "TLS handshake refused: timed out");
                    }
                }
            });
        }
    });
    Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Serves `renketsu.v1.KeyCustodian` on `listener` with mutual TLS until `shutdown`
/// completes, then stops accepting and lets in-flight calls finish.
///
/// # Errors
/// [`ServerError::Transport`] if the TLS configuration is invalid or serving fails.
pub async fn run<S>(
    listener: TcpListener,
    tls: &TlsMaterial,
    store: S,
    clock: Arc<dyn Clock>,
    settings: ServiceSettings,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError>
where
    S: CustodianStore + PolicyStore + 'static,
{
    let service = CustodianService::new(store, clock, settings);
    serve(listener, tls, service, shutdown).await
}

/// [`run`] with a service built by the caller (tests that also need the store).
///
/// # Errors
/// As [`run`].
pub async fn serve<S>(
    listener: TcpListener,
    tls: &TlsMaterial,
    service: CustodianService<S>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError>
where
    S: CustodianStore + PolicyStore + 'static,
{
    let addr = listener.local_addr().ok();
    // The handshake is done here, not by tonic, so that refused handshakes are logged.
    let incoming = tls_incoming(listener, tls, "key custodian")?;
    tracing::info!(?addr, "key custodian serving (mutual TLS)");
    Server::builder()
        .add_service(
            KeyCustodianServer::new(service)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    tracing::info!("key custodian stopped");
    Ok(())
}
