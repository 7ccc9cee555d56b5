"""GaussianMixture's stopping rule: MLlib's tolerance (on the total log-likelihood) against one per
customer, and fewer iterations.

    python benchmarks/gmm_tolerance.py [--ks 5..8] [--per-customer 0,1e-4,1e-3] [--max-iters 100] [--seeds 2]

MLlib stops EM when the total log-likelihood changes by less than ``tol`` (0.01 by default), so
the bar rises with the number of rows: on 47,639 customers it is 2e-7 per customer, where
scikit-learn stops at 1e-3 per customer. Run after ``make demo`` (or its first two jobs) in the
same folder: it reads the demo's newest feature snapshot and planted personas, prepares every
customer as the training job does, and fits GaussianMixture at each k and seed with today's
``tol`` (``--per-customer 0``) and with ``tol = value x customers``, each with every
``--max-iters``; the first combination is the reference. For each fit it writes the iterations,
the seconds, the log-likelihood, the silhouette, the adjusted Rand index against the reference
fit (same k and seed) and against the personas to ``gmm_tolerance.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from demo_fits import demo_customers, measured_fit

from segmentation.models import build_estimator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="5..8")
    parser.add_argument("--per-customer", default="0,1e-4,1e-3")
    parser.add_argument("--max-iters", default="100")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    low, high = (int(x) for x in args.ks.split(".."))
    combinations = [
        (float(value), int(max_iter))
        for max_iter in args.max_iters.split(",")
        for value in args.per_customer.split(",")
    ]
    with demo_customers() as demo:
        tcfg, n = demo.tcfg, demo.result["customers"]
        for k in range(low, high + 1):
            for seed in range(tcfg.seed, tcfg.seed + args.seeds):
                reference, cached = None, []
                for value, max_iter in combinations:
                    tol = value * n if value else tcfg.gaussian_mixture.tol
                    params = tcfg.gaussian_mixture.model_copy(update={"tol": tol, "max_iter": max_iter})
                    estimator = build_estimator(
                        "gaussian_mixture", k, tcfg.model_copy(update={"gaussian_mixture": params}), seed
                    )
                    column = f"p{len(demo.result['fits'])}"
                    model, predictions, metrics, row = measured_fit(
                        demo, estimator, "gaussian_mixture", column, reference
                    )
                    reference = reference or (predictions, column)
                    cached.append(predictions)
                    row = {
                        "k": k,
                        "seed": seed,
                        "tol_per_customer": value or tol / n,
                        "tol": tol,
                        "max_iter": max_iter,
                        "iterations": model.summary.numIter,
                        **row,
                        "log_likelihood": round(metrics["log_likelihood"], 1),
                        "min_cluster_share": round(metrics["min_cluster_share"], 4),
                    }
                    demo.record(row, args.out, "gmm_tolerance.json")
                for predictions in cached:
                    predictions.unpersist()
    return 0


if __name__ == "__main__":
    sys.exit(main())
