"""Off-policy evaluation on synthetic logs whose target value is known exactly."""

from __future__ import annotations

import doctest
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pytest

from nexus.experiments import ope
from nexus.experiments.bandits import Context, LinUCB, UniformPolicy
from nexus.experiments.ope import (
    ERROR_CODES,
    LoggedDecision,
    PolicyValue,
    doubly_robust,
    evaluate,
    ips,
    snips,
)

ARMS = ("a", "b", "c")
# Target: z = 0 visitors mostly get "b", z = 1 visitors mostly "c".
TARGET = {0: np.array([0.2, 0.7, 0.1]), 1: np.array([0.1, 0.1, 0.8])}


def conversion(z: np.ndarray, u: np.ndarray) -> np.ndarray:
    """P(reward = 1) of each arm for context (z, u): linear, so ridge models fit it."""
    return np.column_stack(
        (0.2 + 0.3 * u, 0.5 - 0.3 * z + 0.1 * u, np.full(z.shape, 0.3) + 0.4 * z)
    )


def target(context: Context | None) -> dict[str, float]:
    assert context is not None
    return dict(zip(ARMS, TARGET[int(context[1])].tolist(), strict=True))


# z ~ Bernoulli(1/2), u ~ U(0, 1) and the target ignores u, so E[reward] is exact:
TRUE_VALUE = 0.5 * sum(
    float(TARGET[z] @ conversion(np.array([z]), np.array([0.5]))[0]) for z in (0, 1)
)


@dataclass
class Repetitions:
    logs: list[list[LoggedDecision]]
    values: dict[str, list[PolicyValue]]

    def estimates(self, name: str) -> np.ndarray:
        return np.array([v.value for v in self.values[name]])

    def coverage(self, name: str, truth: float) -> float:
        return float(np.mean([v.ci_low <= truth <= v.ci_high for v in self.values[name]]))

    def half_widths(self, name: str) -> np.ndarray:
        return np.array([(v.ci_high - v.ci_low) / 2 for v in self.values[name]])


def uniform_logs(n: int, reps: int, seed: int) -> list[list[LoggedDecision]]:
    """``reps`` data sets of ``n`` decisions logged by the uniform policy (propensity 1/3)."""
    rng = np.random.default_rng(seed)
    z = rng.integers(0, 2, (reps, n))
    u = rng.random((reps, n))
    arm = rng.integers(0, 3, (reps, n))
    out = []
    for r in range(reps):
        p = conversion(z[r], u[r])[np.arange(n), arm[r]]
        reward = (rng.random(n) < p).astype(float)
        contexts = np.column_stack((np.ones(n), z[r], u[r]))
        out.append(
            [
                LoggedDecision(contexts[i], ARMS[arm[r, i]], float(reward[i]), 1 / 3)
                for i in range(n)
            ]
        )
    return out


@pytest.fixture(scope="module")
def repetitions() -> Repetitions:
    logs = uniform_logs(n=400, reps=200, seed=0)
    values: dict[str, list[PolicyValue]] = {"ips": [], "snips": [], "dr": []}
    for data in logs:
        for value in evaluate(data, target):
            values[value.estimator].append(value)
    return Repetitions(logs, values)


@pytest.mark.parametrize("name", ["ips", "snips", "dr"])
def test_confidence_intervals_cover_the_true_value(repetitions: Repetitions, name: str) -> None:
    values = repetitions.values[name]
    assert len(values) == 200
    for value in values:
        assert value.error is None
        assert value.n == 400
        assert value.ci_low < value.value < value.ci_high
    assert repetitions.coverage(name, TRUE_VALUE) >= 0.9
    # Centred on the truth, and the reported standard error matches the spread across data sets.
    estimates = repetitions.estimates(name)
    assert abs(estimates.mean() - TRUE_VALUE) < 0.01
    reported_se = repetitions.half_widths(name).mean() / 1.959964
    assert reported_se == pytest.approx(estimates.std(), rel=0.2)
    # The intervals are not trivially wide: a value 0.25 off is almost never covered.
    assert repetitions.coverage(name, TRUE_VALUE + 0.25) < 0.02


def test_doubly_robust_has_lower_variance_than_ips(repetitions: Repetitions) -> None:
    assert repetitions.estimates("dr").std() < 0.9 * repetitions.estimates("ips").std()
    assert repetitions.half_widths("dr").mean() < 0.9 * repetitions.half_widths("ips").mean()


def test_effective_sample_size(repetitions: Repetitions) -> None:
    # Weights are 3·π(a|x): ESS = (Σw)²/Σw² is well below n for a peaked target.
    value = repetitions.values["ips"][0]
    data = repetitions.logs[0]
    weights = np.array([target(log.context)[log.arm] * 3 for log in data])
    assert value.effective_sample_size == pytest.approx(weights.sum() ** 2 / (weights**2).sum())
    assert 150 < value.effective_sample_size < 300


def test_the_logging_policy_evaluates_to_the_mean_reward() -> None:
    data = uniform_logs(n=300, reps=1, seed=3)[0]
    mean = float(np.mean([log.reward for log in data]))
    uniform_target = UniformPolicy(ARMS, seed=0)
    ips_value, snips_value, dr_value = evaluate(data, uniform_target)
    for value in (ips_value, snips_value, dr_value):
        assert value.effective_sample_size == pytest.approx(300)
    # All weights are 1: IPS and SNIPS are exactly the mean reward, DR close to it.
    assert ips_value.value == pytest.approx(mean, abs=1e-12)
    assert snips_value.value == pytest.approx(mean, abs=1e-12)
    assert dr_value.value == pytest.approx(mean, abs=0.01)
    assert ips_value.value == ips(data, lambda _: dict.fromkeys(ARMS, 1 / 3)).value


def test_dr_with_a_zero_reward_model_is_ips() -> None:
    data = uniform_logs(n=200, reps=1, seed=4)[0]
    dr = doubly_robust(data, target, lambda _context, _arm: 0.0)
    plain = ips(data, target)
    assert (dr.value, dr.ci_low, dr.ci_high) == pytest.approx(
        (plain.value, plain.ci_low, plain.ci_high), abs=1e-12
    )


def test_dr_with_the_true_reward_model(repetitions: Repetitions) -> None:
    def truth(context: Context | None, arm: str) -> float:
        assert context is not None
        z, u = float(context[1]), float(context[2])
        return {"a": 0.2 + 0.3 * u, "b": 0.5 - 0.3 * z + 0.1 * u, "c": 0.3 + 0.4 * z}[arm]

    values = [doubly_robust(data, target, truth) for data in repetitions.logs[:100]]
    estimates = np.array([v.value for v in values])
    coverage = np.mean([v.ci_low <= TRUE_VALUE <= v.ci_high for v in values])
    assert coverage >= 0.9
    assert estimates.std() < 0.9 * repetitions.estimates("ips")[:100].std()


def test_default_reward_model_is_cross_fitted() -> None:
    data = uniform_logs(n=40, reps=1, seed=6)[0]
    prepared = ope._prepare(data, target)
    assert not isinstance(prepared, str)
    base = ope._ridge_predictions(prepared, 1.0)
    flipped = list(data)
    flipped[0] = LoggedDecision(data[0].context, data[0].arm, 1.0 - data[0].reward, 1 / 3)
    changed = ope._prepare(flipped, target)
    assert not isinstance(changed, str)
    moved = np.abs(ope._ridge_predictions(changed, 1.0) - base).max(axis=1) > 0
    # Log 0 is in the even fold: only odd logs' predictions (fit on the even fold) move.
    assert not moved[0::2].any()
    assert moved[1::2].all()


def test_non_contextual_logs_use_per_arm_means() -> None:
    rng = np.random.default_rng(7)
    means = {"a": 0.2, "b": 0.6}
    data = []
    for _ in range(2000):
        arm = "a" if rng.random() < 0.5 else "b"
        data.append(LoggedDecision(None, arm, float(rng.random() < means[arm]), 0.5))
    always_b = {"a": 0.0, "b": 1.0}
    for value in evaluate(data, lambda _: always_b):
        assert value.error is None
        assert value.ci_low <= 0.6 <= value.ci_high


def test_a_policy_object_can_be_the_target() -> None:
    data = uniform_logs(n=200, reps=1, seed=8)[0]
    policy = LinUCB(ARMS, 3, seed=0, min_share=0.05)
    for log in data[:100]:
        assert log.context is not None
        policy.update(log.context, log.arm, log.reward)
    via_object = evaluate(data, policy)
    via_function = evaluate(data, policy.probabilities)
    assert [v.value for v in via_object] == [v.value for v in via_function]
    assert all(v.error is None for v in via_object)


def test_clipping_caps_the_weights() -> None:
    data = uniform_logs(n=200, reps=1, seed=9)[0]
    clipped = ips(data, target, clip=1.5)
    weights = np.minimum([3 * target(log.context)[log.arm] for log in data], 1.5)
    rewards = np.array([log.reward for log in data])
    assert clipped.value == pytest.approx(float((weights * rewards).mean()))
    assert clipped.value < ips(data, target).value


def _failure(value: PolicyValue, code: str) -> None:
    assert value.error == code
    assert code in ERROR_CODES
    assert np.isnan(value.value)


def test_degenerate_inputs_give_error_codes() -> None:
    good = LoggedDecision(None, "a", 1.0, 0.5)
    half: dict[str, float] = {"a": 0.5, "b": 0.5}

    def uniform_ab(_: Context | None) -> Mapping[str, float]:
        return half

    for value in evaluate([], uniform_ab):
        _failure(value, "NO_LOGS")
        assert value.n == 0
    _failure(ips([good], uniform_ab), "TOO_FEW_LOGS")
    for propensity in (0.0, -0.2, 1.5, float("nan")):
        bad = LoggedDecision(None, "b", 1.0, propensity)
        for value in evaluate([good, bad], uniform_ab):
            _failure(value, "INVALID_PROPENSITY")
    for reward in (float("inf"), float("nan")):
        for value in evaluate([good, LoggedDecision(None, "b", reward, 0.5)], uniform_ab):
            _failure(value, "INVALID_REWARD")
    broken: list[dict[str, float]] = [
        {"a": 0.7, "b": 0.7},
        {"a": -0.5, "b": 1.5},
        {"a": float("nan")},
    ]
    for distribution in broken:

        def bad_target(_: Context | None, d: dict[str, float] = distribution) -> dict[str, float]:
            return d

        _failure(snips([good, good], bad_target), "INVALID_TARGET")
    # A policy object that rejects the logged contexts (wrong dimension) is an invalid target.
    wrong_dim = [LoggedDecision(np.ones(5), "a", 1.0, 0.5)] * 3
    _failure(doubly_robust(wrong_dim, LinUCB(["a", "b"], 3, seed=0)), "INVALID_TARGET")
    # A target that never plays a logged arm: IPS says 0, SNIPS is undefined.
    never = [LoggedDecision(None, "a", 1.0, 0.5)] * 4
    only_c: dict[str, float] = {"c": 1.0}
    assert ips(never, lambda _: only_c).value == 0.0
    _failure(snips(never, lambda _: only_c), "ZERO_WEIGHT")

    def failing_model(_context: Context | None, _arm: str) -> float:
        raise ValueError("boom")

    _failure(doubly_robust([good, good], uniform_ab, failing_model), "INVALID_REWARD_MODEL")


def test_programming_errors_raise() -> None:
    data = [LoggedDecision(None, "a", 1.0, 0.5)] * 3
    with pytest.raises(ValueError, match="alpha"):
        ips(data, lambda _: {"a": 1.0}, alpha=0.0)
    with pytest.raises(ValueError, match="clip"):
        snips(data, lambda _: {"a": 1.0}, clip=0.0)
    with pytest.raises(ValueError, match="ridge"):
        doubly_robust(data, lambda _: {"a": 1.0}, ridge=-1.0)


def test_docstring_examples_run() -> None:
    assert doctest.testmod(ope).failed == 0
