"""A small cluster of real processes for the distributed tests: schedulers and Celery workers on one PostgreSQL database.

Every process is a real ``updraft`` command with its own log file; the helpers wait on
conditions read from the database, with deadlines, and stop only the processes they
started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import Engine

from tests.backend import clean_environ

#: Redis database number the tests use as a broker (keys are also prefixed per test run).
REDIS_DB = 14
REDIS_URL = os.environ.get("UPDRAFT_TEST_REDIS_URL", f"redis://127.0.0.1:6379/{REDIS_DB}")
AMQP_URL = os.environ.get("UPDRAFT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
STOP_DEADLINE_S = 20.0
POLL_S = 0.05


def updraft() -> str:
    script = Path(sys.executable).with_name("updraft")
    return str(script) if script.exists() else sys.executable


def broker_problem(url: str) -> str | None:
    """None when the broker's port answers, else why not."""
    parts = urlsplit(url)
    default = 6379 if parts.scheme.startswith("redis") else 5672
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default), timeout=2):
            return None
    except OSError as exc:
        return f"{parts.scheme} broker at {parts.hostname}:{parts.port or default} is not reachable: {exc}"


class Cluster:
    """An UPDRAFT_HOME with a DAG folder, the environment of every process, and the processes started."""

    def __init__(self, tmp: Path, db_url: str, *, broker: str | None = None, **settings: str) -> None:
        self.tmp = tmp
        self.home = tmp / "home"
        self.dags = self.home / "dags"
        self.dags.mkdir(parents=True)
        self.markers = tmp / "markers.txt"
        self.db_url = db_url
        self.broker = broker
        self.prefix = f"updraft-test-{uuid.uuid4().hex[:10]}-"
        env = clean_environ()
        env.update(
            UPDRAFT_HOME=str(self.home),
            UPDRAFT__DATABASE__SQL_ALCHEMY_CONN=db_url,
            UPDRAFT__CORE__PARSING_PROCESSES="1",
            UPDRAFT__CORE__DAGS_ARE_PAUSED_AT_CREATION="false",
            UPDRAFT__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="1",
            UPDRAFT__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD="10",
            UPDRAFT__SCHEDULER__GRACEFUL_SHUTDOWN_TIMEOUT="5",
        )
        if broker is not None:
            env.update(
                UPDRAFT__CORE__EXECUTOR="CeleryExecutor",
                UPDRAFT__CELERY__BROKER_URL=broker,
                UPDRAFT__CELERY__QUEUE_PREFIX=self.prefix,
            )
        env.update({f"UPDRAFT__{k.upper()}": v for k, v in settings.items()})
        self.env = env
        self.procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def migrate(self) -> None:
        done = subprocess.run([updraft(), "db", "migrate"], env=self.env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{name}.log"
        with log.open("ab") as fh:
            proc = subprocess.Popen([updraft(), *args], env=self.env, stdout=fh, stderr=subprocess.STDOUT,
                                    cwd=self.home)
        self.procs.append((name, proc, log))
        return proc

    def scheduler(self, name: str) -> subprocess.Popen[bytes]:
        return self.start(name, "scheduler")

    def worker(self, name: str, concurrency: int = 2, queues: str | None = None) -> subprocess.Popen[bytes]:
        args = ["celery", "worker", "--concurrency", str(concurrency)]
        if queues:
            args += ["--queues", queues]
        return self.start(name, *args)

    def logs(self, lines: int = 30) -> str:
        out = []
        for name, _proc, log in self.procs:
            text = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {name} ---\n" + "\n".join(text))
        return "\n".join(out)

    def wait_for(self, what: str, check: Callable[[], bool], deadline_s: float, *, alive: bool = True) -> None:
        deadline = time.monotonic() + deadline_s
        while not check():
            if alive:
                for name, proc, _log in self.procs:
                    if proc.returncode is None and proc.poll() is not None:
                        pytest.fail(f"{name} exited ({proc.returncode}) while waiting for {what}\n{self.logs()}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {deadline_s} s waiting for {what}\n{self.logs()}")
            time.sleep(POLL_S)  # polling a condition, not waiting for a fixed time

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=STOP_DEADLINE_S)

    def stop_all(self) -> None:
        for _name, proc, _log in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _name, proc, _log in self.procs:
            try:
                proc.wait(timeout=STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def clean_broker(self) -> None:
        """Remove what this run left on the broker: only its own queues (and, on Redis, their keys)."""
        if self.broker is None:
            return
        if self.broker.startswith("redis"):
            import redis

            client = redis.Redis.from_url(self.broker)
            try:
                for key in client.scan_iter(match=f"*{self.prefix}*"):
                    client.delete(key)
                # Messages taken by a worker that died wait in the database-wide unacked hash.
                for tag, payload in client.hscan_iter("unacked"):
                    if self.prefix.encode() in payload:
                        client.hdel("unacked", tag)
                        client.zrem("unacked_index", tag)
            finally:
                client.close()
            return
        from kombu import Connection

        with Connection(self.broker, connect_timeout=5) as conn:
            channel = conn.channel()
            for queue in (f"{self.prefix}default", f"{self.prefix}fast", f"{self.prefix}slow"):
                try:
                    channel.queue_delete(queue)
                    channel.exchange_delete(queue)
                except Exception:  # noqa: BLE001 - a queue this run never declared
                    channel = conn.channel()


def marker_lines(cluster: Cluster) -> list[tuple[str, str, int]]:
    """(run_id, task_id, try_number) of every execution the tasks recorded."""
    if not cluster.markers.exists():
        return []
    rows = []
    for line in cluster.markers.read_text().splitlines():
        run_id, task_id, try_number = line.split(" ")
        rows.append((run_id, task_id, int(try_number)))
    return rows


def count(engine: Engine, sql: str, **params: object) -> int:
    from sqlalchemy import text

    with engine.connect() as conn:
        value = conn.execute(text(sql), params).scalar()
        conn.rollback()
    return int(value or 0)
