//! What `renketsu lu upload` checks before it sends a byte: the file must be a whole token
//! file (tokens, opt-outs). A raw CSV given by mistake never leaves the holder.

use anyhow::{Context, Result};
use renketsu_linkage::token_file::Reader;

/// Reads `bytes` (the file at `name`) as a token file from header to trailer; returns its
/// record count.
///
/// # Errors
/// The reader's error (with the line), e.g. "line 1 is not a renketsu-tokens header" for a
/// CSV.
pub(crate) fn token_file(bytes: &[u8], name: &str) -> Result<u64> {
    let check = || -> Result<u64> {
        let mut r = Reader::new(bytes, name)?;
        let mut batches = Vec::new();
        while r.next_batches(&mut batches)? {}
        Ok(r.counts().map_or(0, |c| c.records))
    };
    check().with_context(|| format!("{name} is not a renketsu token file; nothing was sent"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_csv_is_refused_before_sending() {
        let csv = b"id,last_name,birth_date\n0,Ishikawa,1992-10-28\n";
        let err = format!("{:#}", super::token_file(csv, "ehr.csv").unwrap_err());
        assert!(err.contains("nothing was sent"), "{err}");
        assert!(err.contains("line 1"), "{err}");
    }
}
