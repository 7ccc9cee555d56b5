"""MLlib fits with the JVM's BLAS against a native one, on the benchmark's matrix (``make bench`` writes it).

Spark's netlib loader dlopens the system's ``libblas.so.3`` and ``liblapack.so.3`` and falls back
to a Java implementation when they are missing. Run this twice, once as is and once with a native
BLAS on the library path, for example OpenBLAS unpacked from the Debian package without installing it:

    python benchmarks/native_blas.py
    LD_LIBRARY_PATH=$BLAS/usr/lib/x86_64-linux-gnu/openblas-pthread:$BLAS/usr/lib/x86_64-linux-gnu \\
        python benchmarks/native_blas.py

Each run adds seconds per algorithm (k=8, 20 iterations, input cached) under the BLAS class that
Spark loaded to ``native_blas.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from peers import spark_fit
from run import bench_settings, blas, cached_matrix

from segmentation.spark import get_spark

ALGORITHMS = ("kmeans", "bisecting_kmeans", "gaussian_mixture")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrix", default="/tmp/segmentation-bench/fit_matrix")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    spark = get_spark(bench_settings())
    data, rows = cached_matrix(spark, args.matrix)
    run = {"rows": rows, "k": 8, "max_iter": 20}
    run.update({algorithm: round(spark_fit(algorithm, data, 8, 20, 7), 2) for algorithm in ALGORITHMS})
    path = args.out / "native_blas.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    loaded = blas(spark)
    results[loaded] = run
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    print(json.dumps({loaded: run}))
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
