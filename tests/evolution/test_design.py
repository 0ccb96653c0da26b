"""A campaign's genes map onto the hosted page: what each target changes, and what it refuses."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from nexus.evolution.design import GeneSpec, apply, segment_of, space_of
from nexus.evolution.genome import GenomeError
from nexus.evolution.samples import demo_campaign
from nexus.pages.blocks import Page, resolve
from nexus.pages.samples import demo_funnel

OFFER = Page.model_validate(demo_funnel()["steps"][1]["page"])
GENES = [GeneSpec.model_validate(g) for g in demo_campaign()["genes"]]


def test_the_demo_campaign_spans_its_designs_and_applies_each_gene() -> None:
    space = space_of(GENES, OFFER)
    assert space.size == 4 * 3 * 2 * 2 * 3
    design = space.encode(
        {
            "headline": "Your garden, ready in one box",
            "cta": "Get my bundle",
            "faq": "off",
            "layout": "headline,help,faq,plans,chat,next",
            "theme": "night",
        }
    )
    applied = apply(GENES, space, OFFER, design)
    shown = {b.id: b for b in resolve(applied.page)}
    assert shown["headline"].content.text == "Your garden, ready in one box"  # type: ignore[attr-defined]
    assert shown["next"].content.label == "Get my bundle"  # type: ignore[attr-defined]
    assert "faq" not in shown  # hidden by the visible gene
    assert [b.id for b in applied.page.blocks] == ["headline", "help", "plans", "chat", "next"]
    assert applied.tokens == {"--nexus-accent": "#3538cd", "--nexus-bg": "#f5f6fb"}
    assert applied.tone is None
    # The FAQ shown and ordered first: the order gene moves it before the price table.
    other = space.encode({**space.describe(design), "faq": "on"})
    ids = [b.id for b in apply(GENES, space, OFFER, other).page.blocks]
    assert ids.index("faq") < ids.index("plans")
    # The page it came from is untouched.
    assert OFFER.blocks[0].variants[0].content["text"] == "Pick your bundle"


def test_variant_and_tone_genes_default_to_what_the_page_has() -> None:
    landing = Page.model_validate(demo_funnel()["steps"][0]["page"])
    genes = [
        GeneSpec.model_validate({"name": "hl", "target": {"kind": "variant", "block": "headline"}}),
        GeneSpec.model_validate(
            {"name": "tone", "target": {"kind": "tone"}, "values": ["calm", "reassuring"]}
        ),
    ]
    space = space_of(genes, landing)
    assert [g.values for g in space.genes] == [("control", "urgency"), ("calm", "reassuring")]
    applied = apply(genes, space, landing, space.encode({"hl": "urgency", "tone": "calm"}))
    assert applied.page.blocks[0].variants[0].key == "urgency"
    assert applied.tone == "calm"
    assert resolve(applied.page)[0].variant == "urgency"


@pytest.mark.parametrize(
    ("gene", "message"),
    [
        ({"name": "x", "target": {"kind": "copy", "block": "nope", "field": "text"}}, "no block"),
        (
            {"name": "x", "target": {"kind": "copy", "block": "headline", "field": "nope"}},
            "no text field",
        ),
        (
            {"name": "x", "target": {"kind": "variant", "block": "headline"}, "values": ["zz"]},
            "no variants",
        ),
        (
            {"name": "x", "target": {"kind": "visible", "block": "faq"}, "values": ["maybe"]},
            "on and off",
        ),
        (
            {"name": "x", "target": {"kind": "order"}, "values": ["headline,headline"]},
            "distinct blocks",
        ),
        (
            {
                "name": "x",
                "target": {"kind": "copy", "block": "headline", "field": "text"},
                "values": ["x" * 201],
            },
            "does not fit",
        ),
        ({"name": "x", "target": {"kind": "tone"}}, "needs values"),
    ],
)
def test_genes_that_do_not_fit_the_page_are_refused(gene: dict, message: str) -> None:
    with pytest.raises(GenomeError, match=message):
        space_of([GeneSpec.model_validate(gene)], OFFER)


def test_gene_documents_are_checked() -> None:
    with pytest.raises(ValidationError, match="names its block"):
        GeneSpec.model_validate({"name": "x", "target": {"kind": "copy", "field": "text"}})
    with pytest.raises(ValidationError, match="no tokens"):
        GeneSpec.model_validate({"name": "t", "target": {"kind": "theme"}, "values": ["a"]})
    with pytest.raises(ValidationError, match="pinned"):
        GeneSpec.model_validate(
            {"name": "t", "target": {"kind": "tone"}, "values": ["calm"], "pinned": "urgent"}
        )
    twice = [GENES[0], GENES[0].model_copy(update={"name": "again"})]
    with pytest.raises(GenomeError, match="already changes"):
        space_of(twice, OFFER)


def test_pinned_genes_hold_in_every_design() -> None:
    genes = [*GENES[:-1], GENES[-1].model_copy(update={"pinned": "earth"})]
    space = space_of(genes, OFFER)
    rng = random.Random(3)
    assert {space.describe(space.random(rng))["theme"] for _ in range(50)} == {"earth"}


@pytest.mark.parametrize(
    ("emotion", "segment"),
    [
        (None, "neutral"),
        ({"anger": 0.8, "valence": -0.6, "arousal": 0.7}, "frustrated"),
        ({"fear": 0.7, "valence": -0.4, "arousal": 0.2}, "anxious"),
        ({"sadness": 0.6, "valence": -0.5, "arousal": -0.3}, "anxious"),
        ({"joy": 0.8, "valence": 0.7, "arousal": 0.5}, "excited"),
        ({"joy": 0.05, "valence": 0.05}, "neutral"),
    ],
)
def test_emotional_segments(emotion: dict | None, segment: str) -> None:
    assert segment_of(emotion) == segment
