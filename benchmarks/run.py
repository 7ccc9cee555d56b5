"""``make bench``: this project against DuckDB, scikit-learn and a naive PySpark job, side by side.

For every size (transactions), in one process and one Spark session:

1. generate the transactions as Parquet (timed, not compared);
2. the feature job (``run_feature_pipeline``: read, validate, aggregate, write Delta)
   against the same job in DuckDB on the same files, and against the naive PySpark job;
3. the training job (``run_training``: k sweep, champion refit, profiles, MLflow logging,
   registry), with its stage breakdown, against the naive k sweep on the same features;

then once, on the prepared feature matrix of the largest size (at most ``--fit-rows``
customers): each MLlib fit at a fixed k and iteration count against scikit-learn, with
the Spark input cached and not cached, and the KMeans sweep fitted sequentially and from
two driver threads. Spark's start (JVM, Delta jars) is timed on its own.

Peak memory is the machine's memory in use (total minus available), sampled every 0.2 s
during each stage; run the benchmark alone. Results: ``<out>/results.json``, ``results.md`` (the table
docs/performance.md shows) and ``results.png``.

    python benchmarks/run.py --sizes 1000000,10000000,100000000 --work /tmp/bench --out benchmarks/results
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import multiprocessing
import os
import platform
import shutil
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers  # noqa: E402
from pyspark import StorageLevel  # noqa: E402
from pyspark.ml.functions import vector_to_array  # noqa: E402

from segmentation.config import SparkConfig, load_config  # noqa: E402
from segmentation.feature_pipeline import run_feature_pipeline  # noqa: E402
from segmentation.generator import generate_transactions  # noqa: E402
from segmentation.io import write_table  # noqa: E402
from segmentation.preprocessing import drop_degenerate_columns, fit_preprocessing, resolve_feature_columns  # noqa: E402
from segmentation.snapshots import read_snapshot  # noqa: E402
from segmentation.spark import get_spark  # noqa: E402
from segmentation.training_pipeline import run_training  # noqa: E402

log = logging.getLogger("bench")
BASE = Path(__file__).resolve().parent.parent / "conf" / "base.yaml"
ALGORITHMS = ["kmeans", "bisecting_kmeans", "gaussian_mixture"]


class PeakMemory:
    """Largest amount of the machine's memory in use (GB, total minus available) while the block runs.

    Summing the resident sets of this process and its children over-counts: a child the JVM
    spawns (Hadoop's shell calls) shares the JVM's address space until it execs, and was counted
    as a second JVM (45 GB "peaks" on a 24 GB machine). The machine-wide figure cannot exceed the
    machine; the benchmark is meant to run alone, and the idle baseline is in the results' meta.
    """

    def __init__(self) -> None:
        self.peak = 0.0
        self._stop = threading.Event()

    @staticmethod
    def used() -> float:
        memory = psutil.virtual_memory()
        return (memory.total - memory.available) / 1e9

    def _poll(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, self.used())

    def __enter__(self) -> PeakMemory:
        self.peak = self.used()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.used())


class Results:
    def __init__(self, out: Path, meta: dict) -> None:
        self.out, self.meta, self.rows = out, meta, []

    def measure(self, size: int | None, stage: str, fn, **extra):
        """Run ``fn()``, record its seconds and peak memory under (size, stage); return its value."""
        log.info("size %s: %s ...", size, stage)
        with PeakMemory() as memory:
            start = time.perf_counter()
            value = fn()
            seconds = time.perf_counter() - start
        self.add(size, stage, seconds, peak_gb=round(memory.peak, 2), **extra)
        return value

    def add(self, size: int | None, stage: str, seconds: float, **extra) -> None:
        row = {"size": size, "stage": stage, "seconds": round(seconds, 2), **extra}
        self.rows.append(row)
        log.info("%s", row)
        self.save()

    def seconds(self, size: int | None, stage: str) -> float | None:
        return next((r["seconds"] for r in self.rows if r["size"] == size and r["stage"] == stage), None)

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "results.json").write_text(json.dumps({"meta": self.meta, "rows": self.rows}, indent=1))


def bench_config(work: Path, n: int, args, extra: dict | None = None):
    """The base config for size ``n`` under ``work``; ``extra`` overrides further keys (dotted)."""
    root = work / str(n)
    sets = {
        "generator.n_transactions": n,
        "generator.transactions.path": root / "tx",
        "generator.transactions.format": "parquet",
        "input.transactions.path": root / "tx",
        "input.transactions.format": "parquet",
        "features.output.path": root / "features",
        "features.quarantine.path": root / "quarantine",
        "features.quality.path": root / "quality",
        "training.k_min": args.k_min,
        "training.k_max": args.k_max,
        "training.gaussian_mixture.max_iter": args.max_iter,
        "training.selection.sample_size": args.sample_size,
        "training.assignments.path": root / "assignments",
        "profiles.output.path": root / "profiles",
        "profiles.report_dir": root / "reports",
        "mlflow.tracking_uri": f"sqlite:///{work / 'mlflow.db'}",
        "mlflow.artifact_location": work / "mlartifacts",
        "mlflow.experiment": f"bench-{n}",
        "mlflow.registered_model": f"bench-segments-{n}",
        **(extra or {}),
    }
    return load_config([BASE], [f"{k}={v}" for k, v in sets.items()])


FEATURE_STAGES = ("generate", "features", "features_duckdb", "features_naive")


def forget_model(cfg) -> None:
    """Delete the size's registered model, so that its training is a first one as on 2026-12-02.

    The size's tables are removed before each run but the MLflow store is shared: without this, a
    second run retrains against the first's champion, which adds the stable-id matching and the
    comparison with it (at 100M on 2026-12-05: training 791.0 s as a retrain, 540.3 s as a first run).
    """
    import mlflow

    client = mlflow.MlflowClient(cfg.mlflow.tracking_uri)
    if client.search_registered_models(f"name = '{cfg.mlflow.registered_model}'"):
        client.delete_registered_model(cfg.mlflow.registered_model)


def run_size(spark, results: Results, work: Path, n: int, args) -> None:
    cfg = bench_config(work, n, args)
    tx = str(cfg.input.transactions.path)
    features = Path(cfg.features.output.path)
    reuse = args.reuse_input and (Path(tx) / "_SUCCESS").exists()
    resume = args.reuse_features and (features / "_delta_log").is_dir()
    if args.reuse_features and not resume:
        raise SystemExit(f"--reuse-features: no features table at {features}; run without it first")
    keep = {Path(tx), features} if resume else {Path(tx)} if reuse else set()
    for output in (work / str(n)).glob("*"):
        if output not in keep:
            shutil.rmtree(output) if output.is_dir() else output.unlink()
    if resume:  # the feature stages' rows come from the earlier results file (see main)
        log.info("size %s: reusing the features in %s", n, features)
    else:
        run_feature_stages(spark, results, work, n, cfg, reuse, args)

    forget_model(cfg)
    training = results.measure(n, "training", lambda: run_training(spark, cfg))
    for stage, seconds in training.seconds.items():
        results.add(n, f"training.{stage}", seconds)
    if results.seconds(n, "features") is not None:
        results.add(n, "pipeline", results.seconds(n, "features") + results.seconds(n, "training"))

    if n <= args.naive_max:
        snapshot, _ = read_snapshot(spark, cfg.features.output, cfg.training.as_of)
        columns = drop_degenerate_columns(snapshot, resolve_feature_columns(snapshot, cfg.training))
        ks = range(args.k_min, args.k_max + 1)
        per_fit = results.measure(n, "sweep_naive", lambda: peers.naive_spark_sweep(
            spark, snapshot, columns, ALGORITHMS, ks, args.max_iter, cfg.training.seed))  # fmt: skip
        results.rows[-1]["fits"] = len(per_fit)


def run_feature_stages(spark, results: Results, work: Path, n: int, cfg, reuse: bool, args) -> None:
    tx = str(cfg.input.transactions.path)
    if reuse:  # the generator is seeded: the same size gives the same files
        log.info("size %s: reusing the transactions in %s", n, tx)
    else:
        results.measure(n, "generate", lambda: write_table(generate_transactions(spark, cfg.generator),
                                                           cfg.generator.transactions))  # fmt: skip
    report = results.measure(n, "features", lambda: run_feature_pipeline(spark, cfg))
    results.rows[-1]["customers"] = report.customers
    fcfg = cfg.features
    cap = duckdb_memory(args.duckdb_memory)
    results.measure(n, "features_duckdb", lambda: duckdb_in_child(
        f"{tx}/*.parquet", work / str(n) / "duckdb", report.as_of, fcfg.top_categories, fcfg.max_channels,
        cap), memory_limit=cap)  # fmt: skip
    if n <= args.naive_max:
        results.measure(n, "features_naive", lambda: peers.naive_spark_features(
            spark, tx, str(work / str(n) / "naive_features"), report.as_of))  # fmt: skip


def duckdb_memory(setting: str, most_gb: int = 8, headroom_gb: int = 3) -> str:
    """DuckDB's ``memory_limit`` for this run: ``setting`` as given, or for ``auto`` what the machine has left.

    ``auto`` is ``most_gb`` GB, or the machine's available memory less ``headroom_gb`` if that is smaller
    (at least 2 GB). Spark's JVM keeps the heap it grew in the feature job while DuckDB runs: after
    the 100M feature job of 2026-11-25 the machine had 18.2 GB in use of its 24 GiB, so a fixed 8 GB
    cap on top of it leaves nothing for the kernel.
    """
    if setting != "auto":
        return setting
    available = psutil.virtual_memory().available / 2**30
    return f"{max(2, min(most_gb, int(available - headroom_gb)))}GB"


def duckdb_in_child(*args) -> int:
    """``peers.duckdb_features`` in a child process, so its memory goes back to the machine when it ends.

    In this process DuckDB's buffers outlived the query and sat next to Spark's 12 GB heap: at 100M
    the machine reached 24.3 GB in use of its 24 GiB with training still to come.
    """
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(peers.duckdb_features, *args).result()


def prepared_features(spark, work: Path, n: int, args):
    """Size ``n``'s feature snapshot prepared as the training job prepares it: (``features`` column, feature count)."""
    cfg = bench_config(work, n, args)
    snapshot, _ = read_snapshot(spark, cfg.features.output, cfg.training.as_of)
    columns = drop_degenerate_columns(snapshot, resolve_feature_columns(snapshot, cfg.training))
    return fit_preprocessing(snapshot, columns, cfg.training).transform(snapshot).select("features"), len(columns)


def prepared_matrix(spark, work: Path, n: int, args):
    """The largest size's prepared feature vectors, at most ``fit_rows`` customers, on disk as Parquet."""
    prepared, n_features = prepared_features(spark, work, n, args)
    total = prepared.count()
    if total > args.fit_rows:
        prepared = prepared.sample(False, args.fit_rows / total, 1).limit(args.fit_rows)
    return write_matrix(spark, prepared, work / "fit_matrix"), n_features


def write_matrix(spark, prepared, path: Path) -> str:
    """Write ``prepared`` as Parquet in as many files as shuffle partitions, so the fits read it on every core.

    Until 2026-12-02 the sampled matrix went out as written: ``limit`` leaves one partition, so one
    file with one row group, which Spark reads as one partition. The 1M-customer fits of 2026-11-25
    ran on one core: KMeans 33.4 s on that layout against 18.5 s on four files (952k rows, 2026-12-02).
    """
    prepared.repartition(int(spark.conf.get("spark.sql.shuffle.partitions"))).write.mode("overwrite").parquet(str(path))
    return str(path)


def cached_matrix(spark, path: str):
    """The prepared feature matrix at ``path``, persisted, and its row count."""
    data = spark.read.parquet(path).persist(StorageLevel.MEMORY_AND_DISK)
    return data, data.count()


def run_fits(spark, results: Results, work: Path, n: int, args) -> None:
    fits_on(spark, results, *prepared_matrix(spark, work, n, args), args)


def fits_on(spark, results: Results, path: str, n_features: int, args) -> None:
    """The fixed-k fits against scikit-learn and the KMeans sweep from one and two threads, on ``path``."""
    uncached = spark.read.parquet(path)
    cached, rows = cached_matrix(spark, path)
    x = np.asarray(cached.select(vector_to_array("features").alias("v")).toPandas()["v"].tolist(), dtype=np.float64)
    shape = {"rows": rows, "features": n_features, "k": args.fit_k, "max_iter": args.max_iter,
             "partitions": cached.rdd.getNumPartitions()}  # fmt: skip
    for algorithm in ALGORITHMS:
        results.add(None, f"fit.{algorithm}.spark_cached",
                    peers.spark_fit(algorithm, cached, args.fit_k, args.max_iter, 7), **shape)  # fmt: skip
        results.add(None, f"fit.{algorithm}.spark_uncached",
                    peers.spark_fit(algorithm, uncached, args.fit_k, args.max_iter, 7), **shape)  # fmt: skip
        results.add(None, f"fit.{algorithm}.sklearn",
                    peers.sklearn_fit(algorithm, x, args.fit_k, args.max_iter, 7), **shape)  # fmt: skip

    # Fitting the sweep's candidates from two driver threads instead of one after the other.
    sample = cached.sample(False, min(1.0, args.sample_size / rows), 3).persist()
    sample.count()
    ks = list(range(args.k_min, args.k_max + 1))

    def sweep(workers: int) -> None:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda k: peers.spark_fit("kmeans", sample, k, args.max_iter, 7), ks))

    results.measure(None, "sweep_threads.1", lambda: sweep(1), k=f"{ks[0]}..{ks[-1]}")
    results.measure(None, "sweep_threads.2", lambda: sweep(2), k=f"{ks[0]}..{ks[-1]}")
    cached.unpersist()
    sample.unpersist()


def blas(spark) -> str:
    jvm = spark.sparkContext._jvm
    return jvm.dev.ludovic.netlib.blas.BLAS.getInstance().getClass().getName()


def bench_settings(driver_memory: str = "12g") -> SparkConfig:
    """The session every benchmark script uses: local[*], no UI, quiet logs."""
    return SparkConfig(master="local[*]", app_name="segmentation-bench", driver_memory=driver_memory,
                       ui_enabled=False, log_level="ERROR")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """This script's options; the lever scripts take its defaults (``parse_args([])``) for the sizes' configs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,10000000,100000000")
    parser.add_argument("--work", type=Path, default=Path("/tmp/segmentation-bench"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--naive-max", type=int, default=10_000_000, help="largest size the naive peer runs at")
    parser.add_argument(
        "--skip-fits",
        action="store_true",
        help="leave out the fixed-k fits against scikit-learn (re-measuring the sizes only)",
    )
    parser.add_argument("--fit-rows", type=int, default=1_000_000)
    parser.add_argument("--fit-k", type=int, default=8)
    parser.add_argument("--max-iter", type=int, default=20)
    parser.add_argument("--k-min", type=int, default=2)
    parser.add_argument("--k-max", type=int, default=8)
    parser.add_argument("--sample-size", type=int, default=50_000)
    parser.add_argument("--driver-memory", default="12g")
    parser.add_argument("--reuse-input", action="store_true",
                        help="keep an earlier run's transactions for the same size (seeded: identical)")  # fmt: skip
    parser.add_argument("--reuse-features", action="store_true",
                        help="start each size at training, on an earlier run's features table; the feature "
                             "stages' rows are taken from <out>/results.json")  # fmt: skip
    parser.add_argument("--duckdb-memory", default="auto",
                        help="DuckDB's memory_limit (for example 8GB); auto: 8GB, or less if the machine has less "
                             "left beside the Spark driver's heap")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("py4j", "mlflow", "alembic", "segmentation"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    sizes = [int(s) for s in args.sizes.split(",")]
    meta = {
        "date": dt.date.today().isoformat(),
        "machine": f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, {platform.platform()}",
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    meta["baseline_used_gb"] = round(PeakMemory.used(), 2)
    results = Results(args.out, meta)
    earlier = args.out / "results.json"
    if args.reuse_features and earlier.exists():
        before = json.loads(earlier.read_text())
        results.rows += [r for r in before["rows"] if r["stage"] in FEATURE_STAGES and r["size"] in sizes]
        meta["feature_stages_measured"] = before["meta"]["date"]
    args.work.mkdir(parents=True, exist_ok=True)
    spark = results.measure(None, "spark_start", lambda: get_spark(bench_settings(args.driver_memory)))
    meta["spark"] = spark.version
    meta["shuffle_partitions"] = spark.conf.get("spark.sql.shuffle.partitions")
    meta["blas"] = blas(spark)
    for n in sizes:
        run_size(spark, results, args.work, n, args)
    if not args.skip_fits:
        run_fits(spark, results, args.work, max(sizes), args)
    from report import write_report

    write_report(results.out, meta, results.rows)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
