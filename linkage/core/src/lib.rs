//! # renketsu-linkage: the pure core of renketsu
//!
//! Everything here is a deterministic function of its inputs: no I/O, no async runtime, no
//! database, no clock or RNG that is not passed in. The binaries (`renketsu`) and, later, the
//! key custodian and linkage-unit services call into it.
//!
//! Pipeline of an exact-token linkage (SPEC.md §2–§5):
//! 1. [`schema::Schema`] says which columns are identifier fields and which recipes to make;
//! 2. [`normalize::Normalizer`]s canonicalize each field or reject it with a reason code;
//! 3. [`tokenizer::Tokenizer`] hashes each recipe's canonical preimage with its recipe key
//!    (HKDF-SHA256 from the [`secret::ProjectSecret`], then HMAC-SHA256: [`token`]);
//! 4. [`cluster::TokenJoin`] joins equal tokens across holders and clusters records with
//!    union-find;
//! 5. [`eval::Evaluation`] scores predicted pairs against ground truth.

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
