"""Funnel self-monitoring: regressions are caught, named and explained; clean traffic is quiet."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from nexus.core.errors import InvalidInput
from nexus.evolution.monitor import (
    Alert,
    AlertStatus,
    Bucket,
    Direction,
    FunnelModel,
    Metric,
    Monitor,
    MonitorInputError,
    Move,
    Regression,
    Settings,
    Share,
    explain,
    hhmm,
    simulate_traffic,
)

START = 1_740_960_000.0  # 2025-03-03 00:00 UTC
HOUR = 3600.0
BUSY = FunnelModel(visitors_per_hour=(10_000.0, 30_000.0))


def steady(
    start: float,
    buckets: int,
    *,
    b_advanced: int = 50,
    from_bucket: int = 0,
) -> Iterator[Bucket]:
    """Deterministic checkout traffic: 100 visitors a bucket per variant, half move on; from
    bucket ``from_bucket`` on, variant B moves on ``b_advanced`` times out of 100."""
    for i in range(buckets):
        for variant in ("A", "B"):
            advanced = b_advanced if variant == "B" and i >= from_bucket else 50
            yield Bucket(
                start=start + 300 * i,
                step="checkout",
                dims={"variant": variant},
                entered=100,
                advanced=advanced,
                seconds=6000.0,
                frustration_sum=14.0,
                frustration_n=70,
            )


SMALL = Settings(min_baseline_seconds=3600, guard_seconds=600, baseline_seconds=7200)


def test_clean_traffic_raises_no_alert() -> None:
    buckets = simulate_traffic(start=START, hours=12, seed=3)
    assert Monitor().observe(buckets) == []


def test_deterministic_drop_is_attributed_to_its_variant() -> None:
    monitor = Monitor(SMALL)
    assert monitor.observe(steady(START, 24)) == []
    alerts = monitor.observe(steady(START + 24 * 300, 3, b_advanced=30))
    assert len(alerts) == 1
    alert = alerts[0]
    assert (alert.status, alert.step, alert.metric, alert.direction) == (
        AlertStatus.OPEN,
        "checkout",
        Metric.CONVERSION,
        Direction.DOWN,
    )
    assert alert.scope == (("variant", "B"),)
    assert alert.since == START + 24 * 300
    assert alert.at == START + 26 * 300  # the second bad bucket's end
    assert alert.baseline == pytest.approx(0.5, abs=1e-3)
    assert alert.current == pytest.approx(0.3)
    assert alert.relative_change == pytest.approx(-0.4, abs=1e-2)
    assert alert.statistic >= alert.threshold
    culprit = alert.culprit("variant")
    assert culprit is not None
    assert culprit.value == "B"
    assert culprit.moved == pytest.approx(40.0, abs=0.1)  # 2 buckets x (50 expected - 30)
    assert culprit.share == pytest.approx(1.0, abs=1e-3)
    assert culprit.traffic_share == pytest.approx(0.5)
    assert explain(alert) == (
        "Checkout conversion in variant B fell 40% since 02:00 UTC (50.0% → 30.0%); "
        "100% of the drop is in variant B."
    )


def test_a_lasting_shift_expires_into_the_new_baseline() -> None:
    monitor = Monitor(
        Settings(
            min_baseline_seconds=3600,
            guard_seconds=600,
            baseline_seconds=7200,
            max_open_seconds=HOUR,
        )
    )
    monitor.observe(steady(START, 24))
    alerts = monitor.observe(steady(START + 24 * 300, 20, b_advanced=30))
    assert [a.status for a in alerts] == [AlertStatus.OPEN, AlertStatus.EXPIRED]
    opened, expired = alerts
    assert expired.at == opened.at + HOUR
    assert expired.current == pytest.approx(0.3)
    assert monitor.open_alerts == ()
    assert explain(expired) == (
        "Checkout conversion in variant B has stayed down since 02:00 UTC (50.0% → 30.0%); "
        "after 1 h 10 min it is taken as the new baseline."
    )


def test_simulated_checkout_drop_is_caught_named_and_explained() -> None:
    at = START + 5 * HOUR
    regression = Regression(at=at, step="checkout", drop=0.3, variant="B")
    buckets = simulate_traffic(start=START, hours=6, seed=7, model=BUSY, regressions=[regression])
    alerts = Monitor().observe(buckets)
    assert [a.step for a in alerts] == ["checkout"]
    alert = alerts[0]
    assert at < alert.at <= at + 30 * 60
    assert abs(alert.since - at) <= 15 * 60
    culprit = alert.culprit("variant")
    assert culprit is not None
    assert culprit.value == "B"
    text = explain(alert)
    assert text.startswith("Checkout ")
    assert "variant B" in text
    assert f"since {hhmm(alert.since)}" in text


def test_an_all_variant_drop_names_no_variant() -> None:
    at = START + 5 * HOUR
    regression = Regression(at=at, step="offer", drop=0.35)
    buckets = simulate_traffic(start=START, hours=6, seed=11, model=BUSY, regressions=[regression])
    alerts = Monitor().observe(buckets)
    assert [a.step for a in alerts] == ["offer"]
    assert alerts[0].culprit("variant") is None
    assert "variant" not in explain(alerts[0])


def test_one_alert_per_ongoing_regression_then_recovery_and_a_new_alert() -> None:
    first = Regression(at=START + 5 * HOUR, step="landing", drop=0.4, until=START + 7 * HOUR)
    second = Regression(at=START + 10 * HOUR, step="landing", drop=0.4, variant="A")
    buckets = simulate_traffic(
        start=START, hours=11, seed=5, model=BUSY, regressions=[first, second]
    )
    monitor = Monitor()
    alerts = monitor.observe([b for b in buckets if b.start < first.until])
    assert [(a.step, a.status) for a in alerts] == [("landing", AlertStatus.OPEN)]
    assert monitor.open_alerts == (alerts[0],)  # two hours on: still the one alert

    later = monitor.observe([b for b in buckets if b.start >= first.until])
    assert [(a.step, a.status) for a in later] == [
        ("landing", AlertStatus.RECOVERED),
        ("landing", AlertStatus.OPEN),
    ]
    recovered, again = later
    assert first.until < recovered.at <= first.until + HOUR
    assert recovered.since == alerts[0].since
    assert explain(recovered).startswith("Landing conversion recovered by ")
    assert again.at > second.at
    named = again.culprit("variant")
    assert named is not None
    assert named.value == "A"


def _alert(**changes: object) -> Alert:
    fields: dict[str, object] = {
        "status": AlertStatus.OPEN,
        "step": "checkout",
        "metric": Metric.CONVERSION,
        "direction": Direction.DOWN,
        "scope": (),
        "since": START + 14 * HOUR,
        "at": START + 14.5 * HOUR,
        "baseline": 0.6,
        "current": 0.42,
        "relative_change": -0.3,
        "statistic": 12.0,
        "threshold": 11.7,
        "attribution": (
            Share("variant", "B", 0.8, 24.0, 0.5, 0.6, 0.36, -0.4, 3.5, True),
            Share("variant", "A", 0.2, 6.0, 0.5, 0.6, 0.54, -0.1, -3.5, False),
        ),
        "correlated": (
            Move(Metric.FRUSTRATION, 0.2, 0.236, 0.18, 3.1, True),
            Move(Metric.TIME_ON_STEP, 90.0, 91.0, 0.011, 0.2, False),
        ),
    }
    fields.update(changes)
    return Alert(**fields)  # type: ignore[arg-type]


def test_explain_formats_the_example_sentence() -> None:
    assert explain(_alert()) == (
        "Checkout conversion fell 30% since 14:00 UTC (60.0% → 42.0%); frustration is up 18%; "
        "80% of the drop is in variant B."
    )


def test_explain_without_a_culprit_and_for_other_metrics() -> None:
    spread = (Share("device", "mobile", 0.55, 5.0, 0.55, 0.2, 0.25, 0.25, 0.4, False),)
    text = explain(
        _alert(
            metric=Metric.FRUSTRATION,
            direction=Direction.UP,
            step="order_form",
            scope=(("device", "mobile"),),
            baseline=0.2,
            current=0.25,
            relative_change=0.25,
            attribution=spread,
            correlated=(Move(Metric.CONVERSION, 0.6, 0.5, -0.1667, -3.0, True),),
        )
    )
    assert text == (
        "Order form frustration in device mobile rose 25% since 14:00 UTC (0.20 → 0.25); "
        "conversion is down 17%; no single breakdown value accounts for the rise "
        "(largest: device mobile, 55%)."
    )
    timed = explain(
        _alert(
            metric=Metric.TIME_ON_STEP,
            direction=Direction.UP,
            baseline=62.0,
            current=87.0,
            relative_change=0.403,
            attribution=(),
            correlated=(),
        )
    )
    assert timed == "Checkout time on step rose 40% since 14:00 UTC (62 s → 87 s)."
    expired = explain(_alert(status=AlertStatus.EXPIRED, at=START + 40 * HOUR))
    assert expired == (
        "Checkout conversion has stayed down since 14:00 UTC (60.0% → 42.0%); after 26 h it "
        "is taken as the new baseline."
    )
    assert hhmm(START + 9 * HOUR + 5 * 60) == "09:05 UTC"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"advanced": 101}, "advanced"),
        ({"entered": -1}, "entered"),
        ({"entered": 1.5}, "entered"),
        ({"seconds": math.nan}, "seconds"),
        ({"frustration_n": 101}, "frustration_n"),
        ({"frustration_sum": 71.0}, "frustration_sum"),
        ({"dims": {"variant": ""}}, "dims"),
        ({"step": ""}, "step"),
        ({"start": math.inf}, "start"),
    ],
)
def test_bad_buckets_are_rejected(changes: dict[str, object], field: str) -> None:
    fields: dict[str, object] = {
        "start": START,
        "step": "checkout",
        "dims": {"variant": "A"},
        "entered": 100,
        "advanced": 50,
        "seconds": 10.0,
        "frustration_sum": 7.0,
        "frustration_n": 70,
    }
    fields.update(changes)
    with pytest.raises(MonitorInputError) as caught:
        Bucket(**fields)  # type: ignore[arg-type]
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, InvalidInput)
    assert caught.value.errors[0].loc == (field,)


def test_out_of_order_and_duplicate_buckets_are_rejected() -> None:
    monitor = Monitor()
    monitor.observe(steady(START, 2))
    with pytest.raises(MonitorInputError, match="not after"):
        monitor.observe(steady(START + 300, 1))
    twice = [*steady(START + 900, 1), *steady(START + 900, 1)]
    with pytest.raises(MonitorInputError, match="duplicate"):
        monitor.observe(twice)
    with pytest.raises(MonitorInputError):
        monitor.observe(["not a bucket"])  # type: ignore[list-item]


@pytest.mark.parametrize(
    "changes",
    [
        {"bucket_seconds": 0},
        {"threshold": -1.0},
        {"conversion_shift": 1.0},
        {"min_baseline_visitors": 0},
        {"attribution_alpha": 0.0},
        {"min_baseline_seconds": 10 * HOUR},
        {"false_alarms_per_day": 0},
    ],
)
def test_bad_settings_are_rejected(changes: dict[str, object]) -> None:
    with pytest.raises(MonitorInputError):
        Settings(**changes)  # type: ignore[arg-type]


def test_threshold_follows_the_false_alarm_target() -> None:
    settings = Settings(false_alarms_per_day=0.2)
    assert settings.alarm_threshold(81) == pytest.approx(math.log(81 * 288 / 0.2))
    assert Settings(threshold=8.0).alarm_threshold(81) == 8.0


def test_bad_simulation_parameters_are_rejected() -> None:
    with pytest.raises(MonitorInputError):
        Regression(at=START, step="checkout", drop=1.5)
    with pytest.raises(MonitorInputError):
        simulate_traffic(
            start=START, hours=1, seed=0, regressions=[Regression(START, "order", 0.3)]
        )
    with pytest.raises(MonitorInputError):
        simulate_traffic(
            start=START, hours=1, seed=0, regressions=[Regression(START, "offer", 0.3, "C")]
        )


def test_simulation_is_seeded_and_plausible() -> None:
    one = simulate_traffic(start=START, hours=2, seed=1)
    assert one == simulate_traffic(start=START, hours=2, seed=1)
    landing = sum(b.entered for b in one if b.step == "landing")
    assert 2_000 <= landing <= 6_000  # 1,000-3,000 an hour
    rate = sum(b.advanced for b in one if b.step == "landing") / landing
    assert 0.35 < rate < 0.55
