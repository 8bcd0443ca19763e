//! The linkage schema: a versioned TOML file that says which input columns are identifiers
//! (and how each is normalized), which are content for the researcher, and which exact-token
//! recipes are made. Normative description: SPEC.md §2.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;
use toml::Spanned;

use crate::normalize::Normalizer;

pub mod scoring;

/// The schema file format this build reads (`schema_format = 1`).
pub const SCHEMA_FORMAT: u32 = 1;

/// A parsed and validated linkage schema.
#[derive(Clone, Debug)]
pub struct Schema {
    /// Schema name, e.g. `"jp-person"`. Informational.
    pub name: String,
    /// Version of this schema's content (bumped when fields or recipes change).
    pub version: u32,
    /// Default id column of every input (`[input] id_column`, default `"id"`).
    pub id_column: String,
    /// Identifier fields in name order: what is normalized and hashed, never released.
    pub fields: Vec<FieldSpec>,
    /// Content columns, copied to the researcher's view; never identifiers.
    pub content: Vec<String>,
    /// Exact-token recipes, in file order.
    pub recipes: Vec<RecipeSpec>,
    /// Bloom-filter (CLK) matching, if configured (SPEC.md §7.1).
    pub clk: Option<ClkSpec>,
    /// Fellegi–Sunter scoring (`[scoring]`, SPEC.md §9), if configured.
    pub scoring: Option<scoring::ScoringSpec>,
}

/// How records are compared by CLK Dice similarity in addition to exact tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct ClkSpec {
    /// Filter length in bits (a power of two from 64 to 65,536; default 1024).
    pub bits: u32,
    /// Dice threshold in `[0, 1]`: pairs below never link.
    pub threshold: f64,
    /// How pairs above the threshold become links.
    pub solver: ClkSolver,
    /// Encoded fields.
    pub features: Vec<ClkFeatureSpec>,
    /// Filter hardening (SPEC.md §7.3); all off by default.
    pub hardening: ClkHardening,
    /// Hamming-LSH candidates (`[clk.lsh]`, SPEC.md §7.4), if configured.
    pub lsh: Option<ClkLsh>,
}

/// `[clk.lsh]`: Hamming-LSH blocking on the filters (SPEC.md §7.4). A value left out is
/// chosen per pair of holders from their sizes and filters (`crate::lsh::choose_params`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClkLsh {
    /// Number of bands (1 to 1,024); `None`: chosen from the data.
    #[serde(default)]
    pub bands: Option<u32>,
    /// Sampled bits per band (1 to 64, at most the filter length); `None`: chosen from the
    /// data.
    #[serde(default)]
    pub bits_per_band: Option<u32>,
}

impl ClkSpec {
    /// Length in bits of the filters the linkage unit compares: `bits`, halved by XOR
    /// folding, doubled by balancing (SPEC.md §7.3).
    pub fn filter_bits(&self) -> u32 {
        let folded = if self.hardening.xor_fold {
            self.bits / 2
        } else {
            self.bits
        };
        if self.hardening.balance {
            2 * folded
        } else {
            folded
        }
    }
}

/// `[clk.hardening]`: what is done to each filter after encoding (SPEC.md §7.3).
#[derive(Clone, Copy, Debug, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClkHardening {
    /// XOR-fold once: `bits/2` bits (Schnell, Borgs & Encarnação 2016).
    #[serde(default)]
    pub xor_fold: bool,
    /// Balance with a keyed permutation: twice the bits, exactly half set (Schnell & Borgs
    /// 2016).
    #[serde(default)]
    pub balance: bool,
    /// BLIP: flip every bit with probability `1/(1 + e^ε)` (randomized response); `None` = off.
    #[serde(default)]
    pub blip_epsilon: Option<f64>,
}

/// Salting of one CLK feature (SPEC.md §7.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClkSaltSpec {
    /// Index into [`Schema::fields`] of the field whose canonical value salts the feature.
    pub field: usize,
    /// Leading characters of that value used (0 = all; 4 of a birth date = the year).
    pub chars: usize,
}

/// One encoded field of the CLK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClkFeatureSpec {
    /// Index into [`Schema::fields`].
    pub field: usize,
    /// q of the q-grams (1 = characters).
    pub q: usize,
    /// Positional characters (dates, codes).
    pub positional: bool,
    /// Bits set per token.
    pub k: u32,
    /// Salting with another field of the record, if configured.
    pub salt: Option<ClkSaltSpec>,
}

/// How Dice pairs above the threshold become links.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClkSolver {
    /// Greedy 1:1 between each pair of holders: best pairs first, each record used once.
    #[default]
    Greedy,
    /// Every pair above the threshold.
    Threshold,
}

/// One identifier field of the schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldSpec {
    /// Field name used by recipes (and bound into token preimages).
    pub name: String,
    /// The input column(s) holding the raw value. Several columns are concatenated in order
    /// (e.g. family and given name into a full name) before normalization; the field is
    /// missing if any of them is empty.
    pub columns: Vec<String>,
    /// How the raw value is canonicalized.
    pub normalizer: Normalizer,
    /// `order = "any"`: the parts (the columns, or a single column split at white space) are
    /// normalized one by one, sorted and joined with one space, so that swapped family and
    /// given names give the same value.
    pub any_order: bool,
    /// `full_column = "…"`: the column holding the whole name (氏名 in one field, as claims
    /// data carry it), read when the input lacks one of `columns` (SPEC.md §2.2).
    pub full_column: Option<String>,
    /// `part = "family" | "given"`: which part of the name a two-column field (family, given)
    /// takes: its own column when both are filled, else the part of the whole name (in the
    /// filled column or `full_column`) before or after the first white space (SPEC.md §2.2).
    pub part: Option<NamePart>,
}

/// The part of a whole name (family name first, as Japanese names are written) that a
/// field reads from its `full_column` (SPEC.md §2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NamePart {
    /// Before the first white space: 氏.
    Family,
    /// After the first white space: 名.
    Given,
}

/// How a recipe's tokens are used by the join (SPEC.md §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkMode {
    /// A shared token merges the two records' clusters.
    #[default]
    Direct,
    /// A shared token merges two clusters only if their guard tokens do not conflict.
    Guarded,
    /// Not used to link; a cluster's guard tokens veto guarded merges (two clusters conflict
    /// when both have tokens of one guard recipe and no token in common).
    Guard,
    /// Not used to link; records of different holders that share a block token are the
    /// candidate pairs compared by CLK Dice similarity (blocking, SPEC.md §7.1) or scored
    /// (SPEC.md §9.2). Needs `[clk]` or `[scoring]`.
    Block,
    /// Not used to link or block; compared only, in `[scoring]` comparisons (SPEC.md §9.1).
    /// Needs `[scoring]`.
    Compare,
}

/// A legacy hashing scheme of a hash-only database (SPEC.md §4.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum PrehashProfile {
    /// Fields canonicalized by NFKC and white-space removal only, joined with `|`; dates as
    /// `YYYYMMDD`, sex `1`/`2`; SHA-256, lower-case hex. The stand-in for MHLW's ID1/ID4.
    #[serde(rename = "ndb-legacy-v1")]
    NdbLegacyV1,
}

/// Spelling variants a raw holder emits to meet a legacy digest (SPEC.md §4.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrehashVariant {
    /// Also the preimage with every kana in katakana, and with every kana in hiragana.
    KanaScript,
    /// Also the preimage with hyphens removed.
    StripHyphens,
    /// Multi-column fields also in reversed column order (given + family).
    NameOrder,
    /// Also with a long-vowel `ウ` (after an o- or u-row kana) written `ー`.
    KanaLongVowel,
    /// Also with small kana written large (`キョウ` → `キヨウ`).
    KanaSmallLarge,
    /// Also with voiced marks dropped (`ガ` → `カ`).
    KanaUnvoiced,
    /// Optional fields that have a value also left empty.
    OptionalEmpty,
    /// Insurer numbers also in their other written form: a 6-digit 国保 number also as
    /// `00` + 6 digits, and `00` + 6 digits also as 6 digits.
    InsurerForms,
    /// Branch numbers also without the leading zero (`00` → `0`, `01` → `1`) and padded.
    BranchForms,
    /// A sex that is not recorded (empty, the column absent, or `0`/`9`: not known / not
    /// applicable, JIS X 0303) taken as each of `1` and `2`: two preimages, one of which is
    /// the person's, where without it the record has none.
    SexUnknown,
}

/// The prehash part of a recipe: its token is keyed-hashed from a legacy digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prehash {
    /// The legacy scheme.
    pub profile: PrehashProfile,
    /// Column in which a hash-only holder supplies the digest instead of the fields.
    pub digest_column: Option<String>,
    /// Fields (indices into [`Schema::fields`]) that may be empty in the legacy preimage.
    pub optional: Vec<usize>,
    /// Variants to emit from raw identifiers.
    pub variants: Vec<PrehashVariant>,
    /// `date_neighbours = true`: a raw holder emits the legacy preimages with the date field
    /// replaced by each of its neighbours (one keying error away,
    /// [`crate::normalize::birth_date_neighbours`]: at most
    /// [`crate::normalize::MAX_BIRTH_DATE_NEIGHBOURS`] dates) **instead of** its own date, so
    /// that the recipe's tokens agree only where one side mistyped the date (SPEC.md §4.4).
    /// The recipe must have one `birth_date` or `date` field.
    pub date_neighbours: bool,
}

/// One exact-token recipe: an ordered list of fields hashed together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipeSpec {
    /// Recipe name, `[a-z0-9_]+`, bound into the recipe key and preimage.
    pub name: String,
    /// Recipe version, bound likewise: changing a recipe's meaning requires a new version.
    pub version: u32,
    /// Indices into [`Schema::fields`], in recipe order.
    pub fields: Vec<usize>,
    /// How the join uses this recipe's tokens.
    pub link: LinkMode,
    /// Set for recipes that meet a hash-only database's legacy digests.
    pub prehash: Option<Prehash>,
}

/// Why a schema file cannot be used. Every variant names the key and the 1-based line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// Not valid TOML, an unknown key, or a value of the wrong type.
    #[error("{0}")]
    Parse(String),
    /// Well-formed TOML that breaks a schema rule.
    #[error("schema key `{key}` (line {line}): {message}")]
    Invalid {
        /// Dotted path of the offending key.
        key: String,
        /// 1-based line of the offending value.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchema {
    schema_format: Spanned<u32>,
    name: String,
    version: u32,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    input: RawInput,
    fields: BTreeMap<Spanned<String>, RawField>,
    #[serde(default)]
    content: RawContent,
    recipes: Spanned<Vec<RawRecipe>>,
    #[serde(default)]
    clk: Option<RawClk>,
    #[serde(default)]
    scoring: Option<scoring::RawScoring>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClk {
    #[serde(default = "default_bits")]
    bits: Spanned<u32>,
    threshold: Spanned<f64>,
    #[serde(default)]
    solver: ClkSolver,
    features: Vec<RawClkFeature>,
    #[serde(default = "default_hardening")]
    hardening: Spanned<ClkHardening>,
    #[serde(default)]
    lsh: Option<Spanned<ClkLsh>>,
}

fn default_hardening() -> Spanned<ClkHardening> {
    Spanned::new(0..0, ClkHardening::default())
}

fn default_bits() -> Spanned<u32> {
    Spanned::new(0..0, 1024)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClkFeature {
    field: Spanned<String>,
    #[serde(default = "default_q")]
    q: usize,
    #[serde(default)]
    positional: bool,
    k: u32,
    #[serde(default)]
    salt: Option<RawSalt>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSalt {
    field: Spanned<String>,
    #[serde(default)]
    chars: usize,
}

fn default_q() -> usize {
    2
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawInput {
    #[serde(default)]
    id_column: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    #[serde(default)]
    column: Option<Spanned<String>>,
    #[serde(default)]
    columns: Option<Spanned<Vec<String>>>,
    normalizer: Normalizer,
    #[serde(default)]
    order: Option<Spanned<String>>,
    #[serde(default)]
    full_column: Option<Spanned<String>>,
    #[serde(default)]
    part: Option<Spanned<String>>,
    #[serde(default)]
    #[allow(dead_code, reason = "documentation for humans, accepted and ignored")]
    description: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawContent {
    #[serde(default)]
    columns: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipe {
    name: Spanned<String>,
    version: u32,
    fields: Vec<Spanned<String>>,
    #[serde(default)]
    link: LinkMode,
    #[serde(default)]
    prehash: Option<RawPrehash>,
    #[serde(default)]
    #[allow(dead_code, reason = "documentation for humans, accepted and ignored")]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrehash {
    profile: PrehashProfile,
    #[serde(default)]
    digest_column: Option<String>,
    #[serde(default)]
    optional: Vec<Spanned<String>>,
    #[serde(default)]
    variants: Vec<PrehashVariant>,
    #[serde(default)]
    date_neighbours: bool,
}

fn line_of(src: &str, offset: usize) -> usize {
    src.as_bytes()[..offset.min(src.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Schema {
    /// Parses and validates a schema from TOML text.
    ///
    /// # Errors
    /// [`SchemaError::Parse`] for TOML or type errors (the message carries toml's line and
    /// column), [`SchemaError::Invalid`] for rule violations (unknown field in a recipe,
    /// duplicate names, a column used both as identifier and content, …).
    pub fn from_toml(src: &str) -> Result<Self, SchemaError> {
        let raw: RawSchema = toml::from_str(src).map_err(|e| SchemaError::Parse(e.to_string()))?;
        let invalid =
            |key: String, span: std::ops::Range<usize>, message: String| SchemaError::Invalid {
                key,
                line: line_of(src, span.start),
                message,
            };
        if *raw.schema_format.get_ref() != SCHEMA_FORMAT {
            return Err(invalid(
                "schema_format".into(),
                raw.schema_format.span(),
                format!(
                    "this build reads schema_format = {SCHEMA_FORMAT}, found {}",
                    raw.schema_format.get_ref()
                ),
            ));
        }
        let _ = raw.description;
        let mut fields = Vec::with_capacity(raw.fields.len());
        let mut identifier_columns = HashSet::new();
        for (name, f) in &raw.fields {
            let key = format!("fields.{}", name.get_ref());
            if !valid_name(name.get_ref()) {
                return Err(invalid(
                    key,
                    name.span(),
                    "field names are 1-64 characters of a-z, 0-9 and _".into(),
                ));
            }
            let columns = match (&f.column, &f.columns) {
                (Some(c), None) => vec![c.get_ref().clone()],
                (None, Some(cs)) if !cs.get_ref().is_empty() => cs.get_ref().clone(),
                (None, Some(cs)) => {
                    return Err(invalid(
                        format!("{key}.columns"),
                        cs.span(),
                        "no columns given".into(),
                    ));
                }
                _ => {
                    return Err(invalid(
                        key,
                        name.span(),
                        "give exactly one of `column = \"…\"` or `columns = [\"…\", …]`".into(),
                    ));
                }
            };
            let any_order = match &f.order {
                None => false,
                Some(o) if o.get_ref() == "as_given" => false,
                Some(o) if o.get_ref() == "any" => true,
                Some(o) => {
                    return Err(invalid(
                        format!("{key}.order"),
                        o.span(),
                        format!("order is \"as_given\" or \"any\", not {:?}", o.get_ref()),
                    ));
                }
            };
            let part = match &f.part {
                None => None,
                Some(p) if p.get_ref() == "family" => Some(NamePart::Family),
                Some(p) if p.get_ref() == "given" => Some(NamePart::Given),
                Some(p) => {
                    return Err(invalid(
                        format!("{key}.part"),
                        p.span(),
                        format!("part is \"family\" or \"given\", not {:?}", p.get_ref()),
                    ));
                }
            };
            let full_column = f.full_column.as_ref().map(|c| c.get_ref().clone());
            match (&f.full_column, &f.part) {
                (_, Some(p)) if columns.len() != 2 => {
                    return Err(invalid(
                        format!("{key}.part"),
                        p.span(),
                        "`part` is for a field of two columns, family and given name".into(),
                    ));
                }
                (Some(c), None) if columns.len() == 1 => {
                    return Err(invalid(
                        format!("{key}.full_column"),
                        c.span(),
                        "a one-column field cannot read a whole name; give `columns = [family, given]` and `part`".into(),
                    ));
                }
                (Some(c), _) if columns.contains(c.get_ref()) => {
                    return Err(invalid(
                        format!("{key}.full_column"),
                        c.span(),
                        "the full_column must differ from the field's own columns".into(),
                    ));
                }
                _ => {}
            }
            identifier_columns.extend(columns.iter().cloned());
            identifier_columns.extend(full_column.iter().cloned());
            fields.push(FieldSpec {
                name: name.get_ref().clone(),
                columns,
                normalizer: f.normalizer,
                any_order,
                full_column,
                part,
            });
        }
        let id_column = raw.input.id_column.clone().unwrap_or_else(|| "id".into());
        let mut content = Vec::new();
        for (i, c) in raw.content.columns.iter().enumerate() {
            let key = format!("content.columns[{i}]");
            if identifier_columns.contains(c.get_ref()) {
                return Err(invalid(
                    key,
                    c.span(),
                    format!(
                        "column `{}` is an identifier field and can never be content",
                        c.get_ref()
                    ),
                ));
            }
            if c.get_ref() == &id_column {
                return Err(invalid(
                    key,
                    c.span(),
                    format!(
                        "column `{}` is the id column and can never be content",
                        c.get_ref()
                    ),
                ));
            }
            if content.contains(c.get_ref()) {
                return Err(invalid(
                    key,
                    c.span(),
                    format!("column `{}` is listed twice", c.get_ref()),
                ));
            }
            content.push(c.get_ref().clone());
        }
        if raw.recipes.get_ref().is_empty() {
            return Err(invalid(
                "recipes".into(),
                raw.recipes.span(),
                "at least one recipe is needed".into(),
            ));
        }
        let mut recipes: Vec<RecipeSpec> = Vec::new();
        for (i, r) in raw.recipes.get_ref().iter().enumerate() {
            let name = r.name.get_ref();
            if !valid_name(name) {
                return Err(invalid(
                    format!("recipes[{i}].name"),
                    r.name.span(),
                    "recipe names are 1-64 characters of a-z, 0-9 and _".into(),
                ));
            }
            if recipes.iter().any(|x| &x.name == name) {
                return Err(invalid(
                    format!("recipes[{i}].name"),
                    r.name.span(),
                    format!("recipe `{name}` is defined twice"),
                ));
            }
            if r.fields.is_empty() {
                return Err(invalid(
                    format!("recipes[{i}].fields"),
                    r.name.span(),
                    format!("recipe `{name}` has no fields"),
                ));
            }
            let mut idx = Vec::with_capacity(r.fields.len());
            for (j, f) in r.fields.iter().enumerate() {
                let key = format!("recipes[{i}].fields[{j}]");
                let Some(k) = fields.iter().position(|x| &x.name == f.get_ref()) else {
                    return Err(invalid(
                        key,
                        f.span(),
                        format!(
                            "recipe `{name}` uses field `{}`, which is not under [fields]",
                            f.get_ref()
                        ),
                    ));
                };
                if idx.contains(&k) {
                    return Err(invalid(
                        key,
                        f.span(),
                        format!("field `{}` appears twice", f.get_ref()),
                    ));
                }
                idx.push(k);
            }
            let prehash = match &r.prehash {
                None => None,
                Some(p) => {
                    let mut optional = Vec::new();
                    for (j, f) in p.optional.iter().enumerate() {
                        match fields.iter().position(|x| &x.name == f.get_ref()) {
                            Some(k) if idx.contains(&k) => optional.push(k),
                            _ => {
                                return Err(invalid(
                                    format!("recipes[{i}].prehash.optional[{j}]"),
                                    f.span(),
                                    format!("`{}` is not a field of recipe `{name}`", f.get_ref()),
                                ));
                            }
                        }
                    }
                    if let Some(c) = &p.digest_column
                        && identifier_columns.contains(c)
                    {
                        return Err(invalid(
                            format!("recipes[{i}].prehash.digest_column"),
                            r.name.span(),
                            format!("digest column `{c}` is also an identifier column"),
                        ));
                    }
                    if p.date_neighbours
                        && idx
                            .iter()
                            .filter(|&&k| {
                                matches!(
                                    fields[k].normalizer,
                                    Normalizer::BirthDate | Normalizer::Date
                                )
                            })
                            .count()
                            != 1
                    {
                        return Err(invalid(
                            format!("recipes[{i}].prehash.date_neighbours"),
                            r.name.span(),
                            format!(
                                "recipe `{name}` needs exactly one birth_date or date field for date_neighbours"
                            ),
                        ));
                    }
                    Some(Prehash {
                        profile: p.profile,
                        digest_column: p.digest_column.clone(),
                        optional,
                        variants: p.variants.clone(),
                        date_neighbours: p.date_neighbours,
                    })
                }
            };
            recipes.push(RecipeSpec {
                name: name.clone(),
                version: r.version,
                fields: idx,
                link: r.link,
                prehash,
            });
        }
        if raw.clk.is_none()
            && raw.scoring.is_none()
            && let Some(i) = recipes.iter().position(|r| r.link == LinkMode::Block)
        {
            return Err(invalid(
                format!("recipes[{i}].link"),
                raw.recipes.span(),
                "a block recipe only chooses CLK comparisons or scored pairs: add a [clk] or [scoring] section".into(),
            ));
        }
        if raw.scoring.is_none()
            && let Some(i) = recipes.iter().position(|r| r.link == LinkMode::Compare)
        {
            return Err(invalid(
                format!("recipes[{i}].link"),
                raw.recipes.span(),
                "a compare recipe is only used by [scoring] comparisons: add a [scoring] section"
                    .into(),
            ));
        }
        let scoring = match &raw.scoring {
            None => None,
            Some(r) => Some(
                scoring::parse(r, &fields, &recipes)
                    .map_err(|(key, span, message)| invalid(key, span, message))?,
            ),
        };
        if raw.clk.is_none()
            && raw.scoring.is_none()
            && !recipes
                .iter()
                .any(|r| matches!(r.link, LinkMode::Direct | LinkMode::Guarded))
        {
            return Err(invalid(
                "recipes".into(),
                raw.recipes.span(),
                "every recipe is a guard: at least one must link (link = \"direct\" or \"guarded\")".into(),
            ));
        }
        for (i, r) in recipes.iter().enumerate() {
            if let Some(c) = r.prehash.as_ref().and_then(|p| p.digest_column.as_ref())
                && content.contains(c)
            {
                return Err(invalid(
                    format!("recipes[{i}].prehash.digest_column"),
                    raw.recipes.span(),
                    format!("digest column `{c}` is also a content column"),
                ));
            }
        }
        let clk = match &raw.clk {
            None => None,
            Some(c) => {
                if !c.bits.get_ref().is_power_of_two() || !(64..=65_536).contains(c.bits.get_ref())
                {
                    return Err(invalid(
                        "clk.bits".into(),
                        c.bits.span(),
                        "a power of two from 64 to 65,536".into(),
                    ));
                }
                if !(0.0..=1.0).contains(c.threshold.get_ref()) {
                    return Err(invalid(
                        "clk.threshold".into(),
                        c.threshold.span(),
                        "a Dice threshold in [0, 1]".into(),
                    ));
                }
                let mut features = Vec::new();
                for (i, f) in c.features.iter().enumerate() {
                    let Some(field) = fields.iter().position(|x| &x.name == f.field.get_ref())
                    else {
                        return Err(invalid(
                            format!("clk.features[{i}].field"),
                            f.field.span(),
                            format!("`{}` is not under [fields]", f.field.get_ref()),
                        ));
                    };
                    if f.k == 0 || f.q == 0 {
                        return Err(invalid(
                            format!("clk.features[{i}]"),
                            f.field.span(),
                            "q and k must be positive".into(),
                        ));
                    }
                    let salt = match &f.salt {
                        None => None,
                        Some(raw) => {
                            let Some(sf) =
                                fields.iter().position(|x| &x.name == raw.field.get_ref())
                            else {
                                return Err(invalid(
                                    format!("clk.features[{i}].salt.field"),
                                    raw.field.span(),
                                    format!("`{}` is not under [fields]", raw.field.get_ref()),
                                ));
                            };
                            if sf == field {
                                return Err(invalid(
                                    format!("clk.features[{i}].salt.field"),
                                    raw.field.span(),
                                    "a feature cannot be salted with itself".into(),
                                ));
                            }
                            Some(ClkSaltSpec {
                                field: sf,
                                chars: raw.chars,
                            })
                        }
                    };
                    features.push(ClkFeatureSpec {
                        field,
                        q: f.q,
                        positional: f.positional,
                        k: f.k,
                        salt,
                    });
                }
                if features.is_empty() {
                    return Err(invalid(
                        "clk.features".into(),
                        c.threshold.span(),
                        "at least one feature".into(),
                    ));
                }
                let hardening = *c.hardening.get_ref();
                if let Some(e) = hardening.blip_epsilon
                    && !(e.is_finite() && e > 0.0)
                {
                    return Err(invalid(
                        "clk.hardening.blip_epsilon".into(),
                        c.hardening.span(),
                        "a positive privacy parameter ε (flip probability 1/(1+e^ε))".into(),
                    ));
                }
                if hardening.xor_fold && *c.bits.get_ref() < 128 {
                    return Err(invalid(
                        "clk.hardening.xor_fold".into(),
                        c.hardening.span(),
                        "folding needs clk.bits of at least 128".into(),
                    ));
                }
                let spec = ClkSpec {
                    bits: *c.bits.get_ref(),
                    threshold: *c.threshold.get_ref(),
                    solver: c.solver,
                    features,
                    hardening,
                    lsh: c.lsh.as_ref().map(|l| *l.get_ref()),
                };
                if let (Some(l), Some(raw)) = (spec.lsh, &c.lsh)
                    && (l.bands.is_some_and(|b| !(1..=1024).contains(&b))
                        || l.bits_per_band
                            .is_some_and(|r| !(1..=64).contains(&r) || r > spec.filter_bits()))
                {
                    return Err(invalid(
                        "clk.lsh".into(),
                        raw.span(),
                        "bands from 1 to 1,024 and bits_per_band from 1 to 64 (at most the filter length)".into(),
                    ));
                }
                Some(spec)
            }
        };
        Ok(Schema {
            clk,
            scoring,
            name: raw.name,
            version: raw.version,
            id_column,
            fields,
            content,
            recipes,
        })
    }
}

impl Schema {
    /// The identifier columns any field reads, each once, in field order: what a holder with
    /// raw identifiers must supply (fields whose columns are absent are simply unavailable).
    pub fn identifier_columns(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for f in &self.fields {
            for c in f.columns.iter().chain(&f.full_column) {
                if !out.contains(&c.as_str()) {
                    out.push(c);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
schema_format = 1
name = "t"
version = 3

[fields.name]
column = "full_name"
normalizer = "text"

[fields.dob]
column = "birth"
normalizer = "date"

[content]
columns = ["diagnosis"]

[[recipes]]
name = "name_dob"
version = 1
fields = ["name", "dob"]
"#;

    #[test]
    fn parses_good_schema() {
        let s = Schema::from_toml(GOOD).unwrap();
        assert_eq!(s.id_column, "id");
        assert_eq!(s.version, 3);
        assert_eq!(s.content, vec!["diagnosis".to_string()]);
        let r = &s.recipes[0];
        assert_eq!(s.fields[r.fields[0]].name, "name");
        assert_eq!(s.fields[r.fields[1]].normalizer, Normalizer::Date);
    }

    #[test]
    fn multi_column_fields_prehash_and_link_modes() {
        let src = format!(
            "{GOOD}{}",
            r#"
[fields.full]
columns = ["family", "given"]
normalizer = "kana_name"
order = "any"

[[recipes]]
name = "legacy"
version = 1
fields = ["full", "dob"]
link = "guarded"
[recipes.prehash]
profile = "ndb-legacy-v1"
digest_column = "id4"
variants = ["kana_script"]
"#
        );
        let s = Schema::from_toml(&src).unwrap();
        let full = s.fields.iter().position(|f| f.name == "full").unwrap();
        assert_eq!(s.fields[full].columns, ["family", "given"]);
        assert!(s.fields[full].any_order);
        let r = &s.recipes[1];
        assert_eq!(r.link, LinkMode::Guarded);
        let p = r.prehash.as_ref().unwrap();
        assert_eq!(p.digest_column.as_deref(), Some("id4"));
        assert_eq!(p.variants, [PrehashVariant::KanaScript]);
        assert_eq!(
            s.identifier_columns(),
            ["birth", "family", "given", "full_name"]
        );
    }

    #[test]
    fn clk_hardening_and_salt() {
        let clk = "\n[clk]\nthreshold = 0.9\n[[clk.features]]\nfield = \"name\"\nk = 10\n";
        let plain = Schema::from_toml(&format!("{GOOD}{clk}")).unwrap();
        let c = plain.clk.as_ref().unwrap();
        assert_eq!(c.hardening, ClkHardening::default());
        assert_eq!(c.lsh, None);
        let lsh = Schema::from_toml(&format!("{GOOD}{clk}[clk.lsh]\nbands = 8\n")).unwrap();
        assert_eq!(
            lsh.clk.unwrap().lsh,
            Some(ClkLsh {
                bands: Some(8),
                bits_per_band: None
            })
        );
        let empty = Schema::from_toml(&format!("{GOOD}{clk}[clk.lsh]\n")).unwrap();
        assert_eq!(empty.clk.unwrap().lsh, Some(ClkLsh::default()));
        let both = Schema::from_toml(&format!(
            "{GOOD}{clk}[clk.lsh]\nbands = 1024\nbits_per_band = 64\n"
        ))
        .unwrap();
        assert_eq!(
            both.clk.unwrap().lsh,
            Some(ClkLsh {
                bands: Some(1024),
                bits_per_band: Some(64)
            })
        );
        for bad in ["bands = 0", "bands = 1025", "bits_per_band = 0"] {
            let err = Schema::from_toml(&format!("{GOOD}{clk}[clk.lsh]\n{bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("clk.lsh"), "{bad}: {err}");
        }
        let err = Schema::from_toml(&format!("{GOOD}{clk}[clk.lsh]\nbits_per_band = 65\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("clk.lsh"), "{err}");
        assert_eq!(c.features[0].salt, None);
        let hardened = format!(
            "{GOOD}{clk}salt = {{ field = \"dob\", chars = 4 }}\n[clk.hardening]\nxor_fold = true\nbalance = true\nblip_epsilon = 4.0\n"
        );
        let s = Schema::from_toml(&hardened).unwrap();
        let c = s.clk.as_ref().unwrap();
        assert!(c.hardening.xor_fold && c.hardening.balance);
        assert_eq!(c.hardening.blip_epsilon, Some(4.0));
        let dob = s.fields.iter().position(|f| f.name == "dob").unwrap();
        assert_eq!(
            c.features[0].salt,
            Some(ClkSaltSpec {
                field: dob,
                chars: 4
            })
        );
        for (bad, key) in [
            (
                hardened.replace("blip_epsilon = 4.0", "blip_epsilon = 0.0"),
                "clk.hardening.blip_epsilon",
            ),
            (
                hardened.replace("field = \"dob\", chars", "field = \"nope\", chars"),
                "clk.features[0].salt.field",
            ),
            (
                hardened.replace("field = \"dob\", chars", "field = \"name\", chars"),
                "clk.features[0].salt.field",
            ),
            (
                hardened.replace("balance = true", "balance = true\nfold = 2"),
                "unknown field `fold`",
            ),
        ] {
            let err = Schema::from_toml(&bad).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn unknown_recipe_field_names_key_and_line() {
        let bad = GOOD.replace(r#"fields = ["name", "dob"]"#, r#"fields = ["name", "sex"]"#);
        let err = Schema::from_toml(&bad).unwrap_err();
        let SchemaError::Invalid { key, line, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(key, "recipes[0].fields[1]");
        assert_eq!(line, &20);
    }

    #[test]
    fn reversed_comparisons_encode_as_their_partner() {
        const JP: &str = include_str!("../../../../schemas/jp-person.toml");
        let s = Schema::from_toml(JP).unwrap();
        let sc = s.scoring.as_ref().unwrap();
        let field = |n: &str| s.fields.iter().position(|f| f.name == n).unwrap();
        let given = sc.comparisons.iter().position(|c| c.name == "given_name");
        let rev = sc
            .comparisons
            .iter()
            .find(|c| c.name == "given_name_reversed")
            .unwrap();
        assert_eq!(rev.reversed_of, given);
        let d = rev.dice.as_ref().unwrap();
        assert_eq!(d.features[0].field, field("kana_family_name"));
        assert_eq!(
            d.keys,
            [field("kana_given_name"), field("kanji_given_name")]
        );
        // A key of another normalizer, a key that is not the partner's, or part tokens that
        // are not counted are refused.
        for (from, to, says) in [
            (
                r#"key = "kana_given_name""#,
                r#"key = "kanji_given_name""#,
                "another normalizer",
            ),
            (
                r#"key = "kana_given_name""#,
                r#"key = "kana_family_name""#,
                "encoded as",
            ),
            (
                r#"part_tokens = ["cmp_kanji_family""#,
                r#"part_tokens = ["cmp_sex""#,
                "earlier `tf` comparison",
            ),
        ] {
            let err = Schema::from_toml(&JP.replacen(from, to, 1))
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn digest_levels_take_u_from_earlier_comparisons() {
        const NDB: &str = include_str!("../../../../schemas/ndb.toml");
        let s = Schema::from_toml(NDB).unwrap();
        let sc = s.scoring.as_ref().unwrap();
        let at = |n: &str| sc.comparisons.iter().position(|c| c.name == n).unwrap();
        let id4 = &sc.comparisons[at("ndb_id4")];
        assert_eq!(
            id4.u_from,
            [(
                0,
                vec![(at("name"), 0b1111), (at("birth_date"), 1), (at("sex"), 1)]
            )]
        );
        assert_eq!(sc.comparisons[at("ndb_id1")].u_from.len(), 2);
        // Only a rare_agreement comparison, an exact recipe of it, earlier comparisons
        // without rare_agreement, and levels other than missing.
        for (from, to, says) in [
            (
                "name = \"ndb_id4\"\nexact = [\"ndb_id4\"]\nrare_agreement = true",
                "name = \"ndb_id4\"\nexact = [\"ndb_id4\"]",
                "needs `rare_agreement",
            ),
            (
                "recipe = \"ndb_id4\"",
                "recipe = \"ndb_id1\"",
                "not one of this comparison's exact recipes",
            ),
            (
                "{ comparison = \"sex\", levels = [0] }]\n\n",
                "{ comparison = \"ndb_id1\", levels = [0] }]\n\n",
                "without rare_agreement",
            ),
            (
                "{ comparison = \"name\", levels = [0, 1, 2, 3] }",
                "{ comparison = \"name\", levels = [9] }",
                "other than missing",
            ),
        ] {
            let text = NDB.replacen(from, to, 1);
            assert_ne!(text, NDB, "{from}");
            let err = Schema::from_toml(&text).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn unknown_key_is_refused_with_line() {
        let bad = GOOD.replace("version = 3", "version = 3\ncolour = \"red\"");
        let msg = Schema::from_toml(&bad).unwrap_err().to_string();
        assert!(msg.contains("colour") && msg.contains("line 5"), "{msg}");
    }

    #[test]
    fn content_cannot_be_identifier() {
        let bad = GOOD.replace(r#"columns = ["diagnosis"]"#, r#"columns = ["birth"]"#);
        let err = Schema::from_toml(&bad).unwrap_err().to_string();
        assert!(
            err.contains("content.columns[0]") && err.contains("identifier"),
            "{err}"
        );
    }

    #[test]
    fn content_cannot_be_the_id_column() {
        let bad = GOOD.replace(r#"columns = ["diagnosis"]"#, r#"columns = ["id"]"#);
        let err = Schema::from_toml(&bad).unwrap_err().to_string();
        assert!(
            err.contains("content.columns[0]") && err.contains("id column"),
            "{err}"
        );
    }

    #[test]
    fn block_recipes_need_clk() {
        let bad = GOOD.replace(
            "fields = [\"name\", \"dob\"]",
            "fields = [\"name\", \"dob\"]\nlink = \"block\"",
        );
        let err = Schema::from_toml(&bad).unwrap_err().to_string();
        assert!(
            err.contains("recipes[0].link") && err.contains("[clk]"),
            "{err}"
        );
        let ok =
            format!("{bad}\n[clk]\nthreshold = 0.8\n[[clk.features]]\nfield = \"name\"\nk = 10\n");
        let s = Schema::from_toml(&ok).unwrap();
        assert_eq!(s.recipes[0].link, LinkMode::Block);
        assert_eq!(s.clk.as_ref().unwrap().bits, 1024);
    }

    #[test]
    fn unknown_normalizer_is_refused() {
        let bad = GOOD.replace(r#"normalizer = "date""#, r#"normalizer = "dat""#);
        let err = Schema::from_toml(&bad).unwrap_err().to_string();
        assert!(err.contains("dat") && err.contains("line 12"), "{err}");
    }

    #[test]
    fn full_column_and_part_are_checked() {
        let with = |field: &str| GOOD.replace("[fields.dob]", &format!("{field}\n\n[fields.dob]"));
        let ok = with(
            "[fields.given]\ncolumns = [\"f\", \"g\"]\nnormalizer = \"kana_name\"\nfull_column = \"whole\"\npart = \"given\"\n[fields.full]\ncolumns = [\"f\", \"g\"]\nnormalizer = \"kana_name\"\nfull_column = \"whole\"",
        );
        let s = Schema::from_toml(&ok).unwrap();
        let given = s.fields.iter().find(|f| f.name == "given").unwrap();
        assert_eq!(given.part, Some(NamePart::Given));
        assert_eq!(given.full_column.as_deref(), Some("whole"));
        assert!(s.identifier_columns().contains(&"whole"));
        for (field, want) in [
            (
                "[fields.given]\ncolumn = \"g\"\nnormalizer = \"kana_name\"\nfull_column = \"whole\"",
                "`part`",
            ),
            (
                "[fields.given]\ncolumn = \"g\"\nnormalizer = \"kana_name\"\npart = \"given\"",
                "two columns",
            ),
            (
                "[fields.given]\ncolumns = [\"f\", \"g\"]\nnormalizer = \"kana_name\"\npart = \"middle\"",
                "\"middle\"",
            ),
            (
                "[fields.given]\ncolumns = [\"f\", \"g\"]\nnormalizer = \"kana_name\"\nfull_column = \"f\"\npart = \"given\"",
                "must differ",
            ),
        ] {
            let err = Schema::from_toml(&with(field)).unwrap_err().to_string();
            assert!(err.contains(want), "{field}: {err}");
        }
        // A content column may not be the whole-name column.
        let bad = ok.replace(r#"columns = ["diagnosis"]"#, r#"columns = ["whole"]"#);
        let err = Schema::from_toml(&bad).unwrap_err().to_string();
        assert!(err.contains("identifier"), "{err}");
    }
}
