"""Customer features: one row per customer from the kept transactions of a snapshot.

Pure DataFrame transforms (no IO). The counts and sums run from the lines straight
to one row per customer. What needs the days in order (active days, the gaps between
them, the first day's amount) runs on a narrow (customer, day, net amount) frame of
its own and is joined on ``customer_id``: at 10M lines this moved 2 columns per
(customer, day) through the shuffles instead of about 20. Every aggregation combines
map-side, so a skewed customer stays cheap: a customer with a million lines sends at
most one partial row per task to the sums and one row per active day to the gaps.
Distinct categories are counted in an aggregation of their own and joined on
``customer_id``; every aggregate is one Spark can hash.

Output schema (all values finite for every customer; days and currency units)
-------------------------------------------------------------------------------
==========================  ======  ==============================================================
column                      type    definition
==========================  ======  ==============================================================
customer_id                 string  the customer
as_of                       date    end of the observation window, inclusive
recency_days                double  days from the last transaction date to ``as_of``
tenure_days                 double  days from the first transaction date to ``as_of``
n_transactions              long    kept transactions (lines: purchases and returns)
n_purchases                 long    lines with amount > 0
n_baskets                   long    distinct basket ids among lines with amount > 0 (a line
                                    without a basket id is a basket of its own); = n_purchases
                                    without a basket_id column
n_returns                   long    lines with amount < 0
n_purchase_days             long    distinct transaction dates
net_spend                   double  sum of amounts, returns netted (the M of RFM)
gross_spend                 double  sum of positive amounts
avg_basket_value            double  gross_spend / n_baskets (0 without purchases)
avg_items_per_basket        double  purchased quantity / n_baskets (1 per line without a
                                    quantity column; 0 without purchases)
avg_lines_per_basket        double  n_purchases / n_baskets; only with a basket_id column
mean_gap_days               double  mean days between consecutive transaction dates (0 if < 2)
std_gap_days                double  population std of those gaps (0 if < 2 dates)
frequency                   double  lifetimes: transaction dates - 1 (repeat purchase days)
recency                     double  lifetimes: days between first and last transaction date
T                           double  lifetimes: days from first transaction date to ``as_of``
monetary_value              double  lifetimes: mean daily net amount over repeat days (first
                                    day excluded), 0 when frequency is 0
return_rate                 double  n_returns / n_transactions
return_value_share          double  returned / (gross_spend + returned), 0 when both are 0
n_categories                long    distinct categories bought or returned (0 without a column)
cat_<name>, cat_other       double  share of gross_spend per top category (sum to 1 with
                                    purchases, else 0); only with a category column
<attr>_<level>, <attr>_other double share of gross_spend per top level of a product attribute
                                    (``mixes``, from input.products.attributes)
chan_<name>, chan_other     double  share of transactions per channel; only with a channel column
spend_recent                double  net spend in the last ``trend_window_days`` up to ``as_of``
spend_previous              double  net spend in the window before that
trend                       double  (recent - previous) / (|recent| + |previous|), in [-1, 1]
churn_ratio                 double  recency_days / typical gap (own mean gap with 2+ dates, else
                                    the median over repeat customers; at least 1 day)
churned                     int     1 when churn_ratio > ``churn_gap_multiple``
==========================  ======  ==============================================================

The lifetimes columns have exactly the semantics of
``lifetimes.utils.summary_data_from_transaction_data(..., freq="D",
observation_period_end=as_of)`` on the kept transactions: amounts of a day are
summed (returns included) and same-day transactions are one purchase day.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

__all__ = [
    "customer_activity",
    "customer_features",
    "demographic_features",
    "same_columns",
    "slug",
    "top_values",
    "typical_gap",
    "with_churn",
]


def slug(value: str) -> str:
    """A column-name-safe form of a category or channel name."""
    return re.sub(r"[^a-z0-9]+", "_", str(value).lower()).strip("_") or "blank"


def same_columns(existing: Sequence[str], prefix: str, ranked: Sequence[str]) -> list[str]:
    """The values that give a feature table's ``<prefix>_*`` columns again, in its order: a table keeps
    the set of columns of its first snapshot (docs/data.md, *One set of columns*). For each such column
    of ``existing``, the first value of ``ranked`` (this snapshot's values, most important first) with
    that name, else the name's own suffix, which no value here has, so that its share is 0. Values
    without a column count in ``<prefix>_other``. ``existing`` holds none of the base columns."""
    names = [c for c in existing if c.startswith(f"{prefix}_") and c != f"{prefix}_other"]
    found: dict[str, str] = {}
    for value, name in zip(ranked, _unique_slugs(ranked, prefix), strict=True):
        found.setdefault(name, value)
    return [found.get(name, name.removeprefix(f"{prefix}_")) for name in names]


def _unique_slugs(values: Sequence[str], prefix: str) -> list[str]:
    names, seen = [], set()
    for value in values:
        name, n = f"{prefix}_{slug(value)}", 2
        while name in seen or name == f"{prefix}_other":
            name, n = f"{prefix}_{slug(value)}_{n}", n + 1
        seen.add(name)
        names.append(name)
    return names


def top_values(kept: DataFrame, column: str, n: int, weight: Column | None = None) -> list[str]:
    """The ``n`` most important non-null values of ``column`` (by ``weight`` sum, else by count)."""
    measure = F.sum(weight) if weight is not None else F.count(F.lit(1))
    rows = (
        kept.where(F.col(column).isNotNull())
        .groupBy(column)
        .agg(measure.alias("w"))
        .orderBy(F.desc("w"), F.asc(column))
        .limit(n)
        .collect()
    )
    return [r[column] for r in rows]


def _safe_div(num: Column, den: Column) -> Column:
    return F.when(den != 0, num / den).otherwise(F.lit(0.0))


def customer_features(
    kept: DataFrame,
    as_of: dt.date,
    categories: Sequence[str] = (),
    channels: Sequence[str] = (),
    trend_window_days: int = 90,
    churn_gap_multiple: float = 3.0,
    median_gap_days: float | None = None,
    mixes: Mapping[str, Sequence[str]] | None = None,
) -> DataFrame:
    """One row per customer (schema in the module docstring).

    ``kept``: the kept, parsed transactions with ``customer_id``, ``day`` (date),
    ``amount`` (double) and optionally ``basket_id``, ``quantity``, ``category``, ``channel``.
    ``categories`` / ``channels``: the values that get their own share column.
    ``mixes``: attribute column of ``kept`` -> the levels that get their own share column.
    ``median_gap_days``: the typical gap used for customers with one transaction
    date; None computes it (one Spark job) with :func:`typical_gap`.

    This is :func:`customer_activity`, then :func:`typical_gap`, then
    :func:`with_churn`; the feature job makes the same three calls with the
    activity persisted in between, so the aggregation runs once.
    """
    activity = customer_activity(kept, as_of, categories, channels, trend_window_days, mixes)
    if median_gap_days is None:
        median_gap_days = typical_gap(activity, default=float(trend_window_days))
    return with_churn(activity, median_gap_days, churn_gap_multiple)


@dataclass(frozen=True)
class _Shares:
    """The share columns of one :func:`customer_activity` call (column name -> the value it
    counts); no category or channel shares when ``kept`` lacks that column."""

    has_category: bool
    has_channel: bool
    categories: dict[str, str]
    channels: dict[str, str]
    mixes: dict[str, dict[str, str]]  # attribute -> column name -> level

    @classmethod
    def of(
        cls,
        columns: Sequence[str],
        categories: Sequence[str],
        channels: Sequence[str],
        mixes: Mapping[str, Sequence[str]],
    ) -> _Shares:
        has_category, has_channel = "category" in columns, "channel" in columns
        return cls(
            has_category=has_category,
            has_channel=has_channel,
            categories=dict(zip(_unique_slugs(categories, "cat"), categories, strict=True)) if has_category else {},
            channels=dict(zip(_unique_slugs(channels, "chan"), channels, strict=True)) if has_channel else {},
            mixes={
                attr: dict(zip(_unique_slugs(levels, slug(attr)), levels, strict=True))
                for attr, levels in mixes.items()
            },
        )


def customer_activity(
    kept: DataFrame,
    as_of: dt.date,
    categories: Sequence[str] = (),
    channels: Sequence[str] = (),
    trend_window_days: int = 90,
    mixes: Mapping[str, Sequence[str]] | None = None,
) -> DataFrame:
    """Every column of the schema up to ``trend``: all but the churn signal, which needs
    the typical gap over all customers."""
    shares = _Shares.of(kept.columns, categories, channels, mixes or {})
    has_basket = "basket_id" in kept.columns
    per_customer = kept.groupBy("customer_id").agg(*_line_aggregates(kept, shares, as_of, trend_window_days))
    per_customer = per_customer.join(_day_aggregates(kept), "customer_id")
    per_customer = _with_distinct_counts(per_customer, kept, shares.has_category, has_basket)
    n_baskets = F.coalesce(F.col("n_bk"), F.lit(0)) + F.col("d_loose") if has_basket else F.col("d_purchases")
    return per_customer.select(
        "customer_id",
        F.lit(as_of).alias("as_of"),
        *_rfm_columns(as_of, n_baskets),
        *_basket_columns(n_baskets, has_basket),
        *_gap_columns(as_of),
        *_return_columns(),
        *_share_columns(shares),
        *_trend_columns(),
    )


def _line_aggregates(kept: DataFrame, shares: _Shares, as_of: dt.date, trend_window_days: int) -> list[Column]:
    """The aggregations of the lines straight to a customer: the counts and sums (``d_*``, the share
    numerators), net spend, first and last day, and the net spend of the two trend windows."""
    amount, day = F.col("amount"), F.col("day")
    purchase = amount > 0
    quantity = F.coalesce(F.col("quantity"), F.lit(1.0)) if "quantity" in kept.columns else F.lit(1.0)
    recent_start = F.date_sub(F.lit(as_of), trend_window_days)
    previous_start = F.date_sub(F.lit(as_of), 2 * trend_window_days)

    def spend_on(column: str, value: str) -> Column:
        return F.sum(F.when(purchase & (F.col(column) == value), amount).otherwise(0.0))

    aggs = [
        F.count(F.lit(1)).alias("d_tx"),
        F.sum(purchase.cast("long")).alias("d_purchases"),
        F.sum((amount < 0).cast("long")).alias("d_returns"),
        F.sum(F.when(purchase, amount).otherwise(0.0)).alias("d_gross"),
        F.sum(F.when(amount < 0, -amount).otherwise(0.0)).alias("d_returned"),
        F.sum(F.when(purchase, quantity).otherwise(0.0)).alias("d_items"),
        F.sum(amount).alias("net_spend"),
        F.min(day).alias("first_day"),
        F.max(day).alias("last_day"),
        F.sum(F.when(day > recent_start, amount).otherwise(0.0)).alias("spend_recent"),
        F.sum(F.when((day > previous_start) & (day <= recent_start), amount).otherwise(0.0)).alias("spend_previous"),
    ]
    aggs += [spend_on("category", value).alias(name) for name, value in shares.categories.items()]
    aggs += [F.sum((F.col("channel") == value).cast("long")).alias(name) for name, value in shares.channels.items()]
    for attr, levels in shares.mixes.items():
        aggs += [spend_on(attr, value).alias(name) for name, value in levels.items()]
    if "basket_id" in kept.columns:  # a purchase line without a basket id is a basket of its own
        aggs.append(F.sum((purchase & F.col("basket_id").isNull()).cast("long")).alias("d_loose"))
    return aggs


def _day_aggregates(kept: DataFrame) -> DataFrame:
    """What needs the days in order, from a narrow (customer, day, net amount) frame: the number of
    active days, the first day's net amount, and the mean and population std of the gaps between
    consecutive active days."""
    daily = kept.groupBy("customer_id", "day").agg(F.sum("amount").alias("day_amount"))
    by_day = Window.partitionBy("customer_id").orderBy("day")
    gap = F.datediff(F.col("day"), F.lag("day").over(by_day)).cast("double")
    return (
        daily.withColumn("gap", gap)
        .groupBy("customer_id")
        .agg(
            F.count(F.lit(1)).alias("n_days"),
            F.min_by("day_amount", "day").alias("first_day_amount"),
            F.avg("gap").alias("mean_gap"),
            F.stddev_pop("gap").alias("std_gap"),
        )
    )


def _with_distinct_counts(per_customer: DataFrame, kept: DataFrame, has_category: bool, has_basket: bool) -> DataFrame:
    """Join on ``n_cat`` (distinct categories) and ``n_bk`` (distinct basket ids of purchases),
    each counted in an aggregation of its own."""
    if has_category:
        # Counted apart: a collect_set in the aggregations above makes Spark sort instead of hash
        # (ObjectHashAggregate falls back to sorting), which cost 5x the whole first stage at 10M rows.
        distinct = kept.where(F.col("category").isNotNull()).select("customer_id", "category").distinct()
        n_cat = distinct.groupBy("customer_id").agg(F.count(F.lit(1)).alias("n_cat"))
        per_customer = per_customer.join(n_cat, "customer_id", "left")
    if has_basket:
        # Distinct baskets counted apart for the same reason; a basket bought over two days is one.
        baskets = (
            kept.where((F.col("amount") > 0) & F.col("basket_id").isNotNull())
            .select("customer_id", "basket_id")
            .distinct()
            .groupBy("customer_id")
            .agg(F.count(F.lit(1)).alias("n_bk"))
        )
        per_customer = per_customer.join(baskets, "customer_id", "left")
    return per_customer


def _rfm_columns(as_of: dt.date, n_baskets: Column) -> list[Column]:
    """Recency and tenure in days, the counts, and net and gross spend."""
    as_of_lit = F.lit(as_of)
    return [
        F.datediff(as_of_lit, F.col("last_day")).cast("double").alias("recency_days"),
        F.datediff(as_of_lit, F.col("first_day")).cast("double").alias("tenure_days"),
        F.col("d_tx").cast("long").alias("n_transactions"),
        F.col("d_purchases").cast("long").alias("n_purchases"),
        n_baskets.cast("long").alias("n_baskets"),
        F.col("d_returns").cast("long").alias("n_returns"),
        F.col("n_days").cast("long").alias("n_purchase_days"),
        F.col("net_spend").cast("double").alias("net_spend"),
        F.col("d_gross").cast("double").alias("gross_spend"),
    ]


def _basket_columns(n_baskets: Column, has_basket: bool) -> list[Column]:
    """Value, items and (with basket ids) lines per basket."""
    cols = [
        _safe_div(F.col("d_gross"), n_baskets).alias("avg_basket_value"),
        _safe_div(F.col("d_items"), n_baskets).alias("avg_items_per_basket"),
    ]
    if has_basket:
        cols.append(_safe_div(F.col("d_purchases").cast("double"), n_baskets).alias("avg_lines_per_basket"))
    return cols


def _gap_columns(as_of: dt.date) -> list[Column]:
    """Mean and std of the gaps between active days, and the lifetimes summary."""
    frequency = (F.col("n_days") - 1).cast("double")
    return [
        F.coalesce(F.col("mean_gap"), F.lit(0.0)).alias("mean_gap_days"),
        F.coalesce(F.col("std_gap"), F.lit(0.0)).alias("std_gap_days"),
        frequency.alias("frequency"),
        F.datediff(F.col("last_day"), F.col("first_day")).cast("double").alias("recency"),
        F.datediff(F.lit(as_of), F.col("first_day")).cast("double").alias("T"),
        _safe_div(F.col("net_spend") - F.col("first_day_amount"), frequency).alias("monetary_value"),
    ]


def _return_columns() -> list[Column]:
    """Returns as a share of the transactions and of the value."""
    return [
        _safe_div(F.col("d_returns").cast("double"), F.col("d_tx")).alias("return_rate"),
        _safe_div(F.col("d_returned"), F.col("d_gross") + F.col("d_returned")).alias("return_value_share"),
    ]


def _share_columns(shares: _Shares) -> list[Column]:
    """``n_categories``, the category and attribute shares of gross spend and the channel shares
    of transactions, each family with its ``_other``."""
    gross, tx = F.col("d_gross"), F.col("d_tx")
    cols = [
        (F.coalesce(F.col("n_cat"), F.lit(0)) if shares.has_category else F.lit(0)).cast("long").alias("n_categories")
    ]
    cols += [_safe_div(F.col(c), gross).alias(c) for c in shares.categories]
    if shares.has_category:
        rest = gross - sum((F.col(c) for c in shares.categories), F.lit(0.0))
        cols.append(_safe_div(rest, gross).alias("cat_other"))
    cols += _mix_shares({attr: list(levels) for attr, levels in shares.mixes.items()})
    cols += [_safe_div(F.col(c).cast("double"), tx).alias(c) for c in shares.channels]
    if shares.has_channel:
        cols.append(_safe_div(tx - sum((F.col(c) for c in shares.channels), F.lit(0)), tx).alias("chan_other"))
    return cols


def _trend_columns() -> list[Column]:
    """Net spend in the recent and the previous window, and the trend between them."""
    return [
        F.col("spend_recent").cast("double").alias("spend_recent"),
        F.col("spend_previous").cast("double").alias("spend_previous"),
        _safe_div(
            F.col("spend_recent") - F.col("spend_previous"), F.abs("spend_recent") + F.abs("spend_previous")
        ).alias("trend"),
    ]


def _mix_shares(mix_cols: Mapping[str, Sequence[str]]) -> list[Column]:
    """Share of gross spend per level column of each attribute, and ``<attr>_other`` for the rest."""
    out: list[Column] = []
    for attr, cols in mix_cols.items():
        out += [_safe_div(F.col(c), F.col("d_gross")).alias(c) for c in cols]
        rest = F.col("d_gross") - sum((F.col(c) for c in cols), F.lit(0.0))
        out.append(_safe_div(rest, F.col("d_gross")).alias(f"{slug(attr)}_other"))
    return out


def typical_gap(activity: DataFrame, default: float) -> float:
    """The median of ``mean_gap_days`` over repeat customers (2+ dates) of
    :func:`customer_activity` output; ``default`` when there are none. Runs one Spark job."""
    median = activity.where(F.col("n_purchase_days") >= 2).select(F.percentile_approx("mean_gap_days", 0.5)).first()[0]
    return float(default if median is None else median)


def with_churn(activity: DataFrame, median_gap_days: float, churn_gap_multiple: float) -> DataFrame:
    """Add ``churn_ratio`` and ``churned``: recency over the customer's own mean gap, or over
    ``median_gap_days`` for customers with one transaction date (at least 1 day)."""
    gap = F.greatest(
        F.when(F.col("n_purchase_days") >= 2, F.col("mean_gap_days")).otherwise(F.lit(float(median_gap_days))),
        F.lit(1.0),
    )
    churn_ratio = F.col("recency_days") / gap
    return activity.withColumn("churn_ratio", churn_ratio).withColumn(
        "churned", (F.col("churn_ratio") > F.lit(churn_gap_multiple)).cast("int")
    )


def demographic_features(
    customers: DataFrame,
    numeric: Sequence[str],
    categorical: Sequence[str],
    levels: dict[str, list[str]],
    medians: dict[str, float],
) -> DataFrame:
    """Customer attributes encoded for clustering: numeric as double with nulls set to the median,
    categoricals one-hot as 0/1 doubles ``<attr>_<level>`` plus ``<attr>_other``.

    Input: ``customer_id`` plus the attribute columns. ``levels`` are the kept levels per
    categorical attribute and ``medians`` the imputation values (computed by the caller).
    """
    cols: list[Column] = [F.col("customer_id").cast("string").alias("customer_id")]
    for name in numeric:
        cols.append(F.coalesce(F.col(name).cast("double"), F.lit(medians.get(name, 0.0))).alias(name))
    for name in categorical:
        kept_levels = levels.get(name, [])
        value = F.col(name).cast("string")
        for level, column in zip(kept_levels, _unique_slugs(kept_levels, name), strict=True):
            cols.append(F.coalesce((value == level).cast("double"), F.lit(0.0)).alias(column))
        cols.append(
            F.when(value.isNull() | ~value.isin(*kept_levels), 1.0).otherwise(0.0).alias(f"{name}_other")
            if kept_levels
            else F.lit(1.0).alias(f"{name}_other")
        )
    return customers.select(*cols).dropDuplicates(["customer_id"])
