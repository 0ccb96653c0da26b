"""Evolution: the champion each strategy would promote after 200,000 visitors, in a known world.

Offline and exact: no server. :mod:`nexus.evolution.simulation` is a page with eight genes
and 14,400 allowed designs whose true conversion per emotional segment is known, so the
design a strategy would deploy is scored exactly (its true expected conversion), as a share
of the optimum found by enumerating every design. Two worlds per seed: *segmented* (what
works differs by emotional segment) and *unsegmented* (segment effects zero, base rates
still differ). The module docstring of the simulation lists every parameter.

Strategies, at equal traffic (:data:`VISITORS` per run, visitors arriving in batches of
:data:`BATCH` whose outcomes come back together, as goal events do in production):

* **(a) evolution**: :class:`nexus.evolution.search.Evolution` with its fitness model,
  Thompson allocation inside each generation, :data:`GENERATIONS` generations of
  :data:`SEARCH_VISITORS` visitors, then an identification phase of
  :data:`IDENTIFY_VISITORS` visitors among the top :data:`IDENTIFY_TOP` designs (top-two
  Thompson); it promotes the identified champion, one design for everyone.
* **(b) uniform A/B/n**: :data:`ABN_ARMS` random designs, traffic split evenly, the best
  observed rate promoted.
* **(c) one gene at a time**: from a random design, one A/B/n test per gene in turn over
  all its values (the others held), traffic split across genes in proportion to their
  values (about 7,100 visitors per variant), each test's best observed value kept.
* **(d) segmented evolution**: (a) with ``Settings.segments`` on: fitness per emotional
  segment (the observed one, right 85 % of the time), each segment served and promoted
  its own champion.

Figures: the *deployed* conversion (the true conversion of the promoted design or
per-segment designs) as a share of two optima -- the best single design for everyone, and
the per-segment oracle (each observed segment its own best design) -- and the *run*: the
realised conversion rate during the 200,000 visitors and the expected conversions lost
against the per-segment oracle (cumulative regret). Each is the mean over :data:`SEEDS`
seeds with a 95 % Student-t interval; differences are paired by seed (same world, same
seed), so their interval is the t-interval of the per-seed differences. Seeds run in
parallel processes (:data:`PROCESSES`), each with a single BLAS thread.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy import stats

from benchmarks.report import Section, table
from nexus.evolution import simulation as sim
from nexus.evolution.genome import Design
from nexus.evolution.search import ALL, Evolution, Settings

TITLE = "Evolution: deployed conversion after 200,000 visitors on 14,400 designs"
VISITORS = 200_000
BATCH = 1_000
SEEDS: tuple[int, ...] = tuple(range(1, 31))
PROCESSES = 2
POPULATION = 16
GENERATIONS = 20
SEARCH_VISITORS = 8_000
IDENTIFY_TOP = 4
IDENTIFY_VISITORS = VISITORS - GENERATIONS * SEARCH_VISITORS
ABN_ARMS = 20
BAR_SHARE = 0.90

STRATEGIES = ("evolution", "uniform A/B/n", "one gene at a time", "segmented evolution")
SHORT = {
    "evolution": "(a)",
    "uniform A/B/n": "(b)",
    "one gene at a time": "(c)",
    "segmented evolution": "(d)",
}
WORLDS = ("segmented", "unsegmented")


def settings(*, segmented: bool) -> Settings:
    return Settings(
        population=POPULATION,
        elite=3,
        visitors_per_generation=SEARCH_VISITORS,
        generations=GENERATIONS,
        identify_top=IDENTIFY_TOP,
        identify_visitors=IDENTIFY_VISITORS,
        segments=sim.SEGMENTS if segmented else (),
    )


@dataclass(frozen=True)
class Outcome:
    """One strategy on one world and seed."""

    deployed: float  # true conversion of what it promotes
    conversions: int  # realised during the run
    regret: float  # expected conversions lost against the per-segment oracle


class Ledger:
    """Serves batches in one world, keeping realised conversions and exact regret."""

    def __init__(self, world: sim.World, rng: np.random.Generator) -> None:
        self.world = world
        self.rng = rng
        self.best = world.table.max(axis=1)
        self.conversions = 0
        self.regret = 0.0
        self.served = 0

    def serve(self, segment: int, design: Design, trials: int) -> int:
        row = self.world.index(design)
        p = float(self.world.table[segment, row])
        converted = int(self.rng.binomial(trials, p))
        self.conversions += converted
        self.regret += trials * (float(self.best[segment]) - p)
        self.served += trials
        return converted


def run_evolution(world: sim.World, seed: int, *, segmented: bool) -> Outcome:
    config = settings(segmented=segmented)
    evolution = Evolution(world.space, config, seed=seed)
    ledger = Ledger(world, np.random.default_rng([seed, 1]))
    arrivals = np.random.default_rng([seed, 2])
    left = VISITORS
    while left > 0:
        if evolution.generation_done():
            evolution.advance()
        if evolution.phase == "search":
            room = config.visitors_per_generation - evolution.current.visitors
        elif evolution.phase == "identify":
            room = config.identify_visitors - evolution.current.visitors
        else:
            room = left
        n = min(BATCH, left, room)
        for s, count in enumerate(world.segment_counts(n, arrivals)):
            segment = sim.SEGMENTS[s] if segmented else None
            for design, trials in evolution.allocate(int(count), segment).items():
                evolution.record_many(design, trials, ledger.serve(s, design, trials), segment)
        left -= n
    if evolution.phase != "done":
        evolution.finish()
    choice: Design | dict[str, Design]
    if segmented:
        choice = {segment: evolution.best(segment)[0] for segment in sim.SEGMENTS}
    else:
        choice = evolution.best(ALL)[0]
    return Outcome(world.policy_value(choice), ledger.conversions, ledger.regret)


def _serve_evenly(
    ledger: Ledger, arrivals: np.random.Generator, designs: Sequence[Design], visitors: int
) -> dict[Design, list[int]]:
    """Split ``visitors`` evenly (in batches, round robin) over designs; counts per design."""
    counts = {d: [0, 0] for d in designs}
    left = visitors
    while left > 0:
        n = min(BATCH, left)
        for s, count in enumerate(ledger.world.segment_counts(n, arrivals)):
            shares = arrivals.multinomial(int(count), [1 / len(designs)] * len(designs))
            for design, trials in zip(designs, shares, strict=True):
                if trials:
                    counts[design][0] += int(trials)
                    counts[design][1] += ledger.serve(s, design, int(trials))
        left -= n
    return counts


def _best_observed(counts: Mapping[Design, list[int]], rng: np.random.Generator) -> Design:
    designs = list(counts)
    rates = np.array([c / t if t else 0.0 for t, c in counts.values()])
    top = np.flatnonzero(rates == rates.max())
    return designs[int(rng.choice(top))]


def run_uniform(world: sim.World, seed: int) -> Outcome:
    rng = np.random.default_rng([seed, 3])
    picks = rng.choice(world.size, ABN_ARMS, replace=False)
    designs = [world.design(int(row)) for row in picks]
    ledger = Ledger(world, np.random.default_rng([seed, 1]))
    counts = _serve_evenly(ledger, np.random.default_rng([seed, 2]), designs, VISITORS)
    return Outcome(
        world.policy_value(_best_observed(counts, rng)), ledger.conversions, ledger.regret
    )


def run_one_gene_at_a_time(world: sim.World, seed: int) -> Outcome:
    rng = np.random.default_rng([seed, 4])
    space = world.space
    current = world.design(int(rng.integers(world.size)))
    free = [g for g, gene in enumerate(space.genes) if gene.free]
    total_values = sum(len(space.genes[g].values) for g in free)
    ledger = Ledger(world, np.random.default_rng([seed, 1]))
    arrivals = np.random.default_rng([seed, 2])
    budgets = [VISITORS * len(space.genes[g].values) // total_values for g in free]
    budgets[-1] += VISITORS - sum(budgets)
    for g, budget in zip(free, budgets, strict=True):
        variants = [
            candidate
            for v in range(len(space.genes[g].values))
            if space.valid(candidate := (*current[:g], v, *current[g + 1 :]))
        ]
        counts = _serve_evenly(ledger, arrivals, variants, budget)
        current = _best_observed(counts, rng)
    return Outcome(world.policy_value(current), ledger.conversions, ledger.regret)


def run_seed(seed: int) -> dict[tuple[str, str], Outcome]:
    """Every strategy in both worlds for one seed."""
    try:  # one BLAS thread per process: the processes already fill the cores
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - a dependency of scikit-learn, normally present
        pass
    out: dict[tuple[str, str], Outcome] = {}
    for world_name in WORLDS:
        world = sim.World.build(seed, segmented=world_name == "segmented")
        out[(world_name, "evolution")] = run_evolution(world, seed, segmented=False)
        out[(world_name, "uniform A/B/n")] = run_uniform(world, seed)
        out[(world_name, "one gene at a time")] = run_one_gene_at_a_time(world, seed)
        out[(world_name, "segmented evolution")] = run_evolution(world, seed, segmented=True)
    return out


@dataclass(frozen=True)
class WorldFacts:
    random: float
    best_single: float
    oracle: float


def world_facts(seed: int) -> dict[str, WorldFacts]:
    facts = {}
    for world_name in WORLDS:
        world = sim.World.build(seed, segmented=world_name == "segmented")
        facts[world_name] = WorldFacts(
            world.random_conversion(), world.optimum()[1], world.oracle()
        )
    return facts


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Interval:
        """Mean and 95 % Student-t interval of independent per-seed values."""
        data = np.asarray(values, dtype=np.float64)
        mean = float(data.mean())
        if len(data) < 2:
            return cls(mean, math.nan, math.nan)
        half = float(stats.t.ppf(0.975, len(data) - 1) * data.std(ddof=1) / math.sqrt(len(data)))
        return cls(mean, mean - half, mean + half)

    def pct(self, digits: int = 1) -> str:
        return (
            f"{100 * self.mean:.{digits}f} % "
            f"[{100 * self.low:.{digits}f}, {100 * self.high:.{digits}f}]"
        )

    def pp(self) -> str:
        return f"{100 * self.mean:+.2f} pp [{100 * self.low:+.2f}, {100 * self.high:+.2f}]"

    def count(self) -> str:
        return f"{self.mean:,.0f} [{self.low:,.0f}, {self.high:,.0f}]"


def _map_seeds(
    function: Callable[[int], dict[tuple[str, str], Outcome]],
) -> list[dict[tuple[str, str], Outcome]]:
    processes = min(PROCESSES, os.cpu_count() or 1)
    if processes <= 1:
        return [function(seed) for seed in SEEDS]
    with ProcessPoolExecutor(processes) as pool:
        return list(pool.map(function, SEEDS))


def run() -> Section:
    results = _map_seeds(run_seed)
    facts = [world_facts(seed) for seed in SEEDS]

    def series(world: str, strategy: str, figure: str) -> list[float]:
        out = []
        for result, fact in zip(results, facts, strict=True):
            outcome, f = result[(world, strategy)], fact[world]
            out.append(
                {
                    "single": outcome.deployed / f.best_single,
                    "oracle": outcome.deployed / f.oracle,
                    "deployed": outcome.deployed,
                    "rate": outcome.conversions / VISITORS,
                    "regret": outcome.regret,
                }[figure]
            )
        return out

    def diff(world: str, a: str, b: str, figure: str = "deployed") -> Interval:
        return Interval.of(
            [x - y for x, y in zip(series(world, a, figure), series(world, b, figure), strict=True)]
        )

    world_rows = []
    for world in WORLDS:
        world_rows.append(
            [
                world,
                Interval.of([f[world].random for f in facts]).pct(2),
                Interval.of([f[world].best_single for f in facts]).pct(2),
                Interval.of([f[world].oracle for f in facts]).pct(2),
            ]
        )
    rows = []
    for world in WORLDS:
        for strategy in STRATEGIES:
            rows.append(
                [
                    world,
                    f"{SHORT[strategy]} {strategy}",
                    Interval.of(series(world, strategy, "deployed")).pct(2),
                    Interval.of(series(world, strategy, "single")).pct(),
                    Interval.of(series(world, strategy, "oracle")).pct(),
                    Interval.of(series(world, strategy, "rate")).pct(2),
                    Interval.of(series(world, strategy, "regret")).count(),
                ]
            )
    pairs = [
        ("segmented", "evolution", "uniform A/B/n"),
        ("segmented", "evolution", "one gene at a time"),
        ("segmented", "segmented evolution", "evolution"),
        ("unsegmented", "evolution", "uniform A/B/n"),
        ("unsegmented", "evolution", "one gene at a time"),
        ("unsegmented", "segmented evolution", "evolution"),
    ]
    differences = {(w, a, b): diff(w, a, b) for w, a, b in pairs}
    difference_rows = [
        [
            world,
            f"{SHORT[a]} - {SHORT[b]}",
            differences[(world, a, b)].pp(),
            diff(world, a, b, "rate").pp(),
            Interval.of(
                [
                    y - x
                    for x, y in zip(
                        series(world, a, "regret"), series(world, b, "regret"), strict=True
                    )
                ]
            ).count(),
        ]
        for world, a, b in pairs
    ]

    share = {
        (world, strategy, figure): Interval.of(series(world, strategy, figure))
        for world in WORLDS
        for strategy in ("evolution", "segmented evolution")
        for figure in ("single", "oracle")
    }
    bars: list[tuple[str, bool, str]] = []
    for world in WORLDS:
        got = share[(world, "evolution", "single")]
        bars.append(
            (
                f"(a) evolution reaches >= 90 % of the best single design ({world} world)",
                got.mean >= BAR_SHARE,
                got.pct(),
            )
        )
    got = share[("segmented", "segmented evolution", "oracle")]
    bars.append(
        (
            "(d) segmented evolution reaches >= 90 % of the per-segment optimum (segmented world)",
            got.mean >= BAR_SHARE,
            got.pct(),
        )
    )
    for world in WORLDS:
        for other in ("uniform A/B/n", "one gene at a time"):
            d = differences[(world, "evolution", other)]
            bars.append(
                (
                    f"(a) beats {SHORT[other]} {other}, 95 % CI above zero ({world} world)",
                    d.low > 0,
                    d.pp(),
                )
            )
    d = differences[("segmented", "segmented evolution", "evolution")]
    bars.append(("(d) beats (a) when segments differ, 95 % CI above zero", d.low > 0, d.pp()))
    d = differences[("unsegmented", "segmented evolution", "evolution")]
    bars.append(
        (
            "(d) does not lose to (a) when segments do not differ: CI reaches zero or above",
            d.high >= 0,
            d.pp(),
        )
    )
    bar_rows = [[name, figure, "**pass**" if ok else "**FAIL**"] for name, ok, figure in bars]

    per_variant = VISITORS // sum(map(len, sim.GENES.values()))
    setup = (
        f"{VISITORS:,} visitors per run x {len(SEEDS)} seeds ({SEEDS[0]}-{SEEDS[-1]}) x 2 "
        f"worlds; {sim.World.build(0).size:,} allowed designs (8 genes); outcomes in "
        f"batches of {BATCH:,}. (a) Evolution: population {POPULATION}, elite 3, "
        f"{GENERATIONS} generations x {SEARCH_VISITORS:,} visitors, then identification "
        f"among the top {IDENTIFY_TOP} with {IDENTIFY_VISITORS:,} visitors (top-two "
        f"Thompson); other settings the defaults of `nexus.evolution.search.Settings`. "
        f"(b) Uniform A/B/n: {ABN_ARMS} random designs, {VISITORS // ABN_ARMS:,} visitors "
        f"each, best observed rate promoted. (c) One gene at a time: from a random design, "
        f"each gene's values tested in turn (about {per_variant:,} visitors per variant), "
        f"the best observed kept. (d) Segmented evolution: (a) with fitness, elites and "
        f"identification per observed emotional segment ({', '.join(sim.SEGMENTS)}; read right "
        f"{sim.SEGMENT_ACCURACY:.0%} of the time), each segment promoted its own champion."
    )
    markdown = "\n\n".join(
        [
            setup,
            "Worlds (exact, by enumeration; mean over seeds, 95 % t-interval): conversion of "
            "a uniformly random design, of the best single design, and of the per-segment "
            "oracle (each observed segment served its own best design).",
            table(
                ["world", "random design", "best single design", "per-segment oracle"],
                world_rows,
                "lrrr",
            ),
            "Per strategy: *deployed* is the true conversion of what it promotes (per "
            "segment for (d)), also as a share of the best single design and of the "
            "per-segment oracle; *during the run* is the realised conversion rate over the "
            f"{VISITORS:,} visitors, and regret the expected conversions lost against the "
            "per-segment oracle.",
            table(
                [
                    "world",
                    "strategy",
                    "deployed",
                    "% of best single",
                    "% of per-segment optimum",
                    "during the run",
                    "regret",
                ],
                rows,
                "llrrrrr",
            ),
            "Differences, paired by seed (95 % t-interval): deployed conversion, conversion "
            "during the run, and conversions saved during the run (regret of the second "
            "minus the first).",
            table(
                ["world", "difference", "deployed", "during the run", "conversions saved"],
                difference_rows,
                "llrrr",
            ),
            "The bar (issue #8) concerns the design each strategy would promote; the "
            "conversion during the run is what the search cost meanwhile.",
            table(["bar", "measured", "result"], bar_rows, "lrl"),
        ]
    )
    summary = [
        f"{world} world, {SHORT[strategy]} {strategy}: deployed "
        f"{Interval.of(series(world, strategy, 'single')).pct()} of the best single design, "
        f"{Interval.of(series(world, strategy, 'oracle')).pct()} of the per-segment optimum"
        for world in WORLDS
        for strategy in STRATEGIES
    ]
    summary += [f"{name}: {figure} -> {'pass' if ok else 'FAIL'}" for name, ok, figure in bars]
    return Section(TITLE, markdown, summary)
