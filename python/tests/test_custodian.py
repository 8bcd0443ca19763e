"""Custodian mode from Python (SPEC.md §4.5): a key custodian started from the `renketsu`
binary on loopback with a development PKI; the package's tokens through it equal those of
`renketsu tokenize --custodian` on the same rows, and a Linker over the custodian token
files links as `renketsu link` on them does."""

import os
import subprocess
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

import renketsu
from conftest import REPO, TODAY

PROJECT = "pytest-custodian"
HOLDERS = ("a", "b")


@pytest.fixture(scope="module")
def custodian(tmp_path_factory, renketsu_bin):
    d = tmp_path_factory.mktemp("custodian")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RENKETSU_")}

    def run(*args):
        subprocess.run([renketsu_bin, *args], check=True, env=env, cwd=d, capture_output=True)

    run("pki", "dev-init", "--out", "pki", *[x for h in HOLDERS for x in ("--holder", h)])
    run("custodian", "init-config", "--pki", "pki", "--out", "custodian.toml",
        "--listen", "127.0.0.1:0")
    out = open(d / "custodian.out", "w")
    proc = subprocess.Popen(
        [renketsu_bin, "custodian", "serve", "--config", "custodian.toml"],
        cwd=d, env=env, stdout=out, stderr=open(d / "custodian.log", "w"),
    )
    try:
        url = None
        for _ in range(300):
            text = (d / "custodian.out").read_text()
            if "listening on" in text:
                url = "https://" + text.split("listening on ")[1].split()[0]
                break
            time.sleep(0.1)
        if url is None:
            pytest.fail("the custodian did not start: " + (d / "custodian.log").read_text())
        pki = d / "pki"

        def who(name):
            return renketsu.Custodian(url, pki / "ca.pem", pki / f"{name}.pem", pki / f"{name}.key")

        admin = who("admin")
        schema = REPO / "schemas" / "jp-person.toml"
        base = ["--custodian", url, "--ca", str(pki / "ca.pem")]
        adm = base + ["--cert", str(admin.cert), "--key", str(admin.key)]
        run("keys", "create-project", "--project", PROJECT,
            "--linkage-unit", "linkage-unit", "--schema", str(schema), *adm)
        for h in HOLDERS:
            run("keys", "enrol", "--project", PROJECT, "--party", h,
                "--declared-records", "5000", *adm)
        yield d, who, run, base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_tokens_through_the_custodian_equal_the_cli(custodian, tmp_path):
    d, who, run, base = custodian
    schema_path = REPO / "schemas" / "jp-person.toml"
    schema = renketsu.Schema.from_toml(schema_path)
    csv = REPO / "samples" / "jp_a.csv"
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)

    tokens = renketsu.tokenize(schema, frame, custodian=who("a"), project=PROJECT, today=TODAY)
    assert tokens.num_rows > frame.shape[0]
    assert set(tokens.column("epoch").to_pylist()) == {1}

    out = tmp_path / "a.tokens"
    h = who("a")
    run("tokenize", "--project", PROJECT, "--schema", str(schema_path), "--input", str(csv),
        "--party", "a", "--out", str(out), "--today", TODAY, "--quiet",
        *base, "--cert", str(h.cert), "--key", str(h.key))
    header, cli = renketsu.read_token_file(out)
    assert header["party"] == "a" and header["project"] == PROJECT
    assert header["mode"] != "hmac"

    def keyed(t: pa.Table):
        return sorted(zip(*(t.column(c).to_pylist() for c in ("id", "recipe", "token"))))

    assert keyed(tokens) == keyed(cli)
    # Not the embedded mode's tokens: no key was held.
    with pytest.raises(ValueError):
        renketsu.tokenize(schema, frame, project=PROJECT)


def test_linker_over_custodian_token_files_equals_cli(custodian, tmp_path):
    d, who, run, base = custodian
    schema_path = REPO / "schemas" / "jp-person.toml"
    paths = {}
    for h, name in zip(HOLDERS, ("jp_a.csv", "jp_b.csv")):
        c = who(h)
        paths[h] = tmp_path / f"{h}.tokens"
        run("tokenize", "--project", PROJECT, "--schema", str(schema_path),
            "--input", str(REPO / "samples" / name), "--party", h, "--out", str(paths[h]),
            "--today", TODAY, "--quiet", *base, "--cert", str(c.cert), "--key", str(c.key))
    cli = tmp_path / "cli"
    run("link", "-q", "--schema", str(schema_path), "--today", TODAY, "--out", str(cli),
        *[x for h in HOLDERS for x in ("--input", f"{h}={paths[h]}")])
    linker = renketsu.Linker.from_token_files(
        renketsu.Schema.from_toml(schema_path), paths, today=TODAY, project=PROJECT
    )
    assert linker.candidates().num_rows > 0
    result = linker.cluster()
    assert result.files["pairs.csv"] == (cli / "pairs.csv").read_bytes()
    assert result.pairs.num_rows > 100
    with pytest.raises(renketsu.RenketsuError):
        renketsu.Linker.from_token_files(
            renketsu.Schema.from_toml(schema_path), paths, today=TODAY, project="another"
        )
