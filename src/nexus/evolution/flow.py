"""Adaptive flow (issue #8): each visitor's path through a funnel, changed step by step by a
contextual bandit that reads the visitor's emotion (pure core).

A **flow** (:class:`FlowSpec`) is a funnel's designed order of steps. Some steps are
*optional* (a feature tour, an upsell), some belong to a *reorderable group* (an account form
and a plan picker that may come in either order), and the flow may name a *reassurance* step
(a guarantee, testimonials) that is not on the designed path but may be inserted. The last
step is the goal: a visitor who completes it converts.

Before every step a visitor is shown, the adapter picks one **action** (:data:`ACTIONS`):

* ``continue``: the next step as designed;
* ``skip_optional``: the next step is optional, jump past it to the one after;
* ``insert_reassurance``: show the reassurance step now, the designed next step after it;
* ``reorder``: the next two steps share a reorderable group, show the second one first (the
  one passed over stays next).

Only the actions valid at the visitor's position are offered (:func:`allowed_actions`); where
only ``continue`` is valid there is no decision to make and nothing to learn.

**Context**: the visitor's 11-dimension emotion reading (Plutchik-8, valence, arousal,
dominance; :data:`nexus.experiments.bandits.EMOTION_DIMS`), read afresh before each step so
that frustration building up along the path is seen, plus where the visitor is: which step
is next, how much of the designed path is done, whether it was already reassured.

**Policy**: linear Thompson sampling, one ridge posterior per action
(:class:`nexus.experiments.bandits.LinearThompson`), drawn among the allowed actions only.

**Reward and credit assignment**: the funnel's outcome, not a step's. When the journey ends
(:meth:`FlowAdapter.learn`) every decision of the visitor's journey is rewarded 1 if the
visitor converted and 0 otherwise: the Monte Carlo return of an episode with one terminal
reward and no discounting (Sutton & Barto, 2018, *Reinforcement Learning*, section 5.1). So
an action is valued by the conversion of the journeys that followed it, under the policy
then in force, and a change that keeps visitors one step longer but loses them later (an
extra step that only delays drop-off) earns nothing. A per-step reward (did the visitor
complete the step just shown?) would be myopic: it favours skipping any step and cannot see
that an information step or a reassurance pays off steps later. Decisions without a choice
are not learnt from.

:class:`FlowWorld` is the simulator the benchmark and the tests judge the adapter in: seeded
visitors of emotional archetypes whose frustration rises along the path, with a known truth,
so the designed path, the adapter and the oracle that knows each visitor's hidden state can
be compared on the same visitors (common random numbers).

Everything is seeded and does no I/O: the runtime persists :meth:`FlowAdapter.to_state` and
each visitor's :class:`Journey` (``Journey.to_state``) and calls :meth:`FlowAdapter.decide`
and :meth:`FlowAdapter.learn`.

>>> adapter = FlowAdapter(SIGNUP_FLOW, seed=7)
>>> journey = Journey.start(SIGNUP_FLOW)
>>> decision = adapter.decide(journey, {"joy": 0.8, "valence": 0.6})
>>> decision.step, decision.action  # the first step has no alternative
('offer', 'continue')
>>> decision = adapter.decide(decision.journey, {"fear": 0.7, "valence": -0.4})
>>> decision.action in allowed_actions(SIGNUP_FLOW, decision.journey_before)
True
>>> adapter.learn(decision.journey, converted=False)  # the visitor left: one choice learnt
1
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import numpy as np
from numpy.typing import NDArray

from nexus.emotion.models.taxonomy import PLUTCHIK
from nexus.experiments import simulation as sim
from nexus.experiments.bandits import (
    EMOTION_DIMS,
    Context,
    ContextEncoder,
    LinearThompson,
    Policy,
    policy_from_state,
)

__all__ = [
    "ACTIONS",
    "ARCHETYPE_TRUTH",
    "CONTINUE",
    "INSERT_REASSURANCE",
    "REORDER",
    "SIGNUP_FLOW",
    "SKIP_OPTIONAL",
    "STEP_TRUTH",
    "ArchetypeTruth",
    "Choice",
    "FlowAdapter",
    "FlowDecision",
    "FlowError",
    "FlowRun",
    "FlowSpec",
    "FlowSpecError",
    "FlowStep",
    "FlowWorld",
    "Journey",
    "StepTruth",
    "allowed_actions",
    "apply_action",
    "serve",
]

FloatArray: TypeAlias = NDArray[np.float64]
EmotionReading: TypeAlias = Mapping[str, Any] | Sequence[float] | None
"""An emotion reading: a mapping by dimension name, 11 numbers in
:data:`~nexus.experiments.bandits.EMOTION_DIMS` order, or ``None`` when there is none."""

CONTINUE: Final = "continue"
SKIP_OPTIONAL: Final = "skip_optional"
INSERT_REASSURANCE: Final = "insert_reassurance"
REORDER: Final = "reorder"
ACTIONS: Final[tuple[str, ...]] = (CONTINUE, SKIP_OPTIONAL, INSERT_REASSURANCE, REORDER)

STATE_VERSION: Final = 1
MAX_STEPS: Final = 32
MAX_KEY_LENGTH: Final = 64


class FlowError(ValueError):
    """An action, journey, reading or state that does not fit the flow."""


class FlowSpecError(FlowError):
    """A flow definition that cannot be served."""


# --------------------------------------------------------------------------- the flow


def _check_key(what: str, key: object) -> str:
    if not isinstance(key, str) or not key:
        raise FlowSpecError(f"{what} needs a non-empty string key, got {key!r}")
    if key != key.strip() or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise FlowSpecError(
            f"{what} key {key!r} must be printable, at most {MAX_KEY_LENGTH} characters, "
            "without surrounding spaces"
        )
    return key


@dataclass(frozen=True, slots=True)
class FlowStep:
    """One step of the designed path.

    ``optional``: the adapter may skip it. ``group``: steps sharing a group (consecutive on
    the designed path) may be shown in another order. ``reassure_before``: the reassurance
    step may be inserted just before this one.
    """

    key: str
    optional: bool = False
    group: str | None = None
    reassure_before: bool = True

    def __post_init__(self) -> None:
        _check_key("a step", self.key)
        if self.group is not None:
            _check_key(f"step {self.key!r}'s group", self.group)
        for name in ("optional", "reassure_before"):
            if not isinstance(getattr(self, name), bool):
                raise FlowSpecError(f"step {self.key!r}: {name} must be true or false")


def _check_groups(steps: tuple[FlowStep, ...]) -> None:
    """A reorderable group is two or more consecutive steps."""
    last_index: dict[str, int] = {}
    for index, step in enumerate(steps):
        if step.group is None:
            continue
        if step.group in last_index and last_index[step.group] != index - 1:
            raise FlowSpecError(
                f"group {step.group!r} must be consecutive steps; {step.key!r} is "
                "apart from the rest of its group"
            )
        last_index[step.group] = index
    for group in last_index:
        if sum(step.group == group for step in steps) < 2:
            raise FlowSpecError(f"group {group!r} has one step; a group needs at least two")


@dataclass(frozen=True, slots=True)
class FlowSpec:
    """A funnel's designed path and what may change in it; validated on construction."""

    steps: tuple[FlowStep, ...]
    reassurance: str | None = None
    max_reassurances: int = 1

    def __post_init__(self) -> None:
        steps = self.steps
        if not isinstance(steps, tuple) or not all(isinstance(s, FlowStep) for s in steps):
            raise FlowSpecError("steps must be a tuple of FlowStep")
        if not steps:
            raise FlowSpecError("a flow needs at least one step")
        if len(steps) > MAX_STEPS:
            raise FlowSpecError(f"a flow has at most {MAX_STEPS} steps, got {len(steps)}")
        keys = [step.key for step in steps]
        duplicated = sorted({key for key in keys if keys.count(key) > 1})
        if duplicated:
            raise FlowSpecError(f"step keys must be unique; repeated: {', '.join(duplicated)}")
        goal = steps[-1]
        if goal.optional:
            raise FlowSpecError(f"the last step {goal.key!r} is the goal and cannot be optional")
        if goal.group is not None:
            raise FlowSpecError(f"the last step {goal.key!r} is the goal and cannot be reordered")
        _check_groups(steps)
        if self.reassurance is not None:
            _check_key("the reassurance step", self.reassurance)
            if self.reassurance in keys:
                raise FlowSpecError(
                    f"the reassurance step {self.reassurance!r} is inserted, so it cannot "
                    "also be a step of the designed path"
                )
        limit = self.max_reassurances
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_STEPS:
            raise FlowSpecError(f"max_reassurances must be an integer in [0, {MAX_STEPS}]")

    @classmethod
    def build(
        cls,
        steps: Sequence[str | FlowStep | Mapping[str, Any]],
        *,
        reassurance: str | None = None,
        max_reassurances: int = 1,
    ) -> FlowSpec:
        """A flow from step keys, :class:`FlowStep` s or their mappings (``{"key": ...}``)."""
        built: list[FlowStep] = []
        for index, step in enumerate(steps):
            if isinstance(step, FlowStep):
                built.append(step)
            elif isinstance(step, str):
                built.append(FlowStep(step))
            elif isinstance(step, Mapping):
                unknown = set(step) - {"key", "optional", "group", "reassure_before"}
                if unknown:
                    raise FlowSpecError(f"step {index}: unknown field(s) {sorted(unknown)}")
                if "key" not in step:
                    raise FlowSpecError(f"step {index} needs a key")
                built.append(FlowStep(**step))
            else:
                raise FlowSpecError(f"step {index} must be a key, a FlowStep or a mapping")
        return cls(tuple(built), reassurance=reassurance, max_reassurances=max_reassurances)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(step.key for step in self.steps)

    @property
    def goal(self) -> str:
        return self.steps[-1].key

    def step(self, key: str) -> FlowStep:
        for step in self.steps:
            if step.key == key:
                return step
        raise FlowError(f"no step {key!r} in this flow; steps are {list(self.keys)}")

    @property
    def actions(self) -> tuple[str, ...]:
        """The actions some journey through this flow can take, in :data:`ACTIONS` order.

        ``skip_optional`` needs an optional step (never the goal, so one always follows it);
        ``reorder`` a group (consecutive, so its first two steps are next to each other on
        the designed path); ``insert_reassurance`` a reassurance step, a positive
        ``max_reassurances`` and a step that admits one before it.
        """
        possible = [CONTINUE]
        if any(step.optional for step in self.steps):
            possible.append(SKIP_OPTIONAL)
        if (
            self.reassurance is not None
            and self.max_reassurances > 0
            and any(step.reassure_before for step in self.steps)
        ):
            possible.append(INSERT_REASSURANCE)
        if any(step.group is not None for step in self.steps):
            possible.append(REORDER)
        return tuple(possible)

    def to_state(self) -> dict[str, Any]:
        return {
            "steps": [
                {
                    "key": step.key,
                    "optional": step.optional,
                    "group": step.group,
                    "reassure_before": step.reassure_before,
                }
                for step in self.steps
            ],
            "reassurance": self.reassurance,
            "max_reassurances": self.max_reassurances,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> FlowSpec:
        if not isinstance(state, Mapping) or not isinstance(state.get("steps"), list):
            raise FlowSpecError("a flow state is a mapping with a list of steps")
        return cls.build(
            state["steps"],
            reassurance=state.get("reassurance"),
            max_reassurances=state.get("max_reassurances", 1),
        )


@dataclass(frozen=True, slots=True)
class Choice:
    """A decision the adapter made with a choice between actions: what it learns from."""

    action: str
    context: tuple[float, ...]
    propensity: float


@dataclass(frozen=True, slots=True)
class Journey:
    """One visitor's position in a flow.

    ``pending``: designed steps still to come, in the order they will come unless changed
    (always the designed order less the steps shown or skipped); ``path``: the steps shown so
    far, reassurance included; ``actions``: every action taken, one per step shown;
    ``choices``: the decisions that had an alternative, with their context.
    """

    pending: tuple[str, ...]
    path: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    choices: tuple[Choice, ...] = ()

    @classmethod
    def start(cls, spec: FlowSpec) -> Journey:
        return cls(pending=spec.keys)

    @property
    def done(self) -> bool:
        """True once the goal step has been served (the visitor converts by completing it)."""
        return not self.pending

    @property
    def reassurances(self) -> int:
        return self.actions.count(INSERT_REASSURANCE)

    def to_state(self) -> dict[str, Any]:
        return {
            "pending": list(self.pending),
            "path": list(self.path),
            "actions": list(self.actions),
            "choices": [
                {"action": c.action, "context": list(c.context), "propensity": c.propensity}
                for c in self.choices
            ],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Journey:
        try:
            return cls(
                pending=tuple(map(str, state["pending"])),
                path=tuple(map(str, state["path"])),
                actions=tuple(map(str, state["actions"])),
                choices=tuple(
                    Choice(
                        action=str(c["action"]),
                        context=tuple(float(v) for v in c["context"]),
                        propensity=float(c["propensity"]),
                    )
                    for c in state["choices"]
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise FlowError(f"malformed journey state: {exc!r}") from exc


def allowed_actions(spec: FlowSpec, journey: Journey) -> tuple[str, ...]:
    """The actions valid at the journey's position, in :data:`ACTIONS` order (empty when done).

    ``continue`` is always valid; ``skip_optional`` when the next step is optional;
    ``insert_reassurance`` when the flow has one, the visitor has had fewer than
    ``max_reassurances``, the last step shown was not the reassurance and the next step
    admits one; ``reorder`` when the next two steps share a group.
    """
    if journey.done:
        return ()
    allowed = [CONTINUE]
    following = spec.step(journey.pending[0])
    if following.optional and len(journey.pending) > 1:
        allowed.append(SKIP_OPTIONAL)
    if (
        spec.reassurance is not None
        and following.reassure_before
        and journey.reassurances < spec.max_reassurances
        and (not journey.path or journey.path[-1] != spec.reassurance)
    ):
        allowed.append(INSERT_REASSURANCE)
    if (
        len(journey.pending) > 1
        and following.group is not None
        and spec.step(journey.pending[1]).group == following.group
    ):
        allowed.append(REORDER)
    return tuple(allowed)


def apply_action(spec: FlowSpec, journey: Journey, action: str) -> tuple[str, Journey]:
    """The step to show and the journey after showing it (choices unchanged).

    Raises :class:`FlowError` when the action is not valid at this position.
    """
    allowed = allowed_actions(spec, journey)
    if action not in allowed:
        where = "the journey is complete" if journey.done else f"allowed: {list(allowed)}"
        raise FlowError(f"action {action!r} is not valid here; {where}")
    pending = journey.pending
    if action == CONTINUE:
        shown, rest = pending[0], pending[1:]
    elif action == SKIP_OPTIONAL:
        shown, rest = pending[1], pending[2:]
    elif action == INSERT_REASSURANCE:
        assert spec.reassurance is not None
        shown, rest = spec.reassurance, pending
    else:  # REORDER
        shown, rest = pending[1], (pending[0], *pending[2:])
    return shown, Journey(
        pending=rest,
        path=(*journey.path, shown),
        actions=(*journey.actions, action),
        choices=journey.choices,
    )


# --------------------------------------------------------------------------- the adapter


@dataclass(frozen=True, slots=True)
class FlowDecision:
    """What to show next and why: ``journey`` is the visitor's journey after it."""

    step: str
    action: str
    propensity: float
    allowed: tuple[str, ...]
    journey_before: Journey
    journey: Journey


def _reading(emotion: EmotionReading) -> Mapping[str, Any] | None:
    if emotion is None or isinstance(emotion, Mapping):
        return emotion
    if isinstance(emotion, str | bytes):
        raise FlowError("an emotion reading is a mapping or 11 numbers, not a string")
    values = list(emotion)
    if len(values) != len(EMOTION_DIMS):
        raise FlowError(
            f"an emotion reading has {len(EMOTION_DIMS)} numbers ({', '.join(EMOTION_DIMS)}), "
            f"got {len(values)}"
        )
    return dict(zip(EMOTION_DIMS, values, strict=True))


class FlowAdapter:
    """Chooses each visitor's next step in a flow and learns from funnel conversion.

    Parameters
    ----------
    spec:
        The flow. The policy's arms are ``spec.actions``.
    policy:
        The bandit; default :class:`~nexus.experiments.bandits.LinearThompson` over the
        context below. A non-contextual policy (e.g. ``ThompsonBernoulli``) is accepted and
        gets no context.
    seed, v, n_draws, burn_in, min_share:
        Passed to the default policy (see ``LinearThompson``): ``burn_in`` decisions per
        action are uniform; ``min_share`` keeps every allowed action's propensity positive.

    Context layout (:attr:`feature_names`): bias, the 11 emotion dimensions,
    ``emotion_missing``, ``progress`` (share of the designed steps already shown or
    skipped), ``reassured`` (1 once a reassurance was shown), and ``next=<key>`` one-hot for
    the next designed step.
    """

    def __init__(
        self,
        spec: FlowSpec,
        *,
        policy: Policy | None = None,
        seed: int | None = None,
        v: float = 0.25,
        n_draws: int = 1000,
        burn_in: int = 20,
        min_share: float = 0.01,
    ) -> None:
        if not isinstance(spec, FlowSpec):
            raise FlowSpecError("spec must be a FlowSpec")
        self._spec = spec
        self._encoder = ContextEncoder(
            attributes=["progress", "reassured"], categories={"next": list(spec.keys)}
        )
        if policy is None:
            policy = LinearThompson(
                spec.actions,
                self._encoder.n_features,
                v=v,
                n_draws=n_draws,
                seed=seed,
                burn_in=burn_in,
                min_share=min_share,
            )
        if tuple(policy.arms) != spec.actions:
            raise FlowSpecError(
                f"the policy's arms {list(policy.arms)} must be the flow's actions "
                f"{list(spec.actions)}"
            )
        if policy.contextual and policy.n_features != self._encoder.n_features:
            raise FlowSpecError(
                f"the policy expects {policy.n_features} features; the flow's context has "
                f"{self._encoder.n_features}"
            )
        self._policy = policy

    @property
    def spec(self) -> FlowSpec:
        return self._spec

    @property
    def policy(self) -> Policy:
        return self._policy

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self._encoder.feature_names

    def context(self, journey: Journey, emotion: EmotionReading = None) -> Context:
        """The context vector of a decision at this position with this reading."""
        if journey.done:
            raise FlowError("the journey is complete: there is no next step to decide")
        total = len(self._spec.steps)
        attributes = {
            "progress": (total - len(journey.pending)) / total,
            "reassured": journey.reassurances > 0,
            "next": journey.pending[0],
        }
        try:
            return self._encoder.encode(_reading(emotion), attributes)
        except FlowError:
            raise
        except ValueError as exc:
            raise FlowError(f"invalid emotion reading: {exc}") from exc

    def decide(self, journey: Journey, emotion: EmotionReading = None) -> FlowDecision:
        """The next step for this visitor, drawn among the actions valid here.

        A decision with an alternative is recorded in the returned journey's ``choices``
        (with its context and propensity) for :meth:`learn`; one where only ``continue`` is
        valid draws nothing and records nothing.
        """
        allowed = allowed_actions(self._spec, journey)
        if not allowed:
            raise FlowError("the journey is complete: there is no next step to decide")
        if len(allowed) == 1:
            step, after = apply_action(self._spec, journey, allowed[0])
            return FlowDecision(step, allowed[0], 1.0, allowed, journey, after)
        x = self.context(journey, emotion)
        drawn = self._policy.choose(x if self._policy.contextual else None, allowed=allowed)
        step, after = apply_action(self._spec, journey, drawn.arm)
        choice = Choice(drawn.arm, tuple(x.tolist()), drawn.propensity)
        after = Journey(after.pending, after.path, after.actions, (*after.choices, choice))
        return FlowDecision(step, drawn.arm, drawn.propensity, allowed, journey, after)

    def learn(self, journey: Journey, *, converted: bool) -> int:
        """Reward every recorded choice of a finished (or abandoned) journey with the funnel
        outcome: 1 when the visitor converted, else 0. Returns the number of updates.

        Call it once per journey: a converted visitor is one who completed the goal step;
        an abandoned one is learnt from as not converted whenever the runtime closes it.
        """
        if not isinstance(converted, bool):
            raise FlowError("converted must be true or false")
        if converted and not journey.done:
            raise FlowError("a visitor converts by completing the goal, so its journey is done")
        reward = 1.0 if converted else 0.0
        width = self._encoder.n_features
        for choice in journey.choices:
            if len(choice.context) != width or choice.action not in self._policy.arms:
                raise FlowError("the journey's choices were not made by an adapter of this flow")
        for choice in journey.choices:
            x = np.asarray(choice.context, dtype=np.float64) if self._policy.contextual else None
            self._policy.update(x, choice.action, reward)
        return len(journey.choices)

    def to_state(self) -> dict[str, Any]:
        """JSON-serialisable: the flow and the policy (posterior and random generator)."""
        return {
            "version": STATE_VERSION,
            "spec": self._spec.to_state(),
            "policy": self._policy.to_state(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> FlowAdapter:
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            raise FlowError("unsupported flow adapter state (no or another version)")
        try:
            spec = FlowSpec.from_state(state["spec"])
            policy = policy_from_state(state["policy"])
        except KeyError as exc:
            raise FlowError(f"malformed flow adapter state: missing {exc}") from exc
        return cls(spec, policy=policy)

    def __repr__(self) -> str:
        return f"FlowAdapter(steps={list(self._spec.keys)}, policy={self._policy!r})"


# --------------------------------------------------------------------------- the simulator

SIGNUP_FLOW: Final = FlowSpec(
    steps=(
        FlowStep("offer", reassure_before=False),
        FlowStep("features", optional=True),  # feature tour and add-ons: info and upsell
        FlowStep("account", group="setup"),  # the long form
        FlowStep("plan", group="setup"),  # plan and price
        FlowStep("payment"),  # the goal
    ),
    reassurance="guarantee",  # money-back guarantee, security, testimonials
)
"""The simulator's trial sign-up funnel, as designed (the fixed path shows every step)."""


@dataclass(frozen=True, slots=True)
class StepTruth:
    """What a step does to a visitor in :class:`FlowWorld`.

    ``completion``: probability that a calm visitor completes it. ``effort``: frustration it
    adds (times the visitor's impatience). ``worry_weight``: how much worry lowers the logit
    of completing it. ``value``: conviction it adds (times the visitor's appetite for
    information).
    """

    completion: float
    effort: float
    worry_weight: float = 0.0
    value: float = 0.0


@dataclass(frozen=True, slots=True)
class ArchetypeTruth:
    """An archetype's traits in :class:`FlowWorld`; all but ``offset`` scale with the
    visitor's intensity.

    ``offset``: logit shift on every step. ``impatience``: frustration per unit of effort.
    ``worry``: worry at the start. ``info_appetite``: conviction per unit of step value.
    ``reorder_fit``: conviction from seeing a later step first. ``reassurance_fit``:
    conviction from a reassurance step beyond the worry and frustration it relieves.
    """

    offset: float
    impatience: float
    worry: float
    info_appetite: float
    reorder_fit: float
    reassurance_fit: float


STEP_TRUTH: Final[Mapping[str, StepTruth]] = {
    "offer": StepTruth(0.55, effort=0.2, worry_weight=0.1),
    "features": StepTruth(0.85, effort=0.6, value=1.0),
    "account": StepTruth(0.62, effort=1.2, worry_weight=0.4),
    "plan": StepTruth(0.85, effort=0.3, worry_weight=0.4),
    "payment": StepTruth(0.55, effort=0.5, worry_weight=1.0),
    "guarantee": StepTruth(0.92, effort=0.15),
}
# Frustration is a good reason to skip the tour or to reassure, but no action suits every
# visitor: the tour convinces anxious and curious visitors, plan-first suits the curious,
# and a reassurance puts off the excited.
ARCHETYPE_TRUTH: Final[Mapping[sim.Archetype, ArchetypeTruth]] = {
    "frustrated": ArchetypeTruth(-0.2, 1.0, 0.1, 0.0, 0.0, 0.0),
    "anxious": ArchetypeTruth(-0.1, 0.3, 1.2, 0.5, -0.3, 0.1),
    "excited": ArchetypeTruth(0.4, 0.6, 0.0, 0.05, 0.15, -0.4),
    "curious": ArchetypeTruth(0.0, 0.2, 0.15, 0.6, 0.5, -0.1),
    "sad": ArchetypeTruth(-0.3, 0.5, 0.6, 0.15, -0.1, 0.1),
}
FRUSTRATION_WEIGHT: Final = 0.5  # logit lost per unit of frustration
RELIEF: Final = (0.7, 0.4)  # share of worry and of frustration a reassurance step relieves
# How one unit of frustration, of worry and of conviction shows in the emotion reading.
_SHIFTS: Final[dict[str, dict[str, float]]] = {
    "frustration": {
        "joy": -0.08,
        "trust": -0.05,
        "anger": 0.25,
        "disgust": 0.10,
        "valence": -0.20,
        "arousal": 0.12,
    },
    "worry": {"fear": 0.45, "trust": -0.20, "valence": -0.15, "dominance": -0.20},
    "conviction": {"joy": 0.10, "trust": 0.20, "anticipation": 0.10, "valence": 0.10},
}


def _shift(name: str) -> FloatArray:
    return np.array([_SHIFTS[name].get(dim, 0.0) for dim in EMOTION_DIMS], dtype=np.float64)


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


@dataclass(frozen=True, slots=True)
class _State:
    """Every visitor's hidden state at one position: frustration, worry, conviction."""

    frustration: FloatArray
    worry: FloatArray
    conviction: FloatArray


@dataclass(frozen=True, slots=True)
class FlowRun:
    """One adapter served to the visitors of a world: who converted, and each journey."""

    converted: NDArray[np.bool_]
    journeys: tuple[Journey, ...]

    @property
    def conversion(self) -> float:
        return float(self.converted.mean())

    def action_counts(self, visitors: slice | None = None) -> dict[str, int]:
        """How often each action was chosen where there was a choice (of some visitors)."""
        counts = dict.fromkeys(ACTIONS, 0)
        for journey in self.journeys[visitors or slice(None)]:
            for choice in journey.choices:
                counts[choice.action] += 1
        return counts


class FlowWorld:
    """Seeded visitors of a flow with a known truth (the simulator of adaptive flow).

    Visitors have the hidden archetypes of :mod:`nexus.experiments.simulation`
    (frustrated, anxious, excited, curious, sad; same shares and emotion profiles) and an
    intensity uniform in [0.5, 1]. Along the path each keeps three hidden quantities:

    * *frustration* rises by ``effort x impatience`` at every step shown (a long form
      frustrates the impatient), and a reassurance relieves part of it;
    * *worry* starts at the archetype's level (anxious visitors most), weighs on the steps
      that commit (account, plan, payment), and a reassurance relieves most of it;
    * *conviction* grows with the optional tour (for visitors who want information), with
      seeing the plan first (curious visitors) and with a reassurance (its fit: negative
      for excited visitors, whom it slows down).

    Completing step ``s`` has logit ``logit(completion_s) + offset + conviction -
    FRUSTRATION_WEIGHT x frustration_after_s - worry_weight_s x worry``; a visitor converts
    when it completes the goal. Every visitor has one uniform draw ``luck`` and drops out
    at the first step where ``luck`` is no longer below its survival probability so far
    (common random numbers: a visitor converts iff ``luck < P(path)``, whatever policy chose
    the path). The reading the adapter gets before each step is the latent emotion (the
    archetype's vector, moved by frustration, worry and conviction) plus Gaussian noise of
    sd :data:`nexus.experiments.simulation.OBSERVATION_NOISE`, drawn per visitor and step.

    Each visitor's completion probabilities depend only on its path, so the designed path's
    conversion (:meth:`fixed`) and the oracle's (:meth:`oracle`: the best action at every
    position knowing the hidden state, by dynamic programming over the flow's positions)
    are exact.
    """

    spec: FlowSpec
    seed: int
    archetype: NDArray[np.int64]  # index into nexus.experiments.simulation.ARCHETYPES
    intensity: FloatArray
    start: FloatArray  # (visitors, 11): latent emotion on arrival
    noise: FloatArray  # (visitors, steps + max_reassurances, 11): observation noise
    luck: FloatArray  # the common random number of each visitor

    def __init__(self, seed: int, visitors: int, spec: FlowSpec = SIGNUP_FLOW) -> None:
        for name, value in (("seed", seed), ("visitors", visitors)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise FlowError(f"{name} must be a non-negative integer, got {value!r}")
        if visitors < 1:
            raise FlowError("a world needs at least one visitor")
        unknown = [
            key
            for key in (*spec.keys, *([spec.reassurance] if spec.reassurance else []))
            if key not in STEP_TRUTH
        ]
        if unknown:
            raise FlowSpecError(f"the simulator has no truth for step(s) {unknown}")
        self.spec = spec
        self.seed = seed
        n = int(visitors)
        rng = np.random.Generator(np.random.PCG64([seed, 0xF10]))
        names = list(sim.ARCHETYPES)
        weights = np.array([sim.ARCHETYPE_WEIGHTS[a] for a in names])
        self.archetype = rng.choice(len(names), size=n, p=weights / weights.sum())
        self.intensity = rng.uniform(*sim.INTENSITY_RANGE, size=n)
        settled = np.asarray(sim.SETTLED, dtype=np.float64)
        profiles = np.array([sim.PROFILES[a] for a in names], dtype=np.float64)
        self.start = (
            settled
            + self.intensity[:, None] * (profiles[self.archetype] - settled)
            + rng.normal(0.0, sim.INDIVIDUAL_SPREAD, size=(n, len(EMOTION_DIMS)))
        )
        depth = len(spec.steps) + spec.max_reassurances
        self.noise = rng.normal(0.0, sim.OBSERVATION_NOISE, size=(n, depth, len(EMOTION_DIMS)))
        self.luck = rng.uniform(size=n)

        def trait(name: str) -> FloatArray:
            values = np.array([getattr(ARCHETYPE_TRUTH[a], name) for a in names])
            scale = 1.0 if name == "offset" else self.intensity
            return np.asarray(values[self.archetype] * scale, dtype=np.float64)

        self._traits: dict[str, FloatArray] = {
            name: trait(name)
            for name in (
                "offset",
                "impatience",
                "worry",
                "info_appetite",
                "reorder_fit",
                "reassurance_fit",
            )
        }
        self._shifts: dict[str, FloatArray] = {name: _shift(name) for name in _SHIFTS}
        self._low: FloatArray = np.array([0.0 if d in PLUTCHIK else -1.0 for d in EMOTION_DIMS])
        zeros = np.zeros(n)
        self._states: dict[tuple[str, ...], _State] = {
            (): _State(zeros, self._traits["worry"], zeros)
        }
        self._steps: dict[tuple[tuple[str, ...], str], FloatArray] = {}
        self._oracle: FloatArray | None = None

    @property
    def visitors(self) -> int:
        return len(self.luck)

    @property
    def archetypes(self) -> tuple[str, ...]:
        """Each visitor's hidden archetype (for reports; the adapter never sees it)."""
        return tuple(sim.ARCHETYPES[i] for i in self.archetype.tolist())

    def _state(self, journey: Journey) -> _State:
        found = self._states.get(journey.actions)
        if found is None:
            self.completion(self._parent(journey), journey.actions[-1])
            found = self._states[journey.actions]
        return found

    def _parent(self, journey: Journey) -> Journey:
        parent = Journey.start(self.spec)
        for action in journey.actions[:-1]:
            parent = apply_action(self.spec, parent, action)[1]
        return parent

    def completion(self, journey: Journey, action: str) -> FloatArray:
        """Every visitor's probability of completing the step ``action`` shows from here."""
        key = (journey.actions, action)
        cached = self._steps.get(key)
        if cached is not None:
            return cached
        state = self._state(journey)
        step, after = apply_action(self.spec, journey, action)
        truth = STEP_TRUTH[step]
        traits = self._traits
        frustration = state.frustration + truth.effort * traits["impatience"]
        logit = (
            _logit(truth.completion)
            + traits["offset"]
            + state.conviction
            - FRUSTRATION_WEIGHT * frustration
            - truth.worry_weight * state.worry
        )
        probability = np.asarray(1.0 / (1.0 + np.exp(-logit)), dtype=np.float64)
        worry, conviction = state.worry, state.conviction + truth.value * traits["info_appetite"]
        if action == REORDER:
            conviction = conviction + traits["reorder_fit"]
        if action == INSERT_REASSURANCE:
            worry = worry * (1.0 - RELIEF[0])
            frustration = frustration * (1.0 - RELIEF[1])
            conviction = conviction + traits["reassurance_fit"]
        self._states[after.actions] = _State(frustration, worry, conviction)
        self._steps[key] = probability
        return probability

    def observe(self, visitor: int, journey: Journey) -> tuple[float, ...]:
        """The noisy emotion reading of one visitor before the next step of its journey."""
        state = self._state(journey)
        latent = (
            self.start[visitor]
            + state.frustration[visitor] * self._shifts["frustration"]
            + (state.worry[visitor] - self._traits["worry"][visitor]) * self._shifts["worry"]
            + state.conviction[visitor] * self._shifts["conviction"]
        )
        reading = np.clip(latent + self.noise[visitor, len(journey.path)], self._low, 1.0)
        return tuple(reading.tolist())

    def path_probability(self, actions: Sequence[str]) -> FloatArray:
        """Every visitor's conversion probability along one fixed sequence of actions."""
        journey, survival = Journey.start(self.spec), np.ones(self.visitors)
        for action in actions:
            survival = survival * self.completion(journey, action)
            journey = apply_action(self.spec, journey, action)[1]
        if not journey.done:
            raise FlowError("the actions stop before the goal")
        return survival

    def fixed(self) -> FloatArray:
        """Conversion probability on the designed path (``continue`` at every step)."""
        return self.path_probability([CONTINUE] * len(self.spec.steps))

    def paths(self) -> Iterator[tuple[str, ...]]:
        """Every sequence of actions from the start to the goal."""

        def walk(journey: Journey) -> Iterator[tuple[str, ...]]:
            if journey.done:
                yield journey.actions
                return
            for action in allowed_actions(self.spec, journey):
                yield from walk(apply_action(self.spec, journey, action)[1])

        yield from walk(Journey.start(self.spec))

    def oracle(self) -> FloatArray:
        """Every visitor's conversion probability under the best action at every position,
        knowing its hidden state (dynamic programming: ``V(j) = max_a p(a | j) V(j')``)."""
        if self._oracle is None:

            def value(journey: Journey) -> FloatArray:
                if journey.done:
                    return np.ones(self.visitors)
                best = np.zeros(self.visitors)
                for action in allowed_actions(self.spec, journey):
                    after = apply_action(self.spec, journey, action)[1]
                    best = np.maximum(best, self.completion(journey, action) * value(after))
                return best

            self._oracle = value(Journey.start(self.spec))
        return self._oracle


def serve(
    world: FlowWorld,
    adapter: FlowAdapter,
    *,
    reward_batch: int = 100,
    emotion: bool = True,
    visitors: int | None = None,
) -> FlowRun:
    """Run every visitor of ``world`` through ``adapter`` in turn.

    Before each step the adapter gets the visitor's noisy reading (``None`` when
    ``emotion`` is false: the position-only ablation); the visitor completes the step or
    drops out by its common random number. Journeys are learnt from in batches of
    ``reward_batch`` visitors, as conversions arrive after a delay in production.
    """
    if reward_batch < 1:
        raise FlowError("reward_batch must be at least 1")
    count = world.visitors if visitors is None else min(visitors, world.visitors)
    converted = np.zeros(count, dtype=bool)
    journeys: list[Journey] = []
    finished: list[tuple[Journey, bool]] = []
    for visitor in range(count):
        journey = Journey.start(world.spec)
        survival, luck = 1.0, float(world.luck[visitor])
        while not journey.done:
            # Read only where there is a choice to make, as the runtime would.
            choosing = emotion and len(allowed_actions(world.spec, journey)) > 1
            reading = world.observe(visitor, journey) if choosing else None
            decision = adapter.decide(journey, reading)
            survival *= float(world.completion(journey, decision.action)[visitor])
            journey = decision.journey
            if luck >= survival:
                break
        converted[visitor] = journey.done and luck < survival
        journeys.append(journey)
        finished.append((journey, bool(converted[visitor])))
        if len(finished) >= reward_batch:
            for done, outcome in finished:
                adapter.learn(done, converted=outcome)
            finished.clear()
    for done, outcome in finished:  # the last, partial batch
        adapter.learn(done, converted=outcome)
    return FlowRun(converted, tuple(journeys))
