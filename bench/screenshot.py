"""Take docs/screenshot.png: the DAG list of a fresh home with the example DAGs and a few finished runs.

    .venv/bin/python bench/screenshot.py [--out docs/screenshot.png] [--page /]

Runs `updraft webserver` and `updraft scheduler` on a temporary UPDRAFT_HOME holding a copy of
``dags/``, triggers a few runs, waits until they have finished, logs in with Debian's chromium
(driven by Playwright) and saves a 1280x800 screenshot. Run by hand when the UI changes; the
tests do not run it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
USER, PASSWORD = "ada", "screenshot-pass"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(what: str, check, deadline_s: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            if check():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)  # polling a server, not a fixed wait


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "docs" / "screenshot.png"))
    parser.add_argument("--page", default="/", help="the path to photograph (default: the DAG list)")
    args = parser.parse_args()
    from playwright.sync_api import expect, sync_playwright

    work = Path(tempfile.mkdtemp(prefix="updraft-screenshot-"))
    home = work / "home"
    shutil.copytree(REPO / "dags", home / "dags", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPDRAFT")}
    env.update(UPDRAFT_HOME=str(home), UPDRAFT__CORE__DAGS_FOLDER=str(home / "dags"))

    def cli(*argv: str) -> str:
        done = subprocess.run([sys.executable, "-m", "scheduler.cli", *argv], env=env, cwd=home,
                              capture_output=True, text=True, check=True, timeout=120)
        return done.stdout

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        cli("db", "migrate")
        cli("users", "create", "-u", USER, "-p", PASSWORD, "-r", "Admin", "-f", "Ada")
        cli("dags", "list")
        dag_ids = [line.split()[0] for line in cli("dags", "list", "-o", "plain").splitlines()[1:] if line.strip()]
        for dag_id in dag_ids:
            if dag_id != "branching":
                cli("dags", "unpause", dag_id)
        for n in range(3):
            for dag_id in dag_ids:
                if dag_id != "branching":
                    cli("dags", "trigger", dag_id, "--run-id", f"manual_{n + 1}")
        log = (work / "server.log").open("w")
        procs.append(subprocess.Popen([sys.executable, "-m", "scheduler.cli", "webserver", "--port", str(port)],
                                      env=env, cwd=home, stdout=log, stderr=subprocess.STDOUT))
        procs.append(subprocess.Popen([sys.executable, "-m", "scheduler.cli", "scheduler"],
                                      env=env, cwd=home, stdout=log, stderr=subprocess.STDOUT))
        wait_for("the webserver", lambda: urllib.request.urlopen(f"{url}/api/v1/health", timeout=2).status == 200)

        def all_finished() -> bool:
            listed = [cli("dags", "list-runs", d, "-o", "plain") for d in dag_ids]
            return not any("queued" in out or "running" in out for out in listed)

        wait_for("the runs to finish", all_finished, 180)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(base_url=url, viewport={"width": 1280, "height": 800})
            page.goto("/login")
            page.get_by_label("User name").fill(USER)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("button", name="Log out")).to_be_visible()
            page.goto(args.page)
            page.wait_for_load_state("networkidle")
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.out)
            browser.close()
        print(f"wrote {args.out} ({url}{args.page}, 1280x800)")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
