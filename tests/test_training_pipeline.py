"""End to end: generated transactions -> features -> k sweep -> MLflow runs, registry, assignments."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from segmentation.config import load_config
from segmentation.errors import ContractError
from segmentation.feature_pipeline import run_feature_pipeline
from segmentation.generator import generate
from segmentation.io import write_table
from segmentation.training_pipeline import run_training

BASE = Path(__file__).resolve().parent.parent / "conf" / "base.yaml"


def make_config(root: Path, **extra):
    sets = {
        "generator.n_transactions": 30000,
        "generator.n_customers": 1200,
        "input.transactions.path": root / "tx",
        "input.customers.path": root / "customers",
        "features.output.path": root / "features",
        "features.quarantine.path": root / "quarantine",
        "features.quality.path": root / "quality",
        "training.k_min": 2,
        "training.k_max": 4,
        "training.seed": 7,
        "training.assignments.path": root / "assignments",
        "training.ground_truth.enabled": "true",
        "training.ground_truth.path": root / "ground_truth",
        "mlflow.tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
        "mlflow.artifact_location": root / "artifacts",
        "mlflow.experiment": "test-segmentation",
        **extra,
    }
    return load_config([BASE], [f"{k}={v}" for k, v in sets.items()])


@pytest.fixture(scope="module")
def trained(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("training")
    cfg = make_config(root)
    tables = generate(spark, cfg.generator)
    write_table(tables["transactions"], cfg.features.output.model_copy(update={"path": str(root / "tx")}))
    write_table(tables["ground_truth"], cfg.features.output.model_copy(update={"path": str(root / "ground_truth")}))
    run_feature_pipeline(spark, cfg)
    result = run_training(spark, cfg)
    return cfg, result


def test_parent_and_one_child_per_algorithm_and_k(trained):
    cfg, result = trained
    client = MlflowClient()
    experiment = client.get_experiment_by_name("test-segmentation")
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == result.run_id]
    assert sorted((r.data.tags["algorithm"], r.data.tags["k"]) for r in children) == sorted(
        (a, str(k)) for a in ("kmeans", "bisecting_kmeans", "gaussian_mixture") for k in (2, 3, 4)
    )
    assert len({tuple(sorted(r.data.params)) for r in children}) == 1
    assert len({tuple(sorted(r.data.metrics)) for r in children}) == 1
    assert {"silhouette", "wssse", "davies_bouldin", "calinski_harabasz", "bic", "stability_ari"} <= set(
        children[0].data.metrics
    )
    assert all(r.info.status == "FINISHED" for r in children)
    parent = client.get_run(result.run_id)
    assert parent.info.status == "FINISHED"
    tags = parent.data.tags
    assert tags["algorithm"] == result.champion and tags["k"] == str(result.k)
    assert tags["feature_snapshot"] == result.as_of and tags["input_delta_version"] == "0"
    assert int(tags["dq_rows_read"]) == 30000
    folders = ("charts", "selection", "identity", "profiles")
    artifacts = {f.path for d in folders for f in client.list_artifacts(result.run_id, d)}
    expected = {
        "charts/elbow.png", "charts/silhouette.png", "charts/bic.png", "charts/pca_scatter.png",
        "selection/chosen_k_rationale.json", "selection/sweep.csv", "identity/segment_mapping.json",
        "profiles/segment_profile.csv",
    }  # fmt: skip
    assert expected <= artifacts


def test_champion_is_registered_with_alias_and_both_loaders_agree(spark, trained):
    cfg, result = trained
    version = MlflowClient().get_model_version_by_alias(cfg.mlflow.registered_model, cfg.mlflow.alias)
    assert str(version.version) == result.model_version and version.run_id == result.run_id
    features = spark.read.format("delta").load(cfg.features.output.path).limit(200)
    uri = f"models:/{cfg.mlflow.registered_model}@{cfg.mlflow.alias}"
    spark_model = mlflow.spark.load_model(uri)
    via_spark = {r.customer_id: int(r.prediction) for r in spark_model.transform(features).collect()}
    pyfunc = mlflow.pyfunc.load_model(uri)
    pdf = features.toPandas()
    via_pyfunc = dict(zip(pdf["customer_id"], [int(p) for p in pyfunc.predict(pdf)], strict=True))
    assert via_spark == via_pyfunc
    assignments = spark.read.format("delta").load(cfg.training.assignments.path)
    stored = {r.customer_id: r.segment for r in assignments.collect()}
    assert all(stored[c] == s for c, s in via_spark.items())
    assert {r.model_version for r in assignments.collect()} == {result.model_version}


def test_planted_segments_are_recovered(trained):
    _, result = trained
    assert result.metrics["ground_truth_ari"] > 0.3


def test_retrain_with_another_seed_keeps_ids(spark, trained, tmp_path):
    cfg, first = trained
    cfg2 = make_config(Path(cfg.features.output.path).parent, **{
        "training.seed": 8, "training.algorithms": f"[{first.champion}]", "training.k_min": first.k,
        "training.k_max": first.k, "training.assignments.path": tmp_path / "assignments2",
    })  # fmt: skip
    second = run_training(spark, cfg2)
    assert second.identity.new_ids == [] and second.identity.retired_ids == []
    old = {r.customer_id: r.segment for r in spark.read.format("delta").load(cfg.training.assignments.path).collect()}
    new = {r.customer_id: r.segment for r in spark.read.format("delta").load(cfg2.training.assignments.path).collect()}
    agree = sum(old[c] == new[c] for c in old) / len(old)
    assert agree > 0.9


def test_failure_inside_the_run_marks_it_failed(spark, trained):
    cfg, _ = trained
    bad = make_config(Path(cfg.features.output.path).parent, **{"training.k_max": 5000, "training.k_min": 4999})
    with pytest.raises(ContractError, match="fewer than training.k_max=5000"):
        run_training(spark, bad)
    runs = MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name("test-segmentation").experiment_id],
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    assert runs[0].info.status == "FAILED"
    assert "fewer than training.k_max" in runs[0].data.tags["error"]
