//! Preimage mode (the custodian mode's input) makes exactly the bytes the HMAC mode hashes:
//! for every record of the shared data sets and every recipe of the shipped schemas,
//! `HMAC-SHA256(K_recipe, preimage)` equals the HMAC-mode token, in the same order, including
//! prehash recipes with all their spelling variants and digests supplied by a hash-only holder.

use std::path::{Path, PathBuf};

use renketsu_linkage::{
    NormalizeContext, ProjectSecret, RecipeKey, RecordTokens, Schema, Tokenizer,
};

const CTX: NormalizeContext = NormalizeContext { today: 20_261_122 };

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn schema(name: &str) -> Schema {
    let text = std::fs::read_to_string(repo().join("schemas").join(name)).unwrap();
    Schema::from_toml(&text).unwrap()
}

/// Runs both modes over every row of `csv` and compares; returns, per recipe, the preimages
/// made and the records that made more than one (variants).
fn check(schema: &Schema, csv: &Path) -> (Vec<usize>, Vec<usize>) {
    let secret = ProjectSecret::from_bytes([0x42; 32]);
    let project = "preimage-test";
    let hmac = Tokenizer::new(schema, &secret, project, CTX);
    let pre = Tokenizer::preimage_mode(schema, CTX);
    assert!(pre.is_preimage_mode() && !hmac.is_preimage_mode());
    let keys: Vec<RecipeKey> = schema
        .recipes
        .iter()
        .map(|r| RecipeKey::derive(&secret, project, &r.name, r.version))
        .collect();
    let mut reader = csv::Reader::from_path(csv).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the shared data sets live in ../shared)",
            csv.display()
        )
    });
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    let bh = hmac.bind(&header);
    let bp = pre.bind(&header);
    assert_eq!(bh.recipes, bp.recipes);
    let (mut th, mut tp) = (RecordTokens::default(), RecordTokens::default());
    let mut per_recipe = vec![0usize; schema.recipes.len()];
    let mut multi = vec![0usize; schema.recipes.len()];
    let mut rows = 0;
    for rec in reader.records() {
        let rec = rec.unwrap();
        let raw: Vec<&str> = bh.columns.iter().map(|&c| &rec[c]).collect();
        hmac.tokenize(&bh, &raw, &mut th);
        pre.tokenize(&bp, &raw, &mut tp);
        assert!(tp.tokens.is_empty() && th.preimage_spans.is_empty());
        assert_eq!(th.status, tp.status);
        assert_eq!(th.values, tp.values);
        let from_preimages: Vec<(usize, [u8; 32])> =
            tp.preimages().map(|(r, p)| (r, keys[r].token(p))).collect();
        assert_eq!(
            th.tokens,
            from_preimages,
            "row {} of {}",
            rows + 1,
            csv.display()
        );
        assert!(th.recipes_made().eq(tp.recipes_made()));
        let mut this = vec![0usize; schema.recipes.len()];
        for (r, _) in tp.preimages() {
            this[r] += 1;
        }
        for (r, n) in this.into_iter().enumerate() {
            per_recipe[r] += n;
            multi[r] += usize::from(n > 1);
        }
        rows += 1;
    }
    assert!(rows > 1000, "{} has {rows} rows", csv.display());
    (per_recipe, multi)
}

#[test]
fn jp_person_every_recipe() {
    let s = schema("jp-person.toml");
    let data = repo().join("../shared/data/jp");
    for f in ["jp_a.csv", "jp_b.csv"] {
        let (n, _) = check(&s, &data.join(f));
        for (r, count) in s.recipes.iter().zip(&n) {
            assert!(*count > 0, "{f}: recipe {} made no preimage", r.name);
        }
    }
}

#[test]
fn ndb_every_recipe_with_prehash_variants_and_digests() {
    let s = schema("ndb.toml");
    let data = repo().join("../shared/data/jp_ins");
    let (raw_a, multi_a) = check(&s, &data.join("jp_ins_a.csv"));
    let (raw_b, multi_b) = check(&s, &data.join("jp_ins_b.csv"));
    for (i, r) in s.recipes.iter().enumerate() {
        assert!(
            raw_a[i] + raw_b[i] > 0,
            "recipe {} made no preimage",
            r.name
        );
        // Only prehash recipes with variants or birth-date neighbours make several
        // preimages for one record.
        let variants = r
            .prehash
            .as_ref()
            .is_some_and(|p| !p.variants.is_empty() || p.date_neighbours);
        assert_eq!(multi_a[i] + multi_b[i] > 0, variants, "recipe {}", r.name);
    }
    // The hash-only holder: prehash recipes from its digest columns.
    let (digests, _) = check(&s, &data.join("jp_ins_b_ndb.csv"));
    for (i, r) in s.recipes.iter().enumerate() {
        assert_eq!(
            digests[i] > 0,
            r.prehash
                .as_ref()
                .is_some_and(|p| p.digest_column.is_some()),
            "recipe {}",
            r.name
        );
    }
}
