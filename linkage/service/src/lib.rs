//! The renketsu linkage unit (SPEC.md §10): holders upload token files and content sealed to
//! the researcher (resumable chunked uploads), the linkage unit runs the matching job in the
//! background, holders fetch their own record → pseudonym mappings, the researcher fetches the
//! release; opt-outs exclude clusters, holders can trace their own records back, and every
//! call is audited in a hash chain.
//!
//! The linkage unit holds **no key**: linking is on tokens (`renketsu_linkage::tokenlink`,
//! the same code as `renketsu link` on token files), content is sealed to the researcher
//! (`renketsu_keys::content`), and the only thing it asks the custodian for is a re-keying
//! delta, which moves tokens between epochs without revealing either key.

pub mod auth;
pub mod content_file;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod job;
pub mod members;
mod rekey;
pub mod server;
pub mod service;
pub mod store;
pub mod validate;
