//! The golden normalization table (`test-vectors/normalize-golden.tsv`, SPEC.md §3): every
//! case's input must normalize to its expected canonical value or reason code, and every
//! canonical value must normalize to itself (idempotence).

use renketsu_linkage::{NormalizeContext, Normalizer};

const TODAY: NormalizeContext = NormalizeContext { today: 20_261_122 };

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("\\t") {
            out.push('\t');
            rest = t;
        } else if let Some(t) = tail.strip_prefix("\\u{") {
            let end = t.find('}').expect("closing brace");
            let cp = u32::from_str_radix(&t[..end], 16).expect("hex code point");
            out.push(char::from_u32(cp).expect("scalar value"));
            rest = &t[end + 1..];
        } else {
            panic!("unknown escape in {s:?}");
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn golden_table() {
    let text = include_str!("../test-vectors/normalize-golden.tsv");
    let mut n = 0;
    let mut failures = Vec::new();
    let mut kinds = std::collections::BTreeSet::new();
    for (lineno, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 3, "line {}: {line:?}", lineno + 1);
        let kind = Normalizer::from_name(cols[0])
            .unwrap_or_else(|| panic!("line {}: kind {}", lineno + 1, cols[0]));
        kinds.insert(cols[0]);
        let input = unescape(cols[1]);
        let mut out = String::new();
        let got = match kind.apply(&input, &TODAY, &mut out) {
            Ok(()) => out.clone(),
            Err(e) => format!("!{}", e.code()),
        };
        if got != cols[2] {
            failures.push(format!(
                "line {}: {} {:?} → {:?}, expected {:?}",
                lineno + 1,
                cols[0],
                input,
                got,
                cols[2]
            ));
        } else if !got.starts_with('!') {
            let mut again = String::new();
            kind.apply(&got, &TODAY, &mut again).unwrap();
            if again != got {
                failures.push(format!(
                    "line {}: {} not idempotent: {got:?} → {again:?}",
                    lineno + 1,
                    cols[0]
                ));
            }
        }
        n += 1;
    }
    assert!(
        failures.is_empty(),
        "{} of {n} cases fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(n >= 300, "only {n} golden cases");
    for k in [
        "kana_name",
        "kana_name_fuzzy",
        "kanji_name",
        "birth_date",
        "sex",
        "insurer_number",
        "insured_symbol",
        "insured_number",
        "branch_number",
        "care_insured_number",
        "postal_code",
    ] {
        assert!(kinds.contains(k), "no golden case for {k}");
    }
}
