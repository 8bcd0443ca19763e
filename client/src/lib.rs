//! # renketsu-client: the client library
//!
//! What holders, admins, researchers and auditors do against the two services, as a library
//! that the `renketsu` CLI (and later the Python package) calls; the CLI keeps argument
//! parsing and printing. Connections are mutual TLS from PEM files
//! (`renketsu_rpc::tls::ConnectConfig`); transient failures are retried with jittered
//! backoff.
//!
//! # Layout
//!
//! - [`custodian`]: the key custodian (SPEC.md §8). The holder's half of RFC 9497 (blind →
//!   `EvaluateBatch` → verify → unblind, pipelined over batches) behind the
//!   [`custodian::BatchEvaluator`] trait, with the gRPC [`custodian::CustodianClient`] and an
//!   in-memory [`custodian::InProcessEvaluator`]; wrapped CLK keys; the admin's calls
//!   (create project, enrol, rotate, revoke, list) and the auditor's (read and verify the
//!   audit log).
//! - [`linkage_unit`]: the linkage unit (SPEC.md §10). [`linkage_unit::LinkageUnitConn`]:
//!   resumable chunked uploads of token, opt-out and sealed-content files, the holder's
//!   mapping, the admin's project and job calls, the researcher's release, the auditor's
//!   log; [`linkage_unit::SealedContentWriter`] writes a sealed-content file and
//!   [`linkage_unit::open_release`] opens a release with the researcher's key.
//! - [`audit`]: the wire form of audit entries back into hash-chain entries, verified.
//!
//! The linkage unit itself uses [`custodian::CustodianClient`] for re-keying deltas.

pub mod audit;
pub mod custodian;
pub mod linkage_unit;
