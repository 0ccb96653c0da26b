"""A campaign's genes mapped onto a hosted page (pure core).

Each gene of a campaign names what it changes on the step's page (its **target**):

* ``copy``: one text field of one block (``{"kind": "copy", "block": "hero", "field":
  "text"}``); the gene's values are the texts (headline, body, call to action …);
* ``variant``: which of a block's variants is shown; values are the block's variant keys;
* ``visible``: whether a block is shown at all (social proof, an urgency banner); values
  ``on`` and ``off``;
* ``order``: the order of the page's blocks; each value lists block ids, comma separated
  (blocks it leaves out keep their place after the listed ones);
* ``tone``: the copy tone of every block (a block variant's ``tones`` override), used when
  the visitor's own UI adaptation sets no tone;
* ``theme``: design tokens (colours, radius …); each value names one of the gene's
  ``themes``.

:func:`space_of` checks a campaign's genes against the page and builds the
:class:`~nexus.evolution.genome.DesignSpace`; :func:`apply` turns one design into the page,
tokens and tone a visitor is served. :func:`segment_of` places a visitor in an emotional
segment from the emotion reading a decision carries, so fitness can be kept per segment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nexus.evolution.genome import Design, DesignSpace, GenomeError
from nexus.pages.blocks import CONTENT, Page, Slug

MAX_CAMPAIGN_GENES = 16
MAX_GENE_VALUES = 64
SEGMENTS = ("frustrated", "anxious", "excited", "neutral")
TargetKind = Literal["copy", "variant", "visible", "order", "tone", "theme"]
_TEXT = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
GeneValue = Annotated[str, Field(min_length=1, max_length=5000, pattern=_TEXT)]
TokenName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^(--)?[a-z0-9][a-z0-9-]*$")]
TokenValue = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[#a-zA-Z0-9 .,%()+-]+$")]


class Target(BaseModel):
    """What a gene changes on the page."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: TargetKind
    block: Slug | None = Field(default=None, description="The block (copy, variant, visible).")
    field: Slug | None = Field(default=None, description="The content field (copy).")

    @model_validator(mode="after")
    def _fits_kind(self) -> Target:
        needs_block = self.kind in ("copy", "variant", "visible")
        if needs_block and self.block is None:
            raise ValueError(f"a {self.kind} gene names its block")
        if not needs_block and self.block is not None:
            raise ValueError(f"a {self.kind} gene changes the whole page: no block")
        if (self.kind == "copy") != (self.field is not None):
            raise ValueError("a copy gene, and only a copy gene, names its field")
        return self


class GeneSpec(BaseModel):
    """One gene of a campaign: its name, target and values (the first is the page's own)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Slug
    target: Target
    values: list[GeneValue] = Field(default_factory=list, max_length=MAX_GENE_VALUES)
    themes: dict[Slug, dict[TokenName, TokenValue]] = Field(
        default_factory=dict,
        max_length=MAX_GENE_VALUES,
        description="For a theme gene: each value's design tokens.",
    )
    pinned: GeneValue | None = Field(default=None, description="Pin the gene to this value.")

    @model_validator(mode="after")
    def _values(self) -> GeneSpec:
        if len(set(self.values)) != len(self.values):
            raise ValueError(f"gene {self.name!r} repeats a value")
        if self.target.kind == "theme":
            missing = [v for v in self.values if v not in self.themes]
            if missing:
                raise ValueError(f"gene {self.name!r}: no tokens for themes {missing}")
        elif self.themes:
            raise ValueError(f"gene {self.name!r}: only a theme gene has themes")
        if self.pinned is not None and self.values and self.pinned not in self.values:
            raise ValueError(f"gene {self.name!r} is pinned to a value it does not have")
        return self


def _block(page: Page, block_id: str, gene: str) -> Any:
    for block in page.blocks:
        if block.id == block_id:
            return block
    raise GenomeError(f"gene {gene!r}: the page has no block {block_id!r}")


def gene_values(spec: GeneSpec, page: Page) -> tuple[str, ...]:
    """The gene's values, with the defaults a target implies when none are listed."""
    target = spec.target
    if target.kind == "variant":
        keys = tuple(v.key for v in _block(page, target.block or "", spec.name).variants)
        values = tuple(spec.values) or keys
        unknown = [v for v in values if v not in keys]
        if unknown:
            raise GenomeError(f"gene {spec.name!r}: block has no variants {unknown}")
        return values
    if target.kind == "visible":
        _block(page, target.block or "", spec.name)
        values = tuple(spec.values) or ("on", "off")
        if set(values) - {"on", "off"}:
            raise GenomeError(f"gene {spec.name!r}: a visible gene's values are on and off")
        return values
    if target.kind == "copy":
        block = _block(page, target.block or "", spec.name)
        content = block.variants[0].content
        field = target.field or ""
        if not isinstance(content.get(field), str):
            raise GenomeError(f"gene {spec.name!r}: block {block.id!r} has no text field {field!r}")
        values = tuple(spec.values) or (content[field],)
        for value in values:
            try:
                CONTENT[block.kind].model_validate({**content, field: value})
            except ValueError:
                raise GenomeError(
                    f"gene {spec.name!r}: {value[:40]!r} does not fit {block.id}.{field}"
                ) from None
        return values
    if target.kind == "order":
        ids = {b.id for b in page.blocks}
        values = tuple(spec.values) or (",".join(b.id for b in page.blocks),)
        for value in values:
            listed = value.split(",")
            if len(set(listed)) != len(listed) or set(listed) - ids:
                raise GenomeError(
                    f"gene {spec.name!r}: order {value!r} must list distinct blocks of the page"
                )
        return values
    if not spec.values:
        raise GenomeError(f"gene {spec.name!r} needs values")
    return tuple(spec.values)


def space_of(
    genes: Sequence[GeneSpec],
    page: Page,
    *,
    exclusions: Sequence[Mapping[str, str]] = (),
) -> DesignSpace:
    """The design space of a campaign on this page (raises :class:`GenomeError`)."""
    if not 1 <= len(genes) <= MAX_CAMPAIGN_GENES:
        raise GenomeError(f"a campaign has 1 to {MAX_CAMPAIGN_GENES} genes")
    names = [g.name for g in genes]
    if len(set(names)) != len(names):
        raise GenomeError("gene names must be unique")
    seen: set[tuple[str, str | None, str | None]] = set()
    for gene in genes:
        key = (gene.target.kind, gene.target.block, gene.target.field)
        if key in seen:
            raise GenomeError(f"gene {gene.name!r} changes what another gene already changes")
        seen.add(key)
    values = {g.name: gene_values(g, page) for g in genes}
    pins = {g.name: g.pinned for g in genes if g.pinned is not None}
    return DesignSpace.build(values, exclusions=exclusions, pins=pins)


@dataclass(frozen=True, slots=True)
class Applied:
    """A design as served: the page, base design tokens and the default copy tone."""

    page: Page
    tokens: dict[str, str]
    tone: str | None


def apply(genes: Sequence[GeneSpec], space: DesignSpace, page: Page, design: Design) -> Applied:
    """The page with the design's gene values applied."""
    chosen = space.describe(design)
    blocks = [b.model_dump(mode="json") for b in page.blocks]
    by_id = {b["id"]: b for b in blocks}
    tokens: dict[str, str] = {}
    tone: str | None = None
    hidden: set[str] = set()
    order: list[str] | None = None
    for gene in genes:
        value = chosen[gene.name]
        target = gene.target
        if target.kind == "copy":
            block = by_id[target.block]
            for variant in block["variants"]:
                variant["content"][target.field] = value
        elif target.kind == "variant":
            block = by_id[target.block]
            block["variants"].sort(key=lambda v: v["key"] != value)  # stable: chosen first
        elif target.kind == "visible":
            if value == "off":
                hidden.add(target.block or "")
        elif target.kind == "order":
            order = value.split(",")
        elif target.kind == "tone":
            tone = value
        else:
            tokens.update(gene.themes[value])
    if order is not None:
        rank = {block_id: i for i, block_id in enumerate(order)}
        blocks.sort(key=lambda b: rank.get(b["id"], len(rank)))
    kept = [b for b in blocks if b["id"] not in hidden]
    document = {**page.model_dump(mode="json"), "blocks": kept or blocks[:1]}
    return Applied(Page.model_validate(document), tokens, tone)


def segment_of(emotion: Mapping[str, Any] | None) -> str:
    """A visitor's emotional segment from a decision's emotion reading: ``frustrated``
    (anger or disgust leading, or negative valence with high arousal), ``anxious`` (fear or
    sadness leading), ``excited`` (joy or anticipation leading with positive valence), else
    ``neutral`` (also when there is no reading)."""
    if not emotion:
        return "neutral"

    def score(name: str) -> float:
        value = emotion.get(name)
        return float(value) if isinstance(value, int | float) else 0.0

    valence, arousal = score("valence"), score("arousal")
    leading = max(
        ("anger", "disgust", "fear", "sadness", "joy", "anticipation", "trust", "surprise"),
        key=score,
    )
    if score(leading) < 0.2 and abs(valence) < 0.2:
        return "neutral"
    if leading in ("anger", "disgust") or (valence < -0.2 and arousal > 0.3):
        return "frustrated"
    if leading in ("fear", "sadness") or valence < -0.2:
        return "anxious"
    if leading in ("joy", "anticipation") and valence > 0:
        return "excited"
    return "neutral"


def relink(page: Page, targets: Sequence[str], chosen: str) -> Page:
    """The page with its calls to action that lead to one of ``targets`` (``./step``
    links) leading to ``chosen`` instead: how an adapted path reaches the page."""
    links = {f"./{t}" for t in targets if t != chosen}
    if not links:
        return page
    document = page.model_dump(mode="json")
    changed = False
    for block in document["blocks"]:
        if block["kind"] != "cta":
            continue
        for variant in block["variants"]:
            if variant["content"].get("href") in links:
                variant["content"]["href"] = f"./{chosen}"
                changed = True
    return Page.model_validate(document) if changed else page
