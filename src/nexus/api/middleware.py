"""ASGI middleware of the API: request context, access log, metrics, body limit, headers.

Written as plain ASGI (not ``BaseHTTPMiddleware``) to stay cheap on the ingest and decide hot
paths and to let streaming responses through untouched.
"""

from __future__ import annotations

import re
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nexus.api.problems import problem_from_error
from nexus.core.errors import PayloadTooLarge
from nexus.core.ids import new_id
from nexus.core.logging import get_logger, request_id_var

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
access_log = get_logger("nexus.access")

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        b"frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ),
]


class Metrics:
    """The API's Prometheus metrics, on a registry of the app's own."""

    def __init__(self) -> None:
        # id(route) -> full path template, filled by the app factory; labels use templates,
        # never raw paths, so ids in URLs cannot blow up the series count.
        self.route_templates: dict[int, str] = {}
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "nexus_http_requests",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "nexus_http_request_duration_seconds",
            "Time to the end of the response, by method and route template.",
            ["method", "route"],
            registry=self.registry,
        )


class RequestContextMiddleware:
    """Request id (honouring a sane incoming ``X-Request-ID``), access log, metrics and
    security headers for every HTTP request."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _REQUEST_ID_RE.match(incoming) else new_id("req")
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            elapsed = time.perf_counter() - started
            template = self.metrics.route_templates.get(id(scope.get("route")), "unmatched")
            method = scope.get("method", "")
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(elapsed)
            # The path only, never the query string: tokens sometimes travel there.
            access_log.info(
                "request",
                method=method,
                path=scope.get("path"),
                status=status,
                duration_ms=round(elapsed * 1000, 2),
            )
            request_id_var.reset(token)


class BodySizeLimitMiddleware:
    """Refuses request bodies over ``max_bytes`` with 413: by ``Content-Length`` before reading,
    and by counting for chunked uploads that do not declare one."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _send_too_large(scope, send, self.max_bytes)
            return
        received = 0
        refused = False
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Answer 413 ourselves and tell the app the client went away; whatever the
                    # app makes of that is dropped below.
                    refused = True
                    if not response_started:
                        await _send_too_large(scope, send, self.max_bytes)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if refused:
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not refused:
                raise


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than the limit of {max_bytes} bytes.")


async def _send_too_large(scope: Scope, send: Send, max_bytes: int) -> None:
    response = problem_from_error(None, _too_large(max_bytes))
    await response(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def _header(scope: Scope, name: bytes) -> str | None:
    headers: Any = scope.get("headers", [])
    for key, value in headers:
        if key == name:
            decoded: str = value.decode("latin-1")
            return decoded
    return None


class IngestCorsMiddleware:
    """CORS for what web pages call with the public write key (ingestion, decide, OFREP, flag
    definitions), so that SDKs in any site's pages can call it.

    Write keys are public and carry no cookies' authority here, so any origin may send; the
    rest of the API stays same-origin.
    """

    def __init__(
        self, app: ASGIApp, *, paths: frozenset[str], prefixes: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.paths = paths
        self.prefixes = prefixes

    def _applies(self, path: str) -> bool:
        return path in self.paths or (bool(self.prefixes) and path.startswith(self.prefixes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._applies(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        if scope.get("method") == "OPTIONS":
            await send(
                {
                    "type": "http.response.start",
                    "status": 204,
                    "headers": [
                        *_CORS_HEADERS,
                        (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
                        (
                            b"access-control-allow-headers",
                            b"authorization, content-type, content-encoding, if-none-match",
                        ),
                        (b"access-control-max-age", b"86400"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_CORS_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_cors)


_CORS_HEADERS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-expose-headers", b"etag"),
]
