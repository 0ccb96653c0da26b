"""A ready-made evolution campaign for the demo funnel's offer page (``nexus demo`` starts
it; tests use it): headline and call-to-action copy, the FAQ shown or not, the order of the
price table and the FAQ, and a colour theme -- 216 designs."""

from __future__ import annotations

from typing import Any

DEMO_CAMPAIGN = "offer-page"


def demo_campaign(*, seed: int | None = 7) -> dict[str, Any]:
    """The demo campaign, as ``POST /v1/evolution/campaigns`` takes it."""
    return {
        "key": DEMO_CAMPAIGN,
        "funnel": "spring-sale",
        "step": "offer",
        "genes": [
            {
                "name": "headline",
                "target": {"kind": "copy", "block": "headline", "field": "text"},
                "values": [
                    "Pick your bundle",
                    "Choose your spring bundle",
                    "Your garden, ready in one box",
                    "Everything your balcony needs",
                ],
            },
            {
                "name": "cta",
                "target": {"kind": "copy", "block": "next", "field": "label"},
                "values": ["Go to checkout", "Get my bundle", "Continue to payment"],
            },
            {"name": "faq", "target": {"kind": "visible", "block": "faq"}},
            {
                "name": "layout",
                "target": {"kind": "order"},
                "values": [
                    "headline,help,plans,faq,chat,next",
                    "headline,help,faq,plans,chat,next",
                ],
            },
            {
                "name": "theme",
                "target": {"kind": "theme"},
                "values": ["fresh", "earth", "night"],
                "themes": {
                    "fresh": {"--nexus-accent": "#1f6f43", "--nexus-bg": "#f4faf6"},
                    "earth": {"--nexus-accent": "#8a4b12", "--nexus-bg": "#fbf6ef"},
                    "night": {"--nexus-accent": "#3538cd", "--nexus-bg": "#f5f6fb"},
                },
            },
        ],
        "settings": {
            "population": 8,
            "elite": 2,
            "visitors_per_generation": 400,
            "generations": 6,
            "identification_visitors": 600,
            "identification_candidates": 3,
        },
        "seed": seed,
    }
