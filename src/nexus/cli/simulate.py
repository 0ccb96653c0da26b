"""``nexus simulate``: simulated visitors against a running NEXUS, through its real HTTP API.

The visitors, what they write and whether they buy come from the seeded world of
:mod:`nexus.experiments.simulation`, whose ground truth makes the best UI adaptation depend
on the visitor's emotion. For each visitor the driver, as a site would:

1. ingests ``Landing Viewed`` and the visitor's first ``Chat Message Sent`` (its ``text``
   property is what NEXUS reads for emotion) with ``POST /v1/batch``;
2. asks ``POST /v1/decide`` with the visitor id, its attributes (country, device, plan,
   returning) and the text;
3. feeds the served ``adaptation.key`` and experiment variants to the ground truth, which
   decides how far the visitor goes (an adaptation key the world does not know, or none,
   counts as ``neutral``);
4. ingests the rest of the journey: ``Offer Viewed``, ``Checkout Started`` and, when the
   visitor converts, ``Order Completed`` (the default goal event the adaptation bandit is
   rewarded by), with what the visitor writes on the way.

Requests carry the public write key as ``Authorization: Basic base64(<key>:)``. Visitors
start at ``--rate`` per second (a token bucket with a burst of one; 0 starts them as fast
as ``--concurrency`` allows), at most ``--concurrency`` at a time, until ``--visitors`` have
started or ``--duration`` seconds have passed. Events carry the time they are sent, not the
simulated clock, so that goal events fall inside the decision's goal window.

Visitor ids are ``<run id>-<n>``: a fresh run id per run keeps message ids apart from an
earlier run's on the same server (which would deduplicate them), while the same ``--seed``
gives the same visitors, texts and draws.

The summary compares what was served with the hidden truth: expected conversions of what
was served, of the state-optimal choice, and the regret between them. Conditions no later
visitor can fix (no server, a refused key, no ``/v1/decide``) stop the run with one line;
other failed requests are counted and the run goes on (a visitor whose decision failed gets
the neutral experience, as a site falling back to defaults would).
"""

from __future__ import annotations

import base64
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

import httpx
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nexus.cli.output import console, err_console, fail, print_json
from nexus.experiments.simulation import (
    BEST_ADAPTATION,
    DEFAULT_ADAPTATION,
    DEFAULT_EXPERIMENTS,
    ExperimentTruth,
    Simulation,
    Visitor,
)

DEFAULT_URL: Final = "http://127.0.0.1:8000"
INGEST_PATH: Final = "/v1/batch"
DECIDE_PATH: Final = "/v1/decide"
NO_DECISION: Final = "(no decision)"  # decide failed: the visitor got the default experience
NOT_ADAPTED: Final = "(none)"  # decide answered without an adaptation (holdout, none defined)
RETRY_STATUSES: Final = frozenset({429, 503})
MAX_RETRIES: Final = 2
MAX_RETRY_WAIT_S: Final = 2.0
RUN_ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9._-]{1,40}$")


class SimulationAborted(Exception):
    """A condition no later visitor can fix: no server, a refused key, no decide endpoint."""


class TokenBucket:
    """Paces starts at ``rate`` per second with bursts of at most ``burst`` (thread-safe).

    ``clock`` and ``sleep`` are injectable so tests need not wait.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = burst
        self._updated = clock()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Take one token, sleeping until one is there."""
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
                self._updated = now
                # The tolerance absorbs rounding: 0.2 s at 5/s must give a whole token.
                if self._tokens >= 1.0 - 1e-9:
                    self._tokens = max(0.0, self._tokens - 1.0)
                    return
                wait = (1.0 - self._tokens) / self.rate
            self._sleep(wait)


@dataclass
class Tally:
    """Visitors served one thing, and what the ground truth says of them."""

    visitors: int = 0
    conversions: int = 0
    expected: float = 0.0  # Σ true conversion probability of what was served
    optimal: float = 0.0  # Σ true conversion probability of the state-optimal adaptation

    @property
    def conversion_rate(self) -> float:
        return self.conversions / self.visitors if self.visitors else 0.0

    def add(self, converted: bool, probability: float, optimal: float) -> None:
        self.visitors += 1
        self.conversions += int(converted)
        self.expected += probability
        self.optimal += optimal


@dataclass
class SimulationReport:
    """What a run did: counts, conversions by what was served, errors, pace."""

    url: str
    seed: int
    run_id: str
    visitors: int = 0
    decisions: int = 0
    holdouts: int = 0
    conversions: int = 0
    requests: int = 0
    events_sent: int = 0  # events the server accepted
    seconds: float = 0.0
    interrupted: bool = False
    total: Tally = field(default_factory=Tally)
    by_adaptation: dict[str, Tally] = field(default_factory=dict)
    # experiment key -> variant key -> tally
    by_variant: dict[str, dict[str, Tally]] = field(default_factory=dict)
    # hidden archetype -> adaptation served -> visitors (does NEXUS adapt to the emotion?)
    served_by_archetype: dict[str, dict[str, int]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    first_error: str | None = None

    @property
    def conversion_rate(self) -> float:
        return self.conversions / self.visitors if self.visitors else 0.0

    @property
    def visitors_per_second(self) -> float:
        return self.visitors / self.seconds if self.seconds > 0 else 0.0

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def regret(self) -> float:
        """Expected conversions lost against serving every visitor its best adaptation."""
        return self.total.optimal - self.total.expected

    @property
    def served_optimal_share(self) -> float:
        """Share of decided visitors served their archetype's best adaptation."""
        served = sum(sum(row.values()) for row in self.served_by_archetype.values())
        best = sum(
            row.get(BEST_ADAPTATION[archetype], 0)
            for archetype, row in self.served_by_archetype.items()
        )
        return best / served if served else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            conversion_rate=round(self.conversion_rate, 6),
            visitors_per_second=round(self.visitors_per_second, 3),
            requests_per_second=round(self.requests_per_second, 3),
            expected_conversions=round(self.total.expected, 3),
            optimal_conversions=round(self.total.optimal, 3),
            regret=round(self.regret, 3),
            served_optimal_share=round(self.served_optimal_share, 6),
        )
        data["seconds"] = round(self.seconds, 3)
        return data


@dataclass(frozen=True)
class Served:
    """What ``decide`` served one visitor."""

    adaptation: str | None
    variants: dict[str, str]
    holdout: bool


def basic_auth(write_key: str) -> str:
    return "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()


def restamped(events: Sequence[Mapping[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """The events with ``timestamp`` set to the send time, a millisecond apart in order, the
    last at ``now`` (none in the future)."""
    last = len(events) - 1
    return [
        {
            **event,
            "timestamp": (now - timedelta(milliseconds=last - position))
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
        }
        for position, event in enumerate(events)
    ]


def _detail(response: httpx.Response) -> str:
    """The problem's ``detail`` (RFC 9457), or the start of the body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return str(body["detail"])
    return response.text.strip()[:200] or response.reason_phrase


class _Driver:
    """Plays visitors against one server; safe to call from several threads."""

    def __init__(
        self,
        client: httpx.Client,
        simulation: Simulation,
        report: SimulationReport,
        *,
        write_key: str,
        sleep: Callable[[float], None],
    ) -> None:
        self.client = client
        self.simulation = simulation
        self.report = report
        self.headers = {"Authorization": basic_auth(write_key)}
        self.sleep = sleep
        self.lock = threading.Lock()
        self.fatal: SimulationAborted | None = None

    # -- HTTP ------------------------------------------------------------------------------

    def _error(self, kind: str, message: str) -> None:
        with self.lock:
            self.report.errors[kind] = self.report.errors.get(kind, 0) + 1
            if self.report.first_error is None:
                self.report.first_error = message

    def _post(self, path: str, body: dict[str, Any]) -> httpx.Response | None:
        """POST with retries on 429/503 (honouring a short Retry-After); ``None`` after a
        counted failure; :class:`SimulationAborted` when no later request can succeed."""
        name = path.rsplit("/", 1)[-1]
        for attempt in range(MAX_RETRIES + 1):
            try:
                response = self.client.post(path, json=body, headers=self.headers)
            except httpx.ConnectError as exc:
                raise SimulationAborted(
                    f"cannot reach NEXUS at {self.report.url}: {_reason(exc)}"
                ) from None
            except httpx.TimeoutException:
                self._error(f"{name}: timeout", f"{path} timed out")
                return None
            except httpx.HTTPError as exc:
                self._error(f"{name}: {type(exc).__name__}", f"{path}: {exc}")
                return None
            finally:
                with self.lock:
                    self.report.requests += 1
            status = response.status_code
            if status < 300:
                return response
            if status in (401, 403):
                raise SimulationAborted(
                    f"NEXUS refused the write key (HTTP {status}: {_detail(response)})"
                )
            if status in (404, 405):
                raise SimulationAborted(
                    f"{self.report.url} has no {path} (HTTP {status}): is it a NEXUS with "
                    "the decision engine?"
                )
            if status in RETRY_STATUSES and attempt < MAX_RETRIES:
                self.sleep(_retry_after(response))
                continue
            self._error(f"{name}: HTTP {status}", f"{path}: HTTP {status}: {_detail(response)}")
            return None
        return None  # pragma: no cover - the loop returns on its last attempt

    def _ingest(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        body = {"batch": restamped(events, datetime.now(UTC))}
        response = self._post(INGEST_PATH, body)
        if response is None:
            return
        try:
            result = response.json()
        except ValueError:
            result = None
        accepted = result.get("accepted") if isinstance(result, dict) else None
        rejected = result.get("rejected") if isinstance(result, dict) else None
        with self.lock:
            self.report.events_sent += accepted if isinstance(accepted, int) else len(events)
        if isinstance(rejected, list):
            for item in rejected:
                detail = item.get("detail") if isinstance(item, dict) else item
                self._error(
                    "batch: message rejected", f"{INGEST_PATH} rejected a message: {detail}"
                )

    def _decide(self, visitor: Visitor, text: str) -> Served | None:
        body = {
            "visitor_id": visitor.id,
            "attributes": visitor.attributes.as_dict(),
            "text": text,
        }
        response = self._post(DECIDE_PATH, body)
        if response is None:
            return None
        try:
            document = response.json()
        except ValueError:
            document = None
        if not isinstance(document, dict):
            self._error("decide: not JSON", f"{DECIDE_PATH} answered something not JSON")
            return None
        adaptation = document.get("adaptation")
        key = adaptation.get("key") if isinstance(adaptation, dict) else None
        experiments = document.get("experiments")
        variants = {
            str(name): str(value["variant"])
            for name, value in (experiments.items() if isinstance(experiments, dict) else ())
            if isinstance(value, dict) and isinstance(value.get("variant"), str)
        }
        return Served(
            adaptation=key if isinstance(key, str) else None,
            variants=variants,
            holdout=bool(document.get("holdout", False)),
        )

    # -- one visitor -----------------------------------------------------------------------

    def visit(self, visitor: Visitor) -> None:
        if self.fatal is not None:
            return
        try:
            self._visit(visitor)
        except SimulationAborted as exc:
            with self.lock:
                if self.fatal is None:
                    self.fatal = exc

    def _visit(self, visitor: Visitor) -> None:
        opening = self.simulation.opening(visitor)
        self._ingest(opening.events)
        served = self._decide(visitor, opening.text)
        adaptation = served.adaptation if served is not None else None
        variants = served.variants if served is not None else {}
        journey = self.simulation.journey(
            visitor, adaptation or DEFAULT_ADAPTATION, variants, decided_at=opening.ends_at
        )
        self._ingest(journey.events)
        label = NO_DECISION if served is None else adaptation or NOT_ADAPTED
        with self.lock:
            report = self.report
            report.visitors += 1
            report.conversions += int(journey.converted)
            outcome = (journey.converted, journey.probability, journey.optimal_probability)
            report.total.add(*outcome)
            report.by_adaptation.setdefault(label, Tally()).add(*outcome)
            if served is None:
                return
            report.decisions += 1
            report.holdouts += int(served.holdout)
            row = report.served_by_archetype.setdefault(visitor.archetype, {})
            row[label] = row.get(label, 0) + 1
            for experiment, variant in served.variants.items():
                variants_of = report.by_variant.setdefault(experiment, {})
                variants_of.setdefault(variant, Tally()).add(*outcome)


def _reason(exc: httpx.ConnectError) -> str:
    text = str(exc).lower()
    if "refused" in text:
        return "connection refused (is `nexus serve` running there?)"
    return str(exc) or type(exc).__name__


def _retry_after(response: httpx.Response) -> float:
    try:
        seconds = float(response.headers.get("retry-after", "0.5"))
    except ValueError:
        seconds = 0.5
    return min(max(seconds, 0.0), MAX_RETRY_WAIT_S)


def run_simulation(
    client: httpx.Client,
    *,
    write_key: str,
    visitors: int,
    rate: float = 10.0,
    seed: int = 0,
    duration: float | None = None,
    concurrency: int = 4,
    run_id: str = "sim",
    experiments: Sequence[ExperimentTruth] = DEFAULT_EXPERIMENTS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_visitor: Callable[[], None] | None = None,
) -> SimulationReport:
    """Play ``visitors`` simulated visitors against the NEXUS ``client`` points at (its
    ``base_url``); see the module docstring. ``rate`` is visitors started per second (0:
    unpaced); ``duration`` stops starting visitors after that many seconds. Raises
    :class:`SimulationAborted` on a condition no later visitor can fix; Ctrl-C stops
    starting visitors and returns the report so far (``interrupted``)."""
    if visitors < 1 or concurrency < 1 or rate < 0 or (duration is not None and duration <= 0):
        raise ValueError("visitors and concurrency must be >= 1, rate >= 0, duration > 0")
    report = SimulationReport(url=str(client.base_url).rstrip("/"), seed=seed, run_id=run_id)
    simulation = Simulation(seed, id_prefix=run_id, experiments=experiments)
    driver = _Driver(client, simulation, report, write_key=write_key, sleep=sleep)
    bucket = TokenBucket(rate, clock=clock, sleep=sleep) if rate > 0 else None
    slots = threading.BoundedSemaphore(concurrency)
    started = clock()

    def finished(_: Future[None]) -> None:
        slots.release()
        if on_visitor is not None:
            on_visitor()

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="nexus-sim") as pool:
        try:
            for visitor in simulation.visitors(visitors):
                slots.acquire()
                if bucket is not None:
                    bucket.acquire()
                if driver.fatal is not None or (
                    duration is not None and clock() - started >= duration
                ):
                    slots.release()
                    break
                pool.submit(driver.visit, visitor).add_done_callback(finished)
        except KeyboardInterrupt:
            report.interrupted = True
    report.seconds = clock() - started
    if driver.fatal is not None:
        raise driver.fatal
    return report


# --- the command -----------------------------------------------------------------------------


def _validate(url: str, write_key: str | None, run_id: str | None) -> tuple[str, str, str]:
    if not re.match(r"^https?://[^\s/]+", url):
        fail(f"--url must be an http:// or https:// address, got {url!r}", 2)
    if not write_key or not write_key.strip():
        fail("a write key is needed: pass --write-key or set NEXUS_WRITE_KEY", 2)
    assert write_key is not None
    run = run_id or secrets.token_hex(4)
    if not RUN_ID_PATTERN.match(run):
        fail("--run-id must be 1 to 40 letters, digits, '.', '_' or '-'", 2)
    return url.rstrip("/"), write_key.strip(), run


def _print_report(report: SimulationReport) -> None:
    say = console.print
    done = "interrupted after" if report.interrupted else "simulated"
    say(
        f"{done} {report.visitors:,} visitors against {report.url} "
        f"(seed {report.seed}, run {report.run_id}) in {report.seconds:.1f} s",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    rows = [
        ("decisions", f"{report.decisions:,} ({report.holdouts:,} held out)"),
        ("conversions", f"{report.conversions:,} ({report.conversion_rate:.1%})"),
        (
            "truth",
            f"expected {report.total.expected:,.1f} conversions, state-optimal "
            f"{report.total.optimal:,.1f}, regret {report.regret:,.1f}",
        ),
        ("best served", f"{report.served_optimal_share:.0%} of decided visitors"),
        (
            "rate",
            f"{report.visitors_per_second:,.1f} visitors/s, "
            f"{report.requests_per_second:,.1f} requests/s",
        ),
        ("events", f"{report.events_sent:,} sent"),
        (
            "errors",
            f"{report.error_count:,}"
            + (f" (first: {report.first_error})" if report.first_error else ""),
        ),
    ]
    for label, value in rows:
        say(f"  {label:<12}{value}", markup=False, highlight=False, soft_wrap=True)
    table = Table(title="By adaptation served")
    for column in ("adaptation", "visitors", "conversions", "rate", "true rate"):
        table.add_column(column, justify="left" if column == "adaptation" else "right")
    for key, tally in sorted(report.by_adaptation.items()):
        true_rate = tally.expected / tally.visitors if tally.visitors else 0.0
        table.add_row(
            key,
            f"{tally.visitors:,}",
            f"{tally.conversions:,}",
            f"{tally.conversion_rate:.1%}",
            f"{true_rate:.1%}",
        )
    console.print(table)
    if report.served_by_archetype:
        served = sorted({k for row in report.served_by_archetype.values() for k in row})
        archetypes = Table(title="Adaptation served by hidden emotional state (best: *)")
        archetypes.add_column("state")
        for key in served:
            archetypes.add_column(key, justify="right")
        for archetype, row in sorted(report.served_by_archetype.items()):
            best = BEST_ADAPTATION[archetype]
            archetypes.add_row(
                archetype, *(f"{row.get(k, 0):,}{'*' if k == best else ''}" for k in served)
            )
        console.print(archetypes)
    for experiment, variants in sorted(report.by_variant.items()):
        table = Table(title=f"Experiment {experiment}")
        for column in ("variant", "visitors", "conversions", "rate"):
            table.add_column(column, justify="left" if column == "variant" else "right")
        for variant, tally in sorted(variants.items()):
            table.add_row(
                variant,
                f"{tally.visitors:,}",
                f"{tally.conversions:,}",
                f"{tally.conversion_rate:.1%}",
            )
        console.print(table)


def open_client(base_url: str, timeout: float) -> httpx.Client:
    """The HTTP client of the command (a seam for tests)."""
    return httpx.Client(base_url=base_url, timeout=timeout)


def simulate(
    url: Annotated[str, typer.Option(help="The running NEXUS.")] = DEFAULT_URL,
    write_key: Annotated[
        str | None,
        typer.Option(
            envvar="NEXUS_WRITE_KEY",
            show_envvar=True,
            help="The workspace's public write key.",
        ),
    ] = None,
    visitors: Annotated[int, typer.Option(min=1, help="Visitors to simulate.")] = 200,
    rate: Annotated[
        float, typer.Option(min=0.0, help="Visitors started per second (0: as fast as possible).")
    ] = 10.0,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the simulated world.")] = 0,
    duration: Annotated[
        float | None,
        typer.Option(min=0.001, help="Stop starting visitors after this many seconds."),
    ] = None,
    concurrency: Annotated[
        int, typer.Option(min=1, max=64, help="Visitors in flight at once.")
    ] = 4,
    run_id: Annotated[
        str | None,
        typer.Option(help="Prefix of visitor and message ids (default: a fresh random one)."),
    ] = None,
    timeout: Annotated[
        float, typer.Option(min=0.1, max=600.0, help="Seconds to wait for each request.")
    ] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Drive a running NEXUS with simulated visitors (chat, decide, journey) and report how
    the served adaptations convert against the simulator's ground truth."""
    base_url, key, run = _validate(url, write_key, run_id)
    progress = Progress(
        TextColumn("simulating"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal or as_json,
    )
    with open_client(base_url, timeout) as client, progress:
        task = progress.add_task("simulate", total=visitors)
        try:
            report = run_simulation(
                client,
                write_key=key,
                visitors=visitors,
                rate=rate,
                seed=seed,
                duration=duration,
                concurrency=concurrency,
                run_id=run,
                on_visitor=lambda: progress.advance(task),
            )
        except SimulationAborted as exc:
            fail(str(exc))
            raise
    if as_json:
        print_json(report.as_dict())
    else:
        _print_report(report)
    if report.visitors and report.decisions == 0:
        fail(f"no decide request succeeded; first error: {report.first_error}")
