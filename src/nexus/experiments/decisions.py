"""``decide``: flags, experiment variants and a UI adaptation for one visitor, in process.

Everything a decision needs is compiled once per workspace and cached (:class:`Compiled`):
the flag evaluator, the running experiments with their layer slices, the adaptations and
their bandit policy. A write through the API invalidates the workspace's entry; other
processes pick changes up within :data:`CONFIG_TTL_SECONDS`.

Each decision is logged as events through the ingest journal, off the request path:
``$exposure`` (one per visitor and experiment: the message id makes later ones duplicates)
and ``$decision`` (the adaptation chosen, its propensity and the context the policy saw,
which off-policy evaluation reads back). The adaptation bandit learns from delayed rewards:
a decision waits up to the goal window for the visitor's goal event; the event rewards 1,
the window closing without it rewards 0 (:meth:`DecisionRuntime.observe`,
:meth:`DecisionRuntime.close_windows`).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from nexus.core.ids import new_id
from nexus.core.logging import get_logger
from nexus.emotion.analyzer import Mode
from nexus.emotion.models.taxonomy import PLUTCHIK
from nexus.emotion.models.vector import EmotionVector
from nexus.events.normalize import ROW_FIELDS
from nexus.events.store import WorkspaceBatch
from nexus.experiments import bandits, flags
from nexus.experiments.models import (
    AdaptationDecision,
    DecideRequest,
    DecideResponse,
    DecisionSettingsRead,
    FlagDecision,
    VariantDecision,
)

log = get_logger("nexus.experiments")

CONFIG_TTL_SECONDS = 2.0
ADAPTATION_POLICY = "adaptation"
MAX_PENDING = 200_000
MAX_READINGS = 100_000
ROLLOUT_RULE = "rollout"
_EVENT = ROW_FIELDS.index("event")
_USER = ROW_FIELDS.index("user_id")
_ANONYMOUS = ROW_FIELDS.index("anonymous_id")
_TIMESTAMP = ROW_FIELDS.index("timestamp")
_CONTEXT = ROW_FIELDS.index("context")


# --- compiled configuration -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExperimentPlan:
    """A running experiment as assignment needs it."""

    key: str
    variants: tuple[str, ...]
    shares: tuple[float, ...]
    bounds: tuple[float, ...]  # cumulative upper bounds of each variant's hash range
    payloads: tuple[Any, ...]
    layer: str
    start: float
    end: float
    targeting: Callable[[flags.EvaluationContext], bool] | None

    @classmethod
    def of(cls, key: str, document: Mapping[str, Any]) -> ExperimentPlan:
        weights = np.asarray([v["weight"] for v in document["variants"]], dtype=np.float64)
        shares = weights / weights.sum()
        start, end = document["layer_range"]
        clauses = document.get("targeting") or []
        return cls(
            key=key,
            variants=tuple(v["key"] for v in document["variants"]),
            shares=tuple(float(s) for s in shares),
            bounds=tuple(float(b) for b in np.cumsum(shares)),
            payloads=tuple(v.get("payload") for v in document["variants"]),
            layer=str(document["layer"]),
            start=float(start),
            end=float(end),
            targeting=flags.compile_clauses(clauses) if clauses else None,
        )

    def assign(self, visitor_id: str, context: flags.EvaluationContext) -> int | None:
        """The variant index the visitor gets, or None when they are not in the experiment.

        Three independent hashes: the layer's (which experiment of the layer, if any), then
        the experiment's own (which variant), so a visitor's variant does not depend on which
        other experiments share the layer.
        """
        position = flags.bucket(f"layer:{self.layer}", visitor_id)
        if not self.start <= position < self.end:
            return None
        if self.targeting is not None and not self.targeting(context):
            return None
        draw = flags.bucket(f"experiment:{self.key}", visitor_id)
        for index, bound in enumerate(self.bounds):
            if draw < bound:
                return index
        return len(self.bounds) - 1


@dataclass(frozen=True, slots=True)
class RolloutWatch:
    """A guarded rollout whose exposures decide logs."""

    rollout_id: str
    flag_key: str
    stage: float
    variation: str
    control: str
    segments: tuple[tuple[str, Callable[[flags.EvaluationContext], bool]], ...]


@dataclass(slots=True)
class Compiled:
    workspace_id: str
    loaded_at: float
    flag_set: flags.FlagSet
    experiments: tuple[ExperimentPlan, ...]
    adaptations: dict[str, dict[str, Any]]
    settings: DecisionSettingsRead
    rollouts: dict[str, RolloutWatch]
    encoder: bandits.ContextEncoder
    policy: bandits.Policy | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the store holds for one workspace, read by the service layer."""

    flags: list[dict[str, Any]]
    experiments: list[tuple[str, dict[str, Any]]]
    adaptations: dict[str, dict[str, Any]]
    settings: DecisionSettingsRead
    rollouts: list[dict[str, Any]]
    policy_state: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Pending:
    workspace_id: str
    visitor_id: str
    decision_id: str
    arm: str
    context: np.ndarray
    decided_us: int
    deadline_us: int


@dataclass
class LearningStats:
    decisions: int = 0
    rewarded: int = 0
    expired: int = 0
    dropped: int = 0


def build_policy(
    settings: DecisionSettingsRead,
    arms: list[str],
    encoder: bandits.ContextEncoder,
    state: Mapping[str, Any] | None,
) -> bandits.Policy | None:
    """The adaptation policy: the saved one if it still has the same arms and features,
    else a fresh one of the configured kind."""
    if not arms:
        return None
    if state is not None:
        try:
            saved = bandits.policy_from_state(state)
        except (ValueError, KeyError, TypeError):
            saved = None
        if (
            saved is not None
            and list(saved.arms) == arms
            and saved.n_features in (None, encoder.n_features)
            and type(saved).__name__ == _POLICY_CLASSES[settings.policy].__name__
        ):
            return saved
    kind = _POLICY_CLASSES[settings.policy]
    common: dict[str, Any] = {"seed": None}
    if kind is not bandits.UniformPolicy:
        common |= {"burn_in": settings.burn_in, "min_share": settings.min_share}
    if kind in (bandits.LinearThompson, bandits.LinUCB):
        return kind(arms, encoder.n_features, **common)
    return kind(arms, **common)


_POLICY_CLASSES: dict[str, type[bandits.Policy]] = {
    "linear_thompson": bandits.LinearThompson,
    "linucb": bandits.LinUCB,
    "thompson": bandits.ThompsonBernoulli,
    "uniform": bandits.UniformPolicy,
}


def compile_snapshot(workspace_id: str, snapshot: Snapshot) -> Compiled:
    settings = snapshot.settings
    encoder = bandits.ContextEncoder(attributes=settings.context_attributes)
    arms = sorted(snapshot.adaptations)
    rollouts: dict[str, RolloutWatch] = {}
    for document in snapshot.rollouts:
        rollouts[document["flag_key"]] = RolloutWatch(
            rollout_id=document["id"],
            flag_key=document["flag_key"],
            stage=float(document["stage"]),
            variation=document["variation"],
            control=document["control"],
            segments=tuple(
                (s["key"], flags.compile_clauses(s["clauses"])) for s in document["segments"]
            ),
        )
    return Compiled(
        workspace_id=workspace_id,
        loaded_at=time.monotonic(),
        flag_set=flags.FlagSet(flags.parse_flag(d) for d in snapshot.flags),
        experiments=tuple(ExperimentPlan.of(k, d) for k, d in snapshot.experiments),
        adaptations=snapshot.adaptations,
        settings=settings,
        rollouts=rollouts,
        encoder=encoder,
        policy=build_policy(settings, arms, encoder, snapshot.policy_state),
    )


# --- emotion context ------------------------------------------------------------------------


def emotion_from_vector(vector: EmotionVector) -> dict[str, Any]:
    plutchik = vector.plutchik
    return {
        "dominant": vector.dominant,
        "plutchik": max(PLUTCHIK, key=plutchik.__getitem__),
        "ekman": vector.ekman_label,
        "valence": round(vector.valence, 6),
        "arousal": round(vector.arousal, 6),
        "dominance": round(vector.dominance, 6),
        "confidence": round(vector.confidence, 6),
        **{name: round(plutchik[name], 6) for name in PLUTCHIK},
        "source": vector.tier,
    }


def emotion_from_reading(reading: Mapping[str, Any], source: str) -> dict[str, Any] | None:
    """The flag/bandit context of a reading sent by a client or stored by enrichment."""
    plutchik_in = reading.get("plutchik") if isinstance(reading.get("plutchik"), dict) else reading
    assert isinstance(plutchik_in, Mapping)
    values: dict[str, Any] = {}
    for name in PLUTCHIK:
        values[name] = _finite(plutchik_in.get(name), 0.0, 1.0)
    for name in ("valence", "arousal", "dominance"):
        values[name] = _finite(reading.get(name), -1.0, 1.0)
    plutchik_top = max(PLUTCHIK, key=values.__getitem__)
    dominant = reading.get("dominant")
    ekman = reading.get("ekman")
    return {
        "dominant": dominant if isinstance(dominant, str) and dominant else plutchik_top,
        "plutchik": plutchik_top,
        "ekman": ekman if isinstance(ekman, str) and ekman else None,
        **{k: values[k] for k in ("valence", "arousal", "dominance")},
        "confidence": _finite(reading.get("confidence", 1.0), 0.0, 1.0),
        **{name: values[name] for name in PLUTCHIK},
        "source": source,
    }


def _finite(value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        return 0.0
    return float(min(high, max(low, value)))


# --- the runtime ----------------------------------------------------------------------------


class DecisionRuntime:
    """Per-process decision state: compiled workspaces, bandit policies, pending rewards and
    the latest emotion reading of recent visitors."""

    def __init__(
        self,
        *,
        load: Callable[[str], Snapshot],
        analyze: Callable[[str, Mode], EmotionVector] | None,
        emotion_mode: Mode = "edge",
        clock_us: Callable[[], int] | None = None,
    ) -> None:
        self._load = load
        self._analyze = analyze
        self.emotion_mode: Mode = emotion_mode
        self._clock_us = clock_us or (lambda: time.time_ns() // 1000)
        self._compiled: dict[str, Compiled] = {}
        self._lock = threading.RLock()
        self._pending: dict[tuple[str, str], list[Pending]] = {}
        self._deadlines: deque[Pending] = deque()
        self._readings: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self._outbox: list[tuple[str, dict[str, Any]]] = []
        self._dirty: set[str] = set()
        self.stats = LearningStats()

    # -- configuration ------------------------------------------------------------------------

    def compiled(self, workspace_id: str) -> Compiled:
        entry = self._compiled.get(workspace_id)
        if entry is not None and not self.needs_load(workspace_id):
            return entry
        snapshot = self._load(workspace_id)
        with self._lock:
            current = self._compiled.get(workspace_id)
            fresh = compile_snapshot(workspace_id, snapshot)
            # Keep the live policy (it may have learned since it was last saved) while the
            # arms and the kind stay the same.
            if (
                current is not None
                and current.policy is not None
                and fresh.policy is not None
                and current.policy.arms == fresh.policy.arms
                and type(current.policy) is type(fresh.policy)
                and current.encoder.n_features == fresh.encoder.n_features
            ):
                fresh.policy = current.policy
            self._compiled[workspace_id] = fresh
            return fresh

    def needs_load(self, workspace_id: str) -> bool:
        """Whether the next decision must read the database first (not cached or stale)."""
        entry = self._compiled.get(workspace_id)
        return entry is None or time.monotonic() - entry.loaded_at >= CONFIG_TTL_SECONDS

    def invalidate(self, workspace_id: str) -> None:
        """Recompile on next use (after a write through this process's API)."""
        with self._lock:
            entry = self._compiled.get(workspace_id)
            if entry is not None:
                entry.loaded_at = float("-inf")

    def reset_policy(self, workspace_id: str) -> None:
        with self._lock:
            entry = self._compiled.pop(workspace_id, None)
            if entry is not None:
                self._dirty.discard(workspace_id)

    # -- decide -------------------------------------------------------------------------------

    def emotion_for(self, workspace_id: str, request: DecideRequest) -> dict[str, Any] | None:
        if request.emotion is not None:
            return emotion_from_reading(request.emotion.model_dump(), "client")
        if request.text and request.text.strip() and self._analyze is not None:
            reading = emotion_from_vector(self._analyze(request.text, self.emotion_mode))
            self._remember(workspace_id, request.visitor_id, reading)
            return reading
        with self._lock:
            return self._readings.get((workspace_id, request.visitor_id))

    def decide(self, workspace_id: str, request: DecideRequest) -> DecideResponse:
        config = self.compiled(workspace_id)
        now_us = self._clock_us()
        visitor = request.visitor_id
        emotion = self.emotion_for(workspace_id, request)
        attributes: dict[str, Any] = dict(request.attributes)
        if emotion is not None:
            attributes["emotion"] = emotion
        context = flags.EvaluationContext(targeting_key=visitor, attributes=attributes)
        decision_id = new_id("dec")
        holdout = (
            config.settings.holdout_percent > 0
            and flags.bucket(f"holdout:{workspace_id}", visitor)
            < config.settings.holdout_percent / 100.0
        )

        flag_results = self._flags(config, request, context, visitor, now_us)
        experiments = (
            {} if holdout else self._experiments(config, request, context, visitor, now_us)
        )
        adaptation = None
        if request.adaptation and not holdout and config.policy is not None:
            adaptation = self._adapt(
                config, visitor, decision_id, emotion, request.attributes, now_us
            )
        return DecideResponse(
            decision_id=decision_id,
            visitor_id=visitor,
            holdout=holdout,
            emotion=emotion,
            flags=flag_results,
            experiments=experiments,
            adaptation=adaptation,
        )

    def _flags(
        self,
        config: Compiled,
        request: DecideRequest,
        context: flags.EvaluationContext,
        visitor: str,
        now_us: int,
    ) -> dict[str, FlagDecision]:
        if request.flags is None:
            evaluations = config.flag_set.evaluate_all(context)
        else:
            evaluations = {k: config.flag_set.evaluate(k, context) for k in request.flags}
        out: dict[str, FlagDecision] = {}
        for key, evaluation in evaluations.items():
            out[key] = FlagDecision(
                value=evaluation.value,
                variation=evaluation.variation,
                reason=evaluation.reason,
                rule_id=evaluation.rule_id,
                error_code=evaluation.error_code,
            )
            watch = config.rollouts.get(key)
            if watch is not None and evaluation.rule_id == ROLLOUT_RULE:
                segments = {name: True for name, matches in watch.segments if matches(context)}
                self._log_exposure(
                    config.workspace_id,
                    visitor,
                    experiment=f"rollout:{watch.rollout_id}",
                    variant=evaluation.variation or "",
                    propensity=None,
                    now_us=now_us,
                    extra={"stage": watch.stage, "segments": segments, "flag": key},
                    dedupe=f"{watch.rollout_id}:{watch.stage:g}",
                )
        return out

    def _experiments(
        self,
        config: Compiled,
        request: DecideRequest,
        context: flags.EvaluationContext,
        visitor: str,
        now_us: int,
    ) -> dict[str, VariantDecision]:
        wanted = None if request.experiments is None else set(request.experiments)
        out: dict[str, VariantDecision] = {}
        for plan in config.experiments:
            if wanted is not None and plan.key not in wanted:
                continue
            index = plan.assign(visitor, context)
            if index is None:
                continue
            variant = plan.variants[index]
            out[plan.key] = VariantDecision(
                variant=variant, propensity=plan.shares[index], payload=plan.payloads[index]
            )
            self._log_exposure(
                config.workspace_id,
                visitor,
                experiment=plan.key,
                variant=variant,
                propensity=plan.shares[index],
                now_us=now_us,
            )
        return out

    def _adapt(
        self,
        config: Compiled,
        visitor: str,
        decision_id: str,
        emotion: Mapping[str, Any] | None,
        attributes: Mapping[str, Any],
        now_us: int,
    ) -> AdaptationDecision:
        policy = config.policy
        assert policy is not None
        vector = config.encoder.encode(emotion, attributes)
        with self._lock:
            choice = policy.choose(vector if policy.n_features is not None else None)
            pending = Pending(
                workspace_id=config.workspace_id,
                visitor_id=visitor,
                decision_id=decision_id,
                arm=choice.arm,
                context=vector,
                decided_us=now_us,
                deadline_us=now_us + config.settings.goal_window_seconds * 1_000_000,
            )
            self._add_pending(pending)
            self.stats.decisions += 1
            self._outbox.append(
                (
                    config.workspace_id,
                    _message(
                        "$decision",
                        visitor,
                        decision_id,
                        now_us,
                        {
                            "decision_id": decision_id,
                            "policy": ADAPTATION_POLICY,
                            "kind": type(policy).__name__,
                            "arm": choice.arm,
                            "propensity": choice.propensity,
                            "probabilities": choice.probabilities,
                            "context": [round(float(x), 6) for x in vector],
                            "goal": config.settings.goal_event,
                            "window_seconds": config.settings.goal_window_seconds,
                        },
                    ),
                )
            )
        document = config.adaptations[choice.arm]
        return AdaptationDecision(
            key=choice.arm,
            tone=document.get("tone", "neutral"),
            tokens=document.get("tokens", {}),
            copy_text=document.get("copy", {}),
            propensity=choice.propensity,
            policy=type(policy).__name__,
        )

    def _add_pending(self, pending: Pending) -> None:
        if len(self._deadlines) >= MAX_PENDING:
            # Overloaded: the oldest decision is closed early as a non-conversion rather
            # than letting memory grow without bound.
            oldest = self._deadlines.popleft()
            self._settle(oldest, 0.0)
            self.stats.dropped += 1
        self._pending.setdefault((pending.workspace_id, pending.visitor_id), []).append(pending)
        self._deadlines.append(pending)

    def _log_exposure(
        self,
        workspace_id: str,
        visitor: str,
        *,
        experiment: str,
        variant: str,
        propensity: float | None,
        now_us: int,
        extra: Mapping[str, Any] | None = None,
        dedupe: str | None = None,
    ) -> None:
        # One exposure per visitor and experiment (per rollout stage): the store keeps the
        # first message with an id and drops later ones as duplicates.
        basis = f"{experiment}|{dedupe or ''}|{visitor}"
        message_id = "exp-" + hashlib.blake2b(basis.encode(), digest_size=12).hexdigest()
        properties: dict[str, Any] = {"experiment": experiment, "variant": variant}
        if propensity is not None:
            properties["propensity"] = propensity
        if extra:
            properties.update(extra)
        with self._lock:
            self._outbox.append(
                (workspace_id, _message("$exposure", visitor, message_id, now_us, properties))
            )

    def _remember(self, workspace_id: str, visitor: str, reading: dict[str, Any]) -> None:
        with self._lock:
            key = (workspace_id, visitor)
            self._readings[key] = reading
            self._readings.move_to_end(key)
            while len(self._readings) > MAX_READINGS:
                self._readings.popitem(last=False)

    # -- learning -----------------------------------------------------------------------------

    def emit(self, workspace_id: str, message: dict[str, Any]) -> None:
        """Queue an event (a Segment message) to journal with the decisions."""
        with self._lock:
            self._outbox.append((workspace_id, message))

    def drain_outbox(self) -> list[tuple[str, dict[str, Any]]]:
        """The decision and exposure events to journal, handed over once."""
        with self._lock:
            out, self._outbox = self._outbox, []
        return out

    def observe(self, batches: list[WorkspaceBatch]) -> None:
        """Watch stored events: goal events reward pending decisions, emotion readings become
        visitors' latest state (the ingest pipeline's ``on_stored`` hook)."""
        for batch in batches:
            compiled = self._compiled.get(batch.workspace_id)
            goal = compiled.settings.goal_event if compiled is not None else None
            for row in batch.rows:
                ids = [i for i in (row[_ANONYMOUS], row[_USER]) if i]
                if goal is not None and row[_EVENT] == goal:
                    self._reward(batch.workspace_id, ids, int(row[_TIMESTAMP]))
                raw = row[_CONTEXT]
                if isinstance(raw, str) and '"emotion"' in raw:
                    context = orjson.loads(raw)
                    reading = context.get("emotion") if isinstance(context, dict) else None
                    if isinstance(reading, dict):
                        converted = emotion_from_reading(reading, "stored")
                        if converted is not None:
                            for visitor in ids:
                                self._remember(batch.workspace_id, visitor, converted)

    def _reward(self, workspace_id: str, ids: list[str], at_us: int) -> None:
        with self._lock:
            for visitor in ids:
                waiting = self._pending.get((workspace_id, visitor))
                if not waiting:
                    continue
                keep = []
                for pending in waiting:
                    if pending.decided_us <= at_us + 1_000_000 and at_us <= pending.deadline_us:
                        self._settle(pending, 1.0, remove=False)
                        self.stats.rewarded += 1
                    else:
                        keep.append(pending)
                if keep:
                    self._pending[(workspace_id, visitor)] = keep
                else:
                    self._pending.pop((workspace_id, visitor), None)

    def close_windows(self, now_us: int | None = None) -> int:
        """Reward 0 to decisions whose goal window closed without the goal event."""
        now_us = self._clock_us() if now_us is None else now_us
        closed = 0
        with self._lock:
            while self._deadlines and self._deadlines[0].deadline_us < now_us:
                pending = self._deadlines.popleft()
                key = (pending.workspace_id, pending.visitor_id)
                waiting = self._pending.get(key)
                if waiting is None or pending not in waiting:
                    continue  # already rewarded
                waiting.remove(pending)
                if not waiting:
                    self._pending.pop(key, None)
                self._settle(pending, 0.0, remove=False)
                self.stats.expired += 1
                closed += 1
        return closed

    def _settle(self, pending: Pending, reward: float, *, remove: bool = True) -> None:
        config = self._compiled.get(pending.workspace_id)
        if config is None or config.policy is None or pending.arm not in config.policy.arms:
            return
        policy = config.policy
        if remove:
            waiting = self._pending.get((pending.workspace_id, pending.visitor_id), [])
            if pending in waiting:
                waiting.remove(pending)
        policy.update(
            pending.context if policy.n_features is not None else None, pending.arm, reward
        )
        self._dirty.add(pending.workspace_id)

    def dirty_states(self) -> dict[str, dict[str, Any]]:
        """Policies that learned since the last call, to save."""
        with self._lock:
            out = {}
            for workspace_id in self._dirty:
                config = self._compiled.get(workspace_id)
                if config is not None and config.policy is not None:
                    out[workspace_id] = config.policy.to_state()
            self._dirty.clear()
            return out

    def pending_count(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._pending.values())


def _message(
    event: str, visitor: str, message_id: str, now_us: int, properties: dict[str, Any]
) -> dict[str, Any]:
    seconds, micros = divmod(now_us, 1_000_000)
    timestamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micros:06d}Z"
    return {
        "type": "track",
        "event": event,
        "anonymousId": visitor,
        "messageId": message_id,
        "timestamp": timestamp,
        "properties": properties,
    }
