"""What every response of the labeling app gets: a capped request body and the security headers.

The guard is ASGI middleware, so it sees every response the app sends, including error pages.
"""

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import PlainTextResponse

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
