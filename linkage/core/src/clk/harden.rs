//! Hardening of renketsu CLKs against attacks on the filters themselves (SPEC.md §7.3).
//!
//! A CLK leaks through its bits: q-gram frequencies show in bit frequencies (frequency and
//! pattern-mining attacks: Kuzu et al. 2011; Christen, Schnell et al. 2018), and the number
//! of bits set tracks the length of the names. Each option here defends one of those, at a
//! stated cost in linkage quality (measured on the jp dev set in SPEC.md §7.3):
//!
//! - [`Balance`] (Schnell & Borgs 2016, "Randomized response and balanced Bloom filters for
//!   privacy preserving record linkage"): the filter `B` of `m` bits becomes a keyed
//!   permutation of `B ‖ ¬B`, `2m` bits with exactly `m` set. Every filter has the same
//!   weight, so the weight no longer reveals value lengths, and bit frequencies flatten
//!   towards ½. Dice on balanced filters is `1 − Hamming(A, B)/m`.
//! - [`xor_fold`] (Schnell, Borgs & Encarnação 2016): `m` bits become `m/2` bits
//!   `B[i] ⊕ B[i + m/2]`; a set bit no longer points to one q-gram's positions, which defeats
//!   pattern mining that reads q-grams off single bits.
//! - Salting (in [`super::native`]): a feature's tokens are keyed with a stable value of the
//!   same record (e.g. the birth year), so one q-gram sets different bits in different
//!   cohorts; frequency attacks must work per cohort. Records whose salts differ never share
//!   that feature's bits (it behaves like blocking on the salt).
//! - [`blip`] (randomized response; Alaggan, Gambs & Kermarrec 2012, "BLIP"; Schnell & Borgs
//!   2016): every bit is flipped independently with probability `p = 1/(1 + e^ε)`, which makes
//!   each bit ε-differentially private with respect to its true value.
//!
//! Order, when several are configured: encode → XOR fold → balance → BLIP.

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use rand::Rng;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::secret::ProjectSecret;

/// XOR-folds `filter` (`2w` words) once into `out` (`w` words): bit `i` of the result is
/// `filter[i] ⊕ filter[i + bits/2]` (Schnell, Borgs & Encarnação 2016).
///
/// # Panics
/// If `filter` has an odd number of words.
pub fn xor_fold(filter: &[u64], out: &mut Vec<u64>) {
    assert!(
        filter.len().is_multiple_of(2),
        "XOR folding halves a filter of an even number of 64-bit words"
    );
    let (lo, hi) = filter.split_at(filter.len() / 2);
    out.clear();
    out.extend(lo.iter().zip(hi).map(|(a, b)| a ^ b));
}

/// Balancing with a keyed permutation (Schnell & Borgs 2016): `m` bits in, `2m` bits out with
/// exactly `m` set. The permutation is derived from the project secret, so only holders of
/// the project can undo it; the linkage unit compares balanced filters as they are.
pub struct Balance {
    /// `perm[i]` = output position of bit `i` of `B ‖ ¬B` (`2m` entries).
    perm: Vec<u32>,
}

impl std::fmt::Debug for Balance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balance")
            .field("bits_out", &self.perm.len())
            .field("permutation", &"<redacted>")
            .finish()
    }
}

impl Drop for Balance {
    fn drop(&mut self) {
        self.perm.zeroize();
    }
}

impl Balance {
    /// The balancing permutation of `bits`-bit filters (output `2·bits` bits) of `project`:
    ///
    /// ```text
    /// K_bal = HKDF-SHA256(salt = "renketsu/v1/clk-balance", IKM = project master secret,
    ///                     info = LP(project) || u32_be(bits), L = 32)
    /// stream = HMAC-SHA256(K_bal, u64_be(0)) || HMAC-SHA256(K_bal, u64_be(1)) || …
    /// perm  = Fisher–Yates over 0..2·bits, i from 2·bits−1 down to 1, swapping i with
    ///         j = the next u32_be of the stream that is < ⌊2^32/(i+1)⌋·(i+1), mod (i+1)
    ///         (rejection sampling: unbiased)
    /// ```
    pub fn new(secret: &ProjectSecret, project: &str, bits: u32) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(b"renketsu/v1/clk-balance"), secret.expose());
        let mut info = Vec::new();
        info.extend_from_slice(&(project.len() as u32).to_be_bytes());
        info.extend_from_slice(project.as_bytes());
        info.extend_from_slice(&bits.to_be_bytes());
        let mut key = Zeroizing::new([0u8; 32]);
        hk.expand(&info, key.as_mut())
            .expect("32 bytes is a valid HKDF output length");
        let mut stream = KeyedStream::new(&key);
        let n = 2 * bits;
        let mut perm: Vec<u32> = (0..n).collect();
        for i in (1..n as usize).rev() {
            let bound = i as u64 + 1;
            let zone = ((1u64 << 32) / bound) * bound;
            let j = loop {
                let x = u64::from(stream.next_u32());
                if x < zone {
                    break (x % bound) as usize;
                }
            };
            perm.swap(i, j);
        }
        Self { perm }
    }

    /// Output length in bits (twice the input's).
    pub fn bits_out(&self) -> usize {
        self.perm.len()
    }

    /// Balances `filter` (`bits/64` words) into `out` (`2·bits/64` words, cleared first).
    ///
    /// # Panics
    /// If `filter` does not have `bits/64` words.
    pub fn apply(&self, filter: &[u64], out: &mut Vec<u64>) {
        let m = self.perm.len() / 2;
        assert_eq!(
            filter.len() * 64,
            m,
            "filter length does not match the permutation"
        );
        out.clear();
        out.resize(self.perm.len() / 64, 0);
        for (w, &word) in filter.iter().enumerate() {
            for b in 0..64 {
                let i = w * 64 + b;
                // Bit i of B goes to perm[i] if set; bit i of ¬B goes to perm[m + i] if B's is
                // clear. Exactly one of the two is set.
                let p = if word >> b & 1 == 1 {
                    self.perm[i]
                } else {
                    self.perm[m + i]
                } as usize;
                out[p / 64] |= 1 << (p % 64);
            }
        }
    }
}

/// HMAC-SHA256 in counter mode as a byte stream.
struct KeyedStream {
    mac: Hmac<Sha256>,
    counter: u64,
    block: [u8; 32],
    used: usize,
}

impl KeyedStream {
    fn new(key: &[u8; 32]) -> Self {
        Self {
            mac: <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length"),
            counter: 0,
            block: [0; 32],
            used: 32,
        }
    }

    fn next_u32(&mut self) -> u32 {
        if self.used == 32 {
            let mut m = self.mac.clone();
            m.update(&self.counter.to_be_bytes());
            self.block = m.finalize().into_bytes().into();
            self.counter += 1;
            self.used = 0;
        }
        let v = u32::from_be_bytes(self.block[self.used..self.used + 4].try_into().unwrap());
        self.used += 4;
        v
    }
}

impl Drop for KeyedStream {
    fn drop(&mut self) {
        self.block.zeroize();
    }
}

/// The flip probability of BLIP with privacy parameter `epsilon` (> 0): `1/(1 + e^ε)`.
pub fn blip_probability(epsilon: f64) -> f64 {
    1.0 / (1.0 + epsilon.exp())
}

/// BLIP (randomized response on every bit): flips each bit of `filter` independently with
/// probability [`blip_probability`]`(epsilon)`, drawing from `rng` (fresh randomness per
/// record: never a key-derived stream, or equal records would flip equal bits). Returns the
/// number of bits flipped.
///
/// # Panics
/// If `epsilon` is not positive and finite.
pub fn blip(filter: &mut [u64], epsilon: f64, rng: &mut impl Rng) -> u32 {
    assert!(
        epsilon.is_finite() && epsilon > 0.0,
        "BLIP needs a positive, finite epsilon"
    );
    let p = blip_probability(epsilon);
    // Threshold on a uniform u32: P(x < t) = t / 2^32 ≈ p (error below 2^-32).
    let t = (p * 4_294_967_296.0) as u64;
    let mut flipped = 0;
    for word in filter.iter_mut() {
        let mut mask = 0u64;
        for b in 0..64 {
            if u64::from(rng.next_u32()) < t {
                mask |= 1 << b;
            }
        }
        flipped += mask.count_ones();
        *word ^= mask;
    }
    flipped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dice::dice;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn random_filter(rng: &mut StdRng, words: usize, density: f64) -> Vec<u64> {
        (0..words)
            .map(|_| {
                let mut w = 0u64;
                for b in 0..64 {
                    if rng.random_bool(density) {
                        w |= 1 << b;
                    }
                }
                w
            })
            .collect()
    }

    fn hamming(a: &[u64], b: &[u64]) -> u32 {
        a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
    }

    #[test]
    fn balanced_filters_have_half_their_bits_set_and_dice_is_one_minus_relative_hamming() {
        let secret = ProjectSecret::from_bytes([9; 32]);
        let bal = Balance::new(&secret, "p", 1024);
        assert_eq!(bal.bits_out(), 2048);
        let mut perm = bal.perm.clone();
        perm.sort_unstable();
        assert!(
            perm.iter().enumerate().all(|(i, &p)| p as usize == i),
            "a permutation"
        );
        let mut rng = StdRng::seed_from_u64(1);
        for density in [0.0, 0.1, 0.3, 0.7, 1.0] {
            let a = random_filter(&mut rng, 16, density);
            let b = random_filter(&mut rng, 16, density);
            let (mut ab, mut bb) = (Vec::new(), Vec::new());
            bal.apply(&a, &mut ab);
            bal.apply(&b, &mut bb);
            assert_eq!(ab.iter().map(|w| w.count_ones()).sum::<u32>(), 1024);
            assert_eq!(bb.iter().map(|w| w.count_ones()).sum::<u32>(), 1024);
            let want = 1.0 - f64::from(hamming(&a, &b)) / 1024.0;
            assert!((dice(&ab, &bb) - want).abs() < 1e-12, "density {density}");
        }
    }

    #[test]
    fn balancing_is_keyed() {
        let a = Balance::new(&ProjectSecret::from_bytes([9; 32]), "p", 256);
        let b = Balance::new(&ProjectSecret::from_bytes([9; 32]), "q", 256);
        let c = Balance::new(&ProjectSecret::from_bytes([8; 32]), "p", 256);
        let again = Balance::new(&ProjectSecret::from_bytes([9; 32]), "p", 256);
        assert_eq!(a.perm, again.perm, "deterministic");
        assert_ne!(a.perm, b.perm, "project-specific");
        assert_ne!(a.perm, c.perm, "secret-specific");
        assert!(format!("{a:?}").contains("<redacted>"));
    }

    #[test]
    fn xor_fold_halves_and_xors() {
        let f = vec![0b1100, 0b1010, 0b0110, 0b0011];
        let mut out = Vec::new();
        xor_fold(&f, &mut out);
        assert_eq!(out, vec![0b1100 ^ 0b0110, 0b1010 ^ 0b0011]);
    }

    #[test]
    fn blip_flips_at_the_stated_rate() {
        let mut rng = StdRng::seed_from_u64(7);
        let epsilon = 3.0;
        let p = blip_probability(epsilon);
        assert!((p - 0.047_425_873).abs() < 1e-6);
        let original = random_filter(&mut rng, 16, 0.3);
        let trials = 400;
        let mut flips = 0u64;
        for _ in 0..trials {
            let mut f = original.clone();
            let n = blip(&mut f, epsilon, &mut rng);
            assert_eq!(
                n,
                hamming(&f, &original),
                "the count is the number of changed bits"
            );
            flips += u64::from(n);
        }
        let bits = (trials * 1024) as f64;
        let sd = (bits * p * (1.0 - p)).sqrt();
        let diff = (flips as f64 - bits * p).abs();
        assert!(
            diff < 5.0 * sd,
            "{flips} flips in {bits} bits; expected {}",
            bits * p
        );
    }
}
