//! The stages of a scored run one at a time (`renketsu.Linker`): read, candidates, fit,
//! predict, cluster — the calls `renketsu link` makes in one go ([`LinkPlan::run`]), here
//! with the state kept between them so that a user can look at the candidate pairs, the
//! fitted m and u, and the scores before clustering, and cluster at several thresholds.

use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict, PyList};
use renketsu_linkage::engine::{HolderInput, Keys, LinkOptions, LinkPlan, NoObserver, Prepared};
use renketsu_linkage::ingest::RejectList;
use renketsu_linkage::score::{
    CandidateSet, DecideOptions, Features, FittedModel, InProcess, decide, find_candidates, fit,
    probability,
};
use renketsu_linkage::{NormalizeContext, ProjectSecret};

use crate::spark::open_token_inputs;
use crate::{
    LinkOut, ProjectKey, RenketsuError, Schema, check_threshold, context, csv_options, encoding,
    err, link_out, read_csv,
};

/// A scored run stepped through: the holders read once, then candidates, the fitted model
/// and clusters on demand (each computed once and kept).
#[pyclass(module = "renketsu._native")]
pub(crate) struct Linker {
    schema: renketsu_linkage::Schema,
    /// Embedded mode: the project secret (CSV inputs); `None` for token files.
    secret: Option<ProjectSecret>,
    options: LinkOptions,
    prepared: Prepared,
    candidates: Option<CandidateSet>,
    fitted: Option<FittedModel>,
    rejects: Vec<(String, RejectList)>,
}

fn scored(schema: &renketsu_linkage::Schema) -> PyResult<()> {
    if schema.scoring.is_none() {
        return Err(PyValueError::new_err(
            "Linker steps through scored schemas ([scoring]); use renketsu.link for the others",
        ));
    }
    Ok(())
}

fn u32_bytes<'py>(py: Python<'py>, v: impl Iterator<Item = u32>) -> Bound<'py, PyBytes> {
    let b: Vec<u8> = v.flat_map(u32::to_le_bytes).collect();
    PyBytes::new(py, &b)
}

impl Linker {
    fn plan(&self) -> PyResult<LinkPlan<'_>> {
        let keys = match &self.secret {
            Some(secret) => Keys::Hmac { secret },
            None => Keys::TokenFiles,
        };
        LinkPlan::new(&self.schema, keys, self.options.clone()).map_err(err)
    }

    fn features(&self) -> Arc<Features> {
        match self.prepared.features() {
            Some(f) => f,
            None => unreachable!("a Linker is made for scored schemas only"),
        }
    }

    fn ensure_candidates(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.candidates.is_some() {
            return Ok(());
        }
        let spec = self.schema.scoring.clone().expect("scored schema");
        let sizes = self.prepared.sizes();
        let keys = self.prepared.blocking_keys();
        let set = py
            .detach(|| find_candidates(&spec, keys, &sizes, &mut InProcess, &mut |_| {}))
            .map_err(err)?;
        self.candidates = Some(set);
        Ok(())
    }

    fn ensure_fitted(&mut self, py: Python<'_>) -> PyResult<()> {
        self.ensure_candidates(py)?;
        if self.fitted.is_some() {
            return Ok(());
        }
        let duplicates = self.plan()?.duplicates(&self.prepared);
        let features = self.features();
        let spec = self.schema.scoring.as_ref().expect("scored schema");
        let candidates = self.candidates.as_ref().expect("made above");
        let fitted = py
            .detach(|| fit(spec, &duplicates, &features, candidates, &mut InProcess))
            .map_err(err)?;
        self.fitted = Some(fitted);
        Ok(())
    }

    fn fitted(&self) -> &FittedModel {
        self.fitted.as_ref().expect("ensure_fitted ran")
    }
}

#[pymethods]
impl Linker {
    /// Reads holders' CSVs (`inputs`: `(party, label, csv bytes)`) with `schema` and `key`:
    /// the read stage of `link_csv`.
    #[staticmethod]
    #[pyo3(signature = (schema, key, inputs, *, today=None, threshold=None, duplicates=Vec::new(), id_column=None, encoding="auto", schema_path=String::new()))]
    #[allow(
        clippy::too_many_arguments,
        reason = "keyword arguments of the Python API"
    )]
    fn from_csv(
        py: Python<'_>,
        schema: &Schema,
        key: &ProjectKey,
        inputs: Vec<(String, String, PyBackedBytes)>,
        today: Option<u32>,
        threshold: Option<f64>,
        duplicates: Vec<String>,
        id_column: Option<String>,
        encoding: &str,
        schema_path: String,
    ) -> PyResult<Self> {
        let ctx = context(today)?;
        let choice = self::encoding(encoding)?;
        check_threshold(threshold)?;
        scored(&schema.inner)?;
        let options = csv_options(
            &key.project,
            ctx,
            threshold,
            duplicates,
            id_column,
            schema_path,
        );
        let secret = key.secret.clone();
        let schema = schema.inner.clone();
        let (prepared, rejects) = py
            .detach(|| -> Result<_, String> {
                let plan = LinkPlan::new(&schema, Keys::Hmac { secret: &secret }, options.clone())
                    .map_err(|e| e.to_string())?;
                read_csv(&plan, &inputs, choice)
            })
            .map_err(RenketsuError::new_err)?;
        Ok(Self {
            schema,
            secret: Some(secret),
            options,
            prepared,
            candidates: None,
            fitted: None,
            rejects,
        })
    }

    /// Reads holders' token files (`inputs`: `(party, path)`, version 2 for a scored schema),
    /// checked as `renketsu link` checks them: the read stage of `link_tokens`.
    #[staticmethod]
    #[pyo3(signature = (schema, inputs, schema_digest, schema_path, *, today=None, threshold=None, duplicates=Vec::new(), project=None))]
    #[allow(
        clippy::too_many_arguments,
        reason = "keyword arguments of the Python API"
    )]
    fn from_token_files(
        py: Python<'_>,
        schema: &Schema,
        inputs: Vec<(String, String)>,
        schema_digest: &str,
        schema_path: String,
        today: Option<u32>,
        threshold: Option<f64>,
        duplicates: Vec<String>,
        project: Option<String>,
    ) -> PyResult<Self> {
        let ctx: NormalizeContext = context(today)?;
        check_threshold(threshold)?;
        scored(&schema.inner)?;
        let schema = schema.inner.clone();
        let (options, prepared) = py
            .detach(|| -> Result<_, String> {
                let (options, readers) = open_token_inputs(
                    &inputs,
                    schema_digest,
                    schema_path,
                    project.as_deref(),
                    ctx,
                    threshold,
                    duplicates,
                )?;
                let plan = LinkPlan::new(&schema, Keys::TokenFiles, options.clone())
                    .map_err(|e| e.to_string())?;
                let holders: Vec<HolderInput<'_>> = inputs
                    .iter()
                    .zip(readers)
                    .map(|((party, path), r)| HolderInput::tokens(party, r, path))
                    .collect();
                let prepared = plan
                    .read(holders, &mut NoObserver)
                    .map_err(|e| e.to_string())?;
                Ok((options, prepared))
            })
            .map_err(RenketsuError::new_err)?;
        Ok(Self {
            schema,
            secret: None,
            options,
            prepared,
            candidates: None,
            fitted: None,
            rejects: Vec::new(),
        })
    }

    /// Per holder, in input order: `(party, record ids)`; record `i` of holder `h` is global
    /// record `offset_h + i`, the offsets being the running sums of the lengths.
    fn records<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for h in self.prepared.holders() {
            let ids: Vec<&str> = h.ids.iter().collect();
            out.append((h.name.as_str(), ids))?;
        }
        Ok(out)
    }

    /// Rejected rows per party (CSV inputs): `party → [(row, id, reason code, detail)]`.
    fn rejects<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (party, list) in &self.rejects {
            let rows: Vec<(u64, &str, &'static str, &str)> = list
                .0
                .iter()
                .map(|(row, id, reason, detail)| {
                    (*row, id.as_str(), reason.code(), detail.as_str())
                })
                .collect();
            d.set_item(party, rows)?;
        }
        Ok(d)
    }

    /// Candidate pairs (SPEC.md §9.2): `(a, b, stats)`, `a` and `b` little-endian u32 global
    /// record indices (`a < b`, sorted, distinct), `stats` the counts of their generation.
    fn candidates<'py>(
        &mut self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>, Bound<'py, PyDict>)> {
        self.ensure_candidates(py)?;
        let c = self.candidates.as_ref().expect("made above");
        let stats = PyDict::new(py);
        stats.set_item("pairs", c.stats.pairs)?;
        stats.set_item("blocking_keys", c.stats.keys)?;
        stats.set_item("skipped_blocks", c.stats.skipped_groups)?;
        Ok((
            u32_bytes(py, c.pairs.iter().map(|p| p.0)),
            u32_bytes(py, c.pairs.iter().map(|p| p.1)),
            stats,
        ))
    }

    /// Fits the model on the candidates (SPEC.md §9.3, the training of `renketsu link`) and
    /// returns it as a dict: `comparisons` (name, levels: label, m, u, match weight in bits),
    /// `prior` (λ), `matches` (estimated among all pairs), `matches_in_candidates`,
    /// `total_pairs`, `iterations`, `converged`, `diagnostics`, `training` (the record
    /// sample, or None).
    fn fit<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.ensure_fitted(py)?;
        let spec = self.schema.scoring.as_ref().expect("scored schema");
        let fitted = self.fitted();
        let model = &fitted.scores.model;
        let comparisons = PyList::empty(py);
        for (c, cs) in spec.comparisons.iter().enumerate() {
            let levels = PyList::empty(py);
            for l in 0..cs.levels() {
                let missing = l + 1 == cs.levels();
                let d = PyDict::new(py);
                d.set_item("label", cs.level_label(l, &self.schema.recipes))?;
                d.set_item("m", (!missing).then(|| model.m[c][l]))?;
                d.set_item("u", (!missing).then(|| model.u[c][l]))?;
                d.set_item("match_weight", model.level_weight(c, l))?;
                levels.append(d)?;
            }
            let d = PyDict::new(py);
            d.set_item("name", &cs.name)?;
            d.set_item("levels", levels)?;
            comparisons.append(d)?;
        }
        let d = PyDict::new(py);
        d.set_item("comparisons", comparisons)?;
        d.set_item("prior", model.prior)?;
        d.set_item("matches", model.matches)?;
        d.set_item("matches_in_candidates", model.matches_in_candidates)?;
        d.set_item("total_pairs", model.total_pairs)?;
        d.set_item("iterations", model.iterations)?;
        d.set_item("converged", model.converged)?;
        d.set_item("diagnostics", model.diagnostics.clone())?;
        d.set_item("random_pairs", fitted.scores.random_pairs)?;
        let training = match fitted.training() {
            Some(t) => {
                let t = serde_json::to_string(t).map_err(err)?;
                Some(py.import("json")?.call_method1("loads", (t,))?)
            }
            None => None,
        };
        d.set_item("training", training)?;
        Ok(d)
    }

    /// Scores of the candidate pairs under the fitted model: `(match_weight, levels)`,
    /// `match_weight` little-endian f32 bits per candidate (term-frequency terms included),
    /// `levels` one bytes object per comparison, one level index (u8) per candidate (the
    /// last level is `missing`, the one before `disagree`).
    fn predict<'py>(
        &mut self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyBytes>, Vec<Bound<'py, PyBytes>>)> {
        self.ensure_fitted(py)?;
        let features = self.features();
        let dims = features.dims();
        let scores = &self.fitted().scores;
        let w: Vec<u8> = scores
            .weights
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        let levels = (0..dims.levels.len())
            .map(|c| {
                let v: Vec<u8> = scores
                    .codes
                    .iter()
                    .map(|&code| u8::try_from(dims.level(code, c)).unwrap_or(u8::MAX))
                    .collect();
                PyBytes::new(py, &v)
            })
            .collect();
        Ok((PyBytes::new(py, &w), levels))
    }

    /// The threshold a run would use (`probability` in (0, 1) given, else the schema's, else
    /// the maximum estimated F1; SPEC.md §9.4) and the model's pairwise estimates there,
    /// before the veto and clustering: dict `match_weight`, `match_probability`, `source`,
    /// `links`, `expected_true`, `precision`, `recall`, `expected_matches`.
    #[pyo3(signature = (probability=None))]
    fn threshold<'py>(
        &mut self,
        py: Python<'py>,
        probability: Option<f64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        check_threshold(probability)?;
        self.ensure_fitted(py)?;
        let spec_threshold = self.schema.scoring.as_ref().and_then(|s| s.threshold);
        let given = probability.or(self.options.threshold);
        let source = match (probability, self.options.threshold, spec_threshold) {
            (Some(_), _, _) => "argument",
            (None, Some(_), _) => "linker",
            (None, None, Some(_)) => "schema",
            (None, None, None) => "maximum estimated F1",
        };
        let scores = &self.fitted().scores;
        let w = scores.threshold(given.or(spec_threshold));
        // The curve's point at the threshold: every pair at or above it.
        let curve = scores.curve();
        let (links, expected_true) = curve
            .iter()
            .take_while(|p| p.weight >= w)
            .last()
            .map_or((0, 0.0), |p| (p.links, p.expected_true));
        let d = PyDict::new(py);
        d.set_item("match_weight", w)?;
        d.set_item("match_probability", self::probability(w))?;
        d.set_item("source", source)?;
        d.set_item("links", links)?;
        d.set_item("expected_true", expected_true)?;
        d.set_item(
            "precision",
            if links == 0 {
                1.0
            } else {
                expected_true / links as f64
            },
        )?;
        d.set_item(
            "recall",
            if scores.expected_matches > 0.0 {
                (expected_true / scores.expected_matches).min(1.0)
            } else {
                1.0
            },
        )?;
        d.set_item("expected_matches", scores.expected_matches)?;
        Ok(d)
    }

    /// Clusters the links at the threshold (`threshold` a match probability in (0, 1), else
    /// the Linker's, the schema's, or the maximum estimated F1), with the veto and guarded
    /// clustering (SPEC.md §9.5), and writes the outputs as `link_csv` returns them. May be
    /// called again at another threshold; the candidates and the model are kept.
    #[pyo3(signature = (threshold=None))]
    fn cluster<'py>(
        &mut self,
        py: Python<'py>,
        threshold: Option<f64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        check_threshold(threshold)?;
        self.ensure_fitted(py)?;
        let plan = self.plan()?;
        let duplicates = plan.duplicates(&self.prepared);
        let features = self.features();
        let spec = self.schema.scoring.as_ref().expect("scored schema");
        let candidates = self.candidates.clone().expect("made above");
        let fitted = self.fitted.clone().expect("made above");
        let prepared = &self.prepared;
        let rejects = self.rejects.clone();
        let out = py
            .detach(|| -> Result<LinkOut, String> {
                let (labels, k, run) = decide(
                    spec,
                    DecideOptions {
                        threshold: threshold.or(plan.options().threshold),
                        duplicates: &duplicates,
                    },
                    features,
                    candidates,
                    fitted,
                    &mut InProcess,
                    &mut |_| {},
                )
                .map_err(|e| e.to_string())?;
                let mut linked = plan
                    .finish_scored(prepared, labels, k, run)
                    .map_err(|e| e.to_string())?;
                link_out(&mut linked, rejects)
            })
            .map_err(RenketsuError::new_err)?;
        crate::out_dict(py, out)
    }

    fn __repr__(&self) -> String {
        let sizes = self.prepared.sizes();
        format!(
            "Linker(schema={:?}, project={:?}, holders={}, records={}, candidates={}, fitted={})",
            self.schema.name,
            self.options.project,
            sizes.len(),
            sizes.iter().sum::<usize>(),
            self.candidates
                .as_ref()
                .map_or_else(|| "not yet".to_owned(), |c| c.pairs.len().to_string()),
            self.fitted.is_some(),
        )
    }
}
