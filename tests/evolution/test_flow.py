"""Adaptive flow: the flow definition, the step actions, the adapter and the simulator."""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import pytest

from nexus.evolution.flow import (
    ACTIONS,
    CONTINUE,
    INSERT_REASSURANCE,
    REORDER,
    SIGNUP_FLOW,
    SKIP_OPTIONAL,
    FlowAdapter,
    FlowError,
    FlowSpec,
    FlowSpecError,
    FlowWorld,
    Journey,
    allowed_actions,
    apply_action,
    serve,
)
from nexus.experiments.bandits import EMOTION_DIMS, LinearThompson, ThompsonBernoulli


def walk(spec: FlowSpec, *actions: str) -> Journey:
    journey = Journey.start(spec)
    for action in actions:
        journey = apply_action(spec, journey, action)[1]
    return journey


def reading(**values: float) -> tuple[float, ...]:
    return tuple(values.get(dim, 0.0) for dim in EMOTION_DIMS)


# --------------------------------------------------------------------------- the flow


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: FlowSpec(()), "at least one step"),
        (lambda: FlowSpec.build(["a", "b", "a"]), "repeated: a"),
        (lambda: FlowSpec.build(["a", {"key": "b", "optional": True}]), "cannot be optional"),
        (
            lambda: FlowSpec.build([{"key": "a", "group": "g"}, {"key": "b", "group": "g"}]),
            "cannot be reordered",
        ),
        (
            lambda: FlowSpec.build(
                [{"key": "a", "group": "g"}, "x", {"key": "b", "group": "g"}, "goal"]
            ),
            "must be consecutive",
        ),
        (lambda: FlowSpec.build([{"key": "a", "group": "g"}, "goal"]), "needs at least two"),
        (lambda: FlowSpec.build(["a", "goal"], reassurance="a"), "cannot also be a step"),
        (lambda: FlowSpec.build(["goal"], max_reassurances=-1), "max_reassurances"),
        (lambda: FlowSpec.build([" a", "goal"]), "surrounding spaces"),
        (lambda: FlowSpec.build(["", "goal"]), "non-empty"),
        (lambda: FlowSpec.build([{"key": "a", "skip": True}, "goal"]), "unknown field"),
        (lambda: FlowSpec.build([7, "goal"]), "must be a key"),  # type: ignore[list-item]
    ],
)
def test_an_invalid_flow_is_refused_with_a_clear_error(build: Any, message: str) -> None:
    with pytest.raises(FlowSpecError, match=message) as raised:
        build()
    assert isinstance(raised.value, ValueError)


def test_a_flow_offers_only_the_actions_its_steps_make_possible() -> None:
    assert FlowSpec.build(["a", "goal"]).actions == (CONTINUE,)
    assert FlowSpec.build(["a", "goal"], reassurance="r").actions == (
        CONTINUE,
        INSERT_REASSURANCE,
    )
    assert SIGNUP_FLOW.actions == ACTIONS


def test_the_actions_valid_at_each_position_of_the_signup_flow() -> None:
    spec = SIGNUP_FLOW
    assert allowed_actions(spec, walk(spec)) == (CONTINUE,)  # the offer admits no reassurance
    at_tour = walk(spec, CONTINUE)
    assert allowed_actions(spec, at_tour) == (CONTINUE, SKIP_OPTIONAL, INSERT_REASSURANCE)
    at_setup = walk(spec, CONTINUE, CONTINUE)
    assert allowed_actions(spec, at_setup) == (CONTINUE, INSERT_REASSURANCE, REORDER)
    reassured = walk(spec, CONTINUE, INSERT_REASSURANCE)
    assert allowed_actions(spec, reassured) == (CONTINUE, SKIP_OPTIONAL)  # one at most
    assert allowed_actions(spec, walk(spec, *[CONTINUE] * 5)) == ()


def test_each_action_changes_the_path_as_documented() -> None:
    spec = SIGNUP_FLOW
    at_tour = walk(spec, CONTINUE)
    assert apply_action(spec, at_tour, SKIP_OPTIONAL)[0] == "account"
    step, after = apply_action(spec, at_tour, INSERT_REASSURANCE)
    assert (step, after.pending[0]) == ("guarantee", "features")
    step, after = apply_action(spec, walk(spec, CONTINUE, CONTINUE), REORDER)
    assert (step, after.pending) == ("plan", ("account", "payment"))
    assert walk(spec, CONTINUE, SKIP_OPTIONAL).path == ("offer", "account")
    done = walk(spec, CONTINUE, CONTINUE, REORDER, CONTINUE, INSERT_REASSURANCE, CONTINUE)
    assert done.done
    assert done.path == ("offer", "features", "plan", "account", "guarantee", "payment")


def test_an_action_not_valid_here_is_refused() -> None:
    with pytest.raises(FlowError, match="not valid here"):
        apply_action(SIGNUP_FLOW, walk(SIGNUP_FLOW), SKIP_OPTIONAL)
    with pytest.raises(FlowError, match="journey is complete"):
        apply_action(SIGNUP_FLOW, walk(SIGNUP_FLOW, *[CONTINUE] * 5), CONTINUE)


def test_a_flow_and_a_journey_survive_json() -> None:
    assert FlowSpec.from_state(json.loads(json.dumps(SIGNUP_FLOW.to_state()))) == SIGNUP_FLOW
    adapter = FlowAdapter(SIGNUP_FLOW, seed=1)
    journey = adapter.decide(walk(SIGNUP_FLOW, CONTINUE), reading(joy=0.9)).journey
    assert Journey.from_state(json.loads(json.dumps(journey.to_state()))) == journey


# --------------------------------------------------------------------------- the adapter


def test_the_adapter_only_ever_takes_an_action_valid_at_the_position() -> None:
    specs = [
        SIGNUP_FLOW,
        FlowSpec.build(
            [
                {"key": "a", "optional": True},
                {"key": "b", "optional": True, "group": "g"},
                {"key": "c", "group": "g"},
                {"key": "d", "group": "g"},
                {"key": "goal", "reassure_before": False},
            ],
            reassurance="r",
            max_reassurances=2,
        ),
    ]
    rng = random.Random(3)
    for spec in specs:
        adapter = FlowAdapter(spec, seed=5, burn_in=0, n_draws=50)
        for _ in range(150):
            journey = Journey.start(spec)
            while not journey.done:
                emotion = [rng.random() for _ in range(8)] + [rng.uniform(-1, 1)] * 3
                decision = adapter.decide(journey, emotion)
                assert decision.action in allowed_actions(spec, journey)
                assert decision.step == apply_action(spec, journey, decision.action)[0]
                assert 0.0 < decision.propensity <= 1.0
                journey = decision.journey
            assert journey.reassurances <= spec.max_reassurances
            assert set(journey.path) - {spec.reassurance} <= set(spec.keys)
            adapter.learn(journey, converted=rng.random() < 0.2)


def test_a_decision_without_an_alternative_is_not_recorded() -> None:
    adapter = FlowAdapter(SIGNUP_FLOW, seed=1)
    decision = adapter.decide(Journey.start(SIGNUP_FLOW), None)
    assert (decision.action, decision.propensity, decision.journey.choices) == (CONTINUE, 1.0, ())


def test_the_adapter_learns_the_action_that_converts_in_each_emotional_context() -> None:
    """Joyful visitors convert when the optional step is skipped, fearful ones when it is
    shown: after a few hundred journeys the adapter prefers each one's action."""
    spec = FlowSpec.build(["intro", {"key": "tour", "optional": True}, "goal"])
    adapter = FlowAdapter(spec, seed=2, n_draws=200)
    world = random.Random(2)
    joyful, fearful = reading(joy=0.9, valence=0.7), reading(fear=0.9, valence=-0.5)
    at_tour = walk(spec, CONTINUE)
    for _ in range(600):
        emotion = joyful if world.random() < 0.5 else fearful
        decision = adapter.decide(at_tour, emotion)
        good = (decision.action == SKIP_OPTIONAL) == (emotion is joyful)
        journey = decision.journey
        while not journey.done:
            journey = apply_action(spec, journey, CONTINUE)[1]
        adapter.learn(journey, converted=world.random() < (0.6 if good else 0.2))
    policy = adapter.policy
    assert policy.probabilities(adapter.context(at_tour, joyful))[SKIP_OPTIONAL] > 0.9
    assert policy.probabilities(adapter.context(at_tour, fearful))[CONTINUE] > 0.9


def test_a_restored_adapter_continues_exactly_where_it_was() -> None:
    world = FlowWorld(seed=4, visitors=400)
    adapter = FlowAdapter(SIGNUP_FLOW, seed=9, n_draws=100)
    serve(world, adapter, visitors=300)
    restored = FlowAdapter.from_state(json.loads(json.dumps(adapter.to_state())))
    rest = FlowWorld(seed=5, visitors=200)
    first, second = serve(rest, adapter), serve(rest, restored)
    assert [j.actions for j in first.journeys] == [j.actions for j in second.journeys]
    assert adapter.to_state() == restored.to_state()


def test_the_adapter_refuses_what_does_not_fit_its_flow() -> None:
    with pytest.raises(FlowSpecError, match="arms"):
        FlowAdapter(SIGNUP_FLOW, policy=ThompsonBernoulli(["continue", "reorder"]))
    with pytest.raises(FlowSpecError, match="features"):
        FlowAdapter(SIGNUP_FLOW, policy=LinearThompson(SIGNUP_FLOW.actions, 3))
    adapter = FlowAdapter(SIGNUP_FLOW, seed=1)
    with pytest.raises(FlowError, match="11 numbers"):
        adapter.decide(walk(SIGNUP_FLOW, CONTINUE), [0.5, 0.5])
    with pytest.raises(FlowError, match="goal"):
        adapter.learn(walk(SIGNUP_FLOW, CONTINUE), converted=True)
    with pytest.raises(FlowError, match="unsupported"):
        FlowAdapter.from_state({"version": 99})


def test_a_non_contextual_policy_can_drive_the_flow() -> None:
    policy = ThompsonBernoulli(SIGNUP_FLOW.actions, seed=1)
    run = serve(FlowWorld(seed=1, visitors=300), FlowAdapter(SIGNUP_FLOW, policy=policy))
    assert policy.n_updates == sum(len(j.choices) for j in run.journeys)


# --------------------------------------------------------------------------- the simulator


def test_the_simulator_is_deterministic_given_its_seed() -> None:
    a, b, c = FlowWorld(7, 500), FlowWorld(7, 500), FlowWorld(8, 500)
    assert np.array_equal(a.luck, b.luck)
    assert np.array_equal(a.fixed(), b.fixed())
    assert a.observe(3, walk(SIGNUP_FLOW, CONTINUE)) == b.observe(3, walk(SIGNUP_FLOW, CONTINUE))
    assert not np.array_equal(a.luck, c.luck)
    runs = [serve(FlowWorld(7, 300), FlowAdapter(SIGNUP_FLOW, seed=1, n_draws=50)) for _ in "ab"]
    assert np.array_equal(runs[0].converted, runs[1].converted)


def test_frustration_builds_up_along_the_path_and_shows_in_the_reading() -> None:
    world = FlowWorld(1, 2000)
    anger = EMOTION_DIMS.index("anger")
    readings = [
        np.mean([world.observe(v, walk(SIGNUP_FLOW, *[CONTINUE] * k))[anger] for v in range(2000)])
        for k in (1, 3)
    ]
    assert readings[1] > readings[0] + 0.05


def test_a_visitor_converts_exactly_when_its_luck_is_below_its_path_probability() -> None:
    world = FlowWorld(2, 600)
    run = serve(world, FlowAdapter(SIGNUP_FLOW, seed=2, n_draws=50, burn_in=0))
    for visitor, journey in enumerate(run.journeys):
        if journey.done:
            probability = world.path_probability(journey.actions)[visitor]
            assert run.converted[visitor] == (world.luck[visitor] < probability)
        else:
            assert not run.converted[visitor]


def test_the_oracle_is_the_best_path_for_every_visitor_and_no_path_is_best_for_all() -> None:
    world = FlowWorld(3, 3000)
    paths = list(world.paths())
    by_path = np.array([world.path_probability(path) for path in paths])
    assert np.allclose(world.oracle(), by_path.max(axis=0))
    archetypes = np.array(world.archetypes)
    best = {
        archetype: int(np.argmax(by_path[:, archetypes == archetype].mean(axis=1)))
        for archetype in set(world.archetypes)
    }
    assert len(set(best.values())) >= 4  # each archetype wants another path
    assert 0.03 < world.fixed().mean() < 0.2  # a realistic funnel


def test_adaptive_flow_beats_the_designed_path_in_a_small_world() -> None:
    world = FlowWorld(seed=11, visitors=4000)
    run = serve(world, FlowAdapter(SIGNUP_FLOW, seed=11, n_draws=100))
    fixed = world.luck < world.fixed()  # the same visitors and draws on the designed path
    late = slice(2000, 4000)
    assert run.converted[late].mean() > fixed[late].mean() + 0.005
