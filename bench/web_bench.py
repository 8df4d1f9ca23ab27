"""Benchmark: how soon `updraft standalone` answers HTTP, and how much memory it uses at rest.

    .venv/bin/python bench/web_bench.py [--repeat 5] [--rest-seconds 10]

Each launch runs `updraft standalone` (migrate, first admin user, the gunicorn webserver
as a child process, the scheduler with its parse workers and the LocalExecutor's fork
server) on a new temporary UPDRAFT_HOME (SQLite) holding a copy of the repository's
example DAGs (``dags/``), on a free port (``UPDRAFT__WEBSERVER__WEB_SERVER_PORT``), and
measures:

1. **launch -> HTTP 200**: from starting the process until ``GET /api/v1/health`` first
   answers 200 (polled every 10 ms);
2. **memory at rest**: ``--rest-seconds`` after that first 200, the sum of ``Pss`` from
   ``/proc/<pid>/smaps_rollup`` over the standalone process and every process below it
   (found by walking /proc), with their count and their summed RSS (which counts shared
   pages once per process, so it overstates);

then stops it with SIGINT (Ctrl-C) and checks it exits 0. The same is done ``--repeat``
times on a fresh home ("first start": migrates and creates the admin) and ``--repeat``
times again on the home of the first launch ("restart": already migrated). Medians are
reported. Targets (first start and restart alike): HTTP within 2 s, PSS under 150 MiB.
Exits 1 if a median misses a target.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from parse_bench import machine  # bench/ is sys.path[0] when this file is run as a script

REPO = Path(__file__).resolve().parents[1]
HTTP_TARGET_S = 2.0
PSS_TARGET_MIB = 150.0
POLL_S = 0.01
DEADLINE_S = 60.0


@dataclass
class Launch:
    http_s: float
    pss_mib: float
    rss_mib: float
    processes: int
    names: list[str]


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def tree(root: int) -> list[int]:
    """``root`` and every live process below it (by walking /proc's parent pids)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def memory(pids: list[int]) -> tuple[float, float, list[str]]:
    """(PSS MiB, RSS MiB, command names) summed over ``pids`` (processes gone meanwhile are skipped)."""
    pss = rss = 0
    names = []
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        own_pss = 0
        for line in rollup.splitlines():
            key, _, rest = line.partition(":")
            if key == "Pss":
                own_pss = int(rest.split()[0])
                pss += own_pss
            elif key == "Rss":
                rss += int(rest.split()[0])
        names.append(f"{own_pss / 1024:6.1f} MiB PSS  pid {pid:<7} {cmdline[:80]}")
    return pss / 1024, rss / 1024, names


def health_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.HTTPError):
        return False


def updraft_command() -> list[str]:
    script = Path(sys.executable).with_name("updraft")
    return [str(script)] if script.exists() else [sys.executable, "-m", "scheduler.cli"]


def launch(home: Path, rest_s: float) -> Launch:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPDRAFT")}
    env.update(UPDRAFT_HOME=str(home), UPDRAFT__CORE__DAGS_FOLDER=str(home / "dags"),
               UPDRAFT__WEBSERVER__WEB_SERVER_PORT=str(port))
    url = f"http://127.0.0.1:{port}/api/v1/health"
    log = (home / "standalone.log").open("a")
    started = time.perf_counter()
    proc = subprocess.Popen([*updraft_command(), "standalone"], env=env, cwd=home,
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        while not health_ok(url):
            if proc.poll() is not None:
                raise SystemExit(f"standalone exited with {proc.returncode}; see {home / 'standalone.log'}")
            if time.perf_counter() - started > DEADLINE_S:
                raise SystemExit(f"no answer on {url} within {DEADLINE_S} s")
            time.sleep(POLL_S)
        http_s = time.perf_counter() - started
        time.sleep(rest_s)  # the "at rest" window being measured, not a synchronisation
        pids = tree(proc.pid)
        pss, rss, names = memory(pids)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
        if code != 0:
            raise SystemExit(f"standalone exited {code} after Ctrl-C; see {home / 'standalone.log'}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    return Launch(http_s, pss, rss, len(names), names)


def summarise(label: str, launches: list[Launch]) -> tuple[float, float]:
    http = statistics.median(x.http_s for x in launches)
    pss = statistics.median(x.pss_mib for x in launches)
    rss = statistics.median(x.rss_mib for x in launches)
    procs = statistics.median(x.processes for x in launches)
    print(f"{label}: launch -> HTTP 200 median {http:.2f} s (min {min(x.http_s for x in launches):.2f}, "
          f"max {max(x.http_s for x in launches):.2f}); PSS at rest median {pss:.1f} MiB "
          f"(min {min(x.pss_mib for x in launches):.1f}, max {max(x.pss_mib for x in launches):.1f}); "
          f"RSS sum {rss:.1f} MiB; {procs:g} processes")
    return http, pss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="launches of each kind (default 5)")
    parser.add_argument("--rest-seconds", type=float, default=10.0, help="wait after the first 200 (default 10)")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"command: {' '.join(updraft_command())} standalone (a copy of {REPO / 'dags'})")
    work = Path(tempfile.mkdtemp(prefix="updraft-web-bench-"))
    missed = []
    try:
        first: list[Launch] = []
        for i in range(args.repeat):
            home = work / f"home{i}"
            shutil.copytree(REPO / "dags", home / "dags", ignore=shutil.ignore_patterns("__pycache__"))
            first.append(launch(home, args.rest_seconds))
            print(f"  first start {i + 1}: {first[-1].http_s:.2f} s, {first[-1].pss_mib:.1f} MiB PSS "
                  f"in {first[-1].processes} processes", flush=True)
        restart: list[Launch] = []
        for i in range(args.repeat):
            restart.append(launch(work / "home0", args.rest_seconds))
            print(f"  restart {i + 1}: {restart[-1].http_s:.2f} s, {restart[-1].pss_mib:.1f} MiB PSS "
                  f"in {restart[-1].processes} processes", flush=True)
        for label, last in (("first start", first[-1]), ("restart", restart[-1])):
            print(f"processes of the last {label}:")
            for name in last.names:
                print(f"  {name}")
        for label, launches in (("first start (fresh home)", first), ("restart (migrated home)", restart)):
            http, pss = summarise(label, launches)
            if http > HTTP_TARGET_S:
                missed.append(f"{label}: HTTP after {http:.2f} s > {HTTP_TARGET_S} s")
            if pss > PSS_TARGET_MIB:
                missed.append(f"{label}: {pss:.1f} MiB PSS > {PSS_TARGET_MIB} MiB")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for line in missed:
        print(f"target missed: {line}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
