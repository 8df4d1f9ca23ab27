"""Browser tests: the real `updraft webserver` (gunicorn) on a temporary home, driven by Debian's chromium.

One webserver serves the whole session; `updraft scheduler` is started only by the tests that need
runs to execute (:func:`running_scheduler`), so a test can watch a page while a run changes state.
Chromium is Debian's (`apt-get install -y chromium`, done by .ci/run and the README's test command);
Playwright only drives it: nothing is downloaded at run time.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.backend import clean_environ, pass_database_env
from tests.web.test_server import basic, fetch, free_port

REPO = Path(__file__).resolve().parents[2]
#: Where the tests save screenshots of the main pages (gitignored; the README shows one of them).
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
CHROMIUM = "/usr/bin/chromium"
#: Without the background-networking flags Chromium's own outbound connections fail on a closed network.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
#: Playwright's default wait for expect()/locators in these tests (ms).
TIMEOUT_MS = 10_000
SERVER_DEADLINE_S = 30.0

OP = ("olive", "olive-pass-123", "Op")
VIEWER = ("victor", "victor-pass-123", "Viewer")

TUTORIAL_DAG = '''\
"""A tutorial DAG: three Bash tasks in a chain, with params."""
from datetime import datetime
from scheduler import DAG, BashOperator, Param

with DAG("tutorial", schedule=None, start_date=datetime(2024, 1, 1), tags=["example"],
         description="The tutorial: print the date, sleep a little, greet",
         params={"greeting": Param("hello", type="string", description="What to say")}) as dag:
    print_date = BashOperator(task_id="print_date", bash_command="date")
    pause = BashOperator(task_id="pause", bash_command="echo pausing")
    greet = BashOperator(task_id="greet", bash_command="echo 'tutorial says {{ params.greeting }}'")
    print_date >> pause >> greet
'''

#: Its description would run script if a page put it into the DOM as HTML.
XSS_DAG = '''\
from datetime import datetime
from scheduler import DAG, EmptyOperator

with DAG("xss_probe", schedule=None, start_date=datetime(2024, 1, 1),
         description="<img src=x onerror=alert('xss-description')><script>alert('xss-script')</script>",
         tags=["<b onmouseover=alert('xss-tag')>tag</b>"]) as dag:
    EmptyOperator(task_id="noop")
'''

#: Stays paused until the scenario test unpauses it from the DAG list; two quick Bash tasks and a Param.
SCENARIO_DAG = '''\
from datetime import datetime
from scheduler import DAG, BashOperator, Param

with DAG("scenario", schedule=None, start_date=datetime(2024, 1, 1), description="The browser scenario's DAG",
         params={"who": Param("nobody", type="string", description="Whom to greet")}) as dag:
    say = BashOperator(task_id="say", bash_command="echo 'scenario greets {{ params.who }}'")
    done = BashOperator(task_id="done", bash_command="echo 'scenario done'")
    say >> done
'''

BROKEN_DAG = "from scheduler import DAG\nraise RuntimeError('this DAG file is broken on purpose')\n"


@dataclass
class Server:
    """The running webserver: its URL, home and environment, and helpers to run CLI commands there."""

    url: str
    home: Path
    env: dict[str, str]
    tmp: Path

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "scheduler.cli", *args], capture_output=True, text=True,
            env=self.env, cwd=self.home, timeout=120, stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            pytest.fail(f"updraft {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    def api(self, path: str) -> Any:
        """GET /api/v1/<path> as the Op user; the JSON body (fails on a non-200)."""
        status, _, body = fetch(f"{self.url}/api/v1/{path}", basic(OP[0], OP[1]))
        assert status == 200, body
        return body

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        status, _, body = fetch(f"{self.url}/api/v1/dags/{dag_id}/dagRuns/{run_id}", basic(OP[0], OP[1]))
        return body["state"] if status == 200 else None


def chromium_or_skip() -> str:
    """Debian's chromium; skip only where it is missing and cannot be installed (no apt-get, or not root)."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip(f"{CHROMIUM} is missing and cannot be installed here (needs `apt-get install -y chromium` as root)")
    pytest.fail(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium` (.ci/run does)")


def wait_until(what: str, check: Callable[[], bool], deadline_s: float = SERVER_DEADLINE_S,
               proc: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        with contextlib.suppress(OSError):
            if check():
                return
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the process exited with {proc.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {deadline_s} s waiting for {what}")
        time.sleep(0.1)  # polling a process's socket or the API, not a fixed wait


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def server_database() -> Iterator[dict[str, str]]:
    """The webserver's database for the session: the home's SQLite file, or a PostgreSQL database (by the pass)."""
    with pass_database_env() as entries:
        yield entries


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, server_database: dict[str, str]) -> Iterator[Server]:
    """`updraft webserver` (gunicorn, 2 workers) on a migrated temporary home with a few DAGs and two users."""
    tmp = tmp_path_factory.mktemp("browser")
    home = tmp / "home"
    dags = home / "dags"
    dags.mkdir(parents=True)
    for name in ("params_form.py", "branching.py"):
        shutil.copy(REPO / "dags" / name, dags / name)
    (dags / "tutorial.py").write_text(TUTORIAL_DAG)
    (dags / "xss_probe.py").write_text(XSS_DAG)
    (dags / "scenario.py").write_text(SCENARIO_DAG)
    (dags / "broken.py").write_text(BROKEN_DAG)
    env = clean_environ(keep_database=False)
    env.update(server_database)
    env.update(UPDRAFT_HOME=str(home), UPDRAFT__CORE__DAGS_FOLDER=str(dags), UPDRAFT__CORE__PARSING_PROCESSES="1")
    port = free_port()
    srv = Server(url=f"http://127.0.0.1:{port}", home=home, env=env, tmp=tmp)
    srv.cli("db", "migrate")
    for username, password, role in (OP, VIEWER):
        srv.cli("users", "create", "-u", username, "-p", password, "-r", role, "-e", f"{username}@example.com",
                "-f", username.title(), "-l", "Tester")
    srv.cli("dags", "list")  # parse the folder into the database (the scheduler is not running yet)
    for dag_id in ("tutorial", "params_form", "xss_probe"):
        srv.cli("dags", "unpause", dag_id)  # branching stays paused (its schedule would add runs), and scenario
    with (tmp / "webserver.out").open("w") as out, (tmp / "webserver.err").open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli", "webserver", "--port", str(port), "--workers", "2"],
            stdout=out, stderr=err, env=env, cwd=home, stdin=subprocess.DEVNULL,
        )
    try:
        wait_until("the webserver's /api/v1/health", lambda: fetch(f"{srv.url}/api/v1/health")[0] == 200, proc=proc)
        yield srv
    finally:
        stop(proc)


@contextlib.contextmanager
def running_scheduler(server: Server, name: str = "scheduler") -> Iterator[subprocess.Popen[Any]]:
    """`updraft scheduler` on the server's home until the block ends (SIGTERM)."""
    with (server.tmp / f"{name}.out").open("a") as out, (server.tmp / f"{name}.err").open("a") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli", "scheduler"],
            stdout=out, stderr=err, env=server.env, cwd=server.home, stdin=subprocess.DEVNULL,
        )
    try:
        yield proc
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def finished_run(server: Server) -> tuple[str, str]:
    """(dag_id, run_id) of a tutorial run that the scheduler has run to success."""
    run_id = "browser_finished"
    server.cli("dags", "trigger", "tutorial", "--run-id", run_id, "--conf", '{"greeting": "hi from the browser tests"}')
    with running_scheduler(server, "scheduler-finished") as proc:
        wait_until("the tutorial run to succeed", lambda: server.run_state("tutorial", run_id) == "success",
                   deadline_s=60, proc=proc)
    return "tutorial", run_id


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    path = chromium_or_skip()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the Python package playwright is missing: pip install -e '.[test]'")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    """A fresh browser context (no cookies) at 1280x800; fails the test if any JavaScript dialog opens."""
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    dialogs: list[str] = []
    page_errors: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    page.dialogs = dialogs  # type: ignore[attr-defined]
    page.page_errors = page_errors  # type: ignore[attr-defined]
    try:
        yield page
        assert dialogs == [], f"JavaScript dialogs opened: {dialogs}"
        assert page_errors == [], f"uncaught JavaScript errors: {page_errors}"
    finally:
        context.close()


def log_in(page: Any, user: tuple[str, str, str], next_path: str = "/") -> None:
    """Log in through the form (starting at ``next_path``, which redirects to the login page)."""
    from playwright.sync_api import expect

    page.goto(next_path)
    expect(page).to_have_url(re.compile(r"/login"))
    page.get_by_label("User name").fill(user[0])
    page.get_by_label("Password").fill(user[1])
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()


def screenshot(page: Any, name: str) -> Path:
    """Save the whole page as ``tests/browser/screenshots/<name>.png`` and return the path."""
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture
def op_page(page: Any) -> Any:
    log_in(page, OP)
    return page


@pytest.fixture
def viewer_page(page: Any) -> Any:
    log_in(page, VIEWER)
    return page
