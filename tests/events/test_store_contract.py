"""The event store contract: every :class:`~nexus.events.store.EventStore` implementation must
pass these tests (DuckDB today; a ClickHouse store is one more entry in
:data:`IMPLEMENTATIONS`).

The filter semantics are checked against :func:`reference_match`, a few lines of Python that
restate the :class:`~nexus.events.store.PropertyFilter` docstring, over generated properties.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nexus.events.duckdb_store import DuckDBEventStore
from nexus.events.normalize import ROW_FIELDS, EventRow, normalize, row_to_message
from nexus.events.store import (
    Condition,
    EventStore,
    FilterOp,
    IdentityMode,
    PropertyFilter,
    PropertyPath,
    StepRows,
    StepScan,
    WorkspaceBatch,
)
from tests.events.conftest import SECOND, T0

WS = "ws_a"
OTHER_WS = "ws_b"
START, END = T0 - 3600 * SECOND, T0 + 3600 * SECOND


@dataclass(frozen=True)
class Implementation:
    name: str
    open: Callable[[Path], EventStore]  # opens (again) the store kept under a directory
    transactional: bool  # a failed append leaves nothing behind


IMPLEMENTATIONS = [
    Implementation(
        "duckdb",
        lambda root: DuckDBEventStore(root / "events.duckdb", memory_limit="256MB", threads=1),
        transactional=True,
    ),
]


class Stores:
    """The store under test, which a test may close and open again on the same files."""

    def __init__(self, implementation: Implementation, root: Path) -> None:
        self.implementation = implementation
        self.root = root
        self.current = implementation.open(root)

    def reopen(self) -> EventStore:
        self.current.close()
        self.current = self.implementation.open(self.root)
        return self.current


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda i: i.name)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    handle = Stores(request.param, tmp_path)
    yield handle
    handle.current.close()


@pytest.fixture
def store(stores: Stores) -> EventStore:
    return stores.current


_workspace_ids = itertools.count()


def fresh_workspace() -> str:
    """A workspace id no other example used (hypothesis reuses the fixture's store)."""
    return f"ws_{next(_workspace_ids)}"


def ev(
    message_id: str,
    event: str = "view",
    *,
    at: int = 0,
    user: str | None = None,
    anon: str | None = None,
    kind: str = "track",
    **fields: Any,
) -> EventRow:
    """A normalized event that happened (and arrived) ``at`` microseconds after T0."""
    message: dict[str, Any] = {"type": kind, "messageId": message_id, **fields}
    if kind == "track":
        message["event"] = event
    if user is not None:
        message["userId"] = user
    if anon is not None:
        message["anonymousId"] = anon
    if user is None and anon is None:
        message["anonymousId"] = "anon-" + message_id
    return normalize(message, received_at=T0 + at)


def identify(
    message_id: str, *, at: int, user: str, anon: str | None = None, **traits: Any
) -> EventRow:
    extra: dict[str, Any] = {"traits": traits} if traits else {}
    return ev(message_id, at=at, user=user, anon=anon, kind="identify", **extra)


def alias(message_id: str, *, at: int, user: str, previous: str) -> EventRow:
    return ev(message_id, at=at, user=user, kind="alias", previousId=previous)


def put(store: EventStore, rows: Sequence[EventRow], workspace: str = WS, **kwargs: Any) -> int:
    return store.append([WorkspaceBatch(workspace, list(rows))], **kwargs).inserted


def scan(
    store: EventStore,
    *conditions: Condition | str,
    workspace: str = WS,
    **options: Any,
) -> StepRows:
    conds = tuple(Condition(c) if isinstance(c, str) else c for c in conditions)
    return store.scan(
        StepScan(
            workspace, conds, options.pop("start_us", START), options.pop("end_us", END), **options
        )
    )


def persons_by_ts(rows: StepRows) -> dict[int, str]:
    """Event time -> person id (the tests give every event its own time)."""
    return {int(t): rows.person_ids[int(p)] for p, t in zip(rows.person, rows.ts, strict=True)}


def breakdown_labels(rows: StepRows) -> list[str | None]:
    """Each event's breakdown label (None = the event lacks the property)."""
    assert rows.breakdown is not None
    return [rows.breakdown_labels[code] for code in rows.breakdown.tolist()]


def ids_of(rows: Sequence[EventRow]) -> list[str]:
    return [r[ROW_FIELDS.index("message_id")] for r in rows]


# --- append and deduplication ---------------------------------------------------------------


def test_append_stores_new_events(store: EventStore) -> None:
    result = store.append([WorkspaceBatch(WS, [ev("m1"), ev("m2"), ev("m3")])])
    assert (result.inserted, result.duplicates) == (3, 0)
    assert store.count(WS) == 3


def test_replaying_a_batch_inserts_nothing(store: EventStore) -> None:
    rows = [ev("m1"), ev("m2", at=1), ev("m3", at=2)]
    put(store, rows)
    result = store.append([WorkspaceBatch(WS, rows)])
    assert (result.inserted, result.duplicates) == (0, 3)
    assert store.count(WS) == 3


def test_a_replay_mixed_with_new_events_inserts_only_the_new(store: EventStore) -> None:
    put(store, [ev("m1"), ev("m2", at=1)])
    assert put(store, [ev("m2", at=1), ev("m3", at=2), ev("m1")]) == 1
    assert sorted(ids_of(store.recent(WS, limit=10))) == ["m1", "m2", "m3"]


def test_a_message_id_repeated_in_one_append_is_stored_once_first_wins(store: EventStore) -> None:
    first = ev("m1", properties={"version": 1})
    second = ev("m1", at=5, properties={"version": 2})
    other_batch = ev("m1", at=9, properties={"version": 3})
    result = store.append([WorkspaceBatch(WS, [first, second]), WorkspaceBatch(WS, [other_batch])])
    assert (result.inserted, result.duplicates) == (1, 2)
    (stored,) = store.recent(WS, limit=10)
    assert orjson.loads(stored[ROW_FIELDS.index("properties")]) == {"version": 1}


def test_the_same_message_id_in_two_workspaces_is_two_events(store: EventStore) -> None:
    result = store.append([WorkspaceBatch(WS, [ev("m1")]), WorkspaceBatch(OTHER_WS, [ev("m1")])])
    assert result.inserted == 2
    assert store.count(WS) == store.count(OTHER_WS) == 1


def test_replayed_identify_does_not_move_an_identity_a_later_alias_changed(
    store: EventStore,
) -> None:
    first = identify("i1", at=1, user="u1", anon="a1")
    put(store, [first, alias("al", at=2, user="u2", previous="u1")])
    put(store, [first])  # a client retry of the identify, after the alias
    assert store.resolve_person(WS, "a1") == "u2"


# --- markers and atomicity ------------------------------------------------------------------


def test_a_marker_is_none_until_set(store: EventStore) -> None:
    assert store.marker("journal") is None


def test_markers_and_events_persist_together(stores: Stores) -> None:
    put(stores.current, [ev("m1"), ev("m2", at=1)], markers={"journal": 120, "import": 7})
    put(stores.current, [ev("m3", at=2)], markers={"journal": 180})
    reopened = stores.reopen()
    assert reopened.marker("journal") == 180
    assert reopened.marker("import") == 7
    assert reopened.count(WS) == 3


def test_a_marker_is_set_even_when_every_event_is_a_duplicate(store: EventStore) -> None:
    put(store, [ev("m1")], markers={"journal": 10})
    put(store, [ev("m1")], markers={"journal": 20})
    assert store.marker("journal") == 20


def test_a_failed_append_can_be_applied_again_exactly_once(stores: Stores) -> None:
    good = [identify("i1", at=1, user="u1", anon="a1", plan="pro"), ev("m1", at=2, anon="a1")]
    broken = ev("bad", at=3)
    broken[ROW_FIELDS.index("timestamp")] = "not a time"
    with pytest.raises(Exception):  # noqa: B017, PT011 - each store fails in its own words
        put(stores.current, [*good, broken], markers={"journal": 99})
    if stores.implementation.transactional:
        assert stores.current.count(WS) == 0
        assert stores.current.marker("journal") is None
        assert stores.current.resolve_person(WS, "a1") == "a1"
    store = stores.reopen()
    put(store, good, markers={"journal": 99})
    assert store.count(WS) == 2
    assert store.marker("journal") == 99
    assert store.resolve_person(WS, "a1") == "u1"
    assert put(store, good) == 0


# --- identity -------------------------------------------------------------------------------


def _signup_journey(store: EventStore) -> None:
    put(
        store,
        [
            ev("m1", "view", at=1, anon="a1"),
            identify("i1", at=2, user="u1", anon="a1"),
            ev("m2", "view", at=3, anon="a1"),
            ev("m3", "buy", at=4, user="u1"),
        ],
    )


def test_identify_stitches_earlier_anonymous_events_to_the_user(store: EventStore) -> None:
    _signup_journey(store)
    rows = scan(store, "view", "buy", with_person_ids=True)
    assert persons_by_ts(rows) == {T0 + 1: "u1", T0 + 3: "u1", T0 + 4: "u1"}


def test_forward_identity_keeps_events_before_the_identify_apart(store: EventStore) -> None:
    _signup_journey(store)
    rows = scan(store, "view", "buy", identity="forward", with_person_ids=True)
    assert persons_by_ts(rows) == {T0 + 1: "a1", T0 + 3: "u1", T0 + 4: "u1"}


def test_resolve_person_follows_identify(store: EventStore) -> None:
    _signup_journey(store)
    assert store.resolve_person(WS, "a1") == "u1"
    assert store.resolve_person(WS, "u1") == "u1"
    assert store.resolve_person(WS, "stranger") == "stranger"


@pytest.mark.parametrize("split", [False, True], ids=["one-append", "two-appends"])
def test_the_first_identify_of_an_anonymous_id_wins(store: EventStore, split: bool) -> None:
    first = identify("i1", at=1, user="u1", anon="shared-device")
    second = identify("i2", at=2, user="u2", anon="shared-device")
    if split:
        put(store, [first])
        put(store, [second])
    else:
        put(store, [first, second])
    assert store.resolve_person(WS, "shared-device") == "u1"
    assert store.resolve_person(WS, "u2") == "u2"


def test_identity_is_per_workspace(store: EventStore) -> None:
    put(store, [identify("i1", at=1, user="u1", anon="a1")])
    assert store.resolve_person(OTHER_WS, "a1") == "a1"


def test_alias_merges_the_previous_id_into_the_user(store: EventStore) -> None:
    put(
        store,
        [
            ev("m1", "view", at=1, user="old-id"),
            alias("al", at=2, user="new-id", previous="old-id"),
            ev("m2", "buy", at=3, user="new-id"),
        ],
    )
    assert store.resolve_person(WS, "old-id") == "new-id"
    rows = scan(store, "view", "buy", with_person_ids=True)
    assert persons_by_ts(rows) == {T0 + 1: "new-id", T0 + 3: "new-id"}


def test_alias_repoints_ids_already_mapped_to_the_previous_id(store: EventStore) -> None:
    put(store, [ev("m1", "view", at=1, anon="a1"), identify("i1", at=2, user="old-id", anon="a1")])
    put(
        store,
        [alias("al", at=3, user="new-id", previous="old-id"), ev("m2", "buy", at=4, anon="a1")],
    )
    assert store.resolve_person(WS, "a1") == "new-id"
    rows = scan(store, "view", "buy", with_person_ids=True)
    assert persons_by_ts(rows) == {T0 + 1: "new-id", T0 + 4: "new-id"}


class IdentityModel:
    """The identity rules as the store documents them, on a plain dict."""

    def __init__(self) -> None:
        self.mapping: dict[str, str] = {}

    def person(self, distinct: str) -> str:
        return self.mapping.get(distinct, distinct)

    def identify(self, user: str, anon: str) -> None:
        if anon not in self.mapping:  # the first identify of an anonymous id wins
            self.mapping[anon] = self.person(user)

    def alias(self, user: str, previous: str) -> None:
        person, old = self.person(user), self.person(previous)
        if previous == user or old == person:
            return
        self.mapping[previous] = person
        for key, value in list(self.mapping.items()):
            if value == old:
                self.mapping[key] = person


ANONS = ["a1", "a2", "a3"]
USERS = ["u1", "u2", "u3"]
identity_ops = st.lists(
    st.one_of(
        st.tuples(st.just("track"), st.sampled_from(ANONS + USERS)),
        st.tuples(st.just("identify"), st.sampled_from(USERS), st.sampled_from(ANONS)),
        st.tuples(st.just("alias"), st.sampled_from(USERS), st.sampled_from(ANONS + USERS)),
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=identity_ops, split=st.booleans())
def test_identity_follows_the_documented_rules(
    store: EventStore, ops: list[tuple[str, ...]], split: bool
) -> None:
    workspace = fresh_workspace()
    model = IdentityModel()
    rows: list[EventRow] = []
    forward: dict[int, str] = {}  # event time -> person when it was stored
    for at, op in enumerate(ops, start=1):
        if op[0] == "track":
            distinct = op[1]
            who = {"user": distinct} if distinct in USERS else {"anon": distinct}
            rows.append(ev(f"m{at}", "e", at=at, **who))
            forward[T0 + at] = model.person(distinct)
        elif op[0] == "identify":
            rows.append(identify(f"m{at}", at=at, user=op[1], anon=op[2]))
            model.identify(op[1], op[2])
        else:
            rows.append(alias(f"m{at}", at=at, user=op[1], previous=op[2]))
            model.alias(op[1], op[2])
    if split:
        for row in rows:
            put(store, [row], workspace)
    else:
        put(store, rows, workspace)

    for distinct in ANONS + USERS:
        assert store.resolve_person(workspace, distinct) == model.person(distinct)
    retro = scan(store, "e", workspace=workspace, with_person_ids=True)
    tracked = {T0 + at: op[1] for at, op in enumerate(ops, start=1) if op[0] == "track"}
    assert persons_by_ts(retro) == {t: model.person(d) for t, d in tracked.items()}
    fwd = scan(store, "e", workspace=workspace, identity="forward", with_person_ids=True)
    assert persons_by_ts(fwd) == forward


# --- persons' traits ------------------------------------------------------------------------


def person_filter(name: str, op: FilterOp, value: Any) -> PropertyFilter:
    return PropertyFilter(PropertyPath.parse(name), op, value)


def test_identify_traits_merge_into_the_person(store: EventStore) -> None:
    put(
        store,
        [
            identify("i1", at=1, user="u1", plan="free", seats=1),
            identify("i2", at=2, user="u1", plan="pro"),
            ev("m1", "view", at=3, user="u1"),
            ev("m2", "view", at=4, user="u2"),
        ],
    )
    pro = Condition("view", (person_filter("person.plan", "eq", "pro"),))
    seats = Condition("view", (person_filter("person.seats", "eq", 1),))
    rows = scan(store, pro, seats, with_person_ids=True)
    masks = {rows.person_ids[int(p)]: int(m) for p, m in zip(rows.person, rows.mask, strict=True)}
    assert masks == {"u1": 0b11, "u2": 0}


def test_person_traits_apply_to_anonymous_events_stitched_to_the_person(
    store: EventStore,
) -> None:
    put(
        store,
        [
            ev("m1", "view", at=1, anon="a1"),
            identify("i1", at=2, user="u1", anon="a1", plan="pro"),
        ],
    )
    rows = scan(store, Condition("view", (person_filter("person.plan", "eq", "pro"),)))
    assert rows.mask.tolist() == [1]


def test_breakdown_by_a_person_trait(store: EventStore) -> None:
    put(
        store,
        [
            identify("i1", at=1, user="u1", plan="pro"),
            identify("i2", at=2, user="u2", plan="free"),
            ev("m1", "view", at=3, user="u1"),
            ev("m2", "view", at=4, user="u2"),
            ev("m3", "view", at=5, user="u3"),
        ],
    )
    rows = scan(store, "view", breakdown=PropertyPath.parse("person.plan"))
    assert dict(zip(rows.ts.tolist(), breakdown_labels(rows), strict=True)) == {
        T0 + 3: "pro",
        T0 + 4: "free",
        T0 + 5: None,
    }


def test_alias_carries_the_previous_persons_traits(store: EventStore) -> None:
    put(
        store,
        [
            identify("i1", at=1, user="u1", plan="pro"),
            ev("m1", "view", at=2, user="u1"),
            alias("al", at=3, user="u9", previous="u1"),
        ],
    )
    rows = scan(store, Condition("view", (person_filter("person.plan", "eq", "pro"),)))
    assert rows.mask.tolist() == [1]


# --- filters --------------------------------------------------------------------------------

_MISSING = object()


def _lookup(document: Any, keys: Sequence[str]) -> Any:
    for key in keys:
        if not isinstance(document, dict) or key not in document:
            return _MISSING
        document = document[key]
    return document


def _text(value: Any) -> str | None:
    """A JSON value as the text filters compare (``None`` = missing or null)."""
    if value is _MISSING or value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _number(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


def reference_match(  # noqa: PLR0911 - one branch per operator, as the docstring has them
    document: dict[str, Any] | None, keys: Sequence[str], op: str, value: Any
) -> bool:
    """The PropertyFilter docstring, literally."""
    text = _text(_lookup(document or {}, keys))
    if op == "is_set":
        return (text is not None) == bool(value)
    if op in ("eq", "neq"):
        if isinstance(value, bool):
            equal = text == ("true" if value else "false")
        elif isinstance(value, int | float):
            number = _number(text)
            equal = number is not None and number == float(value)
        else:
            equal = text == str(value)
        return equal if op == "eq" else not equal
    if text is None:
        return False
    if op == "contains":
        return str(value).lower() in text.lower()
    if op == "regex":
        return re.search(value, text) is not None
    if op in ("gt", "lt"):
        number = _number(text)
        return number is not None and (number > value if op == "gt" else number < value)
    if op == "in":
        return text in ["true" if v is True else "false" if v is False else str(v) for v in value]
    raise AssertionError(op)


ALPHABET = "ab19.- A"
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-20, max_value=20)
    | st.sampled_from([1.5, -2.25, 0.5, 10.0, 9.0])
    | st.text(alphabet=ALPHABET, max_size=4)
)
nested = st.dictionaries(
    st.sampled_from(["a", "b"]), st.integers(-3, 3) | st.text(alphabet="ab1", max_size=3)
)
documents = st.dictionaries(st.sampled_from(["a", "b", "n"]), scalars | nested, max_size=3)
numbers = st.integers(min_value=-20, max_value=20) | st.sampled_from([1.5, -2.25, 9.0])
texts = st.text(alphabet=ALPHABET, max_size=3)
filters = st.one_of(
    st.tuples(st.sampled_from(["eq", "neq"]), scalars.filter(lambda v: v is not None)),
    st.tuples(st.sampled_from(["contains"]), texts),
    st.tuples(
        st.just("regex"), st.sampled_from(["^a", "b$", "a.b", "[0-9]+", "1|b", "^$", r"\.", "A"])
    ),
    st.tuples(st.sampled_from(["gt", "lt"]), numbers),
    st.tuples(st.just("in"), st.lists(numbers | texts | st.booleans(), max_size=3)),
    st.tuples(st.just("is_set"), st.booleans()),
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    docs=st.lists(documents, min_size=1, max_size=6),
    source=st.sampled_from(["properties", "context", "traits", "person"]),
    keys=st.sampled_from([("a",), ("b",), ("n", "a"), ("missing",)]),
    op_value=filters,
)
def test_filters_match_the_documented_semantics(
    store: EventStore,
    docs: list[dict[str, Any]],
    source: str,
    keys: tuple[str, ...],
    op_value: tuple[str, Any],
) -> None:
    op, value = op_value
    workspace = fresh_workspace()
    rows: list[EventRow] = []
    for i, doc in enumerate(docs):
        user = f"u{i}"
        if source == "person":
            rows.append(identify(f"i{i}", at=2 * i, user=user, **doc))
            rows.append(ev(f"m{i}", "e", at=2 * i + 1, user=user))
        else:
            rows.append(ev(f"m{i}", "e", at=2 * i + 1, user=user, **{source: doc}))
    put(store, rows, workspace)
    path = PropertyPath.parse(".".join((source, *keys)))
    condition = Condition("e", (PropertyFilter(path, op, value),))  # type: ignore[arg-type]
    result = scan(store, condition, workspace=workspace, with_person_ids=True)
    got = {
        result.person_ids[int(p)]: bool(m) for p, m in zip(result.person, result.mask, strict=True)
    }
    want = {f"u{i}": reference_match(doc, keys, op, value) for i, doc in enumerate(docs)}
    assert got == want


def mask_by_ts(rows: StepRows) -> dict[int, int]:
    return dict(zip(rows.ts.tolist(), rows.mask.tolist(), strict=True))


def test_a_bare_property_name_means_properties(store: EventStore) -> None:
    put(store, [ev("m1", properties={"plan": "pro"}), ev("m2", at=1, properties={"plan": "free"})])
    rows = scan(store, Condition("view", (person_filter("plan", "eq", "pro"),)))
    assert mask_by_ts(rows) == {T0: 1, T0 + 1: 0}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("user_id", "u1"),
        ("anonymous_id", "a1"),
        ("group_id", "g1"),
        ("name", "Pricing"),
    ],
)
def test_filters_on_top_level_columns(store: EventStore, name: str, value: str) -> None:
    put(
        store,
        [
            ev("m1", at=1, user="u1", anon="a1", groupId="g1", name="Pricing"),
            ev("m2", at=2, user="u2", anon="a2"),
        ],
    )
    rows = scan(store, Condition("view", (person_filter(name, "eq", value),)), with_person_ids=True)
    got = {rows.person_ids[int(p)]: int(m) for p, m in zip(rows.person, rows.mask, strict=True)}
    assert got == {"u1": 1, "u2": 0}


def test_filters_on_the_event_and_type_columns(store: EventStore) -> None:
    put(store, [ev("m1")])
    track_view = (person_filter("type", "eq", "track"), person_filter("event", "eq", "view"))
    page = (person_filter("type", "eq", "page"),)
    rows = scan(store, Condition("view", track_view), Condition("view", page))
    assert rows.mask.tolist() == [0b01]


def test_a_regex_the_store_cannot_compile_is_a_value_error(store: EventStore) -> None:
    put(store, [ev("m1", properties={"a": "x"})])
    with pytest.raises(ValueError):  # noqa: PT011 - the type is the contract, not the words
        scan(store, Condition("view", (person_filter("a", "regex", "(unclosed"),)))


def test_property_names_may_hold_quotes_and_spaces(store: EventStore) -> None:
    put(store, [ev("m1", properties={'say "hi"': "yes", "two words": 2})])
    both = (person_filter('say "hi"', "eq", "yes"), person_filter("two words", "gt", 1))
    assert scan(store, Condition("view", both)).mask.tolist() == [1]


# --- scan -----------------------------------------------------------------------------------


def test_scan_sorts_by_person_then_time(store: EventStore) -> None:
    rows = [ev(f"m{i}", "view", at=(i * 7919) % 101, user=f"u{i % 4}") for i in range(40)]
    put(store, rows)
    result = scan(store, "view")
    order = np.lexsort((result.ts, result.person))
    assert (order == np.arange(len(order))).all()
    assert len(result.ts) == 40


def test_scan_sets_one_mask_bit_per_matching_condition(store: EventStore) -> None:
    put(store, [ev("m1", "view", properties={"plan": "pro"}), ev("m2", "buy", at=1)])
    pro_view = Condition("view", (person_filter("plan", "eq", "pro"),))
    result = scan(store, "view", "buy", pro_view)
    assert mask_by_ts(result) == {
        T0: 0b101,
        T0 + 1: 0b010,
    }


def test_scan_time_range_includes_start_and_excludes_end(store: EventStore) -> None:
    put(store, [ev(f"m{i}", at=i * SECOND) for i in range(5)])
    result = scan(store, "view", start_us=T0 + SECOND, end_us=T0 + 3 * SECOND)
    assert sorted(result.ts.tolist()) == [T0 + SECOND, T0 + 2 * SECOND]


def test_scan_without_all_events_returns_only_condition_events(store: EventStore) -> None:
    put(store, [ev("m1", "view"), ev("m2", "noise", at=1), ev("m3", "buy", at=2)])
    assert sorted(scan(store, "view", "buy").ts.tolist()) == [T0, T0 + 2]


def test_scan_with_all_events_returns_other_events_with_mask_zero(store: EventStore) -> None:
    put(store, [ev("m1", "view"), ev("m2", "noise", at=1), ev("m3", "buy", at=2)])
    result = scan(store, "view", "buy", all_events=True)
    assert mask_by_ts(result) == {
        T0: 1,
        T0 + 1: 0,
        T0 + 2: 2,
    }


def test_scan_breakdown_gives_codes_into_labels_and_none_for_no_value(
    store: EventStore,
) -> None:
    put(
        store,
        [
            ev("m1", at=1, properties={"utm": "mail"}),
            ev("m2", at=2, properties={"utm": "ads"}),
            ev("m3", at=3, properties={"utm": "mail"}),
            ev("m4", at=4),
        ],
    )
    result = scan(store, "view", breakdown=PropertyPath.parse("utm"))
    assert result.breakdown is not None
    assert result.breakdown.dtype == np.int32
    assert dict(zip(result.ts.tolist(), breakdown_labels(result), strict=True)) == {
        T0 + 1: "mail",
        T0 + 2: "ads",
        T0 + 3: "mail",
        T0 + 4: None,
    }
    assert len(set(result.breakdown_labels)) == len(result.breakdown_labels) == 3


def test_scan_with_person_ids_maps_every_code_to_its_id(store: EventStore) -> None:
    put(store, [ev(f"m{i}", at=i, user=f"u{i % 3}") for i in range(9)])
    result = scan(store, "view", with_person_ids=True)
    assert set(result.person_ids) == set(result.person.tolist())
    assert sorted(result.person_ids.values()) == ["u0", "u1", "u2"]
    assert result.person.dtype == result.ts.dtype == result.mask.dtype == np.int64


def test_scan_never_returns_another_workspaces_events(store: EventStore) -> None:
    put(store, [ev("m1")], OTHER_WS)
    result = scan(store, "view", all_events=True)
    assert len(result.ts) == 0


@pytest.mark.parametrize("identity", ["retroactive", "forward"])
def test_an_empty_scan_has_empty_arrays(store: EventStore, identity: IdentityMode) -> None:
    result = scan(store, "view", identity=identity, breakdown=PropertyPath.parse("x"))
    assert len(result.person) == len(result.ts) == len(result.mask) == 0
    assert result.breakdown is not None
    assert len(result.breakdown) == 0


# --- recent ---------------------------------------------------------------------------------


def test_recent_is_newest_first_by_received_at_then_message_id(store: EventStore) -> None:
    put(store, [ev("m1", at=1), ev("m3", at=2), ev("m2", at=2), ev("m0", at=3)])
    assert ids_of(store.recent(WS, limit=10)) == ["m0", "m3", "m2", "m1"]
    assert ids_of(store.recent(WS, limit=2)) == ["m0", "m3"]


def test_recent_pages_with_the_before_cursor(store: EventStore) -> None:
    put(store, [ev(f"m{i:02d}", at=i // 3) for i in range(20)])
    seen: list[str] = []
    before: tuple[int, str] | None = None
    while page := store.recent(WS, limit=6, before=before):
        seen.extend(ids_of(page))
        last = page[-1]
        before = (last[ROW_FIELDS.index("received_at")], last[ROW_FIELDS.index("message_id")])
    assert seen == ids_of(store.recent(WS, limit=100))
    assert sorted(seen) == [f"m{i:02d}" for i in range(20)]


def test_recent_filters_by_event(store: EventStore) -> None:
    put(store, [ev("m1", "view"), ev("m2", "buy", at=1), ev("m3", "view", at=2)])
    assert ids_of(store.recent(WS, limit=10, event="view")) == ["m3", "m1"]


@pytest.mark.parametrize("who", ["a1", "u1", "u9"])
def test_recent_by_person_includes_every_id_of_the_person(store: EventStore, who: str) -> None:
    put(
        store,
        [
            ev("m1", at=1, anon="a1"),
            identify("m2", at=2, user="u1", anon="a1"),
            ev("m3", at=3, user="u1"),
            alias("m4", at=4, user="u9", previous="u1"),
            ev("m5", at=5, user="u9"),
            ev("x1", at=6, user="someone-else"),
        ],
    )
    assert ids_of(store.recent(WS, limit=10, person=who)) == ["m5", "m4", "m3", "m2", "m1"]


def test_recent_rows_are_event_rows(store: EventStore) -> None:
    row = ev("m1", user="u1", properties={"a": 1}, context={"ip": "1.2.3.4"})
    put(store, [row])
    (stored,) = store.recent(WS, limit=1)
    assert row_to_message(stored) == row_to_message(row)


# --- export ---------------------------------------------------------------------------------


def _export_rows() -> list[EventRow]:
    return [
        ev("m1", "view", at=3, anon="a1", properties={"plan": "pro", "n": 2}),
        identify("m2", at=1, user="u1", anon="a1", email="x@example.com"),
        ev("m3", "buy", at=2, user="u1", context={"ip": "10.0.0.1"}),
    ]


def test_export_jsonl_writes_segment_messages(store: EventStore, tmp_path: Path) -> None:
    rows = _export_rows()
    put(store, rows)
    put(store, [ev("other")], OTHER_WS)
    target = tmp_path / "events.jsonl"
    assert store.export(WS, target, fmt="jsonl") == 3
    lines = [orjson.loads(line) for line in target.read_bytes().splitlines()]
    by_time = sorted(rows, key=lambda r: r[ROW_FIELDS.index("timestamp")])
    assert lines == [row_to_message(r) for r in by_time]


def test_export_parquet_round_trips(store: EventStore, tmp_path: Path) -> None:
    put(store, _export_rows())
    target = tmp_path / "events.parquet"
    assert store.export(WS, target, fmt="parquet") == 3
    table = pq.read_table(target)
    assert table.num_rows == 3
    assert set(ROW_FIELDS) <= set(table.column_names)
    records = {r["message_id"]: r for r in table.to_pylist()}
    assert set(records) == {"m1", "m2", "m3"}
    assert records["m1"]["event"] == "view"
    assert records["m3"]["user_id"] == "u1"
    assert orjson.loads(records["m1"]["properties"]) == {"plan": "pro", "n": 2}
    times = table.column("timestamp").cast(pa.int64()).to_pylist()
    assert dict(zip(table.column("message_id").to_pylist(), times, strict=True)) == {
        "m1": T0 + 3,
        "m2": T0 + 1,
        "m3": T0 + 2,
    }


def test_export_of_an_empty_workspace_writes_nothing(store: EventStore, tmp_path: Path) -> None:
    assert store.export(WS, tmp_path / "empty.jsonl", fmt="jsonl") == 0
    assert store.export(WS, tmp_path / "empty.parquet", fmt="parquet") == 0
