"""The feature job's orchestration: read, check, quarantine, compute, write.

Nothing is written until every check has passed, so a failed contract or a
quarantine share over ``features.max_quarantine_share`` leaves no partial
output. Each output replaces exactly its ``as_of`` snapshot in one Delta
transaction, so a rerun is idempotent and other snapshots stay.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation.config import AppConfig, CustomersInput
from segmentation.errors import ContractError, InputNotFoundError, QuarantineThresholdError
from segmentation.features import customer_activity, demographic_features, top_values, typical_gap, with_churn
from segmentation.io import read_table, write_table
from segmentation.quality import (
    QUARANTINE_REASONS,
    QualityReport,
    canonical_columns,
    check_contract,
    default_as_of,
    label_rows,
    parse_rows,
)

__all__ = ["run_feature_pipeline", "compute_features", "read_quality"]

log = logging.getLogger(__name__)


def compute_features(
    spark: SparkSession, cfg: AppConfig
) -> tuple[DataFrame, DataFrame, QualityReport, list[DataFrame]]:
    """Read and validate the transactions, check the quarantine, then compute the features.

    Returns (features, quarantine, report, persisted): ``persisted`` are the labelled rows
    and the per-customer activity, which the caller unpersists once the outputs are written
    (they are unpersisted here when a check fails).
    """
    source = cfg.input.transactions
    fcfg = cfg.features
    columns = {role: name for role, name in source.columns.items() if name}
    raw = read_table(spark, source)
    check_contract(raw, columns, f"{source.format} input '{source.location}'")
    canonical = canonical_columns(raw, columns)
    if not canonical.limit(1).collect():
        raise ContractError(
            f"{source.format} input '{source.location}' is empty: no transactions to build features from"
        )
    parsed = parse_rows(canonical)
    as_of = fcfg.as_of or default_as_of(parsed)
    if as_of is None:
        raise ContractError(
            f"column '{columns['timestamp']}' of '{source.location}' has no parseable timestamp; "
            "expected timestamps such as 2024-05-31 12:00:00"
        )
    labelled = label_rows(parsed, as_of).persist(StorageLevel.MEMORY_AND_DISK)
    persisted = [labelled]
    try:
        by_reason = {r["reason"]: r["count"] for r in labelled.groupBy("reason").count().collect()}
        rows_kept = by_reason.pop(None, 0)
        report = QualityReport(
            as_of=as_of,
            rows_read=rows_kept + sum(by_reason.values()),
            rows_kept=rows_kept,
            customers=0,
            quarantined={reason: int(by_reason.get(reason, 0)) for reason in QUARANTINE_REASONS},
        )
        _check_kept_rows(report, fcfg.max_quarantine_share, source.location)
        kept = labelled.where(F.col("reason").isNull())
        categories = (
            top_values(kept, "category", fcfg.top_categories, weight=F.when(F.col("amount") > 0, F.col("amount")))
            if "category" in columns
            else []
        )
        channels = top_values(kept, "channel", fcfg.max_channels) if "channel" in columns else []
        # Persisted so the customer count, the median gap and the write read one aggregation, not three.
        activity = customer_activity(
            kept, as_of, categories=categories, channels=channels, trend_window_days=fcfg.trend_window_days
        ).persist(StorageLevel.MEMORY_AND_DISK)
        persisted.append(activity)
        report = dataclasses.replace(report, customers=activity.count())
        features = with_churn(
            activity, typical_gap(activity, default=float(fcfg.trend_window_days)), fcfg.churn_gap_multiple
        )
        if cfg.input.customers.enabled:  # reads the customers table, which can be missing or wrong
            features = features.join(_demographics(spark, cfg.input.customers), "customer_id", how="left")
            features = features.fillna(0.0, subset=[c for c in features.columns if c.endswith("_other")])
    except BaseException:
        for frame in persisted:
            frame.unpersist()
        raise
    quarantine = labelled.where(F.col("reason").isNotNull()).select(
        "customer_id",
        *(["transaction_id"] if "transaction_id" in columns else []),
        F.col("timestamp_raw").cast("string").alias("timestamp"),
        F.col("amount_raw").cast("string").alias("amount"),
        "reason",
        F.lit(as_of).alias("as_of"),
    )
    return features, quarantine, report, persisted


def _check_kept_rows(report: QualityReport, max_share: float, location: str) -> None:
    """Stop before any aggregation when too much was quarantined or nothing was kept."""
    if report.quarantined_share > max_share:
        raise QuarantineThresholdError(
            f"{report.rows_quarantined} of {report.rows_read} rows ({report.quarantined_share:.2%}) of "
            f"'{location}' were quarantined, over features.max_quarantine_share={max_share}; "
            f"reasons: {', '.join(f'{k}={v}' for k, v in report.quarantined.items() if v)}. Nothing was written"
        )
    if report.rows_kept == 0:
        raise ContractError(f"no valid transaction left in '{location}'; nothing was written")


def _demographics(spark: SparkSession, customers: CustomersInput) -> DataFrame:
    wanted = [customers.customer_id, *customers.numeric, *customers.categorical]
    attrs = read_table(spark, customers, columns=wanted).withColumnRenamed(customers.customer_id, "customer_id")
    medians = {}
    if customers.numeric:
        values = attrs.select([F.col(c).cast("double").alias(c) for c in customers.numeric])
        quantiles = values.approxQuantile(list(customers.numeric), [0.5], 0.001)
        medians = {c: (q[0] if q else 0.0) for c, q in zip(customers.numeric, quantiles, strict=True)}
    levels = {c: top_values(attrs, c, customers.max_levels) for c in customers.categorical}
    return demographic_features(attrs, customers.numeric, customers.categorical, levels, medians)


def run_feature_pipeline(spark: SparkSession, cfg: AppConfig) -> QualityReport:
    """Build and write the feature snapshot, the quarantine and the quality row; return the report."""
    fcfg = cfg.features
    features, quarantine, report, persisted = compute_features(spark, cfg)
    try:
        log.info("data quality: %s", report.summary())
        snapshot = {"as_of": report.as_of.isoformat()}
        write_table(features, fcfg.output, partition_by=["as_of"], replace_where=snapshot)
        write_table(quarantine, fcfg.quarantine, partition_by=["as_of"], replace_where=snapshot)
        write_table(_quality_row(spark, report, cfg), fcfg.quality, partition_by=["as_of"], replace_where=snapshot)
        log.info(
            "features of %d customers for as_of %s written to %s", report.customers, report.as_of, fcfg.output.location
        )
        return report
    finally:
        for frame in persisted:
            frame.unpersist()


def _quality_row(spark: SparkSession, report: QualityReport, cfg: AppConfig) -> DataFrame:
    values = {"source": cfg.input.transactions.location, **{k: int(v) for k, v in report.as_dict().items()
                                                             if k != "dq_quarantined_share"}}  # fmt: skip
    row = spark.createDataFrame([tuple(values.values())], list(values))
    return row.withColumn("as_of", F.lit(report.as_of))


def read_quality(spark: SparkSession, cfg: AppConfig, as_of: dt.date | str) -> dict[str, float]:
    """The data-quality counts the feature job recorded for ``as_of`` ({} when none)."""
    try:
        rows = read_table(spark, cfg.features.quality).where(F.col("as_of") == F.lit(str(as_of))).collect()
    except InputNotFoundError:  # no quality table: nothing to log
        return {}
    if not rows:
        return {}
    return {k: float(v) for k, v in rows[0].asDict().items() if k.startswith("dq_")}
