//! Record → normalized fields → exact tokens, for every recipe of a schema.
//!
//! A [`Tokenizer`] is compiled once per run (schema + recipe keys); a [`Binding`] is made per
//! input from its header: it says which columns to read and which recipes that input can
//! make — from raw identifiers, or, for prehash recipes, from a digest column of a hash-only
//! holder (SPEC.md §4.4).

use sha2::{Digest as _, Sha256};

use crate::normalize::{FieldReject, NormalizeContext, Normalizer, is_space, kana};
use crate::schema::{PrehashVariant, Schema};
use crate::secret::ProjectSecret;
use crate::token::{KeyedRecipe, RecipeKey, Token, put_value};

/// Field name of the single value of a prehash recipe's preimage (SPEC.md §4.4).
pub const PREHASH_FIELD: &str = "digest";

/// A schema compiled with its recipe keys: turns raw identifier values into tokens.
///
/// Cheap to share across threads (`Sync`); each thread keeps its own [`RecordTokens`].
#[derive(Clone)]
pub struct Tokenizer {
    schema: Schema,
    keyed: Vec<KeyedRecipe>,
    ctx: NormalizeContext,
}

/// Where one recipe's tokens come from in a given input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecipeSource {
    /// From the normalized fields (the usual case).
    Fields,
    /// From the legacy preimage of raw fields (a prehash recipe, raw holder).
    Prehash,
    /// From a digest column (a prehash recipe, hash-only holder); the index into
    /// [`Binding::columns`].
    Digest(usize),
    /// The input lacks a column the recipe needs.
    Unavailable,
}

/// How one input's columns feed the tokenizer.
#[derive(Clone, Debug)]
pub struct Binding {
    /// Header indices to read, in order; `tokenize` takes one raw value per entry.
    pub columns: Vec<usize>,
    /// Per schema field: positions in `columns` of its source columns, or `None` when the
    /// input lacks one of them.
    pub fields: Vec<Option<Vec<usize>>>,
    /// Per recipe: where its tokens come from.
    pub recipes: Vec<RecipeSource>,
}

impl Binding {
    /// Whether the input can make at least one linking recipe.
    pub fn any_recipe(&self) -> bool {
        self.recipes.iter().any(|r| *r != RecipeSource::Unavailable)
    }
}

/// Per-record scratch space and result of [`Tokenizer::tokenize`]; reuse it across records.
#[derive(Debug, Default)]
pub struct RecordTokens {
    /// Normalized value of each schema field (empty when rejected or unavailable).
    pub values: Vec<String>,
    /// Outcome of each field's normalizer, in schema field order; `None` when the input lacks
    /// the field's columns.
    pub status: Vec<Option<Result<(), FieldReject>>>,
    /// `(recipe index, token)` for every token made; a prehash recipe with variants can make
    /// several tokens.
    pub tokens: Vec<(usize, Token)>,
    tail: Vec<u8>,
    joined: String,
    parts: Vec<String>,
    legacy: Vec<String>,
    preimages: Vec<String>,
}

impl Tokenizer {
    /// Compiles `schema` for `project`, deriving one key per recipe from `secret`
    /// (SPEC.md §4.2).
    pub fn new(
        schema: &Schema,
        secret: &ProjectSecret,
        project: &str,
        ctx: NormalizeContext,
    ) -> Self {
        let keyed = schema
            .recipes
            .iter()
            .map(|r| {
                let key = RecipeKey::derive(secret, project, &r.name, r.version);
                if r.prehash.is_some() {
                    KeyedRecipe::new(&key, &r.name, r.version, [PREHASH_FIELD].into_iter())
                } else {
                    KeyedRecipe::new(
                        &key,
                        &r.name,
                        r.version,
                        r.fields.iter().map(|&f| schema.fields[f].name.as_str()),
                    )
                }
            })
            .collect();
        Self {
            schema: schema.clone(),
            keyed,
            ctx,
        }
    }

    /// The schema this tokenizer was compiled from.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Binds an input header: which columns to read and which recipes are available.
    pub fn bind(&self, header: &[impl AsRef<str>]) -> Binding {
        let pos = |name: &str| header.iter().position(|h| h.as_ref() == name);
        let mut columns: Vec<usize> = Vec::new();
        let mut slot = |h: usize| match columns.iter().position(|&c| c == h) {
            Some(i) => i,
            None => {
                columns.push(h);
                columns.len() - 1
            }
        };
        let fields: Vec<Option<Vec<usize>>> = self
            .schema
            .fields
            .iter()
            .map(|f| {
                let hs: Option<Vec<usize>> = f.columns.iter().map(|c| pos(c)).collect();
                hs.map(|hs| hs.into_iter().map(&mut slot).collect())
            })
            .collect();
        let recipes = self
            .schema
            .recipes
            .iter()
            .map(|r| {
                let have_fields = r.fields.iter().all(|&f| fields[f].is_some());
                match &r.prehash {
                    None if have_fields => RecipeSource::Fields,
                    None => RecipeSource::Unavailable,
                    Some(_) if have_fields => RecipeSource::Prehash,
                    Some(p) => match p.digest_column.as_deref().and_then(pos) {
                        Some(h) => RecipeSource::Digest(slot(h)),
                        None => RecipeSource::Unavailable,
                    },
                }
            })
            .collect();
        Binding {
            columns,
            fields,
            recipes,
        }
    }

    /// Normalizes the raw values (one per [`Binding::columns`] entry) and makes the token of
    /// every available recipe whose fields are all usable. A recipe with a missing or
    /// rejected field yields no token (never a token of an empty value).
    ///
    /// # Panics
    /// If `raw.len()` differs from `binding.columns.len()`.
    pub fn tokenize(&self, binding: &Binding, raw: &[&str], out: &mut RecordTokens) {
        assert_eq!(
            raw.len(),
            binding.columns.len(),
            "one raw value per bound column"
        );
        let n = self.schema.fields.len();
        out.values.resize_with(n, String::new);
        out.status.clear();
        out.tokens.clear();
        for (i, f) in self.schema.fields.iter().enumerate() {
            let Some(slots) = &binding.fields[i] else {
                out.values[i].clear();
                out.status.push(None);
                continue;
            };
            let st = if f.any_order {
                normalize_any_order(
                    f.normalizer,
                    slots,
                    raw,
                    &self.ctx,
                    &mut out.parts,
                    &mut out.values[i],
                )
            } else if slots.len() == 1 {
                f.normalizer
                    .apply(raw[slots[0]], &self.ctx, &mut out.values[i])
            } else {
                out.joined.clear();
                let mut missing = false;
                for &s in slots {
                    missing |= raw[s].chars().all(is_space);
                    out.joined.push_str(raw[s]);
                }
                if missing {
                    out.values[i].clear();
                    Err(FieldReject::Missing)
                } else {
                    f.normalizer
                        .apply(&out.joined, &self.ctx, &mut out.values[i])
                }
            };
            out.status.push(Some(st));
        }
        for (r, spec) in self.schema.recipes.iter().enumerate() {
            match binding.recipes[r] {
                RecipeSource::Unavailable => {}
                RecipeSource::Fields => {
                    if spec
                        .fields
                        .iter()
                        .any(|&f| !matches!(out.status[f], Some(Ok(()))))
                    {
                        continue;
                    }
                    out.tail.clear();
                    for &f in &spec.fields {
                        put_value(&mut out.tail, &out.values[f]);
                    }
                    out.tokens
                        .push((r, self.keyed[r].token_from_tail(&out.tail)));
                }
                RecipeSource::Digest(slot) => {
                    out.joined.clear();
                    if Normalizer::Digest
                        .apply(raw[slot], &self.ctx, &mut out.joined)
                        .is_ok()
                    {
                        out.tail.clear();
                        put_value(&mut out.tail, &out.joined);
                        out.tokens
                            .push((r, self.keyed[r].token_from_tail(&out.tail)));
                    }
                }
                RecipeSource::Prehash => self.prehash_tokens(r, binding, raw, out),
            }
        }
    }

    /// Tokens of a prehash recipe from raw fields: the legacy preimage (and its variants),
    /// SHA-256, lower-case hex, then the recipe's keyed hash (SPEC.md §4.4).
    fn prehash_tokens(&self, r: usize, binding: &Binding, raw: &[&str], out: &mut RecordTokens) {
        let spec = &self.schema.recipes[r];
        let prehash = spec.prehash.as_ref().expect("prehash recipe");
        out.legacy.resize_with(spec.fields.len(), String::new);
        for (k, &f) in spec.fields.iter().enumerate() {
            let field = &self.schema.fields[f];
            let value = &mut out.legacy[k];
            value.clear();
            let ok = match field.normalizer {
                // Dates and sex take their canonical forms: YYYYMMDD and 1/2.
                Normalizer::BirthDate | Normalizer::Date => {
                    matches!(out.status[f], Some(Ok(()))) && {
                        value.extend(out.values[f].chars().filter(|c| *c != '-'));
                        true
                    }
                }
                Normalizer::Sex => {
                    matches!(out.status[f], Some(Ok(())))
                        && matches!(out.values[f].as_str(), "1" | "2")
                        && {
                            value.push_str(&out.values[f]);
                            true
                        }
                }
                // Everything else: the record's own raw value, legacy-canonicalized.
                _ => {
                    let slots = binding.fields[f].as_ref().expect("bound");
                    out.joined.clear();
                    for &s in slots {
                        out.joined.push_str(raw[s]);
                    }
                    match Normalizer::Legacy.apply(&out.joined, &self.ctx, value) {
                        Ok(()) => true,
                        Err(_) => prehash.optional.contains(&f),
                    }
                }
            };
            if !ok {
                return;
            }
        }
        out.preimages.clear();
        let base = out.legacy[..spec.fields.len()].join("|");
        out.preimages.push(base);
        if prehash.variants.contains(&PrehashVariant::KanaScript) {
            let base = &out.preimages[0];
            let kata: String = base.chars().map(kana::to_katakana).collect();
            let hira: String = base.chars().map(kana::to_hiragana).collect();
            out.preimages.push(kata);
            out.preimages.push(hira);
        }
        if prehash.variants.contains(&PrehashVariant::StripHyphens) {
            let stripped: Vec<String> = out
                .preimages
                .iter()
                .map(|p| {
                    p.chars()
                        .filter(|&c| !matches!(c, '-' | '‐' | '−' | '－'))
                        .collect()
                })
                .collect();
            out.preimages.extend(stripped);
        }
        out.preimages.sort_unstable();
        out.preimages.dedup();
        for p in &out.preimages {
            let digest = Sha256::digest(p.as_bytes());
            out.joined.clear();
            for b in digest {
                out.joined
                    .push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
                out.joined
                    .push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
            }
            out.tail.clear();
            put_value(&mut out.tail, &out.joined);
            out.tokens
                .push((r, self.keyed[r].token_from_tail(&out.tail)));
        }
    }
}

/// `order = "any"`: normalize each part, sort, join with one space.
fn normalize_any_order(
    norm: Normalizer,
    slots: &[usize],
    raw: &[&str],
    ctx: &NormalizeContext,
    parts: &mut Vec<String>,
    out: &mut String,
) -> Result<(), FieldReject> {
    out.clear();
    let mut pieces: Vec<&str> = Vec::with_capacity(4);
    if slots.len() == 1 {
        pieces.extend(raw[slots[0]].split(is_space).filter(|p| !p.is_empty()));
    } else {
        for &s in slots {
            if raw[s].chars().all(is_space) {
                return Err(FieldReject::Missing);
            }
            pieces.push(raw[s]);
        }
    }
    if pieces.is_empty() {
        return Err(FieldReject::Missing);
    }
    parts.resize_with(pieces.len().max(parts.len()), String::new);
    for (p, buf) in pieces.iter().zip(parts.iter_mut()) {
        norm.apply(p, ctx, buf)?;
    }
    let parts = &mut parts[..pieces.len()];
    parts.sort_unstable();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(p);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
