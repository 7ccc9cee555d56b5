# Databricks notebook source
# MAGIC %md
# MAGIC # 1. Explore the customer features
# MAGIC Builds (or reads) the feature snapshot and shows its quality counts and distributions.
# MAGIC Parameters: `env` (config overlay: `databricks`, `local`), `config` (an extra YAML file),
# MAGIC `set` (`key=value;key=value` overrides), `build` (`true` to run the feature job first).

# COMMAND ----------

from pyspark.sql import functions as F

from segmentation import notebook
from segmentation.feature_pipeline import run_feature_pipeline
from segmentation.io import read_table
from segmentation.snapshots import read_snapshot
from segmentation.spark import get_spark

p = notebook.params(globals(), {"env": "databricks", "config": "", "set": "", "build": "false"})
cfg = notebook.config(p)
spark = get_spark(cfg.spark)  # the notebook's own session on Databricks

# COMMAND ----------

# MAGIC %md ## Build the snapshot (optional) and the data-quality counts

# COMMAND ----------

if p["build"].lower() == "true":
    report = run_feature_pipeline(spark, cfg)
    print(f"built snapshot {report.as_of}")
notebook.show(globals(), read_table(spark, cfg.features.quality).orderBy(F.col("as_of").desc()))

# COMMAND ----------

# MAGIC %md ## The newest snapshot: summary statistics per feature

# COMMAND ----------

snapshot, newest = read_snapshot(spark, cfg.features.output)
print(f"snapshot {newest}: {snapshot.count():,} customers")
notebook.show(globals(), snapshot.drop("customer_id", "as_of").summary("mean", "stddev", "min", "50%", "max"))
