from __future__ import annotations

import pytest
from pyspark.ml.linalg import Vectors

from segmentation.config import ALGORITHMS, TrainingConfig
from segmentation.models import RESTART_STRIDE, build_estimator, fit_best, objective, param_record


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
