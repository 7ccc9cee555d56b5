from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from segmentation.config import load_config
from segmentation.errors import ContractError, InputNotFoundError, QuarantineThresholdError
from segmentation.feature_pipeline import read_quality, run_feature_pipeline

BASE = Path(__file__).resolve().parent.parent / "conf" / "base.yaml"
RENAMED = {"customer_id": "Kunde", "timestamp": "Zeit", "amount": "Betrag", "transaction_id": "Beleg",
           "quantity": None, "category": "Warengruppe", "channel": None}  # fmt: skip
ROWS = [
    ("T1", "A", "2024-01-01 10:00:00", "100.0", "home"),
    ("T2", "A", "2024-01-11 10:00:00", "-20.0", "toys"),
    ("T3", "A", "2024-01-25 10:00:00", "30.0", "toys"),
    ("T4", "B", "2024-01-05 10:00:00", "40.0", "toys"),
    ("T4", "B", "2024-01-05 10:00:00", "40.0", "toys"),  # duplicate transaction id
    ("T5", "C", "2024-02-20 10:00:00", "15.0", "toys"),  # after as_of
    ("T6", None, "2024-01-20 10:00:00", "15.0", "toys"),  # no customer
]
SCHEMA = "Beleg STRING, Kunde STRING, Zeit STRING, Betrag STRING, Warengruppe STRING"


def config(tmp_path, fmt, as_of="2024-01-31", **extra):
    sets = [
        f"input.transactions.path={tmp_path / 'in'}",
        f"input.transactions.format={fmt}",
        f"features.as_of={as_of}",
        f"features.output.path={tmp_path / 'features'}",
        f"features.quarantine.path={tmp_path / 'quarantine'}",
        f"features.quality.path={tmp_path / 'quality'}",
        "features.max_quarantine_share=0.6",
        *[f"input.transactions.columns.{k}={'null' if v is None else v}" for k, v in RENAMED.items()],
        *[f"{k}={v}" for k, v in extra.items()],
    ]
    return load_config([BASE], sets)


def persisted_rdds(spark) -> int:
    """Persisted RDDs other than Delta's own cache of table states (which reading a Delta input adds)."""
    rdds = spark.sparkContext._jsc.getPersistentRDDs().values()
    return sum(1 for rdd in rdds if not rdd.name().startswith("Delta Table State"))


def write_input(spark, tmp_path, fmt, rows=ROWS):
    df = spark.createDataFrame(rows, SCHEMA)
    if fmt == "csv":
        df.coalesce(1).write.option("header", "true").csv(str(tmp_path / "in"))
    elif fmt == "parquet":
        df.write.parquet(str(tmp_path / "in"))
    else:
        df.write.format("delta").save(str(tmp_path / "in"))


@pytest.mark.parametrize("fmt", ["csv", "parquet", "delta"])
def test_every_format_with_renamed_columns(spark, tmp_path, fmt):
    write_input(spark, tmp_path, fmt)
    cached_before = persisted_rdds(spark)
    report = run_feature_pipeline(spark, config(tmp_path, fmt))
    assert persisted_rdds(spark) == cached_before  # the labelled rows and the activity were unpersisted
    assert (report.rows_read, report.rows_kept, report.customers) == (7, 4, 2)
    assert report.quarantined["duplicate_transaction_id"] == 1
    assert report.quarantined["after_as_of"] == 1 and report.quarantined["null_customer_id"] == 1
    features = {r.customer_id: r for r in spark.read.format("delta").load(str(tmp_path / "features")).collect()}
    assert set(features) == {"A", "B"}
    assert features["A"].net_spend == pytest.approx(110.0) and features["A"].cat_toys == pytest.approx(30 / 130)
    assert features["B"].n_transactions == 1 and str(features["B"].as_of) == "2024-01-31"
    quarantine = spark.read.format("delta").load(str(tmp_path / "quarantine"))
    assert sorted(r.reason for r in quarantine.collect()) == [
        "after_as_of",
        "duplicate_transaction_id",
        "null_customer_id",
    ]
    quality = read_quality(spark, config(tmp_path, fmt), "2024-01-31")
    assert quality["dq_rows_read"] == 7 and quality["dq_customers"] == 2


def test_rerun_replaces_only_its_snapshot(spark, tmp_path):
    write_input(spark, tmp_path, "delta")
    run_feature_pipeline(spark, config(tmp_path, "delta", as_of="2024-01-15"))
    run_feature_pipeline(spark, config(tmp_path, "delta", as_of="2024-01-31"))
    path = str(tmp_path / "features")
    before = sorted(spark.read.format("delta").load(path).collect())
    run_feature_pipeline(spark, config(tmp_path, "delta", as_of="2024-01-31"))
    after = spark.read.format("delta").load(path)
    assert sorted(after.collect()) == before
    counts = {str(r.as_of): r["count"] for r in after.groupBy("as_of").count().collect()}
    assert counts == {"2024-01-15": 2, "2024-01-31": 2}


def test_quarantine_threshold_fails_and_writes_nothing(spark, tmp_path):
    write_input(spark, tmp_path, "parquet")
    cached_before = persisted_rdds(spark)
    with pytest.raises(QuarantineThresholdError, match=r"3 of 7 rows \(42.86%\).*max_quarantine_share=0.1.*Nothing"):
        run_feature_pipeline(spark, config(tmp_path, "parquet", **{"features.max_quarantine_share": 0.1}))
    assert persisted_rdds(spark) == cached_before
    assert not (tmp_path / "features").exists() and not (tmp_path / "quarantine").exists()


def test_empty_input_and_missing_column_stop_with_a_clear_message(spark, tmp_path):
    spark.createDataFrame([], SCHEMA).write.format("delta").save(str(tmp_path / "in"))
    with pytest.raises(ContractError, match="is empty"):
        run_feature_pipeline(spark, config(tmp_path, "delta"))
    with pytest.raises(ContractError, match=r"column 'Summe' \(role amount\) is missing"):
        run_feature_pipeline(spark, config(tmp_path, "delta", **{"input.transactions.columns.amount": "Summe"}))
    assert not (tmp_path / "features").exists()


def test_customer_attributes_are_joined_and_encoded(spark, tmp_path):
    write_input(spark, tmp_path, "delta")
    spark.createDataFrame(
        [("A", 30, "north"), ("B", None, "south")], "cid STRING, age INT, region STRING"
    ).write.format("delta").save(str(tmp_path / "customers"))
    cfg = config(tmp_path, "delta", **{
        "input.customers.enabled": "true", "input.customers.path": str(tmp_path / "customers"),
        "input.customers.customer_id": "cid", "input.customers.numeric": "[age]",
        "input.customers.categorical": "[region]",
    })  # fmt: skip
    run_feature_pipeline(spark, cfg)
    rows = {r.customer_id: r for r in spark.read.format("delta").load(str(tmp_path / "features")).collect()}
    assert rows["B"].age == 30.0  # imputed with the median
    assert (rows["A"].region_north, rows["A"].region_south, rows["A"].region_other) == (1.0, 0.0, 0.0)
    assert dt.date(2024, 1, 31) == rows["A"].as_of


def test_missing_customers_table_fails_and_leaves_nothing_cached(spark, tmp_path):
    write_input(spark, tmp_path, "parquet")
    cached_before = persisted_rdds(spark)
    cfg = config(tmp_path, "parquet", **{
        "input.customers.enabled": "true", "input.customers.path": str(tmp_path / "no_customers"),
        "input.customers.customer_id": "cid", "input.customers.numeric": "[age]",
    })  # fmt: skip
    with pytest.raises(InputNotFoundError, match="no_customers"):
        run_feature_pipeline(spark, cfg)
    assert persisted_rdds(spark) == cached_before  # the labelled rows and the activity were unpersisted
    assert not (tmp_path / "features").exists()
