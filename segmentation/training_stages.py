"""The training stages, each a function from typed inputs to a typed output.

``prepare`` fits the preprocessing and persists the vectors (and a sample of them), the
sweep (:mod:`segmentation.sweep`) fits every candidate on the sample, ``finalise``
chooses the champion, refits it on every customer and gives its clusters stable segment
ids, ``describe`` names and explains the segments, and ``compare`` measures what a
promotion would change against the current champion. None of them logs to MLflow or
writes a table: :mod:`segmentation.training_publish` does both, once, at the end.

Frames a stage persists go through the ``persist`` callable of
:func:`segmentation.snapshots.persisting`, which releases them however the run ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation import tracking
from segmentation.config import DENSITY, AppConfig, TrainingConfig
from segmentation.density import OUTLIER_COL, DensityModel, assign_density, fit_on_sample
from segmentation.errors import ContractError
from segmentation.evaluation import adjusted_rand_index
from segmentation.hierarchy import SUB_CLUSTER_COL, SUB_SEGMENT_COL, Split, describe_tree, fit_splits, sub_stages
from segmentation.identity import (
    IdentityMapping,
    centroid_distances,
    contingency,
    initial_mapping,
    match_segments,
    relabel_stage,
)
from segmentation.io import read_table
from segmentation.models import fit_best
from segmentation.monitoring import drift_report, migration_matrix
from segmentation.preprocessing import drop_degenerate_columns, fit_preprocessing, resolve_feature_columns
from segmentation.profiles import SegmentDescription, describe_segments
from segmentation.selection import Choice, choose
from segmentation.snapshots import Persist, training_reference, with_clv
from segmentation.sweep import Sweep, evaluate_candidate

__all__ = [
    "Champion",
    "Comparison",
    "Final",
    "Laps",
    "Prepared",
    "Trained",
    "assemble_model",
    "compare",
    "current_champion",
    "describe",
    "finalise",
    "fit_outliers",
    "prepare",
    "read_ground_truth",
    "split",
    "without_outliers",
]

log = logging.getLogger(__name__)

SEGMENT_COL = "segment"
OUTLIER_LABEL = "outlier"  # the generator's ground-truth label of its planted outliers
CLUSTER_COL = "cluster"
# What the stages after finalise read of the scored snapshot (probability: GaussianMixture only).
_ASSIGNED_COLUMNS = ("customer_id", "features", CLUSTER_COL, "prediction", "probability", OUTLIER_COL,
                     SUB_CLUSTER_COL, SUB_SEGMENT_COL)  # fmt: skip


class Laps:
    """Wall-clock seconds per stage: ``laps.begin("sweep")`` closes the stage that was running and
    starts ``sweep``; ``laps.end()`` closes the last one. A stage begun twice adds up.

    With ``describe`` (see :func:`segmentation.spark.job_descriptions`), the Spark jobs of each
    stage carry its name ("training: sweep") in the Spark UI and the event log, and those after
    ``end`` the run's ("training").
    """

    def __init__(self, describe: Callable[[str], None] | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self._stage: str | None = None  # nothing is timed before the first begin
        self._started = 0.0
        self._describe = describe or (lambda _text: None)

    def begin(self, stage: str) -> None:
        self._close()
        self._stage = stage
        self._describe(f"training: {stage}")

    def end(self) -> None:
        self._close()
        self._describe("training")

    def _close(self) -> None:
        now = time.perf_counter()
        if self._stage is not None:
            self.seconds[self._stage] = self.seconds.get(self._stage, 0.0) + now - self._started
        self._stage, self._started = None, now


@dataclass(frozen=True)
class Champion:
    """The model behind ``mlflow.alias`` when the run starts: what a retrain is matched and compared to."""

    loaded: tracking.LoadedModel
    identity: IdentityMapping
    tags: dict[str, str]
    sub_identity: IdentityMapping | None = None  # its sub-segments' (training.hierarchy), or None


@dataclass(frozen=True)
class Prepared:
    snapshot: DataFrame  # the feature rows of as_of
    as_of: str
    feature_cols: list[str]
    preprocessing: PipelineModel
    vectors: DataFrame  # customer_id, features of every customer (persisted)
    sample: DataFrame  # the rows the sweep fits on (persisted; ``vectors`` itself when it is small)
    n_customers: int
    n_sample: int
    n_left_out: int = 0  # flagged outliers left out of ``vectors`` and ``sample`` (:func:`without_outliers`)


@dataclass(frozen=True)
class Final:
    choice: Choice
    cluster_model: Any
    model: PipelineModel  # preprocessing, the champion refitted on every customer, the relabelling
    assigned: DataFrame  # customer_id, features, cluster, stable segment (prediction), probability (GMM); persisted
    identity: IdentityMapping
    old_segments: DataFrame | None  # the champion's segments of these customers
    metrics: dict[str, float]
    refit_rows: int  # the customers the champion was fitted on
    density: DensityModel | None = None  # the outlier flag's DBSCAN (training.density.flag_outliers)
    splits: list[Split] | None = None  # each broad segment's split (training.hierarchy), or None
    sub_identity: IdentityMapping | None = None  # sub_cluster -> stable sub_segment (training.hierarchy)


@dataclass(frozen=True)
class Comparison:
    """What promoting the new model would change (see :func:`compare`)."""

    previous_version: str
    migration: pd.DataFrame
    metrics: dict[str, float]
    drift: dict[str, Any] | None


@dataclass(frozen=True)
class Trained:
    """Everything the stages computed; the publish step logs and writes it."""

    prepared: Prepared
    sweep: Sweep
    final: Final
    description: SegmentDescription
    comparison: Comparison | None
    quality: dict[str, float]
    previous: Champion | None  # the champion when the run started


def current_champion(cfg: AppConfig) -> Champion | None:
    """The verified champion model with its segment identity and run tags, or None when there is none."""
    loaded = tracking.registered_model(cfg.mlflow.registered_model, cfg.mlflow.alias)
    if loaded is None:
        log.info("no previous champion: segment ids are the cluster numbers")
        return None
    stored = tracking.load_run_dict(loaded.run_id, tracking.IDENTITY_ARTIFACT)
    identity = IdentityMapping.from_dict(stored) if stored else initial_mapping(0)
    tree = tracking.load_run_dict(loaded.run_id, tracking.HIERARCHY_ARTIFACT)
    sub_identity = IdentityMapping.from_dict(tree["identity"]) if tree else None
    return Champion(loaded, identity, tracking.run_tags(loaded.run_id), sub_identity)


def prepare(snapshot: DataFrame, as_of: str, tcfg: TrainingConfig, persist: Persist) -> Prepared:
    """Resolve the feature columns, fit the preprocessing, persist its vectors and draw the sweep's sample
    (about ``selection.sample_size`` rows)."""
    feature_cols = drop_degenerate_columns(snapshot, resolve_feature_columns(snapshot, tcfg))
    preprocessing = fit_preprocessing(snapshot, feature_cols, tcfg)
    vectors = persist(preprocessing.transform(snapshot).select("customer_id", "features"))
    n_customers = vectors.count()
    if n_customers < tcfg.k_max:
        raise ContractError(
            f"feature snapshot {as_of} has {n_customers} customers, fewer than training.k_max={tcfg.k_max}"
        )
    fraction = min(1.0, tcfg.selection.sample_size / n_customers)
    sample = vectors if fraction >= 1.0 else persist(vectors.sample(False, fraction, tcfg.seed))
    n_sample = sample.count()
    log.info("sweeping %s, k=%d..%d on %d of %d customers", tcfg.algorithms, tcfg.k_min, tcfg.k_max, n_sample,
             n_customers)  # fmt: skip
    return Prepared(snapshot, as_of, feature_cols, preprocessing, vectors, sample, n_customers, n_sample)


def fit_outliers(tcfg: TrainingConfig, prepared: Prepared, persist: Persist) -> tuple[Prepared, DensityModel | None]:
    """DBSCAN on a sample of the customers for the outlier flag (:mod:`segmentation.density`), and
    ``prepared`` without the flagged customers when ``density.fit_without_outliers`` says so; ``prepared``
    and None when ``training.density.flag_outliers`` is off."""
    if not tcfg.density.flag_outliers:
        return prepared, None
    transformed = prepared.preprocessing.transform(prepared.snapshot)
    density = fit_on_sample(transformed, prepared.preprocessing, tcfg.density, prepared.n_customers, tcfg.seed)
    return without_outliers(prepared, density, persist) if tcfg.density.fit_without_outliers else prepared, density


def without_outliers(prepared: Prepared, density: DensityModel, persist: Persist) -> Prepared:
    """``prepared`` with the customers ``density`` flags left out of the vectors the champion is refitted
    on and of the sweep's sample (``training.density.fit_without_outliers``): they neither choose k nor
    pull a centre; :func:`finalise` still assigns them a segment."""
    flagged = assign_density(prepared.preprocessing.transform(prepared.snapshot), density)
    outliers = persist(flagged.where(F.col(OUTLIER_COL)).select("customer_id"))
    n_outliers = outliers.count()
    vectors = persist(prepared.vectors.join(F.broadcast(outliers), "customer_id", "left_anti"))
    small = prepared.sample is prepared.vectors
    sample = vectors if small else persist(prepared.sample.join(F.broadcast(outliers), "customer_id", "left_anti"))
    n_sample = sample.count()
    log.info("leaving %d flagged outliers out of the sweep and the champion's fit", n_outliers)
    return replace(prepared, vectors=vectors, sample=sample, n_sample=n_sample, n_left_out=n_outliers)


def finalise(
    spark: SparkSession,
    cfg: AppConfig,
    prepared: Prepared,
    sweep: Sweep,
    previous: Champion | None,
    persist: Persist,
    density: DensityModel | None = None,
) -> Final:
    """Choose the champion, refit it on every customer, give its clusters stable ids and assign them
    (with ``is_outlier`` when there is a ``density`` model)."""
    tcfg, sel = cfg.training, cfg.training.selection
    choice = choose(sweep.ordered_records(), tcfg.algorithms, sel.min_cluster_share, sel.min_stability,
                    sel.silhouette_tolerance, sel.k_criterion, sel.stable_ari)  # fmt: skip
    champion, k = choice.champion, choice.champion_k
    log.info("champion: %s with k=%d", champion, k)
    verdict = choice.rationale["stability"]
    log.log(logging.WARNING if verdict["stable"] is False else logging.INFO, verdict["message"])
    cluster_model, refit_rows = sweep.models[(champion, k)], prepared.n_sample
    if champion == DENSITY:  # fitted on a sample by design, and extended to everyone as it is
        refit_rows = cluster_model.getOrDefault(cluster_model.sampleRows)
    elif prepared.sample is not prepared.vectors:
        rows, refit_rows = refit_rows_of(prepared, tcfg, persist, champion)
        cluster_model = fit_best(champion, k, tcfg, tcfg.seed, rows)
    cluster_model.setPredictionCol(CLUSTER_COL)
    snapshot = prepared.snapshot
    clustered = cluster_model.transform(prepared.preprocessing.transform(snapshot))
    n_clusters = k + 1 if champion == DENSITY else k  # density: its noise is a segment of its own
    identity, old_segments = _stable_identity(cfg, previous, previous.identity if previous else None, snapshot,
                                              clustered, n_clusters)  # fmt: skip
    model = assemble_model(prepared.preprocessing, cluster_model, identity)
    scored = model.transform(snapshot)
    scored = scored if density is None else assign_density(scored, density)
    assigned = persist(scored.select(*[c for c in _ASSIGNED_COLUMNS if c in scored.columns]))
    metrics = evaluate_candidate(champion, cluster_model, assigned, CLUSTER_COL, refit_rows)
    if density is not None:
        metrics |= _outlier_metrics(assigned, density)
    if tcfg.ground_truth.enabled:
        metrics["ground_truth_ari"] = _ground_truth_ari(spark, tcfg, assigned)
        if density is not None:
            metrics |= _ground_truth_outliers(spark, tcfg, assigned)
    return Final(choice, cluster_model, model, assigned, identity, old_segments, metrics, refit_rows, density)


def _outlier_metrics(assigned: DataFrame, density: DensityModel) -> dict[str, float]:
    row = assigned.agg(F.count(F.lit(1)).alias("n"), F.sum(F.col(OUTLIER_COL).cast("int")).alias("outliers")).first()
    n, outliers = int(row["n"]), int(row["outliers"] or 0)
    log.info("outlier flag: %d of %d customers (%.2f%%)", outliers, n, 100 * outliers / max(n, 1))
    return {"outlier_count": float(outliers), "outlier_share": outliers / max(n, 1), "density_eps": density.eps,
            "density_min_samples": float(density.min_samples), "density_clusters": float(density.n_clusters),
            "density_sample_noise_share": density.sample_noise_share}  # fmt: skip


def _ground_truth_outliers(spark: SparkSession, tcfg: TrainingConfig, assigned: DataFrame) -> dict[str, float]:
    """With planted outliers (ground truth label ``outlier``): the share of them flagged, and the share
    of the other customers flagged."""
    label = tcfg.ground_truth.label_column
    truth = read_ground_truth(spark, tcfg)
    planted = (F.col(label) == F.lit(OUTLIER_LABEL)).cast("int")
    flagged = F.col(OUTLIER_COL).cast("int")
    row = assigned.select("customer_id", OUTLIER_COL).join(truth, "customer_id").agg(
        F.sum(planted).alias("planted"), F.sum(planted * flagged).alias("found"),
        F.sum((1 - planted) * flagged).alias("false"), F.count(F.lit(1)).alias("n"),
    ).first()  # fmt: skip
    planted_n = int(row["planted"] or 0)
    if planted_n == 0:
        return {}
    recall, false_share = int(row["found"]) / planted_n, int(row["false"]) / max(int(row["n"]) - planted_n, 1)
    log.info("outlier flag against the planted outliers: %.1f%% of %d found, %.2f%% of the others flagged",
             100 * recall, planted_n, 100 * false_share)  # fmt: skip
    return {"ground_truth_outlier_recall": recall, "ground_truth_outlier_false_share": false_share}


def refit_rows_of(prepared: Prepared, tcfg: TrainingConfig, persist: Persist, algorithm: str) -> tuple[DataFrame, int]:
    """The vectors ``algorithm``'s champion is refitted on, and how many: every customer up to
    ``refit.max_customers``, above it a uniform sample of about that many where
    ``refit.sample_algorithms`` names the algorithm."""
    fraction = tcfg.refit.sample_fraction(algorithm, prepared.n_customers)
    if fraction is None:
        return prepared.vectors, prepared.n_customers - prepared.n_left_out
    rows = persist(prepared.vectors.sample(False, fraction, tcfg.seed))
    n_rows = rows.count()
    log.info("refitting the champion (%s) on a sample of %d of %d customers (refit.max_customers=%d)",
             algorithm, n_rows, prepared.n_customers, tcfg.refit.max_customers)  # fmt: skip
    return rows, n_rows


def assemble_model(preprocessing: PipelineModel, cluster_model: Any, identity: IdentityMapping) -> PipelineModel:
    """The model that is logged and registered: the preprocessing, the clustering model (predicting
    ``cluster``) and the relabelling to stable segment ids (``prediction``), built-in stages only."""
    return PipelineModel(stages=[*preprocessing.stages, cluster_model, relabel_stage(identity.cluster_to_segment)])


def read_ground_truth(spark: SparkSession, tcfg: TrainingConfig) -> DataFrame:
    """``training.ground_truth``'s customer ids and planted labels. Read once before the sweep as well,
    so that a missing table or column stops the run at once, naming the key."""
    columns = ["customer_id", tcfg.ground_truth.label_column]
    return read_table(spark, tcfg.ground_truth, columns=columns, key="training.ground_truth")


def _ground_truth_ari(spark: SparkSession, tcfg: TrainingConfig, assigned: DataFrame, column: str = "prediction"
                      ) -> float:  # fmt: skip
    """Adjusted Rand index between the segments (``column``) and ``training.ground_truth``'s planted labels."""
    label = tcfg.ground_truth.label_column
    truth = read_ground_truth(spark, tcfg)
    joined = assigned.select("customer_id", F.col(column).cast("int").alias(SEGMENT_COL)).join(
        truth.select("customer_id", F.col(label).alias("planted_segment")), "customer_id"
    )
    ari = adjusted_rand_index(joined, SEGMENT_COL, "planted_segment")
    log.info("adjusted Rand index of %s against the planted segments: %.3f", column, ari)
    return ari


def _stable_identity(
    cfg: AppConfig,
    previous: Champion | None,
    identity: IdentityMapping | None,
    snapshot: DataFrame,
    clustered: DataFrame,
    k: int,
    old_col: str = "prediction",
    new_col: str = CLUSTER_COL,
) -> tuple[IdentityMapping, DataFrame | None]:
    """Match the new clusters (``new_col``) to the current champion's segments (its ``old_col``,
    numbered by ``identity``; see ``segmentation.identity``).

    Also returns the champion's segments for this snapshot (``customer_id``, ``segment``),
    or ``None`` when there is no champion or it cannot score these features.
    """
    if previous is None or identity is None:
        return initial_mapping(k), None
    old_version = previous.loaded.version
    try:
        old = previous.loaded.model.transform(snapshot).select(
            "customer_id", F.col(old_col).cast("int").alias("old_segment")
        )
    except Exception as exc:  # noqa: BLE001 - a champion on other features cannot be compared
        log.warning("champion version %s cannot score this snapshot (%s); all segments get new ids", old_version, exc)
        return match_segments(identity, [], [], np.zeros((0, 0)), n_clusters=k), None
    joined = clustered.select("customer_id", "features", new_col).join(old, "customer_id", how="inner")
    old_ids, new_clusters, counts = contingency(joined, "old_segment", new_col)
    icfg = cfg.training.identity
    distances = centroid_distances(joined, "features", "old_segment", new_col, old_ids, new_clusters)
    log.info("matching %d new clusters to %d segments of champion version %s", k, len(old_ids), old_version)
    mapping = match_segments(identity, old_ids, new_clusters, counts, n_clusters=k, method=icfg.method,
                             distances=distances, min_overlap=icfg.min_overlap,
                             max_centroid_distance=icfg.max_centroid_distance)  # fmt: skip
    return mapping, old.withColumnRenamed("old_segment", SEGMENT_COL)


def split(spark: SparkSession, cfg: AppConfig, prepared: Prepared, final: Final, previous: Champion | None,
          persist: Persist) -> Final:  # fmt: skip
    """With ``training.hierarchy.enabled``: split each broad segment into sub-segments
    (:mod:`segmentation.hierarchy`), give them stable ids, add the sub-models to the champion's
    pipeline and ``sub_cluster``/``sub_segment`` to its assignments; otherwise ``final`` as it is."""
    tcfg = cfg.training
    if not tcfg.hierarchy.enabled:
        return final
    labels = final.assigned.select("customer_id", CLUSTER_COL)
    sizes = {int(r[CLUSTER_COL]): int(r["count"]) for r in labels.groupBy(CLUSTER_COL).count().collect()}
    sample = prepared.sample.join(labels, "customer_id")
    vectors = prepared.vectors.join(labels, "customer_id")
    n_broad = len(final.identity.cluster_to_segment)
    splits = fit_splits(tcfg, final.choice.champion, sample, vectors, n_broad, sizes, persist)
    n_sub = sum(s.k for s in splits)
    stages = sub_stages(splits)
    numbered = PipelineModel(stages=stages).transform(final.assigned)
    numbered = persist(numbered.select(*[c for c in _ASSIGNED_COLUMNS if c in numbered.columns]))
    previous_sub = previous.sub_identity if previous else None
    sub_identity, _ = _stable_identity(cfg, previous, previous_sub, prepared.snapshot, numbered, n_sub,
                                       old_col=SUB_SEGMENT_COL, new_col=SUB_CLUSTER_COL)  # fmt: skip
    relabel = relabel_stage(sub_identity.cluster_to_segment, SUB_CLUSTER_COL, SUB_SEGMENT_COL)
    assigned = relabel.transform(numbered)  # the sub-models ran once, for the matching and these
    model = PipelineModel(stages=[*final.model.stages, *stages, relabel])
    metrics = {"hierarchy_sub_segments": float(n_sub),
               "hierarchy_split_segments": float(sum(s.model is not None for s in splits))}  # fmt: skip
    if tcfg.ground_truth.enabled:
        metrics["ground_truth_sub_ari"] = _ground_truth_ari(spark, tcfg, assigned, SUB_SEGMENT_COL)
    log.info("two levels: %d broad segments, %d sub-segments", len(splits), n_sub)
    return replace(final, model=model, assigned=assigned, metrics=final.metrics | metrics, splits=splits,
                   sub_identity=sub_identity)  # fmt: skip


def describe(spark: SparkSession, cfg: AppConfig, prepared: Prepared, final: Final) -> SegmentDescription:
    """Profile, name and explain the segments in raw units (with the CLV job's values when it scored
    this snapshot); kept segments keep their names, ``profiles.names`` wins over both. With two levels,
    also the named tree of sub-segments."""
    extra = [c for c in (OUTLIER_COL, SUB_SEGMENT_COL) if c in final.assigned.columns]
    raw = prepared.snapshot.join(
        final.assigned.select("customer_id", F.col("prediction").cast("int").alias(SEGMENT_COL), *extra),
        "customer_id",
    )
    pcfg = cfg.profiles
    description = describe_segments(
        with_clv(spark, cfg, raw, prepared.as_of),
        prepared.feature_cols,
        names={**final.identity.names, **pcfg.names},
        rule_depth=pcfg.rule_depth,
        horizon_days=pcfg.value_horizon_days,
        top_n=pcfg.top_recommendations,
        seed=cfg.training.seed,
    )
    if final.sub_identity is None:
        return description
    tree = describe_tree(raw, prepared.feature_cols, description.names, final.sub_identity.names)
    return replace(description, tree=tree)


def compare(spark: SparkSession, cfg: AppConfig, prepared: Prepared, final: Final, previous: Champion | None
            ) -> Comparison | None:  # fmt: skip
    """What a promotion would change, or None without a champion that can score this snapshot.

    * migration: the champion's segments vs the new (stable) segments of this snapshot's
      customers, as a matrix and ``migration_stability``;
    * centre movement: the distance (scaled feature space of the new model) between each
      kept segment's old and new centre, as ``centre_shift_mean``/``centre_shift_max``;
    * drift: PSI of every feature between the champion's training snapshot and this one,
      and the segment-share shift between the champion's training assignments and these.
    """
    if previous is None or final.old_segments is None:
        return None
    new_segments = final.assigned.select("customer_id", F.col("prediction").cast("int").alias(SEGMENT_COL))
    migration, stability = migration_matrix(final.old_segments, new_segments)
    version = previous.loaded.version
    metrics = {"migration_stability": stability, "previous_champion_version": float(version)}
    shifts = [d["centroid_distance"] for d in final.identity.decisions if d["decision"] == "kept"]
    shifts = [x for x in shifts if x is not None]
    if shifts:
        metrics |= {"centre_shift_mean": float(np.mean(shifts)), "centre_shift_max": float(np.max(shifts))}
    reference_features, reference_segments = training_reference(spark, cfg, version, previous.tags)
    drift = None
    if reference_features is not None and reference_segments is not None:
        common = [c for c in previous.loaded.input_columns if c in prepared.feature_cols] or prepared.feature_cols
        report = drift_report(reference_features, prepared.snapshot, reference_segments, new_segments, common,
                              cfg.scoring.psi_threshold, cfg.scoring.share_shift_threshold)  # fmt: skip
        metrics |= report.metrics()
        drift = report.summary()
    log.info("retraining vs champion version %s: %.1f%% of customers keep their segment", version, 100 * stability)
    return Comparison(version, migration, metrics, drift)
