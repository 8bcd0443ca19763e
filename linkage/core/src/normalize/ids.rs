//! Insurance and address identifiers (SPEC.md §3.1; formats in the domain notes):
//! 保険者番号 (`insurer_number`), 被保険者記号・番号 (`insured_symbol`, `insured_number`),
//! 枝番 (`branch_number`), 介護保険被保険者番号 (`care_insured_number`), 郵便番号
//! (`postal_code`), and the two helpers of hash-only holders: the legacy canonicalization and
//! SHA-256 digests.

use super::{FieldReject, for_each_nfkc, is_space};

#[inline]
fn is_hyphen(c: char) -> bool {
    matches!(c, '-' | '‐' | '‑' | '‒' | '–' | '—' | '―' | '−' | '﹣')
}

/// NFKC, then digits only, with white space and hyphens removed (and `extra` skipped).
fn digits_only(input: &str, out: &mut String, extra: &[char]) -> Result<(), ()> {
    let mut bad = false;
    for_each_nfkc(input, |c| match c {
        '0'..='9' => out.push(c),
        c if is_space(c) || is_hyphen(c) || extra.contains(&c) => {}
        _ => bad = true,
    });
    if bad { Err(()) } else { Ok(()) }
}

fn blank(input: &str) -> bool {
    input.chars().all(is_space)
}

/// The 検証番号 of an insurer-number body: from the rightmost body digit, weights 2, 1, 2, …;
/// the digits of the products are summed; check = (10 − sum mod 10) mod 10.
pub fn insurer_check_digit(body: &[u8]) -> u8 {
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &b)| {
            let p = u32::from(b - b'0') * if i % 2 == 0 { 2 } else { 1 };
            p / 10 + p % 10
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

pub(super) fn insurer_number(input: &str, out: &mut String) -> Result<(), FieldReject> {
    if blank(input) {
        return Err(FieldReject::Missing);
    }
    digits_only(input, out, &[]).map_err(|()| FieldReject::InvalidInsurerNumber)?;
    let b = out.as_bytes();
    if b.len() != 6 && b.len() != 8 {
        return Err(FieldReject::InvalidInsurerNumber);
    }
    let (body, check) = b.split_at(b.len() - 1);
    if insurer_check_digit(body) != check[0] - b'0' {
        return Err(FieldReject::InsurerCheckDigit);
    }
    // No 法別番号 is 00: an 8-digit number starting with 00 is a 6-digit 市町村国保 number
    // written zero-padded (the check digit is the same: leading zeros add nothing).
    if b.len() == 8 && b.starts_with(b"00") {
        out.drain(..2);
    }
    Ok(())
}

/// 記号 and 番号: NFKC (width folding), white space and hyphens removed, ASCII letters upper
/// case. No zero padding or stripping: `0123` stays `0123`.
pub(super) fn insured_code(input: &str, out: &mut String) -> Result<(), FieldReject> {
    for_each_nfkc(input, |c| {
        if !(is_space(c) || is_hyphen(c) || c.is_control()) {
            out.push(c.to_ascii_uppercase());
        }
    });
    if out.is_empty() {
        return Err(FieldReject::Missing);
    }
    Ok(())
}

pub(super) fn branch_number(input: &str, out: &mut String) -> Result<(), FieldReject> {
    if blank(input) {
        return Err(FieldReject::Missing);
    }
    digits_only(input, out, &[]).map_err(|()| FieldReject::InvalidBranchNumber)?;
    // 枝番 is always two digits; a single digit is one whose leading zero was lost.
    if out.len() == 1 {
        out.insert(0, '0');
    }
    if out.len() != 2 {
        return Err(FieldReject::InvalidBranchNumber);
    }
    Ok(())
}

pub(super) fn care_insured_number(input: &str, out: &mut String) -> Result<(), FieldReject> {
    if blank(input) {
        return Err(FieldReject::Missing);
    }
    digits_only(input, out, &[]).map_err(|()| FieldReject::InvalidCareInsuredNumber)?;
    if out.len() != 10 {
        return Err(FieldReject::InvalidCareInsuredNumber);
    }
    Ok(())
}

pub(super) fn postal_code(input: &str, out: &mut String) -> Result<(), FieldReject> {
    if blank(input) {
        return Err(FieldReject::Missing);
    }
    digits_only(input, out, &['〒', '〶']).map_err(|()| FieldReject::InvalidPostalCode)?;
    if out.len() != 7 {
        return Err(FieldReject::InvalidPostalCode);
    }
    Ok(())
}

/// The legacy canonicalization of hash-only databases (SPEC.md §4.4): NFKC, then every
/// white-space character removed; nothing else.
pub(super) fn legacy(input: &str, out: &mut String) -> Result<(), FieldReject> {
    for_each_nfkc(input, |c| {
        if !c.is_whitespace() {
            out.push(c);
        }
    });
    if out.is_empty() {
        return Err(FieldReject::Missing);
    }
    Ok(())
}

/// A SHA-256 digest column: 64 hexadecimal digits, written lower case.
pub(super) fn digest(input: &str, out: &mut String) -> Result<(), FieldReject> {
    let t = input.trim_matches(is_space);
    if t.is_empty() {
        return Err(FieldReject::Missing);
    }
    if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(FieldReject::InvalidDigest);
    }
    out.extend(t.chars().map(|c| c.to_ascii_lowercase()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_digits_of_the_domain_notes() {
        for valid in ["33120015", "01130012", "131011"] {
            let (body, check) = valid.as_bytes().split_at(valid.len() - 1);
            assert_eq!(insurer_check_digit(body), check[0] - b'0', "{valid}");
        }
    }
}
