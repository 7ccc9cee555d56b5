"""The jobs on a real Spark standalone cluster: a master and a worker on loopback, started from the
installed Spark, and every job submitted with ``spark-submit --master spark://...``, twice.

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

import pytest
from conftest import SHORT_LIVED_JVM, free_port, stop_process_group
from mlflow.tracking import MlflowClient
from spark_submit import (
    JOBS,
    SPARK_BIN,
    default_command,
    delta_operations,
    delta_tables,
    log_lines,
    readme_command,
    retrained,
    submit,
)

from segmentation.spark import DELTA_EXTENSION, delta_maven_coordinate


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
           "PYSPARK_PYTHON": sys.executable, **SHORT_LIVED_JVM}  # fmt: skip
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


RESOURCES = ["--driver-memory", "1g", "--conf", "spark.executor.memory=1g", "--conf", "spark.cores.max=1",
             "--conf", f"spark.pyspark.python={sys.executable}", "--conf", "spark.ui.enabled=false"]  # fmt: skip
USER_EXTENSION = "com.example.UsersOwnExtension"  # not on the classpath: Spark logs it and goes on


def test_every_job_runs_and_reruns_over_its_own_tables_on_a_standalone_cluster(spark, cluster):
    """Round one: the README's spark-submit lines. Round two: the default configuration, over the
    tables round one wrote, as a nightly rerun does: each job replaces its snapshot, deletes or
    merges, with a user's own ``spark.sql.extensions`` passed as well. Before the session factory
    was fixed, round two stopped in the feature job with a ClassCastException (Delta's extension was
    configured but not active)."""
    url, ui_port, root, env = cluster
    data = root / "data"
    for job in JOBS:
        submit(readme_command(job, url, root, RESOURCES), root, env)
    first = delta_tables(spark, data)
    assert first["features"] and first["segments_current"] and first["segment_assignments@1"]
    assert "is_outlier" not in spark.read.format("delta").load(str(data / "segments_current")).columns

    # Round two also passes a user's own extension, which the session factory must keep beside Delta's.
    rerun = [*RESOURCES, "--conf", f"spark.sql.extensions={USER_EXTENSION}"]
    done = [submit(default_command(job, url, delta_maven_coordinate(), rerun), root, env) for job in JOBS]
    # The default configuration (conf/local.yaml) also flags outliers, which the README's cluster lines
    # do not: the retrain's assignments gain is_outlier, and every other value is round one's.
    assert delta_tables(spark, data, drop=("is_outlier",)) == retrained(first)  # each snapshot replaced, once
    retrain = spark.read.format("delta").load(str(data / "segment_assignments")).where("model_version = '2'")
    assert retrain.count() > 0 and retrain.where("is_outlier IS NULL").count() == 0
    # The retrain is a challenger (training.promote: auto), so round two scored with round one's
    # champion, which has no outlier flag: the current table does not gain the column.
    assert "is_outlier" not in spark.read.format("delta").load(str(data / "segments_current")).columns
    assert delta_operations(spark, data, "features").count("WRITE") == 2
    assert "MERGE" in delta_operations(spark, data, "segments_current")[1:]
    for job in done:
        started = log_lines(job, "Spark .* session started")
        assert started and f"extensions={USER_EXTENSION},{DELTA_EXTENSION}" in started[0], job.stdout[-2000:]

    state = _master_state(ui_port)
    finished = [app for app in state["completedapps"] if app["state"] == "FINISHED"]
    assert len(finished) >= 2 * len(JOBS)  # each job was an application of this master, not local mode
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    versions = client.search_model_versions("name = 'customer-segments'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    assert int(client.get_model_version_by_alias("customer-segments", "champion").version) == 1  # promote: auto


def test_a_failed_job_exits_non_zero_with_one_line_on_stderr(cluster):
    url, _, root, env = cluster
    command = default_command("build_features", url, delta_maven_coordinate(), RESOURCES)
    command += ["--set", f"input.transactions.path={root / 'nowhere'}"]
    command += ["--set", f"features.output.path={root / 'never'}"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=root, timeout=900)
    assert done.returncode == 2
    # spark-submit merges Python's stderr into its stdout. Spark's own asynchronous log lines may
    # follow the reason, so the contract is one prefixed line.
    ours = log_lines(done, "^build_features: error: ")
    assert len(ours) == 1 and "nowhere" in ours[0], done.stdout[-3000:]
    assert not (root / "never").exists()
