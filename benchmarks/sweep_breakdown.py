"""Where a sweep candidate's time goes, and what measuring stability on the shortlist saves.

    python benchmarks/sweep_breakdown.py [--size 1000000] [--parallelism 1] [--out benchmarks/results]

Runs the training job on the features ``make bench`` left for ``--size``, once with
``stability_scope: all`` and once with ``shortlist``, fitting ``--parallelism`` candidates at a
time (1: each step's seconds are its own). Each candidate's sweep record times its fit, its
metrics and its stability refit apart. Writes ``sweep_breakdown.json``: per scope, those seconds
per candidate, their sums per step and per algorithm, the sweep's seconds and the pick.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from run import bench_config, bench_settings, build_parser

from segmentation.spark import get_spark
from segmentation.training_pipeline import run_training

STEPS = ("fit", "metrics", "stability")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--parallelism", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("/tmp/segmentation-bench"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    spark = get_spark(bench_settings())
    result: dict = {"size": args.size, "parallelism": args.parallelism}
    for scope in ("all", "shortlist"):
        extra = {"training.selection.parallelism": args.parallelism, "training.selection.stability_scope": scope}
        trained = run_training(spark, bench_config(args.work, args.size, build_parser().parse_args([]), extra))
        candidates = {
            f"{r['algorithm']}-k{r['k']}": {step: round(r[f"{step}_seconds"] or 0.0, 3) for step in STEPS}
            for r in trained.records
        }
        totals = {step: sum(c[step] for c in candidates.values()) for step in STEPS}
        for r in trained.records:  # per algorithm, from each record's own sum of its steps
            totals[f"{r['algorithm']}.all"] = totals.get(f"{r['algorithm']}.all", 0.0) + r["candidate_seconds"]
        result[scope] = {
            "sweep_seconds": round(trained.seconds["sweep"], 1),
            "stability_refits": sum(r["stability_seconds"] is not None for r in trained.records),
            "candidates_total": len(trained.records),
            "chosen_k": trained.choice.chosen_k,
            "champion": f"{trained.champion} k={trained.k}",
            "totals": {key: round(value, 1) for key, value in totals.items()},
            "candidates": candidates,
        }
        print(scope, json.dumps({k: v for k, v in result[scope].items() if k != "candidates"}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sweep_breakdown.json").write_text(json.dumps(result, indent=1))
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
