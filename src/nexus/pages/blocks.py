"""What a hosted funnel page is made of: content blocks with variants and tones (pure core).

A page is an ordered list of blocks. Each block has one or more **variants** (the versions an
experiment compares: the variant whose key is the visitor's experiment variant is shown,
else the first) and, per variant, optional **tones**: copy overrides for a UI adaptation's
tone (``calm``, ``reassuring`` …), so that when the adaptation bandit picks a tone for a
visitor, every block speaks in it. A block may also be shown only in some tones (a help
block for visitors who are struggling).

This module validates documents and resolves what one visitor sees; rendering and storage
live elsewhere. Content is plain text and plain URLs, never HTML: the renderer escapes
everything, so a page cannot carry script.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

MAX_BLOCKS = 50
MAX_VARIANTS = 8
MAX_TONES = 12
_TEXT = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"  # any text but control characters
Slug = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")]
Line = Annotated[str, Field(min_length=1, max_length=200, pattern=_TEXT)]
Text = Annotated[str, Field(min_length=1, max_length=5000, pattern=_TEXT)]
# A link or image: a path on this site, an https URL, or ``./step`` (another step of the same
# funnel). No other scheme (javascript:, data:).
_URL = re.compile(
    r"^(/(?!/)[^\s\x00-\x1f]*|https://[^\s/\x00-\x1f]+(/[^\s\x00-\x1f]*)?"
    r"|\./[a-z0-9][a-z0-9_-]*)$"
)
Url = Annotated[str, Field(min_length=1, max_length=2000)]


def _unique(values: list[str], message: str) -> None:
    if len(set(values)) != len(values):
        raise ValueError(message)


def _check_url(value: str) -> str:
    if not _URL.match(value):
        raise ValueError("must be a path on this site (/…), ./step or an https:// URL")
    return value


class _Content(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Headline(_Content):
    text: Line
    level: int = Field(default=1, ge=1, le=3, description="1 for the page's main heading.")


class Body(_Content):
    text: Text


class Image(_Content):
    src: Url
    alt: Line = Field(description="What the image shows, for screen readers (required).")
    width: int | None = Field(default=None, ge=1, le=4000)
    height: int | None = Field(default=None, ge=1, le=4000)

    _src = field_validator("src")(_check_url)


class CallToAction(_Content):
    label: Line
    href: Url
    goal_event: Line | None = Field(
        default=None, description="Tracked when the visitor follows the link."
    )

    _href = field_validator("href")(_check_url)


FieldType = Literal["text", "email", "tel", "textarea", "checkbox"]


class FormField(_Content):
    name: Slug
    label: Line = Field(description="The field's visible label (required: forms stay accessible).")
    type: FieldType = "text"
    required: bool = False


class Form(_Content):
    fields: list[FormField] = Field(min_length=1, max_length=20)
    submit_label: Line
    event: Line = Field(default="Form Submitted", description="The event sent on submit.")

    @model_validator(mode="after")
    def _names_unique(self) -> Form:
        _unique([f.name for f in self.fields], "form field names must be unique")
        return self


class Chat(_Content):
    label: Line = Field(description="The chat box's label.")
    placeholder: Line | None = None


class Testimonial(_Content):
    quote: Text
    author: Line


class Plan(_Content):
    name: Line
    price: Annotated[float, Field(ge=0, le=1e9)]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "EUR"
    features: list[Line] = Field(default_factory=list, max_length=20)
    cta_label: Line | None = None


class PriceTable(_Content):
    plans: list[Plan] = Field(min_length=1, max_length=6)


class Question(_Content):
    question: Line
    answer: Text


class Faq(_Content):
    items: list[Question] = Field(min_length=1, max_length=30)


BlockKind = Literal[
    "headline", "body", "image", "cta", "form", "chat", "testimonial", "price_table", "faq"
]
CONTENT: dict[str, type[_Content]] = {
    "headline": Headline,
    "body": Body,
    "image": Image,
    "cta": CallToAction,
    "form": Form,
    "chat": Chat,
    "testimonial": Testimonial,
    "price_table": PriceTable,
    "faq": Faq,
}


class Variant(BaseModel):
    """One version of a block: its content, and copy overrides per adaptation tone (the
    fields of the content that change in that tone)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: Slug
    content: dict[str, Any]
    tones: dict[Slug, dict[str, Any]] = Field(default_factory=dict, max_length=MAX_TONES)


class Block(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Slug
    kind: BlockKind
    variants: list[Variant] = Field(min_length=1, max_length=MAX_VARIANTS)
    only_tones: list[Slug] | None = Field(
        default=None,
        max_length=MAX_TONES,
        description="Show the block only to visitors adapted to one of these tones.",
    )

    @model_validator(mode="after")
    def _content_fits_kind(self) -> Block:
        model = CONTENT[self.kind]
        _unique([v.key for v in self.variants], f"block {self.id!r}: variant keys must be unique")
        for variant in self.variants:
            model.model_validate(variant.content)
            for tone, override in variant.tones.items():
                try:
                    model.model_validate({**variant.content, **override})
                except ValueError as error:
                    raise ValueError(
                        f"block {self.id!r}, variant {variant.key!r}, tone {tone!r}: {error}"
                    ) from None
        return self


class Page(BaseModel):
    """A funnel step's page: title, the experiment its variants belong to, its blocks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: Line
    experiment: Slug | None = Field(
        default=None,
        description="The experiment whose variant picks each block's variant of that key.",
    )
    blocks: list[Block] = Field(min_length=1, max_length=MAX_BLOCKS)

    @model_validator(mode="after")
    def _ids_unique(self) -> Page:
        _unique([b.id for b in self.blocks], "block ids must be unique within a page")
        return self


PAGE = TypeAdapter(Page)


class Shown(BaseModel):
    """A block as one visitor sees it: which variant and tone, and the content to render."""

    model_config = ConfigDict(frozen=True)

    id: str
    kind: BlockKind
    variant: str
    tone: str | None
    content: _Content
    original: dict[str, Any] | None = None  # the variant's own content, when ``tone`` is set


def _resolve_block(block: Block, variant: str | None, tone: str | None) -> Shown:
    chosen = next((v for v in block.variants if v.key == variant), block.variants[0])
    override = chosen.tones.get(tone) if tone is not None else None
    content = CONTENT[block.kind].model_validate(
        {**chosen.content, **override} if override else chosen.content
    )
    return Shown(
        id=block.id,
        kind=block.kind,
        variant=chosen.key,
        tone=tone if override else None,
        content=content,
        original=chosen.content if override else None,
    )


def resolve(page: Page, *, variant: str | None = None, tone: str | None = None) -> list[Shown]:
    """The blocks one visitor sees: each block's variant keyed ``variant`` (else its first),
    with the copy of ``tone`` when the variant has one, leaving out blocks reserved for other
    tones (or for adapted visitors, when ``tone`` is None)."""
    return [
        _resolve_block(block, variant, tone)
        for block in page.blocks
        if block.only_tones is None or tone in block.only_tones
    ]


def layout(
    page: Page, *, variant: str | None = None, tone: str | None = None
) -> list[tuple[Shown, bool]]:
    """Every block of the page as rendered for one visitor, with whether it is visible now.

    Like :func:`resolve`, but blocks reserved for other tones are kept (hidden, in the first
    of their tones' copy), so that a browser adapting the page later only has to reveal them.
    """
    out: list[tuple[Shown, bool]] = []
    for block in page.blocks:
        visible = block.only_tones is None or tone in block.only_tones
        shown_tone = tone if visible or block.only_tones is None else block.only_tones[0]
        out.append((_resolve_block(block, variant, shown_tone), visible))
    return out


def tone_copy(page: Page, *, variant: str | None = None) -> dict[str, dict[str, dict[str, str]]]:
    """Per shown block, per tone, the plain-text fields that tone changes: what a browser needs
    to switch the copy in place when the visitor's adaptation changes (nested lists, such as
    FAQ items or price plans, change on the next page load)."""
    out: dict[str, dict[str, dict[str, str]]] = {}
    for block in page.blocks:
        chosen = next((v for v in block.variants if v.key == variant), block.variants[0])
        tones = {
            tone: {k: v for k, v in override.items() if isinstance(v, str)}
            for tone, override in chosen.tones.items()
        }
        tones = {tone: fields for tone, fields in tones.items() if fields}
        if tones:
            out[block.id] = tones
    return out
