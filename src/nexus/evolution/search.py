"""Evolutionary search over designs with bandit allocation inside each generation (pure core).

One **generation** is a population of designs served to live visitors. Traffic inside the
generation is allocated by Thompson sampling on each design's Beta posterior of conversion
(Qiu & Miikkulainen, 2019): promising designs get more visitors, so fewer are spent on poor
ones while the generation is measured. When the generation has had its visitors, the next
one is bred: the best designs by posterior mean survive unchanged (elitism), the rest are
children of parents picked by tournament, by uniform crossover and mutation. Fitness can be
kept per emotional segment (``segment=``), so each segment's best design can differ.

The search is seeded and does no I/O: the caller serves :meth:`Evolution.choose`'s design,
reports the outcome with :meth:`Evolution.record`, and calls :meth:`Evolution.advance` when
:meth:`Evolution.generation_done` says so.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from nexus.evolution.genome import Design, DesignSpace

ALL = "*"  # the segment every visitor belongs to


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

    def __post_init__(self) -> None:
        if self.population < 2:
            raise ValueError("a population has at least 2 designs")
        if not 0 <= self.elite < self.population:
            raise ValueError("elite must be at least 0 and below the population size")
        if self.visitors_per_generation < self.population:
            raise ValueError("a generation needs at least one visitor per design")
        if not 0.0 <= self.mutation_rate <= 1.0:
            raise ValueError("mutation_rate is a probability")
        if self.tournament < 1:
            raise ValueError("tournament is at least 1")


class Evolution:
    """A running search: the current generation and every earlier one (the genealogy)."""

    def __init__(self, space: DesignSpace, settings: Settings, *, seed: int) -> None:
        self.space = space
        self.settings = settings
        self.rng = random.Random(seed)  # noqa: S311 - a seeded search, not a secret
        first: list[Design] = []
        tries = 0
        while len(first) < settings.population and tries < settings.population * 50:
            tries += 1
            design = space.random(self.rng)
            if design not in first:
                first.append(design)
        self.history: list[Generation] = [Generation(0, first)]

    @property
    def current(self) -> Generation:
        return self.history[-1]

    def _segments(self, segment: str | None) -> tuple[str, ...]:
        if not self.settings.segments or segment is None:
            return (ALL,)
        if segment not in self.settings.segments:
            raise ValueError(f"unknown segment {segment!r}")
        return (ALL, segment)

    def choose(self, segment: str | None = None) -> Design:
        """The design to serve a visitor: a Thompson draw over the generation's designs,
        on the visitor's segment's posteriors (everyone's when segments are off)."""
        generation = self.current
        keyed = self._segments(segment)[-1]
        best, best_draw = generation.designs[0], -1.0
        for design in generation.designs:
            arm = generation.arm(keyed, design)
            draw = self.rng.betavariate(arm.conversions + 1, arm.trials - arm.conversions + 1)
            if draw > best_draw:
                best, best_draw = design, draw
        return best

    def record(self, design: Design, converted: bool, segment: str | None = None) -> None:
        generation = self.current
        for key in self._segments(segment):
            arm = generation.arm(key, design)
            arm.trials += 1
            arm.conversions += int(converted)
        generation.visitors += 1

    def generation_done(self) -> bool:
        return self.current.visitors >= self.settings.visitors_per_generation

    def ranking(self, segment: str = ALL, generation: Generation | None = None) -> list[Design]:
        """The generation's designs, best posterior mean first (ties: fewer trials last)."""
        generation = generation or self.current
        return sorted(
            generation.designs,
            key=lambda d: (-generation.arm(segment, d).mean(), -generation.arm(segment, d).trials),
        )

    def best(self, segment: str = ALL) -> tuple[Design, Arm]:
        """The current champion: the best design of the latest measured generation."""
        measured = (
            self.current if self.current.visitors else self.history[max(0, len(self.history) - 2)]
        )
        top = self.ranking(segment, measured)[0]
        return top, measured.arm(segment, top)

    def advance(self) -> Generation:
        """Breed the next generation from the current one's results."""
        settings, space, rng = self.settings, self.space, self.rng
        done = self.current
        segments = [ALL, *settings.segments]
        elites: list[Design] = []
        # Each segment's best designs survive, so a segment's own winner is never lost.
        for segment in segments:
            for design in self.ranking(segment, done)[: settings.elite]:
                if design not in elites:
                    elites.append(design)
        nxt: list[Design] = elites[: settings.population]
        parents: dict[Design, tuple[Design, ...]] = {d: (d,) for d in nxt}
        tries = 0
        while len(nxt) < settings.population and tries < settings.population * 50:
            tries += 1
            segment = rng.choice(segments)
            a = self._tournament(done, segment)
            b = self._tournament(done, segment)
            child = space.crossover(a, b, rng) if a != b else a
            child = space.mutate(child, rng, rate=settings.mutation_rate)
            if child not in nxt:
                nxt.append(child)
                parents[child] = (a, b)
        while len(nxt) < settings.population:  # a tiny space: fill with fresh designs
            design = space.random(rng)
            if design not in nxt or len(nxt) >= space.size:
                nxt.append(design)
                parents[design] = ()
        generation = Generation(done.number + 1, nxt, parents)
        self.history.append(generation)
        return generation

    def _tournament(self, generation: Generation, segment: str) -> Design:
        entrants = self.rng.sample(
            generation.designs, min(self.settings.tournament, len(generation.designs))
        )
        return max(entrants, key=lambda d: generation.arm(segment, d).mean())

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
