"""Type stubs of the renketsu._native extension module (python/src/lib.rs).

Use the wrappers in :mod:`renketsu`; these take CSV bytes and columns of strings.
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple

class RenketsuError(Exception):
    """A schema, key store, input or run error of the renketsu engine. Messages name inputs,
    columns, rows and rules, never a record's values, a token or a key."""

class Schema:
    @staticmethod
    def from_toml_text(text: str) -> Schema: ...
    @property
    def name(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def id_column(self) -> str: ...
    @property
    def content(self) -> List[str]: ...
    @property
    def recipes(self) -> List[str]: ...
    @property
    def matcher(self) -> str: ...
    def explain(self, project: str) -> str: ...

class ProjectKey:
    @staticmethod
    def from_key_store(project: str, dir: str, kek: Optional[str] = None) -> ProjectKey: ...
    @property
    def project(self) -> str: ...

def link_csv(
    schema: Schema,
    key: ProjectKey,
    inputs: Sequence[Tuple[str, str, bytes]],
    *,
    today: Optional[int] = None,
    threshold: Optional[float] = None,
    duplicates: Sequence[str] = ...,
    id_column: Optional[str] = None,
    encoding: str = "auto",
    schema_path: str = "",
) -> Dict[str, Any]: ...
def tokenize_columns(
    schema: Schema,
    key: ProjectKey,
    header: Sequence[str],
    columns: Sequence[Sequence[Optional[str]]],
    *,
    today: Optional[int] = None,
) -> Tuple[List[int], List[str], List[bytes]]: ...
def encode_clk_columns(
    schema: Schema,
    key: ProjectKey,
    header: Sequence[str],
    columns: Sequence[Sequence[Optional[str]]],
    *,
    today: Optional[int] = None,
) -> Tuple[int, List[bytes]]: ...
def evaluate_csv(pairs: bytes, truth: bytes) -> Dict[str, Any]: ...

class Comparer:
    """The comparison features of a scored schema's token files (holders in order), loaded
    once per Spark worker; compares pairs of global record indices as the engine does."""

    def __init__(self, schema: Schema, paths: Sequence[str]) -> None: ...
    def __len__(self) -> int: ...
    def compare(self, a: bytes, b: bytes) -> Tuple[bytes, bytes]:
        """``a``, ``b``: u32 LE record indices; returns (u32 LE pattern codes, f32 LE
        term-frequency bits), one per pair."""
    def cluster_component(
        self, a: bytes, b: bytes, w: bytes, params: Tuple[Any, ...]
    ) -> Tuple[bytes, bytes, Tuple[int, int, int, int, int]]:
        """One connected component's links (u32 LE ends, f32 LE weights) clustered as the
        engine does; returns (records u32 LE, smallest record of each one's cluster u32 LE,
        (links, merges, redundant, vetoed_same_holder, vetoed_conflict))."""
    def groups(
        self, a: bytes, b: bytes, code: bytes, bits: bytes
    ) -> Tuple[bytes, bytes, bytes, bytes, bytes]:
        """A batch of compared pairs (u32 LE ends and codes, f32 LE term-frequency bits) as
        partial pattern groups: (holder a, holder b, code, bits' f32 pattern) u32 LE and
        counts u64 LE."""
    def select_links(
        self, a: bytes, b: bytes, code: bytes, bits: bytes, params: Tuple[Any, ...]
    ) -> Tuple[bytes, bytes, bytes, int]:
        """The batch's links under ``((prior, terms), threshold bits, veto)``: ends u32 LE,
        match weights f32 LE, and the number of vetoed pairs above the threshold."""
    def totals(self, params: Tuple[Any, ...], labels: bytes, cluster_holders: bytes) -> "Totals":
        """One run's totals on this worker: ``params`` from the engine, ``labels`` u32 LE per
        record, ``cluster_holders`` u64 LE per cluster."""

class PairIndex:
    """Sorted pair keys (``a·2^32 + b``, u64 LE), loaded once per Spark worker."""

    def __init__(self, keys: bytes) -> None: ...
    def __len__(self) -> int: ...
    def matches(self, a: bytes, b: bytes) -> bytes:
        """The keys (u64 LE) of the pairs ``(a[i], b[i])`` (u32 LE) that are in the index."""

class Totals:
    """The sums a run's estimates need (SPEC.md §9.4), for batches of compared pairs."""

    def of(
        self, a: bytes, b: bytes, code: bytes, bits: bytes
    ) -> List[Tuple[int, int, Optional[float], Optional[Tuple[float, float]]]]:
        """Rows ``(i, j, missed, (vetoed free, vetoed taken))`` per holder pair, ``None``
        where the batch had no such pair."""

def link_tokens(
    schema: Schema,
    inputs: Sequence[Tuple[str, str]],
    stage: Any,
    schema_digest: str,
    schema_path: str,
    *,
    today: Optional[int] = None,
    threshold: Optional[float] = None,
    duplicates: Sequence[str] = ...,
    project: Optional[str] = None,
) -> Dict[str, Any]: ...

class Linker:
    """A scored run's stages one at a time (the Python ``renketsu.Linker`` wraps it)."""

    @staticmethod
    def from_csv(
        schema: Schema,
        key: ProjectKey,
        inputs: Sequence[Tuple[str, str, bytes]],
        *,
        today: Optional[int] = None,
        threshold: Optional[float] = None,
        duplicates: Sequence[str] = ...,
        id_column: Optional[str] = None,
        encoding: str = "auto",
        schema_path: str = "",
    ) -> Linker: ...
    @staticmethod
    def from_token_files(
        schema: Schema,
        inputs: Sequence[Tuple[str, str]],
        schema_digest: str,
        schema_path: str,
        *,
        today: Optional[int] = None,
        threshold: Optional[float] = None,
        duplicates: Sequence[str] = ...,
        project: Optional[str] = None,
    ) -> Linker: ...
    def records(self) -> List[Tuple[str, List[str]]]:
        """Per holder in input order: (party, record ids)."""
    def rejects(self) -> Dict[str, List[Tuple[int, str, str, str]]]: ...
    def candidates(self) -> Tuple[bytes, bytes, Dict[str, int]]:
        """(u32 LE record a, u32 LE record b, generation counts)."""
    def fit(self) -> Dict[str, Any]: ...
    def predict(self) -> Tuple[bytes, List[bytes]]:
        """(f32 LE match weights, one u8 level array per comparison)."""
    def threshold(self, probability: Optional[float] = None) -> Dict[str, Any]: ...
    def cluster(self, threshold: Optional[float] = None) -> Dict[str, Any]: ...

def tokenize_columns_oprf(
    schema: Schema,
    project: str,
    connection: Tuple[str, str, str, str, Optional[str]],
    header: Sequence[str],
    columns: Sequence[Sequence[Optional[str]]],
    *,
    mode: str = "voprf",
    today: Optional[int] = None,
    timeout_secs: int = 60,
) -> Tuple[Tuple[List[int], List[str], List[bytes]], List[int]]:
    """((rows, recipes, 32-byte tokens), epochs) through the key custodian."""

def read_token_file(path: str) -> Tuple[str, Tuple[List[str], List[int], List[str], List[bytes]]]:
    """(header JSON, (record ids, rows, recipes, 32-byte tokens))."""
