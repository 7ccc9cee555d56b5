"""The training stages on small inline frames (the whole run is in test_training_pipeline.py)."""

from __future__ import annotations

import numpy as np
from pyspark.ml.functions import array_to_vector
from pyspark.sql import functions as F

from segmentation import training_stages
from segmentation.config import TrainingConfig
from segmentation.density import assign_density
from segmentation.snapshots import persisting
from segmentation.training_stages import Laps, Prepared, fit_outliers, prepare, refit_rows_of

N = 5000


def _prepared(spark, sample_size: int) -> Prepared:
    vectors = spark.range(N).select(
        F.col("id").cast("string").alias("customer_id"),
        array_to_vector(F.array(F.col("id").cast("double"), F.lit(1.0))).alias("features"),
    )
    sample = vectors.sample(False, sample_size / N, 7)
    return Prepared(vectors, "2024-01-01", ["x"], None, vectors, sample, N, sample.count())


def test_the_champion_is_refitted_on_everyone_up_to_the_limit(spark):
    prepared = _prepared(spark, 500)
    with persisting() as persist:
        for limit in (None, N, 2 * N):
            tcfg = TrainingConfig(seed=7, refit={"max_customers": limit})
            rows, n_rows = refit_rows_of(prepared, tcfg, persist, "bisecting_kmeans")
            assert rows is prepared.vectors and n_rows == N


def test_above_the_limit_it_is_refitted_on_a_seeded_sample_that_holds_the_sweeps(spark):
    prepared = _prepared(spark, 500)
    tcfg = TrainingConfig(seed=7, refit={"max_customers": 2000})
    with persisting() as persist:
        rows, n_rows = refit_rows_of(prepared, tcfg, persist, "bisecting_kmeans")
        ids = {r.customer_id for r in rows.select("customer_id").collect()}
        assert n_rows == len(ids) and 1800 < n_rows < 2200  # about the limit (a Bernoulli sample)
        assert {r.customer_id for r in prepared.sample.select("customer_id").collect()} <= ids
        again, _ = refit_rows_of(prepared, tcfg, persist, "bisecting_kmeans")
        assert {r.customer_id for r in again.select("customer_id").collect()} == ids  # the same rows each run
        assert rows.storageLevel.useMemory  # fitted over many iterations: persisted once


def test_only_the_algorithms_named_are_refitted_on_a_sample(spark):
    prepared = _prepared(spark, 500)
    tcfg = TrainingConfig(seed=7, refit={"max_customers": 2000, "sample_algorithms": ["bisecting_kmeans"]})
    with persisting() as persist:
        for algorithm in ("kmeans", "gaussian_mixture"):  # a sample changes their segments (docs/performance.md)
            rows, n_rows = refit_rows_of(prepared, tcfg, persist, algorithm)
            assert rows is prepared.vectors and n_rows == N
        _, n_rows = refit_rows_of(prepared, tcfg, persist, "bisecting_kmeans")
        assert n_rows < N


def test_flagged_outliers_are_left_out_of_the_fits_and_only_they(spark):
    rng = np.random.default_rng(5)
    rows = [(f"c{i}", float(a), float(b)) for i, (a, b) in enumerate(rng.normal(0, 1, size=(300, 2)))]
    rows += [("far1", 60.0, 60.0), ("far2", -50.0, 70.0)]
    snapshot = spark.createDataFrame(rows, "customer_id string, a double, b double")
    density_cfg = {"flag_outliers": True, "fit_without_outliers": True}
    tcfg = TrainingConfig(features=["a", "b"], log_features=[], k_max=3, density=density_cfg)
    with persisting() as persist:
        prepared = prepare(snapshot, "2024-01-01", tcfg, persist)
        assert prepared.sample is prepared.vectors  # 302 customers: the sweep fits on all of them
        kept, density = fit_outliers(tcfg, prepared, persist)
        ids = {r.customer_id for r in kept.vectors.select("customer_id").collect()}
        flagged = assign_density(prepared.preprocessing.transform(snapshot), density).where("is_outlier")
        outliers = {r.customer_id for r in flagged.select("customer_id").collect()}
        assert {"far1", "far2"} <= outliers and len(outliers) < 10
        assert ids == {r[0] for r in rows} - outliers and kept.sample is kept.vectors
        assert kept.n_left_out == len(outliers) and kept.n_sample == len(ids) and kept.n_customers == 302
        _, n_rows = refit_rows_of(kept, tcfg, persist, "kmeans")
        assert n_rows == len(ids)
    off = tcfg.model_copy(update={"density": tcfg.density.model_copy(update={"fit_without_outliers": False})})
    with persisting() as persist:
        same, density = fit_outliers(off, prepared, persist)
        assert same is prepared and density is not None


def test_laps_time_each_stage_and_name_the_jobs_of_the_one_that_begins(monkeypatch):
    clock = iter([1.0, 3.0, 6.0, 10.0])  # one reading per begin and end
    monkeypatch.setattr(training_stages.time, "perf_counter", lambda: next(clock))
    named = []
    laps = Laps(named.append)
    laps.begin("prepare")
    laps.begin("sweep")
    laps.begin("prepare")  # a stage begun twice adds up
    laps.end()
    assert named == ["training: prepare", "training: sweep", "training: prepare", "training"]
    assert laps.seconds == {"prepare": 2.0 + 4.0, "sweep": 3.0}  # nothing counted before the first begin
