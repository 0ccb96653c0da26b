"""The decision engine: flags and their audit trail, experiments, UI adaptations, decision
settings, bandit states and guarded rollouts.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def _workspace_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["workspace_id"],
        ["workspaces.id"],
        name=op.f(f"fk_{table}_workspace_id_workspaces"),
        ondelete="CASCADE",
    )


def _keyed_document_table(table: str, *columns: sa.Column[object]) -> None:
    """A table of JSON documents with an id, a workspace and a key unique in it."""
    op.create_table(
        table,
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("workspace_id", sa.String(32), nullable=False),
        sa.Column("key", sa.String(100), nullable=False),
        *columns,
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        _workspace_fk(table),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
        sa.UniqueConstraint("workspace_id", "key", name=f"uq_{table}_workspace_key"),
    )
    op.create_index(op.f(f"ix_{table}_workspace_id"), table, ["workspace_id"])


def upgrade() -> None:
    _keyed_document_table(
        "flags",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.create_table(
        "flag_changes",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("workspace_id", sa.String(32), nullable=False),
        sa.Column("flag_key", sa.String(100), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("at", TZ, nullable=False),
        _workspace_fk("flag_changes"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flag_changes")),
    )
    for column in ("workspace_id", "flag_key", "at"):
        op.create_index(op.f(f"ix_flag_changes_{column}"), "flag_changes", [column])
    _keyed_document_table(
        "experiments",
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("started_at", TZ, nullable=True),
        sa.Column("stopped_at", TZ, nullable=True),
    )
    _keyed_document_table("ui_adaptations")
    op.create_table(
        "decision_settings",
        sa.Column("workspace_id", sa.String(32), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        _workspace_fk("decision_settings"),
        sa.PrimaryKeyConstraint("workspace_id", name=op.f("pk_decision_settings")),
    )
    op.create_table(
        "bandit_states",
        sa.Column("workspace_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        _workspace_fk("bandit_states"),
        sa.PrimaryKeyConstraint("workspace_id", "name", name=op.f("pk_bandit_states")),
    )
    op.create_table(
        "rollouts",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("workspace_id", sa.String(32), nullable=False),
        sa.Column("flag_key", sa.String(100), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        _workspace_fk("rollouts"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollouts")),
    )
    op.create_index(op.f("ix_rollouts_workspace_id"), "rollouts", ["workspace_id"])
    op.create_index(op.f("ix_rollouts_flag_key"), "rollouts", ["flag_key"])


def downgrade() -> None:
    for table in ("rollouts", "bandit_states", "decision_settings"):
        op.drop_table(table)
    for table in ("ui_adaptations", "experiments", "flag_changes", "flags"):
        op.drop_table(table)
