"""Every read and write of Parquet, Delta, CSV and catalog tables.

Writes are atomic: Delta commits a snapshot replacement (``replaceWhere``) or a
full overwrite in one transaction, so readers see the previous complete version
until the new one is committed. Parquet outputs overwrite only the partitions
they rewrite (dynamic partition overwrite).

Delta is driven through the DataFrame writer and SQL (``MERGE INTO``, ``DESCRIBE HISTORY``,
``ALTER TABLE``), never the ``DeltaTable`` Python API: SQL needs only Delta's extension and
catalog, so the same code runs on classic Spark and over Spark Connect, where ``DeltaTable``
needs Delta's Connect server plugin.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.config import OutputConfig, TableConfig
from segmentation.errors import ConcurrentWriteError, ContractError, InputNotFoundError, error_condition

__all__ = [
    "CORRUPT_RECORD",
    "check_fits",
    "delta_version",
    "read_table",
    "table_columns",
    "table_exists",
    "write_table",
]

log = logging.getLogger(__name__)

CORRUPT_RECORD = "_corrupt_record"  # the raw text of a CSV line Spark could not split into the header's fields
_CSV_PRUNING = "spark.sql.csv.parser.columnPruning.enabled"
# Spark reads Parquet's INT64 TIMESTAMP(NANOS), the default of pandas and pyarrow, only as epoch
# nanoseconds in a long column, and only with this session setting (no reader option exists).
_NANOS_AS_LONG = "spark.sql.legacy.parquet.nanosAsLong"


def read_table(
    spark: SparkSession, source: TableConfig, columns: Sequence[str] | None = None, key: str | None = None
) -> DataFrame:
    """Read ``source`` (catalog table, Delta, Parquet or CSV), keeping only ``columns`` when given;
    ``key`` is the config key of ``source``, which an error names.

    CSV is read with a header and every column as a string; the caller's contract
    check casts and validates, so a malformed value is quarantined rather than
    silently turned into null by schema inference. A CSV line with too few or too
    many fields (or a broken quote) keeps its text in the extra column
    :data:`CORRUPT_RECORD`, so the feature job can quarantine it as a malformed row.
    """
    where, named = source.location, f" ({key})" if key else ""
    try:
        if source.table:
            df = spark.read.table(source.table)
        elif source.path:
            if source.format == "csv":
                df = _read_csv(spark, source)
            elif source.format == "parquet":
                df = _read_parquet(spark, source)
            else:
                df = spark.read.format(source.format).options(**source.options).load(source.path)
        else:
            raise InputNotFoundError(f"no input location{named}: set either 'path' or 'table'")
    except AnalysisException as exc:
        raise InputNotFoundError(f"cannot read {source.format} input '{where}'{named}: {_first_line(exc)}") from None
    if columns is not None:
        missing = [c for c in columns if c not in df.columns]
        if missing:
            hint = f"the column keys of {key}" if key else "input.transactions.columns.<role>"
            raise ContractError(
                f"input '{where}'{named} has no column(s) {missing}; it has {df.columns}. "
                f"Map your column names with {hint}"
            )
        df = df.select(*columns)
    return df


def _read_parquet(spark: SparkSession, source: TableConfig) -> DataFrame:
    """Read Parquet as pandas, pyarrow and Spark write it.

    INT96, millisecond and microsecond timestamps, dates and decimals Spark reads as they are.
    Nanosecond timestamps (pandas' and pyarrow's default) need ``spark.sql.legacy.parquet.nanosAsLong``,
    which turns them into epoch nanoseconds; the columns the file's footer declares as nanosecond
    timestamps are turned back into timestamps (UTC, truncated to microseconds, Spark's precision).
    """
    reader = spark.read.options(**source.options)
    # A local file's footer says so without a failed scan (and the executor error Spark logs for one).
    if spark.conf.get(_NANOS_AS_LONG, "false").lower() != "true" and not _local_nanos(source.path):
        try:
            return reader.parquet(source.path)
        except Exception as exc:  # noqa: BLE001 - classic and Connect raise different classes
            if "PARQUET_TYPE_ILLEGAL" not in str(exc) or "NANOS" not in str(exc):
                raise
        log.info("'%s' has nanosecond timestamps: setting %s=true to read them", source.path, _NANOS_AS_LONG)
    spark.conf.set(_NANOS_AS_LONG, "true")
    df = reader.parquet(source.path)
    nanos = _nanosecond_columns(df)
    if nanos:
        log.info("reading nanosecond timestamp column(s) %s of '%s' as timestamps", nanos, source.path)
        df = df.withColumns({c: F.timestamp_micros(F.expr(f"`{c}` div 1000")) for c in nanos})
    return df


def _local_nanos(path: str) -> bool:
    """Whether the first Parquet file under a local ``path`` (as Spark lists it: hidden and ``_``
    names left out) declares a nanosecond timestamp column; False for other file systems, which
    the failed first read finds out instead."""
    parsed = urlparse(path)
    local = Path(parsed.path if parsed.scheme else path)
    if parsed.scheme not in ("", "file") or parsed.netloc or not local.exists():
        return False
    files = [local] if local.is_file() else sorted(
        p for p in local.rglob("*.parquet")
        if p.is_file() and not any(part.startswith(("_", ".")) for part in p.relative_to(local).parts)
    )  # fmt: skip
    if not files:
        return False
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(files[0])
    except (OSError, pa.ArrowException):
        return False
    return any(pa.types.is_timestamp(f.type) and f.type.unit == "ns" for f in schema)


def _nanosecond_columns(df: DataFrame) -> list[str]:
    """The long columns of ``df`` that its first file's footer declares as nanosecond timestamps."""
    longs = {f.name for f in df.schema.fields if isinstance(f.dataType, T.LongType)}
    files = df.inputFiles() if longs else []
    if not files:
        return []
    import pyarrow as pa
    import pyarrow.fs
    import pyarrow.parquet as pq

    try:
        fs, path = pyarrow.fs.FileSystem.from_uri(files[0])
        with fs.open_input_file(path) as f:
            schema = pq.read_schema(f)
    except Exception as exc:  # noqa: BLE001 - a file system pyarrow cannot open: say what to set
        log.warning(
            "cannot read the Parquet footer of %s to find its nanosecond timestamps (%s); they are read as "
            "epoch nanoseconds: set input.transactions.timestamp_unit=nanoseconds for the timestamp column",
            files[0], _first_line(exc),
        )  # fmt: skip
        return []
    return [f.name for f in schema if f.name in longs and pa.types.is_timestamp(f.type) and f.type.unit == "ns"]


def _read_csv(spark: SparkSession, source: TableConfig) -> DataFrame:
    # With column pruning Spark's CSV reader splits out only the columns a query uses and so
    # cannot see that a line has too few or too many fields; the field count needs them all.
    if spark.conf.get(_CSV_PRUNING, "true").lower() != "false":
        log.info("setting %s=false so that CSV lines with a wrong field count are detected", _CSV_PRUNING)
        spark.conf.set(_CSV_PRUNING, "false")
    options = {"mode": "PERMISSIVE", **source.options, "header": "true", "inferSchema": "false"}
    header = spark.read.options(**options).csv(source.path).schema  # reads the header line only
    if CORRUPT_RECORD in header.fieldNames():
        return spark.read.options(**options).csv(source.path)
    schema = T.StructType([*header.fields, T.StructField(CORRUPT_RECORD, T.StringType())])
    return spark.read.options(**options, columnNameOfCorruptRecord=CORRUPT_RECORD).schema(schema).csv(source.path)


def table_exists(spark: SparkSession, target: OutputConfig | TableConfig) -> bool:
    if target.table:
        return spark.catalog.tableExists(target.table)
    if not target.path:
        return False
    if target.format == "delta":
        return _history_version(spark, _sql_name(target)) is not None
    return Path(target.path).exists()


def table_columns(spark: SparkSession, target: OutputConfig) -> list[str]:
    """The columns of ``target``'s Delta table, or [] when there is none yet."""
    table = _existing(spark, target)
    return [] if table is None else table.columns


def _existing(spark: SparkSession, target: OutputConfig) -> DataFrame | None:
    if target.format != "delta" or not table_exists(spark, target):
        return None
    return spark.read.table(target.table) if target.table else spark.read.format("delta").load(target.path)


def check_fits(spark: SparkSession, df: DataFrame, target: OutputConfig, merge_schema: bool = False) -> None:
    """Raise :class:`ContractError` naming ``target`` when its Delta table would refuse ``df``: a column
    it lacks (without ``merge_schema``) or a column of another type, as when another data set's table
    sits at that location. A run calls it for every output before writing any of them."""
    table = _existing(spark, target)
    if table is None:
        return
    types = {f.name: f.dataType.simpleString() for f in table.schema.fields}  # nullability aside
    new = [] if merge_schema else [f.name for f in df.schema.fields if f.name not in types]
    changed = [f.name for f in df.schema.fields if f.name in types and types[f.name] != f.dataType.simpleString()]
    if new or changed:
        raise _other_columns(target, f"columns it lacks: {new}; of another type: {changed}")


def _other_columns(target: OutputConfig, found: str) -> ContractError:
    """The error for a Delta table at ``target`` whose columns are not the run's (another data set's)."""
    return ContractError(
        f"Delta table {target.location} holds other columns, or other types, than this run writes ({found}); nothing "
        "was written. Point this output at a location of its own (its path or table key), or move the old table away"
    )


def delta_version(spark: SparkSession, target: OutputConfig | TableConfig) -> int | None:
    """Current version of a Delta table, or None for other formats or a missing table."""
    if target.format != "delta" or not (target.table or target.path):
        return None
    if target.table and not spark.catalog.tableExists(target.table):
        return None
    return _history_version(spark, _sql_name(target))  # None for a path that holds no Delta table


# What DESCRIBE HISTORY says of a path that holds no Delta table (missing, empty or another format).
_NOT_DELTA = (
    "DELTA_TABLE_ONLY_OPERATION", "DELTA_MISSING_DELTA_TABLE", "DELTA_TABLE_NOT_FOUND", "DELTA_PATH_DOES_NOT_EXIST",
    "PATH_NOT_FOUND",
)  # fmt: skip


def _history_version(spark: SparkSession, name: str) -> int | None:
    """The latest version in ``name``'s Delta log, or None when ``name`` is not a Delta table."""
    try:
        row = spark.sql(f"DESCRIBE HISTORY {name} LIMIT 1").select("version").first()
    except Exception as exc:
        if error_condition(exc).split(".")[0] in _NOT_DELTA:
            return None
        raise
    return None if row is None else int(row[0])


def write_table(
    df: DataFrame,
    target: OutputConfig,
    partition_by: Sequence[str] = (),
    replace_where: dict[str, str] | None = None,
    merge_schema: bool = False,
) -> None:
    """Write ``df`` to ``target`` atomically.

    ``replace_where`` (column -> literal) replaces exactly the rows of that
    snapshot and leaves others: the rerun of a snapshot is idempotent.
    ``merge_schema`` lets a Delta table gain the new columns of ``df``.
    """
    writer = df.write.mode("overwrite")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    if target.format == "delta":
        writer = writer.format("delta")
        if replace_where:
            predicate = " AND ".join(f"`{col}` = '{val}'" for col, val in replace_where.items())
            writer = writer.option("replaceWhere", predicate)
        if merge_schema:
            writer = writer.option("mergeSchema", "true")
    else:
        writer = writer.format(target.format)
        if replace_where:
            writer = writer.option("partitionOverwriteMode", "dynamic")
    with committing(target):
        if target.table:
            writer.saveAsTable(target.table)
        elif target.path:
            writer.save(target.path)
        else:
            raise ValueError("output has neither 'path' nor 'table'")
    log.info("wrote %s table %s", target.format, target.location)


# Delta's optimistic-concurrency conflicts, by error condition: the same on classic Spark and
# over Spark Connect, where no Delta exception class crosses the wire.
_CONFLICTS = (
    "DELTA_CONCURRENT_APPEND", "DELTA_CONCURRENT_DELETE_DELETE", "DELTA_CONCURRENT_DELETE_READ",
    "DELTA_CONCURRENT_TRANSACTION", "DELTA_CONCURRENT_WRITE", "DELTA_METADATA_CHANGED", "DELTA_PROTOCOL_CHANGED",
)  # fmt: skip
# A table that holds other columns, or the same columns with other types, than a run writes: another
# data set's table at the same location (the default data/features of `make demo`, say).
_OTHER_SCHEMA = ("DELTA_METADATA_MISMATCH", "DELTA_FAILED_TO_MERGE_FIELDS")


@contextmanager
def committing(target: OutputConfig) -> Iterator[None]:
    """Turn Delta's optimistic-concurrency conflict into :class:`ConcurrentWriteError`, and a table
    whose columns differ from the run's into :class:`ContractError` naming the table.

    Delta commits a transaction only when no other run changed what it read, so when two runs
    write one table at the same time one of them fails here and has committed nothing to it.
    """
    try:
        yield
    except Exception as exc:
        condition = error_condition(exc)
        if condition.split(".")[0] in _OTHER_SCHEMA:
            raise _other_columns(target, condition) from exc
        if condition.split(".")[0] not in _CONFLICTS:
            raise
        raise ConcurrentWriteError(
            f"another run wrote Delta table {target.location} at the same time "
            f"({condition}); this run committed nothing to it. Rerun once the other run has finished"
        ) from exc


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


# --------------------------------------------------------------------------- segment assignments (Delta MERGE)

CURRENT_COLUMNS = (
    "customer_id", "segment", "segment_name", "probability", "model_version",
    "as_of", "segment_since", "active", "missing_since",
)  # fmt: skip
HISTORY_COLUMNS = ("customer_id", "segment", "segment_name", "model_version", "valid_from", "valid_to", "is_current")
# The CLV job's latest values, carried by the current table when the scoring job attaches them
# (scoring.attach_clv); nullable columns a table written before them gains on the first such MERGE.
CLV_CURRENT_COLUMNS = {
    "clv_as_of": "DATE", "p_alive": "DOUBLE", "expected_purchases": "DOUBLE", "expected_avg_value": "DOUBLE",
    "clv": "DOUBLE",
}  # fmt: skip
# The outlier flag, when the model's training run fitted one (training.density.flag_outliers).
OUTLIER_CURRENT_COLUMNS = {"is_outlier": "BOOLEAN"}
# The second level, when the model has two (training.hierarchy).
SUB_SEGMENT_CURRENT_COLUMNS = {"sub_segment": "INT", "sub_segment_name": "STRING"}


def _read_delta(spark: SparkSession, target: OutputConfig) -> DataFrame:
    return spark.read.table(target.table) if target.table else spark.read.format("delta").load(target.path)


@contextmanager
def _as_view(df: DataFrame, role: str) -> Iterator[str]:
    """``df`` as a session temporary view with a name no other statement uses, dropped afterwards."""
    name = f"_segmentation_{role}_{uuid.uuid4().hex}"
    df.createOrReplaceTempView(name)
    try:
        yield name
    finally:
        df.sparkSession.catalog.dropTempView(name)


def _merge(spark: SparkSession, target: OutputConfig, statement: str) -> None:
    """Run one ``MERGE INTO`` (one atomic Delta commit) and log what it changed."""
    with committing(target):
        metrics = spark.sql(statement).collect()
    if metrics:
        log.info("MERGE into %s: %s", target.location, metrics[0].asDict())


def merge_current_assignments(spark: SparkSession, scored: DataFrame, target: OutputConfig, as_of: str) -> None:
    """Upsert one row per customer into the current-assignments Delta table.

    ``scored`` has customer_id, segment, segment_name, probability, model_version, and
    optionally every column of :data:`CLV_CURRENT_COLUMNS`, ``is_outlier``, and ``sub_segment`` with
    ``sub_segment_name``. A customer moving only between sub-segments keeps ``segment_since`` (the
    sub-segment columns are refreshed as the CLV values are).
    A changed segment or model version moves ``segment_since`` to ``as_of``; an
    unchanged one only refreshes ``as_of`` (and the CLV values); a customer missing from
    ``scored`` is kept, flagged ``active = false`` with ``missing_since``. Rerunning the same
    snapshot changes no row. One MERGE, so one atomic commit (a table without the CLV
    columns or the outlier flag first gains them, nullable, in one ``ALTER TABLE`` commit that a
    rerun skips).
    """
    if target.format != "delta":
        raise ValueError(f"assignments table {target.location} must be Delta (MERGE needs it)")
    clv = [c for c in CLV_CURRENT_COLUMNS if c in scored.columns]
    if clv and len(clv) != len(CLV_CURRENT_COLUMNS):
        raise ValueError(f"scored assignments carry only some CLV columns: {clv}")
    optional = clv + [c for c in {**OUTLIER_CURRENT_COLUMNS, **SUB_SEGMENT_CURRENT_COLUMNS} if c in scored.columns]
    staged = scored.select(
        "customer_id", "segment", "segment_name", "probability", "model_version",
        F.lit(as_of).cast("date").alias("as_of"), *optional,
    )  # fmt: skip
    if not table_exists(spark, target):
        _create_current_assignments(staged, optional, target)
        return
    _add_optional_columns(spark, target, optional)
    with _as_view(staged, "current") as source:
        _merge(spark, target, _current_assignments_merge(_sql_name(target), source, optional, as_of))
    log.info("merged %s assignments into %s", as_of, target.location)


def _create_current_assignments(staged: DataFrame, optional: Sequence[str], target: OutputConfig) -> None:
    """The first snapshot: every staged customer active, in its segment since ``as_of``."""
    initial = staged.select(
        *staged.columns,
        F.col("as_of").alias("segment_since"),
        F.lit(True).alias("active"),
        F.lit(None).cast("date").alias("missing_since"),
    )
    write_table(initial.select(*CURRENT_COLUMNS, *optional), target)


def _add_optional_columns(spark: SparkSession, target: OutputConfig, optional: Sequence[str]) -> None:
    """Give the current-assignments table those of the CLV, outlier and sub-segment columns ``optional`` it lacks
    (nullable, in one ``ALTER TABLE`` commit)."""
    absent = [c for c in optional if c not in _read_delta(spark, target).columns]
    if absent:
        types = {**CLV_CURRENT_COLUMNS, **OUTLIER_CURRENT_COLUMNS, **SUB_SEGMENT_CURRENT_COLUMNS}
        columns = ", ".join(f"`{c}` {types[c]}" for c in absent)
        with committing(target):
            spark.sql(f"ALTER TABLE {_sql_name(target)} ADD COLUMNS ({columns})")
        log.info("added the columns %s to %s", absent, target.location)


def _current_assignments_merge(table: str, source: str, optional: Sequence[str], as_of: str) -> str:
    """The MERGE of ``source`` into ``table`` (its rules in :func:`merge_current_assignments`)."""
    changed = "t.segment <> s.segment OR t.model_version <> s.model_version OR NOT t.active"
    refreshed = ("as_of", "probability", "segment_name", *optional)
    # A new or changed assignment starts its segment_since at this snapshot.
    new_assignment = {
        **{c: f"s.`{c}`" for c in ("segment", "segment_name", "probability", "model_version", "as_of", *optional)},
        "segment_since": "s.as_of",
        "active": "true",
        "missing_since": "CAST(NULL AS DATE)",
    }
    inserted = {"customer_id": "s.customer_id", **new_assignment}
    return f"""
        MERGE INTO {table} AS t USING {source} AS s ON t.customer_id = s.customer_id
        WHEN MATCHED AND ({changed}) THEN UPDATE SET {_assignments(new_assignment)}
        WHEN MATCHED AND ({" OR ".join(f"NOT (t.`{c}` <=> s.`{c}`)" for c in refreshed)})
            THEN UPDATE SET {_assignments({c: f"s.`{c}`" for c in refreshed})}
        WHEN NOT MATCHED THEN INSERT ({", ".join(f"`{c}`" for c in inserted)}) VALUES ({", ".join(inserted.values())})
        WHEN NOT MATCHED BY SOURCE AND t.active THEN UPDATE SET active = false, missing_since = DATE'{as_of}'
    """


def _assignments(values: dict[str, str]) -> str:
    return ", ".join(f"`{c}` = {v}" for c, v in values.items())


def _sql_name(target: OutputConfig | TableConfig) -> str:
    """The table in SQL: its catalog name, or ``delta.`<path>``` for a path.

    Delta takes only absolute paths there (a relative one is read as a table name), so a relative
    local path is made absolute against the working directory, where Spark's DataFrame reader
    and writer resolve it too (on classic Spark; over Connect, give absolute paths or URIs).
    """
    if target.table:
        return target.table
    path = target.path if urlparse(target.path).scheme else os.path.abspath(target.path)
    return "delta.`" + path.replace("`", "``") + "`"


def merge_assignment_history(spark: SparkSession, scored: DataFrame, target: OutputConfig, as_of: str) -> None:
    """Record every change of segment (slowly changing dimension, type 2).

    For each customer whose segment or model version differs from their current
    history row (or who has none), the current row is closed (``valid_to = as_of``,
    ``is_current = false``) and a new current row opens at ``as_of``. The changes are
    computed against the history table itself, so a rerun, or a rerun after a crash
    between this MERGE and the current-table MERGE, writes exactly what is missing.
    """
    rows = scored.select(
        "customer_id", "segment", "segment_name", "model_version", F.lit(as_of).cast("date").alias("valid_from")
    )
    if not table_exists(spark, target):
        initial = rows.select(
            *rows.columns, F.lit(None).cast("date").alias("valid_to"), F.lit(True).alias("is_current")
        )
        write_table(initial.select(*HISTORY_COLUMNS), target)
        return
    current = (
        _read_delta(spark, target)
        .where("is_current")
        .select("customer_id", F.col("segment").alias("h_segment"), F.col("model_version").alias("h_model_version"))
    )
    changes = rows.join(current, "customer_id", how="left").where(
        F.col("h_segment").isNull()
        | (F.col("h_segment") != F.col("segment"))
        | (F.col("h_model_version") != F.col("model_version"))
    )
    to_close = changes.where(F.col("h_segment").isNotNull()).select(
        F.col("customer_id").alias("merge_key"), *rows.columns
    )
    to_open = changes.select(F.lit(None).cast("string").alias("merge_key"), *rows.columns)
    with _as_view(to_close.unionByName(to_open), "history") as source:
        _merge(
            spark,
            target,
            f"""
            MERGE INTO {_sql_name(target)} AS t USING {source} AS s ON t.customer_id = s.merge_key AND t.is_current
            WHEN MATCHED THEN UPDATE SET is_current = false, valid_to = s.valid_from
            WHEN NOT MATCHED AND s.merge_key IS NULL THEN
                INSERT (customer_id, segment, segment_name, model_version, valid_from, valid_to, is_current)
                VALUES (s.customer_id, s.segment, s.segment_name, s.model_version, s.valid_from,
                        CAST(NULL AS DATE), true)
            """,
        )
    log.info("recorded segment changes of %s in %s", as_of, target.location)
