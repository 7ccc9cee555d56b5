"""The one place a SparkSession is built.

* Databricks, a notebook or any caller that already has a session: that session
  is returned untouched and nothing is downloaded.
* ``spark-submit``: the master, jars, packages and SQL extensions come from spark-submit; the
  Delta catalog and session settings are added, and Delta's extension is appended to
  spark-submit's own when it is missing (see :func:`_submitted_session`).
* Plain ``python``: a local session (``spark.master`` from config, ``local[*]``
  by default) with the Delta Lake jars fetched from Maven Central on first use
  and cached by Ivy (``~/.ivy2.5.2``) for every later run.
* Spark Connect (``spark.remote`` or ``SPARK_REMOTE``): ``sc://host:port`` reaches a running
  server with its own jars and extensions; ``local[N]`` starts a server in this process with
  the same Delta settings as a classic local session. The library uses only the DataFrame,
  SQL and ML APIs that Connect has, and never reaches into the JVM.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import os
import shutil
import subprocess
import sys
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from segmentation.config import SparkConfig
from segmentation.errors import DeltaNotActiveError, error_condition

__all__ = [
    "DELTA_EXTENSION",
    "DELTA_CATALOG",
    "JavaMissingError",
    "check_delta",
    "check_java",
    "collection_paused",
    "default_parallelism",
    "delta_maven_coordinate",
    "get_spark",
    "is_connect",
    "job_descriptions",
    "shuffle_partitions_kept",
    "size_shuffles_to_rows",
    "worker_threads",
]

log = logging.getLogger(__name__)

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
MIN_JAVA = 17
# Delta replays a table's log in this many tasks (Delta's default: 50, whatever the table's size).
SNAPSHOT_PARTITIONS = "spark.databricks.delta.snapshotPartitions"
SHUFFLE_PARTITIONS = "spark.sql.shuffle.partitions"
DELTA_SNAPSHOT_PARTITIONS_DEFAULT = 50


class JavaMissingError(RuntimeError):
    """No usable Java runtime for Spark."""


def check_java() -> int:
    """Return the Java major version, or raise :class:`JavaMissingError` when missing or older than 17."""
    java_home = os.environ.get("JAVA_HOME")
    java = os.path.join(java_home, "bin", "java") if java_home else shutil.which("java")
    if not java or not os.path.exists(java):
        raise JavaMissingError(
            f"Java {MIN_JAVA}+ is required by Spark 4 but no 'java' was found on PATH or in JAVA_HOME; "
            "install a JDK 17 (for example: apt-get install openjdk-17-jre-headless)"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    text = out.stderr + out.stdout
    try:
        quoted = text.split('"')[1]
        major = int(quoted.split(".")[1] if quoted.startswith("1.") else quoted.split(".")[0].split("-")[0])
    except (IndexError, ValueError) as exc:
        raise JavaMissingError(f"could not read the Java version from '{java} -version': {text.strip()}") from exc
    if major < MIN_JAVA:
        raise JavaMissingError(f"Spark 4 needs Java {MIN_JAVA}+, but {java} is Java {major}; install JDK 17 or newer")
    return major


def delta_maven_coordinate() -> str:
    """The Delta Lake jar that matches the installed pyspark and delta-spark (for --packages).

    Without delta-spark (the package's ``spark`` extra; a Databricks runtime has Delta built in),
    the version part says what to put there."""
    from importlib.metadata import PackageNotFoundError, version

    import pyspark

    spark_minor = ".".join(pyspark.__version__.split(".")[:2])
    try:
        delta = version("delta-spark")
    except PackageNotFoundError:
        delta = f"<the Delta Lake release for Spark {spark_minor}>"
    return f"io.delta:delta-spark_{spark_minor}_2.13:{delta}"


def _under_spark_submit() -> bool:
    # spark-submit starts the JVM first and hands its gateway to Python.
    return "PYSPARK_GATEWAY_PORT" in os.environ


def get_spark(settings: SparkConfig | None = None) -> SparkSession:
    """Return the active session, or build one configured for Delta Lake.

    ``spark.remote`` (or the standard ``SPARK_REMOTE`` variable) asks for a Spark Connect
    session instead of a classic one: ``sc://host:15002`` for a running server, ``local[2]``
    for one this process starts with the same Delta settings as a classic local session.
    """
    settings = settings or SparkConfig()
    active = SparkSession.getActiveSession()
    if active is not None:
        log.info("reusing the active Spark session (master=%s)", active.conf.get("spark.master", "unknown"))
        return active
    remote = settings.remote or os.environ.get("SPARK_REMOTE")
    if (remote or settings.master).startswith("local") and not _under_spark_submit():
        # Python workers (the pandas UDFs of the outlier flag and the CLV scoring) need this
        # interpreter's numpy, scikit-learn and pyarrow, not the first python3 on PATH; on a cluster
        # spark-submit or the runtime sets the executors' Python.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if remote:
        spark = _start(_connect_builder(remote, settings))
    elif _under_spark_submit():
        spark = _submitted_session(settings)
    else:
        check_java()
        builder = SparkSession.builder.appName(settings.app_name).master(settings.master)
        spark = _start(_session_settings(_local_settings(builder, settings), settings, ""))
    if remote:
        # A model fitted over Connect releases its server-side copy when garbage-collected; at
        # interpreter exit that call waits for a reply that never comes, so a job whose session
        # is still open at exit never ends. Stopped first, the session lets the models go quietly.
        atexit.register(spark.stop)
    check_delta(spark)
    partitions, snapshot = size_partitions(spark, settings)
    log.info(
        "Spark %s %s session started (master=%s, extensions=%s, shuffle partitions=%d, Delta snapshot partitions=%d)",
        spark.version,
        "Connect" if is_connect(spark) else "classic",
        remote or spark.conf.get("spark.master", "unknown"),
        spark.conf.get("spark.sql.extensions", ""),
        partitions,
        snapshot,
    )
    return spark


def is_connect(spark: SparkSession) -> bool:
    """Whether ``spark`` is a Spark Connect session (no JVM in this process)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def worker_threads(spark: SparkSession) -> Callable[[], None]:
    """A thread pool's ``initializer``: each worker thread gets ``spark`` as its active session
    (Connect) and the job description the calling thread has now (classic).

    A Connect session is active per thread, and MLlib's model methods over Connect (a model
    summary's metrics, for one) look the session up there: in a thread pool they fail with a bare
    ``AssertionError`` unless the pool's threads are given it. PySpark has no public call for
    this; ``_set_default_and_active_session`` is what its own builder uses. A classic session is
    shared by every thread, but its local properties are per thread and a new thread has none, so
    the jobs of a training run's fits would carry no stage name (:func:`job_descriptions`).
    PySpark's ``inheritable_thread_target`` copies every local property, job tags included, into
    one object the threads then share, and a fit's tag (:func:`jobs_tagged`) would reach its
    siblings; this copies the description only.
    """
    if is_connect(spark):
        return lambda: type(spark)._set_default_and_active_session(spark)
    sc = spark.sparkContext
    description = sc.getLocalProperty("spark.job.description")
    return lambda: sc.setJobDescription(description)  # type: ignore[arg-type]  # None clears it


@contextlib.contextmanager
def collection_paused(spark: SparkSession) -> Iterator[None]:
    """On a Spark Connect session, Python's cyclic garbage collector stays off for the block and
    runs once when the outermost block ends, on the calling thread; a classic session is untouched.

    A fitted model over Connect is a reference to a model the server caches, and its ``__del__``
    asks the server to drop it. If a collection runs that finalizer on a thread that is inside
    another request to the server, the client's gRPC channel can deadlock and the job waits for
    ever with no Spark job running (SPARK-55020, SPARK-57655). PySpark 4.2 switches the collector
    off around its own requests, but per call: with two threads (the sweep's fits) one thread's
    request ending switches it back on while the other's is still under way. Paused for the whole
    run, it is never switched back on mid-request, and the models' finalizers run at the end,
    when no request is in flight.
    """
    if not is_connect(spark):
        yield
        return
    with _PAUSE.held():
        yield


class _CollectorPause:
    """A process-wide, nestable pause of :mod:`gc`: the outermost exit switches the collector back
    on (if it was on) and collects once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._was_enabled = False

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                resume = self._depth == 0 and self._was_enabled
                if resume:
                    gc.enable()
            if resume:
                gc.collect()


_PAUSE = _CollectorPause()


@contextlib.contextmanager
def jobs_tagged(spark: SparkSession, tag: str) -> Iterator[None]:
    """Every Spark job the calling thread starts inside the block carries ``tag``, so that
    :func:`cancel_tagged` can stop them from another thread, and is interrupted when cancelled."""
    if is_connect(spark):
        spark.addTag(tag)
        try:
            yield
        finally:
            spark.removeTag(tag)
        return
    sc = spark.sparkContext
    sc.addJobTag(tag)
    sc.setInterruptOnCancel(True)
    try:
        yield
    finally:
        sc.removeJobTag(tag)
        sc.setInterruptOnCancel(False)


@contextlib.contextmanager
def job_descriptions(spark: SparkSession) -> Iterator[Callable[[str], None]]:
    """Yield ``describe(text)``: the Spark jobs the calling thread starts after a call carry ``text``
    as their description (the Spark UI's job list, the event log's ``spark.job.description``) until
    the next call; the description from before the block comes back when it ends.

    A job's own name is the call that started it (``collect at NativeMethodAccessorImpl.java:0`` for
    every DataFrame action from Python), which says nothing about the step; this names the step.
    On Connect the server names the jobs after the operation, and this does nothing.
    """
    if is_connect(spark):
        yield lambda _text: None
        return
    sc = spark.sparkContext
    before = sc.getLocalProperty("spark.job.description")
    try:
        yield sc.setJobDescription
    finally:
        sc.setJobDescription(before)  # type: ignore[arg-type]  # None clears it


def cancel_tagged(spark: SparkSession, tag: str) -> None:
    """Cancel the running jobs that carry ``tag`` (see :func:`jobs_tagged`).

    Connect interrupts the session's operations with the tag. On a classic session
    ``interruptTag``, called from another thread than the one that added the tag, interrupted
    nothing (measured 2026-12-04 on Spark 4.2: an MLlib fit went on starting jobs), so this cancels
    by SparkContext job tag, which every job of the tagged thread carries, RDD jobs included.
    """
    if is_connect(spark):
        spark.interruptTag(tag)
    else:
        spark.sparkContext.cancelJobsWithTag(tag)


def _start(builder: SparkSession.Builder) -> SparkSession:
    with warnings.catch_warnings():
        # A local Connect server starts with every setting, then the client sets each again
        # on its session and warns that static ones cannot change; they are already in effect.
        warnings.filterwarnings("ignore", message="Failed to set spark", category=UserWarning)
        return builder.getOrCreate()


def _submitted_session(settings: SparkConfig) -> SparkSession:
    """A session on spark-submit's settings (``--conf``, ``spark-defaults.conf``) with Delta's extension.

    spark-submit starts the JVM with its settings before Python runs, and static SQL settings such
    as ``spark.sql.extensions`` take effect only when the context starts: a context that started
    without Delta's extension fails every replaceWhere, DELETE or MERGE on an existing table.
    The session starts on spark-submit's own extensions; when Delta's is not among them, that
    session is stopped and started again with it appended, so a user's extensions are kept. The
    restart (a few seconds) is skipped when spark-submit is given Delta's extension.
    """
    builder = SparkSession.builder.appName(settings.app_name)
    spark = _start(_session_settings(builder, settings, None))
    submitted = spark.conf.get("spark.sql.extensions", None) or ""
    if DELTA_EXTENSION in [e.strip() for e in submitted.split(",")]:
        return spark
    log.info("spark-submit did not enable %s; restarting the session with it added", DELTA_EXTENSION)
    spark.stop()
    return _start(_session_settings(builder, settings, submitted))


def _connect_builder(remote: str, settings: SparkConfig) -> SparkSession.Builder:
    """A Connect session's builder. A ``local`` server starts here, so it gets the jars,
    memory and static SQL settings; a running server (``sc://``) already has its own."""
    builder = SparkSession.builder.remote(remote).appName(settings.app_name)
    if remote.startswith("sc://"):
        return _runtime_settings(builder, settings)
    check_java()
    return _session_settings(_local_settings(builder, settings), settings, "")


def _local_settings(builder: SparkSession.Builder, settings: SparkConfig) -> SparkSession.Builder:
    builder = builder.config("spark.driver.memory", settings.driver_memory)
    if settings.delta_from_maven:
        builder = builder.config("spark.jars.packages", delta_maven_coordinate())
    return builder


def _session_settings(
    builder: SparkSession.Builder, settings: SparkConfig, extensions: str | None
) -> SparkSession.Builder:
    """Delta's extension (after ``extensions``; none set when None) and catalog, the UI and the
    log level: settings fixed when Spark starts."""
    if extensions is not None:
        builder = builder.config("spark.sql.extensions", _with_delta(extensions))
    builder = (
        builder.config("spark.sql.catalog.spark_catalog", DELTA_CATALOG)
        .config("spark.ui.enabled", str(settings.ui_enabled).lower())
        .config("spark.ui.showConsoleProgress", "true")
        .config("spark.log.level", settings.log_level)
    )
    return _runtime_settings(builder, settings)


def _runtime_settings(builder: SparkSession.Builder, settings: SparkConfig) -> SparkSession.Builder:
    builder = builder.config("spark.sql.session.timeZone", "UTC").config("spark.sql.adaptive.enabled", "true")
    for key, value in settings.conf.items():
        builder = builder.config(key, value)
    return builder


def check_delta(spark: SparkSession) -> None:
    """Raise :class:`DeltaNotActiveError` unless the session parses and plans Delta's own SQL.

    ``DESCRIBE HISTORY`` of a path that does not exist needs Delta's parser, and Delta's parser is
    installed together with its analyzer rules (the ones MERGE, DELETE and replaceWhere need). With
    the extension active, Delta answers with a ``DELTA_*`` error; without it, Spark's own parser
    reads ``HISTORY`` as a table name, or the catalog class is missing. No Spark job runs.
    """
    probe = f"/segmentation-delta-check-{uuid.uuid4().hex}"
    try:
        spark.sql(f"DESCRIBE HISTORY delta.`{probe}`").collect()
        return
    except Exception as exc:  # noqa: BLE001 - any failure that is not Delta's own is the answer
        condition = error_condition(exc)
        if condition.startswith("DELTA_"):
            return
        detail = condition or type(exc).__name__
    raise DeltaNotActiveError(
        f"Delta Lake is not active in this Spark session (DESCRIBE HISTORY failed with {detail}); "
        f"add --packages {delta_maven_coordinate()} --conf spark.sql.extensions={DELTA_EXTENSION} "
        f"--conf spark.sql.catalog.spark_catalog={DELTA_CATALOG} to spark-submit, or set them on the cluster"
    )


def size_partitions(spark: SparkSession, settings: SparkConfig) -> tuple[int, int]:
    """Size a new session's shuffles and Delta's log replay to the cores; return both counts.

    Shuffles get ``spark.shuffle_partitions``, or 2 x cores (at least 4) when it is 0. Delta's
    log replay gets as many tasks, at most Delta's own default of 50, unless the user set
    ``spark.databricks.delta.snapshotPartitions``: with 50 tasks every first read of a small
    table cost seconds: a scoring job on 1,200 customers took 96 s with 50, and 55 to 61 s with 4.
    """
    partitions = settings.shuffle_partitions or max(4, 2 * default_parallelism(spark))
    spark.conf.set(SHUFFLE_PARTITIONS, str(partitions))
    snapshot = spark.conf.get(SNAPSHOT_PARTITIONS, None)
    if snapshot is None:
        snapshot = str(min(partitions, DELTA_SNAPSHOT_PARTITIONS_DEFAULT))
        spark.conf.set(SNAPSHOT_PARTITIONS, snapshot)
    return partitions, int(snapshot)


def size_shuffles_to_rows(spark: SparkSession, rows: int, settings: SparkConfig) -> int | None:
    """With ``spark.shuffle_partitions`` 0, raise the session's shuffle partitions to one per
    ``spark.rows_per_shuffle_partition`` rows of input when that is more; return the count in effect
    (None when the platform sizes them).

    The cores alone size a large input's shuffles too small: on 2 cores and a 12 GB driver
    (2026-12-05, ``benchmarks/stage_profile.py``), the feature job over 100M lines spilled 7.7 GB
    to disk with 4 partitions and took 851.0 s, and spilled nothing with 16 (672.1 s); at 10M lines
    4 was as good as 16, and Spark's 200 (left to adaptive execution) took 135.0 s against 100.8 s.
    A count the user set is kept, a larger one is never lowered, and a count that is not a number
    (Databricks' ``auto``) is left to the platform.
    """
    current = spark.conf.get(SHUFFLE_PARTITIONS, None)
    if current is None or not current.isdigit():
        return None
    wanted = -(-rows // settings.rows_per_shuffle_partition)
    if settings.shuffle_partitions or wanted <= int(current):
        return int(current)
    spark.conf.set(SHUFFLE_PARTITIONS, str(wanted))
    log.info("%d input rows: %d shuffle partitions instead of %s (spark.rows_per_shuffle_partition %d)",
             rows, wanted, current, settings.rows_per_shuffle_partition)  # fmt: skip
    return wanted


@contextlib.contextmanager
def shuffle_partitions_kept(spark: SparkSession) -> Iterator[None]:
    """The session's shuffle partitions as they were before the block, whatever it set and however it ends
    (a job that sizes its shuffles to its input leaves the caller's session as it found it)."""
    before = spark.conf.get(SHUFFLE_PARTITIONS, None)
    try:
        yield
    finally:
        if before is None:
            spark.conf.unset(SHUFFLE_PARTITIONS)
        else:
            spark.conf.set(SHUFFLE_PARTITIONS, before)


def default_parallelism(spark: SparkSession) -> int:
    """How many tasks Spark runs a scan in by default (the cores of a local session).

    Read from the partitions of a ``range`` without a partition count, which Spark sizes to its
    default parallelism: the same answer as the driver context's, on classic and Connect sessions
    alike, for one small Spark job.
    """
    probe = spark.range(0, 1 << 16).select(F.spark_partition_id().alias("p"))
    return int(probe.agg(F.max("p")).first()[0]) + 1


def _with_delta(extensions: str) -> str:
    names = [e.strip() for e in extensions.split(",") if e.strip()]
    if DELTA_EXTENSION not in names:
        names.append(DELTA_EXTENSION)
    return ",".join(names)
