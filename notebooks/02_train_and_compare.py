# Databricks notebook source
# MAGIC %md
# MAGIC # 2. Train and compare
# MAGIC Runs the training job (k sweep over the configured algorithms, MLflow parent and child runs,
# MAGIC registered champion) and shows the sweep the way the MLflow UI's compare view does.
# MAGIC Parameters: `env`, `config`, `set` as in notebook 1, `k_min`, `k_max` (the k range swept: with two levels,
# MAGIC `training.hierarchy`, the broad level's), `algorithms` (comma-separated).

# COMMAND ----------

from segmentation import notebook, tracking
from segmentation.spark import get_spark
from segmentation.training_pipeline import run_training

p = notebook.params(
    globals(),
    {"env": "databricks", "config": "", "set": "", "k_min": "2", "k_max": "8",
     "algorithms": "kmeans,bisecting_kmeans,gaussian_mixture"},
)  # fmt: skip
sets = [f"training.k_min={p['k_min']}", f"training.k_max={p['k_max']}",
        f"training.hierarchy.broad_k=[{p['k_min']}, {p['k_max']}]", f"training.algorithms=[{p['algorithms']}]"]  # fmt: skip
cfg = notebook.config({**p, "set": ";".join([p["set"], *sets])})
spark = get_spark(cfg.spark)

# COMMAND ----------

result = run_training(spark, cfg)
print(f"champion: {result.champion} with k={result.k}; model version {result.model_version}; run {result.run_id}")

# COMMAND ----------

# MAGIC %md ## The sweep: one child run per (algorithm, k), the same metrics everywhere

# COMMAND ----------

children = tracking.child_runs(result.run_id)
columns = ["tags.algorithm", "tags.k", "metrics.silhouette", "metrics.wssse", "metrics.bic",
           "metrics.stability_ari", "metrics.min_cluster_share"]  # fmt: skip
notebook.show(globals(), children[columns].sort_values(["tags.algorithm", "tags.k"], key=lambda s: s.map(str)))

# COMMAND ----------

# MAGIC %md ## Why this k: the logged rationale

# COMMAND ----------

rationale = tracking.load_run_dict(result.run_id, tracking.RATIONALE_ARTIFACT)
print(rationale["champion"])
for algorithm, choice in rationale["per_algorithm"].items():
    print(algorithm, choice["chosen_k"], choice["criterion"])
