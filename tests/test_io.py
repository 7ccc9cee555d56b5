from __future__ import annotations

import datetime as dt
import os

import pytest
from pyspark.sql import Row
from pyspark.testing import assertDataFrameEqual

from segmentation.config import OutputConfig, TableConfig
from segmentation.errors import ContractError, InputNotFoundError
from segmentation.io import (
    delta_version,
    merge_assignment_history,
    merge_current_assignments,
    read_table,
    table_exists,
    write_table,
)

SCORED = "customer_id STRING, segment INT, segment_name STRING, probability DOUBLE, model_version STRING"
D1, D2, D3 = "2024-01-31", "2024-02-29", "2024-03-31"


def scored(spark, rows):
    return spark.createDataFrame(rows, SCORED)


def test_read_table_prunes_columns_and_names_missing_ones(spark, tmp_path):
    path = str(tmp_path / "t")
    spark.createDataFrame([(1, "a", 2.0)], "a INT, b STRING, c DOUBLE").write.parquet(path)
    df = read_table(spark, TableConfig(path=path, format="parquet"), columns=["c", "a"])
    assert df.columns == ["c", "a"]
    with pytest.raises(ContractError, match=r"no column\(s\) \['zz'\]"):
        read_table(spark, TableConfig(path=path, format="parquet"), columns=["a", "zz"])


def test_missing_input_names_the_path(spark, tmp_path):
    with pytest.raises(InputNotFoundError, match="nothing-here"):
        read_table(spark, TableConfig(path=str(tmp_path / "nothing-here"), format="delta"))


def test_replace_where_rewrites_one_snapshot_and_keeps_the_others(spark, tmp_path):
    target = OutputConfig(path=str(tmp_path / "snap"), format="delta")
    schema = "customer_id STRING, value INT, as_of DATE"
    jan, feb = dt.date(2024, 1, 31), dt.date(2024, 2, 29)
    write_table(spark.createDataFrame([("a", 1, jan), ("a", 2, feb)], schema), target, ["as_of"])
    write_table(spark.createDataFrame([("a", 9, feb)], schema), target, ["as_of"], replace_where={"as_of": str(feb)})
    back = spark.read.format("delta").load(target.path)
    assertDataFrameEqual(back, spark.createDataFrame([("a", 1, jan), ("a", 9, feb)], schema))
    assert delta_version(spark, target) == 1


def test_a_table_with_other_columns_is_named_and_left_as_it_was(spark, tmp_path):
    """Another data set's feature table at the same location (make demo's data/features, say)."""
    target = OutputConfig(path=str(tmp_path / "features"), format="delta")
    first = spark.createDataFrame([(D1, 1)], "as_of STRING, a INT")
    write_table(first, target, partition_by=["as_of"], replace_where={"as_of": D1})
    for other in ("as_of STRING, b INT", "as_of STRING, a STRING"):  # another column; another type
        with pytest.raises(ContractError, match=f"Delta table {target.path} holds other columns"):
            later = spark.createDataFrame([(D2, 1)], other)
            write_table(later, target, partition_by=["as_of"], replace_where={"as_of": D2})
    assert delta_version(spark, target) == 0
    assertDataFrameEqual(spark.read.format("delta").load(target.path), first)


def test_current_assignments_merge(spark, tmp_path):
    target = OutputConfig(path=str(tmp_path / "current"), format="delta")
    merge_current_assignments(
        spark, scored(spark, [("a", 1, "Loyal", None, "1"), ("b", 2, "New", None, "1")]), target, D1
    )
    # b changes segment, c is new, a is unchanged
    second = scored(spark, [("a", 1, "Loyal", None, "1"), ("b", 3, "At risk", None, "1"), ("c", 2, "New", None, "1")])
    merge_current_assignments(spark, second, target, D2)
    # a disappears from the input: kept and flagged, never deleted
    third = scored(spark, [("b", 3, "At risk", None, "1"), ("c", 2, "New", None, "1")])
    merge_current_assignments(spark, third, target, D3)
    before = spark.read.format("delta").load(target.path).collect()
    merge_current_assignments(spark, third, target, D3)  # rerun: nothing changes
    after = spark.read.format("delta").load(target.path)
    assert sorted(before) == sorted(after.collect())
    d = dt.date.fromisoformat
    expected = [
        Row(customer_id="a", segment=1, segment_name="Loyal", probability=None, model_version="1",
            as_of=d(D2), segment_since=d(D1), active=False, missing_since=d(D3)),
        Row(customer_id="b", segment=3, segment_name="At risk", probability=None, model_version="1",
            as_of=d(D3), segment_since=d(D2), active=True, missing_since=None),
        Row(customer_id="c", segment=2, segment_name="New", probability=None, model_version="1",
            as_of=d(D3), segment_since=d(D2), active=True, missing_since=None),
    ]  # fmt: skip
    assertDataFrameEqual(after, expected)
    # a customer coming back is reactivated from that snapshot
    merge_current_assignments(spark, scored(spark, [("a", 1, "Loyal", None, "1")]), target, "2024-04-30")
    a = spark.read.format("delta").load(target.path).where("customer_id = 'a'").first()
    assert a.active and a.missing_since is None and str(a.segment_since) == "2024-04-30"


def test_current_assignments_gain_and_refresh_clv_values(spark, tmp_path):
    target = OutputConfig(path=str(tmp_path / "current"), format="delta")
    merge_current_assignments(spark, scored(spark, [("a", 1, "Loyal", None, "1")]), target, D1)  # no CLV yet
    clv = "clv_as_of DATE, p_alive DOUBLE, expected_purchases DOUBLE, expected_avg_value DOUBLE, clv DOUBLE"
    d = dt.date.fromisoformat

    def with_clv(rows, values):
        return scored(spark, rows).join(spark.createDataFrame(values, f"customer_id STRING, {clv}"), "customer_id",
                                        "left")  # fmt: skip

    # the table written without them gains the columns; a is refreshed, b arrives without values
    second = with_clv([("a", 1, "Loyal", None, "1"), ("b", 2, "New", None, "1")], [("a", d(D1), 0.8, 2.0, 30.0, 55.0)])
    merge_current_assignments(spark, second, target, D2)
    rows = {r.customer_id: r for r in spark.read.format("delta").load(target.path).collect()}
    assert (rows["a"].clv_as_of, rows["a"].p_alive, rows["a"].clv, rows["a"].segment_since) == (d(D1), 0.8, 55.0, d(D1))
    assert rows["b"].p_alive is None and rows["b"].active
    version = delta_version(spark, target)
    merge_current_assignments(spark, second, target, D2)  # rerun: no ALTER, no changed row
    assert sorted(spark.read.format("delta").load(target.path).collect()) == sorted(rows.values())
    history = spark.sql(f"DESCRIBE HISTORY delta.`{target.path}`").where(f"version > {version}").collect()
    assert [h.operation for h in history] == ["MERGE"] and history[0].operationMetrics["numTargetRowsUpdated"] == "0"
    # a new CLV snapshot with the same segments only refreshes the values
    third = with_clv([("a", 1, "Loyal", None, "1"), ("b", 2, "New", None, "1")],
                     [("a", d(D2), 0.4, 1.0, 30.0, 20.0), ("b", d(D2), 0.9, 3.0, 10.0, 28.0)])  # fmt: skip
    merge_current_assignments(spark, third, target, D3)
    rows = {r.customer_id: r for r in spark.read.format("delta").load(target.path).collect()}
    assert [(rows[c].clv_as_of, rows[c].p_alive, rows[c].segment_since) for c in "ab"] == [
        (d(D2), 0.4, d(D1)), (d(D2), 0.9, d(D2))
    ]  # fmt: skip


def test_history_records_each_change_once(spark, tmp_path):
    target = OutputConfig(path=str(tmp_path / "history"), format="delta")
    merge_assignment_history(
        spark, scored(spark, [("a", 1, "Loyal", None, "1"), ("b", 2, "New", None, "1")]), target, D1
    )
    second = scored(spark, [("a", 1, "Loyal", None, "1"), ("b", 3, "At risk", None, "1"), ("c", 2, "New", None, "1")])
    merge_assignment_history(spark, second, target, D2)
    merge_assignment_history(spark, second, target, D2)  # rerun: no duplicate rows
    # a new model version with the same segment is a change too
    merge_assignment_history(spark, scored(spark, [("a", 1, "Loyal", None, "2")]), target, D3)
    d = dt.date.fromisoformat
    history = Row("customer_id", "segment", "segment_name", "model_version", "valid_from", "valid_to", "is_current")
    expected = [
        history("a", 1, "Loyal", "1", d(D1), d(D3), False),
        history("a", 1, "Loyal", "2", d(D3), None, True),
        history("b", 2, "New", "1", d(D1), d(D2), False),
        history("b", 3, "At risk", "1", d(D2), None, True),
        history("c", 2, "New", "1", d(D2), None, True),
    ]
    assertDataFrameEqual(spark.read.format("delta").load(target.path), expected)


def test_relative_paths_merge_into_the_tables_they_name(spark, tmp_path):
    # The demo's paths are relative (data/...); Delta's SQL reads a relative delta.`path` as a table
    # name, so MERGE, ALTER TABLE and DESCRIBE HISTORY get the absolute path the writer used. (Relative
    # to the working directory the session's JVM started in, so no chdir here.)
    current, history = (OutputConfig(path=os.path.relpath(tmp_path / "data" / t)) for t in ("current", "history"))
    assert not current.path.startswith("/")
    for as_of, rows in ((D1, [("a", 1, "Loyal", 0.9, "1")]), (D2, [("a", 2, "New", 0.8, "1")])):
        merge_current_assignments(spark, scored(spark, rows), current, as_of)
        merge_assignment_history(spark, scored(spark, rows), history, as_of)
    assert delta_version(spark, current) == delta_version(spark, history) == 1  # created, then one MERGE each
    assert [r.segment for r in spark.read.format("delta").load(str(tmp_path / "data/current")).collect()] == [2]
    assert spark.read.format("delta").load(str(tmp_path / "data/history")).count() == 2


@pytest.mark.parametrize("layout", ["missing", "empty folder", "parquet folder", "parquet file"])
def test_table_exists_is_false_for_anything_but_a_delta_table(spark, tmp_path, layout):
    path = tmp_path / "t"
    if layout == "empty folder":
        path.mkdir()
    elif layout != "missing":
        spark.range(3).coalesce(1).write.parquet(str(path))
        if layout == "parquet file":
            path = next(path.glob("*.parquet"))
    assert not table_exists(spark, OutputConfig(path=str(path)))
    assert delta_version(spark, OutputConfig(path=str(path))) is None


def test_pandas_nanoseconds_are_found_in_the_footer_before_spark_reads_the_file(spark, tmp_path):
    """Not by a failed read: that failed a Spark job and logged an executor error with its stack trace
    on every run of the feature job over a file pandas wrote."""
    import pandas as pd

    pd.DataFrame({"ts": pd.to_datetime(["2024-01-02 10:00:00.5"]), "x": [1]}).to_parquet(tmp_path / "p.parquet")
    nanos, saved = "spark.sql.legacy.parquet.nanosAsLong", spark.conf.get("spark.sql.legacy.parquet.nanosAsLong")
    spark.conf.set(nanos, "false")  # as in a job's new session
    tracker = spark.sparkContext.statusTracker()
    before = set(tracker.getJobIdsForGroup())
    try:
        row = read_table(spark, TableConfig(path=str(tmp_path), format="parquet")).first()
        assert spark.conf.get(nanos) == "true"
    finally:
        spark.conf.set(nanos, saved)
    assert row.ts == dt.datetime(2024, 1, 2, 10, 0, 0, 500000)
    jobs = set(tracker.getJobIdsForGroup()) - before
    assert jobs and {tracker.getJobInfo(j).status for j in jobs} == {"SUCCEEDED"}


def test_parquet_as_pandas_and_pyarrow_write_it(spark, tmp_path):
    import decimal

    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    # pandas' defaults: naive and timezone-aware nanosecond timestamps, dates, decimals
    naive = pd.to_datetime(["2024-01-02 10:00:00.123456789", "2024-01-03 23:59:59"], format="ISO8601")
    pd.DataFrame(
        {
            "customer_id": [42, 7],
            "ts": naive,
            "ts_tz": naive.tz_localize("Europe/Berlin"),
            "day": [dt.date(2024, 1, 2), dt.date(2024, 1, 3)],
            "amount": [decimal.Decimal("12.50"), decimal.Decimal("-3.25")],
        }
    ).to_parquet(tmp_path / "pandas.parquet")
    df = read_table(spark, TableConfig(path=str(tmp_path / "pandas.parquet"), format="parquet"))
    assert dict(df.dtypes) == {"customer_id": "bigint", "ts": "timestamp", "ts_tz": "timestamp", "day": "date",
                               "amount": "decimal(4,2)"}  # fmt: skip
    rows = df.orderBy("ts").collect()  # the session is UTC; nanoseconds are truncated to microseconds
    assert [r.ts for r in rows] == [dt.datetime(2024, 1, 2, 10, 0, 0, 123456), dt.datetime(2024, 1, 3, 23, 59, 59)]
    assert [r.ts_tz for r in rows] == [dt.datetime(2024, 1, 2, 9, 0, 0, 123456), dt.datetime(2024, 1, 3, 22, 59, 59)]
    assert rows[0].customer_id == 42  # a plain long column stays a long

    # pyarrow: INT96 (old Spark, Impala, Hive) and millisecond timestamps
    table = pa.table({"c": ["a"], "ts": pa.array([dt.datetime(2024, 1, 2, 10)], pa.timestamp("ns"))})
    pq.write_table(table, tmp_path / "int96.parquet", use_deprecated_int96_timestamps=True)
    pq.write_table(table.cast(pa.schema([("c", pa.string()), ("ts", pa.timestamp("ms"))])), tmp_path / "ms.parquet")
    for name in ("int96", "ms"):
        back = read_table(spark, TableConfig(path=str(tmp_path / f"{name}.parquet"), format="parquet")).first()
        assert back.ts == dt.datetime(2024, 1, 2, 10), name
