"""``updraft variables ...`` and ``updraft connections ...`` (Airflow's verbs), and the CLI's audit rows.

Values are stored encrypted (:mod:`scheduler.crypto`). What the commands print follows
the UI and the API: a Variable whose key looks sensitive is printed by ``variables get``
(asking for one value is asking to see it) but shown as ``***`` by ``variables list``;
connection passwords are never printed (``***``), and sensitive extras neither.
``variables export`` writes every value in clear: the file is written with mode 0600.
Every change leaves an audit row with event ``cli.<action>`` and the OS user as owner.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scheduler.cli_output import FORMATS, print_records
from scheduler.exceptions import UpdraftError

if TYPE_CHECKING:
    from scheduler.cli import Context


class SecretsUsageError(UpdraftError):
    """Bad usage of a variables / connections command, or a Variable or Connection that does not exist (exit 2).

    (Defined here, not in ``scheduler.cli``: under ``python -m scheduler.cli`` that module is ``__main__``.)
    """


def _usage(message: str) -> Exception:
    return SecretsUsageError(message)


@contextlib.contextmanager
def masked_output() -> Iterator[None]:
    """Mask secrets in what ``dags test`` / ``tasks test`` print (the task's output and log), as a try's log is."""
    from scheduler.secrets_masker import MaskingStream

    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = MaskingStream.over(saved[0]), MaskingStream.over(saved[1])
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        sys.stdout, sys.stderr = saved


def cli_audit(session: Any, event: str, **fields: Any) -> None:
    """An audit row for a change made from the CLI (event ``cli.<event>``, owner the OS user)."""
    from scheduler.audit import cli_owner, record_event

    record_event(session, f"cli.{event}", owner=cli_owner(), **fields)


# --- variables -----------------------------------------------------------------------------------


def cmd_variables_get(ctx: Context) -> int:
    from scheduler import variables

    args = ctx.args
    ctx.ensure_database()
    with ctx.session() as session:
        value = variables.get_value(session, args.key, ctx.settings)
    if value is None:
        if args.default is not None:
            print(args.default)
            return 0
        raise _usage(f"Variable {args.key} does not exist")
    if args.json:
        try:
            value = json.dumps(json.loads(value), indent=2)
        except ValueError:
            raise _usage(f"Variable {args.key} is not valid JSON") from None
    print(value)
    return 0


def cmd_variables_set(ctx: Context) -> int:
    from scheduler import variables

    args = ctx.args
    value = args.value
    if args.json:
        try:
            value = json.dumps(json.loads(value))
        except ValueError as exc:
            raise _usage(f"--json: the value is not valid JSON: {exc}") from None
    ctx.ensure_database()
    try:
        with ctx.session() as session:
            variables.set_variable(session, args.key, value, args.description, settings=ctx.settings,
                                   keep_description=args.description is None)
            cli_audit(session, "variable.set", extra={"key": args.key})
    except variables.VariableError as exc:
        raise _usage(str(exc)) from None
    print(f"Variable {args.key} created")
    return 0


def cmd_variables_list(ctx: Context) -> int:
    from sqlalchemy import select

    from scheduler import variables
    from scheduler.db.models import Variable

    ctx.ensure_database()
    with ctx.session() as session:
        rows = list(session.scalars(select(Variable).order_by(Variable.key)))
        records = [variables.record(row, ctx.settings) for row in rows]
    columns = ("key", "value", "description") if ctx.args.output == "json" or ctx.args.values else ("key",)
    print_records(records, columns, ctx.args.output)
    return 0


def cmd_variables_delete(ctx: Context) -> int:
    from scheduler import variables

    ctx.ensure_database()
    with ctx.session() as session:
        if not variables.delete_variable(session, ctx.args.key):
            raise _usage(f"Variable {ctx.args.key} does not exist")
        cli_audit(session, "variable.delete", extra={"key": ctx.args.key})
    print(f"Variable {ctx.args.key} deleted")
    return 0


def cmd_variables_import(ctx: Context) -> int:
    """Import ``{"key": value, ...}`` (non-string values stored as JSON text); Airflow's --action-on-existing-key."""
    from sqlalchemy import select

    from scheduler import variables
    from scheduler.db.models import Variable

    args = ctx.args
    path = Path(args.file)
    try:
        text = sys.stdin.read() if args.file == "-" else path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _usage(f"{args.file}: cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise _usage(f"{args.file}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _usage(f"{args.file}: expected a JSON object of key: value")
    ctx.ensure_database()
    created = skipped = 0
    try:
        with ctx.session() as session:
            existing = set(session.scalars(select(Variable.key).where(Variable.key.in_(list(data)))))
            taken = sorted(k for k in data if k in existing)
            if taken and args.action_on_existing_key == "fail":
                raise _usage(f"{args.file}: these Variables exist already: {', '.join(taken)} (nothing was imported)")
            for key, value in data.items():
                if key in existing and args.action_on_existing_key == "skip":
                    skipped += 1
                    continue
                text_value = value if isinstance(value, str) else json.dumps(value)
                variables.set_variable(session, key, text_value, settings=ctx.settings, keep_description=True)
                created += 1
            cli_audit(session, "variable.import", extra={"keys": sorted(data)[:100], "count": created})
    except variables.VariableError as exc:
        raise _usage(f"{args.file}: {exc} (nothing was imported)") from None
    print(f"{created} of {len(data)} variables successfully updated." + (f" {skipped} skipped." if skipped else ""))
    return 0


def cmd_variables_export(ctx: Context) -> int:
    from sqlalchemy import select

    from scheduler import variables
    from scheduler.db.models import Variable

    ctx.ensure_database()
    with ctx.session() as session:
        data = {row.key: variables.value_of(row, ctx.settings) for row in
                session.scalars(select(Variable).order_by(Variable.key))}
        cli_audit(session, "variable.export", extra={"count": len(data)})
    text = json.dumps(data, indent=4, sort_keys=True) + "\n"
    if ctx.args.file == "-":
        sys.stdout.write(text)
        return 0
    try:
        fd = os.open(ctx.args.file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise _usage(f"{ctx.args.file}: cannot be written: {exc.strerror}") from None
    print(f"{len(data)} variables successfully exported to {ctx.args.file}")
    return 0


# --- connections ---------------------------------------------------------------------------------

_OPTION_FIELDS = ("conn_type", "conn_host", "conn_login", "conn_password", "conn_schema", "conn_port",
                  "conn_extra", "conn_description")


def _connection_from_args(args: argparse.Namespace) -> Any:
    from scheduler.connections import Connection, ConnectionError_, validate

    given = [name for name in _OPTION_FIELDS if getattr(args, name) is not None and name != "conn_description"]
    try:
        if args.conn_uri is not None:
            if given:
                raise _usage("give either --conn-uri or the --conn-* options, not both")
            conn = Connection.from_uri(args.conn_id, args.conn_uri)
            conn.description = args.conn_description
            return validate(conn)
        if args.conn_json is not None:
            if given:
                raise _usage("give either --conn-json or the --conn-* options, not both")
            return _connection_from_json(args.conn_id, args.conn_json)
        if args.conn_type is None:
            raise _usage("give --conn-uri, --conn-json or at least --conn-type")
        port = None
        if args.conn_port is not None:
            try:
                port = int(args.conn_port)
            except ValueError:
                raise _usage(f"--conn-port {args.conn_port!r}: expected an integer") from None
        return validate(Connection(
            conn_id=args.conn_id, conn_type=args.conn_type, host=args.conn_host, login=args.conn_login,
            password=args.conn_password, schema=args.conn_schema, port=port, extra=args.conn_extra,
            description=args.conn_description,
        ))
    except ConnectionError_ as exc:
        raise _usage(str(exc)) from None


def _connection_from_json(conn_id: str, text: str) -> Any:
    from scheduler.connections import Connection, ConnectionError_, validate

    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConnectionError_(f"--conn-json is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConnectionError_("--conn-json must be a JSON object")
    allowed = {"conn_type", "description", "host", "login", "password", "schema", "port", "extra"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConnectionError_(f"--conn-json: unknown field(s) {', '.join(unknown)}; expected some of {', '.join(sorted(allowed))}")
    extra = data.get("extra")
    if isinstance(extra, dict):
        extra = json.dumps(extra)
    for name in ("conn_type", "description", "host", "login", "password", "schema"):
        if data.get(name) is not None and not isinstance(data[name], str):
            raise ConnectionError_(f"--conn-json: {name} must be a string")
    return validate(Connection(
        conn_id=conn_id, conn_type=data.get("conn_type") or "", description=data.get("description"),
        host=data.get("host"), login=data.get("login"), password=data.get("password"), schema=data.get("schema"),
        port=data.get("port"), extra=extra,
    ))


def _shown(conn: Any) -> dict[str, Any]:
    from scheduler.connections import Connection
    from scheduler.secrets_masker import MASK

    record = conn.masked_record()
    record["conn_id"] = record.pop("connection_id")
    record["password"] = MASK if conn.password else None
    shown = Connection(**{**conn.__dict__, "password": MASK if conn.password else None})
    shown.extra = record["extra"]
    record["get_uri"] = shown.get_uri().replace("%2A%2A%2A", MASK)
    return record


_CONN_COLUMNS = ("conn_id", "conn_type", "description", "host", "schema", "login", "password", "port", "extra",
                 "get_uri")


def cmd_connections_add(ctx: Context) -> int:
    from scheduler import connections

    conn = _connection_from_args(ctx.args)
    ctx.ensure_database()
    try:
        with ctx.session() as session:
            connections.add(session, conn, ctx.settings)
            cli_audit(session, "connection.create", extra={"connection_id": conn.conn_id, "conn_type": conn.conn_type})
    except connections.ConnectionError_ as exc:
        raise _usage(str(exc)) from None
    print(f"Successfully added `conn_id`={conn.conn_id} : {_shown(conn)['get_uri']}")
    return 0


def cmd_connections_get(ctx: Context) -> int:
    from scheduler import connections

    ctx.ensure_database()
    with ctx.session() as session:
        conn = connections.find(session, ctx.args.conn_id, ctx.settings)
    if conn is None:
        raise _usage(f"Connection {ctx.args.conn_id} does not exist")
    print_records([_shown(conn)], _CONN_COLUMNS, ctx.args.output)
    return 0


def cmd_connections_list(ctx: Context) -> int:
    from scheduler import connections

    ctx.ensure_database()
    with ctx.session() as session:
        records = [_shown(conn) for conn in connections.list_all(session, ctx.settings)]
    if ctx.args.conn_id:
        records = [r for r in records if r["conn_id"] == ctx.args.conn_id]
    print_records(records, _CONN_COLUMNS, ctx.args.output)
    return 0


def cmd_connections_delete(ctx: Context) -> int:
    from scheduler import connections

    ctx.ensure_database()
    with ctx.session() as session:
        if not connections.remove(session, ctx.args.conn_id):
            raise _usage(f"Did not find a connection with `conn_id`={ctx.args.conn_id}")
        cli_audit(session, "connection.delete", extra={"connection_id": ctx.args.conn_id})
    print(f"Successfully deleted connection with `conn_id`={ctx.args.conn_id}")
    return 0


# --- the parser ------------------------------------------------------------------------------------


def add_commands(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Add the ``variables`` and ``connections`` command groups to the ``updraft`` parser."""

    def output(p: argparse.ArgumentParser) -> None:
        p.add_argument("-o", "--output", choices=FORMATS, default="table", help="output format (default: table)")

    variables = sub.add_parser("variables", help="Variables (stored encrypted)").add_subparsers(
        dest="cmd", metavar="COMMAND", parser_class=parser_class)
    variables.required = True
    p = variables.add_parser("get", help="print a Variable's value")
    p.add_argument("key")
    p.add_argument("--default", "-d", help="print this when the Variable does not exist (exit 0)")
    p.add_argument("--json", "-j", action="store_true", help="parse the value as JSON and pretty-print it")
    p.set_defaults(func=cmd_variables_get, whole_unit=True)
    p = variables.add_parser("set", help="create or replace a Variable")
    p.add_argument("key")
    p.add_argument("value")
    p.add_argument("--description", help="what the Variable is for")
    p.add_argument("--json", "-j", action="store_true", help="check the value is JSON (stored normalised)")
    p.set_defaults(func=cmd_variables_set, whole_unit=True)
    p = variables.add_parser("list", help="list the Variables' keys (--values: and values, sensitive ones masked)")
    p.add_argument("--values", action="store_true", help="also show values (*** under sensitive keys)")
    output(p)
    p.set_defaults(func=cmd_variables_list, whole_unit=True)
    p = variables.add_parser("delete", help="delete a Variable")
    p.add_argument("key")
    p.set_defaults(func=cmd_variables_delete, whole_unit=True)
    p = variables.add_parser("import", help="import Variables from a JSON file of key: value ('-' for stdin)")
    p.add_argument("file")
    p.add_argument("--action-on-existing-key", "-a", choices=("overwrite", "fail", "skip"), default="overwrite",
                   help="what to do with a key that exists (default: overwrite)")
    p.set_defaults(func=cmd_variables_import)
    p = variables.add_parser("export", help="export every Variable, in clear, to a JSON file (mode 0600; '-' for stdout)")
    p.add_argument("file")
    p.set_defaults(func=cmd_variables_export)

    conns = sub.add_parser("connections", help="Connections (password and extra stored encrypted)").add_subparsers(
        dest="cmd", metavar="COMMAND", parser_class=parser_class)
    conns.required = True
    p = conns.add_parser("add", help="add a connection: --conn-uri URI, --conn-json JSON, or --conn-type and options")
    p.add_argument("conn_id")
    p.add_argument("--conn-uri", help="conn-type://login:password@host:port/schema?extra_key=value")
    p.add_argument("--conn-json", help='{"conn_type": ..., "host": ..., "extra": {...}}')
    p.add_argument("--conn-type")
    p.add_argument("--conn-host")
    p.add_argument("--conn-login")
    p.add_argument("--conn-password")
    p.add_argument("--conn-schema")
    p.add_argument("--conn-port")
    p.add_argument("--conn-extra", help="a JSON object")
    p.add_argument("--conn-description")
    p.set_defaults(func=cmd_connections_add, whole_unit=True)
    p = conns.add_parser("get", help="show a connection (password masked)")
    p.add_argument("conn_id")
    output(p)
    p.set_defaults(func=cmd_connections_get, whole_unit=True)
    p = conns.add_parser("list", help="list the connections (passwords masked)")
    p.add_argument("--conn-id", help="only this connection")
    output(p)
    p.set_defaults(func=cmd_connections_list, whole_unit=True)
    p = conns.add_parser("delete", help="delete a connection")
    p.add_argument("conn_id")
    p.set_defaults(func=cmd_connections_delete, whole_unit=True)
