"""A page design as genes (pure core): the space of designs, constraints and pins, and the
variation operators evolution applies to designs.

A **gene** is one choice on a page -- the headline, the call to action's text, the colour
theme, the layout, social proof on or off, urgency, tone -- with its allowed values. A
**design** gives every gene one value (stored as the value's index). **Exclusions** rule out
combinations (``{"theme": "dark", "layout": "dense"}``: no design may have both); a gene can
be **pinned** to one value by a person, after which no design varies it.

Everything here is deterministic given the ``random.Random`` passed in, and does no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from random import Random

Design = tuple[int, ...]
MAX_GENES = 64
MAX_VALUES = 256
_SAMPLE_TRIES = 1000


class GenomeError(ValueError):
    """A gene, exclusion or design that does not fit the space."""


@dataclass(frozen=True, slots=True)
class Gene:
    name: str
    values: tuple[str, ...]
    pinned: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise GenomeError("a gene needs a name")
        if not 1 <= len(self.values) <= MAX_VALUES:
            raise GenomeError(f"gene {self.name!r} needs 1 to {MAX_VALUES} values")
        if len(set(self.values)) != len(self.values):
            raise GenomeError(f"gene {self.name!r} repeats a value")
        if self.pinned is not None and self.pinned not in self.values:
            raise GenomeError(
                f"gene {self.name!r} is pinned to {self.pinned!r}, not one of its values"
            )

    @property
    def free(self) -> bool:
        return self.pinned is None and len(self.values) > 1


@dataclass(frozen=True, slots=True)
class Exclusion:
    """No design may have all of these gene values at once."""

    when: tuple[tuple[int, int], ...]  # (gene index, value index) pairs


@dataclass(frozen=True)
class DesignSpace:
    genes: tuple[Gene, ...]
    exclusions: tuple[Exclusion, ...] = ()
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 1 <= len(self.genes) <= MAX_GENES:
            raise GenomeError(f"a design space has 1 to {MAX_GENES} genes")
        names = [g.name for g in self.genes]
        if len(set(names)) != len(names):
            raise GenomeError("gene names must be unique")
        object.__setattr__(self, "_index", {n: i for i, n in enumerate(names)})
        pinned = self.pinned_design()
        for exclusion in self.exclusions:
            if all(pinned[g] == v for g, v in exclusion.when):
                raise GenomeError("the pinned genes form a combination an exclusion forbids")

    @classmethod
    def build(
        cls,
        genes: Mapping[str, Sequence[str]],
        *,
        exclusions: Sequence[Mapping[str, str]] = (),
        pins: Mapping[str, str] | None = None,
    ) -> DesignSpace:
        """A space from plain data: ``{"theme": ["light", "dark"], ...}``."""
        pins = dict(pins or {})
        unknown = sorted(set(pins) - set(genes))
        if unknown:
            raise GenomeError(f"pins name unknown genes: {', '.join(unknown)}")
        built = tuple(Gene(n, tuple(v), pins.get(n)) for n, v in genes.items())
        index = {g.name: i for i, g in enumerate(built)}
        rules = []
        for rule in exclusions:
            if len(rule) < 2:
                raise GenomeError("an exclusion names at least two genes")
            pairs = []
            for name, value in rule.items():
                if name not in index:
                    raise GenomeError(f"an exclusion names an unknown gene {name!r}")
                gene = built[index[name]]
                if value not in gene.values:
                    raise GenomeError(f"gene {name!r} has no value {value!r}")
                pairs.append((index[name], gene.values.index(value)))
            rules.append(Exclusion(tuple(sorted(pairs))))
        return cls(built, tuple(rules))

    # -- the space --------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Designs the genes allow, exclusions not subtracted (pinned genes count once)."""
        return math.prod(1 if g.pinned is not None else len(g.values) for g in self.genes)

    def pinned_design(self) -> list[int | None]:
        return [None if g.pinned is None else g.values.index(g.pinned) for g in self.genes]

    def valid(self, design: Design) -> bool:
        if len(design) != len(self.genes):
            return False
        for gene, value in zip(self.genes, design, strict=True):
            if not 0 <= value < len(gene.values):
                return False
            if gene.pinned is not None and gene.values[value] != gene.pinned:
                return False
        return not any(all(design[g] == v for g, v in e.when) for e in self.exclusions)

    def check(self, design: Design) -> Design:
        if not self.valid(design):
            raise GenomeError(f"design {self.describe(design)} is not allowed in this space")
        return design

    def describe(self, design: Design) -> dict[str, str]:
        """``{gene: value}`` of a design (indices out of range shown as ``?``)."""
        return {
            g.name: g.values[v] if 0 <= v < len(g.values) else "?"
            for g, v in zip(self.genes, design, strict=False)
        }

    def encode(self, values: Mapping[str, str]) -> Design:
        """The design with these gene values (every gene named)."""
        missing = [g.name for g in self.genes if g.name not in values]
        if missing:
            raise GenomeError(f"no value for genes: {', '.join(missing)}")
        design = []
        for gene in self.genes:
            if values[gene.name] not in gene.values:
                raise GenomeError(f"gene {gene.name!r} has no value {values[gene.name]!r}")
            design.append(gene.values.index(values[gene.name]))
        return self.check(tuple(design))

    @staticmethod
    def key(design: Design) -> str:
        """A short stable id of a design."""
        return "d-" + "-".join(map(str, design))

    # -- variation --------------------------------------------------------------------------

    def random(self, rng: Random) -> Design:
        """A uniformly drawn allowed design (rejection sampling)."""
        pinned = self.pinned_design()
        for _ in range(_SAMPLE_TRIES):
            design = tuple(
                p if p is not None else rng.randrange(len(g.values))
                for g, p in zip(self.genes, pinned, strict=True)
            )
            if self.valid(design):
                return design
        raise GenomeError("no allowed design found: the exclusions rule out (almost) everything")

    def mutate(self, design: Design, rng: Random, *, rate: float) -> Design:
        """Each free gene changes to another of its values with probability ``rate``; at
        least one changes (a mutation that changes nothing is no mutation)."""
        free = [i for i, g in enumerate(self.genes) if g.free]
        if not free:
            return design
        for _ in range(_SAMPLE_TRIES):
            out = list(design)
            changed = [i for i in free if rng.random() < rate] or [rng.choice(free)]
            for i in changed:
                others = [v for v in range(len(self.genes[i].values)) if v != design[i]]
                out[i] = rng.choice(others)
            candidate = tuple(out)
            if self.valid(candidate):
                return candidate
        return design

    def crossover(self, a: Design, b: Design, rng: Random) -> Design:
        """Uniform crossover: each gene from one parent or the other; a child an exclusion
        forbids is drawn again, and after many tries the fitter-listed parent ``a`` is kept."""
        for _ in range(_SAMPLE_TRIES):
            child = tuple(x if rng.random() < 0.5 else y for x, y in zip(a, b, strict=True))
            if self.valid(child):
                return child
        return a

    def neighbours(self, design: Design) -> list[Design]:
        """Every allowed design one gene away (for one-gene-at-a-time tests)."""
        out = []
        for i, gene in enumerate(self.genes):
            if not gene.free:
                continue
            for v in range(len(gene.values)):
                if v != design[i]:
                    candidate = (*design[:i], v, *design[i + 1 :])
                    if self.valid(candidate):
                        out.append(candidate)
        return out
