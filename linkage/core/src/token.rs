//! Exact tokens: canonical preimages and keyed hashing (SPEC.md §4).
//!
//! ```text
//! LP(x)     = u32_be(len(x)) || x
//! VP(x)     = leb128(len(x)) || x                  (unsigned LEB128, minimal encoding)
//! K_recipe  = HKDF-SHA256(salt = "renketsu/v1/recipe-key", ikm = project master secret,
//!                         info = LP(project) || LP(recipe) || u32_be(version), L = 32)
//! head      = LP("renketsu/v1/exact") || LP(recipe) || u32_be(version) || u32_be(n)
//!             || LP(field_1) || … || LP(field_n) || 0x00 … up to a multiple of 64 bytes
//! preimage  = head || VP(value_1) || … || VP(value_n)
//! token     = HMAC-SHA256(K_recipe, preimage)                       (32 bytes)
//! ```
//!
//! Every variable-length part is length-prefixed, so two different field lists can never
//! produce the same preimage (no separator collisions), and the recipe name and version are
//! bound twice: once in the key, once in the preimage. HKDF is RFC 5869, HMAC is RFC 2104.
//!
//! Why the head is padded to whole SHA-256 blocks: it is constant per recipe, so its
//! compression is done once when the recipe is keyed, and a record's short value tail (up to
//! 55 bytes) costs one inner and one outer compression — two SHA-256 blocks per token, the
//! least HMAC allows.

use std::fmt;

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use sha2::block_api::compress256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

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

/// SHA-256 block length: the head is padded to a multiple of it.
const BLOCK: usize = 64;

/// The constant head of a recipe's preimages (SPEC.md §4.1), padded with zero bytes to a
/// multiple of 64 bytes.
pub fn preimage_head<'a>(
    recipe: &str,
    version: u32,
    field_names: impl ExactSizeIterator<Item = &'a str>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 * BLOCK);
    put_lp(&mut out, PREIMAGE_DOMAIN);
    put_lp(&mut out, recipe.as_bytes());
    out.extend_from_slice(&version.to_be_bytes());
    let n = u32::try_from(field_names.len()).expect("a recipe has few fields");
    out.extend_from_slice(&n.to_be_bytes());
    for name in field_names {
        put_lp(&mut out, name.as_bytes());
    }
    out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
    out
}

/// Appends `VP(value) = leb128(len(value)) || value` (one value of a preimage tail).
#[inline]
pub fn put_value(out: &mut Vec<u8>, value: &str) {
    let mut n = value.len();
    while n >= 0x80 {
        out.push((n as u8 & 0x7F) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out.extend_from_slice(value.as_bytes());
}

/// The canonical preimage of one record under one recipe (SPEC.md §4.1). `fields` are
/// `(field name, normalized value)` pairs in recipe order; values must be non-empty.
pub fn preimage(recipe: &str, version: u32, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = preimage_head(recipe, version, fields.iter().map(|(n, _)| *n));
    for (_, value) in fields {
        put_value(&mut out, value);
    }
    out
}

/// The HMAC key of one (project, recipe, version), zeroized on drop. `Debug` is redacted.
#[derive(Clone)]
pub struct RecipeKey {
    key: Zeroizing<[u8; 32]>,
}

impl RecipeKey {
    /// Derives `K_recipe` from the project master secret (SPEC.md §4.2).
    pub fn derive(secret: &ProjectSecret, project: &str, recipe: &str, version: u32) -> Self {
        Self {
            key: Zeroizing::new(Self::derive_bytes(secret, project, recipe, version)),
        }
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

    /// `HMAC-SHA256(K_recipe, preimage)`, by the `hmac` crate: the reference path. The
    /// tokenizer uses the equivalent block-level path of [`KeyedRecipe`].
    pub fn token(&self, preimage: &[u8]) -> Token {
        let mut mac =
            HmacSha256::new_from_slice(self.key.as_ref()).expect("HMAC takes keys of any length");
        mac.update(preimage);
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for RecipeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecipeKey(<redacted>)")
    }
}

/// SHA-256 initial hash value (FIPS 180-4 §5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// One recipe ready to hash: HMAC-SHA256 (RFC 2104) taken apart at the SHA-256 block level
/// (FIPS 180-4). The inner chaining value after `K ⊕ ipad` and the block-aligned preimage
/// head, and the outer chaining value after `K ⊕ opad`, are computed once per recipe; a
/// token then costs one inner compression per 64 bytes of value tail (one for tails up to 55
/// bytes) plus one outer compression, with no buffer copies. Equality with the `hmac` crate is
/// a property test below. Zeroized on drop (the chaining values are key-equivalent).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct KeyedRecipe {
    inner: [u32; 8],
    inner_len: u64,
    outer: [u32; 8],
}

impl KeyedRecipe {
    pub(crate) fn new<'a>(
        key: &RecipeKey,
        recipe: &str,
        version: u32,
        field_names: impl ExactSizeIterator<Item = &'a str>,
    ) -> Self {
        let head = preimage_head(recipe, version, field_names);
        Self::with_head(&key.key, &head)
    }

    pub(crate) fn with_head(key: &[u8; 32], head: &[u8]) -> Self {
        debug_assert_eq!(head.len() % BLOCK, 0);
        let mut ipad = Zeroizing::new([0x36u8; BLOCK]);
        let mut opad = Zeroizing::new([0x5cu8; BLOCK]);
        for i in 0..key.len() {
            ipad[i] ^= key[i];
            opad[i] ^= key[i];
        }
        let mut inner = SHA256_IV;
        compress256(&mut inner, &[*ipad]);
        let (blocks, rest) = head.as_chunks::<BLOCK>();
        debug_assert!(rest.is_empty());
        compress256(&mut inner, blocks);
        let mut outer = SHA256_IV;
        compress256(&mut outer, &[*opad]);
        Self {
            inner,
            inner_len: (BLOCK + head.len()) as u64,
            outer,
        }
    }

    /// Token of the preimage whose tail (everything after the head) is `tail`.
    #[inline]
    pub(crate) fn token_from_tail(&self, tail: &[u8]) -> Token {
        let mut state = self.inner;
        let bits = (self.inner_len + tail.len() as u64) * 8;
        if tail.len() < BLOCK - 8 {
            // The common case (a record's values fit one block): one padded block, no loop.
            let mut block = [0u8; BLOCK];
            block[..tail.len()].copy_from_slice(tail);
            block[tail.len()] = 0x80;
            block[BLOCK - 8..].copy_from_slice(&bits.to_be_bytes());
            compress256(&mut state, &[block]);
        } else {
            let (full, rest) = tail.as_chunks::<BLOCK>();
            compress256(&mut state, full);
            // SHA-256 padding: 0x80, zeros, 64-bit big-endian message length in bits.
            let mut last = [[0u8; BLOCK]; 2];
            let n_last = if rest.len() < BLOCK - 8 { 1 } else { 2 };
            let flat = last.as_flattened_mut();
            flat[..rest.len()].copy_from_slice(rest);
            flat[rest.len()] = 0x80;
            flat[n_last * BLOCK - 8..n_last * BLOCK].copy_from_slice(&bits.to_be_bytes());
            compress256(&mut state, &last[..n_last]);
        }
        // Outer hash over the 32-byte inner digest: one block after K ⊕ opad.
        let mut block = [0u8; BLOCK];
        for (chunk, word) in block.as_chunks_mut::<4>().0.iter_mut().zip(state) {
            *chunk = word.to_be_bytes();
        }
        block[32] = 0x80;
        block[BLOCK - 8..].copy_from_slice(&(((BLOCK + 32) * 8) as u64).to_be_bytes());
        let mut out_state = self.outer;
        compress256(&mut out_state, &[block]);
        let mut token = [0u8; TOKEN_LEN];
        for (chunk, word) in token.as_chunks_mut::<4>().0.iter_mut().zip(out_state) {
            *chunk = word.to_be_bytes();
        }
        token
    }
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
    fn head_is_block_aligned_and_values_use_leb128() {
        for names in [
            vec!["a"],
            vec!["given_name", "surname", "date_of_birth", "sex", "postcode"],
        ] {
            let h = preimage_head("some_recipe", 1, names.iter().copied());
            assert_eq!(h.len() % 64, 0);
        }
        let mut v = Vec::new();
        put_value(&mut v, &"x".repeat(127));
        assert_eq!(v[0], 127);
        v.clear();
        put_value(&mut v, &"x".repeat(300));
        assert_eq!(&v[..2], &[0xAC, 0x02]);
        assert_eq!(v.len(), 302);
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
        let keyed = KeyedRecipe::new(&key, "name_dob", 2, ["name", "dob"].into_iter());
        let mut tail = Vec::new();
        put_value(&mut tail, "ヤマダ");
        put_value(&mut tail, "1970-03-15");
        let whole = preimage("name_dob", 2, &[("name", "ヤマダ"), ("dob", "1970-03-15")]);
        assert_eq!(keyed.token_from_tail(&tail), key.token(&whole));
    }

    #[test]
    fn block_level_hmac_at_every_padding_boundary() {
        let key = [0x5a; 32];
        let head = vec![7u8; BLOCK];
        let keyed = KeyedRecipe::with_head(&key, &head);
        for len in 0..=200 {
            let tail: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut mac = HmacSha256::new_from_slice(&key).unwrap();
            mac.update(&head);
            mac.update(&tail);
            let want: Token = mac.finalize().into_bytes().into();
            assert_eq!(keyed.token_from_tail(&tail), want, "tail length {len}");
        }
    }

    proptest::proptest! {
        #[test]
        fn block_level_hmac_equals_the_hmac_crate(
            key in proptest::array::uniform32(proptest::prelude::any::<u8>()),
            head_blocks in 0usize..3,
            head_byte in proptest::prelude::any::<u8>(),
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let head = vec![head_byte; head_blocks * BLOCK];
            let fast = KeyedRecipe::with_head(&key, &head).token_from_tail(&tail);
            let mut mac = HmacSha256::new_from_slice(&key).unwrap();
            mac.update(&head);
            mac.update(&tail);
            let want: Token = mac.finalize().into_bytes().into();
            proptest::prop_assert_eq!(fast, want);
        }
    }

    #[test]
    fn debug_is_redacted() {
        let key = RecipeKey::derive(&ProjectSecret::from_bytes([1; 32]), "p", "r", 1);
        assert_eq!(format!("{key:?}"), "RecipeKey(<redacted>)");
    }
}
