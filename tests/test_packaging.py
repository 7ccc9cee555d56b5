"""The package builds as a wheel that carries the library, the jobs and their console scripts."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


def test_wheel_builds_with_library_jobs_and_entry_points(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path), str(PROJECT)],  # as the README says
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    wheels = list(tmp_path.glob("customer_segmentation-*.whl"))
    assert len(wheels) == 1
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    library = {f"segmentation/{p.name}" for p in (PROJECT / "segmentation").glob("*.py")}
    jobs = {f"jobs/{p.name}" for p in (PROJECT / "jobs").glob("*.py")}
    assert library <= names and jobs <= names
    assert not any(n.startswith("tests/") for n in names)
    metadata = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    entry_points = zipfile.ZipFile(wheels[0]).read(metadata).decode()
    # Every job is a console script: segmentation-<job>, and the first-contact command by its own name.
    scripts = {f"segmentation-{p.stem.replace('_', '-')}": p.stem for p in (PROJECT / "jobs").glob("[!_]*.py")}
    scripts.pop("segmentation-inspect-input")
    scripts["segmentation-inspect"] = "inspect_input"
    for name, job in scripts.items():
        assert f"{name} = jobs.{job}:main" in entry_points
    requires = zipfile.ZipFile(wheels[0]).read(metadata.replace("entry_points.txt", "METADATA")).decode()
    assert "Requires-Dist: pyspark==4.2.0" in requires and "Requires-Dist: mlflow==3.17.2" in requires
