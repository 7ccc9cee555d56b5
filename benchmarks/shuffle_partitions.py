"""The feature job at one size with different shuffle partition counts (``make bench`` writes the input).

    python benchmarks/shuffle_partitions.py [--size 10000000] [--partitions 4,16,64]

The session's default is 2 x cores (at least 4); adaptive query execution is on, so it may
coalesce small partitions but does not split large ones. Each count runs the whole feature job
(read, validate, aggregate, write Delta) into its own output folder. Writes
``shuffle_partitions.json``: seconds and peak memory per run, in order (repeat a count to see the noise).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from run import PeakMemory, bench_config, bench_settings, build_parser

from segmentation.feature_pipeline import run_feature_pipeline
from segmentation.spark import get_spark


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000_000)
    parser.add_argument("--partitions", default="4,16,64")
    parser.add_argument("--work", type=Path, default=Path("/tmp/segmentation-bench"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    spark = get_spark(bench_settings())
    result: dict = {"size": args.size, "runs": []}
    for partitions in (int(p) for p in args.partitions.split(",")):
        spark.conf.set("spark.sql.shuffle.partitions", str(partitions))
        out = args.work / f"shuffle-{partitions}"
        shutil.rmtree(out, ignore_errors=True)
        # the bench's config for this size (its generated input), with the outputs redirected
        outputs = {f"features.{table}.path": out / table for table in ("output", "quarantine", "quality")}
        cfg = bench_config(args.work, args.size, build_parser().parse_args([]), outputs)
        with PeakMemory() as memory:
            start = time.perf_counter()
            run_feature_pipeline(spark, cfg)
            seconds = time.perf_counter() - start
        run = {"partitions": partitions, "seconds": round(seconds, 2), "peak_gb": round(memory.peak, 2)}
        result["runs"].append(run)
        print(json.dumps(result), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "shuffle_partitions.json").write_text(json.dumps(result, indent=1))
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
