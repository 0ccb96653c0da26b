"""Per-process cache of the hosted funnels being served: their parsed pages and the
workspace's public write key, so that a page view reads the database at most once per TTL."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from nexus.core.errors import NotFound
from nexus.pages import service
from nexus.pages.blocks import Page
from nexus.workspaces import service as workspaces_service

TTL_SECONDS = 5.0
MAX_SITES = 10_000


@dataclass(frozen=True, slots=True)
class Step:
    slug: str
    index: int
    page: Page
    next_slug: str | None


@dataclass(slots=True)
class Site:
    """One hosted funnel as served: its steps by slug, and the key its pages send with."""

    workspace_id: str
    slug: str
    name: str
    steps: dict[str, Step]
    order: tuple[str, ...]
    write_key: str | None
    loaded_at: float = field(default_factory=time.monotonic)


class PagesRuntime:
    """Loads hosted funnels on demand and keeps them :data:`TTL_SECONDS`; a write through
    this process's API invalidates its funnel at once (read-your-writes).

    On the event loop, :meth:`site` answers from the cache; an expired entry is still served
    while one background load refreshes it, and concurrent views of a funnel not loaded yet
    wait for one shared load -- a busy page never queues a load per request."""

    def __init__(self, session: Callable[[], AbstractContextManager[Session]]) -> None:
        self._session = session
        self._sites: dict[tuple[str, str], Site | None] = {}
        self._loaded: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._inflight: dict[tuple[str, str], asyncio.Future[Site | None]] = {}

    async def site(self, workspace_id: str, slug: str) -> Site | None:
        key = (workspace_id, slug)
        loaded = self._loaded.get(key)
        if loaded is not None:
            if time.monotonic() - loaded >= TTL_SECONDS and key not in self._inflight:
                self._start_load(key)
            return self._sites.get(key)
        pending = self._inflight.get(key) or self._start_load(key)
        return await asyncio.shield(pending)

    def _start_load(self, key: tuple[str, str]) -> asyncio.Future[Site | None]:
        future = asyncio.ensure_future(run_in_threadpool(self.load, *key))
        self._inflight[key] = future

        def done(finished: asyncio.Future[Site | None]) -> None:
            if self._inflight.get(key) is finished:
                del self._inflight[key]
            if not finished.cancelled():
                finished.exception()  # retrieved: a failed load is retried by the next view

        future.add_done_callback(done)
        return future

    def load(self, workspace_id: str, slug: str) -> Site | None:
        """Read one hosted funnel now (blocking: call it on a worker thread)."""
        with self._session() as db:
            try:
                funnel = service.get(db, workspace_id=workspace_id, slug=slug)
            except NotFound:
                site = None
            else:
                body = service.body_of(funnel)
                order = tuple(s.slug for s in body.steps)
                steps = {
                    s.slug: Step(
                        slug=s.slug,
                        index=i,
                        page=s.page,
                        next_slug=order[i + 1] if i + 1 < len(order) else None,
                    )
                    for i, s in enumerate(body.steps)
                }
                site = Site(
                    workspace_id=workspace_id,
                    slug=slug,
                    name=body.name,
                    steps=steps,
                    order=order,
                    write_key=workspaces_service.public_write_key(db, workspace_id=workspace_id),
                )
        with self._lock:
            if len(self._loaded) >= MAX_SITES:
                self._sites.clear()
                self._loaded.clear()
            self._sites[(workspace_id, slug)] = site
            self._loaded[(workspace_id, slug)] = time.monotonic()
        return site

    def invalidate(self, workspace_id: str, slug: str | None = None) -> None:
        with self._lock:
            for key in list(self._loaded):
                if key[0] == workspace_id and (slug is None or key[1] == slug):
                    del self._loaded[key]
                    self._sites.pop(key, None)
                    self._inflight.pop(key, None)


# --- designs decided by another domain ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Designed:
    """A step page as one visitor is served it by a design search or an adaptive flow
    (evolution): the page with the design applied and its links leading where this
    visitor goes next, its base design tokens, its default copy tone, the next step, and
    what the page view records about it."""

    page: Page
    tokens: dict[str, str]
    tone: str | None
    properties: dict[str, Any]
    next_step: str | None = None


class DesignPlan(Protocol):
    """How one step's design is chosen: the flags to evaluate with the visitor's decision,
    then the design for the visitor (None: the page as it is)."""

    @property
    def flags(self) -> tuple[str, ...]: ...

    def design(self, visitor: str, decision: dict[str, Any], page: Page) -> Designed | None: ...


class Designer(Protocol):
    """What the hosted page asks before rendering a step (``app.state.designer``); pages
    know nothing of how designs are searched, only this."""

    async def plan(self, workspace_id: str, funnel: str, step: str) -> DesignPlan | None: ...
