//! Exact-token test vectors (SPEC.md §4) from an independent implementation.
//!
//! `test-vectors/exact-tokens.json` is written by `scripts/gen-token-vectors.py`, a Python
//! standard-library implementation of the derivation that shares no code with this crate
//! (HKDF-SHA256 written out from RFC 5869, HMAC-SHA256 from `hmac`). For every vector this
//! test checks, through the crate's public API, the recipe key
//! ([`RecipeKey::derive_bytes`]), the canonical preimage ([`token::preimage`]) and the token
//! ([`RecipeKey::token`]), and then that the [`Tokenizer`] (schema with `raw` normalizers)
//! turns the same record into exactly the same token. Changing any byte of the derivation
//! (salt, domain tag, length prefix, byte order, field order, …) breaks this test.
//!
//! Regenerate the file with `python3 scripts/gen-token-vectors.py` (deterministic), and
//! check it is current with `python3 scripts/gen-token-vectors.py --check`.

use std::collections::HashSet;
use std::fmt::Write as _;

use renketsu_linkage::token::{self, RecipeKey};
use renketsu_linkage::{NormalizeContext, ProjectSecret, RecordTokens, Schema, Tokenizer};
use serde::Deserialize;

/// Fewer vectors than this means the file was truncated or emptied.
const MIN_VECTORS: usize = 8;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VectorFile {
    description: String,
    derivation: String,
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Vector {
    name: String,
    master_secret: String,
    project: String,
    recipe: String,
    version: u32,
    fields: Vec<(String, String)>,
    recipe_key: String,
    preimage: String,
    token: String,
}

impl Vector {
    fn secret(&self) -> ProjectSecret {
        let bytes: [u8; 32] = hex::decode(&self.master_secret)
            .unwrap_or_else(|e| panic!("{}: master_secret is not hex: {e}", self.name))
            .try_into()
            .unwrap_or_else(|v: Vec<u8>| {
                panic!("{}: master_secret has {} bytes, not 32", self.name, v.len())
            });
        ProjectSecret::from_bytes(bytes)
    }

    fn field_refs(&self) -> Vec<(&str, &str)> {
        self.fields
            .iter()
            .map(|(f, v)| (f.as_str(), v.as_str()))
            .collect()
    }
}

fn load() -> VectorFile {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/test-vectors/exact-tokens.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let file: VectorFile =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {path}: {e}"));
    assert!(!file.description.is_empty());
    assert_eq!(file.derivation, "SPEC.md §4");
    assert!(
        file.vectors.len() >= MIN_VECTORS,
        "{path} holds {} vectors, expected at least {MIN_VECTORS}",
        file.vectors.len()
    );
    let mut names = HashSet::new();
    for v in &file.vectors {
        assert!(
            names.insert(v.name.as_str()),
            "vector name {} appears twice",
            v.name
        );
        assert!(
            !v.fields.is_empty(),
            "{}: a recipe has at least one field",
            v.name
        );
    }
    file
}

#[test]
fn recipe_keys_preimages_and_tokens_match_the_reference() {
    let file = load();
    for v in &file.vectors {
        let secret = v.secret();

        let key = RecipeKey::derive_bytes(&secret, &v.project, &v.recipe, v.version);
        assert_eq!(hex::encode(key), v.recipe_key, "{}: recipe key", v.name);

        let pre = token::preimage(&v.recipe, v.version, &v.field_refs());
        assert_eq!(hex::encode(&pre), v.preimage, "{}: preimage", v.name);

        // Token of the vector's own preimage bytes, so a token mismatch is independent of a
        // preimage mismatch above.
        let want_pre = hex::decode(&v.preimage).unwrap();
        let tok = RecipeKey::derive(&secret, &v.project, &v.recipe, v.version).token(&want_pre);
        assert_eq!(hex::encode(tok), v.token, "{}: token", v.name);
    }
}

/// A one-recipe schema whose fields are the vector's fields, each read from a column of the
/// same name with the `raw` normalizer (so the normalized value is the input).
fn raw_schema(v: &Vector) -> Schema {
    let mut toml = String::from("schema_format = 1\nname = \"vectors\"\nversion = 1\n");
    for (field, _) in &v.fields {
        write!(
            toml,
            "\n[fields.{field}]\ncolumn = \"{field}\"\nnormalizer = \"raw\"\n"
        )
        .unwrap();
    }
    let list: Vec<String> = v.fields.iter().map(|(f, _)| format!("\"{f}\"")).collect();
    write!(
        toml,
        "\n[[recipes]]\nname = \"{}\"\nversion = {}\nfields = [{}]\n",
        v.recipe,
        v.version,
        list.join(", ")
    )
    .unwrap();
    Schema::from_toml(&toml).unwrap_or_else(|e| panic!("{}: schema: {e}\n{toml}", v.name))
}

#[test]
fn tokenizer_produces_the_reference_tokens() {
    let ctx = NormalizeContext { today: 20_261_122 };
    let file = load();
    let mut out = RecordTokens::default();
    for v in &file.vectors {
        let schema = raw_schema(v);
        let tokenizer = Tokenizer::new(&schema, &v.secret(), &v.project, ctx);
        // The tokenizer takes values in schema field order (sorted by name), not recipe order.
        let raw: Vec<&str> = schema
            .fields
            .iter()
            .map(|sf| {
                let (_, value) = v.fields.iter().find(|(f, _)| *f == sf.name).unwrap();
                value.as_str()
            })
            .collect();
        // Columns are named after the fields, so the binding reads them in field order.
        let header: Vec<&str> = schema.fields.iter().map(|f| f.name.as_str()).collect();
        let binding = tokenizer.bind(&header);
        assert_eq!(binding.columns, (0..header.len()).collect::<Vec<_>>());
        tokenizer.tokenize(&binding, &raw, &mut out);
        assert!(
            out.status.iter().all(|s| matches!(s, Some(Ok(())))),
            "{}: {:?}",
            v.name,
            out.status
        );
        assert_eq!(
            out.values, raw,
            "{}: raw normalizer changed a value",
            v.name
        );
        assert_eq!(out.tokens.len(), 1, "{}: one recipe, one token", v.name);
        let (recipe, tok) = out.tokens[0];
        assert_eq!(recipe, 0);
        assert_eq!(hex::encode(tok), v.token, "{}: tokenizer token", v.name);
    }
}
