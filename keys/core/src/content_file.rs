//! Sealed content files (`renketsu-content` version 1, SPEC.md §10.4): a holder's content
//! columns, each record sealed to the researcher (`renketsu_keys::content`). JSON Lines:
//!
//! ```text
//! {"format":"renketsu-content","version":1,"project":…,"party":…,"columns":[…],
//!  "researcher_public_key":"<hex>","encapsulated_key":"<base64>"}                    header
//! {"id":"17","c":"<base64 nonce || ciphertext>"}                                       one per record
//! {"end":{"records":9997}}                                                             trailer
//! ```
//!
//! The linkage unit reads record ids and sealed bytes; it cannot open them.

use std::io::BufRead;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

/// The `format` value.
pub const FORMAT: &str = "renketsu-content";
/// How every content file starts (its header's first field, as [`encode_header`] writes it).
pub const MAGIC: &[u8] = br#"{"format":"renketsu-content""#;
/// The version written and read.
pub const VERSION: u32 = 1;

/// The first line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentHeader {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`].
    pub version: u32,
    /// Project.
    pub project: String,
    /// The holder.
    pub party: String,
    /// Content column names, in order.
    pub columns: Vec<String>,
    /// Lower-case hex of the researcher public key the content is sealed to.
    pub researcher_public_key: String,
    /// Base64 of the HPKE encapsulated key.
    pub encapsulated_key: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordLine {
    id: String,
    c: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct End {
    records: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrailerLine {
    end: End,
}

/// `(record id, sealed bytes)` of a content file, in file order.
pub type SealedRecords = Vec<(String, Vec<u8>)>;

/// Errors reading a content file.
#[derive(Debug, thiserror::Error)]
#[error("sealed content file, line {line}: {message}")]
pub struct ContentFileError {
    /// 1-based line.
    pub line: u64,
    /// What is wrong.
    pub message: String,
}

/// Appends the header line.
pub fn encode_header(out: &mut Vec<u8>, h: &ContentHeader) {
    serde_json::to_writer(&mut *out, h).expect("serializing to a Vec cannot fail");
    out.push(b'\n');
}

/// Appends one record line.
pub fn encode_record(out: &mut Vec<u8>, id: &str, sealed: &[u8]) {
    serde_json::to_writer(
        &mut *out,
        &RecordLine {
            id: id.to_owned(),
            c: B64.encode(sealed),
        },
    )
    .expect("serializing to a Vec cannot fail");
    out.push(b'\n');
}

/// Appends the trailer line.
pub fn encode_trailer(out: &mut Vec<u8>, records: u64) {
    serde_json::to_writer(
        &mut *out,
        &TrailerLine {
            end: End { records },
        },
    )
    .expect("serializing to a Vec cannot fail");
    out.push(b'\n');
}

/// Parses a whole content file: header and `(record id, sealed bytes)` in order.
///
/// # Errors
/// [`ContentFileError`] for a bad header or version, a malformed line, a missing or
/// disagreeing trailer, data after the trailer, or an id that appears twice.
pub fn parse(input: impl BufRead) -> Result<(ContentHeader, SealedRecords), ContentFileError> {
    let mut lines = input.lines();
    let mut n = 0u64;
    let mut next = |lines: &mut std::io::Lines<_>| -> Result<Option<String>, ContentFileError> {
        n += 1;
        match lines.next() {
            None => Ok(None),
            Some(Ok(l)) => Ok(Some(l)),
            Some(Err(e)) => Err(ContentFileError {
                line: n,
                message: e.to_string(),
            }),
        }
    };
    let err = |line: u64, message: String| ContentFileError { line, message };
    let first = next(&mut lines)?.ok_or_else(|| err(1, "empty".to_owned()))?;
    let header: ContentHeader = serde_json::from_str(&first)
        .map_err(|e| err(1, format!("not a renketsu-content header: {e}")))?;
    if header.format != FORMAT || header.version != VERSION {
        return Err(err(
            1,
            format!(
                "format {:?} version {}; this renketsu reads {FORMAT:?} version {VERSION}",
                header.format, header.version
            ),
        ));
    }
    let mut records = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut line_no = 1u64;
    loop {
        line_no += 1;
        let Some(line) = next(&mut lines)? else {
            return Err(err(
                line_no,
                "the file ends without its trailer: truncated".to_owned(),
            ));
        };
        if line.starts_with("{\"end\"") {
            let t: TrailerLine =
                serde_json::from_str(&line).map_err(|e| err(line_no, e.to_string()))?;
            if t.end.records != records.len() as u64 {
                return Err(err(
                    line_no,
                    format!(
                        "the trailer counts {} records but the file has {}",
                        t.end.records,
                        records.len()
                    ),
                ));
            }
            if next(&mut lines)?.is_some() {
                return Err(err(line_no + 1, "data after the trailer".to_owned()));
            }
            return Ok((header, records));
        }
        let r: RecordLine = serde_json::from_str(&line).map_err(|e| err(line_no, e.to_string()))?;
        let sealed = B64
            .decode(r.c.as_bytes())
            .map_err(|_| err(line_no, "sealed content is not base64".to_owned()))?;
        if !seen.insert(r.id.clone()) {
            return Err(err(line_no, format!("record id {:?} appears twice", r.id)));
        }
        records.push((r.id, sealed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let h = ContentHeader {
            format: FORMAT.to_owned(),
            version: VERSION,
            project: "p".to_owned(),
            party: "a".to_owned(),
            columns: vec!["prefecture".to_owned()],
            researcher_public_key: "00".repeat(32),
            encapsulated_key: B64.encode([1u8; 32]),
        };
        let mut f = Vec::new();
        encode_header(&mut f, &h);
        encode_record(&mut f, "1", &[9u8; 50]);
        encode_record(&mut f, "2", &[8u8; 41]);
        let body = f.clone();
        encode_trailer(&mut f, 2);
        let (back, recs) = parse(f.as_slice()).unwrap();
        assert_eq!(back, h);
        assert_eq!(
            recs,
            vec![
                ("1".to_owned(), vec![9u8; 50]),
                ("2".to_owned(), vec![8u8; 41])
            ]
        );
        let e = parse(body.as_slice()).unwrap_err();
        assert!(e.message.contains("truncated"), "{e}");
        let mut wrong = body.clone();
        encode_trailer(&mut wrong, 3);
        assert!(parse(wrong.as_slice()).is_err());
        let mut dup = body.clone();
        encode_record(&mut dup, "1", &[0u8; 41]);
        encode_trailer(&mut dup, 3);
        assert!(parse(dup.as_slice()).unwrap_err().message.contains("twice"));
    }
}
