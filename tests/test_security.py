"""Secrets stay out of MLflow and out of the repository.

* A training run configured with credentials (reader options, a password in a URI) is
  scanned whole afterwards, against the real SQLite store and artifact folder: every param,
  tag and metric name of the parent and child runs, every artifact file, the registered
  version, and the raw bytes of the store.
* The files git tracks (and untracked files that are not ignored, i.e. what the next commit
  could add) are scanned for committed credentials with Yelp's ``detect-secrets`` (offline:
  its network verification is not enabled). A false positive is silenced on its line with
  ``# pragma: allowlist secret``.

The secrets are drawn at run time, so this file holds none for the scan to find.
"""

from __future__ import annotations

import random
import secrets
import string
import subprocess
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from conftest import make_config, mlflow_state_restored
from mlflow.tracking import MlflowClient

from segmentation import tracking
from segmentation.feature_pipeline import run_feature_pipeline
from segmentation.generator import generate
from segmentation.io import write_table
from segmentation.training_pipeline import run_training

ROOT = Path(__file__).resolve().parent.parent


def _secret(label: str) -> str:
    return f"{label}-{secrets.token_hex(12)}"


# --------------------------------------------------------------------------- secrets and MLflow


@pytest.fixture(scope="module")
def secret_config(spark, tmp_path_factory):
    """Small generated data and a config that carries credentials where users put them."""
    root = tmp_path_factory.mktemp("security")
    drawn = {"option": _secret("pw"), "account_key": _secret("key"), "uri": _secret("uri")}
    sets = {
        "generator.n_transactions": 6000, "generator.n_customers": 300, "input.customers.enabled": "false",
        "training.ground_truth.enabled": "false", "training.algorithms": "[kmeans]",
        "training.k_min": 2, "training.k_max": 3, "training.selection.stability_seeds": 1,
        "mlflow.experiment": "security",
        # A reader option of the transactions, and a storage key that Delta hands to Hadoop when
        # the training job reads the features with these options.
        "input.transactions.options.password": drawn["option"],
        "features.output.options.fs.azure.account.key.segments.dfs.core.windows.net": drawn["account_key"],
    }  # fmt: skip
    with mlflow_state_restored():
        cfg = make_config(root, **sets)
        assert cfg.input.transactions.options["password"] == drawn["option"]
        tables = generate(spark, cfg.generator)
        write_table(tables["transactions"], cfg.features.output.model_copy(update={"path": str(root / "tx")}))
        run_feature_pipeline(spark, cfg)
        yield root, sets, drawn


def _everything_logged(run_ids: list[str], dst: Path) -> tuple[str, set[str], list[bytes]]:
    """The text of every param, tag and metric name of ``run_ids``, the artifact paths, and
    the bytes of every artifact file (downloaded from the store as a reader would)."""
    client = MlflowClient()
    text, paths, blobs = [], set(), []
    for run_id in run_ids:
        run = client.get_run(run_id)
        text += [run.info.run_name or "", *run.data.metrics]
        text += [f"{k}={v}" for k, v in {**run.data.params, **run.data.tags}.items()]
        local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(dst / run_id)))
        for file in (p for p in local.rglob("*") if p.is_file()):
            paths.add(file.relative_to(local).as_posix())
            blobs.append(file.read_bytes())
    return "\n".join(text), paths, blobs


def _raw_store(root: Path) -> list[bytes]:
    """The SQLite store and every file of the artifact folder, byte for byte."""
    files = [root / "mlflow.db", *(p for p in (root / "artifacts").rglob("*") if p.is_file())]
    return [file.read_bytes() for file in files]


def test_secrets_in_the_config_reach_no_param_tag_or_artifact(spark, secret_config, tmp_path):
    root, sets, drawn = secret_config
    cfg = make_config(root, **sets)
    result = run_training(spark, cfg)
    client = MlflowClient()
    experiment_id = client.get_experiment_by_name("security").experiment_id
    children = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{result.run_id}'")
    assert len(children) == 2  # kmeans k=2 and k=3
    text, paths, blobs = _everything_logged([result.run_id, *(c.info.run_id for c in children)], tmp_path)
    version = client.get_model_version(cfg.mlflow.registered_model, result.model_version)
    text += "\n" + repr((version.tags, version.description, version.source))
    raw = _raw_store(root)

    # The scan sees what was logged: the input table's path, the model, the report.
    assert f"input_table={cfg.features.output.path}" in text
    assert {"model/MLmodel", "report/segment_report.html", "selection/chosen_k_rationale.json"} <= paths
    for name, value in drawn.items():
        assert value not in text, name
        assert not any(value.encode() in blob for blob in blobs), name
        assert not any(value.encode() in blob for blob in raw), name


def test_a_password_in_a_uri_is_redacted_from_the_failed_run(spark, secret_config):
    """Hadoop repeats a path in its error messages, credentials included; the run's ``error``
    tag and ``error.txt`` keep the message with the password replaced by ``***``."""
    root, sets, drawn = secret_config
    quality = f"file://etl:{drawn['uri']}@{root}/quality"  # user information, as Hadoop's ftp and s3a take it
    cfg = make_config(root, **{**sets, "features.quality.path": quality, "mlflow.experiment": "security-failed"})
    with pytest.raises(Exception, match="Wrong FS") as raised:  # noqa: PT011 - Spark's IllegalArgumentException
        run_training(spark, cfg)
    assert drawn["uri"] in str(raised.value)  # the leak this guards against is real
    client = MlflowClient()
    experiment_id = client.get_experiment_by_name("security-failed").experiment_id
    (run,) = client.search_runs([experiment_id])
    error_txt = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/error.txt")
    raw = _raw_store(root)

    assert run.info.status == "FAILED"
    redacted = f"file://etl:***@{root}/quality"
    assert "Wrong FS" in run.data.tags["error"] and redacted in run.data.tags["error"]
    assert "Traceback" in error_txt and redacted in error_txt
    assert drawn["uri"] not in repr((run.data.params, run.data.tags)) and drawn["uri"] not in error_txt
    assert not any(drawn["uri"].encode() in blob for blob in raw)


def test_every_text_sent_to_mlflow_is_redacted(tmp_path):
    """Tags, params, child runs, text, JSON and CSV artifacts all pass through one redaction;
    URIs without a password (``abfss://container@account...``) stay as they are."""
    password = _secret("pw")
    leaky = f"s3a://AKIDEXAMPLE:{password}@bucket/features"
    harmless = "abfss://container@account.dfs.core.windows.net/features"
    from segmentation.config import MlflowConfig

    tracking.configure(MlflowConfig(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_location=str(tmp_path / "artifacts"),
        experiment="redaction",
    ))  # fmt: skip
    with tracking.tracked_run("redaction", tags={"input_table": leaky, "other_table": harmless}) as run:
        tracking.log_params({"source": leaky})
        tracking.set_tags({"source": leaky})
        tracking.child_run("child", params={"source": leaky}, metrics={"m": 1.0}, tags={"source": leaky})
        tracking.log_text(f"read {leaky}", "notes/text.txt")
        tracking.log_dict({"source": leaky, "nested": [{leaky: leaky}]}, "notes/data.json")
        tracking.log_table(pd.DataFrame({"source": [leaky, harmless]}), "notes/table.csv")
    client = MlflowClient()
    (child,) = client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
    text, paths, blobs = _everything_logged([run.info.run_id, child.info.run_id], tmp_path / "download")

    assert {"notes/text.txt", "notes/data.json", "notes/table.csv"} <= paths
    assert password not in text and not any(password.encode() in blob for blob in blobs)
    assert "input_table=s3a://AKIDEXAMPLE:***@bucket/features" in text
    assert f"other_table={harmless}" in text
    assert all(b"AKIDEXAMPLE:***@bucket" in blob for blob in blobs)
    assert any(harmless.encode() in blob for blob in blobs)


# --------------------------------------------------------------------------- committed credentials


def _credential_findings(files: list[str], root: Path) -> dict[str, list[str]]:
    """detect-secrets' findings (file -> secret types) with all its plugins and default filters."""
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    found = SecretsCollection(root=str(root))
    with default_settings():
        for file in files:
            found.scan_file(str(file))
    return {name: sorted({s.type for s in found[name]}) for name in found.files}


def _repository_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split("\0")  # fmt: skip
    return sorted({name for name in listed if name and (ROOT / name).is_file()})


def test_the_credential_scan_finds_planted_credentials(tmp_path):
    """The scanner and its settings are not blind: it finds credentials planted in a config."""
    key_id = "AKIA" + "".join(random.choices(string.ascii_uppercase + string.digits, k=16))
    planted = tmp_path / "conf.yaml"
    planted.write_text(
        f"aws_access_key_id: {key_id}\n"
        f"password: {secrets.token_hex(16)}\n"
        + "-----BEGIN RSA " + "PRIVATE KEY-----\n"
    )  # fmt: skip
    clean = tmp_path / "clean.yaml"
    clean.write_text("mlflow:\n  tracking_uri: sqlite:///mlflow.db\n  experiment: customer-segmentation\n")
    findings = _credential_findings(["conf.yaml", "clean.yaml"], tmp_path)
    assert set(findings) == {"conf.yaml"}
    assert {"AWS Access Key", "Secret Keyword", "Private Key"} <= set(findings["conf.yaml"])


def test_no_credentials_are_committed():
    files = _repository_files()
    assert {"README.md", "setup.py", "segmentation/tracking.py", "conf/base.yaml"} <= set(files)
    assert _credential_findings(files, ROOT) == {}
