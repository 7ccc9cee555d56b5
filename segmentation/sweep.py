"""The sweep: fit and evaluate every (algorithm, k) of ``training`` on the sample of prepared vectors.

Candidates are fitted in parallel (``training.selection.parallelism`` threads share the one
Spark session); stability refits run afterwards, for every candidate or only for the ones
that can still win (``selection.stability_scope``). Nothing here logs or writes: the
publish step turns the records into MLflow child runs.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from segmentation.config import DENSITY, TrainingConfig
from segmentation.evaluation import METRICS, adjusted_rand_index, evaluate_clustering
from segmentation.models import fit_best
from segmentation.selection import stability_needed
from segmentation.spark import worker_threads

__all__ = ["Candidate", "Sweep", "evaluate_candidate", "run_sweep"]

Candidate = tuple[str, int]  # (algorithm, k)


@dataclass(frozen=True)
class Sweep:
    """Every candidate in sweep order with its fitted model, its record (metrics and seconds) and
    the wall-clock time its fit began."""

    candidates: list[Candidate]
    models: dict[Candidate, Any]
    records: dict[Candidate, dict[str, Any]]
    started: dict[Candidate, float]

    def ordered_records(self) -> list[dict[str, Any]]:
        return [self.records[c] for c in self.candidates]


def _prefit_density(tcfg: TrainingConfig, sample: DataFrame) -> tuple[Any, float, float]:
    """The density candidate, fitted first because its k is what it finds: (model, wall-clock start,
    seconds)."""
    wall_start, started = time.time(), time.perf_counter()
    model = fit_best(DENSITY, 0, tcfg, tcfg.seed, sample)
    return model, wall_start, time.perf_counter() - started


def _fit_candidate(
    algorithm: str, k: int, tcfg: TrainingConfig, sample: DataFrame, stability: float | None,
    density: tuple[Any, float, float] | None = None,
) -> tuple[Any, dict[str, Any], float]:  # fmt: skip
    """Fit one (algorithm, k) on the sample and evaluate it: (model, sweep record, wall-clock start).

    The record times the fit and the metrics apart; ``stability`` is its stability until
    measured (None, or NaN when the check is off). The density candidate was fitted already.
    """
    if algorithm == DENSITY and density is not None:
        model, wall_start, fit_seconds = density
    else:
        wall_start, started = time.time(), time.perf_counter()
        model = fit_best(algorithm, k, tcfg, tcfg.seed, sample)
        fit_seconds = time.perf_counter() - started
    fitted = time.perf_counter()
    predictions = model.transform(sample).persist()
    metrics = evaluate_candidate(algorithm, model, predictions)
    predictions.unpersist()
    seconds = {"fit_seconds": fit_seconds, "metrics_seconds": time.perf_counter() - fitted}
    return model, {"algorithm": algorithm, "k": k, **metrics, "stability_ari": stability, **seconds}, wall_start


def evaluate_candidate(algorithm: str, model: Any, predictions: DataFrame, prediction_col: str = "prediction",
                       fitted_rows: int | None = None) -> dict[str, float]:  # fmt: skip
    """:func:`evaluate_clustering` of a candidate's predictions; for ``density``, of the rows in a
    cluster, with the share of the others as ``noise_share``."""
    if algorithm != DENSITY:
        return evaluate_clustering(model, predictions, "features", prediction_col, algorithm, fitted_rows)
    noise = F.col(prediction_col) == F.lit(model.getK())
    row = predictions.agg(F.count(F.lit(1)).alias("n"), F.sum(noise.cast("int")).alias("noise")).first()
    n, n_noise = int(row["n"]), int(row["noise"] or 0)
    if n_noise == n:  # no cluster at all
        return {**dict.fromkeys(METRICS, float("nan")), "min_cluster_share": 0.0, "n_clusters_nonempty": 0.0,
                "noise_share": 1.0}  # fmt: skip
    metrics = evaluate_clustering(model, predictions.where(~noise), "features", prediction_col, algorithm)
    return {**metrics, "noise_share": n_noise / max(n, 1)}


def _stability(
    algorithm: str, k: int, model: Any, tcfg: TrainingConfig, sample: DataFrame, seeds: list[int]
) -> tuple[float, float]:
    """(mean adjusted Rand index between the model and fits with other seeds on the same rows, seconds)."""
    started = time.perf_counter()
    base = model.transform(sample).select("customer_id", "features", F.col("prediction").alias("base"))
    scores = []
    for seed in seeds:
        other = fit_best(algorithm, k, tcfg, seed, sample, prediction_col="prediction_alt",
                         probability_col="probability_alt")  # fmt: skip
        scores.append(adjusted_rand_index(other.transform(base), "base", "prediction_alt"))
    return float(sum(scores) / len(scores)), time.perf_counter() - started


def run_sweep(tcfg: TrainingConfig, sample: DataFrame) -> Sweep:
    """Fit and evaluate every (algorithm, k), then measure stability where ``stability_scope`` asks.

    A record's ``stability_seconds`` is None where its stability was not measured, and its
    ``candidate_seconds`` sums the fit, the metrics and the stability.
    """
    sel = tcfg.selection
    seeds = [tcfg.seed + i for i in range(1, sel.stability_seeds)]
    density = _prefit_density(tcfg, sample) if DENSITY in tcfg.algorithms else None
    candidates = [(a, k) for a in tcfg.algorithms
                  for k in ([density[0].getK()] if a == DENSITY else range(tcfg.k_min, tcfg.k_max + 1))]  # fmt: skip
    unmeasured = None if seeds else float("nan")

    def pending() -> list[tuple[str, int]]:
        if not seeds:
            return []
        if sel.stability_scope == "all":
            return [c for c in candidates if records[c]["stability_ari"] is None]
        rule = (sel.min_cluster_share, sel.min_stability, sel.silhouette_tolerance, sel.k_criterion)
        return stability_needed(list(records.values()), tcfg.algorithms, *rule)

    with ThreadPoolExecutor(sel.parallelism, initializer=worker_threads(sample.sparkSession)) as pool:
        fitted = pool.map(lambda c: _fit_candidate(*c, tcfg, sample, unmeasured, density), candidates)
        fits = dict(zip(candidates, fitted, strict=True))
        models = {c: fit[0] for c, fit in fits.items()}
        records = {c: {**fit[1], "stability_seconds": None} for c, fit in fits.items()}
        while todo := pending():
            scores = pool.map(lambda c: _stability(*c, models[c], tcfg, sample, seeds), todo)
            for c, (ari, seconds) in zip(todo, scores, strict=True):
                records[c].update(stability_ari=ari, stability_seconds=seconds)
    for record in records.values():
        steps = ("fit_seconds", "metrics_seconds", "stability_seconds")
        record["candidate_seconds"] = sum(record[step] or 0.0 for step in steps)
    return Sweep(candidates, models, records, {c: fit[2] for c, fit in fits.items()})
