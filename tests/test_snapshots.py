"""The shared snapshot readers and the persisted-frame context manager, on tiny inline tables."""

from __future__ import annotations

import datetime as dt

import pytest

from segmentation.config import OutputConfig
from segmentation.errors import ContractError
from segmentation.io import write_table
from segmentation.snapshots import newest_as_of, persisting, read_snapshot

DAYS = [dt.date(2024, 1, 31), dt.date(2024, 2, 29), dt.date(2024, 3, 31)]


@pytest.fixture
def snapshots(spark, tmp_path):
    rows = [(f"c{i}", day, float(i)) for i, day in enumerate(DAYS) for _ in range(i + 1)]
    table = OutputConfig(path=str(tmp_path / "features"))
    write_table(spark.createDataFrame(rows, "customer_id STRING, as_of DATE, spend DOUBLE"), table, ["as_of"])
    return table


def test_newest_as_of_is_the_newest_overall_or_on_or_before_a_day(spark, snapshots):
    table = spark.read.format("delta").load(snapshots.path)
    assert newest_as_of(table) == DAYS[2]
    assert newest_as_of(table, on_or_before="2024-03-30") == DAYS[1]
    assert newest_as_of(table, on_or_before=DAYS[0]) == DAYS[0]
    assert newest_as_of(table, on_or_before="2023-12-31") is None


def test_read_snapshot_reads_the_newest_or_the_asked_snapshot(spark, snapshots):
    newest, as_of = read_snapshot(spark, snapshots)
    assert as_of == "2024-03-31" and newest.count() == 3
    february, as_of = read_snapshot(spark, snapshots, "2024-02-29")
    assert as_of == "2024-02-29" and {r.customer_id for r in february.collect()} == {"c1"}


def test_read_snapshot_names_the_table_and_the_missing_column(spark, snapshots, tmp_path):
    with pytest.raises(ContractError, match=r"features' has no column\(s\) \['clv'\]; build it with jobs/x.py"):
        read_snapshot(spark, snapshots, required=("customer_id", "clv"), job="jobs/x.py")
    empty = OutputConfig(path=str(tmp_path / "empty"))
    write_table(spark.createDataFrame([], "customer_id STRING, as_of DATE"), empty, ["as_of"])
    with pytest.raises(ContractError, match="empty' is empty"):
        read_snapshot(spark, empty)


def test_persisting_releases_every_frame_when_the_block_fails(spark):
    frames = []
    with pytest.raises(RuntimeError), persisting() as persist:
        frames.append(persist(spark.range(10)))
        frames.append(persist(spark.range(20).selectExpr("id * 2 AS id")))
        assert all(f.is_cached for f in frames) and frames[1].count() == 20
        raise RuntimeError("half-way")
    assert frames and not any(f.is_cached for f in frames)
