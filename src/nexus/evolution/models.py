"""Evolution campaigns and the activity feed (tables of the metadata database) and the
schemas of the evolution API (``/v1/evolution/...``).

A **campaign** evolves one step page of a hosted funnel: its ``document`` holds what a
person set (genes, exclusions, search settings, promotion rules, copy candidates) and its
``state`` what the search has learnt (every generation with its designs, parents and
fitness counts, the random state), so a campaign continues where it stopped after a
restart. The **activity feed** records what evolution and the funnel monitor did and why,
in words, for the dashboard (the tamper-evident audit chain records the same actions).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from nexus.core.clock import utcnow
from nexus.evolution.copy import PhraseLibrary, Tone
from nexus.evolution.design import MAX_CAMPAIGN_GENES, GeneSpec, GeneValue
from nexus.pages.blocks import Slug
from nexus.storage.base import Base, CreatedAt, UTCDateTime

CampaignStatus = Literal[
    "running",  # generations are being bred and measured
    "identifying",  # the search is done; the best candidates are being told apart
    "identified",  # a champion is known; waiting for a person (or auto-promotion)
    "paused",  # serving the page as it is; the search waits
    "promoting",  # the champion is in a guarded rollout
    "promoted",  # the rollout completed: the champion is the page
    "rolled_back",  # the rollout's guardrails (or a person) rolled the champion back
    "stopped",  # ended by a person
]
ACTIVE = ("running", "identifying")
SERVING = ("running", "identifying", "promoting", "promoted")
Phase = Literal["search", "identify", "done"]
_TEXT = r"^[^\x00-\x1f\x7f]*$"
Comment = Annotated[str, Field(max_length=500, pattern=_TEXT)]


class Campaign(CreatedAt, Base):
    __tablename__ = "evolution_campaigns"
    __table_args__ = (
        UniqueConstraint("workspace_id", "key", name="uq_evolution_campaigns_workspace_key"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    key: Mapped[str] = mapped_column(String(64))
    funnel: Mapped[str] = mapped_column(String(64))
    step: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), default="running")
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    seed: Mapped[int] = mapped_column(Integer)
    flag_key: Mapped[str | None] = mapped_column(String(100), nullable=True)
    rollout_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Activity(CreatedAt, Base):
    """One entry of the workspace's evolution and funnel-health feed."""

    __tablename__ = "evolution_activity"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    campaign: Mapped[str | None] = mapped_column(String(64), nullable=True)
    kind: Mapped[str] = mapped_column(String(40))
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)


# --- API schemas ----------------------------------------------------------------------------


class SearchSettings(BaseModel):
    """How the search spends traffic."""

    model_config = ConfigDict(extra="forbid")

    population: int = Field(default=12, ge=2, le=64)
    elite: int = Field(default=3, ge=0, le=63)
    visitors_per_generation: int = Field(default=2000, ge=2, le=10_000_000)
    generations: int = Field(
        default=10, ge=1, le=1000, description="Generations before identification."
    )
    mutation_rate: float = Field(default=0.15, ge=0.0, le=1.0)
    identification_visitors: int = Field(
        default=4000, ge=0, le=10_000_000, description="Traffic to tell the best apart (0: skip)."
    )
    identification_candidates: int = Field(default=4, ge=2, le=16)
    segmented: bool = Field(
        default=False,
        description="Keep fitness per emotional segment and serve each segment its best.",
    )
    goal_window_seconds: int = Field(default=86_400, ge=60, le=30 * 86_400)

    @model_validator(mode="after")
    def _fits(self) -> SearchSettings:
        if self.elite >= self.population:
            raise ValueError("elite must be below the population size")
        if self.visitors_per_generation < self.population:
            raise ValueError("visitors_per_generation must be at least the population size")
        return self


class PromotionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    automatic: bool = Field(
        default=False, description="Start the guarded rollout when a champion is identified."
    )
    stages: list[float] = Field(default_factory=lambda: [10.0, 50.0, 100.0], min_length=1)
    min_visitors_per_stage: int = Field(default=200, ge=1, le=10_000_000)


CopyStatus = Literal["approved", "pending", "rejected"]


class CopyCandidate(BaseModel):
    """A text offered as a new value of a copy gene; only approved ones are served."""

    model_config = ConfigDict(extra="forbid")

    id: str
    gene: Slug
    text: GeneValue
    tone: str | None = None
    source: Literal["grammar", "generator", "person"] = "person"
    status: CopyStatus = "pending"


class CampaignBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    funnel: Slug = Field(description="The hosted funnel.")
    step: Slug = Field(description="The step whose page evolves.")
    genes: list[GeneSpec] = Field(min_length=1, max_length=MAX_CAMPAIGN_GENES)
    exclusions: list[dict[Slug, GeneValue]] = Field(default_factory=list, max_length=100)
    settings: SearchSettings = Field(default_factory=SearchSettings)
    promotion: PromotionSettings = Field(default_factory=PromotionSettings)
    phrases: dict[str, Any] | None = Field(
        default=None,
        description="The workspace's approved phrases and templates (docs/evolution-copy.md): "
        "the grammar copy candidates are made from.",
    )
    product: Annotated[str, Field(max_length=500, pattern=_TEXT)] = Field(
        default="", description="What is sold, for a copy generator's prompt."
    )
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1, description="Default: random.")

    @model_validator(mode="after")
    def _phrases(self) -> CampaignBody:
        if self.phrases is not None:
            PhraseLibrary.from_dict(self.phrases)  # CopyError is a ValueError: a 422
        return self


class CampaignCreate(CampaignBody):
    key: Slug


class Interval(BaseModel):
    low: float
    high: float


class DesignRead(BaseModel):
    key: str
    values: dict[str, str]
    visitors: int
    conversions: int
    conversion: float = Field(description="Posterior mean conversion rate.")
    interval: Interval = Field(description="95 % Wilson interval.")
    parents: list[str] = Field(default_factory=list)
    elite: bool = False


class GenerationRead(BaseModel):
    number: int
    phase: Literal["search", "identify"]
    visitors: int
    designs: list[DesignRead]
    best: DesignRead | None


class Ancestor(BaseModel):
    """One step of a champion's genealogy: in which generation it (or the parent it came
    from) was served, and that design's own parents (itself: kept as an elite)."""

    generation: int
    design: str
    values: dict[str, str]
    parents: list[str]


class ChampionRead(BaseModel):
    segment: str
    design: DesignRead
    probability_best: float | None = None
    lineage: list[Ancestor] = Field(
        default_factory=list, description="Where the champion came from, newest first."
    )


class CampaignRead(BaseModel):
    id: str
    key: str
    funnel: str
    step: str
    status: CampaignStatus
    phase: Phase
    generation: int
    generations: int
    space_size: int
    visitors: int
    champions: list[ChampionRead]
    genes: list[GeneSpec]
    settings: SearchSettings
    promotion: PromotionSettings
    flag_key: str | None
    rollout_id: str | None
    candidates: list[CopyCandidate]
    created_at: datetime
    updated_at: datetime


class PinRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gene: Slug
    value: GeneValue | None = Field(description="The value to pin; null unpins the gene.")
    comment: Comment = ""


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    design: str | None = Field(
        default=None,
        max_length=200,
        pattern=r"^d-[0-9-]+$",
        description="The design to promote (default: the champion).",
    )
    comment: Comment = ""


class ActionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: Comment = ""


class CandidatesRequest(BaseModel):
    """Propose copy for a copy gene: texts a person wrote (``person``, approved as they
    are), texts the campaign's phrase grammar makes (``grammar``: approved phrases only, so
    approved), or texts the deployment's copy generator writes (``generator``: held for
    approval unless the deployment says otherwise). ``tone`` or ``segment`` (whose best
    tones are used) says how the grammar and the generator should speak."""

    model_config = ConfigDict(extra="forbid")

    gene: Slug
    source: Literal["person", "grammar", "generator"] = "person"
    texts: list[GeneValue] = Field(default_factory=list, max_length=50)
    tone: Tone | None = None
    segment: Literal["frustrated", "anxious", "excited", "neutral"] | None = None
    count: int = Field(default=5, ge=1, le=20)


class ActivityRead(BaseModel):
    id: str
    campaign: str | None
    kind: str
    message: str
    details: dict[str, Any]
    created_at: datetime
