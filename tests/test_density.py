"""The outlier flag: DBSCAN on a sample, its extension to every customer in Spark, and planted outliers found."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_config
from pyspark.ml import PipelineModel
from pyspark.ml.linalg import Vectors
from pyspark.sql import functions as F
from sklearn.cluster import DBSCAN

from segmentation.config import DensityConfig, TrainingConfig
from segmentation.density import (
    DensityModel,
    assign_density,
    fit_density,
    fit_density_candidate,
    fit_on_sample,
    k_distance_knee,
)
from segmentation.feature_pipeline import run_feature_pipeline
from segmentation.generator import generate
from segmentation.io import read_table, write_table
from segmentation.preprocessing import drop_degenerate_columns, fit_preprocessing, resolve_feature_columns
from segmentation.selection import choose
from segmentation.sweep import run_sweep


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


def _blob_vectors(spark, seed=3):
    rng = np.random.default_rng(seed)
    blobs = [rng.normal(center, 0.3, size=(150, 3)) for center in ([0, 0, 0], [5, 5, 0], [0, 5, 5])]
    points = np.vstack([*blobs, rng.uniform(-6, 11, size=(20, 3))])
    rows = [(f"c{i}", Vectors.dense(p)) for i, p in enumerate(points)]
    return points, spark.createDataFrame(rows, ["customer_id", "features"])


def test_the_density_candidate_predicts_dbscans_clusters_and_noise_as_one_more(spark, tmp_path):
    points, vectors = _blob_vectors(spark)
    model = fit_density_candidate(vectors, DensityConfig(sample_size=10_000, min_samples_share=0.02), seed=7)
    labels, _, eps = fit_density(points, min_samples=10)  # 2% of 470 rows is 9: the floor of 10
    assert model.getK() == 3 and model.getOrDefault(model.eps) == pytest.approx(eps, rel=1e-6)
    got = {r.customer_id: r.prediction for r in model.transform(vectors).collect()}
    assert [got[f"c{i}"] for i in range(len(points))] == [3 if x == -1 else x for x in labels.tolist()]
    # A pipeline holding it saves and loads (the registered model), and predicts the same.
    PipelineModel(stages=[model]).write().overwrite().save(str(tmp_path / "model"))
    again = PipelineModel.load(str(tmp_path / "model")).transform(vectors).collect()
    assert {r.customer_id: r.prediction for r in again} == got


def test_the_density_candidate_takes_part_in_the_sweep_with_its_metrics_on_the_clustered_rows(spark):
    _, vectors = _blob_vectors(spark)
    tcfg = TrainingConfig(algorithms=["kmeans", "density"], k_min=2, k_max=4, seed=7,
                          density={"min_samples_share": 0.02})  # fmt: skip
    sweep = run_sweep(tcfg, vectors.persist())
    assert sweep.candidates == [("kmeans", 2), ("kmeans", 3), ("kmeans", 4), ("density", 3)]
    record = sweep.records[("density", 3)]
    assert 0 < record["noise_share"] <= 20 / 470 and record["silhouette"] > 0.8
    assert record["min_cluster_share"] > 0.3  # of the clustered rows: three blobs of 150
    assert record["stability_ari"] is None or record["stability_ari"] > 0.9  # DBSCAN on 80% of the rows
    assert np.isnan(sweep.records[("kmeans", 3)]["noise_share"])
    choice = choose(sweep.ordered_records(), tcfg.algorithms, 0.02, 0.5, 0.01)
    assert choice.chosen_k["density"] == 3
