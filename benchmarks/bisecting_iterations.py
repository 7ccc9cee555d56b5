"""Does BisectingKMeans need 20 iterations per level? Fewer, compared with 20 on the demo's customers.

    python benchmarks/bisecting_iterations.py [--ks 2..8] [--iterations 10,15,20] [--seeds 2]

Run after ``make demo`` (or its first two jobs) in the same folder: it reads the demo's newest
feature snapshot and planted personas, prepares every customer as the training job does, and fits
BisectingKMeans at each k and ``max_iter`` from the seeds ``training.seed + i``. MLlib's bisecting
k-means has no tolerance: every level of the tree runs ``max_iter`` passes over the rows, each a
Spark job, so the iterations set its time. For each fit it writes the seconds, the within-cluster
sum of squares, the silhouette, the adjusted Rand index against the fit with the most iterations
(same k and seed) and against the personas to ``bisecting_iterations.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from segmentation.config import SparkConfig, default_config_files, load_config
from segmentation.evaluation import adjusted_rand_index, evaluate_clustering
from segmentation.io import read_table
from segmentation.models import build_estimator
from segmentation.snapshots import persisting, read_snapshot
from segmentation.spark import get_spark
from segmentation.training_stages import prepare


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="2..8")
    parser.add_argument("--iterations", default="10,15,20")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    low, high = (int(x) for x in args.ks.split(".."))
    iterations = sorted((int(x) for x in args.iterations.split(",")), reverse=True)  # the reference first
    cfg = load_config(default_config_files("local"), ["input.customers.enabled=true"])
    spark = get_spark(SparkConfig(master="local[*]", driver_memory="4g", ui_enabled=False, log_level="ERROR"))
    snapshot, as_of = read_snapshot(spark, cfg.features.output, None)
    label = cfg.training.ground_truth.label_column
    truth = read_table(spark, cfg.training.ground_truth, columns=["customer_id", label])
    everyone = cfg.training.selection.model_copy(update={"sample_size": 1 << 62})
    tcfg = cfg.training.model_copy(update={"selection": everyone})
    result: dict = {"date": time.strftime("%Y-%m-%d"), "as_of": as_of, "fits": []}
    with persisting() as persist:
        prepared = prepare(snapshot, as_of, tcfg, persist)
        data = persist(prepared.vectors.join(truth, "customer_id"))
        result["customers"] = data.count()
        for k in range(low, high + 1):
            for seed in range(tcfg.seed, tcfg.seed + args.seeds):
                reference = None
                for max_iter in iterations:
                    params = tcfg.bisecting_kmeans.model_copy(update={"max_iter": max_iter})
                    estimator = build_estimator(
                        "bisecting_kmeans", k, tcfg.model_copy(update={"bisecting_kmeans": params}), seed
                    )
                    started = time.perf_counter()
                    model = estimator.fit(data)
                    seconds = time.perf_counter() - started
                    predictions = model.transform(data).withColumnRenamed("prediction", f"p{max_iter}").cache()
                    metrics = evaluate_clustering(model, predictions, "features", f"p{max_iter}", "bisecting_kmeans")
                    if reference is None:
                        reference = predictions
                        same = 1.0
                    else:
                        both = predictions.join(reference.select("customer_id", f"p{iterations[0]}"), "customer_id")
                        same = adjusted_rand_index(both, f"p{iterations[0]}", f"p{max_iter}")
                    row = {
                        "k": k,
                        "seed": seed,
                        "max_iter": max_iter,
                        "seconds": round(seconds, 2),
                        "wssse": round(metrics["wssse"], 1),
                        "silhouette": round(metrics["silhouette"], 4),
                        "ari_vs_reference": round(same, 4),
                        "ari_vs_personas": round(adjusted_rand_index(predictions, label, f"p{max_iter}"), 4),
                    }
                    print(json.dumps(row), flush=True)
                    result["fits"].append(row)
                    args.out.mkdir(parents=True, exist_ok=True)
                    (args.out / "bisecting_iterations.json").write_text(json.dumps(result, indent=1))
                spark.catalog.clearCache()
                data = persist(prepared.vectors.join(truth, "customer_id"))
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
