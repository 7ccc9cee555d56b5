"""Human-readable rules for segment membership, in raw feature units.

A shallow Spark ML ``DecisionTreeClassifier`` (depth ``profiles.rule_depth``) learns
to predict the segment from the raw, unscaled features. Every root-to-leaf path is a
rule (``recency_days <= 30.5 and n_purchases > 12.5``); a segment's rules are the
paths whose leaf predicts it. Each rule is re-evaluated on the data as a SQL
predicate, so its *coverage* (customers matching it) and *precision* (share of them
in the segment) are measured, not read off the tree. The tree's *fidelity* is the
share of customers whose segment it predicts correctly: how far the rules can be
trusted as a description of the model.

The tree's structure is read from ``toDebugString``, the one view of a fitted tree
that pyspark exposes; only continuous splits occur here (all features are numeric).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
from pyspark.ml.classification import DecisionTreeClassifier
from pyspark.ml.feature import VectorAssembler
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

__all__ = ["Rule", "Explanation", "explain_segments", "parse_tree", "separating_features"]

_SPLIT = re.compile(r"^(If|Else) \(feature (\d+) (<=|>) ([-+0-9.eE]+|NaN|-?Infinity)\)$")
_PREDICT = re.compile(r"^Predict: ([-+0-9.eE]+)$")


@dataclass(frozen=True)
class Rule:
    segment: int
    conditions: tuple[tuple[str, str, float], ...]  # (feature, "<=" or ">", threshold), simplified

    @property
    def text(self) -> str:
        return " and ".join(f"{f} {op} {_fmt(v)}" for f, op, v in self.conditions) or "all customers"

    @property
    def sql(self) -> str:
        return " AND ".join(f"`{f}` {op} {v!r}" for f, op, v in self.conditions) or "TRUE"


@dataclass
class Explanation:
    fidelity: float
    rules: dict[int, list[dict]] = field(default_factory=dict)  # segment -> [{rule, coverage, precision, recall}]


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _simplify(path: list[tuple[str, str, float]]) -> tuple[tuple[str, str, float], ...]:
    """Keep the tightest bound per (feature, direction), in order of first appearance."""
    best: dict[tuple[str, str], float] = {}
    for feature, op, value in path:
        key = (feature, op)
        if key not in best:
            best[key] = value
        else:
            best[key] = min(best[key], value) if op == "<=" else max(best[key], value)
    return tuple((f, op, v) for (f, op), v in best.items())


def parse_tree(debug_string: str, feature_names: Sequence[str]) -> list[Rule]:
    """Every root-to-leaf path of a ``DecisionTreeClassificationModel.toDebugString`` as a :class:`Rule`."""
    rules: list[Rule] = []
    stack: list[tuple[int, tuple[str, str, float]]] = []  # (indent, condition)
    for line in debug_string.splitlines()[1:]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        text = line.strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        split = _SPLIT.match(text)
        if split:
            _, index, op, value = split.groups()
            stack.append((indent, (feature_names[int(index)], op, float(value))))
            continue
        predict = _PREDICT.match(text)
        if predict:
            rules.append(Rule(int(float(predict.group(1))), _simplify([c for _, c in stack])))
            continue
        raise ValueError(f"unexpected line in the decision tree: {text!r}")
    return rules


def explain_segments(
    df: DataFrame, feature_cols: Sequence[str], segment_col: str = "segment", depth: int = 3, seed: int = 42
) -> Explanation:
    """Fit the tree on ``df`` (raw features + ``segment_col``) and measure every rule (see the module doc)."""
    cols = list(feature_cols)
    data = (
        VectorAssembler(inputCols=cols, outputCol="_x", handleInvalid="keep")
        .transform(
            df.select(*[F.col(c).cast("double") for c in cols], F.col(segment_col).cast("double").alias("_label"))
        )
        .cache()
    )
    try:
        tree = DecisionTreeClassifier(featuresCol="_x", labelCol="_label", maxDepth=depth, seed=seed,
                                      minInstancesPerNode=5).fit(data)  # fmt: skip
        predicted = tree.transform(data)
        total = data.count()
        fidelity = predicted.where(F.col("prediction") == F.col("_label")).count() / total if total else float("nan")
        rules = [r for r in parse_tree(tree.toDebugString, cols)]
        sizes = {int(r["_label"]): int(r["count"]) for r in data.groupBy("_label").count().collect()}
        # One pass for every rule: matching and matching-in-segment counts.
        aggs = []
        for i, rule in enumerate(rules):
            match = F.expr(rule.sql)
            aggs.append(F.sum(F.when(match, 1).otherwise(0)).alias(f"m{i}"))
            aggs.append(F.sum(F.when(match & (F.col("_label") == rule.segment), 1).otherwise(0)).alias(f"h{i}"))
        counts = data.agg(*aggs).first() if aggs else None
    finally:
        data.unpersist()
    by_segment: dict[int, list[dict]] = {}
    for i, rule in enumerate(rules):
        matched, hits = int(counts[f"m{i}"] or 0), int(counts[f"h{i}"] or 0)
        if matched == 0:
            continue
        by_segment.setdefault(rule.segment, []).append(
            {
                "rule": rule.text,
                "sql": rule.sql,
                "coverage": matched,
                "precision": hits / matched,
                "recall": hits / sizes[rule.segment] if sizes.get(rule.segment) else 0.0,
            }
        )
    for segment in by_segment:
        by_segment[segment].sort(key=lambda r: (-r["recall"], -r["precision"], r["rule"]))
    return Explanation(fidelity=fidelity, rules=dict(sorted(by_segment.items())))


def separating_features(profile: pd.DataFrame, feature_cols: Sequence[str], n: int = 3) -> dict[int, list[tuple]]:
    """Per segment, the ``n`` features whose mean is furthest from the base's, in standard deviations."""
    result = {}
    for _, row in profile.iterrows():
        scored = [(c, float(row[f"z_{c}"])) for c in feature_cols if f"z_{c}" in row and pd.notna(row[f"z_{c}"])]
        scored.sort(key=lambda x: (-abs(x[1]), x[0]))
        result[int(row["segment"])] = scored[:n]
    return result
