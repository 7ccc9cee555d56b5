# Databricks notebook source
# MAGIC %md
# MAGIC # 3. Inspect and name the segments
# MAGIC The profile table, the rules that describe each segment and the HTML report of a training run.
# MAGIC To rename a segment, set `profiles.names` (for example `set` = `profiles.names={3: Weekend gardeners}`)
# MAGIC and retrain: names travel with the model to scoring. Parameters: `env`, `config`, `set`, `run_id`
# MAGIC (default: the run of the model behind the alias).

# COMMAND ----------

from segmentation import notebook, tracking
from segmentation.snapshots import read_snapshot
from segmentation.spark import get_spark

p = notebook.params(globals(), {"env": "databricks", "config": "", "set": "", "run_id": ""})
cfg = notebook.config(p)
spark = get_spark(cfg.spark)
tracking.configure(cfg.mlflow)
run_id = p["run_id"] or tracking.registered_model(cfg.mlflow.registered_model, cfg.mlflow.alias).run_id
trained_on = tracking.run_tags(run_id)["feature_snapshot"]

# COMMAND ----------

# MAGIC %md ## Profiles: size, value, churn and the names

# COMMAND ----------

model_version = tracking.run_model_version(cfg.mlflow.registered_model, run_id)
profiles, _ = read_snapshot(spark, cfg.profiles.output, trained_on, required=("model_version",))
profiles = profiles.where(profiles.model_version == model_version)
notebook.show(globals(), profiles.select("segment", "name", "customers", "customer_share", "revenue_share",
                                         "churn_rate", "forward_value", "recommended_categories",
                                         "description").orderBy("segment"))  # fmt: skip

# COMMAND ----------

# MAGIC %md ## Rules: who is in each segment, in raw units

# COMMAND ----------

rules = tracking.load_run_dict(run_id, tracking.RULES_ARTIFACT)
print(f"rule fidelity: {rules['fidelity']:.0%}")
for segment, segment_rules in rules["rules"].items():
    for rule in segment_rules[:2]:
        print(f"segment {segment}: {rule['rule']}  (precision {rule['precision']:.0%}, recall {rule['recall']:.0%})")

# COMMAND ----------

# MAGIC %md ## The report (open it in a browser, or render it here with `displayHTML`)

# COMMAND ----------

html = tracking.load_run_text(run_id, tracking.REPORT_ARTIFACT)
if "displayHTML" in globals():
    displayHTML(html)  # noqa: F821 - Databricks notebook global
else:
    print(f"report: {len(html):,} characters, on run {run_id} as {tracking.REPORT_ARTIFACT}")
