"""What the Databricks notebooks in ``notebooks/`` share: parameters and display.

On Databricks a notebook's globals hold ``dbutils`` and ``display``; parameters are
text widgets (created with their defaults, read back as strings). Anywhere else
(a local run, the test suite) there are no widgets: the defaults apply, updated
by a ``NOTEBOOK_PARAMS`` dict in the notebook's globals when the caller sets one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from segmentation.config import AppConfig, default_config_files, load_config

__all__ = ["config", "params", "show"]


def params(notebook_globals: Mapping[str, Any], defaults: Mapping[str, str]) -> dict[str, str]:
    """The notebook's parameters: widget values on Databricks, else the defaults (+ ``NOTEBOOK_PARAMS``)."""
    dbutils = notebook_globals.get("dbutils")
    if dbutils is not None:
        for name, default in defaults.items():
            dbutils.widgets.text(name, str(default))
        return {name: dbutils.widgets.get(name) for name in defaults}
    given = dict(notebook_globals.get("NOTEBOOK_PARAMS") or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise KeyError(f"unknown notebook parameter(s) {unknown}; expected {sorted(defaults)}")
    return {**{k: str(v) for k, v in defaults.items()}, **{k: str(v) for k, v in given.items()}}


def config(p: Mapping[str, str]) -> AppConfig:
    """Config from the ``env`` parameter's files, an optional ``config`` YAML file and ``set`` (k=v;k=v)."""
    files = default_config_files(p.get("env") or "local")
    if p.get("config"):
        files = [*files, p["config"]]
    overrides = [s.strip() for s in (p.get("set") or "").split(";") if s.strip()]
    return load_config(files, overrides)


def show(notebook_globals: Mapping[str, Any], data: Any, rows: int = 20) -> None:
    """``display`` on Databricks; a printed table elsewhere (Spark or pandas DataFrame)."""
    display = notebook_globals.get("display")
    if display is not None:
        display(data)
    elif hasattr(data, "toPandas"):
        print(data.limit(rows).toPandas().to_string())
    else:
        print(data.head(rows).to_string() if hasattr(data, "head") else data)
