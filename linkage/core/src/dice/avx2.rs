//! The AVX2 all-pairs kernel behind [`super::pairs_above`] for filters of 512, 1024 or 2048
//! bits, selected at run time when the CPU has AVX2 but not the AVX-512 kernel's features
//! (`avx512.rs`); the portable kernel serves every other case and is the reference the tests
//! compare this one with.
//!
//! **Popcount.** `|a ∧ b|` by the nibble-table method (Muła, Kurz and Lemire, "Faster
//! population counts using AVX2 instructions", 2018): `vpshufb` looks up the popcount of each
//! 4-bit nibble in a 16-entry table. Both sides are split into nibbles *before* the inner
//! loop: each query is stored as `a & 0x0f…` and `(a >> 4) & 0x0f…`, each target of the block
//! as `b` and `b >> 4`, so a 256-bit lane of a pair costs two `vpand`, two `vpshufb` and two
//! `vpaddb` (`vpshufb` ignores bits 4–6 of an index and the pre-masked query side clears the
//! high nibble, so no masking is left in the loop). Targets go in groups of [`GROUP`], one
//! accumulator each, so each query lane is loaded once per group; byte sums are reduced with
//! `vpsadbw` and the group's four counts are tested against one bound at once (below), so the
//! common case of a group with no pair above the threshold costs no scalar work.
//!
//! **Tiling.** A chunk of query rows (the rayon unit) walks the popcount-sorted targets in
//! blocks of [`BLOCK`] filters; a block (nibble-split: 256 bytes per 1024-bit filter, 16 KiB in
//! all) stays in L1 while every query of the chunk scans the part of it inside its own
//! popcount window, so targets are read from memory once per chunk, not once per query.
//!
//! **Decision.** `Dice ≥ t ⟺ |a ∧ b| ≥ ⌈t/2 · (|a| + |b|)⌉` (computed in `f64` exactly as the
//! portable kernel's `common ≥ t/2 · denom`), looked up in a table indexed by `|a| + |b|`;
//! scores of the pairs kept are computed by the same expression as the portable kernel, so
//! both kernels return the same pairs with bit-identical scores. As targets are sorted by
//! popcount, the need of a group's first target bounds the whole group (`floor`, the suffix
//! minimum of the table), so a group is looked at pair by pair only if some count reaches it.
//!
//! The module's one `unsafe` block is the call of the `#[target_feature(enable = "avx2")]`
//! entry point after run-time detection. The kernel itself is safe code (no raw pointers:
//! filters are copied into `__m256i` arrays).

use std::arch::x86_64::{
    __m128i, __m256i, _mm_add_epi32, _mm_add_epi64, _mm_cmpgt_epi32, _mm_cvtsi128_si64,
    _mm_extract_epi64, _mm_set1_epi32, _mm_testz_si128, _mm256_add_epi8, _mm256_add_epi32,
    _mm256_and_si256, _mm256_castsi256_si128, _mm256_extracti128_si256, _mm256_or_si256,
    _mm256_sad_epu8, _mm256_set_epi64x, _mm256_set1_epi8, _mm256_setr_epi8, _mm256_setzero_si256,
    _mm256_shuffle_epi8, _mm256_slli_epi64, _mm256_srli_epi64, _mm256_unpackhi_epi64,
    _mm256_unpacklo_epi64,
};
use std::ops::Range;

use super::{Candidate, Filters, Sorted, count_window, need_tables};

/// Targets per L1 block: 64 filters of 1024 bits, nibble-split, are 16 KiB.
const BLOCK: usize = 64;

/// Whether this kernel can score filters of `words` 64-bit words on this CPU.
pub(super) fn available(words: usize) -> bool {
    matches!(words, 8 | 16 | 32) && std::arch::is_x86_feature_detected!("avx2")
}

/// Scores rows `rows` of `a` against the sorted targets, like the portable `score_rows`;
/// returns the number of pairs inside the popcount windows.
///
/// # Panics
/// If [`available`] is false for the filters' length.
pub(super) fn score_rows(
    a: &Filters,
    rows: Range<usize>,
    b: &Sorted,
    threshold: f64,
    window: f64,
    out: &mut Vec<Candidate>,
) -> u64 {
    assert!(available(a.words), "AVX2 kernel unavailable");
    // SAFETY: `available` just checked that the CPU supports AVX2, the only requirement of
    // the `#[target_feature(enable = "avx2")]` functions; they are safe code otherwise.
    #[allow(
        unsafe_code,
        reason = "calling a target_feature function after run-time detection"
    )]
    unsafe {
        match a.words {
            8 => tile::<2>(a, rows, b, threshold, window, out),
            16 => tile::<4>(a, rows, b, threshold, window, out),
            _ => tile::<8>(a, rows, b, threshold, window, out),
        }
    }
}

/// Loads 4 words as a vector (word 0 in the lowest lane).
#[target_feature(enable = "avx2")]
fn load(w: &[u64]) -> __m256i {
    _mm256_set_epi64x(w[3] as i64, w[2] as i64, w[1] as i64, w[0] as i64)
}

/// Targets per group of the inner loop: one accumulator each, plus the table, the query's
/// two halves of one lane and temporaries, fit the 16 vector registers.
const GROUP: usize = 4;

/// Per-byte popcounts of `q ∧ t` for the `GROUP` targets `t` of a group (each byte ≤ 8·V ≤
/// 64), lane by lane: a query lane is loaded once for the whole group.
#[target_feature(enable = "avx2")]
#[inline]
fn group_counts<const V: usize>(
    lo: &[__m256i; V],
    hi: &[__m256i; V],
    b: &[[__m256i; V]],
    bh: &[[__m256i; V]],
    lut: __m256i,
) -> [__m256i; GROUP] {
    let mut acc = [_mm256_setzero_si256(); GROUP];
    for v in 0..V {
        let (l, h) = (lo[v], hi[v]);
        for t in 0..GROUP {
            let x = _mm256_shuffle_epi8(lut, _mm256_and_si256(l, b[t][v]));
            let y = _mm256_shuffle_epi8(lut, _mm256_and_si256(h, bh[t][v]));
            acc[t] = _mm256_add_epi8(acc[t], _mm256_add_epi8(x, y));
        }
    }
    acc
}

/// Per-byte popcounts of `q ∧ t` for one target.
#[target_feature(enable = "avx2")]
#[inline]
fn byte_counts<const V: usize>(
    lo: &[__m256i; V],
    hi: &[__m256i; V],
    b: &[__m256i; V],
    bh: &[__m256i; V],
    lut: __m256i,
) -> __m256i {
    let mut acc = _mm256_setzero_si256();
    for v in 0..V {
        let x = _mm256_shuffle_epi8(lut, _mm256_and_si256(lo[v], b[v]));
        let y = _mm256_shuffle_epi8(lut, _mm256_and_si256(hi[v], bh[v]));
        acc = _mm256_add_epi8(acc, _mm256_add_epi8(x, y));
    }
    acc
}

/// The four popcounts behind four byte-count vectors, as four `u32` lanes.
#[target_feature(enable = "avx2")]
#[inline]
fn reduce4(c0: __m256i, c1: __m256i, c2: __m256i, c3: __m256i) -> __m128i {
    let z = _mm256_setzero_si256();
    // Each 64-bit lane of a `vpsadbw` result is ≤ 8·64: two pairs share a lane, 32 bits each.
    let t01 = _mm256_or_si256(
        _mm256_sad_epu8(c0, z),
        _mm256_slli_epi64::<32>(_mm256_sad_epu8(c1, z)),
    );
    let t23 = _mm256_or_si256(
        _mm256_sad_epu8(c2, z),
        _mm256_slli_epi64::<32>(_mm256_sad_epu8(c3, z)),
    );
    let s = _mm256_add_epi32(
        _mm256_unpacklo_epi64(t01, t23),
        _mm256_unpackhi_epi64(t01, t23),
    );
    _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s))
}

/// The four `u32` lanes of `x`.
#[target_feature(enable = "avx2")]
#[inline]
fn lanes(x: __m128i) -> [u32; 4] {
    let (p01, p23) = (
        _mm_cvtsi128_si64(x) as u64,
        _mm_extract_epi64::<1>(x) as u64,
    );
    [
        p01 as u32,
        (p01 >> 32) as u32,
        p23 as u32,
        (p23 >> 32) as u32,
    ]
}

/// The popcount behind one byte-count vector.
#[target_feature(enable = "avx2")]
#[inline]
fn reduce1(c: __m256i) -> u32 {
    let s = _mm256_sad_epu8(c, _mm256_setzero_si256());
    let x = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
    (_mm_cvtsi128_si64(x) + _mm_extract_epi64::<1>(x)) as u32
}

/// One query against a run of targets of the current block.
struct Scan<'a, const V: usize> {
    lo: &'a [__m256i; V],
    hi: &'a [__m256i; V],
    ia: u32,
    ca: u32,
    /// `need[|a| + |b|]`: the least `|a ∧ b|` that reaches the threshold.
    need: &'a [u32],
    /// `floor[d] = min(need[d..])`, capped at `bits + 1` (more than any count): a bound for a
    /// whole group, whose targets are sorted by popcount.
    floor: &'a [u32],
}

impl<const V: usize> Scan<'_, V> {
    #[inline]
    fn keep(&self, common: u32, cb: u32, ib: u32, out: &mut Vec<Candidate>) {
        let denom = self.ca + cb;
        if common >= self.need[denom as usize] {
            out.push(Candidate {
                a: self.ia,
                b: ib,
                score: (2.0 * f64::from(common) / f64::from(denom)) as f32,
            });
        }
    }

    /// Scores the query against targets `blk[i]`, `blkh[i]` with popcounts `counts[i]`
    /// (ascending) and original indices `index[i]` (all four of equal length).
    #[target_feature(enable = "avx2")]
    fn run(
        &self,
        blk: &[[__m256i; V]],
        blkh: &[[__m256i; V]],
        counts: &[u32],
        index: &[u32],
        lut: __m256i,
        out: &mut Vec<Candidate>,
    ) {
        let n = blk.len() / GROUP * GROUP;
        for (((b, bh), cb), ib) in blk[..n]
            .chunks_exact(GROUP)
            .zip(blkh[..n].chunks_exact(GROUP))
            .zip(counts[..n].chunks_exact(GROUP))
            .zip(index[..n].chunks_exact(GROUP))
        {
            let c = group_counts(self.lo, self.hi, b, bh, lut);
            let c03 = reduce4(c[0], c[1], c[2], c[3]);
            // Every target of the group needs at least `floor` common bits (counts ascend).
            let bound = _mm_set1_epi32(self.floor[(self.ca + cb[0]) as usize] as i32 - 1);
            let hit = _mm_cmpgt_epi32(c03, bound);
            if _mm_testz_si128(hit, hit) == 0 {
                let c03 = lanes(c03);
                for j in 0..4 {
                    self.keep(c03[j], cb[j], ib[j], out);
                }
            }
        }
        for j in n..blk.len() {
            let c = reduce1(byte_counts(self.lo, self.hi, &blk[j], &blkh[j], lut));
            self.keep(c, counts[j], index[j], out);
        }
    }
}

#[target_feature(enable = "avx2")]
fn tile<const V: usize>(
    a: &Filters,
    rows: Range<usize>,
    b: &Sorted,
    threshold: f64,
    window: f64,
    out: &mut Vec<Candidate>,
) -> u64 {
    let words = a.words;
    debug_assert_eq!(words, 4 * V);
    let (need, floor) = need_tables(words * 64, threshold);
    let low = _mm256_set1_epi8(0x0f);
    let lut = _mm256_setr_epi8(
        0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, //
        0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
    );

    // Queries: nibble-split, and their windows in the sorted targets.
    let mut lo = Vec::with_capacity(rows.len());
    let mut hi = Vec::with_capacity(rows.len());
    let mut windows = Vec::with_capacity(rows.len());
    for ia in rows.clone() {
        let f = a.get(ia);
        let mut l = [_mm256_setzero_si256(); V];
        let mut h = [_mm256_setzero_si256(); V];
        for v in 0..V {
            let x = load(&f[4 * v..4 * v + 4]);
            l[v] = _mm256_and_si256(x, low);
            h[v] = _mm256_and_si256(_mm256_srli_epi64::<4>(x), low);
        }
        lo.push(l);
        hi.push(h);
        let (wlo, whi) = count_window(a.count(ia), window);
        let start = b.counts.partition_point(|&c| c < wlo);
        let end = b.counts.partition_point(|&c| c <= whi);
        windows.push(start..end.max(start));
    }
    let first = windows.iter().map(|w| w.start).min().unwrap_or(0);
    let last = windows.iter().map(|w| w.end).max().unwrap_or(0);

    let mut blk: Vec<[__m256i; V]> = Vec::with_capacity(BLOCK);
    let mut blkh: Vec<[__m256i; V]> = Vec::with_capacity(BLOCK);
    let mut compared = 0u64;
    let mut k0 = first;
    while k0 < last {
        let k1 = (k0 + BLOCK).min(last);
        blk.clear();
        blkh.clear();
        for k in k0..k1 {
            let f = &b.data[k * words..(k + 1) * words];
            let mut x = [_mm256_setzero_si256(); V];
            let mut xh = [_mm256_setzero_si256(); V];
            for v in 0..V {
                x[v] = load(&f[4 * v..4 * v + 4]);
                xh[v] = _mm256_srli_epi64::<4>(x[v]);
            }
            blk.push(x);
            blkh.push(xh);
        }
        for (q, ia) in rows.clone().enumerate() {
            let (s, e) = (windows[q].start.max(k0), windows[q].end.min(k1));
            if s >= e {
                continue;
            }
            compared += (e - s) as u64;
            let scan = Scan {
                lo: &lo[q],
                hi: &hi[q],
                ia: ia as u32,
                ca: a.count(ia),
                need: &need,
                floor: &floor,
            };
            scan.run(
                &blk[s - k0..e - k0],
                &blkh[s - k0..e - k0],
                &b.counts[s..e],
                &b.index[s..e],
                lut,
                out,
            );
        }
        k0 = k1;
    }
    compared
}
