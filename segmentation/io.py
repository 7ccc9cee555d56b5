"""Every read and write of Parquet, Delta, CSV and catalog tables.

Writes are atomic: Delta commits a snapshot replacement (``replaceWhere``) or a
full overwrite in one transaction, so readers see the previous complete version
until the new one is committed. Parquet outputs overwrite only the partitions
they rewrite (dynamic partition overwrite).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from delta.tables import DeltaTable
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession

from segmentation.config import OutputConfig, TableConfig
from segmentation.errors import ContractError, InputNotFoundError

__all__ = [
    "delta_version",
    "read_table",
    "table_exists",
    "write_table",
]

log = logging.getLogger(__name__)


def read_table(spark: SparkSession, source: TableConfig, columns: Sequence[str] | None = None) -> DataFrame:
    """Read ``source`` (catalog table, Delta, Parquet or CSV), keeping only ``columns`` when given.

    CSV is read with a header and every column as a string; the caller's contract
    check casts and validates, so a malformed value is quarantined rather than
    silently turned into null by schema inference.
    """
    where = source.location
    try:
        if source.table:
            df = spark.read.table(source.table)
        elif source.path:
            reader = spark.read.format(source.format)
            if source.format == "csv":
                reader = reader.option("header", "true").option("inferSchema", "false")
            df = reader.options(**source.options).load(source.path)
        else:
            raise InputNotFoundError("no input location: set either 'path' or 'table'")
    except AnalysisException as exc:
        raise InputNotFoundError(f"cannot read {source.format} input '{where}': {_first_line(exc)}") from None
    if columns is not None:
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise ContractError(
                f"input '{where}' has no column(s) {missing}; it has {df.columns}. "
                "Map your column names with input.transactions.columns.<role>"
            )
        df = df.select(*columns)
    return df


def table_exists(spark: SparkSession, target: OutputConfig | TableConfig) -> bool:
    if target.table:
        return spark.catalog.tableExists(target.table)
    if not target.path:
        return False
    if target.format == "delta":
        return DeltaTable.isDeltaTable(spark, target.path)
    return Path(target.path).exists()


def delta_version(spark: SparkSession, target: OutputConfig | TableConfig) -> int | None:
    """Current version of a Delta table, or None for other formats or a missing table."""
    if target.format != "delta" or not table_exists(spark, target):
        return None
    table = DeltaTable.forName(spark, target.table) if target.table else DeltaTable.forPath(spark, target.path)
    return int(table.history(1).select("version").first()[0])


def write_table(
    df: DataFrame,
    target: OutputConfig,
    partition_by: Sequence[str] = (),
    replace_where: dict[str, str] | None = None,
) -> None:
    """Write ``df`` to ``target`` atomically.

    ``replace_where`` (column -> literal) replaces exactly the rows of that
    snapshot and leaves others: the rerun of a snapshot is idempotent.
    """
    writer = df.write.mode("overwrite")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    if target.format == "delta":
        writer = writer.format("delta")
        if replace_where:
            predicate = " AND ".join(f"`{col}` = '{val}'" for col, val in replace_where.items())
            writer = writer.option("replaceWhere", predicate)
    else:
        writer = writer.format(target.format)
        if replace_where:
            writer = writer.option("partitionOverwriteMode", "dynamic")
    if target.table:
        writer.saveAsTable(target.table)
    elif target.path:
        writer.save(target.path)
    else:
        raise ValueError("output has neither 'path' nor 'table'")
    log.info("wrote %s table %s", target.format, target.location)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
