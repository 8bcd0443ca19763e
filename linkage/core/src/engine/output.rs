//! Writing a run's outputs (SPEC.md §5.2–§5.4): `clusters.csv`, `pairs.csv`,
//! `pair_scores.csv`, the researcher's `joined.csv`, and the typed [`Summary`].

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::sync::{Arc, Mutex};

use rand::RngCore;

use super::EngineError;
use super::run::{Linked, LinkedHolder};
use super::summary::{
    ClkSummary, ClustersSummary, HolderSummary, LshChosen, LshConfigured, LshHolderPair,
    LshSummary, LshTargets, MergesSummary, NormalizationSummary, PairsCompleteness, SchemaSummary,
    Summary, Timings,
};
use crate::lsh;
use crate::tokenlink::party_of;

/// An output file being written; visible under its name only once committed (so a crashed
/// run never leaves a truncated file that looks finished).
pub trait OutputFile: Write {
    /// Makes the file visible under its name.
    ///
    /// # Errors
    /// The sink's own error.
    fn commit(self: Box<Self>) -> std::io::Result<()>;
}

/// Where a run's outputs go (a directory, memory, an object store).
pub trait OutputSink {
    /// Starts writing output `name` (e.g. `pairs.csv`).
    ///
    /// # Errors
    /// The sink's own error.
    fn create(&mut self, name: &str) -> std::io::Result<Box<dyn OutputFile>>;

    /// Removes an output an earlier run left (absent: fine).
    ///
    /// # Errors
    /// The sink's own error.
    fn remove(&mut self, name: &str) -> std::io::Result<()>;
}

/// Outputs kept in memory (tests, bindings): a file appears once committed.
#[derive(Debug, Default, Clone)]
pub struct MemoryOutputs {
    files: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl MemoryOutputs {
    /// A committed file's bytes.
    pub fn get(&self, name: &str) -> Option<Vec<u8>> {
        self.files.lock().expect("not poisoned").get(name).cloned()
    }

    /// A committed file as text (empty if absent or not UTF-8).
    pub fn text(&self, name: &str) -> String {
        self.get(name)
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default()
    }

    /// Names of the committed files, sorted.
    pub fn names(&self) -> Vec<String> {
        self.files
            .lock()
            .expect("not poisoned")
            .keys()
            .cloned()
            .collect()
    }
}

impl OutputSink for MemoryOutputs {
    fn create(&mut self, name: &str) -> std::io::Result<Box<dyn OutputFile>> {
        Ok(Box::new(MemoryFile {
            name: name.to_owned(),
            bytes: Vec::new(),
            files: Arc::clone(&self.files),
        }))
    }

    fn remove(&mut self, name: &str) -> std::io::Result<()> {
        self.files.lock().expect("not poisoned").remove(name);
        Ok(())
    }
}

struct MemoryFile {
    name: String,
    bytes: Vec<u8>,
    files: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl Write for MemoryFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl OutputFile for MemoryFile {
    fn commit(self: Box<Self>) -> std::io::Result<()> {
        let me = *self;
        me.files
            .lock()
            .expect("not poisoned")
            .insert(me.name, me.bytes);
        Ok(())
    }
}

/// `n` pseudonyms of 128 random bits each (32 hex digits), distinct, from `rng` (a CSPRNG:
/// pseudonyms must not be guessable from each other; SPEC.md §5.4).
pub fn random_pseudonyms(n: usize, rng: &mut dyn RngCore) -> Vec<String> {
    let mut pids = Vec::with_capacity(n);
    let mut used = HashSet::with_capacity(n);
    while pids.len() < n {
        let mut b = [0u8; 16];
        rng.fill_bytes(&mut b);
        let pid = hex(&b);
        if used.insert(pid.clone()) {
            pids.push(pid);
        }
    }
    pids
}

fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(DIGITS[usize::from(x >> 4)] as char);
        s.push(DIGITS[usize::from(x & 15)] as char);
    }
    s
}

/// A CSV output being written.
struct CsvOut {
    name: &'static str,
    w: csv::Writer<Box<dyn OutputFile>>,
}

impl CsvOut {
    fn create(sink: &mut dyn OutputSink, name: &'static str) -> Result<Self, EngineError> {
        let file = sink.create(name).map_err(|e| out_err(name, e))?;
        Ok(Self {
            name,
            w: csv::Writer::from_writer(file),
        })
    }

    fn row<I, T>(&mut self, fields: I) -> Result<(), EngineError>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        self.w
            .write_record(fields)
            .map_err(|e| out_err(self.name, e.into()))
    }

    fn commit(self) -> Result<(), EngineError> {
        let name = self.name;
        let file = self
            .w
            .into_inner()
            .map_err(|e| out_err(name, std::io::Error::other(e.error().to_string())))?;
        file.commit().map_err(|e| out_err(name, e))
    }
}

fn out_err(file: &str, source: std::io::Error) -> EngineError {
    EngineError::Output {
        file: file.to_owned(),
        source,
    }
}

/// Members of each cluster in global record order (counting sort by label): `(starts,
/// members)`, cluster `c`'s records are `members[starts[c]..starts[c + 1]]`.
pub(super) fn members_by_cluster(labels: &[u32], clusters: usize) -> (Vec<u32>, Vec<u32>) {
    let mut starts = vec![0u32; clusters + 1];
    for &l in labels {
        starts[l as usize + 1] += 1;
    }
    for i in 0..clusters {
        starts[i + 1] += starts[i];
    }
    let mut fill = starts.clone();
    let mut members = vec![0u32; labels.len()];
    for (g, &l) in labels.iter().enumerate() {
        members[fill[l as usize] as usize] = g as u32;
        fill[l as usize] += 1;
    }
    (starts, members)
}

impl Linked<'_> {
    /// Writes `clusters.csv`, `pairs.csv`, `pair_scores.csv` (scored runs) and `joined.csv`
    /// (CSV inputs; an old one is removed otherwise) through `out`, each committed when
    /// complete, and returns the summary. `pids[c]` is cluster `c`'s pseudonym.
    ///
    /// # Panics
    /// If `pids` has fewer entries than [`Linked::clusters`].
    ///
    /// # Errors
    /// [`EngineError::Output`].
    pub fn write(
        &mut self,
        pids: &[String],
        out: &mut dyn OutputSink,
    ) -> Result<Summary, EngineError> {
        assert!(pids.len() >= self.clusters, "one pseudonym per cluster");
        let n_clusters = self.clusters;
        let (starts, members) = members_by_cluster(&self.labels, n_clusters);
        let offsets = self.offsets();
        let holders = &self.holders;
        let party_of = |g: u32| party_of(&offsets, g);
        let local = |g: u32| (g - offsets[party_of(g)]) as usize;

        let mut clusters_csv = CsvOut::create(out, "clusters.csv")?;
        clusters_csv.row(["party", "id", "pid"])?;
        for (g, &l) in self.labels.iter().enumerate() {
            let h = &holders[party_of(g as u32)];
            clusters_csv.row([
                h.name.as_str(),
                h.ids.get(local(g as u32)),
                pids[l as usize].as_str(),
            ])?;
        }

        let two = holders.len() == 2;
        let mut pairs_csv = CsvOut::create(out, "pairs.csv")?;
        if two {
            pairs_csv.row(["id_a", "id_b"])?;
        } else {
            pairs_csv.row(["party_a", "id_a", "party_b", "id_b"])?;
        }
        let mut scores_csv = match &self.scoring {
            Some(_) => {
                let mut f = CsvOut::create(out, "pair_scores.csv")?;
                f.row([
                    "party_a",
                    "id_a",
                    "party_b",
                    "id_b",
                    "weight",
                    "probability",
                    "levels",
                ])?;
                Some(f)
            }
            None => None,
        };
        let mut links = 0u64;
        let mut multi_party = 0u64;
        let mut largest = 0usize;
        for c in 0..n_clusters {
            let m = &members[starts[c] as usize..starts[c + 1] as usize];
            largest = largest.max(m.len());
            if m.len() < 2 || party_of(m[0]) == party_of(m[m.len() - 1]) {
                continue;
            }
            multi_party += 1;
            // Scored: the surest chain of every pair of a small cluster, for the estimated
            // quality (SPEC.md §9.4); a larger cluster's pairs count their own probability.
            let n = m.len();
            let mut chain = Vec::new();
            if let Some(run) = self.scoring.as_ref()
                && n <= crate::score::MAX_CHAIN_CLUSTER
            {
                chain = vec![0.0; n * n];
                for (i, &x) in m.iter().enumerate() {
                    for (j, &y) in m.iter().enumerate().skip(i + 1) {
                        if party_of(x) != party_of(y) {
                            let p = run.pair_probability(x, y);
                            chain[i * n + j] = p;
                            chain[j * n + i] = p;
                        }
                    }
                }
                crate::score::chain_probabilities(n, &mut chain);
            }
            for (i, &x) in m.iter().enumerate() {
                for (j, &y) in m.iter().enumerate().skip(i + 1) {
                    let (px, py) = (party_of(x), party_of(y));
                    if px == py {
                        continue;
                    }
                    let (ix, iy) = (holders[px].ids.get(local(x)), holders[py].ids.get(local(y)));
                    if let (Some(run), Some(sc)) = (self.scoring.as_mut(), scores_csv.as_mut()) {
                        let (w, p, levels) = run.score_output_pair(x, y);
                        let surest = chain.get(i * n + j).map_or(p, |&c| c.max(p));
                        run.observe_output_pair(px, py, surest);
                        sc.row([
                            holders[px].name.as_str(),
                            ix,
                            holders[py].name.as_str(),
                            iy,
                            &format!("{w:.3}"),
                            &format!("{p:.6}"),
                            &levels,
                        ])?;
                    }
                    if two {
                        pairs_csv.row([ix, iy])?;
                    } else {
                        pairs_csv.row([
                            holders[px].name.as_str(),
                            ix,
                            holders[py].name.as_str(),
                            iy,
                        ])?;
                    }
                    links += 1;
                }
            }
        }

        // joined.csv: the researcher's view; only pid and content columns. Token files carry
        // no content, so from token inputs there is none (and an old one is removed).
        let joined = if self.csv_inputs {
            let mut joined = CsvOut::create(out, "joined.csv")?;
            let views: Vec<HolderContent<'_>> = holders
                .iter()
                .map(|h| HolderContent {
                    name: &h.name,
                    columns: &h.content_columns,
                    values: &h.content,
                })
                .collect();
            write_joined_view(
                &mut |row: &[&str]| joined.row(row),
                &views,
                pids,
                &starts,
                &members,
                &party_of,
                &local,
            )?;
            Some(joined)
        } else {
            out.remove("joined.csv")
                .map_err(|e| out_err("joined.csv", e))?;
            None
        };
        let t_write = self.started.elapsed();
        clusters_csv.commit()?;
        pairs_csv.commit()?;
        if let Some(j) = joined {
            j.commit()?;
        }
        if let Some(f) = scores_csv {
            f.commit()?;
        }
        let ms = |d: std::time::Duration| (d.as_secs_f64() * 1e3 * 10.0).round() / 10.0;
        let timings = Timings {
            read_tokenize: ms(self.t_read),
            join_cluster: ms(self.t_cluster - self.t_read),
            write: ms(t_write - self.t_cluster),
            total: ms(self.started.elapsed()),
        };
        let mut summary = self.summary(links, multi_party, largest, timings);
        if let Some(run) = &self.scoring {
            let names: Vec<&str> = holders.iter().map(|h| h.name.as_str()).collect();
            summary.scoring = Some(run.summary(self.schema, &names, &self.labels, n_clusters));
        }
        Ok(summary)
    }

    fn summary(&self, links: u64, multi_party: u64, largest: usize, timings: Timings) -> Summary {
        let b = &self.summary_base;
        let (uy, um, uu) = crate::normalize::unicode_version();
        let today = b.today;
        Summary {
            renketsu_version: env!("CARGO_PKG_VERSION"),
            project: b.project.clone(),
            schema: SchemaSummary {
                name: b.schema_name.clone(),
                version: b.schema_version,
                path: b.schema_path.clone(),
            },
            inputs: if self.csv_inputs { "csv" } else { "tokens" },
            token_mode: b.token_mode.clone(),
            joined_csv: self.csv_inputs,
            today: format!(
                "{:04}-{:02}-{:02}",
                today / 10_000,
                today / 100 % 100,
                today % 100
            ),
            normalization: NormalizationSummary {
                unicode_version: format!("{uy}.{um}.{uu}"),
            },
            parties: self
                .holders
                .iter()
                .map(|h| holder_summary(h, &b.recipes))
                .collect(),
            links,
            clusters: ClustersSummary {
                total: self.clusters,
                multi_party,
                largest,
            },
            distinct_tokens: self.join.distinct_tokens,
            merges: MergesSummary {
                direct: self.join.direct_merges,
                guarded: self.join.guarded_merges,
                vetoed_by_guards: self.join.vetoed_merges,
            },
            clk: self.clk.as_ref().map(|c| ClkSummary {
                bits: b.clk_bits,
                threshold: b.clk_threshold,
                blocking: b.blocking,
                lsh: b.clk_lsh.map(|l| lsh_summary(l, &c.lsh, &self.holders)),
                pairs_compared: c.compared,
                reduction_ratio: if c.possible == 0 {
                    0.0
                } else {
                    1.0 - c.compared as f64 / c.possible as f64
                },
                largest_block: c.largest_block,
                pairs_completeness: b.truth.then(|| PairsCompleteness {
                    true_pairs: c.true_pairs,
                    candidates: c.true_candidates,
                    ratio: if c.true_pairs == 0 {
                        0.0
                    } else {
                        c.true_candidates as f64 / c.true_pairs as f64
                    },
                }),
                pairs_above_threshold: c.above_threshold,
                links: c.links,
            }),
            timings_ms: timings,
            scoring: None,
        }
    }
}

fn holder_summary(h: &LinkedHolder, recipes: &[String]) -> HolderSummary {
    HolderSummary {
        party: h.name.clone(),
        input: h.label.clone(),
        encoding: h.encoding.clone(),
        read: h.stats.read,
        tokenized: h.stats.tokenized,
        rejected: h.stats.rejected(),
        rejects_by_reason: h
            .stats
            .rejects
            .iter()
            .map(|(k, v)| (k.code().to_owned(), *v))
            .collect(),
        field_rejects: h
            .stats
            .field_rejects
            .iter()
            .map(|(f, m)| {
                (
                    f.clone(),
                    m.iter().map(|(c, n)| ((*c).to_owned(), *n)).collect(),
                )
            })
            .collect(),
        tokens_by_recipe: recipes
            .iter()
            .zip(&h.stats.tokens_by_recipe)
            .map(|(r, n)| (r.clone(), *n))
            .collect(),
        recipes_available: h.recipes_available.clone(),
        missing_identifier_columns: h.missing_identifier_columns.clone(),
        content_columns: h.content_columns.clone(),
        missing_content_columns: h.missing_content.clone(),
    }
}

fn lsh_summary(
    configured: crate::schema::ClkLsh,
    used: &[(usize, usize, lsh::LshChoice)],
    holders: &[LinkedHolder],
) -> LshSummary {
    let same = |f: fn(&lsh::LshChoice) -> u32| match used.first() {
        Some((_, _, c)) if used.iter().all(|(_, _, d)| f(d) == f(c)) => Some(f(c)),
        Some(_) => None,
        None => None,
    };
    LshSummary {
        bands: same(|c| c.params.bands).or(configured.bands),
        bits_per_band: same(|c| c.params.bits_per_band).or(configured.bits_per_band),
        configured: LshConfigured {
            bands: configured.bands,
            bits_per_band: configured.bits_per_band,
        },
        targets: LshTargets {
            candidate_probability_at_threshold: lsh::TARGET_AT_THRESHOLD,
            random_collisions_per_record_per_band: lsh::RANDOM_COLLISIONS_PER_RECORD,
        },
        holder_pairs: used
            .iter()
            .map(|(i, j, c)| LshHolderPair {
                holders: [holders[*i].name.clone(), holders[*j].name.clone()],
                bands: c.params.bands,
                bits_per_band: c.params.bits_per_band,
                chosen: LshChosen {
                    bands: c.bands_chosen,
                    bits_per_band: c.bits_chosen,
                },
                records: c.records,
                mean_popcount: c.mean_popcount,
                sampled_pairs: c.sampled_pairs,
                random_band_probability: c.random_band_probability,
                random_collisions_per_band: c.random_collisions_per_band,
                distance_at_threshold: c.distance_at_threshold,
                band_probability_at_threshold: c.band_probability_at_threshold,
                candidate_probability_at_threshold: c.candidate_probability_at_threshold,
            })
            .collect(),
    }
}

/// One holder's content for the joined view.
#[derive(Clone, Copy, Debug)]
pub struct HolderContent<'a> {
    /// The holder's name (column prefix).
    pub name: &'a str,
    /// Its content columns.
    pub columns: &'a [String],
    /// `columns.len()` values per record, records in order.
    pub values: &'a [String],
}

/// The researcher's view (SPEC.md §5.4, §10.6): header `pid`, then `<holder>.<column>` for
/// each holder's content columns; per cluster, ordered by pseudonym (so that row order
/// reveals nothing about input order), the full outer join of its records: every combination
/// of one record per holder, empty cells for a holder without a record. `row` receives each
/// line, header first; `members[starts[c]..starts[c + 1]]` are cluster `c`'s global records,
/// `holder_of`/`local` map a global record to its holder and index there.
///
/// # Errors
/// Whatever `row` returns.
pub fn write_joined_view<E>(
    row: &mut dyn FnMut(&[&str]) -> Result<(), E>,
    holders: &[HolderContent<'_>],
    pids: &[String],
    starts: &[u32],
    members: &[u32],
    holder_of: &dyn Fn(u32) -> usize,
    local: &dyn Fn(u32) -> usize,
) -> Result<(), E> {
    let mut header = vec!["pid".to_owned()];
    for h in holders {
        for c in h.columns {
            header.push(format!("{}.{c}", h.name));
        }
    }
    row(&header.iter().map(String::as_str).collect::<Vec<_>>())?;
    let clusters = starts.len().saturating_sub(1);
    let mut order: Vec<usize> = (0..clusters).collect();
    order.sort_unstable_by(|&a, &b| pids[a].cmp(&pids[b]));
    let mut per_holder: Vec<Vec<Option<usize>>> = vec![Vec::new(); holders.len()];
    let mut choice = vec![0usize; holders.len()];
    let mut line: Vec<&str> = Vec::with_capacity(header.len());
    for c in order {
        for v in per_holder.iter_mut() {
            v.clear();
        }
        for &g in &members[starts[c] as usize..starts[c + 1] as usize] {
            per_holder[holder_of(g)].push(Some(local(g)));
        }
        for v in per_holder.iter_mut() {
            if v.is_empty() {
                v.push(None);
            }
        }
        choice.iter_mut().for_each(|x| *x = 0);
        loop {
            line.clear();
            line.push(&pids[c]);
            for (p, h) in holders.iter().enumerate() {
                let w = h.columns.len();
                match per_holder[p][choice[p]] {
                    Some(i) => line.extend(h.values[i * w..(i + 1) * w].iter().map(String::as_str)),
                    None => line.extend(std::iter::repeat_n("", w)),
                }
            }
            row(&line)?;
            let mut k = 0;
            loop {
                if k == holders.len() {
                    break;
                }
                choice[k] += 1;
                if choice[k] < per_holder[k].len() {
                    break;
                }
                choice[k] = 0;
                k += 1;
            }
            if k == holders.len() {
                break;
            }
        }
    }
    Ok(())
}
