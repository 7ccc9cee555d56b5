from __future__ import annotations

import math

import pytest
from pyspark.testing import assertDataFrameEqual

from segmentation.profiles import category_lift, segment_profile, top_categories

SCHEMA = (
    "customer_id STRING, segment INT, net_spend DOUBLE, n_purchases DOUBLE, tenure_days INT, churned INT, "
    "cat_books DOUBLE, cat_home DOUBLE"
)
ROWS = [
    ("a", 0, 100.0, 2.0, 10, 0, 0.5, 0.5),
    ("b", 0, 300.0, 4.0, 365, 0, 1.0, 0.0),
    ("c", 1, -50.0, 1.0, 100, 1, 0.0, 1.0),
    ("d", 1, 50.0, 1.0, 100, 0, 0.0, 1.0),
    ("e", 1, 0.0, 1.0, 50, 1, 0.5, 0.5),
]


def test_profile_arithmetic_on_a_small_base(spark):
    df = spark.createDataFrame(ROWS, SCHEMA)
    out = segment_profile(df, ["net_spend", "n_purchases"], horizon_days=365)
    spend_std = math.sqrt((100**2 + 300**2 + 50**2 + 50**2) / 5 - 80**2)  # population std, base mean 80
    count_std = math.sqrt((4 + 16 + 1 + 1 + 1) / 5 - 1.8**2)  # base mean 1.8
    expected = [
        # segment, customers, customer share, revenue share, churn rate, historical value,
        # forward value: a's tenure 10 is floored to 30 days: 100/30*365; b: 300/365*365
        (0, 2, 0.4, 1.0, 0.0, 200.0, (100 / 30 * 365 + 300) / 2,
         200.0, 3.0, 100.0, 2.0, (200 - 80) / spend_std, (3 - 1.8) / count_std),
        # c and e churned (forward 0); d: 50/100*365. Medians are observed values (percentile_approx).
        (1, 3, 0.6, 0.0, 2 / 3, 0.0, 50 / 100 * 365 / 3,
         0.0, 1.0, 0.0, 1.0, (0 - 80) / spend_std, (1 - 1.8) / count_std),
    ]  # fmt: skip
    assertDataFrameEqual(out, spark.createDataFrame(expected, out.schema), rtol=1e-9)
    assert out.columns == [
        "segment", "customers", "customer_share", "revenue_share", "churn_rate", "historical_value",
        "forward_value", "mean_net_spend", "mean_n_purchases", "median_net_spend", "median_n_purchases",
        "z_net_spend", "z_n_purchases",
    ]  # fmt: skip


def test_a_constant_feature_has_z_zero_and_missing_columns_give_nulls(spark):
    df = spark.createDataFrame([("a", 0, 1.0), ("b", 1, 1.0)], "customer_id STRING, segment INT, flat DOUBLE")
    rows = segment_profile(df, ["flat"]).collect()
    assert [r.z_flat for r in rows] == [0.0, 0.0]
    assert all(r.churn_rate is None and r.forward_value is None and r.revenue_share == 0.0 for r in rows)


def test_category_lift_and_recommendations(spark):
    lift = category_lift(spark.createDataFrame(ROWS, SCHEMA), ["cat_books", "cat_home"])
    # base shares: books 2.0/5 = 0.4, home 3.0/5 = 0.6
    assert lift.loc[0, "cat_books"] == pytest.approx(0.75 / 0.4)
    assert lift.loc[1, "cat_home"] == pytest.approx((2.5 / 3) / 0.6)
    assert lift.loc[0, "cat_home"] == pytest.approx(0.25 / 0.6)
    assert top_categories(lift, 3) == {0: [("books", pytest.approx(1.875))], 1: [("home", pytest.approx(25 / 18))]}
