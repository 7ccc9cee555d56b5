"""The CLV job end to end (jobs/train_clv.py): Delta output, MLflow run, registered pyfunc, holdout."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import lifetimes.datasets
import mlflow
import numpy as np
import pandas as pd
import pytest
from lifetimes.datasets import load_cdnow_summary_data_with_monetary_value
from lifetimes.utils import calibration_and_holdout_data
from mlflow.tracking import MlflowClient
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.train_clv import main
from segmentation import clv
from segmentation.config import OutputConfig
from segmentation.io import read_table, write_table

BASE = Path(__file__).resolve().parent.parent / "conf" / "base.yaml"
AS_OF = dt.date(1997, 9, 30)


def _args(root: Path, **extra) -> list[str]:
    sets = {
        "features.output.path": root / "features",
        "clv.output.path": root / "clv",
        "input.customers.enabled": "false",
        "mlflow.tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
        "mlflow.artifact_location": root / "artifacts",
        "mlflow.experiment": "test-clv",
        **extra,
    }
    args = ["--config", str(BASE)]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    return args


def _features(spark, root: Path) -> pd.DataFrame:
    """lifetimes' CDNOW summary converted to days, as a feature snapshot of 2,357 customers."""
    summary = load_cdnow_summary_data_with_monetary_value().reset_index()
    frame = pd.DataFrame(
        {
            "customer_id": summary["customer_id"].astype(str),
            "as_of": AS_OF,
            "frequency": summary["frequency"].astype(float),
            "recency": (summary["recency"] * 7).round(),
            "T": (summary["T"] * 7).round(),
            "monetary_value": summary["monetary_value"].astype(float),
        }
    )
    frame.loc[frame["frequency"] == 0, "recency"] = 0.0
    frame["recency"] = np.minimum(frame["recency"], frame["T"])
    schema = T.StructType(
        [T.StructField("customer_id", T.StringType()), T.StructField("as_of", T.DateType())]
        + [T.StructField(c, T.DoubleType()) for c in clv.INPUT_COLUMNS]
    )
    write_table(spark.createDataFrame(frame, schema), OutputConfig(path=str(root / "features")), ["as_of"])
    return frame


def test_train_clv_job_end_to_end(spark, tmp_path):
    frame = _features(spark, tmp_path)
    assert main(_args(tmp_path)) == 0

    out = read_table(spark, OutputConfig(path=str(tmp_path / "clv")))
    assert set(out.columns) == {"customer_id", "as_of", *clv.OUTPUT_COLUMNS, "model_version"}
    assert out.count() == len(frame) == out.select("customer_id").distinct().count()
    assert out.where(F.col("as_of") != F.lit(AS_OF)).count() == 0
    assert out.select("model_version").distinct().collect()[0][0] == "1"
    bad = out.where(
        ~((F.col("p_alive") >= 0) & (F.col("p_alive") <= 1)) | F.isnan("clv") | F.col("clv").isNull()
    ).count()
    assert bad == 0

    client = MlflowClient()
    version = client.get_model_version_by_alias("customer-clv", "champion")
    assert str(version.version) == "1"
    run = client.get_run(version.run_id)
    metrics = run.data.metrics
    for name in ("bgnbd_r", "bgnbd_alpha", "bgnbd_a", "bgnbd_b", "gg_p", "gg_q", "gg_v"):
        assert np.isfinite(metrics[name]) and metrics[name] > 0
    assert metrics["bgnbd_alpha"] == pytest.approx(4.41 * 7, rel=0.02)  # days: 7 x lifetimes' weeks
    assert metrics["customers"] == 2357
    assert 0 < metrics["distinct_triples"] < 2357
    assert metrics["bgnbd_log_likelihood"] < 0
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "charts")}
    assert {"charts/p_alive_matrix.png", "charts/repeat_purchases_expected_vs_actual.png"} <= artifacts

    model = mlflow.pyfunc.load_model("models:/customer-clv@champion")
    sample = frame[list(clv.INPUT_COLUMNS)].head(20)
    predicted = model.predict(sample)
    expected = out.where(F.col("customer_id").isin(list(frame["customer_id"].head(20)))).toPandas()
    expected = expected.set_index("customer_id").loc[frame["customer_id"].head(20)]
    for column in clv.OUTPUT_COLUMNS:
        np.testing.assert_allclose(predicted[column].to_numpy(), expected[column].to_numpy(), rtol=1e-9)

    # A rerun of the snapshot replaces its rows and moves the alias to the new version.
    assert main(_args(tmp_path)) == 0
    out = read_table(spark, OutputConfig(path=str(tmp_path / "clv")))
    assert out.count() == len(frame)
    assert {r[0] for r in out.select("model_version").distinct().collect()} == {"2"}


def test_train_clv_job_too_few_repeat_customers(spark, tmp_path, capsys):
    rows = [(f"c{i}", AS_OF, 0.0, 0.0, 30.0, 0.0) for i in range(20)] + [("r1", AS_OF, 2.0, 10.0, 30.0, 12.5)]
    schema = T.StructType(
        [T.StructField("customer_id", T.StringType()), T.StructField("as_of", T.DateType())]
        + [T.StructField(c, T.DoubleType()) for c in clv.INPUT_COLUMNS]
    )
    write_table(spark.createDataFrame(rows, schema), OutputConfig(path=str(tmp_path / "features")), ["as_of"])
    assert main(_args(tmp_path)) == 2
    assert "only 1 customer(s) with a repeat purchase" in capsys.readouterr().err


def _cdnow_transactions() -> pd.DataFrame:
    path = Path(lifetimes.datasets.__file__).parent / "CDNOW_sample.txt"
    tx = pd.read_csv(path, sep=r"\s+", header=None, names=["customer_id", "id", "date", "cds", "amount"], dtype=str)
    return pd.DataFrame(
        {
            "customer_id": tx["id"],
            "timestamp": pd.to_datetime(tx["date"], format="%Y%m%d"),
            "amount": tx["amount"].astype(float),
        }
    )


def test_train_clv_job_holdout_on_cdnow(spark, tmp_path):
    tx = _cdnow_transactions()
    schema = T.StructType(
        [
            T.StructField("customer_id", T.StringType()),
            T.StructField("timestamp", T.TimestampType()),
            T.StructField("amount", T.DoubleType()),
        ]
    )
    write_table(spark.createDataFrame(tx, schema), OutputConfig(path=str(tmp_path / "tx")))
    args = _args(
        tmp_path,
        **{
            "input.transactions.path": tmp_path / "tx",
            "features.as_of": "1998-06-30",
            "clv.holdout_days": 273,
        },
    )
    assert main(args) == 0
    runs = mlflow.search_runs(experiment_names=["test-clv"])
    run = runs.iloc[0]
    assert run["tags.calibration_end"] == "1997-09-30"
    theirs = calibration_and_holdout_data(
        tx, "customer_id", "timestamp", calibration_period_end="1997-09-30", observation_period_end="1998-06-30"
    )
    assert run["metrics.holdout_customers"] == len(theirs)
    assert run["metrics.customers"] == len(theirs)
    assert run["metrics.holdout_actual_total"] == theirs["frequency_holdout"].sum()
    assert 0 < run["metrics.holdout_mae"] < 1
    assert run["metrics.holdout_predicted_total"] == pytest.approx(run["metrics.holdout_actual_total"], rel=0.25)
    assert not (tmp_path / "clv").exists()  # a holdout run validates; it writes no table


# --------------------------------------------------------------------------- segments use it (item 5)


def test_segment_profile_and_report_show_clv_values(spark, tmp_path):
    from segmentation.config import load_config
    from segmentation.profiles import profile_columns, segment_profile
    from segmentation.report import SegmentReport, render_report
    from segmentation.snapshots import with_clv

    raw = spark.createDataFrame(
        [("a", 0, 100.0, 10, 0), ("b", 0, 300.0, 365, 0), ("c", 1, 50.0, 100, 1), ("d", 1, 0.0, 50, 1)],
        "customer_id STRING, segment INT, net_spend DOUBLE, tenure_days INT, churned INT",
    )
    cfg = load_config([BASE], [f"clv.output.path={tmp_path / 'clv'}"])
    assert with_clv(spark, cfg, raw, "2024-06-30") is raw  # no CLV table: the profile is unchanged
    values = spark.createDataFrame(
        [("a", 0.9, 2.0, 40.0, 70.0), ("b", 0.5, 1.0, 60.0, 50.0), ("c", 0.2, 0.5, 10.0, 4.0)],
        "customer_id STRING, p_alive DOUBLE, expected_purchases DOUBLE, expected_avg_value DOUBLE, clv DOUBLE",
    ).withColumns({"as_of": F.lit(dt.date(2024, 6, 30)), "model_version": F.lit("1")})
    write_table(values, cfg.clv.output, ["as_of"])
    joined = with_clv(spark, cfg, raw, "2024-06-30")
    assert profile_columns(joined) == ["net_spend", "tenure_days", "churned"]  # CLV values are not profiled as features

    profile = segment_profile(joined, ["net_spend"]).toPandas()
    assert profile[["p_alive_mean", "expected_purchases_mean", "clv_total", "clv_mean"]].to_numpy().tolist() == [
        pytest.approx([0.7, 1.5, 120.0, 60.0]),
        pytest.approx([0.2, 0.5, 4.0, 4.0]),  # d has no CLV row: means over the customers that have one
    ]
    assert "p_alive_mean" not in segment_profile(raw, ["net_spend"]).columns

    profile = profile.assign(z_net_spend=0.0)
    html = render_report(
        SegmentReport(
            title="t", model="m", as_of="2024-06-30", customers=4, fidelity=1.0, profile=profile,
            names={0: "A", 1: "B"}, descriptions={}, rules={}, separating={}, recommendations={},
        )
    )  # fmt: skip
    assert "alive (BG/NBD)<b>70%</b>" in html and "CLV / customer<b>60</b>total 120" in html
    assert "churn rate" not in html
