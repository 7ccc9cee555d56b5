"""MLlib KMeans on the benchmark's matrix with each solver and init mode (``make bench`` writes the matrix).

    python benchmarks/kmeans_solvers.py [--matrix /tmp/segmentation-bench/fit_matrix] [--out benchmarks/results]

Writes ``kmeans_solvers.json``: seconds per (solver, init mode) at k=8 and 20 iterations,
on the cached matrix, and a 1-iteration fit (the k-means|| initialisation's cost).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pyspark.ml.clustering import KMeans
from run import bench_settings, cached_matrix

from segmentation.spark import get_spark

VARIANTS = {
    "row, k-means||": {"solver": "row"},
    "block, k-means||": {"solver": "block"},
    "auto, random init": {"solver": "auto", "initMode": "random"},
    "block, random init": {"solver": "block", "initMode": "random"},
    "auto, k-means||": {"solver": "auto"},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrix", default="/tmp/segmentation-bench/fit_matrix")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    spark = get_spark(bench_settings())
    data, rows = cached_matrix(spark, args.matrix)
    result = {"rows": rows, "k": 8, "max_iter": 20}
    for name, params in VARIANTS.items():
        start = time.perf_counter()
        KMeans(k=8, maxIter=20, tol=0.0, seed=7, **params).fit(data)
        result[name] = round(time.perf_counter() - start, 2)
    start = time.perf_counter()
    KMeans(k=8, maxIter=1, tol=0.0, seed=7, solver="auto").fit(data)
    result["auto, k-means|| init + 1 iteration"] = round(time.perf_counter() - start, 2)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kmeans_solvers.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
