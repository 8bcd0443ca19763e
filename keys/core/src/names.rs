//! Names shared by the key store, the custodian and the linkage unit: ONE rule for project
//! (and party) names, and the bound on every string written to an audit log.
//!
//! A name is 1–64 bytes of `A-Z a-z 0-9 . _ -`, not starting with `.`: safe as a file name
//! (the local key store keeps one directory per project), in SQL, in logs and in audit
//! entries. `../x`, a space or any non-ASCII character is refused.

/// Longest project or party name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;

/// Longest string an audit entry keeps in one field (project, recipe or detail), in bytes;
/// longer values are cut (see [`audit_field`]).
pub const MAX_AUDIT_FIELD_BYTES: usize = 256;

/// Why a name was refused. The message shows at most the first 32 characters of the name
/// (escaped), never the whole of an arbitrary string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    #[error("{what} is empty")]
    Empty {
        /// What was named ("project", "party").
        what: &'static str,
    },
    /// The name breaks the rule.
    #[error(
        "{what} name {preview} ({len} bytes) is not valid: 1-64 characters of A-Z a-z 0-9 . _ -, not starting with ."
    )]
    Invalid {
        /// What was named.
        what: &'static str,
        /// The name's first characters, escaped.
        preview: String,
        /// The name's length in bytes.
        len: usize,
    },
}

/// Whether `name` is a valid project or party name (the rule in the module docs).
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Checks a project name (custodian, linkage unit and key store call this one function).
///
/// # Errors
/// [`NameError::Empty`] or [`NameError::Invalid`].
pub fn check_project_name(name: &str) -> Result<(), NameError> {
    check_name("project", name)
}

/// Checks a name of kind `what` ("project", "party", …) against the rule.
///
/// # Errors
/// [`NameError::Empty`] or [`NameError::Invalid`].
pub fn check_name(what: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { what });
    }
    if is_valid_name(name) {
        return Ok(());
    }
    let head: String = name.chars().take(32).collect();
    let mut preview = format!("{head:?}");
    if head.len() < name.len() {
        preview.push('…');
    }
    Err(NameError::Invalid {
        what,
        preview,
        len: name.len(),
    })
}

/// `value` as an audit entry keeps it: unchanged if at most [`MAX_AUDIT_FIELD_BYTES`] bytes,
/// otherwise its first bytes (cut on a character boundary) followed by `…[N bytes]`, N the
/// original length. The result is at most `MAX_AUDIT_FIELD_BYTES + 24` bytes.
pub fn audit_field(value: &str) -> String {
    if value.len() <= MAX_AUDIT_FIELD_BYTES {
        return value.to_owned();
    }
    let mut cut = MAX_AUDIT_FIELD_BYTES;
    while !value.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…[{} bytes]", &value[..cut], value.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_accepts_plain_names_and_refuses_paths_spaces_and_unicode() {
        for ok in ["m", "holder-a", "NDB_2026.v1", &"a".repeat(64)] {
            assert!(check_project_name(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            "../x",
            "a b",
            "プロジェクト",
            ".hidden",
            "a/b",
            &"a".repeat(65),
        ] {
            assert!(check_project_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_refusal_does_not_echo_a_long_name() {
        let long = "x".repeat(4 << 20);
        let msg = check_project_name(&long).unwrap_err().to_string();
        assert!(msg.len() < 200, "{} bytes", msg.len());
        assert!(msg.contains(&format!("{} bytes", 4 << 20)), "{msg}");
    }

    #[test]
    fn audit_fields_are_bounded_and_short_ones_kept() {
        assert_eq!(audit_field("job 7"), "job 7");
        let long = "é".repeat(1000);
        let cut = audit_field(&long);
        assert!(cut.len() <= MAX_AUDIT_FIELD_BYTES + 24, "{}", cut.len());
        assert!(cut.ends_with("…[2000 bytes]"), "{cut}");
    }
}
