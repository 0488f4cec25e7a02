"""One error hierarchy for antssl.

Every error a user, a file or a request can cause is an :class:`AntsslError`.
Each subclass also subclasses the matching builtin, so ``except ValueError``
and ``except OSError`` keep working for callers that do not know antssl.
Messages name the bad value and, where there is one, the fix.
"""

from __future__ import annotations


class AntsslError(Exception):
    """Base class of every error antssl raises on purpose."""


class ConfigError(AntsslError, ValueError):
    """A configuration key has a bad value, or a required key is missing."""


class StorageError(AntsslError, OSError):
    """A workspace or object-storage URI cannot be read or written."""


class SceneReadError(AntsslError, OSError):
    """A scene is missing, corrupt, truncated or unreadable."""


class SceneError(AntsslError, ValueError):
    """A scene was read but cannot be used as configured (no CRS, bad bands, too small)."""


class MaskError(AntsslError, ValueError):
    """The coastal mask (vector or raster) is unreadable or misses every scene."""


class EmptyResultError(AntsslError, ValueError):
    """A stage produced nothing (no tiles kept, no scenes left)."""


class StageOrderError(AntsslError, RuntimeError):
    """A stage needs the output of an earlier stage that is not in the workspace."""


class TrainingDivergedError(AntsslError, RuntimeError):
    """Training produced a NaN/inf loss (or no checkpoint); the message names the step."""
