from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from lifetimes.utils import summary_data_from_transaction_data
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from segmentation.features import customer_features, demographic_features, slug, top_values

AS_OF = dt.date(2024, 1, 31)
KEPT_SCHEMA = "customer_id STRING, day DATE, amount DOUBLE, quantity DOUBLE, category STRING, channel STRING"
d = dt.date


@pytest.fixture(scope="module")
def kept(spark):
    rows = [
        # A: three dates, a return, two categories
        ("A", d(2024, 1, 1), 100.0, 2.0, "Home & Garden", "web"),
        ("A", d(2024, 1, 1), 50.0, 1.0, "toys", "store"),
        ("A", d(2024, 1, 11), -20.0, -1.0, "toys", "web"),
        ("A", d(2024, 1, 25), 30.0, 3.0, "toys", "web"),
        # B: a single purchase, no quantity recorded
        ("B", d(2024, 1, 5), 40.0, None, "toys", "store"),
        # C: only a return, no category
        ("C", d(2024, 1, 30), -15.0, -1.0, None, "web"),
        # D: bought and returned the same day: net zero
        ("D", d(2024, 1, 2), 25.0, 1.0, "books", "app"),
        ("D", d(2024, 1, 2), -25.0, -1.0, "books", "app"),
    ]
    return spark.createDataFrame(rows, KEPT_SCHEMA)


@pytest.fixture(scope="module")
def features(kept):
    categories = top_values(kept, "category", 2, weight=F.when(F.col("amount") > 0, F.col("amount")))
    channels = top_values(kept, "channel", 2)
    assert categories == ["toys", "Home & Garden"]  # by gross spend: 120 vs 100 vs 25
    assert channels == ["web", "app"]  # by count: 4, then 2 (app before store by name)
    return customer_features(kept, AS_OF, categories, channels, trend_window_days=10, churn_gap_multiple=2.0).cache()


COLUMNS = [
    "customer_id", "as_of", "recency_days", "tenure_days", "n_transactions", "n_purchases", "n_baskets",
    "n_returns", "n_purchase_days", "net_spend", "gross_spend", "avg_basket_value", "avg_items_per_basket",
    "mean_gap_days", "std_gap_days", "frequency", "recency", "T", "monetary_value", "return_rate", "return_value_share",
    "n_categories", "cat_toys", "cat_home_garden", "cat_other", "chan_web", "chan_app", "chan_other",
    "spend_recent", "spend_previous", "trend", "churn_ratio", "churned",
]  # fmt: skip


def test_schema_and_column_order(features):
    assert features.columns == COLUMNS


def test_every_feature_on_hand_checked_customers(spark, features):
    expected = [
        # recency 6, tenure 30; gaps 10 and 14; M=160; lifetimes monetary = mean(-20, 30) = 5
        ("A", AS_OF, 6.0, 30.0, 4, 3, 3, 1, 3, 160.0, 180.0, 60.0, 2.0, 12.0, 2.0, 2.0, 24.0, 30.0, 5.0, 0.25, 0.1,
         2, 80 / 180, 100 / 180, 0.0, 0.75, 0.0, 0.25, 30.0, 0.0, 1.0, 0.5, 0),
        # single purchase: the typical gap is the repeat customers' median (A's 12 days)
        ("B", AS_OF, 26.0, 26.0, 1, 1, 1, 0, 1, 40.0, 40.0, 40.0, 1.0, 0.0, 0.0, 0.0, 0.0, 26.0, 0.0, 0.0, 0.0,
         1, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 26 / 12, 1),
        # only a return: no purchases, negative net spend, all shares 0, trend -1
        ("C", AS_OF, 1.0, 1.0, 1, 0, 0, 1, 1, -15.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0,
         0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, -15.0, 0.0, -1.0, 1 / 12, 0),
        # net zero on one day; books is outside the top 2 categories
        ("D", AS_OF, 29.0, 29.0, 2, 1, 1, 1, 1, 0.0, 25.0, 25.0, 1.0, 0.0, 0.0, 0.0, 0.0, 29.0, 0.0, 0.5, 0.5,
         1, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 29 / 12, 1),
    ]  # fmt: skip
    assertDataFrameEqual(features, spark.createDataFrame(expected, features.schema), rtol=1e-9)


def test_all_features_are_finite(features):
    numeric = [c for c, t in features.dtypes if t in ("double", "bigint", "int")]
    bad = features.where(" OR ".join(f"NOT (isnotnull({c}) AND abs({c}) < 1e300)" for c in numeric)).count()
    assert bad == 0


def test_fixed_median_gap_and_no_optional_columns(spark):
    kept = spark.createDataFrame(
        [("A", d(2024, 1, 1), 10.0), ("A", d(2024, 1, 21), 10.0), ("B", d(2024, 1, 20), 5.0)],
        "customer_id STRING, day DATE, amount DOUBLE",
    )
    out = customer_features(kept, AS_OF, median_gap_days=4.0, churn_gap_multiple=2.0)
    assert not [c for c in out.columns if c.startswith(("cat_", "chan_"))]
    rows = {r.customer_id: r for r in out.collect()}
    assert rows["B"].churn_ratio == pytest.approx(11 / 4) and rows["B"].churned == 1
    assert rows["A"].churn_ratio == pytest.approx(10 / 20) and rows["A"].churned == 0
    assert rows["A"].avg_items_per_basket == 1.0 and rows["A"].n_categories == 0


def test_lifetimes_columns_equal_the_lifetimes_library(spark):
    rng = np.random.default_rng(11)
    n = 4000
    customers = rng.integers(0, 300, n)
    days = rng.integers(0, 365, n)
    # repeat buyers cluster their days, so same-day purchases are common
    days = np.where(customers % 3 == 0, days % 20, days)
    amounts = np.round(rng.lognormal(3.5, 0.8, n) * np.where(rng.random(n) < 0.1, -1, 1), 2)
    start = pd.Timestamp("2023-01-01")
    pdf = pd.DataFrame(
        {
            "customer_id": [f"c{c}" for c in customers],
            "ts": start + pd.to_timedelta(days, unit="D") + pd.to_timedelta(rng.integers(0, 86_400, n), unit="s"),
            "amount": amounts,
        }
    )
    as_of = dt.date(2023, 12, 31)
    reference = summary_data_from_transaction_data(
        pdf, "customer_id", "ts", monetary_value_col="amount", observation_period_end=str(as_of), freq="D"
    ).sort_index()
    kept = spark.createDataFrame(pdf.assign(day=pdf["ts"].dt.date)[["customer_id", "day", "amount"]])
    ours = (
        customer_features(kept, as_of)
        .select("customer_id", "frequency", "recency", "T", "monetary_value")
        .toPandas()
        .set_index("customer_id")
        .sort_index()
    )
    assert list(ours.index) == list(reference.index)
    for column in ("frequency", "recency", "T", "monetary_value"):
        np.testing.assert_allclose(ours[column].to_numpy(), reference[column].to_numpy(), rtol=1e-9, atol=1e-9)


def test_demographics_one_hot_and_median_imputation(spark):
    customers = spark.createDataFrame(
        [("A", 30, "north"), ("B", None, "south"), ("C", 50, "east"), ("D", 40, None)],
        "customer_id STRING, age INT, region STRING",
    )
    out = demographic_features(customers, ["age"], ["region"], {"region": ["north", "south"]}, {"age": 40.0})
    assert out.columns == ["customer_id", "age", "region_north", "region_south", "region_other"]
    expected = [("A", 30.0, 1.0, 0.0, 0.0), ("B", 40.0, 0.0, 1.0, 0.0), ("C", 50.0, 0.0, 0.0, 1.0),
                ("D", 40.0, 0.0, 0.0, 1.0)]  # fmt: skip
    assertDataFrameEqual(out, spark.createDataFrame(expected, out.schema))


def test_slug():
    assert slug("Home & Garden") == "home_garden"
    assert slug("  ") == "blank"


BASKET_SCHEMA = "customer_id STRING, day DATE, amount DOUBLE, quantity DOUBLE, basket_id STRING, brand STRING"


def assert_all_finite(df):
    numeric = [c for c, t in df.dtypes if t in ("double", "bigint", "int")]
    bad = df.where(" OR ".join(f"NOT (isnotnull(`{c}`) AND abs(`{c}`) < 1e300)" for c in numeric))
    assert bad.count() == 0, bad.collect()


def test_line_item_baskets_hand_checked(spark):
    kept = spark.createDataFrame(
        [
            # A: basket b1 has two purchase lines and a return line; b2 is a one-line basket
            ("A", d(2024, 1, 1), 10.0, 2.0, "b1", "acme"),
            ("A", d(2024, 1, 1), 20.0, 1.0, "b1", "own"),
            ("A", d(2024, 1, 1), -5.0, -1.0, "b1", "own"),
            ("A", d(2024, 1, 3), 30.0, 3.0, "b2", "acme"),
            # B: basket b1 (the same id as A's: baskets are per customer) and a line without a basket id
            ("B", d(2024, 1, 2), 8.0, 1.0, "b1", "acme"),
            ("B", d(2024, 1, 2), 12.0, 4.0, "b1", None),
            ("B", d(2024, 1, 2), 5.0, 2.0, None, "own"),
            # C: a basket holding only a return
            ("C", d(2024, 1, 4), -7.0, -1.0, "b9", "acme"),
        ],
        BASKET_SCHEMA,
    )
    out = customer_features(kept, AS_OF, mixes={"brand": ["acme"]})
    assert_all_finite(out)
    got = out.select(
        "customer_id", "n_transactions", "n_purchases", "n_baskets", "gross_spend", "net_spend",
        "avg_basket_value", "avg_items_per_basket", "avg_lines_per_basket", "brand_acme", "brand_other",
    )  # fmt: skip
    expected = [
        # 3 purchase lines in 2 baskets; the return nets into net_spend only
        ("A", 4, 3, 2, 60.0, 55.0, 30.0, 3.0, 1.5, 40 / 60, 20 / 60),
        # b1 (2 lines) + the line without a basket: 2 baskets of 25 gross, 7 items
        ("B", 3, 3, 2, 25.0, 25.0, 12.5, 3.5, 1.5, 8 / 25, 17 / 25),
        ("C", 1, 0, 0, 0.0, -7.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    ]
    assertDataFrameEqual(got, spark.createDataFrame(expected, got.schema), rtol=1e-9)
    columns = out.columns
    assert columns.index("n_baskets") == columns.index("n_purchases") + 1
    assert columns.index("avg_lines_per_basket") == columns.index("avg_items_per_basket") + 1


def test_without_basket_id_every_purchase_line_is_a_basket(spark, features):
    rows = {r.customer_id: r for r in features.collect()}
    assert [rows[c].n_baskets for c in "ABCD"] == [rows[c].n_purchases for c in "ABCD"] == [3, 1, 0, 1]
    assert "avg_lines_per_basket" not in features.columns
