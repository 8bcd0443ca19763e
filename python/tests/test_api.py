"""The Python API on the shipped samples (samples/jp_*.csv, samples/multi)."""

import datetime
import json

import pandas as pd
import pyarrow as pa
import pytest

import renketsu
from conftest import PROJECT, REPO, TODAY, run_cli

SAMPLES = REPO / "samples"


def frame(path):
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_schema_from_path_and_text():
    path = REPO / "schemas" / "jp-person.toml"
    s = renketsu.Schema.from_toml(path)
    t = renketsu.Schema.from_toml(path.read_text(encoding="utf-8"))
    assert s.name == t.name and s.recipes == t.recipes and s.recipes
    assert s.matcher == "scored"
    assert renketsu.Schema.from_toml(REPO / "schemas" / "jp-person-exact.toml").matcher == "exact"
    assert "Fellegi-Sunter" in s.explain("demo")
    assert s.name in repr(s)


def test_schema_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        renketsu.Schema.from_toml(str(tmp_path / "missing.toml"))


def test_schema_errors_name_the_line():
    with pytest.raises(renketsu.RenketsuError, match="line 2"):
        renketsu.Schema.from_toml("schema_format = 1\nname = = 3\n")


def test_key_repr_is_redacted(key, key_store):
    assert repr(key) == f"ProjectKey(project='{PROJECT}', secret=<redacted>)"
    assert str(key) == repr(key)
    assert key.project == PROJECT
    with pytest.raises(renketsu.RenketsuError):
        renketsu.ProjectKey.from_key_store("no-such-project", key_store)


def test_link_dataframes_equals_cli_on_samples(tmp_path, key, key_store, renketsu_bin):
    schema_path = REPO / "schemas" / "jp-person.toml"
    schema = renketsu.Schema.from_toml(schema_path)
    inputs = {"a": SAMPLES / "jp_a.csv", "b": SAMPLES / "jp_b.csv"}
    cli = run_cli(renketsu_bin, key_store, schema_path, inputs, tmp_path / "cli")
    r = renketsu.link(
        schema,
        {p: frame(f) for p, f in inputs.items()},
        key=key,
        today=datetime.date(2026, 11, 22),
    )
    assert r.files["pairs.csv"] == (cli / "pairs.csv").read_bytes()
    assert r.pairs.column_names == ["id_a", "id_b"]
    assert r.pairs.num_rows == r.summary["links"] > 0
    assert set(r.clusters.column_names) >= {"party", "id", "pid"}
    assert r.estimates is not None and r.report_html and "<html" in r.report_html.lower()
    rep = r.report()
    assert rep["links"] == r.summary["links"]
    for party, frame_ in (("a", frame(inputs["a"])), ("b", frame(inputs["b"]))):
        acc = rep["parties"][party]
        assert acc["read"] == len(frame_) == acc["tokenized"] + acc["rejected"]
    # evaluate equals `renketsu eval --json` on the same pairs.
    import subprocess

    ev = json.loads(
        subprocess.run(
            [renketsu_bin, "eval", "--json", "--pairs", str(cli / "pairs.csv"),
             "--truth", str(SAMPLES / "jp_truth.csv")],
            check=True, capture_output=True, text=True,
        ).stdout
    )
    mine = renketsu.evaluate(r.pairs, pd.read_csv(SAMPLES / "jp_truth.csv", dtype=str))
    for k in ("precision", "recall", "f1"):
        assert mine[k] == pytest.approx(ev[k], abs=1e-12)
    assert 0.9 < mine["f1"] <= 1.0
    # A pyarrow table and a CSV path link the same as a DataFrame.
    r2 = renketsu.link(
        schema,
        {"a": pa.Table.from_pandas(frame(inputs["a"]), preserve_index=False), "b": inputs["b"]},
        key=key,
        today=TODAY,
    )
    assert r2.files["pairs.csv"] == r.files["pairs.csv"]


def test_link_needs_two_inputs_and_the_right_key(tmp_path, key, key_store):
    schema = renketsu.Schema.from_toml(REPO / "schemas" / "jp-person-exact.toml")
    a = frame(SAMPLES / "jp_a.csv")
    with pytest.raises(renketsu.RenketsuError, match="at least two"):
        renketsu.link(schema, {"a": a}, key=key, today=TODAY)
    with pytest.raises(ValueError):
        renketsu.link(schema, {"a": a, "b": a}, key=key, today=TODAY, threshold=1.5)


def test_rejects_are_reported(key):
    schema = renketsu.Schema.from_toml(REPO / "schemas" / "jp-person-exact.toml")
    a = frame(SAMPLES / "jp_a.csv")
    b = frame(SAMPLES / "jp_b.csv")
    b.loc[0, "birth_date"] = "2999-01-01"  # in the future: the record's date is refused
    b.loc[1, "id"] = ""  # no id: the row is rejected
    r = renketsu.link(schema, {"a": a, "b": b}, key=key, today=TODAY)
    rej = r.rejects["b"]
    assert rej.num_rows >= 1
    assert set(rej.column_names) == {"row", "id", "reason", "detail"}
    assert "" in rej.column("id").to_pylist()
    assert r.report()["parties"]["b"]["rejected"] == rej.num_rows


def test_tokenize_counts_match_the_link_summary(key):
    schema = renketsu.Schema.from_toml(REPO / "schemas" / "jp-person-exact.toml")
    a = frame(SAMPLES / "jp_a.csv")
    t = renketsu.tokenize(schema, a, key=key, today=TODAY)
    assert t.column_names == ["row", "id", "recipe", "token"]
    assert t.schema.field("token").type == pa.binary(32)
    assert set(t.column("recipe").to_pylist()) <= set(schema.recipes)
    # The same identifiers make the same token; another row (a different person) another.
    again = renketsu.tokenize(schema, a.iloc[[0]], key=key, today=TODAY)
    first = [x for x in t.to_pylist() if x["row"] == 0]
    assert [x["token"] for x in again.to_pylist()] == [x["token"] for x in first]
    assert len(set(t.column("token").to_pylist())) > t.num_rows // 2
    # As many tokens per recipe as `link` makes of the same table.
    r = renketsu.link(schema, {"a": a, "b": frame(SAMPLES / "jp_b.csv")}, key=key, today=TODAY)
    made = {}
    for rec in t.column("recipe").to_pylist():
        made[rec] = made.get(rec, 0) + 1
    want = {k: v for k, v in r.summary["parties"][0]["tokens_by_recipe"].items() if v}
    assert made == want


def test_tokens_depend_on_the_project(tmp_path, key, renketsu_bin):
    import os
    import subprocess

    store = tmp_path / "keys"
    env = {k: v for k, v in os.environ.items() if k != "RENKETSU_KEK"}
    subprocess.run([renketsu_bin, "keys", "init", "--project", "other", "--key-store", str(store)],
                   check=True, env=env, capture_output=True)
    other = renketsu.ProjectKey.from_key_store("other", store)
    schema = renketsu.Schema.from_toml(REPO / "schemas" / "jp-person-exact.toml")
    a = frame(SAMPLES / "jp_a.csv").head(20)
    t1 = set(renketsu.tokenize(schema, a, key=key, today=TODAY).column("token").to_pylist())
    t2 = set(renketsu.tokenize(schema, a, key=other, today=TODAY).column("token").to_pylist())
    assert t1 and t2 and not (t1 & t2)


def _dice(x: bytes, y: bytes) -> float:
    a, b = int.from_bytes(x, "little"), int.from_bytes(y, "little")
    n = bin(a).count("1") + bin(b).count("1")
    return 2 * bin(a & b).count("1") / n if n else 0.0


def test_encode_clk_true_pairs_are_closer(key):
    schema = renketsu.Schema.from_toml(REPO / "schemas" / "jp-person-clk.toml")
    a = frame(SAMPLES / "jp_a.csv")
    b = frame(SAMPLES / "jp_b.csv")
    ca = renketsu.encode_clk(schema, a, key=key, today=TODAY)
    cb = renketsu.encode_clk(schema, b, key=key, today=TODAY)
    bits = int(ca.schema.metadata[b"bits"])
    assert ca.num_rows == len(a) and ca.schema.field("clk").type == pa.binary(bits // 8)
    by_id_a = dict(zip(ca.column("id").to_pylist(), ca.column("clk").to_pylist()))
    by_id_b = dict(zip(cb.column("id").to_pylist(), cb.column("clk").to_pylist()))
    truth = pd.read_csv(SAMPLES / "jp_truth.csv", dtype=str)
    true = [_dice(by_id_a[x], by_id_b[y]) for x, y in zip(truth.id_a, truth.id_b)
            if x in by_id_a and y in by_id_b]
    ids_b = list(by_id_b)
    false = [_dice(by_id_a[x], by_id_b[ids_b[(i * 7 + 3) % len(ids_b)]])
             for i, x in enumerate(truth.id_a) if x in by_id_a]
    assert true and false
    assert sorted(true)[len(true) // 2] > 0.8 > sorted(false)[len(false) // 2]
    with pytest.raises(renketsu.RenketsuError, match="clk"):
        renketsu.encode_clk(renketsu.Schema.from_toml(REPO / "schemas" / "jp-person-exact.toml"),
                            a, key=key)


def test_multi_holder_samples_equal_cli(tmp_path, key, key_store, renketsu_bin):
    """Three holders (samples/multi: EHR, NDB-style hash-only, 介護DB), the quickstart's
    schema: party-named pairs equal to the CLI's, evaluated per holder pair."""
    multi = SAMPLES / "multi"
    schema_path = REPO / "schemas" / "ndb.toml"
    inputs = {p: multi / f"{p}.csv" for p in ("ehr", "ndb", "kaigo")}
    cli = run_cli(renketsu_bin, key_store, schema_path, inputs, tmp_path / "cli")
    r = renketsu.link(renketsu.Schema.from_toml(schema_path),
                      {p: frame(f) for p, f in inputs.items()}, key=key, today=TODAY)
    assert r.files["pairs.csv"] == (cli / "pairs.csv").read_bytes()
    assert r.pairs.column_names == ["party_a", "id_a", "party_b", "id_b"]
    ev = renketsu.evaluate(r.pairs, multi / "truth.csv")
    assert set(ev["by_holder_pair"]) >= {"ehr|kaigo"}
    assert 0.5 < ev["f1"] <= 1.0


def test_parquet_paths_link_as_csv(tmp_path, key):
    """A Parquet path (read with pyarrow) links as the CSV it was written from."""
    import pyarrow.parquet as pq

    schema = renketsu.Schema.from_toml(REPO / "schemas" / "jp-person-exact.toml")
    paths = {}
    for p in ("a", "b"):
        t = pa.Table.from_pandas(frame(SAMPLES / f"jp_{p}.csv"), preserve_index=False)
        paths[p] = tmp_path / f"{p}.parquet"
        pq.write_table(t, paths[p])
    by_csv = renketsu.link(schema, {p: SAMPLES / f"jp_{p}.csv" for p in ("a", "b")},
                           key=key, today=TODAY)
    by_pq = renketsu.link(schema, paths, key=key, today=TODAY)
    assert by_pq.files["pairs.csv"] == by_csv.files["pairs.csv"]
    assert by_pq.pairs.num_rows > 100
    assert [p["input"] for p in by_pq.summary["parties"]] == [str(paths["a"]), str(paths["b"])]


def test_polars_frames_link_as_pandas(key):
    """polars DataFrames go in through the Arrow C stream and link as the same pandas
    frames do; the outputs convert back to polars."""
    pl = pytest.importorskip("polars", reason="polars is in python/requirements-test.txt")
    schema = renketsu.Schema.from_toml(REPO / "schemas" / "jp-person.toml")
    paths = {"a": SAMPLES / "jp_a.csv", "b": SAMPLES / "jp_b.csv"}
    by_pandas = renketsu.link(schema, {p: frame(f) for p, f in paths.items()}, key=key, today=TODAY)
    frames = {p: pl.read_csv(f, infer_schema=False) for p, f in paths.items()}
    by_polars = renketsu.link(schema, frames, key=key, today=TODAY)
    assert by_polars.files["pairs.csv"] == by_pandas.files["pairs.csv"]
    pairs = pl.from_arrow(by_polars.pairs)
    assert pairs.columns == ["id_a", "id_b"] and pairs.height == by_pandas.pairs.num_rows
    linker = renketsu.Linker(schema, frames, key=key, today=TODAY)
    assert pl.from_arrow(linker.fit().predict()).height == linker.candidates().num_rows


def test_linker_refuses_what_it_cannot_step_through(key):
    """A Linker needs a scored schema and thresholds in (0, 1); its repr names no secret."""
    paths = {"a": SAMPLES / "jp_a.csv", "b": SAMPLES / "jp_b.csv"}
    exact = renketsu.Schema.from_toml(REPO / "schemas" / "jp-person-exact.toml")
    with pytest.raises(ValueError, match="scored"):
        renketsu.Linker(exact, paths, key=key, today=TODAY)
    schema = renketsu.Schema.from_toml(REPO / "schemas" / "jp-person.toml")
    with pytest.raises(ValueError, match="threshold"):
        renketsu.Linker(schema, paths, key=key, today=TODAY, threshold=1.5)
    linker = renketsu.Linker(schema, paths, key=key, today=TODAY)
    assert "candidates=not yet" in repr(linker) and "fitted=false" in repr(linker).lower()
    with pytest.raises(ValueError, match="threshold"):
        linker.cluster(threshold=0.0)
    model = linker.fit()
    assert "candidates=" in repr(linker) and "not yet" not in repr(linker)
    assert model.info["converged"] in (True, False) and 0 < model.prior < 1
    # Parameters: one row per level, m and u probabilities summing to 1 per comparison.
    params = model.parameters.to_pylist()
    for name in model.comparisons:
        rows = [p for p in params if p["comparison"] == name and p["m"] is not None]
        assert sum(p["m"] for p in rows) == pytest.approx(1.0, abs=1e-6)
        assert sum(p["u"] for p in rows) == pytest.approx(1.0, abs=1e-6)
    # A higher threshold links no more pairs (pairwise, before clustering).
    loose, strict = model.report(0.5), model.report(0.999)
    assert strict["links"] <= loose["links"] and strict["precision"] >= loose["precision"]
    for secret_like in ("secret", "kek"):
        assert secret_like not in repr(linker).lower()
