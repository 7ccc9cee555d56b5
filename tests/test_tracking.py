"""segmentation.tracking against a real SQLite store: how the jobs set up the experiment."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from segmentation import tracking
from segmentation.config import MlflowConfig


def _config(tmp_path, experiment: str = "kinds") -> MlflowConfig:
    return MlflowConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_location=str(tmp_path / "a"),
                        experiment=experiment)  # fmt: skip


def test_the_experiment_is_tagged_for_the_model_training_views(tmp_path):
    """A new experiment, one made before the tag existed, and one whose kind a user chose."""
    created = tracking.configure(_config(tmp_path))
    client = MlflowClient()
    assert client.get_experiment(created).tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"

    older = client.create_experiment("made-by-an-older-version")
    assert tracking.EXPERIMENT_KIND_TAG not in client.get_experiment(older).tags
    assert tracking.configure(_config(tmp_path, "made-by-an-older-version")) == older
    assert client.get_experiment(older).tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"

    chosen = client.create_experiment("users-kind", tags={tracking.EXPERIMENT_KIND_TAG: "genai_development"})
    tracking.configure(_config(tmp_path, "users-kind"))
    assert client.get_experiment(chosen).tags[tracking.EXPERIMENT_KIND_TAG] == "genai_development"
