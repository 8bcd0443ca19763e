//! The renketsu key custodian (SPEC.md §8): key lifecycle over a sealed SQL store, RFC 9497
//! OPRF evaluation over gRPC with mutual-TLS roles, evaluation quotas and a hash-chained audit
//! log. The protocol core (OPRF, sealing, lifecycle rules) lives in `renketsu-keys`; this crate
//! adds storage and the network service only. Caller identity, TLS, the error mapping and the
//! audited-call wrapper come from `renketsu-rpc`; the holder's client is `renketsu-client`.
//!
//! # Layout
//!
//! - [`auth`]: the custodian's RPCs ([`auth::Rpc`]: path, role, scope) and its membership
//!   rule (an enrolled holder; the project's named linkage unit).
//! - [`service`]: the gRPC handlers of `renketsu.v1.KeyCustodian`, each a closure run by
//!   `renketsu_rpc::handle` (identity, role, membership, audit entry).
//! - [`store`] and [`policy`]: the sealed SQL store (SQLite or PostgreSQL) and the
//!   per-project policy (RFC 9497 mode, linkage unit).
//! - [`quota`]: evaluation quotas from declared record counts.
//! - [`config`] and [`server`]: the configuration file and `run(listener, tls, …)`.
//! - [`error`]: store errors as `renketsu_rpc::ServiceError`.

pub mod auth;
pub mod config;
pub mod error;
/// Certificates and roles, from `renketsu-rpc` (re-exported for existing callers).
pub use renketsu_rpc::pki;
pub mod policy;
pub mod quota;
pub mod server;
pub mod service;
pub mod store;
