from __future__ import annotations

import math
import random

import pytest

from segmentation.selection import choose, describe_choice, elbow_k, stability_needed

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


ALGORITHMS = ["kmeans", "bisecting_kmeans", "gaussian_mixture"]


def measure_lazily(records, algorithms=ALGORITHMS, rule=RULE):
    """Measure stability only where stability_needed asks, as the training job does."""
    lazy = [{**r, "stability_ari": None} for r in records]
    truth = {(r["algorithm"], r["k"]): r["stability_ari"] for r in records}
    measured = set()
    while needed := stability_needed(lazy, algorithms, **rule):
        assert not measured & set(needed), "asked twice for the same candidate"
        measured |= set(needed)
        for r in lazy:
            if (r["algorithm"], r["k"]) in needed:
                r["stability_ari"] = truth[(r["algorithm"], r["k"])]
    return lazy, measured


def random_sweep(rng: random.Random):
    records = []
    for algorithm in ALGORITHMS:
        for k in range(2, 9):
            records.append(rec(
                algorithm, k,
                silhouette=NAN if rng.random() < 0.05 else round(rng.uniform(-0.1, 0.8), 2),  # rounding makes ties
                wssse=1000.0 / k + rng.random(),
                bic=float("inf") if rng.random() < 0.03 else round(rng.uniform(900, 1000)) if algorithm ==
                "gaussian_mixture" else NAN,
                share=rng.choice([0.001, 0.05, 0.1, 0.2]),
                ari=NAN if rng.random() < 0.03 else rng.uniform(0.3, 1.0),
            ))  # fmt: skip
    return records


@pytest.mark.parametrize("k_criterion", ["silhouette", "elbow", "bisecting"])
def test_measuring_only_the_needed_stabilities_picks_what_measuring_all_picks(k_criterion):
    rng = random.Random(7)
    rule = {**RULE, "k_criterion": k_criterion}
    skipped = 0
    for _ in range(3000):
        records = random_sweep(rng)
        lazy, measured = measure_lazily(records, rule=rule)
        full, short = choose(records, ALGORITHMS, **rule), choose(lazy, ALGORITHMS, **rule)
        assert (short.chosen_k, short.champion) == (full.chosen_k, full.champion), records
        for algorithm, k in short.chosen_k.items():
            note = short.rationale["per_algorithm"][algorithm]["note"]
            assert (algorithm, k) in measured or "no k met" in note
        skipped += len(records) - len(measured)
    assert skipped > 3000 * 21 / 2  # more than half the second fits saved on these sweeps


def test_stability_is_measured_down_to_the_first_stable_candidate_and_its_ties():
    wssse = {2: 1000, 3: 500, 4: 200, 5: 180, 6: 170}  # elbow at 4
    records = [
        rec("kmeans", 2, 0.30, wssse[2]),
        rec("kmeans", 3, 0.70, wssse[3], ari=0.2),  # best silhouette, unstable
        rec("kmeans", 4, 0.60, wssse[4]),  # first stable one
        rec("kmeans", 5, 0.595, wssse[5]),  # tied with k=4
        rec("kmeans", 6, 0.90, wssse[6], share=0.001),  # a tiny cluster: stability cannot make it admissible
    ]
    lazy, measured = measure_lazily(records, ["kmeans"])
    assert measured == {("kmeans", 3), ("kmeans", 4), ("kmeans", 5)}
    choice = choose(lazy, ["kmeans"], **RULE)
    assert choice.chosen_k == {"kmeans": 4}
    assert choice.rationale["per_algorithm"]["kmeans"]["unmeasured_k"] == [2, 6]
    assert choice.rationale["per_algorithm"]["kmeans"]["admissible_k"] == [4, 5]


def test_the_elbow_criterion_takes_the_admissible_k_nearest_the_elbow():
    wssse = {2: 1000, 3: 500, 4: 200, 5: 180, 6: 170, 7: 165}  # elbow at 4
    records = [
        rec("kmeans", 2, 0.80, wssse[2]),  # the best silhouette: the default criterion's pick
        rec("kmeans", 3, 0.40, wssse[3]),
        rec("kmeans", 4, 0.50, wssse[4], ari=0.2),  # at the elbow, unstable
        rec("kmeans", 5, 0.45, wssse[5]),
        rec("kmeans", 6, 0.60, wssse[6]),
        rec("kmeans", 7, 0.60, wssse[7]),
    ]
    assert choose(records, ["kmeans"], **RULE).chosen_k == {"kmeans": 2}
    elbow_rule = {**RULE, "k_criterion": "elbow"}
    choice = choose(records, ["kmeans"], **elbow_rule)
    assert choice.chosen_k == {"kmeans": 3}  # 3 and 5 are one from the elbow: the smaller k
    assert "elbow" in choice.rationale["per_algorithm"]["kmeans"]["criterion"]
    assert choice.rationale["inputs"]["k_criterion"] == "elbow"
    _, measured = measure_lazily(records, ["kmeans"], rule=elbow_rule)
    assert measured == {("kmeans", 4), ("kmeans", 3)}  # down to the first stable one, nearest first
    gmm = [rec("gaussian_mixture", k, 0.5, wssse[k], bic=1000.0 - abs(k - 6)) for k in wssse]
    assert choose(gmm, ["gaussian_mixture"], **elbow_rule).chosen_k == {"gaussian_mixture": 2}  # BIC still rules


def test_the_bisecting_criterion_takes_the_number_of_segments_from_bisecting_kmeans():
    wssse = {2: 1000, 3: 500, 4: 200, 5: 180, 6: 170, 7: 165}  # elbow at 4
    records = [
        *[rec("bisecting_kmeans", k, s, wssse[k])
          for k, s in {2: 0.6, 3: 0.55, 4: 0.5, 5: 0.45, 6: 0.3, 7: 0.2}.items()],
        *[rec("kmeans", k, s, wssse[k]) for k, s in {2: 0.65, 3: 0.40, 4: 0.38, 5: 0.52, 6: 0.1, 7: 0.7}.items()],
        *[rec("gaussian_mixture", k, s, wssse[k], bic=1000.0 - 10 * k)
          for k, s in {2: 0.1, 3: 0.2, 4: 0.3, 5: 0.25, 6: 0.1, 7: 0.1}.items()],
    ]  # fmt: skip
    bisecting = {**RULE, "k_criterion": "bisecting"}
    choice = choose(records, ALGORITHMS, **bisecting)
    # BisectingKMeans: the best silhouette at or above its elbow (4), not its best overall (2). The
    # others: their best silhouette within one of 4, GaussianMixture too (its BIC would take 7).
    assert choice.chosen_k == {"bisecting_kmeans": 4, "kmeans": 5, "gaussian_mixture": 4}
    assert (choice.champion, choice.champion_k) == ("kmeans", 5)  # the best silhouette of the finalists
    assert choice.rationale["per_algorithm"]["kmeans"]["considered_k"] == [3, 4, 5]
    assert choose(records, ALGORITHMS, **RULE).chosen_k == {"kmeans": 7, "bisecting_kmeans": 2, "gaussian_mixture": 7}
    lines = describe_choice(choice.rationale)
    assert lines[1].startswith("Bisecting k-means kept 4 segments") and "sets the count" in lines[1]
    assert lines[2].startswith("K-means kept 5 segments") and "within one of that count" in lines[2]

    # An unstable pick is not admissible: BisectingKMeans moves to 5, so the window to 4..6.
    shaky = [{**r, "stability_ari": 0.2} if (r["algorithm"], r["k"]) == ("bisecting_kmeans", 4) else r for r in records]
    moved = {"bisecting_kmeans": 5, "kmeans": 5, "gaussian_mixture": 4}
    assert choose(shaky, ALGORITHMS, **bisecting).chosen_k == moved
    # Without BisectingKMeans the first algorithm listed sets the number: KMeans' best at or above 4.
    assert choose(records, ["kmeans", "gaussian_mixture"], **bisecting).chosen_k == {"kmeans": 7, "gaussian_mixture": 7}


def test_an_unstable_champion_is_reported_with_the_most_stable_candidate_measured():
    records = [
        rec("kmeans", 2, 0.60, ari=0.75),  # the pick: admissible (>= 0.7) but under stable_ari
        rec("kmeans", 3, 0.40, ari=0.85),  # the most stable one measured
        rec("kmeans", 4, 0.30, ari=None),  # not measured: never the closest
        rec("bisecting_kmeans", 5, 0.20, ari=0.85),  # as stable as k=3: the smaller k is named
    ]
    choice = choose(records, ["kmeans", "bisecting_kmeans"], **RULE, stable_ari=0.9)
    verdict = choice.rationale["stability"]
    assert (choice.champion, choice.champion_k) == ("kmeans", 2)
    assert verdict["stable"] is False and verdict["k_range"] == [2, 5]
    assert verdict["closest"] == {"algorithm": "kmeans", "k": 3, "stability_ari": 0.85}
    assert verdict["message"].startswith("No stable segmentation was found for k from 2 to 5")
    assert "(kmeans, k=2) from another seed agrees at ARI 0.750" in verdict["message"]
    assert verdict["message"].endswith("was kmeans with k=3 (ARI 0.850).")
    records[1]["stability_ari"] = 0.95  # a stable alternative exists: the message points to it
    message = choose(records, ["kmeans", "bisecting_kmeans"], **RULE, stable_ari=0.9).rationale["stability"]["message"]
    assert message.startswith("The champion's segments are not stable")
    assert message.endswith("candidates measured, kmeans with k=3 (ARI 0.950), is.")
    assert choose(records, ["kmeans"], **RULE, stable_ari=0.7).rationale["stability"]["stable"] is True
    off = [rec("kmeans", 2, 0.6, ari=NAN), rec("kmeans", 3, 0.5, ari=NAN)]  # stability_seeds: 1
    assert choose(off, ["kmeans"], **RULE).rationale["stability"]["stable"] is None


def test_the_choice_in_plain_words_names_each_pick_and_why_the_champion_won():
    records = [rec("kmeans", 3, 0.60, ari=0.95), rec("kmeans", 4, 0.40, ari=0.95),
               rec("gaussian_mixture", 3, 0.30, bic=900.0, ari=0.95),
               rec("gaussian_mixture", 5, 0.20, bic=800.0, ari=0.95)]  # fmt: skip
    sentences = describe_choice(choose(records, ["kmeans", "gaussian_mixture"], **RULE).rationale)
    text = " ".join(sentences)
    assert "K-means kept 3 segments: the number whose customers sit most clearly" in text
    assert "The Gaussian mixture kept 5 segments: the number with the best fit for its complexity" in text
    assert "The champion is k-means with 3 segments: its segments are the most clearly separated" in text
    assert "(silhouette 0.60; the Gaussian mixture 0.20)" in text
    assert sentences[-1].startswith("The segments are stable")
    records[2:] = [rec("gaussian_mixture", 3, 0.595, bic=800.0, ari=0.95)]  # within the tolerance, listed first
    text = " ".join(describe_choice(choose(records, ["gaussian_mixture", "kmeans"], **RULE).rationale))
    assert "The champion is the Gaussian mixture with 3 segments: its segments are as clearly separated" in text
