"""Where a sweep candidate's time goes: the fit, the metrics, the stability fit and its ARI.

    python benchmarks/sweep_breakdown.py [--size 1000000] [--out benchmarks/results]

Runs the training job's candidate steps one after the other, from one thread, on the
selection sample of the features ``make bench`` left for ``--size``, and times each.
Writes ``sweep_breakdown.json``: seconds per candidate and step, and their sums.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import functions as F
from run import bench_config, bench_settings, build_parser

from segmentation.evaluation import adjusted_rand_index, evaluate_clustering
from segmentation.models import build_estimator
from segmentation.preprocessing import drop_degenerate_columns, fit_preprocessing, resolve_feature_columns
from segmentation.spark import get_spark
from segmentation.training_pipeline import load_feature_snapshot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/segmentation-bench"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    spark = get_spark(bench_settings())
    cfg = bench_config(args.work, args.size, build_parser().parse_args([]))
    tcfg = cfg.training
    snapshot, _ = load_feature_snapshot(spark, cfg)
    columns = drop_degenerate_columns(snapshot, resolve_feature_columns(snapshot, tcfg))
    prepared = fit_preprocessing(snapshot, columns, tcfg).transform(snapshot).select("customer_id", "features")
    prepared = prepared.persist(StorageLevel.MEMORY_AND_DISK)
    fraction = min(1.0, tcfg.selection.sample_size / prepared.count())
    sample = prepared if fraction >= 1.0 else prepared.sample(False, fraction, tcfg.seed).persist()
    result: dict = {"size": args.size, "sample_rows": sample.count(), "candidates": {}}

    for algorithm in tcfg.algorithms:
        for k in range(tcfg.k_min, tcfg.k_max + 1):
            steps: dict[str, float] = {}

            def timed(step, fn, steps=steps):
                start = time.perf_counter()
                value = fn()
                steps[step] = round(time.perf_counter() - start, 3)
                return value

            model = timed("fit", lambda a=algorithm, k=k: build_estimator(a, k, tcfg, tcfg.seed).fit(sample))
            predictions = model.transform(sample).persist()
            timed("metrics", lambda a=algorithm, m=model, p=predictions: (
                p.count(), evaluate_clustering(m, p, "features", "prediction", a)))  # fmt: skip
            other = timed("stability_fit", lambda a=algorithm, k=k: build_estimator(
                a, k, tcfg, tcfg.seed + 1, prediction_col="prediction_alt", probability_col="probability_alt"
            ).fit(sample))  # fmt: skip
            joined = other.transform(predictions.select("customer_id", "features", F.col("prediction").alias("base")))
            timed("stability_ari", lambda j=joined: adjusted_rand_index(j, "base", "prediction_alt"))
            predictions.unpersist()
            result["candidates"][f"{algorithm}-k{k}"] = steps
            print(algorithm, k, json.dumps(steps), flush=True)

    totals: dict[str, float] = {}
    for name, steps in result["candidates"].items():
        for step, seconds in steps.items():
            totals[step] = totals.get(step, 0.0) + seconds
            family = name.rsplit("-k", 1)[0]
            totals[f"{family}.all"] = totals.get(f"{family}.all", 0.0) + seconds
    result["totals"] = {key: round(value, 1) for key, value in totals.items()}
    print(json.dumps(result["totals"]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sweep_breakdown.json").write_text(json.dumps(result, indent=1))
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
