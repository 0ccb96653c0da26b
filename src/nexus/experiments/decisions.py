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
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from nexus.core.errors import InvalidInput
from nexus.core.ids import new_id
from nexus.core.logging import get_logger
from nexus.emotion.analyzer import Mode
from nexus.emotion.models.taxonomy import PLUTCHIK
from nexus.emotion.models.vector import EmotionVector
from nexus.events.normalize import ROW_FIELDS, EventRow, track_row
from nexus.events.store import WorkspaceBatch
from nexus.experiments import bandits, flags
from nexus.experiments.models import DecideRequest, DecisionSettingsRead
from nexus.privacy.consent import Permissions

log = get_logger("nexus.experiments")

CONFIG_TTL_SECONDS = 2.0
ADAPTATION_POLICY = "adaptation"
MAX_PENDING = 200_000
MAX_READINGS = 100_000
ROLLOUT_RULE = "rollout"
HOLDOUT_EXPERIMENT = "$holdout"
LINEAR_THOMPSON_DRAWS = 256
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
    id: str
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
            id=str(document.get("id", key)),
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
    # Adaptations with an emotion trigger (``when``), and the ones without: the pools the
    # bandit draws from.
    triggers: tuple[tuple[str, Callable[[flags.EvaluationContext], bool]], ...] = ()
    untargeted: tuple[str, ...] = ()
    refreshing: bool = False
    # Digest of what was compiled (everything in the snapshot but the policy's learned
    # state): a periodic reload that reads the same configuration keeps this entry.
    fingerprint: bytes = b""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the store holds for one workspace, read by the service layer."""

    flags: list[dict[str, Any]]
    experiments: list[tuple[str, dict[str, Any]]]
    adaptations: dict[str, dict[str, Any]]
    settings: DecisionSettingsRead
    rollouts: list[dict[str, Any]]
    policy_state: dict[str, Any] | None

    def fingerprint(self) -> bytes:
        """A digest of the configuration the snapshot holds. The saved policy state is left
        out: a reload keeps the live policy's learning over what was last saved anyway."""
        document = [
            self.flags,
            self.experiments,
            self.adaptations,
            self.settings.model_dump(mode="json"),
            self.rollouts,
        ]
        encoded = orjson.dumps(
            document, default=str, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
        )
        return hashlib.blake2b(encoded, digest_size=16).digest()


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
    """The adaptation policy of the workspace's settings.

    What a policy learned is kept (from ``state``, a saved or live policy's) while the arms,
    the kind and the context features are the same; a new burn-in or minimum share applies
    to it at once. A different kind, arm set or feature list starts learning afresh.
    ``min_share`` is capped at an equal share, so adding adaptations never makes the floor
    impossible.
    """
    if not arms:
        return None
    kind = _POLICY_CLASSES[settings.policy]
    min_share = min(settings.min_share, 1.0 / len(arms))
    if state is not None and state.get("features") == list(encoder.feature_names):
        learned = state.get("policy")
        try:
            if isinstance(learned, Mapping) and learned.get("class") == kind.__name__:
                params = dict(learned["params"])
                if params.get("arms") == arms:
                    if kind is not bandits.UniformPolicy:
                        params |= {"burn_in": settings.burn_in, "min_share": min_share}
                    return bandits.policy_from_state({**learned, "params": params})
        except (ValueError, KeyError, TypeError):
            log.warning("saved adaptation policy unreadable; starting afresh")
    common: dict[str, Any] = {"seed": None}
    if kind is not bandits.UniformPolicy:
        common |= {"burn_in": settings.burn_in, "min_share": min_share}
    if kind is bandits.LinearThompson:
        # P(best) from 256 posterior draws: the logged propensity is exact for the
        # distribution the arm is drawn from either way, and the decision stays well under
        # a millisecond.
        return kind(arms, encoder.n_features, n_draws=LINEAR_THOMPSON_DRAWS, **common)
    if kind is bandits.LinUCB:
        return kind(arms, encoder.n_features, **common)
    return kind(arms, **common)


def policy_state(policy: bandits.Policy, encoder: bandits.ContextEncoder) -> dict[str, Any]:
    """What is saved of an adaptation policy: its state and the features it learned on."""
    return {"policy": policy.to_state(), "features": list(encoder.feature_names)}


_POLICY_CLASSES: dict[str, type[bandits.Policy]] = {
    "linear_thompson": bandits.LinearThompson,
    "linucb": bandits.LinUCB,
    "thompson": bandits.ThompsonBernoulli,
    "uniform": bandits.UniformPolicy,
}


def compile_snapshot(workspace_id: str, snapshot: Snapshot, *, fingerprint: bytes) -> Compiled:
    """The compiled form of ``snapshot``, whose digest (:meth:`Snapshot.fingerprint`) the
    caller has already taken to see whether anything changed."""
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
        triggers=tuple(
            (arm, flags.compile_clauses(doc["when"], where=f"adaptations.{arm}.when"))
            for arm in arms
            if (doc := snapshot.adaptations[arm]).get("when")
        ),
        untargeted=tuple(a for a in arms if not snapshot.adaptations[a].get("when")),
        fingerprint=fingerprint,
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
    plutchik = {name: _finite(plutchik_in.get(name), 0.0, 1.0) for name in PLUTCHIK}
    plutchik_top = max(plutchik, key=plutchik.__getitem__)
    dominant = reading.get("dominant")
    ekman = reading.get("ekman")
    return {
        "dominant": dominant if isinstance(dominant, str) and dominant else plutchik_top,
        "plutchik": plutchik_top,
        "ekman": ekman if isinstance(ekman, str) and ekman else None,
        "valence": _finite(reading.get("valence"), -1.0, 1.0),
        "arousal": _finite(reading.get("arousal"), -1.0, 1.0),
        "dominance": _finite(reading.get("dominance"), -1.0, 1.0),
        "confidence": _finite(reading.get("confidence", 1.0), 0.0, 1.0),
        **plutchik,
        "source": source,
    }


def _finite(value: Any, low: float, high: float) -> float:
    """``value`` clipped to ``[low, high]``; 0 for anything but a finite number."""
    if value.__class__ is float:  # what JSON numbers with a fraction part decode to
        if not math.isfinite(value):
            return 0.0
        return high if value > high else low if value < low else value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return 0.0
    return float(min(high, max(low, value)))


# --- the runtime ----------------------------------------------------------------------------


class DecisionRuntime:
    """Per-process decision state: compiled workspaces, bandit policies, pending rewards and
    the latest emotion reading of recent visitors.

    Threads: decisions, reward bookkeeping and policy updates all happen on the event loop's
    thread (``decide`` and the worker's pass), so the hot path takes no lock. The ingest
    writer's thread (:meth:`observe`) and worker threads (configuration loads, rollout
    checks) only hand things over through thread-safe deques and single dict operations.
    """

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
        self._load_lock = threading.Lock()
        self._pending: dict[tuple[str, str], list[Pending]] = {}
        self._deadlines: deque[Pending] = deque()
        self._goals: deque[tuple[str, tuple[str, ...], int]] = deque()
        self._readings: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self._outbox: deque[tuple[str, EventRow]] = deque()
        self._dirty: set[str] = set()
        self.stats = LearningStats()

    # -- configuration ------------------------------------------------------------------------

    def compiled(self, workspace_id: str) -> Compiled:
        """The workspace's compiled configuration, reloaded first when missing, invalidated
        or older than :data:`CONFIG_TTL_SECONDS`. Reading the database blocks: on the event
        loop use :meth:`needs_load` / :meth:`refresh_due` and load on a worker thread."""
        entry = self._compiled.get(workspace_id)
        # An invalidated entry's age is infinite: it reloads too.
        if entry is not None and time.monotonic() - entry.loaded_at < CONFIG_TTL_SECONDS:
            return entry
        return self.reload(workspace_id)

    def reload(self, workspace_id: str) -> Compiled:
        """Read and compile the workspace's configuration now (one load at a time)."""
        with self._load_lock:
            current = self._compiled.get(workspace_id)
            if (
                current is not None
                and not current.refreshing
                and time.monotonic() - current.loaded_at < CONFIG_TTL_SECONDS
            ):
                return current  # another thread loaded it while this one waited
            try:
                snapshot = self._load(workspace_id)
                mark = snapshot.fingerprint()
                if current is not None and current.fingerprint == mark:
                    # Nothing changed (the usual periodic refresh): keep what is compiled,
                    # sparing the recompilation -- CPU the decisions on the loop would wait
                    # for, as the loading thread holds the interpreter.
                    current.loaded_at = time.monotonic()
                    current.refreshing = False
                    return current
                fresh = compile_snapshot(workspace_id, snapshot, fingerprint=mark)
            except BaseException:
                if current is not None:
                    current.refreshing = False
                raise
            # Keep what the live policy learned since it was last saved (build_policy decides
            # whether it still fits the settings).
            if current is not None and current.policy is not None:
                fresh.policy = build_policy(
                    fresh.settings,
                    sorted(fresh.adaptations),
                    fresh.encoder,
                    policy_state(current.policy, current.encoder),
                )
            self._compiled[workspace_id] = fresh
            return fresh

    def needs_load(self, workspace_id: str) -> bool:
        """Whether a decision must wait for a load: nothing compiled yet, or a change made
        through this process's API invalidated it (read-your-writes)."""
        entry = self._compiled.get(workspace_id)
        return entry is None or entry.loaded_at == float("-inf")

    def refresh_due(self, workspace_id: str) -> bool:
        """Whether the cached configuration is older than the TTL and nobody is reloading
        it yet; the caller then reloads it in the background while decisions go on with the
        cached one (changes made in other processes show within about the TTL)."""
        entry = self._compiled.get(workspace_id)
        if entry is None or entry.refreshing:
            return False
        if time.monotonic() - entry.loaded_at < CONFIG_TTL_SECONDS:
            return False
        entry.refreshing = True
        return True

    def invalidate(self, workspace_id: str) -> None:
        """Recompile before the next decision (after a write through this process's API)."""
        entry = self._compiled.get(workspace_id)
        if entry is not None:
            entry.loaded_at = float("-inf")

    # -- decide -------------------------------------------------------------------------------

    def read_text(self, text: str) -> dict[str, Any] | None:
        """The emotion context of ``text`` (the configured tier; thread-safe)."""
        if self._analyze is None or not text.strip():
            return None
        return emotion_from_vector(self._analyze(text, self.emotion_mode))

    def emotion_for(
        self, workspace_id: str, request: DecideRequest, read: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        if request.emotion is not None:
            # A reading the browser made (with the visitor's consent, or it would not be
            # here): remembered like a server reading, so the next page keeps its mood.
            client = emotion_from_reading(request.emotion.model_dump(), "client")
            if client is not None:
                self._remember(workspace_id, request.visitor_id, client)
            return client
        if read is None and request.text:
            read = self.read_text(request.text)
        if read is not None:
            self._remember(workspace_id, request.visitor_id, read)
            return read
        return self._readings.get((workspace_id, request.visitor_id))

    def decide(
        self,
        workspace_id: str,
        request: DecideRequest,
        *,
        read: dict[str, Any] | None = None,
        permitted: Permissions | None = None,
        bot: bool = False,
    ) -> dict[str, Any]:
        """The decision as the JSON document :class:`DecideResponse` describes (built as
        plain data: the hot path makes no model objects). ``read`` is the emotion of the
        request's text when the caller already read it off the event loop. ``permitted`` is
        what the visitor's consent allows (``None``: everything): without emotion analysis
        no emotion is read, used or remembered; without personalisation the emotion context
        and the adaptation bandit are left out. A ``bot`` gets flags only: no experiment
        (its exposures would bias results) and no adaptation (it would teach the bandit)."""
        config = self._compiled.get(workspace_id) or self.compiled(workspace_id)
        now_us = self._clock_us()
        visitor = request.visitor_id
        personalised = not bot and (permitted is None or permitted.personalisation)
        reads_emotion = personalised and (permitted is None or permitted.emotion_analysis)
        emotion = self.emotion_for(workspace_id, request, read) if reads_emotion else None
        attributes: dict[str, Any] = dict(request.attributes)
        if emotion is not None:
            attributes["emotion"] = emotion
        context = flags.EvaluationContext(targeting_key=visitor, attributes=attributes)
        holdout = (
            config.settings.holdout_percent > 0
            and flags.bucket(f"holdout:{workspace_id}", visitor)
            < config.settings.holdout_percent / 100.0
        )
        adapting = personalised and request.adaptation and not holdout and config.policy is not None
        vector = self._context_vector(config, emotion, request.attributes) if adapting else None
        decision_id = new_id("dec")
        if config.settings.holdout_percent > 0:
            # Everyone's side of the holdout, so the held-out baseline can be measured.
            self._log_exposure(
                workspace_id,
                visitor,
                experiment=HOLDOUT_EXPERIMENT,
                variant="held_out" if holdout else "included",
                propensity=None,
                now_us=now_us,
            )
        flag_results = self._flags(config, request, context, visitor, now_us)
        experiments = (
            {} if holdout or bot else self._experiments(config, request, context, visitor, now_us)
        )
        adaptation = None
        if vector is not None:
            adaptation = self._adapt(config, visitor, decision_id, vector, now_us, context)
        return {
            "decision_id": decision_id,
            "visitor_id": visitor,
            "holdout": holdout,
            "personalised": personalised,
            "bot": bot,
            "emotion": emotion,
            "flags": flag_results,
            "experiments": experiments,
            "adaptation": adaptation,
        }

    def _flags(
        self,
        config: Compiled,
        request: DecideRequest,
        context: flags.EvaluationContext,
        visitor: str,
        now_us: int,
    ) -> dict[str, dict[str, Any]]:
        if request.flags is None:
            evaluations = config.flag_set.evaluate_all(context)
        else:
            evaluations = {k: config.flag_set.evaluate(k, context) for k in request.flags}
        out: dict[str, dict[str, Any]] = {}
        for key, evaluation in evaluations.items():
            out[key] = {
                "value": evaluation.value,
                "variation": evaluation.variation,
                "reason": str(evaluation.reason),
                "rule_id": evaluation.rule_id,
                "error_code": None if evaluation.error_code is None else str(evaluation.error_code),
            }
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
    ) -> dict[str, dict[str, Any]]:
        wanted = None if request.experiments is None else set(request.experiments)
        out: dict[str, dict[str, Any]] = {}
        for plan in config.experiments:
            if wanted is not None and plan.key not in wanted:
                continue
            index = plan.assign(visitor, context)
            if index is None:
                continue
            variant = plan.variants[index]
            out[plan.key] = {
                "variant": variant,
                "propensity": plan.shares[index],
                "payload": plan.payloads[index],
            }
            self._log_exposure(
                config.workspace_id,
                visitor,
                experiment=plan.key,
                variant=variant,
                propensity=plan.shares[index],
                now_us=now_us,
                dedupe=plan.id,
            )
        return out

    @staticmethod
    def _context_vector(
        config: Compiled, emotion: Mapping[str, Any] | None, attributes: Mapping[str, Any]
    ) -> NDArray[np.float64]:
        try:
            return config.encoder.encode(emotion, attributes)
        except ValueError as exc:
            raise InvalidInput(
                f"The adaptation policy reads numeric attributes "
                f"({', '.join(config.settings.context_attributes)}): {exc}"
            ) from None

    def _adapt(
        self,
        config: Compiled,
        visitor: str,
        decision_id: str,
        vector: NDArray[np.float64],
        now_us: int,
        context: flags.EvaluationContext,
    ) -> dict[str, Any] | None:
        policy = config.policy
        assert policy is not None
        pool: tuple[str, ...] | None = None
        if config.triggers:
            pool = tuple(arm for arm, holds in config.triggers if holds(context))
            pool = pool or config.untargeted
            if not pool:
                return None  # only triggered adaptations, and none of them fits this visitor
        choice = policy.choose(vector if policy.n_features is not None else None, allowed=pool)
        self._add_pending(
            Pending(
                workspace_id=config.workspace_id,
                visitor_id=visitor,
                decision_id=decision_id,
                arm=choice.arm,
                context=vector,
                decided_us=now_us,
                deadline_us=now_us + config.settings.goal_window_seconds * 1_000_000,
            )
        )
        self.stats.decisions += 1
        self._outbox.append(
            (
                config.workspace_id,
                _row(
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
                        "context": [round(x, 6) for x in vector.tolist()],
                        "goal": config.settings.goal_event,
                        "window_seconds": config.settings.goal_window_seconds,
                        **({"pool": list(pool)} if pool is not None else {}),
                    },
                ),
            )
        )
        document = config.adaptations[choice.arm]
        return {
            "key": choice.arm,
            "tone": document.get("tone", "neutral"),
            "tokens": document.get("tokens", {}),
            "copy": document.get("copy", {}),
            "propensity": choice.propensity,
            "policy": type(policy).__name__,
        }

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
        self._outbox.append(
            (workspace_id, _row("$exposure", visitor, message_id, now_us, properties))
        )

    def _remember(self, workspace_id: str, visitor: str, reading: dict[str, Any]) -> None:
        key = (workspace_id, visitor)
        readings = self._readings
        readings[key] = reading
        try:
            readings.move_to_end(key)
            while len(readings) > MAX_READINGS:
                readings.popitem(last=False)
        except KeyError:
            pass  # trimmed by the other thread meanwhile: nothing to do

    def forget(self, workspace_id: str, ids: set[str]) -> int:
        """Erasure (on the loop's thread): the visitors' pending rewards, remembered readings,
        queued goal events and decision events not yet journaled. Returns the items dropped."""
        dropped = 0
        for visitor in ids:
            dropped += len(self._pending.pop((workspace_id, visitor), ()))
            if self._readings.pop((workspace_id, visitor), None) is not None:
                dropped += 1

        def rotate(queue: deque[Any], mentions: Callable[[Any], bool]) -> int:
            # Other threads may append meanwhile: take exactly the items present, keep order.
            removed = 0
            for _ in range(len(queue)):
                item = queue.popleft()
                if mentions(item):
                    removed += 1
                else:
                    queue.append(item)
            return removed

        dropped += rotate(
            self._deadlines, lambda p: p.workspace_id == workspace_id and p.visitor_id in ids
        )
        dropped += rotate(
            self._goals, lambda g: g[0] == workspace_id and any(i in ids for i in g[1])
        )
        dropped += rotate(
            self._outbox,
            lambda o: o[0] == workspace_id and (o[1][_USER] in ids or o[1][_ANONYMOUS] in ids),
        )
        return dropped

    # -- learning -----------------------------------------------------------------------------

    def emit(self, workspace_id: str, row: EventRow) -> None:
        """Queue an event row to journal with the decisions (any thread)."""
        self._outbox.append((workspace_id, row))

    def drain_outbox(self) -> list[tuple[str, EventRow]]:
        """The decision and exposure events to journal, handed over once."""
        out = []
        outbox = self._outbox
        while outbox:
            out.append(outbox.popleft())
        return out

    def observe(self, batches: list[WorkspaceBatch]) -> None:
        """Watch stored events (the ingest writer's thread): goal events are queued for
        :meth:`apply_rewards`, emotion readings become visitors' latest state."""
        for batch in batches:
            compiled = self._compiled.get(batch.workspace_id)
            goal = compiled.settings.goal_event if compiled is not None else None
            for row in batch.rows:
                ids = tuple(i for i in (row[_ANONYMOUS], row[_USER]) if i)
                if goal is not None and row[_EVENT] == goal:
                    self._goals.append((batch.workspace_id, ids, int(row[_TIMESTAMP])))
                raw = row[_CONTEXT]
                if isinstance(raw, str) and '"emotion"' in raw:
                    context = orjson.loads(raw)
                    reading = context.get("emotion") if isinstance(context, dict) else None
                    if isinstance(reading, dict):
                        converted = emotion_from_reading(reading, "stored")
                        if converted is not None:
                            for visitor in ids:
                                self._remember(batch.workspace_id, visitor, converted)

    def apply_rewards(self, limit: int | None = None) -> int:
        """Reward 1 to the pending decisions whose visitor did the goal event in time; at most
        ``limit`` goal events at a time. Returns the goal events handled."""
        handled = 0
        rewarded = 0
        goals = self._goals
        while goals and (limit is None or handled < limit):
            workspace_id, ids, at_us = goals.popleft()
            handled += 1
            for visitor in ids:
                waiting = self._pending.get((workspace_id, visitor))
                if not waiting:
                    continue
                keep = []
                for pending in waiting:
                    if pending.decided_us <= at_us + 1_000_000 and at_us <= pending.deadline_us:
                        self._settle(pending, 1.0, remove=False)
                        rewarded += 1
                    else:
                        keep.append(pending)
                if keep:
                    self._pending[(workspace_id, visitor)] = keep
                else:
                    self._pending.pop((workspace_id, visitor), None)
        self.stats.rewarded += rewarded
        return handled

    def close_windows(self, now_us: int | None = None, *, limit: int | None = None) -> int:
        """Reward 0 to decisions whose goal window closed without the goal event; at most
        ``limit`` deadlines at a time. Returns the deadlines handled."""
        now_us = self._clock_us() if now_us is None else now_us
        handled = 0
        while (
            self._deadlines
            and self._deadlines[0].deadline_us < now_us
            and (limit is None or handled < limit)
        ):
            pending = self._deadlines.popleft()
            handled += 1
            key = (pending.workspace_id, pending.visitor_id)
            waiting = self._pending.get(key)
            if waiting is None or pending not in waiting:
                continue  # already rewarded
            waiting.remove(pending)
            if not waiting:
                self._pending.pop(key, None)
            self._settle(pending, 0.0, remove=False)
            self.stats.expired += 1
        return handled

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
        """Policies that learned since the last call, to save (on the loop's thread)."""
        out = {}
        for workspace_id in self._dirty:
            config = self._compiled.get(workspace_id)
            if config is not None and config.policy is not None:
                out[workspace_id] = policy_state(config.policy, config.encoder)
        self._dirty.clear()
        return out

    def pending_count(self, workspace_id: str) -> int:
        """The workspace's decisions still waiting for their reward."""
        return sum(
            len(waiting) for (ws, _), waiting in list(self._pending.items()) if ws == workspace_id
        )


def _row(
    event: str, visitor: str, message_id: str, now_us: int, properties: dict[str, Any]
) -> EventRow:
    return track_row(
        event, anonymous_id=visitor, message_id=message_id, at_us=now_us, properties=properties
    )
