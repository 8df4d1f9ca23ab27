"""RFC 7807 problem responses (``application/problem+json``), the shape of every API error."""

from __future__ import annotations

import json

from flask import Response

#: Airflow's problem types live under this base; we keep the same relative names.
TYPE_BASE = "https://updraft.invalid/problems/"


def problem(status: int, title: str, detail: str, *, type_: str | None = None) -> Response:
    """A problem+json response: ``{"type", "title", "status", "detail"}``."""
    body = {
        "type": type_ or TYPE_BASE + title.lower().replace(" ", "-"),
        "title": title,
        "status": status,
        "detail": detail,
    }
    return Response(json.dumps(body), status=status, mimetype="application/problem+json")
