"""Funnel analysis over an event matrix: who reached which step, and the totals built on that.

This is the pure core behind funnel reports: numpy arrays in, numpy arrays and frozen dataclasses
out, no I/O. The event store hands over one row per event (person code, timestamp, a bit mask of
the conditions the event matches, optionally a breakdown code); :func:`paths` finds each person's
best path through the funnel and :func:`summarize` / :func:`dropped_at` aggregate those paths.

Algorithm
---------
Events that match none of the funnel's conditions are dropped (except in strict mode, where
every event occupies a timestamp). The rest are sorted by (person, time) — a cheap check skips
the sort when the store already did it — and collapsed into *moments*: one per distinct
(person, time), carrying the OR of the masks of its events. Every rule of the semantics compares
times, strictly or inclusively, never the identity of events at one time, so a moment stands for
all of its events; the only per-event attribute that survives is the breakdown label of a start,
and a moment keeps the smallest label among its start events, which is what the tie-break on
labels asks for. Row order among tied rows therefore cannot change the result.

Ordered and strict mode follow one path per start moment, all paths at once. For each required
step, the moments matching its condition form a sorted array of moment numbers, and one
``searchsorted`` of every live path's current moment into it finds the earliest later matching
moment (with many queries, a backward fill of "next matching moment" over all moments does the
same in one linear pass). A path survives when that moment is not past its person's last moment
and lies within the window of its start. Strict mode needs no search: the step must be at the
very next moment of the person. Optional steps and exclusions are one more search each. Only
surviving paths are carried to the next step, so the work is a few passes over the moments and
shrinks as the funnel narrows; it does not depend on how events are spread over persons. The best
path per person is a segmented maximum over paths, which are already in (person, time) order.
Ordered funnels without optional steps or exclusions (the common case) take a leaner version of
the same walk that keeps per path only what the required steps need (``_ordered_plain``).

Why following the earliest match is enough (ClickHouse ``windowFunnel`` with ``strict_increase``
does the same): fix a start ``s`` and suppose events with times ``c1 < c2 < … < ck``, all within
``t(s) + W``, match steps 1..k. The greedy path picks ``g1``, the earliest match of step 1 after
``t(s)``, so ``g1 <= c1``; if ``g(i-1) <= c(i-1)``, then ``ci`` is itself a candidate for step
``i`` after ``g(i-1)``, so ``gi <= ci``. Hence the greedy path reaches step k whenever any chain
does, so the best greedy path over all starts is the person's furthest step. The tests check this
against a brute-force enumeration of chains.

Unordered mode anchors a window ``[t, t + W]`` at every moment matching any step, counts the
steps with a matching moment inside it (one lookup per distinct condition), picks the best anchor
per person, and only then looks up the step times for the chosen anchors.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Final, Literal, NamedTuple, get_args

import numpy as np
import numpy.typing as npt

__all__ = [
    "NO_TIME",
    "EventMatrix",
    "Exclusion",
    "FunnelSpec",
    "FunnelSummary",
    "FunnelTotals",
    "HistogramBin",
    "Mode",
    "PersonPaths",
    "Step",
    "StepTotals",
    "TimeToConvert",
    "TrendBucket",
    "dropped_at",
    "paths",
    "summarize",
]

Mode = Literal["ordered", "strict", "unordered"]

I64 = npt.NDArray[np.int64]

MAX_STEPS: Final = 20
MAX_CONDITION: Final = 63

_BLOCK: Final = 1 << 16
"""Rows per block where a pass over a column is cut into cache-sized pieces."""

NO_TIME: Final = int(np.iinfo(np.int64).min)
"""Value of :attr:`PersonPaths.times` where the step was not matched (the smallest int64)."""


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One funnel step: events whose mask has bit ``condition`` set match it.

    An optional step (ordered mode only) is counted when it happens between its neighbouring
    required steps but never decides how far a person got.
    """

    condition: int
    optional: bool = False


@dataclass(frozen=True)
class Exclusion:
    """Discard a path when an event matching ``condition`` happens between two of its steps.

    The gap runs from step ``after_step`` to step ``before_step`` (0-based, ``after < before``)
    or to the end of the conversion window when ``before_step`` was not reached. In unordered
    mode the two indices are ignored and the whole window of the anchor counts.
    """

    condition: int
    after_step: int
    before_step: int


@dataclass(frozen=True)
class FunnelSpec:
    """What a funnel asks: its steps in order, how they must follow each other, and the window.

    ``mode`` is ``"ordered"`` (steps in order, other events may come between), ``"strict"``
    (each step at the person's very next timestamp) or ``"unordered"`` (steps in any order
    within the window). ``window_us`` bounds the time from the first step to every later one.
    The constructor refuses specs the engine cannot answer, with a ``ValueError``.
    """

    steps: tuple[Step, ...]
    mode: Mode
    window_us: int
    exclusions: tuple[Exclusion, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.steps)
        if self.mode not in get_args(Mode):
            raise ValueError(f"mode must be one of {get_args(Mode)}, not {self.mode!r}")
        if not 2 <= n <= MAX_STEPS:
            raise ValueError(f"a funnel has 2 to {MAX_STEPS} steps, this one has {n}")
        if self.window_us <= 0:
            raise ValueError(f"window_us must be positive, not {self.window_us}")
        for i, step in enumerate(self.steps):
            _check_condition(step.condition, f"step {i}")
        if self.steps[0].optional:
            raise ValueError("step 0 starts the funnel and cannot be optional")
        if self.mode != "ordered" and any(s.optional for s in self.steps):
            raise ValueError(f"optional steps are only allowed in ordered mode, not {self.mode}")
        for i, ex in enumerate(self.exclusions):
            _check_condition(ex.condition, f"exclusion {i}")
            if not 0 <= ex.after_step < ex.before_step < n:
                raise ValueError(
                    f"exclusion {i} must lie between two steps with 0 <= after_step < "
                    f"before_step < {n}, got after_step={ex.after_step}, "
                    f"before_step={ex.before_step}"
                )

    @property
    def required(self) -> tuple[int, ...]:
        """Indices of the required (not optional) steps, step 0 first."""
        return tuple(i for i, s in enumerate(self.steps) if not s.optional)

    @property
    def last_required(self) -> int:
        """Index of the last required step: reaching it is what "converted" means."""
        return self.required[-1]

    def previous_required(self, step: int) -> int:
        """Index of the nearest required step before ``step`` (``step >= 1``)."""
        return max(r for r in self.required if r < step)


def _check_condition(condition: int, what: str) -> None:
    if not 0 <= condition <= MAX_CONDITION:
        raise ValueError(f"{what}: condition bit must be in 0..{MAX_CONDITION}, not {condition}")


@dataclass(frozen=True, eq=False)
class EventMatrix:
    """The events of the analysed time range, one row per event, in any order.

    ``mask`` bit ``i`` says the event matches condition ``i``; a row with mask 0 matches nothing
    but still occupies a timestamp, which matters in strict mode. ``breakdown`` holds a code into
    ``breakdown_labels`` per event (``None``: no breakdown).
    """

    person: npt.NDArray[np.int64]
    ts: npt.NDArray[np.int64]
    mask: npt.NDArray[np.int64]
    breakdown: npt.NDArray[np.int32] | None = None
    breakdown_labels: tuple[str | None, ...] = ()

    def __post_init__(self) -> None:
        shapes = {np.shape(self.person), np.shape(self.ts), np.shape(self.mask)}
        if self.breakdown is not None:
            shapes.add(np.shape(self.breakdown))
        if len(shapes) != 1 or len(next(iter(shapes))) != 1:
            raise ValueError(f"event columns must be 1-D and of equal length, got {shapes}")


# --------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PersonPaths:
    """Each funnel person's best path, one row per person sorted by person code.

    ``times[i, j]`` is when step ``j`` was matched, or :data:`NO_TIME` where ``matched[i, j]`` is
    false. ``start`` is the time of step 0 (the anchor in unordered mode, where column ``j`` is the
    ``j+1``-th step reached rather than step ``j``). ``breakdown`` is the code of the start event,
    -1 without a breakdown.
    """

    person: npt.NDArray[np.int64]
    matched: npt.NDArray[np.bool_]
    times: npt.NDArray[np.int64]
    start: npt.NDArray[np.int64]
    breakdown: npt.NDArray[np.int32]

    @property
    def n_persons(self) -> int:
        """Number of persons in the funnel."""
        return int(self.person.shape[0])


@dataclass(frozen=True, eq=False)
class _Moments:
    """Events collapsed to one row per distinct (person, time), sorted by both.

    ``person_last`` holds the last moment number of each person, in order (computed on first
    use). ``start_rank`` has one entry per *start moment* (a moment with an event matching the
    start bits), in moment order: the smallest breakdown rank (position of the code in label
    order) among the moment's start events. ``code_of_rank`` maps a rank back to its code. Both
    are ``None`` without a breakdown.
    """

    person: I64
    time: I64
    mask: I64
    start_rank: I64 | None
    code_of_rank: npt.NDArray[np.int32] | None

    @property
    def size(self) -> int:
        return int(self.person.shape[0])

    @cached_property
    def person_last(self) -> I64:
        p = self.person
        last = np.flatnonzero(p[1:] != p[:-1])
        return np.append(last, p.shape[0] - 1) if p.shape[0] else last

    def person_end(self, moments: I64) -> I64:
        """The last moment number of the person of each of ``moments`` (sorted)."""
        if moments.shape[0] * 2 < self.size:
            return self.person_last.take(np.searchsorted(self.person_last, moments))
        # Many queries: spell the answer out for every moment, then pick.
        sizes = np.diff(self.person_last, prepend=-1)
        return np.repeat(self.person_last, sizes).take(moments)

    def codes(self, start_numbers: I64) -> npt.NDArray[np.int32]:
        """Breakdown codes of the given start moments (numbered in moment order); -1 without."""
        if self.start_rank is None or self.code_of_rank is None:
            return np.full(start_numbers.shape[0], -1, dtype=np.int32)
        return self.code_of_rank[self.start_rank[start_numbers]]


def _flag(condition: int) -> np.int64:
    """The int64 with only bit ``condition`` set (bit 63 is the sign bit)."""
    return _signed(1 << condition)


def _signed(bits: int) -> np.int64:
    return np.int64(bits - (1 << 64) if bits >= 1 << 63 else bits)


class _Matcher:
    """Which rows of a mask column match some bits, reusing two scratch buffers.

    Large temporaries cost more in page faults than in arithmetic; one buffer pair serves every
    condition of a funnel.
    """

    def __init__(self, mask: I64) -> None:
        self.mask = mask
        self._and: I64 | None = None
        self._hit: npt.NDArray[np.bool_] | None = None

    def any_of(self, bits: np.int64) -> npt.NDArray[np.bool_]:
        """Whether each row has any of ``bits``; valid until the next call."""
        if self._and is None or self._hit is None:
            self._and = np.empty_like(self.mask)
            self._hit = np.empty(self.mask.shape, dtype=np.bool_)
        np.bitwise_and(self.mask, bits, out=self._and)
        return np.not_equal(self._and, 0, out=self._hit)


def _label_order(labels: tuple[str | None, ...]) -> list[int]:
    """Codes sorted by label, ``None`` first, equal labels by code."""
    return sorted(range(len(labels)), key=lambda c: (labels[c] is not None, labels[c] or "", c))


def _is_sorted(p: I64, t: I64, *, strictly: bool = False) -> bool:
    """Whether rows are in (person, time) order; ``strictly``: and no two share both.

    Checked in blocks whose temporaries stay in cache, stopping at the first disorder.
    """
    later = np.greater if strictly else np.greater_equal
    n = p.shape[0]
    for lo in range(0, n - 1, _BLOCK):
        hi = min(lo + _BLOCK, n - 1)
        p0, p1 = p[lo:hi], p[lo + 1 : hi + 1]
        ordered = p1 > p0
        ordered |= (p1 == p0) & later(t[lo + 1 : hi + 1], t[lo:hi])
        if not ordered.all():
            return False
    return True


def _narrow(mask: I64, bits: int) -> npt.NDArray[np.integer]:
    """``mask`` in the narrowest unsigned type that holds ``bits`` (a non-negative int).

    Casting keeps the low bits, so ``_narrow(m, bits) & bits`` equals ``m & bits``; one cast
    makes every later test of those bits a pass over 1 to 4 bytes per row instead of 8.
    """
    width = bits.bit_length()
    for dtype in (np.uint8, np.uint16, np.uint32):
        if width <= np.iinfo(dtype).bits:
            return mask.astype(dtype)
    return mask


def _any_of(narrow: npt.NDArray[np.integer], bits: int) -> npt.NDArray[np.bool_]:
    """Whether each row of a :func:`_narrow` mask has any of ``bits``."""
    flag = _signed(bits) if narrow.dtype == np.int64 else narrow.dtype.type(bits)
    hit: npt.NDArray[np.bool_] = np.bitwise_and(narrow, flag) != 0
    return hit


def _sort_order(p: I64, t: I64) -> npt.NDArray[np.intp]:
    """A stable order by (person, time); one packed key when both ranges fit in 62 bits."""
    p_lo, p_hi = int(p.min()), int(p.max())
    t_lo, t_hi = int(t.min()), int(t.max())
    t_span = t_hi - t_lo + 1
    if (p_hi - p_lo + 1) * t_span < 1 << 62:
        key = (p - p_lo) * np.int64(t_span) + (t - t_lo)
        return np.argsort(key, kind="stable")
    return np.lexsort((t, p))


def _moments(events: EventMatrix, *, keep_bits: int | None, start_bits: int) -> _Moments:
    """Collapse ``events`` to sorted moments.

    ``keep_bits`` drops events that match none of those conditions first (they cannot matter
    outside strict mode); ``start_bits`` says which events may start a path, for the labels.
    Columns are gathered with ``take`` on index arrays: boolean indexing is several times
    slower on irregular masks.
    """
    p = np.asarray(events.person, dtype=np.int64)
    t = np.asarray(events.ts, dtype=np.int64)
    m = np.asarray(events.mask, dtype=np.int64)
    b = None if events.breakdown is None else np.asarray(events.breakdown, dtype=np.int32)
    code_of_rank: npt.NDArray[np.int32] | None = None
    rank_of_code = np.zeros(0, dtype=np.int64)
    if b is not None:
        n_labels = len(events.breakdown_labels)
        if b.size and (int(b.min()) < 0 or int(b.max()) >= n_labels):
            raise ValueError(
                f"breakdown codes must index breakdown_labels (0..{n_labels - 1}), "
                f"found {int(b.min())}..{int(b.max())}"
            )
        code_of_rank = np.asarray(_label_order(events.breakdown_labels), dtype=np.int32)
        rank_of_code = np.empty(n_labels, dtype=np.int64)
        rank_of_code[code_of_rank] = np.arange(n_labels)

    matcher = _Matcher(m)
    if keep_bits is not None:
        keep = _any_of(_narrow(m, keep_bits), keep_bits)
        if not keep.all():
            rows = np.flatnonzero(keep)
            p, t, m = p.take(rows), t.take(rows), m.take(rows)
            b = None if b is None else b.take(rows)
            matcher = _Matcher(m)
    n = p.shape[0]
    # The store's order without ties is the common case: one check settles both questions.
    tied = False
    new = np.ones(n, dtype=np.bool_)
    if n > 1 and not _is_sorted(p, t, strictly=True):
        if not _is_sorted(p, t):
            order = _sort_order(p, t)
            p, t, m = p.take(order), t.take(order), m.take(order)
            b = None if b is None else b.take(order)
            matcher = _Matcher(m)
        np.not_equal(p[1:], p[:-1], out=new[1:])
        new[1:] |= t[1:] != t[:-1]
        tied = not new.all()
    first = np.flatnonzero(new) if tied else np.zeros(0, dtype=np.int64)
    start_rank: I64 | None = None
    if b is not None:
        start_rows = np.flatnonzero(matcher.any_of(_signed(start_bits)))
        start_rank = rank_of_code.take(b.take(start_rows))
        if tied and start_rows.shape[0]:
            # Several start events of one moment: keep the smallest rank.
            moment = (np.cumsum(new) - 1).take(start_rows)
            seg = np.empty(moment.shape[0], dtype=np.bool_)
            seg[0] = True
            np.not_equal(moment[1:], moment[:-1], out=seg[1:])
            start_rank = np.minimum.reduceat(start_rank, np.flatnonzero(seg))
    if tied:
        p, t, m = p.take(first), t.take(first), np.bitwise_or.reduceat(m, first)
    return _Moments(p, t, m, start_rank, code_of_rank)


class _Index:
    """Sorted moment numbers per condition, built once per condition and shared."""

    def __init__(self, moments: _Moments) -> None:
        self._moments = moments
        self._matcher = _Matcher(moments.mask)
        self._cache: dict[int, I64] = {}

    def __call__(self, condition: int) -> I64:
        pos = self._cache.get(condition)
        if pos is None:
            pos = np.flatnonzero(self._matcher.any_of(_flag(condition)))
            self._cache[condition] = pos
        return pos

    def any_of(self, bits: int) -> I64:
        """Moments matching any of ``bits``."""
        return np.flatnonzero(self._matcher.any_of(_signed(bits)))

    def next_match(
        self, condition: int, after: I64, end: I64, latest: I64, *, inclusive: bool
    ) -> I64:
        """Per query, the first moment matching ``condition`` after moment ``after``.

        The moment must belong to the same person (be at most moment ``end``, the person's
        last) and be at or before time ``latest``; it may be moment ``after`` itself when
        ``inclusive``. Returns -1 where there is none.
        """
        pos = self(condition)
        n_queries, size = after.shape[0], self._moments.size
        if pos.shape[0] == 0:
            return np.full(n_queries, -1, dtype=np.int64)
        if n_queries * 2 >= size:
            # Many queries: a backward fill of "next matching moment" over all moments is one
            # linear pass, cheaper than a binary search per query.
            following = np.full(size + 1, size, dtype=np.int64)
            following[pos] = pos
            np.minimum.accumulate(following[::-1], out=following[::-1])
            cand = following.take(after if inclusive else after + 1)
            found = cand < size
            np.minimum(cand, size - 1, out=cand)
        else:
            idx = np.searchsorted(pos, after, side="left" if inclusive else "right")
            found = idx < pos.shape[0]
            np.minimum(idx, pos.shape[0] - 1, out=idx)
            cand = pos.take(idx)
        found &= cand <= end
        found &= self._moments.time.take(cand) <= latest
        return np.where(found, cand, -1)


def paths(spec: FunnelSpec, events: EventMatrix) -> PersonPaths:
    """Each person's best path through the funnel ``spec`` over ``events``.

    Persons without a start event, or whose every path hits an exclusion, are left out.
    """
    k = len(spec.steps)
    step_bits = 0
    for s in spec.steps:
        step_bits |= 1 << s.condition
    all_bits = step_bits
    for ex in spec.exclusions:
        all_bits |= 1 << ex.condition
    if spec.mode == "unordered":
        return _unordered(spec, _moments(events, keep_bits=all_bits, start_bits=step_bits))
    start_bits = 1 << spec.steps[0].condition
    keep = None if spec.mode == "strict" else all_bits
    mo = _moments(events, keep_bits=keep, start_bits=start_bits)
    if spec.mode == "ordered" and not spec.exclusions and spec.required == tuple(range(k)):
        return _ordered_plain(spec, mo)
    return _ordered(spec, mo)


class _Hits(NamedTuple):
    """The paths (sorted path numbers) that matched one step, and the moment of each match."""

    path: I64
    moment: I64


def _ordered(spec: FunnelSpec, mo: _Moments) -> PersonPaths:
    """Ordered and strict mode: one greedy path per start moment, then the best per person."""
    k = len(spec.steps)
    walk = _Walk(spec, mo)
    walk.follow_required()
    walk.follow_optional()
    discarded = walk.excluded()

    # Score: furthest required step, then matched optional steps; earlier starts come first
    # within a person, and a start moment already holds its smallest label.
    score = _score(spec, walk)
    score[discarded] = -1
    chosen = _best_per_person(walk.person, score)
    times = np.full((chosen.shape[0], k), NO_TIME, dtype=np.int64)
    return _chosen_paths(mo, walk.person, chosen, times, [(j, walk.hits[j]) for j in range(k)])


def _chosen_paths(
    mo: _Moments,
    person_of_path: I64,
    chosen: I64,
    times: I64,
    hits: list[tuple[int, tuple[I64, I64]]],
) -> PersonPaths:
    """The chosen paths as :class:`PersonPaths`: each step's matches ``(path, moment)`` are
    written into ``times`` (one row per chosen path) where the path is a chosen one."""
    row_of_path = np.full(person_of_path.shape[0], -1, dtype=np.int64)
    row_of_path[chosen] = np.arange(chosen.shape[0])
    for j, (path, moment) in hits:
        row = row_of_path.take(path)
        keep = np.flatnonzero(row >= 0)
        times[row.take(keep), j] = mo.time.take(moment.take(keep))
    return PersonPaths(
        person=person_of_path.take(chosen),
        matched=times != NO_TIME,
        times=times,
        start=times[:, 0].copy(),
        breakdown=mo.codes(chosen),
    )


def _ordered_plain(spec: FunnelSpec, mo: _Moments) -> PersonPaths:
    """Ordered mode without optional steps or exclusions: :func:`_ordered`, leaner.

    The same greedy paths, one per start moment, but a path needs only its current moment, its
    person and its deadline (see :class:`_PlainWalk`). The best path per person is one
    segmented maximum of a key that orders paths by furthest step, then by earliest start.
    """
    k = len(spec.steps)
    walk = _PlainWalk(spec, mo)
    chosen = _first_best(walk.person, walk.furthest)
    times = np.full((chosen.shape[0], k), NO_TIME, dtype=np.int64)
    times[:, 0] = mo.time.take(walk.starts.take(chosen))
    return _chosen_paths(mo, walk.person, chosen, times, list(enumerate(walk.hits, start=1)))


class _PlainWalk:
    """The greedy paths of :func:`_ordered_plain`, one per start moment, all steps followed.

    The next match of step ``j`` after moment ``x`` is ``pos[count[x]]``, where ``pos`` lists
    the moments matching the step and ``count[x]`` how many of them are at or before ``x``: a
    running count over all moments when many paths ask, a binary search when few do. A match
    belongs to the path's person when its person code equals the path's.

    ``starts`` are the start moments and ``person`` their persons (paths are numbered by start),
    ``furthest`` each path's last matched step and ``hits[j - 1]`` the paths (sorted numbers)
    that matched step ``j >= 1`` with the moment of each match.
    """

    def __init__(self, spec: FunnelSpec, mo: _Moments) -> None:
        self.mo = mo
        step_bits = 0
        for s in spec.steps:
            step_bits |= 1 << s.condition
        self._narrow = _narrow(mo.mask, step_bits)
        self.starts = np.flatnonzero(_any_of(self._narrow, 1 << spec.steps[0].condition))
        n_paths = self.starts.shape[0]
        self.person = mo.person.take(self.starts)
        self.furthest = np.zeros(n_paths, dtype=np.int8)  # MAX_STEPS fits
        self.hits: list[_Hits] = []
        # Scratch space reused by every step: fresh large temporaries cost more in page faults
        # than in arithmetic.
        # Running counts need 32 bits unless there are 2**31 moments.
        self._count_type = np.int32 if mo.size < np.iinfo(np.int32).max else np.int64
        self._counts: npt.NDArray[np.signedinteger] | None = None
        self._index_buf: npt.NDArray[np.signedinteger] = np.empty(n_paths, self._count_type)
        self._moment_buf = np.empty(n_paths, dtype=np.int64)
        self._value_buf = np.empty(n_paths, dtype=np.int64)
        self._ok_buf = np.empty(n_paths, dtype=np.bool_)
        self._test_buf = np.empty(n_paths, dtype=np.bool_)

        path = np.arange(n_paths)
        cur, person = self.starts, self.person
        deadline = _window_end(mo.time.take(self.starts), spec.window_us, in_place=True)
        for j in range(1, len(spec.steps)):
            if cur.shape[0] == 0:
                break
            keep, cur = self._step(spec.steps[j].condition, cur, person, deadline)
            path, person, deadline = path.take(keep), person.take(keep), deadline.take(keep)
            self.furthest[path] = j
            self.hits.append(_Hits(path, cur))

    def _step(self, condition: int, cur: I64, person: I64, deadline: I64) -> tuple[I64, I64]:
        """Which paths at moments ``cur`` match ``condition`` next (indices into ``cur``), and
        the moments of those matches."""
        mo, q = self.mo, cur.shape[0]
        hit = _any_of(self._narrow, 1 << condition)
        pos = np.flatnonzero(hit)
        if pos.shape[0] == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        # ``take`` writes into ``out`` unbuffered only with a non-raising mode; every index
        # below is in range, so "clip" never clips.
        idx: npt.NDArray[np.signedinteger]
        if q * 8 >= mo.size:
            if self._counts is None:
                self._counts = np.empty(mo.size, dtype=self._count_type)
            np.cumsum(hit, out=self._counts)
            idx = np.take(self._counts, cur, out=self._index_buf[:q], mode="clip")
        else:
            idx = np.searchsorted(pos, cur, side="right")
        ok = np.less(idx, pos.shape[0], out=self._ok_buf[:q])
        np.minimum(idx, pos.shape[0] - 1, out=idx)
        cand = np.take(pos, idx, out=self._moment_buf[:q], mode="clip")
        value = np.take(mo.person, cand, out=self._value_buf[:q], mode="clip")
        ok &= np.equal(value, person, out=self._test_buf[:q])
        np.take(mo.time, cand, out=value, mode="clip")
        ok &= np.less_equal(value, deadline, out=self._test_buf[:q])
        keep = np.flatnonzero(ok)
        return keep, cand.take(keep)


def _first_best(person: I64, score: npt.NDArray[np.int8]) -> I64:
    """Per person (``person`` sorted), the first row with the highest score (scores >= 0)."""
    n = person.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    # key = score * (n + 1) + (n - row): larger for a higher score, then for an earlier row.
    key = np.arange(n, 0, -1, dtype=np.int64)
    key += np.multiply(score, n + 1, dtype=np.int64)
    # Group numbers from 0; ``maximum.at`` beats ``maximum.reduceat`` on many small groups.
    new = np.empty(n, dtype=np.int64)
    new[0] = 0
    np.not_equal(person[1:], person[:-1], out=new[1:])
    group = np.cumsum(new, out=new)
    best = np.zeros(int(group[-1]) + 1, dtype=np.int64)
    np.maximum.at(best, group, key)
    best %= n + 1
    return np.int64(n) - best


def _score(spec: FunnelSpec, walk: _Walk) -> I64:
    """Path scores: the furthest required step times (k + 1), plus matched optional steps."""
    k = len(spec.steps)
    furthest = np.zeros(walk.person.shape[0], dtype=np.int64)
    optional = np.zeros(walk.person.shape[0], dtype=np.int64)
    for j, step in enumerate(spec.steps):
        if step.optional:
            optional[walk.hits[j].path] += 1
        else:
            furthest[walk.hits[j].path] = j  # steps in order: the last write is the furthest
    return furthest * (k + 1) + optional


class _Walk:
    """The paths of ordered and strict mode, one per start moment, filled in step by step.

    ``hits[j]`` lists the paths that matched step ``j`` and where; paths are numbered by their
    start moment, so path numbers are also start numbers for :meth:`_Moments.codes`.
    """

    def __init__(self, spec: FunnelSpec, mo: _Moments) -> None:
        self.spec = spec
        self.mo = mo
        self.index = _Index(mo)
        starts = self.index(spec.steps[0].condition)
        self.person = mo.person.take(starts)
        self.end = mo.person_end(starts)
        self.deadline = _window_end(mo.time.take(starts), spec.window_us)
        self.hits: dict[int, _Hits] = {0: _Hits(np.arange(starts.shape[0]), starts)}

    def follow_required(self) -> None:
        """Match the required steps greedily; a path stops at its first missing step."""
        spec, mo = self.spec, self.mo
        path, cur = self.hits[0]
        for r in spec.required[1:]:
            end = self.end.take(path)
            deadline = self.deadline.take(path)
            if spec.mode == "strict":
                nxt = cur + 1
                ok = nxt <= end  # the person's next moment, whatever it matches
                np.minimum(nxt, end, out=nxt)
                ok &= (mo.mask.take(nxt) & _flag(spec.steps[r].condition)) != 0
                ok &= mo.time.take(nxt) <= deadline
            else:
                cond = spec.steps[r].condition
                nxt = self.index.next_match(cond, cur, end, deadline, inclusive=False)
                ok = nxt >= 0
            keep = np.flatnonzero(ok)
            path, cur = path.take(keep), nxt.take(keep)
            self.hits[r] = _Hits(path, cur)

    def follow_optional(self) -> None:
        """Match each optional step in the gap between its neighbouring required steps."""
        required = self.spec.required
        for o, step in enumerate(self.spec.steps):
            if step.optional:
                a = max(r for r in required if r < o)
                b = min((r for r in required if r > o), default=None)
                path, hit = self._first_in_gap(step.condition, a, b)
                keep = np.flatnonzero(hit >= 0)
                self.hits[o] = _Hits(path.take(keep), hit.take(keep))

    def excluded(self) -> npt.NDArray[np.bool_]:
        """Per path, whether an exclusion event lies in its gap."""
        discarded = np.zeros(self.person.shape[0], dtype=np.bool_)
        for ex in self.spec.exclusions:
            path, hit = self._first_in_gap(ex.condition, ex.after_step, ex.before_step)
            discarded[path[hit >= 0]] = True
        return discarded

    def _first_in_gap(self, condition: int, after: int, before: int | None) -> tuple[I64, I64]:
        """For the paths that matched step ``after``, the first moment matching ``condition``
        strictly after it and strictly before step ``before`` (or at most at the window's end
        when ``before`` is ``None`` or unmatched). Returns those paths and the moments (-1: none).
        """
        path, after_moment = self.hits[after]
        latest = self.deadline.take(path)
        if before is not None and path.shape[0]:
            # The paths that matched ``before``, found among those that matched ``after``.
            b_path, b_moment = self.hits[before]
            at = np.searchsorted(path, b_path)
            both = np.flatnonzero(path.take(np.minimum(at, path.shape[0] - 1)) == b_path)
            latest[at.take(both)] = self.mo.time.take(b_moment.take(both)) - 1
        hit = self.index.next_match(
            condition, after_moment, self.end.take(path), latest, inclusive=False
        )
        return path, hit


def _unordered(spec: FunnelSpec, mo: _Moments) -> PersonPaths:
    """Unordered mode: a window at every moment matching any step; the fullest wins.

    Counting matched steps per anchor needs only a boolean per step; the times are looked up
    again for the chosen anchors alone.
    """
    k = len(spec.steps)
    index = _Index(mo)
    step_bits = 0
    for s in spec.steps:
        step_bits |= 1 << s.condition
    anchors = index.any_of(step_bits)
    person = mo.person.take(anchors)
    end = mo.person_end(anchors)
    deadline = _window_end(mo.time.take(anchors), spec.window_us)
    count = np.zeros(anchors.shape[0], dtype=np.int64)
    conditions = [s.condition for s in spec.steps]
    for cond in sorted(set(conditions)):  # steps sharing a condition are matched together
        found = index.next_match(cond, anchors, end, deadline, inclusive=True) >= 0
        count += found if conditions.count(cond) == 1 else found * conditions.count(cond)
    for cond in sorted({ex.condition for ex in spec.exclusions}):
        hit = index.next_match(cond, anchors, end, deadline, inclusive=True)
        count[hit >= 0] = -1
    chosen = _best_per_person(person, count)

    c_anchor, c_end, c_deadline = anchors.take(chosen), end.take(chosen), deadline.take(chosen)
    first = np.empty((k, chosen.shape[0]), dtype=np.int64)
    for j, step in enumerate(spec.steps):
        hit = index.next_match(step.condition, c_anchor, c_end, c_deadline, inclusive=True)
        first[j] = np.where(hit >= 0, mo.time.take(np.maximum(hit, 0)), np.iinfo(np.int64).max)
    first.sort(axis=0)
    matched = np.arange(k)[:, None] < count.take(chosen)[None, :]
    return PersonPaths(
        person=person.take(chosen),
        matched=np.ascontiguousarray(matched.T),
        times=np.ascontiguousarray(np.where(matched, first, NO_TIME).T),
        start=mo.time.take(c_anchor),
        breakdown=mo.codes(chosen),
    )


def _window_end(start: I64, window_us: int, *, in_place: bool = False) -> I64:
    """``start + window_us``, saturating at the largest int64 (a "window" of forever).

    ``in_place`` overwrites ``start`` with the answer and returns it.
    """
    top = int(np.iinfo(np.int64).max) - window_us
    out = start if in_place else np.empty_like(start)
    if top < 0:
        out.fill(np.iinfo(np.int64).max)
        return out
    if start.shape[0] and int(start.max()) > top:
        np.minimum(start, top, out=out)
        out += np.int64(window_us)
        return out
    return np.add(start, np.int64(window_us), out=out)


def _best_per_person(person: I64, score: I64) -> I64:
    """Per person (``person`` sorted), the first row with the highest non-negative score.

    Rows are in time order within a person, so "first" is the earliest start.
    """
    n = person.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    new = np.empty(n, dtype=np.bool_)
    new[0] = True
    np.not_equal(person[1:], person[:-1], out=new[1:])
    seg = np.cumsum(new) - 1
    best = np.maximum.reduceat(score, np.flatnonzero(new))
    good = np.flatnonzero((score == best.take(seg)) & (score >= 0))
    good_seg = seg.take(good)
    first = np.ones(good.shape[0], dtype=np.bool_)
    np.not_equal(good_seg[1:], good_seg[:-1], out=first[1:])
    return good[first]


# --------------------------------------------------------------------------------------------
# Totals
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepTotals:
    """How many persons reached one step, relative to the start and to the previous step.

    "Previous" is the nearest required step before this one. Conversions are 0.0 where the
    reference count is 0; step 0 has conversions 1.0 (0.0 for an empty funnel) and drops 0.
    """

    count: int
    conversion_from_start: float
    conversion_from_previous: float
    dropped: int


HistogramBin = tuple[int, int, int]
"""``(lower_us, upper_us, count)``: persons whose time to convert lies in ``[lower, upper)``.

Bins have equal real width ``max / bins`` from 0 and the last one is closed at ``max``; their
edges are rounded up to whole microseconds, which puts every (integer) time in exactly the bin
whose real range contains it. With fewer microseconds than bins some bins are therefore empty
ranges such as ``[1, 1)``. When every time is 0 there is one bin ``[0, 1)``.
"""


@dataclass(frozen=True)
class TimeToConvert:
    """Time from the start to the last required step, over the persons who reached it.

    Quantiles interpolate linearly between order statistics (numpy ``method="linear"``, Hyndman
    and Fan 1996, definition 7). ``median_to_step_us[j]`` is the median time from the start to
    step ``j`` over the persons who matched ``j``. ``None`` wherever there is nobody to measure.
    """

    converted: int
    median_us: float | None
    p90_us: float | None
    mean_us: float | None
    histogram: tuple[HistogramBin, ...]
    median_to_step_us: tuple[float | None, ...]


@dataclass(frozen=True)
class TrendBucket:
    """Persons whose start lies in ``[start_us, start_us + interval)`` and how many converted."""

    start_us: int
    entered: int
    converted: int
    conversion_rate: float


@dataclass(frozen=True)
class FunnelTotals:
    """Step counts, time to convert and (when asked) the trend for one group of persons."""

    steps: tuple[StepTotals, ...]
    time_to_convert: TimeToConvert
    trend: tuple[TrendBucket, ...]

    @property
    def entered(self) -> int:
        """Persons in the funnel (those who matched step 0)."""
        return self.steps[0].count


@dataclass(frozen=True)
class FunnelSummary:
    """Totals over everyone, and per breakdown label (``None`` first, then by label)."""

    overall: FunnelTotals
    breakdown: tuple[tuple[str | None, FunnelTotals], ...]


def summarize(
    spec: FunnelSpec,
    paths: PersonPaths,
    *,
    labels: tuple[str | None, ...] = (),
    interval_us: int | None = None,
    origin_us: int = 0,
    bins: int = 10,
) -> FunnelSummary:
    """Totals of ``paths`` (as computed by :func:`paths` for ``spec``).

    ``labels`` names the breakdown codes of ``paths``; persons sharing a label are one group.
    With ``interval_us``, the trend buckets start times at ``origin_us + k * interval_us``.
    ``bins`` is the number of histogram bins for the time to convert.
    """
    k = len(spec.steps)
    if paths.matched.ndim != 2 or paths.matched.shape[1] != k:
        raise ValueError(f"paths have shape {paths.matched.shape}, the funnel has {k} steps")
    if interval_us is not None and interval_us <= 0:
        raise ValueError(f"interval_us must be positive, not {interval_us}")
    if bins < 1:
        raise ValueError(f"bins must be at least 1, not {bins}")
    codes = paths.breakdown.astype(np.int64)
    with_code = codes >= 0
    if with_code.any() and int(codes.max()) >= len(labels):
        raise ValueError(f"breakdown code {int(codes.max())} has no label ({len(labels)} given)")

    def totals(rows: npt.NDArray[np.intp] | slice) -> FunnelTotals:
        return _totals(
            spec,
            paths.matched[rows],
            paths.times[rows],
            paths.start[rows],
            interval_us=interval_us,
            origin_us=origin_us,
            bins=bins,
        )

    overall = totals(slice(None))
    rows = np.flatnonzero(with_code)
    if rows.shape[0] == 0:
        return FunnelSummary(overall, ())
    # Group persons by label, not code: codes in label order, where equal labels share the rank
    # of their first code; then sort persons by that rank and split where it changes.
    order = _label_order(labels)
    group_rank = np.empty(len(labels), dtype=np.int64)
    for pos, code in enumerate(order):
        same = pos > 0 and labels[order[pos - 1]] == labels[code]
        group_rank[code] = group_rank[order[pos - 1]] if same else pos
    person_rank = group_rank[codes[rows]]
    by_rank = rows[np.argsort(person_rank, kind="stable")]
    sorted_rank = group_rank[codes[by_rank]]
    bounds = np.flatnonzero(np.concatenate(([True], sorted_rank[1:] != sorted_rank[:-1])))
    ends = np.append(bounds[1:], by_rank.shape[0])
    groups = tuple(
        (labels[int(codes[by_rank[lo]])], totals(by_rank[lo:hi]))
        for lo, hi in zip(bounds.tolist(), ends.tolist(), strict=True)
    )
    return FunnelSummary(overall, groups)


def _totals(
    spec: FunnelSpec,
    matched: npt.NDArray[np.bool_],
    times: I64,
    start: I64,
    *,
    interval_us: int | None,
    origin_us: int,
    bins: int,
) -> FunnelTotals:
    k = len(spec.steps)
    counts = [int(c) for c in matched.sum(axis=0)]
    steps = [StepTotals(counts[0], 1.0 if counts[0] else 0.0, 1.0 if counts[0] else 0.0, 0)]
    for j in range(1, k):
        prev = spec.previous_required(j) if spec.mode == "ordered" else j - 1
        steps.append(
            StepTotals(
                count=counts[j],
                conversion_from_start=_ratio(counts[j], counts[0]),
                conversion_from_previous=_ratio(counts[j], counts[prev]),
                dropped=counts[prev] - counts[j],
            )
        )
    last = spec.last_required if spec.mode == "ordered" else k - 1
    converted = matched[:, last]
    durations = times[converted, last] - start[converted]
    to_step = tuple(
        _quantile(times[matched[:, j], j] - start[matched[:, j]], 0.5) for j in range(k)
    )
    time_to_convert = TimeToConvert(
        converted=int(durations.shape[0]),
        median_us=_quantile(durations, 0.5),
        p90_us=_quantile(durations, 0.9),
        mean_us=float(durations.mean()) if durations.shape[0] else None,
        histogram=_histogram(durations, bins),
        median_to_step_us=to_step,
    )
    trend: tuple[TrendBucket, ...] = ()
    if interval_us is not None:
        bucket = (start - np.int64(origin_us)) // np.int64(interval_us)
        keys, inverse, entered = np.unique(bucket, return_inverse=True, return_counts=True)
        won = np.bincount(inverse, weights=converted, minlength=keys.shape[0])
        trend = tuple(
            TrendBucket(origin_us + key * interval_us, n, int(c), _ratio(int(c), n))
            for key, n, c in zip(keys.tolist(), entered.tolist(), won.tolist(), strict=True)
        )
    return FunnelTotals(tuple(steps), time_to_convert, trend)


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def _quantile(values: I64, q: float) -> float | None:
    if values.shape[0] == 0:
        return None
    return float(np.quantile(values, q, method="linear"))


def _histogram(values: I64, bins: int) -> tuple[HistogramBin, ...]:
    """Equal-width bins over ``[0, max]``; exact for integer microseconds (see HistogramBin)."""
    if values.shape[0] == 0:
        return ()
    top = int(values.max())
    if top == 0:
        return ((0, 1, int(values.shape[0])),)
    # Integer v lies in real bin i (i*top/bins <= v < (i+1)*top/bins) iff ceil(i*top/bins) <= v.
    edges = [-((-i * top) // bins) for i in range(bins)] + [top]
    which = np.searchsorted(np.asarray(edges[:-1], dtype=np.int64), values, side="right") - 1
    counts = np.bincount(which, minlength=bins).tolist()
    return tuple((edges[i], edges[i + 1], counts[i]) for i in range(bins))


def dropped_at(spec: FunnelSpec, paths: PersonPaths, step: int) -> npt.NDArray[np.int64]:
    """Persons who matched every required step before ``step`` but not ``step`` (sorted).

    For drill-down from a funnel chart: "who left at step 3". ``step`` is at least 1; in
    unordered mode it is a position (the persons who reached exactly ``step`` steps).
    """
    k = len(spec.steps)
    if not 1 <= step < k:
        raise ValueError(f"step must be in 1..{k - 1}, not {step}")
    if paths.matched.ndim != 2 or paths.matched.shape[1] != k:
        raise ValueError(f"paths have shape {paths.matched.shape}, the funnel has {k} steps")
    before = [r for r in range(step) if spec.mode != "ordered" or not spec.steps[r].optional]
    reached = paths.matched[:, before].all(axis=1) & ~paths.matched[:, step]
    return paths.person[reached]
