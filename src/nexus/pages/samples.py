"""A ready-made hosted funnel (landing -> offer -> checkout) with an experiment's variants,
copy for two adaptation tones and a help block for struggling visitors, and the adaptations
that go with it. ``nexus demo`` serves it; tests and benchmarks render it."""

from __future__ import annotations

from typing import Any

DEMO_SLUG = "spring-sale"
HEADLINE_EXPERIMENT = "landing-headline"
# GoEmotions labels (the edge model's ``dominant``) of a visitor who is struggling.
STRUGGLING = [
    "confusion",
    "annoyance",
    "anger",
    "disappointment",
    "disapproval",
    "nervousness",
    "fear",
    "sadness",
    "embarrassment",
    "disgust",
]
CALM_TOKENS = {
    "--nexus-bg": "#eef6f3",
    "--nexus-accent": "#23665a",
    "--nexus-accent-fg": "#ffffff",
    "--nexus-surface": "#ffffff",
    "--nexus-fg": "#1b2b27",
    "--nexus-transition": "0.6s",
}
WARM_TOKENS = {
    "--nexus-bg": "#fbf6ef",
    "--nexus-accent": "#8a4b12",
    "--nexus-accent-fg": "#ffffff",
    "--nexus-surface": "#ffffff",
    "--nexus-fg": "#2b2118",
}


def _block(
    block_id: str,
    kind: str,
    content: dict[str, Any],
    *,
    tones: dict[str, dict[str, Any]] | None = None,
    variants: list[dict[str, Any]] | None = None,
    only_tones: list[str] | None = None,
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": block_id,
        "kind": kind,
        "variants": variants or [{"key": "a", "content": content, "tones": tones or {}}],
    }
    if only_tones is not None:
        document["only_tones"] = only_tones
    return document


def _help(text: str) -> dict[str, Any]:
    return _block(
        "help",
        "body",
        {"text": text},
        only_tones=["calm", "reassuring"],
    )


def _chat() -> dict[str, Any]:
    return _block(
        "chat",
        "chat",
        {"label": "Questions? Ask us anything", "placeholder": "Type your message"},
        tones={"calm": {"label": "We are here to help - ask us anything"}},
    )


def demo_funnel() -> dict[str, Any]:
    """The demo's hosted funnel, as ``POST /v1/hosted-funnels`` takes it."""
    landing = {
        "title": "Spring sale",
        "experiment": HEADLINE_EXPERIMENT,
        "blocks": [
            _block(
                "headline",
                "headline",
                {},
                variants=[
                    {
                        "key": "control",
                        "content": {"text": "Everything for your garden, 30% off"},
                        "tones": {
                            "calm": {"text": "Take your time: the spring sale runs all month"},
                            "reassuring": {"text": "Free returns on everything in the sale"},
                        },
                    },
                    {
                        "key": "urgency",
                        "content": {"text": "48 hours only: 30% off the whole garden range"},
                        "tones": {
                            "calm": {"text": "Take your time: the spring sale runs all month"},
                            "reassuring": {"text": "Free returns on everything in the sale"},
                        },
                    },
                ],
            ),
            _help(
                "Need a hand? Shipping is free over 50 EUR, and you can return anything "
                "within 30 days. Write to us below and a person will answer."
            ),
            _block(
                "intro",
                "body",
                {"text": "Tools, seeds and planters picked by our gardeners, shipped in 2 days."},
                tones={"calm": {"text": "No rush: prices stay the same until the end of May."}},
            ),
            _block(
                "quote",
                "testimonial",
                {"quote": "Arrived quickly and the planters are lovely.", "author": "Mia, Berlin"},
            ),
            _chat(),
            _block(
                "next",
                "cta",
                {"label": "See the offer", "href": "./offer", "goal_event": "Offer Viewed"},
                tones={"calm": {"label": "Have a look at the offer"}},
            ),
        ],
    }
    offer = {
        "title": "Your spring offer",
        "blocks": [
            _block("headline", "headline", {"text": "Pick your bundle"}),
            _help("Not sure which bundle? The Starter kit suits most balconies."),
            _block(
                "plans",
                "price_table",
                {
                    "plans": [
                        {
                            "name": "Starter",
                            "price": 29,
                            "features": ["3 planters", "Seed mix"],
                            "cta_label": "Choose Starter",
                        },
                        {
                            "name": "Gardener",
                            "price": 59,
                            "features": ["6 planters", "Tool set", "Seed mix"],
                            "cta_label": "Choose Gardener",
                        },
                    ]
                },
            ),
            _block(
                "faq",
                "faq",
                {
                    "items": [
                        {
                            "question": "How much is shipping?",
                            "answer": "Free over 50 EUR, otherwise 4.90 EUR.",
                        },
                        {
                            "question": "Can I return it?",
                            "answer": "Yes, within 30 days, free of charge.",
                        },
                    ]
                },
            ),
            _chat(),
            _block(
                "next",
                "cta",
                {"label": "Go to checkout", "href": "./checkout", "goal_event": "Checkout Started"},
                tones={"calm": {"label": "Continue when you are ready"}},
            ),
        ],
    }
    checkout = {
        "title": "Checkout",
        "blocks": [
            _block("headline", "headline", {"text": "Almost done"}),
            _help("Questions before you buy? Ask below: we answer within minutes."),
            _block(
                "order",
                "form",
                {
                    "fields": [
                        {"name": "name", "label": "Full name", "required": True},
                        {"name": "email", "label": "E-mail", "type": "email", "required": True},
                        {"name": "gift", "label": "This is a gift", "type": "checkbox"},
                    ],
                    "submit_label": "Place order",
                    "event": "Order Completed",
                },
                tones={"calm": {"submit_label": "Place order - free returns"}},
            ),
            _chat(),
        ],
    }
    return {
        "slug": DEMO_SLUG,
        "name": "Spring sale",
        "goal_event": "Order Completed",
        "steps": [
            {"slug": "landing", "page": landing},
            {"slug": "offer", "page": offer},
            {"slug": "checkout", "page": checkout},
        ],
    }


def demo_adaptations() -> list[dict[str, Any]]:
    """The adaptations of the demo, as ``POST /v1/adaptations`` takes them: two for
    struggling visitors (their trigger reads the emotion), two for everyone else. The keys
    are the visitor simulator's (``nexus.experiments.simulation.ADAPTATIONS``), so its
    ground truth judges what the bandit serves."""
    struggling = [{"attribute": "emotion.dominant", "op": "in", "value": STRUGGLING}]
    return [
        {
            "key": "calm",
            "name": "Calm and helpful",
            "tone": "calm",
            "tokens": CALM_TOKENS,
            "copy": {"cta": "Take your time", "headline": "We're here to help"},
            "when": struggling,
            "emotion_profile": {"valence": -0.3, "arousal": 0.4},
        },
        {
            "key": "reassuring",
            "name": "Warm reassurance",
            "tone": "reassuring",
            "tokens": WARM_TOKENS,
            "copy": {"cta": "Try it risk-free", "headline": "30-day returns, no questions"},
            "when": struggling,
            "emotion_profile": {"valence": -0.2, "fear": 0.4},
        },
        {
            "key": "neutral",
            "name": "Standard",
            "tone": "neutral",
            "copy": {"cta": "Buy now"},
        },
        {
            "key": "urgent",
            "name": "Urgent",
            "tone": "urgent",
            "tokens": {"--nexus-accent": "#b42318", "--nexus-accent-fg": "#ffffff"},
            "copy": {"cta": "Grab yours today", "headline": "Only a few left"},
        },
    ]


def demo_experiment() -> dict[str, Any]:
    """The landing page's headline test, as ``POST /v1/experiments`` takes it."""
    return {
        "key": HEADLINE_EXPERIMENT,
        "name": "Landing headline",
        "layer": "pages",
        "variants": [{"key": "control", "weight": 50}, {"key": "urgency", "weight": 50}],
        "metrics": [{"key": "orders", "kind": "conversion", "event": "Order Completed"}],
    }
