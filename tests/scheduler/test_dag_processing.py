"""sync_dag_folder: the DAG folder into the database through the isolated parser, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from scheduler.config import Settings
from scheduler.dag_processing import SyncReport, sync_dag_folder
from scheduler.db import store
from scheduler.db.engine import session_scope
from scheduler.db.models import DagCode
from scheduler.parsing import ParserPool
from tests.scheduler.dagfolder import folder_settings, make_folder

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def dag_source(dag_id: str, *, tasks: int = 2) -> str:
    lines = [
        "from datetime import datetime",
        "from scheduler import DAG, EmptyOperator",
        f"with DAG({dag_id!r}, schedule='0 6 * * *', start_date=datetime(2024, 1, 1)) as dag:",
        *[f"    EmptyOperator(task_id='t{i}')" for i in range(tasks)],
    ]
    return "\n".join(lines) + "\n"


BROKEN = "from scheduler import DAG\nraise RuntimeError('not today')\n"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path)


@pytest.fixture
def settings(tmp_path: Path, folder: Path) -> Settings:
    return folder_settings(tmp_path, folder, import_timeout="10", processes="2")


def write(folder: Path, name: str, text: str | bytes, *, mtime: float | None = None) -> Path:
    """Write a file; ``mtime`` (default: one second past the old one) makes the change visible."""
    path = folder / name
    old = path.stat().st_mtime if path.exists() else 1_700_000_000.0
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(textwrap.dedent(text))
    stamp = old + 1 if mtime is None else mtime
    os.utime(path, (stamp, stamp))
    return path


def sync(engine: Engine, settings: Settings, **kwargs: object) -> SyncReport:
    return sync_dag_folder(engine, settings, now=T0, **kwargs)  # type: ignore[arg-type]


def active_dags(engine: Engine) -> dict[str, str]:
    with session_scope(engine, readonly=True) as session:
        return {d.dag_id: d.fileloc for d in store.list_dags(session)}


def all_dags(engine: Engine) -> dict[str, bool]:
    with session_scope(engine, readonly=True) as session:
        return {d.dag_id: d.is_active for d in store.list_dags(session, only_active=False)}


def import_errors(engine: Engine) -> dict[str, str]:
    with session_scope(engine, readonly=True) as session:
        return {e.filename: e.stack_trace for e in store.list_import_errors(session)}


def counts(report: SyncReport) -> tuple[int, int, int, int, int]:
    return report.discovered, report.parsed, report.unchanged, report.removed, report.errors


def test_a_cold_sync_records_every_dag_and_every_import_error(db_engine: Engine, settings: Settings, folder: Path) -> None:
    one = write(folder, "one.py", dag_source("one"))
    (folder / "team").mkdir()
    two = write(folder, "team/two.py", dag_source("two"))
    broken = write(folder, "broken.py", BROKEN)
    write(folder, "helper.py", "# helpers for the dags\nX = 1\n")

    report = sync(db_engine, settings)

    assert counts(report) == (4, 4, 0, 0, 1)
    assert report.error_files == [str(broken)]
    assert set(report.durations) == {str(p) for p in (one, two, broken, folder / "helper.py")}
    assert active_dags(db_engine) == {"one": str(one), "two": str(two)}
    errors = import_errors(db_engine)
    assert list(errors) == [str(broken)]
    assert errors[str(broken)].rstrip().endswith("RuntimeError: not today")
    with session_scope(db_engine, readonly=True) as session:
        stored = store.get_serialized_dag(session, "one")
        states = store.get_file_states(session)
    assert stored is not None and [t["task_id"] for t in stored["tasks"]] == ["t0", "t1"]
    assert states[str(one)].dag_ids == ("one",)
    assert states[str(one)].mtime == one.stat().st_mtime
    assert states[str(one)].size == one.stat().st_size


def test_an_unchanged_folder_parses_nothing(db_engine: Engine, settings: Settings, folder: Path) -> None:
    for i in range(5):
        write(folder, f"d{i}.py", dag_source(f"d{i}"))
    write(folder, "broken.py", BROKEN)
    sync(db_engine, settings)
    with session_scope(db_engine, readonly=True) as session:
        before = store.get_file_states(session)

    report = sync(db_engine, settings)

    assert counts(report) == (6, 0, 6, 0, 0)
    with session_scope(db_engine, readonly=True) as session:
        assert store.get_file_states(session) == before
    assert len(import_errors(db_engine)) == 1


def test_a_fixed_file_clears_its_import_error_and_a_broken_one_gets_one(
    db_engine: Engine, settings: Settings, folder: Path
) -> None:
    fixable = write(folder, "fixable.py", BROKEN)
    breaking = write(folder, "breaking.py", dag_source("breaking"))
    sync(db_engine, settings)
    assert list(import_errors(db_engine)) == [str(fixable)]

    write(folder, "fixable.py", dag_source("fixable"))
    write(folder, "breaking.py", "from scheduler import DAG\ndef (\n")
    report = sync(db_engine, settings)

    assert counts(report) == (2, 2, 0, 0, 1)
    assert list(import_errors(db_engine)) == [str(breaking)]
    assert "SyntaxError" in import_errors(db_engine)[str(breaking)]
    # the broken file's DAG stays as it last parsed well (Airflow's behaviour)
    assert active_dags(db_engine) == {"breaking": str(breaking), "fixable": str(fixable)}


def test_a_deleted_file_deactivates_its_dags(db_engine: Engine, settings: Settings, folder: Path) -> None:
    keep = write(folder, "keep.py", dag_source("keep"))
    gone = write(folder, "gone.py", dag_source("gone"))
    broken = write(folder, "broken.py", BROKEN)
    sync(db_engine, settings)

    gone.unlink()
    broken.unlink()
    report = sync(db_engine, settings)

    assert counts(report) == (1, 0, 1, 2, 0)
    assert report.removed_files == sorted([str(gone), str(broken)])
    assert all_dags(db_engine) == {"keep": True, "gone": False}
    assert active_dags(db_engine) == {"keep": str(keep)}
    assert import_errors(db_engine) == {}


def test_a_newly_ignored_file_is_forgotten_like_a_deleted_one(db_engine: Engine, settings: Settings, folder: Path) -> None:
    write(folder, "keep.py", dag_source("keep"))
    (folder / "old").mkdir()
    write(folder, "old/legacy.py", dag_source("legacy"))
    sync(db_engine, settings)

    (folder / ".updraftignore").write_text("# no longer maintained\nold/\n")
    report = sync(db_engine, settings)

    assert counts(report) == (1, 0, 1, 1, 0)
    assert all_dags(db_engine) == {"keep": True, "legacy": False}


def test_safe_mode_skips_files_without_dag_and_a_file_losing_the_word_is_forgotten(
    db_engine: Engine, settings: Settings, folder: Path
) -> None:
    write(folder, "plain.py", "def add(a, b):\n    return a + b\n")
    changing = write(folder, "changing.py", dag_source("changing"))

    first = sync(db_engine, settings)
    assert (first.discovered, first.parsed, first.skipped) == (1, 1, 1)

    write(folder, "changing.py", "VALUE = 1\n")
    second = sync(db_engine, settings)
    assert (second.discovered, second.parsed, second.skipped, second.removed) == (0, 0, 2, 1)
    assert all_dags(db_engine) == {"changing": False}

    unsafe = sync(db_engine, settings.with_values(core__safe_mode=False))
    assert (unsafe.discovered, unsafe.parsed, unsafe.skipped, unsafe.errors) == (2, 2, 0, 0)
    with session_scope(db_engine, readonly=True) as session:
        assert set(store.get_file_states(session)) == {str(changing), str(folder / "plain.py")}


def test_a_touched_file_with_the_same_content_is_not_parsed_and_its_mtime_is_recorded(
    db_engine: Engine, settings: Settings, folder: Path
) -> None:
    path = write(folder, "same.py", dag_source("same"))
    sync(db_engine, settings)

    os.utime(path, (1_800_000_000.5, 1_800_000_000.5))
    report = sync(db_engine, settings)

    assert counts(report) == (1, 0, 1, 0, 0)
    with session_scope(db_engine, readonly=True) as session:
        assert store.get_file_states(session)[str(path)].mtime == 1_800_000_000.5
    assert counts(sync(db_engine, settings)) == (1, 0, 1, 0, 0)


def test_new_content_of_the_same_size_is_parsed(db_engine: Engine, settings: Settings, folder: Path) -> None:
    write(folder, "size.py", dag_source("aaaa", tasks=2))
    sync(db_engine, settings)

    write(folder, "size.py", dag_source("bbbb", tasks=2))
    report = sync(db_engine, settings)

    assert counts(report) == (1, 1, 0, 0, 0)
    assert all_dags(db_engine) == {"aaaa": False, "bbbb": True}


@pytest.mark.parametrize(("old_name", "new_name"), [("a_old.py", "z_new.py"), ("z_old.py", "a_new.py")])
def test_a_dag_moved_between_two_changed_files_lands_in_its_new_file_without_errors(
    db_engine: Engine, settings: Settings, folder: Path, old_name: str, new_name: str
) -> None:
    one_by_one = settings.with_values(core__parsing_processes=1)  # files parse and record in name order
    old = write(folder, old_name, dag_source("moving"))
    sync(db_engine, one_by_one)

    write(folder, old_name, f"# the dag moved to {new_name}\n")
    new = write(folder, new_name, dag_source("moving"))
    report = sync(db_engine, one_by_one)

    assert (report.parsed, report.errors) == (2, 0)
    assert import_errors(db_engine) == {}
    assert active_dags(db_engine) == {"moving": str(new)}
    with session_scope(db_engine, readonly=True) as session:
        states = store.get_file_states(session)
    assert (states[str(old)].dag_ids, states[str(new)].dag_ids) == ((), ("moving",))


def test_the_source_is_stored_for_the_code_view_even_if_not_utf8(
    db_engine: Engine, settings: Settings, folder: Path
) -> None:
    path = write(folder, "latin.py", b"# -*- coding: latin-1 -*-\n" + dag_source("latin").encode() + b"# caf\xe9\n")

    report = sync(db_engine, settings)

    assert report.errors == 0
    with session_scope(db_engine, readonly=True) as session:
        code = session.get(DagCode, str(path))
        assert code is not None
        assert code.source.endswith("# caf\ufffd\n")


def test_a_missing_folder_forgets_every_file(db_engine: Engine, settings: Settings, folder: Path) -> None:
    write(folder, "one.py", dag_source("one"))
    sync(db_engine, settings)

    (folder / "one.py").unlink()
    folder.rmdir()
    report = sync(db_engine, settings)

    assert counts(report) == (0, 0, 0, 1, 0)
    assert all_dags(db_engine) == {"one": False}


def test_a_pool_kept_by_the_caller_serves_several_syncs(db_engine: Engine, settings: Settings, folder: Path) -> None:
    write(folder, "one.py", dag_source("one"))
    with ParserPool(processes=1, timeout=10, default_timezone="UTC", dags_folder=folder) as pool:
        first = sync(db_engine, settings, pool=pool)
        workers = list(pool._workers)
        write(folder, "two.py", dag_source("two"))
        second = sync(db_engine, settings, pool=pool)
        assert pool._workers == workers and len(workers) == 1

    assert (first.parsed, second.parsed, second.unchanged) == (1, 1, 1)
    assert set(active_dags(db_engine)) == {"one", "two"}


def test_a_failing_write_stops_the_sync_and_is_raised(
    db_engine: Engine, settings: Settings, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(3):
        write(folder, f"d{i}.py", dag_source(f"d{i}"))

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(store, "record_parse_result", refuse)
    with pytest.raises(RuntimeError, match="disk full"):
        sync(db_engine, settings)
    monkeypatch.undo()

    assert all_dags(db_engine) == {}
    assert counts(sync(db_engine, settings)) == (3, 3, 0, 0, 0)
