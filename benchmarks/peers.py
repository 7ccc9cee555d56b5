"""The peers the benchmark measures this project against, on the same files and the same matrix.

* ``duckdb_features``: the feature job as one DuckDB query on one machine: the same
  validation (null ids, timestamps and amounts, non-finite amounts, rows after ``as_of``,
  duplicate transaction ids) and the same per-customer columns as
  ``segmentation.features`` (RFM, basket, gaps between purchase days, lifetimes summary,
  returns, category shares of the top categories, channel shares, trend, churn ratio).
* ``naive_spark_features``: the same job written the way tutorials write it: the input
  cached whole, one ``groupBy`` per feature family joined back together, gaps from a
  window over every transaction, categories and channels through ``pivot`` without a
  value list.
* ``naive_spark_sweep``: the k sweep the way tutorials write it: for every (algorithm, k)
  assemble and scale the features again from the table, fit on all customers, score the
  silhouette on all customers, nothing persisted.
* ``sklearn_fit``: scikit-learn's KMeans, BisectingKMeans and GaussianMixture on the
  same matrix with the same k and iteration count as MLlib.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import numpy as np
from pyspark.ml.clustering import BisectingKMeans, GaussianMixture, KMeans
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.ml.feature import StandardScaler, VectorAssembler
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

TREND_DAYS = 90
CHURN_MULTIPLE = 3.0


def duckdb_features(
    tx_glob: str, out: Path, as_of: dt.date, top_categories: int, max_channels: int, memory_limit: str | None = None
) -> int:
    """Validate, aggregate and write the features with DuckDB; return the number of customers.

    ``memory_limit`` (for example ``"8GB"``) caps DuckDB's buffer manager, which otherwise takes 80% of
    the machine; in the benchmark it shares the process with Spark's driver heap, and DuckDB spills
    to its temp directory beyond the cap.
    """
    import duckdb

    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = false")
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    as_of_sql = f"DATE '{as_of.isoformat()}'"
    con.execute(f"""
        CREATE TEMP VIEW kept AS
        SELECT customer_id, amount, coalesce(CAST(quantity AS DOUBLE), 1.0) AS quantity, category, channel,
               CAST("timestamp" AS DATE) AS day
        FROM read_parquet('{tx_glob}')
        WHERE customer_id IS NOT NULL AND trim(customer_id) <> '' AND "timestamp" IS NOT NULL
          AND amount IS NOT NULL AND isfinite(amount) AND CAST("timestamp" AS DATE) <= {as_of_sql}
        QUALIFY transaction_id IS NULL
             OR row_number() OVER (PARTITION BY transaction_id ORDER BY "timestamp", amount, customer_id) = 1
    """)  # noqa: S608 - the benchmark's own paths
    con.execute("CREATE TEMP TABLE kept_t AS SELECT * FROM kept")
    cats = [r[0] for r in con.execute(
        f"SELECT category FROM kept_t WHERE category IS NOT NULL AND amount > 0 GROUP BY 1 "
        f"ORDER BY sum(amount) DESC, 1 LIMIT {top_categories}"
    ).fetchall()]  # fmt: skip
    chans = [r[0] for r in con.execute(
        "SELECT channel FROM kept_t WHERE channel IS NOT NULL GROUP BY 1 "
        f"ORDER BY count(*) DESC, 1 LIMIT {max_channels}"
    ).fetchall()]  # fmt: skip
    cat_daily = ",".join(
        f"sum(CASE WHEN amount > 0 AND category = '{c}' THEN amount ELSE 0 END) AS cat_{c}" for c in cats
    )
    chan_daily = ",".join(f"sum(CASE WHEN channel = '{c}' THEN 1 ELSE 0 END) AS chan_{c}" for c in chans)
    cat_sum = ",".join(f"sum(cat_{c}) AS cat_{c}" for c in cats)
    chan_sum = ",".join(f"sum(chan_{c}) AS chan_{c}" for c in chans)
    cat_share = ",".join(f"CASE WHEN d_gross <> 0 THEN cat_{c} / d_gross ELSE 0 END AS cat_{c}" for c in cats)
    chan_share = ",".join(f"CASE WHEN d_tx <> 0 THEN chan_{c} / d_tx ELSE 0 END AS chan_{c}" for c in chans)
    con.execute(f"""
        CREATE TEMP TABLE features AS
        WITH daily AS (
            SELECT customer_id, day, sum(amount) AS day_amount, count(*) AS d_tx,
                   sum(CASE WHEN amount > 0 THEN 1 ELSE 0 END) AS d_purchases,
                   sum(CASE WHEN amount < 0 THEN 1 ELSE 0 END) AS d_returns,
                   sum(CASE WHEN amount > 0 THEN amount ELSE 0 END) AS d_gross,
                   sum(CASE WHEN amount < 0 THEN -amount ELSE 0 END) AS d_returned,
                   sum(CASE WHEN amount > 0 THEN quantity ELSE 0 END) AS d_items,
                   list_distinct(list(category)) AS d_categories, {cat_daily}, {chan_daily}
            FROM kept_t GROUP BY customer_id, day
        ), gaps AS (
            SELECT *, CAST(day - lag(day) OVER (PARTITION BY customer_id ORDER BY day) AS DOUBLE) AS gap FROM daily
        ), customer AS (
            SELECT customer_id, sum(d_tx) AS d_tx, sum(d_purchases) AS d_purchases, sum(d_returns) AS d_returns,
                   sum(d_gross) AS d_gross, sum(d_returned) AS d_returned, sum(d_items) AS d_items,
                   min(day) AS first_day, max(day) AS last_day, count(*) AS n_days, sum(day_amount) AS net_spend,
                   arg_min(day_amount, day) AS first_day_amount, avg(gap) AS mean_gap, stddev_pop(gap) AS std_gap,
                   sum(CASE WHEN day > {as_of_sql} - {TREND_DAYS} THEN day_amount ELSE 0 END) AS spend_recent,
                   sum(CASE WHEN day > {as_of_sql} - {2 * TREND_DAYS} AND day <= {as_of_sql} - {TREND_DAYS}
                       THEN day_amount ELSE 0 END) AS spend_previous,
                   len(list_distinct(flatten(list(d_categories)))) AS n_categories, {cat_sum}, {chan_sum}
            FROM gaps GROUP BY customer_id
        ), base AS (
            SELECT customer_id, {as_of_sql} AS as_of,
                   CAST({as_of_sql} - last_day AS DOUBLE) AS recency_days,
                   CAST({as_of_sql} - first_day AS DOUBLE) AS tenure_days,
                   d_tx AS n_transactions, d_purchases AS n_purchases, d_purchases AS n_baskets,
                   d_returns AS n_returns,
                   n_days AS n_purchase_days, net_spend, d_gross AS gross_spend,
                   CASE WHEN d_purchases <> 0 THEN d_gross / d_purchases ELSE 0 END AS avg_basket_value,
                   CASE WHEN d_purchases <> 0 THEN d_items / d_purchases ELSE 0 END AS avg_items_per_basket,
                   coalesce(mean_gap, 0) AS mean_gap_days, coalesce(std_gap, 0) AS std_gap_days,
                   CAST(n_days - 1 AS DOUBLE) AS frequency, CAST(last_day - first_day AS DOUBLE) AS recency,
                   CAST({as_of_sql} - first_day AS DOUBLE) AS "T",
                   CASE WHEN n_days > 1 THEN (net_spend - first_day_amount) / (n_days - 1) ELSE 0 END
                       AS monetary_value,
                   CASE WHEN d_tx <> 0 THEN d_returns / d_tx ELSE 0 END AS return_rate,
                   CASE WHEN d_gross + d_returned <> 0 THEN d_returned / (d_gross + d_returned) ELSE 0 END
                       AS return_value_share,
                   n_categories, {cat_share}, {chan_share}, spend_recent, spend_previous,
                   CASE WHEN abs(spend_recent) + abs(spend_previous) <> 0
                        THEN (spend_recent - spend_previous) / (abs(spend_recent) + abs(spend_previous))
                        ELSE 0 END AS trend
            FROM customer
        ), typical AS (
            SELECT coalesce(median(mean_gap_days), {float(TREND_DAYS)}) AS m FROM base WHERE n_purchase_days >= 2
        )
        SELECT base.*,
               recency_days / greatest(CASE WHEN n_purchase_days >= 2 THEN mean_gap_days ELSE m END, 1.0)
                   AS churn_ratio,
               CAST(recency_days / greatest(CASE WHEN n_purchase_days >= 2 THEN mean_gap_days ELSE m END, 1.0)
                    > {CHURN_MULTIPLE} AS INTEGER) AS churned
        FROM base, typical
    """)  # noqa: S608
    out.mkdir(parents=True, exist_ok=True)
    con.execute(f"COPY features TO '{out / 'features.parquet'}' (FORMAT parquet)")
    n = con.execute("SELECT count(*) FROM features").fetchone()[0]
    con.close()
    return int(n)


def naive_spark_features(spark: SparkSession, tx_path: str, out: str, as_of: dt.date) -> int:
    """The feature job as tutorials write it (see the module docstring); return the customers written."""
    df = spark.read.parquet(tx_path).cache()
    df = df.dropDuplicates(["transaction_id"])
    df = df.na.drop(subset=["customer_id", "timestamp", "amount"])
    df = df.filter(~F.isnan("amount")).filter(F.col("timestamp") <= F.lit(as_of))
    df = df.withColumn("day", F.to_date("timestamp"))
    as_of_lit = F.lit(as_of)
    rfm = df.groupBy("customer_id").agg(
        F.datediff(as_of_lit, F.max("day")).alias("recency_days"),
        F.datediff(as_of_lit, F.min("day")).alias("tenure_days"),
        F.count("*").alias("n_transactions"),
        F.sum("amount").alias("net_spend"),
    )
    purchases = (
        df.filter(F.col("amount") > 0)
        .groupBy("customer_id")
        .agg(
            F.count("*").alias("n_purchases"),
            F.sum("amount").alias("gross_spend"),
            F.avg("amount").alias("avg_basket_value"),
            F.avg("quantity").alias("avg_items_per_basket"),
        )
    )
    returns = (
        df.filter(F.col("amount") < 0)
        .groupBy("customer_id")
        .agg(F.count("*").alias("n_returns"), F.sum(-F.col("amount")).alias("returned"))
    )
    w = Window.partitionBy("customer_id").orderBy("timestamp")
    gaps = (
        df.withColumn("prev", F.lag("day").over(w))
        .withColumn("gap", F.datediff("day", "prev"))
        .filter(F.col("gap") > 0)
        .groupBy("customer_id")
        .agg(F.avg("gap").alias("mean_gap_days"), F.stddev_pop("gap").alias("std_gap_days"))
    )
    days = df.groupBy("customer_id").agg(F.countDistinct("day").alias("n_purchase_days"))
    cats = df.filter(F.col("amount") > 0).groupBy("customer_id").pivot("category").agg(F.sum("amount"))
    chans = df.groupBy("customer_id").pivot("channel").count()
    n_cat = df.groupBy("customer_id").agg(F.countDistinct("category").alias("n_categories"))
    recent = (
        df.filter(F.col("day") > F.date_sub(as_of_lit, TREND_DAYS))
        .groupBy("customer_id")
        .agg(F.sum("amount").alias("spend_recent"))
    )
    previous = (
        df.filter((F.col("day") > F.date_sub(as_of_lit, 2 * TREND_DAYS)) & (F.col("day") <= F.date_sub(as_of_lit, 90)))
        .groupBy("customer_id")
        .agg(F.sum("amount").alias("spend_previous"))
    )
    result = rfm
    for part in (purchases, returns, gaps, days, cats, chans, n_cat, recent, previous):
        result = result.join(part, "customer_id", "left")
    result = result.na.fill(0)
    result = result.withColumn("frequency", F.col("n_purchase_days") - 1).withColumn(
        "return_rate", F.col("n_returns") / F.col("n_transactions")
    )
    result.write.mode("overwrite").parquet(out)
    df.unpersist()
    return spark.read.parquet(out).count()


def naive_spark_sweep(
    spark: SparkSession,
    features: DataFrame,
    columns: list[str],
    algorithms: list[str],
    ks: range,
    max_iter: int,
    seed: int,
) -> dict[str, float]:
    """Fit and score every (algorithm, k) on all customers, preparing the data again each time."""
    seconds = {}
    for algorithm in algorithms:
        for k in ks:
            start = time.perf_counter()
            assembled = VectorAssembler(inputCols=columns, outputCol="raw", handleInvalid="keep").transform(features)
            data = StandardScaler(inputCol="raw", outputCol="features").fit(assembled).transform(assembled)
            estimator = {"kmeans": KMeans, "bisecting_kmeans": BisectingKMeans, "gaussian_mixture": GaussianMixture}[
                algorithm
            ](k=k, maxIter=max_iter, seed=seed)
            model = estimator.fit(data)
            ClusteringEvaluator().evaluate(model.transform(data))
            seconds[f"{algorithm}-k{k}"] = time.perf_counter() - start
    return seconds


def sklearn_fit(algorithm: str, x: np.ndarray, k: int, max_iter: int, seed: int) -> float:
    """Seconds to fit scikit-learn's counterpart of ``algorithm`` on ``x``."""
    from sklearn.cluster import BisectingKMeans as SkBisecting
    from sklearn.cluster import KMeans as SkKMeans
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    estimator = {
        "kmeans": lambda: SkKMeans(k, init="k-means++", n_init=1, max_iter=max_iter, tol=0.0, random_state=seed),
        "bisecting_kmeans": lambda: SkBisecting(k, n_init=1, max_iter=max_iter, random_state=seed),
        "gaussian_mixture": lambda: SkGaussianMixture(
            k, covariance_type="full", max_iter=max_iter, tol=0.0, init_params="random_from_data", random_state=seed
        ),
    }[algorithm]()
    start = time.perf_counter()
    estimator.fit(x)
    return time.perf_counter() - start


def spark_fit(algorithm: str, data: DataFrame, k: int, max_iter: int, seed: int) -> float:
    """Seconds to fit MLlib's ``algorithm`` on ``data`` (column ``features``) with k and iterations fixed."""
    estimator = {
        # the block solver, as the training job uses (benchmarks/kmeans_solvers.py measures the others)
        "kmeans": lambda: KMeans(k=k, maxIter=max_iter, tol=0.0, seed=seed, solver="block"),
        "bisecting_kmeans": lambda: BisectingKMeans(k=k, maxIter=max_iter, seed=seed),
        "gaussian_mixture": lambda: GaussianMixture(k=k, maxIter=max_iter, tol=0.0, seed=seed),
    }[algorithm]()
    start = time.perf_counter()
    estimator.fit(data)
    return time.perf_counter() - start
