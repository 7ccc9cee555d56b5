"""Preprocessing as a Spark ML pipeline saved with the model.

Stages, in order: :class:`SignedLog1p` on skewed money / count / duration
columns, :class:`QuantileCapper` (bounds fitted on the training data),
``VectorAssembler``, ``StandardScaler`` (std 1; a constant column scales to 0,
never NaN) and an optional ``PCA``. The scaler does not centre: every algorithm
here is translation invariant under euclidean distance, and MLlib's
BisectingKMeans splits a cluster by perturbing its centre in proportion to the
centre's norm, so on mean-centred data the root (at the origin) never splits
and the "k clusters" are one. Every stage is inside the
fitted ``PipelineModel``, so scoring applies exactly the training transforms.
The custom stages follow ``pyspark.ml``'s Params style and persist with
``DefaultParamsWritable``, so the saved model loads wherever ``segmentation``
is importable (the logged MLflow model carries the package).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from fnmatch import fnmatchcase

from pyspark import keyword_only
from pyspark.ml import Estimator, Model, Pipeline, PipelineModel, Transformer
from pyspark.ml.feature import PCA, StandardScaler, VectorAssembler
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCols, HasOutputCols, HasRelativeError
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.config import TrainingConfig
from segmentation.errors import ConfigError, DegenerateFeaturesError

__all__ = [
    "AUTO_LOG_PATTERN",
    "QuantileCapper",
    "QuantileCapperModel",
    "SignedLog1p",
    "build_preprocessing",
    "drop_degenerate_columns",
    "fit_preprocessing",
    "log_columns",
    "resolve_feature_columns",
    "NUMERIC_TYPES",
]

log = logging.getLogger(__name__)

# Money, counts and durations are right-skewed; shares, rates and the trend are not.
AUTO_LOG_PATTERN = re.compile(
    r"(spend|monetary|value|^n_|frequency|recency|tenure|^T$|gap|ratio|income)", re.IGNORECASE
)
# Shares and rates live in [0, 1] already.
_BOUNDED_PATTERN = re.compile(r"(share|rate|^cat_|^chan_)", re.IGNORECASE)
NUMERIC_TYPES = (T.DoubleType, T.FloatType, T.IntegerType, T.LongType, T.ShortType, T.DecimalType)
_KEYS = ("customer_id", "as_of")


class SignedLog1p(Transformer, HasInputCols, HasOutputCols, DefaultParamsReadable, DefaultParamsWritable):
    """``sign(x) * log1p(|x|)``: compresses long tails, defined for zero and negative values."""

    @keyword_only
    def __init__(self, *, inputCols: list[str] | None = None, outputCols: list[str] | None = None):
        super().__init__()
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, inputCols: list[str] | None = None, outputCols: list[str] | None = None) -> SignedLog1p:
        return self._set(**self._input_kwargs)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        outputs = self.getOutputCols() if self.isSet(self.outputCols) else self.getInputCols()
        return dataset.withColumns(
            {
                o: F.signum(F.col(i)) * F.log1p(F.abs(F.col(i)))
                for i, o in zip(self.getInputCols(), outputs, strict=True)
            }
        )


class _CapperParams(HasInputCols, HasOutputCols, HasRelativeError):
    lower = Param(Params._dummy(), "lower", "lower quantile, in [0, 1)", typeConverter=TypeConverters.toFloat)
    upper = Param(Params._dummy(), "upper", "upper quantile, in (0, 1]", typeConverter=TypeConverters.toFloat)

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self._setDefault(lower=0.01, upper=0.99, relativeError=0.001)


class QuantileCapper(Estimator, _CapperParams, DefaultParamsReadable, DefaultParamsWritable):
    """Learns per-column bounds at the ``lower`` / ``upper`` quantiles of the training data."""

    @keyword_only
    def __init__(
        self,
        *,
        inputCols: list[str] | None = None,
        outputCols: list[str] | None = None,
        lower: float = 0.01,
        upper: float = 0.99,
        relativeError: float = 0.001,
    ):
        super().__init__()
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(
        self,
        *,
        inputCols: list[str] | None = None,
        outputCols: list[str] | None = None,
        lower: float = 0.01,
        upper: float = 0.99,
        relativeError: float = 0.001,
    ) -> QuantileCapper:
        return self._set(**self._input_kwargs)

    def _fit(self, dataset: DataFrame) -> QuantileCapperModel:
        columns = self.getInputCols()
        probabilities = [self.getOrDefault(self.lower), self.getOrDefault(self.upper)]
        quantiles = dataset.approxQuantile(columns, probabilities, self.getRelativeError())
        model = QuantileCapperModel(
            inputCols=columns,
            outputCols=self.getOutputCols() if self.isSet(self.outputCols) else columns,
            lowerBounds=[q[0] for q in quantiles],
            upperBounds=[q[1] for q in quantiles],
        )
        return self._copyValues(model)


class QuantileCapperModel(Model, _CapperParams, DefaultParamsReadable, DefaultParamsWritable):
    """Clips each column into its fitted [lower bound, upper bound]."""

    lowerBounds = Param(Params._dummy(), "lowerBounds", "fitted lower bounds", typeConverter=TypeConverters.toListFloat)
    upperBounds = Param(Params._dummy(), "upperBounds", "fitted upper bounds", typeConverter=TypeConverters.toListFloat)

    @keyword_only
    def __init__(
        self,
        *,
        inputCols: list[str] | None = None,
        outputCols: list[str] | None = None,
        lowerBounds: list[float] | None = None,
        upperBounds: list[float] | None = None,
    ):
        super().__init__()
        self._set(**self._input_kwargs)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        inputs = self.getInputCols()
        outputs = self.getOutputCols() if self.isSet(self.outputCols) else inputs
        lows, highs = self.getOrDefault(self.lowerBounds), self.getOrDefault(self.upperBounds)
        return dataset.withColumns(
            {
                o: F.least(F.greatest(F.col(i).cast("double"), F.lit(lo)), F.lit(hi))
                for i, o, lo, hi in zip(inputs, outputs, lows, highs, strict=True)
            }
        )


def resolve_feature_columns(df: DataFrame, cfg: TrainingConfig) -> list[str]:
    """The model's input columns: ``training.features`` or every numeric column, minus ``training.exclude``
    (names or shell-style patterns such as ``region_*``)."""
    numeric = [f.name for f in df.schema.fields if isinstance(f.dataType, NUMERIC_TYPES) and f.name not in _KEYS]
    if cfg.features is not None:
        missing = [c for c in cfg.features if c not in df.columns]
        if missing:
            raise ConfigError(f"training.features names column(s) {missing} that the feature table does not have")
        not_numeric = [c for c in cfg.features if c not in numeric]
        if not_numeric:
            raise ConfigError(f"training.features names non-numeric column(s) {not_numeric}")
        chosen = list(cfg.features)
    else:
        chosen = numeric
    chosen = [c for c in chosen if not any(fnmatchcase(c, pattern) for pattern in cfg.exclude)]
    if not chosen:
        raise ConfigError("training.features / training.exclude leave no feature column to train on")
    return chosen


def log_columns(feature_cols: Sequence[str], cfg: TrainingConfig) -> list[str]:
    if cfg.log_features == "auto":
        return [c for c in feature_cols if AUTO_LOG_PATTERN.search(c) and not _BOUNDED_PATTERN.search(c)]
    return [c for c in cfg.log_features if c in feature_cols]


def drop_degenerate_columns(df: DataFrame, feature_cols: Sequence[str]) -> list[str]:
    """Drop constant columns and exact duplicates of an earlier column (they make GaussianMixture's
    covariance singular and add nothing); raise :class:`DegenerateFeaturesError` if none is left."""
    stats = df.select(
        *[
            F.struct(
                F.min(c).cast("double"),
                F.max(c).cast("double"),
                F.sum(F.col(c).cast("double")),
                F.sum(F.pmod(F.xxhash64(F.col(c).cast("double")), F.lit(2_147_483_647))),
            ).alias(c)
            for c in feature_cols
        ]
    ).first()
    constant = [c for c in feature_cols if stats[c][0] == stats[c][1]]
    varying = [c for c in feature_cols if c not in constant]
    signatures: dict[tuple, list[str]] = {}
    for c in varying:
        signatures.setdefault(tuple(stats[c]), []).append(c)
    candidates = [(group[0], other) for group in signatures.values() for other in group[1:]]
    duplicates: list[str] = []
    if candidates:
        differ = df.select(
            *[F.sum((~F.col(a).cast("double").eqNullSafe(F.col(b).cast("double"))).cast("long")) for a, b in candidates]
        ).first()
        duplicates = [b for (a, b), n in zip(candidates, differ, strict=True) if n == 0]
    kept = [c for c in varying if c not in duplicates]
    if constant or duplicates:
        log.warning("dropping constant feature(s) %s and duplicate feature(s) %s", constant, duplicates)
    if not kept:
        raise DegenerateFeaturesError(
            f"every feature column is constant or a duplicate ({list(feature_cols)}); "
            "the feature snapshot has no variation to cluster on"
        )
    return kept


def build_preprocessing(
    feature_cols: Sequence[str], cfg: TrainingConfig, pca_components: int | None = None
) -> Pipeline:
    """The preprocessing pipeline (unfitted). Output column: ``features`` (vector)."""
    stages: list = []
    logged = log_columns(feature_cols, cfg)
    if logged:
        stages.append(SignedLog1p(inputCols=logged, outputCols=logged))
    if cfg.cap_quantiles is not None:
        low, high = cfg.cap_quantiles
        stages.append(QuantileCapper(inputCols=list(feature_cols), lower=low, upper=high))
    scaled_col = "features" if not pca_components else "scaled_features"
    stages.append(VectorAssembler(inputCols=list(feature_cols), outputCol="raw_features", handleInvalid="error"))
    stages.append(StandardScaler(inputCol="raw_features", outputCol=scaled_col, withMean=False, withStd=True))
    if pca_components:
        stages.append(PCA(k=pca_components, inputCol=scaled_col, outputCol="features"))
    return Pipeline(stages=stages)


def fit_preprocessing(df: DataFrame, feature_cols: Sequence[str], cfg: TrainingConfig) -> PipelineModel:
    """Fit the pipeline; with ``pca.variance`` pick the fewest components reaching that explained variance."""
    components = cfg.pca.components
    if cfg.pca.variance is not None:
        scaled = build_preprocessing(feature_cols, cfg).fit(df).transform(df)
        full = PCA(k=len(feature_cols), inputCol="features", outputCol="_pc").fit(scaled)
        cumulative, components = 0.0, len(feature_cols)
        for i, share in enumerate(full.explainedVariance.toArray(), start=1):
            cumulative += share
            if cumulative >= cfg.pca.variance - 1e-12:
                components = i
                break
        log.info("PCA: %d components explain %.1f%% of the variance", components, 100 * cumulative)
    if components is not None:
        components = min(components, len(feature_cols))
    return build_preprocessing(feature_cols, cfg, pca_components=components).fit(df)
