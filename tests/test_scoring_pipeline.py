"""Scoring through the registry alias: MERGE into current and history tables, idempotent reruns,
schema checks, migration on a planted change of behaviour, drift flagged only when it should be."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from jobs import score_customers
from segmentation import tracking
from segmentation.errors import ModelMismatchError
from segmentation.feature_pipeline import features_for_scoring
from segmentation.io import write_table
from segmentation.scoring_pipeline import run_scoring

ONE_MONTH = dt.timedelta(days=30)


def rows(spark, path, *cols):
    return sorted(tuple(r) for r in spark.read.format("delta").load(str(path)).select(*cols).collect())


def version(spark, path):
    return DeltaTable.forPath(spark, str(path)).history(1).first()["version"]


@pytest.fixture(scope="module")
def scoring(spark, trained, tmp_path_factory):
    """A feature table holding the training snapshot plus a month-later one in which 40 customers
    copy the behaviour of a customer of another segment, 25 new customers appear and 30 vanish."""
    cfg, result = trained
    root = tmp_path_factory.mktemp("scoring")
    train_as_of = dt.date.fromisoformat(result.as_of)
    base = spark.read.format("delta").load(cfg.features.output.path).where(F.col("as_of") == F.lit(train_as_of))
    assigned = (
        spark.read.format("delta")
        .load(cfg.training.assignments.path)
        .where(F.col("model_version") == result.model_version)
        .select("customer_id", "segment")
    )
    ordered = [r.customer_id for r in assigned.orderBy("customer_id").collect()]
    segment = dict(assigned.rdd.map(tuple).collect())
    movers = ordered[:40]
    # Donor: the first customer (in id order) whose segment differs from the mover's.
    donors = {m: next(c for c in ordered[200:] if segment[c] != segment[m]) for m in movers}
    vanished = set(ordered[-30:])
    pairs = spark.createDataFrame(list(donors.items()), "mover STRING, donor STRING")
    copied = (
        base.join(pairs, base.customer_id == pairs.donor)
        .drop("customer_id", "donor")
        .withColumnRenamed("mover", "customer_id")
    )
    kept = base.where(~F.col("customer_id").isin([*vanished, *movers]))
    newcomers = base.where(F.col("customer_id").isin(ordered[300:325])).withColumn(
        "customer_id", F.concat(F.lit("new-"), "customer_id")
    )
    later = kept.unionByName(copied).unionByName(newcomers).withColumn("as_of", F.lit(train_as_of + ONE_MONTH))
    features = root / "features"
    snapshots = base.unionByName(later)
    write_table(snapshots, cfg.features.output.model_copy(update={"path": str(features)}), partition_by=["as_of"])
    sets = {
        "features.output.path": features,
        "scoring.current.path": root / "current",
        "scoring.history.path": root / "history",
    }
    from conftest import make_config

    scfg = make_config(Path(cfg.features.output.path).parent, **sets)
    return scfg, result, segment, donors, vanished, [f"new-{c}" for c in ordered[300:325]], train_as_of


@pytest.fixture(scope="module")
def first_scoring(spark, scoring):
    """The training snapshot scored once into the fixture's current and history tables; tests that
    score further work on copies of these (:func:`copied`), so each of them passes alone."""
    cfg, *_, train_as_of = scoring
    return run_scoring(spark, at(cfg, train_as_of))


def at(cfg, as_of):
    return cfg.model_copy(update={"scoring": cfg.scoring.model_copy(update={"as_of": as_of})})


def copied(cfg, tmp_path: Path):
    """``cfg`` writing to copies of the first scoring's current and history tables under ``tmp_path``."""
    update = {}
    for name in ("current", "history"):
        source = getattr(cfg.scoring, name)
        shutil.copytree(source.path, tmp_path / name)
        update[name] = source.model_copy(update={"path": str(tmp_path / name)})
    return cfg.model_copy(update={"scoring": cfg.scoring.model_copy(update=update)})


def test_scoring_the_training_snapshot_through_the_alias_reproduces_the_training_assignments(
    spark, scoring, first_scoring
):
    cfg, trained, segment, *_, train_as_of = scoring
    result = first_scoring
    assert result.model_version == trained.model_version and result.as_of == str(train_as_of)
    current = {r.customer_id: r for r in spark.read.format("delta").load(cfg.scoring.current.path).collect()}
    assert {c: r.segment for c, r in current.items()} == segment
    assert all(r.active and r.segment_since == train_as_of for r in current.values())
    assert {r.model_version for r in current.values()} == {trained.model_version}
    assert all(r.segment_name for r in current.values())
    history = rows(spark, cfg.scoring.history.path, "customer_id", "segment", "valid_from", "valid_to", "is_current")
    assert history == sorted((c, s, train_as_of, None, True) for c, s in segment.items())
    # The training snapshot cannot have drifted from itself.
    assert result.drift is not None and not result.drift.needs_retraining
    assert result.drift.segment_shift == pytest.approx(0.0, abs=1e-12)
    assert max(result.drift.psi.values()) < 0.01


def test_the_current_table_carries_the_training_runs_outlier_flag(spark, scoring, first_scoring):
    cfg, trained, *_ = scoring
    current = {r.customer_id: r.is_outlier for r in spark.read.format("delta").load(cfg.scoring.current.path).collect()}
    assignments = spark.read.format("delta").load(cfg.training.assignments.path)
    trained_flags = {r.customer_id: r.is_outlier for r in
                     assignments.where(f"model_version = '{trained.model_version}'").collect()}  # fmt: skip
    assert current == trained_flags and any(current.values())


def test_rerunning_the_same_snapshot_changes_no_row(spark, scoring, first_scoring, tmp_path):
    cfg, *_, train_as_of = scoring
    cfg = at(copied(cfg, tmp_path), train_as_of)
    before = (rows(spark, cfg.scoring.current.path, "*"), rows(spark, cfg.scoring.history.path, "*"))
    result = run_scoring(spark, cfg)
    after = (rows(spark, cfg.scoring.current.path, "*"), rows(spark, cfg.scoring.history.path, "*"))
    assert before == after
    assert result.stability == 1.0


def test_a_later_snapshot_merges_changed_new_and_vanished_customers(spark, scoring, first_scoring, tmp_path):
    cfg, _, segment, donors, vanished, newcomers, train_as_of = scoring
    cfg = copied(cfg, tmp_path)
    later = train_as_of + ONE_MONTH
    result = run_scoring(spark, cfg)  # newest snapshot by default
    assert result.as_of == str(later)
    current = {r.customer_id: r for r in spark.read.format("delta").load(cfg.scoring.current.path).collect()}
    assert len(current) == len(segment) + len(newcomers)
    for mover, donor in donors.items():
        row = current[mover]
        assert (row.segment, row.segment_since, row.active) == (segment[donor], later, True)
    for gone in vanished:
        row = current[gone]
        assert (row.segment, row.active, row.missing_since) == (segment[gone], False, later)
    assert all(current[n].active and current[n].segment_since == later for n in newcomers)
    unchanged = set(segment) - set(donors) - vanished
    assert all(current[c].segment_since == train_as_of and current[c].as_of == later for c in unchanged)

    history = spark.read.format("delta").load(cfg.scoring.history.path)
    mover = next(iter(donors))
    trail = sorted(history.where(F.col("customer_id") == mover).select("segment", "valid_from", "valid_to").collect())
    assert {tuple(r) for r in trail} == {(segment[mover], train_as_of, later), (segment[donors[mover]], later, None)}
    assert history.where("is_current").count() == len(segment) + len(newcomers)
    assert history.where("is_current").groupBy("customer_id").count().where("count > 1").count() == 0

    # Migration matrix: exactly the planted moves off the diagonal.
    matrix = result.migration
    expected_moves = {}
    for mover, donor in donors.items():
        expected_moves[(segment[mover], segment[donor])] = expected_moves.get((segment[mover], segment[donor]), 0) + 1
    off_diagonal = {(i, j): int(matrix.loc[i, j]) for i in matrix.index for j in matrix.columns if i != j}
    assert {key: n for key, n in off_diagonal.items() if n} == expected_moves
    in_both = len(segment) - len(vanished)
    assert result.stability == pytest.approx((in_both - len(donors)) / in_both)
    # 40 movers in 1,200 customers is no reason to retrain.
    assert not result.drift.needs_retraining


def test_the_current_table_carries_the_newest_clv_values_on_or_before_the_snapshot(spark, scoring, tmp_path):
    cfg, _, segment, _, vanished, newcomers, train_as_of = scoring
    later = train_as_of + ONE_MONTH
    ids = sorted(segment)
    schema = "customer_id STRING, p_alive DOUBLE, expected_purchases DOUBLE, expected_avg_value DOUBLE, clv DOUBLE"
    fitted = spark.createDataFrame([(c, i / len(ids), 1.0, 20.0, 20.0 + i) for i, c in enumerate(ids)], schema)
    future = spark.createDataFrame([(c, -1.0, -1.0, -1.0, -1.0) for c in ids], schema)  # after the snapshot
    clv_output = cfg.clv.output.model_copy(update={"path": str(tmp_path / "clv")})
    for as_of, values in ((train_as_of, fitted), (later + ONE_MONTH, future)):
        write_table(values.withColumns({"as_of": F.lit(as_of), "model_version": F.lit("1")}), clv_output, ["as_of"],
                    replace_where={"as_of": str(as_of)})  # fmt: skip
    current = cfg.scoring.current.model_copy(update={"path": str(tmp_path / "current")})
    history = cfg.scoring.history.model_copy(update={"path": str(tmp_path / "history")})
    cfg = cfg.model_copy(update={"scoring": cfg.scoring.model_copy(update={"current": current, "history": history}),
                                 "clv": cfg.clv.model_copy(update={"output": clv_output})})  # fmt: skip
    result = run_scoring(spark, cfg)  # the newest feature snapshot, a month after the CLV one
    assert (result.as_of, result.clv_as_of) == (str(later), str(train_as_of))
    rows = {r.customer_id: r for r in spark.read.format("delta").load(current.path).collect()}
    expected = {c: (train_as_of, i / len(ids), 20.0 + i) for i, c in enumerate(ids) if c not in vanished}
    assert {c: (r.clv_as_of, r.p_alive, r.clv) for c, r in rows.items() if c not in newcomers} == expected
    assert all(rows[c].p_alive is None and rows[c].clv_as_of is None for c in newcomers)  # no CLV row yet
    assert tracking.run_tags(result.run_id)["clv_as_of"] == str(train_as_of)


def test_a_shifted_population_is_flagged_for_retraining(spark, scoring, tmp_path):
    cfg, *_, train_as_of = scoring
    base = spark.read.format("delta").load(cfg.features.output.path).where(F.col("as_of") == F.lit(train_as_of))
    # Everyone went quiet for six months: recency grows, recent spend vanishes.
    shifted = (
        base.withColumn("recency_days", F.col("recency_days") + 180)
        .withColumn("spend_recent", F.lit(0.0))
        .withColumn("as_of", F.lit(train_as_of + 6 * ONE_MONTH))
    )
    later = str(train_as_of + 6 * ONE_MONTH)
    features = cfg.features.output.model_copy(update={"path": str(tmp_path / "features")})
    shutil.copytree(cfg.features.output.path, features.path)  # the shared table stays as the other tests need it
    write_table(shifted, features, partition_by=["as_of"], replace_where={"as_of": later})
    current = cfg.scoring.current.model_copy(update={"path": str(tmp_path / "current")})
    history = cfg.scoring.history.model_copy(update={"path": str(tmp_path / "history")})
    cfg = cfg.model_copy(update={"scoring": cfg.scoring.model_copy(update={"current": current, "history": history}),
                                 "features": cfg.features.model_copy(update={"output": features})})  # fmt: skip
    result = run_scoring(spark, cfg)
    assert result.drift.needs_retraining
    assert {"recency_days", "spend_recent"} <= set(result.drift.drifted_features)


def test_a_model_trained_on_other_features_stops_before_any_write(spark, scoring, tmp_path):
    cfg, *_, train_as_of = scoring
    base = spark.read.format("delta").load(cfg.features.output.path).where(F.col("as_of") == F.lit(train_as_of))
    features = cfg.features.output.model_copy(update={"path": str(tmp_path / "features")})
    write_table(base.drop("net_spend").withColumn("trend", F.lit("up")), features)
    current = cfg.scoring.current.model_copy(update={"path": str(tmp_path / "current")})
    history = cfg.scoring.history.model_copy(update={"path": str(tmp_path / "history")})
    bad = cfg.model_copy(
        update={
            "features": cfg.features.model_copy(update={"output": features}),
            "scoring": cfg.scoring.model_copy(update={"current": current, "history": history}),
        }
    )
    with pytest.raises(ModelMismatchError, match=r"missing column\(s\) \['net_spend'\].*non-numeric column\(s\) "
                                                 r"\['trend \(string\)'\]"):  # fmt: skip
        run_scoring(spark, bad)
    assert not (tmp_path / "current").exists() and not (tmp_path / "history").exists()


def test_a_tampered_model_is_refused(spark, scoring, tmp_path):
    cfg, trained, *_ = scoring
    from mlflow.tracking import MlflowClient

    source = MlflowClient().get_model_version(cfg.mlflow.registered_model, trained.model_version).source
    location = Path(source.removeprefix("file://"))
    target = next((location / "sparkml" / "metadata").glob("part-*"))
    original = target.read_bytes()
    try:
        target.write_bytes(original + b" ")  # still loads; only the checksum can tell
        with pytest.raises(ModelMismatchError, match="sha256"):
            run_scoring(spark, cfg)
    finally:
        target.write_bytes(original)


def test_the_job_exits_2_with_one_line_when_no_model_is_registered(tmp_path, capsys, scoring):
    cfg, *_ = scoring
    code = score_customers.main(
        [
            "--config", str(Path(__file__).resolve().parent.parent / "conf" / "base.yaml"),
            "--set", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'empty.db'}",
            "--set", f"mlflow.artifact_location={tmp_path / 'artifacts'}",
            "--set", f"features.output.path={cfg.features.output.path}",
            "--set", f"scoring.current.path={tmp_path / 'current'}",
        ]
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("score_customers: error: registered model 'customer-segments@champion' not found")
    assert not (tmp_path / "current").exists()


def test_scoring_can_compute_the_snapshot_with_the_feature_job_first(spark, scoring, tmp_path):
    cfg, trained, segment, *_, train_as_of = scoring
    sets = {
        "features.output.path": tmp_path / "features",
        "features.quarantine.path": tmp_path / "quarantine",
        "features.quality.path": tmp_path / "quality",
        "scoring.compute_features": "true",
        "scoring.as_of": train_as_of,
        "scoring.current.path": tmp_path / "current",
        "scoring.history.path": tmp_path / "history",
    }
    from conftest import make_config

    cfg = features_for_scoring(spark, make_config(Path(trained_root(cfg)), **sets))
    result = run_scoring(spark, cfg)
    assert result.as_of == str(train_as_of)
    current = {r.customer_id: r.segment for r in spark.read.format("delta").load(str(tmp_path / "current")).collect()}
    assert current == segment  # the same window gives the same features, so the same segments


def trained_root(cfg) -> Path:
    """The trained fixture's folder (its transactions are under tx/)."""
    return Path(cfg.input.transactions.path).parent
