"""Tables of the decision engine and the schemas of its API.

Flags, experiments and rollouts are stored as JSON documents validated by the pydantic
models here and, for what JSON Schema cannot say (a rule serving an unknown variation,
weights that do not add up, a prerequisite cycle), by the pure evaluator in
:mod:`nexus.experiments.flags`. Every change to a flag leaves a row in ``flag_changes``.
"""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from nexus.core.clock import utcnow
from nexus.storage.base import Base, CreatedAt, UTCDateTime

# Flag, experiment, variation and adaptation keys: what SDKs and URLs carry.
KEY_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,99}$"
_TEXT = r"^[^\x00-\x1f\x7f]*$"
Key = Annotated[str, Field(pattern=KEY_PATTERN, min_length=1, max_length=100)]
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=_TEXT)]
Description = Annotated[str, Field(max_length=2000)]
Attribute = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x20\x7f-\x9f]+$")]
Scalar = str | int | float | bool
DEFAULT_STAGES = (1.0, 5.0, 10.0, 25.0, 50.0, 100.0)


# --- tables --------------------------------------------------------------------------------


class Flag(CreatedAt, Base):
    """A feature flag; ``document`` is its evaluator form (see the contract in docs)."""

    __tablename__ = "flags"
    __table_args__ = (UniqueConstraint("workspace_id", "key", name="uq_flags_workspace_key"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    key: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class FlagChange(Base):
    """The audit trail: who changed which flag, how, when and why (kept after deletion)."""

    __tablename__ = "flag_changes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    flag_key: Mapped[str] = mapped_column(String(100), index=True)
    action: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    comment: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class Experiment(CreatedAt, Base):
    """An A/B/n experiment; ``document`` holds variants, layer, targeting and metrics."""

    __tablename__ = "experiments"
    __table_args__ = (UniqueConstraint("workspace_id", "key", name="uq_experiments_workspace_key"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    key: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), default="draft")
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Adaptation(CreatedAt, Base):
    """A named UI adaptation: design tokens and a copy tone the SDK applies."""

    __tablename__ = "ui_adaptations"
    __table_args__ = (
        UniqueConstraint("workspace_id", "key", name="uq_ui_adaptations_workspace_key"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    key: Mapped[str] = mapped_column(String(100))
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class DecisionSettings(Base):
    """Per-workspace options of ``decide``: holdout, adaptation goal and policy, webhook."""

    __tablename__ = "decision_settings"

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class BanditState(Base):
    """A bandit policy's learned state, saved so a restart keeps what it learned."""

    __tablename__ = "bandit_states"

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(120), primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Rollout(CreatedAt, Base):
    """A guarded rollout of one flag variation; ``document`` holds its plan and history."""

    __tablename__ = "rollouts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    flag_key: Mapped[str] = mapped_column(String(100), index=True)
    status: Mapped[str] = mapped_column(String(20), default="running")
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


# --- flags ----------------------------------------------------------------------------------

FlagKind = Literal["boolean", "multivariate", "json"]
ClauseOp = Literal[
    "eq",
    "neq",
    "in",
    "not_in",
    "contains",
    "not_contains",
    "starts_with",
    "ends_with",
    "regex",
    "gt",
    "gte",
    "lt",
    "lte",
    "exists",
    "not_exists",
    "semver_eq",
    "semver_gt",
    "semver_lt",
]


class VariationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: Key
    value: Any = Field(description="Any JSON value; booleans for boolean flags.")


class ClauseIn(BaseModel):
    """``{"attribute": "emotion.valence", "op": "lt", "value": -0.3}``.

    ``attribute`` is a dotted path into the visitor's attributes (``emotion.dominant``,
    ``country``); ``key`` is the visitor's id.
    """

    model_config = ConfigDict(extra="forbid")

    attribute: Attribute
    op: ClauseOp
    value: Scalar | list[Scalar] | None = None


class SplitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variation: Key
    weight: float = Field(ge=0, le=100, description="Percent of visitors.")


class ServeIn(BaseModel):
    """One variation for everyone who gets here, or a percentage rollout."""

    model_config = ConfigDict(extra="forbid")

    variation: Key | None = None
    rollout: list[SplitIn] | None = Field(default=None, min_length=1, max_length=50)

    @model_validator(mode="after")
    def _one_of(self) -> ServeIn:
        if (self.variation is None) == (self.rollout is None):
            raise ValueError("serve exactly one of 'variation' or 'rollout'")
        return self


class RuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Key
    clauses: list[ClauseIn] = Field(default_factory=list, max_length=50)
    serve: ServeIn


class PrerequisiteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flag: Key
    variations: list[Key] = Field(min_length=1, max_length=50)


class FlagBody(BaseModel):
    """What a flag does: shared by create, replace and the SDK's definitions."""

    model_config = ConfigDict(extra="forbid")

    kind: FlagKind = "boolean"
    variations: list[VariationIn] = Field(
        default_factory=lambda: [
            VariationIn(key="on", value=True),
            VariationIn(key="off", value=False),
        ],
        min_length=2,
        max_length=50,
    )
    enabled: bool = Field(default=True, description="False is the kill switch: serve off.")
    off_variation: Key = "off"
    prerequisites: list[PrerequisiteIn] = Field(default_factory=list, max_length=20)
    rules: list[RuleIn] = Field(default_factory=list, max_length=200)
    fallthrough: ServeIn = Field(default_factory=lambda: ServeIn(variation="off"))
    salt: Key | None = Field(default=None, description="Hashing salt; the key by default.")


class FlagCreate(FlagBody):
    key: Key
    name: Name | None = None
    description: Description = ""
    comment: Description = Field(default="", description="Why; kept in the audit trail.")


class FlagUpdate(BaseModel):
    """Fields to change; the rest stay. ``comment`` goes into the audit trail."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    description: Description | None = None
    kind: FlagKind | None = None
    variations: list[VariationIn] | None = Field(default=None, min_length=2, max_length=50)
    enabled: bool | None = None
    off_variation: Key | None = None
    prerequisites: list[PrerequisiteIn] | None = Field(default=None, max_length=20)
    rules: list[RuleIn] | None = Field(default=None, max_length=200)
    fallthrough: ServeIn | None = None
    salt: Key | None = None
    comment: Description = ""


class FlagRead(BaseModel):
    id: str
    key: str
    name: str
    description: str
    kind: FlagKind
    variations: list[VariationIn]
    enabled: bool
    off_variation: str
    prerequisites: list[PrerequisiteIn]
    rules: list[RuleIn]
    fallthrough: ServeIn
    salt: str
    version: int
    created_at: datetime
    updated_at: datetime


class KillSwitch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: Description = ""


class FlagChangeRead(BaseModel):
    id: str
    flag_key: str
    action: str
    actor: str
    version: int
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    comment: str
    at: datetime


class FlagDefinitions(BaseModel):
    """Everything an SDK needs to evaluate the workspace's flags locally."""

    version: str
    flags: list[dict[str, Any]]


# --- experiments ---------------------------------------------------------------------------

MetricKind = Literal["conversion", "count", "sum", "ratio"]
ExperimentStatus = Literal["draft", "running", "stopped"]


class VariantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: Key
    weight: float = Field(default=1.0, gt=0, le=1000, description="Relative share.")
    payload: Any = None


class MetricIn(BaseModel):
    """How an experiment is judged.

    * ``conversion``: reaching step ``step`` (0-based) of funnel ``funnel_id`` within the
      funnel's window after the first exposure (``event`` instead: doing that event within
      ``window_seconds``);
    * ``count``: how many ``event`` events a visitor does after exposure;
    * ``sum``: the sum of ``property`` (a number, such as ``revenue``) over those events;
    * ``ratio``: metric ``numerator`` over metric ``denominator`` (both keys of this list).

    ``guardrail`` metrics are watched for harm; ``direction`` says which way is good.
    """

    model_config = ConfigDict(extra="forbid")

    key: Key
    kind: MetricKind
    event: Annotated[str, Field(min_length=1, max_length=512, pattern=r"^[^\x00-\x1f\x7f]+$")] | (
        None
    ) = None
    property: Attribute | None = None
    funnel_id: Annotated[str, Field(max_length=32, pattern=r"^[A-Za-z0-9_-]+$")] | None = None
    step: int | None = Field(default=None, ge=0, le=19)
    numerator: Key | None = None
    denominator: Key | None = None
    window_seconds: int = Field(default=14 * 86_400, ge=60, le=366 * 86_400)
    guardrail: bool = False
    direction: Literal["increase", "decrease"] = "increase"

    @model_validator(mode="after")
    def _fields_fit_kind(self) -> MetricIn:
        kind = self.kind
        if kind == "conversion" and (self.funnel_id is None) == (self.event is None):
            raise ValueError("a conversion metric names a funnel_id (with step) or an event")
        if kind == "conversion" and self.funnel_id is not None and self.step is None:
            raise ValueError("a funnel conversion metric needs 'step'")
        if kind in ("count", "sum") and self.event is None:
            raise ValueError(f"a {kind} metric needs 'event'")
        if kind == "sum" and self.property is None:
            raise ValueError("a sum metric needs 'property' (the number to add up)")
        if kind == "ratio" and (self.numerator is None or self.denominator is None):
            raise ValueError("a ratio metric needs 'numerator' and 'denominator'")
        return self


class ExperimentBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    description: Description = ""
    variants: list[VariantIn] = Field(
        default_factory=lambda: [VariantIn(key="control"), VariantIn(key="treatment")],
        min_length=2,
        max_length=20,
    )
    control: Key | None = Field(default=None, description="The baseline; the first variant.")
    layer: Key = Field(
        default="default",
        description="Experiments in one layer never share a visitor (mutually exclusive).",
    )
    traffic: float = Field(
        default=100.0, gt=0, le=100, description="Percent of the layer this experiment takes."
    )
    targeting: list[ClauseIn] = Field(default_factory=list, max_length=50)
    metrics: list[MetricIn] = Field(default_factory=list, max_length=30)
    primary_metric: Key | None = None
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    cuped: bool = True


class ExperimentCreate(ExperimentBody):
    key: Key


class ExperimentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    description: Description | None = None
    variants: list[VariantIn] | None = Field(default=None, min_length=2, max_length=20)
    control: Key | None = None
    layer: Key | None = None
    traffic: float | None = Field(default=None, gt=0, le=100)
    targeting: list[ClauseIn] | None = Field(default=None, max_length=50)
    metrics: list[MetricIn] | None = Field(default=None, max_length=30)
    primary_metric: Key | None = None
    alpha: float | None = Field(default=None, gt=0, lt=0.5)
    cuped: bool | None = None


class ExperimentRead(ExperimentBody):
    id: str
    key: str
    status: ExperimentStatus
    layer_range: tuple[float, float] | None = Field(
        description="The slice [start, end) of the layer's hash space the running experiment owns."
    )
    started_at: datetime | None
    stopped_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ArmSummary(BaseModel):
    variant: str
    visitors: int
    mean: float | None
    variance: float | None


class Comparison(BaseModel):
    """One variant against control on one metric."""

    variant: str
    effect: float | None
    relative_effect: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    adjusted_p_value: float | None = Field(
        description="Holm-corrected across the experiment's variants and metrics."
    )
    sequential_ci_low: float | None
    sequential_ci_high: float | None
    sequential_significant: bool | None
    chance_to_beat_control: float | None
    expected_loss: float | None
    cuped: bool
    significant: bool
    regression: bool = Field(description="Significantly worse in the metric's bad direction.")
    error: str | None


class MetricResult(BaseModel):
    metric: str
    kind: MetricKind
    guardrail: bool
    arms: list[ArmSummary]
    comparisons: list[Comparison]


class SampleRatio(BaseModel):
    observed: dict[str, int]
    expected_share: dict[str, float]
    p_value: float | None
    mismatch: bool


class ExperimentResults(BaseModel):
    key: str
    status: ExperimentStatus
    start: datetime
    end: datetime
    exposed: int
    sample_ratio: SampleRatio
    metrics: list[MetricResult]


# --- adaptations and settings ---------------------------------------------------------------


class AdaptationBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    tone: Annotated[str, Field(min_length=1, max_length=50, pattern=_TEXT)] = "neutral"
    tokens: dict[str, Scalar] = Field(
        default_factory=dict,
        max_length=200,
        description="Design tokens: CSS custom properties and the like.",
    )
    copy_text: dict[str, Annotated[str, Field(max_length=2000)]] = Field(
        default_factory=dict,
        max_length=200,
        alias="copy",
        description="Copy by slot (headline, cta …) in this tone.",
    )
    emotion_profile: dict[str, float] = Field(
        default_factory=dict,
        max_length=20,
        description="The emotional register this adaptation suits (for resonance reports).",
    )
    when: list[ClauseIn] = Field(
        default_factory=list,
        max_length=20,
        description="A trigger: clauses (as in a flag rule, all must hold) on the visitor's "
        "attributes and current emotion, e.g. emotion.dominant in [confusion, annoyance]. "
        "When some adaptations' triggers hold, the bandit chooses among those alone; "
        "otherwise among the adaptations without a trigger (none: no adaptation).",
    )

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class AdaptationCreate(AdaptationBody):
    key: Key


class AdaptationRead(AdaptationBody):
    id: str
    key: str
    created_at: datetime
    updated_at: datetime


PolicyName = Literal["linear_thompson", "linucb", "thompson", "uniform"]


class DecisionSettingsBody(BaseModel):
    """How ``decide`` chooses UI adaptations and which visitors it holds out."""

    model_config = ConfigDict(extra="forbid")

    holdout_percent: float = Field(
        default=0.0,
        ge=0,
        le=50,
        description="Visitors held out of every experiment and adaptation (the baseline).",
    )
    goal_event: Annotated[str, Field(min_length=1, max_length=512, pattern=_TEXT)] = (
        "Order Completed"
    )
    goal_window_seconds: int = Field(default=1800, ge=1, le=30 * 86_400)
    policy: PolicyName = "linear_thompson"
    burn_in: int = Field(default=20, ge=0, le=100_000)
    min_share: float = Field(default=0.05, ge=0, le=0.5)
    context_attributes: list[Attribute] = Field(
        default_factory=list,
        max_length=20,
        json_schema_extra={"uniqueItems": True},
        description="Numeric visitor attributes the adaptation policy sees besides emotion "
        "(each once).",
    )
    webhook_url: Annotated[str, Field(max_length=2000, pattern=r"^https?://[!-~]+$")] | None = None

    @field_validator("context_attributes")
    @classmethod
    def _each_attribute_once(cls, value: list[str]) -> list[str]:
        repeated = sorted({name for name in value if value.count(name) > 1})
        if repeated:
            raise ValueError(f"each attribute may appear once; repeated: {', '.join(repeated)}")
        return value


class DecisionSettingsRead(DecisionSettingsBody):
    updated_at: datetime | None


# --- decide ---------------------------------------------------------------------------------


class EmotionIn(BaseModel):
    """A reading made elsewhere (the browser's edge model): Plutchik's eight in [0, 1] and
    valence, arousal, dominance in [-1, 1]. Missing dimensions count as 0."""

    model_config = ConfigDict(extra="forbid")

    joy: float = Field(default=0.0, ge=0, le=1)
    trust: float = Field(default=0.0, ge=0, le=1)
    fear: float = Field(default=0.0, ge=0, le=1)
    surprise: float = Field(default=0.0, ge=0, le=1)
    sadness: float = Field(default=0.0, ge=0, le=1)
    disgust: float = Field(default=0.0, ge=0, le=1)
    anger: float = Field(default=0.0, ge=0, le=1)
    anticipation: float = Field(default=0.0, ge=0, le=1)
    valence: float = Field(default=0.0, ge=-1, le=1)
    arousal: float = Field(default=0.0, ge=-1, le=1)
    dominance: float = Field(default=0.0, ge=-1, le=1)
    dominant: Annotated[str, Field(max_length=50, pattern=r"^[a-z_]+$")] | None = None
    confidence: float = Field(default=1.0, ge=0, le=1)


class DecideRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    visitor_id: Annotated[str, Field(min_length=1, max_length=200, pattern=_TEXT)]
    attributes: dict[str, Scalar | list[Scalar] | None] = Field(
        default_factory=dict, max_length=100
    )
    text: Annotated[str, Field(max_length=5000)] | None = Field(
        default=None, description="The visitor's latest words, read for emotion."
    )
    emotion: EmotionIn | None = None
    flags: list[Key] | None = Field(default=None, max_length=500)
    experiments: list[Key] | None = Field(default=None, max_length=100)
    adaptation: bool = True


class FlagDecision(BaseModel):
    value: Any
    variation: str | None
    reason: str
    rule_id: str | None = None
    error_code: str | None = None


class VariantDecision(BaseModel):
    variant: str
    propensity: float
    payload: Any = None


class AdaptationDecision(BaseModel):
    key: str
    tone: str
    tokens: dict[str, Scalar]
    copy_text: dict[str, str] = Field(serialization_alias="copy")
    propensity: float
    policy: str


class DecideResponse(BaseModel):
    decision_id: str
    visitor_id: str
    holdout: bool
    personalised: bool = Field(
        description="Whether the visitor's consent allowed a personalised decision (emotion "
        "context and the adaptation bandit); flags and experiments are served either way."
    )
    bot: bool = Field(
        description="The visitor is judged a bot: flags only, no experiment or adaptation."
    )
    emotion: dict[str, Any] | None
    flags: dict[str, FlagDecision]
    experiments: dict[str, VariantDecision]
    adaptation: AdaptationDecision | None


# --- rollouts -------------------------------------------------------------------------------

RolloutStatus = Literal["running", "completed", "rolled_back", "paused"]


class SegmentIn(BaseModel):
    """A group of visitors whose guardrails are watched apart, and rolled back apart."""

    model_config = ConfigDict(extra="forbid")

    key: Key
    clauses: list[ClauseIn] = Field(min_length=1, max_length=20)


class RolloutCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variation: Key = Field(description="The variation being rolled out (the flag's new value).")
    control: Key | None = Field(
        default=None, description="What everyone else gets; the flag's off variation."
    )
    stages: list[float] = Field(default_factory=lambda: list(DEFAULT_STAGES), min_length=1)
    min_visitors_per_stage: int = Field(default=200, ge=1, le=10_000_000)
    min_seconds_per_stage: int = Field(default=0, ge=0, le=30 * 86_400)
    guardrails: list[MetricIn] = Field(min_length=1, max_length=10)
    segments: list[SegmentIn] = Field(default_factory=list, max_length=10)
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    comment: Description = ""

    @model_validator(mode="after")
    def _stages_rise(self) -> RolloutCreate:
        stages = self.stages
        if any(not 0 < s <= 100 for s in stages):
            raise ValueError("stages are percentages in (0, 100]")
        if any(b <= a for a, b in itertools.pairwise(stages)):
            raise ValueError("stages must rise strictly")
        if stages[-1] != 100:
            raise ValueError("the last stage must be 100")
        if any(m.kind == "ratio" for m in self.guardrails):
            raise ValueError("guardrails are conversion, count or sum metrics")
        return self


class RolloutEvent(BaseModel):
    at: datetime
    action: str
    stage: float
    detail: str


class RolloutRead(BaseModel):
    id: str
    flag_key: str
    status: RolloutStatus
    variation: str
    control: str
    stage: float
    stages: list[float]
    stage_started_at: datetime
    min_visitors_per_stage: int
    min_seconds_per_stage: int
    guardrails: list[MetricIn]
    segments: list[SegmentIn]
    rolled_back_segments: list[str]
    alpha: float
    history: list[RolloutEvent]
    created_at: datetime
    updated_at: datetime
