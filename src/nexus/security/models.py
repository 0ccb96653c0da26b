"""The ``audit_log`` table: the sealed entries of every audit chain.

The primary key ``(chain, seq)`` is what keeps a chain linear: two writers that read the same
head both try to insert the next number and only one succeeds (see
:func:`nexus.security.service.append_entry`). ``chain`` is a workspace id or ``"global"``
and has no foreign key on purpose: the record of what happened in a workspace outlives it.
Nothing here stops an UPDATE or DELETE; the hashes make one visible (``nexus audit verify``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from nexus.storage.base import Base, UTCDateTime


class AuditLogEntry(Base):
    """One entry of a chain, as :class:`nexus.security.audit.AuditEntry` describes it."""

    __tablename__ = "audit_log"

    chain: Mapped[str] = mapped_column(String(40), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(80), index=True)
    target: Mapped[str] = mapped_column(String(200))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
