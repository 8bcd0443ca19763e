//! Fuzzing harnesses (rustls style: the logic lives here, the `fuzz/` targets are one line).

use crate::normalize::{NormalizeContext, Normalizer};

/// Runs every normalizer on `data` (if it is UTF-8) and checks the invariants that must hold
/// for any input: no panic, and a canonical value normalizes to itself.
///
/// # Panics
/// When an invariant fails; that is the finding.
pub fn normalize_all(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let ctx = NormalizeContext { today: 20_261_122 };
    let mut out = String::new();
    let mut again = String::new();
    for kind in Normalizer::ALL {
        if kind.apply(s, &ctx, &mut out).is_ok() {
            assert!(!out.is_empty(), "{kind:?}: empty canonical value for {s:?}");
            let r = kind.apply(&out, &ctx, &mut again);
            assert!(
                r.is_ok() && again == out,
                "{kind:?} not idempotent: {s:?} → {out:?} → {r:?} {again:?}"
            );
        }
    }
}

/// Reads `data` as an uploaded token file, the way the linkage unit checks an upload: the
/// header, then every line in batches (parsed on several threads), then record by record.
/// Errors are expected; a panic is the finding.
pub fn token_file(data: &[u8]) {
    use crate::token_file::{Reader, Record};
    if let Ok(mut r) = Reader::new(data, "fuzz") {
        let mut batches = Vec::new();
        while let Ok(true) = r.next_batches(&mut batches) {}
    }
    if let Ok(mut r) = Reader::new(data, "fuzz") {
        let mut rec = Record::default();
        while let Ok(true) = r.next(&mut rec) {}
    }
}

/// Parses `data` as a linkage schema (TOML; must be UTF-8), as the linkage unit does for a
/// project's schema.
pub fn schema_toml(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::Schema::from_toml(s);
}

/// Parses `data` as a clkhash v3 linkage schema (JSON; must be UTF-8) and checks it.
pub fn clkhash_schema(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::clk::clkhash_schema::ClkhashSchema::from_json(s);
}

/// The shipped Japanese person schema, used by [`csv_rows`].
const JP_PERSON: &str = include_str!("../../../schemas/jp-person.toml");

/// Header that [`csv_rows`] puts before the input when its first byte asks for it (so the
/// fuzzer reaches the row checks without guessing column names).
const JP_HEADER: &[u8] =
    b"id,last_name,first_name,last_name_kana,first_name_kana,birth_date,sex,postcode,prefecture\n";

/// Reads `data[1..]` as a holder's CSV through the core ingest stage ([`CsvSource`] and
/// [`read_holder`](crate::ingest::read_holder)) with the jp-person schema in preimage mode.
/// `data[0]` picks the encoding (bits 0–1: UTF-8, CP932, auto) and whether a valid header
/// row is put first (bit 2). Checks that read = tokenized + rejected.
///
/// [`CsvSource`]: crate::ingest::CsvSource
pub fn csv_rows(data: &[u8]) {
    use crate::ingest::{CsvSource, EncodingChoice};
    use crate::ingest::{IngestError, ReadOptions, RejectList, read_holder};
    use std::sync::OnceLock;
    static TOKENIZER: OnceLock<(crate::Schema, crate::Tokenizer)> = OnceLock::new();
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let (schema, tokenizer) = TOKENIZER.get_or_init(|| {
        let schema = crate::Schema::from_toml(JP_PERSON).expect("shipped schema");
        let t = crate::Tokenizer::preimage_mode(&schema, NormalizeContext { today: 20_261_122 });
        (schema, t)
    });
    let choice = match sel & 3 {
        0 => EncodingChoice::Utf8,
        1 => EncodingChoice::Cp932,
        _ => EncodingChoice::Auto,
    };
    let input: Vec<u8> = if sel & 4 != 0 {
        [JP_HEADER, body].concat()
    } else {
        body.to_vec()
    };
    let len = input.len() as u64;
    let Ok(src) = CsvSource::new(Box::new(std::io::Cursor::new(input)), "fuzz", len, choice) else {
        return;
    };
    let opts = ReadOptions {
        schema,
        tokenizer,
        id_column: "id",
    };
    let mut rejects = RejectList::default();
    let mut accepted = 0u64;
    let read = read_holder::<IngestError>(&opts, src, &mut rejects, &mut |_| {}, &mut |a| {
        assert!(!a.id.is_empty(), "accepted a record without an id");
        accepted += 1;
        Ok(())
    });
    if let Ok(read) = read {
        assert_eq!(read.stats.tokenized, accepted, "tokenized count");
        assert_eq!(
            read.stats.read,
            read.stats.tokenized + read.stats.rejected(),
            "read = tokenized + rejected"
        );
        assert_eq!(rejects.0.len() as u64, read.stats.rejected(), "reject list");
    }
}
