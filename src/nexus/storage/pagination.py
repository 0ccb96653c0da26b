"""Cursor pagination over any ``SELECT`` of one entity, keyed by a unique, sortable column.

The cursor is opaque to clients (URL-safe base64 of the last key seen). Keyset pagination keeps
pages stable while rows are inserted, unlike offsets.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field
from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from nexus.core.errors import FieldError, InvalidInput

MAX_PAGE_SIZE = 200
# Unpadded base64url, exactly: any string of this shape decodes, so the schema says the truth.
CURSOR_PATTERN = r"^([A-Za-z0-9_-]{4})*([A-Za-z0-9_-]{2,3})?$"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: Sequence[T]
    next_cursor: str | None


def encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.b64decode(padded.encode(), altchars=b"-_", validate=True)
        # A well-formed cursor we did not issue simply points somewhere in the key order.
        # (PostgreSQL text cannot hold NUL, so it is dropped rather than sent.)
        return raw.decode("utf-8", errors="replace").replace("\x00", "")
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(
            "The cursor is not one this API returned.",
            errors=[FieldError(("query", "cursor"), "invalid cursor")],
        ) from exc


def paginate(
    session: Session,
    stmt: Select[T],
    *,
    key: InstrumentedAttribute[Any],
    cursor: str | None,
    limit: int,
    descending: bool = False,
) -> Page[T]:
    """One page of ``stmt`` ordered by ``key`` (newest ids first when ``descending``),
    starting after ``cursor``."""
    limit = max(1, min(limit, MAX_PAGE_SIZE))
    if cursor:
        after = decode_cursor(cursor)
        stmt = stmt.where(key < after if descending else key > after)
    order = key.desc() if descending else key
    rows = list(session.scalars(stmt.order_by(order).limit(limit + 1)))
    if len(rows) <= limit:
        return Page(rows, None)
    last = rows[limit - 1]
    return Page(rows[:limit], encode_cursor(str(getattr(last, key.key))))


class Paginated(BaseModel, Generic[T]):
    """A page of results on the wire: ``GET …?cursor=<next_cursor>`` fetches the next one."""

    items: list[T]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null at the end."
    )
