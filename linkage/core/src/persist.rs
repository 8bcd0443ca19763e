//! Persistent person pseudonyms (SPEC.md §10.5.1): after a job, each new cluster is matched
//! to the previous job's clusters by the member records they share, and keeps, inherits or
//! gets a pseudonym by the survivor rule. Pure: no I/O, no clock; fresh pseudonyms come
//! from the caller (random in the linkage unit, scripted in tests).
//!
//! The rule, for previous pseudonyms `p` and new clusters `c`, with `n(c, p)` = records of
//! `p` in the previous job that are members of `c`:
//!
//! 1. **Heir**: each previous pseudonym `p` with `n(c, p) > 0` for some `c` goes to the
//!    cluster with the largest `n(c, p)` (the part keeping the majority of its records); on
//!    a tie, to the tied cluster holding the smallest shared record key (keys are ordered
//!    `(holder, record id)`), so the rule does not depend on the order of records or uploads.
//! 2. **Survivor**: a cluster that is heir of one pseudonym keeps it. A cluster that is heir
//!    of several keeps the **oldest** (smallest `(born job, pseudonym bytes)`); the others are
//!    retired into it (`Merge` events, old → survivor).
//! 3. A cluster that is heir of none gets a fresh pseudonym: `Split` (old → new, `old` the
//!    pseudonym whose records it shares most, ties as in 1) when it shares records with a
//!    previous pseudonym, else `New` (→ new).
//! 4. A previous pseudonym none of whose records is in any new cluster is retired
//!    (`Retire`, old →).
//! 5. An excluded cluster (opt-out) whose pseudonym was not withdrawn before gets `Withdraw`
//!    (old →) in addition; a brand-new excluded cluster is withdrawn at birth (`Withdraw`
//!    after its `New`).
//!
//! Every pseudonym that stops naming a cluster appears as `old` of a `Merge` or `Retire`
//! event; every fresh one as `new` of a `New` or `Split` event.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

/// Bytes of a pseudonym (shown as 32 lower-case hex digits).
pub const PSEUDONYM_BYTES: usize = 16;

/// A person pseudonym.
pub type Pseudonym = [u8; PSEUDONYM_BYTES];

/// What is known of an issued pseudonym.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Issued {
    /// The job that issued it (its age: older = smaller).
    pub born_job: u64,
    /// Withdrawn (opt-out) as of the previous job.
    pub withdrawn: bool,
}

/// The state before a job: the previous job's members and every pseudonym ever issued.
#[derive(Clone, Debug)]
pub struct Previous<K> {
    /// Each record of the previous DONE job (excluded clusters included) and its pseudonym.
    pub members: HashMap<K, Pseudonym>,
    /// Every pseudonym ever issued in the project (fresh ones must differ from all of them).
    pub issued: HashMap<Pseudonym, Issued>,
}

impl<K> Default for Previous<K> {
    fn default() -> Self {
        Self {
            members: HashMap::new(),
            issued: HashMap::new(),
        }
    }
}

/// Kinds of crosswalk event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    /// A cluster sharing no record with any previous one: `→ new`.
    New,
    /// Two or more clusters merged: `old → survivor` for each retired pseudonym.
    Merge,
    /// A part split off a cluster: `old → new` (the old pseudonym stays with the majority).
    Split,
    /// A pseudonym whose records are all gone: `old →`.
    Retire,
    /// A cluster excluded by an opt-out: `old →` (the pseudonym it had).
    Withdraw,
}

impl EventKind {
    /// The name stored and shown (`new`, `merge`, `split`, `retire`, `withdraw`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Merge => "merge",
            Self::Split => "split",
            Self::Retire => "retire",
            Self::Withdraw => "withdraw",
        }
    }

    /// The kind named `s` ([`Self::as_str`]).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "new" => Self::New,
            "merge" => Self::Merge,
            "split" => Self::Split,
            "retire" => Self::Retire,
            "withdraw" => Self::Withdraw,
            _ => return None,
        })
    }
}

/// One crosswalk event of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The pseudonym before (none for `New`).
    pub old: Option<Pseudonym>,
    /// The pseudonym after (none for `Retire` and `Withdraw`).
    pub new: Option<Pseudonym>,
}

/// The result of [`assign`].
#[derive(Clone, Debug, Default)]
pub struct Assignment {
    /// The pseudonym of each new cluster, by label.
    pub pseudonyms: Vec<Pseudonym>,
    /// Fresh pseudonyms (born in this job), sorted.
    pub born: Vec<Pseudonym>,
    /// The crosswalk events, sorted by kind, old, new.
    pub events: Vec<Event>,
}

/// Assigns a pseudonym to each new cluster (module docs). `keys[i]` is a record of the new
/// job (in any order), `labels[i]` its cluster (`0..excluded.len()`), `excluded[c]` whether
/// cluster `c` is excluded by an opt-out. `fresh` makes a random pseudonym; one equal to an
/// issued pseudonym or to one made before in this call is drawn again.
///
/// # Panics
/// If `keys` and `labels` differ in length or a label is out of range.
pub fn assign<K: Eq + Hash + Ord>(
    previous: &Previous<K>,
    keys: &[K],
    labels: &[u32],
    excluded: &[bool],
    fresh: &mut dyn FnMut() -> Pseudonym,
) -> Assignment {
    assert_eq!(keys.len(), labels.len(), "one label per record");
    let k = excluded.len();
    // Per (previous pseudonym, new cluster): shared records and the smallest shared key.
    let mut shared: HashMap<(Pseudonym, u32), (u64, &K)> = HashMap::new();
    for (key, &l) in keys.iter().zip(labels) {
        assert!((l as usize) < k, "label out of range");
        if let Some(p) = previous.members.get(key) {
            shared
                .entry((*p, l))
                .and_modify(|(n, min)| {
                    *n += 1;
                    if key < *min {
                        *min = key;
                    }
                })
                .or_insert((1, key));
        }
    }
    // Better candidate: more shared records, then the smaller smallest shared key.
    let better = |a: (u64, &K), b: (u64, &K)| a.0 > b.0 || (a.0 == b.0 && a.1 < b.1);
    // 1. Heir of each previous pseudonym, and each cluster's best previous pseudonym.
    let mut heir: HashMap<Pseudonym, (u32, (u64, &K))> = HashMap::new();
    let mut best_old: HashMap<u32, (Pseudonym, (u64, &K))> = HashMap::new();
    for (&(p, c), &score) in &shared {
        match heir.get(&p) {
            Some(&(_, s)) if !better(score, s) => {}
            _ => {
                heir.insert(p, (c, score));
            }
        }
        match best_old.get(&c) {
            Some(&(_, s)) if !better(score, s) => {}
            _ => {
                best_old.insert(c, (p, score));
            }
        }
    }
    let mut inherited: Vec<Vec<Pseudonym>> = vec![Vec::new(); k];
    for (p, (c, _)) in &heir {
        inherited[*c as usize].push(*p);
    }
    let age = |p: &Pseudonym| {
        let born = previous.issued.get(p).map_or(0, |i| i.born_job);
        (born, *p)
    };
    let mut used: HashSet<Pseudonym> = HashSet::new();
    let mut draw = |used: &mut HashSet<Pseudonym>| loop {
        let p = fresh();
        if !previous.issued.contains_key(&p) && used.insert(p) {
            return p;
        }
    };
    let mut out = Assignment {
        pseudonyms: Vec::with_capacity(k),
        ..Assignment::default()
    };
    for (c, ps) in inherited.iter_mut().enumerate() {
        ps.sort_by_key(|p| age(p));
        let pid = if let Some((&survivor, merged)) = ps.split_first() {
            for &old in merged {
                out.events.push(Event {
                    kind: EventKind::Merge,
                    old: Some(old),
                    new: Some(survivor),
                });
            }
            survivor
        } else {
            let p = draw(&mut used);
            out.born.push(p);
            out.events.push(Event {
                kind: match best_old.get(&(c as u32)) {
                    Some(_) => EventKind::Split,
                    None => EventKind::New,
                },
                old: best_old.get(&(c as u32)).map(|(o, _)| *o),
                new: Some(p),
            });
            p
        };
        let was_withdrawn = previous.issued.get(&pid).is_some_and(|i| i.withdrawn);
        if excluded[c] && !was_withdrawn {
            out.events.push(Event {
                kind: EventKind::Withdraw,
                old: Some(pid),
                new: None,
            });
        }
        out.pseudonyms.push(pid);
    }
    // 4. Previous pseudonyms with no record left.
    let mut gone: Vec<Pseudonym> = previous
        .members
        .values()
        .filter(|p| !heir.contains_key(*p))
        .copied()
        .collect();
    gone.sort_unstable();
    gone.dedup();
    for p in gone {
        out.events.push(Event {
            kind: EventKind::Retire,
            old: Some(p),
            new: None,
        });
    }
    out.born.sort_unstable();
    out.events.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter() -> impl FnMut() -> Pseudonym {
        let mut n = 0u64;
        move || {
            n += 1;
            let mut p = [0xee; 16];
            p[..8].copy_from_slice(&n.to_be_bytes());
            p
        }
    }

    fn pid(b: u8) -> Pseudonym {
        [b; 16]
    }

    fn prev(rows: &[(&'static str, u8)], born: &[(u8, u64)]) -> Previous<&'static str> {
        Previous {
            members: rows.iter().map(|&(k, p)| (k, pid(p))).collect(),
            issued: born
                .iter()
                .map(|&(p, j)| {
                    (
                        pid(p),
                        Issued {
                            born_job: j,
                            withdrawn: false,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn merge_keeps_the_older_and_split_the_majority() {
        // Previous: 1 = {a, b}, 2 = {c} (2 is older), 3 = {d, e, f}, 4 = {g}.
        let p = prev(
            &[
                ("a", 1),
                ("b", 1),
                ("c", 2),
                ("d", 3),
                ("e", 3),
                ("f", 3),
                ("g", 4),
            ],
            &[(1, 2), (2, 1), (3, 1), (4, 1)],
        );
        // New: {a, b, c} merged; {d, e} and {f} split; g gone; h new.
        let keys = ["a", "b", "c", "d", "e", "f", "h"];
        let labels = [0, 0, 0, 1, 1, 2, 3];
        let a = assign(&p, &keys, &labels, &[false; 4], &mut counter());
        assert_eq!(a.pseudonyms[0], pid(2), "the older survives");
        assert_eq!(a.pseudonyms[1], pid(3), "the majority keeps it");
        let (f, h) = (a.pseudonyms[2], a.pseudonyms[3]);
        assert_eq!(a.born, {
            let mut v = vec![f, h];
            v.sort();
            v
        });
        let mut want = vec![
            Event {
                kind: EventKind::Merge,
                old: Some(pid(1)),
                new: Some(pid(2)),
            },
            Event {
                kind: EventKind::Split,
                old: Some(pid(3)),
                new: Some(f),
            },
            Event {
                kind: EventKind::New,
                old: None,
                new: Some(h),
            },
            Event {
                kind: EventKind::Retire,
                old: Some(pid(4)),
                new: None,
            },
        ];
        want.sort();
        assert_eq!(a.events, want);
    }

    #[test]
    fn a_tied_split_goes_to_the_part_with_the_smallest_record() {
        let p = prev(&[("b", 1), ("a", 1)], &[(1, 1)]);
        for (keys, labels) in [(["a", "b"], [1, 0]), (["b", "a"], [0, 1])] {
            let a = assign(&p, &keys, &labels, &[false; 2], &mut counter());
            let ia = labels[keys.iter().position(|k| *k == "a").unwrap()] as usize;
            assert_eq!(a.pseudonyms[ia], pid(1));
            assert_ne!(a.pseudonyms[1 - ia], pid(1));
        }
    }

    #[test]
    fn opt_outs_are_withdrawn_once_and_fresh_pseudonyms_avoid_issued_ones() {
        let mut p = prev(&[("a", 1)], &[(1, 1), (9, 1)]);
        // The generator first offers an issued pseudonym: drawn again.
        let mut offers = vec![pid(7), pid(9)];
        let mut fresh = move || offers.pop().unwrap();
        let a = assign(&p, &["a", "z"], &[0, 1], &[true, false], &mut fresh);
        assert_eq!(a.pseudonyms, [pid(1), pid(7)]);
        assert!(a.events.contains(&Event {
            kind: EventKind::Withdraw,
            old: Some(pid(1)),
            new: None
        }));
        p.issued.get_mut(&pid(1)).unwrap().withdrawn = true;
        let a = assign(&p, &["a"], &[0], &[true], &mut counter());
        assert!(a.events.is_empty(), "{:?}", a.events);
    }
}
