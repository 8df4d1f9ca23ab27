"""Assets (data-aware scheduling): asset, asset_event, dag_schedule_asset_reference, asset_dag_run_queue.

Revision ID: 0004
Revises: 0003
Created: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the column types, so this file never changes with scheduler.db.models.
ID = sa.String(250)
TS = sa.DateTime(timezone=True)
JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "asset",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uri", sa.String(3000), nullable=False),
        sa.Column("extra", JSON, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_asset")),
        sa.UniqueConstraint("uri", name=op.f("uq_asset_uri")),
    )
    op.create_table(
        "asset_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("asset_id", sa.Integer(), nullable=False),
        sa.Column("extra", JSON, nullable=True),
        sa.Column("source_dag_id", ID, nullable=True),
        sa.Column("source_task_id", ID, nullable=True),
        sa.Column("source_run_id", ID, nullable=True),
        sa.Column("source_map_index", sa.Integer(), server_default=sa.text("-1"), nullable=False),
        sa.Column("timestamp", TS, nullable=False),
        sa.ForeignKeyConstraint(["asset_id"], ["asset.id"], name=op.f("fk_asset_event_asset_id_asset"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_asset_event")),
        sa.UniqueConstraint(
            "asset_id", "source_dag_id", "source_run_id", "source_task_id", "source_map_index",
            name=op.f("uq_asset_event_asset_id_source_dag_id_source_run_id_source_task_id_source_map_index"),
        ),
    )
    op.create_index(op.f("ix_asset_event_timestamp"), "asset_event", ["timestamp"])
    op.create_table(
        "dag_schedule_asset_reference",
        sa.Column("asset_id", sa.Integer(), nullable=False),
        sa.Column("dag_id", ID, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["asset_id"], ["asset.id"],
                                name=op.f("fk_dag_schedule_asset_reference_asset_id_asset"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["dag_id"], ["dag.dag_id"],
                                name=op.f("fk_dag_schedule_asset_reference_dag_id_dag"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("asset_id", "dag_id", name=op.f("pk_dag_schedule_asset_reference")),
    )
    op.create_table(
        "asset_dag_run_queue",
        sa.Column("asset_id", sa.Integer(), nullable=False),
        sa.Column("target_dag_id", ID, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["asset_id"], ["asset.id"],
                                name=op.f("fk_asset_dag_run_queue_asset_id_asset"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["target_dag_id"], ["dag.dag_id"],
                                name=op.f("fk_asset_dag_run_queue_target_dag_id_dag"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("asset_id", "target_dag_id", name=op.f("pk_asset_dag_run_queue")),
    )


def downgrade() -> None:
    op.drop_table("asset_dag_run_queue")
    op.drop_table("dag_schedule_asset_reference")
    op.drop_index(op.f("ix_asset_event_timestamp"), table_name="asset_event")
    op.drop_table("asset_event")
    op.drop_table("asset")
