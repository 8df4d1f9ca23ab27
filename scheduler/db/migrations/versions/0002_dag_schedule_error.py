"""dag.schedule_error (why a DAG's schedule cannot be evaluated) and task_reschedule (sensor pokes).

Revision ID: 0002
Revises: 0001
Created: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("dag") as batch:
        batch.add_column(sa.Column("schedule_error", sa.Text(), nullable=True))
    op.create_table(
        "task_reschedule",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("ti_id", sa.Integer(), sa.ForeignKey("task_instance.id", ondelete="CASCADE"), nullable=False),
        sa.Column("try_number", sa.Integer(), nullable=False),
        sa.Column("start_date", TS, nullable=False),
        sa.Column("end_date", TS, nullable=False),
        sa.Column("reschedule_date", TS, nullable=False),
    )
    op.create_index(op.f("ix_task_reschedule_ti_id"), "task_reschedule", ["ti_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_task_reschedule_ti_id"), table_name="task_reschedule")
    op.drop_table("task_reschedule")
    with op.batch_alter_table("dag") as batch:
        batch.drop_column("schedule_error")
