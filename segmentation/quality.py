"""The transactions input contract and row-level quarantine.

Two levels of problems:

* **Contract** (the whole input is unusable): a required column is missing, a
  column has a type that cannot hold its role (a boolean amount, an array
  timestamp...), or the input is empty. :func:`check_contract` raises one
  :class:`~segmentation.errors.ContractError` naming the column, the expected
  and actual types and the source.
* **Rows** (one transaction is unusable): :func:`label_rows` gives each row a
  ``reason`` (null when the row is kept). The first failing check wins, in this
  order: ``malformed_row`` (a CSV line with too few or too many fields),
  ``null_customer_id``, ``null_timestamp``, ``unparseable_timestamp``,
  ``null_amount``, ``unparseable_amount``, ``non_finite_amount``,
  ``after_as_of``, ``duplicate_transaction_id``. Of rows sharing a transaction id,
  the one with the earliest timestamp (then the smallest amount, customer id)
  is kept and the others are quarantined. Returns (negative amounts) are
  ordinary rows, never a problem. ``after_as_of`` is for the default window,
  which ends today at the latest: a row dated later is from the future. When
  ``features.as_of`` is set (a monthly snapshot, a backfill), later rows are
  simply outside the window: labelled ``AFTER_WINDOW``, left out and counted,
  never quarantined.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.errors import ContractError
from segmentation.io import CORRUPT_RECORD

__all__ = [
    "AFTER_WINDOW",
    "CONTRACT_TYPES",
    "QUARANTINE_REASONS",
    "QualityReport",
    "canonical_columns",
    "check_contract",
    "label_rows",
    "as_of_after",
    "default_as_of",
    "parse_rows",
    "resolve_roles",
]

log = logging.getLogger(__name__)

QUARANTINE_REASONS = (
    "malformed_row",
    "null_customer_id",
    "null_timestamp",
    "unparseable_timestamp",
    "null_amount",
    "unparseable_amount",
    "non_finite_amount",
    "after_as_of",
    "duplicate_transaction_id",
)

_INTEGERS = (T.IntegerType, T.LongType)
CONTRACT_TYPES = {
    "customer_id": (T.StringType, T.IntegerType, T.LongType, T.ShortType, T.ByteType),
    "timestamp": (T.TimestampType, T.TimestampNTZType, T.DateType, T.StringType, *_INTEGERS),
    "amount": (T.DoubleType, T.FloatType, T.DecimalType, T.IntegerType, T.LongType, T.ShortType, T.StringType),
    "transaction_id": (T.StringType, T.IntegerType, T.LongType),
    "basket_id": (T.StringType, T.IntegerType, T.LongType, T.DecimalType),
    "product_id": (T.StringType, T.IntegerType, T.LongType, T.DecimalType),
    "quantity": (T.DoubleType, T.FloatType, T.DecimalType, T.IntegerType, T.LongType, T.ShortType, T.StringType),
    "category": (T.StringType,),
    "channel": (T.StringType,),
}
_EXPECTED = {
    "customer_id": "string or integer",
    "timestamp": "timestamp, date, a parseable string or (with input.transactions.timestamp_unit) epoch integers",
    "amount": "a number or a numeric string",
    "transaction_id": "string or integer",
    "basket_id": "string or integer",
    "product_id": "string or integer",
    "quantity": "a number or a numeric string",
    "category": "string",
    "channel": "string",
}


# A row after an explicitly set features.as_of: outside the snapshot, not a problem.
AFTER_WINDOW = "after_window"


@dataclass(frozen=True)
class QualityReport:
    """What the feature job read, kept and quarantined (row counts) for one snapshot."""

    as_of: dt.date
    rows_read: int
    rows_kept: int
    customers: int
    quarantined: Mapping[str, int] = field(default_factory=dict)
    # Joins of input.customers and input.products: share of customers / kept lines that matched.
    customers_match_share: float | None = None
    products_match_share: float | None = None
    unknown_product_lines: int | None = None
    rows_after_window: int = 0  # after an explicitly set as_of: read, left out, not quarantined

    @property
    def rows_in_window(self) -> int:
        return self.rows_read - self.rows_after_window

    @property
    def rows_quarantined(self) -> int:
        return sum(self.quarantined.values())

    @property
    def quarantined_share(self) -> float:
        """Of the rows in the snapshot's window."""
        return self.rows_quarantined / self.rows_in_window if self.rows_in_window else 0.0

    def as_dict(self) -> dict[str, float]:
        """Flat numeric keys, ready for ``mlflow.log_metrics``."""
        out = {
            "dq_rows_read": float(self.rows_read),
            "dq_rows_kept": float(self.rows_kept),
            "dq_rows_quarantined": float(self.rows_quarantined),
            "dq_quarantined_share": self.quarantined_share,
            "dq_customers": float(self.customers),
            "dq_rows_after_window": float(self.rows_after_window),
        }
        for reason in QUARANTINE_REASONS:
            out[f"dq_quarantined_{reason}"] = float(self.quarantined.get(reason, 0))
        for key in ("customers_match_share", "products_match_share", "unknown_product_lines"):
            if getattr(self, key) is not None:
                out[f"dq_{key}"] = float(getattr(self, key))
        return out

    def summary(self) -> str:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.quarantined.items()) if v) or "none"
        return (
            f"as_of {self.as_of}: read {self.rows_read} rows"
            + (f" ({self.rows_after_window} after as_of, left out)" if self.rows_after_window else "")
            + f", kept {self.rows_kept}, "
            f"quarantined {self.rows_quarantined} ({self.quarantined_share:.2%}; {reasons}), "
            f"{self.customers} customers"
            + (
                f", {self.customers_match_share:.2%} of them in input.customers"
                if self.customers_match_share is not None
                else ""
            )
            + (
                f", {self.products_match_share:.2%} of kept lines in input.products "
                f"({self.unknown_product_lines} lines of unknown products)"
                if self.products_match_share is not None
                else ""
            )
        )


def resolve_roles(available: Collection[str], columns: Mapping[str, str], explicit: Collection[str]) -> dict[str, str]:
    """The role mapping to use: ``columns`` without the optional roles left at their default name
    (``explicit`` lacks them) whose column is not in ``available``; one log line names them.

    A required role, or an optional role the user mapped explicitly, stays, so that
    :func:`check_contract` stops the job when its column is missing.
    """
    required = ("customer_id", "timestamp", "amount")
    absent = [r for r, name in columns.items() if r not in required and r not in explicit and name not in available]
    if absent:
        log.info(
            "optional role(s) %s: no column of that name in the input, so treated as absent "
            "(map them with input.transactions.columns.<role>)",
            ", ".join(absent),
        )
    return {role: name for role, name in columns.items() if role not in absent}


def check_contract(df: DataFrame, columns: Mapping[str, str], source: str, timestamp_unit: str | None = None) -> None:
    """Raise :class:`ContractError` when a mapped column is missing or has an unusable type.

    ``columns`` maps roles to the user's column names (``input.transactions.columns``).
    Every mapped column is checked for presence first, so a missing column is reported as
    missing rather than as another column's type. Integer timestamps need ``timestamp_unit``.
    Emptiness is checked by the caller with one cheap ``limit(1)`` query.
    """
    types = {f.name: f.dataType for f in df.schema.fields}
    for role, name in columns.items():
        if name not in types:
            raise ContractError(
                f"column '{name}' (role {role}) is missing from {source}; it has {sorted(types)}. "
                f"Set input.transactions.columns.{role} to your column name"
            )
    for role, name in columns.items():
        if role == "timestamp" and timestamp_unit is None and isinstance(types[name], _INTEGERS):
            raise ContractError(
                f"column '{name}' (role timestamp) in {source} holds integers ({types[name].simpleString()}); "
                "if they are epoch times, set input.transactions.timestamp_unit to seconds or milliseconds"
            )
        if not isinstance(types[name], CONTRACT_TYPES[role]):
            raise ContractError(
                f"column '{name}' (role {role}) in {source} has type {types[name].simpleString()}, "
                f"expected {_EXPECTED[role]}"
            )


def canonical_columns(df: DataFrame, columns: Mapping[str, str]) -> DataFrame:
    """Select the mapped columns under their role names, keeping the raw values for checking.

    Output: ``customer_id`` (string), ``timestamp_raw``, ``amount_raw`` and the optional
    roles present (``transaction_id``, ``basket_id``, ``product_id`` strings, ``quantity_raw``,
    ``category``, ``channel``), and
    ``malformed`` (the raw line of a CSV row that did not split into the header's fields).
    """
    selected = [F.col(columns["customer_id"]).cast("string").alias("customer_id")]
    selected.append(F.col(columns["timestamp"]).alias("timestamp_raw"))
    selected.append(F.col(columns["amount"]).alias("amount_raw"))
    for role in ("transaction_id", "basket_id", "product_id"):
        if role in columns:
            selected.append(F.col(columns[role]).cast("string").alias(role))
    if "quantity" in columns:
        selected.append(F.col(columns["quantity"]).alias("quantity_raw"))
    for role in ("category", "channel"):
        if role in columns:
            selected.append(F.col(columns[role]).cast("string").alias(role))
    if CORRUPT_RECORD in df.columns:
        selected.append(F.col(CORRUPT_RECORD).alias("malformed"))
    return df.select(*selected)


def _to_timestamp(raw: Column, dtype: T.DataType, unit: str | None = None) -> Column:
    if unit is not None and isinstance(dtype, (T.StringType, *_INTEGERS)):
        epoch = F.trim(raw).try_cast("long") if isinstance(dtype, T.StringType) else raw.cast("long")
        if unit == "seconds":
            return F.timestamp_seconds(epoch)
        if unit == "milliseconds":
            return F.timestamp_millis(epoch)
        if unit == "nanoseconds":  # exact: a double cannot hold epoch nanoseconds
            epoch = F.floor(epoch.cast("decimal(20,0)") / F.lit(1000)).cast("long")
        return F.timestamp_micros(epoch)
    if isinstance(dtype, T.StringType):
        return F.try_to_timestamp(F.trim(raw))
    return raw.cast("timestamp")


def _to_double(raw: Column, dtype: T.DataType) -> Column:
    if isinstance(dtype, T.StringType):
        return F.trim(raw).try_cast("double")
    return raw.cast("double")


def parse_rows(df: DataFrame, timestamp_unit: str | None = None) -> DataFrame:
    """Parse the raw columns of :func:`canonical_columns` output.

    Adds ``timestamp`` (timestamp, UTC), ``day`` (date), ``amount`` (double) and, when
    present, ``quantity`` (double); a value that does not parse becomes null here and
    is labelled by :func:`label_rows`. ``timestamp_unit`` (seconds, milliseconds,
    microseconds, nanoseconds) reads integer or digit-string timestamps as epoch times.
    """
    types = {f.name: f.dataType for f in df.schema.fields}
    timestamp = _to_timestamp(F.col("timestamp_raw"), types["timestamp_raw"], timestamp_unit)
    parsed = df.withColumn("timestamp", timestamp).withColumn(
        "amount", _to_double(F.col("amount_raw"), types["amount_raw"])
    )
    if "quantity_raw" in types:
        parsed = parsed.withColumn("quantity", _to_double(F.col("quantity_raw"), types["quantity_raw"]))
    return parsed.withColumn("day", F.to_date("timestamp"))


def label_rows(parsed: DataFrame, as_of: dt.date, window_set: bool = False) -> DataFrame:
    """Label every row of :func:`parse_rows` output with its quarantine ``reason`` (null = kept).

    ``as_of`` is inclusive: a transaction on ``as_of`` is kept, one on the day after is
    ``after_as_of``, or :data:`AFTER_WINDOW` when the user set ``as_of`` (``window_set``).
    """
    amount = F.col("amount")
    malformed = F.col("malformed").isNotNull() if "malformed" in parsed.columns else F.lit(False)
    reason = (
        F.when(malformed, F.lit("malformed_row"))
        .when(F.col("customer_id").isNull() | (F.trim(F.col("customer_id")) == ""), F.lit("null_customer_id"))
        .when(F.col("timestamp_raw").isNull(), F.lit("null_timestamp"))
        .when(F.col("timestamp").isNull(), F.lit("unparseable_timestamp"))
        .when(F.col("amount_raw").isNull(), F.lit("null_amount"))
        .when(amount.isNull(), F.lit("unparseable_amount"))
        .when(F.isnan(amount) | (F.abs(amount) == float("inf")), F.lit("non_finite_amount"))
        .when(F.col("day") > F.lit(as_of), F.lit(AFTER_WINDOW if window_set else "after_as_of"))
    )
    labelled = parsed.withColumn("reason", reason)
    if "transaction_id" in parsed.columns:
        # Only otherwise-valid rows compete for a transaction id, so a bad copy never evicts a good one.
        order = Window.partitionBy("transaction_id", F.col("reason").isNull()).orderBy(
            "timestamp", "amount", "customer_id"
        )
        labelled = labelled.withColumn(
            "reason",
            F.when(
                F.col("reason").isNull() & F.col("transaction_id").isNotNull() & (F.row_number().over(order) > 1),
                F.lit("duplicate_transaction_id"),
            ).otherwise(F.col("reason")),
        )
    return labelled


def default_as_of(parsed: DataFrame, today: dt.date | None = None) -> dt.date | None:
    """The day after the newest parseable transaction, but never after today (UTC).

    Capping at today keeps a stray timestamp from the future from moving the window:
    such rows are quarantined as ``after_as_of`` instead.
    """
    return as_of_after(parsed.select(F.max("day")).first()[0], today)


def as_of_after(newest: dt.date | None, today: dt.date | None = None) -> dt.date | None:
    """:func:`default_as_of` from the newest parseable transaction's day (None when there is none)."""
    if newest is None:
        return None
    today = today or dt.datetime.now(dt.timezone.utc).date()
    return min(newest + dt.timedelta(days=1), today)
