"""The emotion domain's table (per-workspace settings) and the schemas of its API.

(The domain's pure cores live in the ``models`` package, so tables and API shapes live here.)
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import JSON, ForeignKey
from sqlalchemy.orm import Mapped, mapped_column

from nexus.core.clock import utcnow
from nexus.storage.base import Base, UTCDateTime

MAX_TEXTS = 256
MAX_TEXT_CHARS = 10_000
DEFAULT_TEXT_PROPERTIES = ("message", "text", "comment", "review")
Mode = Literal["edge", "server", "cascade"]


class EmotionSettings(Base):
    """Which event properties carry visitor text worth reading, per workspace."""

    __tablename__ = "emotion_settings"

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    text_properties: Mapped[list[str]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid")


PropertyName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f.]+$")]
Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]


class EmotionSettingsRead(_Schema):
    text_properties: list[str] = Field(
        description="Event properties (under ``properties``) whose text is analysed on ingest."
    )


class EmotionSettingsUpdate(_Schema):
    text_properties: list[PropertyName] = Field(max_length=20)


class AnalyzeRequest(_Schema):
    """One ``text`` or a batch of ``texts`` (up to 256), and which tier reads them."""

    text: Text | None = None
    texts: list[Text] | None = Field(default=None, min_length=1, max_length=MAX_TEXTS)
    mode: Mode = Field(
        default="cascade",
        description="edge: the browser-sized model; server: the encoder; cascade: edge when "
        "confident, else server.",
    )
    visitor_id: (
        Annotated[str, Field(min_length=1, max_length=1024, pattern=r"^[^\x00-\x1f\x7f]+$")] | None
    ) = Field(
        default=None,
        description="Whose words these are: their consent to emotion analysis is checked. "
        "Required with the public write key when the workspace's consent mode is opt_in.",
    )

    @model_validator(mode="after")
    def _one_of(self) -> AnalyzeRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError("send exactly one of 'text' or 'texts'")
        return self


class EmotionVectorRead(_Schema):
    plutchik: dict[str, float] = Field(description="Plutchik's 8 emotions, probabilities.")
    valence: float = Field(ge=-1, le=1)
    arousal: float = Field(ge=-1, le=1)
    dominance: float = Field(ge=-1, le=1)
    labels: dict[str, float] = Field(description="The 28 GoEmotions label probabilities.")
    predicted: list[str] = Field(description="Labels over their tuned thresholds.")
    ekman: dict[str, float] = Field(description="Ekman-7 probabilities.")
    ekman_predicted: list[str]
    dominant: str
    confidence: float = Field(ge=0, le=1)
    tier: Literal["edge", "server"]


class AnalyzeResponse(_Schema):
    results: list[EmotionVectorRead]
    edge_share: float = Field(description="Share of these texts the edge tier answered.")
    models: dict[str, str] = Field(description="Version of each tier's model.")


class VadState(_Schema):
    valence: float
    arousal: float
    dominance: float


class Band(_Schema):
    mean: float
    lower: float
    upper: float


class EmotionPoint(_Schema):
    """One reading in a visitor's history, with the filtered state after it."""

    timestamp: datetime
    message_id: str
    observed: VadState
    filtered: VadState
    filtered_sd: VadState
    label: str
    ekman: str


class EmotionForecast(_Schema):
    step: int
    horizon_seconds: float
    valence: Band
    arousal: Band
    dominance: Band
    ekman: dict[str, float]


class VisitorEmotion(_Schema):
    visitor_id: str
    observations: int
    history: list[EmotionPoint]
    current: EmotionForecast | None = Field(
        description="Filtered state at the last reading (step 0), with 95% bands."
    )
    forecast: list[EmotionForecast]


CohortDimension = Literal["step", "variant", "campaign", "time"]


class CohortValue(_Schema):
    mean: float | None
    lower: float | None
    upper: float | None


class CohortRow(_Schema):
    group: str | None
    count: int
    valence: CohortValue
    arousal: CohortValue
    dominance: CohortValue
    ekman_share: dict[str, CohortValue]
    error: str | None = Field(default=None, description="Why an interval is missing, if it is.")


class CohortReport(_Schema):
    by: CohortDimension
    start: datetime
    end: datetime
    confidence: float
    resamples: int
    groups: list[CohortRow]
