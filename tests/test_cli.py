"""The jobs' shared command line: what reaches stderr, and the exit-code contract."""

from __future__ import annotations

import logging

import pytest

from segmentation import cli
from segmentation.cli import EXIT_FAILURE, EXIT_OK, EXIT_USER_ERROR, configure_logging, run_job
from segmentation.errors import SegmentationError


@pytest.fixture
def project_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_below_warning_only_the_projects_own_lines_reach_stderr(project_logging, capsys):
    configure_logging("DEBUG")
    logging.getLogger("segmentation.io").debug("own debug line")
    logging.getLogger("jobs.train_segments").info("job info line")
    logging.getLogger("py4j.clientserver").info("gateway chatter")
    logging.getLogger("urllib3.connectionpool").debug("http chatter")
    logging.getLogger("databricks.sdk").info("sdk chatter")
    logging.getLogger("alembic.runtime").warning("library warning")
    err = capsys.readouterr().err
    assert "own debug line" in err and "job info line" in err
    assert "library warning" in err
    assert "gateway chatter" not in err and "http chatter" not in err and "sdk chatter" not in err


def test_run_job_prints_one_reason_line_and_maps_the_outcome(project_logging, capsys, monkeypatch):
    configure_logging("INFO")
    monkeypatch.setattr(cli, "_progress_bar_on", lambda: False)  # with a bar: the test after the next

    def user_error():
        raise SegmentationError("column 'amount' is missing\nfrom the input")

    def crash():
        raise RuntimeError("boom")

    assert run_job("build_features", lambda: None) == EXIT_OK
    assert capsys.readouterr().err == ""
    assert run_job("build_features", user_error) == EXIT_USER_ERROR
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["build_features: error: column 'amount' is missing from the input"]
    assert run_job("build_features", crash) == EXIT_FAILURE
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1] == "build_features: failed: RuntimeError: boom"


def test_the_reason_starts_a_line_of_its_own_after_spark_s_progress_bar(spark, project_logging, capsys):
    """The session draws the console progress bar, which leaves ``\\r[Stage 3:> ...`` without a newline."""
    assert spark.sparkContext.getConf().get("spark.ui.showConsoleProgress") == "true"

    def user_error():
        raise SegmentationError("file 'x.parquet' cannot be read")

    assert run_job("build_features", user_error) == EXIT_USER_ERROR
    assert capsys.readouterr().err == "\nbuild_features: error: file 'x.parquet' cannot be read\n"
