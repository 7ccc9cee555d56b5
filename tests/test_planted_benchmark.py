"""The planted-persona benchmark (``benchmarks/planted.py``) on a small case, as ``make bench`` runs it at size.

It runs the training job's own stages on a generated persona set, so what it reports must be
what those stages chose: the champion and its k are the rule's, its ARI is the assignments'
against the planted personas, and the best candidate is a candidate of the sweep.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import BASE

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import planted  # noqa: E402

SMALL = ["training.k_max=5", "training.algorithms=[kmeans, bisecting_kmeans]", "training.seed=7",
         "input.customers.enabled=false"]  # fmt: skip


def test_each_case_plants_its_count_balance_and_separation():
    assert len(planted.CASES) == 12
    rare = planted.persona_set("10-imbalanced-close")
    assert len(rare.names) == 10 and rare.shares == {"bulk_buyers": 0.02} and rare.separation == 0.5
    even = planted.persona_set("4-balanced-apart")
    assert even.shares == {n: 0.25 for n in even.names} and even.separation == 1.0


def test_k_reaches_past_the_planted_count(tmp_path):
    cfg = planted.case_config([BASE], SMALL, tmp_path, planted.persona_set("10-balanced-apart"), 1000)
    assert cfg.training.k_max == 12 and cfg.generator.personas.names == planted.SETS[10]
    assert cfg.training.ground_truth.path == str(tmp_path / "truth")


def test_a_small_case_reports_the_rules_choice_and_its_match_with_the_personas(spark, tmp_path):
    personas = planted.persona_set("4-balanced-apart")
    row = planted.run_case(spark, planted.case_config([BASE], SMALL, tmp_path, personas, 12_000))
    assert row["planted_k"] == 4 and 450 < row["customers"] <= 600
    swept = {(c["algorithm"], c["k"]): c for c in row["candidates"]}
    assert set(swept) == {(a, k) for a in ("kmeans", "bisecting_kmeans") for k in range(2, 7)}  # up to 4 + 2
    assert (row["algorithm"], row["k"]) in swept and row["stability"] is not None  # the rule measured its pick
    # Every customer was swept, so the champion is the sweep's model and both ARIs are of the same labels.
    assert row["ari"] == pytest.approx(swept[(row["algorithm"], row["k"])]["ari"], abs=1e-3)
    best = row["best_candidate"]
    assert best["ari"] == pytest.approx(max(c["ari"] for c in swept.values()), abs=1e-3)
    # The four personas are recoverable at this size: some candidate of the sweep finds them.
    assert best["ari"] >= 0.9
    table = planted.markdown({"date": "d", "transactions": 12_000, "overrides": SMALL, "cases": {"4-x": row}})
    assert ("| yes |" in table) == (abs(row["k"] - 4) <= 1)
