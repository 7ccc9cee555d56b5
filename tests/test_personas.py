from __future__ import annotations

import pandas as pd
import pytest

from segmentation.personas import PERSONAS, assign_personas, describe

COLUMNS = ["segment", "z_recency_days", "z_n_purchases", "z_net_spend", "z_avg_basket_value", "z_tenure_days"]


def profile(rows):
    return pd.DataFrame(rows, columns=COLUMNS)


BASE = [
    (0, -1.5, 1.5, 1.5, 0.2, 0.5),  # recent, frequent, high spend
    (1, 2.0, -1.0, -0.8, 0.0, 0.0),  # long gone, rare
    (2, -1.0, -0.5, -0.4, 0.0, -1.5),  # recent, short tenure
    (3, 0.0, 0.0, 0.0, 0.0, 0.0),  # two identical average segments: a tie
    (4, 0.0, 0.0, 0.0, 0.0, 0.0),
]


def test_rfm_position_gives_the_expected_personas_and_ties_go_to_the_lower_id():
    names = assign_personas(profile(BASE))
    assert names == {0: "Champions", 1: "Lost", 2: "New", 3: "Loyal", 4: "Big spenders"}
    # Same answer whatever the row order.
    assert assign_personas(profile(BASE[::-1])) == names


def test_overrides_win_and_their_names_are_not_reused():
    names = assign_personas(profile(BASE), {1: "Sleepers", 3: "Champions"})
    assert names[1] == "Sleepers" and names[3] == "Champions"
    assert names[0] != "Champions" and len(set(names.values())) == len(names)
    with pytest.raises(ValueError, match="same name"):
        assign_personas(profile(BASE), {0: "A", 1: "A"})


def test_more_segments_than_personas_get_unique_fallback_names():
    rows = [(s, 0.1 * s, 0.0, 0.0, 0.0, 0.0) for s in range(len(PERSONAS) + 2)]
    names = assign_personas(profile(rows))
    assert len(set(names.values())) == len(rows)
    assert sorted(n for n in names.values() if n.startswith("Segment ")) == [
        f"Segment {s}" for s in sorted(s for s, n in names.items() if n.startswith("Segment "))
    ]
    assert sum(n.startswith("Segment ") for n in names.values()) == 2


def test_description_uses_the_segments_own_numbers():
    row = {"mean_n_purchases": 12.34, "median_recency_days": 8.0, "historical_value": 1234.5,
           "customer_share": 0.08, "revenue_share": 0.31}  # fmt: skip
    text = describe(row, "Champions")
    assert text.startswith("Bought recently, buy often and spend the most:")
    assert "12.3 purchases" in text and "8 days ago" in text and "1,234 spent" in text
    assert "8% of customers, 31% of revenue" in text


def test_description_gives_p_alive_and_clv_when_the_profile_has_them():
    text = describe({"mean_n_purchases": 3.0, "p_alive_mean": 0.234, "clv_mean": 1234.4}, "At risk")
    assert "3.0 purchases" in text and "23% likely still active (BG/NBD)" in text and "CLV 1,234 per customer" in text
    assert "likely still active" not in describe({"mean_n_purchases": 3.0}, "At risk")
