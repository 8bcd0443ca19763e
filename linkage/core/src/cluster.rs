//! Join on exact tokens and union-find clustering (the NDB "ID0" idea: records that
//! share any token are one person, and chains of shared tokens merge transitively).

use std::collections::HashMap;
use std::hash::Hasher;

use crate::token::Token;

/// Union-find over `u32` record indices with path halving and union by size
/// (Tarjan 1975). `find` is amortized near-constant.
#[derive(Clone, Debug)]
pub struct UnionFind {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl UnionFind {
    /// `n` singleton sets `0..n`.
    pub fn new(n: usize) -> Self {
        let n32 = u32::try_from(n).expect("at most 2^32 - 1 records per job");
        Self {
            parent: (0..n32).collect(),
            size: vec![1; n],
        }
    }

    /// Adds one singleton set and returns its element.
    pub fn push(&mut self) -> u32 {
        let x = u32::try_from(self.parent.len()).expect("at most 2^32 - 1 records per job");
        self.parent.push(x);
        self.size.push(1);
        x
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.parent.len()
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.parent.is_empty()
    }

    /// Representative of `x`'s set.
    pub fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let grand = self.parent[self.parent[x as usize] as usize];
            self.parent[x as usize] = grand;
            x = grand;
        }
        x
    }

    /// Merges the sets of `a` and `b`; returns whether they were apart.
    pub fn union(&mut self, a: u32, b: u32) -> bool {
        let (mut ra, mut rb) = (self.find(a), self.find(b));
        if ra == rb {
            return false;
        }
        if self.size[ra as usize] < self.size[rb as usize] {
            std::mem::swap(&mut ra, &mut rb);
        }
        self.parent[rb as usize] = ra;
        self.size[ra as usize] += self.size[rb as usize];
        true
    }

    /// Dense cluster labels `0..k` for every element, numbered in order of first appearance,
    /// and `k`.
    pub fn labels(&mut self) -> (Vec<u32>, usize) {
        let n = self.parent.len();
        let mut label_of_root = vec![u32::MAX; n];
        let mut labels = Vec::with_capacity(n);
        let mut next = 0u32;
        for x in 0..n as u32 {
            let r = self.find(x) as usize;
            if label_of_root[r] == u32::MAX {
                label_of_root[r] = next;
                next += 1;
            }
            labels.push(label_of_root[r]);
        }
        (labels, next as usize)
    }
}

/// Hasher for tokens: they are keyed-hash outputs, uniformly distributed to anyone without
/// the key, so their first 8 bytes are already a good hash (no SipHash needed).
#[derive(Default)]
pub struct TokenHasher(u64);

impl Hasher for TokenHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // A `[u8; 32]` key arrives as a length write and then its bytes; folding the first 8
        // bytes of each write keeps the result as uniform as the token itself.
        let mut b = [0u8; 8];
        let n = bytes.len().min(8);
        b[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(b);
    }
}

/// Buckets of a [`TokenJoin`]: tokens are split by their first 12 bits as they arrive.
const JOIN_BUCKETS: usize = 1 << 12;

fn join_bucket(t: &Token) -> usize {
    (usize::from(t[0]) << 4) | usize::from(t[1] >> 4)
}

/// A join on exact tokens across all records of all holders feeding a [`UnionFind`].
///
/// Direct tokens are kept as `(token, record)` in 4,096 buckets by the token's first 12 bits
/// (tokens are keyed-hash outputs, uniform to anyone without the key); when the join finishes
/// each bucket is sorted on its own (in parallel) and the records of each run of equal tokens
/// merged. Memory is 36 bytes per token (no hash table: no empty slots, no rehashing copies).
/// Guarded tokens are held back and applied after all direct merges, each only if the two
/// clusters' guard tokens do not conflict: two clusters conflict when, for some guard recipe,
/// both hold tokens of it and none in common (e.g. same-sex twins sharing a card number:
/// different given names). SPEC.md §5.1.
#[derive(Debug)]
pub struct TokenJoin {
    buckets: Vec<Vec<(Token, u32)>>,
    uf: UnionFind,
    unions: u64,
    guarded: Vec<(Token, u32)>,
    guards: Vec<(u32, u16, Token)>,
}

/// Counts of a finished join.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JoinStats {
    /// Distinct direct tokens.
    pub distinct_tokens: usize,
    /// Merges made by direct tokens (and by [`TokenJoin::link`]).
    pub direct_merges: u64,
    /// Merges made by guarded tokens.
    pub guarded_merges: u64,
    /// Guarded merges refused because the clusters' guard tokens conflict.
    pub vetoed_merges: u64,
}

impl TokenJoin {
    /// A join over `n_records` records (global indices `0..n_records`).
    pub fn new(n_records: usize) -> Self {
        Self {
            buckets: vec![Vec::new(); JOIN_BUCKETS],
            uf: UnionFind::new(n_records),
            unions: 0,
            guarded: Vec::new(),
            guards: Vec::new(),
        }
    }

    /// Reserves room for about `tokens` more direct tokens (spread evenly over the buckets,
    /// with 1/8 slack), so that a join whose size is known in advance grows no bucket.
    pub fn reserve_direct(&mut self, tokens: usize) {
        let per = tokens / JOIN_BUCKETS;
        let per = per + per / 8 + 16;
        for b in &mut self.buckets {
            b.reserve(per);
        }
    }

    /// Adds a new record with no tokens yet and returns its global index; used when the
    /// number of records is not known in advance (streaming input).
    pub fn push_record(&mut self) -> u32 {
        self.uf.push()
    }

    /// Number of records.
    pub fn records(&self) -> usize {
        self.uf.len()
    }

    /// Adds one direct token of `record`: every record carrying the same token ends in one
    /// cluster (merged when the join finishes).
    pub fn add(&mut self, record: u32, token: &Token) {
        self.buckets[join_bucket(token)].push((*token, record));
    }

    /// Links two records directly (a similarity link, e.g. CLK Dice above threshold).
    pub fn link(&mut self, a: u32, b: u32) {
        if self.uf.union(a, b) {
            self.unions += 1;
        }
    }

    /// Adds one guarded token of `record` (applied when the join finishes).
    pub fn add_guarded(&mut self, record: u32, token: &Token) {
        self.guarded.push((*token, record));
    }

    /// Adds one guard token of `record` for guard recipe `recipe`.
    pub fn add_guard(&mut self, record: u32, recipe: u16, token: &Token) {
        self.guards.push((record, recipe, *token));
    }

    /// Direct tokens added so far (with repeats).
    pub fn direct_tokens(&self) -> usize {
        self.buckets.iter().map(Vec::len).sum()
    }

    /// Sorts every bucket (in parallel, each freed when done) and merges the records of each
    /// run of equal tokens; returns the number of distinct tokens.
    fn merge_direct(&mut self) -> usize {
        use rayon::prelude::*;
        let buckets = std::mem::take(&mut self.buckets);
        let runs: Vec<(Vec<(u32, u32)>, usize)> = buckets
            .into_par_iter()
            .map(|mut b| {
                b.sort_unstable_by_key(|x| x.0);
                let mut pairs = Vec::new();
                let mut distinct = 0;
                for run in b.chunk_by(|x, y| x.0 == y.0) {
                    distinct += 1;
                    let first = run[0].1;
                    pairs.extend(run[1..].iter().map(|&(_, r)| (first, r)));
                }
                (pairs, distinct)
            })
            .collect();
        let mut distinct = 0;
        for (pairs, d) in runs {
            distinct += d;
            for (a, b) in pairs {
                if self.uf.union(a, b) {
                    self.unions += 1;
                }
            }
        }
        distinct
    }

    /// Finishes the join: dense cluster label per record, the number of clusters, and counts.
    pub fn into_clusters(mut self) -> (Vec<u32>, usize, JoinStats) {
        let distinct_tokens = self.merge_direct();
        let mut stats = JoinStats {
            distinct_tokens,
            direct_merges: self.unions,
            ..JoinStats::default()
        };
        if !self.guarded.is_empty() {
            let mut sets: HashMap<u32, Vec<(u16, Token)>> = HashMap::new();
            for (record, recipe, token) in std::mem::take(&mut self.guards) {
                sets.entry(self.uf.find(record))
                    .or_default()
                    .push((recipe, token));
            }
            let mut guarded = std::mem::take(&mut self.guarded);
            guarded.sort_unstable();
            for group in guarded.chunk_by(|a, b| a.0 == b.0) {
                let first = group[0].1;
                for &(_, other) in &group[1..] {
                    let (ra, rb) = (self.uf.find(first), self.uf.find(other));
                    if ra == rb {
                        continue;
                    }
                    let (sa, sb) = (sets.get(&ra), sets.get(&rb));
                    if let (Some(sa), Some(sb)) = (sa, sb)
                        && conflict(sa, sb)
                    {
                        stats.vetoed_merges += 1;
                        continue;
                    }
                    self.uf.union(ra, rb);
                    stats.guarded_merges += 1;
                    let root = self.uf.find(ra);
                    let mut merged = sets.remove(&ra).unwrap_or_default();
                    merged.extend(sets.remove(&rb).unwrap_or_default());
                    if !merged.is_empty() {
                        sets.insert(root, merged);
                    }
                }
            }
        }
        let (labels, k) = self.uf.labels();
        (labels, k, stats)
    }
}

/// A link between two records with its match weight (bits), from scoring (SPEC.md §9.5).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScoredLink {
    /// Global index of one record.
    pub a: u32,
    /// Global index of the other record.
    pub b: u32,
    /// Match weight in bits.
    pub weight: f32,
}

/// Counts of [`cluster_scored`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScoredClusterStats {
    /// Links offered.
    pub links: u64,
    /// Links that merged two clusters.
    pub merges: u64,
    /// Links within one cluster already.
    pub redundant: u64,
    /// Links refused: the merged cluster would hold two records of one holder.
    pub vetoed_same_holder: u64,
    /// Links refused: a record of one side conflicts with a record of the other.
    pub vetoed_conflict: u64,
}

/// Clusters records from scored links with conflict guards (SPEC.md §9.5).
///
/// Links are taken strongest first (ties by `(a, b)`, so the result does not depend on input
/// order). With `guarded`, a link is refused if the merged cluster would hold two records of
/// one holder (unless `duplicates[holder]`) or if `conflict(x, y)` for some record `x` of one
/// side and `y` of the other: the weakest link of a conflicting chain is the one broken.
/// Without `guarded`, every link merges (connected components).
///
/// Returns dense labels per record (`0..n`), the number of clusters and counts. Cost: a sort
/// of the links plus `|X|·|Y|` conflict checks per merge of clusters `X`, `Y`.
pub fn cluster_scored(
    n: usize,
    links: &mut [ScoredLink],
    holder: &dyn Fn(u32) -> u16,
    duplicates: &[bool],
    guarded: bool,
    conflict: &dyn Fn(u32, u32) -> bool,
) -> (Vec<u32>, usize, ScoredClusterStats) {
    links.sort_unstable_by(|x, y| {
        y.weight
            .total_cmp(&x.weight)
            .then(x.a.cmp(&y.a))
            .then(x.b.cmp(&y.b))
    });
    let mut uf = UnionFind::new(n);
    let mut members: Vec<Vec<u32>> = Vec::new();
    let mut slot: HashMap<u32, usize> = HashMap::new();
    let mut stats = ScoredClusterStats {
        links: links.len() as u64,
        ..ScoredClusterStats::default()
    };
    let dup = |h: u16| duplicates.get(usize::from(h)).copied().unwrap_or(false);
    for l in links.iter() {
        let (ra, rb) = (uf.find(l.a), uf.find(l.b));
        if ra == rb {
            stats.redundant += 1;
            continue;
        }
        if guarded {
            let get = |r: u32, slot: &HashMap<u32, usize>| -> Vec<u32> {
                slot.get(&r)
                    .map_or_else(|| vec![r], |&i| members[i].clone())
            };
            let (xa, xb) = (get(ra, &slot), get(rb, &slot));
            let same_holder = xa.iter().any(|&x| {
                xb.iter()
                    .any(|&y| holder(x) == holder(y) && !dup(holder(x)))
            });
            if same_holder {
                stats.vetoed_same_holder += 1;
                continue;
            }
            if xa.iter().any(|&x| {
                xb.iter()
                    .any(|&y| (x, y) != (l.a, l.b) && (y, x) != (l.a, l.b) && conflict(x, y))
            }) {
                stats.vetoed_conflict += 1;
                continue;
            }
            uf.union(ra, rb);
            let root = uf.find(ra);
            let mut merged = xa;
            merged.extend(xb);
            for r in [ra, rb] {
                if let Some(i) = slot.remove(&r) {
                    members[i].clear();
                }
            }
            members.push(merged);
            slot.insert(root, members.len() - 1);
        } else {
            uf.union(ra, rb);
        }
        stats.merges += 1;
    }
    let (labels, k) = uf.labels();
    (labels, k, stats)
}

/// Whether two clusters' guard tokens conflict: some guard recipe has tokens on both sides
/// and no token in common.
fn conflict(a: &[(u16, Token)], b: &[(u16, Token)]) -> bool {
    a.iter().any(|&(recipe, _)| {
        let in_b = b.iter().filter(|(r, _)| *r == recipe);
        let mut in_b = in_b.peekable();
        in_b.peek().is_some() && !in_b.any(|(_, t)| a.iter().any(|(r, u)| *r == recipe && u == t))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(v: &[(u32, u32, f32)]) -> Vec<ScoredLink> {
        v.iter()
            .map(|&(a, b, weight)| ScoredLink { a, b, weight })
            .collect()
    }

    #[test]
    fn scored_clusters_keep_one_record_per_holder() {
        // Holders: 0,1 → A; 2,3 → B; 4 → C. A0–B2 strong, A1–B2 weaker: A1 must stay out.
        let holder = |g: u32| [0u16, 0, 1, 1, 2][g as usize];
        let mut l = links(&[(1, 2, 5.0), (0, 2, 20.0), (2, 4, 10.0), (1, 3, 8.0)]);
        let (labels, k, st) = cluster_scored(5, &mut l, &holder, &[false; 3], true, &|_, _| false);
        assert_eq!(labels[0], labels[2]);
        assert_eq!(labels[2], labels[4]);
        assert_eq!(labels[1], labels[3]);
        assert_ne!(labels[0], labels[1]);
        assert_eq!(k, 2);
        assert_eq!(st.vetoed_same_holder, 1);
        // With duplicates declared for holders A and B, the weak link merges everything.
        let (labels, k, _) =
            cluster_scored(5, &mut l, &holder, &[true, true, false], true, &|_, _| {
                false
            });
        assert_eq!(k, 1);
        assert_eq!(labels[1], labels[0]);
    }

    #[test]
    fn conflicts_break_the_weakest_link_whatever_the_input_order() {
        // A0–B1 (12), B1–C2 (9), A0 and C2 conflict (e.g. different sex): B1–C2 is broken.
        let holder = |g: u32| g as u16;
        let conflict = |x: u32, y: u32| (x.min(y), x.max(y)) == (0, 2);
        for order in [[(0, 1, 12.0), (1, 2, 9.0)], [(1, 2, 9.0), (0, 1, 12.0)]] {
            let mut l = links(&order);
            let (labels, k, st) = cluster_scored(3, &mut l, &holder, &[false; 3], true, &conflict);
            assert_eq!(labels[0], labels[1]);
            assert_ne!(labels[1], labels[2]);
            assert_eq!((k, st.vetoed_conflict), (2, 1));
        }
        // Unguarded: plain components.
        let mut l = links(&[(0, 1, 12.0), (1, 2, 9.0)]);
        let (_, k, _) = cluster_scored(3, &mut l, &holder, &[false; 3], false, &conflict);
        assert_eq!(k, 1);
    }

    #[test]
    fn chains_merge_transitively() {
        let t = |b: u8| [b; 32];
        let mut j = TokenJoin::new(4);
        assert_eq!(j.push_record(), 4);
        j.add(0, &t(1));
        j.add(1, &t(1)); // 0-1 share token 1
        j.add(1, &t(2));
        j.add(2, &t(2)); // 1-2 share token 2 → 0,1,2 one cluster
        j.add(3, &t(3));
        j.add(4, &t(4));
        let (labels, k, stats) = j.into_clusters();
        assert_eq!(k, 3);
        assert_eq!(stats.direct_merges, 2);
        assert_eq!(labels[0], labels[2]);
        assert_ne!(labels[0], labels[3]);
        assert_ne!(labels[3], labels[4]);
    }

    #[test]
    fn guards_veto_guarded_merges_only() {
        let t = |b: u8| [b; 32];
        // Records 0 and 1: twins sharing a card token (guarded); guard tokens = given names.
        // Records 2 and 3: one person, card token shared, same given name.
        // Record 4 has no guard token: it may join record 0's cluster.
        let mut j = TokenJoin::new(5);
        for r in [0, 1] {
            j.add_guarded(r, &t(10));
        }
        j.add_guard(0, 0, &t(20));
        j.add_guard(1, 0, &t(21));
        for r in [2, 3] {
            j.add_guarded(r, &t(11));
            j.add_guard(r, 0, &t(22));
        }
        j.add_guarded(4, &t(10));
        let (labels, k, stats) = j.into_clusters();
        assert_ne!(labels[0], labels[1], "twins must stay apart");
        assert_eq!(labels[2], labels[3]);
        assert_eq!(labels[0], labels[4]);
        assert_eq!(k, 3);
        assert_eq!((stats.guarded_merges, stats.vetoed_merges), (2, 1));
    }

    #[test]
    fn direct_tokens_are_not_vetoed() {
        let t = |b: u8| [b; 32];
        let mut j = TokenJoin::new(2);
        j.add(0, &t(1));
        j.add(1, &t(1));
        j.add_guard(0, 0, &t(2));
        j.add_guard(1, 0, &t(3));
        let (labels, _, _) = j.into_clusters();
        assert_eq!(labels[0], labels[1]);
    }

    proptest::proptest! {
        #[test]
        fn union_find_matches_naive_components(edges in proptest::collection::vec((0u32..40, 0u32..40), 0..80)) {
            let mut uf = UnionFind::new(40);
            let mut naive: Vec<u32> = (0..40).collect();
            for &(a, b) in &edges {
                uf.union(a, b);
                let (la, lb) = (naive[a as usize], naive[b as usize]);
                for x in naive.iter_mut() { if *x == lb { *x = la; } }
            }
            let (labels, _) = uf.labels();
            for a in 0..40 {
                for b in 0..40 {
                    proptest::prop_assert_eq!(labels[a] == labels[b], naive[a] == naive[b]);
                }
            }
        }
    }

    proptest::proptest! {
        /// Records sharing a direct token end in one cluster and no others merge: the
        /// bucketed sort join against connected components of the "shares a token" graph.
        #[test]
        fn token_join_matches_naive_components(
            tokens in proptest::collection::vec((0u32..30, 0u8..12, 0u8..3), 0..90),
        ) {
            let mut join = TokenJoin::new(30);
            let mut naive = UnionFind::new(30);
            let mut first: HashMap<[u8; 32], u32> = Default::default();
            for &(record, value, bucket) in &tokens {
                // Tokens spread over buckets (first bytes) and colliding within them.
                let mut t = [0u8; 32];
                t[0] = bucket.wrapping_mul(97);
                t[31] = value;
                join.add(record, &t);
                match first.get(&t) {
                    Some(&o) => {
                        naive.union(o, record);
                    }
                    None => {
                        first.insert(t, record);
                    }
                }
            }
            let (labels, k, stats) = join.into_clusters();
            let (want, wk) = naive.labels();
            proptest::prop_assert_eq!(labels, want);
            proptest::prop_assert_eq!(k, wk);
            proptest::prop_assert_eq!(stats.distinct_tokens, first.len());
        }
    }
}
