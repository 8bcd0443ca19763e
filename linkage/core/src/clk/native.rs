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

use super::harden::{Balance, xor_fold};
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
    /// Distinguishes encoders (and so keys) for [`PositionCache`]s; not secret.
    id: u64,
    /// Words of the encoded filter, before hardening.
    words: usize,
    bits: u32,
    features: Vec<(NativeFeature, KeyedRecipe)>,
    /// Per feature: where its salt comes from (SPEC.md §7.3), if salted.
    salts: Vec<Option<Salt>>,
    xor_fold: bool,
    balance: Option<Balance>,
}

/// Salting of one feature (SPEC.md §7.3): its tokens are hashed together with the first
/// `chars` characters of another input value of the same record (e.g. the birth year from
/// the birth date), so a q-gram sets different bits in different cohorts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Salt {
    /// Index into the `values` passed to [`NativeEncoder::encode`]; it may point past the
    /// features (extra inputs that only salt).
    pub input: usize,
    /// Characters of that value used as the salt (0 = all).
    pub chars: usize,
}

impl std::fmt::Debug for NativeEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeEncoder")
            .field("bits", &self.bits)
            .field(
                "features",
                &self.features.iter().map(|(x, _)| x).collect::<Vec<_>>(),
            )
            .field("salts", &self.salts)
            .field("xor_fold", &self.xor_fold)
            .field("balanced", &self.balance.is_some())
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
            .collect::<Vec<_>>();
        Self {
            id: NEXT_ENCODER_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            words: bits as usize / 64,
            bits,
            salts: vec![None; features.len()],
            features,
            xor_fold: false,
            balance: None,
        }
    }

    /// The encoder of a schema's `[clk]` section (SPEC.md §7.1, §7.3), with salts and
    /// hardening applied, and the schema field index of every input slot of
    /// [`NativeEncoder::encode`]: first one per feature, then one per distinct salt field.
    /// BLIP (`clk.hardening.blip_epsilon`) needs fresh randomness and is left to the caller
    /// ([`super::harden::blip`]). `None` when the schema has no `[clk]`.
    pub fn from_schema(
        schema: &crate::Schema,
        secret: &ProjectSecret,
        project: &str,
    ) -> Option<(Self, Vec<usize>)> {
        let c = schema.clk.as_ref()?;
        let enc = Self::new(secret, project, c.bits, schema_features(schema));
        Some(enc.configure(schema, Some((secret, project))))
    }

    /// [`NativeEncoder::from_schema`] with the field keys issued by the key custodian (one
    /// per `[clk]` feature, in feature order). Balancing needs the project master secret for
    /// its permutation and is refused here (`Err` with the reason); salts and XOR folding
    /// apply. `Ok(None)` when the schema has no `[clk]`.
    ///
    /// # Panics
    /// If `keys` does not hold one key per feature.
    pub fn from_schema_with_field_keys(
        schema: &crate::Schema,
        keys: Vec<Zeroizing<[u8; 32]>>,
    ) -> Result<Option<(Self, Vec<usize>)>, &'static str> {
        let Some(c) = schema.clk.as_ref() else {
            return Ok(None);
        };
        if c.hardening.balance {
            return Err(
                "clk.hardening.balance needs the project master secret (embedded mode); the key custodian does not issue a balancing key",
            );
        }
        let features = schema_features(schema);
        assert_eq!(keys.len(), features.len(), "one field key per CLK feature");
        let enc = Self::with_field_keys(c.bits, features.into_iter().zip(keys).collect());
        Ok(Some(enc.configure(schema, None)))
    }

    fn configure(
        mut self,
        schema: &crate::Schema,
        balance: Option<(&ProjectSecret, &str)>,
    ) -> (Self, Vec<usize>) {
        let c = schema.clk.as_ref().expect("callers checked [clk]");
        let mut inputs: Vec<usize> = c.features.iter().map(|f| f.field).collect();
        for (i, f) in c.features.iter().enumerate() {
            if let Some(salt) = f.salt {
                let input = match inputs[c.features.len()..]
                    .iter()
                    .position(|&x| x == salt.field)
                {
                    Some(j) => c.features.len() + j,
                    None => {
                        inputs.push(salt.field);
                        inputs.len() - 1
                    }
                };
                self = self.with_salt(
                    i,
                    Salt {
                        input,
                        chars: salt.chars,
                    },
                );
            }
        }
        if c.hardening.xor_fold {
            assert!(
                self.bits >= 128,
                "the schema checks clk.bits ≥ 128 for folding"
            );
            self.xor_fold = true;
        }
        if let (true, Some((secret, project))) = (c.hardening.balance, balance) {
            let folded_bits = if self.xor_fold {
                self.bits / 2
            } else {
                self.bits
            };
            self.balance = Some(Balance::new(secret, project, folded_bits));
        }
        (self, inputs)
    }

    /// Salts feature `feature` (SPEC.md §7.3): its HMAC input becomes
    /// `u32_be(⌊j/16⌋) || 0xFF || u8(len(salt)) || salt || token`, where `salt` is the first
    /// `salt.chars` characters of `values[salt.input]` (UTF-8, at most 255 bytes). A record
    /// whose salt value is missing gets no bits from that feature. Salted tokens are not
    /// cached by [`PositionCache`].
    ///
    /// # Panics
    /// If `feature` is not a feature index.
    pub fn with_salt(mut self, feature: usize, salt: Salt) -> Self {
        self.salts[feature] = Some(salt);
        self
    }

    /// Hardens every filter after encoding (SPEC.md §7.3): XOR-fold once (`bits/2`), then
    /// balance with the project's keyed permutation (twice the length). [`NativeEncoder::words`]
    /// gives the final length.
    ///
    /// # Panics
    /// If folding would leave less than one 64-bit word.
    pub fn with_hardening(
        mut self,
        secret: &ProjectSecret,
        project: &str,
        xor_fold: bool,
        balance: bool,
    ) -> Self {
        assert!(
            !xor_fold || self.bits >= 128,
            "XOR folding needs filters of at least 128 bits"
        );
        self.xor_fold = xor_fold;
        let folded_bits = if xor_fold { self.bits / 2 } else { self.bits };
        self.balance = balance.then(|| Balance::new(secret, project, folded_bits));
        self
    }

    /// Length of the encoded (and hardened) filter in 64-bit words.
    pub fn words(&self) -> usize {
        let mut w = self.words;
        if self.xor_fold {
            w /= 2;
        }
        if self.balance.is_some() {
            w *= 2;
        }
        w
    }

    /// The features, in encoding order.
    pub fn features(&self) -> impl Iterator<Item = &NativeFeature> {
        self.features.iter().map(|(f, _)| f)
    }

    /// Encodes one record into `out` (cleared first, `words()` long); `values[i]` is the
    /// canonical value of feature `i`, `None` when missing (it adds no bits).
    ///
    /// Every token costs one HMAC-SHA256 per 16 positions; [`NativeEncoder::encode_cached`]
    /// gives the same bits and hashes each distinct token once.
    pub fn encode(&self, values: &[Option<&str>], out: &mut Vec<u64>) {
        self.encode_inner(None, values, out);
    }

    /// [`NativeEncoder::encode`] with a cache of token positions: the same output, bit for
    /// bit, but each distinct short token (up to [`PositionCache::MAX_TOKEN_BYTES`] bytes, e.g.
    /// a kana or kanji bigram, an ASCII bigram, a positional digit) is hashed once per cache
    /// instead of once per occurrence. q-grams of names and positional digits repeat across
    /// records (a Zipf-like distribution), so most tokens of a data set hit the cache.
    ///
    /// `cache` must come from [`NativeEncoder::position_cache`] of this encoder; a cache of
    /// another encoder is emptied first (its positions came from other keys).
    pub fn encode_cached(
        &self,
        cache: &mut PositionCache,
        values: &[Option<&str>],
        out: &mut Vec<u64>,
    ) {
        if cache.encoder != self.id {
            cache.reset(self.id);
        }
        self.encode_inner(Some(cache), values, out);
    }

    /// An empty position cache for [`NativeEncoder::encode_cached`], bound to this encoder.
    /// Holds up to 16,384 distinct tokens (about 0.7 MB with k = 20); further tokens are
    /// hashed on every use. One cache per thread.
    pub fn position_cache(&self) -> PositionCache {
        PositionCache::new(self.id, 15)
    }

    fn encode_inner(
        &self,
        mut cache: Option<&mut PositionCache>,
        values: &[Option<&str>],
        out: &mut Vec<u64>,
    ) {
        out.clear();
        out.resize(self.words, 0);
        // Scratch buffers: the cache's (no allocation per record) or fresh ones.
        let mut own = Scratch::default();
        let scratch = match cache.as_deref_mut() {
            Some(c) => std::mem::take(&mut c.scratch),
            None => std::mem::take(&mut own),
        };
        let Scratch {
            mut token,
            mut chars,
            mut tail,
        } = scratch;
        token.clear();
        chars.clear();
        let mut utf8 = [0u8; 4];
        for (fi, ((f, mac), value)) in self.features.iter().zip(values).enumerate() {
            let Some(value) = value else { continue };
            // A salted feature's tokens start with 0xFF (never the first byte of UTF-8),
            // the salt's length and the salt; its tokens are then never cached.
            let mut salt_prefix = 0;
            let mut cache = cache.as_deref_mut();
            if let Some(salt) = self.salts[fi] {
                let Some(Some(sv)) = values.get(salt.input) else {
                    continue;
                };
                let end = if salt.chars == 0 {
                    sv.len()
                } else {
                    sv.char_indices()
                        .nth(salt.chars)
                        .map_or(sv.len(), |(i, _)| i)
                };
                let Ok(len) = u8::try_from(end) else { continue };
                token.clear();
                token.push(0xff);
                token.push(len);
                token.extend_from_slice(&sv.as_bytes()[..end]);
                salt_prefix = token.len();
                cache = None;
            }
            if f.positional || f.q <= 1 {
                for (i, c) in value.chars().enumerate() {
                    token.truncate(salt_prefix);
                    if f.positional {
                        put_decimal(&mut token, i + 1);
                        token.push(b':');
                    }
                    push_char(&mut token, c, &mut utf8);
                    self.set_token(fi, mac, f.k, &token, cache.as_deref_mut(), out, &mut tail);
                }
            } else {
                chars.clear();
                chars.extend(std::iter::repeat_n(' ', f.q - 1));
                chars.extend(value.chars());
                chars.extend(std::iter::repeat_n(' ', f.q - 1));
                for w in chars.windows(f.q) {
                    token.truncate(salt_prefix);
                    for &c in w {
                        push_char(&mut token, c, &mut utf8);
                    }
                    self.set_token(fi, mac, f.k, &token, cache.as_deref_mut(), out, &mut tail);
                }
            }
        }
        match cache {
            // Back to the cache, which holds the same q-grams in its keys and is zeroized
            // with them on drop.
            Some(c) => c.scratch = Scratch { token, chars, tail },
            None => Scratch { token, chars, tail }.zeroize(),
        }
        if self.xor_fold {
            let full = std::mem::take(out);
            xor_fold(&full, out);
        }
        if let Some(balance) = &self.balance {
            let plain = std::mem::take(out);
            balance.apply(&plain, out);
        }
    }

    #[allow(clippy::too_many_arguments)] // private hot path; a struct would only add moves
    #[inline]
    fn set_token(
        &self,
        feature: usize,
        mac: &KeyedRecipe,
        k: u32,
        token: &[u8],
        cache: Option<&mut PositionCache>,
        out: &mut [u64],
        tail: &mut Vec<u8>,
    ) {
        let set = |out: &mut [u64], pos: u16| out[usize::from(pos >> 6)] |= 1 << (pos & 63);
        let Some((cache, key)) = cache.and_then(|c| Some((c, cache_key(feature, token)?))) else {
            self.positions(mac, k, token, tail, |p| set(out, p));
            return;
        };
        match cache.find(key) {
            Ok(range) => {
                for &p in &cache.positions[range] {
                    set(out, p);
                }
            }
            Err(slot) => {
                let start = cache.positions.len();
                let room = cache.has_room(k);
                self.positions(mac, k, token, tail, |p| {
                    set(out, p);
                    if room {
                        cache.positions.push(p);
                    }
                });
                if room {
                    cache.insert(slot, key, start);
                }
            }
        }
    }

    /// Calls `f` with each of the token's `k` positions (SPEC.md §7.1).
    #[inline]
    fn positions(
        &self,
        mac: &KeyedRecipe,
        k: u32,
        token: &[u8],
        tail: &mut Vec<u8>,
        mut f: impl FnMut(u16),
    ) {
        let mask = (self.bits - 1) as u16; // bits is a power of two ≤ 65,536
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
                // `u16 mod bits` with bits a power of two; 65,536 keeps every bit.
                let v = u16::from_be_bytes(*chunk);
                f(if self.bits == 65_536 { v } else { v & mask });
                j += 1;
            }
            block += 1;
        }
    }
}

/// The `[clk]` features of a schema as encoder features, in order.
fn schema_features(schema: &crate::Schema) -> Vec<NativeFeature> {
    schema.clk.as_ref().map_or_else(Vec::new, |c| {
        c.features
            .iter()
            .map(|f| NativeFeature {
                field: schema.fields[f.field].name.clone(),
                q: f.q,
                positional: f.positional,
                k: f.k,
            })
            .collect()
    })
}

/// Appends `c` in UTF-8 (ASCII without a call to `memcpy`).
#[inline]
fn push_char(out: &mut Vec<u8>, c: char, utf8: &mut [u8; 4]) {
    if c.is_ascii() {
        out.push(c as u8);
    } else {
        out.extend_from_slice(c.encode_utf8(utf8).as_bytes());
    }
}

/// Reusable buffers of [`NativeEncoder::encode_inner`] (q-grams of identifiers: zeroized
/// when dropped by the encoder or with their [`PositionCache`]).
#[derive(Default)]
struct Scratch {
    token: Vec<u8>,
    chars: Vec<char>,
    tail: Vec<u8>,
}

impl Scratch {
    fn zeroize(&mut self) {
        use zeroize::Zeroize as _;
        self.token.zeroize();
        self.tail.zeroize();
        // `char` is not `Zeroize`: overwrite (kept from being optimized away), then clear.
        self.chars.iter_mut().for_each(|c| *c = '\0');
        std::hint::black_box(&mut self.chars);
        self.chars.clear();
    }
}

fn put_decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Packs (feature, token) into a non-zero `u64` when the token has at most
/// [`PositionCache::MAX_TOKEN_BYTES`] bytes: `feature (8 bits) || length (8 bits) || token`.
#[inline]
fn cache_key(feature: usize, token: &[u8]) -> Option<u64> {
    if token.len() > PositionCache::MAX_TOKEN_BYTES || feature > 0xff {
        return None;
    }
    // The little-endian `u64` of `[feature, len + 1, token…, 0…]`, built in a register (a
    // byte copy into an array read back as a `u64` stalls on store forwarding). `len + 1` is
    // never zero: 0 marks an empty slot.
    let mut key = feature as u64 | (token.len() as u64 + 1) << 8;
    for (i, &b) in token.iter().enumerate() {
        key |= u64::from(b) << (8 * (2 + i));
    }
    Some(key)
}

static NEXT_ENCODER_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A per-thread cache of token positions for [`NativeEncoder::encode_cached`]: an
/// open-addressing table from `(feature, token)` to the token's `k` positions.
///
/// The positions are derived from the CLK keys and the tokens are q-grams of identifiers, so
/// the cache is as sensitive as both: it is zeroized on drop and its `Debug` shows only
/// counts.
pub struct PositionCache {
    encoder: u64,
    keys: Vec<u64>,
    starts: Vec<u32>,
    positions: Vec<u16>,
    len: usize,
    max_len: usize,
    scratch: Scratch,
}

impl PositionCache {
    /// Longest token (in UTF-8 bytes) that is cached: two kana or kanji, or a positional
    /// `"12:7"`, fit.
    pub const MAX_TOKEN_BYTES: usize = 6;
    /// Most positions held (16-bit each): 1 MB.
    const MAX_POSITIONS: usize = 1 << 19;

    fn new(encoder: u64, log2_slots: u32) -> Self {
        let slots = 1usize << log2_slots;
        Self {
            encoder,
            keys: vec![0; slots],
            starts: vec![0; slots],
            positions: Vec::new(),
            len: 0,
            max_len: slots / 2,
            scratch: Scratch::default(),
        }
    }

    fn reset(&mut self, encoder: u64) {
        use zeroize::Zeroize as _;
        self.keys.zeroize();
        self.keys.resize(self.starts.len(), 0);
        self.positions.zeroize();
        self.scratch.zeroize();
        self.len = 0;
        self.encoder = encoder;
    }

    /// Number of distinct tokens held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no token is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn has_room(&self, k: u32) -> bool {
        k < 256
            && self.len < self.max_len
            && self.positions.len() + k as usize <= Self::MAX_POSITIONS
    }

    /// `Ok(range of positions)` or `Err(empty slot)` for `key`.
    #[inline]
    fn find(&self, key: u64) -> Result<std::ops::Range<usize>, usize> {
        let mask = self.keys.len() - 1;
        let mut i = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize & mask;
        loop {
            let k = self.keys[i];
            if k == key {
                let packed = self.starts[i];
                let start = (packed & 0x00ff_ffff) as usize;
                return Ok(start..start + (packed >> 24) as usize);
            }
            if k == 0 {
                return Err(i);
            }
            i = (i + 1) & mask;
        }
    }

    #[inline]
    fn insert(&mut self, slot: usize, key: u64, start: usize) {
        let k = self.positions.len() - start;
        debug_assert!(k < 256 && start + k <= Self::MAX_POSITIONS);
        self.keys[slot] = key;
        self.starts[slot] = (start as u32) | ((k as u32) << 24);
        self.len += 1;
    }
}

impl Drop for PositionCache {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        self.keys.zeroize();
        self.positions.zeroize();
        self.scratch.zeroize();
    }
}

impl std::fmt::Debug for PositionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PositionCache")
            .field("tokens", &self.len)
            .field("positions", &self.positions.len())
            .finish_non_exhaustive()
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
    fn cached_encoding_is_bit_identical() {
        let e = enc("p");
        let mut cache = e.position_cache();
        let values = [
            [Some("ヤマダタロウ"), Some("1970-03-15")],
            [Some("ヤマダタロ"), Some("1970-03-15")],
            [Some("ab"), None],
            [None, Some("2001-01-01")],
            // A long token (3 kana of a trigram would not fit, nor "10:…" with a 4-byte
            // character): hashed directly, never cached.
            [Some("𠮷野家𠮷野家"), Some("1999-12-31 𠮷")],
        ];
        for round in 0..2 {
            for v in &values {
                let (mut plain, mut cached) = (Vec::new(), Vec::new());
                e.encode(v, &mut plain);
                e.encode_cached(&mut cache, v, &mut cached);
                assert_eq!(plain, cached, "round {round}, values {v:?}");
            }
        }
        assert!(!cache.is_empty());
        // A cache of another encoder (other keys) is emptied, not reused.
        let other = enc("q");
        let (mut plain, mut cached) = (Vec::new(), Vec::new());
        other.encode(&values[0], &mut plain);
        other.encode_cached(&mut cache, &values[0], &mut cached);
        assert_eq!(plain, cached);
    }

    #[test]
    fn a_full_cache_still_encodes_correctly() {
        let e = enc("p");
        let mut cache = PositionCache::new(e.id, 4); // 16 slots, at most 8 tokens
        for i in 0..200u32 {
            let name = format!("{}{}", char::from_u32(0x30A2 + i % 80).unwrap(), i);
            let v = [Some(name.as_str()), Some("1980-01-01")];
            let (mut plain, mut cached) = (Vec::new(), Vec::new());
            e.encode(&v, &mut plain);
            e.encode_cached(&mut cache, &v, &mut cached);
            assert_eq!(plain, cached, "{name}");
        }
        assert_eq!(cache.len(), 8);
    }

    #[test]
    fn custodian_field_keys_take_salts_and_folding_but_not_balancing() {
        let toml = |hardening: &str| {
            format!(
                "schema_format = 1\nname = \"s\"\nversion = 1\n[input]\nid_column = \"id\"\n\
                 [fields.name]\ncolumn = \"name\"\nnormalizer = \"text\"\n\
                 [fields.dob]\ncolumn = \"dob\"\nnormalizer = \"raw\"\n\
                 [[recipes]]\nname = \"r\"\nversion = 1\nfields = [\"name\", \"dob\"]\n\
                 [clk]\nbits = 256\nthreshold = 0.8\n{hardening}\n\
                 [[clk.features]]\nfield = \"name\"\nk = 10\nsalt = {{ field = \"dob\", chars = 4 }}\n"
            )
        };
        let keys = || vec![Zeroizing::new([3u8; 32])];
        let folded = crate::Schema::from_toml(&toml("[clk.hardening]\nxor_fold = true")).unwrap();
        let (enc, inputs) = NativeEncoder::from_schema_with_field_keys(&folded, keys())
            .unwrap()
            .unwrap();
        assert_eq!(enc.words(), 2, "256 bits folded to 128");
        assert_eq!(inputs.len(), 2, "the feature, then its salt field");
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        enc.encode(&[Some("yamada"), Some("1970-01-01")], &mut a);
        enc.encode(&[Some("yamada"), Some("1970-12-31")], &mut b);
        enc.encode(&[Some("yamada"), Some("1971-01-01")], &mut c);
        assert_eq!(a, b, "same birth year, same salt");
        assert_ne!(a, c, "another birth year salts differently");
        let balanced = crate::Schema::from_toml(&toml("[clk.hardening]\nbalance = true")).unwrap();
        let err = NativeEncoder::from_schema_with_field_keys(&balanced, keys()).unwrap_err();
        assert!(err.contains("balance"), "{err}");
    }

    #[test]
    fn debug_redacts_keys() {
        assert!(format!("{:?}", enc("p")).contains("<redacted>"));
    }
}
