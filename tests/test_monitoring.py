from __future__ import annotations

import math

import numpy as np
import pytest

from segmentation.monitoring import (
    _bin_shares,
    drift_report,
    migration_matrix,
    population_stability,
    segment_share_shift,
)


def seg(spark, pairs):
    return spark.createDataFrame(pairs, "customer_id STRING, segment INT")


def test_migration_matrix_counts_moves_and_ignores_customers_in_one_side(spark):
    previous = seg(spark, [("a", 0), ("b", 0), ("c", 1), ("d", 1), ("gone", 1)])
    current = seg(spark, [("a", 0), ("b", 1), ("c", 1), ("d", 2), ("new", 0)])
    table, stability = migration_matrix(previous, current)
    assert table.loc[0, 0] == 1 and table.loc[0, 1] == 1 and table.loc[1, 1] == 1 and table.loc[1, 2] == 1
    assert int(table.to_numpy().sum()) == 4
    assert stability == pytest.approx(2 / 4)


def test_planted_behaviour_change_shows_in_the_matrix(spark):
    # 30 of 100 customers of segment 0 move to segment 1; segment 1 stays put
    previous = seg(spark, [(f"c{i}", 0) for i in range(100)] + [(f"d{i}", 1) for i in range(50)])
    current = seg(spark, [(f"c{i}", 1 if i < 30 else 0) for i in range(100)] + [(f"d{i}", 1) for i in range(50)])
    table, stability = migration_matrix(previous, current)
    assert table.loc[0, 1] == 30 and table.loc[0, 0] == 70 and table.loc[1, 1] == 50
    assert stability == pytest.approx(120 / 150)


def _values(spark, values):
    return spark.createDataFrame([(float(v),) for v in values], "x DOUBLE")


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shift(spark):
    rng = np.random.default_rng(0)
    reference = _values(spark, rng.normal(0, 1, 4000))
    same = _values(spark, rng.normal(0, 1, 4000))
    shifted = _values(spark, rng.normal(1.0, 1, 4000))
    assert population_stability(reference, same, ["x"])["x"] < 0.02
    assert population_stability(reference, shifted, ["x"])["x"] > 0.25


def test_psi_matches_the_formula_on_a_hand_checked_case(spark):
    reference = _values(spark, [1, 2, 3, 4])
    current = _values(spark, [1, 1, 1, 4])
    psi = population_stability(reference, current, ["x"], bins=2)["x"]
    # one edge at the median (2): bins (<=2, >2); reference 0.5/0.5, current 0.75/0.25
    expected = (0.75 - 0.5) * math.log(0.75 / 0.5) + (0.25 - 0.5) * math.log(0.25 / 0.5)
    assert psi == pytest.approx(expected, rel=1e-6)


def test_bins_count_the_edges_below_each_value_for_any_column_name_and_edge(spark):
    # Edges written as SQL must parse back to the same doubles: tiny, negative, many digits, infinite, numpy.
    edges = {
        "spend `net` (eur)": [-1e-300, 1e-05, 0.1 + 0.2, 2.5e17],
        "plain": [float("-inf"), np.float64(0.0)],  # numpy's repr is not a number
        "flat": [],
    }
    values = [-1e-300, -2e-300, 1e-05, 1.0000000000000001e-05, 0.30000000000000004, 0.3, 2.5e17, 3e17, None]
    rows = [(v, v, v) for v in values]
    df = spark.createDataFrame(rows, "`spend ``net`` (eur)` DOUBLE, plain DOUBLE, flat DOUBLE")
    shares = _bin_shares(df, edges)
    for feature, feature_edges in edges.items():
        # a value's bin is how many edges it is above; a null is in bin 0
        bins = [0 if v is None else sum(v > e for e in feature_edges) for v in values]
        expected = {b: bins.count(b) / len(values) for b in set(bins)}
        got = shares[shares["feature"] == feature].set_index("bin")["share"].to_dict()
        assert got == pytest.approx(expected), feature


def test_segment_share_shift_is_total_variation(spark):
    a = seg(spark, [("1", 0), ("2", 0), ("3", 1), ("4", 1)])
    b = seg(spark, [("1", 0), ("2", 1), ("3", 1), ("4", 1)])
    assert segment_share_shift(a, a) == 0.0
    assert segment_share_shift(a, b) == pytest.approx(0.25)


def test_drift_flags_only_when_it_should(spark):
    rng = np.random.default_rng(1)
    ref = _values(spark, rng.normal(0, 1, 3000))
    segs = seg(spark, [(str(i), i % 3) for i in range(300)])
    calm = drift_report(ref, _values(spark, rng.normal(0, 1, 3000)), segs, segs, ["x"], 0.2, 0.1)
    assert not calm.needs_retraining and calm.drifted_features == []
    moved = drift_report(ref, _values(spark, rng.normal(1.5, 1, 3000)), segs, segs, ["x"], 0.2, 0.1)
    assert moved.needs_retraining and moved.drifted_features == ["x"]
    assert moved.metrics()["needs_retraining"] == 1.0
