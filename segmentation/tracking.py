"""Every MLflow call of the project lives here.

The library computes; this module records. A run that raises is ended FAILED
with the error as a tag and an ``error.txt`` artifact, never left RUNNING. A
model is registered and aliased only after it was logged completely.

Every text this module sends to MLflow (run tags and params, the error, text, JSON
and CSV artifacts) passes through :func:`redact` first: a password in a URI's user
information (which Hadoop accepts for ftp, s3a... and repeats in its error messages)
reaches the tracking store as ``scheme://user:***@host``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import Run
from mlflow.models import infer_signature
from mlflow.pyfunc import PythonModel
from mlflow.tracking import MlflowClient

from segmentation.config import MlflowConfig
from segmentation.errors import ModelMismatchError, ModelNotFoundError

__all__ = [
    "HIERARCHY_ARTIFACT",
    "IDENTITY_ARTIFACT",
    "LoadedModel",
    "PROFILE_ARTIFACT",
    "RATIONALE_ARTIFACT",
    "REPORT_ARTIFACT",
    "RULES_ARTIFACT",
    "SWEEP_ARTIFACT",
    "child_runs",
    "code_version",
    "configure",
    "directory_checksum",
    "load_registered_model",
    "child_run",
    "environment_tags",
    "load_run_dict",
    "load_run_text",
    "log_dict",
    "log_figure",
    "log_metrics",
    "log_params",
    "log_clv_model",
    "log_spark_model",
    "log_table",
    "log_text",
    "model_pip_requirements",
    "promote",
    "redact",
    "register_model",
    "registered_model",
    "run_model_version",
    "run_tags",
    "set_tags",
    "tracked_run",
]

log = logging.getLogger(__name__)

# Where a training run keeps what it logs; the scoring job and the notebooks read them by these names.
IDENTITY_ARTIFACT = "identity/segment_mapping.json"
RATIONALE_ARTIFACT = "selection/chosen_k_rationale.json"
SWEEP_ARTIFACT = "selection/sweep.csv"
PROFILE_ARTIFACT = "profiles/segment_profile.csv"
RULES_ARTIFACT = "profiles/segment_rules.json"
REPORT_ARTIFACT = "report/segment_report.html"
DENSITY_ARTIFACT = "density/dbscan_model.json"  # the outlier flag's DBSCAN (segmentation.density)
# The two-level tree (segmentation.hierarchy): the sub-segments' identity, each split and the named tree.
HIERARCHY_ARTIFACT = "identity/segment_tree.json"
# MLflow's UI opens an experiment without this tag on its GenAI overview (traces, token use);
# with it, on the runs table and the model-training views.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = {EXPERIMENT_KIND_TAG: "custom_model_development"}

PACKAGE_ROOT = Path(__file__).resolve().parent
_PINNED = ("pyspark", "delta-spark", "mlflow", "pandas", "numpy", "pyarrow", "pydantic", "PyYAML")


REDACTED = "***"
# The password of a URI's user information becomes *** (scheme://user:***@host); a user
# without a password, as in abfss://container@account..., is not a secret and stays.
_URI_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@'\"]*):[^/\s@'\"]+@")


def redact(text: str) -> str:
    """``text`` with the password of every URI's userinfo replaced by ``***``."""
    return _URI_PASSWORD.sub(lambda m: f"{m['head']}:{REDACTED}@", text)


def _strings(values: Mapping[str, Any]) -> dict[str, str]:
    return {k: redact(str(v)) for k, v in values.items()}


def redact_data(data: Any) -> Any:
    """``data`` (JSON-like: dicts, lists, strings) with :func:`redact` applied to every string and key."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {redact(str(k)): redact_data(v) for k, v in data.items()}
    if isinstance(data, list):
        return [redact_data(v) for v in data]
    return data


def _uri(value: str) -> str:
    """A relative sqlite path or artifact folder becomes absolute, so runs from any directory agree."""
    if value.startswith("sqlite:///") and not value.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(value[len("sqlite:///") :]).resolve())
    if "://" not in value and value not in ("databricks", "databricks-uc"):
        return Path(value).resolve().as_uri()
    return value


def configure(cfg: MlflowConfig) -> str:
    """Point MLflow at the configured store and experiment; return the experiment id."""
    mlflow.set_tracking_uri(_uri(cfg.tracking_uri))
    if cfg.dfs_tmpdir:
        os.environ["MLFLOW_DFS_TMP"] = cfg.dfs_tmpdir
    if cfg.registry_uri:
        mlflow.set_registry_uri(_uri(cfg.registry_uri))
    experiment = mlflow.get_experiment_by_name(cfg.experiment)
    if experiment is None:
        location = _uri(cfg.artifact_location) if cfg.artifact_location else None
        experiment_id = mlflow.create_experiment(cfg.experiment, artifact_location=location, tags=EXPERIMENT_KIND)
    else:
        experiment_id = experiment.experiment_id
        if EXPERIMENT_KIND_TAG not in experiment.tags:  # an experiment made before, or by hand; a set kind is kept
            MlflowClient().set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND[EXPERIMENT_KIND_TAG])
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def code_version() -> str | None:
    """The git commit of the code, when it runs from a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PACKAGE_ROOT, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@contextmanager
def tracked_run(run_name: str, tags: Mapping[str, Any] | None = None, nested: bool = False) -> Iterator[Run]:
    """Start a run; on any exception end it FAILED with the error recorded, then re-raise."""
    run = mlflow.start_run(run_name=run_name, nested=nested, tags=_strings(tags or {}))
    try:
        yield run
    except BaseException as exc:
        _end_failed(run.info.run_id, exc)
        raise
    else:
        mlflow.end_run(status="FINISHED")


def _end_failed(run_id: str, exc: BaseException) -> None:
    """Record ``exc`` on the active run (``error`` tag, ``error.txt``) and end it FAILED.

    Each step is tried on its own and none of them raises: when the store cannot take the
    traceback (the artifact store may be what failed) the run still gets the tag and the
    FAILED status, and the caller re-raises the original exception, not this one's.
    """
    message = redact(f"{type(exc).__name__}: {exc}")[:5000]
    steps = (
        ("error tag", lambda: mlflow.set_tag("error", message)),
        ("error.txt", lambda: mlflow.log_text(redact("".join(traceback.format_exception(exc))), "error.txt")),
        ("FAILED status", lambda: mlflow.end_run(status="FAILED")),
    )
    for what, step in steps:
        try:
            step()
        except Exception as failure:  # noqa: BLE001 - recording the error must not replace it
            log.warning("run %s: could not record the %s: %s", run_id, what, redact(str(failure)).splitlines()[0])


def child_run(
    run_name: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    tags: Mapping[str, Any],
    started: float | None = None,
    ended: float | None = None,
) -> str:
    """One nested run of the active run with its params, metrics and tags; returns its run id.

    ``started`` and ``ended`` (epoch seconds) date the run by when its work began and ended,
    so the UI's Duration column shows the fit's time although the run is written afterwards.
    """
    from mlflow.entities import Metric, Param

    parent = mlflow.active_run()
    client = MlflowClient()
    all_tags = {**_strings(tags), "mlflow.parentRunId": parent.info.run_id}
    start_ms = int((started if started is not None else time.time()) * 1000)
    run = client.create_run(parent.info.experiment_id, start_time=start_ms, tags=all_tags, run_name=run_name)
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
            params=[Param(k, v) for k, v in _strings(params).items()],
        )
    except BaseException as exc:
        client.set_tag(run_id, "error", redact(f"{type(exc).__name__}: {exc}")[:5000])
        client.set_terminated(run_id, "FAILED")
        raise
    end_ms = int((ended if ended is not None else time.time()) * 1000)
    client.set_terminated(run_id, "FINISHED", end_time=end_ms)
    return run_id


def log_params(params: Mapping[str, Any]) -> None:
    mlflow.log_params(_strings(params))


def log_metrics(metrics: Mapping[str, float]) -> None:
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()})


def set_tags(tags: Mapping[str, Any]) -> None:
    mlflow.set_tags(_strings({k: v for k, v in tags.items() if v is not None}))


def log_figure(figure: Any, artifact_file: str) -> None:
    mlflow.log_figure(figure, artifact_file)


def log_dict(data: Mapping[str, Any], artifact_file: str) -> None:
    mlflow.log_dict(redact_data(json.loads(json.dumps(data, default=str))), artifact_file)


def log_text(text: str, artifact_file: str) -> None:
    mlflow.log_text(redact(text), artifact_file)


def log_table(frame: pd.DataFrame, artifact_file: str) -> None:
    """A small pandas table as a CSV artifact (readable in the UI's artifact viewer)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        path.write_text(redact(frame.to_csv(index=False)), encoding="utf-8")
        mlflow.log_artifact(str(path), artifact_path=str(Path(artifact_file).parent) or None)


def model_pip_requirements() -> list[str]:
    """Explicit, pinned requirements: inferring them would start a second Spark and take minutes."""
    pins = []
    for name in _PINNED:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return pins


CHECKSUM_TAG = "model_sha256"
PREVIOUS_SUFFIX = "-previous"


# MLflow adds this file when a model is downloaded through a models:/ URI; it is not part of the model.
_DOWNLOAD_ONLY = {"registered_model_meta"}


def directory_checksum(root: str | Path) -> str:
    """SHA-256 over every file of a model directory (relative path and bytes, in path order)."""
    root = Path(root)
    digest = hashlib.sha256()
    files = (p for p in root.rglob("*") if p.is_file() and p.relative_to(root).as_posix() not in _DOWNLOAD_ONLY)
    for path in sorted(files):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def log_spark_model(model: Any, input_example: pd.DataFrame, output_example: pd.DataFrame, name: str = "model") -> str:
    """Log a fitted Spark ``PipelineModel`` with signature, input example and pinned requirements.
    Its stages are Spark's built-in ones, so the model carries no code of this package: it loads
    (Spark and pyfunc flavours) where ``segmentation`` is not installed, without putting a copy
    of it on the loader's ``sys.path``.

    The SHA-256 of the logged files is read back from the store and kept as the run's
    ``model_sha256`` tag (and on the registered version), so the scoring job can check that
    the model it loads is the one that was logged. Returns the ``runs:/`` URI of the model.
    """
    import mlflow.spark

    signature = infer_signature(input_example, output_example)
    logged = dict(signature=signature, input_example=input_example, pip_requirements=model_pip_requirements())
    if _connect_outside_databricks():
        # MLflow's check of the input example loads the model through mlflow.spark, which needs the JVM.
        flavor = {"flavor": _SharedDirSparkFlavor, "validate_serving_input": False}
        info = mlflow.models.Model.log(artifact_path=name, spark_model=model, **flavor, **logged)
    else:
        info = mlflow.spark.log_model(model, artifact_path=name, **logged)
    uri = f"runs:/{mlflow.active_run().info.run_id}/{name}"
    with tempfile.TemporaryDirectory() as tmp:
        checksum = directory_checksum(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
    mlflow.set_tag(CHECKSUM_TAG, checksum)
    log.info("logged model %s (sha256 %s)", info.model_uri, checksum[:12])
    return uri


def _connect_outside_databricks() -> bool:
    """Whether Spark is an open-source Connect server's: MLflow's Spark flavour moves model files
    between that server and this process through a JVM this process does not have."""
    from mlflow.utils import databricks_utils
    from pyspark.sql.utils import is_remote

    return is_remote() and not databricks_utils.is_in_databricks_runtime()


def shared_tmpdir() -> str:
    """A directory both this process and the Spark (Connect) server see: ``mlflow.dfs_tmpdir``,
    i.e. MLflow's ``MLFLOW_DFS_TMP`` (``/tmp/mlflow`` by default, right for a local server)."""
    from mlflow.environment_variables import MLFLOW_DFS_TMP

    path = MLFLOW_DFS_TMP.get()
    Path(path).mkdir(parents=True, exist_ok=True)
    return path


class _SharedDirSparkFlavor:
    """``mlflow.spark`` for an open-source Spark Connect session, passed to ``Model.log`` as its flavour.

    ``mlflow.spark`` has the server save the model, then copies it into the logged model through
    Hadoop's file system in this process's JVM, which a Connect client has not (on Databricks it
    moves the files through a Volume instead). This has the server save it into
    :func:`shared_tmpdir`, moves it into the model directory and writes the MLmodel with
    ``mlflow.spark``'s own metadata writer: the same files, flavours and loader as ``mlflow.spark``.
    """

    @staticmethod
    def save_model(
        path: str, mlflow_model: Any, spark_model: Any, validate_serving_input: bool = True, **metadata: Any
    ) -> None:
        import uuid

        import mlflow.spark

        staged = Path(shared_tmpdir()) / f"segmentation-logging-{uuid.uuid4().hex}"
        spark_model.write().save(str(staged))
        Path(path).mkdir(parents=True, exist_ok=True)
        shutil.move(str(staged), str(Path(path) / "sparkml"))
        mlflow.spark._save_model_metadata(  # noqa: SLF001 - the flavour's MLmodel, not a copy of it
            dst_dir=path,
            spark_model=spark_model,
            mlflow_model=mlflow_model,
            conda_env=None,
            code_paths=None,
            **metadata,
        )


def register_model(model_uri: str, name: str, alias: str | None, make_champion: bool = True) -> str:
    """Register ``model_uri`` under ``name`` with its checksum tag; return the new version.

    With ``make_champion`` the alias moves to the new version (see :func:`promote`); without it
    the version is registered as a challenger and the alias stays where it was.
    """
    run_id = model_uri.split("/")[1]
    checksum = MlflowClient().get_run(run_id).data.tags.get(CHECKSUM_TAG)
    result = mlflow.register_model(model_uri, name, tags={CHECKSUM_TAG: checksum} if checksum else None)
    version = str(result.version)
    if alias and make_champion:
        promote(name, version, alias)
    else:
        log.info("registered %s version %s (not promoted; @%s unchanged)", name, version, alias)
    return version


def promote(name: str, version: str | int, alias: str) -> str | None:
    """Point ``alias`` at ``version``; the version it leaves is kept as ``<alias>-previous`` and
    recorded on the new version's ``promoted_from`` tag, so a promotion can be undone by
    promoting that version again. Returns the previous version, if any."""
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    version = str(version)
    try:
        previous = str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        previous = None
    client.get_model_version(name, version)  # fails clearly when the version does not exist
    if previous and previous != version:
        client.set_registered_model_alias(name, alias + PREVIOUS_SUFFIX, previous)
        client.set_model_version_tag(name, version, "promoted_from", previous)
    client.set_registered_model_alias(name, alias, version)
    log.info("%s@%s -> version %s (was %s)", name, alias, version, previous or "unset")
    return previous


@dataclass(frozen=True)
class LoadedModel:
    """A registered model version, verified against its checksum and loaded for Spark."""

    model: Any
    name: str
    version: str
    run_id: str
    input_columns: list[str]
    checksum: str


def load_registered_model(name: str, alias: str | None = None, version: int | str | None = None) -> LoadedModel:
    """Download ``models:/name/version`` (or ``@alias``), verify its SHA-256 against the tag set
    at registration, and load it with ``mlflow.spark``. Raises ModelMismatchError when the
    version does not exist or its files differ from what was logged."""
    import mlflow.spark
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model
    from pyspark.ml import PipelineModel

    client = MlflowClient()
    ref = f"{name}/{version}" if version is not None else f"{name}@{alias}"
    try:
        mv = (
            client.get_model_version(name, str(version))
            if version is not None
            else (client.get_model_version_by_alias(name, alias))
        )
    except MlflowException as exc:
        raise ModelNotFoundError(
            f"registered model '{ref}' not found in {redact(mlflow.get_tracking_uri())}: {str(exc).splitlines()[0]}; "
            "train one with jobs/train_segments.py or set scoring.model_version"
        ) from None
    expected = (mv.tags or {}).get(CHECKSUM_TAG)
    if not expected:
        raise ModelMismatchError(f"model '{name}' version {mv.version} has no {CHECKSUM_TAG} tag; retrain it")
    connect = _connect_outside_databricks()  # the Connect server reads the model: download where it sees it
    local = Path(tempfile.mkdtemp(prefix="segmentation-model-", dir=shared_tmpdir() if connect else None))
    try:  # every stage's files are read as the model loads, so the copy goes afterwards
        local.chmod(0o755)  # a Connect server may run as another user
        path = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{mv.version}", dst_path=str(local))
        actual = directory_checksum(path)
        if actual != expected:
            raise ModelMismatchError(
                f"model '{name}' version {mv.version}: files have sha256 {actual[:12]}..., "
                f"registered {expected[:12]}...; the stored model was changed or corrupted, refusing to score"
            )
        signature = Model.load(path).signature
        columns = signature.inputs.input_names() if signature is not None else []
        model = PipelineModel.load(str(Path(path) / "sparkml")) if connect else mlflow.spark.load_model(path)
    finally:
        shutil.rmtree(local, ignore_errors=True)
    return LoadedModel(model, name, str(mv.version), mv.run_id, list(columns), actual)


def package_version() -> str:
    try:
        return version("customer-segmentation")
    except PackageNotFoundError:
        return "unknown"


def environment_tags() -> dict[str, str]:
    tags = {"code_version": code_version() or "unknown", "package_version": package_version()}
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        tags["databricks_runtime"] = os.environ["DATABRICKS_RUNTIME_VERSION"]
    return tags


def registered_model(name: str, alias: str) -> LoadedModel | None:
    """The verified model behind ``models:/name@alias``, or None when no version has that alias."""
    try:
        return load_registered_model(name, alias=alias)
    except ModelNotFoundError:
        return None


def run_tags(run_id: str) -> dict[str, str]:
    return dict(MlflowClient().get_run(run_id).data.tags)


def child_runs(run_id: str) -> pd.DataFrame:
    """The nested runs of a run (``mlflow.search_runs`` columns: ``tags.algorithm``, ``metrics.silhouette``...)."""
    experiment_id = MlflowClient().get_run(run_id).info.experiment_id
    return mlflow.search_runs(experiment_ids=[experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'")


def run_model_version(name: str, run_id: str) -> str:
    """The version of registered model ``name`` logged by ``run_id``; the run id for an unregistered run
    (the key its assignments and profiles are written under)."""
    versions = [v for v in MlflowClient().search_model_versions(f"name = '{name}'") if v.run_id == run_id]
    return str(min(int(v.version) for v in versions)) if versions else run_id


def load_run_text(run_id: str, artifact_file: str) -> str:
    return mlflow.artifacts.load_text(f"runs:/{run_id}/{artifact_file}")


def load_run_dict(run_id: str, artifact_file: str) -> dict[str, Any] | None:
    """A JSON artifact of a run, or None when the run has no such artifact."""
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/{artifact_file}")
    except (MlflowException, OSError):
        return None


# --------------------------------------------------------------------------- CLV model (pyfunc)

_CLV_SCORER_FILE = "clv_model.json"


class ClvPythonModel(PythonModel):
    """The fitted BG/NBD + Gamma-Gamma parameters as a pyfunc: scores a pandas frame (or a Spark
    DataFrame) of frequency, recency, T (days) and monetary_value with p_alive,
    expected_purchases, expected_avg_value and clv (see segmentation.clv)."""

    def __init__(self, model: dict[str, Any]) -> None:
        self.model = model

    # No type hints on predict: MLflow would read them as a schema and warn; the signature is logged.
    def predict(self, context, model_input, params=None):
        from segmentation import clv

        fitted = clv.ClvModel.from_dict(self.model)
        if hasattr(model_input, "sparkSession"):  # a Spark DataFrame: score in Spark, keep its other columns
            keys = tuple(c for c in model_input.columns if c not in clv.INPUT_COLUMNS)
            return clv.score(model_input, fitted, keys=keys)
        return clv.score_pandas(fitted, pd.DataFrame(model_input))


def log_clv_model(
    model: dict[str, Any], input_example: pd.DataFrame, output_example: pd.DataFrame, name: str = "model"
) -> str:
    """Log the CLV parameters (``segmentation.clv.ClvModel.as_dict()``) as a pyfunc with signature,
    input example, pinned requirements and the ``segmentation`` package; keep the SHA-256 of the
    logged files as the run's ``model_sha256`` tag (as :func:`log_spark_model` does). Returns the
    ``runs:/`` URI of the model."""
    import mlflow.pyfunc

    signature = infer_signature(input_example, output_example)
    mlflow.pyfunc.log_model(
        name=name,
        python_model=ClvPythonModel(model),
        signature=signature,
        input_example=input_example,
        pip_requirements=[*model_pip_requirements(), f"scipy=={version('scipy')}"],
        code_paths=[str(PACKAGE_ROOT)],
    )
    mlflow.log_dict(model, _CLV_SCORER_FILE)
    uri = f"runs:/{mlflow.active_run().info.run_id}/{name}"
    with tempfile.TemporaryDirectory() as tmp:
        checksum = directory_checksum(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
    mlflow.set_tag(CHECKSUM_TAG, checksum)
    log.info("logged CLV model %s (sha256 %s)", uri, checksum[:12])
    return uri
