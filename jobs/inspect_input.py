"""Inspect a transactions table before the first run; writes nothing.

Prints the schema with null counts, the row count, the time range, the distinct customers,
the rows per basket when a basket id is found, a suggested role mapping, what the feature
job would quarantine (by reason) with that mapping, and the YAML for ``--config``. The
format is guessed from the path (a Delta table, a .csv file or directory of them, else
Parquet) unless ``--format`` is given; ``--table`` reads a catalog table. Roles set in the
config (``--set input.transactions.columns.amount=net_sales``) win over the guess.

    segmentation-inspect data/transactions.parquet
    python jobs/inspect_input.py exports/sales.csv --set input.transactions.options.sep=';'
    spark-submit --packages io.delta:delta-spark_4.2_2.13:4.4.0 jobs/inspect_input.py sales.transactions --table \\
        --env cluster
"""

from __future__ import annotations

from collections.abc import Sequence

from segmentation.cli import config_from_args, exit_with, job_parser, parse, run_job
from segmentation.inspection import inspect_transactions, render, resolve_source
from segmentation.spark import get_spark


def main(argv: Sequence[str] | None = None) -> int:
    parser = job_parser(__doc__)
    parser.add_argument("source", metavar="PATH_OR_TABLE", help="a Delta, Parquet or CSV path, or with --table a table")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--format", choices=("delta", "parquet", "csv"), help="default: guessed from the path")
    where.add_argument("--table", action="store_true", help="PATH_OR_TABLE is a catalog table name")
    parser.set_defaults(log_level="WARNING")  # the report is the output; Spark's progress stays on stderr
    args = parse(parser, argv)

    def body() -> None:
        cfg = config_from_args(args)
        spark = get_spark(cfg.spark)
        source, note = resolve_source(spark, cfg.input.transactions, args.source, args.format, args.table)
        print(render(inspect_transactions(spark, cfg, source, note)), end="", flush=True)

    return run_job("inspect_input", body)


def run(argv: Sequence[str] | None = None) -> None:
    """The console script ``segmentation-...``: raises SystemExit on failure (see ``cli.exit_with``)."""
    exit_with(main, argv)


if __name__ == "__main__":
    run()
