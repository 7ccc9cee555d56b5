from __future__ import annotations

import math

import pytest

from segmentation.selection import choose, elbow_k

NAN = float("nan")


def rec(algorithm, k, silhouette, wssse=100.0, bic=NAN, share=0.1, ari=1.0):
    return {
        "algorithm": algorithm, "k": k, "silhouette": silhouette, "wssse": wssse, "bic": bic,
        "min_cluster_share": share, "stability_ari": ari,
    }  # fmt: skip


RULE = dict(min_cluster_share=0.02, min_stability=0.7, silhouette_tolerance=0.01)


def test_elbow_is_the_point_farthest_from_the_chord():
    ks = [2, 3, 4, 5, 6, 7]
    wssse = [1000, 500, 200, 180, 170, 160]
    assert elbow_k(ks, wssse) == 4
    assert elbow_k([2, 3], [10, 5]) == 2


def test_best_silhouette_wins_among_admissible():
    records = [rec("kmeans", 2, 0.50), rec("kmeans", 3, 0.70), rec("kmeans", 4, 0.60)]
    choice = choose(records, ["kmeans"], **RULE)
    assert choice.chosen_k == {"kmeans": 3}
    assert choice.champion == "kmeans" and choice.champion_k == 3


def test_tiny_cluster_or_unstable_candidate_is_not_admissible():
    records = [
        rec("kmeans", 2, 0.50),
        rec("kmeans", 3, 0.90, share=0.001),  # a cluster of a handful of customers
        rec("kmeans", 4, 0.80, ari=0.4),  # a different answer for every seed
    ]
    choice = choose(records, ["kmeans"], **RULE)
    assert choice.chosen_k["kmeans"] == 2
    assert choice.rationale["per_algorithm"]["kmeans"]["admissible_k"] == [2]


def test_ties_go_to_the_k_nearest_the_elbow():
    wssse = {2: 1000, 3: 500, 4: 200, 5: 180, 6: 170}
    records = [rec("kmeans", k, s, wssse=wssse[k]) for k, s in [(2, 0.600), (3, 0.605), (4, 0.600), (5, 0.3), (6, 0.2)]]
    choice = choose(records, ["kmeans"], **RULE)
    assert choice.rationale["per_algorithm"]["kmeans"]["elbow_k"] == 4
    assert choice.chosen_k["kmeans"] == 4


def test_gmm_uses_lowest_bic_and_smaller_k_on_ties():
    records = [rec("gaussian_mixture", 2, 0.5, bic=900.0), rec("gaussian_mixture", 3, 0.4, bic=800.0),
               rec("gaussian_mixture", 4, 0.6, bic=800.5)]  # fmt: skip
    assert choose(records, ["gaussian_mixture"], **RULE).chosen_k == {"gaussian_mixture": 3}


def test_no_admissible_candidate_falls_back_with_a_note():
    records = [rec("kmeans", 2, 0.5, share=0.0), rec("kmeans", 3, 0.6, share=0.0)]
    choice = choose(records, ["kmeans"], **RULE)
    assert choice.chosen_k["kmeans"] == 3
    assert "no k met" in choice.rationale["per_algorithm"]["kmeans"]["note"]


def test_champion_is_best_silhouette_and_ties_follow_algorithm_order():
    records = [rec("kmeans", 3, 0.60), rec("bisecting_kmeans", 4, 0.605), rec("gaussian_mixture", 3, 0.2, bic=1.0)]
    order = ["kmeans", "bisecting_kmeans", "gaussian_mixture"]
    assert choose(records, order, **RULE).champion == "kmeans"  # within tolerance: earlier algorithm
    records[1]["silhouette"] = 0.70
    choice = choose(records, order, **RULE)
    assert choice.champion == "bisecting_kmeans"
    assert "Champion" in choice.rationale["rule"]
    assert math.isclose(choice.rationale["champion"]["finalist_silhouettes"]["bisecting_kmeans"], 0.70)


def test_empty_sweep_is_an_error():
    with pytest.raises(ValueError, match="no candidates"):
        choose([], ["kmeans"], **RULE)


def test_gmm_with_infinite_bic_falls_back_to_silhouette():
    records = [rec("gaussian_mixture", 2, 0.5, bic=float("-inf")), rec("gaussian_mixture", 3, 0.6, bic=100.0)]
    assert choose(records, ["gaussian_mixture"], **RULE).chosen_k == {"gaussian_mixture": 3}


def test_nan_silhouette_ranks_last():
    records = [rec("kmeans", 2, NAN), rec("kmeans", 3, 0.1)]
    assert choose(records, ["kmeans"], **RULE).chosen_k == {"kmeans": 3}
