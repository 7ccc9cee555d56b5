"""Segment profiles: what each segment looks like in raw (unscaled) units, computed in Spark.

Pure transforms; the wide per-customer table goes through one aggregation for the
segments and one for the whole base, and only k rows reach the driver.

``segment_profile`` columns, one row per segment, ordered by segment:

* ``customers``, ``customer_share``, ``revenue_share`` (share of the total ``net_spend``;
  0 when the total is 0);
* ``churn_rate``: share of the segment's customers with ``churned = 1`` (the feature
  job's churn signal; null without that column);
* ``historical_value``: mean ``net_spend`` per customer over the observation window;
* ``forward_value``: a simple forward value estimate per customer over
  ``horizon_days``, averaged over the segment. Method: a customer's daily spend rate
  is ``net_spend / max(tenure_days, 30)`` (the 30-day floor keeps a first-week
  customer from being extrapolated from a single basket); the estimate is
  ``rate * horizon_days * (1 - churned)``, i.e. customers the churn signal flags are
  expected to spend nothing. It is a planning number, not a fitted CLV model; the
  feature table carries a lifetimes-compatible summary (``frequency``, ``recency``,
  ``T``, ``monetary_value``) for users who want BG/NBD and Gamma-Gamma;
* ``p_alive_mean``, ``expected_purchases_mean``, ``clv_total``, ``clv_mean``: only when the
  customers carry the CLV job's values (``segmentation.clv``: BG/NBD probability alive, expected
  purchases and discounted CLV over ``clv.horizon_days``); the fitted answer to "who is slipping
  away" and "what is it worth" beside the two rules above;
* for every profiled feature ``f``: ``mean_f``, ``median_f`` (approximate, relative
  error 1%) and ``z_f = (segment mean - base mean) / base standard deviation`` (0 for
  a constant feature). Customer attributes (``age``, ``income``, ``region_*``) are
  profiled like any other feature when the feature table has them.

``category_lift`` gives, per segment and category (``cat_<name>`` spend-share
columns), the segment's mean share divided by the base's mean share; the categories
with the highest lift above 1 are the segment's product recommendations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from segmentation.density import OUTLIER_COL
from segmentation.preprocessing import NUMERIC_TYPES

__all__ = [
    "SegmentDescription", "category_columns", "category_lift", "describe_segments", "outlier_profile",
    "profile_columns", "segment_profile", "top_categories",
]  # fmt: skip

_KEYS = {"customer_id", "as_of", "segment", "cluster", "prediction", "probability", "model_version"}
# Per-customer values of the CLV job (clv.output), joined on when the snapshot has them; summarised
# as their own profile columns rather than profiled like a feature.
CLV_COLUMNS = ("p_alive", "expected_purchases", "expected_avg_value", "clv")
CLV_PROFILE_COLUMNS = ("p_alive_mean", "expected_purchases_mean", "clv_total", "clv_mean")
MIN_TENURE_DAYS = 30


def profile_columns(df: DataFrame) -> list[str]:
    """Every numeric column of a feature table but the keys, in table order."""
    skip = _KEYS | set(CLV_COLUMNS)
    return [f.name for f in df.schema.fields if isinstance(f.dataType, NUMERIC_TYPES) and f.name not in skip]


def category_columns(columns: Sequence[str]) -> list[str]:
    """The per-category spend shares (``cat_<name>``), without the catch-all ``cat_other``."""
    return [c for c in columns if c.startswith("cat_") and c != "cat_other"]


def _forward_value(horizon_days: int) -> F.Column:
    rate = F.col("net_spend") / F.greatest(F.col("tenure_days").cast("double"), F.lit(float(MIN_TENURE_DAYS)))
    alive = F.lit(1.0) - F.coalesce(F.col("churned").cast("double"), F.lit(0.0))
    return rate * F.lit(float(horizon_days)) * alive


def segment_profile(
    df: DataFrame,
    feature_cols: Sequence[str],
    segment_col: str = "segment",
    horizon_days: int = 365,
) -> DataFrame:
    """One row per segment of ``df`` (customers with raw features and ``segment_col``); see the module doc."""
    cols = list(feature_cols)
    with_clv = set(CLV_COLUMNS) <= set(df.columns)
    per_customer = _per_customer_values(df, cols, segment_col, horizon_days, with_clv)
    base = per_customer.agg(
        *[F.avg(c).alias(f"base_mean_{c}") for c in cols],
        *[F.stddev_pop(c).alias(f"base_std_{c}") for c in cols],
        F.sum("_spend").alias("_total_spend"),
        F.count(F.lit(1)).alias("_total_customers"),
    )
    segments = per_customer.groupBy("segment").agg(*_segment_aggregates(cols, with_clv))
    return segments.crossJoin(base).select(*_output_columns(cols, with_clv)).orderBy("segment")


def _per_customer_values(
    df: DataFrame, cols: Sequence[str], segment_col: str, horizon_days: int, with_clv: bool
) -> DataFrame:
    """Per customer: ``segment``, ``_spend``, ``_churn``, ``_forward``, the CLV values as ``_<name>``
    and the features as doubles (null or 0 for what ``df`` lacks; see the module doc)."""
    has = set(df.columns)
    spend = F.col("net_spend").cast("double") if "net_spend" in has else F.lit(0.0)
    churn = F.col("churned").cast("double") if "churned" in has else F.lit(None).cast("double")
    forward = _forward_value(horizon_days) if {"net_spend", "tenure_days"} <= has else F.lit(None).cast("double")
    return df.select(
        F.col(segment_col).alias("segment"),
        spend.alias("_spend"),
        churn.alias("_churn"),
        forward.alias("_forward"),
        *[F.col(c).cast("double").alias(f"_{c}") for c in (CLV_COLUMNS if with_clv else ())],
        *[F.col(c).cast("double").alias(c) for c in cols],
    )


def _segment_aggregates(cols: Sequence[str], with_clv: bool) -> list[F.Column]:
    """Per segment: size, revenue, churn rate, historical and forward value, the CLV summaries,
    and the mean and approximate median of every feature."""
    clv_aggs = (
        [
            F.avg("_p_alive").alias("p_alive_mean"),
            F.avg("_expected_purchases").alias("expected_purchases_mean"),
            F.sum("_clv").alias("clv_total"),
            F.avg("_clv").alias("clv_mean"),
        ]
        if with_clv
        else []
    )
    return [
        F.count(F.lit(1)).alias("customers"),
        F.sum("_spend").alias("_revenue"),
        F.avg("_churn").alias("churn_rate"),
        F.avg("_spend").alias("historical_value"),
        F.avg("_forward").alias("forward_value"),
        *clv_aggs,
        *[F.avg(c).alias(f"mean_{c}") for c in cols],
        *[F.percentile_approx(c, 0.5, 100).cast("double").alias(f"median_{c}") for c in cols],
    ]


def _output_columns(cols: Sequence[str], with_clv: bool) -> list[str | F.Column]:
    """The output columns, from a segment's aggregates crossed with the base's: the shares
    of customers and revenue, and each feature's z-score against the base."""

    def z(c: str) -> F.Column:
        std = F.col(f"base_std_{c}")
        return F.when(std > 0, (F.col(f"mean_{c}") - F.col(f"base_mean_{c}")) / std).otherwise(0.0)

    return [
        "segment",
        "customers",
        (F.col("customers") / F.col("_total_customers")).alias("customer_share"),
        F.when(F.col("_total_spend") != 0, F.col("_revenue") / F.col("_total_spend")).otherwise(0.0)
        .alias("revenue_share"),
        "churn_rate",
        "historical_value",
        "forward_value",
        *(CLV_PROFILE_COLUMNS if with_clv else ()),
        *[f"mean_{c}" for c in cols],
        *[f"median_{c}" for c in cols],
        *[z(c).alias(f"z_{c}") for c in cols],
    ]  # fmt: skip


def category_lift(df: DataFrame, categories: Sequence[str], segment_col: str = "segment") -> pd.DataFrame:
    """segment x category table of lift = segment mean share / base mean share (NaN where the base share is 0)."""
    if not categories:
        return pd.DataFrame()
    means = [F.avg(F.col(c).cast("double")).alias(c) for c in categories]
    base = df.agg(*means).toPandas().iloc[0]
    seg = df.groupBy(F.col(segment_col).alias("segment")).agg(*means).toPandas().set_index("segment").sort_index()
    return seg.divide(base.where(base > 0))


def top_categories(lift: pd.DataFrame, n: int) -> dict[int, list[tuple[str, float]]]:
    """Per segment, up to ``n`` categories with lift above 1, highest first (ties by name)."""
    result: dict[int, list[tuple[str, float]]] = {}
    for segment, row in lift.iterrows():
        ranked = sorted(((c.removeprefix("cat_"), float(v)) for c, v in row.items() if v > 1.0),
                        key=lambda x: (-x[1], x[0]))  # fmt: skip
        result[int(segment)] = ranked[:n]
    return result


# --------------------------------------------------------------------------- the whole description


@dataclass
class SegmentDescription:
    """Everything the report and the profile table say about a segmentation."""

    profile: pd.DataFrame  # segment_profile rows + name, description, recommended_categories
    names: dict[int, str]
    fidelity: float
    rules: dict[int, list[dict]]
    separating: dict[int, list[tuple[str, float]]]
    recommendations: dict[int, list[tuple[str, float]]]
    model_features: list[str]
    # The customers flagged ``is_outlier`` (when the run flags them): their profile row, as a segment's.
    outliers: dict[str, Any] | None = None
    # The two-level tree, one row per sub-segment (training.hierarchy; segmentation.hierarchy.describe_tree).
    tree: pd.DataFrame | None = None


def describe_segments(
    raw: DataFrame,
    model_features: Sequence[str],
    names: Mapping[int, str],
    rule_depth: int = 3,
    horizon_days: int = 365,
    top_n: int = 3,
    seed: int = 42,
) -> SegmentDescription:
    """Profile, name and explain the segments of ``raw`` (raw feature table + ``segment``).

    ``names`` are fixed names (kept segments' names and config overrides); every other
    segment gets a persona (see :mod:`segmentation.personas`).
    """
    from segmentation.explain import explain_segments, separating_features
    from segmentation.personas import assign_personas, describe

    raw = raw.persist()
    try:
        columns = profile_columns(raw)
        profile = segment_profile(raw, columns, horizon_days=horizon_days).toPandas()
        final_names = assign_personas(profile, names)
        explanation = explain_segments(raw, model_features, depth=rule_depth, seed=seed)
        lift = category_lift(raw, category_columns(columns))
        outliers = outlier_profile(raw, columns, horizon_days) if OUTLIER_COL in raw.columns else None
    finally:
        raw.unpersist()
    recommendations = top_categories(lift, top_n) if not lift.empty else {}
    profile.insert(1, "name", [final_names[int(s)] for s in profile["segment"]])
    profile.insert(2, "description", [describe(row, final_names[int(row["segment"])]) for _, row in profile.iterrows()])
    profile.insert(3, "recommended_categories",
                   [", ".join(c for c, _ in recommendations.get(int(s), [])) for s in profile["segment"]])  # fmt: skip
    return SegmentDescription(
        profile=profile,
        names=final_names,
        fidelity=explanation.fidelity,
        rules=explanation.rules,
        separating=separating_features(profile, model_features),
        recommendations=recommendations,
        model_features=list(model_features),
        outliers=outliers,
    )


def outlier_profile(raw: DataFrame, columns: Sequence[str], horizon_days: int = 365) -> dict[str, Any]:
    """The profile of the customers ``raw`` flags ``is_outlier``, against every customer (the columns
    of :func:`segment_profile`), or ``{"customers": 0}`` when none is flagged."""
    flagged = raw.withColumn("_outlier", F.col(OUTLIER_COL).cast("int"))
    rows = segment_profile(flagged, columns, segment_col="_outlier", horizon_days=horizon_days).toPandas()
    row = rows[rows["segment"] == 1]
    return {"customers": 0} if row.empty else row.drop(columns="segment").iloc[0].to_dict()
