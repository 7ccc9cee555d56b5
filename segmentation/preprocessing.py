"""Preprocessing as a Spark ML pipeline saved with the model, made of Spark's built-in stages only.

Stages, in order:

* a ``SQLTransformer`` writing ``sign(x) * log1p(|x|)`` of the skewed money / count /
  duration columns to ``<column>__signed_log1p``;
* a ``SQLTransformer`` clipping every feature (its logged column where there is one) into
  bounds fitted on the training data with ``approxQuantile`` at ``training.cap_quantiles``,
  written into the statement as exact literals, to ``<input>__capped``;
* ``VectorAssembler`` of those columns into ``raw_features``, ``StandardScaler`` (std 1; a
  constant column scales to 0, never NaN) and an optional ``PCA``; the output is ``features``.

The input columns pass through unchanged. The scaler does not centre: every algorithm
here is translation invariant under euclidean distance, and MLlib's BisectingKMeans
splits a cluster by perturbing its centre in proportion to the centre's norm, so on
mean-centred data the root (at the origin) never splits and the "k clusters" are one.
Every stage is inside the fitted ``PipelineModel``, so scoring applies exactly the
training transforms, and the saved model loads wherever Spark does: from Scala or Java,
over Spark Connect, in a Python environment without this package.

:class:`SignedLog1p`, :class:`QuantileCapper` and :class:`QuantileCapperModel` are the
pure-Python stages of the models saved before that; they are kept only so those models load.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase

from pyspark import keyword_only
from pyspark.ml import Estimator, Model, PipelineModel, Transformer
from pyspark.ml.feature import PCA, SQLTransformer, StandardScaler, VectorAssembler
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCols, HasOutputCols, HasRelativeError
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.config import TrainingConfig
from segmentation.errors import ConfigError, ContractError, DegenerateFeaturesError

__all__ = [
    "AUTO_LOG_PATTERN",
    "CAP_SUFFIX",
    "LOG_SUFFIX",
    "QuantileCapper",
    "QuantileCapperModel",
    "SignedLog1p",
    "capping_stage",
    "drop_degenerate_columns",
    "fit_capping",
    "fit_preprocessing",
    "log_columns",
    "resolve_feature_columns",
    "signed_log_stage",
    "sql_double",
    "sql_name",
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
LOG_SUFFIX = "__signed_log1p"
CAP_SUFFIX = "__capped"
# approxQuantile's relative error for the capping bounds (the default of the QuantileCapper it replaces).
CAP_RELATIVE_ERROR = 0.001


class SignedLog1p(Transformer, HasInputCols, HasOutputCols, DefaultParamsReadable, DefaultParamsWritable):
    """``sign(x) * log1p(|x|)`` in place. Kept only so models saved before the preprocessing became
    built-in stages load; new models use :func:`signed_log_stage`."""

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
    """Learns per-column bounds at the ``lower`` / ``upper`` quantiles of the training data. Kept only
    so models saved before the preprocessing became built-in stages load; new models use
    :func:`fit_capping`."""

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
    """Clips each column into its fitted [lower bound, upper bound]. Kept only so models saved before
    the preprocessing became built-in stages load; new models use :func:`capping_stage`."""

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


def sql_name(column: str) -> str:
    """``column`` as a Spark SQL identifier (backquoted, so any name is safe)."""
    return "`" + column.replace("`", "``") + "`"


def sql_double(value: float) -> str:
    """A Spark SQL DOUBLE literal of exactly ``value``: Python's shortest round-tripping repr with
    the ``D`` suffix (both sides parse it correctly rounded), non-finite values by CAST."""
    value = float(value)
    if math.isnan(value):
        return "CAST('NaN' AS DOUBLE)"
    if math.isinf(value):
        return f"CAST('{'-' if value < 0 else ''}Infinity' AS DOUBLE)"
    return f"{value!r}D"


def _add_columns(expressions: Sequence[str]) -> SQLTransformer:
    return SQLTransformer(statement=f"SELECT *, {', '.join(expressions)} FROM __THIS__")


def signed_log_stage(columns: Sequence[str]) -> SQLTransformer:
    """Adds ``<column>__signed_log1p`` = ``sign(x) * log1p(|x|)`` (double) for each of ``columns``:
    compresses long tails, defined for zero and negative values; null stays null."""
    return _add_columns(
        [f"signum({sql_name(c)}) * log1p(abs({sql_name(c)})) AS {sql_name(c + LOG_SUFFIX)}" for c in columns]
    )


def capping_stage(bounds: Mapping[str, tuple[float, float]]) -> SQLTransformer:
    """Adds ``<column>__capped``: the column as a double clipped into its ``(lower, upper)`` bounds,
    written as exact literals. A null becomes the lower bound (``greatest`` skips nulls), as it did
    with the stage this replaces."""
    return _add_columns(
        [
            f"least(greatest(CAST({sql_name(c)} AS DOUBLE), {sql_double(low)}), {sql_double(high)}) "
            f"AS {sql_name(c + CAP_SUFFIX)}"
            for c, (low, high) in bounds.items()
        ]
    )


def fit_capping(
    df: DataFrame, columns: Sequence[str], quantiles: tuple[float, float], relative_error: float = CAP_RELATIVE_ERROR
) -> SQLTransformer:
    """:func:`capping_stage` with each column's bounds at its ``quantiles`` in ``df`` (``approxQuantile``,
    which skips nulls)."""
    found = df.approxQuantile(list(columns), list(quantiles), relative_error)
    return capping_stage({c: (q[0], q[1]) for c, q in zip(columns, found, strict=True)})


def _fit_column_stages(df: DataFrame, feature_cols: Sequence[str], cfg: TrainingConfig) -> tuple[list, list[str]]:
    """The signed-log and capping stages, fitted on ``df``, and the columns the assembler reads after them."""
    logged = set(log_columns(feature_cols, cfg))
    after_log = [c + LOG_SUFFIX if c in logged else c for c in feature_cols]
    columns = [c + CAP_SUFFIX for c in after_log] if cfg.cap_quantiles is not None else after_log
    written = {c + LOG_SUFFIX for c in logged} | set(columns) - set(after_log)
    if written & set(df.columns):
        raise ContractError(f"the feature table already has column(s) {sorted(written & set(df.columns))}, "
                            "which the preprocessing writes; rename or drop them")  # fmt: skip
    stages: list = []
    if logged:
        stages.append(signed_log_stage([c for c in feature_cols if c in logged]))
    if cfg.cap_quantiles is not None:
        logged_df = stages[0].transform(df) if stages else df
        stages.append(fit_capping(logged_df, after_log, cfg.cap_quantiles))
    return stages, columns


def _pca_components(scaled: DataFrame, n_features: int, cfg: TrainingConfig) -> int:
    """``pca.components``, or with ``pca.variance`` the fewest components of ``scaled_features``
    reaching that explained variance; at most ``n_features``."""
    components = cfg.pca.components
    if cfg.pca.variance is not None:
        full = PCA(k=n_features, inputCol="scaled_features", outputCol="_pc").fit(scaled)
        cumulative, components = 0.0, n_features
        for i, share in enumerate(full.explainedVariance.toArray(), start=1):
            cumulative += share
            if cumulative >= cfg.pca.variance - 1e-12:
                components = i
                break
        log.info("PCA: %d components explain %.1f%% of the variance", components, 100 * cumulative)
    return min(components, n_features)


def fit_preprocessing(df: DataFrame, feature_cols: Sequence[str], cfg: TrainingConfig) -> PipelineModel:
    """Fit the preprocessing on ``df`` (see the module docstring): a ``PipelineModel`` of built-in stages
    whose output column is ``features`` (vector); with ``pca.variance`` PCA keeps the fewest components
    reaching that explained variance."""
    stages, columns = _fit_column_stages(df, feature_cols, cfg)
    assembler = VectorAssembler(inputCols=columns, outputCol="raw_features", handleInvalid="error")
    assembled = assembler.transform(PipelineModel(stages=stages).transform(df))
    with_pca = cfg.pca.components is not None or cfg.pca.variance is not None
    scaled_col = "scaled_features" if with_pca else "features"
    scaler = StandardScaler(inputCol="raw_features", outputCol=scaled_col, withMean=False, withStd=True).fit(assembled)
    stages += [assembler, scaler]
    if with_pca:
        scaled = scaler.transform(assembled)
        k = _pca_components(scaled, len(feature_cols), cfg)
        stages.append(PCA(k=k, inputCol=scaled_col, outputCol="features").fit(scaled))
    return PipelineModel(stages=stages)
