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
  ordinary rows, never a problem.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.errors import ContractError
from segmentation.io import CORRUPT_RECORD

__all__ = [
    "QUARANTINE_REASONS",
    "QualityReport",
    "canonical_columns",
    "check_contract",
    "label_rows",
    "default_as_of",
    "parse_rows",
]

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

_ALLOWED = {
    "customer_id": (T.StringType, T.IntegerType, T.LongType, T.ShortType, T.ByteType),
    "timestamp": (T.TimestampType, T.TimestampNTZType, T.DateType, T.StringType),
    "amount": (T.DoubleType, T.FloatType, T.DecimalType, T.IntegerType, T.LongType, T.ShortType, T.StringType),
    "transaction_id": (T.StringType, T.IntegerType, T.LongType),
    "quantity": (T.DoubleType, T.FloatType, T.DecimalType, T.IntegerType, T.LongType, T.ShortType, T.StringType),
    "category": (T.StringType,),
    "channel": (T.StringType,),
}
_EXPECTED = {
    "customer_id": "string or integer",
    "timestamp": "timestamp, date or a parseable string",
    "amount": "a number or a numeric string",
    "transaction_id": "string or integer",
    "quantity": "a number or a numeric string",
    "category": "string",
    "channel": "string",
}


@dataclass(frozen=True)
class QualityReport:
    """What the feature job read, kept and quarantined (row counts) for one snapshot."""

    as_of: dt.date
    rows_read: int
    rows_kept: int
    customers: int
    quarantined: Mapping[str, int] = field(default_factory=dict)

    @property
    def rows_quarantined(self) -> int:
        return sum(self.quarantined.values())

    @property
    def quarantined_share(self) -> float:
        return self.rows_quarantined / self.rows_read if self.rows_read else 0.0

    def as_dict(self) -> dict[str, float]:
        """Flat numeric keys, ready for ``mlflow.log_metrics``."""
        out = {
            "dq_rows_read": float(self.rows_read),
            "dq_rows_kept": float(self.rows_kept),
            "dq_rows_quarantined": float(self.rows_quarantined),
            "dq_quarantined_share": self.quarantined_share,
            "dq_customers": float(self.customers),
        }
        for reason in QUARANTINE_REASONS:
            out[f"dq_quarantined_{reason}"] = float(self.quarantined.get(reason, 0))
        return out

    def summary(self) -> str:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.quarantined.items()) if v) or "none"
        return (
            f"as_of {self.as_of}: read {self.rows_read} rows, kept {self.rows_kept}, "
            f"quarantined {self.rows_quarantined} ({self.quarantined_share:.2%}; {reasons}), "
            f"{self.customers} customers"
        )


def check_contract(df: DataFrame, columns: Mapping[str, str], source: str) -> None:
    """Raise :class:`ContractError` when a mapped column is missing or has an unusable type.

    ``columns`` maps roles to the user's column names (``input.transactions.columns``).
    Emptiness is checked by the caller with one cheap ``limit(1)`` query.
    """
    types = {f.name: f.dataType for f in df.schema.fields}
    for role, name in columns.items():
        if name not in types:
            raise ContractError(
                f"column '{name}' (role {role}) is missing from {source}; it has {sorted(types)}. "
                f"Set input.transactions.columns.{role} to your column name"
            )
        if not isinstance(types[name], _ALLOWED[role]):
            raise ContractError(
                f"column '{name}' (role {role}) in {source} has type {types[name].simpleString()}, "
                f"expected {_EXPECTED[role]}"
            )


def canonical_columns(df: DataFrame, columns: Mapping[str, str]) -> DataFrame:
    """Select the mapped columns under their role names, keeping the raw values for checking.

    Output: ``customer_id`` (string), ``timestamp_raw``, ``amount_raw`` and the optional
    roles present (``transaction_id`` string, ``quantity_raw``, ``category``, ``channel``), and
    ``malformed`` (the raw line of a CSV row that did not split into the header's fields).
    """
    selected = [F.col(columns["customer_id"]).cast("string").alias("customer_id")]
    selected.append(F.col(columns["timestamp"]).alias("timestamp_raw"))
    selected.append(F.col(columns["amount"]).alias("amount_raw"))
    if "transaction_id" in columns:
        selected.append(F.col(columns["transaction_id"]).cast("string").alias("transaction_id"))
    if "quantity" in columns:
        selected.append(F.col(columns["quantity"]).alias("quantity_raw"))
    for role in ("category", "channel"):
        if role in columns:
            selected.append(F.col(columns[role]).cast("string").alias(role))
    if CORRUPT_RECORD in df.columns:
        selected.append(F.col(CORRUPT_RECORD).alias("malformed"))
    return df.select(*selected)


def _to_timestamp(raw: Column, dtype: T.DataType) -> Column:
    if isinstance(dtype, T.StringType):
        return F.try_to_timestamp(F.trim(raw))
    return raw.cast("timestamp")


def _to_double(raw: Column, dtype: T.DataType) -> Column:
    if isinstance(dtype, T.StringType):
        return F.trim(raw).try_cast("double")
    return raw.cast("double")


def parse_rows(df: DataFrame) -> DataFrame:
    """Parse the raw columns of :func:`canonical_columns` output.

    Adds ``timestamp`` (timestamp, UTC), ``day`` (date), ``amount`` (double) and, when
    present, ``quantity`` (double); a value that does not parse becomes null here and
    is labelled by :func:`label_rows`.
    """
    types = {f.name: f.dataType for f in df.schema.fields}
    parsed = df.withColumn("timestamp", _to_timestamp(F.col("timestamp_raw"), types["timestamp_raw"])).withColumn(
        "amount", _to_double(F.col("amount_raw"), types["amount_raw"])
    )
    if "quantity_raw" in types:
        parsed = parsed.withColumn("quantity", _to_double(F.col("quantity_raw"), types["quantity_raw"]))
    return parsed.withColumn("day", F.to_date("timestamp"))


def label_rows(parsed: DataFrame, as_of: dt.date) -> DataFrame:
    """Label every row of :func:`parse_rows` output with its quarantine ``reason`` (null = kept).

    ``as_of`` is inclusive: a transaction on ``as_of`` is kept, one on the day after is
    ``after_as_of``.
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
        .when(F.col("day") > F.lit(as_of), F.lit("after_as_of"))
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
    newest = parsed.select(F.max("day")).first()[0]
    if newest is None:
        return None
    today = today or dt.datetime.now(dt.timezone.utc).date()
    return min(newest + dt.timedelta(days=1), today)
