from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading

import pytest
from conftest import TEST_SPARK

from segmentation.config import SparkConfig
from segmentation.spark import (
    DELTA_EXTENSION,
    SNAPSHOT_PARTITIONS,
    JavaMissingError,
    _CollectorPause,
    check_java,
    collection_paused,
    default_parallelism,
    delta_maven_coordinate,
    get_spark,
    is_connect,
    job_descriptions,
    shuffle_partitions_kept,
    size_partitions,
    size_shuffles_to_rows,
    worker_threads,
)


def test_the_factorys_session_has_deltas_jar_and_extension_and_utc(spark):
    # What get_spark adds (the test session is built by it; conftest sets neither of these).
    assert spark.conf.get("spark.jars.packages") == delta_maven_coordinate()
    assert DELTA_EXTENSION in spark.conf.get("spark.sql.extensions")
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"


def test_delta_log_replay_is_sized_like_shuffles_unless_the_user_set_it(spark):
    saved = spark.conf.get("spark.sql.shuffle.partitions"), spark.conf.get(SNAPSHOT_PARTITIONS)
    try:
        spark.conf.unset(SNAPSHOT_PARTITIONS)
        assert size_partitions(spark, SparkConfig(shuffle_partitions=6)) == (6, 6)
        assert spark.conf.get(SNAPSHOT_PARTITIONS) == "6"
        spark.conf.unset(SNAPSHOT_PARTITIONS)
        # 0 = 2 x cores, at least 4: this session has 2 cores
        assert size_partitions(spark, SparkConfig(shuffle_partitions=0)) == (4, 4)
        spark.conf.unset(SNAPSHOT_PARTITIONS)
        assert size_partitions(spark, SparkConfig(shuffle_partitions=400)) == (400, 50)  # never above Delta's own
        spark.conf.set(SNAPSHOT_PARTITIONS, "3")  # the user's --conf or spark.conf wins
        assert size_partitions(spark, SparkConfig(shuffle_partitions=6)) == (6, 3)
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", saved[0])
        spark.conf.set(SNAPSHOT_PARTITIONS, saved[1])


def test_default_parallelism_is_the_contexts_without_asking_the_context(spark):
    # Read from a range's partitions, as works over Connect; the classic context is the reference.
    assert default_parallelism(spark) == spark.sparkContext.defaultParallelism
    assert not is_connect(spark)


def test_the_log_level_is_set_as_a_session_setting(spark):
    # get_spark turns spark.log_level into spark.log.level, which a Connect server takes too, where
    # there is no SparkContext.setLogLevel; the JVM's root logger is where it must take effect.
    assert spark.conf.get("spark.log.level") == TEST_SPARK.log_level == "ERROR"
    log4j = spark.sparkContext._jvm.org.apache.logging.log4j.LogManager
    assert log4j.getRootLogger().getLevel().toString() == "ERROR"


def test_job_descriptions_name_the_step_and_give_back_the_callers_own(spark):
    sc = spark.sparkContext
    sc.setJobDescription("the notebook's own")
    try:
        with job_descriptions(spark) as describe:
            describe("features: first step")
            assert sc.getLocalProperty("spark.job.description") == "features: first step"
            describe("features: second step")
            assert sc.getLocalProperty("spark.job.description") == "features: second step"
        assert sc.getLocalProperty("spark.job.description") == "the notebook's own"
        with pytest.raises(ValueError), job_descriptions(spark) as describe:
            describe("features: a step that fails")
            raise ValueError
        assert sc.getLocalProperty("spark.job.description") == "the notebook's own"
    finally:
        sc.setJobDescription(None)


def test_shuffles_are_raised_to_the_rows_never_lowered_and_given_back(spark):
    before = spark.conf.get("spark.sql.shuffle.partitions")
    auto = SparkConfig(rows_per_shuffle_partition=10)
    with shuffle_partitions_kept(spark):
        assert size_shuffles_to_rows(spark, 995, auto) == 100  # one per 10 rows, rounded up
        assert spark.conf.get("spark.sql.shuffle.partitions") == "100"
        assert size_shuffles_to_rows(spark, 20, auto) == 100  # fewer rows do not lower it
        set_by_user = SparkConfig(shuffle_partitions=7, rows_per_shuffle_partition=10)
        assert size_shuffles_to_rows(spark, 10_000, set_by_user) == 100  # a count the user set is not raised
    assert spark.conf.get("spark.sql.shuffle.partitions") == before
    with pytest.raises(ValueError), shuffle_partitions_kept(spark):
        size_shuffles_to_rows(spark, 10_000, auto)
        raise ValueError
    assert spark.conf.get("spark.sql.shuffle.partitions") == before


def test_worker_threads_carry_the_callers_job_description(spark):
    from concurrent.futures import ThreadPoolExecutor

    sc = spark.sparkContext
    with job_descriptions(spark) as describe:
        describe("training: sweep")
        with ThreadPoolExecutor(2, initializer=worker_threads(spark)) as pool:
            seen = set(pool.map(lambda _: sc.getLocalProperty("spark.job.description"), range(4)))
        with ThreadPoolExecutor(1) as bare:  # what a thread has without it
            unnamed = bare.submit(sc.getLocalProperty, "spark.job.description").result()
    assert seen == {"training: sweep"} and unnamed is None


def _two_requests_overlapping() -> bool:
    """Two threads in PySpark's per-request collector switch, the first ending while the second
    is still inside: whether the collector is on under the second."""
    from pyspark.util import disable_gc

    first_in, second_in, first_out, seen = (threading.Event(), threading.Event(), threading.Event(), [])

    def first() -> None:
        with disable_gc():
            first_in.set()
            second_in.wait(10)
        first_out.set()

    def second() -> None:
        first_in.wait(10)
        with disable_gc():
            second_in.set()
            first_out.wait(10)
            seen.append(gc.isenabled())

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    return seen[0]


def test_a_paused_collector_stays_off_under_overlapping_requests_and_collects_at_the_end():
    assert gc.isenabled()
    assert _two_requests_overlapping()  # PySpark's own switch: back on while a request is under way
    finalized = []

    class Model:
        def __del__(self) -> None:
            finalized.append(gc.isenabled())

    pause = _CollectorPause()
    with pause.held():
        cycle = Model()
        cycle.me = cycle
        del cycle
        with pause.held():
            under = _two_requests_overlapping()
        before_exit = (gc.isenabled(), list(finalized))
    assert under is False and before_exit == (False, [])  # off under the second request and after the inner exit
    assert gc.isenabled() and finalized == [True]  # the outermost exit switched it on, then collected


def test_a_classic_session_leaves_the_collector_alone(spark):
    with collection_paused(spark):
        assert gc.isenabled()


def test_active_session_is_reused_untouched(spark):
    # Databricks and notebooks hand us a session: get_spark must return it, not build another.
    again = get_spark(SparkConfig(master="local[1]", app_name="other"))
    assert again is spark


def test_delta_write_read_round_trip(spark, tmp_path):
    path = str(tmp_path / "roundtrip")
    df = spark.createDataFrame([(1, "a"), (2, None)], "id INT, label STRING")
    df.write.format("delta").save(path)
    df.write.format("delta").mode("overwrite").save(path)
    back = spark.read.format("delta").load(path)
    assert sorted(back.collect()) == sorted(df.collect())
    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").select("version").collect()
    assert sorted(r.version for r in history) == [0, 1]


def _fake_java(tmp_path, monkeypatch, version_line: str) -> None:
    home = tmp_path / "jdk"
    (home / "bin").mkdir(parents=True, exist_ok=True)
    java = home / "bin" / "java"
    java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    java.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(home))


@pytest.mark.parametrize(
    ("line", "major"),
    [('openjdk version "17.0.12" 2024-07-16', 17), ('openjdk version "21" 2023-09-19', 21),
     ('java version "22-ea" 2024-03-19', 22)],
)  # fmt: skip
def test_check_java_reads_the_major_version_of_each_format(tmp_path, monkeypatch, line, major):
    _fake_java(tmp_path, monkeypatch, line)
    assert check_java() == major


def test_check_java_rejects_old_or_missing_java(tmp_path, monkeypatch):
    _fake_java(tmp_path, monkeypatch, 'openjdk version "1.8.0_392"')
    with pytest.raises(JavaMissingError, match="needs Java 17.*Java 8"):
        check_java()
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "nowhere"))
    with pytest.raises(JavaMissingError, match="no 'java' was found"):
        check_java()


def test_make_refuses_to_install_without_java(tmp_path):
    # The setup step fails fast with a clear message when java is missing.
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["PATH"] = "/nonexistent"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    make = subprocess.run(["/usr/bin/make", "-C", root, "check-java"], env=env, capture_output=True, text=True)
    assert make.returncode != 0
    assert "Java 17+" in make.stderr


def test_without_delta_spark_the_coordinate_says_what_to_fill_in(monkeypatch):
    """A Databricks runtime has Delta built in and no delta-spark distribution (the ``spark`` extra)."""
    import importlib.metadata as metadata

    real = metadata.version

    def version(name: str) -> str:
        if name == "delta-spark":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    assert delta_maven_coordinate() == "io.delta:delta-spark_4.2_2.13:4.4.0"
    monkeypatch.setattr(metadata, "version", version)
    assert delta_maven_coordinate() == "io.delta:delta-spark_4.2_2.13:<the Delta Lake release for Spark 4.2>"


UDF_SCRIPT = """
import pandas as pd
from pyspark.sql import functions as F
from segmentation.config import SparkConfig
from segmentation.spark import get_spark

spark = get_spark(SparkConfig(master="local[1]", driver_memory="1g", ui_enabled=False))

@F.pandas_udf("long")
def plus_one(s: pd.Series) -> pd.Series:
    import sklearn  # noqa: F401  (what the outlier flag's workers import)
    return s + 1

print("sum", sum(r[0] for r in spark.range(3).select(plus_one("id")).collect()))
"""


def test_a_local_sessions_python_workers_run_this_interpreter_not_the_first_python3_on_path(tmp_path):
    # make demo runs the jobs as .venv/bin/python with no PYSPARK_PYTHON: Spark would start its Python
    # workers as `python3` from PATH, which lacks the project's packages (a fresh clone's make demo
    # failed so in the outlier flag's pandas UDF on 2026-12-04). Here that python3 fails outright.
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "python3").write_text("#!/bin/sh\necho 'not the project python' >&2\nexit 1\n")
    (shim / "python3").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")}
    env["PATH"] = f"{shim}:{env['PATH']}"
    done = subprocess.run([sys.executable, "-c", UDF_SCRIPT], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sum 6" in done.stdout
