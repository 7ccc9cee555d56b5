from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from delta.tables import DeltaTable

from segmentation.config import load_config
from segmentation.errors import ContractError, InputNotFoundError, JoinMatchError, QuarantineThresholdError
from segmentation.feature_pipeline import run_feature_pipeline
from segmentation.snapshots import read_quality

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
    assert report.quarantined["duplicate_transaction_id"] == 1 and report.quarantined["null_customer_id"] == 1
    # features.as_of is set: the later row is outside the snapshot, not bad data.
    assert report.quarantined["after_as_of"] == 0 and report.rows_after_window == 1
    features = {r.customer_id: r for r in spark.read.format("delta").load(str(tmp_path / "features")).collect()}
    assert set(features) == {"A", "B"}
    assert features["A"].net_spend == pytest.approx(110.0) and features["A"].cat_toys == pytest.approx(30 / 130)
    assert features["B"].n_transactions == 1 and str(features["B"].as_of) == "2024-01-31"
    quarantine = spark.read.format("delta").load(str(tmp_path / "quarantine"))
    assert sorted(r.reason for r in quarantine.collect()) == [
        "duplicate_transaction_id",
        "null_customer_id",
    ]
    quality = read_quality(spark, config(tmp_path, fmt), "2024-01-31")
    assert quality["dq_rows_read"] == 7 and quality["dq_customers"] == 2 and quality["dq_rows_after_window"] == 1


def test_shuffles_follow_the_input_rows_and_the_session_gets_its_own_back(spark, tmp_path, caplog):
    write_input(spark, tmp_path, "parquet")
    before = spark.conf.get("spark.sql.shuffle.partitions")
    assert int(before) < 7
    with caplog.at_level("INFO", logger="segmentation.spark"):
        report = run_feature_pipeline(spark, config(tmp_path, "parquet", **{"spark.rows_per_shuffle_partition": 1}))
    assert f"7 input rows: 7 shuffle partitions instead of {before}" in caplog.text
    assert spark.conf.get("spark.sql.shuffle.partitions") == before
    assert (report.rows_read, report.rows_kept, report.customers) == (7, 4, 2)
    features = {r.customer_id: r for r in spark.read.format("delta").load(str(tmp_path / "features")).collect()}
    assert features["A"].net_spend == pytest.approx(110.0) and features["A"].cat_toys == pytest.approx(30 / 130)


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


def test_a_snapshot_keeps_the_category_columns_of_the_tables_first(spark, tmp_path):
    """A category new in a later snapshot counts in cat_other, and one it lacks gets a share of 0,
    so every snapshot has the table's columns (Delta refuses others) and a model trained on one
    scores the next. The category garden is bought only after 2024-01-15."""
    rows = [*ROWS, ("T7", "A", "2024-01-20 10:00:00", "50.0", "garden")]
    tables = {}
    for first, then in (("2024-01-15", "2024-01-31"), ("2024-01-31", "2024-01-15")):
        root = tmp_path / first
        write_input(spark, root, "delta", rows)
        for as_of in (first, then):
            run_feature_pipeline(spark, config(root, "delta", as_of=as_of))
        tables[first] = spark.read.format("delta").load(str(root / "features"))
        assert len(DeltaTable.forPath(spark, str(root / "features")).history().collect()) == 2
    late_first, early_first = tables["2024-01-15"], tables["2024-01-31"]
    assert {"cat_home", "cat_toys"} <= set(late_first.columns) and "cat_garden" not in late_first.columns
    a = late_first.where("customer_id = 'A' AND as_of = '2024-01-31'").first()  # bought 100 home, 30 toys, 50 garden
    assert (a.cat_home, a.cat_toys, a.cat_other) == pytest.approx((100 / 180, 30 / 180, 50 / 180))
    a = early_first.where("customer_id = 'A' AND as_of = '2024-01-15'").first()  # garden not bought yet
    assert "cat_garden" in early_first.columns and (a.cat_garden, a.cat_home, a.cat_other) == (0.0, 1.0, 0.0)


def test_quarantine_threshold_fails_and_writes_nothing(spark, tmp_path):
    write_input(spark, tmp_path, "parquet")
    cached_before = persisted_rdds(spark)
    with pytest.raises(QuarantineThresholdError, match=r"2 of 6 rows \(33.33%\).*max_quarantine_share=0.1.*Nothing"):
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


# --------------------------------------------------------------------------- files as users write them

USER_ROWS = [  # customer, timestamp, amount, basket (order number), quantity
    (42, "2024-01-02 10:00:00", 10.0, 1001, 2),
    (42, "2024-01-02 10:00:00", 20.0, 1001, 1),
    (42, "2024-01-02 10:05:00", -5.0, 1001, -1),  # a return inside the basket
    (42, "2024-01-20 18:30:00", 30.0, 1002, 3),  # a one-line basket
    (7, "2024-01-05 09:00:00", 8.0, 1003, 1),
    (7, "2024-01-05 09:00:00", 12.0, 1003, 4),
    (7, "2024-01-29 23:59:59", 40.0, 1004, 1),
]


def user_config(tmp_path, fmt, **extra):
    sets = {
        "input.transactions.path": tmp_path / "in", "input.transactions.format": fmt,
        "features.as_of": "2024-01-31",
        **{f"features.{k}.path": tmp_path / k for k in ("output", "quarantine", "quality")},
        **extra,
    }  # fmt: skip
    return load_config([BASE], [f"{k}={v}" for k, v in sets.items()])


def user_frame():
    import pandas as pd

    pdf = pd.DataFrame(USER_ROWS, columns=["customer_id", "timestamp", "amount", "basket_id", "quantity"])
    return pdf.assign(timestamp=pd.to_datetime(pdf["timestamp"]))  # datetime64[ns], as pandas reads it


def features_of(spark, tmp_path):
    return spark.read.format("delta").load(str(tmp_path / "output")).drop("as_of")


def assert_all_finite(df):
    numeric = [c for c, t in df.dtypes if t in ("double", "bigint", "int")]
    bad = df.where(" OR ".join(f"NOT (isnotnull(`{c}`) AND abs(`{c}`) < 1e300)" for c in numeric))
    assert bad.count() == 0, bad.collect()


def test_files_written_by_pandas_pyarrow_and_csv_give_the_features_spark_files_give(spark, tmp_path, caplog):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyspark.testing import assertDataFrameEqual

    pdf = user_frame()
    spark_rows = [(c, dt.datetime.fromisoformat(t), a, b, q) for c, t, a, b, q in USER_ROWS]
    writers = {
        "spark": ("parquet", lambda p: spark.createDataFrame(
            spark_rows, "customer_id BIGINT, timestamp TIMESTAMP, amount DOUBLE, basket_id BIGINT, quantity BIGINT"
        ).write.parquet(str(p))),
        "pandas": ("parquet", lambda p: pdf.to_parquet(p)),  # nanosecond timestamps
        "pyarrow": ("parquet", lambda p: pq.write_table(pa.Table.from_pandas(pdf, preserve_index=False), p)),
        "csv": ("csv", lambda p: (p.mkdir(), pdf.to_csv(p / "export.csv", index=False))),
    }  # fmt: skip
    results = {}
    for name, (fmt, write) in writers.items():
        root = tmp_path / name
        root.mkdir()
        write(root / "in")
        with caplog.at_level("INFO", logger="segmentation.quality"):
            report = run_feature_pipeline(spark, user_config(root, fmt))
        assert (report.rows_read, report.rows_kept, report.customers) == (7, 7, 2), name
        results[name] = features_of(spark, root).orderBy("customer_id").cache()
        assert_all_finite(results[name])
    # transaction_id, product_id, category and channel are absent under their default names: skipped, said once
    assert "optional role(s) transaction_id, product_id, category, channel" in caplog.text
    for name in ("pandas", "pyarrow", "csv"):
        assertDataFrameEqual(results[name], results["spark"], rtol=1e-9)
    rows = {r.customer_id: r for r in results["pandas"].collect()}
    # 42: baskets 1001 (two purchase lines and a return) and 1002 (one line); 7: 1003 (two lines) and 1004
    assert (rows["42"].n_purchases, rows["42"].n_baskets, rows["7"].n_baskets) == (3, 2, 2)
    assert (rows["42"].avg_basket_value, rows["42"].avg_items_per_basket, rows["42"].avg_lines_per_basket) == (
        30.0, 3.0, 1.5,
    )  # fmt: skip
    assert (rows["7"].avg_basket_value, rows["7"].avg_items_per_basket, rows["7"].avg_lines_per_basket) == (
        30.0, 3.0, 1.5,
    )  # fmt: skip
    assert rows["42"].net_spend == 55.0 and rows["42"].n_purchase_days == 2


def test_product_and_customer_joins_report_their_match_rates(spark, tmp_path, caplog):
    import pandas as pd

    pdf = user_frame().assign(product_id=[1, 2, 2, 3, 1, 99, 2])  # product 99 is not in the product table
    pdf.to_parquet(tmp_path / "in")
    products = {"product_id": [1, 2, 3, 4], "department": ["dairy", "bakery", "dairy", "toys"],
                "brand": ["national", "private", "national", "national"]}  # fmt: skip
    pd.DataFrame(products).to_parquet(tmp_path / "products")
    # customer 7 has no row; "income" is null for every matched customer
    pd.DataFrame({"hh": [42, 1], "age": ["45-54", "25-34"], "income": [None, "50-74K"]}).to_parquet(tmp_path / "cust")
    cfg = user_config(tmp_path, "parquet", **{
        "input.products.enabled": "true", "input.products.path": tmp_path / "products",
        "input.products.format": "parquet", "input.products.category": "department",
        "input.products.attributes": "[brand]",
        "input.customers.enabled": "true", "input.customers.path": tmp_path / "cust",
        "input.customers.format": "parquet", "input.customers.customer_id": "hh",
        "input.customers.categorical": "[age, income]",
    })  # fmt: skip
    with caplog.at_level("INFO"):
        report = run_feature_pipeline(spark, cfg)
    assert report.unknown_product_lines == 1 and report.products_match_share == pytest.approx(6 / 7)
    assert report.customers_match_share == pytest.approx(0.5)
    assert "6 of 7 kept lines (85.71%) found their product" in caplog.text
    assert "1 of 2 customers (50.00%) have a row" in caplog.text
    assert "attribute(s) ['income'] are null for every matched customer; dropped" in caplog.text
    quality = read_quality(spark, cfg, "2024-01-31")
    assert quality["dq_products_match_share"] == pytest.approx(6 / 7) and quality["dq_unknown_product_lines"] == 1
    assert quality["dq_customers_match_share"] == pytest.approx(0.5)
    features = features_of(spark, tmp_path)
    assert_all_finite(features)
    assert not [c for c in features.columns if c.startswith("income")]
    rows = {r.customer_id: r for r in features.collect()}
    # 7's line of product 99 still counts (gross 60), under the category "unknown"
    assert rows["7"].gross_spend == 60.0 and rows["7"].cat_unknown == pytest.approx(12 / 60)
    assert rows["7"].cat_dairy == pytest.approx(8 / 60) and rows["7"].brand_unknown == pytest.approx(12 / 60)
    assert rows["42"].cat_dairy == pytest.approx(40 / 60) and rows["42"].brand_private == pytest.approx(20 / 60)
    assert rows["42"].n_categories == 2 and rows["7"].n_categories == 3  # returned product 2 counts too
    assert (rows["42"].age_45_54, rows["7"].age_45_54, rows["7"].age_other) == (1.0, 0.0, 0.0)


def test_join_below_min_match_share_names_both_keys_and_unmatched_ids(spark, tmp_path):
    import pandas as pd

    user_frame().to_parquet(tmp_path / "in")  # customer_id is BIGINT: 42, 7
    pd.DataFrame({"cid": ["0042", "0007"], "age": [30, 40]}).to_parquet(tmp_path / "cust")  # zero-padded strings
    cfg = user_config(tmp_path, "parquet", **{
        "input.customers.enabled": "true", "input.customers.path": tmp_path / "cust",
        "input.customers.format": "parquet", "input.customers.customer_id": "cid", "input.customers.numeric": "[age]",
    })  # fmt: skip
    with pytest.raises(JoinMatchError) as failure:
        run_feature_pipeline(spark, cfg)
    message = str(failure.value)
    assert "only 0 of 2 customers (0.00%) of the transactions (column 'customer_id', bigint)" in message
    assert f"input.customers '{tmp_path / 'cust'}' (column 'cid', string)" in message
    assert "min_match_share=0.5" in message
    assert "transactions without a match: 42, 7" in message or "transactions without a match: 7, 42" in message
    assert "'0042'" in message and "'0007'" in message
    assert not (tmp_path / "output").exists()
    # a role the user named explicitly must exist
    with pytest.raises(ContractError, match=r"column 'order_no' \(role basket_id\) is missing"):
        run_feature_pipeline(
            spark, user_config(tmp_path, "parquet", **{"input.transactions.columns.basket_id": "order_no"})
        )
