"""Adaptive flow on hosted funnels: each visitor's next step chosen by the funnel's
:class:`~nexus.evolution.flow.FlowAdapter` from the visitor's emotion, and learnt from the
funnel's goal event.

A hosted funnel opts in with ``flow.adaptive``; its steps marked ``optional`` may be
skipped, adjacent steps of one ``group`` may swap, and ``flow.reassurance`` names a step off
the designed path that may be inserted. When a visitor on a tracked journey views a step,
the adapter decides the step after it (reading the visitor's emotion now, so frustration
building up along the path is seen) and the page's calls to action that led to the designed
next step lead there instead. A journey starts at the funnel's first step.

Rewards: the goal event of a visitor whose journey reached the last step rewards every
choice of the journey 1; a journey with no goal event within :data:`JOURNEY_TTL_US` of its
last step is rewarded 0 (:meth:`FlowRuntime.learn`, run by the evolution worker). The
adapter's state is saved as the workspace's bandit state ``flow:<funnel>`` so learning
survives restarts.

Threads: decisions and learning happen on the event loop's thread (the hosted page and the
worker's pass); the ingest writer's thread only appends goal events to a deque.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy.orm import Session

from nexus.core.errors import NotFound
from nexus.core.logging import get_logger
from nexus.events.normalize import ROW_FIELDS
from nexus.events.store import WorkspaceBatch
from nexus.evolution.flow import FlowAdapter, FlowError, FlowSpec, FlowStep, Journey
from nexus.experiments import service as experiments_service
from nexus.pages import service as pages_service

log = get_logger("nexus.evolution.flows")
US = 1_000_000
JOURNEY_TTL_US = 6 * 3600 * US
MAX_JOURNEYS = 100_000
POLICY_PREFIX = "flow:"
_EVENT = ROW_FIELDS.index("event")
_USER = ROW_FIELDS.index("user_id")
_ANONYMOUS = ROW_FIELDS.index("anonymous_id")


@dataclass
class LiveFlow:
    """A hosted funnel's adaptive flow as served."""

    workspace_id: str
    funnel: str
    spec: FlowSpec
    adapter: FlowAdapter
    goal_event: str | None
    designed_next: dict[str, str | None]
    dirty: bool = False
    learnt: int = 0


@dataclass
class OpenJourney:
    funnel: str
    journey: Journey
    last_us: int


@dataclass
class FlowStats:
    decided: int = 0
    converted: int = 0
    abandoned: int = 0
    actions: dict[str, int] = field(default_factory=dict)


def spec_of(body: Any) -> FlowSpec | None:
    """The flow a hosted funnel's document describes (None: adaptive flow is off)."""
    if not body.flow.adaptive:
        return None
    reassurance = body.flow.reassurance
    designed = [s for s in body.steps if s.slug != reassurance]
    # A journey starts where the visitor lands, on the first step as designed: nothing is
    # decided before it.
    steps = [
        FlowStep(
            key=s.slug,
            optional=s.optional and i > 0,
            group=s.group if i > 0 else None,
            reassure_before=i > 0,
        )
        for i, s in enumerate(designed)
    ]
    return FlowSpec.build(steps, reassurance=reassurance)


class FlowRuntime:
    def __init__(
        self,
        session: Callable[[], AbstractContextManager[Session]],
        *,
        clock_us: Callable[[], int] | None = None,
    ) -> None:
        self._session = session
        self._clock_us = clock_us or (lambda: time.time_ns() // 1000)
        self._flows: dict[tuple[str, str], LiveFlow | None] = {}
        self._lock = threading.Lock()
        self._journeys: OrderedDict[tuple[str, str], OpenJourney] = OrderedDict()
        self._goals: deque[tuple[str, tuple[str, ...]]] = deque()
        self.stats = FlowStats()

    # -- configuration (worker threads) -----------------------------------------------------

    def load(self, workspace_id: str, funnel: str) -> LiveFlow | None:
        """The funnel's flow, read now; the adapter learnt so far is kept while the flow's
        shape is unchanged (blocking: call it on a worker thread)."""
        key = (workspace_id, funnel)
        with self._session() as db:
            try:
                hosted = pages_service.get(db, workspace_id=workspace_id, slug=funnel)
            except NotFound:
                spec, body = None, None
            else:
                body = pages_service.body_of(hosted)
                try:
                    spec = spec_of(body)
                except FlowError:
                    log.exception("adaptive flow not served", funnel=funnel)
                    spec = None
            saved = (
                experiments_service.load_bandit_state(
                    db, workspace_id=workspace_id, name=POLICY_PREFIX + funnel
                )
                if spec is not None
                else None
            )
        if spec is None or body is None:
            with self._lock:
                self._flows[key] = None
            return None
        previous = self._flows.get(key)
        adapter: FlowAdapter | None = None
        if previous is not None and previous.spec == spec:
            adapter = previous.adapter
        elif saved is not None:
            try:
                restored = FlowAdapter.from_state(saved)
            except FlowError:
                log.warning("saved flow state unreadable; learning afresh", funnel=funnel)
            else:
                adapter = restored if restored.spec == spec else None
        if adapter is None:
            adapter = FlowAdapter(spec)
        order = [s.slug for s in body.steps if s.slug != spec.reassurance]
        live = LiveFlow(
            workspace_id=workspace_id,
            funnel=funnel,
            spec=spec,
            adapter=adapter,
            goal_event=body.goal_event,
            designed_next={
                s: (order[i + 1] if i + 1 < len(order) else None) for i, s in enumerate(order)
            },
            dirty=previous.dirty if previous is not None and previous.adapter is adapter else False,
        )
        with self._lock:
            self._flows[key] = live
        return live

    def cached(self, workspace_id: str, funnel: str) -> LiveFlow | None:
        return self._flows.get((workspace_id, funnel))

    # -- serving (the event loop) -------------------------------------------------------------

    def next_step(
        self, flow: LiveFlow, step: str, visitor: str, emotion: dict[str, Any] | None
    ) -> str | None:
        """The step this visitor goes to after ``step`` (None: the page's own links)."""
        key = (flow.workspace_id, visitor)
        now = self._clock_us()
        spec = flow.spec
        open_ = self._journeys.get(key)
        following = (
            open_ is not None
            and open_.funnel == flow.funnel
            and bool(open_.journey.path)
            and open_.journey.path[-1] == step
        )
        if following and open_ is not None:
            journey = open_.journey
        elif step == spec.keys[0]:
            if open_ is not None and open_.journey.choices:
                self._close(open_, converted=False)  # started over: the old path is over
            journey = flow.adapter.decide(Journey.start(spec), emotion).journey
        else:
            return None  # arrived mid-funnel: no journey to adapt
        if journey.done:
            self._store(key, OpenJourney(flow.funnel, journey, now))
            return None
        try:
            decision = flow.adapter.decide(journey, emotion)
        except FlowError:
            return None
        self._store(key, OpenJourney(flow.funnel, decision.journey, now))
        self.stats.decided += 1
        self.stats.actions[decision.action] = self.stats.actions.get(decision.action, 0) + 1
        return decision.step

    def _store(self, key: tuple[str, str], entry: OpenJourney) -> None:
        journeys = self._journeys
        journeys[key] = entry
        journeys.move_to_end(key)
        while len(journeys) > MAX_JOURNEYS:
            _, oldest = journeys.popitem(last=False)
            self._close(oldest, converted=False)

    # -- learning -----------------------------------------------------------------------------

    def observe(self, batches: list[WorkspaceBatch]) -> None:
        """Watch stored events (the ingest writer's thread) for flows' goal events."""
        goals = {ws for (ws, _), flow in list(self._flows.items()) if flow is not None}
        if not goals:
            return
        for batch in batches:
            if batch.workspace_id not in goals:
                continue
            events = {
                flow.goal_event
                for (ws, _), flow in list(self._flows.items())
                if flow is not None and ws == batch.workspace_id
            }
            for row in batch.rows:
                if row[_EVENT] in events:
                    ids = tuple(i for i in (row[_ANONYMOUS], row[_USER]) if i)
                    self._goals.append((batch.workspace_id, ids))

    def _close(self, entry: OpenJourney, *, converted: bool) -> None:
        flow = next(
            (
                f
                for (ws, funnel), f in self._flows.items()
                if f is not None and funnel == entry.funnel
            ),
            None,
        )
        if flow is None or not entry.journey.choices:
            return
        try:
            learnt = flow.adapter.learn(entry.journey, converted=converted and entry.journey.done)
        except FlowError:
            return  # a journey of an earlier shape of the flow
        flow.learnt += learnt
        flow.dirty = True
        if converted and entry.journey.done:
            self.stats.converted += 1
        else:
            self.stats.abandoned += 1

    def learn(self, now_us: int | None = None) -> int:
        """Reward the journeys whose visitor did the goal event (1) and those that waited
        :data:`JOURNEY_TTL_US` without it (0). Returns the journeys closed."""
        now = self._clock_us() if now_us is None else now_us
        closed = 0
        while self._goals:
            workspace_id, ids = self._goals.popleft()
            for visitor in ids:
                entry = self._journeys.pop((workspace_id, visitor), None)
                if entry is not None:
                    self._close(entry, converted=True)
                    closed += 1
        journeys = self._journeys
        while journeys:
            oldest = next(iter(journeys.values()))
            if oldest.last_us >= now - JOURNEY_TTL_US:
                break
            journeys.popitem(last=False)
            self._close(oldest, converted=False)
            closed += 1
        return closed

    def dirty_states(self) -> list[tuple[str, str, dict[str, Any]]]:
        out = []
        for (workspace_id, funnel), flow in list(self._flows.items()):
            if flow is not None and flow.dirty:
                out.append((workspace_id, funnel, flow.adapter.to_state()))
                flow.dirty = False
        return out

    def save(self, states: list[tuple[str, str, dict[str, Any]]]) -> None:
        """Persist adapters that learnt (blocking: a worker thread)."""
        if not states:
            return
        with self._session() as db:
            for workspace_id, funnel, state in states:
                experiments_service.save_bandit_state(
                    db,
                    workspace_id=workspace_id,
                    name=POLICY_PREFIX + funnel,
                    state=orjson.loads(orjson.dumps(state)),
                )

    def forget(self, workspace_id: str, ids: set[str]) -> int:
        """Erasure: the visitors' open journeys."""
        dropped = 0
        for visitor in ids:
            if self._journeys.pop((workspace_id, visitor), None) is not None:
                dropped += 1
        return dropped
