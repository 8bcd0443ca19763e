//! The attack self-test (SPEC.md §7.5): what an honest-but-curious linkage unit (LU) learns
//! from the tokens and CLKs it receives, with no key, given a reference plaintext database
//! of similar distribution.
//!
//! Deterministic (no RNG, no clock); the same inputs give the same report. The stages:
//!
//! - **A. Frequency alignment per recipe** ([`freq`]), block recipes included: the match-key
//!   attack of Vidanage, Ranbaduge, Christen and Randall (IJPDS 5(1), 2020). The LU ranks
//!   each recipe's tokens by count, the attacker ranks the reference preimages by count, and a
//!   token is labelled only where both counts are separated from their rank neighbours by
//!   more than Poisson noise (3σ) and agree with each other within 3σ.
//! - **B. Adaptive steps** ([`mining`]): undo `balance` by pairing complementary columns
//!   (renketsu's `balance` is one permutation per project, SPEC.md §7.3), keeping the sparser
//!   column of each pair.
//! - **C. Pattern mining of CLK columns** ([`mining`]), after Christen, Vidanage, Ranbaduge and
//!   Schnell (PAKDD 2018; ICDE 2019; IEEE TKDE 31(11), 2019): sets of columns that co-occur
//!   far beyond independence are grown into cliques (one per frequent q-gram or positional
//!   character), then aligned with the reference's q-grams, first by frequency alone where it
//!   is unambiguous, then by their co-occurrence profiles with the q-grams already aligned
//!   (the conditional frequencies that the partition recursion of the published attack uses),
//!   which also labels tokens of equal frequency (sex, by the names that go with it). With
//!   clkhash double hashing the tokens are read off each filter instead, as the arithmetic
//!   progressions of set bits that double hashing makes (Kroll and Steinmetzer, BIOSTEC 2015).
//! - **D. Re-identification by set consistency** ([`reident`]): a record's value of a field
//!   is guessed when exactly one distinct reference value has the record's pattern of present
//!   and absent aligned q-grams (1-to-1), or from a labelled recipe token.
//!
//! With the holders' plaintext as truth, the report scores itself: `reidentified` counts the
//! records whose kana full name **and** birth date (the identity attributes of the model) are
//! both guessed correctly, 1-to-1.
//!
//! Published attack code was read for the specification only; this is a clean-room
//! implementation.

mod families;
mod freq;
mod mining;
mod reident;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::NormalizeContext;
use crate::clk::ClkhashSchema;
use crate::clk::clkhash_schema::{Comparison, HashFunction, Strategy};
use crate::normalize::Normalizer;
use crate::schema::{LinkMode, Schema};
use crate::tokenizer::{RecordTokens, Tokenizer};

/// Errors of the attack.
#[derive(Debug, thiserror::Error)]
pub enum AttackError {
    /// The inputs do not fit together (message names what, never a value).
    #[error("{0}")]
    Input(String),
}

/// One CLK feature as the attacker models it from the public encoding parameters
/// (Kerckhoffs: the schema is known to the LU, its digest is in every token-file header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureModel {
    /// Feature name (schema field or clkhash identifier).
    pub name: String,
    /// Plaintext slot whose value the feature encodes.
    pub slot: usize,
    /// q of the q-grams (1 = characters).
    pub q: usize,
    /// Positional characters (`"3:7"`).
    pub positional: bool,
    /// Bits set per token.
    pub k: u32,
    /// Salt: `(slot, characters)` (0 characters = the whole value).
    pub salt: Option<(usize, usize)>,
}

/// The CLK encoding as the attacker models it.
#[derive(Clone, Debug, PartialEq)]
pub struct ClkModel {
    /// Bits of the filters as the LU receives them (after folding and balancing).
    pub bits: usize,
    /// Features in order.
    pub features: Vec<FeatureModel>,
    /// XOR folding was applied.
    pub xor_fold: bool,
    /// Balancing was applied (undone by stage B).
    pub balance: bool,
    /// BLIP's ε, if any (decoding then tolerates one missing column per clique).
    pub blip_epsilon: Option<f64>,
    /// Every feature is hashed by clkhash's double hashing (`(a + i·b) mod l`, SPEC.md §7.1):
    /// a token's bits form an arithmetic progression, which stage C finds record by record.
    pub double_hash: bool,
}

/// One exact-token recipe as the attacker models it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipeModel {
    /// Recipe name.
    pub name: String,
    /// A block recipe (`link = "block"`).
    pub block: bool,
    /// Plaintext slots of its fields.
    pub slots: Vec<usize>,
}

/// A scored attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribute {
    /// Name in the report.
    pub name: String,
    /// The slot whose canonical value is compared with the truth.
    pub slot: usize,
    /// Slots whose guessed value (a reference record) gives the attribute, in order of
    /// preference: the slot itself and finer keys of the same columns.
    pub sources: Vec<usize>,
}

/// What an attacker knows of the encoding, and what the report scores.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// Names of the plaintext slots (schema fields, or clkhash feature identifiers).
    pub slots: Vec<String>,
    /// Recipes, in token-file order.
    pub recipes: Vec<RecipeModel>,
    /// The CLK, if the view has CLKs.
    pub clk: Option<ClkModel>,
    /// Scored attributes.
    pub attributes: Vec<Attribute>,
    /// Indices into [`Self::attributes`] that must all be correct for a record to count as
    /// re-identified.
    pub identity: Vec<usize>,
}

impl Model {
    /// The model of a renketsu schema. Attributes: `kana_name` (compared on the loosest kana
    /// field of the schema: `kana_name_loose`, else `kana_name_fuzzy`, else `kana_name`),
    /// `kanji_name`, `birth_date`, `sex`, `postal_code`, each where the schema has such a
    /// field; identity = kana name and birth date (those present).
    pub fn from_schema(schema: &Schema) -> Self {
        let slots = schema.fields.iter().map(|f| f.name.clone()).collect();
        let recipes = schema
            .recipes
            .iter()
            .map(|r| RecipeModel {
                name: r.name.clone(),
                block: r.link == LinkMode::Block,
                slots: r.fields.clone(),
            })
            .collect();
        let clk = schema.clk.as_ref().map(|c| {
            let mut bits = c.bits as usize;
            if c.hardening.xor_fold {
                bits /= 2;
            }
            if c.hardening.balance {
                bits *= 2;
            }
            ClkModel {
                bits,
                features: c
                    .features
                    .iter()
                    .map(|f| FeatureModel {
                        name: schema.fields[f.field].name.clone(),
                        slot: f.field,
                        q: f.q,
                        positional: f.positional,
                        k: f.k,
                        salt: f.salt.map(|s| (s.field, s.chars)),
                    })
                    .collect(),
                xor_fold: c.hardening.xor_fold,
                balance: c.hardening.balance,
                blip_epsilon: c.hardening.blip_epsilon,
                // Native CLKs place each token's bits by a keyed PRF: no progression.
                double_hash: false,
            }
        });
        let of_kind = |k: Normalizer| {
            schema
                .fields
                .iter()
                .enumerate()
                .filter(move |(_, f)| f.normalizer == k)
                .map(|(i, _)| i)
        };
        let mut attributes = Vec::new();
        let mut identity = Vec::new();
        let wanted: [(&str, &[Normalizer], bool); 5] = [
            (
                "kana_name",
                &[
                    Normalizer::KanaNameLoose,
                    Normalizer::KanaNameFuzzy,
                    Normalizer::KanaName,
                ],
                true,
            ),
            ("birth_date", &[Normalizer::BirthDate], true),
            ("sex", &[Normalizer::Sex], false),
            ("postal_code", &[Normalizer::PostalCode], false),
            ("kanji_name", &[Normalizer::KanjiName], false),
        ];
        for (name, kinds, id) in wanted {
            let sources: Vec<usize> = kinds.iter().flat_map(|&k| of_kind(k)).collect();
            if let Some(&slot) = sources.first() {
                if id {
                    identity.push(attributes.len());
                }
                attributes.push(Attribute {
                    name: name.to_owned(),
                    slot,
                    sources,
                });
            }
        }
        Self {
            slots,
            recipes,
            clk,
            attributes,
            identity,
        }
    }

    /// The model of a clkhash v3 schema (`renketsu clk encode`): one slot and one attribute
    /// per hashed n-gram feature, all of them identity attributes (the weak setting encodes
    /// the names only, so re-identified = every encoded value correct).
    ///
    /// # Errors
    /// [`AttackError::Input`] for a feature that is not an n-gram string feature.
    pub fn from_clkhash(schema: &ClkhashSchema) -> Result<Self, AttackError> {
        let mut slots = Vec::new();
        let mut features = Vec::new();
        for f in &schema.features {
            slots.push(f.identifier.clone());
            let Some(h) = &f.hashing else { continue };
            if f.ignored {
                continue;
            }
            let Comparison::Ngram(ng) = h.comparison else {
                return Err(AttackError::Input(format!(
                    "feature {}: only n-gram comparisons are modelled",
                    f.identifier
                )));
            };
            let k = match h.strategy {
                Strategy::BitsPerToken(k) => k,
                Strategy::BitsPerFeature(_) => {
                    return Err(AttackError::Input(format!(
                        "feature {}: bitsPerFeature is not modelled",
                        f.identifier
                    )));
                }
            };
            features.push(FeatureModel {
                name: f.identifier.clone(),
                slot: slots.len() - 1,
                q: ng.n as usize,
                positional: ng.positional,
                k,
                salt: None,
            });
        }
        let attributes: Vec<Attribute> = features
            .iter()
            .map(|f| Attribute {
                name: f.name.clone(),
                slot: f.slot,
                sources: vec![f.slot],
            })
            .collect();
        let identity = (0..attributes.len()).collect();
        let folds = schema.clk_config.xor_folds;
        let double_hash = schema
            .features
            .iter()
            .filter(|f| !f.ignored)
            .filter_map(|f| f.hashing.as_ref())
            .all(|h| matches!(h.hash, HashFunction::DoubleHash { .. }));
        Ok(Self {
            slots,
            recipes: Vec::new(),
            clk: Some(ClkModel {
                bits: schema.clk_config.l as usize,
                features,
                xor_fold: folds > 0,
                balance: false,
                blip_epsilon: None,
                double_hash,
            }),
            attributes,
            identity,
        })
    }
}

/// One plaintext record: a canonical value per slot and a preimage per recipe.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plain {
    /// Canonical value per slot (`None`: missing or rejected).
    pub values: Vec<Option<String>>,
    /// Preimage per recipe (SPEC.md §4.1), `None` where the recipe makes no token.
    pub preimages: Vec<Option<Vec<u8>>>,
}

/// Turns CSV rows into [`Plain`] records through a schema's normalizers (the attacker
/// normalizes its reference exactly as holders do).
pub struct PlainMaker {
    tokenizer: Tokenizer,
    binding: crate::tokenizer::Binding,
    rt: RecordTokens,
    recipes: usize,
}

impl PlainMaker {
    /// For rows under `header`.
    pub fn new(schema: &Schema, ctx: NormalizeContext, header: &[impl AsRef<str>]) -> Self {
        let tokenizer = Tokenizer::preimage_mode(schema, ctx);
        let binding = tokenizer.bind(header);
        Self {
            tokenizer,
            binding,
            rt: RecordTokens::default(),
            recipes: schema.recipes.len(),
        }
    }

    /// The plaintext of one row (`row` = every column of the header).
    pub fn make(&mut self, row: &[&str]) -> Plain {
        let raw: Vec<&str> = self
            .binding
            .columns
            .iter()
            .map(|&c| row.get(c).copied().unwrap_or(""))
            .collect();
        self.tokenizer.tokenize(&self.binding, &raw, &mut self.rt);
        let values = self
            .rt
            .values
            .iter()
            .zip(&self.rt.status)
            .map(|(v, s)| matches!(s, Some(Ok(()))).then(|| v.clone()))
            .collect();
        let mut preimages = vec![None; self.recipes];
        for (r, p) in self.rt.preimages() {
            if preimages[r].is_none() {
                preimages[r] = Some(p.to_vec());
            }
        }
        Plain { values, preimages }
    }
}

/// What the LU holds: every holder's records pooled.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// Exact tokens per record: `(recipe index, token)`.
    pub tokens: Vec<Vec<(u32, [u8; 32])>>,
    /// CLK words per record (all of one length), if any.
    pub clks: Option<Vec<Vec<u64>>>,
}

impl View {
    /// Records in the view.
    pub fn len(&self) -> usize {
        self.tokens
            .len()
            .max(self.clks.as_ref().map_or(0, Vec::len))
    }

    /// Whether the view has no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Counts of one attribute.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AttributeScore {
    /// Records with a 1-to-1 guess.
    pub guessed: usize,
    /// Guessed correctly (with truth).
    pub correct: Option<usize>,
    /// `correct / records`.
    pub correct_share: Option<f64>,
}

/// Stage A on one recipe.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RecipeScore {
    /// A block recipe.
    pub block: bool,
    /// Distinct tokens in the view.
    pub distinct_tokens: usize,
    /// Tokens labelled with a preimage.
    pub labelled_tokens: usize,
    /// Records carrying a labelled token.
    pub labelled_records: usize,
    /// `labelled_records / records`.
    pub labelled_share: f64,
    /// Records whose labelled token is labelled with their own preimage (with truth).
    pub correct_records: Option<usize>,
    /// `correct_records / records`.
    pub correct_share: Option<f64>,
}

/// Stages B and C on the CLK.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ClkScore {
    /// Columns received.
    pub columns: usize,
    /// Complementary column pairs found (stage B; `balance` only).
    pub complementary_pairs: usize,
    /// Columns mined after stage B (constant columns dropped).
    pub mined_columns: usize,
    /// Column cliques grown.
    pub cliques: usize,
    /// Cliques whose records mostly (≥ 90 %) share one true token (with truth): how well
    /// the columns were grouped, before alignment.
    pub pure_cliques: Option<usize>,
    /// Reference position families (one per position of a positional feature, and sex)
    /// matched by a family of mutually exclusive cliques (stage C2).
    pub families: usize,
    /// Cliques aligned with a reference token.
    pub aligned: usize,
    /// Aligned cliques whose records mostly carry that token (with truth): a clique counts
    /// when ≥ 90 % of its records have the token.
    pub aligned_correct: Option<usize>,
    /// Per feature: record-token occurrences whose token was aligned correctly, as a share
    /// of all record-token occurrences of the feature (with truth).
    pub token_recovery: BTreeMap<String, f64>,
    /// Per position of a positional feature (`"birth_date[3]"`, positions from 1) and per
    /// one-token feature (`"sex"`): the share of the records with a value there whose token
    /// was aligned correctly (with truth).
    pub position_recovery: BTreeMap<String, f64>,
}

/// The attack's result.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AttackReport {
    /// Records in the view.
    pub records: usize,
    /// Reference records (the attacker's plaintext).
    pub reference_records: usize,
    /// Records whose identity attributes are all guessed correctly, 1-to-1 (with truth).
    pub reidentified: Option<usize>,
    /// `reidentified / records`.
    pub reidentified_share: Option<f64>,
    /// The identity attributes.
    pub identity: Vec<String>,
    /// Per attribute.
    pub per_attribute: BTreeMap<String, AttributeScore>,
    /// Stage A per recipe.
    pub per_recipe: BTreeMap<String, RecipeScore>,
    /// Stages B and C.
    pub clk: Option<ClkScore>,
}

/// Runs stages A to D.
///
/// `truth`, if given, holds one plaintext per view record (same order) and makes the report
/// score itself; it is never used by the attack.
///
/// # Errors
/// [`AttackError::Input`] when the view's CLK length differs from the model's, the truth
/// does not have one record per view record, or a plaintext has the wrong number of slots.
pub fn run(
    model: &Model,
    view: &View,
    reference: &[Plain],
    truth: Option<&[Plain]>,
) -> Result<AttackReport, AttackError> {
    let n = view.len();
    if let Some(t) = truth
        && t.len() != n
    {
        return Err(AttackError::Input(format!(
            "{} truth records for {n} view records",
            t.len()
        )));
    }
    for p in reference.iter().chain(truth.unwrap_or(&[])) {
        if p.values.len() != model.slots.len() {
            return Err(AttackError::Input(format!(
                "a plaintext record has {} values, the model {} slots",
                p.values.len(),
                model.slots.len()
            )));
        }
    }
    // guesses[slot][record] = index of a reference record with the guessed value.
    let mut guesses: Vec<Vec<Option<u32>>> = vec![vec![None; n]; model.slots.len()];
    let mut report = AttackReport {
        records: n,
        reference_records: reference.len(),
        identity: model
            .identity
            .iter()
            .map(|&i| model.attributes[i].name.clone())
            .collect(),
        ..AttackReport::default()
    };
    for (r, recipe) in model.recipes.iter().enumerate() {
        let score = freq::align_recipe(r, recipe, view, reference, truth, &mut guesses);
        report.per_recipe.insert(recipe.name.clone(), score);
    }
    if let (Some(clk), Some(clks)) = (&model.clk, &view.clks) {
        if let Some(first) = clks.first()
            && first.len() * 64 != clk.bits
        {
            return Err(AttackError::Input(format!(
                "the view's CLKs have {} bits, the model {}",
                first.len() * 64,
                clk.bits
            )));
        }
        let mined = mining::mine(clk, clks, reference);
        report.clk = Some(reident::decode(clk, &mined, reference, truth, &mut guesses));
    }
    reident::score(model, reference, truth, &guesses, &mut report);
    Ok(report)
}
