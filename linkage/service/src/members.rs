//! A job's results as stored (SPEC.md §10.6): per holder, its records in upload order, each
//! with its cluster's pseudonym and whether that cluster is excluded, packed into chunks of
//! about 1 MiB (`lu_member_chunks` rows) rather than one database row per record — 10^7
//! records are a few hundred chunk rows, written in seconds.
//!
//! A chunk's `data` is `records` rows, each
//! `LEB128(len(record id)) || record id (UTF-8) || pseudonym (16 bytes) || excluded (1 byte: 0 or 1)`;
//! rows never straddle chunks, and a chunk's rows are positions `first_position ..
//! first_position + records` of the holder's upload.

/// Target size of one chunk's `data`, in bytes (a chunk ends after the row that reaches it).
pub const MEMBER_CHUNK_BYTES: usize = 1 << 20;

/// Bytes of a pseudonym (shown as 32 lower-case hex digits).
pub const PSEUDONYM_BYTES: usize = 16;

/// One stored chunk of a holder's job results.
#[derive(Clone, PartialEq, Eq)]
pub struct MemberChunk {
    /// The holder.
    pub party: String,
    /// Position (0-based record number in the holder's upload) of the first row.
    pub first_position: u64,
    /// Rows in `data`.
    pub records: u64,
    /// The rows (module docs).
    pub data: Vec<u8>,
}

impl std::fmt::Debug for MemberChunk {
    /// Record ids and pseudonyms are left out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberChunk")
            .field("party", &self.party)
            .field("first_position", &self.first_position)
            .field("records", &self.records)
            .field("bytes", &self.data.len())
            .finish()
    }
}

/// One row of a chunk.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Member<'a> {
    /// Position in the holder's upload.
    pub position: u64,
    /// The holder's record id.
    pub record_id: &'a str,
    /// The cluster's pseudonym.
    pub pseudonym: [u8; PSEUDONYM_BYTES],
    /// The cluster is excluded (opt-out): never mapped, never released.
    pub excluded: bool,
}

impl std::fmt::Debug for Member<'_> {
    /// The record id and pseudonym are left out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("position", &self.position)
            .field("excluded", &self.excluded)
            .finish_non_exhaustive()
    }
}

/// A stored chunk that breaks the format (never expected: the linkage unit wrote it).
#[derive(Debug, thiserror::Error)]
#[error("job result chunk of {party} at position {first_position}: {message}")]
pub struct MemberChunkError {
    party: String,
    first_position: u64,
    message: &'static str,
}

impl MemberChunk {
    /// The rows, in position order.
    ///
    /// # Errors
    /// [`MemberChunkError`] if `data` is not `records` well-formed rows.
    pub fn members(&self) -> Result<Vec<Member<'_>>, MemberChunkError> {
        let bad = |message| MemberChunkError {
            party: self.party.clone(),
            first_position: self.first_position,
            message,
        };
        let mut out = Vec::with_capacity(usize::try_from(self.records).unwrap_or(0));
        let mut d = self.data.as_slice();
        for k in 0..self.records {
            let (len, n) = leb128(d).ok_or_else(|| bad("bad id length"))?;
            d = &d[n..];
            let len = usize::try_from(len).map_err(|_| bad("bad id length"))?;
            if d.len() < len + PSEUDONYM_BYTES + 1 {
                return Err(bad("truncated row"));
            }
            let record_id = std::str::from_utf8(&d[..len]).map_err(|_| bad("id not UTF-8"))?;
            let pseudonym = d[len..len + PSEUDONYM_BYTES].try_into().expect("16 bytes");
            let excluded = match d[len + PSEUDONYM_BYTES] {
                0 => false,
                1 => true,
                _ => return Err(bad("bad excluded flag")),
            };
            d = &d[len + PSEUDONYM_BYTES + 1..];
            out.push(Member {
                position: self.first_position + k,
                record_id,
                pseudonym,
                excluded,
            });
        }
        if !d.is_empty() {
            return Err(bad("bytes after the last row"));
        }
        Ok(out)
    }
}

fn leb128(d: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &b) in d.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Packs one holder's rows, in position order from 0, into chunks.
#[derive(Debug)]
pub struct MemberChunker {
    party: String,
    chunks: Vec<MemberChunk>,
    data: Vec<u8>,
    first: u64,
    next: u64,
}

impl MemberChunker {
    /// An empty result for `party`.
    pub fn new(party: &str) -> Self {
        Self {
            party: party.to_owned(),
            chunks: Vec::new(),
            data: Vec::new(),
            first: 0,
            next: 0,
        }
    }

    /// Appends the row of the next position.
    pub fn push(&mut self, record_id: &str, pseudonym: &[u8; PSEUDONYM_BYTES], excluded: bool) {
        if self.data.capacity() == 0 {
            self.data.reserve(MEMBER_CHUNK_BYTES + 64);
        }
        let mut len = record_id.len() as u64;
        loop {
            let b = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                self.data.push(b);
                break;
            }
            self.data.push(b | 0x80);
        }
        self.data.extend_from_slice(record_id.as_bytes());
        self.data.extend_from_slice(pseudonym);
        self.data.push(u8::from(excluded));
        self.next += 1;
        if self.data.len() >= MEMBER_CHUNK_BYTES {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.next > self.first {
            self.chunks.push(MemberChunk {
                party: self.party.clone(),
                first_position: self.first,
                records: self.next - self.first,
                data: std::mem::take(&mut self.data),
            });
            self.first = self.next;
        }
    }

    /// The chunks (none for a holder without records).
    pub fn finish(mut self) -> Vec<MemberChunk> {
        self.flush();
        self.chunks
    }
}

/// A pseudonym as shown: 32 lower-case hex digits.
pub fn pseudonym_hex(p: &[u8; PSEUDONYM_BYTES]) -> String {
    hex::encode(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_across_chunks() {
        let ids: Vec<String> = (0..120_000u32)
            .map(|i| match i % 5 {
                0 => String::new(),
                1 => "受診者-".repeat(i as usize % 40),
                2 => "x".repeat(200 + i as usize % 300),
                _ => format!("r{i}"),
            })
            .collect();
        let pid = |i: usize| {
            let mut p = [0u8; 16];
            p[..8].copy_from_slice(&(i as u64).to_le_bytes());
            p[15] = 0xa5;
            p
        };
        let mut c = MemberChunker::new("ndb");
        for (i, id) in ids.iter().enumerate() {
            c.push(id, &pid(i), i % 7 == 3);
        }
        let chunks = c.finish();
        assert!(chunks.len() > 5, "several chunks: {}", chunks.len());
        let mut next = 0u64;
        for ch in &chunks {
            assert_eq!(ch.first_position, next);
            assert!(ch.data.len() < MEMBER_CHUNK_BYTES + 1024);
            let rows = ch.members().unwrap();
            assert_eq!(rows.len() as u64, ch.records);
            for m in rows {
                let i = m.position as usize;
                assert_eq!(m.record_id, ids[i]);
                assert_eq!(m.pseudonym, pid(i));
                assert_eq!(m.excluded, i % 7 == 3);
            }
            next += ch.records;
        }
        assert_eq!(next, ids.len() as u64);
    }

    #[test]
    fn damaged_chunks_are_refused() {
        let mut c = MemberChunker::new("a");
        c.push("id-1", &[7; 16], false);
        c.push("id-2", &[8; 16], true);
        let good = c.finish().remove(0);
        let mut short = good.clone();
        short.data.pop();
        assert!(short.members().is_err());
        let mut extra = good.clone();
        extra.records = 1;
        assert!(extra.members().is_err());
        let mut flag = good.clone();
        let last = flag.data.len() - 1;
        flag.data[last] = 2;
        assert!(flag.members().is_err());
        assert_eq!(good.members().unwrap().len(), 2);
        assert!(!format!("{good:?}").contains("id-1"));
    }
}
