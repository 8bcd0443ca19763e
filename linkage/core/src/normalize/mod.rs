//! Field normalizers: raw identifier text → canonical value, or a typed rejection.
//!
//! Every normalizer is a pure function of its input (plus the [`NormalizeContext`], which
//! carries "today" so that future dates can be refused deterministically). Each one is
//! idempotent: normalizing a canonical value returns it unchanged. The canonical forms and the
//! reason codes are normative and listed in SPEC.md §3.

use std::cell::RefCell;
use std::fmt;

use serde::Deserialize;
use unicode_normalization::UnicodeNormalization;

mod date;
mod ids;
pub mod kana;
pub mod kanji;

pub use date::{
    MAX_BIRTH_DATE_NEIGHBOURS, MEAN_BIRTH_DATE_NEIGHBOURS, birth_date_neighbours, days_in_month,
};
pub use ids::insurer_check_digit;

/// Which normalizer a schema field uses (`normalizer = "…"` in the schema, SPEC.md §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalizer {
    /// Leading/trailing white space trimmed, nothing else. For values already canonical.
    Raw,
    /// Unicode NFKC, lower case, runs of white space (ASCII and U+3000) folded to one ASCII
    /// space, trimmed. Folds full-/half-width forms of Latin letters, digits and katakana.
    Text,
    /// NFKC, then spaces and hyphens (`-`, `‐`, `−`, `ー` after NFKC) removed; the rest must be
    /// ASCII digits. Leading zeros are kept: `"007"` stays `"007"`.
    Digits,
    /// Gregorian calendar date → `YYYY-MM-DD`. Accepts `YYYY-MM-DD`, `YYYYMMDD` and `YYYY/M/D`
    /// (also with `-` or `.` separators), after NFKC (so full-width digits work).
    Date,
    /// Administrative sex → `1` (male), `2` (female), `0` (not known), `9` (not applicable),
    /// the codes of JIS X 0303. Accepts those digits, `M`/`F`, `male`/`female`, `男`/`女`.
    Sex,
    /// Strict kana name key: NFKC, hiragana → katakana, spaces and `・` dropped ([`kana`]).
    KanaName,
    /// Fuzzy kana name key: the strict key with small kana, ヴ, ヰヱヲ, ヂヅ and long vowels
    /// folded ([`kana`]).
    KanaNameFuzzy,
    /// Loose kana name key: the fuzzy key with voiced marks dropped (`ガ`→`カ`) ([`kana`]).
    KanaNameLoose,
    /// Kanji name key: NFKC, variation selectors and spaces dropped, variant glyphs folded
    /// ([`kanji`]).
    KanjiName,
    /// Birth date → `YYYY-MM-DD`, reading Western and Japanese era (和暦) forms.
    BirthDate,
    /// 保険者番号: 6 or 8 digits after width folding, 検証番号 (check digit) verified; `00` +
    /// 6 digits is written as the 6-digit 市町村国保 number it is.
    InsurerNumber,
    /// 被保険者記号: width folded, spaces and hyphens removed, Latin upper case.
    InsuredSymbol,
    /// 被保険者番号: as `insured_symbol`.
    InsuredNumber,
    /// 枝番: two digits after width folding (a single digit gets its leading zero back).
    BranchNumber,
    /// 介護保険被保険者番号: ten digits after width folding and hyphen removal.
    CareInsuredNumber,
    /// 郵便番号: seven digits; `〒`, spaces and hyphens tolerated.
    PostalCode,
    /// The legacy canonicalization of hash-only databases: NFKC, then all white space removed.
    Legacy,
    /// A SHA-256 digest: 64 hex digits, written lower case.
    Digest,
}

impl Normalizer {
    /// Every normalizer, in schema-name order of appearance in SPEC.md §3.1.
    pub const ALL: [Normalizer; 18] = [
        Self::Raw,
        Self::Text,
        Self::Digits,
        Self::Date,
        Self::Sex,
        Self::KanaName,
        Self::KanaNameFuzzy,
        Self::KanaNameLoose,
        Self::KanjiName,
        Self::BirthDate,
        Self::InsurerNumber,
        Self::InsuredSymbol,
        Self::InsuredNumber,
        Self::BranchNumber,
        Self::CareInsuredNumber,
        Self::PostalCode,
        Self::Legacy,
        Self::Digest,
    ];

    /// The schema name of this normalizer.
    pub fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Text => "text",
            Self::Digits => "digits",
            Self::Date => "date",
            Self::Sex => "sex",
            Self::KanaName => "kana_name",
            Self::KanaNameFuzzy => "kana_name_fuzzy",
            Self::KanaNameLoose => "kana_name_loose",
            Self::KanjiName => "kanji_name",
            Self::BirthDate => "birth_date",
            Self::InsurerNumber => "insurer_number",
            Self::InsuredSymbol => "insured_symbol",
            Self::InsuredNumber => "insured_number",
            Self::BranchNumber => "branch_number",
            Self::CareInsuredNumber => "care_insured_number",
            Self::PostalCode => "postal_code",
            Self::Legacy => "legacy",
            Self::Digest => "digest",
        }
    }

    /// The normalizer with schema name `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|n| n.name() == name)
    }

    /// Normalizes `input` into `out` (cleared first). On error `out` is left empty.
    ///
    /// # Errors
    /// A [`FieldReject`] naming why the value cannot be used; an empty or all-space input is
    /// always [`FieldReject::Missing`].
    pub fn apply(
        self,
        input: &str,
        ctx: &NormalizeContext,
        out: &mut String,
    ) -> Result<(), FieldReject> {
        self.apply_once(input, ctx, out)?;
        if out.is_ascii() || matches!(self, Self::Raw | Self::Digest) {
            // ASCII is NFKC; `raw` (a trim) and `digest` are idempotent by construction.
            return Ok(());
        }
        // Removing characters after NFKC (spaces, hyphens, marks) can leave a string that is
        // not NFKC itself (`ヰ-゛` → `ヰ゛`, which composes to `ヸ`). Canonical values must be
        // fixpoints, so re-apply until stable; ASCII and NFKC-stable values skip this.
        let mut rounds = 0;
        while !out.chars().all(|c| nfkc_inert(c) && c != '\u{3000}')
            && unicode_normalization::is_nfkc_quick(out.chars())
                != unicode_normalization::IsNormalized::Yes
        {
            let prev = std::mem::take(out);
            self.apply_once(&prev, ctx, out)?;
            rounds += 1;
            if *out == prev || rounds == 4 {
                break;
            }
        }
        Ok(())
    }

    fn apply_once(
        self,
        input: &str,
        ctx: &NormalizeContext,
        out: &mut String,
    ) -> Result<(), FieldReject> {
        out.clear();
        let r = match self {
            Self::Raw => raw(input, out),
            Self::Text => text(input, out),
            Self::Digits => digits(input, out),
            Self::Date => date::date(input, ctx, out),
            Self::Sex => sex(input, out),
            Self::KanaName => kana::strict(input, out),
            Self::KanaNameFuzzy => {
                SCRATCH.with_borrow_mut(|scratch| kana::fuzzy(input, out, scratch))
            }
            Self::KanaNameLoose => {
                SCRATCH.with_borrow_mut(|scratch| kana::loose(input, out, scratch))
            }
            Self::KanjiName => kanji::kanji(input, out),
            Self::BirthDate => date::birth_date(input, ctx, out),
            Self::InsurerNumber => ids::insurer_number(input, out),
            Self::InsuredSymbol | Self::InsuredNumber => ids::insured_code(input, out),
            Self::BranchNumber => ids::branch_number(input, out),
            Self::CareInsuredNumber => ids::care_insured_number(input, out),
            Self::PostalCode => ids::postal_code(input, out),
            Self::Legacy => ids::legacy(input, out),
            Self::Digest => ids::digest(input, out),
        };
        if r.is_err() {
            out.clear();
        }
        r
    }
}

thread_local! {
    /// Working space of the fuzzy kana key (no allocation per value).
    static SCRATCH: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Why one field value could not be used. The `code()` strings are the stable reason codes of
/// SPEC.md §3.2; they appear in `rejects-*.csv` details and in `summary.json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FieldReject {
    /// The value is empty or white space only.
    Missing,
    /// Not a date in an accepted format, or not a real calendar date (e.g. 2023-02-29).
    InvalidDate,
    /// A real date after the run's "today".
    FutureDate,
    /// A year before 1850: taken as a typing error rather than a living person.
    ImplausibleDate,
    /// An era date outside its era (平成32年, 昭和64年1月8日), or era year 0.
    EraOutOfRange,
    /// Not one of the accepted spellings of sex.
    InvalidSex,
    /// Contains something other than digits, spaces and hyphens.
    InvalidDigits,
    /// A kana name with characters other than kana (after NFKC and hiragana → katakana).
    InvalidKana,
    /// A kanji name with a substitution mark (〓, ●, ■, ?) for an unrepresentable character.
    UnrepresentableKanji,
    /// An insurer number that is not 6 or 8 digits.
    InvalidInsurerNumber,
    /// An insurer number whose check digit (検証番号) is wrong.
    InsurerCheckDigit,
    /// A branch number (枝番) that is not two digits.
    InvalidBranchNumber,
    /// A care-insurance insured number that is not ten digits.
    InvalidCareInsuredNumber,
    /// A postal code that is not seven digits.
    InvalidPostalCode,
    /// A digest column value that is not 64 hexadecimal digits.
    InvalidDigest,
}

impl FieldReject {
    /// Every variant, in code order (for reports).
    pub const ALL: [FieldReject; 15] = [
        Self::Missing,
        Self::InvalidDate,
        Self::FutureDate,
        Self::ImplausibleDate,
        Self::EraOutOfRange,
        Self::InvalidSex,
        Self::InvalidDigits,
        Self::InvalidKana,
        Self::UnrepresentableKanji,
        Self::InvalidInsurerNumber,
        Self::InsurerCheckDigit,
        Self::InvalidBranchNumber,
        Self::InvalidCareInsuredNumber,
        Self::InvalidPostalCode,
        Self::InvalidDigest,
    ];

    /// Stable reason code (SPEC.md §3.2).
    pub fn code(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::InvalidDate => "invalid_date",
            Self::FutureDate => "future_date",
            Self::ImplausibleDate => "implausible_date",
            Self::EraOutOfRange => "era_out_of_range",
            Self::InvalidSex => "invalid_sex",
            Self::InvalidDigits => "invalid_digits",
            Self::InvalidKana => "invalid_kana",
            Self::UnrepresentableKanji => "unrepresentable_kanji",
            Self::InvalidInsurerNumber => "invalid_insurer_number",
            Self::InsurerCheckDigit => "insurer_check_digit",
            Self::InvalidBranchNumber => "invalid_branch_number",
            Self::InvalidCareInsuredNumber => "invalid_care_insured_number",
            Self::InvalidPostalCode => "invalid_postal_code",
            Self::InvalidDigest => "invalid_digest",
        }
    }
}

impl fmt::Display for FieldReject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Run-wide inputs of the normalizers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NormalizeContext {
    /// "Today" as `YYYYMMDD`; dates after it are [`FieldReject::FutureDate`]. Injected (from a
    /// clock in the binaries, fixed in tests) so that results are reproducible.
    pub today: u32,
}

impl NormalizeContext {
    /// A context whose "today" is the given calendar day.
    pub fn with_today(year: u32, month: u32, day: u32) -> Self {
        Self {
            today: year * 10_000 + month * 100 + day,
        }
    }
}

impl NormalizeContext {
    /// A context whose "today" is the UTC calendar day containing `unix_seconds`
    /// (civil-from-days, H. Hinnant, "chrono-Compatible Low-Level Date Algorithms").
    pub fn from_unix_seconds(unix_seconds: i64) -> Self {
        let z = unix_seconds.div_euclid(86_400) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        let clamp = |v: i64| u32::try_from(v).unwrap_or(0);
        Self::with_today(clamp(year), clamp(month), clamp(day))
    }
}

/// Unicode version of the NFKC tables in use, recorded in run metadata: a newer Unicode
/// assigns characters that an older table passes through unchanged.
pub fn unicode_version() -> (u8, u8, u8) {
    unicode_normalization::UNICODE_VERSION
}

pub(crate) fn is_space(c: char) -> bool {
    c.is_whitespace() || c == '\u{3000}'
}

/// Feeds the NFKC form of `input` to `f` one character at a time, without allocating
/// (ASCII is its own NFKC form, so it skips the decomposition machinery).
#[inline]
pub(crate) fn for_each_nfkc(input: &str, mut f: impl FnMut(char)) {
    if input.is_ascii() {
        input.bytes().for_each(|b| f(char::from(b)));
    } else if input.chars().all(nfkc_inert) {
        // Every character is its own NFKC form and cannot compose with a neighbour; only
        // U+3000 maps (to U+0020), as NFKC maps it.
        input
            .chars()
            .for_each(|c| f(if c == '\u{3000}' { ' ' } else { c }));
    } else {
        input.nfkc().for_each(f);
    }
}

/// Whether `c` is left unchanged by NFKC and takes no part in canonical composition, so that a
/// string of such characters is NFKC whatever their order, and stays NFKC when some are
/// removed. Ranges: ASCII, hiragana (U+3041–3096, ゝゞ), katakana (U+30A1–30FE: letters, `・`,
/// `ー`, ヽヾ), 々 〆 〇, CJK ideographs (U+3400–4DBF, U+4E00–9FFF, U+20000–2A6DF,
/// U+2A700–2EBEF, U+30000–3134F; not the compatibility blocks), and U+3000, which NFKC maps to
/// U+0020 (the caller does the same). Combining marks, spacing voiced marks (U+309B/C),
/// half-width and full-width forms are not inert: they take the full NFKC path.
#[inline]
pub(crate) fn nfkc_inert(c: char) -> bool {
    matches!(c as u32,
        0x00..=0x7F
        | 0x3000
        | 0x3005..=0x3007
        | 0x3041..=0x3096
        | 0x309D..=0x309E
        | 0x30A1..=0x30FE
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0x2_0000..=0x2_A6DF
        | 0x2_A700..=0x2_EBEF
        | 0x3_0000..=0x3_134F)
}

/// NFKC of a short value, trimmed, in a stack buffer; `None` if longer than the buffer
/// (no accepted date or sex spelling is that long).
pub(crate) fn nfkc_small<'b>(input: &str, buf: &'b mut [u8; 48]) -> Option<&'b str> {
    let mut len = 0;
    let mut overflow = false;
    for_each_nfkc(input, |c| {
        if overflow {
            return;
        }
        if len + c.len_utf8() > buf.len() {
            overflow = true;
        } else {
            len += c.encode_utf8(&mut buf[len..]).len();
        }
    });
    if overflow {
        return None;
    }
    let s = std::str::from_utf8(&buf[..len]).expect("encoded from chars");
    Some(s.trim_matches(is_space))
}

fn raw(input: &str, out: &mut String) -> Result<(), FieldReject> {
    let t = input.trim_matches(is_space);
    if t.is_empty() {
        return Err(FieldReject::Missing);
    }
    out.push_str(t);
    Ok(())
}

fn text(input: &str, out: &mut String) -> Result<(), FieldReject> {
    let mut pending_space = false;
    for_each_nfkc(input, |c| {
        if is_space(c) {
            pending_space = !out.is_empty();
        } else if !c.is_control() {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            if c.is_ascii() {
                out.push(c.to_ascii_lowercase());
            } else {
                out.extend(c.to_lowercase());
            }
        }
    });
    if out.is_empty() {
        return Err(FieldReject::Missing);
    }
    Ok(())
}

fn digits(input: &str, out: &mut String) -> Result<(), FieldReject> {
    let mut invalid = false;
    let mut only_space = true;
    for_each_nfkc(input, |c| match c {
        '0'..='9' => {
            only_space = false;
            out.push(c);
        }
        '-' | '‐' | '‑' | '−' | 'ー' | '―' => only_space = false,
        c if is_space(c) => {}
        _ => invalid = true,
    });
    if invalid {
        return Err(FieldReject::InvalidDigits);
    }
    if out.is_empty() {
        // Only separators (or nothing): absent if blank, else not a number.
        return Err(if only_space {
            FieldReject::Missing
        } else {
            FieldReject::InvalidDigits
        });
    }
    Ok(())
}

fn sex(input: &str, out: &mut String) -> Result<(), FieldReject> {
    // The common case, one ASCII character: no NFKC needed.
    if let [b] = input.as_bytes() {
        let code = match b.to_ascii_lowercase() {
            b'1' | b'm' => "1",
            b'2' | b'f' => "2",
            b'0' | b'u' => "0",
            b'9' => "9",
            b' ' | b'\t' => return Err(FieldReject::Missing),
            _ => return Err(FieldReject::InvalidSex),
        };
        out.push_str(code);
        return Ok(());
    }
    let mut buf = [0u8; 48];
    let s = nfkc_small(input, &mut buf).ok_or(FieldReject::InvalidSex)?;
    let is = |words: &[&str]| words.iter().any(|w| s.eq_ignore_ascii_case(w));
    let code = if s.is_empty() {
        return Err(FieldReject::Missing);
    } else if is(&["1", "m", "male", "男", "男性"]) {
        "1"
    } else if is(&["2", "f", "female", "女", "女性"]) {
        "2"
    } else if is(&["0", "u", "unknown", "不明"]) {
        "0"
    } else if s == "9" {
        "9"
    } else {
        return Err(FieldReject::InvalidSex);
    };
    out.push_str(code);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: NormalizeContext = NormalizeContext { today: 20_261_122 };

    fn n(kind: Normalizer, s: &str) -> Result<String, FieldReject> {
        let mut out = String::new();
        kind.apply(s, &CTX, &mut out).map(|()| out)
    }

    #[test]
    fn today_from_unix_time() {
        assert_eq!(NormalizeContext::from_unix_seconds(0).today, 19_700_101);
        assert_eq!(
            NormalizeContext::from_unix_seconds(951_782_400).today,
            20_000_229
        );
        // 2026-11-22T23:59:59Z
        assert_eq!(
            NormalizeContext::from_unix_seconds(1_795_391_999).today,
            20_261_122
        );
    }

    #[test]
    fn golden_cases() {
        use FieldReject::*;
        use Normalizer::*;
        let cases: &[(Normalizer, &str, Result<&str, FieldReject>)] = &[
            (Raw, "  abc ", Ok("abc")),
            (Raw, "\u{3000}", Err(Missing)),
            (Text, " Sarah  Bradshaw ", Ok("sarah bradshaw")),
            (Text, "ＳＡＲＡＨ", Ok("sarah")),
            (Text, "ﾔﾏﾀﾞ\u{3000}ﾀﾛｳ", Ok("ヤマダ タロウ")),
            (Text, "", Err(Missing)),
            (Digits, "０７１５-９５７４", Ok("07159574")),
            (Digits, "715 9574", Ok("7159574")),
            (Digits, "12a4", Err(InvalidDigits)),
            (Digits, " - ", Err(InvalidDigits)),
            (Digits, "", Err(Missing)),
            (Date, "1964-03-01", Ok("1964-03-01")),
            (Date, "19510813", Ok("1951-08-13")),
            (Date, "1970/3/5", Ok("1970-03-05")),
            (Date, "１９７０．０３．１５", Ok("1970-03-15")),
            (Date, "2000-02-29", Ok("2000-02-29")),
            (Date, "1900-02-29", Err(InvalidDate)),
            (Date, "2023-13-01", Err(InvalidDate)),
            (Date, "4250520", Err(InvalidDate)),
            (Date, "1700-01-01", Err(ImplausibleDate)),
            (Date, "2026-11-23", Err(FutureDate)),
            (Date, "2026-11-22", Ok("2026-11-22")),
            (Date, "1970-3-15-1", Err(InvalidDate)),
            (Sex, "F", Ok("2")),
            (Sex, "male", Ok("1")),
            (Sex, "男", Ok("1")),
            (Sex, "２", Ok("2")),
            (Sex, "0", Ok("0")),
            (Sex, "x", Err(InvalidSex)),
            (Sex, " ", Err(Missing)),
        ];
        for (kind, input, want) in cases {
            let got = n(*kind, input);
            assert_eq!(got.as_deref().map_err(|e| *e), *want, "{kind:?} {input:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn idempotent_and_total(s in "\\PC{0,24}") {
            for kind in [Normalizer::Raw, Normalizer::Text, Normalizer::Digits, Normalizer::Date, Normalizer::Sex] {
                if let Ok(once) = n(kind, &s) {
                    let twice = n(kind, &once);
                    proptest::prop_assert_eq!(twice.as_deref(), Ok(once.as_str()), "{:?}", kind);
                }
            }
        }

        #[test]
        fn valid_dates_round_trip(y in 1850u32..2026, m in 1u32..=12, d in 1u32..=28) {
            let iso = format!("{y:04}-{m:02}-{d:02}");
            proptest::prop_assert_eq!(n(Normalizer::Date, &format!("{y}{m:02}{d:02}")), Ok(iso.clone()));
            proptest::prop_assert_eq!(n(Normalizer::Date, &format!("{y}/{m}/{d}")), Ok(iso));
        }
    }
}
