//! Mutual TLS for both services and their clients (SPEC.md §8.2).
//!
//! TLS is mandatory and mutual: a server presents its certificate and requires a client
//! certificate chaining to its client CA ([`TlsMaterial::server_config`], rustls via tonic's
//! `tls-ring`); a client without a certificate fails the handshake and never reaches a
//! handler. Clients connect with [`tls_channel`] from a [`ConnectConfig`] (URL and PEM
//! files), and retry transient statuses by [`RetryPolicy`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_stream::Stream;
use tonic::Code;
use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig,
};
use zeroize::Zeroizing;

/// Errors starting or running a server.
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

/// A server's PEM material for mutual TLS. The key is zeroized on drop and never printed by
/// `Debug`.
#[derive(Clone)]
pub struct TlsMaterial {
    /// Server certificate chain (PEM).
    pub cert_pem: Vec<u8>,
    /// Server private key (PEM).
    pub key_pem: Zeroizing<Vec<u8>>,
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
    ///
    /// # Errors
    /// [`ServerError::TlsFile`] naming the first file that cannot be read.
    pub fn load(cert: &Path, key: &Path, client_ca: &Path) -> Result<Self, ServerError> {
        Ok(Self {
            cert_pem: read(cert)?,
            key_pem: Zeroizing::new(read(key)?),
            client_ca_pem: read(client_ca)?,
        })
    }

    /// The tonic server TLS configuration: this identity, client certificates required and
    /// verified against the client CA, a 10 s handshake timeout.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &*self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.client_ca_pem))
            .client_auth_optional(false)
            .timeout(Duration::from_secs(10))
    }
}

/// The connections accepted on `listener`, with Nagle's algorithm off (the services'
/// request and response messages are small: do not let the kernel delay them). For
/// `Server::serve_with_incoming_shutdown`.
pub fn nodelay_incoming(
    listener: TcpListener,
) -> impl Stream<Item = std::io::Result<TcpStream>> + Send + 'static {
    tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |conn| {
            if let Ok(stream) = &conn {
                let _ = stream.set_nodelay(true);
            }
            conn
        },
    )
}

/// Retry policy for transient failures (`UNAVAILABLE`, `DEADLINE_EXCEEDED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, including the first (≥ 1).
    pub max_attempts: u32,
    /// Upper bound of the first delay.
    pub initial_backoff: Duration,
    /// Cap of the delay bound.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 6 attempts, delays bounded by 200 ms, 400 ms, 800 ms, 1.6 s, 3.2 s (cap 10 s).
    fn default() -> Self {
        Self {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `attempt` (1 = the first retry), with `unit` uniform in
    /// `[0, 1)`: `unit · min(max_backoff, initial_backoff · 2^(attempt−1))` ("full jitter").
    pub fn backoff(&self, attempt: u32, unit: f64) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        exp.min(self.max_backoff).mul_f64(unit.clamp(0.0, 1.0))
    }

    /// Whether a status is transient and worth retrying.
    pub fn retryable(code: Code) -> bool {
        matches!(code, Code::Unavailable | Code::DeadlineExceeded)
    }
}

/// Where and how to reach a renketsu server: URL, PEM files, timeouts and retries.
#[derive(Clone, Debug)]
pub struct ConnectConfig {
    /// `https://HOST:PORT`.
    pub url: String,
    /// The CA certificate that signed the server's (and the caller's) certificate.
    pub ca_pem: PathBuf,
    /// The caller's client certificate: its subject names the party, a SAN its role.
    pub cert_pem: PathBuf,
    /// The caller's private key (PEM).
    pub key_pem: PathBuf,
    /// The name to check in the server's certificate (default: the URL's host).
    pub tls_domain: Option<String>,
    /// Per-call deadline.
    pub timeout: Duration,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
}

impl ConnectConfig {
    /// A config with default timeouts (60 s per call, 10 s to connect) and retries.
    pub fn new(url: impl Into<String>, ca_pem: &Path, cert_pem: &Path, key_pem: &Path) -> Self {
        Self {
            url: url.into(),
            ca_pem: ca_pem.to_owned(),
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            tls_domain: None,
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
        }
    }
}

/// Errors preparing a client channel. `Display` names files and URLs, never key bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// A PEM file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    ReadPem {
        /// Which file (CA certificate, client certificate, client key).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The URL or the TLS settings are not usable.
    #[error("server endpoint {url}: {reason}")]
    Endpoint {
        /// The URL as given.
        url: String,
        /// Why it is refused.
        reason: String,
    },
}

fn read_pem(what: &'static str, path: &Path) -> Result<Zeroizing<Vec<u8>>, ChannelError> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|source| ChannelError::ReadPem {
            what,
            path: path.to_owned(),
            source,
        })
}

/// A lazily connecting mutual-TLS channel to a renketsu server (the custodian or the linkage
/// unit) from `config`'s URL and PEM files. Must be called within a Tokio runtime; an
/// unreachable server shows up on the first call as `UNAVAILABLE`.
///
/// # Errors
/// [`ChannelError::ReadPem`] for an unreadable file, [`ChannelError::Endpoint`] for a URL
/// that is not `https://HOST:PORT` or TLS settings tonic refuses.
pub fn tls_channel(config: &ConnectConfig) -> Result<Channel, ChannelError> {
    let endpoint_err = |reason: String| ChannelError::Endpoint {
        url: config.url.clone(),
        reason,
    };
    if !config.url.starts_with("https://") {
        return Err(endpoint_err(
            "must start with https:// (renketsu servers only speak mutual TLS)".to_owned(),
        ));
    }
    let ca = read_pem("CA certificate", &config.ca_pem)?;
    let cert = read_pem("client certificate", &config.cert_pem)?;
    let key = read_pem("client key", &config.key_pem)?;
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&*ca))
        .identity(Identity::from_pem(&*cert, &*key));
    if let Some(d) = &config.tls_domain {
        tls = tls.domain_name(d.clone());
    }
    let endpoint = Endpoint::from_shared(config.url.clone())
        .map_err(|e| endpoint_err(e.to_string()))?
        .tls_config(tls)
        .map_err(|e| endpoint_err(e.to_string()))?
        .timeout(config.timeout)
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true);
    Ok(endpoint.connect_lazy())
}

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection that completed the mutual-TLS handshake.
pub type TlsConn = tokio_rustls::server::TlsStream<TcpStream>;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_capped() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1, 1.0), Duration::from_millis(200));
        assert_eq!(p.backoff(3, 0.5), Duration::from_millis(400));
        assert_eq!(p.backoff(30, 1.0), Duration::from_secs(10));
        assert!(RetryPolicy::retryable(Code::Unavailable));
        assert!(!RetryPolicy::retryable(Code::PermissionDenied));
    }

    #[tokio::test]
    async fn plaintext_urls_and_missing_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let c = ConnectConfig::new("http://localhost:1", &missing, &missing, &missing);
        assert!(matches!(
            tls_channel(&c),
            Err(ChannelError::Endpoint { .. })
        ));
        let c = ConnectConfig::new("https://localhost:1", &missing, &missing, &missing);
        assert!(matches!(
            tls_channel(&c),
            Err(ChannelError::ReadPem {
                what: "CA certificate",
                ..
            })
        ));
    }
}
