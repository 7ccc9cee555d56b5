"""Submitting the jobs with ``spark-submit`` as users do, twice over the same tables.

The first round runs the README's own spark-submit lines (its "spark-submit on a cluster" block),
the second the default configuration (no ``--env``, no ``--config``) from the same working
directory. Both write the same Delta tables, so the second round replaces each snapshot, deletes
and merges over tables that already exist, which is what every scheduled rerun does.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from pathlib import Path

import pyspark

from segmentation.config import load_config

SPARK_BIN = Path(pyspark.__file__).parent / "bin"
PROJECT = Path(__file__).resolve().parent.parent
README_MARKER = "<!-- tests/test_spark_submit_*.py run these lines -->"
README_MASTER = "spark://127.0.0.1:7177"
README_TRACKING = "http://127.0.0.1:5000"
JOBS = ("generate_transactions", "build_features", "train_segments", "score_customers")

# Set in both rounds so that they compute the same tables: a small data set and k range, one start
# per fit (conf/local.yaml, which the second round reads, asks for three; conf/cluster.yaml for one),
# and the generated customers' attributes, which conf/cluster.yaml joins and `make demo` enables likewise.
SIZES = {
    "generate_transactions": ["generator.n_transactions=20000", "generator.n_customers=800"],
    "build_features": ["input.customers.enabled=true"],
    # The default configuration (conf/local.yaml) splits segments into two levels, with its own broad k
    # range; the cluster rounds compare one flat model with its retrain (two levels: test_hierarchy_*.py).
    "train_segments": [
        "training.algorithms=[kmeans]",
        "training.k_min=2",
        "training.k_max=4",
        "training.restarts=1",
        "training.hierarchy.enabled=false",
    ],
}
# Every table a job reads or writes; the README's lines use conf/cluster.yaml, whose paths are on
# HDFS, so the first round points them at the default configuration's paths (relative to the root).
PATH_KEYS = (
    "input.transactions", "input.customers", "generator.transactions", "generator.customers",
    "generator.ground_truth", "features.output", "features.quarantine", "features.quality",
    "training.assignments", "training.ground_truth", "profiles.output", "scoring.current", "scoring.history",
)  # fmt: skip


def readme_lines() -> dict[str, list[str]]:
    """The README's spark-submit command for each job, as argument lists."""
    text = (PROJECT / "README.md").read_text()
    block = text.split(README_MARKER, 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [shlex.split(c) for c in block.replace("\\\n", " ").splitlines() if c.strip()]
    return {Path(next(a for a in c if a.endswith(".py"))).stem: c for c in commands}


def _default_paths() -> list[str]:
    defaults = load_config([PROJECT / "conf" / "base.yaml"]).model_dump()
    sets = []
    for key in PATH_KEYS:
        section = defaults
        for part in key.split("."):
            section = section[part]
        sets.append(f"{key}.path={section['path']}")  # relative: the jobs run in the test's root
    return sets


def readme_command(job: str, master: str, root: Path, resources: list[str]) -> list[str]:
    """The README's line for ``job``, with this test's master, tracking store and paths."""
    args = readme_lines()[job]
    assert args[0] == "spark-submit" and args[1:3] == ["--master", README_MASTER], args
    script = next(i for i, a in enumerate(args) if a.endswith(".py"))
    tail = [a.replace(README_TRACKING, f"sqlite:///{root / 'mlflow.db'}") for a in args[script + 1 :]]
    sets = [x for s in _default_paths() + SIZES.get(job, []) for x in ("--set", s)]
    return [str(SPARK_BIN / "spark-submit"), "--master", master, *args[3:script], *resources,
            str(PROJECT / args[script]), *tail, *sets]  # fmt: skip


def default_command(job: str, master: str, packages: str, resources: list[str]) -> list[str]:
    """The job with the default configuration: no --env, no --config, paths relative to the cwd."""
    sets = [x for s in SIZES.get(job, []) for x in ("--set", s)]
    return [str(SPARK_BIN / "spark-submit"), "--master", master, "--packages", packages, *resources,
            str(PROJECT / "jobs" / f"{job}.py"), *sets]  # fmt: skip


def submit(command: list[str], root: Path, env: dict[str, str], expect: int = 0) -> subprocess.CompletedProcess:
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=root, timeout=900)
    job = next(Path(a).stem for a in command if a.endswith(".py"))
    print(f"spark-submit {job}: exit {done.returncode} after {time.monotonic() - started:.1f} s")  # with pytest -s
    assert done.returncode == expect, f"{job} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done


def delta_tables(spark, data: Path, drop: tuple[str, ...] = ()) -> dict[str, list[tuple]]:
    """Every Delta table under ``data``, as sorted rows without the columns ``drop``. The training
    tables keep one snapshot per ``as_of`` and model version, and a retrain registers a new version:
    they are listed by version (``segment_assignments@1``) without the version column, so that
    snapshots compare."""
    tables = {}
    for path in sorted(p for p in data.iterdir() if (p / "_delta_log").is_dir()):
        df = spark.read.format("delta").load(str(path)).drop(*drop)
        if path.name in ("segment_assignments", "segment_profiles"):
            for version in sorted(r.model_version for r in df.select("model_version").distinct().collect()):
                rows = df.where(df.model_version == version).drop("model_version").collect()
                tables[f"{path.name}@{version}"] = sorted(tuple(r) for r in rows)
        else:
            tables[path.name] = sorted(tuple(r) for r in df.collect())
    return tables


def retrained(first: dict[str, list[tuple]]) -> dict[str, list[tuple]]:
    """What the tables must be after a second round: the same, plus the retrain's model version 2
    with exactly the snapshot of version 1 (same data, same seed, same segment ids)."""
    return {**first, **{k.replace("@1", "@2"): v for k, v in first.items() if k.endswith("@1")}}


def delta_operations(spark, data: Path, table: str) -> list[str]:
    history = spark.sql(f"DESCRIBE HISTORY delta.`{data / table}`").orderBy("version").collect()
    return [r.operation for r in history]


def log_lines(done: subprocess.CompletedProcess, pattern: str) -> list[str]:
    """The job's log lines: spark-submit merges the Python process's stderr into its own stdout."""
    return [line for line in (done.stdout + done.stderr).splitlines() if re.search(pattern, line)]
