"""Named errors. Each message names the column, key, file or table at fault and says what to do.

Jobs turn any :class:`SegmentationError` into a one-line message on stderr and
exit code 2; anything else exits 1.
"""

from __future__ import annotations


class SegmentationError(Exception):
    """Base class of every error the jobs report as a user-facing problem."""


class ConfigError(SegmentationError, ValueError):
    """A configuration file or override is invalid; the message names the key and its source."""


class InputNotFoundError(SegmentationError, FileNotFoundError):
    """An input table or path does not exist or cannot be read."""


class ContractError(SegmentationError, ValueError):
    """The input does not meet the data contract (missing column, wrong type, empty input)."""


class QuarantineThresholdError(SegmentationError):
    """Too large a share of the input was quarantined."""


class DegenerateFeaturesError(SegmentationError):
    """The features have no variation left to cluster on (all constant or duplicated)."""


class ModelMismatchError(SegmentationError):
    """A model does not fit the data it is asked to score (different features, missing model)."""


class ModelNotFoundError(ModelMismatchError):
    """The registered model, version or alias to load does not exist."""


class InputReadError(SegmentationError):
    """An input file exists but cannot be read: it is corrupt, or a column's type differs between files."""


class ConcurrentWriteError(SegmentationError):
    """Another run committed to the same Delta table first; this run committed nothing to it."""


class DeltaNotActiveError(SegmentationError):
    """The Spark session cannot run Delta Lake's SQL: its extension, catalog or jars are missing."""


class FitFailedError(SegmentationError):
    """A model fit did not finish in time, or ended non-finite, from every start it was given;
    the message names the algorithm, k and the key that bounds it."""


class JoinMatchError(SegmentationError, ValueError):
    """Too few transactions' keys find their row in a joined table (customers, products): the keys
    probably differ in type or format; the message names both key columns and unmatched ids."""


def from_spark_failure(exc: BaseException) -> SegmentationError | None:
    """The user-facing error behind a Spark failure, or None when it is not one.

    A file Spark cannot read surfaces as a ``FAILED_READ_FILE`` error, raised from whatever
    action first touched the file. On classic Spark it often hides in the Java cause chain of
    a job failure; over Spark Connect the server sends it as the exception's own condition,
    with the JVM stack trace as text. Either way this names the file and, where Spark knows
    it, the reason.
    """
    for throwable in _cause_chain(exc):
        if error_condition(throwable).startswith("FAILED_READ_FILE"):
            message = _clean(_call(throwable, "getMessage") or error_condition(throwable))
            detail = _root_message(throwable)
            hint = f" ({detail})" if detail and detail not in message else ""
            return InputReadError(f"{message}{hint}; remove, replace or rewrite that file and rerun")
    return None


def _cause_chain(exc: BaseException) -> list[object]:
    """``exc`` and its causes: the Java ones on classic Spark (a Connect exception has none)."""
    chain: list[object] = []
    throwable = getattr(exc, "java_exception", None) or getattr(exc, "_origin", None) or exc
    while throwable is not None and len(chain) < 20:
        chain.append(throwable)
        throwable = _call(throwable, "getCause")
    return chain


def _root_message(throwable: object) -> str:
    """The message of the deepest cause: from the Java chain, or the JVM stack trace a Connect
    server sends (its last ``Caused by:`` line)."""
    root = throwable
    while _call(root, "getCause") is not None:
        root = root.getCause()
    if root is not throwable:
        return _clean(_call(root, "getMessage") or "")
    trace = _call(throwable, "getStackTrace")
    if isinstance(trace, str):
        causes = [line.split("Caused by: ", 1)[1] for line in trace.splitlines() if "Caused by: " in line]
        if causes:
            return _clean(causes[-1].split(": ", 1)[-1])
    return ""


def error_condition(exc: object) -> str:
    """Spark's error condition (``DELTA_TABLE_ONLY_OPERATION``...) of a Python or Java exception, or ''.

    A classic session's Java exception that PySpark has no class for (Delta's own, unless
    ``delta.exceptions`` was imported) arrives as PySpark's generic Java error: its condition is the
    Java exception's.
    """
    return _call(exc, "getCondition") or _call(getattr(exc, "java_exception", None), "getCondition") or ""


def _call(obj: object, method: str):
    try:
        return getattr(obj, method)()
    except Exception:  # noqa: BLE001 - a Java proxy may lack the method or the JVM may be gone
        return None


def _clean(message: str) -> str:
    """Spark's message without its [CONDITION] prefix, SQLSTATE suffix and later lines."""
    text = message.strip().splitlines()[0] if message.strip() else ""
    if text.startswith("[") and "] " in text:
        text = text.split("] ", 1)[1]
    return text.split(" SQLSTATE:")[0].strip().rstrip(".")


class ClvFitError(SegmentationError):
    """A CLV model (BG/NBD, Gamma-Gamma) did not converge or gave parameters with no finite answer."""


class TooFewRepeatCustomersError(ClvFitError):
    """Too few customers with a repeat purchase to fit a CLV model."""
