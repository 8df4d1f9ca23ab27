"""Connections: how tasks reach outside systems (Airflow's ``Connection``), stored with password and extra encrypted.

* :class:`Connection`: conn_id, conn_type, description, host, schema, login, password, port,
  extra (JSON object text), ``extra_dejson``, :meth:`Connection.get_uri` and
  :meth:`Connection.from_uri` (Airflow's URI form
  ``conn-type://login:password@host:port/schema?key=value``; an extra that is not all
  strings travels as ``?__extra__=<JSON>``).
* Store functions (session first, never commit) used by the CLI, the REST API and the UI.
* :func:`get_connection` for task code (``from scheduler import get_connection``) and the
  ``{{ conn.ID.host }}`` template accessor: it reads the row, decrypts it and masks the
  password and sensitive extras in the try's log from then on.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from scheduler.db.models import Connection as ConnectionRow
from scheduler.exceptions import UpdraftError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from scheduler.config import Settings

MAX_ID_LENGTH = 250
MAX_FIELD_LENGTH = 500
#: Fields a connection has besides conn_id (the API's and the CLI's names).
FIELDS = ("conn_type", "description", "host", "schema", "login", "password", "port", "extra")


class ConnectionError_(UpdraftError, ValueError):
    """A connection cannot be built or stored as asked (the message says why)."""


class ConnectionNotFound(UpdraftError, LookupError):
    def __init__(self, conn_id: str) -> None:
        super().__init__(f"The conn_id `{conn_id}` isn't defined")
        self.conn_id = conn_id


@dataclass
class Connection:
    """One connection, in clear (as task code sees it)."""

    conn_id: str
    conn_type: str
    description: str | None = None
    host: str | None = None
    schema: str | None = None
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    port: int | None = None
    #: A JSON object as text, or None.
    extra: str | None = field(default=None, repr=False)

    @property
    def extra_dejson(self) -> dict[str, Any]:
        """``extra`` parsed (an empty dict when there is none)."""
        if not self.extra:
            return {}
        value = json.loads(self.extra)
        return value if isinstance(value, dict) else {}

    def get_uri(self) -> str:
        """Airflow's URI form of this connection."""
        uri = f"{self.conn_type.replace('_', '-')}://"
        if self.login is not None or self.password is not None:
            uri += quote(self.login or "", safe="")
            if self.password is not None:
                uri += ":" + quote(self.password, safe="")
            uri += "@"
        if self.host:
            uri += quote(self.host, safe="")
        if self.port is not None:
            uri += f":{self.port}"
        if self.schema:
            uri += "/" + quote(self.schema, safe="")
        extra = self.extra_dejson
        if extra:
            if all(isinstance(v, str) for v in extra.values()):
                uri += ("" if self.schema else "/") + "?" + urlencode(extra)
            else:
                uri += ("" if self.schema else "/") + "?" + urlencode({"__extra__": json.dumps(extra)})
        return uri

    @classmethod
    def from_uri(cls, conn_id: str, uri: str) -> Connection:
        """Parse Airflow's URI form; ConnectionError_ saying what is wrong."""
        if not isinstance(uri, str) or "://" not in uri:
            raise ConnectionError_(f"connection URI {_show(uri)} is not of the form conn-type://[login[:password]@]host[:port][/schema][?extra]")
        try:
            parts = urlsplit(uri)
            port = parts.port
        except ValueError as exc:
            raise ConnectionError_(f"connection URI {_show(uri)}: {exc}") from None
        if not parts.scheme:
            raise ConnectionError_(f"connection URI {_show(uri)} has no connection type before '://'")
        extra: dict[str, Any] | None = None
        if parts.query:
            pairs = parse_qsl(parts.query, keep_blank_values=True)
            if len(pairs) == 1 and pairs[0][0] == "__extra__":
                try:
                    parsed = json.loads(pairs[0][1])
                except ValueError as exc:
                    raise ConnectionError_(f"connection URI: __extra__ is not valid JSON: {exc}") from None
                if not isinstance(parsed, dict):
                    raise ConnectionError_("connection URI: __extra__ must be a JSON object")
                extra = parsed
            else:
                extra = dict(pairs)
        schema = unquote(parts.path[1:]) if parts.path.startswith("/") else unquote(parts.path)
        conn = cls(
            conn_id=conn_id,
            conn_type=parts.scheme.replace("-", "_"),
            host=unquote(parts.hostname) if parts.hostname else None,
            login=unquote(parts.username) if parts.username is not None else None,
            password=unquote(parts.password) if parts.password is not None else None,
            port=port,
            schema=schema or None,
            extra=json.dumps(extra) if extra else None,
        )
        return validate(conn)

    def masked_record(self) -> dict[str, Any]:
        """The API's Connection object: no password, sensitive extras shown as ``***``."""
        from scheduler.secrets_masker import redact_value

        extra: str | None = self.extra
        if self.extra:
            try:
                extra = json.dumps(redact_value(json.loads(self.extra)))
            except ValueError:
                extra = "***"
        return {
            "connection_id": self.conn_id, "conn_type": self.conn_type, "description": self.description,
            "host": self.host, "login": self.login, "schema": self.schema, "port": self.port, "extra": extra,
        }


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "...'"


def validate(conn: Connection) -> Connection:
    """``conn`` if every field fits; ConnectionError_ naming the field and the reason otherwise."""
    if not isinstance(conn.conn_id, str) or not conn.conn_id.strip():
        raise ConnectionError_("conn_id must be a non-empty string")
    if len(conn.conn_id) > MAX_ID_LENGTH:
        raise ConnectionError_(f"conn_id is longer than {MAX_ID_LENGTH} characters")
    if any(ord(c) < 32 for c in conn.conn_id):
        raise ConnectionError_(f"conn_id {conn.conn_id!r} contains control characters")
    if not isinstance(conn.conn_type, str) or not conn.conn_type.strip():
        raise ConnectionError_(f"connection {conn.conn_id!r}: conn_type must be a non-empty string")
    for name in ("conn_type", "host", "schema"):
        value = getattr(conn, name)
        if value is not None and len(value) > MAX_FIELD_LENGTH:
            raise ConnectionError_(f"connection {conn.conn_id!r}: {name} is longer than {MAX_FIELD_LENGTH} characters")
    if conn.port is not None and (isinstance(conn.port, bool) or not isinstance(conn.port, int)
                                  or not 0 <= conn.port <= 65535):
        raise ConnectionError_(f"connection {conn.conn_id!r}: port {conn.port!r} is not an integer from 0 to 65535")
    if conn.extra is not None and conn.extra != "":
        try:
            parsed = json.loads(conn.extra)
        except ValueError as exc:
            raise ConnectionError_(f"connection {conn.conn_id!r}: extra is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise ConnectionError_(f"connection {conn.conn_id!r}: extra must be a JSON object")
    elif conn.extra == "":
        conn.extra = None
    return conn


# --- the table ---------------------------------------------------------------------------------


def from_row(row: ConnectionRow, settings: Settings | None = None) -> Connection:
    """The clear Connection of a row (password and extra decrypted)."""
    from scheduler.crypto import decrypt

    what = f"connection {row.conn_id!r}"
    password = row.password
    if password is not None and row.is_encrypted:
        password = decrypt(password, settings, what=f"the password of {what}")
    extra = row.extra
    if extra is not None and row.is_extra_encrypted:
        extra = decrypt(extra, settings, what=f"the extra of {what}")
    return Connection(conn_id=row.conn_id, conn_type=row.conn_type, description=row.description, host=row.host,
                      schema=row.schema, login=row.login, password=password, port=row.port, extra=extra)


def _fill_row(row: ConnectionRow, conn: Connection, settings: Settings | None) -> None:
    from scheduler.crypto import encrypt

    row.conn_type, row.description, row.host = conn.conn_type, conn.description, conn.host
    row.schema, row.login, row.port = conn.schema, conn.login, conn.port
    row.password = None if conn.password is None else encrypt(conn.password, settings)
    row.is_encrypted = conn.password is not None
    row.extra = None if conn.extra is None else encrypt(conn.extra, settings)
    row.is_extra_encrypted = conn.extra is not None


def get_row(session: Session, conn_id: str) -> ConnectionRow | None:
    return session.scalar(select(ConnectionRow).where(ConnectionRow.conn_id == conn_id))


def find(session: Session, conn_id: str, settings: Settings | None = None) -> Connection | None:
    row = get_row(session, conn_id)
    return None if row is None else from_row(row, settings)


def add(session: Session, conn: Connection, settings: Settings | None = None) -> ConnectionRow:
    """Store a new connection; ConnectionError_ when conn_id is taken."""
    validate(conn)
    if get_row(session, conn.conn_id) is not None:
        raise ConnectionError_(f"A connection with conn_id `{conn.conn_id}` already exists")
    row = ConnectionRow(conn_id=conn.conn_id)
    _fill_row(row, conn, settings)
    session.add(row)
    session.flush()
    return row


def update(session: Session, conn_id: str, changes: dict[str, Any], settings: Settings | None = None) -> Connection:
    """Change some fields of a stored connection; ConnectionNotFound / ConnectionError_."""
    row = get_row(session, conn_id)
    if row is None:
        raise ConnectionNotFound(conn_id)
    current = from_row(row, settings)
    updated = validate(replace(current, **changes))
    _fill_row(row, updated, settings)
    session.flush()
    return updated


def remove(session: Session, conn_id: str) -> bool:
    """Delete a connection; False when there was none."""
    result = session.execute(delete(ConnectionRow).where(ConnectionRow.conn_id == conn_id))
    return bool(getattr(result, "rowcount", 0))


def list_all(session: Session, settings: Settings | None = None) -> list[Connection]:
    rows = session.scalars(select(ConnectionRow).order_by(ConnectionRow.conn_id))
    return [from_row(row, settings) for row in rows]


# --- for task code -------------------------------------------------------------------------------

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def mask_connection(conn: Connection) -> None:
    """Mask the password and sensitive extras of ``conn`` in this process's log output from now on."""
    from scheduler.secrets_masker import mask_secret

    if conn.password:
        mask_secret(conn.password, "password")
    if conn.extra:
        try:
            mask_secret(json.loads(conn.extra))
        except ValueError:
            mask_secret(conn.extra, "extra")


def _engine_for_tasks() -> Engine:
    """An engine on the configured database, made once per process (task code's reads of Variables and Connections)."""
    from scheduler.crypto import _settings
    from scheduler.db.engine import make_engine

    url = _settings(None).sql_alchemy_conn
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = make_engine(url, pool_size=1, max_overflow=2)
        return engine


def get_connection(conn_id: str) -> Connection:
    """The connection ``conn_id`` (decrypted), for task code; ConnectionNotFound when there is none.

    Its password and sensitive extras are masked in the try's log from then on.
    """
    from scheduler.crypto import _settings
    from scheduler.db.engine import retry_transient, session_scope

    settings = _settings(None)
    engine = _engine_for_tasks()

    def unit() -> Connection | None:
        with session_scope(engine, readonly=True) as session:
            return find(session, conn_id, settings)

    conn = retry_transient(unit, what=f"reading connection {conn_id!r}")
    if conn is None:
        raise ConnectionNotFound(conn_id)
    mask_connection(conn)
    return conn
