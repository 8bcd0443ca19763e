//! # renketsu-keys: key management
//!
//! Today: the **local key store** of the embedded (offline, HMAC) mode, [`local::LocalKeyStore`]:
//! project master secrets sealed at rest with XChaCha20-Poly1305 under a key-encryption key
//! (KEK) kept apart from the sealed files. For the key custodian (the `renketsu-custodian`
//! crate adds its SQL store and gRPC service): [`oprf`] (RFC 9497), [`seal`] (the KEK ring and
//! AAD-bound sealing both stores use), [`lifecycle`] (key states, `Clock`, epoch key
//! derivation) and [`audit`] (the hash-chained audit log and its verification). For the
//! linkage unit and its clients: [`content`] (record content sealed to the researcher) and
//! [`content_file`] (the file format that carries it). This crate depends on no other
//! renketsu crate: the custodian, which must never see an identifier, does not compile the
//! linkage core through it.
//!
//! What the local store protects: a copy of the sealed files without the KEK reveals nothing;
//! a sealed secret moved to another project name or file fails authentication (the AAD binds
//! kind, project and KEK id). What it does not protect: anyone who can read both the sealed
//! file and the KEK (same user on the same machine, if the KEK is the default file) holds the
//! secret. Put the KEK in `RENKETSU_KEK` from a secret manager to separate them.

pub mod audit;
pub mod content;
// The sealed-content file format (`renketsu-content`) holders upload to the linkage unit.
pub mod content_file;
pub mod lifecycle;
pub mod local;
// The one rule for project and party names; the bound on audited strings.
pub mod names;
// Store files created mode 0600.
pub mod private_file;
// RFC 9497 OPRF/VOPRF/POPRF over ristretto255-SHA512, for the key custodian (custodian mode).
pub mod oprf;
pub mod seal;
// CLK key wrapping to data holders: HPKE base mode (RFC 9180).
pub mod wrap;

pub use local::{KeyStoreError, LocalKeyStore};
