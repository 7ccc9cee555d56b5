"""The training job: read a feature snapshot, then prepare, fit the outlier flag (and leave the
outliers out of the fits), sweep, finalise, split into sub-segments (two levels), describe,
compare, publish.

The stages are in :mod:`segmentation.training_stages` (and :mod:`segmentation.sweep`);
none of them logs or writes. :func:`segmentation.training_publish.publish` does every MLflow
call and Delta write of the run, at the end. The MLflow run is opened around the stages so
that a run which fails half-way is still recorded, FAILED with its error; every frame a
stage persisted is released whether the run succeeds or fails.

Performance shape: the preprocessing pipeline is fitted once, its output vectors are
persisted once and reused by every (algorithm, k) fit; k selection runs on a sample of
about ``training.selection.sample_size`` customers and only the champion is refitted on
all of them.
"""

from __future__ import annotations

from pyspark.sql import SparkSession

from segmentation import tracking
from segmentation.config import AppConfig
from segmentation.hierarchy import broad_level
from segmentation.io import delta_version
from segmentation.snapshots import persisting, read_quality, read_snapshot
from segmentation.spark import collection_paused, job_descriptions
from segmentation.sweep import run_sweep
from segmentation.training_publish import TrainingResult, publish
from segmentation.training_stages import (
    Laps,
    Trained,
    compare,
    current_champion,
    describe,
    finalise,
    fit_outliers,
    prepare,
    read_ground_truth,
    split,
)

__all__ = ["TrainingResult", "run_training"]


def run_training(spark: SparkSession, cfg: AppConfig, quality: dict[str, float] | None = None) -> TrainingResult:
    """Train, choose and register a segmentation model on ``training.as_of`` (default: the newest snapshot)."""
    tracking.configure(cfg.mlflow)
    cfg = cfg.model_copy(update={"training": broad_level(cfg.training)})  # two levels: the broad k range
    snapshot, as_of = read_snapshot(spark, cfg.features.output, cfg.training.as_of)
    version = delta_version(spark, cfg.features.output)
    tags = {"job": "train_segments", "feature_snapshot": as_of, "input_table": cfg.features.output.location,
            "input_delta_version": "n/a" if version is None else version, **tracking.environment_tags()}  # fmt: skip
    with (
        tracking.tracked_run(f"train-{as_of}", tags=tags) as run,
        persisting() as persist,
        job_descriptions(spark) as name_jobs,
        collection_paused(spark),  # Connect: no model finalizer inside another thread's request
    ):
        laps = Laps(name_jobs)  # names each stage's Spark jobs ("training: sweep") and times it
        laps.begin("prepare")
        quality = quality if quality is not None else read_quality(spark, cfg, as_of)
        previous = current_champion(cfg)
        if cfg.training.ground_truth.enabled:
            read_ground_truth(spark, cfg.training)  # a missing table stops the run here, not after the sweep
        prepared = prepare(snapshot, as_of, cfg.training, persist)
        laps.begin("outliers")
        prepared, density = fit_outliers(cfg.training, prepared, persist)
        laps.begin("sweep")
        sweep = run_sweep(cfg.training, prepared.sample)
        laps.begin("refit")
        final = finalise(spark, cfg, prepared, sweep, previous, persist, density)
        laps.begin("split")
        final = split(spark, cfg, prepared, final, previous, persist)
        laps.begin("profile")
        description = describe(spark, cfg, prepared, final)
        comparison = compare(spark, cfg, prepared, final, previous)
        trained = Trained(prepared, sweep, final, description, comparison, quality, previous)
        return publish(spark, cfg, trained, run.info.run_id, tags, laps)
