"""The privacy domain's service: settings, consent records, subject-request reports.

What a serving process holds (caches, the ingest screen, erasure across stores) is
:class:`nexus.privacy.runtime.PrivacyRuntime`; this module is the database side.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from nexus.core.clock import utcnow
from nexus.core.ids import new_id
from nexus.privacy.consent import ConsentMode, ConsentState, Permissions, Purpose
from nexus.privacy.models import (
    ConsentRead,
    ConsentRecord,
    ConsentRecordRead,
    ConsentStateRow,
    PiiSettings,
    PrivacySettings,
    PrivacySettingsRead,
    PrivacySettingsUpdate,
    SubjectRequest,
    SubjectRequestRead,
)
from nexus.security.service import append_entry

DEFAULT_CONSENT_MODE: ConsentMode = "opt_out"


# --- settings -------------------------------------------------------------------------------


def get_settings(
    session: Session, *, workspace_id: str, default_mode: ConsentMode = DEFAULT_CONSENT_MODE
) -> PrivacySettingsRead:
    row = session.get(PrivacySettings, workspace_id)
    if row is None:
        return PrivacySettingsRead(
            consent_mode=default_mode, pii=PiiSettings(), retention_days=None
        )
    return PrivacySettingsRead(
        consent_mode=row.consent_mode,
        pii=PiiSettings.model_validate(row.pii),
        retention_days=row.retention_days,
    )


def update_settings(
    session: Session,
    *,
    workspace_id: str,
    update: PrivacySettingsUpdate,
    actor: str,
    default_mode: ConsentMode = DEFAULT_CONSENT_MODE,
) -> PrivacySettingsRead:
    current = get_settings(session, workspace_id=workspace_id, default_mode=default_mode)
    changed: list[str] = []
    mode = current.consent_mode
    if update.consent_mode is not None and update.consent_mode != mode:
        mode = update.consent_mode
        changed.append("consent_mode")
    pii = current.pii
    if update.pii is not None and update.pii != pii:
        pii = update.pii
        changed.append("pii")
    retention = current.retention_days
    if update.clear_retention:
        if retention is not None:
            changed.append("retention_days")
        retention = None
    elif update.retention_days is not None and update.retention_days != retention:
        retention = update.retention_days
        changed.append("retention_days")
    row = session.get(PrivacySettings, workspace_id)
    if row is None:
        row = PrivacySettings(workspace_id=workspace_id)
        session.add(row)
    row.consent_mode = mode
    row.pii = pii.model_dump(mode="json")
    row.retention_days = retention
    row.updated_at = utcnow()
    session.flush()
    if changed:
        append_entry(
            session,
            workspace_id=workspace_id,
            actor=actor,
            action="privacy_settings.updated",
            target=workspace_id,
            details={
                "changed": changed,
                "consent_mode": mode,
                "retention_days": retention,
                # The rules' shape, not the patterns themselves (those may name customers).
                "pii_rules": len(pii.properties) + len(pii.entities),
                "custom_patterns": [p.name for p in pii.custom_patterns],
            },
        )
    return PrivacySettingsRead(consent_mode=mode, pii=pii, retention_days=retention)


def retention_policies(session: Session) -> list[tuple[str, int]]:
    """(workspace, days) of every workspace with a retention period."""
    rows = session.execute(
        select(PrivacySettings.workspace_id, PrivacySettings.retention_days).where(
            PrivacySettings.retention_days.is_not(None)
        )
    ).all()
    return [(w, int(d)) for w, d in rows if d is not None]


# --- consent --------------------------------------------------------------------------------


def _state(row: ConsentStateRow | None) -> ConsentState:
    if row is None:
        return ConsentState()
    return ConsentState(
        frozenset(Purpose(p) for p in row.granted), frozenset(Purpose(p) for p in row.denied)
    )


def consent_states(
    session: Session, *, workspace_id: str, subjects: Iterable[str]
) -> dict[str, ConsentState]:
    """The answers of each of ``subjects`` that has any (others are absent)."""
    wanted = list(dict.fromkeys(subjects))
    out: dict[str, ConsentState] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = session.scalars(
            select(ConsentStateRow).where(
                ConsentStateRow.workspace_id == workspace_id,
                ConsentStateRow.subject_id.in_(chunk),
            )
        )
        out.update({row.subject_id: _state(row) for row in rows})
    return out


def has_consent_records(session: Session, *, workspace_id: str) -> bool:
    found = session.execute(
        select(ConsentStateRow.subject_id)
        .where(ConsentStateRow.workspace_id == workspace_id)
        .limit(1)
    ).first()
    return found is not None


def record_consent(
    session: Session,
    *,
    workspace_id: str,
    subject_id: str,
    answers: Mapping[Purpose, bool],
    source: str,
    actor: str,
) -> tuple[ConsentRecord, ConsentState]:
    """Store a visitor's answers (history and current state) and audit the change."""
    row = session.get(ConsentStateRow, (workspace_id, subject_id))
    state = _state(row).updated(answers)
    now = utcnow()
    if row is None:
        row = ConsentStateRow(workspace_id=workspace_id, subject_id=subject_id)
        session.add(row)
    row.granted = sorted(p.value for p in state.granted)
    row.denied = sorted(p.value for p in state.denied)
    row.source = source
    row.updated_at = now
    record = ConsentRecord(
        id=new_id("cns"),
        workspace_id=workspace_id,
        subject_id=subject_id,
        answers={p.value: given for p, given in sorted(answers.items())},
        source=source,
        recorded_by=actor,
        recorded_at=now,
    )
    session.add(record)
    session.flush()
    append_entry(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action="consent.updated",
        # The record's id, not the visitor's: erasing the record unlinks the entry.
        target=record.id,
        details={"purposes": record.answers, "source": source},
    )
    return record, state


def consent_read(
    session: Session,
    *,
    workspace_id: str,
    subject_id: str,
    mode: ConsentMode,
    history: bool = False,
) -> ConsentRead:
    row = session.get(ConsentStateRow, (workspace_id, subject_id))
    state = _state(row)
    permitted = Permissions.of(state, mode)
    records = None
    if history:
        records = [
            ConsentRecordRead(
                id=r.id,
                purposes=r.answers,
                source=r.source,
                recorded_by=r.recorded_by,
                recorded_at=r.recorded_at,
            )
            for r in session.scalars(
                select(ConsentRecord)
                .where(
                    ConsentRecord.workspace_id == workspace_id,
                    ConsentRecord.subject_id == subject_id,
                )
                .order_by(ConsentRecord.recorded_at, ConsentRecord.id)
            )
        ]
    return ConsentRead(
        visitor_id=subject_id,
        mode=mode,
        answers=state.as_answers(),
        permitted={p.value: getattr(permitted, p.value) for p in Purpose},
        updated_at=row.updated_at if row is not None else None,
        source=row.source if row is not None else None,
        history=records,
    )


def export_consent(session: Session, *, workspace_id: str, subjects: set[str]) -> dict[str, Any]:
    states = consent_states(session, workspace_id=workspace_id, subjects=subjects)
    records = session.scalars(
        select(ConsentRecord)
        .where(ConsentRecord.workspace_id == workspace_id, ConsentRecord.subject_id.in_(subjects))
        .order_by(ConsentRecord.recorded_at, ConsentRecord.id)
    )
    return {
        "current": {s: state.as_answers() for s, state in sorted(states.items())},
        "history": [
            {
                "visitor_id": r.subject_id,
                "purposes": r.answers,
                "source": r.source,
                "recorded_at": r.recorded_at.isoformat(),
            }
            for r in records
        ],
    }


def erase_consent(session: Session, *, workspace_id: str, subjects: set[str]) -> int:
    removed = 0
    for model in (ConsentStateRow, ConsentRecord):
        result = session.execute(
            delete(model).where(model.workspace_id == workspace_id, model.subject_id.in_(subjects))
        )
        removed += int(getattr(result, "rowcount", 0) or 0)
    return removed


def count_consent(session: Session, *, workspace_id: str, subjects: set[str]) -> int:
    total = 0
    for model in (ConsentStateRow, ConsentRecord):
        total += int(
            session.scalar(
                select(func.count())
                .select_from(model)
                .where(model.workspace_id == workspace_id, model.subject_id.in_(subjects))
            )
            or 0
        )
    return total


def expire_consent_history(session: Session, *, workspace_id: str, before: datetime) -> int:
    """Consent changes older than ``before`` that a later change superseded are not needed as
    proof any more; the current answers stay."""
    result = session.execute(
        delete(ConsentRecord).where(
            ConsentRecord.workspace_id == workspace_id, ConsentRecord.recorded_at < before
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


# --- subject requests -----------------------------------------------------------------------


def save_request(
    session: Session, *, workspace_id: str, kind: str, actor: str, report: dict[str, Any]
) -> SubjectRequestRead:
    row = SubjectRequest(
        id=new_id("dsr"), workspace_id=workspace_id, kind=kind, requested_by=actor, report=report
    )
    session.add(row)
    session.flush()
    append_entry(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action=f"subject.{kind}",
        target=row.id,
        details={
            "stores": {
                k: v.get("removed", v.get("records")) for k, v in report.get("stores", {}).items()
            }
        },
    )
    return request_read(row)


def request_read(row: SubjectRequest) -> SubjectRequestRead:
    return SubjectRequestRead(
        id=row.id,
        kind=row.kind,
        requested_by=row.requested_by,
        created_at=row.created_at,
        report=row.report,
    )


def list_requests(
    session: Session, *, workspace_id: str, limit: int = 50
) -> list[SubjectRequestRead]:
    rows = session.scalars(
        select(SubjectRequest)
        .where(SubjectRequest.workspace_id == workspace_id)
        .order_by(SubjectRequest.created_at.desc(), SubjectRequest.id.desc())
        .limit(limit)
    )
    return [request_read(r) for r in rows]
