"""What every job shares: arguments, logging set-up, and the exit-code contract.

Each job is ``main(argv=None) -> int``. A job body raises; :func:`run_job` turns
the exception into one line on stderr and a non-zero exit code:

* 0: success;
* 2: a user-facing problem (:class:`~segmentation.errors.SegmentationError`:
  bad config, bad input, an input file Spark cannot read, quarantine threshold,
  a Delta write conflict with another run...);
* 1: anything else (a bug or an infrastructure failure), with the traceback in
  the log.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from segmentation.config import AppConfig, default_config_files, load_config
from segmentation.errors import SegmentationError, from_spark_failure

__all__ = ["configure_logging", "job_parser", "config_from_args", "run_job"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USER_ERROR = 2

_OWN_LOGGERS = ("segmentation", "jobs", "__main__")
_LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record, so a caller that swaps
    stderr (a notebook cell, a test capturing output) never leaves it writing to a closed stream."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # noqa: D401 - logging reads this attribute
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; always follow sys.stderr
        pass

    def filter(self, record: logging.LogRecord) -> bool:
        """Below WARNING, only the project's own lines: the ``segmentation`` package, the jobs
        (``jobs.<name>``) and a calling script. Libraries' chatter (a classic session's gateway,
        HTTP clients, database migrations) shows from WARNING up, at any ``--log-level``."""
        own = record.name.partition(".")[0] in _OWN_LOGGERS
        return (own or record.levelno >= logging.WARNING) and super().filter(record)


def configure_logging(level: str = "INFO") -> None:
    """Configure Python logging once per job (idempotent; notebooks keep their own handlers)."""
    root = logging.getLogger()
    if not any(getattr(h, "_segmentation", False) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(_LOG_FORMAT, "%H:%M:%S"))
        handler._segmentation = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)


def job_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--config",
        action="append",
        type=Path,
        metavar="FILE",
        help="YAML config file; repeat to layer overlays (default: conf/base.yaml + conf/<env>.yaml)",
    )
    parser.add_argument(
        "--env",
        default=None,
        help="overlay conf/<env>.yaml on top of conf/base.yaml, from ./conf or else the config installed with the "
        "package (default: local; with --config, only when given, and the --config files layer on top)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one dotted config key, e.g. --set features.as_of=2024-12-31 (repeatable)",
    )
    parser.add_argument("--log-level", default="INFO", help="Python log level (default: INFO)")
    parser.add_argument(
        "--print-config", action="store_true", help="print the merged config (option values masked) and exit"
    )
    return parser


def config_from_args(args: argparse.Namespace) -> AppConfig:
    """``--config`` files alone; or ``base.yaml``, the ``--env`` overlay (default local), then any ``--config``."""
    if args.config and args.env is None:
        files = args.config
    else:
        files = [*default_config_files(args.env or "local"), *(args.config or [])]
    return load_config(files, args.overrides)


def printable(cfg: AppConfig) -> str:
    """``cfg`` as YAML, with the values of every ``options`` mapping (where credentials go) and the
    passwords in URIs masked."""
    from segmentation.tracking import REDACTED, redact_data

    def mask_options(data: Any, key: str = "") -> Any:
        if isinstance(data, dict):
            return {k: (REDACTED if key == "options" else mask_options(v, k)) for k, v in data.items()}
        return data

    return yaml.safe_dump(redact_data(mask_options(cfg.model_dump(mode="json"))), sort_keys=False)


def exit_with(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> None:
    """Run a job's ``main``; on a non-zero code raise ``SystemExit`` with it: the console scripts'
    entry point. Raising, and not returning the code, matters where the caller ignores a return
    value: a Databricks Python wheel task calls the entry point in-process and fails the task
    only on an exception. Success returns normally (a console script then exits 0)."""
    code = main(argv)
    if code:
        raise SystemExit(code)


def run_job(name: str, body: Callable[[], object]) -> int:
    """Run ``body`` and map its outcome to the exit-code contract."""
    log = logging.getLogger(f"jobs.{name}")
    try:
        body()
    except SegmentationError as exc:
        log.debug("job failed", exc_info=True)
        _reason(f"{name}: error: {exc}")
        return EXIT_USER_ERROR
    except Exception as exc:  # noqa: BLE001 - the job's last line of defence
        user_error = from_spark_failure(exc)
        if user_error is not None:  # a Spark failure caused by the input (an unreadable file)
            log.debug("job failed", exc_info=True)
            _reason(f"{name}: error: {user_error}")
            return EXIT_USER_ERROR
        log.exception("job failed")
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _reason(f"{name}: failed: {type(exc).__name__}: {reason}")
        return EXIT_FAILURE
    return EXIT_OK


def _reason(line: str) -> None:
    """The one-line reason, on stderr (under spark-submit, which merges the Python process's
    stderr into its own stdout, on spark-submit's stdout), on a line of its own: after a newline
    when Spark's console progress bar may have left a stage's bar without one."""
    after_bar = "\n" if _progress_bar_on() else ""
    print(after_bar + " ".join(line.split("\n")), file=sys.stderr, flush=True)


def _progress_bar_on() -> bool:
    """Whether a classic Spark session of this process draws the console progress bar (a local
    session of the jobs does: ``segmentation.spark``); a Connect session draws none here."""
    from pyspark.sql import SparkSession

    from segmentation.spark import is_connect

    try:  # the reason must reach stderr even when the JVM is gone
        active = SparkSession.getActiveSession()
        if active is None or is_connect(active):
            return False
        return active.conf.get("spark.ui.showConsoleProgress", "false") == "true"
    except Exception:  # noqa: BLE001
        return False


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    if getattr(args, "print_config", False):
        try:
            text = printable(config_from_args(args))
        except SegmentationError as exc:
            parser.exit(EXIT_USER_ERROR, f"{parser.prog}: error: {exc}\n")
        print(text, end="")
        parser.exit(EXIT_OK)
    return args
