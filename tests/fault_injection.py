"""Run the feature job with two injected task failures (used by tests/test_reliability_writes.py).

    python tests/fault_injection.py MARKER_DIR <build_features arguments...>

One task of the input scan and one task of the features write raise on their first
attempt (and leave a marker file saying so); with Spark task retries (``local[2,3]``)
each is retried and the job must still succeed with exactly the output of a clean run.
The job itself runs unchanged: only the DataFrames it builds pass through a Python UDF
that fails once.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pyspark import TaskContext
from pyspark.sql import functions as F
from pyspark.sql import types as T

import segmentation.feature_pipeline as feature_pipeline
import segmentation.feature_table as feature_table
from jobs.build_features import main
from segmentation.cli import config_from_args, job_parser


def fail_once(stage: str, markers: str):
    @F.udf(T.StringType())
    def passthrough(value):
        context = TaskContext.get()
        if context.partitionId() == 0 and context.attemptNumber() == 0:
            Path(markers, f"{stage}-stage{context.stageId()}").write_text("failed once\n")
            raise RuntimeError(f"injected failure in the {stage} (first attempt)")
        return value

    return lambda df: df.withColumn("customer_id", passthrough("customer_id"))


def install(markers: str, features_output) -> None:
    parse_rows, write_table = feature_table.parse_rows, feature_pipeline.write_table
    in_scan, in_write = fail_once("scan", markers), fail_once("write", markers)
    feature_table.parse_rows = lambda df, *args: parse_rows(in_scan(df), *args)

    def flaky_write(df, target, *args, **kwargs):
        return write_table(in_write(df) if target == features_output else df, target, *args, **kwargs)

    feature_pipeline.write_table = flaky_write


if __name__ == "__main__":
    markers, argv = sys.argv[1], sys.argv[2:]
    install(markers, config_from_args(job_parser("").parse_args(argv)).features.output)
    sys.exit(main(argv))
