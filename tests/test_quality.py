from __future__ import annotations

import datetime as dt

import pytest

from segmentation.errors import ContractError
from segmentation.quality import (
    AFTER_WINDOW,
    QualityReport,
    canonical_columns,
    check_contract,
    default_as_of,
    label_rows,
    parse_rows,
    resolve_roles,
)

ROLES = {"customer_id": "cust", "timestamp": "ts", "amount": "amt", "transaction_id": "tid"}
AS_OF = dt.date(2024, 1, 31)


def labelled(spark, rows):
    raw = spark.createDataFrame(rows, "cust STRING, ts STRING, amt STRING, tid STRING")
    return label_rows(parse_rows(canonical_columns(raw, ROLES)), AS_OF)


def test_each_reason_and_first_reason_wins(spark):
    rows = [
        ("k1", "2024-01-10 10:00:00", "10.5", "t1"),  # kept
        ("k2", "2024-01-10", "-4", "t2"),  # a return is kept, a date-only timestamp parses
        (None, "2024-01-10", "1", "t3"),
        ("  ", "2024-01-10", "1", "t4"),
        ("c", None, "1", "t5"),
        ("c", "yesterday", "1", "t6"),
        ("c", "2024-01-10", None, "t7"),
        ("c", "2024-01-10", "12,50", "t8"),
        ("c", "2024-01-10", "NaN", "t9"),
        ("c", "2024-01-10", "Infinity", "t10"),
        ("c", "2024-02-01 00:00:00", "1", "t11"),  # the day after as_of
        ("c", "2024-01-31 23:59:59", "1", "t12"),  # on as_of: kept (inclusive)
        ("d", "2024-01-10 09:00:00", "5", "dup"),  # first of a duplicated id: kept
        ("d", "2024-01-10 09:00:00", "5", "dup"),  # exact duplicate: quarantined
        (None, "garbage", None, "t13"),  # several problems: the first one counts
        ("e", "garbage", "2", "t1"),  # invalid row sharing t1 never evicts the valid one
    ]
    reasons = {(r.transaction_id, r.reason) for r in labelled(spark, rows).collect()}
    assert reasons == {
        ("t1", None), ("t2", None), ("t3", "null_customer_id"), ("t4", "null_customer_id"), ("t5", "null_timestamp"),
        ("t6", "unparseable_timestamp"), ("t7", "null_amount"), ("t8", "unparseable_amount"),
        ("t9", "non_finite_amount"), ("t10", "non_finite_amount"), ("t11", "after_as_of"), ("t12", None),
        ("dup", None), ("dup", "duplicate_transaction_id"), ("t13", "null_customer_id"),
        ("t1", "unparseable_timestamp"),
    }  # fmt: skip


def test_after_a_set_as_of_a_row_is_outside_the_window_unless_it_has_a_problem(spark):
    raw = spark.createDataFrame(
        [("a", "2024-02-01", "1", "t1"), ("b", "2024-02-01", "NaN", "t2"), ("c", "2024-01-31", "1", "t3")],
        "cust STRING, ts STRING, amt STRING, tid STRING",
    )
    labels = label_rows(parse_rows(canonical_columns(raw, ROLES)), AS_OF, window_set=True)
    assert {(r.transaction_id, r.reason) for r in labels.collect()} == {
        ("t1", AFTER_WINDOW), ("t2", "non_finite_amount"), ("t3", None),
    }  # fmt: skip
    report = QualityReport(AS_OF, rows_read=10, rows_kept=3, customers=2, quarantined={"null_amount": 1},
                           rows_after_window=6)  # fmt: skip
    assert report.quarantined_share == pytest.approx(0.25)  # of the 4 rows in the window
    assert report.as_dict()["dq_rows_after_window"] == 6 and "6 after as_of, left out" in report.summary()


def test_numeric_and_timestamp_typed_input(spark):
    raw = spark.createDataFrame(
        [(1, dt.datetime(2024, 1, 2, 3, 4), float("nan")), (2, dt.datetime(2024, 1, 2), 3.0)],
        "cust BIGINT, ts TIMESTAMP, amt DOUBLE",
    )
    roles = {"customer_id": "cust", "timestamp": "ts", "amount": "amt"}
    out = {r.customer_id: r.reason for r in label_rows(parse_rows(canonical_columns(raw, roles)), AS_OF).collect()}
    assert out == {"1": "non_finite_amount", "2": None}


def test_contract_names_missing_column_and_wrong_type(spark):
    df = spark.createDataFrame([("a", True)], "cust STRING, amt BOOLEAN")
    with pytest.raises(
        ContractError, match=r"column 'ts' \(role timestamp\) is missing from src.*input.transactions.columns.timestamp"
    ):
        check_contract(df, {"customer_id": "cust", "timestamp": "ts"}, "src")
    with pytest.raises(ContractError, match=r"column 'amt' \(role amount\) in src has type boolean, expected a number"):
        check_contract(df, {"customer_id": "cust", "amount": "amt"}, "src")
    mixed = spark.createDataFrame([(["x"],)], "cust ARRAY<STRING>")
    with pytest.raises(ContractError, match=r"'cust' \(role customer_id\).*array<string>"):
        check_contract(mixed, {"customer_id": "cust"}, "src")


def test_default_as_of_is_day_after_newest_but_never_after_today(spark):
    raw = spark.createDataFrame(
        [("a", "2024-01-10", "1"), ("a", "2024-03-05 10:00:00", "1")], "cust STRING, ts STRING, amt STRING"
    )
    parsed = parse_rows(canonical_columns(raw, {"customer_id": "cust", "timestamp": "ts", "amount": "amt"}))
    assert default_as_of(parsed, today=dt.date(2025, 1, 1)) == dt.date(2024, 3, 6)
    # a timestamp from the future does not move the window; it is quarantined instead
    assert default_as_of(parsed, today=dt.date(2024, 2, 1)) == dt.date(2024, 2, 1)


def test_quality_report_as_dict_and_summary():
    report = QualityReport(dt.date(2024, 1, 31), rows_read=10, rows_kept=7, customers=3,
                           quarantined={"null_amount": 2, "after_as_of": 1})  # fmt: skip
    metrics = report.as_dict()
    assert metrics["dq_rows_quarantined"] == 3 and metrics["dq_quarantined_null_amount"] == 2
    assert metrics["dq_quarantined_duplicate_transaction_id"] == 0
    assert report.quarantined_share == pytest.approx(0.3)
    assert "after_as_of=1" in report.summary() and "null_amount=2" in report.summary()


def test_optional_roles_at_their_default_name_are_skipped_when_absent(caplog):
    columns = {"customer_id": "cust", "timestamp": "ts", "amount": "amt", "quantity": "quantity",
               "category": "category", "basket_id": "order_no"}  # fmt: skip
    with caplog.at_level("INFO", logger="segmentation.quality"):
        kept = resolve_roles(["cust", "ts", "amt", "category"], columns, explicit={"basket_id"})
    # quantity is absent under its default name: skipped; basket_id was named by the user: kept, so that
    # check_contract reports it missing
    assert kept == {"customer_id": "cust", "timestamp": "ts", "amount": "amt", "category": "category",
                    "basket_id": "order_no"}  # fmt: skip
    assert [r.getMessage() for r in caplog.records if "treated as absent" in r.getMessage()] == [
        "optional role(s) quantity: no column of that name in the input, so treated as absent "
        "(map them with input.transactions.columns.<role>)"
    ]


def test_integer_epoch_timestamps_need_their_unit(spark):
    raw = spark.createDataFrame(
        [("a", 1704189600, 1704189600123, "1704189600", "1.0")],
        "cust STRING, s BIGINT, ms BIGINT, txt STRING, amt STRING",
    )
    roles = {"customer_id": "cust", "timestamp": "s", "amount": "amt"}
    with pytest.raises(ContractError, match=r"column 's' \(role timestamp\).*holds integers.*timestamp_unit"):
        check_contract(raw, roles, "src")
    check_contract(raw, roles, "src", timestamp_unit="seconds")
    expected = {
        "s": ("seconds", dt.datetime(2024, 1, 2, 10)),
        "ms": ("milliseconds", dt.datetime(2024, 1, 2, 10, 0, 0, 123000)),
        "txt": ("seconds", dt.datetime(2024, 1, 2, 10)),  # a CSV export of epoch seconds
    }
    for column, (unit, when) in expected.items():
        parsed = parse_rows(canonical_columns(raw, {**roles, "timestamp": column}), unit).first()
        assert parsed.timestamp == when, column


def test_missing_amount_is_reported_before_any_type(spark):
    raw = spark.createDataFrame([("a", 1704189600)], "cust STRING, ts BIGINT")
    with pytest.raises(ContractError, match=r"column 'amt' \(role amount\) is missing"):
        check_contract(raw, {"customer_id": "cust", "timestamp": "ts", "amount": "amt"}, "src")
