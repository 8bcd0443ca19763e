//! The Rust half of `renketsu.spark`: the linkage unit's side of a scored job on token
//! files, with candidate pairs and comparison vectors made by a Python object (the Spark
//! pair stage) and everything else by the engine, as `renketsu link` runs it.
//!
//! * [`link_tokens`] runs [`LinkPlan::run_with`] on the holders' token files; the engine
//!   calls back into the stage object for [`PairStage::candidates`] (blocking keys out,
//!   sorted distinct pairs and the block-cap accounting in) and [`PairStage::compare`]
//!   (pairs out, pattern codes and term-frequency bits in).
//! * [`Comparer`] is what each Spark worker loads: the comparison features of the same
//!   token files ([`renketsu_linkage::engine::token_features`]), comparing batches of pairs.
//!
//! Arrays cross the boundary as little-endian bytes (`u32` record indices and codes, `f32`
//! bits, 32-byte keys), which PyArrow wraps without a copy. Tokens are pseudonymous
//! (keyed digests); no identifier or secret passes here.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict};
use renketsu_linkage::Token;
use renketsu_linkage::cluster::{ScoredClusterStats, ScoredLink};
use renketsu_linkage::engine::{
    HolderInput, Keys, LinkOptions, LinkPlan, NoObserver, token_features,
};
use renketsu_linkage::score::aggregate;
use renketsu_linkage::score::{
    CandidateStats, CandidateTotals, ClusterJob, Compared, ConflictRule, Features, PairGroup,
    PairSet, PairStage, ScoreError, TotalsContext, WeightTerms, cluster_component,
    labels_from_roots,
};
use renketsu_linkage::token::TOKEN_LEN;

use crate::{Schema, TokenReader, context, err, link_out, open};

fn u32s(b: &[u8]) -> Result<Vec<u32>, String> {
    if !b.len().is_multiple_of(4) {
        return Err(format!("{} bytes are not u32 values", b.len()));
    }
    Ok(b.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn f32s(b: &[u8]) -> Result<Vec<f32>, String> {
    if !b.len().is_multiple_of(4) {
        return Err(format!("{} bytes are not f32 values", b.len()));
    }
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn u64s(b: &[u8]) -> Result<Vec<u64>, String> {
    if !b.len().is_multiple_of(8) {
        return Err(format!("{} bytes are not u64 values", b.len()));
    }
    Ok(b.chunks_exact(8)
        .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect())
}

fn le(v: impl Iterator<Item = [u8; 4]>) -> Vec<u8> {
    v.flatten().collect()
}

/// A model's weight terms as they cross to a worker: `(prior, terms)` ([`WeightTerms`]).
type TermsParams = (f32, Vec<Vec<f32>>);

/// What a worker needs to select links: the weight terms, the threshold (bits) and the
/// veto comparisons.
type SelectParams = (TermsParams, f64, Vec<usize>);

/// What a worker needs for the totals besides labels and clusters' holders: the weight
/// terms, holder offsets, duplicates, `both_free` (holders × holders) and the veto
/// comparisons ([`TotalsContext`]).
type TotalsParams = (TermsParams, Vec<u32>, Vec<bool>, Vec<f64>, Vec<usize>);

/// One holder pair's partial totals: `(i, j, missed, (vetoed free, vetoed taken))`, each
/// `None` where the part had no such pair ([`CandidateTotals`]).
type TotalsRow = (usize, usize, Option<f64>, Option<(f64, f64)>);

fn totals_rows(t: &CandidateTotals) -> Vec<TotalsRow> {
    let mut keys: Vec<(usize, usize)> = t.missed.keys().chain(t.vetoed.keys()).copied().collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .map(|k| {
            (
                k.0,
                k.1,
                t.missed.get(&k).copied(),
                t.vetoed.get(&k).copied(),
            )
        })
        .collect()
}

fn totals_from_rows(rows: &[TotalsRow]) -> CandidateTotals {
    let mut out = CandidateTotals::default();
    for &(i, j, m, v) in rows {
        let mut part = CandidateTotals::default();
        if let Some(m) = m {
            part.missed.insert((i, j), m);
        }
        if let Some(v) = v {
            part.vetoed.insert((i, j), v);
        }
        out.merge(&part);
    }
    out
}

/// Compared pairs: the pairs, their codes, their term-frequency bits.
type ComparedColumns = (Vec<(u32, u32)>, Vec<u32>, Vec<f32>);

/// Columns of compared pairs as a worker receives them: ends `a`, `b` (`u32` LE), codes
/// (`u32` LE), term-frequency bits (`f32` LE), checked against `n` records.
fn compared_columns(
    n: usize,
    a: &[u8],
    b: &[u8],
    code: &[u8],
    bits: &[u8],
) -> Result<ComparedColumns, String> {
    let (a, b, code, bits) = (u32s(a)?, u32s(b)?, u32s(code)?, f32s(bits)?);
    if a.len() != b.len() || a.len() != code.len() || a.len() != bits.len() {
        return Err("compared columns of unequal lengths".to_owned());
    }
    if let Some(x) = a.iter().chain(&b).find(|&&x| x as usize >= n) {
        return Err(format!("record {x} out of range ({n} records)"));
    }
    Ok((a.into_iter().zip(b).collect(), code, bits))
}

/// A [`PairStage`] whose work is done by the Python object `stage` (its methods
/// `candidates(keys, records, offsets, max_block, max_block_pairs)` and `compare(a, b)`;
/// see `renketsu/spark.py`).
struct PyStage {
    stage: Py<PyAny>,
}

impl PyStage {
    fn fail(e: impl std::fmt::Display) -> ScoreError {
        ScoreError::Stage(e.to_string())
    }
}

impl PairStage for PyStage {
    fn candidates(
        &mut self,
        set: PairSet,
        keys: &mut [(Token, u32)],
        offsets: &[u32],
        max_block: usize,
        max_block_pairs: u64,
    ) -> Result<(Vec<(u32, u32)>, CandidateStats), ScoreError> {
        let mut kb = Vec::with_capacity(keys.len() * TOKEN_LEN);
        for (k, _) in keys.iter() {
            kb.extend_from_slice(k);
        }
        let gb = le(keys.iter().map(|k| k.1.to_le_bytes()));
        let stats = Python::attach(|py| -> PyResult<_> {
            let r = self.stage.bind(py).call_method1(
                "candidates",
                (
                    set.name(),
                    PyBytes::new(py, &kb),
                    PyBytes::new(py, &gb),
                    offsets.to_vec(),
                    max_block,
                    max_block_pairs,
                ),
            )?;
            let stats: Bound<'_, PyDict> = r.extract()?;
            let get = |k: &str| -> PyResult<u64> {
                stats
                    .get_item(k)?
                    .ok_or_else(|| PyValueError::new_err(format!("stats lack {k}")))?
                    .extract()
            };
            let dropped: Vec<(u8, u64, u64)> = stats
                .get_item("dropped")?
                .ok_or_else(|| PyValueError::new_err("stats lack dropped"))?
                .extract()?;
            Ok(CandidateStats {
                keys: get("keys")? as usize,
                largest_group: get("largest_group")? as usize,
                skipped_groups: get("skipped_groups")? as usize,
                pairs: get("pairs")?,
                dropped,
            })
        })
        .map_err(Self::fail)?;
        Ok((Vec::new(), stats))
    }

    fn compare(
        &mut self,
        _features: &Features,
        _pairs: &[(u32, u32)],
    ) -> Result<Vec<Compared>, ScoreError> {
        Err(Self::fail(
            "renketsu.spark keeps its pairs: the engine asks for aggregates",
        ))
    }

    fn keeps_pairs(&self) -> bool {
        true
    }

    fn groups(&mut self, set: PairSet, _features: &Features) -> Result<Vec<PairGroup>, ScoreError> {
        let cols = Python::attach(|py| -> PyResult<_> {
            let r = self.stage.bind(py).call_method1("groups", (set.name(),))?;
            let (ha, hb, code, bits, count): (
                PyBackedBytes,
                PyBackedBytes,
                PyBackedBytes,
                PyBackedBytes,
                PyBackedBytes,
            ) = r.extract()?;
            Ok([ha, hb, code, bits, count].map(|b| b.to_vec()))
        })
        .map_err(Self::fail)?;
        let [ha, hb, code, bits, count] = cols;
        let (ha, hb, code, bits) = (
            u32s(&ha).map_err(Self::fail)?,
            u32s(&hb).map_err(Self::fail)?,
            u32s(&code).map_err(Self::fail)?,
            u32s(&bits).map_err(Self::fail)?,
        );
        let count = u64s(&count).map_err(Self::fail)?;
        let n = ha.len();
        if [hb.len(), code.len(), bits.len(), count.len()]
            .iter()
            .any(|&l| l != n)
        {
            return Err(Self::fail("group columns of unequal lengths"));
        }
        (0..n)
            .map(|i| {
                let h = |x: u32| u16::try_from(x).map_err(|_| Self::fail("holder out of range"));
                Ok(PairGroup {
                    holders: (h(ha[i])?, h(hb[i])?),
                    code: code[i],
                    tf_bits: f32::from_bits(bits[i]),
                    count: count[i],
                })
            })
            .collect()
    }

    fn contains(&mut self, set: PairSet, pairs: &[(u32, u32)]) -> Result<Vec<bool>, ScoreError> {
        let a = le(pairs.iter().map(|p| p.0.to_le_bytes()));
        let b = le(pairs.iter().map(|p| p.1.to_le_bytes()));
        let flags = Python::attach(|py| -> PyResult<_> {
            let r = self.stage.bind(py).call_method1(
                "contains",
                (set.name(), PyBytes::new(py, &a), PyBytes::new(py, &b)),
            )?;
            let f: PyBackedBytes = r.extract()?;
            Ok(f.to_vec())
        })
        .map_err(Self::fail)?;
        Ok(flags.into_iter().map(|f| f != 0).collect())
    }

    fn select_links(
        &mut self,
        table: &WeightTerms,
        threshold: f64,
        veto: &[usize],
    ) -> Result<(Vec<ScoredLink>, u64), ScoreError> {
        let params: SelectParams = ((table.prior, table.terms.clone()), threshold, veto.to_vec());
        let (a, b, w, vetoed) = Python::attach(|py| -> PyResult<_> {
            let r = self
                .stage
                .bind(py)
                .call_method1("select_links", (params,))?;
            let (a, b, w, v): (PyBackedBytes, PyBackedBytes, PyBackedBytes, u64) = r.extract()?;
            Ok((a.to_vec(), b.to_vec(), w.to_vec(), v))
        })
        .map_err(Self::fail)?;
        let (a, b, w) = (
            u32s(&a).map_err(Self::fail)?,
            u32s(&b).map_err(Self::fail)?,
            f32s(&w).map_err(Self::fail)?,
        );
        if a.len() != b.len() || a.len() != w.len() {
            return Err(Self::fail("links of unequal lengths"));
        }
        let mut links: Vec<ScoredLink> = a
            .into_iter()
            .zip(b)
            .zip(w)
            .map(|((a, b), weight)| ScoredLink { a, b, weight })
            .collect();
        links.sort_unstable_by_key(|l| (l.a, l.b));
        Ok((links, vetoed))
    }

    fn totals(
        &mut self,
        table: &WeightTerms,
        ctx: &TotalsContext,
    ) -> Result<CandidateTotals, ScoreError> {
        let params: TotalsParams = (
            (table.prior, table.terms.clone()),
            ctx.offsets.clone(),
            ctx.duplicates.clone(),
            ctx.both_free.clone(),
            ctx.veto.clone(),
        );
        let labels = le(ctx.labels.iter().map(|l| l.to_le_bytes()));
        let holders: Vec<u8> = ctx
            .cluster_holders
            .iter()
            .flat_map(|h| h.to_le_bytes())
            .collect();
        let rows = Python::attach(|py| -> PyResult<_> {
            let r = self.stage.bind(py).call_method1(
                "totals",
                (
                    params,
                    PyBytes::new(py, &labels),
                    PyBytes::new(py, &holders),
                ),
            )?;
            let rows: Vec<TotalsRow> = r.extract()?;
            Ok(rows)
        })
        .map_err(Self::fail)?;
        Ok(totals_from_rows(&rows))
    }

    fn cluster(
        &mut self,
        job: ClusterJob<'_>,
    ) -> Result<(Vec<u32>, usize, ScoredClusterStats), ScoreError> {
        let has =
            Python::attach(|py| self.stage.bind(py).hasattr("cluster")).map_err(Self::fail)?;
        if has {
            self.cluster_remote(job)
        } else {
            Ok(job.run_in_process())
        }
    }
}

/// What a worker needs to cluster one connected component as the engine does: the holder
/// offsets, duplicates, guard flag, conflict rule and weight terms (the model's).
type ClusterParams = (
    Vec<u32>,
    Vec<bool>,
    bool,
    (Vec<usize>, Vec<usize>, f64),
    (f32, Vec<Vec<f32>>),
);

/// The counts of clustering: links, merges, redundant, vetoed (same holder), vetoed
/// (conflict).
type Counts = (u64, u64, u64, u64, u64);

/// A component's records, their clusters' smallest records (both `u32` LE) and the counts.
type ComponentOut<'py> = (Bound<'py, PyBytes>, Bound<'py, PyBytes>, Counts);

impl PyStage {
    fn cluster_remote(
        &mut self,
        job: ClusterJob<'_>,
    ) -> Result<(Vec<u32>, usize, ScoredClusterStats), ScoreError> {
        let n = job.features.len();
        let a = le(job.links.iter().map(|l| l.a.to_le_bytes()));
        let b = le(job.links.iter().map(|l| l.b.to_le_bytes()));
        let w = le(job.links.iter().map(|l| l.weight.to_le_bytes()));
        let params: ClusterParams = (
            job.offsets.to_vec(),
            job.duplicates.to_vec(),
            job.guarded,
            (
                job.rule.veto.clone(),
                job.rule.conflict.clone(),
                job.rule.threshold,
            ),
            (job.table.prior, job.table.terms.clone()),
        );
        let (records, roots, stats) = Python::attach(|py| -> PyResult<_> {
            let r = self.stage.bind(py).call_method1(
                "cluster",
                (
                    PyBytes::new(py, &a),
                    PyBytes::new(py, &b),
                    PyBytes::new(py, &w),
                    params,
                ),
            )?;
            let (x, y, s): (PyBackedBytes, PyBackedBytes, Counts) = r.extract()?;
            Ok((x.to_vec(), y.to_vec(), s))
        })
        .map_err(Self::fail)?;
        let (records, roots) = (
            u32s(&records).map_err(Self::fail)?,
            u32s(&roots).map_err(Self::fail)?,
        );
        if records.len() != roots.len() {
            return Err(Self::fail("records and cluster roots differ in length"));
        }
        let (labels, k) = labels_from_roots(n, &records, &roots)
            .ok_or_else(|| Self::fail("cluster roots out of range"))?;
        let (links, merges, redundant, vetoed_same_holder, vetoed_conflict) = stats;
        Ok((
            labels,
            k,
            ScoredClusterStats {
                links,
                merges,
                redundant,
                vetoed_same_holder,
                vetoed_conflict,
            },
        ))
    }
}

/// Opens holders' token files (`(party, path)`, in holder order) and checks
/// their headers against each other, the schema digest and `project`, as `renketsu link`
/// does; returns the run's options (project, token mode from the files) and the readers.
#[allow(
    clippy::too_many_arguments,
    reason = "the Python API's keyword arguments"
)]
pub(crate) fn open_token_inputs(
    inputs: &[(String, String)],
    schema_digest: &str,
    schema_path: String,
    project: Option<&str>,
    ctx: renketsu_linkage::NormalizeContext,
    threshold: Option<f64>,
    duplicates: Vec<String>,
) -> Result<(LinkOptions, Vec<TokenReader>), String> {
    let mut readers = Vec::with_capacity(inputs.len());
    for (party, path) in inputs {
        let r = open(path)?;
        if &r.header().party != party {
            return Err(format!(
                "{path} is the token file of party {:?}, not {party:?}",
                r.header().party
            ));
        }
        readers.push(r);
    }
    let headers: Vec<(&str, &renketsu_linkage::token_file::Header)> = inputs
        .iter()
        .zip(&readers)
        .map(|((_, p), r)| (p.as_str(), r.header()))
        .collect();
    renketsu_linkage::tokenlink::check_headers(schema_digest, &headers, project)
        .map_err(|e| format!("schema {schema_path}: {e}"))?;
    let first = readers.first().ok_or("no token files")?.header();
    let mut options = LinkOptions::new(&first.project, ctx.today);
    options.token_mode = first.mode_name();
    options.threshold = threshold;
    options.duplicates = duplicates;
    options.schema_path = schema_path;
    Ok((options, readers))
}

/// The comparison features of a scored schema's token files, loaded once per worker:
/// compares candidate pairs (global record indices, holders numbered in `paths` order) as
/// the engine does.
#[pyclass(frozen, module = "renketsu._native")]
pub(crate) struct Comparer {
    features: Features,
}

#[pymethods]
impl Comparer {
    /// Reads `paths` (token files, version 2, in holder order) for `schema`.
    #[new]
    fn new(py: Python<'_>, schema: &Schema, paths: Vec<String>) -> PyResult<Self> {
        let schema = &schema.inner;
        if schema.scoring.is_none() {
            return Err(PyValueError::new_err(
                "the schema has no [scoring] section: nothing to compare",
            ));
        }
        let features = py
            .detach(|| -> Result<Features, String> {
                let readers = paths
                    .iter()
                    .map(|p| open(p).map(|r| (r, p.clone())))
                    .collect::<Result<Vec<_>, String>>()?;
                token_features(schema, readers).map_err(|e| e.to_string())
            })
            .map_err(err)?;
        Ok(Self { features })
    }

    /// Records loaded (all holders).
    fn __len__(&self) -> usize {
        self.features.len()
    }

    /// Compares the pairs `(a[i], b[i])` (little-endian `u32` bytes): returns the pattern
    /// codes (`u32` bytes) and term-frequency bits (`f32` bytes), one per pair.
    fn compare<'py>(
        &self,
        py: Python<'py>,
        a: PyBackedBytes,
        b: PyBackedBytes,
    ) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
        let n = self.features.len() as u32;
        let (codes, bits) = py
            .detach(|| -> Result<(Vec<u8>, Vec<u8>), String> {
                let (a, b) = (u32s(&a)?, u32s(&b)?);
                if a.len() != b.len() {
                    return Err(format!("{} and {} pair ends", a.len(), b.len()));
                }
                if let Some(x) = a.iter().chain(&b).find(|&&x| x >= n) {
                    return Err(format!("record {x} out of range ({n} records)"));
                }
                let pairs: Vec<(u32, u32)> = a.into_iter().zip(b).collect();
                let c = self.features.compare_all(&pairs);
                Ok((
                    le(c.iter().map(|c| c.code.to_le_bytes())),
                    le(c.iter().map(|c| c.tf_bits.to_le_bytes())),
                ))
            })
            .map_err(err)?;
        Ok((PyBytes::new(py, &codes), PyBytes::new(py, &bits)))
    }

    /// Partial [`PairGroup`]s of a batch of compared pairs (`a`, `b`, `code`: `u32` LE;
    /// `bits`: `f32` LE): holders `ha`, `hb` and codes and bits (`u32` LE each, the bits'
    /// pattern), counts (`u64` LE). Spark adds the batches' counts up by `GROUP BY`.
    #[allow(clippy::type_complexity, reason = "five columns")]
    fn groups<'py>(
        &self,
        py: Python<'py>,
        a: PyBackedBytes,
        b: PyBackedBytes,
        code: PyBackedBytes,
        bits: PyBackedBytes,
    ) -> PyResult<[Bound<'py, PyBytes>; 5]> {
        let features = &self.features;
        let cols = py
            .detach(|| -> Result<[Vec<u8>; 5], String> {
                let (pairs, codes, bits) = compared_columns(features.len(), &a, &b, &code, &bits)?;
                let compared: Vec<Compared> = codes
                    .iter()
                    .zip(&bits)
                    .map(|(&code, &tf_bits)| Compared { code, tf_bits })
                    .collect();
                let g = aggregate::group_compared(|x| features.holder(x), &pairs, &compared);
                Ok([
                    le(g.iter().map(|g| u32::from(g.holders.0).to_le_bytes())),
                    le(g.iter().map(|g| u32::from(g.holders.1).to_le_bytes())),
                    le(g.iter().map(|g| g.code.to_le_bytes())),
                    le(g.iter().map(|g| g.tf_bits.to_bits().to_le_bytes())),
                    g.iter().flat_map(|g| g.count.to_le_bytes()).collect(),
                ])
            })
            .map_err(err)?;
        Ok(cols.map(|c| PyBytes::new(py, &c)))
    }

    /// The links of a batch of compared pairs (columns as [`Self::groups`]) under
    /// `params` (`((prior, terms), threshold bits, veto comparisons)`): their ends (`u32`
    /// LE), match weights (`f32` LE) and the number of pairs above the threshold a veto
    /// refused ([`aggregate::select_links`]).
    #[allow(clippy::type_complexity, reason = "the links' columns and a count")]
    fn select_links<'py>(
        &self,
        py: Python<'py>,
        a: PyBackedBytes,
        b: PyBackedBytes,
        code: PyBackedBytes,
        bits: PyBackedBytes,
        params: SelectParams,
    ) -> PyResult<(
        Bound<'py, PyBytes>,
        Bound<'py, PyBytes>,
        Bound<'py, PyBytes>,
        u64,
    )> {
        let features = &self.features;
        let ((prior, terms), threshold, veto) = params;
        let (x, y, w, vetoed) = py
            .detach(|| -> Result<_, String> {
                let (pairs, codes, bits) = compared_columns(features.len(), &a, &b, &code, &bits)?;
                let table = WeightTerms::new(features.dims().clone(), prior, terms)?;
                let weights = aggregate::weights_of(&table, &codes, &bits);
                let (links, vetoed) = aggregate::select_links(
                    features.dims(),
                    &pairs,
                    &codes,
                    &weights,
                    threshold,
                    &veto,
                );
                Ok((
                    le(links.iter().map(|l| l.a.to_le_bytes())),
                    le(links.iter().map(|l| l.b.to_le_bytes())),
                    le(links.iter().map(|l| l.weight.to_le_bytes())),
                    vetoed,
                ))
            })
            .map_err(err)?;
        Ok((
            PyBytes::new(py, &x),
            PyBytes::new(py, &y),
            PyBytes::new(py, &w),
            vetoed,
        ))
    }

    /// The worker's half of the totals (SPEC.md §9.4) of one run: `params` as
    /// `renketsu.spark` passes them, `labels` (`u32` LE per record) and `cluster_holders`
    /// (`u64` LE per cluster). Load once per worker and call [`Totals::of`] per batch.
    fn totals(
        &self,
        py: Python<'_>,
        params: TotalsParams,
        labels: PyBackedBytes,
        cluster_holders: PyBackedBytes,
    ) -> PyResult<Totals> {
        let ((prior, terms), offsets, duplicates, both_free, veto) = params;
        let n = self.features.len();
        let dims = self.features.dims().clone();
        py.detach(|| -> Result<Totals, String> {
            let labels = u32s(&labels)?;
            let cluster_holders = u64s(&cluster_holders)?;
            if labels.len() != n || labels.iter().any(|&l| l as usize >= cluster_holders.len()) {
                return Err(format!("labels do not fit {n} records"));
            }
            if both_free.len() != duplicates.len() * duplicates.len() {
                return Err("both_free is not holders × holders".to_owned());
            }
            Ok(Totals {
                table: WeightTerms::new(dims.clone(), prior, terms)?,
                ctx: TotalsContext {
                    offsets,
                    labels,
                    cluster_holders,
                    duplicates,
                    both_free,
                    veto,
                },
                dims,
                records: n,
            })
        })
        .map_err(err)
    }

    /// Clusters one connected component of links (`a`, `b`: `u32` LE global records;
    /// `w`: `f32` LE match weights) as the engine does (guarded clustering, SPEC.md §9.5),
    /// with `params` as `renketsu.spark` passes them. Returns the component's records
    /// (`u32` LE, ascending), the smallest record of each one's cluster (`u32` LE) and the
    /// counts `(links, merges, redundant, vetoed_same_holder, vetoed_conflict)`.
    fn cluster_component<'py>(
        &self,
        py: Python<'py>,
        a: PyBackedBytes,
        b: PyBackedBytes,
        w: PyBackedBytes,
        params: ClusterParams,
    ) -> PyResult<ComponentOut<'py>> {
        let (offsets, duplicates, guarded, (veto, conflict, threshold), (prior, terms)) = params;
        let features = &self.features;
        let (records, roots, s) = py
            .detach(|| -> Result<_, String> {
                let (a, b, w) = (u32s(&a)?, u32s(&b)?, f32s(&w)?);
                if a.len() != b.len() || a.len() != w.len() {
                    return Err("links of unequal lengths".to_owned());
                }
                let n = features.len() as u32;
                if let Some(x) = a.iter().chain(&b).find(|&&x| x >= n) {
                    return Err(format!("record {x} out of range ({n} records)"));
                }
                let table = WeightTerms::new(features.dims().clone(), prior, terms)?;
                let rule = ConflictRule {
                    veto,
                    conflict,
                    threshold,
                };
                let links: Vec<ScoredLink> = a
                    .iter()
                    .zip(&b)
                    .zip(&w)
                    .map(|((&a, &b), &weight)| ScoredLink { a, b, weight })
                    .collect();
                let (records, roots, stats) = cluster_component(
                    &links,
                    &offsets,
                    &duplicates,
                    guarded,
                    features,
                    &table,
                    &rule,
                );
                Ok((
                    le(records.iter().map(|r| r.to_le_bytes())),
                    le(roots.iter().map(|r| r.to_le_bytes())),
                    (
                        stats.links,
                        stats.merges,
                        stats.redundant,
                        stats.vetoed_same_holder,
                        stats.vetoed_conflict,
                    ),
                ))
            })
            .map_err(err)?;
        Ok((PyBytes::new(py, &records), PyBytes::new(py, &roots), s))
    }

    fn __repr__(&self) -> String {
        format!("Comparer(records={})", self.features.len())
    }
}

/// Sorted pair keys (`a·2^32 + b`, `u64` LE), loaded once per worker: which pairs of a
/// batch are among them (`renketsu.spark`'s answer to [`PairStage::contains`]: the u
/// sample's pairs are sent to the executors, not the candidates to the driver).
#[pyclass(frozen, module = "renketsu._native")]
pub(crate) struct PairIndex {
    keys: Vec<u64>,
}

#[pymethods]
impl PairIndex {
    /// `keys`: `u64` LE, in any order (sorted here).
    #[new]
    fn new(py: Python<'_>, keys: PyBackedBytes) -> PyResult<Self> {
        py.detach(|| {
            let mut keys = u64s(&keys)?;
            keys.sort_unstable();
            keys.dedup();
            Ok(Self { keys })
        })
        .map_err(|e: String| err(e))
    }

    /// The keys (`u64` LE) of the pairs `(a[i], b[i])` (`u32` LE) that are in the index.
    fn matches<'py>(
        &self,
        py: Python<'py>,
        a: PyBackedBytes,
        b: PyBackedBytes,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let found = py
            .detach(|| -> Result<Vec<u8>, String> {
                let (a, b) = (u32s(&a)?, u32s(&b)?);
                if a.len() != b.len() {
                    return Err(format!("{} and {} pair ends", a.len(), b.len()));
                }
                Ok(a.iter()
                    .zip(&b)
                    .map(|(&a, &b)| u64::from(a) << 32 | u64::from(b))
                    .filter(|k| self.keys.binary_search(k).is_ok())
                    .flat_map(u64::to_le_bytes)
                    .collect())
            })
            .map_err(err)?;
        Ok(PyBytes::new(py, &found))
    }

    fn __len__(&self) -> usize {
        self.keys.len()
    }
}

/// One run's totals on a worker ([`Comparer::totals`]).
#[pyclass(frozen, module = "renketsu._native")]
pub(crate) struct Totals {
    table: WeightTerms,
    ctx: TotalsContext,
    dims: renketsu_linkage::score::Dims,
    records: usize,
}

#[pymethods]
impl Totals {
    /// The partial totals of a batch of compared pairs (columns as [`Comparer::groups`]):
    /// rows `(i, j, missed or None, (vetoed free, vetoed taken) or None)` per holder pair.
    fn of(
        &self,
        py: Python<'_>,
        a: PyBackedBytes,
        b: PyBackedBytes,
        code: PyBackedBytes,
        bits: PyBackedBytes,
    ) -> PyResult<Vec<TotalsRow>> {
        py.detach(|| -> Result<_, String> {
            let (pairs, codes, bits) = compared_columns(self.records, &a, &b, &code, &bits)?;
            let weights = aggregate::weights_of(&self.table, &codes, &bits);
            Ok(totals_rows(&aggregate::candidate_totals(
                &self.ctx, &self.dims, &pairs, &codes, &weights,
            )))
        })
        .map_err(err)
    }

    fn __repr__(&self) -> String {
        format!("Totals(records={})", self.records)
    }
}

/// Links the holders' token files (`inputs`: `(party, path)`, in holder order) as
/// `renketsu link --input party=path …` does, with a scored schema's candidate pairs and
/// comparison vectors made by `stage`. Returns the output files, summary and report like
/// `link_csv`.
#[pyfunction]
#[pyo3(signature = (schema, inputs, stage, schema_digest, schema_path, today=None, threshold=None, duplicates=Vec::new(), project=None))]
#[allow(
    clippy::too_many_arguments,
    reason = "keyword arguments of the Python API"
)]
pub(crate) fn link_tokens<'py>(
    py: Python<'py>,
    schema: &Schema,
    inputs: Vec<(String, String)>,
    stage: Py<PyAny>,
    schema_digest: &str,
    schema_path: String,
    today: Option<u32>,
    threshold: Option<f64>,
    duplicates: Vec<String>,
    project: Option<String>,
) -> PyResult<Bound<'py, PyDict>> {
    let ctx = context(today)?;
    crate::check_threshold(threshold)?;
    let schema = &schema.inner;
    if schema.scoring.is_none() {
        return Err(PyValueError::new_err(
            "renketsu.spark runs scored schemas ([scoring]); use renketsu link for the others",
        ));
    }
    let out = py
        .detach(|| -> Result<crate::LinkOut, String> {
            let (options, readers) = open_token_inputs(
                &inputs,
                schema_digest,
                schema_path,
                project.as_deref(),
                ctx,
                threshold,
                duplicates,
            )?;
            let plan =
                LinkPlan::new(schema, Keys::TokenFiles, options).map_err(|e| e.to_string())?;
            let holders: Vec<HolderInput<'_>> = inputs
                .iter()
                .zip(readers)
                .map(|((party, path), r)| HolderInput::tokens(party, r, path))
                .collect();
            let mut stage = PyStage { stage };
            let mut linked = plan
                .run_with(holders, &mut NoObserver, &mut stage)
                .map_err(|e| e.to_string())?;
            link_out(&mut linked, Vec::new())
        })
        .map_err(err)?;
    crate::out_dict(py, out)
}
