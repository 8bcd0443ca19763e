//! Kanji name key (SPEC.md §3.1): NFKC, ideographic variation selectors stripped, white space
//! removed, variant glyphs (異体字) folded with the table `data/kanji-variants.tsv` (its header
//! cites its sources: 戸籍法施行規則 別表第二 二, the 常用漢字表, common name variants).
//! Values with a substitution mark (`〓`, `●`, `■`, `?`, `？`), which legacy systems write for
//! characters outside their set, are refused: they would match other lossy names.

use std::collections::HashMap;
use std::sync::LazyLock;

use super::{FieldReject, for_each_nfkc, is_space};

const TABLE: &str = include_str!("../../data/kanji-variants.tsv");

/// The variant → canonical map, parsed once from the embedded table.
static VARIANTS: LazyLock<HashMap<char, char>> = LazyLock::new(|| parse_table(TABLE));

fn parse_table(text: &str) -> HashMap<char, char> {
    let mut map = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut cols = line.split('\t');
        let (Some(v), Some(c)) = (cols.next(), cols.next()) else {
            continue;
        };
        let (mut v, mut c) = (v.chars(), c.chars());
        if let (Some(v), None, Some(c), None) = (v.next(), v.next(), c.next(), c.next()) {
            map.insert(v, c);
        }
    }
    map
}

/// Number of variant → canonical pairs in the embedded table.
pub fn variant_count() -> usize {
    VARIANTS.len()
}

#[inline]
fn is_variation_selector(c: char) -> bool {
    matches!(c, '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}')
}

pub(super) fn kanji(input: &str, out: &mut String) -> Result<(), FieldReject> {
    let table = &*VARIANTS;
    let mut lossy = false;
    for_each_nfkc(input, |c| {
        if is_space(c) || is_variation_selector(c) || c == '・' || c.is_control() {
            return;
        }
        if matches!(c, '〓' | '●' | '■' | '?' | '？' | '\u{FFFD}') {
            lossy = true;
            return;
        }
        out.push(*table.get(&c).unwrap_or(&c));
    });
    if lossy {
        return Err(FieldReject::UnrepresentableKanji);
    }
    if out.is_empty() {
        return Err(FieldReject::Missing);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_well_formed() {
        let map = parse_table(TABLE);
        assert!(map.len() >= 100, "only {} variant pairs", map.len());
        for (v, c) in &map {
            assert_ne!(v, c);
            assert!(!map.contains_key(c), "chain {v} → {c} → {}", map[c]);
        }
        for (v, c) in [
            ('髙', '高'),
            ('﨑', '崎'),
            ('邊', '辺'),
            ('邉', '辺'),
            ('齋', '斎'),
            ('𠮷', '吉'),
        ] {
            assert_eq!(map.get(&v), Some(&c), "{v}");
        }
    }
}
