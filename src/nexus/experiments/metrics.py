"""Per-visitor metric values of an experiment, from exposure and metric events (pure).

A visitor enters the analysis at their first exposure; a metric counts what they did in the
metric's window after it (``[t0, t0 + window)``), and CUPED's covariate is the same metric
over the same length of time before it (``[t0 - window, t0)``). Visitors exposed to more
than one variant (two devices merged into one person, say) are left out, as GrowthBook does,
because no arm can claim what they did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

Aggregate = Literal["count", "sum", "any"]


@dataclass(frozen=True, slots=True)
class Exposures:
    """Exposed visitors sorted by person code: when they first saw the experiment and which
    arm (an index into ``variants``) they saw."""

    person: NDArray[np.int64]
    first_us: NDArray[np.int64]
    arm: NDArray[np.int64]
    variants: tuple[str, ...]
    conflicted: int

    def __len__(self) -> int:
        return int(self.person.shape[0])

    def counts(self) -> list[int]:
        counts: list[int] = np.bincount(self.arm, minlength=len(self.variants)).tolist()
        return counts


def first_exposures(
    person: NDArray[np.int64],
    ts: NDArray[np.int64],
    variant: Sequence[str | None],
    variants: Sequence[str],
) -> Exposures:
    """Exposures from rows sorted by (person, ts); rows naming no known variant are ignored."""
    names = {name: index for index, name in enumerate(variants)}
    arm = np.fromiter((names.get(v or "", -1) for v in variant), dtype=np.int64, count=len(variant))
    known = arm >= 0
    person, ts, arm = person[known], ts[known], arm[known]
    if person.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Exposures(empty, empty, empty, tuple(variants), 0)
    starts = np.flatnonzero(np.r_[True, person[1:] != person[:-1]])
    ends = np.r_[starts[1:], person.size]
    lowest = np.minimum.reduceat(arm, starts)
    highest = np.maximum.reduceat(arm, starts)
    single = lowest == highest
    first = starts[single]
    return Exposures(
        person=person[first],
        first_us=np.minimum.reduceat(ts, starts)[single],
        arm=arm[first],
        variants=tuple(variants),
        conflicted=int((~single).sum()) if ends.size else 0,
    )


def window_values(
    exposures: Exposures,
    person: NDArray[np.int64],
    ts: NDArray[np.int64],
    *,
    window_us: int,
    aggregate: Aggregate,
    values: NDArray[np.float64] | None = None,
    before: bool = False,
) -> NDArray[np.float64]:
    """Each exposed visitor's metric: the count of events, the sum of ``values`` (missing =
    0) or whether any event happened (1.0/0.0), in the window after (or ``before``) their
    first exposure."""
    n = len(exposures)
    if n == 0 or person.size == 0:
        return np.zeros(n)
    index = np.searchsorted(exposures.person, person)
    index = np.minimum(index, n - 1)
    matched = exposures.person[index] == person
    delta = ts - exposures.first_us[index]
    inside = (delta < 0) & (delta >= -window_us) if before else (delta >= 0) & (delta < window_us)
    keep = matched & inside
    if aggregate == "sum":
        if values is None:
            raise ValueError("a sum needs values")
        weights = np.nan_to_num(values[keep], nan=0.0, posinf=0.0, neginf=0.0)
    else:
        weights = np.ones(int(keep.sum()))
    totals = np.bincount(index[keep], weights=weights, minlength=n).astype(np.float64)
    if aggregate == "any":
        return (totals > 0).astype(np.float64)
    return totals


def numbers(texts: Sequence[str | None]) -> NDArray[np.float64]:
    """Property texts as numbers; anything that is not one is NaN."""
    out = np.full(len(texts), np.nan)
    for i, text in enumerate(texts):
        if text is None:
            continue
        try:
            out[i] = float(text)
        except ValueError:
            continue
    return out
