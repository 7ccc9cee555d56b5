"""The two-level pieces on small inline frames (the whole run is in test_hierarchy_pipeline.py)."""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.ml import PipelineModel
from pyspark.ml.clustering import GaussianMixture, KMeans
from pyspark.ml.functions import array_to_vector
from pyspark.sql import functions as F

from segmentation.config import HierarchyConfig, TrainingConfig
from segmentation.hierarchy import Split, broad_level, describe_tree, fit_splits, phrase, sub_stages
from segmentation.identity import relabel_stage
from segmentation.snapshots import persisting


def _blobs(spark, centres, n=60, seed=3):
    """customer_id, features (2-d), cluster: ``n`` points around each centre of each broad cluster."""
    rng = np.random.default_rng(seed)
    rows = []
    for cluster, group in enumerate(centres):
        for j, (x, y) in enumerate(group):
            for i, (dx, dy) in enumerate(rng.normal(0, 0.3, size=(n, 2))):
                rows.append((f"c{cluster}-{j}-{i}", cluster, float(x + dx), float(y + dy)))
    frame = spark.createDataFrame(rows, "customer_id string, cluster int, x double, y double")
    return frame.select("customer_id", "cluster", array_to_vector(F.array("x", "y")).alias("features"))


def test_words_for_a_sub_segment_follow_the_feature_and_its_direction():
    assert phrase("avg_basket_value", True) == "big baskets" and phrase("recency_days", False) == "recent buyers"
    assert phrase("cat_garden", True) == "garden buyers" and phrase("chan_app", False) == "rarely via app"
    assert phrase("cat_garden", False) == "light on garden" and phrase("brand_private", True) == "high brand private"


def test_the_broad_level_replaces_the_k_range_only_with_two_levels():
    flat = TrainingConfig(k_min=2, k_max=9)
    assert broad_level(flat) is flat
    tcfg = TrainingConfig(k_min=2, k_max=9, hierarchy={"enabled": True, "broad_k": (4, 5)})
    assert (broad_level(tcfg).k_min, broad_level(tcfg).k_max) == (4, 5)
    with pytest.raises(ValueError, match="sub_k"):
        HierarchyConfig(sub_k=(1, 3))


def test_each_broad_cluster_splits_into_what_it_holds_and_small_ones_stay_whole(spark):
    # Broad cluster 0 holds two groups, cluster 1 three, cluster 2 one group of 30 customers.
    centres = [[(0, 0), (0, 4)], [(20, 0), (24, 0), (22, 4)]]
    data = _blobs(spark, centres).unionByName(_blobs(spark, [[], [], [(50, 50)]], n=30))
    tcfg = TrainingConfig(seed=5, algorithms=["kmeans"], hierarchy={"enabled": True, "sub_k": (2, 4),
                          "min_customers": 40})  # fmt: skip
    sizes = {r.cluster: r["count"] for r in data.groupBy("cluster").count().collect()}
    with persisting() as persist:
        splits = fit_splits(tcfg, "kmeans", data, data, 3, sizes, persist)
    assert [(s.cluster, s.k, s.first) for s in splits] == [(0, 2, 0), (1, 3, 2), (2, 1, 5)]
    assert splits[2].model is None and "too small" in splits[2].reason
    model = PipelineModel(stages=[*sub_stages(splits), relabel_stage([10, 11, 12, 13, 14, 15], "sub_cluster",
                                                                      "sub_segment")])  # fmt: skip
    out = model.transform(data).select("customer_id", "cluster", "sub_cluster", "sub_segment").collect()
    assert {(r.cluster, r.sub_cluster) for r in out} == {(0, 0), (0, 1), (1, 2), (1, 3), (1, 4), (2, 5)}
    assert all(r.sub_segment == 10 + r.sub_cluster for r in out)
    group = {r.customer_id.rsplit("-", 1)[0]: set() for r in out}
    for r in out:
        group[r.customer_id.rsplit("-", 1)[0]].add(r.sub_cluster)
    assert all(len(subs) == 1 for subs in group.values())  # every planted group is one sub-segment
    assert len({next(iter(s)) for s in group.values()}) == 6


def test_a_gaussian_mixture_sub_model_keeps_its_columns_to_itself(spark):
    data = _blobs(spark, [[(0, 0), (0, 5)]])
    model = GaussianMixture(k=2, seed=1, probabilityCol="probability").fit(data)
    kmeans = KMeans(k=2, seed=1).fit(data)
    splits = [Split(0, 2, 0, model, "test", 120), Split(1, 2, 2, kmeans, "test", 0)]
    stages = [*sub_stages(splits), relabel_stage([0, 1, 2, 3], "sub_cluster", "sub_segment")]
    out = PipelineModel(stages=stages).transform(data.withColumn("probability", F.lit(1)))
    assert {"sub_cluster", "sub_segment", "probability"} <= set(out.columns)
    assert not [c for c in out.columns if c.startswith("_sub_")]
    assert {r.sub_segment for r in out.select("sub_segment").collect()} == {0, 1}


def test_the_tree_names_sub_segments_by_what_sets_them_apart_in_their_broad_segment(spark):
    rows = [("a", 0, 0, 100.0, 1.0), ("b", 0, 0, 110.0, 2.0), ("c", 0, 1, 900.0, 1.0), ("d", 0, 1, 1000.0, 2.0),
            ("e", 1, 2, 50.0, 5.0), ("f", 1, 2, 60.0, 6.0)]  # fmt: skip
    raw = spark.createDataFrame(rows, "customer_id string, segment int, sub_segment int, avg_basket_value double, "
                                "n_baskets double").withColumn("net_spend", F.col("avg_basket_value") * 2)  # fmt: skip
    names = {0: "Champions", 1: "Lost"}
    tree = describe_tree(raw, ["avg_basket_value", "n_baskets"], names, kept={})
    by_id = tree.set_index("sub_segment")
    assert by_id.loc[0, "sub_segment_name"] == "Champions / small baskets"
    assert by_id.loc[1, "sub_segment_name"] == "Champions / big baskets"
    assert by_id.loc[2, "sub_segment_name"] == "Lost" and by_id.loc[2, "phrase"] == "all"
    assert by_id.loc[0, "share_of_segment"] == 0.5 and by_id.loc[2, "customer_share"] == pytest.approx(2 / 6)
    assert by_id["revenue_share"].sum() == pytest.approx(1.0)
    assert by_id.loc[1, "distinct"][0][0] == "avg_basket_value" and by_id.loc[1, "distinct"][0][1] > 0
    # A kept sub-segment keeps its phrase, and its sibling takes other words.
    kept = describe_tree(raw, ["avg_basket_value", "n_baskets"], names, kept={1: "small baskets"}).set_index(
        "sub_segment")  # fmt: skip
    assert kept.loc[1, "phrase"] == "small baskets" and kept.loc[0, "phrase"] != "small baskets"
