"""Crashes, reruns, concurrent runs and task retries against real Delta tables.

The jobs run as separate processes (``python jobs/<job>.py``), as a scheduler starts them:
one is SIGKILLed while its tasks are writing the data files of a Delta commit, two score
the same snapshot at the same time, one runs with task retries and injected task
failures. Every check is on table versions and contents, not only on exit codes.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import SHORT_LIVED_JVM
from delta.tables import DeltaTable
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from segmentation.feature_pipeline import run_feature_pipeline
from segmentation.io import write_table
from segmentation.scoring_pipeline import run_scoring

ROOT = Path(__file__).resolve().parent.parent
# Many small write tasks (no coalescing, no broadcast join) so that a commit's data files
# take a second or more to write: long enough to kill the job in the middle of them.
SLOW_WRITES = {
    "master": "local[2]",
    "shuffle_partitions": 24,
    "ui_enabled": False,
    "log_level": "ERROR",
    "driver_memory": "2g",
    "conf": {
        "spark.sql.adaptive.enabled": "false",
        "spark.sql.autoBroadcastJoinThreshold": "-1",
        "spark.databricks.delta.snapshotPartitions": "2",  # Delta's log replay is not what is killed
    },
}


def job_config(cfg, path: Path, **spark) -> Path:
    """The config as one YAML file for a job started as its own process."""
    data = cfg.model_dump(mode="json")
    data["spark"] = {**data["spark"], **SLOW_WRITES, **spark}
    path.write_text(yaml.safe_dump(data))
    return path


def start(script: str, config: Path, log: Path, *args: str) -> subprocess.Popen:
    command = [sys.executable, str(ROOT / script), *args, "--config", str(config)]
    return subprocess.Popen(command, cwd=log.parent, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env={**os.environ, **SHORT_LIVED_JVM}, start_new_session=True)  # fmt: skip


def parquet_files(table: Path) -> set[str]:
    return {str(p.relative_to(table)) for p in table.rglob("*.parquet") if "_delta_log" not in p.parts}


def committed_files(spark, table: Path) -> set[str]:
    return {Path(f.removeprefix("file:")).relative_to(table).as_posix()
            for f in spark.read.format("delta").load(str(table)).inputFiles()}  # fmt: skip


def kill_while_writing(process: subprocess.Popen, table: Path, timeout: float = 240) -> set[str]:
    """SIGKILL the job as soon as a new data file appears in ``table``; return the new files."""
    before = parquet_files(table)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        new = parquet_files(table) - before
        if new:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
            return parquet_files(table) - before
        time.sleep(0.005)
    raise AssertionError(f"the job ended (exit {process.poll()}) before writing to {table}")


def version(spark, table: Path) -> int:
    return DeltaTable.forPath(spark, str(table)).history(1).first()["version"]


def state(spark, table: Path):
    """The table's version and its rows (sorted; the scoring tables hold no NaN)."""
    return version(spark, table), sorted(spark.read.format("delta").load(str(table)).collect())


@pytest.fixture(scope="module")
def scoring_setup(spark, trained, tmp_path_factory):
    """The training snapshot (A) and a month-later one (B) in which every customer takes the
    features of the customer 97 places further on, so most of them change segment."""
    cfg, result = trained
    root = tmp_path_factory.mktemp("reliability")
    as_of_a = dt.date.fromisoformat(result.as_of)
    a = spark.read.format("delta").load(cfg.features.output.path).where(F.col("as_of") == F.lit(as_of_a))
    ids = [r.customer_id for r in a.select("customer_id").orderBy("customer_id").collect()]
    pairs = [(ids[i], ids[(i + 97) % len(ids)]) for i in range(len(ids))]
    shift = spark.createDataFrame(pairs, "to STRING, src STRING")
    b = (a.join(shift, a.customer_id == shift.src).drop("customer_id", "src").withColumnRenamed("to", "customer_id")
         .withColumn("as_of", F.lit(as_of_a + dt.timedelta(days=30))))  # fmt: skip
    features = cfg.features.output.model_copy(update={"path": str(root / "features")})
    write_table(a.unionByName(b), features, partition_by=["as_of"])

    def config(name: str, as_of: dt.date):
        return cfg.model_copy(update={
            "features": cfg.features.model_copy(update={"output": features}),
            "scoring": cfg.scoring.model_copy(update={
                "as_of": as_of,
                "current": cfg.scoring.current.model_copy(update={"path": str(root / name / "current")}),
                "history": cfg.scoring.history.model_copy(update={"path": str(root / name / "history")}),
            }),
        })  # fmt: skip

    # A scored once; each test starts from a copy of these tables (a Delta table is its folder).
    run_scoring(spark, config("scored-a", as_of_a))
    shutil.copytree(root / "scored-a", root / "reference")
    # The reference: B scored after A, uninterrupted.
    run_scoring(spark, config("reference", as_of_a + dt.timedelta(days=30)))
    reference = {t: state(spark, root / "reference" / t)[1] for t in ("current", "history")}
    return config, as_of_a, as_of_a + dt.timedelta(days=30), root, reference


def test_scoring_jobs_killed_mid_merge_leave_the_last_versions_and_the_rerun_completes(spark, scoring_setup):
    config, as_of_a, as_of_b, root, reference = scoring_setup
    shutil.copytree(root / "scored-a", root / "killed")
    tables = {t: root / "killed" / t for t in ("history", "current")}
    job = job_config(config("killed", as_of_b), root / "killed.yaml")
    scored_a = {t: state(spark, p) for t, p in tables.items()}

    # 1. Killed while writing the history MERGE's files: neither table moves.
    orphans = kill_while_writing(start("jobs/score_customers.py", job, root / "killed-1.log"), tables["history"])
    assert orphans and not orphans & committed_files(spark, tables["history"])
    assert {t: state(spark, p) for t, p in tables.items()} == scored_a

    # 2. Killed while writing the current-table MERGE's files: history holds B, current still A.
    orphans = kill_while_writing(start("jobs/score_customers.py", job, root / "killed-2.log"), tables["current"])
    assert orphans and not orphans & committed_files(spark, tables["current"])
    assert state(spark, tables["current"]) == scored_a["current"]
    assert version(spark, tables["history"]) == scored_a["history"][0] + 1

    # 3. The next run writes what is missing: both tables equal an uninterrupted A-then-B run.
    run_scoring(spark, config("killed", as_of_b))
    assert {t: state(spark, p)[1] for t, p in tables.items()} == reference


def test_a_feature_job_killed_mid_write_leaves_the_last_version_and_the_rerun_completes(spark, trained, tmp_path):
    cfg, result = trained  # result.as_of: the snapshot the shared run built, to compare against
    outputs = {name: cfg.features.output.model_copy(update={"path": str(tmp_path / name)})
               for name in ("output", "quarantine", "quality")}  # fmt: skip

    def config(as_of: str):
        update = {
            **outputs,
            "as_of": dt.date.fromisoformat(as_of),
            "max_quarantine_share": 0.5,
        }  # later rows are after_as_of
        return cfg.model_copy(update={"features": cfg.features.model_copy(update=update)})

    run_feature_pipeline(spark, config("2024-10-31"))
    before = {name: state(spark, tmp_path / name) for name in outputs}
    process = start("jobs/build_features.py", job_config(config(result.as_of), tmp_path / "job.yaml"),
                    tmp_path / "job.log")  # fmt: skip
    orphans = kill_while_writing(process, tmp_path / "output")
    assert orphans and not orphans & committed_files(spark, tmp_path / "output")
    for name in outputs:
        assert version(spark, tmp_path / name) == before[name][0]
        assertDataFrameEqual(spark.read.format("delta").load(str(tmp_path / name)), before[name][1])

    run_feature_pipeline(spark, config(result.as_of))
    features = spark.read.format("delta").load(str(tmp_path / "output"))
    assert sorted(str(r.as_of) for r in features.select("as_of").distinct().collect()) == [
        "2024-10-31", result.as_of
    ]  # fmt: skip
    assertDataFrameEqual(features.where("as_of = '2024-10-31'"), before["output"][1])
    clean = spark.read.format("delta").load(cfg.features.output.path).where(F.col("as_of") == result.as_of)
    # Same rows and values; the column order is the table's (fixed by its first snapshot).
    assertDataFrameEqual(features.where(F.col("as_of") == result.as_of).select(*clean.columns), clean)


def test_two_scoring_runs_of_one_snapshot_at_once_never_interleave(spark, scoring_setup):
    config, as_of_a, as_of_b, root, reference = scoring_setup
    shutil.copytree(root / "scored-a", root / "concurrent")
    job = job_config(config("concurrent", as_of_b), root / "concurrent.yaml", shuffle_partitions=4)
    logs = [root / f"concurrent-{i}.log" for i in (1, 2)]
    processes = [start("jobs/score_customers.py", job, log) for log in logs]
    codes = [p.wait(300) for p in processes]
    outputs = [log.read_text() for log in logs]
    # Both succeed (one commits, the other then finds nothing left to change) or one stops
    # with Delta's conflict, named, having committed nothing.
    assert 0 in codes and set(codes) <= {0, 2}, outputs
    for code, output in zip(codes, outputs, strict=True):
        if code == 2:
            assert "score_customers: error: another run wrote Delta table" in output
    tables = {t: root / "concurrent" / t for t in ("current", "history")}
    assert {t: state(spark, p)[1] for t, p in tables.items()} == reference
    history = spark.read.format("delta").load(str(tables["history"]))
    assert history.where("is_current").groupBy("customer_id").count().where("count > 1").count() == 0


def test_injected_task_failures_are_retried_and_the_output_is_exactly_a_clean_runs(spark, trained, tmp_path):
    cfg, _ = trained
    outputs = {name: cfg.features.output.model_copy(update={"path": str(tmp_path / name)})
               for name in ("output", "quarantine", "quality")}  # fmt: skip
    flaky = cfg.model_copy(update={"features": cfg.features.model_copy(update=outputs)})
    markers = tmp_path / "markers"
    markers.mkdir()
    config = job_config(flaky, tmp_path / "job.yaml", master="local[2,3]", shuffle_partitions=4)
    process = start("tests/fault_injection.py", config, tmp_path / "job.log", str(markers))
    assert process.wait(300) == 0, (tmp_path / "job.log").read_text()
    assert sorted(p.name.split("-")[0] for p in markers.iterdir()) == ["scan", "write"]
    log = (tmp_path / "job.log").read_text()
    assert "injected failure in the scan" in log and "injected failure in the write" in log

    assert DeltaTable.forPath(spark, str(tmp_path / "output")).history().count() == 1  # one commit
    written = spark.read.format("delta").load(str(tmp_path / "output"))
    clean = spark.read.format("delta").load(cfg.features.output.path)
    assert written.count() == written.select("customer_id").distinct().count()
    assertDataFrameEqual(written, clean)
    quality = spark.read.format("delta").load(str(tmp_path / "quality")).drop("source")
    assertDataFrameEqual(quality, spark.read.format("delta").load(cfg.features.quality.path).drop("source"))
