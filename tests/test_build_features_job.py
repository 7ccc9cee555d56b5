from __future__ import annotations

from pathlib import Path

from jobs.build_features import main

BASE = str(Path(__file__).resolve().parent.parent / "conf" / "base.yaml")


def test_job_builds_features_from_generated_data(spark, tmp_path):
    from segmentation.config import GeneratorConfig
    from segmentation.generator import generate_transactions

    generate_transactions(spark, GeneratorConfig(n_transactions=3000, n_customers=200)).write.format("delta").save(
        str(tmp_path / "tx")
    )
    args = ["--config", BASE, "--set", f"input.transactions.path={tmp_path / 'tx'}"]
    for name in ("output", "quarantine", "quality"):
        args += ["--set", f"features.{name}.path={tmp_path / name}"]
    assert main(args) == 0
    features = spark.read.format("delta").load(str(tmp_path / "output"))
    assert features.count() == features.select("customer_id").distinct().count() > 100
    assert str(features.first().as_of) == "2025-01-01"  # the day after the newest generated transaction
    quarantine = spark.read.format("delta").load(str(tmp_path / "quarantine"))
    assert {r.reason for r in quarantine.collect()} <= {"duplicate_transaction_id"}


def test_missing_input_exits_2_naming_the_path(tmp_path, capsys):
    assert main(["--config", BASE, "--set", f"input.transactions.path={tmp_path / 'nowhere'}"]) == 2
    assert "nowhere" in capsys.readouterr().err.strip().splitlines()[-1]
