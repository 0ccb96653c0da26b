"""ASGI middleware of the API: request context, access log, metrics, body limit, headers,
client addresses behind trusted proxies, rate limits, and query and JSON complexity limits.

Written as plain ASGI (not ``BaseHTTPMiddleware``) to stay cheap on the ingest and decide hot
paths and to let streaming responses through untouched.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import re
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nexus.api.problems import internal_error, problem_from_error
from nexus.core.errors import ConfigurationError, NexusError, PayloadTooLarge, RateLimited
from nexus.core.ids import new_id
from nexus.core.logging import get_logger, log_request, request_id_var
from nexus.core.ratelimit import AsyncRateLimiter, Rate
from nexus.core.settings import Settings
from nexus.workspaces.deps import SESSION_COOKIE, cached_key_principal
from nexus.workspaces.models import Principal

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
log = get_logger("nexus.api")

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
        self.rate_limited = Counter(
            "nexus_rate_limited",
            "Requests refused with 429 by the API rate limits, by the limit that refused them.",
            ["limit"],
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
        responding = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, responding
            if message["type"] == "http.response.start":
                responding = True
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            # An error no handler took (one raised in a middleware, or past the app's own
            # handlers): answered here, inside this middleware, so the 500 carries the request
            # id and the security headers like every other answer.
            if responding:
                raise
            log.exception("unhandled error", path=scope.get("path"), method=scope.get("method"))
            await internal_error(Request(scope))(scope, receive, send_with_headers)
        finally:
            elapsed = time.perf_counter() - started
            template = self.metrics.route_templates.get(id(scope.get("route")), "unmatched")
            method = scope.get("method", "")
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(elapsed)
            # The path only, never the query string: tokens sometimes travel there.
            log_request(
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


# --- client addresses ---------------------------------------------------------------------

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(value: str, *, setting: str) -> tuple[Network, ...]:
    """Comma-separated CIDRs (``10.0.0.0/8, ::1``); a bad one is a :class:`ConfigurationError`."""
    networks = []
    for part in value.split(","):
        text = part.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ConfigurationError(f"{setting}: {text!r} is not an address or CIDR") from None
    return tuple(networks)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _within(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, networks: Iterable[Network]) -> bool:
    return any(ip.version == n.version and ip in n for n in networks)


class TrustedProxyMiddleware:
    """The client's address from ``X-Forwarded-For`` when, and only when, the peer is one of
    ``proxies``: the header is read from the right, skipping our own proxies, and the first
    address that is not one is the client. From anyone else the header is ignored -- it is
    whatever the client wrote. Everything after it (rate limits, sign-in) reads
    ``scope["client"]``."""

    def __init__(self, app: ASGIApp, *, proxies: tuple[Network, ...]) -> None:
        self.app = app
        self.proxies = proxies

    def client_of(self, peer: str, forwarded_for: str) -> str:
        ip = _ip(peer)
        if ip is None or not _within(ip, self.proxies):
            return peer
        client = peer
        for hop in reversed(forwarded_for.split(",")):
            hop_ip = _ip(hop.strip())
            if hop_ip is None:
                break  # a malformed hop: trust nothing beyond it
            client = str(hop_ip)
            if not _within(hop_ip, self.proxies):
                break
        return client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("client"):
            forwarded = _header(scope, b"x-forwarded-for")
            if forwarded:
                peer, port = scope["client"]
                client = self.client_of(peer, forwarded)
                if client != peer:
                    scope = {**scope, "client": (client, port)}
        await self.app(scope, receive, send)


class ClientAddresses:
    """What the rate limits need to know of a client address, cached: whether it is exempt,
    and the key its per-address counters use -- the address, or for IPv6 its /64, which one
    subscriber holds whole.

    A peer that is not an IP address (a Unix socket's, or a test client's) is local: exempt
    when 127.0.0.1 is, and otherwise (``None`` as key) held to the per-credential limits only.
    """

    MAX_CACHED = 10_000

    def __init__(self, exempt: tuple[Network, ...]) -> None:
        self.exempt = exempt
        # IPv4 networks as (address, mask) integers: checked without the ipaddress module,
        # which costs ~5 µs a parse -- most of a request's limits with many visitors.
        self._exempt_v4 = [
            (int(n.network_address), int(n.netmask)) for n in exempt if n.version == 4
        ]
        self._cache: dict[str | None, tuple[bool, str | None]] = {}
        self._local = (_within(ipaddress.ip_address("127.0.0.1"), exempt), None)

    def lookup(self, host: str | None) -> tuple[bool, str | None]:
        found = self._cache.get(host)
        if found is None:
            found = self._classify(host)
            if len(self._cache) >= self.MAX_CACHED:
                self._cache.clear()
            self._cache[host] = found
        return found

    def _classify(self, host: str | None) -> tuple[bool, str | None]:
        if host and ":" not in host:
            try:
                value = int.from_bytes(socket.inet_pton(socket.AF_INET, host), "big")
            except OSError:
                return self._local
            exempt = any(value & mask == network for network, mask in self._exempt_v4)
            return (True, None) if exempt else (False, host)
        ip = _ip(host) if host else None
        if ip is None:
            return self._local
        if _within(ip, self.exempt):
            return True, None
        if ip.version == 6:
            return False, str(ipaddress.ip_network(f"{ip}/64", strict=False))
        return False, str(ip)


# --- rate limits ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PathLimits:
    """The rates of one class of paths: per client address, per credential, per workspace."""

    address: Rate
    credential: Rate
    workspace: Rate


@dataclass(frozen=True, slots=True)
class ApiRateLimits:
    """Every API rate limit and the counters they share, built once at start-up (so a bad
    rate or a storage whose client package is missing fails there)."""

    counter: AsyncRateLimiter
    hot: PathLimits
    admin: PathLimits
    anonymous_address: Rate
    auth_failures: Rate
    addresses: ClientAddresses

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiRateLimits:
        def rate(name: str) -> Rate:
            return Rate.parse(getattr(settings, name), setting=f"NEXUS_{name.upper()}")

        return cls(
            counter=AsyncRateLimiter(
                settings.rate_limit_storage, max_keys=settings.rate_limit_max_keys
            ),
            hot=PathLimits(
                rate("rate_limit_hot_ip"),
                rate("rate_limit_hot_key"),
                rate("rate_limit_hot_workspace"),
            ),
            admin=PathLimits(
                rate("rate_limit_admin_ip"),
                rate("rate_limit_admin_key"),
                rate("rate_limit_admin_workspace"),
            ),
            anonymous_address=rate("rate_limit_anonymous_ip"),
            auth_failures=rate("rate_limit_auth_failures"),
            addresses=ClientAddresses(
                parse_networks(settings.rate_limit_exempt, setting="NEXUS_RATE_LIMIT_EXEMPT")
            ),
        )


@dataclass(frozen=True, slots=True)
class Credential:
    """What a request authenticates with: ``digest`` names it in counters (never the token
    itself); ``key`` is the API key, when it is one, for finding its workspace."""

    digest: str
    key: str | None


def credential_of(scope: Scope) -> Credential | None:
    """The request's key (``Authorization: Bearer``, or ``Basic`` with the key as username)
    or dashboard session cookie, as :mod:`nexus.workspaces.deps` reads them."""
    authorization = cookie = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = value
        elif name == b"cookie":
            cookie = value
    if authorization is not None:
        scheme, _, rest = authorization.partition(b" ")
        rest = rest.strip()
        scheme = scheme.lower()
        token: bytes | None = None
        if scheme == b"bearer" and rest:
            token = rest
        elif scheme == b"basic" and rest:
            try:
                token = base64.b64decode(rest, validate=True).partition(b":")[0] or None
            except (binascii.Error, ValueError):
                token = None
        if token is None:
            # Malformed credentials still count, as what they are, against one counter.
            return Credential(_digest(b"raw:" + authorization), None)
        return Credential(_digest(b"key:" + token), token.decode("latin-1"))
    if cookie is not None:
        session = _cookie(cookie, SESSION_COOKIE.encode())
        if session:
            return Credential(_digest(b"session:" + session), None)
    return None


def _cookie(header: bytes, name: bytes) -> bytes | None:
    for part in header.split(b";"):
        key, _, value = part.strip().partition(b"=")
        if key == name:
            return value
    return None


def _digest(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()[:32]


class RateLimitMiddleware:
    """Per client address, per credential and per workspace rate limits, answering 429
    problem+json with ``Retry-After``.

    Two classes of paths: the hot ones web pages call (``hot_paths``, ``hot_prefixes``:
    ingestion, decide, OFREP, flag definitions) with high rates, and the rest (the admin API,
    the dashboard) with lower ones. Every request from a client address counts against the
    address (the anonymous rate if it carries no credentials); a key or dashboard session
    counts against a digest of itself; a key also against its workspace, which the per-process
    key cache that ingest and decide use names at the cost of a dictionary lookup once warm
    (sessions and keys sent in a body, as analytics.js may, have no workspace quota here:
    ingest's own per-workspace event limit covers those). A 401 answer counts against the
    address's stricter failure rate; past it the address is refused altogether until the
    window ends, which stops key guessing. Exempt addresses skip everything.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limits: ApiRateLimits,
        hot_paths: frozenset[str],
        hot_prefixes: tuple[str, ...] = (),
        uncounted_failures: frozenset[str] = frozenset({"/login"}),
        metrics: Metrics | None = None,
    ) -> None:
        self.app = app
        self.limits = limits
        self.hot_paths = hot_paths
        self.hot_prefixes = hot_prefixes
        # Paths whose 401s are someone else's to count (sign-in has its own lockout).
        self.uncounted_failures = uncounted_failures
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        exempt, address = self.limits.addresses.lookup(client[0] if client else None)
        if exempt:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        hot = path in self.hot_paths or (
            bool(self.hot_prefixes) and path.startswith(self.hot_prefixes)
        )
        credential = credential_of(scope)
        refused = await self._refusal(scope, hot, address, credential)
        if refused is not None:
            await self._refuse(scope, send, *refused)
            return
        if address is None or path in self.uncounted_failures:
            await self.app(scope, receive, send)
            return
        counter = self.limits.counter
        failures = self.limits.auth_failures
        failure_key = "auth-fail/" + address

        async def send_counting_failures(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                await counter.hit(failures, failure_key)
            await send(message)

        await self.app(scope, receive, send_counting_failures)

    async def _refusal(
        self, scope: Scope, hot: bool, address: str | None, credential: Credential | None
    ) -> tuple[str, int] | None:
        """``(limit, retry_after)`` of the first limit the request is past, or None."""
        limits = self.limits
        counter = limits.counter
        rates = limits.hot if hot else limits.admin
        prefix = "hot-" if hot else "admin-"
        if address is not None:
            retry = await counter.exhausted(limits.auth_failures, "auth-fail/" + address)
            if retry:
                return "auth-failures", retry
            if hot or credential is not None:
                retry = await counter.hit(rates.address, prefix + "ip/" + address)
            else:
                retry = await counter.hit(limits.anonymous_address, "anon-ip/" + address)
            if retry:
                return "address", retry
        if credential is None:
            return None
        retry = await counter.hit(rates.credential, prefix + "cred/" + credential.digest)
        if retry:
            return "credential", retry
        if credential.key is not None:
            workspace = await self._workspace_of(scope, credential.key)
            if workspace is not None:
                retry = await counter.hit(rates.workspace, prefix + "ws/" + workspace)
                if retry:
                    return "workspace", retry
        return None

    @staticmethod
    async def _workspace_of(scope: Scope, key: str) -> str | None:
        cache: dict[str, tuple[float, Principal | None]] | None = getattr(
            scope["app"].state, "ingest_keys", None
        )
        if cache is None:
            return None
        cached = cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            principal = cached[1]
        else:
            try:
                principal = await cached_key_principal(Request(scope), key)
            except Exception:  # the route meets the same failure and answers it
                return None
        return principal.workspace_id if principal is not None else None

    async def _refuse(self, scope: Scope, send: Send, limit: str, retry_after: int) -> None:
        if self.metrics is not None:
            self.metrics.rate_limited.labels(limit).inc()
        error = RateLimited(
            f"{_REFUSALS[limit]} Try again in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )
        response = problem_from_error(Request(scope), error)
        await response(scope, _no_body, send)


_REFUSALS = {
    "auth-failures": "Too many failed authentication attempts from this address.",
    "address": "Too many requests from this address.",
    "credential": "Too many requests with these credentials.",
    "workspace": "Too many requests for this workspace.",
}


# --- query and JSON complexity --------------------------------------------------------------


class UriTooLong(NexusError):
    status = 414
    code = "uri-too-long"
    title = "URI too long"


class PayloadTooComplex(NexusError):
    status = 413
    code = "payload-too-complex"
    title = "Payload too complex"


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def json_complexity_problem(document: Any, *, max_depth: int, max_items: int) -> str | None:
    """What makes ``document`` too complex, or None: nesting deeper than ``max_depth``
    containers, or more than ``max_items`` array items and object members in all. Stops as
    soon as either is passed, so the work is bounded by the limits, not by the document."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    items = 0
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            return f"The JSON body is nested deeper than {max_depth} levels."
        items += len(node) if isinstance(node, dict | list) else 0
        if items > max_items:
            return f"The JSON body holds more than {max_items} items."
        children = node.values() if isinstance(node, dict) else node
        if isinstance(node, dict | list):
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return None


class RequestComplexityMiddleware:
    """Refuses what is cheap to send and dear to parse, before any route parses it.

    * a query string longer than ``max_query_bytes`` or with more than ``max_query_params``
      parameters: 414 (every path);
    * a JSON body nested deeper than ``max_json_depth`` or with more than ``max_json_items``
      items: 413 (every path but the hot ones, which parse their own bounded documents:
      ingestion keeps Segment's 32 KB per event and 500 KB per batch).

    It sits inside the body-size limit, so the body it reads is already bounded.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_query_bytes: int,
        max_query_params: int,
        max_json_depth: int,
        max_json_items: int,
        hot_paths: frozenset[str] = frozenset(),
        hot_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.max_query_bytes = max_query_bytes
        self.max_query_params = max_query_params
        self.max_json_depth = max_json_depth
        self.max_json_items = max_json_items
        self.hot_paths = hot_paths
        self.hot_prefixes = hot_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query: bytes = scope.get("query_string", b"")
        if query:
            problem = self._query_problem(query)
            if problem is not None:
                await _send_problem(scope, send, UriTooLong(problem))
                return
        path: str = scope["path"]
        if (
            scope["method"] not in _BODY_METHODS
            or path in self.hot_paths
            or (bool(self.hot_prefixes) and path.startswith(self.hot_prefixes))
            or not _is_json(_header(scope, b"content-type"))
        ):
            await self.app(scope, receive, send)
            return
        body, complete = await _read_all(receive)
        if not complete:
            return  # the client left, or the body limit outside already answered 413
        problem = self._json_problem(body)
        if problem is not None:
            await _send_problem(scope, send, PayloadTooComplex(problem))
            return
        await self.app(scope, _replay_body(body, receive), send)

    def _query_problem(self, query: bytes) -> str | None:
        if len(query) > self.max_query_bytes:
            return f"The query string is longer than {self.max_query_bytes} bytes."
        if query.count(b"&") >= self.max_query_params:
            params = sum(1 for part in query.split(b"&") if part)
            if params > self.max_query_params:
                return f"The query string has more than {self.max_query_params} parameters."
        return None

    def _json_problem(self, body: bytes) -> str | None:
        if not body:
            return None
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            # orjson refuses nesting past 1024 levels ("depth limit exceeded"; older releases
            # said "recursion limit reached") -- far past any sane limit.
            reason = str(exc).lower()
            if "depth" in reason or "recursion" in reason:
                return f"The JSON body is nested deeper than {self.max_json_depth} levels."
            return None  # not JSON: the route answers that itself
        return json_complexity_problem(
            document, max_depth=self.max_json_depth, max_items=self.max_json_items
        )


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


async def _read_all(receive: Receive) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"", False
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), True


def _replay_body(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_problem(scope: Scope, send: Send, error: NexusError) -> None:
    response = problem_from_error(Request(scope), error)
    await response(scope, _no_body, send)
