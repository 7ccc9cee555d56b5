"""A job under ``spark-submit --master local[2]`` without Delta's jars.

Under spark-submit the JVM starts before Python, so the session factory cannot simply configure a
new session: it checks that Delta's extension is really active and, when the jars are missing,
stops at once with exit 2 and the line to add. (The jobs' runs and reruns under spark-submit, with
a user's own extension kept beside Delta's, are in test_spark_submit_cluster.py.)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from conftest import SHORT_LIVED_JVM
from spark_submit import default_command, log_lines, submit

from segmentation.spark import delta_maven_coordinate

MASTER = "local[2]"
RESOURCES = ["--driver-memory", "1g", "--conf", "spark.ui.enabled=false"]


def test_a_submit_without_deltas_jars_stops_with_exit_2_and_the_line_to_add(tmp_path: Path):
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable, **SHORT_LIVED_JVM}
    command = default_command("build_features", MASTER, delta_maven_coordinate(), RESOURCES)
    packages = command.index("--packages")
    del command[packages : packages + 2]
    done = submit(command + ["--set", "input.transactions.path=nowhere"], tmp_path, env, expect=2)
    ours = log_lines(done, "^build_features: error: ")  # spark-submit merges Python's stderr into its stdout
    assert len(ours) == 1, done.stdout[-3000:]
    assert "Delta Lake is not active" in ours[0] and f"--packages {delta_maven_coordinate()}" in ours[0]
    assert not (tmp_path / "data").exists()  # stopped before reading or writing anything
