"""Where the feature job spends its time and memory, step by step, from Spark's own event log.

    python benchmarks/feature_profile.py [--size 10000000] [--work /tmp/segmentation-bench]
        [--out benchmarks/results] [--name feature_profile_<size>]

Runs the feature pipeline on the benchmark's transactions for ``--size`` (``run.py``'s files,
generated first when missing, as ``features_peer.py`` does) in a session that writes Spark's event
log with the executors' memory metrics per stage (``spark.eventLog.logStageExecutorMetrics``,
polled every 100 ms). The pipeline names its jobs by step (``segmentation.spark.job_descriptions``:
"features: label and count the rows", "features: write the features", ...), so each job, stage and
memory peak of the log falls in one step. Writes ``<name>.json`` with, per step:

* ``seconds``: from its first job's submission to its last job's end (driver work between two jobs
  of the step is inside, driver work before its first job is not);
* ``task_seconds``: the executor run time of its tasks (above ``seconds`` when both cores work);
* ``input_mb``, ``shuffle_write_mb``, ``spill_mb``: bytes read from files, written to shuffles and
  spilled to disk;
* ``peak_heap_gb``: the largest JVM heap in use during any of its stages, and ``peak_execution_gb``
  the largest on-heap execution memory (joins, aggregations, sorts), both from Spark's executor
  metrics; ``peak_task_execution_mb``: the largest one task's peak execution memory;
* ``jobs`` and ``stages``.

Also the session's start (JVM, Ivy's resolution of the Delta jars from its cache, Delta's
extension) and the pipeline's wall time; the run's ``seconds`` less the steps' sum is driver-only
work (planning, Delta's log, the steps' Python).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from features_peer import _generate
from run import bench_config, bench_settings, build_parser

from segmentation.feature_pipeline import run_feature_pipeline
from segmentation.spark import get_spark

MB = 1024**2
GB = 1024**3


def _events(log_dir: Path) -> list[dict]:
    """The events of the one application under ``log_dir``: Spark 4 rolls its log over files
    ``eventlog_v2_<app>/events_<n>_<app>``, which are read in ``<n>``'s order."""
    (app,) = [p for p in log_dir.iterdir() if p.is_dir()]
    files = sorted(app.glob("events_*"), key=lambda p: int(p.name.split("_")[1]))
    return [json.loads(line) for path in files for line in path.read_text().splitlines() if line.strip()]


def _accumulable(stage: dict, name: str) -> float:
    for acc in stage.get("Accumulables", []):
        if acc.get("Name") == name:
            return float(acc.get("Value") or 0)
    return 0.0


def _description(event: dict) -> str:
    return (event.get("Properties") or {}).get("spark.job.description") or "(no description)"


def profile(events: list[dict]) -> dict[str, dict]:
    """Per job description: the wall span of its jobs, its tasks' time and bytes, and its memory peaks."""
    job_step, stage_step, span = {}, {}, defaultdict(lambda: [float("inf"), 0.0])
    # Delta names its own jobs "Delta: <the caller's description>: <what it does>"; they count in the caller's step.
    ours = {_description(e) for e in events if e["Event"] == "SparkListenerJobStart"}
    ours = sorted((d for d in ours if not d.startswith("Delta: ")), key=len, reverse=True)
    steps: dict[str, dict] = defaultdict(lambda: defaultdict(float))
    for event in events:
        kind = event["Event"]
        if kind == "SparkListenerJobStart":
            step = _description(event)
            step = next((known for known in ours if step.startswith(f"Delta: {known}: ")), step)
            job_step[event["Job ID"]] = step
            stage_step.update({stage: step for stage in event["Stage IDs"]})
            span[step][0] = min(span[step][0], event["Submission Time"] / 1000)
            steps[step]["jobs"] += 1
        elif kind == "SparkListenerJobEnd":
            step = job_step[event["Job ID"]]
            span[step][1] = max(span[step][1], event["Completion Time"] / 1000)
        elif kind == "SparkListenerStageCompleted":
            info = event["Stage Info"]
            s = steps[stage_step.get(info["Stage ID"], "(no description)")]
            s["stages"] += 1
            s["task_seconds"] += _accumulable(info, "internal.metrics.executorRunTime") / 1000
            s["input_mb"] += _accumulable(info, "internal.metrics.input.bytesRead") / MB
            s["shuffle_write_mb"] += _accumulable(info, "internal.metrics.shuffle.write.bytesWritten") / MB
            s["spill_mb"] += _accumulable(info, "internal.metrics.diskBytesSpilled") / MB
        elif kind == "SparkListenerTaskEnd" and event.get("Task Metrics"):
            s = steps[stage_step.get(event["Stage ID"], "(no description)")]
            peak = event["Task Metrics"].get("Peak Execution Memory", 0) / MB
            s["peak_task_execution_mb"] = max(s["peak_task_execution_mb"], peak)
        elif kind == "SparkListenerStageExecutorMetrics":
            s = steps[stage_step.get(event["Stage ID"], "(no description)")]
            metrics = event["Executor Metrics"]
            s["peak_heap_gb"] = max(s["peak_heap_gb"], metrics.get("JVMHeapMemory", 0) / GB)
            s["peak_execution_gb"] = max(s["peak_execution_gb"], metrics.get("OnHeapExecutionMemory", 0) / GB)
    ordered = sorted(span, key=lambda step: span[step][0])
    return {
        step: {"seconds": round(span[step][1] - span[step][0], 1)}
        | {k: round(v, 2) if isinstance(v, float) else v for k, v in steps[step].items()}
        for step in ordered
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/segmentation-bench"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--name", default=None)
    parser.add_argument("--shuffle-partitions", type=int, default=0, help="spark.shuffle_partitions (0: 2 x cores)")
    args = parser.parse_args(argv)
    cfg = bench_config(args.work, args.size, build_parser().parse_args([]))
    _generate(cfg, args.size)
    log_dir = Path(tempfile.mkdtemp(prefix="feature-profile-"))  # removed once read: 100M writes tens of MB
    settings = bench_settings().model_copy(update={"shuffle_partitions": args.shuffle_partitions, "conf": {
        "spark.eventLog.enabled": "true", "spark.eventLog.dir": log_dir.as_uri(),
        "spark.eventLog.compress": "false", "spark.eventLog.logStageExecutorMetrics": "true",
        "spark.executor.metrics.pollingInterval": "100ms"}})  # fmt: skip
    started = time.perf_counter()
    spark = get_spark(settings)
    session_seconds = time.perf_counter() - started
    started = time.perf_counter()
    report = run_feature_pipeline(spark, cfg)
    pipeline_seconds = time.perf_counter() - started
    partitions = int(spark.conf.get("spark.sql.shuffle.partitions"))
    spark.stop()  # flushes the event log
    steps = profile(_events(log_dir))
    shutil.rmtree(log_dir)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "size": args.size,
        "shuffle_partitions": partitions,
        "customers": report.customers,
        "session_start_seconds": round(session_seconds, 1),
        "pipeline_seconds": round(pipeline_seconds, 1),
        "driver_only_seconds": round(pipeline_seconds - sum(s["seconds"] for s in steps.values()), 1),
        "steps": steps,
    }
    print(json.dumps(result, indent=1), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name or f'feature_profile_{args.size}'}.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
