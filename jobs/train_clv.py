"""Fit customer lifetime value models (BG/NBD + Gamma-Gamma) on a feature snapshot, log and
register them in MLflow, and write each customer's p_alive, expected purchases and CLV.

    python jobs/train_clv.py
    python jobs/train_clv.py --set features.as_of=1998-06-30 --set clv.holdout_days=273   # validate
    spark-submit --packages io.delta:delta-spark_4.2_2.13:4.4.0 jobs/train_clv.py --env cluster \\
        --set mlflow.tracking_uri=http://127.0.0.1:5000
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from segmentation.cli import config_from_args, exit_with, job_parser, parse, run_job
from segmentation.clv_pipeline import run_clv
from segmentation.spark import get_spark

log = logging.getLogger("jobs.train_clv")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(job_parser(__doc__), argv)

    def body() -> None:
        cfg = config_from_args(args)
        spark = get_spark(cfg.spark)
        result = run_clv(spark, cfg)
        if result.holdout:
            log.info("holdout validation (run %s): %s", result.run_id, result.holdout)
        else:
            log.info(
                "CLV for as_of %s (run %s, model %s version %s) in %s",
                result.as_of,
                result.run_id,
                cfg.clv.registered_model,
                result.model_version,
                cfg.clv.output.location,
            )

    return run_job("train_clv", body)


def run(argv: Sequence[str] | None = None) -> None:
    """The console script ``segmentation-...``: raises SystemExit on failure (see ``cli.exit_with``)."""
    exit_with(main, argv)


if __name__ == "__main__":
    run()
