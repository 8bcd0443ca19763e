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
use renketsu_linkage::score::{
    CandidateStats, ClusterJob, Compared, ConflictRule, Features, PairStage, ScoreError,
    WeightTerms, cluster_component, labels_from_roots,
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

fn le(v: impl Iterator<Item = [u8; 4]>) -> Vec<u8> {
    v.flatten().collect()
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
        let (a, b, stats) = Python::attach(|py| -> PyResult<_> {
            let r = self.stage.bind(py).call_method1(
                "candidates",
                (
                    PyBytes::new(py, &kb),
                    PyBytes::new(py, &gb),
                    offsets.to_vec(),
                    max_block,
                    max_block_pairs,
                ),
            )?;
            let (a, b, stats): (PyBackedBytes, PyBackedBytes, Bound<'_, PyDict>) = r.extract()?;
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
            let stats = CandidateStats {
                keys: get("keys")? as usize,
                largest_group: get("largest_group")? as usize,
                skipped_groups: get("skipped_groups")? as usize,
                pairs: get("pairs")?,
                dropped,
            };
            Ok((a.to_vec(), b.to_vec(), stats))
        })
        .map_err(Self::fail)?;
        let (a, b) = (u32s(&a).map_err(Self::fail)?, u32s(&b).map_err(Self::fail)?);
        if a.len() != b.len() || a.len() as u64 != stats.pairs {
            return Err(Self::fail(format!(
                "{} and {} pair ends for {} pairs",
                a.len(),
                b.len(),
                stats.pairs
            )));
        }
        let pairs: Vec<(u32, u32)> = a.into_iter().zip(b).collect();
        // The engine's contract: `a < b`, sorted ascending, distinct.
        if pairs.iter().any(|p| p.0 >= p.1) || pairs.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Self::fail(
                "candidate pairs are not sorted, distinct (a < b)",
            ));
        }
        Ok((pairs, stats))
    }

    fn compare(
        &mut self,
        _features: &Features,
        pairs: &[(u32, u32)],
    ) -> Result<Vec<Compared>, ScoreError> {
        let a = le(pairs.iter().map(|p| p.0.to_le_bytes()));
        let b = le(pairs.iter().map(|p| p.1.to_le_bytes()));
        let (codes, bits) = Python::attach(|py| -> PyResult<_> {
            let r = self
                .stage
                .bind(py)
                .call_method1("compare", (PyBytes::new(py, &a), PyBytes::new(py, &b)))?;
            let (c, t): (PyBackedBytes, PyBackedBytes) = r.extract()?;
            Ok((c.to_vec(), t.to_vec()))
        })
        .map_err(Self::fail)?;
        let (codes, bits) = (
            u32s(&codes).map_err(Self::fail)?,
            f32s(&bits).map_err(Self::fail)?,
        );
        if codes.len() != pairs.len() || bits.len() != pairs.len() {
            return Err(Self::fail(format!(
                "{} codes and {} term-frequency values for {} pairs",
                codes.len(),
                bits.len(),
                pairs.len()
            )));
        }
        Ok(codes
            .into_iter()
            .zip(bits)
            .map(|(code, tf_bits)| Compared { code, tf_bits })
            .collect())
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
