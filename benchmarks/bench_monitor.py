"""Funnel self-monitoring: are injected regressions caught within 30 minutes, and named right?

Offline and exact: :func:`nexus.evolution.monitor.simulate_traffic` generates seeded funnel
traffic (landing → offer → checkout → order, variants A/B, three devices, three emotional
segments, a daily traffic and conversion cycle, 5-minute buckets) and the
:class:`~nexus.evolution.monitor.Monitor` with its default settings reads it bucket by bucket.

* **Injected runs**: at a random time 4-8 h into a run (itself starting at a random time of
  day), one step's conversion drops by a random 20-40 % (relative) in variant A only, variant
  B only, or in every variant; the visitors it stops are frustrated and linger. Steps and
  scopes rotate over the seeds. A regression counts as *detected* when an alert for its step
  is raised within 30 minutes of simulated traffic after it began (its bucket's end minus the
  injection time); the *right step* is named when the first alert after the injection is for
  the injected step; the *right variant* when the alert's culprit on the ``variant``
  dimension is the injected variant, or when no variant is named for an all-variant drop.
* **False alarms**: every alert on clean traffic, over clean days and the part of every
  injected run before its injection, from the moment the monitor can first alarm (its
  minimum baseline plus guard), per simulated day.
* **Evidence**: what any test could know 30 minutes in, the expected log-likelihood ratio
  ``n x KL(p(1-drop) || p)`` of the affected visitors; the monitor's threshold is about
  ``ln(detectors x buckets a day / 0.2)`` nats, so regressions with less evidence than that
  cannot be caught in time at this false-alarm rate, by any detector.
* **Uncertainty**: proportions with 95 % Wilson intervals, false alarms per day with exact
  Poisson (Garwood) intervals, delay quantiles with 95 % bootstrap intervals (seeded), delays
  of missed regressions counted as longer than the 60 minutes followed.
"""

from __future__ import annotations

import itertools
import math
import os
import random
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy import stats

from benchmarks.report import Section, table
from nexus.evolution.monitor import (
    AlertStatus,
    Bucket,
    FunnelModel,
    Monitor,
    Regression,
    Settings,
    explain,
    simulate_traffic,
)

TITLE = "Funnel self-monitoring: injected regressions and false alarms"
START = 1_740_960_000.0  # 2025-03-03 00:00 UTC
HOUR = 3600.0
BAR_MINUTES = 30.0
FOLLOW_MINUTES = 60.0
STEPS = ("landing", "offer", "checkout")
SCOPES: tuple[str | None, ...] = ("A", "B", None)
DROPS = (0.20, 0.40)
SETTINGS = Settings()
WARM_SECONDS = SETTINGS.min_baseline_seconds + SETTINGS.guard_seconds
EVIDENCE_BINS = (0.0, 5.0, 10.0, 15.0, 25.0, math.inf)
WORKERS = max(1, min(2, len(os.sched_getaffinity(0))))
BAR = {"detected": 0.90, "step": 0.95, "variant": 0.90, "false_alarms": 0.2}


@dataclass(frozen=True)
class Config:
    name: str
    model: FunnelModel
    injected: int
    clean_days: int


CONFIGS = (
    Config("1,000-3,000 visitors/h", FunnelModel(), injected=450, clean_days=60),
    Config(
        "3,000-9,000 visitors/h",
        FunnelModel(visitors_per_hour=(3_000.0, 9_000.0)),
        injected=120,
        clean_days=30,
    ),
    Config(
        "10,000-30,000 visitors/h",
        FunnelModel(visitors_per_hour=(10_000.0, 30_000.0)),
        injected=120,
        clean_days=30,
    ),
)


@dataclass(frozen=True)
class Outcome:
    """One injected run."""

    step: str
    variant: str | None
    drop: float
    evidence: float  # nats available in the first 30 minutes
    delay: float  # minutes to the first alert at the injected step; inf if none followed
    right_step: bool
    right_variant: bool
    metric: str
    false_alarms: int  # before the injection
    clean_seconds: float
    example: str
    threshold: float  # the monitor's alarm threshold at the end of the run, nats


def _kl(q: float, p: float) -> float:
    return q * math.log(q / p) + (1 - q) * math.log((1 - q) / (1 - p))


def _evidence(buckets: Sequence[Bucket], regression: Regression) -> float:
    """Expected log-likelihood ratio of the affected visitors' first 30 minutes."""

    def affected(b: Bucket) -> bool:
        return b.step == regression.step and (
            regression.variant is None or b.dims["variant"] == regression.variant
        )

    before = [b for b in buckets if affected(b) and regression.at - 6 * HOUR <= b.start]
    base = [b for b in before if b.start + SETTINGS.bucket_seconds <= regression.at]
    after = [b for b in before if regression.at <= b.start < regression.at + BAR_MINUTES * 60]
    p = sum(b.advanced for b in base) / max(1, sum(b.entered for b in base))
    n = sum(b.entered for b in after)
    return n * _kl(p * (1 - regression.drop), p) if 0 < p < 1 else 0.0


def injected_run(seed: int, model: FunnelModel) -> Outcome:
    draw = random.Random(seed)
    step = STEPS[seed % len(STEPS)]
    variant = SCOPES[(seed // len(STEPS)) % len(SCOPES)]
    drop = draw.uniform(*DROPS)
    start = START + SETTINGS.bucket_seconds * draw.randrange(int(24 * HOUR / 300))
    at = start + draw.uniform(4 * HOUR, 8 * HOUR)
    regression = Regression(at=at, step=step, drop=drop, variant=variant)
    hours = (at - start) / HOUR + FOLLOW_MINUTES / 60
    buckets = simulate_traffic(
        start=start, hours=hours, seed=10_000 + seed, model=model, regressions=[regression]
    )
    monitor = Monitor(SETTINGS)
    alerts = [a for a in monitor.observe(buckets) if a.status is AlertStatus.OPEN]
    before = [a for a in alerts if a.at <= at]
    after = [a for a in alerts if a.at > at]
    hit = next((a for a in after if a.step == step), None)
    named = hit.culprit("variant") if hit is not None else None
    return Outcome(
        step=step,
        variant=variant,
        drop=drop,
        evidence=_evidence(buckets, regression),
        delay=(hit.at - at) / 60 if hit is not None else math.inf,
        right_step=bool(after) and after[0].step == step,
        right_variant=hit is not None and (named.value if named else None) == variant,
        metric=hit.metric.value if hit is not None else "",
        false_alarms=len(before),
        clean_seconds=max(0.0, at - start - WARM_SECONDS),
        example=explain(hit) if hit is not None else "",
        threshold=monitor.threshold,
    )


def clean_run(seed: int, model: FunnelModel) -> tuple[int, float]:
    """False alarms on one clean simulated day, and the seconds the monitor could alarm."""
    start = START + SETTINGS.bucket_seconds * random.Random(seed).randrange(288)
    buckets = simulate_traffic(start=start, hours=24, seed=50_000 + seed, model=model)
    alerts = Monitor(SETTINGS).observe(buckets)
    return sum(a.status is AlertStatus.OPEN for a in alerts), 24 * HOUR - WARM_SECONDS


# --- statistics -------------------------------------------------------------------------


def wilson(successes: int, n: int) -> tuple[float, float, float]:
    if n == 0:
        return math.nan, math.nan, math.nan
    z = 1.959964
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, max(0.0, centre - half), min(1.0, centre + half)


def pct(successes: int, n: int) -> str:
    p, low, high = wilson(successes, n)
    if math.isnan(p):
        return "n/a"
    return f"{100 * p:.0f} % [{100 * low:.0f}, {100 * high:.0f}] ({successes}/{n})"


def poisson_rate(events: int, days: float) -> tuple[float, float, float]:
    low = stats.chi2.ppf(0.025, 2 * events) / 2 if events > 0 else 0.0
    high = stats.chi2.ppf(0.975, 2 * events + 2) / 2
    return events / days, float(low) / days, float(high) / days


def minutes(value: float) -> str:
    return f"> {FOLLOW_MINUTES:.0f}" if math.isinf(value) else f"{value:.0f}"


def quantile(delays: Sequence[float], q: float) -> str:
    """Nearest-rank quantile of delays (misses are infinite) with a 95 % bootstrap interval."""
    data = np.sort(np.asarray(delays, dtype=np.float64))
    if len(data) == 0:
        return "n/a"

    def nearest(sample: np.ndarray) -> float:
        return float(sample[max(0, math.ceil(q * len(sample)) - 1)])

    rng = np.random.default_rng(12345)
    boots = [nearest(np.sort(rng.choice(data, len(data)))) for _ in range(1000)]
    low, high = np.percentile(boots, [2.5, 97.5], method="nearest")
    return f"{minutes(nearest(data))} [{minutes(float(low))}, {minutes(float(high))}]"


# --- the benchmark ------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    config: Config
    outcomes: list[Outcome]
    false_alarms: int
    clean_days: float

    def count(self, keep: Callable[[Outcome], bool], among: Sequence[Outcome]) -> int:
        return sum(keep(o) for o in among)

    @property
    def threshold(self) -> float:
        return float(np.median([o.threshold for o in self.outcomes]))

    @property
    def detected(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.delay <= BAR_MINUTES]

    def rates(self) -> dict[str, float]:
        single = [o for o in self.detected if o.variant is not None]
        whole = [o for o in self.detected if o.variant is None]
        fa, _, _ = poisson_rate(self.false_alarms, self.clean_days)
        n = len(self.outcomes)
        return {
            "detected": len(self.detected) / n,
            "step": self.count(lambda o: o.right_step, self.detected) / max(1, len(self.detected)),
            "variant": (self.count(lambda o: o.right_variant, single) + 0.0) / max(1, len(single)),
            "whole": self.count(lambda o: o.right_variant, whole) / max(1, len(whole)),
            "false_alarms": fa,
        }


def evaluate(config: Config, pool: Executor) -> Result:
    """Every run of a configuration; runs are seeded one by one, so the pool changes nothing
    but the wall time."""
    model = itertools.repeat(config.model)
    outcomes = list(pool.map(injected_run, range(config.injected), model, chunksize=8))
    clean = list(pool.map(clean_run, range(config.clean_days), model, chunksize=2))
    false_alarms = sum(o.false_alarms for o in outcomes) + sum(alarms for alarms, _ in clean)
    seconds = sum(o.clean_seconds for o in outcomes) + sum(s for _, s in clean)
    return Result(config, outcomes, false_alarms, seconds / (24 * HOUR))


def _summary_rows(results: Sequence[Result]) -> list[list[str]]:
    def row(label: str, cell: Callable[[Result], str]) -> list[str]:
        return [label, *(cell(r) for r in results)]

    def single(r: Result) -> list[Outcome]:
        return [o for o in r.detected if o.variant is not None]

    def whole(r: Result) -> list[Outcome]:
        return [o for o in r.detected if o.variant is None]

    def fa(r: Result) -> str:
        rate, low, high = poisson_rate(r.false_alarms, r.clean_days)
        return f"{rate:.2f} [{low:.2f}, {high:.2f}] ({r.false_alarms} in {r.clean_days:.0f} d)"

    def success(o: Outcome) -> bool:
        return o.delay <= BAR_MINUTES and o.right_step and o.right_variant

    return [
        row("injected regressions", lambda r: f"{len(r.outcomes)}"),
        row(
            "detected within 30 min",
            lambda r: pct(len(r.detected), len(r.outcomes)),
        ),
        row(
            "detected within 60 min",
            lambda r: pct(sum(o.delay <= FOLLOW_MINUTES for o in r.outcomes), len(r.outcomes)),
        ),
        row("median delay, min", lambda r: quantile([o.delay for o in r.outcomes], 0.5)),
        row("p90 delay, min", lambda r: quantile([o.delay for o in r.outcomes], 0.9)),
        row(
            "right step named (of detected)",
            lambda r: pct(r.count(lambda o: o.right_step, r.detected), len(r.detected)),
        ),
        row(
            "right variant named (one-variant drops, of detected)",
            lambda r: pct(r.count(lambda o: o.right_variant, single(r)), len(single(r))),
        ),
        row(
            "no variant named (all-variant drops, of detected)",
            lambda r: pct(r.count(lambda o: o.right_variant, whole(r)), len(whole(r))),
        ),
        row(
            "all three: within 30 min, right step and variant",
            lambda r: pct(r.count(success, r.outcomes), len(r.outcomes)),
        ),
        row("false alarms per simulated day (clean traffic)", fa),
        row("alarm threshold, nats (median over runs)", lambda r: f"{r.threshold:.1f}"),
    ]


def _breakdown(result: Result) -> str:
    rows = []
    for step in STEPS:
        for variant in SCOPES:
            group = [o for o in result.outcomes if o.step == step and o.variant == variant]
            detected = [o for o in group if o.delay <= BAR_MINUTES]
            rows.append(
                [
                    step,
                    f"variant {variant}" if variant else "all variants",
                    str(len(group)),
                    f"{np.median([o.evidence for o in group]):.1f}",
                    pct(len(detected), len(group)),
                    minutes(float(np.median([o.delay for o in group]))),
                    pct(sum(o.right_variant for o in detected), len(detected)),
                ]
            )
    return table(
        [
            "step",
            "dropped in",
            "runs",
            "median evidence at 30 min, nats",
            "detected within 30 min",
            "median delay, min",
            "variant named right (of detected)",
        ],
        rows,
        "llrrrrr",
    )


def _by_evidence(results: Sequence[Result]) -> str:
    outcomes = [o for r in results for o in r.outcomes]
    rows = []
    for low, high in itertools.pairwise(EVIDENCE_BINS):
        group = [o for o in outcomes if low <= o.evidence < high]
        label = f"≥ {low:.0f}" if math.isinf(high) else f"{low:.0f}-{high:.0f}"
        rows.append(
            [
                label,
                str(len(group)),
                pct(sum(o.delay <= BAR_MINUTES for o in group), len(group)),
                pct(sum(o.delay <= FOLLOW_MINUTES for o in group), len(group)),
            ]
        )
    return table(
        ["evidence at 30 min, nats", "runs", "detected within 30 min", "within 60 min"],
        rows,
        "lrrr",
    )


def run() -> Section:
    with ProcessPoolExecutor(max_workers=WORKERS) as pool:
        results = [evaluate(config, pool) for config in CONFIGS]
    names = [r.config.name for r in results]
    bar_rows = []
    verdicts = []
    for result in results:
        rates = result.rates()
        checks = [
            rates["detected"] >= BAR["detected"],
            rates["step"] >= BAR["step"],
            min(rates["variant"], rates["whole"]) >= BAR["variant"],
            rates["false_alarms"] <= BAR["false_alarms"],
        ]
        verdicts.append(all(checks))
        bar_rows.append(
            [
                result.config.name,
                *("pass" if ok else "**FAIL**" for ok in checks),
                "**pass**" if all(checks) else "**FAIL**",
            ]
        )
    main = results[0]
    examples = [o.example for o in main.outcomes if o.example][:3]
    runs = " and ".join(
        f"{c.injected} injected runs + {c.clean_days} clean days ({c.name})" for c in CONFIGS
    )
    setup = (
        f"{runs}; "
        "funnel landing → offer → checkout → order with base conversions "
        f"{', '.join(f'{p:.0%}' for p in FunnelModel().conversion)} (x variant, device and "
        "segment effects, a ±4 % daily cycle), 5-minute buckets, default `Settings()` "
        f"(CUSUM tuned to a {SETTINGS.conversion_shift:.0%} relative conversion drop, "
        f"target {SETTINGS.false_alarms_per_day} false alarms a day, baseline "
        f"{SETTINGS.baseline_seconds / HOUR:.0f} h behind a {SETTINGS.guard_seconds / 60:.0f}"
        "-minute guard). Drops of 20-40 % (relative) in variant A, variant B or every variant "
        "at landing, offer or checkout, rotating over the seeds."
    )
    markdown = "\n\n".join(
        [
            setup,
            "Per configuration (95 % intervals; delays count misses as longer than "
            f"{FOLLOW_MINUTES:.0f} min):",
            table(["", *names], _summary_rows(results), "l" + "r" * len(results)),
            "Bar: detected within 30 min in ≥ 90 % of runs, right step in ≥ 95 % and right "
            "variant (or none for an all-variant drop) in ≥ 90 % of the detected, at most "
            f"{BAR['false_alarms']} false alarms a simulated day (point estimates):",
            table(
                ["configuration", "detected ≤ 30 min", "step", "variant", "false alarms", "bar"],
                bar_rows,
                "llllll",
            ),
            *(
                part
                for result in results
                for part in (f"Where the misses are ({result.config.name}):", _breakdown(result))
            ),
            "What the 30-minute bar needs is evidence, and evidence is traffic: a drop is "
            "caught within 30 minutes when the affected visitors' first 30 minutes carry "
            "well over the alarm threshold (the table below), which a 20-40 % drop at the "
            "offer or checkout of a funnel with 1,000-3,000 visitors an hour does not "
            "(4-6 nats against about 12 at a fifth of a false alarm a day; it is caught in "
            "about an hour instead). From 10,000 visitors an hour the bar is met.",
            "Detection against the evidence the first 30 minutes hold (expected log-likelihood "
            "ratio of the affected visitors, all configurations pooled; the threshold is "
            f"{main.threshold:.1f} nats):",
            _by_evidence(results),
            "Explanations as raised (first runs):",
            "\n".join(f"- {text}" for text in examples),
        ]
    )
    summary = []
    for result, ok in zip(results, verdicts, strict=True):
        rates = result.rates()
        summary.append(
            f"{result.config.name}: detected ≤ 30 min {100 * rates['detected']:.0f} %, "
            f"step {100 * rates['step']:.0f} %, variant {100 * rates['variant']:.0f} % / "
            f"none for all {100 * rates['whole']:.0f} %, false alarms "
            f"{rates['false_alarms']:.2f}/day → {'pass' if ok else 'FAIL'}"
        )
    return Section(TITLE, markdown, summary)
