"""renketsu.spark: the linkage unit's side of a scored job on Apache Spark.

Inputs are the holders' token files (``renketsu tokenize``, version 2 with comparison
features, or the files a linkage unit received); the output is what ``renketsu link --input
party=file.tokens …`` writes: the same ``pairs.csv``, clusters and summary (a
:class:`renketsu.LinkResult`). The work is split so that the parts that grow with the data
run on the cluster and the rest is the engine's own code:

* **Candidate pairs** (SPEC.md §9.2) — Spark SQL. The blocking keys ``(key, record,
  holder)`` are grouped by key; a key whose group has more than ``max_block`` entries, or
  more than ``max_block_pairs`` cross-holder pairs (``((Σ n_h)² − Σ n_h²) / 2``), is skipped
  and accounted to its recipe; the other groups are self-joined on the key (records of
  different holders, ``a < b``) and the pairs made distinct. This is the shuffle-heavy step.
* **Comparison vectors** (§9.3) — ``mapInArrow`` on the executors: each Python worker loads
  the comparison features of the token files once (:class:`renketsu._native.Comparer`, the
  engine's own compare) and turns batches of pairs into pattern codes and term-frequency
  bits. The pairs and their vectors stay on the cluster (persisted).
* **Pattern counts** — each batch's groups (holder pair, pattern code, term-frequency bits)
  added up by a ``GROUP BY``: all the fit, the estimated precision/recall curve and the
  threshold need of the candidates (SPEC.md §9.6.1).
* **Scores and links** — the model's weights applied on the executors (``mapInArrow``):
  only the links above the threshold, and the count of vetoed ones, reach the driver.
* **Totals for the estimates** (§9.4) — with the clusters' labels broadcast, each batch
  sums per holder pair the matches the clusters miss; the driver adds the sums up.
* **Connected components** of the links above the threshold — iterative joins (label
  propagation to the smallest record), then **guarded clustering per component** —
  ``groupBy(component).applyInArrow`` running the engine's guarded clustering (SPEC.md
  §9.5) on each component's links on the executors (the guard never looks outside a
  component, so the clusters are the engine's).
* **The rest on the driver**, by the engine (``LinkPlan::run_with``): the training record
  sample, u from random pairs (their membership in the candidates by a join), EM over the
  pattern counts, the threshold and the summary. The engine calls back into
  :class:`SparkPairStage` for the steps above, so the result is the same as ``renketsu
  link`` on the same token files, pair for pair and cluster for cluster.

The driver's memory grows with the records (it reads the token files' blocking keys and
features, and holds a cluster label per record), the patterns and the links, not with the
candidate pairs. The token files must be readable at the same path on the driver and every
executor (a shared file system, or ``SparkContext.addFile``).

Security (SPEC.md §1.1): shuffle files, spilled blocks and the traffic between executors
hold tokens and comparison CLKs, which are open to frequency attacks. :func:`session` and
the shipped ``spark-defaults.conf`` turn on ``spark.authenticate``,
``spark.network.crypto.enabled`` and ``spark.io.encryption.enabled``; a cluster running
this job belongs inside the linkage unit's trust boundary.

A session::

    import renketsu, renketsu.spark
    spark = renketsu.spark.session("local[2]")
    schema = renketsu.Schema.from_toml("schemas/ndb.toml")
    result = renketsu.spark.link(
        spark, schema, {"ehr": "ehr.tokens", "ndb": "ndb.tokens", "kaigo": "kaigo.tokens"})
    result.write("out/")            # pairs.csv, clusters.csv, summary.json, report.html
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import pyarrow as pa
import pyarrow.compute as pc

from . import LinkResult, Schema, _native, _result, _today, _token_inputs

__all__ = ["SECURE_CONF", "SparkPairStage", "link", "session", "spark_defaults_path"]

#: The Spark settings every renketsu job must run with (the shipped spark-defaults.conf):
#: RPC authentication with a shared secret, AES encryption of RPC traffic (blocks of
#: tokens between executors) and of local shuffle and spill files.
SECURE_CONF: Dict[str, str] = {
    "spark.authenticate": "true",
    "spark.network.crypto.enabled": "true",
    "spark.io.encryption.enabled": "true",
}

#: Settings for tests and small local runs (not security settings).
LOCAL_CONF: Dict[str, str] = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "4",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.maxRecordsPerBatch": "65536",
}


def spark_defaults_path() -> Path:
    """The shipped ``spark-defaults.conf`` (:data:`SECURE_CONF` in Spark's file format), for
    ``spark-submit --properties-file``."""
    return Path(__file__).with_name("spark-defaults.conf")


def session(master: Optional[str] = "local[2]", app_name: str = "renketsu", **conf: str) -> Any:
    """A :class:`pyspark.sql.SparkSession` with :data:`SECURE_CONF` (always) and, for a
    ``local[…]`` master, :data:`LOCAL_CONF`; ``conf`` adds or overrides other settings (a
    key with dots is given as a dict: ``session(**{"spark.driver.memory": "4g"})``).

    ``master=None`` leaves the master to ``spark-submit``. Python workers run this
    interpreter (``PYSPARK_PYTHON`` defaults to :data:`sys.executable`). Raises
    :class:`ValueError` if ``conf`` tries to turn a :data:`SECURE_CONF` setting off.
    """
    from pyspark.sql import SparkSession

    for k, v in conf.items():
        if k in SECURE_CONF and v != SECURE_CONF[k]:
            raise ValueError(f"{k}={v}: renketsu jobs run with {k}={SECURE_CONF[k]}")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    b = SparkSession.builder.appName(app_name)
    if master is not None:
        b = b.master(master)
    settings = dict(SECURE_CONF)
    if master is not None and master.startswith("local"):
        settings.update(LOCAL_CONF)
    settings.update(conf)
    for k, v in settings.items():
        b = b.config(k, v)
    return b.getOrCreate()


def _le_bytes(arr: Union[pa.Array, pa.ChunkedArray], typ: pa.DataType) -> bytes:
    """The values of a null-free integer or float array as little-endian bytes of ``typ``."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.type != typ:
        arr = pc.cast(arr, typ)
    if arr.null_count:
        raise ValueError("unexpected nulls")
    w = typ.bit_width // 8
    return arr.buffers()[1].to_pybytes()[arr.offset * w : (arr.offset + len(arr)) * w]


def _from_le(data: bytes, typ: pa.DataType) -> pa.Array:
    w = typ.bit_width // 8
    return pa.Array.from_buffers(typ, len(data) // w, [None, pa.py_buffer(data)])


_COMPARERS: Dict[Tuple[str, Tuple[str, ...]], Any] = {}


def _comparer(schema_text: str, paths: Tuple[str, ...]) -> Any:
    """The worker's :class:`renketsu._native.Comparer` for these token files (loaded once
    per Python worker process)."""
    k = (schema_text, paths)
    if k not in _COMPARERS:
        _COMPARERS.clear()
        schema = _native.Schema.from_toml_text(schema_text)
        _COMPARERS[k] = _native.Comparer(schema, list(paths))
    return _COMPARERS[k]


def _compared_args(rb: pa.RecordBatch) -> Tuple[bytes, bytes, bytes, bytes]:
    """A batch of compared pairs as the worker's functions take it."""
    return (
        _le_bytes(rb.column("a"), pa.uint32()),
        _le_bytes(rb.column("b"), pa.uint32()),
        _le_bytes(rb.column("code"), pa.uint32()),
        _le_bytes(rb.column("tf_bits"), pa.float32()),
    )


#: A worker's per-job state (a run's totals, a sample's pair index), built from broadcast
#: bytes once per Python worker process.
_TOTALS: Dict[Tuple[Any, ...], Any] = {}


class SparkPairStage:
    """The pair stage the engine calls back (Rust trait ``PairStage``), keeping the candidate
    pairs on the cluster (SPEC.md §9.6.1): the engine receives only aggregates.

    * ``candidates(set, …)``: the pairs of a Spark SQL self-join of the blocking keys, then
      their comparison vectors by ``mapInArrow``, persisted as the table ``(a, b, code,
      tf_bits)`` of the pair ``set`` (``"all"`` or ``"training"``); returns the counts only.
    * ``groups(set)``: the pattern groups (holder pair, code, term-frequency bits) by a
      ``GROUP BY`` of the batches' partial groups: EM's input, the curve and the threshold.
    * ``contains(set, a, b)``: which of the u sample's random pairs are candidates (a
      left-semi join).
    * ``select_links(params)``: the links above the threshold, made on the executors with
      the model's weights.
    * ``totals(params, labels, cluster_holders)``: per holder pair, the sums the estimates
      need given the clusters (labels broadcast to the executors).
    * ``cluster(…)``: connected components and guarded clustering per component.

    ``spark``: a session (:func:`session`). ``schema_text``: the schema's TOML. ``paths``:
    the token files in holder order (readable at these paths on every executor).
    ``partitions``: partitions of the pair table (default: Spark's default parallelism ×
    2).

    After a run, :attr:`jobs` lists what each callback did (``("candidates", set, keys,
    pairs)``, ``("groups", set, groups)``, ``("contains", set, asked)``, ``("select_links",
    links)``, ``("totals", holder pairs)``, ``("cluster", links, components, label-propagation
    rounds)``) and :attr:`pattern_counts` the distinct pattern codes of all candidates with
    their counts, counted by a Spark ``GROUP BY``.
    """

    def __init__(
        self, spark: Any, schema_text: str, paths: Sequence[str], partitions: Optional[int] = None
    ) -> None:
        self.spark = spark
        self.schema_text = schema_text
        self.paths = tuple(str(p) for p in paths)
        self.partitions = partitions or max(2, spark.sparkContext.defaultParallelism * 2)
        self.jobs: List[Tuple[Any, ...]] = []
        self.pattern_counts: Dict[int, int] = {}
        self._compared: Dict[str, Any] = {}

    def close(self) -> None:
        """Drops the persisted pair tables."""
        for df in self._compared.values():
            df.unpersist()
        self._compared.clear()

    def candidates(
        self,
        pair_set: str,
        keys: bytes,
        records: bytes,
        offsets: List[int],
        max_block: int,
        max_block_pairs: int,
    ) -> Dict[str, Any]:
        """Candidate pairs of the blocking keys (``keys``: 32 bytes each; ``records``: their
        global record indices, ``u32`` LE), holders from ``offsets``, compared on the
        executors and kept as the pair set ``pair_set``. Returns the engine's
        ``CandidateStats`` as a dict (``keys``, ``largest_group``, ``skipped_groups``,
        ``pairs``, ``dropped``: list of ``(recipe, groups, cross-holder pairs)``)."""
        from pyspark.sql import functions as F

        n = len(records) // 4
        g = _from_le(records, pa.uint32())
        holder = pc.multiply(g, 0).cast(pa.int32())
        for off in offsets[1:]:
            holder = pc.add(holder, pc.greater_equal(g, off).cast(pa.int32()))
        key = pa.Array.from_buffers(pa.binary(32), n, [None, pa.py_buffer(keys)]).cast(pa.binary())
        table = pa.table({"key": key, "g": g.cast(pa.int64()), "h": holder})
        spark = self.spark
        rows = spark.createDataFrame(table)
        per = rows.groupBy("key", "h").agg(F.count(F.lit(1)).alias("c"))
        grp = per.groupBy("key").agg(
            F.sum("c").alias("n"), F.sum(F.col("c") * F.col("c")).alias("sq")
        )
        grp = grp.withColumn("cross", F.expr("CAST((n * n - sq) DIV 2 AS BIGINT)")).withColumn(
            "skip",
            (F.col("n") >= 2)
            & ((F.col("n") > F.lit(max_block)) | (F.col("cross") > F.lit(max_block_pairs))),
        )
        grp = grp.persist()
        try:
            summary = grp.agg(
                F.count(F.lit(1)).alias("keys"),
                F.max("n").alias("largest"),
                F.sum(F.col("skip").cast("long")).alias("skipped"),
            ).collect()[0]
            # The recipe of a key is its last byte (tokenlink::block_key).
            dropped = (
                grp.where("skip")
                .select(
                    F.conv(F.hex(F.substring("key", 32, 1)), 16, 10).cast("int").alias("recipe"),
                    "cross",
                )
                .groupBy("recipe")
                .agg(F.count(F.lit(1)).alias("groups"), F.sum("cross").alias("pairs"))
                .orderBy("recipe")
                .collect()
            )
            kept = rows.join(grp.where("n >= 2 AND NOT skip").select("key"), "key")
            x, y = kept.alias("x"), kept.alias("y")
            pairs = (
                x.join(
                    y,
                    (F.col("x.key") == F.col("y.key"))
                    & (F.col("x.g") < F.col("y.g"))
                    & (F.col("x.h") != F.col("y.h")),
                )
                .select(F.col("x.g").alias("a"), F.col("y.g").alias("b"))
                .distinct()
            )
            compared = self._compare(pairs).persist()
            count = compared.count()
        finally:
            grp.unpersist()
        old = self._compared.pop(pair_set, None)
        if old is not None:
            old.unpersist()
        self._compared[pair_set] = compared
        stats = {
            "keys": int(summary["keys"] or 0),
            "largest_group": int(summary["largest"] or 0),
            "skipped_groups": int(summary["skipped"] or 0),
            "pairs": count,
            "dropped": [(int(r["recipe"]), int(r["groups"]), int(r["pairs"])) for r in dropped],
        }
        self.jobs.append(("candidates", pair_set, n, count))
        return stats

    def _compare(self, pairs: Any) -> Any:
        """The pairs ``(a, b)`` with their comparison vectors, made on the executors by the
        engine's compare (``mapInArrow``): ``(a, b, code, tf_bits)``."""
        schema_text, paths = self.schema_text, self.paths

        def compare_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            comparer = _comparer(schema_text, paths)
            for rb in batches:
                codes, bits = comparer.compare(
                    _le_bytes(rb.column("a"), pa.uint32()), _le_bytes(rb.column("b"), pa.uint32())
                )
                yield pa.RecordBatch.from_arrays(
                    [
                        rb.column("a"),
                        rb.column("b"),
                        _from_le(codes, pa.uint32()).cast(pa.int64()),
                        _from_le(bits, pa.float32()),
                    ],
                    names=["a", "b", "code", "tf_bits"],
                )

        return pairs.repartition(self.partitions).mapInArrow(
            compare_batches, "a long, b long, code long, tf_bits float"
        )

    def groups(self, pair_set: str) -> Tuple[bytes, bytes, bytes, bytes, bytes]:
        """The pattern groups of the pair set: each batch's partial groups (holders, code,
        term-frequency bits, count) made on the executors, added up by ``GROUP BY``.
        Returns the columns ``ha``, ``hb``, ``code``, ``bits`` (``u32`` LE; bits as their
        ``f32`` pattern) and ``count`` (``u64`` LE)."""
        from pyspark.sql import functions as F

        schema_text, paths = self.schema_text, self.paths

        def group_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            comparer = _comparer(schema_text, paths)
            for rb in batches:
                cols = comparer.groups(*_compared_args(rb))
                yield pa.RecordBatch.from_arrays(
                    [_from_le(c, pa.uint32()).cast(pa.int64()) for c in cols[:4]]
                    + [_from_le(cols[4], pa.uint64()).cast(pa.int64())],
                    names=["ha", "hb", "code", "bits", "count"],
                )

        out = (
            self._compared[pair_set]
            .mapInArrow(group_batches, "ha long, hb long, code long, bits long, count long")
            .groupBy("ha", "hb", "code", "bits")
            .agg(F.sum("count").alias("count"))
            .toArrow()
        )
        if pair_set == "all":
            counts: Dict[int, int] = {}
            for code, c in zip(out.column("code").to_pylist(), out.column("count").to_pylist()):
                counts[code] = counts.get(code, 0) + c
            self.pattern_counts = counts
        self.jobs.append(("groups", pair_set, out.num_rows))
        return (
            _le_bytes(out.column("ha"), pa.uint32()),
            _le_bytes(out.column("hb"), pa.uint32()),
            _le_bytes(out.column("code"), pa.uint32()),
            _le_bytes(out.column("bits"), pa.uint32()),
            _le_bytes(out.column("count"), pa.uint64()),
        )

    def contains(self, pair_set: str, a: bytes, b: bytes) -> bytes:
        """For each pair ``(a[i], b[i])`` (``u32`` LE), whether it is a candidate of the pair
        set: one byte each (1 or 0). The asked pairs go to the executors (a broadcast
        :class:`renketsu._native.PairIndex`), each batch of candidates answers with those it
        holds, and only these come back."""
        ua, ub = _from_le(a, pa.uint32()), _from_le(b, pa.uint32())
        n = len(ua)
        keys = pc.add(pc.shift_left(ua.cast(pa.uint64()), 32), ub.cast(pa.uint64()))
        sc = self.spark.sparkContext
        bk = sc.broadcast(_le_bytes(keys, pa.uint64()))
        job = ("contains", uuid.uuid4().hex)

        def match_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            if job not in _TOTALS:
                _TOTALS.clear()
                _TOTALS[job] = _native.PairIndex(bk.value)
            index = _TOTALS[job]
            for rb in batches:
                found = index.matches(
                    _le_bytes(rb.column("a"), pa.uint32()), _le_bytes(rb.column("b"), pa.uint32())
                )
                yield pa.RecordBatch.from_arrays(
                    [_from_le(found, pa.uint64()).cast(pa.int64())], names=["key"]
                )

        try:
            found = (
                self._compared[pair_set]
                .select("a", "b")
                .mapInArrow(match_batches, "key long")
                .toArrow()
            )
        finally:
            bk.unpersist()
        hit = set(found.column("key").to_pylist())
        flags = bytes(1 if k in hit else 0 for k in keys.cast(pa.int64()).to_pylist())
        self.jobs.append(("contains", pair_set, n))
        return flags

    def select_links(self, params: Tuple[Any, ...]) -> Tuple[bytes, bytes, bytes, int]:
        """The links of all candidates under ``params`` (``((prior, terms), threshold,
        veto)`` from the engine), made on the executors: their ends (``u32`` LE), match
        weights (``f32`` LE) and the number of pairs above the threshold a veto refused."""
        schema_text, paths = self.schema_text, self.paths

        def select_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            comparer = _comparer(schema_text, paths)
            for rb in batches:
                x, y, w, vetoed = comparer.select_links(*_compared_args(rb), params)
                la = _from_le(x, pa.uint32()).cast(pa.int64())
                # The batch's vetoed count rides on a row of its own (a = -1).
                yield pa.RecordBatch.from_arrays(
                    [
                        pa.concat_arrays([la, pa.array([-1], pa.int64())]),
                        pa.concat_arrays(
                            [_from_le(y, pa.uint32()).cast(pa.int64()), pa.array([-1], pa.int64())]
                        ),
                        pa.concat_arrays([_from_le(w, pa.float32()), pa.array([0.0], pa.float32())]),
                        pa.array([0] * len(la) + [vetoed], pa.int64()),
                    ],
                    names=["a", "b", "w", "vetoed"],
                )

        out = (
            self._compared["all"]
            .mapInArrow(select_batches, "a long, b long, w float, vetoed long")
            .toArrow()
        )
        is_link = pc.greater_equal(out.column("a"), 0)
        links = out.filter(is_link)
        vetoed = int(pc.sum(out.column("vetoed")).as_py() or 0)
        self.jobs.append(("select_links", links.num_rows))
        return (
            _le_bytes(links.column("a"), pa.uint32()),
            _le_bytes(links.column("b"), pa.uint32()),
            _le_bytes(links.column("w"), pa.float32()),
            vetoed,
        )

    def totals(
        self, params: Tuple[Any, ...], labels: bytes, cluster_holders: bytes
    ) -> List[Tuple[int, int, Optional[float], Optional[Tuple[float, float]]]]:
        """Per holder pair, the partial sums the estimates need (SPEC.md §9.4), made on the
        executors with the clusters' ``labels`` (``u32`` LE per record) and
        ``cluster_holders`` (``u64`` LE per cluster) broadcast: rows ``(i, j, missed,
        (vetoed free, vetoed taken))`` of every batch, for the engine to add up."""
        sc = self.spark.sparkContext
        bl, bh = sc.broadcast(labels), sc.broadcast(cluster_holders)
        schema_text, paths = self.schema_text, self.paths
        job = ("totals", uuid.uuid4().hex)

        def total_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            comparer = _comparer(schema_text, paths)
            if job not in _TOTALS:
                _TOTALS.clear()
                _TOTALS[job] = comparer.totals(params, bl.value, bh.value)
            totals = _TOTALS[job]
            for rb in batches:
                rows = totals.of(*_compared_args(rb))
                yield pa.RecordBatch.from_arrays(
                    [
                        pa.array([r[0] for r in rows], pa.int64()),
                        pa.array([r[1] for r in rows], pa.int64()),
                        pa.array([r[2] for r in rows], pa.float64()),
                        pa.array([None if r[3] is None else r[3][0] for r in rows], pa.float64()),
                        pa.array([None if r[3] is None else r[3][1] for r in rows], pa.float64()),
                    ],
                    names=["i", "j", "missed", "vfree", "vtaken"],
                )

        try:
            out = (
                self._compared["all"]
                .mapInArrow(
                    total_batches, "i long, j long, missed double, vfree double, vtaken double"
                )
                .toArrow()
            )
        finally:
            bl.unpersist()
            bh.unpersist()
        rows = []
        for i, j, m, f, t in zip(*(out.column(c).to_pylist() for c in out.column_names)):
            rows.append((i, j, m, None if f is None else (f, t)))
        self.jobs.append(("totals", len({(r[0], r[1]) for r in rows})))
        return rows

    def cluster(
        self, a: bytes, b: bytes, w: bytes, params: Tuple[Any, ...]
    ) -> Tuple[bytes, bytes, Tuple[int, int, int, int, int]]:
        """Clusters the links ``(a[i], b[i])`` of match weight ``w[i]`` (``u32``/``f32`` LE):
        connected components by iterative joins (each record takes the smallest record
        label among its neighbours until none changes), then each component clustered on
        the executors by the engine's guarded clustering (``applyInArrow``, one group per
        component; ``params`` from the engine: holder offsets, duplicates, guard flag,
        conflict rule, weight terms). Returns the linked records, the smallest record of
        each one's cluster (``u32`` LE) and the summed counts ``(links, merges, redundant,
        vetoed_same_holder, vetoed_conflict)``."""
        from pyspark.sql import functions as F

        table = pa.table(
            {
                "a": _from_le(a, pa.uint32()).cast(pa.int64()),
                "b": _from_le(b, pa.uint32()).cast(pa.int64()),
                "w": _from_le(w, pa.float32()),
            }
        )
        if table.num_rows == 0:
            self.jobs.append(("cluster", 0, 0, 0))
            return b"", b"", (0, 0, 0, 0, 0)
        spark = self.spark
        links = spark.createDataFrame(table).persist()
        edges = (
            links.select(F.col("a").alias("src"), F.col("b").alias("dst"))
            .union(links.select(F.col("b").alias("src"), F.col("a").alias("dst")))
            .persist()
        )
        labels = (
            edges.select(F.col("src").alias("node")).distinct()
            .withColumn("comp", F.col("node"))
            .localCheckpoint()
        )
        rounds = 0
        while True:
            rounds += 1
            heard = edges.join(labels, edges.src == labels.node).select(
                F.col("dst").alias("node"), F.col("comp")
            )
            new = (
                labels.union(heard).groupBy("node").agg(F.min("comp").alias("comp"))
                .localCheckpoint()
            )
            changed = (
                new.alias("n").join(labels.alias("o"), "node")
                .where(F.col("n.comp") != F.col("o.comp")).count()
            )
            labels = new
            if changed == 0:
                break
        edges.unpersist()
        schema_text, paths = self.schema_text, self.paths

        def cluster_component(t: pa.Table) -> pa.Table:
            comparer = _comparer(schema_text, paths)
            records, roots, counts = comparer.cluster_component(
                _le_bytes(t.column("a"), pa.uint32()),
                _le_bytes(t.column("b"), pa.uint32()),
                _le_bytes(t.column("w"), pa.float32()),
                params,
            )
            r = _from_le(records, pa.uint32()).cast(pa.int64())
            cols = {"r": r, "root": _from_le(roots, pa.uint32()).cast(pa.int64())}
            names = ("links", "merges", "redundant", "vetoed_same_holder", "vetoed_conflict")
            for name, v in zip(names, counts):
                cols[name] = pa.array([v] + [0] * (len(r) - 1), pa.int64())
            return pa.table(cols)

        out = (
            links.join(labels, links.a == labels.node)
            .select("comp", "a", "b", "w")
            .groupBy("comp")
            .applyInArrow(
                cluster_component,
                "r long, root long, links long, merges long, redundant long, "
                "vetoed_same_holder long, vetoed_conflict long",
            )
            .toArrow()
        )
        links.unpersist()
        components = labels.select("comp").distinct().count()
        counts = tuple(
            int(pc.sum(out.column(c)).as_py() or 0)
            for c in ("links", "merges", "redundant", "vetoed_same_holder", "vetoed_conflict")
        )
        self.jobs.append(("cluster", table.num_rows, components, rounds))
        return (
            _le_bytes(out.column("r"), pa.uint32()),
            _le_bytes(out.column("root"), pa.uint32()),
            counts,  # type: ignore[return-value]
        )


def link(
    spark: Any,
    schema: Schema,
    inputs: Union[Mapping[str, Union[str, "os.PathLike[str]"]], Sequence[Tuple[str, Any]]],
    *,
    today: Any = None,
    threshold: Optional[float] = None,
    duplicates: Sequence[str] = (),
    project: Optional[str] = None,
    partitions: Optional[int] = None,
    stage: Optional[SparkPairStage] = None,
) -> LinkResult:
    """Links the holders' token files on Spark as ``renketsu link --input party=path …``
    links them in one process, with the same result.

    ``schema``: a scored schema (``[scoring]``) read from a file (:meth:`Schema.from_toml`
    with a path: its SHA-256 must equal the token files' schema digest). ``inputs``: party →
    token file path, in holder order (the order fixes record numbering, as the order of
    ``--input`` does). ``today``, ``threshold``, ``duplicates`` as :func:`renketsu.link`;
    ``project``: refuse token files of another project. ``partitions``: of the comparison
    step (:class:`SparkPairStage`). ``stage``: a stage to use (and inspect afterwards).

    Returns a :class:`renketsu.LinkResult` (``rejects`` empty: token files have none).
    Raises :class:`renketsu.RenketsuError` (token files of another schema, project, token
    mode or key; an unscored schema; a failed Spark job, with Spark's message),
    :class:`ValueError` for a bad argument.
    """
    digest, pairs = _token_inputs(schema, inputs, "renketsu.spark.link")
    text = Path(str(schema.path)).read_text(encoding="utf-8")
    if stage is None:
        stage = SparkPairStage(spark, text, [p for _, p in pairs], partitions)
    try:
        out = _native.link_tokens(
            schema._inner,
            pairs,
            stage,
            digest,
            schema.path,
            today=_today(today),
            threshold=threshold,
            duplicates=list(duplicates),
            project=project,
        )
    finally:
        stage.close()
    return _result(out, {})
