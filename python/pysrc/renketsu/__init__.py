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
import hashlib
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
    "Custodian",
    "LinkResult",
    "Linker",
    "Model",
    "ProjectKey",
    "RenketsuError",
    "Schema",
    "encode_clk",
    "evaluate",
    "link",
    "read_token_file",
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
    csv_inputs, encoding = _csv_inputs(inputs)
    out = _native.link_csv(
        schema._inner,
        key._inner,
        csv_inputs,
        today=_today(today),
        threshold=threshold,
        duplicates=list(duplicates),
        id_column=id_column,
        encoding=encoding,
        schema_path=schema.path or "",
    )
    return _result(out, _rejects(out["rejects"]))


def _rejects(rejects: Mapping[str, Sequence[Tuple[int, str, str, str]]]) -> Dict[str, pa.Table]:
    """Per party, a table ``row, id, reason, detail`` of the native module's reject lists."""
    return {
        party: pa.table(
            {
                "row": pa.array([r[0] for r in rows], pa.uint64()),
                "id": pa.array([r[1] for r in rows], pa.string()),
                "reason": pa.array([r[2] for r in rows], pa.string()),
                "detail": pa.array([r[3] for r in rows], pa.string()),
            }
        )
        for party, rows in rejects.items()
    }


def _csv_inputs(
    inputs: Union[Mapping[str, InputLike], Sequence[Tuple[str, InputLike]]],
) -> Tuple[List[Tuple[str, str, bytes]], str]:
    """``(party, label, CSV bytes)`` of every input, and the run's encoding choice: the
    engine takes one per run (tables are UTF-8, files are detected)."""
    items = list(inputs.items()) if isinstance(inputs, Mapping) else list(inputs)
    encoded = [(party, _input_bytes(party, data)) for party, data in items]
    encodings = {enc for _, (_, enc, _) in encoded}
    return (
        [(party, label, data) for party, (data, _, label) in encoded],
        "utf-8" if encodings == {"utf-8"} else "auto",
    )


def _token_inputs(
    schema: Schema,
    inputs: Union[Mapping[str, Union[str, "os.PathLike[str]"]], Sequence[Tuple[str, Any]]],
    caller: str,
) -> Tuple[str, List[Tuple[str, str]]]:
    """The schema file's SHA-256 (token files name it) and ``(party, absolute path)`` of
    every token file, in holder order."""
    if schema.path is None:
        raise ValueError(f"{caller} needs a schema read from a file (its digest)")
    digest = hashlib.sha256(Path(schema.path).read_bytes()).hexdigest()
    items = list(inputs.items()) if isinstance(inputs, Mapping) else list(inputs)
    return digest, [(str(party), os.path.abspath(os.fspath(p))) for party, p in items]


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


@dataclass(frozen=True)
class Custodian:
    """How a holder reaches the key custodian (custodian mode, SPEC.md §4.5, §8): ``url``
    (``https://HOST:PORT``), ``ca`` (the PKI's CA certificate), ``cert`` and ``key`` (the
    holder's certificate and private key, PEM paths; the certificate's name is the party
    the custodian counts evaluations against), ``tls_domain`` (the name to check in the
    custodian's certificate; default: the URL's host), ``mode`` (``"voprf"``: the batch
    proof is verified against the published key; ``"oprf"``: no proof). Holds paths only,
    never key material."""

    url: str
    ca: Union[str, "os.PathLike[str]"]
    cert: Union[str, "os.PathLike[str]"]
    key: Union[str, "os.PathLike[str]"]
    tls_domain: Optional[str] = None
    mode: str = "voprf"
    timeout_secs: int = 60


def tokenize(
    schema: Schema,
    data: TableLike,
    *,
    key: Optional[ProjectKey] = None,
    custodian: Optional[Custodian] = None,
    project: Optional[str] = None,
    today: Any = None,
) -> pa.Table:
    """Exact tokens of each row, as ``renketsu tokenize`` makes them, in one of two modes:

    - ``key=`` (embedded mode, SPEC.md §4.2): HMAC-SHA256 under the project key;
    - ``custodian=`` and ``project=`` (custodian mode, SPEC.md §4.5): each recipe's
      canonical preimage is blinded, evaluated by the key custodian with the active epoch's
      key (RFC 9497 ristretto255-SHA512, VOPRF by default) and unblinded; the holder never
      holds a key. The tokens equal those of ``renketsu tokenize --custodian``.

    ``data``: a table with the schema's identifier columns (and its id column). Returns a
    table with one row per token: ``row`` (uint64, 0-based row of ``data``), ``id``
    (string, the row's id), ``recipe`` (string, recipe name), ``token`` (binary, 32 bytes),
    and in custodian mode ``epoch`` (uint64, the recipe key's epoch). A row whose fields do
    not make a recipe has no token for it. Tokens are linkage keys: keep them as
    confidential as the identifiers.

    Raises :class:`RenketsuError` when the table makes none of the schema's recipes, or the
    custodian call fails (unreachable, unknown project, quota, a proof that does not
    verify); :class:`ValueError` unless exactly one of ``key`` and ``custodian`` is given.
    """
    if (key is None) == (custodian is None):
        raise ValueError("give either key= (embedded mode) or custodian= (custodian mode)")
    table = _to_table(data)
    names, cols = _columns(table)
    epochs = None
    if custodian is not None:
        if not project:
            raise ValueError("custodian mode needs project=")
        (rows, recipes, tokens), epochs = _native.tokenize_columns_oprf(
            schema._inner,
            project,
            (
                custodian.url,
                os.fspath(custodian.ca),
                os.fspath(custodian.cert),
                os.fspath(custodian.key),
                custodian.tls_domain,
            ),
            names,
            cols,
            mode=custodian.mode,
            today=_today(today),
            timeout_secs=custodian.timeout_secs,
        )
    else:
        assert key is not None
        rows, recipes, tokens = _native.tokenize_columns(
            schema._inner, key._inner, names, cols, today=_today(today)
        )
    id_col = schema.id_column
    ids = table.column(id_col).cast(pa.string()).to_pylist() if id_col in names else None
    out = {
        "row": pa.array(rows, pa.uint64()),
        "id": pa.array([ids[r] for r in rows] if ids else [None] * len(rows), pa.string()),
        "recipe": pa.array(recipes, pa.string()),
        "token": pa.array(tokens, pa.binary(32)),
    }
    if epochs is not None:
        out["epoch"] = pa.array(epochs, pa.uint64())
    return pa.table(out)


def read_token_file(path: Union[str, "os.PathLike[str]"]) -> Tuple[Dict[str, Any], pa.Table]:
    """A token file (SPEC.md §5.5, as ``renketsu tokenize`` writes it) read back and checked
    (format, schema digest, trailer counts): its header as a dict (project, party, schema,
    mode, recipes with epochs, ...) and a table with one row per token: ``row`` (uint64,
    record index in file order), ``id`` (string), ``recipe`` (string), ``token`` (binary,
    32 bytes). CLKs and comparison filters are not returned.

    Raises :class:`RenketsuError` for a file that is not a valid token file.
    """
    header, (ids, rows, recipes, tokens) = _native.read_token_file(os.fspath(path))
    return json.loads(header), pa.table(
        {
            "row": pa.array(rows, pa.uint64()),
            "id": pa.array([ids[r] for r in rows], pa.string()),
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


def _u32(data: bytes) -> pa.Array:
    return pa.Array.from_buffers(pa.uint32(), len(data) // 4, [None, pa.py_buffer(data)])


class Linker:
    """A scored linkage (Fellegi–Sunter, SPEC.md §9) one stage at a time: what
    :func:`link` does in one call, with the state kept between the stages, as Splink's
    ``Linker`` or recordlinkage's ``Index``/``Compare`` steps.

    ::

        linker = renketsu.Linker(schema, {"ehr": ehr_df, "claims": claims_df}, key=key)
        linker.candidates()            # pyarrow.Table of the candidate pairs
        model = linker.fit()           # m, u, λ: the same training as renketsu link
        model.parameters               # one row per comparison level
        model.predict()                # candidate pairs with match weight and probability
        model.report()                 # threshold and estimated pairwise precision/recall
        result = linker.cluster()      # LinkResult, equal to renketsu.link(...)
        result09 = linker.cluster(threshold=0.9)

    The holders are read once (CSV inputs: checked, normalized, tokenized with ``key``;
    rejects in :attr:`rejects`), or given as token files (:meth:`from_token_files`: the
    linkage unit's view, no key). Candidates and the model are computed on first use and
    kept; :meth:`cluster` may be called at several thresholds. Each stage runs with the GIL
    released. Only scored schemas (``[scoring]``): exact and CLK schemas have no model, use
    :func:`link`.

    Raises :class:`RenketsuError` as :func:`link` does, and :class:`ValueError` for an
    unscored schema or a threshold outside (0, 1).
    """

    def __init__(
        self,
        schema: Schema,
        inputs: Union[Mapping[str, InputLike], Sequence[Tuple[str, InputLike]]],
        *,
        key: ProjectKey,
        today: Any = None,
        threshold: Optional[float] = None,
        duplicates: Sequence[str] = (),
        id_column: Optional[str] = None,
    ) -> None:
        csv_inputs, encoding = _csv_inputs(inputs)
        self.schema = schema
        self._native = _native.Linker.from_csv(
            schema._inner,
            key._inner,
            csv_inputs,
            today=_today(today),
            threshold=threshold,
            duplicates=list(duplicates),
            id_column=id_column,
            encoding=encoding,
            schema_path=schema.path or "",
        )
        self._setup()

    @classmethod
    def from_token_files(
        cls,
        schema: Schema,
        inputs: Union[Mapping[str, Union[str, "os.PathLike[str]"]], Sequence[Tuple[str, Any]]],
        *,
        today: Any = None,
        threshold: Optional[float] = None,
        duplicates: Sequence[str] = (),
        project: Optional[str] = None,
    ) -> "Linker":
        """A Linker over holders' token files (party → path, in holder order; version 2,
        made by ``renketsu tokenize`` for this scored schema, with the custodian or a key):
        what the linkage unit links, without any key. ``schema`` must be read from a file
        (its SHA-256 must equal the files' schema digest); ``project`` refuses files of
        another project."""
        digest, pairs = _token_inputs(schema, inputs, "Linker.from_token_files")
        self = cls.__new__(cls)
        self.schema = schema
        self._native = _native.Linker.from_token_files(
            schema._inner,
            pairs,
            digest,
            schema.path,
            today=_today(today),
            threshold=threshold,
            duplicates=list(duplicates),
            project=project,
        )
        self._setup()
        return self

    def _setup(self) -> None:
        holders = self._native.records()
        self.parties: List[str] = [h[0] for h in holders]
        ids: List[str] = []
        party_index: List[int] = []
        for i, (_, hids) in enumerate(holders):
            ids.extend(hids)
            party_index.extend([i] * len(hids))
        self._ids = pa.array(ids, pa.string())
        self._party = pa.DictionaryArray.from_arrays(
            pa.array(party_index, pa.int32()), pa.array(self.parties, pa.string())
        ).cast(pa.string())
        self.rejects: Dict[str, pa.Table] = _rejects(self._native.rejects())
        self._model: Optional[Model] = None

    def _pair_table(self, a: pa.Array, b: pa.Array) -> pa.Table:
        return pa.table(
            {
                "party_a": self._party.take(a),
                "id_a": self._ids.take(a),
                "party_b": self._party.take(b),
                "id_b": self._ids.take(b),
            }
        )

    def candidates(self) -> pa.Table:
        """The candidate pairs (SPEC.md §9.2: records sharing a blocking key, across
        holders; blocks over the schema's limits skipped and counted), one row per pair:
        ``party_a, id_a, party_b, id_b`` (strings). The generation counts are in the
        table's metadata (``b"pairs"``, ``b"blocking_keys"``, ``b"skipped_blocks"``)."""
        a, b, stats = self._native.candidates()
        t = self._pair_table(_u32(a), _u32(b))
        return t.replace_schema_metadata({k.encode(): str(v).encode() for k, v in stats.items()})

    def fit(self) -> "Model":
        """Fits the Fellegi–Sunter model on the candidates with the training of ``renketsu
        link`` (SPEC.md §9.3: u from random pairs, λ from the schema's deterministic rules
        under a Beta prior, m by EM per training session with the blocked comparisons
        switched off, the constrained-m check, a seeded record sample above
        ``train_records``); computed once and kept. Returns the :class:`Model`."""
        if self._model is None:
            self._model = Model(self, self._native.fit())
        return self._model

    def cluster(self, threshold: Optional[float] = None) -> LinkResult:
        """Links the pairs at or above ``threshold`` (a match probability in (0, 1); default:
        the Linker's, else the schema's, else the maximum estimated F1), applies the
        given-name veto and guarded clustering (SPEC.md §9.5), and returns the same
        :class:`LinkResult` as :func:`link` (at the same threshold: the same pairs,
        clusters and estimates; pseudonyms are fresh random values). Fits first if needed."""
        self.fit()
        out = self._native.cluster(threshold)
        return _result(out, self.rejects)

    def __repr__(self) -> str:
        return repr(self._native)


class Model:
    """A fitted Fellegi–Sunter model of a :class:`Linker` (:meth:`Linker.fit`).

    ``parameters``: a table with one row per comparison level: ``comparison``, ``level``
    (index; the last is ``missing``, the one before ``disagree``), ``label``, ``m`` and
    ``u`` (P(level | match) and P(level | non-match); None for ``missing``),
    ``match_weight`` (bits, log2 m/u; 0 for ``missing``). ``prior``: λ, the probability
    that a random cross-holder pair is a match. ``info``: the fit's account (``matches``,
    ``matches_in_candidates``, ``total_pairs``, ``iterations``, ``converged``,
    ``diagnostics``, ``random_pairs``, ``training``).
    """

    def __init__(self, linker: Linker, fitted: Dict[str, Any]) -> None:
        self._linker = linker
        self.info = {k: v for k, v in fitted.items() if k != "comparisons"}
        self.prior: float = fitted["prior"]
        self.comparisons: List[str] = [c["name"] for c in fitted["comparisons"]]
        rows: Dict[str, List[Any]] = {
            k: [] for k in ("comparison", "level", "label", "m", "u", "match_weight")
        }
        for c in fitted["comparisons"]:
            for i, lvl in enumerate(c["levels"]):
                rows["comparison"].append(c["name"])
                rows["level"].append(i)
                rows["label"].append(lvl["label"])
                rows["m"].append(lvl["m"])
                rows["u"].append(lvl["u"])
                rows["match_weight"].append(lvl["match_weight"])
        self.parameters = pa.table(
            {
                "comparison": pa.array(rows["comparison"], pa.string()),
                "level": pa.array(rows["level"], pa.uint8()),
                "label": pa.array(rows["label"], pa.string()),
                "m": pa.array(rows["m"], pa.float64()),
                "u": pa.array(rows["u"], pa.float64()),
                "match_weight": pa.array(rows["match_weight"], pa.float64()),
            }
        )

    def predict(self) -> pa.Table:
        """Every candidate pair scored: ``party_a, id_a, party_b, id_b``,
        ``match_weight`` (float32, bits: the log2 odds of a match, i.e. the prior's log
        odds plus the level weights plus term-frequency terms), ``match_probability``
        (float64, P(match | comparison vector) = 2^w / (1 + 2^w)),
        and one ``gamma_<comparison>`` column (uint8 level index) per comparison. The veto
        and clustering are not applied: see :meth:`Linker.cluster`."""
        a, b, _ = self._linker._native.candidates()
        weights, levels = self._linker._native.predict()
        w = pa.Array.from_buffers(pa.float32(), len(weights) // 4, [None, pa.py_buffer(weights)])
        t = self._linker._pair_table(_u32(a), _u32(b))
        t = t.append_column("match_weight", w)
        t = t.append_column("match_probability", _probability(w))
        for name, lv in zip(self.comparisons, levels):
            t = t.append_column(
                f"gamma_{name}",
                pa.Array.from_buffers(pa.uint8(), len(lv), [None, pa.py_buffer(lv)]),
            )
        return t

    def report(self, threshold: Optional[float] = None) -> Dict[str, Any]:
        """The model's account at a threshold (``threshold`` a match probability in (0, 1);
        default as :meth:`Linker.cluster` chooses): ``threshold`` (``match_weight`` bits,
        ``match_probability``, ``source``), the pairwise ``links`` at or above it,
        ``expected_true`` (Σ P(match) over them), estimated ``precision`` and ``recall``
        among the candidates (SPEC.md §9.4; before the veto and clustering, whose estimates
        are in :attr:`LinkResult.estimates`), ``expected_matches``, ``prior`` and the fit's
        ``info``."""
        t = self._linker._native.threshold(threshold)
        return {
            "threshold": {
                "match_weight": t["match_weight"],
                "match_probability": t["match_probability"],
                "source": t["source"],
            },
            "links": t["links"],
            "expected_true": t["expected_true"],
            "precision": t["precision"],
            "recall": t["recall"],
            "expected_matches": t["expected_matches"],
            "prior": self.prior,
            "info": self.info,
        }

    def __repr__(self) -> str:
        return (
            f"Model(comparisons={len(self.comparisons)}, prior={self.prior:.3g}, "
            f"matches={self.info['matches']:.1f}, converged={self.info['converged']})"
        )


def _probability(w: pa.Array) -> pa.Array:
    """P = 2^w / (1 + 2^w), the engine's ``probability`` of a match weight in bits."""
    import pyarrow.compute as pc

    x = pc.power(pa.scalar(2.0), pc.cast(w, pa.float64()))
    return pc.divide(x, pc.add(x, pa.scalar(1.0)))
