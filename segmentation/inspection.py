"""First contact with a transactions table: what is in it, which column plays which role, what would be quarantined.

:func:`inspect_transactions` reads the table through :func:`segmentation.io.read_table` (so it
sees exactly what the feature job reads) and returns an :class:`Inspection`; :func:`render`
turns that into the report ``segmentation-inspect`` prints: the schema with null counts, the
row count, the time range, the distinct customers, the rows per basket when a basket id is
found, the suggested role mapping, a quarantine preview by reason and a YAML snippet for
``--config``. Nothing is written.

Role guessing (:func:`guess_roles`), a schema-only heuristic:

* **By name.** Each role has a list of usual names (:data:`ROLE_NAMES`), matched ignoring
  case, spaces, underscores and hyphens, so ``InvoiceNo``, ``invoice_no`` and ``Invoice No``
  are one name. ``household_id`` is a customer id, ``sales_value`` an amount, ``basket_id``,
  ``order_id`` or ``InvoiceNo`` a basket id.
* **Then by type.** A column whose type the input contract rejects for that role (a double
  customer id, a boolean amount) is never guessed; the report says that its name matched.
  Among the rest, real timestamps and dates beat strings for ``timestamp`` and numbers beat
  numeric strings for ``amount`` and ``quantity`` (a CSV, all strings, still gets a mapping);
  then the earlier name in the role's list wins, then the earlier column. The runners-up
  are listed as alternatives.
* **One role per column**, filled in the order of :data:`ROLE_NAMES` (required roles first).
* **Integer timestamps** (a ``ts`` of epoch times) get a ``timestamp_unit`` from their size
  (:func:`guess_timestamp_unit`): below 1e11 seconds, 1e14 milliseconds, 1e17 microseconds,
  else nanoseconds; eight-digit values look like yyyymmdd dates and get none. A configured
  ``input.transactions.timestamp_unit`` wins.
* **The config wins where it means something**: a role mapped to a column of the table, a
  role mapped to any name other than its default (a typo is reported, not guessed over),
  and a role set to null (absent). A role left at its default name that the table does not
  have is guessed.

The quarantine preview runs the feature job's own checks (:func:`~segmentation.quality.
check_contract`, :func:`~segmentation.quality.canonical_columns`,
:func:`~segmentation.quality.parse_rows`, :func:`~segmentation.quality.label_rows`, with
``features.as_of`` or :func:`~segmentation.quality.default_as_of`) on that mapping, so its
counts are what ``segmentation-build-features`` would quarantine with the suggested YAML.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pyspark.sql import Column, DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.config import (
    OPTIONAL_TRANSACTION_ROLES,
    REQUIRED_TRANSACTION_ROLES,
    AppConfig,
    TableConfig,
    TransactionsInput,
)
from segmentation.errors import ContractError
from segmentation.io import CORRUPT_RECORD, read_table, table_exists
from segmentation.quality import (
    AFTER_WINDOW,
    CONTRACT_TYPES,  # the accepted types per role: a guess must pass check_contract
    QUARANTINE_REASONS,
    QualityReport,
    canonical_columns,
    check_contract,
    default_as_of,
    label_rows,
    parse_rows,
)

__all__ = [
    "ROLE_NAMES",
    "BasketSizes",
    "Inspection",
    "basket_size_distribution",
    "basket_sizes",
    "configured_roles",
    "guess_format",
    "guess_roles",
    "guess_timestamp_unit",
    "inspect_transactions",
    "render",
    "role_candidates",
    "type_mismatches",
    "yaml_snippet",
]

REQUIRED_ROLES = REQUIRED_TRANSACTION_ROLES

# Usual column names per role, most telling first. Required roles come first: they pick first.
ROLE_NAMES: dict[str, tuple[str, ...]] = {
    "customer_id": (
        "customer_id", "customer", "household_id", "household_key", "user_id", "client_id", "member_id",
        "cust_id", "customerid",
    ),
    "timestamp": (
        "timestamp", "transaction_timestamp", "ts", "datetime", "date", "invoice_date", "invoicedate",
        "order_date", "purchase_date", "trans_time", "event_time",
    ),
    "amount": (
        "amount", "sales_value", "sales", "revenue", "price_total", "total", "spend", "value", "net_sales",
        "line_total",
    ),
    "basket_id": ("basket_id", "order_id", "invoice", "invoiceno", "invoice_no", "receipt_id", "ticket_id", "basket"),
    "transaction_id": ("transaction_id", "line_id", "txn_id", "id"),
    "quantity": ("quantity", "qty", "units"),
    "product_id": ("product_id", "sku", "item_id", "stockcode", "stock_code", "article_id"),
    "category": ("category", "product_category", "department", "category_name"),
    "channel": ("channel", "store_type", "sales_channel"),
}  # fmt: skip

# Types a role prefers over the others its contract accepts.
_PREFERRED: dict[str, tuple[type[T.DataType], ...]] = {
    "timestamp": (T.TimestampType, T.TimestampNTZType, T.DateType),
    "amount": (T.NumericType,),
    "quantity": (T.NumericType,),
}

# Rows-per-basket histogram buckets (inclusive bounds; None = no upper bound).
BASKET_BUCKETS: tuple[tuple[int, int | None], ...] = ((1, 1), (2, 2), (3, 5), (6, 10), (11, 20), (21, 50), (51, None))


def _key(name: str) -> str:
    """A column name as compared with :data:`ROLE_NAMES`: lower case, letters and digits only."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def config_roles() -> tuple[str, ...]:
    """The roles ``input.transactions.columns`` accepts in this version."""
    return (*REQUIRED_TRANSACTION_ROLES, *OPTIONAL_TRANSACTION_ROLES)


def _accepts(role: str, dtype: T.DataType) -> bool:
    return isinstance(dtype, CONTRACT_TYPES[role])


def _fields(schema: T.StructType) -> list[T.StructField]:
    return [f for f in schema.fields if f.name != CORRUPT_RECORD]


def role_candidates(schema: T.StructType) -> dict[str, list[str]]:
    """Every role's columns by name and type, best first (see the module docstring); [] when none."""
    out: dict[str, list[str]] = {}
    for role, names in ROLE_NAMES.items():
        keys = [_key(n) for n in names]
        ranked = []
        for position, fld in enumerate(_fields(schema)):
            key = _key(fld.name)
            if key in keys and _accepts(role, fld.dataType):
                tier = 0 if isinstance(fld.dataType, _PREFERRED.get(role, (T.DataType,))) else 1
                ranked.append((tier, keys.index(key), position, fld.name))
        out[role] = [name for *_, name in sorted(ranked)]
    return out


def type_mismatches(schema: T.StructType) -> list[str]:
    """One line per column whose name suits a role but whose type the input contract rejects for it."""
    lines = []
    for role, names in ROLE_NAMES.items():
        keys = {_key(n) for n in names}
        for fld in _fields(schema):
            if _key(fld.name) in keys and not _accepts(role, fld.dataType):
                lines.append(
                    f"column '{fld.name}' is named like {role} but its type {fld.dataType.simpleString()} "
                    f"cannot hold that role; cast it, or map another column"
                )
    return lines


def guess_roles(schema: T.StructType, fixed: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """Role -> column: ``fixed`` as given (None = absent), the other roles guessed from ``schema``.

    A column serves one role; roles without a column are left out.
    """
    fixed = dict(fixed or {})
    mapping = {role: name for role, name in fixed.items() if name}
    taken = set(mapping.values())
    candidates = role_candidates(schema)
    for role in ROLE_NAMES:
        if role in fixed:
            continue
        column = next((c for c in candidates[role] if c not in taken), None)
        if column is not None:
            mapping[role] = column
            taken.add(column)
    order = [*ROLE_NAMES, *(r for r in mapping if r not in ROLE_NAMES)]
    return {role: mapping[role] for role in order if role in mapping}


def configured_roles(columns: Mapping[str, str | None], present: Sequence[str]) -> dict[str, str | None]:
    """The roles of ``input.transactions.columns`` that a guess must not override.

    Kept: a role mapped to a column of the table (``present``), a role mapped to a name other
    than its default, and a default role removed or set to null (None). A role still at its
    default name that the table lacks is left to the guess.
    """
    defaults = TransactionsInput().columns
    kept: dict[str, str | None] = {}
    for role, name in columns.items():
        if name and (name in present or defaults.get(role) != name):
            kept[role] = name
        elif not name and role in defaults:
            kept[role] = None
    kept.update({role: None for role in defaults if role not in columns})
    return kept


def guess_format(path: str, is_delta: bool) -> str:
    """``delta`` for a Delta table, ``csv`` for a .csv file or a directory of them, else ``parquet``."""
    if is_delta:
        return "delta"
    name = path.rstrip("/").lower()
    if name.endswith((".csv", ".csv.gz", ".csv.bz2", ".tsv")):
        return "csv"
    local = Path(path)
    if "://" not in path and local.is_dir():
        files = [p.name.lower() for p in local.iterdir() if p.is_file() and not p.name.startswith(("_", "."))]
        if files and all(".csv" in f for f in files):
            return "csv"
    return "parquet"


def guess_timestamp_unit(low: int | None, high: int | None) -> str | None:
    """The epoch unit of integer timestamps between ``low`` and ``high``, by magnitude, or None.

    Epoch seconds stay below 1e11 until the year 5138, milliseconds below 1e14 and
    microseconds below 1e17. Eight-digit values (19000101 to 21001231) look like yyyymmdd
    dates rather than seconds in 1970 and get no unit.
    """
    if low is None or high is None:
        return None
    if 19_000_101 <= low and high <= 21_001_231:
        return None
    biggest = max(abs(low), abs(high))
    for unit, limit in (("seconds", 1e11), ("milliseconds", 1e14), ("microseconds", 1e17)):
        if biggest < limit:
            return unit
    return "nanoseconds"


# --------------------------------------------------------------------------- rows per basket


def basket_sizes(df: DataFrame, basket_col: str, customer_col: str | None = None) -> DataFrame:
    """One row per basket id (null ids form one group): ``basket`` (string), ``rows`` (long) and,
    with ``customer_col``, ``customers_differ`` (true when two customers share the basket id)."""
    aggs = [F.count(F.lit(1)).alias("rows")]
    if customer_col:
        aggs.append((F.min(customer_col) != F.max(customer_col)).alias("customers_differ"))
    else:
        aggs.append(F.lit(False).alias("customers_differ"))
    return df.groupBy(F.col(basket_col).cast("string").alias("basket")).agg(*aggs)


@dataclass(frozen=True)
class BasketSizes:
    """How many rows (lines) each basket has."""

    column: str
    baskets: int
    rows_without_basket: int
    mean: float
    quantiles: dict[str, int]  # min, 25%, median, 75%, 90%, max
    histogram: tuple[tuple[str, int], ...]  # (rows per basket, baskets)
    shared_baskets: int  # basket ids seen with more than one customer


def basket_size_distribution(df: DataFrame, basket_col: str, customer_col: str | None = None) -> BasketSizes:
    """Rows per basket of ``df`` (one aggregation): count, mean, quantiles and a histogram."""
    sizes = basket_sizes(df, basket_col, customer_col)
    rows = F.col("rows")
    has_id = F.col("basket").isNotNull()
    buckets = [
        F.sum(F.when(has_id & (rows >= low) & (rows <= (high or rows)), 1).otherwise(0)).alias(f"b{i}")
        for i, (low, high) in enumerate(BASKET_BUCKETS)
    ]
    stats = sizes.agg(
        F.count(F.when(has_id, 1)).alias("baskets"),
        F.coalesce(F.sum(F.when(~has_id, rows)), F.lit(0)).alias("without"),
        F.avg(F.when(has_id, rows)).alias("mean"),
        F.min(F.when(has_id, rows)).alias("min"),
        F.max(F.when(has_id, rows)).alias("max"),
        F.percentile_approx(F.when(has_id, rows), [0.25, 0.5, 0.75, 0.9], 10_000).alias("q"),
        F.count(F.when(has_id & F.col("customers_differ"), 1)).alias("shared"),
        *buckets,
    ).first()
    quantiles = {}
    if stats["baskets"]:
        q = stats["q"]
        quantiles = {"min": stats["min"], "25%": q[0], "median": q[1], "75%": q[2], "90%": q[3], "max": stats["max"]}
    labels = [
        str(low) if high == low else f"{low}+" if high is None else f"{low}-{high}" for low, high in BASKET_BUCKETS
    ]
    return BasketSizes(
        column=basket_col,
        baskets=int(stats["baskets"]),
        rows_without_basket=int(stats["without"]),
        mean=float(stats["mean"] or 0.0),
        quantiles={k: int(v) for k, v in quantiles.items()},
        histogram=tuple((label, int(stats[f"b{i}"] or 0)) for i, label in enumerate(labels)),
        shared_baskets=int(stats["shared"]),
    )


# --------------------------------------------------------------------------- the YAML snippet


def _scalar(value: object) -> str:
    """``value`` as a YAML scalar: bare when it reads back as the same string, else double-quoted."""
    if value is None:
        return "null"
    text = str(value)
    try:
        if "#" not in text and yaml.safe_load(f"k: {text}") == {"k": text}:
            return text
    except yaml.YAMLError:
        pass
    return json.dumps(text)


def yaml_snippet(
    source: TableConfig,
    mapping: Mapping[str, str],
    roles: Sequence[str] | None = None,
    timestamp_unit: str | None = None,
) -> str:
    """The ``input.transactions`` section for ``--config``: the location and every role of ``roles``.

    ``roles`` (default: the roles this version's config knows) are written mapped or null, so
    that layered over the defaults (``conf/base.yaml``) no default name is left behind. A required role
    without a column is a commented placeholder, so the snippet always loads.
    ``timestamp_unit`` is written when given (an integer timestamp column).
    """
    roles = list(roles or config_roles())
    lines = [
        "# from segmentation-inspect: check the mapping, save as my_data.yaml, then run from this folder",
        "#   segmentation-build-features --config my_data.yaml   (over base.yaml's defaults; the same",
        "#   --config for segmentation-train-segments and segmentation-score-customers)",
        "input:",
        "  transactions:",
    ]
    if source.table:
        lines += ["    path: null", f"    table: {_scalar(source.table)}"]
    else:
        lines += [f"    path: {_scalar(source.path)}", f"    format: {source.format}", "    table: null"]
    if source.options:
        lines.append("    options:")
        lines += [f"      {_scalar(k)}: {_scalar(v)}" for k, v in source.options.items()]
    if timestamp_unit:
        lines.append(f"    timestamp_unit: {timestamp_unit}   # epoch {timestamp_unit} in '{mapping.get('timestamp')}'")
    lines.append("    columns:")
    ordered = [*(r for r in ROLE_NAMES if r in roles), *(r for r in roles if r not in ROLE_NAMES)]
    for role in ordered:
        if role in mapping:
            lines.append(f"      {role}: {_scalar(mapping[role])}")
        elif role in REQUIRED_ROLES:
            lines.append(f"      # {role}: <your column>   # REQUIRED: no column found; uncomment and name yours")
        else:
            lines.append(f"      {role}: null")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the inspection


@dataclass(frozen=True)
class Inspection:
    """Everything the report shows about one input; see :func:`render`."""

    source: TableConfig
    format_note: str
    schema: T.StructType
    nulls: dict[str, int]
    rows: int
    mapping: dict[str, str]  # role -> column: the config's where it means something, else guessed
    configured: dict[str, str | None]  # the roles that came from the config
    alternatives: dict[str, list[str]]
    notes: list[str]
    customers: int | None = None
    time_range: tuple[str, str] | None = None
    baskets: BasketSizes | None = None
    preview: QualityReport | None = None
    examples: dict[str, dict[str, str | None]] = field(default_factory=dict)
    max_quarantine_share: float = 0.0
    as_of_note: str = ""
    skipped: str | None = None  # why there is no quarantine preview
    snippet: str = ""
    timestamp_unit: str | None = None  # of an integer timestamp column
    timestamp_unit_note: str = ""


def resolve_source(
    spark: SparkSession, base: TransactionsInput, path_or_table: str, fmt: str | None = None, table: bool = False
) -> tuple[TransactionsInput, str]:
    """``base`` pointed at ``path_or_table``, and a note on how its format was chosen."""
    if table:
        return base.model_copy(update={"table": path_or_table, "path": None}), "catalog table"
    if fmt:
        chosen, note = fmt, "--format"
    else:
        is_delta = table_exists(spark, TableConfig(path=path_or_table, format="delta"))
        chosen, note = guess_format(path_or_table, is_delta), "guessed from the path; --format to change"
    return base.model_copy(update={"path": path_or_table, "format": chosen, "table": None}), note


def _parsed(df: DataFrame, mapping: Mapping[str, str], timestamp_unit: str | None) -> DataFrame:
    """The feature job's parse of ``df``. A required role without a column is a null column here,
    so the stats of the mapped ones still come from the same parser."""
    filled = df
    columns = dict(mapping)
    for role in REQUIRED_ROLES:
        if role not in columns:
            columns[role] = f"__missing_{role}"
            filled = filled.withColumn(columns[role], F.lit(None).cast("string"))
    return parse_rows(canonical_columns(filled, columns), timestamp_unit)


def _text(column: str) -> Column:
    return F.col(column).cast("string")


def inspect_transactions(
    spark: SparkSession, cfg: AppConfig, source: TransactionsInput, format_note: str = ""
) -> Inspection:
    """Read ``source`` (nothing is written) and describe it: stats, guessed roles, quarantine preview.

    The roles of ``source.columns`` that mean something for this table win over the guess
    (:func:`configured_roles`); ``cfg.features`` gives ``as_of`` and ``max_quarantine_share``.
    """
    df = read_table(spark, source)
    fields = _fields(df.schema)
    schema = T.StructType(fields)
    names = [f.name for f in fields]
    configured = configured_roles(source.columns, names)
    mapping = guess_roles(schema, configured)
    candidates = role_candidates(schema)
    alternatives = {role: [c for c in cols if c != mapping.get(role)] for role, cols in candidates.items()}
    where = f"{source.format} input '{source.location}'" if not source.table else f"table '{source.table}'"

    customer = mapping.get("customer_id") if _contract_ok(df, "customer_id", mapping, where) else None
    ts_column = mapping.get("timestamp")
    integer_ts = ts_column in names and isinstance(df.schema[ts_column].dataType, (T.IntegerType, T.LongType))
    raw = _table_counts(df, names, customer, ts_column if integer_ts else None)
    rows = int(raw["__rows"])
    unit, unit_note = _timestamp_unit(source, integer_ts, raw)
    baskets = None
    if mapping.get("basket_id") in names:
        baskets = basket_size_distribution(df, mapping["basket_id"], customer)

    common = dict(
        source=source, format_note=format_note, schema=schema, rows=rows, mapping=mapping, configured=configured,
        nulls={n: rows - int(raw[f"__n{i}"]) for i, n in enumerate(names)}, alternatives=alternatives,
        notes=type_mismatches(schema), customers=int(raw["__customers"]) if customer else None,
        baskets=baskets, max_quarantine_share=cfg.features.max_quarantine_share,
        snippet=yaml_snippet(source, mapping, timestamp_unit=unit), timestamp_unit=unit, timestamp_unit_note=unit_note,
    )  # fmt: skip
    skipped = _preview_blocker(df, mapping, where, rows, unit)
    if skipped is not None:
        return Inspection(**common, time_range=_time_range(df, mapping, where, rows, unit), skipped=skipped)
    return Inspection(**common, **_quarantine_preview(df, mapping, unit, cfg.features.as_of))


def _table_counts(df: DataFrame, names: Sequence[str], customer: str | None, integer_ts_column: str | None) -> Row:
    """One pass over the raw table: ``__rows``, ``__n<i>`` (non-null values of ``names[i]``),
    ``__customers`` (distinct, with a usable customer column) and ``__ts_low`` / ``__ts_high``
    (the range of an integer timestamp column)."""
    aggs = [F.count(F.lit(1)).alias("__rows"), *(F.count(F.col(n)).alias(f"__n{i}") for i, n in enumerate(names))]
    if customer:
        aggs.append(F.count_distinct(_text(customer)).alias("__customers"))
    if integer_ts_column:
        aggs += [F.min(integer_ts_column).alias("__ts_low"), F.max(integer_ts_column).alias("__ts_high")]
    return df.agg(*aggs).first()


def _time_range(
    df: DataFrame, mapping: Mapping[str, str], where: str, rows: int, unit: str | None
) -> tuple[str, str] | None:
    """The first and last parsed timestamp when the quarantine preview cannot run, if the
    timestamp column passes the input contract on its own."""
    usable = {r: n for r, n in mapping.items() if _contract_ok(df, r, mapping, where, unit)}
    if "timestamp" not in usable or not rows:
        return None
    parsed = _parsed(df, {r: n for r, n in usable.items() if r in REQUIRED_ROLES}, unit)
    low, high = parsed.agg(_text_min_max("timestamp")).first()[0]
    return (low, high) if low is not None else None


def _quarantine_preview(
    df: DataFrame, mapping: Mapping[str, str], unit: str | None, configured_as_of: dt.date | None
) -> dict[str, Any]:
    """The feature job's checks on ``df``: the :class:`Inspection` fields ``time_range``,
    ``preview``, ``examples`` and ``as_of_note``, or ``skipped`` when no timestamp parses."""
    parsed = parse_rows(canonical_columns(df, mapping), unit)
    as_of = configured_as_of or default_as_of(parsed)
    if as_of is None:
        return {"skipped": f"column '{mapping['timestamp']}' has no parseable timestamp; the feature job would stop"}
    groups = _reason_groups(label_rows(parsed, as_of, window_set=configured_as_of is not None))
    by_reason = {g["reason"]: g for g in groups}
    after_window = by_reason.pop(AFTER_WINDOW, None)  # outside the snapshot: neither kept nor quarantined
    kept = by_reason.get(None)
    firsts = [g["first"] for g in groups if g["first"] is not None]
    lasts = [g["last"] for g in groups if g["last"] is not None]
    report = QualityReport(
        as_of=as_of,
        rows_read=sum(int(g["rows"]) for g in groups),
        rows_kept=int(kept["rows"]) if kept else 0,
        customers=int(kept["customers"]) if kept else 0,
        quarantined={r: int(by_reason[r]["rows"]) if r in by_reason else 0 for r in QUARANTINE_REASONS},
        rows_after_window=int(after_window["rows"]) if after_window else 0,
    )
    return {
        "time_range": (min(firsts), max(lasts)) if firsts else None,
        "preview": report,
        "examples": {r: g["example"].asDict() for r, g in by_reason.items() if r is not None},
        "as_of_note": "features.as_of" if configured_as_of else "the day after the newest transaction (default)",
    }


def _reason_groups(labelled: DataFrame) -> list[Row]:
    """Per quarantine reason (None: kept): rows, first and last timestamp, customers and an example row."""
    example = F.struct(
        F.col("customer_id"),
        *([F.col("transaction_id")] if "transaction_id" in labelled.columns else []),
        _text("timestamp_raw").alias("timestamp"),
        _text("amount_raw").alias("amount"),
    )
    return (
        labelled.groupBy("reason")
        .agg(
            F.count(F.lit(1)).alias("rows"),
            F.min("timestamp").cast("string").alias("first"),
            F.max("timestamp").cast("string").alias("last"),
            F.count_distinct("customer_id").alias("customers"),
            F.any_value(example).alias("example"),
        )
        .collect()
    )


def _text_min_max(column: str) -> Column:
    return F.array(F.min(column).cast("string"), F.max(column).cast("string"))


def _contract_ok(df: DataFrame, role: str, columns: Mapping[str, str], where: str, unit: str | None = None) -> bool:
    """Whether ``role``'s column alone passes the input contract (so its stats can be computed)."""
    if role not in columns:
        return False
    try:
        check_contract(df, {role: columns[role]}, where, unit)
    except ContractError:
        return False
    return True


def _timestamp_unit(source: TransactionsInput, integer_ts: bool, raw: Row) -> tuple[str | None, str]:
    """The configured ``timestamp_unit``, else for an integer timestamp column a guess; and a note."""
    if source.timestamp_unit or not integer_ts:
        return source.timestamp_unit, "input.transactions.timestamp_unit" if source.timestamp_unit else ""
    if raw["__ts_low"] is None:
        return None, "every value is null"
    guessed = guess_timestamp_unit(raw["__ts_low"], raw["__ts_high"])
    if guessed is None:
        return None, (
            f"integers from {raw['__ts_low']} to {raw['__ts_high']} do not look like epoch times "
            "(yyyymmdd?); convert the column to a date or timestamp"
        )
    return guessed, f"guessed from their size ({raw['__ts_low']} to {raw['__ts_high']})"


def _preview_blocker(
    df: DataFrame, columns: Mapping[str, str], where: str, rows: int, unit: str | None = None
) -> str | None:
    """Why the feature job would stop before quarantining anything with ``columns``, or None."""
    missing = [role for role in REQUIRED_ROLES if role not in columns]
    if missing:
        sets = " ".join(f"--set input.transactions.columns.{r}=<column>" for r in missing)
        return f"no column found for the required role(s) {', '.join(missing)}; name yours with {sets}"
    try:
        check_contract(df, columns, where, unit)
    except ContractError as exc:
        return f"the feature job would stop: {exc}"
    if rows == 0:
        return f"{where} is empty: the feature job would stop, there are no transactions to build features from"
    return None


# --------------------------------------------------------------------------- the printed report


def _n(value: int) -> str:
    return f"{value:,}"


def _short(value: object, width: int = 40) -> str:
    text = "null" if value is None else str(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def render(ins: Inspection) -> str:
    """The report printed by ``segmentation-inspect``."""
    out: list[str] = []
    src = ins.source
    location = f"table {src.table}" if src.table else f"{src.format} {src.path}"
    out.append(f"Input: {location}" + (f" ({ins.format_note})" if ins.format_note else ""))
    out.append(f"Rows: {_n(ins.rows)}   Columns: {len(ins.schema.fields)}")
    role_of = {column: role for role, column in ins.mapping.items()}
    out += ["", "Schema (column, type, null values, suggested role)"]
    width = max([len(f.name) for f in ins.schema.fields] + [6])
    for fld in ins.schema.fields:
        role = role_of.get(fld.name)
        out.append(
            f"  {fld.name:<{width}}  {fld.dataType.simpleString():<14} {_n(ins.nulls.get(fld.name, 0)):>12} null"
            + (f"   -> {role}" if role else "")
        )
    out.append("")
    if ins.time_range:
        ts = ins.mapping["timestamp"]
        unit = f", epoch {ins.timestamp_unit}: {ins.timestamp_unit_note}" if ins.timestamp_unit else ""
        out.append(f"Time range ({ts}{unit}): {ins.time_range[0]} to {ins.time_range[1]}")
    else:
        out.append("Time range: unknown (no usable timestamp column)")
    if ins.customers is not None:
        out.append(f"Distinct customers ({ins.mapping['customer_id']}): {_n(ins.customers)}")
    else:
        out.append("Distinct customers: unknown (no usable customer column)")
    out += [""] + _render_baskets(ins.baskets)
    out += ["", "Suggested role mapping (input.transactions.columns)"] + _render_roles(ins, width)
    out += [""] + _render_preview(ins)
    out += ["", "YAML for --config", "", ins.snippet.rstrip("\n")]
    return "\n".join(out) + "\n"


def _render_roles(ins: Inspection, width: int) -> list[str]:
    """A line per role: its column and where the mapping came from, or why it has none; then the notes."""
    out: list[str] = []
    known = config_roles()
    defaults = TransactionsInput().columns
    for role in [*ROLE_NAMES, *(r for r in known if r not in ROLE_NAMES)]:
        column = ins.mapping.get(role)
        if column:
            if ins.configured.get(role) != column:
                origin = "guessed"
            else:  # the config's default name is a guess too, but the feature job would use it as is
                origin = "default name" if defaults.get(role) == column else "from your config"
            line = f"  {role:<15} {column:<{width}}  {origin}"
            if ins.alternatives.get(role):
                line += f"; also possible: {', '.join(ins.alternatives[role])}"
        elif role in REQUIRED_ROLES:
            line = (
                f"  {role:<15} {'-':<{width}}  NOT FOUND (required): --set input.transactions.columns.{role}=<column>"
            )
        elif role in ins.configured:
            line = f"  {role:<15} {'-':<{width}}  absent (set to null in your config)"
        else:
            line = f"  {role:<15} {'-':<{width}}  not found (optional)"
        out.append(line)
    out += [f"  note: {note}" for note in ins.notes]
    if ins.timestamp_unit is None and ins.timestamp_unit_note:
        out.append(f"  note: {ins.mapping['timestamp']}: {ins.timestamp_unit_note}")
    return out


def _render_baskets(b: BasketSizes | None) -> list[str]:
    if b is None:
        return ["Rows per basket: no basket id column found"]
    if not b.baskets:
        return [f"Rows per basket ({b.column}): every basket id is null"]
    q = b.quantiles
    lines = [
        f"Rows per basket ({b.column}): {_n(b.baskets)} baskets, mean {b.mean:.1f}; "
        f"min {q['min']}, 25% {q['25%']}, median {q['median']}, 75% {q['75%']}, 90% {q['90%']}, max {q['max']}"
    ]
    for label, count in b.histogram:
        share = count / b.baskets
        lines.append(f"  {label:>6} rows {_n(count):>12} baskets {share:7.1%} {'#' * round(share * 40)}")
    if b.rows_without_basket:
        lines.append(f"  {_n(b.rows_without_basket)} rows have no basket id")
    if b.shared_baskets:
        lines.append(
            f"  {_n(b.shared_baskets)} basket ids are shared by more than one customer: "
            "is the id unique only within a store or a day?"
        )
    return lines


def _render_preview(ins: Inspection) -> list[str]:
    if ins.preview is None:
        return [f"Quarantine preview: skipped; {ins.skipped}"]
    r = ins.preview
    lines = [
        f"Quarantine preview (what segmentation-build-features would quarantine; nothing was written), "
        f"as_of {r.as_of}: {ins.as_of_note}",
        f"  rows read {_n(r.rows_read)}, kept {_n(r.rows_kept)}, quarantined {_n(r.rows_quarantined)} "
        f"({r.quarantined_share:.2%}), {_n(r.customers)} customers with kept rows",
    ]
    for reason in QUARANTINE_REASONS:
        count = r.quarantined.get(reason, 0)
        if count:
            example = ", ".join(f"{k}={_short(v)}" for k, v in ins.examples.get(reason, {}).items())
            lines.append(f"  {reason:<26} {_n(count):>12}   e.g. {example}")
    if not r.rows_quarantined:
        lines.append("  nothing would be quarantined")
    if r.quarantined_share > ins.max_quarantine_share:
        lines.append(
            f"  over features.max_quarantine_share={ins.max_quarantine_share}: the feature job would stop and "
            "write nothing; fix the input, the mapping, or raise the share"
        )
    else:
        lines.append(f"  within features.max_quarantine_share={ins.max_quarantine_share}")
    return lines
