from __future__ import annotations

from pathlib import Path

from jobs.generate_transactions import main

BASE = str(Path(__file__).resolve().parents[1] / "conf" / "base.yaml")


def test_job_writes_three_delta_tables(spark, tmp_path):
    out = tmp_path / "gen"
    args = ["--config", BASE, "--set", "generator.n_transactions=5000", "--set", "generator.n_customers=300"]
    for name in ("transactions", "customers", "ground_truth"):
        args += ["--set", f"generator.{name}.path={out / name}"]
    assert main(args) == 0
    assert spark.read.format("delta").load(str(out / "transactions")).count() == 5000
    assert spark.read.format("delta").load(str(out / "customers")).count() == 300
    assert spark.read.format("delta").load(str(out / "ground_truth")).count() == 300
    # a rerun replaces the tables with the same rows (new Delta version, same content)
    assert main(args) == 0
    assert spark.read.format("delta").load(str(out / "transactions")).count() == 5000
    versions = spark.sql(f"DESCRIBE HISTORY delta.`{out / 'transactions'}`").count()
    assert versions == 2


def test_bad_config_key_exits_2_with_one_line(capsys, tmp_path):
    assert main(["--config", BASE, "--set", "generator.n_transaction=5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("generate_transactions: error: invalid configuration: generator.n_transaction")
