"""Evolution with bandit allocation finds good designs on a known fitness landscape."""

from __future__ import annotations

import random

import pytest

from nexus.evolution.genome import Design, DesignSpace
from nexus.evolution.search import ALL, Evolution, Settings

GENES = {f"g{i}": [str(v) for v in range(4)] for i in range(5)}  # 1,024 designs
SPACE = DesignSpace.build(GENES)


def rate(design: Design, best: tuple[int, ...] = (3, 1, 2, 0, 3)) -> float:
    """A landscape with an optimum and an interaction: g0 and g1 pay most together."""
    score = 0.02 + 0.01 * sum(d == b for d, b in zip(design, best, strict=True))
    if design[0] == best[0] and design[1] == best[1]:
        score += 0.03
    return score


OPTIMUM = rate((3, 1, 2, 0, 3))


def run(seed: int, visitors: int, settings: Settings) -> Evolution:
    world = random.Random(seed + 1000)
    evolution = Evolution(SPACE, settings, seed=seed)
    for _ in range(visitors):
        design = evolution.choose()
        evolution.record(design, world.random() < rate(design))
        if evolution.generation_done():
            evolution.advance()
    return evolution


def test_evolution_climbs_toward_the_optimum() -> None:
    settings = Settings(population=12, elite=3, visitors_per_generation=4000)
    evolution = run(seed=1, visitors=120_000, settings=settings)
    champion, arm = evolution.best()
    assert rate(champion) >= 0.8 * OPTIMUM
    assert arm.trials > 0
    first = evolution.history[0]
    assert max(rate(d) for d in first.designs) < rate(champion) or rate(champion) == OPTIMUM
    # Thompson allocation: the generation's best design got more visitors than its worst.
    done = evolution.history[-2]
    ranked = evolution.ranking(ALL, done)
    assert done.arm(ALL, ranked[0]).trials > done.arm(ALL, ranked[-1]).trials


def test_elites_survive_and_the_lineage_leads_back() -> None:
    settings = Settings(population=8, elite=2, visitors_per_generation=800)
    evolution = run(seed=4, visitors=8_000, settings=settings)
    for before, after in zip(evolution.history, evolution.history[1:], strict=False):
        top = evolution.ranking(ALL, before)[:2]
        assert all(d in after.designs for d in top)
        assert len(set(after.designs)) == len(after.designs) == 8
    champion, _ = evolution.best()
    lineage = evolution.lineage(champion)
    assert lineage[0][1] == champion
    assert lineage[-1][0] <= lineage[0][0]


def test_the_same_seed_replays_the_same_search() -> None:
    settings = Settings(population=6, elite=1, visitors_per_generation=300)
    a = run(seed=7, visitors=3000, settings=settings)
    b = run(seed=7, visitors=3000, settings=settings)
    assert [g.designs for g in a.history] == [g.designs for g in b.history]


def test_segments_keep_their_own_fitness_and_winners() -> None:
    """Anxious visitors convert on one design, excited ones on another: each segment's
    champion is its own, and both survive breeding."""
    space = DesignSpace.build({"tone": ["calm", "urgent", "plain"], "proof": ["on", "off"]})
    calm, urgent = (
        space.encode({"tone": "calm", "proof": "on"}),
        space.encode({"tone": "urgent", "proof": "off"}),
    )
    settings = Settings(
        population=6, elite=1, visitors_per_generation=6000, segments=("anxious", "excited")
    )
    evolution = Evolution(space, settings, seed=2)
    world = random.Random(5)
    for i in range(30_000):
        segment = "anxious" if i % 2 else "excited"
        design = evolution.choose(segment)
        good = calm if segment == "anxious" else urgent
        evolution.record(design, world.random() < (0.3 if design == good else 0.05), segment)
        if evolution.generation_done():
            evolution.advance()
    assert evolution.best("anxious")[0] == calm
    assert evolution.best("excited")[0] == urgent
    with pytest.raises(ValueError, match="unknown segment"):
        evolution.choose("bored")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"population": 1}, "at least 2"),
        ({"elite": 16}, "below the population"),
        ({"visitors_per_generation": 3}, "one visitor per design"),
        ({"mutation_rate": 1.5}, "probability"),
        ({"tournament": 0}, "at least 1"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(**kwargs)  # type: ignore[arg-type]
