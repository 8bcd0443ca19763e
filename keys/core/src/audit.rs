//! The custodian's hash-chained audit log (SPEC.md, store section): the canonical byte layout
//! of an entry, its hash, and verification of a whole log against the sealed head.
//!
//! Each entry records one call (who, role, RPC, project, recipe, epoch, item count, status) —
//! never identifiers or secrets. `entry_hash = SHA-256(canonical(entry))`, where the canonical
//! layout covers fields 1–11 of the wire `AuditEntry` (`protocol/proto/renketsu/v1/custodian.proto`):
//! ```text
//! "renketsu/audit/v1"
//! || u64be(sequence) || i64be(unix_time_ms) || LP(actor_party) || i32be(role) || LP(rpc)
//! || LP(project) || LP(recipe) || u64be(epoch) || u64be(item_count) || u32be(status_code)
//! || prev_hash (32 bytes)                                   LP(x) = u32be(len x) || x
//! ```
//! `prev_hash` of entry 1 is 32 zero bytes; of entry n > 1 it is `entry_hash` of entry n−1.
//! A chain alone can be recomputed by whoever rewrites it; the custodian therefore also keeps
//! the **head** (last sequence and its hash) sealed under its KEK, so that rewriting the tail or
//! deleting the last entries is detected too ([`verify`]).

use sha2::{Digest, Sha256};

/// Length of an entry hash in bytes (SHA-256).
pub const HASH_LEN: usize = 32;
/// Domain tag at the start of every canonical entry.
pub const AUDIT_DOMAIN: &[u8] = b"renketsu/audit/v1";
/// `prev_hash` of the first entry.
pub const GENESIS_HASH: [u8; HASH_LEN] = [0u8; HASH_LEN];

/// The fields of an audit entry that the caller supplies (AuditEntry fields 2–10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// When the call was handled, ms since the Unix epoch (UTC).
    pub unix_time_ms: i64,
    /// Caller's party name, from its certificate.
    pub actor_party: String,
    /// Caller's role: the wire `Role` enum value (0 unspecified, 1 admin, 2 data holder,
    /// 3 linkage unit, 4 auditor).
    pub role: i32,
    /// Full gRPC method name, e.g. `/renketsu.v1.KeyCustodian/EvaluateBatch`.
    pub rpc: String,
    /// Project named by the call, or empty.
    pub project: String,
    /// Recipe named by the call, or empty.
    pub recipe: String,
    /// Epoch used or created, or 0.
    pub epoch: u64,
    /// Items processed (elements evaluated, entries read…), or 0.
    pub item_count: u64,
    /// gRPC status code the call ended with (0 = OK).
    pub status_code: u32,
}

/// One chained audit entry (AuditEntry fields 1–12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Position in the log, from 1, no gaps.
    pub sequence: u64,
    /// The recorded call.
    pub event: AuditEvent,
    /// `entry_hash` of entry `sequence − 1`, or [`GENESIS_HASH`].
    pub prev_hash: [u8; HASH_LEN],
    /// SHA-256 of the canonical layout of this entry.
    pub entry_hash: [u8; HASH_LEN],
}

/// The head of the log: last sequence and its hash. Kept sealed by the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditHead {
    /// Sequence of the last entry (≥ 1).
    pub sequence: u64,
    /// Its entry hash.
    pub entry_hash: [u8; HASH_LEN],
}

impl AuditHead {
    /// Length of [`AuditHead::to_bytes`].
    pub const LEN: usize = 8 + HASH_LEN;

    /// `u64be(sequence) || entry_hash` (the plaintext the store seals).
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..8].copy_from_slice(&self.sequence.to_be_bytes());
        out[8..].copy_from_slice(&self.entry_hash);
        out
    }

    /// Decodes [`AuditHead::to_bytes`]; `None` on a wrong length.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::LEN {
            return None;
        }
        Some(Self {
            sequence: u64::from_be_bytes(bytes[..8].try_into().ok()?),
            entry_hash: bytes[8..].try_into().ok()?,
        })
    }
}

fn lp(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The canonical bytes of entry fields 1–11 (layout in the module docs).
pub fn canonical_bytes(sequence: u64, event: &AuditEvent, prev_hash: &[u8; HASH_LEN]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        AUDIT_DOMAIN.len()
            + 80
            + event.actor_party.len()
            + event.rpc.len()
            + event.project.len()
            + event.recipe.len(),
    );
    out.extend_from_slice(AUDIT_DOMAIN);
    out.extend_from_slice(&sequence.to_be_bytes());
    out.extend_from_slice(&event.unix_time_ms.to_be_bytes());
    lp(&mut out, &event.actor_party);
    out.extend_from_slice(&event.role.to_be_bytes());
    lp(&mut out, &event.rpc);
    lp(&mut out, &event.project);
    lp(&mut out, &event.recipe);
    out.extend_from_slice(&event.epoch.to_be_bytes());
    out.extend_from_slice(&event.item_count.to_be_bytes());
    out.extend_from_slice(&event.status_code.to_be_bytes());
    out.extend_from_slice(prev_hash);
    out
}

/// `SHA-256(canonical_bytes(sequence, event, prev_hash))`.
pub fn entry_hash(sequence: u64, event: &AuditEvent, prev_hash: &[u8; HASH_LEN]) -> [u8; HASH_LEN] {
    Sha256::digest(canonical_bytes(sequence, event, prev_hash)).into()
}

impl AuditEntry {
    /// The entry that follows `prev` (`None` for the first entry), with its hash computed.
    pub fn next(prev: Option<&AuditHead>, event: AuditEvent) -> Self {
        let (sequence, prev_hash) = match prev {
            Some(h) => (h.sequence + 1, h.entry_hash),
            None => (1, GENESIS_HASH),
        };
        let entry_hash = entry_hash(sequence, &event, &prev_hash);
        Self {
            sequence,
            event,
            prev_hash,
            entry_hash,
        }
    }

    /// This entry as a head.
    pub fn head(&self) -> AuditHead {
        AuditHead {
            sequence: self.sequence,
            entry_hash: self.entry_hash,
        }
    }

    /// Whether `entry_hash` matches the entry's fields.
    pub fn hash_is_valid(&self) -> bool {
        entry_hash(self.sequence, &self.event, &self.prev_hash) == self.entry_hash
    }
}

/// Why a log does not verify. Sequences are those of the log as read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The entry's stored hash does not match its fields: the entry was edited.
    #[error("audit entry {sequence} was changed: its hash does not match its fields")]
    Changed {
        /// The edited entry.
        sequence: u64,
    },
    /// The entry's `prev_hash` is not the hash of the entry before it, though each entry's own
    /// hash is consistent: the earlier entry was rewritten with a recomputed hash, or entries
    /// were spliced.
    #[error(
        "audit chain broken at entry {sequence}: its prev_hash is not the hash of entry {}",
        sequence - 1
    )]
    BrokenLink {
        /// The entry whose link fails.
        sequence: u64,
    },
    /// Entries are out of order: the entry read at `sequence` chains after entry `follows`.
    #[error("audit entries reordered: the entry at {sequence} belongs after entry {follows}")]
    Reordered {
        /// Where the entry was found.
        sequence: u64,
        /// The entry whose hash its prev_hash names.
        follows: u64,
    },
    /// Sequences are not ascending (an entry appears at or before an earlier sequence).
    #[error("audit entries out of order: sequence {found} follows {previous}")]
    OutOfOrder {
        /// The sequence before.
        previous: u64,
        /// The sequence found after it.
        found: u64,
    },
    /// Entries `first..=last` are missing (deleted from the middle or the start).
    #[error("audit entries {first}..={last} are missing")]
    Missing {
        /// First missing sequence.
        first: u64,
        /// Last missing sequence.
        last: u64,
    },
    /// The log ends before the sealed head: the last entries were deleted.
    #[error("audit log truncated: it ends at entry {last} but the sealed head is entry {head}")]
    Truncated {
        /// Last entry present (0 if none).
        last: u64,
        /// Sequence recorded in the sealed head.
        head: u64,
    },
    /// The entry at the head's sequence does not have the head's hash: the tail was rewritten.
    #[error("audit entry {sequence} does not match the sealed head: the log was rewritten")]
    HeadMismatch {
        /// The head's sequence.
        sequence: u64,
    },
    /// Entries exist beyond the sealed head, or there are entries but no head.
    #[error("audit log has entries up to {last} beyond the sealed head ({head})")]
    BeyondHead {
        /// Last entry present.
        last: u64,
        /// Sequence recorded in the sealed head (0 if none).
        head: u64,
    },
}

/// Verifies a complete log (entries as read, expected in ascending sequence from 1) against
/// the sealed head (`None` = the store says the log is empty).
///
/// Checks, in order of the entries: sequence order and gaps, each entry's own hash, and the
/// link to the previous entry; then the end of the log against the head.
///
/// # Errors
/// The first problem found, as an [`AuditError`].
pub fn verify(entries: &[AuditEntry], head: Option<&AuditHead>) -> Result<(), AuditError> {
    let by_hash: std::collections::HashMap<[u8; HASH_LEN], u64> =
        entries.iter().map(|e| (e.entry_hash, e.sequence)).collect();
    if let Some(w) = entries.windows(2).find(|w| w[1].sequence <= w[0].sequence) {
        return Err(AuditError::OutOfOrder {
            previous: w[0].sequence,
            found: w[1].sequence,
        });
    }
    let mut prev: Option<&AuditEntry> = None;
    for e in entries {
        let expected = prev.map_or(1, |p| p.sequence + 1);
        if e.sequence > expected {
            return Err(AuditError::Missing {
                first: expected,
                last: e.sequence - 1,
            });
        }
        let want_prev = prev.map_or(GENESIS_HASH, |p| p.entry_hash);
        if e.prev_hash != want_prev
            && let Some(&follows) = by_hash.get(&e.prev_hash)
            && follows + 1 != e.sequence
        {
            return Err(AuditError::Reordered {
                sequence: e.sequence,
                follows,
            });
        }
        if !e.hash_is_valid() {
            return Err(AuditError::Changed {
                sequence: e.sequence,
            });
        }
        if e.prev_hash != want_prev {
            return Err(AuditError::BrokenLink {
                sequence: e.sequence,
            });
        }
        prev = Some(e);
    }
    let last = prev.map_or(0, |p| p.sequence);
    match head {
        None if last == 0 => Ok(()),
        None => Err(AuditError::BeyondHead { last, head: 0 }),
        Some(h) if last < h.sequence => Err(AuditError::Truncated {
            last,
            head: h.sequence,
        }),
        Some(h) if last > h.sequence => Err(AuditError::BeyondHead {
            last,
            head: h.sequence,
        }),
        Some(h) => {
            if prev.is_some_and(|p| p.entry_hash == h.entry_hash) {
                Ok(())
            } else {
                Err(AuditError::HeadMismatch {
                    sequence: h.sequence,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: u64) -> AuditEvent {
        AuditEvent {
            unix_time_ms: 1_767_225_600_000 + i as i64,
            actor_party: format!("holder-{}", i % 3),
            role: 2,
            rpc: "/renketsu.v1.KeyCustodian/EvaluateBatch".into(),
            project: "p".into(),
            recipe: "r/v1".into(),
            epoch: 1,
            item_count: 1024 + i,
            status_code: 0,
        }
    }

    fn chain(n: u64) -> (Vec<AuditEntry>, Option<AuditHead>) {
        let mut out: Vec<AuditEntry> = Vec::new();
        for i in 1..=n {
            let e = AuditEntry::next(out.last().map(AuditEntry::head).as_ref(), event(i));
            out.push(e);
        }
        let head = out.last().map(AuditEntry::head);
        (out, head)
    }

    /// Recomputes every hash from `from` on, as an attacker without the KEK can.
    fn rechain(entries: &mut [AuditEntry], from: usize) {
        for i in from..entries.len() {
            let prev = if i == 0 {
                GENESIS_HASH
            } else {
                entries[i - 1].entry_hash
            };
            entries[i].prev_hash = prev;
            entries[i].entry_hash = entry_hash(entries[i].sequence, &entries[i].event, &prev);
        }
    }

    #[test]
    fn intact_logs_verify() {
        for n in [0, 1, 2, 10] {
            let (log, head) = chain(n);
            assert_eq!(verify(&log, head.as_ref()), Ok(()), "n={n}");
        }
        let (log, _) = chain(3);
        assert_eq!(log[0].prev_hash, GENESIS_HASH);
        assert_eq!(log[1].prev_hash, log[0].entry_hash);
    }

    #[test]
    fn canonical_layout_is_exact() {
        let e = event(0);
        let bytes = canonical_bytes(7, &e, &[0xAA; 32]);
        let mut want = b"renketsu/audit/v1".to_vec();
        want.extend_from_slice(&7u64.to_be_bytes());
        want.extend_from_slice(&1_767_225_600_000i64.to_be_bytes());
        want.extend_from_slice(&8u32.to_be_bytes());
        want.extend_from_slice(b"holder-0");
        want.extend_from_slice(&2i32.to_be_bytes());
        want.extend_from_slice(&39u32.to_be_bytes());
        want.extend_from_slice(b"/renketsu.v1.KeyCustodian/EvaluateBatch");
        want.extend_from_slice(&1u32.to_be_bytes());
        want.extend_from_slice(b"p");
        want.extend_from_slice(&4u32.to_be_bytes());
        want.extend_from_slice(b"r/v1");
        want.extend_from_slice(&1u64.to_be_bytes());
        want.extend_from_slice(&1024u64.to_be_bytes());
        want.extend_from_slice(&0u32.to_be_bytes());
        want.extend_from_slice(&[0xAA; 32]);
        assert_eq!(bytes, want);
        let h: [u8; 32] = Sha256::digest(&want).into();
        assert_eq!(entry_hash(7, &e, &[0xAA; 32]), h);
    }

    #[test]
    fn every_field_is_covered_by_the_hash() {
        let (log, _) = chain(1);
        let base = &log[0];
        let mut variants = Vec::new();
        let mut v = base.clone();
        v.sequence = 2;
        variants.push(v);
        let edits: [fn(&mut AuditEvent); 9] = [
            |e| e.unix_time_ms += 1,
            |e| e.actor_party.push('x'),
            |e| e.role = 3,
            |e| e.rpc.push('x'),
            |e| e.project.push('x'),
            |e| e.recipe.push('x'),
            |e| e.epoch += 1,
            |e| e.item_count += 1,
            |e| e.status_code = 8,
        ];
        for edit in edits {
            let mut v = base.clone();
            edit(&mut v.event);
            variants.push(v);
        }
        let mut v = base.clone();
        v.prev_hash[31] ^= 1;
        variants.push(v);
        // Moving a byte from one string field to the next must change the hash too.
        let mut v = base.clone();
        v.event.project = "pr".into();
        v.event.recipe = "/v1".into();
        let mut w = base.clone();
        w.event.project = "p".into();
        w.event.recipe = "r/v1".into();
        assert_ne!(
            entry_hash(1, &v.event, &v.prev_hash),
            entry_hash(1, &w.event, &w.prev_hash)
        );
        for v in variants {
            assert!(!v.hash_is_valid(), "{v:?}");
        }
    }

    #[test]
    fn edited_entry_is_detected() {
        let (mut log, head) = chain(5);
        log[2].event.item_count = 1;
        assert_eq!(
            verify(&log, head.as_ref()),
            Err(AuditError::Changed { sequence: 3 })
        );
    }

    #[test]
    fn rewritten_entry_with_recomputed_hash_breaks_the_next_link() {
        let (mut log, head) = chain(5);
        log[2].event.actor_party = "someone-else".into();
        log[2].entry_hash = entry_hash(3, &log[2].event, &log[2].prev_hash);
        assert_eq!(
            verify(&log, head.as_ref()),
            Err(AuditError::BrokenLink { sequence: 4 })
        );
    }

    #[test]
    fn rewritten_tail_is_caught_by_the_head() {
        let (mut log, head) = chain(5);
        log[3].event.item_count = 1;
        rechain(&mut log, 3);
        assert_eq!(
            verify(&log, head.as_ref()),
            Err(AuditError::HeadMismatch { sequence: 5 })
        );
        // Without the sealed head the rewrite would pass: the head is what catches it.
        assert_eq!(
            verify(&log, log.last().map(AuditEntry::head).as_ref()),
            Ok(())
        );
    }

    #[test]
    fn deleted_entries_are_detected() {
        let (log, head) = chain(6);
        let mut middle = log.clone();
        middle.remove(2);
        assert_eq!(
            verify(&middle, head.as_ref()),
            Err(AuditError::Missing { first: 3, last: 3 })
        );
        let mut first = log.clone();
        first.drain(0..2);
        assert_eq!(
            verify(&first, head.as_ref()),
            Err(AuditError::Missing { first: 1, last: 2 })
        );
        let mut last = log.clone();
        last.truncate(4);
        assert_eq!(
            verify(&last, head.as_ref()),
            Err(AuditError::Truncated { last: 4, head: 6 })
        );
        assert_eq!(
            verify(&[], head.as_ref()),
            Err(AuditError::Truncated { last: 0, head: 6 })
        );
        // Deleting the head as well: entries without a head are refused.
        assert_eq!(
            verify(&log, None),
            Err(AuditError::BeyondHead { last: 6, head: 0 })
        );
    }

    #[test]
    fn reordered_entries_are_detected() {
        let (log, head) = chain(6);
        // Rows swapped in place (as read in stored order).
        let mut swapped = log.clone();
        swapped.swap(2, 3);
        assert_eq!(
            verify(&swapped, head.as_ref()),
            Err(AuditError::OutOfOrder {
                previous: 4,
                found: 3
            })
        );
        // Sequence numbers swapped between two rows, then read by sequence.
        let mut renumbered = log.clone();
        renumbered[2].sequence = 4;
        renumbered[3].sequence = 3;
        renumbered.swap(2, 3);
        assert_eq!(
            verify(&renumbered, head.as_ref()),
            Err(AuditError::Reordered {
                sequence: 3,
                follows: 4
            })
        );
    }

    #[test]
    fn appended_entries_beyond_the_head_are_detected() {
        let (log, _) = chain(4);
        let stale_head = log[2].head();
        assert_eq!(
            verify(&log, Some(&stale_head)),
            Err(AuditError::BeyondHead { last: 4, head: 3 })
        );
    }

    #[test]
    fn head_bytes_round_trip() {
        let (log, head) = chain(3);
        let h = head.unwrap();
        assert_eq!(AuditHead::from_bytes(&h.to_bytes()), Some(h));
        assert_eq!(AuditHead::from_bytes(&h.to_bytes()[1..]), None);
        assert_eq!(h, log[2].head());
    }
}
