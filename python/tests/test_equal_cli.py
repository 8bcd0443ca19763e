"""The package links as `renketsu link` does, on the benchmark data sets (../shared/data):
the same pairs (byte for byte), the same clusters (as partitions: pseudonyms are random per
run) and the same summary and model estimates, under the same key."""

import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401 (pa.compute)
import pytest

import renketsu
from conftest import REPO, SHARED, TODAY, run_cli

CASES = {
    "jp": ("jp-person.toml", SHARED / "jp", "jp_a.csv", "jp_b.csv"),
    "jp_ins": ("ndb.toml", SHARED / "jp_ins", "jp_ins_a.csv", "jp_ins_b.csv"),
    "jp_ins_hash_only": ("ndb.toml", SHARED / "jp_ins", "jp_ins_a.csv", "jp_ins_b_ndb.csv"),
    "febrl4": ("febrl-scored.toml", SHARED / "febrl", "febrl4a.csv", "febrl4b.csv"),
}


def partition(clusters) -> set:
    groups = {}
    for party, rid, pid in zip(*(clusters.column(c).to_pylist() for c in ("party", "id", "pid"))):
        groups.setdefault(pid, set()).add((party, rid))
    return {frozenset(g) for g in groups.values()}


def without_timings(v):
    if isinstance(v, dict):
        return {k: without_timings(x) for k, x in v.items() if "timing" not in k and k != "ms"}
    if isinstance(v, list):
        return [without_timings(x) for x in v]
    return v


@pytest.mark.parametrize("case", sorted(CASES))
def test_link_equals_cli(case, tmp_path, key, key_store, renketsu_bin):
    schema_file, d, a, b = CASES[case]
    if not d.is_dir():
        pytest.fail(f"{d} missing: the shared data sets are part of the test set-up")
    schema_path = REPO / "schemas" / schema_file
    inputs = {"a": d / a, "b": d / b}
    cli = run_cli(renketsu_bin, key_store, schema_path, inputs, tmp_path / "cli")
    frames = {p: pd.read_csv(f, dtype=str, keep_default_na=False) for p, f in inputs.items()}
    r = renketsu.link(renketsu.Schema.from_toml(schema_path), frames, key=key, today=TODAY)

    assert r.files["pairs.csv"] == (cli / "pairs.csv").read_bytes()
    assert r.pairs.num_rows > 1000
    cli_clusters = renketsu._read_csv_text((cli / "clusters.csv").read_bytes())
    assert partition(r.clusters) == partition(cli_clusters)

    import json

    summary = json.loads((cli / "summary.json").read_text())
    assert r.estimates is not None
    # The inputs' labels differ (a table is named after its party, a file by its path).
    assert [p.pop("input") for p in r.summary["parties"]] == ["a", "b"]
    assert [p.pop("input") for p in summary["parties"]] == [str(d / a), str(d / b)]
    assert without_timings(r.summary) == without_timings(summary)
    assert without_timings(r.estimates) == without_timings(summary["scoring"])
    assert 0 < r.estimates["threshold"]["probability"] < 1
    assert 0.9 < r.estimates["estimated"]["precision"] <= 1


@pytest.mark.parametrize("case", sorted(CASES))
def test_linker_stages_equal_cli(case, tmp_path, key, key_store, renketsu_bin):
    """Stepping through the stages (candidates, fit, predict, report, cluster) gives what
    `renketsu link` gives in one go: the candidate count and the fitted m/u of its summary,
    its pair scores above the threshold, and its pairs, clusters and estimates."""
    schema_file, d, a, b = CASES[case]
    schema_path = REPO / "schemas" / schema_file
    inputs = {"a": d / a, "b": d / b}
    cli = run_cli(renketsu_bin, key_store, schema_path, inputs, tmp_path / "cli")
    import json

    summary = json.loads((cli / "summary.json").read_text())["scoring"]
    frames = {p: pd.read_csv(f, dtype=str, keep_default_na=False) for p, f in inputs.items()}
    linker = renketsu.Linker(
        renketsu.Schema.from_toml(schema_path), frames, key=key, today=TODAY
    )

    cands = linker.candidates()
    assert cands.num_rows == summary["candidates"]["pairs"]
    assert cands.column_names == ["party_a", "id_a", "party_b", "id_b"]
    assert set(cands.column("party_a").to_pylist()) <= {"a", "b"}

    model = linker.fit()
    params = model.parameters.to_pylist()
    want = [
        (c["name"], lvl["label"], lvl["m"], lvl["u"])
        for c in summary["comparisons"]
        for lvl in c["levels"]
    ]
    assert [(p["comparison"], p["label"], p["m"], p["u"]) for p in params] == want

    pred = model.predict()
    assert pred.num_rows == cands.num_rows
    assert pred.column("id_a").to_pylist() == cands.column("id_a").to_pylist()
    assert {f"gamma_{c['name']}" for c in summary["comparisons"]} <= set(pred.column_names)
    report = model.report()
    w = report["threshold"]["match_weight"]
    assert report["threshold"]["match_probability"] == pytest.approx(
        summary["threshold"]["probability"], rel=1e-9
    )
    above = pred.filter(pa.compute.greater_equal(pred.column("match_weight"), w))
    assert above.num_rows == report["links"] == summary["links_above_threshold"]
    assert 0 < report["precision"] <= 1 and 0 < report["recall"] <= 1

    result = linker.cluster()
    assert result.files["pairs.csv"] == (cli / "pairs.csv").read_bytes()
    cli_clusters = renketsu._read_csv_text((cli / "clusters.csv").read_bytes())
    assert partition(result.clusters) == partition(cli_clusters)
    assert without_timings(result.estimates) == without_timings(summary)
    # A stricter threshold links a subset, and the first result is not disturbed.
    strict = linker.cluster(threshold=0.9999)
    assert strict.pairs.num_rows <= result.pairs.num_rows
    assert strict.estimates["threshold"]["probability"] == pytest.approx(0.9999)
    again = linker.cluster()
    assert again.files["pairs.csv"] == result.files["pairs.csv"]
