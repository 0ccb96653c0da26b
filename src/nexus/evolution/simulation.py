"""A seeded ground-truth world of page designs, for benchmarking evolution (pure core).

The world is a landing page with eight genes (:data:`GENES`): 5 headlines x 3 bodies x 4
call-to-action texts x 3 themes x 3 layouts x social proof on/off x 3 urgency levels x 5
tones = 16,200 combinations, of which the one exclusion (:data:`EXCLUSIONS`: no dark theme
with the long-form layout) leaves **14,400 allowed designs**. Small enough to enumerate, so
every optimum here is exact, and large enough that trying designs one by one is hopeless at
realistic traffic.

Visitors
    Each visitor belongs to one emotional segment (:data:`SEGMENTS`, shares
    :data:`SEGMENT_WEIGHTS`: frustrated 25 %, anxious 25 %, excited 20 %, neutral 30 %).
    NEXUS reads the segment from the visitor's emotion, imperfectly: the observed label is
    the true one with probability :data:`SEGMENT_ACCURACY` (85 %) and otherwise one of the
    three others at random. A policy sees only the observed label, so everything below is
    stated per *observed* segment: its conversion probability for a design is the mixture,
    over the true segments the label may hide, of the true probabilities (exact; the hidden
    label is independent per visitor).

Ground truth (:func:`World.conversion`)
    ``logit p = BASE + SEGMENT_OFFSET[segment] + sum of gene main effects
    + pairwise interactions + segment x gene effects``, all on the logit scale:

    * :data:`BASE` ``= logit(2.6 %)``; :data:`SEGMENT_OFFSET` moves the excited up (+0.30)
      and the frustrated (-0.25) and anxious (-0.15) down, in both worlds. Over seeds 1-30,
      a uniformly random design converts 2.9 % of visitors on average (2.5-3.3 %), the best
      single design 6.2 % (5.4-7.3 %) and the best design per segment 7.3 % (segmented
      world); in the unsegmented world 2.7 % and 5.7 %. Half the designs convert less than
      half as well as the best, and only 0.05-0.3 % of designs reach 90 % of it.
    * :data:`MAIN_EFFECTS`: per gene, from +-0.03 (theme) to +-0.15 (headline, call to
      action), i.e. a few percent to about 16 % relative lift each -- the size of effects
      real page tests find. Each seed jitters every main effect by ``N(0, JITTER^2)``
      (``JITTER`` = 0.04), so every seed is a somewhat different landscape.
    * :data:`INTERACTIONS` (epistasis): a story body pays only in the long-form layout
      (+0.30, while long form alone loses 0.08), an urgent tone pays with strong urgency
      cues (+0.25), a reassuring tone clashes with them (-0.25), and a testimonial headline
      is stronger with social proof on (+0.12). The first is a trap for testing one gene
      at a time: from most designs, a story body alone or the long form alone loses, so
      the pair -- part of the best design in some seeds -- is found only by changing both.
    * :data:`SEGMENT_EFFECTS` (the *segmented* world only): anxious visitors want a
      reassuring tone and no strong urgency, frustrated ones an empathetic tone and a
      short body, excited ones an urgent or playful tone with strong urgency and "buy now",
      neutral ones a formal tone and a detailed body. The best design differs by segment.
      In the *unsegmented* world these are all zero (segments still differ in base rate,
      not in what works), so one design is best for everyone.

Everything is computed once per world over all designs with numpy (:attr:`World.table`),
so the conversion of any design or any policy's choice is a lookup.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from nexus.evolution.genome import Design, DesignSpace

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

GENES: dict[str, tuple[str, ...]] = {
    "headline": ("benefit", "savings", "question", "testimonial", "bold-claim"),
    "body": ("short", "detailed", "story"),
    "cta_text": ("buy now", "start free trial", "get started", "see plans"),
    "theme": ("light", "dark", "warm"),
    "layout": ("single column", "two column", "long form"),
    "social_proof": ("off", "on"),
    "urgency": ("none", "soft", "strong"),
    "tone": ("reassuring", "urgent", "playful", "formal", "empathetic"),
}
EXCLUSIONS: tuple[dict[str, str], ...] = ({"theme": "dark", "layout": "long form"},)

SEGMENTS: tuple[str, ...] = ("frustrated", "anxious", "excited", "neutral")
SEGMENT_WEIGHTS: dict[str, float] = {
    "frustrated": 0.25,
    "anxious": 0.25,
    "excited": 0.20,
    "neutral": 0.30,
}
SEGMENT_ACCURACY = 0.85
SEGMENT_OFFSET: dict[str, float] = {
    "frustrated": -0.25,
    "anxious": -0.15,
    "excited": 0.30,
    "neutral": 0.0,
}

BASE = math.log(0.026 / (1 - 0.026))
JITTER = 0.04

MAIN_EFFECTS: dict[str, dict[str, float]] = {
    "headline": {
        "benefit": 0.15,
        "savings": 0.05,
        "question": -0.10,
        "testimonial": 0.08,
        "bold-claim": -0.15,
    },
    "body": {"short": 0.06, "detailed": -0.04, "story": -0.02},
    "cta_text": {
        "buy now": -0.05,
        "start free trial": 0.15,
        "get started": 0.04,
        "see plans": -0.12,
    },
    "theme": {"light": 0.03, "dark": -0.03, "warm": 0.01},
    "layout": {"single column": 0.10, "two column": -0.02, "long form": -0.08},
    "social_proof": {"off": -0.06, "on": 0.06},
    "urgency": {"none": -0.02, "soft": 0.06, "strong": -0.04},
    "tone": {
        "reassuring": 0.05,
        "urgent": -0.06,
        "playful": -0.04,
        "formal": -0.03,
        "empathetic": 0.06,
    },
}

INTERACTIONS: tuple[tuple[tuple[str, str], tuple[str, str], float], ...] = (
    (("body", "story"), ("layout", "long form"), 0.30),
    (("tone", "urgent"), ("urgency", "strong"), 0.25),
    (("tone", "reassuring"), ("urgency", "strong"), -0.25),
    (("headline", "testimonial"), ("social_proof", "on"), 0.12),
)

SEGMENT_EFFECTS: dict[str, dict[str, dict[str, float]]] = {
    "frustrated": {
        "tone": {"empathetic": 0.25, "reassuring": 0.10, "playful": -0.20, "urgent": -0.15},
        "body": {"short": 0.15, "detailed": -0.10},
        "urgency": {"strong": -0.15},
    },
    "anxious": {
        "tone": {"reassuring": 0.30, "empathetic": 0.10, "urgent": -0.25, "playful": -0.10},
        "urgency": {"soft": -0.10, "strong": -0.30},
        "social_proof": {"on": 0.10, "off": -0.10},
        "cta_text": {"start free trial": 0.10, "buy now": -0.10},
    },
    "excited": {
        "tone": {"urgent": 0.25, "playful": 0.20, "formal": -0.15, "reassuring": -0.15},
        "urgency": {"strong": 0.30, "soft": 0.10, "none": -0.10},
        "cta_text": {"buy now": 0.25},
    },
    "neutral": {
        "tone": {"formal": 0.20, "playful": -0.05},
        "body": {"detailed": 0.12, "story": -0.05},
    },
}


def design_space() -> DesignSpace:
    return DesignSpace.build(GENES, exclusions=EXCLUSIONS)


def _observation_matrix() -> FloatArray:
    """``P(true segment | observed segment)``, rows observed, columns true."""
    k = len(SEGMENTS)
    prior = np.array([SEGMENT_WEIGHTS[s] for s in SEGMENTS])
    given_true = np.full((k, k), (1 - SEGMENT_ACCURACY) / (k - 1))  # [true, observed]
    np.fill_diagonal(given_true, SEGMENT_ACCURACY)
    joint = prior[:, None] * given_true  # [true, observed]
    return np.asarray((joint / joint.sum(axis=0)).T, dtype=np.float64)


@dataclass(frozen=True)
class World:
    """One seed's landscape over every allowed design, per observed segment."""

    seed: int
    segmented: bool
    space: DesignSpace
    designs: IntArray  # (n, genes): every allowed design, as value indices
    table: FloatArray  # (segments, n): conversion probability by observed segment
    weights: FloatArray  # (segments,): share of visitors by observed segment
    radix: IntArray  # (genes,): mixed-radix place values, for index lookups
    lookup: IntArray  # (all combinations,): row in ``designs``, -1 where excluded
    main_effects: dict[str, dict[str, float]]  # this seed's jittered main effects

    @classmethod
    def build(cls, seed: int, *, segmented: bool = True) -> World:
        space = design_space()
        sizes = [len(g.values) for g in space.genes]
        every = np.array(list(itertools.product(*(range(s) for s in sizes))), dtype=np.int64)
        allowed = np.ones(len(every), dtype=bool)
        for exclusion in space.exclusions:
            allowed &= ~np.all([every[:, g] == v for g, v in exclusion.when], axis=0)
        radix = np.array([math.prod(sizes[i + 1 :]) for i in range(len(sizes))], dtype=np.int64)
        designs = every[allowed]
        lookup = np.full(len(every), -1, dtype=np.int64)
        lookup[allowed] = np.arange(len(designs))

        rng = np.random.default_rng([seed, 8])
        names = list(GENES)
        logit_common = np.full(len(designs), BASE)
        main_effects: dict[str, dict[str, float]] = {}
        for g, name in enumerate(names):
            effects = np.array([MAIN_EFFECTS[name][v] for v in GENES[name]])
            effects = effects + rng.normal(0.0, JITTER, len(effects))
            main_effects[name] = {v: float(e) for v, e in zip(GENES[name], effects, strict=True)}
            logit_common += effects[designs[:, g]]
        for (gene_a, value_a), (gene_b, value_b), effect in INTERACTIONS:
            a, b = names.index(gene_a), names.index(gene_b)
            both = (designs[:, a] == GENES[gene_a].index(value_a)) & (
                designs[:, b] == GENES[gene_b].index(value_b)
            )
            logit_common += effect * both
        true = np.empty((len(SEGMENTS), len(designs)))
        for s, segment in enumerate(SEGMENTS):
            logit = logit_common + SEGMENT_OFFSET[segment]
            if segmented:
                for name, effects_by_value in SEGMENT_EFFECTS[segment].items():
                    g = names.index(name)
                    effects = np.array([effects_by_value.get(v, 0.0) for v in GENES[name]])
                    logit = logit + effects[designs[:, g]]
            true[s] = 1.0 / (1.0 + np.exp(-logit))
        observed = _observation_matrix() @ true
        prior = np.array([SEGMENT_WEIGHTS[s] for s in SEGMENTS])
        given_true = np.full((len(SEGMENTS),) * 2, (1 - SEGMENT_ACCURACY) / (len(SEGMENTS) - 1))
        np.fill_diagonal(given_true, SEGMENT_ACCURACY)
        weights = prior @ given_true  # observed shares (equal to the true ones here)
        return cls(seed, segmented, space, designs, observed, weights, radix, lookup, main_effects)

    # -- lookups ------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return len(self.designs)

    def index(self, design: Design) -> int:
        row = int(self.lookup[int(np.dot(self.radix, np.asarray(design, dtype=np.int64)))])
        if row < 0:
            raise ValueError(f"design {design} is not allowed in this world")
        return row

    def design(self, row: int) -> Design:
        return tuple(int(v) for v in self.designs[row])

    def segment_index(self, segment: str) -> int:
        return SEGMENTS.index(segment)

    @property
    def overall(self) -> FloatArray:
        """Conversion of each design served to everyone."""
        return np.asarray(self.weights @ self.table, dtype=np.float64)

    def conversion(self, design: Design, segment: str | None = None) -> float:
        """The true conversion probability of a design, for one observed segment or for
        everyone (``None``)."""
        row = self.index(design)
        if segment is None:
            return float(self.overall[row])
        return float(self.table[self.segment_index(segment), row])

    def optimum(self, segment: str | None = None) -> tuple[Design, float]:
        """The best design (and its conversion) for one observed segment, or the best single
        design for everyone (``None``), by enumeration."""
        values = self.overall if segment is None else self.table[self.segment_index(segment)]
        row = int(np.argmax(values))
        return self.design(row), float(values[row])

    def oracle(self) -> float:
        """Conversion when every observed segment is served its own best design."""
        return float(self.weights @ self.table.max(axis=1))

    def random_conversion(self) -> float:
        """Expected conversion of a uniformly random allowed design."""
        return float(self.overall.mean())

    def policy_value(self, choice: Design | Mapping[str, Design]) -> float:
        """Expected conversion of deploying one design for everyone, or one per segment."""
        if isinstance(choice, Mapping):
            return float(
                sum(
                    self.weights[s] * self.table[s, self.index(choice[segment])]
                    for s, segment in enumerate(SEGMENTS)
                )
            )
        return self.conversion(choice)

    # -- visitors -----------------------------------------------------------------------------

    def segment_counts(self, visitors: int, rng: np.random.Generator) -> IntArray:
        """How many of ``visitors`` arrivals carry each observed segment label."""
        return np.asarray(rng.multinomial(visitors, self.weights), dtype=np.int64)

    def convert(
        self, segment: int, rows: IntArray, trials: IntArray, rng: np.random.Generator
    ) -> IntArray:
        """Conversions of ``trials[i]`` visitors of one observed segment served ``rows[i]``."""
        return np.asarray(rng.binomial(trials, self.table[segment, rows]), dtype=np.int64)
