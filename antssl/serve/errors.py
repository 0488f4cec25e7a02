"""The one table mapping errors to HTTP status codes (domain code never imports HTTP).

Every error class lives in :mod:`antssl.errors`; each one is in this table (a test
checks), so no error antssl raises on purpose answers 500. :data:`CODES` gives each a
machine-readable ``code`` for the one error body shape (``detail``, ``code``,
``request_id``: :class:`antssl.serve.schemas.ErrorBody`).
"""

from __future__ import annotations

from antssl.errors import (
    AnnError,
    BadRequest,
    ClusterError,
    ConfigError,
    EmptyResultError,
    EvaluationError,
    Forbidden,
    MaskError,
    NotFound,
    SceneError,
    SceneReadError,
    SearchError,
    ServiceError,
    StageOrderError,
    StorageError,
    TooLarge,
    TrainingDivergedError,
    Unauthorized,
)

__all__ = [
    "CODES",
    "STATUS",
    "BadRequest",
    "Forbidden",
    "NotFound",
    "TooLarge",
    "Unauthorized",
    "code_of",
    "status_of",
]

STATUS: list[tuple[type[BaseException], int]] = [
    (Unauthorized, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (TooLarge, 413),
    (BadRequest, 422),
    (SearchError, 422),
    (AnnError, 422),
    (ConfigError, 422),
    (EvaluationError, 422),
    (SceneError, 422),
    (MaskError, 422),
    (EmptyResultError, 422),
    (StageOrderError, 503),
    (StorageError, 503),
    (SceneReadError, 503),
    (ClusterError, 503),
    (TrainingDivergedError, 503),
    (ServiceError, 502),
]


CODES: dict[type[BaseException], str] = {
    Unauthorized: "unauthorized",
    Forbidden: "forbidden",
    NotFound: "not_found",
    TooLarge: "payload_too_large",
    BadRequest: "invalid_request",
    SearchError: "invalid_query",
    AnnError: "invalid_query",
    ConfigError: "invalid_config",
    EvaluationError: "invalid_request",
    SceneError: "invalid_request",
    MaskError: "invalid_request",
    EmptyResultError: "empty_result",
    StageOrderError: "not_ready",
    StorageError: "storage_unavailable",
    SceneReadError: "storage_unavailable",
    ClusterError: "cluster_unavailable",
    TrainingDivergedError: "not_ready",
    ServiceError: "upstream_error",
}
"""The ``code`` of each error class (the nearest class in the MRO that is listed)."""

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    500: "internal_error",
    502: "upstream_error",
    503: "unavailable",
    504: "timeout",
}
"""The ``code`` of a status raised by the web framework itself (no route, bad method)."""

RETRY_AFTER_S = 5
"""The ``Retry-After`` of every 503: the service is starting, reloading or overloaded."""


def code_of(err: BaseException) -> str:
    """The machine-readable ``code`` of an error (``internal_error`` when unknown)."""
    for kind in type(err).__mro__:
        if kind in CODES:
            return CODES[kind]
    return HTTP_CODES.get(status_of(err), "internal_error")


def status_of(err: BaseException) -> int:
    """HTTP status for an error raised while serving a request (500 when unknown)."""
    for kind, code in STATUS:
        if isinstance(err, kind):
            return code
    return 500
