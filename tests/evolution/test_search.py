"""Evolution with bandit allocation finds good designs on a known fitness landscape, tells
the best apart before promotion, survives a JSON round trip and takes recounted counts."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from nexus.evolution.genome import Design, DesignSpace
from nexus.evolution.search import ALL, Evolution, Settings

GENES = {f"g{i}": [str(v) for v in range(4)] for i in range(5)}  # 1,024 designs
SPACE = DesignSpace.build(GENES)
Rate = Callable[[Design, str | None], float]


def rate(design: Design, segment: str | None = None, best: Design = (3, 1, 2, 0, 3)) -> float:
    """A landscape with an optimum and an interaction: g0 and g1 pay most together."""
    score = 0.02 + 0.01 * sum(d == b for d, b in zip(design, best, strict=True))
    if design[0] == best[0] and design[1] == best[1]:
        score += 0.03
    return score


OPTIMUM = rate((3, 1, 2, 0, 3))


def drive(
    evolution: Evolution,
    visitors: int,
    *,
    seed: int,
    truth: Rate = rate,
    segments: Sequence[str | None] = (None,),
    batch: int = 200,
) -> None:
    """Serve ``visitors`` in batches (outcomes reported per batch), advancing when due."""
    world = np.random.default_rng(seed)
    left = visitors
    while left > 0 and evolution.phase != "done":
        if evolution.generation_done():
            evolution.advance()
            continue
        n = min(batch, left)
        for segment in segments:
            for design, trials in evolution.allocate(n // len(segments), segment).items():
                converted = int(world.binomial(trials, truth(design, segment)))
                evolution.record_many(design, trials, converted, segment)
        left -= n


def test_evolution_climbs_toward_the_optimum() -> None:
    settings = Settings(population=12, elite=3, visitors_per_generation=4000)
    evolution = Evolution(SPACE, settings, seed=1)
    drive(evolution, 60_000, seed=11)
    champion, arm = evolution.best()
    assert rate(champion) >= 0.8 * OPTIMUM
    assert arm.trials > 0
    first = evolution.history[0]
    assert max(rate(d) for d in first.designs) < rate(champion) or rate(champion) == OPTIMUM
    # Thompson allocation: the generation's best design got more visitors than its worst.
    done = evolution.history[-2]
    ranked = evolution.ranking(ALL, done)
    assert done.arm(ALL, ranked[0]).trials > done.arm(ALL, ranked[-1]).trials


def test_one_visitor_at_a_time_serves_and_records() -> None:
    settings = Settings(population=6, elite=1, visitors_per_generation=300)
    evolution = Evolution(SPACE, settings, seed=2)
    world = random.Random(3)
    for _ in range(900):
        design = evolution.choose()
        assert design in evolution.current.designs
        evolution.record(design, world.random() < rate(design))
        if evolution.generation_done():
            evolution.advance()
    assert len(evolution.history) == 4
    assert sum(g.visitors for g in evolution.history) == 900


def test_the_plain_search_without_a_model_still_climbs() -> None:
    settings = Settings(population=12, elite=3, visitors_per_generation=4000, surrogate=False)
    evolution = Evolution(SPACE, settings, seed=1)
    drive(evolution, 60_000, seed=11)
    assert rate(evolution.best()[0]) > max(rate(d) for d in evolution.history[0].designs)


def test_elites_survive_and_the_lineage_leads_back() -> None:
    settings = Settings(population=8, elite=2, visitors_per_generation=800)
    evolution = Evolution(SPACE, settings, seed=4)
    for _ in range(8):
        drive(evolution, 800, seed=len(evolution.history))
        evolution.advance()
        # The best two designs known when breeding are carried over unchanged.
        top = evolution.ranking(ALL, designs=evolution.measured())[:2]
        assert all(evolution.current.parents[d] == (d,) for d in top)
        assert len(set(evolution.current.designs)) == len(evolution.current.designs) == 8
    champion, _ = evolution.best()
    lineage = evolution.lineage(champion)
    assert lineage[0][1] == champion
    assert lineage[-1][0] <= lineage[0][0]


def test_the_same_seed_replays_the_same_search() -> None:
    settings = Settings(population=6, elite=1, visitors_per_generation=300)
    a, b = Evolution(SPACE, settings, seed=7), Evolution(SPACE, settings, seed=7)
    drive(a, 3000, seed=1)
    drive(b, 3000, seed=1)
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

    def truth(design: Design, segment: str | None) -> float:
        return 0.3 if design == (calm if segment == "anxious" else urgent) else 0.05

    evolution = Evolution(space, settings, seed=2)
    drive(evolution, 30_000, seed=5, truth=truth, segments=("anxious", "excited"))
    assert evolution.best("anxious")[0] == calm
    assert evolution.best("excited")[0] == urgent
    with pytest.raises(ValueError, match="unknown segment"):
        evolution.choose("bored")


# -- identification ---------------------------------------------------------------------------


def identify_settings(**changes: object) -> Settings:
    base: dict[str, object] = {
        "population": 8,
        "elite": 2,
        "visitors_per_generation": 2000,
        "generations": 4,
        "identify_top": 3,
        "identify_visitors": 9000,
    }
    return Settings(**{**base, **changes})  # type: ignore[arg-type]


def test_identification_follows_the_search_and_names_a_champion() -> None:
    evolution = Evolution(SPACE, identify_settings(), seed=5)
    phases = []
    while evolution.phase != "done":
        phases.append(evolution.phase)
        drive(evolution, 1000, seed=len(phases))
    assert phases[0] == "search"
    assert "identify" in phases
    assert phases.index("identify") > phases.index("search")
    identify = evolution.history[-1]
    # Identification started after the 4 search generations had their 2,000 visitors each.
    assert [g.visitors for g in evolution.history[:-1]] == [2000] * 4
    assert identify.phase == "identify"
    assert identify.number == 4
    assert identify.visitors == 9000
    candidates = evolution.candidates()
    assert identify.designs == candidates
    assert len(candidates) == 3
    searched = {d for g in evolution.history[:-1] for d in g.designs}
    assert set(candidates) <= searched
    # Identification spent its visitors only on the candidates.
    assert {d for (_, d), arm in identify.arms.items() if arm.trials} <= set(candidates)

    champion = evolution.champion()
    chances = evolution.probability_best()
    assert set(chances) == set(candidates)
    assert sum(chances.values()) == pytest.approx(1.0)
    assert champion.design == max(chances, key=lambda d: chances[d])
    assert champion.probability_best == chances[champion.design] > 0.5
    assert champion.identification.trials > 0
    assert champion.pooled.trials > champion.identification.trials
    low, high = champion.interval
    assert low < rate(champion.design) < high
    assert rate(champion.design) >= 0.8 * OPTIMUM
    assert evolution.best() == (champion.design, champion.pooled)
    # Done: nothing to advance, every visitor sees the champion.
    assert not evolution.generation_done()
    assert evolution.choose() == champion.design
    assert evolution.allocate(50) == {champion.design: 50}
    with pytest.raises(ValueError, match="done"):
        evolution.advance()


def test_top_two_sampling_keeps_measuring_the_challengers() -> None:
    """Plain Thompson gives nearly every visitor to a clear leader; top-two Thompson
    gives it about half and spends the rest on the closest challengers."""
    shares = {}
    for top_two in (1.0, 0.5):
        evolution = Evolution(SPACE, identify_settings(top_two=top_two), seed=5)
        drive(evolution, 8000, seed=1)
        evolution.start_identification(k=3, visitors=10_000)
        assert evolution.phase == "identify"
        leader = evolution.ranking(ALL, designs=evolution.candidates())[0]
        allocation = evolution.allocate(10_000)
        assert set(allocation) <= set(evolution.candidates())
        assert sum(allocation.values()) == 10_000
        shares[top_two] = allocation.get(leader, 0) / 10_000
    assert 0.45 <= shares[0.5] <= 0.8
    assert shares[0.5] < shares[1.0]


def test_identification_can_be_asked_for_and_finished_early() -> None:
    evolution = Evolution(SPACE, identify_settings(generations=0), seed=6)
    drive(evolution, 5000, seed=2)
    assert evolution.phase == "search"
    bred = evolution.advance()  # bred but never served: identification drops it
    evolution.start_identification(k=2, visitors=1000)
    assert bred not in evolution.history
    assert len(evolution.candidates()) == 2
    with pytest.raises(ValueError, match="phase 'identify'"):
        evolution.start_identification()
    champions = evolution.finish()  # before the budget is spent
    assert evolution.phase == "done"
    assert champions[ALL].design in evolution.candidates()
    assert champions[ALL].identification.trials == 0
    assert champions[ALL].interval == (0.0, 1.0)


def test_each_segment_identifies_its_own_champion() -> None:
    space = DesignSpace.build({"tone": ["calm", "urgent", "plain"], "proof": ["on", "off"]})
    calm, urgent = (
        space.encode({"tone": "calm", "proof": "on"}),
        space.encode({"tone": "urgent", "proof": "off"}),
    )

    def truth(design: Design, segment: str | None) -> float:
        return 0.3 if design == (calm if segment == "anxious" else urgent) else 0.05

    settings = Settings(
        population=4,
        elite=1,
        visitors_per_generation=2000,
        generations=3,
        identify_top=2,
        identify_visitors=4000,
        segments=("anxious", "excited"),
    )
    evolution = Evolution(space, settings, seed=3)
    drive(evolution, 20_000, seed=4, truth=truth, segments=("anxious", "excited"))
    assert evolution.phase == "done"
    champions = evolution.champions()
    assert set(champions) == {ALL, "anxious", "excited"}
    assert champions["anxious"].design == calm
    assert champions["excited"].design == urgent
    assert champions["anxious"].probability_best > 0.9


def test_asking_for_the_probability_does_not_disturb_the_search() -> None:
    settings = identify_settings()
    a, b = Evolution(SPACE, settings, seed=8), Evolution(SPACE, settings, seed=8)
    drive(a, 9000, seed=3)
    drive(b, 9000, seed=3)
    first = a.probability_best()
    assert a.probability_best() == first  # seeded: the same evidence, the same answer
    drive(a, 6000, seed=4)
    drive(b, 6000, seed=4)
    assert a.to_state() == b.to_state()


# -- state ------------------------------------------------------------------------------------


def round_trip(evolution: Evolution, settings: Settings) -> Evolution:
    state = json.loads(json.dumps(evolution.to_state()))
    return Evolution.from_state(evolution.space, settings, state)


@pytest.mark.parametrize("visitors", [1300, 9500, 20_000])  # mid-search, identifying, done
def test_a_restored_search_continues_exactly_like_the_original(visitors: int) -> None:
    settings = identify_settings()
    original = Evolution(SPACE, settings, seed=9)
    drive(original, visitors, seed=1)
    restored = round_trip(original, settings)
    assert restored.phase == original.phase
    assert restored.to_state() == original.to_state()
    assert [g.designs for g in restored.history] == [g.designs for g in original.history]
    assert restored.best() == original.best()
    # The same future: single choices, batches and breeding.
    assert [original.choose() for _ in range(50)] == [restored.choose() for _ in range(50)]
    drive(original, 6000, seed=2)
    drive(restored, 6000, seed=2)
    assert restored.to_state() == original.to_state()
    assert restored.champion() == original.champion()


def test_a_segmented_search_round_trips() -> None:
    settings = identify_settings(segments=("anxious", "excited"))
    original = Evolution(SPACE, settings, seed=10)
    drive(original, 7000, seed=1, segments=("anxious", "excited", None))
    restored = round_trip(original, settings)
    for segment in ("anxious", "excited", None):
        assert original.choose(segment) == restored.choose(segment)
    drive(original, 9000, seed=2, segments=("anxious", "excited"))
    drive(restored, 9000, seed=2, segments=("anxious", "excited"))
    assert restored.to_state() == original.to_state()


def test_a_state_that_does_not_fit_is_refused() -> None:
    settings = identify_settings()
    state = Evolution(SPACE, settings, seed=1).to_state()
    with pytest.raises(ValueError, match="segments"):
        Evolution.from_state(SPACE, identify_settings(segments=("anxious",)), state)
    with pytest.raises(ValueError, match="genes"):
        Evolution.from_state(DesignSpace.build({"x": ["a", "b"]}), settings, state)
    with pytest.raises(ValueError, match="version"):
        Evolution.from_state(SPACE, settings, {**state, "version": 99})


# -- counts from outside ------------------------------------------------------------------------


def test_set_counts_overwrites_an_arm_from_the_source_of_truth() -> None:
    settings = Settings(population=4, elite=1, visitors_per_generation=1000, segments=("calm",))
    evolution = Evolution(SPACE, settings, seed=11)
    design, other = evolution.current.designs[:2]
    evolution.record_many(design, 30, 3, "calm")
    evolution.set_counts(0, ALL, design, 500, 40)
    evolution.set_counts(0, "calm", design, 200, 10)
    evolution.set_counts(0, ALL, other, 100, 1)
    evolution.set_counts(0, ALL, other, 100, 1)  # the same recount twice changes nothing
    arm = evolution.current.arm(ALL, design)
    assert (arm.trials, arm.conversions) == (500, 40)
    assert evolution.pooled(ALL, design) == arm
    assert evolution.pooled("calm", design).trials == 200
    assert evolution.current.visitors == 600  # everyone's arms
    evolution.record(design, True)  # the in-memory path still adds on top
    assert evolution.pooled(ALL, design).conversions == 41
    assert evolution.current.visitors == 601
    assert evolution.ranking(designs=[other, design])[0] == design


def test_set_counts_on_an_earlier_generation_refits_the_model() -> None:
    settings = Settings(population=6, elite=1, visitors_per_generation=3000)
    evolution = Evolution(SPACE, settings, seed=12)
    drive(evolution, 3000, seed=1)
    evolution.advance()
    first = evolution.history[0]
    loser = evolution.ranking(ALL, first)[-1]
    probes = [d for d in SPACE.neighbours(loser) if evolution.pooled(ALL, d).trials == 0]
    before = {d: evolution.fitness(ALL, d) for d in probes}
    # Late conversions arrive for the first generation's worst design: the model learns
    # that its genes pay, so designs one gene away, never served, are predicted higher.
    evolution.set_counts(0, ALL, loser, 3000, 900)
    assert evolution.ranking(ALL, first)[0] == loser
    after = {d: evolution.fitness(ALL, d) for d in probes}
    assert len(probes) > 10
    assert all(after[d] > before[d] for d in probes)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda e, d: e.set_counts(0, ALL, d, 5, 6), "between 0 and trials"),
        (lambda e, d: e.set_counts(3, ALL, d, 5, 1), "no generation 3"),
        (lambda e, d: e.set_counts(0, "bored", d, 5, 1), "unknown segment"),
        (lambda e, d: e.set_counts(0, ALL, (9, 9, 9, 9, 9), 5, 1), "not in generation 0"),
        (lambda e, d: e.record_many(d, 2, 3), "between 0 and trials"),
        (lambda e, d: e.allocate(-1), "at least 0"),
    ],
)
def test_bad_counts_are_refused(call: Callable[[Evolution, Design], None], message: str) -> None:
    evolution = Evolution(SPACE, Settings(population=4, elite=1), seed=1)
    with pytest.raises(ValueError, match=message):
        call(evolution, evolution.current.designs[0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"population": 1}, "at least 2"),
        ({"elite": 16}, "below the population"),
        ({"visitors_per_generation": 3}, "one visitor per design"),
        ({"mutation_rate": 1.5}, "probability"),
        ({"tournament": 0}, "at least 1"),
        ({"generations": -1}, "generations"),
        ({"identify_top": 1}, "identify_top"),
        ({"top_two": 2.0}, "top_two"),
        ({"epistasis": -0.1}, "epistasis"),
        ({"segments": ("a", "a")}, "unique"),
        ({"segments": (ALL,)}, "unique"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(**kwargs)  # type: ignore[arg-type]


def test_while_searching_the_leader_is_weighed_against_the_runners_up() -> None:
    evolution = Evolution(SPACE, identify_settings(identify_top=3), seed=13)
    drive(evolution, 4000, seed=1)
    assert evolution.phase == "search"
    leader = evolution.champion()
    assert leader.design == evolution.best()[0]
    top = evolution.ranking(ALL, designs=evolution.measured())[:3]
    assert leader.probability_best == evolution.probability_best(ALL, top)[leader.design]
    assert 0 < leader.probability_best < 1
    assert leader.identification.trials == 0
    assert evolution.champions() == {}


def test_designs_a_later_pin_rules_out_are_never_promoted() -> None:
    settings = identify_settings(generations=0)
    evolution = Evolution(SPACE, settings, seed=14)
    drive(evolution, 6000, seed=1)
    leader = evolution.best()[0]
    value = str((leader[0] + 1) % 4)  # pin the leader's first gene to another value
    pinned = DesignSpace.build(GENES, pins={"g0": value})
    restored = Evolution.from_state(pinned, settings, json.loads(json.dumps(evolution.to_state())))
    assert leader in restored.measured()  # the genealogy keeps it
    assert pinned.valid(restored.best()[0])
    assert pinned.valid(restored.champion().design)
    restored.start_identification(k=3, visitors=0)
    assert restored.candidates()
    assert all(pinned.valid(d) for d in restored.candidates())
    assert pinned.valid(restored.finish()[ALL].design)
