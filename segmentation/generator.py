"""Synthetic transactions with planted customer segments, generated natively in Spark.

Every random value is a hash of (row index, salt, seed), not ``rand()``, so the
output is identical for a seed whatever the partitioning, executors or retries,
and nothing is held in driver memory: 100M rows stream through
``spark.range`` like any other scan.

Planted personas (the ground truth, never a feature) differ in recency,
frequency, spend, basket size, category mix, returns and channel:

==============  =====  ==========================================================
persona         share  behaviour
==============  =====  ==========================================================
champions        8%    very frequent, recent, high spend, broad categories, app
loyal           15%    frequent, recent, small grocery/home baskets, in store
big_spenders     7%    rare but very large electronics/jewelry baskets, online
new             10%    first purchase in the last 60 days, fashion/beauty
at_risk         15%    used to buy often, silent for 4-8 months, home/garden
hibernating     15%    few small purchases, silent for 8-16 months, books/toys
one_time        30%    a single purchase day anywhere in the period
==============  =====  ==========================================================

``generator.personas`` chooses the planted set for tests and benchmarks: names from
:data:`CATALOGUE` (the seven above plus ``returners``, fashion buyers who send a third back,
``bulk_buyers``, small businesses with baskets of about twelve items, and ``app_regulars``, many
tiny app baskets), fixed shares for some of them, and a ``separation`` below 1 that pulls every
persona's behaviour toward the average one. The defaults plant the seven above, unchanged.
``outlier_share`` adds customers who belong to no persona (ground truth ``outlier``, the last
customer ids): each buys like a reseller of its own, with a median basket drawn between 1,500 and
30,000, 6 to 40 items per basket, up to 40% returns, a main category and channel of its own and
a transaction count that varies, so they are far from every persona and from each other.

Realistic mess: log-normal spend, returns as negative amounts (and negative
quantities), a yearly seasonal peak in late November, exact duplicate
transaction rows (``duplicate_share``), customers who never buy, and the long
tail of one-time buyers.

Output columns
--------------
transactions: ``transaction_id`` string, ``customer_id`` string, ``timestamp``
timestamp (UTC), ``amount`` double (currency; negative = return), ``quantity``
int (negative for returns), ``category`` string, ``channel`` string.

customers: ``customer_id``, ``age`` int (years), ``income`` double (currency per
year), ``region`` string, ``signup_date`` date.

ground truth: ``customer_id``, ``segment`` (persona name), ``segment_id`` int.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation.config import DEFAULT_PERSONAS, GeneratorConfig, PersonaSetConfig
from segmentation.errors import ConfigError
from segmentation.spark import default_parallelism

__all__ = [
    "CATALOGUE", "PERSONAS", "CATEGORIES", "CHANNELS", "REGIONS", "Persona", "generate", "customer_count",
    "planted_personas",
]  # fmt: skip

CATEGORIES = ("electronics", "fashion", "home", "beauty", "sports", "grocery", "jewelry", "garden", "toys", "books")
CHANNELS = ("online", "store", "app")
REGIONS = ("north", "south", "east", "west", "central")


@dataclass(frozen=True)
class Persona:
    name: str
    share: float  # share of customers
    rate: float  # relative purchase rate per customer
    recency: tuple[float, float]  # days before end_date of the last activity
    tenure: tuple[float, float]  # days before end_date of the first activity
    spend_median: float  # median basket value, currency
    spend_sigma: float  # log-normal sigma
    items_mean: float  # mean items per basket
    return_prob: float
    categories: dict[str, float]
    channels: dict[str, float]
    age_mean: float
    income_median: float


CATALOGUE: tuple[Persona, ...] = (
    Persona("champions", 0.08, 40, (0, 15), (300, 730), 80, 0.5, 4.0, 0.03,
            {"electronics": 3, "fashion": 2, "home": 2, "beauty": 1, "sports": 1, "grocery": 1},
            {"app": 5, "online": 3, "store": 2}, 38, 72_000),
    Persona("loyal", 0.15, 25, (0, 30), (365, 730), 35, 0.4, 3.0, 0.02,
            {"grocery": 5, "home": 2, "beauty": 1.5, "books": 1.5},
            {"store": 6, "online": 2, "app": 2}, 47, 55_000),
    Persona("big_spenders", 0.07, 6, (0, 60), (200, 730), 400, 0.6, 2.0, 0.08,
            {"electronics": 5, "jewelry": 3, "home": 2},
            {"online": 7, "store": 2, "app": 1}, 44, 120_000),
    Persona("new", 0.10, 3, (0, 30), (5, 60), 50, 0.5, 2.0, 0.05,
            {"fashion": 4, "beauty": 3, "sports": 3},
            {"app": 6, "online": 3, "store": 1}, 27, 40_000),
    Persona("at_risk", 0.15, 15, (120, 240), (400, 730), 60, 0.5, 3.0, 0.05,
            {"home": 3, "garden": 3, "toys": 2, "books": 2},
            {"store": 5, "online": 5}, 52, 60_000),
    Persona("hibernating", 0.15, 4, (250, 500), (500, 730), 25, 0.6, 1.5, 0.10,
            {"books": 4, "toys": 3, "grocery": 3},
            {"online": 6, "store": 4}, 58, 38_000),
    Persona("one_time", 0.30, 1, (0, 730), (0, 0), 30, 0.7, 1.0, 0.02,
            {c: 1.0 for c in CATEGORIES},
            {"online": 4, "store": 4, "app": 2}, 35, 45_000),
    # Three more, for benchmarks that plant ten: frequent fashion buyers who send a third back,
    # small businesses buying in bulk, and app users with many tiny baskets.
    Persona("returners", 0.07, 10, (0, 60), (200, 730), 70, 0.5, 3.0, 0.35,
            {"fashion": 5, "beauty": 2, "sports": 1},
            {"online": 8, "app": 2}, 33, 50_000),
    Persona("bulk_buyers", 0.05, 20, (0, 30), (300, 730), 250, 0.4, 12.0, 0.02,
            {"grocery": 3, "home": 3, "garden": 2, "electronics": 1},
            {"store": 7, "online": 3}, 45, 80_000),
    Persona("app_regulars", 0.07, 30, (0, 20), (100, 400), 12, 0.4, 1.2, 0.01,
            {"beauty": 2, "toys": 2, "books": 2, "grocery": 2},
            {"app": 9, "online": 1}, 24, 30_000),
)  # fmt: skip

# The seven personas planted by default (generator.personas.names).
PERSONAS: tuple[Persona, ...] = tuple(p for p in CATALOGUE if p.name in DEFAULT_PERSONAS)

# The planted outliers (generator.personas.outlier_share), always last. Their basket value and size
# are drawn per customer (_OUTLIER_SPEND, _OUTLIER_ITEMS); spend_median and items_mean here are unused.
OUTLIER = Persona("outlier", 0.0, 20, (0, 60), (200, 730), 0, 0.3, 0, 0.05,
                  {c: 1.0 for c in CATEGORIES}, {c: 1.0 for c in CHANNELS}, 45, 90_000)  # fmt: skip
_OUTLIER_SPEND = (1_500.0, 30_000.0)  # per-customer median basket value, drawn log-uniform
_OUTLIER_ITEMS = (6.0, 40.0)  # per-customer mean items per basket, drawn uniform


def planted_personas(cfg: PersonaSetConfig) -> tuple[Persona, ...]:
    """The personas ``generator.personas`` plants: chosen from :data:`CATALOGUE` by name, with their
    shares, and pulled toward the average persona by ``separation`` (1 leaves them as defined);
    :data:`OUTLIER` last when ``outlier_share`` is above 0 (the personas' shares are of the others)."""
    by_name = {p.name: p for p in CATALOGUE}
    unknown = [n for n in cfg.names if n not in by_name]
    if unknown:
        raise ConfigError(f"generator.personas.names: unknown persona(s) {unknown}; known: {list(by_name)}")
    chosen = _with_shares([by_name[n] for n in cfg.names], cfg.shares)
    chosen = chosen if cfg.separation == 1.0 else _pulled(chosen, cfg.separation)
    outliers = (replace(OUTLIER, share=cfg.outlier_share),) if cfg.outlier_share > 0 else ()
    return tuple(chosen) + outliers


def _with_shares(personas: list[Persona], fixed: dict[str, float]) -> list[Persona]:
    """Fixed shares where given; the other personas split the rest in their catalogue proportions."""
    free = [p for p in personas if p.name not in fixed]
    scale = (1.0 - sum(fixed.values())) / sum(p.share for p in free) if free else 1.0
    if not fixed and abs(scale - 1.0) < 1e-12:
        return personas  # the shipped seven as defined, so the default output never changes
    share = {p.name: fixed.get(p.name, p.share * scale) for p in personas}
    return [replace(p, share=share[p.name]) for p in personas]


def _pulled(personas: list[Persona], s: float) -> list[Persona]:
    """Every behavioural parameter moved to ``mean + s * (value - mean)`` over the personas (in log
    space for rates and money); category and channel weights as shares. Shares and names are kept."""

    def lin(values: list[float]) -> list[float]:
        mean = sum(values) / len(values)
        return [mean + s * (v - mean) for v in values]

    def geo(values: list[float]) -> list[float]:
        return [math.exp(x) for x in lin([math.log(v) for v in values])]

    def span(ranges: list[tuple[float, float]]) -> list[tuple[float, float]]:
        return list(zip(lin([r[0] for r in ranges]), lin([r[1] for r in ranges]), strict=True))

    def mix(weights: list[dict[str, float]]) -> list[dict[str, float]]:
        normed = [{k: v / sum(w.values()) for k, v in w.items()} for w in weights]
        keys = sorted({k for w in normed for k in w})
        columns = {k: lin([w.get(k, 0.0) for w in normed]) for k in keys}
        return [{k: columns[k][i] for k in keys if columns[k][i] > 0} for i in range(len(weights))]

    def column(name: str) -> list:
        return [getattr(p, name) for p in personas]

    new = {
        "rate": geo(column("rate")), "recency": span(column("recency")), "tenure": span(column("tenure")),
        "spend_median": geo(column("spend_median")), "spend_sigma": lin(column("spend_sigma")),
        "items_mean": lin(column("items_mean")), "return_prob": lin(column("return_prob")),
        "categories": mix(column("categories")), "channels": mix(column("channels")),
        "age_mean": lin(column("age_mean")), "income_median": geo(column("income_median")),
    }  # fmt: skip
    return [replace(p, **{key: values[i] for key, values in new.items()}) for i, p in enumerate(personas)]


_UNIT = float(2**53)


def _uniform(index: Column, salt: int, seed: int) -> Column:
    """A uniform [0, 1) value that depends only on (index, salt, seed)."""
    bits = F.xxhash64(index, F.lit(salt), F.lit(seed)).bitwiseAND(F.lit((1 << 53) - 1))
    return bits.cast("double") / F.lit(_UNIT)


def _normal(index: Column, salt: int, seed: int) -> Column:
    """A standard normal value by Box-Muller from two hash uniforms."""
    u1 = F.greatest(_uniform(index, salt, seed), F.lit(1e-12))
    u2 = _uniform(index, salt + 1, seed)
    return F.sqrt(-2.0 * F.log(u1)) * F.cos(2.0 * math.pi * u2)


def _pick(u: Column, weights: dict[str, float]) -> Column:
    """Choose a key of ``weights`` with probability proportional to its weight, from uniform ``u``."""
    total = sum(weights.values())
    cumulative = 0.0
    expr = None
    items = list(weights.items())
    for name, weight in items[:-1]:
        cumulative += weight / total
        expr = F.when(u < cumulative, F.lit(name)) if expr is None else expr.when(u < cumulative, F.lit(name))
    last = F.lit(items[-1][0])
    return last if expr is None else expr.otherwise(last)


def _by_persona(persona_idx: Column, values: list[Column]) -> Column:
    expr = F.when(persona_idx == 0, values[0])
    for i, value in enumerate(values[1:], start=1):
        expr = expr.when(persona_idx == i, value)
    return expr


def customer_count(cfg: GeneratorConfig) -> int:
    return cfg.n_customers or max(len(cfg.personas.names), cfg.n_transactions // 20)


def _outlier_share(personas: tuple[Persona, ...]) -> float:
    """The planted outliers' share of all customers: :data:`OUTLIER`'s, always last, or 0 without them."""
    return personas[-1].share if personas[-1].name == OUTLIER.name else 0.0


def _persona_bounds(n_customers: int, personas: tuple[Persona, ...]) -> list[int]:
    """Exclusive upper customer index of each persona (contiguous id ranges); the outliers, when
    planted, take the last ``round(outlier_share * n_customers)`` ids, at least one."""
    share = _outlier_share(personas)
    n_outliers = max(1, round(share * n_customers)) if share > 0 else 0
    regular = personas[:-1] if n_outliers else personas
    n_regular = n_customers - n_outliers
    bounds, acc = [], 0.0
    for persona in regular:
        acc += persona.share
        bounds.append(min(n_regular, round(acc * n_regular)))
    bounds[-1] = n_regular
    return bounds + ([n_customers] if n_outliers else [])


def _persona_of(customer_idx: Column, bounds: list[int]) -> Column:
    expr = F.when(customer_idx < bounds[0], F.lit(0))
    for i, bound in enumerate(bounds[1:], start=1):
        expr = expr.when(customer_idx < bound, F.lit(i))
    return expr


def _customer_id(customer_idx: Column) -> Column:
    return F.concat(F.lit("C"), F.lpad(customer_idx.cast("string"), 9, "0"))


def _span_days(cfg: GeneratorConfig) -> int:
    return (cfg.end_date - cfg.start_date).days


def _customer_window(
    customer_idx: Column, persona_idx: Column, cfg: GeneratorConfig, personas: tuple[Persona, ...]
) -> tuple[Column, Column]:
    """Days before end_date of a customer's last and first activity."""
    span = float(_span_days(cfg))
    u_last = _uniform(customer_idx, 11, cfg.seed)
    u_first = _uniform(customer_idx, 12, cfg.seed)
    last_ago = _by_persona(
        persona_idx,
        [F.lit(min(p.recency[0], span)) + u_last * min(p.recency[1] - p.recency[0], span) for p in personas],
    )
    first_ago = _by_persona(
        persona_idx,
        [
            last_ago
            if p.name == "one_time"
            else F.lit(min(p.tenure[0], span)) + u_first * (min(p.tenure[1], span) - min(p.tenure[0], span))
            for p in personas
        ],
    )
    return last_ago, F.least(F.greatest(first_ago, last_ago), F.lit(span))


def generate_transactions(spark: SparkSession, cfg: GeneratorConfig) -> DataFrame:
    """Exactly ``cfg.n_transactions`` transaction rows (see the module docstring for columns)."""
    personas = planted_personas(cfg.personas)
    df = _with_customer(_source_rows(spark, cfg), cfg, personas)
    s, p, cust = F.col("s"), F.col("persona"), F.col("cust")
    amount, quantity = _amount_and_quantity(s, p, cust, cfg.seed, personas)
    category = _by_persona(p, [_outlier_pick(x, s, cust, 10, cfg.seed, x.categories) for x in personas])
    channel = _by_persona(p, [_outlier_pick(x, s, cust, 13, cfg.seed, x.channels) for x in personas])
    return df.select(
        F.concat(F.lit("T"), F.lpad(s.cast("string"), 12, "0")).alias("transaction_id"),
        _customer_id(cust).alias("customer_id"),
        _timestamp(s, cust, p, cfg, personas).alias("timestamp"),
        amount.alias("amount"),
        quantity.alias("quantity"),
        category.alias("category"),
        channel.alias("channel"),
    )


def _source_rows(spark: SparkSession, cfg: GeneratorConfig) -> DataFrame:
    """One row per transaction with ``s``, the row index its values are drawn from: its own,
    or the previous row's for an exact duplicate."""
    partitions = cfg.partitions or max(default_parallelism(spark), math.ceil(cfg.n_transactions / 2_000_000))
    rows = spark.range(0, cfg.n_transactions, 1, partitions)
    row = F.col("id")
    # An exact duplicate copies every value of the previous row, so it is the same transaction twice
    # (never a copy of a copy, which would not be an exact duplicate).
    drawn = _uniform(row, 1, cfg.seed) < cfg.duplicate_share
    is_duplicate = (row > 0) & drawn & ~(_uniform(row - 1, 1, cfg.seed) < cfg.duplicate_share)
    source = F.when(is_duplicate, row - 1).otherwise(row)
    return rows.select(source.alias("s"))


def _with_customer(df: DataFrame, cfg: GeneratorConfig, personas: tuple[Persona, ...]) -> DataFrame:
    """Add ``persona`` (index into ``personas``), drawn by transaction weight, and ``cust``,
    a customer index drawn uniformly within the persona's id range."""
    n_customers = customer_count(cfg)
    bounds = _persona_bounds(n_customers, personas)
    starts = [0] + bounds[:-1]
    # Persona shares are of the regular customers; the outliers' share is of all of them.
    outlier_share = _outlier_share(personas)
    weights = [p.share * p.rate * (1.0 if p.name != OUTLIER.name else 1.0 / (1.0 - outlier_share)) for p in personas]
    total_weight = sum(weights)
    s = F.col("s")
    u_persona = _uniform(s, 2, cfg.seed)
    cumulative, persona_expr = 0.0, None
    for i, weight in enumerate(weights[:-1]):
        cumulative += weight / total_weight
        persona_expr = (F.when if persona_expr is None else persona_expr.when)(u_persona < cumulative, F.lit(i))
    persona_expr = F.lit(0) if persona_expr is None else persona_expr.otherwise(F.lit(len(personas) - 1))
    df = df.withColumn("persona", persona_expr)
    p = F.col("persona")
    size = _by_persona(p, [F.lit(max(1, b - a)) for a, b in zip(starts, bounds, strict=True)])
    start = _by_persona(p, [F.lit(a) for a in starts])
    # An outlier's share of the outliers' transactions varies (u squared), so their counts differ too.
    u = _uniform(s, 3, cfg.seed)
    u = F.when(p == len(personas) - 1, u * u).otherwise(u) if _outlier_share(personas) else u
    return df.withColumn("cust", start + F.floor(u * size).cast("long"))


def _outlier_pick(persona: Persona, s: Column, cust: Column, salt: int, seed: int, weights: dict[str, float]) -> Column:
    """A persona's category or channel of a transaction; an outlier's is its own main one 70% of
    the time (drawn per customer), any other the rest."""
    drawn = _pick(_uniform(s, salt, seed), weights)
    if persona.name != OUTLIER.name:
        return drawn
    return F.when(_uniform(s, salt + 40, seed) < 0.7, _pick(_uniform(cust, salt + 50, seed), weights)).otherwise(drawn)


def _timestamp(s: Column, cust: Column, p: Column, cfg: GeneratorConfig, personas: tuple[Persona, ...]) -> Column:
    """A time within the customer's activity window, on a day packed around late November each
    year by a smooth monotone time warp (seasonality), between 08:00 and 22:00."""
    last_ago, first_ago = _customer_window(cust, p, cfg, personas)
    ago = last_ago + (first_ago - last_ago) * _uniform(s, 4, cfg.seed)
    peak_phase = (cfg.end_date - cfg.end_date.replace(month=11, day=25)).days
    warped = ago - (0.35 * 365 / (2 * math.pi)) * F.sin(2 * math.pi * (ago - peak_phase) / 365.0)
    ago_days = F.floor(F.least(F.greatest(warped, last_ago), first_ago)).cast("int")
    day = F.date_sub(F.lit(cfg.end_date), ago_days)
    seconds_in_day = F.floor(F.lit(8 * 3600) + _uniform(s, 5, cfg.seed) * (14 * 3600)).cast("long")
    return F.timestamp_seconds(F.unix_date(day).cast("long") * 86400 + seconds_in_day)


def _amount_and_quantity(
    s: Column, p: Column, cust: Column, seed: int, personas: tuple[Persona, ...]
) -> tuple[Column, Column]:
    """A log-normal basket value (rounded to cents) and a geometric item count, both negative
    for a return. An outlier's median basket and mean items are its own (drawn per customer)."""
    low, high = (math.log(x) for x in _OUTLIER_SPEND)
    log_median = [
        F.lit(low) + _uniform(cust, 31, seed) * (high - low)
        if x.name == OUTLIER.name
        else F.lit(math.log(x.spend_median))
        for x in personas
    ]
    items_mean = [
        _OUTLIER_ITEMS[0] + _uniform(cust, 32, seed) * (_OUTLIER_ITEMS[1] - _OUTLIER_ITEMS[0])
        if x.name == OUTLIER.name
        else F.lit(x.items_mean)
        for x in personas
    ]
    spend = F.exp(
        _by_persona(p, log_median) + _by_persona(p, [F.lit(x.spend_sigma) for x in personas]) * _normal(s, 6, seed)
    )
    return_prob = [_uniform(cust, 33, seed) * 0.4 if x.name == OUTLIER.name else F.lit(x.return_prob) for x in personas]
    is_return = _uniform(s, 8, seed) < _by_persona(p, return_prob)
    items = 1 + F.floor(
        -F.log(F.greatest(_uniform(s, 9, seed), F.lit(1e-12))) * (_by_persona(p, items_mean) - 1.0)
    ).cast("int")
    sign = F.when(is_return, F.lit(-1)).otherwise(F.lit(1))
    return F.round(sign * spend, 2), (sign * items).cast("int")


def generate_customers(spark: SparkSession, cfg: GeneratorConfig) -> DataFrame:
    """One row of demographics per customer, correlated with (but not revealing) the persona."""
    personas = planted_personas(cfg.personas)
    n_customers = customer_count(cfg)
    bounds = _persona_bounds(n_customers, personas)
    idx = F.col("id")
    p = _persona_of(idx, bounds)
    _, first_ago = _customer_window(idx, p, cfg, personas)
    age = _by_persona(p, [F.lit(x.age_mean) for x in personas]) + 12.0 * _normal(idx, 21, cfg.seed)
    income = _by_persona(p, [F.lit(math.log(x.income_median)) for x in personas]) + 0.4 * _normal(idx, 23, cfg.seed)
    region = _pick(_uniform(idx, 25, cfg.seed), {r: 1.0 for r in REGIONS})
    return spark.range(0, n_customers).select(
        _customer_id(idx).alias("customer_id"),
        F.least(F.greatest(F.round(age), F.lit(18)), F.lit(90)).cast("int").alias("age"),
        F.round(F.exp(income), -2).alias("income"),
        region.alias("region"),
        F.date_sub(F.lit(cfg.end_date), F.floor(first_ago).cast("int") + 7).alias("signup_date"),
    )


def generate_ground_truth(spark: SparkSession, cfg: GeneratorConfig) -> DataFrame:
    """The planted persona of every customer: for measuring recovery, never as a feature."""
    personas = planted_personas(cfg.personas)
    bounds = _persona_bounds(customer_count(cfg), personas)
    idx = F.col("id")
    persona_idx = _persona_of(idx, bounds)
    name = _by_persona(persona_idx, [F.lit(x.name) for x in personas])
    return spark.range(0, customer_count(cfg)).select(
        _customer_id(idx).alias("customer_id"), name.alias("segment"), persona_idx.cast("int").alias("segment_id")
    )


def generate(spark: SparkSession, cfg: GeneratorConfig) -> dict[str, DataFrame]:
    """The three generated tables by name: ``transactions``, ``customers``, ``ground_truth``."""
    return {
        "transactions": generate_transactions(spark, cfg),
        "customers": generate_customers(spark, cfg),
        "ground_truth": generate_ground_truth(spark, cfg),
    }
