"""Brute-force funnel semantics in plain Python, to hold the numpy engine to.

Everything here follows the written definition of a funnel literally, one person and one start
at a time, with lists and loops and no numpy: slow, but short enough to check by reading. The
tests compare :mod:`nexus.funnels.engine` with it on random event streams.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from nexus.funnels.engine import FunnelSpec


@dataclass(frozen=True)
class Event:
    """One row of the event matrix; ``code`` is the breakdown code, -1 without breakdown."""

    person: int
    t: int
    mask: int
    code: int = -1


@dataclass(frozen=True)
class RefPath:
    """A person's best path: per step the matched time or ``None``; start time and code."""

    times: tuple[int | None, ...]
    start: int
    code: int


def _has(e: Event, condition: int) -> bool:
    return (e.mask >> condition) & 1 == 1


def _label_key(code: int, labels: Sequence[str | None]) -> tuple[Any, ...]:
    """Order of start labels: ``None`` first, then by string, then by code; no breakdown: ()."""
    if code < 0:
        return ()
    label = labels[code]
    return (label is not None, label or "", code)


def _by_person(events: Sequence[Event]) -> dict[int, list[Event]]:
    persons: dict[int, list[Event]] = {}
    for e in events:
        persons.setdefault(e.person, []).append(e)
    return persons


def reference_paths(
    spec: FunnelSpec, events: Sequence[Event], labels: Sequence[str | None] = ()
) -> dict[int, RefPath]:
    """Each person's best path, by the definition; persons not in the funnel are absent."""
    result = {}
    for person, evs in _by_person(events).items():
        if spec.mode == "unordered":
            best = _best_unordered(spec, evs, labels)
        else:
            best = _best_ordered(spec, evs, labels)
        if best is not None:
            result[person] = best
    return result


def _ordered_path(spec: FunnelSpec, evs: list[Event], s: Event) -> list[int | None] | None:
    """The greedy path from start ``s``: step times, or ``None`` when an exclusion hits it."""
    k = len(spec.steps)
    w = spec.window_us
    times: list[int | None] = [None] * k
    times[0] = s.t
    required = [j for j in range(k) if not spec.steps[j].optional]
    prev = s.t
    for r in required[1:]:
        cond = spec.steps[r].condition
        if spec.mode == "strict":
            later = [e.t for e in evs if e.t > prev]
            if not later:
                break
            nxt = min(later)
            if not (nxt - s.t <= w and any(e.t == nxt and _has(e, cond) for e in evs)):
                break
        else:
            cands = [e.t for e in evs if _has(e, cond) and e.t > prev and e.t - s.t <= w]
            if not cands:
                break
            nxt = min(cands)
        times[r] = prev = nxt

    def in_gap(cond: int, a: int, b: int | None, ts: list[int | None]) -> list[int]:
        ta = ts[a]
        if ta is None:
            return []
        tb = ts[b] if b is not None else None
        if tb is not None:
            return [e.t for e in evs if _has(e, cond) and ta < e.t < tb]
        return [e.t for e in evs if _has(e, cond) and ta < e.t <= s.t + w]

    required_only = list(times)
    for o in range(k):
        if spec.steps[o].optional:
            a = max(r for r in required if r < o)
            after = [r for r in required if r > o]
            b = after[0] if after else None
            found = in_gap(spec.steps[o].condition, a, b, required_only)
            times[o] = min(found) if found else None
    for ex in spec.exclusions:
        if in_gap(ex.condition, ex.after_step, ex.before_step, times):
            return None
    return times


def _best_ordered(
    spec: FunnelSpec, evs: list[Event], labels: Sequence[str | None]
) -> RefPath | None:
    k = len(spec.steps)
    best: tuple[Any, ...] | None = None
    best_path: RefPath | None = None
    for s in evs:
        if not _has(s, spec.steps[0].condition):
            continue
        times = _ordered_path(spec, evs, s)
        if times is None:
            continue
        furthest = max(j for j in range(k) if not spec.steps[j].optional and times[j] is not None)
        n_opt = sum(1 for j in range(k) if spec.steps[j].optional and times[j] is not None)
        key = (-furthest, -n_opt, s.t, _label_key(s.code, labels))
        if best is None or key < best:
            best, best_path = key, RefPath(tuple(times), s.t, s.code)
    return best_path


def _best_unordered(
    spec: FunnelSpec, evs: list[Event], labels: Sequence[str | None]
) -> RefPath | None:
    k = len(spec.steps)
    w = spec.window_us
    best: tuple[Any, ...] | None = None
    best_path: RefPath | None = None
    for e in evs:
        if not any(_has(e, step.condition) for step in spec.steps):
            continue
        t = e.t
        if any(_has(x, ex.condition) and t <= x.t <= t + w for ex in spec.exclusions for x in evs):
            continue
        earliest = []
        for step in spec.steps:
            found = [x.t for x in evs if _has(x, step.condition) and t <= x.t <= t + w]
            if found:
                earliest.append(min(found))
        count = len(earliest)
        key = (-count, t, _label_key(e.code, labels))
        if best is None or key < best:
            positions = (*sorted(earliest), *[None] * (k - count))
            best, best_path = key, RefPath(positions, t, e.code)
    return best_path


def furthest_step_by_enumeration(
    steps: Sequence[int], window_us: int, evs: Sequence[Event]
) -> int | None:
    """Ordered mode, all steps required, no exclusions: the largest ``k`` for which some
    distinct events ``e0..ek`` match steps ``0..k`` with strictly increasing times and
    ``t(ek) - t(e0) <= window``; ``None`` when no event matches step 0.

    Independent of the greedy definition: it tries every chain of events.
    """
    ordered = sorted(evs, key=lambda e: e.t)
    for k in range(len(steps) - 1, -1, -1):
        for chain in itertools.combinations(ordered, k + 1):
            increasing = all(x.t < y.t for x, y in itertools.pairwise(chain))
            fits = chain[-1].t - chain[0].t <= window_us
            matches = all(_has(e, c) for e, c in zip(chain, steps, strict=False))
            if increasing and fits and matches:
                return k
    return None


# --------------------------------------------------------------------------------------------
# Summaries, as plain dicts
# --------------------------------------------------------------------------------------------


def _quantile(values: list[int], q: float) -> float | None:
    """Linear interpolation between order statistics (numpy's "linear", Hyndman-Fan 7)."""
    if not values:
        return None
    xs = sorted(values)
    h = (len(xs) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (h - lo) * (xs[hi] - xs[lo])


def _histogram(values: list[int], bins: int) -> list[tuple[int, int, int]]:
    if not values:
        return []
    top = max(values)
    if top == 0:
        return [(0, 1, len(values))]
    counts = [0] * bins
    for v in values:
        counts[min(math.floor(Fraction(v * bins, top)), bins - 1)] += 1
    edges = [math.ceil(Fraction(i * top, bins)) for i in range(bins)] + [top]
    return [(edges[i], edges[i + 1], counts[i]) for i in range(bins)]


def reference_totals(
    spec: FunnelSpec,
    group: Sequence[RefPath],
    *,
    interval_us: int | None,
    origin_us: int,
    bins: int,
) -> dict[str, Any]:
    """Totals of one group of persons, as the dict ``dataclasses.asdict`` makes of the engine's."""
    k = len(spec.steps)
    counts = [sum(1 for p in group if p.times[j] is not None) for j in range(k)]
    steps = []
    for j in range(k):
        if j == 0:
            conv = 1.0 if counts[0] > 0 else 0.0
            steps.append(
                {
                    "count": counts[0],
                    "conversion_from_start": conv,
                    "conversion_from_previous": conv,
                    "dropped": 0,
                }
            )
            continue
        prev = j - 1
        while spec.mode == "ordered" and spec.steps[prev].optional:
            prev -= 1
        steps.append(
            {
                "count": counts[j],
                "conversion_from_start": counts[j] / counts[0] if counts[0] else 0.0,
                "conversion_from_previous": counts[j] / counts[prev] if counts[prev] else 0.0,
                "dropped": counts[prev] - counts[j],
            }
        )
    last = k - 1
    while spec.mode == "ordered" and spec.steps[last].optional:
        last -= 1

    def since_start(j: int) -> list[int]:
        return [t - p.start for p in group if (t := p.times[j]) is not None]

    durations = since_start(last)
    to_step = [_quantile(since_start(j), 0.5) for j in range(k)]
    trend = []
    if interval_us is not None:
        buckets: dict[int, list[RefPath]] = {}
        for p in group:
            key = origin_us + ((p.start - origin_us) // interval_us) * interval_us
            buckets.setdefault(key, []).append(p)
        for key in sorted(buckets):
            members = buckets[key]
            won = sum(1 for p in members if p.times[last] is not None)
            trend.append(
                {
                    "start_us": key,
                    "entered": len(members),
                    "converted": won,
                    "conversion_rate": won / len(members),
                }
            )
    return {
        "steps": steps,
        "time_to_convert": {
            "converted": len(durations),
            "median_us": _quantile(durations, 0.5),
            "p90_us": _quantile(durations, 0.9),
            "mean_us": sum(durations) / len(durations) if durations else None,
            "histogram": _histogram(durations, bins),
            "median_to_step_us": to_step,
        },
        "trend": trend,
    }


def reference_summary(
    spec: FunnelSpec,
    result: dict[int, RefPath],
    labels: Sequence[str | None],
    *,
    interval_us: int | None = None,
    origin_us: int = 0,
    bins: int = 10,
) -> dict[str, Any]:
    """Overall totals and totals per breakdown label (``None`` first, then sorted)."""
    group = list(result.values())

    def totals(members: list[RefPath]) -> dict[str, Any]:
        return reference_totals(
            spec, members, interval_us=interval_us, origin_us=origin_us, bins=bins
        )

    by_label: dict[str | None, list[RefPath]] = {}
    for p in group:
        if p.code >= 0:
            by_label.setdefault(labels[p.code], []).append(p)
    order = sorted(by_label, key=lambda label: (label is not None, label or ""))
    return {
        "overall": totals(group),
        "breakdown": [[label, totals(by_label[label])] for label in order],
    }


def reference_dropped_at(spec: FunnelSpec, result: dict[int, RefPath], step: int) -> list[int]:
    """Persons who matched every required step before ``step`` and not ``step``, sorted."""
    before = [j for j in range(step) if spec.mode != "ordered" or not spec.steps[j].optional]
    return sorted(
        person
        for person, p in result.items()
        if all(p.times[j] is not None for j in before) and p.times[step] is None
    )
