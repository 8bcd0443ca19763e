//! Property tests of the normalizers (SPEC.md §3.1): totality (no panic on any UTF-8),
//! idempotence, hiragana/katakana invariance of kana keys, and width invariance of the
//! identifier normalizers. `random_inputs_never_panic` is the seeded random-input run; set
//! `RENKETSU_FUZZ_ITERS=1000000` (in release mode) for the long run.

use proptest::prelude::*;
use renketsu_linkage::fuzzing::normalize_all;
use renketsu_linkage::normalize::kana::to_hiragana;
use renketsu_linkage::{NormalizeContext, Normalizer};

const CTX: NormalizeContext = NormalizeContext { today: 20_261_122 };

fn norm(kind: Normalizer, s: &str) -> Result<String, &'static str> {
    let mut out = String::new();
    kind.apply(s, &CTX, &mut out)
        .map(|()| out)
        .map_err(|e| e.code())
}

/// Full-width form of ASCII digits and letters (what Japanese systems often store).
fn full_width(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '!'..='~' => char::from_u32(c as u32 - 0x21 + 0xFF01).unwrap(),
            ' ' => '\u{3000}',
            c => c,
        })
        .collect()
}

/// A mixed alphabet of what identifier fields contain, and what breaks parsers.
fn japanese_text() -> impl Strategy<Value = String> {
    let atoms = prop::sample::select(vec![
        "ア",
        "カ",
        "ガ",
        "ヴ",
        "ァ",
        "ッ",
        "ャ",
        "ー",
        "ウ",
        "オ",
        "ヰ",
        "ヂ",
        "ｶ",
        "ﾞ",
        "ﾟ",
        "が",
        "ぁ",
        "ゔ",
        "・",
        "山",
        "田",
        "髙",
        "﨑",
        "𠮷",
        "々",
        "\u{FE00}",
        "\u{E0100}",
        "\u{3099}",
        "昭和",
        "平成",
        "令和",
        "元",
        "年",
        "月",
        "日",
        "S",
        "H",
        "R",
        "1",
        "2",
        "9",
        "0",
        "１",
        "２",
        "．",
        "-",
        "/",
        ".",
        " ",
        "\u{3000}",
        "〒",
        "〓",
        "\t",
        "\u{0}",
        "é",
        "\u{200B}",
        "Ⅻ",
        "㍻",
        "㈱",
    ]);
    prop::collection::vec(atoms, 0..12).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn total_and_idempotent_on_any_string(s in any::<String>()) {
        normalize_all(s.as_bytes());
    }

    #[test]
    fn total_and_idempotent_on_japanese_text(s in japanese_text()) {
        normalize_all(s.as_bytes());
    }

    #[test]
    fn kana_keys_ignore_script(s in "[ァ-ヶー]{1,10}") {
        let hira: String = s.chars().map(to_hiragana).collect();
        for kind in [Normalizer::KanaName, Normalizer::KanaNameFuzzy] {
            prop_assert_eq!(norm(kind, &s), norm(kind, &hira));
        }
    }

    #[test]
    fn identifiers_ignore_width(s in "[0-9]{1,12}", sep in prop::sample::select(vec!["", "-", " "])) {
        let ascii = if s.len() > 3 { format!("{}{sep}{}", &s[..3], &s[3..]) } else { s.clone() };
        let wide = full_width(&ascii);
        for kind in [
            Normalizer::InsurerNumber,
            Normalizer::InsuredSymbol,
            Normalizer::InsuredNumber,
            Normalizer::BranchNumber,
            Normalizer::CareInsuredNumber,
            Normalizer::PostalCode,
            Normalizer::Digits,
            Normalizer::BirthDate,
        ] {
            prop_assert_eq!(norm(kind, &ascii), norm(kind, &wide), "{:?}", kind);
        }
    }

    #[test]
    fn era_and_western_dates_agree(y in 1927u32..2026, m in 1u32..=12, d in 1u32..=28) {
        let iso = format!("{y:04}-{m:02}-{d:02}");
        let ymd = y * 10_000 + m * 100 + d;
        let (era, letter, start) = if ymd >= 20_190_501 {
            (5, 'R', 2019)
        } else if ymd >= 19_890_108 {
            (4, 'H', 1989)
        } else {
            (3, 'S', 1926)
        };
        let ey = y - start + 1;
        prop_assert_eq!(norm(Normalizer::BirthDate, &format!("{letter}{ey:02}.{m:02}.{d:02}")), Ok(iso.clone()));
        prop_assert_eq!(norm(Normalizer::BirthDate, &format!("{era}{ey:02}{m:02}{d:02}")), Ok(iso.clone()));
        prop_assert_eq!(norm(Normalizer::BirthDate, &full_width(&format!("{y}/{m}/{d}"))), Ok(iso));
    }
}

/// Seeded random inputs (splitmix64 over a mixed alphabet plus random scalar values).
#[test]
fn random_inputs_never_panic() {
    let iters: u64 = std::env::var("RENKETSU_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let alphabet: Vec<char> = "アカガヴァッャーウオヰヂｶﾞﾟがぁゔ・山田髙﨑𠮷々昭和平成令和元年月日SHRMT0123456789１２．-/. \u{3000}〒〓é\u{FE00}\u{3099}"
        .chars()
        .collect();
    let mut state = 0x5EED_u64;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut s = String::new();
    for _ in 0..iters {
        s.clear();
        let len = next() % 16;
        for _ in 0..len {
            let r = next();
            let c = if r % 8 == 0 {
                char::from_u32((r >> 8) as u32 % 0x11_0000).unwrap_or('\u{FFFD}')
            } else {
                alphabet[(r >> 8) as usize % alphabet.len()]
            };
            s.push(c);
        }
        normalize_all(s.as_bytes());
    }
}
