"""Logging a Spark model to MLflow with explicit pip requirements against letting MLflow infer them.

    python benchmarks/pip_requirements.py [--rows 20000] [--repeats 2]

Fits one small pipeline (assembler + KMeans) and logs it ``--repeats`` times each way to a
fresh SQLite store: once with ``tracking.model_pip_requirements()`` (what the training job
does) and once with no requirements, so MLflow infers them by loading the model in a
subprocess. Writes ``pip_requirements.json``: seconds per log and the requirements each way.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import mlflow.spark
from pyspark.ml import Pipeline
from pyspark.ml.clustering import KMeans
from pyspark.ml.feature import VectorAssembler
from pyspark.sql import functions as F
from run import bench_settings

from segmentation.spark import get_spark
from segmentation.tracking import model_pip_requirements


def requirements_of(run_id: str) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model/requirements.txt", dst_path=tmp)
        return Path(path).read_text().split()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    spark = get_spark(bench_settings("4g"))
    data = spark.range(args.rows).select((F.col("id") % 97).cast("double").alias("a"), F.rand(1).alias("b"))
    model = Pipeline(stages=[VectorAssembler(inputCols=["a", "b"], outputCol="features"), KMeans(k=4, seed=1)]).fit(
        data
    )
    result: dict = {"rows": args.rows, "explicit": [], "inferred": []}
    with tempfile.TemporaryDirectory() as store:
        mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
        mlflow.set_experiment("pip-requirements")
        for _ in range(args.repeats):
            for way, requirements in (("explicit", model_pip_requirements()), ("inferred", None)):
                with mlflow.start_run() as run:
                    start = time.perf_counter()
                    mlflow.spark.log_model(model, artifact_path="model", pip_requirements=requirements)
                    result[way].append(round(time.perf_counter() - start, 2))
                result[f"{way}_requirements"] = requirements_of(run.info.run_id)
                print(json.dumps({way: result[way][-1]}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pip_requirements.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
