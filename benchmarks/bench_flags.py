"""Local flag evaluation per call: NEXUS's ``FlagSet.evaluate`` against the GrowthBook Python SDK.

Both evaluate in process from definitions already in memory, on equivalent flags written the
way each system expresses them:

* **simple**: a boolean flag with no rules (GrowthBook: a feature with only a default value);
* **targeted**: two targeting rules, ``emotion.dominant == "anger"`` serves off and
  ``emotion.valence < -0.3`` serves on, then a 20 % rollout of on (GrowthBook: two ``force``
  rules with conditions, then a ``force`` rule with ``coverage: 0.2``, default off);
* **3-way split**: a multivariate flag split 34/33/33 (GrowthBook: an experiment rule with
  three variations and those weights).

The same visitors (distinct ids, attributes drawn with a fixed seed; a few have no emotion
reading) go through both. Per visitor a server does the same thing with either library: hand
over the visitor and evaluate. NEXUS builds an ``EvaluationContext`` and calls
``FlagSet.evaluate``; GrowthBook is constructed once with the features and given each visitor
with ``set_attributes`` before ``eval_feature``, the cheapest way to use it per visitor (no
instance per request). Each is timed with ``time.perf_counter_ns``, best of a few passes after
a warm-up, taken per chunk of visitors; NEXUS is also timed on prebuilt contexts (evaluation
alone). Before timing, the two must agree: which rule matched, for every visitor (exactly: the
hashes differ, the targeting must not), and the rollout shares (within 2 points of each
other; the buckets themselves differ by design).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.report import Section, fmt, table

TITLE = "Feature flag evaluation"

VISITORS = 10_000
REPEATS = 5
CHUNK = 500
SEED = 7
BAR_US = 20.0
SHARE_TOLERANCE = 0.02
EMOTIONS = ("joy", "anger", "sadness", "neutral", "surprise", "fear")
COUNTRIES = ("DE", "FR", "US", "GB", "BR")
ON_OFF = [{"key": "on", "value": True}, {"key": "off", "value": False}]


@dataclass(frozen=True)
class Scenario:
    name: str
    nexus: dict[str, Any]
    growthbook: dict[str, Any]


SCENARIOS = (
    Scenario(
        "simple",
        {
            "key": "simple",
            "kind": "boolean",
            "variations": ON_OFF,
            "off_variation": "off",
            "fallthrough": {"variation": "on"},
        },
        {"defaultValue": True},
    ),
    Scenario(
        "targeted",
        {
            "key": "targeted",
            "kind": "boolean",
            "variations": ON_OFF,
            "off_variation": "off",
            "rules": [
                {
                    "id": "angry",
                    "clauses": [{"attribute": "emotion.dominant", "op": "eq", "value": "anger"}],
                    "serve": {"variation": "off"},
                },
                {
                    "id": "gloomy",
                    "clauses": [{"attribute": "emotion.valence", "op": "lt", "value": -0.3}],
                    "serve": {"variation": "on"},
                },
            ],
            "fallthrough": {
                "rollout": [{"variation": "on", "weight": 20}, {"variation": "off", "weight": 80}]
            },
        },
        {
            "defaultValue": False,
            "rules": [
                {"id": "angry", "condition": {"emotion.dominant": "anger"}, "force": False},
                {"id": "gloomy", "condition": {"emotion.valence": {"$lt": -0.3}}, "force": True},
                {"id": "rollout", "force": True, "coverage": 0.2, "hashAttribute": "id"},
            ],
        },
    ),
    Scenario(
        "3-way split",
        {
            "key": "pricing",
            "kind": "multivariate",
            "variations": [{"key": k, "value": k} for k in ("control", "b", "c")],
            "off_variation": "control",
            "fallthrough": {
                "rollout": [
                    {"variation": "control", "weight": 34},
                    {"variation": "b", "weight": 33},
                    {"variation": "c", "weight": 33},
                ]
            },
        },
        {
            "defaultValue": "control",
            "rules": [
                {
                    "id": "pricing",
                    "key": "pricing",
                    "variations": ["control", "b", "c"],
                    "weights": [0.34, 0.33, 0.33],
                    "hashAttribute": "id",
                }
            ],
        },
    ),
)


def _visitors() -> list[tuple[str, dict[str, Any]]]:
    rng = random.Random(SEED)
    visitors = []
    for i in range(VISITORS):
        attributes: dict[str, Any] = {"country": rng.choice(COUNTRIES)}
        if rng.random() >= 0.05:  # one in twenty has no reading yet
            attributes["emotion"] = {
                "dominant": rng.choice(EMOTIONS),
                "valence": round(rng.uniform(-1, 1), 3),
                "arousal": round(rng.uniform(0, 1), 3),
            }
        visitors.append((f"visitor-{i}", attributes))
    return visitors


def _best_us(run: Callable[[int, int], object], n: int) -> float:
    """µs per call of ``run(start, stop)`` over visitors ``[0, n)``.

    Each chunk of visitors keeps its fastest of the passes and the chunks are summed: on a
    shared machine a scheduler hiccup then spoils one short chunk of one pass, not a pass.
    """
    run(0, n)  # warm-up
    chunks = [(start, min(start + CHUNK, n)) for start in range(0, n, CHUNK)]
    best = [math.inf] * len(chunks)
    for _ in range(REPEATS):
        for i, (start, stop) in enumerate(chunks):
            started = time.perf_counter_ns()
            run(start, stop)
            best[i] = min(best[i], time.perf_counter_ns() - started)
    return sum(best) / n / 1000


@dataclass(frozen=True)
class Measured:
    scenario: str
    nexus_us: float
    nexus_eval_only_us: float
    growthbook_us: float
    rules_agree: bool
    rule_counts: dict[str, int]
    nexus_shares: dict[str, float]
    growthbook_shares: dict[str, float]

    @property
    def ratio(self) -> float:
        return self.growthbook_us / self.nexus_us

    @property
    def shares_agree(self) -> bool:
        keys = set(self.nexus_shares) | set(self.growthbook_shares)
        return all(
            abs(self.nexus_shares.get(k, 0) - self.growthbook_shares.get(k, 0)) <= SHARE_TOLERANCE
            for k in keys
        )


def _shares(decisions: Sequence[tuple[str, Any]]) -> dict[str, float]:
    """Share of each value among visitors who reached the rollout (the fallthrough)."""
    rolled = [value for rule, value in decisions if rule == "fallthrough"]
    counts = Counter(str(v) for v in rolled)
    return {k: n / len(rolled) for k, n in sorted(counts.items())} if rolled else {}


def _measure(scenario: Scenario, visitors: list[tuple[str, dict[str, Any]]]) -> Measured:
    from growthbook import GrowthBook

    from nexus.experiments.flags import EvaluationContext, FlagSet, parse_flag

    key = scenario.nexus["key"]
    flags = FlagSet([parse_flag(scenario.nexus)])
    growthbook = GrowthBook(features={key: scenario.growthbook})
    gb_attributes = [{"id": visitor_id, **attributes} for visitor_id, attributes in visitors]
    contexts = [EvaluationContext(visitor_id, attributes) for visitor_id, attributes in visitors]

    nexus_decisions = []
    for context in contexts:
        result = flags.evaluate(key, context)
        nexus_decisions.append((result.rule_id or "fallthrough", result.value))
    gb_decisions = []
    for attributes in gb_attributes:
        growthbook.set_attributes(attributes)
        gb_result = growthbook.eval_feature(key)
        rule = gb_result.ruleId if gb_result.ruleId in {"angry", "gloomy"} else "fallthrough"
        gb_decisions.append((rule, gb_result.value))

    evaluate = flags.evaluate
    set_attributes = growthbook.set_attributes
    eval_feature = growthbook.eval_feature

    def nexus_per_visitor(start: int, stop: int) -> None:
        for visitor_id, attributes in visitors[start:stop]:
            evaluate(key, EvaluationContext(visitor_id, attributes))

    def nexus_evaluation_only(start: int, stop: int) -> None:
        for context in contexts[start:stop]:
            evaluate(key, context)

    def growthbook_per_visitor(start: int, stop: int) -> None:
        for attributes in gb_attributes[start:stop]:
            set_attributes(attributes)
            eval_feature(key)

    n = len(visitors)
    return Measured(
        scenario=scenario.name,
        nexus_us=_best_us(nexus_per_visitor, n),
        nexus_eval_only_us=_best_us(nexus_evaluation_only, n),
        growthbook_us=_best_us(growthbook_per_visitor, n),
        rules_agree=[r for r, _ in nexus_decisions] == [r for r, _ in gb_decisions],
        rule_counts=dict(Counter(r for r, _ in nexus_decisions)),
        nexus_shares=_shares(nexus_decisions),
        growthbook_shares=_shares(gb_decisions),
    )


def _share_text(shares: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1%}" for k, v in shares.items())


def run() -> Section:
    logging.getLogger("growthbook").setLevel(logging.WARNING)
    visitors = _visitors()
    results = [_measure(scenario, visitors) for scenario in SCENARIOS]
    rows = [
        [
            m.scenario,
            fmt(m.nexus_us),
            fmt(m.nexus_eval_only_us),
            fmt(m.growthbook_us),
            f"{fmt(m.ratio)}x",
            "yes" if m.rules_agree else "NO",
            _share_text(m.nexus_shares),
            _share_text(m.growthbook_shares),
        ]
        for m in results
    ]
    bars = []
    for m in results:
        bars.append(
            [
                f"{m.scenario}: NEXUS <= {BAR_US:g} µs per evaluation",
                "pass" if m.nexus_us <= BAR_US else "FAIL",
                f"{fmt(m.nexus_us)} µs",
            ]
        )
        bars.append(
            [
                f"{m.scenario}: NEXUS no slower than GrowthBook",
                "pass" if m.nexus_us <= m.growthbook_us else "FAIL",
                f"{fmt(m.nexus_us)} vs {fmt(m.growthbook_us)} µs",
            ]
        )
        bars.append(
            [
                f"{m.scenario}: same rule matches, rollout shares within "
                f"{SHARE_TOLERANCE * 100:g} points",
                "pass" if m.rules_agree and m.shares_agree else "FAIL",
                "",
            ]
        )
    markdown = "\n\n".join(
        [
            f"{VISITORS:,} visitors (ids and seeded attributes; 5% without an emotion reading), "
            "each evaluated once per pass against one flag in process; µs per call, best of "
            f"{REPEATS} passes after a warm-up (taken per chunk of {CHUNK} visitors and summed, "
            "so that a scheduler hiccup spoils one chunk of one pass only). *Per visitor* "
            "includes handing the visitor "
            "over (NEXUS: building an `EvaluationContext`; GrowthBook: `set_attributes` on one "
            "instance built once, then `eval_feature`); *evaluation only* is NEXUS on prebuilt "
            "contexts. Rollout shares are among the visitors no targeting rule matched.",
            table(
                [
                    "flag",
                    "NEXUS µs per visitor",
                    "NEXUS µs evaluation only",
                    "GrowthBook µs per visitor",
                    "GrowthBook / NEXUS",
                    "same rule matches",
                    "NEXUS rollout shares",
                    "GrowthBook rollout shares",
                ],
                rows,
                "lrrrrlll",
            ),
            "Visitors per matched rule (identical in both): "
            + "; ".join(
                f"{m.scenario}: "
                + ", ".join(f"{rule} {n:,}" for rule, n in sorted(m.rule_counts.items()))
                for m in results
            )
            + ".",
            table(["bar", "result", "figure"], bars, "lll"),
        ]
    )
    summary = [
        f"{m.scenario}: NEXUS {m.nexus_us:.2f} µs, GrowthBook {m.growthbook_us:.2f} µs "
        f"({m.ratio:.1f}x), rules agree: {m.rules_agree}, shares agree: {m.shares_agree}"
        for m in results
    ]
    return Section(TITLE, markdown, summary)
