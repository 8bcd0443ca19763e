"""renketsu: privacy-preserving record linkage for Japanese medical data, from Python.

The same engine as the ``renketsu`` command line (``renketsu link``), called in process.
Tables go in and come out as :class:`pyarrow.Table`; pandas and polars frames are accepted
wherever a table is (through Arrow), and every output table has ``to_pandas()``.

A session::

    import renketsu
    schema = renketsu.Schema.from_toml("schemas/jp-person.toml")
    key = renketsu.ProjectKey.from_key_store("cohort-2026")
    result = renketsu.link(schema, {"ehr": ehr_df, "claims": claims_df}, key=key)
    result.pairs        # pyarrow.Table id_a, id_b (strings)
    result.clusters     # pyarrow.Table party, id, pid
    result.summary      # dict: summary.json
    result.estimates    # the model's estimated quality (scored schemas), else None

Inputs are serialized to CSV in memory (UTF-8) before the engine reads them: the engine's
ingest stage (column checks, reject codes, encodings) reads CSV streams, so a table links
exactly as the same CSV file does with ``renketsu link``. Every value is read as text: give
identifier columns as strings (leading zeros of insurance numbers, postal codes).

Secrets: :class:`ProjectKey` holds the project master secret; its ``repr`` and ``str`` name
the project only. No function here prints or logs a record's values.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import pyarrow as pa
import pyarrow.csv as pacsv

from . import _native
from ._native import RenketsuError

__all__ = [
    "LinkResult",
    "ProjectKey",
    "RenketsuError",
    "Schema",
    "encode_clk",
    "evaluate",
    "link",
    "tokenize",
]

TableLike = Any  # pyarrow.Table, pyarrow.RecordBatch, pandas.DataFrame, polars.DataFrame
InputLike = Union[TableLike, str, "os.PathLike[str]", bytes]


class Schema:
    """A parsed and validated linkage schema (SPEC.md §2): fields, recipes, ``[clk]``,
    ``[scoring]``.

    Make one with :meth:`from_toml`. Attributes: ``name`` (str), ``version`` (int),
    ``id_column`` (str), ``content`` (list of content column names), ``recipes`` (list of
    recipe names), ``matcher`` (``"exact"``, ``"clk"`` or ``"scored"``).
    """

    __slots__ = ("_inner", "path")

    def __init__(self, inner: _native.Schema, path: Optional[str] = None) -> None:
        self._inner = inner
        #: The file the schema was read from (reported in the summary), or None.
        self.path = path

    @classmethod
    def from_toml(cls, source: Union[str, "os.PathLike[str]"]) -> "Schema":
        """Reads a schema from a TOML file path or from TOML text.

        ``source`` is taken as a path when it is a :class:`os.PathLike`, or a one-line string
        that names an existing file or ends in ``.toml``; else as TOML text.

        Raises :class:`RenketsuError` for a TOML syntax or type error (the message names the
        line and column) or a rule violation (unknown field in a recipe, duplicate names, ...),
        and :class:`OSError` when a path cannot be read.
        """
        if isinstance(source, os.PathLike) or (
            "\n" not in source and (source.endswith(".toml") or Path(source).is_file())
        ):
            path = os.fspath(source)
            text = Path(path).read_text(encoding="utf-8")
            return cls(_native.Schema.from_toml_text(text), path)
        return cls(_native.Schema.from_toml_text(source))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def explain(self, project: str = "project") -> str:
        """The plan ``renketsu link --explain`` prints: stages, recipes and their link modes,
        blocking keys, comparisons, thresholds, and what each stage's cost grows with."""
        return self._inner.explain(project)

    def __repr__(self) -> str:
        return repr(self._inner)


class ProjectKey:
    """A project's master secret for embedded mode, unsealed from the local key store.

    The key store is the one ``renketsu keys init --project NAME`` writes. ``repr`` and
    ``str`` show the project name only; the secret cannot be read back from Python.
    """

    __slots__ = ("_inner",)

    def __init__(self, inner: _native.ProjectKey) -> None:
        self._inner = inner

    @classmethod
    def from_key_store(
        cls,
        project: str,
        key_store: Union[str, "os.PathLike[str]", None] = None,
    ) -> "ProjectKey":
        """Unseals ``project``'s secret, as ``renketsu link --project`` does.

        ``key_store`` defaults to ``$RENKETSU_KEY_STORE``, else
        ``~/.local/share/renketsu/keys``. The key-encryption key is ``$RENKETSU_KEK`` if set
        and non-empty, else ``<key_store>/kek``.

        Raises :class:`RenketsuError` when the store, its KEK or the project is missing or
        the sealed secret does not open.
        """
        if key_store is None:
            key_store = os.environ.get("RENKETSU_KEY_STORE") or os.path.join(
                os.path.expanduser("~"), ".local", "share", "renketsu", "keys"
            )
        kek = os.environ.get("RENKETSU_KEK") or None
        if kek is not None and not kek.strip():
            kek = None
        return cls(_native.ProjectKey.from_key_store(project, os.fspath(key_store), kek))

    @property
    def project(self) -> str:
        """The project name (binds the recipe keys)."""
        return self._inner.project

    def __repr__(self) -> str:
        return f"ProjectKey(project={self.project!r}, secret=<redacted>)"

    __str__ = __repr__


def _to_table(data: TableLike) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if hasattr(data, "to_arrow"):  # polars
        return data.to_arrow()
    try:
        import pandas as pd  # noqa: F401

        if isinstance(data, pd.DataFrame):
            return pa.Table.from_pandas(data, preserve_index=False)
    except ImportError:
        pass
    if hasattr(data, "__arrow_c_stream__"):
        return pa.table(data)
    raise TypeError(
        f"expected a pyarrow.Table, pandas.DataFrame or polars.DataFrame, not {type(data).__name__}"
    )


def _csv_bytes(table: pa.Table) -> bytes:
    # Text columns only: numbers and dates become their canonical text first, so that a
    # table links as the CSV it came from does.
    cols = []
    for col in table.columns:
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            cols.append(col)
        else:
            cols.append(col.cast(pa.string()))
    table = pa.table(cols, names=table.column_names)
    buf = io.BytesIO()
    pacsv.write_csv(
        table,
        buf,
        write_options=pacsv.WriteOptions(include_header=True, quoting_style="needed"),
    )
    return buf.getvalue()


def _input_bytes(party: str, data: InputLike) -> Tuple[bytes, str, str]:
    """CSV bytes of an input, its encoding choice (files: detected, tables: UTF-8) and its
    label in messages and the summary (a file's path, else the party name)."""
    if isinstance(data, bytes):
        return data, "auto", party
    if isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        if path.lower().endswith(".parquet"):
            import pyarrow.parquet as pq

            return _csv_bytes(pq.read_table(path)), "utf-8", path
        return Path(path).read_bytes(), "auto", path
    return _csv_bytes(_to_table(data)), "utf-8", party


def _read_csv_text(data: bytes, text_only: bool = True) -> pa.Table:
    """An output CSV as a table. Ids and parties stay strings (leading zeros kept); with
    ``text_only`` every column is a string, else the other columns' types are inferred."""
    header = data.split(b"\n", 1)[0].decode("utf-8-sig").rstrip("\r")
    names = next(csv.reader([header])) if header else []
    text = [n for n in names if text_only or n in _TEXT_COLUMNS]
    return pacsv.read_csv(
        io.BytesIO(data),
        convert_options=pacsv.ConvertOptions(
            column_types={n: pa.string() for n in text},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )


_TEXT_COLUMNS = {"id", "id_a", "id_b", "party", "party_a", "party_b", "pid"}


def _today(today: Any) -> Optional[int]:
    if today is None:
        return None
    if isinstance(today, int):
        return today
    if hasattr(today, "year"):
        return today.year * 10000 + today.month * 100 + today.day
    s = str(today).replace("-", "")
    if len(s) != 8 or not s.isdigit():
        raise ValueError(f"today {today!r}: use a datetime.date or YYYY-MM-DD")
    return int(s)


@dataclass
class LinkResult:
    """What :func:`link` returns; the same outputs as ``renketsu link --out DIR``.

    Tables hold strings. ``pairs``: ``id_a, id_b`` for two holders, else
    ``party_a, id_a, party_b, id_b`` (one row per linked cross-holder record pair).
    ``clusters``: ``party, id, pid`` (every accepted record; ``pid`` a random 128-bit
    pseudonym, hex, fresh on every run). ``joined``: the researcher's view, ``pid`` and the
    content columns (None from token files, which carry no content). ``pair_scores``:
    scored schemas only (match weight and probability per candidate pair above the
    threshold), else None. ``summary``: ``summary.json`` as a dict.
    ``report_html``: ``report.html`` (scored schemas), else None. ``rejects``: party →
    table ``row, id, reason, detail`` of the rows that could not be tokenized.
    """

    pairs: pa.Table
    clusters: pa.Table
    joined: Optional[pa.Table]
    pair_scores: Optional[pa.Table]
    summary: Dict[str, Any]
    report_html: Optional[str]
    rejects: Dict[str, pa.Table]
    files: Dict[str, bytes] = field(repr=False)

    @property
    def estimates(self) -> Optional[Dict[str, Any]]:
        """The scored model's estimates (``summary["scoring"]``: threshold, estimated
        precision and recall, per holder pair, the trained m/u parameters), or None for an
        exact or CLK schema."""
        return self.summary.get("scoring")

    def report(self) -> Dict[str, Any]:
        """A short account from the summary: ``links``, ``clusters`` (dict: total and by
        size), per party ``read`` = ``tokenized`` + ``rejected`` rows, and ``estimates``
        (None unless scored). ``report_html`` has the full quality report."""
        s = self.summary
        return {
            "links": s.get("links"),
            "clusters": s.get("clusters"),
            "parties": {
                p["party"]: {k: p.get(k) for k in ("read", "tokenized", "rejected")}
                for p in s.get("parties", [])
            },
            "estimates": self.estimates,
        }

    def write(self, out: Union[str, "os.PathLike[str]"]) -> None:
        """Writes the output files (as ``renketsu link`` names them) into directory ``out``."""
        d = Path(out)
        d.mkdir(parents=True, exist_ok=True)
        for name, data in self.files.items():
            (d / name).write_bytes(data)
        (d / "summary.json").write_text(json.dumps(self.summary, indent=2) + "\n")
        if self.report_html is not None:
            (d / "report.html").write_text(self.report_html)


def link(
    schema: Schema,
    inputs: Union[Mapping[str, InputLike], Sequence[Tuple[str, InputLike]]],
    *,
    key: ProjectKey,
    today: Any = None,
    threshold: Optional[float] = None,
    duplicates: Sequence[str] = (),
    id_column: Optional[str] = None,
) -> LinkResult:
    """Links two or more holders' data with ``schema``: ``renketsu link`` in process.

    ``inputs`` maps each holder (party) name to its data: a table (pyarrow, pandas, polars;
    columns as the schema names them, values as text), or a path of a CSV (UTF-8 or CP932,
    detected) or Parquet file. ``key`` is the project key (:meth:`ProjectKey.from_key_store`).
    ``today`` ("today" for refusing future birth dates; a ``datetime.date``, ``"YYYY-MM-DD"``
    or ``YYYYMMDD``; default: the current UTC date; set it for reproducible runs).
    ``threshold``: scored schemas, the match-probability threshold in (0, 1) overriding the
    schema's and the automatic one. ``duplicates``: parties whose data may hold several
    records of one person. ``id_column`` overrides the schema's.

    Runs with the GIL released. Cost grows as ``renketsu link --explain`` says.

    Raises :class:`RenketsuError` (fewer than two inputs, a missing id column, an
    undecodable input, ...), :class:`ValueError` for a bad argument, :class:`TypeError` for
    an unsupported input type.
    """
    items = list(inputs.items()) if isinstance(inputs, Mapping) else list(inputs)
    encoded = [(party, _input_bytes(party, data)) for party, data in items]
    encodings = {enc for _, (_, enc, _) in encoded}
    # The engine takes one encoding choice per run: tables are UTF-8, files are detected.
    encoding = "utf-8" if encodings == {"utf-8"} else "auto"
    out = _native.link_csv(
        schema._inner,
        key._inner,
        [(party, label, data) for party, (data, _, label) in encoded],
        today=_today(today),
        threshold=threshold,
        duplicates=list(duplicates),
        id_column=id_column,
        encoding=encoding,
        schema_path=schema.path or "",
    )
    rejects = {
        party: pa.table(
            {
                "row": pa.array([r[0] for r in rows], pa.uint64()),
                "id": pa.array([r[1] for r in rows], pa.string()),
                "reason": pa.array([r[2] for r in rows], pa.string()),
                "detail": pa.array([r[3] for r in rows], pa.string()),
            }
        )
        for party, rows in out["rejects"].items()
    }
    return _result(out, rejects)


def _result(out: Mapping[str, Any], rejects: Dict[str, pa.Table]) -> LinkResult:
    """A :class:`LinkResult` from the native module's output dict."""
    files: Dict[str, bytes] = dict(out["files"])
    return LinkResult(
        pairs=_read_csv_text(files["pairs.csv"]),
        clusters=_read_csv_text(files["clusters.csv"]),
        joined=_read_csv_text(files["joined.csv"]) if "joined.csv" in files else None,
        pair_scores=(
            _read_csv_text(files["pair_scores.csv"], text_only=False)
            if "pair_scores.csv" in files
            else None
        ),
        summary=json.loads(out["summary"]),
        report_html=out["report"],
        rejects=rejects,
        files=files,
    )


def _columns(table: pa.Table) -> Tuple[List[str], List[List[Optional[str]]]]:
    names = table.column_names
    cols = []
    for col in table.columns:
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            col = col.cast(pa.string())
        cols.append(col.to_pylist())
    return names, cols


def tokenize(
    schema: Schema, data: TableLike, *, key: ProjectKey, today: Any = None
) -> pa.Table:
    """Exact tokens of each row (SPEC.md §4.2), as ``renketsu tokenize --key-store`` makes.

    ``data``: a table with the schema's identifier columns (and its id column). Returns a
    table with one row per token: ``row`` (uint64, 0-based row of ``data``), ``id``
    (string, the row's id), ``recipe`` (string, recipe name), ``token`` (binary, 32 bytes:
    HMAC-SHA256 under the recipe's key). A row whose fields do not make a recipe has no
    token for it. Tokens are secret-equivalent linkage keys: keep them as confidential as
    the identifiers.

    Raises :class:`RenketsuError` when the table makes none of the schema's recipes.
    """
    table = _to_table(data)
    names, cols = _columns(table)
    rows, recipes, tokens = _native.tokenize_columns(
        schema._inner, key._inner, names, cols, today=_today(today)
    )
    id_col = schema.id_column
    ids = table.column(id_col).cast(pa.string()).to_pylist() if id_col in names else None
    return pa.table(
        {
            "row": pa.array(rows, pa.uint64()),
            "id": pa.array([ids[r] for r in rows] if ids else [None] * len(rows), pa.string()),
            "recipe": pa.array(recipes, pa.string()),
            "token": pa.array(tokens, pa.binary(32)),
        }
    )


def encode_clk(
    schema: Schema, data: TableLike, *, key: ProjectKey, today: Any = None
) -> pa.Table:
    """CLKs (SPEC.md §7) of each row, with the schema's ``[clk]`` encoding (clkhash-compatible
    or native, hardening and BLIP as configured) and keys derived from the project key.

    Returns a table with ``row`` (uint64), ``id`` (string) and ``clk`` (fixed-size binary of
    ``bits / 8`` bytes: the filter as little-endian 64-bit words, as token files store it;
    bit ``i`` is bit ``i % 64`` of word ``i // 64``). The schema's filter length in bits is
    in the table's metadata ``b"bits"``.

    Raises :class:`RenketsuError` when the schema has no ``[clk]`` section or the table makes
    none of its recipes.
    """
    table = _to_table(data)
    names, cols = _columns(table)
    bits, clks = _native.encode_clk_columns(
        schema._inner, key._inner, names, cols, today=_today(today)
    )
    id_col = schema.id_column
    ids = table.column(id_col).cast(pa.string()).to_pylist() if id_col in names else None
    n = len(clks)
    out = pa.table(
        {
            "row": pa.array(range(n), pa.uint64()),
            "id": pa.array(ids if ids else [None] * n, pa.string()),
            "clk": pa.array(clks, pa.binary(bits // 8)),
        }
    )
    return out.replace_schema_metadata({b"bits": str(bits).encode()})


def _pairs_csv(data: Union[TableLike, str, "os.PathLike[str]"]) -> bytes:
    if isinstance(data, (str, os.PathLike)):
        return Path(os.fspath(data)).read_bytes()
    return _csv_bytes(_to_table(data))


def evaluate(
    pairs: Union[TableLike, str, "os.PathLike[str]"],
    truth: Union[TableLike, str, "os.PathLike[str]"],
) -> Dict[str, Any]:
    """Pairwise linkage quality against ground truth, as ``renketsu eval --json``.

    ``pairs`` and ``truth``: tables (or CSV paths) with columns ``id_a, id_b`` (two holders)
    or ``party_a, id_a, party_b, id_b``, e.g. :attr:`LinkResult.pairs`. Returns a dict:
    ``true_positives``, ``false_positives``, ``false_negatives`` (ints), ``precision``,
    ``recall``, ``f1`` (floats in [0, 1]; precision is 1.0 when nothing was predicted), and
    for party-named pairs ``by_holder_pair`` (``"a|b"`` → the same measures).

    Raises :class:`RenketsuError` for a wrong header or mixed formats.
    """
    return _native.evaluate_csv(_pairs_csv(pairs), _pairs_csv(truth))
