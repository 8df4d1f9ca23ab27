"""A try forked from a warm zygote imports nothing: every module it needs is shared copy-on-write.

A module first imported inside the try is compiled or loaded, and its objects written, in every
try (the fork server's children do not write bytecode): one such import once cost each try
6 ms of CPU. This runs the fork server's own sequence in a fresh interpreter (``warm_up``,
``preload`` of the DAG file, then per try a forked child that ``prepare``\\ s and runs the
workload in direct mode) and lists the modules each try added to ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.backend import clean_environ

from .harness import RUN_ID, Env

SCRIPT = textwrap.dedent("""
    import json, os, sys
    from scheduler import task_runner
    from scheduler.config import load_settings
    from scheduler.workloads import TaskWorkload

    fileloc, run_id, cwd, tries = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    settings = load_settings(dict(os.environ), cwd=cwd)
    task_runner.warm_up(settings)
    reason = task_runner.preload(fileloc, settings)
    assert reason is None, reason
    added = {}
    for task_id, ti_id in tries:
        before = set(sys.modules)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            task_runner.prepare(settings)
            workload = TaskWorkload(ti_id=ti_id, dag_id="imports", run_id=run_id, task_id=task_id,
                                    map_index=-1, try_number=1, fileloc=fileloc)
            code = task_runner.run_workload(workload, settings, direct=True)
            os.write(write_end, json.dumps(sorted(set(sys.modules) - before)).encode())
            os._exit(code)
        os.close(write_end)
        _, status = os.waitpid(pid, 0)
        with os.fdopen(read_end) as f:
            added[task_id] = {"exit": os.waitstatus_to_exitcode(status), "modules": json.loads(f.read() or "null")}
    print(json.dumps(added))
""")

DAG = """
from scheduler import ShortCircuitOperator

def give():
    return {"n": 1}

def pull(ti):
    return ti.xcom_pull(task_ids="give")["n"] + 1

with DAG("imports", schedule=None, start_date=datetime(2024, 1, 1)):
    give = PythonOperator(task_id="give", python_callable=give)
    pulls = PythonOperator(task_id="pull", python_callable=pull)
    templated = BashOperator(task_id="templated", bash_command="echo {{ ds }} {{ run_id }}")
    branch = BranchPythonOperator(task_id="branch", python_callable=lambda: "left")
    left = EmptyOperator(task_id="left")
    right = EmptyOperator(task_id="right")
    stop = ShortCircuitOperator(task_id="stop", python_callable=lambda: False)
    after = EmptyOperator(task_id="after")
    give >> pulls
    branch >> [left, right]
    stop >> after
"""


def test_a_try_forked_from_a_warm_zygote_imports_no_module(env: Env) -> None:
    path = env.write_dag("imports", DAG)
    order = ("give", "pull", "templated", "branch", "stop")
    states = {task_id: "queued" for task_id in order} | {"left": "none", "right": "none", "after": "none"}
    ids = env.queue("imports", path, states)
    environ = clean_environ() | {f"UPDRAFT__{k}": v for k, v in {
        "DATABASE__SQL_ALCHEMY_CONN": env.url, "CORE__DAGS_FOLDER": str(env.dags),
        "LOGGING__BASE_LOG_FOLDER": str(env.logs)}.items()} | {"UPDRAFT_HOME": str(env.tmp / "home")}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(path), RUN_ID, str(env.tmp), json.dumps([[t, ids[t]] for t in order])],
        env=environ, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    added = json.loads(done.stdout.strip().splitlines()[-1])
    assert {t: env.ti(ids[t]).state.value for t in order} == dict.fromkeys(order, "success")
    assert {t: a["exit"] for t, a in added.items()} == dict.fromkeys(order, 0)
    assert {t: a["modules"] for t, a in added.items()} == {t: [] for t in order}
