"""Page documents: what validates, what is refused with a clear message, and what one
visitor sees for an experiment variant and an adaptation tone."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from nexus.pages.blocks import (
    CONTENT,
    Body,
    CallToAction,
    Form,
    Headline,
    Page,
    Shown,
    resolve,
)

CONTENT_SAMPLES: dict[str, dict[str, Any]] = {
    "headline": {"text": "Sleep better tonight"},
    "body": {"text": "Our mattress adapts to you.\nThirty nights to try it."},
    "image": {"src": "/static/mattress.jpg", "alt": "A mattress in a bright room"},
    "cta": {"label": "See the offer", "href": "/f/shop/sleep/offer", "goal_event": "CTA Clicked"},
    "form": {
        "fields": [
            {"name": "email", "label": "Your email", "type": "email", "required": True},
            {"name": "note", "label": "Anything else?", "type": "textarea"},
        ],
        "submit_label": "Send",
    },
    "chat": {"label": "Ask us anything", "placeholder": "Type your question"},
    "testimonial": {"quote": "Best sleep in years.", "author": "Ana, Lisbon"},
    "price_table": {
        "plans": [{"name": "Single", "price": 499, "features": ["30 nights"], "cta_label": "Buy"}]
    },
    "faq": {"items": [{"question": "Can I return it?", "answer": "Yes, within 30 nights."}]},
}


def landing() -> Page:
    return Page.model_validate(
        {
            "title": "Landing",
            "experiment": "landing-copy",
            "blocks": [
                {
                    "id": "hero",
                    "kind": "headline",
                    "variants": [
                        {
                            "key": "control",
                            "content": {"text": "Sleep better tonight"},
                            "tones": {"reassuring": {"text": "No rush: try it for 30 nights"}},
                        },
                        {"key": "bold", "content": {"text": "The last mattress you will buy"}},
                    ],
                },
                {
                    "id": "help",
                    "kind": "body",
                    "only_tones": ["reassuring", "calm"],
                    "variants": [
                        {"key": "control", "content": {"text": "Questions? Chat with us."}}
                    ],
                },
                {
                    "id": "buy",
                    "kind": "cta",
                    "variants": [
                        {
                            "key": "control",
                            "content": {"label": "Buy now", "href": "/f/shop/sleep/checkout"},
                            "tones": {"calm": {"label": "Take a look"}},
                        }
                    ],
                },
            ],
        }
    )


def test_every_block_kind_has_a_content_model_and_validates_a_sample() -> None:
    assert set(CONTENT) == set(CONTENT_SAMPLES)
    blocks = [
        {"id": f"b-{kind}", "kind": kind, "variants": [{"key": "a", "content": sample}]}
        for kind, sample in CONTENT_SAMPLES.items()
    ]
    page = Page.model_validate({"title": "All blocks", "blocks": blocks})
    shown = resolve(page)
    assert [s.kind for s in shown] == list(CONTENT_SAMPLES)
    for item in shown:
        assert isinstance(item.content, CONTENT[item.kind])
    # A round trip through JSON gives the same page.
    assert Page.model_validate_json(page.model_dump_json()) == page


def test_the_visitors_variant_and_tone_pick_the_copy() -> None:
    page = landing()
    plain = resolve(page)
    assert [s.id for s in plain] == ["hero", "buy"]  # the help block waits for a tone
    assert _text(plain[0]) == "Sleep better tonight"
    assert plain[0].variant == "control"
    assert plain[0].tone is None

    bold = resolve(page, variant="bold", tone="reassuring")
    hero = bold[0]
    assert (hero.variant, _text(hero)) == ("bold", "The last mattress you will buy")
    assert hero.tone is None  # the bold variant has no reassuring copy: its own stands
    assert [s.id for s in bold] == ["hero", "help", "buy"]

    reassured = resolve(page, variant="control", tone="reassuring")
    assert _text(reassured[0]) == "No rush: try it for 30 nights"
    assert reassured[0].tone == "reassuring"

    calm = resolve(page, variant="nobody-knows", tone="calm")
    assert calm[0].variant == "control"  # an unknown variant falls back to the first
    buy = calm[-1].content
    assert isinstance(buy, CallToAction)
    assert buy.label == "Take a look"
    assert buy.href == "/f/shop/sleep/checkout"  # the tone changed the label only


def _text(shown: Shown) -> str:
    content = shown.content
    assert isinstance(content, Headline | Body)
    return content.text


def _error(document: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        Page.model_validate(document)
    return str(caught.value)


def _page_with(kind: str, content: dict[str, Any], **block: Any) -> dict[str, Any]:
    return {
        "title": "T",
        "blocks": [
            {"id": "b", "kind": kind, "variants": [{"key": "a", "content": content}], **block}
        ],
    }


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (_page_with("image", {"src": "/x.png"}), "alt"),
        (_page_with("image", {"src": "/x.png", "alt": ""}), "at least 1 character"),
        (_page_with("cta", {"label": "Go", "href": "javascript:alert(1)"}), "https://"),
        (_page_with("image", {"src": "data:image/png;base64,AAAA", "alt": "x"}), "https://"),
        (_page_with("cta", {"label": "Go", "href": "//evil.example/x"}), "https://"),
        (_page_with("cta", {"label": "Go", "href": "http://plain.example/"}), "https://"),
        (_page_with("headline", {"text": "Hi", "html": "<b>x</b>"}), "Extra inputs"),
        (_page_with("video", {"src": "/v.mp4"}), "headline"),
        (
            _page_with(
                "form", {"fields": [{"name": "email", "type": "email"}], "submit_label": "Send"}
            ),
            "label",
        ),
        (
            _page_with(
                "form",
                {
                    "fields": [{"name": "a", "label": "A"}, {"name": "a", "label": "B"}],
                    "submit_label": "Send",
                },
            ),
            "unique",
        ),
        (_page_with("headline", {"text": "Hi"}, only_tones=["Not A Slug"]), "pattern"),
        ({"title": "T", "blocks": []}, "at least 1 item"),
    ],
)
def test_bad_documents_are_refused_with_the_reason(document: dict[str, Any], message: str) -> None:
    assert message in _error(document)


def test_tone_overrides_are_checked_against_the_kind() -> None:
    document = _page_with("cta", {"label": "Go", "href": "/next"})
    document["blocks"][0]["variants"][0]["tones"] = {"calm": {"href": "javascript:void(0)"}}
    assert "tone 'calm'" in _error(document)


def test_duplicate_ids_and_variant_keys_are_refused() -> None:
    block = {"id": "b", "kind": "body", "variants": [{"key": "a", "content": {"text": "x"}}]}
    assert "block ids must be unique" in _error({"title": "T", "blocks": [block, block]})
    twice = {**block, "variants": block["variants"] * 2}
    assert "variant keys must be unique" in _error({"title": "T", "blocks": [twice]})


def test_form_fields_keep_their_types_and_labels() -> None:
    page = Page.model_validate(_page_with("form", CONTENT_SAMPLES["form"]))
    form = resolve(page)[0].content
    assert isinstance(form, Form)
    assert [(f.name, f.type, f.required) for f in form.fields] == [
        ("email", "email", True),
        ("note", "textarea", False),
    ]
    assert all(f.label for f in form.fields)
    assert form.event == "Form Submitted"
