"""Stable segment identity across retrains.

Clustering algorithms number clusters arbitrarily; downstream campaigns and
dashboards need "segment 3" to keep meaning the same kind of customer. After a
retrain, the new model's clusters are matched to the previous champion's
segments on the same feature snapshot, by optimal assignment (Hungarian
algorithm) on either

* ``overlap`` (default, any algorithm): the Jaccard overlap of the customers an
  old segment and a new cluster hold, when the old model scores the snapshot;
* ``centroid`` (KMeans-like): the distance between the mean scaled feature
  vectors of the two groups, both in the new model's feature space.

A matched cluster keeps the old id and name only when the match is good enough
(``min_overlap`` / ``max_centroid_distance``); otherwise it gets a fresh id.
Old segments left without a match are retired, and retired ids are never
reused. The resulting mapping is a built-in ``SQLTransformer`` (:func:`relabel_stage`)
at the end of the saved pipeline, so every loader (``mlflow.spark``, ``mlflow.pyfunc``,
the scoring job, ``PipelineModel.load`` without this package) writes stable ids. The
mapping with its decisions is also the run's ``identity/segment_mapping.json``, which is
where the next retrain and the scoring job read it.

:class:`SegmentRelabeler` is the pure-Python stage of the models saved before that; it is
kept only so those models load.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.feature import SQLTransformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.ml.stat import Summarizer
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from scipy.optimize import linear_sum_assignment

from segmentation.preprocessing import sql_name

__all__ = [
    "IdentityMapping",
    "SegmentRelabeler",
    "centroid_distances",
    "contingency",
    "initial_mapping",
    "match_segments",
    "relabel_stage",
]

log = logging.getLogger(__name__)


class SegmentRelabeler(Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable, DefaultParamsWritable):
    """Maps a clustering model's cluster index (``inputCol``) to a stable segment id (``outputCol``).
    Kept only so models saved before the relabelling became built-in load; new models use
    :func:`relabel_stage`."""

    mapping = Param(
        Params._dummy(), "mapping", "stable segment id of each cluster index", typeConverter=TypeConverters.toListInt
    )

    @keyword_only
    def __init__(self, *, inputCol: str = "cluster", outputCol: str = "prediction", mapping: list[int] | None = None):
        super().__init__()
        self._setDefault(inputCol="cluster", outputCol="prediction", mapping=[])
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(
        self, *, inputCol: str = "cluster", outputCol: str = "prediction", mapping: list[int] | None = None
    ) -> SegmentRelabeler:
        return self._set(**self._input_kwargs)

    def getMapping(self) -> list[int]:
        return self.getOrDefault(self.mapping)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        ids = F.array(*[F.lit(int(i)) for i in self.getMapping()])
        cluster = F.col(self.getInputCol()).cast("int")
        return dataset.withColumn(self.getOutputCol(), F.element_at(ids, cluster + 1).cast("double"))


def relabel_stage(mapping: list[int], input_col: str = "cluster", output_col: str = "prediction") -> SQLTransformer:
    """Adds ``output_col``: the stable segment id (double, as a clustering model's prediction is)
    of the cluster index in ``input_col``, ``mapping[cluster]``, as a built-in stage."""
    if not mapping:
        raise ValueError("the segment mapping is empty; it needs one segment id per cluster")
    ids = ", ".join(str(int(i)) for i in mapping)
    expression = f"CAST(element_at(array({ids}), CAST({sql_name(input_col)} AS INT) + 1) AS DOUBLE)"
    return SQLTransformer(statement=f"SELECT *, {expression} AS {sql_name(output_col)} FROM __THIS__")


@dataclass(frozen=True)
class IdentityMapping:
    """What the matching decided, kept with the model and logged to MLflow."""

    cluster_to_segment: list[int]
    decisions: list[dict[str, Any]] = field(default_factory=list)
    new_ids: list[int] = field(default_factory=list)
    retired_ids: list[int] = field(default_factory=list)
    next_id: int = 0
    method: str = "initial"
    names: dict[int, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["names"] = {str(k): v for k, v in self.names.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IdentityMapping:
        return cls(
            cluster_to_segment=[int(x) for x in data["cluster_to_segment"]],
            decisions=list(data.get("decisions", [])),
            new_ids=[int(x) for x in data.get("new_ids", [])],
            retired_ids=[int(x) for x in data.get("retired_ids", [])],
            next_id=int(data.get("next_id", 0)),
            method=str(data.get("method", "initial")),
            names={int(k): v for k, v in data.get("names", {}).items()},
        )

    def with_names(self, names: dict[int, str]) -> IdentityMapping:
        return IdentityMapping(**{**asdict(self), "names": dict(names)})


def initial_mapping(k: int) -> IdentityMapping:
    """The first model: cluster i is segment i."""
    return IdentityMapping(
        cluster_to_segment=list(range(k)),
        decisions=[{"segment": i, "cluster": i, "decision": "new", "reason": "first model"} for i in range(k)],
        new_ids=list(range(k)),
        next_id=k,
    )


def contingency(df: DataFrame, old_col: str, new_col: str) -> tuple[list[int], list[int], np.ndarray]:
    """Counts of customers per (old segment, new cluster); only the k x k table reaches the driver."""
    rows = df.groupBy(F.col(old_col).cast("int").alias("o"), F.col(new_col).cast("int").alias("n")).count().collect()
    old_ids = sorted({r.o for r in rows})
    new_ids = sorted({r.n for r in rows})
    table = np.zeros((len(old_ids), len(new_ids)))
    for r in rows:
        table[old_ids.index(r.o), new_ids.index(r.n)] = r["count"]
    return old_ids, new_ids, table


def centroid_distances(
    df: DataFrame, features_col: str, old_col: str, new_col: str, old_ids: list[int], new_ids: list[int]
) -> np.ndarray:
    """Euclidean distance between the mean feature vector of each old segment and each new cluster."""

    def means(col: str, ids: list[int]) -> np.ndarray:
        rows = df.groupBy(F.col(col).cast("int").alias("g")).agg(Summarizer.mean(F.col(features_col)).alias("m"))
        found = {r.g: r.m.toArray() for r in rows.collect()}
        return np.array([found[i] for i in ids])

    old_means, new_means = means(old_col, old_ids), means(new_col, new_ids)
    return np.linalg.norm(old_means[:, None, :] - new_means[None, :, :], axis=2)


def match_segments(
    previous: IdentityMapping,
    old_ids: list[int],
    new_clusters: list[int],
    counts: np.ndarray,
    n_clusters: int,
    method: str = "overlap",
    distances: np.ndarray | None = None,
    min_overlap: float = 0.5,
    max_centroid_distance: float = 1.0,
) -> IdentityMapping:
    """Match new clusters to old segment ids (see the module docstring); returns the new mapping.

    ``counts[i, j]`` is the number of customers in old segment ``old_ids[i]`` and new
    cluster ``new_clusters[j]``; ``distances`` has the same shape (centroid method).
    """
    jaccard, pairs = _assignment(counts, method, distances)
    limit = min_overlap if method == "overlap" else max_centroid_distance
    decisions: list[dict[str, Any]] = []
    for i, j in pairs:
        distance = float(distances[i, j]) if distances is not None else None
        decisions.append(_pair_decision(old_ids[i], new_clusters[j], float(jaccard[i, j]), distance, method, limit))
    mapping = {d["cluster"]: d["segment"] for d in decisions if d["decision"] == "kept"}
    kept_old = set(mapping.values())
    first_id = _first_fresh_id(previous, old_ids)
    fresh = _fresh_ids(mapping, n_clusters, first_id)
    decisions += [
        {"segment": segment, "cluster": cluster, "decision": "new", "reason": "no old segment kept"}
        for cluster, segment in fresh.items()
    ]
    dropped = sorted((set(previous.cluster_to_segment) | set(old_ids)) - kept_old)
    decisions += [
        {"segment": old_id, "decision": "retired", "reason": "no new cluster matched it"} for old_id in dropped
    ]
    mapping.update(fresh)
    result = IdentityMapping(
        cluster_to_segment=[mapping[c] for c in range(n_clusters)],
        decisions=decisions,
        new_ids=list(fresh.values()),
        retired_ids=sorted(set(previous.retired_ids) | set(dropped)),
        next_id=first_id + len(fresh),
        method=method,
        names={seg: previous.names[seg] for seg in kept_old if seg in previous.names},
    )
    for d in decisions:
        log.info("segment identity: %s", d)
    return result


def _assignment(
    counts: np.ndarray, method: str, distances: np.ndarray | None
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The Jaccard overlaps, and the optimal (old row, new column) pairs by ``method``'s cost."""
    if method not in ("overlap", "centroid"):
        raise ValueError(f"training.identity.method must be 'overlap' or 'centroid', got {method!r}")
    old_sizes = counts.sum(axis=1, keepdims=True)
    new_sizes = counts.sum(axis=0, keepdims=True)
    jaccard = counts / np.maximum(old_sizes + new_sizes - counts, 1.0)
    if method == "centroid":
        if distances is None:
            raise ValueError("the centroid method needs the centroid distances")
        cost = distances
    else:
        cost = -jaccard
    rows, cols = linear_sum_assignment(cost)
    return jaccard, list(zip(rows, cols, strict=True))


def _pair_decision(
    old_id: int, cluster: int, overlap: float, distance: float | None, method: str, limit: float
) -> dict[str, Any]:
    """Whether a matched pair is within ``limit`` (the method's threshold), so the cluster keeps
    the old id, and why."""
    decision = {
        "segment": old_id,
        "cluster": cluster,
        "overlap": round(overlap, 4),
        "centroid_distance": None if distance is None else round(distance, 4),
    }
    if method == "overlap":
        good, threshold = overlap >= limit, f"overlap {overlap:.3f} < {limit}"
    else:
        good, threshold = distance <= limit, f"distance {distance:.3f} > {limit}"
    if good:
        return {**decision, "decision": "kept", "reason": f"best {method} match within threshold"}
    return {**decision, "decision": "changed too much", "reason": threshold}


def _first_fresh_id(previous: IdentityMapping, old_ids: list[int]) -> int:
    """Fresh ids start after every id ever used, retired ones included, so none is reused."""
    used = [*previous.cluster_to_segment, *previous.retired_ids, *old_ids]
    return max(previous.next_id, max(used, default=-1) + 1)


def _fresh_ids(kept: dict[int, int], n_clusters: int, first_id: int) -> dict[int, int]:
    """Cluster -> a fresh id, counting up from ``first_id``, for every cluster not in ``kept``."""
    unmatched = [c for c in range(n_clusters) if c not in kept]
    return {cluster: first_id + n for n, cluster in enumerate(unmatched)}
