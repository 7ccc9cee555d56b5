"""The estimator factory: Spark MLlib KMeans, BisectingKMeans and GaussianMixture with seeds always set.

Warm starts: pyspark's ``KMeans`` exposes no ``initialModel`` (Scala keeps it
private), so a retrain cannot start from the previous centroids directly. The
documented equivalent is the stable-identity step (``segmentation.identity``),
which matches the new clusters to the previous ones and records how far each
centre moved.
"""

from __future__ import annotations

import logging
import math
import uuid
from concurrent.futures import ThreadPoolExecutor, wait
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from pyspark.ml.clustering import BisectingKMeans, GaussianMixture, KMeans
from pyspark.sql import DataFrame

from segmentation.config import ALGORITHMS, DENSITY, TrainingConfig
from segmentation.density import STABILITY_SHARE, fit_density_candidate
from segmentation.errors import FitFailedError
from segmentation.spark import cancel_tagged, jobs_tagged, worker_threads

__all__ = ["ALGORITHMS", "FitTimeout", "build_estimator", "fit_best", "fit_within", "objective", "param_record"]

log = logging.getLogger(__name__)

NOT_APPLICABLE = "n/a"
# Start i of a fit seeded s is seeded s + i * RESTART_STRIDE, so the restarts of the stability
# refits (seeded s + 1, s + 2, ...) never reuse a start of the fit they are compared with.
RESTART_STRIDE = 1000
# A start that fails (runs past training.fit_timeout_seconds or ends with a non-finite objective)
# is tried once more from seed + RETRY_OFFSET, a start no other fit of the run uses.
RETRY_OFFSET = RESTART_STRIDE // 2


class FitTimeout(Exception):
    """A fit ran past its time limit; its Spark jobs were interrupted."""


def build_estimator(
    algorithm: str,
    k: int,
    cfg: TrainingConfig,
    seed: int,
    features_col: str = "features",
    prediction_col: str = "prediction",
    probability_col: str = "probability",
) -> KMeans | BisectingKMeans | GaussianMixture:
    """An unfitted estimator for ``algorithm`` with ``k`` clusters and the tunables from ``cfg``."""
    if algorithm == "kmeans":
        p = cfg.kmeans
        return KMeans(
            k=k,
            seed=seed,
            maxIter=p.max_iter,
            tol=p.tol,
            initMode=p.init_mode,
            initSteps=p.init_steps,
            distanceMeasure=p.distance_measure,
            solver=p.solver,
            featuresCol=features_col,
            predictionCol=prediction_col,
        )
    if algorithm == "bisecting_kmeans":
        p = cfg.bisecting_kmeans
        return BisectingKMeans(
            k=k,
            seed=seed,
            maxIter=p.max_iter,
            minDivisibleClusterSize=p.min_divisible_cluster_size,
            distanceMeasure=p.distance_measure,
            featuresCol=features_col,
            predictionCol=prediction_col,
        )
    if algorithm == "gaussian_mixture":
        p = cfg.gaussian_mixture
        return GaussianMixture(
            k=k,
            seed=seed,
            maxIter=p.max_iter,
            tol=p.tol,
            featuresCol=features_col,
            predictionCol=prediction_col,
            probabilityCol=probability_col,
        )
    raise ValueError(f"unknown algorithm {algorithm!r}; expected one of {ALGORITHMS}")


def objective(algorithm: str, model: Any) -> float:
    """What a fit minimises, from its training summary: the within-cluster sum of squares
    (KMeans, BisectingKMeans) or the negative log-likelihood (GaussianMixture)."""
    if algorithm == "gaussian_mixture":
        return -float(model.summary.logLikelihood)
    return float(model.summary.trainingCost)


def fit_best(algorithm: str, k: int, cfg: TrainingConfig, seed: int, data: DataFrame, **columns: str) -> Any:
    """Fit ``cfg.restarts_for(algorithm)`` times from different starts and keep the fit with the best objective.

    KMeans and GaussianMixture converge to a local optimum that depends on their start: on the
    demo's 47,639 customers, six KMeans k=7 starts ended at five different within-cluster sums of
    squares (589,790 to 691,211), and only the lowest matched the planted personas at ARI 0.92
    (the others 0.51 to 0.79; docs/training.md, Restarts). The first start is seeded ``seed``,
    so one restart is the single fit it always was.

    ``density`` (DBSCAN, :mod:`segmentation.density`) ignores ``k`` and the restarts: one DBSCAN on
    the rows, or, for another seed than ``cfg.seed`` (a stability refit), on a share of them drawn
    with that seed.
    """
    if algorithm == DENSITY:  # deterministic on its rows: one fit; another seed draws other rows
        share = 1.0 if seed == cfg.seed else STABILITY_SHARE
        return fit_density_candidate(data, cfg.density, seed, share, columns.get("features_col", "features"),
                                     columns.get("prediction_col", "prediction"))  # fmt: skip
    best, best_objective = None, float("inf")
    for start in range(cfg.restarts_for(algorithm)):
        model, value = _fit_start(algorithm, k, cfg, seed + start * RESTART_STRIDE, data, columns)
        if best is None or value < best_objective:
            best, best_objective = model, value
    return best


def _fit_start(
    algorithm: str, k: int, cfg: TrainingConfig, seed: int, data: DataFrame, columns: dict[str, str]
) -> tuple[Any, float]:
    """One start: (model, objective). A start that runs past ``cfg.fit_timeout_seconds`` or ends
    with a non-finite objective is tried once more from another seed, then the fit fails.

    MLlib's GaussianMixture has no covariance regularisation: on features with point masses (a
    share that is exactly 0 for most customers) a component can shrink until its density
    overflows, its covariance turns NaN, and the next iteration never returns (netlib's Java
    LAPACK loops on it; docs/training.md, *A fit that never ends*). The time limit turns that
    hang into a retry.
    """
    failures = []
    for attempt in (seed, seed + RETRY_OFFSET):
        estimator = build_estimator(algorithm, k, cfg, attempt, **columns)
        try:
            model = fit_within(estimator, data, cfg.fit_timeout_seconds)
        except FitTimeout:
            failures.append(f"seed {attempt} ran past training.fit_timeout_seconds={cfg.fit_timeout_seconds}")
        else:
            value = objective(algorithm, model)
            if math.isfinite(value):
                return model, value
            failures.append(f"seed {attempt} ended with a non-finite objective ({value})")
        log.warning("%s k=%d: %s", algorithm, k, failures[-1])
    raise FitFailedError(
        f"{algorithm} with k={k} failed from two starts: {'; '.join(failures)}. Raise "
        f"training.fit_timeout_seconds if its fits are legitimately slow, or leave {algorithm} out of "
        "training.algorithms"
    )


def fit_within(estimator: Any, data: DataFrame, seconds: float | None) -> Any:
    """``estimator.fit(data)``; if it takes longer than ``seconds``, its Spark jobs are cancelled
    and :class:`FitTimeout` is raised (classic and Connect sessions alike).

    The fit runs in a thread of its own, so its jobs carry a tag no other work has. A fit starts
    one job after another, so the jobs are cancelled until the fit gives up (at most a minute). A
    task that ignores the interrupt (netlib's Java LAPACK looping on a NaN does) keeps its
    executor core until the executor ends; on a cluster ``spark.task.reaper.*`` can end it.
    """
    if seconds is None:
        return estimator.fit(data)
    spark, tag = data.sparkSession, f"segmentation-fit-{uuid.uuid4().hex}"

    def fit() -> Any:
        with jobs_tagged(spark, tag):
            return estimator.fit(data)

    pool = ThreadPoolExecutor(1, thread_name_prefix="segmentation-fit", initializer=worker_threads(spark))
    future = pool.submit(fit)
    try:
        return future.result(timeout=seconds)
    except FutureTimeout:
        for _ in range(12):
            cancel_tagged(spark, tag)
            if wait([future], timeout=5).done:
                break
        log.warning("%s ran past %s s; its Spark jobs were cancelled%s", type(estimator).__name__, seconds,
                    "" if future.done() else " (it is still starting new ones)")  # fmt: skip
        raise FitTimeout(f"{type(estimator).__name__} ran past {seconds} s") from None
    finally:
        pool.shutdown(wait=False)


def param_record(algorithm: str, k: int, cfg: TrainingConfig, seed: int) -> dict[str, str]:
    """The same parameter names for every algorithm ("n/a" where one does not apply), so the
    MLflow compare view lines all runs up column by column."""
    km, bk, gm = cfg.kmeans, cfg.bisecting_kmeans, cfg.gaussian_mixture
    values = {
        "algorithm": algorithm,
        "k": k,
        "seed": seed,
        "restarts": cfg.restarts_for(algorithm),
        "max_iter": {"kmeans": km.max_iter, "bisecting_kmeans": bk.max_iter, "gaussian_mixture": gm.max_iter}.get(
            algorithm, NOT_APPLICABLE
        ),
        "tol": {"kmeans": km.tol, "gaussian_mixture": gm.tol}.get(algorithm, NOT_APPLICABLE),
        "init_mode": km.init_mode if algorithm == "kmeans" else NOT_APPLICABLE,
        "init_steps": km.init_steps if algorithm == "kmeans" else NOT_APPLICABLE,
        "solver": km.solver if algorithm == "kmeans" else NOT_APPLICABLE,
        "distance_measure": {"kmeans": km.distance_measure, "bisecting_kmeans": bk.distance_measure}.get(
            algorithm, NOT_APPLICABLE
        ),
        "min_divisible_cluster_size": bk.min_divisible_cluster_size
        if algorithm == "bisecting_kmeans"
        else NOT_APPLICABLE,
        "density_min_samples_share": cfg.density.min_samples_share if algorithm == DENSITY else NOT_APPLICABLE,
        "density_eps": (cfg.density.eps or "knee") if algorithm == DENSITY else NOT_APPLICABLE,
    }
    return {name: str(value) for name, value in values.items()}
