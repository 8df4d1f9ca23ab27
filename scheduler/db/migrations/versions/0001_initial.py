"""Initial schema: DAGs and their files, runs, task instances, XCom, audit log, variables, pools, users, jobs.

Revision ID: 0001
Revises:
Created: 2024-11-25

Released migrations are never edited: change the schema with a new revision.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the column types, so this file never changes with scheduler.db.models.
ID = sa.String(250)
STATE = sa.String(20)
TS = sa.DateTime(timezone=True)
JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")

DAG_RUN_STATES = ("queued", "running", "success", "failed")
DAG_RUN_TYPES = ("scheduled", "manual", "backfill", "dataset_triggered")
TI_STATES = (
    "none",
    "scheduled",
    "queued",
    "running",
    "success",
    "failed",
    "up_for_retry",
    "up_for_reschedule",
    "skipped",
    "upstream_failed",
    "removed",
)
ROLES = ("Admin", "Op", "Viewer")


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.create_table(
        "dag",
        sa.Column("dag_id", ID, nullable=False),
        sa.Column("is_paused", sa.Boolean(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("fileloc", sa.Text(), nullable=False),
        sa.Column("owners", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("tags", JSON, nullable=False),
        sa.Column("timetable_summary", sa.Text(), nullable=True),
        sa.Column("timetable_description", sa.Text(), nullable=True),
        sa.Column("schedule", JSON, nullable=True),
        sa.Column("timezone", sa.String(100), nullable=False),
        sa.Column("max_active_runs", sa.Integer(), nullable=True),
        sa.Column("max_active_tasks", sa.Integer(), nullable=True),
        sa.Column("has_import_errors", sa.Boolean(), nullable=False),
        sa.Column("last_parsed_time", TS, nullable=True),
        sa.Column("next_dagrun", TS, nullable=True),
        sa.Column("next_dagrun_data_interval_start", TS, nullable=True),
        sa.Column("next_dagrun_data_interval_end", TS, nullable=True),
        sa.Column("next_dagrun_create_after", TS, nullable=True),
        sa.PrimaryKeyConstraint("dag_id", name=op.f("pk_dag")),
    )
    op.create_index(op.f("ix_dag_fileloc"), "dag", ["fileloc"])
    op.create_index(op.f("ix_dag_next_dagrun_create_after"), "dag", ["next_dagrun_create_after"])

    op.create_table(
        "serialized_dag",
        sa.Column("dag_id", ID, nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.Column("dag_hash", sa.String(64), nullable=False),
        sa.Column("fileloc", sa.Text(), nullable=False),
        sa.Column("last_updated", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["dag_id"], ["dag.dag_id"], name=op.f("fk_serialized_dag_dag_id_dag"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("dag_id", name=op.f("pk_serialized_dag")),
    )

    op.create_table(
        "dag_code",
        sa.Column("fileloc", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("last_updated", TS, nullable=False),
        sa.PrimaryKeyConstraint("fileloc", name=op.f("pk_dag_code")),
    )

    op.create_table(
        "dag_file",
        sa.Column("fileloc", sa.Text(), nullable=False),
        sa.Column("mtime", sa.Float(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("last_parsed", TS, nullable=False),
        sa.Column("last_duration", sa.Float(), nullable=False),
        sa.Column("dag_ids", JSON, nullable=False),
        sa.PrimaryKeyConstraint("fileloc", name=op.f("pk_dag_file")),
    )

    op.create_table(
        "import_error",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("filename", sa.Text(), nullable=False),
        sa.Column("stack_trace", sa.Text(), nullable=False),
        sa.Column("timestamp", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_import_error")),
        sa.UniqueConstraint("filename", name=op.f("uq_import_error_filename")),
    )

    op.create_table(
        "dag_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dag_id", ID, nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("run_type", STATE, nullable=False),
        sa.Column("state", STATE, nullable=False),
        sa.Column("logical_date", TS, nullable=True),
        sa.Column("data_interval_start", TS, nullable=True),
        sa.Column("data_interval_end", TS, nullable=True),
        sa.Column("queued_at", TS, nullable=True),
        sa.Column("start_date", TS, nullable=True),
        sa.Column("end_date", TS, nullable=True),
        sa.Column("run_after", TS, nullable=False),
        sa.Column("conf", JSON, nullable=False),
        sa.Column("external_trigger", sa.Boolean(), nullable=False),
        sa.Column("creating_job_id", sa.Integer(), nullable=True),
        sa.Column("last_scheduling_decision", TS, nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint(_in("state", DAG_RUN_STATES), name=op.f("ck_dag_run_state")),
        sa.CheckConstraint(_in("run_type", DAG_RUN_TYPES), name=op.f("ck_dag_run_run_type")),
        sa.ForeignKeyConstraint(["dag_id"], ["dag.dag_id"], name=op.f("fk_dag_run_dag_id_dag"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dag_run")),
        sa.UniqueConstraint("dag_id", "run_id", name=op.f("uq_dag_run_dag_id_run_id")),
    )
    slotted = sa.text(_in("run_type", ("scheduled", "backfill")))
    op.create_index(
        op.f("ix_dag_run_dag_id_logical_date"),
        "dag_run",
        ["dag_id", "logical_date"],
        unique=True,
        sqlite_where=slotted,
        postgresql_where=slotted,
    )
    op.create_index(op.f("ix_dag_run_state"), "dag_run", ["state"])
    op.create_index(op.f("ix_dag_run_dag_id_run_after"), "dag_run", ["dag_id", "run_after"])

    op.create_table(
        "task_instance",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dag_id", ID, nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("task_id", ID, nullable=False),
        sa.Column("map_index", sa.Integer(), server_default=sa.text("-1"), nullable=False),
        sa.Column("state", STATE, server_default=sa.text("'none'"), nullable=False),
        sa.Column("try_number", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("max_tries", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("start_date", TS, nullable=True),
        sa.Column("end_date", TS, nullable=True),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("hostname", sa.String(1000), server_default=sa.text("''"), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("operator", sa.String(1000), nullable=True),
        sa.Column("pool", sa.String(256), server_default=sa.text("'default_pool'"), nullable=False),
        sa.Column("pool_slots", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("priority_weight", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("queue", sa.String(256), server_default=sa.text("'default'"), nullable=False),
        sa.Column("queued_dttm", TS, nullable=True),
        sa.Column("queued_by_job_id", sa.Integer(), nullable=True),
        sa.Column("external_executor_id", ID, nullable=True),
        sa.Column("next_retry_at", TS, nullable=True),
        sa.Column("rendered_fields", JSON, nullable=True),
        sa.Column("executor_config", sa.Text(), server_default=sa.text("'{}'"), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("last_heartbeat_at", TS, nullable=True),
        sa.CheckConstraint(_in("state", TI_STATES), name=op.f("ck_task_instance_state")),
        sa.ForeignKeyConstraint(
            ["dag_id", "run_id"],
            ["dag_run.dag_id", "dag_run.run_id"],
            name=op.f("fk_task_instance_dag_id_run_id_dag_run"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_instance")),
        sa.UniqueConstraint(
            "dag_id", "run_id", "task_id", "map_index", name=op.f("uq_task_instance_dag_id_run_id_task_id_map_index")
        ),
    )
    op.create_index(op.f("ix_task_instance_state"), "task_instance", ["state"])
    op.create_index(op.f("ix_task_instance_dag_id_state"), "task_instance", ["dag_id", "state"])
    op.create_index(op.f("ix_task_instance_pool_state"), "task_instance", ["pool", "state"])

    op.create_table(
        "task_instance_history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dag_id", ID, nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("task_id", ID, nullable=False),
        sa.Column("map_index", sa.Integer(), server_default=sa.text("-1"), nullable=False),
        sa.Column("try_number", sa.Integer(), nullable=False),
        sa.Column("state", STATE, nullable=False),
        sa.Column("start_date", TS, nullable=True),
        sa.Column("end_date", TS, nullable=True),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("hostname", sa.String(1000), server_default=sa.text("''"), nullable=False),
        sa.CheckConstraint(_in("state", TI_STATES), name=op.f("ck_task_instance_history_state")),
        sa.ForeignKeyConstraint(
            ["dag_id", "run_id"],
            ["dag_run.dag_id", "dag_run.run_id"],
            name=op.f("fk_task_instance_history_dag_id_run_id_dag_run"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_instance_history")),
        sa.UniqueConstraint(
            "dag_id",
            "run_id",
            "task_id",
            "map_index",
            "try_number",
            name=op.f("uq_task_instance_history_dag_id_run_id_task_id_map_index_try_number"),
        ),
    )

    op.create_table(
        "xcom",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dag_id", ID, nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("task_id", ID, nullable=False),
        sa.Column("map_index", sa.Integer(), server_default=sa.text("-1"), nullable=False),
        sa.Column("key", sa.String(512), nullable=False),
        sa.Column("value", JSON, nullable=True),
        sa.Column("timestamp", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["dag_id", "run_id"],
            ["dag_run.dag_id", "dag_run.run_id"],
            name=op.f("fk_xcom_dag_id_run_id_dag_run"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_xcom")),
        sa.UniqueConstraint(
            "dag_id", "run_id", "task_id", "map_index", "key", name=op.f("uq_xcom_dag_id_run_id_task_id_map_index_key")
        ),
    )

    op.create_table(
        "log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dttm", TS, nullable=False),
        sa.Column("event", sa.String(60), nullable=False),
        sa.Column("owner", sa.String(500), nullable=True),
        sa.Column("dag_id", ID, nullable=True),
        sa.Column("run_id", ID, nullable=True),
        sa.Column("task_id", ID, nullable=True),
        sa.Column("map_index", sa.Integer(), nullable=True),
        sa.Column("try_number", sa.Integer(), nullable=True),
        sa.Column("extra", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_log")),
    )
    op.create_index(op.f("ix_log_dttm"), "log", ["dttm"])

    op.create_table(
        "variable",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", ID, nullable=False),
        sa.Column("val", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("is_encrypted", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_variable")),
        sa.UniqueConstraint("key", name=op.f("uq_variable_key")),
    )

    slot_pool = op.create_table(
        "slot_pool",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pool", sa.String(256), nullable=False),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("include_deferred", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_slot_pool")),
        sa.UniqueConstraint("pool", name=op.f("uq_slot_pool_pool")),
    )
    op.bulk_insert(
        slot_pool,
        [{"pool": "default_pool", "slots": 128, "description": "Default pool", "include_deferred": False}],
    )

    op.create_table(
        "ab_user",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(256), nullable=False),
        sa.Column("email", sa.String(256), nullable=True),
        sa.Column("first_name", sa.String(256), nullable=False),
        sa.Column("last_name", sa.String(256), nullable=False),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("role", STATE, nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created", TS, nullable=False),
        sa.Column("last_login", TS, nullable=True),
        sa.Column("failed_login_count", sa.Integer(), nullable=False),
        sa.CheckConstraint(_in("role", ROLES), name=op.f("ck_ab_user_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ab_user")),
        sa.UniqueConstraint("username", name=op.f("uq_ab_user_username")),
    )

    op.create_table(
        "scheduler_job",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_type", sa.String(30), nullable=False),
        sa.Column("hostname", sa.String(500), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("state", STATE, nullable=False),
        sa.Column("start_date", TS, nullable=False),
        sa.Column("end_date", TS, nullable=True),
        sa.Column("latest_heartbeat", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scheduler_job")),
    )
    op.create_index(op.f("ix_scheduler_job_job_type_latest_heartbeat"), "scheduler_job", ["job_type", "latest_heartbeat"])


def downgrade() -> None:
    for table in (
        "scheduler_job",
        "ab_user",
        "slot_pool",
        "variable",
        "log",
        "xcom",
        "task_instance_history",
        "task_instance",
        "dag_run",
        "import_error",
        "dag_file",
        "dag_code",
        "serialized_dag",
        "dag",
    ):
        op.drop_table(table)
