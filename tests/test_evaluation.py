from __future__ import annotations

import math

import numpy as np
import pytest
from pyspark.ml.clustering import GaussianMixture, KMeans
from pyspark.ml.linalg import Vectors
from sklearn.metrics import (
    adjusted_rand_score,
    calinski_harabasz_score,
    davies_bouldin_score,
    silhouette_score,
)

from segmentation.config import TrainingConfig
from segmentation.evaluation import METRICS, adjusted_rand_index, evaluate_clustering, gmm_parameter_count
from segmentation.models import build_estimator


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(3)
    centers = np.array([[0, 0, 0, 0, 0], [6, 6, 0, 0, 0], [0, 6, 6, 0, 6], [6, 0, 0, 6, 6]], dtype=float)
    labels = rng.integers(0, 4, 3000)
    x = centers[labels] + rng.normal(0, 1.0, (3000, 5))
    return x, labels


@pytest.fixture(scope="module")
def fitted(spark, blobs):
    x, labels = blobs
    rows = [(i, Vectors.dense(row), int(lab)) for i, (row, lab) in enumerate(zip(x, labels, strict=True))]
    df = spark.createDataFrame(rows, ["id", "features", "truth"]).cache()
    model = KMeans(k=4, seed=1, maxIter=50, tol=1e-6).fit(df)
    predictions = model.transform(df).cache()
    pdf = predictions.select("id", "prediction").toPandas().sort_values("id")
    return model, predictions, pdf["prediction"].to_numpy()


def test_metrics_match_scikit_learn(fitted, blobs):
    model, predictions, assigned = fitted
    x, _ = blobs
    metrics = evaluate_clustering(model, predictions, "features", "prediction", "kmeans")
    assert set(metrics) == set(METRICS)
    # Spark's silhouette uses squared Euclidean distances
    assert metrics["silhouette"] == pytest.approx(silhouette_score(x, assigned, metric="sqeuclidean"), abs=0.01)
    assert metrics["davies_bouldin"] == pytest.approx(davies_bouldin_score(x, assigned), rel=1e-6)
    assert metrics["calinski_harabasz"] == pytest.approx(calinski_harabasz_score(x, assigned), rel=1e-6)
    assert metrics["wssse"] == pytest.approx(model.summary.trainingCost, rel=1e-6)
    sizes = np.bincount(assigned)
    assert metrics["min_cluster_share"] == pytest.approx(sizes.min() / sizes.sum())
    assert metrics["n_clusters_nonempty"] == 4
    assert math.isnan(metrics["bic"]) and math.isnan(metrics["log_likelihood"])


def test_adjusted_rand_index_matches_scikit_learn(spark):
    rng = np.random.default_rng(5)
    a = rng.integers(0, 4, 500)
    b = np.where(rng.random(500) < 0.7, a, rng.integers(0, 5, 500))
    df = spark.createDataFrame([(int(x), int(y)) for x, y in zip(a, b, strict=True)], "a INT, b INT")
    assert adjusted_rand_index(df, "a", "b") == pytest.approx(adjusted_rand_score(a, b), rel=1e-9)
    assert adjusted_rand_index(df, "a", "a") == pytest.approx(1.0)


@pytest.mark.parametrize("algorithm", ["kmeans", "bisecting_kmeans", "gaussian_mixture"])
def test_the_project_estimators_recover_planted_blobs(spark, fitted, blobs, algorithm):
    """build_estimator with the default training settings (seed, iterations, tolerance) finds the
    four planted blobs with every algorithm the sweep offers."""
    _, predictions, _ = fitted
    _, truth = blobs
    model = build_estimator(algorithm, 4, TrainingConfig(), seed=7).fit(predictions.select("id", "features"))
    found = model.transform(predictions.select("id", "features")).select("id", "prediction").toPandas()
    assert adjusted_rand_score(truth[found["id"].to_numpy()], found["prediction"].to_numpy()) > 0.95


def test_gmm_information_criteria(spark, fitted):
    _, predictions, _ = fitted
    data = predictions.select("features")
    model = GaussianMixture(k=4, seed=1, maxIter=20).fit(data)
    metrics = evaluate_clustering(model, model.transform(data), "features", "prediction", "gaussian_mixture")
    p = gmm_parameter_count(4, 5)
    assert p == 4 * 5 + 4 * 15 + 3 == 83  # means + full covariances + free weights
    ll = model.summary.logLikelihood
    assert metrics["log_likelihood"] == pytest.approx(ll)
    assert metrics["aic"] == pytest.approx(2 * p - 2 * ll)
    assert metrics["bic"] == pytest.approx(p * math.log(3000) - 2 * ll)


def test_a_mixture_fitted_on_a_sample_reports_the_log_likelihood_of_every_row(spark, fitted):
    _, predictions, _ = fitted
    data = predictions.select("features")
    half = data.sample(False, 0.5, 3).cache()
    fitted_rows = half.count()
    model = GaussianMixture(k=4, seed=1, maxIter=20).fit(half)
    metrics = evaluate_clustering(model, model.transform(data), "features", "prediction", "gaussian_mixture",
                                  fitted_rows)  # fmt: skip
    ll = model.summary.logLikelihood * 3000 / fitted_rows  # the sample's mean per row, times every row
    assert metrics["log_likelihood"] == pytest.approx(ll) and fitted_rows < 1600
    assert metrics["bic"] == pytest.approx(gmm_parameter_count(4, 5) * math.log(3000) - 2 * ll)
    everyone = GaussianMixture(k=4, seed=1, maxIter=20).fit(data).summary.logLikelihood
    assert ll == pytest.approx(everyone, rel=0.05)  # the blobs are separated: half the rows estimate it well
    half.unpersist()


def test_single_cluster_gives_nan_not_an_error(spark):
    df = spark.createDataFrame(
        [(Vectors.dense([1.0, 2.0]), 0), (Vectors.dense([2.0, 2.0]), 0)], ["features", "prediction"]
    )
    model = KMeans(k=2, seed=1).fit(df.select("features"))
    metrics = evaluate_clustering(model, df, "features", "prediction", "kmeans")
    assert math.isnan(metrics["silhouette"]) and metrics["min_cluster_share"] == 0.0
    assert metrics["wssse"] == pytest.approx(0.5)
