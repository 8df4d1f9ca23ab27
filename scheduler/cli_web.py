"""``updraft users create | list | delete`` and ``updraft webserver``: the web UI's users and its server."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from scheduler.cli import UsageError, _add_output
from scheduler.cli_output import print_records

if TYPE_CHECKING:
    from scheduler.cli import Context


def _prompt_password() -> str:
    import getpass

    if not sys.stdin.isatty():
        raise UsageError("give --password or --use-random-password (there is no terminal to ask for one)")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat for confirmation: ") != first:
        raise UsageError("the passwords do not match")
    return first


def cmd_users_create(ctx: Context) -> int:
    from webserver.users import UserError, create_user, random_password

    args = ctx.args
    password = random_password() if args.use_random_password else args.password
    if password is None:
        password = _prompt_password()
    ctx.ensure_database()
    try:
        with ctx.session() as session:
            create_user(
                session, username=args.username, password=password, role=args.role, email=args.email,
                first_name=args.firstname or "", last_name=args.lastname or "",
            )
            from scheduler.cli_secrets import cli_audit

            cli_audit(session, "user.create", extra={"username": args.username.strip(), "role": args.role})
    except UserError as exc:
        raise UsageError(str(exc)) from None
    print(f"User {args.username.strip()!r} created with role {args.role}.")
    if args.use_random_password:
        print(f"Password (shown once; stored hashed): {password}")
    return 0


def cmd_users_list(ctx: Context) -> int:
    from webserver.users import list_users

    ctx.ensure_database()
    with ctx.session() as session:
        records = [
            {"id": u.id, "username": u.username, "email": u.email, "first_name": u.first_name,
             "last_name": u.last_name, "roles": [u.role], "active": u.active}
            for u in list_users(session)
        ]
    print_records(records, ("id", "username", "email", "first_name", "last_name", "roles", "active"), ctx.args.output)
    return 0


def cmd_users_delete(ctx: Context) -> int:
    from webserver.users import UserError, delete_user

    ctx.ensure_database()
    try:
        with ctx.session() as session:
            delete_user(session, ctx.args.username)
            from scheduler.cli_secrets import cli_audit

            cli_audit(session, "user.delete", extra={"username": ctx.args.username})
    except UserError as exc:
        raise UsageError(str(exc)) from None
    print(f"User {ctx.args.username!r} deleted.")
    return 0


def cmd_webserver(ctx: Context) -> int:
    """Serve the UI and the REST API with gunicorn until SIGTERM or Ctrl-C."""
    from webserver.serve import address_problem, serve

    settings, args = ctx.settings, ctx.args
    host = args.host or str(settings.get("webserver", "web_server_host"))
    port = args.port if args.port is not None else int(settings.get("webserver", "web_server_port"))
    workers = args.workers if args.workers is not None else int(settings.get("webserver", "workers"))
    if not 1 <= port <= 65535:
        raise UsageError(f"--port {port}: expected an integer from 1 to 65535")
    if workers < 1:
        raise UsageError(f"--workers {workers}: expected an integer >= 1")
    ctx.ensure_database()
    reason = address_problem(host, port)
    if reason is not None:
        raise UsageError(f"the webserver {reason}")
    return serve(settings, host, port, workers)


def add_commands(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("webserver", help="serve the web UI and the REST API with gunicorn (until SIGTERM or Ctrl-C)")
    p.add_argument("--host", "-H", help="address to listen on (default: [webserver] web_server_host, 127.0.0.1)")
    p.add_argument("--port", "-p", type=int, help="port (default: [webserver] web_server_port, 8080)")
    p.add_argument("--workers", "-w", type=int, help="worker processes (default: [webserver] workers, 2)")
    p.set_defaults(func=cmd_webserver)

    users = sub.add_parser("users", help="users of the web UI and the API").add_subparsers(
        dest="cmd", metavar="COMMAND", parser_class=parser_class)
    users.required = True
    p = users.add_parser("create", help="create a user (role Admin, Op or Viewer)")
    p.add_argument("--username", "-u", required=True)
    p.add_argument("--role", "-r", required=True, help="Admin, Op or Viewer")
    p.add_argument("--email", "-e")
    p.add_argument("--firstname", "-f")
    p.add_argument("--lastname", "-l")
    secret = p.add_mutually_exclusive_group()
    secret.add_argument("--password", "-p", help="the password (asked for when neither option is given)")
    secret.add_argument("--use-random-password", action="store_true", help="generate a password and print it once")
    p.set_defaults(func=cmd_users_create)
    p = users.add_parser("list", help="list the users (never their password hashes)")
    _add_output(p)
    p.set_defaults(func=cmd_users_list, whole_unit=True)
    p = users.add_parser("delete", help="delete a user")
    p.add_argument("--username", "-u", required=True)
    p.set_defaults(func=cmd_users_delete, whole_unit=True)


