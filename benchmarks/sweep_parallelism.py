"""The training job's k sweep with candidates fitted from one driver thread and from several.

    python benchmarks/sweep_parallelism.py [--size 1000000] [--parallelism 1,2]

Trains on the features ``make bench`` left for ``--size`` (the sweep runs on a 50,000-customer
sample, so its time hardly depends on the size), once per ``training.selection.parallelism``
value, into its own MLflow experiment. Writes ``sweep_parallelism.json``: per run, the
training's stage seconds, the chosen (algorithm, k) and every candidate's silhouette, which
must not depend on the thread count.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from run import bench_config, bench_settings, build_parser

from segmentation.spark import get_spark
from segmentation.training_pipeline import run_training


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--parallelism", default="1,2")
    parser.add_argument("--work", type=Path, default=Path("/tmp/segmentation-bench"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    spark = get_spark(bench_settings())
    result: dict = {"size": args.size, "runs": []}
    for threads in (int(p) for p in args.parallelism.split(",")):
        overrides = {
            "training.selection.parallelism": threads,
            "training.register_model": False,
            "mlflow.experiment": f"bench-sweep-parallelism-{threads}",
            "training.assignments.path": args.work / f"sweep-{threads}" / "assignments",
            "profiles.output.path": args.work / f"sweep-{threads}" / "profiles",
            "profiles.report_dir": args.work / f"sweep-{threads}" / "reports",
        }
        cfg = bench_config(args.work, args.size, build_parser().parse_args([]), overrides)
        trained = run_training(spark, cfg)
        result["runs"].append(
            {
                "parallelism": threads,
                "seconds": trained.seconds,
                "champion": [trained.champion, trained.k],
                "silhouettes": {f"{r['algorithm']}-k{r['k']}": round(r["silhouette"], 6) for r in trained.records},
            }
        )
        print(json.dumps(result["runs"][-1]["seconds"] | {"parallelism": threads}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sweep_parallelism.json").write_text(json.dumps(result, indent=1))
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
