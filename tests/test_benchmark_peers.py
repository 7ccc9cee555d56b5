"""The benchmark compares like with like: its DuckDB peer computes our feature job's numbers.

``make bench`` times the feature job against ``benchmarks/peers.duckdb_features`` on the same
files; the ratio only means something if both produce the same table. Here both run on
generated transactions (with duplicates, returns and one-time buyers) and every column the
DuckDB query writes must equal ours, customer by customer.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from conftest import make_config

from segmentation.feature_pipeline import run_feature_pipeline
from segmentation.generator import generate_transactions
from segmentation.io import read_table, write_table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import peers  # noqa: E402


def test_duckdb_peer_computes_the_feature_jobs_columns(spark, tmp_path):
    cfg = make_config(tmp_path, **{
        "generator.n_transactions": 4000, "generator.n_customers": 300, "input.customers.enabled": "false",
        "generator.transactions.path": tmp_path / "tx", "generator.transactions.format": "parquet",
        "input.transactions.format": "parquet",
    })  # fmt: skip
    write_table(generate_transactions(spark, cfg.generator), cfg.generator.transactions)
    report = run_feature_pipeline(spark, cfg)
    ours = read_table(spark, cfg.features.output).toPandas().set_index("customer_id").sort_index()

    fcfg = cfg.features
    customers = peers.duckdb_features(
        f"{tmp_path / 'tx'}/*.parquet",
        tmp_path / "duckdb",
        report.as_of,
        fcfg.top_categories,
        fcfg.max_channels,
        memory_limit="1GB",  # the cap make bench sets, so that path is exercised too
    )
    theirs = pd.read_parquet(tmp_path / "duckdb" / "features.parquet").set_index("customer_id").sort_index()

    assert customers == report.customers == len(ours) > 250
    assert report.quarantined["duplicate_transaction_id"] > 0  # the validation is exercised
    # Every column but the "other" shares (the remainder of the top categories and channels).
    assert set(ours.columns) - set(theirs.columns) == {"cat_other", "chan_other"}
    assert set(theirs.columns) <= set(ours.columns)
    shared = [c for c in theirs.columns if c != "as_of"]
    pd.testing.assert_frame_equal(
        theirs[shared].astype(float), ours[shared].astype(float), check_exact=False, rtol=1e-9, atol=1e-9
    )
