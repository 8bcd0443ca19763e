//! Record → normalized fields → exact tokens, for every recipe of a schema.
//!
//! A [`Tokenizer`] is compiled once per run (schema + recipe keys); a [`Binding`] is made per
//! input from its header: it says which columns to read and which recipes that input can
//! make — from raw identifiers, or, for prehash recipes, from a digest column of a hash-only
//! holder (SPEC.md §4.4).

use sha2::{Digest as _, Sha256};

use crate::normalize::{
    FieldReject, NormalizeContext, Normalizer, birth_date_neighbours, is_space, kana,
};
use crate::schema::{NamePart, PrehashVariant, Schema};
use crate::secret::ProjectSecret;
use crate::token::{KeyedRecipe, RecipeKey, Token, preimage_head, put_value};

/// A whole-preimage spelling rewrite of a prehash variant.
type Rewrite = fn(&str) -> String;

/// Field name of the single value of a prehash recipe's preimage (SPEC.md §4.4).
pub const PREHASH_FIELD: &str = "digest";

/// A schema compiled with its recipe keys: turns raw identifier values into tokens.
///
/// Cheap to share across threads (`Sync`); each thread keeps its own [`RecordTokens`].
#[derive(Clone)]
pub struct Tokenizer {
    schema: Schema,
    output: Output,
    ctx: NormalizeContext,
}

/// What a [`Tokenizer`] makes of each recipe's canonical preimage.
#[derive(Clone)]
enum Output {
    /// HMAC-SHA256 tokens (SPEC.md §4.2): one keyed recipe per schema recipe.
    Hmac(Vec<KeyedRecipe>),
    /// The preimages themselves (SPEC.md §4.1), for a keyed function evaluated elsewhere
    /// (the custodian's OPRF): the constant head of each recipe.
    Preimage(Vec<Vec<u8>>),
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
    /// Per schema field: whether it reads its `full_column` (the input lacks the split
    /// columns; SPEC.md §2.2).
    pub from_full: Vec<bool>,
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
    /// Preimage mode ([`Tokenizer::preimage_mode`]): `(recipe index, byte range in
    /// [`Self::preimage_bytes`])` of every preimage made, in the order HMAC mode makes its
    /// tokens. Empty in HMAC mode.
    pub preimage_spans: Vec<(usize, std::ops::Range<usize>)>,
    /// Preimage mode: the preimages, back to back (see [`Self::preimage_spans`]).
    pub preimage_bytes: Vec<u8>,
    tail: Vec<u8>,
    joined: String,
    parts: Vec<String>,
    legacy: Vec<String>,
}

impl RecordTokens {
    /// Preimage mode: `(recipe index, canonical preimage)` of every recipe made (SPEC.md
    /// §4.1; `HMAC-SHA256(K_recipe, preimage)` is the HMAC mode's token).
    pub fn preimages(&self) -> impl ExactSizeIterator<Item = (usize, &[u8])> {
        self.preimage_spans
            .iter()
            .map(|(r, span)| (*r, &self.preimage_bytes[span.clone()]))
    }

    /// The recipe index of every token (HMAC mode) or preimage (preimage mode), in order.
    pub fn recipes_made(&self) -> impl Iterator<Item = usize> + '_ {
        self.tokens
            .iter()
            .map(|(r, _)| *r)
            .chain(self.preimage_spans.iter().map(|(r, _)| *r))
    }
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
            output: Output::Hmac(keyed),
            ctx,
        }
    }

    /// Compiles `schema` without keys: [`Self::tokenize`] then fills
    /// [`RecordTokens::preimage_spans`] with each recipe's canonical preimage (SPEC.md §4.1,
    /// prehash recipes and their variants included) instead of tokens, exactly the bytes the
    /// HMAC mode hashes. The custodian mode evaluates an OPRF on them.
    pub fn preimage_mode(schema: &Schema, ctx: NormalizeContext) -> Self {
        let heads = schema
            .recipes
            .iter()
            .map(|r| {
                if r.prehash.is_some() {
                    preimage_head(&r.name, r.version, [PREHASH_FIELD].into_iter())
                } else {
                    preimage_head(
                        &r.name,
                        r.version,
                        r.fields.iter().map(|&f| schema.fields[f].name.as_str()),
                    )
                }
            })
            .collect();
        Self {
            schema: schema.clone(),
            output: Output::Preimage(heads),
            ctx,
        }
    }

    /// Whether this tokenizer emits preimages ([`Self::preimage_mode`]) instead of tokens.
    pub fn is_preimage_mode(&self) -> bool {
        matches!(self.output, Output::Preimage(_))
    }

    /// Emits recipe `r`'s token (or preimage) of the value tail in `out.tail`.
    #[inline]
    fn emit(&self, r: usize, out: &mut RecordTokens) {
        match &self.output {
            Output::Hmac(keyed) => out.tokens.push((r, keyed[r].token_from_tail(&out.tail))),
            Output::Preimage(heads) => {
                let start = out.preimage_bytes.len();
                out.preimage_bytes.extend_from_slice(&heads[r]);
                out.preimage_bytes.extend_from_slice(&out.tail);
                out.preimage_spans
                    .push((r, start..out.preimage_bytes.len()));
            }
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
        let mut from_full = vec![false; self.schema.fields.len()];
        let fields: Vec<Option<Vec<usize>>> = self
            .schema
            .fields
            .iter()
            .zip(&mut from_full)
            .map(|(f, full)| {
                let hs: Option<Vec<usize>> = f.columns.iter().map(|c| pos(c)).collect();
                let hs = hs.or_else(|| {
                    let h = pos(f.full_column.as_deref()?)?;
                    *full = true;
                    Some(vec![h])
                });
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
            from_full,
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
        out.preimage_spans.clear();
        out.preimage_bytes.clear();
        for (i, f) in self.schema.fields.iter().enumerate() {
            let Some(slots) = &binding.fields[i] else {
                out.values[i].clear();
                out.status.push(None);
                continue;
            };
            let st = if let Some(part) = f.part {
                name_part(
                    f.normalizer,
                    part,
                    slots,
                    raw,
                    &self.ctx,
                    &mut out.values[i],
                )
            } else if f.any_order {
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
                // Several columns (family, given): joined with one space. A full name typed
                // into one of them with the others empty still counts, but one name part
                // alone is missing, never a token of a family name only.
                out.joined.clear();
                let mut pieces = 0;
                for &s in slots {
                    pieces += raw[s].split(is_space).filter(|p| !p.is_empty()).count();
                    if !out.joined.is_empty() {
                        out.joined.push(' ');
                    }
                    out.joined.push_str(raw[s]);
                }
                if pieces < 2 {
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
                    self.emit(r, out);
                }
                RecipeSource::Digest(slot) => {
                    out.joined.clear();
                    if Normalizer::Digest
                        .apply(raw[slot], &self.ctx, &mut out.joined)
                        .is_ok()
                    {
                        out.tail.clear();
                        put_value(&mut out.tail, &out.joined);
                        self.emit(r, out);
                    }
                }
                RecipeSource::Prehash => self.prehash_tokens(r, binding, raw, out),
            }
        }
    }

    /// Tokens of a prehash recipe from raw fields: the legacy preimage (and its variants),
    /// SHA-256, lower-case hex, then the recipe's keyed hash (SPEC.md §4.4).
    ///
    /// Variants are built in two steps: per-field candidate values (name order, optional
    /// field empty, insurer and branch forms; with `date_neighbours`, the date's neighbours
    /// instead of the date), whose combinations give preimages; then
    /// whole-preimage rewrites (kana script, hyphens, long vowels, small kana, voicing), each
    /// applied to every preimage so far. All are deduplicated.
    fn prehash_tokens(&self, r: usize, binding: &Binding, raw: &[&str], out: &mut RecordTokens) {
        let spec = &self.schema.recipes[r];
        let prehash = spec.prehash.as_ref().expect("prehash recipe");
        let has = |v: PrehashVariant| prehash.variants.contains(&v);
        let mut candidates: Vec<Vec<String>> = Vec::with_capacity(spec.fields.len());
        for &f in &spec.fields {
            let field = &self.schema.fields[f];
            let ok = matches!(out.status[f], Some(Ok(())));
            let mut cands: Vec<String> = Vec::with_capacity(2);
            match field.normalizer {
                // Dates and sex take their canonical forms: YYYYMMDD and 1/2.
                Normalizer::BirthDate | Normalizer::Date if ok => {
                    let own: String = out.values[f].chars().filter(|c| *c != '-').collect();
                    if prehash.date_neighbours {
                        birth_date_neighbours(&own, self.ctx.today, &mut cands);
                    } else {
                        cands.push(own);
                    }
                }
                Normalizer::Sex if ok && matches!(out.values[f].as_str(), "1" | "2") => {
                    cands.push(out.values[f].clone());
                }
                // Not recorded (empty, no column, or 0/9): each sex, with `sex_unknown`.
                Normalizer::Sex
                    if has(PrehashVariant::SexUnknown)
                        && match &out.status[f] {
                            None | Some(Err(FieldReject::Missing)) => true,
                            Some(Ok(())) => matches!(out.values[f].as_str(), "0" | "9"),
                            Some(Err(_)) => false,
                        } =>
                {
                    cands.extend(["1".to_owned(), "2".to_owned()]);
                }
                Normalizer::BirthDate | Normalizer::Date | Normalizer::Sex => {}
                // Everything else: the record's own raw value, legacy-canonicalized.
                _ => {
                    let slots = binding.fields[f].as_ref().expect("bound");
                    let mut legacy_of = |order: &mut dyn Iterator<Item = &usize>| {
                        out.joined.clear();
                        for &s in order {
                            out.joined.push_str(raw[s]);
                        }
                        let mut v = String::new();
                        Normalizer::Legacy
                            .apply(&out.joined, &self.ctx, &mut v)
                            .ok()
                            .map(|()| v)
                    };
                    if let Some(v) = legacy_of(&mut slots.iter()) {
                        cands.push(v);
                        if has(PrehashVariant::NameOrder) && slots.len() > 1 {
                            cands.extend(legacy_of(&mut slots.iter().rev()));
                        }
                        if has(PrehashVariant::OptionalEmpty) && prehash.optional.contains(&f) {
                            cands.push(String::new());
                        }
                    } else if prehash.optional.contains(&f) {
                        cands.push(String::new());
                    }
                    if has(PrehashVariant::InsurerForms)
                        && field.normalizer == Normalizer::InsurerNumber
                    {
                        let forms: Vec<String> = cands
                            .iter()
                            .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
                            .filter_map(|c| match c.len() {
                                6 => Some(format!("00{c}")),
                                8 if c.starts_with("00") => Some(c[2..].to_owned()),
                                _ => None,
                            })
                            .collect();
                        cands.extend(forms);
                    }
                    if has(PrehashVariant::BranchForms)
                        && field.normalizer == Normalizer::BranchNumber
                    {
                        let forms: Vec<String> = cands
                            .iter()
                            .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
                            .filter_map(|c| match c.len() {
                                2 if c.starts_with('0') => Some(c[1..].to_owned()),
                                1 => Some(format!("0{c}")),
                                _ => None,
                            })
                            .collect();
                        cands.extend(forms);
                    }
                }
            }
            if cands.is_empty() {
                return;
            }
            candidates.push(cands);
        }
        // Every combination of one candidate per field.
        out.legacy.clear();
        let mut pick = vec![0usize; candidates.len()];
        loop {
            let p: Vec<&str> = candidates
                .iter()
                .zip(&pick)
                .map(|(c, &i)| c[i].as_str())
                .collect();
            out.legacy.push(p.join("|"));
            let mut k = 0;
            while k < pick.len() {
                pick[k] += 1;
                if pick[k] < candidates[k].len() {
                    break;
                }
                pick[k] = 0;
                k += 1;
            }
            if k == pick.len() {
                break;
            }
        }
        let rewrites: [(PrehashVariant, Rewrite); 5] = [
            (PrehashVariant::KanaScript, |p| {
                p.chars().map(kana::to_katakana).collect()
            }),
            (PrehashVariant::StripHyphens, |p| {
                p.chars()
                    .filter(|&c| !matches!(c, '-' | '‐' | '−' | '－'))
                    .collect()
            }),
            (PrehashVariant::KanaLongVowel, kana::long_vowel_marks),
            (PrehashVariant::KanaSmallLarge, kana::small_to_large),
            (PrehashVariant::KanaUnvoiced, kana::unvoiced),
        ];
        for (variant, rewrite) in rewrites {
            if has(variant) {
                let n = out.legacy.len();
                for i in 0..n {
                    let v = rewrite(&out.legacy[i]);
                    out.legacy.push(v);
                }
                if variant == PrehashVariant::KanaScript {
                    for i in 0..n {
                        let v: String = out.legacy[i].chars().map(kana::to_hiragana).collect();
                        out.legacy.push(v);
                    }
                }
                out.legacy.sort_unstable();
                out.legacy.dedup();
            }
        }
        for i in 0..out.legacy.len() {
            let digest = Sha256::digest(out.legacy[i].as_bytes());
            out.joined.clear();
            for b in digest {
                out.joined
                    .push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
                out.joined
                    .push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
            }
            out.tail.clear();
            put_value(&mut out.tail, &out.joined);
            self.emit(r, out);
        }
    }
}

/// One part of a name (SPEC.md §2.2): `slots` are the family and given columns, or the one
/// whole-name column. With both columns filled, the part's own column; with one of them
/// blank, the filled one holds the whole name, split at its first white space (family name
/// first); a whole name without white space is the family name when it sits in the family
/// column, and otherwise leaves the part missing (the split is unknown).
fn name_part(
    norm: Normalizer,
    part: NamePart,
    slots: &[usize],
    raw: &[&str],
    ctx: &NormalizeContext,
    out: &mut String,
) -> Result<(), FieldReject> {
    out.clear();
    fn split(whole: &str, part: NamePart) -> Option<&str> {
        whole
            .split_once(is_space)
            .map(|(family, given)| match part {
                NamePart::Family => family,
                NamePart::Given => given.trim_matches(is_space),
            })
    }
    let trim = |s: usize| raw[s].trim_matches(is_space);
    let value = match slots {
        [whole] => split(trim(*whole), part),
        [family, given] => {
            let (f, g) = (trim(*family), trim(*given));
            match (f.is_empty(), g.is_empty(), part) {
                (false, false, NamePart::Family) => Some(f),
                (false, false, NamePart::Given) => Some(g),
                (true, true, _) => None,
                (false, true, NamePart::Family) => Some(split(f, part).unwrap_or(f)),
                (false, true, NamePart::Given) => split(f, part),
                (true, false, _) => split(g, part),
            }
        }
        _ => None,
    };
    match value {
        Some(v) => norm.apply(v, ctx, out),
        None => Err(FieldReject::Missing),
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
    // The parts are the columns; a single full-name column, or a full name typed into one
    // column while another is empty, is split at white space instead. Several columns must
    // give at least two parts (one part alone is not a full name). A stray space inside a
    // filled column (`佐　々木`) is left to the normalizer.
    let blank = |s: usize| raw[s].chars().all(is_space);
    let mut pieces: Vec<&str> = Vec::with_capacity(4);
    if slots.len() > 1 && !slots.iter().any(|&s| blank(s)) {
        pieces.extend(slots.iter().map(|&s| raw[s]));
    } else {
        for &s in slots {
            pieces.extend(raw[s].split(is_space).filter(|p| !p.is_empty()));
        }
        if pieces.is_empty() || (slots.len() > 1 && pieces.len() < 2) {
            return Err(FieldReject::Missing);
        }
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
