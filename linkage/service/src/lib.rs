//! The renketsu linkage unit (SPEC.md §10): holders upload token files and content sealed to
//! the researcher (resumable chunked uploads), the linkage unit runs the matching job in the
//! background, holders fetch their own record → pseudonym mappings, the researcher fetches the
//! release; opt-outs exclude clusters, holders can trace their own records back, and every
//! call is audited in a hash chain.
//!
//! The linkage unit holds **no key**: linking is on tokens (`renketsu_linkage::tokenlink`,
//! the same code as `renketsu link` on token files), content is sealed to the researcher
//! (`renketsu_keys::content`), and the only thing it asks the custodian for is a re-keying
//! delta, which moves tokens between epochs without revealing either key (through
//! `renketsu_client::custodian::CustodianClient`).
//!
//! # Layout
//!
//! - [`auth`]: the RPCs ([`auth::Rpc`]: path, roles, scope) and the membership rule.
//! - [`service`]: the gRPC handlers of `renketsu.v1.LinkageUnit`, each a closure run by
//!   `renketsu_rpc::handle` (identity, role, membership, audit entry), and the background
//!   jobs; `rekey` re-keys stored tokens with the custodian's delta.
//! - [`job`]: the pure matching job over token uploads; [`members`]: the stored
//!   record → pseudonym chunks; [`batches`]: a holder's token upload with its token and
//!   deletion batches read as one token file; [`incremental`]: the job that re-links only
//!   what the batches changed.
//! - [`store`]: SQLite or PostgreSQL; [`server`]: `run(listener, tls, service, shutdown)`.
//! - [`error`]: store errors as `renketsu_rpc::ServiceError`.

pub mod auth;
pub mod batches;
/// The sealed-content file format, now in `renketsu-keys` (holders write it with the client
/// library; the linkage unit parses it).
pub use renketsu_keys::content_file;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod incremental;
pub mod job;
pub mod members;
mod rekey;
pub mod server;
pub mod service;
pub mod store;
pub mod validate;
