//! Kana name keys (SPEC.md §3.1): a strict key and a fuzzy key for katakana/hiragana names.
//!
//! Strict: NFKC (folds half-width katakana and composes voiced marks), hiragana → katakana,
//! white space and `・` removed; anything else than katakana and `ー` is refused.
//! Fuzzy, on top of strict (after the rules used in Japanese 名寄せ practice):
//! `ヴァ ヴィ ヴェ ヴォ ヴ` (and `ヷ ヸ ヹ ヺ`) → `バ ビ ベ ボ ブ`; small kana → large (`ァ`→`ア`, `ッ`→`ツ`,
//! `ャ`→`ヤ`, `ヮ`→`ワ`, `ヵ`→`カ`, `ヶ`→`ケ`); `ヰ ヱ ヲ` → `イ エ オ`; `ヂ ヅ` → `ジ ズ`; the
//! long-vowel mark `ー` is dropped, and so is a long-vowel `ウ` after an o- or u-row kana and a
//! long-vowel `オ` after an o-row kana (`サトウ`, `サトー`, `サトオ` → `サト`; `ユウキ`, `ユーキ`
//! → `ユキ`).
//! Loose, on top of fuzzy: voiced and semi-voiced marks dropped (`ガ`→`カ`, `パ`→`ハ`), the
//! weaker level for records whose kana lost or gained a dakuten (`ゴトウ`/`コトウ`).

use unicode_normalization::UnicodeNormalization;

use super::{FieldReject, for_each_nfkc, is_space};

/// Hiragana → katakana for the letters and the iteration marks; other characters unchanged.
#[inline]
pub fn to_katakana(c: char) -> char {
    match c {
        '\u{3041}'..='\u{3096}' | '\u{309D}' | '\u{309E}' => {
            char::from_u32(c as u32 + 0x60).expect("katakana block is assigned")
        }
        _ => c,
    }
}

/// Katakana → hiragana for the letters that have a hiragana form; other characters unchanged.
#[inline]
pub fn to_hiragana(c: char) -> char {
    match c {
        '\u{30A1}'..='\u{30F6}' | '\u{30FD}' | '\u{30FE}' => {
            char::from_u32(c as u32 - 0x60).expect("hiragana block is assigned")
        }
        _ => c,
    }
}

#[inline]
fn is_katakana_letter(c: char) -> bool {
    matches!(c, '\u{30A1}'..='\u{30FA}' | 'ー' | 'ヽ' | 'ヾ')
}

/// Strict kana key into `out` (cleared by the caller).
pub(super) fn strict(input: &str, out: &mut String) -> Result<(), FieldReject> {
    let mut invalid = false;
    for_each_nfkc(input, |c| {
        let c = to_katakana(c);
        if is_katakana_letter(c) {
            out.push(c);
        } else if !(is_space(c) || c == '・') {
            invalid = true;
        }
    });
    if invalid {
        return Err(FieldReject::InvalidKana);
    }
    if out.is_empty() {
        return Err(FieldReject::Missing);
    }
    Ok(())
}

#[inline]
fn fold_char(c: char) -> char {
    match c {
        'ァ' => 'ア',
        'ィ' => 'イ',
        'ゥ' => 'ウ',
        'ェ' => 'エ',
        'ォ' => 'オ',
        'ッ' => 'ツ',
        'ャ' => 'ヤ',
        'ュ' => 'ユ',
        'ョ' => 'ヨ',
        'ヮ' => 'ワ',
        'ヵ' => 'カ',
        'ヶ' => 'ケ',
        'ヰ' => 'イ',
        'ヱ' => 'エ',
        'ヲ' => 'オ',
        'ヂ' => 'ジ',
        'ヅ' => 'ズ',
        'ヴ' => 'ブ',
        // ワ゛ヰ゛ヱ゛ヲ゛ are va, vi, ve, vo, written like ヴァ ヴィ ヴェ ヴォ.
        'ヷ' => 'バ',
        'ヸ' => 'ビ',
        'ヹ' => 'ベ',
        'ヺ' => 'ボ',
        _ => c,
    }
}

#[inline]
fn o_row(c: char) -> bool {
    matches!(
        c,
        'オ' | 'コ'
            | 'ゴ'
            | 'ソ'
            | 'ゾ'
            | 'ト'
            | 'ド'
            | 'ノ'
            | 'ホ'
            | 'ボ'
            | 'ポ'
            | 'モ'
            | 'ヨ'
            | 'ロ'
    )
}

#[inline]
fn u_row(c: char) -> bool {
    matches!(
        c,
        'ウ' | 'ク' | 'グ' | 'ス' | 'ズ' | 'ツ' | 'ヌ' | 'フ' | 'ブ' | 'プ' | 'ム' | 'ユ' | 'ル'
    )
}

/// Fuzzy kana key into `out` (cleared by the caller); `scratch` is reused working space.
pub(super) fn fuzzy(
    input: &str,
    out: &mut String,
    scratch: &mut String,
) -> Result<(), FieldReject> {
    scratch.clear();
    strict(input, scratch)?;
    let mut chars = scratch.chars().peekable();
    let mut prev: Option<char> = None;
    while let Some(c) = chars.next() {
        let c = if c == 'ヴ' {
            match chars.peek() {
                Some('ァ') => {
                    chars.next();
                    'バ'
                }
                Some('ィ') => {
                    chars.next();
                    'ビ'
                }
                Some('ェ') => {
                    chars.next();
                    'ベ'
                }
                Some('ォ') => {
                    chars.next();
                    'ボ'
                }
                _ => 'ブ',
            }
        } else {
            fold_char(c)
        };
        let drop = c == 'ー'
            || (c == 'ウ' && prev.is_some_and(|p| o_row(p) || u_row(p)))
            || (c == 'オ' && prev.is_some_and(o_row));
        if !drop {
            out.push(c);
            prev = Some(c);
        }
    }
    if out.is_empty() {
        // Only long-vowel marks: not a name.
        return Err(FieldReject::InvalidKana);
    }
    Ok(())
}

/// Loose kana key into `out` (cleared by the caller): the fuzzy key without voiced marks.
pub(super) fn loose(
    input: &str,
    out: &mut String,
    scratch: &mut String,
) -> Result<(), FieldReject> {
    let mut fuzzy_key = String::new();
    fuzzy(input, &mut fuzzy_key, scratch)?;
    for c in fuzzy_key.chars() {
        // NFD splits a voiced kana into its base and U+3099 / U+309A; keep the base.
        out.extend(
            std::iter::once(c)
                .nfd()
                .filter(|m| !matches!(m, '\u{3099}' | '\u{309A}')),
        );
    }
    Ok(())
}

/// Rewrites a long-vowel `ウ` (after an o- or u-row kana) as `ー`: `サトウ` → `サトー`.
/// Used for spelling variants of legacy preimages, not for keys.
pub fn long_vowel_marks(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev: Option<char> = None;
    for c in s.chars() {
        let k = to_katakana(c);
        let long = k == 'ウ'
            && prev
                .map(to_katakana)
                .is_some_and(|p| o_row(fold_char(p)) || u_row(fold_char(p)));
        out.push(if long { 'ー' } else { c });
        prev = Some(c);
    }
    out
}

/// Writes small kana large (`キョウ` → `キヨウ`, also in hiragana). For spelling variants.
pub fn small_to_large(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'ァ' | 'ィ' | 'ゥ' | 'ェ' | 'ォ' | 'ッ' | 'ャ' | 'ュ' | 'ョ' | 'ヮ' => {
                fold_char(c)
            }
            'ぁ' | 'ぃ' | 'ぅ' | 'ぇ' | 'ぉ' | 'っ' | 'ゃ' | 'ゅ' | 'ょ' | 'ゎ' => {
                to_hiragana(fold_char(to_katakana(c)))
            }
            _ => c,
        })
        .collect()
}

/// Drops voiced and semi-voiced marks from kana (`ガ` → `カ`, `ぱ` → `は`). For spelling
/// variants.
pub fn unvoiced(s: &str) -> String {
    s.chars()
        .flat_map(|c| std::iter::once(c).nfd())
        .filter(|m| !matches!(m, '\u{3099}' | '\u{309A}'))
        .collect::<String>()
        .nfc()
        .collect()
}
