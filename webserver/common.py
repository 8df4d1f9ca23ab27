"""What the scheduler process needs to start the web server beside it, without importing Flask or gunicorn.

(``updraft standalone`` runs in the scheduler's process; keeping Flask, Werkzeug and
gunicorn out of it saves about 10 MiB there.)
"""

from __future__ import annotations

import secrets
import socket
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scheduler.config import Settings

SECRET_KEY_FILE = "webserver_secret_key"


PARENT_ENV = "UPDRAFT_WEBSERVER_PARENT_PID"


def url_for_bind(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def address_problem(host: str, port: int) -> str | None:
    """Why gunicorn could not listen on host:port (taken, not a local address), or None when it could."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot resolve {host!r}: {exc.strerror}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn does
        try:
            probe.bind(address)
        except OSError as exc:
            return f"cannot listen on {host}:{port}: {exc.strerror}"
    return None


def load_secret_key(settings: Settings) -> str:
    """``[webserver] secret_key`` when set; else the key in $UPDRAFT_HOME/webserver_secret_key, made on first use.

    The file is written once (mode 0600, 32 random bytes as hex) and linked into place atomically,
    so processes starting together all end up with the same key.
    """
    from scheduler.config import generated_secret
    from scheduler.exceptions import ConfigError

    configured = str(settings.get("webserver", "secret_key") or "")
    if configured.strip():
        return configured
    path = Path(settings.home) / SECRET_KEY_FILE
    key = generated_secret(path, lambda: secrets.token_hex(32), "webserver secret key")
    if len(key) < 32:
        raise ConfigError(f"{path}: the webserver secret key is too short; delete the file to make a new one")
    return key
