from __future__ import annotations

import json

import mlflow
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
    relabel_stage,
)


def test_relabel_stage_maps_clusters_as_a_built_in_stage_and_survives_save_load(spark, tmp_path):
    df = spark.createDataFrame([(0, "a"), (1, "b"), (2, "c"), (1, "d")], "cluster INT, customer_id STRING")
    model = PipelineModel(stages=[relabel_stage([5, 0, 7])])
    model.write().overwrite().save(str(tmp_path / "m"))
    metadata = json.loads(next((tmp_path / "m" / "stages").glob("0_*/metadata/part-*")).read_text())
    assert metadata["class"] == "org.apache.spark.ml.feature.SQLTransformer"
    out = PipelineModel.load(str(tmp_path / "m")).transform(df).orderBy("customer_id").collect()
    assert [(r.customer_id, r.cluster, r.prediction) for r in out] == [("a", 0, 5.0), ("b", 1, 0.0), ("c", 2, 7.0),
                                                                       ("d", 1, 0.0)]  # fmt: skip
    assert isinstance(out[0].prediction, float)
    with pytest.raises(ValueError, match="empty"):
        relabel_stage([])


def test_legacy_relabeler_maps_clusters_and_survives_save_load(spark, tmp_path):
    """The pure-Python stage of models saved before; kept so they load and score."""
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


# --------------------------------------------------------------------------- end to end: retrain after a planted change

CENTRES = {"A": (0.0, 0.0, 0.0), "B": (10.0, 0.0, 0.0), "C": (0.0, 10.0, 0.0), "D": (0.0, 0.0, 10.0)}


def _blob_rows(rng, label, centre, ids, as_of):
    points = np.asarray(centre) + rng.normal(0.0, 0.3, (len(ids), 3))
    return [(cid, as_of, *map(float, p)) for cid, p in zip(ids, points, strict=True)]


def test_retrain_after_a_split_and_a_vanished_persona_keeps_the_other_ids(spark, tmp_path):
    """Month 1: four blobs A-D. Month 2: A and B unchanged, C splits 60/40 into two blobs, D's
    customers are gone. The retrain keeps A, B and C (its 60% part) under their ids, gives the
    40% part a fresh id, retires D's id, and scoring and history carry the stable ids."""
    import datetime as dt

    from conftest import make_config

    from segmentation.io import write_table
    from segmentation.scoring_pipeline import run_scoring
    from segmentation.training_pipeline import run_training

    rng = np.random.default_rng(11)
    month1, month2 = dt.date(2024, 1, 31), dt.date(2024, 2, 29)
    ids = {label: [f"{label}{i:03d}" for i in range(100)] for label in CENTRES}
    rows = [r for label, c in CENTRES.items() for r in _blob_rows(rng, label, c, ids[label], month1)]
    rows += [r for label in "AB" for r in _blob_rows(rng, label, CENTRES[label], ids[label], month2)]
    # Every axis keeps a spread after D leaves, so scaling to unit variance never blows up mere noise.
    rows += _blob_rows(rng, "C1", (0.0, 10.0, -6.0), ids["C"][:60], month2)
    rows += _blob_rows(rng, "C2", (0.0, 10.0, 6.0), ids["C"][60:], month2)
    features = spark.createDataFrame(rows, "customer_id STRING, as_of DATE, x DOUBLE, y DOUBLE, z DOUBLE")
    cfg = make_config(tmp_path, **{
        "training.algorithms": "[kmeans]", "training.k_min": 4, "training.k_max": 4,
        "training.ground_truth.enabled": "false", "training.as_of": month1, "scoring.as_of": month1,
        "scoring.current.path": tmp_path / "current", "scoring.history.path": tmp_path / "history",
        "mlflow.experiment": "planted-change",
    })  # fmt: skip
    write_table(features, cfg.features.output, partition_by=["as_of"])

    first = run_training(spark, cfg)
    run_scoring(spark, cfg)
    old = {r.customer_id: r.segment for r in spark.read.format("delta").load(str(tmp_path / "current")).collect()}
    seg = {label: old[ids[label][0]] for label in CENTRES}
    assert all(old[c] == seg[label] for label in CENTRES for c in ids[label])  # the blobs are the segments

    # Same data, another seed, not promoted: every id and name is kept.
    reseeded = cfg.model_copy(update={"training": cfg.training.model_copy(update={"seed": 99, "promote": "never"})})
    again = run_training(spark, reseeded)
    assert {d["decision"] for d in again.identity.decisions} == {"kept"}
    assert again.identity.new_ids == [] and again.identity.retired_ids == []
    assert again.identity.names == first.identity.names

    later = cfg.model_copy(update={
        "training": cfg.training.model_copy(update={"as_of": month2, "promote": "always"}),
        "scoring": cfg.scoring.model_copy(update={"as_of": month2}),
    })  # fmt: skip
    second = run_training(spark, later)
    decisions = {d["segment"]: d["decision"] for d in second.identity.decisions if d["decision"] != "retired"}
    assert decisions == {seg["A"]: "kept", seg["B"]: "kept", seg["C"]: "kept", 4: "new"}
    assert second.identity.new_ids == [4] and second.identity.retired_ids == [seg["D"]]
    assert all(second.identity.names[seg[x]] == first.identity.names[seg[x]] for x in "ABC")
    mapping = mlflow.artifacts.load_dict(f"runs:/{second.run_id}/identity/segment_mapping.json")
    assert mapping["retired_ids"] == [seg["D"]] and mapping["new_ids"] == [4]

    run_scoring(spark, later)  # with the promoted retrain
    current = {r.customer_id: r for r in spark.read.format("delta").load(str(tmp_path / "current")).collect()}
    assert all(current[c].segment == seg[x] and current[c].active for x in "AB" for c in ids[x])
    assert all(current[c].segment == seg["C"] for c in ids["C"][:60])
    assert all(current[c].segment == 4 for c in ids["C"][60:])
    assert all(not current[c].active and current[c].segment == seg["D"] for c in ids["D"])
    history = spark.read.format("delta").load(str(tmp_path / "history")).collect()
    spells = {}
    for r in history:
        spells.setdefault(r.customer_id, []).append((r.segment, r.valid_from, r.valid_to))
    # History opens a spell per model version; an unchanged customer's segment id is the same in both.
    assert all(sorted(spells[c], key=lambda s: s[1]) == [(seg["A"], month1, month2), (seg["A"], month2, None)]
               for c in ids["A"])  # fmt: skip
    assert all(sorted(spells[c], key=lambda s: s[1]) == [(seg["C"], month1, month2), (4, month2, None)]
               for c in ids["C"][60:])  # fmt: skip
