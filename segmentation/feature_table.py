"""The per-customer feature frame of one snapshot, built from the configured inputs.

:func:`compute_features` reads and validates the transactions (and the optional customer
and product tables), applies the quarantine rules and aggregates one row per customer.
It writes nothing: the feature job (``feature_pipeline``) writes its result, and the CLV
job computes the features of a calibration cut-off with it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation.config import AppConfig, CustomersInput, ProductsInput
from segmentation.errors import ConfigError, ContractError, JoinMatchError, QuarantineThresholdError
from segmentation.features import (
    customer_activity,
    demographic_features,
    same_columns,
    slug,
    top_values,
    typical_gap,
    with_churn,
)
from segmentation.io import read_table
from segmentation.quality import (
    AFTER_WINDOW,
    QUARANTINE_REASONS,
    QualityReport,
    as_of_after,
    canonical_columns,
    check_contract,
    label_rows,
    parse_rows,
    resolve_roles,
)
from segmentation.snapshots import Persist
from segmentation.spark import job_descriptions, size_shuffles_to_rows

__all__ = ["compute_features"]

log = logging.getLogger(__name__)


def compute_features(
    spark: SparkSession, cfg: AppConfig, persist: Persist, existing: Sequence[str] = ()
) -> tuple[DataFrame, DataFrame, QualityReport]:
    """Read and validate the transactions, check the quarantine, then compute the features; with
    ``existing``, the columns of the feature table they go to, its category, channel and level columns.

    Returns (features, quarantine, report). The frames it persists (the labelled rows and the
    per-customer activity, which the features and the quarantine read) go through ``persist``
    (see :func:`segmentation.snapshots.persisting`): the caller releases them once the outputs
    are written, or when a check fails.
    """
    with job_descriptions(spark) as describe:
        return _compute(spark, cfg, persist, describe, existing)


def _compute(
    spark: SparkSession, cfg: AppConfig, persist: Persist, describe: Callable[[str], None], existing: Sequence[str]
) -> tuple[DataFrame, DataFrame, QualityReport]:
    source, fcfg = cfg.input.transactions, cfg.features
    describe("features: read and check the transactions")
    canonical, columns, key_types = _read_checked(spark, cfg)
    parsed = parse_rows(canonical, source.timestamp_unit)
    describe("features: count the rows and find the newest day")
    newest, rows = parsed.agg(F.max("day"), F.count(F.lit(1))).first()
    size_shuffles_to_rows(spark, rows, cfg.spark)
    as_of = fcfg.as_of or as_of_after(newest)
    if as_of is None:
        raise ContractError(
            f"column '{columns['timestamp']}' of '{source.location}' has no parseable timestamp; "
            "expected timestamps such as 2024-05-31 12:00:00"
        )
    describe("features: label and count the rows (duplicates, quarantine)")
    labelled = persist(_for_reuse(label_rows(parsed, as_of, window_set=fcfg.as_of is not None)), _CACHED)
    by_reason = {r["reason"]: r["count"] for r in labelled.groupBy("reason").count().collect()}
    rows_kept = by_reason.pop(None, 0)
    report = QualityReport(
        as_of=as_of,
        rows_read=rows_kept + sum(by_reason.values()),
        rows_kept=rows_kept,
        customers=0,
        quarantined={reason: int(by_reason.get(reason, 0)) for reason in QUARANTINE_REASONS},
        rows_after_window=int(by_reason.get(AFTER_WINDOW, 0)),
    )
    _check_kept_rows(report, fcfg.max_quarantine_share, source.location)
    kept = labelled.where(F.col("reason").isNull())
    features, report = _aggregate(spark, cfg, kept, (columns, key_types), report, persist, describe, existing)
    quarantine = labelled.where(F.col("reason").isNotNull() & (F.col("reason") != AFTER_WINDOW)).select(
        "customer_id",
        *(["transaction_id"] if "transaction_id" in columns else []),
        F.col("timestamp_raw").cast("string").alias("timestamp"),
        F.col("amount_raw").cast("string").alias("amount"),
        "reason",
        F.lit(as_of).alias("as_of"),
    )
    return features, quarantine, report


# Every value of a column, for matching a table's columns (features.same_columns).
_ALL_VALUES = 100_000

# What the steps after labelling read of a row: the quarantine reads these only on the rows it keeps out,
# and none reads the others. Stored deserialized, as Spark's own ``cache()`` does.
_QUARANTINE_ONLY = ("transaction_id", "timestamp_raw", "amount_raw")
_UNREAD = ("timestamp", "quantity_raw", "malformed")
_CACHED = StorageLevel.MEMORY_AND_DISK_DESER


def _for_reuse(labelled: DataFrame) -> DataFrame:
    """The labelled rows as the later steps read them: without the columns no step reads, and
    with the quarantine's raw values only on the rows it keeps out (null elsewhere), so that the
    cache holds less. Not repartitioned by customer, though that saves the aggregation a shuffle
    (about 5 s at 10M lines): it would send all of one customer's lines to one task."""
    bad = F.col("reason").isNotNull()
    kept = [c for c in labelled.columns if c not in _UNREAD]
    return labelled.select(*[F.when(bad, F.col(c)).alias(c) if c in _QUARANTINE_ONLY else c for c in kept])


def _read_checked(spark: SparkSession, cfg: AppConfig) -> tuple[DataFrame, dict[str, str], dict[str, str]]:
    """The transactions with canonical column names, after the input contract's checks; also the
    role-to-column mapping and each role's source type."""
    source, products = cfg.input.transactions, cfg.input.products
    raw = read_table(spark, source, key="input.transactions")
    columns = resolve_roles(raw.columns, source.columns, source.explicit_roles)
    check_contract(raw, columns, f"{source.format} input '{source.location}'", source.timestamp_unit)
    if products.enabled and "product_id" not in columns:
        raise ConfigError(
            "input.products is enabled but the transactions have no product_id role: "
            "set input.transactions.columns.product_id to the column holding the product id"
        )
    key_types = {role: raw.schema[name].dataType.simpleString() for role, name in columns.items()}
    canonical = canonical_columns(raw, columns)
    if not canonical.limit(1).collect():
        raise ContractError(
            f"{source.format} input '{source.location}' is empty: no transactions to build features from"
        )
    return canonical, columns, key_types


def _aggregate(
    spark: SparkSession,
    cfg: AppConfig,
    kept: DataFrame,
    roles: tuple[dict[str, str], dict[str, str]],
    report: QualityReport,
    persist: Persist,
    describe: Callable[[str], None],
    existing: Sequence[str],
) -> tuple[DataFrame, QualityReport]:
    """One row per customer from the kept rows (with the product and customer tables when enabled),
    and the report with the customer count and the join match shares."""
    (columns, key_types), fcfg, products, as_of = roles, cfg.features, cfg.input.products, report.as_of
    if products.enabled:
        describe("features: join the products")
        kept, share, unknown = _with_products(spark, kept, products, (columns["product_id"], key_types["product_id"]))
        report = dataclasses.replace(report, products_match_share=share, unknown_product_lines=unknown)
    describe("features: find the top categories and channels")
    # The columns of the table's first snapshot but those every snapshot has (its base columns).
    base = {*customer_activity(kept, as_of).columns, "churn_ratio", "churned", *cfg.input.customers.numeric} if (
        existing) else set()  # fmt: skip
    families = [c for c in existing if c not in base]
    categories, channels, mixes = _share_values(kept, cfg, families)
    # Persisted so the customer count, the median gap and the write read one aggregation, not three.
    describe("features: aggregate per customer")
    activity = persist(
        customer_activity(kept, as_of, categories, channels, trend_window_days=fcfg.trend_window_days, mixes=mixes)
    )
    report = dataclasses.replace(report, customers=activity.count())
    describe("features: the typical gap between purchases")
    features = with_churn(
        activity, typical_gap(activity, default=float(fcfg.trend_window_days)), fcfg.churn_gap_multiple
    )
    if cfg.input.customers.enabled:  # reads the customers table, which can be missing or wrong
        describe("features: join the customers table")
        key = (columns["customer_id"], key_types["customer_id"])
        attrs, fill, share = _demographics(spark, cfg.input.customers, activity, key, families)
        report = dataclasses.replace(report, customers_match_share=share)
        # Customers without a row get the medians and no level of any categorical (all 0).
        features = features.join(attrs, "customer_id", how="left").fillna(fill)
    return features, report


def _share_values(
    kept: DataFrame, cfg: AppConfig, families: Sequence[str]
) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """The categories, channels and product attribute levels that get a share column: the most
    important ones, or, for a table that has some (``families``), those its columns name."""
    fcfg, products = cfg.features, cfg.input.products
    spend = F.when(F.col("amount") > 0, F.col("amount"))

    def values(column: str, n: int, weight: Column | None, prefix: str) -> list[str]:
        return _column_values(kept, column, n, families, weight, prefix) if column in kept.columns else []

    categories = values("category", fcfg.top_categories, spend, "cat")
    channels = values("channel", fcfg.max_channels, None, "chan")
    mixes = {a: values(a, fcfg.top_categories, spend, slug(a)) for a in products.attributes} if products.enabled else {}
    return categories, channels, mixes


def _column_values(
    df: DataFrame, column: str, n: int, families: Sequence[str], weight: Column | None = None, prefix: str | None = None
) -> list[str]:
    """The values of ``column`` that get a column ``<prefix>_<value>`` (prefix: the column's name):
    the ``n`` most important, or those the table's columns (``families``) name."""
    prefix = prefix or column
    if any(name.startswith(f"{prefix}_") for name in families):
        return same_columns(families, prefix, top_values(df, column, _ALL_VALUES, weight=weight))
    return top_values(df, column, n, weight=weight)


def _check_kept_rows(report: QualityReport, max_share: float, location: str) -> None:
    """Stop before any aggregation when too much was quarantined or nothing was kept."""
    if report.quarantined_share > max_share:
        raise QuarantineThresholdError(
            f"{report.rows_quarantined} of {report.rows_in_window} rows ({report.quarantined_share:.2%}) of "
            f"'{location}' were quarantined, over features.max_quarantine_share={max_share}; "
            f"reasons: {', '.join(f'{k}={v}' for k, v in report.quarantined.items() if v)}. Nothing was written"
        )
    if report.rows_kept == 0:
        raise ContractError(f"no valid transaction left in '{location}'; nothing was written")


def _demographics(
    spark: SparkSession, customers: CustomersInput, activity: DataFrame, key: tuple[str, str], families: Sequence[str]
) -> tuple[DataFrame, dict[str, float], float]:
    """The encoded attributes of ``input.customers``, the fill values for customers without a
    row, and the share of ``activity``'s customers that have one.

    Raises :class:`JoinMatchError` when that share is below ``customers.min_match_share``. An
    attribute that is null for every matched customer is dropped with a warning.
    """
    wanted = list(dict.fromkeys([customers.customer_id, *customers.numeric, *customers.categorical]))
    table = read_table(spark, customers, columns=wanted, key="input.customers")
    attrs = table.withColumn("customer_id", F.col(customers.customer_id).cast("string"))
    attrs = attrs.select("customer_id", *[c for c in wanted if c != customers.customer_id])
    attrs = attrs.where(F.col("customer_id").isNotNull()).dropDuplicates(["customer_id"])
    numeric, categorical = list(customers.numeric), list(customers.categorical)
    counts = (
        activity.select("customer_id")
        .join(attrs.withColumn("_matched", F.lit(1)), "customer_id", how="left")
        .agg(
            F.count(F.lit(1)).alias("_customers"),
            F.count("_matched").alias("_matched"),
            *[F.count(F.col(c).cast("double")).alias(c) for c in numeric],
            *[F.count(c).alias(c) for c in categorical if c not in numeric],
        )
        .first()
        .asDict()
    )
    total, matched = counts.pop("_customers"), counts.pop("_matched")
    share = matched / total if total else 0.0
    log.info(
        "input.customers '%s': %d of %d customers (%.2f%%) have a row", customers.location, matched, total, 100 * share
    )
    if share < customers.min_match_share:
        raise JoinMatchError(
            f"only {matched} of {total} customers ({share:.2%}) of the transactions (column '{key[0]}', {key[1]}) "
            f"have a row in input.customers '{customers.location}' (column '{customers.customer_id}', "
            f"{table.schema[customers.customer_id].dataType.simpleString()}), below "
            f"input.customers.min_match_share={customers.min_match_share}. "
            + _unmatched(activity, attrs, table, customers.customer_id, key[1])
            + ". Make both columns hold the same ids in the same form, or lower input.customers.min_match_share"
        )
    empty = [c for c, n in counts.items() if n == 0]
    if empty:
        log.warning("input.customers: attribute(s) %s are null for every matched customer; dropped", empty)
        numeric = [c for c in numeric if c not in empty]
        categorical = [c for c in categorical if c not in empty]
    medians = {}
    if numeric:
        values = attrs.select([F.col(c).cast("double").alias(c) for c in numeric])
        quantiles = values.approxQuantile(numeric, [0.5], 0.001)
        medians = {c: (q[0] if q else 0.0) for c, q in zip(numeric, quantiles, strict=True)}
    levels = {c: _column_values(attrs, c, customers.max_levels, families) for c in categorical}
    encoded = demographic_features(attrs, numeric, categorical, levels, medians)
    fill = {c: medians.get(c, 0.0) if c in numeric else 0.0 for c in encoded.columns if c != "customer_id"}
    return encoded, fill, share


def _with_products(
    spark: SparkSession, kept: DataFrame, products: ProductsInput, key: tuple[str, str]
) -> tuple[DataFrame, float, int]:
    """``kept`` with the product attributes joined on ``product_id`` (left, the dimension broadcast),
    the share of lines whose product is known, and the number of lines whose product is not.

    A line of an unknown product keeps its amount; its category and attributes are ``unknown``.
    ``products.category`` replaces the transactions' own category. Raises :class:`JoinMatchError`
    when the share is below ``products.min_match_share``.
    """
    clash = [a for a in products.attributes if a in kept.columns]
    if clash:
        raise ConfigError(
            f"input.products.attributes {clash} clash with the transaction columns {kept.columns}; "
            "rename them in the product table"
        )
    wanted = list(dict.fromkeys([products.product_id, *([products.category] if products.category else []),
                                 *products.attributes]))  # fmt: skip
    table = read_table(spark, products, columns=wanted, key="input.products")
    attributes = ([("category", products.category)] if products.category else []) + [
        (a, a) for a in products.attributes
    ]
    dims = (
        table.select(
            F.col(products.product_id).cast("string").alias("product_id"),
            *[F.col(column).cast("string").alias(f"_p_{role}") for role, column in attributes],
            F.lit(True).alias("_known"),
        )
        .where(F.col("product_id").isNotNull())
        .dropDuplicates(["product_id"])
    )
    base = kept.drop("category") if products.category else kept
    joined = base.join(F.broadcast(dims), "product_id", how="left")
    lines, matched = joined.agg(F.count(F.lit(1)), F.count("_known")).first()
    share = matched / lines if lines else 0.0
    log.info(
        "input.products '%s': %d of %d kept lines (%.2f%%) found their product; %d lines of unknown products",
        products.location, matched, lines, 100 * share, lines - matched,
    )  # fmt: skip
    if share < products.min_match_share:
        raise JoinMatchError(
            f"only {matched} of {lines} kept lines ({share:.2%}) of the transactions (column '{key[0]}', {key[1]}) "
            f"found their product in input.products '{products.location}' (column '{products.product_id}', "
            f"{table.schema[products.product_id].dataType.simpleString()}), below "
            f"input.products.min_match_share={products.min_match_share}. "
            + _unmatched(
                joined.where(F.col("_known").isNull()), dims, table, products.product_id, key[1], column="product_id"
            )  # fmt: skip
            + ". Make both columns hold the same ids in the same form, or lower input.products.min_match_share"
        )
    filled = joined.withColumns(
        {role: F.coalesce(F.col(f"_p_{role}"), F.lit("unknown")) for role, _ in attributes}
    ).drop(*[f"_p_{role}" for role, _ in attributes], "_known")
    return filled, share, lines - matched


def _unmatched(
    left: DataFrame, right: DataFrame, table: DataFrame, table_key: str, left_type: str, column: str = "customer_id"
) -> str:
    """A few ids of each side that the other lacks, shown as their types print them ('0042' vs 42)."""
    numeric_left = left_type != "string"
    ours = [r[0] for r in left.select(column).where(F.col(column).isNotNull()).join(
        right.select(column), column, how="left_anti").distinct().limit(5).collect()]  # fmt: skip
    theirs_keys = table.select(F.col(table_key)).where(F.col(table_key).isNotNull())
    theirs = [r[0] for r in theirs_keys.join(
        left.select(F.col(column).alias("_k")), F.col(table_key).cast("string") == F.col("_k"), how="left_anti"
    ).distinct().limit(5).collect()]  # fmt: skip
    show_ours = ", ".join(v if numeric_left else repr(v) for v in ours) or "none"
    show_theirs = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in theirs) or "none"
    return f"Ids in the transactions without a match: {show_ours}; ids in the table without a match: {show_theirs}"
