# Databricks notebook source
# MAGIC %md
# MAGIC # 4. Score customers
# MAGIC Scores a feature snapshot with the registered model (alias or version), upserts the current and
# MAGIC history tables, and shows the segment counts, the migration and the drift.
# MAGIC Parameters: `env`, `config`, `set`, `as_of` (default: the newest snapshot), `model_version`
# MAGIC (default: the alias).

# COMMAND ----------

from segmentation import notebook
from segmentation.feature_pipeline import features_for_scoring
from segmentation.io import read_table
from segmentation.scoring_pipeline import run_scoring
from segmentation.spark import get_spark

p = notebook.params(globals(), {"env": "databricks", "config": "", "set": "", "as_of": "", "model_version": ""})
sets = [f"scoring.as_of={p['as_of']}"] if p["as_of"] else []
sets += [f"scoring.model_version={p['model_version']}"] if p["model_version"] else []
cfg = notebook.config({**p, "set": ";".join([p["set"], *sets])})
spark = get_spark(cfg.spark)

# COMMAND ----------

cfg = features_for_scoring(spark, cfg)  # with scoring.compute_features: the feature job first
result = run_scoring(spark, cfg)
print(f"scored {result.customers:,} customers of {result.as_of} with model version {result.model_version}")
print("customers per segment:", result.segment_counts)

# COMMAND ----------

# MAGIC %md ## Migration since the last scoring, and drift since training

# COMMAND ----------

if result.migration is not None and not result.migration.empty:
    print(f"stability: {result.stability:.1%} of customers kept their segment")
    notebook.show(globals(), result.migration)
if result.drift is not None:
    print("needs retraining:", result.drift.needs_retraining, "drifted features:", result.drift.drifted_features)

# COMMAND ----------

# MAGIC %md ## The current assignments

# COMMAND ----------

notebook.show(globals(), read_table(spark, cfg.scoring.current).orderBy("customer_id"))
