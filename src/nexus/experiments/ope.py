"""Off-policy evaluation: what would a target policy have earned on traffic logged by another?

Pure core, no I/O. Each logged decision carries the context, the arm played, the reward and
the *propensity* with which the logging policy played it (``Decision.propensity`` from
:mod:`.bandits`). With importance weight ``w_i = π(a_i | x_i) / μ_i`` (``π`` the target,
``μ_i`` the logged propensity):

* IPS (inverse propensity scoring, Horvitz & Thompson 1952): ``V = (1/n) Σ w_i r_i``;
  unbiased when the logging policy gives every arm the target plays a positive probability.
* SNIPS (self-normalised IPS, Swaminathan & Joachims 2015, "The Self-Normalized Estimator
  for Counterfactual Learning"): ``V = Σ w_i r_i / Σ w_i``; slightly biased, usually much
  lower variance, and invariant to adding a constant to the rewards.
* DR (doubly robust, Dudík, Langford & Li 2011, "Doubly Robust Policy Evaluation and
  Learning"): ``V = (1/n) Σ [Σ_a π(a|x_i) q̂(x_i, a) + w_i (r_i - q̂(x_i, a_i))]`` with a
  reward model ``q̂``; unbiased if either the propensities or the reward model are right,
  and lower variance than IPS when ``q̂`` is good.

Confidence intervals are normal approximations at level ``1 - alpha``: on the per-sample
terms for IPS and DR (``SE = sd / sqrt(n)``), and by the delta method for SNIPS
(``SE² = Σ w_i² (r_i - V)² / (Σ w_i)²``). ``effective_sample_size`` is Kish's
``(Σ w)² / Σ w²`` over the (clipped) importance weights, the same for all three estimators.

``clip`` caps the importance weights (``min(w, clip)``): bias for variance.

Degenerate input never raises: the result carries ``value = nan`` and an ``error`` code
(:data:`ERROR_CODES`). Programming errors (``alpha`` outside (0, 1), ``clip <= 0``) do raise
:class:`ValueError`.

>>> logs = [LoggedDecision(None, "a", 1.0, 0.5), LoggedDecision(None, "b", 0.0, 0.5)] * 50
>>> always_a = lambda context: {"a": 1.0, "b": 0.0}
>>> ips(logs, always_a).value
1.0
>>> snips(logs, always_a).value
1.0
>>> ips([], always_a).error
'NO_LOGS'
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Final, TypeAlias

import numpy as np
from numpy.typing import NDArray

from nexus.experiments.bandits import Context, Policy

__all__ = [
    "ERROR_CODES",
    "LoggedDecision",
    "PolicyValue",
    "RewardModel",
    "TargetPolicy",
    "doubly_robust",
    "evaluate",
    "ips",
    "snips",
]

FloatArray: TypeAlias = NDArray[np.float64]
TargetPolicy: TypeAlias = Policy | Callable[[Context | None], Mapping[str, float]]
"""A :class:`~.bandits.Policy` (its ``probabilities``) or any ``context -> {arm: prob}``."""
RewardModel: TypeAlias = Callable[[Context | None, str], float]
"""``(context, arm) -> expected reward``, the ``q̂`` of the doubly robust estimator."""

ERROR_CODES: Final[dict[str, str]] = {
    "NO_LOGS": "no logged decisions",
    "TOO_FEW_LOGS": "fewer than 2 logged decisions: no variance estimate",
    "INVALID_PROPENSITY": "a logged propensity is not a number in (0, 1]",
    "INVALID_REWARD": "a logged reward is not a finite number",
    "INVALID_TARGET": "the target policy failed or returned something that is not a "
    "probability distribution over arms",
    "INVALID_REWARD_MODEL": "the reward model failed or returned a non-finite value",
    "ZERO_WEIGHT": "the target gives probability 0 to every logged arm (SNIPS undefined)",
}
"""Error codes of :attr:`PolicyValue.error` and what they mean."""

_DISTRIBUTION_TOLERANCE: Final[float] = 1e-6


@dataclass(frozen=True)
class LoggedDecision:
    """One logged decision: what the logging policy saw, played, earned, and its propensity."""

    context: Context | None
    arm: str
    reward: float
    propensity: float


@dataclass(frozen=True)
class PolicyValue:
    """An estimate of a policy's expected reward per decision, with its confidence interval."""

    estimator: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    effective_sample_size: float
    error: str | None = None


# --------------------------------------------------------------------------- preparation


@dataclass(frozen=True)
class _Prepared:
    rewards: FloatArray  # (n,)
    propensities: FloatArray  # (n,)
    arm_index: NDArray[np.intp]  # (n,) column of the logged arm in `target`
    arms: tuple[str, ...]  # columns of `target`
    target: FloatArray  # (n, K) target probabilities
    contexts: list[Context | None]


def _check_alpha(alpha: float) -> float:
    if not (isinstance(alpha, int | float) and 0.0 < float(alpha) < 1.0):
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    return float(alpha)


def _check_clip(clip: float | None) -> float | None:
    if clip is None:
        return None
    if not (isinstance(clip, int | float) and math.isfinite(clip) and clip > 0):
        raise ValueError(f"clip must be a positive number or None, got {clip!r}")
    return float(clip)


def _target_function(
    target: TargetPolicy,
) -> Callable[[Context | None], Mapping[str, float]]:
    if isinstance(target, Policy):
        return target.probabilities
    return target


def _prepare(logs: Sequence[LoggedDecision], target: TargetPolicy) -> _Prepared | str:
    """Arrays for the estimators, or an error code."""
    n = len(logs)
    if n == 0:
        return "NO_LOGS"
    if n < 2:
        return "TOO_FEW_LOGS"
    logged = _logged_arrays(logs)
    if isinstance(logged, str):
        return logged
    rewards, propensities = logged
    arms: dict[str, int] = {}
    for log in logs:
        arms.setdefault(log.arm, len(arms))
    rows: list[dict[str, float]] = []
    policy = _target_function(target)
    for log in logs:
        row = _distribution(policy, log.context)
        if row is None:
            return "INVALID_TARGET"
        for arm in row:
            arms.setdefault(arm, len(arms))
        rows.append(row)
    matrix = np.zeros((n, len(arms)))
    for i, row in enumerate(rows):
        for arm, probability in row.items():
            matrix[i, arms[arm]] = probability
    arm_index = np.fromiter((arms[log.arm] for log in logs), dtype=np.intp, count=n)
    return _Prepared(
        rewards=rewards,
        propensities=propensities,
        arm_index=arm_index,
        arms=tuple(arms),
        target=matrix,
        contexts=[log.context for log in logs],
    )


def _logged_arrays(logs: Sequence[LoggedDecision]) -> tuple[FloatArray, FloatArray] | str:
    """Rewards and propensities, or ``INVALID_PROPENSITY`` / ``INVALID_REWARD``."""
    if not all(_is_number(log.propensity) for log in logs):
        return "INVALID_PROPENSITY"
    if not all(_is_number(log.reward) for log in logs):
        return "INVALID_REWARD"
    rewards = np.array([float(log.reward) for log in logs])
    propensities = np.array([float(log.propensity) for log in logs])
    valid = np.isfinite(propensities) & (propensities > 0.0)
    if not (valid & (propensities <= 1.0 + _DISTRIBUTION_TOLERANCE)).all():
        return "INVALID_PROPENSITY"
    if not np.isfinite(rewards).all():
        return "INVALID_REWARD"
    return rewards, propensities


def _distribution(
    policy: Callable[[Context | None], Mapping[str, float]], context: Context | None
) -> dict[str, float] | None:
    """The target's distribution for one context, or ``None`` if it is not a valid one."""
    try:
        items = list(policy(context).items())
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    if not all(_is_number(p) and math.isfinite(float(p)) for _, p in items):
        return None
    row = {str(arm): float(p) for arm, p in items}
    if any(p < -_DISTRIBUTION_TOLERANCE for p in row.values()):
        return None
    if abs(sum(row.values()) - 1.0) > _DISTRIBUTION_TOLERANCE:
        return None
    return {arm: max(0.0, p) for arm, p in row.items()}


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real)


def _weights(prepared: _Prepared, clip: float | None) -> FloatArray:
    n = prepared.rewards.size
    weights = prepared.target[np.arange(n), prepared.arm_index] / prepared.propensities
    if clip is not None:
        weights = np.minimum(weights, clip)
    return np.asarray(weights, dtype=np.float64)


def _ess(weights: FloatArray) -> float:
    squares = float(np.square(weights).sum())
    return float(weights.sum()) ** 2 / squares if squares > 0.0 else 0.0


def _failed(estimator: str, n: int, code: str) -> PolicyValue:
    nan = float("nan")
    return PolicyValue(estimator, nan, nan, nan, n, 0.0, code)


def _z(alpha: float) -> float:
    return NormalDist().inv_cdf(1.0 - alpha / 2.0)


def _mean_ci(estimator: str, terms: FloatArray, alpha: float, ess: float) -> PolicyValue:
    n = terms.size
    value = float(terms.mean())
    half = _z(alpha) * float(terms.std(ddof=1)) / math.sqrt(n)
    return PolicyValue(estimator, value, value - half, value + half, n, ess)


# --------------------------------------------------------------------------- estimators


def _ips(prepared: _Prepared, alpha: float, clip: float | None) -> PolicyValue:
    weights = _weights(prepared, clip)
    return _mean_ci("ips", weights * prepared.rewards, alpha, _ess(weights))


def _snips(prepared: _Prepared, alpha: float, clip: float | None) -> PolicyValue:
    weights = _weights(prepared, clip)
    total = float(weights.sum())
    n = weights.size
    if total <= 0.0:
        return _failed("snips", n, "ZERO_WEIGHT")
    value = float((weights * prepared.rewards).sum()) / total
    # Delta method on the ratio of means: Var ≈ E[w²(r - V)²] / (n E[w]²).
    se = math.sqrt(float((np.square(weights) * np.square(prepared.rewards - value)).sum())) / total
    half = _z(alpha) * se
    return PolicyValue("snips", value, value - half, value + half, n, _ess(weights))


def _stacked_contexts(contexts: Sequence[Context | None]) -> FloatArray | None:
    """The contexts as an ``(n, d)`` matrix, or ``None`` unless all are 1-D and of one length."""
    arrays: list[FloatArray] = []
    for context in contexts:
        if context is None:
            return None
        array = np.asarray(context, dtype=np.float64)
        if array.ndim != 1 or (arrays and array.shape != arrays[0].shape):
            return None
        arrays.append(array)
    matrix = np.vstack(arrays)
    return matrix if np.isfinite(matrix).all() else None


def _ridge_predictions(prepared: _Prepared, ridge: float) -> FloatArray:
    """``q̂(x_i, a)`` for every log and arm, cross-fitted over two folds.

    Logs at even positions are predicted by models fit on the odd ones and vice versa, so no
    log's own reward enters its prediction (the bias that in-sample fitting brings to DR).
    Each arm's model is a ridge regression ``r ~ [1, x]`` (intercept unpenalised) on that
    arm's logs in the other fold; without usable contexts (``None``, or varying lengths) it
    is the arm's mean reward; an arm absent from the other fold gets that fold's mean reward.
    """
    n, k = prepared.target.shape
    matrix = _stacked_contexts(prepared.contexts)
    features = np.ones((n, 1)) if matrix is None else np.column_stack((np.ones(n), matrix))
    d = features.shape[1]
    penalty = ridge * np.eye(d)
    penalty[0, 0] = 0.0
    predictions = np.empty((n, k))
    folds = np.arange(n) % 2
    for fold in (0, 1):
        train = folds != fold
        test = ~train
        fallback = float(prepared.rewards[train].mean())
        for arm in range(k):
            rows = train & (prepared.arm_index == arm)
            if not rows.any():
                predictions[test, arm] = fallback
                continue
            x = features[rows]
            y = prepared.rewards[rows]
            coef = np.linalg.solve(x.T @ x + penalty, x.T @ y)
            predictions[test, arm] = features[test] @ coef
    return predictions


def _model_predictions(prepared: _Prepared, reward_model: RewardModel) -> FloatArray | str:
    n, k = prepared.target.shape
    predictions = np.zeros((n, k))
    for i, context in enumerate(prepared.contexts):
        for arm in range(k):
            if prepared.target[i, arm] > 0.0 or prepared.arm_index[i] == arm:
                try:
                    value = reward_model(context, prepared.arms[arm])
                except (ValueError, TypeError, KeyError):
                    return "INVALID_REWARD_MODEL"
                if not _is_number(value) or not math.isfinite(float(value)):
                    return "INVALID_REWARD_MODEL"
                predictions[i, arm] = float(value)
    return predictions


def _doubly_robust(
    prepared: _Prepared,
    reward_model: RewardModel | None,
    alpha: float,
    clip: float | None,
    ridge: float,
) -> PolicyValue:
    n = prepared.rewards.size
    if reward_model is None:
        predictions = _ridge_predictions(prepared, ridge)
    else:
        result = _model_predictions(prepared, reward_model)
        if isinstance(result, str):
            return _failed("dr", n, result)
        predictions = result
    weights = _weights(prepared, clip)
    direct = (prepared.target * predictions).sum(axis=1)
    logged = predictions[np.arange(n), prepared.arm_index]
    terms = direct + weights * (prepared.rewards - logged)
    return _mean_ci("dr", terms, alpha, _ess(weights))


def ips(
    logs: Sequence[LoggedDecision],
    target: TargetPolicy,
    *,
    alpha: float = 0.05,
    clip: float | None = None,
) -> PolicyValue:
    """Inverse propensity scoring: ``(1/n) Σ w_i r_i``, normal CI on the per-sample terms."""
    alpha, clip = _check_alpha(alpha), _check_clip(clip)
    prepared = _prepare(logs, target)
    if isinstance(prepared, str):
        return _failed("ips", len(logs), prepared)
    return _ips(prepared, alpha, clip)


def snips(
    logs: Sequence[LoggedDecision],
    target: TargetPolicy,
    *,
    alpha: float = 0.05,
    clip: float | None = None,
) -> PolicyValue:
    """Self-normalised IPS: ``Σ w_i r_i / Σ w_i``, delta-method CI (no resampling)."""
    alpha, clip = _check_alpha(alpha), _check_clip(clip)
    prepared = _prepare(logs, target)
    if isinstance(prepared, str):
        return _failed("snips", len(logs), prepared)
    return _snips(prepared, alpha, clip)


def doubly_robust(
    logs: Sequence[LoggedDecision],
    target: TargetPolicy,
    reward_model: RewardModel | None = None,
    *,
    alpha: float = 0.05,
    clip: float | None = None,
    ridge: float = 1.0,
) -> PolicyValue:
    """Doubly robust estimate (Dudík et al. 2011), normal CI on the per-sample terms.

    Without ``reward_model`` the reward model is a per-arm ridge regression (penalty
    ``ridge``) on the logs themselves, cross-fitted over two folds (even and odd positions):
    each log's prediction comes from the model fit on the other fold.
    """
    alpha, clip = _check_alpha(alpha), _check_clip(clip)
    if not (isinstance(ridge, int | float) and math.isfinite(ridge) and ridge > 0):
        raise ValueError(f"ridge must be a positive number, got {ridge!r}")
    prepared = _prepare(logs, target)
    if isinstance(prepared, str):
        return _failed("dr", len(logs), prepared)
    return _doubly_robust(prepared, reward_model, alpha, clip, float(ridge))


def evaluate(
    logs: Sequence[LoggedDecision],
    target: TargetPolicy,
    *,
    alpha: float = 0.05,
    clip: float | None = None,
    reward_model: RewardModel | None = None,
) -> list[PolicyValue]:
    """IPS, SNIPS and DR, in that order, asking the target once per log."""
    alpha, clip = _check_alpha(alpha), _check_clip(clip)
    prepared = _prepare(logs, target)
    if isinstance(prepared, str):
        n = len(logs)
        return [_failed(name, n, prepared) for name in ("ips", "snips", "dr")]
    return [
        _ips(prepared, alpha, clip),
        _snips(prepared, alpha, clip),
        _doubly_robust(prepared, reward_model, alpha, clip, 1.0),
    ]
