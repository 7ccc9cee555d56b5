"""The fixed-k fits against scikit-learn at about 1M customers, without the 100M input.

``make bench`` fits on the largest size's prepared matrix, at most ``--fit-rows`` customers; only
the 100M size has a million. This script takes the 10M size's prepared matrix (476k customers,
``make bench`` or ``run.py --sizes 10000000`` writes its features table) twice over, 952k rows,
and runs the same fits as ``run.py`` (``fits_on``): each algorithm at k=8 and 20 iterations,
Spark's input cached and not, against scikit-learn, then the KMeans sweep from one and two threads.
Every row is there twice, which changes neither side's work per row.

    python benchmarks/fits_1m.py    # -> benchmarks/results/fits-1m/results.json
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

from run import Results, bench_settings, blas, build_parser, fits_on, prepared_features, write_matrix

from segmentation.spark import get_spark


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.set_defaults(out=Path("benchmarks/results/fits-1m"))
    args = parser.parse_args(argv)
    n = 10_000_000
    spark = get_spark(bench_settings(args.driver_memory))
    prepared, n_features = prepared_features(spark, args.work, n, args)
    path = write_matrix(spark, prepared.unionByName(prepared), args.work / "fit_matrix_1m")
    meta = {"date": dt.date.today().isoformat(), "spark": spark.version, "blas": blas(spark),
            "matrix": f"the {n:,}-transaction size's prepared features, every row twice"}  # fmt: skip
    fits_on(spark, Results(args.out, meta), path, n_features, args)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
