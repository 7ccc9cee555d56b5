from __future__ import annotations

import numpy as np
import pandas as pd

from segmentation.explain import Rule, explain_segments, parse_tree, separating_features

DEBUG = """DecisionTreeClassificationModel: uid=dtc_1, depth=2, numNodes=5, numClasses=3, numFeatures=2
  If (feature 0 <= 30.5)
   Predict: 0.0
  Else (feature 0 > 30.5)
   If (feature 1 <= 10.5)
    Predict: 2.0
   Else (feature 1 > 10.5)
    Predict: 1.0
"""


def test_parse_tree_turns_paths_into_rules():
    rules = parse_tree(DEBUG, ["recency_days", "n_purchases"])
    assert rules == [
        Rule(0, (("recency_days", "<=", 30.5),)),
        Rule(2, (("recency_days", ">", 30.5), ("n_purchases", "<=", 10.5))),
        Rule(1, (("recency_days", ">", 30.5), ("n_purchases", ">", 10.5))),
    ]
    assert rules[1].text == "recency_days > 30.5 and n_purchases <= 10.5"
    assert rules[1].sql == "`recency_days` > 30.5 AND `n_purchases` <= 10.5"


def test_rules_recover_planted_segments_with_full_fidelity(spark):
    rng = np.random.default_rng(3)
    recency = rng.integers(0, 100, 400)
    purchases = rng.integers(0, 21, 400)
    noise = rng.normal(size=400)
    segment = np.where(recency <= 30, 0, np.where(purchases > 10, 1, 2))
    pdf = pd.DataFrame({"recency_days": recency, "n_purchases": purchases, "noise": noise, "segment": segment})
    df = spark.createDataFrame(pdf)
    explanation = explain_segments(df, ["recency_days", "n_purchases", "noise"], depth=2)
    assert explanation.fidelity == 1.0
    assert sorted(explanation.rules) == [0, 1, 2]
    for seg, rules in explanation.rules.items():
        best = rules[0]
        assert best["precision"] == 1.0 and best["recall"] == 1.0 and best["coverage"] == int((segment == seg).sum())
    assert explanation.rules[0][0]["rule"].startswith("recency_days <= 30")
    assert "noise" not in " ".join(r["rule"] for rules in explanation.rules.values() for r in rules)


def test_separating_features_rank_by_absolute_z():
    profile = pd.DataFrame({"segment": [0], "z_a": [0.5], "z_b": [-2.0], "z_c": [1.0]})
    assert separating_features(profile, ["a", "b", "c"], n=2) == {0: [("b", -2.0), ("c", 1.0)]}
