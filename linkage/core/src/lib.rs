//! # renketsu-linkage: the pure core of renketsu
//!
//! Everything here is a deterministic function of its inputs: no file system, no async
//! runtime, no database, no clock or RNG that is not passed in. The `renketsu` binary, the
//! linkage-unit service and the bindings call into it; "link these holders' data with this
//! schema" is one call: [`engine::LinkPlan`] (explain, then run), shown in [`engine`]'s
//! example.
//!
//! # Layout
//!
//! The engine's stages, each depending only on those above it:
//! - [`schema`]: the linkage schema (fields, recipes, `[clk]`, `[scoring]`), SPEC.md §2;
//! - [`normalize`]: canonical forms of names, dates, sex, insurance ids, or a reject code (§3);
//! - [`ingest`]: a holder's CSV (encodings, row checks and reject codes, §3.3);
//! - [`secret`], [`token`], [`tokenizer`]: recipe keys (HKDF) and exact tokens (HMAC-SHA256, or
//!   OPRF preimages for the key custodian), §4;
//! - [`clk`]: CLKs (clkhash-compatible and native), hardening, the holder's encoding, §7;
//! - [`dice`], [`lsh`]: Dice coefficients (AVX-512 / AVX2 / portable kernels, §7.1) and
//!   Hamming-LSH blocking, §7.4;
//! - [`score`]: Fellegi–Sunter comparisons, EM, match weights, threshold, veto and the
//!   estimated quality, §9;
//! - [`cluster`]: the token join and union-find clustering (plain and guarded), §5.1;
//! - [`token_file`], [`tokenlink`]: token files (§5.5) and linking them;
//! - [`engine`]: plan, run, write, summary; [`report`]: `report.html`; [`eval`]: quality
//!   against ground truth.

pub mod attack;
pub mod clk;
pub mod cluster;
pub mod dice;
pub mod engine;
pub mod eval;
#[doc(hidden)]
pub mod fuzzing;
pub mod ingest;
pub mod lsh;
pub mod normalize;
pub mod persist;
pub mod report;
pub mod schema;
pub mod score;
pub mod secret;
pub mod token;
pub mod token_file;
pub mod tokenizer;
pub mod tokenlink;

pub use normalize::{FieldReject, NormalizeContext, Normalizer};
pub use schema::{Schema, SchemaError};
pub use secret::ProjectSecret;
pub use token::{RecipeKey, Token};
pub use tokenizer::{RecordTokens, Tokenizer};
