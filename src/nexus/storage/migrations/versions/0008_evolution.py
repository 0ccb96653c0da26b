"""Evolution campaigns and the activity feed.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "evolution_campaigns",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("workspace_id", sa.String(32), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("funnel", sa.String(64), nullable=False),
        sa.Column("step", sa.String(64), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("state", sa.JSON(), nullable=True),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("flag_key", sa.String(100), nullable=True),
        sa.Column("rollout_id", sa.String(32), nullable=True),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_evolution_campaigns_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evolution_campaigns")),
        sa.UniqueConstraint("workspace_id", "key", name="uq_evolution_campaigns_workspace_key"),
    )
    op.create_index(
        op.f("ix_evolution_campaigns_workspace_id"), "evolution_campaigns", ["workspace_id"]
    )
    op.create_table(
        "evolution_activity",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("workspace_id", sa.String(32), nullable=False),
        sa.Column("campaign", sa.String(64), nullable=True),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_evolution_activity_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evolution_activity")),
    )
    op.create_index(
        op.f("ix_evolution_activity_workspace_id"), "evolution_activity", ["workspace_id"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_evolution_activity_workspace_id"), table_name="evolution_activity")
    op.drop_table("evolution_activity")
    op.drop_index(op.f("ix_evolution_campaigns_workspace_id"), table_name="evolution_campaigns")
    op.drop_table("evolution_campaigns")
