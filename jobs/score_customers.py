"""Score a feature snapshot with the registered model and upsert the segment tables (Delta MERGE).

python jobs/score_customers.py                                  # newest snapshot, model @champion
python jobs/score_customers.py --set scoring.as_of=2025-02-01 --set scoring.compute_features=true
python jobs/score_customers.py --set scoring.model_version=3    # a specific registered version
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from segmentation.cli import config_from_args, exit_with, job_parser, parse, run_job
from segmentation.feature_pipeline import features_for_scoring
from segmentation.scoring_pipeline import run_scoring
from segmentation.spark import get_spark

log = logging.getLogger("jobs.score_customers")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(job_parser(__doc__), argv)

    def body() -> None:
        cfg = config_from_args(args)
        spark = get_spark(cfg.spark)
        cfg = features_for_scoring(spark, cfg)  # scoring.compute_features: the feature job first
        result = run_scoring(spark, cfg)
        log.info(
            "scored %d customers of %s with version %s (run %s); current %s, history %s",
            result.customers,
            result.as_of,
            result.model_version,
            result.run_id,
            cfg.scoring.current.location,
            cfg.scoring.history.location,
        )

    return run_job("score_customers", body)


def run(argv: Sequence[str] | None = None) -> None:
    """The console script ``segmentation-...``: raises SystemExit on failure (see ``cli.exit_with``)."""
    exit_with(main, argv)


if __name__ == "__main__":
    run()
