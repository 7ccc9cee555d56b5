"""The champion refitted on a sample against the refit on every customer (``training.refit``).

    python benchmarks/refit_sample.py [--size 10000000] [--limits 50000,100000,200000]
        [--algorithms kmeans,bisecting_kmeans,gaussian_mixture] [--k 7] [--out benchmarks/results]
        [--name refit_sample] [--no-other-seed]

Prepares size ``--size``'s feature snapshot as the training job does (generating the transactions
and building the features first when ``make bench`` left none), then for each algorithm fits
k = ``--k`` on every customer, and again on every customer with another seed (how far two full
refits differ by their seed alone), and on the sample ``refit_rows_of`` draws for each limit.
Every model assigns every customer. Writes ``refit_sample.json``: per algorithm and limit, the
rows fitted, the fit's seconds, the adjusted Rand index of the assignments against the full
refit's, and each quality metric beside the full refit's, to ``--name``.json.

The ARI depends on the absolute size of the sample more than on its share of the customers (a
centre is estimated from the rows it gets), so limits measured at 10M carry to larger sizes of
the same data; the share of the time they save does not: the full refit grows with the customers.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from run import bench_config, bench_settings, build_parser

from segmentation.evaluation import adjusted_rand_index, evaluate_clustering
from segmentation.feature_pipeline import run_feature_pipeline
from segmentation.generator import generate_transactions
from segmentation.io import write_table
from segmentation.models import build_estimator
from segmentation.snapshots import persisting, read_snapshot
from segmentation.spark import get_spark
from segmentation.training_stages import prepare, refit_rows_of

log = logging.getLogger("refit_sample")
METRICS = ("silhouette", "wssse", "davies_bouldin", "calinski_harabasz", "min_cluster_share", "bic")


def _features(spark, cfg) -> None:
    features = Path(cfg.features.output.path)
    if (features / "_delta_log").is_dir():
        return
    if not (Path(cfg.input.transactions.path) / "_SUCCESS").exists():
        write_table(generate_transactions(spark, cfg.generator), cfg.generator.transactions)
    run_feature_pipeline(spark, cfg)


def _fit(algorithm: str, k: int, tcfg, seed: int, rows, vectors, fitted_rows: int) -> tuple[dict, object]:
    started = time.perf_counter()
    model = build_estimator(algorithm, k, tcfg, seed).fit(rows)
    seconds = time.perf_counter() - started
    assigned = model.transform(vectors).select("customer_id", "features", "prediction").cache()
    metrics = evaluate_clustering(model, assigned, "features", "prediction", algorithm, fitted_rows)
    return {"rows": fitted_rows, "fit_seconds": round(seconds, 1),
            **{m: round(metrics[m], 4) for m in METRICS if m in metrics}}, assigned  # fmt: skip


def _ari(full, other) -> float:
    pairs = full.select("customer_id", full.prediction.alias("a")).join(
        other.select("customer_id", other.prediction.alias("b")), "customer_id"
    )
    return round(adjusted_rand_index(pairs, "a", "b"), 4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000_000)
    parser.add_argument("--limits", default="50000,100000,200000")
    parser.add_argument("--algorithms", default="kmeans,bisecting_kmeans,gaussian_mixture")
    parser.add_argument("--k", type=int, default=7)
    parser.add_argument("--work", type=Path, default=Path("/tmp/segmentation-bench"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--name", default="refit_sample", help="the result file's name, without .json")
    parser.add_argument("--no-other-seed", action="store_true",
                        help="skip the second full refit (how far two full refits differ by their seed alone); "
                             "at 100M each full BisectingKMeans refit takes about 20 minutes")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    spark = get_spark(bench_settings())
    cfg = bench_config(args.work, args.size, build_parser().parse_args([]))
    _features(spark, cfg)
    snapshot, as_of = read_snapshot(spark, cfg.features.output, None)
    result: dict = {"date": time.strftime("%Y-%m-%d"), "size": args.size, "k": args.k, "algorithms": {}}
    with persisting() as persist:
        prepared = prepare(snapshot, as_of, cfg.training, persist)
        result["customers"] = prepared.n_customers
        for algorithm in args.algorithms.split(","):
            tcfg = cfg.training
            full, assigned = _fit(algorithm, args.k, tcfg, tcfg.seed, prepared.vectors, prepared.vectors,
                                  prepared.n_customers)  # fmt: skip
            entry = {"full": full}
            if not args.no_other_seed:
                reseeded, other = _fit(algorithm, args.k, tcfg, tcfg.seed + 1, prepared.vectors, prepared.vectors,
                                       prepared.n_customers)  # fmt: skip
                reseeded["ari_vs_full"] = _ari(assigned, other)
                other.unpersist()
                entry["full_other_seed"] = reseeded
            for limit in (int(x) for x in args.limits.split(",")):
                refit = tcfg.refit.model_copy(update={"max_customers": limit, "sample_algorithms": [algorithm]})
                rows, n_rows = refit_rows_of(prepared, tcfg.model_copy(update={"refit": refit}), persist, algorithm)
                sampled, labels = _fit(algorithm, args.k, tcfg, tcfg.seed, rows, prepared.vectors, n_rows)
                sampled["ari_vs_full"] = _ari(assigned, labels)
                labels.unpersist()
                if rows is not prepared.vectors:  # a limit above the customers refits on the shared vectors
                    rows.unpersist()
                entry[f"sample_{limit}"] = sampled
                log.info("%s %s", algorithm, json.dumps(entry))
            assigned.unpersist()
            result["algorithms"][algorithm] = entry
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=1))
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
