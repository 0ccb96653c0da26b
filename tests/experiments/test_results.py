"""Experiment results end to end: exposures logged by ``decide`` and events sent through
ingestion, analysed per metric and checked against reference implementations."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from scipy import stats as scipy_stats
from statsmodels.stats.proportion import proportions_ztest

from tests.conftest import World
from tests.events.conftest import basic
from tests.experiments.test_decide import decide

VISITORS = 240


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _send(client: TestClient, world: World, messages: list[dict[str, Any]]) -> None:
    for start in range(0, len(messages), 500):
        response = client.post(
            "/v1/batch",
            json={"batch": messages[start : start + 500]},
            headers=basic(world.a.write_key),
        )
        assert response.status_code == 200, response.text


def _shoppers(
    variant_of: dict[str, str], now: datetime, before: datetime
) -> tuple[list[dict[str, Any]], dict[str, dict[str, list[float]]]]:
    """Seeded events of the exposed visitors (page views before and after exposure, orders
    with revenue, signups through the funnel) and the per-visitor truth behind them."""
    rng = np.random.default_rng(7)
    messages: list[dict[str, Any]] = []
    truth: dict[str, dict[str, list[float]]] = {
        v: {"orders": [], "revenue": [], "views": [], "pre_views": [], "signups": []}
        for v in ("control", "bold")
    }
    after = now + timedelta(seconds=5)

    def pause() -> timedelta:
        # People pause between pages (and the bot score would flag visitors who do not).
        return timedelta(seconds=1 + float(rng.exponential(12.0)))

    for visitor, variant in variant_of.items():
        early, late = before, after
        pre_views = int(rng.poisson(3))
        views = pre_views + int(rng.poisson(2 if variant == "control" else 3))
        orders = int(rng.random() < (0.2 if variant == "control" else 0.35))
        revenue = round(float(rng.gamma(2.0, 20.0)), 2) if orders else 0.0
        signed_up = bool(rng.random() < 0.3)
        for j in range(pre_views):
            early += pause()
            messages.append(
                {
                    "type": "track",
                    "event": "Page Viewed",
                    "anonymousId": visitor,
                    "messageId": f"{visitor}-pre-{j}",
                    "timestamp": _iso(early),
                }
            )
        for j in range(views):
            late += pause()
            messages.append(
                {
                    "type": "track",
                    "event": "Page Viewed",
                    "anonymousId": visitor,
                    "messageId": f"{visitor}-view-{j}",
                    "timestamp": _iso(late),
                }
            )
        if orders:
            messages.append(
                {
                    "type": "track",
                    "event": "Order Completed",
                    "anonymousId": visitor,
                    "messageId": f"{visitor}-order",
                    "timestamp": _iso(late + pause()),
                    "properties": {"revenue": revenue},
                }
            )
        if signed_up:
            for j, name in enumerate(("Viewed", "Signed Up")):
                late += pause()
                messages.append(
                    {
                        "type": "track",
                        "event": name,
                        "anonymousId": visitor,
                        "messageId": f"{visitor}-signup-{j}",
                        "timestamp": _iso(late),
                    }
                )
        row = truth[variant]
        row["orders"].append(orders)
        row["revenue"].append(revenue)
        row["views"].append(views)
        row["pre_views"].append(pre_views)
        row["signups"].append(float(signed_up))
    return messages, truth


@pytest.fixture
def experiment(client: TestClient, secret: dict[str, str], world: World) -> dict[str, Any]:
    body = {
        "key": "checkout-copy",
        "variants": [{"key": "control"}, {"key": "bold"}],
        "metrics": [
            {"key": "orders", "kind": "conversion", "event": "Order Completed"},
            {"key": "revenue", "kind": "sum", "event": "Order Completed", "property": "revenue"},
            {"key": "views", "kind": "count", "event": "Page Viewed"},
            {
                "key": "revenue-per-view",
                "kind": "ratio",
                "numerator": "revenue",
                "denominator": "views",
            },
            {"key": "signups", "kind": "conversion", "funnel_id": world.a.funnel_id, "step": 1},
            {
                "key": "refunds",
                "kind": "count",
                "event": "Refund Requested",
                "guardrail": True,
                "direction": "decrease",
            },
        ],
        "primary_metric": "orders",
    }
    created = client.post("/v1/experiments", json=body, headers=secret)
    assert created.status_code == 201, created.text
    assert client.post("/v1/experiments/checkout-copy/start", headers=secret).status_code == 200
    result: dict[str, Any] = created.json()
    return result


def test_results_match_reference_statistics(
    client: TestClient,
    secret: dict[str, str],
    public: dict[str, str],
    world: World,
    experiment: dict[str, Any],
    step_worker: Callable[..., None],
) -> None:
    now = datetime.now(UTC)
    before = now - timedelta(hours=2)
    variant_of: dict[str, str] = {}
    for i in range(VISITORS):
        visitor = f"shopper-{i}"
        result = decide(client, public, visitor_id=visitor, adaptation=False)
        variant_of[visitor] = result["experiments"]["checkout-copy"]["variant"]
    step_worker()  # exposures are in the store, timestamped now
    messages, truth = _shoppers(variant_of, now, before)
    _send(client, world, messages)
    step_worker()

    response = client.get(
        "/v1/experiments/checkout-copy/results",
        params={"end": _iso(now + timedelta(minutes=5))},
        headers=secret,
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["exposed"] == VISITORS
    counts = {v: len(truth[v]["orders"]) for v in truth}
    assert report["sample_ratio"]["observed"] == counts
    assert report["sample_ratio"]["p_value"] == pytest.approx(
        scipy_stats.chisquare(list(counts.values())).pvalue, abs=1e-9
    )
    metrics = {m["metric"]: m for m in report["metrics"]}

    # Per-arm means are exactly what was sent.
    for key in ("orders", "revenue", "views", "signups"):
        arms = {a["variant"]: a for a in metrics[key]["arms"]}
        for variant in ("control", "bold"):
            assert arms[variant]["visitors"] == counts[variant]
            assert arms[variant]["mean"] == pytest.approx(np.mean(truth[variant][key]), abs=1e-9)

    # Conversion: the two-proportion z-test of statsmodels.
    orders = metrics["orders"]["comparisons"][0]
    successes = [sum(truth[v]["orders"]) for v in ("bold", "control")]
    _, p_value = proportions_ztest(successes, [counts["bold"], counts["control"]])
    assert orders["p_value"] == pytest.approx(p_value, abs=1e-6)
    assert orders["effect"] == pytest.approx(
        np.mean(truth["bold"]["orders"]) - np.mean(truth["control"]["orders"]), abs=1e-9
    )
    assert 0 <= orders["chance_to_beat_control"] <= 1
    assert orders["sequential_ci_low"] <= orders["ci_low"]  # always-valid is wider
    assert orders["sequential_ci_high"] >= orders["ci_high"]

    # Revenue (no useful covariate: nobody bought before): Welch, as scipy computes it.
    revenue = metrics["revenue"]["comparisons"][0]
    welch = scipy_stats.ttest_ind(
        truth["bold"]["revenue"], truth["control"]["revenue"], equal_var=False
    )
    assert revenue["cuped"] is False
    assert revenue["p_value"] == pytest.approx(welch.pvalue, abs=1e-6)

    # Views had views before exposure: CUPED applies and matches the raw-array computation.
    views = metrics["views"]["comparisons"][0]
    assert views["cuped"] is True
    y = np.asarray(truth["control"]["views"] + truth["bold"]["views"], dtype=float)
    x = np.asarray(truth["control"]["pre_views"] + truth["bold"]["pre_views"], dtype=float)
    theta = np.cov(y, x)[0, 1] / np.var(x, ddof=1)
    adjusted = y - theta * (x - x.mean())
    n_control = counts["control"]
    reference = scipy_stats.ttest_ind(adjusted[n_control:], adjusted[:n_control], equal_var=False)
    assert views["p_value"] == pytest.approx(reference.pvalue, abs=1e-6)

    # The funnel metric goes through the funnels engine: exposure, then both steps in order.
    signups = {a["variant"]: a for a in metrics["signups"]["arms"]}
    assert signups["bold"]["mean"] == pytest.approx(np.mean(truth["bold"]["signups"]))

    # Ratio and guardrail metrics are reported; Holm adjusts across all comparisons.
    ratio = metrics["revenue-per-view"]["comparisons"][0]
    assert ratio["effect"] is not None
    ratio_arms = {a["variant"]: a["mean"] for a in metrics["revenue-per-view"]["arms"]}
    for variant in ("control", "bold"):  # the ratio of sums, whatever single visitors did
        expected = sum(truth[variant]["revenue"]) / sum(truth[variant]["views"])
        assert ratio_arms[variant] == pytest.approx(expected)
    assert metrics["refunds"]["guardrail"] is True
    for metric in metrics.values():
        for comparison in metric["comparisons"]:
            if comparison["p_value"] is not None:
                assert comparison["adjusted_p_value"] >= comparison["p_value"]


def test_results_of_an_unknown_experiment_are_404(
    client: TestClient, secret: dict[str, str]
) -> None:
    response = client.get("/v1/experiments/nope/results", headers=secret)
    assert response.status_code == 404


def test_experiment_lifecycle_rules(
    client: TestClient, secret: dict[str, str], experiment: dict[str, Any]
) -> None:
    frozen = client.patch("/v1/experiments/checkout-copy", json={"traffic": 10}, headers=secret)
    assert frozen.status_code == 409
    renamed = client.patch(
        "/v1/experiments/checkout-copy", json={"name": "Bold copy"}, headers=secret
    )
    assert renamed.json()["name"] == "Bold copy"
    bad_ratio = client.patch(
        "/v1/experiments/checkout-copy",
        json={"metrics": [{"key": "r", "kind": "ratio", "numerator": "a", "denominator": "b"}]},
        headers=secret,
    )
    assert bad_ratio.status_code == 422
    stopped = client.post("/v1/experiments/checkout-copy/stop", headers=secret)
    assert stopped.json()["status"] == "stopped"
    again = client.post("/v1/experiments/checkout-copy/start", headers=secret)
    assert again.status_code == 409
