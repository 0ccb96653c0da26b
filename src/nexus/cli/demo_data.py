"""What ``nexus demo`` shows: a week of shop visitors, a saved funnel, flags, UI adaptations
and an experiment, and live traffic -- funnel events, and simulated visitors whose words and
conversions drive ``/v1/decide`` and its bandit.

The history is generated with a fixed seed and appended straight to the event store before the
server starts (only when the demo workspace has no events yet, so restarts keep it). The live
traffic is a thread that sends a few visitors' events through the real ingestion API every
couple of seconds, with the workspace's public write key, as a site's SDK would.
"""

from __future__ import annotations

import base64
import json
import random
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy.orm import Session

from nexus.cli.simulate import SimulationAborted, run_simulation
from nexus.core.errors import NotFound
from nexus.core.settings import Settings
from nexus.emotion.service import EmotionRuntime
from nexus.events import service as events
from nexus.events.normalize import EventRow, normalize
from nexus.events.store import WorkspaceBatch
from nexus.evolution import samples as evolution_samples
from nexus.evolution import service as evolution
from nexus.evolution.models import CampaignCreate
from nexus.experiments import service as experiments
from nexus.experiments.models import (
    AdaptationCreate,
    DecisionSettingsBody,
    ExperimentCreate,
    FlagCreate,
    MetricIn,
    VariantIn,
)
from nexus.funnels import service as funnels
from nexus.funnels.models import FunnelCreate, StepIn
from nexus.pages import samples
from nexus.pages import service as pages
from nexus.pages.models import HostedFunnelCreate

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


# --- the decision engine's demo -------------------------------------------------------------

DEMO_FLAGS: list[dict[str, Any]] = [
    {
        "key": "calm-checkout",
        "name": "Calmer checkout for upset visitors",
        "rules": [
            {
                "id": "upset",
                "clauses": [{"attribute": "emotion.valence", "op": "lt", "value": -0.3}],
                "serve": {"variation": "on"},
            }
        ],
        "fallthrough": {"variation": "off"},
    },
    {
        "key": "support-chat",
        "name": "Offer live chat to angry or disappointed visitors",
        "rules": [
            {
                "id": "angry",
                "clauses": [
                    {
                        "attribute": "emotion.dominant",
                        "op": "in",
                        "value": ["anger", "annoyance", "disappointment", "disapproval"],
                    }
                ],
                "serve": {"variation": "on"},
            }
        ],
        "fallthrough": {"variation": "off"},
    },
    {
        "key": "one-page-checkout",
        "name": "One-page checkout (50 % rollout)",
        "fallthrough": {
            "rollout": [{"variation": "on", "weight": 50}, {"variation": "off", "weight": 50}]
        },
    },
]


def seed_decisions(db: Session, *, workspace_id: str) -> None:
    """Flags targeted on emotion, UI adaptations chosen by the bandit and a running pricing
    experiment (the simulator's ground truth knows ``pricing-test``), once."""
    if experiments.list_flags(db, workspace_id=workspace_id, limit=1).items:
        return
    experiments.put_decision_settings(
        db,
        workspace_id=workspace_id,
        data=DecisionSettingsBody(
            goal_event="Order Completed",
            goal_window_seconds=60,
            burn_in=20,
            context_attributes=["returning"],
        ),
    )
    for body in samples.demo_adaptations():
        experiments.create_adaptation(
            db, workspace_id=workspace_id, data=AdaptationCreate.model_validate(body)
        )
    for flag in DEMO_FLAGS:
        experiments.create_flag(
            db, workspace_id=workspace_id, data=FlagCreate(**flag), actor="demo"
        )
    experiments.create_experiment(
        db,
        workspace_id=workspace_id,
        data=ExperimentCreate(
            key="pricing-test",
            name="Pricing page B",
            variants=[VariantIn(key="a"), VariantIn(key="b")],
            metrics=[
                MetricIn(key="orders", kind="conversion", event="Order Completed"),
                MetricIn(key="revenue", kind="sum", event="Order Completed", property="revenue"),
            ],
            primary_metric="orders",
        ),
    )
    experiments.start_experiment(db, workspace_id=workspace_id, key="pricing-test")


def seed_pages(db: Session, *, workspace_id: str) -> str:
    """The hosted funnel (landing -> offer -> checkout) and its headline experiment, once;
    returns the address of its first page."""
    try:
        funnel = pages.get(db, workspace_id=workspace_id, slug=samples.DEMO_SLUG)
    except NotFound:
        funnel = pages.create(
            db,
            workspace_id=workspace_id,
            data=HostedFunnelCreate.model_validate(samples.demo_funnel()),
            actor="demo",
        )
    try:
        experiments.get_experiment(db, workspace_id=workspace_id, key=samples.HEADLINE_EXPERIMENT)
    except NotFound:
        experiments.create_experiment(
            db,
            workspace_id=workspace_id,
            data=ExperimentCreate.model_validate(samples.demo_experiment()),
        )
        experiments.start_experiment(db, workspace_id=workspace_id, key=samples.HEADLINE_EXPERIMENT)
    try:
        evolution.get(db, workspace_id=workspace_id, key=evolution_samples.DEMO_CAMPAIGN)
    except NotFound:
        evolution.create(
            db,
            workspace_id=workspace_id,
            data=CampaignCreate.model_validate(evolution_samples.demo_campaign()),
            actor="demo",
        )
    first = pages.body_of(funnel).steps[0].slug
    return pages.page_url(workspace_id, funnel.slug, first)


class SimulatedVisitors(threading.Thread):
    """Plays ``nexus simulate`` visitors against the demo server, a few per second, so that
    decide, the bandit and the experiment have live traffic to show."""

    def __init__(self, base_url: str, write_key: str, *, rate: float = 2.0) -> None:
        super().__init__(name="nexus-demo-visitors", daemon=True)
        self.base_url = base_url
        self.write_key = write_key
        self.rate = rate
        self.stopping = threading.Event()

    def run(self) -> None:
        round_number = 0
        with httpx.Client(base_url=self.base_url, timeout=10.0) as client:
            while not self.stopping.is_set():
                round_number += 1
                try:
                    run_simulation(
                        client,
                        write_key=self.write_key,
                        visitors=20,
                        rate=self.rate,
                        seed=round_number,
                        run_id=f"demo{round_number}",
                        concurrency=2,
                    )
                except (SimulationAborted, httpx.HTTPError):
                    self.stopping.wait(2.0)  # not up yet, or shutting down


_BOOTSTRAP = re.compile(
    r'<script type="application/json" id="nexus-bootstrap">(.*?)</script>', re.S
)
# Chance to go on from each hosted step, by mood; a struggling visitor whom the page calmed
# down (the calm or reassuring adaptation) goes on more often -- what the bandit can learn.
HOSTED_NEXT = {"happy": 0.75, "neutral": 0.6, "unhappy": 0.35}
HOSTED_SOOTHED = 0.3


def design_appeal(design: str | None) -> float:
    """How much more (or less) likely a demo visitor goes on from an evolved offer page: the
    made-up truth evolution finds -- the "ready in one box" headline, the "Get my bundle"
    call to action and the FAQ shown help, the night theme hurts."""
    if not design:
        return 0.0
    genes = [int(x) for x in design.removeprefix("d-").split("-")]
    if len(genes) != 5:
        return 0.0
    headline, cta, faq, _layout, theme = genes
    return 0.12 * (headline == 2) + 0.06 * (cta == 1) + 0.05 * (faq == 0) - 0.08 * (theme == 2)


class HostedVisitors(threading.Thread):
    """Visitors walking the demo's hosted funnel as browsers would: each loads the pages
    (the server decides their variant and adaptation), sends the page events the SDK sends,
    sometimes writes in the chat (``decide`` reads their mood and the next page adapts), and
    goes on or leaves -- more often goes on when an upset visitor was calmed down."""

    def __init__(self, base_url: str, write_key: str, first_page: str, *, rate: float = 1.0):
        super().__init__(name="nexus-demo-hosted", daemon=True)
        self.base_url = base_url.rstrip("/")
        self.write_key = write_key
        self.funnel_path = first_page.rsplit("/", 1)[0]
        self.rate = rate
        self.stopping = threading.Event()
        self.rng = random.Random()  # noqa: S311 - made-up visitors, not secrets
        self.visits = 0

    def run(self) -> None:
        auth = (self.write_key, "")
        with httpx.Client(base_url=self.base_url, timeout=10.0, auth=auth) as client:
            while not self.stopping.wait(1.0 / self.rate):
                try:
                    self.visit(client)
                except (httpx.HTTPError, ValueError):
                    self.stopping.wait(2.0)  # not up yet, or shutting down

    def visit(self, client: httpx.Client) -> None:
        rng = self.rng
        client.cookies.clear()
        mood = rng.choices(("happy", "neutral", "unhappy"), weights=(3, 4, 3))[0]
        source = rng.choice(tuple(SOURCES))
        soothed = False
        for step in ("landing", "offer", "checkout"):
            response = client.get(f"{self.funnel_path}/{step}")
            response.raise_for_status()
            found = _BOOTSTRAP.search(response.text)
            if found is None:
                raise ValueError("no bootstrap document in the hosted page")
            boot = json.loads(found[1])
            visitor = boot["visitorId"]
            adaptation = (boot.get("adaptation") or {}).get("key")
            soothed = soothed or adaptation in ("calm", "reassuring")
            page = boot["page"]
            batch: list[dict[str, Any]] = [
                {
                    "type": "page",
                    "name": page["name"],
                    "anonymousId": visitor,
                    "messageId": str(uuid.uuid4()),
                    "properties": {**page["properties"], "source": source},
                    "context": {"campaign": {"source": source}},
                }
            ]
            text = None
            if rng.random() < CHAT_CHANCE:
                text = rng.choice(CHAT[mood])
                batch.append(
                    {
                        "type": "track",
                        "event": "Chat Message",
                        "anonymousId": visitor,
                        "messageId": str(uuid.uuid4()),
                        "properties": {"text": text, "funnel": page["properties"]["funnel"]},
                    }
                )
            client.post("/v1/batch", json={"batch": batch}).raise_for_status()
            if text is not None:
                # What the SDK does after a chat message: decide again with the new mood.
                decided = client.post("/v1/decide", json={"visitor_id": visitor, "text": text})
                decided.raise_for_status()
                key = (decided.json().get("adaptation") or {}).get("key")
                soothed = soothed or key in ("calm", "reassuring")
            chance = HOSTED_NEXT[mood] + (HOSTED_SOOTHED if mood == "unhappy" and soothed else 0)
            chance += design_appeal(page["properties"].get("design"))
            if rng.random() > chance:
                return
        order = {
            "type": "track",
            "event": "Order Completed",
            "anonymousId": visitor,
            "messageId": str(uuid.uuid4()),
            "properties": {"revenue": rng.choice((29, 59)), "source": source},
        }
        client.post("/v1/batch", json={"batch": [order]}).raise_for_status()
        self.visits += 1
