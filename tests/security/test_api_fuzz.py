"""Fuzzing /api/v1 with schemathesis, from our own OpenAPI document, against a real `updraft webserver` (gunicorn).

Every operation gets a bounded number of generated requests, valid and invalid ones (wrong types,
missing fields, odd strings and numbers in paths, queries and bodies), sent with an Admin's basic
auth. The server must never answer 5xx, and every error must be an RFC 7807 problem
(``application/problem+json`` with type, title, status and detail).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.backend import pass_database_env
from tests.web.test_server import basic, cli_env, free_port, wait_until_serving

schemathesis = pytest.importorskip("schemathesis")

REPO = Path(__file__).resolve().parents[2]
#: Generated requests per operation (valid and invalid mixed); about 40 operations.
EXAMPLES_PER_OPERATION = 12
PASSWORD = "fuzz-password-1"


@pytest.fixture(scope="module")
def server_database() -> Iterator[dict[str, str]]:
    """The module's database: the home's SQLite file, or a PostgreSQL database (by the pass)."""
    with pass_database_env() as entries:
        yield entries


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, server_database: dict[str, str]) -> Iterator[str]:
    home = tmp_path_factory.mktemp("fuzz") / "home"
    shutil.copytree(REPO / "dags", home / "dags", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**cli_env(home), **server_database}
    for args in (["dags", "list"], ["users", "create", "-u", "admin", "-r", "Admin", "-p", PASSWORD]):
        done = subprocess.run([sys.executable, "-m", "scheduler.cli", *args], env=env, cwd=home,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    port = free_port()
    log = (home / "webserver.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "scheduler.cli", "webserver", "-p", str(port), "-w", "2"],
                            env=env, cwd=home, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/api/v1/health", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def check_response(case: Any, response: Any, seen: list[str]) -> None:
    where = f"{case.method} {case.formatted_path}"
    seen.append(where)
    assert response.status_code < 500, f"{where}: {response.status_code}\n{response.text[:2000]}"
    if response.status_code >= 400:
        # schemathesis' response: header names lowercased, each with a list of values
        values = {k.lower(): v for k, v in response.headers.items()}.get("content-type") or [""]
        kind = (values[0] if isinstance(values, list) else values).split(";")[0].strip()
        assert kind == "application/problem+json", (
            f"{where}: {response.status_code} answered as {kind!r}: {response.request.headers} {response.text[:300]!r}")
        body = json.loads(response.text)
        assert {"type", "title", "status", "detail"} <= set(body), f"{where}: {body}"
        assert body["status"] == response.status_code


def test_no_operation_answers_5xx_and_every_error_is_a_problem(server: str) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{server}/api/v1/openapi.json")
    headers = {**basic("admin", PASSWORD), "Accept": "application/json"}
    base_url = f"{server}/api/v1"
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30
    seen: list[str] = []
    for operation in operations:
        strategy = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                             operation.as_strategy(GenerationMode.NEGATIVE))

        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def fuzz(case: Any) -> None:
            response = case.call(base_url=base_url, headers=headers, timeout=30)
            check_response(case, response, seen)

        fuzz()
    assert len(seen) >= 5 * len(operations)
