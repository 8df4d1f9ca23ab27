"""Discovery (.updraftignore, safe mode) and the isolated parser's process side, with real files and processes."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from scheduler import parsing
from scheduler.parsing import (
    DagFileImportError,
    ParseResult,
    ParserPool,
    ParseWorkerError,
    discover_files,
    load_dags_from_file,
    parse_files,
)

GOOD_DAG = """
from datetime import datetime
from scheduler import DAG, BashOperator, EmptyOperator

with DAG("{dag_id}", schedule="0 6 * * *", start_date=datetime(2024, 1, 1)) as dag:
    BashOperator(task_id="extract", bash_command="echo hi") >> EmptyOperator(task_id="done")
"""


def write(folder: Path, relative: str, text: str) -> Path:
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def names(paths: list[Path], root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


def parse(folder: Path, paths: list[Path], *, timeout: float = 10.0, processes: int = 2) -> list[ParseResult]:
    return parse_files(paths, timeout=timeout, processes=processes, default_timezone="UTC", dags_folder=folder)


# --- discovery -----------------------------------------------------------------------------------


def test_discovery_finds_python_files_recursively_sorted_and_skips_caches_and_hidden(tmp_path: Path) -> None:
    for relative in ("b.py", "a.py", "sub/c.py", "sub/deeper/d.py", "__pycache__/e.py", ".hidden/f.py",
                     "sub/.g.py", "notes.txt", "sub/data.pyc"):
        write(tmp_path, relative, "# dag\n")
    (tmp_path / "dir.py").mkdir()

    assert names(discover_files(tmp_path), tmp_path) == ["a.py", "b.py", "sub/c.py", "sub/deeper/d.py"]


def test_a_missing_folder_has_no_files(tmp_path: Path) -> None:
    assert discover_files(tmp_path / "nope") == []
    write(tmp_path, "file.py", "# dag\n")
    assert discover_files(tmp_path / "file.py") == []


IGNORE_CASES = [
    # (ignore file text, files expected to be kept)
    ("# a comment\n\n*_test.py\n", ["keep.py", "lib/helper.py", "lib/more/deep.py", "vendor/x.py"]),
    ("vendor/\n", ["keep.py", "lib/a_test.py", "lib/helper.py", "lib/more/deep.py"]),
    ("lib/*.py\n", ["keep.py", "lib/more/deep.py", "vendor/x.py"]),
    ("lib/**\n", ["keep.py", "vendor/x.py"]),
    ("**/deep.py\n", ["keep.py", "lib/a_test.py", "lib/helper.py", "vendor/x.py"]),
    ("/keep.py\n", ["lib/a_test.py", "lib/helper.py", "lib/more/deep.py", "vendor/x.py"]),
    ("[kv]*\n", ["lib/a_test.py", "lib/helper.py", "lib/more/deep.py"]),
    ("lib\n!lib/helper.py\n", ["keep.py", "vendor/x.py"]),  # cannot re-include inside an excluded directory
    ("*.py\n!keep.py\n", ["keep.py"]),
    ("more/\n", ["keep.py", "lib/a_test.py", "lib/helper.py", "vendor/x.py"]),  # a name at any depth
    ("helper.py/\n", ["keep.py", "lib/a_test.py", "lib/helper.py", "lib/more/deep.py", "vendor/x.py"]),
]


@pytest.mark.parametrize(("patterns", "kept"), IGNORE_CASES)
def test_updraftignore_patterns(tmp_path: Path, patterns: str, kept: list[str]) -> None:
    for relative in ("keep.py", "lib/a_test.py", "lib/helper.py", "lib/more/deep.py", "vendor/x.py"):
        write(tmp_path, relative, "# dag\n")
    (tmp_path / ".updraftignore").write_text(patterns)

    assert names(discover_files(tmp_path), tmp_path) == kept


def test_an_ignore_file_applies_to_its_own_subtree_only_relative_to_its_directory(tmp_path: Path) -> None:
    for relative in ("x.py", "team/x.py", "team/sub/x.py", "team/sub/y.py", "other/sub/y.py"):
        write(tmp_path, relative, "# dag\n")
    (tmp_path / "team" / ".updraftignore").write_text("sub/y.py\n/x.py\n")

    assert names(discover_files(tmp_path), tmp_path) == ["other/sub/y.py", "team/sub/x.py", "x.py"]


def test_safe_mode_skips_files_that_never_mention_dag(tmp_path: Path) -> None:
    write(tmp_path, "helper.py", "def add(a, b):\n    return a + b\n")
    write(tmp_path, "upper.py", "from scheduler import DAG\n")
    write(tmp_path, "mixed.py", "# builds a Dag somewhere\n")
    (tmp_path / "binary.py").write_bytes(b"\xff\xfe# DAG \xff\n")

    assert names(discover_files(tmp_path), tmp_path) == ["binary.py", "mixed.py", "upper.py"]
    assert names(discover_files(tmp_path, safe_mode=False), tmp_path) == ["binary.py", "helper.py", "mixed.py", "upper.py"]


def test_a_symlinked_directory_loop_is_walked_once(tmp_path: Path) -> None:
    write(tmp_path, "sub/a.py", "# dag\n")
    (tmp_path / "sub" / "loop").symlink_to(tmp_path / "sub", target_is_directory=True)

    assert names(discover_files(tmp_path), tmp_path) == ["sub/a.py"]


# --- parsing in worker processes ---------------------------------------------------------------


def test_a_good_file_gives_its_serialized_dag_output_and_duration(tmp_path: Path) -> None:
    path = write(tmp_path, "good.py", 'print("parsing good")\n' + GOOD_DAG.format(dag_id="good"))

    [result] = parse(tmp_path, [path])

    assert result.error is None
    assert result.fileloc == str(path)
    assert [d["dag_id"] for d in result.dags] == ["good"]
    assert result.dags[0]["fileloc"] == str(path)
    assert [t["task_id"] for t in result.dags[0]["tasks"]] == ["extract", "done"]
    assert result.output_tail == "parsing good\n"
    assert 0 < result.duration < 10


def test_user_code_runs_in_another_process_under_a_unique_module_name(tmp_path: Path) -> None:
    path = write(tmp_path, "where.py", """
        import os
        from datetime import datetime
        from scheduler import DAG
        DAG("where", description=f"{os.getpid()} {__name__}", schedule=None)
    """)

    [result] = parse(tmp_path, [path])

    pid, module = result.dags[0]["description"].split()
    assert int(pid) != os.getpid()
    assert module.startswith("unusual_prefix_") and module.endswith("_where")
    assert not any(name.startswith("unusual_prefix_") and name.endswith("_where") for name in sys.modules)


def test_default_timezone_applies_to_dags_that_name_none(tmp_path: Path) -> None:
    path = write(tmp_path, "tz.py", """
        from datetime import datetime
        from scheduler import DAG
        DAG("local", schedule="0 6 * * *", start_date=datetime(2024, 1, 1))
        DAG("tokyo", schedule="0 6 * * *", start_date=datetime(2024, 1, 1), timezone="Asia/Tokyo")
    """)

    [result] = parse_files([path], timeout=10, processes=1, default_timezone="Europe/Berlin", dags_folder=tmp_path)

    assert {d["dag_id"]: d["timezone"] for d in result.dags} == {"local": "Europe/Berlin", "tokyo": "Asia/Tokyo"}
    assert result.dags[0]["start_date"] == "2023-12-31T23:00:00+00:00"


def test_results_come_back_in_input_order_one_per_distinct_path(tmp_path: Path) -> None:
    paths = [write(tmp_path, f"d{i}.py", GOOD_DAG.format(dag_id=f"d{i}")) for i in range(7)]
    wanted = [paths[3], paths[0], paths[6], paths[3], paths[1], paths[5], paths[2], paths[4]]

    results = parse(tmp_path, wanted, processes=3)

    assert [r.fileloc for r in results] == [str(p) for p in dict.fromkeys(wanted)]
    assert [r.dags[0]["dag_id"] for r in results] == ["d3", "d0", "d6", "d1", "d5", "d2", "d4"]


def test_a_file_that_kills_its_worker_is_an_error_and_the_rest_still_parse(tmp_path: Path) -> None:
    killer = write(tmp_path, "killer.py", """
        import os, signal
        os.kill(os.getppid(), signal.SIGKILL)
    """)
    others = [write(tmp_path, f"ok{i}.py", GOOD_DAG.format(dag_id=f"ok{i}")) for i in range(4)]

    results = parse(tmp_path, [killer, *others], processes=1)

    assert results[0].error == f"{killer}: the parse worker process ended while importing this file: killed by signal SIGKILL"
    assert [r.error for r in results[1:]] == [None] * 4
    assert [r.dags[0]["dag_id"] for r in results[1:]] == ["ok0", "ok1", "ok2", "ok3"]


def test_a_worker_that_stops_answering_is_killed_after_the_timeout_and_a_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parsing, "WORKER_GRACE_SECONDS", 1.0)
    freezer = write(tmp_path, "freezer.py", """
        import os, signal
        os.kill(os.getppid(), signal.SIGSTOP)
    """)
    after = write(tmp_path, "after.py", GOOD_DAG.format(dag_id="after"))

    started = time.monotonic()
    results = parse(tmp_path, [freezer, after], timeout=1.0, processes=1)

    assert results[0].error == (
        f"{freezer}: the parse worker process stopped answering and was killed while importing this file: "
        "killed by signal SIGKILL"
    )
    assert (results[1].error, results[1].dags[0]["dag_id"]) == (None, "after")
    assert 2.0 <= time.monotonic() - started < 2.0 + 5.0


def test_files_waiting_behind_a_slow_one_are_taken_back_by_an_idle_worker(tmp_path: Path) -> None:
    slow = write(tmp_path, "a_slow.py", "import time\ntime.sleep(1000)\n")
    quick = [write(tmp_path, f"b{i}.py", GOOD_DAG.format(dag_id=f"b{i}")) for i in range(6)]

    started = time.monotonic()
    with ParserPool(processes=2, timeout=4.0, default_timezone="UTC", dags_folder=tmp_path) as pool:
        finished_before_slow = []
        for result in pool.parse([slow, *quick]):
            if result.fileloc == str(slow):
                break
            finished_before_slow.append(result.fileloc)
    elapsed = time.monotonic() - started

    assert sorted(finished_before_slow) == sorted(str(p) for p in quick)
    assert elapsed < 4.0 + 3.0


def test_stopping_early_kills_the_busy_workers_at_once(tmp_path: Path) -> None:
    slow = write(tmp_path, "slow.py", "import time\ntime.sleep(1000)\n")
    quick = write(tmp_path, "quick.py", GOOD_DAG.format(dag_id="quick"))

    pool = ParserPool(processes=2, timeout=60.0, default_timezone="UTC", dags_folder=tmp_path)
    started = time.monotonic()
    try:
        first = next(iter(pool.parse([slow, quick])))
    finally:
        pool.close()

    assert first.fileloc == str(quick)
    assert time.monotonic() - started < 10.0


def test_a_pool_is_reused_across_calls_with_the_same_workers(tmp_path: Path) -> None:
    paths = [write(tmp_path, f"p{i}.py", GOOD_DAG.format(dag_id=f"p{i}") + "\nimport os\nprint(os.getppid())\n")
             for i in range(4)]

    with ParserPool(processes=2, timeout=10.0, default_timezone="UTC", dags_folder=tmp_path) as pool:
        first = {r.output_tail for r in pool.parse(paths[:2])}
        second = {r.output_tail for r in pool.parse(paths[2:])}

    assert len(first | second) <= 2  # the same (at most two) worker processes forked every child


def test_a_worker_that_cannot_start_is_an_error_of_the_installation_not_of_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "fine.py", GOOD_DAG.format(dag_id="fine"))
    monkeypatch.setattr(sys, "executable", "/bin/false")

    with pytest.raises(ParseWorkerError, match=r"could not start: exit code 1"):
        parse(tmp_path, [path], processes=1)


def test_no_files_start_no_workers(tmp_path: Path) -> None:
    with ParserPool(processes=4, timeout=1.0, default_timezone="UTC", dags_folder=tmp_path) as pool:
        assert list(pool.parse([])) == []
        assert pool._workers == []


# --- in this process --------------------------------------------------------------------------


def test_load_dags_from_file_imports_in_this_process_with_the_same_naming(tmp_path: Path) -> None:
    path = write(tmp_path, "here.py", """
        import os
        from datetime import datetime
        from scheduler import DAG, EmptyOperator
        with DAG("here", description=f"{os.getpid()} {__name__}", schedule="@daily", start_date=datetime(2024, 1, 1)) as d:
            EmptyOperator(task_id="only")
    """)

    dags = load_dags_from_file(path, default_timezone="America/New_York", dags_folder=tmp_path)

    assert list(dags) == ["here"]
    pid, module = str(dags["here"].description).split()
    assert int(pid) == os.getpid()
    assert module.startswith("unusual_prefix_")
    assert dags["here"].timezone.key == "America/New_York"  # type: ignore[attr-defined]
    assert dags["here"].task_ids == ["only"]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import sys\nsys.exit(3)\n", "SystemExit: 3"),
        ("raise RuntimeError('boom')\n", "RuntimeError: boom"),
        ("def (\n", "SyntaxError"),
        ("from scheduler import DAG\nDAG('nostart', schedule='@daily')\n", "no start_date"),
    ],
)
def test_load_dags_from_file_raises_a_clear_error(tmp_path: Path, source: str, expected: str) -> None:
    path = write(tmp_path, "broken.py", source)

    with pytest.raises(DagFileImportError) as info:
        load_dags_from_file(path, default_timezone="UTC", dags_folder=tmp_path)

    assert str(info.value).startswith(f"{path}: the DAG file failed to import:\n")
    assert expected in info.value.traceback
    assert info.value.path == path
