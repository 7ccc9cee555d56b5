"""The jobs under ``spark-submit --master local[2]``: the cheap way to run what a cluster runs.

Under spark-submit the JVM starts before Python, so the session factory cannot simply configure a
new session: these tests pin that Delta's extension is really active there (a rerun over an existing
table, a user's own extension kept beside Delta's) and that a submit without Delta's jars stops
at once with exit 2 and the line to add.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from spark_submit import (
    default_command,
    delta_operations,
    delta_tables,
    log_lines,
    readme_command,
    stderr_lines,
    submit,
)

from segmentation.spark import DELTA_EXTENSION, delta_maven_coordinate

MASTER = "local[2]"
USER_EXTENSION = "com.example.UsersOwnExtension"  # not on the classpath: Spark logs it and goes on
RESOURCES = ["--driver-memory", "1g", "--conf", "spark.ui.enabled=false",
             "--conf", f"spark.sql.extensions={USER_EXTENSION}"]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}


def test_the_feature_job_reruns_over_its_table_and_keeps_the_users_extension(spark, tmp_path: Path):
    """The README's lines for the generator and the feature job, then the feature job again with the
    default configuration: its second run replaces the snapshot in the existing Delta table, which
    fails unless Delta's extension is active. The whole chain reruns on the standalone cluster
    (test_spark_submit_cluster.py); this test pins the user's own extension beside Delta's."""
    env, data = _env(), tmp_path / "data"
    for job in ("generate_transactions", "build_features"):
        submit(readme_command(job, MASTER, tmp_path, RESOURCES), tmp_path, env)
    first = delta_tables(spark, data)["features"]
    assert first
    done = submit(default_command("build_features", MASTER, delta_maven_coordinate(), RESOURCES), tmp_path, env)
    assert delta_tables(spark, data)["features"] == first  # the snapshot replaced, nothing appended twice
    assert delta_operations(spark, data, "features").count("WRITE") == 2
    # The user's --conf spark.sql.extensions is kept, and Delta's is added after it.
    started = log_lines(done, "Spark .* session started")
    assert started and f"extensions={USER_EXTENSION},{DELTA_EXTENSION}" in started[0], done.stdout[-2000:]


def test_a_submit_without_deltas_jars_stops_with_exit_2_and_the_line_to_add(tmp_path: Path):
    command = default_command("build_features", MASTER, delta_maven_coordinate(), RESOURCES)
    packages = command.index("--packages")
    del command[packages : packages + 2]
    done = submit(command + ["--set", "input.transactions.path=nowhere"], tmp_path, _env(), expect=2)
    ours = stderr_lines(done, "^build_features: error: ")
    assert len(ours) == 1, done.stderr[-3000:]
    assert "Delta Lake is not active" in ours[0] and f"--packages {delta_maven_coordinate()}" in ours[0]
    assert not (tmp_path / "data").exists()  # stopped before reading or writing anything
