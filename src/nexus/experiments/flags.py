"""Feature flags: the flag document, its validation, and evaluation in process.

This is the pure core shared by the API (which validates and stores flag documents), ``decide``
(which evaluates them server-side) and the Python SDK (which evaluates them in the caller's
process). Documents in, frozen dataclasses out; no I/O. The wire form, hashing and reasons are
specified in ``docs/decisions.md``.

Evaluation order for one flag
-----------------------------
1. ``enabled`` is false (the kill switch): serve ``off_variation``, reason ``DISABLED``. The
   kill switch wins over everything, including a broken prerequisite graph.
2. The flag sits on a prerequisite cycle (possible only in a :class:`FlagSet` built from flags
   that :func:`check_prerequisites` would refuse): reason ``ERROR``, error ``GENERAL``.
3. Each prerequisite is evaluated with the same context; it holds when that flag's served
   variation is one of the listed ones (a disabled prerequisite serves its off variation, an
   erroring or missing one serves none). The first that fails serves ``off_variation`` with
   reason ``PREREQUISITE_FAILED``.
4. Rules in order; a rule matches when all its clauses hold (no clauses: always). A fixed
   variation gives ``TARGETING_MATCH``, a rollout ``SPLIT``; ``rule_id`` names the rule.
5. The fallthrough: a fixed variation gives ``STATIC`` when the flag has neither rules nor
   prerequisites (nothing was evaluated), else ``DEFAULT``; a rollout gives ``SPLIT``.

Errors follow OpenFeature: an erroring :class:`Evaluation` has reason ``ERROR``, an
``error_code``, no variation and ``value`` ``None``; the caller's default applies (the SDK's
typed helpers and OpenFeature provider return it). That covers an unknown flag
(``FLAG_NOT_FOUND``) and a rollout reached without a targeting key
(``TARGETING_KEY_MISSING``): with no unit to hash there is no sticky answer, and serving the off
variation instead would silently skew the split's exposure counts. A rule or fallthrough with a
fixed variation needs no targeting key.

Clause semantics
----------------
``attribute`` is a dotted path into the context attributes; ``key`` is the targeting key. An
attribute is *missing* when a step of the path is absent, is not a mapping, or the value is
``None`` (JSON null); an empty targeting key is missing too. A clause on a missing attribute is
false for every op except ``not_exists`` -- negative ops included: ``country neq "DE"`` means
"a country is known and it is not DE", so that targeting never captures visitors it knows
nothing about by accident. Target unknowns explicitly with ``not_exists``.

Types are never coerced. Numbers (``int``/``float``, never ``bool``) compare numerically
(``1 == 1.0``); strings compare case-sensitively, ``gt``/``gte``/``lt``/``lte`` on a string
clause value compare strings in code-point order (ISO dates sort correctly); an attribute of
another type than the clause value fails the op (and satisfies ``neq``/``not_in``/
``not_contains``, as it is present and not equal). ``in``/``not_in`` take a list of scalars.
``contains`` is substring containment on a string attribute, or element membership on a list
attribute. ``regex`` is ``re.search`` (anchor with ``^``/``$`` as needed). ``semver_*`` parse
``MAJOR[.MINOR[.PATCH]][-prerelease][+build]`` with semver 2.0 precedence (build metadata
ignored); an attribute that is not a version fails the op.

Speed
-----
Each :class:`Flag` is compiled once when a :class:`FlagSet` is built: clauses become closures
with their regexes compiled, their attribute paths split and their sets built; rollouts become
cumulative boundaries; every outcome a flag can produce without an error is a prebuilt, shared
:class:`Evaluation`. Evaluating is then a dict lookup, a few closure calls and, for a rollout,
one 8-byte blake2b.
"""

from __future__ import annotations

import hashlib
import math
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any, Final, Literal, TypeAlias, get_args

__all__ = [
    "KINDS",
    "OPS",
    "Clause",
    "ErrorCode",
    "Evaluation",
    "EvaluationContext",
    "Flag",
    "FlagDefinitionError",
    "FlagKind",
    "FlagSet",
    "Prerequisite",
    "Reason",
    "Rule",
    "Serve",
    "Split",
    "Variation",
    "bucket",
    "check_prerequisites",
    "flag_document",
    "parse_flag",
]

FlagKind: TypeAlias = Literal["boolean", "multivariate", "json"]
KINDS: Final[tuple[str, ...]] = get_args(FlagKind)

OPS: Final = (
    "eq",
    "neq",
    "in",
    "not_in",
    "contains",
    "not_contains",
    "starts_with",
    "ends_with",
    "regex",
    "gt",
    "gte",
    "lt",
    "lte",
    "exists",
    "not_exists",
    "semver_eq",
    "semver_gt",
    "semver_lt",
)

FLAG_KEY_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")
TARGETING_KEY_ATTRIBUTE: Final = "key"
_WEIGHT_TOLERANCE: Final = 1e-6
_TWO_TO_64: Final = float(2**64)
_NUMBER_TYPES: Final = (int, float)  # a tuple: cheaper than `int | float` built in a hot path


class Reason(StrEnum):
    """Why an evaluation served what it served (OpenFeature's reasons, plus one)."""

    STATIC = "STATIC"
    TARGETING_MATCH = "TARGETING_MATCH"
    SPLIT = "SPLIT"
    DEFAULT = "DEFAULT"
    DISABLED = "DISABLED"
    PREREQUISITE_FAILED = "PREREQUISITE_FAILED"
    ERROR = "ERROR"


class ErrorCode(StrEnum):
    """What went wrong in an erroring evaluation (spelled as OpenFeature's error codes)."""

    FLAG_NOT_FOUND = "FLAG_NOT_FOUND"
    TYPE_MISMATCH = "TYPE_MISMATCH"
    PARSE_ERROR = "PARSE_ERROR"
    TARGETING_KEY_MISSING = "TARGETING_KEY_MISSING"
    GENERAL = "GENERAL"


class FlagDefinitionError(ValueError):
    """A flag document or :class:`Flag` that cannot be served, and which field is wrong.

    ``field`` is the path of the offending field inside the document (``rules[1].serve``), so
    the API can point at it; the message starts with the flag key and that path.
    """

    def __init__(self, problem: str, *, field: str | None = None, flag_key: str | None = None):
        self.problem = problem
        self.field = field
        self.flag_key = flag_key
        where = ", ".join(
            part for part in (f"flag {flag_key!r}" if flag_key else None, field) if part is not None
        )
        super().__init__(f"{where}: {problem}" if where else problem)


# --- the flag, as data --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Variation:
    """One value a flag can serve, under a stable key that rules and reports refer to."""

    key: str
    value: Any


@dataclass(frozen=True, slots=True)
class Clause:
    """One condition on one attribute; see the module docstring for each op's semantics.

    ``value`` is ``None`` for ``exists``/``not_exists`` and a tuple of scalars for
    ``in``/``not_in``.
    """

    attribute: str
    op: str
    value: Any = None


@dataclass(frozen=True, slots=True)
class Split:
    """A variation's share of a rollout, in percent."""

    variation: str
    weight: float


@dataclass(frozen=True, slots=True)
class Serve:
    """What a matching rule (or the fallthrough) serves: one variation, or a rollout.

    A rollout's variations take consecutive ranges of the bucket in the listed order, so
    raising one variation's weight at the expense of a later one only adds visitors to it.
    """

    variation: str | None = None
    rollout: tuple[Split, ...] | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """Clauses (all must hold) and what to serve when they do."""

    id: str
    clauses: tuple[Clause, ...]
    serve: Serve


@dataclass(frozen=True, slots=True)
class Prerequisite:
    """Another flag that must serve one of ``variations`` for this flag to be evaluated."""

    flag: str
    variations: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Flag:
    """A validated flag: constructing one that could not be served raises
    :class:`FlagDefinitionError`, so every ``Flag`` that exists can be evaluated.

    An empty ``salt`` becomes the key, so the stored salt is always the one hashed with.
    Cross-flag consistency (prerequisites that exist, no cycles) is
    :func:`check_prerequisites`'s job: one flag cannot see the others.
    """

    key: str
    kind: FlagKind
    variations: tuple[Variation, ...]
    off_variation: str
    fallthrough: Serve
    enabled: bool = True
    prerequisites: tuple[Prerequisite, ...] = ()
    rules: tuple[Rule, ...] = ()
    salt: str = ""
    version: int = 1

    def __post_init__(self) -> None:
        if not self.salt:
            object.__setattr__(self, "salt", self.key)
        _compile(self)  # validates; a FlagSet compiles again for its own use

    def variation(self, key: str) -> Variation | None:
        """The variation called ``key``, if the flag has one."""
        return next((v for v in self.variations if v.key == key), None)


@dataclass(frozen=True, slots=True)
class EvaluationContext:
    """Who is asking: the targeting key (the unit rollouts hash) and attributes to target on."""

    targeting_key: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The outcome of evaluating one flag for one context.

    Outcomes without an error are shared between calls: treat ``value`` as read-only.
    ``version`` is the flag's version (0 when the flag was not found).
    """

    flag_key: str
    variation: str | None
    value: Any
    reason: str
    rule_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    version: int = 0


def bucket(salt: str, unit: str) -> float:
    """Where ``unit`` falls in ``[0, 1]`` for a flag with this ``salt``: stable across
    processes, machines and NEXUS versions, which is what makes assignments sticky.

    ``1.0`` itself is possible (a 64-bit integer rounds up to it); rollouts give it to their
    last variation.
    """
    digest = hashlib.blake2b(f"{salt}/{unit}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _TWO_TO_64


# --- compiled form --------------------------------------------------------------------------

_Test: TypeAlias = Callable[[Mapping[str, Any], "str | None"], bool]
_Predicate: TypeAlias = Callable[[Any], bool]
_Resolver: TypeAlias = Callable[[Mapping[str, Any], "str | None"], Any]


@dataclass(frozen=True, slots=True)
class _CompiledServe:
    """A fixed outcome, or rollout boundaries (all but the last) and one outcome per range."""

    fixed: Evaluation | None
    boundaries: tuple[float, ...]
    outcomes: tuple[Evaluation, ...]


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    tests: tuple[_Test, ...]
    serve: _CompiledServe


@dataclass(frozen=True, slots=True)
class _CompiledFlag:
    flag: Flag
    enabled: bool
    disabled: Evaluation
    prerequisite_failed: Evaluation
    key_missing: Evaluation
    prerequisites: tuple[tuple[str, frozenset[str]], ...]
    rules: tuple[_CompiledRule, ...]
    fallthrough: _CompiledServe
    hasher: hashlib.blake2b  # fed "{salt}/" already: a copy is cheaper than a new one


def _compile(flag: Flag) -> _CompiledFlag:
    """Validate ``flag`` and turn it into the form :class:`FlagSet` evaluates."""
    key = flag.key

    def fail(problem: str, where: str) -> FlagDefinitionError:
        return FlagDefinitionError(problem, field=where, flag_key=key)

    if not isinstance(key, str) or not FLAG_KEY_PATTERN.fullmatch(key):
        raise fail(f"must match {FLAG_KEY_PATTERN.pattern}, got {key!r}", "key")
    if flag.kind not in KINDS:
        raise fail(f"must be one of {', '.join(KINDS)}, got {flag.kind!r}", "kind")
    if not isinstance(flag.enabled, bool):
        raise fail(f"must be true or false, got {flag.enabled!r}", "enabled")
    if not isinstance(flag.version, int) or isinstance(flag.version, bool) or flag.version < 0:
        raise fail(f"must be a non-negative integer, got {flag.version!r}", "version")
    if not isinstance(flag.salt, str):
        raise fail(f"must be a string, got {flag.salt!r}", "salt")
    values = _check_variations(flag, fail)

    def outcome(variation: str, reason: str, rule_id: str | None = None) -> Evaluation:
        return Evaluation(key, variation, values[variation], reason, rule_id, version=flag.version)

    def serve(spec: Serve, where: str, fixed_reason: str, rule_id: str | None) -> _CompiledServe:
        return _compile_serve(
            spec, where, values, fail, lambda v, r: outcome(v, r, rule_id), fixed_reason
        )

    if flag.off_variation not in values:
        raise fail(f"unknown variation {flag.off_variation!r}", "off_variation")
    prerequisites = _compile_prerequisites(flag, fail)
    rules: list[_CompiledRule] = []
    rule_ids: set[str] = set()
    for i, rule in enumerate(flag.rules):
        where = f"rules[{i}]"
        if not isinstance(rule.id, str) or not rule.id:
            raise fail("must be a non-empty string", f"{where}.id")
        if rule.id in rule_ids:
            raise fail(f"duplicate rule id {rule.id!r}", f"{where}.id")
        rule_ids.add(rule.id)
        tests = tuple(
            _compile_clause(clause, f"{where}.clauses[{j}]", fail)
            for j, clause in enumerate(rule.clauses)
        )
        rules.append(
            _CompiledRule(
                tests, serve(rule.serve, f"{where}.serve", Reason.TARGETING_MATCH, rule.id)
            )
        )
    evaluated = bool(flag.rules or flag.prerequisites)
    fallthrough = serve(
        flag.fallthrough, "fallthrough", Reason.DEFAULT if evaluated else Reason.STATIC, None
    )
    return _CompiledFlag(
        flag=flag,
        enabled=flag.enabled,
        disabled=outcome(flag.off_variation, Reason.DISABLED),
        prerequisite_failed=outcome(flag.off_variation, Reason.PREREQUISITE_FAILED),
        key_missing=_error(
            key,
            ErrorCode.TARGETING_KEY_MISSING,
            "a percentage rollout needs a targeting key to hash",
            flag.version,
        ),
        prerequisites=prerequisites,
        rules=tuple(rules),
        fallthrough=fallthrough,
        hasher=hashlib.blake2b(f"{flag.salt}/".encode(), digest_size=8),
    )


_Fail: TypeAlias = Callable[[str, str], FlagDefinitionError]


def _check_variations(flag: Flag, fail: _Fail) -> dict[str, Any]:
    """Variation values by key, after checking keys are unique and values fit the kind."""
    values: dict[str, Any] = {}
    for i, variation in enumerate(flag.variations):
        if not isinstance(variation.key, str) or not variation.key:
            raise fail("must be a non-empty string", f"variations[{i}].key")
        if variation.key in values:
            raise fail(f"duplicate variation key {variation.key!r}", f"variations[{i}].key")
        values[variation.key] = variation.value
    kinds_problem = _kind_problem(flag.kind, list(values.values()))
    if kinds_problem is not None:
        raise fail(kinds_problem, "variations")
    return values


def _kind_problem(kind: str, values: list[Any]) -> str | None:
    """Why variation ``values`` do not fit a flag of ``kind`` (None if they do)."""
    if kind == "boolean":
        if len(values) == 2 and {type(v) for v in values} == {bool} and values[0] != values[1]:
            return None
        return f"a boolean flag has exactly two variations, true and false; got {values!r}"
    if not values:
        return "a flag needs at least one variation"
    if kind == "multivariate":
        if all(isinstance(v, str) for v in values) or all(_is_finite_number(v) for v in values):
            return None
        return f"a multivariate flag's values are all strings or all finite numbers; got {values!r}"
    problems = ((i, _json_problem(v)) for i, v in enumerate(values))
    return next((f"variation {i} is not JSON: {p}" for i, p in problems if p is not None), None)


def _json_problem(value: Any) -> str | None:
    """Why ``value`` is not a JSON value (None if it is one)."""
    problem: str | None = None
    if isinstance(value, float):
        problem = None if math.isfinite(value) else f"{value!r} is not a finite number"
    elif isinstance(value, list | tuple):
        problem = next((p for p in map(_json_problem, value) if p is not None), None)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            problem = f"object key {k!r} is not a string" if not isinstance(k, str) else None
            problem = problem or _json_problem(v)
            if problem is not None:
                break
    elif not (value is None or isinstance(value, str | bool | int)):
        problem = f"{type(value).__name__} {value!r}"
    return problem


def _compile_prerequisites(flag: Flag, fail: _Fail) -> tuple[tuple[str, frozenset[str]], ...]:
    compiled: list[tuple[str, frozenset[str]]] = []
    for i, prerequisite in enumerate(flag.prerequisites):
        where = f"prerequisites[{i}]"
        other = prerequisite.flag
        if not isinstance(other, str) or not FLAG_KEY_PATTERN.fullmatch(other):
            raise fail(f"must be a flag key, got {other!r}", f"{where}.flag")
        if other == flag.key:
            raise fail("a flag cannot be its own prerequisite", f"{where}.flag")
        if any(other == seen for seen, _ in compiled):
            raise fail(f"flag {other!r} is listed twice", f"{where}.flag")
        variations = prerequisite.variations
        if (
            isinstance(variations, str)
            or not variations
            or not all(isinstance(v, str) and v for v in variations)
        ):
            raise fail("must be a non-empty list of variation keys", f"{where}.variations")
        compiled.append((other, frozenset(variations)))
    return tuple(compiled)


def _compile_serve(
    spec: Serve,
    where: str,
    values: Mapping[str, Any],
    fail: _Fail,
    outcome: Callable[[str, str], Evaluation],
    fixed_reason: str,
) -> _CompiledServe:
    if (spec.variation is None) == (spec.rollout is None):
        raise fail("serve exactly one of a variation or a rollout", where)
    if spec.variation is not None:
        if spec.variation not in values:
            raise fail(f"unknown variation {spec.variation!r}", f"{where}.variation")
        return _CompiledServe(outcome(spec.variation, fixed_reason), (), ())
    assert spec.rollout is not None
    if isinstance(spec.rollout, str | Mapping) or not spec.rollout:
        raise fail("a rollout is a non-empty list of variations and weights", f"{where}.rollout")
    total = 0.0
    boundaries: list[float] = []
    outcomes: list[Evaluation] = []
    for i, split in enumerate(spec.rollout):
        at = f"{where}.rollout[{i}]"
        if split.variation not in values:
            raise fail(f"unknown variation {split.variation!r}", f"{at}.variation")
        if any(o.variation == split.variation for o in outcomes):
            raise fail(f"variation {split.variation!r} is listed twice", f"{at}.variation")
        if not _is_finite_number(split.weight) or not 0 <= split.weight <= 100:
            raise fail(f"must be a number from 0 to 100, got {split.weight!r}", f"{at}.weight")
        total += split.weight
        boundaries.append(total / 100)
        outcomes.append(outcome(split.variation, Reason.SPLIT))
    if abs(total - 100) > _WEIGHT_TOLERANCE:
        raise fail(f"weights must sum to 100, got {total:g}", f"{where}.rollout")
    # The last range ends at 1.0 whatever the float sum says: every bucket lands somewhere.
    return _CompiledServe(None, tuple(boundaries[:-1]), tuple(outcomes))


# --- clauses --------------------------------------------------------------------------------


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | bool) or _is_finite_number(value)


def _compile_clause(clause: Clause, where: str, fail: _Fail) -> _Test:
    attribute = clause.attribute
    if not isinstance(attribute, str) or not all(attribute.split(".")):
        raise fail(
            f"must be a dotted attribute path like emotion.valence, got {attribute!r}",
            f"{where}.attribute",
        )
    if clause.op not in _PREDICATES:
        raise fail(f"unknown op {clause.op!r}; expected one of {', '.join(OPS)}", f"{where}.op")
    try:
        predicate = _PREDICATES[clause.op](clause.value)
    except _ClauseValueError as error:
        raise fail(str(error), f"{where}.value") from None
    resolve = _resolver(attribute)
    if clause.op == "not_exists":
        return lambda attributes, targeting_key: resolve(attributes, targeting_key) is None

    def test(attributes: Mapping[str, Any], targeting_key: str | None) -> bool:
        value = resolve(attributes, targeting_key)
        return value is not None and predicate(value)

    return test


def _resolver(attribute: str) -> _Resolver:
    """A function fetching the attribute at a dotted path, ``None`` when missing."""
    if attribute == TARGETING_KEY_ATTRIBUTE:
        return lambda attributes, targeting_key: targeting_key or None
    path = tuple(attribute.split("."))
    if len(path) == 1:
        name = path[0]
        return lambda attributes, targeting_key: attributes.get(name)
    if len(path) == 2:  # emotion.valence: the common nested case, without a loop
        outer, inner = path

        def resolve_pair(attributes: Mapping[str, Any], targeting_key: str | None) -> Any:
            parent = attributes.get(outer)
            if parent.__class__ is dict or (parent is not None and isinstance(parent, Mapping)):
                return parent.get(inner)
            return None

        return resolve_pair

    def resolve_path(attributes: Mapping[str, Any], targeting_key: str | None) -> Any:
        value: Any = attributes
        for part in path:
            if value.__class__ is not dict and (value is None or not isinstance(value, Mapping)):
                return None
            value = value.get(part)
        return value

    return resolve_path


class _ClauseValueError(ValueError):
    """A clause value that does not fit its op (reported with the clause's path)."""


def _scalar_value(value: Any) -> Any:
    if not _is_scalar(value):
        raise _ClauseValueError(f"must be a string, a finite number or a boolean, got {value!r}")
    return value


def _string_value(value: Any) -> str:
    if not isinstance(value, str):
        raise _ClauseValueError(f"must be a string, got {value!r}")
    return value


def _equals(expected: Any) -> _Predicate:
    """Equality without coercion: numbers by value, never a bool for a number or vice versa."""
    if isinstance(expected, bool):
        return lambda value: value is expected
    if isinstance(expected, str):
        return lambda value: isinstance(value, str) and value == expected
    return lambda value: (
        isinstance(value, _NUMBER_TYPES) and value.__class__ is not bool and value == expected
    )


def _eq(value: Any) -> _Predicate:
    return _equals(_scalar_value(value))


def _neq(value: Any) -> _Predicate:
    equal = _equals(_scalar_value(value))
    return lambda candidate: not equal(candidate)


def _membership(values: Any) -> _Predicate:
    if isinstance(values, str | Mapping) or not isinstance(values, Sequence):
        raise _ClauseValueError(f"must be a list of scalars, got {values!r}")
    for value in values:
        _scalar_value(value)
    strings = frozenset(v for v in values if isinstance(v, str))
    booleans = frozenset(v for v in values if isinstance(v, bool))
    numbers = frozenset(v for v in values if _is_finite_number(v))

    def member(value: Any) -> bool:
        if isinstance(value, str):
            return value in strings
        if isinstance(value, bool):
            return value in booleans
        return isinstance(value, _NUMBER_TYPES) and value in numbers

    return member


def _not_in(values: Any) -> _Predicate:
    member = _membership(values)
    return lambda value: not member(value)


def _contains(value: Any) -> _Predicate:
    needle = _scalar_value(value)
    equal = _equals(needle)
    is_text = isinstance(needle, str)

    def contains(haystack: Any) -> bool:
        if isinstance(haystack, str):
            return is_text and needle in haystack
        if isinstance(haystack, list | tuple):
            return any(equal(item) for item in haystack)
        return False

    return contains


def _not_contains(value: Any) -> _Predicate:
    contains = _contains(value)
    return lambda haystack: not contains(haystack)


def _starts_with(value: Any) -> _Predicate:
    prefix = _string_value(value)
    return lambda candidate: isinstance(candidate, str) and candidate.startswith(prefix)


def _ends_with(value: Any) -> _Predicate:
    suffix = _string_value(value)
    return lambda candidate: isinstance(candidate, str) and candidate.endswith(suffix)


def _regex(value: Any) -> _Predicate:
    try:
        pattern = re.compile(_string_value(value))
    except re.error as error:
        raise _ClauseValueError(f"is not a valid regular expression: {error}") from None
    search = pattern.search
    return lambda candidate: isinstance(candidate, str) and search(candidate) is not None


def _ordering(compare: Callable[[Any, Any], bool]) -> Callable[[Any], _Predicate]:
    def build(value: Any) -> _Predicate:
        if isinstance(value, str):
            return lambda candidate: isinstance(candidate, str) and compare(candidate, value)
        if not _is_finite_number(value):
            raise _ClauseValueError(f"must be a finite number or a string, got {value!r}")
        return lambda candidate: (
            isinstance(candidate, _NUMBER_TYPES)
            and candidate.__class__ is not bool
            and compare(candidate, value)
        )

    return build


def _exists(value: Any) -> _Predicate:
    if value is not None:
        raise _ClauseValueError(f"takes no value, got {value!r}")
    return lambda candidate: True


_SEMVER: Final = re.compile(
    r"(0|[1-9]\d*)(?:\.(0|[1-9]\d*))?(?:\.(0|[1-9]\d*))?"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)
_SemverKey: TypeAlias = tuple[int, int, int, tuple[Any, ...]]


@lru_cache(maxsize=4096)
def _semver_key(text: str) -> _SemverKey | None:
    """A tuple ordering versions by semver 2.0 precedence, or None for a non-version.

    A release sorts after its prereleases (``(1,)`` > ``(0, ...)``); prerelease identifiers
    compare numerically when numeric, which sort before alphanumeric ones.
    """
    match = _SEMVER.fullmatch(text)
    if match is None:
        return None
    major, minor, patch, prerelease = match.groups()
    if prerelease is None:
        order: tuple[Any, ...] = (1,)
    else:
        order = (
            0,
            *((0, int(p), "") if p.isdigit() else (1, 0, p) for p in prerelease.split(".")),
        )
    return int(major), int(minor or 0), int(patch or 0), order


def _semver(compare: Callable[[Any, Any], bool]) -> Callable[[Any], _Predicate]:
    def build(value: Any) -> _Predicate:
        bound = _semver_key(_string_value(value))
        if bound is None:
            raise _ClauseValueError(f"is not a version like 1.4.2, got {value!r}")

        def predicate(candidate: Any) -> bool:
            if not isinstance(candidate, str):
                return False
            key = _semver_key(candidate)
            return key is not None and compare(key, bound)

        return predicate

    return build


# One builder per op: takes the clause value, checks it, returns the predicate on a present
# attribute value. Missing attributes never reach a predicate (see _compile_clause).
_PREDICATES: Final[dict[str, Callable[[Any], _Predicate]]] = {
    "eq": _eq,
    "neq": _neq,
    "in": _membership,
    "not_in": _not_in,
    "contains": _contains,
    "not_contains": _not_contains,
    "starts_with": _starts_with,
    "ends_with": _ends_with,
    "regex": _regex,
    "gt": _ordering(operator.gt),
    "gte": _ordering(operator.ge),
    "lt": _ordering(operator.lt),
    "lte": _ordering(operator.le),
    "exists": _exists,
    "not_exists": _exists,
    "semver_eq": _semver(operator.eq),
    "semver_gt": _semver(operator.gt),
    "semver_lt": _semver(operator.lt),
}
assert tuple(_PREDICATES) == OPS


# --- evaluation -----------------------------------------------------------------------------


def _error(flag_key: str, code: str, message: str, version: int = 0) -> Evaluation:
    return Evaluation(flag_key, None, None, Reason.ERROR, None, code, message, version)


def _serve(serve: _CompiledServe, flag: _CompiledFlag, targeting_key: str | None) -> Evaluation:
    fixed = serve.fixed
    if fixed is not None:
        return fixed
    if not targeting_key:
        return flag.key_missing
    hasher = flag.hasher.copy()  # the same digest as bucket(salt, targeting_key)
    hasher.update(targeting_key.encode())
    point = int.from_bytes(hasher.digest(), "big") / _TWO_TO_64
    outcomes = serve.outcomes
    for i, boundary in enumerate(serve.boundaries):
        if point < boundary:
            return outcomes[i]
    return outcomes[-1]


class FlagSet:
    """The flags of one workspace, compiled once and evaluated many times.

    A ``FlagSet`` never refuses flags over their prerequisites: prerequisites on flags it does
    not hold simply fail, and flags on a prerequisite cycle evaluate to an error. That lets an
    SDK keep serving whatever it received; refusing bad graphs at save time is
    :func:`check_prerequisites`'s job. Immutable, so one instance can serve many threads.
    """

    __slots__ = ("_compiled", "_on_cycle")

    def __init__(self, flags: Iterable[Flag] = ()) -> None:
        compiled: dict[str, _CompiledFlag] = {}
        for flag in flags:
            if flag.key in compiled:
                raise FlagDefinitionError("duplicate flag key", flag_key=flag.key)
            compiled[flag.key] = _compile(flag)
        self._compiled = compiled
        graph = {key: [p.flag for p in c.flag.prerequisites] for key, c in compiled.items()}
        on_cycle: dict[str, Evaluation] = {}
        for key, entry in compiled.items():
            cycle = _cycle_through(key, graph)
            if cycle is not None:
                on_cycle[key] = _error(
                    key,
                    ErrorCode.GENERAL,
                    f"prerequisites form a cycle: {' -> '.join(cycle)}",
                    entry.flag.version,
                )
        self._on_cycle = on_cycle

    def __len__(self) -> int:
        return len(self._compiled)

    def __contains__(self, key: object) -> bool:
        return key in self._compiled

    def __iter__(self) -> Iterator[Flag]:
        return (c.flag for c in self._compiled.values())

    def get(self, key: str) -> Flag | None:
        compiled = self._compiled.get(key)
        return None if compiled is None else compiled.flag

    def evaluate(self, key: str, context: EvaluationContext) -> Evaluation:
        """Evaluate flag ``key`` for ``context``; an unknown key gives ``FLAG_NOT_FOUND``."""
        compiled = self._compiled.get(key)
        if compiled is None:
            return _error(key, ErrorCode.FLAG_NOT_FOUND, f"no flag {key!r}")
        return self._evaluate(compiled, context, None)

    def evaluate_all(self, context: EvaluationContext) -> dict[str, Evaluation]:
        """Every flag for ``context``; each prerequisite is evaluated once, not once per use."""
        results: dict[str, Evaluation] = {}
        for key, compiled in self._compiled.items():
            if key not in results:
                results[key] = self._evaluate(compiled, context, results)
        return results

    def _evaluate(
        self,
        flag: _CompiledFlag,
        context: EvaluationContext,
        memo: dict[str, Evaluation] | None,
    ) -> Evaluation:
        if not flag.enabled:
            return flag.disabled
        if flag.prerequisites:
            blocked = self._prerequisites_block(flag, context, memo)
            if blocked is not None:
                return blocked
        attributes = context.attributes
        targeting_key = context.targeting_key
        for rule in flag.rules:
            for test in rule.tests:
                if not test(attributes, targeting_key):
                    break
            else:
                return _serve(rule.serve, flag, targeting_key)
        return _serve(flag.fallthrough, flag, targeting_key)

    def _prerequisites_block(
        self,
        flag: _CompiledFlag,
        context: EvaluationContext,
        memo: dict[str, Evaluation] | None,
    ) -> Evaluation | None:
        """The evaluation to serve instead when the prerequisites do not hold, else None.

        Terminates on any graph: a flag on a cycle returns its error here without recursing,
        so every recursion follows an acyclic path.
        """
        cycle_error = self._on_cycle.get(flag.flag.key)
        if cycle_error is not None:
            return cycle_error
        for required_key, variations in flag.prerequisites:
            required = self._compiled.get(required_key)
            if required is None:
                return flag.prerequisite_failed
            result = None if memo is None else memo.get(required_key)
            if result is None:
                result = self._evaluate(required, context, memo)
                if memo is not None:
                    memo[required_key] = result
            if result.variation not in variations:
                return flag.prerequisite_failed
        return None


def _cycle_through(start: str, graph: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A prerequisite path from ``start`` back to itself (``[a, b, a]``), or None."""
    parents: dict[str, str] = {}
    stack = [start]
    seen = {start}
    while stack:
        node = stack.pop()
        for successor in graph.get(node, ()):
            if successor == start:
                path = [node]
                while path[-1] != start:
                    path.append(parents[path[-1]])
                return [*reversed(path), start]
            if successor not in seen and successor in graph:
                seen.add(successor)
                parents[successor] = node
                stack.append(successor)
    return None


def check_prerequisites(flags: Iterable[Flag]) -> None:
    """Refuse a set of flags whose prerequisites could not be served as written.

    Raises :class:`FlagDefinitionError` for a duplicate key, a prerequisite on a flag not in
    the set, a prerequisite variation that flag does not have, or a cycle. The API runs this
    over a workspace's flags, with the one being saved, before saving.
    """
    by_key: dict[str, Flag] = {}
    for flag in flags:
        if flag.key in by_key:
            raise FlagDefinitionError("duplicate flag key", field="key", flag_key=flag.key)
        by_key[flag.key] = flag
    for flag in by_key.values():
        for i, prerequisite in enumerate(flag.prerequisites):
            required = by_key.get(prerequisite.flag)
            if required is None:
                raise FlagDefinitionError(
                    f"no flag {prerequisite.flag!r}",
                    field=f"prerequisites[{i}].flag",
                    flag_key=flag.key,
                )
            known = {v.key for v in required.variations}
            unknown = [v for v in prerequisite.variations if v not in known]
            if unknown:
                raise FlagDefinitionError(
                    f"flag {prerequisite.flag!r} has no variation {unknown[0]!r}",
                    field=f"prerequisites[{i}].variations",
                    flag_key=flag.key,
                )
    graph = {key: [p.flag for p in flag.prerequisites] for key, flag in by_key.items()}
    for key in by_key:
        cycle = _cycle_through(key, graph)
        if cycle is not None:
            raise FlagDefinitionError(
                f"prerequisites form a cycle: {' -> '.join(cycle)}",
                field="prerequisites",
                flag_key=key,
            )


# --- the wire form --------------------------------------------------------------------------


class _DocumentReader:
    """Reads one flag document into dataclasses, naming the field of every shape error.

    Shape only (objects, lists, strings where the document needs them); what the values mean
    is checked when the :class:`Flag` is built.
    """

    def __init__(self, flag_key: str | None, *, allow_unknown_fields: bool) -> None:
        self.flag_key = flag_key
        self.allow_unknown_fields = allow_unknown_fields

    def fail(self, problem: str, where: str) -> FlagDefinitionError:
        return FlagDefinitionError(problem, field=where or None, flag_key=self.flag_key)

    def obj(
        self, value: Any, where: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
    ) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(f"must be an object, got {value!r}", where)
        prefix = f"{where}." if where else ""
        missing = [name for name in required if name not in value]
        if missing:
            raise self.fail("is required", prefix + missing[0])
        if not self.allow_unknown_fields:
            unknown = sorted(str(k) for k in value if k not in required and k not in optional)
            if unknown:
                raise self.fail(
                    f"unknown field; expected {', '.join((*required, *optional))}",
                    prefix + unknown[0],
                )
        return value

    def array(self, value: Any, where: str) -> Sequence[Any]:
        if not isinstance(value, list | tuple):
            raise self.fail(f"must be a list, got {value!r}", where)
        return value

    def text(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise self.fail(f"must be a string, got {value!r}", where)
        return value

    def serve(self, value: Any, where: str) -> Serve:
        doc = self.obj(value, where, (), ("variation", "rollout"))
        if ("variation" in doc) == ("rollout" in doc):
            raise self.fail("serve exactly one of a variation or a rollout", where)
        if "variation" in doc:
            return Serve(variation=self.text(doc["variation"], f"{where}.variation"))
        splits = []
        for i, item in enumerate(self.array(doc["rollout"], f"{where}.rollout")):
            at = f"{where}.rollout[{i}]"
            split = self.obj(item, at, ("variation", "weight"))
            splits.append(Split(self.text(split["variation"], f"{at}.variation"), split["weight"]))
        return Serve(rollout=tuple(splits))

    def clause(self, value: Any, where: str) -> Clause:
        doc = self.obj(value, where, ("attribute", "op"), ("value",))
        op = self.text(doc["op"], f"{where}.op")
        clause_value = doc.get("value")
        if op in {"in", "not_in"}:
            clause_value = tuple(self.array(clause_value, f"{where}.value"))
        return Clause(self.text(doc["attribute"], f"{where}.attribute"), op, clause_value)

    def rule(self, value: Any, where: str) -> Rule:
        doc = self.obj(value, where, ("id", "clauses", "serve"))
        clauses = self.array(doc["clauses"], f"{where}.clauses")
        return Rule(
            id=self.text(doc["id"], f"{where}.id"),
            clauses=tuple(self.clause(c, f"{where}.clauses[{i}]") for i, c in enumerate(clauses)),
            serve=self.serve(doc["serve"], f"{where}.serve"),
        )

    def prerequisite(self, value: Any, where: str) -> Prerequisite:
        doc = self.obj(value, where, ("flag", "variations"))
        variations = self.array(doc["variations"], f"{where}.variations")
        return Prerequisite(
            self.text(doc["flag"], f"{where}.flag"),
            tuple(self.text(v, f"{where}.variations[{i}]") for i, v in enumerate(variations)),
        )

    def variation(self, value: Any, where: str) -> Variation:
        doc = self.obj(value, where, ("key", "value"))
        problem = _json_problem(doc["value"])
        if problem is not None:
            raise self.fail(f"not a JSON value: {problem}", f"{where}.value")
        return Variation(self.text(doc["key"], f"{where}.key"), _json_copy(doc["value"]))

    def flag(self, document: Any) -> Flag:
        doc = self.obj(
            document,
            "",
            ("key", "kind", "variations", "off_variation", "fallthrough"),
            ("enabled", "prerequisites", "rules", "salt", "version"),
        )
        variations = self.array(doc["variations"], "variations")
        prerequisites = self.array(doc.get("prerequisites", []), "prerequisites")
        rules = self.array(doc.get("rules", []), "rules")
        return Flag(
            key=self.text(doc["key"], "key"),
            kind=doc["kind"],
            variations=tuple(
                self.variation(v, f"variations[{i}]") for i, v in enumerate(variations)
            ),
            off_variation=self.text(doc["off_variation"], "off_variation"),
            fallthrough=self.serve(doc["fallthrough"], "fallthrough"),
            enabled=doc.get("enabled", True),
            prerequisites=tuple(
                self.prerequisite(p, f"prerequisites[{i}]") for i, p in enumerate(prerequisites)
            ),
            rules=tuple(self.rule(r, f"rules[{i}]") for i, r in enumerate(rules)),
            salt=self.text(doc.get("salt", ""), "salt"),
            version=doc.get("version", 1),
        )


def _json_copy(value: Any) -> Any:
    """A fresh copy of a JSON value, so a flag shares no mutable state with its document."""
    if isinstance(value, Mapping):
        return {k: _json_copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_copy(v) for v in value]
    return value


def parse_flag(document: Mapping[str, Any], *, allow_unknown_fields: bool = False) -> Flag:
    """The :class:`Flag` a wire-form document describes, or :class:`FlagDefinitionError`.

    Unknown fields are refused by default, which catches typos where documents are written
    (the API); an SDK passes ``allow_unknown_fields=True`` so that a newer server adding a
    field does not make older SDKs drop every flag.
    """
    key = document.get("key") if isinstance(document, Mapping) else None
    reader = _DocumentReader(
        key if isinstance(key, str) else None, allow_unknown_fields=allow_unknown_fields
    )
    return reader.flag(document)


def flag_document(flag: Flag) -> dict[str, Any]:
    """The wire form of ``flag``; ``parse_flag(flag_document(flag)) == flag``."""
    return {
        "key": flag.key,
        "kind": flag.kind,
        "variations": [{"key": v.key, "value": _json_copy(v.value)} for v in flag.variations],
        "enabled": flag.enabled,
        "off_variation": flag.off_variation,
        "prerequisites": [
            {"flag": p.flag, "variations": list(p.variations)} for p in flag.prerequisites
        ],
        "rules": [
            {
                "id": rule.id,
                "clauses": [_clause_document(c) for c in rule.clauses],
                "serve": _serve_document(rule.serve),
            }
            for rule in flag.rules
        ],
        "fallthrough": _serve_document(flag.fallthrough),
        "salt": flag.salt,
        "version": flag.version,
    }


def _clause_document(clause: Clause) -> dict[str, Any]:
    document: dict[str, Any] = {"attribute": clause.attribute, "op": clause.op}
    if clause.op in {"in", "not_in"}:
        document["value"] = list(clause.value)
    elif clause.value is not None:
        document["value"] = clause.value
    return document


def _serve_document(serve: Serve) -> dict[str, Any]:
    if serve.rollout is not None:
        return {"rollout": [{"variation": s.variation, "weight": s.weight} for s in serve.rollout]}
    return {"variation": serve.variation}


# --- targeting outside flags ----------------------------------------------------------------


def compile_clauses(
    documents: Sequence[Mapping[str, Any]], *, where: str = "targeting"
) -> Callable[[EvaluationContext], bool]:
    """A test that holds when every clause holds (an empty list always holds), for the
    targeting of experiments and the segments of guarded rollouts. Clauses mean exactly what
    they mean in a flag rule. Raises :class:`FlagDefinitionError` naming the bad clause."""
    reader = _DocumentReader(None, allow_unknown_fields=False)

    def fail(problem: str, at: str) -> FlagDefinitionError:
        return FlagDefinitionError(problem, field=at)

    tests = tuple(
        _compile_clause(reader.clause(doc, f"{where}[{i}]"), f"{where}[{i}]", fail)
        for i, doc in enumerate(documents)
    )

    def matches(context: EvaluationContext) -> bool:
        attributes, key = context.attributes, context.targeting_key
        return all(test(attributes, key) for test in tests)

    return matches


def parse_clauses(documents: Sequence[Mapping[str, Any]], *, where: str = "targeting") -> None:
    """Check clause documents without keeping them (:func:`compile_clauses` raises)."""
    compile_clauses(documents, where=where)
