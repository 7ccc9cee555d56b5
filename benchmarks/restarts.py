"""How far single fits from different starts end apart, and how well each matches the planted personas.

    python benchmarks/restarts.py [--algorithms kmeans] [--ks 7,8] [--starts 6] [--out benchmarks/results]

Run after ``make demo`` in the same folder: it reads the demo's newest feature snapshot and planted
personas (``data/features``, ``data/ground_truth``, the local configuration), prepares every
customer as the training job does, and fits each (algorithm, k) from ``--starts`` seeds. For each
fit it writes the objective the restarts compare (``segmentation.models.objective``), the
silhouette and the adjusted Rand index against the personas to ``restarts.json``.
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
from segmentation.models import RESTART_STRIDE, build_estimator, objective
from segmentation.snapshots import persisting, read_snapshot
from segmentation.spark import get_spark
from segmentation.training_stages import prepare


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithms", default="kmeans")
    parser.add_argument("--ks", default="7,8")
    parser.add_argument("--starts", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
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
        for algorithm in args.algorithms.split(","):
            for k in (int(x) for x in args.ks.split(",")):
                for start in range(args.starts):
                    seed = tcfg.seed + start * RESTART_STRIDE  # the seeds fit_best's restarts use
                    model = build_estimator(algorithm, k, tcfg, seed).fit(data)
                    predictions = model.transform(data).cache()
                    metrics = evaluate_clustering(model, predictions, "features", "prediction", algorithm)
                    ari = adjusted_rand_index(predictions, label, "prediction")
                    row = {"algorithm": algorithm, "k": k, "seed": seed,
                           "objective": round(objective(algorithm, model), 1),
                           "silhouette": round(metrics["silhouette"], 4), "ari_vs_personas": round(ari, 4)}  # fmt: skip
                    predictions.unpersist()
                    print(json.dumps(row), flush=True)
                    result["fits"].append(row)
                    args.out.mkdir(parents=True, exist_ok=True)
                    (args.out / "restarts.json").write_text(json.dumps(result, indent=1))
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
