"""The feature job against DuckDB as a user runs each: two processes, one after the other, nothing else running.

    python benchmarks/features_peer.py [--size 10000000] [--repeats 2] [--work /tmp/segmentation-bench]
        [--out benchmarks/results] [--name features_peer] [--skip-in-session]

``make bench`` times the feature job inside its one long Spark session and DuckDB in a child process
capped at 8 GB beside that session's heap. Here each tool runs as its user would start it, with the
whole machine:

* ours: ``python jobs/build_features.py`` with the local configuration (``make demo``'s), the paths
  set to this size's files; JVM start, Ivy's resolution of the Delta jars (from its cache) and the
  session's start are in its time;
* DuckDB: a Python process that imports DuckDB and runs ``peers.duckdb_features``, the same
  validation and columns (``tests/test_benchmark_peers.py``), with DuckDB's default memory limit
  (80% of the machine) and the same ``as_of`` found the same way (the day after the newest
  transaction), the scan for it in its time;
* ours inside one session: the feature pipeline again in a Spark session started beforehand, its
  start not counted, after every process has ended.

The transactions are the benchmark's (``run.py``'s generator settings, Parquet), generated in a
process of their own when missing. The runs alternate (ours, DuckDB, ours, DuckDB, ...) so that a
slow spell of the machine falls on both; each wall time is written to ``<name>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from run import bench_config, bench_settings, build_parser

from segmentation.feature_pipeline import run_feature_pipeline
from segmentation.spark import get_spark

PROJECT = Path(__file__).resolve().parent.parent

DUCKDB_CHILD = """
import datetime as dt, sys
from pathlib import Path
import duckdb
sys.path.insert(0, {bench!r})
from peers import duckdb_features
newest = duckdb.connect().execute("SELECT max(CAST(timestamp AS DATE)) FROM read_parquet('{glob}')").fetchone()[0]
n = duckdb_features({glob!r}, Path({out!r}), newest + dt.timedelta(days=1), {top}, {channels})
print(n, newest + dt.timedelta(days=1))
"""


def _sets(keys: dict) -> list[str]:
    """``--set key=value`` arguments for a job."""
    return [arg for key, value in keys.items() for arg in ("--set", f"{key}={value}")]


def _timed(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{command[:3]} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return seconds, done.stdout.strip()


def _generate(cfg, n: int) -> None:
    tx = Path(cfg.input.transactions.path)
    if (tx / "_SUCCESS").exists():
        return
    root = tx.parent
    sets = {"generator.n_transactions": n, "generator.transactions.path": tx,
            "generator.transactions.format": "parquet", "generator.customers.path": root / "customers",
            "generator.ground_truth.path": root / "ground_truth"}  # fmt: skip
    _timed([sys.executable, "jobs/generate_transactions.py", *_sets(sets)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/segmentation-bench"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--name", default="features_peer")
    parser.add_argument("--skip-in-session", action="store_true", help="leave out the run inside one session")
    args = parser.parse_args(argv)
    cfg = bench_config(args.work, args.size, build_parser().parse_args([]))
    _generate(cfg, args.size)
    paths = {"input.transactions.path": cfg.input.transactions.path, "input.transactions.format": "parquet",
             "features.output.path": cfg.features.output.path, "features.quarantine.path": cfg.features.quarantine.path,
             "features.quality.path": cfg.features.quality.path}  # fmt: skip
    ours = [sys.executable, "jobs/build_features.py", *_sets(paths)]
    glob = f"{cfg.input.transactions.path}/*.parquet"
    duck = [sys.executable, "-c", DUCKDB_CHILD.format(bench=str(PROJECT / "benchmarks"), glob=glob,
            out=str(args.work / str(args.size) / "duckdb"), top=cfg.features.top_categories,
            channels=cfg.features.max_channels)]  # fmt: skip
    result: dict = {"date": time.strftime("%Y-%m-%d"), "size": args.size, "job": [], "duckdb": []}
    for _ in range(args.repeats):
        for name, command in (("job", ours), ("duckdb", duck)):
            seconds, out = _timed(command)
            result[name].append(round(seconds, 1))
            print(name, round(seconds, 1), out.splitlines()[-1] if out else "", flush=True)
    if not args.skip_in_session:
        spark = get_spark(bench_settings())
        started = time.perf_counter()
        report = run_feature_pipeline(spark, cfg)
        result["in_session"] = round(time.perf_counter() - started, 1)
        result["customers"] = report.customers
        result["ratio_in_session_best_duckdb"] = round(result["in_session"] / min(result["duckdb"]), 2)
        spark.stop()
    for name in ("job", "duckdb"):
        result[f"{name}_median"] = round(statistics.median(result[name]), 1)
    result["ratio_median"] = round(result["job_median"] / result["duckdb_median"], 2)
    result["ratio_best"] = round(min(result["job"]) / min(result["duckdb"]), 2)
    print(json.dumps(result), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
