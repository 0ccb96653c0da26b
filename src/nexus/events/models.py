"""Schemas of the events API: what the ingestion endpoints answer and what the event list shows.

Ingestion bodies are parsed by hand (:mod:`nexus.events.normalize`) so that one invalid message
of a batch is reported by its index instead of failing the whole request; their OpenAPI
description is :func:`message_schema` and :data:`BATCH_SCHEMA`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nexus.events.normalize import (
    EVENT_TYPES,
    MAX_BATCH_BYTES,
    MAX_EVENT_BYTES,
    MAX_ID_LENGTH,
    MAX_NAME_LENGTH,
)

_ID = {
    "anyOf": [
        {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH},
        {"type": "number"},
        {"type": "null"},
    ]
}
_TIME = {"type": ["string", "null"], "format": "date-time"}
_OBJECT = {"type": ["object", "null"]}
_TEXT = {"type": ["string", "null"], "maxLength": MAX_NAME_LENGTH}


def _present(field: str) -> dict[str, Any]:
    return {"required": [field], "properties": {field: {"not": {"type": "null"}}}}


def _when(kind: str, *fields: str) -> dict[str, Any]:
    return {
        "if": {"required": ["type"], "properties": {"type": {"const": kind}}},
        "then": {"allOf": [_present(f) for f in fields]},
    }


def message_schema(kind: str | None = None) -> dict[str, Any]:
    """The JSON Schema of a Segment message, as :func:`~nexus.events.normalize.normalize`
    checks it (``kind`` = the type a single-call endpoint implies)."""
    rules: list[dict[str, Any]] = [{"anyOf": [_present("userId"), _present("anonymousId")]}]
    if kind is None:
        rules += [_when("track", "event"), _when("alias", "previousId", "userId")]
        rules += [_when("group", "groupId")]
    elif kind == "track":
        rules.append(_present("event"))
    elif kind == "alias":
        rules += [_present("previousId"), _present("userId")]
    elif kind == "group":
        rules.append(_present("groupId"))
    schema: dict[str, Any] = {
        "type": "object",
        "description": (
            "A Segment message (https://segment.com/docs/connections/spec/). Needs userId or "
            "anonymousId; track needs event, alias needs previousId and userId, group needs "
            f"groupId. At most {MAX_EVENT_BYTES} bytes of JSON."
        ),
        "properties": {
            "type": {"type": "string", "enum": [kind] if kind else list(EVENT_TYPES)},
            "event": {"type": ["string", "null"], "minLength": 1, "maxLength": MAX_NAME_LENGTH},
            "userId": _ID,
            "anonymousId": _ID,
            "messageId": _ID,
            "properties": _OBJECT,
            "traits": _OBJECT,
            "context": _OBJECT,
            "integrations": _OBJECT,
            "timestamp": _TIME,
            "originalTimestamp": _TIME,
            "sentAt": _TIME,
            "name": _TEXT,
            "groupId": _ID,
            "previousId": _ID,
        },
        "allOf": rules,
    }
    if kind is None:
        schema["required"] = ["type"]
    return schema


BATCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": (
        f"At most {MAX_BATCH_BYTES} bytes. Each message is validated on its own: invalid ones "
        "are listed in the answer by index, the others are stored."
    ),
    "required": ["batch"],
    "properties": {
        "batch": {"type": "array", "items": message_schema()},
        "sentAt": _TIME,
        "context": _OBJECT,
        "integrations": _OBJECT,
        "writeKey": {"type": "string"},
    },
}


class RejectedMessage(BaseModel):
    index: int = Field(description="Position of the message in the batch (0 for single calls).")
    detail: str
    field: str | None = None


class IngestResult(BaseModel):
    """Segment's answer (``success``) plus what NEXUS did with each message."""

    success: bool = True
    accepted: int = Field(description="Messages stored durably (duplicates included).")
    rejected: list[RejectedMessage] = Field(default_factory=list)
    withheld: int = Field(
        default=0,
        description="Valid messages not stored because the visitor did not consent to "
        "analytics (counted in GET /v1/privacy/counters).",
    )


class EventRead(BaseModel):
    """A stored event, Segment-shaped."""

    model_config = ConfigDict(extra="allow")

    type: str
    messageId: str  # noqa: N815 - Segment's field names
    timestamp: str
    receivedAt: str  # noqa: N815
    event: str | None = None
    userId: str | None = None  # noqa: N815
    anonymousId: str | None = None  # noqa: N815


class EventPage(BaseModel):
    items: list[EventRead]
    next_cursor: str | None = None
