"""Evolutionary search over designs with bandit allocation inside each generation, then a
best-candidate identification phase before a champion is promoted (pure core).

Search
    One **generation** is a population of designs served to live visitors. Traffic inside
    the generation is allocated by Thompson sampling on each design's Beta posterior of
    conversion (Qiu & Miikkulainen, 2019): promising designs get more visitors, so fewer are
    spent on poor ones while the generation is measured. When the generation has had its
    visitors, the next one is bred: the best designs by posterior mean survive unchanged
    (elitism), the rest are children of parents picked by tournament, by uniform crossover
    and mutation. Fitness can be kept per emotional segment (``Settings.segments``), so
    each segment's best design can differ: every segment's elites survive (at most half
    the population, so there is room for children). Evidence is pooled across generations:
    an elite that survives keeps its counts.

Fitness model (``Settings.surrogate``, on by default)
    A design measured on a few hundred visitors has a handful of conversions: its own
    counts alone cannot rank designs whose conversion differs by 10 %. So the completed
    generations' counts also fit a Bayesian logistic model of conversion over the genes --
    an intercept, one effect per gene value, one per pair of gene values
    (``Settings.interactions``: epistasis), and per segment an offset and a deviation of
    every gene value's effect from the shared one -- by Newton's method with Gaussian
    priors (ridge), the Laplace approximation giving its uncertainty. Every visitor then
    informs every gene, not just one design. How far segments deviate is learnt, not
    assumed: each segment's deviation scale is re-estimated from the data
    (``Settings.empirical_bayes`` rounds of MacKay's fixed point), so where segments want
    the same thing their deviations shrink to nothing and each segment borrows everyone's
    evidence. The model is used twice:

    * as each design's prior: a design's posterior is ``Beta(conversions + k m, failures +
      k (1 - m))`` with ``m`` the model's prediction and ``k`` the prior's weight in
      visitors, set by moment matching from the prediction's variance plus
      ``Settings.epistasis`` (how far a design may stray from what its genes predict): a
      new design starts from what its genes predict, and enough of its own visitors
      override the model. For one segment, the design's visitors in the other segments also
      count, through that departure from the model, which all segments share (plus
      ``Settings.segment_epistasis`` of their own), so a segment's view of a design is not
      left to its own share of the traffic;
    * to screen offspring (surrogate-assisted evolution): tournament, crossover and
      mutation propose ``Settings.offspring`` candidates per open slot, plus a few random
      immigrants, and each slot takes the best candidate under one draw of the model's
      coefficients from their posterior (Thompson sampling on the model, so uncertain gene
      values keep being tried).

    With ``surrogate=False`` the search is the plain one: Beta(1, 1) priors on each design's
    counts, children unscreened.

Identification (``phase`` ``"identify"``)
    After ``Settings.generations`` search generations, or when
    :meth:`Evolution.start_identification` is called, a final phase spends
    ``Settings.identify_visitors`` only on the top ``Settings.identify_top`` designs ever
    measured (per segment when segments are on, each segment also weighing everyone's
    leaders) with top-two Thompson sampling (Russo, 2016): ``Settings.top_two`` of the
    visitors get the design a posterior draw ranks first, the rest the one ranking first
    in a redraw where it is not, so traffic goes to telling the leaders apart rather than
    to the leader only. When its budget is spent (or :meth:`Evolution.finish` is called)
    the phase is ``"done"``: each segment's champion is the candidate with the highest
    posterior probability of being best (Monte Carlo from the Beta posteriors, seeded by
    the evidence, so the same evidence gives the same answer and asking never disturbs the
    search), reported with that probability and a Wilson interval of its conversion in the
    identification phase alone, which its selection did not bias. Done, every visitor is
    served the champion of their segment.

The search is seeded and does no I/O: the caller serves :meth:`Evolution.choose`'s design
(or :meth:`Evolution.allocate`'s counts for a batch), reports outcomes with
:meth:`Evolution.record` (or :meth:`Evolution.record_many`; a runtime that recounts from
stored events overwrites counts with :meth:`Evolution.set_counts`), and calls
:meth:`Evolution.advance` when :meth:`Evolution.generation_done` says so.
:meth:`Evolution.to_state` and :meth:`Evolution.from_state` round-trip the whole search
through JSON, random generator included, so a restored search continues exactly as the
original would (the model is refitted from the same counts, to the same bits).
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import linalg, sparse

from nexus.evolution.genome import Design, DesignSpace

ALL = "*"  # the segment every visitor belongs to
STATE_VERSION = 1
Phase = Literal["search", "identify", "done"]
FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

_NEWTON_STEPS = 25
_NEWTON_TOLERANCE = 1e-6
_CHALLENGER_TRIES = 64  # top-two Thompson: redraws looking for a challenger
_IMMIGRANTS = 0.1  # share of the offspring pool drawn at random from the whole space
_PRIOR_WEIGHT = (2.0, 1e6)  # bounds on a model prior's weight in visitors
_SCALE_FLOOR, _SCALE_CEILING = 0.01, 1.0  # bounds on an estimated prior scale (logit)


@dataclass
class Arm:
    """A design's record within one generation (and one segment)."""

    trials: int = 0
    conversions: int = 0

    def mean(self, prior: float = 1.0) -> float:
        return (self.conversions + prior) / (self.trials + 2 * prior)

    def interval(self, z: float = 1.96) -> tuple[float, float]:
        """Wilson score interval of the conversion rate."""
        n = self.trials
        if n == 0:
            return 0.0, 1.0
        p = self.conversions / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Generation:
    number: int
    designs: list[Design]
    parents: dict[Design, tuple[Design, ...]] = field(default_factory=dict)
    arms: dict[tuple[str, Design], Arm] = field(default_factory=dict)
    visitors: int = 0
    phase: Literal["search", "identify"] = "search"

    def arm(self, segment: str, design: Design) -> Arm:
        return self.arms.setdefault((segment, design), Arm())


@dataclass(frozen=True)
class Settings:
    population: int = 16
    elite: int = 3
    visitors_per_generation: int = 5000
    mutation_rate: float = 0.15
    tournament: int = 3
    segments: tuple[str, ...] = ()  # empty: one fitness for everyone
    # Identification: 0 generations means it starts only when asked.
    generations: int = 0
    identify_top: int = 4
    identify_visitors: int = 20_000
    top_two: float = 0.5  # share of identification visitors given the posterior's leader
    # The fitness model.
    surrogate: bool = True
    interactions: bool = True
    effect_scale: float = 0.2  # prior sd of a gene value's effect on the logit
    interaction_scale: float = 0.1  # prior sd of a pair of values' extra effect
    segment_scale: float = 0.15  # prior sd of a segment's deviation from a shared effect
    epistasis: float = 0.1  # sd of a design's logit around the model's prediction
    segment_epistasis: float = 0.05  # sd of a segment's own departure, beyond the shared one
    empirical_bayes: int = 3  # rounds re-estimating the prior scales from the data (0: fixed)
    offspring: int = 20  # candidates proposed per open slot, for the model to screen
    draws: int = 20_000  # Monte Carlo draws for the probability of being best

    def __post_init__(self) -> None:
        refusals = [
            (self.population < 2, "a population has at least 2 designs"),
            (
                not 0 <= self.elite < self.population,
                "elite must be at least 0 and below the population size",
            ),
            (
                self.visitors_per_generation < self.population,
                "a generation needs at least one visitor per design",
            ),
            (not 0.0 <= self.mutation_rate <= 1.0, "mutation_rate is a probability"),
            (self.tournament < 1, "tournament is at least 1"),
            (self.generations < 0, "generations is at least 0 (0: identify only when asked)"),
            (
                self.identify_top < 2,
                "identify_top is at least 2: identification compares designs",
            ),
            (self.identify_visitors < 0, "identify_visitors is at least 0"),
            (not 0.0 <= self.top_two <= 1.0, "top_two is a probability"),
            (
                min(self.effect_scale, self.interaction_scale, self.segment_scale) <= 0,
                "the model's prior scales are positive",
            ),
            (
                self.epistasis < 0 or self.segment_epistasis < 0,
                "epistasis and segment_epistasis are at least 0",
            ),
            (self.empirical_bayes < 0, "empirical_bayes is at least 0"),
            (self.offspring < 1 or self.draws < 1, "offspring and draws are at least 1"),
            (
                ALL in self.segments or len(set(self.segments)) != len(self.segments),
                f"segments must be unique and not {ALL!r}",
            ),
        ]
        for refused, message in refusals:
            if refused:
                raise ValueError(message)


@dataclass(frozen=True)
class Champion:
    """The design identified for promotion in one segment."""

    segment: str
    design: Design
    probability_best: float  # posterior probability it is the best of the candidates
    mean: float  # posterior mean conversion
    interval: tuple[float, float]  # Wilson 95 % interval, identification-phase visitors
    identification: Arm  # its counts in the identification phase
    pooled: Arm  # its counts over every generation


# -- the fitness model --------------------------------------------------------------------------


class _Features:
    """One-hot features of (design, segment mix): intercept, gene values, pairs of gene
    values, segment offsets, segment x gene value deviations."""

    def __init__(self, space: DesignSpace, settings: Settings) -> None:
        sizes = [len(g.values) for g in space.genes]
        self.sizes = np.array(sizes, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.n_main = int(sum(sizes))
        free = [i for i, g in enumerate(space.genes) if g.free]
        self.pairs: list[tuple[int, int, int]] = []  # (gene a, gene b, first column)
        column = 1 + self.n_main
        if settings.interactions:
            for x, a in enumerate(free):
                for b in free[x + 1 :]:
                    self.pairs.append((a, b, column))
                    column += sizes[a] * sizes[b]
        self.segment_base = column
        self.n_segments = len(settings.segments)
        self.deviation_base = column + self.n_segments
        self.width = self.deviation_base + self.n_segments * self.n_main
        # Groups of coefficients sharing one prior scale, re-estimated from the data
        # (empirical Bayes): each gene's values, each pair of genes, each segment's deviations.
        self.groups: list[tuple[int, int]] = [
            (self.deviation_base + s * self.n_main, self.deviation_base + (s + 1) * self.n_main)
            for s in range(self.n_segments)
        ]
        precision = np.empty(self.width)
        precision[0] = 1e-6
        precision[1 : 1 + self.n_main] = settings.effect_scale**-2
        precision[1 + self.n_main : self.segment_base] = settings.interaction_scale**-2
        precision[self.segment_base : self.deviation_base] = 1.0  # offsets: sd 1 on the logit
        precision[self.deviation_base :] = settings.segment_scale**-2
        self.precision = precision

    def matrix(self, designs: IntArray, mix: FloatArray) -> Any:
        """Rows of features, sparse (CSR); ``mix[i]`` weighs the segments of row ``i``
        (one-hot for one segment, zeros for a visitor of no known segment, traffic shares
        for everyone)."""
        m = len(designs)
        rows = np.arange(m)
        main = 1 + designs + self.offsets  # (m, genes): each gene value's column
        columns = [np.zeros(m, dtype=np.int64), *main.T]
        values = [np.ones(m)] * (1 + designs.shape[1])
        for a, b, first in self.pairs:
            columns.append(first + designs[:, a] * self.sizes[b] + designs[:, b])
            values.append(np.ones(m))
        for s in range(self.n_segments):
            weight = mix[:, s]
            columns.append(np.full(m, self.segment_base + s))
            values.append(weight)
            shift = self.deviation_base + s * self.n_main - 1
            for g in range(designs.shape[1]):
                columns.append(shift + main[:, g])
                values.append(weight)
        return sparse.csr_matrix(
            (np.concatenate(values), (np.tile(rows, len(columns)), np.concatenate(columns))),
            shape=(m, self.width),
        )


@dataclass(frozen=True)
class _Model:
    coef: FloatArray
    root: FloatArray  # L^-1, L the lower Cholesky factor of the posterior precision (Laplace)
    shares: FloatArray  # each segment's share of segmented visitors, for ALL's prediction

    def predict(self, x: Any) -> tuple[FloatArray, FloatArray]:
        """Mean and variance of the logit for (sparse) rows of features, each row computed
        on its own, so a design's prediction never depends on what it was predicted with."""
        mean = np.asarray(x @ self.coef, dtype=np.float64)
        spread = np.asarray(x @ self.root.T, dtype=np.float64)
        return mean, np.asarray((spread**2).sum(axis=1), dtype=np.float64)

    def draw(self, rng: np.random.Generator) -> FloatArray:
        """Coefficients drawn from the posterior: ``coef + L^-T z``."""
        z = rng.standard_normal(len(self.coef))
        return np.asarray(self.coef + self.root.T @ z, dtype=np.float64)


def _fit(
    x: Any,
    trials: FloatArray,
    conversions: FloatArray,
    precision: FloatArray,
    start: FloatArray | None = None,
) -> tuple[FloatArray, FloatArray]:
    """MAP logistic regression on binomial rows by Newton's method, from a start that
    depends on the data only (so the same data always give the same bits); returns
    coefficients and the Cholesky factor of the posterior precision."""
    if start is None:
        coef = np.zeros(x.shape[1])
        rate = (conversions.sum() + 0.5) / (trials.sum() + 1.0)
        coef[0] = math.log(rate / (1 - rate))
    else:
        coef = start.copy()
    chol = np.diag(np.sqrt(precision))
    for _ in range(_NEWTON_STEPS):
        p = 1.0 / (1.0 + np.exp(-(x @ coef)))
        weight = trials * p * (1 - p)
        gradient = x.T @ (conversions - trials * p) - precision * coef
        hessian = (x.T @ x.multiply(weight[:, None]).tocsr()).toarray()
        hessian[np.diag_indices_from(hessian)] += precision
        chol = linalg.cholesky(hessian, lower=True, check_finite=False)
        step = linalg.cho_solve((chol, True), gradient, check_finite=False)
        coef = coef + step
        if float(np.max(np.abs(step))) < _NEWTON_TOLERANCE:
            break
    return coef, chol


# -- the search -----------------------------------------------------------------------------


class Evolution:
    """A running search: the current generation and every earlier one (the genealogy)."""

    def __init__(self, space: DesignSpace, settings: Settings, *, seed: int) -> None:
        self.space = space
        self.settings = settings
        self.seed = seed
        self.rng = random.Random(seed)  # noqa: S311 - a seeded search, not a secret
        self._features = _Features(space, settings)
        self._totals: dict[tuple[str, Design], Arm] = {}
        self._old_version = 0  # bumped when a completed generation's counts change
        self._model_cache: tuple[tuple[int, int], _Model | None] | None = None
        self._prior_cache: dict[tuple[str, Design], tuple[float, float]] = {}  # logit mean, var
        self._prior_key: tuple[int, int] | None = None
        self._identify_budget = settings.identify_visitors
        self._candidates: dict[str, list[Design]] = {}
        self._champions: dict[str, Design] | None = None
        first: list[Design] = []
        tries = 0
        while len(first) < settings.population and tries < settings.population * 50:
            tries += 1
            design = space.random(self.rng)
            if design not in first:
                first.append(design)
        self.history: list[Generation] = [Generation(0, first)]

    # -- where the search is ------------------------------------------------------------------

    @property
    def current(self) -> Generation:
        return self.history[-1]

    @property
    def phase(self) -> Phase:
        if self._champions is not None:
            return "done"
        return self.current.phase

    @property
    def keys(self) -> tuple[str, ...]:
        """The fitness keys kept: everyone's, then each segment's."""
        return (ALL, *self.settings.segments)

    def _segments(self, segment: str | None) -> tuple[str, ...]:
        if not self.settings.segments or segment is None:
            return (ALL,)
        if segment not in self.settings.segments:
            raise ValueError(f"unknown segment {segment!r}")
        return (ALL, segment)

    def _key(self, segment: str | None) -> str:
        return self._segments(segment)[-1]

    def _check_key(self, segment: str) -> str:
        if segment != ALL and segment not in self.settings.segments:
            raise ValueError(f"unknown segment {segment!r}")
        return segment

    # -- serving ------------------------------------------------------------------------------

    def arms_to_serve(self, segment: str | None = None) -> list[Design]:
        """The designs a visitor of this segment may be served now."""
        if self._champions is not None:
            return [self._champions[self._key(segment)]]
        if self.current.phase == "identify":
            return list(self._candidates[self._key(segment)])
        return list(self.current.designs)

    def choose(self, segment: str | None = None) -> Design:
        """The design to serve a visitor: a Thompson draw over the generation's designs on
        the visitor's segment's posteriors (everyone's when segments are off); top-two
        Thompson over the candidates while identifying; the champion once done."""
        key = self._key(segment)
        designs = self.arms_to_serve(segment)
        if len(designs) == 1:
            return designs[0]
        params = self._posteriors(key, designs)
        leader = self._thompson_leader(designs, params)
        if self.current.phase == "search" or self.rng.random() < self.settings.top_two:
            return leader
        for _ in range(_CHALLENGER_TRIES):
            challenger = self._thompson_leader(designs, params)
            if challenger != leader:
                return challenger
        return self.ranking(key, designs=[d for d in designs if d != leader])[0]

    def _thompson_leader(
        self, designs: Sequence[Design], params: Sequence[tuple[float, float]]
    ) -> Design:
        best, best_draw = designs[0], -1.0
        for design, (a, b) in zip(designs, params, strict=True):
            draw = self.rng.betavariate(a, b)
            if draw > best_draw:
                best, best_draw = design, draw
        return best

    def allocate(self, visitors: int, segment: str | None = None) -> dict[Design, int]:
        """How many of the next ``visitors`` visitors of a segment each design gets: each
        visitor's design drawn as :meth:`choose` would, on the posteriors as they are now
        (outcomes reported later, in a batch). Vectorised, for high traffic."""
        if visitors < 0:
            raise ValueError("visitors is at least 0")
        key = self._key(segment)
        designs = self.arms_to_serve(segment)
        if len(designs) == 1 or visitors == 0:
            return {designs[0]: visitors} if visitors else {}
        params = np.array(self._posteriors(key, designs))
        rng = np.random.default_rng(self.rng.getrandbits(64))
        picks = rng.beta(params[:, 0], params[:, 1], (visitors, len(designs))).argmax(axis=1)
        if self.current.phase == "identify":
            challenge = np.flatnonzero(rng.random(visitors) >= self.settings.top_two)
            leaders = picks[challenge]
            found = np.full(len(challenge), -1)
            for _ in range(_CHALLENGER_TRIES):
                open_ = np.flatnonzero(found < 0)
                if not len(open_):
                    break
                redraw = rng.beta(params[:, 0], params[:, 1], (len(open_), len(designs)))
                winner = redraw.argmax(axis=1)
                hit = winner != leaders[open_]
                found[open_[hit]] = winner[hit]
            runner_up = self.ranking(key, designs=designs)
            for i in np.flatnonzero(found < 0):  # a leader no redraw could beat
                leader = designs[int(leaders[i])]
                found[i] = designs.index(next(d for d in runner_up if d != leader))
            picks[challenge] = found
        counts = np.bincount(picks, minlength=len(designs))
        return {d: int(c) for d, c in zip(designs, counts, strict=True) if c}

    # -- outcomes -----------------------------------------------------------------------------

    def record(self, design: Design, converted: bool, segment: str | None = None) -> None:
        self.record_many(design, 1, int(converted), segment)

    def record_many(
        self, design: Design, trials: int, conversions: int, segment: str | None = None
    ) -> None:
        """Add ``trials`` visitors served ``design`` of whom ``conversions`` converted."""
        if not 0 <= conversions <= trials:
            raise ValueError("conversions must be between 0 and trials")
        generation = self.current
        for key in self._segments(segment):
            arm = generation.arm(key, design)
            arm.trials += trials
            arm.conversions += conversions
            total = self._totals.setdefault((key, design), Arm())
            total.trials += trials
            total.conversions += conversions
        generation.visitors += trials

    def set_counts(
        self, generation: int, segment: str, design: Design, trials: int, conversions: int
    ) -> None:
        """Overwrite one arm's counts from an external source of truth (a runtime that
        recounts exposures and conversions from stored events). ``segment`` is :data:`ALL`
        or a segment name; each is set on its own (everyone's counts are not derived from
        the segments'). The generation's visitors become its everyone-arms' trials."""
        if not 0 <= conversions <= trials:
            raise ValueError("conversions must be between 0 and trials")
        if not 0 <= generation < len(self.history):
            raise ValueError(f"no generation {generation}")
        target = self.history[generation]
        key = self._check_key(segment)
        if design not in target.designs:
            raise ValueError(f"design {DesignSpace.key(design)} is not in generation {generation}")
        arm = target.arm(key, design)
        total = self._totals.setdefault((key, design), Arm())
        total.trials += trials - arm.trials
        total.conversions += conversions - arm.conversions
        arm.trials, arm.conversions = trials, conversions
        target.visitors = sum(a.trials for (k, _), a in target.arms.items() if k == ALL)
        if generation < len(self.history) - 1:
            self._old_version += 1

    def generation_done(self) -> bool:
        if self._champions is not None:
            return False
        if self.current.phase == "identify":
            return self.current.visitors >= self._identify_budget
        return self.current.visitors >= self.settings.visitors_per_generation

    # -- fitness ------------------------------------------------------------------------------

    def pooled(self, segment: str, design: Design) -> Arm:
        """A design's counts over every generation it was served in."""
        arm = self._totals.get((segment, design))
        return Arm(arm.trials, arm.conversions) if arm else Arm()

    def _model(self, upto: int | None = None) -> _Model | None:
        """The fitness model of the first ``upto`` generations (default: all but the one
        being measured), fitted once per data version."""
        if not self.settings.surrogate:
            return None
        upto = len(self.history) - 1 if upto is None else upto
        key = (upto, self._old_version)
        if self._model_cache is not None and self._model_cache[0] == key:
            return self._model_cache[1]
        counts: dict[tuple[str, Design], list[int]] = {}
        for generation in self.history[:upto]:
            for (segment, design), arm in generation.arms.items():
                row = counts.setdefault((segment, design), [0, 0])
                row[0] += arm.trials
                row[1] += arm.conversions
        model = self._fit_model(counts) if counts else None
        self._model_cache = (key, model)
        return model

    def _fit_model(self, counts: Mapping[tuple[str, Design], list[int]]) -> _Model | None:
        segments = self.settings.segments
        rows: list[tuple[Design, int, int, int]] = []  # design, segment index (-1: none)
        for (segment, design), (total, converted) in sorted(counts.items()):
            if segment == ALL:
                if segments:  # everyone minus the segments: visitors of no known segment
                    split = [counts.get((s, design), [0, 0]) for s in segments]
                    total -= sum(t for t, _ in split)  # noqa: PLW2901
                    converted -= sum(c for _, c in split)  # noqa: PLW2901
                if total > 0:
                    rows.append((design, -1, total, converted))
            elif total > 0:
                rows.append((design, segments.index(segment), total, converted))
        if not rows:
            return None
        designs = np.array([r[0] for r in rows], dtype=np.int64)
        mix = np.zeros((len(rows), len(segments)))
        for i, row in enumerate(rows):
            if row[1] >= 0:
                mix[i, row[1]] = 1.0
        trials_ = np.array([r[2] for r in rows], dtype=np.float64)
        conversions_ = np.array([r[3] for r in rows], dtype=np.float64)
        x = self._features.matrix(designs, mix)
        precision = self._features.precision.copy()
        coef, chol = _fit(x, trials_, conversions_, precision)
        identity = np.eye(len(coef))
        for _ in range(self.settings.empirical_bayes):
            # MacKay's fixed point: a group's variance is its coefficients' sum of squares
            # over how many of them the data determine (1 - precision x posterior variance).
            root = linalg.solve_triangular(chol, identity, lower=True, check_finite=False)
            variance = (root**2).sum(axis=0)
            for start, stop in self._features.groups:
                determined = float(np.sum(1.0 - precision[start:stop] * variance[start:stop]))
                scale_sq = float(np.sum(coef[start:stop] ** 2)) / max(determined, 1e-3)
                scale = min(max(math.sqrt(scale_sq), _SCALE_FLOOR), _SCALE_CEILING)
                precision[start:stop] = scale**-2
            coef, chol = _fit(x, trials_, conversions_, precision, start=coef)
        by_segment = np.array([trials_[mix[:, s] > 0].sum() for s in range(len(segments))])
        shares = by_segment / by_segment.sum() if by_segment.sum() > 0 else by_segment
        root = linalg.solve_triangular(chol, identity, lower=True, check_finite=False)
        return _Model(coef, np.asarray(root, dtype=np.float64), shares)

    def _mix(self, segment: str, count: int, model: _Model) -> FloatArray:
        """Segment weights of feature rows: everyone's traffic shares for :data:`ALL`, none
        for ``""`` (visitors of no known segment), else one segment."""
        mix = np.zeros((count, len(self.settings.segments)))
        if segment == ALL:
            mix[:] = model.shares
        elif segment:
            mix[:, self.settings.segments.index(segment)] = 1.0
        return mix

    def _predictions(
        self, model: _Model, key: tuple[int, int], segment: str, designs: Sequence[Design]
    ) -> tuple[FloatArray, FloatArray]:
        """The model's logit mean and variance for designs, cached per model."""
        if self._prior_key != key:
            self._prior_cache, self._prior_key = {}, key
        missing = list(dict.fromkeys(d for d in designs if (segment, d) not in self._prior_cache))
        if missing:
            x = self._features.matrix(
                np.array(missing, dtype=np.int64), self._mix(segment, len(missing), model)
            )
            mean, variance = model.predict(x)
            for design, m, v in zip(missing, mean, variance, strict=True):
                self._prior_cache[(segment, design)] = (float(m), float(v))
        pairs = [self._prior_cache[(segment, d)] for d in designs]
        return np.array([m for m, _ in pairs]), np.array([v for _, v in pairs])

    def _counts(self, segment: str, designs: Sequence[Design]) -> tuple[FloatArray, FloatArray]:
        """Pooled trials and conversions of designs; ``""``: visitors of no known segment."""
        if segment:
            arms = [self._totals.get((segment, d)) for d in designs]
            return (
                np.array([a.trials if a else 0 for a in arms], dtype=np.float64),
                np.array([a.conversions if a else 0 for a in arms], dtype=np.float64),
            )
        trials, conversions = self._counts(ALL, designs)
        for other in self.settings.segments:
            t, c = self._counts(other, designs)
            trials, conversions = trials - t, conversions - c
        return trials, conversions

    def _priors(
        self, segment: str, designs: Sequence[Design], upto: int | None = None
    ) -> tuple[FloatArray, FloatArray]:
        """Beta prior pseudo-counts of designs for a segment (Beta(1, 1) without a model).

        The prior's mean is the model's prediction; its spread the prediction's variance
        plus ``epistasis``. For one segment, a design's visitors in the *other* segments
        (and of no known segment) also inform it: each gives an estimate of how far the
        design sits from what its genes predict, a departure shared by every segment, so a
        segment's posterior of a design is not left to its own share of the traffic.
        """
        upto = len(self.history) - 1 if upto is None else upto
        model = self._model(upto)
        if model is None:
            ones = np.ones(len(designs))
            return ones, ones.copy()
        key = (upto, self._old_version)
        mean, variance = self._predictions(model, key, segment, designs)
        tau2 = self.settings.epistasis**2
        spread = variance + tau2
        if segment != ALL and self.settings.segments and tau2 > 0:
            precision = np.full(len(designs), 1.0 / tau2)
            weighted = np.zeros(len(designs))
            for other in ("", *self.settings.segments):
                if other == segment:
                    continue
                trials, conversions = self._counts(other, designs)
                if not trials.any():
                    continue
                m, _ = self._predictions(model, key, other, designs)
                p = 1.0 / (1.0 + np.exp(-m))
                information = trials * p * (1 - p)
                observed = np.log((conversions + 0.5) / (trials - conversions + 0.5))
                precision += information
                weighted += information * (observed - m)
            mean = mean + weighted / precision
            spread = variance + 1.0 / precision + (self.settings.segment_epistasis**2)
        p = 1.0 / (1.0 + np.exp(-mean))
        weight = np.clip(1.0 / (p * (1 - p) * spread) - 1.0, *_PRIOR_WEIGHT)
        return p * weight, (1 - p) * weight

    def _posteriors(
        self, segment: str, designs: Sequence[Design], upto: int | None = None
    ) -> list[tuple[float, float]]:
        """Beta posterior parameters of designs: the prior plus the segment's pooled counts."""
        a, b = self._priors(segment, designs, upto)
        trials, conversions = self._counts(segment, designs)
        return [
            (float(x), float(y))
            for x, y in zip(a + conversions, b + trials - conversions, strict=True)
        ]

    def fitness(self, segment: str, design: Design) -> float:
        """Posterior mean conversion of a design for a segment (:data:`ALL`: everyone)."""
        a, b = self._posteriors(self._check_key(segment), [design])[0]
        return a / (a + b)

    def ranking(
        self,
        segment: str = ALL,
        generation: Generation | None = None,
        *,
        designs: Sequence[Design] | None = None,
    ) -> list[Design]:
        """Designs (the generation's, or those given), best posterior mean first (ties: more
        visitors first). Posteriors pool every generation's evidence, so a ranking reflects
        what is known now."""
        if designs is None:
            designs = (generation or self.current).designs
        return self._rank(self._check_key(segment), designs)

    def _rank(
        self, segment: str, designs: Sequence[Design], upto: int | None = None
    ) -> list[Design]:
        posteriors = self._posteriors(segment, designs, upto)
        trials, _ = self._counts(segment, designs)
        scored = [
            (a / (a + b), float(n), position)
            for position, ((a, b), n) in enumerate(zip(posteriors, trials, strict=True))
        ]
        scored.sort(key=lambda t: (-t[0], -t[1], t[2]))
        return [designs[position] for _, _, position in scored]

    def measured(self, segment: str = ALL) -> list[Design]:
        """Every design that has had visitors of this segment, in order of first appearance."""
        seen: dict[Design, None] = {}
        for generation in self.history:
            for design in generation.designs:
                if self.pooled(segment, design).trials > 0:
                    seen[design] = None
        return list(seen)

    def _contenders(self, segment: str) -> list[Design]:
        """Measured designs the space allows now (a pin or an exclusion added later rules
        some out: they stay in the genealogy, but are neither kept, bred, nor promoted);
        the current generation's allowed designs when none is measured yet."""
        allowed = [d for d in self.measured(segment) if self.space.valid(d)]
        return allowed or [d for d in self.current.designs if self.space.valid(d)]

    def best(self, segment: str = ALL) -> tuple[Design, Arm]:
        """The current champion and its counts over every generation: the identified one
        once identification is done, else the best posterior mean of every design
        measured so far (of the candidates, while identifying)."""
        key = self._check_key(segment)
        if self._champions is not None:
            design = self._champions[key]
        elif self.current.phase == "identify":
            design = self.ranking(key, designs=self._candidates[key])[0]
        else:
            design = self.ranking(key, designs=self._contenders(key) or self.current.designs)[0]
        return design, self.pooled(key, design)

    def probability_best(
        self, segment: str = ALL, designs: Sequence[Design] | None = None
    ) -> dict[Design, float]:
        """Posterior probability that each design is the best of those compared (default:
        the identification candidates, else the current generation), by Monte Carlo from
        the Beta posteriors; seeded by the search's seed and the evidence, so asking does
        not disturb the search and the same evidence always gives the same answer."""
        key = self._check_key(segment)
        if designs is None:
            if self.current.phase == "identify":
                designs = self._candidates[key]
            else:
                designs = self.current.designs
        designs = list(designs)
        if len(designs) == 1:
            return {designs[0]: 1.0}
        params = np.array(self._posteriors(key, designs))
        evidence = sum(self.pooled(key, d).trials for d in designs)
        rng = np.random.default_rng(
            [self.seed, len(self.history), zlib.crc32(key.encode()), evidence]
        )
        draws = rng.beta(params[:, 0], params[:, 1], (self.settings.draws, len(designs)))
        wins = np.bincount(draws.argmax(axis=1), minlength=len(designs)) / self.settings.draws
        return {d: float(w) for d, w in zip(designs, wins, strict=True)}

    # -- identification -------------------------------------------------------------------------

    def candidates(self, segment: str = ALL) -> list[Design]:
        """The designs identification compares for a segment (empty before it starts)."""
        return list(self._candidates.get(self._check_key(segment), []))

    def start_identification(self, k: int | None = None, visitors: int | None = None) -> Generation:
        """End the search and spend ``visitors`` (default ``Settings.identify_visitors``)
        on the top ``k`` (default ``Settings.identify_top``) designs measured so far, per
        segment. A generation bred but not yet served is dropped."""
        if self.phase != "search":
            raise ValueError(f"identification cannot start in phase {self.phase!r}")
        k = self.settings.identify_top if k is None else k
        if k < 1:
            raise ValueError("k is at least 1")
        budget = self.settings.identify_visitors if visitors is None else visitors
        if budget < 0:
            raise ValueError("visitors is at least 0")
        if len(self.history) > 1 and not self.current.visitors and not self.current.arms:
            self.history.pop()
            self._model_cache = None
        candidates: dict[str, list[Design]] = {}
        for key in self.keys:
            pool = self._contenders(key) or list(self.current.designs)
            candidates[key] = self.ranking(key, designs=pool)[:k]
        for key in self.settings.segments:  # a segment also weighs everyone's leaders
            candidates[key] += [d for d in candidates[ALL] if d not in candidates[key]]
        union: list[Design] = []
        for designs in candidates.values():
            union += [d for d in designs if d not in union]
        self._candidates = candidates
        self._identify_budget = budget
        generation = Generation(
            self.current.number + 1, union, {d: (d,) for d in union}, phase="identify"
        )
        self.history.append(generation)
        return generation

    def finish(self) -> dict[str, Champion]:
        """End identification (or the search, identifying from what is known) and fix each
        segment's champion: the candidate most probably best."""
        if self.phase == "search":
            self.start_identification(visitors=0)
        if self._champions is None:
            champions = {}
            for key in self.keys:
                chances = self.probability_best(key)
                scored = [(chances[d], self.fitness(key, d), d) for d in self._candidates[key]]
                champions[key] = max(scored, key=lambda t: (t[0], t[1]))[2]
            self._champions = champions
        return self.champions()

    def champions(self) -> dict[str, Champion]:
        """Each segment's identified champion (empty until identification is done)."""
        if self._champions is None:
            return {}
        return {key: self.champion(key) for key in self.keys}

    def champion(self, segment: str = ALL) -> Champion:
        """The champion of a segment with its evidence: the identified one once done, else
        the present leader, with its probability of being best among the candidates (while
        searching: among the top ``Settings.identify_top`` designs measured so far)."""
        key = self._check_key(segment)
        design = self.best(key)[0]
        designs = (
            self._candidates.get(key)
            or self.ranking(key, designs=self._contenders(key) or [design])[
                : self.settings.identify_top
            ]
        )
        identify = next((g for g in reversed(self.history) if g.phase == "identify"), None)
        fresh = identify.arms.get((key, design), Arm()) if identify else Arm()
        fresh = Arm(fresh.trials, fresh.conversions)
        return Champion(
            segment=key,
            design=design,
            probability_best=self.probability_best(key, designs)[design],
            mean=self.fitness(key, design),
            interval=fresh.interval(),
            identification=fresh,
            pooled=self.pooled(key, design),
        )

    # -- breeding -------------------------------------------------------------------------------

    def advance(self) -> Generation:
        """Breed the next generation from what is known (or, after ``Settings.generations``
        search generations, start identification; after identification, finish)."""
        if self._champions is not None:
            raise ValueError("the search is done: nothing to advance")
        if self.current.phase == "identify":
            self.finish()
            return self.current
        if self.settings.generations and self.current.number + 1 >= self.settings.generations:
            return self.start_identification()
        settings, space, rng = self.settings, self.space, self.rng
        done = self.current
        model = self._model(upto=len(self.history))
        segments = list(self.keys)
        # Each segment's best designs survive, so a segment's own winner is never lost:
        # every segment's best first, then every segment's second, and so on, leaving at
        # least half the population to children when there are many segments.
        upto = len(self.history)
        # Only designs the space allows now: one measured before a pin stays in the
        # genealogy but is neither kept nor bred from.
        ranked = [
            self._rank(segment, self._contenders(segment) or done.designs, upto)
            for segment in segments
        ]
        cap = settings.elite if len(segments) == 1 else max(1, settings.population // 2)
        elites: list[Design] = []
        for place in range(settings.elite):
            for order in ranked:
                if place < len(order) and order[place] not in elites and len(elites) < cap:
                    elites.append(order[place])
        nxt: list[Design] = elites[: settings.population]
        parents: dict[Design, tuple[Design, ...]] = {d: (d,) for d in nxt}
        slots = settings.population - len(nxt)
        if model is None:
            self._breed_plain(done, segments, nxt, parents)
        else:
            self._breed_screened(done, segments, nxt, parents, model, slots)
        while len(nxt) < settings.population:  # a tiny space: fill with fresh designs
            design = space.random(rng)
            if design not in nxt or len(nxt) >= space.size:
                nxt.append(design)
                parents[design] = ()
        generation = Generation(done.number + 1, nxt, parents)
        self.history.append(generation)
        return generation

    def _child(
        self, done: Generation, segment: str, fitness: Mapping[tuple[str, Design], float]
    ) -> tuple[Design, tuple[Design, Design]]:
        a = self._tournament(done, segment, fitness)
        b = self._tournament(done, segment, fitness)
        child = self.space.crossover(a, b, self.rng) if a != b else a
        return self.space.mutate(child, self.rng, rate=self.settings.mutation_rate), (a, b)

    def _fitness_table(
        self, done: Generation, segments: Iterable[str]
    ) -> dict[tuple[str, Design], float]:
        table: dict[tuple[str, Design], float] = {}
        for segment in segments:
            ranked = self._rank(segment, done.designs, len(self.history))
            for position, design in enumerate(ranked):
                table[(segment, design)] = -float(position)
        return table

    def _breed_plain(
        self,
        done: Generation,
        segments: Sequence[str],
        nxt: list[Design],
        parents: dict[Design, tuple[Design, ...]],
    ) -> None:
        fitness = self._fitness_table(done, segments)
        tries = 0
        while len(nxt) < self.settings.population and tries < self.settings.population * 50:
            tries += 1
            child, pair = self._child(done, self.rng.choice(segments), fitness)
            if child not in nxt:
                nxt.append(child)
                parents[child] = pair

    def _breed_screened(
        self,
        done: Generation,
        segments: Sequence[str],
        nxt: list[Design],
        parents: dict[Design, tuple[Design, ...]],
        model: _Model,
        slots: int,
    ) -> None:
        if slots <= 0:
            return
        fitness = self._fitness_table(done, segments)
        pool: dict[Design, tuple[Design, ...]] = {}
        for _ in range(slots * self.settings.offspring):
            pair: tuple[Design, ...] = ()
            if self.rng.random() < _IMMIGRANTS:
                child = self.space.random(self.rng)
            else:
                child, pair = self._child(done, self.rng.choice(segments), fitness)
            if child not in nxt and child not in pool:
                pool[child] = pair
        if not pool:
            return
        designs = list(pool)
        array = np.array(designs, dtype=np.int64)
        np_rng = np.random.default_rng(self.rng.getrandbits(64))
        features = {
            s: self._features.matrix(array, self._mix(s, len(designs), model)) for s in segments
        }
        taken = np.zeros(len(designs), dtype=bool)
        for slot in range(slots):
            segment = segments[slot % len(segments)]
            score = np.asarray(features[segment] @ model.draw(np_rng), dtype=np.float64)
            score[taken] = -np.inf
            pick = int(np.argmax(score))
            if taken[pick]:
                break
            taken[pick] = True
            nxt.append(designs[pick])
            parents[designs[pick]] = pool[designs[pick]]

    def _tournament(
        self, generation: Generation, segment: str, fitness: Mapping[tuple[str, Design], float]
    ) -> Design:
        entrants = self.rng.sample(
            generation.designs, min(self.settings.tournament, len(generation.designs))
        )
        return max(entrants, key=lambda d: fitness[(segment, d)])

    def lineage(self, design: Design) -> list[tuple[int, Design, tuple[Design, ...]]]:
        """Where a design came from: ``(generation, design, parents)`` back to its first
        appearance, following the first parent."""
        out = []
        target: Design | None = design
        for generation in reversed(self.history):
            if target is not None and target in generation.designs:
                parents = generation.parents.get(target, ())
                out.append((generation.number, target, parents))
                if parents and parents != (target,):
                    target = parents[0]
        return out

    # -- state ----------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """The whole search as JSON-serialisable data (lists, numbers, strings)."""
        version, internal, gauss = self.rng.getstate()
        return {
            "version": STATE_VERSION,
            "seed": self.seed,
            "segments": list(self.settings.segments),
            "genes": [g.name for g in self.space.genes],
            "rng": [version, list(internal), gauss],
            "identify_visitors": self._identify_budget,
            "candidates": {k: [list(d) for d in v] for k, v in self._candidates.items()},
            "champions": (
                None
                if self._champions is None
                else {k: list(d) for k, d in self._champions.items()}
            ),
            "generations": [
                {
                    "number": g.number,
                    "phase": g.phase,
                    "visitors": g.visitors,
                    "designs": [list(d) for d in g.designs],
                    "parents": [[list(d), [list(p) for p in ps]] for d, ps in g.parents.items()],
                    "arms": [
                        [segment, list(design), arm.trials, arm.conversions]
                        for (segment, design), arm in g.arms.items()
                    ],
                }
                for g in self.history
            ],
        }

    @classmethod
    def from_state(
        cls, space: DesignSpace, settings: Settings, state: Mapping[str, Any]
    ) -> Evolution:
        """A search restored from :meth:`to_state`'s data; it continues exactly as the
        original would have (same random generator state, same evidence)."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported evolution state version {state.get('version')!r}")
        if list(state["segments"]) != list(settings.segments):
            raise ValueError("the state's segments differ from the settings'")
        if list(state["genes"]) != [g.name for g in space.genes]:
            raise ValueError("the state's genes differ from the design space's")
        evolution = cls.__new__(cls)
        evolution.space = space
        evolution.settings = settings
        evolution.seed = int(state["seed"])
        evolution.rng = random.Random()  # noqa: S311 - a seeded search, not a secret
        version, internal, gauss = state["rng"]
        evolution.rng.setstate((int(version), tuple(int(v) for v in internal), gauss))
        evolution._features = _Features(space, settings)
        evolution._totals = {}
        evolution._old_version = 0
        evolution._model_cache = None
        evolution._prior_cache = {}
        evolution._prior_key = None
        evolution._identify_budget = int(state["identify_visitors"])

        def design(values: Sequence[int]) -> Design:
            # The shape only: a design measured before a person pinned a gene (or added an
            # exclusion) stays in the genealogy though the space would not draw it now.
            found = tuple(int(v) for v in values)
            if len(found) != len(space.genes) or any(
                not 0 <= v < len(g.values) for g, v in zip(space.genes, found, strict=True)
            ):
                raise ValueError(f"design {list(found)} does not fit the design space")
            return found

        evolution._candidates = {
            str(k): [design(d) for d in v] for k, v in state["candidates"].items()
        }
        champions = state["champions"]
        evolution._champions = (
            None if champions is None else {str(k): design(d) for k, d in champions.items()}
        )
        history = []
        for data in state["generations"]:
            phase = data["phase"]
            if phase not in ("search", "identify"):
                raise ValueError(f"unknown generation phase {phase!r}")
            generation = Generation(
                int(data["number"]),
                [design(d) for d in data["designs"]],
                {design(d): tuple(design(p) for p in ps) for d, ps in data["parents"]},
                phase=phase,
            )
            for segment, values, trials, conversions in data["arms"]:
                key = evolution._check_key(str(segment))
                arm = generation.arm(key, design(values))
                arm.trials, arm.conversions = int(trials), int(conversions)
                total = evolution._totals.setdefault((key, design(values)), Arm())
                total.trials += arm.trials
                total.conversions += arm.conversions
            generation.visitors = int(data["visitors"])
            history.append(generation)
        if not history:
            raise ValueError("the state has no generation")
        evolution.history = history
        return evolution
