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
    // Small request/response messages: do not let Nagle's algorithm delay them.
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |conn| {
            if let Ok(stream) = &conn {
                let _ = stream.set_nodelay(true);
            }
            conn
        },
    );
    tracing::info!(?addr, "key custodian serving (mutual TLS)");
    Server::builder()
        .tls_config(tls.server_config())?
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
