"""The Databricks Asset Bundle (databricks.yml) and the Unity Catalog overlay (conf/databricks.yaml).

Checked here, with no workspace: the jobs match Databricks' own typed models of a bundle's jobs
(the databricks-bundles package), every Python wheel task names a console script of the installed
package and passes arguments its job accepts, the workflow runs features -> CLV -> training ->
scoring on a paused schedule, MLflow's DFS folder is a volume, every table of the overlay is a
three-part name, and the readers and writers take such a name (local catalog ``spark_catalog``
in place of ``main``). Not checked: anything a deploy or a run on Databricks would show
(docs/databricks.md).
"""

from __future__ import annotations

import copy
import importlib.metadata
import re
import shlex
from pathlib import Path

import pytest
import yaml
from databricks.bundles.jobs import Job
from pydantic import BaseModel
from pyspark.testing import assertDataFrameEqual

from segmentation.cli import config_from_args, job_parser
from segmentation.config import AppConfig, TableConfig
from segmentation.io import read_table, table_exists, write_table

PROJECT = Path(__file__).resolve().parent.parent
BUNDLE = yaml.safe_load((PROJECT / "databricks.yml").read_text())
PACKAGE = "customer-segmentation"
WORKFLOW = "customer_segmentation"
THREE_PART = re.compile(r"^[A-Za-z_]\w*\.[A-Za-z_]\w*\.[A-Za-z_]\w*$")
VOLUME = re.compile(r"^/Volumes/[A-Za-z_]\w*/[A-Za-z_]\w*/[A-Za-z_]\w*(/|$)")


def _jobs() -> dict[str, dict]:
    """Every job the bundle deploys, as ``target/job_key`` (``-/job_key`` for top-level resources)."""
    found = {f"-/{k}": v for k, v in (BUNDLE.get("resources") or {}).get("jobs", {}).items()}
    for target, spec in BUNDLE["targets"].items():
        found.update({f"{target}/{k}": v for k, v in (spec.get("resources") or {}).get("jobs", {}).items()})
    return found


JOBS = _jobs()
WHEEL_TASKS = [
    pytest.param(job, task, id=f"{name}/{task['task_key']}")
    for name, job in JOBS.items()
    for task in job["tasks"]
    if "python_wheel_task" in task
]


def _variable(text: str) -> str:
    """``text`` with the bundle's ``${var.name}`` references replaced by their defaults."""
    return re.sub(r"\$\{var\.(\w+)\}", lambda m: BUNDLE["variables"][m[1]]["default"], text)


def test_the_bundle_has_the_three_targets_and_a_wheel_task_in_each():
    assert set(BUNDLE["targets"]) == {"dev", "prod", "prod_cluster"}
    assert [t for t, spec in BUNDLE["targets"].items() if spec.get("default")] == ["dev"]
    targets = {p.id.split("/")[0] for p in WHEEL_TASKS}
    assert targets == {"dev", "prod", "prod_cluster"}


@pytest.mark.parametrize("name", list(JOBS))
def test_every_job_matches_databricks_typed_model_of_a_bundle_job(name):
    """databricks-bundles' dataclasses are generated from the Jobs API spec: an unknown or misspelt
    key, a missing required one or a value outside an enum (pause_status, data_security_mode) raises."""
    Job.from_dict(copy.deepcopy(JOBS[name]))
    misspelt = copy.deepcopy(JOBS[name])
    misspelt["tasks"][0]["python_wheel_task"]["entrypoint"] = "main"
    with pytest.raises(ValueError, match="Unexpected field 'entrypoint'"):
        Job.from_dict(misspelt)


@pytest.mark.parametrize(("job", "task"), WHEEL_TASKS)
def test_every_wheel_task_calls_a_console_script_of_the_installed_package(job, task):
    wheel_task = task["python_wheel_task"]
    # As Databricks' wheel runner (and the CLI's python_wheel_wrapper) looks it up.
    dist = importlib.metadata.distribution(wheel_task["package_name"])
    assert dist.metadata["Name"] == PACKAGE
    scripts = {ep.name: ep for ep in dist.entry_points if ep.group == "console_scripts"}
    assert wheel_task["entry_point"] in scripts, sorted(scripts)
    assert scripts[wheel_task["entry_point"]].value.startswith("jobs.")

    # The wheel the artifact builds reaches the task: a library on a cluster, a dependency of the
    # task's environment on serverless.
    build = shlex.split(BUNDLE["artifacts"]["segmentation_wheel"]["build"])
    wheel = f"./{build[build.index('--wheel-dir') + 1]}/*.whl"
    if "job_cluster_key" in task:
        assert {"whl": wheel} in task["libraries"]
        assert task["job_cluster_key"] in {c["job_cluster_key"] for c in job["job_clusters"]}
    else:
        environments = {e["environment_key"]: e["spec"] for e in job["environments"]}
        assert wheel in environments[task["environment_key"]]["dependencies"]


def _argv(task: dict, values: dict[str, str]) -> list[str]:
    """The task's parameters as the job receives them: ``{{job.parameters.x}}`` replaced."""
    return [re.sub(r"\{\{job\.parameters\.(\w+)\}\}", lambda m: values[m[1]], p) for p in task["parameters"]]


def _print_config(task: dict, argv: list[str], capsys) -> tuple[int, str]:
    """Call the entry point's function, as the wheel task does, with --print-config: it parses the
    arguments and validates the config with every --set, then exits before any Spark."""
    dist = importlib.metadata.distribution(task["package_name"])
    (main,) = [ep.load() for ep in dist.entry_points if ep.name == task["entry_point"]]
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--print-config"])
    out = capsys.readouterr()
    return exited.value.code, out.out if exited.value.code == 0 else out.err


def _at(tree: dict, dotted: str):
    for part in dotted.split("."):
        tree = tree[part]
    return tree


@pytest.mark.parametrize(("job", "task"), WHEEL_TASKS)
def test_every_wheel_task_passes_arguments_its_job_accepts(job, task, capsys):
    """With the job parameters' defaults and with values a user would give, the job parses the task's
    parameters, loads the databricks overlay and applies each --set to a key of the typed config."""
    defaults = {p["name"]: p["default"] for p in job.get("parameters", [])}
    given = {"as_of": "2024-12-31", "promote": "never", "n_transactions": "5000"}
    for values in (defaults, {k: given[k] for k in defaults}):
        argv = _argv(task["python_wheel_task"], values)
        assert argv[:2] == ["--env", "databricks"]
        code, printed = _print_config(task["python_wheel_task"], argv, capsys)
        assert code == 0, printed
        cfg = yaml.safe_load(printed)
        assert cfg["mlflow"]["registry_uri"] == "databricks-uc"  # the overlay was loaded
        sets = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--set"]
        assert sets
        for item in sets:
            key, raw = item.split("=", 1)
            value = _at(cfg, key)
            assert (None if value is None else str(value)) == (raw or None), item  # empty: null, the default


def test_a_set_key_the_config_lacks_stops_the_job_with_exit_2(capsys):
    """The check above can fail: the same entry point refuses a key the typed config does not have."""
    task = JOBS["dev/customer_segmentation"]["tasks"][0]["python_wheel_task"]
    code, err = _print_config(task, ["--env", "databricks", "--set", "features.asof=2024-12-31"], capsys)
    assert code == 2 and "features.asof" in err


@pytest.mark.parametrize("name", [n for n in JOBS if n.endswith(f"/{WORKFLOW}")])
def test_the_workflow_runs_features_then_clv_then_training_then_scoring(name):
    """One chain, each task waiting for the one before: training profiles the CLV values, and
    scoring attaches them and uses the model training registered."""
    tasks = {t["task_key"]: t for t in JOBS[name]["tasks"]}
    script = {key: t["python_wheel_task"]["entry_point"] for key, t in tasks.items()}
    waits_for = {script[key]: {script[d["task_key"]] for d in t.get("depends_on", [])} for key, t in tasks.items()}
    assert waits_for == {
        "segmentation-build-features": set(),
        "segmentation-train-clv": {"segmentation-build-features"},
        "segmentation-train-segments": {"segmentation-train-clv"},
        "segmentation-score-customers": {"segmentation-train-segments"},
    }


@pytest.mark.parametrize("name", list(JOBS))
def test_a_scheduled_job_is_paused_and_the_workflow_is_scheduled(name):
    job = JOBS[name]
    if name.endswith(f"/{WORKFLOW}"):
        assert job["schedule"]["quartz_cron_expression"]
    if "schedule" in job:
        assert job["schedule"]["pause_status"] == "PAUSED"
    assert "trigger" not in job and "continuous" not in job


@pytest.mark.parametrize("name", [n for n in JOBS if n.endswith(f"/{WORKFLOW}")])
def test_mlflow_dfs_folder_is_a_volume_for_every_workflow_task(name):
    """mlflow.spark copies a model through MLFLOW_DFS_TMP; on serverless and standard clusters it must be
    a Unity Catalog volume. Serverless: a job environment-variable entry that every task selects; a job
    cluster: its spark_env_vars. (No config key sets it yet.)"""
    job = JOBS[name]
    for task in job["tasks"]:
        if "job_cluster_key" in task:
            (cluster,) = [c for c in job["job_clusters"] if c["job_cluster_key"] == task["job_cluster_key"]]
            env = cluster["new_cluster"]["spark_env_vars"]
        else:
            entries = {e["environment_variables_key"]: e["spec"] for e in job["environment_variables"]}
            env = entries[task["environment_variables_key"]]["variables"]
        assert VOLUME.match(_variable(env["MLFLOW_DFS_TMP"])), env


def _databricks_config() -> AppConfig:
    return config_from_args(job_parser("bundle test").parse_args(["--env", "databricks"]))


def _tables(model: BaseModel, prefix: str = "") -> dict[str, TableConfig]:
    """Every TableConfig (inputs, outputs) in ``model``, by dotted key."""
    found = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, TableConfig):
            found[prefix + name] = value
        elif isinstance(value, BaseModel):
            found.update(_tables(value, f"{prefix}{name}."))
    return found


def test_the_databricks_overlay_names_every_table_model_and_folder_in_unity_catalog():
    cfg = _databricks_config()
    tables = _tables(cfg)
    assert len(tables) >= 15 and "clv.output" in tables and "input.products" in tables
    not_uc = {k: t.location for k, t in tables.items() if t.path is not None or not THREE_PART.match(t.table or "")}
    assert not_uc == {}
    assert cfg.mlflow.registry_uri == "databricks-uc"
    assert THREE_PART.match(cfg.mlflow.registered_model) and THREE_PART.match(cfg.clv.registered_model)
    assert VOLUME.match(cfg.profiles.report_dir), cfg.profiles.report_dir
    # The bundle's volume (MLflow's DFS folder) is the overlay's (the reports).
    assert cfg.profiles.report_dir.startswith(BUNDLE["variables"]["volume"]["default"] + "/")
    assert cfg.mlflow.dfs_tmpdir.startswith(BUNDLE["variables"]["volume"]["default"] + "/"), cfg.mlflow.dfs_tmpdir


def test_three_part_names_reach_the_writer_and_the_reader(spark, tmp_path):
    """The generator writes and the feature job reads one table by its three-part name. Locally the
    catalog ``main`` becomes ``spark_catalog`` (Delta's catalog in the test session); the schema and
    table parts are the overlay's."""
    cfg = _databricks_config()
    assert cfg.generator.transactions.table == cfg.input.transactions.table
    local = cfg.input.transactions.table.replace("main.", "spark_catalog.", 1)
    catalog, schema, table = local.split(".")
    args = ["--env", "databricks", "--set", f"generator.transactions.table={local}",
            "--set", f"input.transactions.table={local}"]  # fmt: skip
    cfg = config_from_args(job_parser("bundle test").parse_args(args))
    rows = [("c1", "2024-01-05 10:00:00", 12.5), ("c2", "2024-02-01 00:00:00", -3.0), ("c2", None, 0.0)]
    df = spark.createDataFrame(rows, "customer_id string, ts string, amount double").selectExpr(
        "customer_id", "CAST(ts AS TIMESTAMP) AS timestamp", "amount"
    )
    spark.sql(f"CREATE SCHEMA {catalog}.{schema} LOCATION '{tmp_path}'")
    try:
        assert not table_exists(spark, cfg.input.transactions)
        write_table(df, cfg.generator.transactions)
        assert table_exists(spark, cfg.input.transactions)
        assert (tmp_path / table / "_delta_log").is_dir()  # a managed Delta table in the schema's location
        back = read_table(spark, cfg.input.transactions, columns=["customer_id", "timestamp", "amount"])
        assertDataFrameEqual(back, df, checkRowOrder=False)
    finally:
        spark.sql(f"DROP SCHEMA IF EXISTS {catalog}.{schema} CASCADE")


def test_a_failing_wheel_task_raises_its_exit_code_instead_of_returning_it(spark, tmp_path):
    """A wheel task calls the entry point in-process and fails only on an exception: a job whose input
    is missing must raise SystemExit(2) (a user error), not return 2 and let the next task start."""
    dist = importlib.metadata.distribution("customer-segmentation")
    (run,) = [ep.load() for ep in dist.entry_points if ep.name == "segmentation-build-features"]
    with pytest.raises(SystemExit) as exited:
        run(["--set", f"input.transactions.path={tmp_path / 'missing'}",
             "--set", f"features.output.path={tmp_path / 'features'}"])  # fmt: skip
    assert exited.value.code == 2
    assert not (tmp_path / "features").exists()
