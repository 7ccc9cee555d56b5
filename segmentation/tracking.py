"""Every MLflow call of the project lives here.

The library computes; this module records. A run that raises is ended FAILED
with the error as a tag and an ``error.txt`` artifact, never left RUNNING. A
model is registered and aliased only after it was logged completely.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import Run
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from segmentation.config import MlflowConfig

__all__ = [
    "code_version",
    "configure",
    "child_run",
    "environment_tags",
    "load_run_dict",
    "log_dict",
    "log_figure",
    "log_metrics",
    "log_params",
    "log_spark_model",
    "log_table",
    "log_text",
    "model_pip_requirements",
    "register_model",
    "registered_model",
    "set_tags",
    "tracked_run",
]

log = logging.getLogger(__name__)

PACKAGE_ROOT = Path(__file__).resolve().parent
_PINNED = ("pyspark", "delta-spark", "mlflow", "pandas", "numpy", "pyarrow", "pydantic", "PyYAML")


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
    if cfg.registry_uri:
        mlflow.set_registry_uri(_uri(cfg.registry_uri))
    experiment = mlflow.get_experiment_by_name(cfg.experiment)
    if experiment is None:
        location = _uri(cfg.artifact_location) if cfg.artifact_location else None
        experiment_id = mlflow.create_experiment(cfg.experiment, artifact_location=location)
    else:
        experiment_id = experiment.experiment_id
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
    run = mlflow.start_run(run_name=run_name, nested=nested, tags={k: str(v) for k, v in (tags or {}).items()})
    try:
        yield run
    except BaseException as exc:
        message = f"{type(exc).__name__}: {exc}"
        try:
            mlflow.set_tag("error", message[:5000])
            mlflow.log_text("".join(traceback.format_exception(exc)), "error.txt")
        finally:
            mlflow.end_run(status="FAILED")
        raise
    else:
        mlflow.end_run(status="FINISHED")


def child_run(run_name: str, params: Mapping[str, Any], metrics: Mapping[str, float], tags: Mapping[str, Any]) -> str:
    """One nested run with its params, metrics and tags; returns its run id."""
    with tracked_run(run_name, tags=tags, nested=True) as run:
        mlflow.log_params({k: str(v) for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        return run.info.run_id


def log_params(params: Mapping[str, Any]) -> None:
    mlflow.log_params({k: str(v) for k, v in params.items()})


def log_metrics(metrics: Mapping[str, float]) -> None:
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()})


def set_tags(tags: Mapping[str, Any]) -> None:
    mlflow.set_tags({k: str(v) for k, v in tags.items() if v is not None})


def log_figure(figure: Any, artifact_file: str) -> None:
    mlflow.log_figure(figure, artifact_file)


def log_dict(data: Mapping[str, Any], artifact_file: str) -> None:
    mlflow.log_dict(json.loads(json.dumps(data, default=str)), artifact_file)


def log_text(text: str, artifact_file: str) -> None:
    mlflow.log_text(text, artifact_file)


def log_table(frame: pd.DataFrame, artifact_file: str) -> None:
    """A small pandas table as a CSV artifact (readable in the UI's artifact viewer)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        frame.to_csv(path, index=False)
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


def log_spark_model(model: Any, input_example: pd.DataFrame, output_example: pd.DataFrame, name: str = "model") -> str:
    """Log a fitted Spark ``PipelineModel`` with signature, input example, pinned requirements and
    the ``segmentation`` package (its custom stages must be importable to load the model).

    Returns the ``runs:/`` URI of the logged model.
    """
    import mlflow.spark

    signature = infer_signature(input_example, output_example)
    info = mlflow.spark.log_model(
        model,
        artifact_path=name,
        signature=signature,
        input_example=input_example,
        pip_requirements=model_pip_requirements(),
        code_paths=[str(PACKAGE_ROOT)],
    )
    log.info("logged model %s", info.model_uri)
    return f"runs:/{mlflow.active_run().info.run_id}/{name}"


def register_model(model_uri: str, name: str, alias: str | None) -> str:
    """Register ``model_uri`` under ``name`` and point ``alias`` at the new version; return the version."""
    result = mlflow.register_model(model_uri, name)
    if alias:
        MlflowClient().set_registered_model_alias(name, alias, result.version)
    log.info("registered %s version %s%s", name, result.version, f" as @{alias}" if alias else "")
    return str(result.version)


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


def registered_model(name: str, alias: str) -> tuple[Any, str, str] | None:
    """The Spark model behind ``models:/name@alias`` with its version and run id, or None if there is none."""
    import mlflow.spark
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    model = mlflow.spark.load_model(f"models:/{name}@{alias}")
    return model, str(version.version), version.run_id


def load_run_dict(run_id: str, artifact_file: str) -> dict[str, Any] | None:
    """A JSON artifact of a run, or None when the run has no such artifact."""
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/{artifact_file}")
    except (MlflowException, OSError):
        return None
