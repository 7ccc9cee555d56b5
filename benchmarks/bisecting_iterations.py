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
import sys
from pathlib import Path

from demo_fits import demo_customers, measured_fit

from segmentation.models import build_estimator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="2..8")
    parser.add_argument("--iterations", default="10,15,20")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    low, high = (int(x) for x in args.ks.split(".."))
    iterations = sorted((int(x) for x in args.iterations.split(",")), reverse=True)  # the reference first
    with demo_customers() as demo:
        tcfg = demo.tcfg
        for k in range(low, high + 1):
            for seed in range(tcfg.seed, tcfg.seed + args.seeds):
                reference, cached = None, []
                for max_iter in iterations:
                    params = tcfg.bisecting_kmeans.model_copy(update={"max_iter": max_iter})
                    estimator = build_estimator(
                        "bisecting_kmeans", k, tcfg.model_copy(update={"bisecting_kmeans": params}), seed
                    )
                    column = f"p{max_iter}"
                    _, predictions, metrics, row = measured_fit(demo, estimator, "bisecting_kmeans", column, reference)
                    reference = reference or (predictions, column)
                    cached.append(predictions)
                    row = {"k": k, "seed": seed, "max_iter": max_iter, **row, "wssse": round(metrics["wssse"], 1)}
                    demo.record(row, args.out, "bisecting_iterations.json")
                for predictions in cached:
                    predictions.unpersist()
    return 0


if __name__ == "__main__":
    sys.exit(main())
