"""The fast path of ``POST /v1/decide``: the ordinary request, answered below the framework.

A decision is due in a few milliseconds at a thousand requests a second, and most of what a
FastAPI route costs per request (routing, dependency injection, the exception and exit-stack
layers) is bookkeeping a decision does not need. This middleware answers the ordinary
decision itself -- a key already in the per-process key cache with the ``decide``
permission, a body that validates, a workspace whose configuration is loaded -- with the
same code and the same JSON as the route. Everything else (a first or unknown key, a
dashboard session, invalid JSON, a cold workspace, the slower emotion tiers) is replayed to
the FastAPI route untouched, which answers it, errors included, as documented. It sits
inside the request-context and body-limit middlewares, so access logs, metrics, security
headers and the size limit apply to both paths alike.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nexus.core.errors import NexusError
from nexus.events.bots import BotMarker
from nexus.experiments.decisions import DecisionRuntime
from nexus.experiments.models import DecideRequest
from nexus.experiments.views import background_reload
from nexus.privacy.runtime import PrivacyRuntime
from nexus.workspaces.models import Permission, Principal

DECIDE_PATH = "/v1/decide"
_JSON_HEADERS = [(b"content-type", b"application/json")]


def _token(scope: Scope) -> str | None:
    """The key in ``Authorization: Bearer <key>`` or ``Basic base64(<key>:)``, if any."""
    for name, value in scope["headers"]:
        if name != b"authorization":
            continue
        scheme, _, credentials = value.decode("latin-1").partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer":
            return credentials or None
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
            return decoded.partition(":")[0] or None
        return None
    return None


class DecideFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != DECIDE_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        state: Any = scope["app"].state
        principal = self._principal(state, scope)
        body, complete = await _read_body(receive)
        answer = self._answer(state, principal, body) if complete else None
        if answer is None:
            await self.app(scope, _replay(body, receive, complete), send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_JSON_HEADERS, (b"content-length", str(len(answer)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    @staticmethod
    def _principal(state: Any, scope: Scope) -> Principal | None:
        token = _token(scope)
        if token is None:
            return None
        cache: dict[str, tuple[float, Principal | None]] = state.ingest_keys
        hit = cache.get(token)
        if hit is None or hit[0] <= time.monotonic() or hit[1] is None:
            return None
        principal = hit[1]
        if principal.workspace_id is None or not principal.can(Permission.DECIDE):
            return None
        return principal

    @staticmethod
    def _answer(state: Any, principal: Principal | None, body: bytes) -> bytes | None:
        if principal is None or principal.workspace_id is None:
            return None
        runtime: DecisionRuntime = state.decisions
        workspace_id = principal.workspace_id
        if runtime.needs_load(workspace_id):
            return None
        try:
            request = DecideRequest.model_validate_json(body)
        except ValidationError:
            return None
        privacy: PrivacyRuntime = state.privacy
        permitted = privacy.cached_permissions(workspace_id, request.visitor_id)
        if permitted is None or _text_needs_the_route(runtime, privacy, workspace_id, request):
            return None
        if runtime.refresh_due(workspace_id):
            background_reload(runtime, workspace_id)
        try:
            bots: BotMarker | None = state.events.bots
            bot = bots is not None and bots.is_bot(workspace_id, request.visitor_id)
            decision = runtime.decide(workspace_id, request, permitted=permitted, bot=bot)
            return orjson.dumps(decision)
        except NexusError:
            # The caller's mistake, found before anything was logged: the route answers it
            # as problem+json.
            return None


def _text_needs_the_route(
    runtime: DecisionRuntime, privacy: PrivacyRuntime, workspace_id: str, request: DecideRequest
) -> bool:
    """Text read by a slower tier than the edge one, or text that may hold PII (the route
    masks it before any model reads it)."""
    if request.text is None:
        return False
    if request.emotion is None and runtime.emotion_mode != "edge":
        return True
    return privacy.may_hold_pii(workspace_id, request.text) is not False


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The whole body, or what came before the client went away (``complete`` False)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), True


def _replay(body: bytes, receive: Receive, complete: bool) -> Receive:
    """A ``receive`` that hands the already-read body to the app, then the real channel."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            if complete:
                return {"type": "http.request", "body": body, "more_body": False}
            return {"type": "http.disconnect"}
        return await receive()

    return replayed
