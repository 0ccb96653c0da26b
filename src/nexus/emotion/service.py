"""Emotion: analysis, enrichment of incoming events, visitor trajectories and cohorts.

The only module of the domain that others import. :class:`EmotionRuntime` lives on
``app.state.emotion``; it owns the two-tier analyzer and the enricher the ingest pipeline
calls for each batch on its way into the store.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import orjson
from sqlalchemy.orm import Session

from nexus.core.clock import utcnow
from nexus.core.errors import InvalidInput, NotFound
from nexus.core.logging import get_logger
from nexus.core.settings import Settings
from nexus.emotion.analyzer import EmotionAnalyzer, Mode
from nexus.emotion.models import trajectory
from nexus.emotion.models.cohorts import RESONANCE_DIMENSIONS, CohortStat, aggregate
from nexus.emotion.models.cohorts import resonance as resonance_of
from nexus.emotion.models.taxonomy import EKMAN, PLUTCHIK, VAD
from nexus.emotion.models.vector import EmotionVector
from nexus.emotion.schemas import (
    DEFAULT_TEXT_PROPERTIES,
    AnalyzeResponse,
    Band,
    CohortDimension,
    CohortReport,
    CohortRow,
    CohortValue,
    EmotionForecast,
    EmotionPoint,
    EmotionSettings,
    EmotionSettingsRead,
    EmotionSettingsUpdate,
    EmotionVectorRead,
    VadState,
    VisitorEmotion,
)
from nexus.events.normalize import ROW_FIELDS
from nexus.events.store import (
    EmotionRows,
    EmotionScan,
    EventStore,
    IdentityMode,
    PropertyPath,
    WorkspaceBatch,
)
from nexus.funnels import service as funnels
from nexus.funnels.models import FunnelDefinition
from nexus.security.service import append_entry

log = get_logger("nexus.emotion")
PROPERTIES = ROW_FIELDS.index("properties")
CONTEXT = ROW_FIELDS.index("context")
SETTINGS_TTL_SECONDS = 5.0


# --- settings -------------------------------------------------------------------------------


def text_properties(session: Session, *, workspace_id: str) -> list[str]:
    row = session.get(EmotionSettings, workspace_id)
    return list(row.text_properties) if row is not None else list(DEFAULT_TEXT_PROPERTIES)


def get_settings(session: Session, *, workspace_id: str) -> EmotionSettingsRead:
    return EmotionSettingsRead(text_properties=text_properties(session, workspace_id=workspace_id))


def update_settings(
    session: Session, *, workspace_id: str, update: EmotionSettingsUpdate, actor: str = "system"
) -> EmotionSettingsRead:
    names = list(dict.fromkeys(update.text_properties))
    row = session.get(EmotionSettings, workspace_id)
    if row is None:
        session.add(EmotionSettings(workspace_id=workspace_id, text_properties=names))
    else:
        row.text_properties = names
        row.updated_at = utcnow()
    session.flush()
    append_entry(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action="emotion_settings.updated",
        target=workspace_id,
        details={"changed": ["text_properties"], "text_properties": names},
    )
    return EmotionSettingsRead(text_properties=names)


# --- analysis -------------------------------------------------------------------------------


def vector_read(vector: EmotionVector) -> EmotionVectorRead:
    return EmotionVectorRead.model_validate(asdict(vector))


def enrichment_reading(vector: EmotionVector, source: str) -> dict[str, Any]:
    """What enrichment stores under ``context.emotion``: compact, and every field a funnel
    can break down by (``dominant``, ``ekman``) or filter on (``valence`` …)."""
    return {
        "dominant": vector.dominant,
        "labels": list(vector.predicted),
        "ekman": vector.ekman_label,
        "valence": vector.valence,
        "arousal": vector.arousal,
        "dominance": vector.dominance,
        "plutchik": vector.plutchik,
        "confidence": vector.confidence,
        "tier": vector.tier,
        "source": source,
    }


class EmotionRuntime:
    """The analyzer and the ingest enricher of one process."""

    def __init__(
        self,
        settings: Settings,
        *,
        text_properties_of: Callable[[str], list[str]] | None = None,
    ) -> None:
        self.analyzer = EmotionAnalyzer(
            artifacts_dir=settings.emotion_models_dir,
            edge_share=settings.emotion_edge_share,
            server_threads=settings.emotion_threads,
        )
        self.enrichment: Mode | None = (
            None if settings.emotion_enrichment == "off" else settings.emotion_enrichment
        )
        self._text_properties_of = text_properties_of or (lambda _: list(DEFAULT_TEXT_PROPERTIES))
        self._cache: dict[str, tuple[float, list[str]]] = {}
        self._lock = threading.Lock()
        self.dynamics = DynamicsCache()
        self._edge_artifact: tuple[bytes, str] | None = None

    def edge_artifact(self) -> tuple[bytes, str]:
        """The edge model file as served to browsers, and its ETag."""
        if self._edge_artifact is None:
            body = (self.analyzer.artifacts_dir / "edge.json").read_bytes()
            digest = hashlib.sha256(body).hexdigest()[:16]
            self._edge_artifact = (body, f'"{self.analyzer.edge.version}-{digest}"')
        return self._edge_artifact

    def model_versions(self) -> dict[str, str]:
        versions = {"edge": self.analyzer.edge.version}
        if self.analyzer.server_available:
            versions["server"] = self.analyzer.server.version
        return versions

    def analyze(self, texts: list[str], *, mode: Mode) -> AnalyzeResponse:
        analysis = self.analyzer.analyze(texts, mode=mode)
        return AnalyzeResponse(
            results=[vector_read(v) for v in analysis.vectors],
            edge_share=round(analysis.edge_share, 6),
            models=self.model_versions(),
        )

    def _properties_for(self, workspace_id: str) -> list[str]:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(workspace_id)
            if cached is not None and now - cached[0] < SETTINGS_TTL_SECONDS:
                return cached[1]
        names = self._text_properties_of(workspace_id)
        with self._lock:
            self._cache[workspace_id] = (now, names)
        return names

    def enrich(self, batches: list[WorkspaceBatch]) -> list[WorkspaceBatch]:
        """Read the text properties of each event and store the reading in its context.

        Only the first configured property present (as a non-empty string) is read; which
        one is recorded as ``source``. Events without text pass through untouched.
        """
        batches = [_set_aside_client_readings(batch) for batch in batches]
        if self.enrichment is None:
            return batches
        found: list[tuple[int, int, str, str]] = []  # batch, row, property, text
        for b, batch in enumerate(batches):
            names = self._properties_for(batch.workspace_id)
            quoted = [(name, f'"{name}"') for name in names]
            for r, row in enumerate(batch.rows):
                raw = row[PROPERTIES]
                if not isinstance(raw, str) or not any(q in raw for _, q in quoted):
                    continue
                properties = orjson.loads(raw)
                for name in names:
                    value = properties.get(name) if isinstance(properties, dict) else None
                    if isinstance(value, str) and value.strip():
                        found.append((b, r, name, value[:10_000]))
                        break
        if not found:
            return batches
        vectors = self.analyzer.analyze([text for *_, text in found], mode=self.enrichment).vectors
        rows = [list(batch.rows) for batch in batches]
        for (b, r, name, _), vector in zip(found, vectors, strict=True):
            row = list(rows[b][r])
            context = orjson.loads(row[CONTEXT]) if isinstance(row[CONTEXT], str) else {}
            if not isinstance(context, dict):
                context = {}
            context["emotion"] = enrichment_reading(vector, name)
            row[CONTEXT] = orjson.dumps(context).decode()
            rows[b][r] = row
        return [
            WorkspaceBatch(workspace_id=batch.workspace_id, rows=rows[b])
            for b, batch in enumerate(batches)
        ]


def _set_aside_client_readings(batch: WorkspaceBatch) -> WorkspaceBatch:
    """Move an ``emotion`` a client put in an event's context to ``client_emotion``.

    ``context.emotion`` is what NEXUS read; a reading a client sends is kept, but apart, so
    it cannot pose as one (or feed trajectories and cohorts values NEXUS never produced).
    """
    rows = list(batch.rows)
    changed = False
    for index, row in enumerate(rows):
        raw = row[CONTEXT]
        if not isinstance(raw, str) or '"emotion"' not in raw:
            continue
        context = orjson.loads(raw)
        if isinstance(context, dict) and "emotion" in context:
            context["client_emotion"] = context.pop("emotion")
            moved = list(row)
            moved[CONTEXT] = orjson.dumps(context).decode()
            rows[index] = moved
            changed = True
    return WorkspaceBatch(batch.workspace_id, rows) if changed else batch


def settings_reader(session_factory: Callable[[], Any]) -> Callable[[str], list[str]]:
    """``text_properties_of`` for the runtime, reading the metadata database."""

    def read(workspace_id: str) -> list[str]:
        with session_factory() as session:
            return text_properties(session, workspace_id=workspace_id)

    return read


# --- trajectories ---------------------------------------------------------------------------

US = 1_000_000
FIT_WINDOW_US = 30 * 86_400 * US
FIT_CACHE_SECONDS = 600.0
MAX_HISTORY = 1_000
MAX_FIT_READINGS = 200_000


def _observation(rows: EmotionRows, i: int) -> trajectory.Observation:
    ekman = rows.ekman[i]
    return trajectory.Observation(
        t=float(rows.ts[i]) / US,
        valence=float(rows.vad[i, 0]),
        arousal=float(rows.vad[i, 1]),
        dominance=float(rows.vad[i, 2]),
        label=EKMAN.index(ekman) if ekman in EKMAN else EKMAN.index("neutral"),
    )


def _observations(rows: EmotionRows, start: int, stop: int) -> list[trajectory.Observation]:
    return [_observation(rows, i) for i in range(start, stop)]


def _sequences(rows: EmotionRows) -> list[list[trajectory.Observation]]:
    """One observation list per person (rows come sorted by person, then time)."""
    if not len(rows.person):
        return []
    cuts = np.flatnonzero(np.diff(rows.person)) + 1
    bounds = [0, *cuts.tolist(), len(rows.person)]
    return [_observations(rows, a, b) for a, b in itertools.pairwise(bounds)]


class DynamicsCache:
    """Population dynamics (OU parameters, Ekman transitions) per workspace, refitted on the
    last 30 days of readings at most every ten minutes."""

    def __init__(self) -> None:
        self._fits: dict[str, tuple[float, trajectory.VADParams, trajectory.LabelTransitions]] = {}
        self._lock = threading.Lock()

    def get(
        self, store: EventStore, *, workspace_id: str, now_us: int
    ) -> tuple[trajectory.VADParams, trajectory.LabelTransitions]:
        with self._lock:
            hit = self._fits.get(workspace_id)
        if hit is not None and time.monotonic() - hit[0] < FIT_CACHE_SECONDS:
            return hit[1], hit[2]
        rows = store.emotion_rows(
            EmotionScan(
                workspace_id=workspace_id,
                start_us=now_us - FIT_WINDOW_US,
                end_us=now_us + 1,
                limit=MAX_FIT_READINGS,
            )
        )
        sequences = _sequences(rows)
        params = trajectory.fit_ou(sequences)
        transitions = trajectory.fit_transitions([[o.label for o in s] for s in sequences])
        with self._lock:
            self._fits[workspace_id] = (time.monotonic(), params, transitions)
        return params, transitions


def _band(value: trajectory.DimensionEstimate) -> Band:
    return Band(mean=value.mean, lower=value.lower, upper=value.upper)


def _distribution(labels: tuple[float, ...]) -> dict[str, float]:
    return {name: round(p, 6) for name, p in zip(EKMAN, labels, strict=True)}


def visitor_emotion(
    store: EventStore,
    dynamics: DynamicsCache,
    *,
    workspace_id: str,
    visitor_id: str,
    steps: int,
    identity: IdentityMode = "retroactive",
) -> VisitorEmotion:
    """A visitor's readings filtered, the state now, and ``steps`` readings ahead."""
    now_us = int(utcnow().timestamp() * US)
    rows = store.emotion_rows(
        EmotionScan(
            workspace_id=workspace_id,
            start_us=0,
            end_us=now_us + 366 * 86_400 * US,
            person=visitor_id,
            identity=identity,
        )
    )
    finite = np.flatnonzero(np.isfinite(rows.vad).all(axis=1))
    if not len(finite):
        raise NotFound(f"No emotion readings for visitor {visitor_id}.")
    finite = finite[-MAX_HISTORY:]
    observations = [_observation(rows, int(i)) for i in finite]
    params, transitions = dynamics.get(store, workspace_id=workspace_id, now_us=now_us)
    result = trajectory.trajectory(observations, params, transitions, steps)
    # Filtered points come back in time order, as the rows do.
    history = [
        EmotionPoint(
            timestamp=datetime.fromtimestamp(point.t, tz=UTC),
            message_id=rows.message_id[finite[index]],
            observed=VadState(
                valence=point.observed[0], arousal=point.observed[1], dominance=point.observed[2]
            ),
            filtered=VadState(
                valence=point.valence.mean,
                arousal=point.arousal.mean,
                dominance=point.dominance.mean,
            ),
            filtered_sd=VadState(
                valence=point.valence.sd, arousal=point.arousal.sd, dominance=point.dominance.sd
            ),
            label=rows.label[finite[index]],
            ekman=EKMAN[point.label],
        )
        for index, point in enumerate(result.history)
    ]
    current = result.current
    return VisitorEmotion(
        visitor_id=visitor_id,
        observations=len(observations),
        history=history,
        current=EmotionForecast(
            step=0,
            horizon_seconds=0.0,
            valence=_band(current.valence),
            arousal=_band(current.arousal),
            dominance=_band(current.dominance),
            ekman=_distribution(current.labels),
        ),
        forecast=[
            EmotionForecast(
                step=f.step,
                horizon_seconds=f.horizon,
                valence=_band(f.valence),
                arousal=_band(f.arousal),
                dominance=_band(f.dominance),
                ekman=_distribution(f.labels),
            )
            for f in result.forecasts
        ],
    )


# --- cohorts and resonance ------------------------------------------------------------------

GROUP_PROPERTIES: dict[str, str] = {
    "campaign": "context.campaign.name",
    "variant": "properties.variant",
}
BUCKET_US = {"hour": 3_600 * US, "day": 86_400 * US}


def step_names(definition: FunnelDefinition) -> list[str]:
    """The groups of ``by=step``, in step order."""
    # In an unordered funnel column j is "the (j+1)-th step reached", whichever it was.
    return [
        f"{i + 1} of {len(definition.steps)} steps"
        if definition.mode == "unordered"
        else f"{i + 1}. {step.event}"
        for i, step in enumerate(definition.steps)
    ]


def _step_groups(
    store: EventStore,
    session: Session,
    rows: EmotionRows,
    *,
    workspace_id: str,
    funnel_id: str,
    span: funnels.Period,
) -> list[str | None]:
    """Each reading's funnel step: the furthest step its person had reached by then."""
    funnel = funnels.get_funnel(session, workspace_id=workspace_id, funnel_id=funnel_id)
    definition = FunnelDefinition.model_validate(funnel.definition)
    analysis = funnels.analyse(store, workspace_id=workspace_id, definition=definition, span=span)
    paths = analysis.paths
    names = step_names(definition)
    out: list[str | None] = []
    if not paths.n_persons:
        return [None] * len(rows.ts)
    position = np.clip(np.searchsorted(paths.person, rows.person), 0, paths.n_persons - 1)
    found = paths.person[position] == rows.person
    for index in range(len(rows.ts)):
        if not found[index]:
            out.append(None)
            continue
        row = position[index]
        reached = paths.matched[row] & (paths.times[row] <= rows.ts[index])
        steps = np.flatnonzero(reached)
        out.append(names[int(steps.max())] if len(steps) else None)
    return out


def cohorts(
    store: EventStore,
    session: Session,
    *,
    workspace_id: str,
    by: CohortDimension,
    span: funnels.Period,
    funnel_id: str | None = None,
    group_property: str | None = None,
    interval: Literal["hour", "day"] = "day",
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> CohortReport:
    """Mean valence, arousal, dominance and Ekman shares per group, with bootstrap intervals.

    Groups: the funnel step a reading was written at (``step``, needs ``funnel_id``), the
    value of a property on the reading's event (``variant``: ``properties.variant``;
    ``campaign``: ``context.campaign.name``; either overridable with ``group_property``), or
    the time bucket (``time``). Readings outside every group are left out.
    """
    if by == "step" and funnel_id is None:
        raise InvalidInput("by=step needs a funnel_id")
    path = None
    if by in GROUP_PROPERTIES:
        try:
            path = PropertyPath.parse(group_property or GROUP_PROPERTIES[by])
        except ValueError as exc:
            raise InvalidInput(f"property: {exc}") from None
    rows = store.emotion_rows(
        EmotionScan(
            workspace_id=workspace_id, start_us=span.start_us, end_us=span.end_us, group=path
        )
    )
    keys: list[str | None]
    if by == "step":
        assert funnel_id is not None
        keys = _step_groups(
            store, session, rows, workspace_id=workspace_id, funnel_id=funnel_id, span=span
        )
    elif by == "time":
        width = BUCKET_US[interval]
        keys = [
            datetime.fromtimestamp(float(ts - ts % width) / US, tz=UTC).isoformat()
            for ts in rows.ts.tolist()
        ]
    else:
        keys = rows.group
    members: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        if key is not None:
            members.setdefault(key, []).append(index)
    ekman_codes = np.asarray([EKMAN.index(e) if e in EKMAN else 6 for e in rows.ekman])
    stats = aggregate(
        {key: rows.vad[idx] for key, idx in members.items()},
        dimensions=VAD,
        labels={key: ekman_codes[idx] for key, idx in members.items()},
        label_names=EKMAN,
        seed=seed,
        resamples=resamples,
        confidence=confidence,
    )
    by_group: dict[str, dict[tuple[str, str], CohortStat]] = {}
    for stat in stats:
        by_group.setdefault(stat.group, {})[(stat.kind, stat.dimension)] = stat

    def value(stat: CohortStat) -> CohortValue:
        return CohortValue(mean=stat.mean, lower=stat.lower, upper=stat.upper)

    groups = []
    for key in sorted(members):
        found = by_group[key]
        errors = {s.error for s in found.values() if s.error}
        groups.append(
            CohortRow(
                group=key,
                count=len(members[key]),
                valence=value(found[("mean", "valence")]),
                arousal=value(found[("mean", "arousal")]),
                dominance=value(found[("mean", "dominance")]),
                ekman_share={name: value(found[("share", name)]) for name in EKMAN},
                error=", ".join(sorted(errors)) or None,
            )
        )
    return CohortReport(
        by=by,
        start=span.start,
        end=span.end,
        confidence=confidence,
        resamples=resamples,
        groups=groups,
    )


def resonance(vector: EmotionVector, profile: Mapping[str, float]) -> float:
    """How well a visitor's state matches a content variant's intended emotional profile.

    ``profile`` names any of the 11 dimensions (Plutchik's 8 in [0, 1], valence, arousal,
    dominance in [-1, 1]); the ones it leaves out don't count. 1 = the same direction, 0.5 =
    unrelated, 0 = opposite (see :func:`nexus.emotion.models.cohorts.resonance`).
    """
    unknown = set(profile) - set(RESONANCE_DIMENSIONS)
    if unknown:
        raise InvalidInput(f"unknown emotion dimensions: {', '.join(sorted(unknown))}")
    target = [profile.get(name, float("nan")) for name in RESONANCE_DIMENSIONS]
    return resonance_of(vector.as_array(), np.asarray(target, dtype=np.float64))


# --- summaries for the dashboard ------------------------------------------------------------

SUMMARY_DIMENSIONS: tuple[str, ...] = (*PLUTCHIK, *VAD)
"""What an :class:`EmotionMeans` averages: Plutchik's 8 in [0, 1], then valence, arousal,
dominance in [-1, 1]."""


@dataclass(frozen=True, slots=True)
class EmotionMeans:
    """The mean of each of :data:`SUMMARY_DIMENSIONS` over a group's readings (None where no
    reading has a finite value of it)."""

    group: str
    readings: int
    means: dict[str, float | None]


@dataclass(frozen=True, slots=True)
class EmotionSummary:
    """A period's readings by UTC day (every day of the period, oldest first), by the funnel
    step they were written at (every step, in order) and by a property's value."""

    readings: int
    visitors: int
    by_day: tuple[EmotionMeans, ...]
    by_step: tuple[EmotionMeans, ...]
    by_cohort: tuple[EmotionMeans, ...]


def _means(values: np.ndarray[Any, np.dtype[np.float64]], group: str) -> EmotionMeans:
    """``values`` is ``(n, len(SUMMARY_DIMENSIONS))``; NaN is a missing value."""
    finite = np.isfinite(values)
    counts = finite.sum(axis=0)
    sums = np.where(finite, values, 0.0).sum(axis=0)
    means = {
        name: (float(sums[j] / counts[j]) if counts[j] else None)
        for j, name in enumerate(SUMMARY_DIMENSIONS)
    }
    return EmotionMeans(group=group, readings=int(values.shape[0]), means=means)


def _grouped(
    values: np.ndarray[Any, np.dtype[np.float64]], keys: list[str | None], order: list[str]
) -> tuple[EmotionMeans, ...]:
    members: dict[str, list[int]] = {name: [] for name in order}
    for index, key in enumerate(keys):
        if key is not None:
            members.setdefault(key, []).append(index)
    return tuple(_means(values[idx], name) for name, idx in members.items())


def emotion_summary(
    store: EventStore,
    session: Session,
    *,
    workspace_id: str,
    span: funnels.Period,
    funnel_id: str | None = None,
    cohort_property: str | None = None,
    identity: IdentityMode = "retroactive",
) -> EmotionSummary:
    """Mean emotion per day, per step of funnel ``funnel_id`` (the furthest step the writer
    had reached, as in :func:`cohorts`) and per value of ``cohort_property`` on the
    reading's event, from one scan of the period's readings. Readings outside every step
    or without the property are left out of those groups."""
    path = None
    if cohort_property:
        try:
            path = PropertyPath.parse(cohort_property)
        except ValueError as exc:
            raise InvalidInput(f"cohort property: {exc}") from None
    rows = store.emotion_rows(
        EmotionScan(
            workspace_id=workspace_id,
            start_us=span.start_us,
            end_us=span.end_us,
            group=path,
            identity=identity,
            plutchik=PLUTCHIK,
        )
    )
    values = np.column_stack([rows.plutchik, rows.vad]).reshape(
        len(rows.ts), len(SUMMARY_DIMENSIONS)
    )
    day_us = BUCKET_US["day"]
    origin = span.start_us - span.start_us % day_us
    days = [
        datetime.fromtimestamp(float(origin + i * day_us) / US, tz=UTC).date().isoformat()
        for i in range((span.end_us - 1 - origin) // day_us + 1)
    ]
    day_keys: list[str | None] = [days[(ts - origin) // day_us] for ts in rows.ts.tolist()]
    by_step: tuple[EmotionMeans, ...] = ()
    if funnel_id is not None:
        funnel = funnels.get_funnel(session, workspace_id=workspace_id, funnel_id=funnel_id)
        names = step_names(FunnelDefinition.model_validate(funnel.definition))
        steps = _step_groups(
            store, session, rows, workspace_id=workspace_id, funnel_id=funnel_id, span=span
        )
        by_step = _grouped(values, steps, names)
    return EmotionSummary(
        readings=len(rows.ts),
        visitors=int(np.unique(rows.person).size),
        by_day=_grouped(values, day_keys, days),
        by_step=by_step,
        by_cohort=_grouped(values, rows.group, sorted({g for g in rows.group if g is not None}))
        if path is not None
        else (),
    )


def dominant_emotions(
    store: EventStore,
    *,
    workspace_id: str,
    span: funnels.Period,
    identity: IdentityMode = "retroactive",
) -> dict[int, str]:
    """Each person's prevailing Ekman-7 emotion in the period: the class of most of their
    readings (a tie goes to the class read last), keyed by the person codes of the store's
    scans, for :class:`nexus.funnels.service.PersonGroups`."""
    rows = store.emotion_rows(
        EmotionScan(
            workspace_id=workspace_id,
            start_us=span.start_us,
            end_us=span.end_us,
            identity=identity,
        )
    )
    tallies: dict[int, dict[str, tuple[int, int]]] = {}
    for index, (code, ekman) in enumerate(zip(rows.person.tolist(), rows.ekman, strict=True)):
        counts = tallies.setdefault(code, {})
        seen, _ = counts.get(ekman, (0, 0))
        counts[ekman] = (seen + 1, index)  # rows are in time order within a person
    return {code: max(counts, key=lambda e: counts[e]) for code, counts in tallies.items()}
