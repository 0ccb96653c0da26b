"""The dashboard's overview, funnels and emotion pages over HTTP, with a signed-in session.

Events are sent with the workspace's public write key, as a site would, and the pages must
show what those events say: the numbers worked out here from the events themselves (their
stored emotion readings included), in the tables and in the figures drawn from them. Bad
query parameters answer an HTML page that says what is wrong, never a 500.
"""

from __future__ import annotations

import gzip
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nexus.api.app import create_app
from nexus.api.middleware import SECURITY_HEADERS
from nexus.core.errors import InvalidInput
from nexus.core.settings import Settings
from nexus.events import service as events_service
from nexus.events.duckdb_store import DuckDBEventStore
from nexus.events.normalize import ROW_FIELDS, normalize
from nexus.events.store import WorkspaceBatch
from nexus.security.bots import CHROME
from nexus.storage.database import Database
from nexus.web import charts
from nexus.web.charts import CHART_PAGE_CSP, Band, Series
from nexus.web.routes import templates
from nexus.workspaces.models import Role
from tests.conftest import World, bearer, login
from tests.events.conftest import basic, wait_for_ids

GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
PLUTCHIK = ("joy", "trust", "fear", "surprise", "sadness", "disgust", "anger", "anticipation")
EMOTION_COLUMNS = (*PLUTCHIK, "valence")


@pytest.fixture
def client(settings: Settings, database: Database) -> Iterator[TestClient]:
    """The app with the edge emotion tier reading texts (the server tier is not needed to
    show readings, and would only make the suite slower)."""
    app = create_app(settings.model_copy(update={"emotion_enrichment": "edge"}))
    with TestClient(app, base_url="http://testserver") as test_client:
        yield test_client


# --- reading pages ----------------------------------------------------------------------------


class _Page(HTMLParser):
    """Tables by data-testid (cell texts; cells' own data-testid kept) and chart figures."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.figures: dict[str, dict[str, Any]] = {}
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_body = False
        self._script: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table" and a.get("data-testid"):
            self._table = a["data-testid"]
            self.tables[self._table] = []
        elif tag == "tbody" and self._table:
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif tag == "script" and a.get("data-chart-for"):
            self._script = a["data-chart-for"]
            self._text = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "tbody":
            self._in_body = False
        elif tag == "table":
            self._table = None
        elif tag == "script" and self._script:
            self.figures[self._script.removeprefix("chart-")] = json.loads("".join(self._text))
            self._script = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._script:
            self._text.append(data)


def parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def step_counts(html: str) -> list[int]:
    """The step-count cells, in page order (what the browser test reads too)."""
    out = []
    marker = 'data-testid="step-count">'
    start = html.find(marker)
    while start != -1:
        start += len(marker)
        out.append(int(html[start : html.index("<", start)]))
        start = html.find(marker, start)
    return out


# --- sending events -----------------------------------------------------------------------------

NOW = datetime.now(UTC)


def at(minutes_ago: float) -> str:
    return (NOW - timedelta(minutes=minutes_ago)).isoformat()


def day_of(timestamp: str) -> str:
    return datetime.fromisoformat(timestamp).date().isoformat()


def message(
    number: int, visitor: str, event: str, minutes_ago: float, *, agent: str = CHROME, **props: Any
) -> dict[str, Any]:
    return {
        "type": "track",
        "event": event,
        "anonymousId": visitor,
        "messageId": f"m-{number}",
        "timestamp": at(minutes_ago),
        "properties": props,
        "context": {"userAgent": agent},
    }


def send(client: TestClient, world: World, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = client.post("/v1/batch", json={"batch": batch}, headers=basic(world.a.write_key))
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(batch)
    stored = wait_for_ids(client, world.a.secret_key, {m["messageId"] for m in batch}, 5.0)
    return [e for e in stored if e["messageId"] in {m["messageId"] for m in batch}]


# --- access -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/funnels", "/emotion", "/emotion?visitor=x&days=7"])
def test_signed_out_visitors_are_sent_to_sign_in(client: TestClient, path: str) -> None:
    response = client.get(path, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login?next=/")


@pytest.mark.parametrize("role", [Role.VIEWER, Role.ANALYST, Role.OWNER])
def test_every_member_sees_the_pages_with_empty_states(
    client: TestClient, world: World, role: Role
) -> None:
    login(client, world.a.members[role].email)
    overview = client.get("/")
    assert overview.status_code == 200
    assert 'data-testid="overview-empty"' in overview.text
    assert "Send events" in overview.text
    assert world.a.write_key in overview.text
    funnels = client.get("/funnels")
    assert funnels.status_code == 200
    assert funnels.text.count('data-testid="funnel"') == 1
    assert "Nobody entered this funnel" in funnels.text
    assert step_counts(funnels.text) == [0, 0]
    emotion = client.get("/emotion")
    assert emotion.status_code == 200
    assert "No emotion readings in the last 30 days" in emotion.text
    assert "PUT /v1/emotion/settings" in emotion.text
    # Nothing to draw: the pages do not load plotly.js at all.
    for page in (overview, emotion):
        assert "/vendor/plotly.min.js" not in page.text


def test_the_sidebar_lists_the_pages_in_order(client: TestClient, world: World) -> None:
    login(client, world.a.members[Role.VIEWER].email)
    html = client.get("/emotion").text
    nav = html[html.index('aria-label="Main"') : html.index("</nav>")]
    links = [
        "/",
        "/funnels",
        "/emotion",
        "/pages",
        "/experiments",
        "/flags",
        "/privacy",
        "/events",
        "/settings",
        "/members",
        "/keys",
    ]
    positions = [nav.index(f'href="{link}"') for link in links]
    assert positions == sorted(positions)
    assert 'href="/emotion" aria-current="page"' in nav


# --- overview -----------------------------------------------------------------------------------


def test_overview_counts_people_conversion_revenue_and_bots_apart(
    client: TestClient, world: World
) -> None:
    batch = [
        message(1, "h1", "Viewed", 30),
        message(2, "h1", "Order Completed", 29, revenue=40),
        message(3, "h2", "Viewed", 60 * 24 + 5),
        message(4, "h2", "Order Completed", 60 * 24 + 4, revenue="2.5"),
        message(5, "h3", "Viewed", 20),
        message(6, "h4", "Viewed", 10),
        message(7, "h4", "Order Completed", 9, revenue="a lot"),
        message(8, "b1", "Viewed", 8, agent=GOOGLEBOT),
        message(9, "b1", "Order Completed", 7, agent=GOOGLEBOT, revenue=1000),
        # Older than the last 7 days: only the 30-day view counts it.
        message(10, "h5", "Viewed", 60 * 24 * 9),
    ]
    stored = send(client, world, batch)
    assert {e["anonymousId"] for e in stored if "bot" in e["context"]} == {"b1"}
    login(client, world.a.members[Role.VIEWER].email)

    page = client.get("/?days=7")
    assert page.status_code == 200
    html = page.text
    assert 'data-testid="kpi-visitors">4<' in html
    assert 'data-testid="kpi-events">7<' in html
    assert 'data-testid="kpi-conversion">75.0%<' in html
    assert 'data-testid="kpi-revenue">42.50<' in html
    assert 'data-testid="kpi-bots">1<' in html

    parsed = parse(html)
    traffic = parsed.tables["table-traffic"]
    assert len(traffic) == 7
    expected: dict[str, Counter[str]] = defaultdict(Counter)
    for m in batch[:9]:
        kind = "bot" if m["anonymousId"] == "b1" else "human"
        expected[day_of(m["timestamp"])][kind + " events"] += 1
    for day, visitor_set in _people_by_day(batch[:9]).items():
        expected[day]["visitors"] = len(visitor_set - {"b1"})
        expected[day]["bots"] = len(visitor_set & {"b1"})
    for row in traffic:
        day = row[0]
        assert int(row[1]) == expected[day]["visitors"]
        assert int(row[2]) == expected[day]["human events"]
        assert int(row[5]) == expected[day]["bots"]
        assert int(row[6]) == expected[day]["bot events"]
    # The figure is drawn from the same numbers as the table.
    figure = parsed.figures["traffic"]
    assert figure["data"][0]["x"] == [row[0] for row in traffic]
    assert figure["data"][0]["y"] == [int(row[1]) for row in traffic]
    assert figure["data"][2]["y"] == [int(row[5]) for row in traffic]
    revenue = parsed.tables["table-revenue"]
    assert sum(float(r[1].replace(",", "")) for r in revenue) == 42.5
    assert parsed.figures["revenue"]["data"][0]["y"] == [
        float(r[1].replace(",", "")) for r in revenue
    ]
    per_day: Counter[str] = Counter()
    for m in (batch[1], batch[3]):
        per_day[day_of(m["timestamp"])] += float(m["properties"]["revenue"])
    assert {r[0]: float(r[1]) for r in revenue if float(r[1])} == per_day

    month = client.get("/?days=30").text
    assert 'data-testid="kpi-visitors">5<' in month
    assert len(parse(month).tables["table-traffic"]) == 30


def _people_by_day(batch: list[dict[str, Any]]) -> dict[str, set[str]]:
    people: dict[str, set[str]] = defaultdict(set)
    for m in batch:
        people[day_of(m["timestamp"])].add(m["anonymousId"])
    return people


def test_the_goal_event_comes_from_the_decision_settings(client: TestClient, world: World) -> None:
    send(
        client,
        world,
        [
            message(1, "h1", "Viewed", 5),
            message(2, "h1", "Signed Up", 4, revenue=7),
            message(3, "h2", "Viewed", 3),
        ],
    )
    settings = client.put(
        "/v1/decision-settings",
        json={"goal_event": "Signed Up"},
        headers=bearer(world.a.secret_key),
    )
    assert settings.status_code == 200, settings.text
    login(client, world.a.members[Role.VIEWER].email)
    html = client.get("/").text
    assert 'data-testid="kpi-conversion">50.0%<' in html
    assert 'data-testid="kpi-revenue">7.00<' in html
    assert "did “Signed Up”" in html


def test_the_overview_carries_the_live_stream(client: TestClient, world: World) -> None:
    send(client, world, [message(1, "h1", "Viewed", 5)])
    login(client, world.a.members[Role.VIEWER].email)
    html = client.get("/").text
    assert 'data-stream="/v1/events/live"' in html
    assert "/static/live.js" in html
    live = html[html.index('id="live-events"') :]
    assert "Viewed" in live[: live.index("</tbody>")]


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        ("/?days=8", "days must be one of 7, 30, 90"),
        ("/?days=abc", "days must be one of 7, 30, 90"),
        ("/?days=-7", "days must be one of 7, 30, 90"),
        ("/funnels?days=1e9", "days must be one of 7, 30, 90"),
        ("/funnels?breakdown=properties.", "breakdown must be a property"),
        ("/funnels?breakdown=%00", "breakdown must be a property"),
        ("/emotion?cohort=context.", "cohort must be a property"),
        ("/emotion?visitor=a%01b", "visitor must be a user or anonymous id"),
        ("/emotion?visitor=" + "v" * 513, "visitor must be a user or anonymous id"),
        ("/emotion?days=0", "days must be one of 7, 30, 90"),
    ],
)
def test_bad_query_parameters_answer_a_page_that_says_why(
    client: TestClient, world: World, path: str, detail: str
) -> None:
    login(client, world.a.members[Role.VIEWER].email)
    response = client.get(path)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert detail in response.text
    assert "Back to the dashboard" in response.text


def test_an_unknown_funnel_is_a_404_page(client: TestClient, world: World) -> None:
    login(client, world.a.members[Role.VIEWER].email)
    response = client.get("/emotion?funnel=fnl_nope")
    assert response.status_code == 404
    assert "No funnel fnl_nope in this workspace" in response.text
    # Another workspace's funnel is just as unknown.
    login(client, world.b.members[Role.OWNER].email)
    assert client.get(f"/emotion?funnel={world.a.funnel_id}").status_code == 404


# --- funnels ------------------------------------------------------------------------------------


def test_funnel_steps_breakdowns_and_trend(client: TestClient, world: World) -> None:
    send(
        client,
        world,
        [
            message(1, "v1", "Viewed", 50, variant="A"),
            message(2, "v1", "Signed Up", 45, variant="A"),
            message(3, "v2", "Viewed", 40, variant="B"),
            message(4, "v2", "Signed Up", 30, variant="B"),
            message(5, "v3", "Viewed", 20, variant="B"),
            message(6, "b1", "Viewed", 10, agent=GOOGLEBOT, variant="A"),
        ],
    )
    login(client, world.a.members[Role.ANALYST].email)
    html = client.get("/funnels").text
    assert step_counts(html) == [3, 2]  # the bot is left out
    parsed = parse(html)
    fid = world.a.funnel_id
    steps = parsed.tables[f"table-{fid}-steps"]
    assert [r[1:6] for r in steps] == [
        ["Viewed", "3", "100.0%", "100.0%", "0"],
        ["Signed Up", "2", "66.7%", "66.7%", "1"],
    ]
    bars = parsed.figures[f"{fid}-steps"]["data"]
    assert bars[0]["y"] == ["1. Viewed", "2. Signed Up"]
    assert bars[0]["x"] == [3, 2]
    assert bars[1]["x"] == [0, 1]
    trend = parsed.tables[f"table-{fid}-trend"]
    assert len(trend) == 30
    assert sum(int(r[1]) for r in trend) == 3
    assert sum(int(r[2]) for r in trend) == 2
    assert parsed.tables[f"table-{fid}-time"]  # two conversions, a histogram
    assert 'data-testid="funnel-converted">2<' in html

    by_variant = parse(client.get("/funnels?breakdown=properties.variant").text)
    rows = {r[0]: r for r in by_variant.tables[f"table-{fid}-breakdown"]}
    assert set(rows) == {"A", "B"}
    assert rows["A"][1:4] == ["1", "1 (100.0%)", "1 (100.0%)"]
    assert rows["B"][1:4] == ["2", "2 (100.0%)", "1 (50.0%)"]
    figure = by_variant.figures[f"{fid}-breakdown"]["data"]
    assert {t["name"]: t["x"] for t in figure} == {"A": [1.0, 1.0], "B": [1.0, 0.5]}
    # Still one step-count per step: the breakdown table carries none.
    assert step_counts(client.get("/funnels?breakdown=properties.variant").text) == [3, 2]


def test_funnels_break_down_by_the_visitors_prevailing_emotion(
    client: TestClient, world: World
) -> None:
    stored = send(
        client,
        world,
        [
            message(1, "v1", "Viewed", 50),
            message(2, "v1", "Chat Message", 49, message="Thank you so much, I love it!"),
            message(3, "v1", "Signed Up", 45),
            message(4, "v2", "Viewed", 40),
            message(5, "v2", "Chat Message", 39, message="This is awful, I am so angry"),
            message(6, "v3", "Viewed", 20),
        ],
    )
    readings = {
        e["anonymousId"]: e["context"]["emotion"]["ekman"]
        for e in stored
        if e["event"] == "Chat Message"
    }
    login(client, world.a.members[Role.VIEWER].email)
    html = client.get("/funnels?breakdown=emotion").text
    assert "The Ekman emotion most of the visitor" in html
    rows = parse(html).tables[f"table-{world.a.funnel_id}-breakdown"]
    entered = Counter([readings["v1"], readings["v2"], "no text"])
    converted = Counter([readings["v1"]])
    assert {r[0]: int(r[1]) for r in rows} == entered
    assert {r[0]: int(r[-2]) for r in rows} == {g: converted[g] for g in entered}


# --- emotion ------------------------------------------------------------------------------------


def _means(events: list[dict[str, Any]]) -> dict[str, float]:
    out = {}
    for name in EMOTION_COLUMNS:
        values = [
            e["context"]["emotion"]["valence"]
            if name == "valence"
            else e["context"]["emotion"]["plutchik"][name]
            for e in events
        ]
        out[name] = sum(values) / len(values)
    return out


def _assert_row(row: list[str], means: dict[str, float], readings: int) -> None:
    assert int(row[1]) == readings
    for name, cell in zip(EMOTION_COLUMNS, row[2:], strict=True):
        assert math.isclose(float(cell), means[name], abs_tol=0.0051), (name, cell, means[name])


def test_emotion_over_time_by_step_and_by_cohort(client: TestClient, world: World) -> None:
    stored = send(
        client,
        world,
        [
            message(1, "w2", "Chat Message", 62, message="Hello, just looking", variant="B"),
            message(2, "w1", "Viewed", 60, variant="A"),
            message(3, "w1", "Chat Message", 59, message="Wow, this is wonderful!", variant="A"),
            message(4, "w1", "Signed Up", 58, variant="A"),
            message(5, "w1", "Chat Message", 57, message="Thanks, that was easy", variant="A"),
            message(6, "w2", "Viewed", 50, variant="B"),
            message(7, "w2", "Chat Message", 49, message="Why is this so slow??", variant="B"),
            message(8, "w3", "Chat Message", 60 * 24 * 2, message="I love it", variant="A"),
        ],
    )
    chats = {e["messageId"]: e for e in stored if e["event"] == "Chat Message"}
    assert all("emotion" in e["context"] for e in chats.values())
    login(client, world.a.members[Role.VIEWER].email)
    html = client.get("/emotion?days=7").text
    assert 'data-testid="kpi-readings">5<' in html
    assert 'data-testid="kpi-writers">3<' in html
    parsed = parse(html)

    by_day = {r[0]: r for r in parsed.tables["table-emotion-time"]}
    assert len(by_day) == 7
    days: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in chats.values():
        days[day_of(e["timestamp"])].append(e)
    for day, events in days.items():
        _assert_row(by_day[day], _means(events), len(events))
    assert sum(int(r[1]) for r in by_day.values()) == 5
    figure = parsed.figures["emotion-time"]["data"]
    assert [t["name"] for t in figure] == list(EMOTION_COLUMNS)
    assert figure[0]["x"] == list(by_day)

    # Steps of the workspace's only funnel (Viewed -> Signed Up): m-3 and m-7 at step 1,
    # m-5 at step 2; w2's first words came before the funnel, w3 never entered it.
    steps = parsed.tables["table-emotion-steps"]
    assert [r[0] for r in steps] == ["1. Viewed", "2. Signed Up"]
    _assert_row(steps[0], _means([chats["m-3"], chats["m-7"]]), 2)
    _assert_row(steps[1], _means([chats["m-5"]]), 1)
    heatmap = parsed.figures["emotion-steps"]["data"][0]
    assert heatmap["type"] == "heatmap"
    assert heatmap["x"] == list(EMOTION_COLUMNS)
    assert heatmap["y"] == ["1. Viewed", "2. Signed Up"]
    assert [round(v, 2) for v in heatmap["z"][1]] == [float(c) for c in steps[1][2:]]

    cohorts = {r[0]: r for r in parsed.tables["table-emotion-cohorts"]}
    assert set(cohorts) == {"A", "B"}
    _assert_row(cohorts["A"], _means([chats[m] for m in ("m-3", "m-5", "m-8")]), 3)
    _assert_row(cohorts["B"], _means([chats[m] for m in ("m-1", "m-7")]), 2)
    bars = parsed.figures["emotion-cohorts"]["data"]
    assert [t["name"] for t in bars] == ["A (3)", "B (2)"]


def test_a_visitors_trajectory_with_its_forecast_band(client: TestClient, world: World) -> None:
    stored = send(
        client,
        world,
        [
            message(1, "w1", "Chat Message", 40, message="I love this shop"),
            message(2, "w1", "Chat Message", 30, message="Hmm, shipping is expensive"),
            message(3, "w1", "Chat Message", 20, message="This is terrible, I give up"),
        ],
    )
    login(client, world.a.members[Role.VIEWER].email)
    response = client.get("/emotion?visitor=w1")
    assert response.status_code == 200
    parsed = parse(response.text)
    rows = parsed.tables["table-trajectory"]
    readings = [r for r in rows if r[1] == "reading"]
    forecasts = [r for r in rows if r[1].startswith("forecast")]
    assert len(readings) == 3
    assert [r[1] for r in forecasts] == [f"forecast +{k}" for k in range(1, 6)]
    observed = [
        e["context"]["emotion"]["valence"] for e in sorted(stored, key=lambda e: e["timestamp"])
    ]
    assert [float(r[2]) for r in readings] == [round(v, 2) for v in observed]
    for row in rows:
        assert float(row[4]) <= float(row[3]) <= float(row[5])
    api = client.get("/v1/visitors/w1/emotion?k=5", headers=bearer(world.a.secret_key)).json()
    assert [[float(c) for c in r[3:6]] for r in forecasts] == [
        [round(f["valence"][k], 2) for k in ("mean", "lower", "upper")] for f in api["forecast"]
    ]
    traces = parsed.figures["trajectory"]["data"]
    assert traces[1]["fill"] == "tonexty"  # the band: upper edge, then lower filled up to it
    assert len(traces[0]["x"]) == 3 + 5
    assert traces[-1]["mode"] == "markers"
    assert traces[-1]["y"] == observed

    missing = client.get("/emotion?visitor=nobody")
    assert missing.status_code == 404
    assert 'data-testid="visitor-missing"' in missing.text


# --- the overview's counting rules, on the store directly ---------------------------------------

DAY = 86_400_000_000
START = 1_700_006_400_000_000  # 2023-11-15T00:00:00Z, a UTC midnight


def test_activity_counts_people_per_day_and_leaves_out_bots_and_own_records() -> None:
    """Three UTC days: a person counts once per day and once in the total; NEXUS's own
    $decision/$exposure records are no activity; everything of a person any of whose events
    is marked as a bot's counts under bots (also what they sent before the verdict); revenue
    sums numbers on humans' goal events; the period is [start, end)."""
    store = DuckDBEventStore(":memory:")
    bot = {"bot": {"score": 1.0, "reasons": ["user-agent:Googlebot"]}}

    def row(n: int, who: str, event: str, at: int, context: Any = None, **props: Any) -> Any:
        message = {
            "type": "track",
            "event": event,
            "anonymousId": who,
            "messageId": f"a-{n}",
            "timestamp": datetime.fromtimestamp(at / 1e6, UTC).isoformat(),
            "properties": props,
        }
        stored = list(normalize(message, received_at=at))
        if context is not None:
            stored[ROW_FIELDS.index("context")] = json.dumps(context)
        return stored

    rows = [
        row(1, "p1", "Viewed", START),  # the first instant of the period counts
        row(2, "p1", "Viewed", START + 1000),
        row(3, "p1", "Order Completed", START + 2000, revenue=10),
        row(4, "p1", "$decision", START + 3000),
        row(5, "p2", "$exposure", START + 4000),  # only NEXUS's records: not a visitor
        row(6, "p1", "Viewed", START + DAY + 5),
        row(7, "p3", "Order Completed", START + DAY + 6, revenue="2.5"),
        row(8, "p3", "Order Completed", START + DAY + 7, revenue="lots"),
        row(9, "b1", "Viewed", START + 10),  # before the verdict
        row(10, "b1", "Order Completed", START + DAY + 8, bot, revenue=99),
        row(11, "p4", "Viewed", START + 3 * DAY),  # the end of the period: left out
    ]
    store.append([WorkspaceBatch("w", rows)])
    found = events_service.activity(
        store,
        workspace_id="w",
        start_us=START,
        end_us=START + 3 * DAY,
        goal_event="Order Completed",
    )
    assert [(d.visitors, d.events, d.converted, d.revenue) for d in found.days] == [
        (1, 3, 1, 10.0),
        (2, 3, 1, 2.5),
        (0, 0, 0, 0.0),
    ]
    assert [(d.bot_visitors, d.bot_events) for d in found.days] == [(1, 1), (1, 1), (0, 0)]
    assert [d.start_us for d in found.days] == [START, START + DAY, START + 2 * DAY]
    assert (found.visitors, found.events, found.converted, found.revenue) == (2, 6, 2, 12.5)
    assert (found.bot_visitors, found.bot_events) == (1, 2)
    assert found.conversion == 1.0
    with pytest.raises(InvalidInput):
        events_service.activity(
            store, workspace_id="w", start_us=START, end_us=START, goal_event="Order Completed"
        )
    store.close()


# --- plotly.js, CSP -----------------------------------------------------------------------------


def test_plotly_is_served_from_the_installed_package_with_an_etag(client: TestClient) -> None:
    plain = client.get("/vendor/plotly.min.js", headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200
    assert plain.headers["content-type"].startswith("text/javascript")
    assert "content-encoding" not in plain.headers
    assert plain.content == charts.plotly_asset().body
    assert b"plotly.js v" in plain.content[:200]
    assert "max-age=604800" in plain.headers["cache-control"]
    etag = plain.headers["etag"]
    again = client.get(
        "/vendor/plotly.min.js", headers={"If-None-Match": etag, "Accept-Encoding": "identity"}
    )
    assert again.status_code == 304
    assert again.content == b""

    zipped = client.get("/vendor/plotly.min.js", headers={"Accept-Encoding": "gzip, br"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.headers["etag"] != etag
    assert zipped.headers["vary"] == "Accept-Encoding"
    assert zipped.content == plain.content  # httpx decoded it
    assert len(charts.plotly_asset().gzipped) < len(plain.content) / 2
    assert gzip.decompress(charts.plotly_asset().gzipped) == plain.content
    refused = client.get("/vendor/plotly.min.js", headers={"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers


def test_chart_pages_allow_inline_styles_and_nothing_else_more(
    client: TestClient, world: World
) -> None:
    app_csp = dict(SECURITY_HEADERS)[b"content-security-policy"].decode()
    directives = dict(d.strip().split(" ", 1) for d in app_csp.split(";"))
    chart = dict(d.strip().split(" ", 1) for d in CHART_PAGE_CSP.split(";"))
    assert chart.pop("style-src") == "'self' 'unsafe-inline'"
    assert directives.pop("style-src") == "'self'"
    assert chart == directives
    assert "unsafe" not in chart["script-src"]
    login(client, world.a.members[Role.VIEWER].email)
    # Nothing to draw yet: the app's own policy.
    for path in ("/", "/funnels", "/emotion"):
        assert client.get(path).headers["content-security-policy"] == app_csp, path
    send(client, world, [message(1, "h1", "Viewed", 5)])
    for path in ("/", "/funnels"):
        assert client.get(path).headers["content-security-policy"] == CHART_PAGE_CSP, path
    assert client.get("/emotion").headers["content-security-policy"] == app_csp
    assert client.get("/keys").headers["content-security-policy"] == app_csp


# --- the figure builders and the chart macro ------------------------------------------------


def _strict_json(figure: dict[str, Any]) -> str:
    return json.dumps(figure, allow_nan=False)


def test_bar_figures_list_the_first_step_on_top_and_carry_no_nan() -> None:
    figure = charts.bar_figure(
        ["a", "b"],
        [Series("x", [1, float("nan")]), Series("y", [float("inf"), 2.5])],
        horizontal=True,
        stacked=True,
        value_format=".0%",
    )
    _strict_json(figure)
    assert [t["orientation"] for t in figure["data"]] == ["h", "h"]
    assert figure["data"][0]["x"] == [1, None]
    assert figure["data"][0]["y"] == ["a", "b"]
    assert figure["data"][1]["x"] == [None, 2.5]
    assert figure["layout"]["yaxis"]["autorange"] == "reversed"
    assert figure["layout"]["barmode"] == "stack"
    assert figure["layout"]["xaxis"]["tickformat"] == ".0%"
    assert figure["data"][0]["marker"]["color"] != figure["data"][1]["marker"]["color"]
    vertical = charts.bar_figure(["a"], [Series("x", [3])])
    assert vertical["data"][0]["x"] == ["a"]
    assert vertical["data"][0]["y"] == [3]
    assert vertical["layout"]["barmode"] == "group"
    assert vertical["layout"]["showlegend"] is False


def test_line_figures_keep_gaps_and_ranges() -> None:
    figure = charts.line_figure(
        ["2026-01-01", "2026-01-02"],
        [Series("v", [None, 0.5], color="#000000")],
        y_range=(-1, 1),
        y_format=".0%",
    )
    _strict_json(figure)
    trace = figure["data"][0]
    assert trace["y"] == [None, 0.5]
    assert trace["line"]["color"] == "#000000"
    assert figure["layout"]["yaxis"]["range"] == [-1, 1]
    assert figure["layout"]["autosize"] is True


def test_heatmaps_need_a_value_per_cell() -> None:
    figure = charts.heatmap_figure(
        ["joy", "fear"], ["step 1", "step 2"], [[0.1, None], [float("nan"), 0.4]], zmin=-1, zmax=1
    )
    _strict_json(figure)
    trace = figure["data"][0]
    assert trace["z"] == [[0.1, None], [None, 0.4]]
    assert (trace["zmin"], trace["zmax"]) == (-1, 1)
    assert figure["layout"]["yaxis"]["autorange"] == "reversed"
    with pytest.raises(ValueError, match="one value per column"):
        charts.heatmap_figure(["joy"], ["step 1"], [[0.1, 0.2]])
    with pytest.raises(ValueError, match="one row per row label"):
        charts.heatmap_figure(["joy"], ["step 1", "step 2"], [[0.1]])


def test_bands_are_drawn_under_lines_and_markers() -> None:
    figure = charts.band_figure(
        lines=[(["t1", "t2"], Series("estimate", [0.1, 0.2]))],
        bands=[Band("95%", ["t1", "t2"], [0.0, 0.05], [0.2, 0.4], color="#102030")],
        markers=[(["t1"], Series("reading", [0.15]))],
    )
    _strict_json(figure)
    upper, lower, line, marker = figure["data"]
    assert upper["y"] == [0.2, 0.4]
    assert lower["y"] == [0.0, 0.05]
    assert "fill" not in upper
    assert lower["fill"] == "tonexty"
    assert lower["fillcolor"] == "rgba(16, 32, 48, 0.18)"
    assert line["mode"] == "lines"
    assert marker["mode"] == "markers"


def test_the_chart_macro_writes_safe_json_and_a_table() -> None:
    macro = templates.env.from_string(
        '{% from "_charts.html" import chart %}'
        "{{ chart(id, title, figure, headers, rows, caption=caption) }}"
    )
    html = macro.render(
        id="x1",
        title="<b>Steps</b>",
        figure={"data": [{"name": "</script><script>alert(1)</script>", "y": [1]}]},
        headers=["Step", "People"],
        rows=[["Viewed", {"value": 3, "testid": "step-count"}], ["<i>", 1]],
        caption="Note",
    )
    assert "</script><script>" not in html
    assert "&lt;b&gt;Steps&lt;/b&gt;" in html
    parsed = parse(html)
    assert parsed.tables["table-x1"] == [["Viewed", "3"], ["<i>", "1"]]
    assert parsed.figures["x1"]["data"][0]["name"] == "</script><script>alert(1)</script>"
    assert 'data-testid="chart-x1"' in html
    assert 'id="chart-x1" role="img" aria-label="&lt;b&gt;Steps&lt;/b&gt;"' in html
    assert 'aria-pressed="true" hidden>Chart</button>' in html
    assert step_counts(html) == [3]
    assert "Note" in html
    empty = macro.render(id="e", title="t", figure={}, headers=["a", "b"], rows=[], caption=None)
    assert 'colspan="2">No data.' in empty
