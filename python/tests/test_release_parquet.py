"""`renketsu fetch --format parquet` opens in PyArrow and pandas with the right types and the
rows of the CSV form. The release is the one the Rust end-to-end test fetches from a scored
linkage-unit job (tests/tests/linkage_unit_e2e.rs, `release_parquet_equals_csv`), kept under
`$CARGO_TARGET_TMPDIR/release-parquet`; scripts/python.sh passes its path in
RENKETSU_RELEASE_PARQUET. Run alone (no such release), the test is skipped, except under CI."""

import datetime
import json
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ARROW = {
    "int64": pa.int64(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "date32": pa.date32(),
    "string": pa.string(),
}


@pytest.fixture(scope="module")
def release() -> Path:
    d = Path(os.environ.get("RENKETSU_RELEASE_PARQUET", "/nonexistent"))
    if not (d / "release.json").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{d}: no release (cargo test's linkage_unit_e2e writes it)")
        pytest.skip("no release from the Rust end-to-end test (run scripts/test.sh)")
    return d


def as_text(v) -> str:
    """A Parquet value as the CSV form writes it."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, datetime.date):
        return v.isoformat()
    return str(v)


@pytest.mark.parametrize("name", ["joined", "long", "link_probability"])
def test_parquet_release_types_and_rows(release, name):
    types = json.loads((release / "release.json").read_text())["parquet"][f"{name}.parquet"]
    table = pq.read_table(release / f"{name}.parquet")
    csv = pd.read_csv(release / f"{name}.csv", dtype=str, keep_default_na=False)
    assert table.column_names == list(csv.columns)
    assert sorted(types) == sorted(table.column_names)
    for field in table.schema:
        assert field.type == ARROW[types[field.name]], field.name
    assert table.schema.field("pid").nullable is False
    if name == "link_probability":
        assert types["weakest_link_probability"] == "float64"
    else:
        # schemas/ndb.toml's content has counts and points.
        assert "int64" in types.values()
    assert table.num_rows == len(csv) > 0
    for col in table.column_names:
        values = table.column(col).to_pylist()
        if types[col] == "float64":
            want = [float(x) if x else None for x in csv[col]]
            assert values == want, col
        else:
            assert [as_text(v) for v in values] == list(csv[col]), col

    # pandas: numbers as numbers, dates as dates (the pyarrow dtypes keep nulls in ints).
    df = pd.read_parquet(release / f"{name}.parquet", dtype_backend="pyarrow")
    assert len(df) == len(csv)
    for col in df.columns:
        assert df[col].dtype == pd.ArrowDtype(ARROW[types[col]]), col
    df = pd.read_parquet(release / f"{name}.parquet")
    for col in df.columns:
        kind = types[col]
        if kind in ("int64", "float64"):
            assert pd.api.types.is_numeric_dtype(df[col]), col
        elif kind == "string":
            assert not pd.api.types.is_numeric_dtype(df[col]), col
