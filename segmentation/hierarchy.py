"""Two levels of segments (``training.hierarchy``): broad segments for strategy, sub-segments for campaigns.

The champion is chosen at the broad level (k in ``hierarchy.broad_k``), as a flat model is.
Then each broad segment is split on its own customers: the champion's algorithm is swept over
``hierarchy.sub_k`` on the broad segment's rows of the sweep's sample, and k is chosen by the
same rule (:func:`segmentation.selection.choose`), with a minimum cluster share that keeps every
sub-segment at ``hierarchy.min_customers`` customers or more. A broad segment whose split by the
rule would break that, or is not stable (``selection.min_stability``), stays whole: one
sub-segment.

The sub-models score in the same Spark pipeline as the broad model (:func:`sub_stages`): every
sub-model predicts its own column, a built-in ``SQLTransformer`` keeps the prediction of the
row's broad cluster as ``sub_cluster`` (a number unique across the tree), and a second one maps
it to a stable ``sub_segment`` id, matched across retrains exactly as the broad segments are
(:mod:`segmentation.identity`). Sub-segments are named inside their broad segment
(:func:`describe_tree`): "Champions / big baskets" is the part of the Champions whose
baskets are the largest against the other Champions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from pyspark.ml.feature import SQLTransformer
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from segmentation.config import DENSITY, TrainingConfig
from segmentation.models import fit_best
from segmentation.preprocessing import sql_name
from segmentation.selection import choose
from segmentation.snapshots import Persist
from segmentation.sweep import run_sweep

__all__ = [
    "SUB_CLUSTER_COL",
    "SUB_NAME_COL",
    "SUB_SEGMENT_COL",
    "Split",
    "broad_level",
    "describe_tree",
    "fit_splits",
    "phrase",
    "sub_stages",
]

log = logging.getLogger(__name__)

SUB_CLUSTER_COL = "sub_cluster"  # the sub-model's cluster, numbered across the tree
SUB_SEGMENT_COL = "sub_segment"  # its stable id
SUB_NAME_COL = "sub_segment_name"
WHOLE = "all"  # the phrase of the one sub-segment of a broad segment that stays whole


@dataclass(frozen=True)
class Split:
    """One broad segment's split: ``k`` sub-segments from ``model`` (None: it stays whole, ``k`` 1),
    numbered ``first`` to ``first + k - 1`` in ``sub_cluster``."""

    cluster: int  # the broad model's cluster index
    k: int
    first: int
    model: Any | None
    reason: str
    sample_rows: int
    rationale: dict[str, Any] | None = None
    records: list[dict[str, Any]] | None = None  # the sub-sweep's candidates, as the broad sweep's

    def as_dict(self) -> dict[str, Any]:
        return {"cluster": self.cluster, "k": self.k, "first_sub_cluster": self.first, "reason": self.reason,
                "sample_rows": self.sample_rows, "rationale": self.rationale, "candidates": self.records}  # fmt: skip


def fit_splits(tcfg: TrainingConfig, algorithm: str, sample: DataFrame, vectors: DataFrame, k: int,
               sizes: Mapping[int, int], persist: Persist) -> list[Split]:  # fmt: skip
    """Split each of the ``k`` broad clusters (see the module doc). ``sample`` and ``vectors`` carry
    ``customer_id``, ``features`` and the broad ``cluster``; ``sizes`` is each cluster's customers."""
    hcfg, splits, first = tcfg.hierarchy, [], 0
    if algorithm == DENSITY:  # its clusters are dense regions already; it has no k to sweep
        return [Split(c, 1, c, None, "a density champion's segments are not split", 0) for c in range(k)]
    for cluster in range(k):
        size = sizes.get(cluster, 0)
        rows = persist(sample.where(F.col("cluster") == cluster).select("customer_id", "features"))
        n_rows = rows.count()
        split = _split(tcfg, algorithm, cluster, first, rows, n_rows, size, vectors, hcfg.min_customers)
        log.info("broad cluster %d (%d customers): %d sub-segments, %s", cluster, size, split.k, split.reason)
        splits.append(split)
        first += split.k
    return splits


def _split(tcfg: TrainingConfig, algorithm: str, cluster: int, first: int, rows: DataFrame, n_rows: int,
           size: int, vectors: DataFrame, min_customers: int) -> Split:  # fmt: skip
    low, high = tcfg.hierarchy.sub_k
    if size < low * min_customers or n_rows < low * 10:
        return Split(cluster, 1, first, None, f"too small to split into {low} of {min_customers}+ customers", n_rows)
    min_share = max(tcfg.selection.min_cluster_share, min_customers / size)
    # Over sub_k's two to four k the elbow is the middle one unless the curve is straight, so
    # "at or above the elbow" (k_criterion: bisecting) would never split in two: splits use silhouette.
    criterion = "silhouette" if tcfg.selection.k_criterion == "bisecting" else tcfg.selection.k_criterion
    sub_cfg = tcfg.model_copy(update={
        "k_min": low, "k_max": min(high, n_rows - 1), "algorithms": [algorithm],
        "selection": tcfg.selection.model_copy(update={"min_cluster_share": min_share, "k_criterion": criterion}),
    })  # fmt: skip
    sel = sub_cfg.selection
    sweep = run_sweep(sub_cfg, rows)
    choice = choose(sweep.ordered_records(), [algorithm], sel.min_cluster_share, sel.min_stability,
                    sel.silhouette_tolerance, sel.k_criterion, sel.stable_ari)  # fmt: skip
    sub_k, records = choice.champion_k, sweep.ordered_records()
    record = sweep.records[(algorithm, sub_k)]
    stability = record["stability_ari"]
    if record["min_cluster_share"] < min_share:
        return Split(cluster, 1, first, None, f"no k in {low}..{high} keeps every sub-segment at "
                     f"{min_customers}+ customers", n_rows, choice.rationale, records)  # fmt: skip
    if stability is not None and stability < sel.min_stability:
        return Split(cluster, 1, first, None, f"no stable split (stability {stability:.2f} < "
                     f"{sel.min_stability})", n_rows, choice.rationale, records)  # fmt: skip
    model = sweep.models[(algorithm, sub_k)]
    if n_rows < size:  # the sweep ran on a sample of the segment: refit on all of it, as the champion is
        segment = vectors.where(F.col("cluster") == cluster).select("customer_id", "features")
        fraction = tcfg.refit.sample_fraction(algorithm, size)  # above refit.max_customers a sample, as it is
        segment = segment if fraction is None else segment.sample(False, fraction, tcfg.seed)
        model = fit_best(algorithm, sub_k, sub_cfg, sub_cfg.seed, segment)
    reason = f"chosen by the rule on {n_rows} customers"
    return Split(cluster, sub_k, first, model, reason, n_rows, choice.rationale, records)


def sub_stages(splits: Sequence[Split], cluster_col: str = "cluster") -> list[Any]:
    """The stages that add ``sub_cluster`` after the broad model's ``cluster``: each split's model
    predicting its own column, then a built-in ``SQLTransformer`` that keeps the row's own and drops
    the others. :func:`segmentation.identity.relabel_stage` maps it to the stable ``sub_segment``."""
    stages: list[Any] = []
    cases, temporary = [], []
    for split in splits:
        if split.model is None:
            cases.append(f"WHEN {split.cluster} THEN {split.first}")
            continue
        column = f"_sub_cluster_{split.cluster}"
        split.model.setPredictionCol(column)
        temporary.append(column)
        if split.model.hasParam("probabilityCol"):
            split.model.setProbabilityCol(f"_sub_probability_{split.cluster}")
            temporary.append(f"_sub_probability_{split.cluster}")
        stages.append(split.model)
        cases.append(f"WHEN {split.cluster} THEN {split.first} + CAST({column} AS INT)")
    drop = f" EXCEPT ({', '.join(temporary)})" if temporary else ""
    case = f"CASE CAST({sql_name(cluster_col)} AS INT) {' '.join(cases)} END"
    stages.append(SQLTransformer(statement=f"SELECT *{drop}, {case} AS {SUB_CLUSTER_COL} FROM __THIS__"))
    return stages


def broad_level(tcfg: TrainingConfig) -> TrainingConfig:
    """``tcfg`` with the broad level's k range (``hierarchy.broad_k``) when the hierarchy is on."""
    if not tcfg.hierarchy.enabled:
        return tcfg
    low, high = tcfg.hierarchy.broad_k
    return tcfg.model_copy(update={"k_min": low, "k_max": high})


# --------------------------------------------------------------------------- names and the tree

# What a sub-segment that is above (first) or below (second) its broad segment's mean is called.
_PHRASES = {
    "recency_days": ("lapsing", "recent buyers"),
    "tenure_days": ("long-standing", "newer customers"),
    "n_baskets": ("frequent buyers", "infrequent buyers"),
    "n_purchase_days": ("frequent buyers", "infrequent buyers"),
    "net_spend": ("high spend", "low spend"),
    "gross_spend": ("high spend", "low spend"),
    "avg_basket_value": ("big baskets", "small baskets"),
    "avg_items_per_basket": ("many items per basket", "few items per basket"),
    "avg_lines_per_basket": ("long baskets", "short baskets"),
    "mean_gap_days": ("long gaps between visits", "short gaps between visits"),
    "std_gap_days": ("irregular visits", "regular visits"),
    "return_rate": ("frequent returners", "rare returners"),
    "n_returns": ("more returns", "fewer returns"),
    "return_value_share": ("return much of their spend", "return little of their spend"),
    "n_categories": ("many categories", "few categories"),
    "trend": ("spending more lately", "spending less lately"),
    "spend_recent": ("spending more lately", "spending less lately"),
    "churn_ratio": ("overdue", "on schedule"),
}


def phrase(feature: str, above: bool) -> str:
    """Words for a sub-segment whose ``feature`` is above (or below) its broad segment's mean."""
    if feature in _PHRASES:
        return _PHRASES[feature][0 if above else 1]
    for prefix, high, low in (("cat_", "{} buyers", "light on {}"), ("chan_", "{} shoppers", "rarely via {}")):
        if feature.startswith(prefix):
            name = feature.removeprefix(prefix).replace("_", " ")
            return (high if above else low).format(name)
    return f"{'high' if above else 'low'} {feature.replace('_', ' ')}"


def describe_tree(raw: DataFrame, features: Sequence[str], names: Mapping[int, str],
                  kept: Mapping[int, str]) -> pd.DataFrame:  # fmt: skip
    """One row per sub-segment of ``raw`` (raw features, ``segment`` and ``sub_segment``): its broad
    segment and name, ``sub_segment_name`` ("<broad> / <phrase>"), ``phrase``, customers, shares of
    customers and revenue, its share of its broad segment, and the features that set it apart there
    (``distinct``: up to three (feature, z) against the broad segment's mean and standard deviation).

    A sub-segment's phrase is ``kept[id]`` when the identity step kept it; otherwise the words for
    its most distinct feature that no kept or larger sibling has taken (``all`` when its broad
    segment stays whole; its name is then the broad segment's). Every feature mean is computed in
    one aggregation per level; only the tree reaches the driver.
    """
    spend = F.col("net_spend").cast("double") if "net_spend" in raw.columns else F.lit(0.0)
    values = raw.select("segment", SUB_SEGMENT_COL, spend.alias("_spend"),
                        *[F.col(c).cast("double").alias(c) for c in features])  # fmt: skip
    child = values.groupBy("segment", SUB_SEGMENT_COL).agg(
        F.count(F.lit(1)).alias("customers"), F.sum("_spend").alias("_revenue"), *[F.avg(c).alias(c) for c in features]
    ).toPandas()  # fmt: skip
    parent = values.groupBy("segment").agg(
        F.count(F.lit(1)).alias("_parent_customers"),
        *[F.avg(c).alias(f"_mean_{c}") for c in features], *[F.stddev_pop(c).alias(f"_std_{c}") for c in features],
    ).toPandas().set_index("segment")  # fmt: skip
    total_customers, total_revenue = float(child["customers"].sum()), float(child["_revenue"].sum())
    rows = []
    for segment, group in child.groupby("segment", sort=True):
        p = parent.loc[segment]
        ids = [int(x) for x in group[SUB_SEGMENT_COL]]
        own = {sub: kept[sub] for sub in ids if kept.get(sub) not in (None, WHOLE)} if len(ids) > 1 else {}
        taken = set(own.values())
        for _, c in group.sort_values(["customers", SUB_SEGMENT_COL], ascending=[False, True]).iterrows():
            z = {f: (c[f] - p[f"_mean_{f}"]) / p[f"_std_{f}"] for f in features if p[f"_std_{f}"] > 0}
            ranked = sorted(z, key=lambda f: (-abs(z[f]), f))
            sub = int(c[SUB_SEGMENT_COL])
            words = WHOLE if len(ids) == 1 else own.get(sub) or _free_phrase(ranked, z, taken, sub)
            taken.add(words)
            broad = names.get(int(segment), f"Segment {int(segment)}")
            rows.append({
                "segment": int(segment), "segment_name": broad, SUB_SEGMENT_COL: sub,
                SUB_NAME_COL: broad if words == WHOLE else f"{broad} / {words}", "phrase": words,
                "customers": int(c["customers"]), "customer_share": c["customers"] / total_customers,
                "revenue_share": c["_revenue"] / total_revenue if total_revenue else 0.0,
                "share_of_segment": c["customers"] / p["_parent_customers"],
                "distinct": [(f, float(z[f])) for f in ranked[:3]] if len(group) > 1 else [],
            })  # fmt: skip
    return pd.DataFrame(rows).sort_values(["segment", SUB_SEGMENT_COL]).reset_index(drop=True)


def _free_phrase(ranked: Sequence[str], z: Mapping[str, float], taken: set[str], sub: int) -> str:
    for feature in ranked:
        words = phrase(feature, z[feature] > 0)
        if words not in taken:
            return words
    return f"group {sub}"
