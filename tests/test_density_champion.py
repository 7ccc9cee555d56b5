"""A density (DBSCAN) champion end to end: swept, chosen, registered with its own stage, scored."""

from __future__ import annotations

import mlflow
import pytest
from conftest import make_config
from mlflow import MlflowClient

from segmentation import tracking
from segmentation.feature_pipeline import run_feature_pipeline
from segmentation.generator import generate
from segmentation.io import write_table
from segmentation.scoring_pipeline import run_scoring
from segmentation.training_pipeline import run_training


@pytest.fixture(scope="module")
def density_run(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("density_champion")
    cfg = make_config(root, **{"training.algorithms": "[density]", "scoring.current.path": root / "current",
                               "scoring.history.path": root / "history"})  # fmt: skip
    tables = generate(spark, cfg.generator)
    for name, path in (("transactions", "tx"), ("ground_truth", "ground_truth"), ("customers", "customers")):
        write_table(tables[name], cfg.features.output.model_copy(update={"path": str(root / path)}))
    run_feature_pipeline(spark, cfg)
    return cfg, run_training(spark, cfg)


def test_a_density_champion_is_registered_with_its_noise_as_a_segment_and_scored_as_trained(spark, density_run):
    cfg, result = density_run
    assert result.champion == "density" and result.k >= 1
    (record,) = result.records
    assert record["algorithm"] == "density" and record["k"] == result.k and 0 <= record["noise_share"] < 1
    child = tracking.child_runs(result.run_id)
    assert child["metrics.noise_share"].tolist() == [pytest.approx(record["noise_share"])]
    run = MlflowClient().get_run(result.run_id)
    assert run.data.metrics["champion_noise_share"] == pytest.approx(result.metrics["noise_share"])
    # k clusters and the noise cluster: k + 1 stable segment ids.
    assert len(result.identity.cluster_to_segment) == result.k + 1
    assigned = spark.read.format("delta").load(cfg.training.assignments.path)
    trained = {r.customer_id: r.segment for r in assigned.collect()}
    assert set(trained.values()) <= set(result.identity.cluster_to_segment) and len(trained) > 1000
    # The registered model (its DBSCAN stage saved in the pipeline) loads and scores as training assigned.
    snapshot = spark.read.format("delta").load(cfg.features.output.path)
    model = mlflow.spark.load_model(f"models:/{cfg.mlflow.registered_model}/{result.model_version}")
    scored = {r.customer_id: int(r.prediction) for r in model.transform(snapshot).collect()}
    assert scored == trained
    run_scoring(spark, cfg)
    current = spark.read.format("delta").load(cfg.scoring.current.path).collect()
    assert {r.customer_id: r.segment for r in current} == trained
