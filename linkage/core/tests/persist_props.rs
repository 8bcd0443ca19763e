//! Properties of the persistent-pseudonym rule (`renketsu_linkage::persist`, SPEC.md §10.5.1).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use proptest::prelude::*;
use renketsu_linkage::persist::{Assignment, EventKind, Issued, Previous, Pseudonym, assign};

/// Scripted fresh pseudonyms: 1, 2, 3, … in the first 8 bytes.
fn counter(start: u64) -> impl FnMut() -> Pseudonym {
    let mut n = start;
    move || {
        n += 1;
        let mut p = [0u8; 16];
        p[..8].copy_from_slice(&n.to_be_bytes());
        p
    }
}

/// The state after a job, as the linkage unit keeps it.
fn next_state(
    prev: &Previous<(u8, u32)>,
    keys: &[(u8, u32)],
    labels: &[u32],
    excluded: &[bool],
    a: &Assignment,
    job: u64,
) -> Previous<(u8, u32)> {
    let mut issued = prev.issued.clone();
    for p in &a.born {
        issued.insert(
            *p,
            Issued {
                born_job: job,
                withdrawn: false,
            },
        );
    }
    for (c, p) in a.pseudonyms.iter().enumerate() {
        if excluded[c] {
            issued.get_mut(p).unwrap().withdrawn = true;
        }
    }
    Previous {
        members: keys
            .iter()
            .zip(labels)
            .map(|(k, &l)| (*k, a.pseudonyms[l as usize]))
            .collect(),
        issued,
    }
}

/// A partition of `n` records (holder, id) into clusters, labels 0..k dense.
fn partition(n: usize, max_k: u32) -> impl Strategy<Value = (Vec<(u8, u32)>, Vec<u32>)> {
    proptest::collection::vec((0u8..3, 0..max_k), n).prop_map(|v| {
        let mut dense = BTreeMap::new();
        let mut keys = Vec::new();
        let mut labels = Vec::new();
        for (i, (h, l)) in v.into_iter().enumerate() {
            let next = dense.len() as u32;
            let d = *dense.entry(l).or_insert(next);
            keys.push((h, i as u32));
            labels.push(d);
        }
        (keys, labels)
    })
}

fn clusters_of(keys: &[(u8, u32)], labels: &[u32]) -> Vec<BTreeSet<(u8, u32)>> {
    let k = labels.iter().max().map_or(0, |m| *m as usize + 1);
    let mut out = vec![BTreeSet::new(); k];
    for (key, &l) in keys.iter().zip(labels) {
        out[l as usize].insert(*key);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A cluster unchanged between jobs keeps its pseudonym however its records and the
    /// clusters are ordered, and nothing is recorded.
    #[test]
    fn unchanged_clusters_keep_their_pseudonyms_under_any_order(
        (keys, labels) in partition(40, 12),
        shuffle in proptest::collection::vec(any::<u32>(), 40),
        relabel in any::<u64>(),
    ) {
        let k = labels.iter().max().map_or(0, |m| *m as usize + 1);
        let excluded = vec![false; k];
        let a1 = assign(&Previous::default(), &keys, &labels, &excluded, &mut counter(0));
        let s1 = next_state(&Previous::default(), &keys, &labels, &excluded, &a1, 1);
        // Records in another order, clusters numbered otherwise.
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_by_key(|&i| shuffle[i]);
        let perm: Vec<u32> = {
            let mut p: Vec<u32> = (0..k as u32).collect();
            p.sort_by_key(|&x| (u64::from(x).wrapping_mul(relabel | 1)) ^ relabel);
            p
        };
        let keys2: Vec<_> = order.iter().map(|&i| keys[i]).collect();
        let labels2: Vec<u32> = order.iter().map(|&i| perm[labels[i] as usize]).collect();
        let a2 = assign(&s1, &keys2, &labels2, &excluded, &mut counter(1000));
        prop_assert!(a2.events.is_empty(), "{:?}", a2.events);
        prop_assert!(a2.born.is_empty());
        for (i, key) in keys2.iter().enumerate() {
            prop_assert_eq!(a2.pseudonyms[labels2[i] as usize], s1.members[key]);
        }
    }

    /// Any change: pseudonyms are distinct; a fresh one is new (`New` or `Split`); every
    /// pseudonym that stops naming a cluster is the `old` of exactly one `Merge` or `Retire`;
    /// a merged cluster keeps the oldest of the pseudonyms it inherits; a cluster equal to a
    /// previous one keeps its pseudonym; opt-outs are withdrawn once.
    #[test]
    fn every_change_is_in_the_crosswalk(
        (keys1, labels1) in partition(30, 10),
        (keys2, labels2) in partition(36, 10),
        ages in proptest::collection::vec(1u64..4, 10),
        opt in proptest::collection::vec(any::<bool>(), 10),
    ) {
        // Job 1 issues pseudonyms; give them random ages (as if born in jobs 1..3).
        let k1 = labels1.iter().max().map_or(0, |m| *m as usize + 1);
        let a1 = assign(&Previous::default(), &keys1, &labels1, &vec![false; k1], &mut counter(0));
        let mut s1 = next_state(&Previous::default(), &keys1, &labels1, &vec![false; k1], &a1, 1);
        for (i, p) in a1.pseudonyms.iter().enumerate() {
            s1.issued.get_mut(p).unwrap().born_job = ages[i % ages.len()];
        }
        // Job 2: records 0..30 kept (ids shared), 30..36 new; clusters redrawn.
        let k2 = labels2.iter().max().map_or(0, |m| *m as usize + 1);
        let excluded: Vec<bool> = (0..k2).map(|c| opt[c % opt.len()]).collect();
        // Keys of job 2 reuse job 1's ids for the first 30 records.
        let keys2: Vec<(u8, u32)> = keys2
            .iter()
            .enumerate()
            .map(|(i, k)| if i < keys1.len() { keys1[i] } else { *k })
            .collect();
        let a2 = assign(&s1, &keys2, &labels2, &excluded, &mut counter(1000));
        let now: BTreeSet<Pseudonym> = a2.pseudonyms.iter().copied().collect();
        prop_assert_eq!(now.len(), k2, "distinct");
        let before: BTreeSet<Pseudonym> = a1.pseudonyms.iter().copied().collect();
        let mut gone_events: HashMap<Pseudonym, usize> = HashMap::new();
        for e in &a2.events {
            match e.kind {
                EventKind::Merge | EventKind::Retire => {
                    *gone_events.entry(e.old.unwrap()).or_default() += 1;
                }
                EventKind::New | EventKind::Split => {
                    prop_assert!(a2.born.contains(&e.new.unwrap()));
                    prop_assert!(!s1.issued.contains_key(&e.new.unwrap()));
                }
                EventKind::Withdraw => {}
            }
            if e.kind == EventKind::Merge {
                let (o, n) = (e.old.unwrap(), e.new.unwrap());
                prop_assert!(now.contains(&n));
                prop_assert!((s1.issued[&n].born_job, n) < (s1.issued[&o].born_job, o), "the older survives");
            }
        }
        for p in &before {
            let expected = usize::from(!now.contains(p));
            prop_assert_eq!(gone_events.get(p).copied().unwrap_or(0), expected);
        }
        let born_events = a2.events.iter().filter(|e| matches!(e.kind, EventKind::New | EventKind::Split)).count();
        prop_assert_eq!(born_events, a2.born.len());
        prop_assert_eq!(a2.born.len() + (k2 - a2.born.len()), k2);
        // A cluster whose members equal a previous cluster's keeps that pseudonym.
        let c1 = clusters_of(&keys1, &labels1);
        let c2 = clusters_of(&keys2, &labels2);
        for (c, members) in c2.iter().enumerate() {
            if let Some(p) = c1.iter().position(|m| m == members) {
                prop_assert_eq!(a2.pseudonyms[c], a1.pseudonyms[p]);
            }
        }
        // Withdrawals: exactly the excluded clusters.
        let withdrawn: BTreeSet<Pseudonym> = a2.events.iter().filter(|e| e.kind == EventKind::Withdraw).map(|e| e.old.unwrap()).collect();
        let want: BTreeSet<Pseudonym> = (0..k2).filter(|&c| excluded[c]).map(|c| a2.pseudonyms[c]).collect();
        prop_assert_eq!(withdrawn, want);
    }
}
