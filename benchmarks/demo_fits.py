"""What the benchmarks run after ``make demo`` share: the demo's customers prepared as the training
job does, joined to their planted persona, and one fit measured against a reference fit.

Used by ``restarts.py``, ``bisecting_iterations.py`` and ``gmm_tolerance.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame

from segmentation.config import SparkConfig, TrainingConfig, default_config_files, load_config
from segmentation.evaluation import adjusted_rand_index, evaluate_clustering
from segmentation.io import read_table
from segmentation.snapshots import persisting, read_snapshot
from segmentation.spark import get_spark
from segmentation.training_stages import prepare


@dataclass
class Demo:
    """Every demo customer's prepared ``features`` and planted persona (``label``), the training
    config that prepared them (its sample covers everyone) and the result file's contents."""

    tcfg: TrainingConfig
    data: DataFrame
    label: str
    result: dict[str, Any] = field(default_factory=dict)

    def record(self, row: dict[str, Any], out: Path, name: str) -> None:
        """Print ``row`` and rewrite ``out/name`` with it added, so a stopped run keeps its rows."""
        print(json.dumps(row), flush=True)
        self.result["fits"].append(row)
        out.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(json.dumps(self.result, indent=1))


@contextmanager
def demo_customers() -> Iterator[Demo]:
    """The newest demo snapshot (``data/features``, ``data/ground_truth``, the local configuration)."""
    cfg = load_config(default_config_files("local"), ["input.customers.enabled=true"])
    spark = get_spark(SparkConfig(master="local[*]", driver_memory="4g", ui_enabled=False, log_level="ERROR"))
    snapshot, as_of = read_snapshot(spark, cfg.features.output, None)
    label = cfg.training.ground_truth.label_column
    truth = read_table(spark, cfg.training.ground_truth, columns=["customer_id", label])
    everyone = cfg.training.selection.model_copy(update={"sample_size": 1 << 62})
    tcfg = cfg.training.model_copy(update={"selection": everyone})
    with persisting() as persist:
        prepared = prepare(snapshot, as_of, tcfg, persist)
        data = persist(prepared.vectors.join(truth, "customer_id"))
        result = {"date": time.strftime("%Y-%m-%d"), "as_of": as_of, "customers": data.count(), "fits": []}
        yield Demo(tcfg, data, label, result)
    spark.stop()


def measured_fit(
    demo: Demo, estimator: Any, algorithm: str, column: str, reference: tuple[DataFrame, str] | None
) -> tuple[Any, DataFrame, dict[str, float], dict[str, Any]]:
    """Fit ``estimator`` on every demo customer: (model, its cached predictions in ``column``, its
    metrics, a row with the seconds, silhouette and the adjusted Rand index against the
    ``reference`` predictions (1.0 without one) and against the personas). The caller unpersists
    the predictions."""
    started = time.perf_counter()
    model = estimator.fit(demo.data)
    seconds = time.perf_counter() - started
    predictions = model.transform(demo.data).withColumnRenamed("prediction", column).cache()
    metrics = evaluate_clustering(model, predictions, "features", column, algorithm)
    same = 1.0
    if reference is not None:
        both = predictions.join(reference[0].select("customer_id", reference[1]), "customer_id")
        same = adjusted_rand_index(both, reference[1], column)
    row = {
        "seconds": round(seconds, 2),
        "silhouette": round(metrics["silhouette"], 4),
        "ari_vs_reference": round(same, 4),
        "ari_vs_personas": round(adjusted_rand_index(predictions, demo.label, column), 4),
    }
    return model, predictions, metrics, row
