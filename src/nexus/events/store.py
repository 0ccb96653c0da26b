"""The event store interface: what ingestion, identity, funnels and export need of it.

The embedded default is :class:`nexus.events.duckdb_store.DuckDBEventStore`; a ClickHouse
implementation plugs in behind the same interface and passes the same contract tests
(``tests/events/test_store_contract.py``). Nothing here assumes DuckDB: queries are described
as data (:class:`StepScan`), results come back as numpy arrays, and atomicity is only required
for one :meth:`EventStore.append` call (an implementation without transactions relies on
the message-id deduplication to make a re-applied batch harmless, which the contract tests
check).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from nexus.events.normalize import EventRow

FilterOp = Literal["eq", "neq", "contains", "regex", "gt", "lt", "in", "is_set"]
FILTER_OPS: tuple[FilterOp, ...] = ("eq", "neq", "contains", "regex", "gt", "lt", "in", "is_set")
ExportFormat = Literal["jsonl", "parquet"]
IdentityMode = Literal["retroactive", "forward"]

# Where a property lives: ``properties.plan`` (the default for a bare name), ``context.
# campaign.source``, ``traits.email``, ``person.plan`` (the person's latest identify traits)
# or one of the top-level fields below.
PROPERTY_SOURCES = ("properties", "context", "traits", "person")
TOP_LEVEL_PROPERTIES = ("event", "type", "name", "user_id", "anonymous_id", "group_id")
_PATH_SEGMENT = re.compile(r"^[^\x00-\x1f]{1,200}$")


@dataclass(frozen=True, slots=True)
class PropertyPath:
    """A parsed property reference (see :data:`PROPERTY_SOURCES`)."""

    source: str  # one of PROPERTY_SOURCES or "column"
    keys: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> PropertyPath:
        if not text or len(text) > 500:
            raise ValueError("a property name must be 1 to 500 characters")
        if text in TOP_LEVEL_PROPERTIES:
            return cls("column", (text,))
        head, dot, rest = text.partition(".")
        if dot and head in PROPERTY_SOURCES:
            keys = tuple(rest.split("."))
            source = head
        else:
            keys = tuple(text.split("."))
            source = "properties"
        if not all(_PATH_SEGMENT.match(k) for k in keys):
            raise ValueError(f"property {text!r} has an empty or invalid segment")
        return cls(source, keys)

    def __str__(self) -> str:
        if self.source == "column":
            return self.keys[0]
        return ".".join((self.source, *self.keys))


@dataclass(frozen=True, slots=True)
class PropertyFilter:
    """``property op value``. Comparison rules (the same in every store):

    * ``eq``/``neq``: numbers compare numerically, booleans as booleans, anything else as
      text; ``neq`` also matches when the property is missing;
    * ``contains``: case-insensitive substring of the text value;
    * ``regex``: RE2 syntax (DuckDB and ClickHouse both use RE2), searched anywhere;
    * ``gt``/``lt``: numeric; a value that is not a number never matches;
    * ``in``: the text value is one of a list (numbers compared by their text);
    * ``is_set``: ``true`` = present and not null, ``false`` = missing or null.
    """

    property: PropertyPath
    op: FilterOp
    value: Any = None


@dataclass(frozen=True, slots=True)
class Condition:
    """An event name and filters that must all hold; a funnel step or exclusion."""

    event: str
    filters: tuple[PropertyFilter, ...] = ()


@dataclass(frozen=True, slots=True)
class StepScan:
    """Events of one workspace in ``[start_us, end_us)`` that match any condition.

    ``all_events`` also returns events that match none (mask 0), which strict funnels need to
    see what happened between steps.
    """

    workspace_id: str
    conditions: tuple[Condition, ...]
    start_us: int
    end_us: int
    breakdown: PropertyPath | None = None
    all_events: bool = False
    identity: IdentityMode = "retroactive"
    with_person_ids: bool = False


@dataclass(frozen=True)
class StepRows:
    """The answer to a :class:`StepScan`, sorted by (person, ts).

    ``person`` codes are equal exactly when the (identity-resolved) person is; bit ``i`` of
    ``mask`` says the event matches ``conditions[i]``. ``breakdown`` are codes into
    ``breakdown_labels`` (the label None = the event lacks the property); ``person_ids`` are
    the ids behind the codes when asked for.
    """

    person: NDArray[np.int64]
    ts: NDArray[np.int64]
    mask: NDArray[np.int64]
    breakdown: NDArray[np.int32] | None = None
    breakdown_labels: tuple[str | None, ...] = ()
    person_ids: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AppendResult:
    inserted: int
    duplicates: int


@dataclass(frozen=True, slots=True)
class WorkspaceBatch:
    workspace_id: str
    rows: Sequence[EventRow]


@dataclass(frozen=True, slots=True)
class EmotionScan:
    """Which emotion readings to fetch: a workspace and period, optionally one person's
    (any of their ids), optionally with one property's text value per reading."""

    workspace_id: str
    start_us: int
    end_us: int
    person: str | None = None
    group: PropertyPath | None = None
    identity: Literal["retroactive", "forward"] = "retroactive"
    limit: int | None = None
    plutchik: tuple[str, ...] = ()
    """Plutchik emotions (``joy``, ``trust`` …) to fetch from each reading's ``plutchik``."""


@dataclass(frozen=True, slots=True)
class EmotionRows:
    """Emotion readings sorted by person code, then time (by time alone for one person's).
    ``vad`` is ``(n, 3)`` in [-1, 1], NaN where a reading lacks a finite value; ``label`` the
    dominant fine-grained label, ``ekman`` the dominant Ekman-7 class; ``plutchik`` is
    ``(n, k)`` for the ``k`` emotions the scan asked for, in [0, 1], NaN where missing."""

    person: NDArray[np.int64]
    ts: NDArray[np.int64]
    vad: NDArray[np.float64]
    label: list[str]
    ekman: list[str]
    confidence: NDArray[np.float64]
    group: list[str | None]
    message_id: list[str]
    plutchik: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 0)))


@dataclass(frozen=True, slots=True)
class PropertyScan:
    """Events named ``events`` of one workspace in ``[start_us, end_us)`` that pass every
    filter, with the text value of each of ``properties`` (experiment exposures, decisions,
    metric values)."""

    workspace_id: str
    events: tuple[str, ...]
    start_us: int
    end_us: int
    properties: tuple[PropertyPath, ...] = ()
    filters: tuple[PropertyFilter, ...] = ()
    identity: IdentityMode = "retroactive"


@dataclass(frozen=True)
class PropertyRows:
    """The answer to a :class:`PropertyScan`, sorted by (person, ts, message id).

    ``person`` codes are equal exactly when the (identity-resolved) person is, and agree with
    those of :meth:`EventStore.scan` under the same identity mode; ``person_ids`` are the ids
    behind them, one per row. ``values[j][i]`` is the text of ``properties[j]`` on row ``i``
    (None where missing; objects and arrays as JSON text).
    """

    person: NDArray[np.int64]
    person_ids: list[str]
    ts: NDArray[np.int64]
    event: list[str]
    values: tuple[list[str | None], ...]

    def __len__(self) -> int:
        return int(self.person.shape[0])


class StoreBusy(RuntimeError):
    """The store is open in another process (a running server holds the embedded file)."""


BOT_MARK = '"bot":{'
"""How an event judged a bot's looks in its context JSON (``context.bot``, set on ingest)."""


def bots_marker(workspace_id: str) -> str:
    """The :meth:`EventStore.marker` set once a workspace has any event marked as a bot's."""
    return f"bots:{workspace_id}"


class EventStore(ABC):
    """Append-only events with identity, queried for funnels, export and recent lists."""

    @abstractmethod
    def append(
        self, batches: Sequence[WorkspaceBatch], *, markers: dict[str, int] | None = None
    ) -> AppendResult:
        """Store the events not stored yet (by message id per workspace), apply identify and
        alias to the identity map, and set ``markers`` -- atomically where the store can."""

    @abstractmethod
    def marker(self, name: str) -> int | None:
        """A position remembered by :meth:`append` (the journal offset, an import's line)."""

    @abstractmethod
    def count(self, workspace_id: str) -> int: ...

    @abstractmethod
    def recent(
        self,
        workspace_id: str,
        *,
        limit: int,
        before: tuple[int, str] | None = None,
        event: str | None = None,
        person: str | None = None,
    ) -> list[EventRow]:
        """Newest first by (received_at, message_id), strictly before ``before``."""

    @abstractmethod
    def resolve_person(self, workspace_id: str, distinct_id: str) -> str:
        """The person a user or anonymous id belongs to now."""

    @abstractmethod
    def scan(self, query: StepScan) -> StepRows: ...

    @abstractmethod
    def emotion_rows(self, query: EmotionScan) -> EmotionRows:
        """Events that carry an emotion reading (``context.emotion``, written by enrichment)."""

    @abstractmethod
    def property_rows(self, query: PropertyScan) -> PropertyRows:
        """Matching events with chosen property values, for per-person metrics."""

    @abstractmethod
    def export(self, workspace_id: str, destination: Path, *, fmt: ExportFormat) -> int:
        """Write the workspace's events as Segment-shaped JSON lines or Parquet; returns the
        number of events written."""

    # -- data-subject requests ----------------------------------------------------------------

    @abstractmethod
    def linked_ids(self, workspace_id: str, ids: set[str]) -> set[str]:
        """Every id sharing a person with ``ids``: user, anonymous, previous and person ids of
        their events and identity links (``ids`` included when found)."""

    @abstractmethod
    def subject_rows(self, workspace_id: str, ids: set[str]) -> list[EventRow]:
        """Every event that names any of ``ids``, oldest first."""

    @abstractmethod
    def erase_subjects(self, workspace_id: str, ids: set[str]) -> dict[str, int]:
        """Delete the events, identity links and person records of ``ids``; counts per table."""

    @abstractmethod
    def count_subjects(self, workspace_id: str, ids: set[str]) -> int:
        """Records (events, identity links, persons) that still name any of ``ids``."""

    @abstractmethod
    def delete_before(self, workspace_id: str, before_us: int) -> dict[str, int]:
        """Retention: events that happened before ``before_us`` (and persons last seen
        before it, with their identity links); counts per table."""

    @abstractmethod
    def close(self) -> None: ...
