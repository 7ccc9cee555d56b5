"""Segment profile table: what each segment looks like in raw (unscaled) feature units.

Pure transform; one aggregation pass, k rows out:

``segment``, ``customers``, ``customer_share``, ``revenue_share`` (share of total
``net_spend``; 0 when the total is 0), then ``mean_<feature>`` for every feature.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

__all__ = ["segment_profile"]


def segment_profile(df: DataFrame, feature_cols: Sequence[str], segment_col: str = "segment") -> DataFrame:
    """One row per segment of ``df`` (customers with raw features and ``segment_col``), ordered by segment."""
    has_spend = "net_spend" in df.columns
    aggregated = df.groupBy(F.col(segment_col).alias("segment")).agg(
        F.count(F.lit(1)).alias("customers"),
        (F.sum("net_spend") if has_spend else F.lit(0.0)).cast("double").alias("_revenue"),
        *[F.avg(F.col(c).cast("double")).alias(f"mean_{c}") for c in feature_cols],
    )
    everything = Window.partitionBy()
    total_revenue = F.sum("_revenue").over(everything)
    return (
        aggregated.withColumn("customer_share", F.col("customers") / F.sum("customers").over(everything))
        .withColumn("revenue_share", F.when(total_revenue != 0, F.col("_revenue") / total_revenue).otherwise(0.0))
        .select("segment", "customers", "customer_share", "revenue_share", *[f"mean_{c}" for c in feature_cols])
        .orderBy("segment")
    )
