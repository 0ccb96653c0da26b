"""What ``nexus demo`` shows: a week of shop visitors, a saved funnel, and live traffic.

The history is generated with a fixed seed and appended straight to the event store before the
server starts (only when the demo workspace has no events yet, so restarts keep it). The live
traffic is a thread that sends a few visitors' events through the real ingestion API every
couple of seconds, with the workspace's public write key, as a site's SDK would.
"""

from __future__ import annotations

import base64
import json
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from nexus.core.settings import Settings
from nexus.emotion.service import EmotionRuntime
from nexus.events import service as events
from nexus.events.normalize import EventRow, normalize
from nexus.events.store import WorkspaceBatch
from nexus.funnels import service as funnels
from nexus.funnels.models import FunnelCreate, StepIn

STEPS = ("Landing Viewed", "Offer Viewed", "Checkout Started", "Order Completed")
# Chance to go on to the next step, per traffic source: the funnel narrows differently.
SOURCES = {"google": 0.55, "newsletter": 0.7, "facebook": 0.4}
HISTORY_VISITORS = 1500
SEED = 7
# What visitors write in the shop's chat: who is about to leave writes more of the unhappy kind,
# so the emotion breakdown of the funnel tells the story the counts tell.
CHAT_CHANCE = 0.35
CHAT = {
    "happy": [
        "Love the design, this looks great!",
        "Thanks, that was quick and easy",
        "Perfect, exactly what I was looking for",
        "Wow, the discount is amazing",
        "Great service, thank you so much!",
    ],
    "neutral": [
        "Do you ship to Canada?",
        "What sizes do you have?",
        "Is there a student discount?",
        "How long does delivery take?",
    ],
    "unhappy": [
        "The price went up at checkout, that's annoying",
        "Why is shipping so expensive??",
        "I'm worried my card will be charged twice",
        "This form keeps failing, I give up",
        "Honestly disappointed, the photos looked better",
    ],
}


def _chat_text(rng: random.Random, leaving: bool) -> str:
    moods = ["unhappy", "neutral", "happy"]
    weights = [0.7, 0.2, 0.1] if leaving else [0.1, 0.4, 0.5]
    return rng.choice(CHAT[rng.choices(moods, weights)[0]])


def _visitor(rng: random.Random, start: datetime, index: int) -> list[dict[str, Any]]:
    """One visitor's messages: they walk the funnel until they stop, maybe identifying."""
    anonymous = f"anon-{uuid.UUID(int=rng.getrandbits(128))}"
    source = rng.choice(list(SOURCES))
    variant = rng.choice(["control", "urgency"])
    moment = start
    messages: list[dict[str, Any]] = []
    reached = 1
    while reached < len(STEPS) and rng.random() <= SOURCES[source] + (
        0.05 if variant == "urgency" else 0
    ):
        reached += 1
    for position, step in enumerate(STEPS[:reached]):
        moment += timedelta(seconds=rng.randint(5, 900))
        messages.append(
            {
                "type": "track",
                "event": step,
                "anonymousId": anonymous,
                "messageId": str(uuid.UUID(int=rng.getrandbits(128))),
                "timestamp": moment.isoformat(),
                "properties": {"variant": variant, "price": 49 if variant == "control" else 39},
                "context": {"campaign": {"source": source}},
            }
        )
        if rng.random() < CHAT_CHANCE:
            leaving = position == reached - 1 and reached < len(STEPS)
            messages.append(
                {
                    "type": "track",
                    "event": "Chat Message",
                    "anonymousId": anonymous,
                    "messageId": str(uuid.UUID(int=rng.getrandbits(128))),
                    "timestamp": (moment + timedelta(seconds=rng.randint(1, 60))).isoformat(),
                    "properties": {"message": _chat_text(rng, leaving), "variant": variant},
                    "context": {"campaign": {"source": source}},
                }
            )
        if step == "Checkout Started":
            messages.append(
                {
                    "type": "identify",
                    "anonymousId": anonymous,
                    "userId": f"customer-{index}",
                    "messageId": str(uuid.UUID(int=rng.getrandbits(128))),
                    "timestamp": moment.isoformat(),
                    "traits": {"plan": rng.choice(["basic", "pro"])},
                }
            )
    return messages


def seed(settings: Settings, db: Session, *, workspace_id: str) -> int:
    """Give the demo workspace a week of history and a funnel, once; returns events added."""
    if not funnels.list_funnels(db, workspace_id=workspace_id, limit=1).items:
        funnels.create_funnel(
            db,
            workspace_id=workspace_id,
            data=FunnelCreate(
                name="Checkout",
                steps=[StepIn(event=step) for step in STEPS],
                window_seconds=86_400,
                breakdown="context.campaign.source",
            ),
        )
    with events.store_for_cli(settings) as store:
        if store.count(workspace_id):
            return 0
        rng = random.Random(SEED)  # noqa: S311 - made-up visitors, not secrets
        now = datetime.now(UTC)
        rows: list[EventRow] = []
        received = int(now.timestamp() * 1_000_000)
        for index in range(HISTORY_VISITORS):
            start = now - timedelta(seconds=rng.randint(3600, 7 * 86_400))
            rows.extend(normalize(m, received_at=received) for m in _visitor(rng, start, index))
        # History skips the ingest pipeline, so it is read here as enrichment would read it.
        batches = EmotionRuntime(settings).enrich([WorkspaceBatch(workspace_id, rows)])
        store.append(batches)
        return len(rows)


class LiveTraffic(threading.Thread):
    """Sends a few visitors' events to ``base_url`` every ``interval`` seconds until stopped."""

    def __init__(self, base_url: str, write_key: str, *, interval: float = 2.0) -> None:
        super().__init__(name="nexus-demo-traffic", daemon=True)
        self.url = base_url.rstrip("/") + "/v1/batch"
        self.auth = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
        self.interval = interval
        self.stopping = threading.Event()
        self.rng = random.Random()  # noqa: S311 - made-up visitors, not secrets

    def run(self) -> None:
        index = 0
        while not self.stopping.wait(self.interval):
            batch = []
            for _ in range(self.rng.randint(1, 3)):
                index += 1
                batch.extend(_visitor(self.rng, datetime.now(UTC), 100_000 + index))
            request = urllib.request.Request(  # noqa: S310 - our own server
                self.url,
                data=json.dumps({"batch": batch}).encode(),
                headers={"Authorization": self.auth, "Content-Type": "application/json"},
                method="POST",
            )
            try:
                with urllib.request.urlopen(request, timeout=10):  # noqa: S310
                    pass
            except (urllib.error.URLError, OSError):
                time.sleep(self.interval)  # not up yet, or shutting down: try again later
