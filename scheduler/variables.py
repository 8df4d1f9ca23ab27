"""Variables: key -> text, stored encrypted (Fernet, :mod:`scheduler.crypto`), shown masked when the key is sensitive.

Used by the CLI (``updraft variables ...``), the REST API and the UI; task templates read
them through :func:`scheduler.db.store.get_variable` (``{{ var.value.KEY }}``).
Functions take the session first and never commit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from scheduler.db.models import Variable
from scheduler.exceptions import UpdraftError

if TYPE_CHECKING:
    from scheduler.config import Settings

#: The longest key the ``variable`` table holds.
MAX_KEY_LENGTH = 250


class VariableError(UpdraftError, ValueError):
    """A Variable cannot be set as asked (the message says why)."""


def check_key(key: Any) -> str:
    if not isinstance(key, str) or not key.strip():
        raise VariableError("a Variable's key must be a non-empty string")
    if len(key) > MAX_KEY_LENGTH:
        raise VariableError(f"the Variable key is longer than {MAX_KEY_LENGTH} characters")
    if any(ord(c) < 32 for c in key):
        raise VariableError(f"the Variable key {key!r} contains control characters")
    return key


def value_of(var: Variable, settings: Settings | None = None) -> str | None:
    """The clear text of a Variable row."""
    from scheduler.crypto import decrypt

    if var.val is None or not var.is_encrypted:
        return var.val
    return decrypt(var.val, settings, what=f"Variable {var.key!r}")


def get_value(session: Session, key: str, settings: Settings | None = None) -> str | None:
    var = session.scalar(select(Variable).where(Variable.key == key))
    return None if var is None else value_of(var, settings)


def set_variable(session: Session, key: str, value: str, description: str | None = None, *,
                 settings: Settings | None = None, keep_description: bool = False) -> Variable:
    """Create or replace a Variable; the value is stored encrypted."""
    from scheduler.crypto import encrypt

    check_key(key)
    if not isinstance(value, str):
        raise VariableError(f"the value of Variable {key!r} must be a string")
    var = session.scalar(select(Variable).where(Variable.key == key))
    if var is None:
        var = Variable(key=key, description=description)
        session.add(var)
    elif not keep_description:
        var.description = description
    var.val = encrypt(value, settings)
    var.is_encrypted = True
    session.flush()
    return var


def delete_variable(session: Session, key: str) -> bool:
    """Delete a Variable; False when there was none with that key."""
    result = session.execute(delete(Variable).where(Variable.key == key))
    return bool(getattr(result, "rowcount", 0))


def shown_value(key: str, value: str | None) -> str | None:
    """The value as the UI and the API show it: ``***`` under a sensitive key."""
    from scheduler.secrets_masker import MASK, is_sensitive

    if value is not None and value != "" and is_sensitive(key):
        return MASK
    return value


def record(var: Variable, settings: Settings | None = None) -> dict[str, Any]:
    """The API's Variable object, with the value masked when the key is sensitive."""
    value = shown_value(var.key, value_of(var, settings))
    return {"key": var.key, "value": value if value is not None else "", "description": var.description}


# --- for task code -------------------------------------------------------------------------------

_MISSING: Any = object()


def get_variable(key: str, default: Any = _MISSING, *, deserialize_json: bool = False) -> Any:
    """A Variable's value for task code (``from scheduler import get_variable``), like Airflow's ``Variable.get``.

    KeyError naming the key when it does not exist and no default is given; with
    ``deserialize_json`` the value is parsed as JSON. A sensitive Variable's value is masked in
    the try's log from then on.
    """
    from scheduler.connections import _engine_for_tasks
    from scheduler.db import store
    from scheduler.db.engine import retry_transient, session_scope

    engine = _engine_for_tasks()

    def unit() -> str | None:
        with session_scope(engine, readonly=True) as session:
            return store.get_variable(session, key)

    value = retry_transient(unit, what=f"reading Variable {key!r}")
    if value is None:
        if default is _MISSING:
            raise KeyError(f"Variable {key} does not exist")
        return default
    if deserialize_json:
        import json

        return json.loads(value)
    return value
