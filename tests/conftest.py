"""One SparkSession per test process (two under pytest-xdist): small local master, few partitions, UI off."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pytest
from pyspark.ml import Pipeline
from pyspark.ml.feature import StandardScaler, VectorAssembler

from segmentation.config import SparkConfig, TrainingConfig, load_config
from segmentation.feature_pipeline import run_feature_pipeline
from segmentation.generator import generate
from segmentation.io import write_table
from segmentation.preprocessing import QuantileCapper, SignedLog1p, log_columns
from segmentation.spark import get_spark
from segmentation.training_pipeline import run_training

os.environ.setdefault("PYSPARK_PYTHON", os.sys.executable)

TEST_SPARK = SparkConfig(
    master="local[2]",
    app_name="segmentation-tests",
    shuffle_partitions=2,
    driver_memory="3g",
    ui_enabled=False,
    log_level="ERROR",
    conf={
        "spark.default.parallelism": "2",
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.sql.adaptive.coalescePartitions.enabled": "true",
        "spark.rdd.compress": "false",
        "spark.sql.warehouse.dir": f"/tmp/segmentation-tests-warehouse-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}",
    },
)


@pytest.fixture(scope="session")
def spark():
    session = get_spark(TEST_SPARK)
    yield session
    session.stop()


BASE = Path(__file__).resolve().parent.parent / "conf" / "base.yaml"


def make_config(root: Path, **extra):
    sets = {
        "generator.n_transactions": 30000,
        "generator.n_customers": 1200,
        "input.transactions.path": root / "tx",
        "input.customers.path": root / "customers",
        "input.customers.enabled": "true",  # attributes are profiled, not clustered on
        "input.customers.numeric": "[age, income]",
        "input.customers.categorical": "[region]",
        "features.output.path": root / "features",
        "features.quarantine.path": root / "quarantine",
        "features.quality.path": root / "quality",
        "training.k_min": 2,
        "training.k_max": 8,  # the generator plants 7 personas
        "training.seed": 7,
        # The slowest fit here takes seconds; a GaussianMixture start that hangs (docs/training.md,
        # A fit that never ends) costs two minutes and a retry instead of the suite.
        "training.fit_timeout_seconds": 120,
        "training.assignments.path": root / "assignments",
        "profiles.output.path": root / "profiles",
        "profiles.report_dir": root / "reports",
        "training.ground_truth.enabled": "true",
        "training.ground_truth.path": root / "ground_truth",
        "clv.output.path": root / "clv",  # never the repository's data/ of a demo run
        "mlflow.tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
        "mlflow.artifact_location": root / "artifacts",
        "mlflow.experiment": "test-segmentation",
        **extra,
    }
    return load_config([BASE], [f"{k}={v}" for k, v in sets.items()])


@pytest.fixture(scope="session")
def trained(spark, tmp_path_factory):
    """One small end-to-end run (30k transactions, 1,200 customers, k 2..8, the outlier flag on) shared
    by the training, scoring and identity tests; each of them writes its own outputs beside it."""
    root = tmp_path_factory.mktemp("training")
    cfg = make_config(root, **{"training.density.flag_outliers": "true"})
    tables = generate(spark, cfg.generator)
    write_table(tables["transactions"], cfg.features.output.model_copy(update={"path": str(root / "tx")}))
    write_table(tables["ground_truth"], cfg.features.output.model_copy(update={"path": str(root / "ground_truth")}))
    write_table(tables["customers"], cfg.features.output.model_copy(update={"path": str(root / "customers")}))
    run_feature_pipeline(spark, cfg)
    result = run_training(spark, cfg)
    return cfg, result


# The JVMs that tests start for a few seconds' work (jobs as processes, spark-submit, a standalone
# cluster) compile with C1 only: a 20k-row feature job as a process took 24.6 s instead of 31.3 s
# (2026-12-04). The session above keeps both compilers: C1 alone made the training and scoring test
# files take 386 s instead of 286 s.
# With C1 only the JVM reserves 48 MB of code cache, not 240 MB; a scoring job ran out of it on a
# fresh clone of cc1e54b ("Out of space in CodeCache", exit 1), so it gets C1's 240 MB back.
SHORT_LIVED_JVM = {"JDK_JAVA_OPTIONS": "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=240m"}


def free_port() -> int:
    """A free TCP port on loopback, for a server a test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_python(command: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run(command, capture_output=True, text=True, ...)`` for a Python process; one that
    runs past ``timeout`` fails the test with every thread's Python stack (``faulthandler``, on
    SIGABRT), so that a hang says where it waited."""
    kwargs["env"] = {**kwargs.get("env", os.environ), "PYTHONFAULTHANDLER": "1"}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs) as process:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            out, err = process.communicate(timeout=60)
            pytest.fail(f"{command[1]} ran past {timeout} s; its threads were at:\n{err[-12000:]}")
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM a process started with ``start_new_session=True`` and its children; SIGKILL after 30 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


# How pytest-xdist shares the tests out (`--dist loadfile`): one work unit per file, so that module
# fixtures are built once, except that the files using the session's `trained` run are one unit and
# so build it once, in one process (it took 121 s and 186 s, once in each, in a make test of
# 2026-12-04). The standalone-cluster file, the longest unit (8 min 14 s alone), is handed out
# first; by default pytest-xdist hands out the units with the most tests first, which started it
# 17 minutes into a fresh clone's make test while the other process had run out of work.
# `_split_scope` and `_assign_work_unit` are pytest-xdist's own (3.8.0, pinned in setup.py).
TRAINED_RUN_FILES = ("test_training_pipeline.py", "test_scoring_pipeline.py", "test_reliability_writes.py",
                     "test_tracking_server.py")  # fmt: skip
FIRST_UNIT = "tests/test_spark_submit_cluster.py"


def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedRunScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return "the trained run's files" if Path(scope).name in TRAINED_RUN_FILES else scope

        def _assign_work_unit(self, node) -> None:
            if FIRST_UNIT in self.workqueue:
                self.workqueue.move_to_end(FIRST_UNIT, last=False)
            super()._assign_work_unit(node)

    return SharedRunScheduling(config, log)


@pytest.fixture(autouse=True)
def _mlflow_state():
    """Every test gets back the MLflow state it started with, whatever it (or a job it ran) configured."""
    with mlflow_state_restored():
        yield


@contextmanager
def mlflow_state_restored():
    """``tracking.configure`` sets process-wide MLflow state (URIs, active experiment and their
    environment variables); put back what the other test modules of the session had set."""
    from mlflow.tracking import fluent
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID")
    env = {name: os.environ.get(name) for name in names}
    saved = (tracking_utils._tracking_uri, registry_utils._registry_uri, fluent._active_experiment_id)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved[0])
        registry_utils._registry_uri, fluent._active_experiment_id = saved[1], saved[2]
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def legacy_preprocessing(cols: list[str], cfg: TrainingConfig) -> Pipeline:
    """The preprocessing of models registered before the built-in stages (SignedLog1p, QuantileCapper)."""
    logged = log_columns(cols, cfg)
    return Pipeline(stages=[
        SignedLog1p(inputCols=logged, outputCols=logged),
        QuantileCapper(inputCols=cols, lower=cfg.cap_quantiles[0], upper=cfg.cap_quantiles[1]),
        VectorAssembler(inputCols=cols, outputCol="raw_features", handleInvalid="error"),
        StandardScaler(inputCol="raw_features", outputCol="features", withMean=False, withStd=True),
    ])  # fmt: skip
