from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import legacy_preprocessing
from pyspark.ml import PipelineModel
from pyspark.ml.clustering import BisectingKMeans, GaussianMixture
from pyspark.ml.functions import vector_to_array
from pyspark.testing import assertDataFrameEqual

from segmentation.config import TrainingConfig
from segmentation.errors import ConfigError, ContractError, DegenerateFeaturesError
from segmentation.preprocessing import (
    QuantileCapper,
    SignedLog1p,
    drop_degenerate_columns,
    fit_capping,
    fit_preprocessing,
    log_columns,
    resolve_feature_columns,
    signed_log_stage,
    sql_double,
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


def test_signed_log_stage_is_safe_for_zero_negative_and_null_and_keeps_the_input(spark):
    df = spark.createDataFrame([(1, 0.0), (2, -9.0), (3, math.e - 1), (4, None)], "i INT, x DOUBLE")
    out = signed_log_stage(["x"]).transform(df).orderBy("i").collect()
    assert [r.x__signed_log1p for r in out[:3]] == pytest.approx([0.0, -math.log(10.0), 1.0])
    assert out[3].x__signed_log1p is None
    assert [r.x for r in out] == [0.0, -9.0, math.e - 1, None]


def test_capping_fits_bounds_on_training_data_and_clips_with_the_bounds_as_exact_literals(spark):
    train = spark.createDataFrame([(float(v), (v + 1) / 3) for v in range(101)], "x DOUBLE, y DOUBLE")
    stage = fit_capping(train, ["x", "y"], (0.1, 0.9), relative_error=0.0)
    # The 11th and 91st of 101 sorted values; y's have no exact decimal form.
    statement = stage.getStatement()
    assert "10.0D" in statement and "90.0D" in statement
    assert "3.6666666666666665D" in statement and "30.333333333333332D" in statement
    new = spark.createDataFrame([(1, -5.0, -5.0), (2, 50.0, 5.0), (3, 1000.0, 1000.0), (4, None, None)],
                                "i INT, x DOUBLE, y DOUBLE")  # fmt: skip
    out = stage.transform(new).orderBy("i").collect()
    assert [r.x__capped for r in out] == [10.0, 50.0, 90.0, 10.0]  # a null takes the lower bound
    assert [r.y__capped for r in out] == [11 / 3, 5.0, 91 / 3, 11 / 3]
    assert [r.x for r in out] == [-5.0, 50.0, 1000.0, None]


def test_sql_double_reads_back_as_exactly_the_same_double(spark):
    values = [0.1, 1 / 3, -2.5e-300, 1e16, 5e-324, 1.7976931348623157e308, 123456789.12345678, -0.0]
    values += [math.inf, -math.inf]
    literals = [f"{sql_double(v)} AS c{i}" for i, v in enumerate([*values, math.nan])]
    row = spark.sql(f"SELECT {', '.join(literals)}").first()
    assert [row[f"c{i}"] for i in range(len(values))] == values
    assert math.isnan(row[f"c{len(values)}"])


def test_legacy_signed_log1p_is_safe_for_zero_and_negative(spark):
    """The pure-Python stage of models saved before; kept so they load and score."""
    df = spark.createDataFrame([(0.0,), (-9.0,), (math.e - 1,)], "x DOUBLE")
    out = [r.x for r in SignedLog1p(inputCols=["x"], outputCols=["x"]).transform(df).collect()]
    assert out == pytest.approx([0.0, -math.log(10.0), 1.0])


def test_legacy_quantile_capper_fits_bounds_on_training_data_and_clips(spark):
    """The pure-Python stage of models saved before; kept so they load and score."""
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


def test_capping_bounds_are_the_quantiles_of_the_logged_values_and_every_stage_is_built_in(features):
    cols = ["net_spend", "n_purchases", "return_rate", "trend"]
    model = fit_preprocessing(features, cols, TrainingConfig())
    assert all(type(stage).__module__.startswith("pyspark.ml.") for stage in model.stages)
    assert model.stages[2].getInputCols() == ["net_spend__signed_log1p__capped", "n_purchases__signed_log1p__capped",
                                              "return_rate__capped", "trend__capped"]  # fmt: skip
    raw = features.toPandas()
    out = model.transform(features).toPandas()
    # The reference, in numpy: bounds at the 1st and 99th percentile (the sorted value at rank
    # ceil(p * n), which approxQuantile returns exactly on 200 rows) of the signed log.
    logged = np.sign(raw["net_spend"]) * np.log1p(np.abs(raw["net_spend"]))
    low, high = np.quantile(logged, [0.01, 0.99], method="inverted_cdf")
    assert (logged < low).sum() == 1 and (logged > high).sum() == 2  # the capping bites
    np.testing.assert_allclose(out["net_spend__signed_log1p__capped"], np.clip(logged, low, high), rtol=1e-12)
    low, high = np.quantile(raw["return_rate"], [0.01, 0.99], method="inverted_cdf")
    np.testing.assert_array_equal(out["return_rate__capped"], np.clip(raw["return_rate"], low, high))
    np.testing.assert_array_equal(out["net_spend"], raw["net_spend"])  # the input passes through


def test_the_built_in_stages_give_the_vectors_of_the_legacy_python_stages(features):
    """Same signed log, same capping bounds (quantiles of the logged values, relative error 0.001),
    so a retrain with this version puts customers where the previous version would have."""
    cols, cfg = ["net_spend", "n_purchases", "return_rate", "trend"], TrainingConfig()
    legacy = legacy_preprocessing(cols, cfg).fit(features)
    new = fit_preprocessing(features, cols, cfg)
    legacy_vectors, new_vectors = (
        np.array([r.features.toArray() for r in model.transform(features).orderBy("customer_id").collect()])
        for model in (legacy, new)
    )
    np.testing.assert_allclose(new_vectors, legacy_vectors, rtol=1e-12, atol=1e-12)


def test_without_log_or_capping_the_assembler_reads_the_input_columns(features):
    cfg = TrainingConfig(log_features=[], cap_quantiles=None)
    model = fit_preprocessing(features, ["net_spend", "trend"], cfg)
    assert [type(stage).__name__ for stage in model.stages] == ["VectorAssembler", "StandardScalerModel"]
    assert model.stages[0].getInputCols() == ["net_spend", "trend"]


def test_a_feature_table_column_the_preprocessing_would_write_stops_the_fit(features):
    clashing = features.withColumn("n_purchases__signed_log1p", features["trend"])
    with pytest.raises(ContractError, match=r"already has column\(s\) \['n_purchases__signed_log1p'\]"):
        fit_preprocessing(clashing, ["net_spend", "n_purchases", "trend"], TrainingConfig())


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
    scaled = fit_preprocessing(features, cols, TrainingConfig()).transform(features)
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
