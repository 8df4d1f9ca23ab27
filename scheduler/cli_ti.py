"""``updraft tasks clear | states-for-dag-run | mark`` and ``updraft dags mark-run``: clearing and marking
task instances and runs from a terminal, through the functions the API and UI use (``scheduler.db.ti_ops``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from scheduler.cli import UsageError, _add_output, _parse_date, _serialized_dag
from scheduler.cli_output import print_records
from scheduler.exceptions import TaskNotFound

if TYPE_CHECKING:
    from scheduler.cli import Context

TI_STATE_COLUMNS = ("dag_id", "run_id", "logical_date", "task_id", "map_index", "state", "try_number",
                    "start_date", "end_date")
CLEAR_COLUMNS = ("run_id", "logical_date", "task_id", "map_index", "state", "try_number")


def _ti_record(ti: Any, logical_date: datetime | None) -> dict[str, Any]:
    """A task instance with the REST API's field names (its ``state`` is ``none`` before one is decided)."""
    from scheduler.clock import isoformat

    return {
        "dag_id": ti.dag_id,
        "dag_run_id": ti.run_id,
        "run_id": ti.run_id,
        "logical_date": isoformat(logical_date),
        "execution_date": isoformat(logical_date),
        "task_id": ti.task_id,
        "map_index": ti.map_index,
        "state": str(ti.state),
        "try_number": ti.try_number,
        "max_tries": ti.max_tries,
        "start_date": isoformat(ti.start_date),
        "end_date": isoformat(ti.end_date),
        "duration": ti.duration,
    }


def _ti_records(session: Any, dag_id: str, tis: Sequence[Any]) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from scheduler.db.models import DagRun

    run_ids = sorted({ti.run_id for ti in tis})
    dates = dict(session.execute(
        select(DagRun.run_id, DagRun.logical_date).where(DagRun.dag_id == dag_id, DagRun.run_id.in_(run_ids))
    ).all()) if run_ids else {}
    return [_ti_record(ti, dates.get(ti.run_id)) for ti in tis]


def _confirm(question: str) -> bool:
    """Ask on stdin; only y or yes (any case) is a yes; end of input is a no."""
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        print()
        return False
    return answer.strip().lower() in ("y", "yes")


def cmd_tasks_clear(ctx: Context) -> int:
    """Clear matching task instances (back to state none, retries available again; finished runs re-queued)."""
    from scheduler.clock import to_utc, utcnow
    from scheduler.db import ti_ops
    from scheduler.db.engine import retry_transient, session_scope

    args = ctx.args
    start = _parse_date(args.start_date, "--start-date")
    end = _parse_date(args.end_date, "--end-date")
    start = None if start is None else to_utc(start)
    end = None if end is None else to_utc(end)
    if start is not None and end is not None and start > end:
        raise UsageError(f"--start-date {start.isoformat()} is after --end-date {end.isoformat()}")
    ctx.sync_dags()

    def clear(session: Any, dry_run: bool) -> list[dict[str, Any]]:
        sdag = _serialized_dag(session, args.dag_id)
        try:
            tis = ti_ops.clear_task_instances(
                session, sdag.dag_id, dag_structure=ti_ops.structure_from_serialized(sdag), now=utcnow(),
                task_regex=args.task_regex, include_downstream=args.downstream, include_upstream=args.upstream,
                only_failed=args.only_failed, only_running=args.only_running, start_date=start, end_date=end,
                dry_run=dry_run,
            )
        except ti_ops.InvalidTaskRegex as exc:
            raise UsageError(f"-t/--task-regex: {exc}") from None
        return _ti_records(session, sdag.dag_id, tis)

    with session_scope(ctx.engine, readonly=True) as session:
        planned = clear(session, dry_run=True)
    if not planned:
        print("No task instances to clear")
        return 0
    print(f"You are about to clear these {len(planned)} task instance(s) of DAG '{args.dag_id}':")
    print_records(planned, CLEAR_COLUMNS, "table")
    if args.dry_run:
        print("Dry run: nothing was cleared")
        return 0
    if not args.yes and not _confirm("Are you sure?"):
        print("Cancelled, nothing was cleared")
        return 0
    def write() -> list[dict[str, Any]]:
        with ctx.session() as session:
            return clear(session, dry_run=False)

    # A clear touches many rows of several runs beside the scheduler's and the web server's writes:
    # on PostgreSQL a deadlock or serialization failure is possible, and the whole clear is redone.
    cleared = retry_transient(write, what=f"DAG {args.dag_id}: clearing task instances")
    print(f"Cleared {len(cleared)} task instance(s)")
    return 0


def cmd_tasks_states_for_dag_run(ctx: Context) -> int:
    from scheduler.db import ti_ops
    from scheduler.db.engine import session_scope

    ctx.sync_dags()
    with session_scope(ctx.engine, readonly=True) as session:
        sdag = _serialized_dag(session, ctx.args.dag_id)
        run = ti_ops.get_dag_run(session, sdag.dag_id, ctx.args.run_id)
        tis = ti_ops.list_task_instances(session, sdag.dag_id, run.run_id)
        position = {task_id: i for i, task_id in enumerate(sdag.task_order)}
        tis.sort(key=lambda ti: (position.get(ti.task_id, len(position)), ti.task_id, ti.map_index))
        records = [_ti_record(ti, run.logical_date) for ti in tis]
    print_records(records, TI_STATE_COLUMNS, ctx.args.output)
    return 0


def cmd_tasks_mark(ctx: Context) -> int:
    """Set one task instance's state (success, failed or skipped); the run is left to the scheduler."""
    from scheduler.clock import utcnow
    from scheduler.db import ti_ops

    args = ctx.args
    ctx.sync_dags()
    with ctx.session() as session:
        sdag = _serialized_dag(session, args.dag_id)
        key = (sdag.dag_id, args.run_id, args.task_id, args.map_index)
        try:
            before = ti_ops.get_task_instance(session, key).state
        except ti_ops.TaskInstanceNotFound:
            if args.task_id not in sdag.tasks:
                raise TaskNotFound(sdag.dag_id, args.task_id) from None
            raise
        ti = ti_ops.mark_task_instance(session, key, args.state, now=utcnow())
        after = ti.state
    where = "" if args.map_index == -1 else f" (map index {args.map_index})"
    print(f"Task instance {args.dag_id}.{args.task_id}{where} of run {args.run_id}: {before} -> {after}")
    return 0


def cmd_dags_mark_run(ctx: Context) -> int:
    """Set a run's state: success / failed finish its unfinished task instances, queued clears them all."""
    from scheduler.clock import utcnow
    from scheduler.db import ti_ops

    args = ctx.args
    ctx.sync_dags()
    with ctx.session() as session:
        sdag = _serialized_dag(session, args.dag_id)
        run = ti_ops.get_dag_run(session, sdag.dag_id, args.run_id)
        run_before = str(run.state)
        before = {(ti.task_id, ti.map_index): str(ti.state)
                  for ti in ti_ops.list_task_instances(session, sdag.dag_id, args.run_id)}
        changed = ti_ops.mark_dag_run(session, sdag.dag_id, args.run_id, args.state, now=utcnow(),
                                      dag_structure=ti_ops.structure_from_serialized(sdag))
        lines = [f"  {ti.task_id}{'' if ti.map_index == -1 else f'[{ti.map_index}]'}: "
                 f"{before.get((ti.task_id, ti.map_index))} -> {ti.state}" for ti in changed]
    print(f"DAG run {args.run_id} of DAG {args.dag_id}: {run_before} -> {args.state}; "
          f"{len(changed)} task instance(s) changed")
    if lines:
        print("\n".join(lines))
    return 0


def add_commands(dags: Any, tasks: Any) -> None:
    """The parsers of the commands above (``dags`` and ``tasks`` are the subcommand collections)."""
    p = tasks.add_parser("clear", help="clear task instances so they run again (asks first unless --yes)")
    p.add_argument("dag_id")
    p.add_argument("-t", "--task-regex", help="clear only the tasks whose id this regex finds (re.search)")
    p.add_argument("-d", "--downstream", action="store_true", help="also clear everything downstream of them")
    p.add_argument("-u", "--upstream", action="store_true", help="also clear everything upstream of them")
    p.add_argument("-f", "--only-failed", action="store_true", help="only failed and upstream_failed ones")
    p.add_argument("-r", "--only-running", action="store_true", help="only running ones")
    p.add_argument("-s", "--start-date", help="only runs with a logical date at or after this (ISO 8601; naive = UTC)")
    p.add_argument("-e", "--end-date", help="only runs with a logical date at or before this")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--dry-run", action="store_true", help="list what would be cleared; change nothing")
    p.set_defaults(func=cmd_tasks_clear)
    p = tasks.add_parser("states-for-dag-run", help="list the states of the task instances of a DAG run")
    p.add_argument("dag_id")
    p.add_argument("run_id")
    _add_output(p)
    p.set_defaults(func=cmd_tasks_states_for_dag_run, whole_unit=True)
    p = tasks.add_parser("mark", help="set the state of one task instance (success, failed or skipped)")
    p.add_argument("dag_id")
    p.add_argument("run_id")
    p.add_argument("task_id")
    p.add_argument("--state", required=True, choices=("success", "failed", "skipped"))
    p.add_argument("--map-index", type=int, default=-1, help="the map index of a mapped task (default: -1)")
    p.set_defaults(func=cmd_tasks_mark, whole_unit=True)
    p = dags.add_parser("mark-run", help="set the state of a DAG run (success, failed, or queued to run again)")
    p.add_argument("dag_id")
    p.add_argument("run_id")
    p.add_argument("--state", required=True, choices=("success", "failed", "queued"))
    p.set_defaults(func=cmd_dags_mark_run, whole_unit=True)


