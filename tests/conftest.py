"""One SparkSession for the whole test session: small local master, few shuffle partitions, UI off, UTC."""

from __future__ import annotations

import os

import pytest

from segmentation.config import SparkConfig
from segmentation.spark import get_spark

os.environ.setdefault("PYSPARK_PYTHON", os.sys.executable)

TEST_SPARK = SparkConfig(
    master="local[2]",
    app_name="segmentation-tests",
    shuffle_partitions=2,
    driver_memory="3g",
    ui_enabled=False,
    log_level="ERROR",
    conf={
        "spark.default.parallelism": "2",
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.sql.adaptive.coalescePartitions.enabled": "true",
        "spark.rdd.compress": "false",
        "spark.sql.warehouse.dir": "/tmp/segmentation-tests-warehouse",
    },
)


@pytest.fixture(scope="session")
def spark():
    session = get_spark(TEST_SPARK)
    yield session
    session.stop()
