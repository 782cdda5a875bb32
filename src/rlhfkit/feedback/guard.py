"""What every response of the labeling app gets: a capped request body, the security headers, safe errors.

- :class:`RequestGuard` is ASGI middleware: it caps request bodies and adds the security headers to
  every response that passes through it, error pages included.
- :func:`install_error_handlers` makes the app's error replies safe to show: a store that cannot take a
  write (lock held past every retry, full disk, lost connection) answers 503 with Retry-After and a
  message for labelers, while the detail, which names the store, goes to the server's log; a
  validation error (422) names the field and the rule but never echoes the submitted value, which may
  be a login token; anything unexpected is a 500 page that still carries the security headers.
"""

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse, PlainTextResponse, Response

from rlhfkit.feedback.backend import StoreBusyError, StoreError, StoreFullError

logger = logging.getLogger("rlhfkit.feedback.app")

# Seconds a client should wait before sending the request again: a lock clears in moments, a full disk
# needs a person to make room.
_RETRY_AFTER_S = {StoreBusyError: 5, StoreFullError: 120}
_RETRY_AFTER_DEFAULT_S = 30

SECURITY_HEADERS = (
    (
        "content-security-policy",
        (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; object-src 'none'; "
            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        ),
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
)


class RequestGuard:
    """ASGI middleware: caps request bodies and adds the security headers to every response."""

    def __init__(self, app: Callable[..., Awaitable[None]], max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    if name not in headers:
                        headers[name] = value
            await send(message)

        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            if not declared.isdigit():
                await PlainTextResponse("bad Content-Length header", 400)(scope, receive, send_with_headers)
                return
            if int(declared) > self.max_bytes:
                await self._too_large(scope, receive, send_with_headers)
                return
        # Read the (small, capped) body up front: a chunked request cannot promise its size in advance.
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await self._too_large(scope, receive, send_with_headers)
                return
        delivered = False

        async def replay() -> MutableMapping[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send_with_headers)

    async def _too_large(self, scope: MutableMapping[str, Any], receive: Callable, send: Callable) -> None:
        response = PlainTextResponse(f"request body larger than {self.max_bytes} bytes", 413)
        await response(scope, receive, send)


# ------------------------------------------------------------------------------------ error replies


def retry_after(exc: StoreError) -> str:
    """The Retry-After value (seconds) for a request the store could not serve."""
    return str(_RETRY_AFTER_S.get(type(exc), _RETRY_AFTER_DEFAULT_S))


def store_trouble(exc: StoreError, *, answer_kept: bool) -> str:
    """What a labeler is told when the store failed them; never where the store lives (that is logged)."""
    if isinstance(exc, StoreBusyError):
        what, when = "The label store is busy right now", "in a few seconds"
    elif isinstance(exc, StoreFullError):
        what, when = "The server has run out of storage space", "once the project's admin has made room"
    else:
        what, when = "The server cannot reach its label store right now", "in a minute"
    if answer_kept:
        return (
            f"{what}, so your answer was not saved. It is still filled in below: submit it again {when}. "
            "If this keeps happening, tell the project's admin."
        )
    return (
        f"{what}, so nothing was saved. Try again {when}; if this keeps happening, tell the project's admin."
    )


def log_store_trouble(request: Request, exc: StoreError) -> None:
    """The full story for whoever runs the server: which store, and what the database said."""
    level = logging.WARNING if isinstance(exc, StoreBusyError) else logging.ERROR
    logger.log(level, "%s %s answered 503: %s", request.method, request.url.path, exc)


def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI's own reply repeats each offending value ("input"): on /login that is the login token, on
    # /label the annotator's comment. The field and the rule it broke are enough to fix the request.
    errors = [{"loc": e.get("loc"), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()]
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


def _server_error(_request: Request, _exc: Exception) -> PlainTextResponse:
    # Starlette runs this in its outermost middleware, outside RequestGuard, so the headers are set here.
    # The exception is re-raised after it, so the server still logs the traceback.
    return PlainTextResponse(
        "Something went wrong on the server, and your last action may not have been saved. Reload the page; "
        "if this keeps happening, tell the project's admin.",
        status_code=500,
        headers=dict(SECURITY_HEADERS),
    )


def install_error_handlers(app: FastAPI, error_page: Callable[[int, str], Response]) -> None:
    """Register the safe error replies; ``error_page(status, message)`` renders the app's error page."""

    def store_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StoreError)
        log_store_trouble(request, exc)
        response = error_page(503, store_trouble(exc, answer_kept=False))
        response.headers["retry-after"] = retry_after(exc)
        return response

    app.add_exception_handler(StoreError, store_error)
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _server_error)
