"""Serving evolved designs, and the background worker that steps campaigns.

:class:`EvolutionRuntime` is the hosted pages' :class:`~nexus.pages.runtime.Designer`
(``app.state.designer``): for a step with a serving campaign it chooses each visitor's
design -- a Thompson draw from the campaign's last saved state while it searches, sticky
for the visitor within a round; the champion for the visitors a promotion's guarded rollout
serves it to; the champion for everyone once promoted -- and logs an ``$exposure`` (experiment
``evolution:<campaign id>``, variant the design key, the round and the visitor's emotional
segment) with the decision events. Plans are cached per step for :data:`TTL_SECONDS`.

:class:`EvolutionWorker` is the asynchronous campaign mode: every ``evolution_interval``
seconds it steps each active campaign (:func:`nexus.evolution.service.step`) on stored
events, and announces what changed on the workspace's webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from nexus.core.logging import get_logger
from nexus.events.normalize import track_row
from nexus.evolution import service
from nexus.evolution.design import Applied, relink, segment_of
from nexus.evolution.flows import FlowRuntime, LiveFlow
from nexus.evolution.genome import Design, DesignSpace
from nexus.evolution.models import Campaign
from nexus.evolution.search import ALL
from nexus.experiments import service as experiments_service
from nexus.experiments.decisions import DecisionRuntime
from nexus.pages.blocks import Page
from nexus.pages.runtime import Designed

log = get_logger("nexus.evolution")
TTL_SECONDS = 5.0
MAX_ASSIGNMENTS = 100_000
MAX_PLANS = 10_000


@dataclass
class CampaignPlan:
    """One step's serving campaign as loaded."""

    loaded: service.Loaded
    emit: Callable[[str, dict[str, Any]], None]
    flags: tuple[str, ...] = ()
    assignments: OrderedDict[str, tuple[str, Design]] = field(default_factory=OrderedDict)
    applied: dict[Design, Applied] = field(default_factory=dict)

    @property
    def campaign(self) -> Any:
        return self.loaded.campaign

    def _segment(self, decision: dict[str, Any]) -> str | None:
        if not self.loaded.settings.segmented:
            return None
        return segment_of(decision.get("emotion"))

    def _champion(self, segment: str | None) -> Design | None:
        promoted = service.promoted_design(self.campaign)
        if promoted is None:
            return None
        if segment is not None:
            per_segment = self.campaign.document.get("promoted_segments", {})
            raw = per_segment.get(segment)
            if raw:
                return tuple(int(x) for x in raw)
        return promoted

    def design(self, visitor: str, decision: dict[str, Any]) -> Designed | None:
        if decision.get("bot") or decision.get("holdout"):
            return None
        status = self.campaign.status
        segment = self._segment(decision)
        if status == "promoting":
            flag = decision.get("flags", {}).get(self.campaign.flag_key or "")
            if not flag or flag.get("variation") != "champion":
                return None
            chosen = self._champion(segment)
            return self._designed(chosen, "promoting") if chosen is not None else None
        if status == "promoted":
            chosen = self._champion(segment)
            return self._designed(chosen, "promoted") if chosen is not None else None
        evolution = self.loaded.evolution
        if evolution.phase == "done":
            return None
        round_name = service.round_name(evolution)
        known = self.assignments.get(visitor)
        if known is not None and known[0] == round_name:
            chosen = known[1]
        else:
            chosen = evolution.choose(segment)
            self.assignments[visitor] = (round_name, chosen)
            if len(self.assignments) > MAX_ASSIGNMENTS:
                self.assignments.popitem(last=False)
            self.emit(
                visitor,
                {
                    "experiment": service.experiment_of(self.campaign.id),
                    "variant": DesignSpace.key(chosen),
                    "round": round_name,
                    "segment": segment or ALL,
                    "campaign": self.campaign.key,
                },
            )
        return self._designed(chosen, round_name)

    def _designed(self, design: Design, round_name: str) -> Designed:
        applied = self.applied.get(design)
        if applied is None:
            applied = self.loaded.applied(design)
            self.applied[design] = applied
        return Designed(
            page=applied.page,
            tokens=applied.tokens,
            tone=applied.tone,
            properties={
                "campaign": self.campaign.key,
                "design": DesignSpace.key(design),
                "round": round_name,
            },
        )


@dataclass
class Plan:
    """What evolution changes on one step (a :class:`~nexus.pages.runtime.DesignPlan`): the
    design its campaign serves, and where its adaptive flow leads each visitor next."""

    step: str
    campaign: CampaignPlan | None
    flow: LiveFlow | None
    flows: FlowRuntime

    @property
    def flags(self) -> tuple[str, ...]:
        return self.campaign.flags if self.campaign is not None else ()

    def design(self, visitor: str, decision: dict[str, Any], page: Page) -> Designed | None:
        designed = self.campaign.design(visitor, decision) if self.campaign is not None else None
        flow = self.flow
        if flow is None or decision.get("bot") or not decision.get("personalised", True):
            return designed
        chosen = self.flows.next_step(flow, self.step, visitor, decision.get("emotion"))
        if chosen is None:
            return designed
        if self.step == flow.spec.reassurance:
            targets = list(flow.spec.keys)
        else:
            designed_next = flow.designed_next.get(self.step)
            targets = [designed_next] if designed_next else []
        base = designed.page if designed is not None else page
        relinked = relink(base, targets, chosen)
        if designed is None:
            return Designed(
                page=relinked,
                tokens={},
                tone=None,
                properties={"flow_next": chosen},
                next_step=chosen,
            )
        return dataclasses.replace(
            designed,
            page=relinked,
            properties={**designed.properties, "flow_next": chosen},
            next_step=chosen,
        )


class EvolutionRuntime:
    """Per-process cache of what evolution changes on each step (a :class:`Designer`)."""

    def __init__(
        self,
        session: Callable[[], AbstractContextManager[Session]],
        decisions: DecisionRuntime,
        *,
        clock_us: Callable[[], int] | None = None,
    ) -> None:
        self._session = session
        self._decisions = decisions
        self._clock_us = clock_us or (lambda: time.time_ns() // 1000)
        self.flows = FlowRuntime(session, clock_us=self._clock_us)
        self._plans: dict[tuple[str, str, str], Plan | None] = {}
        self._loaded: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()
        self._inflight: dict[tuple[str, str, str], asyncio.Future[Plan | None]] = {}

    async def plan(self, workspace_id: str, funnel: str, step: str) -> Plan | None:
        key = (workspace_id, funnel, step)
        loaded = self._loaded.get(key)
        if loaded is not None:
            if time.monotonic() - loaded >= TTL_SECONDS and key not in self._inflight:
                self._start_load(key)
            return self._plans.get(key)
        pending = self._inflight.get(key) or self._start_load(key)
        return await asyncio.shield(pending)

    def _start_load(self, key: tuple[str, str, str]) -> asyncio.Future[Plan | None]:
        future = asyncio.ensure_future(run_in_threadpool(self.load, *key))
        self._inflight[key] = future

        def done(finished: asyncio.Future[Plan | None]) -> None:
            if self._inflight.get(key) is finished:
                del self._inflight[key]
            if not finished.cancelled():
                finished.exception()  # retrieved: a failed load is retried by the next view

        future.add_done_callback(done)
        return future

    def load(self, workspace_id: str, funnel: str, step: str) -> Plan | None:
        """Read the step's serving campaign and its funnel's flow now (blocking: call it on
        a worker thread)."""
        key = (workspace_id, funnel, step)
        campaign_plan: CampaignPlan | None = None
        with self._session() as db:
            campaign = service.serving(db, workspace_id=workspace_id, funnel=funnel, step=step)
            if campaign is not None:
                try:
                    loaded = service.load(db, campaign)
                except Exception:
                    # The page changed under the campaign (a block its genes name is gone):
                    # serve the page as it is rather than fail the view.
                    log.exception("evolution campaign not served", campaign=campaign.key)
                else:
                    db.expunge(campaign)
                    previous = self._plans.get(key)
                    campaign_plan = CampaignPlan(
                        loaded,
                        emit=self._emitter(workspace_id),
                        flags=(campaign.flag_key,)
                        if campaign.status == "promoting" and campaign.flag_key
                        else (),
                    )
                    if (
                        previous is not None
                        and previous.campaign is not None
                        and previous.campaign.campaign.id == campaign.id
                    ):
                        # Stickiness survives reloads.
                        campaign_plan.assignments = previous.campaign.assignments
        flow = self.flows.load(workspace_id, funnel)
        plan = (
            Plan(step, campaign_plan, flow, self.flows)
            if campaign_plan is not None or flow is not None
            else None
        )
        with self._lock:
            if len(self._loaded) >= MAX_PLANS:
                self._plans.clear()
                self._loaded.clear()
            self._plans[key] = plan
            self._loaded[key] = time.monotonic()
        return plan

    def _emitter(self, workspace_id: str) -> Callable[[str, dict[str, Any]], None]:
        decisions, clock = self._decisions, self._clock_us

        def emit(visitor: str, properties: dict[str, Any]) -> None:
            basis = f"{properties['experiment']}|{properties['round']}|{visitor}"
            message_id = "exp-" + hashlib.blake2b(basis.encode(), digest_size=12).hexdigest()
            decisions.emit(
                workspace_id,
                track_row(
                    "$exposure",
                    anonymous_id=visitor,
                    message_id=message_id,
                    at_us=clock(),
                    properties=properties,
                ),
            )

        return emit

    def invalidate(self, workspace_id: str, funnel: str | None = None) -> None:
        with self._lock:
            for key in list(self._loaded):
                if key[0] == workspace_id and (funnel is None or key[1] == funnel):
                    del self._loaded[key]
                    self._plans.pop(key, None)
                    self._inflight.pop(key, None)


def post_to_webhook(
    session: Callable[[], AbstractContextManager[Session]],
    post: Callable[[str, dict[str, Any]], None] | None,
    workspace_id: str,
    notice: dict[str, Any],
) -> None:
    """POST ``notice`` to the workspace's webhook, if it has one, on a thread of its own."""
    if post is None:
        return
    with session() as db:
        url = experiments_service.get_decision_settings(db, workspace_id=workspace_id).webhook_url
    if url:
        threading.Thread(target=post, args=(url, notice), name="nexus-webhook", daemon=True).start()


class EvolutionWorker:
    """Steps every active campaign now and then; :meth:`run_once` is what tests call."""

    def __init__(
        self,
        *,
        runtime: EvolutionRuntime,
        session: Callable[[], AbstractContextManager[Session]],
        store: Callable[[], Any],
        interval: float,
        post: Callable[[str, dict[str, Any]], None] | None = None,
        before_pass: Callable[[], Any] | None = None,
    ) -> None:
        self.runtime = runtime
        self._session = session
        self._store = store
        self.interval = interval
        self._post = post
        self._before_pass = before_pass
        self._task: asyncio.Task[None] | None = None
        self.notices: list[dict[str, Any]] = []

    def notify(self, workspace_id: str, notice: dict[str, Any]) -> None:
        self.notices.append(notice)
        post_to_webhook(self._session, self._post, workspace_id, notice)

    def step_all(self) -> int:
        """One pass over every active campaign (blocking). Returns the campaigns changed."""
        with self._session() as db:
            pending = [(c.workspace_id, c.id) for c in service.running(db)]
        changed = 0
        for workspace_id, campaign_id in pending:
            try:
                with self._session() as db:
                    campaign = db.get(Campaign, campaign_id)
                    if campaign is None:
                        continue
                    if service.step(db, self._store(), campaign, notify=self.notify):
                        changed += 1
                        funnel = campaign.funnel
                    else:
                        funnel = None
                if funnel is not None:
                    self.runtime.invalidate(workspace_id, funnel)
            except Exception:
                log.exception("evolution step failed", campaign=campaign_id)
        return changed

    async def run_once(self) -> int:
        if self._before_pass is not None:
            await self._before_pass()
        # Adaptive flows learn on the loop's thread, where they decide; saving is blocking.
        flows = self.runtime.flows
        flows.learn()
        await run_in_threadpool(flows.save, flows.dirty_states())
        return await run_in_threadpool(self.step_all)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.run_once()
            except Exception:
                log.exception("evolution worker pass failed")

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
