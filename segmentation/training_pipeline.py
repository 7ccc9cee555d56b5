"""The training job's orchestration: read the feature snapshot, sweep, choose, log, register, assign.

The heavy lifting lives in the pure modules (``preprocessing``, ``models``,
``evaluation``, ``selection``, ``profiles``); this module wires them to IO
(``segmentation.io``) and MLflow (``segmentation.tracking``).

Performance shape: the preprocessing pipeline is fitted once, its output vector
dataset is persisted once and reused by every (algorithm, k) fit; k selection
runs on a sample of at most ``training.selection.sample_size`` customers and
only the champion is refitted on all of them.
"""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.ml import PipelineModel
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation import plots, tracking
from segmentation.config import AppConfig, TrainingConfig
from segmentation.errors import ContractError
from segmentation.evaluation import adjusted_rand_index, evaluate_clustering
from segmentation.feature_pipeline import read_quality
from segmentation.identity import (
    IdentityMapping,
    SegmentRelabeler,
    centroid_distances,
    contingency,
    initial_mapping,
    match_segments,
)
from segmentation.io import delta_version, read_table, table_exists, write_table
from segmentation.models import build_estimator, param_record
from segmentation.monitoring import drift_report, migration_matrix
from segmentation.preprocessing import drop_degenerate_columns, fit_preprocessing, resolve_feature_columns
from segmentation.profiles import CLV_COLUMNS, SegmentDescription, describe_segments
from segmentation.report import SegmentReport, render_report
from segmentation.selection import Choice, choose, stability_needed

__all__ = ["Laps", "TrainingResult", "load_feature_snapshot", "run_training", "training_reference"]

log = logging.getLogger(__name__)

SEGMENT_COL = "segment"
CLUSTER_COL = "cluster"
IDENTITY_ARTIFACT = "identity/segment_mapping.json"


@dataclass
class TrainingResult:
    run_id: str
    champion: str
    k: int
    model_uri: str
    model_version: str | None
    as_of: str
    records: list[dict[str, Any]] = field(default_factory=list)
    choice: Choice | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    identity: IdentityMapping | None = None
    seconds: dict[str, float] = field(default_factory=dict)


class Laps:
    """Wall-clock seconds per stage: ``laps("sweep")`` closes the stage that began at the previous call."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._last
        self._last = now


def load_feature_snapshot(spark: SparkSession, cfg: AppConfig) -> tuple[DataFrame, str]:
    """The feature rows of ``training.as_of`` (default: the newest snapshot) and that date as text."""
    features = read_table(spark, cfg.features.output)
    if "as_of" not in features.columns or "customer_id" not in features.columns:
        raise ContractError(
            f"feature table '{cfg.features.output.location}' has no customer_id/as_of columns; "
            "build it with jobs/build_features.py"
        )
    as_of = cfg.training.as_of
    if as_of is None:
        newest = features.select(F.max("as_of")).first()[0]
        if newest is None:
            raise ContractError(f"feature table '{cfg.features.output.location}' is empty")
        as_of = newest
    snapshot = features.where(F.col("as_of") == F.lit(as_of))
    return snapshot, str(as_of)


def _fit_candidate(
    algorithm: str, k: int, tcfg: TrainingConfig, sample: DataFrame, stability: float | None
) -> tuple[Any, dict[str, Any], float]:
    """Fit one (algorithm, k) on the sample and evaluate it: (model, sweep record, wall-clock start).

    The record times the fit and the metrics apart; ``stability`` is its stability until
    measured (None, or NaN when the check is off).
    """
    wall_start, started = time.time(), time.perf_counter()
    model = build_estimator(algorithm, k, tcfg, tcfg.seed).fit(sample)
    fitted = time.perf_counter()
    predictions = model.transform(sample).persist()
    metrics = evaluate_clustering(model, predictions, "features", "prediction", algorithm)
    predictions.unpersist()
    seconds = {"fit_seconds": fitted - started, "metrics_seconds": time.perf_counter() - fitted}
    return model, {"algorithm": algorithm, "k": k, **metrics, "stability_ari": stability, **seconds}, wall_start


def _stability(
    algorithm: str, k: int, model: Any, tcfg: TrainingConfig, sample: DataFrame, seeds: list[int]
) -> tuple[float, float]:
    """(mean adjusted Rand index between the model and fits with other seeds on the same rows, seconds)."""
    started = time.perf_counter()
    base = model.transform(sample).select("customer_id", "features", F.col("prediction").alias("base"))
    scores = []
    for seed in seeds:
        estimator = build_estimator(
            algorithm, k, tcfg, seed, prediction_col="prediction_alt", probability_col="probability_alt"
        )
        scores.append(adjusted_rand_index(estimator.fit(sample).transform(base), "base", "prediction_alt"))
    return float(sum(scores) / len(scores)), time.perf_counter() - started


def _sweep(tcfg: TrainingConfig, sample: DataFrame) -> tuple[list[tuple[str, int]], dict, dict, dict]:
    """Fit and evaluate every (algorithm, k), then measure stability where ``stability_scope`` asks.

    Returns the candidates in order and, per candidate, its model, sweep record and wall-clock start.
    A record's ``stability_seconds`` is None where its stability was not measured, and its
    ``candidate_seconds`` sums the fit, the metrics and the stability.
    """
    sel = tcfg.selection
    seeds = [tcfg.seed + i for i in range(1, sel.stability_seeds)]
    candidates = [(a, k) for a in tcfg.algorithms for k in range(tcfg.k_min, tcfg.k_max + 1)]
    unmeasured = None if seeds else float("nan")

    def pending() -> list[tuple[str, int]]:
        if not seeds:
            return []
        if sel.stability_scope == "all":
            return [c for c in candidates if records[c]["stability_ari"] is None]
        rule = (sel.min_cluster_share, sel.min_stability, sel.silhouette_tolerance)
        return stability_needed(list(records.values()), tcfg.algorithms, *rule)

    with ThreadPoolExecutor(sel.parallelism) as pool:
        fitted = pool.map(lambda c: _fit_candidate(*c, tcfg, sample, unmeasured), candidates)
        fits = dict(zip(candidates, fitted, strict=True))
        models = {c: fit[0] for c, fit in fits.items()}
        records = {c: {**fit[1], "stability_seconds": None} for c, fit in fits.items()}
        while todo := pending():
            scores = pool.map(lambda c: _stability(*c, models[c], tcfg, sample, seeds), todo)
            for c, (ari, seconds) in zip(todo, scores, strict=True):
                records[c].update(stability_ari=ari, stability_seconds=seconds)
    for record in records.values():
        steps = ("fit_seconds", "metrics_seconds", "stability_seconds")
        record["candidate_seconds"] = sum(record[step] or 0.0 for step in steps)
    return candidates, models, records, {c: fit[2] for c, fit in fits.items()}


def run_training(spark: SparkSession, cfg: AppConfig, quality: dict[str, float] | None = None) -> TrainingResult:
    tcfg = cfg.training
    snapshot, as_of = load_feature_snapshot(spark, cfg)
    feature_cols = resolve_feature_columns(snapshot, tcfg)
    feature_cols = drop_degenerate_columns(snapshot, feature_cols)
    input_version = delta_version(spark, cfg.features.output)

    tracking.configure(cfg.mlflow)
    tags = {
        "job": "train_segments",
        "feature_snapshot": as_of,
        "input_table": cfg.features.output.location,
        "input_delta_version": input_version if input_version is not None else "n/a",
        **tracking.environment_tags(),
    }
    with tracking.tracked_run(f"train-{as_of}", tags=tags) as parent:
        laps = Laps()
        prep_model = fit_preprocessing(snapshot, feature_cols, tcfg)
        prepared = (
            prep_model.transform(snapshot).select("customer_id", "features").persist(StorageLevel.MEMORY_AND_DISK)
        )
        n_customers = prepared.count()
        if n_customers < tcfg.k_max:
            raise ContractError(
                f"feature snapshot {as_of} has {n_customers} customers, fewer than training.k_max={tcfg.k_max}"
            )
        fraction = min(1.0, tcfg.selection.sample_size / n_customers)
        sample = prepared if fraction >= 1.0 else prepared.sample(False, fraction, tcfg.seed).persist()
        n_sample = sample.count()
        laps("prepare")
        tracking.log_params(
            {
                "as_of": as_of,
                "n_customers": n_customers,
                "sample_rows": n_sample,
                "n_features": len(feature_cols),
                "feature_columns": ",".join(feature_cols)[:5000],
                "algorithms": ",".join(tcfg.algorithms),
                "k_min": tcfg.k_min,
                "k_max": tcfg.k_max,
                "seed": tcfg.seed,
                **{f"selection_{k}": v for k, v in tcfg.selection.model_dump().items()},
            }
        )
        quality = quality if quality is not None else read_quality(spark, cfg, as_of)
        if quality:
            tracking.log_metrics(quality)
            tracking.set_tags({k: int(v) for k, v in quality.items() if k != "dq_quarantined_share"})
        log.info(
            "sweeping %s, k=%d..%d on %d of %d customers",
            tcfg.algorithms,
            tcfg.k_min,
            tcfg.k_max,
            n_sample,
            n_customers,
        )

        candidates, fitted, by_candidate, wall_starts = _sweep(tcfg, sample)
        records = []
        for algorithm, k in candidates:
            record = by_candidate[(algorithm, k)]
            records.append(record)
            tracking.child_run(
                f"{algorithm}-k{k}",
                params={**param_record(algorithm, k, tcfg, tcfg.seed), "as_of": as_of, "sample_rows": n_sample},
                # Not measured (stability_scope: shortlist) is left out, not logged as a number.
                metrics={m: v for m, v in record.items() if m not in ("algorithm", "k") and v is not None},
                tags={**tags, "algorithm": algorithm, "k": k, "role": "candidate"},
                # The UI's Duration: the fit and the metrics, which ran back to back; the
                # stability refits ran after every candidate's fit (stability_seconds).
                started=wall_starts[(algorithm, k)],
                ended=wall_starts[(algorithm, k)] + record["fit_seconds"] + record["metrics_seconds"],
            )
            log.info(
                "%s k=%d silhouette=%.3f stability=%s (%.1fs)",
                algorithm,
                k,
                record["silhouette"],
                "not measured" if record["stability_ari"] is None else f"{record['stability_ari']:.3f}",
                record["candidate_seconds"],
            )

        laps("sweep")
        choice = choose(
            records,
            tcfg.algorithms,
            tcfg.selection.min_cluster_share,
            tcfg.selection.min_stability,
            tcfg.selection.silhouette_tolerance,
        )
        champion, k = choice.champion, choice.champion_k
        log.info("champion: %s with k=%d", champion, k)
        cluster_model = fitted[(champion, k)]
        if sample is not prepared:
            cluster_model = build_estimator(champion, k, tcfg, tcfg.seed).fit(prepared)
        cluster_model.setPredictionCol(CLUSTER_COL)
        clustered = cluster_model.transform(prep_model.transform(snapshot))
        previous = tracking.registered_model(cfg.mlflow.registered_model, cfg.mlflow.alias)
        identity, old_segments = _stable_identity(cfg, previous, snapshot, clustered, k)
        full_model = PipelineModel(
            stages=[*prep_model.stages, cluster_model, SegmentRelabeler(mapping=identity.cluster_to_segment)]
        )
        assigned = full_model.transform(snapshot).persist(StorageLevel.MEMORY_AND_DISK)

        final_metrics = evaluate_clustering(cluster_model, assigned, "features", CLUSTER_COL, champion)
        laps("refit")
        sweep = pd.DataFrame(records)
        tracking.set_tags({"algorithm": champion, "k": k, "role": "parent"})
        tracking.log_metrics({f"champion_{m}": v for m, v in final_metrics.items() if not math.isnan(v)})
        tracking.log_dict(choice.rationale, "selection/chosen_k_rationale.json")
        tracking.log_table(sweep, "selection/sweep.csv")
        raw = snapshot.join(
            assigned.select("customer_id", F.col("prediction").cast("int").alias(SEGMENT_COL)), "customer_id"
        )
        pcfg = cfg.profiles
        description = describe_segments(
            _with_clv(spark, cfg, raw, as_of),
            feature_cols,
            names={**identity.names, **pcfg.names},  # kept segments keep their name; config wins
            rule_depth=pcfg.rule_depth,
            horizon_days=pcfg.value_horizon_days,
            top_n=pcfg.top_recommendations,
            seed=tcfg.seed,
        )
        identity = identity.with_names(description.names)  # scoring reads the names from here
        tracking.log_dict(identity.as_dict(), IDENTITY_ARTIFACT)
        tracking.log_table(description.profile, "profiles/segment_profile.csv")
        tracking.log_dict(
            {"fidelity": description.fidelity, "depth": pcfg.rule_depth, "rules": description.rules,
             "separating_features": description.separating},
            "profiles/segment_rules.json",
        )  # fmt: skip
        tracking.log_metrics({"rule_fidelity": description.fidelity})
        tracking.log_metrics(
            {
                "identity_kept": float(sum(d["decision"] == "kept" for d in identity.decisions)),
                "identity_new": float(len(identity.new_ids)),
                "identity_retired": float(len(identity.retired_ids)),
            }
        )
        if previous is not None and old_segments is not None:
            _log_retraining(spark, cfg, previous, old_segments, assigned, snapshot, feature_cols, identity)
        laps("profile")
        for name, figure in plots.sweep_figures(sweep).items():
            tracking.log_figure(figure, f"charts/{name}.png")
        tracking.log_figure(plots.pca_scatter(assigned, "features", "prediction", tcfg.seed), "charts/pca_scatter.png")

        example = snapshot.select(*feature_cols).limit(5).toPandas()
        output = full_model.transform(snapshot.limit(5)).select("prediction").toPandas()
        laps("charts")
        model_uri = tracking.log_spark_model(full_model, example, output)
        laps("log_model")
        promote = tcfg.promote == "always" or (tcfg.promote == "auto" and previous is None)
        version = (
            tracking.register_model(model_uri, cfg.mlflow.registered_model, cfg.mlflow.alias, make_champion=promote)
            if tcfg.register_model
            else None
        )
        tracking.set_tags({"promoted": str(bool(version) and promote).lower()})
        laps("register")

        assignments = _assignments(assigned, champion, as_of, version or parent.info.run_id)
        # Keyed by (snapshot, model version): a challenger never overwrites the champion's rows.
        write_table(
            assignments,
            tcfg.assignments,
            partition_by=["as_of"],
            replace_where={"as_of": as_of, "model_version": str(version or parent.info.run_id)},
        )
        model_label = f"{cfg.mlflow.registered_model} v{version}" if version else f"run {parent.info.run_id}"
        _write_profiles(spark, cfg, description, as_of, str(version or parent.info.run_id), model_label)
        extra = {}
        if tcfg.ground_truth.enabled:
            label = tcfg.ground_truth.label_column
            truth = read_table(spark, tcfg.ground_truth, columns=["customer_id", label]).select(
                "customer_id", F.col(label).alias("planted_segment")
            )
            joined = assignments.join(truth, "customer_id", how="inner")
            extra["ground_truth_ari"] = adjusted_rand_index(joined, SEGMENT_COL, "planted_segment")
            tracking.log_metrics(extra)
            log.info("adjusted Rand index against the planted segments: %.3f", extra["ground_truth_ari"])
        laps("write")
        tracking.log_metrics({f"seconds_{stage}": value for stage, value in laps.seconds.items()})
        prepared.unpersist()
        assigned.unpersist()
        if sample is not prepared:
            sample.unpersist()
        return TrainingResult(
            run_id=parent.info.run_id,
            champion=champion,
            k=k,
            model_uri=model_uri,
            model_version=version,
            as_of=as_of,
            records=records,
            choice=choice,
            metrics={**final_metrics, **extra},
            identity=identity,
            seconds=laps.seconds,
        )


def _with_clv(spark: SparkSession, cfg: AppConfig, raw: DataFrame, as_of: str) -> DataFrame:
    """``raw`` with the CLV job's values of the snapshot (clv.output) joined on, when it has scored it."""
    target = cfg.clv.output
    if not table_exists(spark, target):
        return raw
    values = read_table(spark, target).where(F.col("as_of") == F.lit(as_of)).select("customer_id", *CLV_COLUMNS)
    if not values.limit(1).collect():
        return raw
    log.info("segment profiles show the CLV values of %s for as_of %s", target.location, as_of)
    return raw.join(values, "customer_id", how="left")


def _write_profiles(
    spark: SparkSession,
    cfg: AppConfig,
    description: SegmentDescription,
    as_of: str,
    model_version: str,
    model_label: str,
) -> None:
    """The profile Delta table (keyed by as_of and model_version) and the HTML report, to disk and MLflow."""
    pcfg = cfg.profiles
    table = description.profile.assign(model_version=model_version)
    frame = spark.createDataFrame(table).withColumn("as_of", F.lit(as_of).cast("date"))
    # mergeSchema: the CLV columns appear once the CLV job has scored a snapshot.
    write_table(frame, pcfg.output, partition_by=["as_of"], replace_where={"as_of": as_of, "model_version":
                model_version}, merge_schema=True)  # fmt: skip
    html = render_report(
        SegmentReport(
            title="Customer segments",
            model=model_label,
            as_of=as_of,
            customers=int(description.profile["customers"].sum()),
            fidelity=description.fidelity,
            profile=description.profile,
            names=description.names,
            descriptions=dict(zip(description.profile["segment"].astype(int), description.profile["description"],
                                  strict=True)),
            rules=description.rules,
            separating=description.separating,
            recommendations=description.recommendations,
            heatmap_features=description.model_features,
        ),
        horizon_days=pcfg.value_horizon_days,
    )  # fmt: skip
    tracking.log_text(html, "report/segment_report.html")
    path = Path(pcfg.report_dir) / f"segment_report_{as_of}_{model_version}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)  # atomic: a reader never sees half a report
    log.info("segment report: %s", path.resolve())


def training_reference(
    spark: SparkSession, cfg: AppConfig, model_version: str, run_tags: dict[str, str]
) -> tuple[DataFrame | None, DataFrame | None]:
    """A model version's training snapshot and the assignments it wrote, when both are still there."""
    train_as_of = run_tags.get("feature_snapshot")
    if not train_as_of:
        return None, None
    features = read_table(spark, cfg.features.output).where(F.col("as_of") == F.lit(train_as_of).cast("date"))
    if not table_exists(spark, cfg.training.assignments):
        return features, None
    segments = read_table(spark, cfg.training.assignments).where(
        (F.col("as_of") == F.lit(train_as_of).cast("date")) & (F.col("model_version") == F.lit(str(model_version)))
    )
    return features, (segments if segments.limit(1).count() else None)


def _log_retraining(
    spark: SparkSession,
    cfg: AppConfig,
    previous: tracking.LoadedModel,
    old_segments: DataFrame,
    assigned: DataFrame,
    snapshot: DataFrame,
    feature_cols: list[str],
    identity: IdentityMapping,
) -> None:
    """What a promotion would change, logged on the retraining run.

    * migration matrix: the champion's segments vs the new model's (stable) segments for
      the customers of this snapshot, as a table, a heatmap and ``migration_stability``;
    * centre movement: the distance (scaled feature space of the new model) between each
      kept segment's old and new centre, as ``centre_shift_mean``/``centre_shift_max``;
    * drift: PSI of every feature between the champion's training snapshot and this one,
      and the segment-share shift between the champion's training assignments and these.
    """
    new_segments = assigned.select("customer_id", F.col("prediction").cast("int").alias("segment"))
    migration, stability = migration_matrix(old_segments, new_segments)
    shifts = [d["centroid_distance"] for d in identity.decisions if d["decision"] == "kept"]
    shifts = [x for x in shifts if x is not None]
    metrics = {"migration_stability": stability, "previous_champion_version": float(previous.version)}
    if shifts:
        metrics |= {"centre_shift_mean": float(np.mean(shifts)), "centre_shift_max": float(np.max(shifts))}
    if not migration.empty:
        tracking.log_table(migration.reset_index(), "migration/migration_matrix.csv")
        tracking.log_figure(plots.migration_heatmap(migration), "migration/migration_matrix.png")
    reference_features, reference_segments = training_reference(
        spark, cfg, previous.version, tracking.run_tags(previous.run_id)
    )
    if reference_features is not None and reference_segments is not None:
        common = [c for c in previous.input_columns if c in feature_cols] or feature_cols
        drift = drift_report(
            reference_features,
            snapshot,
            reference_segments,
            new_segments,
            common,
            cfg.scoring.psi_threshold,
            cfg.scoring.share_shift_threshold,
        )
        metrics |= drift.metrics()
        tracking.log_dict(drift.summary(), "monitoring/drift.json")
    tracking.log_metrics(metrics)
    tracking.set_tags({"previous_champion_version": previous.version})
    log.info("retraining vs champion version %s: %.1f%% of customers keep their segment", previous.version,
             100 * stability)  # fmt: skip


def _stable_identity(
    cfg: AppConfig, previous: tracking.LoadedModel | None, snapshot: DataFrame, clustered: DataFrame, k: int
) -> tuple[IdentityMapping, DataFrame | None]:
    """Match the new clusters to the current champion's segments (see ``segmentation.identity``).

    Also returns the champion's segments for this snapshot (``customer_id``, ``segment``),
    or ``None`` when there is no champion or it cannot score these features.
    """
    if previous is None:
        log.info("no previous champion: segment ids are the cluster numbers")
        return initial_mapping(k), None
    old_model, old_version, old_run = previous.model, previous.version, previous.run_id
    old_identity = tracking.load_run_dict(old_run, IDENTITY_ARTIFACT)
    prior = IdentityMapping.from_dict(old_identity) if old_identity else initial_mapping(0)
    try:
        old = old_model.transform(snapshot).select("customer_id", F.col("prediction").cast("int").alias("old_segment"))
    except Exception as exc:  # noqa: BLE001 - a champion on other features cannot be compared
        log.warning("champion version %s cannot score this snapshot (%s); all segments get new ids", old_version, exc)
        return match_segments(prior, [], [], np.zeros((0, 0)), n_clusters=k), None
    joined = clustered.select("customer_id", "features", CLUSTER_COL).join(old, "customer_id", how="inner")
    old_ids, new_clusters, counts = contingency(joined, "old_segment", CLUSTER_COL)
    icfg = cfg.training.identity
    distances = centroid_distances(joined, "features", "old_segment", CLUSTER_COL, old_ids, new_clusters)
    log.info("matching %d new clusters to %d segments of champion version %s", k, len(old_ids), old_version)
    mapping = match_segments(
        prior,
        old_ids,
        new_clusters,
        counts,
        n_clusters=k,
        method=icfg.method,
        distances=distances,
        min_overlap=icfg.min_overlap,
        max_centroid_distance=icfg.max_centroid_distance,
    )
    return mapping, old.withColumnRenamed("old_segment", SEGMENT_COL)


def _assignments(assigned: DataFrame, algorithm: str, as_of: str, model_version: str) -> DataFrame:
    """customer_id, segment, membership probability (GMM only, else null), model_version, as_of."""
    probability = (
        F.array_max(vector_to_array(F.col("probability")))
        if algorithm == "gaussian_mixture"
        else F.lit(None).cast("double")
    )
    return assigned.select(
        "customer_id",
        F.col("prediction").cast("int").alias(SEGMENT_COL),
        F.col(CLUSTER_COL).cast("int").alias(CLUSTER_COL),
        probability.alias("probability"),
        F.lit(str(model_version)).alias("model_version"),
        F.lit(as_of).cast("date").alias("as_of"),
    )
