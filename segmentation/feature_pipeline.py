"""The feature job's orchestration: read, check, quarantine, compute, write.

Nothing is written until every check has passed, so a failed contract or a
quarantine share over ``features.max_quarantine_share`` leaves no partial
output. Each output replaces exactly its ``as_of`` snapshot in one Delta
transaction, so a rerun is idempotent and other snapshots stay.
"""

from __future__ import annotations

import logging

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.config import AppConfig
from segmentation.feature_table import compute_features
from segmentation.io import check_fits, table_columns, write_table
from segmentation.quality import QualityReport
from segmentation.snapshots import persisting
from segmentation.spark import job_descriptions, shuffle_partitions_kept

__all__ = ["features_for_scoring", "run_feature_pipeline"]

log = logging.getLogger(__name__)


def run_feature_pipeline(spark: SparkSession, cfg: AppConfig) -> QualityReport:
    """Build and write the feature snapshot, the quarantine and the quality row; return the report."""
    fcfg = cfg.features
    with shuffle_partitions_kept(spark), persisting() as persist, job_descriptions(spark) as describe:
        # A table keeps the category, channel and level columns of its first snapshot (docs/data.md).
        existing = table_columns(spark, fcfg.output)
        features, quarantine, report = compute_features(spark, cfg, persist, existing)
        log.info("data quality: %s", report.summary())
        snapshot, quality = {"as_of": report.as_of.isoformat()}, _quality_row(spark, report, cfg)
        for frame, target in ((features, fcfg.output), (quarantine, fcfg.quarantine)):
            check_fits(spark, frame, target)  # all three, before any is written
        check_fits(spark, quality, fcfg.quality, merge_schema=True)
        describe("features: write the features")
        write_table(features, fcfg.output, partition_by=["as_of"], replace_where=snapshot)
        describe("features: write the quarantine and the quality row")
        write_table(quarantine, fcfg.quarantine, partition_by=["as_of"], replace_where=snapshot)
        # mergeSchema: a quality table written before the join match columns existed gains them.
        write_table(quality, fcfg.quality, ["as_of"], replace_where=snapshot, merge_schema=True)
    log.info("features of %d customers for as_of %s written to %s", report.customers, report.as_of,
             fcfg.output.location)  # fmt: skip
    return report


def features_for_scoring(spark: SparkSession, cfg: AppConfig) -> AppConfig:
    """With ``scoring.compute_features``: build the feature snapshot of ``scoring.as_of`` (default: the
    input's newest day) and return the config with ``scoring.as_of`` set to it; otherwise ``cfg``."""
    if not cfg.scoring.compute_features:
        return cfg
    features = cfg.features.model_copy(update={"as_of": cfg.scoring.as_of})
    report = run_feature_pipeline(spark, cfg.model_copy(update={"features": features}))
    scoring = cfg.scoring.model_copy(update={"as_of": report.as_of})
    return cfg.model_copy(update={"scoring": scoring})


_SHARE_COLUMNS = ("dq_customers_match_share", "dq_products_match_share")


def _quality_row(spark: SparkSession, report: QualityReport, cfg: AppConfig) -> DataFrame:
    """One row: the source, every count of ``report.as_dict()`` as a long and the join match shares
    (null when that join is off), so the table keeps one schema whatever is enabled."""
    metrics = report.as_dict()
    counts = [k for k in metrics if k != "dq_quarantined_share" and k not in _SHARE_COLUMNS]
    counts += [] if "dq_unknown_product_lines" in counts else ["dq_unknown_product_lines"]
    fields = [T.StructField("source", T.StringType())]
    fields += [T.StructField(k, T.LongType()) for k in counts]
    fields += [T.StructField(k, T.DoubleType()) for k in _SHARE_COLUMNS]
    values = [cfg.input.transactions.location]
    values += [int(metrics[k]) if k in metrics else None for k in counts]
    values += [metrics.get(k) for k in _SHARE_COLUMNS]
    row = spark.createDataFrame([tuple(values)], T.StructType(fields))
    return row.withColumn("as_of", F.lit(report.as_of))
