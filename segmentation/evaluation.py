"""Clustering metrics computed in Spark; only per-cluster summaries (k rows) reach the driver.

Every algorithm reports the same metric names (NaN where one does not apply),
so MLflow's compare view lines runs up:

==================  ======================================================================
metric              definition
==================  ======================================================================
silhouette          mean silhouette with squared Euclidean distance (Spark's
                    ``ClusteringEvaluator``); higher is better, in [-1, 1]
wssse               within-cluster sum of squared distances to the cluster mean (elbow)
davies_bouldin      mean over clusters of the worst (s_i + s_j) / d(c_i, c_j); s = mean
                    distance to the centroid; lower is better
calinski_harabasz   between / within dispersion ratio, (B / (k - 1)) / (W / (n - k)); higher
                    is better
min_cluster_share   share of rows in the smallest non-empty cluster (0 if one is empty)
n_clusters_nonempty number of clusters that received at least one row
log_likelihood      GaussianMixture only: log-likelihood of the fitted data
aic, bic            GaussianMixture only: 2p - 2LL and p ln(n) - 2LL with
                    p = k d + k d (d + 1) / 2 + (k - 1) free parameters (full covariances)
noise_share         density only: share of rows in no cluster (the other metrics are of the rest)
==================  ======================================================================
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.ml.functions import vector_to_array
from pyspark.ml.stat import Summarizer
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

__all__ = ["METRICS", "adjusted_rand_index", "cluster_summary", "evaluate_clustering", "gmm_parameter_count"]

METRICS = (
    "silhouette",
    "wssse",
    "davies_bouldin",
    "calinski_harabasz",
    "min_cluster_share",
    "n_clusters_nonempty",
    "log_likelihood",
    "aic",
    "bic",
    "noise_share",
)
NAN = float("nan")


def cluster_summary(
    df: DataFrame, features_col: str, prediction_col: str
) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
    """Per non-empty cluster: ids, sizes, mean vectors (k x d) and sums of squared norms."""
    rows = (
        df.groupBy(F.col(prediction_col).cast("int").alias("c"))
        .agg(
            F.count(F.lit(1)).alias("n"),
            Summarizer.mean(F.col(features_col)).alias("mean"),
            F.sum(F.aggregate(vector_to_array(features_col), F.lit(0.0), lambda acc, x: acc + x * x)).alias("sq"),
        )
        .orderBy("c")
        .collect()
    )
    ids = [r.c for r in rows]
    sizes = np.array([r.n for r in rows], dtype=float)
    means = np.array([r["mean"].toArray() for r in rows])
    sumsq = np.array([r.sq for r in rows], dtype=float)
    return ids, sizes, means, sumsq


def _mean_distance_to_centroid(
    df: DataFrame, features_col: str, prediction_col: str, ids: list[int], means: np.ndarray
) -> np.ndarray:
    """s_i: mean Euclidean distance of each cluster's rows to its centroid (one pass)."""
    position = {cluster: i for i, cluster in enumerate(ids)}
    centroids = F.array(*[F.array(*[F.lit(float(v)) for v in row]) for row in means])
    index = F.create_map(*[x for c, i in position.items() for x in (F.lit(c), F.lit(i + 1))])
    centroid = F.element_at(centroids, F.element_at(index, F.col(prediction_col).cast("int")))
    squared = F.aggregate(
        F.zip_with(vector_to_array(features_col), centroid, lambda a, b: (a - b) * (a - b)),
        F.lit(0.0),
        lambda s, x: s + x,
    )
    rows = df.groupBy(F.col(prediction_col).cast("int").alias("c")).agg(F.avg(F.sqrt(squared)).alias("s")).collect()
    spread = np.zeros(len(ids))
    for r in rows:
        spread[position[r.c]] = r.s
    return spread


def gmm_parameter_count(k: int, d: int) -> int:
    """Free parameters of a k-component, d-dimensional Gaussian mixture with full covariances."""
    return k * d + k * d * (d + 1) // 2 + (k - 1)


def evaluate_clustering(
    model: object,
    predictions: DataFrame,
    features_col: str,
    prediction_col: str,
    algorithm: str,
    fitted_rows: int | None = None,
) -> dict[str, float]:
    """All metrics of :data:`METRICS` for a fitted model and its predictions.

    The predictions are of the rows the model was fitted on, or of more rows when ``fitted_rows``
    says how many it was fitted on (a champion refitted on a sample): a mixture's log-likelihood,
    which MLlib reports for the fitted rows only, is then scaled to all rows (the sample's mean
    log-likelihood per row times their count; an in-sample mean, so a little optimistic for the
    rows the model was not fitted on).
    """
    ids, sizes, means, sumsq = cluster_summary(predictions, features_col, prediction_col)
    n, k_fit = float(sizes.sum()), int(model.getK()) if hasattr(model, "getK") else len(ids)
    k = len(ids)
    within = float(np.sum(sumsq - sizes * np.einsum("ij,ij->i", means, means)))
    overall = (sizes[:, None] * means).sum(axis=0) / n
    between = float(np.sum(sizes * np.sum((means - overall) ** 2, axis=1)))
    metrics = dict.fromkeys(METRICS, NAN)
    metrics["wssse"] = max(within, 0.0)
    metrics["n_clusters_nonempty"] = float(k)
    metrics["min_cluster_share"] = float(sizes.min() / n) if k == k_fit else 0.0
    if k >= 2:
        evaluator = ClusteringEvaluator(
            featuresCol=features_col, predictionCol=prediction_col, metricName="silhouette",
            distanceMeasure="squaredEuclidean",
        )  # fmt: skip
        metrics["silhouette"] = float(evaluator.evaluate(predictions))
        metrics["calinski_harabasz"] = (between / (k - 1)) / (within / (n - k)) if within > 0 and n > k else NAN
        spread = _mean_distance_to_centroid(predictions, features_col, prediction_col, ids, means)
        distance = np.linalg.norm(means[:, None, :] - means[None, :, :], axis=2)
        np.fill_diagonal(distance, np.inf)
        with np.errstate(divide="ignore"):
            ratio = (spread[:, None] + spread[None, :]) / distance
        metrics["davies_bouldin"] = float(np.mean(ratio.max(axis=1)))
    if algorithm == "gaussian_mixture":
        log_likelihood = float(model.summary.logLikelihood) * (n / fitted_rows if fitted_rows else 1.0)
        d = int(means.shape[1])
        p = gmm_parameter_count(k_fit, d)
        metrics["log_likelihood"] = log_likelihood
        metrics["aic"] = 2 * p - 2 * log_likelihood
        metrics["bic"] = p * math.log(n) - 2 * log_likelihood
    return metrics


def adjusted_rand_index(df: DataFrame, labels_a: str, labels_b: str) -> float:
    """Adjusted Rand index between two label columns (Hubert & Arabie), from a Spark contingency table.

    One Spark job: the row and column totals are summed on the driver from the (at most
    k_a x k_b) cells.
    """
    cells = df.groupBy(labels_a, labels_b).count().collect()
    counts = [r["count"] for r in cells]
    rows_by, cols_by = Counter(), Counter()
    for r in cells:
        rows_by[r[labels_a]] += r["count"]
        cols_by[r[labels_b]] += r["count"]
    rows, cols = list(rows_by.values()), list(cols_by.values())

    def pairs(values: list[int]) -> float:
        return float(sum(v * (v - 1) / 2 for v in values))

    n = float(sum(rows))
    index, sum_a, sum_b = pairs(counts), pairs(rows), pairs(cols)
    total = n * (n - 1) / 2
    if total == 0:
        return 1.0
    expected = sum_a * sum_b / total
    maximum = (sum_a + sum_b) / 2
    if maximum == expected:
        return 1.0
    return (index - expected) / (maximum - expected)
