"""Score other choice rules on the sweeps ``benchmarks/planted.py`` recorded, without fitting again.

    python benchmarks/planted_rules.py benchmarks/results/planted.json [--out benchmarks/results]

``planted.json`` holds every candidate's metrics and its ARI against the planted personas on the
swept customers, so any rule that reads those metrics can be scored on the same fits: per rule,
how many cases it picks a k within one of the planted count, and the mean and lowest ARI of its
picks. A stability the training job did not measure (it measures only where its own rule needs
it) counts as stable here, so a rule that needs other stabilities is scored optimistically; the
ARIs are those of the sweep's fits on the swept customers, not of a refit. Writes
``<out>/planted_rules.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from segmentation.selection import choose, elbow_k

ALGORITHMS = ("kmeans", "bisecting_kmeans", "gaussian_mixture")
MIN_SHARE = 0.02

Pick = tuple[str, int]


def _rows(case: dict, algorithm: str) -> list[dict]:
    return sorted((c for c in case["candidates"] if c["algorithm"] == algorithm), key=lambda c: c["k"])


def _record(case: dict, pick: Pick) -> dict:
    return next(c for c in case["candidates"] if (c["algorithm"], c["k"]) == pick)


def _elbow(rows: list[dict]) -> int:
    return elbow_k([r["k"] for r in rows], [r["wssse"] for r in rows])


def _rule(k_criterion: str, algorithms: tuple[str, ...] = ALGORITHMS) -> Callable[[dict], Pick]:
    def pick(case: dict) -> Pick:
        records = [
            {**c, "stability_ari": 1.0 if c["stability_ari"] is None else c["stability_ari"]}
            for c in case["candidates"]
            if c["algorithm"] in algorithms
        ]
        choice = choose(records, list(algorithms), MIN_SHARE, 0.7, 0.01, k_criterion)
        return choice.champion, choice.champion_k

    return pick


def _silhouette_from_elbow(algorithms: tuple[str, ...]) -> Callable[[dict], Pick]:
    """Per algorithm the best silhouette among k at or above the elbow; the best of those wins."""

    def pick(case: dict) -> Pick:
        picks = []
        for algorithm in algorithms:
            rows = _rows(case, algorithm)
            elbow = _elbow(rows)
            allowed = [r for r in rows if r["k"] >= elbow and r["min_cluster_share"] >= MIN_SHARE] or rows
            picks.append(max(allowed, key=lambda r: r["silhouette"]))
        best = max(picks, key=lambda r: r["silhouette"])
        return best["algorithm"], best["k"]

    return pick


def _oracle(algorithm: str) -> Callable[[dict], Pick]:
    def pick(case: dict) -> Pick:
        best = max(_rows(case, algorithm), key=lambda r: r["ari"])
        return algorithm, best["k"]

    return pick


RULES: dict[str, Callable[[dict], Pick]] = {
    "today's rule (silhouette; GMM by BIC; champion by silhouette)": _rule("silhouette"),
    "k_criterion: elbow (GMM by BIC; champion by silhouette)": _rule("elbow"),
    "k_criterion: elbow, KMeans and BisectingKMeans only": _rule("elbow", ALGORITHMS[:2]),
    "k_criterion: bisecting (k from BisectingKMeans; champion by silhouette within one of it)": _rule("bisecting"),
    "best silhouette at or above the elbow, BisectingKMeans only": _silhouette_from_elbow(ALGORITHMS[1:2]),
    "best silhouette at or above the elbow, KMeans and BisectingKMeans": _silhouette_from_elbow(ALGORITHMS[:2]),
    **{f"the best k of {a} (knows the personas: an upper bound)": _oracle(a) for a in ALGORITHMS},
}


def score(result: dict) -> str:
    cases = result["cases"]
    lines = [
        f"Rules scored on the sweeps of `{result['source']}` ({result['date']}, {len(cases)} cases).",
        "",
        "| rule | k within ±1 | mean ARI | lowest ARI | k per case (" + ", ".join(cases) + ") |",
        "|---|---|---|---|---|",
    ]
    for name, rule in RULES.items():
        picks = {case: rule(row) for case, row in cases.items()}
        hits = sum(abs(k - cases[c]["planted_k"]) <= 1 for c, (_, k) in picks.items())
        aris = [_record(cases[c], p)["ari"] for c, p in picks.items()]
        ks = " ".join(str(k) for _, k in picks.values())
        lines.append(f"| {name} | {hits}/{len(cases)} | {sum(aris) / len(aris):.3f} | {min(aris):.3f} | {ks} |")
    planted = " ".join(str(row["planted_k"]) for row in cases.values())
    lines.append(f"| planted | | | | {planted} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    result = {**json.loads(args.results.read_text()), "source": args.results.name}
    table = score(result)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "planted_rules.md").write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
