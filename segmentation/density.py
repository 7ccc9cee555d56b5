"""Density clustering (DBSCAN) fitted on a sample, extended to every customer in Spark, and the outlier flag.

Why: k-means, bisecting k-means and Gaussian mixtures put every customer in a segment, so a reseller
buying like a business, a staff account or a data error joins one and drags its centre and profile
with it. DBSCAN labels the customers in no dense region as noise: the ``is_outlier`` flag.

How (``training.density``):

* the space is the model's own features after the signed log and the scaling, but **not capped**:
  capping pulls every extreme customer onto the same bound, where together they look dense (of 300
  planted outliers among 47,615 customers, DBSCAN on a 20,000 sample found 52% to 58% in the capped
  space and 98.7% in this one, 2026-12-04, ``docs/training.md``, *Outliers*); PCA, when configured,
  is not applied here;
* DBSCAN (scikit-learn) runs on a uniform sample of about ``sample_size`` customers with
  ``min_samples`` = ``min_samples_share`` of the sample (at least 10), so a group smaller than that
  cannot be dense, and ``eps`` at the knee of the sample's k-distance curve (each point's distance to
  its ``min_samples``-th nearest neighbour, sorted: the point farthest below the chord from the first
  to the last value), unless ``eps`` is set;
* every customer then joins the cluster of its nearest core sample if that core is within ``eps``,
  otherwise it is noise (``density_cluster`` -1, ``is_outlier`` true). That is DBSCAN's own rule for
  the sample (a core sample is its own nearest core; a border sample is within ``eps`` of a core of
  its cluster), and it runs as a vectorised pandas UDF over the core samples (a k-d tree per Arrow
  batch): nothing customer-level is collected to the driver.

The fitted :class:`DensityModel` is plain numbers (JSON), logged with the training run and read back
by the scoring job, so the Spark model stays made of Spark's built-in stages.

**As a segmentation candidate** (``training.algorithms`` names ``density``): DBSCAN in the model's own
feature space (the ``features`` vector the other candidates fit, capped and scaled), on about
``sample_size`` rows of the rows it is given, with the same ``min_samples`` and ``eps`` rules.
:class:`DensityClusterModel` is a Spark ``Transformer`` that extends it to every row the same way and
predicts the cluster, or ``getK()`` (one past the last cluster) for noise, so noise is a segment of its
own when it wins. Its k is the number of clusters it found; its sweep metrics are of the non-noise rows,
with ``noise_share`` beside them. It is deterministic on a given sample, so its stability refits
(another seed) run DBSCAN on :data:`STABILITY_SHARE` of the rows drawn with that seed. Unlike the
built-in stages it needs this package to load (``PipelineModel.load``, ``mlflow.spark``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark import keyword_only
from pyspark.ml import PipelineModel, Transformer
from pyspark.ml.feature import StandardScalerModel, VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasFeaturesCol, HasPredictionCol
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from segmentation.config import DensityConfig
from segmentation.preprocessing import CAP_SUFFIX, sql_name

__all__ = [
    "DENSITY_COL",
    "OUTLIER_COL",
    "STABILITY_SHARE",
    "DensityClusterModel",
    "DensityModel",
    "assign_density",
    "density_space",
    "fit_density",
    "fit_density_candidate",
    "k_distance_knee",
    "min_samples_for",
]

log = logging.getLogger(__name__)

DENSITY_COL = "density_cluster"
OUTLIER_COL = "is_outlier"
NOISE = -1
_MIN_SAMPLES_FLOOR = 10
STABILITY_SHARE = 0.8  # the share of the rows a stability refit of the density candidate runs DBSCAN on


@dataclass(frozen=True)
class DensityModel:
    """A DBSCAN fit: its space (input expressions and scale) and its core samples with their clusters."""

    inputs: list[str]  # SQL expressions over the preprocessing's output, one per dimension
    scale: list[float]  # multiplies each input (1 / the scaler's standard deviation; 0 for a constant)
    eps: float
    min_samples: int
    core_points: np.ndarray  # (n_core, n_inputs), scaled
    core_labels: np.ndarray  # cluster of each core sample, 0..n_clusters-1
    n_sample: int
    sample_noise_share: float

    @property
    def n_clusters(self) -> int:
        return int(self.core_labels.max()) + 1 if len(self.core_labels) else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "scale": self.scale,
            "eps": self.eps,
            "min_samples": self.min_samples,
            "core_points": self.core_points.round(6).tolist(),
            "core_labels": self.core_labels.tolist(),
            "n_sample": self.n_sample,
            "sample_noise_share": self.sample_noise_share,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DensityModel:
        n_inputs = len(data["inputs"])
        points = np.asarray(data["core_points"], dtype=float).reshape(-1, n_inputs)
        return cls(list(data["inputs"]), [float(x) for x in data["scale"]], float(data["eps"]),
                   int(data["min_samples"]), points, np.asarray(data["core_labels"], dtype=int),
                   int(data["n_sample"]), float(data["sample_noise_share"]))  # fmt: skip


def density_space(preprocessing: PipelineModel) -> tuple[list[str], list[float]]:
    """The uncapped, scaled space of a fitted preprocessing: one SQL expression per assembled column
    (the column before capping, or the capped one where that is null, as capping turns a null into
    its lower bound) and the scaler's ``1 / std`` for it."""
    assembler = next(s for s in preprocessing.stages if isinstance(s, VectorAssembler))
    scaler = next(s for s in preprocessing.stages if isinstance(s, StandardScalerModel))
    inputs = []
    for column in assembler.getInputCols():
        if column.endswith(CAP_SUFFIX):
            inputs.append(f"coalesce({sql_name(column[: -len(CAP_SUFFIX)])}, {sql_name(column)})")
        else:
            inputs.append(sql_name(column))
    std = scaler.std.toArray()
    return inputs, [float(1.0 / s) if s > 0 else 0.0 for s in std]


def min_samples_for(n_sample: int, share: float) -> int:
    return max(_MIN_SAMPLES_FLOOR, round(share * n_sample))


def k_distance_knee(distances: np.ndarray) -> float:
    """The knee of the sorted k-distance curve: the value farthest below the straight line from the
    smallest to the largest distance, both axes scaled to [0, 1]."""
    d = np.sort(np.asarray(distances, dtype=float))
    if len(d) < 3 or d[-1] <= d[0]:
        return float(d[-1]) if len(d) else 0.0
    x = np.linspace(0.0, 1.0, len(d))
    y = (d - d[0]) / (d[-1] - d[0])
    return float(d[int(np.argmax(x - y))])


def fit_density(points: np.ndarray, min_samples: int, eps: float | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """DBSCAN on ``points``: its labels (-1 noise), the indices of its core samples and the ``eps`` used
    (the k-distance knee when ``eps`` is None)."""
    from sklearn.cluster import DBSCAN
    from sklearn.neighbors import NearestNeighbors

    if eps is None:
        # n_neighbors counts the point itself, as DBSCAN's min_samples does.
        distances = NearestNeighbors(n_neighbors=min_samples).fit(points).kneighbors(points)[0][:, -1]
        eps = k_distance_knee(distances)
    fitted = DBSCAN(eps=eps, min_samples=min_samples).fit(points)
    return fitted.labels_, fitted.core_sample_indices_, float(eps)


def fit_on_sample(transformed: DataFrame, preprocessing: PipelineModel, dcfg: DensityConfig, n_rows: int,
                  seed: int) -> DensityModel:  # fmt: skip
    """Fit DBSCAN on a uniform sample of about ``dcfg.sample_size`` rows of ``transformed`` (the
    preprocessing's output); the sample, not the customers, comes to the driver."""
    inputs, scale = density_space(preprocessing)
    fraction = min(1.0, dcfg.sample_size / max(n_rows, 1))
    rows = transformed if fraction >= 1.0 else transformed.sample(False, fraction, seed)
    frame = rows.select(*[F.expr(e).cast("double").alias(f"x{i}") for i, e in enumerate(inputs)]).toPandas()
    points = frame.to_numpy(dtype=float) * np.asarray(scale)
    min_samples = min_samples_for(len(points), dcfg.min_samples_share)
    labels, core, eps = fit_density(points, min_samples, dcfg.eps)
    model = DensityModel(inputs, scale, eps, min_samples, points[core], labels[core], len(points),
                         float(np.mean(labels == NOISE)))  # fmt: skip
    log.info("density: DBSCAN on %d customers, min_samples %d, eps %.3f: %d clusters, %.2f%% noise",
             len(points), min_samples, eps, model.n_clusters, 100 * model.sample_noise_share)  # fmt: skip
    return model


def _nearest_core_labeller(core_points: np.ndarray, core_labels: np.ndarray, eps: float, scale: np.ndarray,
                           noise: int = NOISE):  # fmt: skip
    """A pandas UDF body: scaled rows -> the cluster of the nearest core within ``eps``, else ``noise``.
    Self-contained (numpy and scikit-learn only), so executors need not import this package. The
    k-d tree is built on a task's first batch and reused for its others."""
    tree = None

    def label(values: pd.Series) -> pd.Series:
        nonlocal tree
        if len(values) == 0:
            return pd.Series([], dtype="int32")
        points = np.stack(values.to_numpy()).astype(float) * scale
        if len(core_points) == 0:
            return pd.Series(np.full(len(points), noise, dtype="int32"))
        if tree is None:
            from sklearn.neighbors import KDTree

            tree = KDTree(core_points)
        distance, index = tree.query(points, k=1)
        labels = np.where(distance[:, 0] <= eps, core_labels[index[:, 0]], noise)
        return pd.Series(labels.astype("int32"))

    return label


def assign_density(df: DataFrame, model: DensityModel) -> DataFrame:
    """``df`` (the preprocessing's output) with ``density_cluster`` (int, -1 = noise) and ``is_outlier``."""
    body = _nearest_core_labeller(model.core_points, model.core_labels, model.eps, np.asarray(model.scale))
    udf = F.pandas_udf(body, "int")
    row: Column = F.array(*[F.expr(e).cast("double") for e in model.inputs])
    labelled = df.withColumn(DENSITY_COL, udf(row))
    return labelled.withColumn(OUTLIER_COL, F.col(DENSITY_COL) == F.lit(NOISE))


class DensityClusterModel(Transformer, HasFeaturesCol, HasPredictionCol, DefaultParamsReadable, DefaultParamsWritable):
    """DBSCAN as a segmentation candidate (see the module doc): predicts the cluster of the row's nearest
    core sample within ``eps``, else ``getK()``, the noise cluster."""

    coreVectors = Param(Params._dummy(), "coreVectors", "the core samples", TypeConverters.toListListFloat)
    coreLabels = Param(Params._dummy(), "coreLabels", "each core sample's cluster", TypeConverters.toListInt)
    eps = Param(Params._dummy(), "eps", "DBSCAN's eps", TypeConverters.toFloat)
    minSamples = Param(Params._dummy(), "minSamples", "DBSCAN's min_samples", TypeConverters.toInt)
    sampleRows = Param(Params._dummy(), "sampleRows", "rows DBSCAN ran on", TypeConverters.toInt)

    @keyword_only
    def __init__(self, *, featuresCol: str = "features", predictionCol: str = "prediction",
                 coreVectors: list[list[float]] | None = None, coreLabels: list[int] | None = None,
                 eps: float = 0.0, minSamples: int = 1, sampleRows: int = 0):  # fmt: skip
        super().__init__()
        self._setDefault(featuresCol="features", predictionCol="prediction", coreVectors=[], coreLabels=[], eps=0.0,
                         minSamples=1, sampleRows=0)  # fmt: skip
        self._set(**self._input_kwargs)

    def setPredictionCol(self, value: str) -> DensityClusterModel:
        return self._set(predictionCol=value)

    def setFeaturesCol(self, value: str) -> DensityClusterModel:
        return self._set(featuresCol=value)

    def getK(self) -> int:
        """The clusters found (the noise cluster, index ``getK()``, not counted)."""
        labels = self.getOrDefault(self.coreLabels)
        return max(labels) + 1 if labels else 0

    def _transform(self, dataset: DataFrame) -> DataFrame:
        points = np.asarray(self.getOrDefault(self.coreVectors), dtype=float)
        labels = np.asarray(self.getOrDefault(self.coreLabels), dtype=int)
        scale = np.ones(points.shape[1] if points.ndim == 2 else 0)
        body = _nearest_core_labeller(points, labels, self.getOrDefault(self.eps), scale, noise=self.getK())
        udf = F.pandas_udf(body, "int")
        return dataset.withColumn(self.getPredictionCol(), udf(vector_to_array(F.col(self.getFeaturesCol()))))


def fit_density_candidate(data: DataFrame, dcfg: DensityConfig, seed: int, share: float = 1.0,
                          features_col: str = "features", prediction_col: str = "prediction"
                          ) -> DensityClusterModel:  # fmt: skip
    """DBSCAN on about ``share`` x ``dcfg.sample_size`` rows of ``data``'s ``features_col`` (all of them up
    to that many, times ``share``), drawn with ``seed``; the sample, not the rows, comes to the driver."""
    n = data.count()
    fraction = min(1.0, dcfg.sample_size / max(n, 1)) * share
    rows = data if fraction >= 1.0 else data.sample(False, fraction, seed)
    frame = rows.select(vector_to_array(F.col(features_col)).alias("x")).toPandas()
    points = np.stack(frame["x"].to_numpy()).astype(float) if len(frame) else np.zeros((0, 0))
    min_samples = min_samples_for(len(points), dcfg.min_samples_share)
    labels, core, eps = fit_density(points, min_samples, dcfg.eps)
    log.info("density candidate: DBSCAN on %d rows, min_samples %d, eps %.3f: %d clusters, %.2f%% noise",
             len(points), min_samples, eps, int(labels.max()) + 1 if len(labels) else 0,
             100 * float(np.mean(labels == NOISE)) if len(labels) else 0.0)  # fmt: skip
    return DensityClusterModel(featuresCol=features_col, predictionCol=prediction_col,
                               coreVectors=points[core].round(6).tolist(), coreLabels=labels[core].tolist(),
                               eps=float(eps), minSamples=min_samples, sampleRows=len(points))  # fmt: skip
