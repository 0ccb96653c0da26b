"""Hosted funnels: the step pages NEXUS serves at /f/{workspace}/{funnel}/{step}.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "hosted_funnels",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("workspace_id", sa.String(32), nullable=False),
        sa.Column("slug", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("analytics_funnel_id", sa.String(32), nullable=True),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_hosted_funnels_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hosted_funnels")),
        sa.UniqueConstraint("workspace_id", "slug", name="uq_hosted_funnels_workspace_slug"),
    )
    op.create_index(op.f("ix_hosted_funnels_workspace_id"), "hosted_funnels", ["workspace_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_hosted_funnels_workspace_id"), table_name="hosted_funnels")
    op.drop_table("hosted_funnels")
