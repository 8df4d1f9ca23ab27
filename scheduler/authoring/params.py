"""DAG params: typed, validated values a run can be given (Airflow's Param / ParamsDict).

A Param carries a default and a JSON Schema (type, enum, minimum, maximum, ...).
Validation uses the jsonschema library, imported only when a value is checked.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from scheduler.exceptions import ParamValidationError


class _NotSet:
    _instance: _NotSet | None = None

    def __new__(cls) -> _NotSet:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NOTSET"

    def __bool__(self) -> bool:
        return False

    def __deepcopy__(self, memo: dict[int, Any]) -> _NotSet:
        return self


NOTSET: Any = _NotSet()


class Param:
    """A DAG parameter: ``Param(5, type="integer", minimum=1, description="...")``."""

    def __init__(self, default: Any = NOTSET, description: str | None = None, **schema: Any) -> None:
        if isinstance(default, Param):
            raise TypeError("Param(default=...) must be a plain value, not another Param")
        self.value = default
        self.description = description
        self.schema: dict[str, Any] = dict(schema)
        if description is not None:
            self.schema.setdefault("description", description)

    @property
    def has_value(self) -> bool:
        return self.value is not NOTSET

    def resolve(self, value: Any = NOTSET, *, name: str = "param") -> Any:
        """The value to use (the given one, else the default), validated against the schema."""
        final = self.value if value is NOTSET else value
        if final is NOTSET:
            raise ParamValidationError(f"param '{name}': no value given and no default")
        _validate(final, self.schema, name)
        return final

    def dump(self) -> dict[str, Any]:
        """JSON-friendly form stored in the serialized DAG."""
        return {
            "default": None if self.value is NOTSET else self.value,
            "has_default": self.value is not NOTSET,
            "description": self.description,
            "schema": self.schema,
        }

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> Param:
        default = data.get("default") if data.get("has_default", True) else NOTSET
        schema = dict(data.get("schema") or {})
        description = data.get("description")
        schema.pop("description", None)
        return cls(default, description, **schema)

    def __repr__(self) -> str:
        return f"Param({self.value!r}, schema={self.schema!r})"


def _validate(value: Any, schema: Mapping[str, Any], name: str) -> None:
    if not schema:
        return
    import jsonschema

    try:
        jsonschema.validate(value, dict(schema), format_checker=jsonschema.FormatChecker())
    except jsonschema.ValidationError as exc:
        where = "".join(f"[{p!r}]" for p in exc.absolute_path)
        raise ParamValidationError(f"param '{name}'{where}: {exc.message}") from None
    except jsonschema.SchemaError as exc:
        raise ParamValidationError(f"param '{name}': invalid schema: {exc.message}") from None


class ParamsDict(MutableMapping[str, Any]):
    """Name -> Param. Plain values given by the author are wrapped in an untyped Param."""

    def __init__(self, initial: Mapping[str, Any] | None = None) -> None:
        self._params: dict[str, Param] = {}
        # Another ParamsDict: take its Param objects (its items() are bare values, without the schemas).
        items = initial.params().items() if isinstance(initial, ParamsDict) else (initial or {}).items()
        for key, value in items:
            self[key] = value

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"param names must be strings, got {key!r}")
        self._params[key] = value if isinstance(value, Param) else Param(value)

    def __getitem__(self, key: str) -> Any:
        return self._params[key].value

    def get_param(self, key: str) -> Param:
        return self._params[key]

    def __delitem__(self, key: str) -> None:
        del self._params[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)

    def params(self) -> dict[str, Param]:
        return dict(self._params)

    def copy(self) -> ParamsDict:  # type: ignore[override]
        new = ParamsDict()
        new._params = {k: copy.deepcopy(v) for k, v in self._params.items()}
        return new

    def merged(self, other: Mapping[str, Any] | None) -> ParamsDict:
        new = self.copy()
        if other:
            for key, value in (other.params().items() if isinstance(other, ParamsDict) else other.items()):
                new[key] = copy.deepcopy(value)
        return new

    def resolve(self, conf: Mapping[str, Any] | None = None, *, dag_id: str = "") -> dict[str, Any]:
        """Values for a run: conf overrides defaults, each validated; raises naming the param."""
        conf = conf or {}
        out: dict[str, Any] = {}
        for key, param in self._params.items():
            try:
                out[key] = param.resolve(conf.get(key, NOTSET), name=key)
            except ParamValidationError as exc:
                prefix = f"DAG '{dag_id}': " if dag_id else ""
                raise ParamValidationError(prefix + str(exc)) from None
        for key, value in conf.items():
            if key not in out:
                out[key] = value
        return out

    def dump(self) -> dict[str, Any]:
        return {k: p.dump() for k, p in self._params.items()}

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> ParamsDict:
        new = cls()
        new._params = {k: Param.load(v) for k, v in data.items()}
        return new


def check_json(value: Any, what: str) -> None:
    """Raise a clear TypeError when ``value`` cannot be stored as JSON."""
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be JSON-serialisable: {exc}") from None
