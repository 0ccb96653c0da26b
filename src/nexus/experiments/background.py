"""The decision engine's background work in a serving process.

One asyncio task, started by the app: every ``decide_learn_interval`` seconds it applies the
rewards of goal events that arrived, closes bandit reward windows that ran out, journals the
decisions and exposures ``decide`` logged (one journal record per pass, however many
decisions) and saves the policies that learned;
every ``rollout_check_interval`` seconds it checks every running guarded rollout. A rollback
is announced as a ``$rollout_rolled_back`` event and, when the workspace has one, a POST to
its webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from starlette.concurrency import run_in_threadpool

from nexus.core.ids import new_id
from nexus.core.logging import get_logger
from nexus.core.settings import Settings
from nexus.events import service as events
from nexus.events.normalize import EventRow, track_row
from nexus.experiments import guard, service
from nexus.experiments.decisions import ADAPTATION_POLICY, DecisionRuntime
from nexus.security.signing import SignatureError
from nexus.security.webhooks import (
    WebhookSigner,
    WebhookTargetRefused,
    keys_directory,
    resolve_webhook_target,
)
from nexus.storage.database import Database

log = get_logger("nexus.experiments")
WEBHOOK_TIMEOUT_SECONDS = 5.0
JOURNAL_INTERVAL = 0.1
LEARN_CHUNK = 64


class DecisionWorker:
    """Owns the loop; :meth:`run_once` is also what tests call to step it."""

    def __init__(
        self,
        *,
        runtime: DecisionRuntime,
        events_runtime: events.EventsRuntime,
        database: Database,
        settings: Settings,
        post: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.events = events_runtime
        self.database = database
        self.settings = settings
        self._post = post or functools.partial(
            post_webhook,
            keys_dir=keys_directory(settings),
            allow_private=settings.webhook_allow_private,
        )
        self._last_rollout_check = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self.notices: list[dict[str, Any]] = []

    # -- rollbacks ----------------------------------------------------------------------------

    def notify(self, workspace_id: str, notice: dict[str, Any]) -> None:
        """Announce a rollback: an event in the workspace, and its webhook if it has one."""
        self.notices.append(notice)
        self.runtime.emit(
            workspace_id,
            track_row(
                "$rollout_rolled_back",
                anonymous_id=f"rollout:{notice['rollout_id']}",
                message_id=new_id("evt"),
                at_us=events.now_us(),
                properties=notice,
            ),
        )
        with self.database.session() as session:
            url = service.get_decision_settings(session, workspace_id=workspace_id).webhook_url
        if url:
            threading.Thread(
                target=self._post, args=(url, notice), name="nexus-webhook", daemon=True
            ).start()

    # -- one pass -----------------------------------------------------------------------------

    async def journal_decisions(self) -> int:
        outbox = self.runtime.drain_outbox()
        if not outbox:
            return 0
        by_workspace: dict[str, list[EventRow]] = defaultdict(list)
        for workspace_id, row in outbox:
            by_workspace[workspace_id].append(row)
        written = 0
        for workspace_id, rows in by_workspace.items():
            try:
                accepted, _withheld = await events.ingest(
                    self.events, workspace_id=workspace_id, prepared=events.Prepared(rows, [])
                )
                written += accepted
            except Exception:
                # Ingestion is refusing (overloaded, journal failure): decisions stay served,
                # their log entries are what is lost, and the log says so.
                log.exception("decision events could not be journalled", count=len(rows))
        return written

    def save_policies(self, states: dict[str, dict[str, Any]]) -> int:
        if not states:
            return 0
        with self.database.session() as session:
            for workspace_id, state in states.items():
                service.save_bandit_state(
                    session, workspace_id=workspace_id, name=ADAPTATION_POLICY, state=state
                )
        return len(states)

    def check_rollouts(self) -> int:
        checked = 0
        with self.database.session() as session:
            pending = [(r.workspace_id, r.id) for r in guard.running_rollouts(session)]
        for workspace_id, rollout_id in pending:
            try:
                with self.database.session() as session:
                    guard.check_rollout(
                        session,
                        self.events.store,
                        workspace_id=workspace_id,
                        rollout_id=rollout_id,
                        notify=self.notify,
                    )
                self.runtime.invalidate(workspace_id)
                checked += 1
            except Exception:
                log.exception("rollout check failed", rollout=rollout_id)
        return checked

    async def run_once(self, *, rollouts: bool = False) -> None:
        # Rewards and policy updates happen here, on the event loop's thread, like decide,
        # in small chunks with the loop free between them, so no decision waits long.
        for step in (self.runtime.apply_rewards, self.runtime.close_windows):
            while True:
                if not step(limit=LEARN_CHUNK):
                    break
                await asyncio.sleep(0)  # let waiting requests in between chunks
        await self.journal_decisions()
        await run_in_threadpool(self.save_policies, self.runtime.dirty_states())
        if rollouts:
            # Judge on everything decided so far: let the writer store what was journalled.
            pipeline = self.events.pipeline
            await run_in_threadpool(pipeline.wait_until_stored, pipeline.journal.end, 5.0)
            await run_in_threadpool(self.check_rollouts)
            self._last_rollout_check = time.monotonic()

    async def _loop(self) -> None:
        interval = self.settings.decide_learn_interval
        while True:
            await asyncio.sleep(interval)
            due = (
                time.monotonic() - self._last_rollout_check >= self.settings.rollout_check_interval
            )
            try:
                await self.run_once(rollouts=due)
            except Exception:
                log.exception("decision worker pass failed")

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # What was decided but not yet journalled still goes to the journal.
        await self.journal_decisions()
        await run_in_threadpool(self.save_policies, self.runtime.dirty_states())


def post_webhook(
    url: str, notice: dict[str, Any], *, keys_dir: Path, allow_private: bool = False
) -> None:
    """POST ``notice`` as JSON, signed with the deployment's webhook key (docs/webhooks.md).

    The body is serialised here, once, so the bytes signed are the bytes sent. Without a
    usable key nothing is sent: an unsigned notice would teach receivers to accept forgeries.
    Nor is anything sent to a host that resolves into this server's own network (SSRF), and
    redirects are not followed.
    """
    try:
        resolve_webhook_target(url, allow_private=allow_private)
    except WebhookTargetRefused as exc:
        log.warning("rollout webhook not sent: target refused", url=url, reason=str(exc))
        return
    body = json.dumps(notice, separators=(",", ":")).encode()
    try:
        signed = WebhookSigner.from_directory(keys_dir).signed_headers(body)
    except (OSError, SignatureError):
        log.exception("rollout webhook not sent: no usable signing key", url=url)
        return
    try:
        response = httpx.post(
            url,
            content=body,
            headers={"Content-Type": "application/json", **signed},
            timeout=WEBHOOK_TIMEOUT_SECONDS,
        )
        if response.status_code >= 400:
            log.warning("rollout webhook refused", url=url, status=response.status_code)
    except httpx.HTTPError as exc:
        log.warning("rollout webhook failed", url=url, error=str(exc))
