from __future__ import annotations

import numpy as np
import pytest
from pyspark.ml import PipelineModel
from pyspark.ml.linalg import Vectors

from segmentation.identity import (
    IdentityMapping,
    SegmentRelabeler,
    centroid_distances,
    contingency,
    initial_mapping,
    match_segments,
)


def test_relabeler_maps_clusters_and_survives_save_load(spark, tmp_path):
    df = spark.createDataFrame([(0,), (1,), (2,)], "cluster INT")
    model = PipelineModel(stages=[SegmentRelabeler(mapping=[5, 0, 7])])
    model.write().overwrite().save(str(tmp_path / "m"))
    loaded = PipelineModel.load(str(tmp_path / "m"))
    assert [r.prediction for r in loaded.transform(df).orderBy("cluster").collect()] == [5.0, 0.0, 7.0]


def test_same_clusters_under_other_numbers_keep_their_ids():
    previous = initial_mapping(3).with_names({0: "Champions", 1: "Loyal", 2: "Lost"})
    # new cluster 0 = old 2, new 1 = old 0, new 2 = old 1 (a permutation, as after a reseed)
    counts = np.array([[0, 100, 0], [0, 0, 80], [60, 0, 0]], dtype=float)
    mapping = match_segments(previous, [0, 1, 2], [0, 1, 2], counts, n_clusters=3)
    assert mapping.cluster_to_segment == [2, 0, 1]
    assert mapping.new_ids == [] and mapping.retired_ids == []
    assert mapping.names == {0: "Champions", 1: "Loyal", 2: "Lost"}
    assert mapping.next_id == 3


def test_split_gets_new_id_and_vanished_segment_is_retired():
    previous = initial_mapping(3)
    # old 0 split into new 0 (60) and new 2 (40); old 1 -> new 1; old 2 vanished into new 1 (a few)
    counts = np.array([[60, 0, 40], [0, 90, 0], [0, 10, 0]], dtype=float)
    mapping = match_segments(previous, [0, 1, 2], [0, 1, 2], counts, n_clusters=3)
    assert mapping.cluster_to_segment[:2] == [0, 1]
    assert mapping.cluster_to_segment[2] == 3  # fresh id, never a reused one
    assert mapping.retired_ids == [2]
    assert {d["decision"] for d in mapping.decisions} == {"kept", "changed too much", "new", "retired"}
    # a later retrain never hands out a retired id again
    later = match_segments(mapping, [0, 1, 3], [0, 1, 2, 3], np.array(
        [[50, 0, 0, 0], [0, 50, 0, 0], [0, 0, 40, 0]], dtype=float), n_clusters=4)  # fmt: skip
    assert later.cluster_to_segment == [0, 1, 3, 4]
    assert 2 not in later.cluster_to_segment and later.retired_ids == [2]


def test_threshold_decides_when_a_cluster_changed_too_much():
    counts = np.array([[55, 45], [45, 55]], dtype=float)  # both overlaps ~0.38
    strict = match_segments(initial_mapping(2), [0, 1], [0, 1], counts, n_clusters=2, min_overlap=0.5)
    assert strict.cluster_to_segment == [2, 3] and strict.retired_ids == [0, 1]
    lenient = match_segments(initial_mapping(2), [0, 1], [0, 1], counts, n_clusters=2, min_overlap=0.3)
    assert lenient.cluster_to_segment == [0, 1]


def test_centroid_method_uses_distance_threshold():
    counts = np.ones((2, 2))
    distances = np.array([[3.0, 0.2], [0.1, 4.0]])
    mapping = match_segments(initial_mapping(2), [0, 1], [0, 1], counts, 2, "centroid", distances)
    assert mapping.cluster_to_segment == [1, 0]
    far = match_segments(initial_mapping(2), [0, 1], [0, 1], counts, 2, "centroid", distances * 20)
    assert far.new_ids == [2, 3]
    with pytest.raises(ValueError, match="training.identity.method"):
        match_segments(initial_mapping(2), [0, 1], [0, 1], counts, 2, "nearest")


def test_contingency_and_centroids_in_spark(spark):
    df = spark.createDataFrame(
        [(0, 1, Vectors.dense([0.0, 0.0])), (0, 1, Vectors.dense([2.0, 0.0])), (1, 0, Vectors.dense([10.0, 10.0]))],
        ["old", "new", "features"],
    )
    old_ids, new_ids, counts = contingency(df, "old", "new")
    assert old_ids == [0, 1] and new_ids == [0, 1]
    np.testing.assert_array_equal(counts, [[0, 2], [1, 0]])
    distances = centroid_distances(df, "features", "old", "new", old_ids, new_ids)
    assert distances[0, 1] == pytest.approx(0.0)
    assert distances[0, 0] == pytest.approx(np.hypot(9.0, 10.0))


def test_mapping_round_trips_through_a_dict():
    mapping = initial_mapping(2).with_names({0: "A", 1: "B"})
    assert IdentityMapping.from_dict(mapping.as_dict()) == mapping
