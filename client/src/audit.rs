//! Audit entries from the wire back into hash-chain entries (SPEC.md §8.6), for the
//! auditor's verification of either service's log with `renketsu_keys::audit::verify`.

use renketsu_keys::audit::{AuditEntry, AuditEvent, AuditHead, HASH_LEN};
use renketsu_protocol::v1;

/// A hash field of the wire form that is not 32 bytes: the entry was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit entry {sequence}: {what} is {len} bytes, not 32 (the entry was changed)")]
#[non_exhaustive]
pub struct HashLengthError {
    /// The entry (or head) sequence number.
    pub sequence: u64,
    /// Which field: `prev_hash`, `entry_hash` or `head entry_hash`.
    pub what: &'static str,
    /// Its length in bytes.
    pub len: usize,
}

fn hash32(
    what: &'static str,
    sequence: u64,
    bytes: &[u8],
) -> Result<[u8; HASH_LEN], HashLengthError> {
    bytes.try_into().map_err(|_| HashLengthError {
        sequence,
        what,
        len: bytes.len(),
    })
}

/// The chain entry of one wire entry (fields 1–12 of `AuditEntry`).
///
/// # Errors
/// [`HashLengthError`] if `prev_hash` or `entry_hash` is not 32 bytes.
pub fn entry_from_wire(e: &v1::AuditEntry) -> Result<AuditEntry, HashLengthError> {
    Ok(AuditEntry {
        sequence: e.sequence,
        event: AuditEvent {
            unix_time_ms: e.unix_time_ms,
            actor_party: e.actor_party.clone(),
            role: e.role,
            rpc: e.rpc.clone(),
            project: e.project.clone(),
            recipe: e.recipe.clone(),
            epoch: e.epoch,
            item_count: e.item_count,
            status_code: e.status_code,
        },
        prev_hash: hash32("prev_hash", e.sequence, &e.prev_hash)?,
        entry_hash: hash32("entry_hash", e.sequence, &e.entry_hash)?,
    })
}

/// The custodian's sealed head from the wire: `None` for an empty log (sequence 0).
///
/// # Errors
/// [`HashLengthError`] if the head's hash is not 32 bytes.
pub fn head_from_wire(h: &v1::AuditHead) -> Result<Option<AuditHead>, HashLengthError> {
    if h.sequence == 0 {
        return Ok(None);
    }
    Ok(Some(AuditHead {
        sequence: h.sequence,
        entry_hash: hash32("head entry_hash", h.sequence, &h.entry_hash)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_entries_round_trip_and_short_hashes_are_refused() {
        let event = AuditEvent {
            unix_time_ms: 5,
            actor_party: "holder-a".into(),
            role: 2,
            rpc: "/renketsu.v1.KeyCustodian/EvaluateBatch".into(),
            project: "p".into(),
            recipe: "r/v1".into(),
            epoch: 1,
            item_count: 3,
            status_code: 0,
        };
        let first = AuditEntry::next(None, event.clone());
        let second = AuditEntry::next(Some(&first.head()), event);
        let wire = |e: &AuditEntry| v1::AuditEntry {
            sequence: e.sequence,
            unix_time_ms: e.event.unix_time_ms,
            actor_party: e.event.actor_party.clone(),
            role: e.event.role,
            rpc: e.event.rpc.clone(),
            project: e.event.project.clone(),
            recipe: e.event.recipe.clone(),
            epoch: e.event.epoch,
            item_count: e.event.item_count,
            status_code: e.event.status_code,
            prev_hash: e.prev_hash.to_vec(),
            entry_hash: e.entry_hash.to_vec(),
        };
        let back: Vec<AuditEntry> = [&first, &second]
            .into_iter()
            .map(|e| entry_from_wire(&wire(e)).unwrap())
            .collect();
        assert_eq!(back, [first.clone(), second.clone()]);
        let head = second.head();
        renketsu_keys::audit::verify(&back, Some(&head)).unwrap();
        let mut cut = wire(&second);
        cut.entry_hash.pop();
        assert_eq!(
            entry_from_wire(&cut).unwrap_err(),
            HashLengthError {
                sequence: 2,
                what: "entry_hash",
                len: 31
            }
        );
        assert_eq!(
            head_from_wire(&v1::AuditHead {
                sequence: 0,
                entry_hash: vec![0; 32]
            }),
            Ok(None)
        );
    }
}
