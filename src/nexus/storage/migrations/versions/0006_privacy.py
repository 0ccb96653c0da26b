"""Privacy: per-workspace settings, consent (current answers and every change), subject requests.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _workspace_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["workspace_id"],
        ["workspaces.id"],
        name=op.f(f"fk_{table}_workspace_id_workspaces"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "privacy_settings",
        sa.Column("workspace_id", sa.String(32), nullable=False),
        sa.Column("consent_mode", sa.String(16), nullable=False),
        sa.Column("pii", sa.JSON(), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _workspace_fk("privacy_settings"),
        sa.PrimaryKeyConstraint("workspace_id", name=op.f("pk_privacy_settings")),
    )
    op.create_table(
        "consent_states",
        sa.Column("workspace_id", sa.String(32), nullable=False),
        sa.Column("subject_id", sa.String(1024), nullable=False),
        sa.Column("granted", sa.JSON(), nullable=False),
        sa.Column("denied", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(40), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _workspace_fk("consent_states"),
        sa.PrimaryKeyConstraint("workspace_id", "subject_id", name=op.f("pk_consent_states")),
    )
    op.create_table(
        "consent_records",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("workspace_id", sa.String(32), nullable=False),
        sa.Column("subject_id", sa.String(1024), nullable=False),
        sa.Column("answers", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(40), nullable=False),
        sa.Column("recorded_by", sa.String(200), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        _workspace_fk("consent_records"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_records")),
    )
    op.create_index("ix_consent_records_subject", "consent_records", ["workspace_id", "subject_id"])
    op.create_index(op.f("ix_consent_records_recorded_at"), "consent_records", ["recorded_at"])
    op.create_table(
        "subject_requests",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("workspace_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("requested_by", sa.String(200), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _workspace_fk("subject_requests"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subject_requests")),
    )
    op.create_index(op.f("ix_subject_requests_workspace_id"), "subject_requests", ["workspace_id"])


def downgrade() -> None:
    op.drop_table("subject_requests")
    op.drop_table("consent_records")
    op.drop_table("consent_states")
    op.drop_table("privacy_settings")
