"""The outlier flag's cost at millions of customers: DBSCAN on a sample, then the extension to everyone.

    python benchmarks/density.py [--customers 5000000] [--out benchmarks/results]

The customers are the 1M-transaction size's feature snapshot (47,639 customers; built first when
``make bench`` left none), resampled to ``--customers`` rows: copy r of a customer has every
numeric feature times (1 + 0.02 z), z standard normal (copy 0 is the customer itself), so the
shape of the data is the generator's and no two rows are equal. The snapshot is written as a Delta
table and read back, as the training job reads it. Then, timed apart, as the training job runs them
(``fit_outliers``): the preprocessing's fit and its persisted vectors (``prepare``), DBSCAN on about
``training.density.sample_size`` of them (the sample to the driver, the k-distance knee, the fit),
and the extension to every customer (the pandas UDF with a k-d tree over the core samples), counted
in one Spark job. Writes ``density.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from pyspark.sql import functions as F
from refit_sample import _features
from run import bench_config, bench_settings, build_parser

from segmentation.density import OUTLIER_COL, assign_density, fit_on_sample
from segmentation.io import table_exists, write_table
from segmentation.preprocessing import NUMERIC_TYPES
from segmentation.snapshots import persisting, read_snapshot
from segmentation.spark import get_spark
from segmentation.training_stages import prepare

log = logging.getLogger("density")
SOURCE_TRANSACTIONS = 1_000_000
JITTER = 0.02


def resampled(spark, cfg, customers: int, target) -> None:
    """Write ``customers`` rows resampled from the 1M size's snapshot to ``target`` (see the module doc)."""
    snapshot, _ = read_snapshot(spark, cfg.features.output, None)
    n = snapshot.count()
    copies = -(-customers // n)
    numeric = [f.name for f in snapshot.schema.fields if isinstance(f.dataType, NUMERIC_TYPES)]
    copy = F.col("copy")
    jitter = F.when(copy == 0, F.lit(1.0)).otherwise(1.0 + JITTER * F.randn(7))
    rows = snapshot.crossJoin(spark.range(copies).withColumnRenamed("id", "copy")).select(
        F.concat_ws("-", F.col("customer_id").cast("string"), copy.cast("string")).alias("customer_id"),
        *[(F.col(c).cast("double") * jitter).alias(c) if c in numeric else F.col(c) for c in snapshot.columns
          if c != "customer_id"],
    ).limit(customers)  # fmt: skip
    write_table(rows.repartition(max(8, customers // 250_000)), target, partition_by=["as_of"])


def timed(name: str, seconds: dict, fn):
    started = time.perf_counter()
    value = fn()
    seconds[name] = round(time.perf_counter() - started, 1)
    log.info("%s: %.1f s", name, seconds[name])
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=5_000_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/segmentation-bench"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    spark = get_spark(bench_settings())
    cfg = bench_config(args.work, SOURCE_TRANSACTIONS, build_parser().parse_args([]))
    _features(spark, cfg)
    target = cfg.features.output.model_copy(update={"path": str(args.work / f"density_{args.customers}")})
    seconds: dict[str, float] = {}
    if not table_exists(spark, target):
        timed("resample_and_write", seconds, lambda: resampled(spark, cfg, args.customers, target))
    snapshot, as_of = read_snapshot(spark, target, None)
    tcfg, dcfg = cfg.training, cfg.training.density
    with persisting() as persist:
        prepared = timed("prepare", seconds, lambda: prepare(snapshot, as_of, tcfg, persist))
        transformed = prepared.preprocessing.transform(prepared.snapshot)
        density = timed("dbscan_on_sample", seconds, lambda: fit_on_sample(
            transformed, prepared.preprocessing, dcfg, prepared.n_customers, tcfg.seed))  # fmt: skip
        flagged = timed("extend_to_everyone", seconds, lambda: assign_density(transformed, density).agg(
            F.count(F.lit(1)).alias("n"), F.sum(F.col(OUTLIER_COL).cast("int")).alias("outliers")).first())  # fmt: skip
    result = {
        "date": time.strftime("%Y-%m-%d"), "customers": prepared.n_customers, "source_transactions":
        SOURCE_TRANSACTIONS, "jitter": JITTER, "sample_rows": density.n_sample, "min_samples": density.min_samples,
        "eps": round(density.eps, 4), "clusters": density.n_clusters, "core_samples": len(density.core_labels),
        "outliers": int(flagged["outliers"]), "outlier_share": round(int(flagged["outliers"]) / flagged["n"], 5),
        "seconds": seconds,
        "extension_customers_per_second": round(flagged["n"] / seconds["extend_to_everyone"]),
    }  # fmt: skip
    log.info("%s", json.dumps(result))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "density.json").write_text(json.dumps(result, indent=1))
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
