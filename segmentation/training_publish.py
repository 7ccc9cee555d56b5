"""The training run's one publish step: every MLflow call and every Delta write of a run.

Order, chosen so that nothing points at what does not exist yet: the run's params and
metrics, one child run per candidate, the selection, the segment descriptions and the
comparison with the champion, the charts; then the model is logged and registered (and
aliased when ``training.promote`` says so); last the assignments, the profile table and
the HTML report are written, keyed by (as_of, model version), so a rerun replaces exactly
its own rows and a challenger never overwrites the champion's.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation import plots, tracking
from segmentation.config import AppConfig
from segmentation.density import OUTLIER_COL
from segmentation.hierarchy import SUB_SEGMENT_COL
from segmentation.identity import IdentityMapping
from segmentation.io import write_table
from segmentation.models import param_record
from segmentation.profiles import SegmentDescription
from segmentation.report import ChoicePanel, SegmentReport, render_report
from segmentation.selection import Choice
from segmentation.training_stages import CLUSTER_COL, SEGMENT_COL, Laps, Trained

__all__ = ["TrainingResult", "publish"]

log = logging.getLogger(__name__)


@dataclass
class TrainingResult:
    run_id: str
    champion: str
    k: int
    model_uri: str
    model_version: str | None
    as_of: str
    records: list[dict[str, Any]] = field(default_factory=list)
    choice: Choice | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    identity: IdentityMapping | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def publish(spark: SparkSession, cfg: AppConfig, trained: Trained, run_id: str, run_tags: dict[str, Any],
            laps: Laps) -> TrainingResult:  # fmt: skip
    """Log the run to MLflow, register the model and write the run's tables and report."""
    final, description = trained.final, trained.description
    identity = final.identity.with_names(description.names)  # scoring reads the names from here
    laps.begin("charts")
    _log_sweep(cfg, trained, run_tags)
    _log_description(cfg, description, identity)
    _log_tree(trained)
    _log_comparison(trained)
    _log_charts(trained, cfg.training.seed)
    laps.begin("log_model")
    snapshot = trained.prepared.snapshot
    example = snapshot.select(*trained.prepared.feature_cols).limit(5).toPandas()
    model_uri = tracking.log_spark_model(final.model, example, final.model.transform(snapshot.limit(5))
                                         .select("prediction").toPandas())  # fmt: skip
    laps.begin("register")
    version = _register(cfg, model_uri, first=trained.previous is None)
    laps.begin("write")
    key = str(version or run_id)
    as_of = trained.prepared.as_of
    assignments = _assignments(final.assigned, final.choice.champion, as_of, key)
    # mergeSchema: is_outlier and sub_segment appear in a table written before their options were turned on.
    write_table(assignments, cfg.training.assignments, partition_by=["as_of"],
                replace_where={"as_of": as_of, "model_version": key}, merge_schema=True)  # fmt: skip
    label = f"{cfg.mlflow.registered_model} v{version}" if version else f"run {run_id}"
    panel = ChoicePanel(pd.DataFrame(trained.sweep.ordered_records()), final.choice.rationale)
    _write_profiles(spark, cfg, description, as_of, key, label, panel)
    laps.end()
    tracking.log_metrics({f"seconds_{stage}": value for stage, value in laps.seconds.items()})
    return TrainingResult(run_id=run_id, champion=final.choice.champion, k=final.choice.champion_k,
                          model_uri=model_uri, model_version=version, as_of=as_of,
                          records=trained.sweep.ordered_records(), choice=final.choice, metrics=final.metrics,
                          identity=identity, seconds=laps.seconds)  # fmt: skip


def _register(cfg: AppConfig, model_uri: str, first: bool) -> str | None:
    """Register the logged model (``training.register_model``) and move the alias where ``training.promote``
    says: ``always``, or ``auto`` when there is no champion yet."""
    tcfg = cfg.training
    promote = tcfg.promote == "always" or (tcfg.promote == "auto" and first)
    version = (
        tracking.register_model(model_uri, cfg.mlflow.registered_model, cfg.mlflow.alias, make_champion=promote)
        if tcfg.register_model
        else None
    )
    tracking.set_tags({"promoted": str(bool(version) and promote).lower()})
    return version


def _log_sweep(cfg: AppConfig, trained: Trained, run_tags: dict[str, Any]) -> None:
    """The run's params and data-quality counts, one child run per candidate, and the choice."""
    tcfg, prepared, sweep, final = cfg.training, trained.prepared, trained.sweep, trained.final
    tracking.log_params(
        {"as_of": prepared.as_of, "n_customers": prepared.n_customers, "sample_rows": prepared.n_sample,
         "n_features": len(prepared.feature_cols), "feature_columns": ",".join(prepared.feature_cols)[:5000],
         "algorithms": ",".join(tcfg.algorithms), "k_min": tcfg.k_min, "k_max": tcfg.k_max, "seed": tcfg.seed,
         **{f"selection_{k}": v for k, v in tcfg.selection.model_dump().items()}}
    )  # fmt: skip
    if trained.quality:
        tracking.log_metrics(trained.quality)
        tracking.set_tags({k: int(v) for k, v in trained.quality.items() if k != "dq_quarantined_share"})
    for algorithm, k in sweep.candidates:
        record, started = sweep.records[(algorithm, k)], sweep.started[(algorithm, k)]
        tracking.child_run(
            f"{algorithm}-k{k}",
            params={**param_record(algorithm, k, tcfg, tcfg.seed), "as_of": prepared.as_of,
                    "sample_rows": prepared.n_sample},
            # Not measured (stability_scope: shortlist) is left out, not logged as a number.
            metrics={m: v for m, v in record.items() if m not in ("algorithm", "k") and v is not None},
            tags={**run_tags, "algorithm": algorithm, "k": k, "role": "candidate"},
            # The UI's Duration: the fit and the metrics, which ran back to back; the
            # stability refits ran after every candidate's fit (stability_seconds).
            started=started,
            ended=started + record["fit_seconds"] + record["metrics_seconds"],
        )  # fmt: skip
    tracking.set_tags({"algorithm": final.choice.champion, "k": final.choice.champion_k, "role": "parent"})
    # The champion's quality metrics carry its prefix; the ground truth's and the outlier flag's do not.
    own = ("ground_truth_", "outlier_", "density_")
    tracking.log_metrics({m if m.startswith(own) else f"champion_{m}": v for m, v in final.metrics.items()
                          if not math.isnan(v)})  # fmt: skip
    tracking.log_metrics({"refit_rows": float(final.refit_rows), "outliers_left_out": float(prepared.n_left_out)})
    if final.density is not None:
        tracking.log_dict(final.density.to_dict(), tracking.DENSITY_ARTIFACT)
    tracking.log_dict(final.choice.rationale, tracking.RATIONALE_ARTIFACT)
    tracking.log_table(pd.DataFrame(sweep.ordered_records()), tracking.SWEEP_ARTIFACT)


def _log_description(cfg: AppConfig, description: SegmentDescription, identity: IdentityMapping) -> None:
    tracking.log_dict(identity.as_dict(), tracking.IDENTITY_ARTIFACT)
    tracking.log_table(description.profile, tracking.PROFILE_ARTIFACT)
    tracking.log_dict(
        {"fidelity": description.fidelity, "depth": cfg.profiles.rule_depth, "rules": description.rules,
         "separating_features": description.separating},
        tracking.RULES_ARTIFACT,
    )  # fmt: skip
    tracking.log_metrics(
        {
            "rule_fidelity": description.fidelity,
            "identity_kept": float(sum(d["decision"] == "kept" for d in identity.decisions)),
            "identity_new": float(len(identity.new_ids)),
            "identity_retired": float(len(identity.retired_ids)),
        }
    )


def _log_tree(trained: Trained) -> None:
    """With two levels: the sub-segments' identity (named by their phrases, which a retrain keeps),
    each broad segment's split and the named tree, where the scoring job and the next retrain read them."""
    final, tree = trained.final, trained.description.tree
    if final.sub_identity is None or tree is None:
        return
    phrases = {int(r[SUB_SEGMENT_COL]): r["phrase"] for _, r in tree.iterrows()}
    rows = tree.drop(columns="distinct").to_dict(orient="records")
    tracking.log_dict({"identity": final.sub_identity.with_names(phrases).as_dict(),
                       "splits": [s.as_dict() for s in final.splits or []], "tree": rows},
                      tracking.HIERARCHY_ARTIFACT)  # fmt: skip
    tracking.log_table(tree.drop(columns="distinct"), "profiles/segment_tree.csv")


def _log_comparison(trained: Trained) -> None:
    comparison = trained.comparison
    if comparison is None:
        return
    if not comparison.migration.empty:
        tracking.log_table(comparison.migration.reset_index(), "migration/migration_matrix.csv")
        tracking.log_figure(plots.migration_heatmap(comparison.migration), "migration/migration_matrix.png")
    if comparison.drift is not None:
        tracking.log_dict(comparison.drift, "monitoring/drift.json")
    tracking.log_metrics(comparison.metrics)
    tracking.set_tags({"previous_champion_version": comparison.previous_version})


def _log_charts(trained: Trained, seed: int) -> None:
    for name, figure in plots.sweep_figures(pd.DataFrame(trained.sweep.ordered_records())).items():
        tracking.log_figure(figure, f"charts/{name}.png")
    tracking.log_figure(plots.pca_scatter(trained.final.assigned, "features", "prediction", seed),
                        "charts/pca_scatter.png")  # fmt: skip


def _write_profiles(
    spark: SparkSession,
    cfg: AppConfig,
    description: SegmentDescription,
    as_of: str,
    model_version: str,
    model_label: str,
    choice: ChoicePanel | None = None,
) -> None:
    """The profile Delta table (keyed by as_of and model_version) and the HTML report, to disk and MLflow."""
    pcfg = cfg.profiles
    table = description.profile.assign(model_version=model_version)
    frame = spark.createDataFrame(table).withColumn("as_of", F.lit(as_of).cast("date"))
    # mergeSchema: the CLV columns appear once the CLV job has scored a snapshot.
    write_table(frame, pcfg.output, partition_by=["as_of"], replace_where={"as_of": as_of, "model_version":
                model_version}, merge_schema=True)  # fmt: skip
    html = render_report(
        SegmentReport(
            title="Customer segments",
            model=model_label,
            as_of=as_of,
            customers=int(description.profile["customers"].sum()),
            fidelity=description.fidelity,
            profile=description.profile,
            names=description.names,
            descriptions=dict(zip(description.profile["segment"].astype(int), description.profile["description"],
                                  strict=True)),
            rules=description.rules,
            separating=description.separating,
            recommendations=description.recommendations,
            heatmap_features=description.model_features,
            choice=choice,
            outliers=description.outliers,
            tree=description.tree,
        ),
        horizon_days=pcfg.value_horizon_days,
    )  # fmt: skip
    tracking.log_text(html, tracking.REPORT_ARTIFACT)
    path = Path(pcfg.report_dir) / f"segment_report_{as_of}_{model_version}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)  # atomic: a reader never sees half a report
    log.info("segment report: %s", path.resolve())


def _assignments(assigned: DataFrame, algorithm: str, as_of: str, model_version: str) -> DataFrame:
    """customer_id, segment, cluster, membership probability (GMM only, else null), is_outlier (when the
    run flags outliers), sub_segment (with two levels), model_version, as_of."""
    probability = (
        F.array_max(vector_to_array(F.col("probability")))
        if algorithm == "gaussian_mixture"
        else F.lit(None).cast("double")
    )
    return assigned.select(
        "customer_id",
        F.col("prediction").cast("int").alias(SEGMENT_COL),
        F.col(CLUSTER_COL).cast("int").alias(CLUSTER_COL),
        probability.alias("probability"),
        *([OUTLIER_COL] if OUTLIER_COL in assigned.columns else []),
        *([F.col(SUB_SEGMENT_COL).cast("int")] if SUB_SEGMENT_COL in assigned.columns else []),
        F.lit(str(model_version)).alias("model_version"),
        F.lit(as_of).cast("date").alias("as_of"),
    )
