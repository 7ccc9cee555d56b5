"""The scoring job's orchestration: load the registered model, score a feature snapshot,
upsert the current and history tables with Delta MERGE, and log migration and drift.

Order of work, chosen so that a failure leaves no partial output:

1. resolve the model (``scoring.model_version`` or ``mlflow.alias``), download it and
   verify its SHA-256 against the tag set at registration;
2. read (or first recompute, with ``scoring.compute_features``) the feature snapshot
   and check it has every input column of the model's signature, with a numeric type:
   anything else stops with :class:`~segmentation.errors.ModelMismatchError` before
   any write;
3. score once, persisted, so every later step sees the same assignments; with
   ``scoring.attach_clv``, the CLV job's values of the newest CLV snapshot on or before
   this one (``clv.output``) are joined on, so the current table carries them;
4. migration (previous current table vs these assignments) and drift (the model's
   training snapshot vs this one) are computed before the writes, from the tables
   as they were;
5. the history MERGE, then the current-table MERGE. Each is one atomic Delta commit;
   the history MERGE computes its changes against itself, so a rerun (or a rerun
   after a crash between the two) writes exactly what is missing, and a rerun of the
   same snapshot changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pandas as pd
from pyspark import StorageLevel
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation import plots, tracking
from segmentation.config import AppConfig
from segmentation.errors import ContractError, ModelMismatchError
from segmentation.feature_pipeline import run_feature_pipeline
from segmentation.identity import IdentityMapping
from segmentation.io import (
    CLV_CURRENT_COLUMNS,
    merge_assignment_history,
    merge_current_assignments,
    read_table,
    table_exists,
)
from segmentation.monitoring import DriftReport, drift_report, migration_matrix
from segmentation.preprocessing import NUMERIC_TYPES
from segmentation.training_pipeline import IDENTITY_ARTIFACT, training_reference

__all__ = ["ScoringResult", "check_schema", "latest_clv", "run_scoring", "score"]

log = logging.getLogger(__name__)


@dataclass
class ScoringResult:
    run_id: str
    model_version: str
    as_of: str
    customers: int
    segment_counts: dict[int, int] = field(default_factory=dict)
    migration: pd.DataFrame | None = None
    stability: float | None = None
    drift: DriftReport | None = None
    clv_as_of: str | None = None


def check_schema(features: DataFrame, loaded: tracking.LoadedModel, location: str) -> None:
    """Stop before scoring when the snapshot lacks a model input column or has it with a non-numeric type."""
    if not loaded.input_columns:
        raise ModelMismatchError(f"model '{loaded.name}' version {loaded.version} has no input signature")
    types = {f.name: f.dataType for f in features.schema.fields}
    missing = [c for c in loaded.input_columns if c not in types]
    wrong = [f"{c} ({types[c].simpleString()})" for c in loaded.input_columns if c in types and not
             isinstance(types[c], NUMERIC_TYPES)]  # fmt: skip
    if missing or wrong:
        problems = []
        if missing:
            problems.append(f"missing column(s) {missing}")
        if wrong:
            problems.append(f"non-numeric column(s) {wrong}")
        raise ModelMismatchError(
            f"model '{loaded.name}' version {loaded.version} was trained on features the snapshot in "
            f"'{location}' does not have: {'; '.join(problems)}. Rebuild the features with the same feature "
            "job settings or retrain the model on this feature table"
        )


def score(features: DataFrame, loaded: tracking.LoadedModel, names: dict[int, str]) -> DataFrame:
    """customer_id, segment (stable id), segment_name, probability (GMM, else null), model_version."""
    predicted = loaded.model.transform(features)
    probability = (
        F.array_max(vector_to_array(F.col("probability")))
        if "probability" in predicted.columns
        else F.lit(None).cast("double")
    )
    name_map = F.create_map(*[x for k, v in sorted(names.items()) for x in (F.lit(k), F.lit(v))]) if names else None
    segment = F.col("prediction").cast("int")
    segment_name = F.coalesce(name_map[segment] if name_map is not None else F.lit(None).cast("string"),
                              F.concat(F.lit("segment "), segment.cast("string")))  # fmt: skip
    return predicted.select(
        "customer_id",
        segment.alias("segment"),
        segment_name.alias("segment_name"),
        probability.alias("probability"),
        F.lit(loaded.version).alias("model_version"),
    )


def _snapshot(spark: SparkSession, cfg: AppConfig) -> tuple[DataFrame, str]:
    as_of = cfg.scoring.as_of
    if cfg.scoring.compute_features:
        features_cfg = cfg.features.model_copy(update={"as_of": as_of})
        report = run_feature_pipeline(spark, cfg.model_copy(update={"features": features_cfg}))
        as_of = report.as_of
    features = read_table(spark, cfg.features.output)
    if as_of is None:
        as_of = features.select(F.max("as_of")).first()[0]
        if as_of is None:
            raise ContractError(f"feature table '{cfg.features.output.location}' is empty; run build_features")
    snapshot = features.where(F.col("as_of") == F.lit(str(as_of)).cast("date"))
    return snapshot, str(as_of)


def latest_clv(spark: SparkSession, cfg: AppConfig, as_of: str) -> tuple[DataFrame | None, str | None]:
    """The CLV values of the newest ``clv.output`` snapshot on or before ``as_of``, keyed by customer_id
    (columns of :data:`~segmentation.io.CLV_CURRENT_COLUMNS`), and that snapshot's date; (None, None)
    without a table or such a snapshot."""
    target = cfg.clv.output
    if not table_exists(spark, target):
        return None, None
    values = read_table(spark, target)
    newest = values.where(F.col("as_of") <= F.lit(as_of).cast("date")).select(F.max("as_of")).first()[0]
    if newest is None:
        return None, None
    chosen = values.where(F.col("as_of") == F.lit(newest)).select(
        "customer_id", F.col("as_of").alias("clv_as_of"), *[c for c in CLV_CURRENT_COLUMNS if c != "clv_as_of"]
    )
    return chosen, str(newest)


def run_scoring(spark: SparkSession, cfg: AppConfig) -> ScoringResult:
    scfg = cfg.scoring
    tracking.configure(cfg.mlflow)
    loaded = tracking.load_registered_model(
        cfg.mlflow.registered_model, alias=cfg.mlflow.alias, version=scfg.model_version
    )
    snapshot, as_of = _snapshot(spark, cfg)
    check_schema(snapshot, loaded, cfg.features.output.location)
    identity = tracking.load_run_dict(loaded.run_id, IDENTITY_ARTIFACT)
    names = IdentityMapping.from_dict(identity).names if identity else {}
    run_tags = tracking.run_tags(loaded.run_id)

    tags = {
        "job": "score_customers",
        "feature_snapshot": as_of,
        "model_name": loaded.name,
        "model_version": loaded.version,
        "model_sha256": loaded.checksum,
        "training_run_id": loaded.run_id,
        **tracking.environment_tags(),
    }
    clv_values, clv_as_of = latest_clv(spark, cfg, as_of) if scfg.attach_clv else (None, None)
    if clv_as_of is not None:
        tags["clv_as_of"] = clv_as_of
        if clv_as_of != as_of:
            log.warning("the newest CLV values in %s are of %s, older than the scored snapshot %s",
                        cfg.clv.output.location, clv_as_of, as_of)  # fmt: skip
    with tracking.tracked_run(f"score-{as_of}", tags=tags) as run:
        scored = score(snapshot, loaded, names)
        if clv_values is not None:
            scored = scored.join(clv_values, "customer_id", how="left")
        scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
        n = scored.count()
        if n == 0:
            raise ContractError(f"feature snapshot {as_of} of '{cfg.features.output.location}' has no customers")
        counts = {int(r.segment): int(r["count"]) for r in scored.groupBy("segment").count().collect()}

        migration, stability = None, None
        if table_exists(spark, scfg.current):
            previous = read_table(spark, scfg.current).where("active")
            migration, stability = migration_matrix(previous, scored)
        reference_features, reference_segments = training_reference(spark, cfg, loaded.version, run_tags)
        drift = None
        if reference_features is not None and reference_segments is not None:
            drift = drift_report(
                reference_features,
                snapshot,
                reference_segments,
                scored,
                loaded.input_columns,
                scfg.psi_threshold,
                scfg.share_shift_threshold,
            )

        merge_assignment_history(spark, scored, scfg.history, as_of)
        merge_current_assignments(spark, scored, scfg.current, as_of)

        tracking.log_params({"as_of": as_of, "model_version": loaded.version, "customers": n})
        tracking.log_metrics({f"segment_{s}_customers": c for s, c in sorted(counts.items())})
        if migration is not None and not migration.empty:
            tracking.log_metrics({"migration_stability": stability})
            tracking.log_table(migration.reset_index(), "monitoring/migration_matrix.csv")
            tracking.log_figure(plots.migration_heatmap(migration), "monitoring/migration_matrix.png")
        if drift is not None:
            tracking.log_metrics(drift.metrics())
            tracking.log_dict(drift.summary(), "monitoring/drift.json")
            tracking.set_tags({"needs_retraining": str(drift.needs_retraining).lower()})
            if drift.needs_retraining:
                log.warning(
                    "snapshot %s drifted from the training snapshot (features %s, segment shift %.3f): retrain",
                    as_of,
                    drift.drifted_features,
                    drift.segment_shift,
                )
        scored.unpersist()
        log.info("scored %d customers of %s with %s version %s", n, as_of, loaded.name, loaded.version)
        return ScoringResult(
            run_id=run.info.run_id,
            model_version=loaded.version,
            as_of=as_of,
            customers=n,
            segment_counts=counts,
            migration=migration,
            stability=stability,
            drift=drift,
            clv_as_of=clv_as_of,
        )
