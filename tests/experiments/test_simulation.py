"""The visitor simulator's world: reproducible, emotionally consistent, and with a ground
truth in which reading the emotion pays (the state-optimal choice beats every fixed arm)."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus.emotion.analyzer import EmotionAnalyzer
from nexus.emotion.models.taxonomy import PLUTCHIK
from nexus.experiments import simulation as sim
from nexus.experiments.simulation import (
    ADAPTATIONS,
    ARCHETYPES,
    CHAT_EVENT,
    DIMENSIONS,
    GOAL_EVENT,
    JOURNEY_STEPS,
    Simulation,
)

VALENCE = DIMENSIONS.index("valence")


# --- reproducibility -------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_world_whatever_the_order() -> None:
    first = list(Simulation(11).visitors(40))
    again = Simulation(11)
    assert again.visitor(37) == first[37]  # no dependence on earlier visitors
    assert list(again.visitors(40)) == first
    assert list(again.visitors(5, first=10)) == first[10:15]
    a, b = Simulation(11), Simulation(11)
    for visitor in first[:10]:
        assert a.opening(visitor) == b.opening(visitor)
        assert a.journey(visitor, "calm", {"pricing-test": "b"}) == b.journey(
            visitor, "calm", {"pricing-test": "b"}
        )
        assert a.observe(visitor) == b.observe(visitor)


def test_other_seeds_give_other_visitors_and_the_prefix_only_renames() -> None:
    one = [v.vector for v in Simulation(1).visitors(20)]
    two = [v.vector for v in Simulation(2).visitors(20)]
    assert one != two
    renamed = Simulation(1, id_prefix="run-b").visitor(3)
    original = Simulation(1).visitor(3)
    assert renamed.id == "run-b-3"
    assert original.id == "sim-3"
    assert renamed.vector == original.vector
    assert renamed.luck == original.luck


def test_bad_worlds_are_refused() -> None:
    with pytest.raises(ValueError, match="arrival_rate"):
        Simulation(0, arrival_rate=0)
    with pytest.raises(ValueError, match="archetype"):
        Simulation(0, archetype_weights={"bored": 1.0})  # type: ignore[dict-item]


# --- emotions --------------------------------------------------------------------------------


def test_profiles_are_led_by_their_defining_emotions() -> None:
    for archetype in ARCHETYPES:
        profile = dict(zip(DIMENSIONS, sim.PROFILES[archetype], strict=True))
        top = max(PLUTCHIK, key=profile.__getitem__)
        assert top in sim.DEFINING_EMOTIONS[archetype], archetype
        assert sim.register_of(sim.PROFILES[archetype]) == archetype
    assert sim.register_of(sim.SETTLED) == "curious"


def test_visitor_vectors_are_consistent_with_their_archetype() -> None:
    visitors = list(Simulation(5).visitors(600))
    assert {v.archetype for v in visitors} == set(ARCHETYPES)
    for archetype in ARCHETYPES:
        vectors = np.asarray([v.vector for v in visitors if v.archetype == archetype])
        mean = dict(zip(DIMENSIONS, vectors.mean(axis=0), strict=True))
        top = max(PLUTCHIK, key=mean.__getitem__)
        assert top in sim.DEFINING_EMOTIONS[archetype], (archetype, mean)
        expected_sign = np.sign(sim.PROFILES[archetype][VALENCE])
        assert np.sign(mean["valence"]) == expected_sign, archetype
    unhappy = [v.vector[VALENCE] for v in visitors if v.archetype in ("frustrated", "sad")]
    assert max(unhappy) < 0.0


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), index=st.integers(0, 10**6))
def test_every_visitor_lies_in_range_and_converts_with_a_probability(seed: int, index: int) -> None:
    visitor = Simulation(seed).visitor(index)
    plutchik, vad = visitor.vector[: len(PLUTCHIK)], visitor.vector[len(PLUTCHIK) :]
    assert all(0.0 <= v <= 1.0 for v in plutchik)
    assert all(-1.0 <= v <= 1.0 for v in vad)
    assert sim.INTENSITY_RANGE[0] <= visitor.intensity <= sim.INTENSITY_RANGE[1]
    assert 0.0 <= visitor.luck < 1.0
    probabilities = sim.conversion_probabilities(visitor, {"pricing-test": "b"})
    assert all(0.0 < p < 1.0 for p in probabilities.values())
    assert max(probabilities.values()) == sim.optimal_probability(visitor, {"pricing-test": "b"})


def test_the_observed_reading_is_the_latent_vector_plus_noise() -> None:
    simulation = Simulation(3)
    visitors = list(simulation.visitors(400))
    errors = np.asarray(
        [
            [simulation.observe(v)[d] - v.vector[i] for i, d in enumerate(DIMENSIONS)]
            for v in visitors
        ]
    )
    # Clipping at the range ends shrinks the spread a little, never widens it.
    assert 0.10 < float(errors[:, VALENCE].std()) <= sim.OBSERVATION_NOISE * 1.1
    assert abs(float(errors.mean())) < 0.03


def test_calm_settles_a_frustrated_visitor_and_urgency_does_not() -> None:
    start = sim.archetype_vector("frustrated")
    rng = np.random.default_rng(0)
    calmed, rushed = start, start
    for _ in range(4):
        calmed = sim.drift(calmed, "frustrated", "calm", 120.0, rng, start=start)
        rushed = sim.drift(rushed, "frustrated", "urgent", 120.0, rng, start=start)
    assert calmed[VALENCE] > start[VALENCE] + 0.3
    assert rushed[VALENCE] < start[VALENCE] + 0.1
    assert sim.register_of(calmed) != "frustrated"
    assert sim.register_of(rushed) == "frustrated"


# --- the ground truth ------------------------------------------------------------------------


def test_no_single_adaptation_is_best_for_every_state() -> None:
    best = {archetype: sim.best_adaptation_for(archetype) for archetype in ARCHETYPES}
    assert best == {
        "frustrated": "calm",
        "anxious": "reassuring",
        "excited": "urgent",
        "curious": "neutral",
        "sad": "reassuring",
    }
    assert best == sim.BEST_ADAPTATION


def test_the_state_optimal_choice_beats_every_fixed_arm_in_expectation() -> None:
    oracle = sim.population_conversion(None)
    fixed = {a: sim.population_conversion(a) for a in ADAPTATIONS}
    assert sim.best_fixed_adaptation() == max(fixed, key=fixed.__getitem__) == "reassuring"
    assert oracle > max(fixed.values()) + 0.015  # a gap a benchmark can resolve
    # The exact expectation agrees with the visitors the simulation draws.
    visitors = list(Simulation(9).visitors(4000))
    sampled_oracle = np.mean([sim.optimal_probability(v) for v in visitors])
    sampled_fixed = np.mean([sim.conversion_probability(v, "reassuring") for v in visitors])
    assert sampled_oracle == pytest.approx(oracle, abs=0.003)
    assert sampled_fixed == pytest.approx(fixed["reassuring"], abs=0.003)
    assert all(
        sim.optimal_probability(v) >= sim.conversion_probability(v, a)
        for v in visitors[:300]
        for a in ADAPTATIONS
    )


def test_experiment_variants_have_their_documented_effect() -> None:
    visitor = Simulation(4).visitor(0)
    control = sim.conversion_probability(visitor, "neutral", {"pricing-test": "a"})
    assert control == sim.conversion_probability(visitor, "neutral")
    cheaper = sim.conversion_probability(visitor, "neutral", {"pricing-test": "b"})
    assert cheaper > control
    truth = sim.DEFAULT_EXPERIMENTS[0]
    expected_lift = truth.price_lifts["b"] * visitor.preferences.price_sensitivity
    assert np.log(cheaper / (1 - cheaper)) - np.log(control / (1 - control)) == pytest.approx(
        expected_lift
    )
    assert truth.mean_lift("b") == pytest.approx(0.2)
    # Unknown experiments, variants and adaptations have no effect.
    assert sim.conversion_probability(visitor, "neutral", {"other": "b"}) == control
    assert sim.conversion_probability(visitor, "sparkly") == control


# --- journeys --------------------------------------------------------------------------------


def test_journeys_follow_the_truth_with_common_random_numbers() -> None:
    simulation = Simulation(21)
    visitors = list(simulation.visitors(3000))
    journeys = [simulation.journey(v, "calm") for v in visitors]
    for visitor, journey in zip(visitors, journeys, strict=True):
        assert journey.converted == (visitor.luck < journey.probability)
        events = [e["event"] for e in journey.events]
        assert (GOAL_EVENT in events) == journey.converted
        steps = [e for e in events if e in JOURNEY_STEPS]
        assert steps == list(JOURNEY_STEPS[1 : 1 + len(steps)])
        assert journey.reached == (steps[-1] if steps else JOURNEY_STEPS[0])
    rate = np.mean([j.converted for j in journeys])
    assert rate == pytest.approx(np.mean([j.probability for j in journeys]), abs=0.015)
    # Drop-off narrows the funnel step by step.
    reached = [sum(j.reached == s for j in journeys) for s in JOURNEY_STEPS]
    assert reached[0] > reached[1] > 0
    assert reached[3] > 0


def test_a_visit_is_well_formed_segment_messages_in_time_order() -> None:
    simulation = Simulation(8)
    visitor = next(v for v in simulation.visitors(200) if v.luck < 0.05)
    opening = simulation.opening(visitor)
    journey = simulation.journey(visitor, "urgent", {"pricing-test": "b"})
    messages = opening.events + journey.events
    assert [m["event"] for m in opening.events] == [JOURNEY_STEPS[0], CHAT_EVENT]
    assert opening.events[1]["properties"]["text"] == opening.text
    assert len({m["messageId"] for m in messages}) == len(messages)
    times = [datetime.fromisoformat(m["timestamp"]) for m in messages]
    assert times == sorted(times)
    for message in messages:
        assert message["type"] == "track"
        assert message["anonymousId"] == visitor.id
    for message in journey.events:
        assert message["properties"]["adaptation"] == "urgent"
        assert message["properties"]["pricing-test"] == "b"
    points = [p.at for p in journey.emotions]
    assert points == sorted(points)
    assert len(points) == 1 + sum(m["event"] in JOURNEY_STEPS for m in journey.events)


# --- texts -----------------------------------------------------------------------------------


def test_texts_vary() -> None:
    rng = np.random.default_rng(1)
    for archetype in ARCHETYPES:
        chats = [sim.compose_text(archetype, rng) for _ in range(200)]
        assert len(set(chats)) > 150, archetype
        reviews = {sim.compose_text(archetype, rng, "review") for _ in range(100)}
        assert len(reviews) > 40, archetype
        assert all(text and "{" not in text for text in chats)


@pytest.fixture(scope="module")
def edge_readings() -> dict[str, np.ndarray]:
    """The edge emotion model's 11-d readings of 300 texts per archetype."""
    analyzer = EmotionAnalyzer()
    rng = np.random.default_rng(2)
    readings: dict[str, np.ndarray] = {}
    for archetype in ARCHETYPES:
        texts = [sim.compose_text(archetype, rng) for _ in range(300)]
        vectors = analyzer.analyze(texts, mode="edge").vectors
        readings[archetype] = np.asarray([v.as_array() for v in vectors])
    return readings


def test_nexus_reads_the_register_of_the_texts(edge_readings: dict[str, np.ndarray]) -> None:
    mean = {a: dict(zip(DIMENSIONS, r.mean(axis=0), strict=True)) for a, r in edge_readings.items()}
    assert mean["frustrated"]["valence"] < mean["excited"]["valence"] - 0.15
    assert mean["sad"]["valence"] < mean["excited"]["valence"] - 0.15
    # Each archetype's defining emotion reads higher in its texts than in the others' mean.
    for archetype, emotion in (
        ("frustrated", "anger"),
        ("anxious", "fear"),
        ("excited", "joy"),
        ("sad", "sadness"),
    ):
        others = np.mean([mean[a][emotion] for a in ARCHETYPES if a != archetype])
        assert mean[archetype][emotion] > others + 0.1, (archetype, emotion)
