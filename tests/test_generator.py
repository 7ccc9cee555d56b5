from __future__ import annotations

import pytest
from pyspark.sql import functions as F
from pyspark.sql.window import Window
from pyspark.testing import assertDataFrameEqual

from segmentation.config import GeneratorConfig, PersonaSetConfig
from segmentation.errors import ConfigError
from segmentation.generator import (
    CATALOGUE,
    PERSONAS,
    customer_count,
    generate,
    generate_ground_truth,
    generate_transactions,
    planted_personas,
)

CFG = GeneratorConfig(n_transactions=40_000, n_customers=2_000, seed=7, duplicate_share=0.002)


@pytest.fixture(scope="module")
def tables(spark):
    out = generate(spark, CFG)
    tx = out["transactions"].cache()
    yield {**out, "transactions": tx}
    tx.unpersist()


@pytest.fixture(scope="module")
def per_customer(tables):
    tx, gt = tables["transactions"], tables["ground_truth"]
    end = F.lit(CFG.end_date)
    return (
        tx.join(gt, "customer_id", how="inner")
        .groupBy("customer_id", "segment")
        .agg(
            F.datediff(end, F.to_date(F.max("timestamp"))).alias("recency"),
            F.datediff(end, F.to_date(F.min("timestamp"))).alias("tenure"),
            F.countDistinct(F.to_date("timestamp")).alias("days"),
            F.count("*").alias("n"),
            F.expr("percentile_approx(abs(amount), 0.5)").alias("median_amount"),
        )
        .toPandas()
        .groupby("segment")
        .median(numeric_only=True)
    )


def test_row_counts_are_exact(tables):
    assert tables["transactions"].count() == CFG.n_transactions
    assert tables["customers"].count() == CFG.n_customers
    assert tables["ground_truth"].count() == CFG.n_customers
    assert customer_count(GeneratorConfig(n_transactions=1_000_000)) == 50_000


def test_schema(tables):
    assert [f.name for f in tables["transactions"].schema] == [
        "transaction_id", "customer_id", "timestamp", "amount", "quantity", "category", "channel",
    ]  # fmt: skip
    assert dict(tables["transactions"].dtypes)["timestamp"] == "timestamp"
    assert [f.name for f in tables["ground_truth"].schema] == ["customer_id", "segment", "segment_id"]


def test_same_seed_same_rows_whatever_the_partitioning(spark, tables):
    again = generate_transactions(spark, CFG.model_copy(update={"partitions": 3}))
    assertDataFrameEqual(again, tables["transactions"])


def test_other_seed_other_rows(spark, tables):
    other = generate_transactions(spark, CFG.model_copy(update={"seed": 8}))
    assert other.exceptAll(tables["transactions"]).count() > CFG.n_transactions * 0.99


def test_every_persona_is_planted_in_its_share(tables):
    shares = {
        r.segment: r["count"] / CFG.n_customers for r in tables["ground_truth"].groupBy("segment").count().collect()
    }
    assert set(shares) == {p.name for p in PERSONAS}
    assert len(PERSONAS) >= 6
    for persona in PERSONAS:
        assert shares[persona.name] == pytest.approx(persona.share, abs=0.01)


def test_personas_differ_in_recency_frequency_and_spend(per_customer):
    seg = per_customer
    # recency: at risk and hibernating are silent for months, the others are recent
    assert seg.loc["at_risk", "recency"] >= 120
    assert seg.loc["hibernating", "recency"] >= 250
    for active in ("champions", "loyal", "new"):
        assert seg.loc[active, "recency"] < 60
    # frequency: champions buy most, one-time buyers buy on a single day
    assert seg.loc["champions", "n"] > seg.loc["loyal", "n"] > seg.loc["hibernating", "n"]
    assert seg.loc["one_time", "days"] == 1
    # spend and tenure
    assert seg.loc["big_spenders", "median_amount"] > 3 * seg.loc["champions", "median_amount"]
    assert seg.loc["champions", "median_amount"] > seg.loc["loyal", "median_amount"]
    assert seg.loc["new", "tenure"] <= 60


def test_category_mix_differs_by_persona(tables):
    joined = tables["transactions"].join(tables["ground_truth"], "customer_id", how="inner")
    top = {
        r.segment: r.category
        for r in joined.groupBy("segment", "category")
        .count()
        .withColumn("rank", F.row_number().over(Window.partitionBy("segment").orderBy(F.desc("count"))))
        .where("rank = 1")
        .collect()
    }
    assert top["loyal"] == "grocery"
    assert top["big_spenders"] == "electronics"
    assert top["hibernating"] == "books"


def test_realistic_mess_is_present(tables):
    tx = tables["transactions"]
    dupes = tx.groupBy("transaction_id").count().where("count > 1").count()
    assert dupes > 0
    # duplicates are exact copies of the whole row
    assert tx.distinct().count() == tx.select("transaction_id").distinct().count()
    returns = tx.where("amount < 0").count() / CFG.n_transactions
    assert 0.01 < returns < 0.15
    assert tx.where("amount < 0 AND quantity >= 0").count() == 0
    # seasonality: the late-November peak month beats mid-year
    months = {r.m: r["count"] for r in tx.groupBy(F.month("timestamp").alias("m")).count().collect()}
    assert months[11] > 1.5 * months[6]
    # log-normal spend: long right tail
    mean, median = tx.where("amount > 0").select(F.mean("amount"), F.median("amount")).first()
    assert mean > 1.3 * median
    # timestamps stay inside the configured period
    lo, hi = tx.select(F.min("timestamp"), F.max("timestamp")).first()
    assert lo.date() >= CFG.start_date and hi.date() <= CFG.end_date


def test_demographics_are_plausible(tables):
    row = tables["customers"].select(F.min("age"), F.max("age"), F.min("income"), F.count_distinct("region")).first()
    assert row[0] >= 18 and row[1] <= 90 and row[2] > 0 and row[3] == 5


def test_a_chosen_persona_set_is_planted_with_its_fixed_and_scaled_shares(spark):
    personas = PersonaSetConfig(names=("champions", "big_spenders", "hibernating", "one_time"),
                                shares={"big_spenders": 0.02})  # fmt: skip
    cfg = GeneratorConfig(n_transactions=20_000, n_customers=5_000, seed=3, personas=personas)
    counts = {r.segment: r["count"] for r in generate_ground_truth(spark, cfg).groupBy("segment").count().collect()}
    assert counts["big_spenders"] == 100  # 2% of 5,000
    # the other three split 98% in their catalogue proportions 0.08 : 0.15 : 0.30
    assert counts["one_time"] / counts["champions"] == pytest.approx(0.30 / 0.08, rel=0.01)
    assert counts["hibernating"] / counts["champions"] == pytest.approx(0.15 / 0.08, rel=0.01)
    buyers = generate_transactions(spark, cfg).join(generate_ground_truth(spark, cfg), "customer_id")
    assert {r.segment for r in buyers.select("segment").distinct().collect()} == set(personas.names)


def test_ten_personas_come_from_the_catalogue_with_their_own_behaviour(spark):
    names = tuple(p.name for p in CATALOGUE)
    cfg = GeneratorConfig(n_transactions=40_000, n_customers=2_000, seed=5, personas=PersonaSetConfig(names=names))
    joined = generate_transactions(spark, cfg).join(generate_ground_truth(spark, cfg), "customer_id")
    stats = {r.segment: r for r in joined.groupBy("segment").agg(
        F.avg(F.abs("quantity")).alias("items"), F.avg((F.col("amount") < 0).cast("int")).alias("returns"),
        F.avg((F.col("channel") == "app").cast("int")).alias("app")).collect()}  # fmt: skip
    assert len(names) == 10 and set(stats) == set(names)
    assert stats["bulk_buyers"]["items"] > 2 * max(v["items"] for k, v in stats.items() if k != "bulk_buyers")
    assert stats["returners"]["returns"] > 0.25 > max(v["returns"] for k, v in stats.items() if k != "returners")
    assert stats["app_regulars"]["app"] > 0.8


def test_separation_pulls_every_persona_toward_the_average():
    apart = planted_personas(PersonaSetConfig())
    assert apart == PERSONAS  # 1 = as defined
    alike = planted_personas(PersonaSetConfig(separation=0.0))
    for field in ("rate", "spend_median", "items_mean", "return_prob", "recency", "categories", "channels"):
        values = [getattr(p, field) for p in alike]
        assert all(v == pytest.approx(values[0]) for v in values), field
    half = planted_personas(PersonaSetConfig(separation=0.5))
    mean_return = sum(p.return_prob for p in PERSONAS) / len(PERSONAS)
    for before, after in zip(PERSONAS, half, strict=True):
        assert after.return_prob == pytest.approx(mean_return + 0.5 * (before.return_prob - mean_return))
        assert after.share == before.share and after.name == before.name
        assert sum(after.categories.values()) == pytest.approx(1.0)
    assert half[2].spend_median == pytest.approx((PERSONAS[2].spend_median * alike[2].spend_median) ** 0.5)


def test_a_bad_persona_set_names_its_key():
    with pytest.raises(ConfigError, match=r"generator\.personas\.names.*'vip'"):
        planted_personas(PersonaSetConfig(names=("champions", "vip")))
    with pytest.raises(ValueError, match="shares names personas not in names"):
        PersonaSetConfig(names=("champions", "loyal"), shares={"new": 0.1})
    with pytest.raises(ValueError, match="leaving nothing"):
        PersonaSetConfig(names=("champions", "loyal"), shares={"loyal": 1.0})


def test_a_share_of_outliers_too_small_to_round_to_one_still_plants_one(spark):
    cfg = GeneratorConfig(n_transactions=3000, n_customers=200, seed=3,
                          personas=PersonaSetConfig(outlier_share=0.001))  # fmt: skip
    truth = generate(spark, cfg)["ground_truth"].toPandas().sort_values("customer_id")
    assert len(truth) == 200 and truth["segment"].tolist().count("outlier") == 1
    assert truth["segment"].iloc[-1] == "outlier"


def test_planted_outliers_take_the_last_ids_and_buy_unlike_every_persona(spark):
    cfg = GeneratorConfig(n_transactions=30_000, n_customers=1000, seed=3,
                          personas=PersonaSetConfig(outlier_share=0.02))  # fmt: skip
    out = generate(spark, cfg)
    truth = out["ground_truth"].toPandas()
    outliers = truth[truth["segment"] == "outlier"]
    assert len(truth) == 1000 and len(outliers) == 20
    assert sorted(outliers["customer_id"]) == sorted(truth["customer_id"])[-20:]
    assert out["customers"].count() == 1000 and out["customers"].where("age IS NULL").count() == 0
    baskets = {r.segment: r for r in out["transactions"].where("amount > 0").join(out["ground_truth"], "customer_id")
               .groupBy("customer_id", "segment").agg(F.median("amount").alias("basket"))
               .groupBy("segment").agg(F.min("basket").alias("low"), F.median("basket").alias("typical"),
                                       F.countDistinct("customer_id").alias("buyers")).collect()}  # fmt: skip
    assert baskets["outlier"].low > 2 * max(r.typical for s, r in baskets.items() if s != "outlier")
    # Each has a basket size of its own, so they are not one more persona.
    spread = (
        out["transactions"]
        .join(out["ground_truth"].where("segment = 'outlier'"), "customer_id")
        .groupBy("customer_id")
        .agg(F.median("amount").alias("basket"))
        .agg(F.max("basket") / F.min("basket"))
        .first()[0]
    )
    assert spread > 5
