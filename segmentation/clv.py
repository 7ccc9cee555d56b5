"""Customer lifetime value: the BG/NBD and Gamma-Gamma models, fitted by maximum likelihood.

Pure model code, no IO and no MLflow. The fit works on *collapsed, weighted* data: one row
per distinct (frequency, recency, T) triple for BG/NBD (Fader, Hardie and Lee 2005) and per
distinct (frequency, monetary_value) pair for Gamma-Gamma (Fader, Hardie and Lee 2005b,
http://www.brucehardie.com/notes/025/), each with the number of customers it stands for.
The weighted log-likelihood of the collapsed rows equals the per-customer log-likelihood.

Conventions follow ``lifetimes`` 0.11.3 so that the parameters agree with it:

* the objective is ``-sum(w * ll) / sum(w) + penalizer * sum(params**2)``, minimised over
  the log of the parameters, starting from ``log(params) = 0.1``;
* BG/NBD's times are divided by ``max(T)`` while fitting (alpha is multiplied back), so the
  penaliser acts on a unit-free alpha and a fit in days equals a fit in weeks with alpha x 7;
* ``frequency`` = repeat purchase days, ``recency`` = days from the first to the last
  purchase, ``T`` = days from the first purchase to the end of the window, ``monetary_value``
  = mean value of the repeat purchases (``segmentation.features``). Times are in days here,
  but nothing depends on the unit: alpha is in the unit of the data.

We optimise with scipy's L-BFGS-B and analytic gradients (lifetimes uses BFGS with autograd);
both reach the same optimum to far better than 1e-3 relative (tests/test_clv.py).

Per-customer values (:func:`score`): ``p_alive`` (Spark expression), ``expected_purchases``
over the horizon and the discounted expected purchases (vectorised pandas UDF: BG/NBD's
conditional expectation needs the Gauss hypergeometric function ``scipy.special.hyp2f1``),
``expected_avg_value`` (Gamma-Gamma conditional expectation, a Spark expression) and ``clv``.
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from scipy.optimize import minimize
from scipy.special import betaln, digamma, expit, gammaln, hyp2f1

from segmentation.errors import ClvFitError, TooFewRepeatCustomersError

__all__ = [
    "BgNbdParams",
    "ClvModel",
    "GammaGammaParams",
    "INPUT_COLUMNS",
    "OUTPUT_COLUMNS",
    "bgnbd_expected_purchases",
    "bgnbd_neg_log_likelihood",
    "bgnbd_p_alive",
    "bgnbd_prob_n_purchases",
    "fit_bgnbd",
    "fit_gamma_gamma",
    "gg_expected_avg_value",
    "gg_neg_log_likelihood",
    "score",
    "score_pandas",
]

log = logging.getLogger(__name__)

INPUT_COLUMNS = ("frequency", "recency", "T", "monetary_value")
OUTPUT_COLUMNS = ("p_alive", "expected_purchases", "expected_avg_value", "clv")
MIN_REPEAT_CUSTOMERS = 10
# |corr(frequency, monetary_value)| among repeat customers above which Gamma-Gamma's independence
# assumption is reported as violated (lifetimes' docs suggest checking it is "close to 0").
MAX_GG_CORRELATION = 0.3
DAYS_PER_YEAR = 365.0
_START = 0.1  # lifetimes' starting point: every log-parameter 0.1
_OPTIONS = {"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-10, "maxcor": 20}
_GRADIENT_TOLERANCE = 1e-6
_MAX_LOG_PARAM = 25.0  # a parameter beyond e**25 (or below e**-25) means the likelihood has no maximum


@dataclass(frozen=True)
class BgNbdParams:
    """BG/NBD: purchase rate ~ Gamma(r, alpha) (alpha in days), dropout p ~ Beta(a, b)."""

    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float = math.nan  # mean per customer, without the penaliser

    def as_array(self) -> np.ndarray:
        return np.array([self.r, self.alpha, self.a, self.b])


@dataclass(frozen=True)
class GammaGammaParams:
    """Gamma-Gamma: spend per purchase ~ Gamma(p, nu), nu ~ Gamma(q, v)."""

    p: float
    q: float
    v: float
    log_likelihood: float = math.nan

    def as_array(self) -> np.ndarray:
        return np.array([self.p, self.q, self.v])

    @property
    def population_mean(self) -> float:
        return self.v * self.p / (self.q - 1)


# --------------------------------------------------------------------------- BG/NBD likelihood


def _bgnbd_ll_and_grad(
    params: np.ndarray, x: np.ndarray, tx: np.ndarray, t: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row log-likelihood and its gradient (rows x [r, alpha, a, b])."""
    r, alpha, a, b = params
    repeat = x > 0
    xm = np.maximum(x, 1.0)
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    a3 = -(r + x) * np.log(alpha + t)
    a4 = np.log(a) - np.log(b + xm - 1) - (r + x) * np.log(alpha + tx)
    a4 = np.where(repeat, a4, -np.inf)
    top = np.maximum(a3, a4)
    lse = top + np.log(np.exp(a3 - top) + np.exp(a4 - top))
    w3, w4 = np.exp(a3 - lse), np.exp(a4 - lse)
    d_r = digamma(r + x) - digamma(r) + np.log(alpha) - w3 * np.log(alpha + t) - w4 * np.log(alpha + tx)
    d_alpha = r / alpha - w3 * (r + x) / (alpha + t) - w4 * (r + x) / (alpha + tx)
    d_a = digamma(a + b) - digamma(a + b + x) + w4 / a
    d_b = digamma(a + b) + digamma(b + x) - digamma(b) - digamma(a + b + x) - w4 / (b + xm - 1)
    return a1 + a2 + lse, np.column_stack([d_r, d_alpha, d_a, d_b])


def bgnbd_neg_log_likelihood(
    log_params: np.ndarray,
    x: np.ndarray,
    tx: np.ndarray,
    t: np.ndarray,
    weights: np.ndarray,
    penalizer: float = 0.0,
) -> tuple[float, np.ndarray]:
    """lifetimes' objective and its gradient in the log-parameters:
    ``-sum(w * ll) / sum(w) + penalizer * sum(params**2)``."""
    params = np.exp(log_params)
    ll, grad = _bgnbd_ll_and_grad(params, x, tx, t)
    total = weights.sum()
    value = -(weights @ ll) / total + penalizer * np.sum(params**2)
    gradient = -(weights @ grad) / total * params + 2 * penalizer * params**2
    return float(value), gradient


def _minimise(objective, n: int, args: tuple, model: str) -> np.ndarray:
    result = minimize(objective, np.full(n, _START), args=args, jac=True, method="L-BFGS-B", options=_OPTIONS)
    # L-BFGS-B ends "ABNORMAL" when the line search cannot improve f in floating point, which also
    # happens at the optimum; a vanishing gradient tells that case from a real failure.
    stationary = result.success or bool(np.max(np.abs(result.jac)) < _GRADIENT_TOLERANCE)
    if not stationary or not np.all(np.abs(result.x) < _MAX_LOG_PARAM):
        raise ClvFitError(
            f"{model} did not converge ({result.message.strip(': ') or 'no finite maximum'}, log-parameters "
            f"{np.round(result.x, 2).tolist()}); set clv.penalizer to a small positive value "
            "(e.g. 0.001) and rerun"
        )
    return result.x


def fit_bgnbd(
    frequency: np.ndarray,
    recency: np.ndarray,
    T: np.ndarray,
    weights: np.ndarray | None = None,
    penalizer: float = 0.0,
) -> BgNbdParams:
    """Maximum-likelihood BG/NBD on (collapsed) rows; ``weights`` = customers per row."""
    x, tx, t = (np.asarray(v, dtype=float) for v in (frequency, recency, T))
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    if x.size == 0 or w.sum() == 0:
        raise TooFewRepeatCustomersError("BG/NBD: no customers to fit; check the feature snapshot")
    repeat = float(w[x > 0].sum())
    if repeat < MIN_REPEAT_CUSTOMERS:
        raise TooFewRepeatCustomersError(
            f"BG/NBD: only {repeat:.0f} customer(s) with a repeat purchase (frequency > 0), at least "
            f"{MIN_REPEAT_CUSTOMERS} are needed; use a longer observation window (features.as_of)"
        )
    if np.any(tx > t) or np.any(tx < 0) or np.any((x == 0) & (tx != 0)):
        raise ClvFitError("BG/NBD: recency must lie in [0, T] and be 0 when frequency is 0; check the feature table")
    scale = 1.0 / t.max()
    log_params = _minimise(bgnbd_neg_log_likelihood, 4, (x, tx * scale, t * scale, w, penalizer), "BG/NBD")
    r, alpha_scaled, a, b = np.exp(log_params)
    params = np.array([r, alpha_scaled / scale, a, b])
    ll, _ = _bgnbd_ll_and_grad(params, x, tx, t)
    return BgNbdParams(*map(float, params), log_likelihood=float(w @ ll / w.sum()))


# --------------------------------------------------------------------------- Gamma-Gamma likelihood


def _gg_ll_and_grad(params: np.ndarray, x: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, q, v = params
    px = p * x
    log_xmv = np.log(x * m + v)
    ll = (
        gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(v)
        + (px - 1) * np.log(m) + px * np.log(x) - (px + q) * log_xmv
    )  # fmt: skip
    d_p = x * (digamma(px + q) - digamma(px) + np.log(m) + np.log(x) - log_xmv)
    d_q = digamma(px + q) - digamma(q) + np.log(v) - log_xmv
    d_v = q / v - (px + q) / (x * m + v)
    return ll, np.column_stack([d_p, d_q, d_v])


def gg_neg_log_likelihood(
    log_params: np.ndarray, x: np.ndarray, m: np.ndarray, weights: np.ndarray, penalizer: float = 0.0
) -> tuple[float, np.ndarray]:
    """lifetimes' Gamma-Gamma objective and its gradient in the log-parameters."""
    params = np.exp(log_params)
    ll, grad = _gg_ll_and_grad(params, x, m)
    total = weights.sum()
    value = -(weights @ ll) / total + penalizer * np.sum(params**2)
    gradient = -(weights @ grad) / total * params + 2 * penalizer * params**2
    return float(value), gradient


def fit_gamma_gamma(
    frequency: np.ndarray,
    monetary_value: np.ndarray,
    weights: np.ndarray | None = None,
    penalizer: float = 0.0,
    correlation: float | None = None,
) -> GammaGammaParams:
    """Maximum-likelihood Gamma-Gamma on repeat customers (frequency > 0, monetary_value > 0).

    ``correlation`` is corr(frequency, monetary_value) over those customers (computed in Spark by
    the caller; from the rows here when None). The model assumes it is about 0: above
    :data:`MAX_GG_CORRELATION` a warning is logged. A fit with ``q <= 1`` has no finite mean
    spend and raises :class:`ClvFitError`.
    """
    x, m = np.asarray(frequency, dtype=float), np.asarray(monetary_value, dtype=float)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    keep = (x > 0) & (m > 0)
    x, m, w = x[keep], m[keep], w[keep]
    if w.sum() < MIN_REPEAT_CUSTOMERS:
        raise TooFewRepeatCustomersError(
            f"Gamma-Gamma: only {w.sum():.0f} repeat customer(s) with a positive monetary_value, at least "
            f"{MIN_REPEAT_CUSTOMERS} are needed; use a longer observation window (features.as_of)"
        )
    if correlation is None:
        mean_x, mean_m = np.average(x, weights=w), np.average(m, weights=w)
        cov = np.average((x - mean_x) * (m - mean_m), weights=w)
        sd = math.sqrt(np.average((x - mean_x) ** 2, weights=w) * np.average((m - mean_m) ** 2, weights=w))
        correlation = cov / sd if sd > 0 else 0.0
    log.info("Gamma-Gamma: corr(frequency, monetary_value) = %.3f over repeat customers", correlation)
    if abs(correlation) > MAX_GG_CORRELATION:
        log.warning(
            "Gamma-Gamma assumes spend per purchase is independent of purchase frequency, but their "
            "correlation over repeat customers is %.3f (|corr| > %.1f): expected_avg_value and clv are biased",
            correlation,
            MAX_GG_CORRELATION,
        )
    log_params = _minimise(gg_neg_log_likelihood, 3, (x, m, w, penalizer), "Gamma-Gamma")
    params = np.exp(log_params)
    ll, _ = _gg_ll_and_grad(params, x, m)
    fitted = GammaGammaParams(*map(float, params), log_likelihood=float(w @ ll / w.sum()))
    if fitted.q <= 1:
        raise ClvFitError(
            f"Gamma-Gamma: q = {fitted.q:.4g} <= 1 gives no finite mean spend per purchase; the penaliser "
            f"({penalizer}) pulls q towards 0, so lower clv.penalizer, or check monetary_value for outliers"
        )
    return fitted


# --------------------------------------------------------------------------- per-customer values (numpy)


def bgnbd_p_alive(params: BgNbdParams, x: np.ndarray, tx: np.ndarray, t: np.ndarray) -> np.ndarray:
    """P(alive | x, t_x, T) (Hardie's note 021); 1 for customers without a repeat purchase."""
    r, alpha, a, b = params.as_array()
    x = np.asarray(x, dtype=float)
    log_div = (r + x) * np.log((alpha + t) / (alpha + tx)) + np.log(a / (b + np.maximum(x, 1) - 1))
    return np.where(x == 0, 1.0, expit(-log_div))


def bgnbd_expected_purchases(
    params: BgNbdParams, horizon: float | np.ndarray, x: np.ndarray, tx: np.ndarray, t: np.ndarray
) -> np.ndarray:
    """E[purchases in (T, T + horizon] | x, t_x, T], equation (10) of the BG/NBD paper."""
    r, alpha, a, b = params.as_array()
    x, tx, t = (np.asarray(v, dtype=float) for v in (x, tx, t))
    horizon = np.asarray(horizon, dtype=float)
    _a, _b, _c = r + x, b + x, a + b + x - 1
    z = horizon / (alpha + t + horizon)
    with np.errstate(divide="ignore", invalid="ignore"):
        ln_hyp = np.log(hyp2f1(_a, _b, _c, z))
        # Euler's transformation where the series overflows (large x and z near 1), as lifetimes does.
        alt = np.log(hyp2f1(_c - _a, _c - _b, _c, z)) + (_c - _a - _b) * np.log1p(-z)
    ln_hyp = np.where(np.isfinite(ln_hyp), ln_hyp, alt)
    numerator = (a + b + x - 1) / (a - 1) * (1 - np.exp(ln_hyp + (r + x) * np.log((alpha + t) / (alpha + t + horizon))))
    denominator = 1 + (x > 0) * (a / (b + np.maximum(x, 1) - 1)) * ((alpha + t) / (alpha + tx)) ** (r + x)
    return numerator / denominator


def discount_steps(horizon_days: int) -> np.ndarray:
    """Ends of the (about monthly) steps over which expected purchases are discounted."""
    n = max(1, round(horizon_days / 30.4375))
    return np.linspace(horizon_days / n, horizon_days, n)


def bgnbd_discounted_purchases(
    params: BgNbdParams, horizon_days: int, annual_rate: float, x: np.ndarray, tx: np.ndarray, t: np.ndarray
) -> np.ndarray:
    """Expected purchases per (about monthly) step of the horizon, each discounted at the end of
    its step: sum_i (E[N(t_i)] - E[N(t_(i-1))]) / (1 + annual_rate)**(t_i / 365)."""
    total = np.zeros(np.shape(x), dtype=float)
    previous = np.zeros(np.shape(x), dtype=float)
    for end in discount_steps(horizon_days):
        current = bgnbd_expected_purchases(params, end, x, tx, t)
        total += (current - previous) / (1 + annual_rate) ** (end / DAYS_PER_YEAR)
        previous = current
    return total


def gg_expected_avg_value(params: GammaGammaParams, x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Gamma-Gamma E[spend per purchase | x, m] (equation 5 of note 025); for a repeat customer
    with monetary_value <= 0 (returns exceed purchases) the model does not apply and the
    customer's own mean is kept. Customers without a repeat purchase get the population mean."""
    p, q, v = params.as_array()
    x, m = np.asarray(x, dtype=float), np.asarray(m, dtype=float)
    weight = p * x / (p * x + q - 1)
    value = (1 - weight) * params.population_mean + weight * m
    return np.where((x > 0) & (m <= 0), m, value)


def bgnbd_prob_n_purchases(params: BgNbdParams, t: np.ndarray, n: int) -> np.ndarray:
    """P(X(t) = n) for a new customer observed for ``t`` days, equation (8) of the paper."""
    r, alpha, a, b = params.as_array()
    t = np.asarray(t, dtype=float)
    log_base = r * np.log(alpha / (alpha + t))
    with np.errstate(divide="ignore"):
        log_ratio = np.log(t / (alpha + t))
    power = log_ratio * n if n else 0.0
    first = np.exp(betaln(a, b + n) - betaln(a, b) + gammaln(r + n) - gammaln(r) - gammaln(n + 1) + log_base + power)
    if n == 0:
        return first
    partial = sum(
        np.exp(gammaln(r + j) - gammaln(r) - gammaln(j + 1) + (j * log_ratio if j else 0.0)) for j in range(n)
    )
    second = np.exp(betaln(a + 1, b + n - 1) - betaln(a, b)) * (1 - np.exp(log_base) * partial)
    return first + second


@dataclass(frozen=True)
class ClvModel:
    """Both fitted models and the settings of the per-customer values."""

    bgnbd: BgNbdParams
    gamma_gamma: GammaGammaParams
    horizon_days: int = 365
    annual_discount_rate: float = 0.1

    def as_dict(self) -> dict:
        return {
            "bgnbd": asdict(self.bgnbd),
            "gamma_gamma": asdict(self.gamma_gamma),
            "horizon_days": self.horizon_days,
            "annual_discount_rate": self.annual_discount_rate,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ClvModel:
        return cls(
            BgNbdParams(**data["bgnbd"]),
            GammaGammaParams(**data["gamma_gamma"]),
            int(data["horizon_days"]),
            float(data["annual_discount_rate"]),
        )


def score_pandas(model: ClvModel, frame: pd.DataFrame) -> pd.DataFrame:
    """The four values of :data:`OUTPUT_COLUMNS` for a pandas frame of :data:`INPUT_COLUMNS`."""
    x, tx, t, m = (frame[c].to_numpy(dtype=float) for c in INPUT_COLUMNS)
    expected_value = gg_expected_avg_value(model.gamma_gamma, x, m)
    discounted = bgnbd_discounted_purchases(model.bgnbd, model.horizon_days, model.annual_discount_rate, x, tx, t)
    return pd.DataFrame(
        {
            "p_alive": bgnbd_p_alive(model.bgnbd, x, tx, t),
            "expected_purchases": bgnbd_expected_purchases(model.bgnbd, model.horizon_days, x, tx, t),
            "expected_avg_value": expected_value,
            "clv": discounted * expected_value,
        },
        index=frame.index,
    )


# --------------------------------------------------------------------------- per-customer values (Spark)


def p_alive_column(params: BgNbdParams) -> Column:
    """P(alive) as a Spark expression of ``frequency``, ``recency``, ``T`` (days)."""
    r, alpha, a, b = (F.lit(float(v)) for v in params.as_array())
    x, tx, t = F.col("frequency"), F.col("recency"), F.col("T")
    log_div = (r + x) * F.log((alpha + t) / (alpha + tx)) + F.log(a / (b + F.greatest(x, F.lit(1.0)) - 1))
    return F.when(x == 0, F.lit(1.0)).otherwise(1 / (1 + F.exp(log_div)))


def expected_avg_value_column(params: GammaGammaParams) -> Column:
    """Gamma-Gamma conditional expected spend per purchase as a Spark expression (see
    :func:`gg_expected_avg_value` for the customers the model does not apply to)."""
    p, q = float(params.p), float(params.q)
    x, m = F.col("frequency"), F.col("monetary_value")
    weight = F.lit(p) * x / (F.lit(p) * x + F.lit(q - 1))
    value = (1 - weight) * F.lit(params.population_mean) + weight * m
    return F.when((x > 0) & (m <= 0), m).otherwise(value)


_PURCHASES = T.StructType(
    [T.StructField("expected_purchases", T.DoubleType()), T.StructField("discounted_purchases", T.DoubleType())]
)


def _purchases_udf(model: ClvModel):
    # The UDF's functions travel by value, so executors need numpy, scipy, pandas and pyarrow but
    # not this package (a packed virtualenv has them; an executor Python without them fails here).
    from pyspark import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    params, horizon, rate = model.bgnbd, model.horizon_days, model.annual_discount_rate

    @F.pandas_udf(_PURCHASES)
    def purchases(x: pd.Series, tx: pd.Series, t: pd.Series) -> pd.DataFrame:
        xs, txs, ts = x.to_numpy(float), tx.to_numpy(float), t.to_numpy(float)
        return pd.DataFrame(
            {
                "expected_purchases": bgnbd_expected_purchases(params, horizon, xs, txs, ts),
                "discounted_purchases": bgnbd_discounted_purchases(params, horizon, rate, xs, txs, ts),
            }
        )

    return purchases


def score(features: DataFrame, model: ClvModel, keys: tuple[str, ...] = ("customer_id", "as_of")) -> DataFrame:
    """Per-customer values in Spark.

    Input: ``keys`` plus ``frequency``, ``recency``, ``T`` (days) and ``monetary_value`` (currency).
    Output: ``keys``, ``p_alive``, ``expected_purchases`` (repeat purchase days in the next
    ``horizon_days``), ``expected_avg_value`` (currency per purchase) and ``clv`` (currency,
    expected purchases x expected value, discounted at ``annual_discount_rate`` per year).
    """
    udf = _purchases_udf(model)
    return (
        features.select(*keys, *INPUT_COLUMNS)
        .withColumn("_p", udf(F.col("frequency"), F.col("recency"), F.col("T")))
        .select(
            *keys,
            p_alive_column(model.bgnbd).alias("p_alive"),
            F.col("_p.expected_purchases").alias("expected_purchases"),
            expected_avg_value_column(model.gamma_gamma).alias("expected_avg_value"),
            (F.col("_p.discounted_purchases") * expected_avg_value_column(model.gamma_gamma)).alias("clv"),
        )
    )
