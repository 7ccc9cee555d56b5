"""Runs the four notebooks in order in this process with no ``spark`` handed in: each notebook's
``get_spark`` builds a Spark Connect session from SPARK_REMOTE, as on Databricks serverless. Prints
what an analyst reads off them, as JSON, for ``tests/test_connect.py``.

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
    result, scored = train["result"], score["result"]
    profiles = inspect["profiles"].toPandas()
    return {
        "session": type(score["spark"]).__module__,
        "customers": explore["snapshot"].count(),
        "explored": [str(explore["report"].as_of), str(explore["newest"]), explore["report"].customers],
        "champion": [result.champion, result.k, result.model_version, result.run_id],
        "children": sorted([r["tags.algorithm"], r["tags.k"]] for _, r in train["children"].iterrows()),
        "silhouettes": bool(train["children"]["metrics.silhouette"].notna().all()),
        "rationale": [train["rationale"]["champion"]["algorithm"], train["rationale"]["champion"]["k"]],
        "inspected": [inspect["run_id"], inspect["model_version"]],
        "profiles": len(profiles),
        "profiled": int(profiles["customers"].sum()),
        "fidelity": inspect["rules"]["fidelity"],
        "report": inspect["html"].lstrip().lower()[:15],
        "scored": [scored.customers, scored.model_version, str(scored.as_of), sum(scored.segment_counts.values())],
        "as_of": str(result.as_of),
    }


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
