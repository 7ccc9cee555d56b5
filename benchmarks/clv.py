"""``make bench``: the CLV fit (jobs/train_clv.py's stages) on a feature snapshot, timed with peak memory.

Stages, each timed with the machine's peak memory in use (benchmarks/run.py's PeakMemory) and the
driver's peak resident set:

1. ``collapse``: customers to distinct (frequency, recency, T) triples and repeat customers'
   (frequency, monetary_value) pairs with counts, in Spark; only those rows reach the driver;
2. ``fit``: BG/NBD and Gamma-Gamma by weighted maximum likelihood on the driver (scipy);
3. ``score_write``: every customer's p_alive, expected purchases, expected value and CLV in Spark
   (pandas UDF for the hypergeometric term), written as Delta under ``--work``.

Without a table at ``--features`` (``make bench`` points it at the 100M run's features, 5M customers),
``--synthetic N`` writes a synthetic snapshot of N customers under ``--work`` and fits on that:
BG/NBD customers simulated per partition of ``spark.range`` (purchase rate ~ Gamma(0.25, 1/30 days),
dropout ~ Beta(0.8, 2.4), first purchase uniform over two years, spend per purchase Gamma-Gamma).

    python benchmarks/clv.py --features /tmp/segmentation-bench/100000000/features --synthetic 5000000 \\
        --out benchmarks/results
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pyspark.sql import SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402
from run import PeakMemory  # noqa: E402

from segmentation import clv  # noqa: E402
from segmentation.clv_pipeline import collapse, fit  # noqa: E402
from segmentation.config import ClvConfig, OutputConfig, SparkConfig  # noqa: E402
from segmentation.io import read_table, table_exists, write_table  # noqa: E402
from segmentation.spark import get_spark  # noqa: E402

log = logging.getLogger("bench_clv")
AS_OF = dt.date(2024, 12, 31)
WINDOW_DAYS = 730
SCHEMA = "customer_id string, frequency double, recency double, T double, monetary_value double"


def _simulate(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """BG/NBD customers, in days: distinct purchase days after the first, last one, age, mean spend."""
    for batch in batches:
        ids = batch["id"].to_numpy()
        rng = np.random.default_rng(int(ids[0]) + 17)
        n = len(ids)
        age = rng.integers(1, WINDOW_DAYS + 1, n).astype(float)
        rate = rng.gamma(0.25, 1 / 30.0, n)
        dropout = rng.beta(0.8, 2.4, n)
        freq, last_day = np.zeros(n), np.zeros(n)
        clock = np.zeros(n)
        active = np.arange(n)
        while active.size:
            clock[active] += rng.exponential(1 / rate[active])
            inside = clock[active] <= age[active]
            active = active[inside]
            day = np.floor(clock[active])
            new_day = day > last_day[active]
            freq[active[new_day]] += 1
            last_day[active[new_day]] = day[new_day]
            active = active[rng.random(active.size) >= dropout[active]]  # dies after a purchase with p
        nu = rng.gamma(3.7, 1 / 15.0, n)
        spend = np.where(freq > 0, rng.gamma(np.maximum(6.0 * freq, 1e-9), 1 / (nu * np.maximum(freq, 1))), 0.0)
        yield pd.DataFrame(
            {
                "customer_id": [f"c{i}" for i in ids],
                "frequency": freq,
                "recency": last_day,
                "T": np.floor(age),
                "monetary_value": np.round(spend, 2),
            }
        )


def write_synthetic(spark: SparkSession, n: int, target: OutputConfig) -> None:
    partitions = max(4, n // 250_000)
    customers = spark.range(0, n, numPartitions=partitions).mapInPandas(_simulate, SCHEMA)
    write_table(customers.withColumn("as_of", F.lit(AS_OF)), target, partition_by=["as_of"])


def driver_peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=Path, default=Path("/tmp/segmentation-bench/100000000/features"))
    parser.add_argument("--synthetic", type=int, default=5_000_000, help="customers of a synthetic snapshot; 0 = none")
    parser.add_argument("--work", type=Path, default=Path("/tmp/clv-bench"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--driver-memory", default="8g")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # the simulation and the scoring run Python workers
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = SparkConfig(master="local[*]", app_name="clv-bench", driver_memory=args.driver_memory)
    spark = get_spark(settings.model_copy(update={"ui_enabled": False, "log_level": "ERROR"}))
    source = OutputConfig(path=str(args.features))
    synthetic = not table_exists(spark, source)
    if synthetic:  # never written where the feature benchmark keeps its tables
        if not args.synthetic:
            raise SystemExit(f"no feature table at {args.features}; run benchmarks/run.py or pass --synthetic N")
        source = OutputConfig(path=str(args.work / f"synthetic_features_{args.synthetic}"))
    rows: list[dict] = []

    def measure(stage: str, fn):
        with PeakMemory() as memory:
            start = time.perf_counter()
            value = fn()
            seconds = time.perf_counter() - start
        row = {"stage": stage, "seconds": round(seconds, 2), "machine_peak_gb": round(memory.peak, 2)}
        row["driver_python_peak_gb"] = round(driver_peak_gb(), 3)
        rows.append(row)
        log.info("%s", row)
        return value

    if synthetic and not table_exists(spark, source):
        measure("generate_synthetic", lambda: write_synthetic(spark, args.synthetic, source))
    features = read_table(spark, source)
    as_of = features.select(F.max("as_of")).first()[0]
    snapshot = features.where(F.col("as_of") == F.lit(as_of))
    ccfg = ClvConfig()
    collapsed = measure("collapse", lambda: collapse(snapshot))
    model = measure("fit", lambda: fit(collapsed, ccfg))
    target = OutputConfig(path=str(args.work / "clv_output"))
    scored = clv.score(snapshot, model)
    measure("score_write", lambda: write_table(scored, target))
    result = {
        "meta": {
            "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "features": source.path,
            "synthetic": synthetic,
            "cores": spark.sparkContext.defaultParallelism,
        },
        "customers": collapsed.customers,
        "repeat_customers": collapsed.repeat_customers,
        "distinct_triples": len(collapsed.triples),
        "distinct_gg_pairs": len(collapsed.pairs),
        "collected_mb": round(
            (collapsed.triples.memory_usage(index=False).sum() + collapsed.pairs.memory_usage(index=False).sum()) / 1e6,
            1,
        ),
        "model": model.as_dict(),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "clv.json").write_text(json.dumps(result, indent=1, default=str))
    log.info("%s", {k: v for k, v in result.items() if k != "model"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
