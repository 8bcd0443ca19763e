//! Running the custodian: `run(listener, tls, store, clock, settings, shutdown)`, in the style
//! of tokio's mini-redis `server::run` (a bound listener and a shutdown future, so tests bind
//! port 0 on loopback and stop the server when they are done).
//!
//! TLS is mandatory and mutual ([`TlsMaterial`], from `renketsu_rpc::tls`): the server
//! presents its certificate and requires a client certificate chaining to `client_ca`. A
//! client without a certificate fails the handshake and never reaches a handler.

use std::future::Future;
use std::sync::Arc;

use renketsu_protocol::v1::key_custodian_server::KeyCustodianServer;
pub use renketsu_rpc::tls::{ServerError, TlsMaterial};
use renketsu_rpc::{Clock, tls};
use tokio::net::TcpListener;
use tonic::transport::Server;

use crate::policy::PolicyStore;
use crate::service::{CustodianService, ServiceSettings};
use crate::store::CustodianStore;

/// Largest gRPC message accepted or sent: enough for a 65,536-element batch (32 bytes + 2
/// bytes framing each) with room to spare.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

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
    // The handshake is done by the shared accept loop, which logs refused handshakes.
    let incoming = tls::tls_incoming(listener, tls, "key custodian")?;
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
