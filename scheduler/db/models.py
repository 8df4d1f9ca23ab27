"""The metadata database schema as SQLAlchemy 2 typed ORM classes.

Table and column names follow Airflow's where Airflow has one. Migrations
(``scheduler/db/migrations/versions``) must create exactly this schema; the
migration tests compare the two on SQLite and PostgreSQL.

Conventions:

* Every datetime column is :class:`UtcDateTime`: aware datetimes in, aware UTC out;
  a naive datetime is refused.
* State columns are :class:`StrEnumType`: the lowercase value is stored, the
  ``str`` enum member comes back, an unknown value is refused before it reaches the
  database (and a CHECK constraint refuses it in the database too). A task
  instance's "no state yet" is the stored value ``'none'``, never NULL.
* JSON columns are JSONB on PostgreSQL and JSON (text) on SQLite; Python ``None``
  is stored as SQL NULL.
* No ORM relationships: the store writes explicit queries, and foreign keys
  cascade in the database (``ON DELETE CASCADE``).
* Every constraint and index is named by :data:`NAMING_CONVENTION`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeEngine

from scheduler.clock import utcnow
from scheduler.states import DagRunState, DagRunType, TaskInstanceState

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Length of dag_id, task_id, run_id and similar identifiers (Airflow's ID_LEN).
ID_LEN = 250
#: Length of state and run_type columns.
STATE_LEN = 20

#: The pool every task uses unless it names another; created by the first migration.
DEFAULT_POOL = "default_pool"
DEFAULT_POOL_SLOTS = 128

#: Roles a user may have.
USER_ROLES = ("Admin", "Op", "Viewer")

#: Run types that own their (dag_id, logical_date) slot: at most one such run per slot.
SLOTTED_RUN_TYPES = (DagRunType.SCHEDULED.value, DagRunType.BACKFILL.value)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime.

    PostgreSQL: ``TIMESTAMP WITH TIME ZONE``. SQLite: naive UTC in SQLAlchemy's
    ISO-like text format (which sorts as time does). Writing a naive datetime
    raises ValueError; reading always gives an aware datetime in UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}: {value!r}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} cannot be stored: make it timezone-aware")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class StrEnumType(TypeDecorator[Any]):
    """A ``str`` enum stored as its value in a VARCHAR; unknown values raise ValueError on write."""

    impl = String
    cache_ok = True

    def __init__(self, enum_class: type[StrEnum]) -> None:
        super().__init__(length=STATE_LEN)
        self.enum_class = enum_class

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return self.enum_class(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> StrEnum | None:
        if value is None:
            return None
        return self.enum_class(value)


#: JSONB on PostgreSQL, JSON text on SQLite; None is stored as SQL NULL.
JsonType: TypeEngine[Any] = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def _in_list(column: str, values: tuple[str, ...] | list[str]) -> str:
    quoted = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
    return f"{column} IN ({quoted})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UtcDateTime}


# --- DAGs and their files -------------------------------------------------------------


class Dag(Base):
    """One DAG as the scheduler and the UI know it (Airflow's ``dag`` table, DagModel)."""

    __tablename__ = "dag"

    dag_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    is_paused: Mapped[bool] = mapped_column(default=False)
    #: False once its file is gone or no longer defines it.
    is_active: Mapped[bool] = mapped_column(default=True)
    fileloc: Mapped[str] = mapped_column(Text, index=True)
    #: Comma-separated owner names, as Airflow stores them.
    owners: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(JsonType, default=list)
    #: e.g. "0 6 * * *"; None when the DAG has no schedule.
    timetable_summary: Mapped[str | None] = mapped_column(Text)
    timetable_description: Mapped[str | None] = mapped_column(Text)
    #: What the REST API shows as schedule_interval, e.g. {"__type": "CronExpression", "value": "0 6 * * *"}.
    schedule: Mapped[Any] = mapped_column(JsonType, nullable=True)
    timezone: Mapped[str] = mapped_column(String(100), default="UTC")
    #: None: the [core] default applies.
    max_active_runs: Mapped[int | None]
    max_active_tasks: Mapped[int | None]
    has_import_errors: Mapped[bool] = mapped_column(default=False)
    last_parsed_time: Mapped[datetime | None]
    next_dagrun: Mapped[datetime | None]
    next_dagrun_data_interval_start: Mapped[datetime | None]
    next_dagrun_data_interval_end: Mapped[datetime | None]
    next_dagrun_create_after: Mapped[datetime | None] = mapped_column(index=True)
    #: Why the scheduler could not evaluate the schedule (the DAG is skipped until its file changes); None when fine.
    schedule_error: Mapped[str | None] = mapped_column(Text)

    @property
    def owner_list(self) -> list[str]:
        return [name.strip() for name in self.owners.split(",") if name.strip()]


class SerializedDag(Base):
    """The last good serialized form of a DAG; the scheduler works from this, never from the file."""

    __tablename__ = "serialized_dag"

    dag_id: Mapped[str] = mapped_column(String(ID_LEN), ForeignKey("dag.dag_id", ondelete="CASCADE"), primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column(JsonType)
    #: scheduler.serialization.dag_hash(data) (sha256 of its sorted-key JSON); data is rewritten only when it changes.
    dag_hash: Mapped[str] = mapped_column(String(64))
    fileloc: Mapped[str] = mapped_column(Text)
    last_updated: Mapped[datetime]


class DagCode(Base):
    """Source text of a DAG file, as of its last successful parse (shown by the UI's code view)."""

    __tablename__ = "dag_code"

    fileloc: Mapped[str] = mapped_column(Text, primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    last_updated: Mapped[datetime]


class DagFile(Base):
    """Parse state of one file in the DAG folder, used to skip files that did not change."""

    __tablename__ = "dag_file"

    fileloc: Mapped[str] = mapped_column(Text, primary_key=True)
    mtime: Mapped[float] = mapped_column(Float)
    size: Mapped[int] = mapped_column(BigInteger)
    content_hash: Mapped[str] = mapped_column(String(64))
    last_parsed: Mapped[datetime]
    last_duration: Mapped[float] = mapped_column(Float)
    #: ids of the DAGs this file defines (including ones kept from an earlier parse after an error).
    dag_ids: Mapped[list[str]] = mapped_column(JsonType, default=list)


class ParseImportError(Base):
    """A DAG file that could not be loaded, or loaded with errors (Airflow's ``import_error``)."""

    __tablename__ = "import_error"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    filename: Mapped[str] = mapped_column(Text, unique=True)
    stack_trace: Mapped[str] = mapped_column(Text)
    timestamp: Mapped[datetime]


# --- runs and task instances ----------------------------------------------------------


class DagRun(Base):
    """One run of a DAG.

    Unique (dag_id, run_id); and at most one ``scheduled`` or ``backfill`` run per
    (dag_id, logical_date), while manual runs are keyed by run_id alone (a partial
    unique index), so a manual trigger never claims a scheduled slot.
    """

    __tablename__ = "dag_run"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dag_id: Mapped[str] = mapped_column(String(ID_LEN), ForeignKey("dag.dag_id", ondelete="CASCADE"))
    run_id: Mapped[str] = mapped_column(String(ID_LEN))
    run_type: Mapped[DagRunType] = mapped_column(StrEnumType(DagRunType))
    state: Mapped[DagRunState] = mapped_column(StrEnumType(DagRunState), default=DagRunState.QUEUED)
    logical_date: Mapped[datetime | None]
    data_interval_start: Mapped[datetime | None]
    data_interval_end: Mapped[datetime | None]
    queued_at: Mapped[datetime | None]
    start_date: Mapped[datetime | None]
    end_date: Mapped[datetime | None]
    #: The earliest time the run may start: the data interval end of a scheduled run, the trigger time of a manual one.
    run_after: Mapped[datetime]
    conf: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    external_trigger: Mapped[bool] = mapped_column(default=False)
    creating_job_id: Mapped[int | None]
    last_scheduling_decision: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (
        UniqueConstraint("dag_id", "run_id"),
        Index(
            None,
            "dag_id",
            "logical_date",
            unique=True,
            sqlite_where=text(_in_list("run_type", SLOTTED_RUN_TYPES)),
            postgresql_where=text(_in_list("run_type", SLOTTED_RUN_TYPES)),
        ),
        Index(None, "state"),
        Index(None, "dag_id", "run_after"),
        CheckConstraint(_in_list("state", [s.value for s in DagRunState]), name="state"),
        CheckConstraint(_in_list("run_type", [t.value for t in DagRunType]), name="run_type"),
    )


class TaskInstance(Base):
    """One task in one run (and one map index). ``state`` is ``'none'`` until decided, never NULL."""

    __tablename__ = "task_instance"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dag_id: Mapped[str] = mapped_column(String(ID_LEN))
    run_id: Mapped[str] = mapped_column(String(ID_LEN))
    task_id: Mapped[str] = mapped_column(String(ID_LEN))
    map_index: Mapped[int] = mapped_column(default=-1, server_default=text("-1"))
    state: Mapped[TaskInstanceState] = mapped_column(
        StrEnumType(TaskInstanceState), default=TaskInstanceState.NONE, server_default=text("'none'")
    )
    try_number: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    max_tries: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    start_date: Mapped[datetime | None]
    end_date: Mapped[datetime | None]
    duration: Mapped[float | None] = mapped_column(Float)
    hostname: Mapped[str] = mapped_column(String(1000), default="", server_default=text("''"))
    pid: Mapped[int | None]
    operator: Mapped[str | None] = mapped_column(String(1000))
    pool: Mapped[str] = mapped_column(String(256), default=DEFAULT_POOL, server_default=text(f"'{DEFAULT_POOL}'"))
    pool_slots: Mapped[int] = mapped_column(default=1, server_default=text("1"))
    priority_weight: Mapped[int] = mapped_column(default=1, server_default=text("1"))
    queue: Mapped[str] = mapped_column(String(256), default="default", server_default=text("'default'"))
    queued_dttm: Mapped[datetime | None]
    #: The scheduler job that queued it (to adopt or reset tasks of a dead scheduler).
    queued_by_job_id: Mapped[int | None]
    #: The executor's own id for the try (a Celery task id).
    external_executor_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    #: When an up_for_retry / up_for_reschedule instance may be scheduled again.
    next_retry_at: Mapped[datetime | None]
    rendered_fields: Mapped[dict[str, Any] | None] = mapped_column(JsonType, nullable=True)
    executor_config: Mapped[str] = mapped_column(Text, default="{}", server_default=text("'{}'"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    last_heartbeat_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("dag_id", "run_id", "task_id", "map_index"),
        ForeignKeyConstraint(["dag_id", "run_id"], ["dag_run.dag_id", "dag_run.run_id"], ondelete="CASCADE"),
        Index(None, "state"),
        Index(None, "dag_id", "state"),
        Index(None, "pool", "state"),
        CheckConstraint(_in_list("state", [s.value for s in TaskInstanceState]), name="state"),
    )


class TaskInstanceHistory(Base):
    """One row per finished try of a task instance (the current try lives in task_instance)."""

    __tablename__ = "task_instance_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dag_id: Mapped[str] = mapped_column(String(ID_LEN))
    run_id: Mapped[str] = mapped_column(String(ID_LEN))
    task_id: Mapped[str] = mapped_column(String(ID_LEN))
    map_index: Mapped[int] = mapped_column(default=-1, server_default=text("-1"))
    try_number: Mapped[int]
    state: Mapped[TaskInstanceState] = mapped_column(StrEnumType(TaskInstanceState))
    start_date: Mapped[datetime | None]
    end_date: Mapped[datetime | None]
    duration: Mapped[float | None] = mapped_column(Float)
    hostname: Mapped[str] = mapped_column(String(1000), default="", server_default=text("''"))

    __table_args__ = (
        UniqueConstraint("dag_id", "run_id", "task_id", "map_index", "try_number"),
        ForeignKeyConstraint(["dag_id", "run_id"], ["dag_run.dag_id", "dag_run.run_id"], ondelete="CASCADE"),
        CheckConstraint(_in_list("state", [s.value for s in TaskInstanceState]), name="state"),
    )


class TaskReschedule(Base):
    """One poke of a sensor in reschedule mode that asked to be run again later (its timeout counts from the first)."""

    __tablename__ = "task_reschedule"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ti_id: Mapped[int] = mapped_column(ForeignKey("task_instance.id", ondelete="CASCADE"), index=True)
    try_number: Mapped[int]
    start_date: Mapped[datetime]
    end_date: Mapped[datetime]
    reschedule_date: Mapped[datetime]


class XCom(Base):
    """A value a task pushed (its return value under key ``return_value``)."""

    __tablename__ = "xcom"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dag_id: Mapped[str] = mapped_column(String(ID_LEN))
    run_id: Mapped[str] = mapped_column(String(ID_LEN))
    task_id: Mapped[str] = mapped_column(String(ID_LEN))
    map_index: Mapped[int] = mapped_column(default=-1, server_default=text("-1"))
    key: Mapped[str] = mapped_column(String(512))
    value: Mapped[Any] = mapped_column(JsonType, nullable=True)
    timestamp: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("dag_id", "run_id", "task_id", "map_index", "key"),
        ForeignKeyConstraint(["dag_id", "run_id"], ["dag_run.dag_id", "dag_run.run_id"], ondelete="CASCADE"),
    )


# --- operations -----------------------------------------------------------------------


class Log(Base):
    """The audit log: who did what (Airflow's ``log`` table, the API's event logs)."""

    __tablename__ = "log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dttm: Mapped[datetime] = mapped_column(index=True)
    event: Mapped[str] = mapped_column(String(60))
    #: The username, or None for the system.
    owner: Mapped[str | None] = mapped_column(String(500))
    dag_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    run_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    task_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    map_index: Mapped[int | None]
    try_number: Mapped[int | None]
    extra: Mapped[str | None] = mapped_column(Text)


class Variable(Base):
    __tablename__ = "variable"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(ID_LEN), unique=True)
    val: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    is_encrypted: Mapped[bool] = mapped_column(default=False)


class Connection(Base):
    """A connection to an outside system (Airflow's ``connection``); password and extra are Fernet-encrypted."""

    __tablename__ = "connection"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conn_id: Mapped[str] = mapped_column(String(ID_LEN), unique=True)
    conn_type: Mapped[str] = mapped_column(String(500))
    description: Mapped[str | None] = mapped_column(Text)
    host: Mapped[str | None] = mapped_column(String(500))
    schema: Mapped[str | None] = mapped_column(String(500))
    login: Mapped[str | None] = mapped_column(Text)
    #: Fernet token when is_encrypted.
    password: Mapped[str | None] = mapped_column(Text)
    port: Mapped[int | None]
    #: JSON object text; a Fernet token when is_extra_encrypted.
    extra: Mapped[str | None] = mapped_column(Text)
    is_encrypted: Mapped[bool] = mapped_column(default=False)
    is_extra_encrypted: Mapped[bool] = mapped_column(default=False)


class Pool(Base):
    """A pool of task slots (Airflow's ``slot_pool``); ``default_pool`` always exists."""

    __tablename__ = "slot_pool"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pool: Mapped[str] = mapped_column(String(256), unique=True)
    slots: Mapped[int]
    description: Mapped[str | None] = mapped_column(Text)
    include_deferred: Mapped[bool] = mapped_column(default=False)


class User(Base):
    """A user of the UI and the API (Airflow's ``ab_user``; ``user`` is a reserved word in PostgreSQL)."""

    __tablename__ = "ab_user"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(256), unique=True)
    email: Mapped[str | None] = mapped_column(String(256))
    first_name: Mapped[str] = mapped_column(String(256), default="")
    last_name: Mapped[str] = mapped_column(String(256), default="")
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(STATE_LEN))
    active: Mapped[bool] = mapped_column(default=True)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    last_login: Mapped[datetime | None]
    failed_login_count: Mapped[int] = mapped_column(default=0)

    __table_args__ = (CheckConstraint(_in_list("role", USER_ROLES), name="role"),)


class Job(Base):
    """A running (or finished) scheduler process and its heartbeat."""

    __tablename__ = "scheduler_job"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_type: Mapped[str] = mapped_column(String(30))
    hostname: Mapped[str] = mapped_column(String(500))
    pid: Mapped[int]
    state: Mapped[str] = mapped_column(String(STATE_LEN))
    start_date: Mapped[datetime]
    end_date: Mapped[datetime | None]
    latest_heartbeat: Mapped[datetime]

    __table_args__ = (Index(None, "job_type", "latest_heartbeat"),)


# --- assets (data-aware scheduling) ------------------------------------------------------


class Asset(Base):
    """An asset (Airflow 2's dataset) some DAG names: in a schedule or as a task's outlet."""

    __tablename__ = "asset"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uri: Mapped[str] = mapped_column(String(3000), unique=True)
    extra: Mapped[Any] = mapped_column(JsonType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AssetEvent(Base):
    """One update of an asset: by a task instance's successful try (or from outside, source columns empty)."""

    __tablename__ = "asset_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    asset_id: Mapped[int] = mapped_column(ForeignKey("asset.id", ondelete="CASCADE"))
    extra: Mapped[Any] = mapped_column(JsonType, nullable=True)
    source_dag_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    source_task_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    source_run_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    source_map_index: Mapped[int] = mapped_column(default=-1, server_default=text("-1"))
    timestamp: Mapped[datetime] = mapped_column(default=utcnow, index=True)

    __table_args__ = (
        UniqueConstraint("asset_id", "source_dag_id", "source_run_id", "source_task_id", "source_map_index"),
    )


class DagScheduleAssetReference(Base):
    """A DAG whose schedule names an asset."""

    __tablename__ = "dag_schedule_asset_reference"

    asset_id: Mapped[int] = mapped_column(ForeignKey("asset.id", ondelete="CASCADE"), primary_key=True)
    dag_id: Mapped[str] = mapped_column(ForeignKey("dag.dag_id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AssetDagRunQueue(Base):
    """An asset updated since the target DAG's last asset-triggered run (one row per asset and DAG)."""

    __tablename__ = "asset_dag_run_queue"

    asset_id: Mapped[int] = mapped_column(ForeignKey("asset.id", ondelete="CASCADE"), primary_key=True)
    target_dag_id: Mapped[str] = mapped_column(ForeignKey("dag.dag_id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
