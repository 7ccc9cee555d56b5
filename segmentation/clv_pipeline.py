"""The CLV job's orchestration: load, collapse, fit, describe, publish (or validate on a holdout).

* **load**: the feature snapshot ``clv.as_of`` (default: the newest) of ``features.output``;
  with ``clv.holdout_days`` the calibration features are computed from the transactions
  instead (:func:`calibration_and_holdout`).
* **collapse**: in Spark, customers become distinct (frequency, recency, T) triples and, for
  Gamma-Gamma, distinct (frequency, monetary_value) pairs of repeat customers, each with its
  customer count. Only these weighted rows reach the driver, never customer ids.
* **fit**: BG/NBD and Gamma-Gamma by weighted maximum likelihood (``segmentation.clv``).
* **publish**: one MLflow run (parameters as metrics, log-likelihoods, counts, charts, the
  pyfunc model registered as ``clv.registered_model`` with ``mlflow.alias``), then the
  per-customer values, scored in Spark, replace the snapshot's rows of ``clv.output``.
* **holdout** (``clv.holdout_days``): fit on the calibration window, compare the expected
  purchases over the holdout with the actual ones per customer; the run logs the MAE, the
  totals and the chart. A holdout run validates the method: it registers no model and writes
  no table.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from pyspark import StorageLevel  # noqa: E402
from pyspark.sql import DataFrame, SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from segmentation import clv, tracking  # noqa: E402
from segmentation.config import AppConfig, ClvConfig  # noqa: E402
from segmentation.errors import ContractError  # noqa: E402
from segmentation.feature_table import compute_features  # noqa: E402
from segmentation.io import read_table, write_table  # noqa: E402
from segmentation.snapshots import persisting, read_snapshot  # noqa: E402
from segmentation.spark import shuffle_partitions_kept  # noqa: E402

__all__ = ["ClvResult", "Collapsed", "calibration_and_holdout", "collapse", "fit", "run_clv"]

log = logging.getLogger(__name__)

OUTPUT_COLUMNS = ("customer_id", "as_of", *clv.OUTPUT_COLUMNS, "model_version")
FREQUENCY_BUCKETS = 7  # chart buckets 0..6 and 7+


@dataclass(frozen=True)
class Collapsed:
    """The weighted rows the fit needs: ``triples`` (frequency, recency, T, n) of every customer
    and ``pairs`` (frequency, monetary_value, n) of repeat customers with monetary_value > 0."""

    triples: pd.DataFrame
    pairs: pd.DataFrame
    customers: int
    correlation: float

    @property
    def repeat_customers(self) -> int:
        return int(self.pairs["n"].sum())


@dataclass
class ClvResult:
    model: clv.ClvModel
    as_of: str
    run_id: str
    customers: int
    triples: int
    model_version: str | None = None
    holdout: dict[str, float] = dataclasses.field(default_factory=dict)


# --------------------------------------------------------------------------- stages


def load_snapshot(spark: SparkSession, cfg: AppConfig) -> tuple[DataFrame, str]:
    """The rows of feature snapshot ``clv.as_of`` (default: the newest) and that date as text."""
    return read_snapshot(spark, cfg.features.output, cfg.clv.as_of, required=("customer_id", *clv.INPUT_COLUMNS))


def collapse(features: DataFrame) -> Collapsed:
    """Distinct (frequency, recency, T) triples and repeat customers' (frequency, monetary_value)
    pairs with their customer counts, aggregated in Spark; the Gamma-Gamma correlation too."""
    triples = features.groupBy("frequency", "recency", "T").agg(F.count(F.lit(1)).alias("n")).toPandas()
    repeat = features.where((F.col("frequency") > 0) & (F.col("monetary_value") > 0))
    pairs = repeat.groupBy("frequency", "monetary_value").agg(F.count(F.lit(1)).alias("n")).toPandas()
    correlation = repeat.select(F.corr("frequency", "monetary_value")).first()[0]
    return Collapsed(triples, pairs, int(triples["n"].sum()), float(correlation or 0.0))


def fit(collapsed: Collapsed, ccfg: ClvConfig) -> clv.ClvModel:
    t = collapsed.triples
    bgnbd = clv.fit_bgnbd(t["frequency"], t["recency"], t["T"], t["n"], penalizer=ccfg.penalizer)
    p = collapsed.pairs
    gamma_gamma = clv.fit_gamma_gamma(
        p["frequency"], p["monetary_value"], p["n"], penalizer=ccfg.penalizer, correlation=collapsed.correlation
    )
    log.info("BG/NBD %s; Gamma-Gamma %s", bgnbd, gamma_gamma)
    return clv.ClvModel(bgnbd, gamma_gamma, ccfg.horizon_days, ccfg.annual_discount_rate)


def metrics(model: clv.ClvModel, collapsed: Collapsed) -> dict[str, float]:
    b, g = model.bgnbd, model.gamma_gamma
    return {
        "bgnbd_r": b.r, "bgnbd_alpha": b.alpha, "bgnbd_a": b.a, "bgnbd_b": b.b,
        "gg_p": g.p, "gg_q": g.q, "gg_v": g.v,
        "bgnbd_log_likelihood": b.log_likelihood, "gg_log_likelihood": g.log_likelihood,
        "customers": collapsed.customers, "repeat_customers": collapsed.repeat_customers,
        "distinct_triples": len(collapsed.triples), "distinct_gg_pairs": len(collapsed.pairs),
        "gg_frequency_monetary_corr": collapsed.correlation,
    }  # fmt: skip


def calibration_and_holdout(spark: SparkSession, cfg: AppConfig) -> tuple[DataFrame, DataFrame, dt.date, dt.date]:
    """Calibration features and each calibration customer's actual purchase days in the holdout.

    The end of the window is ``features.as_of`` (default: the newest transaction day); the
    calibration window ends ``clv.holdout_days`` before it. The feature job's own
    :func:`compute_features` builds the features at both ends (rows after an ``as_of`` are
    set aside, not errors, here); the holdout purchase days of a customer are the difference
    of its ``n_purchase_days``. Returns (calibration features, holdout with customer_id and
    ``actual``, calibration end, end).
    """
    end = cfg.features.as_of or _newest_transaction_day(spark, cfg)
    cal_end = end - dt.timedelta(days=cfg.clv.holdout_days)

    def at(as_of: dt.date, persist) -> DataFrame:
        features_cfg = cfg.features.model_copy(update={"as_of": as_of, "max_quarantine_share": 1.0})
        return compute_features(spark, cfg.model_copy(update={"features": features_cfg}), persist)[0]

    # the two windows' rows and activity stay persisted (and the shuffles sized to the input) until both are aggregated
    with shuffle_partitions_kept(spark), persisting() as persist:
        calibration, full = at(cal_end, persist), at(end, persist)
        calibration = calibration.select("customer_id", "as_of", *clv.INPUT_COLUMNS, "n_purchase_days")
        calibration = calibration.persist(StorageLevel.MEMORY_AND_DISK)
        calibration.count()
    holdout = calibration.join(full.select("customer_id", F.col("n_purchase_days").alias("_n")), "customer_id", "left")
    holdout = holdout.select(
        "customer_id", (F.coalesce("_n", "n_purchase_days") - F.col("n_purchase_days")).cast("double").alias("actual")
    )
    return calibration.drop("n_purchase_days"), holdout, cal_end, end


def _newest_transaction_day(spark: SparkSession, cfg: AppConfig) -> dt.date:
    source = cfg.input.transactions
    column = source.columns["timestamp"]
    newest = read_table(spark, source).select(F.max(F.to_date(F.col(column)))).first()[0]
    if newest is None:
        raise ContractError(f"transactions '{source.location}' have no parseable '{column}'; set features.as_of")
    return newest


def holdout_comparison(scored: DataFrame, holdout: DataFrame, calibration: DataFrame) -> tuple[dict, pd.DataFrame]:
    """MAE and totals of expected against actual holdout purchases, and both by calibration frequency."""
    joined = (
        scored.select("customer_id", "expected_purchases")
        .join(holdout, "customer_id", how="inner")
        .join(calibration.select("customer_id", "frequency"), "customer_id", how="inner")
    )
    bucket = F.least(F.col("frequency"), F.lit(float(FREQUENCY_BUCKETS))).cast("int")
    by_bucket = (
        joined.groupBy(bucket.alias("frequency"))
        .agg(
            F.count(F.lit(1)).alias("customers"),
            F.avg("expected_purchases").alias("expected"),
            F.avg("actual").alias("actual"),
            F.sum("expected_purchases").alias("expected_total"),
            F.sum("actual").alias("actual_total"),
            F.sum(F.abs(F.col("expected_purchases") - F.col("actual"))).alias("abs_error"),
        )
        .toPandas()
        .sort_values("frequency")
        .reset_index(drop=True)
    )
    customers = float(by_bucket["customers"].sum())
    summary = {
        "holdout_customers": customers,
        "holdout_mae": float(by_bucket["abs_error"].sum() / customers),
        "holdout_predicted_total": float(by_bucket["expected_total"].sum()),
        "holdout_actual_total": float(by_bucket["actual_total"].sum()),
    }
    return summary, by_bucket.drop(columns="abs_error")


# --------------------------------------------------------------------------- charts


def frequency_fit_chart(model: clv.ClvModel, triples: pd.DataFrame) -> tuple[Figure, pd.DataFrame]:
    """Customers by number of repeat purchases in the window: actual against the BG/NBD's
    expectation for customers of the same ages T (buckets 0..6 and 7+)."""
    by_t = triples.groupby("T", as_index=False)["n"].sum()
    t, w = by_t["T"].to_numpy(float), by_t["n"].to_numpy(float)
    expected = [float(w @ clv.bgnbd_prob_n_purchases(model.bgnbd, t, n)) for n in range(FREQUENCY_BUCKETS)]
    expected.append(float(w.sum()) - sum(expected))
    bucket = np.minimum(triples["frequency"].to_numpy(int), FREQUENCY_BUCKETS)
    actual = np.bincount(bucket, weights=triples["n"].to_numpy(float), minlength=FREQUENCY_BUCKETS + 1)
    labels = [str(n) for n in range(FREQUENCY_BUCKETS)] + [f"{FREQUENCY_BUCKETS}+"]
    table = pd.DataFrame({"frequency": labels, "actual": actual, "expected": expected})
    fig, ax = plt.subplots(figsize=(7, 4.2))
    pos = np.arange(len(labels))
    ax.bar(pos - 0.2, table["actual"], 0.4, label="actual")
    ax.bar(pos + 0.2, table["expected"], 0.4, label="BG/NBD")
    ax.set_xticks(pos, labels)
    ax.set_xlabel("repeat purchase days in the window (frequency)")
    ax.set_ylabel("customers")
    ax.set_title("Repeat purchases: actual against expected")
    ax.legend()
    fig.tight_layout()
    return fig, table


def p_alive_chart(model: clv.ClvModel, triples: pd.DataFrame) -> Figure:
    """P(alive) over frequency and recency for a customer of the largest age T in the data."""
    t_max = float(triples["T"].max())
    max_f = int(min(max(triples["frequency"].max(), 1), 60))
    x, tx = np.meshgrid(np.arange(max_f + 1, dtype=float), np.linspace(0, t_max, 101))
    p = clv.bgnbd_p_alive(model.bgnbd, x, np.where(x == 0, 0.0, tx), np.full_like(x, t_max))
    fig, ax = plt.subplots(figsize=(7, 5))
    image = ax.imshow(p, origin="lower", aspect="auto", extent=(0, max_f, 0, t_max), vmin=0, vmax=1, cmap="viridis")
    fig.colorbar(image, ax=ax, label="P(alive)")
    ax.set_xlabel("frequency (repeat purchase days)")
    ax.set_ylabel("recency (days from first to last purchase)")
    ax.set_title(f"Probability alive, customer age T = {t_max:.0f} days")
    fig.tight_layout()
    return fig


def holdout_chart(by_bucket: pd.DataFrame, holdout_days: int) -> Figure:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    labels = [str(int(f)) if f < FREQUENCY_BUCKETS else f"{FREQUENCY_BUCKETS}+" for f in by_bucket["frequency"]]
    ax.plot(labels, by_bucket["actual"], marker="o", label="actual")
    ax.plot(labels, by_bucket["expected"], marker="s", linestyle="--", label="BG/NBD")
    ax.set_xlabel("repeat purchase days in the calibration window")
    ax.set_ylabel(f"mean purchase days in the {holdout_days}-day holdout")
    ax.set_title("Holdout: conditional expectations")
    ax.legend()
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- the job


def run_clv(spark: SparkSession, cfg: AppConfig) -> ClvResult:
    """Fit, track and (without a holdout) register and score; see the module docstring."""
    ccfg = cfg.clv
    holdout = cal_end = None
    if ccfg.holdout_days:
        features, holdout, cal_end, end = calibration_and_holdout(spark, cfg)
        as_of = str(cal_end)
    else:
        features, as_of = load_snapshot(spark, cfg)
    tracking.configure(cfg.mlflow)
    tags = {"job": "train_clv", "as_of": as_of, **tracking.environment_tags()}
    try:
        with tracking.tracked_run(f"clv-{as_of}", tags=tags) as run:
            started = time.perf_counter()
            collapsed = collapse(features)
            model = fit(collapsed, ccfg)
            seconds = time.perf_counter() - started
            tracking.log_params({**ccfg.model_dump(mode="json", exclude={"output"}), "features_as_of": as_of})
            tracking.log_metrics({**metrics(model, collapsed), "seconds_collapse_and_fit": seconds})
            figure, table = frequency_fit_chart(model, collapsed.triples)
            tracking.log_figure(figure, "charts/repeat_purchases_expected_vs_actual.png")
            tracking.log_table(table, "charts/repeat_purchases_expected_vs_actual.csv")
            tracking.log_figure(p_alive_chart(model, collapsed.triples), "charts/p_alive_matrix.png")
            plt.close("all")
            example = features.select(*clv.INPUT_COLUMNS).limit(5).toPandas()
            model_uri = tracking.log_clv_model(model.as_dict(), example, clv.score_pandas(model, example))
            result = ClvResult(model, as_of, run.info.run_id, collapsed.customers, len(collapsed.triples))
            if holdout is not None:
                result.holdout = _validate(features, holdout, model, ccfg.holdout_days)
                tracking.set_tags({"holdout_end": str(end), "calibration_end": str(cal_end)})
                return result
            version = tracking.register_model(model_uri, ccfg.registered_model, cfg.mlflow.alias)
            result.model_version = version
            scored = clv.score(features, model).withColumn("model_version", F.lit(version))
            write_table(
                scored.select(*OUTPUT_COLUMNS), ccfg.output, partition_by=["as_of"], replace_where={"as_of": as_of}
            )
            log.info(
                "CLV of %d customers (%d distinct triples) for as_of %s written to %s with %s version %s",
                result.customers, result.triples, as_of, ccfg.output.location, ccfg.registered_model, version,
            )  # fmt: skip
            return result
    finally:
        if ccfg.holdout_days:
            features.unpersist()


def _validate(calibration: DataFrame, holdout: DataFrame, model: clv.ClvModel, holdout_days: int) -> dict:
    over_holdout = dataclasses.replace(model, horizon_days=holdout_days)
    scored = clv.score(calibration, over_holdout)
    summary, by_bucket = holdout_comparison(scored, holdout, calibration)
    tracking.log_metrics(summary)
    tracking.log_table(by_bucket, "holdout/by_frequency.csv")
    tracking.log_figure(holdout_chart(by_bucket, holdout_days), "holdout/conditional_expectations.png")
    plt.close("all")
    log.info(
        "holdout of %d days: MAE %.4f purchase days per customer, predicted %.1f against actual %.1f in total",
        holdout_days, summary["holdout_mae"], summary["holdout_predicted_total"], summary["holdout_actual_total"],
    )  # fmt: skip
    return summary
