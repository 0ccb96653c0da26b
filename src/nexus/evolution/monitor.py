"""Funnel self-monitoring (issue #8): per-step KPIs, change detection and plain-language alerts.

A pure core: counts in, alerts out, no I/O and no clock (every time is epoch seconds carried
by the data). The production layer aggregates stored events into :class:`Bucket` rows, one per
time bucket, funnel step and combination of breakdown values (variant, device, emotional
segment...), and feeds them to :meth:`Monitor.observe` in time order.

**KPIs per step.** *Conversion*: the share of visitors entering the step who move on to the
next one. *Time on step*: mean seconds per entrant. *Frustration*: mean frustration score
(0-1) of the visitors whose emotion was measured there.

**Streams.** Each KPI is followed for the whole step and for every single breakdown value
(``variant=B``, ``device=mobile``...): a regression confined to one variant is diluted by half
in the step's total but shows at full size in its own slice.

**Baseline.** Per stream, the pooled counts of the last ``baseline_seconds`` of buckets that
are at least ``guard_seconds`` old (so a fresh change does not leak into its own reference),
leaving out every bucket inside a regression. Conversion is a binomial rate; for the mean KPIs
the per-visitor variance is estimated from the dispersion of bucket means
(``sum n_b (m_b - m)^2 / (B - 1)``), so buckets need no sums of squares.

**Detector.** A one-sided CUSUM of log-likelihood ratios per stream (Page, 1954): for
conversion the exact binomial ratio of "rate dropped by ``conversion_shift`` (relative)"
against "rate at baseline"; for the mean KPIs the Gaussian ratio of a ``time_shift`` /
``frustration_shift`` relative rise of the bucket mean, its standardised deviation clipped at
``z_clip`` so that one heavy-tailed bucket cannot raise an alarm alone. An alarm is raised
when the statistic reaches the threshold ``h``; the start of its current excursion is the
change-point estimate. A CUSUM's false-alarm run is at least ``e^h`` buckets long (Lorden,
1971), so with ``D`` detectors and ``B`` buckets a day, ``h = ln(D x B / F)`` keeps false
alarms under about ``F = false_alarms_per_day`` (measured on simulated clean traffic by
``benchmarks/bench_monitor.py``). A baseline must also be precise: its standard error at most
``baseline_precision`` times the shift looked for.

**Alerts.** One per step and ongoing regression: once a step has an open alert, its detectors
stay quiet and its buckets stay out of the baselines until a reverse CUSUM ("back at
baseline" against "still shifted") on the stream that fired reaches ``recovery_threshold``
(a ``RECOVERED`` alert) or ``max_open_seconds`` pass (``EXPIRED``: the shift is taken as the
new normal). An alert carries its **attribution** (for every breakdown value, the lost
conversions, expected at the value's own baseline rate minus actual, or the excess time or
frustration, since the change point, with its share and a test of whether that value moved
more than the rest of its dimension) and the **correlated moves** of the step's other KPIs;
:func:`explain` turns it into one sentence.

:func:`simulate_traffic` is a seeded funnel simulator producing buckets with injected
regressions, for tests and the benchmark.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from statistics import NormalDist
from types import MappingProxyType
from typing import TypeGuard

import numpy as np
from numpy.typing import NDArray

from nexus.core.errors import FieldError, InvalidInput


class MonitorInputError(InvalidInput, ValueError):
    """A bucket, setting or simulation parameter that cannot be used (the API answers 422)."""

    @classmethod
    def at(cls, where: str, message: str) -> MonitorInputError:
        return cls(detail=f"{where}: {message}", errors=[FieldError(loc=(where,), message=message)])


class Metric(StrEnum):
    CONVERSION = "conversion"
    TIME_ON_STEP = "time_on_step"
    FRUSTRATION = "frustration"


class Direction(StrEnum):
    UP = "up"
    DOWN = "down"


class AlertStatus(StrEnum):
    OPEN = "open"
    """A regression was detected; no other alert is raised for the step until it ends."""
    RECOVERED = "recovered"
    """The KPI that fired is back at its pre-change baseline."""
    EXPIRED = "expired"
    """Open for ``max_open_seconds``: the shifted level is taken as the new baseline."""


DAY = 86_400.0
Slice = tuple[tuple[str, str], ...]
"""A stream's scope: ``()`` for the whole step, ``(("variant", "B"),)`` for one value."""

METRIC_PRIORITY = (Metric.CONVERSION, Metric.FRUSTRATION, Metric.TIME_ON_STEP)
_LABEL = {
    Metric.CONVERSION: "conversion",
    Metric.TIME_ON_STEP: "time on step",
    Metric.FRUSTRATION: "frustration",
}


# --- input --------------------------------------------------------------------------------


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_real(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Bucket:
    """Counts of one time bucket, funnel step and combination of breakdown values.

    ``entered`` visitors entered ``step`` during the bucket starting at ``start`` (epoch
    seconds); ``advanced`` of them moved on to the next step; ``seconds`` is their total time
    on the step; ``frustration_sum`` is the sum of the frustration scores (each 0-1) of the
    ``frustration_n`` of them whose emotion was measured. ``dims`` holds the breakdown values,
    e.g. ``{"variant": "B", "device": "mobile", "segment": "anxious"}``; buckets of one step
    and time with different ``dims`` must not overlap (each visitor is counted once).
    """

    start: float
    step: str
    dims: Mapping[str, str]
    entered: int
    advanced: int
    seconds: float = 0.0
    frustration_sum: float = 0.0
    frustration_n: int = 0

    def __post_init__(self) -> None:
        if not _is_real(self.start) or not math.isfinite(self.start):
            raise MonitorInputError.at("start", "must be finite epoch seconds")
        if not isinstance(self.step, str) or not self.step:
            raise MonitorInputError.at("step", "must be a non-empty string")
        if not isinstance(self.dims, Mapping):
            raise MonitorInputError.at("dims", "must map dimension names to values")
        for key, value in self.dims.items():
            if not isinstance(key, str) or not key or not isinstance(value, str) or not value:
                raise MonitorInputError.at("dims", "names and values must be non-empty strings")
        for name in ("entered", "advanced", "frustration_n"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise MonitorInputError.at(name, "must be a non-negative integer")
        if self.advanced > self.entered:
            raise MonitorInputError.at("advanced", "cannot exceed entered")
        if self.frustration_n > self.entered:
            raise MonitorInputError.at("frustration_n", "cannot exceed entered")
        if not _is_real(self.seconds) or not math.isfinite(self.seconds) or self.seconds < 0:
            raise MonitorInputError.at("seconds", "must be finite and non-negative")
        fsum = self.frustration_sum
        if not _is_real(fsum) or not math.isfinite(fsum) or not 0 <= fsum <= self.frustration_n:
            raise MonitorInputError.at(
                "frustration_sum", "must lie between 0 and frustration_n (scores are 0-1)"
            )
        object.__setattr__(self, "dims", MappingProxyType(dict(self.dims)))


@dataclass(frozen=True, slots=True)
class Settings:
    """Windows in seconds, shifts relative to the baseline, thresholds in nats."""

    bucket_seconds: float = 300.0
    baseline_seconds: float = 6 * 3600.0
    guard_seconds: float = 1800.0
    min_baseline_seconds: float = 2 * 3600.0
    min_baseline_visitors: int = 100
    min_baseline_events: int = 20
    baseline_precision: float = 0.25
    conversion_shift: float = 0.25
    time_shift: float = 0.25
    frustration_shift: float = 0.20
    false_alarms_per_day: float = 0.2
    threshold: float | None = None
    recovery_threshold: float = 6.0
    z_clip: float = 2.0
    directions: Mapping[Metric, tuple[Direction, ...]] = field(
        default_factory=lambda: {
            Metric.CONVERSION: (Direction.DOWN,),
            Metric.TIME_ON_STEP: (Direction.UP,),
            Metric.FRUSTRATION: (Direction.UP,),
        }
    )
    attribution_alpha: float = 0.05
    correlated_z: float = 2.0
    max_open_seconds: float = 24 * 3600.0

    def __post_init__(self) -> None:
        checks: list[tuple[tuple[str, ...], Callable[[object], bool], str]] = [
            (
                (
                    "bucket_seconds",
                    "baseline_seconds",
                    "min_baseline_seconds",
                    "baseline_precision",
                    "false_alarms_per_day",
                    "recovery_threshold",
                    "z_clip",
                    "max_open_seconds",
                ),
                lambda v: _is_real(v) and math.isfinite(v) and v > 0,
                "must be a finite positive number",
            ),
            (
                ("threshold",),
                lambda v: v is None or (_is_real(v) and math.isfinite(v) and v > 0),
                "must be a finite positive number or None",
            ),
            (
                ("guard_seconds", "correlated_z"),
                lambda v: _is_real(v) and math.isfinite(v) and v >= 0,
                "must be finite and non-negative",
            ),
            (
                ("conversion_shift", "time_shift", "frustration_shift"),
                lambda v: _is_real(v) and 0 < v < 1,
                "must lie in (0, 1)",
            ),
            (
                ("attribution_alpha",),
                lambda v: _is_real(v) and 0 < v < 1,
                "must lie in (0, 1)",
            ),
            (
                ("min_baseline_visitors", "min_baseline_events"),
                lambda v: _is_int(v) and v >= 1,
                "must be a positive integer",
            ),
        ]
        for names, valid, message in checks:
            for name in names:
                if not valid(getattr(self, name)):
                    raise MonitorInputError.at(name, message)
        if self.min_baseline_seconds > self.baseline_seconds:
            raise MonitorInputError.at("min_baseline_seconds", "cannot exceed baseline_seconds")
        for metric, directions in self.directions.items():
            if not isinstance(metric, Metric) or not all(
                isinstance(d, Direction) for d in directions
            ):
                raise MonitorInputError.at("directions", "maps a Metric to Direction values")

    def alarm_threshold(self, detectors: int) -> float:
        """The CUSUM threshold in nats: ``threshold`` if set, else ``ln(D x B / F)`` for ``D``
        detectors, ``B`` buckets a day and ``F = false_alarms_per_day``.

        Each detector's false-alarm run is at least ``e^h`` buckets (Lorden, 1971), so ``D``
        detectors raise at most about ``D x B x e^-h`` false alarms a day.
        """
        if self.threshold is not None:
            return float(self.threshold)
        per_day = DAY / self.bucket_seconds
        return math.log(max(detectors, 1) * per_day / self.false_alarms_per_day)

    def shift(self, metric: Metric) -> float:
        if metric is Metric.CONVERSION:
            return self.conversion_shift
        return self.time_shift if metric is Metric.TIME_ON_STEP else self.frustration_shift


# --- output -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Share:
    """One breakdown value's part in an alert's change, from the change point to the alert.

    ``moved`` is the change in visitor units in the alert's direction: for a conversion drop,
    the conversions expected at the value's own baseline rate minus the actual ones; for a rise
    of a mean KPI, ``n x (mean - baseline)``. ``share`` is its part of the positive ``moved``
    of all values of the dimension; ``z`` tests whether the value moved more, relative to its
    baseline, than the rest of the dimension together; ``concentrated`` is ``share >= 0.5`` and
    ``z`` significant at ``attribution_alpha``, Bonferroni-corrected over the values tested.
    """

    dim: str
    value: str
    share: float
    moved: float
    traffic_share: float
    baseline: float
    current: float
    relative_change: float
    z: float
    concentrated: bool


@dataclass(frozen=True, slots=True)
class Move:
    """Another KPI of the alert's step and scope over the same window."""

    metric: Metric
    baseline: float
    current: float
    relative_change: float
    z: float
    significant: bool


@dataclass(frozen=True, slots=True)
class Alert:
    """A detected change of one KPI at one step, or the end of one (``status``).

    ``scope`` is the stream whose detector fired (``()``: the whole step); ``baseline``,
    ``current`` and ``relative_change`` describe that stream, ``current`` over ``[since,
    at)`` (for a recovery: over the evidence that it recovered). ``statistic`` is the CUSUM
    log-likelihood ratio in nats against ``threshold``. Times are epoch seconds: ``since`` is
    the change-point estimate, ``at`` the end of the bucket that raised the alert.
    """

    status: AlertStatus
    step: str
    metric: Metric
    direction: Direction
    scope: Slice
    since: float
    at: float
    baseline: float
    current: float
    relative_change: float
    statistic: float
    threshold: float
    attribution: tuple[Share, ...] = ()
    correlated: tuple[Move, ...] = ()

    def culprit(self, dim: str | None = None) -> Share | None:
        """The breakdown value the change is concentrated in (of ``dim``, if given), or None."""
        for share in self.attribution:
            if share.concentrated and (dim is None or share.dim == dim):
                return share
        return None


# --- explanation --------------------------------------------------------------------------


def hhmm(epoch_seconds: float) -> str:
    """``14:05 UTC`` for an epoch time."""
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%H:%M UTC")


def _step_label(step: str) -> str:
    words = step.replace("_", " ").replace("-", " ")
    return words[:1].upper() + words[1:]


def _value(metric: Metric, value: float) -> str:
    if metric is Metric.CONVERSION:
        return f"{100 * value:.1f}%"
    if metric is Metric.TIME_ON_STEP:
        return f"{value:.0f} s"
    return f"{value:.2f}"


def _pct(relative: float) -> str:
    return f"{abs(100 * relative):.0f}%"


def _scope_label(scope: Slice) -> str:
    return " and ".join(f"{dim} {value}" for dim, value in scope)


def _duration(seconds: float) -> str:
    minutes = max(0, round(seconds / 60))
    hours, minutes = divmod(minutes, 60)
    if hours == 0:
        return f"{minutes} min"
    return f"{hours} h" if minutes == 0 else f"{hours} h {minutes} min"


def explain(alert: Alert) -> str:
    """One plain-language sentence, e.g. ``Checkout conversion fell 30% since 14:00 UTC (...);
    frustration is up 18%; 92% of the drop is in variant B.``"""
    what = f"{_step_label(alert.step)} {_LABEL[alert.metric]}"
    where = f" in {_scope_label(alert.scope)}" if alert.scope else ""
    levels = f"{_value(alert.metric, alert.baseline)} → {_value(alert.metric, alert.current)}"
    if alert.status is AlertStatus.RECOVERED:
        return (
            f"{what}{where} recovered by {hhmm(alert.at)}: "
            f"{_value(alert.metric, alert.current)} against a "
            f"{_value(alert.metric, alert.baseline)} baseline, "
            f"{_duration(alert.at - alert.since)} after the change began at {hhmm(alert.since)}."
        )
    if alert.status is AlertStatus.EXPIRED:
        return (
            f"{what}{where} has stayed {'down' if alert.direction is Direction.DOWN else 'up'} "
            f"since {hhmm(alert.since)} ({levels}); after {_duration(alert.at - alert.since)} "
            "it is taken as the new baseline."
        )
    verb = "fell" if alert.direction is Direction.DOWN else "rose"
    parts = [
        f"{what}{where} {verb} {_pct(alert.relative_change)} since {hhmm(alert.since)} ({levels})"
    ]
    moves = [
        f"{_LABEL[m.metric]} is {'up' if m.relative_change > 0 else 'down'} "
        f"{_pct(m.relative_change)}"
        for m in alert.correlated
        if m.significant
    ]
    if moves:
        parts.append(" and ".join(moves))
    noun = "drop" if alert.direction is Direction.DOWN else "rise"
    named = [s for s in alert.attribution if s.concentrated]
    if named:
        first, *rest = named
        clause = f"{100 * first.share:.0f}% of the {noun} is in {first.dim} {first.value}"
        others = [s for s in rest if s.dim != first.dim][:1]
        if others:
            clause += f" (and {100 * others[0].share:.0f}% in {others[0].dim} {others[0].value})"
        parts.append(clause)
    elif alert.attribution:
        top = max(alert.attribution, key=lambda s: s.share)
        parts.append(
            f"no single breakdown value accounts for the {noun} "
            f"(largest: {top.dim} {top.value}, {100 * top.share:.0f}%)"
        )
    return "; ".join(parts) + "."


# --- streams ------------------------------------------------------------------------------


class _Entry:
    __slots__ = ("flagged", "n", "q", "s", "time")

    def __init__(self, time: float, n: float, s: float, q: float, flagged: bool) -> None:
        self.time = time
        self.n = n
        self.s = s
        self.q = q
        self.flagged = flagged


@dataclass(frozen=True, slots=True)
class _Baseline:
    mean: float
    var: float  # per visitor
    n: float
    buckets: int
    warm: bool


class _Stream:
    """One KPI of one step and slice: recent buckets, the pooled baseline and its CUSUMs."""

    __slots__ = ("base", "buckets", "cusum", "metric", "n", "q", "recent", "s", "scope")

    def __init__(self, metric: Metric, scope: Slice) -> None:
        self.metric = metric
        self.scope = scope
        self.recent: deque[_Entry] = deque()  # younger than the guard, or not yet promoted
        self.base: deque[_Entry] = deque()  # pooled into n, s, q
        self.n = 0.0
        self.s = 0.0
        self.q = 0.0
        self.buckets = 0
        self.cusum: dict[Direction, list[float]] = {}  # direction -> [statistic, start]

    def push(self, time: float, n: float, s: float, flagged: bool) -> _Entry:
        entry = _Entry(time, n, s, s * s / n, flagged)
        self.recent.append(entry)
        return entry

    def advance(self, now: float, settings: Settings) -> None:
        ripe = now - settings.guard_seconds
        while self.recent and self.recent[0].time <= ripe:
            entry = self.recent.popleft()
            if not entry.flagged:
                self.base.append(entry)
                self._add(entry, 1)
        oldest = ripe - settings.baseline_seconds
        while self.base and self.base[0].time < oldest:
            self._add(self.base.popleft(), -1)

    def _add(self, entry: _Entry, sign: int) -> None:
        self.n += sign * entry.n
        self.s += sign * entry.s
        self.q += sign * entry.q
        self.buckets += sign
        if self.buckets == 0:  # no drift from float round-off
            self.n = self.s = self.q = 0.0

    def flag_since(self, since: float) -> None:
        """Keep the buckets from ``since`` on out of the baseline."""
        while self.base and self.base[-1].time >= since:
            self._add(self.base.pop(), -1)
        for entry in self.recent:
            if entry.time >= since:
                entry.flagged = True

    def window(self, since: float) -> tuple[float, float, float, int]:
        """Pooled ``n, s, q, buckets`` of the buckets from ``since`` on (flagged or not)."""
        n = s = q = 0.0
        count = 0
        for entry in reversed(self.recent):
            if entry.time < since:
                break
            n, s, q, count = n + entry.n, s + entry.s, q + entry.q, count + 1
        else:
            for entry in reversed(self.base):
                if entry.time < since:
                    break
                n, s, q, count = n + entry.n, s + entry.s, q + entry.q, count + 1
        return n, s, q, count

    def baseline(self, settings: Settings) -> _Baseline | None:
        if self.buckets == 0 or self.n <= 0:
            return None
        covered = self.buckets * settings.bucket_seconds >= settings.min_baseline_seconds
        enough = self.n >= settings.min_baseline_visitors
        if self.metric is Metric.CONVERSION:
            mean = (self.s + 0.5) / (self.n + 1.0)
            var = mean * (1 - mean)
            enough = enough and min(self.s, self.n - self.s) >= settings.min_baseline_events
        else:
            if self.buckets < 2:
                return None
            mean = self.s / self.n
            var = max(self.q - self.s * self.s / self.n, 0.0) / (self.buckets - 1)
            var = max(var, 1e-9 * (1.0 + mean * mean))
        # the baseline's own error must be small against the shift the detector looks for
        precise = math.sqrt(var / self.n) <= (
            settings.baseline_precision * settings.shift(self.metric) * abs(mean)
        )
        return _Baseline(mean, var, self.n, self.buckets, covered and enough and precise)


def _llr(
    metric: Metric,
    direction: Direction,
    base: _Baseline,
    n: float,
    s: float,
    settings: Settings,
) -> float:
    """log L(shifted) / L(baseline) of one bucket's ``n`` visitors and total ``s``."""
    shift = settings.shift(metric)
    if metric is Metric.CONVERSION:
        p0 = base.mean
        p1 = (
            p0 * (1 - shift) if direction is Direction.DOWN else min(p0 * (1 + shift), (1 + p0) / 2)
        )
        return s * math.log(p1 / p0) + (n - s) * math.log((1 - p1) / (1 - p0))
    mu, var = base.mean, base.var
    delta = shift * abs(mu) if mu != 0 else shift * math.sqrt(var)
    sd = math.sqrt(var / n)
    z = max(-settings.z_clip, min(settings.z_clip, (s / n - mu) / sd))
    deviation = z * sd if direction is Direction.UP else -z * sd
    return n * delta / var * (deviation - delta / 2)


def _mean(n: float, s: float) -> float:
    return s / n if n > 0 else math.nan


def _z_vs_base(base: _Baseline, n: float, s: float) -> float:
    """Standardised deviation of a window from its baseline."""
    if n <= 0:
        return 0.0
    return (s / n - base.mean) / math.sqrt(base.var / n)


# --- the monitor --------------------------------------------------------------------------


@dataclass
class _Incident:
    alert: Alert
    stream: _Stream
    frozen: _Baseline
    recovery: float = 0.0
    recovery_start: float = math.nan
    recovery_n: float = 0.0
    recovery_s: float = 0.0
    total_n: float = 0.0  # the firing stream's visitors and total since the change point
    total_s: float = 0.0


@dataclass
class _Step:
    streams: dict[tuple[Metric, Slice], _Stream] = field(default_factory=dict)
    incident: _Incident | None = None

    def stream(self, metric: Metric, scope: Slice) -> tuple[_Stream, bool]:
        """The stream, and whether it was created now."""
        key = (metric, scope)
        found = self.streams.get(key)
        if found is None:
            found = self.streams[key] = _Stream(metric, scope)
            return found, True
        return found, False


class Monitor:
    """Watches every step's KPIs; :meth:`observe` returns the alerts that new buckets raise."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self._steps: dict[str, _Step] = {}
        self._last: float | None = None
        self._detectors = 0

    @property
    def threshold(self) -> float:
        """The alarm threshold in nats for the detectors running now."""
        return self.settings.alarm_threshold(self._detectors)

    @property
    def last_start(self) -> float | None:
        """Start of the latest bucket time observed."""
        return self._last

    @property
    def open_alerts(self) -> tuple[Alert, ...]:
        return tuple(s.incident.alert for s in self._steps.values() if s.incident is not None)

    def observe(self, buckets: Iterable[Bucket]) -> list[Alert]:
        """Take buckets of one or more new bucket times (in any order within the call, all
        later than any observed before) and return the alerts they raise, in time order."""
        by_time: dict[float, list[Bucket]] = {}
        seen: set[tuple[float, str, frozenset[tuple[str, str]]]] = set()
        for bucket in buckets:
            if not isinstance(bucket, Bucket):
                raise MonitorInputError.at("buckets", "must be Bucket instances")
            if self._last is not None and bucket.start <= self._last:
                raise MonitorInputError.at(
                    "start", f"bucket time {bucket.start} is not after the last observed one"
                )
            key = (float(bucket.start), bucket.step, frozenset(bucket.dims.items()))
            if key in seen:
                raise MonitorInputError.at("dims", f"duplicate bucket for step {bucket.step!r}")
            seen.add(key)
            by_time.setdefault(float(bucket.start), []).append(bucket)
        alerts: list[Alert] = []
        for time in sorted(by_time):
            alerts += self._observe_time(time, by_time[time])
            self._last = time
        return alerts

    def _observe_time(self, time: float, buckets: list[Bucket]) -> list[Alert]:
        sums: dict[str, dict[Slice, list[float]]] = {}
        for b in buckets:
            per_step = sums.setdefault(b.step, {})
            row = (b.entered, b.advanced, b.seconds, b.frustration_sum, b.frustration_n)
            for scope in ((), *(((k, v),) for k, v in b.dims.items())):
                acc = per_step.get(scope)
                if acc is None:
                    per_step[scope] = list(map(float, row))
                else:
                    for i, value in enumerate(row):
                        acc[i] += value
        alerts: list[Alert] = []
        for step_name in sorted(sums):
            step = self._steps.setdefault(step_name, _Step())
            alert = self._observe_step(step_name, step, time, sums[step_name])
            if alert is not None:
                alerts.append(alert)
        return alerts

    def _observe_step(
        self, name: str, step: _Step, time: float, sums: dict[Slice, list[float]]
    ) -> Alert | None:
        settings = self.settings
        flagged = step.incident is not None
        fresh: list[tuple[_Stream, _Entry]] = []
        for scope, (entered, advanced, seconds, fsum, fn) in sums.items():
            for metric, n, s in (
                (Metric.CONVERSION, entered, advanced),
                (Metric.TIME_ON_STEP, entered, seconds),
                (Metric.FRUSTRATION, fn, fsum),
            ):
                if n > 0 and metric in settings.directions:
                    stream, new = step.stream(metric, scope)
                    if new:
                        self._detectors += len(settings.directions[metric])
                    fresh.append((stream, stream.push(time, n, s, flagged)))
        for stream in step.streams.values():
            stream.advance(time, settings)
        end = time + settings.bucket_seconds
        if step.incident is not None:
            return self._follow(name, step, time, end, fresh)
        return self._detect(name, step, time, end, fresh)

    def _detect(
        self, name: str, step: _Step, time: float, end: float, fresh: list[tuple[_Stream, _Entry]]
    ) -> Alert | None:
        """Run the CUSUMs on the new buckets; open an alert for the strongest that fired."""
        settings = self.settings
        fired: list[tuple[int, float, _Stream, Direction]] = []
        threshold = self.threshold
        for stream, entry in fresh:
            base = stream.baseline(settings)
            if base is None or not base.warm:
                continue
            for direction in settings.directions[stream.metric]:
                state = stream.cusum.setdefault(direction, [0.0, math.nan])
                value = state[0] + _llr(stream.metric, direction, base, entry.n, entry.s, settings)
                if value <= 0:
                    state[0], state[1] = 0.0, math.nan
                    continue
                if state[0] == 0:
                    state[1] = time
                state[0] = value
                if value >= threshold:
                    priority = METRIC_PRIORITY.index(stream.metric)
                    fired.append((priority, -value, stream, direction))
        if not fired:
            return None
        fired.sort(key=lambda f: (f[0], f[1], len(f[2].scope)))
        _, _, stream, direction = fired[0]
        return self._open(name, step, stream, direction, end)

    def _open(
        self, name: str, step: _Step, stream: _Stream, direction: Direction, end: float
    ) -> Alert:
        settings = self.settings
        statistic, since = stream.cusum[direction]
        base = stream.baseline(settings)
        assert base is not None
        n, s, _, _ = stream.window(since)
        current = _mean(n, s)
        alert = Alert(
            status=AlertStatus.OPEN,
            step=name,
            metric=stream.metric,
            direction=direction,
            scope=stream.scope,
            since=since,
            at=end,
            baseline=base.mean,
            current=current,
            relative_change=current / base.mean - 1 if base.mean else math.nan,
            statistic=statistic,
            threshold=self.threshold,
            attribution=self._attribute(step, stream.metric, direction, since),
            correlated=self._correlate(step, stream, since),
        )
        for other in step.streams.values():
            other.flag_since(since)
            other.cusum.clear()
        step.incident = _Incident(alert, stream, base, total_n=n, total_s=s)
        return alert

    def _follow(
        self, name: str, step: _Step, time: float, end: float, fresh: list[tuple[_Stream, _Entry]]
    ) -> Alert | None:
        """Track an open incident: recovered, expired, or still on (None)."""
        incident = step.incident
        assert incident is not None
        alert, settings = incident.alert, self.settings
        for stream, entry in fresh:
            if stream is not incident.stream:
                continue
            incident.total_n += entry.n
            incident.total_s += entry.s
            llr = _llr(alert.metric, alert.direction, incident.frozen, entry.n, entry.s, settings)
            value = incident.recovery - llr
            if value <= 0:
                incident.recovery, incident.recovery_n, incident.recovery_s = 0.0, 0.0, 0.0
                incident.recovery_start = math.nan
                continue
            if incident.recovery == 0:
                incident.recovery_start = time
            incident.recovery = value
            incident.recovery_n += entry.n
            incident.recovery_s += entry.s
        status: AlertStatus | None = None
        current = alert.current
        statistic = incident.recovery
        if incident.recovery >= settings.recovery_threshold:
            status = AlertStatus.RECOVERED
            current = _mean(incident.recovery_n, incident.recovery_s)
        elif end - alert.at >= settings.max_open_seconds:
            status = AlertStatus.EXPIRED
            current = _mean(incident.total_n, incident.total_s)
        if status is None:
            return None
        step.incident = None
        for stream in step.streams.values():
            stream.cusum.clear()
        return Alert(
            status=status,
            step=name,
            metric=alert.metric,
            direction=alert.direction,
            scope=alert.scope,
            since=alert.since,
            at=end,
            baseline=alert.baseline,
            current=current,
            relative_change=current / alert.baseline - 1 if alert.baseline else math.nan,
            statistic=statistic,
            threshold=settings.recovery_threshold,
        )

    def _attribute(
        self, step: _Step, metric: Metric, direction: Direction, since: float
    ) -> tuple[Share, ...]:
        settings = self.settings
        sign = 1.0 if direction is Direction.UP else -1.0
        total = step.streams.get((metric, ()))
        fallback = total.baseline(settings) if total is not None else None
        # per dimension: value -> (n, actual, expected, variance of actual, baseline, current)
        rows: dict[str, list[tuple[str, float, float, float, float, float, float]]] = {}
        for (m, scope), stream in step.streams.items():
            if m is not metric or len(scope) != 1:
                continue
            n, s, _, _ = stream.window(since)
            if n <= 0:
                continue
            base = stream.baseline(settings) or fallback
            if base is None:
                continue
            expected = n * base.mean
            if metric is Metric.CONVERSION:
                p = min(max(s / n, 0.5 / n), 1 - 0.5 / n)
                var = n * p * (1 - p)
            else:
                var = n * base.var
            dim, value = scope[0]
            rows.setdefault(dim, []).append((value, n, s, expected, var, base.mean, s / n))
        tests = sum(1 if len(v) == 2 else len(v) for v in rows.values() if len(v) >= 2)
        critical = NormalDist().inv_cdf(1 - settings.attribution_alpha / max(tests, 1))
        shares: list[Share] = []
        for dim in sorted(rows):
            values = rows[dim]
            if len(values) < 2:
                continue
            moved = {v[0]: sign * (v[2] - v[3]) for v in values}
            positive = sum(max(m, 0.0) for m in moved.values())
            traffic = sum(v[1] for v in values)
            for value, n, s, expected, var, base_mean, current in values:
                rest = [v for v in values if v[0] != value]
                z = self._contrast(metric, sign, (n, s, expected, var), rest)
                share = max(moved[value], 0.0) / positive if positive > 0 else 0.0
                shares.append(
                    Share(
                        dim=dim,
                        value=value,
                        share=share,
                        moved=moved[value],
                        traffic_share=n / traffic,
                        baseline=base_mean,
                        current=current,
                        relative_change=current / base_mean - 1 if base_mean else math.nan,
                        z=z,
                        concentrated=share >= 0.5 and z >= critical,
                    )
                )
        shares.sort(key=lambda s: (not s.concentrated, -s.z if s.concentrated else -s.share))
        return tuple(shares)

    @staticmethod
    def _contrast(
        metric: Metric,
        sign: float,
        one: tuple[float, float, float, float],
        rest: Sequence[tuple[str, float, float, float, float, float, float]],
    ) -> float:
        """z of "this value moved more in the alert's direction than the rest together"."""
        n, s, expected, var = one
        rn = sum(r[1] for r in rest)
        rs = sum(r[2] for r in rest)
        rexpected = sum(r[3] for r in rest)
        rvar = sum(r[4] for r in rest)
        if metric is Metric.CONVERSION:
            if expected <= 0 or rexpected <= 0:
                return 0.0
            # ratio of actual to expected conversions, this value against the rest
            diff = sign * (s / expected - rs / rexpected)
            se = math.sqrt(var / expected**2 + rvar / rexpected**2)
        else:
            diff = sign * ((s - expected) / n - (rs - rexpected) / rn)
            se = math.sqrt(var / n**2 + rvar / rn**2)
        return diff / se if se > 0 else 0.0

    def _correlate(self, step: _Step, fired: _Stream, since: float) -> tuple[Move, ...]:
        moves: list[Move] = []
        for metric in METRIC_PRIORITY:
            if metric is fired.metric:
                continue
            stream = step.streams.get((metric, fired.scope))
            if stream is None:
                continue
            base = stream.baseline(self.settings)
            n, s, _, _ = stream.window(since)
            if base is None or n <= 0:
                continue
            z = _z_vs_base(base, n, s)
            current = s / n
            moves.append(
                Move(
                    metric=metric,
                    baseline=base.mean,
                    current=current,
                    relative_change=current / base.mean - 1 if base.mean else math.nan,
                    z=z,
                    significant=abs(z) >= self.settings.correlated_z,
                )
            )
        return tuple(moves)


# --- simulated traffic --------------------------------------------------------------------

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]


@dataclass(frozen=True, slots=True)
class Regression:
    """From ``at`` (until ``until``), ``step``'s conversion is ``drop`` (relative) lower for
    visitors of ``variant`` (None: every variant). The visitors it stops are frustrated
    (``frustration_rise`` added to their mean score) and linger (time x ``time_factor``)."""

    at: float
    step: str
    drop: float
    variant: str | None = None
    until: float = math.inf
    frustration_rise: float = 0.25
    time_factor: float = 1.5

    def __post_init__(self) -> None:
        if not 0 < self.drop < 1:
            raise MonitorInputError.at("drop", "must lie in (0, 1)")
        if not self.until > self.at:
            raise MonitorInputError.at("until", "must be after at")


@dataclass(frozen=True, slots=True)
class FunnelModel:
    """The simulated funnel: steps in order, each step's base conversion to the next, traffic
    between ``visitors_per_hour`` (a daily cycle with noise), breakdown shares and effects."""

    steps: tuple[str, ...] = ("landing", "offer", "checkout", "order")
    conversion: tuple[float, ...] = (0.45, 0.35, 0.60)
    median_seconds: tuple[float, ...] = (25.0, 60.0, 90.0)
    visitors_per_hour: tuple[float, float] = (1000.0, 3000.0)
    variants: Mapping[str, float] = field(default_factory=lambda: {"A": 0.5, "B": 0.5})
    variant_effect: Mapping[str, float] = field(default_factory=lambda: {"A": 1.0, "B": 1.04})
    devices: Mapping[str, float] = field(
        default_factory=lambda: {"mobile": 0.55, "desktop": 0.35, "tablet": 0.10}
    )
    device_effect: Mapping[str, float] = field(
        default_factory=lambda: {"mobile": 0.92, "desktop": 1.10, "tablet": 1.0}
    )
    segments: Mapping[str, float] = field(
        default_factory=lambda: {"calm": 0.5, "curious": 0.3, "anxious": 0.2}
    )
    segment_effect: Mapping[str, float] = field(
        default_factory=lambda: {"calm": 1.05, "curious": 1.0, "anxious": 0.85}
    )
    segment_frustration: Mapping[str, float] = field(
        default_factory=lambda: {"calm": 0.12, "curious": 0.20, "anxious": 0.35}
    )
    emotion_measured: float = 0.7  # share of visitors with an emotion reading (consent, signal)
    conversion_drift: float = 0.04  # relative amplitude of the daily conversion cycle
    traffic_noise: float = 0.10  # sd of the log of each hour's traffic multiplier

    def __post_init__(self) -> None:
        if len(self.steps) < 2 or len(set(self.steps)) != len(self.steps):
            raise MonitorInputError.at("steps", "a funnel has at least 2 distinct steps")
        if len(self.conversion) != len(self.steps) - 1 or not all(
            0 < p < 1 for p in self.conversion
        ):
            raise MonitorInputError.at("conversion", "one probability in (0, 1) per transition")
        if len(self.median_seconds) != len(self.conversion):
            raise MonitorInputError.at("median_seconds", "one median per transition")
        low, high = self.visitors_per_hour
        if not 0 < low <= high:
            raise MonitorInputError.at("visitors_per_hour", "needs 0 < low <= high")


def _pick(rng: np.random.Generator, shares: Mapping[str, float], size: int) -> IntArray:
    weights = np.asarray(list(shares.values()), dtype=np.float64)
    return rng.choice(len(weights), size=size, p=weights / weights.sum())


def _effects(names: Sequence[str], effects: Mapping[str, float], default: float) -> FloatArray:
    return np.asarray([effects.get(name, default) for name in names], dtype=np.float64)


@dataclass(frozen=True)
class _Visitors:
    """Every simulated visitor: arrival time, breakdown values and their effects."""

    arrivals: FloatArray
    variant: IntArray
    cell: IntArray  # index of the (variant, device, segment) combination
    effect: FloatArray  # conversion multiplier of the visitor's breakdown values
    mood: FloatArray  # the visitor's segment's mean frustration
    cells: tuple[dict[str, str], ...]  # the breakdown values of each cell


def _visitors(
    rng: np.random.Generator, model: FunnelModel, start: float, horizon: float
) -> _Visitors:
    """Arrivals cycling daily between the traffic bounds, with a noisy multiplier per hour."""
    low, high = model.visitors_per_hour
    phase = rng.uniform(0, 2 * math.pi)
    minutes = np.arange(math.ceil(horizon / 60))
    hour_noise = np.exp(rng.normal(0, model.traffic_noise, len(minutes) // 60 + 1))
    t_min = start + minutes * 60.0
    cycle = 0.5 * (1 + np.sin(2 * math.pi * t_min / DAY + phase))
    rate = (low + (high - low) * cycle) * hour_noise[minutes // 60] / 60.0
    counts = rng.poisson(rate)
    arrivals = np.repeat(t_min, counts) + rng.uniform(0, 60, int(counts.sum()))
    arrivals = np.sort(arrivals[arrivals < start + horizon])
    size = len(arrivals)
    variant = _pick(rng, model.variants, size)
    device = _pick(rng, model.devices, size)
    segment = _pick(rng, model.segments, size)
    variants, devices, segments = list(model.variants), list(model.devices), list(model.segments)
    effect = (
        _effects(variants, model.variant_effect, 1.0)[variant]
        * _effects(devices, model.device_effect, 1.0)[device]
        * _effects(segments, model.segment_effect, 1.0)[segment]
    )
    mood = _effects(segments, model.segment_frustration, 0.2)[segment]
    cell = (variant * len(devices) + device) * len(segments) + segment
    cells = tuple(
        {"variant": v, "device": d, "segment": s}
        for v in variants
        for d in devices
        for s in segments
    )
    return _Visitors(arrivals, variant, cell, effect, mood, cells)


def _bucketise(
    step: str,
    start: float,
    bucket_seconds: float,
    n_slots: int,
    cells: tuple[dict[str, str], ...],
    columns: tuple[IntArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray],
) -> list[Bucket]:
    """Sum per-visitor outcomes into one bucket per (time slot, cell) with visitors."""
    cell, times, advanced, seconds, score, measured = columns
    slot = ((times - start) // bucket_seconds).astype(np.intp)
    key = slot * len(cells) + cell
    length = n_slots * len(cells)
    entered = np.bincount(key, minlength=length)
    moved = np.bincount(key, weights=advanced, minlength=length)
    spent = np.bincount(key, weights=seconds, minlength=length)
    fsum = np.bincount(key, weights=score * measured, minlength=length)
    fn = np.bincount(key, weights=measured, minlength=length)
    buckets = []
    for k in np.flatnonzero(entered):
        s_index, c = divmod(int(k), len(cells))
        n_measured = round(fn[k])
        buckets.append(
            Bucket(
                start=start + s_index * bucket_seconds,
                step=step,
                dims=cells[c],
                entered=int(entered[k]),
                advanced=round(moved[k]),
                seconds=float(spent[k]),
                frustration_sum=min(float(fsum[k]), float(n_measured)),
                frustration_n=n_measured,
            )
        )
    return buckets


def simulate_traffic(
    *,
    start: float,
    hours: float,
    seed: int,
    model: FunnelModel | None = None,
    regressions: Sequence[Regression] = (),
    bucket_seconds: float = 300.0,
) -> list[Bucket]:
    """Buckets of ``hours`` of seeded traffic from ``start`` (epoch seconds), sorted by time.

    Visitors arrive at a rate cycling daily between the model's ``visitors_per_hour`` bounds
    (random phase), times a log-normal multiplier per hour; each gets a variant, device and
    emotional segment, then walks the funnel: at each step it moves on with the step's
    conversion (drifting ``conversion_drift`` over the day) times its breakdown effects, after
    a log-normal time on step; its frustration there is a Beta draw around its segment's mean,
    higher when it does not move on, measured for ``emotion_measured`` of the visitors.
    Buckets hold every step except the last, keyed by the step's entry time; outcomes are
    counted whole (the caller would feed a bucket once its visitors have left the step).
    """
    model = model or FunnelModel()
    if not hours > 0 or not bucket_seconds > 0:
        raise MonitorInputError.at("hours", "hours and bucket_seconds must be positive")
    known = set(model.steps[:-1])
    for regression in regressions:
        if regression.step not in known:
            raise MonitorInputError.at("step", f"{regression.step!r} is no step with a next one")
        if regression.variant is not None and regression.variant not in model.variants:
            raise MonitorInputError.at("variant", f"unknown variant {regression.variant!r}")
    rng = np.random.default_rng(seed)
    horizon = hours * 3600.0
    visitors = _visitors(rng, model, start, horizon)
    variants = list(model.variants)
    drift_phase = rng.uniform(0, 2 * math.pi, len(model.conversion))
    n_slots = math.ceil(horizon / bucket_seconds)
    buckets: list[Bucket] = []
    index = np.arange(len(visitors.arrivals))
    times = visitors.arrivals
    for i, step in enumerate(model.steps[:-1]):
        keep = times < start + horizon
        index, times = index[keep], times[keep]
        p = model.conversion[i] * visitors.effect[index]
        p *= 1 + model.conversion_drift * np.sin(2 * math.pi * times / DAY + drift_phase[i])
        p = np.minimum(p, 0.97)
        factor = np.ones(len(index))
        here = [r for r in regressions if r.step == step]
        for regression in here:
            hit = (times >= regression.at) & (times < regression.until)
            if regression.variant is not None:
                hit &= visitors.variant[index] == variants.index(regression.variant)
            factor[hit] *= 1 - regression.drop
        u = rng.random(len(index))
        advanced = u < p * factor
        blocked = ~advanced & (u < p)  # would have moved on but for a regression
        seconds = model.median_seconds[i] * np.exp(rng.normal(0, 0.9, len(index)))
        mean = visitors.mood[index] + 0.03 * i + 0.06 * ~advanced
        if here:
            seconds[blocked] *= here[0].time_factor
            mean[blocked] += here[0].frustration_rise
        mean = np.clip(mean, 0.02, 0.95)
        score = rng.beta(mean * 8.0, (1 - mean) * 8.0)
        measured = rng.random(len(index)) < model.emotion_measured
        columns = (
            visitors.cell[index],
            times,
            advanced.astype(np.float64),
            seconds,
            score,
            measured.astype(np.float64),
        )
        buckets += _bucketise(step, start, bucket_seconds, n_slots, visitors.cells, columns)
        index = index[advanced]
        times = times[advanced] + seconds[advanced]
    buckets.sort(key=lambda b: b.start)
    return buckets
