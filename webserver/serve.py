"""Serving the application with gunicorn (a production WSGI server, not Flask's development server).

``updraft webserver`` calls :func:`serve`; ``updraft standalone`` runs ``python -m webserver.serve``
as a child process. gunicorn's master process binds the address, forks ``workers`` sync workers
(sharing the app the master built when there are several; one worker builds its own) and stops
them cleanly on SIGTERM or SIGINT (exit code 0).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from webserver.common import PARENT_ENV, address_problem, load_secret_key, url_for_bind  # noqa: F401

if TYPE_CHECKING:
    from scheduler.config import Settings

#: Set in a child's environment by `updraft standalone`: the webserver stops when that process dies.
class WebServer(BaseApplication):  # type: ignore[misc]
    """gunicorn serving ``create_app(settings)``, configured from arguments rather than gunicorn's CLI."""

    def __init__(self, settings: Settings, host: str, port: int, workers: int) -> None:
        self.settings, self.host, self.port, self.workers = settings, host, port, workers
        super().__init__()

    def load_config(self) -> None:
        options: dict[str, Any] = {
            "bind": [f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"],
            "workers": self.workers,
            # Sync workers: requests are CPU-bound Python (the GIL), so threads in a worker (gthread)
            # only interleave them; measured in bench/README.md ("Page and API latency").
            "worker_class": "sync",
            # With several workers the app (Flask, SQLAlchemy, the models) is built once in the master
            # and shared copy-on-write by them (its engine has opened no connection yet, so none
            # crosses the fork). With one worker (standalone's default) sharing saves nothing: the
            # master stays a small process and the worker builds the app (~7 MiB less in all).
            "preload_app": self.workers > 1,
            "proc_name": "updraft-webserver",
            "timeout": 120,
            "graceful_timeout": 10,
            "errorlog": "-",
            "loglevel": "info",
            "control_socket_disable": True,  # gunicorn >= 23: no control socket under ~/.gunicorn
            "when_ready": self._when_ready,
            "post_fork": _worker_dies_with_master,
        }
        for key, value in options.items():
            if key in self.cfg.settings:
                self.cfg.set(key, value)

    def load(self) -> Any:
        from gunicorn.errors import AppImportError

        from scheduler.exceptions import ConfigError
        from webserver.app import create_app

        try:
            return create_app(self.settings)
        except ConfigError as exc:
            if self.cfg.preload_app:
                raise  # in the master, before gunicorn starts: main() reports it
            # In the worker: gunicorn prints this message (no traceback) and stops with
            # APP_LOAD_ERROR, which serve() turns into the usual configuration-error status.
            raise AppImportError(f"updraft: error: {exc}") from None

    def _when_ready(self, server: Any) -> None:
        print(
            f"updraft webserver: serving on {url_for_bind(self.host, self.port)} "
            f"(gunicorn, {self.workers} worker{'s' if self.workers != 1 else ''}, pid {os.getpid()})",
            flush=True,
        )


def serve(settings: Settings, host: str | None = None, port: int | None = None, workers: int | None = None) -> int:
    """Run gunicorn until SIGTERM or SIGINT; defaults from [webserver] web_server_host/web_server_port/workers."""
    host = host if host is not None else str(settings.get("webserver", "web_server_host"))
    port = port if port is not None else int(settings.get("webserver", "web_server_port"))
    workers = workers if workers is not None else int(settings.get("webserver", "workers"))
    load_secret_key(settings)  # made once here, before the workers fork, so they all share it
    master = os.getpid()
    try:
        WebServer(settings, host, port, workers).run()
    except SystemExit as exc:  # gunicorn's arbiter exits with its status when it halts
        if os.getpid() != master:
            raise  # a worker leaving (its exit status tells the master why)
        code = int(exc.code or 0) if isinstance(exc.code, int | type(None)) else 1
        return 2 if code == Arbiter.APP_LOAD_ERROR else code  # a bad setting, named on stderr by load()
    return 0


def _worker_dies_with_master(server: Any, worker: Any) -> None:
    """gunicorn's post_fork hook, in a new worker: SIGTERM it (a graceful stop) when its master dies (Linux).

    Without it, a worker whose master was SIGKILLed notices only after its idle wait (half of
    ``timeout``, 60 s) and keeps the listening socket meanwhile, so a restarted server cannot bind.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    # A master that died before the request took effect is seen by the worker's own parent check.


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when the process named in $UPDRAFT_WEBSERVER_PARENT_PID dies."""
    raw = os.environ.get(PARENT_ENV)
    if not raw or not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    if str(os.getppid()) != raw:  # the parent died before the request took effect
        sys.exit(0)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m webserver.serve [--host H] [--port P] [--workers N]`` (settings from the environment)."""
    from scheduler.config import load_settings
    from scheduler.exceptions import ConfigError

    parser = argparse.ArgumentParser(prog="python -m webserver.serve", description="serve the updraft web UI and API")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--workers", type=int)
    args = parser.parse_args(argv)
    _die_with_parent()
    try:
        return serve(load_settings(), args.host, args.port, args.workers)
    except ConfigError as exc:
        print(f"updraft webserver: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
