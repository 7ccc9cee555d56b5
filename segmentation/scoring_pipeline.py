"""The scoring job's orchestration: load the registered model, score a feature snapshot,
upsert the current and history tables with Delta MERGE, and log migration and drift.

Order of work, chosen so that a failure leaves no partial output:

1. resolve the model (``scoring.model_version`` or ``mlflow.alias``), download it and
   verify its SHA-256 against the tag set at registration;
2. read the feature snapshot (the scoring job first runs the feature job for it with
   ``scoring.compute_features``) and check it has every input column of the model's signature, with a numeric type:
   anything else stops with :class:`~segmentation.errors.ModelMismatchError` before
   any write;
3. score once, persisted, so every later step sees the same assignments (with
   ``is_outlier`` when the model's training run fitted the outlier flag, and both levels,
   ``sub_segment`` and its name, when the model has two); with
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
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation import plots, tracking
from segmentation.config import AppConfig
from segmentation.density import OUTLIER_COL, DensityModel, assign_density
from segmentation.errors import ContractError, ModelMismatchError
from segmentation.hierarchy import SUB_NAME_COL, SUB_SEGMENT_COL
from segmentation.identity import IdentityMapping
from segmentation.io import merge_assignment_history, merge_current_assignments, read_table, table_exists
from segmentation.monitoring import DriftReport, drift_report, migration_matrix
from segmentation.preprocessing import NUMERIC_TYPES
from segmentation.snapshots import latest_clv, persisting, read_snapshot, training_reference
from segmentation.spark import collection_paused

__all__ = ["Monitoring", "ScoringResult", "check_schema", "monitor", "run_scoring", "score"]

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


def score(
    features: DataFrame,
    loaded: tracking.LoadedModel,
    names: dict[int, str],
    density: DensityModel | None = None,
    sub_names: dict[int, str] | None = None,
) -> DataFrame:
    """customer_id, segment (stable id), segment_name, probability (GMM, else null), model_version,
    ``is_outlier`` when the model's training run fitted the outlier flag (``density``), and
    ``sub_segment`` with ``sub_segment_name`` when the model has two levels (``training.hierarchy``)."""
    predicted = loaded.model.transform(features)
    predicted = predicted if density is None else assign_density(predicted, density)
    probability = (
        F.array_max(vector_to_array(F.col("probability")))
        if "probability" in predicted.columns
        else F.lit(None).cast("double")
    )
    segment, sub = F.col("prediction").cast("int"), F.col(SUB_SEGMENT_COL).cast("int")
    two_levels = SUB_SEGMENT_COL in predicted.columns
    return predicted.select(
        "customer_id",
        segment.alias("segment"),
        _named(segment, names, "segment ").alias("segment_name"),
        probability.alias("probability"),
        F.lit(loaded.version).alias("model_version"),
        *([OUTLIER_COL] if density is not None else []),
        *([sub.alias(SUB_SEGMENT_COL), _named(sub, sub_names or {}, "sub-segment ").alias(SUB_NAME_COL)]
          if two_levels else []),
    )  # fmt: skip


def _named(ids: F.Column, names: dict[int, str], fallback: str) -> F.Column:
    """The name of each id in ``names``, else ``fallback`` and the id."""
    unnamed = F.concat(F.lit(fallback), ids.cast("string"))
    if not names:
        return unnamed
    name_map = F.create_map(*[x for k, v in sorted(names.items()) for x in (F.lit(k), F.lit(v))])
    return F.coalesce(name_map[ids], unnamed)


@dataclass(frozen=True)
class Monitoring:
    """Migration since the current table was last written and drift since the model's training snapshot."""

    migration: pd.DataFrame | None = None
    stability: float | None = None
    drift: DriftReport | None = None


def monitor(spark: SparkSession, cfg: AppConfig, loaded: tracking.LoadedModel, snapshot: DataFrame,
            scored: DataFrame) -> Monitoring:  # fmt: skip
    """Compare ``scored`` with the current table as it is (migration) and ``snapshot`` with the model's
    training snapshot and assignments, when both are still there (drift); before any write."""
    scfg = cfg.scoring
    migration, stability = None, None
    if table_exists(spark, scfg.current):
        migration, stability = migration_matrix(read_table(spark, scfg.current).where("active"), scored)
    reference_features, reference_segments = training_reference(
        spark, cfg, loaded.version, tracking.run_tags(loaded.run_id)
    )
    if reference_features is None or reference_segments is None:
        return Monitoring(migration, stability)
    drift = drift_report(reference_features, snapshot, reference_segments, scored, loaded.input_columns,
                         scfg.psi_threshold, scfg.share_shift_threshold)  # fmt: skip
    return Monitoring(migration, stability, drift)


def run_scoring(spark: SparkSession, cfg: AppConfig) -> ScoringResult:
    """Score ``scoring.as_of`` (default: the newest snapshot) with the registered model and upsert the tables."""
    tracking.configure(cfg.mlflow)
    loaded = tracking.load_registered_model(
        cfg.mlflow.registered_model, alias=cfg.mlflow.alias, version=cfg.scoring.model_version
    )
    snapshot, as_of = read_snapshot(spark, cfg.features.output, cfg.scoring.as_of)
    check_schema(snapshot, loaded, cfg.features.output.location)
    identity = tracking.load_run_dict(loaded.run_id, tracking.IDENTITY_ARTIFACT)
    names = IdentityMapping.from_dict(identity).names if identity else {}
    stored = tracking.load_run_dict(loaded.run_id, tracking.DENSITY_ARTIFACT)
    density = DensityModel.from_dict(stored) if stored else None
    tree = tracking.load_run_dict(loaded.run_id, tracking.HIERARCHY_ARTIFACT)
    sub_names = {int(r[SUB_SEGMENT_COL]): r[SUB_NAME_COL] for r in tree["tree"]} if tree else None
    clv_values, clv_as_of = latest_clv(spark, cfg, as_of) if cfg.scoring.attach_clv else (None, None)
    if cfg.scoring.attach_clv and clv_as_of is None:
        log.info("no CLV values on or before %s in %s (jobs/train_clv.py writes them): the current table gets "
                 "no CLV columns this time", as_of, cfg.clv.output.location)  # fmt: skip
    elif clv_as_of is not None and clv_as_of != as_of:
        log.warning("the newest CLV values in %s are of %s, older than the scored snapshot %s",
                    cfg.clv.output.location, clv_as_of, as_of)  # fmt: skip
    tags = {"job": "score_customers", "feature_snapshot": as_of, "model_name": loaded.name,
            "model_version": loaded.version, "model_sha256": loaded.checksum, "training_run_id": loaded.run_id,
            **({"clv_as_of": clv_as_of} if clv_as_of else {}), **tracking.environment_tags()}  # fmt: skip
    with tracking.tracked_run(f"score-{as_of}", tags=tags) as run, persisting() as persist, collection_paused(spark):
        scored = score(snapshot, loaded, names, density, sub_names)
        scored = persist(scored.join(clv_values, "customer_id", how="left") if clv_values is not None else scored)
        counts = {int(r.segment): int(r["count"]) for r in scored.groupBy("segment").count().collect()}
        if not counts:
            raise ContractError(f"feature snapshot {as_of} of '{cfg.features.output.location}' has no customers")
        monitoring = monitor(spark, cfg, loaded, snapshot, scored)
        result = ScoringResult(run_id=run.info.run_id, model_version=loaded.version, as_of=as_of,
                               customers=sum(counts.values()), segment_counts=counts, migration=monitoring.migration,
                               stability=monitoring.stability, drift=monitoring.drift, clv_as_of=clv_as_of)  # fmt: skip
        publish(spark, cfg, scored, result)
        return result


def publish(spark: SparkSession, cfg: AppConfig, scored: DataFrame, result: ScoringResult) -> None:
    """The history MERGE, the current-table MERGE, then the run's params, metrics and monitoring artifacts."""
    merge_assignment_history(spark, scored, cfg.scoring.history, result.as_of)
    merge_current_assignments(spark, scored, cfg.scoring.current, result.as_of)
    tracking.log_params({"as_of": result.as_of, "model_version": result.model_version, "customers": result.customers})
    tracking.log_metrics({f"segment_{s}_customers": c for s, c in sorted(result.segment_counts.items())})
    if result.migration is not None and not result.migration.empty:
        tracking.log_metrics({"migration_stability": result.stability})
        tracking.log_table(result.migration.reset_index(), "monitoring/migration_matrix.csv")
        tracking.log_figure(plots.migration_heatmap(result.migration), "monitoring/migration_matrix.png")
    drift = result.drift
    if drift is not None:
        tracking.log_metrics(drift.metrics())
        tracking.log_dict(drift.summary(), "monitoring/drift.json")
        tracking.set_tags({"needs_retraining": str(drift.needs_retraining).lower()})
        if drift.needs_retraining:
            log.warning("snapshot %s drifted from the training snapshot (features %s, segment shift %.3f): retrain",
                        result.as_of, drift.drifted_features, drift.segment_shift)  # fmt: skip
    log.info("scored %d customers of %s with %s version %s", result.customers, result.as_of,
             cfg.mlflow.registered_model, result.model_version)  # fmt: skip
