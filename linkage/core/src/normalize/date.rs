//! Dates: the generic `date` normalizer and the Japanese `birth_date` normalizer with era
//! (和暦) forms (SPEC.md §3.1).
//!
//! Era first days (Cabinet orders; domain notes): 明治 1868-01-25 (code 1, M), 大正 1912-07-30
//! (2, T), 昭和 1926-12-25 (3, S), 平成 1989-01-08 (4, H), 令和 2019-05-01 (5, R). Year 1 of
//! an era is written 元年. An era date outside its era (平成32年, 昭和64年1月8日) is refused
//! with `era_out_of_range`, not mapped: the value is ambiguous and a wrong guess links the
//! wrong people.

use super::{FieldReject, NormalizeContext, is_space, nfkc_small};

/// Days in `month` of `year` (proleptic Gregorian); 0 for an invalid month.
pub fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        _ => 0,
    }
}

/// A Japanese era: first day as `YYYYMMDD`.
#[derive(Clone, Copy, Debug)]
struct Era {
    start: u32,
}

/// 明治, 大正, 昭和, 平成, 令和 (codes 1–5 in receipts).
const ERAS: [Era; 5] = [
    Era { start: 18_680_125 },
    Era { start: 19_120_730 },
    Era { start: 19_261_225 },
    Era { start: 19_890_108 },
    Era { start: 20_190_501 },
];

fn era_by_letter(c: char) -> Option<usize> {
    match c.to_ascii_uppercase() {
        'M' => Some(0),
        'T' => Some(1),
        'S' => Some(2),
        'H' => Some(3),
        'R' => Some(4),
        _ => None,
    }
}

fn era_by_name(s: &str) -> Option<(usize, &str)> {
    const NAMES: [(&str, usize); 10] = [
        ("明治", 0),
        ("大正", 1),
        ("昭和", 2),
        ("平成", 3),
        ("令和", 4),
        ("明", 0),
        ("大", 1),
        ("昭", 2),
        ("平", 3),
        ("令", 4),
    ];
    NAMES
        .iter()
        .find_map(|(name, i)| s.strip_prefix(name).map(|rest| (*i, rest)))
}

fn parse_num(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 4 {
        return None;
    }
    s.bytes().try_fold(0u32, |acc, b| {
        b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
    })
}

/// `YYYYMMDD` or `YYYY-MM-DD` in plain ASCII (the common case): parsed without NFKC.
#[inline]
fn ascii_iso(input: &str) -> Option<(u32, u32, u32)> {
    let b = input.as_bytes();
    let n = |i: usize, len: usize| {
        b[i..i + len].iter().try_fold(0u32, |acc, x| {
            x.is_ascii_digit().then(|| acc * 10 + u32::from(x - b'0'))
        })
    };
    match b.len() {
        8 => Some((n(0, 4)?, n(4, 2)?, n(6, 2)?)),
        10 if b[4] == b'-' && b[7] == b'-' => Some((n(0, 4)?, n(5, 2)?, n(8, 2)?)),
        _ => None,
    }
}

/// Checks a Gregorian date and writes it as `YYYY-MM-DD`.
fn finish(
    y: u32,
    m: u32,
    d: u32,
    ctx: &NormalizeContext,
    out: &mut String,
) -> Result<(), FieldReject> {
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return Err(FieldReject::InvalidDate);
    }
    if y < 1850 {
        return Err(FieldReject::ImplausibleDate);
    }
    if y * 10_000 + m * 100 + d > ctx.today {
        return Err(FieldReject::FutureDate);
    }
    let digit = |v: u32| char::from(b'0' + (v % 10) as u8);
    out.extend([
        digit(y / 1000),
        digit(y / 100),
        digit(y / 10),
        digit(y),
        '-',
    ]);
    out.extend([digit(m / 10), digit(m), '-', digit(d / 10), digit(d)]);
    Ok(())
}

/// Converts era year `ey` (≥ 1), month and day of era `era` to Gregorian, checking that the
/// day lies inside the era.
fn era_to_gregorian(era: usize, ey: u32, m: u32, d: u32) -> Result<(u32, u32, u32), FieldReject> {
    if ey == 0 || ey > 99 {
        return Err(FieldReject::EraOutOfRange);
    }
    let y = ERAS[era].start / 10_000 + ey - 1;
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return Err(FieldReject::InvalidDate);
    }
    let ymd = y * 10_000 + m * 100 + d;
    let end = ERAS.get(era + 1).map_or(u32::MAX, |e| e.start);
    if ymd < ERAS[era].start || ymd >= end {
        return Err(FieldReject::EraOutOfRange);
    }
    Ok((y, m, d))
}

/// Splits `Y?M?D` on one of `- / .` (the same separator twice).
fn split3(s: &str) -> Option<(&str, &str, &str)> {
    let sep = s.chars().find(|c| matches!(c, '-' | '/' | '.'))?;
    let mut parts = s.split(sep);
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(y), Some(m), Some(d), None) if m.len() <= 2 && d.len() <= 2 => Some((y, m, d)),
        _ => None,
    }
}

/// Parses `<y>年<m>月<d>日` with `元` allowed as the year; returns the raw year text.
fn split_kanji(s: &str) -> Option<(&str, &str, &str)> {
    let (y, rest) = s.split_once('年')?;
    let (m, rest) = rest.split_once('月')?;
    let d = rest
        .strip_suffix("生まれ")
        .or_else(|| rest.strip_suffix('生'))
        .unwrap_or(rest);
    let d = d.strip_suffix('日').unwrap_or(d);
    Some((y, m, d))
}

fn gregorian(s: &str) -> Result<(u32, u32, u32), FieldReject> {
    let (y, m, d) = if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()) {
        (&s[0..4], &s[4..6], &s[6..8])
    } else {
        split3(s).ok_or(FieldReject::InvalidDate)?
    };
    if y.len() != 4 {
        return Err(FieldReject::InvalidDate);
    }
    match (parse_num(y), parse_num(m), parse_num(d)) {
        (Some(y), Some(m), Some(d)) => Ok((y, m, d)),
        _ => Err(FieldReject::InvalidDate),
    }
}

/// NFKC with every white-space character removed (`平成 元年 1月 8日`), in `buf`.
fn compact<'b>(input: &str, buf: &'b mut [u8; 48]) -> Result<&'b str, FieldReject> {
    let mut tmp = [0u8; 48];
    let s = nfkc_small(input, &mut tmp).ok_or(FieldReject::InvalidDate)?;
    let mut len = 0;
    for c in s.chars().filter(|&c| !is_space(c)) {
        len += c.encode_utf8(&mut buf[len..]).len();
    }
    if len == 0 {
        return Err(FieldReject::Missing);
    }
    Ok(std::str::from_utf8(&buf[..len]).expect("encoded from chars"))
}

/// The generic `date` normalizer: `YYYYMMDD`, `YYYY-M-D` with `-`, `/` or `.`.
pub(super) fn date(
    input: &str,
    ctx: &NormalizeContext,
    out: &mut String,
) -> Result<(), FieldReject> {
    if let Some((y, m, d)) = ascii_iso(input) {
        return finish(y, m, d, ctx, out);
    }
    let mut buf = [0u8; 48];
    let s = compact(input, &mut buf)?;
    let (y, m, d) = gregorian(s)?;
    finish(y, m, d, ctx, out)
}

/// The `birth_date` normalizer: everything `date` reads, plus `YYYY年M月D日`, era forms
/// (`S45.03.15`, `S45/3/15`, `S450315`, `昭和45年3月15日`, `昭和元年…`, `昭45.3.15`) and the
/// receipt form `GYYMMDD` (era code 1–5 and two-digit year, month, day).
pub(super) fn birth_date(
    input: &str,
    ctx: &NormalizeContext,
    out: &mut String,
) -> Result<(), FieldReject> {
    if let Some((y, m, d)) = ascii_iso(input) {
        return finish(y, m, d, ctx, out);
    }
    let mut buf = [0u8; 48];
    let s = compact(input, &mut buf)?;
    let bytes = s.as_bytes();
    // Receipt GYYMMDD: seven digits, era code first.
    if bytes.len() == 7 && bytes.iter().all(u8::is_ascii_digit) {
        let era = usize::from(bytes[0] - b'0');
        if !(1..=5).contains(&era) {
            return Err(FieldReject::InvalidDate);
        }
        let n = |i: usize| u32::from(bytes[i] - b'0') * 10 + u32::from(bytes[i + 1] - b'0');
        let (y, m, d) = era_to_gregorian(era - 1, n(1), n(3), n(5))?;
        return finish(y, m, d, ctx, out);
    }
    // Era by letter: S45.03.15, S45/3/15, S450315.
    if let Some(era) = s.chars().next().and_then(era_by_letter) {
        let rest = &s[1..];
        let (y, m, d) = if rest.len() == 6 && rest.bytes().all(|b| b.is_ascii_digit()) {
            (&rest[0..2], &rest[2..4], &rest[4..6])
        } else {
            split3(rest).ok_or(FieldReject::InvalidDate)?
        };
        let (Some(y), Some(m), Some(d)) = (parse_num(y), parse_num(m), parse_num(d)) else {
            return Err(FieldReject::InvalidDate);
        };
        let (y, m, d) = era_to_gregorian(era, y, m, d)?;
        return finish(y, m, d, ctx, out);
    }
    // Era by name: 昭和45年3月15日, 昭和元年12月25日, 昭45.3.15.
    if let Some((era, rest)) = era_by_name(s) {
        let rest = rest.trim_start();
        let (y, m, d) = split_kanji(rest)
            .or_else(|| split3(rest))
            .ok_or(FieldReject::InvalidDate)?;
        let y = if y == "元" { Some(1) } else { parse_num(y) };
        let (Some(y), Some(m), Some(d)) = (y, parse_num(m), parse_num(d)) else {
            return Err(FieldReject::InvalidDate);
        };
        let (y, m, d) = era_to_gregorian(era, y, m, d)?;
        return finish(y, m, d, ctx, out);
    }
    // Western with kanji separators: 1970年3月15日.
    if let Some((y, m, d)) = split_kanji(s) {
        if y.len() != 4 {
            return Err(FieldReject::InvalidDate);
        }
        let (Some(y), Some(m), Some(d)) = (parse_num(y), parse_num(m), parse_num(d)) else {
            return Err(FieldReject::InvalidDate);
        };
        return finish(y, m, d, ctx, out);
    }
    let (y, m, d) = gregorian(s)?;
    finish(y, m, d, ctx, out)
}

/// Upper bound on the number of [`birth_date_neighbours`] of one date: 8 digits × 9 other
/// digits, 7 adjacent transpositions, 1 day↔month swap.
pub const MAX_BIRTH_DATE_NEIGHBOURS: usize = 8 * 9 + 7 + 1;

/// Mean number of [`birth_date_neighbours`] of a birth date, over the days from 1920-01-01 to
/// 2026-11-22 (35.4; from 13 to 46 per date): the factor by which a chance agreement at a
/// neighbour level is at least as likely as at the date itself when birth dates are locally
/// uniform (SPEC.md §9.3).
pub const MEAN_BIRTH_DATE_NEIGHBOURS: f64 = 35.0;

/// The plausible mis-recordings of a birth date (SPEC.md §4.4, `date_neighbours`): the dates
/// one keying error away from `yyyymmdd` (8 ASCII digits), under the error classes the record
/// linkage literature reports for dates and numbers — a **single-digit substitution** and an
/// **adjacent-digit transposition** (Damerau 1964, "A technique for computer detection and
/// correction of spelling errors", CACM 7(3): over 80 % of errors are one such edit), and the
/// **day and month swapped** (Christen 2012, *Data Matching*, ch. 5 on comparing dates). Every neighbour is a valid Gregorian date from 1850 (the `birth_date`
/// normalizer's lower bound) to `today` (`YYYYMMDD` as a number); the date itself and
/// duplicates are left out.
///
/// Writes the neighbours as `YYYYMMDD` into `out` (cleared first), in ascending order; at
/// most [`MAX_BIRTH_DATE_NEIGHBOURS`]. A `yyyymmdd` that is not 8 ASCII digits gives none.
pub fn birth_date_neighbours(yyyymmdd: &str, today: u32, out: &mut Vec<String>) {
    out.clear();
    let Ok(digits) = <[u8; 8]>::try_from(yyyymmdd.as_bytes()) else {
        return;
    };
    if !digits.iter().all(u8::is_ascii_digit) {
        return;
    }
    let value = |d: &[u8; 8]| {
        d.iter()
            .fold(0u32, |acc, &b| acc * 10 + u32::from(b - b'0'))
    };
    let own = value(&digits);
    let mut found: Vec<u32> = Vec::with_capacity(MAX_BIRTH_DATE_NEIGHBOURS);
    let mut consider = |d: [u8; 8]| {
        let v = value(&d);
        let (y, m, day) = (v / 10_000, v / 100 % 100, v % 100);
        if v != own
            && (1..=12).contains(&m)
            && day >= 1
            && day <= days_in_month(y, m)
            && y >= 1850
            && v <= today
        {
            found.push(v);
        }
    };
    for i in 0..8 {
        for c in b'0'..=b'9' {
            if c != digits[i] {
                let mut d = digits;
                d[i] = c;
                consider(d);
            }
        }
    }
    for i in 0..7 {
        if digits[i] != digits[i + 1] {
            let mut d = digits;
            d.swap(i, i + 1);
            consider(d);
        }
    }
    let mut d = digits;
    d.copy_within(4..6, 6);
    d[4..6].copy_from_slice(&digits[6..8]);
    consider(d);
    found.sort_unstable();
    found.dedup();
    out.extend(found.into_iter().map(|v| format!("{v:08}")));
}

#[cfg(test)]
mod neighbour_tests {
    use super::*;

    fn neighbours(date: &str, today: u32) -> Vec<String> {
        let mut out = Vec::new();
        birth_date_neighbours(date, today, &mut out);
        out
    }

    #[test]
    fn neighbours_of_a_date_are_one_keying_error_away_and_valid() {
        let n = neighbours("19570712", 20_261_122);
        // Day and month swapped, an adjacent transposition, a substitution in each part.
        for want in [
            "19571207", "19570721", "19750712", "19580712", "19570812", "19570719",
        ] {
            assert!(n.contains(&want.to_owned()), "{want} missing from {n:?}");
        }
        // Not the date itself, no invalid month or day, nothing in the future, no duplicate.
        assert!(!n.contains(&"19570712".to_owned()));
        for bad in ["19571712", "19570742", "29570712", "09570712"] {
            assert!(!n.contains(&bad.to_owned()), "{bad} in {n:?}");
        }
        let mut sorted = n.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, n);
        for d in &n {
            let mut s = String::new();
            let ctx = NormalizeContext { today: 20_261_122 };
            birth_date(d, &ctx, &mut s).unwrap_or_else(|e| panic!("{d}: {e:?}"));
            let differing = d
                .bytes()
                .zip("19570712".bytes())
                .filter(|(a, b)| a != b)
                .count();
            assert!((1..=4).contains(&differing), "{d}");
        }
        // 41, as an independent enumeration (Python, `calendar.monthrange`) also counts: 19
        // substitutions in the year (1857, 19x7, 195x), 8 in the month, 11 in the day, two
        // transpositions (19750712, 19570721) and the swap (19571207).
        assert_eq!(n.len(), 41, "{n:?}");
        assert!(n.len() <= MAX_BIRTH_DATE_NEIGHBOURS);
    }

    #[test]
    fn the_mean_number_of_neighbours_is_the_documented_one() {
        let (mut sum, mut days, mut lo, mut hi) = (0usize, 0usize, usize::MAX, 0usize);
        let mut n = Vec::new();
        for y in 1920..=2026u32 {
            for m in 1..=12u32 {
                for d in 1..=days_in_month(y, m) {
                    let v = y * 10_000 + m * 100 + d;
                    if v > 20_261_122 {
                        continue;
                    }
                    birth_date_neighbours(&format!("{v:08}"), 20_261_122, &mut n);
                    sum += n.len();
                    days += 1;
                    lo = lo.min(n.len());
                    hi = hi.max(n.len());
                }
            }
        }
        let mean = sum as f64 / days as f64;
        assert!((mean - MEAN_BIRTH_DATE_NEIGHBOURS).abs() < 0.5, "{mean}");
        assert_eq!((lo, hi), (13, 46));
    }

    #[test]
    fn neighbours_respect_today_and_reject_malformed_input() {
        // 2026-11-20: a later day is not a birth date yet.
        let n = neighbours("20261120", 20_261_122);
        assert!(n.contains(&"20261121".to_owned()));
        assert!(n.contains(&"20261102".to_owned()));
        assert!(!n.contains(&"20261125".to_owned()));
        assert!(!n.contains(&"20261220".to_owned()));
        // 29 February only in leap years; 31 only in long months.
        let n = neighbours("19840229", 20_261_122);
        assert!(!n.iter().any(|d| d == "19850229" || d == "19860229"));
        assert!(n.contains(&"19880229".to_owned()));
        assert!(neighbours("1957-07-12", 20_261_122).is_empty());
        assert!(neighbours("1957071", 20_261_122).is_empty());
        assert!(neighbours("195707１2", 20_261_122).is_empty());
    }
}
