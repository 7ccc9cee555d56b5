from __future__ import annotations

import math

import numpy as np
import pytest
from pyspark.ml import PipelineModel
from pyspark.ml.clustering import BisectingKMeans, GaussianMixture
from pyspark.ml.functions import vector_to_array
from pyspark.testing import assertDataFrameEqual

from segmentation.config import TrainingConfig
from segmentation.errors import ConfigError, DegenerateFeaturesError
from segmentation.preprocessing import (
    QuantileCapper,
    SignedLog1p,
    build_preprocessing,
    drop_degenerate_columns,
    fit_preprocessing,
    log_columns,
    resolve_feature_columns,
)

SCHEMA = "customer_id STRING, as_of DATE, net_spend DOUBLE, n_purchases BIGINT, return_rate DOUBLE, trend DOUBLE"


@pytest.fixture(scope="module")
def features(spark):
    rng = np.random.default_rng(2)
    rows = [
        (f"c{i}", None, float(v), int(n), float(r), float(t))
        for i, (v, n, r, t) in enumerate(
            zip(
                rng.lognormal(4, 1, 200) - 20,
                rng.integers(1, 50, 200),
                rng.random(200),
                rng.uniform(-1, 1, 200),
                strict=True,
            )  # fmt: skip
        )
    ]
    return spark.createDataFrame(rows, SCHEMA)


def test_signed_log1p_is_safe_for_zero_and_negative(spark):
    df = spark.createDataFrame([(0.0,), (-9.0,), (math.e - 1,)], "x DOUBLE")
    out = [r.x for r in SignedLog1p(inputCols=["x"], outputCols=["x"]).transform(df).collect()]
    assert out == pytest.approx([0.0, -math.log(10.0), 1.0])


def test_quantile_capper_fits_bounds_on_training_data_and_clips(spark):
    train = spark.createDataFrame([(float(v),) for v in range(101)], "x DOUBLE")
    model = QuantileCapper(inputCols=["x"], lower=0.1, upper=0.9, relativeError=0.0).fit(train)
    assert model.getOrDefault(model.lowerBounds) == [10.0] and model.getOrDefault(model.upperBounds) == [90.0]
    new = spark.createDataFrame([(-5.0,), (50.0,), (1000.0,)], "x DOUBLE")
    assert [r.x for r in model.transform(new).collect()] == [10.0, 50.0, 90.0]


def test_resolve_feature_columns(features):
    cfg = TrainingConfig(exclude=["trend"])
    assert resolve_feature_columns(features, cfg) == ["net_spend", "n_purchases", "return_rate"]
    assert resolve_feature_columns(features, TrainingConfig(exclude=["n_*", "tre?d"])) == ["net_spend", "return_rate"]
    with pytest.raises(ConfigError, match=r"training.features names column\(s\) \['nope'\]"):
        resolve_feature_columns(features, TrainingConfig(features=["net_spend", "nope"]))
    with pytest.raises(ConfigError, match="non-numeric"):
        resolve_feature_columns(features, TrainingConfig(features=["customer_id"]))


def test_auto_log_columns_skip_shares_and_rates():
    cols = ["net_spend", "n_purchases", "return_rate", "cat_toys", "trend", "T", "mean_gap_days", "return_value_share"]
    assert log_columns(cols, TrainingConfig()) == ["net_spend", "n_purchases", "T", "mean_gap_days"]


def test_pipeline_scales_to_unit_variance_without_centring_and_round_trips(features, tmp_path):
    cols = ["net_spend", "n_purchases", "return_rate", "trend"]
    model = fit_preprocessing(features, cols, TrainingConfig())
    out = model.transform(features).select("customer_id", vector_to_array("features").alias("f")).toPandas()
    matrix = np.array(out["f"].tolist())
    np.testing.assert_allclose(matrix.std(axis=0, ddof=1), 1.0, atol=1e-9)
    assert np.linalg.norm(matrix.mean(axis=0)) > 0.1  # not centred: see the next test
    model.write().overwrite().save(str(tmp_path / "prep"))
    loaded = PipelineModel.load(str(tmp_path / "prep"))
    assertDataFrameEqual(loaded.transform(features), model.transform(features))


def test_bisecting_kmeans_splits_the_preprocessed_data_into_k_clusters(features):
    # MLlib perturbs a cluster centre in proportion to its norm to split it; centred data
    # (root centre at the origin) used to come back as a single cluster.
    prepared = fit_preprocessing(features, ["net_spend", "n_purchases", "return_rate", "trend"], TrainingConfig())
    model = BisectingKMeans(k=4, seed=1).fit(prepared.transform(features))
    assert len(model.clusterCenters()) == 4 and min(model.summary.clusterSizes) > 0


def test_pca_by_components_and_by_variance(features):
    cols = ["net_spend", "n_purchases", "return_rate", "trend"]
    two = fit_preprocessing(features, cols, TrainingConfig(pca={"components": 2}))
    assert two.transform(features).first().features.size == 2
    # The reference: the eigenvalues of the scaled columns' covariance, with numpy.
    scaled = build_preprocessing(cols, TrainingConfig()).fit(features).transform(features)
    matrix = np.array([r.features.toArray() for r in scaled.select("features").collect()])
    shares = np.sort(np.linalg.eigvalsh(np.cov(matrix, rowvar=False)))[::-1]
    shares = shares / shares.sum()
    for target in (0.5, 0.7, 0.95):
        fewest = int(np.argmax(np.cumsum(shares) >= target - 1e-12)) + 1
        most = fit_preprocessing(features, cols, TrainingConfig(pca={"variance": target}))
        assert most.stages[-1].getK() == fewest, target
        assert most.stages[-1].explainedVariance.toArray() == pytest.approx(shares[:fewest], abs=1e-9)
    assert len({int(np.argmax(np.cumsum(shares) >= t)) for t in (0.5, 0.7, 0.95)}) > 1  # the targets differ


def test_degenerate_columns_are_dropped_and_gmm_survives(spark, features):
    df = features.selectExpr("*", "7.0 AS constant", "net_spend AS copy_of_spend")
    cols = ["net_spend", "n_purchases", "constant", "copy_of_spend", "trend"]
    kept = drop_degenerate_columns(df, cols)
    assert kept == ["net_spend", "n_purchases", "trend"]
    prepared = fit_preprocessing(df, kept, TrainingConfig()).transform(df)
    model = GaussianMixture(k=3, seed=1, maxIter=10).fit(prepared)
    assert model.transform(prepared).select("prediction").distinct().count() >= 2
    with pytest.raises(DegenerateFeaturesError, match="constant or a duplicate"):
        drop_degenerate_columns(df, ["constant"])
