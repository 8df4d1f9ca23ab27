"""The UI blueprint: the login form, logout, and the home page.

Pages are server-rendered Jinja templates (autoescaped); every form carries the session's CSRF token.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, render_template, request

from webserver.auth import requires

ui = Blueprint("ui", __name__, template_folder="templates")

#: The longest user name / password the login form looks at (longer ones cannot be real).
MAX_FIELD_LENGTH = 256


def _safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this site only (no open redirects)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")) or any(
        ord(c) < 32 for c in target
    ):
        return "/"
    return target


@ui.route("/login", methods=["GET", "POST"])
def login() -> Any:
    from webserver.app import csrf_refusal
    from webserver.auth import csrf_valid, submitted_csrf_token
    from webserver.login import check_credentials, log_in, session_user

    next_url = _safe_next(request.values.get("next"))
    if request.method == "GET":
        if session_user() is not None:
            return redirect(next_url)
        return render_template("login.html", next_url=next_url, username="", error=None)

    if not csrf_valid(submitted_csrf_token()):
        return csrf_refusal("the login form has expired or did not come from this site; reload it and try again")
    username = request.form.get("username", "").strip()[:MAX_FIELD_LENGTH]
    password = request.form.get("password", "")[:MAX_FIELD_LENGTH]
    if not username or not password:
        return render_template(
            "login.html", next_url=next_url, username=username, error="Enter a user name and a password."
        ), 400
    user, wait = check_credentials(username, password)
    if wait is not None:
        minutes = max(1, round(wait / 60))
        page = render_template(
            "login.html", next_url=next_url, username=username,
            error=f"Too many failed logins. Try again in about {minutes} minute{'s' if minutes > 1 else ''}.",
        )
        return page, 429, {"Retry-After": str(max(1, int(wait + 0.999)))}
    if user is None:
        return render_template(
            "login.html", next_url=next_url, username=username,
            error=f"Wrong user name or password for {username}.",
        ), 401
    log_in(user)
    return redirect(next_url)


@ui.post("/logout")
def logout() -> Any:
    from webserver.login import log_out

    # A logged-in session's token is checked before this view (webserver.app); without a session there is nothing to end.
    log_out()
    return redirect("/login")


@ui.get("/")
@requires("read")
def home() -> Any:
    """The home page is the DAG list (webserver.ui_dags)."""
    from webserver.ui_dags import dag_list

    return dag_list()


from webserver import ui_dags  # noqa: E402,F401,I001
from webserver import ui_runs  # noqa: E402,F401
from webserver import ui_audit  # noqa: E402,F401
from webserver import ui_grid  # noqa: E402,F401
from webserver import ui_charts  # noqa: E402,F401
from webserver import ui_actions  # noqa: E402,F401
