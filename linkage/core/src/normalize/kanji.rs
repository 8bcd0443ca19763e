//! Kanji name key (SPEC.md §3.1): NFKC, ideographic variation selectors stripped, white space
//! removed, variant glyphs (異体字) folded with the table `data/kanji-variants.tsv` (its header
//! cites its sources: 戸籍法施行規則 別表第二 二, the 常用漢字表, common name variants).
//! Values with a substitution mark (`〓`, `●`, `■`, `?`, `？`), which legacy systems write for
//! characters outside their set, are refused: they would match other lossy names.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::LazyLock;

use super::{FieldReject, for_each_nfkc, is_space};

const TABLE: &str = include_str!("../../data/kanji-variants.tsv");

/// Multiplicative hash of a `char` (the table is fixed and public: no DoS concern).
#[derive(Default)]
struct CharHasher(u64);

impl Hasher for CharHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, x: u32) {
        self.0 = u64::from(x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type CharMap = HashMap<char, char, BuildHasherDefault<CharHasher>>;

/// The variant → canonical map, parsed once from the embedded table.
static VARIANTS: LazyLock<CharMap> = LazyLock::new(|| parse_table(TABLE));

fn parse_table(text: &str) -> CharMap {
    let mut map = CharMap::default();
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
        // Every variant in the table is an ideograph (U+3400 and above).
        out.push(if (c as u32) < 0x3400 {
            c
        } else {
            *table.get(&c).unwrap_or(&c)
        });
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
