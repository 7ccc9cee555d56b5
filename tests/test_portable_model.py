"""The registered model is made of Spark's built-in stages, so it loads where this package is not
installed; a model saved before, with the pure-Python stages, still scores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import mlflow
import pytest
from conftest import SHORT_LIVED_JVM, legacy_preprocessing, make_config
from pyspark.ml import PipelineModel
from pyspark.ml.clustering import KMeans

from segmentation import tracking
from segmentation.config import TrainingConfig
from segmentation.identity import IdentityMapping, SegmentRelabeler
from segmentation.preprocessing import SignedLog1p, fit_preprocessing
from segmentation.scoring_pipeline import score
from segmentation.training_stages import assemble_model

COLUMNS = ["net_spend", "n_purchases", "return_rate", "trend"]
SCHEMA = "customer_id STRING, net_spend DOUBLE, n_purchases BIGINT, return_rate DOUBLE, trend DOUBLE"
MAPPING = [4, 2, 9]  # cluster index -> stable segment id

# Runs under `python -I -S`: no site-packages .pth files (so not the editable install of this
# checkout), no PYTHON* variables, no working directory on sys.path; pyspark comes from argv[1].
LOADER = """
import json, sys
sys.path.append(sys.argv[1])
try:
    import segmentation
except ModuleNotFoundError:
    pass
else:
    raise SystemExit(f"segmentation is importable from {segmentation.__file__}")
from pyspark.ml import PipelineModel
from pyspark.sql import SparkSession
spark = (SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false")
         .config("spark.sql.shuffle.partitions", "1")
         .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1")  # a short JVM: about 30% faster
         .getOrCreate())
rows = PipelineModel.load(sys.argv[2]).transform(spark.read.parquet(sys.argv[3])).collect()
print(json.dumps({r.customer_id: r.prediction for r in rows}))
spark.stop()
"""


@pytest.fixture(scope="module")
def features(spark):
    """Three groups of customers far apart, with a zero and a negative spend and single purchases."""
    rows = []
    for group, (spend, purchases) in enumerate([(0.0, 1), (150.0, 6), (4000.0, 40)]):
        for i in range(8):
            rows.append((f"g{group}-{i}", spend * (1 + i / 20) - (5.0 if i == 7 else 0.0), purchases + i % 2,
                         0.1 * group + i / 100, (i % 3 - 1) / 2))  # fmt: skip
    return spark.createDataFrame(rows, SCHEMA)


def _log(model: PipelineModel, features, cfg) -> str:
    """Log ``model`` as the training run does (``tracking.log_spark_model``); returns its ``runs:/`` URI."""
    tracking.configure(cfg.mlflow)
    example = features.select(*COLUMNS).limit(5).toPandas()
    with mlflow.start_run():
        return tracking.log_spark_model(model, example, model.transform(features.limit(5)).select("prediction")
                                        .toPandas())  # fmt: skip


def test_the_logged_model_loads_and_scores_with_pyspark_alone(spark, features, tmp_path):
    preprocessing = fit_preprocessing(features, COLUMNS, TrainingConfig())
    clusters = KMeans(k=3, seed=1, predictionCol="cluster").fit(preprocessing.transform(features))
    model = assemble_model(preprocessing, clusters, IdentityMapping(cluster_to_segment=MAPPING))
    uri = _log(model, features, make_config(tmp_path, **{"mlflow.experiment": "portable"}))
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp_path / "downloaded")))
    assert not (local / "code").exists()  # no copy of this package rides along
    stages = [json.loads(p.read_text())["class"] for p in (local / "sparkml" / "stages").glob("*/metadata/part-*")]
    assert len(stages) == len(model.stages) and all(c.startswith("org.apache.spark.ml.") for c in stages), stages
    features.write.parquet(str(tmp_path / "input"))
    command = [sys.executable, "-I", "-S", "-c", LOADER, sysconfig.get_paths()["purelib"], str(local / "sparkml"),
               str(tmp_path / "input")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600,
                          env={**os.environ, **SHORT_LIVED_JVM})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    ours = {r.customer_id: r.prediction for r in model.transform(features).collect()}
    assert theirs == ours
    assert {ours[f"g{g}-0"] for g in range(3)} == set(map(float, MAPPING))  # three groups, three segments


def test_a_model_saved_with_the_old_python_stages_still_scores_through_the_registry(
    spark, features, tmp_path, monkeypatch
):
    preprocessing = legacy_preprocessing(COLUMNS, TrainingConfig()).fit(features)
    clusters = KMeans(k=3, seed=1, predictionCol="cluster").fit(preprocessing.transform(features))
    legacy = PipelineModel(stages=[*preprocessing.stages, clusters, SegmentRelabeler(mapping=MAPPING)])
    app = make_config(tmp_path, **{"mlflow.experiment": "legacy"})
    tracking.register_model(_log(legacy, features, app), "legacy-segments", "champion")

    # The loader downloads into the temporary folder; one of this test's own, as the other test
    # process loads models into the shared /tmp at the same time (a fresh clone's make test of
    # 2026-12-04 saw its copy appear and go).
    own_tmp = tmp_path / "tmp"
    own_tmp.mkdir()
    with monkeypatch.context() as patched:
        patched.setattr(tempfile, "tempdir", str(own_tmp))
        loaded = tracking.load_registered_model("legacy-segments", alias="champion")  # the scoring job's loader
    assert not list(own_tmp.glob("segmentation-model-*"))  # its download is gone
    assert isinstance(loaded.model.stages[0], SignedLog1p) and isinstance(loaded.model.stages[-1], SegmentRelabeler)
    names = {s: f"name {s}" for s in MAPPING}
    scored = {r.customer_id: (r.segment, r.segment_name) for r in score(features, loaded, names).collect()}
    expected = {r.customer_id: int(r.prediction) for r in legacy.transform(features).collect()}
    assert scored == {c: (s, f"name {s}") for c, s in expected.items()}
    assert {expected[f"g{g}-0"] for g in range(3)} == set(MAPPING)  # three groups, three segments
