"""A small seeded simulator of a funnel site's traffic: people and several kinds of bots.

People come in one to a few sessions, view a handful of pages each along a funnel
(landing → features/pricing → checkout, with back-and-forth and detours to the blog), think
for a lognormal time between pages (median 20 s, seconds to minutes), and their browser's SDK
sends tracked actions (no path) now and then, some of them right after the page view.

Bots:
* ``crawler``: declares itself in its user agent, walks many distinct pages;
* ``headless``: a browser user agent, walks many distinct pages at a steady rate (a loop with a
  little jitter);
* ``hammer``: one endpoint at a fixed interval (a monitoring or price-scraping script);
* ``careful``: a browser user agent, distinct pages, human-like rate but jittered-regular
  timing (a loop with ``sleep(base * normal(1, 0.2))``).

Everything is drawn from one ``numpy.random.Generator`` seeded by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BROWSER_USER_AGENTS = (
    # Chrome on Windows, macOS, Linux
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/125.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    # Edge
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36 Edg/126.0.2592.68",
    # Firefox on Windows, macOS, Linux
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.5; rv:127.0) Gecko/20100101 Firefox/127.0",
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0",
    # Safari on macOS, iPhone, iPad
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1",
    # Android: Chrome, Samsung Internet, Firefox; a Cubot phone (contains "bot")
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Android 14; Mobile; rv:127.0) Gecko/127.0 Firefox/127.0",
    "Mozilla/5.0 (Linux; Android 9; CUBOT_X19) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/114.0.5735.196 Mobile Safari/537.36",
    # Chrome on iOS, Opera, in-app browsers
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) CriOS/126.0.6478.54 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/125.0.0.0 Safari/537.36 OPR/111.0.0.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148 Instagram 335.0.0.0.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Version/4.0 Chrome/126.0.6478.71 Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/471.0.0.35.80;]",
)

CRAWLER_USER_AGENTS = (
    (
        "Googlebot",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    ),
    (
        "Googlebot",
        "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/126.0.6478.126 Mobile Safari/537.36 "
        "(compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    ),
    (
        "Bingbot",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; "
        "+http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36",
    ),
    ("DuckDuckBot", "DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)"),
    (
        "Baiduspider",
        "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
    ),
    ("YandexBot", "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)"),
    ("AhrefsBot", "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)"),
    ("SemrushBot", "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)"),
    (
        "facebookexternalhit",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    ),
    ("Twitterbot", "Twitterbot/1.0"),
    (
        "LinkedInBot",
        "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
    ),
    ("Slackbot", "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"),
    (
        "GPTBot",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; "
        "+https://openai.com/gptbot)",
    ),
    (
        "ClaudeBot",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; "
        "+claudebot@anthropic.com)",
    ),
    ("CCBot", "CCBot/2.0 (https://commoncrawl.org/faq/)"),
    (
        "PerplexityBot",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; PerplexityBot/1.0; "
        "+https://perplexity.ai/perplexitybot)",
    ),
    (
        "Bytespider",
        "Mozilla/5.0 (Linux; Android 5.0) AppleWebKit/537.36 (KHTML, like Gecko) Mobile "
        "Safari/537.36 (compatible; Bytespider; spider-feedback@bytedance.com)",
    ),
    ("curl", "curl/8.5.0"),
    ("Wget", "Wget/1.21.4"),
    ("python-requests", "python-requests/2.32.3"),
    ("python-httpx", "python-httpx/0.27.0"),
    ("aiohttp", "Python/3.11 aiohttp/3.9.5"),
    ("Go-http-client", "Go-http-client/1.1"),
    ("Java/", "Java/17.0.11"),
    ("okhttp", "okhttp/4.12.0"),
    (
        "HeadlessChrome",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/126.0.6478.126 Safari/537.36",
    ),
    (
        "PhantomJS",
        "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) "
        "PhantomJS/2.1.1 Safari/538.1",
    ),
    ("Scrapy", "Scrapy/2.11.2 (+https://scrapy.org)"),
)

FUNNEL = ("/", "/features", "/pricing", "/checkout", "/checkout/payment", "/thank-you")
SIDE_PAGES = ("/about", "/faq", "/contact", "/testimonials")
BLOG = tuple(f"/blog/post-{i}" for i in range(30))
DOCS = tuple(f"/docs/section-{i}" for i in range(40))
PRODUCTS = tuple(f"/products/item-{i}?ref=list" for i in range(150))
SITE = FUNNEL + SIDE_PAGES + BLOG + DOCS + PRODUCTS
HAMMER_TARGETS = ("/pricing", "/api/v1/decide", "/checkout", "/products/item-7", "/")


@dataclass(frozen=True)
class Event:
    """One event of one visitor."""

    visitor: str
    at: float
    path: str | None
    user_agent: str | None


@dataclass
class Visitor:
    """A simulated visitor: its kind and its events in time order."""

    id: str
    kind: str  # "human", "crawler", "headless", "hammer", "careful"
    declared: str | None = None  # the crawler token its user agent declares
    events: list[Event] = field(default_factory=list)

    @property
    def is_bot(self) -> bool:
        return self.kind != "human"


def _human(rng: np.random.Generator, vid: str, start: float) -> Visitor:
    ua: str | None = BROWSER_USER_AGENTS[int(rng.integers(len(BROWSER_USER_AGENTS)))]
    if rng.random() < 0.03:  # privacy proxies and some in-app webviews strip the header
        ua = None
    visitor = Visitor(vid, "human")
    t = start
    sessions = int(rng.geometric(0.6))  # mostly one, sometimes two or three
    for _ in range(sessions):
        pages = int(rng.integers(2, 13))
        stage = 0  # position along the funnel
        history: list[str] = []
        for _ in range(pages):
            roll = rng.random()
            if history and roll < 0.2:
                path = history[-2] if len(history) >= 2 else history[-1]  # back
                stage = max(0, stage - 1)
            elif roll < 0.35:
                path = BLOG[int(rng.integers(len(BLOG)))]
            elif roll < 0.45:
                path = SIDE_PAGES[int(rng.integers(len(SIDE_PAGES)))]
            elif roll < 0.5:
                path = history[-1] if history else FUNNEL[0]  # reload
            else:
                path = FUNNEL[stage]
                stage = min(len(FUNNEL) - 1, stage + int(rng.integers(0, 2)) + (stage == 0))
            if rng.random() < 0.3:
                path += "?utm_source=newsletter"
            history.append(path)
            visitor.events.append(Event(vid, t, path, ua))
            if rng.random() < 0.15:  # the SDK's auto-tracked action right after a page view
                visitor.events.append(Event(vid, t + rng.uniform(0.02, 0.12), None, ua))
            think = float(np.clip(rng.lognormal(np.log(20.0), 1.1), 1.0, 1800.0))
            if rng.random() < 0.5:  # a click, a scroll milestone, a form field
                visitor.events.append(Event(vid, t + think * rng.uniform(0.1, 0.9), None, ua))
            t += think
        t += float(rng.lognormal(np.log(6 * 3600.0), 1.0))  # until the next session
    return visitor


def _walker(
    rng: np.random.Generator,
    vid: str,
    kind: str,
    start: float,
    n: int,
    interval: float,
    jitter: float,
    ua: str | None,
    declared: str | None = None,
) -> Visitor:
    visitor = Visitor(vid, kind, declared)
    order = rng.permutation(len(SITE))
    t = start
    for i in range(n):
        path = SITE[int(order[i % len(SITE)])]
        visitor.events.append(Event(vid, t, path, ua))
        t += max(0.01, interval * (1.0 + jitter * float(rng.standard_normal())))
    return visitor


def _hammer(rng: np.random.Generator, vid: str, start: float, n: int) -> Visitor:
    visitor = Visitor(vid, "hammer")
    target = HAMMER_TARGETS[int(rng.integers(len(HAMMER_TARGETS)))]
    interval = float(rng.choice([0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0]))
    ua = None if rng.random() < 0.3 else BROWSER_USER_AGENTS[0]
    t = start
    for _ in range(n):
        visitor.events.append(Event(vid, t, target, ua))
        t += interval * (1.0 + 0.02 * float(rng.standard_normal()))
    return visitor


@dataclass
class Traffic:
    """Simulated visitors, and all their events merged in time order."""

    visitors: list[Visitor]
    events: list[Event]

    def of_kind(self, *kinds: str) -> list[Visitor]:
        return [v for v in self.visitors if v.kind in kinds]


def simulate(
    *,
    seed: int,
    humans: int = 400,
    crawlers: int = 30,
    headless: int = 25,
    hammers: int = 20,
    careful: int = 20,
    bot_events: int = 40,
    hours: float = 8.0,
) -> Traffic:
    """Simulate ``hours`` of traffic; every bot sends ``bot_events`` events."""
    rng = np.random.default_rng(seed)
    horizon = hours * 3600.0
    visitors: list[Visitor] = []
    for i in range(humans):
        visitors.append(_human(rng, f"human-{i}", rng.uniform(0, horizon)))
    for i in range(crawlers):
        token, ua = CRAWLER_USER_AGENTS[i % len(CRAWLER_USER_AGENTS)]
        interval = float(rng.uniform(0.5, 20.0))
        visitors.append(
            _walker(
                rng,
                f"crawler-{i}",
                "crawler",
                rng.uniform(0, horizon),
                bot_events,
                interval,
                0.3,
                ua,
                token,
            )
        )
    for i in range(headless):
        ua = BROWSER_USER_AGENTS[int(rng.integers(len(BROWSER_USER_AGENTS)))]
        interval = float(rng.uniform(0.3, 6.0))
        visitors.append(
            _walker(
                rng,
                f"headless-{i}",
                "headless",
                rng.uniform(0, horizon),
                bot_events,
                interval,
                float(rng.uniform(0.0, 0.15)),
                ua,
            )
        )
    for i in range(hammers):
        visitors.append(_hammer(rng, f"hammer-{i}", rng.uniform(0, horizon), bot_events))
    for i in range(careful):
        ua = BROWSER_USER_AGENTS[int(rng.integers(len(BROWSER_USER_AGENTS)))]
        interval = float(rng.uniform(8.0, 30.0))
        visitors.append(
            _walker(
                rng,
                f"careful-{i}",
                "careful",
                rng.uniform(0, horizon),
                bot_events,
                interval,
                float(rng.uniform(0.1, 0.3)),
                ua,
            )
        )
    events = sorted((e for v in visitors for e in v.events), key=lambda e: (e.at, e.visitor))
    return Traffic(visitors, events)
