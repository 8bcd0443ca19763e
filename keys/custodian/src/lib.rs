//! The renketsu key custodian (SPEC.md §8): key lifecycle over a sealed SQL store, RFC 9497
//! OPRF evaluation over gRPC with mutual-TLS roles, evaluation quotas and a hash-chained audit
//! log. The protocol core (OPRF, sealing, lifecycle rules) lives in `renketsu-keys`; this crate
//! adds storage and the network service only.

pub mod auth;
pub mod client;
pub mod config;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod pki;
pub mod policy;
pub mod quota;
pub mod server;
pub mod service;
pub mod store;
