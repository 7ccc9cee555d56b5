"""Bad input, end to end through the feature job: each ends in one clear line on stderr, exit
code 2 and no output at all (or quarantined rows with exact counts, where the job's rules say so)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from jobs.build_features import main
from segmentation.config import TableConfig
from segmentation.io import delta_version

BASE = str(Path(__file__).resolve().parent.parent / "conf" / "base.yaml")
OUTPUTS = ("features", "quarantine", "quality")
SCHEMA = "transaction_id STRING, customer_id STRING, timestamp STRING, amount STRING"
GOOD = [(f"T{i}", f"C{i % 4}", f"2024-0{1 + i % 6}-{10 + i:02d} 12:00:00", f"{10 + i}.5") for i in range(16)]


def run(tmp_path, capsys, fmt="parquet", *sets):
    args = ["--config", BASE, "--set", f"input.transactions.path={tmp_path / 'in'}",
            "--set", f"input.transactions.format={fmt}",
            "--set", "input.transactions.columns.quantity=null", "--set", "input.transactions.columns.category=null",
            "--set", "input.transactions.columns.channel=null"]  # fmt: skip
    for name, key in zip(OUTPUTS, ("output", "quarantine", "quality"), strict=True):
        args += ["--set", f"features.{key}.path={tmp_path / name}"]
    for item in sets:
        args += ["--set", item]
    capsys.readouterr()
    code = main(args)
    reasons = [line for line in capsys.readouterr().err.splitlines() if line.startswith("build_features:")]
    return code, reasons


def versions(spark, tmp_path):
    return {name: delta_version(spark, TableConfig(path=str(tmp_path / name))) for name in OUTPUTS}


def parquet(spark, path, rows, schema=SCHEMA):
    spark.createDataFrame(rows, schema).coalesce(1).write.mode("append").parquet(str(path))


def corrupt_file(spark, root):
    parquet(spark, root, GOOD)
    (root / "part-99999-truncated.snappy.parquet").write_bytes(b"PAR1 this file was cut off in transit")


def mixed_customer_ids(spark, root):
    # Two producers wrote the same folder: one with integer customer ids, one with strings.
    parquet(spark, root, [(r[0], int(r[1][1:]), r[2], r[3]) for r in GOOD],
            "transaction_id STRING, customer_id BIGINT, timestamp STRING, amount STRING")  # fmt: skip
    parquet(spark, root, [("X1", "C9", "2024-03-01 10:00:00", "5.0")])


def malformed_csv(spark, root):
    root.mkdir()
    lines = ["transaction_id,customer_id,timestamp,amount", "T1,C1,2024-01-01 10:00:00,3.5"]
    lines += [f"T{i},C{i},2024-01-02 10:00:00" for i in range(2, 6)]  # a field short
    lines += ['T9,"C9,2024-01-03 10:00:00,7']  # an unterminated quote swallows the rest of its line
    (root / "tx.csv").write_text("\n".join(lines) + "\n")


def pandas_file_without_amount(spark, root):
    # pandas' defaults: nanosecond timestamps, which Spark alone cannot read; the missing column must show
    import pandas as pd

    root.mkdir()
    frame = pd.DataFrame([r[:3] for r in GOOD], columns=["transaction_id", "customer_id", "timestamp"])
    frame.assign(timestamp=pd.to_datetime(frame["timestamp"])).to_parquet(root / "export.parquet")


CASES = {
    "missing column": (lambda spark, root: parquet(spark, root, [r[:3] for r in GOOD],
                                                   "transaction_id STRING, customer_id STRING, timestamp STRING"),
                       "parquet", ["column 'amount' (role amount) is missing", "in'"]),
    "pandas file without amount": (pandas_file_without_amount, "parquet", ["column 'amount' (role amount) is missing"]),
    "mistyped column": (lambda spark, root: parquet(spark, root, [(*r[:3], True) for r in GOOD],
                                                    "transaction_id STRING, customer_id STRING, timestamp STRING, "
                                                    "amount BOOLEAN"),
                        "parquet", ["column 'amount' (role amount)", "has type boolean", "expected a number"]),
    "empty table": (lambda spark, root: parquet(spark, root, []), "parquet", ["is empty"]),
    "corrupt parquet file": (corrupt_file, "parquet", ["part-99999-truncated.snappy.parquet", "remove, replace"]),
    "mixed customer id types": (mixed_customer_ids, "parquet", ["column [customer_id]", ".parquet"]),
    "malformed csv rows": (malformed_csv, "csv", ["malformed_row=5", "Nothing was written"]),
    "all-null amounts": (lambda spark, root: parquet(spark, root, [(*r[:3], None) for r in GOOD]),
                         "parquet", ["16 of 16 rows", "null_amount=16"]),
    "non-finite amounts": (lambda spark, root: parquet(spark, root, [(*r[:3], ["NaN", "Infinity"][i % 2])
                                                                     for i, r in enumerate(GOOD)]),
                           "parquet", ["16 of 16 rows", "non_finite_amount=16"]),
    "timestamps in the future": (lambda spark, root: parquet(spark, root, [(*r[:2], "2999-01-01 00:00:00", r[3])
                                                                           for r in GOOD]),
                                 "parquet", ["16 of 16 rows", "after_as_of=16"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_stops_with_one_line_and_writes_nothing(spark, tmp_path, capsys, case):
    make, fmt, fragments = CASES[case]
    make(spark, tmp_path / "in")
    code, reasons = run(tmp_path, capsys, fmt)
    assert code == 2, reasons
    assert len(reasons) == 1 and reasons[0].startswith("build_features: error: "), reasons
    for fragment in fragments:
        assert fragment in reasons[0], (fragment, reasons[0])
    assert versions(spark, tmp_path) == dict.fromkeys(OUTPUTS)  # not even an empty table
    assert not any((tmp_path / name).exists() for name in OUTPUTS)


def test_a_bad_file_landing_later_leaves_every_table_on_its_last_version(spark, tmp_path, capsys):
    parquet(spark, tmp_path / "in", GOOD)
    assert run(tmp_path, capsys, "parquet", "features.as_of=2024-06-30")[0] == 0
    before = versions(spark, tmp_path)
    rows = spark.read.format("delta").load(str(tmp_path / "features")).collect()
    (tmp_path / "in" / "part-99999-truncated.snappy.parquet").write_bytes(b"PAR1 cut off")
    code, reasons = run(tmp_path, capsys, "parquet", "features.as_of=2024-06-30")
    assert code == 2 and "part-99999-truncated" in reasons[0]
    assert versions(spark, tmp_path) == before
    assert spark.read.format("delta").load(str(tmp_path / "features")).collect() == rows


def test_a_few_bad_rows_are_quarantined_with_exact_counts(spark, tmp_path, capsys):
    root = tmp_path / "in"
    root.mkdir()
    good = [",".join(r) for r in GOOD]
    bad = [
        "B1,C1,2024-02-01 10:00:00",  # malformed: a field short
        "B2,C1,2024-02-01 10:00:00,1.0,surplus",  # malformed: a field too many
        "B3,C2,2024-02-02 10:00:00,NaN",
        "B4,C2,2024-02-02 10:00:00,Infinity",
        "B5,C3,2024-02-03 10:00:00,",  # null amount
        "B6,C3,2024-02-04 10:00:00,twelve",
        f"B7,C3,{dt.date.today() + dt.timedelta(days=30)} 10:00:00,9.0",  # in the future
        ",,2024-02-05 10:00:00,3.0,",  # a shifted line: one field too many
    ]
    (root / "tx.csv").write_text("\n".join(["transaction_id,customer_id,timestamp,amount", *good, *bad]) + "\n")
    code, reasons = run(tmp_path, capsys, "csv", "features.max_quarantine_share=0.5")
    assert code == 0 and reasons == []
    quality = spark.read.format("delta").load(str(tmp_path / "quality")).first().asDict()
    assert quality["dq_rows_read"] == 24 and quality["dq_rows_kept"] == 16
    expected = {"malformed_row": 3, "non_finite_amount": 2, "null_amount": 1, "unparseable_amount": 1,
                "after_as_of": 1}  # fmt: skip
    assert {k[len("dq_quarantined_"):]: v for k, v in quality.items()
            if k.startswith("dq_quarantined_") and v} == expected  # fmt: skip
    quarantine = spark.read.format("delta").load(str(tmp_path / "quarantine"))
    assert sorted(r.transaction_id or "" for r in quarantine.collect()) == sorted(
        ["B1", "B2", "B3", "B4", "B5", "B6", "B7", ""]
    )
    features = spark.read.format("delta").load(str(tmp_path / "features"))
    assert {r.customer_id for r in features.collect()} == {"C0", "C1", "C2", "C3"}
    assert str(features.first().as_of) == str(dt.date.today())  # the future row does not move the window


def test_malformed_csv_rows_are_quarantined_even_when_only_some_columns_are_read(spark, tmp_path, capsys):
    # The user's file has columns the job does not use; column pruning must not hide a short line.
    root = tmp_path / "in"
    root.mkdir()
    rows = ["note,transaction_id,customer_id,timestamp,amount,store"]
    rows += [f"x,{t},{c},{ts},{a},s1" for t, c, ts, a in GOOD]
    rows += ["x,B1,C1,2024-02-01 10:00:00,4.0"]  # no store: malformed although every used field is there
    (root / "tx.csv").write_text("\n".join(rows) + "\n")
    code, _ = run(tmp_path, capsys, "csv", "features.max_quarantine_share=0.5", "features.as_of=2024-06-30")
    assert code == 0
    quality = spark.read.format("delta").load(str(tmp_path / "quality")).first()
    assert quality.dq_quarantined_malformed_row == 1 and quality.dq_rows_kept == 16
