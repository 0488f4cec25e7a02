"""The HTTP edge of the service: request ids, the one error body, logs, body limits, auth.

- Every response carries ``X-Request-ID`` (Ray Serve's request id, so the id in an error
  body finds the replica's log lines).
- Every error answers :class:`~antssl.serve.schemas.ErrorBody` (``detail``, ``code``,
  ``request_id``): antssl's errors by the table in :mod:`antssl.serve.errors`, FastAPI's
  validation errors and unknown routes by their status, anything else as 500.
- A 4xx is one INFO line under ``antssl.serve`` (no traceback); a 5xx an ERROR with the
  traceback; with ``access_log`` one line per request under ``antssl.serve.access``.
- Bodies are read chunk by chunk and refused as soon as they pass the limit.
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from antssl.errors import AntsslError, BadRequest, Forbidden, TooLarge, Unauthorized
from antssl.serve.errors import HTTP_CODES, RETRY_AFTER_S, code_of, status_of
from antssl.serve.payload import describe

log = logging.getLogger("antssl.serve")
access = logging.getLogger("antssl.serve.access")

SETTINGS: dict[str, Any] = {"access_log": False, "cors_origins": []}
"""Set by the Api replica from its arguments (one replica per process)."""


def configure_logging(access_log: bool, cors_origins: list[str]) -> None:
    """Route ``antssl`` lines to Ray Serve's replica log (file and console) at INFO."""
    SETTINGS.update(access_log=access_log, cors_origins=list(cors_origins))
    logger = logging.getLogger("antssl")
    serve_logger = logging.getLogger("ray.serve")
    if not logger.handlers and serve_logger.handlers:
        for h in serve_logger.handlers:
            logger.addHandler(h)
        logger.propagate = False
    logger.setLevel(logging.INFO)


def request_id(scope: Scope) -> str:
    rid = scope.get("state", {}).get("request_id")
    return str(rid) if rid else "-"


def error_response(
    status: int, code: str, detail: str, rid: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    extra = dict(headers or {})
    extra["X-Request-ID"] = rid
    if status == 503:
        extra.setdefault("Retry-After", str(RETRY_AFTER_S))
    if status == 401:
        extra.setdefault("WWW-Authenticate", 'Bearer realm="antssl"')
    if status == 403:  # RFC 6750 3.1: a valid token without the rights the route needs
        extra.setdefault("WWW-Authenticate", 'Bearer realm="antssl", error="insufficient_scope"')
    body = {"detail": detail, "code": code, "request_id": rid}
    return JSONResponse(body, status_code=status, headers=extra)


def _log_client_error(request: Request, status: int, code: str, detail: str) -> None:
    log.info(
        "%d %s %s %s request_id=%s: %s",
        status,
        code,
        request.method,
        request.url.path,
        request_id(request.scope),
        detail,
    )


async def _antssl_error(request: Request, err: Exception) -> JSONResponse:
    status, code = status_of(err), code_of(err)
    if status >= 500:
        log.error(
            "%d %s %s request_id=%s", status, request.method, request.url.path,
            request_id(request.scope), exc_info=err,
        )  # fmt: skip
    else:
        _log_client_error(request, status, code, str(err))
    return error_response(status, code, str(err), request_id(request.scope))


async def _validation_error(request: Request, err: Exception) -> JSONResponse:
    errors = err.errors() if isinstance(err, RequestValidationError) else []
    detail = describe(errors)
    _log_client_error(request, 422, "invalid_request", detail)
    return error_response(422, "invalid_request", detail, request_id(request.scope))


async def _http_error(request: Request, err: Exception) -> JSONResponse:
    status = err.status_code if isinstance(err, StarletteHTTPException) else 500
    detail = str(getattr(err, "detail", "")) or "error"
    if status == 404 and detail == "Not Found":
        detail = f"{request.url.path}: no such route (OpenAPI at /docs)"
    elif status == 405:
        detail = f"{request.method} {request.url.path}: method not allowed"
    code = HTTP_CODES.get(status, "error")
    _log_client_error(request, status, code, detail)
    headers = dict(getattr(err, "headers", None) or {})
    return error_response(status, code, detail, request_id(request.scope), headers)


async def _serve_unavailable(request: Request, err: Exception) -> JSONResponse:
    detail = f"service busy or restarting ({type(err).__name__}); retry in {RETRY_AFTER_S} s"
    log.warning("503 %s %s request_id=%s: %s", request.method, request.url.path,
                request_id(request.scope), err)  # fmt: skip
    return error_response(503, "unavailable", detail, request_id(request.scope))


def install(
    api: FastAPI,
    unavailable: tuple[type[Exception], ...] = (),
    request_id: Callable[[], str | None] | None = None,
) -> None:
    """The error handlers and the request-id middleware of ``api``. ``unavailable``: the
    runtime's overload / lost-replica errors (503); ``request_id``: the runtime's id of the
    current request (else a fresh one)."""
    api.add_exception_handler(AntsslError, _antssl_error)
    api.add_exception_handler(RequestValidationError, _validation_error)
    api.add_exception_handler(StarletteHTTPException, _http_error)
    for kind in unavailable:
        api.add_exception_handler(kind, _serve_unavailable)
    api.add_middleware(RequestContext, request_id=request_id)


class RequestContext:
    """Pure ASGI middleware: request id, CORS (when origins are configured), access log,
    and the last resort for unexpected errors (500 with the one body, traceback logged)."""

    def __init__(self, app: ASGIApp, request_id: Callable[[], str | None] | None = None) -> None:
        self.app = app
        self.request_id = request_id
        self._inner: ASGIApp | None = None

    def _app(self) -> ASGIApp:
        if self._inner is None:
            inner = self.app
            if SETTINGS["cors_origins"]:
                from starlette.middleware.cors import CORSMiddleware

                inner = CORSMiddleware(
                    inner,
                    allow_origins=SETTINGS["cors_origins"],
                    allow_methods=["GET", "POST"],
                    allow_headers=["authorization", "content-type"],
                    expose_headers=["x-request-id", "retry-after"],
                )
            self._inner = inner
        return self._inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app()(scope, receive, send)
            return
        given = self.request_id() if self.request_id else None
        rid = given or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        own_header = given is None  # Ray Serve's proxy sets X-Request-ID to its own id
        start = time.perf_counter()
        status = {"code": 0, "sent": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["sent"] = message["status"], True
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                if own_header:
                    headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self._app()(scope, receive, send_with_id)
        except Exception as err:
            log.error(
                "500 %s %s request_id=%s", scope.get("method"), scope.get("path"), rid,
                exc_info=err,
            )  # fmt: skip
            if status["sent"]:
                raise
            response = error_response(
                500, "internal_error", f"internal error: {type(err).__name__}", rid
            )
            await response(scope, receive, send_with_id)
        finally:
            if SETTINGS["access_log"]:
                access.info(
                    '%s %s %d %.1fms request_id=%s', scope.get("method"), scope.get("path"),
                    status["code"], (time.perf_counter() - start) * 1000, rid,
                )  # fmt: skip


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` bytes (whether or not the
    client declared a Content-Length), and with 422 when empty."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"body: {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"body: more than {limit} bytes; the limit is {limit}")
        chunks.append(chunk)
    if not size:
        raise BadRequest("body: empty")
    return b"".join(chunks)


def bearer(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme in any case)."""
    value = request.headers.get("authorization", "")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def check_token(
    request: Request,
    *tokens: str | None,
    what: str = "this route",
    lesser: tuple[str | None, ...] = (),
) -> None:
    """Unauthorized unless the request's bearer token is one of ``tokens`` (set ones);
    Forbidden when it is one of ``lesser`` instead: a valid token, not enough for ``what``
    (the read token on /v1/reload when an admin token is set)."""
    wanted = [t for t in tokens if t]
    if not wanted:
        return
    given = bearer(request)
    if given is None:
        raise Unauthorized(f"authorization: {what} needs an 'Authorization: Bearer <token>' header")
    if _matches(given, wanted):
        return
    if _matches(given, [t for t in lesser if t]):
        raise Forbidden(
            f"authorization: the bearer token is valid, but {what} needs the admin token"
        )
    raise Unauthorized(f"authorization: the bearer token is not valid for {what}")


def _matches(given: str, tokens: list[str]) -> bool:
    return any(hmac.compare_digest(given.encode(), t.encode()) for t in tokens)
