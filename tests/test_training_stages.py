"""The training stages on small inline frames (the whole run is in test_training_pipeline.py)."""

from __future__ import annotations

from pyspark.ml.functions import array_to_vector
from pyspark.sql import functions as F

from segmentation.config import TrainingConfig
from segmentation.snapshots import persisting
from segmentation.training_stages import Prepared, refit_rows_of

N = 5000


def _prepared(spark, sample_size: int) -> Prepared:
    vectors = spark.range(N).select(
        F.col("id").cast("string").alias("customer_id"),
        array_to_vector(F.array(F.col("id").cast("double"), F.lit(1.0))).alias("features"),
    )
    sample = vectors.sample(False, sample_size / N, 7)
    return Prepared(vectors, "2024-01-01", ["x"], None, vectors, sample, N, sample.count())


def test_the_champion_is_refitted_on_everyone_up_to_the_limit(spark):
    prepared = _prepared(spark, 500)
    with persisting() as persist:
        for limit in (None, N, 2 * N):
            tcfg = TrainingConfig(seed=7, refit={"max_customers": limit})
            rows, n_rows = refit_rows_of(prepared, tcfg, persist)
            assert rows is prepared.vectors and n_rows == N


def test_above_the_limit_it_is_refitted_on_a_seeded_sample_that_holds_the_sweeps(spark):
    prepared = _prepared(spark, 500)
    tcfg = TrainingConfig(seed=7, refit={"max_customers": 2000})
    with persisting() as persist:
        rows, n_rows = refit_rows_of(prepared, tcfg, persist)
        ids = {r.customer_id for r in rows.select("customer_id").collect()}
        assert n_rows == len(ids) and 1800 < n_rows < 2200  # about the limit (a Bernoulli sample)
        assert {r.customer_id for r in prepared.sample.select("customer_id").collect()} <= ids
        again, _ = refit_rows_of(prepared, tcfg, persist)
        assert {r.customer_id for r in again.select("customer_id").collect()} == ids  # the same rows each run
        assert rows.storageLevel.useMemory  # fitted over many iterations: persisted once
