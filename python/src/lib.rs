//! # renketsu-python: the `renketsu._native` extension module
//!
//! The Rust half of the `renketsu` Python package (`python/pysrc/renketsu`): thin wrappers
//! over the core engine ([`renketsu_linkage::engine::LinkPlan`], the call `renketsu link`
//! makes), the tokenizer, the holder's CLK encoder and the quality measures. The Python half
//! turns PyArrow tables, pandas and polars frames into the CSV bytes these functions take, and
//! their outputs back into tables. Built with maturin (`python/pyproject.toml`); left out of
//! the workspace's `default-members`.
//!
//! Secrets: a [`ProjectKey`] holds the project master secret (unsealed from the local key
//! store, as `renketsu link --project` does); its `repr` names the project only. Error
//! messages are the engine's, which name inputs, columns, rows and rules, never a value.

use std::collections::BTreeMap;

mod custodian;
mod linker;
mod spark;

use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict};
use renketsu_keys::LocalKeyStore;
use renketsu_linkage::engine::{
    HolderInput, Keys, LinkOptions, LinkPlan, Linked, MemoryOutputs, NoObserver, Prepared,
    random_pseudonyms,
};
use renketsu_linkage::eval::{Evaluation, by_holder_pair, read_pairs};
use renketsu_linkage::ingest::{CsvSource, EncodingChoice, RejectList};
use renketsu_linkage::score::InProcess;
use renketsu_linkage::{NormalizeContext, ProjectSecret, RecordTokens, Tokenizer};

pyo3::create_exception!(
    _native,
    RenketsuError,
    PyException,
    "A schema, key store, input or run error of the renketsu engine."
);

fn err(e: impl std::fmt::Display) -> PyErr {
    RenketsuError::new_err(e.to_string())
}

/// A parsed, validated linkage schema (SPEC.md §2).
#[pyclass(frozen, module = "renketsu._native")]
struct Schema {
    inner: renketsu_linkage::Schema,
}

#[pymethods]
impl Schema {
    /// Parses a schema from TOML text.
    #[staticmethod]
    fn from_toml_text(text: &str) -> PyResult<Self> {
        renketsu_linkage::Schema::from_toml(text)
            .map(|inner| Self { inner })
            .map_err(err)
    }

    /// Schema name.
    #[getter]
    fn name(&self) -> String {
        self.inner.name.clone()
    }

    /// Schema version.
    #[getter]
    fn version(&self) -> u32 {
        self.inner.version
    }

    /// The id column.
    #[getter]
    fn id_column(&self) -> String {
        self.inner.id_column.clone()
    }

    /// Content columns (the researcher's).
    #[getter]
    fn content(&self) -> Vec<String> {
        self.inner.content.clone()
    }

    /// Recipe names, in schema order.
    #[getter]
    fn recipes(&self) -> Vec<String> {
        self.inner.recipes.iter().map(|r| r.name.clone()).collect()
    }

    /// `exact`, `clk` or `scored`.
    #[getter]
    fn matcher(&self) -> &'static str {
        match (&self.inner.scoring, &self.inner.clk) {
            (Some(_), _) => "scored",
            (None, Some(_)) => "clk",
            (None, None) => "exact",
        }
    }

    /// The plan `renketsu link --explain` prints.
    fn explain(&self, project: &str) -> PyResult<String> {
        let plan = LinkPlan::new(
            &self.inner,
            Keys::TokenFiles,
            LinkOptions::new(project, 20000101),
        )
        .map_err(err)?;
        Ok(plan.explain())
    }

    fn __repr__(&self) -> String {
        format!(
            "Schema(name={:?}, version={}, matcher={:?}, recipes={})",
            self.inner.name,
            self.inner.version,
            self.matcher(),
            self.inner.recipes.len()
        )
    }
}

/// A project's master secret (embedded mode), with the project it keys.
#[pyclass(frozen, module = "renketsu._native")]
struct ProjectKey {
    project: String,
    secret: ProjectSecret,
}

#[pymethods]
impl ProjectKey {
    /// Unseals `project`'s secret from the local key store `dir` (`renketsu keys init`);
    /// the key-encryption key comes from `kek` (the `RENKETSU_KEK` value) if given, else from
    /// `<dir>/kek`.
    #[staticmethod]
    #[pyo3(signature = (project, dir, kek=None))]
    fn from_key_store(project: &str, dir: std::path::PathBuf, kek: Option<&str>) -> PyResult<Self> {
        let store = LocalKeyStore::open(dir, kek).map_err(err)?;
        let secret = store.project_secret(project).map_err(err)?;
        Ok(Self {
            project: project.to_owned(),
            secret: ProjectSecret::from_bytes(*secret),
        })
    }

    /// The project name.
    #[getter]
    fn project(&self) -> String {
        self.project.clone()
    }

    fn __repr__(&self) -> String {
        format!("ProjectKey(project={:?}, secret=<redacted>)", self.project)
    }
}

fn context(today: Option<u32>) -> PyResult<NormalizeContext> {
    match today {
        Some(t) if (10_000_101..=99_991_231).contains(&t) => Ok(NormalizeContext { today: t }),
        Some(t) => Err(PyValueError::new_err(format!(
            "today {t} is not a YYYYMMDD date"
        ))),
        None => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(err)?;
            Ok(NormalizeContext::from_unix_seconds(
                i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
            ))
        }
    }
}

fn encoding(name: &str) -> PyResult<EncodingChoice> {
    match name {
        "auto" => Ok(EncodingChoice::Auto),
        "utf-8" | "utf8" => Ok(EncodingChoice::Utf8),
        "cp932" | "shift_jis" | "sjis" => Ok(EncodingChoice::Cp932),
        other => Err(PyValueError::new_err(format!(
            "encoding {other:?}: use auto, utf-8 or cp932"
        ))),
    }
}

/// What a link run returns to Python.
struct LinkOut {
    files: Vec<(String, Vec<u8>)>,
    summary: String,
    report: Option<String>,
    rejects: Vec<(String, RejectList)>,
}

/// What a finished run returns to Python: pseudonyms drawn at random, every output file in
/// memory, `summary.json` and, for a scored run, `report.html`; `rejects` per holder as given.
fn link_out(
    linked: &mut Linked<'_>,
    rejects: Vec<(String, RejectList)>,
) -> Result<LinkOut, String> {
    let pids = random_pseudonyms(linked.clusters(), &mut rand::rng());
    let mut sink = MemoryOutputs::default();
    let summary = linked.write(&pids, &mut sink).map_err(|e| e.to_string())?;
    let report = summary
        .scoring
        .is_some()
        .then(|| renketsu_linkage::report::render(&summary));
    let summary = serde_json::to_string_pretty(&summary.to_json()).map_err(|e| e.to_string())?;
    let files = sink
        .names()
        .into_iter()
        .filter_map(|n| sink.get(&n).map(|b| (n, b)))
        .collect();
    Ok(LinkOut {
        files,
        summary,
        report,
        rejects,
    })
}

/// Links holders' CSVs (`inputs`: `(party, label, csv bytes)`, two or more; the label names
/// the input in messages and the summary, e.g. its path) with `schema` and `key`,
/// as `renketsu link` does. Returns a dict: `files` (name → bytes: `pairs.csv`,
/// `clusters.csv`, `joined.csv`, and `pair_scores.csv` for a scored schema), `summary`
/// (`summary.json` text), `report` (`report.html` text or None), `rejects` (party → list of
/// `(row, id, reason, detail)`).
#[pyfunction]
#[pyo3(signature = (schema, key, inputs, *, today=None, threshold=None, duplicates=Vec::new(), id_column=None, encoding="auto", schema_path=String::new()))]
#[allow(
    clippy::too_many_arguments,
    reason = "keyword arguments of the Python API"
)]
fn link_csv<'py>(
    py: Python<'py>,
    schema: &Schema,
    key: &ProjectKey,
    inputs: Vec<(String, String, PyBackedBytes)>,
    today: Option<u32>,
    threshold: Option<f64>,
    duplicates: Vec<String>,
    id_column: Option<String>,
    encoding: &str,
    schema_path: String,
) -> PyResult<Bound<'py, PyDict>> {
    let ctx = context(today)?;
    let choice = self::encoding(encoding)?;
    check_threshold(threshold)?;
    let schema = &schema.inner;
    let options = csv_options(
        &key.project,
        ctx,
        threshold,
        duplicates,
        id_column,
        schema_path,
    );
    let out = py
        .detach(|| -> Result<LinkOut, String> {
            let plan = LinkPlan::new(
                schema,
                Keys::Hmac {
                    secret: &key.secret,
                },
                options,
            )
            .map_err(|e| e.to_string())?;
            let (prepared, rejects) = read_csv(&plan, &inputs, choice)?;
            let mut linked = plan
                .link_prepared(prepared, &mut NoObserver, &mut InProcess)
                .map_err(|e| e.to_string())?;
            link_out(&mut linked, rejects)
        })
        .map_err(RenketsuError::new_err)?;
    out_dict(py, out)
}

/// A token-file reader over a buffered file.
pub(crate) type TokenReader =
    renketsu_linkage::token_file::Reader<Box<dyn std::io::BufRead + Send>>;

/// Opens a token file and reads its header.
pub(crate) fn open(path: &str) -> Result<TokenReader, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("cannot open {path}: {e}"))?;
    let input: Box<dyn std::io::BufRead + Send> =
        Box::new(std::io::BufReader::with_capacity(1 << 16, f));
    renketsu_linkage::token_file::Reader::new(input, path).map_err(|e| e.to_string())
}

/// `threshold`, if given, must be a match probability in (0, 1).
fn check_threshold(threshold: Option<f64>) -> PyResult<()> {
    match threshold {
        Some(p) if !(p > 0.0 && p < 1.0) => Err(PyValueError::new_err(format!(
            "threshold {p} is not a match probability in (0, 1)"
        ))),
        _ => Ok(()),
    }
}

/// The options of a run on CSV inputs (embedded mode).
fn csv_options(
    project: &str,
    ctx: NormalizeContext,
    threshold: Option<f64>,
    duplicates: Vec<String>,
    id_column: Option<String>,
    schema_path: String,
) -> LinkOptions {
    let mut options = LinkOptions::new(project, ctx.today);
    options.id_column = id_column;
    options.threshold = threshold;
    options.duplicates = duplicates;
    options.schema_path = schema_path;
    options
}

/// The read stage of `plan` on holders' CSVs (`(party, label, bytes)`): the prepared run
/// and each party's rejected rows.
fn read_csv(
    plan: &LinkPlan<'_>,
    inputs: &[(String, String, PyBackedBytes)],
    choice: EncodingChoice,
) -> Result<(Prepared, Vec<(String, RejectList)>), String> {
    let mut rejects: Vec<RejectList> = inputs.iter().map(|_| RejectList::default()).collect();
    let mut holders = Vec::with_capacity(inputs.len());
    for ((party, label, bytes), sink) in inputs.iter().zip(rejects.iter_mut()) {
        let data: &[u8] = bytes;
        let csv = CsvSource::new(Box::new(data), label, data.len() as u64, choice)
            .map_err(|e| e.to_string())?;
        holders.push(HolderInput::csv(party, csv, sink));
    }
    let prepared = plan
        .read(holders, &mut NoObserver)
        .map_err(|e| e.to_string())?;
    let rejects = inputs
        .iter()
        .map(|(p, _, _)| p.clone())
        .zip(rejects)
        .collect();
    Ok((prepared, rejects))
}

/// A run's outputs as the dict `link_csv` returns.
fn out_dict(py: Python<'_>, out: LinkOut) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    let files = PyDict::new(py);
    for (name, bytes) in &out.files {
        files.set_item(name, PyBytes::new(py, bytes))?;
    }
    d.set_item("files", files)?;
    d.set_item("summary", out.summary)?;
    d.set_item("report", out.report)?;
    let rejects = PyDict::new(py);
    for (party, list) in out.rejects {
        let rows: Vec<(u64, String, &'static str, String)> = list
            .0
            .into_iter()
            .map(|(row, id, reason, detail)| (row, id, reason.code(), detail))
            .collect();
        rejects.set_item(party, rows)?;
    }
    d.set_item("rejects", rejects)?;
    Ok(d)
}

/// Runs `f` over every row of a table given as column names and columns of optional
/// strings (`None`: missing), with the schema's tokenizer bound to the header.
fn for_each_row(
    tokenizer: &Tokenizer,
    header: &[String],
    columns: &[Vec<Option<String>>],
    mut f: impl FnMut(usize, &RecordTokens),
) -> PyResult<()> {
    if header.len() != columns.len() {
        return Err(PyValueError::new_err("one column per header name"));
    }
    let rows = columns.first().map_or(0, Vec::len);
    if columns.iter().any(|c| c.len() != rows) {
        return Err(PyValueError::new_err("columns of unequal length"));
    }
    let binding = tokenizer.bind(header);
    if !binding.any_recipe() {
        return Err(err(
            "the table's columns make none of the schema's recipes (check the column names)",
        ));
    }
    let mut rt = RecordTokens::default();
    let mut raw: Vec<&str> = Vec::with_capacity(binding.columns.len());
    #[allow(clippy::needless_range_loop, reason = "row-major over columns")]
    for row in 0..rows {
        raw.clear();
        raw.extend(
            binding
                .columns
                .iter()
                .map(|&c| columns[c][row].as_deref().unwrap_or("")),
        );
        tokenizer.tokenize(&binding, &raw, &mut rt);
        f(row, &rt);
    }
    Ok(())
}

/// `(rows, recipes, tokens)` of [`tokenize_columns`].
type TokenColumns<'py> = (Vec<u64>, Vec<String>, Vec<Bound<'py, PyBytes>>);

/// Exact tokens of a table (SPEC.md §4.2): `(rows, recipes, tokens)`, one entry per token made:
/// row index (0-based), recipe name, 32-byte HMAC-SHA256 token.
#[pyfunction]
#[pyo3(signature = (schema, key, header, columns, *, today=None))]
fn tokenize_columns<'py>(
    py: Python<'py>,
    schema: &Schema,
    key: &ProjectKey,
    header: Vec<String>,
    columns: Vec<Vec<Option<String>>>,
    today: Option<u32>,
) -> PyResult<TokenColumns<'py>> {
    let ctx = context(today)?;
    let tokenizer = Tokenizer::new(&schema.inner, &key.secret, &key.project, ctx);
    let names: Vec<&str> = schema
        .inner
        .recipes
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    let (mut rows, mut recipes, mut tokens) = (Vec::new(), Vec::new(), Vec::new());
    for_each_row(&tokenizer, &header, &columns, |row, rt| {
        for (r, token) in &rt.tokens {
            rows.push(row as u64);
            recipes.push(names[*r].to_owned());
            tokens.push(PyBytes::new(py, token));
        }
    })?;
    Ok((rows, recipes, tokens))
}

/// CLKs of a table (SPEC.md §7): one filter per row (little-endian 64-bit words, as token
/// files store them; the schema's `[clk]` decides the encoding, clkhash-compatible or native,
/// and the hardening). Errors without `[clk]`.
#[pyfunction]
#[pyo3(signature = (schema, key, header, columns, *, today=None))]
fn encode_clk_columns<'py>(
    py: Python<'py>,
    schema: &Schema,
    key: &ProjectKey,
    header: Vec<String>,
    columns: Vec<Vec<Option<String>>>,
    today: Option<u32>,
) -> PyResult<(usize, Vec<Bound<'py, PyBytes>>)> {
    let ctx = context(today)?;
    let tokenizer = Tokenizer::new(&schema.inner, &key.secret, &key.project, ctx);
    let mut enc = renketsu_linkage::clk::holder::HolderEncoding::from_schema(
        &schema.inner,
        &key.secret,
        &key.project,
        Box::new(rand::rng()),
    )
    .ok_or_else(|| err("the schema has no [clk] section"))?;
    let bits = enc.words() * 64;
    let mut out = Vec::with_capacity(columns.first().map_or(0, Vec::len));
    let mut buf = Vec::new();
    for_each_row(&tokenizer, &header, &columns, |_, rt| {
        buf.clear();
        enc.encode(rt, &mut buf);
        let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_le_bytes()).collect();
        out.push(PyBytes::new(py, &bytes));
    })?;
    Ok((bits, out))
}

fn evaluation_dict<'py>(py: Python<'py>, e: &Evaluation) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("true_positives", e.true_positives)?;
    d.set_item("false_positives", e.false_positives)?;
    d.set_item("false_negatives", e.false_negatives)?;
    d.set_item("precision", e.precision)?;
    d.set_item("recall", e.recall)?;
    d.set_item("f1", e.f1)?;
    Ok(d)
}

/// Pairwise quality of `pairs` against `truth` (both CSV bytes in the `renketsu eval`
/// formats: `id_a,id_b` or `party_a,id_a,party_b,id_b`). Returns a dict of counts and
/// measures, with `by_holder_pair` (`"a|b"` → measures) for party-named files.
#[pyfunction]
fn evaluate_csv<'py>(py: Python<'py>, pairs: &[u8], truth: &[u8]) -> PyResult<Bound<'py, PyDict>> {
    let (predicted, multi_p) = read_pairs(pairs, "pairs").map_err(err)?;
    let (truth, multi_t) = read_pairs(truth, "truth").map_err(err)?;
    if multi_p != multi_t {
        return Err(err(
            "pairs and truth must both be id_a,id_b or both party_a,id_a,party_b,id_b",
        ));
    }
    let d = evaluation_dict(py, &Evaluation::compare(&predicted, &truth))?;
    if multi_p {
        let by = PyDict::new(py);
        let per: BTreeMap<_, _> = by_holder_pair(&predicted, &truth);
        for ((a, b), e) in per {
            by.set_item(format!("{a}|{b}"), evaluation_dict(py, &e)?)?;
        }
        d.set_item("by_holder_pair", by)?;
    }
    Ok(d)
}

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("RenketsuError", m.py().get_type::<RenketsuError>())?;
    m.add_class::<Schema>()?;
    m.add_class::<ProjectKey>()?;
    m.add_function(wrap_pyfunction!(link_csv, m)?)?;
    m.add_function(wrap_pyfunction!(tokenize_columns, m)?)?;
    m.add_function(wrap_pyfunction!(encode_clk_columns, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate_csv, m)?)?;
    m.add_class::<spark::Comparer>()?;
    m.add_class::<spark::Totals>()?;
    m.add_class::<spark::PairIndex>()?;
    m.add_class::<linker::Linker>()?;
    m.add_function(wrap_pyfunction!(custodian::tokenize_columns_oprf, m)?)?;
    m.add_function(wrap_pyfunction!(custodian::read_token_file, m)?)?;
    m.add_function(wrap_pyfunction!(spark::link_tokens, m)?)?;
    Ok(())
}
