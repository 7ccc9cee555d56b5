"""Where the feature job (and with ``--training`` the training job) spends its time and memory,
stage by stage, from Spark's own event log.

    python benchmarks/stage_profile.py [--size 10000000] [--training] [--work /tmp/segmentation-bench]
        [--out benchmarks/results] [--name feature_profile_<size> | training_profile_<size>]
        [--shuffle-partitions P]

Runs the feature pipeline on the benchmark's transactions for ``--size`` (``run.py``'s files,
generated first when missing, as ``features_peer.py`` does), then with ``--training`` the training
job on the snapshot it wrote (``run.py``'s training config), in a session that writes Spark's event
log with the executors' memory metrics per stage (``spark.eventLog.logStageExecutorMetrics``,
polled every 100 ms). The jobs name their Spark jobs by step (``segmentation.spark.job_descriptions``:
"features: label and count the rows", "features: write the features", ..., "training: sweep",
"training: refit", ...), so each job, stage and memory peak of the log falls in one step. Writes
``<name>.json`` with, per step:

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
extension) and each job's wall time; a job's ``seconds`` less its steps' sum is driver-only
work (planning, Delta's log, MLflow, the steps' Python).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from features_peer import _generate
from run import bench_config, bench_settings, build_parser, forget_model

from segmentation.feature_pipeline import run_feature_pipeline
from segmentation.spark import get_spark
from segmentation.training_pipeline import run_training

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
    ours = sorted((d for d in ours if not d.startswith("Delta: ") and d != "(no description)"), key=len, reverse=True)
    steps: dict[str, dict] = defaultdict(lambda: defaultdict(float))
    for event in events:
        kind = event["Event"]
        if kind == "SparkListenerJobStart":
            step = _description(event)
            bare = step.removeprefix("Delta: ").removeprefix("Delta: ")  # Delta prefixes its nested jobs twice
            step = next((known for known in ours if bare.startswith(f"{known}: ")), step)
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
    parser.add_argument("--shuffle-partitions", type=int, default=0, help="spark.shuffle_partitions (0: the default)")
    parser.add_argument("--training", action="store_true", help="also profile the training job")
    parser.add_argument(
        "--fit-timeout-seconds",
        type=int,
        default=900,
        help="training.fit_timeout_seconds: a fit that loops in LAPACK (docs/training.md) is retried after this",
    )
    args = parser.parse_args(argv)
    cfg = bench_config(
        args.work, args.size, build_parser().parse_args([]), {"training.fit_timeout_seconds": args.fit_timeout_seconds}
    )
    cfg = cfg.model_copy(update={"spark": cfg.spark.model_copy(update={"shuffle_partitions": args.shuffle_partitions})})
    _generate(cfg, args.size)
    log_dir = Path(tempfile.mkdtemp(prefix="stage-profile-"))  # removed once read: 100M writes tens of MB
    settings = bench_settings().model_copy(update={"shuffle_partitions": args.shuffle_partitions, "conf": {
        "spark.eventLog.enabled": "true", "spark.eventLog.dir": log_dir.as_uri(),
        "spark.eventLog.compress": "false", "spark.eventLog.logStageExecutorMetrics": "true",
        "spark.executor.metrics.pollingInterval": "100ms"}})  # fmt: skip
    started = time.perf_counter()
    spark = get_spark(settings)
    session_seconds = time.perf_counter() - started
    started = time.perf_counter()
    partitions = _partitions_inside(spark, lambda: run_feature_pipeline(spark, cfg))
    report = partitions.pop("result")
    pipeline_seconds = time.perf_counter() - started
    training_seconds = None
    if args.training:
        forget_model(cfg)
        started = time.perf_counter()
        training = run_training(spark, cfg)
        training_seconds = {"total": round(time.perf_counter() - started, 1)} | {
            stage: round(seconds, 1) for stage, seconds in training.seconds.items()}  # fmt: skip
    spark.stop()  # flushes the event log
    steps = profile(_events(log_dir))
    shutil.rmtree(log_dir)
    features = sum(s["seconds"] for name, s in steps.items() if name.startswith("features"))
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "size": args.size,
        "shuffle_partitions": partitions,
        "customers": report.customers,
        "session_start_seconds": round(session_seconds, 1),
        "pipeline_seconds": round(pipeline_seconds, 1),
        "driver_only_seconds": round(pipeline_seconds - features, 1),
        "training_seconds": training_seconds,
        "steps": steps,
    }
    print(json.dumps(result, indent=1), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    name = args.name or f"{'training' if args.training else 'feature'}_profile_{args.size}"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=1))
    return 0


def _partitions_inside(spark, job) -> dict:
    """``job()``'s result, with the shuffle partitions of the session and those the feature job sized
    to its input (``segmentation.spark.size_shuffles_to_rows`` logs them when it raises the count)."""
    said = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())
    logger = logging.getLogger("segmentation.spark")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    session = int(spark.conf.get("spark.sql.shuffle.partitions"))
    try:
        result = job()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    raised = [int(m.group(1)) for m in map(re.compile(r"input rows: (\d+) shuffle partitions").search, said) if m]
    return {"session": session, "feature_job": raised[-1] if raised else session, "result": result}


if __name__ == "__main__":
    sys.exit(main())
