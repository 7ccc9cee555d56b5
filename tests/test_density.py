"""The outlier flag: DBSCAN on a sample, its extension to every customer in Spark, and planted outliers found."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_config
from pyspark.sql import functions as F
from sklearn.cluster import DBSCAN

from segmentation.config import DensityConfig
from segmentation.density import DensityModel, assign_density, fit_density, fit_on_sample, k_distance_knee
from segmentation.feature_pipeline import run_feature_pipeline
from segmentation.generator import generate
from segmentation.io import read_table, write_table
from segmentation.preprocessing import drop_degenerate_columns, fit_preprocessing, resolve_feature_columns


def test_knee_is_where_the_k_distance_curve_turns_up():
    flat = np.linspace(1.0, 1.2, 95)  # the dense customers
    tail = np.array([3.0, 5.0, 8.0, 12.0, 20.0])  # a few far ones
    knee = k_distance_knee(np.concatenate([tail, flat]))  # any order
    assert 1.15 <= knee <= 1.2


def test_extension_gives_dbscans_own_labels_on_its_sample_and_noise_far_away(spark):
    rng = np.random.default_rng(3)
    blobs = [rng.normal(center, 0.3, size=(150, 3)) for center in ([0, 0, 0], [5, 5, 0], [0, 5, 5])]
    scattered = rng.uniform(-6, 11, size=(20, 3))
    points = np.vstack([*blobs, scattered])
    labels, core, eps = fit_density(points, min_samples=10)
    assert labels.max() + 1 == 3 and 0 < np.sum(labels == -1) <= 20
    model = DensityModel(["a", "b", "c"], [1.0, 1.0, 1.0], eps, 10, points[core], labels[core], len(points),
                         float(np.mean(labels == -1)))  # fmt: skip
    rows = [(i, *map(float, p)) for i, p in enumerate(points)] + [(10_000, 40.0, 40.0, 40.0)]
    frame = spark.createDataFrame(rows, "id long, a double, b double, c double")
    got = {r.id: r.density_cluster for r in assign_density(frame, model).select("id", "density_cluster").collect()}
    assert [got[i] for i in range(len(points))] == labels.tolist()
    assert got[10_000] == -1
    # scikit-learn's own fit with the same eps and min_samples gives the same labels.
    assert DBSCAN(eps=eps, min_samples=10).fit(points).labels_.tolist() == labels.tolist()
    # The model survives its JSON round trip (the training run logs it, the scoring job reads it).
    again = DensityModel.from_dict(model.to_dict())
    assert again.eps == model.eps and again.core_points.shape == model.core_points.shape


@pytest.fixture(scope="module")
def planted(spark, tmp_path_factory):
    """5,000 customers of the seven personas plus 50 planted outliers, as features."""
    root = tmp_path_factory.mktemp("outliers")
    sets = {"generator.n_transactions": 100_000, "generator.n_customers": 5000,
            "generator.personas.outlier_share": 0.01, "input.customers.enabled": "false"}  # fmt: skip
    cfg = make_config(root, **sets)
    tables = generate(spark, cfg.generator)
    write_table(tables["transactions"], cfg.features.output.model_copy(update={"path": str(root / "tx")}))
    run_feature_pipeline(spark, cfg)
    return cfg, read_table(spark, cfg.features.output), tables["ground_truth"]


def test_planted_outliers_are_flagged_and_almost_no_one_else(planted):
    cfg, snapshot, truth = planted
    tcfg = cfg.training
    columns = drop_degenerate_columns(snapshot, resolve_feature_columns(snapshot, tcfg))
    preprocessing = fit_preprocessing(snapshot, columns, tcfg)
    transformed = preprocessing.transform(snapshot)
    model = fit_on_sample(transformed, preprocessing, DensityConfig(), snapshot.count(), tcfg.seed)
    flagged = assign_density(transformed, model).select("customer_id", "is_outlier").join(truth, "customer_id")
    by_group = flagged.groupBy((F.col("segment") == "outlier").alias("planted"), "is_outlier").count()
    counts = {(r.planted, r.is_outlier): r["count"] for r in by_group.collect()}
    planted_n = counts.get((True, True), 0) + counts.get((True, False), 0)
    others = counts.get((False, True), 0) + counts.get((False, False), 0)
    assert planted_n == 50
    assert counts.get((True, True), 0) / planted_n >= 0.9
    assert counts.get((False, True), 0) / others < 0.01
