"""MLflow failures against a real SQLite tracking store and a real local artifact store.

A training run whose model cannot be logged must end FAILED with its error recorded, and
must leave the registry (versions, alias) and the Delta outputs exactly as they were. The
failures are genuine, not mocked:

* the model: ``mlflow.spark.log_model`` writes the Spark model through Hadoop into a fresh
  folder under ``MLFLOW_DFS_TMP`` before it copies it into the run's artifacts; pointing that
  variable below a regular file makes exactly that write fail, while the run's charts and
  tables still reach the artifact store (with MLflow 3.17 and ``artifact_path`` the model is a
  run artifact, ``<artifact_location>/<run_id>/artifacts/model``, whose run id is not known in
  advance, so the artifact store cannot be made to refuse only the model);
* the whole artifact store: an experiment whose ``artifact_location`` is a regular file.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import mlflow
import pytest
from conftest import make_config, mlflow_state_restored
from mlflow.tracking import MlflowClient

from segmentation import tracking
from segmentation.feature_pipeline import run_feature_pipeline
from segmentation.generator import generate
from segmentation.io import delta_version, write_table
from segmentation.training_pipeline import run_training


def small_config(root: Path, **extra):
    """6,000 transactions, 300 customers, KMeans k 2..3 without the stability refits: seconds per training."""
    return make_config(root, **{
        "generator.n_transactions": 6000, "generator.n_customers": 300, "input.customers.enabled": "false",
        "training.ground_truth.enabled": "false", "training.algorithms": "[kmeans]",
        "training.k_min": 2, "training.k_max": 3, "training.selection.stability_seeds": 1,
        "mlflow.experiment": "reliability", **extra,
    })  # fmt: skip


@pytest.fixture(scope="module")
def champion(spark, tmp_path_factory):
    """A first, successful training: registered version 1 with the alias, assignments and profiles."""
    root = tmp_path_factory.mktemp("reliability-mlflow")
    with mlflow_state_restored():
        cfg = small_config(root)
        tables = generate(spark, cfg.generator)
        write_table(tables["transactions"], cfg.features.output.model_copy(update={"path": str(root / "tx")}))
        run_feature_pipeline(spark, cfg)
        first = run_training(spark, cfg)
        yield root, cfg, first


def _outputs(spark, cfg) -> dict:
    """Version and sorted rows of both Delta outputs, the reports on disk and the registry."""
    state = {}
    for name, target in (("assignments", cfg.training.assignments), ("profiles", cfg.profiles.output)):
        frame = spark.read.format("delta").load(target.path)
        state[name] = (delta_version(spark, target), sorted(map(tuple, frame.toPandas().astype(str).values)))
    state["reports"] = sorted(p.name for p in Path(cfg.profiles.report_dir).iterdir())
    client = MlflowClient()
    name = cfg.mlflow.registered_model
    state["versions"] = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    state["aliases"] = sorted((a, str(v)) for a, v in client.get_registered_model(name).aliases.items())
    return state


def _newest_parent_run(experiment: str = "reliability"):
    """The newest training run of ``experiment`` (child runs carry ``mlflow.parentRunId``)."""
    client = MlflowClient()
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id], order_by=["attributes.start_time DESC"])
    return next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)


def test_a_model_that_fails_to_log_is_not_registered_and_changes_no_output(spark, champion, monkeypatch):
    root, cfg, first = champion
    blocked = root / "dfs-tmp-is-a-file"
    blocked.write_text("MLflow cannot create the Spark model's temporary folder below a file\n")
    monkeypatch.setenv("MLFLOW_DFS_TMP", str(blocked / "mlflow"))
    # promote=always: without the failure the alias would move to the new version.
    retrain = small_config(root, **{"training.promote": "always", "training.seed": 8})
    tracking.configure(cfg.mlflow)
    before = _outputs(spark, cfg)
    assert first.model_version == "1" and before["aliases"] == [("champion", "1")] and before["versions"] == [1]

    with pytest.raises(Exception) as raised:  # noqa: PT011 - whatever Spark raises for the failed write
        run_training(spark, retrain)

    assert any(frame.name == "log_spark_model" for frame in traceback.extract_tb(raised.value.__traceback__))
    assert str(blocked) in str(raised.value)
    failed = _newest_parent_run()
    assert failed.info.run_id != first.run_id and failed.info.status == "FAILED"
    error = failed.data.tags["error"]
    assert error.startswith(type(raised.value).__name__) and str(blocked) in error
    error_txt = mlflow.artifacts.load_text(f"runs:/{failed.info.run_id}/error.txt")
    assert "Traceback" in error_txt and "log_spark_model" in error_txt
    # Only the model failed: the run's other artifacts were logged beside error.txt, the model was not.
    logged = {f.path for f in MlflowClient().list_artifacts(failed.info.run_id)}
    logged |= {f.path for d in ("selection", "charts") for f in MlflowClient().list_artifacts(failed.info.run_id, d)}
    assert {"error.txt", "selection/chosen_k_rationale.json", "charts/elbow.png"} <= logged and "model" not in logged
    assert "model_sha256" not in failed.data.tags and "promoted" not in failed.data.tags

    # Nothing was registered or aliased, and neither Delta output nor the reports changed.
    assert _outputs(spark, cfg) == before
    # The champion is still whole: it downloads, matches its checksum and loads.
    loaded = tracking.load_registered_model(cfg.mlflow.registered_model, alias=cfg.mlflow.alias)
    assert (loaded.version, loaded.run_id) == ("1", first.run_id)


def test_a_run_whose_artifact_store_fails_still_ends_failed_with_the_original_error(spark, champion):
    """When even ``error.txt`` cannot be written, the run still gets its ``error`` tag and the
    FAILED status, and the caller sees the error that stopped the training, not the later one."""
    root, cfg, first = champion
    unusable = root / "artifact-store-is-a-file"
    unusable.write_text("not a directory\n")
    retrain = small_config(root, **{
        "mlflow.experiment": "artifact-store-fails", "mlflow.artifact_location": unusable, "training.seed": 9,
    })  # fmt: skip
    tracking.configure(cfg.mlflow)
    before = _outputs(spark, cfg)

    with pytest.raises(OSError) as raised:
        run_training(spark, retrain)

    frames = traceback.extract_tb(raised.value.__traceback__)
    # The first artifact of the run (the selection rationale) is what failed, and that is what is raised.
    assert any(frame.name == "log_dict" for frame in frames)
    assert not any(frame.name in ("_end_failed", "log_text") for frame in frames)
    tracking.configure(cfg.mlflow)
    parent = _newest_parent_run("artifact-store-fails")
    assert parent.info.status == "FAILED"
    assert parent.data.tags["error"] == f"{type(raised.value).__name__}: {raised.value}"[:5000]
    assert _outputs(spark, cfg) == before
