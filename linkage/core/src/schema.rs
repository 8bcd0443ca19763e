//! The linkage schema: a versioned TOML file that says which input columns are identifiers
//! (and how each is normalized), which are content for the researcher, and which exact-token
//! recipes are made. Normative description: SPEC.md §2.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;
use toml::Spanned;

use crate::normalize::Normalizer;

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
}

/// One identifier field of the schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldSpec {
    /// Field name used by recipes (and bound into token preimages).
    pub name: String,
    /// The input column holding the raw value.
    pub column: String,
    /// How the raw value is canonicalized.
    pub normalizer: Normalizer,
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
}

/// Why a schema file cannot be used. Every variant names the key and the 1-based line.
#[derive(Debug, thiserror::Error)]
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
    column: Spanned<String>,
    normalizer: Normalizer,
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
    #[allow(dead_code, reason = "documentation for humans, accepted and ignored")]
    description: Option<String>,
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
            if !valid_name(name.get_ref()) {
                return Err(invalid(
                    format!("fields.{}", name.get_ref()),
                    name.span(),
                    "field names are 1-64 characters of a-z, 0-9 and _".into(),
                ));
            }
            if !identifier_columns.insert(f.column.get_ref().clone()) {
                return Err(invalid(
                    format!("fields.{}.column", name.get_ref()),
                    f.column.span(),
                    format!("column `{}` is bound to two fields", f.column.get_ref()),
                ));
            }
            fields.push(FieldSpec {
                name: name.get_ref().clone(),
                column: f.column.get_ref().clone(),
                normalizer: f.normalizer,
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
            recipes.push(RecipeSpec {
                name: name.clone(),
                version: r.version,
                fields: idx,
            });
        }
        Ok(Schema {
            name: raw.name,
            version: raw.version,
            id_column,
            fields,
            content,
            recipes,
        })
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
    fn unknown_normalizer_is_refused() {
        let bad = GOOD.replace(r#"normalizer = "date""#, r#"normalizer = "dat""#);
        let err = Schema::from_toml(&bad).unwrap_err().to_string();
        assert!(err.contains("dat") && err.contains("line 12"), "{err}");
    }
}
