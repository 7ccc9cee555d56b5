"""The documented rule that picks k per algorithm and a champion across algorithms.

Inputs are the per-(algorithm, k) metric records of the sweep; the rule is pure
Python over those few dozen numbers, so it is easy to read, test and log.

Rule
----
1. A candidate is *admissible* when its smallest cluster holds at least
   ``min_cluster_share`` of the customers and its stability (adjusted Rand index
   between fits with different seeds) is at least ``min_stability``. When no k
   of an algorithm is admissible, all its candidates are considered and the
   rationale says so.
2. KMeans and BisectingKMeans, with ``k_criterion: silhouette``:
   the highest silhouette wins; candidates within ``silhouette_tolerance`` of
   the best are tied, and the tie goes to the k nearest the elbow of the WSSSE
   curve (the point farthest from the chord between its first and last
   points), then to the smaller k. With ``k_criterion: elbow``: the admissible
   k nearest that elbow wins, then the smaller k.
3. GaussianMixture: the lowest BIC wins; ties (within 0.1% of the BIC) go to the
   smaller k. When a BIC is not finite (a collapsed component makes the
   likelihood infinite), step 2's rule (with its ``k_criterion``) applies instead.
   With ``k_criterion: bisecting`` (the default) steps 2 and 3 are replaced: BisectingKMeans
   (the first algorithm listed when it is not swept) sets the number of
   segments, as the highest silhouette among its k at or above its elbow (ties
   to the k nearest the elbow, then the smaller); every other algorithm takes
   its highest silhouette among the k within one of that number (ties to the
   nearer k, then the smaller). When none of those k is admissible, all of them
   are considered and the rationale says so.
4. Champion: the algorithm whose chosen model has the highest silhouette
   (computed on hard assignments for every algorithm); ties within
   ``silhouette_tolerance`` go to the earlier algorithm in
   ``training.algorithms``.
5. Verdict: the champion is *stable* when its stability reaches ``stable_ari``.
   When it does not, the rationale, the log and the report say so and name the
   most stable candidate measured: a stable alternative when there is one,
   otherwise the closest, and then they say that no stable segmentation was
   found in the k range swept.

Stability costs a second fit per candidate, and the rule only needs it where it
can change the pick: the best candidates by the criterion of step 2 or 3, down to
the first stable one, and those tied with it. ``stability_needed`` names those
candidates from the stabilities measured so far (``None`` = not measured); the
training job measures them, asks again, and stops when it names none. The pick
is then the one the rule makes with every stability measured (tested on random
sweeps); unmeasured candidates are not admissible and are listed in the
rationale as ``unmeasured_k``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Choice", "choose", "describe_choice", "elbow_k", "stability_needed"]

BIC_RELATIVE_TIE = 1e-3


@dataclass(frozen=True)
class Choice:
    """What the rule picked and why."""

    chosen_k: dict[str, int]
    champion: str
    rationale: dict[str, Any] = field(default_factory=dict)

    @property
    def champion_k(self) -> int:
        return self.chosen_k[self.champion]


def elbow_k(ks: Sequence[int], wssse: Sequence[float]) -> int:
    """k at the elbow: the point of the WSSSE curve farthest from the chord joining its ends."""
    if len(ks) <= 2:
        return ks[0]
    x0, y0, x1, y1 = ks[0], wssse[0], ks[-1], wssse[-1]
    # Normalise both axes so the elbow does not depend on the units of WSSSE.
    span_x, span_y = (x1 - x0) or 1.0, (y0 - y1) or 1.0
    best_k, best_d = ks[0], -1.0
    for k, w in zip(ks, wssse, strict=True):
        nx, ny = (k - x0) / span_x, (y0 - w) / span_y
        distance = abs(ny - nx) / math.sqrt(2.0)
        if distance > best_d + 1e-12:
            best_k, best_d = k, distance
    return best_k


def _elbow_of(rows: Sequence[Mapping[str, Any]]) -> int:
    """The elbow of one algorithm's WSSSE curve over every k swept (``rows`` sorted by k)."""
    return elbow_k([r["k"] for r in rows], [r["wssse"] for r in rows])


def _stable(record: Mapping[str, Any], min_stability: float) -> bool:
    """NaN (the check is off: one seed) counts as stable; None (not measured) does not."""
    ari = record["stability_ari"]
    return ari is not None and not (ari < min_stability)


def _admissible(records: list[Mapping[str, Any]], min_share: float, min_stability: float) -> list[Mapping[str, Any]]:
    return [r for r in records if r["min_cluster_share"] >= min_share and _stable(r, min_stability)]


def _finite(value: float) -> bool:
    return value is not None and math.isfinite(value)


def _silhouette(record: Mapping[str, Any]) -> float:
    """A silhouette that is not a number (a single non-empty cluster) ranks last."""
    return record["silhouette"] if _finite(record["silhouette"]) else -math.inf


def _by_bic(algorithm: str, rows: Sequence[Mapping[str, Any]]) -> bool:
    """GaussianMixture ranks by BIC when every BIC among ``rows`` is finite; the rest by silhouette."""
    return algorithm == "gaussian_mixture" and all(_finite(r["bic"]) for r in rows)


def _ranking(by_bic: bool, silhouette_tolerance: float, elbow: int | None = None):
    """The rule's order (a sort key, best first) and its tie test (is a record tied with the best?);
    ``elbow`` given: nearest that k first, and no ties."""
    if elbow is not None and not by_bic:
        return (lambda r: (abs(r["k"] - elbow), r["k"])), (lambda r, best: r["k"] == best["k"])
    if by_bic:
        return (lambda r: r["bic"]), (lambda r, best: r["bic"] <= best["bic"] + abs(best["bic"]) * BIC_RELATIVE_TIE)
    return (lambda r: -_silhouette(r)), (lambda r, best: _silhouette(r) >= _silhouette(best) - silhouette_tolerance)


def choose(
    records: Sequence[Mapping[str, Any]],
    algorithms: Sequence[str],
    min_cluster_share: float,
    min_stability: float,
    silhouette_tolerance: float,
    k_criterion: str = "silhouette",
    stable_ari: float = 0.9,
) -> Choice:
    """Apply the rule to the sweep's records (keys: algorithm, k, silhouette, wssse, bic,
    min_cluster_share, stability_ari)."""
    rule = (min_cluster_share, min_stability, silhouette_tolerance, k_criterion)
    by_algorithm = _rows_by_algorithm(records, algorithms)
    per_algorithm: dict[str, Any] = {}
    reference = _reference(by_algorithm, k_criterion)
    if reference is not None:
        per_algorithm[reference] = _choose_k(reference, by_algorithm[reference], *rule)
    reference_k = per_algorithm[reference]["chosen_k"] if reference is not None else None
    for algorithm, rows in by_algorithm.items():
        if algorithm != reference:
            per_algorithm[algorithm] = _choose_k(algorithm, rows, *rule, reference_k)
    per_algorithm = {a: per_algorithm[a] for a in by_algorithm}  # in the order of training.algorithms
    if not per_algorithm:
        raise ValueError("the sweep produced no candidates to choose from")
    chosen = {algorithm: pick["chosen_k"] for algorithm, pick in per_algorithm.items()}
    champion, finalist_silhouettes = _champion(records, chosen, silhouette_tolerance)
    rationale = {
        "rule": __doc__.split("Rule\n----\n", 1)[1].strip(),
        "inputs": {
            "min_cluster_share": min_cluster_share,
            "min_stability": min_stability,
            "silhouette_tolerance": silhouette_tolerance,
            "k_criterion": k_criterion,
            "stable_ari": stable_ari,
        },
        "per_algorithm": per_algorithm,
        "champion": {
            "algorithm": champion,
            "k": chosen[champion],
            "finalist_silhouettes": finalist_silhouettes,
        },
        "stability": _verdict(records, champion, chosen[champion], stable_ari),
    }
    return Choice(chosen_k=chosen, champion=champion, rationale=rationale)


def _rows_by_algorithm(records: Sequence[Mapping[str, Any]], algorithms: Sequence[str]) -> dict[str, list]:
    """Each swept algorithm's records, sorted by k, in the order of ``algorithms``."""
    by_algorithm = {a: sorted((r for r in records if r["algorithm"] == a), key=lambda r: r["k"]) for a in algorithms}
    return {a: rows for a, rows in by_algorithm.items() if rows}


def _reference(by_algorithm: Mapping[str, list], k_criterion: str) -> str | None:
    """With ``k_criterion: bisecting``, the algorithm whose pick sets the number of segments."""
    if k_criterion != "bisecting" or not by_algorithm:
        return None
    return "bisecting_kmeans" if "bisecting_kmeans" in by_algorithm else next(iter(by_algorithm))


def _considered(
    rows: list[Mapping[str, Any]], k_criterion: str, elbow: int, reference_k: int | None
) -> list[Mapping[str, Any]]:
    """The k an algorithm chooses among: all of them, or under ``k_criterion: bisecting`` those at or
    above the elbow (the reference algorithm) or within one of the reference's k (the others)."""
    if k_criterion != "bisecting":
        return rows
    if reference_k is None:
        return [r for r in rows if r["k"] >= elbow]
    return [r for r in rows if abs(r["k"] - reference_k) <= 1] or rows


def _choose_k(
    algorithm: str,
    rows: list[Mapping[str, Any]],
    min_cluster_share: float,
    min_stability: float,
    silhouette_tolerance: float,
    k_criterion: str = "silhouette",
    reference_k: int | None = None,
) -> dict[str, Any]:
    """Steps 1 to 3 for one algorithm's candidates (sorted by k): the chosen k and why."""
    elbow = _elbow_of(rows)
    considered = _considered(rows, k_criterion, elbow, reference_k)
    admissible = _admissible(considered, min_cluster_share, min_stability)
    note = "admissible candidates only"
    if not admissible:
        admissible = considered
        note = "no k met the minimum cluster share and stability; chose among all candidates"
    by_bic = reference_k is None and _by_bic(algorithm, admissible)
    order, tied_with = _ranking(by_bic, silhouette_tolerance, elbow if k_criterion == "elbow" else None)
    best = min(admissible, key=order)
    tied = [r for r in admissible if tied_with(r, best)]
    centre = elbow if reference_k is None else reference_k
    if by_bic:
        pick = min(tied, key=lambda r: r["k"])
        criterion = "lowest BIC (ties within 0.1% to the smaller k)"
    else:
        pick = min(tied, key=lambda r: (abs(r["k"] - centre), r["k"]))
        criterion = _criterion(k_criterion, silhouette_tolerance, reference_k)
    return {
        "chosen_k": int(pick["k"]),
        "criterion": criterion,
        "note": note,
        "elbow_k": int(elbow),
        "admissible_k": [int(r["k"]) for r in admissible],
        "tied_k": [int(r["k"]) for r in tied],
        "unmeasured_k": [int(r["k"]) for r in rows if r["stability_ari"] is None],
        **({"considered_k": [int(r["k"]) for r in considered]} if k_criterion == "bisecting" else {}),
    }


def _criterion(k_criterion: str, silhouette_tolerance: float, reference_k: int | None) -> str:
    if k_criterion == "elbow":
        return "the k nearest the elbow of the WSSSE curve (then the smaller k)"
    if k_criterion == "bisecting" and reference_k is None:
        return f"highest silhouette at or above the elbow, setting the number of segments (ties within {silhouette_tolerance} to the k nearest the elbow)"  # noqa: E501
    if k_criterion == "bisecting":
        return f"highest silhouette within one of the {reference_k} segments set by the reference (ties within {silhouette_tolerance} to the nearer k)"  # noqa: E501
    return f"highest silhouette (ties within {silhouette_tolerance} to the k nearest the elbow)"


def _champion(
    records: Sequence[Mapping[str, Any]], chosen: Mapping[str, int], silhouette_tolerance: float
) -> tuple[str, dict[str, float]]:
    """Step 4: the champion algorithm, and the silhouette of each algorithm's chosen model."""
    finalists = [(a, _pick(records, a, k)) for a, k in chosen.items()]
    best = max(_silhouette(r) for _, r in finalists)
    champion = next(a for a, r in finalists if _silhouette(r) >= best - silhouette_tolerance)
    return champion, {a: r["silhouette"] for a, r in finalists}


def _verdict(records: Sequence[Mapping[str, Any]], champion: str, k: int, stable_ari: float) -> dict[str, Any]:
    """Step 5: is the champion stable, and if not, which measured candidate came closest."""
    ks = sorted({int(r["k"]) for r in records})
    ari = _pick(records, champion, k)["stability_ari"]
    verdict: dict[str, Any] = {"threshold": stable_ari, "champion_stability_ari": ari, "k_range": [ks[0], ks[-1]]}
    if not _finite(ari):
        why = "it was not measured" if ari is None else "training.selection.stability_seeds is 1"
        return {**verdict, "stable": None, "message": f"The champion's stability across seeds is unknown: {why}."}
    if ari >= stable_ari:
        return {**verdict, "stable": True, "message": f"The segments are stable: a refit from another seed puts "
                f"customers in the same segments at ARI {ari:.3f} (at least {stable_ari} asked)."}  # fmt: skip
    measured = [r for r in records if _finite(r["stability_ari"])]
    closest = max(measured, key=lambda r: (r["stability_ari"], -r["k"]))
    named = f"{closest['algorithm']} with k={int(closest['k'])} (ARI {closest['stability_ari']:.3f})"
    champion_part = (
        f"a refit of the champion ({champion}, k={k}) from another seed agrees at ARI {ari:.3f}, under the "
        f"{stable_ari} asked"
    )
    message = (
        f"The champion's segments are not stable: {champion_part}. The most stable of the {len(measured)} "
        f"candidates measured, {named}, is."
        if closest["stability_ari"] >= stable_ari
        else f"No stable segmentation was found for k from {ks[0]} to {ks[-1]}: {champion_part}. The most stable "
        f"of the {len(measured)} candidates measured was {named}."
    )
    return {
        **verdict,
        "stable": False,
        "closest": {key: closest[key] for key in ("algorithm", "k", "stability_ari")},
        "message": message,
    }


_PLAIN = {
    "kmeans": "k-means",
    "bisecting_kmeans": "bisecting k-means",
    "gaussian_mixture": "the Gaussian mixture",
    "density": "density clustering (DBSCAN)",
}


def _plain(algorithm: str) -> str:
    return _PLAIN.get(algorithm, algorithm)


def _how(criterion: str) -> str:
    """How an algorithm kept its number of segments, in plain words."""
    if criterion.startswith("lowest BIC"):
        return "the number with the best fit for its complexity (lowest BIC)"
    if criterion.startswith("the k nearest"):
        return "the number at the bend of the tightness curve, past which more segments add little"
    if "setting the number" in criterion:
        return (
            "from the bend of the tightness curve upwards, the number whose customers sit most clearly in "
            "their own segment; its splits are nested, so this number sets the count for the other methods"
        )
    if "set by the reference" in criterion:
        return "the number, within one of that count, whose customers sit most clearly in their own segment"
    return "the number whose customers sit most clearly in their own segment (highest silhouette)"


def describe_choice(rationale: Mapping[str, Any]) -> list[str]:
    """The choice in sentences a marketer can follow, from :func:`choose`'s rationale."""
    per, champion = rationale["per_algorithm"], rationale["champion"]
    silhouettes = champion["finalist_silhouettes"]
    own = " (density clustering finds its number of dense groups itself)" if "density" in per else ""
    lines = [
        f"Each method ({', '.join(_plain(a) for a in per)}) split the customers into every number of segments "
        f"in the range tried{own}, and kept one number: the finalists below."
    ]
    # The algorithm that sets the number of segments (k_criterion: bisecting) is told first.
    for algorithm, pick in sorted(per.items(), key=lambda item: "setting the number" not in item[1]["criterion"]):
        how = _how(pick["criterion"])
        caveat = (
            ""
            if pick["note"] == "admissible candidates only"
            else " No number passed the size and stability checks, so it chose among all of them."
        )
        name = _plain(algorithm)
        lines.append(f"{name[0].upper()}{name[1:]} kept {pick['chosen_k']} segments: {how}.{caveat}")
    mine = silhouettes[champion["algorithm"]]
    others = "".join(f"; {_plain(a)} {s:.2f}" for a, s in silhouettes.items() if a != champion["algorithm"])
    tied = _finite(mine) and any(_finite(s) and s > mine for s in silhouettes.values())
    why = (
        "its segments are as clearly separated as the best within the tolerance, and it comes first in the list"
        if tied
        else "its segments are the most clearly separated of the finalists"
    )
    lines.append(
        f"The champion is {_plain(champion['algorithm'])} with {champion['k']} segments: {why} "
        f"(silhouette {mine:.2f}{others})."
    )
    if "stability" in rationale:
        lines.append(rationale["stability"]["message"])
    return lines


def stability_needed(
    records: Sequence[Mapping[str, Any]],
    algorithms: Sequence[str],
    min_cluster_share: float,
    min_stability: float,
    silhouette_tolerance: float,
    k_criterion: str = "silhouette",
) -> list[tuple[str, int]]:
    """The (algorithm, k) whose stability the rule still needs, given those measured so far.

    Per algorithm, walk the candidates with a large enough smallest cluster from the best
    to the worst by the rule's criterion. The first one not yet measured is needed, and so
    are the unmeasured ones it would tie with; the walk stops there, or at the first
    stable one, whose unmeasured ties are needed. An empty list means the rule can decide.
    """
    rule = (min_cluster_share, min_stability, silhouette_tolerance, k_criterion)
    by_algorithm = _rows_by_algorithm(records, algorithms)
    reference = _reference(by_algorithm, k_criterion)
    if reference is None:
        needed = [n for a, rows in by_algorithm.items() for n in _needed(a, rows, *rule)]
    else:
        # The others choose around the reference's pick, so that pick is settled first.
        needed = _needed(reference, by_algorithm[reference], *rule)
        if not needed:
            reference_k = _choose_k(reference, by_algorithm[reference], *rule)["chosen_k"]
            others = [(a, rows) for a, rows in by_algorithm.items() if a != reference]
            needed = [n for a, rows in others for n in _needed(a, rows, *rule, reference_k)]
    if needed:
        return needed
    # A pick made among all candidates (none passed step 1) may not have been measured: measure it for
    # the verdict. Its stability cannot change the pick.
    choice = choose(records, algorithms, *rule)
    return [(a, k) for a, k in choice.chosen_k.items() if _pick(records, a, k)["stability_ari"] is None]


def _pick(records: Sequence[Mapping[str, Any]], algorithm: str, k: int) -> Mapping[str, Any]:
    """The record of one candidate."""
    return next(r for r in records if r["algorithm"] == algorithm and r["k"] == k)


def _needed(
    algorithm: str,
    every: list[Mapping[str, Any]],
    min_cluster_share: float,
    min_stability: float,
    silhouette_tolerance: float,
    k_criterion: str,
    reference_k: int | None = None,
) -> list[tuple[str, int]]:
    """One algorithm's walk for :func:`stability_needed` (``every``: its records sorted by k)."""
    elbow = _elbow_of(every)
    considered = _considered(every, k_criterion, elbow, reference_k)
    rows = [r for r in considered if r["min_cluster_share"] >= min_cluster_share]
    unmeasured = [r for r in rows if r["stability_ari"] is None]
    if not unmeasured:
        return []
    by_bic = reference_k is None and _by_bic(algorithm, rows)
    if algorithm == "gaussian_mixture" and reference_k is None and not by_bic:
        # Whether the BIC or the silhouette rule applies depends on which are admissible.
        return [(algorithm, int(r["k"])) for r in unmeasured]
    order, tied_with = _ranking(by_bic, silhouette_tolerance, elbow if k_criterion == "elbow" else None)
    for r in sorted(rows, key=order):
        if r["stability_ari"] is None or _stable(r, min_stability):
            return [(algorithm, int(o["k"])) for o in unmeasured if tied_with(o, r)]
    return []
