"""Bandit policies: one contract suite over every policy, then each policy's own behaviour."""

from __future__ import annotations

import doctest
import json
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from scipy import integrate, special, stats

from nexus.emotion.models.taxonomy import PLUTCHIK
from nexus.experiments import bandits
from nexus.experiments.bandits import (
    EMOTION_DIMS,
    Context,
    ContextEncoder,
    LinearThompson,
    LinUCB,
    Policy,
    ThompsonBernoulli,
    UniformPolicy,
    policy_from_state,
    prob_best_beta,
)

ARMS = ("calm", "urgent", "neutral")
ENCODER = ContextEncoder(attributes=["returning"], categories={"device": ["mobile", "desktop"]})
D = ENCODER.n_features


def random_context(rng: np.random.Generator) -> Context:
    emotion = None
    if rng.random() < 0.9:
        emotion = {dim: float(rng.random()) for dim in PLUTCHIK}
        emotion |= {dim: float(rng.uniform(-1, 1)) for dim in ("valence", "arousal", "dominance")}
    attributes = {
        "returning": bool(rng.random() < 0.5),
        "device": ["mobile", "desktop", "tablet"][int(rng.integers(0, 3))],
    }
    return ENCODER.encode(emotion, attributes)


@dataclass(frozen=True)
class Kind:
    name: str
    make: Callable[..., Policy]
    contextual: bool
    learns: bool

    def context(self, rng: np.random.Generator) -> Context | None:
        return random_context(rng) if self.contextual else None


KINDS = [
    Kind("uniform", lambda arms=ARMS, **kw: UniformPolicy(arms, **kw), False, False),
    Kind("thompson", lambda arms=ARMS, **kw: ThompsonBernoulli(arms, **kw), False, True),
    Kind(
        "linear_thompson",
        lambda arms=ARMS, **kw: LinearThompson(arms, D, n_draws=500, **kw),
        True,
        True,
    ),
    Kind("linucb", lambda arms=ARMS, **kw: LinUCB(arms, D, **kw), True, True),
]


@pytest.fixture(params=KINDS, ids=[kind.name for kind in KINDS])
def kind(request: pytest.FixtureRequest) -> Kind:
    result: Kind = request.param
    return result


def reward_for(arm: str, context: Context | None, rng: np.random.Generator) -> float:
    """A learnable world: "calm" pays most, more so for angry visitors."""
    base = {"calm": 0.7, "urgent": 0.3, "neutral": 0.1}[arm]
    if context is not None and arm == "calm":
        base = 0.4 + 0.5 * context[1 + PLUTCHIK.index("anger")]
    return float(rng.random() < base)


def train(
    policy: Policy, kind: Kind, n: int, seed: int = 0
) -> list[tuple[Context | None, str, float]]:
    """Random arms (not the policy's choices) so every arm gets updates; returns the updates."""
    rng = np.random.default_rng(seed)
    updates = []
    for _ in range(n):
        context = kind.context(rng)
        arm = ARMS[int(rng.integers(0, len(ARMS)))]
        reward = reward_for(arm, context, rng)
        policy.update(context, arm, reward)
        updates.append((context, arm, reward))
    return updates


# --------------------------------------------------------------------------- contract suite


def test_probabilities_form_a_distribution_with_the_floor(kind: Kind) -> None:
    policy = kind.make(seed=1, min_share=0.05)
    train(policy, kind, 150)
    rng = np.random.default_rng(5)
    for _ in range(20):
        p = policy.probabilities(kind.context(rng))
        assert list(p) == list(ARMS)
        assert sum(p.values()) == pytest.approx(1.0, abs=1e-12)
        assert min(p.values()) >= 0.05 - 1e-12
    if kind.learns:  # learning moved the distribution to the floor on the losing arms
        assert min(policy.probabilities(kind.context(rng)).values()) < 0.06


def test_without_floor_probabilities_are_non_negative(kind: Kind) -> None:
    policy = kind.make(seed=1)
    train(policy, kind, 150)
    p = policy.probabilities(kind.context(np.random.default_rng(2)))
    assert all(value >= 0.0 for value in p.values())
    assert sum(p.values()) == pytest.approx(1.0, abs=1e-12)


def test_uniform_during_burn_in_then_the_floored_policy(kind: Kind) -> None:
    burned = kind.make(seed=3, burn_in=5, min_share=0.02)
    twin = kind.make(seed=3, burn_in=0, min_share=0.02)
    rng = np.random.default_rng(0)
    contexts = [kind.context(rng) for _ in range(5)]
    uniform = dict.fromkeys(ARMS, 1 / 3)
    assert burned.in_burn_in
    assert burned.probabilities(contexts[0]) == uniform
    # Four winning updates on "calm", five losing ones on the others: "calm" is short of 5.
    for arm, reward, count in (("calm", 1.0, 4), ("urgent", 0.0, 5), ("neutral", 0.0, 5)):
        for i in range(count):
            for policy in (burned, twin):
                policy.update(contexts[i], arm, reward)
    assert burned.in_burn_in
    for context in contexts:
        assert burned.probabilities(context) == pytest.approx(uniform, abs=1e-15)
    for policy in (burned, twin):
        policy.update(contexts[4], "calm", 1.0)
    assert not burned.in_burn_in
    assert burned.pulls == {"calm": 5, "urgent": 5, "neutral": 5}
    for context in contexts:
        assert burned.probabilities(context) == twin.probabilities(context)
    if kind.learns:
        assert burned.probabilities(contexts[0])["calm"] > 0.5


def test_choose_draws_follow_probabilities(kind: Kind) -> None:
    policy = kind.make(seed=11, min_share=0.1)
    train(policy, kind, 100)
    context = kind.context(np.random.default_rng(9))
    p = policy.probabilities(context)
    draws = 4000
    counts = dict.fromkeys(ARMS, 0)
    for _ in range(draws):
        counts[policy.choose(context).arm] += 1
    observed = [counts[arm] for arm in ARMS]
    expected = [p[arm] * draws for arm in ARMS]
    assert stats.chisquare(observed, expected).pvalue > 1e-3
    # The test has teeth: a distribution off by 0.04 on one arm is rejected.
    skewed = [p[ARMS[0]] + 0.04, p[ARMS[1]] - 0.04, p[ARMS[2]]]
    assert stats.chisquare(observed, [q * draws for q in skewed]).pvalue < 1e-3


def test_logged_propensity_is_the_probability_of_the_arm(kind: Kind) -> None:
    policy = kind.make(seed=4, min_share=0.05)
    train(policy, kind, 60)
    rng = np.random.default_rng(1)
    for _ in range(30):
        context = kind.context(rng)
        expected = policy.probabilities(context)
        decision = policy.choose(context)
        assert decision.probabilities == expected
        assert decision.propensity == expected[decision.arm]
        assert decision.propensity > 0.0


def test_a_restricted_draw_stays_in_its_pool_with_renormalised_propensities(kind: Kind) -> None:
    policy = kind.make(seed=5, min_share=0.05)
    train(policy, kind, 80)
    rng = np.random.default_rng(2)
    pool = ARMS[:2]
    for _ in range(30):
        context = kind.context(rng)
        full = policy.probabilities(context)
        decision = policy.choose(context, allowed=pool)
        assert decision.arm in pool
        assert decision.probabilities[ARMS[2]] == 0.0
        total = full[pool[0]] + full[pool[1]]
        for arm in pool:
            assert decision.probabilities[arm] == pytest.approx(full[arm] / total)
        assert decision.propensity == decision.probabilities[decision.arm]
    only = policy.choose(kind.context(rng), allowed=[ARMS[2]])
    assert (only.arm, only.propensity) == (ARMS[2], 1.0)
    with pytest.raises(ValueError, match="unknown arm"):
        policy.choose(kind.context(rng), allowed=["nope"])
    with pytest.raises(ValueError, match="at least one arm"):
        policy.choose(kind.context(rng), allowed=[])


def test_state_round_trips_through_json(kind: Kind) -> None:
    policy = kind.make(seed=8, burn_in=2, min_share=0.03)
    train(policy, kind, 80)
    policy.choose(kind.context(np.random.default_rng(0)))  # advance the generator
    state = json.loads(json.dumps(policy.to_state()))
    assert state["class"] == type(policy).__name__
    assert state["params"]["seed"] == 8
    restored = policy_from_state(state)
    same_class = type(policy).from_state(state)
    assert type(restored) is type(policy)
    assert restored.pulls == policy.pulls
    assert restored.n_updates == policy.n_updates == 80
    rng = np.random.default_rng(3)
    contexts = [kind.context(rng) for _ in range(10)]
    for context in contexts:
        assert restored.probabilities(context) == policy.probabilities(context)
        assert same_class.probabilities(context) == policy.probabilities(context)
    # The generator travels too: the restored policy continues the same decisions.
    assert [restored.choose(c).arm for c in contexts] == [policy.choose(c).arm for c in contexts]
    for context in contexts:
        for target in (restored, policy):
            target.update(context, "urgent", 1.0)
    for context in contexts:
        assert restored.probabilities(context) == policy.probabilities(context)


def test_from_state_rejects_other_classes_and_garbage(kind: Kind) -> None:
    state = kind.make(seed=1).to_state()
    other = UniformPolicy if not isinstance(kind.make(), UniformPolicy) else ThompsonBernoulli
    with pytest.raises(ValueError, match="not a"):
        other.from_state(state)
    with pytest.raises(ValueError, match="unknown policy class"):
        policy_from_state({**state, "class": "Nope"})
    with pytest.raises(ValueError, match="version"):
        policy_from_state({**state, "version": 99})
    with pytest.raises(ValueError, match="pulls"):
        policy_from_state({**state, "pulls": [1, 2]})


def test_same_seed_same_calls_same_results(kind: Kind) -> None:
    def run(seed: int) -> list[tuple[str, float]]:
        policy = kind.make(seed=seed, min_share=0.1)
        rng = np.random.default_rng(0)
        out = []
        for _ in range(150):
            context = kind.context(rng)
            decision = policy.choose(context)
            policy.update(context, decision.arm, reward_for(decision.arm, context, rng))
            out.append((decision.arm, decision.propensity))
        return out

    assert run(21) == run(21)
    assert run(21) != run(22)


def test_update_order_does_not_matter(kind: Kind) -> None:
    in_order = kind.make(seed=2)
    updates = train(in_order, kind, 120)
    shuffled = kind.make(seed=2)
    random.Random(0).shuffle(updates)
    for context, arm, reward in updates:
        shuffled.update(context, arm, reward)
    rng = np.random.default_rng(6)
    for _ in range(5):
        context = kind.context(rng)
        assert shuffled.probabilities(context) == pytest.approx(
            in_order.probabilities(context), abs=1e-9
        )


def test_invalid_arguments_raise_clear_errors(kind: Kind) -> None:
    with pytest.raises(ValueError, match="too large for 3 arms"):
        kind.make(min_share=0.34)
    kind.make(min_share=1 / 3)  # exactly k * min_share = 1 is allowed
    with pytest.raises(ValueError, match="unique"):
        kind.make(arms=("a", "a"))
    with pytest.raises(ValueError, match="at least one arm"):
        kind.make(arms=())
    with pytest.raises(ValueError, match="single string"):
        kind.make(arms="abc")
    with pytest.raises(ValueError, match="burn_in"):
        kind.make(burn_in=-1)
    with pytest.raises(ValueError, match="min_share"):
        kind.make(min_share=-0.1)
    with pytest.raises(ValueError, match="seed"):
        kind.make(seed=-1)
    policy = kind.make(seed=0)
    context = kind.context(np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown arm 'bold'"):
        policy.update(context, "bold", 1.0)
    with pytest.raises(ValueError, match="finite"):
        policy.update(context, "calm", float("nan"))
    assert policy.n_updates == 0
    if kind.contextual:
        with pytest.raises(ValueError, match=f"expects n_features={D}"):
            policy.probabilities(np.ones(D + 1))
        with pytest.raises(ValueError, match="n_features"):
            policy.choose(np.ones(3))
        with pytest.raises(ValueError, match="needs a context"):
            policy.probabilities(None)
        with pytest.raises(ValueError, match="1-D"):
            policy.update(np.ones((1, D)), "calm", 1.0)
        with pytest.raises(ValueError, match="finite"):
            policy.probabilities(np.full(D, np.nan))
    else:  # non-contextual policies ignore the context
        assert policy.probabilities(np.ones(3)) == policy.probabilities(None)


def test_counts(kind: Kind) -> None:
    policy = kind.make(seed=0)
    context = kind.context(np.random.default_rng(0))
    policy.update(context, "calm", 1.0)
    policy.update(context, "calm", 0.0)
    policy.update(context, "neutral", 1.0)
    policy.choose(context)  # choosing is not an update
    assert policy.n_updates == 3
    assert policy.pulls == {"calm": 2, "urgent": 0, "neutral": 1}


def test_unseeded_policies_keep_their_drawn_seed(kind: Kind) -> None:
    policy = kind.make()
    assert isinstance(policy.seed, int)
    restored = policy_from_state(json.loads(json.dumps(policy.to_state())))
    assert restored.seed == policy.seed


# --------------------------------------------------------------------------- Thompson


def test_thompson_concentrates_on_the_best_arm() -> None:
    means = {"a": 0.2, "b": 0.35, "c": 0.5}
    policy = ThompsonBernoulli(list(means), seed=0)
    rng = np.random.default_rng(100)
    rounds = 2000
    on_best = 0
    for _ in range(rounds):
        decision = policy.choose()
        policy.update(None, decision.arm, float(rng.random() < means[decision.arm]))
        on_best += decision.arm == "c"
    assert on_best / rounds > 0.8
    assert policy.probabilities()["c"] > 0.95
    assert policy.means()["c"] == pytest.approx(0.5, abs=0.05)


def _quad_prob_best(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Independent reference: adaptive quadrature of P_i = ∫ Π_j F_j(F_i⁻¹(u)) du."""
    out = []
    for i in range(a.size):
        others = [j for j in range(a.size) if j != i]

        def integrand(u: float, i: int = i, others: list[int] = others) -> float:
            x = special.betaincinv(a[i], b[i], u)
            return float(np.prod([special.betainc(a[j], b[j], x) for j in others]))

        out.append(integrate.quad(integrand, 0, 1, limit=400, epsabs=1e-10)[0])
    return np.array(out)


def test_prob_best_matches_a_big_monte_carlo() -> None:
    a = np.array([12.5, 20.0, 9.0])  # fractional parameters, as fractional rewards give
    b = np.array([30.0, 40.0, 20.5])
    p = prob_best_beta(a, b)
    rng = np.random.default_rng(2024)
    wins = np.zeros(3)
    draws = 4_000_000
    for _ in range(4):
        samples = rng.beta(a, b, size=(draws // 4, 3))
        wins += np.bincount(samples.argmax(axis=1), minlength=3)
    assert p == pytest.approx(wins / draws, abs=1e-3)
    assert p.min() > 0.1  # a case where every arm's probability is substantial


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([2.0, 3.0, 4.0], [5.0, 4.0, 3.0]),
        ([1000.0, 1010.0], [1000.0, 990.0]),  # narrow posteriors
        ([5000.0, 3.0, 12.0], [5000.0, 2.0, 14.0]),  # one narrow, two wide
        ([0.5, 0.7, 2.0], [0.5, 0.3, 1.0]),  # densities unbounded at 0 and 1
    ],
)
def test_prob_best_matches_adaptive_quadrature(a: list[float], b: list[float]) -> None:
    p = prob_best_beta(a, b)
    assert p == pytest.approx(_quad_prob_best(np.array(a), np.array(b)), abs=2e-5)


def test_prob_best_closed_forms() -> None:
    # P(Beta(2,1) > U) = 2/3; P(Beta(n+1,1) beats 4 uniforms) = (n+1)/(n+5).
    assert prob_best_beta([2.0, 1.0], [1.0, 1.0]) == pytest.approx([2 / 3, 1 / 3], abs=1e-5)
    p = prob_best_beta([101.0, 1, 1, 1, 1], [1.0, 1, 1, 1, 1])
    assert p[0] == pytest.approx(101 / 105, abs=2e-5)
    assert prob_best_beta([3.0], [4.0]).tolist() == [1.0]
    with pytest.raises(ValueError, match="> 0"):
        prob_best_beta([0.0, 1.0], [1.0, 1.0])


def test_thompson_fractional_rewards_and_range() -> None:
    policy = ThompsonBernoulli(["a", "b"], prior_alpha=2.0, prior_beta=3.0, seed=0)
    policy.update(None, "a", 0.25)
    policy.update(None, "a", 1)
    assert policy.posterior == {"a": (3.25, 3.75), "b": (2.0, 3.0)}
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        policy.update(None, "a", 1.5)
    with pytest.raises(ValueError, match="prior_alpha"):
        ThompsonBernoulli(["a"], prior_alpha=0.0)


# --------------------------------------------------------------------------- linear policies


@dataclass
class EmotionWorld:
    """Angry visitors convert on "calm", joyful ones on "urgent", everyone else on "neutral"."""

    contexts: np.ndarray
    p: np.ndarray  # (n, 3) conversion probability of each arm
    u: np.ndarray  # (n,) common random numbers: reward = u < p


def emotion_world(n: int, seed: int) -> EmotionWorld:
    rng = np.random.default_rng(seed)
    encoder = ContextEncoder()
    kind = rng.integers(0, 3, n)
    anger = np.where(kind == 0, rng.uniform(0.6, 1.0, n), rng.uniform(0.0, 0.2, n))
    joy = np.where(kind == 1, rng.uniform(0.6, 1.0, n), rng.uniform(0.0, 0.2, n))
    contexts = np.vstack(
        [
            encoder.encode({"anger": a, "joy": j, "valence": j - a}, {})
            for a, j in zip(anger, joy, strict=True)
        ]
    )
    p = np.column_stack((0.1 + 0.5 * anger, 0.1 + 0.5 * joy, np.full(n, 0.3)))
    return EmotionWorld(contexts, p, rng.random(n))


def cumulative_reward(policy: Policy, world: EmotionWorld) -> float:
    total = 0.0
    for x, p, u in zip(world.contexts, world.p, world.u, strict=True):
        decision = policy.choose(x)
        reward = float(u < p[ARMS.index(decision.arm)])
        policy.update(x, decision.arm, reward)
        total += reward
    return total


@pytest.mark.parametrize(
    "make",
    [
        lambda d: LinearThompson(ARMS, d, seed=0),
        lambda d: LinUCB(ARMS, d, alpha=1.0, seed=0),
    ],
    ids=["linear_thompson", "linucb"],
)
def test_contextual_policies_beat_uniform_and_every_fixed_arm(
    make: Callable[[int], Policy],
) -> None:
    world = emotion_world(3000, seed=1)
    fixed = (world.u[:, None] < world.p).sum(axis=0)  # each arm played every round
    uniform = cumulative_reward(UniformPolicy(ARMS, seed=0), world)
    learned = cumulative_reward(make(ContextEncoder().n_features), world)
    oracle = float((world.u[:, None] < world.p).max(axis=1).sum())
    assert learned > 1.2 * max(uniform, float(fixed.max()))
    assert learned < oracle


def test_linucb_splits_ties_and_plays_the_argmax() -> None:
    policy = LinUCB(["a", "b"], 2, alpha=0.5, seed=0)
    x = np.array([1.0, 0.5])
    assert policy.probabilities(x) == {"a": 0.5, "b": 0.5}  # same bounds before any data
    for _ in range(20):
        policy.update(x, "a", 1.0)
        policy.update(x, "b", 0.0)
    assert policy.probabilities(x) == {"a": 1.0, "b": 0.0}
    assert {policy.choose(x).arm for _ in range(50)} == {"a"}
    floored = LinUCB(["a", "b"], 2, alpha=0.5, seed=0, min_share=0.1)
    floored.update(x, "a", 1.0)
    assert floored.probabilities(x) == pytest.approx({"a": 0.9, "b": 0.1})
    bounds = policy.upper_bounds(x)
    theta = policy.coefficients()["a"]
    assert bounds["a"] > float(x @ theta)  # the exploration bonus is positive


def test_linear_thompson_probabilities_are_stable_until_an_update() -> None:
    policy = LinearThompson(["a", "b", "c"], 3, v=1.0, seed=5, n_draws=300)
    x = np.array([1.0, 0.2, -0.4])
    policy.update(x, "a", 0.6)
    first = policy.probabilities(x)
    assert policy.probabilities(x) == first
    assert LinearThompson.from_state(policy.to_state()).probabilities(x) == first
    assert len(set(first.values())) > 1  # Monte Carlo noise differs between arms
    policy.update(x, "b", 0.1)
    assert policy.probabilities(x) != first
    with pytest.raises(ValueError, match="n_draws"):
        LinearThompson(["a"], 3, n_draws=0)
    with pytest.raises(ValueError, match="ridge"):
        LinUCB(["a"], 3, ridge=0.0)


# --------------------------------------------------------------------------- context encoder


def test_context_encoder_layout() -> None:
    encoder = ContextEncoder(
        attributes=["visits", "profile.age"], categories={"device": ["mobile", "desktop"]}
    )
    assert encoder.feature_names == (
        "bias",
        *PLUTCHIK,
        "valence",
        "arousal",
        "dominance",
        "emotion_missing",
        "visits",
        "profile.age",
        "device=mobile",
        "device=desktop",
    )
    assert encoder.n_features == 17
    emotion = {"joy": 0.8, "anger": 1.7, "valence": -3.0, "dominant": "joy", "confidence": 0.9}
    x = encoder.encode(emotion, {"visits": 3, "profile": {"age": 41}, "device": "desktop"})
    named = dict(zip(encoder.feature_names, x.tolist(), strict=True))
    assert named["bias"] == 1.0
    assert named["joy"] == 0.8
    assert named["anger"] == 1.0  # clipped to [0, 1]
    assert named["valence"] == -1.0  # clipped to [-1, 1]
    assert named["trust"] == 0.0  # absent from the reading
    assert named["emotion_missing"] == 0.0
    assert named["visits"] == 3.0
    assert named["profile.age"] == 41.0
    assert (named["device=mobile"], named["device=desktop"]) == (0.0, 1.0)


def test_context_encoder_missing_values() -> None:
    encoder = ContextEncoder(attributes=["visits"], categories={"device": ["mobile"]})
    for reading in (None, {}, {"dominant": "neutral"}):
        x = encoder.encode(reading, {"device": "tablet"})
        assert x[1 : 1 + len(EMOTION_DIMS)].tolist() == [0.0] * 11
        assert x[1 + len(EMOTION_DIMS)] == 1.0
        assert x[-2:].tolist() == [0.0, 0.0]  # missing numeric, unlisted category
    assert encoder.encode(None).dtype == np.float64
    with pytest.raises(ValueError, match="visits"):
        encoder.encode(None, {"visits": "many"})
    with pytest.raises(ValueError, match="anger"):
        encoder.encode({"anger": float("nan")}, {})
    with pytest.raises(ValueError, match="unique"):
        ContextEncoder(attributes=["device"], categories={"device": ["a"]})
    with pytest.raises(ValueError, match="non-empty"):
        ContextEncoder(categories={"device": []})
    assert ContextEncoder.from_state(encoder.to_state()).feature_names == encoder.feature_names


def test_docstring_examples_run() -> None:
    assert doctest.testmod(bandits).failed == 0
