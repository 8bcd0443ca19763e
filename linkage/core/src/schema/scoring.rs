//! The `[scoring]` section of a linkage schema (SPEC.md §9.1): which comparisons make up a
//! pair's comparison vector, and how the threshold and clusters are chosen.

use serde::Deserialize;
use toml::Spanned;

use crate::schema::{ClkFeatureSpec, FieldSpec, LinkMode, RecipeSpec};

/// Most comparison levels of one comparison (exact levels + Dice bands + disagree + missing).
pub const MAX_LEVELS: usize = 16;
/// Most distinct comparison vectors (the product of the comparisons' level counts): patterns
/// are counted in a dense table of this many entries.
pub const MAX_PATTERNS: u64 = 1 << 31;

/// Default [`ScoringSpec::max_block_pairs`].
pub const DEFAULT_MAX_BLOCK_PAIRS: u64 = 400;
/// Default [`ScoringSpec::train_records`].
pub const DEFAULT_TRAIN_RECORDS: usize = 100_000;

/// Fellegi–Sunter scoring, from `[scoring]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoringSpec {
    /// Fixed match-probability threshold; `None`: chosen from the estimated precision/recall
    /// (maximum estimated F1).
    pub threshold: Option<f64>,
    /// Random cross-holder pairs drawn to estimate u (default 2,000,000).
    pub random_pairs: u64,
    /// Block-token groups with more records than this are not expanded into candidate pairs
    /// (default 2,000): a key shared by thousands of records carries no linkage evidence.
    pub max_block: usize,
    /// Block-token groups whose cross-holder pairs `Σ_{i<j} n_i·n_j` exceed this are not
    /// expanded either (default 400), and are accounted per recipe in `summary.json`
    /// (`scoring.candidates.dropped`): a single common field (a birth date, a frequent name)
    /// makes blocks that grow with the data, so its candidates grow quadratically; capped, the
    /// candidates of every key are at most `max_block_pairs` per distinct key value, linear in
    /// the records (SPEC.md §9.2; Christen 2012, *Data Matching*, §4.3 on block-size limits).
    pub max_block_pairs: u64,
    /// Records per holder on which the model is trained (default 100,000): above it, EM,
    /// u and the prior are fitted on a seeded random sample of each holder's records (the
    /// candidates and random pairs among the sampled records) and the fitted model scores
    /// every candidate (fastLink `estimate.only` on a sample, Splink `max_pairs`; SPEC.md
    /// §9.3). λ, m and u are properties of the population, so they do not depend on the
    /// sample's size (`scoring.training` in `summary.json` gives the sample and its seed).
    pub train_records: usize,
    /// How links above the threshold become clusters.
    pub clustering: Clustering,
    /// The comparisons, in vector order.
    pub comparisons: Vec<ComparisonSpec>,
    /// Training sessions derived from the comparisons and the recipes' link modes
    /// ([`ScoringSpec::training_sessions`], SPEC.md §9.3).
    pub sessions: Vec<Session>,
}

/// How scored links become clusters (SPEC.md §9.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Clustering {
    /// Links strongest first; a link is skipped if the merged cluster would hold two records
    /// of one holder (unless the holder has duplicates) or a sex/birth-date conflict.
    #[default]
    Guarded,
    /// Every link above the threshold merges (plain connected components).
    Threshold,
}

/// A `u_from` bound (SPEC.md §9.3): an exact level of a `rare_agreement` comparison and the
/// earlier comparisons, each with a bit set of its levels, whose joint chance agreement
/// bounds the level's u.
pub type UFrom = (usize, Vec<(usize, u32)>);

/// One comparison: an ordered list of agreement levels.
#[derive(Clone, Debug, PartialEq)]
pub struct ComparisonSpec {
    /// Name (shown in summaries and the report).
    pub name: String,
    /// Recipes (indices into the schema's recipes) whose token agreement makes levels
    /// `0..exact.len()`, strongest first.
    pub exact: Vec<usize>,
    /// Per exact level, further recipes whose agreement also makes that level (`also`): the
    /// same name in another written form, e.g. the whole name without its family/given split
    /// beside the either-order form (SPEC.md §2.2, §9.1). Empty for most levels.
    pub also: Vec<Vec<usize>>,
    /// Term-frequency adjustment of the exact levels.
    pub tf: bool,
    /// A disagreement of this comparison between two records of one cluster is a conflict.
    pub conflict: bool,
    /// A pair at this comparison's `disagree` level never links, whatever its weight (a guard:
    /// e.g. given names that share nothing, for same-sex twins with one card and birth date).
    pub veto: bool,
    /// Agreement of non-matches is (nearly) impossible (a digest of a unique identifier): u is
    /// taken from the random pairs that are not candidates and not re-estimated. Needed when
    /// a holder pair has fewer than three comparisons (a hash-only holder), where EM cannot
    /// tell chance agreement from a match (SPEC.md §9.3).
    pub rare_agreement: bool,
    /// Per exact level: for a level whose recipe has birth-date neighbours (SPEC.md §4.4,
    /// `date_neighbours`), the earlier exact level of its counterpart (the recipe of the same
    /// digest column without neighbours). Its u is at least that level's u times the mean
    /// number of neighbour dates (35), or the neighbour tokens per counterpart token if more
    /// (SPEC.md §9.3): a chance agreement with any of ~35 neighbouring dates is ~35 times
    /// likelier than with the date itself.
    pub neighbour_of: Vec<Option<usize>>,
    /// `u_from` (a `rare_agreement` comparison only): per exact level `l` listed, the earlier
    /// comparisons and their levels (`(comparison index, level bit set)`) whose joint agreement
    /// the level's digest implies, e.g. the kana name, the birth date and the sex of the NDB's
    /// ID4. Where no within-holder rate resolves the level's u (SPEC.md §9.3), it is at most
    /// the product of those comparisons' chance agreement at those levels (Fellegi and Sunter
    /// 1969: conditional independence among non-matches) instead of the half observation that
    /// bounds it from the random pairs. Empty for most comparisons.
    pub u_from: Vec<UFrom>,
    /// Dice bands of a per-comparison CLK, after the exact levels.
    pub dice: Option<DiceSpec>,
    /// Evaluated only when an earlier comparison is at one of these levels (`(comparison
    /// index, level bit set)`), else `missing`: models a dependence, e.g. given-name
    /// similarity only when the full names do not agree exactly.
    pub when: Option<(usize, u32)>,
    /// `reversed_of = "given_name"`: the other name part compared with the partner's
    /// (SPEC.md §9.1): this comparison's filter (e.g. the family name, under the given name's
    /// CLK keys) is compared with the other record's filter of the earlier comparison
    /// (index), both ways; where one crossed pair agrees (Dice at least the first band: the
    /// names were written with family and given name swapped), the level is that of the
    /// other crossed pair, else `missing`. No exact levels.
    pub reversed_of: Option<usize>,
    /// With `reversed_of`: per exact recipe of that comparison (the same written form, in
    /// order), the recipe of the name part this comparison's filter encodes (`part_tokens`,
    /// e.g. the family names), an exact recipe of an earlier `tf` comparison. Their term
    /// frequencies say which part a name shared crosswise is (SPEC.md §9.1).
    pub part_tokens: Vec<usize>,
}

/// Per-comparison Bloom filter and its Dice bands.
#[derive(Clone, Debug, PartialEq)]
pub struct DiceSpec {
    /// Filter length in bits (power of two, 64..=4096).
    pub bits: u32,
    /// Dice lower bounds, strictly decreasing, in (0, 1].
    pub bands: Vec<f64>,
    /// Encoded fields (SPEC.md §7.1 encoding).
    pub features: Vec<ClkFeatureSpec>,
    /// Per feature, the field (index into the schema's fields) whose CLK key encodes it: the
    /// feature's own field unless `key` names another, so that a family name can be encoded
    /// as a given name and compared with one (`reversed_of`).
    pub keys: Vec<usize>,
}

impl ScoringSpec {
    /// The training sessions of SPEC.md §9.3, derived from the comparisons: a comparison
    /// with an exact level whose recipe is a blocking key (`direct`, `guarded` or `block`)
    /// makes a session over the pairs at its levels `0..=b` (`b` its last such level: levels
    /// run strongest first, so a stronger level implies the weaker keys). Comparisons that
    /// share a recipe (e.g. `postal_code` and `postal_code_same_family`) make one session,
    /// and all of them are switched off in it (Splink: a training rule's columns are not
    /// compared in its session).
    pub fn training_sessions(&self, recipes: &[RecipeSpec]) -> Vec<Session> {
        let n = self.comparisons.len();
        let blocking = |r: usize| {
            matches!(
                recipes[r].link,
                LinkMode::Direct | LinkMode::Guarded | LinkMode::Block
            )
        };
        // Group comparisons that share a recipe.
        let mut group: Vec<usize> = (0..n).collect();
        for a in 0..n {
            for b in a + 1..n {
                if self.comparisons[a]
                    .exact
                    .iter()
                    .any(|r| self.comparisons[b].exact.contains(r))
                {
                    let (ga, gb) = (group[a], group[b]);
                    for g in &mut group {
                        if *g == gb {
                            *g = ga;
                        }
                    }
                }
            }
        }
        let mut out = Vec::new();
        for g in 0..n {
            let members: Vec<usize> = (0..n).filter(|&c| group[c] == g).collect();
            let region: Vec<(usize, u32)> = members
                .iter()
                .filter_map(|&c| {
                    let last = self.comparisons[c]
                        .exact
                        .iter()
                        .rposition(|&r| blocking(r))?;
                    Some((c, (1u32 << (last + 1)) - 1))
                })
                .collect();
            if region.is_empty() {
                continue;
            }
            out.push(Session {
                name: members
                    .iter()
                    .map(|&c| self.comparisons[c].name.as_str())
                    .collect::<Vec<_>>()
                    .join("+"),
                region,
                off: members,
            });
        }
        out
    }
}

impl ComparisonSpec {
    /// Number of levels: exact levels, Dice bands, `disagrees in one form` (only a `veto`
    /// comparison written in several forms, see [`Self::one_form_disagree`]), `disagree`,
    /// `missing`.
    pub fn levels(&self) -> usize {
        self.exact.len()
            + self.dice.as_ref().map_or(0, |d| d.bands.len())
            + usize::from(self.vetoes_on_two_forms())
            + 2
    }

    /// Whether this is a `veto` comparison whose Dice encodes several written forms (kanji and
    /// kana given names): its veto needs the pair to disagree in two forms (SPEC.md §9.5).
    pub fn vetoes_on_two_forms(&self) -> bool {
        self.veto && self.dice.as_ref().is_some_and(|d| d.features.len() > 1)
    }

    /// Index of the `disagrees in one form` level of a [`Self::vetoes_on_two_forms`]
    /// comparison: the pair is compared on one written form only (the other is empty on a
    /// side) and that form disagrees. No veto (one typo in a short kana name leaves no common
    /// bigram), but evidence against a match with its own m and u, learnt like every level:
    /// household members who share a family name and an address differ here (SPEC.md §9.5).
    pub fn one_form_disagree(&self) -> Option<usize> {
        self.vetoes_on_two_forms().then(|| self.levels() - 3)
    }

    /// Index of the `disagree` level.
    pub fn disagree(&self) -> usize {
        self.levels() - 2
    }

    /// Index of the `missing` level.
    pub fn missing(&self) -> usize {
        self.levels() - 1
    }

    /// Human-readable label of level `l`, given the recipe names.
    pub fn level_label(&self, l: usize, recipes: &[RecipeSpec]) -> String {
        let e = self.exact.len();
        let b = self.dice.as_ref().map_or(0, |d| d.bands.len());
        if l < e {
            format!("exact {}", recipes[self.exact[l]].name)
        } else if l < e + b {
            let d = self.dice.as_ref().expect("bands");
            format!("Dice ≥ {}", d.bands[l - e])
        } else if Some(l) == self.one_form_disagree() {
            "disagree in one written form".into()
        } else if l == self.disagree() {
            "disagree".into()
        } else {
            "missing".into()
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawScoring {
    #[serde(default)]
    threshold: Option<Spanned<f64>>,
    #[serde(default)]
    random_pairs: Option<u64>,
    #[serde(default)]
    max_block: Option<usize>,
    #[serde(default)]
    max_block_pairs: Option<u64>,
    #[serde(default)]
    train_records: Option<usize>,
    #[serde(default)]
    clustering: Clustering,
    comparisons: Spanned<Vec<RawComparison>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComparison {
    name: Spanned<String>,
    #[serde(default)]
    exact: Vec<Spanned<String>>,
    #[serde(default)]
    also: Option<Spanned<std::collections::BTreeMap<String, Vec<String>>>>,
    #[serde(default)]
    tf: bool,
    #[serde(default)]
    conflict: bool,
    #[serde(default)]
    rare_agreement: bool,
    #[serde(default)]
    veto: bool,
    #[serde(default)]
    dice: Option<RawDice>,
    #[serde(default)]
    when: Option<RawWhen>,
    #[serde(default)]
    reversed_of: Option<Spanned<String>>,
    #[serde(default)]
    part_tokens: Vec<Spanned<String>>,
    #[serde(default)]
    u_from: Vec<RawUFrom>,
    #[serde(default)]
    #[allow(dead_code, reason = "documentation for humans, accepted and ignored")]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUFrom {
    recipe: Spanned<String>,
    of: Vec<RawWhen>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWhen {
    comparison: Spanned<String>,
    levels: Vec<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDice {
    #[serde(default = "default_dice_bits")]
    bits: u32,
    bands: Spanned<Vec<f64>>,
    features: Vec<RawDiceFeature>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiceFeature {
    field: Spanned<String>,
    #[serde(default = "default_q")]
    q: usize,
    #[serde(default)]
    positional: bool,
    k: u32,
    #[serde(default)]
    key: Option<Spanned<String>>,
}

fn default_dice_bits() -> u32 {
    512
}

fn default_q() -> usize {
    2
}

/// Validates `[scoring]`; errors are `(key, byte span, message)`.
pub(crate) fn parse(
    raw: &RawScoring,
    fields: &[FieldSpec],
    recipes: &[RecipeSpec],
) -> Result<ScoringSpec, (String, std::ops::Range<usize>, String)> {
    let mut comparisons: Vec<ComparisonSpec> = Vec::new();
    let span = raw.comparisons.span();
    if raw.comparisons.get_ref().is_empty() {
        return Err((
            "scoring.comparisons".into(),
            span,
            "at least one comparison".into(),
        ));
    }
    for (i, c) in raw.comparisons.get_ref().iter().enumerate() {
        let key = format!("scoring.comparisons[{i}]");
        let name = c.name.get_ref();
        if comparisons.iter().any(|x| &x.name == name) {
            return Err((
                format!("{key}.name"),
                c.name.span(),
                format!("comparison `{name}` is defined twice"),
            ));
        }
        let mut exact = Vec::new();
        for (j, r) in c.exact.iter().enumerate() {
            let Some(k) = recipes.iter().position(|x| &x.name == r.get_ref()) else {
                return Err((
                    format!("{key}.exact[{j}]"),
                    r.span(),
                    format!("`{}` is not a recipe of the schema", r.get_ref()),
                ));
            };
            if exact.contains(&k) {
                return Err((
                    format!("{key}.exact[{j}]"),
                    r.span(),
                    format!("recipe `{}` is listed twice", r.get_ref()),
                ));
            }
            exact.push(k);
        }
        let mut neighbour_of = vec![None; exact.len()];
        for (l, &k) in exact.iter().enumerate() {
            let Some(p) = recipes[k].prehash.as_ref().filter(|p| p.date_neighbours) else {
                continue;
            };
            let counterpart = exact[..l].iter().position(|&x| {
                recipes[x]
                    .prehash
                    .as_ref()
                    .is_some_and(|q| !q.date_neighbours && q.digest_column == p.digest_column)
            });
            if counterpart.is_none() {
                return Err((
                    format!("{key}.exact[{l}]"),
                    c.exact[l].span(),
                    format!(
                        "`{}` has date_neighbours: list first, in this comparison, the recipe of the same digest_column without them (its u is derived from that level's)",
                        recipes[k].name
                    ),
                ));
            }
            neighbour_of[l] = counterpart;
        }
        let mut also = vec![Vec::new(); exact.len()];
        if let Some(a) = &c.also {
            let bad = |msg: String| Err((format!("{key}.also"), a.span(), msg));
            for (level, alts) in a.get_ref() {
                let Some(l) = exact.iter().position(|&k| recipes[k].name == *level) else {
                    return bad(format!(
                        "`{level}` is not one of this comparison's exact recipes"
                    ));
                };
                for r in alts {
                    let Some(k) = recipes.iter().position(|x| &x.name == r) else {
                        return bad(format!("`{r}` is not a recipe of the schema"));
                    };
                    if exact.contains(&k) || also.iter().any(|x: &Vec<usize>| x.contains(&k)) {
                        return bad(format!("recipe `{r}` is listed twice"));
                    }
                    also[l].push(k);
                }
            }
        }
        let dice = match &c.dice {
            None => None,
            Some(d) => {
                if !d.bits.is_power_of_two() || !(64..=4096).contains(&d.bits) {
                    return Err((
                        format!("{key}.dice.bits"),
                        c.name.span(),
                        "a power of two from 64 to 4,096".into(),
                    ));
                }
                let bands = d.bands.get_ref();
                if bands.is_empty()
                    || bands.iter().any(|b| !(*b > 0.0 && *b <= 1.0))
                    || bands.windows(2).any(|w| w[0] <= w[1])
                {
                    return Err((
                        format!("{key}.dice.bands"),
                        d.bands.span(),
                        "one or more Dice bounds in (0, 1], strictly decreasing".into(),
                    ));
                }
                let mut features = Vec::new();
                let mut keys = Vec::new();
                for (j, f) in d.features.iter().enumerate() {
                    let Some(field) = fields.iter().position(|x| &x.name == f.field.get_ref())
                    else {
                        return Err((
                            format!("{key}.dice.features[{j}].field"),
                            f.field.span(),
                            format!("`{}` is not under [fields]", f.field.get_ref()),
                        ));
                    };
                    if f.k == 0 || f.q == 0 {
                        return Err((
                            format!("{key}.dice.features[{j}]"),
                            f.field.span(),
                            "q and k must be positive".into(),
                        ));
                    }
                    let key_field = match &f.key {
                        None => field,
                        Some(k) => {
                            let Some(i) = fields.iter().position(|x| &x.name == k.get_ref()) else {
                                return Err((
                                    format!("{key}.dice.features[{j}].key"),
                                    k.span(),
                                    format!("`{}` is not under [fields]", k.get_ref()),
                                ));
                            };
                            if fields[i].normalizer != fields[field].normalizer {
                                return Err((
                                    format!("{key}.dice.features[{j}].key"),
                                    k.span(),
                                    format!(
                                        "`{}` has another normalizer than `{}`: their values are not comparable",
                                        k.get_ref(),
                                        f.field.get_ref()
                                    ),
                                ));
                            }
                            i
                        }
                    };
                    keys.push(key_field);
                    features.push(ClkFeatureSpec {
                        field,
                        q: f.q,
                        positional: f.positional,
                        k: f.k,
                        // Comparison filters are not salted (SPEC.md §9).
                        salt: None,
                    });
                }
                if features.is_empty() || features.len() > 8 {
                    return Err((
                        format!("{key}.dice.features"),
                        d.bands.span(),
                        "one to eight features".into(),
                    ));
                }
                Some(DiceSpec {
                    bits: d.bits,
                    bands: bands.clone(),
                    features,
                    keys,
                })
            }
        };
        if exact.is_empty() && dice.is_none() {
            return Err((
                key,
                c.name.span(),
                format!("comparison `{name}` needs `exact` recipes, a `dice` table, or both"),
            ));
        }
        let when = match &c.when {
            None => None,
            Some(w) => {
                let Some(k) = comparisons
                    .iter()
                    .position(|x| &x.name == w.comparison.get_ref())
                else {
                    return Err((
                        format!("{key}.when.comparison"),
                        w.comparison.span(),
                        format!("`{}` is not an earlier comparison", w.comparison.get_ref()),
                    ));
                };
                let n = comparisons[k].levels();
                if w.levels.is_empty() || w.levels.iter().any(|&l| l >= n) {
                    return Err((
                        format!("{key}.when.levels"),
                        w.comparison.span(),
                        format!(
                            "one or more levels of `{}`, from 0 to {} (missing)",
                            w.comparison.get_ref(),
                            n - 1
                        ),
                    ));
                }
                Some((k, w.levels.iter().fold(0u32, |m, &l| m | 1 << l)))
            }
        };
        let reversed_of = match &c.reversed_of {
            None => None,
            Some(r) => {
                let bad = |msg: String| Err((format!("{key}.reversed_of"), r.span(), msg));
                let Some(p) = comparisons.iter().position(|x| &x.name == r.get_ref()) else {
                    return bad(format!("`{}` is not an earlier comparison", r.get_ref()));
                };
                let (Some(own), Some(other)) = (&dice, &comparisons[p].dice) else {
                    return bad("both comparisons need a `dice` table".into());
                };
                let same = own.bits == other.bits
                    && own.features.len() == other.features.len()
                    && own
                        .features
                        .iter()
                        .zip(&other.features)
                        .all(|(x, y)| (x.q, x.positional, x.k) == (y.q, y.positional, y.k))
                    && own.keys == other.keys;
                if !same {
                    return bad(format!(
                        "its filter must be encoded as `{}`'s: the same bits, and per feature the same q, positional, k and key field",
                        r.get_ref()
                    ));
                }
                if !exact.is_empty() || c.tf || comparisons[p].reversed_of.is_some() {
                    return bad(
                        "a reversed comparison has no `exact` recipes and no `tf`, and reverses a comparison that is not itself reversed"
                            .into(),
                    );
                }
                if !comparisons[p].tf || c.part_tokens.len() != comparisons[p].exact.len() {
                    return bad(format!(
                        "`{}` needs `tf`, and `part_tokens` one recipe per exact recipe of it",
                        r.get_ref()
                    ));
                }
                Some(p)
            }
        };
        let mut part_tokens = Vec::new();
        for (j, t) in c.part_tokens.iter().enumerate() {
            let k = recipes.iter().position(|x| &x.name == t.get_ref());
            let counted = k.is_some_and(|k| {
                comparisons.iter().any(|x| {
                    x.tf && (x.exact.contains(&k) || x.also.iter().any(|a| a.contains(&k)))
                })
            });
            let (Some(k), true, true) = (k, counted, reversed_of.is_some()) else {
                return Err((
                    format!("{key}.part_tokens[{j}]"),
                    t.span(),
                    format!(
                        "`{}` must be an exact recipe of an earlier `tf` comparison, in a `reversed_of` comparison",
                        t.get_ref()
                    ),
                ));
            };
            part_tokens.push(k);
        }
        let mut u_from = Vec::new();
        for (j, f) in c.u_from.iter().enumerate() {
            let at = format!("{key}.u_from[{j}]");
            let bad = |msg: String| Err((at.clone(), f.recipe.span(), msg));
            if !c.rare_agreement {
                return bad("`u_from` needs `rare_agreement = true`".into());
            }
            let Some(l) = exact
                .iter()
                .position(|&k| recipes[k].name == *f.recipe.get_ref())
            else {
                return bad(format!(
                    "`{}` is not one of this comparison's exact recipes",
                    f.recipe.get_ref()
                ));
            };
            if neighbour_of[l].is_some() || u_from.iter().any(|(x, _)| *x == l) {
                return bad(format!(
                    "`{}`: a level listed twice, or a birth-date neighbour level (its u follows its counterpart's)",
                    f.recipe.get_ref()
                ));
            }
            let mut of = Vec::new();
            for w in &f.of {
                let Some(k) = comparisons
                    .iter()
                    .position(|x| &x.name == w.comparison.get_ref())
                    .filter(|&k| !comparisons[k].rare_agreement)
                else {
                    return Err((
                        format!("{at}.of"),
                        w.comparison.span(),
                        format!(
                            "`{}` is not an earlier comparison without rare_agreement",
                            w.comparison.get_ref()
                        ),
                    ));
                };
                let n = comparisons[k].levels();
                if w.levels.is_empty() || w.levels.iter().any(|&l| l + 1 >= n) {
                    return Err((
                        format!("{at}.of"),
                        w.comparison.span(),
                        format!(
                            "one or more levels of `{}` other than missing, from 0 to {}",
                            w.comparison.get_ref(),
                            n - 2
                        ),
                    ));
                }
                of.push((k, w.levels.iter().fold(0u32, |m, &l| m | 1 << l)));
            }
            if of.is_empty() {
                return bad("`of` lists no comparison".into());
            }
            u_from.push((l, of));
        }
        let spec = ComparisonSpec {
            name: name.clone(),
            exact,
            also,
            tf: c.tf,
            conflict: c.conflict,
            rare_agreement: c.rare_agreement,
            veto: c.veto,
            neighbour_of,
            u_from,
            dice,
            when,
            reversed_of,
            part_tokens,
        };
        if spec.levels() > MAX_LEVELS {
            return Err((
                key,
                c.name.span(),
                format!("at most {MAX_LEVELS} levels (exact + bands + 2)"),
            ));
        }
        comparisons.push(spec);
    }
    let patterns: u64 = comparisons.iter().map(|c| c.levels() as u64).product();
    if patterns > MAX_PATTERNS {
        return Err((
            "scoring.comparisons".into(),
            span,
            format!(
                "{patterns} possible comparison vectors; at most {MAX_PATTERNS}: use fewer levels"
            ),
        ));
    }
    if let Some(t) = &raw.threshold
        && !(*t.get_ref() > 0.0 && *t.get_ref() < 1.0)
    {
        return Err((
            "scoring.threshold".into(),
            t.span(),
            "a match probability in (0, 1)".into(),
        ));
    }
    let mut spec = ScoringSpec {
        threshold: raw.threshold.as_ref().map(|t| *t.get_ref()),
        random_pairs: raw.random_pairs.unwrap_or(2_000_000),
        max_block: raw.max_block.unwrap_or(2_000),
        max_block_pairs: raw
            .max_block_pairs
            .unwrap_or(DEFAULT_MAX_BLOCK_PAIRS)
            .max(1),
        train_records: raw
            .train_records
            .unwrap_or(DEFAULT_TRAIN_RECORDS)
            .max(1_000),
        clustering: raw.clustering,
        comparisons,
        sessions: Vec::new(),
    };
    spec.sessions = spec.training_sessions(recipes);
    Ok(spec)
}

/// A training session (SPEC.md §9.3): EM over the candidate pairs of one blocking region
/// with the comparisons of that region switched off (Splink `EMTrainingSession`, whose
/// `comparisons_to_deactivate` drops the comparisons of the training blocking rule; NHS
/// England averages m over such sessions). A session blocked on names never sees the name
/// comparison, so namesakes are judged on birth date, sex and address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Name (shown in summaries).
    pub name: String,
    /// `(comparison, level bit set)`: a pattern belongs to the session when any of these
    /// comparisons is at one of the listed levels.
    pub region: Vec<(usize, u32)>,
    /// Comparisons switched off in the session.
    pub off: Vec<usize>,
}
