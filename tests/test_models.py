from __future__ import annotations

import time

import pytest
from pyspark.ml.linalg import Vectors, VectorUDT
from pyspark.sql import functions as F

from segmentation.config import ALGORITHMS, TrainingConfig
from segmentation.errors import FitFailedError
from segmentation.models import (
    RESTART_STRIDE,
    RETRY_OFFSET,
    FitTimeout,
    build_estimator,
    fit_best,
    fit_within,
    objective,
    param_record,
)


def test_every_algorithm_gets_seed_k_and_tunables(spark):
    cfg = TrainingConfig(kmeans={"max_iter": 7, "init_mode": "random"}, gaussian_mixture={"tol": 0.5})
    km = build_estimator("kmeans", 4, cfg, seed=9)
    assert (km.getK(), km.getSeed(), km.getMaxIter(), km.getInitMode()) == (4, 9, 7, "random")
    assert km.getSolver() == "block"  # the default: same centres as "row", several times faster
    row = TrainingConfig(kmeans={"solver": "row"})
    assert build_estimator("kmeans", 4, row, seed=9).getSolver() == "row"
    bk = build_estimator("bisecting_kmeans", 3, cfg, seed=9, prediction_col="cluster")
    assert (bk.getK(), bk.getSeed(), bk.getPredictionCol()) == (3, 9, "cluster")
    gm = build_estimator("gaussian_mixture", 5, cfg, seed=9, probability_col="p")
    assert (gm.getK(), gm.getSeed(), gm.getTol(), gm.getProbabilityCol()) == (5, 9, 0.5, "p")
    with pytest.raises(ValueError, match="unknown algorithm 'dbscan'"):
        build_estimator("dbscan", 3, cfg, seed=1)


def test_param_names_are_identical_across_algorithms():
    records = [param_record(a, 3, TrainingConfig(), 42) for a in ALGORITHMS]
    assert len({tuple(sorted(r)) for r in records}) == 1
    assert records[0]["init_mode"] == "k-means||" and records[2]["init_mode"] == "n/a"
    assert records[0]["solver"] == "block" and records[1]["solver"] == "n/a"
    assert all(isinstance(v, str) for r in records for v in r.values())


@pytest.fixture(scope="module")
def blobs(spark):
    """Eight tight groups on a line; random starts with two iterations end in different local optima."""
    rows = [(Vectors.dense([10.0 * g + 0.1 * (i % 5), 0.1 * (i % 3)]),) for g in range(8) for i in range(30)]
    return spark.createDataFrame(rows, ["features"]).cache()


@pytest.mark.parametrize("algorithm", ["kmeans", "gaussian_mixture"])
def test_the_best_of_several_starts_is_the_start_with_the_best_objective(blobs, algorithm):
    cfg = TrainingConfig(restarts=5, kmeans={"init_mode": "random", "max_iter": 2}, gaussian_mixture={"max_iter": 3})
    single = TrainingConfig(kmeans=cfg.kmeans, gaussian_mixture=cfg.gaussian_mixture)
    starts = [objective(algorithm, build_estimator(algorithm, 6, single, 3 + i * RESTART_STRIDE).fit(blobs))
              for i in range(5)]  # fmt: skip
    assert len(set(starts)) > 1  # the starts do end in different optima, so the choice matters
    best = fit_best(algorithm, 6, cfg, 3, blobs)
    assert objective(algorithm, best) == min(starts)
    assert objective(algorithm, fit_best(algorithm, 6, single, 3, blobs)) == starts[0]  # one start: the plain fit
    assert param_record(algorithm, 6, cfg, 3)["restarts"] == "5"


def test_an_algorithms_own_restarts_override_the_training_default(blobs):
    cfg = TrainingConfig(restarts=1, kmeans={"init_mode": "random", "max_iter": 2, "restarts": 5})
    starts = [
        objective("kmeans", build_estimator("kmeans", 6, cfg, 3 + i * RESTART_STRIDE).fit(blobs)) for i in range(5)
    ]
    assert objective("kmeans", fit_best("kmeans", 6, cfg, 3, blobs)) == min(starts) < max(starts)
    assert cfg.restarts_for("kmeans") == 5 and cfg.restarts_for("gaussian_mixture") == 1
    assert param_record("kmeans", 6, cfg, 3)["restarts"] == "5"
    assert param_record("bisecting_kmeans", 6, cfg, 3)["restarts"] == "1"


@pytest.fixture(scope="module")
def slow_vectors(spark):
    """Vectors that take about a second per 20 rows to compute, so any fit on them is slow."""

    @F.udf(VectorUDT())
    def slow(i):
        time.sleep(0.05)
        return Vectors.dense([float(i % 7), float(i % 3)])

    return spark.range(0, 400, 1, 2).select(slow("id").alias("features"))


def test_a_fit_past_its_time_limit_is_interrupted_and_the_session_goes_on(spark, slow_vectors):
    started = time.perf_counter()
    with pytest.raises(FitTimeout, match="KMeans ran past 2 s"):
        fit_within(build_estimator("kmeans", 3, TrainingConfig(), seed=1), slow_vectors, 2)
    assert time.perf_counter() - started < 8  # the fit alone needs 10 s of UDF time per pass
    tracker = spark.sparkContext.statusTracker()
    deadline = time.time() + 30
    while tracker.getActiveJobsIds() and time.time() < deadline:
        time.sleep(0.2)
    assert tracker.getActiveJobsIds() == []  # its jobs were cancelled, not left running
    assert spark.range(5).count() == 5


def test_a_fit_that_fails_from_both_starts_names_the_algorithm_k_and_the_key(slow_vectors):
    cfg = TrainingConfig(fit_timeout_seconds=1)
    with pytest.raises(FitFailedError) as failed:
        fit_best("bisecting_kmeans", 4, cfg, 3, slow_vectors)
    message = str(failed.value)
    assert message.startswith("bisecting_kmeans with k=4 failed from two starts")
    assert "seed 3 ran past" in message and f"seed {3 + RETRY_OFFSET} ran past" in message
    assert "training.fit_timeout_seconds=1" in message


def test_a_fit_within_its_limit_is_the_plain_fit(blobs):
    cfg = TrainingConfig(kmeans={"init_mode": "random", "max_iter": 2})
    plain = build_estimator("kmeans", 6, cfg, seed=3).fit(blobs)
    bounded = fit_within(build_estimator("kmeans", 6, cfg, seed=3), blobs, 60)
    assert objective("kmeans", bounded) == objective("kmeans", plain)
