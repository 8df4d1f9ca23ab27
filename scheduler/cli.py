"""The `updraft` command: Airflow's verbs on top of the store, the parser and the runners.

Exit codes: 0 ok, 1 failure (a failed `dags test`, a broken database), 2 bad usage or
unknown DAG/task, with the reason on stderr.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

from scheduler import __version__
from scheduler.cli_output import FORMATS, print_records
from scheduler.exceptions import (
    ConfigError,
    DagNotFound,
    DagRunNotFound,
    DatabaseError,
    ParamValidationError,
    TaskNotFound,
    UpdraftError,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from scheduler.authoring.dag import DAG
    from scheduler.config import Settings

logger = logging.getLogger("updraft.cli")


class UsageError(UpdraftError):
    """Bad command-line usage (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"updraft: error: {message}\n")


# --- shared plumbing ------------------------------------------------------------------------


class Context:
    """What a command needs: settings, and the engine opened on first use."""

    def __init__(self, args: argparse.Namespace) -> None:
        from scheduler.config import load_settings

        self.args = args
        self.settings: Settings = load_settings()
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            from scheduler.db.engine import make_engine

            self._engine = make_engine(
                self.settings.sql_alchemy_conn,
                pool_size=self.settings.get("database", "sql_alchemy_pool_size"),
                max_overflow=self.settings.get("database", "sql_alchemy_max_overflow"),
            )
        return self._engine

    def ensure_database(self) -> None:
        """SQLite (the embedded default) is migrated on first use; other databases must be migrated explicitly."""
        from scheduler.db import migrate

        if self.engine.dialect.name == "sqlite":
            migrate.upgrade(self.engine)
        else:
            migrate.check(self.engine)

    def sync_dags(self) -> None:
        """Bring the database up to date with the DAG folder through the isolated parser."""
        from scheduler.clock import utcnow
        from scheduler.dag_processing import sync_dag_folder

        self.ensure_database()
        if not self.settings.dags_folder.is_dir():
            print(f"updraft: warning: the DAG folder {self.settings.dags_folder} does not exist", file=sys.stderr)
        sync_dag_folder(self.engine, self.settings, now=utcnow())

    def session(self) -> Any:
        from scheduler.db.engine import session_scope

        return session_scope(self.engine)

    def load_dag(self, dag_id: str) -> DAG:
        """Import the DAG's file in this process (for `dags test` / `tasks test`)."""
        from pathlib import Path

        from scheduler.db import store
        from scheduler.parsing import load_dags_from_file

        self.sync_dags()
        with self.session() as session:
            row = store.get_dag(session, dag_id)
            if row is None or not row.is_active:
                raise DagNotFound(dag_id)
            fileloc = row.fileloc
        dags = load_dags_from_file(
            Path(fileloc),
            default_timezone=self.settings.get("core", "default_timezone"),
            dags_folder=self.settings.dags_folder,
        )
        if dag_id not in dags:
            raise DagNotFound(dag_id)
        return dags[dag_id]

    def variables(self) -> Callable[[str], str | None]:
        from scheduler.db import store

        def get(key: str) -> str | None:
            with self.session() as session:
                return store.get_variable(session, key)

        return get


def _parse_conf(raw: str | None) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        conf = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--conf is not valid JSON: {exc}") from None
    if not isinstance(conf, dict):
        raise UsageError(f"--conf must be a JSON object, got {type(conf).__name__}")
    return conf


def _parse_date(raw: str | None, what: str) -> datetime | None:
    if raw is None:
        return None
    from scheduler.clock import parse_datetime

    try:
        return parse_datetime(raw)
    except ValueError as exc:
        raise UsageError(f"{what}: {exc}") from None


# --- db -----------------------------------------------------------------------------------------


def cmd_db_migrate(ctx: Context) -> int:
    from scheduler.db import migrate

    migrate.upgrade(ctx.engine)
    print(f"Database migrated to {migrate.current_revision(ctx.engine)} ({_masked(ctx.settings.sql_alchemy_conn)})")
    return 0


def cmd_db_check(ctx: Context) -> int:
    from scheduler.db import migrate

    migrate.check(ctx.engine)
    print(f"Database OK at revision {migrate.current_revision(ctx.engine)} ({_masked(ctx.settings.sql_alchemy_conn)})")
    return 0


def cmd_db_reset(ctx: Context) -> int:
    from scheduler.db import migrate

    if not ctx.args.yes:
        raise UsageError("db reset deletes every row; pass --yes to confirm")
    migrate.reset(ctx.engine)
    print(f"Database reset ({_masked(ctx.settings.sql_alchemy_conn)})")
    return 0


def _masked(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable url>"


# --- dags ---------------------------------------------------------------------------------------

DAG_COLUMNS = ("dag_id", "fileloc", "owners", "is_paused", "schedule_interval", "next_dagrun", "tags")


def cmd_dags_list(ctx: Context) -> int:
    from scheduler.api_shapes import dag_record
    from scheduler.db import store

    ctx.sync_dags()
    with ctx.session() as session:
        records = [dag_record(d) for d in store.list_dags(session)]
    records.sort(key=lambda r: r["dag_id"])
    print_records(records, DAG_COLUMNS, ctx.args.output)
    return 0


def cmd_dags_list_import_errors(ctx: Context) -> int:
    from scheduler.api_shapes import import_error_record
    from scheduler.db import store

    ctx.sync_dags()
    with ctx.session() as session:
        records = [import_error_record(e) for e in store.list_import_errors(session)]
    records.sort(key=lambda r: r["filename"])
    print_records(records, ("filename", "stack_trace", "timestamp"), ctx.args.output)
    return 0


def cmd_dags_pause(ctx: Context, paused: bool = True) -> int:
    from scheduler.db import store

    ctx.sync_dags()
    with ctx.session() as session:
        store.set_paused(session, ctx.args.dag_id, paused)
    print(f"Dag: {ctx.args.dag_id}, paused: {paused}")
    return 0


def cmd_dags_show(ctx: Context) -> int:
    ctx.sync_dags()
    with ctx.session() as session:
        sdag = _serialized_dag(session, ctx.args.dag_id)
    lines = [f'digraph "{sdag.dag_id}" {{', "  rankdir=LR;", "  node [shape=box, style=\"rounded,filled\"];"]
    for tid in sdag.task_order:
        task = sdag.tasks[tid]
        lines.append(f'  "{tid}" [label="{tid}\\n{task.operator}", fillcolor="{task.get("ui_color", "#fff")}"];')
    for tid in sdag.task_order:
        for down in sorted(sdag.tasks[tid].downstream):
            lines.append(f'  "{tid}" -> "{down}";')
    lines.append("}")
    print("\n".join(lines))
    return 0


def cmd_dags_test(ctx: Context) -> int:
    from scheduler.dagtest import run_dag_in_process

    conf = _parse_conf(ctx.args.conf)
    logical_date = _parse_date(ctx.args.logical_date, "LOGICAL_DATE")
    dag = ctx.load_dag(ctx.args.dag_id)
    from scheduler.cli_secrets import masked_output

    with masked_output():
        result = run_dag_in_process(dag, logical_date=logical_date, conf=conf, variables=ctx.variables(),
                                    dag_loader=ctx.load_dag)
    return 0 if str(result.state) == "success" else 1


def cmd_dags_list_runs(ctx: Context) -> int:
    from scheduler.api_shapes import dag_run_record
    from scheduler.db import store

    ctx.sync_dags()
    with ctx.session() as session:
        if store.get_dag(session, ctx.args.dag_id) is None:
            raise DagNotFound(ctx.args.dag_id)
        runs = store.list_dag_runs(session, ctx.args.dag_id, state=ctx.args.state)
        records = [dag_run_record(r) for r in runs]
    columns = ("dag_id", "run_id", "state", "run_type", "logical_date", "data_interval_start",
               "data_interval_end", "start_date", "end_date")
    print_records(records, columns, ctx.args.output)
    return 0


NEXT_EXECUTION_COLUMNS = ("logical_date", "data_interval_start", "data_interval_end")


def _serialized_dag(session: Any, dag_id: str) -> Any:
    """The active DAG's SerializedDAG; DagNotFound if it is unknown, inactive or was never parsed."""
    from scheduler.db import store
    from scheduler.serialization import SerializedDAG

    row = store.get_dag(session, dag_id)
    data = store.get_serialized_dag(session, dag_id) if row is not None and row.is_active else None
    if data is None:
        raise DagNotFound(dag_id)
    return SerializedDAG.from_dict(data)


def cmd_dags_next_execution(ctx: Context) -> int:
    from scheduler.clock import isoformat, utcnow
    from scheduler.db import store
    from scheduler.timetables.base import DataInterval

    count = ctx.args.num_executions
    if count < 1:
        raise UsageError(f"-n/--num-executions must be at least 1, got {count}")
    ctx.sync_dags()
    with ctx.session() as session:
        sdag = _serialized_dag(session, ctx.args.dag_id)
        last = store.latest_slotted_dag_run(session, ctx.args.dag_id)
        last_interval = None
        last_logical_date = None
        if last is not None:
            last_logical_date = last.logical_date
            if last.data_interval_start is not None and last.data_interval_end is not None:
                last_interval = DataInterval(last.data_interval_start, last.data_interval_end)
    timetable = sdag.timetable
    records: list[dict[str, Any]] = []
    if not timetable.can_be_scheduled:
        print(f"updraft: note: DAG '{sdag.dag_id}' has no schedule (schedule=None); it only runs when triggered",
              file=sys.stderr)
    else:
        # The first answer is the scheduler's (catchup as the DAG says, as of now); each later one
        # follows the previous answer in order, so the list never skips or goes back in time.
        catchup = sdag.catchup
        now = utcnow()
        while len(records) < count:
            info = timetable.next_dagrun_info(
                last_automated_data_interval=last_interval,
                last_logical_date=last_logical_date,
                start_date=sdag.start_date,
                end_date=sdag.end_date,
                catchup=catchup,
                now=now,
            )
            if info is None or (last_logical_date is not None and info.logical_date <= last_logical_date):
                break
            records.append({
                "logical_date": isoformat(info.logical_date),
                "data_interval_start": isoformat(info.data_interval.start),
                "data_interval_end": isoformat(info.data_interval.end),
            })
            last_interval, last_logical_date, catchup = info.data_interval, info.logical_date, True
    print_records(records, NEXT_EXECUTION_COLUMNS, ctx.args.output)
    return 0


def cmd_dags_trigger(ctx: Context) -> int:
    from scheduler.api_shapes import dag_run_record
    from scheduler.clock import to_utc, utcnow
    from scheduler.db import store
    from scheduler.states import DagRunState, DagRunType

    conf = _parse_conf(ctx.args.conf)
    now = utcnow()
    given = _parse_date(ctx.args.logical_date, "--logical-date")
    logical_date = now if given is None else to_utc(given)
    run_id = ctx.args.run_id if ctx.args.run_id is not None else f"manual__{logical_date.isoformat()}"
    from scheduler.identifiers import run_id_problem

    if (reason := run_id_problem(run_id)) is not None:
        raise UsageError(f"--run-id: {reason}")
    ctx.sync_dags()
    with ctx.session() as session:
        sdag = _serialized_dag(session, ctx.args.dag_id)
        sdag.params.resolve(conf, dag_id=sdag.dag_id)
        try:
            run = store.create_dag_run(
                session,
                dag_id=sdag.dag_id,
                run_id=run_id,
                run_type=DagRunType.MANUAL,
                logical_date=logical_date,
                data_interval=sdag.timetable.infer_manual_data_interval(run_after=logical_date),
                conf=conf,
                state=DagRunState.QUEUED,
                run_after=now,
                now=now,
                external_trigger=True,
            )
        except store.DagRunAlreadyExists as exc:
            raise UsageError(str(exc)) from None
        record = dag_run_record(run)
    columns = ("dag_id", "run_id", "state", "run_type", "logical_date", "data_interval_start",
               "data_interval_end", "external_trigger", "conf")
    print_records([record], columns, ctx.args.output)
    return 0


BACKFILL_COLUMNS = ("logical_date", "run_id", "outcome")


def cmd_dags_backfill(ctx: Context) -> int:
    """Queue a run for every logical date of the DAG's schedule in [--start-date, --end-date]; the scheduler starts them."""
    from scheduler.backfill import Action, BackfillError, create_backfill
    from scheduler.clock import to_utc, utcnow
    from scheduler.db import store

    args = ctx.args
    conf = _parse_conf(args.conf)
    start = _parse_date(args.start_date, "--start-date")
    end = _parse_date(args.end_date, "--end-date")
    assert start is not None and end is not None  # both are required options
    start, end = to_utc(start), to_utc(end)
    if start > end:
        raise UsageError(f"--start-date {start.isoformat()} is after --end-date {end.isoformat()}")
    ctx.sync_dags()
    now = utcnow()
    with ctx.session() as session:
        sdag = _serialized_dag(session, args.dag_id)
        sdag.params.resolve(conf, dag_id=sdag.dag_id)
        dag_row = store.get_dag(session, sdag.dag_id)
        paused = bool(dag_row is not None and dag_row.is_paused)
        try:
            plan = create_backfill(session, sdag, start, end, reprocess=args.reprocess_behavior, conf=conf, now=now,
                                   dry_run=args.dry_run)
        except BackfillError as exc:
            raise UsageError(str(exc)) from None
        except store.DagRunAlreadyExists as exc:
            raise UsageError(f"{exc}; nothing was backfilled") from None
    if not plan:
        print(f"updraft: note: DAG '{sdag.dag_id}' has no logical dates between {start.isoformat()} and "
              f"{end.isoformat()}; nothing to backfill", file=sys.stderr)
    print_records([p.record(dry_run=args.dry_run) for p in plan], BACKFILL_COLUMNS, args.output)
    if args.dry_run:
        print("updraft: note: dry run; nothing was written", file=sys.stderr)
    elif paused and any(p.action is not Action.SKIP for p in plan):
        print(f"updraft: note: DAG '{sdag.dag_id}' is paused; its queued runs start once it is unpaused "
              f"(updraft dags unpause {sdag.dag_id})", file=sys.stderr)
    return 0


# --- tasks --------------------------------------------------------------------------------------


def cmd_tasks_list(ctx: Context) -> int:
    ctx.sync_dags()
    with ctx.session() as session:
        sdag = _serialized_dag(session, ctx.args.dag_id)
    if ctx.args.output == "table" and not ctx.args.verbose_table:
        for tid in sorted(sdag.tasks):
            print(tid)
        return 0
    records = [
        {"task_id": t, "operator": sdag.tasks[t].operator, "trigger_rule": sdag.tasks[t].trigger_rule,
         "upstream_task_ids": sorted(sdag.tasks[t].upstream), "downstream_task_ids": sorted(sdag.tasks[t].downstream)}
        for t in sdag.task_order
    ]
    print_records(records, ("task_id", "operator", "trigger_rule", "upstream_task_ids", "downstream_task_ids"),
                  ctx.args.output)
    return 0


def cmd_tasks_test(ctx: Context) -> int:
    from scheduler.dagtest import run_task_in_process

    logical_date = _parse_date(ctx.args.logical_date, "LOGICAL_DATE")
    conf = _parse_conf(ctx.args.conf)
    dag = ctx.load_dag(ctx.args.dag_id)
    if not dag.has_task(ctx.args.task_id):
        raise TaskNotFound(ctx.args.dag_id, ctx.args.task_id)
    from scheduler.cli_secrets import masked_output

    with masked_output():
        outcome = run_task_in_process(dag, ctx.args.task_id, logical_date=logical_date, conf=conf,
                                      variables=ctx.variables())
    return 0 if str(outcome.state) in ("success", "skipped") else 1


def cmd_tasks_run(ctx: Context) -> int:
    """Run one queued try of a task instance through the task runner, in this process (as an executor does)."""
    from sqlalchemy import select

    from scheduler.db import store
    from scheduler.db.models import TaskInstance
    from scheduler.task_runner import run_workload
    from scheduler.workloads import TaskWorkload

    a = ctx.args
    ctx.ensure_database()
    with ctx.session() as session:
        dag_row = store.get_dag(session, a.dag_id)
        if dag_row is None:
            raise DagNotFound(a.dag_id)
        ti_id = session.execute(
            select(TaskInstance.id).where(TaskInstance.dag_id == a.dag_id, TaskInstance.run_id == a.run_id,
                                          TaskInstance.task_id == a.task_id, TaskInstance.map_index == a.map_index)
        ).scalar_one_or_none()
        fileloc = dag_row.fileloc
    if ti_id is None:
        index = "" if a.map_index < 0 else f" map index {a.map_index}"
        raise UsageError(f"no task instance of task '{a.task_id}'{index} in run '{a.run_id}' of DAG '{a.dag_id}'")
    workload = TaskWorkload(ti_id=ti_id, dag_id=a.dag_id, run_id=a.run_id, task_id=a.task_id,
                            map_index=a.map_index, try_number=a.try_number, fileloc=fileloc)
    return run_workload(workload, ctx.settings)


# --- scheduler ----------------------------------------------------------------------------------


def _run_scheduler(ctx: Context) -> int:
    from scheduler.loop import Scheduler

    if not ctx.args.verbose:
        logging.getLogger().setLevel(logging.INFO)
        # The per-sync summary would repeat every second; the loop logs what a sync changed.
        logging.getLogger("scheduler.dag_processing").setLevel(logging.WARNING)
    ctx.ensure_database()
    if not ctx.settings.dags_folder.is_dir():
        logger.warning("the DAG folder %s does not exist (yet)", ctx.settings.dags_folder)
    with Scheduler(ctx.engine, ctx.settings) as scheduler:
        scheduler.run()
    return 0


def cmd_scheduler(ctx: Context) -> int:
    """Run the scheduler loop until SIGTERM or SIGINT; logs to stderr at INFO (DEBUG with -v)."""
    return _run_scheduler(ctx)


def cmd_standalone(ctx: Context) -> int:
    """Everything on this machine in one command: migrate, an admin user on first start, the webserver
    (gunicorn in a child process, stopped with the scheduler) and the scheduler."""
    import subprocess

    from scheduler.db.engine import mask_url
    from webserver.common import PARENT_ENV, address_problem, load_secret_key, url_for_bind

    settings = ctx.settings
    ctx.ensure_database()
    host = str(settings.get("webserver", "web_server_host"))
    port = int(settings.get("webserver", "web_server_port"))
    # One local user: one worker is plenty (about 20 MiB less at rest), unless configured otherwise.
    workers = int(settings.get("webserver", "workers")) if settings.is_set("webserver", "workers") else 1
    reason = address_problem(host, port)
    if reason is not None:
        raise UsageError(f"the webserver {reason}; choose another port with [webserver] web_server_port "
                         "(UPDRAFT__WEBSERVER__WEB_SERVER_PORT)")
    admin_password = _standalone_admin(ctx)
    load_secret_key(settings)  # before the child starts, so the webserver and later commands share it
    web = subprocess.Popen(
        [sys.executable, "-m", "webserver.serve", "--workers", str(workers)],
        env={**os.environ, **settings.to_environ(), PARENT_ENV: str(os.getpid())},
    )
    lines = [
        "updraft standalone",
        f"  home:        {settings.home}",
        f"  database:    {mask_url(settings.sql_alchemy_conn)}",
        f"  dags folder: {settings.dags_folder}",
        f"  task logs:   {settings.log_folder}",
        f"  scheduler:   pid {os.getpid()}, {settings.get('core', 'executor')}, "
        f"parallelism {settings.get('core', 'parallelism')}",
        f"  webserver:   {url_for_bind(host, port)} (gunicorn, pid {web.pid}, {workers} workers)",
        f"  login:       admin / {admin_password}  (generated now; stored hashed, never shown again)"
        if admin_password is not None
        else "  login:       an existing user (updraft users list | users create)",
        "  stop with Ctrl-C (running tries are given "
        f"{settings.get('scheduler', 'graceful_shutdown_timeout'):.0f} s to finish)",
    ]
    print("\n".join(lines), flush=True)
    try:
        return _run_scheduler(ctx)
    finally:
        _stop_child(web)


def _standalone_admin(ctx: Context) -> str | None:
    """On first start (no users at all): create user admin (role Admin) and return its generated password."""
    from webserver.users import create_user, list_users, random_password

    with ctx.session() as session:
        if list_users(session):
            return None
        password = random_password()
        create_user(session, username="admin", password=password, role="Admin", first_name="admin")
    return password


def _stop_child(proc: Any, timeout_s: float = 20.0) -> None:
    import signal
    import subprocess

    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cmd_version(ctx: Context | None) -> int:
    print(__version__)
    return 0


# --- the parser -------------------------------------------------------------------------------


def _add_output(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", choices=FORMATS, default="table", help="output format (default: table)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="updraft", description="updraft: an Airflow-style DAG scheduler")
    parser.add_argument("--verbose", "-v", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="group", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("version", help="print the version")
    p.set_defaults(func=cmd_version, needs_context=False)

    p = sub.add_parser("scheduler", help="run the scheduler (until SIGTERM or Ctrl-C)")
    p.set_defaults(func=cmd_scheduler)
    p = sub.add_parser("standalone", help="migrate and run everything on this machine (until Ctrl-C)")
    p.set_defaults(func=cmd_standalone)
    from scheduler.cli_web import add_commands as add_web_commands

    add_web_commands(sub, _Parser)
    from scheduler.cli_secrets import add_commands as add_secret_commands

    add_secret_commands(sub, _Parser)
    from scheduler.cli_celery import add_commands as add_celery_commands

    add_celery_commands(sub, _Parser)

    db = sub.add_parser("db", help="the metadata database").add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)
    db.required = True
    db.add_parser("migrate", help="create or upgrade the schema (idempotent)").set_defaults(func=cmd_db_migrate)
    db.add_parser("check", help="check the database is reachable and migrated").set_defaults(func=cmd_db_check)
    p = db.add_parser("reset", help="drop everything and migrate again")
    p.add_argument("--yes", "-y", action="store_true", help="confirm")
    p.set_defaults(func=cmd_db_reset)

    dags = sub.add_parser("dags", help="DAGs").add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)
    dags.required = True
    p = dags.add_parser("list", help="list the DAGs")
    _add_output(p)
    p.set_defaults(func=cmd_dags_list, whole_unit=True)
    p = dags.add_parser("list-import-errors", help="list DAG files that failed to import, with the reason")
    _add_output(p)
    p.set_defaults(func=cmd_dags_list_import_errors, whole_unit=True)
    p = dags.add_parser("list-runs", help="list the runs of a DAG")
    p.add_argument("dag_id")
    p.add_argument("--state", choices=("queued", "running", "success", "failed"))
    _add_output(p)
    p.set_defaults(func=cmd_dags_list_runs, whole_unit=True)
    for name, paused in (("pause", True), ("unpause", False)):
        p = dags.add_parser(name, help=f"{name} a DAG")
        p.add_argument("dag_id")
        p.set_defaults(func=lambda ctx, paused=paused: cmd_dags_pause(ctx, paused), whole_unit=True)
    p = dags.add_parser("next-execution", help="print the next scheduled runs of a DAG")
    p.add_argument("dag_id")
    p.add_argument("-n", "--num-executions", type=int, default=1, help="how many runs to show (default: 1)")
    _add_output(p)
    p.set_defaults(func=cmd_dags_next_execution, whole_unit=True)
    p = dags.add_parser("trigger", help="create a manual run of a DAG (queued)")
    p.add_argument("dag_id")
    p.add_argument("--run-id", "-r", help="the run's id (default: manual__<logical date>)")
    p.add_argument("--conf", "-c", help="JSON object passed as the run's conf")
    p.add_argument("--logical-date", "-e", help="ISO 8601 date or datetime (default: now)")
    _add_output(p)
    p.set_defaults(func=cmd_dags_trigger, whole_unit=True)
    p = dags.add_parser("backfill", help="queue runs for the past logical dates of a DAG (the scheduler starts them)")
    p.add_argument("dag_id")
    p.add_argument("--start-date", "-s", required=True,
                   help="first logical date, inclusive: ISO 8601 date or datetime (naive = UTC, a date alone = midnight)")
    p.add_argument("--end-date", "-e", required=True, help="last logical date, inclusive (same format)")
    p.add_argument("--reprocess-behavior", choices=("none", "failed", "completed"), default="none",
                   help="when a date already has a finished scheduled/backfill run: leave it (none, the default), "
                        "run it again if it failed (failed), or if it failed or succeeded (completed)")
    p.add_argument("--conf", "-c", help="JSON object passed as each new run's conf")
    p.add_argument("--dry-run", action="store_true", help="print what would be done; write nothing")
    _add_output(p)
    p.set_defaults(func=cmd_dags_backfill)
    p = dags.add_parser("show", help="print the DAG's graph in DOT (Graphviz)")
    p.add_argument("dag_id")
    p.set_defaults(func=cmd_dags_show)
    p = dags.add_parser("test", help="run a whole DAG in this process; exit 1 if the run fails")
    p.add_argument("dag_id")
    p.add_argument("logical_date", nargs="?", help="ISO 8601 date or datetime (default: now)")
    p.add_argument("--conf", "-c", help="JSON object passed as the run's conf")
    p.set_defaults(func=cmd_dags_test)

    tasks = sub.add_parser("tasks", help="tasks").add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)
    tasks.required = True
    p = tasks.add_parser("list", help="list the tasks of a DAG")
    p.add_argument("dag_id")
    _add_output(p)
    p.set_defaults(func=cmd_tasks_list, verbose_table=False, whole_unit=True)
    p = tasks.add_parser("test", help="run one task in this process, ignoring dependencies; print its log")
    p.add_argument("dag_id")
    p.add_argument("task_id")
    p.add_argument("logical_date", nargs="?", help="ISO 8601 date or datetime (default: now)")
    p.add_argument("--conf", "-c", help="JSON object passed as the run's conf")
    p.set_defaults(func=cmd_tasks_test)
    p = tasks.add_parser("run", help="run one queued try of a task instance (claims it, records its state)")
    p.add_argument("dag_id")
    p.add_argument("task_id")
    p.add_argument("run_id")
    p.add_argument("--try-number", type=int, required=True, help="the try the instance is queued with")
    p.add_argument("--map-index", type=int, default=-1)
    p.set_defaults(func=cmd_tasks_run)
    from scheduler.cli_ti import add_commands as add_ti_commands

    add_ti_commands(dags, tasks)
    return parser


EXIT_USAGE = 2
_USAGE_ERRORS = (UsageError, ConfigError, DagNotFound, TaskNotFound, DagRunNotFound, ParamValidationError)


def main(argv: Sequence[str] | None = None) -> int:
    from scheduler.cli_secrets import SecretsUsageError

    usage_errors = (*_USAGE_ERRORS, SecretsUsageError)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="[%(asctime)s] {%(name)s} %(levelname)s - %(message)s",
    )
    try:
        if getattr(args, "needs_context", True) is False:
            return int(args.func(None))
        ctx = Context(args)
        if getattr(args, "whole_unit", False):
            return _run_again_when_busy(args, ctx, argv)
        return int(args.func(ctx))
    except usage_errors as exc:
        print(f"updraft: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DatabaseError as exc:
        print(f"updraft: database error: {exc}", file=sys.stderr)
        return 1
    except UpdraftError as exc:
        print(f"updraft: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        problem = _database_problem(exc)
        if problem is None:
            raise
        print(f"updraft: database error: {problem}", file=sys.stderr)
        return 1


def _run_again_when_busy(args: argparse.Namespace, ctx: Context, argv: Sequence[str] | None) -> int:
    """Run a command that is one unit of work (it prints only after its transaction) again, as a whole,
    on a transient database error (see :func:`scheduler.db.engine.retry_transient`)."""
    from scheduler.db.engine import retry_transient

    words = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(w for w in words[:2] if not w.startswith("-"))
    return int(retry_transient(functools.partial(args.func, ctx), what=f"updraft {command}"))


def _database_problem(exc: Exception) -> str | None:
    """What a database error that reached the command line says (None for any other error): the driver's
    first line, and for a transient error that the command changed nothing and may be run again."""
    if "sqlalchemy" not in sys.modules:
        return None
    from sqlalchemy.exc import DBAPIError

    from scheduler.db.engine import is_transient

    if not isinstance(exc, DBAPIError):
        return None
    lines = str(exc.orig if exc.orig is not None else exc).strip().splitlines()
    first = lines[0] if lines else type(exc).__name__
    if is_transient(exc):
        return f"{first}; the database stayed busy (a lock, a deadlock or a lost connection), nothing was changed: run the command again"
    return first


if __name__ == "__main__":  # pragma: no cover
    # Run as ``python -m scheduler.cli``: go through the module ``scheduler.cli`` itself, the one the
    # command modules (cli_ti, cli_web, ...) import, so there is one UsageError class, not two.
    from scheduler.cli import main as module_main

    sys.exit(module_main())
