"""Reading the dated snapshots the jobs leave for each other, and releasing what a run cached.

Every job's output is keyed by ``as_of``: the feature job writes a snapshot a day, the
training, CLV and scoring jobs read one. :func:`newest_as_of` is the one place that decides
which snapshot is "the newest"; :func:`read_snapshot` reads one snapshot of a table.
The pipelines share these (and :func:`training_reference`, :func:`read_quality`) from here
rather than importing each other.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Iterator, Sequence

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation.config import AppConfig, OutputConfig, TableConfig
from segmentation.errors import ContractError, InputNotFoundError
from segmentation.io import CLV_CURRENT_COLUMNS, read_table, table_exists
from segmentation.profiles import CLV_COLUMNS

__all__ = [
    "latest_clv",
    "newest_as_of",
    "persisting",
    "read_quality",
    "read_snapshot",
    "training_reference",
    "with_clv",
]

log = logging.getLogger(__name__)


def newest_as_of(table: DataFrame, on_or_before: dt.date | str | None = None) -> dt.date | None:
    """The newest ``as_of`` of ``table`` (on or before ``on_or_before`` when given), or None."""
    if on_or_before is not None:
        table = table.where(F.col("as_of") <= F.lit(str(on_or_before)).cast("date"))
    return table.select(F.max("as_of")).first()[0]


def read_snapshot(
    spark: SparkSession,
    source: TableConfig | OutputConfig,
    as_of: dt.date | str | None = None,
    required: Sequence[str] = ("customer_id",),
    job: str = "jobs/build_features.py",
) -> tuple[DataFrame, str]:
    """The rows of snapshot ``as_of`` of ``source`` (default: its newest) and that date as text.

    Raises ContractError naming the table (and the ``job`` that builds it) when it lacks
    ``as_of`` or a ``required`` column, or holds no snapshot at all.
    """
    table = read_table(spark, source)
    missing = [c for c in ("as_of", *required) if c not in table.columns]
    if missing:
        raise ContractError(f"table '{source.location}' has no column(s) {missing}; build it with {job}")
    if as_of is None:
        as_of = newest_as_of(table)
        if as_of is None:
            raise ContractError(f"table '{source.location}' is empty; build it with {job}")
    return table.where(F.col("as_of") == F.lit(str(as_of)).cast("date")), str(as_of)


def read_quality(spark: SparkSession, cfg: AppConfig, as_of: dt.date | str) -> dict[str, float]:
    """The data-quality counts the feature job recorded for ``as_of`` ({} when none)."""
    try:
        rows = read_table(spark, cfg.features.quality).where(F.col("as_of") == F.lit(str(as_of))).collect()
    except InputNotFoundError:  # no quality table: nothing to log
        return {}
    if not rows:
        return {}
    return {k: float(v) for k, v in rows[0].asDict().items() if k.startswith("dq_") and v is not None}


def training_reference(
    spark: SparkSession, cfg: AppConfig, model_version: str, run_tags: dict[str, str]
) -> tuple[DataFrame | None, DataFrame | None]:
    """A model version's training snapshot and the assignments it wrote, when both are still there."""
    train_as_of = run_tags.get("feature_snapshot")
    if not train_as_of:
        return None, None
    features = read_table(spark, cfg.features.output).where(F.col("as_of") == F.lit(train_as_of).cast("date"))
    if not table_exists(spark, cfg.training.assignments):
        return features, None
    segments = read_table(spark, cfg.training.assignments).where(
        (F.col("as_of") == F.lit(train_as_of).cast("date")) & (F.col("model_version") == F.lit(str(model_version)))
    )
    return features, (segments if segments.limit(1).count() else None)


def with_clv(spark: SparkSession, cfg: AppConfig, raw: DataFrame, as_of: str) -> DataFrame:
    """``raw`` with the CLV job's values of snapshot ``as_of`` (``clv.output``) joined on, when it scored it."""
    target = cfg.clv.output
    if not table_exists(spark, target):
        return raw
    values = read_table(spark, target).where(F.col("as_of") == F.lit(as_of)).select("customer_id", *CLV_COLUMNS)
    if not values.limit(1).collect():
        return raw
    log.info("segment profiles show the CLV values of %s for as_of %s", target.location, as_of)
    return raw.join(values, "customer_id", how="left")


def latest_clv(spark: SparkSession, cfg: AppConfig, as_of: str) -> tuple[DataFrame | None, str | None]:
    """The CLV values of the newest ``clv.output`` snapshot on or before ``as_of``, keyed by customer_id
    (columns of :data:`~segmentation.io.CLV_CURRENT_COLUMNS`), and that snapshot's date; (None, None)
    without a table or such a snapshot."""
    target = cfg.clv.output
    if not table_exists(spark, target):
        return None, None
    values = read_table(spark, target)
    newest = newest_as_of(values, on_or_before=as_of)
    if newest is None:
        return None, None
    chosen = values.where(F.col("as_of") == F.lit(newest)).select(
        "customer_id", F.col("as_of").alias("clv_as_of"), *[c for c in CLV_CURRENT_COLUMNS if c != "clv_as_of"]
    )
    return chosen, str(newest)


Persist = Callable[..., DataFrame]  # the callable ``persisting`` yields; stages take it to persist their frames


@contextlib.contextmanager
def persisting() -> Iterator[Persist]:
    """``with persisting() as persist: frame = persist(df)``: every frame persisted through it is
    released when the block ends, whether it ends normally or with an error."""
    frames: list[DataFrame] = []

    def persist(frame: DataFrame, level: StorageLevel = StorageLevel.MEMORY_AND_DISK) -> DataFrame:
        frames.append(frame.persist(level))
        return frame

    try:
        yield persist
    finally:
        for frame in frames:
            frame.unpersist()
