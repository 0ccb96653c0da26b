"""The privacy domain's tables and API schemas.

* ``privacy_settings`` -- per workspace: consent mode, PII rules, retention.
* ``consent_states`` -- each visitor's current answers per purpose (what enforcement reads).
* ``consent_records`` -- every consent change with its time and source (the proof of consent);
  the audit log names a change by its record id, never by the visitor's id, so that erasing
  the records leaves no identifier in the append-only chain.
* ``subject_requests`` -- erasures, exports and retention runs, with their reports (counts per
  store; no identifier of the person).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import JSON, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from nexus.core.clock import utcnow
from nexus.privacy.consent import ConsentMode, Purpose
from nexus.storage.base import Base, UTCDateTime

SUBJECT_LENGTH = 1024


class PrivacySettings(Base):
    __tablename__ = "privacy_settings"

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    consent_mode: Mapped[str] = mapped_column(String(16))
    pii: Mapped[dict[str, Any]] = mapped_column(JSON)
    retention_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ConsentStateRow(Base):
    __tablename__ = "consent_states"

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    subject_id: Mapped[str] = mapped_column(String(SUBJECT_LENGTH), primary_key=True)
    granted: Mapped[list[str]] = mapped_column(JSON)
    denied: Mapped[list[str]] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(40))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ConsentRecord(Base):
    __tablename__ = "consent_records"
    __table_args__ = (Index("ix_consent_records_subject", "workspace_id", "subject_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    subject_id: Mapped[str] = mapped_column(String(SUBJECT_LENGTH))
    answers: Mapped[dict[str, bool]] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(40))
    recorded_by: Mapped[str] = mapped_column(String(200))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class SubjectRequest(Base):
    __tablename__ = "subject_requests"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(20))
    requested_by: Mapped[str] = mapped_column(String(200))
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


# --- API schemas ----------------------------------------------------------------------------


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid")


SubjectId = Annotated[
    str, Field(min_length=1, max_length=SUBJECT_LENGTH, pattern=r"^[^\x00-\x1f\x7f]+$")
]
Source = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[a-z0-9_.:-]+$")]


class ConsentUpdate(_Schema):
    """A visitor's answers: any subset of the purposes, ``true`` = granted."""

    visitor_id: SubjectId = Field(
        description="The id events carry for the visitor: anonymousId or userId."
    )
    purposes: dict[Purpose, bool] = Field(min_length=1)
    source: Source | None = Field(
        default=None,
        description="Where the answer was given (banner, form, preference-center …); "
        "defaults to 'sdk' for the public write key, 'api' for secret keys.",
    )


class ConsentRecordRead(_Schema):
    id: str
    purposes: dict[str, bool]
    source: str
    recorded_by: str
    recorded_at: datetime


class ConsentRead(_Schema):
    visitor_id: str
    mode: ConsentMode
    answers: dict[str, bool] = Field(description="The visitor's explicit answers per purpose.")
    permitted: dict[str, bool] = Field(
        description="What the server may do under the workspace's consent mode."
    )
    updated_at: datetime | None
    source: str | None
    history: list[ConsentRecordRead] | None = None


PiiEntity = Literal[
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "IP_ADDRESS",
    "STREET_ADDRESS",
    "PERSON",
]
PiiActionName = Literal["drop", "mask", "hash", "encrypt", "keep"]
PropertyGlob = Annotated[
    str,
    Field(
        min_length=3, max_length=200, pattern=r"^(properties|traits|context)(\.[^\x00-\x1f.]+)+$"
    ),
]
PatternName = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[A-Z][A-Z0-9_]*$")]


class CustomPattern(_Schema):
    name: PatternName = Field(description="The entity name findings get, e.g. CUSTOMER_ID.")
    pattern: Annotated[str, Field(min_length=1, max_length=500)] = Field(
        description="A Python regular expression."
    )
    score: float = Field(default=0.8, gt=0, le=1)
    action: PiiActionName = "mask"


class PiiSettings(_Schema):
    enabled: bool = True
    entities: dict[PiiEntity, PiiActionName] = Field(
        default_factory=dict,
        description="Action per entity; an entity not listed is masked.",
    )
    properties: dict[PropertyGlob, PiiActionName] = Field(
        default_factory=dict,
        max_length=100,
        json_schema_extra={"additionalProperties": False},
        description="Action per property path (glob), over the entity's: "
        "e.g. {'traits.email': 'encrypt', 'properties.*_note': 'drop'}.",
    )
    custom_patterns: list[CustomPattern] = Field(default_factory=list, max_length=50)


class PrivacySettingsRead(_Schema):
    consent_mode: ConsentMode
    pii: PiiSettings
    retention_days: int | None = Field(
        description="Events older than this are deleted on a schedule; null keeps them."
    )


class PrivacySettingsUpdate(_Schema):
    consent_mode: ConsentMode | None = None
    pii: PiiSettings | None = None
    retention_days: int | None = Field(default=None, ge=1, le=36_500)
    clear_retention: bool = Field(default=False, description="Keep events forever again.")


class SubjectRequestCreate(_Schema):
    visitor_id: SubjectId = Field(
        description="Any id of the person (anonymousId or userId); ids linked to it by "
        "identify/alias are included."
    )


class SubjectRequestRead(_Schema):
    id: str
    kind: str
    requested_by: str
    created_at: datetime
    report: dict[str, Any]


class PrivacyCounters(_Schema):
    events_dropped: int = Field(description="Events dropped: no analytics consent.")
    events_stripped: int = Field(description="Events whose text was removed: no emotion consent.")
    values_redacted: int = Field(description="PII values dropped, masked, hashed or encrypted.")
    by_entity: dict[str, int]
