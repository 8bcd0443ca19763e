//! Running the linkage unit: `run(listener, tls, service, shutdown)` in the style of tokio's
//! mini-redis (a bound listener and a shutdown future; tests bind port 0 on loopback). TLS is
//! mandatory and mutual, as for the custodian ([`TlsMaterial`], from `renketsu_rpc::tls`).

use std::future::Future;

use renketsu_protocol::v1::linkage_unit_server::LinkageUnitServer;
pub use renketsu_rpc::tls::{ServerError, TlsMaterial};
use tokio::net::TcpListener;
use tonic::transport::Server;

use crate::service::LinkageUnitService;

/// Largest gRPC message accepted or sent (a 4 MiB chunk plus framing, release pages): the
/// client library's limit, so that both ends agree.
pub const MAX_MESSAGE_BYTES: usize = renketsu_client::linkage_unit::MAX_MESSAGE_BYTES;

/// Serves `renketsu.v1.LinkageUnit` on `listener` with mutual TLS until `shutdown`
/// completes. Jobs left running by an earlier process are resumed first.
///
/// # Errors
/// [`ServerError::Transport`] if the TLS configuration is invalid or serving fails.
pub async fn run(
    listener: TcpListener,
    tls: &TlsMaterial,
    service: LinkageUnitService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    match service.resume_jobs().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(jobs = n, "resumed interrupted jobs"),
        Err(e) => tracing::error!(error = %e, "cannot read interrupted jobs"),
    }
    let addr = listener.local_addr().ok();
    // The handshake is done by the shared accept loop, which logs refused handshakes.
    let incoming = renketsu_rpc::tls::tls_incoming(listener, tls, "linkage unit")?;
    tracing::info!(?addr, "linkage unit serving (mutual TLS)");
    Server::builder()
        .add_service(
            LinkageUnitServer::new(service)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    tracing::info!("linkage unit stopped");
    Ok(())
}
