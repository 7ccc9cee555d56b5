# Databricks notebook source
# MAGIC %md
# MAGIC # 3. Inspect and name the segments
# MAGIC The profile table, the rules that describe each segment and the HTML report of a training run.
# MAGIC To rename a segment, set `profiles.names` (for example `set` = `profiles.names={3: Weekend gardeners}`)
# MAGIC and retrain: names travel with the model to scoring. Parameters: `env`, `config`, `set`, `run_id`
# MAGIC (default: the run of the model behind the alias).

# COMMAND ----------

import mlflow
from mlflow.tracking import MlflowClient
from pyspark.sql import functions as F

from segmentation import notebook, tracking
from segmentation.io import read_table
from segmentation.spark import get_spark

p = notebook.params(globals(), {"env": "databricks", "config": "", "set": "", "run_id": ""})
cfg = notebook.config(p)
spark = get_spark(cfg.spark)
tracking.configure(cfg.mlflow)
run_id = p["run_id"] or tracking.registered_model(cfg.mlflow.registered_model, cfg.mlflow.alias).run_id
run = mlflow.get_run(run_id)

# COMMAND ----------

# MAGIC %md ## Profiles: size, value, churn and the names

# COMMAND ----------

name = cfg.mlflow.registered_model
versions = [v for v in MlflowClient().search_model_versions(f"name = '{name}'") if v.run_id == run_id]
model_version = str(versions[0].version) if versions else run_id  # an unregistered run keys by its id
profiles = read_table(spark, cfg.profiles.output).where(
    (F.col("as_of") == F.lit(run.data.tags["feature_snapshot"]).cast("date"))
    & (F.col("model_version") == model_version)
)
notebook.show(globals(), profiles.select("segment", "name", "customers", "customer_share", "revenue_share",
                                         "churn_rate", "forward_value", "recommended_categories",
                                         "description").orderBy("segment"))  # fmt: skip

# COMMAND ----------

# MAGIC %md ## Rules: who is in each segment, in raw units

# COMMAND ----------

rules = mlflow.artifacts.load_dict(f"runs:/{run_id}/profiles/segment_rules.json")
print(f"rule fidelity: {rules['fidelity']:.0%}")
for segment, segment_rules in rules["rules"].items():
    for rule in segment_rules[:2]:
        print(f"segment {segment}: {rule['rule']}  (precision {rule['precision']:.0%}, recall {rule['recall']:.0%})")

# COMMAND ----------

# MAGIC %md ## The report (open it in a browser, or render it here with `displayHTML`)

# COMMAND ----------

html = mlflow.artifacts.load_text(f"runs:/{run_id}/report/segment_report.html")
if "displayHTML" in globals():
    displayHTML(html)  # noqa: F821 - Databricks notebook global
else:
    print(f"report: {len(html):,} characters, on run {run_id} as report/segment_report.html")
