//! The AVX-512 all-pairs kernel behind [`super::pairs_above`], for filters of any length,
//! selected at run time when the CPU has AVX-512F and VPOPCNTDQ (`vpopcntq`, Intel Ice Lake
//! and later, AMD Zen 4 and later). The AVX2 and portable kernels stay as fallback and the
//! portable one as the reference the tests compare this one with.
//!
//! **Layout.** The popcount-sorted targets are transposed once per search into groups of
//! [`LANES`] = 8 filters ([`Lanes`]): vector `w` of group `g` holds word `w` of targets
//! `8g..8g + 8`, one per 64-bit lane. A query's word `w` is broadcast to all lanes, so one
//! `vpandq` + `vpopcntq` + `vpaddq` per word counts `|a ∧ b|` for eight targets at once and
//! the sums end up one per lane: no horizontal reduction, no per-pair shuffles, and any filter
//! length works the same way (the word loop is unrolled for 512, 1024 and 2048 bits). The
//! last group is padded with empty filters, which no window reaches.
//!
//! **Tiling.** As in the AVX2 kernel, a chunk of query rows (the rayon unit) walks the targets
//! in blocks of about [`BLOCK_BYTES`] (128 filters of 1024 bits), which stay in L1 while every
//! query of the chunk scans the part of the block inside its own popcount window.
//!
//! **Decision.** The same as the AVX2 kernel's: a group of 8 is looked at lane by lane only if
//! some lane inside the query's window reaches `floor[|a| + |b₀|]` (one `vpcmpuq` into a mask
//! register), and a pair is kept when `|a ∧ b| ≥ need[|a| + |b|]`, the portable kernel's `f64`
//! test tabulated; its score is the portable kernel's expression, so all kernels return the
//! same pairs with bit-identical scores (tested).
//!
//! The kernel is safe code (no raw pointers: filters are assembled into `__m512i` values with
//! `_mm512_set_epi64` and read back with lane extracts); the one `unsafe` block is the call of
//! the `#[target_feature]` entry point after run-time detection.

use std::arch::x86_64::{
    __m512i, _mm_cvtsi128_si64, _mm_extract_epi64, _mm256_castsi256_si128,
    _mm256_extracti128_si256, _mm512_add_epi64, _mm512_and_si512, _mm512_extracti64x4_epi64,
    _mm512_mask_cmpge_epu64_mask, _mm512_popcnt_epi64, _mm512_set_epi64, _mm512_set1_epi64,
    _mm512_setzero_si512,
};
use std::ops::Range;

use super::{Candidate, Filters, Sorted, count_window, need_tables};

/// Targets per vector: one 64-bit word of each of 8 filters.
pub(super) const LANES: usize = 8;

/// Bytes of targets per L1 block (a multiple of [`LANES`] filters, at least one group, at
/// most [`MAX_GROUPS`]).
const BLOCK_BYTES: usize = 16 * 1024;

/// Groups per block at most (a power of two): 128 filters.
const MAX_GROUPS: usize = 16;

/// Whether this kernel runs on this CPU (for filters of any length).
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vpopcntdq")
}

/// The sorted targets transposed into groups of [`LANES`] (module docs): vector
/// `g·words + w` holds word `w` of sorted targets `8g..8g + 8`.
pub(super) struct Lanes {
    words: usize,
    data: Vec<__m512i>,
}

impl Lanes {
    /// Transposes the filters of `b` in the order `index` (the sorted order).
    ///
    /// # Panics
    /// If [`available`] is false.
    pub(super) fn new(b: &Filters, index: &[u32]) -> Self {
        assert!(available(), "AVX-512 kernel unavailable");
        // SAFETY: `available` just checked AVX-512F and VPOPCNTDQ, the requirements of the
        // `#[target_feature]` function, which is safe code otherwise.
        #[allow(
            unsafe_code,
            reason = "calling a target_feature function after run-time detection"
        )]
        unsafe {
            Self::transpose(b, index)
        }
    }

    #[target_feature(enable = "avx512f")]
    fn transpose(b: &Filters, index: &[u32]) -> Self {
        let words = b.words;
        let groups = index.len().div_ceil(LANES);
        let mut data = Vec::with_capacity(groups * words);
        let empty = vec![0u64; words];
        for g in 0..groups {
            let f: [&[u64]; LANES] = std::array::from_fn(|l| {
                index
                    .get(g * LANES + l)
                    .map_or(empty.as_slice(), |&i| b.get(i as usize))
            });
            data.extend((0..words).map(|w| {
                _mm512_set_epi64(
                    f[7][w] as i64,
                    f[6][w] as i64,
                    f[5][w] as i64,
                    f[4][w] as i64,
                    f[3][w] as i64,
                    f[2][w] as i64,
                    f[1][w] as i64,
                    f[0][w] as i64,
                )
            }));
        }
        Self { words, data }
    }
}

/// Scores rows `rows` of `a` against the sorted targets `b` (transposed in `lanes`), like the
/// portable `score_rows`; returns the number of pairs inside the popcount windows.
///
/// # Panics
/// If [`available`] is false or the lengths differ.
pub(super) fn score_rows(
    a: &Filters,
    rows: Range<usize>,
    b: &Sorted,
    lanes: &Lanes,
    threshold: f64,
    window: f64,
    out: &mut Vec<Candidate>,
) -> u64 {
    assert!(available(), "AVX-512 kernel unavailable");
    assert_eq!(a.words, lanes.words, "filters of equal length");
    // SAFETY: `available` just checked that the CPU supports AVX-512F and VPOPCNTDQ, the only
    // requirements of the `#[target_feature]` functions; they are safe code otherwise.
    #[allow(
        unsafe_code,
        reason = "calling a target_feature function after run-time detection"
    )]
    unsafe {
        match a.words {
            8 => tile::<8>(a, rows, b, lanes, threshold, window, out),
            16 => tile::<16>(a, rows, b, lanes, threshold, window, out),
            32 => tile::<32>(a, rows, b, lanes, threshold, window, out),
            _ => tile::<0>(a, rows, b, lanes, threshold, window, out),
        }
    }
}

/// The eight `u64` lanes of `x`, lowest first.
#[target_feature(enable = "avx512f")]
#[inline]
fn lanes8(x: __m512i) -> [u64; LANES] {
    let mut out = [0u64; LANES];
    for (h, half) in [
        _mm512_extracti64x4_epi64::<0>(x),
        _mm512_extracti64x4_epi64::<1>(x),
    ]
    .into_iter()
    .enumerate()
    {
        for (q, quarter) in [
            _mm256_castsi256_si128(half),
            _mm256_extracti128_si256::<1>(half),
        ]
        .into_iter()
        .enumerate()
        {
            out[4 * h + 2 * q] = _mm_cvtsi128_si64(quarter) as u64;
            out[4 * h + 2 * q + 1] = _mm_extract_epi64::<1>(quarter) as u64;
        }
    }
    out
}

/// Lanes `lo..hi` of a group as a mask (`lo < hi ≤ 8`).
#[inline]
fn lane_mask(lo: usize, hi: usize) -> u8 {
    ((0xffu16 << lo) & !(0xffu16 << hi)) as u8
}

/// One query against the targets of the current block: `W` words (0: `words`, at run time).
struct Scan<'a> {
    /// The query, one word per element.
    q: &'a [u64],
    ia: u32,
    ca: u32,
    /// `need[|a| + |b|]`: the least `|a ∧ b|` that reaches the threshold.
    need: &'a [u32],
    /// Suffix minimum of `need`, capped: a bound for a whole (popcount-sorted) group.
    floor: &'a [u32],
}

impl Scan<'_> {
    /// Scores the query against sorted targets `s..e` (at most [`MAX_GROUPS`] groups of
    /// `lanes`); `counts`, `index` are the sorted popcounts and original indices. Two passes:
    /// the counts of every group, keeping the groups some lane of which reaches the bound, with
    /// no call in the loop (so the broadcast query stays in registers); then the pairs of those.
    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    fn run<const W: usize>(
        &self,
        lanes: &Lanes,
        (s, e): (usize, usize),
        counts: &[u32],
        index: &[u32],
        out: &mut Vec<Candidate>,
    ) {
        let words = lanes.words;
        let (g0, g1) = (s / LANES, e.div_ceil(LANES));
        debug_assert!(g1 - g0 <= MAX_GROUPS);
        let mut hits = [(_mm512_setzero_si512(), 0usize, 0u8); MAX_GROUPS];
        let mut n = 0;
        // The query broadcast, word by word (unrolled for a known length).
        let q: [__m512i; W] = std::array::from_fn(|w| _mm512_set1_epi64(self.q[w] as i64));
        for g in g0..g1 {
            let base = g * LANES;
            let group = &lanes.data[g * words..(g + 1) * words];
            let acc = if W > 0 {
                let group: &[__m512i; W] = group.try_into().expect("W words");
                let (mut x, mut y) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                for w in (0..W).step_by(2) {
                    x = _mm512_add_epi64(x, _mm512_popcnt_epi64(_mm512_and_si512(q[w], group[w])));
                    if w + 1 < W {
                        y = _mm512_add_epi64(
                            y,
                            _mm512_popcnt_epi64(_mm512_and_si512(q[w + 1], group[w + 1])),
                        );
                    }
                }
                _mm512_add_epi64(x, y)
            } else {
                let mut x = _mm512_setzero_si512();
                for (w, t) in group.iter().enumerate() {
                    let qw = _mm512_set1_epi64(self.q[w] as i64);
                    x = _mm512_add_epi64(x, _mm512_popcnt_epi64(_mm512_and_si512(qw, *t)));
                }
                x
            };
            let inside = lane_mask(s.max(base) - base, e.min(base + LANES) - base);
            // Every target of the group needs at least `floor` common bits (counts ascend).
            let first = counts[s.max(base)];
            let bound = _mm512_set1_epi64(i64::from(self.floor[(self.ca + first) as usize]));
            let hit = _mm512_mask_cmpge_epu64_mask(inside, acc, bound);
            if hit != 0 {
                hits[n & (MAX_GROUPS - 1)] = (acc, base, hit);
                n += 1;
            }
        }
        for &(acc, base, hit) in &hits[..n] {
            let common = lanes8(acc);
            for (l, &common) in common.iter().enumerate() {
                if hit & (1 << l) != 0 {
                    let k = base + l;
                    let (common, cb) = (common as u32, counts[k]);
                    let denom = self.ca + cb;
                    if common >= self.need[denom as usize] {
                        out.push(Candidate {
                            a: self.ia,
                            b: index[k],
                            score: (2.0 * f64::from(common) / f64::from(denom)) as f32,
                        });
                    }
                }
            }
        }
    }
}

#[target_feature(enable = "avx512f,avx512vpopcntdq")]
fn tile<const W: usize>(
    a: &Filters,
    rows: Range<usize>,
    b: &Sorted,
    lanes: &Lanes,
    threshold: f64,
    window: f64,
    out: &mut Vec<Candidate>,
) -> u64 {
    let words = a.words;
    debug_assert!(W == 0 || W == words);
    let (need, floor) = need_tables(words * 64, threshold);
    let block = (BLOCK_BYTES / (8 * words) / LANES).clamp(1, MAX_GROUPS) * LANES;

    let windows: Vec<Range<usize>> = rows
        .clone()
        .map(|ia| {
            let (wlo, whi) = count_window(a.count(ia), window);
            let start = b.counts.partition_point(|&c| c < wlo);
            let end = b.counts.partition_point(|&c| c <= whi);
            start..end.max(start)
        })
        .collect();
    // Blocks start at multiples of the block size, so a block's part of any window spans at
    // most `MAX_GROUPS` groups.
    let first = windows.iter().map(|w| w.start).min().unwrap_or(0) / block * block;
    let last = windows.iter().map(|w| w.end).max().unwrap_or(0);

    let mut compared = 0u64;
    let mut k0 = first;
    while k0 < last {
        let k1 = (k0 + block).min(last);
        for (q, ia) in rows.clone().enumerate() {
            let (s, e) = (windows[q].start.max(k0), windows[q].end.min(k1));
            if s >= e {
                continue;
            }
            compared += (e - s) as u64;
            let scan = Scan {
                q: a.get(ia),
                ia: ia as u32,
                ca: a.count(ia),
                need: &need,
                floor: &floor,
            };
            scan.run::<W>(lanes, (s, e), &b.counts, &b.index, out);
        }
        k0 = k1;
    }
    compared
}
