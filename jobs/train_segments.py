"""Train the segmentation model: k sweep over KMeans, BisectingKMeans and GaussianMixture,
choose a champion, log everything to MLflow, register it, and write segment assignments.

    python jobs/train_segments.py
    spark-submit --packages io.delta:delta-spark_4.2_2.13:4.4.0 jobs/train_segments.py --env cluster \\
        --set mlflow.tracking_uri=http://127.0.0.1:5000
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from segmentation.cli import config_from_args, exit_with, job_parser, parse, run_job
from segmentation.spark import get_spark
from segmentation.training_pipeline import run_training

log = logging.getLogger("jobs.train_segments")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(job_parser(__doc__), argv)

    def body() -> None:
        cfg = config_from_args(args)
        spark = get_spark(cfg.spark)
        result = run_training(spark, cfg)
        log.info(
            "champion %s k=%d (run %s, model %s version %s); assignments in %s",
            result.champion,
            result.k,
            result.run_id,
            cfg.mlflow.registered_model,
            result.model_version,
            cfg.training.assignments.location,
        )

    return run_job("train_segments", body)


def run(argv: Sequence[str] | None = None) -> None:
    """The console script ``segmentation-...``: raises SystemExit on failure (see ``cli.exit_with``)."""
    exit_with(main, argv)


if __name__ == "__main__":
    run()
