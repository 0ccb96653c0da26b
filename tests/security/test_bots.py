"""Bot detection: the user-agent pattern, the behaviour features, the detector's bookkeeping,
and detection and false-positive rates on simulated traffic (tests/security/bot_traffic.py)."""

from __future__ import annotations

import doctest
import random
import re
from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nexus.security import bots
from nexus.security.bots import (
    CRAWLER_PATTERN,
    CRAWLER_TOKENS,
    BotDetector,
    BotVerdict,
    behaviour_features,
    is_known_crawler,
)
from tests.security.bot_traffic import (
    BROWSER_USER_AGENTS,
    CRAWLER_USER_AGENTS,
    Traffic,
    simulate,
)

CHROME = BROWSER_USER_AGENTS[0]
DISGUISED = ("headless", "hammer", "careful")

# ---------------------------------------------------------------------------------------------
# user agents
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("token", "user_agent"), CRAWLER_USER_AGENTS)
def test_declared_crawlers_are_named_by_their_token(token: str, user_agent: str) -> None:
    assert is_known_crawler(user_agent) == token


@pytest.mark.parametrize(
    ("user_agent", "token"),
    [
        ("GOOGLEBOT/2.1", "Googlebot"),
        ("Python-urllib/3.11", "python-urllib"),
        (
            "Mozilla/5.0 (compatible; Amazonbot/0.1; +https://developer.amazon.com/support/amazonbot)",
            "Amazonbot",
        ),
        ("Mozilla/5.0 (compatible; MyCompanyBot/1.0; +https://example.com)", "bot"),
        ("site-crawler 0.3", "crawler"),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/120.0.0.0 Safari/537.36 Selenium",
            "Selenium",
        ),
        ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome-Lighthouse", "Lighthouse"),
        ("PostmanRuntime/7.39.0", "PostmanRuntime"),
        ("Java/1.8.0_402", "Java/"),
    ],
)
def test_other_automation_is_recognised(user_agent: str, token: str) -> None:
    assert is_known_crawler(user_agent) == token


def test_a_specific_token_wins_over_a_generic_word_before_it() -> None:
    # "spider" comes first in the string, "Googlebot" is what it is.
    assert is_known_crawler("spider-compatible (compatible; Googlebot/2.1)") == "Googlebot"
    assert (
        is_known_crawler(
            "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)"
        )
        == "SemrushBot"
    )


@pytest.mark.parametrize("user_agent", BROWSER_USER_AGENTS)
def test_real_browsers_are_not_crawlers(user_agent: str) -> None:
    assert is_known_crawler(user_agent) is None


@pytest.mark.parametrize(
    "user_agent",
    [
        # words that contain a token without being one
        "Mozilla/5.0 (Linux; Android 12; CUBOT KINGKONG 7) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/114.0.0.0 Mobile Safari/537.36",
        "Mozilla/5.0 (Linux; Android 13; moto g power) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/126.0.0.0 Mobile Safari/537.36 Securly/2.0",
        "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/126.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0; WOW64; Trident/7.0; rv:11.0) like Gecko",
    ],
)
def test_near_misses_are_not_crawlers(user_agent: str) -> None:
    assert is_known_crawler(user_agent) is None


@pytest.mark.parametrize("user_agent", [None, "", "   "])
def test_a_missing_user_agent_declares_nothing(user_agent: str | None) -> None:
    assert is_known_crawler(user_agent) is None


def test_every_token_matches_its_own_name() -> None:
    # the canonical name, as a user agent would carry it, is found by the combined pattern
    for name, _ in CRAWLER_TOKENS:
        if name in {"Java/", "Lighthouse"}:
            continue  # their patterns need context: "Java/17", "Chrome-Lighthouse"
        assert is_known_crawler(f"{name}/1.0") == name


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80))
def test_the_combined_pattern_agrees_with_the_tokens_one_by_one(text: str) -> None:
    lowered = text.lower()
    found_alone = any(re.search(pattern, lowered) for _, pattern in CRAWLER_TOKENS)
    assert (CRAWLER_PATTERN.search(lowered) is not None) == found_alone
    assert (is_known_crawler(text) is not None) == found_alone
    assert is_known_crawler(text.upper()) == is_known_crawler(text)


# ---------------------------------------------------------------------------------------------
# behaviour features
# ---------------------------------------------------------------------------------------------


def test_a_fixed_interval_has_no_timing_spread() -> None:
    f = behaviour_features([0.0, 2.0, 4.0, 6.0, 8.0], ["/a"] * 5)
    assert f.timing_cv == 0.0
    assert f.rate_per_minute == pytest.approx(30.0)


def test_one_page_hammered_has_no_entropy() -> None:
    f = behaviour_features([0.0, 1.0, 2.0, 3.0], ["/pricing"] * 4)
    assert (f.path_entropy, f.distinct_pages, f.top_page_share) == (0.0, 1, 1.0)


def test_distinct_pages_have_full_entropy() -> None:
    f = behaviour_features([0.0, 1.0, 2.0, 3.0], ["/a", "/b", "/c", "/d"])
    assert (f.path_entropy, f.distinct_pages, f.top_page_share) == (1.0, 4, 0.25)


def test_tracked_actions_count_for_timing_not_navigation() -> None:
    f = behaviour_features([0.0, 0.05, 10.0, 10.01], ["/a", None, "/b", None])
    assert (f.events, f.page_views, f.distinct_pages) == (4, 2, 2)
    assert f.instant_share == 0.0  # the page-to-page transition took ten seconds


def test_page_views_without_think_time_are_counted() -> None:
    f = behaviour_features([0.0, 0.1, 0.2, 5.0, 5.05], ["/a", "/b", "/c", "/d", "/e"])
    assert f.instant_share == pytest.approx(3 / 4)


def test_too_few_events_measure_nothing() -> None:
    f = behaviour_features([0.0, 1.0], ["/a", "/a"])
    assert (f.rate_per_minute, f.timing_cv) == (0.0, 0.0)


def test_times_and_pages_must_pair_up() -> None:
    with pytest.raises(ValueError, match="equally long"):
        behaviour_features([0.0, 1.0], ["/a"])


events_strategy = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=1e6, allow_nan=False),
        st.one_of(st.none(), st.sampled_from(["/", "/a", "/b", "/c", "/d"])),
    ),
    min_size=0,
    max_size=60,
)


@given(events_strategy, st.randoms(use_true_random=False))
def test_features_are_bounded_and_ignore_input_order(
    events: list[tuple[float, str | None]], rnd: random.Random
) -> None:
    times = [t for t, _ in events]
    pages = [p for _, p in events]
    f = behaviour_features(times, pages)
    assert f.events == len(events)
    assert 0.0 <= f.path_entropy <= 1.0
    assert 0.0 <= f.top_page_share <= 1.0
    assert 0.0 <= f.instant_share <= 1.0
    assert f.timing_cv >= 0.0
    assert f.rate_per_minute >= 0.0
    assert f.distinct_pages == len({p for p in pages if p is not None})
    shuffled = list(events)
    rnd.shuffle(shuffled)
    g = behaviour_features([t for t, _ in shuffled], [p for _, p in shuffled])
    assert g.events == f.events
    assert g.distinct_pages == f.distinct_pages
    assert g.path_entropy == pytest.approx(f.path_entropy)
    assert g.rate_per_minute == pytest.approx(f.rate_per_minute)
    assert g.timing_cv == pytest.approx(f.timing_cv, abs=1e-9)


def test_unit_vector_stays_in_the_unit_cube() -> None:
    f = behaviour_features([0.0, 0.001, 0.002], ["/a", "/b", "/c"])
    assert all(0.0 <= v <= 1.0 for v in f.as_unit_vector(window=50).values())


# ---------------------------------------------------------------------------------------------
# the detector's bookkeeping
# ---------------------------------------------------------------------------------------------


def test_a_declared_crawler_is_conclusive_from_its_first_event() -> None:
    detector = BotDetector()
    verdict = detector.observe("v", at=0.0, path="/", user_agent="curl/8.5.0")
    assert verdict == BotVerdict(1.0, True, ("user-agent:curl",), 1)


def test_a_crawler_verdict_sticks_when_the_user_agent_changes() -> None:
    detector = BotDetector()
    detector.observe("v", at=0.0, path="/", user_agent="python-requests/2.32.3")
    assert detector.observe("v", at=30.0, path="/a", user_agent=CHROME).is_bot


def test_a_missing_user_agent_is_suspicious_but_not_conclusive() -> None:
    verdict = BotDetector().observe("v", at=0.0, path="/", user_agent=None)
    assert verdict.reasons == ("user-agent:missing",)
    assert 0.0 < verdict.score < 0.7
    assert not verdict.is_bot


def test_behaviour_counts_only_after_min_events() -> None:
    detector = BotDetector(min_events=10)
    for i in range(9):  # a fast, regular loop, but only nine events
        verdict = detector.observe("v", at=0.1 * i, path="/", user_agent=CHROME)
        assert verdict.score == 0.0
    verdict = detector.observe("v", at=0.9, path="/", user_agent=CHROME)
    assert verdict.is_bot
    assert "regular-timing:cv=0.00" in verdict.reasons


def _walk(detector: BotDetector, events: int, *, every: float = 2.0) -> BotVerdict:
    """A script walking distinct pages at a fixed interval."""
    for i in range(events):
        verdict = detector.observe("v", at=every * i, path=f"/p{i}", user_agent=CHROME)
    return verdict


def test_one_long_pause_does_not_make_a_script_look_human() -> None:
    detector = BotDetector(window=20)
    assert _walk(detector, 20).is_bot
    after_pause = detector.observe("v", at=38.0 + 600.0, path="/p20", user_agent=CHROME)
    assert after_pause.is_bot
    assert "regular-timing:cv=0.00" in after_pause.reasons


@pytest.mark.parametrize(("hysteresis", "stays_flagged"), [(0.15, True), (0.0, False)])
def test_a_flagged_visitor_is_cleared_only_below_the_hysteresis_band(
    hysteresis: float, stays_flagged: bool
) -> None:
    detector = BotDetector(window=20, threshold=0.8, hysteresis=hysteresis)
    assert _walk(detector, 20).is_bot  # 30 a minute, regular, 20 distinct pages: 0.82
    # a pause lowers the rate and the score (to 0.775), not the regularity or the walk
    after_pause = detector.observe("v", at=38.0 + 90.0, path="/p20", user_agent=CHROME)
    assert after_pause.score < detector.threshold
    assert after_pause.is_bot is stays_flagged


def test_people_are_not_flagged_for_a_handful_of_page_views() -> None:
    detector = BotDetector()
    t = 0.0
    for path, think in [
        ("/", 12.0),
        ("/pricing", 45.0),
        ("/features", 8.0),
        ("/pricing", 70.0),
        ("/checkout", 25.0),
        ("/checkout/payment", 3.0),
        ("/thank-you", 0.0),
    ]:
        verdict = detector.observe("v", at=t, path=path, user_agent=CHROME)
        t += think
    assert not verdict.is_bot


def test_verdict_returns_the_latest_verdict() -> None:
    detector = BotDetector()
    assert detector.verdict("v") is None
    observed = detector.observe("v", at=0.0, path="/", user_agent=CHROME)
    assert detector.verdict("v") == observed


def test_forget_drops_the_visitor() -> None:
    detector = BotDetector()
    detector.observe("v", at=0.0, path="/", user_agent="curl/8.5.0")
    detector.observe("w", at=0.0, path="/", user_agent=CHROME)
    assert detector.forget("v") is True
    assert detector.verdict("v") is None
    assert detector.visitors() == 1
    assert detector.forget("v") is False
    # a forgotten visitor starts afresh: nothing of its crawler user agent is remembered
    assert not detector.observe("v", at=1.0, path="/", user_agent=CHROME).is_bot


def test_least_recently_seen_visitors_are_evicted_beyond_the_bound() -> None:
    detector = BotDetector(max_visitors=3)
    for i, visitor in enumerate(["a", "b", "c"]):
        detector.observe(visitor, at=float(i), path="/", user_agent=CHROME)
    detector.observe("a", at=3.0, path="/", user_agent=CHROME)  # a is now the most recent
    detector.verdict("b")  # reading does not count as seeing
    detector.observe("d", at=4.0, path="/", user_agent=CHROME)
    assert detector.visitors() == 3
    assert detector.verdict("b") is None
    assert all(detector.verdict(v) is not None for v in ["a", "c", "d"])


def test_the_bound_holds_over_a_long_stream() -> None:
    detector = BotDetector(max_visitors=50, window=12, min_events=10)
    for i in range(2000):
        detector.observe(f"v{i % 173}", at=float(i), path=f"/p{i % 7}", user_agent=CHROME)
        assert detector.visitors() <= 50
    # every visitor keeps at most `window` observations
    assert all(len(state.times) <= 12 for state in detector._visitors.values())


def test_a_visitor_keeps_its_latest_events_only() -> None:
    detector = BotDetector(window=12, min_events=10)
    for i in range(30):
        detector.observe("v", at=float(i), path=f"/p{i}", user_agent=CHROME)
    state = detector._visitors["v"]
    assert sorted(state.times) == [float(i) for i in range(18, 30)]
    verdict = detector.verdict("v")
    assert verdict is not None
    assert verdict.events == 30
    assert "rate:60/min" in verdict.reasons  # 11 gaps of a second: measured on the latest 12


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": 0.0},
        {"threshold": 1.5},
        {"min_events": 2},
        {"window": 5, "min_events": 10},
        {"hysteresis": 0.8},
        {"max_visitors": 0},
    ],
)
def test_nonsense_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each setting has its own message
        BotDetector(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("at", [float("nan"), float("inf")])
def test_event_times_must_be_finite(at: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        BotDetector().observe("v", at=at, path="/", user_agent=CHROME)


def test_the_module_examples_run() -> None:
    result = doctest.testmod(bots, raise_on_error=False)
    assert result.attempted > 0
    assert result.failed == 0


# ---------------------------------------------------------------------------------------------
# simulated traffic
# ---------------------------------------------------------------------------------------------


@dataclass
class Replay:
    """What the detector said to each visitor over one simulated stream."""

    traffic: Traffic
    verdicts: dict[str, list[BotVerdict]] = field(default_factory=dict)

    def flagged_at(self, visitor: str, event: int) -> bool:
        return self.verdicts[visitor][event - 1].is_bot

    def ever_flagged(self, visitor: str) -> bool:
        return any(v.is_bot for v in self.verdicts[visitor])


def _replay(traffic: Traffic, *, seed: int = 7) -> Replay:
    detector = BotDetector(seed=seed)
    replay = Replay(traffic)
    for event in traffic.events:
        verdict = detector.observe(
            event.visitor, at=event.at, path=event.path, user_agent=event.user_agent
        )
        replay.verdicts.setdefault(event.visitor, []).append(verdict)
    return replay


@pytest.fixture(scope="module")
def replay() -> Replay:
    # 400 people, 30 declared crawlers, 65 disguised bots, about 11 000 events over 8 hours
    return _replay(
        simulate(
            seed=2024, humans=400, crawlers=30, headless=25, hammers=20, careful=20, bot_events=40
        )
    )


def test_the_simulation_has_enough_of_each(replay: Replay) -> None:
    kinds = Counter(v.kind for v in replay.traffic.visitors)
    assert kinds["human"] >= 300
    assert sum(kinds[k] for k in DISGUISED) >= 60
    # and people are not all one-page visits: most reach the behavioural evidence
    assert sum(len(v.events) >= 10 for v in replay.traffic.of_kind("human")) >= 200


def test_every_declared_crawler_is_flagged_from_its_first_event(replay: Replay) -> None:
    for visitor in replay.traffic.of_kind("crawler"):
        first = replay.verdicts[visitor.id][0]
        assert first.is_bot, visitor.id
        assert first.reasons == (f"user-agent:{visitor.declared}",)


def test_disguised_bots_are_flagged_after_twenty_events(replay: Replay) -> None:
    disguised = replay.traffic.of_kind(*DISGUISED)
    caught = [v.id for v in disguised if replay.flagged_at(v.id, 20)]
    assert len(caught) / len(disguised) >= 0.95, sorted({v.id for v in disguised} - set(caught))


@pytest.mark.parametrize("kind", DISGUISED)
def test_each_kind_of_disguised_bot_is_caught(replay: Replay, kind: str) -> None:
    visitors = replay.traffic.of_kind(kind)
    caught = sum(replay.flagged_at(v.id, 20) for v in visitors)
    assert caught / len(visitors) >= 0.9


def test_few_people_are_ever_flagged(replay: Replay) -> None:
    humans = replay.traffic.of_kind("human")
    flagged = [v.id for v in humans if replay.ever_flagged(v.id)]
    assert len(flagged) / len(humans) <= 0.02, flagged


def test_bot_verdicts_do_not_flap(replay: Replay) -> None:
    # once flagged, a disguised bot stays flagged for the rest of its events
    for visitor in replay.traffic.of_kind(*DISGUISED):
        flags = [v.is_bot for v in replay.verdicts[visitor.id]]
        if True in flags:
            assert all(flags[flags.index(True) :]), visitor.id


def test_the_same_seed_gives_the_same_verdicts() -> None:
    traffic = simulate(seed=99, humans=60, crawlers=3, headless=4, hammers=4, careful=4)
    assert _replay(traffic).verdicts == _replay(traffic).verdicts
    assert simulate(seed=99, humans=60, crawlers=3, headless=4, hammers=4, careful=4).events == (
        traffic.events
    )
