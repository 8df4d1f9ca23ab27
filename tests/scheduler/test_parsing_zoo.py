"""The bad-DAG-file zoo: every way a DAG file can go wrong gives the right result, and the whole
zoo parses within the import timeout plus a little (a correctness bound, not a speed target).

The zoo is written into a temporary folder and parsed once, in one batch, by real worker processes.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from scheduler.parse_worker import OUTPUT_TAIL_BYTES
from scheduler.parsing import ParseResult, parse_files

TIMEOUT = 2.0
#: One worker per file that runs into the timeout, so they time out side by side.
PROCESSES = 4
#: Starting the workers, killing and reaping, handing files waiting behind a slow one to another worker.
SLACK_SECONDS = 5.0

HEADER = "from datetime import datetime\nfrom scheduler import DAG, BashOperator, EmptyOperator, PythonOperator\n"


def dag_file(body: str) -> str:
    """The shared imports (lines 1-2), then ``body`` from line 3 on."""
    return HEADER + textwrap.dedent(body).lstrip("\n")

ZOO: dict[str, str | bytes] = {
    "good.py": dag_file("""
        with DAG("good", schedule="0 6 * * *", start_date=datetime(2024, 1, 1)) as dag:
            EmptyOperator(task_id="a") >> BashOperator(task_id="b", bash_command="echo b")
    """),
    "two_dags.py": dag_file("""
        with DAG("first_of_two", schedule="@daily", start_date=datetime(2024, 1, 1)):
            EmptyOperator(task_id="a")
        with DAG("second_of_two", schedule=None):
            EmptyOperator(task_id="b")
    """),
    "zoo_helper.py": """
        # a helper module beside the DAGs: it defines no DAG, which is fine
        def make_tasks(prefix):
            from scheduler import EmptyOperator
            return [EmptyOperator(task_id=f"{prefix}_{i}") for i in range(3)]
    """,
    "uses_helper.py": dag_file("""
        from zoo_helper import make_tasks
        with DAG("uses_helper", schedule=None):
            make_tasks("step")
    """),
    "syntax_error.py": """
        from scheduler import DAG

        def broken(:
            pass
    """,
    "missing_module.py": """
        from scheduler import DAG
        import updraft_no_such_module_anywhere
    """,
    "cycle.py": dag_file("""
        with DAG("cycle", schedule=None):
            a = EmptyOperator(task_id="a")
            b = EmptyOperator(task_id="b")
            c = EmptyOperator(task_id="c")
            a >> b >> c >> a
    """),
    "bad_cron.py": dag_file("""
        DAG("bad_cron", schedule="61 * * * *", start_date=datetime(2024, 1, 1))
    """),
    "duplicate_task_id.py": dag_file("""
        with DAG("duplicate_task_id", schedule=None):
            EmptyOperator(task_id="same")
            EmptyOperator(task_id="same")
    """),
    "missing_start_date.py": dag_file("""
        DAG("missing_start_date", schedule="@hourly")
    """),
    "duplicate_dag_id.py": dag_file("""
        with DAG("twice", schedule=None):
            EmptyOperator(task_id="a")
        with DAG("twice", schedule=None):
            EmptyOperator(task_id="b")
    """),
    "one_bad_dag_fails_the_file.py": dag_file("""
        DAG("fine_alone", schedule=None)
        DAG("no_start", schedule="@daily")
    """),
    "sleeps.py": """
        import time
        from scheduler import DAG
        time.sleep(1000)
    """,
    "infinite_loop.py": """
        from scheduler import DAG
        while True:
            pass
    """,
    "flood_forever.py": """
        from scheduler import DAG
        while True:
            print("x" * 1000)
    """,
    "flood_then_dag.py": dag_file("""
        import sys
        chunk = "y" * 1_000_000
        for _ in range(50):
            sys.stdout.write(chunk)
        print("last words")
        DAG("after_the_flood", schedule=None)
    """),
    "sys_exit.py": """
        import sys
        from scheduler import DAG
        print("leaving now")
        sys.exit(3)
    """,
    "os_exit.py": """
        import os
        from scheduler import DAG
        print("leaving hard", flush=True)
        os._exit(7)
    """,
    "segfault.py": """
        import ctypes
        from scheduler import DAG
        ctypes.string_at(0)
    """,
    "non_utf8.py": b"# a DAG file saved in latin-1 without saying so\nname = '\xe9t\xe9'\n",
    "latin1_declared.py": (
        "# -*- coding: latin-1 -*-\nfrom scheduler import DAG\nDAG('caf\xe9_free', description='caf\xe9', schedule=None)\n"
    ).replace("caf\xe9_free", "latin1_declared").encode("latin-1"),
    "raises_after_output.py": """
        print("about to fail")
        raise ValueError("no config for this DAG file")
    """,
}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, ParseResult], float]:
    folder = tmp_path_factory.mktemp("zoo")
    paths = []
    for name, content in ZOO.items():
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content).lstrip("\n"))
        paths.append(path)
    started = time.monotonic()
    results = parse_files(paths, timeout=TIMEOUT, processes=PROCESSES, default_timezone="UTC", dags_folder=folder)
    elapsed = time.monotonic() - started
    return folder, {Path(r.fileloc).name: r for r in results}, elapsed


def result(zoo: tuple[Path, dict[str, ParseResult], float], name: str) -> ParseResult:
    return zoo[1][name]


def path_of(zoo: tuple[Path, dict[str, ParseResult], float], name: str) -> str:
    return str(zoo[0] / name)


def dag_ids(r: ParseResult) -> list[str]:
    return sorted(d["dag_id"] for d in r.dags)


def test_the_whole_zoo_parses_within_the_timeout_plus_a_little(zoo: tuple[Path, dict[str, ParseResult], float]) -> None:
    assert len(zoo[1]) == len(ZOO)
    assert zoo[2] < TIMEOUT + SLACK_SECONDS


def test_good_files(zoo: tuple[Path, dict[str, ParseResult], float]) -> None:
    good = result(zoo, "good.py")
    assert (good.error, dag_ids(good)) == (None, ["good"])
    two = result(zoo, "two_dags.py")
    assert (two.error, dag_ids(two)) == (None, ["first_of_two", "second_of_two"])


def test_a_helper_module_without_a_dag_is_fine(zoo: tuple[Path, dict[str, ParseResult], float]) -> None:
    helper = result(zoo, "zoo_helper.py")
    assert (helper.error, helper.dags) == (None, [])


def test_a_file_imports_its_sibling_helper_module(zoo: tuple[Path, dict[str, ParseResult], float]) -> None:
    uses = result(zoo, "uses_helper.py")
    assert uses.error is None
    assert [t["task_id"] for t in uses.dags[0]["tasks"]] == ["step_0", "step_1", "step_2"]


def test_syntax_error_names_file_and_line(zoo: tuple[Path, dict[str, ParseResult], float]) -> None:
    error = result(zoo, "syntax_error.py").error
    assert error is not None
    assert f'File "{path_of(zoo, "syntax_error.py")}", line 3' in error
    assert "def broken(:" in error
    assert error.rstrip().splitlines()[-1].startswith("SyntaxError:")
    assert "parse_worker" not in error and "importlib" not in error


def test_a_missing_module_is_a_traceback_from_the_file(zoo: tuple[Path, dict[str, ParseResult], float]) -> None:
    error = result(zoo, "missing_module.py").error
    assert error is not None
    assert error.startswith("Traceback (most recent call last):\n")
    assert f'File "{path_of(zoo, "missing_module.py")}", line 2, in <module>' in error
    assert "ModuleNotFoundError: No module named 'updraft_no_such_module_anywhere'" in error


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("cycle.py", "CycleError: DAG 'cycle' has a cycle: a >> b >> c >> a"),
        ("bad_cron.py", "ScheduleError: DAG 'bad_cron': invalid schedule:"),
        ("duplicate_task_id.py", "Task id 'same' has already been added to the DAG 'duplicate_task_id'"),
        ("missing_start_date.py", "DagDefinitionError: DAG 'missing_start_date' has schedule"),
        ("one_bad_dag_fails_the_file.py", "DAG 'no_start' has schedule '@daily' but no start_date"),
    ],
)
def test_an_invalid_dag_makes_the_file_an_import_error(
    zoo: tuple[Path, dict[str, ParseResult], float], name: str, message: str
) -> None:
    r = result(zoo, name)
    assert r.dags == []
    assert r.error is not None
    assert r.error.startswith("Traceback (most recent call last):\n")
    assert message in r.error


def test_bad_cron_names_the_field(zoo: tuple[Path, dict[str, ParseResult], float]) -> None:
    error = result(zoo, "bad_cron.py").error
    assert error is not None and "'61 * * * *'" in error


def test_two_dags_with_one_id_in_a_file_name_both(zoo: tuple[Path, dict[str, ParseResult], float]) -> None:
    r = result(zoo, "duplicate_dag_id.py")
    assert r.dags == []
    assert (
        f"DAG id 'twice' is defined 2 times in {path_of(zoo, 'duplicate_dag_id.py')} (line 3 and line 5)" in (r.error or "")
    )


@pytest.mark.parametrize("name", ["sleeps.py", "infinite_loop.py", "flood_forever.py"])
def test_an_import_that_does_not_finish_is_cut_at_the_timeout(
    zoo: tuple[Path, dict[str, ParseResult], float], name: str
) -> None:
    r = result(zoo, name)
    assert r.dags == []
    assert (r.error or "").startswith(
        f"{path_of(zoo, name)}: DAG file import timed out after 2.0s (core.dagbag_import_timeout)"
    )
    assert TIMEOUT <= r.duration < TIMEOUT + SLACK_SECONDS


def test_a_flood_of_output_keeps_only_its_tail(zoo: tuple[Path, dict[str, ParseResult], float]) -> None:
    forever = result(zoo, "flood_forever.py")
    assert set(forever.output_tail) == {"x", "\n"}  # killed at any point, maybe in the middle of a line
    assert "x" * 1000 + "\n" in forever.output_tail
    assert len(forever.output_tail) == OUTPUT_TAIL_BYTES
    assert "bytes of output ---" in (forever.error or "")

    after = result(zoo, "flood_then_dag.py")
    assert (after.error, dag_ids(after)) == (None, ["after_the_flood"])
    assert after.output_tail.endswith("y" * 100 + "last words\n")
    assert len(after.output_tail) == OUTPUT_TAIL_BYTES


def test_sys_exit_at_import_is_a_traceback(zoo: tuple[Path, dict[str, ParseResult], float]) -> None:
    r = result(zoo, "sys_exit.py")
    assert r.error is not None
    assert f'File "{path_of(zoo, "sys_exit.py")}", line 4, in <module>' in r.error
    assert r.error.rstrip().endswith("SystemExit: 3")
    assert r.output_tail == "leaving now\n"


def test_a_process_that_ends_or_crashes_says_how_with_its_output(zoo: tuple[Path, dict[str, ParseResult], float]) -> None:
    exited = result(zoo, "os_exit.py")
    assert exited.error == f"{path_of(zoo, 'os_exit.py')}: the import ended the process: exit code 7\n\n--- output ---\nleaving hard\n"

    crashed = result(zoo, "segfault.py")
    assert (crashed.error or "").startswith(f"{path_of(zoo, 'segfault.py')}: the import ended the process: killed by signal SIGSEGV")
    assert "Fatal Python error: Segmentation fault" in crashed.output_tail
    assert f'File "{path_of(zoo, "segfault.py")}", line 3' in crashed.output_tail


def test_bytes_that_are_not_utf8(zoo: tuple[Path, dict[str, ParseResult], float]) -> None:
    undeclared = result(zoo, "non_utf8.py")
    assert undeclared.error is not None
    assert f'File "{path_of(zoo, "non_utf8.py")}", line 2' in undeclared.error
    assert "'utf-8' codec can't decode byte 0xe9" in undeclared.error

    declared = result(zoo, "latin1_declared.py")
    assert declared.error is None
    assert declared.dags[0]["description"] == "caf\xe9"


def test_output_before_an_error_is_kept(zoo: tuple[Path, dict[str, ParseResult], float]) -> None:
    r = result(zoo, "raises_after_output.py")
    assert (r.error or "").rstrip().endswith("ValueError: no config for this DAG file")
    assert r.output_tail == "about to fail\n"
