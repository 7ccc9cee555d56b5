"""Readable names and one-line descriptions for segments, from their RFM position.

Inputs are the segment profile's z-scores (segment mean against the whole base, in
standard deviations) of five behaviours, with recency turned so that higher is
better (``r = -z_recency_days``): ``f = z_n_purchases``, ``m = z_net_spend``,
``b = z_avg_basket_value`` and ``t = z_tenure_days``. A missing column counts as 0.
The names keep the last purchase's age even where a CLV model exists: BG/NBD counts a
customer without a repeat purchase day as alive with probability 1, so on ``make demo``
segments last seen a median 363 and 403 days ago have a mean P(alive) of 100% and would
be named as if they were buying now. The descriptions give the segment's P(alive) and CLV.

Each persona has a fit score, a linear function of those five numbers (the table
``PERSONAS``, after the classic RFM segment grid). Names are given by optimal
assignment (Hungarian algorithm) of segments to personas maximising the total fit,
so two segments never get the same name. Ties are broken deterministically: the
lower segment id takes the persona listed first. When there are more segments than
personas, the remaining ones are named ``Segment <id>``.

Config overrides (``profiles.names``) win: an overridden segment keeps the given
name, and that name is taken out of the automatic assignment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

__all__ = ["PERSONAS", "Persona", "assign_personas", "describe"]

_TIE = 1e-9


@dataclass(frozen=True)
class Persona:
    name: str
    description: str
    # weights on (r, f, m, b, t): recency (higher = more recent), frequency, monetary, basket, tenure
    weights: tuple[float, float, float, float, float]


PERSONAS: tuple[Persona, ...] = (
    Persona("Champions", "Bought recently, buy often and spend the most", (1.0, 1.0, 1.0, 0.0, 0.0)),
    Persona("Loyal", "Buy often and recently over a long tenure, at ordinary basket values",
            (0.5, 1.0, 0.3, -0.5, 0.5)),
    Persona("Big spenders", "Few, large baskets: high value per order", (0.2, -0.3, 0.5, 1.5, 0.0)),
    Persona("New", "First purchases in the last weeks; short tenure", (1.0, -0.3, -0.3, 0.0, -1.5)),
    Persona("Promising", "Recent buyers with modest frequency and spend so far", (0.8, -0.2, -0.2, 0.0, -0.3)),
    Persona("At risk", "Used to buy often, but their last purchase is getting old", (-1.0, 0.7, 0.3, 0.0, 0.5)),
    Persona("Can't lose them", "Valuable customers who have gone quiet", (-1.0, 0.3, 1.0, 0.3, 0.3)),
    Persona("Hibernating", "Low frequency and spend, last purchase long ago", (-0.8, -0.7, -0.5, 0.0, 0.3)),
    Persona("Lost", "Single or rare purchases, a long time ago", (-1.5, -1.0, -0.5, 0.0, -0.2)),
    Persona("Occasional", "Buy now and then at low value", (0.0, -0.8, -0.8, -0.3, 0.0)),
)  # fmt: skip

_Z_COLUMNS = ("z_recency_days", "z_n_purchases", "z_net_spend", "z_avg_basket_value", "z_tenure_days")
_SIGNS = np.array([-1.0, 1.0, 1.0, 1.0, 1.0])


def _position(profile: pd.DataFrame) -> np.ndarray:
    """segments x 5 matrix of (r, f, m, b, t)."""
    z = np.column_stack([profile[c].to_numpy(float) if c in profile else np.zeros(len(profile)) for c in _Z_COLUMNS])
    return np.nan_to_num(z) * _SIGNS


def assign_personas(profile: pd.DataFrame, overrides: Mapping[int, str] | None = None) -> dict[int, str]:
    """segment id -> unique name, from a profile with ``segment`` and the z-score columns."""
    overrides = {int(k): v for k, v in (overrides or {}).items()}
    segments = [int(s) for s in profile["segment"]]
    names = {s: overrides[s] for s in segments if s in overrides}
    if len(set(names.values())) < len(names):
        raise ValueError(f"profiles.names gives two segments the same name: {names}")
    free = [i for i, s in enumerate(segments) if s not in names]
    personas = [p for p in PERSONAS if p.name not in names.values()]
    if free and personas:
        position = _position(profile)[free]
        weights = np.array([p.weights for p in personas])
        fit = position @ weights.T
        # Deterministic ties: a penalty of persona index x (n - rank of the segment id), tiny
        # against any real difference. Among equal fits it prefers earlier personas, and the
        # earliest go to the lowest ids (the largest weights take the smallest indices).
        order = np.argsort(np.array([segments[i] for i in free]))
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        fit -= _TIE * (len(free) - rank)[:, None] * np.arange(len(personas))[None, :]
        rows, cols = linear_sum_assignment(-fit)
        for i, j in zip(rows, cols, strict=True):
            names[segments[free[i]]] = personas[j].name
    taken = set(names.values())
    for s in segments:
        if s not in names:
            name = f"Segment {s}"
            while name in taken:
                name += "'"
            names[s] = name
            taken.add(name)
    return dict(sorted(names.items()))


def describe(row: Mapping[str, float], name: str) -> str:
    """One line: the persona's gist plus the segment's own numbers in raw units."""
    persona = next((p for p in PERSONAS if p.name == name), None)
    gist = persona.description if persona else "Customers grouped by similar behaviour"

    def get(key: str) -> float | None:
        value = row.get(key)
        return None if value is None or pd.isna(value) else float(value)

    facts = []
    if get("mean_n_purchases") is not None:
        facts.append(f"{get('mean_n_purchases'):.1f} purchases")
    if get("median_recency_days") is not None:
        facts.append(f"last one {get('median_recency_days'):.0f} days ago (median)")
    if get("p_alive_mean") is not None:
        facts.append(f"{100 * get('p_alive_mean'):.0f}% likely still active (BG/NBD)")
    if get("clv_mean") is not None:
        facts.append(f"CLV {get('clv_mean'):,.0f} per customer")
    if get("historical_value") is not None:
        facts.append(f"{get('historical_value'):,.0f} spent on average")
    share = get("customer_share"), get("revenue_share")
    if None not in share:
        facts.append(f"{100 * share[0]:.0f}% of customers, {100 * share[1]:.0f}% of revenue")
    return f"{gist}: " + ", ".join(facts) + "." if facts else gist + "."
