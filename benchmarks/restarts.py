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
import sys
from pathlib import Path

from demo_fits import demo_customers, measured_fit

from segmentation.models import RESTART_STRIDE, build_estimator, objective


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithms", default="kmeans")
    parser.add_argument("--ks", default="7,8")
    parser.add_argument("--starts", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    with demo_customers() as demo:
        for algorithm in args.algorithms.split(","):
            for k in (int(x) for x in args.ks.split(",")):
                for start in range(args.starts):
                    seed = demo.tcfg.seed + start * RESTART_STRIDE  # the seeds fit_best's restarts use
                    estimator = build_estimator(algorithm, k, demo.tcfg, seed)
                    model, predictions, _, measured = measured_fit(demo, estimator, algorithm, "prediction", None)
                    predictions.unpersist()
                    row = {
                        "algorithm": algorithm,
                        "k": k,
                        "seed": seed,
                        "objective": round(objective(algorithm, model), 1),
                        "silhouette": measured["silhouette"],
                        "ari_vs_personas": measured["ari_vs_personas"],
                    }
                    demo.record(row, args.out, "restarts.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
