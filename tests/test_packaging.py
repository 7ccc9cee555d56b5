"""The package builds as a wheel that carries the library, the jobs, their console scripts and the config."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(PROJECT)],  # as the README says
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    wheels = list(out.glob("customer_segmentation-*.whl"))
    assert len(wheels) == 1
    return wheels[0]


def test_wheel_builds_with_library_jobs_config_and_entry_points(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"segmentation/conf/{p.relative_to(PROJECT / 'conf')}" for p in (PROJECT / "conf").rglob("*.yaml")}
    assert shipped and shipped <= names
    library = {f"segmentation/{p.name}" for p in (PROJECT / "segmentation").glob("*.py")}
    jobs = {f"jobs/{p.name}" for p in (PROJECT / "jobs").glob("*.py")}
    assert library <= names and jobs <= names
    assert not any(n.startswith("tests/") for n in names)
    metadata = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    entry_points = zipfile.ZipFile(wheel).read(metadata).decode()
    # Every job is a console script: segmentation-<job>, and the first-contact command by its own name.
    scripts = {f"segmentation-{p.stem.replace('_', '-')}": p.stem for p in (PROJECT / "jobs").glob("[!_]*.py")}
    scripts.pop("segmentation-inspect-input")
    scripts["segmentation-inspect"] = "inspect_input"
    for name, job in scripts.items():
        assert f"{name} = jobs.{job}:run" in entry_points
    requires = zipfile.ZipFile(wheel).read(metadata.replace("entry_points.txt", "METADATA")).decode()
    # Spark is an extra: a Databricks runtime brings its own, which pip must not replace.
    assert 'Requires-Dist: pyspark[connect]==4.2.0; extra == "spark"' in requires, requires
    assert 'Requires-Dist: delta-spark==4.4.0; extra == "spark"' in requires
    assert "Requires-Dist: mlflow==3.17.2\n" in requires


def test_the_installed_wheel_takes_env_and_config_from_the_package_in_an_empty_directory(wheel, tmp_path):
    """A wheel task: the wheel in a fresh virtualenv, run from a folder with no conf/.
    The dependencies come from this environment's site-packages (a .pth file), the package only
    from the wheel."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    ours = sysconfig.get_paths()["purelib"]
    (Path(site) / "dependencies.pth").write_text(ours + "\n")
    # With the spark extra, as a packed virtualenv installs it: pip resolves every requirement, and
    # finds each one already installed (through the .pth file), so nothing is downloaded.
    install = [str(python), "-m", "pip", "install", "--no-index", "--quiet", f"{wheel}[spark]"]
    subprocess.run(install, check=True, timeout=300)
    empty = tmp_path / "job"
    empty.mkdir()
    where = subprocess.run([str(python), "-c", "import segmentation; print(segmentation.__file__)"],
                           capture_output=True, text=True, check=True, cwd=empty).stdout  # fmt: skip
    assert where.startswith(site), where  # the wheel's copy, not this checkout

    extra = empty / "extra.yaml"
    extra.write_text("training:\n  k_max: 5\nmlflow:\n  experiment: /Shared/extra\n")
    command = [str(venv / "bin" / "segmentation-train-segments"), "--env", "databricks", "--config", str(extra),
               "--set", "training.seed=11", "--print-config"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=empty, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    cfg = yaml.safe_load(done.stdout)
    assert cfg["mlflow"]["registry_uri"] == "databricks-uc"  # the packaged databricks overlay
    assert cfg["features"]["output"]["table"] == "main.segmentation.customer_features"
    assert cfg["mlflow"]["experiment"] == "/Shared/extra" and cfg["training"]["k_max"] == 5  # --config on top
    assert cfg["training"]["seed"] == 11 and cfg["training"]["k_min"] == 2  # --set, and base.yaml beneath
    assert not (empty / "conf").exists() and sorted(p.name for p in empty.iterdir()) == ["extra.yaml"]

    missing = subprocess.run([*command[:1], "--env", "nosuch", "--print-config"], capture_output=True, text=True,
                             cwd=empty, timeout=300)  # fmt: skip
    assert missing.returncode == 2 and missing.stdout == ""
    assert "config overlay for env 'nosuch' not found" in missing.stderr
    assert "overlays there: ['cluster', 'databricks', 'local']" in missing.stderr
