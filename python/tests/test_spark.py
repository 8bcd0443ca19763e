"""renketsu.spark in local[2]: on the holders' token files it gives the pairs, clusters and
summary of `renketsu link` on the same token files (samples/multi with schemas/ndb.toml;
../shared/data/jp with schemas/jp-person.toml), with the shipped security settings on."""

import json
import os
import subprocess

import pytest

import renketsu
from conftest import PROJECT, REPO, SHARED, TODAY

import renketsu.spark as rks
from test_equal_cli import partition, without_timings

CASES = {
    "multi": (
        "ndb.toml",
        {p: REPO / "samples" / "multi" / f"{p}.csv" for p in ("ehr", "ndb", "kaigo")},
    ),
    "jp": ("jp-person.toml", {"a": SHARED / "jp" / "jp_a.csv", "b": SHARED / "jp" / "jp_b.csv"}),
}


@pytest.fixture(scope="module")
def spark():
    s = rks.session("local[2]")
    yield s
    s.stop()


def cli(renketsu_bin, key_store, *args):
    env = {k: v for k, v in os.environ.items() if k != "RENKETSU_KEK"}
    subprocess.run([renketsu_bin, *args], check=True, env=env, capture_output=True)


def test_session_has_the_security_settings(spark):
    conf = spark.sparkContext.getConf()
    for k, v in rks.SECURE_CONF.items():
        assert conf.get(k) == v, k
    text = rks.spark_defaults_path().read_text()
    for k, v in rks.SECURE_CONF.items():
        assert any(line.split() == [k, v] for line in text.splitlines()), k
    with pytest.raises(ValueError):
        rks.session("local[2]", **{"spark.io.encryption.enabled": "false"})


@pytest.mark.parametrize("case", sorted(CASES))
def test_spark_link_equals_cli_on_token_files(case, spark, tmp_path, key_store, renketsu_bin):
    schema_file, inputs = CASES[case]
    for path in inputs.values():
        if not path.is_file():
            pytest.fail(f"{path} missing: the data sets are part of the test set-up")
    schema_path = str(REPO / "schemas" / schema_file)
    tokens = {}
    for party, path in inputs.items():
        tokens[party] = tmp_path / f"{party}.tokens"
        cli(
            renketsu_bin, key_store, "tokenize", "--schema", schema_path, "--input", str(path),
            "--party", party, "--out", str(tokens[party]), "--project", PROJECT,
            "--key-store", str(key_store), "--today", TODAY, "--quiet",
        )
    out = tmp_path / "cli"
    args = ["link", "-q", "--schema", schema_path, "--today", TODAY, "--out", str(out)]
    for party, path in tokens.items():
        args += ["--input", f"{party}={path}"]
    cli(renketsu_bin, key_store, *args)

    stage = rks.SparkPairStage(
        spark, (REPO / "schemas" / schema_file).read_text(), [str(p) for p in tokens.values()]
    )
    r = rks.link(
        spark, renketsu.Schema.from_toml(schema_path), tokens, today=TODAY, stage=stage
    )

    # The candidates, their aggregates, the links, the clusters and the totals were made
    # by Spark; the engine never received a candidate pair.
    kinds = [j[0] for j in stage.jobs]
    assert kinds == [
        "candidates", "groups", "contains", "select_links", "cluster", "totals"
    ], stage.jobs
    summary = json.loads((out / "summary.json").read_text())
    cand, groups, asked, links, clus, totals = stage.jobs
    pairs = summary["scoring"]["candidates"]["pairs"]
    assert cand[1] == "all" and cand[3] == pairs > 0
    # Spark's GROUP BY of the batches' groups counts every candidate pair once.
    assert sum(stage.pattern_counts.values()) == pairs
    assert 0 < groups[2] <= pairs, groups
    assert asked[2] == summary["scoring"]["random_pairs"]
    # Only the links above the threshold came back (the vetoed ones are not links).
    sc = summary["scoring"]
    assert links[1] == sc["links_above_threshold"] - sc["clustering"]["vetoed_by_rule"] > 0
    # Links went through connected components (several, found in a few rounds).
    assert clus[1] == links[1] and clus[2] > 1 and clus[3] >= 1, clus
    assert totals[1] >= 1

    assert r.files["pairs.csv"] == (out / "pairs.csv").read_bytes()
    assert r.files["pair_scores.csv"] == (out / "pair_scores.csv").read_bytes()
    assert r.pairs.num_rows > 500
    cli_clusters = renketsu._read_csv_text((out / "clusters.csv").read_bytes())
    assert partition(r.clusters) == partition(cli_clusters)
    assert without_timings(r.summary) == without_timings(summary)
