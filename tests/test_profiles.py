from __future__ import annotations

from pyspark.testing import assertDataFrameEqual

from segmentation.profiles import segment_profile


def test_profile_arithmetic_on_a_small_base(spark):
    df = spark.createDataFrame(
        [("a", 0, 100.0, 2.0), ("b", 0, 300.0, 4.0), ("c", 1, -50.0, 1.0), ("d", 1, 50.0, 1.0), ("e", 1, 0.0, 1.0)],
        "customer_id STRING, segment INT, net_spend DOUBLE, n_purchases DOUBLE",
    )
    out = segment_profile(df, ["net_spend", "n_purchases"])
    expected = [(0, 2, 0.4, 1.0, 200.0, 3.0), (1, 3, 0.6, 0.0, 0.0, 1.0)]
    assertDataFrameEqual(out, spark.createDataFrame(expected, out.schema), rtol=1e-9)
    assert out.columns == [
        "segment",
        "customers",
        "customer_share",
        "revenue_share",
        "mean_net_spend",
        "mean_n_purchases",
    ]
