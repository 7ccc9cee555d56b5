"""Training and scoring against a real ``mlflow server`` on loopback, not the embedded SQLite store.

The server proxies artifacts (``--artifacts-destination``), as a shared team server would, so the
model is uploaded and downloaded over HTTP and its checksum is verified on the way back.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
from conftest import free_port, make_config, stop_process_group
from mlflow.tracking import MlflowClient

from segmentation.errors import ContractError
from segmentation.scoring_pipeline import run_scoring
from segmentation.training_pipeline import run_training


@pytest.fixture(scope="module")
def server(tmp_path_factory, trained):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = (root / "server.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
            "--artifacts-destination", str(root / "artifacts"), "--workers", "1",
        ],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url, root
    finally:
        stop_process_group(process)
        log.close()


def _server_config(trained, url, root, **extra):
    cfg, first = trained
    return make_config(Path(cfg.features.output.path).parent, **{
        "mlflow.tracking_uri": url, "mlflow.artifact_location": "null", "mlflow.experiment": "server-runs",
        "training.algorithms": "[kmeans]", "training.k_min": 2, "training.k_max": 3,
        "training.as_of": first.as_of, "training.assignments.path": root / "assignments",
        "scoring.current.path": root / "current", "scoring.history.path": root / "history",
        "profiles.output.path": root / "profiles", "profiles.report_dir": root / "reports", **extra,
    })  # fmt: skip


def test_training_and_scoring_through_a_tracking_server(spark, trained, server):
    url, root = server
    cfg = _server_config(trained, url, root)
    result = run_training(spark, cfg)

    client = MlflowClient(tracking_uri=url)
    assert mlflow.get_tracking_uri() == url
    parent = client.get_run(result.run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["algorithm"] == "kmeans"
    assert parent.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied by the server
    experiment = client.get_experiment_by_name("server-runs")
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{result.run_id}'")
    assert sorted(r.data.tags["k"] for r in children) == ["2", "3"]
    assert {f.path for f in client.list_artifacts(result.run_id, "charts")} >= {"charts/elbow.png"}
    assert (root / "artifacts").is_dir() and any((root / "artifacts").rglob("MLmodel"))
    version = client.get_model_version_by_alias(cfg.mlflow.registered_model, cfg.mlflow.alias)
    assert str(version.version) == result.model_version == "1"

    scored = run_scoring(spark, cfg)  # downloads the model over HTTP and checks its sha256
    assert scored.model_version == "1" and scored.customers > 1000
    assigned = {r.customer_id: r.segment for r in spark.read.format("delta").load(str(root / "assignments")).collect()}
    current = {r.customer_id: r.segment for r in spark.read.format("delta").load(str(root / "current")).collect()}
    assert current == assigned
    assert client.get_run(scored.run_id).info.status == "FINISHED"


def test_a_failed_training_run_is_marked_failed_on_the_server(spark, trained, server):
    url, root = server
    cfg = _server_config(trained, url, root, **{"training.k_min": 4999, "training.k_max": 5000})
    with pytest.raises(ContractError, match="fewer than training.k_max=5000"):
        run_training(spark, cfg)
    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name("server-runs")
    latest = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    assert latest[0].info.status == "FAILED"
    assert "fewer than training.k_max" in latest[0].data.tags["error"]
