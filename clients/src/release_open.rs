//! Opening a researcher's release (`renketsu fetch`): every record that opens is written;
//! what does not open (one holder's content sealed to another key, a corrupt record) leaves
//! empty cells and is counted per holder, so one bad upload does not cost the whole release.

use std::collections::BTreeMap;

use anyhow::Result;
use renketsu_keys::content::{ContentOpener, ResearcherKeyPair};
use renketsu_linkage::engine::{HolderContent, write_joined_view};
use renketsu_protocol::v1;

/// Per holder: records that could not be opened, and the first reason.
pub(crate) type Unopened = BTreeMap<String, (u64, String)>;

/// The joined release: rows emitted (after the header row: `pid` then `<holder>.<column>`
/// for every holder with a content header), and what could not be opened.
pub(crate) struct Joined {
    /// Rows written (not counting the header row).
    pub rows: u64,
    /// Holders whose records (some or all) could not be opened.
    pub unopened: Unopened,
}

fn note(unopened: &mut Unopened, holder: &str, n: u64, why: impl FnOnce() -> String) {
    let e = unopened
        .entry(holder.to_owned())
        .or_insert_with(|| (0, why()));
    e.0 += n;
}

/// Opens and joins `clusters` of `project` (SPEC.md §5.3: a full outer join within each
/// cluster, one row per combination of its holders' records, clusters in pseudonym order, as
/// [`write_joined_view`] writes it for `renketsu link`), calling `emit` with the header row
/// first and then each row. A holder whose header does not open, or a record that does
/// not open or has the wrong number of values, gives empty cells and an entry in
/// [`Joined::unopened`].
///
/// # Errors
/// Only `emit`'s errors, and a record naming a holder index outside `holders`.
pub(crate) fn join(
    pair: &ResearcherKeyPair,
    project: &str,
    holders: &[String],
    headers: &[v1::SealedContentHeader],
    clusters: &[v1::ReleasedCluster],
    mut emit: impl FnMut(&[&str]) -> Result<()>,
) -> Result<Joined> {
    let mut unopened = Unopened::new();
    // Holder index → (opener if its header opened, columns).
    let mut content: BTreeMap<u32, (Option<ContentOpener>, Vec<String>)> = BTreeMap::new();
    for h in headers {
        let Some(idx) = holders.iter().position(|x| x == &h.party) else {
            note(&mut unopened, &h.party, 0, || {
                "a content header of a party that is not a holder".to_owned()
            });
            continue;
        };
        let opener = match ContentOpener::new(pair, &h.encapsulated_key, project, &h.party) {
            Ok(o) => Some(o),
            Err(e) => {
                note(&mut unopened, &h.party, 0, || {
                    format!("its content header does not open: {e}")
                });
                None
            }
        };
        content.insert(idx as u32, (opener, h.columns.clone()));
    }
    let order: Vec<u32> = content.keys().copied().collect();
    // The opened records, numbered in release order: per holder with content, its values
    // (`columns.len()` per record); per cluster, its records' numbers.
    let mut values: Vec<Vec<String>> = vec![Vec::new(); order.len()];
    let mut counts = vec![0usize; order.len()];
    let mut record_of: Vec<(usize, usize)> = Vec::new();
    let mut starts = vec![0u32];
    let mut members: Vec<u32> = Vec::new();
    let mut pids: Vec<String> = Vec::with_capacity(clusters.len());
    for c in clusters {
        for r in &c.records {
            let holder = holders
                .get(r.holder as usize)
                .ok_or_else(|| anyhow::anyhow!("a record of holder index {}", r.holder))?;
            let Some(k) = order.iter().position(|&h| h == r.holder) else {
                note(&mut unopened, holder, 1, || {
                    "records without a content header".to_owned()
                });
                continue;
            };
            let (opener, columns) = &content[&r.holder];
            let Some(opener) = opener else {
                // Its header did not open (the reason is noted already).
                note(&mut unopened, holder, 1, String::new);
                continue;
            };
            match opener.open(&r.sealed) {
                Ok(v) if v.len() == columns.len() => {
                    values[k].extend(v);
                    members.push(record_of.len() as u32);
                    record_of.push((k, counts[k]));
                    counts[k] += 1;
                }
                Ok(v) => note(&mut unopened, holder, 1, || {
                    format!(
                        "a record has {} values, its header {} columns",
                        v.len(),
                        columns.len()
                    )
                }),
                Err(e) => note(&mut unopened, holder, 1, || {
                    format!("a record does not open: {e}")
                }),
            }
        }
        starts.push(members.len() as u32);
        pids.push(c.pseudonym.clone());
    }
    let views: Vec<HolderContent<'_>> = order
        .iter()
        .zip(&values)
        .map(|(idx, v)| HolderContent {
            name: &holders[*idx as usize],
            columns: &content[idx].1,
            values: v,
        })
        .collect();
    // The engine's joined view (the one `renketsu link` writes): header, then per cluster in
    // pseudonym order the full outer join of its opened records.
    let mut rows = 0u64;
    write_joined_view(
        &mut |row: &[&str]| {
            rows += 1;
            emit(row)
        },
        &views,
        &pids,
        &starts,
        &members,
        &|g| record_of[g as usize].0,
        &|g| record_of[g as usize].1,
    )?;
    let rows = rows - 1;
    Ok(Joined { rows, unopened })
}

/// The long form of a release (issue 16 item 5): a header row `pid, holder, <holder>.<column>…`
/// (every holder with a content header, in holder order, as in `joined.csv`), then one row
/// per released record with content: its cluster's pseudonym, its holder, and its values
/// under its holder's columns (other holders' cells empty). Clusters in release (pseudonym)
/// order, records in release order. A record that does not open gives empty cells (it is
/// reported by [`join`]).
///
/// # Errors
/// Only `emit`'s errors.
pub(crate) fn long_rows(
    pair: &ResearcherKeyPair,
    project: &str,
    holders: &[String],
    headers: &[v1::SealedContentHeader],
    clusters: &[v1::ReleasedCluster],
    mut emit: impl FnMut(&[&str]) -> Result<()>,
) -> Result<u64> {
    // Holder index → (opener, first column, width).
    let mut content: BTreeMap<u32, (Option<ContentOpener>, Vec<String>)> = BTreeMap::new();
    for h in headers {
        if let Some(idx) = holders.iter().position(|x| x == &h.party) {
            let opener = ContentOpener::new(pair, &h.encapsulated_key, project, &h.party).ok();
            content.insert(idx as u32, (opener, h.columns.clone()));
        }
    }
    let mut header = vec!["pid".to_owned(), "holder".to_owned()];
    let mut first = BTreeMap::new();
    for (idx, (_, columns)) in &content {
        first.insert(*idx, header.len());
        header.extend(
            columns
                .iter()
                .map(|c| format!("{}.{c}", holders[*idx as usize])),
        );
    }
    emit(&header.iter().map(String::as_str).collect::<Vec<_>>())?;
    let width = header.len();
    let mut rows = 0u64;
    for c in clusters {
        for r in &c.records {
            let (Some((opener, columns)), Some(holder)) =
                (content.get(&r.holder), holders.get(r.holder as usize))
            else {
                continue;
            };
            let mut row = vec![String::new(); width];
            row[0].clone_from(&c.pseudonym);
            row[1].clone_from(holder);
            if let Some(values) = opener.as_ref().and_then(|o| o.open(&r.sealed).ok())
                && values.len() == columns.len()
            {
                let at = first[&r.holder];
                for (k, v) in values.into_iter().enumerate() {
                    row[at + k] = v;
                }
            }
            emit(&row.iter().map(String::as_str).collect::<Vec<_>>())?;
            rows += 1;
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use renketsu_keys::content::ContentSealer;

    use super::*;

    fn header(
        pk: &[u8; 32],
        project: &str,
        party: &str,
    ) -> (v1::SealedContentHeader, ContentSealer) {
        let sealer = ContentSealer::new(pk, project, party).unwrap();
        (
            v1::SealedContentHeader {
                party: party.to_owned(),
                columns: vec!["prefecture".to_owned()],
                encapsulated_key: sealer.encapsulated_key().to_vec(),
            },
            sealer,
        )
    }

    #[test]
    fn what_opens_is_written_and_what_does_not_is_counted_per_holder() {
        let researcher = ResearcherKeyPair::derive(&[7u8; 32]);
        let other = ResearcherKeyPair::derive(&[8u8; 32]);
        let holders = vec!["ehr".to_owned(), "ndb".to_owned()];
        let (h_ehr, s_ehr) = header(&researcher.public_key(), "p", "ehr");
        // ndb sealed its content to another researcher key.
        let (h_ndb, s_ndb) = header(&other.public_key(), "p", "ndb");
        let seal = |s: &ContentSealer, v: &str| s.seal(&[v.to_owned()]);
        let mut corrupt = seal(&s_ehr, "Osaka");
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        let clusters = vec![
            v1::ReleasedCluster {
                weakest_link_probability: None,
                changed: false,
                pseudonym: "a".repeat(32),
                records: vec![
                    v1::SealedRecord {
                        holder: 0,
                        sealed: seal(&s_ehr, "Tokyo"),
                    },
                    v1::SealedRecord {
                        holder: 1,
                        sealed: seal(&s_ndb, "Tokyo"),
                    },
                ],
            },
            v1::ReleasedCluster {
                weakest_link_probability: None,
                changed: false,
                pseudonym: "b".repeat(32),
                records: vec![v1::SealedRecord {
                    holder: 0,
                    sealed: corrupt,
                }],
            },
        ];
        let mut out = Vec::new();
        let j = join(
            &researcher,
            "p",
            &holders,
            &[h_ehr, h_ndb],
            &clusters,
            |row| {
                out.push(row.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>());
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(out[0], ["pid", "ehr.prefecture", "ndb.prefecture"]);
        assert_eq!(out[1], ["a".repeat(32), "Tokyo".to_owned(), String::new()]);
        assert_eq!(out[2], ["b".repeat(32), String::new(), String::new()]);
        assert_eq!(j.rows, 2);
        assert_eq!(j.unopened.get("ehr").map(|u| u.0), Some(1));
        assert_eq!(j.unopened.get("ndb").map(|u| u.0), Some(1));
    }

    #[test]
    fn the_long_form_has_one_row_per_released_record() {
        let researcher = ResearcherKeyPair::derive(&[7u8; 32]);
        let holders = vec!["ehr".to_owned(), "claims".to_owned()];
        let (h_ehr, s_ehr) = header(&researcher.public_key(), "p", "ehr");
        let (h_cl, s_cl) = header(&researcher.public_key(), "p", "claims");
        let seal = |s: &ContentSealer, v: &str| s.seal(&[v.to_owned()]);
        let rec = |holder: u32, sealed: Vec<u8>| v1::SealedRecord { holder, sealed };
        // One person: one EHR record and three receipts (the wide join would give 3 rows;
        // with two EHR records, 6).
        let clusters = vec![v1::ReleasedCluster {
            pseudonym: "a".repeat(32),
            records: vec![
                rec(0, seal(&s_ehr, "Tokyo")),
                rec(1, seal(&s_cl, "2026-01")),
                rec(1, seal(&s_cl, "2026-02")),
                rec(1, seal(&s_cl, "2026-03")),
            ],
            weakest_link_probability: None,
            changed: false,
        }];
        let mut out = Vec::new();
        let n = long_rows(
            &researcher,
            "p",
            &holders,
            &[h_ehr, h_cl],
            &clusters,
            |row| {
                out.push(row.join(","));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(n, 4);
        let a = "a".repeat(32);
        assert_eq!(
            out,
            [
                "pid,holder,ehr.prefecture,claims.prefecture".to_owned(),
                format!("{a},ehr,Tokyo,"),
                format!("{a},claims,,2026-01"),
                format!("{a},claims,,2026-02"),
                format!("{a},claims,,2026-03"),
            ]
        );
    }
}
