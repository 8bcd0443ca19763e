//! Exact tokens: canonical preimages and keyed hashing (SPEC.md §4).
//!
//! ```text
//! LP(x)        = u32_be(len(x)) || x
//! K_recipe     = HKDF-SHA256(salt = "renketsu/v1/recipe-key", ikm = project master secret,
//!                            info = LP(project) || LP(recipe) || u32_be(version), L = 32)
//! preimage     = LP("renketsu/v1/exact") || LP(recipe) || u32_be(version) || u32_be(n)
//!                || LP(field_1) || LP(value_1) || … || LP(field_n) || LP(value_n)
//! token        = HMAC-SHA256(K_recipe, preimage)                       (32 bytes)
//! ```
//!
//! Every variable-length part is length-prefixed, so two different field lists can never
//! produce the same preimage (no separator collisions), and the recipe name and version are
//! bound twice: once in the key, once in the preimage. HKDF is RFC 5869, HMAC is RFC 2104.

use std::fmt;

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroize;

use crate::secret::ProjectSecret;

/// Length of an exact token in bytes.
pub const TOKEN_LEN: usize = 32;

/// An exact token: HMAC-SHA256 output, 32 bytes. Uniformly random to anyone without the key.
pub type Token = [u8; TOKEN_LEN];

/// HKDF salt of recipe-key derivation.
pub const RECIPE_KEY_SALT: &[u8] = b"renketsu/v1/recipe-key";
/// Domain tag at the start of every exact-token preimage.
pub const PREIMAGE_DOMAIN: &[u8] = b"renketsu/v1/exact";

type HmacSha256 = Hmac<Sha256>;

fn put_lp(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("identifier values are far below 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The HKDF `info` of a recipe key: `LP(project) || LP(recipe) || u32_be(version)`.
pub fn recipe_key_info(project: &str, recipe: &str, version: u32) -> Vec<u8> {
    let mut info = Vec::with_capacity(8 + project.len() + recipe.len() + 4);
    put_lp(&mut info, project.as_bytes());
    put_lp(&mut info, recipe.as_bytes());
    info.extend_from_slice(&version.to_be_bytes());
    info
}

/// Appends the constant head of a recipe's preimages:
/// `LP("renketsu/v1/exact") || LP(recipe) || u32_be(version) || u32_be(n_fields)`.
fn preimage_head(out: &mut Vec<u8>, recipe: &str, version: u32, n_fields: usize) {
    put_lp(out, PREIMAGE_DOMAIN);
    put_lp(out, recipe.as_bytes());
    out.extend_from_slice(&version.to_be_bytes());
    let n = u32::try_from(n_fields).expect("a recipe has few fields");
    out.extend_from_slice(&n.to_be_bytes());
}

/// The canonical preimage of one record under one recipe (SPEC.md §4.1). `fields` are
/// `(field name, normalized value)` pairs in recipe order; values must be non-empty.
pub fn preimage(recipe: &str, version: u32, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    preimage_head(&mut out, recipe, version, fields.len());
    for (name, value) in fields {
        put_lp(&mut out, name.as_bytes());
        put_lp(&mut out, value.as_bytes());
    }
    out
}

/// The HMAC key of one (project, recipe, version). Holds the keyed HMAC state only; the
/// derived key bytes are zeroized right after keying. `Debug` is redacted.
#[derive(Clone)]
pub struct RecipeKey {
    mac: HmacSha256,
}

impl RecipeKey {
    /// Derives `K_recipe` from the project master secret (SPEC.md §4.2).
    pub fn derive(secret: &ProjectSecret, project: &str, recipe: &str, version: u32) -> Self {
        let mut key = Self::derive_bytes(secret, project, recipe, version);
        let mac = HmacSha256::new_from_slice(&key).expect("HMAC takes keys of any length");
        key.zeroize();
        Self { mac }
    }

    /// The raw derived key, for test vectors only.
    #[doc(hidden)]
    pub fn derive_bytes(
        secret: &ProjectSecret,
        project: &str,
        recipe: &str,
        version: u32,
    ) -> [u8; 32] {
        let hk = Hkdf::<Sha256>::new(Some(RECIPE_KEY_SALT), secret.expose());
        let mut key = [0u8; 32];
        hk.expand(&recipe_key_info(project, recipe, version), &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        key
    }

    /// `HMAC-SHA256(K_recipe, preimage)`.
    pub fn token(&self, preimage: &[u8]) -> Token {
        let mut mac = self.mac.clone();
        mac.update(preimage);
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for RecipeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecipeKey(<redacted>)")
    }
}

/// One recipe ready to hash: its key and the HMAC state after the constant preimage head.
#[derive(Clone)]
pub(crate) struct KeyedRecipe {
    after_head: HmacSha256,
}

impl KeyedRecipe {
    pub(crate) fn new(key: &RecipeKey, recipe: &str, version: u32, n_fields: usize) -> Self {
        let mut head = Vec::with_capacity(64);
        preimage_head(&mut head, recipe, version, n_fields);
        let mut after_head = key.mac.clone();
        after_head.update(&head);
        Self { after_head }
    }

    /// Token of the preimage whose tail (everything after the head) is `tail`.
    #[inline]
    pub(crate) fn token_from_tail(&self, tail: &[u8]) -> Token {
        let mut mac = self.after_head.clone();
        mac.update(tail);
        mac.finalize().into_bytes().into()
    }
}

/// Appends `LP(name) || LP(value)` (one field of a preimage tail).
#[inline]
pub(crate) fn put_field(out: &mut Vec<u8>, name: &str, value: &str) {
    put_lp(out, name.as_bytes());
    put_lp(out, value.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preimages_cannot_collide_through_separators() {
        let a = preimage("r", 1, &[("f", "ab"), ("g", "c")]);
        let b = preimage("r", 1, &[("f", "a"), ("g", "bc")]);
        assert_ne!(a, b);
        let c = preimage("r", 1, &[("f", "a|b")]);
        let d = preimage("r", 1, &[("f", "a"), ("b", "")]);
        assert_ne!(c, d);
    }

    #[test]
    fn keys_are_bound_to_project_recipe_and_version() {
        let s = ProjectSecret::from_bytes([7; 32]);
        let base = RecipeKey::derive_bytes(&s, "p", "r", 1);
        assert_ne!(base, RecipeKey::derive_bytes(&s, "q", "r", 1));
        assert_ne!(base, RecipeKey::derive_bytes(&s, "p", "s", 1));
        assert_ne!(base, RecipeKey::derive_bytes(&s, "p", "r", 2));
        // "p"+"rr" vs "pr"+"r": length prefixes keep these apart.
        assert_ne!(
            RecipeKey::derive_bytes(&s, "p", "rr", 1),
            RecipeKey::derive_bytes(&s, "pr", "r", 1)
        );
    }

    #[test]
    fn streamed_head_equals_whole_preimage() {
        let s = ProjectSecret::from_bytes([9; 32]);
        let key = RecipeKey::derive(&s, "p", "name_dob", 2);
        let keyed = KeyedRecipe::new(&key, "name_dob", 2, 2);
        let mut tail = Vec::new();
        put_field(&mut tail, "name", "ヤマダ");
        put_field(&mut tail, "dob", "1970-03-15");
        let whole = preimage("name_dob", 2, &[("name", "ヤマダ"), ("dob", "1970-03-15")]);
        assert_eq!(keyed.token_from_tail(&tail), key.token(&whole));
    }

    #[test]
    fn debug_is_redacted() {
        let key = RecipeKey::derive(&ProjectSecret::from_bytes([1; 32]), "p", "r", 1);
        assert_eq!(format!("{key:?}"), "RecipeKey(<redacted>)");
    }
}
