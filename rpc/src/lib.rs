//! # renketsu-rpc: the service kit under both servers
//!
//! The key custodian (`renketsu-custodian`, SPEC.md §8) and the linkage unit
//! (`renketsu-linkage-unit`, SPEC.md §10) are two gRPC services with the same security
//! model: mutual TLS, the caller's party and role read from its client certificate, one
//! role (or a few) per RPC, a project-membership check for RPCs that act on one project, and
//! one hash-chained audit entry per call, refused calls included. This crate holds that model
//! once, so that neither service depends on the other and a handler cannot skip a step.
//!
//! # Layout
//!
//! - [`pki`]: who a caller is. [`Role`], [`PeerIdentity`] and [`pki::identity_from_der`]
//!   (the certificate convention, SPEC.md §8.2), and the development CA behind
//!   `renketsu pki dev-init` ([`pki::DevCa`], [`pki::dev_init`]).
//! - [`tls`]: mutual-TLS configuration. [`tls::TlsMaterial`] for servers,
//!   [`tls::ConnectConfig`] and [`tls::tls_channel`] for clients, [`tls::RetryPolicy`] for
//!   transient failures, [`tls::nodelay_incoming`] for listeners.
//! - [`error`]: [`ServiceError`], the one error type of both services' handlers, and THE one
//!   place it becomes a `tonic::Status`.
//! - [`call`]: the audited-call wrapper. A service implements [`call::RpcService`] (its clock,
//!   its audit log, its membership rule); every handler runs inside [`call::handle`], which
//!   reads the caller's identity, checks its role, checks project membership where the RPC
//!   is per project, and appends the audit entry with the status the call ends with.
//! - The injected clock: [`Clock`], [`SystemClock`], [`MockClock`] and [`Timestamp`] are
//!   `renketsu-keys`' (`lifecycle`), re-exported so that services take them from here.
//!
//! Dependencies point one way: this crate uses `renketsu-keys` (clock, audit entries) and
//! `renketsu-protocol` (wire roles); the services and the client library use this crate.

pub mod call;
pub mod error;
pub mod pki;
pub mod tls;

pub use call::{Call, Method, RpcService, Scope, handle};
pub use error::ServiceError;
pub use pki::{PeerIdentity, Role};
pub use renketsu_keys::lifecycle::{Clock, MockClock, SystemClock, Timestamp};
