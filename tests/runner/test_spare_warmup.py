"""A spare runner's rehearsal: the whole try path runs, and nothing of it shows or stays."""

from __future__ import annotations

import io
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scheduler import DAG, BashOperator, PythonOperator
from scheduler.config import load_settings
from scheduler.spare_warmup import _rehearse, rehearse
from scheduler.templating import _ENVIRONMENTS, environment_for


def _dags() -> dict[str, DAG]:
    with DAG("real", schedule=None, start_date=datetime(2025, 1, 1, tzinfo=UTC),
             user_defined_macros={"shout": str.upper}) as dag:
        BashOperator(task_id="say", bash_command="echo {{ shout('x') }}")
        PythonOperator(task_id="py", python_callable=lambda: 1)
    return {dag.dag_id: dag}


def test_the_rehearsal_goes_through_a_whole_try(tmp_path: Path) -> None:
    settings = load_settings(environ={"UPDRAFT_HOME": str(tmp_path)}, cwd=tmp_path)
    sink = io.StringIO()
    saved = (sys.stdout, sys.stderr, list(logging.getLogger().handlers))
    try:
        _rehearse(settings, _dags(), sink, logging.getLogger(), lambda: False)  # raises if any step fails
    finally:
        sys.stdout, sys.stderr = saved[0], saved[1]
        logging.getLogger().handlers[:] = saved[2]
    text = sink.getvalue()
    assert "Starting attempt 1 of 1" in text
    assert "Done. Returned value was: None" in text  # the synthetic task's print, through the masking stream
    assert "Marking task as SUCCESS. dag_id=__rehearsal__" in text


def test_the_rehearsal_leaves_no_trace_and_keeps_the_template_environment(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings(environ={"UPDRAFT_HOME": str(tmp_path)}, cwd=tmp_path)
    dags = _dags()
    stdout, stderr = sys.stdout, sys.stderr
    handlers = list(logging.getLogger().handlers)

    rehearse(settings, dags)

    assert (sys.stdout, sys.stderr) == (stdout, stderr)
    assert logging.getLogger().handlers == handlers
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert tmp_path.joinpath("logs").exists() is False  # no log file, no folder
    dag = dags["real"]
    assert _ENVIRONMENTS[dag][False] is environment_for(dag)  # made ahead, used by the try's render
    assert "shout" in environment_for(dag).globals


def test_a_failing_rehearsal_is_harmless(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(environ={"UPDRAFT_HOME": str(tmp_path)}, cwd=tmp_path)
    stdout = sys.stdout

    def broken(*args: object, **kwargs: object) -> None:
        print("half-way")
        raise RuntimeError("boom")

    monkeypatch.setattr("scheduler.execution.execute_try", broken)
    rehearse(settings, _dags())  # swallowed
    assert sys.stdout is stdout


@pytest.mark.parametrize("arrives_after", [0, 1, 2, 99])
def test_a_rehearsal_stops_at_the_next_step_once_the_workload_is_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arrives_after: int
) -> None:
    settings = load_settings(environ={"UPDRAFT_HOME": str(tmp_path)}, cwd=tmp_path)
    executed: list[str] = []
    import scheduler.execution

    real = scheduler.execution.execute_try

    def spy(task: object, *args: object, **kwargs: object) -> object:
        executed.append(str(getattr(task, "task_id", "")))
        return real(task, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("scheduler.execution.execute_try", spy)
    asked = []

    def interrupted() -> bool:
        asked.append(1)
        return len(asked) > arrives_after

    stdout = sys.stdout
    rehearse(settings, _dags(), interrupted)
    assert sys.stdout is stdout
    # Asked before each of its three steps and never after it stopped; the synthetic try runs only
    # when no workload came before its step.
    assert len(asked) == min(arrives_after + 1, 3)
    assert executed == (["noop"] if arrives_after >= 3 else [])


def test_a_spare_skips_its_rehearsal_when_the_workload_is_already_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from scheduler import task_runner

    settings = load_settings(environ={"UPDRAFT_HOME": str(tmp_path)}, cwd=tmp_path)
    seen: list[bool] = []
    monkeypatch.setattr("scheduler.spare_warmup.rehearse", lambda s, d, interrupted: seen.append(interrupted()))
    read_end, write_end = os.pipe()
    try:
        task_runner.prepare(settings, read_end)
        os.write(write_end, b"{}")
        task_runner.prepare(settings, read_end)
        task_runner.prepare(settings)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert seen == [False, True, False]


MADE_AHEAD = """
import json, os, sys
from scheduler import spare_warmup, task_runner, templating
from scheduler.config import load_settings

from pathlib import Path
fileloc, home = sys.argv[1], Path(sys.argv[2])
settings = load_settings({**os.environ, "UPDRAFT_HOME": str(home)}, cwd=home)
task_runner.warm_up(settings)
after_warm_up = spare_warmup._SYNTHETIC is not None and spare_warmup._SYNTHETIC[0] in templating._ENVIRONMENTS
assert task_runner.preload(fileloc, settings) is None
dags = task_runner._PRELOADED[2]
print(json.dumps({"synthetic": after_warm_up,
                  "preloaded": sorted(d.dag_id for d in dags.values() if d in templating._ENVIRONMENTS)}))
"""


def test_the_fork_server_and_each_zygote_make_what_every_rehearsal_needs_ahead(tmp_path: Path) -> None:
    """The synthetic DAG and the template environments exist before any spare is forked, so no spare
    (and no try whose rehearsal was cut short) builds them again."""
    import json
    import subprocess

    from tests.backend import clean_environ

    dag_file = tmp_path / "two.py"
    dag_file.write_text(
        "from datetime import datetime\nfrom scheduler import DAG, EmptyOperator\n"
        "for name in ('one', 'two'):\n"
        "    with DAG(name, schedule=None, start_date=datetime(2024, 1, 1)):\n"
        "        EmptyOperator(task_id='t')\n"
    )
    done = subprocess.run([sys.executable, "-c", MADE_AHEAD, str(dag_file), str(tmp_path)],
                          env=clean_environ(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"synthetic": True, "preloaded": ["one", "two"]}
