//! Comparison vectors on encoded data (SPEC.md §9.1): per record, the tokens of the recipes
//! the comparisons name and one small Bloom filter per comparison with Dice bands; per pair,
//! one agreement level per comparison packed into a mixed-radix `u32` **pattern code**.
//!
//! Nothing here sees an identifier: tokens are keyed hashes (compared for equality, counted
//! for term frequencies), filters are CLKs (SPEC.md §7.1) compared by Dice.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use rayon::prelude::*;

use crate::clk::native::{NativeEncoder, NativeFeature, PositionCache};
use crate::cluster::TokenHasher;
use crate::dice::Filters;
use crate::schema::Schema;
use crate::schema::scoring::{ComparisonSpec, ScoringSpec};
use crate::secret::ProjectSecret;
use crate::token::Token;
use crate::tokenizer::RecordTokens;

/// Shape of the comparison vectors: level count and mixed-radix stride of each comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dims {
    /// Levels per comparison (the last two are `disagree` and `missing`).
    pub levels: Vec<u32>,
    /// Multiplier of each comparison's level in the pattern code.
    pub strides: Vec<u32>,
    /// Number of possible pattern codes (product of `levels`).
    pub patterns: u64,
}

impl Dims {
    /// Dims of the given comparisons.
    ///
    /// # Panics
    /// If the product of level counts exceeds [`crate::schema::scoring::MAX_PATTERNS`] (the schema
    /// parser refuses such schemas).
    pub fn new(comparisons: &[ComparisonSpec]) -> Self {
        Self::from_levels(comparisons.iter().map(|c| c.levels() as u32).collect())
    }

    /// Dims from level counts (each at least 2: `disagree` and `missing`).
    ///
    /// # Panics
    /// If the product exceeds [`crate::schema::scoring::MAX_PATTERNS`] or a count is below 2.
    pub fn from_levels(levels: Vec<u32>) -> Self {
        assert!(
            levels.iter().all(|&l| l >= 2),
            "at least disagree and missing"
        );
        let mut strides = Vec::with_capacity(levels.len());
        let mut p: u64 = 1;
        for &l in &levels {
            strides.push(u32::try_from(p).expect("fewer than 2^32 patterns"));
            p *= u64::from(l);
            assert!(
                p <= crate::schema::scoring::MAX_PATTERNS,
                "too many patterns"
            );
        }
        Self {
            levels,
            strides,
            patterns: p,
        }
    }

    /// Level of comparison `c` in pattern `code`.
    #[inline]
    pub fn level(&self, code: u32, c: usize) -> u32 {
        code / self.strides[c] % self.levels[c]
    }

    /// Whether comparison `c` is `missing` in `code`.
    #[inline]
    pub fn is_missing(&self, code: u32, c: usize) -> bool {
        self.level(code, c) == self.levels[c] - 1
    }
}

/// One slot per (comparison, exact level): the tokens of that recipe per record (CSR).
/// Per-comparison filters (when the comparison has Dice bands).
#[derive(Debug)]
struct DiceData {
    bands: Vec<f64>,
    filters: Filters,
    masks: Vec<u8>,
}

/// One Dice comparison's keyed encoder.
#[derive(Debug)]
struct DiceEncoder {
    encoder: NativeEncoder,
    /// Positions of short tokens, hashed once (same bits as without; SPEC.md §7.1).
    cache: PositionCache,
    fields: Vec<usize>,
}

/// Why a [`ComparisonEncoder`] cannot be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ComparisonKeyError {
    /// No key was given for a field a Dice comparison encodes.
    #[error("no CLK key for field {0:?}, which a Dice comparison of the schema encodes")]
    MissingFieldKey(String),
}

/// The holder's side of the per-comparison CLKs (SPEC.md §9.1, §5.5 version 2): one keyed
/// encoder per `[scoring.comparisons.dice]`, in comparison order. `renketsu tokenize` writes
/// what it makes into version-2 token files; [`FeaturesBuilder::push`] uses the same code, so
/// that embedded runs and token files carry the same bits for the same keys.
///
/// Keys: `K_field` per (project, field), as CLKs (SPEC.md §7.1): derived from the project
/// secret ([`Self::new`], embedded mode) or issued by the key custodian
/// ([`Self::with_field_keys`], custodian mode). The linkage unit never makes one. Not `Sync`
/// (position caches).
pub struct ComparisonEncoder {
    /// Per comparison: its encoder, if it has Dice bands.
    encoders: Vec<Option<DiceEncoder>>,
    /// The last filter made (a record's CLK).
    buf: Vec<u64>,
}

impl std::fmt::Debug for ComparisonEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Encoders redact their keys; the last filter is not shown.
        f.debug_struct("ComparisonEncoder")
            .field("encoders", &self.encoders)
            .finish_non_exhaustive()
    }
}

/// One record's per-comparison filters: `(index among the Dice comparisons, field mask,
/// filter words)`, only for comparisons with at least one field present.
pub type EncodedFilters = Vec<(usize, u32, Vec<u64>)>;

impl ComparisonEncoder {
    /// Encoders with keys derived from the project secret (embedded mode). Encodes nothing
    /// for a schema without Dice comparisons.
    pub fn new(schema: &Schema, secret: &ProjectSecret, project: &str) -> Self {
        Self::make(schema, |bits, features| {
            Ok(NativeEncoder::new(secret, project, bits, features))
        })
        .expect("derived keys exist for every field")
    }

    /// Encoders with the custodian's field keys (custodian mode): `key(field)` is the 32-byte
    /// `K_field` of a field name listed by [`Self::key_fields`].
    ///
    /// # Errors
    /// [`ComparisonKeyError::MissingFieldKey`] when `key` has none for a field.
    pub fn with_field_keys(
        schema: &Schema,
        key: &dyn Fn(&str) -> Option<zeroize::Zeroizing<[u8; 32]>>,
    ) -> Result<Self, ComparisonKeyError> {
        Self::make(schema, |bits, features| {
            let keyed = features
                .into_iter()
                .map(|f| {
                    let k = key(&f.field)
                        .ok_or_else(|| ComparisonKeyError::MissingFieldKey(f.field.clone()))?;
                    Ok((f, k))
                })
                .collect::<Result<Vec<_>, ComparisonKeyError>>()?;
            Ok(NativeEncoder::with_field_keys(bits, keyed))
        })
    }

    /// The distinct field names whose CLK keys the Dice comparisons need, in first-use order.
    pub fn key_fields(schema: &Schema) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for c in schema.scoring.iter().flat_map(|s| &s.comparisons) {
            // The CLK key of a feature is that of its `key` field (its own by default).
            for &k in c.dice.iter().flat_map(|d| &d.keys) {
                let name = &schema.fields[k].name;
                if !out.contains(name) {
                    out.push(name.clone());
                }
            }
        }
        out
    }

    fn make(
        schema: &Schema,
        mut encoder: impl FnMut(u32, Vec<NativeFeature>) -> Result<NativeEncoder, ComparisonKeyError>,
    ) -> Result<Self, ComparisonKeyError> {
        let mut encoders = Vec::new();
        for c in schema.scoring.iter().flat_map(|s| &s.comparisons) {
            encoders.push(match &c.dice {
                None => None,
                Some(d) => {
                    // Keyed by the `key` field: a family name encoded under the given
                    // name's key sets the bits the same name sets as a given name.
                    let features = d
                        .features
                        .iter()
                        .zip(&d.keys)
                        .map(|(f, &key)| NativeFeature {
                            field: schema.fields[key].name.clone(),
                            q: f.q,
                            positional: f.positional,
                            k: f.k,
                        })
                        .collect();
                    let encoder = encoder(d.bits, features)?;
                    Some(DiceEncoder {
                        cache: encoder.position_cache(),
                        encoder,
                        fields: d.features.iter().map(|f| f.field).collect(),
                    })
                }
            });
        }
        Ok(Self {
            encoders,
            buf: Vec::new(),
        })
    }

    /// Whether the schema has any Dice comparison.
    pub fn is_empty(&self) -> bool {
        self.encoders.iter().all(Option::is_none)
    }

    /// Calls `each(index among the Dice comparisons, field mask, filter)` for every Dice
    /// comparison of an accepted record, in order (mask 0 and an empty filter when none of
    /// its fields has a value).
    pub fn encode_each(&mut self, rt: &RecordTokens, mut each: impl FnMut(usize, u32, &[u64])) {
        for (k, d) in self.encoders.iter_mut().flatten().enumerate() {
            let mut mask = 0u32;
            let values: Vec<Option<&str>> = d
                .fields
                .iter()
                .enumerate()
                .map(|(i, &fi)| {
                    let ok = matches!(rt.status.get(fi), Some(Some(Ok(()))));
                    if ok {
                        mask |= 1 << i;
                    }
                    ok.then(|| rt.values[fi].as_str())
                })
                .collect();
            d.encoder
                .encode_cached(&mut d.cache, &values, &mut self.buf);
            each(k, mask, &self.buf);
        }
    }

    /// A record's filters, as a version-2 token file carries them (comparisons with no field
    /// present left out).
    pub fn encode(&mut self, rt: &RecordTokens) -> EncodedFilters {
        let mut out = Vec::new();
        self.encode_each(rt, |k, mask, w| {
            if mask != 0 {
                out.push((k, mask, w.to_vec()));
            }
        });
        out
    }
}

impl DiceData {
    /// Dice coefficient of records `a` and `b`'s filters (one filter per record over every
    /// field of the comparison it holds: SPEC.md §9.1, Schnell et al. 2009).
    #[inline]
    fn dice(&self, a: usize, b: usize) -> f64 {
        self.dice_with(a, self, b)
    }

    /// Dice coefficient of record `a`'s filter of this comparison and record `b`'s filter of
    /// comparison `other` (the same length and keys: `reversed_of`).
    #[inline]
    fn dice_with(&self, a: usize, other: &DiceData, b: usize) -> f64 {
        let (ca, cb) = (self.filters.count(a), other.filters.count(b));
        let both: u32 = self
            .filters
            .get(a)
            .iter()
            .zip(other.filters.get(b))
            .map(|(x, y)| (x & y).count_ones())
            .sum();
        2.0 * f64::from(both) / f64::from((ca + cb).max(1))
    }
}

/// Term frequencies of one exact level's recipe, counted within each holder (the count of
/// each token is kept next to it in `Features::rec_tf`).
#[derive(Clone, Debug, Default)]
struct TfData {
    /// Records per holder with at least one token of the recipe.
    with_token: Vec<u32>,
}

/// The comparison features of every record of every holder (global record indices, holder
/// by holder), built by [`FeaturesBuilder`].
#[derive(Debug)]
pub struct Features {
    dims: Dims,
    /// Slot index of `(comparison, exact level)`: `slot_base[c] + l`.
    slot_base: Vec<usize>,
    exact_len: Vec<usize>,
    /// Number of slots (exact levels over all comparisons).
    n_slots: usize,
    /// Record-major token ids, so that one record's slots share a cache line or two: for
    /// record `r`, `rec_data[rec_offsets[r]..rec_offsets[r + 1]]` holds `n_slots` cumulative
    /// list ends, then the sorted token ids of slot 0, slot 1, ….
    rec_offsets: Vec<u64>,
    rec_data: Vec<u32>,
    /// Parallel to `rec_data`: at the ids of a term-frequency slot, the number of records of
    /// the record's holder carrying that token in that slot (filled by `finish`).
    rec_tf: Vec<u32>,
    dice: Vec<Option<DiceData>>,
    /// Per slot, when its comparison is term-frequency adjusted.
    tf: Vec<Option<TfData>>,
    /// Per comparison: evaluated only when comparison `.0` is at a level in bit set `.1`.
    when: Vec<Option<(usize, u32)>>,
    /// Per comparison: a `veto` comparison with several Dice features, whose disagreement
    /// counts only when the pair is compared on at least two of them.
    veto_forms: Vec<bool>,
    /// Per comparison: `reversed_of`, the comparison whose filters this one's are compared
    /// with, crosswise (SPEC.md §9.1).
    reversed: Vec<Option<usize>>,
    /// Per `reversed_of` comparison, per written form: the term-frequency slots of its own
    /// part (`part_tokens`, the family names) and of its partner's (the given names).
    part_slots: Vec<Vec<(usize, usize)>>,
    tf_comparison: Vec<bool>,
    holder: Vec<u16>,
    holders: usize,
    distinct_tokens: usize,
}

/// Streams records into [`Features`].
#[derive(Debug)]
pub struct FeaturesBuilder {
    f: Features,
    /// Embedded mode: the encoders of the per-comparison filters. `None` when records
    /// arrive encoded ([`Self::encoded`], token files).
    encoder: Option<ComparisonEncoder>,
    /// Comparison index of each Dice comparison, in order.
    dice_comparisons: Vec<usize>,
    /// Slots fed by recipe `r`.
    recipe_slots: Vec<Vec<usize>>,
    intern: HashMap<Token, u32, BuildHasherDefault<TokenHasher>>,
    scratch: Vec<Vec<u32>>,
}

impl FeaturesBuilder {
    /// A builder for `schema`'s `[scoring]` comparisons; Dice filters are keyed like CLKs
    /// (SPEC.md §7.1) under `secret` and `project`.
    ///
    /// # Panics
    /// If the schema has no `[scoring]` section.
    pub fn new(schema: &Schema, secret: &ProjectSecret, project: &str) -> Self {
        let mut b = Self::encoded(schema);
        b.encoder = Some(ComparisonEncoder::new(schema, secret, project));
        b
    }

    /// A builder for records that arrive encoded (token files, SPEC.md §5.5 version 2): no
    /// key; [`Self::push_encoded`] takes each record's tokens and per-comparison filters.
    ///
    /// # Panics
    /// If the schema has no `[scoring]` section.
    pub fn encoded(schema: &Schema) -> Self {
        let spec: &ScoringSpec = schema.scoring.as_ref().expect("a [scoring] section");
        let dims = Dims::new(&spec.comparisons);
        let mut slot_base = Vec::new();
        let mut exact_len = Vec::new();
        let mut recipe_slots = vec![Vec::new(); schema.recipes.len()];
        let mut n = 0;
        for c in &spec.comparisons {
            slot_base.push(n);
            exact_len.push(c.exact.len());
            for (&r, also) in c.exact.iter().zip(&c.also) {
                recipe_slots[r].push(n);
                for &a in also {
                    recipe_slots[a].push(n);
                }
                n += 1;
            }
        }
        let dice = spec
            .comparisons
            .iter()
            .map(|c| {
                c.dice.as_ref().map(|d| DiceData {
                    bands: d.bands.clone(),
                    filters: Filters::new(d.bits as usize / 64),
                    masks: Vec::new(),
                })
            })
            .collect();
        let dice_comparisons = spec
            .comparisons
            .iter()
            .enumerate()
            .filter(|(_, c)| c.dice.is_some())
            .map(|(i, _)| i)
            .collect();
        let tf: Vec<Option<TfData>> = spec
            .comparisons
            .iter()
            .flat_map(|c| c.exact.iter().map(|_| c.tf.then(TfData::default)))
            .collect();
        let when = spec.comparisons.iter().map(|c| c.when).collect();
        let veto_forms = spec
            .comparisons
            .iter()
            .map(ComparisonSpec::vetoes_on_two_forms)
            .collect();
        let tf_comparison = spec
            .comparisons
            .iter()
            .map(|c| c.tf && !c.exact.is_empty())
            .collect();
        let reversed = spec.comparisons.iter().map(|c| c.reversed_of).collect();
        let part_slots = spec
            .comparisons
            .iter()
            .map(|c| {
                let Some(p) = c.reversed_of else {
                    return Vec::new();
                };
                c.part_tokens
                    .iter()
                    .enumerate()
                    .map(|(l, &k)| {
                        let own = recipe_slots[k]
                            .iter()
                            .copied()
                            .find(|&s: &usize| tf[s].is_some())
                            .expect("part_tokens are counted (the schema checks)");
                        (own, slot_base[p] + l)
                    })
                    .collect()
            })
            .collect();
        Self {
            f: Features {
                dims,
                slot_base,
                exact_len,
                n_slots: n,
                rec_offsets: vec![0],
                rec_data: Vec::new(),
                rec_tf: Vec::new(),
                dice,
                tf,
                when,
                veto_forms,
                reversed,
                part_slots,
                tf_comparison,
                holder: Vec::new(),
                holders: 0,
                distinct_tokens: 0,
            },
            encoder: None,
            dice_comparisons,
            recipe_slots,
            intern: HashMap::default(),
            scratch: vec![Vec::new(); n],
        }
    }

    /// Adds the next record (global index = records pushed so far), of holder `holder`
    /// (holders numbered from 0, records pushed holder by holder), with its tokens and field
    /// values as made by [`crate::Tokenizer::tokenize`]. Returns its global index.
    ///
    /// # Panics
    /// If the builder was made by [`Self::encoded`] (it has no key to encode filters with).
    pub fn push(&mut self, holder: u16, rt: &RecordTokens) -> u32 {
        let g = self.push_tokens(holder, rt.tokens.iter().map(|(r, t)| (*r, t)));
        let mut enc = self
            .encoder
            .take()
            .expect("push needs a keyed builder (FeaturesBuilder::new)");
        let f = &mut self.f;
        let dice = &self.dice_comparisons;
        enc.encode_each(rt, |k, mask, words| {
            let d = f.dice[dice[k]].as_mut().expect("a Dice comparison");
            d.filters.push(words);
            d.masks.push(mask as u8);
        });
        self.encoder = Some(enc);
        g
    }

    /// Adds the next record as a token file carries it (SPEC.md §5.5): `(schema recipe index,
    /// token)` pairs, and `(index among the schema's Dice comparisons, field mask, filter
    /// words)` for the comparisons with a field present (any order; the others are missing).
    /// Returns its global index.
    ///
    /// # Errors
    /// A message when a filter has another length than its comparison's bits, a mask has
    /// bits beyond the comparison's fields, or an index is out of range.
    pub fn push_encoded<'t>(
        &mut self,
        holder: u16,
        tokens: impl Iterator<Item = (usize, &'t Token)>,
        dice: impl Iterator<Item = (usize, u32, &'t [u64])>,
    ) -> Result<u32, String> {
        let g = self.push_tokens(holder, tokens);
        let n = self.f.holder.len();
        for (k, mask, words) in dice {
            let d = self
                .dice_comparisons
                .get(k)
                .and_then(|&c| self.f.dice[c].as_mut())
                .ok_or_else(|| format!("dice comparison {k} out of range"))?;
            if words.len() != d.filters.words() || mask > u32::from(u8::MAX) || mask == 0 {
                return Err(format!(
                    "dice comparison {k}: a filter of {} words, mask {mask}",
                    words.len()
                ));
            }
            if d.masks.len() + 1 != n {
                return Err(format!("dice comparison {k} given twice"));
            }
            d.filters.push(words);
            d.masks.push(mask as u8);
        }
        for d in self.f.dice.iter_mut().flatten() {
            if d.masks.len() + 1 == n {
                let zero = vec![0u64; d.filters.words()];
                d.filters.push(&zero);
                d.masks.push(0);
            }
        }
        Ok(g)
    }

    /// Adds a record's tokens (and its holder); filters are pushed by the caller.
    fn push_tokens<'t>(
        &mut self,
        holder: u16,
        tokens: impl Iterator<Item = (usize, &'t Token)>,
    ) -> u32 {
        let f = &mut self.f;
        let g = u32::try_from(f.holder.len()).expect("fewer than 2^32 records");
        f.holder.push(holder);
        f.holders = f.holders.max(usize::from(holder) + 1);
        for s in &mut self.scratch {
            s.clear();
        }
        for (r, t) in tokens {
            if self.recipe_slots[r].is_empty() {
                continue;
            }
            let next = self.intern.len() as u32;
            let id = *self.intern.entry(*t).or_insert(next);
            for &s in &self.recipe_slots[r] {
                self.scratch[s].push(id);
            }
        }
        let mut end = 0u32;
        for ids in &mut self.scratch {
            ids.sort_unstable();
            ids.dedup();
            end += ids.len() as u32;
            f.rec_data.push(end);
        }
        for ids in &self.scratch {
            f.rec_data.extend_from_slice(ids);
        }
        f.rec_offsets.push(f.rec_data.len() as u64);
        for (slot, tf) in f.tf.iter_mut().enumerate() {
            if let Some(tf) = tf {
                let ids = &self.scratch[slot];
                if tf.with_token.len() <= usize::from(holder) {
                    tf.with_token.resize(usize::from(holder) + 1, 0);
                }
                if !ids.is_empty() {
                    tf.with_token[usize::from(holder)] += 1;
                }
            }
        }
        g
    }

    /// Number of records pushed.
    pub fn records(&self) -> usize {
        self.f.holder.len()
    }

    /// Finishes the store: counts every term-frequency token within its holder, by sorting
    /// `(slot, holder, token)` keys (no hashing per pair later).
    pub fn finish(mut self) -> Features {
        let f = &mut self.f;
        f.distinct_tokens = self.intern.len();
        assert!(f.n_slots < 1 << 16, "fewer than 65,536 slots");
        let mut keys: Vec<(u64, usize)> = Vec::new();
        for r in 0..f.holder.len() {
            let h = u64::from(f.holder[r]);
            for (s, tf) in f.tf.iter().enumerate() {
                if tf.is_some() {
                    let (ids, at) = f.slot(r as u32, s);
                    for (i, &id) in ids.iter().enumerate() {
                        keys.push(((s as u64) << 48 | h << 32 | u64::from(id), at + i));
                    }
                }
            }
        }
        keys.par_sort_unstable();
        f.rec_tf = vec![0; f.rec_data.len()];
        for run in keys.chunk_by(|x, y| x.0 == y.0) {
            for &(_, at) in run {
                f.rec_tf[at] = run.len() as u32;
            }
        }
        self.f
    }
}

/// The comparison vector of one pair: its pattern code and the term-frequency part of its
/// match weight (bits; SPEC.md §9.3).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Compared {
    /// Mixed-radix pattern code ([`Dims`]).
    pub code: u32,
    /// `Σ −½·log2(p_A(t)·p_B(t))` over term-frequency comparisons at an exact level, for the
    /// agreeing token `t` with in-holder frequencies `p_A`, `p_B`.
    pub tf_bits: f32,
}

/// Positions `(i, j)` of the first common element of two sorted lists.
#[inline]
fn intersect(a: &[u32], b: &[u32]) -> Option<(usize, usize)> {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => return Some((i, j)),
        }
    }
    None
}

impl Features {
    /// Token ids of record `r` in slot `s`, and the position of the first in `rec_data`.
    #[inline]
    fn slot(&self, r: u32, s: usize) -> (&[u32], usize) {
        let o = self.rec_offsets[r as usize] as usize;
        let d = &self.rec_data;
        let start = if s == 0 { 0 } else { d[o + s - 1] as usize };
        let end = d[o + s] as usize;
        let head = o + self.n_slots;
        (&d[head + start..head + end], head + start)
    }

    /// Shape of the comparison vectors.
    pub fn dims(&self) -> &Dims {
        &self.dims
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.holder.len()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.holder.is_empty()
    }

    /// Holder of record `g`.
    pub fn holder(&self, g: u32) -> u16 {
        self.holder[g as usize]
    }

    /// Number of holders.
    pub fn holders(&self) -> usize {
        self.holders
    }

    /// Distinct tokens held for comparisons.
    pub fn distinct_tokens(&self) -> usize {
        self.distinct_tokens
    }

    /// Level of comparison `c` for records `a` and `b` (ignoring `when`), and for an exact
    /// level the agreeing slot and the positions of the common token in `rec_data` (for term
    /// frequencies).
    #[inline]
    fn level(&self, c: usize, a: u32, b: u32) -> (u32, Option<(usize, usize, usize)>) {
        let levels = self.dims.levels[c];
        if let Some(p) = self.reversed[c] {
            return (self.reversed_level(c, p, a as usize, b as usize), None);
        }
        let mut comparable = false;
        let base = self.slot_base[c];
        for l in 0..self.exact_len[c] {
            let ((x, xa), (y, yb)) = (self.slot(a, base + l), self.slot(b, base + l));
            if x.is_empty() || y.is_empty() {
                continue;
            }
            comparable = true;
            if let Some((i, j)) = intersect(x, y) {
                return (l as u32, Some((base + l, xa + i, yb + j)));
            }
        }
        if let Some(d) = &self.dice[c] {
            let (ma, mb) = (d.masks[a as usize], d.masks[b as usize]);
            if ma & mb != 0 {
                let score = d.dice(a as usize, b as usize);
                let e = self.exact_len[c] as u32;
                for (i, &band) in d.bands.iter().enumerate() {
                    if score >= band {
                        return (e + i as u32, None);
                    }
                }
                // A veto is absolute (no weight outvotes it), so it needs the given name
                // to disagree in two written forms (kanji and kana): one typo in a two- or
                // three-kana name leaves no common bigram, and a record whose kanji given
                // name is empty would otherwise be vetoed on its kana alone. Disagreeing in
                // the one form both hold is a level of its own, weighed, not vetoed
                // (SPEC.md §9.5).
                if self.veto_forms[c] && (ma & mb).count_ones() < 2 {
                    return (levels - 3, None);
                }
                return (levels - 2, None);
            }
        }
        if comparable {
            (levels - 2, None)
        } else {
            (levels - 1, None)
        }
    }

    /// Share of record `r`'s holder's records (with a token in slot `s`, a term-frequency
    /// slot) that hold `r`'s token of that slot; `None` when `r` has none.
    fn frequency(&self, r: u32, s: usize) -> Option<f64> {
        let (ids, at) = self.slot(r, s);
        if ids.is_empty() {
            return None;
        }
        let n = self.tf[s]
            .as_ref()?
            .with_token
            .get(usize::from(self.holder[r as usize]))
            .copied()
            .unwrap_or(0)
            .max(1);
        Some(f64::from(self.rec_tf[at].max(1)) / f64::from(n))
    }

    /// Level of a `reversed_of` comparison `c` (its partner `p`) for records `a` and `b`:
    /// the name parts compared crosswise (SPEC.md §9.1). `c`'s filter of a record encodes
    /// its other name part (the family name) under `p`'s keys, so `dice(c_a, p_b)` compares
    /// `a`'s family name with `b`'s given name and `dice(p_a, c_b)` the reverse. Where one
    /// crossed pair agrees (Dice at least the first band), the names were written in the
    /// other order on one side, and the level is that of the other crossed pair, by the
    /// bands and then `disagree` (in one written form, or in two: SPEC.md §9.5). Where
    /// neither agrees, or the other pair has nothing to compare, `missing`.
    fn reversed_level(&self, c: usize, p: usize, a: usize, b: usize) -> u32 {
        let levels = self.dims.levels[c];
        let missing = levels - 1;
        let (Some(rev), Some(own)) = (&self.dice[c], &self.dice[p]) else {
            return missing;
        };
        // `(shared forms, Dice)` of the two crossed pairs, when they share a form.
        let crossed = |x: &DiceData, y: &DiceData| {
            let m = x.masks[a] & y.masks[b];
            (m != 0).then(|| (m, x.dice_with(a, y, b)))
        };
        let (fam_a, fam_b) = (crossed(rev, own), crossed(own, rev));
        let top = rev.bands[0];
        let agrees = |x: Option<(u8, f64)>| x.is_some_and(|(_, d)| d >= top);
        // Which side wrote its names in the other order is not known: a part shared
        // crosswise is the family name (the other side swapped; the other crossed pair are
        // the given names, compared) or the given name (this side swapped; the other pair are
        // family names, which a marriage changes: no evidence here, as `given_name` is not
        // compared at these name levels). The shared part is read as the one it is more
        // frequent as, in its holder's own column: a family name in the family column of
        // `f` against the given name in the given column of `g` (term frequencies, §9.3).
        let family_shared = |f: usize, g: usize| {
            self.part_slots[c].iter().find_map(|&(fs, gs)| {
                let pf = self.frequency(f as u32, fs)?;
                let pg = self.frequency(g as u32, gs)?;
                Some(pf > pg)
            }) == Some(true)
        };
        let other = match (agrees(fam_a), agrees(fam_b)) {
            (false, false) => return missing,
            (true, false) if family_shared(a, b) => fam_b,
            (false, true) if family_shared(b, a) => fam_a,
            (true, false) | (false, true) => return missing,
            // Both agree (two typos, or a name that is its own reverse): the weaker is the
            // other pair.
            (true, true) => {
                let (x, y) = (fam_a.expect("agrees"), fam_b.expect("agrees"));
                Some(if x.1 <= y.1 { x } else { y })
            }
        };
        let Some((shared, score)) = other else {
            return missing;
        };
        if let Some(i) = rev.bands.iter().position(|&band| score >= band) {
            return self.exact_len[c] as u32 + i as u32;
        }
        if self.veto_forms[c] && shared.count_ones() < 2 {
            levels - 3
        } else {
            levels - 2
        }
    }

    /// The comparison vector of records `a` and `b` (global indices, any holders).
    pub fn compare(&self, a: u32, b: u32) -> Compared {
        let mut code = 0u32;
        let mut tf_bits = 0.0f32;
        let mut levels = [0u32; 32];
        for c in 0..self.dims.levels.len() {
            if let Some((k, set)) = self.when[c]
                && set & (1 << levels[k]) == 0
            {
                levels[c] = self.dims.levels[c] - 1;
                code += levels[c] * self.dims.strides[c];
                continue;
            }
            let (l, t) = self.level(c, a, b);
            levels[c] = l;
            code += l * self.dims.strides[c];
            if let Some((slot, at_a, at_b)) = t
                && let Some(tf) = &self.tf[slot]
            {
                let p = |g: u32, at: usize| {
                    let h = self.holder[g as usize];
                    let n = tf
                        .with_token
                        .get(usize::from(h))
                        .copied()
                        .unwrap_or(0)
                        .max(1);
                    f64::from(self.rec_tf[at].max(1)) / f64::from(n)
                };
                tf_bits += (-0.5 * (p(a, at_a) * p(b, at_b)).log2()) as f32;
            }
        }
        Compared { code, tf_bits }
    }

    /// Comparison vectors of many pairs, spread over rayon's threads. The records of the
    /// pairs a few places ahead are brought into the cache while a pair is compared: random
    /// pairs (the u sample, and the `b` side of candidates) otherwise wait on main memory for
    /// each record's slot offsets, token ids and filters in turn.
    pub fn compare_all(&self, pairs: &[(u32, u32)]) -> Vec<Compared> {
        /// Pairs between the prefetch of a record's data and its use; its offsets are
        /// fetched twice as far ahead, since the data's address depends on them.
        const AHEAD: usize = 8;
        let mut out = vec![
            Compared {
                code: 0,
                tf_bits: 0.0
            };
            pairs.len()
        ];
        out.par_chunks_mut(4096)
            .zip(pairs.par_chunks(4096))
            .for_each(|(out, pairs)| {
                for (i, (o, &(a, b))) in out.iter_mut().zip(pairs).enumerate() {
                    if let Some(&(x, y)) = pairs.get(i + 2 * AHEAD) {
                        self.prefetch_offsets(x, y);
                    }
                    if let Some(&(x, y)) = pairs.get(i + AHEAD) {
                        self.prefetch_records(x, y);
                    }
                    *o = self.compare(a, b);
                }
            });
        out
    }

    /// Hints the CPU to load the slot offsets of records `a` and `b` (x86-64; a no-op
    /// elsewhere). Never changes a result.
    #[inline]
    fn prefetch_offsets(&self, a: u32, b: u32) {
        for r in [a, b] {
            if let Some(o) = self.rec_offsets.get(r as usize) {
                prefetch(std::ptr::from_ref(o).cast());
            }
        }
    }

    /// Hints the CPU to load what [`Self::compare`] reads of records `a` and `b`: the head of
    /// their token ids (and term frequencies) and their per-comparison filters.
    #[inline]
    fn prefetch_records(&self, a: u32, b: u32) {
        for r in [a, b] {
            let r = r as usize;
            let Some(&o) = self.rec_offsets.get(r) else {
                continue;
            };
            let o = o as usize;
            if let Some(x) = self.rec_data.get(o) {
                prefetch(std::ptr::from_ref(x).cast());
            }
            if let Some(x) = self.rec_tf.get(o + self.n_slots) {
                prefetch(std::ptr::from_ref(x).cast());
            }
            for d in self.dice.iter().flatten() {
                if r < d.filters.len() {
                    prefetch(d.filters.get(r).as_ptr().cast());
                }
            }
        }
    }

    /// Chance agreement of comparison `c` from pairs of records **within** each holder
    /// (SPEC.md §9.3, `rare_agreement`): per exact level `l`, the share of within-holder record
    /// pairs (both records holding tokens of the comparison) that share a token at level `l`
    /// and at no stronger level. Within one holder the records are other persons (holders in
    /// `skip`, declared to hold duplicates, are left out), so these are non-matches, and a
    /// holder of `n` records gives `n(n − 1)/2` pairs: agreement rates near `10⁻⁹`, which a
    /// sample of `10⁶` random pairs cannot resolve (its half observation puts `u` near
    /// `2.5·10⁻⁷`, so a digest that agrees looked ten thousand times likelier by chance than
    /// it is). `None` when fewer than `10⁷` such pairs exist. Shape: `exact_levels(c)` rates.
    pub fn within_holder_agreement(&self, c: usize, skip: &[bool]) -> Option<Vec<f64>> {
        let (base, e) = (self.slot_base[c], self.exact_len[c]);
        if e == 0 {
            return None;
        }
        let mut with = vec![0u64; self.holders];
        // (holder, level, token) per record and level; a record's tokens at a stronger level
        // are kept with it, to leave out pairs that already agree there.
        let mut keys: Vec<(u16, u16, u32, u32)> = Vec::new();
        for r in 0..self.holder.len() {
            let h = self.holder[r];
            if skip.get(usize::from(h)).copied().unwrap_or(false) {
                continue;
            }
            let mut any = false;
            for l in 0..e {
                let (ids, _) = self.slot(r as u32, base + l);
                any |= !ids.is_empty();
                for &id in ids {
                    keys.push((h, l as u16, id, r as u32));
                }
            }
            with[usize::from(h)] += u64::from(any);
        }
        let pairs: f64 = with
            .iter()
            .map(|&n| (n as f64) * (n.saturating_sub(1)) as f64 / 2.0)
            .sum();
        if pairs < 1e7 {
            return None;
        }
        keys.par_sort_unstable();
        keys.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1 && a.2 == b.2 && a.3 == b.3);
        let mut agree: Vec<std::collections::HashSet<(u32, u32)>> =
            vec![std::collections::HashSet::new(); e];
        // A token held by very many records is no rare identifier: its pairs are counted,
        // not listed (nor checked against stronger levels).
        let mut bulk = vec![0.0f64; e];
        for run in keys.chunk_by(|x, y| (x.0, x.1, x.2) == (y.0, y.1, y.2)) {
            let l = usize::from(run[0].1);
            if run.len() > 64 {
                let n = run.len() as f64;
                bulk[l] += n * (n - 1.0) / 2.0;
                continue;
            }
            for (i, x) in run.iter().enumerate() {
                for y in &run[i + 1..] {
                    agree[l].insert((x.3.min(y.3), x.3.max(y.3)));
                }
            }
        }
        let mut out = Vec::with_capacity(e);
        let mut stronger: std::collections::HashSet<(u32, u32)> = std::collections::HashSet::new();
        for (set, bulk) in agree.into_iter().zip(bulk) {
            let n = set.iter().filter(|p| !stronger.contains(p)).count();
            out.push((n as f64 + bulk) / pairs);
            stronger.extend(set);
        }
        Some(out)
    }

    /// Tokens at exact level `l` of comparison `c` per token at its exact level `of`, over the
    /// records that hold tokens at both, per holder; the largest holder's ratio (SPEC.md
    /// §9.3, birth-date neighbour levels: the raw holders' ~40 neighbour preimages per own
    /// preimage; 1 for a hash-only holder, which has one digest for both). `None` when no
    /// record holds both.
    pub fn token_ratio(&self, c: usize, l: usize, of: usize) -> Option<f64> {
        let base = self.slot_base[c];
        let mut sums = vec![(0u64, 0u64); self.holders];
        for r in 0..self.holder.len() {
            let (a, _) = self.slot(r as u32, base + l);
            let (b, _) = self.slot(r as u32, base + of);
            if !a.is_empty() && !b.is_empty() {
                let s = &mut sums[usize::from(self.holder[r])];
                s.0 += a.len() as u64;
                s.1 += b.len() as u64;
            }
        }
        sums.iter()
            .filter(|s| s.1 > 0)
            .map(|s| s.0 as f64 / s.1 as f64)
            .reduce(f64::max)
    }

    /// Whether comparison `c` uses term-frequency adjustment.
    pub fn has_tf(&self, c: usize) -> bool {
        self.tf_comparison[c]
    }

    /// Number of exact levels of comparison `c`.
    pub fn exact_levels(&self, c: usize) -> usize {
        self.exact_len[c]
    }

    /// Pattern codes of `n` random pairs of records of different holders (SPEC.md §9.3): the
    /// sample from which u is estimated. Holder pairs are drawn in proportion to
    /// `n_i · n_j`; the generator is seeded with `seed` (deterministic). Returned as counts
    /// per pattern code, and of these the pairs that are in `candidates` (`(a, b)` with
    /// `a < b`, sorted ascending, as [`crate::score::candidates`] returns them): the sampled
    /// pairs are sorted and merged with the candidates in one pass, not looked up one by one.
    pub fn random_pairs(
        &self,
        n: u64,
        seed: u64,
        candidates: &[(u32, u32)],
    ) -> Vec<crate::score::em::SamplePattern> {
        self.random_pairs_among(n, seed, candidates, None)
    }

    /// [`Features::random_pairs`] among a subset of the records: `members[h]` lists the
    /// global indices of holder `h`'s records in the subset, ascending (`None`: every
    /// record). Used to estimate u on the record sample a model is trained on (SPEC.md §9.3).
    pub fn random_pairs_among(
        &self,
        n: u64,
        seed: u64,
        candidates: &[(u32, u32)],
        members: Option<&[Vec<u32>]>,
    ) -> Vec<crate::score::em::SamplePattern> {
        let sampled = self.sample_pairs(n, seed, members);
        // The sampled pairs are sorted: one merge with the sorted candidates flags them.
        let mut k = 0;
        let flags: Vec<bool> = sampled
            .iter()
            .map(|s| {
                let pair = s.pair();
                while k < candidates.len() && candidates[k] < pair {
                    k += 1;
                }
                k < candidates.len() && candidates[k] == pair
            })
            .collect();
        sample_patterns(&sampled, &flags)
    }

    /// The `n` random pairs of [`Features::random_pairs_among`] (`members` as there) with
    /// their pattern codes, sorted by pair (repeats kept): what a stage that keeps its pairs
    /// is asked about ([`crate::score::PairStage::contains`]).
    pub fn sample_pairs(
        &self,
        n: u64,
        seed: u64,
        members: Option<&[Vec<u32>]>,
    ) -> Vec<SampledPair> {
        let mut sizes = vec![0u64; self.holders];
        match members {
            Some(m) => {
                for (h, s) in sizes.iter_mut().enumerate() {
                    *s = m.get(h).map_or(0, |v| v.len() as u64);
                }
            }
            None => {
                for &h in &self.holder {
                    sizes[usize::from(h)] += 1;
                }
            }
        }
        let mut starts = vec![0u64; self.holders];
        for h in 1..self.holders {
            starts[h] = starts[h - 1] + sizes[h - 1];
        }
        let pick = |h: usize, i: u64| -> u32 {
            match members {
                Some(m) => m[h][i as usize],
                None => (starts[h] + i) as u32,
            }
        };
        let mut hp = Vec::new();
        let mut acc = 0u128;
        for i in 0..self.holders {
            for j in i + 1..self.holders {
                let w = u128::from(sizes[i]) * u128::from(sizes[j]);
                if w > 0 {
                    acc += w;
                    hp.push((acc, i, j));
                }
            }
        }
        if hp.is_empty() || n == 0 {
            return Vec::new();
        }
        let chunks = n.div_ceil(65_536);
        let (hp, sizes, pick) = (&hp, &sizes, &pick);
        // The sampled pairs, then their comparison vectors (prefetched, in order).
        let pairs: Vec<(u32, u32)> = (0..chunks)
            .into_par_iter()
            .flat_map_iter(|k| {
                let mut state = seed ^ (k.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let take = (n - k * 65_536).min(65_536);
                (0..take).map(move |_| {
                    let r = (u128::from(splitmix(&mut state)) * acc) >> 64;
                    let (_, i, j) = hp[hp.partition_point(|&(c, _, _)| c <= r)];
                    let a = pick(i, bounded(&mut state, sizes[i]));
                    let b = pick(j, bounded(&mut state, sizes[j]));
                    (a, b)
                })
            })
            .collect();
        // (pair key a·2^32 + b with a < b, pattern code), sorted by pair.
        let mut sampled: Vec<SampledPair> = pairs
            .iter()
            .zip(self.compare_all(&pairs))
            .map(|(&(a, b), c)| SampledPair {
                key: u64::from(a.min(b)) << 32 | u64::from(a.max(b)),
                code: c.code,
            })
            .collect();
        sampled.par_sort_unstable_by_key(|s| (s.key, s.code));
        sampled
    }
}

/// A random pair of [`Features::sample_pairs`]: `a·2^32 + b` (`a < b`) and its pattern code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampledPair {
    /// The pair as `a·2^32 + b`, `a < b`.
    pub key: u64,
    /// Its pattern code.
    pub code: u32,
}

impl SampledPair {
    /// The pair `(a, b)`, `a < b`.
    pub fn pair(&self) -> (u32, u32) {
        ((self.key >> 32) as u32, self.key as u32)
    }
}

/// The sampled pairs' patterns with counts, and of these the pairs flagged as candidates
/// (`flags[i]` for `sampled[i]`), ascending by code.
///
/// # Panics
/// If `flags` and `sampled` differ in length.
pub fn sample_patterns(
    sampled: &[SampledPair],
    flags: &[bool],
) -> Vec<crate::score::em::SamplePattern> {
    assert_eq!(sampled.len(), flags.len(), "one flag per sampled pair");
    // Codes with the candidate flag in the low bit, sorted and counted: memory grows with
    // the sample, not with the pattern space.
    let mut codes: Vec<u32> = sampled
        .iter()
        .zip(flags)
        .map(|(s, &f)| s.code << 1 | u32::from(f))
        .collect();
    codes.par_sort_unstable();
    let mut out: Vec<crate::score::em::SamplePattern> = Vec::new();
    for run in codes.chunk_by(|x, y| x >> 1 == y >> 1) {
        out.push(crate::score::em::SamplePattern {
            code: run[0] >> 1,
            count: run.len() as u64,
            candidates: run.iter().filter(|&&c| c & 1 == 1).count() as u64,
        });
    }
    out
}

/// SplitMix64 (Steele, Lea and Flood 2014): a small deterministic generator for sampling.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-32 for n < 2^32).
fn bounded(state: &mut u64, n: u64) -> u64 {
    ((u128::from(splitmix(state)) * u128::from(n)) >> 64) as u64
}

/// A hint to load the cache line at `p` (x86-64 `PREFETCHT0`); nothing elsewhere. A prefetch
/// never faults and never changes a result.
#[inline]
fn prefetch(p: *const i8) {
    // SAFETY: `_mm_prefetch` needs SSE, which every x86-64 CPU has (the target's baseline);
    // a prefetch of any address, even an invalid one, is only a hint and never faults.
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code, reason = "a cache hint; SSE is baseline on x86-64")]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::NormalizeContext;
    use crate::tokenizer::Tokenizer;

    const SCHEMA: &str = r#"
schema_format = 1
name = "t"
version = 1
[fields.kanji_given]
columns = ["family", "given"]
normalizer = "kanji_name"
part = "given"
[fields.kana_given]
columns = ["family_kana", "given_kana"]
normalizer = "kana_name_fuzzy"
part = "given"
[fields.card]
column = "card"
normalizer = "digits"
[[recipes]]
name = "block_card"
version = 1
fields = ["card"]
link = "block"
[[recipes]]
name = "cmp_kanji_given"
version = 1
fields = ["kanji_given"]
link = "compare"
[[recipes]]
name = "cmp_kana_given"
version = 1
fields = ["kana_given"]
link = "compare"
[scoring]
[[scoring.comparisons]]
name = "card"
exact = ["block_card"]
rare_agreement = true
[[scoring.comparisons]]
name = "given_name"
exact = ["cmp_kanji_given", "cmp_kana_given"]
veto = true
[scoring.comparisons.dice]
bits = 256
bands = [0.7]
[[scoring.comparisons.dice.features]]
field = "kana_given"
k = 20
[[scoring.comparisons.dice.features]]
field = "kanji_given"
k = 20
"#;

    /// Features of `rows` (`holder, family, given, family_kana, given_kana, card`).
    fn features(rows: &[(u16, &str, &str, &str, &str, &str)]) -> Features {
        let schema = Schema::from_toml(SCHEMA).unwrap();
        let secret = ProjectSecret::from_bytes([5; 32]);
        let t = Tokenizer::new(
            &schema,
            &secret,
            "p",
            NormalizeContext { today: 20_261_122 },
        );
        let header = ["family", "given", "family_kana", "given_kana", "card"];
        let b = t.bind(&header);
        let mut fb = FeaturesBuilder::new(&schema, &secret, "p");
        let mut out = RecordTokens::default();
        for &(h, f, g, fk, gk, c) in rows {
            let row = [f, g, fk, gk, c];
            let raw: Vec<&str> = b.columns.iter().map(|&i| row[i]).collect();
            t.tokenize(&b, &raw, &mut out);
            fb.push(h, &out);
        }
        fb.finish()
    }

    #[test]
    fn the_given_name_veto_needs_two_forms() {
        let f = features(&[
            (0, "山田", "太郎", "ヤマダ", "タロウ", "1"),
            (1, "山田", "花子", "ヤマダ", "ハナコ", "1"),
            (1, "山田", "", "ヤマダ", "タノウ", "1"),
            (1, "山田", "", "ヤマダ", "ハナコ", "1"),
        ]);
        let given = |a, b| f.dims().level(f.compare(a, b).code, 1);
        // Levels: 0 kanji, 1 kana, 2 Dice, 3 disagree in one form, 4 disagree (the veto),
        // 5 missing. Both forms on both sides and neither agrees: disagree.
        assert_eq!(f.dims().levels[1], 6);
        assert_eq!(given(0, 1), 4);
        // Only the kana compared (a kanji given name left empty): never a veto, whether the
        // kana is a typo of the same name or another name, but not missing either.
        assert_eq!(given(0, 2), 3);
        assert_eq!(given(0, 3), 3);
    }

    /// `family_name` (0), `given_name` (1) and `given_name_reversed` (2): the family name
    /// encoded under the given name's keys, compared crosswise (SPEC.md §9.1).
    const REVERSED: &str = r#"
schema_format = 1
name = "t"
version = 1
[fields.kanji_family]
columns = ["family", "given"]
normalizer = "kanji_name"
part = "family"
[fields.kana_family]
columns = ["family_kana", "given_kana"]
normalizer = "kana_name_fuzzy"
part = "family"
[fields.kanji_given]
columns = ["family", "given"]
normalizer = "kanji_name"
part = "given"
[fields.kana_given]
columns = ["family_kana", "given_kana"]
normalizer = "kana_name_fuzzy"
part = "given"
[[recipes]]
name = "cmp_kanji_family"
version = 1
fields = ["kanji_family"]
link = "block"
[[recipes]]
name = "cmp_kana_family"
version = 1
fields = ["kana_family"]
link = "compare"
[[recipes]]
name = "cmp_kanji_given"
version = 1
fields = ["kanji_given"]
link = "compare"
[[recipes]]
name = "cmp_kana_given"
version = 1
fields = ["kana_given"]
link = "compare"
[scoring]
[[scoring.comparisons]]
name = "family_name"
exact = ["cmp_kanji_family", "cmp_kana_family"]
tf = true
[[scoring.comparisons]]
name = "given_name"
exact = ["cmp_kanji_given", "cmp_kana_given"]
tf = true
veto = true
[scoring.comparisons.dice]
bits = 256
bands = [0.7]
[[scoring.comparisons.dice.features]]
field = "kana_given"
k = 20
[[scoring.comparisons.dice.features]]
field = "kanji_given"
k = 20
[[scoring.comparisons]]
name = "given_name_reversed"
reversed_of = "given_name"
part_tokens = ["cmp_kanji_family", "cmp_kana_family"]
veto = true
[scoring.comparisons.dice]
bits = 256
bands = [0.7]
[[scoring.comparisons.dice.features]]
field = "kana_family"
key = "kana_given"
k = 20
[[scoring.comparisons.dice.features]]
field = "kanji_family"
key = "kanji_given"
k = 20
"#;

    /// Features of `rows` (`holder, family, given, family_kana, given_kana`) under
    /// [`REVERSED`], made in embedded mode and, from the same keys, as a token file carries
    /// them ([`ComparisonEncoder::encode`], [`FeaturesBuilder::push_encoded`]).
    fn reversed_features(rows: &[(u16, &str, &str, &str, &str)]) -> (Features, Features) {
        let schema = Schema::from_toml(REVERSED).unwrap();
        let secret = ProjectSecret::from_bytes([5; 32]);
        let t = Tokenizer::new(
            &schema,
            &secret,
            "p",
            NormalizeContext { today: 20_261_122 },
        );
        let b = t.bind(&["family", "given", "family_kana", "given_kana"]);
        let mut embedded = FeaturesBuilder::new(&schema, &secret, "p");
        let mut encoded = FeaturesBuilder::encoded(&schema);
        let mut enc = ComparisonEncoder::new(&schema, &secret, "p");
        let mut out = RecordTokens::default();
        for &(h, f, g, fk, gk) in rows {
            let row = [f, g, fk, gk];
            let raw: Vec<&str> = b.columns.iter().map(|&i| row[i]).collect();
            t.tokenize(&b, &raw, &mut out);
            embedded.push(h, &out);
            let filters = enc.encode(&out);
            encoded
                .push_encoded(
                    h,
                    out.tokens.iter().map(|(r, t)| (*r, t)),
                    filters.iter().map(|(k, m, w)| (*k, *m, w.as_slice())),
                )
                .unwrap();
        }
        (embedded.finish(), encoded.finish())
    }

    #[test]
    fn a_household_member_written_swapped_meets_the_given_name_veto() {
        let rows = [
            (0, "山田", "太郎", "ヤマダ", "タロウ"),
            // A household member written given name first: the family name is shared
            // crosswise, the given names (花子, 太郎) disagree in both forms.
            (1, "花子", "山田", "ハナコ", "ヤマダ"),
            // The same person written swapped: both crossed pairs agree.
            (1, "太郎", "山田", "タロウ", "ヤマダ"),
            // A married woman written swapped: the shared part (太郎 here) is more frequent
            // as a given name than as a family name, so the other crossed pair are family
            // names, which a marriage changes: no evidence, no veto.
            (1, "太郎", "佐藤", "タロウ", "サトウ"),
            // The household member without a kanji name: the crossed given names
            // disagree in the one written form both hold (kana): weighed, not vetoed.
            (1, "", "山田", "ハナコ", "ヤマダ"),
            // Nothing shared crosswise.
            (1, "鈴木", "一郎", "スズキ", "イチロウ"),
            // Holder 0's family names are mostly 山田 and its given names 太郎; holder 1
            // has one 太郎 as a family name.
            (0, "山田", "次郎", "ヤマダ", "ジロウ"),
            (0, "山田", "三郎", "ヤマダ", "サブロウ"),
            (0, "田中", "太郎", "タナカ", "タロウ"),
            (0, "中村", "太郎", "ナカムラ", "タロウ"),
            (1, "伊藤", "花子", "イトウ", "ハナコ"),
            (1, "加藤", "直樹", "カトウ", "ナオキ"),
        ];
        let (embedded, encoded) = reversed_features(&rows);
        for f in [&embedded, &encoded] {
            let rev = |a, b| f.dims().level(f.compare(a, b).code, 2);
            // Levels: 0 Dice >= 0.7, 1 disagree in one written form, 2 disagree (the
            // veto), 3 missing.
            assert_eq!(f.dims().levels[2], 4);
            assert_eq!(rev(0, 1), 2, "the household member is vetoed");
            assert_eq!(rev(1, 0), 2, "either order of the pair");
            assert_eq!(rev(0, 2), 0, "the same person, swapped");
            assert_eq!(rev(0, 3), 3, "a shared given name is no evidence");
            assert_eq!(rev(0, 4), 1, "no kanji name: the kana alone is compared");
            assert_eq!(rev(0, 5), 3, "nothing crosswise");
        }
        for (a, b) in [(0, 1), (0, 2), (0, 3), (0, 4), (0, 5)] {
            assert_eq!(embedded.compare(a, b), encoded.compare(a, b));
        }
    }

    #[test]
    fn within_holder_agreement_counts_pairs_of_other_persons() {
        // 5,000 records per holder: two pairs within holder 0 share a card, none in 1.
        let mut rows: Vec<(u16, String)> = (0..10_000u32)
            .map(|i| ((i / 5_000) as u16, format!("{}", 100_000 + i)))
            .collect();
        rows[1].1 = rows[0].1.clone();
        rows[3].1 = rows[2].1.clone();
        let rows: Vec<(u16, &str, &str, &str, &str, &str)> = rows
            .iter()
            .map(|(h, c)| (*h, "山田", "太郎", "ヤマダ", "タロウ", c.as_str()))
            .collect();
        let f = features(&rows);
        let pairs = 2.0 * 5_000.0 * 4_999.0 / 2.0;
        let r = f.within_holder_agreement(0, &[]).unwrap();
        assert_eq!(r, vec![2.0 / pairs]);
        // A holder declared to hold duplicates is left out.
        let r = f.within_holder_agreement(0, &[true, false]).unwrap();
        assert_eq!(r, vec![0.0]);
    }
}
