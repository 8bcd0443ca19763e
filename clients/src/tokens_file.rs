//! Token files (`renketsu-tokens` version 1, SPEC.md §5.5) on disk: the format itself (header,
//! records, trailer, the checking [`Reader`]) is `renketsu_linkage::token_file`; this module
//! adds the atomic file writer, detection and opening by path.

use std::fs::File;
use std::io::{BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
pub use renketsu_linkage::token_file::{
    Counts, FORMAT, Header, MAGIC, MODE_HMAC, MODE_OPRF, RecipeRef, SchemaRef,
};
use renketsu_linkage::token_file::{encode_header, encode_record_features, encode_trailer};
use sha2::{Digest as _, Sha256};

use crate::output::PendingFile;

/// A token file being read from disk.
pub type Reader = renketsu_linkage::token_file::Reader<BufReader<File>>;

/// Opens `path` and reads and checks its header.
pub fn open(path: &Path) -> Result<Reader> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(Reader::new(
        BufReader::with_capacity(1 << 16, f),
        &path.display().to_string(),
    )?)
}

/// Opens a token file for the engine (the reader's input boxed, as
/// [`renketsu_linkage::engine::HolderInput::tokens`] takes it).
///
/// # Errors
/// The file cannot be opened, or its header is not a token file's.
pub fn open_boxed(
    path: &Path,
) -> Result<renketsu_linkage::token_file::Reader<Box<dyn std::io::BufRead + Send>>> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let input: Box<dyn std::io::BufRead + Send> = Box::new(BufReader::with_capacity(1 << 16, f));
    Ok(renketsu_linkage::token_file::Reader::new(
        input,
        &path.display().to_string(),
    )?)
}

/// SHA-256 (lower-case hex) of a schema file's bytes: equal digests mean the same schema.
pub fn schema_digest(path: &Path) -> Result<String> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read schema {}", path.display()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// Writes a token file atomically.
pub struct Writer {
    file: PendingFile,
    records: u64,
    line: Vec<u8>,
}

impl Writer {
    /// Starts `path` (written as `.<name>.partial` beside it until [`Self::finish`]).
    pub fn create(path: &Path, header: Header) -> Result<Self> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("--out {}: not a file name", path.display()))?;
        let mut file = PendingFile::create(dir, name)?;
        let mut line = Vec::with_capacity(1024);
        encode_header(&mut line, &header);
        file.writer.write_all(&line)?;
        Ok(Self {
            file,
            records: 0,
            line,
        })
    }

    /// Appends one record: its id, `(recipe index, 32-byte token)` pairs, its CLK when the
    /// header has `clk_bits`, and its per-comparison filters (version 2: `(index into the
    /// header's dice, field mask, words)`; empty otherwise).
    pub fn record<'t>(
        &mut self,
        id: &str,
        tokens: impl Iterator<Item = (usize, &'t [u8; 32])>,
        clk: Option<&[u64]>,
        dice: &[(usize, u32, Vec<u64>)],
    ) -> Result<()> {
        self.line.clear();
        let dice: Vec<(usize, u32, &[u64])> = dice
            .iter()
            .map(|(i, m, w)| (*i, *m, w.as_slice()))
            .collect();
        encode_record_features(&mut self.line, id, tokens, clk, &dice);
        self.file.writer.write_all(&self.line)?;
        self.records += 1;
        Ok(())
    }

    /// Writes the trailer and publishes the file.
    pub fn finish(mut self, mut counts: Counts) -> Result<PathBuf> {
        counts.records = self.records;
        self.line.clear();
        encode_trailer(&mut self.line, &counts);
        self.file.writer.write_all(&self.line)?;
        self.file.commit()
    }
}

/// Whether `path` starts like a token file (its first line is a `renketsu-tokens` header).
pub fn is_token_file(path: &Path) -> Result<bool> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut buf = [0u8; 32];
    let mut n = 0;
    while n < buf.len() {
        let k = f.read(&mut buf[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n >= MAGIC.len() && buf[..n].starts_with(MAGIC))
}

#[cfg(test)]
mod tests {
    use super::*;
    use renketsu_linkage::token_file::Record;

    fn header(mode: &str, clk: Option<u32>) -> Header {
        Header {
            format: FORMAT.to_owned(),
            version: renketsu_linkage::token_file::VERSION,
            project: "p".to_owned(),
            party: "a".to_owned(),
            schema: SchemaRef {
                name: "s".to_owned(),
                version: 1,
                digest: "00".repeat(32),
            },
            mode: mode.to_owned(),
            oprf_mode: (mode == MODE_OPRF).then(|| "voprf".to_owned()),
            recipes: vec![RecipeRef {
                name: "r".to_owned(),
                version: 1,
                epoch: (mode == MODE_OPRF).then_some(3),
                public_key: None,
            }],
            clk_bits: clk,
            today: "2026-11-22".to_owned(),
            created_by: "test".to_owned(),
            dice: Vec::new(),
        }
    }

    #[test]
    fn round_trip_with_clk_and_trailer_checks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tokens");
        let mut w = Writer::create(&path, header(MODE_OPRF, Some(128))).unwrap();
        assert!(!path.exists(), "published only on finish");
        w.record(
            "x,\"1\"",
            [(0usize, &[7u8; 32])].into_iter(),
            Some(&[1, 1 << 63]),
            &[],
        )
        .unwrap();
        w.record("日本", std::iter::empty(), Some(&[0, 0]), &[])
            .unwrap();
        let counts = Counts {
            read: 3,
            tokenized: 2,
            rejected: 1,
            ..Counts::default()
        };
        w.finish(counts).unwrap();
        assert!(is_token_file(&path).unwrap());
        let mut r = open(&path).unwrap();
        assert_eq!(r.header(), &header(MODE_OPRF, Some(128)));
        let mut rec = Record::default();
        assert!(r.next(&mut rec).unwrap());
        assert_eq!(rec.id, "x,\"1\"");
        assert_eq!(rec.tokens, vec![(0, [7u8; 32])]);
        assert_eq!(rec.clk, Some(vec![1, 1 << 63]));
        assert!(r.next(&mut rec).unwrap());
        assert_eq!(rec.id, "日本");
        assert!(rec.tokens.is_empty());
        assert!(!r.next(&mut rec).unwrap());
        assert_eq!(r.counts().unwrap().records, 2);
        assert_eq!(r.counts().unwrap().rejected, 1);
    }

    #[test]
    fn truncated_or_inconsistent_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tokens");
        let mut w = Writer::create(&path, header(MODE_HMAC, None)).unwrap();
        w.record("1", [(0usize, &[1u8; 32])].into_iter(), None, &[])
            .unwrap();
        w.finish(Counts {
            read: 1,
            tokenized: 1,
            ..Counts::default()
        })
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let read_all = |content: String| -> Result<()> {
            std::fs::write(&path, content).unwrap();
            let mut r = open(&path)?;
            let mut rec = Record::default();
            while r.next(&mut rec)? {}
            Ok(())
        };
        read_all(text.clone()).unwrap();
        // No trailer.
        let err = read_all(format!("{}\n{}\n", lines[0], lines[1])).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err:#}");
        // A record missing: the trailer's count disagrees.
        let err = read_all(format!("{}\n{}\n", lines[0], lines[2])).unwrap_err();
        assert!(err.to_string().contains("trailer counts"), "{err:#}");
        // A token of the wrong length, a recipe out of range.
        for bad in [
            r#"{"id":"1","t":[[0,"AAAA"]]}"#,
            r#"{"id":"1","t":[[5,"AAAA"]]}"#,
        ] {
            assert!(read_all(format!("{}\n{bad}\n{}\n", lines[0], lines[2])).is_err());
        }
        // Not a token file.
        std::fs::write(&path, "id,name\n1,x\n").unwrap();
        assert!(!is_token_file(&path).unwrap());
        assert!(open(&path).is_err());
        // Version 2 (comparison filters, none here) reads; an unknown version does not.
        let v2 = lines[0].replace("\"version\":1", "\"version\":2");
        read_all(format!("{v2}\n{}\n{}\n", lines[1], lines[2])).unwrap();
        let v3 = lines[0].replace("\"version\":1", "\"version\":3");
        let err = read_all(format!("{v3}\n{}\n{}\n", lines[1], lines[2])).unwrap_err();
        assert!(err.to_string().contains("version 3"), "{err:#}");
    }
}
