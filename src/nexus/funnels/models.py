"""Funnel definitions (a table of the metadata database) and the schemas of the funnels API."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import JSON, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from nexus.core.clock import utcnow
from nexus.events.store import FILTER_OPS, FilterOp, PropertyPath
from nexus.storage.base import Base, CreatedAt, UTCDateTime

MAX_STEPS = 20
MIN_STEPS = 2
MAX_FILTERS = 20
MAX_EXCLUSIONS = 10
MAX_WINDOW_SECONDS = 366 * 86_400
DEFAULT_WINDOW_SECONDS = 14 * 86_400
Mode = Literal["ordered", "strict", "unordered"]
Interval = Literal["hour", "day"]
# Letters, digits, spaces and common punctuation; no control characters. Mirrors what the
# schema promises so that generated requests and our checks agree.
_TEXT = r"^[^\x00-\x1f\x7f]+$"


class Funnel(CreatedAt, Base):
    """A saved funnel: its steps and options as JSON (validated by :class:`FunnelDefinition`)."""

    __tablename__ = "funnels"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


# --- definitions --------------------------------------------------------------------------

Scalar = str | int | float | bool
EventName = Annotated[str, Field(min_length=1, max_length=512, pattern=_TEXT)]


class PropertyFilterIn(BaseModel):
    """``{"property": "properties.plan", "op": "eq", "value": "pro"}``.

    ``property`` is ``properties.x`` (or just ``x``), ``context.campaign.source``,
    ``traits.x``, ``person.x`` (the person's identify traits), or a top-level field
    (``name``, ``user_id`` …). The value's type depends on ``op``: a string, number or boolean
    for ``eq``/``neq``; a string for ``contains`` and ``regex`` (RE2 syntax); a number for
    ``gt``/``lt``; a non-empty list for ``in``; a boolean for ``is_set``.
    """

    model_config = ConfigDict(extra="forbid")

    property: str = Field(min_length=1, max_length=500, pattern=_TEXT)
    op: FilterOp
    value: Scalar | list[Scalar] | None = None

    @field_validator("property")
    @classmethod
    def _property_parses(cls, value: str) -> str:
        PropertyPath.parse(value)
        return value

    @model_validator(mode="after")
    def _value_fits_op(self) -> PropertyFilterIn:
        value = self.value
        op = self.op
        if op in ("eq", "neq") and (value is None or isinstance(value, list)):
            raise ValueError(f"'{op}' needs a string, number or boolean value")
        if op in ("contains", "regex") and not isinstance(value, str):
            raise ValueError(f"'{op}' needs a string value")
        if op in ("gt", "lt") and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError(f"'{op}' needs a number")
        if op == "in" and (not isinstance(value, list) or not value or len(value) > 1000):
            raise ValueError("'in' needs a list of 1 to 1000 values")
        if op == "is_set":
            if value is None:
                self.value = True
            elif not isinstance(value, bool):
                raise ValueError("'is_set' takes true or false")
        if op == "regex":
            assert isinstance(value, str)
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return self


assert set(FILTER_OPS) == {"eq", "neq", "contains", "regex", "gt", "lt", "in", "is_set"}


class StepIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event: EventName = Field(description="Event name; $page, $screen … for non-track calls.")
    filters: list[PropertyFilterIn] = Field(default_factory=list, max_length=MAX_FILTERS)
    optional: bool = Field(
        default=False, description="May be skipped (ordered mode; never the first step)."
    )
    label: str | None = Field(default=None, max_length=200, pattern=_TEXT)


class ExclusionIn(BaseModel):
    """Persons doing this event between two steps of a conversion don't count for it."""

    model_config = ConfigDict(extra="forbid")

    event: EventName
    filters: list[PropertyFilterIn] = Field(default_factory=list, max_length=MAX_FILTERS)
    after_step: int = Field(default=0, ge=0, lt=MAX_STEPS, description="0-based step index.")
    before_step: int = Field(default=1, ge=1, lt=MAX_STEPS, description="0-based step index.")


class FunnelDefinition(BaseModel):
    """What a funnel measures."""

    model_config = ConfigDict(extra="forbid")

    steps: list[StepIn] = Field(min_length=MIN_STEPS, max_length=MAX_STEPS)
    mode: Mode = Field(
        default="ordered",
        description="ordered: steps in order, other events may happen between; strict: "
        "nothing else between steps; unordered: any order.",
    )
    window_seconds: int = Field(
        default=DEFAULT_WINDOW_SECONDS,
        ge=1,
        le=MAX_WINDOW_SECONDS,
        description="Conversion window from the first step to the last.",
    )
    exclusions: list[ExclusionIn] = Field(default_factory=list, max_length=MAX_EXCLUSIONS)
    bots: Literal["exclude", "only", "include"] = Field(
        default="exclude",
        description="Events of visitors judged bots (context.bot): left out, shown alone, "
        "or counted with everyone.",
    )
    breakdown: str | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        pattern=_TEXT,
        description="Default breakdown property (e.g. properties.variant, context.campaign."
        "source, person.plan).",
    )

    @field_validator("breakdown")
    @classmethod
    def _breakdown_parses(cls, value: str | None) -> str | None:
        if value is not None:
            PropertyPath.parse(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FunnelDefinition:
        check_definition(self)
        return self


def check_definition(definition: FunnelDefinition) -> None:
    """The rules across fields; raises ValueError naming the offending part."""
    steps = definition.steps
    if steps[0].optional:
        raise ValueError("the first step cannot be optional")
    if definition.mode != "ordered" and any(s.optional for s in steps):
        raise ValueError(f"optional steps need mode 'ordered', not '{definition.mode}'")
    for index, exclusion in enumerate(definition.exclusions):
        if exclusion.before_step >= len(steps):
            raise ValueError(f"exclusion {index}: before_step is past the last step")
        if exclusion.after_step >= exclusion.before_step:
            raise ValueError(f"exclusion {index}: after_step must come before before_step")


class FunnelCreate(FunnelDefinition):
    name: str = Field(min_length=1, max_length=200, pattern=_TEXT)


class FunnelUpdate(BaseModel):
    """Fields to change; the result must still be a valid funnel."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=_TEXT)
    steps: list[StepIn] | None = Field(default=None, min_length=MIN_STEPS, max_length=MAX_STEPS)
    mode: Mode | None = None
    window_seconds: int | None = Field(default=None, ge=1, le=MAX_WINDOW_SECONDS)
    exclusions: list[ExclusionIn] | None = Field(default=None, max_length=MAX_EXCLUSIONS)
    breakdown: str | None = Field(default=None, min_length=1, max_length=500, pattern=_TEXT)


class FunnelRead(FunnelDefinition):
    id: str
    name: str
    created_at: datetime
    updated_at: datetime


class FunnelQuery(FunnelDefinition):
    """An unsaved funnel and the period to report on (``POST /v1/funnels/query``)."""

    start: datetime | None = Field(default=None, description="Default: 30 days before end.")
    end: datetime | None = Field(default=None, description="Default: now.")
    interval: Interval | None = None


# --- reports ------------------------------------------------------------------------------


class StepReport(BaseModel):
    index: int
    event: str
    label: str | None
    optional: bool
    count: int
    conversion_from_start: float
    conversion_from_previous: float
    dropped: int = Field(description="Persons of the previous required step who did not get here.")
    median_seconds_from_start: float | None


class HistogramBinRead(BaseModel):
    from_seconds: float
    to_seconds: float
    count: int


class TimeToConvertRead(BaseModel):
    converted: int
    median_seconds: float | None
    p90_seconds: float | None
    mean_seconds: float | None
    histogram: list[HistogramBinRead]


class TrendPoint(BaseModel):
    start: datetime
    entered: int
    converted: int
    conversion_rate: float


class FunnelResult(BaseModel):
    entered: int
    steps: list[StepReport]
    time_to_convert: TimeToConvertRead
    trend: list[TrendPoint] = Field(default_factory=list)


class BreakdownResult(FunnelResult):
    value: str | None


class FunnelReport(FunnelResult):
    """A funnel over ``[start, end)``: totals, and per value of ``breakdown`` if asked."""

    start: datetime
    end: datetime
    mode: Mode
    window_seconds: int
    breakdown_property: str | None
    breakdown: list[BreakdownResult] = Field(default_factory=list)


class FunnelPeople(BaseModel):
    """Persons who reached the step before ``step`` but not ``step`` itself."""

    step: int
    items: list[str]
    next_cursor: str | None = None
