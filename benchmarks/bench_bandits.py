"""Bandits: how much conversion each allocation policy loses in the visitor simulator.

Offline and exact: no server. Every policy meets the same visitors of
:class:`nexus.experiments.simulation.Simulation` (one stream per seed), and the
simulator's ground truth gives each visitor's true conversion probability under every UI
adaptation, so the regret against the state-optimal oracle is computed exactly (expected
conversions lost, ``Σ optimal_p - p[served]``), not estimated.

* Common random numbers: a visitor converts when its one uniform draw ``luck`` is below the
  probability of what it was served, whatever the policy; realised conversions of two
  policies differ only where their choices differ, which is what makes a paired comparison
  sharp.
* Context: what NEXUS would observe, never the hidden archetype: the visitor's latent
  11-dimension emotion plus Gaussian noise (sd ``simulation.OBSERVATION_NOISE`` per
  dimension, clipped), and its attributes (returning, device, plan interest, country),
  through :class:`nexus.experiments.bandits.ContextEncoder`.
* Delayed feedback: rewards reach the policies in batches of :data:`REWARD_BATCH` visitors,
  as goal events after a decision's window do in production; the same for every policy.
* Uncertainty: each figure is the mean over :data:`SEEDS` independent worlds (visitor stream
  and policy seeds) with a 95 % Student-t interval; differences between policies are paired
  by seed (same visitors, same luck), so the interval is the t-interval of the per-seed
  differences.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from benchmarks.report import Section, table
from nexus.experiments import simulation as sim
from nexus.experiments.bandits import (
    ContextEncoder,
    LinearThompson,
    LinUCB,
    Policy,
    ThompsonBernoulli,
    UniformPolicy,
)

TITLE = "Bandits: regret in the visitor simulator"
VISITORS = 20_000
SEEDS: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
REWARD_BATCH = 100
BURN_IN = 20  # uniform until every arm has this many rewards
MIN_SHARE = 0.01  # exploration floor, so logged propensities stay positive
LINTS_DRAWS = 500  # posterior draws estimating linear Thompson's allocation probabilities
CHECKPOINTS = (1_000, 5_000, 10_000, VISITORS)
ARMS = sim.ADAPTATIONS
CONTEXTUAL = ("linear Thompson", "LinUCB")
PRIMARY = "linear Thompson"

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class World:
    """One seed's visitors, as every policy sees them."""

    contexts: FloatArray  # (n, features): observed emotion + attributes, encoded
    probabilities: FloatArray  # (n, arms): true conversion probability of each adaptation
    optimal: FloatArray  # (n,): probability under the state-optimal adaptation
    luck: FloatArray  # (n,): the common random number deciding conversion


@dataclass(frozen=True)
class Run:
    """One policy on one world."""

    served: NDArray[np.int64]  # arm index served to each visitor
    converted: NDArray[np.bool_]

    def expected(self, world: World) -> FloatArray:
        return world.probabilities[np.arange(len(self.served)), self.served]


def encoder() -> ContextEncoder:
    return ContextEncoder(
        attributes=["returning"],
        categories={
            "device": list(sim.DEVICES),
            "plan": list(sim.PLANS),
            "country": list(sim.COUNTRIES),
        },
    )


def build_world(seed: int, n: int = VISITORS) -> World:
    simulation = sim.Simulation(seed)
    context_encoder = encoder()
    contexts = np.empty((n, context_encoder.n_features))
    probabilities = np.empty((n, len(ARMS)))
    optimal = np.empty(n)
    luck = np.empty(n)
    for row, visitor in enumerate(simulation.visitors(n)):
        contexts[row] = context_encoder.encode(
            simulation.observe(visitor), visitor.attributes.as_dict()
        )
        truth = sim.conversion_probabilities(visitor)
        probabilities[row] = [truth[arm] for arm in ARMS]
        optimal[row] = sim.optimal_probability(visitor)
        luck[row] = visitor.luck
    return World(contexts, probabilities, optimal, luck)


def run_policy(policy: Policy, world: World) -> Run:
    """Serve every visitor in turn; rewards come back in batches of :data:`REWARD_BATCH`."""
    n = len(world.luck)
    served = np.empty(n, dtype=np.int64)
    converted = np.empty(n, dtype=bool)
    pending: list[int] = []
    for row in range(n):
        context = world.contexts[row] if policy.contextual else None
        arm = ARMS.index(policy.choose(context).arm)
        served[row] = arm
        converted[row] = world.luck[row] < world.probabilities[row, arm]
        pending.append(row)
        if len(pending) == REWARD_BATCH:
            for done in pending:
                policy.update(
                    world.contexts[done] if policy.contextual else None,
                    ARMS[served[done]],
                    float(converted[done]),
                )
            pending.clear()
    return Run(served, converted)


def run_fixed(arm: str, world: World) -> Run:
    index = ARMS.index(arm)
    served = np.full(len(world.luck), index, dtype=np.int64)
    return Run(served, world.luck < world.probabilities[:, index])


def run_oracle(world: World) -> Run:
    served = np.argmax(world.probabilities, axis=1).astype(np.int64)
    return Run(served, world.luck < world.optimal)


def policies(seed: int, n_features: int) -> dict[str, Callable[[], Policy]]:
    return {
        "uniform A/B/n": lambda: UniformPolicy(ARMS, seed=seed),
        "Thompson (Beta-Bernoulli)": lambda: ThompsonBernoulli(
            ARMS, seed=seed, burn_in=BURN_IN, min_share=MIN_SHARE
        ),
        "linear Thompson": lambda: LinearThompson(
            ARMS,
            n_features,
            n_draws=LINTS_DRAWS,
            seed=seed,
            burn_in=BURN_IN,
            min_share=MIN_SHARE,
        ),
        "LinUCB": lambda: LinUCB(ARMS, n_features, seed=seed, burn_in=BURN_IN, min_share=MIN_SHARE),
    }


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

    def excludes_zero_above(self) -> bool:
        return self.low > 0.0

    def pct(self) -> str:
        """As percentages: ``7.79 % [7.57, 8.02]``."""
        return f"{100 * self.mean:.2f} % [{100 * self.low:.2f}, {100 * self.high:.2f}]"

    def pp(self) -> str:
        """As a difference in percentage points: ``+1.47 pp [+1.32, +1.61]``."""
        return f"{100 * self.mean:+.2f} pp [{100 * self.low:+.2f}, {100 * self.high:+.2f}]"

    def count(self) -> str:
        return f"{self.mean:,.0f} [{self.low:,.0f}, {self.high:,.0f}]"


def _truth_markdown(best_fixed: str) -> str:
    rows = []
    for archetype in sim.ARCHETYPES:
        effects = sim.ADAPTATION_EFFECT[archetype]
        best = sim.best_adaptation_for(archetype)
        rows.append(
            [
                archetype,
                f"{sim.ARCHETYPE_WEIGHTS[archetype]:.0%}",
                f"{sim.BASE_CONVERSION[archetype]:.1%}",
                *(f"**{effects[a]:+.2f}**" if a == best else f"{effects[a]:+.2f}" for a in ARMS),
            ]
        )
    population = [
        [a + (" (best fixed)" if a == best_fixed else ""), f"{sim.population_conversion(a):.2%}"]
        for a in ARMS
    ]
    population.append(["state-optimal oracle", f"{sim.population_conversion(None):.2%}"])
    return "\n\n".join(
        [
            "Ground truth (`nexus.experiments.simulation`): conversion logit = archetype base + "
            "intensity (uniform 0.5-1) x adaptation effect + attribute effects; bold: each "
            "archetype's best adaptation.",
            table(
                ["archetype", "share", "base conversion", *ARMS],
                rows,
                "llr" + "r" * len(ARMS),
            ),
            "Expected conversion over the population, exact:",
            table(["served", "conversion"], population, "lr"),
        ]
    )


def run() -> Section:
    best_fixed = sim.best_fixed_adaptation()
    n_features = encoder().n_features
    names = [
        "state-optimal oracle",
        f"best fixed arm ({best_fixed})",
        "uniform A/B/n",
        "Thompson (Beta-Bernoulli)",
        *CONTEXTUAL,
    ]
    fixed_name = names[1]
    rate: dict[str, list[float]] = {name: [] for name in names}
    expected_rate: dict[str, list[float]] = {name: [] for name in names}
    regret: dict[str, dict[int, list[float]]] = {
        name: {c: [] for c in CHECKPOINTS} for name in names
    }
    optimal_share: dict[str, list[float]] = {name: [] for name in names}
    for seed in SEEDS:
        world = build_world(seed)
        runs = {names[0]: run_oracle(world), fixed_name: run_fixed(best_fixed, world)}
        for name, make in policies(seed, n_features).items():
            runs[name] = run_policy(make(), world)
        best_arm = np.argmax(world.probabilities, axis=1)
        tail = slice(VISITORS - 5_000, VISITORS)
        for name, outcome in runs.items():
            expected = outcome.expected(world)
            rate[name].append(float(outcome.converted.mean()))
            expected_rate[name].append(float(expected.mean()))
            lost = np.cumsum(world.optimal - expected)
            for checkpoint in CHECKPOINTS:
                regret[name][checkpoint].append(float(lost[checkpoint - 1]))
            optimal_share[name].append(float((outcome.served[tail] == best_arm[tail]).mean()))

    def diff(a: str, b: str) -> Interval:
        return Interval.of([x - y for x, y in zip(rate[a], rate[b], strict=True)])

    policy_rows = [
        [
            name,
            Interval.of(rate[name]).pct(),
            Interval.of(expected_rate[name]).pct(),
            *(Interval.of(regret[name][c]).count() for c in CHECKPOINTS),
            f"{np.mean(optimal_share[name]):.0%}",
        ]
        for name in names
    ]
    comparisons = []
    verdicts = {}
    for contextual in CONTEXTUAL:
        versus_uniform = diff(contextual, "uniform A/B/n")
        versus_fixed = diff(contextual, fixed_name)
        passed = versus_uniform.excludes_zero_above() and versus_fixed.excludes_zero_above()
        verdicts[contextual] = passed
        comparisons.append([f"{contextual} - uniform A/B/n", versus_uniform.pp()])
        comparisons.append([f"{contextual} - {fixed_name}", versus_fixed.pp()])
    comparisons.append(
        [
            "Thompson (Beta-Bernoulli) - uniform A/B/n",
            diff("Thompson (Beta-Bernoulli)", "uniform A/B/n").pp(),
        ]
    )
    bar_rows = [
        [
            f"{name} beats uniform and the best fixed arm, 95 % CI excluding zero",
            "**pass**" if verdicts[name] else "**FAIL**",
        ]
        for name in CONTEXTUAL
    ]
    setup = (
        f"{VISITORS:,} visitors x {len(SEEDS)} seeds ({', '.join(map(str, SEEDS))}); "
        f"arms: {', '.join(ARMS)}; rewards in batches of {REWARD_BATCH}; burn-in {BURN_IN} "
        f"per arm, exploration floor {MIN_SHARE:.0%} per arm (Thompson, linear Thompson "
        f"with {LINTS_DRAWS} posterior draws, v = 0.25, LinUCB alpha = 1); context: "
        f"{n_features} features (bias, observed 11-d emotion with noise sd "
        f"{sim.OBSERVATION_NOISE}, emotion_missing, returning, device, plan, country)."
    )
    markdown = "\n\n".join(
        [
            setup,
            _truth_markdown(best_fixed),
            "Per policy: mean over seeds with 95 % t-interval. *Conversion* is realised "
            "(common random numbers), *expected* the mean true probability of what was "
            "served; regret is expected conversions lost against the oracle after n "
            "visitors; *optimal* is the share of the last 5,000 visitors served their "
            "state-optimal adaptation.",
            table(
                [
                    "policy",
                    "conversion",
                    "expected",
                    *(f"regret @{c:,}" for c in CHECKPOINTS),
                    "optimal",
                ],
                policy_rows,
                "lrr" + "r" * len(CHECKPOINTS) + "r",
            ),
            "Differences in realised conversion rate, paired by seed (95 % t-interval):",
            table(["difference", "conversion rate"], comparisons, "lr"),
            table(["bar", "result"], bar_rows, "ll"),
        ]
    )
    summary = [
        f"{name}: conversion {Interval.of(rate[name]).pct()}, regret "
        f"{Interval.of(regret[name][VISITORS]).count()}"
        for name in names
    ]
    summary += [
        f"{name} vs uniform / best fixed: "
        f"{diff(name, 'uniform A/B/n').pp()} / {diff(name, fixed_name).pp()} → "
        f"{'pass' if verdicts[name] else 'FAIL'}"
        for name in CONTEXTUAL
    ]
    return Section(TITLE, markdown, summary)
