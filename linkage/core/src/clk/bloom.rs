//! The Bloom filter bit vector of a CLK, its clkhash byte serialization, XOR folding and the
//! Dice coefficient.

use std::fmt;

use super::ClkError;

/// Bits per storage word.
const WORD: usize = 64;

/// A Bloom filter of a fixed number of bits, stored in 64-bit words: bit `i` is bit `i % 64`
/// (least significant first) of word `i / 64`. Bits past the length are always zero.
///
/// The clkhash byte form ([`Bloom::to_clkhash_bytes`]) uses another order; the in-memory one
/// is not part of any interface.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Bloom {
    bits: usize,
    words: Vec<u64>,
}

impl Bloom {
    /// An all-zero filter of `bits` bits.
    pub fn new(bits: usize) -> Self {
        Self {
            bits,
            words: vec![0; bits.div_ceil(WORD)],
        }
    }

    /// Length in bits.
    pub fn len(&self) -> usize {
        self.bits
    }

    /// Whether the filter has length zero (not whether it has no bit set: see
    /// [`Bloom::popcount`]).
    pub fn is_empty(&self) -> bool {
        self.bits == 0
    }

    /// Sets bit `bit`.
    ///
    /// # Panics
    /// If `bit >= self.len()`.
    #[inline]
    pub fn set(&mut self, bit: usize) {
        assert!(bit < self.bits, "bit {bit} of a {}-bit filter", self.bits);
        self.words[bit / WORD] |= 1 << (bit % WORD);
    }

    /// Whether bit `bit` is set.
    ///
    /// # Panics
    /// If `bit >= self.len()`.
    #[inline]
    pub fn get(&self, bit: usize) -> bool {
        assert!(bit < self.bits, "bit {bit} of a {}-bit filter", self.bits);
        self.words[bit / WORD] >> (bit % WORD) & 1 == 1
    }

    /// Number of bits set (the Hamming weight, clkhash's "popcount").
    pub fn popcount(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The storage words (bit `i` is bit `i % 64` of word `i / 64`; unused high bits of the
    /// last word are zero).
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// XOR-folds the filter `folds` times: each fold XORs the first half with the second
    /// half, so the result has `len / 2^folds` bits (clkhash `bloomfilter.py`, `fold_xor`;
    /// Schnell, Borgs & Encarnação 2016 for the construction).
    ///
    /// # Errors
    /// [`ClkError::NotFoldable`] if the length is not a multiple of `2^folds`.
    pub fn fold_xor(&self, folds: u32) -> Result<Self, ClkError> {
        let not_foldable = || ClkError::NotFoldable {
            bits: self.bits,
            folds,
        };
        let divisor = 1usize.checked_shl(folds).ok_or_else(not_foldable)?;
        if !self.bits.is_multiple_of(divisor) {
            return Err(not_foldable());
        }
        let mut current = self.clone();
        for _ in 0..folds {
            current = current.fold_once();
        }
        Ok(current)
    }

    /// One fold of an even-length filter.
    fn fold_once(&self) -> Self {
        let half = self.bits / 2;
        let mut out = Self::new(half);
        if half.is_multiple_of(WORD) {
            let n = half / WORD;
            for (o, (a, b)) in out
                .words
                .iter_mut()
                .zip(self.words[..n].iter().zip(&self.words[n..]))
            {
                *o = a ^ b;
            }
        } else {
            for i in 0..half {
                if self.get(i) != self.get(half + i) {
                    out.set(i);
                }
            }
        }
        out
    }

    /// The bytes clkhash writes for this filter: Python `bitarray.tobytes()` of a big-endian
    /// bitarray, i.e. bit `i` of the filter is bit `7 - i % 8` (most significant first) of byte
    /// `i / 8`, and a partial last byte is padded with zero bits. `ceil(len / 8)` bytes; this is
    /// what clkhash base64-encodes into its CLK JSON output.
    pub fn to_clkhash_bytes(&self) -> Vec<u8> {
        self.words
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .map(u8::reverse_bits)
            .take(self.bits.div_ceil(8))
            .collect()
    }

    /// The inverse of [`Bloom::to_clkhash_bytes`] for a filter of `bits` bits.
    ///
    /// # Errors
    /// [`ClkError::ClkBytesLength`] if `bytes` is not `ceil(bits / 8)` long, and
    /// [`ClkError::ClkBytesPadding`] if a padding bit of the last byte is set.
    pub fn from_clkhash_bytes(bytes: &[u8], bits: usize) -> Result<Self, ClkError> {
        let expected = bits.div_ceil(8);
        if bytes.len() != expected {
            return Err(ClkError::ClkBytesLength {
                bits,
                expected,
                got: bytes.len(),
            });
        }
        let mut out = Self::new(bits);
        for (w, chunk) in out.words.iter_mut().zip(bytes.chunks(WORD / 8)) {
            let mut le = [0u8; WORD / 8];
            for (dst, src) in le.iter_mut().zip(chunk) {
                *dst = src.reverse_bits();
            }
            *w = u64::from_le_bytes(le);
        }
        if !bits.is_multiple_of(WORD) {
            let last = out.words.len() - 1;
            let mask = (1u64 << (bits % WORD)) - 1;
            if out.words[last] & !mask != 0 {
                return Err(ClkError::ClkBytesPadding { bits });
            }
        }
        Ok(out)
    }
}

impl fmt::Debug for Bloom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bloom")
            .field("bits", &self.bits)
            .field("popcount", &self.popcount())
            .finish()
    }
}

/// The Dice coefficient of two filters, `2 |A ∧ B| / (|A| + |B|)` with `|·|` the popcount,
/// in `[0, 1]`: the similarity used to compare CLKs (Schnell, Bachteler & Reiher 2009).
/// Two filters with no bit set have Dice coefficient 0 (as in anonlink).
///
/// # Panics
/// If the filters have different lengths: CLKs of different schemas are not comparable.
pub fn dice(a: &Bloom, b: &Bloom) -> f64 {
    assert_eq!(
        a.bits, b.bits,
        "Dice coefficient of filters of different lengths"
    );
    crate::dice::dice(&a.words, &b.words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_bits(len: usize, set: &[usize]) -> Bloom {
        let mut b = Bloom::new(len);
        for &i in set {
            b.set(i);
        }
        b
    }

    #[test]
    fn dice_identical_is_one_and_disjoint_is_zero() {
        let a = from_bits(1024, &[0, 5, 63, 64, 700, 1023]);
        assert_eq!(dice(&a, &a), 1.0);
        let b = from_bits(1024, &[1, 6, 62, 65, 701, 1022]);
        assert_eq!(dice(&a, &b), 0.0);
        assert_eq!(dice(&Bloom::new(16), &Bloom::new(16)), 0.0);
    }

    #[test]
    fn dice_known_small_case() {
        // |A| = 4, |B| = 2, |A ∧ B| = 1: 2·1 / 6.
        let a = from_bits(10, &[0, 1, 2, 3]);
        let b = from_bits(10, &[3, 9]);
        assert!((dice(&a, &b) - 1.0 / 3.0).abs() < 1e-15);
        assert_eq!(dice(&a, &b), dice(&b, &a));
    }

    #[test]
    #[should_panic(expected = "different lengths")]
    fn dice_of_different_lengths_panics() {
        dice(&Bloom::new(8), &Bloom::new(16));
    }

    #[test]
    fn clkhash_bytes_are_msb_first() {
        let b = from_bits(16, &[0, 9, 15]);
        assert_eq!(b.to_clkhash_bytes(), vec![0b1000_0000, 0b0100_0001]);
        assert_eq!(
            Bloom::from_clkhash_bytes(&b.to_clkhash_bytes(), 16).unwrap(),
            b
        );
        // A partial last byte is padded with zero bits.
        let c = from_bits(10, &[8, 9]);
        assert_eq!(c.to_clkhash_bytes(), vec![0, 0b1100_0000]);
        assert_eq!(Bloom::from_clkhash_bytes(&[0, 0b1100_0000], 10).unwrap(), c);
        assert!(matches!(
            Bloom::from_clkhash_bytes(&[0, 0b1110_0000], 10),
            Err(ClkError::ClkBytesPadding { bits: 10 })
        ));
        assert!(matches!(
            Bloom::from_clkhash_bytes(&[0; 3], 16),
            Err(ClkError::ClkBytesLength { .. })
        ));
    }

    #[test]
    fn round_trip_over_word_boundaries() {
        let set = [0, 7, 8, 63, 64, 65, 127, 128, 199];
        let b = from_bits(200, &set);
        let bytes = b.to_clkhash_bytes();
        assert_eq!(bytes.len(), 25);
        let back = Bloom::from_clkhash_bytes(&bytes, 200).unwrap();
        assert_eq!(back, b);
        assert_eq!(back.popcount(), set.len());
        for i in 0..200 {
            assert_eq!(back.get(i), set.contains(&i), "bit {i}");
            assert_eq!(
                bytes[i / 8] >> (7 - i % 8) & 1 == 1,
                set.contains(&i),
                "bit {i}"
            );
        }
    }

    #[test]
    fn xor_fold_halves_the_length() {
        // Word-aligned halves.
        let a = from_bits(256, &[0, 3, 128, 200, 255]);
        let f = a.fold_xor(1).unwrap();
        assert_eq!(f.len(), 128);
        // 0 ^ 128 cancel; 3 stays; 200 → 72; 255 → 127.
        assert_eq!(f, from_bits(128, &[3, 72, 127]));
        // Unaligned halves take the bitwise path and agree with the definition.
        let b = from_bits(20, &[1, 9, 11, 12, 15]);
        let g = b.fold_xor(1).unwrap();
        assert_eq!(g.len(), 10);
        // 1 ^ 11 cancel; 9 stays; 12 → 2; 15 → 5.
        assert_eq!(g, from_bits(10, &[2, 5, 9]));
        // Two folds quarter it; zero folds are the identity.
        assert_eq!(a.fold_xor(2).unwrap().len(), 64);
        assert_eq!(a.fold_xor(0).unwrap(), a);
        assert!(matches!(
            from_bits(10, &[]).fold_xor(2),
            Err(ClkError::NotFoldable { bits: 10, folds: 2 })
        ));
    }
}
