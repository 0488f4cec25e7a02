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


class ClusterError(AntsslError, ConnectionError):
    """The Ray cluster named by RAY_ADDRESS cannot be reached."""


class SearchError(AntsslError, ValueError):
    """A search request has a bad value (k, vectors, bbox, scenes, tile index, radius)."""


class AnnError(AntsslError, ValueError):
    """Bad input to an ANN index (shape, dtype, parameters, k, m) or a bad index file."""


class EvaluationError(AntsslError, ValueError):
    """Evaluation inputs are inconsistent (shapes, labels, groups, k) or unusable."""


# The service's request errors (raised by the search and the Serve app; mapped to HTTP
# status codes in one table, antssl.serve.errors).


class BadRequest(AntsslError, ValueError):
    """The request is malformed (body, field types, shapes); the message names the field."""


class NotFound(AntsslError, LookupError):
    """The request names a tile or place that does not exist."""


class TooLarge(AntsslError, ValueError):
    """The request body is larger than the service accepts."""


class Unauthorized(AntsslError, PermissionError):
    """A bearer token is required and was missing or wrong."""


class Forbidden(AntsslError, PermissionError):
    """The bearer token is valid, but not for this route (the read token on an admin one)."""


class ServiceError(AntsslError, RuntimeError):
    """The service answered with an error (the message is its detail); raised by the client."""
