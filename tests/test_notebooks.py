"""Every notebook in notebooks/ runs end to end as a script, in order, against small demo data.

The notebooks get the test session as their ``spark`` global (as on Databricks) and their
parameters through ``NOTEBOOK_PARAMS`` (where Databricks would have widgets).
"""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
import yaml

from segmentation import notebook
from segmentation.config import load_config
from segmentation.generator import generate
from segmentation.io import write_table

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.py"))


def test_notebooks_are_databricks_source_files():
    assert [p.name for p in NOTEBOOKS] == [
        "01_explore_features.py", "02_train_and_compare.py", "03_inspect_and_name_segments.py", "04_score.py",
    ]  # fmt: skip
    for path in NOTEBOOKS:
        text = path.read_text()
        assert text.startswith("# Databricks notebook source\n")
        assert "# COMMAND ----------" in text and "# MAGIC %md" in text
        assert "def " not in text and "class " not in text  # no logic of their own


def test_every_notebook_runs_in_order_on_demo_data(spark, tmp_path):
    data = tmp_path / "data"
    overlay = {
        "input": {"transactions": {"path": str(data / "tx")}, "customers": {"path": str(data / "customers")}},
        "features": {"output": {"path": str(data / "features")}, "quarantine": {"path": str(data / "q")},
                     "quality": {"path": str(data / "quality")}},
        "generator": {"transactions": {"path": str(data / "tx")}, "customers": {"path": str(data / "customers")},
                      "ground_truth": {"path": str(data / "truth")}},
        "training": {"assignments": {"path": str(data / "assignments")}, "ground_truth": {"path": str(data / "truth")}},
        "profiles": {"output": {"path": str(data / "profiles")}, "report_dir": str(tmp_path / "reports")},
        "scoring": {"current": {"path": str(data / "current")}, "history": {"path": str(data / "history")}},
        "clv": {"output": {"path": str(data / "clv")}},  # not the demo's data/customer_clv
        "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "artifact_location": str(tmp_path / "art"),
                   "experiment": "notebooks"},
    }  # fmt: skip
    config_file = tmp_path / "notebooks.yaml"
    config_file.write_text(yaml.safe_dump(overlay))
    cfg = load_config([Path(__file__).resolve().parent.parent / "conf" / "base.yaml", config_file],
                      ["generator.n_transactions=20000", "generator.n_customers=800"])  # fmt: skip
    tables = generate(spark, cfg.generator)
    for name in ("transactions", "customers", "ground_truth"):
        write_table(tables[name], getattr(cfg.generator, name))
    common = {"env": "local", "config": str(config_file), "set": "spark.master=local[2]"}
    params = {
        "01_explore_features.py": {**common, "build": "true"},
        "02_train_and_compare.py": {**common, "k_min": "2", "k_max": "3", "algorithms": "kmeans,bisecting_kmeans"},
        "03_inspect_and_name_segments.py": common,
        "04_score.py": common,
    }
    ran = {}  # each notebook's globals after it ran: what an analyst would look at in its cells
    for path in NOTEBOOKS:
        ran[path.stem[:2]] = runpy.run_path(str(path), init_globals={"spark": spark,
                                                                     "NOTEBOOK_PARAMS": params[path.name]})  # fmt: skip
    explore, train, inspect, score = (ran[n] for n in ("01", "02", "03", "04"))
    customers = explore["snapshot"].count()
    assert str(explore["report"].as_of) == str(explore["newest"]) and explore["report"].customers == customers > 0

    result = train["result"]
    assert sorted((r["tags.algorithm"], r["tags.k"]) for _, r in train["children"].iterrows()) == [
        ("bisecting_kmeans", "2"),
        ("bisecting_kmeans", "3"),
        ("kmeans", "2"),
        ("kmeans", "3"),
    ]
    assert train["children"]["metrics.silhouette"].notna().all()
    assert train["rationale"]["champion"]["algorithm"] == result.champion
    assert train["rationale"]["champion"]["k"] == result.k in (2, 3)

    assert inspect["run_id"] == result.run_id and inspect["model_version"] == result.model_version
    profile = inspect["profiles"].toPandas()
    assert len(profile) == result.k and profile["customers"].sum() == customers
    assert 0 < inspect["rules"]["fidelity"] <= 1 and inspect["html"].lstrip().lower().startswith("<!doctype html")

    scored = score["result"]
    assert (scored.customers, scored.model_version, scored.as_of) == (customers, result.model_version, result.as_of)
    current = spark.read.format("delta").load(str(data / "current"))
    assert current.count() == customers and sum(scored.segment_counts.values()) == customers
    assert any((tmp_path / "reports").glob("*.html"))


def test_notebook_parameters_use_widgets_when_databricks_provides_them():
    class Widgets:
        def __init__(self):
            self.values = {}

        def text(self, name, default):
            self.values.setdefault(name, default)

        def get(self, name):
            return self.values[name]

    class DBUtils:
        widgets = Widgets()

    dbutils = DBUtils()
    dbutils.widgets.values["k_max"] = "6"  # set by the user in the widget bar
    assert notebook.params({"dbutils": dbutils}, {"k_min": "2", "k_max": "8"}) == {"k_min": "2", "k_max": "6"}
    with pytest.raises(KeyError, match="unknown notebook parameter"):
        notebook.params({"NOTEBOOK_PARAMS": {"nope": "1"}}, {"k_min": "2"})
