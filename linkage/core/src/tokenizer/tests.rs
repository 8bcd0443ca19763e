use super::*;
use crate::token::preimage;

const CTX: NormalizeContext = NormalizeContext { today: 20_261_122 };

fn schema(extra: &str) -> Schema {
    Schema::from_toml(&format!(
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
{extra}"#
    ))
    .unwrap()
}

fn run(t: &Tokenizer, header: &[&str], row: &[&str]) -> RecordTokens {
    let b = t.bind(header);
    let raw: Vec<&str> = b.columns.iter().map(|&c| row[c]).collect();
    let mut out = RecordTokens::default();
    t.tokenize(&b, &raw, &mut out);
    out
}

#[test]
fn tokens_follow_the_spec_and_skip_missing_fields() {
    let secret = ProjectSecret::from_bytes([3; 32]);
    let s = schema("");
    let t = Tokenizer::new(&s, &secret, "proj", CTX);
    let out = run(&t, &["d", "n", "s"], &["19700315", " Taro  YAMADA", ""]);
    // Fields in schema order: dob, name, sex (name order).
    assert_eq!(
        out.status,
        vec![Some(Ok(())), Some(Ok(())), Some(Err(FieldReject::Missing))]
    );
    assert_eq!(out.tokens.len(), 1, "the sex recipe must be skipped");
    let want = RecipeKey::derive(&secret, "proj", "name_dob", 1).token(&preimage(
        "name_dob",
        1,
        &[("name", "taro yamada"), ("dob", "1970-03-15")],
    ));
    assert_eq!(out.tokens[0], (0, want));
    // Width and case variants, other column order: the same token.
    let other = run(
        &t,
        &["s", "n", "d", "extra"],
        &["M", "ＴＡＲＯ ＹＡＭＡＤＡ", "1970/3/15", "x"],
    );
    assert_eq!(other.tokens.len(), 2);
    assert_eq!(other.tokens[0], out.tokens[0]);
}

#[test]
fn other_project_gives_other_tokens() {
    let secret = ProjectSecret::from_bytes([3; 32]);
    let s = schema("");
    let a = run(
        &Tokenizer::new(&s, &secret, "p1", CTX),
        &["d", "n", "s"],
        &["19700315", "x", "1"],
    );
    let b = run(
        &Tokenizer::new(&s, &secret, "p2", CTX),
        &["d", "n", "s"],
        &["19700315", "x", "1"],
    );
    assert_ne!(a.tokens, b.tokens);
}

#[test]
fn missing_columns_make_recipes_unavailable() {
    let t = Tokenizer::new(&schema(""), &ProjectSecret::from_bytes([1; 32]), "p", CTX);
    let b = t.bind(&["n", "d"]);
    assert_eq!(b.recipes, [RecipeSource::Fields, RecipeSource::Unavailable]);
    assert!(b.any_recipe());
    assert!(!t.bind(&["n"]).any_recipe());
}

const LEGACY: &str = r#"
[fields.kana]
columns = ["kf", "kg"]
normalizer = "kana_name"
[fields.ins]
column = "ins"
normalizer = "insurer_number"
[fields.sym]
column = "sym"
normalizer = "insured_symbol"
[fields.bdate]
column = "b"
normalizer = "birth_date"
[[recipes]]
name = "legacy_id4"
version = 1
fields = ["kana", "bdate", "sex"]
[recipes.prehash]
profile = "ndb-legacy-v1"
digest_column = "id4"
variants = ["kana_script"]
[[recipes]]
name = "legacy_id1"
version = 1
fields = ["ins", "sym", "bdate", "sex"]
[recipes.prehash]
profile = "ndb-legacy-v1"
digest_column = "id1"
optional = ["sym"]
"#;

fn sha_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn raw_and_hash_only_holders_make_identical_prehash_tokens() {
    let secret = ProjectSecret::from_bytes([5; 32]);
    let t = Tokenizer::new(&schema(LEGACY), &secret, "p", CTX);
    // The hash-only side holds digests of its own recorded values, canonicalized only by
    // NFKC + white-space removal (the legacy rule), with date YYYYMMDD and sex 1/2.
    let id4 = sha_hex("やまだたろう|19700315|1");
    // id1 fields: insurer | symbol (optional, empty here) | date | sex.
    let id1 = sha_hex("33120015||19700315|1");
    let hashed = run(&t, &["id", "id4", "id1"], &["7", &id4.to_uppercase(), &id1]);
    let hashed_tokens: Vec<_> = hashed.tokens.iter().filter(|(r, _)| *r >= 2).collect();
    assert_eq!(hashed_tokens.len(), 2);
    // The raw side has katakana, a receipt-style era date and a missing symbol.
    let header = ["kf", "kg", "b", "s", "ins", "sym", "n", "d"];
    let raw = run(
        &t,
        &header,
        &[
            "ヤマダ",
            " タロウ",
            "3450315",
            "男",
            "３３１２００１５",
            "",
            "x",
            "",
        ],
    );
    let raw_tokens: Vec<_> = raw.tokens.iter().filter(|(r, _)| *r >= 2).collect();
    // id4: kana-script variants (as recorded = katakana, hiragana) → 2 tokens; id1: 1 token.
    for want in hashed_tokens {
        assert!(
            raw_tokens.contains(&want),
            "raw side misses the token of recipe {}",
            want.0
        );
    }
    // The raw side's own spelling without variants would not have met the hiragana digest.
    assert_eq!(raw_tokens.iter().filter(|(r, _)| *r == 2).count(), 2);
}

/// `sex_unknown`: a raw record whose sex is not recorded forms the legacy preimage with each
/// sex (two tokens, one of them the person's); a recorded sex forms only its own, and an
/// unreadable one none.
#[test]
fn an_unrecorded_sex_meets_the_digest_of_either_sex() {
    let secret = ProjectSecret::from_bytes([5; 32]);
    let with = LEGACY.replace(
        "variants = [\"kana_script\"]",
        "variants = [\"sex_unknown\"]",
    );
    assert_ne!(with, LEGACY);
    let plain = Tokenizer::new(
        &schema(&LEGACY.replace("variants = [\"kana_script\"]", "")),
        &secret,
        "p",
        CTX,
    );
    let t = Tokenizer::new(&schema(&with), &secret, "p", CTX);
    let header = ["kf", "kg", "b", "s", "ins", "sym", "n", "d"];
    let row = |sex: &str| -> Vec<String> {
        ["ヤマダ", "ハナコ", "1970-03-12", sex, "", "", "x", ""]
            .map(str::to_owned)
            .to_vec()
    };
    let id4 = |t: &Tokenizer, sex: &str| -> Vec<Token> {
        let r = row(sex);
        let r: Vec<&str> = r.iter().map(String::as_str).collect();
        run(t, &header, &r)
            .tokens
            .iter()
            .filter(|(x, _)| *x == 2)
            .map(|(_, t)| *t)
            .collect()
    };
    let digest = |sex: &str| {
        let out = run(
            &t,
            &["id", "id4", "id1"],
            &["7", &sha_hex(&format!("ヤマダハナコ|19700312|{sex}")), ""],
        );
        out.tokens
            .iter()
            .find(|(x, _)| *x == 2)
            .expect("digest token")
            .1
    };
    for unknown in ["", " ", "0", "9", "不明"] {
        let got = id4(&t, unknown);
        assert_eq!(got.len(), 2, "sex {unknown:?}");
        assert!(got.contains(&digest("1")) && got.contains(&digest("2")));
        // Without the variant such a record makes no preimage at all.
        assert!(id4(&plain, unknown).is_empty(), "sex {unknown:?}");
    }
    assert_eq!(id4(&t, "2"), vec![digest("2")]);
    assert!(id4(&t, "x").is_empty());
}

const NEIGHBOURS: &str = r#"
[[recipes]]
name = "legacy_id4_dob"
version = 1
fields = ["kana", "bdate", "sex"]
[recipes.prehash]
profile = "ndb-legacy-v1"
digest_column = "id4"
variants = ["kana_script"]
date_neighbours = true
"#;

#[test]
fn date_neighbour_recipe_meets_a_mistyped_digest_and_only_that() {
    let secret = ProjectSecret::from_bytes([5; 32]);
    let t = Tokenizer::new(&schema(&format!("{LEGACY}{NEIGHBOURS}")), &secret, "p", CTX);
    let header = ["kf", "kg", "b", "s", "ins", "sym", "n", "d"];
    let raw = run(
        &t,
        &header,
        &["ヤマダ", "タロウ", "1970-03-12", "1", "", "", "x", ""],
    );
    let of = |out: &RecordTokens, r: usize| -> Vec<Token> {
        out.tokens
            .iter()
            .filter(|(x, _)| *x == r)
            .map(|(_, t)| *t)
            .collect()
    };
    // One token per neighbour and kana script (katakana as recorded, hiragana).
    let mut dates = Vec::new();
    birth_date_neighbours("19700312", CTX.today, &mut dates);
    assert!(dates.len() > 20);
    assert_eq!(of(&raw, 4).len(), 2 * dates.len());
    let hashed = |preimage: &str| run(&t, &["id", "id4", "id1"], &["7", &sha_hex(preimage), ""]);
    // The hash-only side recorded 13 for 12 (one digit), 21 for 12 (transposed), or day and
    // month swapped (in hiragana): the neighbour recipe meets each, the exact one none.
    for typo in [
        "ヤマダタロウ|19700313|1",
        "ヤマダタロウ|19700321|1",
        "やまだたろう|19701203|1",
    ] {
        let h = hashed(typo);
        assert!(of(&raw, 4).contains(&of(&h, 4)[0]), "{typo}");
        assert!(!of(&raw, 2).contains(&of(&h, 2)[0]), "{typo}");
    }
    // The correctly recorded date meets the exact recipe, never the neighbour recipe; a
    // namesake born a month and eleven days later (two digits) meets neither.
    let same = hashed("ヤマダタロウ|19700312|1");
    assert!(of(&raw, 2).contains(&of(&same, 2)[0]));
    assert!(!of(&raw, 4).contains(&of(&same, 4)[0]));
    let far = hashed("ヤマダタロウ|19700423|1");
    assert!(!of(&raw, 2).contains(&of(&far, 2)[0]));
    assert!(!of(&raw, 4).contains(&of(&far, 4)[0]));
    // The hash-only side makes one token of each digest for both recipes.
    assert_eq!(of(&same, 2).len(), 1);
    assert_eq!(of(&same, 4).len(), 1);
    assert_ne!(of(&same, 2), of(&same, 4));
}

#[test]
fn date_neighbours_need_one_date_field() {
    let err = Schema::from_toml(
        r#"
schema_format = 1
name = "t"
version = 1
[fields.kana]
columns = ["kf", "kg"]
normalizer = "kana_name"
[[recipes]]
name = "legacy_kana"
version = 1
fields = ["kana"]
[recipes.prehash]
profile = "ndb-legacy-v1"
digest_column = "k"
date_neighbours = true
"#,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("date_neighbours"), "{err}");
}

#[test]
fn multi_column_fields_need_every_part_and_any_order_sorts() {
    let extra = r#"
[fields.full]
columns = ["f", "g"]
normalizer = "kana_name"
order = "any"
[[recipes]]
name = "full_dob"
version = 1
fields = ["full", "dob"]
"#;
    let t = Tokenizer::new(
        &schema(extra),
        &ProjectSecret::from_bytes([2; 32]),
        "p",
        CTX,
    );
    let h = ["f", "g", "d", "n", "s"];
    let a = run(&t, &h, &["ヤマダ", "タロウ", "1970-03-15", "", ""]);
    let b = run(&t, &h, &["たろう", "ﾔﾏﾀﾞ", "19700315", "", ""]);
    let full = |r: &RecordTokens| r.tokens.iter().find(|(i, _)| *i == 2).map(|(_, t)| *t);
    assert!(full(&a).is_some());
    assert_eq!(full(&a), full(&b), "swapped family/given names must agree");
    let c = run(&t, &h, &["ヤマダ", "", "1970-03-15", "", ""]);
    assert_eq!(full(&c), None, "one name part alone is a missing field");
    // A full name typed into the family column, the given column empty: still the person.
    let d = run(&t, &h, &["ヤマダ　タロウ", "", "1970-03-15", "", ""]);
    assert_eq!(full(&d), full(&a));
    let e = run(&t, &h, &["", "タロウ ヤマダ", "1970-03-15", "", ""]);
    assert_eq!(full(&e), full(&a));
    // A stray space inside a filled column does not make an extra part.
    let f = run(&t, &h, &["ヤ マダ", "タロウ", "1970-03-15", "", ""]);
    assert_eq!(full(&f), full(&a));
}

#[test]
fn a_whole_name_in_one_field_gives_the_full_name_form_and_its_parts() {
    let extra = r#"
[fields.joined]
columns = ["f", "g"]
normalizer = "kana_name"
full_column = "whole"
[fields.sorted]
columns = ["f", "g"]
normalizer = "kana_name"
order = "any"
full_column = "whole"
[fields.given]
columns = ["f", "g"]
normalizer = "kana_name"
full_column = "whole"
part = "given"
[fields.family]
columns = ["f", "g"]
normalizer = "kana_name"
full_column = "whole"
part = "family"
"#;
    let t = Tokenizer::new(
        &schema(extra),
        &ProjectSecret::from_bytes([2; 32]),
        "p",
        CTX,
    );
    let field = |name: &str| {
        t.schema()
            .fields
            .iter()
            .position(|f| f.name == name)
            .unwrap()
    };
    let (joined, sorted, given, family) = (
        field("joined"),
        field("sorted"),
        field("given"),
        field("family"),
    );
    let split = run(&t, &["f", "g", "d"], &["ヤマダ", "タロウ", "1970-03-15"]);
    assert!(!t.bind(&["f", "g", "d"]).from_full.iter().any(|&x| x));
    // Full-width space, ASCII space, half-width kana, no space: the full-name form agrees.
    for whole in [
        "ヤマダ　タロウ",
        "ヤマダ タロウ",
        "ﾔﾏﾀﾞ ﾀﾛｳ",
        "ヤマダタロウ",
        "やまだ\u{3000}たろう",
    ] {
        let one = run(&t, &["whole", "d"], &[whole, "1970-03-15"]);
        assert_eq!(one.values[joined], split.values[joined], "{whole}");
        assert_eq!(one.values[joined], "ヤマダタロウ");
        if whole.chars().any(char::is_whitespace) {
            // With a space: the either-order form and the parts, as from split columns.
            assert_eq!(one.values[sorted], split.values[sorted], "{whole}");
            assert_eq!(one.values[given], "タロウ", "{whole}");
            assert_eq!(one.values[family], "ヤマダ", "{whole}");
        } else {
            // Without: the split is unknown, so the parts are missing, never guessed.
            assert_eq!(one.status[given], Some(Err(FieldReject::Missing)));
            assert_eq!(one.status[family], Some(Err(FieldReject::Missing)));
            assert_ne!(one.values[sorted], split.values[sorted]);
        }
    }
    // The split columns win when present, even next to a whole-name column.
    let h = ["f", "g", "whole", "d"];
    let both = run(&t, &h, &["ヤマダ", "タロウ", "サトウハナコ", "1970-03-15"]);
    assert_eq!(both.values[joined], "ヤマダタロウ");
    // A whole name typed into one split column, the other empty: split at its space.
    for row in [["ヤマダ　タロウ", ""], ["", "ヤマダ タロウ"]] {
        let r = run(&t, &h, &[row[0], row[1], "", "1970-03-15"]);
        assert_eq!(
            (r.values[family].as_str(), r.values[given].as_str()),
            ("ヤマダ", "タロウ"),
            "{row:?}"
        );
    }
    // A family name alone is the family name; the given name is missing.
    let r = run(&t, &h, &["ヤマダ", "", "", "1970-03-15"]);
    assert_eq!(r.values[family], "ヤマダ");
    assert_eq!(r.status[given], Some(Err(FieldReject::Missing)));
    // A stray space inside a filled column is not a split.
    let r = run(&t, &h, &["ヤ マダ", "タロウ", "", "1970-03-15"]);
    assert_eq!(r.values[family], "ヤマダ");
}
