from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml

from segmentation.config import AppConfig, default_config_files, load_config
from segmentation.errors import ConfigError

CONF = Path(__file__).resolve().parent.parent / "conf"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_base_yaml_lists_exactly_the_typed_defaults():
    # base.yaml is the documented single source of defaults: the file itself (not the file loaded
    # over the model's defaults) must name every key of the model, with the model's value.
    listed = json.loads(json.dumps(yaml.safe_load((CONF / "base.yaml").read_text()), default=str))  # dates as text
    assert listed == AppConfig().model_dump(mode="json")


def _leaves(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("env", ["local", "cluster", "databricks"])
def test_every_shipped_overlay_validates_and_every_key_it_names_lands(env):
    overlay = _leaves(yaml.safe_load((CONF / f"{env}.yaml").read_text()) or {})
    loaded = _leaves(load_config(default_config_files(env, CONF)).model_dump(mode="json"))  # tuples as YAML lists
    assert overlay and {k: loaded.get(k, "<absent>") for k in overlay} == overlay


def test_overlay_changes_only_what_it_names(tmp_path):
    base = write(tmp_path, "base.yaml", "features:\n  top_categories: 8\n  trend_window_days: 90\n")
    overlay = write(tmp_path, "local.yaml", "features:\n  top_categories: 3\n")
    cfg = load_config([base, overlay])
    assert cfg.features.top_categories == 3
    assert cfg.features.trend_window_days == 90


def test_databricks_overlay_switches_paths_to_tables():
    cfg = load_config(default_config_files("databricks", CONF))
    assert cfg.input.transactions.path is None
    assert cfg.input.transactions.table == "main.segmentation.transactions"
    assert cfg.spark.delta_from_maven is False


def test_set_overrides_parse_yaml_scalars_and_win_over_files(tmp_path):
    base = write(tmp_path, "base.yaml", "features:\n  top_categories: 8\n")
    cfg = load_config(
        [base],
        [
            "features.top_categories=4",
            "features.as_of=2024-06-30",
            "input.transactions.format=csv",
            "input.transactions.columns.customer_id=cust",
            "spark.conf.spark.sql.shuffle.partitions=7",
        ],
    )
    assert cfg.features.top_categories == 4
    assert cfg.features.as_of == dt.date(2024, 6, 30)
    assert cfg.input.transactions.format == "csv"
    assert cfg.input.transactions.columns["customer_id"] == "cust"
    # the default mapping of the other roles is kept
    assert cfg.input.transactions.columns["amount"] == "amount"


def test_unknown_key_is_rejected_naming_key_and_file(tmp_path):
    bad = write(tmp_path, "bad.yaml", "features:\n  top_categoriez: 3\n")
    with pytest.raises(ConfigError, match=r"features\.top_categoriez.*bad\.yaml"):
        load_config([bad])


def test_wrong_type_is_rejected_naming_key_and_file(tmp_path):
    base = write(tmp_path, "base.yaml", "features:\n  top_categories: 8\n")
    overlay = write(tmp_path, "overlay.yaml", "features:\n  churn_gap_multiple: lots\n")
    with pytest.raises(ConfigError, match=r"features\.churn_gap_multiple \(from .*overlay\.yaml\)"):
        load_config([base, overlay])


def test_wrong_override_names_the_set_flag():
    with pytest.raises(
        ConfigError, match=r"input\.transactions\.format \(from --set input\.transactions\.format=xlsx\)"
    ):
        load_config([], ["input.transactions.format=xlsx"])


def test_override_without_equals_sign_is_rejected():
    with pytest.raises(ConfigError, match="dotted.key=value"):
        load_config([], ["features.as_of"])


def test_unknown_column_role_and_missing_required_role(tmp_path):
    with pytest.raises(ConfigError, match="unknown column role"):
        load_config([], ["input.transactions.columns.price=p"])
    with pytest.raises(ConfigError, match=r"required column role.*amount"):
        load_config([], ["input.transactions.columns.amount="])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found: .*nope.yaml"):
        load_config([tmp_path / "nope.yaml"])
    broken = write(tmp_path, "broken.yaml", "features: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml is not valid YAML"):
        load_config([broken])
    listy = write(tmp_path, "list.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config([listy])


def test_config_is_frozen():
    cfg = AppConfig()
    with pytest.raises(Exception, match="frozen"):
        cfg.features.top_categories = 2  # type: ignore[misc]


def test_missing_env_overlay_is_reported():
    with pytest.raises(ConfigError, match="env 'staging'"):
        default_config_files("staging", CONF)


def test_explicit_roles_are_those_mapped_to_a_name_of_the_users_own():
    cfg = load_config([CONF / "base.yaml"], ["input.transactions.columns.basket_id=order_no"])
    assert cfg.input.transactions.explicit_roles == {"basket_id"}
    assert cfg.input.transactions.columns["product_id"] == "product_id"  # the default, skipped when absent
    assert (cfg.input.products.enabled, cfg.input.customers.min_match_share) == (False, 0.5)
    with pytest.raises(ConfigError, match=r"input\.transactions\.timestamp_unit"):
        load_config([], ["input.transactions.timestamp_unit=days"])


def test_completejourney_example_layers_on_base():
    cfg = load_config([CONF / "base.yaml", CONF / "examples" / "completejourney.yaml"])
    columns = cfg.input.transactions.columns
    assert (columns["customer_id"], columns["amount"], columns["basket_id"]) == (
        "household_id",
        "sales_value",
        "basket_id",
    )
    assert cfg.input.products.enabled and cfg.input.customers.enabled
