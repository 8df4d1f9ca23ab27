"""Benchmark: page and API latency of a live `updraft webserver` under 20 concurrent clients.

    .venv/bin/python bench/api_bench.py [--clients 20] [--seconds 20] [--dags 1000] [--keep] [--think-ms 0]

Builds a temporary UPDRAFT_HOME (SQLite) holding ``--dags`` small DAG files (one EmptyOperator
each) and one DAG ``big`` of 50 tasks (five chains of ten), parses them once with
``updraft dags list``, then inserts directly into the database 100 runs of ``big`` (success,
failed and running) with their 5,000 task instances (states mixed: success, failed,
upstream_failed, skipped, running, queued, none), and an Op user (``updraft users create``).
It starts ``updraft webserver --port <free port>`` with the default worker count of the
settings (``[webserver] workers``, 2 gunicorn sync workers) and waits for ``/api/v1/health``.

Then ``--clients`` threads, each with its own ``http.client`` connection (re-opened when the
server closes it) and its own UI session (``GET /login`` for the CSRF token, ``POST /login``),
request for ``--seconds`` the endpoints below in turn (each thread starting at a different
one), API requests with basic auth, pages with the session cookie:

    GET /api/v1/dags?limit=100
    GET /api/v1/dags/<one of the 1,000 small DAGs>
    GET /api/v1/dags/big/dagRuns?limit=100
    GET /api/v1/dags/big/dagRuns/<one of the 100 runs>/taskInstances
    GET /                           (the DAG list, page 1)
    GET /?page=10
    GET /dags/big?num_runs=100      (the grid: 100 runs x 50 tasks; the default is 25 runs)
    GET /dags/big/graph

With ``--think-ms M`` each client waits a random think time (exponential, mean M ms) before each
request, a model of people clicking rather than of a saturating load; the default (0) is the
closed loop. Every answer must be 200 (anything else counts as an error). Latency is from sending the
request until the whole body is read. Reports p50/p99 per endpoint and overall, and requests
per second, and the machine's load average (1 min) when the clock starts and stops (other work on
the machine moves these figures more than anything else). Target: p99 <= 300 ms for every endpoint;
exits 1 when it is missed (or on errors).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from parse_bench import machine  # noqa: E402  (bench/ is sys.path[1] now, still importable)

TARGET_P99_MS = 300.0
DEADLINE_S = 60.0
USER, PASSWORD = "bench-op", "bench-op-password"
N_RUNS, N_TASKS, CHAINS = 100, 50, 5

SMALL_DAG = '''from datetime import datetime

from scheduler import DAG, EmptyOperator

with DAG("{dag_id}", schedule="@daily", start_date=datetime(2024, 1, 1), catchup=False, tags=["bench", "{tag}"]):
    EmptyOperator(task_id="only")
'''

BIG_DAG = '''from datetime import datetime

from scheduler import DAG, EmptyOperator

with DAG("big", schedule="@daily", start_date=datetime(2024, 1, 1), catchup=False, tags=["bench"]):
    for chain in range({chains}):
        previous = None
        for step in range({per_chain}):
            current = EmptyOperator(task_id=f"c{{chain}}_t{{step:02d}}")
            if previous is not None:
                previous >> current
            previous = current
'''


def updraft_command() -> list[str]:
    script = Path(sys.executable).with_name("updraft")
    return [str(script)] if script.exists() else [sys.executable, "-m", "scheduler.cli"]


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cli_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPDRAFT")}
    env.update(UPDRAFT_HOME=str(home), UPDRAFT__CORE__DAGS_FOLDER=str(home / "dags"),
               UPDRAFT__CORE__LOAD_EXAMPLES="false")
    return env


def run_cli(home: Path, *args: str) -> str:
    done = subprocess.run([*updraft_command(), *args], capture_output=True, text=True, env=cli_env(home),
                          cwd=home, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"updraft {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done.stdout


def build_home(home: Path, n_dags: int) -> tuple[list[str], list[str]]:
    """The DAG files, parsed; 100 runs x 50 TIs of ``big``; the Op user. Returns (small dag ids, run ids)."""
    dags = home / "dags"
    dags.mkdir(parents=True)
    small = [f"bench_{i:04d}" for i in range(n_dags)]
    for i, dag_id in enumerate(small):
        (dags / f"{dag_id}.py").write_text(SMALL_DAG.format(dag_id=dag_id, tag=f"group{i % 10}"))
    (dags / "big.py").write_text(BIG_DAG.format(chains=CHAINS, per_chain=N_TASKS // CHAINS))
    started = time.perf_counter()
    listed = run_cli(home, "dags", "list", "-o", "plain")
    print(f"parsed {n_dags + 1} DAG files with `updraft dags list` in {time.perf_counter() - started:.1f} s")
    if "big" not in listed or small[-1] not in listed:
        raise SystemExit("`updraft dags list` did not list the bench DAGs")
    run_cli(home, "users", "create", "-u", USER, "-r", "Op", "-p", PASSWORD)
    return small, insert_runs(home)


def insert_runs(home: Path) -> list[str]:
    from scheduler.config import load_settings
    from scheduler.db import store
    from scheduler.db.engine import make_engine, session_scope
    from scheduler.db.models import TaskInstance
    from scheduler.states import DagRunState, DagRunType
    from scheduler.timetables.base import DataInterval

    settings = load_settings(environ=cli_env(home), cwd=home)
    engine = make_engine(settings.sql_alchemy_conn)
    rng = random.Random(42)
    task_ids = [f"c{c}_t{s:02d}" for c in range(CHAINS) for s in range(N_TASKS // CHAINS)]
    first = datetime(2024, 1, 1, tzinfo=UTC)
    run_ids = []
    try:
        with session_scope(engine) as session:
            for i in range(N_RUNS):
                when = first + timedelta(days=i)
                run_id = f"scheduled__{when.isoformat()}"
                run_ids.append(run_id)
                latest = i >= N_RUNS - 3
                state = DagRunState.RUNNING if latest else (DagRunState.FAILED if i % 7 == 3 else DagRunState.SUCCESS)
                run = store.create_dag_run(
                    session, dag_id="big", run_id=run_id, run_type=DagRunType.SCHEDULED, logical_date=when,
                    data_interval=DataInterval(when, when + timedelta(days=1)), conf={}, state=state,
                    run_after=when + timedelta(days=1), now=when + timedelta(days=1), external_trigger=False,
                )
                run.start_date = when + timedelta(days=1)
                if not latest:
                    run.end_date = run.start_date + timedelta(minutes=5)
                for task_id in task_ids:
                    if latest:
                        ti_state = rng.choice(["success", "running", "queued", None])
                    elif state == DagRunState.FAILED:
                        ti_state = rng.choice(["success", "success", "failed", "upstream_failed", "skipped"])
                    else:
                        ti_state = rng.choice(["success"] * 8 + ["skipped"])
                    began = run.start_date + timedelta(seconds=rng.randint(0, 200))
                    finished = ti_state in ("success", "failed", "skipped")
                    session.add(TaskInstance(
                        dag_id="big", run_id=run_id, task_id=task_id, state=ti_state,
                        try_number=1 if ti_state not in (None, "queued", "upstream_failed", "skipped") else 0,
                        max_tries=0, operator="EmptyOperator",
                        start_date=began if ti_state in ("success", "failed", "running") else None,
                        end_date=began + timedelta(seconds=3) if finished and ti_state != "skipped" else None,
                        duration=3.0 if finished and ti_state != "skipped" else None,
                    ))
    finally:
        engine.dispose()
    return run_ids


@dataclass
class Endpoint:
    name: str
    kind: str  # "api" or "page"
    paths: list[str]
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def endpoints(small: list[str], runs: list[str]) -> list[Endpoint]:
    quote = urllib.parse.quote
    return [
        Endpoint("GET /api/v1/dags?limit=100", "api", ["/api/v1/dags?limit=100"]),
        Endpoint("GET /api/v1/dags/<id>", "api", [f"/api/v1/dags/{d}" for d in small]),
        Endpoint("GET /api/v1/dags/big/dagRuns?limit=100", "api", ["/api/v1/dags/big/dagRuns?limit=100"]),
        Endpoint("GET /api/v1/dags/big/dagRuns/<run>/taskInstances", "api",
                 [f"/api/v1/dags/big/dagRuns/{quote(r, safe='')}/taskInstances" for r in runs]),
        Endpoint("GET / (DAG list, page 1)", "page", ["/"]),
        Endpoint("GET /?page=10", "page", ["/?page=10"]),
        Endpoint("GET /dags/big?num_runs=100 (grid)", "page", ["/dags/big?num_runs=100"]),
        Endpoint("GET /dags/big/graph", "page", ["/dags/big/graph"]),
    ]


class Client:
    """One keep-alive connection (re-opened by http.client when the server closes it) and one UI session."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, headers: dict[str, str], body: str | None = None) -> tuple[int, bytes]:
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()  # a kept-alive connection the server had closed: retry once on a new one
                if attempt == 2:
                    raise
        for header, value in response.getheaders():
            if header.lower() == "set-cookie":
                name, _, rest = value.partition("=")
                self.cookies[name.strip()] = rest.split(";", 1)[0]
        return response.status, data

    def cookie_header(self) -> dict[str, str]:
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}

    def log_in(self) -> None:
        status, page = self.request("GET", "/login", {})
        found = re.search(rb'name="csrf_token" value="([^"]+)"', page)
        if status != 200 or not found:
            raise SystemExit(f"GET /login answered {status} without a CSRF token")
        form = urllib.parse.urlencode({"csrf_token": found.group(1).decode(), "next": "/",
                                       "username": USER, "password": PASSWORD})
        status, _ = self.request("POST", "/login", {"Content-Type": "application/x-www-form-urlencoded",
                                                    **self.cookie_header()}, form)
        if status not in (302, 303):
            raise SystemExit(f"POST /login answered {status}")

    def get(self, endpoint: Endpoint, path: str) -> tuple[int, float]:
        headers = {"Authorization": self.basic, "Accept": "application/json"} if endpoint.kind == "api" \
            else self.cookie_header()
        started = time.perf_counter()
        status, _ = self.request("GET", path, headers)
        return status, time.perf_counter() - started


def worker(index: int, port: int, targets: list[Endpoint], stop_at: list[float], ready: threading.Barrier,
           failures: list[str], think_s: float = 0.0) -> None:
    client = Client(port)
    try:
        client.log_in()
        for endpoint in targets:  # warm-up, not measured
            client.get(endpoint, endpoint.paths[0])
    except Exception as exc:  # noqa: BLE001 - reported, the run fails
        failures.append(f"client {index}: {exc!r}")
    ready.wait()
    rng = random.Random(index)
    turn = index
    while time.perf_counter() < stop_at[0]:
        if think_s > 0:  # the load model's think time between a user's requests (not a synchronisation)
            time.sleep(min(rng.expovariate(1 / think_s), max(stop_at[0] - time.perf_counter(), 0)))
            if time.perf_counter() >= stop_at[0]:
                break
        endpoint = targets[turn % len(targets)]
        turn += 1
        try:
            status, seconds = client.get(endpoint, rng.choice(endpoint.paths))
        except OSError as exc:
            with endpoint.lock:
                endpoint.errors += 1
            failures.append(f"client {index} {endpoint.name}: {exc!r}")
            continue
        with endpoint.lock:
            if status == 200:
                endpoint.latencies.append(seconds)
            else:
                endpoint.errors += 1
                if endpoint.errors <= 3:
                    failures.append(f"{endpoint.name}: HTTP {status}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))  # nearest rank
    return ordered[rank]


def wait_for_health(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/api/v1/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"the webserver exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"the webserver did not answer within {DEADLINE_S} s")
        time.sleep(0.05)  # polling a socket that is not listening yet


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--dags", type=int, default=1000)
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    parser.add_argument("--think-ms", type=float, default=0.0,
                        help="mean think time between a client's requests (exponential); 0, the default, is the "
                             "closed loop: each client sends its next request as soon as the last is answered")
    args = parser.parse_args()

    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {machine()}; nproc {os.cpu_count()}; "
          f"Python {platform.python_version()}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    work = Path(tempfile.mkdtemp(prefix="updraft-api-bench-"))
    home = work / "home"
    proc = None
    try:
        started = time.perf_counter()
        small, runs = build_home(home, args.dags)
        print(f"home built in {time.perf_counter() - started:.1f} s: {len(small) + 1} DAGs, {len(runs)} runs of big, "
              f"{len(runs) * N_TASKS} task instances, Op user {USER!r}")
        port = free_port()
        log = (work / "webserver.log").open("w")
        proc = subprocess.Popen([*updraft_command(), "webserver", "--port", str(port)], env=cli_env(home), cwd=home,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for_health(port, proc)
        targets = endpoints(small, runs)
        stop_at = [float("inf")]
        ready = threading.Barrier(args.clients + 1)
        failures: list[str] = []
        threads = [threading.Thread(target=worker, args=(i, port, targets, stop_at, ready, failures,
                                                         args.think_ms / 1000), daemon=True)
                   for i in range(args.clients)]
        for thread in threads:
            thread.start()
        ready.wait()  # every client has logged in and warmed up: the clock starts
        load_before = os.getloadavg()[0]
        began = time.perf_counter()
        stop_at[0] = began + args.seconds
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
        load_after = os.getloadavg()[0]
        log.flush()
        served = (work / "webserver.log").read_text()
        workers_line = next((line for line in served.splitlines() if "serving on" in line), "?")
        print(f"webserver: {workers_line.strip()}")
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    total = sum(len(e.latencies) for e in targets)
    errors = sum(e.errors for e in targets)
    everything = [s for e in targets for s in e.latencies]
    model = f"think time {args.think_ms:g} ms (exponential mean)" if args.think_ms > 0 else "closed loop, no think time"
    print(f"\n{args.clients} clients ({model}), {elapsed:.1f} s: {total} requests OK, {errors} errors, "
          f"{total / elapsed:.1f} requests/s\n")
    print(f"load average (1 min, the whole machine: these clients and the server count too): "
          f"{load_before:.2f} when the clock started, {load_after:.2f} when it stopped\n")
    print(f"| endpoint | requests | p50 ms | p99 ms | max ms | p99 <= {TARGET_P99_MS:.0f} ms |")
    print("|---|---|---|---|---|---|")
    missed = []
    for e in targets:
        p50, p99 = percentile(e.latencies, 50) * 1000, percentile(e.latencies, 99) * 1000
        ok = p99 <= TARGET_P99_MS
        if not ok:
            missed.append(e.name)
        print(f"| `{e.name}` | {len(e.latencies)} | {p50:.0f} | {p99:.0f} | {max(e.latencies, default=0) * 1000:.0f} "
              f"| {'met' if ok else '**missed**'} |")
    print(f"| all | {total} | {percentile(everything, 50) * 1000:.0f} | {percentile(everything, 99) * 1000:.0f} | "
          f"{max(everything, default=0) * 1000:.0f} | |")
    slowest = max(targets, key=lambda e: percentile(e.latencies, 99) if e.latencies else float("inf"))
    print(f"\nslowest endpoint by p99: {slowest.name} ({percentile(slowest.latencies, 99) * 1000:.0f} ms)")
    for failure in failures[:10]:
        print(f"error: {failure}")
    if errors or failures:
        print("FAILED: some requests did not answer 200")
        return 1
    if missed:
        print(f"target p99 <= {TARGET_P99_MS:.0f} ms MISSED by: {', '.join(missed)}")
        return 1
    print(f"target p99 <= {TARGET_P99_MS:.0f} ms met by every endpoint")
    return 0


if __name__ == "__main__":
    sys.exit(main())
