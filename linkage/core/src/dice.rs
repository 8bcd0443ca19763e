//! Dice similarity of Bloom-filter encodings (CLK, Schnell et al. 2009) at the hardware limit.
//!
//! `Dice(A, B) = 2·|A ∧ B| / (|A| + |B|)`, with `|·|` the number of set bits. Filters are stored
//! contiguously as `u64` words ([`Filters`]). Three all-pairs kernels ([`Kernel`]), the fastest
//! the CPU has chosen at run time: on CPUs with AVX-512F and VPOPCNTDQ, for filters of any
//! length, `vpopcntq` over the targets transposed into groups of 8 (one target per 64-bit lane,
//! the query broadcast), in L1-resident blocks (`dice/avx512.rs`); else on CPUs with AVX2, for
//! 512-, 1024- and 2048-bit filters, a `vpshufb` nibble-table popcount over query rows ×
//! L1-resident blocks of targets (`dice/avx2.rs`); otherwise, and as the reference, AND +
//! POPCNT word by word (the POPCNT instruction when the CPU has it, else `count_ones`). All
//! return the same pairs with bit-identical scores (tested); [`pairs_above_kernel`] forces one.
//!
//! **Pruning by popcount**: `Dice ≤ 2·min(x, y)/(x + y)` for popcounts `x`, `y`, so with the
//! second set sorted by popcount only `y ∈ [x·t/(2−t), x·(2−t)/t]` can reach threshold `t`;
//! the others are skipped as whole ranges, without touching their filters (anonlink tests
//! `|x − y|` pair by pair instead). **Solvers**: all pairs above the threshold, greedy 1:1,
//! and many-to-one.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

/// A set of equal-length Bloom filters, stored contiguously with their popcounts.
#[derive(Clone, Debug, Default)]
pub struct Filters {
    words: usize,
    data: Vec<u64>,
    counts: Vec<u32>,
}

/// A scored pair: indices into the two [`Filters`] and the Dice coefficient.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    /// Index in the first set.
    pub a: u32,
    /// Index in the second set.
    pub b: u32,
    /// Dice coefficient in `[0, 1]`.
    pub score: f32,
}

impl Filters {
    /// An empty set of filters of `words` 64-bit words each (`words · 64` bits).
    pub fn new(words: usize) -> Self {
        assert!(words > 0, "a filter has at least one word");
        Self {
            words,
            data: Vec::new(),
            counts: Vec::new(),
        }
    }

    /// Appends one filter; returns its index.
    ///
    /// # Panics
    /// If `filter` does not have the set's word count.
    pub fn push(&mut self, filter: &[u64]) -> u32 {
        assert_eq!(filter.len(), self.words, "filter length in words");
        self.data.extend_from_slice(filter);
        self.counts
            .push(filter.iter().map(|w| w.count_ones()).sum());
        u32::try_from(self.counts.len() - 1).expect("fewer than 2^32 filters")
    }

    /// Number of filters.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Words per filter.
    pub fn words(&self) -> usize {
        self.words
    }

    /// Filter `i`.
    pub fn get(&self, i: usize) -> &[u64] {
        &self.data[i * self.words..(i + 1) * self.words]
    }

    /// Popcount of filter `i`.
    pub fn count(&self, i: usize) -> u32 {
        self.counts[i]
    }
}

/// `|a ∧ b|`, portable.
#[inline]
fn and_count_portable(a: &[u64], b: &[u64]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x & y).count_ones()).sum()
}

/// The Dice coefficient of two filters of equal length; 0 when both are empty.
pub fn dice(a: &[u64], b: &[u64]) -> f64 {
    assert_eq!(a.len(), b.len(), "filters of equal length");
    let (ca, cb): (u32, u32) = (
        a.iter().map(|w| w.count_ones()).sum(),
        b.iter().map(|w| w.count_ones()).sum(),
    );
    if ca + cb == 0 {
        return 0.0;
    }
    2.0 * f64::from(and_count_portable(a, b)) / f64::from(ca + cb)
}

/// Popcount range `[lo, hi]` of filters that can reach Dice `t` against one of popcount `x`.
#[inline]
fn count_window(x: u32, t: f64) -> (u32, u32) {
    if t <= 0.0 {
        return (0, u32::MAX);
    }
    let x = f64::from(x);
    let lo = (x * t / (2.0 - t)).ceil();
    let hi = (x * (2.0 - t) / t).floor();
    (lo.max(0.0) as u32, hi.min(f64::from(u32::MAX)) as u32)
}

/// `need[d]` for `d = |a| + |b|` in `0..=2·bits`: the least integer `c` with
/// `c as f64 ≥ t/2 · d as f64`, the portable kernel's test (`u32::MAX` for `d = 0`, which it
/// never keeps, and for a NaN threshold); and its suffix minimum capped at `bits + 1`.
#[cfg(target_arch = "x86_64")]
fn need_tables(bits: usize, threshold: f64) -> (Vec<u32>, Vec<u32>) {
    let half_t = threshold / 2.0;
    let need: Vec<u32> = (0..=2 * bits as u32)
        .map(|d| {
            let x = half_t * f64::from(d);
            if d == 0 || x.is_nan() {
                u32::MAX
            } else if x <= 0.0 {
                0
            } else {
                x.ceil().min(f64::from(u32::MAX)) as u32
            }
        })
        .collect();
    let mut floor = need.clone();
    let cap = bits as u32 + 1;
    let mut m = cap;
    for f in floor.iter_mut().rev() {
        m = m.min(*f);
        *f = m;
    }
    (need, floor)
}

/// The second set in ascending popcount order, copied contiguously so that the scan over a
/// popcount window reads memory sequentially: row by row for the portable and AVX2 kernels,
/// transposed into groups of 8 for the AVX-512 kernel (which then needs no row copy).
struct Sorted {
    words: usize,
    data: Vec<u64>,
    counts: Vec<u32>,
    index: Vec<u32>,
    #[cfg(target_arch = "x86_64")]
    lanes: Option<avx512::Lanes>,
}

impl Sorted {
    /// `b` sorted for `kernel` (one of the concrete kernels, not [`Kernel::Auto`]).
    fn new(b: &Filters, kernel: Kernel) -> Self {
        let mut index: Vec<u32> = (0..b.len() as u32).collect();
        index.sort_unstable_by_key(|&i| (b.counts[i as usize], i));
        let mut data = Vec::new();
        if kernel != Kernel::Avx512 {
            data.reserve_exact(b.data.len());
            for &i in &index {
                data.extend_from_slice(b.get(i as usize));
            }
        }
        let counts = index.iter().map(|&i| b.counts[i as usize]).collect();
        Self {
            words: b.words,
            #[cfg(target_arch = "x86_64")]
            lanes: (kernel == Kernel::Avx512).then(|| avx512::Lanes::new(b, &index)),
            data,
            counts,
            index,
        }
    }
}

/// `|a ∧ b|` for filters of `W` words, fully unrolled.
#[inline(always)]
fn and_count_fixed<const W: usize>(a: &[u64; W], b: &[u64; W]) -> u32 {
    let mut c = 0;
    for i in 0..W {
        c += (a[i] & b[i]).count_ones();
    }
    c
}

/// Scores filter `ia` of the first set against the popcount window of the sorted second set.
/// `W` is the word count when known at compile time (0: any, read from the sets).
#[inline(always)]
fn score_row<const W: usize>(
    ia: u32,
    fa: &[u64],
    ca: u32,
    b: &Sorted,
    threshold: f64,
    window: f64,
    out: &mut Vec<Candidate>,
) -> u64 {
    let (lo, hi) = count_window(ca, window);
    let start = b.counts.partition_point(|&c| c < lo);
    let end = b.counts.partition_point(|&c| c <= hi);
    let words = b.words;
    let half_t = threshold / 2.0;
    for k in start..end {
        let fb = &b.data[k * words..(k + 1) * words];
        let common = if W > 0 {
            let fa: &[u64; W] = fa.try_into().expect("W words");
            let fb: &[u64; W] = fb.try_into().expect("W words");
            and_count_fixed(fa, fb)
        } else {
            and_count_portable(fa, fb)
        };
        let denom = ca + b.counts[k];
        // Dice ≥ t ⟺ common ≥ t/2 · denom: a multiply, no division, for pairs below.
        if denom > 0 && f64::from(common) >= half_t * f64::from(denom) {
            out.push(Candidate {
                a: ia,
                b: b.index[k],
                score: (2.0 * f64::from(common) / f64::from(denom)) as f32,
            });
        }
    }
    (end - start) as u64
}

/// Scores a range of rows of the first set; monomorphized for 1024-bit filters.
#[inline(always)]
fn score_rows_impl(
    a: &Filters,
    rows: std::ops::Range<usize>,
    b: &Sorted,
    threshold: f64,
    window: f64,
    out: &mut Vec<Candidate>,
) -> u64 {
    let mut compared = 0;
    for ia in rows {
        compared += if a.words == 16 {
            score_row::<16>(ia as u32, a.get(ia), a.count(ia), b, threshold, window, out)
        } else {
            score_row::<0>(ia as u32, a.get(ia), a.count(ia), b, threshold, window, out)
        };
    }
    compared
}

/// The same, compiled with the POPCNT instruction enabled.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
fn score_rows_popcnt(
    a: &Filters,
    rows: std::ops::Range<usize>,
    b: &Sorted,
    threshold: f64,
    window: f64,
    out: &mut Vec<Candidate>,
) -> u64 {
    score_rows_impl(a, rows, b, threshold, window, out)
}

/// Scores a range of rows of the first set with `kernel`, a concrete kernel available for the
/// filters' length ([`Kernel::resolve`]).
fn score_rows(
    a: &Filters,
    rows: std::ops::Range<usize>,
    b: &Sorted,
    threshold: f64,
    pruning: Pruning,
    kernel: Kernel,
    out: &mut Vec<Candidate>,
) -> u64 {
    let window = if pruning == Pruning::PopcountBound {
        threshold
    } else {
        0.0
    };
    #[cfg(target_arch = "x86_64")]
    match (kernel, &b.lanes) {
        (Kernel::Avx512, Some(lanes)) => {
            return avx512::score_rows(a, rows, b, lanes, threshold, window, out);
        }
        (Kernel::Avx2, _) => return avx2::score_rows(a, rows, b, threshold, window, out),
        _ => {}
    }
    debug_assert_eq!(kernel, Kernel::Portable);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("popcnt") {
        // SAFETY: the CPU supports POPCNT (checked just above), the only requirement of a
        // `#[target_feature(enable = "popcnt")]` function; the function itself is safe code.
        #[allow(
            unsafe_code,
            reason = "calling a target_feature function after detection"
        )]
        return unsafe { score_rows_popcnt(a, rows, b, threshold, window, out) };
    }
    score_rows_impl(a, rows, b, threshold, window, out)
}

/// Result of an all-pairs comparison.
#[derive(Clone, Debug, Default)]
pub struct PairScores {
    /// Pairs with Dice ≥ the threshold, ordered by (a, b).
    pub pairs: Vec<Candidate>,
    /// Pairs actually compared (the rest were pruned by the popcount bound).
    pub compared: u64,
}

/// Whether to skip pairs by the popcount bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pruning {
    /// Compare only pairs whose popcounts allow the threshold (the default; exact).
    PopcountBound,
    /// Compare every pair (for measuring the kernel).
    None,
}

/// Which all-pairs kernel to run. All return the same pairs with bit-identical scores and the
/// same count of pairs compared; they differ only in speed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kernel {
    /// The fastest kernel this CPU has for the filter length: [`Kernel::Avx512`] when the CPU
    /// has it, else [`Kernel::Avx2`] when available for the length, else
    /// [`Kernel::Portable`]. Detected at every call (`is_x86_feature_detected!` caches).
    /// [`KERNEL_ENV`] can cap the choice (for benchmarks).
    Auto,
    /// AVX-512F + VPOPCNTDQ: `vpopcntq` on 8 targets at once (transposed layout, L1 tiling),
    /// any filter length; x86-64 CPUs with those features only (Ice Lake, Zen 4 and later).
    Avx512,
    /// AVX2: nibble-table (`vpshufb`) popcount, L1 tiling; 512-, 1024- and 2048-bit filters
    /// on x86-64 CPUs with AVX2 only.
    Avx2,
    /// AND + POPCNT word by word (the POPCNT instruction when the CPU has it, else
    /// `count_ones`); every CPU and length, the reference.
    Portable,
}

/// Environment variable, read once per process, that caps the kernel [`Kernel::Auto`] picks and
/// the instructions of pair-by-pair scoring ([`score_candidates`], Hamming-LSH candidates), to
/// measure the slower kernels in place: `avx2` (no AVX-512), `portable` (neither AVX-512 nor
/// AVX2; POPCNT stays), or `auto`, unset or any other value (no cap). Results never change:
/// every kernel returns the same pairs and scores.
pub const KERNEL_ENV: &str = "RENKETSU_DICE_KERNEL";

/// The cap set by [`KERNEL_ENV`] (`None`: none).
fn kernel_cap() -> Option<Kernel> {
    static CAP: std::sync::OnceLock<Option<Kernel>> = std::sync::OnceLock::new();
    *CAP.get_or_init(|| match std::env::var(KERNEL_ENV).ok()?.as_str() {
        "avx2" => Some(Kernel::Avx2),
        "portable" => Some(Kernel::Portable),
        _ => None,
    })
}

impl Kernel {
    /// The kernel's name: `"auto"`, `"avx512"`, `"avx2"` or `"portable"`.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Auto => "auto",
            Kernel::Avx512 => "avx512",
            Kernel::Avx2 => "avx2",
            Kernel::Portable => "portable",
        }
    }

    /// Whether this kernel runs on this CPU for filters of `words` 64-bit words
    /// ([`Kernel::Auto`] and [`Kernel::Portable`] always do).
    pub fn is_available(self, words: usize) -> bool {
        match self {
            Kernel::Auto | Kernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => avx512::available(),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => avx2::available(words),
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx512 | Kernel::Avx2 => {
                let _ = words;
                false
            }
        }
    }

    /// The concrete kernel that runs for filters of `words` words: for [`Kernel::Auto`] the
    /// first available of AVX-512, AVX2 and portable (from the cap of [`KERNEL_ENV`] down, if
    /// set); any other kernel itself when available, else `None`.
    pub fn resolve(self, words: usize) -> Option<Kernel> {
        match self {
            Kernel::Auto => [Kernel::Avx512, Kernel::Avx2]
                .into_iter()
                .skip_while(|&k| kernel_cap().is_some_and(|cap| cap != k))
                .find(|k| k.is_available(words))
                .or(Some(Kernel::Portable)),
            k => k.is_available(words).then_some(k),
        }
    }

    /// The name of the kernel [`Kernel::Auto`] picks for filters of `words` 64-bit words on
    /// this CPU: `"avx512"`, `"avx2"` or `"portable"`.
    pub fn auto_name(words: usize) -> &'static str {
        Kernel::Auto.resolve(words).map_or("portable", Kernel::name)
    }
}

/// Every pair `(a, b)` with Dice ≥ `threshold`, comparing only pairs the popcount bound allows;
/// rows of `a` are spread over rayon's threads in chunks of 256.
///
/// # Panics
/// If the two sets have different filter lengths.
pub fn pairs_above(a: &Filters, b: &Filters, threshold: f64) -> PairScores {
    pairs_above_with(a, b, threshold, Pruning::PopcountBound)
}

/// [`pairs_above`] with a choice of [`Pruning`].
pub fn pairs_above_with(a: &Filters, b: &Filters, threshold: f64, pruning: Pruning) -> PairScores {
    pairs_above_kernel(a, b, threshold, pruning, Kernel::Auto)
}

/// [`pairs_above`] with a choice of [`Pruning`] and [`Kernel`] (for tests and benchmarks:
/// every kernel gives the same result).
///
/// # Panics
/// If the two sets have different filter lengths, or `kernel` is not available on this CPU
/// for their length ([`Kernel::is_available`]).
pub fn pairs_above_kernel(
    a: &Filters,
    b: &Filters,
    threshold: f64,
    pruning: Pruning,
    kernel: Kernel,
) -> PairScores {
    assert_eq!(a.words, b.words, "filters of equal length");
    let kernel = kernel.resolve(a.words).unwrap_or_else(|| {
        panic!(
            "the {} Dice kernel is not available on this CPU for {}-bit filters",
            kernel.name(),
            a.words * 64
        )
    });
    let sorted = Sorted::new(b, kernel);
    const CHUNK: usize = 256;
    let chunks: Vec<(Vec<Candidate>, u64)> = (0..a.len().div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let rows = c * CHUNK..((c + 1) * CHUNK).min(a.len());
            let mut out = Vec::new();
            let n = score_rows(a, rows, &sorted, threshold, pruning, kernel, &mut out);
            out.sort_unstable_by_key(|x| (x.a, x.b));
            (out, n)
        })
        .collect();
    let compared = chunks.iter().map(|(_, n)| n).sum();
    let pairs = chunks.into_iter().flat_map(|(v, _)| v).collect();
    PairScores { pairs, compared }
}

/// Scores the candidate pairs `(index in a, index in b)` (from blocking) and keeps those with
/// Dice ≥ `threshold`, in candidate order; spread over rayon's threads.
pub fn score_candidates(
    a: &Filters,
    b: &Filters,
    candidates: &[(u32, u32)],
    threshold: f64,
) -> Vec<Candidate> {
    assert_eq!(a.words, b.words, "filters of equal length");
    let chunks: Vec<Vec<Candidate>> = candidates
        .par_chunks(4096)
        .map(|chunk| {
            let mut out = Vec::new();
            #[cfg(target_arch = "x86_64")]
            match PairIsa::detect() {
                // SAFETY: the CPU supports the features of the `#[target_feature]` function
                // called (`PairIsa::detect` checked them); the function is safe code.
                #[allow(
                    unsafe_code,
                    reason = "calling a target_feature function after detection"
                )]
                PairIsa::Avx512 => unsafe {
                    score_chunk_avx512(a, b, chunk, threshold, &mut out);
                    return out;
                },
                // SAFETY: as above, for POPCNT.
                #[allow(
                    unsafe_code,
                    reason = "calling a target_feature function after detection"
                )]
                PairIsa::Popcnt => unsafe {
                    score_chunk_popcnt(a, b, chunk, threshold, &mut out);
                    return out;
                },
                PairIsa::Plain => {}
            }
            score_chunk(a, b, chunk, threshold, &mut out);
            out
        })
        .collect();
    chunks.concat()
}

/// Scores a chunk of candidate pairs (see [`score_candidates`]).
#[inline(always)]
fn score_chunk(
    a: &Filters,
    b: &Filters,
    chunk: &[(u32, u32)],
    threshold: f64,
    out: &mut Vec<Candidate>,
) {
    for &(i, j) in chunk {
        if let Some(c) = score_pair(a, b, i, j, threshold) {
            out.push(c);
        }
    }
}

/// The Dice coefficient of filter `i` of `a` and `j` of `b` when it is at least `threshold`
/// (never for two empty filters). The one scoring rule of candidate pairs: block-recipe
/// candidates ([`score_candidates`]) and Hamming-LSH candidates streamed from the bands
/// (`crate::lsh`) get bit-identical scores.
#[inline(always)]
pub(crate) fn score_pair(
    a: &Filters,
    b: &Filters,
    i: u32,
    j: u32,
    threshold: f64,
) -> Option<Candidate> {
    let (ca, cb) = (a.count(i as usize), b.count(j as usize));
    if ca + cb == 0 {
        return None;
    }
    let common = if a.words == 16 {
        let fa: &[u64; 16] = a.get(i as usize).try_into().expect("16 words");
        let fb: &[u64; 16] = b.get(j as usize).try_into().expect("16 words");
        and_count_fixed(fa, fb)
    } else {
        and_count_portable(a.get(i as usize), b.get(j as usize))
    };
    let score = 2.0 * f64::from(common) / f64::from(ca + cb);
    (score >= threshold).then_some(Candidate {
        a: i,
        b: j,
        score: score as f32,
    })
}

/// The same, compiled with the POPCNT instruction enabled.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
fn score_chunk_popcnt(
    a: &Filters,
    b: &Filters,
    chunk: &[(u32, u32)],
    threshold: f64,
    out: &mut Vec<Candidate>,
) {
    score_chunk(a, b, chunk, threshold, out);
}

/// The same, compiled for AVX-512 VPOPCNTDQ (the compiler counts a 1024-bit pair with two
/// `vpopcntq`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt,avx512f,avx512vpopcntdq")]
fn score_chunk_avx512(
    a: &Filters,
    b: &Filters,
    chunk: &[(u32, u32)],
    threshold: f64,
    out: &mut Vec<Candidate>,
) {
    score_chunk(a, b, chunk, threshold, out);
}

/// The instructions pair-by-pair scoring ([`score_pair`]: blocking and Hamming-LSH candidates)
/// is compiled for, the best the CPU has: the same code, so the same scores, in each case.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PairIsa {
    /// AVX-512F + VPOPCNTDQ (and POPCNT).
    Avx512,
    /// POPCNT.
    Popcnt,
    /// Neither: `count_ones` in plain x86-64.
    Plain,
}

#[cfg(target_arch = "x86_64")]
impl PairIsa {
    /// The best of the three on this CPU (`is_x86_feature_detected!` caches its answer); no
    /// AVX-512 under a [`KERNEL_ENV`] cap.
    pub(crate) fn detect() -> Self {
        if avx512::available()
            && std::arch::is_x86_feature_detected!("popcnt")
            && kernel_cap().is_none()
        {
            PairIsa::Avx512
        } else if std::arch::is_x86_feature_detected!("popcnt") {
            PairIsa::Popcnt
        } else {
            PairIsa::Plain
        }
    }
}

/// Greedy 1:1 matching: pairs by descending score (ties by `(a, b)`), each taken if neither
/// record is matched yet.
pub fn greedy_one_to_one(mut pairs: Vec<Candidate>) -> Vec<Candidate> {
    pairs.sort_unstable_by(|x, y| {
        y.score
            .total_cmp(&x.score)
            .then((x.a, x.b).cmp(&(y.a, y.b)))
    });
    let mut used_a = std::collections::HashSet::new();
    let mut used_b = std::collections::HashSet::new();
    pairs.retain(|p| {
        if used_a.contains(&p.a) || used_b.contains(&p.b) {
            return false;
        }
        used_a.insert(p.a);
        used_b.insert(p.b);
        true
    });
    pairs
}

/// Many-to-one matching: each record of the second set keeps its best pair (ties by `a`);
/// records of the first set may match several.
pub fn many_to_one(mut pairs: Vec<Candidate>) -> Vec<Candidate> {
    pairs.sort_unstable_by(|x, y| {
        y.score
            .total_cmp(&x.score)
            .then((x.a, x.b).cmp(&(y.a, y.b)))
    });
    let mut used_b = std::collections::HashSet::new();
    pairs.retain(|p| used_b.insert(p.b));
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(bits: &[&[usize]], words: usize) -> Filters {
        let mut f = Filters::new(words);
        for set in bits {
            let mut v = vec![0u64; words];
            for &b in *set {
                v[b / 64] |= 1 << (b % 64);
            }
            f.push(&v);
        }
        f
    }

    #[test]
    fn dice_values() {
        let f = filters(&[&[1, 2, 3, 4], &[3, 4, 5, 6], &[100], &[]], 2);
        assert_eq!(dice(f.get(0), f.get(0)), 1.0);
        assert_eq!(dice(f.get(0), f.get(1)), 0.5);
        assert_eq!(dice(f.get(0), f.get(2)), 0.0);
        assert_eq!(dice(f.get(3), f.get(3)), 0.0);
    }

    proptest::proptest! {
        #[test]
        fn pruned_all_pairs_equal_brute_force(
            a in proptest::collection::vec(proptest::collection::vec(0usize..256, 0..40), 1..30),
            b in proptest::collection::vec(proptest::collection::vec(0usize..256, 0..40), 1..30),
            t in 0.0f64..1.0,
        ) {
            let fa = filters(&a.iter().map(Vec::as_slice).collect::<Vec<_>>(), 4);
            let fb = filters(&b.iter().map(Vec::as_slice).collect::<Vec<_>>(), 4);
            let got = pairs_above(&fa, &fb, t);
            let mut want = Vec::new();
            for i in 0..fa.len() {
                for j in 0..fb.len() {
                    let d = dice(fa.get(i), fb.get(j));
                    if d >= t && fa.count(i) + fb.count(j) > 0 {
                        want.push((i as u32, j as u32));
                    }
                }
            }
            let got_ij: Vec<(u32, u32)> = got.pairs.iter().map(|c| (c.a, c.b)).collect();
            proptest::prop_assert_eq!(got_ij, want);
            proptest::prop_assert!(got.compared <= (fa.len() * fb.len()) as u64);
        }
    }

    /// Filters of `words` words from `(seed, density)` pairs: each bit set with probability
    /// `density / 256`, from a SplitMix64 stream.
    fn random_filters(specs: &[(u64, u8)], words: usize) -> Filters {
        let mut f = Filters::new(words);
        for &(seed, density) in specs {
            let mut s = seed;
            let mut next = || {
                s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = s;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^ (z >> 31)
            };
            let v: Vec<u64> = (0..words)
                .map(|_| {
                    (0..64).fold(0u64, |w, bit| {
                        w | (u64::from((next() & 0xff) < u64::from(density)) << bit)
                    })
                })
                .collect();
            f.push(&v);
        }
        f
    }

    /// Every kernel available on this CPU for the length (and `Auto`) agrees exactly with
    /// the portable one: same pairs in the same order, bit-identical scores, same number of
    /// pairs compared. Returns how many kernels other than the portable one were compared.
    fn assert_kernels_agree(a: &Filters, b: &Filters, t: f64, pruning: Pruning) -> usize {
        let portable = pairs_above_kernel(a, b, t, pruning, Kernel::Portable);
        let others = [Kernel::Auto, Kernel::Avx512, Kernel::Avx2]
            .into_iter()
            .filter(|k| k.is_available(a.words()));
        let mut n = 0;
        for kernel in others {
            let got = pairs_above_kernel(a, b, t, pruning, kernel);
            let name = kernel.name();
            assert_eq!(got.compared, portable.compared, "{name}: pairs compared");
            assert_eq!(got.pairs.len(), portable.pairs.len(), "{name}: pairs found");
            for (x, y) in got.pairs.iter().zip(&portable.pairs) {
                assert_eq!((x.a, x.b), (y.a, y.b), "{name}");
                assert_eq!(
                    x.score.to_bits(),
                    y.score.to_bits(),
                    "{name}: score of {:?}",
                    (x.a, x.b)
                );
            }
            n += 1;
        }
        n
    }

    #[test]
    fn auto_kernel_is_the_fastest_the_cpu_has() {
        // Otherwise the agreement tests below would compare the portable kernel with itself.
        #[cfg(target_arch = "x86_64")]
        if kernel_cap().is_none() {
            let avx512 = std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vpopcntdq");
            let avx2 = std::arch::is_x86_feature_detected!("avx2");
            for words in [1, 4, 5, 8, 16, 17, 32] {
                let want = if avx512 {
                    "avx512"
                } else if avx2 && matches!(words, 8 | 16 | 32) {
                    "avx2"
                } else {
                    "portable"
                };
                assert_eq!(Kernel::auto_name(words), want, "{words} words");
                assert_eq!(Kernel::Avx512.is_available(words), avx512);
                assert_eq!(
                    Kernel::Avx2.is_available(words),
                    avx2 && matches!(words, 8 | 16 | 32)
                );
            }
        }
        assert!(Kernel::Portable.is_available(3));
        assert_eq!(Kernel::Portable.resolve(3), Some(Kernel::Portable));
        assert_eq!(Kernel::Avx2.resolve(5), None);
    }

    #[test]
    #[should_panic(expected = "not available")]
    fn a_forced_kernel_that_cannot_run_is_refused() {
        // AVX2 has no kernel for 320-bit filters on any CPU.
        let f = random_filters(&[(1, 100), (2, 100)], 5);
        pairs_above_kernel(&f, &f, 0.5, Pruning::None, Kernel::Avx2);
    }

    #[test]
    fn kernels_agree_on_clk_like_filters() {
        // 1024-bit filters of several densities (sparse to the 68 % of the FEBRL CLKs) and
        // near-duplicates, more than one L1 block (64) and not a multiple of 4 targets.
        for words in [1, 5, 8, 16, 17, 32] {
            let mut specs: Vec<(u64, u8)> =
                (0..150).map(|i| (i, 40 + (i % 7) as u8 * 20)).collect();
            specs.extend([(0, 0), (1, 255), (2, 255)]);
            let a = random_filters(&specs[..137], words);
            let mut b = random_filters(&specs[3..], words);
            // Near-duplicates of rows of `a`: a few bits flipped.
            for i in 0..40 {
                let mut v = a.get(i).to_vec();
                v[i % words] ^= 0b1011u64 << (i % 50);
                b.push(&v);
            }
            // All-ones: the largest byte and lane sums.
            b.push(&vec![u64::MAX; words]);
            for t in [0.0, 0.3, 0.5, 0.75, 0.8, 0.9, 0.99, 1.0] {
                assert_kernels_agree(&a, &b, t, Pruning::PopcountBound);
                assert_kernels_agree(&a, &b, t, Pruning::None);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn kernels_agree(
            a in proptest::collection::vec((proptest::num::u64::ANY, proptest::num::u8::ANY), 1..90),
            b in proptest::collection::vec((proptest::num::u64::ANY, proptest::num::u8::ANY), 1..90),
            // Every length: the AVX2 ones (8, 16, 32 words), the AVX-512 kernel's unrolled
            // ones (the same) and its run-time word loop (the others), with target counts
            // that leave partial groups of 8 and blocks.
            words in proptest::prop_oneof![
                proptest::sample::select(vec![8usize, 16, 32]),
                1usize..=36,
            ],
            t in 0.0f64..1.0,
        ) {
            let fa = random_filters(&a, words);
            let fb = random_filters(&b, words);
            assert_kernels_agree(&fa, &fb, t, Pruning::PopcountBound);
            assert_kernels_agree(&fa, &fb, t, Pruning::None);
        }
    }

    #[test]
    fn score_candidates_equals_all_pairs_search() {
        // Every pair as a candidate: the same pairs and bit-identical scores as the all-pairs
        // search, for the 1024-bit fast path and another length.
        for words in [16, 5] {
            let specs: Vec<(u64, u8)> = (0..70).map(|i| (i, 60 + (i % 5) as u8 * 30)).collect();
            let a = random_filters(&specs[..40], words);
            let mut b = random_filters(&specs[30..], words);
            b.push(a.get(3));
            let all: Vec<(u32, u32)> = (0..a.len() as u32)
                .flat_map(|i| (0..b.len() as u32).map(move |j| (i, j)))
                .collect();
            for t in [0.0, 0.4, 0.6, 0.9] {
                let got = score_candidates(&a, &b, &all, t);
                let want = pairs_above_kernel(&a, &b, t, Pruning::None, Kernel::Portable).pairs;
                assert_eq!(got.len(), want.len());
                for (x, y) in got.iter().zip(&want) {
                    assert_eq!((x.a, x.b, x.score.to_bits()), (y.a, y.b, y.score.to_bits()));
                }
            }
        }
    }

    #[test]
    fn solvers() {
        let c = |a, b, score| Candidate { a, b, score };
        let pairs = vec![
            c(0, 0, 0.9),
            c(0, 1, 0.95),
            c(1, 1, 0.8),
            c(1, 0, 0.85),
            c(2, 1, 0.7),
        ];
        let one = greedy_one_to_one(pairs.clone());
        assert_eq!(
            one.iter().map(|p| (p.a, p.b)).collect::<Vec<_>>(),
            [(0, 1), (1, 0)]
        );
        let many = many_to_one(pairs);
        assert_eq!(
            many.iter().map(|p| (p.a, p.b)).collect::<Vec<_>>(),
            [(0, 1), (0, 0)]
        );
    }
}
