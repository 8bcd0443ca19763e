//! renketsu's own CLK encoding (SPEC.md §7.1): q-grams of normalized field values hashed into
//! one record-level Bloom filter with **independent positions from HMAC-SHA256** under a key
//! per (project, field). Independent positions resist the pattern attack of Kroll and
//! Steinmetzer (2015) on double hashing, whose positions lie on arithmetic progressions.
//!
//! ```text
//! K_field  = HKDF-SHA256(salt = "renketsu/v1/clk-key", IKM = project master secret,
//!                        info = LP(project) || LP(field), L = 32)
//! tokens   = q-grams of " "·value·" " (q ≥ 2; value padded with q−1 spaces each side), or
//!            for positional fields "i:" + the i-th character (1-based), over the characters
//!            of the field's canonical value
//! position = for j in 0..k: the (j mod 16)-th big-endian u16 of
//!            HMAC-SHA256(K_field, u32_be(⌊j/16⌋) || token), mod bits
//! ```
//!
//! Sixteen positions per HMAC output: with `bits` a power of two up to 65,536, `u16 mod bits`
//! is unbiased. The HMAC is taken apart at the SHA-256 block level as for exact tokens
//! (two compressions per token for tokens up to 51 bytes).

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::secret::ProjectSecret;
use crate::token::KeyedRecipe;

/// One field's CLK parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NativeFeature {
    /// Name of the schema field (its canonical value is encoded).
    pub field: String,
    /// q of the q-grams (1 = characters).
    pub q: usize,
    /// Positional unigrams (`"3:7"`): for dates and fixed-width codes.
    pub positional: bool,
    /// Bits set per token.
    pub k: u32,
}

/// Keyed encoder of record-level CLKs of `bits` bits.
pub struct NativeEncoder {
    words: usize,
    bits: u32,
    features: Vec<(NativeFeature, KeyedRecipe)>,
}

impl std::fmt::Debug for NativeEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeEncoder")
            .field("bits", &self.bits)
            .field(
                "features",
                &self.features.iter().map(|(x, _)| x).collect::<Vec<_>>(),
            )
            .field("keys", &"<redacted>")
            .finish()
    }
}

fn put_lp(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

impl NativeEncoder {
    /// Derives one key per feature from the project secret.
    ///
    /// # Panics
    /// If `bits` is not a power of two from 64 to 65,536 (the schema checks this first).
    pub fn new(
        secret: &ProjectSecret,
        project: &str,
        bits: u32,
        features: Vec<NativeFeature>,
    ) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(b"renketsu/v1/clk-key"), secret.expose());
        let features = features
            .into_iter()
            .map(|f| {
                let mut info = Vec::new();
                put_lp(&mut info, project.as_bytes());
                put_lp(&mut info, f.field.as_bytes());
                let mut key = Zeroizing::new([0u8; 32]);
                hk.expand(&info, key.as_mut())
                    .expect("32 bytes is a valid HKDF output length");
                (f, key)
            })
            .collect();
        Self::with_field_keys(bits, features)
    }

    /// An encoder with given 32-byte field keys `K_field` instead of keys derived from a
    /// project secret: custodian mode, where the key custodian issues each field's CLK key to
    /// the holders (wrapped, `GetWrappedClkKey`).
    ///
    /// # Panics
    /// If `bits` is not a power of two from 64 to 65,536 (the schema checks this first).
    pub fn with_field_keys(bits: u32, features: Vec<(NativeFeature, Zeroizing<[u8; 32]>)>) -> Self {
        assert!(
            bits.is_power_of_two() && (64..=65_536).contains(&bits),
            "CLK length is a power of two from 64 to 65,536 bits"
        );
        let features = features
            .into_iter()
            .map(|(f, key)| (f, KeyedRecipe::with_head(&key, &[])))
            .collect();
        Self {
            words: bits as usize / 64,
            bits,
            features,
        }
    }

    /// Filter length in 64-bit words.
    pub fn words(&self) -> usize {
        self.words
    }

    /// The features, in encoding order.
    pub fn features(&self) -> impl Iterator<Item = &NativeFeature> {
        self.features.iter().map(|(f, _)| f)
    }

    /// Encodes one record into `out` (cleared first, `words()` long); `values[i]` is the
    /// canonical value of feature `i`, `None` when missing (it adds no bits).
    pub fn encode(&self, values: &[Option<&str>], out: &mut Vec<u64>) {
        out.clear();
        out.resize(self.words, 0);
        let mut token = String::new();
        let mut chars: Vec<char> = Vec::new();
        let mut tail: Vec<u8> = Vec::with_capacity(64);
        for ((f, mac), value) in self.features.iter().zip(values) {
            let Some(value) = value else { continue };
            chars.clear();
            if f.positional || f.q <= 1 {
                chars.extend(value.chars());
                for (i, c) in chars.iter().enumerate() {
                    token.clear();
                    if f.positional {
                        token.push_str(&(i + 1).to_string());
                        token.push(':');
                    }
                    token.push(*c);
                    self.set_positions(mac, f.k, token.as_bytes(), out, &mut tail);
                }
            } else {
                chars.extend(std::iter::repeat_n(' ', f.q - 1));
                chars.extend(value.chars());
                chars.extend(std::iter::repeat_n(' ', f.q - 1));
                for w in chars.windows(f.q) {
                    token.clear();
                    token.extend(w);
                    self.set_positions(mac, f.k, token.as_bytes(), out, &mut tail);
                }
            }
        }
    }

    fn set_positions(
        &self,
        mac: &KeyedRecipe,
        k: u32,
        token: &[u8],
        out: &mut [u64],
        tail: &mut Vec<u8>,
    ) {
        let mut j = 0u32;
        let mut block = 0u32;
        while j < k {
            tail.clear();
            tail.extend_from_slice(&block.to_be_bytes());
            tail.extend_from_slice(token);
            let digest = mac.token_from_tail(tail);
            for chunk in digest.as_chunks::<2>().0 {
                if j == k {
                    break;
                }
                let pos = u32::from(u16::from_be_bytes(*chunk)) % self.bits;
                out[(pos / 64) as usize] |= 1 << (pos % 64);
                j += 1;
            }
            block += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dice::dice;

    fn enc(project: &str) -> NativeEncoder {
        NativeEncoder::new(
            &ProjectSecret::from_bytes([4; 32]),
            project,
            1024,
            vec![
                NativeFeature {
                    field: "name".into(),
                    q: 2,
                    positional: false,
                    k: 20,
                },
                NativeFeature {
                    field: "dob".into(),
                    q: 1,
                    positional: true,
                    k: 10,
                },
            ],
        )
    }

    #[test]
    fn similar_values_have_high_dice_and_keys_matter() {
        let e = enc("p");
        let (mut a, mut b, mut c, mut d) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        e.encode(&[Some("ヤマダタロウ"), Some("1970-03-15")], &mut a);
        e.encode(&[Some("ヤマダタロ"), Some("1970-03-15")], &mut b);
        e.encode(&[Some("スズキハナコ"), Some("1985-11-02")], &mut c);
        enc("q").encode(&[Some("ヤマダタロウ"), Some("1970-03-15")], &mut d);
        assert!(dice(&a, &b) > 0.85, "{}", dice(&a, &b));
        assert!(dice(&a, &c) < 0.5, "{}", dice(&a, &c));
        assert!(
            dice(&a, &d) < 0.5,
            "another project's key gives unrelated bits: {}",
            dice(&a, &d)
        );
        let mut a2 = Vec::new();
        e.encode(&[Some("ヤマダタロウ"), Some("1970-03-15")], &mut a2);
        assert_eq!(a, a2, "deterministic");
        let mut none = Vec::new();
        e.encode(&[None, None], &mut none);
        assert!(none.iter().all(|w| *w == 0));
    }

    #[test]
    fn debug_redacts_keys() {
        assert!(format!("{:?}", enc("p")).contains("<redacted>"));
    }
}
