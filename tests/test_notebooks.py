"""The notebooks' form and parameters. They run end to end, in order, once in the suite: over Spark
Connect, as on Databricks serverless (``tests/test_connect.py::test_the_notebooks_run_over_connect``),
with their parameters through ``NOTEBOOK_PARAMS`` where Databricks would have widgets.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from segmentation import notebook

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
