//! The holder's tokens through the key custodian (custodian mode, SPEC.md §4.5): each
//! recipe's canonical preimage is blinded, evaluated by the custodian with the active
//! epoch's key (RFC 9497 ristretto255-SHA512; VOPRF: the batch proof is verified against the
//! published key before any output is used) and unblinded. The holder never holds the key;
//! the same client code as `renketsu tokenize --custodian` ([`renketsu_client::custodian`]).
//! Also: a token file's records read back (`read_token_file`).

use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use renketsu_client::custodian::{
    BatchEvaluator as _, ConnectConfig, CustodianClient, DEFAULT_BATCH_SIZE, EvalJob, EvalMode,
    custodian_recipe_name, evaluate_jobs,
};
use renketsu_linkage::Tokenizer;

use crate::{Schema, TokenColumns, context, err, for_each_row};

/// Where and as whom to reach the custodian: `(url, ca, cert, key, tls_domain)`, PEM paths.
type Connection = (String, String, String, String, Option<String>);

/// Tokens of a table through the key custodian (SPEC.md §4.5): `(rows, recipes, tokens,
/// epochs)`, one entry per token: row index, recipe name, 32-byte element `k·H(preimage)`,
/// the recipe's key epoch. `mode`: `voprf` (default) or `oprf`. Errors name the failing call
/// (unreachable custodian, unknown project or recipe, quota, a proof that does not verify).
#[pyfunction]
#[pyo3(signature = (schema, project, connection, header, columns, *, mode="voprf", today=None, timeout_secs=60))]
#[allow(
    clippy::too_many_arguments,
    reason = "keyword arguments of the Python API"
)]
pub(crate) fn tokenize_columns_oprf<'py>(
    py: Python<'py>,
    schema: &Schema,
    project: &str,
    connection: Connection,
    header: Vec<String>,
    columns: Vec<Vec<Option<String>>>,
    mode: &str,
    today: Option<u32>,
    timeout_secs: u64,
) -> PyResult<(TokenColumns<'py>, Vec<u64>)> {
    let ctx = context(today)?;
    let mode = match mode {
        "voprf" => EvalMode::Voprf,
        "oprf" => EvalMode::Oprf,
        other => {
            return Err(PyValueError::new_err(format!(
                "mode {other:?}: use voprf or oprf"
            )));
        }
    };
    let schema = &schema.inner;
    let tokenizer = Tokenizer::preimage_mode(schema, ctx);
    // Per recipe: the preimages and the rows they came from.
    let n = schema.recipes.len();
    let mut preimages: Vec<Vec<Vec<u8>>> = vec![Vec::new(); n];
    let mut rows: Vec<Vec<u64>> = vec![Vec::new(); n];
    for_each_row(&tokenizer, &header, &columns, |row, rt| {
        for (r, p) in rt.preimages() {
            preimages[r].push(p.to_vec());
            rows[r].push(row as u64);
        }
    })?;
    let names: Vec<String> = schema
        .recipes
        .iter()
        .map(|r| custodian_recipe_name(&r.name, r.version))
        .collect();
    let (url, ca, cert, key, tls_domain) = connection;
    let evaluated = py
        .detach(|| -> Result<_, String> {
            let mut cfg = ConnectConfig::new(url, ca.as_ref(), cert.as_ref(), key.as_ref());
            cfg.tls_domain = tls_domain;
            cfg.timeout = Duration::from_secs(timeout_secs.max(1));
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the async runtime: {e}"))?;
            let client = {
                let _in_runtime = rt.enter();
                CustodianClient::connect(&cfg).map_err(|e| e.to_string())?
            };
            rt.block_on(async {
                let mut keys = Vec::with_capacity(n);
                for (r, name) in names.iter().enumerate() {
                    if preimages[r].is_empty() {
                        keys.push(None);
                        continue;
                    }
                    let k = client
                        .active_key(project, name)
                        .await
                        .map_err(|e| format!("cannot get the public key of recipe {name}: {e}"))?;
                    keys.push(Some(k));
                }
                let jobs: Vec<EvalJob<'_, Vec<u8>>> = (0..n)
                    .filter_map(|r| {
                        keys[r].map(|key| EvalJob {
                            recipe: &names[r],
                            key,
                            inputs: &preimages[r],
                        })
                    })
                    .collect();
                let out = evaluate_jobs(&client, project, mode, &jobs, DEFAULT_BATCH_SIZE)
                    .await
                    .map_err(|e| format!("evaluation failed: {e}"))?;
                Ok::<_, String>((keys, out))
            })
        })
        .map_err(err)?;
    let (keys, out) = evaluated;
    let (mut r_rows, mut r_recipes, mut r_tokens, mut epochs) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut out = out.into_iter();
    for r in 0..n {
        let Some(k) = keys[r] else { continue };
        let elements = out.next().expect("one result per job");
        for (row, e) in rows[r].iter().zip(elements) {
            r_rows.push(*row);
            r_recipes.push(schema.recipes[r].name.clone());
            r_tokens.push(PyBytes::new(py, &e));
            epochs.push(k.epoch);
        }
    }
    Ok(((r_rows, r_recipes, r_tokens), epochs))
}

/// `(ids, rows, recipes, tokens)` of [`read_token_file`].
type TokenFileColumns<'py> = (Vec<String>, Vec<u64>, Vec<String>, Vec<Bound<'py, PyBytes>>);

/// A token file's header (JSON text) and its tokens: `(header, (ids, rows, recipes,
/// tokens))`, `ids` one per record, then one entry per token: record index, recipe name,
/// 32-byte token. Checked as `renketsu link` reads it (format, digests, trailer).
#[pyfunction]
pub(crate) fn read_token_file<'py>(
    py: Python<'py>,
    path: &str,
) -> PyResult<(String, TokenFileColumns<'py>)> {
    let mut reader = crate::open(path).map_err(err)?;
    let header = serde_json::to_string(reader.header()).map_err(err)?;
    let names: Vec<String> = reader
        .header()
        .recipes
        .iter()
        .map(|r| r.name.clone())
        .collect();
    let (mut ids, mut rows, mut recipes, mut tokens) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut rec = renketsu_linkage::token_file::Record::default();
    while reader.next(&mut rec).map_err(err)? {
        let row = ids.len() as u64;
        ids.push(rec.id.clone());
        for (r, t) in &rec.tokens {
            rows.push(row);
            recipes.push(names.get(*r).cloned().unwrap_or_default());
            tokens.push(PyBytes::new(py, t));
        }
    }
    Ok((header, (ids, rows, recipes, tokens)))
}
