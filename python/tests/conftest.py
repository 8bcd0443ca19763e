"""Shared fixtures: the `renketsu` binary (RENKETSU_BIN, set by scripts/python.sh) and a fresh
key store with one project, made by `renketsu keys init`, so that the CLI and the package
link under the same key."""

import os
import subprocess
from pathlib import Path

import pytest

import renketsu

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
PROJECT = "pytest-project"
TODAY = "2026-11-22"


@pytest.fixture(scope="session")
def renketsu_bin() -> str:
    path = os.environ.get("RENKETSU_BIN")
    if not path or not os.access(path, os.X_OK):
        pytest.fail("RENKETSU_BIN must name the built renketsu binary (scripts/python.sh sets it)")
    return path


@pytest.fixture(scope="session")
def key_store(tmp_path_factory, renketsu_bin) -> Path:
    store = tmp_path_factory.mktemp("keys")
    env = {k: v for k, v in os.environ.items() if k != "RENKETSU_KEK"}
    subprocess.run(
        [renketsu_bin, "keys", "init", "--project", PROJECT, "--key-store", str(store)],
        check=True,
        env=env,
        capture_output=True,
    )
    return store


@pytest.fixture(scope="session")
def key(key_store, monkeypatch_session) -> renketsu.ProjectKey:
    return renketsu.ProjectKey.from_key_store(PROJECT, key_store)


@pytest.fixture(scope="session")
def monkeypatch_session():
    mp = pytest.MonkeyPatch()
    mp.delenv("RENKETSU_KEK", raising=False)
    yield mp
    mp.undo()


def run_cli(renketsu_bin, key_store, schema, inputs, out, extra=()):
    """`renketsu link` on CSV files (`inputs`: party → path) into `out`."""
    args = [
        renketsu_bin, "link", "-q", "--project", PROJECT, "--key-store", str(key_store),
        "--today", TODAY, "--schema", str(schema), "--out", str(out), *extra,
    ]
    for party, path in inputs.items():
        args += ["--input", f"{party}={path}"]
    env = {k: v for k, v in os.environ.items() if k != "RENKETSU_KEK"}
    subprocess.run(args, check=True, env=env, capture_output=True)
    return out
