"""Runs the four notebooks in order in this process, as ``tests/test_notebooks.py`` does, but with no
``spark`` handed in: each notebook's ``get_spark`` builds a Spark Connect session from SPARK_REMOTE,
as on Databricks serverless. Prints what an analyst reads off them, as JSON, for ``tests/test_connect.py``.

Usage: python tests/connect_notebooks.py '<{"01_explore_features.py": {...}, ...} as JSON>'
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.py"))


def main(params: dict[str, dict[str, str]]) -> dict:
    ran = {p.stem[:2]: runpy.run_path(str(p), init_globals={"NOTEBOOK_PARAMS": params[p.name]}) for p in NOTEBOOKS}
    explore, train, inspect, score = (ran[n] for n in ("01", "02", "03", "04"))
    return {
        "session": type(score["spark"]).__module__,
        "customers": explore["snapshot"].count(),
        "champion": [train["result"].champion, train["result"].k, train["result"].model_version],
        "children": len(train["children"]),
        "profiled": int(inspect["profiles"].toPandas()["customers"].sum()),
        "report": inspect["html"].lstrip().lower()[:15],
        "scored": [score["result"].customers, score["result"].model_version],
    }


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
