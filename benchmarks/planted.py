"""Does the training job's choice find the planted segments? 4, 7 and 10 personas, balanced or not, apart or close.

    python benchmarks/planted.py [--transactions 200000] [--cases all] [--set training.restarts=3]
                                 [--name planted] [--work /tmp/segmentation-planted] [--out benchmarks/results]

For every case the generator plants a persona set (``generator.personas``: which personas,
their shares, how far apart), and the training job's own stages run on it as they do in
``run_training``: the feature job, ``prepare``, ``run_sweep`` and ``finalise`` (the rule's
choice, the champion refitted on every customer, ``ground_truth_ari`` against the planted
personas). Nothing is logged to MLflow. The table says, per case, the planted count, the
chosen algorithm and k, the champion's ARI and stability, each algorithm's chosen k with its
ARI on the sweep's rows, and the best ARI any candidate of the sweep reached (what a perfect
rule could have picked), and every candidate's metrics, so other rules can be scored on the
same sweeps. Results: ``<out>/<name>.json`` and ``<name>.md``.

Balanced cases give every persona the same share; imbalanced ones keep the catalogue's
proportions with one persona at 2% of customers. "close" pulls every persona halfway toward
the average one (``separation`` 0.5).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation.config import AppConfig, PersonaSetConfig, SparkConfig, default_config_files, load_config
from segmentation.evaluation import adjusted_rand_index
from segmentation.feature_pipeline import run_feature_pipeline
from segmentation.generator import generate_ground_truth, generate_transactions
from segmentation.io import read_table, write_table
from segmentation.snapshots import persisting, read_snapshot
from segmentation.spark import get_spark
from segmentation.sweep import run_sweep
from segmentation.training_stages import finalise, prepare

SETS = {
    4: ("champions", "loyal", "hibernating", "one_time"),
    7: ("champions", "loyal", "big_spenders", "new", "at_risk", "hibernating", "one_time"),
    10: ("champions", "loyal", "big_spenders", "new", "at_risk", "hibernating", "one_time", "returners",
         "bulk_buyers", "app_regulars"),
}  # fmt: skip
RARE = {4: "champions", 7: "big_spenders", 10: "bulk_buyers"}  # the persona at 2% in the imbalanced cases
CASES = [f"{n}-{b}-{a}" for n in SETS for b in ("balanced", "imbalanced") for a in ("apart", "close")]


def persona_set(case: str) -> PersonaSetConfig:
    """The ``generator.personas`` of a case named ``<count>-<balanced|imbalanced>-<apart|close>``."""
    count, balance, apart = case.split("-")
    names = SETS[int(count)]
    shares = {n: 1 / len(names) for n in names} if balance == "balanced" else {RARE[int(count)]: 0.02}
    return PersonaSetConfig(names=names, shares=shares, separation=1.0 if apart == "apart" else 0.5)


def case_config(
    files: list[Path], overrides: list[str], work: Path, personas: PersonaSetConfig, n_transactions: int
) -> AppConfig:
    """The configuration of ``files`` and ``overrides`` with the generator, the feature job and the
    ground truth pointed at ``work``, and k up to at least the planted count plus two."""
    base = load_config(files, overrides)
    sets = {
        "generator.n_transactions": n_transactions, "generator.n_customers": 0,
        "generator.transactions.path": work / "tx", "generator.transactions.format": "parquet",
        "generator.ground_truth.path": work / "truth", "input.transactions.path": work / "tx",
        "input.transactions.format": "parquet", "input.customers.enabled": "false",
        "features.output.path": work / "features", "features.quarantine.path": work / "quarantine",
        "features.quality.path": work / "quality", "training.ground_truth.enabled": "true",
        "training.ground_truth.path": work / "truth",
        "training.k_max": max(base.training.k_max, len(personas.names) + 2),
    }  # fmt: skip
    cfg = load_config(files, [*overrides, *(f"{k}={v}" for k, v in sets.items())])
    return cfg.model_copy(update={"generator": cfg.generator.model_copy(update={"personas": personas})})


def _ari_on(sample: DataFrame, truth: DataFrame, model) -> float:
    # the champion's model predicts into "cluster" once finalise has used it
    predicted = model.transform(sample).select("customer_id", F.col(model.getPredictionCol()).alias("found"))
    return adjusted_rand_index(predicted.join(truth, "customer_id"), "found", "planted")


def run_case(spark: SparkSession, cfg: AppConfig) -> dict:
    """Generate, build the features, sweep, choose and refit as the training job does; the result row."""
    started = time.perf_counter()
    gen = cfg.generator
    write_table(generate_transactions(spark, gen), gen.transactions)
    write_table(generate_ground_truth(spark, gen), gen.ground_truth)
    run_feature_pipeline(spark, cfg)
    snapshot, as_of = read_snapshot(spark, cfg.features.output, None)
    truth = read_table(spark, gen.ground_truth, columns=["customer_id", "segment"]).withColumnRenamed(
        "segment", "planted"
    )
    with persisting() as persist:
        prepared = prepare(snapshot, as_of, cfg.training, persist)
        sweep = run_sweep(cfg.training, prepared.sample)
        final = finalise(spark, cfg, prepared, sweep, None, persist)
        aris = {c: _ari_on(prepared.sample, truth, sweep.models[c]) for c in sweep.candidates}
    best = max(aris, key=aris.get)
    by_algorithm = {a: {"k": k, "ari": round(aris[(a, k)], 3)} for a, k in final.choice.chosen_k.items()}
    keys = ("silhouette", "wssse", "bic", "davies_bouldin", "calinski_harabasz", "min_cluster_share", "stability_ari")
    candidates = [{"algorithm": a, "k": k, **{key: sweep.records[(a, k)].get(key) for key in keys},
                   "ari": round(aris[(a, k)], 4)} for a, k in sweep.candidates]  # fmt: skip
    record = sweep.records[(final.choice.champion, final.choice.champion_k)]
    return {
        "planted_k": len(gen.personas.names),
        "customers": prepared.n_customers,
        "swept_customers": prepared.n_sample,
        "algorithm": final.choice.champion,
        "k": final.choice.champion_k,
        "ari": round(final.metrics["ground_truth_ari"], 3),
        "silhouette": round(final.metrics["silhouette"], 3),
        "stability": None if record["stability_ari"] is None else round(record["stability_ari"], 3),
        "by_algorithm": by_algorithm,
        "best_candidate": {"algorithm": best[0], "k": best[1], "ari": round(aris[best], 3)},
        "seconds": round(time.perf_counter() - started, 1),
        "candidates": candidates,
    }


def markdown(result: dict) -> str:
    lines = [
        f"Planted-persona benchmark, {result['date']}: {result['transactions']:,} transactions per case, "
        f"overrides {result['overrides'] or 'none'}.",
        "",
        "| case | planted k | customers | champion | k | within ±1 | ARI | stability | per algorithm: k (ARI) "
        "| best candidate: k (ARI) | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case, r in result["cases"].items():
        per = ", ".join(f"{a} {v['k']} ({v['ari']})" for a, v in r["by_algorithm"].items())
        best = r["best_candidate"]
        lines.append(
            f"| {case} | {r['planted_k']} | {r['customers']:,} | {r['algorithm']} | {r['k']} "
            f"| {'yes' if abs(r['k'] - r['planted_k']) <= 1 else '**no**'} | {r['ari']} | {r['stability']} | {per} "
            f"| {best['algorithm']} {best['k']} ({best['ari']}) | {r['seconds']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=200_000)
    parser.add_argument("--cases", default="all", help=f"comma-separated, from {CASES}")
    parser.add_argument("--set", action="append", default=[], help="a config override, as the jobs take it")
    parser.add_argument("--name", default="planted", help="the results' file name, without extension")
    parser.add_argument("--resume", action="store_true", help="keep the cases <name>.json already holds")
    parser.add_argument("--work", type=Path, default=Path("/tmp/segmentation-planted"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    cases = CASES if args.cases == "all" else args.cases.split(",")
    files = default_config_files("local")
    spark = get_spark(SparkConfig(master="local[*]", driver_memory="6g", ui_enabled=False, log_level="ERROR"))
    result = {"date": time.strftime("%Y-%m-%d"), "transactions": args.transactions, "overrides": args.set,
              "cases": {}}  # fmt: skip
    earlier = args.out / f"{args.name}.json"
    if args.resume and earlier.exists():
        kept = json.loads(earlier.read_text())
        if (kept["transactions"], kept["overrides"]) != (args.transactions, args.set):
            raise SystemExit(f"{earlier} was run with other settings; run without --resume")
        result = kept
    for case in (c for c in cases if c not in result["cases"]):
        work = args.work / case
        shutil.rmtree(work, ignore_errors=True)
        cfg = case_config(files, args.set, work, persona_set(case), args.transactions)
        result["cases"][case] = run_case(spark, cfg)
        print(case, json.dumps(result["cases"][case]), flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=1))
        (args.out / f"{args.name}.md").write_text(markdown(result))
        shutil.rmtree(work, ignore_errors=True)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
