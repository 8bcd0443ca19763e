//! Record → normalized fields → exact tokens, for every recipe of a schema.

use crate::normalize::{FieldReject, NormalizeContext, Normalizer};
use crate::schema::Schema;
use crate::secret::ProjectSecret;
use crate::token::{KeyedRecipe, RecipeKey, Token, put_value};

/// A schema compiled with its recipe keys: turns raw identifier values into tokens.
///
/// Cheap to share across threads (`Sync`); each thread keeps its own [`RecordTokens`].
#[derive(Clone)]
pub struct Tokenizer {
    normalizers: Vec<Normalizer>,
    recipes: Vec<CompiledRecipe>,
    ctx: NormalizeContext,
}

#[derive(Clone)]
struct CompiledRecipe {
    fields: Vec<usize>,
    keyed: KeyedRecipe,
}

/// Per-record scratch space and result of [`Tokenizer::tokenize`]; reuse it across records.
#[derive(Debug, Default)]
pub struct RecordTokens {
    /// Normalized value of each schema field (empty when rejected).
    pub values: Vec<String>,
    /// Outcome of each field's normalizer, in schema field order.
    pub status: Vec<Result<(), FieldReject>>,
    /// `(recipe index, token)` for every recipe whose fields were all usable.
    pub tokens: Vec<(usize, Token)>,
    tail: Vec<u8>,
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
        let recipes = schema
            .recipes
            .iter()
            .map(|r| {
                let key = RecipeKey::derive(secret, project, &r.name, r.version);
                CompiledRecipe {
                    fields: r.fields.clone(),
                    keyed: KeyedRecipe::new(
                        &key,
                        &r.name,
                        r.version,
                        r.fields.iter().map(|&f| schema.fields[f].name.as_str()),
                    ),
                }
            })
            .collect();
        Self {
            normalizers: schema.fields.iter().map(|f| f.normalizer).collect(),
            recipes,
            ctx,
        }
    }

    /// Number of schema fields a record must supply, in schema field order.
    pub fn field_count(&self) -> usize {
        self.normalizers.len()
    }

    /// Normalizes `raw` (one value per schema field, in schema field order) and makes the
    /// token of every recipe whose fields are all usable. A recipe with any missing or
    /// rejected field yields no token (never a token of an empty value).
    ///
    /// # Panics
    /// If `raw.len()` differs from [`Tokenizer::field_count`].
    pub fn tokenize(&self, raw: &[&str], out: &mut RecordTokens) {
        assert_eq!(
            raw.len(),
            self.normalizers.len(),
            "one raw value per schema field"
        );
        out.values.resize_with(raw.len(), String::new);
        out.status.clear();
        out.tokens.clear();
        for ((norm, value), buf) in self.normalizers.iter().zip(raw).zip(out.values.iter_mut()) {
            out.status.push(norm.apply(value, &self.ctx, buf));
        }
        for (i, r) in self.recipes.iter().enumerate() {
            if r.fields.iter().any(|&f| out.status[f].is_err()) {
                continue;
            }
            out.tail.clear();
            for &f in &r.fields {
                put_value(&mut out.tail, &out.values[f]);
            }
            out.tokens.push((i, r.keyed.token_from_tail(&out.tail)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::preimage;

    fn schema() -> Schema {
        Schema::from_toml(
            r#"
schema_format = 1
name = "t"
version = 1
[fields.name]
column = "n"
normalizer = "text"
[fields.dob]
column = "d"
normalizer = "date"
[fields.sex]
column = "s"
normalizer = "sex"
[[recipes]]
name = "name_dob"
version = 1
fields = ["name", "dob"]
[[recipes]]
name = "name_dob_sex"
version = 1
fields = ["name", "dob", "sex"]
"#,
        )
        .unwrap()
    }

    const CTX: NormalizeContext = NormalizeContext { today: 20_261_122 };

    #[test]
    fn tokens_follow_the_spec_and_skip_missing_fields() {
        let secret = ProjectSecret::from_bytes([3; 32]);
        let s = schema();
        let t = Tokenizer::new(&s, &secret, "proj", CTX);
        let mut out = RecordTokens::default();
        // Fields in schema order: dob, name, sex (BTreeMap order).
        let names: Vec<&str> = s.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["dob", "name", "sex"]);
        t.tokenize(&["19700315", " Taro  YAMADA", ""], &mut out);
        assert_eq!(out.status, vec![Ok(()), Ok(()), Err(FieldReject::Missing)]);
        assert_eq!(out.tokens.len(), 1, "the sex recipe must be skipped");
        let want = RecipeKey::derive(&secret, "proj", "name_dob", 1).token(&preimage(
            "name_dob",
            1,
            &[("name", "taro yamada"), ("dob", "1970-03-15")],
        ));
        assert_eq!(out.tokens[0], (0, want));

        // Width and case variants give the same token.
        let mut other = RecordTokens::default();
        t.tokenize(&["1970/3/15", "ＴＡＲＯ ＹＡＭＡＤＡ", "M"], &mut other);
        assert_eq!(other.tokens.len(), 2);
        assert_eq!(other.tokens[0], out.tokens[0]);
    }

    #[test]
    fn other_project_gives_other_tokens() {
        let secret = ProjectSecret::from_bytes([3; 32]);
        let s = schema();
        let mut a = RecordTokens::default();
        let mut b = RecordTokens::default();
        Tokenizer::new(&s, &secret, "p1", CTX).tokenize(&["19700315", "x", "1"], &mut a);
        Tokenizer::new(&s, &secret, "p2", CTX).tokenize(&["19700315", "x", "1"], &mut b);
        assert_ne!(a.tokens, b.tokens);
    }
}
