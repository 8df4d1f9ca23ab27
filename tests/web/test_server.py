"""`updraft webserver` as a real process: gunicorn serves the app, answers health, stops cleanly on SIGTERM."""

from __future__ import annotations

import base64
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.backend import clean_environ

DEADLINE_S = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cli_env(home: Path) -> dict[str, str]:
    env = clean_environ()
    env["UPDRAFT_HOME"] = str(home)
    return env


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON body) of a GET; raises OSError while nothing listens."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read() or b"null")


def wait_until_serving(url: str, proc: subprocess.Popen[Any], deadline_s: float = DEADLINE_S) -> tuple[int, dict[str, str], Any]:
    """Poll ``url`` until it answers (fails early if the process exits)."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return fetch(url)
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"the webserver exited with {proc.returncode} before answering")
            if time.monotonic() > deadline:
                pytest.fail(f"nothing answered on {url} within {deadline_s} s")
            time.sleep(0.05)  # polling a socket that is not listening yet


def basic(username: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_webserver_is_gunicorn_with_workers_serves_the_api_and_stops_on_sigterm(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = cli_env(home)
    made = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "users", "create", "-u", "ann", "-r", "Viewer", "-p", "s3cret-pass"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert made.returncode == 0, made.stderr
    port = free_port()
    out_path, err_path = tmp_path / "out.txt", tmp_path / "err.txt"
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli", "webserver", "--port", str(port), "--workers", "2"],
            stdout=out, stderr=err, env=env, cwd=home,
        )
    try:
        status, headers, body = wait_until_serving(f"http://127.0.0.1:{port}/api/v1/health", proc)
        assert status == 200
        assert body["metadatabase"] == {"status": "healthy"}
        assert headers["Server"].startswith("gunicorn")
        assert headers["X-Frame-Options"] == "DENY"
        # The gunicorn master's two workers (the first may answer before the second is forked).
        deadline = time.monotonic() + DEADLINE_S
        while len(workers := children_of(proc.pid)) != 2:  # one reading per round: a worker may fork meanwhile
            assert len(workers) < 2, workers
            if time.monotonic() > deadline:
                pytest.fail(f"the master has {len(workers)} workers, expected 2")
            time.sleep(0.02)  # polling the process table for the condition

        status, _, body = fetch(f"http://127.0.0.1:{port}/api/v1/dags", basic("ann", "s3cret-pass"))
        assert status == 200, body
        status, headers, body = fetch(f"http://127.0.0.1:{port}/api/v1/dags", basic("ann", "wrong-password"))
        assert status == 401
        assert headers["Content-Type"] == "application/problem+json"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert f"serving on http://127.0.0.1:{port} (gunicorn, 2 workers" in out_path.read_text()
    with pytest.raises(OSError):
        fetch(f"http://127.0.0.1:{port}/api/v1/health")


def test_webserver_on_a_taken_port_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "scheduler.cli", "webserver", "--port", str(port)],
            capture_output=True, text=True, env=cli_env(home), timeout=60,
        )
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_webserver_with_a_bad_setting_exits_2_naming_it_whether_or_not_the_app_is_preloaded(
    tmp_path: Path, workers: str,
) -> None:
    # One worker builds the app itself (no preload): the error happens in the worker, and must still stop
    # the server with the message, instead of gunicorn booting the worker again and again.
    home = tmp_path / "home"
    home.mkdir()
    env = {**cli_env(home), "UPDRAFT__CORE__FERNET_KEY": "not-a-key"}
    result = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "webserver", "--port", str(free_port()), "--workers", workers],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "updraft: error: [core] fernet_key: the key is not a valid Fernet key" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("Booting worker") <= 1
