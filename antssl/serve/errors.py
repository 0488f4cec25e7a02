"""The one table mapping errors to HTTP status codes (domain code never imports HTTP)."""

from __future__ import annotations

from antssl.errors import AntsslError, ConfigError, StageOrderError, StorageError
from antssl.search import SearchError


class BadRequest(AntsslError, ValueError):
    """The request is malformed (body, field types, shapes); the message names the field."""


class NotFound(AntsslError, LookupError):
    """The request names a tile or place that does not exist."""


class TooLarge(AntsslError, ValueError):
    """The request body is larger than the service accepts."""


class Unauthorized(AntsslError, PermissionError):
    """A bearer token is required and was missing or wrong."""


STATUS: list[tuple[type[BaseException], int]] = [
    (Unauthorized, 401),
    (NotFound, 404),
    (TooLarge, 413),
    (BadRequest, 422),
    (SearchError, 422),
    (ConfigError, 422),
    (StageOrderError, 503),
    (StorageError, 503),
]


def status_of(err: BaseException) -> int:
    """HTTP status for an error raised while serving a request (500 when unknown)."""
    for kind, code in STATUS:
        if isinstance(err, kind):
            return code
    return 500
