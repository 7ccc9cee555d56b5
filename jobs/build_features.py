"""Build one row of behavioural features per customer from a transactions table.

Reads ``input.transactions`` (Delta, Parquet, CSV or a catalog table, columns
mapped by role), quarantines bad rows, and replaces the ``features.as_of``
snapshot of ``features.output``; a data-quality row goes to ``features.quality``.

    python jobs/build_features.py --set features.as_of=2024-12-31
    spark-submit --packages io.delta:delta-spark_4.2_2.13:4.4.0 jobs/build_features.py --env cluster
"""

from __future__ import annotations

from collections.abc import Sequence

from segmentation.cli import config_from_args, exit_with, job_parser, parse, run_job
from segmentation.feature_pipeline import run_feature_pipeline
from segmentation.spark import get_spark


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(job_parser(__doc__), argv)

    def body() -> None:
        cfg = config_from_args(args)
        run_feature_pipeline(get_spark(cfg.spark), cfg)

    return run_job("build_features", body)


def run(argv: Sequence[str] | None = None) -> None:
    """The console script ``segmentation-...``: raises SystemExit on failure (see ``cli.exit_with``)."""
    exit_with(main, argv)


if __name__ == "__main__":
    run()
