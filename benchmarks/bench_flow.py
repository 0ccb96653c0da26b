"""Adaptive flow: does changing each visitor's path by its emotion beat the designed funnel?

Offline, in the simulator of :mod:`nexus.evolution.flow` (:class:`FlowWorld`): a five-step
trial sign-up funnel (offer, an optional feature tour, account form and plan picker in a
reorderable group, payment) with a reassurance step that may be inserted. Visitors of five
emotional archetypes get frustrated, worried or convinced along the path; the adapter reads
their noisy emotion before each step.

* Common random numbers: a visitor has one uniform draw and converts iff it is below the
  probability of the path it was served, whatever served it; so two policies' conversions
  differ only where their paths do, and differences are paired by seed (same visitors,
  same draws, same observation noise).
* The designed path (``continue`` everywhere) and the oracle (the best action at every
  position knowing the visitor's hidden state, by dynamic programming) are exact
  probabilities; so is the *best static path*, the one sequence of actions that is best
  for the whole population, picked in hindsight from the truth (no policy could know it).
* Learners start from nothing and learn online; rewards (the funnel outcome of every
  decision of a journey) arrive in batches of :data:`REWARD_BATCH` visitors. Their figures
  include the cost of learning; the second half of the visitors shows what they learnt.
* Uncertainty: each figure is the mean over :data:`SEEDS` independent worlds with a 95 %
  Student-t interval; differences are t-intervals of the per-seed paired differences.

Seeds run in parallel processes (one per usable core); results do not depend on it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from benchmarks.bench_bandits import Interval
from benchmarks.report import Section, table
from nexus.evolution.flow import (
    ACTIONS,
    CONTINUE,
    SIGNUP_FLOW,
    FlowAdapter,
    FlowRun,
    FlowWorld,
    Journey,
    apply_action,
    serve,
)
from nexus.experiments import simulation as sim
from nexus.experiments.bandits import ThompsonBernoulli

TITLE = "Adaptive flow: per-visitor funnel paths in the simulator"
VISITORS = 20_000
SEEDS: tuple[int, ...] = tuple(range(1, 25))
REWARD_BATCH = 100
N_DRAWS = 500  # posterior draws estimating linear Thompson's allocation probabilities
BURN_IN = 20
MIN_SHARE = 0.01
TRUTH_SEED = 0
TRUTH_VISITORS = 200_000

FIXED = "designed path (fixed)"
ADAPTIVE = "adaptive (linear Thompson, emotion + position)"
POSITION_ONLY = "position-only bandit (linear Thompson, no emotion)"
NON_CONTEXTUAL = "non-contextual bandit (Beta-Bernoulli Thompson)"
STATIC = "best static path (hindsight)"
ORACLE = "oracle (hidden state known)"
NAMES = (FIXED, ADAPTIVE, POSITION_ONLY, NON_CONTEXTUAL, STATIC, ORACLE)
LEARNERS = (ADAPTIVE, POSITION_ONLY, NON_CONTEXTUAL)


@dataclass(frozen=True)
class SeedResult:
    """One world's figures: conversion per policy, all visitors and the second half."""

    conversion: dict[str, float]
    late: dict[str, float]
    # Second half, per archetype: (visitors, conversions) per policy in (FIXED, ADAPTIVE,
    # ORACLE), and the adaptive adapter's choices per action.
    by_archetype: dict[str, dict[str, tuple[int, int]]]
    choices: dict[str, dict[str, int]]


def shown(actions: Sequence[str]) -> str:
    """The steps a sequence of actions shows, ``offer > features > ...``."""
    journey = Journey.start(SIGNUP_FLOW)
    for action in actions:
        journey = apply_action(SIGNUP_FLOW, journey, action)[1]
    return " > ".join(journey.path)


def best_static_path(world: FlowWorld, visitors: np.ndarray | None = None) -> tuple[str, ...]:
    """The action sequence with the highest expected conversion (of some visitors)."""
    mask = slice(None) if visitors is None else visitors
    return max(world.paths(), key=lambda path: float(world.path_probability(path)[mask].mean()))


def measure(seed: int, static: tuple[str, ...]) -> SeedResult:
    world = FlowWorld(seed, VISITORS)
    luck = world.luck
    converted = {
        FIXED: luck < world.fixed(),
        STATIC: luck < world.path_probability(static),
        ORACLE: luck < world.oracle(),
    }
    runs: dict[str, FlowRun] = {
        ADAPTIVE: serve(
            world,
            FlowAdapter(
                SIGNUP_FLOW, seed=seed, n_draws=N_DRAWS, burn_in=BURN_IN, min_share=MIN_SHARE
            ),
            reward_batch=REWARD_BATCH,
        ),
        POSITION_ONLY: serve(
            world,
            FlowAdapter(
                SIGNUP_FLOW, seed=seed, n_draws=N_DRAWS, burn_in=BURN_IN, min_share=MIN_SHARE
            ),
            reward_batch=REWARD_BATCH,
            emotion=False,
        ),
        NON_CONTEXTUAL: serve(
            world,
            FlowAdapter(
                SIGNUP_FLOW,
                policy=ThompsonBernoulli(
                    SIGNUP_FLOW.actions, seed=seed, burn_in=BURN_IN, min_share=MIN_SHARE
                ),
            ),
            reward_batch=REWARD_BATCH,
        ),
    }
    converted.update({name: run.converted for name, run in runs.items()})
    late = slice(VISITORS // 2, VISITORS)
    archetypes = np.array(world.archetypes)
    by_archetype: dict[str, dict[str, tuple[int, int]]] = {}
    choices: dict[str, dict[str, int]] = {}
    adaptive = runs[ADAPTIVE]
    for archetype in sim.ARCHETYPES:
        members = archetypes[late] == archetype
        by_archetype[archetype] = {
            name: (int(members.sum()), int(converted[name][late][members].sum()))
            for name in (FIXED, ADAPTIVE, ORACLE)
        }
        counts = dict.fromkeys(ACTIONS, 0)
        for index in np.flatnonzero(members) + late.start:
            for choice in adaptive.journeys[index].choices:
                counts[choice.action] += 1
        choices[archetype] = counts
    return SeedResult(
        conversion={name: float(c.mean()) for name, c in converted.items()},
        late={name: float(c[late].mean()) for name, c in converted.items()},
        by_archetype=by_archetype,
        choices=choices,
    )


def _truth_markdown(world: FlowWorld, static: tuple[str, ...]) -> str:
    fixed, oracle = world.fixed(), world.oracle()
    archetypes = np.array(world.archetypes)
    rows = []
    for archetype in sim.ARCHETYPES:
        members = archetypes == archetype
        best = best_static_path(world, members)
        rows.append(
            [
                archetype,
                f"{members.mean():.0%}",
                f"{fixed[members].mean():.2%}",
                f"{world.path_probability(static)[members].mean():.2%}",
                f"{shown(best)}: {world.path_probability(best)[members].mean():.2%}",
                f"{oracle[members].mean():.2%}",
            ]
        )
    rows.append(
        [
            "**everyone**",
            "100%",
            f"{fixed.mean():.2%}",
            f"{world.path_probability(static).mean():.2%}",
            "",
            f"{oracle.mean():.2%}",
        ]
    )
    return "\n\n".join(
        [
            f"Ground truth, expected conversion over {len(world.luck):,} simulated visitors "
            f"(seed {TRUTH_SEED}). Designed path: {shown([CONTINUE] * len(SIGNUP_FLOW.steps))}. "
            f"Best static path for everyone: {shown(static)}. Each archetype's own best "
            "static path differs: no change to the path suits every visitor.",
            table(
                [
                    "archetype",
                    "share",
                    "designed path",
                    "best static path",
                    "archetype's best static path",
                    "oracle",
                ],
                rows,
                "lrrrlr",
            ),
        ]
    )


def run() -> Section:
    truth = FlowWorld(TRUTH_SEED, TRUTH_VISITORS)
    static = best_static_path(truth)
    workers = max(1, min(len(SEEDS), len(os.sched_getaffinity(0))))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(measure, SEEDS, [static] * len(SEEDS)))

    def values(name: str, late: bool = False) -> list[float]:
        return [(r.late if late else r.conversion)[name] for r in results]

    def diff(a: str, b: str, late: bool = False) -> Interval:
        return Interval.of([x - y for x, y in zip(values(a, late), values(b, late), strict=True)])

    policy_rows = [
        [name, Interval.of(values(name)).pct(), Interval.of(values(name, late=True)).pct()]
        for name in NAMES
    ]
    pairs = [
        (ADAPTIVE, FIXED),
        (ADAPTIVE, POSITION_ONLY),
        (ADAPTIVE, NON_CONTEXTUAL),
        (ADAPTIVE, STATIC),
        (ORACLE, ADAPTIVE),
    ]
    diff_rows = [[f"{a} - {b}", diff(a, b).pp(), diff(a, b, late=True).pp()] for a, b in pairs]
    bar = diff(ADAPTIVE, FIXED)
    passed = bar.excludes_zero_above()

    archetype_rows = []
    for archetype in sim.ARCHETYPES:
        cells = []
        for name in (FIXED, ADAPTIVE, ORACLE):
            visitors = sum(r.by_archetype[archetype][name][0] for r in results)
            conversions = sum(r.by_archetype[archetype][name][1] for r in results)
            cells.append(f"{conversions / visitors:.2%}")
        counts = {a: sum(r.choices[archetype][a] for r in results) for a in ACTIONS}
        total = sum(counts.values()) or 1
        mix = ", ".join(f"{a} {counts[a] / total:.0%}" for a in ACTIONS if counts[a])
        archetype_rows.append([archetype, *cells, mix])

    features = len(FlowAdapter(SIGNUP_FLOW, seed=0).feature_names)
    setup = (
        f"{VISITORS:,} visitors x {len(SEEDS)} seeds ({SEEDS[0]}-{SEEDS[-1]}); flow: "
        f"{', '.join(SIGNUP_FLOW.keys)} (features optional; account and plan reorderable), "
        f"reassurance '{SIGNUP_FLOW.reassurance}' at most once; actions: "
        f"{', '.join(SIGNUP_FLOW.actions)}. Learners: burn-in {BURN_IN} per action, "
        f"exploration floor {MIN_SHARE:.0%}, rewards in batches of {REWARD_BATCH} visitors, "
        f"every decision of a journey rewarded with its conversion; linear Thompson v = 0.25 "
        f"with {N_DRAWS} posterior draws over {features} "
        f"features (bias, 11-d emotion read with noise sd {sim.OBSERVATION_NOISE}, "
        "emotion_missing, progress, reassured, next step)."
    )
    markdown = "\n\n".join(
        [
            setup,
            _truth_markdown(truth, static),
            "Conversion per policy: mean over seeds with 95 % t-interval, over all visitors "
            "(learning included) and over the second half (what was learnt).",
            table(["policy", "conversion", "second half"], policy_rows, "lrr"),
            "Differences in conversion, paired by seed (95 % t-interval):",
            table(["difference", "all visitors", "second half"], diff_rows, "lrr"),
            "Second half by hidden archetype (pooled over seeds), and the adaptive "
            "adapter's choices where it had one:",
            table(
                ["archetype", "designed path", "adaptive", "oracle", "adaptive's choices"],
                archetype_rows,
                "lrrrl",
            ),
            table(
                ["bar", "result"],
                [
                    [
                        "adaptive beats the designed path, all visitors, 95 % CI excluding zero",
                        f"**{'pass' if passed else 'FAIL'}** ({bar.pp()})",
                    ]
                ],
                "ll",
            ),
        ]
    )
    summary = [f"{name}: {Interval.of(values(name)).pct()}" for name in NAMES]
    summary.append(
        f"adaptive - designed path: {bar.pp()} -> {'pass' if passed else 'FAIL'}; "
        f"second half {diff(ADAPTIVE, FIXED, late=True).pp()}"
    )
    return Section(TITLE, markdown, summary)
