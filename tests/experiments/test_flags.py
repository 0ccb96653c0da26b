"""The flag evaluator: targeting, every op, rollouts, stickiness, prerequisites, documents."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus.experiments.flags import (
    OPS,
    Clause,
    ErrorCode,
    Evaluation,
    EvaluationContext,
    Flag,
    FlagDefinitionError,
    FlagSet,
    Reason,
    Rule,
    Serve,
    Split,
    Variation,
    bucket,
    check_prerequisites,
    flag_document,
    parse_flag,
)

ON_OFF = [{"key": "on", "value": True}, {"key": "off", "value": False}]


def boolean_doc(key: str = "new-checkout", **fields: Any) -> dict[str, Any]:
    return {
        "key": key,
        "kind": "boolean",
        "variations": ON_OFF,
        "off_variation": "off",
        "fallthrough": {"variation": "on"},
        **fields,
    }


def rollout(*weights: tuple[str, float]) -> dict[str, Any]:
    return {"rollout": [{"variation": v, "weight": w} for v, w in weights]}


def evaluate(doc: dict[str, Any], targeting_key: str | None = "v-1", **attributes: Any) -> Any:
    return FlagSet([parse_flag(doc)]).evaluate(
        doc["key"], EvaluationContext(targeting_key, attributes)
    )


def clause_rule(attribute: str, op: str, value: Any = None) -> dict[str, Any]:
    clause: dict[str, Any] = {"attribute": attribute, "op": op}
    if value is not None:
        clause["value"] = value
    return {"id": "r", "clauses": [clause], "serve": {"variation": "off"}}


def matches(op: str, value: Any, attributes: dict[str, Any], attribute: str = "a") -> bool:
    """Whether a one-clause rule on ``attribute`` matches ``attributes``."""
    result = evaluate(boolean_doc(rules=[clause_rule(attribute, op, value)]), **attributes)
    return bool(result.rule_id == "r")


# --- targeting ------------------------------------------------------------------------------

CHECKOUT = boolean_doc(
    rules=[
        {
            "id": "angry",
            "clauses": [{"attribute": "emotion.dominant", "op": "eq", "value": "anger"}],
            "serve": {"variation": "off"},
        },
        {
            "id": "eu-gloomy",
            "clauses": [
                {"attribute": "country", "op": "in", "value": ["DE", "FR"]},
                {"attribute": "emotion.valence", "op": "lt", "value": -0.3},
            ],
            "serve": {"variation": "on"},
        },
    ],
    fallthrough={"variation": "off"},
    version=3,
)


def test_emotion_targeting_serves_the_first_matching_rule() -> None:
    angry = evaluate(CHECKOUT, emotion={"dominant": "anger", "valence": -0.9}, country="DE")
    assert angry == Evaluation("new-checkout", "off", False, "TARGETING_MATCH", "angry", version=3)

    gloomy = evaluate(CHECKOUT, emotion={"dominant": "sadness", "valence": -0.5}, country="FR")
    assert (gloomy.variation, gloomy.value, gloomy.reason, gloomy.rule_id) == (
        "on",
        True,
        "TARGETING_MATCH",
        "eu-gloomy",
    )


@pytest.mark.parametrize(
    "attributes",
    [
        {"emotion": {"dominant": "sadness", "valence": -0.2}, "country": "DE"},  # not < -0.3
        {"emotion": {"dominant": "sadness", "valence": -0.3}, "country": "DE"},  # boundary
        {"emotion": {"dominant": "sadness", "valence": -0.5}, "country": "US"},  # not in list
        {"emotion": {"dominant": "sadness"}, "country": "DE"},  # valence missing
        {"country": "DE"},  # no reading at all
        {"emotion": "anger", "country": "DE"},  # not a mapping: the path is missing
    ],
)
def test_a_rule_needs_every_clause(attributes: dict[str, Any]) -> None:
    result = evaluate(CHECKOUT, **attributes)
    assert (result.variation, result.reason, result.rule_id) == ("off", "DEFAULT", None)


def test_reasons_for_static_default_and_split() -> None:
    assert evaluate(boolean_doc()).reason == Reason.STATIC
    assert evaluate(CHECKOUT).reason == Reason.DEFAULT
    split = evaluate(boolean_doc(fallthrough=rollout(("on", 50), ("off", 50))))
    assert (split.reason, split.rule_id) == ("SPLIT", None)
    ruled = boolean_doc(rules=[{"id": "all", "clauses": [], "serve": rollout(("on", 100))}])
    assert (evaluate(ruled).reason, evaluate(ruled).rule_id) == ("SPLIT", "all")


def test_kill_switch_serves_the_off_variation_whatever_the_rules_say() -> None:
    killed = {**CHECKOUT, "enabled": False, "off_variation": "on"}
    result = evaluate(killed, emotion={"dominant": "anger"})
    assert (result.variation, result.value, result.reason) == ("on", True, "DISABLED")


def test_unknown_flag_is_an_error_without_a_value() -> None:
    result = FlagSet([]).evaluate("nope", EvaluationContext("v-1"))
    assert (result.reason, result.error_code, result.variation, result.value) == (
        "ERROR",
        "FLAG_NOT_FOUND",
        None,
        None,
    )


@pytest.mark.parametrize("targeting_key", [None, ""])
def test_rollout_without_a_targeting_key_is_an_error(targeting_key: str | None) -> None:
    doc = boolean_doc(
        rules=[clause_rule("plan", "eq", "pro")], fallthrough=rollout(("on", 10), ("off", 90))
    )
    missing = evaluate(doc, targeting_key)
    assert (missing.reason, missing.error_code, missing.value) == (
        "ERROR",
        ErrorCode.TARGETING_KEY_MISSING,
        None,
    )
    # A fixed variation needs no key to hash.
    assert evaluate(doc, targeting_key, plan="pro").variation == "off"


# --- ops ------------------------------------------------------------------------------------

OP_CASES: list[tuple[str, Any, Any, bool]] = [
    # op, clause value, attribute value, matches
    ("eq", "DE", "DE", True),
    ("eq", "DE", "de", False),  # case-sensitive
    ("eq", 1, 1.0, True),  # numbers by value
    ("eq", 1, True, False),  # a bool is not a number
    ("eq", True, 1, False),
    ("eq", True, True, True),
    ("eq", "1", 1, False),  # no coercion
    ("neq", "DE", "FR", True),
    ("neq", "DE", "DE", False),
    ("neq", "DE", 5, True),  # present and not equal
    ("in", ["DE", "FR"], "FR", True),
    ("in", ["DE", "FR"], "IT", False),
    ("in", [1, 2.5], 2.5, True),
    ("in", [1, 2], True, False),
    ("in", [True], 1, False),
    ("in", ["DE"], ["DE"], False),  # a list attribute is not a scalar
    ("not_in", ["DE", "FR"], "IT", True),
    ("not_in", ["DE", "FR"], "DE", False),
    ("contains", "sale", "summer-sale-2026", True),
    ("contains", "Sale", "summer-sale", False),
    ("contains", "vip", ["beta", "vip"], True),
    ("contains", 3, [1, 2, 3.0], True),
    ("contains", 3, "123", False),
    ("not_contains", "vip", ["beta"], True),
    ("not_contains", "vip", "vip-plus", False),
    ("starts_with", "/checkout", "/checkout/pay", True),
    ("starts_with", "/checkout", "/cart", False),
    ("starts_with", "1", 123, False),
    ("ends_with", "@nexus.dev", "ana@nexus.dev", True),
    ("ends_with", "@nexus.dev", "ana@nexus.com", False),
    ("regex", r"^v\d+$", "v12", True),
    ("regex", r"\d+", "abc123def", True),  # search, not fullmatch
    ("regex", r"^v\d+$", "v12a", False),
    ("regex", r".*", 12, False),
    ("gt", 0.5, 0.6, True),
    ("gt", 0.5, 0.5, False),
    ("gte", 0.5, 0.5, True),
    ("lt", -0.3, -0.31, True),
    ("lt", -0.3, -0.3, False),
    ("lte", -0.3, -0.3, True),
    ("lt", 10, 9, True),
    ("gt", 0, True, False),  # a bool is not a number
    ("gt", 5, "6", False),  # no coercion
    ("gte", "2026-03-01", "2026-04-15", True),  # strings by code point
    ("lt", "2026-03-01", "2026-04-15", False),
    ("exists", None, "anything", True),
    ("exists", None, False, True),
    ("not_exists", None, "anything", False),
    ("semver_eq", "1.4.0", "1.4", True),
    ("semver_eq", "1.4.0", "1.4.0+build.7", True),  # build metadata ignored
    ("semver_gt", "1.4.0", "1.10.0", True),  # numeric, not lexicographic
    ("semver_gt", "1.4.0", "1.4.0-rc.1", False),  # a prerelease precedes its release
    ("semver_lt", "1.4.0", "1.4.0-rc.1", True),
    ("semver_lt", "1.0.0-rc.10", "1.0.0-rc.2", True),  # numeric identifiers by value
    ("semver_lt", "1.0.0-beta", "1.0.0-alpha.1", True),
    ("semver_gt", "1.0.0-alpha", "1.0.0-alpha.1", True),  # more identifiers sort later
    ("semver_gt", "1.0.0", "not-a-version", False),
    ("semver_eq", "1.0.0", 1, False),
]


def test_every_op_has_cases() -> None:
    assert {case[0] for case in OP_CASES} == set(OPS)


@pytest.mark.parametrize(("op", "value", "attribute", "expected"), OP_CASES)
def test_op(op: str, value: Any, attribute: Any, expected: bool) -> None:
    assert matches(op, value, {"a": attribute}) is expected


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("attributes", [{}, {"a": None}, {"b": 1}])
def test_a_missing_attribute_matches_only_not_exists(op: str, attributes: dict[str, Any]) -> None:
    value = {
        "in": ["x"],
        "not_in": ["x"],
        "exists": None,
        "not_exists": None,
        "regex": "x",
    }.get(op, "1.0.0" if op.startswith("semver") else "x")
    assert matches(op, value, attributes) is (op == "not_exists")


def test_key_is_the_targeting_key_and_paths_go_deep() -> None:
    doc = boolean_doc(rules=[clause_rule("key", "starts_with", "staff-")])
    assert evaluate(doc, "staff-7").rule_id == "r"
    assert evaluate(doc, "v-7", key="staff-7").rule_id is None  # not an attribute
    assert matches("eq", 3, {"a": {"b": {"c": 3}}}, attribute="a.b.c")
    assert not matches("eq", 3, {"a": {"b": [3]}}, attribute="a.b.c")
    assert matches("not_exists", None, {"a": {"b": "leaf"}}, attribute="a.b.c")


# --- rollouts -------------------------------------------------------------------------------

THREE_WAY = {
    "key": "pricing-test",
    "kind": "multivariate",
    "variations": [
        {"key": "control", "value": "19"},
        {"key": "low", "value": "15"},
        {"key": "high", "value": "25"},
    ],
    "off_variation": "control",
    "fallthrough": rollout(("control", 50), ("low", 30), ("high", 20)),
}


def test_rollout_shares_match_the_weights() -> None:
    flags = FlagSet([parse_flag(THREE_WAY)])
    n = 20_000
    counts = Counter(
        flags.evaluate("pricing-test", EvaluationContext(f"visitor-{i}")).variation
        for i in range(n)
    )
    expected = {"control": 0.5 * n, "low": 0.3 * n, "high": 0.2 * n}
    chi_square = sum((counts[v] - e) ** 2 / e for v, e in expected.items())
    assert chi_square < 13.82  # the 0.999 quantile of chi-square with 2 degrees of freedom
    # and not suspiciously perfect either (a broken hash that cycles would be)
    assert chi_square > 0.002


def test_assignment_is_sticky_within_a_process() -> None:
    first = FlagSet([parse_flag(THREE_WAY)])
    rebuilt = FlagSet([parse_flag(json.loads(json.dumps(THREE_WAY)))])
    for i in range(500):
        context = EvaluationContext(f"visitor-{i}", {"plan": "pro"})
        once = first.evaluate("pricing-test", context)
        assert first.evaluate("pricing-test", context) == once
        assert rebuilt.evaluate("pricing-test", context) == once


def test_assignment_is_sticky_across_processes() -> None:
    keys = [f"visitor-{i}" for i in range(200)]
    here = [
        FlagSet([parse_flag(THREE_WAY)]).evaluate("pricing-test", EvaluationContext(k)).variation
        for k in keys
    ]
    script = (
        "import json, sys\n"
        "from nexus.experiments.flags import EvaluationContext, FlagSet, parse_flag\n"
        "doc, keys = json.loads(sys.argv[1]), json.loads(sys.argv[2])\n"
        "flags = FlagSet([parse_flag(doc)])\n"
        "print(json.dumps([flags.evaluate(doc['key'], EvaluationContext(k)).variation"
        " for k in keys]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(THREE_WAY), json.dumps(keys)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(done.stdout) == here
    assert set(here) == {"control", "low", "high"}


def test_golden_buckets_pin_the_hash() -> None:
    """Changing the hash would reshuffle every running rollout: these values must never move."""
    assert bucket("new-checkout", "v-1") == 0.28022680085995705
    assert bucket("new-checkout", "v-2") == 0.013309460635670392
    assert bucket("pricing-test", "visitor-42") == 0.9597321827455505
    assert bucket("café", "ünïcode") == 0.2541465525205125
    # and what they serve in a 50/30/20 rollout (boundaries 0.5 and 0.8)
    assert bucket("pricing-test", "v-1") == 0.07445448621686196
    assert bucket("pricing-test", "a") == 0.6250077655684171
    assert bucket("pricing-test", "v-2") == 0.8082452749939888
    flags = FlagSet([parse_flag(THREE_WAY)])
    served = [
        flags.evaluate("pricing-test", EvaluationContext(k)).variation for k in ("v-1", "a", "v-2")
    ]
    assert served == ["control", "low", "high"]


def test_fractional_weights_are_fine_when_they_sum_to_100() -> None:
    thirds = {**THREE_WAY, "fallthrough": rollout(("control", 33.3), ("low", 33.3), ("high", 33.4))}
    flags = FlagSet([parse_flag(thirds)])
    counts = Counter(
        flags.evaluate("pricing-test", EvaluationContext(f"f-{i}")).variation for i in range(3000)
    )
    assert set(counts) == {"control", "low", "high"}
    assert all(800 < n < 1200 for n in counts.values())


def test_rollouts_assign_by_the_documented_bucket() -> None:
    """The evaluator's hashing shortcut agrees with bucket() and consecutive ranges."""
    flags = FlagSet([parse_flag(THREE_WAY)])
    for i in range(2000):
        unit = f"u-{i}"
        point = bucket("pricing-test", unit)
        expected = "control" if point < 0.5 else "low" if point < 0.8 else "high"
        assert flags.evaluate("pricing-test", EvaluationContext(unit)).variation == expected


def test_the_salt_defaults_to_the_key_and_changes_assignments() -> None:
    base = parse_flag(THREE_WAY)
    assert base.salt == "pricing-test"
    resalted = FlagSet([parse_flag({**THREE_WAY, "salt": "pricing-test-2"})])
    original = FlagSet([base])
    moved = sum(
        original.evaluate("pricing-test", EvaluationContext(f"v{i}")).variation
        != resalted.evaluate("pricing-test", EvaluationContext(f"v{i}")).variation
        for i in range(1000)
    )
    assert moved > 400  # independent hashes: about 62% differ


@pytest.mark.parametrize(
    ("before", "after", "ramped"),
    [
        ([("on", 5), ("off", 95)], [("on", 10), ("off", 90)], "on"),
        (
            [("a", 50), ("b", 5), ("c", 45)],
            [("a", 50), ("b", 10), ("c", 40)],
            "b",
        ),
    ],
)
def test_ramping_up_keeps_everyone_who_had_the_variation(
    before: list[tuple[str, int]], after: list[tuple[str, int]], ramped: str
) -> None:
    variations = sorted({v for v, _ in before})
    doc = {
        "key": "ramp",
        "kind": "multivariate",
        "variations": [{"key": v, "value": v} for v in variations],
        "off_variation": variations[0],
    }
    old = FlagSet([parse_flag({**doc, "fallthrough": rollout(*before)})])
    new = FlagSet([parse_flag({**doc, "fallthrough": rollout(*after)})])
    had = {
        i
        for i in range(10_000)
        if old.evaluate("ramp", EvaluationContext(f"u{i}")).variation == ramped
    }
    has = {
        i
        for i in range(10_000)
        if new.evaluate("ramp", EvaluationContext(f"u{i}")).variation == ramped
    }
    assert had <= has
    assert 350 < len(had) < 650
    assert 850 < len(has) < 1150


# --- prerequisites --------------------------------------------------------------------------


def with_prerequisite(key: str, other: str, variations: list[str], **fields: Any) -> Flag:
    return parse_flag(
        boolean_doc(key, prerequisites=[{"flag": other, "variations": variations}], **fields)
    )


def test_a_prerequisite_gates_the_flag() -> None:
    gate = parse_flag(boolean_doc("gate", rules=[clause_rule("plan", "eq", "free")]))
    child = with_prerequisite("child", "gate", ["on"])
    flags = FlagSet([gate, child])
    passed = flags.evaluate("child", EvaluationContext("v", {"plan": "pro"}))
    assert (passed.variation, passed.reason) == ("on", "DEFAULT")
    failed = flags.evaluate("child", EvaluationContext("v", {"plan": "free"}))
    assert (failed.variation, failed.value, failed.reason) == ("off", False, "PREREQUISITE_FAILED")


def test_a_chain_of_prerequisites_is_followed_to_the_end() -> None:
    root = parse_flag(boolean_doc("root", rules=[clause_rule("plan", "eq", "free")]))
    middle = with_prerequisite("middle", "root", ["on"])
    leaf = with_prerequisite("leaf", "middle", ["on"])
    flags = FlagSet([leaf, middle, root])
    assert flags.evaluate("leaf", EvaluationContext("v", {"plan": "pro"})).variation == "on"
    blocked = flags.evaluate("leaf", EvaluationContext("v", {"plan": "free"}))
    assert blocked.reason == "PREREQUISITE_FAILED"
    every = flags.evaluate_all(EvaluationContext("v", {"plan": "free"}))
    assert {k: e.reason for k, e in every.items()} == {
        "leaf": "PREREQUISITE_FAILED",
        "middle": "PREREQUISITE_FAILED",
        "root": "TARGETING_MATCH",
    }


def test_missing_or_disabled_prerequisites_fail() -> None:
    orphan = with_prerequisite("orphan", "gone", ["on"])
    assert FlagSet([orphan]).evaluate("orphan", EvaluationContext("v")).reason == (
        "PREREQUISITE_FAILED"
    )
    off = parse_flag(boolean_doc("gate", enabled=False))
    needs_on = with_prerequisite("needs-on", "gate", ["on"])
    needs_off = with_prerequisite("needs-off", "gate", ["off"])
    flags = FlagSet([off, needs_on, needs_off])
    assert flags.evaluate("needs-on", EvaluationContext("v")).reason == "PREREQUISITE_FAILED"
    # the disabled gate serves its off variation, which is what needs-off asks for
    served = flags.evaluate("needs-off", EvaluationContext("v"))
    assert (served.variation, served.reason) == ("on", "DEFAULT")


def test_a_cycle_is_an_error_at_evaluation_and_refused_when_checked() -> None:
    a = with_prerequisite("a", "b", ["on"])
    b = with_prerequisite("b", "c", ["on"])
    c = with_prerequisite("c", "a", ["on"])
    outside = with_prerequisite("outside", "a", ["on"])
    killed = with_prerequisite("c", "a", ["on"], enabled=False)
    flags = FlagSet([a, b, c, outside])
    result = flags.evaluate("a", EvaluationContext("v"))
    assert (result.reason, result.error_code, result.value) == ("ERROR", "GENERAL", None)
    assert result.error_message == "prerequisites form a cycle: a -> b -> c -> a"
    assert flags.evaluate("outside", EvaluationContext("v")).reason == "PREREQUISITE_FAILED"
    assert FlagSet([a, b, killed]).evaluate("c", EvaluationContext("v")).reason == "DISABLED"
    with pytest.raises(FlagDefinitionError, match=r"cycle: a -> b -> c -> a") as error:
        check_prerequisites([a, b, c])
    assert error.value.field == "prerequisites"


def test_check_prerequisites_refuses_dangling_references() -> None:
    gate = parse_flag(boolean_doc("gate"))
    check_prerequisites([gate, with_prerequisite("child", "gate", ["on", "off"])])
    with pytest.raises(FlagDefinitionError, match="no flag 'gone'") as error:
        check_prerequisites([gate, with_prerequisite("child", "gone", ["on"])])
    assert error.value.field == "prerequisites[0].flag"
    with pytest.raises(FlagDefinitionError, match="has no variation 'maybe'"):
        check_prerequisites([gate, with_prerequisite("child", "gate", ["maybe"])])
    with pytest.raises(FlagDefinitionError, match="duplicate flag key"):
        check_prerequisites([gate, gate])


def test_a_flag_set_refuses_duplicate_keys() -> None:
    gate = parse_flag(boolean_doc("gate"))
    with pytest.raises(FlagDefinitionError, match="duplicate flag key"):
        FlagSet([gate, gate])
    assert len(FlagSet([gate])) == 1
    assert "gate" in FlagSet([gate])
    assert FlagSet([gate]).get("gate") == gate
    assert list(FlagSet([gate])) == [gate]


# --- documents ------------------------------------------------------------------------------


def test_a_document_round_trips() -> None:
    flag = parse_flag(CHECKOUT)
    document = flag_document(flag)
    assert document == {
        **CHECKOUT,
        "enabled": True,
        "prerequisites": [],
        "salt": "new-checkout",
    }
    assert parse_flag(document) == flag
    document["variations"][0]["value"] = "mutated"
    assert flag.variations[0].value is True


def test_kinds_are_checked() -> None:
    json_flag = parse_flag(
        {
            "key": "banner",
            "kind": "json",
            "variations": [
                {"key": "calm", "value": {"tone": "calm", "colors": ["#eef", "#ccd"]}},
                {"key": "none", "value": None},
            ],
            "off_variation": "none",
            "fallthrough": {"variation": "calm"},
        }
    )
    assert evaluate(flag_document(json_flag)).value == {"tone": "calm", "colors": ["#eef", "#ccd"]}
    numbers = {
        **THREE_WAY,
        "variations": [
            {"key": k, "value": v} for k, v in [("control", 1), ("low", 0.5), ("high", 2)]
        ],
    }
    assert parse_flag(numbers).variation("low") == Variation("low", 0.5)


BAD_DOCUMENTS: list[tuple[dict[str, Any], str, str]] = [
    # document, field, message fragment
    ({**CHECKOUT, "key": "Not A Key"}, "key", "must match"),
    ({**CHECKOUT, "kind": "ternary"}, "kind", "must be one of boolean"),
    ({**CHECKOUT, "off_variation": "maybe"}, "off_variation", "unknown variation 'maybe'"),
    ({**CHECKOUT, "fallthrough": {"variation": "maybe"}}, "fallthrough.variation", "unknown"),
    (
        {**CHECKOUT, "fallthrough": rollout(("on", 60), ("off", 30))},
        "fallthrough.rollout",
        "weights must sum to 100, got 90",
    ),
    (
        {**CHECKOUT, "fallthrough": rollout(("on", 150), ("off", -50))},
        "fallthrough.rollout[0].weight",
        "from 0 to 100",
    ),
    (
        {**CHECKOUT, "fallthrough": rollout(("on", 50), ("on", 50))},
        "fallthrough.rollout[1].variation",
        "listed twice",
    ),
    (
        {**CHECKOUT, "fallthrough": {"variation": "on", **rollout(("on", 100))}},
        "fallthrough",
        "exactly one",
    ),
    ({**CHECKOUT, "fallthrough": {}}, "fallthrough", "exactly one"),
    (
        {**CHECKOUT, "variations": [*ON_OFF, {"key": "on", "value": True}]},
        "variations[2].key",
        "duplicate variation key 'on'",
    ),
    (
        {**CHECKOUT, "variations": [{"key": "on", "value": True}, {"key": "off", "value": 0}]},
        "variations",
        "exactly two variations, true and false",
    ),
    (
        {**CHECKOUT, "variations": [{"key": "on", "value": True}, {"key": "off", "value": True}]},
        "variations",
        "exactly two variations",
    ),
    (
        {
            **THREE_WAY,
            "variations": [{"key": "control", "value": "a"}, {"key": "low", "value": 2}],
        },
        "variations",
        "all strings or all finite numbers",
    ),
    (
        {
            **THREE_WAY,
            "kind": "json",
            "variations": [{"key": "control", "value": {"x": float("nan")}}],
        },
        "variations[0].value",
        "not a finite number",
    ),
    (
        {**CHECKOUT, "rules": [CHECKOUT["rules"][0], CHECKOUT["rules"][0]]},
        "rules[1].id",
        "duplicate rule id 'angry'",
    ),
    (
        boolean_doc(rules=[clause_rule("a", "like", "x")]),
        "rules[0].clauses[0].op",
        "unknown op 'like'; expected one of eq, neq",
    ),
    (
        boolean_doc(rules=[clause_rule("a", "regex", "(unclosed")]),
        "rules[0].clauses[0].value",
        "not a valid regular expression",
    ),
    (boolean_doc(rules=[clause_rule("a", "in", "DE")]), "rules[0].clauses[0].value", "list"),
    (boolean_doc(rules=[clause_rule("a", "eq", [1])]), "rules[0].clauses[0].value", "string"),
    (boolean_doc(rules=[clause_rule("a", "gt", True)]), "rules[0].clauses[0].value", "number"),
    (boolean_doc(rules=[clause_rule("a", "exists", 1)]), "rules[0].clauses[0].value", "no value"),
    (
        boolean_doc(rules=[clause_rule("a", "semver_gt", "one")]),
        "rules[0].clauses[0].value",
        "not a version",
    ),
    (
        boolean_doc(rules=[clause_rule("emotion..valence", "lt", 0)]),
        "rules[0].clauses[0].attribute",
        "dotted attribute path",
    ),
    (
        boolean_doc(prerequisites=[{"flag": "new-checkout", "variations": ["on"]}]),
        "prerequisites[0].flag",
        "its own prerequisite",
    ),
    (
        boolean_doc(prerequisites=[{"flag": "gate", "variations": []}]),
        "prerequisites[0].variations",
        "non-empty",
    ),
    ({**CHECKOUT, "rulez": []}, "rulez", "unknown field"),
    (boolean_doc(rules=[{"id": "r", "clauses": []}]), "rules[0].serve", "is required"),
    ({**CHECKOUT, "rules": {"id": "r"}}, "rules", "must be a list"),
    ({**CHECKOUT, "enabled": "yes"}, "enabled", "true or false"),
    ({**CHECKOUT, "version": -1}, "version", "non-negative integer"),
]


@pytest.mark.parametrize(("document", "field", "fragment"), BAD_DOCUMENTS)
def test_bad_documents_are_refused_naming_the_field(
    document: dict[str, Any], field: str, fragment: str
) -> None:
    with pytest.raises(FlagDefinitionError) as error:
        parse_flag(document)
    assert error.value.field == field
    assert fragment in str(error.value)
    assert str(error.value).startswith(f"flag {document['key']!r}, {field}: ")


def test_a_flag_built_directly_is_validated_too() -> None:
    with pytest.raises(FlagDefinitionError, match="unknown variation 'maybe'"):
        Flag(
            key="f",
            kind="boolean",
            variations=(Variation("on", True), Variation("off", False)),
            off_variation="off",
            fallthrough=Serve(rollout=(Split("on", 50), Split("maybe", 50))),
        )
    flag = Flag(
        key="f",
        kind="boolean",
        variations=(Variation("on", True), Variation("off", False)),
        off_variation="off",
        fallthrough=Serve("on"),
        rules=(Rule("r", (Clause("plan", "in", ("pro",)),), Serve("off")),),
    )
    assert flag.salt == "f"
    assert parse_flag(flag_document(flag)) == flag


def test_unknown_fields_can_be_tolerated_for_forward_compatibility() -> None:
    newer = {**CHECKOUT, "tags": ["checkout"], "fallthrough": {"variation": "on", "note": "x"}}
    with pytest.raises(FlagDefinitionError):
        parse_flag(newer)
    assert parse_flag(newer, allow_unknown_fields=True).fallthrough == Serve("on")


# --- documents, generated -------------------------------------------------------------------

KEYS = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,12}", fullmatch=True)
NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=8)
FINITE = st.floats(allow_nan=False, allow_infinity=False)
SCALARS = st.one_of(NAMES, st.integers(-1000, 1000), FINITE, st.booleans())
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | FINITE | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
VERSIONS = st.from_regex(r"(0|[1-9][0-9]?)\.(0|[1-9])\.(0|[1-9])(-rc\.[0-9])?", fullmatch=True)


@st.composite
def clauses(draw: st.DrawFn) -> dict[str, Any]:
    op = draw(st.sampled_from(OPS))
    attribute = ".".join(draw(st.lists(NAMES, min_size=1, max_size=3)))
    clause: dict[str, Any] = {"attribute": attribute, "op": op}
    if op in {"in", "not_in"}:
        clause["value"] = draw(st.lists(SCALARS, max_size=4))
    elif op in {"eq", "neq", "contains", "not_contains"}:
        clause["value"] = draw(SCALARS)
    elif op in {"gt", "gte", "lt", "lte"}:
        clause["value"] = draw(st.one_of(NAMES, st.integers(-100, 100), FINITE))
    elif op.startswith("semver"):
        clause["value"] = draw(VERSIONS)
    elif op == "regex":
        clause["value"] = draw(st.sampled_from([r"^a", r"\d+", "x|y", "[a-z]{2,}$"]))
    elif op in {"starts_with", "ends_with"}:
        clause["value"] = draw(NAMES)
    return clause


@st.composite
def serves(draw: st.DrawFn, variations: list[str]) -> dict[str, Any]:
    if draw(st.booleans()):
        return {"variation": draw(st.sampled_from(variations))}
    chosen = draw(st.permutations(variations))[: draw(st.integers(1, len(variations)))]
    cuts = sorted(
        draw(st.lists(st.integers(0, 100), min_size=len(chosen) - 1, max_size=len(chosen) - 1))
    )
    edges = [0, *cuts, 100]
    return {
        "rollout": [
            {"variation": v, "weight": edges[i + 1] - edges[i]} for i, v in enumerate(chosen)
        ]
    }


@st.composite
def flag_documents(draw: st.DrawFn) -> dict[str, Any]:
    key = draw(KEYS)
    kind = draw(st.sampled_from(["boolean", "multivariate", "json"]))
    if kind == "boolean":
        keys = draw(st.lists(NAMES, min_size=2, max_size=2, unique=True))
        values: list[Any] = draw(st.permutations([True, False]))
    else:
        keys = draw(st.lists(NAMES, min_size=1, max_size=4, unique=True))
        if kind == "json":
            values = [draw(JSON_VALUES) for _ in keys]
        else:
            scalar = draw(st.sampled_from([NAMES, st.integers(-5, 5), FINITE]))
            values = [draw(scalar) for _ in keys]
    rule_ids = draw(st.lists(NAMES, max_size=3, unique=True))
    others = draw(st.lists(KEYS.filter(lambda k: k != key), max_size=2, unique=True))
    return {
        "key": key,
        "kind": kind,
        "variations": [{"key": k, "value": v} for k, v in zip(keys, values, strict=True)],
        "enabled": draw(st.booleans()),
        "off_variation": draw(st.sampled_from(keys)),
        "prerequisites": [
            {"flag": other, "variations": draw(st.lists(NAMES, min_size=1, max_size=2))}
            for other in others
        ],
        "rules": [
            {
                "id": rule_id,
                "clauses": draw(st.lists(clauses(), max_size=3)),
                "serve": draw(serves(keys)),
            }
            for rule_id in rule_ids
        ],
        "fallthrough": draw(serves(keys)),
        "salt": draw(st.one_of(st.just(key), NAMES)),
        "version": draw(st.integers(0, 10_000)),
    }


@settings(max_examples=150, deadline=None)
@given(flag_documents())
def test_any_valid_document_round_trips(document: dict[str, Any]) -> None:
    flag = parse_flag(document)
    assert flag_document(flag) == document
    assert parse_flag(flag_document(flag)) == flag
    # and it evaluates, to one of its own variations or an error
    result = FlagSet([flag]).evaluate(flag.key, EvaluationContext("v-1", {"a": 1}))
    assert result.variation in {v["key"] for v in document["variations"]} | {None}
