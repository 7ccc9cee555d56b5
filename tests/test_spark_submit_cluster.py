"""The jobs on a real Spark standalone cluster: a master and a worker on loopback, started from the
installed Spark, and every job submitted with ``spark-submit --master spark://...``.

This proves the jobs do not rely on local mode: the driver is spark-submit's, the executors run
in the worker's JVM, and Delta comes from ``--packages`` (served from Ivy's cache after the first
run). The cluster is shut down whatever happens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyspark
import pytest
from conftest import free_port, stop_process_group
from mlflow.tracking import MlflowClient

from segmentation.spark import delta_maven_coordinate

SPARK_BIN = Path(pyspark.__file__).parent / "bin"
PROJECT = Path(__file__).resolve().parent.parent


def _start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [str(SPARK_BIN / "spark-class"), *args], stdout=log.open("w"), stderr=subprocess.STDOUT,
        env=env, start_new_session=True,
    )  # fmt: skip


def _master_state(ui_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("standalone")
    port, ui_port, worker_ui = free_port(), free_port(), free_port()
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_WORKER_DIR": str(root / "work"),
           "PYSPARK_PYTHON": sys.executable}  # fmt: skip
    master = _start(["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                     "--webui-port", str(ui_port)], root / "master.log", env)  # fmt: skip
    worker = None
    try:
        url = f"spark://127.0.0.1:{port}"
        worker = _start(["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", "1",
                         "--memory", "2g", "--webui-port", str(worker_ui), url], root / "worker.log", env)  # fmt: skip
        deadline = time.monotonic() + 120
        while True:
            try:
                if _master_state(ui_port).get("aliveworkers", 0) >= 1:
                    break
            except OSError:
                pass
            if master.poll() is not None or worker.poll() is not None or time.monotonic() > deadline:
                logs = (root / "master.log").read_text()[-1500:] + (root / "worker.log").read_text()[-1500:]
                raise RuntimeError(f"the standalone cluster did not come up:\n{logs}")
            time.sleep(1)
        yield url, ui_port, root, env
    finally:
        if worker is not None:
            stop_process_group(worker)
        stop_process_group(master)


def _submit(cluster, job: str, *sets: str) -> subprocess.CompletedProcess:
    url, _, root, env = cluster
    command = [
        str(SPARK_BIN / "spark-submit"), "--master", url, "--packages", delta_maven_coordinate(),
        "--driver-memory", "1g", "--conf", "spark.executor.memory=1g", "--conf", "spark.cores.max=1",
        "--conf", f"spark.pyspark.python={sys.executable}", "--conf", "spark.ui.enabled=false",
        str(PROJECT / "jobs" / f"{job}.py"), "--config", str(PROJECT / "conf" / "base.yaml"),
        *[x for s in sets for x in ("--set", s)],
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=root, timeout=900)


def test_every_job_runs_on_a_standalone_cluster(spark, cluster):
    url, ui_port, root, _ = cluster
    data = root / "data"
    common = [
        f"input.transactions.path={data / 'tx'}", f"input.customers.path={data / 'customers'}",
        f"generator.transactions.path={data / 'tx'}", f"generator.customers.path={data / 'customers'}",
        f"generator.ground_truth.path={data / 'truth'}", f"features.output.path={data / 'features'}",
        f"features.quarantine.path={data / 'quarantine'}", f"features.quality.path={data / 'quality'}",
        f"training.assignments.path={data / 'assignments'}", f"profiles.output.path={data / 'profiles'}",
        f"profiles.report_dir={root / 'reports'}", f"scoring.current.path={data / 'current'}",
        f"scoring.history.path={data / 'history'}", f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}",
        f"mlflow.artifact_location={root / 'artifacts'}", "mlflow.experiment=cluster-runs",
    ]  # fmt: skip
    steps = [
        ("generate_transactions", ["generator.n_transactions=20000", "generator.n_customers=800"]),
        ("build_features", []),
        ("train_segments", ["training.algorithms=[kmeans]", "training.k_min=2", "training.k_max=4"]),
        ("score_customers", []),
    ]
    for job, extra in steps:
        done = _submit(cluster, job, *common, *extra)
        assert done.returncode == 0, f"{job} failed on the cluster:\n{done.stderr[-3000:]}"

    state = _master_state(ui_port)
    finished = [app for app in state["completedapps"] if app["state"] == "FINISHED"]
    assert len(finished) >= len(steps)  # each job was an application of this master, not local mode
    features = spark.read.format("delta").load(str(data / "features"))
    current = spark.read.format("delta").load(str(data / "current"))
    assert features.count() == current.count() > 700
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cluster-runs")
    runs = client.search_runs([experiment.experiment_id], "tags.job = 'train_segments'")
    parent = [r for r in runs if r.data.tags.get("role") == "parent"]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    assert client.get_model_version_by_alias("customer-segments", "champion").run_id == parent[0].info.run_id


def test_a_failed_job_exits_non_zero_with_one_line_on_stderr(cluster):
    _, _, root, _ = cluster
    done = _submit(cluster, "build_features", f"input.transactions.path={root / 'nowhere'}",
                   f"features.output.path={root / 'never'}")  # fmt: skip
    assert done.returncode == 2
    # spark-submit merges Python's stderr into its stdout; the job also writes the line to the JVM's
    # stderr. Spark's own asynchronous log lines may follow it, so the contract is one prefixed line.
    ours = [line for line in done.stderr.splitlines() if line.startswith("build_features: error: ")]
    assert len(ours) == 1 and "nowhere" in ours[0], done.stderr[-3000:]
    assert not (root / "never").exists()
