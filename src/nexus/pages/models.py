"""Hosted funnels (a table of the metadata database) and the schemas of the pages API.

A hosted funnel is an ordered list of step pages that NEXUS serves at
``/f/{workspace}/{funnel}/{step}``. Its document (steps and their block documents) is one JSON
value, validated by :class:`HostedFunnelBody` on every write, so a page is always whole.
Saving a hosted funnel also keeps an analytics funnel (``nexus.funnels``) that measures it:
one ``$page`` step per page, then the goal event.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import JSON, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from nexus.core.clock import utcnow
from nexus.pages.blocks import MAX_TONES, Page, Slug
from nexus.storage.base import Base, CreatedAt, UTCDateTime

MAX_STEPS = 20
_TEXT = r"^[^\x00-\x1f\x7f]+$"
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=_TEXT)]
EventName = Annotated[str, Field(min_length=1, max_length=512, pattern=_TEXT)]


class HostedFunnel(CreatedAt, Base):
    """A hosted funnel: its slug, name and document (steps with their pages, goal)."""

    __tablename__ = "hosted_funnels"
    __table_args__ = (
        UniqueConstraint("workspace_id", "slug", name="uq_hosted_funnels_workspace_slug"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    slug: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The analytics funnel kept in step with this one (None: fewer than two steps to measure).
    analytics_funnel_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


# --- API schemas ----------------------------------------------------------------------------


class StepPage(BaseModel):
    """One step of a hosted funnel: its URL slug and its page."""

    model_config = ConfigDict(extra="forbid")

    slug: Slug
    page: Page
    optional: bool = Field(
        default=False, description="Adaptive flow may skip this step for some visitors."
    )
    group: Slug | None = Field(
        default=None,
        description="Adjacent steps of one group may be shown in either order (adaptive flow).",
    )


class FlowSettings(BaseModel):
    """Adaptive flow: each visitor's path changed by a bandit that reads their emotion."""

    model_config = ConfigDict(extra="forbid")

    adaptive: bool = Field(default=False, description="Adapt each visitor's path.")
    reassurance: Slug | None = Field(
        default=None,
        description="A step off the designed path that may be inserted for a visitor "
        "(a guarantee, testimonials); its page links onward with ./ links.",
    )


class HostedFunnelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    steps: list[StepPage] = Field(min_length=1, max_length=MAX_STEPS)
    goal_event: EventName | None = Field(
        default="Order Completed",
        description="The conversion the funnel leads to: the analytics funnel's last step.",
    )
    flow: FlowSettings = Field(default_factory=FlowSettings)

    @model_validator(mode="after")
    def _slugs_unique(self) -> HostedFunnelBody:
        slugs = [s.slug for s in self.steps]
        if len(set(slugs)) != len(slugs):
            raise ValueError("step slugs must be unique within a funnel")
        reassurance = self.flow.reassurance
        if reassurance is not None and reassurance not in slugs:
            raise ValueError(f"flow.reassurance names no step: {reassurance!r}")
        if reassurance is not None and slugs[0] == reassurance:
            raise ValueError("flow.reassurance cannot be the first step")
        return self


class HostedFunnelCreate(HostedFunnelBody):
    slug: Slug = Field(description="The funnel's part of the page URLs.")


class HostedFunnelRead(HostedFunnelBody):
    id: str
    slug: str
    analytics_funnel_id: str | None
    urls: list[str] = Field(description="Where each step is served, in order.")
    created_at: datetime
    updated_at: datetime


class StepPut(BaseModel):
    """A step's page, created or replaced; ``position`` places a new step (default: last)."""

    model_config = ConfigDict(extra="forbid")

    page: Page
    position: int | None = Field(default=None, ge=0, le=MAX_STEPS)


class PreviewRequest(BaseModel):
    """Render a page document without saving it (the editor's live preview)."""

    model_config = ConfigDict(extra="forbid")

    page: Page
    variant: Slug | None = Field(default=None, description="The experiment variant to show.")
    tone: Slug | None = Field(default=None, description="The adaptation tone to show.")
    tokens: dict[
        Annotated[str, Field(min_length=1, max_length=64, pattern=r"^(--)?[a-z0-9][a-z0-9-]*$")],
        Annotated[str, Field(max_length=100)],
    ] = Field(default_factory=dict, max_length=MAX_TONES * 4)
