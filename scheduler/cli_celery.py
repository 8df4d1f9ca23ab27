"""``updraft celery worker``: a Celery worker that runs the tries the CeleryExecutor sends.

Each message is one workload, run by the same task runner as the LocalExecutor's (see
:mod:`scheduler.celery_app`). The worker needs the same settings as the schedulers: the
metadata database (``database.sql_alchemy_conn``), the broker (``celery.broker_url``),
the DAG folder at the same path, and a log folder the web server can read.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import socket
import sys
from typing import Any

from scheduler.exceptions import ConfigError

logger = logging.getLogger("updraft.celery")

_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")


def _concurrency(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--concurrency {raw!r}: expected a whole number of processes >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"--concurrency {raw!r}: expected a whole number of processes >= 1")
    return value


def parse_queues(raw: str) -> list[str]:
    """``a,b`` -> ["a", "b"]; ConfigError naming the bad name (letters, digits, ``_ . : -``)."""
    names = [name.strip() for name in raw.split(",")]
    if not any(names):
        raise ConfigError("--queues: expected one or more queue names separated by commas")
    for name in names:
        if not _QUEUE_NAME.match(name):
            raise ConfigError(
                f"--queues: {name!r} is not a queue name (1 to 200 letters, digits, '_', '.', ':' or '-')"
            )
    return list(dict.fromkeys(names))


def cmd_celery_worker(ctx: Any) -> int:
    """Run a Celery worker until SIGTERM (warm shutdown: running tries finish) or a second SIGTERM/SIGQUIT."""
    from scheduler.celery_app import DEFAULT_QUEUE, broker_url, make_app, queue_name
    from scheduler.db.engine import mask_url
    from scheduler.task_runner import warm_up

    settings = ctx.settings
    queues = parse_queues(ctx.args.queues or DEFAULT_QUEUE)
    concurrency = ctx.args.concurrency or int(settings.get("celery", "worker_concurrency"))
    url = broker_url(settings)
    if not ctx.args.verbose:
        logging.getLogger().setLevel(logging.INFO)
    ctx.ensure_database()  # a worker on an unmigrated database would fail every try
    ctx.engine.dispose()  # no connection crosses into the pool's processes
    if not settings.dags_folder.is_dir():
        logger.warning("the DAG folder %s does not exist on this machine", settings.dags_folder)
    app = make_app(settings)
    warm_up(settings)  # the pool's processes are forked from this one: they start with everything imported
    broker_queues = [queue_name(settings, q) for q in queues]
    print(
        f"updraft celery worker: pid {os.getpid()}, queues {', '.join(broker_queues)}, concurrency {concurrency}, "
        f"broker {mask_url(url)}, task logs in {settings.log_folder}",
        file=sys.stderr, flush=True,
    )
    worker = app.Worker(
        queues=broker_queues,
        concurrency=concurrency,
        pool="prefork",
        hostname=f"updraft-{os.getpid()}@{socket.gethostname()}",
        loglevel="DEBUG" if ctx.args.verbose else "INFO",
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
        optimization="fair",
        quiet=True,
    )
    worker.start()
    return int(getattr(worker, "exitcode", 0) or 0)


def add_commands(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Add ``celery worker`` to the ``updraft`` parser."""
    celery = sub.add_parser("celery", help="Celery workers (for core.executor = CeleryExecutor)").add_subparsers(
        dest="cmd", metavar="COMMAND", parser_class=parser_class)
    celery.required = True
    p = celery.add_parser("worker", help="run a Celery worker that runs task tries (until SIGTERM)")
    p.add_argument("-q", "--queues", help="comma-separated queues to take tries from (default: default)")
    p.add_argument("-c", "--concurrency", type=_concurrency,
                   help="tries run at once (default: [celery] worker_concurrency, 8)")
    p.set_defaults(func=cmd_celery_worker)
