"""Printing lists of records as a table, JSON or plain text (`--output table|json|plain`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import IO, Any

FORMATS = ("table", "json", "plain")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, list):
        return ", ".join(_cell(v.get("name") if isinstance(v, dict) and "name" in v else v) for v in value)
    if isinstance(value, dict):
        if "__type" in value and "value" in value:
            return str(value["value"])
        return json.dumps(value, sort_keys=True)
    return str(value).replace("\n", "\\n")


def print_records(
    records: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str, out: IO[str] | None = None
) -> None:
    """Print ``records`` (dicts with at least ``columns``) in the chosen format."""
    out = out or sys.stdout
    if fmt == "json":
        json.dump([{c: r.get(c) for c in columns} for r in records], out, indent=2, default=str)
        out.write("\n")
        return
    if not records:
        out.write("No data found\n")
        return
    rows = [[_cell(r.get(c)) for c in columns] for r in records]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(columns)]
    if fmt == "plain":
        lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    else:
        sep = "+-" + "-+-".join("-" * w for w in widths) + "-+"
        lines = [sep, "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |", sep]
        lines += ["| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |" for row in rows]
        lines.append(sep)
    out.write("\n".join(lines) + "\n")
