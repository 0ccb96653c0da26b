"""Allocation policies: A/B/n, Bernoulli Thompson sampling, linear Thompson sampling, LinUCB.

Pure core: numbers in, numbers out, no I/O. Every policy exposes its whole allocation
distribution, not only a choice, so that the propensity logged with each decision is the
exact probability with which the arm was drawn; off-policy evaluation (:mod:`.ope`) divides
by it.

The base class is small, River-style: public methods (:meth:`Policy.probabilities`,
:meth:`Policy.choose`, :meth:`Policy.update`, :meth:`Policy.to_state`) do validation, burn-in
and the exploration floor; a subclass supplies its own distribution through one private hook,
``_probabilities``, and its learning through ``_update``.

* burn-in: the distribution is uniform until every arm has received ``burn_in`` updates;
* floor: afterwards the policy's own distribution ``p`` becomes
  ``min_share + (1 - k * min_share) * p``, so every one of the ``k`` arms keeps at least
  ``min_share`` (and the propensities stay positive when ``min_share > 0``).

Delayed and out-of-order rewards. :meth:`Policy.update` may come long after the matching
:meth:`Policy.choose`, for any earlier decision, in any order; nothing assumes that an update
belongs to the latest choice. Every learning policy here keeps order-independent sufficient
statistics (sums), so the posterior after a set of updates does not depend on the order in
which they arrived (up to floating-point rounding).

Reproducibility. Every random component is seeded: the seed given to the constructor (or one
drawn once and then kept in :meth:`Policy.to_state` when ``seed`` is ``None``) seeds the
generator that :meth:`Policy.choose` draws with. Same seed and same calls give the same
decisions; a policy restored with :func:`policy_from_state` continues the same sequence.

>>> policy = ThompsonBernoulli(["a", "b"], seed=7)
>>> policy.probabilities()
{'a': 0.5, 'b': 0.5}
>>> for _ in range(20):
...     policy.update(None, "a", 1.0)
...     policy.update(None, "b", 0.0)
>>> policy.probabilities()["a"] > 0.99
True
>>> decision = policy.choose()
>>> decision.propensity == policy.probabilities()[decision.arm]
True
>>> policy_from_state(policy.to_state()).probabilities() == policy.probabilities()
True
"""

from __future__ import annotations

import bisect
import itertools
import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeAlias

import numpy as np
from numpy.typing import NDArray
from scipy.special import betainc, betaincinv

from nexus.emotion.models.taxonomy import PLUTCHIK, VAD

__all__ = [
    "EMOTION_DIMS",
    "STATE_VERSION",
    "Context",
    "ContextEncoder",
    "Decision",
    "LinUCB",
    "LinearThompson",
    "Policy",
    "ThompsonBernoulli",
    "UniformPolicy",
    "policy_from_state",
    "prob_best_beta",
]

Context: TypeAlias = NDArray[np.float64]
"""A context vector: a 1-D float64 array (see :class:`ContextEncoder`)."""

FloatArray: TypeAlias = NDArray[np.float64]

EMOTION_DIMS: Final[tuple[str, ...]] = (*PLUTCHIK, *VAD)
"""The 11 emotion dimensions of a reading: Plutchik-8 in [0, 1], then valence, arousal and
dominance in [-1, 1]."""

STATE_VERSION: Final[int] = 1
"""Version of the :meth:`Policy.to_state` document."""

_TIE_TOLERANCE: Final[float] = 1e-12
_SUM_TOLERANCE: Final[float] = 1e-9


@dataclass(frozen=True, slots=True)
class Decision:
    """One draw of a policy.

    ``propensity`` is ``probabilities[arm]``: the exact probability with which ``arm`` was
    drawn, the number to log for off-policy evaluation.
    """

    arm: str
    propensity: float
    probabilities: dict[str, float]


# --------------------------------------------------------------------------- validation


def _check_int(name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def _check_float(
    name: str, value: object, *, minimum: float | None = None, positive: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if positive and number <= 0.0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return number


def _check_arms(arms: Sequence[str]) -> tuple[str, ...]:
    if isinstance(arms, str | bytes):
        raise ValueError(f"arms must be a sequence of arm names, not a single string {arms!r}")
    names = tuple(arms)
    if not names:
        raise ValueError("a policy needs at least one arm")
    for arm in names:
        if not isinstance(arm, str) or not arm:
            raise ValueError(f"arm names must be non-empty strings, got {arm!r}")
    if len(set(names)) != len(names):
        duplicates = sorted({arm for arm in names if names.count(arm) > 1})
        raise ValueError(f"arm names must be unique; duplicated: {duplicates}")
    return names


def _fresh_seed() -> int:
    """A seed drawn from the operating system's entropy, kept so the policy can be replayed."""
    return int(np.random.SeedSequence().entropy) % (2**63)  # type: ignore[arg-type]


def _rng_to_state(rng: np.random.Generator) -> dict[str, Any]:
    # PCG64's 128-bit integers are written as strings so any JSON reader keeps them exact.
    raw = rng.bit_generator.state
    inner = raw["state"]
    return {
        "bit_generator": raw["bit_generator"],
        "state": str(inner["state"]),
        "inc": str(inner["inc"]),
        "has_uint32": int(raw["has_uint32"]),
        "uinteger": int(raw["uinteger"]),
    }


def _rng_from_state(state: Mapping[str, Any]) -> np.random.Generator:
    if state.get("bit_generator") != "PCG64":
        raise ValueError(f"unsupported random generator in state: {state.get('bit_generator')!r}")
    bit_generator = np.random.PCG64()
    bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": int(state["state"]), "inc": int(state["inc"])},
        "has_uint32": int(state["has_uint32"]),
        "uinteger": int(state["uinteger"]),
    }
    return np.random.Generator(bit_generator)


# --------------------------------------------------------------------------- base class

_REGISTRY: dict[str, type[Policy]] = {}


class Policy(ABC):
    """Base class of the allocation policies.

    Parameters
    ----------
    arms:
        The arm names, in a fixed order (dicts returned keep this order).
    seed:
        Seeds :meth:`choose` (and any other random component). ``None`` draws a seed once;
        it is kept in :meth:`to_state`.
    burn_in:
        Uniform allocation until every arm has at least this many updates.
    min_share:
        Exploration floor after burn-in: each arm gets at least ``min_share``;
        ``len(arms) * min_share`` must be <= 1.
    """

    contextual: ClassVar[bool] = False
    """Whether the policy reads the context (contextual policies require one)."""

    arms: tuple[str, ...]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_"):
            _REGISTRY[cls.__name__] = cls

    def __init__(
        self,
        arms: Sequence[str],
        *,
        seed: int | None = None,
        burn_in: int = 0,
        min_share: float = 0.0,
    ) -> None:
        self.arms = _check_arms(arms)
        k = len(self.arms)
        self._index = {arm: i for i, arm in enumerate(self.arms)}
        self._seed = _fresh_seed() if seed is None else _check_int("seed", seed, minimum=0)
        self._burn_in = _check_int("burn_in", burn_in, minimum=0)
        self._min_share = _check_float("min_share", min_share, minimum=0.0)
        if k * self._min_share > 1.0 + _SUM_TOLERANCE:
            raise ValueError(
                f"min_share={min_share!r} is too large for {k} arms: "
                f"k * min_share = {k * self._min_share:.6g} > 1"
            )
        self._rng = np.random.Generator(np.random.PCG64(self._seed))
        # Rewards per arm, as Python ints: read on every decision, where numpy's reductions
        # over a handful of counts cost more than the arithmetic.
        self._pulls: list[int] = [0] * k

    # ------------------------------------------------------------------ properties

    @property
    def seed(self) -> int:
        """The seed of the policy's random generator."""
        return self._seed

    @property
    def burn_in(self) -> int:
        return self._burn_in

    @property
    def min_share(self) -> float:
        return self._min_share

    @property
    def n_arms(self) -> int:
        return len(self.arms)

    @property
    def n_updates(self) -> int:
        """Number of rewards received (calls to :meth:`update`)."""
        return sum(self._pulls)

    @property
    def pulls(self) -> dict[str, int]:
        """Rewards received per arm (calls to :meth:`update` per arm)."""
        return dict(zip(self.arms, self._pulls, strict=True))

    @property
    def in_burn_in(self) -> bool:
        """True while some arm has fewer than ``burn_in`` updates."""
        return min(self._pulls) < self._burn_in

    @property
    def n_features(self) -> int | None:
        """Context length a contextual policy expects; ``None`` for non-contextual ones."""
        return None

    # ------------------------------------------------------------------ public API

    def probabilities(self, context: Context | None = None) -> dict[str, float]:
        """The distribution :meth:`choose` draws from, for this context.

        Deterministic: the same state and context always give the same distribution.
        """
        return self._as_dict(self._distribution(self._check_context(context)))

    def choose(
        self, context: Context | None = None, *, allowed: Sequence[str] | None = None
    ) -> Decision:
        """Draw an arm from :meth:`probabilities` with the policy's seeded generator.

        ``allowed`` restricts the draw to some arms (a pool, e.g. the adaptations whose
        emotion trigger matches the visitor): the distribution is the policy's own, zeroed
        outside the pool and renormalised -- uniform over the pool if the policy gives it no
        mass -- and the returned probabilities (and so the propensity) are that restricted
        distribution's, which is what off-policy evaluation must be given."""
        p = self._distribution(self._check_context(context)).tolist()
        if allowed is not None:
            p = self._restricted(p, allowed)
        cumulative = list(itertools.accumulate(p))
        u = float(self._rng.random()) * cumulative[-1]
        index = bisect.bisect_right(cumulative, u)
        if index >= len(p) or p[index] <= 0.0:  # rounding at the top end: last positive arm
            index = max(i for i, value in enumerate(p) if value > 0.0)
        probabilities = dict(zip(self.arms, p, strict=True))
        arm = self.arms[index]
        return Decision(arm=arm, propensity=probabilities[arm], probabilities=probabilities)

    def update(self, context: Context | None, arm: str, reward: float) -> None:
        """Learn from the reward of one earlier decision (any earlier one, in any order)."""
        index = self._arm_index(arm)
        value = self._check_reward(reward)
        x = self._check_context(context)
        self._update(x, index, value)
        self._pulls[index] += 1

    def to_state(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot: class name, parameters, counts, posterior, generator."""
        return {
            "class": type(self).__name__,
            "version": STATE_VERSION,
            "params": {
                "arms": list(self.arms),
                "seed": self._seed,
                "burn_in": self._burn_in,
                "min_share": self._min_share,
                **self._params(),
            },
            "pulls": list(self._pulls),
            "posterior": self._posterior_state(),
            "rng": _rng_to_state(self._rng),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Policy:
        """Rebuild a policy from :meth:`to_state`.

        Called on :class:`Policy` it dispatches on the class name (like
        :func:`policy_from_state`); called on a subclass it also checks the class.
        """
        if not isinstance(state, Mapping):
            raise ValueError("policy state must be a mapping")
        name = state.get("class")
        target = _REGISTRY.get(name) if isinstance(name, str) else None
        if target is None:
            raise ValueError(f"unknown policy class in state: {name!r}")
        if not issubclass(target, cls):
            raise ValueError(f"state holds a {name}, not a {cls.__name__}")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported policy state version: {state.get('version')!r}")
        try:
            params = dict(state["params"])
            arms = params.pop("arms")
            policy = target(arms, **params)
            pulls = np.asarray(state["pulls"], dtype=np.int64)
            if pulls.shape != (policy.n_arms,) or (pulls < 0).any():
                raise ValueError("pulls must hold one non-negative count per arm")
            policy._pulls = [int(count) for count in pulls.tolist()]
            policy._load_posterior(state["posterior"])
            policy._rng = _rng_from_state(state["rng"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed {name} state: {exc!r}") from exc
        return policy

    def __repr__(self) -> str:
        params = ", ".join(f"{key}={value!r}" for key, value in self._params().items())
        extra = f", {params}" if params else ""
        return (
            f"{type(self).__name__}(arms={list(self.arms)!r}{extra}, seed={self._seed}, "
            f"burn_in={self._burn_in}, min_share={self._min_share})"
        )

    # ------------------------------------------------------------------ hooks

    @abstractmethod
    def _probabilities(self, context: Context | None) -> FloatArray:
        """The policy's own distribution over ``self.arms`` (before burn-in and floor)."""

    def _update(self, context: Context | None, index: int, reward: float) -> None:  # noqa: B027
        """Learn from one reward; the default learns nothing."""

    def _params(self) -> dict[str, Any]:
        """Constructor keyword arguments beyond arms, seed, burn_in and min_share."""
        return {}

    def _posterior_state(self) -> dict[str, Any]:
        return {}

    def _load_posterior(self, posterior: Mapping[str, Any]) -> None:  # noqa: B027
        """Restore what :meth:`_posterior_state` wrote."""

    def _check_reward(self, reward: float) -> float:
        return _check_float("reward", reward)

    # ------------------------------------------------------------------ helpers

    def _distribution(self, context: Context | None) -> FloatArray:
        k = len(self.arms)
        if self.in_burn_in:
            return np.full(k, 1.0 / k)
        raw = np.asarray(self._probabilities(context), dtype=np.float64)
        # A handful of arms: plain floats are cheaper to check and normalise than ufuncs.
        values = raw.tolist() if raw.shape == (k,) else []
        total = sum(values)
        if not values or not all(math.isfinite(v) and v >= 0.0 for v in values) or not total > 0.0:
            raise RuntimeError(f"{type(self).__name__} produced an invalid distribution: {raw}")
        values = [v / total for v in values]
        if self._min_share > 0.0:
            spread = max(0.0, 1.0 - k * self._min_share)
            values = [self._min_share + spread * v for v in values]
            total = sum(values)
            values = [v / total for v in values]
        return np.array(values, dtype=np.float64)

    def _restricted(self, p: list[float], allowed: Sequence[str]) -> list[float]:
        keep = {self._arm_index(arm) for arm in allowed}
        if not keep:
            raise ValueError("allowed must name at least one arm")
        masked = [value if i in keep else 0.0 for i, value in enumerate(p)]
        total = sum(masked)
        if total > 0.0:
            return [value / total for value in masked]
        share = 1.0 / len(keep)
        return [share if i in keep else 0.0 for i in range(len(p))]

    def _as_dict(self, p: FloatArray) -> dict[str, float]:
        return dict(zip(self.arms, p.tolist(), strict=True))

    def _arm_index(self, arm: str) -> int:
        try:
            return self._index[arm]
        except (KeyError, TypeError):
            raise ValueError(f"unknown arm {arm!r}; arms are {list(self.arms)}") from None

    def _check_context(self, context: Context | None) -> Context | None:
        """Non-contextual policies ignore the context; contextual ones validate it."""
        d = self.n_features
        if d is None:
            return None
        if context is None:
            raise ValueError(f"{type(self).__name__} needs a context vector of length {d}")
        x = np.asarray(context, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"context must be a 1-D vector, got shape {x.shape}")
        if x.shape[0] != d:
            raise ValueError(
                f"context has {x.shape[0]} features; this policy expects n_features={d}"
            )
        if not np.isfinite(x).all():
            raise ValueError("context must be finite (no NaN or infinity)")
        return x


def policy_from_state(state: Mapping[str, Any]) -> Policy:
    """Rebuild any policy from :meth:`Policy.to_state`, dispatching on its class name."""
    return Policy.from_state(state)


# --------------------------------------------------------------------------- A/B/n


class UniformPolicy(Policy):
    """A/B/n baseline: every arm with probability ``1/k``, whatever the rewards."""

    def _probabilities(self, context: Context | None) -> FloatArray:
        return np.full(len(self.arms), 1.0 / len(self.arms))


# --------------------------------------------------------------------------- Thompson


def prob_best_beta(
    alpha: Sequence[float] | FloatArray,
    beta: Sequence[float] | FloatArray,
    *,
    nodes: int = 256,
) -> FloatArray:
    """``P(arm i has the largest mean)`` for independent ``Beta(alpha_i, beta_i)`` posteriors.

    ``P_i = ∫ Π_{j≠i} F_j(x) dF_i(x)``, the probability that Thompson sampling picks arm
    ``i`` (Chapelle & Li, 2011, "An Empirical Evaluation of Thompson Sampling"), computed
    deterministically: the integration grid is the union of each arm's quantiles at levels
    ``1/nodes, …, (nodes-1)/nodes`` (plus 0 and 1), so every posterior, however narrow, is
    resolved (each ``F_j`` moves by at most ``1/nodes`` between grid points), and the
    Stieltjes integral is taken with the trapezoid rule. The result is normalised to sum
    to 1. Error is second order in the grid spacing (below 1e-5 at the default on typical
    posteriors).

    >>> prob_best_beta([1.0, 1.0], [1.0, 1.0]).round(4).tolist()
    [0.5, 0.5]
    >>> round(float(prob_best_beta([2.0, 1.0], [1.0, 1.0])[0]), 4)  # P(X > Y) = 2/3
    0.6667
    """
    a = np.asarray(alpha, dtype=np.float64)
    b = np.asarray(beta, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise ValueError("alpha and beta must be 1-D arrays of the same non-zero length")
    if not (np.isfinite(a).all() and np.isfinite(b).all() and (a > 0).all() and (b > 0).all()):
        raise ValueError("Beta parameters must be finite and > 0")
    k = a.size
    if k == 1:
        return np.ones(1)
    levels = np.arange(1, nodes, dtype=np.float64) / nodes
    quantiles = betaincinv(a[:, None], b[:, None], levels[None, :])
    grid = np.unique(np.concatenate(([0.0, 1.0], np.clip(quantiles.ravel(), 0.0, 1.0))))
    cdf = np.asarray(betainc(a[:, None], b[:, None], grid[None, :]), dtype=np.float64)
    cdf[:, 0] = 0.0
    cdf[:, -1] = 1.0
    # Π_{j≠i} F_j at every grid point, from prefix and suffix products (no division by 0).
    ones = np.ones((1, grid.size))
    prefix = np.cumprod(np.vstack((ones, cdf[:-1])), axis=0)
    suffix = np.cumprod(np.vstack((ones, cdf[:0:-1])), axis=0)[::-1]
    others = prefix * suffix
    d_cdf = np.diff(cdf, axis=1)
    p = (d_cdf * 0.5 * (others[:, 1:] + others[:, :-1])).sum(axis=1)
    p = np.clip(p, 0.0, None)
    return np.asarray(p / p.sum(), dtype=np.float64)


class ThompsonBernoulli(Policy):
    """Bernoulli Thompson sampling with Beta posteriors (Chapelle & Li, 2011).

    Arm ``i`` has posterior ``Beta(a_i, b_i)``, starting at ``Beta(prior_alpha,
    prior_beta)``; a reward ``r`` in [0, 1] adds ``r`` to ``a_i`` and ``1 - r`` to ``b_i``
    (fractional rewards are the usual Bernoulli-trick generalisation, Agrawal & Goyal 2012).

    Classical Thompson sampling draws one value per posterior and plays the argmax; the
    probability of playing arm ``i`` is therefore ``P(arm i is best)``. :meth:`probabilities`
    computes those probabilities by quadrature (:func:`prob_best_beta`), and :meth:`choose`
    draws from them: the same allocation, with an exact propensity. The probabilities are
    cached until the next update.
    """

    def __init__(
        self,
        arms: Sequence[str],
        *,
        prior_alpha: float = 1.0,
        prior_beta: float = 1.0,
        seed: int | None = None,
        burn_in: int = 0,
        min_share: float = 0.0,
    ) -> None:
        super().__init__(arms, seed=seed, burn_in=burn_in, min_share=min_share)
        self._prior_alpha = _check_float("prior_alpha", prior_alpha, positive=True)
        self._prior_beta = _check_float("prior_beta", prior_beta, positive=True)
        self._successes = np.zeros(len(self.arms))
        self._failures = np.zeros(len(self.arms))
        self._cache: FloatArray | None = None

    @property
    def posterior(self) -> dict[str, tuple[float, float]]:
        """``(alpha, beta)`` of each arm's Beta posterior."""
        a, b = self._posterior_parameters()
        return {arm: (float(x), float(y)) for arm, x, y in zip(self.arms, a, b, strict=True)}

    def means(self) -> dict[str, float]:
        """Posterior mean reward of each arm."""
        a, b = self._posterior_parameters()
        return self._as_dict(a / (a + b))

    def _posterior_parameters(self) -> tuple[FloatArray, FloatArray]:
        return self._prior_alpha + self._successes, self._prior_beta + self._failures

    def _probabilities(self, context: Context | None) -> FloatArray:
        if self._cache is None:
            self._cache = prob_best_beta(*self._posterior_parameters())
        return self._cache

    def _check_reward(self, reward: float) -> float:
        value = _check_float("reward", reward)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"ThompsonBernoulli rewards must lie in [0, 1], got {reward!r}")
        return value

    def _update(self, context: Context | None, index: int, reward: float) -> None:
        self._successes[index] += reward
        self._failures[index] += 1.0 - reward
        self._cache = None

    def _params(self) -> dict[str, Any]:
        return {"prior_alpha": self._prior_alpha, "prior_beta": self._prior_beta}

    def _posterior_state(self) -> dict[str, Any]:
        return {"successes": self._successes.tolist(), "failures": self._failures.tolist()}

    def _load_posterior(self, posterior: Mapping[str, Any]) -> None:
        k = len(self.arms)
        successes = np.asarray(posterior["successes"], dtype=np.float64)
        failures = np.asarray(posterior["failures"], dtype=np.float64)
        for name, values in (("successes", successes), ("failures", failures)):
            if values.shape != (k,) or not np.isfinite(values).all() or (values < 0).any():
                raise ValueError(f"posterior {name} must hold one non-negative number per arm")
        self._successes, self._failures = successes, failures
        self._cache = None


# --------------------------------------------------------------------------- linear models


class _LinearPolicy(Policy):
    """Per-arm (disjoint) ridge statistics ``A_a = λI + Σ x xᵀ`` and ``b_a = Σ r x``."""

    contextual = True

    def __init__(
        self,
        arms: Sequence[str],
        n_features: int,
        *,
        ridge: float = 1.0,
        seed: int | None = None,
        burn_in: int = 0,
        min_share: float = 0.0,
    ) -> None:
        super().__init__(arms, seed=seed, burn_in=burn_in, min_share=min_share)
        self._d = _check_int("n_features", n_features, minimum=1)
        self._ridge = _check_float("ridge", ridge, positive=True)
        k = len(self.arms)
        self._gram = np.repeat(np.eye(self._d)[None, :, :] * self._ridge, k, axis=0)
        self._moment = np.zeros((k, self._d))
        self._solved: list[tuple[FloatArray, FloatArray] | None] = [None] * k
        # Every arm's θ stacked (k, d) and A⁻¹ stacked (k, d, d): one decision scores all
        # arms in two matrix products. Dropped with any arm's solution.
        self._stacked: tuple[FloatArray, FloatArray] | None = None

    @property
    def n_features(self) -> int:
        return self._d

    @property
    def ridge(self) -> float:
        return self._ridge

    def _solve(self, index: int) -> tuple[FloatArray, FloatArray]:
        """``(θ_a, A_a⁻¹)``, cached until the arm's next update."""
        cached = self._solved[index]
        if cached is None:
            rhs = np.column_stack((self._moment[index], np.eye(self._d)))
            solution = np.linalg.solve(self._gram[index], rhs)
            inverse = 0.5 * (solution[:, 1:] + solution[:, 1:].T)
            cached = (np.ascontiguousarray(solution[:, 0]), inverse)
            self._solved[index] = cached
        return cached

    def _score_moments(self, x: Context) -> tuple[FloatArray, FloatArray]:
        """Per arm: ``xᵀθ_a`` and ``xᵀA_a⁻¹x``."""
        stacked = self._stacked
        if stacked is None:
            solved = [self._solve(index) for index in range(len(self.arms))]
            stacked = (np.stack([t for t, _ in solved]), np.stack([inv for _, inv in solved]))
            self._stacked = stacked
        thetas, inverses = stacked
        return thetas @ x, np.maximum(0.0, (inverses @ x) @ x)

    def coefficients(self) -> dict[str, list[float]]:
        """Ridge estimate ``θ_a = A_a⁻¹ b_a`` per arm."""
        return {arm: self._solve(i)[0].tolist() for i, arm in enumerate(self.arms)}

    def _update(self, context: Context | None, index: int, reward: float) -> None:
        assert context is not None
        self._gram[index] += np.outer(context, context)
        self._moment[index] += reward * context
        self._solved[index] = None
        self._stacked = None

    def _params(self) -> dict[str, Any]:
        return {"n_features": self._d, "ridge": self._ridge}

    def _posterior_state(self) -> dict[str, Any]:
        return {"A": self._gram.tolist(), "b": self._moment.tolist()}

    def _load_posterior(self, posterior: Mapping[str, Any]) -> None:
        k, d = len(self.arms), self._d
        gram = np.asarray(posterior["A"], dtype=np.float64)
        moment = np.asarray(posterior["b"], dtype=np.float64)
        if gram.shape != (k, d, d) or moment.shape != (k, d):
            raise ValueError(f"posterior A must be {k}x{d}x{d} and b {k}x{d}")
        if not (np.isfinite(gram).all() and np.isfinite(moment).all()):
            raise ValueError("posterior must be finite")
        self._gram, self._moment = gram, moment
        self._solved = [None] * k
        self._stacked = None


class LinearThompson(_LinearPolicy):
    """Linear Thompson sampling (Agrawal & Goyal, 2013, "Thompson Sampling for Contextual
    Bandits with Linear Payoffs"), one ridge posterior per arm (the disjoint model).

    Arm ``a`` keeps ``B_a = λI + Σ x xᵀ`` and ``f_a = Σ r x`` over its updates, so
    ``μ̂_a = B_a⁻¹ f_a``. Thompson sampling draws ``μ̃_a ~ N(μ̂_a, v² B_a⁻¹)`` and plays
    ``argmax_a xᵀμ̃_a``. For a given context the sampled score is exactly
    ``xᵀμ̃_a ~ N(xᵀμ̂_a, v² xᵀB_a⁻¹x)``, independently across arms, so the scores are drawn
    directly (same distribution, ``d`` times cheaper).

    :meth:`probabilities` estimates ``P(arm a has the max sampled score)`` from ``n_draws``
    posterior draws (ties split evenly) with a generator seeded from ``(seed, n_updates)``:
    repeated calls with the same state and context agree, and :meth:`choose` draws from
    exactly that distribution, so its propensity is exact for the draw it made.

    ``v`` scales exploration; the paper's ``v = R·sqrt(24 d ln(1/δ)/ε)`` is a worst-case
    constant and far too large in practice, hence a small default.
    """

    def __init__(
        self,
        arms: Sequence[str],
        n_features: int,
        *,
        v: float = 0.25,
        ridge: float = 1.0,
        n_draws: int = 2000,
        seed: int | None = None,
        burn_in: int = 0,
        min_share: float = 0.0,
    ) -> None:
        super().__init__(
            arms, n_features, ridge=ridge, seed=seed, burn_in=burn_in, min_share=min_share
        )
        self._v = _check_float("v", v, minimum=0.0)
        self._n_draws = _check_int("n_draws", n_draws, minimum=1)
        # The standard normal draws depend only on (seed, n_updates): between two updates
        # every decision reuses them, which keeps a decision cheap.
        self._normals: tuple[int, FloatArray] | None = None

    @property
    def v(self) -> float:
        return self._v

    @property
    def n_draws(self) -> int:
        return self._n_draws

    def _probabilities(self, context: Context | None) -> FloatArray:
        assert context is not None
        means, variances = self._score_moments(context)
        updates = self.n_updates
        if self._normals is None or self._normals[0] != updates:
            rng = np.random.Generator(np.random.PCG64([self._seed, updates, 0x7E57]))
            draws = rng.standard_normal((self._n_draws, len(self.arms)))
            # Stored arm-major, (arms, draws): reductions across arms then run over whole
            # contiguous rows, several times cheaper than along a short last axis.
            self._normals = (updates, np.ascontiguousarray(draws.T))
        normal = self._normals[1]
        spread = self._v * np.sqrt(variances)
        scores = means[:, None] + spread[:, None] * normal
        best = scores >= scores.max(axis=0)
        if np.count_nonzero(best) == self._n_draws:  # one winner per draw, no tie to split
            wins = best.sum(axis=1).astype(np.float64)
        else:  # a tied draw is split evenly between the arms sharing its max
            wins = (best / best.sum(axis=0)).sum(axis=1)
        return np.asarray(wins / self._n_draws, dtype=np.float64)

    def _params(self) -> dict[str, Any]:
        return {**super()._params(), "v": self._v, "n_draws": self._n_draws}


class LinUCB(_LinearPolicy):
    """Disjoint LinUCB (Li, Chu, Langford & Schapire, 2010, "A Contextual-Bandit Approach to
    Personalized News Article Recommendation", Algorithm 1).

    Arm ``a`` keeps ``A_a = λI + Σ x xᵀ`` and ``b_a = Σ r x``; with ``θ̂_a = A_a⁻¹ b_a`` its
    upper confidence bound is ``p_a = xᵀθ̂_a + alpha·sqrt(xᵀA_a⁻¹x)``. The policy is the
    deterministic argmax: probability 1 on the best bound, split evenly between ties (bounds
    within 1e-12 relative), then the ``min_share`` floor, so propensities stay positive when
    ``min_share > 0``.
    """

    def __init__(
        self,
        arms: Sequence[str],
        n_features: int,
        *,
        alpha: float = 1.0,
        ridge: float = 1.0,
        seed: int | None = None,
        burn_in: int = 0,
        min_share: float = 0.0,
    ) -> None:
        super().__init__(
            arms, n_features, ridge=ridge, seed=seed, burn_in=burn_in, min_share=min_share
        )
        self._alpha = _check_float("alpha", alpha, minimum=0.0)

    @property
    def alpha(self) -> float:
        return self._alpha

    def upper_bounds(self, context: Context) -> dict[str, float]:
        """``p_a`` of every arm for this context."""
        x = self._check_context(context)
        assert x is not None
        return self._as_dict(self._bounds(x))

    def _bounds(self, x: Context) -> FloatArray:
        means, variances = self._score_moments(x)
        return np.asarray(means + self._alpha * np.sqrt(variances), dtype=np.float64)

    def _probabilities(self, context: Context | None) -> FloatArray:
        assert context is not None
        bounds = self._bounds(context)
        top = float(bounds.max())
        best = bounds >= top - _TIE_TOLERANCE * max(1.0, abs(top))
        return np.asarray(best / best.sum(), dtype=np.float64)

    def _params(self) -> dict[str, Any]:
        return {**super()._params(), "alpha": self._alpha}


# --------------------------------------------------------------------------- context


def _lookup(attributes: Mapping[str, Any], name: str) -> Any:
    """``attributes[name]``, else the dotted path ``a.b`` → ``attributes["a"]["b"]``."""
    if name in attributes:
        return attributes[name]
    value: Any = attributes
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _number(name: str, value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


# Each emotion dimension with its lower clip (Plutchik intensities 0, the VAD axes -1).
_EMOTION_LOWS = tuple((dim, 0.0 if dim in PLUTCHIK else -1.0) for dim in EMOTION_DIMS)
# The emotion block of a visitor with no reading: 11 zeros, then ``emotion_missing``.
_NO_EMOTION = (0.0,) * len(EMOTION_DIMS) + (1.0,)


class ContextEncoder:
    """Builds the context vector of the contextual policies.

    Layout (``feature_names`` lists it):

    * ``bias``: 1.0;
    * the 11 emotion dimensions (:data:`EMOTION_DIMS`): Plutchik joy, trust, fear, surprise,
      sadness, disgust, anger, anticipation clipped to [0, 1], then valence, arousal and
      dominance clipped to [-1, 1]; a dimension absent from the reading counts 0;
    * ``emotion_missing``: 1.0 when there is no reading (``None`` or none of the 11 keys),
      the emotion dimensions then all 0;
    * the numeric ``attributes``, in order (missing or ``None`` → 0.0, booleans → 0/1);
    * one-hot blocks for ``categories`` (``{"device": ["mobile", "desktop"]}`` →
      ``device=mobile``, ``device=desktop``); a missing or unlisted value is all zeros.

    Attribute names may be dotted paths into nested attributes (``"emotion.plutchik"``), as
    in flag clauses. Non-numeric values for numeric features raise :class:`ValueError`.

    >>> encoder = ContextEncoder(attributes=["returning"], categories={"device": ["mobile"]})
    >>> encoder.n_features
    15
    >>> x = encoder.encode({"anger": 0.9, "valence": -0.6}, {"returning": True, "device": "mobile"})
    >>> dict(zip(encoder.feature_names, x.tolist()))["anger"]
    0.9
    >>> x[[0, 9, 12, 13, 14]].tolist()  # bias, valence, emotion_missing, returning, mobile
    [1.0, -0.6, 0.0, 1.0, 1.0]
    >>> encoder.encode(None, {})[12].item()  # emotion_missing
    1.0
    """

    def __init__(
        self,
        attributes: Sequence[str] = (),
        categories: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        if isinstance(attributes, str):
            raise ValueError("attributes must be a sequence of names, not a single string")
        self._attributes = tuple(attributes)
        self._categories = {name: tuple(values) for name, values in (categories or {}).items()}
        names = [*self._attributes, *self._categories]
        for name in names:
            if not isinstance(name, str) or not name:
                raise ValueError(f"attribute names must be non-empty strings, got {name!r}")
        if len(set(names)) != len(names):
            raise ValueError(
                f"attribute names must be unique across attributes and categories: {names}"
            )
        for name, values in self._categories.items():
            if isinstance(values, str) or not values:
                raise ValueError(f"category {name!r} needs a non-empty list of values")
            if len(set(values)) != len(values):
                raise ValueError(f"category {name!r} lists a value twice: {list(values)}")
        self.feature_names: tuple[str, ...] = (
            "bias",
            *EMOTION_DIMS,
            "emotion_missing",
            *self._attributes,
            *(f"{name}={value}" for name, values in self._categories.items() for value in values),
        )
        self.n_features: int = len(self.feature_names)

    @property
    def attributes(self) -> tuple[str, ...]:
        return self._attributes

    @property
    def categories(self) -> dict[str, tuple[str, ...]]:
        return dict(self._categories)

    def encode(
        self, emotion: Mapping[str, Any] | None, attributes: Mapping[str, Any] | None = None
    ) -> Context:
        """The context vector for one visitor (see the class docstring for the layout)."""
        # Built as a list and converted once: setting numpy elements one by one costs more.
        x = [1.0]
        present = emotion is not None and any(dim in emotion for dim in EMOTION_DIMS)
        if present:
            assert emotion is not None
            for dim, low in _EMOTION_LOWS:
                raw = emotion.get(dim)
                value = raw if type(raw) is float and math.isfinite(raw) else None
                if value is None:
                    value = _number(f"emotion {dim}", raw)
                x.append(min(1.0, max(low, value)))
            x.append(0.0)
        else:
            x.extend(_NO_EMOTION)
        attrs: Mapping[str, Any] = attributes or {}
        for name in self._attributes:
            x.append(_number(f"attribute {name!r}", _lookup(attrs, name)))
        for name, values in self._categories.items():
            value = _lookup(attrs, name)
            x.extend(1.0 if value is not None and value == c else 0.0 for c in values)
        return np.array(x, dtype=np.float64)

    def to_state(self) -> dict[str, Any]:
        """JSON-serialisable parameters (``ContextEncoder.from_state`` rebuilds it)."""
        return {
            "attributes": list(self._attributes),
            "categories": {name: list(values) for name, values in self._categories.items()},
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ContextEncoder:
        return cls(attributes=state.get("attributes", ()), categories=state.get("categories"))

    def __repr__(self) -> str:
        return (
            f"ContextEncoder(attributes={list(self._attributes)!r}, categories={self.categories!r})"
        )
