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
