"""Generate synthetic transactions, customers and planted ground-truth segments.

Writes three tables (Delta by default) to ``generator.transactions``,
``generator.customers`` and ``generator.ground_truth``; the same seed gives the
same rows.

    python jobs/generate_transactions.py --set generator.n_transactions=10000000
    spark-submit --packages io.delta:delta-spark_4.2_2.13:4.4.0 \\
        jobs/generate_transactions.py --env cluster --set generator.n_transactions=100000000
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from segmentation.cli import config_from_args, exit_with, job_parser, parse, run_job
from segmentation.generator import customer_count, generate
from segmentation.io import write_table
from segmentation.spark import get_spark

log = logging.getLogger("jobs.generate_transactions")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(job_parser(__doc__), argv)

    def body() -> None:
        cfg = config_from_args(args)
        spark = get_spark(cfg.spark)
        gen = cfg.generator
        log.info(
            "generating %d transactions for %d customers (seed %d)", gen.n_transactions, customer_count(gen), gen.seed
        )
        tables = generate(spark, gen)
        for name, target in (("transactions", gen.transactions), ("customers", gen.customers),
                             ("ground_truth", gen.ground_truth)):  # fmt: skip
            log.info("writing %s to %s", name, target.location)
            write_table(tables[name], target)
        log.info("done: transactions at %s", gen.transactions.location)

    return run_job("generate_transactions", body)


def run(argv: Sequence[str] | None = None) -> None:
    """The console script ``segmentation-...``: raises SystemExit on failure (see ``cli.exit_with``)."""
    exit_with(main, argv)


if __name__ == "__main__":
    run()
